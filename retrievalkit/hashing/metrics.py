"""Code-quality diagnostics: bit balance, bit correlation, bit entropy.

Survey §2.3.2.4 b "Improving hash function quality": good codes fill the Hamming space, which
asks for **bit balance** (each bit is +1 half of the time, ``b·1 = 0`` summed over the data) and
**bit uncorrelation** (``(1/N) Σ b bᵀ = I``). Taught in notebooks/07_hashing.

All functions take ``N×K`` codes, signed (``±1``) or bits (``0/1``); packed codes must be unpacked
first (:func:`retrievalkit.hashing.codes.unpack_codes`).
"""
from __future__ import annotations

import numpy as np

from .codes import to_signs


def _signs64(codes) -> np.ndarray:
    return to_signs(codes).astype(np.float64)


def fraction_of_ones(codes) -> np.ndarray:
    """Per-bit fraction of ``+1`` (``1``) values, shape ``(K,)``: 0.5 is balanced."""
    return (_signs64(codes) > 0).mean(axis=0)


def bit_balance(codes) -> np.ndarray:
    """Per-bit imbalance ``|mean of the ±1 bit|`` in ``[0, 1]``: 0 is perfectly balanced, 1 a constant bit.

    Equals ``|2·p − 1|`` with ``p`` the fraction of ones; the survey's ``b·1 = 0`` asks for all zeros.
    """
    return np.abs(_signs64(codes).mean(axis=0))


def bit_correlation(codes, *, centered: bool = True) -> np.ndarray:
    """``K×K`` bit correlation matrix.

    ``centered=True``: Pearson correlation between bits. A constant bit has no defined
    correlation; its off-diagonal entries are reported as 0 (:func:`bit_balance` flags it).
    ``centered=False``: the survey's second-moment form ``(1/N) Bᵀ B`` of the ±1 codes, which is
    the identity exactly when bits are pairwise orthogonal over the data. For balanced bits the
    two coincide.
    """
    B = _signs64(codes)
    if not centered:
        return B.T @ B / len(B)
    Bc = B - B.mean(axis=0)
    std = np.sqrt((Bc**2).mean(axis=0))
    constant = std == 0
    Bn = Bc / np.where(constant, 1.0, std)
    C = Bn.T @ Bn / len(B)
    C[constant, :] = 0.0
    C[:, constant] = 0.0
    np.fill_diagonal(C, 1.0)
    return C


def mean_abs_correlation(codes, *, centered: bool = True) -> float:
    """Mean ``|C_ij|`` over the off-diagonal entries of :func:`bit_correlation` (0 = uncorrelated bits)."""
    C = bit_correlation(codes, centered=centered)
    k = len(C)
    if k < 2:
        return 0.0
    return float(np.abs(C[~np.eye(k, dtype=bool)]).mean())


def bit_entropy(codes) -> np.ndarray:
    """Per-bit binary entropy in bits, shape ``(K,)``: 1 for a balanced bit, 0 for a constant one."""
    p = fraction_of_ones(codes)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return np.nan_to_num(h, nan=0.0)


def code_report(codes) -> dict:
    """One tidy row of diagnostics for a set of codes (for DataFrames and notebook tables)."""
    balance = bit_balance(codes)
    signs = to_signs(codes)
    return {
        "n_codes": int(signs.shape[0]),
        "n_bits": int(signs.shape[1]),
        "mean_balance": float(balance.mean()),
        "max_balance": float(balance.max()),
        "mean_abs_corr": mean_abs_correlation(signs),
        "mean_entropy": float(bit_entropy(signs).mean()),
        "unique_codes": int(len(np.unique(signs, axis=0))),
    }


__all__ = [
    "fraction_of_ones", "bit_balance", "bit_correlation", "mean_abs_correlation", "bit_entropy", "code_report",
]
