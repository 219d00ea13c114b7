"""Inverted file: search sparse BoW vectors by visiting only the images that share a word with the query.

Survey §2.3.2.2 (BoW vectors are "high dimensional and sparse") and §2.1.2 (efficiency); the
classic text-retrieval index of Sivic & Zisserman 2003 [7]. Taught in notebooks/05_embeddings_bow_vlad_fv.

The index is the database's ``N×K`` tf-idf matrix stored by word: row ``k`` of ``postings_``
(``K×N`` CSR) is word ``k``'s posting list — the images containing it and their weights. Sparse
queries ``Q`` (``Q×K`` CSR) are scored by one sparse product ``Q · postings`` (= ``Q · DBᵀ``):
only the posting lists of the queries' own words are read, so the cost grows with the number of
(query word, image) matches rather than with ``N·K``. Scores equal the dense inner products, and
:meth:`InvertedFile.search` returns ``(scores, ids)`` best first like
:func:`retrievalkit.index.exact_search`, with the same tie rule (lower id first); images sharing
no word with the query score 0 and come after the positive scores, in id order.

Pass L2-normalised vectors (the default of :class:`BoW`) so scores are cosine similarities.
"""
from __future__ import annotations

import numpy as np

from ..rows import is_torch

QUERY_CHUNK = 256


def _as_csr(X, what: str):
    import scipy.sparse as sp

    if is_torch(X):
        X = X.detach().cpu().numpy()
    X = sp.csr_matrix(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"{what} must be rows (N×K), got shape {X.shape}")
    X.sum_duplicates()
    return X


def _rank_row(ids: np.ndarray, scores: np.ndarray, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` of ``n`` images whose scores are ``scores`` at ``ids`` and 0 elsewhere; ties → lower id."""
    order = np.lexsort((ids, -scores))
    ids, scores = ids[order].astype(np.int64), scores[order].astype(np.float32)
    pos, neg = scores > 0, scores < 0
    top_ids, top_scores = ids[pos][:k], scores[pos][:k]
    need = k - len(top_ids)
    if need > 0:
        # The first `need` zero-scored ids lie below need + (number of non-zero ids).
        nonzero = ids[pos | neg]
        candidates = np.arange(min(n, need + len(nonzero)), dtype=np.int64)
        zeros = candidates[~np.isin(candidates, nonzero)][:need]
        rest = need - len(zeros)
        top_ids = np.concatenate([top_ids, zeros, ids[neg][:rest]])
        top_scores = np.concatenate([top_scores, np.zeros(len(zeros), np.float32), scores[neg][:rest]])
    return top_scores, top_ids


class InvertedFile:
    """Inverted-file index over sparse database vectors (``N×K`` dense array or SciPy sparse matrix).

    ``search(queries, k)`` → ``(scores, ids)``, each ``Q×k``, best first; ``k=None`` ranks the
    whole database. Equal to dense inner-product search on the same vectors.
    """

    def __init__(self, database):
        db = _as_csr(database, "database")
        self.n_images, self.n_words = db.shape
        self.postings_ = db.T.tocsr()
        self.postings_.eliminate_zeros()
        self.postings_.sort_indices()

    def __repr__(self):
        return f"InvertedFile(n_images={self.n_images}, n_words={self.n_words}, n_postings={self.postings_.nnz})"

    @property
    def nbytes(self) -> int:
        """Memory of the posting lists (weights + image ids + list offsets)."""
        p = self.postings_
        return int(p.data.nbytes + p.indices.nbytes + p.indptr.nbytes)

    def postings(self, word: int) -> tuple[np.ndarray, np.ndarray]:
        """``(image ids, weights)`` of the images containing ``word``."""
        start, stop = self.postings_.indptr[word], self.postings_.indptr[word + 1]
        return self.postings_.indices[start:stop].astype(np.int64), self.postings_.data[start:stop]

    def search(self, queries, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        Q = _as_csr(queries, "queries")
        if Q.shape[1] != self.n_words:
            raise ValueError(f"queries have {Q.shape[1]} words, the index {self.n_words}")
        from ..index import check_k  # the search convention's k rule (torch loads only when searching)

        n = self.n_images
        k = check_k(n if k is None else k, n)
        scores = np.empty((Q.shape[0], k), dtype=np.float32)
        ids = np.empty((Q.shape[0], k), dtype=np.int64)
        for start in range(0, Q.shape[0], QUERY_CHUNK):
            matches = (Q[start:start + QUERY_CHUNK] @ self.postings_).tocsr()  # only shared words contribute
            for row in range(matches.shape[0]):
                lo, hi = matches.indptr[row], matches.indptr[row + 1]
                scores[start + row], ids[start + row] = _rank_row(matches.indices[lo:hi], matches.data[lo:hi], n, k)
        return scores, ids


__all__ = ["InvertedFile", "QUERY_CHUNK"]
