"""Bag of visual words: hard assignment to the nearest word, term-frequency histogram, tf-idf, L2.

Survey §2.3.2.2, Eqs. 2.4–2.6 (Sivic & Zisserman 2003 [7]); taught in notebooks/05_embeddings_bow_vlad_fv.

For image ``i`` with local descriptors ``x_1 … x_T`` and a codebook ``c_1 … c_K``:

* Eq. 2.5   ``φ(x_t, c_k) = 1`` if ``c_k`` is the nearest word of ``x_t``, else 0;
* Eq. 2.4   ``g(c_k) = (1/T) Σ_t φ(x_t, c_k)``  — the term frequency ``tf_ik = n_ik / T``;
* Eq. 2.6   ``G_BoW = [g(c_1), …, g(c_K)]ᵀ``;
* tf-idf    ``g(c_k) · idf_k`` with ``idf_k = log(N / n_k)``: ``N`` learning images, ``n_k`` of them
  containing word ``k`` (Sivic & Zisserman's weighting, which the survey's Eq. 2.4 omits). The
  idf is learned on the LEARNING split (:meth:`BoW.fit_idf`); words no learning image contains
  get ``n_k = 1`` (the rarest observable word) instead of an infinite weight;
* L2        ``v / (‖v‖ + 1e-6)`` (so search by inner product is cosine similarity).

An image without descriptors (``T = 0``) encodes to the zero vector. For large vocabularies
``encode(…, sparse=True)`` returns a SciPy CSR matrix, which :class:`InvertedFile` searches.
"""
from __future__ import annotations

import numpy as np

from ..rows import DEFAULT_EPS, Estimator, NotFittedError
from .codebook import KMeansCodebook, check_learning_split
from .local import as_batch

WEIGHTINGS = ("tf", "tfidf")


def _l2_sparse_rows(X):
    import scipy.sparse as sp

    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    return (sp.diags((1.0 / (norms + DEFAULT_EPS)).astype(np.float32)) @ X).tocsr()


class BoW(Estimator):
    """Bag-of-words encoder over a fitted :class:`KMeansCodebook`: ``encode(local) -> N×K``.

    ``weighting="tfidf"`` (default) needs :meth:`fit_idf` on learning-split descriptors first;
    ``"tf"`` is Eq. 2.4 alone. ``normalize`` applies the final L2. ``whitening``: an optional
    *fitted* transformer (e.g. :class:`retrievalkit.whitening.PCAWhitening`) applied last; fit it
    on encodings of LEARNING-split images (the caller's job).
    """

    def __init__(self, codebook: KMeansCodebook, weighting: str = "tfidf", normalize: bool = True, whitening=None):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; choose one of {WEIGHTINGS}")
        self.codebook, self.weighting, self.normalize, self.whitening = codebook, weighting, normalize, whitening

    @property
    def dim(self) -> int:
        return self.codebook.k

    def counts(self, local, image_index=None, n_images: int | None = None, sparse: bool = False):
        """Occurrences ``n_ik = Σ_t φ(x_t, c_k)`` (Eq. 2.5 summed): ``N×K`` int64, or CSR float32 when ``sparse``."""
        import scipy.sparse as sp

        batch = as_batch(local, image_index, n_images)
        words = self.codebook.assign(batch.descriptors)
        ones = np.ones(len(words), dtype=np.float32)
        # COO → CSR sums the duplicate (image, word) entries: a scatter-add of ones.
        hist = sp.coo_matrix((ones, (batch.image_index, words)), shape=(batch.n_images, self.dim)).tocsr()
        return hist if sparse else hist.toarray().astype(np.int64)

    def fit_idf(self, local, image_index=None, n_images: int | None = None, *, split: str | None = None) -> "BoW":
        """Learn ``idf_k = log(N / max(n_k, 1))`` from LEARNING-split images (``split="learn"`` required).

        ``N`` counts every learning image (those without descriptors too); ``n_k`` the images in which
        word ``k`` occurs at least once. Sets ``idf_`` (K float32) and ``n_learning_images_``.
        """
        check_learning_split(split, "BoW.fit_idf")
        hist = self.counts(local, image_index, n_images, sparse=True)
        n = hist.shape[0]
        if n == 0:
            raise ValueError("fit_idf needs at least one learning image")
        document_frequency = np.bincount(hist.indices, minlength=self.dim)
        self.idf_ = np.log(n / np.maximum(document_frequency, 1)).astype(np.float32)
        self.n_learning_images_ = n
        return self

    def encode(self, local, image_index=None, n_images: int | None = None, sparse: bool = False):
        """BoW vectors (Eqs. 2.4–2.6, then tf-idf and L2): ``N×K`` float32, or CSR when ``sparse``."""
        import scipy.sparse as sp

        if self.weighting == "tfidf" and not hasattr(self, "idf_"):
            raise NotFittedError("BoW(weighting='tfidf') needs fit_idf(learning_local, split='learn') first, "
                                 "or use weighting='tf'")
        hist = self.counts(local, image_index, n_images, sparse=True)
        n_descriptors = np.asarray(hist.sum(axis=1), dtype=np.float32).ravel()
        scale = np.divide(1.0, n_descriptors, out=np.zeros_like(n_descriptors), where=n_descriptors > 0)
        vectors = sp.diags(scale) @ hist  # tf: Eq. 2.4's 1/T
        if self.weighting == "tfidf":
            vectors = vectors @ sp.diags(self.idf_)
        vectors = vectors.tocsr().astype(np.float32)
        if self.normalize:
            vectors = _l2_sparse_rows(vectors)
        if sparse:
            if self.whitening is not None:
                raise ValueError("whitening gives dense vectors: use sparse=False with whitening")
            vectors.eliminate_zeros()
            return vectors
        dense = vectors.toarray()
        return dense if self.whitening is None else self.whitening.transform(dense)

    __call__ = encode


__all__ = ["BoW", "WEIGHTINGS"]
