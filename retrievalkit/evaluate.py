"""Retrieval metrics, vectorised over queries. Survey §2.5.2 (Eqs. 2.20–2.21); taught in notebooks/00_setup_and_data.

Two AP conventions live side by side because the literature uses both:

* ``trapezoid`` — the Oxford / revisitop rule: the precision-recall curve is integrated with the
  trapezoid rule, so each relevant item at 0-based rank ``r`` (the ``j``-th relevant, 0-based)
  contributes the mean of the precisions just before and just after it, ``(j/r + (j+1)/(r+1)) / 2``
  (``j/r`` read as 1 when ``r = 0``). Used for Oxford5k/Paris6k, ROxford/RParis, Holidays, COIL-100.
* ``finite`` — the finite sum of Eq. 2.20, ``Σ P(k)·rel(k) / R``, used by the hashing papers.

Rankings are ``ids`` arrays (queries × ranked database rows, best first), as returned by
:func:`retrievalkit.index.exact_search`. Junk rows are removed from a ranking before scoring.
Relevant items that do not appear in a (truncated) ranking count as never retrieved.
A query with no positives under a protocol (two ROxford queries have no Easy positive) has no
score: its AP, precision and recall are NaN and every mean skips it, as revisitop's
``compute_map`` does (it divides by ``nq - nempty``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

AP_MODES = ("trapezoid", "finite")


def _flat_membership(ids: np.ndarray, lists: Sequence[np.ndarray], n_db: int) -> np.ndarray:
    """Boolean ``Q×K`` matrix: ``ids[q, k]`` is in ``lists[q]`` — one ``np.isin`` for all queries."""
    q_index = np.repeat(np.arange(len(lists), dtype=np.int64), [len(x) for x in lists])
    members = q_index * n_db + (np.concatenate(lists).astype(np.int64) if len(q_index) else np.zeros(0, np.int64))
    keys = np.arange(ids.shape[0], dtype=np.int64)[:, None] * n_db + ids
    return np.isin(keys, members)


def relevance(ids, gnd: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Relevance of each ranked item after junk removal.

    Returns ``(rel, keep)``: ``rel[q, k]`` is True when the k-th ranked item is a positive and not
    junk; ``keep[q, k]`` is False for junk items (they are skipped, not counted as errors).
    """
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 2 or ids.shape[0] != len(gnd):
        raise ValueError(f"ids must be queries × ranks with {len(gnd)} rows, got shape {ids.shape}")
    n_db = 1 + max([int(ids.max(initial=0))] + [int(np.max(x, initial=0)) for pair in gnd for x in pair])
    pos = _flat_membership(ids, [np.asarray(p) for p, _ in gnd], n_db)
    junk = _flat_membership(ids, [np.asarray(j) for _, j in gnd], n_db)
    return pos & ~junk, ~junk


def _n_positives(gnd) -> np.ndarray:
    """Positives of each query that are not also junk (the ones a ranking can score)."""
    return np.array([len(np.setdiff1d(p, j)) for p, j in gnd], dtype=np.float64)


