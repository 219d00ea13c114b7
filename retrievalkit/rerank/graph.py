"""kNN neighbours, affinity graph and its symmetric normalisation — the graph that diffusion walks on.

Survey §2.4.2.1: a diffusion process first turns pairwise similarities into a weighted kNN graph
(*similarity initialisation*: clipped inner product raised to a power, or a Gaussian kernel on the
Euclidean distance), then defines how a walker moves on it (*transition matrix*; here the symmetric
normalisation ``S = D^-1/2 W D^-1/2`` used by Zhou et al. 2004 and Iscen et al. 2017). Taught in
notebooks/11_diffusion_and_reranking.

Descriptors are rows (N×D, L2-normalised); similarity is the inner product. Graphs are
``scipy.sparse`` CSR matrices (N×N, symmetric, no self loops).
"""
from __future__ import annotations

import numpy as np

SIMILARITIES = ("ip", "gaussian")
DEFAULT_GAMMA = 3.0  # Iscen et al. 2017: affinity = max(<x, y>, 0) ** 3


def _rows(x, name: str) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"{name} must be an N×D array of descriptor rows, got shape {x.shape}")
    return x


def check_k(k: int, n: int, what: str = "k") -> int:
    """``k`` as an int in ``[1, n]``, or a clear error naming the database size."""
    if int(k) != k or k < 1:
        raise ValueError(f"{what} must be a positive integer, got {k!r}")
    if k > n:
        raise ValueError(f"{what}={k} is larger than the {n} database rows available "
                         f"(after excluding the query itself); use {what} ≤ {n}")
    return int(k)


def _exclusions(exclude, n_q: int) -> np.ndarray:
    """``exclude`` as an n_q × m int array padded with -1 (a scalar/1-D input: one row per query)."""
    if exclude is None:
        return np.full((n_q, 0), -1, dtype=np.int64)
    ex = np.asarray(exclude, dtype=np.int64)
    ex = ex.reshape(n_q, -1) if ex.ndim <= 1 else ex
    if ex.shape[0] != n_q:
        raise ValueError(f"exclude has {ex.shape[0]} rows for {n_q} queries")
    return ex


