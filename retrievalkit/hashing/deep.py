"""Deep hashing: a hash head on frozen pooled descriptors, its losses, regularisers and trainer.

Survey §2.3.2.4 "Deep hash embedding": ``b = h(f(x; θ))`` (Eq. 2.12) with ``h`` relaxed to tanh
for training and a sign at test time; (a) losses that preserve similarity (pairwise likelihood
[112], class centres [111], Siamese/contrastive [114], triplet [51, 115, 116]) and (b)
regularisers that improve code quality (bit balance ``b·1 = 0``, bit uncorrelation ``bbᵀ = I``),
plus the quantisation loss of §2.1.2 challenge 3. Taught in notebooks/07_hashing.

The head sees N×D pooled descriptors of a frozen backbone, so training takes seconds on a CPU.

Notation for a batch: relaxed codes ``h = tanh(g(x)) ∈ (−1, 1)^{B×K}``, labels ``y``,
``S_ij = 1[y_i = y_j]``, inner products ``⟨h_i, h_j⟩`` and the relaxed Hamming distance
``d_ij = (K − ⟨h_i, h_j⟩) / 2`` (the exact Hamming distance for ±1 codes). Pair means run over
``i ≠ j``. Every term is divided by ``K`` (or ``K²``) so weights do not depend on the code length.
The losses take ``(embeddings, labels, indices_tuple)`` like those of fine-tuning
(:mod:`retrievalkit.finetune.losses`): ``indices_tuple`` (pairs or triplets) restricts which pairs
or triplets of the batch count; left out, all of them do.
"""
from __future__ import annotations

import inspect

import numpy as np
import torch
from torch import nn

from .. import config, evaluate
from ..finetune.losses import Loss, as_pairs, label_masks, masked_mean
from ..rows import Estimator, as_labels, as_rows
from ..train.loop import fit, minibatches, sgd_epoch
from .codes import pack_codes, to_bits

DEFAULT_CONTRASTIVE_MARGIN = 0.5  # × K: dissimilar pairs are pushed to Hamming distance ≥ K/2
DEFAULT_TRIPLET_MARGIN = 0.25  # × K
BCE_EPS = 1e-6
INFERENCE_BATCH = 8192


# --------------------------------------------------------------------------- the head
class HashHead(nn.Module):
    """``x ↦ tanh(g((x − shift) / scale))``: a linear layer (``hidden=None``) or a one-hidden-layer MLP, then tanh.

    ``shift`` and ``scale`` are buffers (saved with the weights), identity by default;
    :class:`DeepHash` sets them from the learning rows. Pooled CNN descriptors are non-negative
    and L2-normalised, so all rows share one dominant direction and entries of ~1/√D: without
    centring and scaling, a fresh layer maps every row to nearly the same small code and tanh
    starts in the regime where similarity losses have tiny gradients.
    """

    def __init__(self, in_dim: int, n_bits: int, hidden: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.in_dim, self.n_bits, self.hidden, self.dropout = in_dim, n_bits, hidden, dropout
        self.register_buffer("shift", torch.zeros(in_dim))
        self.register_buffer("scale", torch.ones(()))
        layers: list[nn.Module] = []
        if hidden is not None:
            layers += [nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout)]
        layers.append(nn.Linear(hidden or in_dim, n_bits))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.body((x - self.shift) / self.scale))

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, n_bits={self.n_bits}, hidden={self.hidden}, dropout={self.dropout}"


# --------------------------------------------------------------------------- losses
def _pairs_mask(n: int, device, indices_tuple=None) -> torch.Tensor:
    """Which ``(i, j)`` enter a pair mean: every ``i ≠ j``, or the pairs of ``indices_tuple``."""
    if indices_tuple is None:
        return ~torch.eye(n, dtype=torch.bool, device=device)
    a, b, _ = as_pairs(indices_tuple)
    mask = torch.zeros(n, n, dtype=torch.bool, device=device)
    mask[a, b] = True
    return mask


def relaxed_hamming(h: torch.Tensor) -> torch.Tensor:
    """``d_ij = (K − ⟨h_i, h_j⟩) / 2``: the Hamming distance for ±1 codes, smooth in between."""
    return (h.shape[1] - h @ h.T) / 2


class PairwiseLikelihoodLoss(Loss):
    """DPSH (Li et al. 2016): ``mean_{i≠j} [log(1 + e^{θ_ij}) − S_ij θ_ij] / K`` with ``θ_ij = ⟨h_i, h_j⟩ / 2``.

    The negative log-likelihood of the pair labels under ``P(S_ij = 1) = σ(θ_ij)``.
    """

    needs_labels = True

    def forward(self, embeddings, labels=None, indices_tuple=None) -> torch.Tensor:
        h = embeddings
        theta = h @ h.T / 2
        nll = nn.functional.softplus(theta) - label_masks(labels)[0].float() * theta
        return masked_mean(nll, _pairs_mask(len(h), h.device, indices_tuple)) / h.shape[1]


