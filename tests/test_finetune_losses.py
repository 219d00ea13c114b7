"""Each §2.4 loss against its equation written out with explicit loops on tiny tensors (Survey Eqs. 2.13–2.19),
called the pytorch-metric-learning way: ``loss(embeddings, labels, indices_tuple)``."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from retrievalkit.evaluate import ap_from_ranks
from retrievalkit.finetune import losses as L
from retrievalkit.finetune import miners


def _unit(n, d, seed):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x / x.norm(dim=1, keepdim=True)


def _d(a, b):  # Eq. 2.14, one pair
    return sum((float(a[k]) - float(b[k])) ** 2 for k in range(len(a)))


def _pairs():
    a, b = _unit(6, 5, 0), _unit(6, 5, 1)
    b[0] = a[0] + 0.01  # a close matching pair (inside m1) and a close non-matching pair (inside m)
    b[1] = a[1] + 0.02
    s = torch.tensor([1, 0, 1, 0, 1, 0], dtype=torch.float64)
    return a, b, s


def pairs(loss, a, b, s):
    """``loss`` on the pairs (a_i, b_i, s_i), given as rows of one batch and an index tuple."""
    i = torch.arange(len(a))
    return loss(torch.cat([a, b]), None, (i, i + len(a), s.bool()))


def triplets(loss, a, p, n, labels=None):
    i = torch.arange(len(a))
    return loss(torch.cat([a, p, n]), labels, (i, i + len(a), i + 2 * len(a)))


def test_squared_distance_is_eq_2_14():
    a, b, _ = _pairs()
    assert_allclose(L.sq_distance(a, b).numpy(), [_d(a[i], b[i]) for i in range(6)], rtol=1e-12)


def test_contrastive_is_eq_2_16():
    a, b, s = _pairs()
    m = 0.7
    want = np.mean([0.5 * s[i].item() * _d(a[i], b[i]) + 0.5 * (1 - s[i].item()) * max(0.0, m - _d(a[i], b[i]))
                    for i in range(6)])
    assert_allclose(pairs(L.ContrastiveLoss(m), a, b, s).item(), want, rtol=1e-12)


def test_double_margin_is_eq_2_19_and_reduces_to_siamese_when_m1_is_zero():
    a, b, s = _pairs()
    m1, m2 = 0.1, 0.7
    want = np.mean([0.5 * s[i].item() * max(0.0, _d(a[i], b[i]) - m1)
                    + 0.5 * (1 - s[i].item()) * max(0.0, m2 - _d(a[i], b[i])) for i in range(6)])
    got = pairs(L.DoubleMarginContrastiveLoss(m1, m2), a, b, s).item()
    assert_allclose(got, want, rtol=1e-12)
    siamese = pairs(L.ContrastiveLoss(m2), a, b, s).item()
    assert got < siamese  # the close matching pair (D < m1) is no longer penalised
    assert_allclose(pairs(L.DoubleMarginContrastiveLoss(0.0, m2), a, b, s).item(), siamese, rtol=1e-12)


def test_triplet_is_eq_2_17():
    a, p, n = _unit(5, 4, 2), _unit(5, 4, 3), _unit(5, 4, 4)
    m = 0.3
    want = np.mean([max(0.0, m + _d(a[i], p[i]) - _d(a[i], n[i])) for i in range(5)])
    assert_allclose(triplets(L.TripletLoss(m), a, p, n).item(), want, rtol=1e-12)
    assert want > 0  # the case is not trivially zero


def test_cosine_classifier_is_eq_2_13():
    x, y = _unit(4, 3, 5), torch.tensor([0, 2, 1, 2])
    ce = L.CosineClassifierLoss(3, 3, temperature=0.5).double()
    w = ce.weight.detach()
    total = 0.0
    for i in range(4):
        logits = [float(x[i] @ w[c]) / float(w[c].norm()) / 0.5 for c in range(3)]
        p_hat = [math.exp(v) / sum(math.exp(u) for u in logits) for v in logits]
        total += -sum((1.0 if c == y[i] else 0.0) * math.log(p_hat[c]) for c in range(3))
    assert_allclose(ce(x, y).item(), total / 4, rtol=1e-5)  # l2n adds eps=1e-6 to each norm


def test_joint_is_eq_2_18():
    a, p, n = _unit(3, 4, 6), _unit(3, 4, 7), _unit(3, 4, 8)
    desc, y = torch.cat([a, p, n]), torch.tensor([0, 1, 2, 0, 1, 2, 1, 2, 0])
    joint = L.JointLoss(4, 3, alpha=0.7, beta=0.2, margin=0.4).double()
    want = 0.7 * triplets(L.TripletLoss(0.4), a, p, n) + 0.2 * joint.ce(desc, y)
    assert_allclose(triplets(joint, a, p, n, y).item(), want.item(), rtol=1e-12)


def test_regression_is_eq_2_15_and_starts_as_cosine():
    a, b, s = _pairs()
    reg = L.PairRegressionLoss(5, margin=0.2).double()
    with torch.no_grad():
        reg.weight.add_(0.1 * torch.randn(10, dtype=torch.float64, generator=torch.Generator().manual_seed(9)))
    w = reg.weight.detach()
    want = []
    for i in range(6):
        phi = [float(a[i, k] * b[i, k]) for k in range(5)] + [abs(float(a[i, k] - b[i, k])) for k in range(5)]
        s_w = sum(w[k].item() * phi[k] for k in range(10))
        sim = float(a[i] @ b[i])
        want.append(abs(s_w - s[i].item() * (sim + 0.2) - (1 - s[i].item()) * (sim - 0.2)))
    assert_allclose(pairs(reg, a, b, s).item(), np.mean(want), rtol=1e-10)
    full = reg.score(a, b)
    assert_allclose(torch.diagonal(full).numpy(), reg.pair_score(a, b).detach().numpy(), rtol=1e-10)
    fresh = L.PairRegressionLoss(5).double()
    assert_allclose(fresh.score(a, b).numpy(), (a @ b.T).numpy(), rtol=1e-10)  # W = [1, 0] → cosine


def test_tuple_indices_follow_the_tuple_layout():
    # 2 tuples of 5 rows (query, positive, 3 negatives), flattened: tuple i starts at row 5i
    a, b, same = miners.tuple_indices(2, 5, "pairs")
    assert list(zip(a.tolist(), b.tolist(), same.tolist())) == [
        (5 * i, 5 * i + j, j == 1) for i in range(2) for j in range(1, 5)]
    a, p, n = miners.tuple_indices(2, 5, "triplets")
    assert list(zip(a.tolist(), p.tolist(), n.tolist())) == [(5 * i, 5 * i + 1, 5 * i + j) for i in range(2)
                                                             for j in range(2, 5)]


def _labelled(seed=12):
    return _unit(7, 4, seed), torch.tensor([0, 0, 1, 1, 1, 2, 0])


@pytest.mark.parametrize("loss", [L.ContrastiveLoss(0.7), L.DoubleMarginContrastiveLoss(0.1, 1.5),
                                  L.PairRegressionLoss(4).double()])
def test_pair_losses_without_tuples_use_every_ordered_pair_of_the_labels(loss):
    x, y = _labelled()
    ij = [(i, j) for i in range(7) for j in range(7) if i != j]
    a, b = torch.tensor([i for i, _ in ij]), torch.tensor([j for _, j in ij])
    loop = loss.pair_loss(x[a], x[b], (y[a] == y[b]).double())
    assert_allclose(loss(x, y).item(), loop.item(), rtol=1e-12)
    pml = (a[y[a] == y[b]], b[y[a] == y[b]], a[y[a] != y[b]], b[y[a] != y[b]])  # PML's (a1, p, a2, n)
    assert_allclose(loss(x, None, pml).item(), loss(x, None, L.as_pairs(pml)).item(), rtol=1e-12)


def test_triplet_loss_without_tuples_uses_every_valid_triplet_of_the_labels():
    x, y = _labelled()
    m, terms = 0.5, []
    for a in range(7):
        for p in range(7):
            for n in range(7):
                if a != p and y[a] == y[p] and y[n] != y[a]:
                    terms.append(max(0.0, m + _d(x[a], x[p]) - _d(x[a], x[n])))
    assert_allclose(L.TripletLoss(m)(x, y).item(), np.mean(terms), rtol=1e-12)


def test_every_loss_declares_what_its_batches_need_and_builds_from_its_name():
    assert {k: (v.needs, v.needs_labels) for k, v in L.LOSSES.items()} == {
        "ce": ("labels", True), "regression": ("pairs", False), "contrastive": ("pairs", False),
        "double_margin": ("pairs", False), "triplet": ("triplets", False), "joint": ("triplets", True),
        "ap": ("labels", True)}
    assert L.build("joint", 8, 3, beta=0.5).ce.weight.shape == (3, 8)
    assert L.build("regression", 8, 3).weight.shape == (16,)
    assert L.build("triplet", 8, 3, margin=0.2).margin == 0.2
    with pytest.raises(ValueError, match="unknown loss"):
        L.build("hinge", 8, 3)


def test_cosine_classifier_starts_at_the_class_means():
    x, y = _labelled()
    ce = L.CosineClassifierLoss(4, 3).double()
    ce.init_from_means(x, y)
    for c in range(3):
        assert_allclose(ce.weight[c].detach().numpy(), x[y == c].sum(0).numpy(), rtol=1e-12)
    raw = L.CosineClassifierLoss(4, 3, normalize_input=False).double()
    raw.weight.data.copy_(ce.weight.data)
    # unit rows: skipping their normalisation changes only the eps (1e-6) of the norm
    assert_allclose(raw.logits(3 * x).detach().numpy(), 3 * ce.logits(x).detach().numpy(), rtol=2e-6)


def test_binned_ap_equals_exact_ap_when_similarities_sit_on_distinct_bin_centres():
    ap = L.APLoss(bins=11)  # centres 1.0, 0.8, …, -1.0
    sim = torch.tensor([[1.0, 0.8, 0.6, 0.4, 0.2, 0.0, -0.2], [0.4, -1.0, 0.0, 0.8, 0.6, -0.4, 0.2]], dtype=torch.float64)
    pos = torch.tensor([[1, 0, 1, 0, 0, 1, 0], [0, 1, 0, 1, 1, 0, 0]], dtype=torch.bool)
    got = ap.binned_ap(sim, pos, torch.ones_like(pos)).numpy()
    for i in range(2):
        order = np.argsort(-sim[i].numpy(), kind="stable")
        ranks = [r for r, j in enumerate(order) if pos[i, j]]
        assert_allclose(got[i], ap_from_ranks(ranks, len(ranks), mode="finite"), rtol=1e-6)  # eps in precision


def test_ap_loss_is_one_minus_mean_soft_ap_and_falls_when_positives_come_closer():
    x, y = _unit(8, 6, 11), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    loss = L.APLoss(bins=21)
    assert_allclose(loss(x, y).item(), 1 - loss.soft_ap(x, y).mean().item(), rtol=1e-12)
    closer = x.clone()
    closer[1::2] = closer[0::2] + 0.05 * closer[1::2]  # each positive moves next to its partner
    assert loss(closer, y).item() < loss(x, y).item() - 0.2
    with pytest.raises(ValueError, match="positive"):
        L.APLoss()(x[:2], torch.tensor([0, 1]))  # no query has a positive: nothing to average


def test_ap_loss_rejects_too_few_bins():
    with pytest.raises(ValueError, match="at least 2 bins"):
        L.APLoss(bins=1)


@pytest.mark.parametrize("m1, m2", [(-0.1, 0.5), (0.5, 0.5), (0.7, 0.2)])
def test_double_margin_refuses_margins_out_of_order(m1, m2):
    with pytest.raises(ValueError, match="m1 < m2"):
        L.DoubleMarginContrastiveLoss(m1, m2)


def test_masked_mean_is_the_boolean_index_mean_with_the_same_gradient():
    from retrievalkit.finetune.losses import masked_mean

    gen = torch.Generator().manual_seed(3)
    v1 = torch.randn(6, 6, generator=gen, requires_grad=True)
    v2 = v1.detach().clone().requires_grad_(True)
    mask = torch.rand(6, 6, generator=gen) > 0.5
    a, b = masked_mean(v1, mask), v2[mask].mean()
    a.backward(), b.backward()
    assert torch.allclose(a, b) and torch.allclose(v1.grad, v2.grad)
    assert masked_mean(v1, torch.zeros(6, 6, dtype=torch.bool)).item() == 0.0
