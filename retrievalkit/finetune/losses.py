"""Loss functions of supervised fine-tuning, one module per equation of Survey §2.4.1.

Taught in notebooks/09_supervised_finetuning. Conventions: descriptors are rows (``B×D``),
L2-normalised by the model; ``D(x_i, x_j)`` is the SQUARED Euclidean distance of Eq. (2.14), so on
unit vectors it lies in [0, 4] and equals ``2 − 2·cos``. Every loss returns the mean over the
pairs / triplets / queries of the batch.

One signature for every loss, as in pytorch-metric-learning: ``loss(embeddings, labels=None,
indices_tuple=None)``. ``indices_tuple`` names rows of ``embeddings``: pairs ``(a, b, same)``
(``same`` true for a matching pair; PML's ``(a1, p, a2, n)`` is accepted too) or triplets
``(a, p, n)``; left out, every pair / triplet the labels define is used. Each class says what it
needs (``needs``: ``"labels"``, ``"pairs"`` or ``"triplets"``; ``needs_labels``), so a trainer
never asks a loss its name. Miners (:mod:`retrievalkit.finetune.miners`) produce the tuples.

* :class:`CosineClassifierLoss` — Eq. (2.13), cross-entropy over a cosine classifier.
* :class:`PairRegressionLoss` — Eq. (2.15), a transformation ``W`` scoring pairs of frozen features.
* :class:`ContrastiveLoss` — Eq. (2.16), the (single-margin) Siamese loss.
* :class:`TripletLoss` — Eq. (2.17).
* :class:`JointLoss` — Eq. (2.18), α·triplet + β·cross-entropy.
* :class:`DoubleMarginContrastiveLoss` — Eq. (2.19); ``m1 = 0`` gives back Eq. (2.16).
* :class:`APLoss` — listwise loss: 1 − a histogram-binned (soft) average precision.
"""
from __future__ import annotations

import inspect

import torch
from torch import nn

from ..nn import functional as F

__all__ = ["sq_distance", "label_masks", "all_pairs", "all_triplets", "as_pairs", "Loss", "CosineClassifierLoss",
           "PairRegressionLoss", "ContrastiveLoss", "DoubleMarginContrastiveLoss", "TripletLoss", "JointLoss",
           "APLoss", "LOSSES", "build"]


def sq_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Eq. (2.14): ``D_ij = ||a_i − b_i||²`` for matching rows of ``a`` and ``b`` (B×D each → B)."""
    return (a - b).pow(2).sum(dim=-1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` holds (0 for an empty mask) — the same number as ``values[mask].mean()``,
    but its backward is a multiply: on CPU, boolean-index backward (``index_put`` with accumulate) took 100× longer
    per hashing step (torch 2.14, 256×256 pairs) and dominated deep-hash training."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1)


def label_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(same, other)``: B×B masks of equal labels, and of pairs ``i ≠ j``."""
    same = labels[:, None] == labels[None, :]
    return same, ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)


def all_pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every ordered pair ``i ≠ j`` of the batch as ``(a, b, same)``."""
    same, other = label_masks(labels)
    a, b = other.nonzero(as_tuple=True)
    return a, b, same[a, b]


def all_triplets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every triplet ``(a, p, n)`` with ``y_a = y_p ≠ y_n`` and ``a ≠ p``."""
    same, other = label_masks(labels)
    return ((same & other)[:, :, None] & ~same[:, None, :]).nonzero(as_tuple=True)


def as_pairs(indices_tuple) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(a, b, same)`` from itself or from PML's ``(a1, p, a2, n)``."""
    if len(indices_tuple) == 4:
        a1, p, a2, n = indices_tuple
        same = torch.cat([torch.ones_like(a1, dtype=torch.bool), torch.zeros_like(a2, dtype=torch.bool)])
        return torch.cat([a1, a2]), torch.cat([p, n]), same
    return indices_tuple


