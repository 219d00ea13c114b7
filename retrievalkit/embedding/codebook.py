"""Visual vocabularies: k-means centroids (BoW, VLAD) and a diagonal GMM (Fisher vectors).

Survey §2.3.2.2: BoW and VLAD need "a pre-defined codebook C = {c_1, …, c_K}" (Eqs. 2.4–2.8);
Fisher vectors a GMM dictionary ``{w_k, μ_k, Σ_k}`` with ``σ_k = sqrt(diag Σ_k)`` (Eqs. 2.9–2.11).
Taught in notebooks/05_embeddings_bow_vlad_fv.

**Protocol.** A codebook is learned from local descriptors of the LEARNING split only (COIL-100
objects 1–50 by default), never from query or database images: that would leak the test
distribution into the vocabulary. ``fit(X, split=…)`` makes the caller declare the split the
descriptors come from and refuses anything but ``"learn"``.

Estimators follow scikit-learn (``fit`` returns ``self``; fitted attributes end in ``_``) and
save to / load from ``.npz`` files, written atomically, for caching.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..config import atomic_path
from ..rows import Estimator, as_rows
from .local import LocalDescriptors

LEARNING_SPLIT = "learn"
DEFAULT_K = 64
KMEANS_ITERATIONS = 20
GMM_ITERATIONS = 100
KMEANS_MAX_TRAIN = 100_000
GMM_MAX_TRAIN = 50_000
GMM_REG_COVAR = 1e-6
ROW_CHUNK_VALUES = 2**24  # assignment / posteriors: rows per chunk × max(K, D) stays under this


def check_learning_split(split, what: str) -> None:
    """Raise unless ``split == "learn"``: codebooks, idf and whitening learn from the learning split only."""
    if split == LEARNING_SPLIT:
        return
    if split is None:
        raise ValueError(
            f"{what}: declare which split the descriptors come from, fit(X, split='learn'). "
            "Only descriptors of LEARNING-split images may be used (COIL-100 objects 1–50 by default)."
        )
    raise ValueError(
        f"{what} learns from the LEARNING split only, got split={split!r}: fitting on query or "
        "database images leaks the test distribution into the evaluation. Extract local descriptors "
        "of the learning split (e.g. rk.datasets.load('coil100', split='learn')) and pass split='learn'."
    )


def training_rows(X, max_train: int | None, seed: int) -> tuple[np.ndarray, int]:
    """The rows to learn from: all of them, or ``max_train`` drawn without replacement with ``seed``.

    Returns ``(rows, n_available)``; rows keep their original order.
    """
    X = X.descriptors if isinstance(X, LocalDescriptors) else as_rows(X, "descriptors")
    if len(X) == 0:
        raise ValueError("no local descriptors to learn a codebook from")
    if not np.isfinite(X).all():
        raise ValueError("the local descriptors hold NaN or infinite values; check the extraction")
    n = len(X)
    if max_train is not None and n > max_train:
        keep = np.sort(np.random.default_rng(seed).choice(n, size=int(max_train), replace=False))
        X = X[keep]
    return np.ascontiguousarray(X, dtype=np.float32), n


class _Codebook(Estimator):
    """Shared plumbing: :class:`~retrievalkit.rows.Estimator`'s repr and checks, atomic ``.npz`` save/load."""

    _FITTED: tuple[str, ...] = ()

    def _check_fitted(self) -> None:
        super()._check_fitted(self._FITTED[0], "call fit(X_learn, split='learn') on local descriptors of "
                                               "learning-split images, or load(path) a saved one")

    @property
    def dim(self) -> int:
        self._check_fitted()
        return getattr(self, self._FITTED[0]).shape[1]

    def save(self, path) -> Path:
        """Write the fitted codebook to ``path`` (``.npz``) atomically (temp file + rename)."""
        self._check_fitted()
        path = Path(path)
        meta = {"kind": type(self).__name__, "params": self._params(),
                "n_train": int(self.n_train_), "n_available": int(self.n_available_)}
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **{a: getattr(self, a) for a in self._FITTED})
        return path

    @classmethod
    def load(cls, path):
        """A fitted codebook from :meth:`save`'s file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no saved codebook at {path}: fit one on the learning split and save(path) it")
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta["kind"] != cls.__name__:
                raise ValueError(f"{path} holds a {meta['kind']}, not a {cls.__name__}: load it with {meta['kind']}.load")
            book = cls(**meta["params"])
            for name in cls._FITTED:
                setattr(book, name, data[name])
        book.n_train_, book.n_available_ = meta["n_train"], meta["n_available"]
        return book


class KMeansCodebook(_Codebook):
    """K visual words learned by k-means (faiss): the codebook of BoW (Eqs. 2.4–2.6) and VLAD (Eqs. 2.7–2.8).

    ``fit(X, split="learn")``: ``X`` are local descriptors (rows, or a :class:`LocalDescriptors`) of
    LEARNING-split images; at most ``max_train`` of them, drawn with ``seed``, are clustered for
    ``n_iter`` Lloyd iterations (faiss, initialised from ``seed``; same seed, same centroids).
    ``centroids_`` is ``K×D`` float32; ``assign(X)`` gives each row its nearest centroid (Eq. 2.5).
    """

    _FITTED = ("centroids_",)

    def __init__(self, k: int = DEFAULT_K, n_iter: int = KMEANS_ITERATIONS, seed: int = 0,
                 max_train: int | None = KMEANS_MAX_TRAIN):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k, self.n_iter, self.seed = int(k), int(n_iter), int(seed)
        self.max_train = None if max_train is None else int(max_train)

    def fit(self, X, split: str | None = None) -> "KMeansCodebook":
        check_learning_split(split, type(self).__name__)
        import faiss

        rows, n_available = training_rows(X, self.max_train, self.seed)
        if len(rows) < self.k:
            raise ValueError(f"k-means with k={self.k} needs at least {self.k} descriptors, got {len(rows)}; "
                             "use a smaller k or more learning images")
        kmeans = faiss.Kmeans(rows.shape[1], self.k, niter=self.n_iter, seed=self.seed, verbose=False,
                              min_points_per_centroid=1,
                              max_points_per_centroid=-(-len(rows) // self.k) + 1)  # we subsample, not faiss
        kmeans.train(rows)
        self.centroids_ = np.ascontiguousarray(kmeans.centroids, dtype=np.float32)
        self.n_train_, self.n_available_ = len(rows), n_available
        return self

    @classmethod
    def from_centroids(cls, centroids, seed: int = 0) -> "KMeansCodebook":
        """A codebook with given ``K×D`` centroids (examples, tests, codebooks learned elsewhere)."""
        centroids = as_rows(centroids, "centroids")
        book = cls(k=len(centroids), seed=seed)
        book.centroids_ = np.ascontiguousarray(centroids)
        book.n_train_ = book.n_available_ = 0
        return book

    def assign(self, X) -> np.ndarray:
        """Index of the nearest centroid (squared L2) of every row: ``φ(x_t, c_k) = 1`` for that k (Eq. 2.5).

        Exact search as one matrix product per chunk of rows, ``argmin_k ‖c_k‖² − 2 x·c_k`` (torch,
        all cores); for vocabularies of many thousand words use an approximate faiss index instead.
        """
        import torch

        self._check_fitted()
        X = X.descriptors if isinstance(X, LocalDescriptors) else as_rows(X, "descriptors")
        if X.shape[1] != self.dim:
            raise ValueError(f"the codebook has {self.dim}-D words, got {X.shape[1]}-D descriptors")
        words = np.empty(len(X), dtype=np.int64)
        rows, centroids = torch.from_numpy(np.ascontiguousarray(X)), torch.from_numpy(self.centroids_)
        sq_norms = (centroids * centroids).sum(dim=1)
        step = max(1, ROW_CHUNK_VALUES // self.k)
        for start in range(0, len(X), step):
            scores = torch.addmm(sq_norms, rows[start:start + step], centroids.T, alpha=-2)
            words[start:start + step] = scores.argmin(dim=1).numpy()
        return words


class GMMCodebook(_Codebook):
    """A Gaussian mixture with diagonal covariances (scikit-learn): the dictionary of Fisher vectors.

    Survey Eq. 2.9: ``C = {w_k, μ_k, σ_k}``, ``σ_k = sqrt(diag Σ_k)``. ``fit(X, split="learn")``
    learns from at most ``max_train`` local descriptors of LEARNING-split images (drawn with
    ``seed``; EM initialised from k-means with ``seed``; one thread, so the same rows give the same
    GMM to the last bit whatever the machine's thread settings). Fitted: ``weights_`` (K), ``means_`` (K×D),
    ``variances_`` (K×D, ``σ_k²``, floored by ``reg_covar``). :meth:`posteriors` gives ``γ_k(x_t)``.
    """

    _FITTED = ("weights_", "means_", "variances_")

    @property
    def dim(self) -> int:
        self._check_fitted()
        return self.means_.shape[1]

    def __init__(self, k: int = DEFAULT_K, seed: int = 0, covariance: str = "diag",
                 n_iter: int = GMM_ITERATIONS, max_train: int | None = GMM_MAX_TRAIN,
                 reg_covar: float = GMM_REG_COVAR):
        if covariance != "diag":
            raise ValueError(f"only covariance='diag' is supported (Fisher vectors use σ_k = sqrt(diag Σ_k)), got {covariance!r}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k, self.seed, self.covariance = int(k), int(seed), covariance
        self.n_iter, self.reg_covar = int(n_iter), float(reg_covar)
        self.max_train = None if max_train is None else int(max_train)

    def fit(self, X, split: str | None = None) -> "GMMCodebook":
        check_learning_split(split, type(self).__name__)
        from sklearn.mixture import GaussianMixture
        from threadpoolctl import threadpool_limits

        rows, n_available = training_rows(X, self.max_train, self.seed)
        if len(rows) < self.k:
            raise ValueError(f"a {self.k}-component GMM needs at least {self.k} descriptors, got {len(rows)}")
        # One thread: scikit-learn's k-means initialisation and the EM sums (OpenMP, BLAS) otherwise add in
        # an order that depends on the thread count, and the GMM's last digits with it (measured here).
        with threadpool_limits(limits=1):
            gmm = GaussianMixture(n_components=self.k, covariance_type="diag", max_iter=self.n_iter,
                                  reg_covar=self.reg_covar, random_state=self.seed).fit(rows.astype(np.float64))
        self.weights_, self.means_, self.variances_ = gmm.weights_, gmm.means_, gmm.covariances_
        self.converged_ = bool(gmm.converged_)
        self.n_train_, self.n_available_ = len(rows), n_available
        return self

    @classmethod
    def from_params(cls, weights, means, variances, seed: int = 0) -> "GMMCodebook":
        """A GMM with given parameters (hand-made examples, tests, models learned elsewhere)."""
        weights = np.asarray(weights, dtype=np.float64).ravel()
        means = np.atleast_2d(np.asarray(means, dtype=np.float64))
        variances = np.atleast_2d(np.asarray(variances, dtype=np.float64))
        if means.shape != variances.shape or len(weights) != len(means):
            raise ValueError(f"weights {weights.shape}, means {means.shape}, variances {variances.shape} do not match")
        if (weights <= 0).any() or not np.isclose(weights.sum(), 1) or (variances <= 0).any():
            raise ValueError("weights must be positive and sum to 1; variances must be positive")
        book = cls(k=len(weights), seed=seed)
        book.weights_, book.means_, book.variances_ = weights, means, variances
        book.n_train_ = book.n_available_ = 0
        return book

    def posteriors(self, X) -> np.ndarray:
        """Soft assignments ``γ_k(x_t) = w_k p_k(x_t) / Σ_j w_j p_j(x_t)`` (Survey Eq. 2.9): ``M×K`` float32.

        Computed in the log domain (no underflow in high dimension) with two float32 matrix
        products and a soft-max (torch); descriptors and means are first shifted by the mixture's
        mean, which leaves γ unchanged and keeps the expanded quadratic form well conditioned.
        """
        self._check_fitted()
        X = X.descriptors if isinstance(X, LocalDescriptors) else as_rows(X, "descriptors")
        if X.shape[1] != self.dim:
            raise ValueError(f"the GMM has {self.dim}-D components, got {X.shape[1]}-D descriptors")
        import torch

        centre = self.weights_ @ self.means_
        mu = self.means_ - centre
        precision = 1.0 / self.variances_
        # log(w_k p_k(x)) = bias_k − ½ Σ_d x_d²/σ²_kd + Σ_d x_d μ_kd/σ²_kd   (x and μ shifted by the centre)
        bias = np.log(self.weights_) - 0.5 * (np.log(2 * np.pi * self.variances_).sum(axis=1) + (mu * mu * precision).sum(axis=1))
        as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
        bias, square_weights, linear_weights = as_tensor(bias), as_tensor(-0.5 * precision.T), as_tensor((mu * precision).T)
        rows, centre = torch.from_numpy(np.ascontiguousarray(X)), as_tensor(centre)
        gamma = np.empty((len(X), self.k), dtype=np.float32)
        step = max(1, ROW_CHUNK_VALUES // max(self.k, X.shape[1]))
        for start in range(0, len(X), step):
            x = rows[start:start + step] - centre
            log_joint = torch.addmm(bias, x * x, square_weights).addmm_(x, linear_weights)
            gamma[start:start + step] = torch.softmax(log_joint, dim=1).numpy()  # subtracts the row max first
        return gamma

__all__ = ["KMeansCodebook", "GMMCodebook", "check_learning_split", "training_rows", "LEARNING_SPLIT"]
