"""INRIA Holidays (Jégou et al. 2008): 1,491 holiday photos in 500 groups.

Survey §2.5.1 (datasets); taught in notebooks/00_setup_and_data.

Layout: ``<root>/jpg/<id>.jpg`` and ``<root>/holidays_images.dat`` (the image list of the official
``eval_holidays`` package). Image ``<id>`` belongs to group ``id // 100``; the image with
``id % 100 == 0`` is the group's query (500 queries). Protocol: every image is in the database;
a query's positives are the other images of its group and the query itself is junk, so it is
excluded from its own ranking. Many photos are stored sideways with an EXIF orientation tag;
EXIF rule: images are turned upright (``exif_transpose=True``), the frame the protocol compares in.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .base import DatasetNotFoundError, RetrievalDataset, resolve_root

log = logging.getLogger(__name__)

NAME = "holidays"
IMAGE_FOLDER = "jpg"
IMAGE_LIST = "holidays_images.dat"
GROUP_SIZE = 100


def load(
    root=None, data_home=None, *, download: bool = True, progress=None, check_images: bool = False
) -> RetrievalDataset:
    """Load Holidays: 1,491 database images, 500 queries (Survey §2.5.1; notebooks/00_setup_and_data).

    The database is the list in ``holidays_images.dat`` intersected with ``jpg/``; listed files
    that are missing are reported in ``dataset.skipped``. ``check_images=True`` also decodes every
    image (≈ 30 ms each for these 8-megapixel photos, ≈ 45 s in all) and drops unreadable ones.
    A group whose query image is missing has no query.
    """
    root = resolve_root(NAME, root, data_home, download=download, progress=progress)
    listed = _read_image_list(root)
    paths, skipped = _present_images(root, listed)
    if check_images:
        from .images import find_unreadable

        paths, unreadable = find_unreadable(paths, progress=progress)
        skipped += unreadable
    if skipped:
        log.warning("holidays: %d listed images skipped (first: %s)", len(skipped), skipped[0][0])

    ids = np.asarray([int(p.stem) for p in paths], dtype=np.int64)
    groups = ids // GROUP_SIZE
    query_rows = np.flatnonzero(ids % GROUP_SIZE == 0)
    return RetrievalDataset.grouped(
        NAME, root, paths, groups, query_rows,
        description=(
            f"INRIA Holidays: {len(paths)} images in {len(np.unique(groups))} groups; {len(query_rows)} "
            "queries (id % 100 == 0), each excluded from its own ranking; EXIF orientation applied"
        ),
        skipped=skipped,
        exif_transpose=True,
    )


def _read_image_list(root: Path) -> list[str]:
    path = root / IMAGE_LIST
    if not path.is_file():
        raise DatasetNotFoundError(NAME, path)
    names = path.read_text().split()
    bad = [n for n in names if not Path(n).stem.isdigit()]
    if bad:
        raise ValueError(f"{path}: expected names like 100000.jpg, found {bad[:3]}")
    return names


def _present_images(root: Path, names: list[str]) -> tuple[list[Path], list[tuple[Path, str]]]:
    folder = root / IMAGE_FOLDER
    if not folder.is_dir() or next(folder.glob("*.jpg"), None) is None:
        raise DatasetNotFoundError(NAME, folder)
    paths = [folder / n for n in names]
    present = [p for p in paths if p.is_file()]
    missing = [(p, f"listed in {IMAGE_LIST} but not found under {IMAGE_FOLDER}/") for p in paths if not p.is_file()]
    return present, missing
