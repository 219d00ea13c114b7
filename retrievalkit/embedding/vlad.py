"""VLAD: sums of residuals to the nearest visual word, with intra, power and L2 normalisation.

Survey §2.3.2.2, Eqs. 2.7–2.8 (Jégou et al. 2010 [28]; on conv columns: Ng et al. 2015 [30]);
taught in notebooks/05_embeddings_bow_vlad_fv.

For image ``i`` with local descriptors ``x_1 … x_T`` (``D``-d) and k-means words ``c_1 … c_K``:

1. Eq. 2.7  ``v_k = (1/T) Σ_t φ(x_t, c_k) (x_t − c_k)``  (``φ``: nearest-word indicator, Eq. 2.5);
2. Eq. 2.8  ``V = [v_1ᵀ, …, v_Kᵀ]ᵀ`` — ``K·D`` numbers, word-major (block ``k`` = entries ``k·D … k·D+D−1``);
3. intra-normalisation ``v_k ← v_k / (‖v_k‖ + 1e-6)`` per word (Arandjelović & Zisserman 2013,
   "All about VLAD"): a few bursty words can no longer dominate;
4. signed power normalisation ``V ← sign(V)·|V|^α`` (α = 0.5: Jégou et al. 2012's signed square
   root; ``alpha=None`` skips it);
5. global L2 ``V ← V / (‖V‖ + 1e-6)``.

The 1/T of Eq. 2.7 has no effect once step 3 or 5 runs; it is kept so that
``VLAD(…, intra_norm=False, alpha=None, normalize=False)`` is exactly Eq. 2.7–2.8. An image without
descriptors encodes to the zero vector, and so does the block of a word no descriptor chose.
"""
from __future__ import annotations

import numpy as np

from ..rows import Estimator, l2n, powerlaw
from .codebook import KMeansCodebook
from .local import as_batch, encode_in_chunks, sum_by_group


def power_l2(V: np.ndarray, alpha: float | None, normalize: bool) -> np.ndarray:
    """Signed power ``sign(v)|v|^alpha`` (skipped for ``alpha=None``) then L2 (when ``normalize``),
    with :func:`retrievalkit.rows.powerlaw` and :func:`~retrievalkit.rows.l2n` (Survey §2.3.2.2)."""
    V = V if alpha is None else powerlaw(V, alpha)
    return l2n(V) if normalize else V


class VLAD(Estimator):
    """VLAD encoder over a fitted :class:`KMeansCodebook`: ``encode(local) -> N×(K·D)`` float32.

    ``intra_norm``, ``alpha`` (signed power; ``None`` = off) and ``normalize`` (global L2) select the
    normalisation steps in the module docstring. ``whitening``: an optional *fitted* transformer
    (e.g. :class:`retrievalkit.whitening.PCAWhitening`) applied last; fit it on VLADs of
    LEARNING-split images (the caller's job).
    """

    def __init__(self, codebook: KMeansCodebook, intra_norm: bool = True, alpha: float | None = 0.5,
                 normalize: bool = True, whitening=None):
        self.codebook, self.intra_norm, self.alpha = codebook, intra_norm, alpha
        self.normalize, self.whitening = normalize, whitening

    @property
    def dim(self) -> int:
        return self.codebook.k * self.codebook.dim

    def residual_sums(self, local, image_index=None, n_images: int | None = None) -> np.ndarray:
        """Eq. 2.7 for every image and word: ``N×K×D`` float32 (with the 1/T)."""
        batch = as_batch(local, image_index, n_images)
        k, d = self.codebook.k, self.codebook.dim
        words = self.codebook.assign(batch.descriptors)
        residuals = batch.descriptors - self.codebook.centroids_[words]
        sums = sum_by_group(residuals, batch.image_index * k + words, batch.n_images * k)
        counts = batch.counts.astype(np.float32)
        scale = np.divide(1.0, counts, out=np.zeros_like(counts), where=counts > 0)
        return sums.reshape(batch.n_images, k, d) * scale[:, None, None]

    def encode(self, local, image_index=None, n_images: int | None = None) -> np.ndarray:
        """VLAD vectors (Eqs. 2.7–2.8 + intra, power, L2 normalisation): ``N×(K·D)`` float32.

        Vectorised over chunks of images (≈64 MB of output each), so memory stays bounded."""
        batch = as_batch(local, image_index, n_images)
        return encode_in_chunks(batch, self.dim, self._encode_chunk)

    def _encode_chunk(self, batch) -> np.ndarray:
        blocks = self.residual_sums(batch)
        n, k, d = blocks.shape
        if self.intra_norm:
            blocks = l2n(blocks)
        vectors = power_l2(blocks.reshape(n, k * d), self.alpha, self.normalize)
        return vectors if self.whitening is None else self.whitening.transform(vectors)

    __call__ = encode


__all__ = ["VLAD", "power_l2"]