class Loss(nn.Module):
    """Base of every loss: ``forward(embeddings, labels=None, indices_tuple=None)``.

    Subclasses implement :meth:`pair_loss` (``needs = "pairs"``: matching rows ``a``, ``b`` and
    ``s`` = 1 for a matching pair, in the order of the pairs), :meth:`triplet_loss`
    (``needs = "triplets"``) or override ``forward`` (``needs = "labels"``).
    """

    needs = "labels"
    needs_labels = False

    def forward(self, embeddings, labels=None, indices_tuple=None) -> torch.Tensor:
        if self.needs == "pairs":
            a, b, same = as_pairs(all_pairs(labels) if indices_tuple is None else indices_tuple)
            return self.pair_loss(embeddings[a], embeddings[b], same.to(embeddings.dtype))
        a, p, n = all_triplets(labels) if indices_tuple is None else indices_tuple
        return self.triplet_loss(embeddings[a], embeddings[p], embeddings[n])


class CosineClassifierLoss(Loss):
    """Eq. (2.13): cross-entropy of a cosine classifier, ``p̂ = softmax(cos(x, w_c) / T)``.

    Classification-based fine-tuning (Survey §2.4.1.1, Figure 2.9a). The class weights ``w_c``
    live in this module (``num_classes × dim``) and are L2-normalised in the logits, so the
    descriptor is pushed towards its class direction on the sphere. The package's one cosine
    classifier: the attention head and the FC projection train with it too.
    ``normalize_input=False`` skips normalising descriptors that already have unit length;
    ``init_std`` scales the random start of the weights (default ``dim ** -0.5``); ``eps`` is that of
    their L2-normalisation (:func:`retrievalkit.nn.functional.l2n`). Survey §2.4.1.1;
    taught in notebooks/09_supervised_finetuning.
    """

    needs_labels = True

    def __init__(self, dim: int, num_classes: int, temperature: float = 0.05, normalize_input: bool = True,
                 init_std: float | None = None, eps: float = F.DEFAULT_EPS):
        super().__init__()
        self.dim, self.num_classes, self.temperature = dim, num_classes, temperature
        self.normalize_input, self.init_std, self.eps = normalize_input, init_std, eps
        self.weight = nn.Parameter(torch.randn(num_classes, dim) * (dim ** -0.5 if init_std is None else init_std))

    @torch.no_grad()
    def init_from_means(self, desc: torch.Tensor, labels: torch.Tensor) -> None:
        """Start each class weight at its class's summed descriptors (its mean direction), so the first
        steps train the network rather than chase the weights."""
        self.weight.copy_(torch.zeros_like(self.weight).index_add_(0, labels, desc))

    def logits(self, desc: torch.Tensor) -> torch.Tensor:
        return (F.l2n(desc) if self.normalize_input else desc) @ F.l2n(self.weight, self.eps).T / self.temperature

    def forward(self, embeddings, labels=None, indices_tuple=None) -> torch.Tensor:
        return nn.functional.cross_entropy(self.logits(embeddings), labels)

    def extra_repr(self):
        return f"dim={self.dim}, num_classes={self.num_classes}, temperature={self.temperature}"


