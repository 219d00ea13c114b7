"""Sampling for fine-tuning: tuples, hard-negative mining, m-per-class batches (Survey §2.4.1.2, Figure 2.10).

Taught in notebooks/09_supervised_finetuning.

* :func:`make_tuples` — the queries and positives of one epoch (a random other view of the same object).
* :func:`hardest_negatives` — Radenović et al.'s mining: for each query, the non-matching pool
  items most similar under the CURRENT model, at most one per class, re-run every epoch.
* :func:`tuple_indices` — the index tuples (pairs or triplets) the losses of
  :mod:`~retrievalkit.finetune.losses` take, for a batch of such tuples.
* :class:`MPerClassSampler` — batches of ``m`` images from each of ``batch_size / m`` classes, for
  the classification and listwise losses (every row has positives in its batch).

Labels here are whatever groups matching images: object ids (supervised), k-means cluster ids
(pseudo-labels), or none at all (:mod:`retrievalkit.finetune.unsupervised` mines its own tuples).
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["make_tuples", "hardest_negatives", "fill_negatives", "tuple_indices", "MPerClassSampler"]


def make_tuples(labels: np.ndarray, n_queries: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(queries, positives)``: ``n_queries`` distinct random rows and, for each, a random other row of its class.

    Rows whose class has a single member cannot be queries. Survey §2.4.1.2; taught in
    notebooks/09_supervised_finetuning.
    """
    labels = np.asarray(labels)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    eligible = np.flatnonzero(counts[inverse] > 1)
    queries = np.sort(rng.choice(eligible, size=min(n_queries, len(eligible)), replace=False))
    positives = np.empty_like(queries)
    for i, q in enumerate(queries):
        same = np.flatnonzero(labels == labels[q])
        same = same[same != q]
        positives[i] = same[rng.integers(len(same))]
    return queries, positives


def hardest_negatives(query_desc, pool_desc, query_labels, pool_labels, k: int = 5,
                      one_per_class: bool = True) -> np.ndarray:
    """``Q×k`` pool indices: for each query the ``k`` most similar pool items of ANOTHER class.

    Similarity is the inner product of (L2-normalised) descriptors, so the caller re-computes
    ``query_desc`` / ``pool_desc`` with the current model each epoch, as Radenović et al. do. With
    ``one_per_class`` only the most similar item of each class is kept, so the ``k`` negatives
    come from ``k`` different classes (diverse hard negatives). Fewer than ``k`` candidates → −1
    padding. Survey §2.4.1.2 (sampling strategies); taught in notebooks/09_supervised_finetuning.
    """
    q = torch.as_tensor(np.asarray(query_desc, dtype=np.float32))
    p = torch.as_tensor(np.asarray(pool_desc, dtype=np.float32))
    ql, pl = np.asarray(query_labels), np.asarray(pool_labels)
    sim = (q @ p.T).numpy()
    out = np.full((len(q), k), -1, dtype=np.int64)
    for i in range(len(q)):
        order = np.argsort(-sim[i], kind="stable")
        order = order[pl[order] != ql[i]]
        if one_per_class:
            _, first = np.unique(pl[order], return_index=True)
            order = order[np.sort(first)]
        out[i, : min(k, len(order))] = order[:k]
    return out


def fill_negatives(neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Complete ``Q×k`` negative rows padded with −1 (fewer than ``k`` were mined).

    Returns ``(keep, filled)``: ``keep`` marks the rows with at least one negative; ``filled`` holds
    those rows with their negatives cycled to length ``k`` (hardest first, repeated when short, as
    :func:`~retrievalkit.finetune.unsupervised.manifold_tuples` does). A −1 must never reach the
    indexing of the training rows: it would silently pick the last row, possibly a positive.
    """
    neg = np.asarray(neg, dtype=np.int64)
    keep = (neg >= 0).any(axis=1)
    k = neg.shape[1]
    filled = [np.resize(r[r >= 0], k) for r in neg[keep]]
    return keep, (np.stack(filled) if filled else np.zeros((0, k), dtype=np.int64))


def tuple_indices(n_tuples: int, size: int, needs: str, device=None) -> tuple[torch.Tensor, ...]:
    """Index tuples into the rows of ``n_tuples`` flattened tuples ``(query, positive, negative_1 … negative_k)``.

    ``needs="pairs"``: ``(a, b, same)`` — per tuple (query, positive) then (query, negative_j), in
    that order; ``"triplets"``: ``(a, p, n)`` — (query, positive, negative_j) per negative.
    """
    first = torch.arange(n_tuples, device=device)[:, None] * size
    if needs == "pairs":
        j = torch.arange(1, size, device=device)
        return (first.expand(-1, size - 1).reshape(-1), (first + j).reshape(-1), (j == 1).repeat(n_tuples))
    if needs == "triplets":
        j = torch.arange(2, size, device=device)
        return (first.expand(-1, size - 2).reshape(-1), (first + 1).expand(-1, size - 2).reshape(-1),
                (first + j).reshape(-1))
    raise ValueError(f"tuples give pairs or triplets, not {needs!r}")


class MPerClassSampler(torch.utils.data.Sampler):
    """Batch sampler: each batch holds ``m`` random rows of each of ``batch_size // m`` random classes.

    ``len(self)`` batches per epoch (default: about one pass over the data). Deterministic given
    ``seed`` and the epoch set by :meth:`set_epoch`. Survey §2.4.1.2; taught in
    notebooks/09_supervised_finetuning.
    """

    def __init__(self, labels, m: int = 4, batch_size: int = 64, batches: int | None = None, seed: int = 0):
        self.labels = np.asarray(labels)
        self.classes = np.unique(self.labels)
        if int(m) != m or m < 1:
            raise ValueError(f"m (images per class in a batch) must be a positive integer, got {m!r}")
        if batch_size % m or batch_size // m > len(self.classes):
            raise ValueError(f"batch_size={batch_size} must be a multiple of m={m} with at most "
                             f"{len(self.classes)} classes per batch")
        self.m, self.batch_size, self.seed, self.epoch = m, batch_size, seed, 0
        self.batches = batches or max(1, len(self.labels) // batch_size)
        self.members = {c: np.flatnonzero(self.labels == c) for c in self.classes}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        for _ in range(self.batches):
            classes = rng.choice(self.classes, size=self.batch_size // self.m, replace=False)
            batch = [rng.choice(self.members[c], size=self.m, replace=len(self.members[c]) < self.m) for c in classes]
            yield np.concatenate(batch).tolist()

    def __repr__(self):
        return f"MPerClassSampler(m={self.m}, batch_size={self.batch_size}, batches={self.batches}, seed={self.seed})"
