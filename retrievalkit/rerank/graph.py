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

from ..index import check_k, knn
from ..rows import as_rows

SIMILARITIES = ("ip", "gaussian")
DEFAULT_GAMMA = 3.0  # Iscen et al. 2017: affinity = max(<x, y>, 0) ** 3


def affinity(similarities, kind: str = "ip", *, gamma: float = DEFAULT_GAMMA, sigma: float | None = None,
             dtype=np.float32) -> np.ndarray:
    """Similarity initialisation (Survey §2.4.2.1, item 1): edge weights from inner products.

    ``"ip"``: ``max(s, 0) ** gamma`` (Iscen et al. 2017 use γ = 3: a high power keeps only strong
    links). ``"gaussian"``: ``exp(-d² / σ²)`` with the squared Euclidean distance of unit vectors
    ``d² = 2 − 2s``; ``sigma=None`` takes σ = the median distance over the given similarities.
    """
    s = np.asarray(similarities, dtype=dtype)
    if kind == "ip":
        if gamma <= 0:
            raise ValueError(f"gamma must be positive, got {gamma}")
        return np.maximum(s, 0) ** s.dtype.type(gamma)
    if kind == "gaussian":
        d2 = np.maximum(2 - 2 * s, 0)
        if sigma is None:
            sigma = float(np.sqrt(np.median(d2))) or 1.0
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        return np.exp(-d2 / s.dtype.type(sigma) ** 2).astype(dtype)
    raise ValueError(f"unknown similarity {kind!r}; choose one of {SIMILARITIES}")


def knn_graph(database, k: int, *, similarity: str = "ip", gamma: float = DEFAULT_GAMMA, sigma: float | None = None,
              mutual: bool = True, exclude_pairs=None, dtype=np.float32):
    """Weighted kNN affinity graph ``W`` over the database rows (sparse, symmetric, zero diagonal).

    Each row links to its ``k`` nearest other rows with weight :func:`affinity`. ``mutual=True``
    keeps an edge only if each end is among the other's ``k`` neighbours (``min(W, Wᵀ)``, as Iscen
    et al. 2017); ``mutual=False`` keeps it if either is (``max(W, Wᵀ)``). ``exclude_pairs[i]``
    (rows of ints, -1 padded) are extra nodes row ``i`` may not link to, besides itself. ``dtype``:
    float32, or float64 where a closed form is checked to 1e-12 (notebooks/10).
    Survey §2.4.2.1; taught in notebooks/11_diffusion_and_reranking.
    """
    import scipy.sparse as sp

    x = as_rows(database, "database", dtype=dtype)
    n = len(x)
    check_k(k, n - 1, "graph k")
    self_ = np.arange(n)[:, None]
    ex = self_ if exclude_pairs is None else np.concatenate([self_, np.asarray(exclude_pairs, np.int64).reshape(n, -1)], axis=1)
    sims, ids = knn(x, x, k, exclude=ex, dtype=dtype)
    w = affinity(sims, similarity, gamma=gamma, sigma=sigma, dtype=dtype)
    a = sp.csr_matrix((w.ravel(), (np.repeat(np.arange(n), k), ids.ravel())), shape=(n, n))
    a.eliminate_zeros()
    w_sym = a.minimum(a.T) if mutual else a.maximum(a.T)
    return w_sym.tocsr().astype(dtype)


def normalize(W, dtype=np.float32):
    """Symmetric normalisation ``S = D^-1/2 W D^-1/2`` (``D`` = degrees; isolated nodes stay zero).

    ``S`` is the symmetric counterpart of the row-stochastic transition matrix ``D^-1 W`` (Survey
    §2.4.2.1, item 2): same eigenvalues, in [-1, 1], so ``I − αS`` is positive definite for α < 1.
    """
    import scipy.sparse as sp

    deg = np.asarray(W.sum(axis=1)).ravel()
    inv = np.zeros_like(deg)
    inv[deg > 0] = 1 / np.sqrt(deg[deg > 0])
    d = sp.diags(inv.astype(dtype))
    return (d @ W @ d).tocsr().astype(dtype)


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
