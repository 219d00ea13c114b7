"""Oxford5k and Paris6k with their original ground truth (Philbin et al. 2007, 2008).

Survey §2.5.1 (datasets); taught in notebooks/00_setup_and_data.

Layout: ``<root>/jpg/<image>.jpg`` and ``<root>/gt/<landmark>_<k>_{query,good,ok,junk}.txt``.
A query file holds one line ``<name> x1 y1 x2 y2``; Oxford's query names carry an ``oxc1_``
prefix that the image names lack, Paris's do not.

Original protocol: 55 queries, each cropped to its box; positives = good ∪ ok; junk images are
ignored. The database is every image of the folder, so each query image is also a database
image (``query_db_index``). It is *not* excluded from its ranking: in the official lists of
``gt_files_170407.tgz`` every one of the 55 query images appears in its own good list (41
queries) or ok list (14), so the original protocol counts it as a positive — usually at rank 1,
since the cropped query resembles its full image.

EXIF rule: images are read in their stored pixel frame (``exif_transpose=False``): the query
boxes were drawn on the stored pixels, as for revisitop, so a tag must not rotate them first.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .base import DatasetNotFoundError, QueryGroundTruth, RetrievalDataset, resolve_root

log = logging.getLogger(__name__)

IMAGE_FOLDER = "jpg"
GT_FOLDER = "gt"
QUERY_PREFIX = "oxc1_"
EXPECTED_QUERIES = 55


def load_oxford5k(
    root=None, data_home=None, *, download: bool = True, progress=None, check_images: bool = False
) -> RetrievalDataset:
    """Oxford5k (5,063 images, 55 queries), original protocol (Survey §2.5.1; notebooks/00_setup_and_data).

    ``check_images=True`` decodes every image first (≈ 20 s on two cores) and drops and
    reports unreadable ones; Oxford's files are all readable, so it is off by default.
    """
    return load_original("oxford5k", root, data_home, download=download, progress=progress,
                         check_images=check_images)


def load_paris6k(
    root=None, data_home=None, *, download: bool = True, progress=None, check_images: bool = True
) -> RetrievalDataset:
    """Paris6k (6,412 files, 55 queries), original protocol (Survey §2.5.1; notebooks/00_setup_and_data).

    Paris ships about 20 corrupt JPEGs, so ``check_images`` is on by default: every image is
    decoded once (≈ 20–30 s on two cores) and the unreadable ones are dropped, listed in
    ``dataset.skipped``, and removed from the ground truth (indices re-numbered).
    """
    return load_original("paris6k", root, data_home, download=download, progress=progress,
                         check_images=check_images)


def load_original(
    name: str, root=None, data_home=None, *, download: bool = True, progress=None, check_images: bool = False
) -> RetrievalDataset:
    """Load an Oxford-style dataset (``jpg/`` + ``gt/``) under the original good+ok / junk protocol.

    Images named in the ground truth but absent from ``jpg/`` (or unreadable) are left out of
    the lists and reported in ``dataset.skipped``; a query whose image is unusable is dropped.
    """
    root = resolve_root(name, root, data_home, download=download, progress=progress)
    images = _index_images(name, root)
    queries = _read_queries(name, root / GT_FOLDER)

    skipped: list[tuple[Path, str]] = []
    if check_images:
        from .images import find_unreadable

        _, unreadable = find_unreadable(images.values(), progress=progress)
        bad = {p for p, _ in unreadable}
        images = {n: p for n, p in images.items() if p not in bad}
        skipped += unreadable

    names = sorted(images)
    row_of = {n: row for row, n in enumerate(names)}
    absent = _listed_but_absent(root / GT_FOLDER, images, {p for p, _ in skipped})
    if absent:
        log.warning("%s: %d images named in the ground truth are missing (first: %s)", name, len(absent), absent[0][0])
    skipped += absent

    query_paths, query_rows, gnd = [], [], []
    for query_file, (query_name, bbox) in queries:
        if query_name not in row_of:
            continue  # its image is missing or unreadable, already reported
        lists = {kind: _read_list(query_file, kind) for kind in ("good", "ok", "junk")}
        query_paths.append(images[query_name])
        query_rows.append(row_of[query_name])
        gnd.append(QueryGroundTruth.make(
            positives=[row_of[n] for n in lists["good"] + lists["ok"] if n in row_of],
            junk=[row_of[n] for n in lists["junk"] if n in row_of],
            bbox=bbox,
        ))

    return RetrievalDataset(
        name=name,
        root=root,
        db_paths=[images[n] for n in names],
        query_paths=query_paths,
        gnd=gnd,
        query_db_index=np.asarray(query_rows, dtype=np.int64),
        protocols=("all",),
        split="test",
        description=(
            f"{name}, original protocol: {len(names)} database images, {len(query_paths)} queries "
            "cropped to their box (read_image(path, bbox=dataset.gnd[i].bbox)); positives = good ∪ ok "
            "(the query's own image is among them), junk ignored"
        ),
        skipped=skipped,
        exif_transpose=False,
    )


def _index_images(name: str, root: Path) -> dict[str, Path]:
    """``{image name: path}`` for every JPEG under ``jpg/`` (also in per-landmark sub-folders)."""
    folder = root / IMAGE_FOLDER
    images = {p.stem: p for p in sorted(folder.rglob("*.jpg"))} if folder.is_dir() else {}
    if not images:
        raise DatasetNotFoundError(name, folder)
    return images


def _read_queries(name: str, gt_folder: Path) -> list[tuple[Path, tuple[str, tuple[float, ...]]]]:
    query_files = sorted(gt_folder.glob("*_query.txt")) if gt_folder.is_dir() else []
    if not query_files:
        raise DatasetNotFoundError(name, gt_folder)
    if len(query_files) != EXPECTED_QUERIES:
        log.warning("%s: %d query files under %s (the official ground truth has %d)",
                    name, len(query_files), gt_folder, EXPECTED_QUERIES)
    return [(f, _parse_query_line(f)) for f in query_files]


def _parse_query_line(query_file: Path) -> tuple[str, tuple[float, ...]]:
    fields = query_file.read_text().split()
    if len(fields) != 5:
        raise ValueError(f"{query_file}: expected '<name> x1 y1 x2 y2', got {' '.join(fields)!r}")
    return fields[0].removeprefix(QUERY_PREFIX), tuple(float(v) for v in fields[1:])


def _read_list(query_file: Path, kind: str) -> list[str]:
    path = query_file.with_name(query_file.name.replace("_query.txt", f"_{kind}.txt"))
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the ground truth of {query_file.name} is incomplete")
    return path.read_text().split()


def _listed_but_absent(gt_folder: Path, images: dict[str, Path], reported: set[Path]) -> list[tuple[Path, str]]:
    """Names in any gt list that have no image (missing files; unreadable ones are already reported)."""
    listed = {name for name, _ in (_parse_query_line(f) for f in gt_folder.glob("*_query.txt"))}
    for kind in ("good", "ok", "junk"):
        for path in gt_folder.glob(f"*_{kind}.txt"):
            listed.update(path.read_text().split())
    reported_names = {p.stem for p in reported}
    return [
        (gt_folder.parent / IMAGE_FOLDER / f"{n}.jpg", "named in the ground truth but not found under jpg/")
        for n in sorted(listed - set(images) - reported_names)
    ]
