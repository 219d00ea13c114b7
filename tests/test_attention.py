"""Attention (retrievalkit.nn.attention): map shapes and signs, explicit-loop references, pooling identities,
and a learned head that must find the discriminative positions of synthetic maps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from retrievalkit import nn as rnn
from retrievalkit.nn import attention as A
from retrievalkit.nn import functional as F
from retrievalkit.evaluate import leave_one_out_map
from retrievalkit.train.heads import LearnedAttention
from retrievalkit.rows import NotFittedError

ALL_KINDS = ("crow", "sum", "max", "cam", "learned")


def feature_maps(n=3, c=6, h=5, w=7, seed=0, relu=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g)
    return x.relu() if relu else x


def cam_head(c=6, k=9, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, c, generator=g), torch.randn(k, generator=g)


# --------------------------------------------------------------------------- shapes and signs
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("hw", [(5, 7), (7, 5), (1, 1)])
@pytest.mark.parametrize("relu", [True, False])
def test_every_map_is_non_negative_with_the_feature_maps_spatial_size(n, hw, relu):
    x = feature_maps(n=n, h=hw[0], w=hw[1], relu=relu)
    w, b = cam_head()
    maps = A.attention_maps(x, ALL_KINDS, fc_weight=w, fc_bias=b, top_classes=3, head=A.AttentionHead(6, hidden=8))
    assert set(maps) == set(ALL_KINDS)
    for kind, m in maps.items():
        assert m.shape == (n, *hw), kind
        assert torch.isfinite(m).all() and (m >= 0).all(), kind
    channel = A.channel_attention(x)
    assert channel.shape == (n, 6) and (channel >= 0).all()


def test_attention_maps_default_kinds_follow_the_arguments_and_missing_inputs_are_explained():
    x = feature_maps()
    assert set(A.attention_maps(x)) == {"crow", "sum", "max"}
    assert set(A.attention_maps(x, fc_weight=cam_head()[0])) == {"crow", "sum", "max", "cam"}
    with pytest.raises(ValueError, match="fc_weight"):
        A.attention_maps(x, ("cam",))
    with pytest.raises(ValueError, match="head"):
        A.attention_maps(x, ("learned",))
    with pytest.raises(ValueError, match="unknown"):
        A.spatial_attention(x, "mean")


# --------------------------------------------------------------------------- non-parametric against loops
@pytest.mark.parametrize("relu", [True, False])
def test_sum_and_max_maps_match_a_direct_loop(relu):
    x = feature_maps(n=2, c=4, h=3, w=5, relu=relu)
    n, c, h, w = x.shape
    for kind, reduce in (("sum", sum), ("max", max)):
        expected = torch.zeros(n, 1, h, w)
        for i in range(n):
            for r in range(h):
                for s in range(w):
                    expected[i, 0, r, s] = max(0.0, float(reduce(x[i, k, r, s] for k in range(c))))
            expected[i] /= expected[i].max()
        torch.testing.assert_close(A.spatial_attention(x, kind), expected)
        assert torch.allclose(A.spatial_attention(x, kind).amax(dim=(-2, -1)), torch.ones(n, 1))


def test_channel_attention_is_crows_idf_like_channel_weights():
    x = feature_maps(n=2, c=5, h=4, w=6)
    n, c, h, w = x.shape
    torch.testing.assert_close(A.channel_attention(x), F.crow_channel_weights(x))
    eps = F.DEFAULT_EPS
    for i in range(n):
        q = [float((x[i, k] > 0).sum()) / (h * w) for k in range(c)]
        for k in range(c):
            assert A.channel_attention(x)[i, k].item() == pytest.approx(np.log((c * eps + sum(q)) / (eps + q[k])), rel=1e-5)


def test_crow_spatial_map_and_channel_weights_reproduce_crow_pooling():
    x = feature_maps(n=3, c=8, h=6, w=4)
    pooled = A.attention_pool(x, A.spatial_attention(x, "crow"), A.channel_attention(x))
    torch.testing.assert_close(F.l2n(pooled), F.l2n(F.crow(x)))


def test_cam_attention_is_the_rescaled_mean_of_the_top_class_maps_computed_by_hand():
    x = feature_maps(n=2, c=6, h=4, w=5)
    w, b = cam_head()
    top = 3
    out = A.cam_attention(x, w, b, top_classes=top)
    for i in range(2):
        logits = [float((w[k] * x[i].mean(dim=(1, 2))).sum() + b[k]) for k in range(len(w))]
        best = np.argsort(logits)[::-1][:top]
        cams = [torch.einsum("c,chw->hw", w[k], x[i]).relu() for k in best]
        combined = sum(m / m.max() for m in cams) / top
        torch.testing.assert_close(out[i, 0], combined / combined.max())


# --------------------------------------------------------------------------- attention pooling identities
def test_attention_pool_with_a_uniform_map_is_average_pooling_and_gem():
    x = feature_maps(n=3, c=6, h=5, w=7) + 0.1
    for uniform in (None, torch.full((3, 1, 5, 7), 3.7), torch.ones(3, 5, 7)):
        torch.testing.assert_close(A.attention_pool(x, uniform), F.avg_pool(x))
        torch.testing.assert_close(A.attention_pool(x, uniform, p=3), F.gem(x, p=3))


def test_attention_pool_with_a_one_hot_map_returns_that_positions_vector():
    x = feature_maps(n=3, c=6, h=5, w=7, relu=False)
    positions = [(0, 0), (4, 6), (2, 3)]
    one_hot = torch.zeros(3, 1, 5, 7)
    for i, (r, s) in enumerate(positions):
        one_hot[i, 0, r, s] = 0.25  # the map's scale must not matter
    pooled = A.attention_pool(x, one_hot)
    for i, (r, s) in enumerate(positions):
        torch.testing.assert_close(pooled[i], x[i, :, r, s])


def test_attention_pool_applies_channel_weights_and_rejects_maps_of_the_wrong_size():
    x = feature_maps()
    channel = torch.rand(3, 6)
    torch.testing.assert_close(A.attention_pool(x, channel=channel), F.avg_pool(x) * channel)
    with pytest.raises(ValueError, match="N×1×H×W"):
        A.attention_pool(x, torch.ones(3, 1, 4, 7))


# --------------------------------------------------------------------------- parametric head
def test_attention_head_scores_positions_and_pooling_is_l2_normalised():
    x = feature_maps(n=2, c=6, h=3, w=4)
    torch.manual_seed(0)
    pool = rnn.AttentionPooling(6, hidden=8)
    scores = pool.attention(x)
    assert scores.shape == (2, 1, 3, 4) and (scores > 0).all()
    out = pool(x)
    torch.testing.assert_close(torch.linalg.vector_norm(out, dim=1), torch.ones(2))
    # dividing by Σa only rescales rows: same direction as DELF's un-normalised weighted sum
    torch.testing.assert_close(out, F.l2n((scores * x).sum(dim=(-2, -1))))
    assert "in_channels=6, hidden=8" in repr(pool)
    assert rnn.AttentionPooling.from_head(pool.head).head is pool.head


def synthetic_maps(n_classes, per_class, c=16, h=4, w=5, n_signal=2, seed=0, label_offset=0):
    """Maps whose identity sits in ``n_signal`` random positions; the rest is strong class-free clutter.

    Clutter vectors come from a few shared background patterns with a larger channel sum than the
    class patterns, so average, CroW and MAC pooling are dominated by it; a head that learns to tell
    object positions from clutter turns the pooled vector into the class pattern.
    """
    rng = np.random.default_rng(seed)
    patterns = rng.random((n_classes, c)) * (rng.random((n_classes, c)) < 0.5) * 2
    background = rng.random((6, c)) * 3
    labels = np.repeat(np.arange(n_classes), per_class) + label_offset
    maps = np.empty((len(labels), c, h * w), np.float32)
    for i, label in enumerate(labels):
        maps[i] = (background[rng.integers(0, len(background), h * w)] * rng.uniform(0.5, 1.5, (h * w, 1))).T
        where = rng.choice(h * w, n_signal, replace=False)
        maps[i][:, where] = (patterns[label - label_offset] + 0.2 * rng.random((n_signal, c))).T
    return maps.reshape(len(labels), c, h, w), labels


TRAIN = dict(epochs=6, lr=1e-2, batch_size=32, seed=0, device="cpu")


def train(*data, hidden=32, **kw):
    model = LearnedAttention(hidden, **{**TRAIN, **kw}).fit(*data)
    return model.head_, model.history_


@pytest.fixture(scope="module")
def learn_and_val():
    maps_learn, labels_learn = synthetic_maps(10, 16, seed=1)
    # validation: other objects, as when the caller carves validation objects out of the learning split
    maps_val, labels_val = synthetic_maps(6, 16, seed=2, label_offset=100)
    return maps_learn.astype(np.float16), labels_learn, maps_val, labels_val


@pytest.fixture(scope="module")
def trained(learn_and_val):
    return train(*learn_and_val)


def test_training_lowers_the_loss_and_improves_validation_map(learn_and_val, trained):
    head, history = trained
    assert [r["epoch"] for r in history] == list(range(TRAIN["epochs"] + 1))
    before, best = history[0], max(history, key=lambda r: r["val_mAP"])
    assert history[-1]["loss"] < 0.8 * before["loss"]
    assert best["val_mAP"] > before["val_mAP"] + 0.4
    # the learned attention beats the non-parametric poolings it started from
    _, _, maps_val, labels_val = learn_and_val
    x = torch.as_tensor(maps_val)
    learned = leave_one_out_map(A.attention_descriptors(maps_val, head), labels_val)
    for baseline in (F.avg_pool(x), F.crow(x), F.mac(x)):
        assert learned > leave_one_out_map(F.l2n(baseline).numpy(), labels_val) + 0.3


def test_the_returned_head_is_the_best_validation_epoch(learn_and_val, trained):
    head, history = trained
    _, _, maps_val, labels_val = learn_and_val
    best = max(r["val_mAP"] for r in history)
    assert history[-1]["val_mAP"] != best  # this run overfits at the end, so the choice matters
    assert leave_one_out_map(A.attention_descriptors(maps_val, head), labels_val) == pytest.approx(best)
    assert not head.training


def test_training_is_seeded(learn_and_val, trained):
    _, history = train(*learn_and_val)
    assert history == trained[1]
    _, other = train(*learn_and_val, seed=1, epochs=1)
    assert other != trained[1][:2]


def test_training_rejects_mismatched_labels(learn_and_val):
    maps_learn, labels_learn, maps_val, labels_val = learn_and_val
    with pytest.raises(ValueError, match="one label per map"):
        train(maps_learn, labels_learn[:-1])
    with pytest.raises(ValueError, match="go together"):
        train(maps_learn, labels_learn, maps_val, None)


def test_learned_attention_is_an_estimator(learn_and_val, trained):
    maps_learn, labels_learn, maps_val, _ = learn_and_val
    with pytest.raises(NotFittedError, match="not fitted"):
        LearnedAttention().transform(maps_val)
    model = LearnedAttention(32, **{**TRAIN, "epochs": 2}).fit(maps_learn, labels_learn)
    assert model.best_epoch_ == 2 and [r["epoch"] for r in model.history_] == [0, 1, 2]  # no validation: last
    np.testing.assert_array_equal(model.transform(maps_val), A.attention_descriptors(maps_val, model.head_))
