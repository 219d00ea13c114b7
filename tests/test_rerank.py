"""retrievalkit.rerank: QE/DBA against explicit loops, diffusion against a dense solve, the toy
manifold where diffusion must beat Euclidean ranking, inductive independence, offline vs online."""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from retrievalkit import evaluate, rerank
from retrievalkit.index import exact_search


def _unit(n, d, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _moons(n=600, seed=0):
    """Two interleaved moons drawn on a small patch of the unit sphere (inner product ≈ −distance²)."""
    from sklearn.datasets import make_moons

    p, labels = make_moons(n, noise=0.06, random_state=seed)
    x = np.c_[0.3 * p, np.ones(n)].astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    queries = np.arange(0, n, 20)
    gnd = [(np.setdiff1d(np.flatnonzero(labels == labels[i]), [i]), np.array([i])) for i in queries]
    return x, queries, gnd


@pytest.fixture(scope="module")
def x():
    return _unit(200, 12)


# ----------------------------------------------------------------------------- query expansion
def _loop_expand(q, db, k, alpha, exclude=None):
    out = []
    for i, qi in enumerate(q):
        sims = db @ qi
        order = [j for j in np.argsort(-sims, kind="stable") if exclude is None or j != exclude[i]][:k]
        v = qi.astype(np.float64).copy()
        for j in order:
            v += (1.0 if alpha == 0 else max(sims[j], 0) ** alpha) * db[j]
        out.append(v / np.linalg.norm(v))
    return np.array(out)


def test_aqe_and_alpha_qe_match_explicit_loops(x):
    q = _unit(7, 12, seed=1)
    for k, alpha in ((1, 0.0), (5, 0.0), (5, 3.0), (10, 1.0)):
        assert_allclose(rerank.expand(q, x, k, alpha), _loop_expand(q, x, k, alpha), atol=1e-5)
        new = _loop_expand(q, x, k, alpha).astype(np.float32)
        scores, ids = rerank.alpha_qe(q, x, k, alpha)
        assert_allclose(scores, np.sort(new @ x.T, axis=1)[:, ::-1], atol=1e-5)
    # aqe = mean of the query and its top k (normalised)
    sims, ids = exact_search(q, x, 3)
    mean = (q + x[ids].sum(axis=1)) / 4
    assert_allclose(rerank.expand(q, x, 3), mean / np.linalg.norm(mean, axis=1, keepdims=True), atol=1e-6)


def test_alpha_qe_with_alpha_zero_is_average_qe(x):
    q = _unit(9, 12, seed=2)
    a, b = rerank.alpha_qe(q, x, 4, alpha=0.0), rerank.average_qe(q, x, 4)
    np.testing.assert_array_equal(a[1], b[1])
    assert_allclose(a[0], b[0])
    # both equal a search with the plain mean of the query and its top-4, written out here
    top4 = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :4]
    mean = q + x[top4].sum(axis=1)
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    assert_allclose(b[0], -np.sort(-(mean @ x.T), axis=1)[:, : b[0].shape[1]], atol=1e-5)
    assert not np.array_equal(rerank.alpha_qe(q, x, 4, alpha=3.0)[0], a[0])  # α matters once > 0


def test_exclusion_drops_the_querys_own_row(x):
    rows = np.arange(5)
    assert_allclose(rerank.expand(x[rows], x, 4, 3.0, exclude=rows), _loop_expand(x[rows], x, 4, 3.0, rows), atol=1e-5)
    sims, ids = rerank.knn(x[rows], x, 4, exclude=rows)
    assert not (ids == rows[:, None]).any() and ids.shape == (5, 4)


def test_dba_matches_explicit_loop(x):
    for k, alpha in ((3, 0.0), (5, 3.0)):
        loop = _loop_expand(x, x, k, alpha, exclude=np.arange(len(x)))
        assert_allclose(rerank.dba(x, k, alpha), loop, atol=1e-5)


