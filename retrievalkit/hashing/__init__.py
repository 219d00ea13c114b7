"""Hashing: binary codes (LSH, PCA-sign, ITQ, deep hash heads), code diagnostics, Hamming search.

Survey §2.3.2.4 "Deep hash embedding" and §2.1.2 challenge 3 (efficiency); taught in
notebooks/07_hashing and notebooks/08_indexing_and_efficiency.

    from retrievalkit import hashing
    itq = hashing.ITQ(64).fit(X_learn)             # learning split only
    db, q = itq.encode(X_db), itq.encode(X_query)  # packed uint8, 8 bytes per image
    S, I = hashing.hamming_search(q, db, k=10)     # scores K − 2·Hamming, best first, ties: lower id first

Modules: :mod:`.codes` (estimators, packing), :mod:`.deep` (hash head, losses, regularisers,
trainer), :mod:`.autoencoder` (unsupervised codes from an autoencoder's bottleneck, survey
§2.4.2.2) — these two import torch and are loaded on first use —, :mod:`.metrics` (bit balance /
correlation / entropy), :mod:`.search` (faiss binary indexes, NumPy popcount reference).
"""
from __future__ import annotations

import importlib

from .codes import HASHERS, ITQ, LSH, PCASign, pack_codes, quantization_loss, to_bits, to_signs, unpack_codes
from .metrics import bit_balance, bit_correlation, bit_entropy, code_report, fraction_of_ones, mean_abs_correlation
from .search import binary_index, hamming_distances, hamming_search, hamming_search_numpy

_LAZY = {  # torch modules, loaded on first use
    "deep": {"DeepHash", "HashHead", "LOSSES", "hash_centers"},
    "autoencoder": {"AutoencoderHash", "autoencoder_loss"},
}


def __getattr__(name: str):
    for module, names in _LAZY.items():
        if name == module or name in names:
            mod = importlib.import_module(f"{__name__}.{module}")
            return mod if name == module else getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "LSH", "PCASign", "ITQ", "HASHERS", "pack_codes", "unpack_codes", "to_bits", "to_signs", "quantization_loss",
    "fraction_of_ones", "bit_balance", "bit_correlation", "mean_abs_correlation", "bit_entropy", "code_report",
    "binary_index", "hamming_distances", "hamming_search", "hamming_search_numpy",
    "DeepHash", "HashHead", "LOSSES", "hash_centers", "AutoencoderHash", "autoencoder_loss",
]
