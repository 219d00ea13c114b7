"""Revisited Oxford and Paris (ROxford5k, RParis6k) with the revisitop protocol.

Survey §2.5.1 (datasets; Radenović et al. 2018 re-annotated Oxford5k and Paris6k); taught in
notebooks/00_setup_and_data.

Layout: ``<root>/gnd_<name>.pkl`` and ``<root>/jpg/<image>.jpg``. The pickle holds ``imlist``
(database names), ``qimlist`` (70 query names, none of them in ``imlist``) and ``gnd``: per query
``bbx`` (x1, y1, x2, y2) and the database indices ``easy``, ``hard`` and ``junk``.

Protocol, exactly revisitop's: each query image is cropped to its ``bbx`` before extraction
(``read_image(path, bbox=...)``); positives = easy ∪ hard; Easy counts the easy images and
ignores the hard ones, Medium counts both, Hard counts the hard ones and ignores the easy ones;
junk is always ignored (:meth:`QueryGroundTruth.protocol`). Two ROxford queries have no easy
positive at all, so they have no Easy score (revisitop leaves them out of the means).
EXIF rule: images are read in their stored pixel frame (``exif_transpose=False``), the frame of
the ``bbx`` boxes and of revisitop's own reader, which ignores orientation tags.

Partial copies (``partial=True``): the same protocol over whatever listed images are present.
Absent database images leave every list they were in, absent queries are dropped, and the counts
are printed. ``rparis6k_mini`` (a 250-photo lab pack in the Paris archives' own
``paris/<landmark>/<name>.jpg`` layout) is this code path with the real ``gnd_rparis6k.pkl``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DatasetNotFoundError, QueryGroundTruth, RetrievalDataset, resolve_root

IMAGE_FOLDER = "jpg"
EXPECTED_SIZES = {"roxford5k": (4993, 70), "rparis6k": (6322, 70)}
MINI_NAME = "rparis6k_mini"


def load_roxford5k(
    root=None, data_home=None, *, download: bool = True, progress=None, check_images: bool = False,
    partial: bool = False,
) -> RetrievalDataset:
    """ROxford5k: 4,993 database images, 70 cropped queries, Easy/Medium/Hard (Survey §2.5.1).

    See :func:`load_revisited` for the options. Taught in notebooks/00_setup_and_data.
    """
    return load_revisited("roxford5k", root, data_home, download=download, progress=progress,
                          check_images=check_images, partial=partial)


def load_rparis6k(
    root=None, data_home=None, *, download: bool = True, progress=None, check_images: bool = False,
    partial: bool = False,
) -> RetrievalDataset:
    """RParis6k: 6,322 database images, 70 cropped queries, Easy/Medium/Hard (Survey §2.5.1).

    See :func:`load_revisited` for the options. Taught in notebooks/00_setup_and_data.
    """
    return load_revisited("rparis6k", root, data_home, download=download, progress=progress,
                          check_images=check_images, partial=partial)


def load_rparis6k_mini(
    root=None, data_home=None, *, download: bool = True, progress=None, check_images: bool = True
) -> RetrievalDataset:
    """RParis6k over the 250-photo lab pack: 238 database images, 12 cropped queries (Survey §2.5.1).

    The real ``gnd_rparis6k.pkl`` restricted to the images present (``partial=True`` of
    :func:`load_revisited`): each query keeps the easy, hard and junk images that exist, so
    Easy/Medium/Hard are revisitop's rules on the subset. The pack keeps the originals' pixel
    size, so the boxes apply unchanged. Decoding the 250 photos to find corrupt ones takes about a
    second (``check_images``). Taught in notebooks/00_setup_and_data.
    """
    root = resolve_root(MINI_NAME, root, data_home, download=download, progress=progress)
    dataset = load_revisited("rparis6k", root, download=False, progress=progress, check_images=check_images,
                             partial=True, nested=True, dataset_name=MINI_NAME)
    _report_short_pack(dataset)
    return dataset


def _report_short_pack(dataset: RetrievalDataset) -> None:
    """Say how many of the pack's own images are missing (a damaged or hand-trimmed copy)."""
    from .manifest import get

    entry = get(MINI_NAME)
    short_db, short_q = entry.n_images - dataset.n_db, entry.n_queries - dataset.n_queries
    dataset.meta["missing"] = {"database": short_db, "queries": short_q}
    if short_db or short_q:
        print(f"{MINI_NAME}: {short_db} of the pack's {entry.n_images} database images and {short_q} of its "
              f"{entry.n_queries} queries are missing or unreadable; delete {dataset.root} and run "
              f"`retrievalkit datasets fetch {MINI_NAME}` to restore them")


