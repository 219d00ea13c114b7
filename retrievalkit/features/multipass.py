"""Multiple feed-forward passes: cut an image into patches, describe each, aggregate per image.

Survey §2.3.1.1 b (multiple feedforward pass methods) and Figure 2.7 (a) rigid grid, (b) spatial
pyramid, (c) dense patch sampling, (d) region proposals; taught in notebooks/02_feature_layers.

(a)–(c) are pure geometry: :class:`PatchScheme` gives boxes from the image size alone, so
:func:`~retrievalkit.features.extract` cuts them inside its data loader. (d) needs to *look* at the
image first, so it is a two-pass method (:class:`ProposalScheme`, :func:`extract_proposals`): one
whole-image pass whose channel-summed last conv map is thresholded into connected blobs
(:func:`proposal_boxes`, with :func:`nms` to drop duplicates), then one pass per proposed region.
The survey's proposals come from selective search, EdgeBoxes or a trained region proposal network;
OpenCV's selective search lives in ``opencv-contrib`` (``cv2.ximgproc``), which this project does
not install, and EdgeBoxes needs a trained edge model, so the proposals here come from the
network's own activations — the "probabilistic proposals" idea of §2.3.2.3 (Fig. 2.8) without training.

Every patch is cropped from the (query-cropped) original image, resized like a whole image
would be, and sent through the network, so a scheme with ``k`` patches costs ``k`` forward
passes per image — the price the survey warns about. :class:`Features.seconds_per_image`
and ``forwards_per_image`` in the cache sidecar make that cost visible.

Boxes are integer pixel boxes ``(x1, y1, x2, y2)`` (PIL's crop convention: ``x2``/``y2``
exclusive), listed row by row from the top-left.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

from ..rows import l2n

Box = tuple[int, int, int, int]

SCHEMES = ("grid", "pyramid", "dense")
AGGREGATIONS = ("max", "mean")


def _spans(length: int, n: int, overlap: float) -> list[tuple[int, int]]:
    """``n`` equal windows covering ``[0, length)`` end to end, consecutive ones overlapping by ``overlap``."""
    window = length / (n - (n - 1) * overlap)
    step = window * (1 - overlap)
    spans = [(round(k * step), min(length, round(k * step + window))) for k in range(n)]
    spans[-1] = (spans[-1][0], length)  # float rounding must not leave the last pixel column out
    return [(a, max(b, a + 1)) for a, b in spans]


def grid_boxes(width: int, height: int, n: int = 2, overlap: float = 0.0) -> list[Box]:
    """Rigid grid (Figure 2.7a): ``n×n`` equal cells covering the image; ``overlap`` in [0, 1)."""
    if n < 1:
        raise ValueError(f"grid needs n >= 1 cells per side, got {n}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    xs, ys = _spans(width, n, overlap), _spans(height, n, overlap)
    return [(x1, y1, x2, y2) for y1, y2 in ys for x1, x2 in xs]


def pyramid_boxes(width: int, height: int, levels=(1, 2)) -> list[Box]:
    """Spatial pyramid (Figure 2.7b): the whole image, then a 2×2 grid, 3×3, … one per level."""
    if not levels or min(levels) < 1:
        raise ValueError(f"pyramid levels must be positive grid sizes, got {levels}")
    return [box for n in levels for box in grid_boxes(width, height, n)]


def _starts(length: int, side: int, step: int) -> list[int]:
    starts = list(range(0, length - side + 1, step))
    if starts[-1] != length - side:  # one window flush with the far border, so nothing is left out
        starts.append(length - side)
    return starts


def dense_boxes(width: int, height: int, patch: float = 0.5, stride: float = 0.25) -> list[Box]:
    """Dense sliding windows (Figure 2.7c): squares of side ``patch·min(w, h)`` every ``stride·min(w, h)`` pixels.

    A last window flush with the right/bottom border is added when the stride does not land there.
    """
    if not 0 < patch <= 1 or not 0 < stride <= 1:
        raise ValueError(f"patch and stride are fractions of the short side in (0, 1], got {patch}, {stride}")
    short = min(width, height)
    side, step = max(1, round(patch * short)), max(1, round(stride * short))
    return [(x, y, x + side, y + side) for y in _starts(height, side, step) for x in _starts(width, side, step)]


@dataclass(frozen=True)
class PatchScheme:
    """How to cut an image into patches and how to merge the patch descriptors.

    ``kind``: ``"grid"`` (``grid``×``grid`` cells, ``overlap``), ``"pyramid"`` (``levels``) or
    ``"dense"`` (``patch`` side and ``stride``, fractions of the short side).

    ``aggregate``: how the patch vectors of one image become one descriptor. Each patch vector is
    L2-normalised first, so every patch has the same say whatever its activation energy; then
    ``"max"`` keeps, per dimension, the strongest patch (the multi-pass analogue of MAC) and
    ``"mean"`` averages them (the analogue of SPoC). Default ``"max"``.
    """

    kind: str = "grid"
    grid: int = 2
    overlap: float = 0.0
    levels: tuple[int, ...] = (1, 2)
    patch: float = 0.5
    stride: float = 0.25
    aggregate: str = "max"

    def __post_init__(self):
        if self.kind not in SCHEMES:
            raise ValueError(f"unknown multi-pass scheme {self.kind!r}; choose one of {SCHEMES}")
        if self.aggregate not in AGGREGATIONS:
            raise ValueError(f"unknown patch aggregation {self.aggregate!r}; choose one of {AGGREGATIONS}")
        object.__setattr__(self, "levels", tuple(int(v) for v in self.levels))
        self.boxes(64, 64)  # validates the parameters now rather than inside a DataLoader worker

    def boxes(self, width: int, height: int) -> list[Box]:
        """Patch boxes for an image of ``width×height`` pixels."""
        if self.kind == "grid":
            return grid_boxes(width, height, self.grid, self.overlap)
        if self.kind == "pyramid":
            return pyramid_boxes(width, height, self.levels)
        return dense_boxes(width, height, self.patch, self.stride)

    def config(self) -> dict:
        """The parameters that matter for this kind (part of the cache key)."""
        used = {"grid": ("grid", "overlap"), "pyramid": ("levels",), "dense": ("patch", "stride")}[self.kind]
        values = asdict(self)
        return {"kind": self.kind, **{k: values[k] for k in used}, "aggregate": self.aggregate}


def make_scheme(spec) -> PatchScheme | None:
    """``None`` (single pass), a scheme name with default parameters, a dict of parameters, or a PatchScheme."""
    if spec is None or spec is False:
        return None
    if isinstance(spec, PatchScheme):
        return spec
    if isinstance(spec, ProposalScheme) or spec == "proposals" or (isinstance(spec, Mapping)
                                                                   and spec.get("kind") == "proposals"):
        raise ValueError("region proposals need the network's activation map of each image, so they are a two-pass "
                         "method: use retrievalkit.features.extract_proposals(...) instead of extract(multipass=...)")
    if isinstance(spec, str):
        return PatchScheme(kind=spec)
    if isinstance(spec, Mapping):
        return PatchScheme(**spec)
    raise TypeError(f"multipass must be None, 'grid', 'pyramid', 'dense', a dict or a PatchScheme, not {spec!r}")


def aggregate_patches(vectors: torch.Tensor, how: str = "max") -> torch.Tensor:
    """``P×D`` patch vectors of one image → one ``D`` vector: L2-normalise each, then max or mean."""
    unit = l2n(vectors)
    return unit.amax(dim=0) if how == "max" else unit.mean(dim=0)


# --------------------------------------------------------------------------- region proposals (Figure 2.7d)
def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two pixel boxes ``(x1, y1, x2, y2)`` (``x2``/``y2`` excluded); 0 when disjoint."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0, iw) * max(0, ih)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms(boxes: Sequence[Box], scores: Sequence[float], iou: float = 0.5) -> list[int]:
    """Greedy non-maximum suppression: indices of the kept boxes, highest score first.

    Walk the boxes by decreasing score (ties: lower index first) and keep a box unless its IoU
    with an already kept box is above ``iou``.
    """
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    kept: list[int] = []
    for i in order.tolist():
        if all(box_iou(boxes[i], boxes[k]) <= iou for k in kept):
            kept.append(i)
    return kept


def proposal_boxes(width: int, height: int, activation, top: int = 4, quantiles: Sequence[float] = (0.75, 0.9),
                   iou: float = 0.5) -> list[Box]:
    """Region proposals of a ``width×height`` image from an activation map (Figure 2.7d, without a trained RPN).

    ``activation``: ``h×w`` (or ``C×h×w``, summed over channels) map of the whole image, e.g. the
    last conv map of a first forward pass. The map is thresholded at its mean and at each of its
    ``quantiles``; every 4-connected blob above a threshold gives the bounding box of its cells,
    scaled to image pixels (outward, so the blob is covered), scored by the activation it holds.
    The whole image comes first and is always kept; then at most ``top`` blob boxes by decreasing
    score, after non-maximum suppression at ``iou`` (the same blob seen at two thresholds, or a
    blob as large as the image, is one region). Deterministic: no randomness, stable tie order.
    """
    from scipy import ndimage

    a = np.asarray(activation, dtype=np.float64)
    if a.ndim == 3:
        a = a.sum(axis=0)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"activation must be an h×w or C×h×w map, got shape {a.shape}")
    if top < 0 or not 0 <= iou <= 1:
        raise ValueError(f"top must be >= 0 and iou in [0, 1], got {top}, {iou}")
    h, w = a.shape
    boxes, scores = [(0, 0, width, height)], [math.inf]
    for threshold in [a.mean(), *np.quantile(a, list(quantiles))]:
        labels, _ = ndimage.label(a > threshold)
        for k, (rows, cols) in enumerate(ndimage.find_objects(labels), start=1):
            boxes.append((cols.start * width // w, rows.start * height // h,
                          -(-cols.stop * width // w), -(-rows.stop * height // h)))  # floor the start, ceil the end
            scores.append(float(a[labels == k].sum()))
    return [boxes[i] for i in nms(boxes, scores, iou)[: top + 1]]


@dataclass(frozen=True)
class ProposalScheme:
    """Region proposals from the network's own activations (two passes; see the module docstring).

    The existing schemes are functions of the image size; a proposal also needs the image's
    activation map, so :meth:`boxes` takes it as a third argument — the smallest extension.
    ``side``: input side of the proposing pass (a square, ``resize="fixed"``: at 224 px the last
    map of EfficientNet-Lite0 is 7×7). ``top``, ``quantiles``, ``iou``: see :func:`proposal_boxes`.
    ``aggregate``: how region vectors merge, as in :class:`PatchScheme`.
    """

    top: int = 4
    quantiles: tuple[float, ...] = (0.75, 0.9)
    iou: float = 0.5
    side: int = 224
    aggregate: str = "max"
    kind: str = field(default="proposals", init=False)

    def __post_init__(self):
        if self.aggregate not in AGGREGATIONS:
            raise ValueError(f"unknown patch aggregation {self.aggregate!r}; choose one of {AGGREGATIONS}")
        object.__setattr__(self, "quantiles", tuple(float(q) for q in self.quantiles))
        if not all(0 <= q <= 1 for q in self.quantiles) or self.side < 1:
            raise ValueError(f"quantiles must lie in [0, 1] and side be positive, got {self.quantiles}, {self.side}")
        self.boxes(64, 64, np.zeros((2, 2)))  # validates top and iou now

    def boxes(self, width: int, height: int, activation) -> list[Box]:
        """Proposal boxes for a ``width×height`` image whose first-pass map is ``activation``."""
        return proposal_boxes(width, height, activation, self.top, self.quantiles, self.iou)

    def config(self) -> dict:
        return {"kind": self.kind, **{k: v for k, v in asdict(self).items() if k != "kind"}}


class ProposalFeatures:
    """The result of :func:`extract_proposals`: per-image descriptors merged from their regions.

    ``get(layer, pooling)`` as :meth:`Features.get`; ``boxes[i]``: the regions of image ``i``
    (whole image first); ``forwards_per_image``: 1 proposing pass + the regions, on average;
    ``seconds_per_image``: both passes together.
    """

    def __init__(self, regions, owners: np.ndarray, boxes: list[list[Box]], aggregate: str, proposing):
        self.regions, self.owners, self.boxes, self.aggregate = regions, owners, boxes, aggregate
        n = len(boxes)
        self.forwards_per_image = 1 + len(owners) / n
        self.seconds_per_image = proposing.seconds_per_image + regions.seconds_per_image * len(owners) / n

    def __len__(self) -> int:
        return len(self.boxes)

    def get(self, layer: str | None = None, pooling: str | None = None, normalize: bool = True) -> np.ndarray:
        rows = torch.from_numpy(self.regions.get(layer, pooling, normalize=False))
        merged = torch.stack([aggregate_patches(rows[self.owners == i], self.aggregate) for i in range(len(self))])
        out = merged.numpy()
        return l2n(out) if normalize else out


def extract_proposals(data, backbone, layers=None, pooling=("gem",), scheme: ProposalScheme | None = None, *,
                      images: str = "db", size: int | None = None, resize: str | None = "fixed", **kwargs) -> ProposalFeatures:
    """Two-pass region-proposal extraction (Figure 2.7d) built on :func:`~retrievalkit.features.extract`.

    Pass 1: the whole image at ``scheme.side`` px, keeping its last conv map; :meth:`ProposalScheme.boxes`
    turns the channel-summed map into regions. Pass 2: every region, cropped from the (query-cropped)
    image, is described as an image of its own with ``layers``/``pooling``/``size``/``resize``
    (both passes are cached like any extraction). Region vectors are L2-normalised and merged
    per image (``scheme.aggregate``), as :func:`aggregate_patches` does for the grid.
    Other ``kwargs`` (``workers``, ``batch_size``, ``cache``, ``progress``, ...) go to both passes.
    """
    from ..backbones import load_backbone
    from .extraction import extract
    from .loading import ImageSource, as_source

    scheme = scheme or ProposalScheme()
    if isinstance(backbone, str):
        backbone = load_backbone(backbone, weights=kwargs.pop("weights", "imagenet"))
    source = as_source(data, images=images)
    last = backbone.default_layer
    first = extract(source, backbone, [last], ["gem"], size=scheme.side, resize="fixed", keep_maps=[last], **kwargs)
    maps = first.maps(last)
    boxes, crops, owners = [], [], []
    for i in range(len(source)):
        origin = source.bboxes[i] if source.bboxes is not None and source.bboxes[i] is not None else None
        try:
            width, height = source.read(i).size
        except Exception:  # noqa: BLE001 - unreadable: one whole-"image" region, which pass 2 reports as skipped
            width, height = 1, 1
        regions = scheme.boxes(width, height, maps[i])
        boxes.append(regions)
        x0, y0 = (0, 0) if origin is None else (int(round(origin[0])), int(round(origin[1])))
        crops += [(x0 + x1, y0 + y1, x0 + x2, y0 + y2) for x1, y1, x2, y2 in regions]
        owners += [i] * len(regions)
    owners = np.asarray(owners)
    arrays = None if source.arrays is None else np.asarray(source.arrays)[owners]
    region_source = ImageSource(f"{source.name}-proposals", [source.paths[i] for i in owners], crops, arrays,
                                exif_transpose=source.exif_transpose)
    regions = extract(region_source, backbone, layers, pooling, size=size, resize=resize, **kwargs)
    return ProposalFeatures(regions, owners, boxes, scheme.aggregate, first)


__all__ = ["PatchScheme", "make_scheme", "grid_boxes", "pyramid_boxes", "dense_boxes", "aggregate_patches",
           "SCHEMES", "AGGREGATIONS", "box_iou", "nms", "proposal_boxes", "ProposalScheme", "ProposalFeatures",
           "extract_proposals"]
