"""Deep feature extraction, fusion and the feature cache. Survey §2.3.1; taught in notebooks/02_feature_layers.

``rk.features.extract(dataset, "efficientnet_lite0")`` runs the network once per image (per
scale, per patch), pools every requested layer right away and caches the raw pooled rows;
``features.get("head", "gem")`` gives L2-normalised ``N×D`` descriptors.

Modules: :mod:`.extraction` (single/multi-scale extraction, :class:`Features`), :mod:`.loading`
(images → network input), :mod:`.multipass` (grid / pyramid / dense patches and region proposals, Figure 2.7),
:mod:`.fusion` (layer- and model-level), :mod:`.cache` (on-disk store).
"""
from .cache import cache_key, list_cached
from .extraction import (DEFAULT_POOLINGS, ExtractionPlan, Features, default_batch_size, default_input, extract,
                      plan_extraction, weights_digest)
from .fusion import concat_normalized, fuse_layers, fuse_models
from .loading import ImageDataset, ImageSource, as_source, to_model_input
from .multipass import (PatchScheme, ProposalFeatures, ProposalScheme, aggregate_patches, box_iou, dense_boxes,
                        extract_proposals, grid_boxes, make_scheme, nms, proposal_boxes, pyramid_boxes)

__all__ = [
    "extract", "plan_extraction", "ExtractionPlan", "Features", "DEFAULT_POOLINGS", "default_input",
    "default_batch_size", "weights_digest", "cache_key", "list_cached",
    "concat_normalized", "fuse_layers", "fuse_models",
    "ImageDataset", "ImageSource", "as_source", "to_model_input",
    "PatchScheme", "make_scheme", "grid_boxes", "pyramid_boxes", "dense_boxes", "aggregate_patches",
    "ProposalScheme", "ProposalFeatures", "extract_proposals", "proposal_boxes", "box_iou", "nms",
]
