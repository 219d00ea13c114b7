"""Hashing and indexing experiments: mAP vs code length, code diagnostics, accuracy–time–memory, scale.

Survey §2.3.2.4 (deep hash embedding, Eq. 2.12, bit balance and bit uncorrelation), §2.1.2
challenge 3 (accuracy vs efficiency), §2.5.3 and Table 2.1 (accuracy vs time per query). Taught in
notebooks/07_hashing and notebooks/08_indexing_and_efficiency. Every function returns tidy
DataFrames; figures are drawn by :mod:`retrievalkit.figures_hashing`.

Descriptors: EfficientNet-Lite0, GeM on the 1280-channel ``head`` map, L2-normalised (the same
cached extraction as notebooks/03–04 on COIL-100).

Protocols (nothing is ever fitted on a query):

* **COIL-100 (default protocol).** Learning split = objects 1–50: LSH centring, PCA, ITQ's
  rotation, the deep hash head, IVF centroids, PQ codebooks, SQ ranges and binary IVF lists are
  all fitted there. Database = the 3,600 test images (objects 51–100), queries = their 0°/90°/
  180°/270° views, the query itself excluded (junk); trapezoid mAP over the full ranking. The deep
  hash head is trained on *other objects* than it is scored on, so this measures transfer.
* **Fashion-MNIST (the hashing literature's CIFAR-10-style protocol).** Database = the train split
  and also the learning set (labels of the database are used to train the deep hash head, as in
  supervised hashing papers); queries = test-split images, never fitted on. mAP@1000 and
  precision@k. Images are 28×28 grey, replicated to RGB and upsampled to ``FASHION_SIDE`` px.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import evaluate, features, hashing
from .. import index as rk_index
from ..whitening import PCA
from .offtheshelf import Coil, layers_for

BACKBONE = "efficientnet_lite0"
LAYER = "head"
POOLING = "gem"

BITS = (16, 32, 64, 128, 256)
SMALL_BITS = (16, 64)
PR_BITS = 64  # precision–recall curves and diagnostics figure are drawn at this code length

BALANCE_WEIGHT = 5.0
DECORRELATION_WEIGHT = 1.0
DEEP_VARIANTS = {  # name -> regulariser weights added to the similarity + quantisation objective
    "deep": {},
    "deep+balance": {"balance": BALANCE_WEIGHT},
    "deep+decorrelation": {"decorrelation": DECORRELATION_WEIGHT},
    "deep+both": {"balance": BALANCE_WEIGHT, "decorrelation": DECORRELATION_WEIGHT},
}
METHODS = ("lsh", "pca_sign", "itq", *DEEP_VARIANTS)
DEEP_LOSS = "pairwise"
DEEP_EPOCHS = 15
SMALL_DEEP_EPOCHS = 8
DEEP_LR = 1e-3
DEEP_BATCH = 256
ITQ_ITERATIONS = 50

# Fashion-MNIST: 64 px gives Lite0 a 2×2 head map; 32 px (SMALL) a 1×1 map, 4× cheaper.
FASHION_SIDE = 64
SMALL_FASHION_SIDE = 32
FASHION_QUERIES = 1000  # the hashing literature queries with 1,000 test images
SMALL_FASHION_DB, SMALL_FASHION_QUERIES = 2000, 200
FASHION_BATCH = 256  # images per forward: tiny inputs, so a large batch keeps the network busy
FASHION_MAP_K = 1000
PRECISION_KS = (10, 100, 1000)
PR_MAX_QUERIES = 200  # full rankings for the PR curve: at most this many queries on a big database

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


# --------------------------------------------------------------------------- data
@dataclass
class HashData:
    """One hashing benchmark: learning rows (+labels), database and query rows, ground truth, metric.

    ``map_k=None``: trapezoid mAP over the full ranking (COIL-100 default protocol); an int:
    the hashing literature's mAP@k over the top ``map_k`` (Fashion-MNIST).
    """

    name: str
    x_learn: np.ndarray
    y_learn: np.ndarray
    x_db: np.ndarray
    x_query: np.ndarray
    gnd: list
    map_k: int | None
    protocol: str
    extract_s: float = 0.0

    @property
    def metric(self) -> str:
        return "mAP" if self.map_k is None else f"mAP@{self.map_k}"

    def __repr__(self):
        return (f"HashData({self.name!r}, learn={self.x_learn.shape}, db={self.x_db.shape}, "
                f"queries={self.x_query.shape}, metric={self.metric!r})")


def coil_data(coil: Coil) -> HashData:
    """COIL-100 descriptors for hashing (default protocol; SMALL: 10 learning / 10 test objects)."""
    start = time.perf_counter()
    test, learn = coil.split("test"), coil.split("learn")
    x_db = coil.extract("test", BACKBONE, layers_for(BACKBONE)).get(LAYER, POOLING)
    x_learn = coil.extract("learn", BACKBONE, layers_for(BACKBONE)).get(LAYER, POOLING)
    q = np.asarray(test.query_db_index)
    return HashData("coil100", x_learn, np.asarray(learn.db_labels), x_db, x_db[q], test.ground_truth("all"),
                    None, "learn: objects 1–50; db: test objects, queries = 4 views each (self excluded)",
                    time.perf_counter() - start)


def fashion_data(small: bool = False, data_home=None, *, side: int | None = None, n_db: int | None = None,
                 n_queries: int | None = None, progress: bool | None = None) -> HashData:
    """Fashion-MNIST descriptors: database = learning set = train split, queries = test images.

    Full: 60,000 database rows, 1,000 queries at 64 px. SMALL: 2,000 / 200 at 32 px.
    """
    from ..datasets import fashion_mnist

    side = side or (SMALL_FASHION_SIDE if small else FASHION_SIDE)
    n_db = n_db if n_db is not None else (SMALL_FASHION_DB if small else None)
    n_queries = n_queries if n_queries is not None else (SMALL_FASHION_QUERIES if small else FASHION_QUERIES)
    ds = fashion_mnist.load(data_home=data_home, n_db=n_db, n_queries=n_queries, progress=progress)
    start = time.perf_counter()
    kw = dict(size=side, resize="fixed", batch_size=FASHION_BATCH, progress=progress)
    x_db = features.extract(ds, BACKBONE, [LAYER], [POOLING], images="db", **kw).get(LAYER, POOLING)
    x_q = features.extract(ds, BACKBONE, [LAYER], [POOLING], images="queries", **kw).get(LAYER, POOLING)
    return HashData("fashion_mnist", x_db, np.asarray(ds.db_labels), x_db, x_q, ds.ground_truth("all"),
                    FASHION_MAP_K, f"db = learning set = train split ({len(x_db)}), {len(x_q)} test queries, "
                    f"{side} px", time.perf_counter() - start)


# --------------------------------------------------------------------------- scoring
def _clean_ids(ids: np.ndarray, n_db: int) -> np.ndarray:
    # Approximate indexes pad missing results with −1; evaluate.relevance would read −1 as an id.
    return np.where(ids < 0, n_db, ids)


def score_ranking(data: HashData, ids: np.ndarray, ks=PRECISION_KS) -> dict:
    """The benchmark's headline ``mAP`` (full-ranking trapezoid or mAP@k) and precision at ``ks``."""
    ids = _clean_ids(np.asarray(ids), len(data.x_db))
    if data.map_k is None:
        value = evaluate.mean_ap(ids, data.gnd, "trapezoid")
    else:
        value = evaluate.map_at_k(ids, data.gnd, data.map_k)
    prec = evaluate.precision_at_k(ids, data.gnd, [k for k in ks if k <= ids.shape[1]])
    row = {"metric": data.metric, "mAP": value}
    row.update({f"P@{k}": float(np.mean(prec[k])) if k in prec else np.nan for k in ks})
    return row


