"""Attention maps on convolutional features: which positions (and channels) a descriptor should listen to.

Survey §2.3.2.3, Figure 2.8; taught in notebooks/06_attention.

Figure 2.8 splits attention in two:

* **non-parametric** (a–b): weights computed from the activations themselves, nothing learned —
  :func:`channel_attention` (CroW's idf-like channel weights, Fig. 2.8a), :func:`spatial_attention`
  (CroW, channel-sum or channel-max maps, Fig. 2.8b) and :func:`cam_attention` (class activation
  maps of the backbone's own classifier, Jimenez et al. 2017);
* **parametric** (c): a small network scores every position — :class:`AttentionHead`, the 1×1 conv →
  ReLU → 1×1 conv → softplus block of DELF (Noh et al. 2017), trained on frozen backbone maps by
  :class:`retrievalkit.train.heads.LearnedAttention`, and :class:`AttentionPooling` which pools with it.

Shapes: maps in are ``N×C×H×W``; spatial attention is ``N×1×H×W`` (broadcasts against the maps),
channel attention ``N×C``; all attention weights are non-negative. :func:`attention_pool` turns a
map and/or channel weights into ``N×C`` descriptors (not L2-normalised, like everything in
:mod:`retrievalkit.nn.functional`); :class:`AttentionPooling` L2-normalises, being the end of a model.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from . import functional as F

SPATIAL_KINDS = ("crow", "sum", "max")
DEFAULT_HIDDEN = 512

_SPATIAL = (-2, -1)


# --------------------------------------------------------------------------- non-parametric (Figure 2.8 a–b)
def _max_normalise(m: torch.Tensor, eps: float = F.DEFAULT_EPS) -> torch.Tensor:
    """Divide each map by its own maximum, so it lies in [0, 1] (an all-zero map stays 0)."""
    return m / m.amax(dim=_SPATIAL, keepdim=True).clamp(min=eps)


def channel_attention(x: torch.Tensor, eps: float = F.DEFAULT_EPS) -> torch.Tensor:
    """Channel-wise attention ``N×C`` (Figure 2.8a): CroW's idf-like weights, rare channels count more.

    Exactly :func:`retrievalkit.nn.functional.crow_channel_weights` (Kalantidis et al. 2016); ≥ 0.
    Survey §2.3.2.3, Figure 2.8; taught in notebooks/06_attention.
    """
    return F.crow_channel_weights(x, eps)


def spatial_attention(x: torch.Tensor, kind: str = "crow", a: float = 2.0, b: float = 2.0,
                      eps: float = F.DEFAULT_EPS) -> torch.Tensor:
    """Spatial attention map ``N×1×H×W`` (Figure 2.8b), computed from the activations alone.

    * ``"crow"``: CroW's spatial weights ``(S / ‖S‖_a)^(1/b)`` with ``S`` the channel sum
      (:func:`retrievalkit.nn.functional.crow_spatial_weights`, unchanged so CroW is reproduced exactly).
    * ``"sum"``: the channel-summed activation ``Σ_c x[c]`` (negative sums clamped to 0), divided
      by its maximum: values in [0, 1], the strongest position at 1. Max rather than unit-sum
      normalisation keeps maps of different sizes comparable on a heat map; :func:`attention_pool`
      divides by the sum of weights anyway, so pooling does not depend on the choice.
    * ``"max"``: the channel-wise maximum ``max_c x[c]`` (clamped at 0), divided by its maximum.

    Survey §2.3.2.3, Figure 2.8; taught in notebooks/06_attention.
    """
    if kind == "crow":
        return F.crow_spatial_weights(x, a, b, eps)[:, None]
    if kind == "sum":
        return _max_normalise(x.sum(dim=1, keepdim=True).clamp(min=0), eps)
    if kind == "max":
        return _max_normalise(x.amax(dim=1, keepdim=True).clamp(min=0), eps)
    raise ValueError(f"unknown spatial attention {kind!r}; choose one of {SPATIAL_KINDS}")


def cam_attention(x: torch.Tensor, fc_weight: torch.Tensor, fc_bias: torch.Tensor | None = None,
                  top_classes: int = F.CAM_TOP_CLASSES, eps: float = F.DEFAULT_EPS) -> torch.Tensor:
    """One spatial map ``N×1×H×W`` from the class activation maps of each image's top classes.

    ``fc_weight`` / ``fc_bias`` are the backbone's global-average-pool classifier (see
    :func:`retrievalkit.nn.functional.class_activation_maps`). Each class map is in [0, 1]; we
    average the ``top_classes`` maps (every class counts the same, as in Jimenez et al. 2017, who
    L2-normalise per class) and rescale the result to maximum 1.
    Survey §2.3.2.3, Figure 2.8; taught in notebooks/06_attention.
    """
    cams, _ = F.class_activation_maps(x, fc_weight, fc_bias, top_classes, eps)
    return _max_normalise(cams.mean(dim=1, keepdim=True), eps)


def _as_spatial(spatial: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Accept ``N×1×H×W``, ``N×H×W`` or ``H×W`` maps; return ``N×1×H×W`` matching ``x``."""
    spatial = torch.as_tensor(spatial, device=x.device, dtype=x.dtype)
    while spatial.ndim < 4:
        spatial = spatial.unsqueeze(0 if spatial.ndim == 2 else 1)
    if spatial.shape[-2:] != x.shape[-2:] or spatial.shape[1] != 1:
        raise ValueError(f"spatial attention {tuple(spatial.shape)} must be N×1×H×W with H×W = {tuple(x.shape[-2:])}")
    return spatial


