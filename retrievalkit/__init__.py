"""retrievalkit: learn, teach and reproduce deep image retrieval.

``import retrievalkit as rk`` is cheap: submodules load on first use (``rk.evaluate``,
``rk.datasets``, …), so a notebook pays only for what it touches.
"""
from __future__ import annotations

import importlib
import logging

# faiss's loader logs each CPU build it tries at INFO (8 lines wherever logging is at INFO, as in the CLI);
# quieten that one logger, not faiss's warnings.
logging.getLogger("faiss.loader").setLevel(logging.WARNING)

__version__ = "0.1.0"

_SUBMODULES = {
    "artifacts", "backbones", "cache_share", "cli", "config", "datasets", "distributed", "embedding", "evaluate",
    "experiments", "features", "figures", "finetune", "grading", "hashing", "rerank", "rows", "train",
    "index", "nn", "survey", "whitening", "widgets", "baselines",
}
_MOVED = {"projection": "train.heads"}  # old name → new module, for code written before the move


def __getattr__(name: str):
    if name in _SUBMODULES or name in _MOVED:
        return importlib.import_module(f"{__name__}.{_MOVED.get(name, name)}")
    raise AttributeError(f"module 'retrievalkit' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
