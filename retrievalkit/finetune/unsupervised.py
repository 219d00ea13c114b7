"""Unsupervised fine-tuning: mining on manifolds and k-means pseudo-labels (Survey §2.4.2, Figure 2.11).

Taught in notebooks/10_unsupervised_finetuning. No label is read here.

Mining on manifolds (Iscen et al., CVPR 2018) in four steps, all on off-the-shelf descriptors of
the learning split:

1. :func:`knn_affinity` — a kNN graph: ``A_ij = max(0, x_i·x_j)^γ`` for mutual-or-one-way kNN
   edges, symmetrised; ``S = D^{-1/2} A D^{-1/2}``.
2. :func:`diffuse` — a random walk with restart (personalised PageRank): iterate
   ``f ← α S f + (1 − α) y`` from ``y`` = the anchor's indicator; ``f`` converges to the manifold
   similarity of every node to the anchor (:func:`retrievalkit.rerank.diffusion.iterate`).
3. :func:`manifold_mining` — per anchor, rank the pool twice: by Euclidean (inner-product)
   similarity and by the diffused manifold similarity. Positives: among the ``k_pos`` manifold
   nearest neighbours, those that are NOT among the ``k_pos`` Euclidean nearest (close on the
   manifold, far in Euclidean space). Hard negatives: among the ``k_neg`` Euclidean nearest, those
   NOT among the ``k_manifold`` manifold nearest (close in Euclidean space, far on the manifold).
4. :func:`manifold_tuples` — a tuple sampler for :func:`retrievalkit.finetune.trainer.finetune`.

:func:`kmeans_labels` is the clustering baseline: k-means cluster ids used as pseudo-labels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["knn_affinity", "diffuse", "manifold_mining", "ManifoldMining", "manifold_tuples", "kmeans_labels",
           "ranks_of"]


def knn_affinity(x: np.ndarray, k: int = 10, gamma: float = 3.0):
    """Symmetrically normalised kNN affinity ``S = D^{-1/2} A D^{-1/2}`` (scipy CSR, N×N, float64).

    ``A_ij = max(0, x_i·x_j)^γ`` when ``j`` is among the ``k`` nearest neighbours of ``i`` or vice
    versa (self excluded), else 0: :func:`retrievalkit.rerank.knn_graph` with ``mutual=False``, in
    float64 so that notebooks/10_unsupervised_finetuning can check the walk against its closed form
    to 1e-12. Sparse, so diffusion costs O(N·k) per step. Survey §2.4.2.1, Figure 2.11.
    """
    from ..rerank.graph import knn_graph, normalize

    return normalize(knn_graph(x, k, gamma=gamma, mutual=False, dtype=np.float64), dtype=np.float64)


def diffuse(s: np.ndarray, anchors, alpha: float = 0.9, iterations: int = 30) -> np.ndarray:
    """Manifold similarities ``N×len(anchors)``: ``iterations`` steps of ``f ← α S f + (1 − α) y``.

    ``y`` holds one indicator column per anchor. With ``α < 1`` and ``S``'s spectral radius ≤ 1 this
    converges to ``(1 − α)(I − αS)^{-1} y``; the gap shrinks like ``α^t``, so 30 steps at α = 0.9 stop a
    few percent short of the limit — close enough to order the neighbours, which is all mining needs
    (:mod:`retrievalkit.rerank` solves the limit exactly by conjugate gradient). Survey §2.4.2.1; taught
    in notebooks/10_unsupervised_finetuning.
    """
    from ..rerank.diffusion import iterate

    if not 0 < alpha < 1:
        raise ValueError(f"diffusion needs 0 < alpha < 1 (alpha={alpha}): at 1 the walk never returns to its "
                         "anchor and does not converge")
    anchors = np.atleast_1d(np.asarray(anchors))
    y = np.zeros((s.shape[0], len(anchors)))
    y[anchors, np.arange(len(anchors))] = 1.0
    return iterate(s, y, alpha, tol=0.0, max_iter=iterations)  # tol 0: exactly ``iterations`` steps


def ranks_of(scores: np.ndarray, anchor: int, unreached: float | None = None) -> np.ndarray:
    """Rank (0 = most similar) of every item in one anchor's list ``scores``; the anchor itself excluded (rank −1).

    ``unreached``: scores at or below it (e.g. 0 after diffusion: no path to the anchor) get rank N.
    """
    scores = np.array(scores, dtype=np.float64)
    scores[anchor] = np.inf
    order = np.argsort(-scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.int64)
    ranks[order] = np.arange(len(scores)) - 1
    ranks[anchor] = -1
    if unreached is not None:  # items the diffusion never reached are as far as can be
        ranks[(scores <= unreached) & (ranks >= 0)] = len(scores)
    return ranks


@dataclass
class ManifoldMining:
    """Per-anchor positives and hard negatives (lists of row indices) with the ranks behind them."""

    anchors: np.ndarray
    positives: list
    negatives: list
    euclidean_rank: list  # per anchor: N ranks by inner product
    manifold_rank: list  # per anchor: N ranks by diffusion


def manifold_mining(x: np.ndarray, anchors, *, k: int = 10, gamma: float = 3.0, alpha: float = 0.9,
                    iterations: int = 30, k_pos: int = 50, k_neg: int = 100, k_manifold: int = 100) -> ManifoldMining:
    """Mine positives and hard negatives for ``anchors`` from the manifold of descriptors ``x`` (no labels).

    See the module docstring (Iscen et al. 2018; Survey §2.4.2.1, Figure 2.11). Positives are
    returned in manifold order, negatives in Euclidean order (hardest first). Taught in
    notebooks/10_unsupervised_finetuning.
    """
    anchors = np.atleast_1d(np.asarray(anchors))
    f = diffuse(knn_affinity(x, k, gamma), anchors, alpha, iterations)
    eu = np.asarray(x, np.float64) @ np.asarray(x, np.float64)[anchors].T
    pos, neg, er, mr = [], [], [], []
    for j, a in enumerate(anchors):
        re_, rm = ranks_of(eu[:, j], a), ranks_of(f[:, j], a, unreached=0.0)
        m_near = np.flatnonzero((rm >= 0) & (rm < k_pos))
        pos.append(m_near[re_[m_near] >= k_pos][np.argsort(rm[m_near[re_[m_near] >= k_pos]], kind="stable")])
        e_near = np.flatnonzero((re_ >= 0) & (re_ < k_neg))
        cand = e_near[rm[e_near] >= k_manifold]
        neg.append(cand[np.argsort(re_[cand], kind="stable")])
        er.append(re_)
        mr.append(rm)
    return ManifoldMining(anchors, pos, neg, er, mr)


def manifold_tuples(mining: ManifoldMining, n_queries: int = 200, negatives: int = 4):
    """A ``tuples(epoch, rng)`` callable for :func:`~retrievalkit.finetune.trainer.finetune`.

    Each epoch draws up to ``n_queries`` anchors that have at least one positive and one
    hard negative; the positive is a random one of the anchor's mined positives, the negatives its
    ``negatives`` hardest (Euclidean order; repeated when fewer were mined).
    Taught in notebooks/10_unsupervised_finetuning.
    """
    usable = [j for j in range(len(mining.anchors)) if len(mining.positives[j]) and len(mining.negatives[j])]
    if not usable:
        raise ValueError("manifold mining found no anchor with a positive and enough hard negatives: "
                         "raise k_pos / k_neg, lower k_manifold, or use more anchors")

    def tuples(epoch: int, rng: np.random.Generator):
        pick = rng.choice(usable, size=min(n_queries, len(usable)), replace=False)
        q = mining.anchors[pick]
        p = np.array([mining.positives[j][rng.integers(len(mining.positives[j]))] for j in pick])
        n = np.stack([np.resize(mining.negatives[j][:negatives], negatives) for j in pick])  # cycled when short
        return q, p, n

    return tuples


def kmeans_labels(x: np.ndarray, k: int, seed: int = 0, iterations: int = 25, redo: int = 3) -> np.ndarray:
    """Pseudo-labels: k-means cluster ids of ``x`` (faiss, spherical, best of ``redo`` starts) — the clustering baseline.

    Survey §2.4.2 (clustering-based sampling, Figure 2.10); taught in notebooks/10_unsupervised_finetuning.
    """
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    km = faiss.Kmeans(x.shape[1], k, niter=iterations, nredo=redo, seed=seed, spherical=True, verbose=False,
                      min_points_per_centroid=1)  # decides only faiss's "too few points" stderr warning
    km.train(x)
    _, ids = km.index.search(x, 1)
    return ids[:, 0].astype(np.int64)