def attention_pool(x: torch.Tensor, spatial: torch.Tensor | None = None, channel: torch.Tensor | None = None,
                   p: float = 1.0, eps: float = F.DEFAULT_EPS) -> torch.Tensor:
    """Attention-weighted pooling ``N×C×H×W`` → ``N×C``, not L2-normalised.

    ``Ω ⊙ (Σ_ij a_ij x_ij^p / Σ_ij a_ij)^(1/p)``: a weighted generalised mean with spatial weights
    ``a`` (uniform when ``spatial`` is None) times channel weights ``Ω`` (none when ``channel`` is None).
    Dividing by ``Σ a`` makes it a weighted *average*, so the map's scale does not matter: a uniform
    map gives average pooling (p = 1) or GeM (p > 1), a one-hot map picks that position's vector.
    After L2 normalisation this equals the un-normalised weighted sum of DELF and CroW; e.g.
    ``attention_pool(x, spatial_attention(x), channel_attention(x))`` is CroW up to a per-image scale.
    p ≠ 1 needs positive activations (clamped at ``eps``, as in GeM).
    Survey §2.3.2.3, Figure 2.8; taught in notebooks/06_attention.
    """
    w = torch.ones_like(x[:, :1]) if spatial is None else _as_spatial(spatial, x)
    w = w / w.sum(dim=_SPATIAL, keepdim=True).clamp(min=eps)
    if isinstance(p, (int, float)) and p == 1:
        v = (w * x).sum(dim=_SPATIAL)
    else:
        x = x.clamp(min=eps)
        m = x.detach().amax(dim=_SPATIAL, keepdim=True)  # scale to ≤ 1 before the power, as F.gem does
        v = (w * (x / m).pow(p)).sum(dim=_SPATIAL).clamp(min=eps).pow(1.0 / p) * m[..., 0, 0]
    return v if channel is None else v * channel


# --------------------------------------------------------------------------- parametric (Figure 2.8 c)
class AttentionHead(nn.Module):
    """DELF's attention block (Noh et al. 2017): 1×1 conv → ReLU → 1×1 conv → softplus.

    Scores every position of ``N×C×H×W`` maps independently from its own ``C`` activations and
    returns ``N×1×H×W`` scores > 0 (softplus: positive, unbounded, never exactly zero).
    Survey §2.3.2.3, Figure 2.8c; taught in notebooks/06_attention.
    """

    def __init__(self, in_channels: int, hidden: int = DEFAULT_HIDDEN):
        super().__init__()
        self.in_channels, self.hidden = in_channels, hidden
        self.conv1 = nn.Conv2d(in_channels, hidden, kernel_size=1)
        self.conv2 = nn.Conv2d(hidden, 1, kernel_size=1)

    def forward(self, x):
        return nn.functional.softplus(self.conv2(torch.relu(self.conv1(x))))

    def extra_repr(self):
        return f"in_channels={self.in_channels}, hidden={self.hidden}"


