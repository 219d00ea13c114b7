"""Unsupervised hashing with an autoencoder (retrievalkit.hashing.autoencoder, survey §2.4.2.2): the
objective against its formula, training through the shared loop without labels, seeded codes, and
Hamming retrieval on a clustered toy against LSH at the same code length."""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from retrievalkit import hashing as H
from retrievalkit.evaluate import leave_one_out_map
from retrievalkit.hashing import autoencoder as A
from retrievalkit.rows import NotFittedError

BITS = 8
TRAIN_KW = dict(epochs=20, lr=1e-2, batch_size=64, device="cpu")


def clusters(seed, n_per=100, d=32, k=4, sep=3.0, signal_dims=3):
    """``k`` Gaussian clusters in ``d`` dims: the means differ only inside a ``signal_dims``-d subspace
    (spread ``sep``), unit isotropic noise everywhere. The means are fixed; ``seed`` draws the noise."""
    basis = np.linalg.qr(np.random.default_rng(7).normal(size=(d, d)))[0][:, :signal_dims]
    means = np.random.default_rng(8).normal(size=(k, signal_dims)) * sep
    y = np.repeat(np.arange(k), n_per)
    X = means[y] @ basis.T + np.random.default_rng(seed).normal(size=(len(y), d))
    return X.astype(np.float32), y


def hamming_map(codes, labels):
    B = codes.astype(np.float32)
    return leave_one_out_map(labels=labels, scores=B @ B.T, mode="finite")  # ±1 inner product = K − 2·Hamming


@pytest.fixture(scope="module")
def toy():
    return clusters(0), clusters(1)  # learning rows, held-out rows (same clusters, fresh noise)


@pytest.fixture(scope="module")
def model(toy):
    (X, _), _ = toy
    return A.AutoencoderHash(BITS, seed=0, **TRAIN_KW).fit(X)


def test_objective_is_reconstruction_plus_quantisation():
    gen = torch.Generator().manual_seed(0)
    x, x_hat = torch.randn(5, 7, generator=gen), torch.randn(5, 7, generator=gen)
    h = torch.tanh(torch.randn(5, 3, generator=gen))
    mse = sum(float((x[i, d] - x_hat[i, d]) ** 2) for i in range(5) for d in range(7)) / 35
    quant = sum((abs(float(h[i, k])) - 1) ** 2 for i in range(5) for k in range(3)) / 15
    assert float(A.reconstruction_loss(x, x_hat)) == pytest.approx(mse)
    assert float(A.autoencoder_loss(x, h, x_hat, quantization=0.3)) == pytest.approx(mse + 0.3 * quant)
    assert float(A.autoencoder_loss(x, torch.sign(h), x, quantization=5.0)) == 0  # perfect and binary


def test_fit_takes_no_labels():
    assert list(inspect.signature(A.AutoencoderHash.fit).parameters) == ["self", "X"]
    with pytest.raises(TypeError):
        A.AutoencoderHash(4, **TRAIN_KW).fit(np.zeros((10, 3), np.float32), np.zeros(10))


def test_reconstruction_improves_over_epochs(model):
    rec = [r["reconstruction"] for r in model.history_]
    assert len(rec) == TRAIN_KW["epochs"] and [r["epoch"] for r in model.history_] == list(range(1, 21))
    assert rec[-1] < 0.6 * rec[0]
    assert all(r["train_loss"] == pytest.approx(r["reconstruction"] + 0.1 * r["quantization"], rel=1e-5)
               for r in model.history_)


def test_codes_are_signs_of_the_bottleneck(model, toy):
    _, (X_test, _) = toy
    codes = model.transform(X_test)
    assert codes.dtype == np.int8 and codes.shape == (len(X_test), BITS) and set(np.unique(codes)) == {-1, 1}
    relaxed = model.relaxed(X_test)
    assert np.all(np.abs(relaxed) < 1) and np.array_equal(np.where(relaxed >= 0, 1, -1), codes)
    np.testing.assert_array_equal(model.transform(X_test, as_bits=True), (codes > 0).astype(np.uint8))
    np.testing.assert_array_equal(model.encode(X_test), H.pack_codes(codes))
    assert H.AutoencoderHash is A.AutoencoderHash and H.autoencoder_loss is A.autoencoder_loss


def test_training_is_seeded_and_leaves_the_global_rng_alone(model, toy):
    (X, _), (X_test, _) = toy
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    again = A.AutoencoderHash(BITS, seed=0, **TRAIN_KW).fit(X)
    assert torch.equal(torch.rand(3), expected)
    np.testing.assert_array_equal(again.relaxed(X_test), model.relaxed(X_test))
    other = A.AutoencoderHash(BITS, seed=1, **TRAIN_KW).fit(X)
    assert not np.array_equal(other.relaxed(X_test), model.relaxed(X_test))


def test_codes_find_the_clusters_better_than_lsh(model, toy):
    """The clusters differ in 3 of 32 directions, but those 3 carry most of the variance: the
    autoencoder spends its 8 bits there, random hyperplanes spend most of theirs on the noise."""
    _, (X_test, y_test) = toy
    ae = hamming_map(model.transform(X_test), y_test)
    (X, _), _ = toy
    lsh = [hamming_map(H.LSH(BITS, seed=s).fit(X).transform(X_test), y_test) for s in range(5)]
    assert ae > max(lsh) + 0.1, (ae, lsh)


def test_a_fitted_autoencoder_round_trips_through_its_state_dict(model, toy):
    _, (X_test, _) = toy
    net = A.HashAutoencoder(model.net_.in_dim, model.net_.n_bits, model.net_.hidden)
    net.load_state_dict(model.net_.state_dict())  # shift, scale and both halves are in the state
    reloaded = A.AutoencoderHash(BITS)
    reloaded.net_, reloaded.n_features_in_ = net, model.n_features_in_
    np.testing.assert_array_equal(reloaded.relaxed(X_test), model.relaxed(X_test))
    np.testing.assert_array_equal(reloaded.encode(X_test), model.encode(X_test))


def test_refuses_to_transform_before_fit_or_at_the_wrong_width(model):
    with pytest.raises(NotFittedError, match="not fitted"):
        A.AutoencoderHash(BITS).transform(np.zeros((2, 32), np.float32))
    with pytest.raises(ValueError, match="32-D"):
        model.transform(np.zeros((2, 5), np.float32))
