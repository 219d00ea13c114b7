"""COIL-100, the embedded default dataset (Nene, Nayar & Murase 1996).

7,200 real photos: 100 objects on a turntable, 72 poses 5° apart, 128×128 RGB. The default
protocol (DESIGN.md §4, documented in the README) mirrors the instance-retrieval benchmarks of
Survey §2.5.1 on data small enough for a laptop:

* learning split = objects 1–50 — the only images that whitening, PCA, codebooks, hashing and
  fine-tuning may learn from;
* test split = objects 51–100 — database = all 3,600 test images; queries = poses 0°, 90°, 180°,
  270° of each test object (200 queries), each excluded from its own ranking (it is junk);
  positives = the other 71 views of the same object;
* Easy / Hard views by angular distance to the query, like ROxford's protocols: Easy positives
  are views at most 30° away, Hard positives at least 60° away; each protocol ignores (junk) the
  same-object views it does not count.

EXIF rule: orientation tags are honoured (``exif_transpose=True``); COIL-100's PNGs carry none
and there are no boxes. Taught in notebooks/00_setup_and_data.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DatasetNotFoundError, QueryGroundTruth, RetrievalDataset, resolve_root

N_OBJECTS = 100
POSES = tuple(range(0, 360, 5))
LEARN_OBJECTS = tuple(range(1, 51))
TEST_OBJECTS = tuple(range(51, 101))
QUERY_POSES = (0, 90, 180, 270)
EASY_MAX_DEG = 30
HARD_MIN_DEG = 60
IMAGE_FOLDER = "coil-100"


def image_name(obj: int, pose: int) -> str:
    """Official file name of object ``obj`` (1-based) at ``pose`` degrees."""
    return f"obj{obj}__{pose}.png"


def angular_distance(a, b) -> np.ndarray:
    """Smallest turntable angle between poses (degrees, 0–180)."""
    d = np.abs(np.asarray(a) - np.asarray(b)) % 360
    return np.minimum(d, 360 - d)


def _image_dir(root: Path) -> Path:
    folder = root / IMAGE_FOLDER
    if not folder.is_dir() or not any(folder.glob("obj*__*.png")):
        raise DatasetNotFoundError("coil100", folder)
    return folder


def _split_objects(split: str) -> tuple[int, ...]:
    if split == "learn":
        return LEARN_OBJECTS
    if split == "test":
        return TEST_OBJECTS
    if split == "all":
        return tuple(range(1, N_OBJECTS + 1))
    raise ValueError(f"unknown COIL-100 split {split!r}; choose 'learn', 'test' or 'all'")


def load(
    root=None,
    data_home=None,
    *,
    split: str = "test",
    objects=None,
    query_poses=QUERY_POSES,
    pose_step: int = 5,
    download: bool = True,
    progress=None,
) -> RetrievalDataset:
    """Load COIL-100 with the default protocol.

    ``split`` picks the objects ('test' = 51–100, 'learn' = 1–50, 'all'); ``objects`` overrides it
    with an explicit list (SMALL mode uses fewer objects). ``pose_step`` keeps every view that many
    degrees apart (a multiple of 5 dividing 90, so the query poses stay; 10 halves the images, as the
    default reproduction does). The learning split gets the same query structure so a validation
    score can be computed on it without touching the test objects.
    """
    if pose_step <= 0 or pose_step % 5 or 90 % pose_step:
        raise ValueError(f"pose_step must be a multiple of 5 that divides 90 (5, 10, 15, 30, 45, 90), got {pose_step}")
    poses_kept = tuple(p for p in POSES if p % pose_step == 0)
    custom = objects is not None
    objects = tuple(objects) if custom else _split_objects(split)
    root = resolve_root("coil100", root, data_home, download=download, progress=progress)
    folder = _image_dir(Path(root).resolve())

    db_paths, labels, poses = [], [], []
    missing = []
    for obj in objects:
        for pose in poses_kept:
            path = folder / image_name(obj, pose)
            if not path.is_file():
                missing.append(path)
                continue
            db_paths.append(path)
            labels.append(obj)
            poses.append(pose)
    if missing:
        raise DatasetNotFoundError(
            "coil100", missing[0],
            hint=f"{len(missing)} of {len(objects) * len(poses_kept)} images are missing (first: {missing[0].name}); "
            "delete the folder and run `retrievalkit datasets fetch coil100` again",
        )
    labels = np.asarray(labels, dtype=np.int64)
    poses = np.asarray(poses, dtype=np.int64)

    query_rows = np.flatnonzero(np.isin(poses, query_poses))
    gnd = [_ground_truth(q, labels, poses) for q in query_rows]
    return RetrievalDataset.queries_from_database(
        "coil100", root, db_paths, labels, query_rows, gnd,
        protocols=("all", "easy", "hard"),
        split="custom" if custom else split,
        description=(
            f"COIL-100 {split} split: {len(objects)} objects × {len(poses_kept)} poses"
            f"{'' if pose_step == 5 else f' ({pose_step}° apart)'}; queries at poses "
            f"{', '.join(map(str, query_poses))}°, excluded from their own ranking"
        ),
        meta={"poses": poses},
        exif_transpose=True,
    )


def _ground_truth(q: int, labels: np.ndarray, poses: np.ndarray) -> QueryGroundTruth:
    same = np.flatnonzero(labels == labels[q])
    same = same[same != q]
    dist = angular_distance(poses[same], poses[q])
    return QueryGroundTruth.make(
        positives=same,
        junk=[q],
        easy=same[dist <= EASY_MAX_DEG],
        hard=same[dist >= HARD_MIN_DEG],
    )
