"""Whitening estimators (retrievalkit.whitening): covariance identities, rank checks, supervised whitening."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from retrievalkit import whitening as W

ESTIMATORS = [W.L2Normalize, W.PowerLaw, W.PCA, W.PCAWhitening, W.LearnedWhitening]


def correlated(n, d=12, seed=0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) * np.linspace(3, 0.2, d)[:, None]
    return (rng.normal(size=(n, d)) @ mix + rng.normal(size=d) * 5).astype(np.float32)


def class_data(n_classes, per_class, d=24, seed=0):
    """Class structure hidden under a strong shared nuisance.

    Class centres differ by small amounts in every direction; within a class, images vary a lot
    along 4 fixed "nuisance" directions (think viewpoint) that are the same for every class.
    """
    rng = np.random.default_rng(seed)
    nuisance = np.linalg.qr(np.random.default_rng(123).normal(size=(d, 4)))[0].T * 6.0
    centres = rng.normal(size=(n_classes, d)) + 4.0
    labels = np.repeat(np.arange(n_classes), per_class)
    X = centres[labels] + rng.normal(size=(len(labels), 4)) @ nuisance + 0.3 * rng.normal(size=(len(labels), d))
    return X.astype(np.float32), labels


def pair_ratio(Y, labels):
    """Mean distance of matching pairs / mean distance of non-matching pairs (lower is better)."""
    D = np.linalg.norm(Y[:, None] - Y[None], axis=-1)
    same = labels[:, None] == labels[None]
    off = ~np.eye(len(labels), dtype=bool)
    return D[same & off].mean() / D[~same].mean()


# --------------------------------------------------------------------------- PCA-whitening
def test_pca_whitening_gives_identity_covariance_on_the_learning_split():
    X_learn, X_test = correlated(400, seed=0), correlated(300, seed=1)
    pw = W.PCAWhitening(normalize=False).fit(X_learn)
    Y = pw.transform(X_learn)
    assert Y.dtype == np.float32 and Y.shape == (400, 12)
    np.testing.assert_allclose(np.cov(Y.T.astype(np.float64)), np.eye(12), atol=1e-4)
    np.testing.assert_allclose(Y.mean(axis=0), 0, atol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Z = pw.transform(X_test)
        Zn = W.PCAWhitening(dim=5).fit(X_learn).transform(X_test)
    assert np.isfinite(Z).all() and Z.shape == (300, 12)
    # the held-out split is only approximately white: it was not used for fitting
    assert not np.allclose(np.cov(Z.T.astype(np.float64)), np.eye(12), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(Zn, axis=1), 1, atol=1e-5)


def test_pca_whitening_shrinkage_and_eps():
    X = correlated(300)
    full = W.PCAWhitening(normalize=False).fit(X)
    none = W.PCAWhitening(shrinkage=1.0, normalize=False).fit(X)
    # shrinkage = 1: every direction scaled alike, i.e. plain PCA up to one global factor
    ratio = none.projection_ / W.PCA(normalize=False).fit(X).projection_
    np.testing.assert_allclose(ratio, ratio[0, 0], rtol=1e-6)
    var_full = full.transform(X).var(axis=0, ddof=1)
    var_none = none.transform(X).var(axis=0, ddof=1)
    assert np.ptp(var_full) < 1e-3 < np.ptp(var_none)
    assert (W.PCAWhitening(eps=1.0, normalize=False).fit(X).transform(X).var(axis=0, ddof=1) < 1).all()
    with pytest.raises(ValueError):
        W.PCAWhitening(shrinkage=1.5)


# --------------------------------------------------------------------------- PCA
def test_pca_keeps_the_top_variance_directions():
    rng = np.random.default_rng(0)
    stds = np.array([9.0, 5.0, 3.0, 1.0, 0.5, 0.2])
    Q = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    X = (rng.normal(size=(2000, 6)) * stds) @ Q.T + 7.0  # axis k of the latent maps to column k of Q
    pca = W.PCA(dim=2, normalize=False).fit(X)
    eig = np.sort(np.linalg.eigvalsh(np.cov(X.T)))[::-1]
    np.testing.assert_allclose(pca.explained_variance_, eig[:2], rtol=1e-6)
    Y = pca.transform(X.astype(np.float32))
    np.testing.assert_allclose(Y.var(axis=0, ddof=1), eig[:2], rtol=1e-4)
    # the kept directions are the two largest-variance axes (up to sign)
    np.testing.assert_allclose(np.abs(pca.components_ @ Q[:, :2]), np.eye(2), atol=0.05)  # sampling noise of 2,000 rows
    # no whitening: distances within the kept subspace are preserved
    full = W.PCA(normalize=False).fit(X)
    assert full.n_components_ == 6
    np.testing.assert_allclose(np.linalg.norm(full.transform(X) - full.transform(X)[:1], axis=1),
                               np.linalg.norm(X - X[:1], axis=1), rtol=1e-6)


def test_pca_matches_scikit_learn():
    sk = pytest.importorskip("sklearn.decomposition")
    X = correlated(300).astype(np.float64)
    ours = W.PCA(dim=4, normalize=False).fit(X)
    ref = sk.PCA(n_components=4, svd_solver="full").fit(X)
    np.testing.assert_allclose(ours.explained_variance_, ref.explained_variance_, rtol=1e-8)
    np.testing.assert_allclose(np.abs(ours.transform(X)), np.abs(ref.transform(X)), atol=1e-6)


@pytest.mark.parametrize("cls", [W.PCA, W.PCAWhitening, W.LearnedWhitening])
def test_dim_above_rank_raises(cls):
    X, labels = class_data(5, 2, d=24)  # 10 rows in 24-D: rank after centring is 9
    fit_kw = {"labels": labels} if cls is W.LearnedWhitening else {}
    with pytest.raises(ValueError, match="dim=10"):
        cls(dim=10).fit(X, **fit_kw)
    with pytest.raises(ValueError, match="dim=100"):
        cls(dim=100).fit(X, **fit_kw)
    if cls is not W.LearnedWhitening:
        assert cls(dim=9).fit(X).n_components_ == 9


def test_dim_none_keeps_all_available():
    X = correlated(100)
    assert W.PCA().fit(X).n_components_ == 12
    assert W.PCAWhitening().fit(X).n_components_ == 12
    assert W.PCAWhitening().fit(X[:6]).n_components_ == 5  # rank-deficient: only non-null directions are whitened
    with pytest.raises(ValueError, match="dim must be >= 1"):
        W.PCA(dim=0).fit(X)


# --------------------------------------------------------------------------- learned whitening
def test_learned_whitening_brings_matching_pairs_closer():
    X_learn, y_learn = class_data(30, 8, seed=0)
    X_test, y_test = class_data(20, 8, seed=1)  # new classes, same kind of nuisance
    raw = pair_ratio(W.L2Normalize().fit(X_learn).transform(X_test), y_test)
    lw = W.LearnedWhitening(dim=16).fit(X_learn, labels=y_learn)
    after = pair_ratio(lw.transform(X_test), y_test)
    pcaw = pair_ratio(W.PCAWhitening(dim=16).fit(X_learn).transform(X_test), y_test)
    assert after < 0.6 * raw
    assert after < pcaw  # supervision knows which variation is nuisance; unsupervised whitening does not


def test_learned_whitening_whitens_the_matching_pair_differences():
    X, y = class_data(30, 8, seed=2)
    pairs = W.pairs_from_labels(y)
    lw = W.LearnedWhitening(normalize=False).fit(X, pairs)
    Y = lw.transform(X).astype(np.float64)
    diff = Y[pairs[:, 0]] - Y[pairs[:, 1]]
    np.testing.assert_allclose(diff.T @ diff / len(pairs), np.eye(lw.n_components_), atol=1e-4)
    # the kept directions are ordered by inter-class spread in the whitened space
    assert np.all(np.diff(lw.explained_variance_) <= 0)


def test_learned_whitening_labels_equal_explicit_pairs():
    X, y = class_data(12, 5, seed=3)
    rng = np.random.default_rng(0)
    y = rng.permutation(y)  # labels need not be sorted
    by_labels = W.LearnedWhitening(dim=10).fit(X, labels=y)
    by_pairs = W.LearnedWhitening(dim=10).fit(X, W.pairs_from_labels(y))
    assert by_labels.n_pairs_ == by_pairs.n_pairs_ == 12 * 10
    np.testing.assert_allclose(by_labels.projection_, by_pairs.projection_, rtol=1e-6, atol=1e-8)


def test_learned_whitening_argument_errors():
    X, y = class_data(4, 3)
    with pytest.raises(ValueError, match="exactly one"):
        W.LearnedWhitening().fit(X)
    with pytest.raises(ValueError, match="exactly one"):
        W.LearnedWhitening().fit(X, [[0, 1]], labels=y)
    with pytest.raises(ValueError, match="no matching pairs"):
        W.LearnedWhitening().fit(X, labels=np.arange(len(X)))
    with pytest.raises(ValueError, match="outside"):
        W.LearnedWhitening().fit(X, np.array([[0, 99]]))
    with pytest.raises(ValueError, match="M×2"):
        W.LearnedWhitening().fit(X, np.array([0, 1, 2]))


def test_learned_whitening_few_pairs_and_shrinkage():
    X, y = class_data(10, 8, d=24, seed=4)
    few = np.array([[0, 1], [8, 9], [16, 17]])  # 3 differences span 3 of 24 directions
    assert W.LearnedWhitening().fit(X, few).n_components_ <= 3
    assert W.LearnedWhitening(shrinkage=0.1).fit(X, few).n_components_ == 24


# --------------------------------------------------------------------------- kinds, registry, protocol
@pytest.mark.parametrize("cls", ESTIMATORS)
def test_numpy_and_torch_inputs(cls):
    X, y = class_data(10, 6, d=8, seed=5)
    fit_kw = {"labels": y} if cls is W.LearnedWhitening else {}
    est_np = cls().fit(X, **fit_kw)
    est_t = cls().fit(torch.from_numpy(X), **({"labels": torch.from_numpy(y)} if fit_kw else {}))
    out_np = est_np.transform(X)
    out_t = est_t.transform(torch.from_numpy(X))
    assert isinstance(out_np, np.ndarray) and out_np.dtype == np.float32
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32
    np.testing.assert_allclose(out_t.numpy(), out_np, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out_np, axis=1), 1, atol=1e-5)  # L2 on output by default
    assert est_np.fit_transform(torch.from_numpy(X).double(), **fit_kw).dtype == torch.float64


def test_not_fitted_and_wrong_width():
    with pytest.raises(W.NotFittedError, match="learning-split"):
        W.PCA().transform(np.ones((2, 3), np.float32))
    pca = W.PCA().fit(correlated(50))
    with pytest.raises(ValueError, match="12-D"):
        pca.transform(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        W.PCA().fit(np.ones(5))


def test_powerlaw_and_l2():
    X = np.array([[4.0, -9.0], [0.0, 0.0]], np.float32)
    np.testing.assert_allclose(W.PowerLaw(normalize=False).fit_transform(X), [[2.0, -3.0], [0.0, 0.0]])
    np.testing.assert_allclose(W.PowerLaw().fit_transform(X)[0], np.array([2.0, -3.0]) / np.sqrt(13), rtol=1e-5)
    np.testing.assert_allclose(W.L2Normalize().fit_transform(X), [[4 / 97 ** 0.5, -9 / 97 ** 0.5], [0, 0]], rtol=1e-5)


def test_whiten_helper_and_reprs():
    X_learn, X_test = correlated(200, seed=0), correlated(50, seed=1)
    np.testing.assert_allclose(W.whiten("pcaw", X_learn, X_test, dim=6), W.PCAWhitening(dim=6).fit(X_learn).transform(X_test))
    Xc, y = class_data(8, 5, d=12)
    assert W.whiten("lw", Xc, Xc[:3], dim=4, labels=y).shape == (3, 4)
    with pytest.raises(ValueError, match="unknown whitening"):
        W.whiten("zca", X_learn, X_test)
    with pytest.raises(ValueError, match="does not reduce"):
        W.whiten("l2", X_learn, X_test, dim=3)
    assert repr(W.PCAWhitening(dim=128)) == "PCAWhitening(dim=128, shrinkage=0.0, eps=0.0, normalize=True)"
    assert repr(W.LearnedWhitening(dim=64)) == "LearnedWhitening(dim=64, shrinkage=0.0, normalize=True)"