def _ranks_after_junk(rel: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0-based rank of every item in the junk-free ranking and 0-based count of positives before it."""
    # Junk items before the first kept one would get rank -1; clamp (they are masked out anyway).
    rank = np.maximum(np.cumsum(keep, axis=1) - 1, 0)
    hits_before = np.cumsum(rel, axis=1) - rel
    return rank, hits_before


def average_precision(ids, gnd, mode: str = "trapezoid") -> np.ndarray:
    """AP of every query (NaN for a query with no positives, which :func:`mean_ap` skips, as revisitop does)."""
    if mode not in AP_MODES:
        raise ValueError(f"unknown AP mode {mode!r}; choose one of {AP_MODES}")
    rel, keep = relevance(ids, gnd)
    rank, j = _ranks_after_junk(rel, keep)
    n_pos = _n_positives(gnd)
    if mode == "trapezoid":
        with np.errstate(divide="ignore", invalid="ignore"):
            before = np.where(rank > 0, j / np.maximum(rank, 1), 1.0)
        contrib = (before + (j + 1) / (rank + 1)) / 2
    else:
        contrib = (j + 1) / (rank + 1)
    total = np.where(rel, contrib, 0.0).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n_pos > 0, total / np.maximum(n_pos, 1), np.nan)


def ap_from_ranks(positive_ranks: Sequence[int], n_positives: int | None = None, mode: str = "trapezoid") -> float:
    """AP of one query from the 0-based ranks of its relevant items (junk already removed).

    The worked example of notebooks/00: ranks ``[0, 2, 5]`` of 3 positives give 0.6778 (trapezoid)
    and 0.7222 (finite sum).
    """
    ranks = np.sort(np.asarray(positive_ranks, dtype=np.int64))
    n_positives = len(ranks) if n_positives is None else n_positives
    length = int(ranks.max(initial=-1)) + 1
    ids = np.arange(max(length, 1))[None, :]
    return float(average_precision(ids, [(ranks, np.zeros(0, np.int64))], mode)[0] * len(ranks) / n_positives)


def label_ground_truth(labels, queries=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Ground truth when rows query their own set: positives = rows with the query's label, the query
    itself junk (so it counts neither as a hit nor as a miss). ``queries``: row indices (default all)."""
    labels = np.asarray(labels).ravel()
    queries = range(len(labels)) if queries is None else queries
    return [(np.flatnonzero(labels == labels[q]), np.array([q])) for q in queries]


def mean_ap(ids, gnd, mode: str = "trapezoid") -> float:
    """mAP (Eq. 2.21) over the queries that have positives (NaN when none has)."""
    return mean_scored(average_precision(ids, gnd, mode))


def leave_one_out_map(x=None, labels=None, *, scores=None, mode: str = "trapezoid") -> float:
    """Leave-one-out mAP, the validation score of every trained head: each row queries all the others.

    Positives share the query's label, the query itself is junk (:func:`label_ground_truth`).
    Rows are ranked by :func:`retrievalkit.index.knn` on ``x`` (inner products), or by a given
    Q×Q ``scores`` matrix (higher = closer, e.g. ``B @ B.T`` of ±1 hash codes); equal scores keep
    the lower row first either way. ``mode`` as in :func:`average_precision` ("finite" for the
    hashing literature's mAP). Survey §2.5.2 (Eq. 2.21).
    """
    if scores is None:
        from .index import knn

        ids = knn(x, x)[1]
    else:
        ids = np.argsort(-np.asarray(scores, dtype=np.float64), axis=1, kind="stable")
    return mean_ap(ids, label_ground_truth(labels), mode)


def _unscored_as_nan(values: np.ndarray, gnd) -> np.ndarray:
    return np.where(_n_positives(gnd) > 0, values, np.nan)


def mean_scored(values) -> float:
    """Mean over the queries that have a score (NaN entries skipped); NaN when none has one."""
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if np.any(~np.isnan(values)) else float("nan")


def precision_at_k(ids, gnd, ks=(1, 5, 10)) -> dict[int, np.ndarray]:
    """Standard precision@k per query: relevant items among the first k non-junk results, over k
    (NaN for a query without positives)."""
    rel, keep = relevance(ids, gnd)
    rank, _ = _ranks_after_junk(rel, keep)
    return {k: _unscored_as_nan((rel & (rank < k)).sum(axis=1) / k, gnd) for k in ks}


def revisited_precision_at_k(ids, gnd, ks=(1, 5, 10)) -> dict[int, np.ndarray]:
    """revisitop's mP@k: precision at ``min(k, rank of the last retrieved positive)``.

    A query with fewer than k positives can still reach 1.0 when all of them come first — the
    rule of Radenović et al. 2018's evaluation code, kept so our ROxford/RParis numbers compare.
    A query without positives is NaN (revisitop leaves it out of the mean); one whose positives
    are all missing from a truncated ranking scores 0.
    """
    rel, keep = relevance(ids, gnd)
    rank, _ = _ranks_after_junk(rel, keep)
    out = {}
    last = np.where(rel, rank + 1, 0).max(axis=1)
    for k in ks:
        kq = np.minimum(np.maximum(last, 1), k)
        hits = (rel & (rank + 1 <= kq[:, None])).sum(axis=1)
        out[k] = _unscored_as_nan(np.where(last > 0, hits / kq, 0.0), gnd)
    return out


def recall_at_k(ids, gnd, ks=(1, 5, 10)) -> dict[int, np.ndarray]:
    """Fraction of each query's positives found among its first k non-junk results (NaN without positives)."""
    rel, keep = relevance(ids, gnd)
    rank, _ = _ranks_after_junk(rel, keep)
    n_pos = _n_positives(gnd)
    return {k: _unscored_as_nan((rel & (rank < k)).sum(axis=1) / np.maximum(n_pos, 1), gnd) for k in ks}


def map_at_k(ids, gnd, k: int = 1000) -> float:
    """mAP@k of the hashing literature: finite-sum AP over the top k, normalised by the hits in the top k."""
    rel, keep = relevance(np.asarray(ids)[:, :k], gnd)
    rank, j = _ranks_after_junk(rel, keep)
    in_top = rel & (rank < k)
    hits = in_top.sum(axis=1)
    total = np.where(in_top, (j + 1) / (rank + 1), 0.0).sum(axis=1)
    return float(np.mean(np.where(hits > 0, total / np.maximum(hits, 1), 0.0)))


def ns_score(ids, gnd) -> float:
    """UKBench N-S score (0–4): mean number of the group's 4 images among the first 4 results.

    The query itself is one of its own 4 positives in the UKBench protocol.
    """
    rel, keep = relevance(np.asarray(ids)[:, :4], gnd)
    return float(rel.sum(axis=1).mean())


def pr_curve(ids, gnd, recall_levels=np.linspace(0, 1, 11)) -> tuple[np.ndarray, np.ndarray]:
    """Mean interpolated precision at each recall level (max precision at recall ≥ level)."""
    rel, keep = relevance(ids, gnd)
    rank, j = _ranks_after_junk(rel, keep)
    n_pos = np.maximum(_n_positives(gnd), 1)
    precision = np.where(rel, (j + 1) / (rank + 1), 0.0)
    recall = np.where(rel, (j + 1) / n_pos[:, None], 0.0)
    levels = np.asarray(recall_levels, dtype=np.float64)
    curve = np.zeros((rel.shape[0], len(levels)))
    for i, level in enumerate(levels):
        curve[:, i] = np.where(recall >= level - 1e-12, precision, 0.0).max(axis=1)
    return levels, curve.mean(axis=0)


def evaluate(ids, dataset, protocols=None, ks=(1, 5, 10)) -> list[dict]:
    """Tidy rows (one per protocol): mAP (trapezoid and finite-sum) and precision at ``ks``.

    Datasets scored by revisitop's rules (``dataset.revisited``: ROxford, RParis and their partial
    copies) get revisitop's mP@k, the others standard mP@k. ``queries`` counts the queries that
    have positives under the protocol — the ones the means run over (68 of 70 for ROxford Easy).
    UKBench rows also carry the N-S score.
    """
    if dataset.n_queries == 0:
        raise ValueError(
            f"{dataset.name} ({dataset.root}) has no queries, so there is nothing to evaluate: {dataset.description}"
        )
    protocols = protocols or dataset.protocols
    rows = []
    for protocol in protocols:
        gnd = dataset.ground_truth(protocol)
        precision = (revisited_precision_at_k if dataset.revisited else precision_at_k)(ids, gnd, ks)
        row = {
            "dataset": dataset.name,
            "protocol": protocol,
            "queries": int(np.count_nonzero(_n_positives(gnd))),
            "mAP": mean_ap(ids, gnd, "trapezoid"),
            "mAP_finite": mean_ap(ids, gnd, "finite"),
        }
        row.update({f"mP@{k}": mean_scored(v) for k, v in precision.items()})
        if dataset.name == "ukbench":
            row["N-S"] = ns_score(ids, gnd)
        rows.append(row)
    return rows
