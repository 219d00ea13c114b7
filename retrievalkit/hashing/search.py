"""Hamming search over packed binary codes: faiss binary indexes and a NumPy popcount reference.

Survey §2.1.2 challenge 3 and §2.3.2.4: binary codes trade accuracy for speed and memory — a
Hamming distance is an XOR and a popcount. Taught in notebooks/07_hashing and
notebooks/08_indexing_and_efficiency.

Codes are **packed** uint8 rows (``N × ceil(K/8)``, most significant bit first, see
:func:`retrievalkit.hashing.codes.pack_codes`); pass ``packed=False`` to give ``±1``/``0/1`` codes.

**Convention.** Like :func:`retrievalkit.index.knn`: queries first, ``(scores, ids)`` best first,
with ``scores = K − 2·Hamming`` (the ±1 inner product). Hamming distances are small integers, so
ties are the rule, not the exception: among equal scores, **lower database id first**. faiss's binary search
returns the right distances but does not promise which of several tied items at the k-th
distance it keeps, so the result is completed (the search is widened until the k-th distance
is passed, see :func:`hamming_search`) and re-sorted by ``(distance, id)``.
"""
from __future__ import annotations

import numpy as np

from .codes import pack_codes

POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
NUMPY_DB_CHUNK = 16384  # database rows per XOR block in the NumPy reference
DEFAULT_MIN_POINTS_PER_LIST = 39  # faiss's k-means warns below this many training points per centroid
BINARY_KINDS = ("flat", "ivf")


def _packed(codes, packed: bool, name: str) -> np.ndarray:
    if not packed:
        return pack_codes(codes)
    codes = np.asarray(codes)
    if codes.dtype != np.uint8 or codes.ndim != 2:
        raise ValueError(
            f"{name} must be packed codes (2-D uint8, e.g. from encoder.encode(X) or pack_codes); "
            f"got {codes.dtype} with shape {codes.shape}. Pass packed=False for ±1 or 0/1 codes."
        )
    return np.ascontiguousarray(codes)


# --------------------------------------------------------------------------- NumPy reference
def hamming_distances(q_codes, db_codes, *, packed: bool = True) -> np.ndarray:
    """All ``queries × database`` Hamming distances (int32) by XOR and a byte popcount table."""
    q, db = _packed(q_codes, packed, "q_codes"), _packed(db_codes, packed, "db_codes")
    if q.shape[1] != db.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} bytes per code, the database {db.shape[1]}")
    out = np.empty((len(q), len(db)), dtype=np.int32)
    for start in range(0, len(db), NUMPY_DB_CHUNK):
        xor = np.bitwise_xor(q[:, None, :], db[None, start : start + NUMPY_DB_CHUNK, :])
        out[:, start : start + NUMPY_DB_CHUNK] = POPCOUNT[xor].sum(axis=2, dtype=np.int32)
    return out


