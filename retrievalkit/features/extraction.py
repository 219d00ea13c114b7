"""Deep feature extraction: one forward pass per image (and scale, and patch), pooled at once, cached once.

Survey §2.3.1.1 (single and multiple feed-forward passes, Figures 2.6 and 2.7) and §2.3.1.2
(which layer: fully-connected vs convolutional); taught in notebooks/02_feature_layers.

:func:`extract` runs a backbone over a dataset and, for every requested layer, applies every
requested pooling to the batch of feature maps as soon as it comes out of the network, so only
``N×D`` rows are ever kept (7,200 conv maps never sit in memory). Rows are stored **raw** — not
L2-normalised — in the on-disk cache of :mod:`retrievalkit.features.cache`;
:meth:`Features.get` normalises on read, so power-law, PCA and whitening variants are all
derived from the same extraction without running the network again.
"""
from __future__ import annotations

import hashlib
import logging
import platform
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .. import config as rk_config
from ..nn.pooling import POOLINGS
from ..rows import l2n
from . import cache as store
from .loading import ImageDataset, ImageSource, as_source, collate_views, to_model_input
from .multipass import PatchScheme, aggregate_patches, make_scheme

log = logging.getLogger(__name__)

DEFAULT_POOLINGS = ("mac", "spoc", "gem", "rmac", "crow")
# Datasets of small images (COIL-100: 128 px, Fashion-MNIST: 28 px) are upsampled to a fixed square
# at the backbone's training resolution; photo collections keep their aspect ratio.
SMALL_IMAGE_DATASETS = ("coil100", "fashion_mnist")
LANDMARK_DATASETS = ("roxford5k", "rparis6k", "oxford5k", "paris6k", "holidays", "ukbench")
LANDMARK_MAX_SIDE = 1024  # cirtorch / revisitop's test resolution
OTHER_MAX_SIDE = 512
REFERENCE_BATCH = 32  # images per forward at 224 px; larger inputs get proportionally fewer
REFERENCE_SIDE = 224
SCALE_MERGE = "mean of L2-normalised per-scale vectors"
MAPS_DTYPE = np.float16
ROWS_DTYPE = np.float32


# --------------------------------------------------------------------------- defaults
def default_input(dataset: str | None, backbone) -> tuple[str, int]:
    """Default ``(resize, size)`` for a dataset and backbone.

    **COIL-100 (and Fashion-MNIST): ``("fixed", backbone.input_size)``**, i.e. 128 px → 224 px for
    ResNet/VGG/EfficientNet-Lite0 (240/260 for Lite1/Lite2). At its native 128 px a stride-32
    network ends in a 4×4 map: R-MAC's three scales of regions then collapse to sides 4, 2, 2
    and CroW/GeM average over only 16 cells. Upsampling to the training resolution gives the
    7×7 last map the ImageNet filters were trained to produce (8×8/9×9 for Lite1/2), with objects
    at roughly the scale the network saw in training, for ~3× the cost of 128 px. Pass
    ``size=256`` for an 8×8 map, or smaller sizes for speed.

    Landmark and holiday photos (Oxford, Paris, Holidays, UKBench): ``("max_side", 1024)``, the
    revisitop/cirtorch test resolution (use a GPU, or a smaller size on a laptop). Anything else:
    ``("max_side", 512)``.
    """
    base = (dataset or "").split("-")[0]
    if base in SMALL_IMAGE_DATASETS:
        return "fixed", int(backbone.input_size)
    return "max_side", LANDMARK_MAX_SIDE if base in LANDMARK_DATASETS else OTHER_MAX_SIDE


def default_batch_size(resize: str | None, size: int | None) -> int:
    """32 images per forward up to 256 px; proportionally fewer pixels-worth for larger inputs (1024 px → 2)."""
    if resize is None or size is None:
        return 1
    if size <= 256:
        return REFERENCE_BATCH
    return max(1, round(REFERENCE_BATCH * REFERENCE_SIDE ** 2 / size ** 2))


