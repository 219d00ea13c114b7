"""Pooling as pure tensor functions: convolutional feature maps ``N×C×H×W`` → descriptors ``N×C``.

Survey §2.3.1.1 (single feed-forward pass, Figure 2.6) and §2.3.2.1 (feature aggregation);
taught in notebooks/03_pooling.

Conventions
-----------
* Input: a float batch of feature maps ``N×C×H×W`` (usually the last convolutional layer,
  after its ReLU, so activations are non-negative). Any ``H, W ≥ 1`` works, square or not.
* Output: one descriptor per row, ``N×C``. Nothing here L2-normalises its output unless the
  function name says so (:func:`l2n`); the retrieval pipeline normalises (and whitens) later.
* Everything is vectorised over the batch; only R-MAC loops, over its three scales.

Figure 2.6 in one line each (``x`` is one ``C×H×W`` map, sums run over positions ``(i, j)``):

========  ==========================================================================
MAC       ``max_ij x[:, i, j]``                                   Razavian et al. 2016
SPoC      ``Σ_ij α_ij x[:, i, j]``, α a centred Gaussian          Babenko & Lempitsky 2015
GeM       ``(mean_ij x[:, i, j]^p)^(1/p)``                        Radenović et al. 2018
R-MAC     ``Σ_regions l2n(MAC(region))``                          Tolias et al. 2016
CroW      ``Ω ⊙ Σ_ij s_ij x[:, i, j]``, spatial s, channel Ω      Kalantidis et al. 2016
CAM       ``Σ_classes l2n(Σ_ij cam_c,ij x[:, i, j])``             Jimenez et al. 2017
========  ==========================================================================
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ..rows import DEFAULT_EPS, l2n, powerlaw  # noqa: F401  (re-exported: F.l2n, F.powerlaw)

RMAC_LEVELS = 3
RMAC_OVERLAP = 0.4
SPOC_SIGMA = 1 / 3
CAM_TOP_CLASSES = 10

_SPATIAL = (-2, -1)


# --------------------------------------------------------------------------- global pooling
def mac(x: torch.Tensor) -> torch.Tensor:
    """MAC, maximum activation of convolutions: spatial max per channel (Razavian et al. 2016; Tolias et al. 2016)."""
    return x.amax(dim=_SPATIAL)


def avg_pool(x: torch.Tensor) -> torch.Tensor:
    """Spatial mean per channel, i.e. :func:`spoc` without the centre prior and :func:`gem` with p = 1."""
    return x.mean(dim=_SPATIAL)


def gaussian_center_prior(h: int, w: int, sigma: float = SPOC_SIGMA, *, device=None, dtype=None) -> torch.Tensor:
    """SPoC's centre prior: an ``h×w`` Gaussian bump on the map centre, weights summing to 1.

    Babenko & Lempitsky 2015 set the standard deviation to one third of the distance from the
    centre to the closest border. Cells are read at their centres ``(i + ½, j + ½)``, the map
    centre is ``(h/2, w/2)`` and the closest border is ``min(h, w)/2`` away, so the standard
    deviation in cells is ``sigma · min(h, w) / 2`` (``sigma = 1/3`` by default). Normalising
    the weights to sum 1 makes SPoC a weighted *average*: without the prior it is the plain mean.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0 (a fraction of the centre-to-border distance), got {sigma}")
    std = sigma * min(h, w) / 2
    ys = torch.arange(h, device=device, dtype=dtype or torch.float32) + 0.5 - h / 2
    xs = torch.arange(w, device=device, dtype=dtype or torch.float32) + 0.5 - w / 2
    prior = torch.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * std ** 2))
    return prior / prior.sum()


def spoc(x: torch.Tensor, center_prior: bool = False, sigma: float = SPOC_SIGMA) -> torch.Tensor:
    """SPoC, sum-pooled convolutional features (Babenko & Lempitsky 2015), as a weighted average.

    Without the prior this is the spatial mean; with it, each position is weighted by
    :func:`gaussian_center_prior` (objects of interest tend to sit near the image centre).
    The weights sum to 1, so the result differs from the paper's sum only by a constant factor,
    which the later L2 normalisation removes.
    """
    if not center_prior:
        return avg_pool(x)
    return (x * gaussian_center_prior(*x.shape[-2:], sigma, device=x.device, dtype=x.dtype)).sum(dim=_SPATIAL)


