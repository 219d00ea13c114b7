"""Post-processing of global descriptors: L2, power law, PCA, PCA-whitening and learned whitening.

Survey §2.3.2 (feature enhancement: "usually followed by L2 norm and PCA dimensionality
reduction", §2.3.2.1) and the ``PCA_w`` columns of Tables 2.2–2.3; taught in
notebooks/04_whitening_and_dimension.

Estimators follow scikit-learn: ``fit(X)`` learns, ``transform(X)`` applies, ``fit_transform``
does both. Rows are descriptors (``N×D``). NumPy in → NumPy out (float32 unless the input is
float64); torch in → torch out on the same device and dtype. Outputs are L2-normalised unless
``normalize=False``.

**Protocol.** Anything with a ``fit`` learns statistics of the data it sees, so fit it on the
LEARNING split only (COIL-100 objects 1–50 by default) and only ``transform`` the queries and the
database. Fitting on test descriptors leaks the test distribution into the evaluation.

Fitting is done in float64 with a symmetric eigen-decomposition of a ``D×D`` matrix, so it costs
``O(N·D² + D³)``: seconds for ``D = 2048``. Eigenvalues below ``RANK_RTOL`` times the largest are
treated as zero (the numerical null space); asking for more components than remain raises.
"""
from __future__ import annotations

import inspect

import numpy as np

from .rows import DEFAULT_EPS, Estimator, NotFittedError, as_labels, as_rows, is_torch, l2n, like, powerlaw

RANK_RTOL = 1e-10

_PROTOCOL = (
    "Fit on the LEARNING split only (the caller passes only learning-split descriptors; "
    "Survey §2.3.2, taught in notebooks/04_whitening_and_dimension)."
)


