"""Pooling functions and modules (retrievalkit.nn): identities, the R-MAC grid, and explicit-loop references."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from retrievalkit import nn as rnn
from retrievalkit.nn import functional as F

SIZES = [(1, 1), (4, 4), (5, 7), (7, 5), (2, 9)]


def relu_maps(n=3, c=6, h=5, w=7, seed=0, dtype=torch.float32):
    """Post-ReLU-like maps: non-negative with a good share of exact zeros."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, h, w, generator=g, dtype=dtype).relu()


def positive_maps(n=3, c=6, h=5, w=7, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, c, h, w, generator=g) + 0.05) * scale


def cam_head(c=6, k=9, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, c, generator=g), torch.randn(k, generator=g)


def make_module(name, c):
    if name == "cam":
        w, b = cam_head(c)
        return rnn.CAMPooling(w, b, top_classes=3)
    return rnn.POOLINGS[name]()


# --------------------------------------------------------------------------- GeM
def test_gem_p1_is_average_pooling():
    x = positive_maps(scale=37.0)
    torch.testing.assert_close(F.gem(x, p=1), F.spoc(x), rtol=1e-6, atol=0)
    torch.testing.assert_close(F.gem(x, p=1), x.mean(dim=(-2, -1)), rtol=1e-6, atol=0)
    torch.testing.assert_close(rnn.GeM(p=1, learn_p=False)(x), F.avg_pool(x), rtol=1e-6, atol=0)


@pytest.mark.parametrize("scale", [1.0, 50.0])
def test_gem_large_p_approaches_mac(scale):
    x = positive_maps(h=7, w=7, scale=scale)
    big = F.gem(x, p=500)
    assert torch.isfinite(big).all()  # the naive x**500 overflows float32 at scale 50
    # mean of powers is between max^p / HW and max^p, so GeM lies in [MAC·(1/HW)^(1/p), MAC]
    mac = F.mac(x)
    assert (big <= mac * (1 + 1e-6)).all()
    assert (big >= mac * (1 / 49) ** (1 / 500) * (1 - 1e-6)).all()
    torch.testing.assert_close(big, mac, rtol=1e-2, atol=0)
    # and GeM grows with p towards MAC
    assert (F.gem(x, p=3) < F.gem(x, p=30)).all() and (F.gem(x, p=30) < big).all()


def test_gem_gradients_match_the_textbook_formula():
    x = positive_maps().double().requires_grad_()
    p = torch.tensor([2.7], dtype=torch.float64, requires_grad=True)
    ours = torch.autograd.grad(F.gem(x, p).sum(), (x, p))
    naive = torch.autograd.grad(x.clamp(min=1e-6).pow(p).mean(dim=(-2, -1)).pow(1 / p).sum(), (x, p))
    for a, b in zip(ours, naive):
        torch.testing.assert_close(a, b)


def test_gem_learnable_p_is_a_parameter_with_gradient():
    m = rnn.GeM(p=3.0, learn_p=True)
    assert isinstance(m.p, nn.Parameter) and [n for n, _ in m.named_parameters()] == ["p"]
    m(positive_maps()).sum().backward()
    assert m.p.grad is not None and m.p.grad.abs().item() > 0
    fixed = rnn.GeM(p=3.0, learn_p=False)
    assert not isinstance(fixed.p, nn.Parameter) and list(fixed.parameters()) == []
    assert "p" in dict(fixed.named_buffers())


# --------------------------------------------------------------------------- R-MAC grid
def grid(starts_i, starts_j, side):
    return [(i, j, side, side) for i in starts_i for j in starts_j]


def test_rmac_regions_square_7x7():
    # sides ⌊2·7/(l+1)⌋ = 7, 4, 3; square map → l×l positions, first and last flush with the borders
    expected = grid([0], [0], 7) + grid([0, 3], [0, 3], 4) + grid([0, 2, 4], [0, 2, 4], 3)
    assert F.rmac_regions(7, 7, levels=3) == expected
    assert len(expected) == 1 + 4 + 9