class PairRegressionLoss(Loss):
    """Eq. (2.15): a transformation ``W`` (2d×1) scores pairs of frozen features, regressed to ``sim ± m``.

    ``S_W(x_i, x_j) = Wᵀ φ(f_i, f_j)`` with the 2d-dimensional pair feature
    ``φ = [f_i ⊙ f_j, |f_i − f_j|]``. (A linear map of the raw concatenation ``[f_i, f_j]`` splits
    into one score per image, so it could not rank a database for a query; ``φ`` keeps the 2d×1
    shape and is symmetric.) ``W`` starts at ``[1…1, 0…0]`` so ``S_W = cos`` before training. The
    target is ``sim + m`` for a matching pair (``s = 1``) and ``sim − m`` otherwise, with ``sim`` the
    cosine of the frozen features: the loss is ``|S_W − s(sim + m) − (1 − s)(sim − m)|``. Only ``W``
    learns; the network stays frozen (Figure 2.9b). :meth:`score` ranks a database for queries.
    (The survey's sentence before Eq. 2.15 says S = 0 marks a similar pair; with that reading the
    target would pull similar pairs' scores *down*, against the stated aim, so ``s = 1`` = matching
    here, as in Eq. 2.16.)
    Survey §2.4.1.2a; taught in notebooks/09_supervised_finetuning.
    """

    needs = "pairs"

    def __init__(self, dim: int, margin: float = 0.1):
        super().__init__()
        self.dim, self.margin = dim, margin
        self.weight = nn.Parameter(torch.cat([torch.ones(dim), torch.zeros(dim)]))

    def pair_score(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``S_W`` of matching rows of ``a`` and ``b`` (B×d each → B)."""
        w1, w2 = self.weight[: self.dim], self.weight[self.dim:]
        return (a * b) @ w1 + (a - b).abs() @ w2

    def pair_loss(self, a: torch.Tensor, b: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        sim = (a * b).sum(-1)
        target = s * (sim + self.margin) + (1 - s) * (sim - self.margin)
        return (self.pair_score(a, b) - target).abs().mean()

    @torch.no_grad()
    def score(self, queries: torch.Tensor, database: torch.Tensor, chunk: int = 16) -> torch.Tensor:
        """``Q×N`` scores ``S_W(q, x)`` of every query against every database row (higher = closer)."""
        w1, w2 = self.weight[: self.dim], self.weight[self.dim:]
        out = []
        for start in range(0, len(queries), chunk):
            q = queries[start:start + chunk]
            out.append((q * w1) @ database.T + ((q[:, None] - database[None]).abs() * w2).sum(-1))
        return torch.cat(out)

    def extra_repr(self):
        return f"dim={self.dim}, margin={self.margin}"


class DoubleMarginContrastiveLoss(Loss):
    """Eq. (2.19): ``½·s·max(0, D − m1) + ½·(1 − s)·max(0, m2 − D)``.

    Matching pairs are only pulled while farther apart than ``m1`` (Figure 2.10c); non-matching
    pairs pushed until ``m2``. Since ``D ≥ 0``, ``m1 = 0`` is exactly the Siamese loss (2.16) with
    ``m = m2``. Survey §2.4.1.2 (discussion of Eq. 2.16); taught in notebooks/09_supervised_finetuning.
    """

    needs = "pairs"

    def __init__(self, m1: float = 0.1, m2: float = 0.7):
        super().__init__()
        if not 0 <= m1 < m2:
            raise ValueError(f"double-margin loss needs 0 <= m1 < m2 (matching pairs pulled inside m1, "
                             f"non-matching pushed beyond m2); got m1={m1}, m2={m2}")
        self.m1, self.m2 = m1, m2

    def pair_loss(self, a: torch.Tensor, b: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        d = sq_distance(a, b)
        return (0.5 * s * torch.clamp(d - self.m1, min=0) + 0.5 * (1 - s) * torch.clamp(self.m2 - d, min=0)).mean()

    def extra_repr(self):
        return f"m1={self.m1}, m2={self.m2}"


class ContrastiveLoss(DoubleMarginContrastiveLoss):
    """Eq. (2.16), the Siamese loss: ``½·s·D + ½·(1 − s)·max(0, m − D)`` with ``D`` of Eq. (2.14).

    Matching pairs are pulled together all the way to distance 0; non-matching pairs are pushed
    until they are at least ``m`` apart (Figure 2.10a): Eq. (2.19) with ``m1 = 0``, ``m2 = m``.
    Survey §2.4.1.2b; taught in notebooks/09_supervised_finetuning.
    """

    def __init__(self, margin: float = 0.7):
        super().__init__(0.0, margin)
        self.margin = margin

    def extra_repr(self):
        return f"margin={self.margin}"


class TripletLoss(Loss):
    """Eq. (2.17): ``max(0, m + D(a, p) − D(a, n))`` — the negative must be ``m`` farther than the positive.

    Survey §2.4.1.2c, Figure 2.10b; taught in notebooks/09_supervised_finetuning.
    """

    needs = "triplets"

    def __init__(self, margin: float = 0.1):
        super().__init__()
        self.margin = margin

    def triplet_loss(self, a: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.margin + sq_distance(a, p) - sq_distance(a, n), min=0).mean()

    def extra_repr(self):
        return f"margin={self.margin}"


class JointLoss(Loss):
    """Eq. (2.18): ``α·L_Triplet(a, p, n) + β·L_CE(p̂, y)`` — a triplet constraint plus classification.

    The triplets come from ``indices_tuple`` (or the labels); the cross-entropy term classifies
    every row of the batch by its label. Survey §2.4.1.2, Figure 2.9f; taught in
    notebooks/09_supervised_finetuning.
    """

    needs, needs_labels = "triplets", True

    def __init__(self, dim: int, num_classes: int, alpha: float = 1.0, beta: float = 0.1,
                 margin: float = 0.1, temperature: float = 0.05):
        super().__init__()
        self.alpha, self.beta = alpha, beta
        self.triplet = TripletLoss(margin)
        self.ce = CosineClassifierLoss(dim, num_classes, temperature)

    def init_from_means(self, desc: torch.Tensor, labels: torch.Tensor) -> None:
        self.ce.init_from_means(desc, labels)

    def forward(self, embeddings, labels=None, indices_tuple=None) -> torch.Tensor:
        return self.alpha * self.triplet(embeddings, labels, indices_tuple) + self.beta * self.ce(embeddings, labels)

    def extra_repr(self):
        return f"alpha={self.alpha}, beta={self.beta}"


class APLoss(Loss):
    """Listwise loss ``1 − mAP`` with AP relaxed by soft histogram binning (Survey §2.4.1.2, discussion).

    Every row of the batch queries all the others. Cosine similarities in [−1, 1] are softly
    assigned to ``bins`` equally spaced centres with a triangular kernel of width one bin step
    (each similarity splits its unit mass between its two nearest centres). Walking the bins from
    the most to the least similar, precision at bin ``b`` is (positives up to ``b``) / (items up to
    ``b``), and AP = Σ_b precision_b · (positives in ``b``) / (all positives) — the binned form of
    the finite-sum AP, differentiable in the similarities. Queries without a positive in the batch
    are ignored. Taught in notebooks/09_supervised_finetuning.
    """

    needs_labels = True

    def __init__(self, bins: int = 25, eps: float = 1e-8):
        super().__init__()
        if int(bins) != bins or bins < 2:
            raise ValueError(f"APLoss needs at least 2 bins (an integer), got {bins!r}")
        self.bins, self.eps = bins, eps

    def binned_ap(self, sim: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Soft AP of each row of similarities ``sim`` (Q×N), ``pos`` marking positives, ``valid`` the ranked items."""
        centres = torch.linspace(1, -1, self.bins, device=sim.device, dtype=sim.dtype)  # most similar first
        step = 2.0 / (self.bins - 1)
        w = torch.clamp(1 - (sim[..., None] - centres).abs() / step, min=0) * valid[..., None]  # Q×N×bins
        pos_b = (w * pos[..., None]).sum(1)
        precision = pos_b.cumsum(1) / (w.sum(1).cumsum(1) + self.eps)
        n_pos = (pos & valid).sum(1).to(sim.dtype)
        ap = (precision * pos_b).sum(1) / n_pos.clamp(min=1)
        return torch.where(n_pos > 0, ap, torch.full_like(ap, float("nan")))

    def soft_ap(self, desc: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-query soft AP (``B``; NaN for queries with no positive in the batch)."""
        x = F.l2n(desc)
        same, off = label_masks(labels)
        return self.binned_ap(x @ x.T, same & off, off)

    def forward(self, embeddings, labels=None, indices_tuple=None) -> torch.Tensor:
        ap = self.soft_ap(embeddings, labels)
        ap = ap[~torch.isnan(ap)]
        if len(ap) == 0:
            raise ValueError("APLoss: no query has a positive in its batch; sample batches with MPerClassSampler")
        return 1 - ap.mean()

    def extra_repr(self):
        return f"bins={self.bins}"


LOSSES = {
    "ce": CosineClassifierLoss,
    "regression": PairRegressionLoss,
    "contrastive": ContrastiveLoss,
    "double_margin": DoubleMarginContrastiveLoss,
    "triplet": TripletLoss,
    "joint": JointLoss,
    "ap": APLoss,
}


def build(name: str, dim: int, num_classes: int, **kwargs) -> Loss:
    """``LOSSES[name]`` built with ``kwargs``, plus ``dim`` / ``num_classes`` where its constructor takes them."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose from {sorted(LOSSES)}")
    params = inspect.signature(LOSSES[name]).parameters
    sizes = {k: v for k, v in (("dim", dim), ("num_classes", num_classes)) if k in params}
    return LOSSES[name](**sizes, **kwargs)