def test_bad_arguments_give_clear_errors(x):
    with pytest.raises(ValueError, match="larger than the 200 database rows"):
        rerank.average_qe(x[:2], x, k=201)
    with pytest.raises(ValueError, match="larger than the 199"):
        rerank.dba(x, k=200)
    with pytest.raises(ValueError, match="must be a positive integer"):
        rerank.knn(x[:2], x, 0)
    for alpha in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            rerank.Diffusion(k=5, alpha=alpha)
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            rerank.cg(rerank.normalize(rerank.knn_graph(x, 5)), np.ones(len(x)), alpha)
    with pytest.raises(ValueError, match="graph k=200 is larger"):
        rerank.Diffusion(k=200, alpha=0.9).fit(x)
    with pytest.raises(ValueError, match="unknown similarity"):
        rerank.Diffusion(k=5, similarity="cosine")
    with pytest.raises(ValueError, match="alpha .* must be ≥ 0"):
        rerank.alpha_qe(x[:2], x, 3, alpha=-1)


# ----------------------------------------------------------------------------- graph
def test_graph_is_symmetric_mutual_and_normalised(x):
    W = rerank.knn_graph(x, 6, mutual=True).toarray()
    assert_allclose(W, W.T)
    assert np.all(np.diag(W) == 0)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1)[:, :6]
    is_nn = np.zeros_like(W, dtype=bool)
    np.put_along_axis(is_nn, top, True, 1)
    np.testing.assert_array_equal(W > 0, is_nn & is_nn.T & (sims > 0))  # mutual neighbours, positive sims
    assert_allclose(W[W > 0], np.maximum(sims[W > 0], 0) ** 3, rtol=1e-5)
    Wu = rerank.knn_graph(x, 6, mutual=False).toarray()
    assert (Wu > 0).sum() > (W > 0).sum()
    S = rerank.normalize(rerank.knn_graph(x, 6)).toarray()
    d = W.sum(axis=1)
    with np.errstate(divide="ignore"):
        inv = np.where(d > 0, 1 / np.sqrt(d), 0)
    assert_allclose(S, inv[:, None] * W * inv[None, :], atol=1e-6)
    assert np.abs(np.linalg.eigvalsh(S)).max() <= 1 + 1e-5
    g = rerank.affinity(np.array([1.0, 0.5]), "gaussian", sigma=1.0)
    assert_allclose(g, np.exp(-np.array([0.0, 1.0])), rtol=1e-6)


# ----------------------------------------------------------------------------- solvers
def test_cg_equals_dense_linear_solve(x):
    S = rerank.normalize(rerank.knn_graph(x, 8))
    Y = np.random.default_rng(3).random((len(x), 3))
    for alpha in (0.5, 0.9, 0.99):
        dense = np.linalg.solve(np.eye(len(x)) - alpha * S.toarray().astype(np.float64), Y)
        assert_allclose(rerank.cg(S, Y, alpha, tol=1e-10), dense, rtol=1e-7, atol=1e-9)
        assert_allclose(rerank.cg(S, Y[:, 0], alpha, tol=1e-10), dense[:, 0], rtol=1e-7, atol=1e-9)


def test_cg_warns_when_it_stops_before_convergence(x):
    S = rerank.normalize(rerank.knn_graph(x, 8))
    with pytest.warns(RuntimeWarning, match="did not reach tol"):
        rerank.cg(S, np.ones(len(x)), 0.99, tol=1e-12, max_iter=2)


def test_iteration_converges_to_the_closed_form(x):
    S = rerank.normalize(rerank.knn_graph(x, 8))
    y = np.zeros(len(x))
    y[[0, 5, 9]] = [1.0, 0.5, 0.25]
    closed = rerank.cg(S, y, 0.9, tol=1e-12)
    few = rerank.iterate(S, y, 0.9, max_iter=5)
    many = rerank.iterate(S, y, 0.9, tol=1e-12)
    assert_allclose(many, (1 - 0.9) * closed, rtol=1e-8, atol=1e-12)
    assert np.abs(few - 0.1 * closed).max() > 1e3 * np.abs(many - 0.1 * closed).max()


