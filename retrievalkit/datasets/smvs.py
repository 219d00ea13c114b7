"""Stanford Mobile Visual Search, DVD covers (Chandrasekhar et al., MMSys 2011), as a lab pack.

Survey §2.5.1 (instance-level datasets); taught in notebooks/00_setup_and_data.

Layout: ``<root>/smvs-dvd-covers/Reference/001.jpg … 100.jpg`` (clean 500×500 covers) and
``<root>/smvs-dvd-covers/{Canon,Droid,E63,Palm}/001.jpg … 100.jpg`` (phone photos of the same
covers: clutter, glare, perspective; EXIF orientation already applied when the pack was made).

Protocol: database = the 100 reference covers; queries = the 400 phone photos, each with exactly
one positive, the reference with the same number. Nothing is junk. Report mAP, P@1 (the
benchmark's usual figure) and recall@k, overall and per camera: ``dataset.meta["camera"]`` names
each query's camera and :func:`by_camera` splits the dataset into one per camera.

EXIF rule: images are read upright (``exif_transpose=True``, the default); the pack's phone photos
already have their orientation applied and no query has a box, so the rule changes nothing here.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .base import DatasetNotFoundError, QueryGroundTruth, RetrievalDataset, resolve_root

log = logging.getLogger(__name__)

NAME = "smvs_dvd"
IMAGE_FOLDER = "smvs-dvd-covers"
REFERENCE = "Reference"
CAMERAS = ("Canon", "Droid", "E63", "Palm")
N_COVERS = 100


def image_name(number: int) -> str:
    """File name of cover ``number`` (1-based) in every folder: ``7`` → ``007.jpg``."""
    return f"{number:03d}.jpg"


def load(
    root=None, data_home=None, *, download: bool = True, progress=None, check_images: bool = True
) -> RetrievalDataset:
    """Load the SMVS DVD-cover pack: 100 database covers, 400 phone-photo queries, one positive each.

    Missing files and (with ``check_images``, about a second for the 500 photos) unreadable ones
    are skipped and listed in ``dataset.skipped``; a query whose reference cover is unusable has
    no positive and is skipped too. The number of missing files is logged. Survey §2.5.1.
    """
    root = resolve_root(NAME, root, data_home, download=download, progress=progress)
    folder = root / IMAGE_FOLDER
    if not (folder / REFERENCE).is_dir():
        raise DatasetNotFoundError(NAME, folder / REFERENCE)

    numbers = range(1, N_COVERS + 1)
    listed = [folder / REFERENCE / image_name(n) for n in numbers]
    listed += [folder / cam / image_name(n) for cam in CAMERAS for n in numbers]
    usable, skipped = _usable(listed, check_images, progress)

    db_paths = [folder / REFERENCE / image_name(n) for n in numbers if folder / REFERENCE / image_name(n) in usable]
    db_numbers = np.asarray([int(p.stem) for p in db_paths], dtype=np.int64)
    row_of = {int(n): i for i, n in enumerate(db_numbers)}

    query_paths, cameras, gnd = [], [], []
    for cam in CAMERAS:
        for n in numbers:
            path = folder / cam / image_name(n)
            if path not in usable:
                continue
            if n not in row_of:
                skipped.append((path, f"its reference {REFERENCE}/{image_name(n)} is missing or unreadable"))
                continue
            query_paths.append(path)
            cameras.append(cam)
            gnd.append(QueryGroundTruth.make(positives=[row_of[n]]))
    if skipped:
        log.warning("%s: %d of %d files skipped (first: %s: %s)", NAME, len(skipped), len(listed), *skipped[0])

    return RetrievalDataset(
        name=NAME,
        root=root,
        db_paths=db_paths,
        query_paths=query_paths,
        gnd=gnd,
        db_labels=db_numbers,
        query_labels=np.asarray([int(p.stem) for p in query_paths], dtype=np.int64),
        query_db_index=np.full(len(query_paths), -1, dtype=np.int64),
        protocols=("all",),
        split="test",
        description=(
            f"SMVS DVD covers: {len(db_paths)} clean reference covers; {len(query_paths)} phone-photo queries "
            f"({', '.join(CAMERAS)}), one positive each (same cover number)"
        ),
        skipped=skipped,
        meta={"camera": np.asarray(cameras), "missing": sum(reason == "file not found" for _, reason in skipped)},
    )


def _usable(paths: list[Path], check_images: bool, progress) -> tuple[set[Path], list[tuple[Path, str]]]:
    present = [p for p in paths if p.is_file()]
    skipped = [(p, "file not found") for p in paths if not p.is_file()]
    if check_images:
        from .images import find_unreadable

        present, unreadable = find_unreadable(present, progress=progress)
        skipped += unreadable
    return set(present), skipped


def by_camera(dataset: RetrievalDataset) -> dict[str, RetrievalDataset]:
    """One dataset per camera (same database, that camera's queries), for per-camera scores.

    ``evaluate(ids[rows], part)`` scores one camera, where ``rows = part.meta["query_rows"]`` are the
    query rows of ``dataset`` that ``part`` keeps.
    """
    cameras = dataset.meta["camera"]
    parts = {}
    for cam in dict.fromkeys(cameras.tolist()):
        rows = np.flatnonzero(cameras == cam)
        part = dataset.subset_queries(rows)
        part.meta = {**dataset.meta, "camera": cameras[rows], "query_rows": rows}
        parts[cam] = part
    return parts
