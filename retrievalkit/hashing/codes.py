"""Binary codes from real-valued descriptors: LSH, PCA-sign, ITQ, and bit packing.

Survey §2.3.2.4 "Deep hash embedding" (Eq. 2.12: ``b = h(f(x)) ∈ {+1, -1}^K``) and §2.1.2
challenge 3 (accuracy vs efficiency); taught in notebooks/07_hashing.

Estimators follow scikit-learn: ``fit(X_learn)`` learns, ``transform(X)`` gives codes,
``encode(X)`` gives packed bytes ready for Hamming search (:mod:`retrievalkit.hashing.search`).

**Protocol.** ``fit`` on the LEARNING split only (COIL-100 objects 1–50 by default); only
``transform``/``encode`` the queries and the database. PCA directions and ITQ's rotation are
statistics of the data they see: fitting them on test rows leaks the test distribution.

Code conventions (the whole ``hashing`` package):

* ``transform(X)`` returns **signed codes**: an ``N×K`` int8 array of ``+1/-1`` (the survey's
  ``b``); ``transform(X, as_bits=True)`` returns ``{0, 1}`` uint8 with ``1 ↔ +1``. A projection of
  exactly 0 maps to ``+1``.
* **Bit order of packed codes**: :func:`pack_codes` uses ``np.packbits(..., bitorder="big")``:
  code bit ``j`` is stored in byte ``j // 8`` at bit position ``7 - j % 8`` (the first bit of the
  code is the most significant bit of the first byte). When ``K`` is not a multiple of 8 the last
  byte is padded with zeros, which are the same in every code and add nothing to a Hamming
  distance. Packed codes are ``N × ceil(K/8)`` uint8 — 8 bytes for 64 bits, against 2,048 bytes
  for a 512-d float32 descriptor.
"""
from __future__ import annotations

import numpy as np

from ..rows import Estimator, as_rows, is_torch
from ..whitening import PCA

TRANSFORM_CHUNK = 65536  # rows projected at a time, so encoding 1M rows stays in bounded memory
DEFAULT_ITQ_ITERATIONS = 50

_PROTOCOL = (
    "Fit on the LEARNING split only (Survey §2.3.2.4; taught in notebooks/07_hashing); "
    "transform/encode queries and database."
)


