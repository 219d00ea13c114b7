"""Deep hashing (retrievalkit.hashing.deep): the losses against explicit loops, called with labels or
index tuples; the regularisers; the hash head trained through the one fit loop; its state saved and reloaded."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from retrievalkit import hashing as H
from retrievalkit.evaluate import leave_one_out_map
from retrievalkit.finetune.losses import all_pairs
from retrievalkit.hashing import deep as Dp
from retrievalkit.rows import NotFittedError
from conftest import hadamard, skewed_classes


# --------------------------------------------------------------------------- deep hashing: losses
def test_losses_match_explicit_loops_on_small_batches():
    torch.manual_seed(0)
    h = torch.tanh(torch.randn(7, 6, dtype=torch.float64))
    y = torch.tensor([0, 0, 1, 1, 1, 2, 0])
    K, n = 6, 7
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    d = lambda i, j: (K - float(h[i] @ h[j])) / 2  # noqa: E731
    sim = lambda i, j: float(y[i] == y[j])  # noqa: E731
    theta = lambda i, j: float(h[i] @ h[j]) / 2  # noqa: E731
    dpsh = np.mean([np.log1p(np.exp(theta(i, j))) - sim(i, j) * theta(i, j) for i, j in pairs]) / K
    assert float(Dp.PairwiseLikelihoodLoss()(h, y)) == pytest.approx(dpsh)
    m = 0.5 * K
    contrastive = np.mean([sim(i, j) * d(i, j) + (1 - sim(i, j)) * max(0, m - d(i, j)) for i, j in pairs]) / K
    assert float(Dp.ContrastiveHammingLoss(0.5)(h, y)) == pytest.approx(contrastive)
    triplets = [(a, p, q) for a in range(n) for p in range(n) for q in range(n)
                if a != p and y[a] == y[p] and y[a] != y[q]]
    triplet = np.mean([max(0, d(a, p) - d(a, q) + 0.25 * K) for a, p, q in triplets]) / K
    assert float(Dp.TripletHammingLoss(0.25)(h, y)) == pytest.approx(triplet)
    # on ±1 codes the relaxed distance is the Hamming distance
    b = torch.sign(h)
    np.testing.assert_array_equal(Dp.relaxed_hamming(b).numpy(), (b[:, None] != b[None]).sum(-1).numpy())
    assert float(Dp.quantization_penalty(b)) == 0 and float(Dp.quantization_penalty(h)) > 0


def test_index_tuples_pick_which_pairs_and_triplets_count():
    torch.manual_seed(1)
    h = torch.tanh(torch.randn(6, 4, dtype=torch.float64))
    y = torch.tensor([0, 0, 1, 1, 2, 0])
    for loss in (Dp.PairwiseLikelihoodLoss(), Dp.ContrastiveHammingLoss(0.5)):
        assert float(loss(h, y, all_pairs(y))) == pytest.approx(float(loss(h, y)), rel=1e-12)
        one = (torch.tensor([0]), torch.tensor([2]), torch.tensor([False]))  # a single pair: its own term
        alone = loss(h[[0, 2]], torch.tensor([0, 1]))  # the same pair both ways, (0, 2) and (2, 0): symmetric
        assert float(loss(h, y, one)) == pytest.approx(float(alone), rel=1e-12)
    d = Dp.relaxed_hamming(h)
    got = Dp.TripletHammingLoss(0.25)(h, y, (torch.tensor([0, 0]), torch.tensor([1, 5]), torch.tensor([2, 3])))
    want = (max(0, d[0, 1] - d[0, 2] + 1) + max(0, d[0, 5] - d[0, 3] + 1)) / 2 / 4
    assert float(got) == pytest.approx(float(want), rel=1e-12)


def test_regularisers_vanish_on_balanced_orthogonal_codes():
    codes = torch.tensor(hadamard(16)[:, 1:], dtype=torch.float32)
    assert float(Dp.balance_penalty(codes)) == 0
    assert float(Dp.decorrelation_penalty(codes)) == pytest.approx(0, abs=1e-12)
    constant = torch.ones(16, 15)
    assert float(Dp.balance_penalty(constant)) == 1
    assert float(Dp.decorrelation_penalty(constant)) == pytest.approx((15 * 15 - 15) / 15**2)


def test_hash_centres_and_centre_loss():
    C = Dp.hash_centers(10, 16)
    dist = (16 - C @ C.T) / 2
    off = ~np.eye(10, dtype=bool)
    assert set(np.unique(dist[off])) <= {8.0, 16.0}  # Hadamard rows: K/2 apart (K for ±row)
    random = Dp.hash_centers(5, 12, seed=1)  # 12 is not a power of two → random ±1 centres
    assert random.shape == (5, 12) and set(np.unique(random)) == {-1.0, 1.0}
    labels = torch.tensor([0, 3, 3])
    centres = torch.as_tensor(C)
    near = Dp.CenterLoss(centres)(0.99 * centres[labels], labels)
    far = Dp.CenterLoss(centres)(-0.99 * centres[labels], labels)
    assert float(near) < 0.02 < 4 < float(far)


# --------------------------------------------------------------------------- deep hashing: training
EPOCHS = 8
TRAIN_KW = dict(epochs=EPOCHS, batch_size=64, lr=1e-2, seed=0, device="cpu")


@pytest.fixture(scope="module")
def learning_split():
    """Training and validation parts of a LEARNING split (the test split is never built here)."""
    X, y = skewed_classes(0)
    X_val, y_val = skewed_classes(1)
    return X, y, X_val, y_val


@pytest.fixture(scope="module")
def plain(learning_split):
    return Dp.DeepHash(16, "pairwise", **TRAIN_KW).fit(*learning_split)


def test_training_loss_decreases_and_codes_are_binary(plain, learning_split):
    losses = [r["train_loss"] for r in plain.history_]
    assert losses[-1] < 0.8 * losses[0]
    X_val = learning_split[2]
    codes = plain.transform(X_val)
    assert codes.dtype == np.int8 and codes.shape == (len(X_val), 16) and set(np.unique(codes)) == {-1, 1}
    np.testing.assert_array_equal(plain.transform(X_val, as_bits=True), (codes > 0).astype(np.uint8))
    np.testing.assert_array_equal(plain.encode(X_val), H.pack_codes(codes))
    relaxed = plain.relaxed(X_val)
    assert np.all(np.abs(relaxed) < 1) and np.array_equal(np.where(relaxed >= 0, 1, -1), codes)
    assert plain.best_val_map_ > 0.6  # far above chance (~0.3 here): the codes keep the classes apart


def test_balance_regulariser_balances_bits(plain, learning_split):
    balanced = Dp.DeepHash(16, "pairwise", balance=1.0, **TRAIN_KW).fit(*learning_split)
    X_val = learning_split[2]
    before = H.bit_balance(plain.transform(X_val)).mean()
    after = H.bit_balance(balanced.transform(X_val)).mean()
    assert after < 0.6 * before


def test_decorrelation_regulariser_lowers_bit_correlation(plain, learning_split):
    decorrelated = Dp.DeepHash(16, "pairwise", decorrelation=1.0, **TRAIN_KW).fit(*learning_split)
    X_val = learning_split[2]
    before = H.mean_abs_correlation(plain.transform(X_val))
    after = H.mean_abs_correlation(decorrelated.transform(X_val))
    assert after < 0.7 * before


def test_best_epoch_is_chosen_on_validation_only(plain, learning_split):
    X, y, X_val, y_val = learning_split
    val = [r["val_mAP"] for r in plain.history_]
    assert len(val) == EPOCHS and all(v is not None for v in val)
    assert plain.best_epoch_ == int(np.argmax(val)) + 1  # earliest best epoch
    assert [r["kept"] for r in plain.history_].count(True) == 1
    assert plain.history_[plain.best_epoch_ - 1]["kept"]
    # the kept model is the best-validation one: recomputing its validation mAP gives the maximum
    B = plain.transform(X_val).astype(np.float32)
    assert leave_one_out_map(labels=y_val, scores=B @ B.T, mode="finite") == pytest.approx(max(val))
    # without validation nothing is selected: the last epoch is kept
    last = Dp.DeepHash(16, "pairwise", **{**TRAIN_KW, "epochs": 2}).fit(X, y)
    assert last.best_epoch_ == 2 and last.history_[-1]["val_mAP"] is None
    with pytest.raises(ValueError, match="both X_val and labels_val"):
        Dp.DeepHash(16, **TRAIN_KW).fit(X, y, X_val)


def test_training_is_seeded_and_leaves_the_global_rng_alone(plain, learning_split):
    X, y, X_val, y_val = learning_split
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    again = Dp.DeepHash(16, "pairwise", **TRAIN_KW).fit(X, y, X_val, y_val)
    assert torch.equal(torch.rand(3), expected)
    np.testing.assert_array_equal(again.transform(X_val), plain.transform(X_val))
    other = Dp.DeepHash(16, "pairwise", **{**TRAIN_KW, "seed": 1, "epochs": 1}).fit(X, y)
    assert not np.array_equal(other.transform(X_val), plain.transform(X_val))


@pytest.mark.parametrize("loss", ["contrastive", "triplet", "center"])
def test_every_loss_trains(loss, learning_split):
    X, y, X_val, y_val = learning_split
    model = Dp.DeepHash(16, loss, **{**TRAIN_KW, "epochs": 4}).fit(X, y, X_val, y_val)
    assert model.history_[-1]["train_loss"] < model.history_[0]["train_loss"]
    assert model.best_val_map_ > 0.5


def test_a_fitted_deep_hash_round_trips_through_its_state_dict(learning_split):
    X, y, X_val, y_val = learning_split
    model = Dp.DeepHash(16, "pairwise", hidden=8, **{**TRAIN_KW, "epochs": 2}).fit(X, y, X_val, y_val)
    head = model.head_
    fresh = Dp.HashHead(head.in_dim, head.n_bits, head.hidden, head.dropout)
    fresh.load_state_dict(model.head_.state_dict())  # shift, scale and weights are all in the state
    reloaded = Dp.DeepHash(16, "pairwise", hidden=8)
    reloaded.head_, reloaded.n_features_in_ = fresh, model.n_features_in_
    np.testing.assert_array_equal(reloaded.encode(X_val), model.encode(X_val))
    np.testing.assert_array_equal(reloaded.relaxed(X_val), model.relaxed(X_val))
    assert "dropout=0.0" in repr(head)


def test_a_fitted_deep_hash_survives_the_artifact_cache(learning_split, tmp_path):
    from retrievalkit import artifacts

    X, y, X_val, y_val = learning_split
    model = Dp.DeepHash(16, "center", hidden=8, **{**TRAIN_KW, "epochs": 2}).fit(X, y, X_val, y_val)
    artifacts.save("deep_hash", {"data": "synthetic"}, model, version=1, cache=tmp_path)
    again = artifacts.load("deep_hash", {"data": "synthetic"}, version=1, cache=tmp_path)
    np.testing.assert_array_equal(again.encode(X_val), model.encode(X_val))
    assert again.history_ == model.history_ and again.best_epoch_ == model.best_epoch_


def test_deep_hash_argument_checks():
    with pytest.raises(ValueError, match="unknown loss"):
        Dp.DeepHash(16, "hinge")
    with pytest.raises(ValueError, match="margin"):
        Dp.DeepHash(16, "pairwise", margin=0.3)
    with pytest.raises(NotFittedError, match="not fitted"):
        Dp.DeepHash(16).transform(np.zeros((2, 4)))
