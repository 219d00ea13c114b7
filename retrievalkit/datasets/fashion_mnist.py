"""Fashion-MNIST (Xiao et al. 2017) for category-level retrieval and hashing.

Survey §2.5.1 (datasets) and §2.4 (hashing, evaluated like the hashing literature's CIFAR-10
setups: mAP@1000 and precision@k); taught in notebooks/00_setup_and_data.

70,000 grey 28×28 images of 10 clothing classes: 60,000 ``train`` and 10,000 ``test``. Files:
``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`` (zalandoresearch's release and the Debian
package ``dataset-fashion-mnist`` in ``/usr/share/datasets/fashion-mnist``); the
``train-images.idx3-ubyte`` spelling and uncompressed files are accepted too.

Protocol: database = one split, queries = the other; a database image is a positive of a query
when it has the same class. The images live in memory (``db_arrays``/``query_arrays``, uint8
N×28×28); ``db_paths`` are synthetic names such as ``fashion_mnist/train/00042``.
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from .base import DatasetNotFoundError, QueryGroundTruth, RetrievalDataset, resolve_root

NAME = "fashion_mnist"
CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
SPLITS = {"train": "train", "test": "t10k"}  # our split name -> file prefix
_KINDS = {"images": "idx3", "labels": "idx1"}
_UBYTE = 0x08
_NO_JUNK = np.zeros(0, dtype=np.int64)
_NO_JUNK.setflags(write=False)


def load(
    root=None,
    data_home=None,
    *,
    download: bool = True,
    progress=None,
    split_db: str = "train",
    queries: str = "test",
    n_db: int | None = None,
    n_queries: int | None = None,
    seed: int = 0,
) -> RetrievalDataset:
    """Load Fashion-MNIST as a category-level benchmark (Survey §2.5.1; notebooks/00_setup_and_data).

    ``split_db`` / ``queries``: 'train' or 'test' (different splits, so no query is in the
    database). ``n_db`` / ``n_queries`` draw that many images at random (``seed``), as SMALL mode
    does; the picks of one do not depend on the other. Without ``root`` the data hub finds the
    files (data home, the Debian package's folder, the mirror, or a download).

    Ground truth stays small: the queries of one class share one read-only array of that class's
    database rows (10 arrays in all, ~0.5 MB for the full database), instead of 10,000 copies.
    """
    for split in (split_db, queries):
        if split not in SPLITS:
            raise ValueError(f"unknown Fashion-MNIST split {split!r}; choose 'train' or 'test'")
    if split_db == queries:
        raise ValueError("queries must come from the other split than the database (e.g. db 'train', queries 'test')")
    root = resolve_root(NAME, root, data_home, download=download, progress=progress)

    db_images, db_labels, db_ids = _subsample(*read_split(root, split_db), n_db, seed, stream=0)
    q_images, q_labels, q_ids = _subsample(*read_split(root, queries), n_queries, seed, stream=1)

    class_rows = _rows_per_class(db_labels)
    gnd = [QueryGroundTruth(positives=class_rows[c], junk=_NO_JUNK) for c in q_labels.tolist()]
    return RetrievalDataset(
        name=NAME,
        root=root,
        db_paths=_synthetic_paths(split_db, db_ids),
        query_paths=_synthetic_paths(queries, q_ids),
        gnd=gnd,
        db_labels=db_labels,
        query_labels=q_labels,
        query_db_index=np.full(len(q_labels), -1, dtype=np.int64),
        protocols=("all",),
        split=split_db,
        description=(
            f"Fashion-MNIST, category level: {len(db_labels)} {split_db} images as database, "
            f"{len(q_labels)} {queries} images as queries; positives = same class (10 classes)"
        ),
        db_arrays=db_images,
        query_arrays=q_images,
        meta={"classes": CLASSES},
    )


def read_split(root, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 N×28×28, labels int64 N)`` of ``split`` ('train' or 'test') under ``root``."""
    root = Path(root)
    images = read_idx(_find_file(root, split, "images"))
    labels = read_idx(_find_file(root, split, "labels")).astype(np.int64)
    if images.ndim != 3 or len(images) != len(labels):
        raise ValueError(f"Fashion-MNIST {split} under {root}: {images.shape} images but {labels.shape} labels")
    return images, labels


def read_idx(path) -> np.ndarray:
    """Read an IDX file (the MNIST format: big-endian header, then the raw array), gzipped or not."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _UBYTE:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) - header != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but the file holds {len(data) - header} bytes")
    # A bytearray gives a writable array (torch.from_numpy warns about read-only ones).
    return np.frombuffer(bytearray(data), dtype=np.uint8, offset=header).reshape(shape)


def _candidate_names(split: str, kind: str) -> list[str]:
    stem = f"{SPLITS[split]}-{kind}"
    idx = _KINDS[kind]
    return [f"{stem}{sep}{idx}-ubyte{ext}" for ext in (".gz", "") for sep in ("-", ".")]


def _find_file(root: Path, split: str, kind: str) -> Path:
    for name in _candidate_names(split, kind):
        if (root / name).is_file():
            return root / name
    raise DatasetNotFoundError(NAME, root / _candidate_names(split, kind)[0])


def _subsample(images, labels, n, seed: int, stream: int):
    """``(images, labels, original ids)`` of ``n`` random rows, or of all rows when ``n`` is None."""
    ids = np.arange(len(labels), dtype=np.int64)
    if n is not None and n < 0:
        raise ValueError(f"cannot draw {n} images")
    if n is not None and n < len(labels):
        # One generator per stream, so the query draw does not change when n_db changes.
        rng = np.random.default_rng([seed, stream])
        ids = np.sort(rng.choice(len(labels), size=n, replace=False))
        images, labels = images[ids], labels[ids]
    return images, labels, ids


def _rows_per_class(labels: np.ndarray) -> dict[int, np.ndarray]:
    rows = {}
    for c in range(len(CLASSES)):
        rows[c] = np.flatnonzero(labels == c).astype(np.int64)
        rows[c].setflags(write=False)  # shared by every query of the class
    return rows


def _synthetic_paths(split: str, ids: np.ndarray) -> list[Path]:
    return [Path(f"{NAME}/{split}/{i:05d}") for i in ids.tolist()]
