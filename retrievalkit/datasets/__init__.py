"""Dataset loaders, all returning :class:`RetrievalDataset`. Survey §2.5.1; notebooks/00_setup_and_data.

``rk.datasets.load("coil100")`` — the name picks a loader from :data:`LOADERS`.
"""
from __future__ import annotations

import importlib

from .base import PROTOCOLS, DatasetNotFoundError, QueryGroundTruth, RetrievalDataset

# name -> "module:function"; modules import lazily so `import retrievalkit` stays cheap.
LOADERS = {
    "coil100": "coil100:load",
    "roxford5k": "revisited:load_roxford5k",
    "rparis6k": "revisited:load_rparis6k",
    "oxford5k": "oxford:load_oxford5k",
    "paris6k": "oxford:load_paris6k",
    "holidays": "holidays:load",
    "ukbench": "ukbench:load",
    "fashion_mnist": "fashion_mnist:load",
    "folder": "folder:load",
    # real instance-retrieval lab packs (shared README "Lab packs")
    "smvs_dvd": "smvs:load",
    "rparis6k_mini": "revisited:load_rparis6k_mini",
    "sop_kettles_fans": "sop:load",
}


def names() -> list[str]:
    return list(LOADERS)


def load(name: str, **kwargs) -> RetrievalDataset:
    """Load a dataset by name; unknown names raise ``ValueError`` listing the known ones."""
    key = name.lower().replace("-", "_")
    if key not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(LOADERS)}")
    module, func = LOADERS[key].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), func)(**kwargs)


__all__ = ["PROTOCOLS", "DatasetNotFoundError", "QueryGroundTruth", "RetrievalDataset", "load", "names", "LOADERS"]
