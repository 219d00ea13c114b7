"""Multiple feed-forward passes: cut an image into patches, describe each, aggregate per image.

Survey §2.3.1.1 b (multiple feedforward pass methods) and Figure 2.7 (a) rigid grid, (b) spatial
pyramid, (c) dense patch sampling; taught in notebooks/02_feature_layers.

Every patch is cropped from the (query-cropped) original image, resized like a whole image
would be, and sent through the network, so a scheme with ``k`` patches costs ``k`` forward
passes per image — the price the survey warns about. :class:`Features.seconds_per_image`
and ``forwards_per_image`` in the cache sidecar make that cost visible.

Boxes are integer pixel boxes ``(x1, y1, x2, y2)`` (PIL's crop convention: ``x2``/``y2``
exclusive), listed row by row from the top-left.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

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
    if isinstance(spec, str):
        return PatchScheme(kind=spec)
    if isinstance(spec, Mapping):
        return PatchScheme(**spec)
    raise TypeError(f"multipass must be None, 'grid', 'pyramid', 'dense', a dict or a PatchScheme, not {spec!r}")


def aggregate_patches(vectors: torch.Tensor, how: str = "max") -> torch.Tensor:
    """``P×D`` patch vectors of one image → one ``D`` vector: L2-normalise each, then max or mean."""
    unit = l2n(vectors)
    return unit.amax(dim=0) if how == "max" else unit.mean(dim=0)


__all__ = ["PatchScheme", "make_scheme", "grid_boxes", "pyramid_boxes", "dense_boxes", "aggregate_patches",
           "SCHEMES", "AGGREGATIONS"]
