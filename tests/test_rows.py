"""retrievalkit.rows: one implementation of the row checks, L2 and the power law (NumPy and torch agree)."""
import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal

from retrievalkit import rows


def _data():
    x = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)
    x[2] = 0.0
    x[3, 1] = 0.0
    return x


def test_l2n_numpy_and_torch_agree_and_zero_rows_stay_zero():
    x = _data()
    a, t = rows.l2n(x), rows.l2n(torch.from_numpy(x))
    assert isinstance(a, np.ndarray) and a.dtype == np.float32 and isinstance(t, torch.Tensor)
    assert_allclose(a, t.numpy(), rtol=0, atol=1e-7)
    assert_allclose(a, x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-6), rtol=1e-7)
    assert_array_equal(a[2], 0)
    norms = np.linalg.norm(np.delete(a, 2, axis=0), axis=1)
    assert_allclose(norms, 1, atol=1e-5)
    assert_allclose(rows.l2n(x, axis=0), x / (np.linalg.norm(x, axis=0, keepdims=True) + 1e-6))


def test_powerlaw_exact_values_and_numpy_torch_agree():
    x = _data()
    assert_allclose(rows.powerlaw(x), np.sign(x) * np.sqrt(np.abs(x)), rtol=1e-7)
    assert_allclose(rows.powerlaw(torch.from_numpy(x), 0.3).numpy(), rows.powerlaw(x, 0.3), rtol=1e-6)
    # no clamp: a tiny entry keeps its exact signed root (the old clamped copy gave 1e-3 here)
    tiny = torch.tensor([1e-8, -1e-8, 0.0], dtype=torch.float64)
    assert_allclose(rows.powerlaw(tiny).numpy(), [1e-4, -1e-4, 0.0], rtol=1e-12)


def test_powerlaw_gradient_is_finite_at_zero():
    x = torch.tensor([0.0, 4.0, -1.0], requires_grad=True)
    rows.powerlaw(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert_allclose(x.grad.numpy(), [0.0, 0.25, 0.5])


def test_as_rows_casts_and_names_the_input():
    out = rows.as_rows(torch.arange(6).reshape(2, 3), "queries")
    assert out.dtype == np.float32 and out.flags.c_contiguous and out.shape == (2, 3)
    assert rows.as_rows(np.ones((2, 2)), dtype=None).dtype == np.float64
    assert rows.as_rows([[1, 2]], dtype=None).dtype == np.float32
    with pytest.raises(ValueError, match="queries must be 2-D descriptor rows"):
        rows.as_rows(np.ones(3), "queries")
    with pytest.raises(ValueError, match="database must be non-empty"):
        rows.as_rows(np.ones((0, 4)), "database", allow_empty=False)
    assert rows.as_rows(np.ones((0, 4))).shape == (0, 4)
    with pytest.raises(ValueError, match="X holds NaN"):
        rows.as_rows([[np.nan, 1.0]], finite=True)


def test_as_labels_and_like():
    assert_array_equal(rows.as_labels(torch.tensor([[1], [2]]), 2), [1, 2])
    with pytest.raises(ValueError, match="labels_val has 3 entries for 2 rows"):
        rows.as_labels([1, 2, 3], 2, "labels_val")
    a = np.arange(3, dtype=np.float64)
    t = rows.like(a, torch.zeros(1, dtype=torch.float16))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float16
    assert rows.like(a, np.zeros(1, dtype=np.float32)).dtype == np.float32
    assert rows.is_torch(t) and not rows.is_torch(a)


class _Scale(rows.Estimator):
    def __init__(self, factor: float = 2.0):
        self.factor = factor

    def fit(self, X):
        self.n_features_in_ = rows.as_rows(X).shape[1]
        return self

    def transform(self, X):
        return self._check(X) * self.factor


def test_estimator_repr_fit_transform_and_checks():
    est = _Scale(3.0)
    assert repr(est) == "_Scale(factor=3.0)"
    with pytest.raises(rows.NotFittedError, match="_Scale is not fitted"):
        est.transform(np.ones((1, 2)))
    assert issubclass(rows.NotFittedError, ValueError) and issubclass(rows.NotFittedError, AttributeError)
    assert_array_equal(est.fit_transform(np.ones((2, 2), dtype=np.float32)), 3.0)
    with pytest.raises(ValueError, match="fitted on 2-D rows, got 3-D"):
        est.transform(np.ones((1, 3)))
    out = est.transform(torch.ones(1, 2, dtype=torch.float64))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64


def test_every_fitted_estimator_shares_the_convention():
    """Whitenings, codebooks, embeddings and hashers: one base (repr from __init__), one NotFittedError."""
    from retrievalkit import embedding, hashing, whitening

    fitted = [*whitening.WHITENINGS.values(), embedding.KMeansCodebook, embedding.GMMCodebook, *hashing.HASHERS.values()]
    assert set(embedding.EMBEDDINGS) == {"bow", "vlad", "fv"} and set(hashing.HASHERS) == {"lsh", "pca_sign", "itq"}
    for cls in [*fitted, *embedding.EMBEDDINGS.values()]:
        assert issubclass(cls, rows.Estimator), cls
    X = np.random.default_rng(1).normal(size=(4, 8)).astype(np.float32)
    for est in [whitening.PCA(), hashing.ITQ(4), hashing.LSH(4)]:
        with pytest.raises(rows.NotFittedError, match="not fitted"):
            est.transform(X)
    with pytest.raises(rows.NotFittedError, match="split='learn'"):
        embedding.KMeansCodebook(k=2).assign(X)
    assert repr(hashing.LSH(8)) == "LSH(n_bits=8, center=True, seed=0)"
