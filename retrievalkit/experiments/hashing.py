"""Hashing experiments: the benchmarks, mAP vs code length, code diagnostics.

Survey §2.3.2.4 (deep hash embedding, Eq. 2.12, bit balance and bit uncorrelation). Taught in
notebooks/07_hashing; the accuracy–time–memory study on the same benchmarks (Table 2.1) is
:mod:`retrievalkit.experiments.efficiency`. Every function returns tidy DataFrames; figures are
drawn by :mod:`retrievalkit.figures_hashing`.

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
from functools import cached_property

import numpy as np
import pandas as pd

from .. import artifacts, evaluate, features, hashing
from .. import index as rk_index
from .offtheshelf import Coil, layers_for

BACKBONE = "efficientnet_lite0"
LAYER = "head"
POOLING = "gem"

BITS = (16, 32, 64, 128)
FULL_BITS = (*BITS, 256)  # --full
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
# The literature's database is the whole train split (60,000; --full). The default run draws 20,000 of
# them (seeded, see fashion_mnist.load): a third of the extraction and of every encoder's training.
FASHION_DB = 20_000
FASHION_LEARN = 5_000  # rows every encoder learns from (drawn from the database, as DPSH does on CIFAR-10)
SMALL_FASHION_DB, SMALL_FASHION_QUERIES = 2000, 200
FASHION_BATCH = 256  # images per forward: tiny inputs, so a large batch keeps the network busy
FASHION_MAP_K = 1000
PRECISION_KS = (10, 100, 1000)
PR_MAX_QUERIES = 200  # full rankings for the PR curve: at most this many queries on a big database

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

    @cached_property
    def learn_key(self) -> str:
        """Fingerprint of the learning rows and labels: the data part of every fitted encoder's cache key."""
        return artifacts.fingerprint(self.x_learn, self.y_learn)

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
                 n_queries: int | None = None, progress: bool | None = None, full: bool = False) -> HashData:
    """Fashion-MNIST descriptors: database = train split, queries = test images, learning rows = a
    seeded draw of :data:`FASHION_LEARN` database rows (the DPSH protocol of the hashing literature,
    which trains on 5,000 of CIFAR-10's images and searches all of them).

    Full: 60,000 database rows, 1,000 queries at 64 px; default: :data:`FASHION_DB` drawn rows.
    SMALL: 2,000 / 200 at 32 px (all 2,000 learn).
    """
    from ..datasets import fashion_mnist

    side = side or (SMALL_FASHION_SIDE if small else FASHION_SIDE)
    n_db = n_db if n_db is not None else (SMALL_FASHION_DB if small else None if full else FASHION_DB)
    n_queries = n_queries if n_queries is not None else (SMALL_FASHION_QUERIES if small else FASHION_QUERIES)
    ds = fashion_mnist.load(data_home=data_home, n_db=n_db, n_queries=n_queries, progress=progress)
    start = time.perf_counter()
    kw = dict(size=side, resize="fixed", batch_size=FASHION_BATCH, progress=progress)
    x_db = features.extract(ds, BACKBONE, [LAYER], [POOLING], images="db", **kw).get(LAYER, POOLING)
    x_q = features.extract(ds, BACKBONE, [LAYER], [POOLING], images="queries", **kw).get(LAYER, POOLING)
    learn = np.arange(len(x_db))
    if len(x_db) > FASHION_LEARN:
        learn = np.sort(np.random.default_rng(0).choice(len(x_db), FASHION_LEARN, replace=False))
    return HashData("fashion_mnist", x_db[learn], np.asarray(ds.db_labels)[learn], x_db, x_q, ds.ground_truth("all"),
                    FASHION_MAP_K, f"db = train split ({len(x_db):,}), learning rows = {len(learn):,} of them, "
                    f"{len(x_q):,} test queries, {side} px", time.perf_counter() - start)


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


ENCODER_VERSION = 1  # bump when an encoder's fit changes what it learns


def _encoder_key(encoder, data: HashData) -> dict:
    return {"data": data.learn_key, **artifacts.settings(encoder)}


