"""Each §2.4 loss against its equation written out with explicit loops on tiny tensors (Survey Eqs. 2.13–2.19),
called the pytorch-metric-learning way: ``loss(embeddings, labels, indices_tuple)``."""
from __future__ import annotations

import copy
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
        "ap": ("labels", True), "npair": ("labels", True), "lifted": ("labels", True),
        "proxy_nca": ("labels", True), "quadruplet": ("labels", True)}
    assert L.build("proxy_nca", 8, 3, scale=2.0).proxies.shape == (3, 8)
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


# --------------------------------------------------------------------------- more losses of Figure 2.10
# Reference: pytorch-metric-learning (PML), whose distances normalise rows unless told not to; the tests
# switch that off so values AND gradients must agree on any rows (unit rows here, as the models give).
def _batch(seed=20, n=14, d=6):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 5, (n,), generator=gen)
    y[:4] = torch.tensor([0, 0, 1, 1])  # at least two classes with a pair
    return x / x.norm(dim=1, keepdim=True), y


def _value_and_grad(loss, x, y, indices_tuple=None):
    x = x.clone().requires_grad_(True)
    value = loss(x, y, indices_tuple)
    value.backward()
    return value.detach(), x.grad


def _agree(ours, theirs, x, y, indices_tuple=None):
    v1, g1 = _value_and_grad(ours, x, y, indices_tuple)
    v2, g2 = _value_and_grad(theirs, x, y, indices_tuple)
    assert v1.item() > 1e-3  # a case where the loss is at work
    assert abs(v1 - v2).item() < 1e-5 and (g1 - g2).abs().max().item() < 1e-5, (v1, v2, (g1 - g2).abs().max())


def test_npair_loss_equals_pytorch_metric_learning_npairs():
    """Sohn's L_i = log(1 + Σ_{j≠i} exp(x_i·x_j⁺ − x_i·x_i⁺)) = CE of x_i·[x⁺] with target i;
    PML's NPairsLoss with plain (unnormalised) dot products."""
    from pytorch_metric_learning import distances, losses as pml

    x, y = _batch()
    theirs = pml.NPairsLoss(distance=distances.DotProductSimilarity(normalize_embeddings=False))
    _agree(L.NPairLoss(), theirs, x, y)
    _agree(L.NPairLoss(), theirs, 2.5 * x, y)  # rows of any norm: no normalisation hides in either
    trip = L.all_triplets(y)
    _agree(L.NPairLoss(), theirs, x, y, trip)  # pairs from a tuple, one per anchor label
    a, p = L.NPairLoss().pairs(y)  # one pair per class with two rows, its first two rows
    want = [tuple(int(i) for i in torch.nonzero(y == c).flatten()[:2]) for c in y.unique() if (y == c).sum() > 1]
    assert sorted(zip(a.tolist(), p.tolist())) == sorted(want)
    i = torch.arange(len(a))  # Sohn's formula by hand
    s = x[a] @ x[p].T
    by_hand = torch.stack([torch.log(1 + torch.exp(s[k] - s[k, k])[i != k].sum()) for k in i]).mean()
    assert_allclose(L.NPairLoss()(x, y).item(), by_hand.item(), rtol=1e-12)


def test_lifted_structure_loss_equals_pytorch_metric_learning_with_zero_positive_margin():
    """Oh Song et al.'s J_ij = log(Σ_neg(i) e^(α−d) + Σ_neg(j) e^(α−d)) + d_ij, L = 1/(2|P|) Σ max(0, J)²,
    d Euclidean: PML's LiftedStructureLoss(neg_margin=α, pos_margin=0) with the (unnormalised) Euclidean LpDistance."""
    from pytorch_metric_learning import distances, losses as pml

    x, y = _batch()
    for alpha in (1.0, 0.3):
        theirs = pml.LiftedStructureLoss(neg_margin=alpha, pos_margin=0,
                                         distance=distances.LpDistance(normalize_embeddings=False))
        _agree(L.LiftedStructureLoss(alpha), theirs, x, y)
        a, b, same = L.all_pairs(y)  # a tuple of some pairs, PML's (a1, p, a2, n)
        keep = torch.rand(len(a), generator=torch.Generator().manual_seed(4)) < 0.6
        a, b, same = a[keep], b[keep], same[keep]
        _agree(L.LiftedStructureLoss(alpha), theirs, x, y, (a[same], b[same], a[~same], b[~same]))
    d = torch.cdist(x, x)  # the paper's sum over unordered positive pairs, by hand
    terms = []
    for i in range(len(y)):
        for j in range(i + 1, len(y)):
            if y[i] == y[j]:
                neg = torch.cat([1.0 - d[i, y != y[i]], 1.0 - d[j, y != y[j]]])
                terms.append(max(0.0, (torch.log(torch.exp(neg).sum()) + d[i, j]).item()) ** 2)
    assert_allclose(L.LiftedStructureLoss(1.0)(x, y).item(), sum(terms) / (2 * len(terms)), rtol=1e-10)


def test_proxy_nca_loss_equals_pytorch_metric_learning_with_the_same_proxies():
    """−log softmax_y(−s·||x̂ − p̂_c||²) over all proxies: PML's ProxyNCALoss (normalised squared L2),
    given our proxies."""
    from pytorch_metric_learning import losses as pml

    x, y = _batch()
    torch.manual_seed(0)
    for scale in (1.0, 4.0):  # eps: PML divides by max(|x|, 1e-12), l2n by |x| + eps (default 1e-6: a 1e-6 offset)
        ours = L.ProxyNCALoss(6, 5, scale=scale, eps=1e-12).double()
        theirs = pml.ProxyNCALoss(5, 6, softmax_scale=scale).double()
        with torch.no_grad():
            theirs.proxies.copy_(ours.proxies)
        _agree(ours, theirs, 3 * x, y)  # both normalise rows (and proxies) themselves
        assert (ours.proxies.grad - theirs.proxies.grad).abs().max().item() < 1e-5


