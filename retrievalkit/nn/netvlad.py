"""NetVLAD: VLAD (Eqs. 2.7–2.8) made differentiable, so it can be trained end to end with the network.

Survey §2.3.2.2 (VLAD on conv columns) and Table 2.3's NetVLAD row (Arandjelović et al., CVPR 2016,
arXiv:1511.07247: supervised, triplet loss); taught in notebooks/09_supervised_finetuning.

VLAD assigns each local descriptor ``x`` to its nearest word ``c_k`` (an indicator, so no gradient
reaches the words or the features through the assignment). NetVLAD replaces the indicator with a
softmax over the words, ``a_k(x) = softmax_k(w_kᵀx + b_k)``, and sums soft-weighted residuals,
``V_k = Σ_t a_k(x_t) (x_t − c_k)``. Expanding ``−α‖x − c_k‖²`` gives ``w_k = 2α c_k``,
``b_k = −α‖c_k‖²`` (the ``‖x‖²`` term is the same for every word and cancels in the softmax): with
these weights and a large α the layer *is* hard-assignment VLAD; training then frees ``w``, ``b`` and
``c`` from each other. Input columns are L2-normalised, the output is intra-normalised per word and
flattened word-major (as :class:`retrievalkit.embedding.vlad.VLAD`); the caller L2-normalises it.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from . import functional as F

# The initial α makes the second-nearest word weigh this much of the nearest one on average
# (the rule of the authors' released initialisation: α = −log(0.01) / mean(d₂² − d₁²)).
SECOND_WORD_WEIGHT = 0.01


class NetVLAD(nn.Module):
    """``N×D×H×W`` conv maps → ``N×(K·D)`` intra-normalised soft VLAD (before the final L2).

    Call :meth:`init_from` with local descriptors of the learning split before use: it sets the
    words by k-means and the assignment to match them (random words describe nothing)."""

    def __init__(self, dim: int, clusters: int = 8, alpha: float = 100.0):
        super().__init__()
        self.dim, self.clusters = int(dim), int(clusters)
        self.alpha = float(alpha)
        self.centroids = nn.Parameter(torch.randn(self.clusters, self.dim) / math.sqrt(self.dim))
        self.assign = nn.Conv2d(self.dim, self.clusters, kernel_size=1, bias=True)
        self.set_words(self.centroids.detach(), self.alpha)

    @property
    def out_dim(self) -> int:
        return self.clusters * self.dim

    @torch.no_grad()
    def set_words(self, centroids: torch.Tensor, alpha: float) -> None:
        """Words ``c_k`` and the assignment that makes the layer hard VLAD as α grows: ``w_k = 2αc_k``,
        ``b_k = −α‖c_k‖²``."""
        centroids = torch.as_tensor(centroids, dtype=self.centroids.dtype)
        if tuple(centroids.shape) != (self.clusters, self.dim):
            raise ValueError(f"NetVLAD has {self.clusters} words of {self.dim} dims, got centroids of shape "
                             f"{tuple(centroids.shape)}")
        self.alpha = float(alpha)
        self.centroids.copy_(centroids)
        self.assign.weight.copy_((2 * alpha * centroids)[:, :, None, None])
        self.assign.bias.copy_(-alpha * (centroids * centroids).sum(dim=1))

    @torch.no_grad()
    def init_from(self, descriptors, seed: int = 0, max_train: int | None = 20_000) -> "NetVLAD":
        """k-means words from ``descriptors`` (rows of local conv columns of LEARNING images; they are
        L2-normalised here, as in :meth:`forward`) and α from how far apart the two nearest words are."""
        from ..embedding.codebook import KMeansCodebook

        x = F.l2n(np.asarray(descriptors, dtype=np.float32), axis=1)
        words = KMeansCodebook(k=self.clusters, seed=seed, max_train=max_train).fit(x, split="learn").centroids_
        d2 = (x * x).sum(1)[:, None] + (words * words).sum(1)[None] - 2 * x @ words.T  # N×K, no N×K×D array
        nearest = np.sort(d2, axis=1)
        gap = float(np.mean(nearest[:, 1] - nearest[:, 0])) if self.clusters > 1 else 1.0
        self.set_words(torch.from_numpy(words), -math.log(SECOND_WORD_WEIGHT) / max(gap, 1e-6))
        return self

    def soft_assignment(self, x: torch.Tensor) -> torch.Tensor:
        """``N×K×H×W`` weights ``a_k`` of each column (sum 1 over words), columns L2-normalised first."""
        return torch.softmax(self.assign(F.l2n(x, axis=1)), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.l2n(x, axis=1)
        a = torch.softmax(self.assign(x), dim=1).flatten(2)  # N×K×T
        cols = x.flatten(2)  # N×D×T
        v = torch.bmm(a, cols.transpose(1, 2)) - a.sum(dim=2, keepdim=True) * self.centroids[None]  # N×K×D
        return F.l2n(v, axis=2).flatten(1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, clusters={self.clusters}, alpha={self.alpha:.3g}"


__all__ = ["NetVLAD", "SECOND_WORD_WEIGHT"]