def test_rmac_regions_30x40():
    # short 30, long 40: 2 squares of 30 overlap 2/3, 3 overlap 5/6 → m = 2 (closest to 40 %)
    # scale l has l rows × (l + 1) columns; sides 30, 20, 15
    expected = (
        grid([0], [0, 10], 30)
        + grid([0, 10], [0, 10, 20], 20)
        + grid([0, 7, 15], [0, 8, 16, 25], 15)
    )
    assert F.rmac_regions(30, 40) == expected
    # the transposed map gets the transposed grid
    assert sorted(F.rmac_regions(40, 30)) == sorted((j, i, w, h) for i, j, h, w in expected)


def test_rmac_regions_tiny_4x4_and_1x1():
    assert F.rmac_regions(4, 4) == grid([0], [0], 4) + grid([0, 2], [0, 2], 2) + grid([0, 1, 2], [0, 1, 2], 2)
    assert F.rmac_regions(1, 1) == [(0, 0, 1, 1)] * 14  # coinciding regions are kept: the count follows the rule


def _overlap(short, long, n):
    return 1 - (long - short) / ((n - 1) * short)


@pytest.mark.parametrize("h,w", [(1, 1), (4, 4), (7, 7), (30, 40), (40, 30), (10, 30), (3, 50), (13, 17), (1, 9), (6, 5)])
@pytest.mark.parametrize("levels", [1, 3, 4])
def test_rmac_regions_inside_and_counted_by_the_rule(h, w, levels):
    regions = F.rmac_regions(h, w, levels=levels)
    for i, j, rh, rw in regions:
        assert rh == rw >= 1 and 0 <= i and 0 <= j and i + rh <= h and j + rw <= w
    short, long = min(h, w), max(h, w)
    if short == long:
        m = 1
    else:  # brute force: the long-side count at scale 1 whose overlap is closest to 40 %
        m = min(range(2, 400), key=lambda n: (abs(_overlap(short, long, n) - 0.4), n))
    assert len(regions) == sum(lvl * (lvl + m - 1) for lvl in range(1, levels + 1))
    # scale 1 covers the whole map
    covered = torch.zeros(h, w, dtype=torch.bool)
    for i, j, rh, rw in regions[:m]:
        covered[i:i + rh, j:j + rw] = True
    assert covered.all()


def test_rmac_regions_rejects_bad_arguments():
    for bad in [dict(h=0, w=3), dict(h=3, w=3, levels=0), dict(h=3, w=3, overlap=1.0)]:
        with pytest.raises(ValueError):
            F.rmac_regions(**bad)


def test_rmac_against_region_loop():
    x = relu_maps(n=2, c=4, h=6, w=9)
    expected = torch.zeros(2, 4)
    for n in range(2):
        for i, j, rh, rw in F.rmac_regions(6, 9):
            v = x[n, :, i:i + rh, j:j + rw].reshape(4, -1).max(dim=1).values
            expected[n] += v / (v.norm() + 1e-6)
    torch.testing.assert_close(F.rmac(x), expected)
    # one level on a square map is just normalised MAC
    y = relu_maps(h=5, w=5)
    torch.testing.assert_close(F.rmac(y, levels=1), F.l2n(F.mac(y)))


def test_rmac_region_whiten_hook_gets_regional_rows():
    x = relu_maps(n=2, c=4, h=7, w=7)
    seen = []

    def hook(rows):
        seen.append(rows.shape)
        return rows[:, :2]  # a "projection" to 2-D

    out = F.rmac(x, region_whiten=hook)
    assert seen == [torch.Size([2 * 14, 4])] and out.shape == (2, 2)


# --------------------------------------------------------------------------- SPoC
def test_spoc_center_prior_sums_to_one_and_peaks_in_the_centre():
    prior = F.gaussian_center_prior(7, 9)
    assert prior.shape == (7, 9)
    torch.testing.assert_close(prior.sum(), torch.tensor(1.0))
    assert divmod(int(prior.argmax()), 9) == (3, 4)
    torch.testing.assert_close(prior, prior.flip(0).flip(1))
    # std = (1/3)·(distance from centre to the closest border) = 7/6 cells
    std = 7 / 6
    torch.testing.assert_close(prior[3, 5] / prior[3, 4], torch.tensor(math.exp(-1 / (2 * std ** 2))))
    torch.testing.assert_close(prior[4, 4] / prior[3, 4], torch.tensor(math.exp(-1 / (2 * std ** 2))))


