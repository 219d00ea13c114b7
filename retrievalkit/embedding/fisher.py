"""Fisher vectors: normalised gradients of a diagonal GMM's log-likelihood (the improved FV).

Survey §2.3.2.2, Eqs. 2.9–2.11 (Perronnin & Dance 2007 [8]; improved FV: Perronnin, Sánchez &
Mensink 2010; the normalised form of Sánchez et al. 2013); taught in notebooks/05_embeddings_bow_vlad_fv.

For image ``i`` with local descriptors ``x_1 … x_T`` and a GMM ``{w_k, μ_k, σ_k}`` (σ_k² the diagonal):

* Eq. 2.9   ``γ_k(x_t) = w_k p_k(x_t) / Σ_j w_j p_j(x_t)``, ``p_k = N(μ_k, diag σ_k²)``;
* Eq. 2.10  ``G_w_k = 1/(T √w_k)       Σ_t (γ_k(x_t) − w_k)``                          (1 number)
            ``G_μ_k = 1/(T √w_k)       Σ_t γ_k(x_t) (x_t − μ_k) / σ_k``                 (D numbers)
            ``G_σ_k = 1/(T √(2 w_k))   Σ_t γ_k(x_t) [(x_t − μ_k)² / σ_k² − 1]``         (D numbers)
  (element-wise division and squares). The factors ``1/√w_k`` and ``1/√(2 w_k)`` are the
  diagonal closed-form approximation of the Fisher information matrix, ``F^(−1/2)``, which turns
  the gradient into the Fisher vector. The survey prints ``γ_k(x_t)`` outside the sums over ``t``
  (and ``μ_i`` for ``μ_k``); it belongs inside, as in the cited papers and as implemented here.
  ``G_w`` uses the soft-max parametrisation of the weights (Sánchez et al. 2013).
* Eq. 2.11  ``G_FV = [G_w_1…G_w_K, G_μ_1…G_μ_K, G_σ_1…G_σ_K]`` in that order; ``parts`` picks
  which blocks are included (default means + variances: ``2·K·D`` numbers, the usual choice,
  since the ``K`` weight terms add little).
* improved FV: signed power ``sign(G)|G|^α`` (α = 0.5), then L2 ``G / (‖G‖ + 1e-6)``.

An image without descriptors (``T = 0``) encodes to the zero vector.

Computation: posteriors in the log domain, then per-image statistics ``S0 = Σ_t γ_tk``,
``S1 = Σ_t γ_tk x_t``, ``S2 = Σ_t γ_tk x_t²`` (one batched matrix product per chunk of images) and
the expanded forms ``(S1 − μ S0)/σ`` and ``S2/σ² − 2μ S1/σ² + (μ²/σ² − 1) S0``, in float32 after
shifting by the mixture's mean. It matches a float64 evaluation of Eq. 2.10 to about 1e-5 of the
vector's norm.
"""
from __future__ import annotations

import numpy as np

from ..rows import Estimator
from .codebook import GMMCodebook
from .local import as_batch, encode_in_chunks, sum_by_group, weighted_sums_per_image
from .vlad import power_l2

PARTS = ("w", "mu", "sigma")
DEFAULT_PARTS = ("mu", "sigma")