def _top(q: np.ndarray, db: np.ndarray, k: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner products, best first, by chunks of queries (``torch.topk``: no full sort)."""
    import torch

    dbt = torch.from_numpy(db)
    sims = np.empty((len(q), k), dtype=np.float32)
    ids = np.empty((len(q), k), dtype=np.int64)
    for s in range(0, len(q), chunk):
        top = torch.topk(torch.from_numpy(q[s : s + chunk]) @ dbt.T, k, dim=1)
        sims[s : s + chunk], ids[s : s + chunk] = top.values.numpy(), top.indices.numpy()
    return sims, ids


def knn(queries, database, k: int, *, exclude=None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest database rows of each query: ``(similarities, ids)``, best first.

    ``exclude[i]`` (an int, or a row of ints; -1 = none) are database rows never returned for
    query ``i`` — e.g. the query's own row when queries are database images (COIL-100, Holidays),
    so that an expansion or a diffusion seed uses other images only, like an outside query would.
    """
    q, db = _rows(queries, "queries"), _rows(database, "database")
    if q.shape[1] != db.shape[1]:
        raise ValueError(f"queries {q.shape} and database {db.shape} must be rows of the same width")
    ex = _exclusions(exclude, len(q))
    n_ex = int((ex >= 0).sum(axis=1).max()) if ex.size else 0
    k = check_k(k, len(db) - n_ex)
    sims, ids = _top(q, db, k + n_ex)
    if n_ex:
        keep = ~(ids[:, :, None] == np.where(ex >= 0, ex, -2)[:, None, :]).any(axis=2)
        # every row keeps at least k entries (it dropped at most n_ex); take the first k kept, in order
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
        sims, ids = np.take_along_axis(sims, order, 1), np.take_along_axis(ids, order, 1)
    return sims, ids


def affinity(similarities, kind: str = "ip", *, gamma: float = DEFAULT_GAMMA, sigma: float | None = None) -> np.ndarray:
    """Similarity initialisation (Survey §2.4.2.1, item 1): edge weights from inner products.

    ``"ip"``: ``max(s, 0) ** gamma`` (Iscen et al. 2017 use γ = 3: a high power keeps only strong
    links). ``"gaussian"``: ``exp(-d² / σ²)`` with the squared Euclidean distance of unit vectors
    ``d² = 2 − 2s``; ``sigma=None`` takes σ = the median distance over the given similarities.
    """
    s = np.asarray(similarities, dtype=np.float32)
    if kind == "ip":
        if gamma <= 0:
            raise ValueError(f"gamma must be positive, got {gamma}")
        return np.maximum(s, 0) ** np.float32(gamma)
    if kind == "gaussian":
        d2 = np.maximum(2 - 2 * s, 0)
        if sigma is None:
            sigma = float(np.sqrt(np.median(d2))) or 1.0
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        return np.exp(-d2 / np.float32(sigma) ** 2).astype(np.float32)
    raise ValueError(f"unknown similarity {kind!r}; choose one of {SIMILARITIES}")


def knn_graph(database, k: int, *, similarity: str = "ip", gamma: float = DEFAULT_GAMMA, sigma: float | None = None,
              mutual: bool = True, exclude_pairs=None):
    """Weighted kNN affinity graph ``W`` over the database rows (sparse, symmetric, zero diagonal).

    Each row links to its ``k`` nearest other rows with weight :func:`affinity`. ``mutual=True``
    keeps an edge only if each end is among the other's ``k`` neighbours (``min(W, Wᵀ)``, as Iscen
    et al. 2017); ``mutual=False`` keeps it if either is (``max(W, Wᵀ)``). ``exclude_pairs[i]``
    (rows of ints, -1 padded) are extra nodes row ``i`` may not link to, besides itself.
    Survey §2.4.2.1; taught in notebooks/11_diffusion_and_reranking.
    """
    import scipy.sparse as sp

    x = _rows(database, "database")
    n = len(x)
    check_k(k, n - 1, "graph k")
    self_ = np.arange(n)[:, None]
    ex = self_ if exclude_pairs is None else np.concatenate([self_, _exclusions(exclude_pairs, n)], axis=1)
    sims, ids = knn(x, x, k, exclude=ex)
    w = affinity(sims, similarity, gamma=gamma, sigma=sigma)
    a = sp.csr_matrix((w.ravel(), (np.repeat(np.arange(n), k), ids.ravel())), shape=(n, n))
    a.eliminate_zeros()
    w_sym = a.minimum(a.T) if mutual else a.maximum(a.T)
    return w_sym.tocsr().astype(np.float32)


def normalize(W):
    """Symmetric normalisation ``S = D^-1/2 W D^-1/2`` (``D`` = degrees; isolated nodes stay zero).

    ``S`` is the symmetric counterpart of the row-stochastic transition matrix ``D^-1 W`` (Survey
    §2.4.2.1, item 2): same eigenvalues, in [-1, 1], so ``I − αS`` is positive definite for α < 1.
    """
    import scipy.sparse as sp

    deg = np.asarray(W.sum(axis=1)).ravel()
    inv = np.zeros_like(deg)
    inv[deg > 0] = 1 / np.sqrt(deg[deg > 0])
    d = sp.diags(inv.astype(np.float32))
    return (d @ W @ d).tocsr().astype(np.float32)


def query_seeds(queries, database, k: int, *, similarity: str = "ip", gamma: float = DEFAULT_GAMMA,
                sigma: float | None = None, exclude=None):
    """The diffusion start vector ``y`` of each query: its top-``k`` affinities to the database.

    Returns a sparse n_q × N CSR matrix (k non-zeros per row); each query's row depends on that
    query alone (inductive). ``exclude`` as in :func:`knn` (the query's own row on COIL-100).
    """
    import scipy.sparse as sp

    sims, ids = knn(queries, database, k, exclude=exclude)
    w = affinity(sims, similarity, gamma=gamma, sigma=sigma)
    n_q, n = len(ids), np.shape(database)[0]
    return sp.csr_matrix((w.ravel(), (np.repeat(np.arange(n_q), k), ids.ravel())), shape=(n_q, n))