def test_spoc_prior_favours_central_activations():
    x = torch.zeros(1, 2, 7, 9)
    x[0, 0, 3, 4] = 1.0  # channel 0 fires in the centre
    x[0, 1, 0, 0] = 1.0  # channel 1 fires in a corner
    plain, prior = F.spoc(x), F.spoc(x, center_prior=True)
    torch.testing.assert_close(plain[0, 0], plain[0, 1])
    assert prior[0, 0] > 10 * prior[0, 1]
    torch.testing.assert_close(prior[0, 0], F.gaussian_center_prior(7, 9).max())
    torch.testing.assert_close(rnn.SPoC(center_prior=True)(x), prior)


# --------------------------------------------------------------------------- CroW
def crow_loop(x, a=2.0, b=2.0, eps=1e-6):
    n_img, c, h, w = x.shape
    out = torch.zeros(n_img, c, dtype=torch.float64)
    for n in range(n_img):
        s = [[max(0.0, sum(float(x[n, k, i, j]) for k in range(c))) for j in range(w)] for i in range(h)]
        norm = sum(s[i][j] ** a for i in range(h) for j in range(w)) ** (1 / a)
        alpha = [[(s[i][j] / max(norm, eps)) ** (1 / b) for j in range(w)] for i in range(h)]
        q = [sum(1 for i in range(h) for j in range(w) if x[n, k, i, j] > 0) / (h * w) for k in range(c)]
        for k in range(c):
            omega = math.log((c * eps + sum(q)) / (eps + q[k]))
            out[n, k] = omega * sum(alpha[i][j] * float(x[n, k, i, j]) for i in range(h) for j in range(w))
    return out


@pytest.mark.parametrize("a,b", [(2.0, 2.0), (1.0, 1.0), (3.0, 0.5)])
def test_crow_against_python_loop(a, b):
    x = relu_maps(n=2, c=5, h=3, w=4, dtype=torch.float64)
    x[0, 2] = 0.0  # a dead channel
    torch.testing.assert_close(F.crow(x, a, b), crow_loop(x, a, b))


def test_crow_channel_weights_favour_sparse_channels():
    x = torch.zeros(1, 2, 4, 4)
    x[0, 0] = 1.0          # dense channel
    x[0, 1, 0, 0] = 1.0    # sparse channel
    omega = F.crow_channel_weights(x)
    assert omega[0, 1] > omega[0, 0]


# --------------------------------------------------------------------------- CAM
def cam_loop(x, weight, bias, top):
    n_img, c, h, w = x.shape
    out = torch.zeros(n_img, c, dtype=torch.float64)
    for n in range(n_img):
        pooled = [float(x[n, k].mean()) for k in range(c)]
        logits = [sum(weight[cls, k] * pooled[k] for k in range(c)) + bias[cls] for cls in range(weight.shape[0])]
        classes = sorted(range(len(logits)), key=lambda cls: -float(logits[cls]))[:top]
        for cls in classes:
            cam = [[max(0.0, sum(float(weight[cls, k] * x[n, k, i, j]) for k in range(c))) for j in range(w)] for i in range(h)]
            peak = max(max(row) for row in cam)
            f = [sum(cam[i][j] / max(peak, 1e-6) * float(x[n, k, i, j]) for i in range(h) for j in range(w)) for k in range(c)]
            norm = math.sqrt(sum(v * v for v in f))
            for k in range(c):
                out[n, k] += f[k] / (norm + 1e-6)
    return out


def test_cam_weighted_against_python_loop():
    x = relu_maps(n=2, c=4, h=3, w=5, dtype=torch.float64)
    weight, bias = (t.double() for t in cam_head(c=4, k=6))
    got = F.cam_weighted(x, weight, bias, top_classes=3)
    assert got.shape == (2, 4) and (got >= 0).all()
    torch.testing.assert_close(got, cam_loop(x, weight, bias, top=3))


