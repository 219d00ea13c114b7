"""One search convention (Survey §2.1.2): queries first, ``(scores, ids)`` best first, equal scores → lower id.

These tests check that every search of the package follows it: float kNN (chunked or not, with
exclusions, in float32 or float64), faiss's flat index, Hamming search (faiss and the NumPy
reference), and the leave-one-out mAP built on top of it.
"""
import numpy as np
import pytest

from retrievalkit import index as I


def _tied(n=60, d=4, seed=0):
    """Rows drawn from 5 small-integer vectors: scores are exact, and every query has many equal ones."""
    rng = np.random.default_rng(seed)
    base = rng.integers(-3, 4, (5, d)).astype(np.float32)
    return base[rng.integers(0, 5, n)]


def _reference(q, db, k, exclude=None):
    s = q.astype(np.float64) @ db.T.astype(np.float64)
    if exclude is not None:
        s[np.arange(len(q)), exclude] = -np.inf
    ids = np.argsort(-s, axis=1, kind="stable")[:, :k]  # stable: equal scores keep the lower id
    return ids


@pytest.mark.parametrize("k, qc, dc", [(7, 5, 11), (13, 64, 64), (1, 3, 4), (None, 7, 9)])
def test_knn_breaks_ties_by_lower_id_across_chunk_boundaries(k, qc, dc):
    db = _tied()
    q = db[:20]
    _, ids = I.knn(q, db, k, query_chunk=qc, db_chunk=dc)
    np.testing.assert_array_equal(ids, _reference(q, db, k or len(db)))
    assert I.exact_search is I.knn


def test_knn_excludes_rows_and_counts_them_out_of_the_database():
    db = _tied()
    self_ = np.arange(len(db))
    scores, ids = I.knn(db, db, 10, exclude=self_, db_chunk=16)
    np.testing.assert_array_equal(ids, _reference(db, db, 10, exclude=self_))
    assert not (ids == self_[:, None]).any() and np.isfinite(scores).all()
    assert I.knn(db, db, exclude=self_)[1].shape == (60, 59)
    with pytest.raises(ValueError, match="larger than the 59"):
        I.knn(db, db, 60, exclude=self_)


def test_knn_in_float64_keeps_float64_scores():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((30, 8))
    scores, ids = I.knn(x, x, 5, dtype=np.float64)
    assert scores.dtype == np.float64
    np.testing.assert_allclose(scores, np.take_along_axis(x @ x.T, ids, 1), rtol=0, atol=1e-12)


def test_faiss_flat_and_exact_index_return_the_same_ranking():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(2)
    xb = rng.standard_normal((500, 16)).astype(np.float32)
    xq = rng.standard_normal((20, 16)).astype(np.float32)
    s_flat, i_flat = I.search(I.build_index("flat", xb), xq, 10)
    s_knn, i_knn = I.knn(xq, xb, 10)
    np.testing.assert_array_equal(i_flat, i_knn)
    np.testing.assert_allclose(s_flat, s_knn, atol=1e-5)
    np.testing.assert_array_equal(I.search(I.build_index("exact", xb), xq, 10)[1], i_knn)


def _loop_loo_map(x, labels, mode="trapezoid"):
    """Leave-one-out mAP by an explicit loop: each row ranks the others by inner product (stable)."""
    aps = []
    for q in range(len(x)):
        others = [j for j in np.argsort(-(x @ x[q]).astype(np.float64), kind="stable") if j != q]
        hits = np.array([labels[j] == labels[q] for j in others])
        if not hits.any():
            continue
        ranks = np.flatnonzero(hits)  # 0-based ranks of the positives
        precision = (np.arange(len(ranks)) + 1) / (ranks + 1)
        if mode == "finite":
            aps.append(precision.mean())
        else:  # trapezoid: mean of the precision before and at each positive (Philbin et al.)
            before = np.where(ranks > 0, np.arange(len(ranks)) / np.maximum(ranks, 1), 1.0)
            aps.append(((before + precision) / 2).mean())
    return float(np.mean(aps))


@pytest.mark.parametrize("mode", ["trapezoid", "finite"])
def test_leave_one_out_map_equals_a_loop_and_its_scores_form(mode):
    from retrievalkit import evaluate

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 6, 80)
    x = (rng.integers(-2, 3, (80, 6)) + 2 * np.eye(6)[labels]).astype(np.float32)  # integer scores: many ties
    want = _loop_loo_map(x, labels, mode)
    assert evaluate.leave_one_out_map(x, labels, mode=mode) == pytest.approx(want, abs=1e-12)
    assert evaluate.leave_one_out_map(labels=labels, scores=x @ x.T, mode=mode) == pytest.approx(want, abs=1e-12)


def test_hamming_search_faiss_numpy_and_knn_on_signs_agree():
    from retrievalkit import hashing as H

    rng = np.random.default_rng(4)
    signs = np.where(rng.random((3000, 16)) < 0.5, -1, 1)  # 16 bits: thousands of exact ties
    q = signs[:25]
    s_faiss, i_faiss = H.hamming_search(q, signs, 40, packed=False)
    s_numpy, i_numpy = H.hamming_search_numpy(q, signs, 40, packed=False)
    s_knn, i_knn = I.knn(q, signs, 40)
    np.testing.assert_array_equal(i_faiss, i_knn)
    np.testing.assert_array_equal(i_numpy, i_knn)
    np.testing.assert_array_equal(s_faiss, s_knn.astype(np.int32))  # K − 2·Hamming = ±1 inner product
    np.testing.assert_array_equal(s_numpy, s_faiss)


def test_knn_affinity_is_the_one_way_knn_graph_in_float64():
    from retrievalkit.finetune.unsupervised import knn_affinity

    rng = np.random.default_rng(5)
    x = rng.standard_normal((50, 5))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    k, gamma = 4, 3.0
    sim = x @ x.T
    a = np.zeros_like(sim)
    for i in range(len(x)):  # each row's k nearest others, weight max(0, s)^γ, kept if either end chose it
        nn_ = [j for j in np.argsort(-sim[i], kind="stable") if j != i][:k]
        a[i, nn_] = np.maximum(sim[i, nn_], 0) ** gamma
    a = np.maximum(a, a.T)
    d = a.sum(axis=1)
    inv = np.where(d > 0, 1 / np.sqrt(np.where(d > 0, d, 1)), 0)
    s = knn_affinity(x, k, gamma)
    assert s.dtype == np.float64
    np.testing.assert_allclose(s.toarray(), inv[:, None] * a * inv[None, :], rtol=0, atol=1e-12)


def test_diffusion_seeds_break_ties_by_lower_id():
    from retrievalkit import rerank

    d = rerank.Diffusion(k=2, alpha=0.9, query_k=3, gamma=1.0)
    y = d.seeds(np.array([[0.5, 0.5, 0.5, 0.5, 0.9, 0.5, 0.5, 0.5, 0.9]]), exclude=[8])
    np.testing.assert_array_equal(np.flatnonzero(y[0]), [0, 1, 4])  # 8 excluded; of the 0.5 ties, 0 and 1
