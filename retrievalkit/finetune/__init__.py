"""Fine-tuning for retrieval (Survey §2.4): losses, miners, a frozen-trunk trainer, unsupervised mining.

Taught in notebooks/09_supervised_finetuning and notebooks/10_unsupervised_finetuning. Submodules
load on first use (``rk.finetune.losses``); importing this package does no work.
"""
from __future__ import annotations

import importlib

__all__ = ["losses", "miners", "trainer", "unsupervised"]


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