def test_cam_maps_top_classes_and_clamping():
    x = relu_maps(n=2, c=4, h=3, w=5)
    weight, bias = cam_head(c=4, k=6)
    cams, classes = F.class_activation_maps(x, weight, bias, top_classes=100)  # more than K: all 6 classes
    assert cams.shape == (2, 6, 3, 5) and classes.shape == (2, 6)
    assert (cams >= 0).all() and (cams <= 1 + 1e-6).all()
    logits = x.mean(dim=(-2, -1)) @ weight.T + bias
    assert torch.equal(classes[:, 0], logits.argmax(dim=1))
    with pytest.raises(ValueError, match="channels"):
        F.cam_weighted(x, torch.randn(6, 5))
    # CAM+CroW: channel weights scale the class vectors
    assert not torch.allclose(F.cam_weighted(x, weight, bias, 2), F.cam_weighted(x, weight, bias, 2, channel_weights=True))


# --------------------------------------------------------------------------- every pooling
@pytest.mark.parametrize("name", sorted(rnn.POOLINGS))
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("hw", SIZES)
def test_every_pooling_shape_and_batch_independence(name, n, hw):
    x = relu_maps(n=n, c=6, h=hw[0], w=hw[1], seed=n) + 0.01  # + 0.01: no all-zero map
    module = make_module(name, 6)
    out = module(x)
    assert out.shape == (n, 6) and out.dtype == x.dtype and torch.isfinite(out).all()
    # vectorised over the batch: pooling one image at a time gives the same rows
    torch.testing.assert_close(torch.cat([module(x[i:i + 1]) for i in range(n)]), out)


def test_modules_match_functions_and_registry():
    x = relu_maps()
    torch.testing.assert_close(rnn.MAC()(x), F.mac(x))
    torch.testing.assert_close(rnn.SPoC()(x), F.spoc(x))
    torch.testing.assert_close(rnn.RMAC(levels=2)(x), F.rmac(x, levels=2))
    torch.testing.assert_close(rnn.CroW()(x), F.crow(x))
    torch.testing.assert_close(rnn.pool("gem", x, p=4.0), F.gem(x, 4.0))
    w, b = cam_head(c=6)
    torch.testing.assert_close(rnn.CAMPooling.from_linear(_linear(w, b), top_classes=2)(x), F.cam_weighted(x, w, b, 2))
    with pytest.raises(ValueError, match="unknown pooling"):
        rnn.pool("median", x)


def _linear(w, b):
    lin = nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        lin.weight.copy_(w)
        lin.bias.copy_(b)
    return lin


def test_module_reprs_show_parameters():
    assert repr(rnn.GeM(p=2.5, learn_p=False)) == "GeM(p=2.5000, eps=1e-06, learn_p=False)"
    assert repr(rnn.RMAC(levels=4)) == "RMAC(levels=4, overlap=0.4)"
    assert repr(rnn.SPoC(center_prior=True)) == "SPoC(center_prior=True, sigma=0.3333)"
    assert repr(rnn.CroW(a=3)) == "CroW(a=3, b=2.0)"
    assert "top_classes=5" in repr(rnn.CAMPooling(torch.zeros(10, 4), top_classes=5))
    assert repr(rnn.MAC()) == "MAC()"


# --------------------------------------------------------------------------- normalisation
def test_l2n_and_powerlaw():
    v = torch.tensor([[3.0, -4.0], [0.0, 0.0]])
    torch.testing.assert_close(F.l2n(v), torch.tensor([[0.6, -0.8], [0.0, 0.0]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(F.powerlaw(torch.tensor([4.0, -9.0, 0.0])), torch.tensor([2.0, -3.0, 0.0]))
    z = torch.zeros(3, requires_grad=True)
    F.powerlaw(z).sum().backward()
    assert torch.isfinite(z.grad).all()
    # exact values, no clamp (the old copy clamped |x| at 1e-6 and returned 1e-3 here)
    tiny = torch.tensor([1e-8, -1e-8], dtype=torch.float64)
    torch.testing.assert_close(rnn.PowerLaw()(tiny), torch.tensor([1e-4, -1e-4], dtype=torch.float64))
    assert repr(rnn.PowerLaw(0.3)) == "PowerLaw(alpha=0.3)"
