"""Stanford Online Products, kettles and fans (Oh Song et al., CVPR 2016), as a lab pack.

Survey §2.5.1 (datasets) and §2.4 (fine-tuning needs a learning split); taught in
notebooks/00_setup_and_data.

Layout: ``<root>/sop-kettles-fans/<product_id>_<k>.JPG`` — 1,600 product photos (≤ 256 px) of
524 products; the label is the product id. Like COIL-100's default protocol, products are split
so that nothing learned can have seen a test product:

* learning split = the first half of the sorted product ids; test split = the rest;
* database = every photo of the split; query = every photo whose product has another photo in
  the split, excluded from its own ranking (junk); positives = the product's other photos.

The source holds byte-identical photos inside some products; they are found by hashing the files
and reported in ``dataset.meta["duplicates"]`` (kept, as in the source, unless
``drop_duplicates=True`` keeps only the first photo of each such group).

EXIF rule: images are read upright (``exif_transpose=True``, the default); no query has a box.
"""
from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import numpy as np

from .base import DatasetNotFoundError, RetrievalDataset, resolve_root

log = logging.getLogger(__name__)

NAME = "sop_kettles_fans"
IMAGE_FOLDER = "sop-kettles-fans"
SPLITS = ("learn", "test", "all")
# First product id of the test split: the 263rd of the pack's 524 sorted ids. A constant, so that a
# copy missing some photos (or whole products) still splits exactly like the full pack.
FIRST_TEST_PRODUCT = 131578328764
_NAME = re.compile(r"^(\d+)_(\d+)\.jpe?g$", re.IGNORECASE)


def parse_name(name: str) -> tuple[int, int]:
    """``111169942421_2.JPG`` → ``(111169942421, 2)`` (product id, photo number)."""
    m = _NAME.match(Path(name).name)
    if not m:
        raise ValueError(f"not a lab-pack SOP file name (<product_id>_<k>.JPG): {name}")
    return int(m.group(1)), int(m.group(2))


def split_products(product_ids, first_test=FIRST_TEST_PRODUCT) -> dict[str, np.ndarray]:
    """``{"learn": ids below first_test, "test": the others}``, both sorted and distinct.

    With the full pack that is the first half of the sorted product ids and the second half.
    """
    ids = np.unique(np.asarray(product_ids, dtype=np.int64))
    return {"learn": ids[ids < first_test], "test": ids[ids >= first_test]}


def find_duplicates(paths) -> list[list[Path]]:
    """Groups of byte-identical files (each group sorted, groups ordered by their first path)."""
    by_digest: dict[str, list[Path]] = {}
    for path in paths:
        by_digest.setdefault(hashlib.sha1(Path(path).read_bytes()).hexdigest(), []).append(Path(path))
    return sorted((sorted(g) for g in by_digest.values() if len(g) > 1), key=lambda g: g[0])


def load(
    root=None, data_home=None, *, split: str = "test", download: bool = True, progress=None,
    check_images: bool = True, drop_duplicates: bool = False,
) -> RetrievalDataset:
    """Load one split of the SOP kettles/fans pack (Survey §2.5.1; notebooks/00_setup_and_data).

    ``split``: 'test' (second half of the sorted product ids), 'learn' (first half) or 'all'.
    The split is fixed by product id (:data:`FIRST_TEST_PRODUCT`), so missing files never move it. Unreadable files (``check_images``, about a second) are skipped and
    listed in ``dataset.skipped``. ``meta["duplicates"]`` lists the exact-duplicate groups found
    in the split; ``meta["missing"]`` counts the pack's photos that are not on disk.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown {NAME} split {split!r}; choose one of {', '.join(SPLITS)}")
    root = resolve_root(NAME, root, data_home, download=download, progress=progress)
    folder = root / IMAGE_FOLDER
    files = sorted(p for p in folder.glob("*") if _NAME.match(p.name)) if folder.is_dir() else []
    if not files:
        raise DatasetNotFoundError(NAME, folder)

    missing = _count_missing(len(files), folder)
    products = np.asarray([parse_name(p.name)[0] for p in files], dtype=np.int64)
    wanted = np.unique(products) if split == "all" else split_products(products)[split]
    paths = [p for p, keep in zip(files, np.isin(products, wanted)) if keep]
    skipped: list[tuple[Path, str]] = []
    if check_images:
        from .images import find_unreadable

        paths, skipped = find_unreadable(paths, progress=progress)
    duplicates = find_duplicates(paths)
    if drop_duplicates:
        extra = {p for group in duplicates for p in group[1:]}
        skipped += [(p, f"exact duplicate of {group[0].name}") for group in duplicates for p in group[1:]]
        paths = [p for p in paths if p not in extra]
    if duplicates:
        log.info("%s %s: %d groups of byte-identical photos (%d redundant files)%s", NAME, split,
                 len(duplicates), sum(len(g) - 1 for g in duplicates), ", dropped" if drop_duplicates else "")

    labels = np.asarray([parse_name(p.name)[0] for p in paths], dtype=np.int64)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    query_rows = np.flatnonzero(counts[inverse] > 1)
    return RetrievalDataset.grouped(
        NAME, root, paths, labels, query_rows,
        split=split,
        description=(
            f"SOP kettles/fans, {split} split: {len(paths)} photos of {len(np.unique(labels))} products; "
            f"{len(query_rows)} queries (photos with a sibling), each excluded from its own ranking; "
            f"{len(duplicates)} exact-duplicate groups {'dropped' if drop_duplicates else 'kept'}"
        ),
        skipped=skipped,
        meta={"duplicates": duplicates, "missing": missing},
    )


def _count_missing(found: int, folder: Path) -> int:
    """Photos the pack should hold but does not (its file list is not known, only its size)."""
    from .manifest import get

    missing = max(0, get(NAME).n_images - found)
    if missing:
        log.warning("%s: %d of the pack's %d photos are missing from %s. Delete the folder and run "
                    "`retrievalkit datasets fetch %s` to restore them", NAME, missing, get(NAME).n_images, folder, NAME)
    return missing
