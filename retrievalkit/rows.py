"""Descriptor rows: the checks, casts and normalisations every module shares.

Descriptors are rows (``N×D``, DESIGN §3). One implementation of each small idea lives here:
the N×D check (:func:`as_rows`), label checks, "give this array back in the caller's kind"
(:func:`like`), row L2 normalisation (:func:`l2n`), the signed power law (:func:`powerlaw`,
Survey §2.3.2.2) and the scikit-learn-style estimator plumbing (:class:`Estimator`,
:class:`NotFittedError`). Functions accept NumPy arrays, torch tensors or nested lists;
:func:`l2n` and :func:`powerlaw` give back what they were given (torch stays on its device).
Taught in notebooks/03_pooling and notebooks/04_whitening_and_dimension.
"""
from __future__ import annotations

import inspect

import numpy as np

DEFAULT_EPS = 1e-6


class NotFittedError(ValueError, AttributeError):
    """``transform`` (or ``encode``, ``search``…) was called before ``fit`` (same bases as scikit-learn's)."""


def is_torch(x) -> bool:
    """True for a torch tensor, checked without importing torch."""
    return type(x).__module__.split(".")[0] == "torch"


def as_rows(x, name: str = "X", *, dtype=np.float32, allow_empty: bool = True, finite: bool = False) -> np.ndarray:
    """``x`` (NumPy, torch or nested lists) as 2-D C-contiguous NumPy rows of ``dtype``.

    ``dtype=None`` keeps float32/float64 and casts anything else to float32. Raises ``ValueError``
    naming ``name`` when ``x`` is not ``N×D``, is empty and ``allow_empty=False``, or holds NaN/inf
    and ``finite=True``.
    """
    if is_torch(x):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if dtype is None:
        dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float32
    x = np.ascontiguousarray(x, dtype=dtype)
    if x.ndim != 2 or (not allow_empty and len(x) == 0):
        raise ValueError(f"{name} must be {'' if allow_empty else 'non-empty '}2-D descriptor rows (N×D), got shape {x.shape}")
    if finite and not np.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values; check the features before fitting")
    return x


def as_labels(y, n: int, name: str = "labels") -> np.ndarray:
    """``y`` (NumPy, torch or a list) as a flat NumPy array with one label per row of an ``n``-row input."""
    y = np.asarray(y.detach().cpu().numpy() if is_torch(y) else y).ravel()
    if len(y) != n:
        raise ValueError(f"{name} has {len(y)} entries for {n} rows")
    return y


def like(a: np.ndarray, x):
    """The NumPy array ``a`` in the kind, dtype and device of ``x`` (e.g. fitted statistics applied to ``x``)."""
    if is_torch(x):
        import torch

        return torch.as_tensor(a, dtype=x.dtype, device=x.device)
    return a.astype(x.dtype, copy=False)


def l2n(x, eps: float = DEFAULT_EPS, axis: int = -1):
    """Row L2 normalisation ``x / (‖x‖ + eps)`` along ``axis`` (Survey §2.3.2); all-zero rows stay zero.

    NumPy in → NumPy out, torch in → torch out (dtype, device and autograd kept).
    """
    if is_torch(x):
        import torch

        return x / (torch.linalg.vector_norm(x, dim=axis, keepdim=True) + eps)
    return x / (np.linalg.norm(x, axis=axis, keepdims=True) + eps)


def powerlaw(x, alpha: float = 0.5):
    """Signed power normalisation ``sign(x)·|x|^alpha`` (alpha = 0.5: the signed square root).

    Damps bursty, dominant components (Perronnin et al. 2010; Survey §2.3.2.2). Values are exact
    (no clamp). For torch the power is taken of ``|x|`` with zeros replaced by 1, so the gradient
    at 0 is finite (zero) instead of ``inf·0 = nan``; ``sign(0) = 0`` still maps 0 to 0.
    """
    if is_torch(x):
        import torch

        mag = torch.where(x == 0, torch.ones_like(x), x.abs())
        return x.sign() * mag.pow(alpha)
    return np.sign(x) * np.abs(x) ** alpha


def _own_kind_rows(x, name: str = "X"):
    """``x`` as 2-D float rows of its own kind (torch stays torch, float64 stays float64)."""
    if is_torch(x):
        x = x.detach()
        x = x if x.is_floating_point() else x.float()
    else:
        x = np.asarray(x)
        x = x if x.dtype in (np.float32, np.float64) else x.astype(np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D descriptor rows (N×D), got shape {tuple(x.shape)}")
    return x


class Estimator:
    """scikit-learn-style plumbing shared by whitening, codebooks, encoders and hashers: ``repr`` from
    the constructor arguments, ``fit_transform``, and the fitted/width checks before ``transform``."""

    def _params(self) -> dict:
        names = [p for p in inspect.signature(type(self).__init__).parameters if p not in ("self", "args", "kwargs")]
        return {n: getattr(self, n) for n in names}

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{n}={v!r}' for n, v in self._params().items())})"

    def fit_transform(self, X, *args, **kw):
        return self.fit(X, *args, **kw).transform(X)

    def _check_fitted(self, attr: str = "n_features_in_", hint: str = "call fit(X_learn) on learning-split descriptors first"):
        if getattr(self, attr, None) is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted: {hint}")

    def _check(self, X):
        """``X`` as rows of its own kind (torch stays torch), after checking that ``fit`` ran and the width matches."""
        X = _own_kind_rows(X)
        self._check_fitted()
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"{type(self).__name__} was fitted on {self.n_features_in_}-D rows, got {X.shape[1]}-D")
        return X


__all__ = ["DEFAULT_EPS", "NotFittedError", "is_torch", "as_rows", "as_labels", "like", "l2n", "powerlaw", "Estimator"]
