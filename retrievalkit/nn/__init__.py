"""Pooling layers for deep image retrieval. Survey §2.3.1.1 and §2.3.2.1; taught in notebooks/03_pooling.

``from retrievalkit.nn import functional as F`` gives the pure functions (``F.gem(x, p=3)``);
the modules and the ``POOLINGS`` registry are importable from here directly.
"""
from . import functional
from .pooling import CAMPooling, CroW, GeM, L2N, MAC, POOLINGS, PowerLaw, RMAC, SPoC, pool

__all__ = ["functional", "L2N", "PowerLaw", "MAC", "SPoC", "GeM", "RMAC", "CroW", "CAMPooling", "POOLINGS", "pool"]
from .attention import (AttentionHead, AttentionPooling, attention_descriptors, attention_maps, attention_pool,
                        cam_attention, channel_attention, spatial_attention)

__all__ += ["channel_attention", "spatial_attention", "cam_attention", "attention_pool", "AttentionHead",
            "AttentionPooling", "attention_descriptors", "attention_maps"]
