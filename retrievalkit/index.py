"""Nearest-neighbour search over descriptor rows. Survey §2.1.2 (efficiency) and §2.5.3; taught in notebooks/00 and 08.

Descriptors are rows (N×D), L2-normalised, so similarity is the inner product. One convention for
every search of the package (float here, Hamming in :mod:`retrievalkit.hashing.search`): queries
first, ``(scores, ids)`` back, best first, like faiss's ``(D, I) = index.search(xq, k)``; equal
scores keep the lower database id first.
"""
from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from .rows import as_rows

DEFAULT_QUERY_CHUNK = 1024
DEFAULT_DB_CHUNK = 65536


def check_k(k: int, n: int, what: str = "k") -> int:
    """``k`` as an int in ``[1, n]``, or a clear error naming the database size."""
    if int(k) != k or k < 1:
        raise ValueError(f"{what} must be a positive integer, got {k!r}")
    if k > n:
        raise ValueError(f"{what}={k} is larger than the {n} database rows available "
                         f"(after excluding the query itself); use {what} ≤ {n}")
    return int(k)


def _exclusions(exclude, n_q: int) -> np.ndarray:
    """``exclude`` as an n_q × m int array padded with -1 (a scalar/1-D input: one entry per query)."""
    if exclude is None:
        return np.full((n_q, 0), -1, dtype=np.int64)
    ex = np.asarray(exclude, dtype=np.int64)
    ex = ex.reshape(n_q, -1) if ex.ndim <= 1 else ex
    if ex.shape[0] != n_q:
        raise ValueError(f"exclude has {ex.shape[0]} rows for {n_q} queries")
    return ex


def _tensor_rows(x, name: str, device, dtype) -> torch.Tensor:
    t = torch.as_tensor(np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x)
    if t.ndim != 2:
        raise ValueError(f"{name} must be an N×D array of descriptor rows, got shape {tuple(t.shape)}")
    return t.to(device=device, dtype=dtype)


