"""Images → network input: the torch ``Dataset`` behind :func:`retrievalkit.features.extract`.

Survey §2.3.1.1 (the input of a feed-forward pass: the whole image, or patches of it);
taught in notebooks/02_feature_layers.

Work is split so that the forward pass never waits:

* DataLoader **workers** read (:func:`retrievalkit.datasets.images.read_image`, the one image
  reader), crop, resize with PIL and hand over ``H×W×3`` ``uint8`` tensors — a quarter of the
  bytes of float pixels to pass between processes.
* The **main process** turns a stacked ``N×H×W×3`` batch into normalised float input with
  :func:`to_model_input`. ``permute(0, 3, 1, 2)`` of that batch *is* an ``N×C×H×W`` tensor in
  ``channels_last`` memory order, the format the backbones run fastest in, so no per-image
  transpose or layout conversion is ever made.

Images of different sizes (``resize="max_side"`` or ``None``) are never padded — padding would
change MAC/GeM/R-MAC values. :func:`collate_views` groups each batch by size and every group is
forwarded on its own; equal-size images (``resize="fixed"``, all of COIL-100) batch fully.
Unreadable images do not stop a run: their item carries ``ok=False`` and the reason, and the
extractor writes a zero row and reports the file.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..datasets.images import read_image
from .multipass import PatchScheme

RESIZE_POLICIES = ("fixed", "max_side", None)
INTERPOLATION = Image.BILINEAR  # PIL's bilinear filter widens its support when shrinking, so it antialiases


def target_size(width: int, height: int, resize: str | None, size: int | None, scale: float = 1.0) -> tuple[int, int]:
    """Output ``(width, height)`` of the resize policy, times ``scale`` (multi-scale extraction).

    ``"fixed"``: a ``size×size`` square (aspect ratio not kept; COIL-100 is square anyway).
    ``"max_side"``: the longer side becomes ``size``, aspect ratio kept (cirtorch's ``imsize``).
    ``None``: the image's own size.
    """
    if resize == "fixed":
        side = max(1, round(size * scale))
        return side, side
    if resize == "max_side":
        factor = size * scale / max(width, height)
    elif resize is None:
        factor = scale
    else:
        raise ValueError(f"unknown resize policy {resize!r}; choose one of {RESIZE_POLICIES}")
    return max(1, round(width * factor)), max(1, round(height * factor))


def resize_image(img: Image.Image, resize: str | None, size: int | None, scale: float = 1.0) -> Image.Image:
    w, h = target_size(img.width, img.height, resize, size, scale)
    return img if (w, h) == img.size else img.resize((w, h), INTERPOLATION)


def to_hwc_tensor(img: Image.Image) -> torch.Tensor:
    """An RGB PIL image as an ``H×W×3`` uint8 tensor (one copy, no float conversion)."""
    return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True))


def to_model_input(batch: torch.Tensor, backbone, out: torch.Tensor | None = None) -> torch.Tensor:
    """``N×H×W×3`` uint8 → normalised float ``N×3×H×W`` on the backbone's device, in its memory format.

    The same arithmetic as ``backbone.normalize(x / 255)``, done in place in ``out`` when given
    (a reused buffer of the right shape: fresh 20 MB tensors per batch cost page faults).
    """
    batch = batch.to(backbone.device, non_blocking=True).permute(0, 3, 1, 2)
    if out is None or out.shape != batch.shape or out.device != batch.device:
        out = torch.empty(batch.shape, device=batch.device,
                          memory_format=getattr(backbone, "memory_format", torch.channels_last))
    out.copy_(batch).div_(255)
    mean = torch.tensor(backbone.mean, device=out.device).view(1, 3, 1, 1)
    std = torch.tensor(backbone.std, device=out.device).view(1, 3, 1, 1)
    return out.sub_(mean).div_(std)


# --------------------------------------------------------------------------- what to read
@dataclass(eq=False)
class ImageSource:
    """The images of one extraction: file paths (+ optional crop boxes) or in-memory pixel arrays.

    ``arrays``: ``N×H×W`` (grey) or ``N×H×W×3`` uint8, as Fashion-MNIST's ``db_arrays``; then
    ``paths`` are just names. ``bboxes[i]``: ``(x1, y1, x2, y2)`` crop of image ``i`` or None.
    ``exif_transpose``: files are turned upright by their EXIF tag before cropping (the dataset's rule).
    """

    name: str
    paths: list[str]
    bboxes: list | None = None
    arrays: np.ndarray | None = None
    exif_transpose: bool = True

    def __post_init__(self):
        self.paths = [str(p) for p in self.paths]
        if self.bboxes is not None:
            self.bboxes = [None if b is None else tuple(float(v) for v in b) for b in self.bboxes]
            if len(self.bboxes) != len(self.paths):
                raise ValueError(f"{len(self.bboxes)} bboxes for {len(self.paths)} images")
            if all(b is None for b in self.bboxes):
                self.bboxes = None
        if self.arrays is not None and len(self.arrays) != len(self.paths):
            raise ValueError(f"{len(self.arrays)} arrays for {len(self.paths)} image names")

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, i: int) -> Image.Image:
        bbox = None if self.bboxes is None else self.bboxes[i]
        if self.arrays is None:
            return read_image(self.paths[i], bbox, exif_transpose=self.exif_transpose)
        img = Image.fromarray(np.asarray(self.arrays[i], dtype=np.uint8)).convert("RGB")
        return img if bbox is None else img.crop(tuple(int(round(v)) for v in bbox))

    def digest(self) -> str:
        """Hash of what the pixels come from: names (with file size and mtime) and boxes, or the array bytes.

        File size and modification time are included so that replacing an image under the same
        name invalidates the cache.
        """
        h = hashlib.sha256()
        if self.arrays is not None:
            arrays = np.ascontiguousarray(self.arrays)
            h.update(f"arrays {arrays.shape} {arrays.dtype}\n".encode())
            h.update(memoryview(arrays).cast("B"))
        for path in self.paths:
            h.update(path.encode() + b"\0")
            if self.arrays is None:
                try:
                    st = os.stat(path)
                    h.update(f"{st.st_size}:{st.st_mtime_ns}\n".encode())
                except OSError:
                    h.update(b"missing\n")
        h.update(repr(self.bboxes).encode())
        if not self.exif_transpose:  # only then, so the keys of upright-read caches stay as they were
            h.update(b"stored frame, no EXIF transpose\n")
        return h.hexdigest()


def as_source(data, images: str = "db", bboxes: Sequence | None = None, name: str | None = None) -> ImageSource:
    """An :class:`ImageSource` from a RetrievalDataset (``images`` = ``"db"`` or ``"queries"``), a
    list of paths, or an ImageSource. Queries of a dataset come with their ground-truth boxes."""
    if isinstance(data, ImageSource):
        return data
    if hasattr(data, "db_paths"):  # a RetrievalDataset
        if images == "db":
            paths, arrays, boxes = data.db_paths, data.db_arrays, None
        elif images == "queries":
            paths, arrays, boxes = data.query_paths, data.query_arrays, data.query_bboxes
        else:
            raise ValueError(f"images must be 'db' or 'queries', got {images!r}")
        return ImageSource(name or f"{data.name}-{images}", list(paths), bboxes if bboxes is not None else boxes, arrays,
                           exif_transpose=getattr(data, "exif_transpose", True))
    if isinstance(data, (str, os.PathLike)):
        raise TypeError("pass a list of image paths (or a RetrievalDataset), not a single path")
    return ImageSource(name or "images", [str(Path(p)) for p in data], bboxes)


# --------------------------------------------------------------------------- the torch Dataset
class ImageDataset(torch.utils.data.Dataset):
    """Item ``i``: ``{"index": i, "ok": bool, "reason": str, "views": [(scale_idx, patch_idx, H×W×3 uint8)]}``.

    A *view* is what one forward pass sees: the whole image at each scale, or, with a
    :class:`PatchScheme`, every patch at each scale. Each view is resized from the full-resolution
    image (or patch), never from an already resized copy.
    """

    def __init__(self, source: ImageSource, resize: str | None = "fixed", size: int | None = 224,
                 scales: Sequence[float] = (1.0,), patches: PatchScheme | None = None):
        if resize not in RESIZE_POLICIES:
            raise ValueError(f"unknown resize policy {resize!r}; choose one of {RESIZE_POLICIES}")
        if resize is not None and (size is None or size < 1):
            raise ValueError(f"resize={resize!r} needs a positive size, got {size!r}")
        self.source, self.resize, self.size = source, resize, size
        self.scales, self.patches = tuple(float(s) for s in scales), patches

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> dict:
        try:
            img = self.source.read(i)
            regions = [img] if self.patches is None else [img.crop(b) for b in self.patches.boxes(*img.size)]
            views = [(s, p, to_hwc_tensor(resize_image(region, self.resize, self.size, scale)))
                     for s, scale in enumerate(self.scales) for p, region in enumerate(regions)]
        except Exception as err:  # noqa: BLE001 - any failure on one image means: zero row, report, go on
            reason = getattr(err, "reason", None) or f"{type(err).__name__}: {err}"
            return {"index": i, "ok": False, "reason": reason, "views": []}
        return {"index": i, "ok": True, "reason": "", "views": views}


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack``; in a DataLoader worker straight into shared memory, as torch's default collate
    does, so the batch is not copied a second time when it is sent to the main process."""
    if torch.utils.data.get_worker_info() is None:
        return torch.stack(tensors)
    first = tensors[0]
    storage = first.untyped_storage()._new_shared(len(tensors) * first.numel() * first.element_size())
    out = first.new(storage).view(first.dtype).view(len(tensors), *first.shape)
    return torch.stack(tensors, out=out)


def collate_views(items: list[dict]) -> dict:
    """Stack the views of a batch of items, grouped by size.

    Returns ``{"indices": [...], "failed": [(position, reason)], "groups": [(N×H×W×3 tensor, owners)]}``
    where ``owners[k] = (position in batch, scale_idx, patch_idx)`` of row ``k`` of the tensor.
    """
    by_size: dict[tuple[int, int], tuple[list, list]] = {}
    failed = []
    for pos, item in enumerate(items):
        if not item["ok"]:
            failed.append((pos, item["reason"]))
        for s, p, view in item["views"]:
            tensors, owners = by_size.setdefault(tuple(view.shape[:2]), ([], []))
            tensors.append(view)
            owners.append((pos, s, p))
    groups = [(_stack(tensors), owners) for tensors, owners in by_size.values()]
    return {"indices": [item["index"] for item in items], "failed": failed, "groups": groups}


__all__ = ["ImageSource", "ImageDataset", "as_source", "collate_views", "to_model_input", "to_hwc_tensor",
           "resize_image", "target_size", "RESIZE_POLICIES"]