# --------------------------------------------------------------------------- poolings and weights
def _pooling_modules(pooling, backbone) -> dict[str, torch.nn.Module]:
    """``{label: module}`` from names or ``(name, {params})`` pairs; the label shows non-default params."""
    if pooling is None:
        return {}
    entries = [pooling] if isinstance(pooling, str) or _is_pair(pooling) else list(pooling)
    modules = {}
    for entry in entries:
        name, params = (entry, {}) if isinstance(entry, str) else (entry[0], dict(entry[1]))
        name = name.lower()
        if name not in POOLINGS:
            raise ValueError(f"unknown pooling {name!r}; choose from {sorted(POOLINGS)}")
        kwargs = dict(params)
        if name == "gem":
            kwargs.setdefault("learn_p", False)
        if name == "cam":
            fc = backbone.spec.classifier(backbone.model)
            if fc is None:
                raise ValueError(f"'cam' pooling needs a classifier reading the average of {backbone.default_layer}; "
                                 f"{backbone.name} has none (its fc6/fc7 come first). Use resnet/googlenet/efficientnet.")
            module = POOLINGS[name].from_linear(fc, **kwargs)
        else:
            module = POOLINGS[name](**kwargs)
        label = name if not params else f"{name}({', '.join(f'{k}={v}' for k, v in sorted(params.items()))})"
        modules[label] = module.to(backbone.device).eval()
    return modules


def _is_pair(value) -> bool:
    return isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[0], str) \
        and isinstance(value[1], dict)


def _describe_module(module: torch.nn.Module) -> str:
    return f"{type(module).__name__}({module.extra_repr()})"


_WEIGHT_DIGESTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def weights_digest(backbone) -> str:
    """SHA-256 of the backbone's parameters and buffers.

    The weights *tag* (``"imagenet:<file>"``) does not see a network fine-tuned in memory, or a
    random initialisation (``weights=None``), so the tensors themselves are hashed (~0.5 s/GB).
    The digest is remembered per backbone until any tensor is modified in place (its version
    counter moves) or replaced.
    """
    state = backbone.model.state_dict()
    signature = tuple((k, v.data_ptr(), getattr(v, "_version", None)) for k, v in state.items())
    remembered = _WEIGHT_DIGESTS.get(backbone)
    if remembered is not None and remembered[0] == signature:
        return remembered[1]
    h = hashlib.sha256()
    for name, tensor in state.items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    digest = h.hexdigest()
    _WEIGHT_DIGESTS[backbone] = (signature, digest)
    return digest


