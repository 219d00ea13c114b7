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

More losses of Figure 2.10 (Survey §2.4.1.2, discussion), each checked against pytorch-metric-learning
(or, for the quadruplet loss, a loop over every quadruplet) in tests/test_finetune_losses.py:

* :class:`NPairLoss` — Fig. 2.10(f), Sohn 2016: softmax over one positive and N − 1 other classes' positives.
* :class:`LiftedStructureLoss` — Fig. 2.10(g), Oh Song et al. 2016: each positive pair against every
  negative of both its members, smoothed by log-sum-exp.
* :class:`ProxyNCALoss` — Fig. 2.10(j), Movshovitz-Attias et al. 2017: rows against one learned proxy per class.
* :class:`QuadrupletLoss` — Fig. 2.10(d), Chen et al. 2017: the triplet term plus a second margin
  against a negative pair that does not contain the anchor.

These four see labelled batches (``needs = "labels"``; the trainer draws m-per-class batches);
``terms(embeddings, labels)`` gives each one's loss per anchor / pair / quadruplet before the mean.
"""
from __future__ import annotations

import inspect

import torch
from torch import nn

from ..nn import functional as F

__all__ = ["sq_distance", "label_masks", "all_pairs", "all_triplets", "as_pairs", "Loss", "CosineClassifierLoss",
           "PairRegressionLoss", "ContrastiveLoss", "DoubleMarginContrastiveLoss", "TripletLoss", "JointLoss",
           "APLoss", "NPairLoss", "LiftedStructureLoss", "ProxyNCALoss", "QuadrupletLoss", "sq_distances",
           "LOSSES", "build"]


def sq_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Eq. (2.14): ``D_ij = ||a_i − b_i||²`` for matching rows of ``a`` and ``b`` (B×D each → B)."""
    return (a - b).pow(2).sum(dim=-1)