def load_revisited(
    name: str, root=None, data_home=None, *, download: bool = True, progress=None, check_images: bool = False,
    partial: bool = False, nested: bool = False, dataset_name: str | None = None,
) -> RetrievalDataset:
    """Load ``roxford5k`` or ``rparis6k`` from ``root`` (default: fetched into the data home).

    Every listed image must exist; a missing one raises :class:`DatasetNotFoundError`. With
    ``check_images=True`` every image is decoded once (≈ 20–30 s for the ~5–6k images on two
    cores) and the missing or unreadable ones are dropped instead and listed in
    ``dataset.skipped``; the ground truth is re-indexed and a query whose own image is unusable
    is removed.

    ``partial=True`` is the explicit opt-in for a copy holding only some of the images: absent
    ones are dropped the same way (counted in a printed line, not listed in ``skipped``) and only
    the ground-truth file is fetched when ``root`` is not given. ``nested=True`` reads the images from
    sub-folders by file name (the Paris archives' ``<root>/paris/<landmark>/<name>.jpg``) instead of
    from ``<root>/jpg/<name>.jpg``. ``dataset_name`` names the result (default ``name``).
    """
    if name not in EXPECTED_SIZES:
        raise ValueError(f"unknown revisited dataset {name!r}; choose one of {', '.join(EXPECTED_SIZES)}")
    root = resolve_root(name, root, data_home, download=download, progress=progress,
                        parts=("gnd",) if partial else None)
    cfg = _read_gnd(name, root)
    image_path = _nested_image_path(name, root) if nested else _flat_image_path(name, root)
    db_paths = [image_path(n) for n in cfg["imlist"]]
    query_paths = [image_path(n) for n in cfg["qimlist"]]
    gnd = [_query_ground_truth(g) for g in cfg["gnd"]]

    skipped: list[tuple[Path, str]] = []
    if check_images or partial:
        db_paths, query_paths, gnd, skipped = _drop_unusable(db_paths, query_paths, gnd, progress,
                                                             decode=check_images, report_absent=not partial)
    else:
        _require_all_present(name, db_paths + query_paths)

    n_db, n_q = EXPECTED_SIZES[name]
    if partial:
        print(f"{dataset_name or name}: {len(db_paths):,} of {n_db:,} database images and {len(query_paths)} "
              f"of {n_q} queries present under {root}"
              + (f"; {len(skipped)} unreadable, skipped (dataset.skipped)" if skipped else ""))
    return RetrievalDataset(
        name=dataset_name or name,
        root=root,
        db_paths=db_paths,
        query_paths=query_paths,
        gnd=gnd,
        query_db_index=np.full(len(query_paths), -1, dtype=np.int64),
        protocols=("easy", "medium", "hard"),
        split="test",
        description=(
            f"{dataset_name or name}: {len(db_paths)} database images (official {n_db}), {len(query_paths)} queries "
            f"(official {n_q}) that are separate images cropped to their bounding box "
            "(read_image(path, bbox=dataset.gnd[i].bbox)); revisitop Easy/Medium/Hard protocols"
        ),
        skipped=skipped,
        exif_transpose=False,  # revisitop crops the stored pixels: its boxes are in that frame
        revisited=True,
    )


def _read_gnd(name: str, root: Path) -> dict:
    from .download import load_gnd_pickle

    path = root / f"gnd_{name}.pkl"
    if not path.is_file():
        raise DatasetNotFoundError(name, path)
    cfg = load_gnd_pickle(path)
    missing = {"imlist", "qimlist", "gnd"} - set(cfg)
    if missing:
        raise ValueError(f"{path} is not a revisitop ground-truth file: it lacks {sorted(missing)}")
    if len(cfg["gnd"]) != len(cfg["qimlist"]):
        raise ValueError(f"{path}: {len(cfg['qimlist'])} queries but {len(cfg['gnd'])} ground-truth entries")
    return cfg


def _flat_image_path(name: str, root: Path):
    folder = root / IMAGE_FOLDER
    if not folder.is_dir() or next(folder.glob("*.jpg"), None) is None:
        raise DatasetNotFoundError(name, folder)
    return lambda image: folder / f"{image}.jpg"


def _nested_image_path(name: str, root: Path):
    """Images found by file name in any sub-folder (``paris/<landmark>/<name>.jpg``, as the archives
    extract; folder names such as ``eiffel_tower`` need not match the image names)."""
    found: dict[str, Path] = {}
    for path in sorted(root.glob("*/**/*.jpg")):
        if found.setdefault(path.stem, path) != path:
            raise ValueError(f"{name}: two images named {path.name} under {root} ({found[path.stem]} and {path}); "
                             "keep one copy")
    if not found:
        raise DatasetNotFoundError(name, root, hint=f"no images in sub-folders of {root} (paris/<landmark>/*.jpg)")
    return lambda image: found.get(image, root / f"{image}.jpg")


def _query_ground_truth(g: dict) -> QueryGroundTruth:
    easy, hard = list(g["easy"]), list(g["hard"])
    return QueryGroundTruth.make(positives=easy + hard, junk=g["junk"], easy=easy, hard=hard, bbox=g["bbx"])


def _require_all_present(name: str, paths: list[Path]) -> None:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DatasetNotFoundError(
            name, missing[0].parent,
            hint=f"{len(missing)} of {len(paths)} listed images are missing (first: {missing[0].name}); "
            f"run `retrievalkit datasets fetch {name}` again, or pass check_images=True to skip and report them",
        )


def _drop_unusable(db_paths, query_paths, gnd, progress, decode: bool = True, report_absent: bool = True):
    """Drop absent (and, with ``decode``, unreadable) images; re-index the ground truth.

    Returns the kept paths and ground truth plus ``skipped``: the unreadable images, and the absent
    ones too unless ``report_absent`` is false (a partial copy lacks most images on purpose).
    """
    from .base import drop_database_rows
    from .images import find_unreadable

    present = [p for p in db_paths + query_paths if p.is_file()]
    absent = [(p, "file not found") for p in db_paths + query_paths if not p.is_file()]
    skipped = list(absent) if report_absent else []
    if decode:
        _, unreadable = find_unreadable(present, progress=progress)
        skipped += unreadable
    bad = {p for p, _ in absent + skipped}

    keep_db = np.array([p not in bad for p in db_paths], dtype=bool)
    gnd = drop_database_rows(gnd, keep_db)
    keep_query = [p not in bad for p in query_paths]
    return (
        [p for p, k in zip(db_paths, keep_db) if k],
        [p for p, k in zip(query_paths, keep_query) if k],
        [g for g, k in zip(gnd, keep_query) if k],
        skipped,
    )
