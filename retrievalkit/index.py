"""Nearest-neighbour search over descriptor rows. Survey §2.1.2 (efficiency) and §2.5.3; taught in notebooks/00 and 08.

Descriptors are rows (N×D), L2-normalised, so similarity is the inner product. Search returns
``(scores, ids)`` best first, like faiss: ``(D, I) = index.search(xq, k)``.
"""
from __future__ import annotations

import numpy as np
import torch

DEFAULT_QUERY_CHUNK = 1024
DEFAULT_DB_CHUNK = 65536


def _as_tensor(x, device) -> torch.Tensor:
    t = torch.as_tensor(np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x)
    return t.to(device=device, dtype=torch.float32)


def exact_search(
    queries,
    database,
    k: int | None = None,
    *,
    query_chunk: int = DEFAULT_QUERY_CHUNK,
    db_chunk: int = DEFAULT_DB_CHUNK,
    device="cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product search: ``(scores, ids)``, each queries × k, best first.

    ``k=None`` ranks the whole database. Memory stays bounded by ``query_chunk × db_chunk``
    scores: each database chunk's top-k is merged into a running top-k, so a million-vector
    database never needs a full queries × N matrix. Ties keep the lower database id first.
    """
    q = _as_tensor(queries, device)
    db = _as_tensor(database, device)
    if q.ndim != 2 or db.ndim != 2 or q.shape[1] != db.shape[1]:
        raise ValueError(f"queries {tuple(q.shape)} and database {tuple(db.shape)} must be rows of the same width")
    n = db.shape[0]
    k = n if k is None else min(int(k), n)
    if k <= 0:
        raise ValueError("k must be positive and the database non-empty")
    all_scores = np.empty((q.shape[0], k), dtype=np.float32)
    all_ids = np.empty((q.shape[0], k), dtype=np.int64)
    for qs in range(0, q.shape[0], query_chunk):
        qc = q[qs : qs + query_chunk]
        best_s = torch.full((qc.shape[0], 0), float("-inf"), device=device)
        best_i = torch.zeros((qc.shape[0], 0), dtype=torch.int64, device=device)
        for ds in range(0, n, db_chunk):
            s = qc @ db[ds : ds + db_chunk].T
            kk = min(k, s.shape[1])
            top_s, top_i = _stable_topk(s, kk)
            best_s, best_i = _merge(best_s, best_i, top_s, top_i + ds, k)
        all_scores[qs : qs + qc.shape[0]] = best_s.cpu().numpy()
        all_ids[qs : qs + qc.shape[0]] = best_i.cpu().numpy()
    return all_scores, all_ids


def _stable_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    # A stable descending sort makes the tie order defined (lower id first); topk does not promise that.
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return torch.gather(scores, 1, order), order


def _merge(s1, i1, s2, i2, k):
    s = torch.cat([s1, s2], dim=1)
    i = torch.cat([i1, i2], dim=1)
    # Sort by id first, then stably by score, so ties across chunks also keep the lower id first.
    by_id = torch.argsort(i, dim=1, stable=True)
    s, i = torch.gather(s, 1, by_id), torch.gather(i, 1, by_id)
    top_s, order = _stable_topk(s, min(k, s.shape[1]))
    return top_s, torch.gather(i, 1, order)


def rank(queries, database, k: int | None = None, **kwargs) -> np.ndarray:
    """Only the ranked ids of :func:`exact_search` (what the metrics consume)."""
    return exact_search(queries, database, k, **kwargs)[1]