# --------------------------------------------------------------------------- packing
def _as_code_array(codes) -> np.ndarray:
    codes = np.asarray(codes.detach().cpu() if is_torch(codes) else codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D (N codes × K bits), got shape {codes.shape}")
    return codes


def to_bits(codes) -> np.ndarray:
    """``{0, 1}`` uint8 bits from signed ``±1`` codes (or from bits, unchanged); ``1 ↔ +1``."""
    codes = _as_code_array(codes)
    signed = (codes == 1) | (codes == -1)
    if signed.all():
        return (codes > 0).astype(np.uint8)
    if ((codes == 0) | (codes == 1)).all():
        return codes.astype(np.uint8)
    raise ValueError("codes must hold only ±1 (signed codes) or only 0/1 (bits)")


def to_signs(bits) -> np.ndarray:
    """Signed ``±1`` int8 codes from ``{0, 1}`` bits (or from signed codes, unchanged)."""
    return (to_bits(bits).astype(np.int8) * 2 - 1).astype(np.int8)


def pack_codes(codes) -> np.ndarray:
    """Pack ``N×K`` codes (``±1`` or ``0/1``) into ``N×ceil(K/8)`` uint8, most significant bit first.

    The layout is the one faiss's binary indexes expect (``IndexBinaryFlat(8 * n_bytes)``).
    """
    return np.packbits(to_bits(codes), axis=1, bitorder="big")


def unpack_codes(packed, n_bits: int, *, as_bits: bool = False) -> np.ndarray:
    """Inverse of :func:`pack_codes`: ``N×n_bits`` signed codes (or bits with ``as_bits=True``)."""
    packed = np.asarray(packed)
    if packed.dtype != np.uint8 or packed.ndim != 2:
        raise ValueError(f"packed codes must be 2-D uint8, got {packed.dtype} with shape {packed.shape}")
    if not 0 < n_bits <= 8 * packed.shape[1]:
        raise ValueError(f"n_bits={n_bits} does not fit in {packed.shape[1]} bytes per code")
    bits = np.unpackbits(packed, axis=1, count=n_bits, bitorder="big")
    return bits if as_bits else to_signs(bits)


def _signs(P: np.ndarray) -> np.ndarray:
    return np.where(P >= 0, 1, -1).astype(np.int8)


def quantization_loss(V: np.ndarray, B: np.ndarray | None = None) -> float:
    """``‖B − V‖²_F`` with ``B = sign(V)`` by default: the distance from projections to their codes."""
    V = np.asarray(V, dtype=np.float64)
    B = _signs(V) if B is None else np.asarray(B, dtype=np.float64)
    return float(((B - V) ** 2).sum())


# --------------------------------------------------------------------------- estimators
class _BinaryEncoder(Estimator):
    """Shared plumbing: ``transform`` = sign of a linear projection, ``encode`` = packed transform."""

    n_bits: int

    def _project(self, X: np.ndarray) -> np.ndarray:  # float64 rows → float64 projections (N×K)
        raise NotImplementedError

    def projections(self, X) -> np.ndarray:
        """The real-valued projections whose signs are the codes (``N×n_bits`` float64)."""
        X = self._check(X)
        out = np.empty((len(X), self.n_bits), dtype=np.float64)
        for start in range(0, len(X), TRANSFORM_CHUNK):
            out[start : start + TRANSFORM_CHUNK] = self._project(as_rows(X[start : start + TRANSFORM_CHUNK], dtype=np.float64, finite=True))
        return out

    def transform(self, X, *, as_bits: bool = False) -> np.ndarray:
        """``N×n_bits`` codes: int8 ``±1`` (default) or uint8 ``0/1`` with ``as_bits=True``."""
        codes = _signs(self.projections(X))
        return to_bits(codes) if as_bits else codes

    def encode(self, X) -> np.ndarray:
        """Packed codes (``N×ceil(n_bits/8)`` uint8) for :func:`retrievalkit.hashing.search.hamming_search`."""
        return pack_codes(self.transform(X))

    def fit_transform(self, X, y=None, **kw) -> np.ndarray:
        return self.fit(X, y).transform(X, **kw)

    def _fit_pca(self, X: np.ndarray) -> np.ndarray:
        """PCA to ``n_bits`` (reusing :class:`retrievalkit.whitening.PCA`); returns the learning projections."""
        try:
            self.pca_ = PCA(dim=self.n_bits, normalize=False).fit(X)
        except ValueError as err:
            raise ValueError(f"{type(self).__name__}: n_bits={self.n_bits} is more bits than PCA can give here: {err}") from err
        self.n_features_in_ = X.shape[1]
        return self.pca_.transform(X)


def _check_bits(n_bits) -> int:
    if int(n_bits) != n_bits or n_bits < 1:
        raise ValueError(f"n_bits must be a positive integer, got {n_bits!r}")
    return int(n_bits)


class LSH(_BinaryEncoder):
    __doc__ = f"""Random-hyperplane LSH (Charikar 2002): bit ``k`` is the side of hyperplane ``w_k ~ N(0, I)``.

    ``center=True`` (default) puts the hyperplanes through the **learning mean**
    (``b = sign((x − μ) W)``): CNN descriptors after ReLU and L2 live in one orthant, so
    hyperplanes through the origin would cut few of them and give nearly constant bits. With
    ``center=False`` the hyperplanes go through the origin (SimHash), whose collision probability
    ``1 − θ(x, y)/π`` holds exactly for the angle between the raw vectors. Nothing else is
    learned: the hyperplanes are drawn from ``seed``. ``n_bits`` may exceed the dimension (bits
    then become correlated). {_PROTOCOL}"""

    def __init__(self, n_bits: int = 64, *, center: bool = True, seed: int = 0):
        self.n_bits, self.center, self.seed = _check_bits(n_bits), center, seed

    def fit(self, X, y=None) -> "LSH":
        X = as_rows(X, dtype=np.float64, finite=True)
        self.n_features_in_ = X.shape[1]
        self.mean_ = X.mean(axis=0) if self.center else np.zeros(X.shape[1])
        self.hyperplanes_ = np.random.default_rng(self.seed).standard_normal((X.shape[1], self.n_bits))
        return self

    def _project(self, X):
        return (X - self.mean_) @ self.hyperplanes_


class PCASign(_BinaryEncoder):
    __doc__ = f"""PCA-sign (PCAH): centre, project on the top ``n_bits`` principal directions, take signs.

    The baseline ITQ improves on: the top directions carry most of the variance, so a few bits
    get most of the information and the rest are noisy. ``quantization_loss_`` is ``‖sign(V) − V‖²_F``
    over the learning projections ``V``, comparable with :attr:`ITQ.loss_history_`.
    ``n_bits`` above the rank of the centred learning rows raises ``ValueError``. {_PROTOCOL}"""

    def __init__(self, n_bits: int = 64):
        self.n_bits = _check_bits(n_bits)

    def fit(self, X, y=None) -> "PCASign":
        V = self._fit_pca(as_rows(X, dtype=np.float64, finite=True))
        self.quantization_loss_ = quantization_loss(V)
        return self

    def _project(self, X):
        return self.pca_.transform(X)


def random_rotation(n: int, seed: int = 0) -> np.ndarray:
    """A Haar-random ``n×n`` orthogonal matrix (QR of a Gaussian matrix with the sign fix)."""
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)