class ContrastiveHammingLoss(Loss):
    """Siamese loss in Hamming space (DSH, Liu et al. 2016; Survey Eq. 2.16 with D = Hamming):
    ``mean_{i≠j} [S_ij d_ij + (1 − S_ij) max(0, m − d_ij)] / K`` with ``m = margin · K``."""

    needs_labels = True

    def __init__(self, margin: float = DEFAULT_CONTRASTIVE_MARGIN):
        super().__init__()
        self.margin = margin

    def forward(self, embeddings, labels=None, indices_tuple=None) -> torch.Tensor:
        h, k = embeddings, embeddings.shape[1]
        d = relaxed_hamming(h)
        s = label_masks(labels)[0].float()
        per_pair = s * d + (1 - s) * torch.clamp(self.margin * k - d, min=0)
        return masked_mean(per_pair, _pairs_mask(len(h), h.device, indices_tuple)) / k


class TripletHammingLoss(Loss):
    """Triplet loss in Hamming space over the valid batch triplets (Survey Eq. 2.17):
    ``mean_{(a,p,n)} max(0, d_ap − d_an + m) / K`` with ``m = margin · K``, ``y_a = y_p ≠ y_n``, ``a ≠ p``.

    A batch without a valid triplet contributes 0.
    """

    needs_labels = True

    def __init__(self, margin: float = DEFAULT_TRIPLET_MARGIN):
        super().__init__()
        self.margin = margin

    def forward(self, embeddings, labels=None, indices_tuple=None) -> torch.Tensor:
        h, k = embeddings, embeddings.shape[1]
        d = relaxed_hamming(h)
        if indices_tuple is None:
            s, other = label_masks(labels)
            valid = (s & other)[:, :, None] & ~s[:, None, :]  # [a, p, n]
        else:
            valid = torch.zeros(len(h), len(h), len(h), dtype=torch.bool, device=h.device)
            valid[indices_tuple] = True
        if not valid.any():
            return h.sum() * 0.0
        violation = torch.clamp(d[:, :, None] - d[:, None, :] + self.margin * k, min=0)
        return masked_mean(violation, valid) / k


class CenterLoss(Loss):
    """Central similarity (CSQ, Yuan et al. 2020): binary cross-entropy between each relaxed bit and
    the bit of its class's hash centre, ``−mean_{i,k} [c'_k log h'_ik + (1 − c'_k) log(1 − h'_ik)]``
    with ``h' = (h + 1)/2``, ``c' = (c_{y_i} + 1)/2``. ``labels`` index rows of ``centers`` (C×K, ±1);
    a per-row loss, so ``indices_tuple`` does not apply."""

    needs_labels = True

    def __init__(self, centers):
        super().__init__()
        self.register_buffer("centers", torch.as_tensor(centers, dtype=torch.float32))

    def forward(self, embeddings, labels=None, indices_tuple=None) -> torch.Tensor:
        target = (self.centers[labels] + 1) / 2
        prob = ((embeddings + 1) / 2).clamp(BCE_EPS, 1 - BCE_EPS)
        return nn.functional.binary_cross_entropy(prob, target)


def quantization_penalty(h: torch.Tensor) -> torch.Tensor:
    """``‖h − sign(h)‖²_F / (B·K) = mean (|h| − 1)²``: the gap between relaxed codes and their signs."""
    return ((h.abs() - 1) ** 2).mean()


def balance_penalty(h: torch.Tensor) -> torch.Tensor:
    """Bit balance ``b·1 = 0`` (over the batch): ``‖mean_i h_i‖² / K``, 0 when every bit averages 0."""
    return (h.mean(dim=0) ** 2).mean()


def decorrelation_penalty(h: torch.Tensor) -> torch.Tensor:
    """Bit uncorrelation ``bbᵀ = I`` (over the batch): ``‖(1/B) hᵀh − I‖²_F / K²``."""
    k = h.shape[1]
    gram = h.T @ h / len(h)
    return ((gram - torch.eye(k, device=h.device, dtype=h.dtype)) ** 2).mean()


LOSSES = {
    "pairwise": PairwiseLikelihoodLoss,
    "contrastive": ContrastiveHammingLoss,
    "triplet": TripletHammingLoss,
    "center": CenterLoss,
}