def fit_encoder(encoder, data: HashData):
    """Fit on the LEARNING rows only (labels for the deep head); queries are never passed here.

    Fitted once per encoder settings and learning rows (:mod:`retrievalkit.artifacts`): the fitted
    state, computed or read back, is set on ``encoder``, which is returned.
    """
    deep = isinstance(encoder, hashing.DeepHash)
    fitted = artifacts.cached("hash_encoder", _encoder_key(encoder, data), lambda: encoder.fit(
        data.x_learn, *([data.y_learn] if deep else [])), version=ENCODER_VERSION)
    vars(encoder).update({k: v for k, v in vars(fitted).items() if k.endswith("_")})
    return encoder


# --------------------------------------------------------------------------- experiment 1: code length
def code_length(data: HashData, bits=None, methods=METHODS, *, small: bool = False, pr_bits: int | None = PR_BITS,
                seed: int = 0, progress: bool | None = None, full: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """mAP vs code length for every method, code diagnostics, precision–recall curves.

    Returns ``(scores, curves)``. ``scores``: one row per method × bits (plus a ``float`` row, the
    uncompressed descriptors by exact search) with the headline ``mAP``, ``P@k``, bytes per vector,
    fit time, and the diagnostics of the database codes (:func:`retrievalkit.hashing.code_report`:
    ``mean_balance`` 0 = balanced, ``mean_abs_corr`` 0 = uncorrelated, ``mean_entropy`` 1 = ideal).
    ``curves``: interpolated precision at 11 recall levels per method at ``pr_bits`` bits (on the
    first :data:`PR_MAX_QUERIES` queries when the database is large).
    """
    bits = tuple(bits or (SMALL_BITS if small else FULL_BITS if full else BITS))
    rows, curves = [], []
    base = {"dataset": data.name}
    depth = _rank_depth(data)
    pr_queries = slice(None) if data.map_k is None else slice(0, PR_MAX_QUERIES)

    start = time.perf_counter()
    _, ids = rk_index.knn(data.x_query, data.x_db, depth)
    rows.append({**base, "method": "float", "bits": 32 * data.x_db.shape[1], "bytes_per_vector": 4 * data.x_db.shape[1],
                 "fit_s": 0.0, "search_s": time.perf_counter() - start, **score_ranking(data, ids)})
    if pr_bits is not None:
        full = ids if data.map_k is None else rk_index.knn(data.x_query[pr_queries], data.x_db)[1]
        curves += _curve_rows(base, "float", pr_bits, full, data.gnd[pr_queries])

    for method in methods:
        for n_bits in bits:
            encoder = make_encoder(method, n_bits, small=small, seed=seed, progress=progress)
            fit_encoder(encoder, data)
            fit_s = artifacts.seconds("hash_encoder", _encoder_key(encoder, data), version=ENCODER_VERSION)
            db_signs = encoder.transform(data.x_db)
            db_codes, q_codes = hashing.pack_codes(db_signs), encoder.encode(data.x_query)
            start = time.perf_counter()
            _, ids = hashing.hamming_search(q_codes, db_codes, depth)
            search_s = time.perf_counter() - start
            rows.append({**base, "method": method, "bits": n_bits, "bytes_per_vector": db_codes.shape[1],
                         "fit_s": fit_s, "search_s": search_s, **score_ranking(data, ids),
                         **hashing.code_report(db_signs)})
            if n_bits == pr_bits:
                full = ids if data.map_k is None else hashing.hamming_search(q_codes[pr_queries], db_codes,
                                                                             len(data.x_db))[1]
                curves += _curve_rows(base, method, n_bits, full, data.gnd[pr_queries])
    return pd.DataFrame(rows), pd.DataFrame(curves)


def _curve_rows(base: dict, method: str, n_bits: int, ids, gnd) -> list[dict]:
    recall, precision = evaluate.pr_curve(ids, gnd)
    return [{**base, "method": method, "bits": n_bits, "recall": r, "precision": p} for r, p in zip(recall, precision)]


__all__ = ["HashData", "coil_data", "fashion_data", "score_ranking", "make_encoder", "fit_encoder", "code_length", "BITS",
           "FULL_BITS", "SMALL_BITS", "FASHION_DB", "FASHION_LEARN", "METHODS", "DEEP_VARIANTS"]
