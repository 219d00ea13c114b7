"""Thin ``nn.Module`` wrappers around :mod:`retrievalkit.nn.functional`: ``N×C×H×W`` → ``N×C``.

Survey §2.3.1.1 (Figure 2.6) and §2.3.2.1; taught in notebooks/03_pooling. Each module only stores
its hyper-parameters (shown by ``repr``) and calls the pure function; GeM's ``p`` can be learned.
``POOLINGS`` maps a name to its class, and ``pool("gem", x, p=3)`` is the one-call form.
"""
from __future__ import annotations

import torch
from torch import nn

from . import functional as F


class L2N(nn.Module):
    """Row-wise L2 normalisation."""

    def __init__(self, eps: float = F.DEFAULT_EPS):
        super().__init__()
        self.eps = eps

    def forward(self, x):
        return F.l2n(x, self.eps)

    def extra_repr(self):
        return f"eps={self.eps}"


class PowerLaw(nn.Module):
    """Signed power normalisation ``sign(x)|x|^alpha``."""

    def __init__(self, alpha: float = 0.5):
        super().__init__()
        self.alpha = alpha

    def forward(self, x):
        return F.powerlaw(x, self.alpha)

    def extra_repr(self):
        return f"alpha={self.alpha}"


class MAC(nn.Module):
    """Spatial max pooling (Razavian et al. 2016)."""

    def forward(self, x):
        return F.mac(x)


class SPoC(nn.Module):
    """Average pooling, optionally with the Gaussian centre prior (Babenko & Lempitsky 2015)."""

    def __init__(self, center_prior: bool = False, sigma: float = F.SPOC_SIGMA):
        super().__init__()
        self.center_prior, self.sigma = center_prior, sigma

    def forward(self, x):
        return F.spoc(x, self.center_prior, self.sigma)

    def extra_repr(self):
        return f"center_prior={self.center_prior}, sigma={self.sigma:.4g}"


class GeM(nn.Module):
    """Generalised-mean pooling (Radenović et al. 2018); ``p`` is an ``nn.Parameter`` when ``learn_p``, else a buffer."""

    def __init__(self, p: float = 3.0, eps: float = F.DEFAULT_EPS, learn_p: bool = True):
        super().__init__()
        self.eps, self.learn_p = eps, learn_p
        if learn_p:
            self.p = nn.Parameter(torch.tensor([float(p)]))
        else:
            self.register_buffer("p", torch.tensor([float(p)]))

    def forward(self, x):
        return F.gem(x, self.p, self.eps)

    def extra_repr(self):
        return f"p={self.p.item():.4f}, eps={self.eps}, learn_p={self.learn_p}"


class RMAC(nn.Module):
    """Regional MAC on the Tolias et al. 2016 grid (see :func:`retrievalkit.nn.functional.rmac_regions`)."""

    def __init__(self, levels: int = F.RMAC_LEVELS, overlap: float = F.RMAC_OVERLAP, eps: float = F.DEFAULT_EPS,
                 region_whiten=None):
        super().__init__()
        self.levels, self.overlap, self.eps, self.region_whiten = levels, overlap, eps, region_whiten

    def forward(self, x):
        return F.rmac(x, self.levels, self.overlap, self.eps, self.region_whiten)

    def extra_repr(self):
        return f"levels={self.levels}, overlap={self.overlap}" + (", region_whiten=yes" if self.region_whiten else "")


class CroW(nn.Module):
    """Cross-dimensional weighted sum pooling (Kalantidis et al. 2016)."""

    def __init__(self, a: float = 2.0, b: float = 2.0, eps: float = F.DEFAULT_EPS):
        super().__init__()
        self.a, self.b, self.eps = a, b, eps

    def forward(self, x):
        return F.crow(x, self.a, self.b, self.eps)

    def extra_repr(self):
        return f"a={self.a}, b={self.b}"


class CAMPooling(nn.Module):
    """Class-activation-map weighted pooling (Jimenez et al. 2017) with a frozen classifier head (buffers).

    Build it from the backbone's own GAP classifier: ``CAMPooling.from_linear(resnet.fc)``.
    """

    def __init__(self, fc_weight: torch.Tensor, fc_bias: torch.Tensor | None = None,
                 top_classes: int = F.CAM_TOP_CLASSES, channel_weights: bool = False, eps: float = F.DEFAULT_EPS):
        super().__init__()
        self.register_buffer("fc_weight", torch.as_tensor(fc_weight).detach().clone())
        self.register_buffer("fc_bias", None if fc_bias is None else torch.as_tensor(fc_bias).detach().clone())
        self.top_classes, self.channel_weights, self.eps = top_classes, channel_weights, eps

    @classmethod
    def from_linear(cls, linear: nn.Linear, **kw) -> "CAMPooling":
        return cls(linear.weight, linear.bias, **kw)

    def forward(self, x):
        return F.cam_weighted(x, self.fc_weight, self.fc_bias, self.top_classes, self.channel_weights, self.eps)

    def extra_repr(self):
        k, c = self.fc_weight.shape
        return f"classes={k}, channels={c}, top_classes={self.top_classes}, channel_weights={self.channel_weights}"


POOLINGS: dict[str, type[nn.Module]] = {
    "mac": MAC,
    "spoc": SPoC,
    "gem": GeM,
    "rmac": RMAC,
    "crow": CroW,
    "cam": CAMPooling,
}


def pool(name: str, x: torch.Tensor, **kw) -> torch.Tensor:
    """Pool ``x`` with the registered method ``name`` (keyword arguments go to its constructor)."""
    try:
        cls = POOLINGS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown pooling {name!r}; choose one of {sorted(POOLINGS)}") from None
    return cls(**kw).to(x.device)(x)


__all__ = ["L2N", "PowerLaw", "MAC", "SPoC", "GeM", "RMAC", "CroW", "CAMPooling", "POOLINGS", "pool"]