def _sylvester_hadamard(n: int) -> np.ndarray:
    H = np.ones((1, 1))
    while len(H) < n:
        H = np.block([[H, H], [H, -H]])
    return H


def hash_centers(n_classes: int, n_bits: int, kind: str = "hadamard", seed: int = 0) -> np.ndarray:
    """``n_classes × n_bits`` ±1 class centres (CSQ).

    ``"hadamard"``: rows of a Sylvester Hadamard matrix ``H`` (then of ``−H``) when ``n_bits`` is a
    power of two and ``n_classes ≤ 2·n_bits`` — any two centres are at Hamming distance ``K/2``
    (or ``K`` for ``±`` the same row). Otherwise, and for ``"random"``, each bit is ±1 with
    probability ½ (expected distance ``K/2``), drawn from ``seed``.
    """
    power_of_two = n_bits & (n_bits - 1) == 0
    if kind == "hadamard" and power_of_two and n_classes <= 2 * n_bits:
        H = _sylvester_hadamard(n_bits)
        return np.concatenate([H, -H])[:n_classes].astype(np.float32)
    if kind not in ("hadamard", "random"):
        raise ValueError(f"unknown centre kind {kind!r}; choose 'hadamard' or 'random'")
    rng = np.random.default_rng(seed)
    return np.where(rng.random((n_classes, n_bits)) < 0.5, -1.0, 1.0).astype(np.float32)


class SignCodes:
    """Codes from a learned relaxation: any hasher with ``relaxed(X)`` (tanh outputs) gets these two."""

    def transform(self, X, *, as_bits: bool = False) -> np.ndarray:
        """Binary codes: ``sign`` of the relaxed codes as ±1 int8 (0 ↦ +1), or 0/1 with ``as_bits=True``."""
        codes = np.where(self.relaxed(X) >= 0, 1, -1).astype(np.int8)
        return to_bits(codes) if as_bits else codes

    def encode(self, X) -> np.ndarray:
        """Packed codes for :func:`retrievalkit.hashing.search.hamming_search`."""
        return pack_codes(self.transform(X))


# --------------------------------------------------------------------------- trainer
def _hamming_validation(codes: np.ndarray, labels) -> float:
    """Finite-sum leave-one-out mAP (the hashing literature's) ranking by ±1 inner products = by Hamming distance."""
    B = codes.astype(np.float32)
    return evaluate.leave_one_out_map(labels=labels, scores=B @ B.T, mode="finite")


