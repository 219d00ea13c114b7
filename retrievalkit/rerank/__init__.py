"""Re-ranking after a first search: query expansion, database-side augmentation, diffusion.

Survey §2.4.2.1 (diffusion on a kNN graph), §2.5.3 and Table 2.1; taught in
notebooks/11_diffusion_and_reranking.

    from retrievalkit import rerank
    D, I = rerank.alpha_qe(xq, xb, k=5, alpha=3)            # αQE (alpha=0: average QE)
    xb2 = rerank.dba(xb, k=5)                               # DBA, offline, database only
    dif = rerank.Diffusion(k=50, alpha=0.99).fit(xb)        # kNN graph; CG per query (online)
    D, I = dif.search(xq)
    fast = rerank.OfflineDiffusion(k=50).fit(xb)          # inverse precomputed; ms per query

Modules: :mod:`.qe` (AQE, αQE, DBA), :mod:`.graph` (affinities, kNN graph, normalisation),
:mod:`.diffusion` (iterative walk, CG closed form, offline block-inverse/spectral variant, joint mode).
Arrays are NumPy, graphs SciPy sparse. Every neighbour search is :func:`retrievalkit.index.knn`
(torch inner products, ties → lower id), re-exported here as ``knn`` and ``check_k``.
"""
from __future__ import annotations

from .diffusion import Diffusion, OfflineDiffusion, cg, check_alpha, iterate, joint_search, rank_scores
from .graph import affinity, check_k, knn, knn_graph, normalize, query_seeds
from .qe import alpha_qe, average_qe, dba, expand

__all__ = ["Diffusion", "OfflineDiffusion", "cg", "check_alpha", "iterate", "joint_search", "rank_scores",
           "affinity", "check_k", "knn", "knn_graph", "normalize", "query_seeds", "alpha_qe", "average_qe", "dba",
           "expand"]