def sq_distances(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. (2.14) for every pair: ``D_ij = ||x_i − y_j||²`` (B×D, M×D → B×M; ``y`` defaults to ``x``).

    Written as ``|x|² + |y|² − 2 x·y`` (one matrix product, a cheap backward), clamped at 0 against
    rounding; the diagonal of ``sq_distances(x)`` is exactly 0.
    """
    same = y is None
    y = x if same else y
    d = ((x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * x @ y.T).clamp_min(0)
    if same:
        d = d * (1 - torch.eye(len(x), dtype=x.dtype, device=x.device))
    return d


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


def _pair_tuple(indices_tuple) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(a, b, same)`` from a pair tuple, PML's ``(a1, p, a2, n)`` or a triplet tuple (→ pairs (a, p), (a, n))."""
    if len(indices_tuple) == 3 and indices_tuple[2].dtype != torch.bool:
        a, p, n = indices_tuple
        return torch.cat([a, a]), torch.cat([p, n]), torch.arange(2 * len(a), device=a.device) < len(a)
    return as_pairs(indices_tuple)


def _masked_logsumexp(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Row-wise ``log Σ_{mask} exp(x)``; 0 for a row with an empty mask (no NaN in value or gradient)."""
    out = torch.logsumexp(x.masked_fill(~mask, float("-inf")), dim=1)
    return torch.where(mask.any(1), out, torch.zeros_like(out))


class NPairLoss(Loss):
    """Sohn's N-pair loss (NeurIPS 2016; Survey Figure 2.10f): one positive among N − 1 other classes' positives.

    The batch gives one pair ``(x_i, x_i⁺)`` per class ``i = 1 … N``. Each anchor ``x_i`` must pick its
    own positive out of all N positives, whose other N − 1 act as negatives of different classes:
    ``L_i = log(1 + Σ_{j≠i} exp(s·x_iᵀx_j⁺ − s·x_iᵀx_i⁺))``, i.e. the cross-entropy of the row
    ``s·x_iᵀ[x_1⁺ … x_N⁺]`` with target ``i``; the loss is the mean over anchors. Uses inner-product
    SIMILARITIES (not the distance of Eq. 2.14), scaled by ``scale`` (1 = the paper). Sohn also adds
    an L2 penalty on the embeddings; rows here are L2-normalised, so it is left out.

    From labels, the pair of a class is its first two rows of the batch (classes with one row give
    none); an ``indices_tuple`` supplies the matching pairs instead, again one per anchor label (the
    first) — both as pytorch-metric-learning's ``NPairsLoss``. With m-per-class batches, ``m = 2`` is
    the paper's batch; a larger ``m`` leaves rows unused. Fewer than two pairs: loss 0.
    Paper: https://papers.nips.cc/paper/6200-improved-deep-metric-learning-with-multi-class-n-pair-loss-objective
    """

    needs_labels = True

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale

    def pairs(self, labels: torch.Tensor, indices_tuple=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(anchors, positives)``: one matching pair per label present among the anchors."""
        a, p, same = all_pairs(labels) if indices_tuple is None else _pair_tuple(indices_tuple)
        a, p = a[same], p[same]
        first = torch.zeros(len(a), dtype=torch.bool, device=a.device)  # the first pair of each anchor label
        if len(a):
            la = labels[a]
            order = torch.argsort(la, stable=True)
            keep = torch.ones_like(order, dtype=torch.bool)
            keep[1:] = la[order][1:] != la[order][:-1]
            first[order[keep]] = True
        return a[first], p[first]

    def terms(self, embeddings, labels=None, indices_tuple=None) -> torch.Tensor:
        """``L_i`` per anchor (one per pair of :meth:`pairs`)."""
        a, p = self.pairs(labels, indices_tuple)
        logits = self.scale * embeddings[a] @ embeddings[p].T
        return nn.functional.cross_entropy(logits, torch.arange(len(a), device=logits.device), reduction="none")

    def forward(self, embeddings, labels=None, indices_tuple=None) -> torch.Tensor:
        t = self.terms(embeddings, labels, indices_tuple)
        return t.mean() if len(t) > 1 else embeddings.sum() * 0

    def extra_repr(self):
        return f"scale={self.scale}"


class LiftedStructureLoss(Loss):
    """Oh Song et al.'s lifted structured loss (CVPR 2016; Survey Figure 2.10g), the smooth log-sum-exp form.

    Every matching pair ``(i, j)`` of the batch is weighed against every non-matching pair that
    contains ``i`` or ``j``:
    ``J_ij = log(Σ_{(i,k) neg} exp(α − d_ik) + Σ_{(j,l) neg} exp(α − d_jl)) + d_ij`` and
    ``L = 1/(2|P|) Σ_{(i,j)∈P} max(0, J_ij)²``, with ``d`` the EUCLIDEAN distance ``||x_i − x_j||``
    (not squared, as in the paper; unlike Eq. 2.14) and ``α`` the ``margin``. The log-sum-exp is a
    soft maximum over the negatives, so the hardest negatives dominate but all get a gradient.
    Computed as the mean over ORDERED matching pairs of ``½·max(0, J)²`` (``J`` is symmetric, so this
    is the paper's sum), as pytorch-metric-learning's ``LiftedStructureLoss(neg_margin=α, pos_margin=0)``.
    An ``indices_tuple`` (pairs, PML's 4-tuple or triplets) replaces the labels' pairs: each of its
    matching pairs then sees the non-matching pairs of the tuple that start at one of its members
    (a pair listed twice counts once; PML would count it twice, as it does for triplets turned into pairs).
    No matching or no non-matching pair: loss 0.
    Paper: https://arxiv.org/abs/1511.06452
    """

    needs_labels = True

    def __init__(self, margin: float = 1.0):
        super().__init__()
        self.margin = margin

    def distances(self, embeddings: torch.Tensor) -> torch.Tensor:
        """B×B Euclidean distances; the square root is taken above 1e-12 so equal rows give no NaN gradient."""
        return sq_distances(embeddings).clamp_min(1e-12).sqrt()

    def terms(self, embeddings, labels=None, indices_tuple=None) -> torch.Tensor:
        """``½·max(0, J_ij)²`` per ordered matching pair (in the order of the pairs)."""
        a, b, same = all_pairs(labels) if indices_tuple is None else _pair_tuple(indices_tuple)
        i, j = a[same], b[same]
        if len(i) == 0 or bool(same.all()):
            return embeddings.sum()[None] * 0
        d = self.distances(embeddings)
        neg = torch.zeros_like(d, dtype=torch.bool)
        neg[a[~same], b[~same]] = True
        soft = _masked_logsumexp(torch.cat([self.margin - d[i], self.margin - d[j]], 1), torch.cat([neg[i], neg[j]], 1))
        return 0.5 * torch.relu(soft + d[i, j]).pow(2)

    def forward(self, embeddings, labels=None, indices_tuple=None) -> torch.Tensor:
        return self.terms(embeddings, labels, indices_tuple).mean()

    def extra_repr(self):
        return f"margin={self.margin}"


class ProxyNCALoss(Loss):
    """Movshovitz-Attias et al.'s Proxy-NCA (ICCV 2017; Survey Figure 2.10j): rows against one proxy per class.

    Each class ``c`` owns a learned proxy ``p_c`` (``num_classes × dim`` parameters, trained with
    the network); rows are compared with the proxies instead of with each other, so no pairs or
    triplets need mining. With ``d(x, p) = ||x̂ − p̂||²`` (squared distance of the L2-normalised
    row and proxy, Eq. 2.14), the loss of a row ``x`` of class ``y`` is
    ``−log( exp(−s·d(x, p_y)) / Σ_c exp(−s·d(x, p_c)) )``, the mean over rows. The denominator runs
    over ALL proxies, as in pytorch-metric-learning's ``ProxyNCALoss`` (``softmax_scale = s``); the
    paper leaves the positive proxy out of it, which makes the loss unbounded below.
    ``indices_tuple`` is not used (every row meets every proxy). :meth:`init_from_means` starts the
    proxies at the class means, as the trainer does for the cosine classifier.
    Paper: https://arxiv.org/abs/1703.07464
    """

    needs_labels = True

    def __init__(self, dim: int, num_classes: int, scale: float = 1.0, normalize_input: bool = True,
                 eps: float = F.DEFAULT_EPS):
        super().__init__()
        self.dim, self.num_classes, self.scale = dim, num_classes, scale
        self.normalize_input, self.eps = normalize_input, eps
        self.proxies = nn.Parameter(torch.randn(num_classes, dim) * dim ** -0.5)

    @torch.no_grad()
    def init_from_means(self, desc: torch.Tensor, labels: torch.Tensor) -> None:
        """Start each proxy at its class's summed descriptors (its mean direction)."""
        self.proxies.copy_(torch.zeros_like(self.proxies).index_add_(0, labels, desc))

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``−s·d(x, p_c)`` for every row and class (B×num_classes)."""
        x = F.l2n(embeddings, self.eps) if self.normalize_input else embeddings
        return -self.scale * sq_distances(x, F.l2n(self.proxies, self.eps))

    def terms(self, embeddings, labels=None, indices_tuple=None) -> torch.Tensor:
        """The loss of each row (B)."""
        return nn.functional.cross_entropy(self.logits(embeddings), labels, reduction="none")

    def forward(self, embeddings, labels=None, indices_tuple=None) -> torch.Tensor:
        return self.terms(embeddings, labels).mean()

    def extra_repr(self):
        return f"dim={self.dim}, num_classes={self.num_classes}, scale={self.scale}"


class QuadrupletLoss(Loss):
    """Chen et al.'s quadruplet loss (CVPR 2017; Survey Figure 2.10d): the triplet term plus a second margin.

    A quadruplet ``(a, p, n1, n2)`` has ``y_a = y_p`` (``a ≠ p``), ``y_n1 ≠ y_a``, ``y_n2 ≠ y_a`` and
    ``y_n2 ≠ y_n1``. With ``D`` of Eq. (2.14), ``m1`` = ``margin`` and ``m2`` = ``margin2``,
    ``ℓ = max(0, m1 + D(a, p) − D(a, n1)) + max(0, m2 + D(a, p) − D(n1, n2))``:
    the first term is the triplet loss (2.17); the second asks the positive pair to be closer, by
    ``m2``, than a negative pair that does not contain the anchor, so distances become comparable
    across anchors (the paper takes ``m2 < m1``: the weaker, secondary constraint). The loss is the
    mean over every quadruplet the labels define (the paper sums over all of a batch); given
    an ``indices_tuple`` ``(a, p, n1, n2)``, over those. A batch needs rows of at least three classes
    (with m-per-class batches: ``batch_size ≥ 3·m``); no quadruplet: loss 0.
    Paper: https://arxiv.org/abs/1704.01719
    """

    needs_labels = True

    def __init__(self, margin: float = 0.1, margin2: float = 0.05):
        super().__init__()
        self.margin, self.margin2 = margin, margin2

    def terms_and_mask(self, embeddings, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """``ℓ`` for every (matching pair, n1, n2) as a P×B×B tensor, and the mask of valid quadruplets."""
        a, p, same = all_pairs(labels)
        a, p = a[same], p[same]
        d = sq_distances(embeddings)
        other = labels[:, None] != labels[None, :]
        n1_ok = other[a]  # P×B: y_n1 ≠ y_a
        mask = n1_ok[:, :, None] & n1_ok[:, None, :] & other[None]  # y_n2 ≠ y_a, y_n2 ≠ y_n1
        d_ap = d[a, p][:, None]
        first = torch.relu(self.margin + d_ap - d[a])  # P×B (n1)
        second = torch.relu(self.margin2 + d_ap[:, :, None] - d[None])  # P×B×B (n1, n2)
        return first[:, :, None] + second, mask

    def terms(self, embeddings, labels=None, indices_tuple=None) -> torch.Tensor:
        """``ℓ`` per quadruplet (a 1-D tensor)."""
        if indices_tuple is not None:
            a, p, n1, n2 = indices_tuple
            e = embeddings
            return (torch.relu(self.margin + sq_distance(e[a], e[p]) - sq_distance(e[a], e[n1]))
                    + torch.relu(self.margin2 + sq_distance(e[a], e[p]) - sq_distance(e[n1], e[n2])))
        values, mask = self.terms_and_mask(embeddings, labels)
        return values[mask]

    def forward(self, embeddings, labels=None, indices_tuple=None) -> torch.Tensor:
        if indices_tuple is not None:
            t = self.terms(embeddings, labels, indices_tuple)
            return t.mean() if len(t) else embeddings.sum() * 0
        return masked_mean(*self.terms_and_mask(embeddings, labels))

    def extra_repr(self):
        return f"margin={self.margin}, margin2={self.margin2}"


LOSSES = {
    "ce": CosineClassifierLoss,
    "regression": PairRegressionLoss,
    "contrastive": ContrastiveLoss,
    "double_margin": DoubleMarginContrastiveLoss,
    "triplet": TripletLoss,
    "joint": JointLoss,
    "ap": APLoss,
    "npair": NPairLoss,
    "lifted": LiftedStructureLoss,
    "proxy_nca": ProxyNCALoss,
    "quadruplet": QuadrupletLoss,
}


def build(name: str, dim: int, num_classes: int, **kwargs) -> Loss:
    """``LOSSES[name]`` built with ``kwargs``, plus ``dim`` / ``num_classes`` where its constructor takes them."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose from {sorted(LOSSES)}")
    params = inspect.signature(LOSSES[name]).parameters
    sizes = {k: v for k, v in (("dim", dim), ("num_classes", num_classes)) if k in params}
    return LOSSES[name](**sizes, **kwargs)