class ITQ(_BinaryEncoder):
    __doc__ = f"""Iterative quantisation (Gong & Lazebnik, CVPR 2011): PCA to ``n_bits``, then a rotation ``R``
    that brings the projections close to the hypercube's vertices.

    With ``V`` the centred PCA projections of the learning rows (``N×K``) and ``R`` a random
    orthogonal start (from ``seed``), each of ``n_iter`` iterations does

    1. ``B = sign(V R)`` (best codes for the current rotation);
    2. the orthogonal Procrustes step: ``SVD(Vᵀ B) = U Σ Wᵀ`` and ``R = U Wᵀ`` (best rotation
       for the current codes).

    Neither step can increase the quantisation loss ``‖B − V R‖²_F``; ``loss_history_`` holds it
    for the start and after every iteration (``n_iter + 1`` values, non-increasing), and
    ``rotation_`` the final ``R`` (``RᵀR = I``). The codes are ``sign((x − μ) P R)``.
    ``n_bits`` above the rank of the centred learning rows raises ``ValueError``. {_PROTOCOL}"""

    def __init__(self, n_bits: int = 64, n_iter: int = DEFAULT_ITQ_ITERATIONS, *, seed: int = 0):
        if n_iter < 0:
            raise ValueError(f"n_iter must be >= 0, got {n_iter}")
        self.n_bits, self.n_iter, self.seed = _check_bits(n_bits), int(n_iter), seed

    def fit(self, X, y=None) -> "ITQ":
        V = self._fit_pca(as_rows(X, dtype=np.float64, finite=True))
        R = random_rotation(self.n_bits, self.seed)
        VR = V @ R
        B = np.where(VR >= 0, 1.0, -1.0)  # float64, so V.T @ B stays a BLAS product
        history = [float(((B - VR) ** 2).sum())]
        for _ in range(self.n_iter):
            U, _, Wt = np.linalg.svd(V.T @ B)
            R = U @ Wt
            VR = V @ R
            history.append(float(((B - VR) ** 2).sum()))
            B = np.where(VR >= 0, 1.0, -1.0)
        self.rotation_ = R
        self.loss_history_ = np.asarray(history)
        self.quantization_loss_ = quantization_loss(V @ R)
        return self

    def _project(self, X):
        return self.pca_.transform(X) @ self.rotation_


HASHERS = {"lsh": LSH, "pca_sign": PCASign, "itq": ITQ}

__all__ = [
    "LSH", "PCASign", "ITQ", "HASHERS", "pack_codes", "unpack_codes", "to_bits", "to_signs",
    "quantization_loss", "random_rotation", "TRANSFORM_CHUNK",
]
