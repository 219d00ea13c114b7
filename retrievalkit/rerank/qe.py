"""Query expansion (AQE, αQE) and database-side augmentation (DBA).

Survey §2.5.3 and Table 2.1 (re-ranking on top of a global descriptor). The idea: the top of a
first ranking is usually right, so average the query with it and search again (average query
expansion, Chum et al. 2007); weight each neighbour by its similarity to the power α (αQE,
Radenović et al. 2018; α = 0 gives back AQE); or apply the same smoothing once, offline, to every
database vector with its own database neighbours (DBA, Arandjelović & Zisserman 2012) — no labels,
database rows only. Taught in notebooks/11_diffusion_and_reranking.

All functions take descriptor rows (N×D, L2-normalised) and return ``(scores, ids)`` like
:func:`retrievalkit.index.knn`, best first (ties → lower id).
"""
from __future__ import annotations

import numpy as np

from ..index import check_k, exact_search, knn
from ..rows import as_rows, l2n


def _weights(sims: np.ndarray, alpha: float) -> np.ndarray:
    if alpha < 0:
        raise ValueError(f"alpha (the αQE/DBA weight exponent) must be ≥ 0, got {alpha}")
    return np.ones_like(sims) if alpha == 0 else np.maximum(sims, 0) ** np.float32(alpha)


def expand(queries, database, k: int, alpha: float = 0.0, *, exclude=None) -> np.ndarray:
    """Expanded queries: ``l2n(q + Σ_i w_i x_i)`` over the query's top-``k`` database rows.

    ``w_i = max(s_i, 0) ** alpha`` with ``s_i`` the neighbour's similarity to the query (the query
    itself has weight 1 = its similarity to itself); ``alpha = 0`` is the plain mean (AQE).
    ``exclude``: database rows never used as neighbours (see :func:`retrievalkit.index.knn`).
    """
    q = as_rows(queries, "queries")
    db = as_rows(database, "database")
    sims, ids = knn(q, db, k, exclude=exclude)
    w = _weights(sims, alpha)
    out = np.empty_like(q)
    step = max(1, (1 << 26) // max(1, k * db.shape[1]))  # bound the gathered k×D neighbours to 256 MB
    for s in range(0, len(q), step):
        out[s : s + step] = q[s : s + step] + np.einsum("qk,qkd->qd", w[s : s + step], db[ids[s : s + step]])
    return l2n(out)


def average_qe(queries, database, k: int = 5, *, exclude=None, rank_k: int | None = None):
    """Average query expansion (AQE): re-query with the mean of the query and its top ``k``.

    Returns ``(scores, ids)`` of the second search (``rank_k=None``: the whole database).
    Survey §2.5.3; taught in notebooks/11_diffusion_and_reranking.
    """
    return alpha_qe(queries, database, k, alpha=0.0, exclude=exclude, rank_k=rank_k)


def alpha_qe(queries, database, k: int = 5, alpha: float = 3.0, *, exclude=None, rank_k: int | None = None):
    """α-weighted query expansion (αQE): neighbours weighted by ``similarity ** alpha``.

    ``alpha=0`` is exactly :func:`average_qe`. Survey §2.5.3; taught in notebooks/11.
    """
    return exact_search(expand(queries, database, k, alpha, exclude=exclude), database, rank_k)


def dba(database, k: int = 5, alpha: float = 3.0) -> np.ndarray:
    """Database-side augmentation: each row becomes ``l2n(x + Σ_i w_i x_i)`` over its own top-``k``.

    Neighbours are the ``k`` most similar *other* database rows (``w_i = max(s_i, 0) ** alpha``,
    the row itself weight 1), computed on the database alone — no labels, no queries. Search the
    returned rows instead of the originals (queries unchanged, or expanded with αQE on them).
    Survey §2.5.3; taught in notebooks/11_diffusion_and_reranking.
    """
    db = as_rows(database, "database")
    check_k(k, len(db) - 1, "DBA k")
    return expand(db, db, k, alpha, exclude=np.arange(len(db)))


__all__ = ["expand", "average_qe", "alpha_qe", "dba"]