def hamming_search_numpy(q_codes, db_codes, k: int, *, packed: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Reference k-NN in Hamming space, same convention as :func:`hamming_search` (a stable argsort)."""
    dist = hamming_distances(q_codes, db_codes, packed=packed)
    ids = np.argsort(dist, axis=1, kind="stable")[:, : min(int(k), dist.shape[1])]
    n_bits = 8 * -(-np.shape(q_codes)[1] // (1 if packed else 8))  # bits of the packed code
    return _scores(np.take_along_axis(dist, ids, axis=1), n_bits), ids.astype(np.int64)


def _scores(dist: np.ndarray, n_bits: int) -> np.ndarray:
    """Hamming distances → similarities ``K − 2d``: the inner product of the ±1 codes (padding bits agree)."""
    return (n_bits - 2 * dist).astype(np.int32)


# --------------------------------------------------------------------------- faiss indexes
def binary_index(db_codes, kind: str = "flat", *, train_codes=None, nlist: int | None = None, packed: bool = True):
    """A faiss binary index holding ``db_codes``.

    ``kind="flat"``: ``IndexBinaryFlat``, exhaustive XOR + popcount (exact). ``kind="ivf"``:
    ``IndexBinaryIVF``, a Hamming k-means coarse quantiser with ``nlist`` lists, trained on
    ``train_codes`` — codes of the LEARNING split, never the database; it refuses to build without
    them. ``nlist`` defaults to ``min(4·√N, n_train / 39)``. Search it with ``nprobe``.
    """
    if kind not in BINARY_KINDS:
        raise ValueError(f"unknown binary index kind {kind!r}; choose one of {BINARY_KINDS}")
    import faiss

    db = _packed(db_codes, packed, "db_codes")
    d = 8 * db.shape[1]
    if kind == "flat":
        index = faiss.IndexBinaryFlat(d)
    else:
        if train_codes is None:
            raise ValueError(
                "binary_index('ivf') needs train_codes: codes of LEARNING-split descriptors to train the coarse "
                "quantiser (it never trains on the database)"
            )
        train = _packed(train_codes, packed, "train_codes")
        if train.shape[1] != db.shape[1]:
            raise ValueError(f"train_codes have {train.shape[1]} bytes per code, the database {db.shape[1]}")
        if nlist is None:
            nlist = max(1, min(int(4 * np.sqrt(len(db))), len(train) // DEFAULT_MIN_POINTS_PER_LIST))
        if nlist > len(train):
            raise ValueError(f"nlist={nlist} lists need at least as many training codes, got {len(train)}")
        index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(d), d, int(nlist))
        index.train(train)
    index.add(db)
    return index


def _faiss_search(index, q: np.ndarray, k: int, nprobe: int | None):
    import faiss

    if nprobe is not None:
        return index.search(q, k, params=faiss.SearchParametersIVF(nprobe=int(nprobe)))
    return index.search(q, k)


def _sort_by_distance_then_id(dist: np.ndarray, ids: np.ndarray, k: int):
    # Missing results (id −1, fewer than k candidates in the probed lists) go last.
    missing = ids < 0
    key_d = np.where(missing, np.iinfo(np.int64).max, dist.astype(np.int64))
    key_i = np.where(missing, np.iinfo(np.int64).max, ids)
    order = np.lexsort((key_i, key_d), axis=1)[:, :k] if dist.size else np.zeros((len(dist), 0), np.int64)
    return np.take_along_axis(dist, order, 1), np.take_along_axis(ids, order, 1)


def hamming_search(q_codes, db_codes, k: int, *, nprobe: int | None = None, packed: bool = True):
    """k nearest codes in Hamming distance: ``(scores, ids)``, each ``queries × k``, best first.

    The package's one search convention (:func:`retrievalkit.index.knn`): queries first, and
    ``scores = K − 2·d`` (int32), the inner product of the ±1 codes of ``K`` bits, so higher is
    closer (:func:`hamming_distances` gives ``d`` itself). ``db_codes`` is packed codes (an
    ``IndexBinaryFlat`` is built for them) or a faiss binary index from :func:`binary_index`
    (``nprobe`` then sets the lists visited by an IVF index).

    Tie order: equal distance → lower database id first. faiss returns the right k-th distance
    ``r`` but may keep any of the items tied at ``r``; so faiss is asked for ``2k`` candidates,
    and a query whose last candidate is still at distance ``r`` is searched again with twice as
    many, until the candidates reach past ``r`` (then every item at distance ``≤ r`` is among
    them); the candidates are sorted by ``(distance, id)``. A faiss search for k=1,000 costs
    little more than for k=10, so this stays cheap. For an IVF index the order is the same rule
    applied to the candidates of the probed lists (which are approximate by design).
    """
    import faiss

    q = _packed(q_codes, packed, "q_codes")
    index = db_codes if isinstance(db_codes, faiss.IndexBinary) else binary_index(db_codes, "flat", packed=packed)
    if nprobe is not None and not isinstance(index, faiss.IndexBinaryIVF):
        raise ValueError(f"nprobe applies to an IVF binary index, not to a {type(index).__name__}")
    if q.shape[1] * 8 != index.d:
        raise ValueError(f"queries have {q.shape[1] * 8} bits per code, the index {index.d}")
    n = index.ntotal
    k = min(int(k), n)
    if k <= 0:
        raise ValueError("k must be positive and the database non-empty")
    dist = np.empty((len(q), k), dtype=np.int32)
    ids = np.empty((len(q), k), dtype=np.int64)
    pending = np.arange(len(q))
    k_wide = min(2 * k, n)
    while True:
        d_w, i_w = _faiss_search(index, q[pending], k_wide, nprobe)
        d_w, i_w = d_w.astype(np.int32), i_w.astype(np.int64)
        dist[pending], ids[pending] = _sort_by_distance_then_id(d_w, i_w, k)
        # Complete once the candidates reach past the k-th distance, hold the whole database,
        # or run out (an IVF index with too few candidates in the probed lists pads with id −1).
        done = (d_w[:, -1] > d_w[:, k - 1]) | (i_w[:, -1] < 0) | (k_wide >= n)
        pending = pending[~done]
        if not len(pending):
            return _scores(dist, index.d), ids
        k_wide = min(2 * k_wide, n)


__all__ = [
    "POPCOUNT", "BINARY_KINDS", "hamming_distances", "hamming_search_numpy", "binary_index", "hamming_search",
]