def test_inductive_diffusion_does_not_depend_on_other_queries(x):
    q = _unit(12, 12, seed=4)
    for solver in ("cg", "iterative"):
        d = rerank.Diffusion(k=8, alpha=0.95, query_k=5, solver=solver).fit(x)
        s_all, i_all = d.search(q)
        s_one, i_one = d.search(q[3:4])
        s_other, i_other = d.search(np.concatenate([q[3:4], _unit(30, 12, seed=9)]))
        np.testing.assert_array_equal(i_all[3], i_one[0])
        np.testing.assert_array_equal(i_other[0], i_one[0])
        assert_allclose(s_all[3], s_one[0], rtol=1e-6, atol=1e-9)
    # the Gaussian affinity's σ is fixed at fit time: seeds do not depend on the query batch either
    g = rerank.Diffusion(k=8, alpha=0.95, query_k=5, similarity="gaussian").fit(x)
    alone = g.seeds(q[3:4] @ x.T)
    batch = g.seeds(np.concatenate([q[3:4], -q[4:12]]) @ x.T)[:1]  # far-away companions: other median
    assert_allclose(batch, alone, rtol=1e-6)
    np.testing.assert_array_equal(g.search(q)[1][3], g.search(q[3:4])[1][0])
    # …whereas joint (transductive) diffusion does change when other queries join the graph
    j1 = rerank.joint_search(q[3:4], x, 8, 0.95)
    j2 = rerank.joint_search(np.concatenate([q[3:4], q[3:4] + 0.01 * _unit(1, 12, 5)]), x, 8, 0.95)
    assert not np.allclose(j1[0][0], j2[0][0])


def test_diffusion_beats_euclidean_ranking_on_two_moons():
    x, queries, gnd = _moons()
    euclid = evaluate.mean_ap(exact_search(x[queries], x)[1], gnd)
    for sim in ("ip", "gaussian"):
        d = rerank.Diffusion(k=15, alpha=0.99, query_k=5, similarity=sim).fit(x)
        diffused = evaluate.mean_ap(d.search(x[queries], exclude=queries)[1], gnd)
        assert diffused > euclid + 0.1, (sim, diffused, euclid)
    for max_block in (4000, 0):  # exact blocks, then every component low-rank
        offline = rerank.OfflineDiffusion(k=15, alpha=0.99, query_k=5, rank=64, max_block=max_block).fit(x)
        assert evaluate.mean_ap(offline.search(x[queries], exclude=queries)[1], gnd) > euclid + 0.1
    joint = rerank.joint_search(x[queries], x, 15, 0.99, exclude=queries)
    assert evaluate.mean_ap(joint[1], gnd) > euclid + 0.1


def test_offline_variant_agrees_with_online_cg():
    # four tight clusters (plus noise rows): a graph with several connected components
    centres = _unit(4, 12, seed=7)
    x = centres.repeat(50, axis=0) + 0.15 * _unit(200, 12, seed=8)
    x = np.concatenate([x, _unit(40, 12, seed=10)])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = np.concatenate([centres + 0.1 * _unit(4, 12, seed=11), _unit(11, 12, seed=6)])
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    online = rerank.Diffusion(k=8, alpha=0.9, query_k=5, tol=1e-10).fit(x)
    s_on, i_on = online.search(q)
    # truncation disabled: exact block inverses, same scores and ranking as CG
    exact = rerank.OfflineDiffusion(k=8, alpha=0.9, query_k=5, rank=None).fit(x, S=online.S_)
    s_ex, i_ex = exact.search(q)
    assert exact.n_spectral == 0
    assert_allclose(s_ex, s_on, rtol=1e-4, atol=1e-6)
    assert (i_ex[:, :20] == i_on[:, :20]).mean() > 0.99
    # the graph has several components; each is a block of the inverse
    from scipy.sparse.csgraph import connected_components

    n_comp = connected_components(online.S_, directed=False)[0]
    assert len(exact.blocks_) == n_comp > 1
    # every component low-rank: top-10 still mostly agrees, and the memory is the eigenvectors
    low = rerank.OfflineDiffusion(k=8, alpha=0.9, query_k=5, rank=40, max_block=0).fit(x, S=online.S_)
    _, i_low = low.search(q)
    overlap = np.mean([len(np.intersect1d(a[:10], b[:10])) / 10 for a, b in zip(i_low, i_on)])
    assert overlap >= 0.8, overlap
    assert low.n_spectral == sum(len(nodes) > 41 for nodes, _, _ in low.blocks_) >= 1
    assert low.nbytes < exact.nbytes
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        rerank.OfflineDiffusion(k=8, alpha=0.9, rank=0)


def test_query_seeds_are_top_k_affinities(x):
    y = rerank.query_seeds(x[:3], x, 4, exclude=np.arange(3)).toarray()
    assert (np.count_nonzero(y, axis=1) == 4).all() and np.all(np.diag(y[:, :3]) == 0)
    d = rerank.Diffusion(k=5, alpha=0.9, query_k=4).fit(x)
    assert_allclose(d.seeds(x[:3] @ x.T, exclude=np.arange(3)), y, rtol=1e-6)