class DeepHash(SignCodes, Estimator):
    """A hash head trained on frozen descriptors; ``fit`` / ``transform`` like scikit-learn.

    ``loss``: ``"pairwise"`` (DPSH likelihood), ``"contrastive"`` (Hamming Siamese), ``"triplet"``
    or ``"center"`` (CSQ class centres): a key of :data:`LOSSES`, whose classes give the formulas.
    The training objective is ``loss + quantization·quantization_penalty + balance·balance_penalty
    + decorrelation·decorrelation_penalty``, all on the batch's relaxed (tanh) codes.

    ``hidden=None`` is a linear head, an int a one-hidden-layer MLP. ``standardize=True`` centres
    and scales the head's input with learning-split statistics (see :class:`HashHead`).
    ``margin`` (× K) is for the contrastive and triplet losses; ``centers`` is ``"hadamard"`` or
    ``"random"`` (:func:`hash_centers`) for the centre loss.

    ``fit(X, labels, X_val=None, labels_val=None)``: all four come from the LEARNING split (the
    caller carves validation classes or rows out of it; test data is never passed here).
    ``history_`` has one row per epoch (``train_loss``, each term, ``val_mAP`` — the Hamming
    leave-one-out mAP of the validation codes, or None without validation). With validation the
    epoch with the best ``val_mAP`` is kept (``best_epoch_``, earliest on ties); without it, the
    last epoch. Training is seeded (weights, shuffling) without touching the global RNG state.

    ``transform(X)`` gives ``±1`` int8 codes (``sign``, 0 ↦ +1), ``as_bits=True`` ``0/1``;
    ``relaxed(X)`` the tanh outputs; ``encode(X)`` packed codes for Hamming search.
    """

    def __init__(
        self,
        n_bits: int = 64,
        loss: str = "pairwise",
        *,
        quantization: float = 0.1,
        balance: float = 0.0,
        decorrelation: float = 0.0,
        hidden: int | None = None,
        standardize: bool = True,
        margin: float | None = None,
        centers: str = "hadamard",
        epochs: int = 20,
        lr: float = 1e-3,
        batch_size: int = 128,
        weight_decay: float = 0.0,
        seed: int = 0,
        device="auto",
        progress: bool | None = None,
    ):
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(LOSSES)}")
        if margin is not None and "margin" not in inspect.signature(LOSSES[loss]).parameters:
            raise ValueError(f"margin applies to the contrastive and triplet losses, not {loss!r}")
        self.n_bits, self.loss = int(n_bits), loss
        self.quantization, self.balance, self.decorrelation = quantization, balance, decorrelation
        self.hidden, self.standardize, self.margin, self.centers = hidden, standardize, margin, centers
        self.epochs, self.lr, self.batch_size, self.weight_decay = epochs, lr, batch_size, weight_decay
        self.seed, self.device, self.progress = seed, device, progress

    # -- training
    @config.deterministic()
    def fit(self, X, labels, X_val=None, labels_val=None) -> "DeepHash":
        x_np = as_rows(X, "X")
        self.classes_, y_np = np.unique(as_labels(labels, len(x_np), "labels"), return_inverse=True)
        if (X_val is None) != (labels_val is None):
            raise ValueError("pass both X_val and labels_val (a validation part of the learning split) or neither")
        if X_val is not None:
            x_val = as_rows(X_val, "X_val")
            y_val = as_labels(labels_val, len(x_val), "labels_val")
        device = config.device(self.device)
        self.n_features_in_ = x_np.shape[1]
        cuda_ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_ids):
            torch.manual_seed(self.seed)
            self.head_ = HashHead(x_np.shape[1], self.n_bits, self.hidden).to(device)
            if self.standardize:
                # learning-split statistics: centre, then one global scale (mean squared entry 1)
                centred = x_np - x_np.mean(axis=0)
                self.head_.shift.copy_(torch.as_tensor(x_np.mean(axis=0)))
                self.head_.scale.fill_(float(np.sqrt((centred**2).mean())) or 1.0)
            generator = torch.Generator().manual_seed(self.seed)
            self.centers_ = hash_centers(len(self.classes_), self.n_bits, self.centers, self.seed)
            offered = {"margin": self.margin, "centers": self.centers_}
            params = inspect.signature(LOSSES[self.loss]).parameters
            loss_fn = LOSSES[self.loss](**{k: v for k, v in offered.items() if k in params and v is not None})
            loss_fn = loss_fn.to(device)
            x = torch.as_tensor(x_np, device=device)
            y = torch.as_tensor(y_np, device=device)
            opt = torch.optim.Adam(self.head_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            penalties = (("quantization", self.quantization, quantization_penalty),
                         ("balance", self.balance, balance_penalty),
                         ("decorrelation", self.decorrelation, decorrelation_penalty))

            def loss_of(batch):
                h = self.head_(x[batch])
                total = loss_fn(h, y[batch])
                terms = {"similarity": total}
                for name, weight, penalty in penalties:
                    terms[name] = penalty(h)
                    total = total + weight * terms[name]
                return total, terms

            def run_epoch(epoch):
                self.head_.train()
                batches = (b.to(device) for b in minibatches(len(x), self.batch_size, generator))
                means = sgd_epoch(loss_of, batches, opt)
                return {"train_loss": means.pop("loss"), **means, "val_mAP": None}

            validate = None if X_val is None else (
                lambda: {"val_mAP": _hamming_validation(self.transform(x_val), y_val)})
            result = fit(run_epoch, [self.head_], epochs=self.epochs, validate=validate, progress=self.progress,
                         desc=f"hash {self.n_bits} bits")
        self.history_, self.best_epoch_, self.best_val_map_ = result.history, result.best_epoch, result.best_score
        for record in self.history_:
            record["kept"] = record["epoch"] == self.best_epoch_
        return self

    # -- inference
    def relaxed(self, X) -> np.ndarray:
        """The tanh outputs (``N×n_bits`` float32 in ``(−1, 1)``)."""
        x_np = as_rows(self._check(X), "X")  # fitted, and as wide as the learning rows
        was_training = self.head_.training
        self.head_.eval()
        device = next(self.head_.parameters()).device
        out = np.empty((len(x_np), self.n_bits), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(x_np), INFERENCE_BATCH):
                chunk = torch.as_tensor(x_np[start : start + INFERENCE_BATCH], device=device)
                out[start : start + len(chunk)] = self.head_(chunk).cpu().numpy()
        self.head_.train(was_training)
        return out



__all__ = [
    "HashHead", "DeepHash", "LOSSES", "hash_centers", "relaxed_hamming",
    "PairwiseLikelihoodLoss", "ContrastiveHammingLoss", "TripletHammingLoss", "CenterLoss",
    "quantization_penalty", "balance_penalty", "decorrelation_penalty",
]