def _eigh_desc(C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors (columns) of a symmetric matrix, with a fixed sign
    convention (each eigenvector's largest-magnitude entry is positive) so results are reproducible."""
    vals, vecs = np.linalg.eigh((C + C.T) / 2)
    vals, vecs = vals[::-1], vecs[:, ::-1]
    signs = np.sign(vecs[np.abs(vecs).argmax(axis=0), np.arange(vecs.shape[1])])
    return vals, vecs * np.where(signs == 0, 1, signs)


def _rank(vals: np.ndarray) -> int:
    return int((vals > RANK_RTOL * vals[0]).sum()) if len(vals) and vals[0] > 0 else 0


def _n_components(dim: int | None, available: int, what: str, detail: str) -> int:
    if dim is None:
        return available
    dim = int(dim)
    if dim < 1:
        raise ValueError(f"{what}: dim must be >= 1 or None, got {dim}")
    if dim > available:
        raise ValueError(
            f"{what}: asked for dim={dim} but the learning descriptors support only {available} "
            f"({detail}); ask for dim <= {available} or fit on more learning rows"
        )
    return dim


def _covariance(Xc: np.ndarray) -> np.ndarray:
    return Xc.T @ Xc / max(len(Xc) - 1, 1)


# --------------------------------------------------------------------------- estimators
class _Transformer(Estimator):
    """:class:`~retrievalkit.rows.Estimator` plus the optional final L2 (``normalize``)."""

    normalize: bool = True
    eps: float = DEFAULT_EPS

    def fit(self, X, y=None):  # stateless by default: only the width is learned
        self.n_features_in_ = as_rows(X, dtype=None).shape[1]
        return self

    def _finish(self, Y):
        return l2n(Y, self.eps) if self.normalize else Y


class L2Normalize(_Transformer):
    __doc__ = f"""Row-wise L2 normalisation (nothing to learn; ``fit`` only records the width). {_PROTOCOL}"""

    def __init__(self, eps: float = DEFAULT_EPS):
        self.eps = eps

    def transform(self, X):
        return l2n(self._check(X), self.eps)


class PowerLaw(_Transformer):
    __doc__ = f"""Signed power normalisation ``sign(x)|x|^alpha`` (alpha=0.5: signed square root), then L2.

    Nothing to learn; it damps dominant components before PCA/whitening (Survey §2.3.2.2).
    {_PROTOCOL}"""

    def __init__(self, alpha: float = 0.5, normalize: bool = True, eps: float = DEFAULT_EPS):
        self.alpha, self.normalize, self.eps = alpha, normalize, eps

    def transform(self, X):
        return self._finish(powerlaw(self._check(X), self.alpha))


class _Linear(_Transformer):
    """``transform(X) = (X - mean_) @ projection_``, then optional L2."""

    mean_: np.ndarray
    projection_: np.ndarray

    def transform(self, X):
        X = self._check(X)
        return self._finish((X - like(self.mean_, X)) @ like(self.projection_, X))

    def _store(self, mean: np.ndarray, projection: np.ndarray) -> "_Linear":
        self.n_features_in_ = len(mean)
        self.mean_, self.projection_ = mean, projection
        self.n_components_ = projection.shape[1]
        return self


class PCA(_Linear):
    __doc__ = f"""Centring and projection on the top-``dim`` principal directions (no scaling), then L2.

    ``fit(X)`` takes the mean and the eigenvectors of the covariance; ``explained_variance_``
    holds the kept eigenvalues (descending), ``components_`` the directions as rows.
    ``dim=None`` keeps all ``D`` directions (a rotation); an explicit ``dim`` above the rank of the
    centred learning rows raises ``ValueError``. {_PROTOCOL}"""

    def __init__(self, dim: int | None = None, normalize: bool = True, eps: float = DEFAULT_EPS):
        self.dim, self.normalize, self.eps = dim, normalize, eps

    def fit(self, X, y=None):
        X = as_rows(X, dtype=np.float64, finite=True)
        mean = X.mean(axis=0)
        vals, vecs = _eigh_desc(_covariance(X - mean))
        rank = _rank(vals)
        d = X.shape[1] if self.dim is None else _n_components(self.dim, rank, "PCA", f"rank {rank} of {X.shape[0]} centred rows × {X.shape[1]} columns")
        self.explained_variance_ = vals[:d]
        self.rank_ = rank
        self.components_ = vecs[:, :d].T
        return self._store(mean, vecs[:, :d])


class PCAWhitening(_Linear):
    __doc__ = f"""PCA-whitening (Jégou & Chum 2012): centre, rotate onto the principal directions and divide
    each by its standard deviation, so the learning descriptors get identity covariance; then L2.

    Why it helps retrieval: co-occurring (correlated) activations are counted once rather than
    many times, and rare directions are no longer drowned out by the few dominant ones.
    Projection: ``P = U_d · diag(λ'_d + eps)^(-1/2)`` with ``λ' = (1 - shrinkage)·λ + shrinkage·mean(λ_d)``:
    ``shrinkage = 0`` is full whitening, ``shrinkage = 1`` is plain PCA up to a global scale; values in
    between temper the boost of weak (often noisy) directions. ``eps`` (absolute, added to the
    eigenvalues) is a second regulariser. ``dim=None`` keeps every non-null direction (the rank);
    a ``dim`` above the rank raises ``ValueError``. {_PROTOCOL}"""

    def __init__(self, dim: int | None = None, shrinkage: float = 0.0, eps: float = 0.0, normalize: bool = True):
        if not 0 <= shrinkage <= 1:
            raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.dim, self.shrinkage, self.eps, self.normalize = dim, shrinkage, eps, normalize

    def _finish(self, Y):  # ``eps`` here regularises eigenvalues; the L2 guard uses the module default
        return l2n(Y) if self.normalize else Y

    def fit(self, X, y=None):
        X = as_rows(X, dtype=np.float64, finite=True)
        mean = X.mean(axis=0)
        vals, vecs = _eigh_desc(_covariance(X - mean))
        rank = _rank(vals)
        if rank == 0:
            raise ValueError("PCAWhitening: the learning descriptors are all identical (zero variance); nothing to whiten")
        d = _n_components(self.dim, rank, "PCAWhitening", f"rank {rank} of {X.shape[0]} centred rows × {X.shape[1]} columns")
        lam = vals[:d]
        lam = (1 - self.shrinkage) * lam + self.shrinkage * lam.mean()
        self.explained_variance_, self.rank_ = vals[:d], rank
        return self._store(mean, vecs[:, :d] / np.sqrt(lam + self.eps))


def pairs_from_labels(labels) -> np.ndarray:
    """All matching pairs ``(i, j)``, ``i < j``, of rows that share a label: an ``M×2`` int64 array.

    Quadratic in the class size; :class:`LearnedWhitening` does not need it (``fit(X, labels=…)``
    uses a closed form), it is here for inspection and small examples.
    """
    labels = np.asarray(labels).ravel()
    i, j = np.triu_indices(len(labels), k=1)
    same = labels[i] == labels[j]
    return np.stack([i[same], j[same]], axis=1).astype(np.int64)


class LearnedWhitening(_Linear):
    __doc__ = f"""Supervised ("learned") whitening from matching pairs, Radenović, Tolias & Chum 2016 (ECCV)
    and 2018 (TPAMI), the "Lw" of cirtorch; then L2.

    Derivation. We want a linear map under which the two images of a matching pair are close and
    unrelated images stay apart, an LDA-like goal. Let ``C_S = mean over matching pairs of
    (x_i - x_j)(x_i - x_j)ᵀ`` (intra-class scatter: the nuisance, e.g. viewpoint or lighting).

    1. Whiten the nuisance: ``W = C_S^(-1/2)`` (via its eigen-decomposition, ``U_S diag(λ_S)^(-1/2)``),
       so pair differences have unit variance in every direction; no nuisance direction dominates.
    2. In that space, rotate onto the principal directions of the inter-class spread and keep the
       top ``dim``: these are the directions where unrelated images vary most *relative to* the
       nuisance. Together this solves the generalised eigenproblem ``C_D v = λ C_S v``.

    For ``C_D`` we use the covariance of all learning rows: summed over all pairs,
    ``Σ_(i<j) (x_i - x_j)(x_i - x_j)ᵀ = N · Σ_i (x_i - μ)(x_i - μ)ᵀ``, and random pairs are almost all
    non-matching — the same shortcut as the reference implementation. The projection is
    ``P = W · U_D[:, :dim]`` applied to ``x - μ``.

    ``fit(X, pairs)`` takes an ``M×2`` int array of matching row indices; ``fit(X, labels=…)``
    uses every same-label pair through the closed form ``Σ_(i<j in c) (x_i - x_j)(x_i - x_j)ᵀ =
    n_c · Σ_(i in c) (x_i - μ_c)(x_i - μ_c)ᵀ`` (no quadratic pair list). Directions in which no
    matching pair differs (possible with few pairs) cannot be whitened and are left out; set
    ``shrinkage > 0`` to mix ``C_S`` with a multiple of the identity and keep them. ``dim=None``
    keeps every available direction; a larger ``dim`` raises ``ValueError``. {_PROTOCOL}"""

    def __init__(self, dim: int | None = None, shrinkage: float = 0.0, normalize: bool = True):
        if not 0 <= shrinkage <= 1:
            raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}")
        self.dim, self.shrinkage, self.normalize = dim, shrinkage, normalize

    def fit(self, X, pairs=None, *, labels=None):
        X = as_rows(X, dtype=np.float64, finite=True)
        n, d_in = X.shape
        if (pairs is None) == (labels is None):
            raise ValueError("LearnedWhitening.fit needs exactly one of `pairs` (M×2 matching row indices) or `labels=`")
        if pairs is not None:
            pairs = np.asarray(pairs.detach().cpu() if is_torch(pairs) else pairs)
            if pairs.ndim != 2 or pairs.shape[1] != 2 or not np.issubdtype(pairs.dtype, np.integer):
                raise ValueError(f"pairs must be an M×2 integer array of row indices, got shape {pairs.shape}, dtype {pairs.dtype}")
            if len(pairs) and (pairs.min() < 0 or pairs.max() >= n):
                raise ValueError(f"pairs index rows outside 0..{n - 1}")
            diff = X[pairs[:, 0]] - X[pairs[:, 1]]
            n_pairs = len(pairs)
            scatter = diff.T @ diff
        else:
            labels = as_labels(labels, n)
            _, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
            class_means = np.zeros((len(counts), d_in))
            np.add.at(class_means, inv, X)
            class_means /= counts[:, None]
            within = X - class_means[inv]
            n_pairs = int((counts * (counts - 1) // 2).sum())
            scatter = (within * counts[inv, None]).T @ within
        if n_pairs == 0:
            raise ValueError("LearnedWhitening: no matching pairs (every label is a singleton, or pairs is empty)")
        c_s = scatter / n_pairs
        if self.shrinkage:
            c_s = (1 - self.shrinkage) * c_s + self.shrinkage * np.trace(c_s) / d_in * np.eye(d_in)
        vals_s, vecs_s = _eigh_desc(c_s)
        rank_s = _rank(vals_s)
        if rank_s == 0:
            raise ValueError("LearnedWhitening: matching pairs are identical (zero intra-class scatter); nothing to whiten")
        whiten = vecs_s[:, :rank_s] / np.sqrt(vals_s[:rank_s])
        mean = X.mean(axis=0)
        vals_d, vecs_d = _eigh_desc(_covariance((X - mean) @ whiten))
        rank_d = _rank(vals_d)
        d = _n_components(self.dim, rank_d, "LearnedWhitening",
                          f"{rank_s} directions with intra-class variance, {rank_d} of them with spread across the {n} rows")
        self.n_pairs_, self.rank_ = n_pairs, rank_d
        self.explained_variance_ = vals_d[:d]
        return self._store(mean, whiten @ vecs_d[:, :d])


WHITENINGS = {
    "l2": L2Normalize,
    "powerlaw": PowerLaw,
    "pca": PCA,
    "pcaw": PCAWhitening,
    "lw": LearnedWhitening,
}


def whiten(name: str, X_learn, X_test, dim: int | None = None, **kw):
    """Fit ``WHITENINGS[name]`` on ``X_learn`` (learning split only) and return ``transform(X_test)``.

    ``pairs`` / ``labels`` go to ``fit`` (learned whitening); other keywords to the constructor.
    """
    try:
        cls = WHITENINGS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown whitening {name!r}; choose one of {sorted(WHITENINGS)}") from None
    fit_kw = {k: kw.pop(k) for k in ("pairs", "labels") if k in kw}
    if "dim" in inspect.signature(cls.__init__).parameters:
        kw["dim"] = dim
    elif dim is not None:
        raise ValueError(f"{name!r} does not reduce dimension; pass dim=None")
    return cls(**kw).fit(X_learn, **fit_kw).transform(X_test)


__all__ = [
    "NotFittedError", "L2Normalize", "PowerLaw", "PCA", "PCAWhitening", "LearnedWhitening",
    "pairs_from_labels", "WHITENINGS", "whiten", "RANK_RTOL",
]