def _top_k(s: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` of each row, best first, equal scores → lower column first (``torch.topk`` alone leaves ties unordered)."""
    if k >= s.shape[1]:
        order = torch.sort(s, dim=1, descending=True, stable=True).indices
        return torch.gather(s, 1, order), order
    vals, idx = torch.topk(s, k + 1, dim=1)
    # A tie across the k-th place may have dropped a lower id: sort those rows in full.
    cut = vals[:, k - 1] == vals[:, k]
    vals, idx = vals[:, :k], idx[:, :k]
    if cut.any():
        order = torch.sort(s[cut], dim=1, descending=True, stable=True).indices[:, :k]
        idx[cut], vals[cut] = order, torch.gather(s[cut], 1, order)
    return _by_score_then_id(vals, idx)


def _by_score_then_id(s: torch.Tensor, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    by_id = torch.argsort(i, dim=1, stable=True)
    s, i = torch.gather(s, 1, by_id), torch.gather(i, 1, by_id)
    order = torch.argsort(s, dim=1, descending=True, stable=True)
    return torch.gather(s, 1, order), torch.gather(i, 1, order)


def knn(queries, database, k: int | None = None, *, exclude=None, query_chunk: int = DEFAULT_QUERY_CHUNK,
        db_chunk: int = DEFAULT_DB_CHUNK, device="cpu", dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product kNN: ``(scores, ids)``, each queries × k, best first; equal scores → lower id first.

    ``k=None`` ranks the whole database; a ``k`` beyond it raises. ``exclude[i]`` (an int, or a row of ints; -1 = none) are
    database rows never returned for query ``i`` — e.g. the query's own row when the queries are
    database images. Memory stays bounded by ``query_chunk × db_chunk`` scores: each database
    chunk's top-k is merged into a running top-k, so a million-vector database never needs a full
    queries × N matrix. Inner products are computed in ``dtype`` (float32; float64 where a
    notebook checks a closed form), and scores come back in it.
    """
    np_dtype = np.dtype(dtype)
    dtype = torch.from_numpy(np.empty(0, np_dtype)).dtype
    q = _tensor_rows(queries, "queries", device, dtype)
    db = _tensor_rows(database, "database", device, dtype)
    if q.shape[1] != db.shape[1]:
        raise ValueError(f"queries {tuple(q.shape)} and database {tuple(db.shape)} must be rows of the same width")
    n = db.shape[0]
    ex = torch.as_tensor(_exclusions(exclude, q.shape[0]), device=device)
    n_ex = int((ex >= 0).sum(dim=1).max()) if ex.numel() else 0
    k = check_k(n - n_ex if k is None else k, n - n_ex)
    all_scores, all_ids = np.empty((q.shape[0], k), dtype=np_dtype), np.empty((q.shape[0], k), dtype=np.int64)
    for qs in range(0, q.shape[0], query_chunk):
        qc, exc = q[qs : qs + query_chunk], ex[qs : qs + query_chunk]
        best_s = torch.empty((qc.shape[0], 0), dtype=dtype, device=device)
        best_i = torch.empty((qc.shape[0], 0), dtype=torch.int64, device=device)
        for ds in range(0, n, db_chunk):
            s = qc @ db[ds : ds + db_chunk].T
            if n_ex:
                rows, cols = torch.nonzero((exc >= ds) & (exc < ds + s.shape[1]), as_tuple=True)
                s[rows, exc[rows, cols] - ds] = float("-inf")
            top_s, top_i = _top_k(s, min(k, s.shape[1]))
            best_s, best_i = _by_score_then_id(torch.cat([best_s, top_s], 1), torch.cat([best_i, top_i + ds], 1))
            best_s, best_i = best_s[:, :k], best_i[:, :k]
        all_scores[qs : qs + qc.shape[0]] = best_s.cpu().numpy()
        all_ids[qs : qs + qc.shape[0]] = best_i.cpu().numpy()
    return all_scores, all_ids


exact_search = knn  # the name notebooks 00, 04 and 08 use


def rank(queries, database, k: int | None = None, **kwargs) -> np.ndarray:
    """Only the ranked ids of :func:`knn` (what the metrics consume)."""
    return knn(queries, database, k, **kwargs)[1]


# =========================================================================== faiss indexes
# Survey §2.1.2 challenge 3 and Table 2.1 (accuracy vs time per query); taught in
# notebooks/08_indexing_and_efficiency. One call builds any kind, one call searches it, one
# call measures it:
#
#     index = build_index("ivf_pq", xb, xtrain=x_learn)      # trained on the LEARNING split
#     scores, ids = search(index, xq, k=10, nprobe=16)         # best first, like faiss
#     row = measure("ivf_pq", xb, xq, x_learn, k=10, nprobe=16)
#
# Similarity is the inner product of L2-normalised rows everywhere. Flat, IVF, SQ8, HNSW and
# IVF-PQ are built with faiss.METRIC_INNER_PRODUCT (IVF-PQ then encodes residuals from IP
# centroids and scores <q, centroid + residual>; HNSW walks its graph by inner product).
# "pca_pq" is the exception: faiss's PCAMatrix subtracts the training mean, and inner products
# of centred vectors rank differently (<q-μ, x-μ> depends on <μ, x>), whereas L2 distances do
# not change with centring. So pca_pq searches by L2 in the PCA space, and search() turns L2
# distances into inner products with the identity ‖q − x‖² = 2 − 2<q, x> for unit rows.

FACTORY = {  # kind -> faiss index_factory string; "np": no polysemous training, as faiss's PQ constructors
    "flat": "Flat",
    "ivf_flat": "IVF{nlist},Flat",
    "ivf_pq": "IVF{nlist},PQ{pq_m}x{pq_bits}np",
    "hnsw": "HNSW{hnsw_M},Flat",
    "sq8": "SQ8",
    "pca_pq": "PCA{pca_dim},PQ{pq_m}x{pq_bits}np",
}
REFINE = {"flat": ",RFlat", "sq8": ",Refine(SQ8)"}  # ivf_pq's refine=: re-rank with full / 8-bit vectors
INDEX_KINDS = ("exact", *FACTORY)
TRAINED_KINDS = frozenset({"ivf_flat", "ivf_pq", "sq8", "pca_pq"})
BUILD_PARAMS = {
    "exact": ("device",),
    "flat": (),
    "ivf_flat": ("nlist",),
    "ivf_pq": ("nlist", "pq_m", "pq_bits", "refine"),
    "hnsw": ("hnsw_M", "efConstruction"),
    "sq8": (),
    "pca_pq": ("pca_dim", "pq_m", "pq_bits"),
}
RUNTIME_PARAMS = ("nprobe", "efSearch", "k_factor")
MIN_POINTS_PER_CENTROID = 39  # faiss's k-means asks for this many training points per centroid
DEFAULT_PQ_BITS = 8
DEFAULT_HNSW_M = 32
DEFAULT_EF_CONSTRUCTION = 40
DEFAULT_SINGLE_QUERIES = 100


class ExactIndex:
    """The ``"exact"`` kind: database rows searched by :func:`knn` (torch, chunked, ties → lower id)."""

    def __init__(self, xb, device="cpu"):
        self.xb = np.ascontiguousarray(xb, dtype=np.float32)
        self.d, self.ntotal, self.device = self.xb.shape[1], len(self.xb), device

    def search(self, xq, k):
        return knn(xq, self.xb, k, device=self.device)

    @property
    def nbytes(self) -> int:
        return self.xb.nbytes

    def __repr__(self):
        return f"ExactIndex(ntotal={self.ntotal}, d={self.d}, device={self.device!r})"


def _divisor_at_most(d: int, limit: int) -> int:
    return next(m for m in range(max(1, limit), 0, -1) if d % m == 0)


def _default_nlist(n_db: int, n_train: int) -> int:
    return max(1, min(int(4 * np.sqrt(n_db)), n_train // MIN_POINTS_PER_CENTROID))


def _check_pq(d: int, pq_m: int | None, pq_bits: int, n_train: int, kind: str) -> int:
    # Default: one 8-bit code per 8 dimensions (16 bytes for 128-d), like faiss's "PQ16" on SIFT.
    pq_m = _divisor_at_most(d, d // 8) if pq_m is None else int(pq_m)
    if d % pq_m:
        raise ValueError(f"build_index({kind!r}): pq_m={pq_m} must divide the {d} dimensions it splits")
    if n_train < 2**pq_bits:
        raise ValueError(f"build_index({kind!r}): {n_train} training rows cannot train 2^{pq_bits} PQ centroids; "
                         f"pass more learning rows or a smaller pq_bits")
    return pq_m


def factory_string(kind: str, d: int, n_db: int, n_train: int = 0, **params) -> str:
    """The faiss ``index_factory`` string of a ``kind`` with its defaults filled in (e.g. ``"IVF60,PQ8x8"``)."""
    p = {"hnsw_M": DEFAULT_HNSW_M, "pq_bits": DEFAULT_PQ_BITS, **params}
    if kind in ("ivf_flat", "ivf_pq"):
        p["nlist"] = int(p.get("nlist") or _default_nlist(n_db, n_train))
        if p["nlist"] > n_train:
            raise ValueError(f"build_index({kind!r}): nlist={p['nlist']} lists need at least as many training rows, "
                             f"got {n_train}")
    if kind == "pca_pq":
        p["pca_dim"] = int(p.get("pca_dim") or d // 2)
        if not 0 < p["pca_dim"] <= d:
            raise ValueError(f"build_index('pca_pq'): pca_dim must be in 1..{d}, got {p['pca_dim']}")
    if kind in ("ivf_pq", "pca_pq"):
        p["pq_m"] = _check_pq(p.get("pca_dim", d), p.get("pq_m"), int(p["pq_bits"]), n_train, kind)
    refine = p.get("refine")
    if refine is not None and refine not in REFINE:
        raise ValueError(f"refine must be one of {tuple(REFINE)} or None, got {refine!r}")
    return FACTORY[kind].format(**p) + (REFINE[refine] if refine else "")


def build_index(kind: str, xb, *, xtrain=None, **params):
    """Build a ``kind`` index over the database rows ``xb`` (N×D float32, L2-normalised).

    Each faiss kind is an ``index_factory`` string (:data:`FACTORY`, :func:`factory_string`);
    similarity = inner product, see the note above:

    * ``"exact"`` — :class:`ExactIndex` (torch, ``device=``); ``"flat"`` — ``Flat``.
    * ``"ivf_flat"`` — ``IVF{nlist},Flat``, ``nlist`` lists (default ``min(4·√N, n_train/39)``).
    * ``"ivf_pq"`` — ``IVF{nlist},PQ{pq_m}x{pq_bits}``, ``pq_m`` sub-quantisers (default ``D/8``);
      ``refine="flat"|"sq8"`` appends ``RFlat`` / ``Refine(SQ8)`` (re-rank ``k·k_factor``
      candidates with full / 8-bit vectors, at that memory cost).
    * ``"hnsw"`` — ``HNSW{hnsw_M},Flat`` (``efConstruction`` set after creation); no training.
    * ``"sq8"`` — ``SQ8``, 8 bits per dimension (ranges are trained).
    * ``"pca_pq"`` — ``PCA{pca_dim},PQ{pq_m}x{pq_bits}``, default ``pca_dim = D/2``, L2 metric.

    **Protocol.** Trained kinds (``TRAINED_KINDS``: IVF centroids, PQ codebooks, SQ ranges, PCA)
    train ONLY on ``xtrain``, the learning split, and raise ``ValueError`` without it — they never
    fall back to training on the database. ``xtrain`` is ignored by kinds that learn nothing.
    """
    import faiss

    if kind not in INDEX_KINDS:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {INDEX_KINDS}")
    unknown = sorted(set(params) - set(BUILD_PARAMS[kind]))
    if unknown:
        raise ValueError(f"build_index({kind!r}) got unexpected parameters {unknown}; it takes {sorted(BUILD_PARAMS[kind])} "
                         f"(search-time {list(RUNTIME_PARAMS)} go to search())")
    xb = as_rows(xb, "xb", allow_empty=False)
    if kind == "exact":
        return ExactIndex(xb, **params)
    if kind not in TRAINED_KINDS:
        xtrain = None
    elif xtrain is None:
        raise ValueError(
            f"build_index({kind!r}) must be trained: pass xtrain=<learning-split descriptors>. "
            f"It never trains on the database (xb); see Survey §2.1.2 and notebooks/08_indexing_and_efficiency"
        )
    else:
        if isinstance(xtrain, np.ndarray) and np.may_share_memory(xtrain, xb):
            warnings.warn(f"build_index({kind!r}): xtrain shares memory with the database xb; "
                          f"train on the learning split, not on the rows being searched", stacklevel=2)
        xtrain = as_rows(xtrain, "xtrain", allow_empty=False)
        if xtrain.shape[1] != xb.shape[1]:
            raise ValueError(f"xtrain has {xtrain.shape[1]} columns, xb {xb.shape[1]}")
    build = {p: v for p, v in params.items() if p != "efConstruction"}
    spec = factory_string(kind, xb.shape[1], len(xb), 0 if xtrain is None else len(xtrain), **build)
    index = faiss.index_factory(xb.shape[1], spec, faiss.METRIC_L2 if kind == "pca_pq" else faiss.METRIC_INNER_PRODUCT)
    if kind == "hnsw":
        index.hnsw.efConstruction = int(params.get("efConstruction", DEFAULT_EF_CONSTRUCTION))
    if xtrain is not None:
        _quiet_kmeans(index)
        index.train(xtrain)
    index.add(xb)
    return index


def _quiet_kmeans(index) -> None:
    """Let every k-means inside ``index`` (IVF lists, PQ codebooks) train on few points without a warning.

    faiss prints "WARNING clustering n points to k centroids" to stderr (C++, past Python's warnings)
    when a k-means gets fewer than ``min_points_per_centroid`` (39) points per centroid, as 256-word PQ
    codebooks do on a small learning split: one line per sub-quantiser. That setting decides nothing
    but the warning, so lowering it to 1 leaves what is trained unchanged.
    """
    import faiss

    while index is not None:
        index = faiss.downcast_index(index)
        for owner in (index, getattr(index, "pq", None)):
            if hasattr(owner, "cp"):
                owner.cp.min_points_per_centroid = 1
        index = getattr(index, "base_index", None) or (getattr(index, "index", None)
                                                      if isinstance(index, faiss.IndexPreTransform) else None)


def _search_params(index, nprobe, efSearch, k_factor):
    """faiss SearchParameters for this index (per call: the index itself is not modified)."""
    import faiss

    given = {name: v for name, v in (("nprobe", nprobe), ("efSearch", efSearch), ("k_factor", k_factor)) if v is not None}
    base = faiss.downcast_index(index.base_index) if isinstance(index, faiss.IndexRefine) else index
    is_ivf, is_hnsw = isinstance(base, faiss.IndexIVF), isinstance(base, faiss.IndexHNSW)
    for name, ok in (("nprobe", is_ivf), ("efSearch", is_hnsw), ("k_factor", isinstance(index, faiss.IndexRefine))):
        if name in given and not ok:
            raise ValueError(f"{name} does not apply to a {type(index).__name__}")
    if not given:
        return None
    base_params = None
    if nprobe is not None:
        base_params = faiss.SearchParametersIVF(nprobe=int(nprobe))
    elif efSearch is not None:
        base_params = faiss.SearchParametersHNSW(efSearch=int(efSearch))
    if isinstance(index, faiss.IndexRefine):
        refine = faiss.IndexRefineSearchParameters(k_factor=float(k_factor or index.k_factor))
        if base_params is not None:
            refine.base_index_params = base_params
        # keep base_params alive as long as the refine parameters that point to it
        return refine, base_params
    return base_params, None


def search(index, xq, k: int, *, nprobe: int | None = None, efSearch: int | None = None,
           k_factor: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Search any :func:`build_index` index: ``(scores, ids)``, each queries × k, best first.

    Run-time knobs, passed per call (the index is not modified): ``nprobe`` (IVF lists visited),
    ``efSearch`` (HNSW beam width), ``k_factor`` (candidates re-ranked by ``refine``); a knob the
    index does not have raises ``ValueError``. Scores are inner products; an L2 index
    (``pca_pq``) has its squared distances turned into ``1 − d/2``, the inner product of unit rows.
    Where an approximate index finds fewer than k results the rest have id −1. Tie order is
    defined (lower id first) only for ``"exact"``.
    """
    xq = as_rows(xq, "xq", allow_empty=False)
    k = min(int(k), index.ntotal)
    if k <= 0:
        raise ValueError("k must be positive and the index non-empty")
    if isinstance(index, ExactIndex):
        if any(v is not None for v in (nprobe, efSearch, k_factor)):
            raise ValueError("nprobe / efSearch / k_factor do not apply to the exact index")
        return index.search(xq, k)
    import faiss

    if xq.shape[1] != index.d:
        raise ValueError(f"queries have {xq.shape[1]} columns, the index {index.d}")
    params = _search_params(index, nprobe, efSearch, k_factor)
    scores, ids = index.search(xq, k) if params is None else index.search(xq, k, params=params[0])
    if index.metric_type == faiss.METRIC_L2:
        scores = 1 - scores / 2
    return scores.astype(np.float32, copy=False), ids.astype(np.int64, copy=False)


def index_bytes(index) -> int:
    """The index's real size in bytes: its faiss serialisation (vectors, codes, ids, graph, centroids)."""
    import faiss

    if isinstance(index, ExactIndex):
        return index.nbytes
    if isinstance(index, faiss.IndexBinary):
        return int(faiss.serialize_index_binary(index).nbytes)
    return int(faiss.serialize_index(index).nbytes)


def knn_recall(ids, ground_truth_ids, k: int | None = None) -> float:
    """k-NN recall ("intersection" recall@k): mean over queries of ``|ids[:k] ∩ ground_truth[:k]| / k``."""
    ids, gt = np.asarray(ids), np.asarray(ground_truth_ids)
    k = min(ids.shape[1], gt.shape[1]) if k is None else int(k)
    if ids.shape[1] < k or gt.shape[1] < k or len(ids) != len(gt):
        raise ValueError(f"need ≥ {k} results for each of the same queries, got {ids.shape} and {gt.shape}")
    found, truth = ids[:, :k], gt[:, :k]
    hits = (found[:, :, None] == truth[:, None, :]).any(axis=2) & (found >= 0)
    return float(hits.sum(axis=1).mean() / k)


def time_queries(search, n_queries: int, *, repeats: int = 3, single_queries: int = DEFAULT_SINGLE_QUERIES,
                 batch: bool = True) -> tuple[dict, object]:
    """Wall-clock ms per query of ``search(rows)``, where ``rows`` is a slice of the query positions.

    Batch: all queries in one call (``search(slice(None))``), the best of ``repeats``. Single: one
    query at a time, as an interactive system would; after a warm-up call, each of the first
    ``single_queries`` takes the best of ``repeats``, and the median over them is reported (both
    resist other jobs sharing the cores). Returns the timings and the last batch result (None
    with ``batch=False``). Survey Table 2.1 (time per query).
    """
    repeats, out, batch_s = max(1, repeats), None, float("nan")

    def best(rows) -> float:
        nonlocal out
        t = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            result = search(rows)
            t = min(t, time.perf_counter() - start)
        out = result if rows == slice(None) else out
        return t

    if batch:
        batch_s = best(slice(None))
    n = min(single_queries, n_queries)
    if n:
        search(slice(0, 1))
    single = [best(slice(i, i + 1)) for i in range(n)]
    return {"ms_per_query_batch": 1e3 * batch_s / n_queries,
            "ms_per_query_single": 1e3 * float(np.median(single)) if n else None,
            "queries_per_s": n_queries / batch_s if batch_s > 0 else float("inf")}, out


def measure_search(index, xq, k: int = 10, ground_truth_ids=None, *, single_queries: int = DEFAULT_SINGLE_QUERIES,
                   repeats: int = 1, **runtime) -> dict:
    """:func:`time_queries` of :func:`search` on a built index, plus ``recall@k`` (None without ``ground_truth_ids``)."""
    xq = as_rows(xq, "xq", allow_empty=False)
    timing, (_, ids) = time_queries(lambda rows: search(index, xq[rows], k, **runtime), len(xq), repeats=repeats,
                                    single_queries=single_queries)
    return {**timing, f"recall@{k}": None if ground_truth_ids is None else knn_recall(ids, ground_truth_ids, k)}


def measure(kind: str, xb, xq, xtrain=None, k: int = 10, ground_truth_ids=None, *,
            single_queries: int = DEFAULT_SINGLE_QUERIES, repeats: int = 1, **params) -> dict:
    """Build a ``kind`` index and measure it: one tidy row (a dict) in the spirit of Survey Table 2.1.

    Fields: ``kind, n, d, k``, the parameters, ``build_s`` (train + add), ``bytes_per_vector``
    (:func:`index_bytes` / N), ``ms_per_query_batch``, ``ms_per_query_single``, ``queries_per_s``
    and ``recall@k`` against exact search (computed here with :func:`knn` unless
    ``ground_truth_ids`` is given). ``params`` mixes build parameters (see :func:`build_index`)
    and run-time ones (``nprobe``, ``efSearch``, ``k_factor``). Timings are wall clock on a
    machine that may be shared: compare rows measured together.
    """
    xb, xq = as_rows(xb, "xb", allow_empty=False), as_rows(xq, "xq", allow_empty=False)
    runtime = {name: params.pop(name) for name in RUNTIME_PARAMS if name in params}
    start = time.perf_counter()
    index = build_index(kind, xb, xtrain=xtrain, **params)
    build_s = time.perf_counter() - start
    if ground_truth_ids is None:
        ground_truth_ids = knn(xq, xb, k)[1]
    row = {"kind": kind, "n": len(xb), "d": xb.shape[1], "k": k, **params, **runtime,
           "build_s": build_s, "bytes_per_vector": index_bytes(index) / len(xb)}
    row.update(measure_search(index, xq, k, ground_truth_ids, single_queries=single_queries, repeats=repeats, **runtime))
    return row