def gem(x: torch.Tensor, p: float | torch.Tensor = 3.0, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """GeM, generalised-mean pooling ``(mean x^p)^(1/p)`` (Radenović, Tolias & Chum 2018).

    p = 1 is average pooling, p → ∞ tends to MAC; ``p`` may be a float or a (learnable) tensor.
    Activations are clamped at ``eps`` (the power needs positive inputs). For numerical range each
    channel is divided by its maximum ``m`` and multiplied back after: GeM is 1-homogeneous,
    ``gem(x) = m·gem(x/m)``, so value and gradient are unchanged, while ``(x/m)^p ≤ 1`` can no longer
    overflow float32 (p = 500 on activations of 50 would) and the largest term stays exactly 1.
    The price is rounding: at p = 1 the result matches the plain average to float precision
    (a few ulp), not bit for bit.
    """
    x = x.clamp(min=eps)
    m = x.detach().amax(dim=_SPATIAL, keepdim=True)  # detached: by homogeneity the gradient through m cancels
    return (x / m).pow(p).mean(dim=_SPATIAL).pow(1.0 / p) * m[..., 0, 0]


# --------------------------------------------------------------------------- R-MAC
def _long_side_count(short: int, long: int, overlap: float) -> int:
    """Number of side-``short`` squares along the long side at the coarsest R-MAC scale.

    A square map needs one. Otherwise ``n ≥ 2`` squares are spread evenly from one end to the
    other, so consecutive squares are ``(long - short)/(n - 1)`` apart and overlap by the fraction
    ``1 - (long - short) / ((n - 1)·short)``; we take the ``n`` whose overlap is closest to the
    target (ties: fewer squares). Overlap grows with ``n``, so only the two integers around the
    exact solution ``n - 1 = (long - short) / ((1 - overlap)·short)`` need checking.
    """
    if long == short:
        return 1
    ideal = (long - short) / ((1 - overlap) * short)
    candidates = {max(1, math.floor(ideal)), max(1, math.ceil(ideal))}
    best = min(candidates, key=lambda k: (abs(1 - (long - short) / (k * short) - overlap), k))
    return best + 1


def _starts(size: int, side: int, n: int) -> list[int]:
    """``n`` start offsets of windows of length ``side`` spread evenly over ``size`` (integer floor; last one flush)."""
    if n == 1:
        return [(size - side) // 2]
    return [(k * (size - side)) // (n - 1) for k in range(n)]


def rmac_regions(h: int, w: int, levels: int = RMAC_LEVELS, overlap: float = RMAC_OVERLAP) -> list[tuple[int, int, int, int]]:
    """The R-MAC region grid of Tolias, Sicre & Jégou 2016 on an ``h×w`` map: a list of ``(i, j, height, width)``.

    ``(i, j)`` is the top-left cell (row, column). The rule, from the paper's description:

    1. Regions are squares. At scale ``l = 1 … levels`` their side is ``⌊2·min(h, w)/(l + 1)⌋``
       (at least 1), so scale 1 uses the largest square that fits, ``min(h, w)``.
    2. At scale 1, ``m`` squares are laid along the long side, ``m`` chosen so that consecutive
       squares overlap by as close to ``overlap`` (40 %) as possible while covering it end to
       end (``m = 1`` for a square map; see :func:`_long_side_count`).
    3. Scale ``l`` has ``l`` positions along the short side and ``l + m - 1`` along the long one,
       i.e. ``l·(l + m - 1)`` regions, spread uniformly with the first and last flush with the
       borders (start offsets are floored to whole cells).

    So a square map with ``levels = 3`` gives 1 + 4 + 9 = 14 regions; a 30×40 map gets ``m = 2``
    (overlap 2/3; ``m = 3`` would overlap 5/6) and 2 + 6 + 12 = 20 regions. Every region lies
    inside the map. On maps smaller than the grid (e.g. 1×1) regions coincide; they are kept, so
    the count always follows the rule above. We search every ``m``; implementations that cap
    the long-side count differ only for aspect ratios beyond about 1:4.
    """
    if h < 1 or w < 1:
        raise ValueError(f"feature map must be at least 1×1, got {h}×{w}")
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    return [(i, j, side, side) for rows, cols, side in _rmac_grid(h, w, levels, overlap) for i in rows for j in cols]


def _rmac_grid(h: int, w: int, levels: int, overlap: float) -> list[tuple[list[int], list[int], int]]:
    """Per scale, ``(row starts, column starts, side)`` of :func:`rmac_regions` (its regions are every pair)."""
    short, long = min(h, w), max(h, w)
    m = _long_side_count(short, long, overlap)
    grid = []
    for level in range(1, levels + 1):
        side = max(1, (2 * short) // (level + 1))
        n_short, n_long = level, level + m - 1
        n_rows, n_cols = (n_short, n_long) if h <= w else (n_long, n_short)
        grid.append((_starts(h, side, n_rows), _starts(w, side, n_cols), side))
    return grid


def rmac(
    x: torch.Tensor,
    levels: int = RMAC_LEVELS,
    overlap: float = RMAC_OVERLAP,
    eps: float = DEFAULT_EPS,
    region_whiten: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """R-MAC, regional MAC (Tolias, Sicre & Jégou 2016): MAC of every :func:`rmac_regions` square,
    each L2-normalised, then summed. Not L2-normalised at the end.

    In the paper each regional vector is PCA-whitened (and re-normalised) before the sum; that is
    what ``region_whiten`` is for: a callable taking the ``(N·R)×C`` regional rows and returning
    ``(N·R)×D`` rows — e.g. the ``transform`` of a :class:`retrievalkit.whitening.PCAWhitening`
    fitted on learning-split *regional* vectors. Its output is L2-normalised before summing.
    """
    n, c, h, w = x.shape
    regions = rmac_regions(h, w, levels, overlap)  # also validates the arguments
    # One sliding-window max per scale (every side×side window at once), then the grid's windows:
    # the same maxima as slicing each region, in far fewer (and channels_last-friendly) kernels.
    x = x.contiguous(memory_format=torch.channels_last)
    parts = [torch.nn.functional.max_pool2d(x, side, stride=1)[:, :, rows][:, :, :, cols].flatten(2)
             for rows, cols, side in _rmac_grid(h, w, levels, overlap)]
    v = l2n(torch.cat(parts, dim=2).transpose(1, 2).contiguous(), eps)  # N×R×C, regions in rmac_regions order
    if region_whiten is not None:
        v = l2n(torch.as_tensor(region_whiten(v.reshape(n * len(regions), c))).reshape(n, len(regions), -1), eps)
    return v.sum(dim=1)


# --------------------------------------------------------------------------- CroW
def crow_spatial_weights(x: torch.Tensor, a: float = 2.0, b: float = 2.0, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """CroW's spatial weights ``N×H×W`` (Kalantidis, Mellina & Osindero 2016).

    Sum the map over channels (negative sums clamped to 0), divide by its ``a``-norm over
    positions, then take the ``b``-th root: ``s = (S / ‖S‖_a)^(1/b)``. Positions where many
    channels fire strongly get large weights.
    """
    s = x.sum(dim=1).clamp(min=0)
    return (s / s.pow(a).sum(dim=_SPATIAL, keepdim=True).pow(1.0 / a).clamp(min=eps)).pow(1.0 / b)


def crow_channel_weights(x: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """CroW's channel weights ``N×C``: an idf-like boost for sparse channels, per image.

    With ``q_k`` the fraction of positions where channel ``k`` is non-zero (> 0),
    ``Ω_k = log((C·eps + Σ_h q_h) / (eps + q_k))``: channels that fire rarely (small ``q_k``)
    carry more information, as rare words do in text retrieval.
    """
    q = (x > 0).to(x.dtype).mean(dim=_SPATIAL)
    return torch.log((x.shape[1] * eps + q.sum(dim=1, keepdim=True)) / (eps + q))


def crow(x: torch.Tensor, a: float = 2.0, b: float = 2.0, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """CroW, cross-dimensional weighting (Kalantidis et al. 2016): ``Ω ⊙ Σ_ij s_ij x[:, i, j]``.

    Spatially weighted sum pooling with :func:`crow_spatial_weights` (a = b = 2 in the paper),
    times :func:`crow_channel_weights`. Survey §2.3.2.3 (non-parametric attention, Figure 2.8b).
    """
    return crow_channel_weights(x, eps) * (x * crow_spatial_weights(x, a, b, eps)[:, None]).sum(dim=_SPATIAL)


# --------------------------------------------------------------------------- CAM
def class_activation_maps(
    x: torch.Tensor,
    fc_weight: torch.Tensor,
    fc_bias: torch.Tensor | None = None,
    top_classes: int = CAM_TOP_CLASSES,
    eps: float = DEFAULT_EPS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class activation maps (Zhou et al. 2016) of each image's top predicted classes.

    ``fc_weight`` (``K×C``) and ``fc_bias`` (``K``) are a classifier head that reads the *global
    average* of this very map (ResNet's ``fc``, EfficientNet's ``classifier``, GoogLeNet's ``fc``).
    The head scores ``avg_pool(x)``; for each of the ``top_classes`` best classes ``c`` the map is
    ``relu(Σ_k W[c, k]·x[k])``, divided by its maximum so it lies in [0, 1].
    Returns ``(cams N×T×H×W, classes N×T)``, ``T = min(top_classes, K)``, best class first.
    """
    if fc_weight.ndim != 2 or fc_weight.shape[1] != x.shape[1]:
        raise ValueError(f"fc_weight must be classes × channels with {x.shape[1]} channels, got {tuple(fc_weight.shape)}")
    fc_weight = fc_weight.to(device=x.device, dtype=x.dtype)
    logits = avg_pool(x) @ fc_weight.T + (0 if fc_bias is None else fc_bias.to(device=x.device, dtype=x.dtype))
    classes = logits.topk(min(int(top_classes), fc_weight.shape[0]), dim=1).indices
    cams = torch.einsum("ntc,nchw->nthw", fc_weight[classes], x).relu()
    return cams / cams.amax(dim=_SPATIAL, keepdim=True).clamp(min=eps), classes


def cam_weighted(
    x: torch.Tensor,
    fc_weight: torch.Tensor,
    fc_bias: torch.Tensor | None = None,
    top_classes: int = CAM_TOP_CLASSES,
    channel_weights: bool = False,
    eps: float = DEFAULT_EPS,
) -> torch.Tensor:
    """CAM-weighted pooling after Jimenez, Alvarez & Giró-i-Nieto 2017 ("class-weighted convolutional features").

    Recipe: take :func:`class_activation_maps` of the ``top_classes`` predicted classes; for each
    class, sum-pool the map weighted by its CAM (``Σ_ij cam_c,ij x[:, i, j]``), optionally times
    CroW's :func:`crow_channel_weights` (``channel_weights=True``, the survey's "CAM+CroW"); L2-normalise
    each class vector so every class counts equally; sum over classes. Not L2-normalised at the end.
    (The paper also PCA-whitens each class vector before the sum; apply whitening to the class
    vectors yourself if you need that step.) Survey §2.3.2.3 and Figure 2.6.
    """
    cams, _ = class_activation_maps(x, fc_weight, fc_bias, top_classes, eps)
    per_class = torch.einsum("nthw,nchw->ntc", cams, x)
    if channel_weights:
        per_class = per_class * crow_channel_weights(x, eps)[:, None]
    return l2n(per_class, eps).sum(dim=1)


__all__ = [
    "l2n", "powerlaw", "mac", "avg_pool", "gaussian_center_prior", "spoc", "gem",
    "rmac_regions", "rmac", "crow_spatial_weights", "crow_channel_weights", "crow",
    "class_activation_maps", "cam_weighted",
]