def _rank_depth(data: HashData) -> int:
    return len(data.x_db) if data.map_k is None else min(data.map_k, len(data.x_db))


# --------------------------------------------------------------------------- encoders
def make_encoder(method: str, n_bits: int, *, small: bool = False, seed: int = 0, progress: bool | None = None):
    """An unfitted encoder: ``lsh``, ``pca_sign``, ``itq`` or a deep variant of :data:`DEEP_VARIANTS`."""
    if method == "lsh":
        return hashing.LSH(n_bits, seed=seed)
    if method == "pca_sign":
        return hashing.PCASign(n_bits)
    if method == "itq":
        return hashing.ITQ(n_bits, ITQ_ITERATIONS, seed=seed)
    if method in DEEP_VARIANTS:
        return hashing.DeepHash(n_bits, DEEP_LOSS, epochs=SMALL_DEEP_EPOCHS if small else DEEP_EPOCHS, lr=DEEP_LR, batch_size=DEEP_BATCH,
                                seed=seed, progress=progress, **DEEP_VARIANTS[method])
    raise ValueError(f"unknown hashing method {method!r}; choose one of {METHODS}")


def fit_encoder(encoder, data: HashData):
    """Fit on the LEARNING rows only (labels for the deep head); queries are never passed here."""
    if isinstance(encoder, hashing.DeepHash):
        return encoder.fit(data.x_learn, data.y_learn)
    return encoder.fit(data.x_learn)


