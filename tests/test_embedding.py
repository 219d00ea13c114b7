"""Embeddings (retrievalkit.embedding): BoW / VLAD / Fisher vectors against explicit loops, codebooks, inverted file.

The references below loop over images, descriptors and words one at a time, in float64, straight
from the survey's Eqs. 2.4–2.11, so the vectorised encoders are checked against the formulas.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from retrievalkit import embedding as emb
from retrievalkit.index import exact_search
from retrievalkit.whitening import NotFittedError, PCAWhitening

EPS = 1e-6  # the package's L2 guard: v / (‖v‖ + 1e-6)
COUNTS = [7, 0, 1, 13, 4, 9]  # image 1 has no descriptors


def random_images(counts=COUNTS, d=5, seed=0, centres=None):
    rng = np.random.default_rng(seed)
    if centres is None:
        return [rng.normal(size=(t, d)).astype(np.float32) for t in counts]
    return [(centres[rng.integers(len(centres), size=t)] + rng.normal(scale=0.7, size=(t, d))).astype(np.float32)
            for t in counts]


def l2(v):
    return v / (np.linalg.norm(v) + EPS)


def signed_power(v, alpha):
    return np.sign(v) * np.abs(v) ** alpha


def nearest(x, centroids):
    return int(np.argmin([np.sum((x - c) ** 2) for c in centroids]))


# --------------------------------------------------------------------------- references (explicit loops)
def loop_bow(images, centroids, idf=None, normalize=True):
    out = []
    for X in images:
        g = np.zeros(len(centroids))
        for x in X:
            g[nearest(x, centroids)] += 1.0  # Eq. 2.5
        if len(X):
            g /= len(X)  # Eq. 2.4
        if idf is not None:
            g *= idf
        out.append(l2(g) if normalize else g)
    return np.array(out)


def loop_vlad(images, centroids, intra=True, alpha=0.5, normalize=True):
    k, d = centroids.shape
    out = []
    for X in images:
        v = np.zeros((k, d))
        for x in X:
            j = nearest(x, centroids)
            v[j] += x - centroids[j]  # Eq. 2.7
        if len(X):
            v /= len(X)
        if intra:
            v = np.array([l2(block) for block in v])
        v = v.ravel()  # Eq. 2.8, word-major
        if alpha is not None:
            v = signed_power(v, alpha)
        out.append(l2(v) if normalize else v)
    return np.array(out)


def loop_fisher(images, w, mu, var, parts=("mu", "sigma"), alpha=0.5, normalize=True):
    k, d = mu.shape
    sigma = np.sqrt(var)
    out = []
    for X in images:
        T = len(X)
        g_w, g_mu, g_sigma = np.zeros(k), np.zeros((k, d)), np.zeros((k, d))
        for x in X.astype(np.float64):
            log_p = [math.log(w[j]) - 0.5 * np.sum(np.log(2 * np.pi * var[j]) + (x - mu[j]) ** 2 / var[j]) for j in range(k)]
            top = max(log_p)
            gamma = np.exp(np.array(log_p) - top)
            gamma /= gamma.sum()  # Eq. 2.9
            for j in range(k):
                g_w[j] += gamma[j] - w[j]
                g_mu[j] += gamma[j] * (x - mu[j]) / sigma[j]
                g_sigma[j] += gamma[j] * ((x - mu[j]) ** 2 / var[j] - 1)
        if T:  # Eq. 2.10
            g_w /= T * np.sqrt(w)
            g_mu /= T * np.sqrt(w)[:, None]
            g_sigma /= T * np.sqrt(2 * w)[:, None]
        blocks = {"w": g_w, "mu": g_mu.ravel(), "sigma": g_sigma.ravel()}
        v = np.concatenate([blocks[p] for p in ("w", "mu", "sigma") if p in parts])  # Eq. 2.11 order
        if alpha is not None:
            v = signed_power(v, alpha)
        out.append(l2(v) if normalize else v)
    return np.array(out)


@pytest.fixture
def kmeans_book():
    rng = np.random.default_rng(42)
    return emb.KMeansCodebook.from_centroids(rng.normal(size=(4, 5)).astype(np.float32))


@pytest.fixture
def gmm_book():
    rng = np.random.default_rng(7)
    means = rng.normal(scale=1.5, size=(3, 5))
    variances = rng.uniform(0.5, 2.0, size=(3, 5))
    return emb.GMMCodebook.from_params([0.5, 0.3, 0.2], means, variances)


# --------------------------------------------------------------------------- BoW
@pytest.mark.parametrize("normalize", [True, False])
def test_bow_term_frequencies_match_loop(kmeans_book, normalize):
    images = random_images()
    local = emb.LocalDescriptors.from_list(images)
    counts = emb.BoW(kmeans_book).counts(local)
    assert counts.dtype == np.int64 and (counts.sum(axis=1) == COUNTS).all()
    got = emb.BoW(kmeans_book, weighting="tf", normalize=normalize).encode(local)
    assert got.dtype == np.float32 and got.shape == (len(COUNTS), 4)
    np.testing.assert_allclose(got, loop_bow(images, kmeans_book.centroids_, normalize=normalize), rtol=1e-5, atol=1e-7)
    assert np.isfinite(got).all() and not got[1].any()  # no descriptors → zero, not NaN
    if not normalize:  # Eq. 2.4: frequencies of a non-empty image sum to 1
        np.testing.assert_allclose(got[[0, 2, 3, 4, 5]].sum(axis=1), 1, rtol=1e-6)


def test_bow_tfidf_matches_loop_and_sparse_equals_dense(kmeans_book):
    learn, test = random_images(seed=1), random_images(seed=2)
    bow = emb.BoW(kmeans_book).fit_idf(emb.LocalDescriptors.from_list(learn), split="learn")
    got = bow.encode(emb.LocalDescriptors.from_list(test))
    np.testing.assert_allclose(got, loop_bow(test, kmeans_book.centroids_, idf=bow.idf_), rtol=1e-5, atol=1e-7)
    sparse = bow.encode(emb.LocalDescriptors.from_list(test), sparse=True)
    assert sparse.format == "csr"
    np.testing.assert_array_equal(sparse.toarray(), got)


def test_idf_is_learned_from_the_given_learning_images_only():
    # Words are the unit vectors; every descriptor sits on a word, so occurrences are known exactly.
    book = emb.KMeansCodebook.from_centroids(np.eye(4, dtype=np.float32))
    e = np.eye(4, dtype=np.float32)
    learn = [e[[0, 1]], e[[0, 0, 1]], e[[0, 2]], e[[0]]]  # word 0 in 4 images, 1 in 2, 2 in 1, 3 in none
    bow = emb.BoW(book).fit_idf(emb.LocalDescriptors.from_list(learn), split="learn")
    expected = np.log([4 / 4, 4 / 2, 4 / 1, 4 / 1])  # log(N / n_k), unseen word: n_k = 1
    np.testing.assert_allclose(bow.idf_, expected, rtol=1e-6)
    assert bow.n_learning_images_ == 4
    # Encoding test images — full of word 3 — must not touch the learned idf.
    test = emb.LocalDescriptors.from_list([e[[3, 3, 3]], e[[3, 1]]])
    before = bow.idf_.copy()
    bow.encode(test)
    np.testing.assert_array_equal(bow.idf_, before)
    # And a different learning set gives a different idf (it is learned from the data passed in).
    other = emb.BoW(book).fit_idf(emb.LocalDescriptors.from_list([e[[3]], e[[3, 1]]]), split="learn")
    assert not np.allclose(other.idf_, bow.idf_)
    with pytest.raises(ValueError, match="LEARNING split"):
        emb.BoW(book).fit_idf(test, split="test")
    with pytest.raises(NotFittedError, match="fit_idf"):
        emb.BoW(book).encode(test)


# --------------------------------------------------------------------------- VLAD
@pytest.mark.parametrize("intra, alpha, normalize", [(True, 0.5, True), (False, None, False), (True, None, True), (False, 0.5, True)])
def test_vlad_matches_loop(kmeans_book, intra, alpha, normalize):
    images = random_images()
    vlad = emb.VLAD(kmeans_book, intra_norm=intra, alpha=alpha, normalize=normalize)
    got = vlad.encode(emb.LocalDescriptors.from_list(images))
    assert got.shape == (len(COUNTS), vlad.dim) == (len(COUNTS), 20) and got.dtype == np.float32
    np.testing.assert_allclose(got, loop_vlad(images, kmeans_book.centroids_, intra, alpha, normalize), rtol=1e-4, atol=1e-6)
    assert np.isfinite(got).all() and not got[1].any()


def test_vlad_normalisation_steps_change_the_vector(kmeans_book):
    local = emb.LocalDescriptors.from_list(random_images())
    plain = emb.VLAD(kmeans_book, intra_norm=False, alpha=None).encode(local)
    intra = emb.VLAD(kmeans_book, intra_norm=True, alpha=None).encode(local)
    power = emb.VLAD(kmeans_book, intra_norm=False, alpha=0.5).encode(local)
    assert not np.allclose(plain, intra) and not np.allclose(plain, power)
    np.testing.assert_allclose(np.linalg.norm(plain[[0, 2, 3]], axis=1), 1, atol=1e-5)
    # intra-normalised blocks have unit norm before the global L2: √(number of visited words)
    raw_intra = emb.VLAD(kmeans_book, intra_norm=True, alpha=None, normalize=False).encode(local).reshape(len(COUNTS), 4, 5)
    norms = np.linalg.norm(raw_intra, axis=2)
    assert np.allclose(norms[norms > 0], 1, atol=1e-5)


def test_encoders_accept_unsorted_flat_rows_with_an_image_index(kmeans_book, gmm_book):
    local = emb.LocalDescriptors.from_list(random_images())
    perm = np.random.default_rng(0).permutation(local.n_descriptors)
    rows, index = local.descriptors[perm], local.image_index[perm]
    for encoder in (emb.VLAD(kmeans_book), emb.FisherVector(gmm_book), emb.BoW(kmeans_book, weighting="tf")):
        np.testing.assert_allclose(encoder.encode(rows, index, local.n_images), encoder.encode(local), rtol=1e-5, atol=1e-6)
    # trailing images without descriptors are kept when n_images says so
    assert emb.VLAD(kmeans_book).encode(rows, index, local.n_images + 2).shape[0] == local.n_images + 2


def test_encoding_in_chunks_of_images_equals_one_chunk(kmeans_book, gmm_book, monkeypatch):
    from retrievalkit.embedding import local as local_module

    local = emb.LocalDescriptors.from_list(random_images())
    encoders = (emb.VLAD(kmeans_book), emb.FisherVector(gmm_book, parts=("w", "mu", "sigma")))
    whole = [e.encode(local) for e in encoders]
    monkeypatch.setattr(local_module, "OUTPUT_BUDGET", 50)  # ≈ one or two images per chunk
    for encoder, expected in zip(encoders, whole):
        np.testing.assert_array_equal(encoder.encode(local), expected)
        assert encoder.encode(local.slice_images(0, 0)).shape == (0, encoder.dim)


# --------------------------------------------------------------------------- Fisher vectors
@pytest.mark.parametrize("parts", [("mu", "sigma"), ("w", "mu", "sigma"), ("w",), ("sigma", "mu")])
def test_fisher_vectors_match_loop(gmm_book, parts):
    images = random_images(centres=gmm_book.means_)
    fv = emb.FisherVector(gmm_book, parts=parts)
    got = fv.encode(emb.LocalDescriptors.from_list(images))
    ref = loop_fisher(images, gmm_book.weights_, gmm_book.means_, gmm_book.variances_, parts=parts)
    assert got.shape == ref.shape == (len(COUNTS), fv.dim) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    assert np.isfinite(got).all() and not got[1].any()
    raw = emb.FisherVector(gmm_book, parts=parts, alpha=None, normalize=False).encode(emb.LocalDescriptors.from_list(images))
    ref_raw = loop_fisher(images, gmm_book.weights_, gmm_book.means_, gmm_book.variances_, parts, alpha=None, normalize=False)
    np.testing.assert_allclose(raw, ref_raw, rtol=1e-4, atol=1e-5)


def test_fisher_default_dimension_is_2KD(gmm_book):
    assert emb.FisherVector(gmm_book).dim == 2 * 3 * 5
    with pytest.raises(ValueError):
        emb.FisherVector(gmm_book, parts=("pi",))


def test_fisher_gradients_on_a_hand_computed_two_component_gmm():
    # GMM: w = (0.6, 0.4); μ_1 = (0, 0), μ_2 = (2, 1); σ²_1 = (1, 1), σ²_2 = (0.5, 2). T = 3 descriptors.
    w = [0.6, 0.4]
    mu = [[0.0, 0.0], [2.0, 1.0]]
    var = [[1.0, 1.0], [0.5, 2.0]]
    xs = [[0.5, -0.2], [1.5, 1.0], [1.0, 0.3]]

    def density(x, m, v):  # N(x; m, diag v) in 2-D
        return math.prod(math.exp(-(x[d] - m[d]) ** 2 / (2 * v[d])) / math.sqrt(2 * math.pi * v[d]) for d in range(2))

    T = len(xs)
    gammas = []
    for x in xs:  # Eq. 2.9: γ_k(x) = w_k p_k(x) / (w_1 p_1(x) + w_2 p_2(x))
        joint = [w[k] * density(x, mu[k], var[k]) for k in range(2)]
        gammas.append([j / sum(joint) for j in joint])
    assert 0.05 < gammas[2][0] < 0.95  # a genuinely soft assignment
    # Eq. 2.10, written out component by component:
    #   G_w_k    = 1/(T √w_k)    Σ_t (γ_tk − w_k)
    #   G_μ_kd   = 1/(T √w_k)    Σ_t γ_tk (x_td − μ_kd) / σ_kd
    #   G_σ_kd   = 1/(T √(2w_k)) Σ_t γ_tk [(x_td − μ_kd)² / σ²_kd − 1]
    g_w = [sum(g[k] - w[k] for g in gammas) / (T * math.sqrt(w[k])) for k in range(2)]
    g_mu = [[sum(g[k] * (x[d] - mu[k][d]) / math.sqrt(var[k][d]) for g, x in zip(gammas, xs)) / (T * math.sqrt(w[k]))
             for d in range(2)] for k in range(2)]
    g_sigma = [[sum(g[k] * ((x[d] - mu[k][d]) ** 2 / var[k][d] - 1) for g, x in zip(gammas, xs)) / (T * math.sqrt(2 * w[k]))
                for d in range(2)] for k in range(2)]

    gmm = emb.GMMCodebook.from_params(w, mu, var)
    np.testing.assert_allclose(gmm.posteriors(np.array(xs, np.float32)), gammas, rtol=1e-5)
    fv = emb.FisherVector(gmm, parts=("w", "mu", "sigma"), alpha=None, normalize=False)
    grads = fv.gradients(np.array(xs, np.float32), np.zeros(3, np.int64), 1)
    np.testing.assert_allclose(grads["w"][0], g_w, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads["mu"][0], g_mu, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads["sigma"][0], g_sigma, rtol=1e-5, atol=1e-7)
    # Eq. 2.11 layout: [G_w1, G_w2, G_μ1 (2), G_μ2 (2), G_σ1 (2), G_σ2 (2)]
    vector = fv.encode(np.array(xs, np.float32), np.zeros(3, np.int64), 1)[0]
    expected = np.concatenate([g_w, np.ravel(g_mu), np.ravel(g_sigma)])
    np.testing.assert_allclose(vector, expected, rtol=1e-5, atol=1e-7)
    # the improved FV: signed square root, then L2
    improved = emb.FisherVector(gmm, parts=("w", "mu", "sigma")).encode(np.array(xs, np.float32), np.zeros(3, np.int64), 1)[0]
    np.testing.assert_allclose(improved, l2(signed_power(expected, 0.5)), rtol=1e-5, atol=1e-7)


def test_gmm_posteriors_are_stable_far_from_every_component():
    rng = np.random.default_rng(0)
    gmm = emb.GMMCodebook.from_params([0.5, 0.5], rng.normal(size=(2, 64)), np.full((2, 64), 0.1))
    X = np.stack([np.full(64, 50.0), -np.full(64, 80.0), gmm.means_[1]]).astype(np.float32)
    gamma = gmm.posteriors(X)  # log-likelihoods around -1e6: plain exp() would underflow to 0/0
    assert np.isfinite(gamma).all()
    np.testing.assert_allclose(gamma.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(gamma[2], [0, 1], atol=1e-6)


def test_gmm_posteriors_match_scikit_learn():
    from sklearn.mixture import GaussianMixture

    X = np.concatenate(random_images(counts=[150], d=4, seed=3, centres=np.array([[0, 0, 0, 0], [2, 2, 0, 1.0]])))
    book = emb.GMMCodebook(k=2, seed=0).fit(X, split="learn")
    reference = GaussianMixture(n_components=2, covariance_type="diag", random_state=0).fit(X.astype(np.float64))
    np.testing.assert_allclose(book.means_, reference.means_)
    np.testing.assert_allclose(book.posteriors(X), reference.predict_proba(X), atol=1e-5)


def test_per_image_sums_match_loops_across_padded_chunks():
    from retrievalkit.embedding.local import sum_by_group, weighted_sums_per_image

    rng = np.random.default_rng(1)
    counts = [3, 0, 5, 1, 5, 0, 2]
    local = emb.LocalDescriptors.from_list([rng.normal(size=(t, 4)) for t in counts])
    weights = rng.random((local.n_descriptors, 3)).astype(np.float32)
    expected = np.zeros((len(counts), 3, 4))
    for t in range(local.n_descriptors):
        expected[local.image_index[t]] += np.outer(weights[t], local.descriptors[t])
    for budget in (1, 40, 10**6):  # one image per chunk, a few, all at once
        got = weighted_sums_per_image(local, weights, local.descriptors, budget=budget)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    groups = rng.integers(5, size=local.n_descriptors)
    by_loop = np.zeros((5, 4))
    for t, g in enumerate(groups):
        by_loop[g] += local.descriptors[t]
    np.testing.assert_allclose(sum_by_group(local.descriptors, groups, 5), by_loop, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- codebooks
@pytest.mark.parametrize("Book", [emb.KMeansCodebook, emb.GMMCodebook])
def test_codebooks_refuse_anything_but_the_learning_split(Book):
    X = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    for split in ("test", "db", "query", "all"):
        with pytest.raises(ValueError, match="LEARNING split"):
            Book(k=3).fit(X, split=split)
    with pytest.raises(ValueError, match="split='learn'"):
        Book(k=3).fit(X)  # undeclared: refused too
    with pytest.raises(NotFittedError):
        Book(k=3).save("never-written.npz")
    assert Book(k=3).fit(X, split="learn").n_train_ == 60


def test_kmeans_codebook_is_reproducible_with_its_seed():
    X = np.concatenate(random_images(counts=[400], d=8, seed=5))
    a = emb.KMeansCodebook(k=6, n_iter=10, seed=3).fit(X, split="learn")
    b = emb.KMeansCodebook(k=6, n_iter=10, seed=3).fit(X, split="learn")
    c = emb.KMeansCodebook(k=6, n_iter=10, seed=4).fit(X, split="learn")
    np.testing.assert_array_equal(a.centroids_, b.centroids_)
    assert not np.allclose(a.centroids_, c.centroids_)
    assert a.centroids_.shape == (6, 8) and a.centroids_.dtype == np.float32
    # assignment = nearest centroid
    brute = np.argmin(((X[:, None] - a.centroids_[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(a.assign(X), brute)
    # subsampling to max_train is seeded as well
    s1 = emb.KMeansCodebook(k=6, n_iter=5, seed=3, max_train=100).fit(X, split="learn")
    s2 = emb.KMeansCodebook(k=6, n_iter=5, seed=3, max_train=100).fit(X, split="learn")
    assert s1.n_train_ == 100 and s1.n_available_ == 400
    np.testing.assert_array_equal(s1.centroids_, s2.centroids_)
    with pytest.raises(ValueError, match="at least"):
        emb.KMeansCodebook(k=50).fit(X[:10], split="learn")


def test_gmm_codebook_save_load_round_trip(tmp_path):
    X = np.concatenate(random_images(counts=[200], d=4, seed=6))
    book = emb.GMMCodebook(k=3, seed=1, max_train=150).fit(X, split="learn")
    path = book.save(tmp_path / "cache" / "gmm.npz")
    assert [p.name for p in path.parent.iterdir()] == ["gmm.npz"]  # no temp file left behind
    loaded = emb.GMMCodebook.load(path)
    assert repr(loaded) == repr(book) and loaded.n_train_ == 150 and loaded.n_available_ == 200
    for name in ("weights_", "means_", "variances_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(book, name))
    local = emb.LocalDescriptors.from_list(random_images(d=4, seed=8))
    np.testing.assert_array_equal(emb.FisherVector(loaded).encode(local), emb.FisherVector(book).encode(local))
    with pytest.raises(ValueError, match="GMMCodebook"):
        emb.KMeansCodebook.load(path)
    kpath = emb.KMeansCodebook(k=3, seed=0).fit(X, split="learn").save(tmp_path / "km.npz")
    np.testing.assert_array_equal(emb.KMeansCodebook.load(kpath).centroids_,
                                  emb.KMeansCodebook(k=3, seed=0).fit(X, split="learn").centroids_)


def test_whitening_after_encoding_is_fitted_by_the_caller_on_learning_encodings(kmeans_book):
    learn = emb.LocalDescriptors.from_list(random_images(counts=[5] * 40, seed=9))
    test = emb.LocalDescriptors.from_list(random_images(seed=10))
    pcaw = PCAWhitening(dim=8).fit(emb.VLAD(kmeans_book).encode(learn))
    got = emb.VLAD(kmeans_book, whitening=pcaw).encode(test)
    np.testing.assert_allclose(got, pcaw.transform(emb.VLAD(kmeans_book).encode(test)), rtol=1e-6)
    assert got.shape == (len(COUNTS), 8)
    with pytest.raises(NotFittedError):
        emb.VLAD(kmeans_book, whitening=PCAWhitening(dim=8)).encode(test)


# --------------------------------------------------------------------------- inverted file
def sparse_bow(n, k, words_per_image, seed, vocabulary=None):
    rng = np.random.default_rng(seed)
    X = np.zeros((n, k), np.float32)
    for i in range(n):
        X[i, rng.choice(vocabulary or k, size=words_per_image, replace=False)] = rng.random(words_per_image) + 0.1
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_inverted_file_checks_k_like_exact_search():
    db = sparse_bow(10, 50, 5, seed=2)
    for search in (emb.InvertedFile(db).search, lambda q, k: exact_search(q, db, k)):
        with pytest.raises(ValueError, match="k=11 is larger than the 10 database rows"):
            search(db[:2], 11)
        with pytest.raises(ValueError, match="k must be a positive integer"):
            search(db[:2], 0)


@pytest.mark.parametrize("k", [5, None])
def test_inverted_file_equals_dense_cosine_search(k):
    db, queries = sparse_bow(80, 400, 12, seed=0, vocabulary=399), sparse_bow(9, 400, 15, seed=1)
    queries[3] = 0.0
    queries[3, 399] = 1.0  # a word no database image holds: every score is 0
    db[[17, 42]] = db[5]  # exact ties: both searches must put the lower id first
    index = emb.InvertedFile(db)
    scores, ids = index.search(queries, k)
    dense_scores, dense_ids = exact_search(queries, db, k)
    np.testing.assert_array_equal(ids, dense_ids)
    np.testing.assert_allclose(scores, dense_scores, atol=1e-6)
    assert (ids[3] == np.arange(ids.shape[1])).all() and not scores[3].any()
    if k is None:
        for row in ids:  # the duplicates always appear in id order
            where = [int(np.flatnonzero(row == i)[0]) for i in (5, 17, 42)]
            assert where == sorted(where)
    assert index.postings_.nnz == 80 * 12 < db.size


def test_inverted_file_on_sparse_bow_vectors(kmeans_book):
    bow = emb.BoW(kmeans_book).fit_idf(emb.LocalDescriptors.from_list(random_images(seed=11)), split="learn")
    db = emb.LocalDescriptors.from_list(random_images(counts=[3, 0, 2, 5, 1, 4, 2, 6], seed=12))
    queries = emb.LocalDescriptors.from_list(random_images(counts=[2, 3, 0], seed=13))
    index = emb.InvertedFile(bow.encode(db, sparse=True))
    scores, ids = index.search(bow.encode(queries, sparse=True))
    dense_scores, dense_ids = exact_search(bow.encode(queries), bow.encode(db))
    np.testing.assert_array_equal(ids, dense_ids)
    np.testing.assert_allclose(scores, dense_scores, atol=1e-6)
