"""faiss indexes behind one call (retrievalkit.index.build_index / search / measure) against exact search."""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from retrievalkit import index as I

D = 32


def unit_rows(n, d=D, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered_rows(n, d=D, seed=0, n_clusters=20, spread=0.15):
    """Easy data: unit rows around shared cluster centres (the same centres for every seed)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(42).normal(size=(n_clusters, d))
    x = centres[rng.integers(0, n_clusters, n)] + spread * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    """Learning rows (train only), database rows and queries: three disjoint draws."""
    return unit_rows(3000, seed=1), unit_rows(4000, seed=2), unit_rows(40, seed=3)


def test_ivf_with_every_list_probed_is_exact(data):
    xtrain, xb, xq = data
    nlist = 16
    flat_s, flat_i = I.search(I.build_index("flat", xb), xq, 10)
    ivf = I.build_index("ivf_flat", xb, xtrain=xtrain, nlist=nlist)
    s, i = I.search(ivf, xq, 10, nprobe=nlist)
    np.testing.assert_array_equal(i, flat_i)
    np.testing.assert_allclose(s, flat_s, atol=1e-5)
    # and one list is not enough on random data: the knob really reaches the index
    assert I.knn_recall(I.search(ivf, xq, 10, nprobe=1)[1], flat_i) < 0.9
    # exact kinds agree with exact_search
    exact_s, exact_i = I.exact_search(xq, xb, 10)
    np.testing.assert_array_equal(flat_i, exact_i)
    np.testing.assert_array_equal(I.search(I.build_index("exact", xb), xq, 10)[1], exact_i)


@pytest.mark.parametrize("kind", sorted(I.TRAINED_KINDS))
def test_trained_kinds_refuse_to_build_without_learning_rows(kind, data):
    _, xb, _ = data
    with pytest.raises(ValueError, match="xtrain"):
        I.build_index(kind, xb)
    with pytest.raises(ValueError, match="xtrain"):
        I.build_index(kind, xb, xtrain=None)


def test_ivf_pq_without_xtrain_raises_and_training_never_sees_the_database(data):
    xtrain, xb, _ = data
    with pytest.raises(ValueError, match="never trains on the database"):
        I.build_index("ivf_pq", xb, xtrain=None)
    # the learned part (IVF centroids) depends on xtrain only, not on which database is added
    a = I.build_index("ivf_flat", xb, xtrain=xtrain, nlist=8)
    b = I.build_index("ivf_flat", unit_rows(500, seed=9), xtrain=xtrain, nlist=8)
    centroids = lambda index: faiss.downcast_index(index.quantizer).reconstruct_n(0, 8)  # noqa: E731
    np.testing.assert_array_equal(centroids(a), centroids(b))
    with pytest.warns(UserWarning, match="shares memory"):
        I.build_index("sq8", xb, xtrain=xb[:1000])


def test_untrained_kinds_need_no_xtrain(data):
    _, xb, xq = data
    for kind in ("exact", "flat", "hnsw"):
        index = I.build_index(kind, xb)
        assert index.ntotal == len(xb)


def test_hnsw_recall_is_high_on_easy_data():
    xb, xq = clustered_rows(5000, seed=1), clustered_rows(50, seed=2)
    hnsw = I.build_index("hnsw", xb, hnsw_M=16, efConstruction=64)
    gt = I.exact_search(xq, xb, 10)[1]
    scores, ids = I.search(hnsw, xq, 10, efSearch=64)
    assert I.knn_recall(ids, gt) >= 0.95
    # inner-product metric: scores are the true inner products of the returned rows
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", xq, xb[ids]), atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


def test_pca_pq_scores_are_inner_products(data):
    xtrain, xb, xq = data
    # every dimension kept and a fine PQ (2 dimensions per 5-bit code): small quantisation error
    index = I.build_index("pca_pq", xb, xtrain=xtrain, pca_dim=D, pq_m=D // 2, pq_bits=5)
    scores, ids = I.search(index, xq, len(xb))  # every database row, to avoid the top-k selection bias
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    error = scores - np.einsum("qd,qkd->qk", xq, xb[ids])
    # raw squared L2 distances of unit rows, ≈ 2 − 2·IP, would be off by ~2 on average
    assert np.abs(error).mean() < 0.1
    assert I.knn_recall(ids[:, :10], I.exact_search(xq, xb, 10)[1]) >= 0.5


def test_measure_returns_sane_fields(data):
    xtrain, xb, xq = data
    flat = I.measure("flat", xb, xq, k=5, single_queries=5)
    assert flat["recall@5"] == 1.0 and flat["n"] == len(xb) and flat["d"] == D
    assert 4 * D <= flat["bytes_per_vector"] < 4 * D + 1  # float32 rows + a small header
    assert flat["build_s"] >= 0 and flat["ms_per_query_batch"] > 0 and flat["ms_per_query_single"] > 0
    pq = I.measure("ivf_pq", xb, xq, xtrain, k=5, nlist=8, pq_m=8, pq_bits=6, nprobe=8, single_queries=5)
    assert pq["nprobe"] == 8 and pq["pq_m"] == 8
    # 8 codes of 6 bits (6 bytes) + an 8-byte id per vector, far below 128 bytes of float32
    assert 14 <= pq["bytes_per_vector"] < 20
    assert 0 < pq["recall@5"] < 1
    gt = I.exact_search(xq, xb, 5)[1]
    again = I.measure("ivf_pq", xb, xq, xtrain, k=5, ground_truth_ids=gt, nlist=8, pq_m=8, pq_bits=6, nprobe=8)
    assert again["recall@5"] == pq["recall@5"]


def test_refine_reranks_ivf_pq_candidates(data):
    xtrain, xb, xq = data
    gt = I.exact_search(xq, xb, 10)[1]
    index = I.build_index("ivf_pq", xb, xtrain=xtrain, nlist=8, pq_m=4, pq_bits=6, refine="flat")
    coarse = I.knn_recall(I.search(index, xq, 10, nprobe=8, k_factor=1)[1], gt)
    refined = I.knn_recall(I.search(index, xq, 10, nprobe=8, k_factor=64)[1], gt)
    assert refined > coarse and refined >= 0.9


def test_knn_recall_and_argument_checks(data):
    assert I.knn_recall(np.array([[1, 2, 3], [4, 5, -1]]), np.array([[3, 2, 9], [4, 6, 7]])) == pytest.approx((2 / 3 + 1 / 3) / 2)
    xtrain, xb, xq = data
    flat = I.build_index("flat", xb)
    with pytest.raises(ValueError, match="nprobe"):
        I.search(flat, xq, 5, nprobe=4)
    with pytest.raises(ValueError, match="unexpected parameters"):
        I.build_index("hnsw", xb, nlist=8)
    with pytest.raises(ValueError, match="unknown index kind"):
        I.build_index("lsh", xb)
    with pytest.raises(ValueError, match="pq_m=5"):
        I.build_index("ivf_pq", xb, xtrain=xtrain, pq_m=5)


def test_each_kind_is_a_faiss_factory_string_with_its_defaults_filled():
    assert I.factory_string("flat", 64, 1000) == "Flat"
    assert I.factory_string("ivf_flat", 64, 1000, 3900) == "IVF100,Flat"  # min(4·√N, n_train/39)
    assert I.factory_string("ivf_pq", 64, 1000, 3900, nlist=8, refine="sq8") == "IVF8,PQ8x8np,Refine(SQ8)"
    assert I.factory_string("pca_pq", 64, 1000, 3900, pq_bits=6) == "PCA32,PQ4x6np"
    assert I.factory_string("hnsw", 64, 1000, hnsw_M=16) == "HNSW16,Flat"
    with pytest.raises(ValueError, match="refine must be one of"):
        I.factory_string("ivf_pq", 64, 1000, 3900, refine="pq")


def test_built_indexes_keep_the_classes_metric_and_build_knobs(data):
    xtrain, xb, _ = data
    pca = I.build_index("pca_pq", xb, xtrain=xtrain, pq_bits=6)
    assert pca.metric_type == faiss.METRIC_L2 and faiss.downcast_VectorTransform(pca.chain.at(0)).d_out == D // 2
    hnsw = I.build_index("hnsw", xb, efConstruction=80)
    assert hnsw.metric_type == faiss.METRIC_INNER_PRODUCT and hnsw.hnsw.efConstruction == 80
    ivfpq = I.build_index("ivf_pq", xb, xtrain=xtrain, nlist=8, pq_m=4, pq_bits=6)
    assert isinstance(ivfpq, faiss.IndexIVFPQ) and ivfpq.by_residual and not ivfpq.do_polysemous_training


def test_time_queries_reports_batch_and_median_single_times():
    calls = []

    def search(rows):
        calls.append(rows)
        return rows

    timing, out = I.time_queries(search, 10, repeats=2, single_queries=3)
    assert out == slice(None) and timing["ms_per_query_batch"] >= 0 and timing["ms_per_query_single"] >= 0
    # batch twice, one warm-up query, then each of 3 queries twice
    assert calls == [slice(None)] * 2 + [slice(0, 1)] + [slice(i, i + 1) for i in range(3) for _ in range(2)]
    timing, out = I.time_queries(search, 10, single_queries=0, batch=False)
    assert out is None and timing["ms_per_query_single"] is None
