"""UKBench (Nistér & Stewénius 2006): 10,200 photos of 2,550 objects, 4 per object.

Survey §2.5.1 (datasets) and §2.5.2 (the N-S score); taught in notebooks/00_setup_and_data.

Layout: ``<root>/full/ukbench00000.jpg … ukbench10199.jpg``; images ``4g … 4g+3`` show object
``g``. Protocol: every image is in the database and, by default, every image is a query. The
N-S score is the number of the object's 4 images among the top 4 results, the query's own image
included — so a query's positives are all 4 images of its group, itself among them, and
nothing is junk. A perfect system scores 4. EXIF rule: orientation tags are honoured
(``exif_transpose=True``); there are no boxes, so no crop frame depends on it.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from .base import DatasetNotFoundError, RetrievalDataset, resolve_root

log = logging.getLogger(__name__)

NAME = "ukbench"
IMAGE_FOLDER = "full"
GROUP_SIZE = 4
N_IMAGES = 10200
_FILE_NAME = re.compile(r"ukbench(\d{5})\.jpg$")


def image_name(index: int) -> str:
    """Official file name of image ``index`` (``5`` → ``ukbench00005.jpg``)."""
    return f"ukbench{index:05d}.jpg"


def load(
    root=None,
    data_home=None,
    *,
    download: bool = True,
    progress=None,
    queries: str = "all",
    check_images: bool = False,
) -> RetrievalDataset:
    """Load UKBench (Survey §2.5.1; notebooks/00_setup_and_data).

    ``queries="all"`` (the N-S protocol): every image is a query; ``"first"``: only the first
    image present of each group (a quarter of the work, for quick looks). Positives = the whole
    group *including the query*, because the N-S score counts the query's own image among its top
    4; junk is empty. Missing members of a group that has some images are reported in
    ``dataset.skipped``. ``check_images=True`` decodes every image first (≈ 3 ms each, ≈ 30 s in
    all) and drops unreadable ones.
    """
    if queries not in ("all", "first"):
        raise ValueError(f"queries must be 'all' or 'first', not {queries!r}")
    root = resolve_root(NAME, root, data_home, download=download, progress=progress)
    paths, indices = _find_images(root)
    skipped = _missing_group_members(root / IMAGE_FOLDER, indices)
    if check_images:
        from .images import find_unreadable

        readable, unreadable = find_unreadable(paths, progress=progress)
        readable = set(readable)
        keep = np.array([p in readable for p in paths], dtype=bool)
        paths, indices = [p for p in paths if p in readable], indices[keep]
        skipped += unreadable
    if skipped:
        log.warning("ukbench: %d images skipped (first: %s)", len(skipped), skipped[0][0])

    groups = indices // GROUP_SIZE
    query_rows = _query_rows(groups, queries)
    return RetrievalDataset.grouped(
        NAME, root, paths, groups, query_rows, query_is_positive=True,
        description=(
            f"UKBench: {len(paths)} images (official {N_IMAGES}) in {len(np.unique(groups))} groups of 4; "
            f"{len(query_rows)} queries; positives include the query itself (N-S score, 0–4)"
        ),
        skipped=skipped,
        exif_transpose=True,
    )


def _find_images(root: Path) -> tuple[list[Path], np.ndarray]:
    folder = root / IMAGE_FOLDER
    found = []
    if folder.is_dir():
        for path in folder.glob("ukbench*.jpg"):
            match = _FILE_NAME.search(path.name)
            if match:
                found.append((int(match.group(1)), path))
    if not found:
        raise DatasetNotFoundError(NAME, folder)
    found.sort()
    return [p for _, p in found], np.asarray([i for i, _ in found], dtype=np.int64)


def _missing_group_members(folder: Path, indices: np.ndarray) -> list[tuple[Path, str]]:
    present = set(indices.tolist())
    expected = {g * GROUP_SIZE + k for g in set((indices // GROUP_SIZE).tolist()) for k in range(GROUP_SIZE)}
    return [(folder / image_name(i), "missing: its group is incomplete") for i in sorted(expected - present)]


def _query_rows(groups: np.ndarray, queries: str) -> np.ndarray:
    if queries == "all":
        return np.arange(len(groups), dtype=np.int64)
    _, first_rows = np.unique(groups, return_index=True)  # rows are sorted, so this is each group's first image
    return first_rows.astype(np.int64)