def test_quadruplet_loss_is_the_mean_over_every_quadruplet_written_as_a_loop():
    x, y = _unit(7, 4, 21), torch.tensor([0, 0, 1, 1, 2, 0, 3])
    m1, m2 = 0.6, 0.3
    terms = []
    for a in range(7):
        for p in range(7):
            for n1 in range(7):
                for n2 in range(7):
                    if a != p and y[a] == y[p] and y[n1] != y[a] and y[n2] != y[a] and y[n2] != y[n1]:
                        terms.append(max(0.0, m1 + _d(x[a], x[p]) - _d(x[a], x[n1]))
                                     + max(0.0, m2 + _d(x[a], x[p]) - _d(x[n1], x[n2])))
    loss = L.QuadrupletLoss(m1, m2)
    # class 0: 6 ordered positive pairs × 10 ordered (n1, n2) of the rows 2, 3, 4, 6 (4·3 less the pair (2, 3) twice);
    # class 1: 2 × 14 (5·4 ordered pairs of the rows 0, 1, 4, 5, 6 less the 3·2 inside class 0)
    assert len(terms) == 6 * 10 + 2 * 14 and np.mean(terms) > 0
    assert_allclose(loss(x, y).item(), np.mean(terms), rtol=1e-12)
    assert_allclose(np.sort(loss.terms(x, y).numpy()), np.sort(terms), rtol=1e-12)
    quads = [(0, 1, 2, 4), (5, 0, 6, 3)]  # given as an index tuple
    idx = tuple(torch.tensor(c) for c in zip(*quads))
    want = [max(0.0, m1 + _d(x[a], x[p]) - _d(x[a], x[n])) + max(0.0, m2 + _d(x[a], x[p]) - _d(x[n], x[o]))
            for a, p, n, o in quads]
    assert_allclose(loss(x, y, idx).item(), np.mean(want), rtol=1e-12)
    x_req = x.clone().requires_grad_(True)
    loss(x_req, y).backward()  # the gradient of the mean, by finite differences on one coordinate
    e = torch.zeros_like(x)
    e[0, 1] = 1e-6
    assert_allclose(x_req.grad[0, 1].item(), ((loss(x + e, y) - loss(x - e, y)) / 2e-6).item(), rtol=1e-5)


def _new_losses():
    return [L.NPairLoss(), L.LiftedStructureLoss(), L.ProxyNCALoss(6, 5).double(), L.QuadrupletLoss()]


@pytest.mark.parametrize("case", ["single class", "one sample in a class", "all rows equal"])
@pytest.mark.parametrize("k", range(4), ids=["npair", "lifted", "proxy_nca", "quadruplet"])
def test_new_losses_survive_hostile_batches(case, k):
    x, y = _batch(n=8)
    if case == "single class":
        y = torch.zeros(8, dtype=torch.long)
    elif case == "one sample in a class":
        y = torch.tensor([0, 0, 1, 1, 2, 3, 3, 4])  # classes 2 and 4 have no positive
    else:
        x = x[:1].expand(8, -1).clone()
        y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    loss = _new_losses()[k]
    value, grad = _value_and_grad(loss, x, y)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    if case == "single class" and k != 2:  # no negative in the batch: nothing to push apart
        assert value.item() == 0.0 and (grad == 0).all()
    if case == "all rows equal" and k == 1:  # every d = 0: J = log(2·(#negatives)·e^α) for each positive pair
        assert_allclose(value.item(), 0.5 * (np.log(2 * 6) + 1.0) ** 2, rtol=1e-5)
    if case == "one sample in a class" and k == 3:  # the singletons are never anchors but still serve as negatives:
        # 6 ordered positive pairs; for each, the 6 rows of other classes give 6·5 ordered (n1, n2),
        # less the 2·2 that share a class
        assert len(loss.terms(x, y)) == 6 * (6 * 5 - 4)


def test_new_losses_fine_tune_one_epoch_on_random_maps():
    """The trainer runs an epoch with each of the four losses (m-per-class batches, proxies trained too)."""
    from retrievalkit.finetune import trainer as T

    gen = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 4)
    maps = (gen.normal(size=(24, 192, 4, 4)) + labels[:, None, None, None] * 0.3).astype(np.float32)
    data = T.TrainData(maps, labels, np.arange(24).astype(str))
    for name in ("npair", "lifted", "proxy_nca", "quadruplet"):
        cfg = T.FinetuneConfig(loss=name, epochs=2, select="last", batch_size=12, m=2 if name == "npair" else 4,
                               class_batches=2, seed=1)  # 12 = 3 classes × 4 rows: a quadruplet needs 3 classes
        torch.manual_seed(0)
        model = T.TailNet(weights=None)
        start = T.describe(copy.deepcopy(model), maps)
        res = T.finetune(data, None, cfg, model=model)
        losses = [h["loss"] for h in res.history[1:]]
        assert len(losses) == 2 and np.isfinite(losses).all() and losses[0] > 0, (name, losses)
        assert not np.allclose(T.describe(res.model, maps), start)  # the network learned
        if name == "proxy_nca":  # the proxies start at the class means and are trained with the network
            fresh = L.ProxyNCALoss(res.model.dim, 6)
            fresh.init_from_means(torch.as_tensor(start), torch.as_tensor(labels))
            assert not torch.allclose(fresh.proxies, res.loss_module.proxies.detach())