class AttentionPooling(nn.Module):
    """Learned-attention pooling: ``l2n(Σ_ij a_ij x_ij / Σ_ij a_ij)`` with ``a`` from an :class:`AttentionHead`.

    Normalising by ``Σ a`` only rescales each row, which the final L2 removes; it keeps the
    intermediate values at the activations' scale. Wrap a trained head with ``from_head(head)``.
    Survey §2.3.2.3, Figure 2.8c; taught in notebooks/06_attention.
    """

    def __init__(self, in_channels: int, hidden: int = DEFAULT_HIDDEN, eps: float = F.DEFAULT_EPS,
                 head: AttentionHead | None = None):
        super().__init__()
        self.head = AttentionHead(in_channels, hidden) if head is None else head
        self.eps = eps

    @classmethod
    def from_head(cls, head: AttentionHead, eps: float = F.DEFAULT_EPS) -> "AttentionPooling":
        return cls(head.in_channels, head.hidden, eps, head=head)

    def attention(self, x):
        return self.head(x)

    def forward(self, x):
        return F.l2n(attention_pool(x, self.head(x), eps=self.eps), self.eps)

    def extra_repr(self):
        return f"eps={self.eps}"


def attention_descriptors(maps, head: AttentionHead, *, batch_size: int = 256) -> np.ndarray:
    """L2-normalised attention-pooled descriptors ``N×C`` (float32 rows) of stored maps, batch by batch.

    ``maps`` may be a float16 memmap too large for memory as float32; only one batch is converted
    at a time, on the head's device.
    """
    pool = AttentionPooling.from_head(head).eval()
    device = next(head.parameters()).device
    out = []
    with torch.inference_mode():
        for start in range(0, len(maps), batch_size):
            out.append(pool(_batch(maps, slice(start, start + batch_size), device)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, head.in_channels), np.float32)


def _batch(maps, index, device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(maps[index], dtype=np.float32), device=device)


# --------------------------------------------------------------------------- panels and overlays
def attention_maps(x: torch.Tensor, kinds: Sequence[str] | None = None, *, fc_weight: torch.Tensor | None = None,
                   fc_bias: torch.Tensor | None = None, top_classes: int = F.CAM_TOP_CLASSES,
                   head: AttentionHead | None = None, a: float = 2.0, b: float = 2.0) -> dict[str, torch.Tensor]:
    """Spatial attention maps of several kinds for a panel: ``{kind: N×H×W}``, each ≥ 0.

    Kinds: ``"crow"``, ``"sum"``, ``"max"`` (:func:`spatial_attention`), ``"cam"`` (needs
    ``fc_weight``; :func:`cam_attention`) and ``"learned"`` (needs a trained ``head``, e.g. trained by
    :class:`~retrievalkit.train.heads.LearnedAttention`). ``kinds=None`` gives every kind the arguments allow. Each map keeps
    its own scale; :func:`retrievalkit.figures_embedding.overlay` rescales for display.
    Survey §2.3.2.3, Figure 2.8; taught in notebooks/06_attention.
    """
    if kinds is None:
        kinds = SPATIAL_KINDS + (("cam",) if fc_weight is not None else ()) + (("learned",) if head is not None else ())
    out = {}
    for kind in kinds:
        if kind in SPATIAL_KINDS:
            m = spatial_attention(x, kind, a, b)
        elif kind == "cam":
            if fc_weight is None:
                raise ValueError("kind 'cam' needs fc_weight (the backbone's classifier, e.g. resnet.fc.weight): "
                                 "pass fc_weight=…, or leave 'cam' out of kinds")
            m = cam_attention(x, fc_weight, fc_bias, top_classes)
        elif kind == "learned":
            if head is None:
                raise ValueError("kind 'learned' needs head= (an AttentionHead, e.g. LearnedAttention().fit(...).head_), "
                                 "or leave 'learned' out of kinds")
            with torch.no_grad():
                m = head(x.to(next(head.parameters()).device, torch.float32)).to(x.device)
        else:
            raise ValueError(f"unknown attention kind {kind!r}; choose from {SPATIAL_KINDS + ('cam', 'learned')}")
        out[kind] = m[:, 0]
    return out


__all__ = [
    "channel_attention", "spatial_attention", "cam_attention", "attention_pool",
    "AttentionHead", "AttentionPooling", "attention_descriptors",
    "attention_maps",
]