# --------------------------------------------------------------------------- experiment 1: code length
def code_length(data: HashData, bits=None, methods=METHODS, *, small: bool = False, pr_bits: int | None = PR_BITS,
                seed: int = 0, progress: bool | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """mAP vs code length for every method, code diagnostics, precision–recall curves.

    Returns ``(scores, curves)``. ``scores``: one row per method × bits (plus a ``float`` row, the
    uncompressed descriptors by exact search) with the headline ``mAP``, ``P@k``, bytes per vector,
    fit time, and the diagnostics of the database codes (:func:`retrievalkit.hashing.code_report`:
    ``mean_balance`` 0 = balanced, ``mean_abs_corr`` 0 = uncorrelated, ``mean_entropy`` 1 = ideal).
    ``curves``: interpolated precision at 11 recall levels per method at ``pr_bits`` bits (on the
    first :data:`PR_MAX_QUERIES` queries when the database is large).
    """
    bits = tuple(bits or (SMALL_BITS if small else BITS))
    rows, curves = [], []
    base = {"dataset": data.name}
    depth = _rank_depth(data)
    pr_queries = slice(None) if data.map_k is None else slice(0, PR_MAX_QUERIES)

    start = time.perf_counter()
    _, ids = rk_index.exact_search(data.x_query, data.x_db, depth)
    rows.append({**base, "method": "float", "bits": 32 * data.x_db.shape[1], "bytes_per_vector": 4 * data.x_db.shape[1],
                 "fit_s": 0.0, "search_s": time.perf_counter() - start, **score_ranking(data, ids)})
    if pr_bits is not None:
        full = ids if data.map_k is None else rk_index.exact_search(data.x_query[pr_queries], data.x_db)[1]
        curves += _curve_rows(base, "float", pr_bits, full, data.gnd[pr_queries])

    for method in methods:
        for n_bits in bits:
            encoder = make_encoder(method, n_bits, small=small, seed=seed, progress=progress)
            start = time.perf_counter()
            fit_encoder(encoder, data)
            fit_s = time.perf_counter() - start
            db_signs = encoder.transform(data.x_db)
            db_codes, q_codes = hashing.pack_codes(db_signs), encoder.encode(data.x_query)
            start = time.perf_counter()
            _, ids = hashing.hamming_search(db_codes, q_codes, depth)
            search_s = time.perf_counter() - start
            rows.append({**base, "method": method, "bits": n_bits, "bytes_per_vector": db_codes.shape[1],
                         "fit_s": fit_s, "search_s": search_s, **score_ranking(data, ids),
                         **hashing.code_report(db_signs)})
            if n_bits == pr_bits:
                full = ids if data.map_k is None else hashing.hamming_search(db_codes, q_codes[pr_queries],
                                                                             len(data.x_db))[1]
                curves += _curve_rows(base, method, n_bits, full, data.gnd[pr_queries])
    return pd.DataFrame(rows), pd.DataFrame(curves)


def _curve_rows(base: dict, method: str, n_bits: int, ids, gnd) -> list[dict]:
    recall, precision = evaluate.pr_curve(ids, gnd)
    return [{**base, "method": method, "bits": n_bits, "recall": r, "precision": p} for r, p in zip(recall, precision)]


# --------------------------------------------------------------------------- experiment 2: Table 2.1 analogue
def accuracy_time_memory(data: HashData, kinds=TABLE_KINDS, hamming=TABLE_HAMMING, *, small: bool = False,
                         k: int = TIME_K, repeats: int = 3, single_queries: int = 50, seed: int = 0) -> pd.DataFrame:
    """One row per index: the benchmark's mAP, recall@k vs exact, ms per query, bytes per vector.

    faiss kinds from :func:`retrievalkit.index.build_index` (trained on the learning rows only) and
    Hamming search over binary codes (encoders fitted on the learning rows; query encoding is
    counted in the Hamming rows' time). Timings: ``k`` results per query, batch of all queries
    (best of ``repeats``) and one query at a time; mAP: a second search ranked to the depth the
    metric needs (the full database for COIL-100). ``df.attrs["per_query"]``: each method's AP per
    query (full-ranking benchmarks only), for the verdicts' paired bootstrap.
    """
    rows, per_query = [], []

    def keep_aps(method: str, ids) -> None:
        if data.map_k is None:
            ap = evaluate.average_precision(_clean_ids(np.asarray(ids), len(data.x_db)), data.gnd, "trapezoid")
            per_query.extend({"method": method, "query": i, "AP": float(v)} for i, v in enumerate(ap))

    depth = _rank_depth(data)
    gt = rk_index.exact_search(data.x_query, data.x_db, k)[1]
    for kind, params in kinds:
        build = {p: v for p, v in params.items() if p not in rk_index.RUNTIME_PARAMS}
        runtime = {p: v for p, v in params.items() if p in rk_index.RUNTIME_PARAMS}
        start = time.perf_counter()
        idx = rk_index.build_index(kind, data.x_db, xtrain=data.x_learn if kind in rk_index.TRAINED_KINDS else None,
                                   **build)
        build_s = time.perf_counter() - start
        timing = rk_index.measure_search(idx, data.x_query, k, gt, single_queries=single_queries, repeats=repeats,
                                         **runtime)
        _, ids = rk_index.search(idx, data.x_query, depth, **runtime)
        label = kind + "".join(f" {p}={v}" for p, v in params.items())
        keep_aps(label, ids)
        rows.append({"dataset": data.name, "method": label, "family": "float index", "kind": kind, **params,
                     "build_s": build_s, "bytes_per_vector": rk_index.index_bytes(idx) / len(data.x_db),
                     **_timing_columns(timing, k), **score_ranking(data, ids)})
    for method, n_bits in hamming:
        encoder = make_encoder(method, n_bits, small=small, seed=seed)
        start = time.perf_counter()
        fit_encoder(encoder, data)
        db_codes = encoder.encode(data.x_db)
        idx = hashing.binary_index(db_codes, "flat")
        build_s = time.perf_counter() - start
        batch_s = float("inf")
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            _, ids_k = hashing.hamming_search(idx, encoder.encode(data.x_query), k)
            batch_s = min(batch_s, time.perf_counter() - start)
        n_single = min(single_queries, len(data.x_query))
        start = time.perf_counter()
        for i in range(n_single):
            hashing.hamming_search(idx, encoder.encode(data.x_query[i : i + 1]), k)
        single_s = time.perf_counter() - start
        _, ids = hashing.hamming_search(idx, encoder.encode(data.x_query), depth)
        keep_aps(f"hamming {method} {n_bits}b", ids)
        rows.append({"dataset": data.name, "method": f"hamming {method} {n_bits}b", "family": "binary codes",
                     "kind": "hamming", "bits": n_bits, "build_s": build_s,
                     "bytes_per_vector": rk_index.index_bytes(idx) / len(data.x_db),
                     "ms_per_query_batch": 1e3 * batch_s / len(data.x_query),
                     "ms_per_query_single": 1e3 * single_s / max(n_single, 1),
                     "recall@k": rk_index.knn_recall(ids_k, gt, k), "k": k, **score_ranking(data, ids)})
    df = pd.DataFrame(rows)
    df.attrs["per_query"] = per_query  # plain records (pandas compares attrs on concat)
    return df


def _timing_columns(timing: dict, k: int) -> dict:
    return {"ms_per_query_batch": timing["ms_per_query_batch"], "ms_per_query_single": timing["ms_per_query_single"],
            "recall@k": timing[f"recall@{k}"], "k": k}


# --------------------------------------------------------------------------- experiment 3: scale
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
    gnd = data.gnd
    rows = []
    for n in sizes:
        xb = np.concatenate([real, extra[: max(0, n - len(real))]])[:n] if n > len(real) else real[:n]
        gt = rk_index.exact_search(queries, xb, k)[1]
        base = {"dataset": data.name, "n": len(xb), "n_distractors": max(0, len(xb) - len(real)), "dim": xb.shape[1]}
        for kind, params in kinds:
            if kind == "hnsw" and len(xb) > hnsw_max:
                continue
            build = {p: v for p, v in params.items() if p not in rk_index.RUNTIME_PARAMS}
            runtime = {p: v for p, v in params.items() if p in rk_index.RUNTIME_PARAMS}
            start = time.perf_counter()
            idx = rk_index.build_index(kind, xb, xtrain=learn if kind in rk_index.TRAINED_KINDS else None, **build)
            build_s = time.perf_counter() - start
            timing = rk_index.measure_search(idx, queries, k, gt, single_queries=single_queries, **runtime)
            _, ids = rk_index.search(idx, queries, SCALE_MAP_K, **runtime)
            size = rk_index.index_bytes(idx)
            rows.append({**base, "method": kind + "".join(f" {p}={v}" for p, v in params.items()), "kind": kind,
                         "build_s": build_s, "bytes_per_vector": size / len(xb), "index_MB": size / 2**20,
                         **_timing_columns(timing, k), f"mAP@{SCALE_MAP_K}": _map_top(ids, gnd, len(xb))})
            del idx
        start = time.perf_counter()
        db_codes = itq.encode(xb)
        idx = hashing.binary_index(db_codes, "flat")
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        _, ids_k = hashing.hamming_search(idx, q_codes, k)
        batch_s = time.perf_counter() - start
        n_single = min(single_queries, len(queries))
        start = time.perf_counter()
        for i in range(n_single):
            hashing.hamming_search(idx, q_codes[i : i + 1], k)
        single_s = time.perf_counter() - start
        _, ids = hashing.hamming_search(idx, q_codes, SCALE_MAP_K)
        size = rk_index.index_bytes(idx)
        rows.append({**base, "method": f"hamming itq {hamming_bits}b", "kind": "hamming", "build_s": build_s,
                     "bytes_per_vector": size / len(xb), "index_MB": size / 2**20,
                     "ms_per_query_batch": 1e3 * batch_s / len(queries), "ms_per_query_single": 1e3 * single_s / n_single,
                     "recall@k": rk_index.knn_recall(ids_k, gt, k), "k": k,
                     f"mAP@{SCALE_MAP_K}": _map_top(ids, gnd, len(xb))})
    return pd.DataFrame(rows)


def _map_top(ids, gnd, n_db: int) -> float:
    """Trapezoid AP over a truncated ranking (positives not retrieved count as misses)."""
    return evaluate.mean_ap(_clean_ids(np.asarray(ids), n_db), gnd, "trapezoid")


__all__ = [
    "HashData", "coil_data", "fashion_data", "score_ranking", "make_encoder", "fit_encoder", "code_length",
    "accuracy_time_memory", "distractors", "scale", "BITS", "SMALL_BITS", "METHODS",
    "DEEP_VARIANTS", "TABLE_KINDS", "TABLE_HAMMING", "SCALE_SIZES", "SMALL_SCALE_SIZES",
]