class FisherVector(Estimator):
    """Fisher-vector encoder over a fitted :class:`GMMCodebook`: ``encode(local) -> N×dim`` float32.

    ``parts``: any of ``"w"`` (K), ``"mu"`` (K·D), ``"sigma"`` (K·D), always laid out in Eq. 2.11's
    order. ``alpha`` (signed power; ``None`` = off) and ``normalize`` (L2) make the improved FV.
    ``whitening``: an optional *fitted* transformer (e.g. :class:`retrievalkit.whitening.PCAWhitening`)
    applied last; fit it on Fisher vectors of LEARNING-split images (the caller's job).
    """

    def __init__(self, gmm: GMMCodebook, parts=DEFAULT_PARTS, alpha: float | None = 0.5,
                 normalize: bool = True, whitening=None):
        parts = (parts,) if isinstance(parts, str) else tuple(parts)
        unknown = set(parts) - set(PARTS)
        if unknown or not parts:
            raise ValueError(f"parts must be a non-empty subset of {PARTS}, got {parts!r}")
        self.gmm, self.parts, self.alpha = gmm, tuple(p for p in PARTS if p in parts), alpha
        self.normalize, self.whitening = normalize, whitening

    @property
    def dim(self) -> int:
        k, d = self.gmm.k, self.gmm.dim
        return sum({"w": k, "mu": k * d, "sigma": k * d}[p] for p in self.parts)

    def gradients(self, local, image_index=None, n_images: int | None = None) -> dict[str, np.ndarray]:
        """The un-normalised terms of Eq. 2.10 for every image: ``{"w": N×K, "mu": N×K×D, "sigma": N×K×D}``
        (only the requested ``parts``; views into one ``N×dim`` array laid out as Eq. 2.11)."""
        return self._gradients(as_batch(local, image_index, n_images))[1]

    def _gradients(self, batch) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        gmm = self.gmm
        n, k, d = batch.n_images, gmm.k, gmm.dim
        vectors = np.empty((n, self.dim), dtype=np.float32)
        blocks, start = {}, 0
        for part in self.parts:
            width = k if part == "w" else k * d
            blocks[part] = vectors[:, start:start + width].reshape((n, k) if part == "w" else (n, k, d))
            start += width
        gamma = gmm.posteriors(batch.descriptors)  # M×K, Eq. 2.9
        s0 = sum_by_group(gamma, batch.image_index, n).astype(np.float64)  # S0_ik = Σ_t γ_tk
        t = batch.counts.astype(np.float64)[:, None]
        inv_t = np.divide(1.0, t, out=np.zeros_like(t), where=t > 0)
        scale = inv_t / np.sqrt(gmm.weights_)[None, :]  # 1/(T √w_k): N×K
        if "w" in blocks:
            blocks["w"][:] = (s0 - t * gmm.weights_[None, :]) * scale  # Σ_t (γ_tk − w_k) = S0 − T w_k
        if "mu" in blocks or "sigma" in blocks:
            # Shift by the mixture's mean so the expanded second-order form does not cancel badly in float32.
            centre = (gmm.weights_ @ gmm.means_).astype(np.float32)
            xc = batch.descriptors - centre
            mu = gmm.means_ - centre
            features = np.concatenate([xc, xc * xc], axis=1) if "sigma" in blocks else xc
            sums = weighted_sums_per_image(batch, gamma, features)  # S1 (and S2): N×K×D (×2)
            s1 = sums[:, :, :d]
            s0f = s0.astype(np.float32)[:, :, None]
            scale_f = scale.astype(np.float32)[:, :, None]
            if "mu" in blocks:
                # Σ_t γ (x − μ)/σ = S1/σ − (μ/σ) S0
                g = blocks["mu"]
                np.multiply(s1, (1 / np.sqrt(gmm.variances_)).astype(np.float32), out=g)
                g -= s0f * (mu / np.sqrt(gmm.variances_)).astype(np.float32)
                g *= scale_f
            if "sigma" in blocks:
                # Σ_t γ [(x − μ)²/σ² − 1] = S2/σ² − (2μ/σ²) S1 + (μ²/σ² − 1) S0
                g = blocks["sigma"]
                np.multiply(sums[:, :, d:], (1 / gmm.variances_).astype(np.float32), out=g)
                g -= s1 * (2 * mu / gmm.variances_).astype(np.float32)
                g += s0f * (mu * mu / gmm.variances_ - 1).astype(np.float32)
                g *= scale_f / np.float32(np.sqrt(2.0))
        return vectors, blocks

    def encode(self, local, image_index=None, n_images: int | None = None) -> np.ndarray:
        """Improved Fisher vectors (Eqs. 2.9–2.11, then power and L2): ``N×dim`` float32.

        Vectorised over chunks of images (≈64 MB of output each), so memory stays bounded."""
        batch = as_batch(local, image_index, n_images)
        return encode_in_chunks(batch, self.dim, self._encode_chunk)

    def _encode_chunk(self, batch) -> np.ndarray:
        vectors, _ = self._gradients(batch)
        vectors = power_l2(vectors, self.alpha, self.normalize)
        return vectors if self.whitening is None else self.whitening.transform(vectors)

    __call__ = encode


__all__ = ["FisherVector", "PARTS", "DEFAULT_PARTS"]
