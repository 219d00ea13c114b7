"""Feature fusion: concatenate descriptors of several layers or several networks.

Survey §2.3.1.3 (a: layer-level fusion — e.g. conv4 + conv5 + fc6 of AlexNet/VGG, as Chatfield et
al. found best; b: model-level fusion — e.g. VGG + AlexNet descriptors); taught in
notebooks/02_feature_layers. Pure functions on cached rows: no network runs here.

Each block is L2-normalised before concatenation, so no layer dominates because its activations
happen to be larger or its dimension higher, then multiplied by its weight. The inner product of
two fused vectors is then ``Σ_i w_i² · cos_i``: "early" fusion by concatenation equals a
weighted "late" fusion of the per-block cosine similarities (Survey §2.3.1.3 b). The result
is L2-normalised again (descriptors are unit rows, DESIGN §3), which rescales all scores alike.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..rows import as_rows, l2n


def concat_normalized(blocks: Sequence[np.ndarray], weights: Sequence[float] | None = None,
                      normalize: bool = True) -> np.ndarray:
    """``[w_1·l2n(B_1) | w_2·l2n(B_2) | …]``, L2-normalised again unless ``normalize=False``.

    Before the final normalisation the block ``i`` of every (non-zero) row has norm ``w_i``.
    """
    if not blocks:
        raise ValueError("nothing to fuse: pass at least one descriptor block")
    weights = [1.0] * len(blocks) if weights is None else [float(w) for w in weights]
    if len(weights) != len(blocks):
        raise ValueError(f"{len(weights)} weights for {len(blocks)} blocks")
    counts = {len(b) for b in blocks}
    if len(counts) != 1:
        raise ValueError(f"blocks describe different numbers of images: {sorted(counts)}")
    fused = np.concatenate([w * l2n(as_rows(b, "descriptor block")) for w, b in zip(weights, blocks)], axis=1)
    return l2n(fused) if normalize else fused


def fuse_layers(features, layers: Sequence, weights: Sequence[float] | None = None,
                normalize: bool = True) -> np.ndarray:
    """Layer-level fusion of one extraction (Survey §2.3.1.3 a).

    ``layers``: layer names (their single stored pooling, or the vector for fc layers) or
    ``(layer, pooling)`` pairs, e.g. ``[("conv4", "mac"), ("conv5", "mac"), "fc6"]`` of AlexNet or
    ``[("layer3", "gem"), ("layer4", "gem")]`` of ResNet-50.
    """
    blocks = [features.get(*((item,) if isinstance(item, str) else tuple(item)), normalize=False) for item in layers]
    return concat_normalized(blocks, weights, normalize)


def fuse_models(parts: Sequence, weights: Sequence[float] | None = None, normalize: bool = True) -> np.ndarray:
    """Model-level fusion (Survey §2.3.1.3 b): concatenate descriptors of several networks.

    ``parts``: :class:`Features` (their default layer and only pooling) or ``(features, layer,
    pooling)`` tuples, one per network, extracted from the same images in the same order.
    """
    blocks, image_lists = [], []
    for part in parts:
        features, *which = part if isinstance(part, (tuple, list)) else (part,)
        blocks.append(features.get(*which, normalize=False))
        image_lists.append(features.paths)
    if any(paths != image_lists[0] for paths in image_lists[1:]):
        raise ValueError("model-level fusion needs the same images in the same order from every network")
    return concat_normalized(blocks, weights, normalize)


__all__ = ["concat_normalized", "fuse_layers", "fuse_models"]