# --------------------------------------------------------------------------- the plan
@dataclass(eq=False)
class ExtractionPlan:
    """Everything :func:`extract` will do, resolved, plus the cache ``config`` and ``key`` it implies."""

    source: ImageSource
    backbone: object
    layers: tuple[str, ...]
    requested_layers: dict
    poolings: dict
    resize: str | None
    size: int | None
    scales: tuple[float, ...]
    multipass: PatchScheme | None
    keep_maps: tuple[str, ...]
    batch_size: int
    config: dict
    block_poolings: dict | None = None  # poolings of the layers other than the last conv map (None: ``poolings``)

    def poolings_for(self, layer: str) -> dict:
        """The poolings applied to one layer's map."""
        if self.block_poolings is None or layer == self.backbone.default_layer:
            return self.poolings
        return self.block_poolings

    @property
    def key(self) -> str:
        return store.cache_key(self.config)

    @property
    def folder_name(self) -> str:
        return store.folder_name(self.config)

    @property
    def map_scale(self) -> int:
        """Index of the scale whose maps are kept: 1.0 when present, else the first."""
        return self.scales.index(1.0) if 1.0 in self.scales else 0

    @property
    def images_per_batch(self) -> int:
        views = 1 if self.multipass is None else len(self.multipass.boxes(1000, 1000))
        return max(1, self.batch_size // views)


def plan_extraction(data, backbone, layers=None, pooling=DEFAULT_POOLINGS, *, images: str = "db",
                    bboxes: Sequence | None = None, size: int | None = None, resize: str | None = "default",
                    scales: Sequence[float] = (1.0,), multipass=None, keep_maps=False,
                    batch_size: int | None = None, name: str | None = None, block_pooling=None) -> ExtractionPlan:
    """Resolve the arguments of :func:`extract` (see there) without running anything."""
    source = as_source(data, images=images, bboxes=bboxes, name=name)
    if len(source) == 0:
        raise ValueError("no images to extract features from")
    requested = [layers] if isinstance(layers, str) else list(layers or [backbone.default_layer])
    resolved = {layer: backbone.resolve(layer) for layer in requested}
    canonical_layers = tuple(sorted(set(resolved.values()), key=backbone.layers.index))
    poolings = _pooling_modules(pooling, backbone)
    block_poolings = None if block_pooling is None else _pooling_modules(block_pooling, backbone)
    if resize == "default":
        default_resize, default_size = default_input(source.name, backbone)
        resize, size = default_resize, size or default_size
    scales = tuple(float(s) for s in scales)
    if not scales or min(scales) <= 0:
        raise ValueError(f"scales must be positive factors, got {scales}")
    scheme = make_scheme(multipass)
    if keep_maps is True:
        maps = canonical_layers
    else:
        maps = tuple(backbone.resolve(layer) for layer in ([keep_maps] if isinstance(keep_maps, str) else keep_maps or ()))
    if maps and (scheme is not None or resize != "fixed"):
        raise ValueError("keep_maps stores one fixed-size map per image: it needs resize='fixed' and multipass=None")
    batch_size = batch_size or default_batch_size(resize, size)
    config = {
        "extractor_version": store.EXTRACTOR_VERSION,
        "dataset": source.name,
        "images": {"count": len(source), "digest": source.digest()},
        "backbone": backbone.name,
        "weights": backbone.weights,
        "weights_digest": weights_digest(backbone),
        "layers": list(canonical_layers),
        "pooling": {label: _describe_module(m) for label, m in poolings.items()},
        "input": {"resize": resize, "size": size, "interpolation": "bilinear",
                  "mean": list(backbone.mean), "std": list(backbone.std)},
        "scales": list(scales),
        "scale_merge": SCALE_MERGE if len(scales) > 1 else None,
        "multipass": None if scheme is None else scheme.config(),
        "keep_maps": list(maps),
        "dtype": np.dtype(ROWS_DTYPE).name,
        "maps_dtype": np.dtype(MAPS_DTYPE).name if maps else None,
    }
    if block_poolings is not None:  # only then, so the keys of extractions without it stay as they were
        config["block_pooling"] = {label: _describe_module(m) for label, m in block_poolings.items()}
    return ExtractionPlan(source, backbone, canonical_layers, resolved, poolings, resize, size, scales,
                          scheme, maps, int(batch_size), config, block_poolings)


# --------------------------------------------------------------------------- results
class Features:
    """The result of one extraction: pooled rows per (layer, pooling), kept conv maps, what was skipped.

    ``get(layer, pooling)`` returns an ``N×D`` float32 array in image order, L2-normalised by
    default (``normalize=False`` gives the raw cached rows). Layer aliases work (ResNet's
    ``conv5``); ``pooling`` may be a label (``"gem(p=4)"``) or a name when it is unambiguous, and
    is ``None`` for vector layers (fc6/fc7, pool, logits).
    """

    def __init__(self, sidecar: dict, folder: Path | None = None, arrays: dict | None = None,
                 maps: dict | None = None, from_cache: bool = False):
        self.sidecar, self.folder, self.from_cache = sidecar, folder, from_cache
        self._arrays, self._maps = arrays, maps

    # --- facts
    config = property(lambda self: self.sidecar["config"], doc="the cache config (everything the key hashes)")
    key = property(lambda self: store.cache_key(self.sidecar["config"]), doc="the cache key")
    seconds_per_image = property(lambda self: self.sidecar["seconds_per_image"],
                                 doc="wall time of the extraction per image (of the original run when cached)")
    forwards_per_image = property(lambda self: self.sidecar["forwards_per_image"],
                                  doc="network passes per image: scales × patches")

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """``(path, reason)`` of every image that could not be read (its rows are zero)."""
        return [(path, reason) for _, path, reason in self.sidecar["skipped"]]

    @property
    def paths(self) -> list[str]:
        if self.folder is not None and (self.folder / store.IMAGE_LIST).is_file():
            return (self.folder / store.IMAGE_LIST).read_text().splitlines()
        return list(self.sidecar.get("paths", []))

    def __len__(self) -> int:
        return int(self.sidecar["n_images"])

    def available(self) -> list[tuple[str, str | None]]:
        """``(layer, pooling)`` pairs stored (pooling ``None`` for vector layers)."""
        return [(a["layer"], a["pooling"]) for a in self.sidecar["arrays"]]

    # --- rows
    def _layer(self, layer: str | None) -> str:
        layers = self.config["layers"]
        if layer is None:
            default = self.sidecar.get("default_layer")
            if len(layers) == 1 or default in layers:
                return layers[0] if len(layers) == 1 else default
            raise ValueError(f"several layers were extracted ({', '.join(layers)}): name one")
        name = self.sidecar.get("aliases", {}).get(layer, layer)
        if name not in layers:
            raise KeyError(f"layer {layer!r} was not extracted; extracted: {', '.join(layers)}")
        return name

    def _entry(self, layer: str | None, pooling: str | None) -> dict:
        layer = self._layer(layer)
        entries = [a for a in self.sidecar["arrays"] if a["layer"] == layer]
        if pooling is None:
            chosen = [a for a in entries if a["pooling"] is None] or (entries if len(entries) == 1 else [])
        else:
            chosen = [a for a in entries if a["pooling"] == pooling] or \
                     [a for a in entries if a["pooling"] and a["pooling"].split("(")[0] == pooling.lower()]
        if len(chosen) != 1:
            have = ", ".join(str(a["pooling"]) for a in entries)
            raise KeyError(f"{layer}: pooling {pooling!r} is {'ambiguous' if chosen else 'not stored'}; stored: {have}")
        return chosen[0]

    def get(self, layer: str | None = None, pooling: str | None = None, normalize: bool = True) -> np.ndarray:
        entry = self._entry(layer, pooling)
        if self._arrays is not None:
            rows = np.array(self._arrays[entry["file"]], dtype=np.float32)
        else:
            rows = np.array(store.load_array(self.folder / entry["file"]), dtype=np.float32)
        return l2n(rows) if normalize else rows

    def maps(self, layer: str | None = None) -> np.ndarray:
        """Kept conv maps ``N×C×h×w`` (float16, memory-mapped when cached) of ``layer``."""
        layer = self._layer(layer)
        entry = next((m for m in self.sidecar.get("maps", []) if m["layer"] == layer), None)
        if entry is None:
            raise KeyError(f"no maps kept for {layer!r}: extract with keep_maps=True")
        if self._maps is not None:
            return self._maps[entry["file"]]
        return store.load_array(self.folder / entry["file"])

    def __repr__(self) -> str:
        cfg = self.config
        where = f"folder={str(self.folder)!r}" if self.folder else "in memory"
        return (f"Features({cfg['dataset']!r}, {cfg['backbone']}, n={len(self)}, layers={cfg['layers']}, "
                f"pooling={list(cfg['pooling'])}, skipped={len(self.skipped)}, {where})")


# --------------------------------------------------------------------------- running it
class _Sinks:
    """Row writers created on first use, when the width of each output is known."""

    def __init__(self, folder: Path, n: int):
        self.folder, self.n = folder, n
        self.rows: dict[tuple[str, str | None], store.RowWriter] = {}
        self.maps: dict[str, store.RowWriter] = {}
        self._inputs: dict[tuple, torch.Tensor] = {}

    def input_buffer(self, shape) -> torch.Tensor | None:
        """The input tensor of the last batch of this shape, to be refilled (None the first time)."""
        return self._inputs.get(tuple(shape))

    def keep_input(self, x: torch.Tensor) -> None:
        if len(self._inputs) > 8:  # max-side resizing makes many shapes: keep only recent ones
            self._inputs.clear()
        self._inputs[(x.shape[0], x.shape[2], x.shape[3], x.shape[1])] = x

    def row_writer(self, key, width: int) -> store.RowWriter:
        if key not in self.rows:
            self.rows[key] = store.RowWriter(self.folder / store.array_file(*key), (self.n, width), ROWS_DTYPE)
        return self.rows[key]

    def map_writer(self, layer: str, shape) -> store.RowWriter:
        if layer not in self.maps:
            self.maps[layer] = store.RowWriter(self.folder / store.maps_file(layer), (self.n, *shape), MAPS_DTYPE)
        return self.maps[layer]

    def close(self):
        for writer in [*self.rows.values(), *self.maps.values()]:
            writer.close()


def _pool_outputs(plan: ExtractionPlan, layer: str, output: torch.Tensor):
    """``(key, N×D float32)`` for one layer's output: vectors as they are, maps through every pooling."""
    if output.ndim == 2:
        yield (layer, None), output.float()
        return
    for label, module in plan.poolings_for(layer).items():
        if label.startswith("cam") and layer != plan.backbone.default_layer:
            continue  # the classifier reads only the last conv map
        yield (layer, label), module(output).float()


def _forward_views(plan: ExtractionPlan, batch: dict, sinks: _Sinks) -> tuple[dict, list]:
    """Run every view of the batch through the network; returns ``{key: V×D}`` and the view owners."""
    parts: dict[tuple, list[torch.Tensor]] = {}
    owners_all: list[tuple[int, int, int]] = []
    for tensor, owners in batch["groups"]:
        for start in range(0, len(owners), plan.batch_size):
            chunk_owners = owners[start:start + plan.batch_size]
            chunk = tensor[start:start + plan.batch_size]
            x = to_model_input(chunk, plan.backbone, out=sinks.input_buffer(chunk.shape))
            outputs = plan.backbone.forward_features(x, plan.layers)
            sinks.keep_input(x)
            for layer, output in outputs.items():
                for key, vectors in _pool_outputs(plan, layer, output):
                    parts.setdefault(key, []).append(vectors.cpu())
                if layer in plan.keep_maps and output.ndim == 4:
                    _write_maps(plan, batch, sinks, layer, output, chunk_owners)
            owners_all += chunk_owners
    return {key: p[0] if len(p) == 1 else torch.cat(p) for key, p in parts.items()}, owners_all


def _write_maps(plan, batch, sinks, layer, output, owners) -> None:
    keep = [k for k, (_, s, _) in enumerate(owners) if s == plan.map_scale]
    if not keep:
        return
    maps = output[keep].to(torch.float16).contiguous().cpu().numpy()
    writer = sinks.map_writer(layer, maps.shape[1:])
    for row, k in zip(maps, keep):
        writer.write(batch["indices"][owners[k][0]], row[None])


def _images_from_views(vectors: torch.Tensor, owners: list, n_items: int, plan: ExtractionPlan) -> torch.Tensor:
    """Merge the view vectors of each image: patches (aggregate), then scales (mean of unit vectors).

    A single view is kept raw. Items with no views (unreadable images) stay zero rows.
    """
    if plan.multipass is None and len(plan.scales) == 1:  # one view per image: just put rows in place
        positions = [pos for pos, _, _ in owners]
        if positions == list(range(n_items)):  # every image read (the usual case): the rows already are in place
            return vectors
        out = torch.zeros(n_items, vectors.shape[1])
        out[positions] = vectors
        return out
    out = torch.zeros(n_items, vectors.shape[1])
    rows_of: dict[tuple[int, int], list[int]] = {}
    for row, (pos, s, _) in enumerate(owners):
        rows_of.setdefault((pos, s), []).append(row)
    for pos in range(n_items):
        per_scale = []
        for s in range(len(plan.scales)):
            rows = rows_of.get((pos, s))
            if rows is None:
                continue
            v = vectors[rows]
            per_scale.append(v[0] if plan.multipass is None else aggregate_patches(v, plan.multipass.aggregate))
        if len(per_scale) == 1:
            out[pos] = per_scale[0]
        elif per_scale:
            # Each scale counts the same whatever the pooling's magnitude at that map size
            # (R-MAC region counts, CroW sums grow with the map): cirtorch's multi-scale rule.
            stacked = torch.stack(per_scale)
            out[pos] = l2n(stacked).mean(dim=0)
    return out


def _write_rows(sinks: _Sinks, key, indices: list[int], rows: np.ndarray) -> None:
    writer = sinks.row_writer(key, rows.shape[1])
    if indices == list(range(indices[0], indices[0] + len(indices))):
        writer.write(indices[0], rows)
    else:
        for i, row in zip(indices, rows):
            writer.write(i, row[None])


def _fill_missing_outputs(plan: ExtractionPlan, sinks: _Sinks) -> None:
    """No image could be read at all: learn the output widths from one forward on zeros, write zero arrays."""
    side = plan.size if plan.resize == "fixed" else 224
    side = max(1, round(side * plan.scales[plan.map_scale]))
    x = torch.zeros(1, 3, side, side)
    outputs = plan.backbone.forward_features(plan.backbone.normalize(x), plan.layers)
    for layer, output in outputs.items():
        for key, vectors in _pool_outputs(plan, layer, output):
            sinks.row_writer(key, vectors.shape[1])
        if layer in plan.keep_maps and output.ndim == 4:
            sinks.map_writer(layer, output.shape[1:])


def _make_loader(plan: ExtractionPlan, workers: int, device: torch.device):
    dataset = ImageDataset(plan.source, plan.resize, plan.size, plan.scales, plan.multipass)
    extra = {"persistent_workers": True, "prefetch_factor": 2} if workers > 0 else {}
    return torch.utils.data.DataLoader(
        dataset, batch_size=plan.images_per_batch, shuffle=False, num_workers=workers,
        collate_fn=collate_views, pin_memory=device.type == "cuda", **extra)


def _run(plan: ExtractionPlan, folder: Path, workers: int, progress) -> dict:
    """Extract into ``folder``; returns the sidecar (without ``config``/``complete``)."""
    from tqdm.auto import tqdm

    n = len(plan.source)
    sinks = _Sinks(folder, n)
    skipped, views_done, read_ok = [], 0, 0
    start = time.perf_counter()
    loader = _make_loader(plan, workers, plan.backbone.device)
    try:
        with torch.inference_mode(), tqdm(total=n, desc=f"{plan.backbone.name} features", unit="img",
                                          disable=not progress) as bar:
            for batch in loader:
                indices = batch["indices"]
                for pos, reason in batch["failed"]:
                    skipped.append([indices[pos], plan.source.paths[indices[pos]], reason])
                    log.warning("skipping unreadable image %s (%s)", plan.source.paths[indices[pos]], reason)
                if batch["groups"]:
                    vectors, owners = _forward_views(plan, batch, sinks)
                    views_done += len(owners)
                    read_ok += len(indices) - len(batch["failed"])
                    for key, v in vectors.items():
                        _write_rows(sinks, key, indices, _images_from_views(v, owners, len(indices), plan).numpy())
                bar.update(len(indices))
            if not sinks.rows:
                _fill_missing_outputs(plan, sinks)
    finally:
        sinks.close()
        del loader  # shuts the persistent workers down now, not at garbage collection
    seconds = time.perf_counter() - start
    return {
        "n_images": n,
        "arrays": [{"layer": layer, "pooling": pooling, "file": w.path.name, "shape": list(w.shape),
                    "dtype": w.dtype.name} for (layer, pooling), w in sinks.rows.items()],
        "maps": [{"layer": layer, "file": w.path.name, "shape": list(w.shape), "dtype": w.dtype.name,
                  "scale": plan.scales[plan.map_scale]} for layer, w in sinks.maps.items()],
        "skipped": skipped,
        "seconds": seconds,
        "seconds_per_image": seconds / n,
        "forwards_per_image": views_done / max(read_ok, 1),
        "aliases": {**plan.backbone.aliases, **plan.requested_layers},
        "default_layer": plan.backbone.default_layer,
        "batch_size": plan.batch_size, "workers": workers,
        "device": str(plan.backbone.device), "torch": torch.__version__, "python": platform.python_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _load_in_memory(folder: Path, sidecar: dict) -> Features:
    arrays = {a["file"]: store.load_array(folder / a["file"], mmap=False) for a in sidecar["arrays"]}
    maps = {m["file"]: store.load_array(folder / m["file"], mmap=False) for m in sidecar["maps"]}
    return Features(sidecar, arrays=arrays, maps=maps)


def extract(data, backbone, layers=None, pooling=DEFAULT_POOLINGS, *, images: str = "db",
            bboxes: Sequence | None = None, size: int | None = None, resize: str | None = "default",
            scales: Sequence[float] = (1.0,), multipass=None, keep_maps=False, batch_size: int | None = None,
            workers: int = 2, device: str | None = "auto", weights="imagenet", cache=True, refresh: bool = False,
            name: str | None = None, progress: bool | None = None, block_pooling=None) -> Features:
    """Extract pooled deep features of every image, or read them from the cache.

    Survey §2.3.1.1–2.3.1.2; taught in notebooks/02_feature_layers.

    ``data``: a :class:`~retrievalkit.datasets.RetrievalDataset` (its database, or its queries with
    their crop boxes when ``images="queries"``), a list of image paths (``bboxes`` optional), or an
    :class:`ImageSource`. ``backbone``: a :class:`~retrievalkit.backbones.Backbone` or a registry
    name (loaded with ``weights``). ``layers``: names or aliases (default: the last conv map).
    ``pooling``: names from ``retrievalkit.nn.POOLINGS`` or ``(name, {params})`` pairs such as
    ``("gem", {"p": 4})``; every pooling is applied to every conv layer (``cam`` only to the last
    conv map); vector layers (fc6/fc7, pool, logits) are stored as they are. ``block_pooling``: other
    poolings for every layer except the last conv map (e.g. GeM on each block, the full list on the
    last map: one forward pass instead of two, without R-MAC on large early maps).

    Input: ``resize`` ``"fixed"`` (square), ``"max_side"`` (aspect kept) or ``None``, with ``size``;
    the default comes from :func:`default_input` (COIL-100: 224 px for a 7×7 last map).

    Multi-scale (``scales``, e.g. ``(1, 2**-0.5, 0.5)`` as in cirtorch): each scale is a separate
    forward of the image resized to ``size·scale``; the stored row is the **mean of the per-scale
    vectors after L2-normalising each**, so every scale weighs the same whatever the pooling's
    magnitude at that map size. With one scale the pooled vector is stored raw.

    Multi-pass (``multipass``: ``"grid"``, ``"pyramid"``, ``"dense"``, a dict or a
    :class:`PatchScheme`): every patch is a forward pass; patch vectors are L2-normalised and
    max- or mean-aggregated per image. ``keep_maps``: also store the conv maps (``True`` or layer
    names) as ``N×C×h×w`` float16, for VLAD/FV/attention later (needs ``resize="fixed"``).

    Runtime: ``batch_size`` views per forward (default :func:`default_batch_size`), ``workers``
    DataLoader processes decoding while the network runs, ``device`` ``"auto"`` (CUDA when
    present; a Backbone object is moved there). ``cache``: True (``config.cache_dir()``), a folder,
    or False (compute in a temporary folder and return in-memory arrays). ``refresh`` recomputes
    even when a cached result exists. Unreadable images give zero rows and are listed in
    :attr:`Features.skipped`.
    """
    from ..backbones import load_backbone

    dev = rk_config.device(device)
    if isinstance(backbone, str):
        backbone = load_backbone(backbone, weights=weights, device=dev)
    elif backbone.device != dev:
        backbone.to(dev)
    plan = plan_extraction(data, backbone, layers, pooling, images=images, bboxes=bboxes, size=size,
                           resize=resize, scales=scales, multipass=multipass, keep_maps=keep_maps,
                           batch_size=batch_size, name=name, block_pooling=block_pooling)
    root = store.features_root(None if cache is True else cache) if cache is not False else None
    if root is not None and not refresh:
        found = store.lookup(root, plan.config)
        if found is not None:
            return Features(found[1], folder=found[0], from_cache=True)

    tmp = store.begin(root, plan.config) if root is not None else Path(tempfile.mkdtemp(prefix="retrievalkit-features-"))
    was_training = backbone.training
    backbone.eval()  # batch-norm must use its running statistics, whatever mode the caller left it in
    try:
        store.write_image_list(tmp, plan.source.paths)
        sidecar = _run(plan, tmp, workers, progress)
        if root is None:
            return _load_in_memory(tmp, {**sidecar, "config": store.canonical(plan.config), "complete": True,
                                         "paths": plan.source.paths})
        final = store.commit(tmp, plan.config, sidecar, replace=refresh)
    except BaseException:
        store.abort(tmp)
        raise
    finally:
        backbone.train(was_training)
        if root is None:
            store.abort(tmp)
    return Features(store.read_sidecar(final), folder=final)


__all__ = ["extract", "plan_extraction", "ExtractionPlan", "Features", "default_input", "default_batch_size",
           "weights_digest", "DEFAULT_POOLINGS"]
