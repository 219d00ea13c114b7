"""Each §2.4 loss against its equation written out with explicit loops on tiny tensors (Survey Eqs. 2.13–2.19)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from retrievalkit.evaluate import ap_from_ranks
from retrievalkit.finetune import losses as L


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


def test_squared_distance_is_eq_2_14():
    a, b, _ = _pairs()
    assert_allclose(L.sq_distance(a, b).numpy(), [_d(a[i], b[i]) for i in range(6)], rtol=1e-12)


def test_contrastive_is_eq_2_16():
    a, b, s = _pairs()
    m = 0.7
    want = np.mean([0.5 * s[i].item() * _d(a[i], b[i]) + 0.5 * (1 - s[i].item()) * max(0.0, m - _d(a[i], b[i]))
                    for i in range(6)])
    assert_allclose(L.ContrastiveLoss(m)(a, b, s).item(), want, rtol=1e-12)


def test_double_margin_is_eq_2_19_and_reduces_to_siamese_when_m1_is_zero():
    a, b, s = _pairs()
    m1, m2 = 0.1, 0.7
    want = np.mean([0.5 * s[i].item() * max(0.0, _d(a[i], b[i]) - m1)
                    + 0.5 * (1 - s[i].item()) * max(0.0, m2 - _d(a[i], b[i])) for i in range(6)])
    got = L.DoubleMarginContrastiveLoss(m1, m2)(a, b, s).item()
    assert_allclose(got, want, rtol=1e-12)
    siamese = L.ContrastiveLoss(m2)(a, b, s).item()
    assert got < siamese  # the close matching pair (D < m1) is no longer penalised
    assert_allclose(L.DoubleMarginContrastiveLoss(0.0, m2)(a, b, s).item(), siamese, rtol=1e-12)


def test_triplet_is_eq_2_17():
    a, p, n = _unit(5, 4, 2), _unit(5, 4, 3), _unit(5, 4, 4)
    m = 0.3
    want = np.mean([max(0.0, m + _d(a[i], p[i]) - _d(a[i], n[i])) for i in range(5)])
    assert_allclose(L.TripletLoss(m)(a, p, n).item(), want, rtol=1e-12)
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
    want = 0.7 * L.TripletLoss(0.4)(a, p, n) + 0.2 * joint.ce(desc, y)
    assert_allclose(joint(a, p, n, desc, y).item(), want.item(), rtol=1e-12)


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
    assert_allclose(reg(a, b, s).item(), np.mean(want), rtol=1e-10)
    full = reg.score(a, b)
    assert_allclose(torch.diagonal(full).numpy(), reg.pair_score(a, b).detach().numpy(), rtol=1e-10)
    fresh = L.PairRegressionLoss(5).double()
    assert_allclose(fresh.score(a, b).numpy(), (a @ b.T).numpy(), rtol=1e-10)  # W = [1, 0] → cosine


def test_tuple_pairs_and_triplets_follow_the_tuple_layout():
    t = torch.arange(2 * 5 * 3, dtype=torch.float64).view(2, 5, 3)  # 2 tuples: query, positive, 3 negatives
    a, b, s = L.tuple_pairs(t)
    want = [(t[i, 0], t[i, j], 1.0 if j == 1 else 0.0) for i in range(2) for j in range(1, 5)]
    for row, (qa, qb, qs) in enumerate(want):
        assert torch.equal(a[row], qa) and torch.equal(b[row], qb) and s[row].item() == qs
    a, p, n = L.tuple_triplets(t)
    want = [(t[i, 0], t[i, 1], t[i, j]) for i in range(2) for j in range(2, 5)]
    for row, (qa, qp, qn) in enumerate(want):
        assert torch.equal(a[row], qa) and torch.equal(p[row], qp) and torch.equal(n[row], qn)


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
