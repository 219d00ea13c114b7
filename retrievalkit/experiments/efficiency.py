"""The Table 2.1 study: accuracy, time per query and memory of index families, and their scaling.

Survey §2.1.2 challenge 3 (accuracy vs efficiency) and Table 2.1 (accuracy vs time per query);
taught in notebooks/08_indexing_and_efficiency. Float indexes come from
:func:`retrievalkit.index.build_index` (faiss factory strings), binary codes from
:mod:`retrievalkit.hashing`; both are trained on the learning rows only and timed by
:func:`retrievalkit.index.time_queries`. The data are the hashing benchmarks of
:mod:`retrievalkit.experiments.hashing` (COIL-100 by default).
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from .. import evaluate, hashing
from .. import index as rk_index
from ..whitening import PCA
from .hashing import ITQ_ITERATIONS, HashData, _clean_ids, _rank_depth, fit_encoder, make_encoder, score_ranking

# Accuracy–time–memory table (Table 2.1 analogue) on the COIL-100 test database.
TABLE_KINDS = (
    ("exact", {}),
    ("flat", {}),
    ("ivf_flat", {"nprobe": 1}),
    ("ivf_flat", {"nprobe": 8}),
    ("ivf_pq", {"nprobe": 8}),
    ("hnsw", {"efSearch": 64}),
    ("sq8", {}),
    ("pca_pq", {}),
)
TABLE_HAMMING = (("itq", 64), ("itq", 256), ("deep+both", 64))
TIME_K = 10  # timings and recall@10 at k = 10 (an interactive query)

# Scale run: real COIL test database + synthetic distractors, in a PCA space learned on objects 1–50.
SCALE_SIZES = (10_000, 100_000, 1_000_000)
SMALL_SCALE_SIZES = (5_000, 20_000)
SCALE_DIM = 128
SCALE_KINDS = (("flat", {}), ("ivf_flat", {"nprobe": 8}), ("ivf_pq", {"nprobe": 8}), ("hnsw", {"efSearch": 64}),
               ("sq8", {}))
SCALE_HNSW_MAX = 200_000  # building HNSW over 1M vectors takes minutes on 2 cores
SCALE_MAP_K = 100
SCALE_HAMMING_BITS = 64


def _split(params: dict) -> tuple[dict, dict]:
    """Build parameters and search-time ones (``nprobe``, ``efSearch``, ``k_factor``)."""
    runtime = {p: v for p, v in params.items() if p in rk_index.RUNTIME_PARAMS}
    return {p: v for p, v in params.items() if p not in runtime}, runtime


def _timed(search, queries, gt, k: int, **kw) -> dict:
    """ms per query (batch / single, :func:`~retrievalkit.index.time_queries`) and recall@k of ``search(rows)``."""
    timing, (_, ids) = rk_index.time_queries(search, len(queries), **kw)
    return {"ms_per_query_batch": timing["ms_per_query_batch"], "ms_per_query_single": timing["ms_per_query_single"],
            "recall@k": rk_index.knn_recall(ids, gt, k), "k": k}


def accuracy_time_memory(data: HashData, kinds=TABLE_KINDS, hamming=TABLE_HAMMING, *, small: bool = False,
                         k: int = TIME_K, repeats: int = 3, single_queries: int = 50, seed: int = 0) -> pd.DataFrame:
    """One row per index: the benchmark's mAP, recall@k vs exact, ms per query, bytes per vector.

    faiss kinds from :func:`retrievalkit.index.build_index` (trained on the learning rows only) and
    Hamming search over binary codes (encoders fitted on the learning rows; query encoding is
    counted in the Hamming rows' time). Timings: ``k`` results per query, batch of all queries
    (best of ``repeats``) and one query at a time (median of best-of-``repeats``); mAP: a second
    search ranked to the depth the metric needs (the full database for COIL-100).
    ``df.attrs["per_query"]``: each method's AP per query (full-ranking benchmarks only), for the
    verdicts' paired bootstrap.
    """
    rows, per_query = [], []
    xq, depth, timing = data.x_query, _rank_depth(data), {"repeats": repeats, "single_queries": single_queries}
    gt = rk_index.knn(xq, data.x_db, k)[1]

    def add(method: str, ids, **row) -> None:
        if data.map_k is None:
            ap = evaluate.average_precision(_clean_ids(np.asarray(ids), len(data.x_db)), data.gnd, "trapezoid")
            per_query.extend({"method": method, "query": i, "AP": float(v)} for i, v in enumerate(ap))
        rows.append({"dataset": data.name, "method": method, **row, **score_ranking(data, ids)})

    for kind, params in kinds:
        build, runtime = _split(params)
        start = time.perf_counter()
        idx = rk_index.build_index(kind, data.x_db, xtrain=data.x_learn, **build)
        build_s = time.perf_counter() - start
        timed = _timed(lambda r: rk_index.search(idx, xq[r], k, **runtime), xq, gt, k, **timing)
        add(kind + "".join(f" {p}={v}" for p, v in params.items()), rk_index.search(idx, xq, depth, **runtime)[1],
            family="float index", kind=kind, **params, build_s=build_s,
            bytes_per_vector=rk_index.index_bytes(idx) / len(data.x_db), **timed)
    for method, n_bits in hamming:
        encoder = make_encoder(method, n_bits, small=small, seed=seed)
        start = time.perf_counter()
        fit_encoder(encoder, data)
        idx = hashing.binary_index(encoder.encode(data.x_db), "flat")
        build_s = time.perf_counter() - start
        timed = _timed(lambda r: hashing.hamming_search(encoder.encode(xq[r]), idx, k), xq, gt, k, **timing)
        add(f"hamming {method} {n_bits}b", hashing.hamming_search(encoder.encode(xq), idx, depth)[1],
            family="binary codes", kind="hamming", bits=n_bits, build_s=build_s,
            bytes_per_vector=rk_index.index_bytes(idx) / len(data.x_db), **timed)
    df = pd.DataFrame(rows)
    df.attrs["per_query"] = per_query  # plain records (pandas compares attrs on concat)
    return df


def distractors(x_learn_reduced: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` synthetic unit vectors from a Gaussian fitted to the (reduced) LEARNING rows.

    Same mean and covariance as real descriptors of other objects, so they crowd the same region
    of the sphere — harder than uniform noise, which would sit far from every query.
    """
    mean = x_learn_reduced.mean(axis=0)
    cov = np.cov(x_learn_reduced, rowvar=False)
    rng = np.random.default_rng(seed)
    out = np.empty((n, x_learn_reduced.shape[1]), dtype=np.float32)
    chunk = 100_000
    for s in range(0, n, chunk):
        x = rng.multivariate_normal(mean, cov, size=min(chunk, n - s), method="cholesky")
        out[s : s + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def scale(data: HashData, sizes=None, kinds=SCALE_KINDS, *, small: bool = False, dim: int = SCALE_DIM,
          hamming_bits: int = SCALE_HAMMING_BITS, hnsw_max: int = SCALE_HNSW_MAX, k: int = TIME_K,
          single_queries: int = 20, seed: int = 0) -> pd.DataFrame:
    """Time per query and memory per vector as the database grows with synthetic distractors.

    The descriptors are first reduced to ``dim`` by a PCA fitted on the learning rows (1,280-d
    float32 at 1M rows would be 5 GB); the database is the real one (first rows) followed by
    distractors (:func:`distractors`) up to each size; indexes are trained on the learning rows.
    Columns: ``n``, method, ms per query (batch / single), bytes per vector, index MB, build time,
    recall@k vs exact search on the same database, and ``mAP@100`` (trapezoid AP over the top 100,
    distractors are never positives).
    """
    sizes = tuple(sizes or (SMALL_SCALE_SIZES if small else SCALE_SIZES))
    if small and kinds is SCALE_KINDS:  # IVF-PQ codebooks take seconds to train: only in the full run
        kinds = tuple(kp for kp in kinds if kp[0] != "ivf_pq")
    pca = PCA(dim=min(dim, len(data.x_learn) - 1, data.x_learn.shape[1])).fit(data.x_learn)
    learn, real, queries = (pca.transform(x).astype(np.float32) for x in (data.x_learn, data.x_db, data.x_query))
    extra = distractors(learn, max(0, max(sizes) - len(real)), seed)
    itq = hashing.ITQ(hamming_bits, ITQ_ITERATIONS, seed=seed).fit(learn)
    q_codes = itq.encode(queries)
    rows, timing = [], {"repeats": 1, "single_queries": single_queries}
    for n in sizes:
        xb = np.concatenate([real, extra[: max(0, n - len(real))]])[:n] if n > len(real) else real[:n]
        gt = rk_index.knn(queries, xb, k)[1]
        base = {"dataset": data.name, "n": len(xb), "n_distractors": max(0, len(xb) - len(real)), "dim": xb.shape[1]}

        def add(method: str, kind: str, idx, build_s: float, timed: dict, ids) -> None:
            size = rk_index.index_bytes(idx)
            rows.append({**base, "method": method, "kind": kind, "build_s": build_s, "bytes_per_vector": size / len(xb),
                         "index_MB": size / 2**20, **timed, f"mAP@{SCALE_MAP_K}": _map_top(ids, data.gnd, len(xb))})

        for kind, params in kinds:
            if kind == "hnsw" and len(xb) > hnsw_max:
                continue
            build, runtime = _split(params)
            start = time.perf_counter()
            idx = rk_index.build_index(kind, xb, xtrain=learn, **build)
            build_s = time.perf_counter() - start
            timed = _timed(lambda r: rk_index.search(idx, queries[r], k, **runtime), queries, gt, k, **timing)
            add(kind + "".join(f" {p}={v}" for p, v in params.items()), kind, idx, build_s, timed,
                rk_index.search(idx, queries, SCALE_MAP_K, **runtime)[1])
            del idx
        start = time.perf_counter()
        idx = hashing.binary_index(itq.encode(xb), "flat")
        build_s = time.perf_counter() - start
        timed = _timed(lambda r: hashing.hamming_search(q_codes[r], idx, k), queries, gt, k, **timing)
        add(f"hamming itq {hamming_bits}b", "hamming", idx, build_s, timed,
            hashing.hamming_search(q_codes, idx, SCALE_MAP_K)[1])
    return pd.DataFrame(rows)


def _map_top(ids, gnd, n_db: int) -> float:
    """Trapezoid AP over a truncated ranking (positives not retrieved count as misses)."""
    return evaluate.mean_ap(_clean_ids(np.asarray(ids), n_db), gnd, "trapezoid")


__all__ = ["accuracy_time_memory", "distractors", "scale", "TABLE_KINDS", "TABLE_HAMMING", "TIME_K", "SCALE_SIZES",
           "SMALL_SCALE_SIZES", "SCALE_DIM", "SCALE_KINDS", "SCALE_HNSW_MAX", "SCALE_MAP_K", "SCALE_HAMMING_BITS"]
