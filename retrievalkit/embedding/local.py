"""Local descriptors: the sets of vectors that BoW, VLAD and Fisher vectors embed.

Survey §2.3.2.2 (feature embedding: "let X = {x_1, …, x_T} be a set of local features") and
§2.1 question 1 (deep vs handcrafted features); taught in notebooks/05_embeddings_bow_vlad_fv.

Two sources:

* **Deep**: the columns of a convolutional feature map. A ``C×H×W`` map is ``H·W`` local
  descriptors of dimension ``C``, one per spatial position (:func:`conv_columns`).
* **Handcrafted**: SIFT from OpenCV, at detected keypoints or on a dense grid, optionally as
  RootSIFT (:func:`sift_descriptors`, :func:`extract_sift`).

Images hold different numbers of descriptors, so a batch is stored **flat**: one ``(Σ T_i)×D``
float32 matrix plus the image each row belongs to (:class:`LocalDescriptors`). Encoders scatter
rows into per-image sums through that index, so a whole dataset is encoded without a Python
loop over images.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ..rows import as_rows, l2n

log = logging.getLogger(__name__)

SIFT_DIM = 128
DENSE_STEP = 8
DENSE_SIZE = 16
SIFT_MODES = ("detect", "dense")


# --------------------------------------------------------------------------- the flat batch
@dataclass(frozen=True, eq=False)
class LocalDescriptors:
    """Local descriptors of ``n_images`` images, flat: ``descriptors`` (M×D float32) and
    ``image_index`` (M int64, non-decreasing: image 0's rows first, then image 1's, …).

    An image may have no rows (a flat image, a skipped file); encoders give it a zero vector.
    ``offsets`` (n_images + 1) delimit each image's rows: image ``i`` is
    ``descriptors[offsets[i]:offsets[i + 1]]``.
    """

    descriptors: np.ndarray
    image_index: np.ndarray
    n_images: int

    def __post_init__(self):
        X = np.ascontiguousarray(self.descriptors, dtype=np.float32)
        index = np.ascontiguousarray(self.image_index, dtype=np.int64)
        if X.ndim != 2:
            raise ValueError(f"descriptors must be rows (M×D), got shape {X.shape}")
        if index.shape != (len(X),):
            raise ValueError(f"image_index needs one entry per descriptor row ({len(X)}), got shape {index.shape}")
        if len(index) and (index[0] < 0 or index[-1] >= self.n_images or (np.diff(index) < 0).any()):
            raise ValueError(f"image_index must be non-decreasing and within 0..{self.n_images - 1}; "
                             "build unsorted batches with LocalDescriptors.from_index")
        object.__setattr__(self, "descriptors", X)
        object.__setattr__(self, "image_index", index)
        object.__setattr__(self, "n_images", int(self.n_images))

    @classmethod
    def from_list(cls, arrays: Sequence, dim: int | None = None) -> "LocalDescriptors":
        """Stack per-image ``T_i×D`` arrays (``T_i`` may be 0) into one flat batch."""
        arrays = [np.asarray(a, dtype=np.float32) for a in arrays]
        dims = {a.shape[1] for a in arrays if a.ndim == 2 and len(a)} | ({dim} if dim else set())
        if len(dims) > 1:
            raise ValueError(f"every image's descriptors must have the same width, got widths {sorted(dims)}")
        width = dims.pop() if dims else 0
        rows = [a.reshape(-1, width) if a.size == 0 else a for a in arrays]
        if any(r.ndim != 2 for r in rows):
            raise ValueError("each image's descriptors must be a 2-D T×D array")
        counts = np.array([len(r) for r in rows], dtype=np.int64)
        flat = np.concatenate(rows) if rows else np.zeros((0, width), np.float32)
        return cls(flat, np.repeat(np.arange(len(rows)), counts), len(rows))

    @classmethod
    def from_index(cls, descriptors, image_index, n_images: int | None = None) -> "LocalDescriptors":
        """A batch from rows in any image order (stable sort by image; order within an image is kept)."""
        if isinstance(descriptors, LocalDescriptors):
            return descriptors
        X = as_rows(descriptors, "descriptors")
        index = np.asarray(image_index, dtype=np.int64).ravel()
        if len(index) != len(X):
            raise ValueError(f"image_index has {len(index)} entries for {len(X)} descriptor rows")
        if n_images is None:
            n_images = int(index.max()) + 1 if len(index) else 0
        if len(index) and (index.min() < 0 or index.max() >= n_images):
            raise ValueError(f"image_index must lie in 0..{n_images - 1}")
        if len(index) and (np.diff(index) < 0).any():
            order = np.argsort(index, kind="stable")
            X, index = X[order], index[order]
        return cls(X, index, n_images)

    @property
    def dim(self) -> int:
        return self.descriptors.shape[1]

    @property
    def n_descriptors(self) -> int:
        return len(self.descriptors)

    @property
    def counts(self) -> np.ndarray:
        """Descriptors per image (``T_i``)."""
        return np.bincount(self.image_index, minlength=self.n_images).astype(np.int64)

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)

    def of_image(self, i: int) -> np.ndarray:
        start, stop = self.offsets[i], self.offsets[i + 1]
        return self.descriptors[start:stop]

    def to_list(self) -> list[np.ndarray]:
        return np.split(self.descriptors, self.offsets[1:-1])

    def slice_images(self, start: int, stop: int) -> "LocalDescriptors":
        """Images ``start … stop − 1`` (re-indexed from 0), sharing memory with this batch."""
        start, stop = max(0, start), min(self.n_images, stop)
        offsets = self.offsets
        lo, hi = offsets[start], offsets[stop]
        return LocalDescriptors(self.descriptors[lo:hi], self.image_index[lo:hi] - start, stop - start)

    def select(self, images) -> "LocalDescriptors":
        """The descriptors of ``images`` (indices, in the given order), re-indexed 0..len(images)-1."""
        images = np.asarray(images, dtype=np.int64).ravel()
        offsets = self.offsets
        return LocalDescriptors.from_list([self.descriptors[offsets[i]:offsets[i + 1]] for i in images], dim=self.dim)

    def __repr__(self) -> str:
        return f"LocalDescriptors(n_images={self.n_images}, n_descriptors={self.n_descriptors}, dim={self.dim})"


def as_batch(local, image_index=None, n_images: int | None = None) -> LocalDescriptors:
    """What every ``encode`` accepts: a :class:`LocalDescriptors`, or flat rows + image index (+ count)."""
    if isinstance(local, LocalDescriptors):
        if image_index is not None:
            raise ValueError("pass either a LocalDescriptors batch or (rows, image_index, n_images), not both")
        return local
    if image_index is None:
        raise ValueError("flat descriptor rows need their image_index (one image id per row)")
    return LocalDescriptors.from_index(local, image_index, n_images)


# Padded per-image blocks of at most this many float32 values (≈128 MB) are multiplied at once.
PAD_BUDGET = 2**25
# Encoders work on chunks of images whose encodings total at most this many float32 values (≈64 MB):
# plenty to vectorise over, while a 163,840-d Fisher-vector batch of 3,600 images never needs its
# several full-size temporaries at once.
OUTPUT_BUDGET = 2**24


def encode_in_chunks(batch: LocalDescriptors, width: int, encode_chunk, budget: int | None = None) -> np.ndarray:
    """Stack ``encode_chunk(sub_batch)`` over consecutive chunks of about ``budget / width`` images
    (``budget`` defaults to ``OUTPUT_BUDGET``)."""
    step = max(1, (budget or OUTPUT_BUDGET) // max(width, 1))
    if batch.n_images <= step:
        return encode_chunk(batch)
    out = None
    for start in range(0, batch.n_images, step):
        rows = encode_chunk(batch.slice_images(start, start + step))
        if out is None:  # the width after whitening is known once the first chunk is done
            out = np.empty((batch.n_images, rows.shape[1]), dtype=rows.dtype)
        out[start:start + len(rows)] = rows
    return out


def sum_by_group(values: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Scatter-add: ``out[g] = Σ_{t: group[t] = g} values[t]`` (``n_groups×F`` float32).

    Done as one sparse one-hot (``n_groups×M``) times ``values`` product, the vectorised form of
    ``np.add.at(out, group, values)`` (and several times faster than it)."""
    import scipy.sparse as sp

    values = np.ascontiguousarray(values, dtype=np.float32)
    m = len(values)
    onehot = sp.csr_matrix((np.ones(m, np.float32), (np.asarray(group, np.int64), np.arange(m))), shape=(n_groups, m))
    return np.asarray(onehot @ values, dtype=np.float32).reshape(n_groups, values.shape[1])


def weighted_sums_per_image(local: LocalDescriptors, weights: np.ndarray, values: np.ndarray,
                            budget: int = PAD_BUDGET) -> np.ndarray:
    """``out[i, k] = Σ_{t in image i} weights[t, k] · values[t]``: an ``n_images×K×F`` float32 array.

    Soft-assignment statistics (Fisher vectors' Σ_t γ_tk x_t). Images are padded with zero-weight
    rows to the longest image of a chunk and multiplied as one batched matmul per chunk
    (``torch.bmm``): the same sums as a scatter-add of ``M·K`` weighted rows, with BLAS speed.
    """
    import torch

    n, k, f = local.n_images, weights.shape[1], values.shape[1]
    out = np.zeros((n, k, f), dtype=np.float32)
    counts, offsets = local.counts, local.offsets
    if local.n_descriptors == 0:
        return out
    weights = torch.from_numpy(np.ascontiguousarray(weights, dtype=np.float32))
    values = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    longest = int(counts.max())
    chunk = max(1, budget // (longest * (k + f)))
    padded_w = padded_v = None  # reused across chunks: refilling is cheaper than fresh pages
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        t_max = int(counts[a:b].max())
        if t_max == 0:
            continue
        lo, hi = offsets[a], offsets[b]
        if (counts[a:b] == t_max).all():  # equal lengths (conv maps): a free reshape, no padding
            w = weights[lo:hi].view(b - a, t_max, k)
            v = values[lo:hi].view(b - a, t_max, f)
        else:
            if padded_w is None:
                padded_w, padded_v = weights.new_empty(chunk, longest, k), values.new_empty(chunk, longest, f)
            w, v = padded_w[:b - a, :t_max], padded_v[:b - a, :t_max]
            w.zero_()
            v.zero_()
            image = torch.from_numpy(local.image_index[lo:hi] - a)
            position = torch.from_numpy(np.arange(lo, hi) - offsets[local.image_index[lo:hi]])
            w[image, position] = weights[lo:hi]
            v[image, position] = values[lo:hi]
        out[a:b] = torch.bmm(w.transpose(1, 2), v).numpy()
    return out


# --------------------------------------------------------------------------- deep: conv columns
def column_positions(height: int, width: int) -> np.ndarray:
    """``(row, col)`` of each column in :func:`conv_columns` order (row-major, like ``x.flatten(2)``)."""
    rows, cols = np.divmod(np.arange(height * width), width)
    return np.stack([rows, cols], axis=1)


def conv_columns(maps, normalize: bool = False, chunk: int = 256) -> LocalDescriptors:
    """Convolutional feature maps ``N×C×H×W`` → ``N·H·W`` local descriptors of dimension ``C``.

    Image ``i`` owns rows ``i·H·W … (i+1)·H·W − 1``; within an image, position ``(h, w)`` is row
    ``h·W + w`` (row-major, see :func:`column_positions`). ``normalize=True`` L2-normalises each
    column (``x / (‖x‖ + 1e-6)``; all-zero columns, common after ReLU, stay zero). Accepts NumPy
    (memory-mapped float16 caches too, read ``chunk`` images at a time) or torch tensors on any
    device. A single ``C×H×W`` map is treated as a batch of one.

    Survey §2.3.2.2 (conv maps embedded by BoW/VLAD/FV, e.g. Ng et al. [30]); taught in
    notebooks/05_embeddings_bow_vlad_fv.
    """
    if type(maps).__module__.split(".")[0] == "torch":
        maps = maps.detach().cpu().numpy()
    if maps.ndim == 3:
        maps = maps[None]
    if maps.ndim != 4:
        raise ValueError(f"feature maps must be N×C×H×W (or one C×H×W map), got shape {tuple(maps.shape)}")
    n, c, h, w = maps.shape
    out = np.empty((n * h * w, c), dtype=np.float32)
    for start in range(0, n, chunk):
        block = np.asarray(maps[start:start + chunk], dtype=np.float32)
        out[start * h * w:(start + len(block)) * h * w] = block.reshape(len(block), c, h * w).transpose(0, 2, 1).reshape(-1, c)
    if normalize:
        out = l2n(out)
    return LocalDescriptors(out, np.repeat(np.arange(n), h * w), n)


# --------------------------------------------------------------------------- handcrafted: SIFT
def rootsift(descriptors: np.ndarray) -> np.ndarray:
    """RootSIFT (Arandjelović & Zisserman 2012): L1-normalise each row, then take the square root.

    Inner products of RootSIFT vectors are Hellinger kernels of the original SIFT histograms; the
    rows have unit L2 norm (all-zero rows, from flat patches, stay zero).
    """
    X = np.asarray(descriptors, dtype=np.float32)
    l1 = np.abs(X).sum(axis=1, keepdims=True)
    return np.sqrt(np.divide(np.abs(X), l1, out=np.zeros_like(X), where=l1 > 0))


def _to_gray_uint8(image) -> np.ndarray:
    """Gray ``uint8`` pixels from a PIL image or an ``H×W`` / ``H×W×{1,3,4}`` RGB(A) array.

    Transparent pixels are composited on white, as :func:`retrievalkit.datasets.images.read_image` does.
    """
    if hasattr(image, "mode") and hasattr(image, "convert"):  # PIL, without importing it
        if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
            image = image.convert("RGBA")
        elif image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        image = np.asarray(image)
    pixels = np.asarray(image)
    if pixels.dtype != np.uint8:
        pixels = pixels.astype(np.float64)
        scale = 255.0 if pixels.size and pixels.max() <= 1.0 else 1.0  # floats in [0, 1] are common
        pixels = np.clip(np.rint(pixels * scale), 0, 255).astype(np.uint8)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 2:
        return np.ascontiguousarray(pixels)
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ValueError(f"expected a gray, RGB or RGBA image, got an array of shape {pixels.shape}")
    rgb = pixels[:, :, :3].astype(np.float32)
    if pixels.shape[2] == 4:
        alpha = pixels[:, :, 3:4].astype(np.float32) / 255.0
        rgb = rgb * alpha + 255.0 * (1.0 - alpha)
    gray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as OpenCV and PIL
    return np.clip(np.rint(gray), 0, 255).astype(np.uint8)


def dense_grid(height: int, width: int, step: int = DENSE_STEP, size: int = DENSE_SIZE) -> np.ndarray:
    """Centres ``(x, y)`` of the dense-SIFT patches: every ``step`` pixels, each ``size``-wide patch
    inside the image. ``((W − size)//step + 1) · ((H − size)//step + 1)`` points; none when the image
    is smaller than one patch."""
    if step < 1 or size < 1:
        raise ValueError(f"step and size must be >= 1, got step={step}, size={size}")
    xs = np.arange(size / 2, width - size / 2 + 1e-9, step)
    ys = np.arange(size / 2, height - size / 2 + 1e-9, step)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)


def sift_descriptors(image, mode: str = "detect", step: int = DENSE_STEP, size: int = DENSE_SIZE,
                     max_keypoints: int | None = None, root: bool = False,
                     return_keypoints: bool = False):
    """SIFT descriptors of one image: a ``T×128`` float32 array (``T`` may be 0).

    ``image``: a PIL image (read it with :func:`retrievalkit.datasets.images.read_image`) or an
    array (gray ``H×W``, RGB ``H×W×3``, RGBA ``H×W×4``; uint8, or floats in [0, 1] or [0, 255]).
    ``mode="detect"``: OpenCV's difference-of-Gaussians keypoints, the ``max_keypoints`` strongest
    kept. ``mode="dense"``: upright keypoints of diameter ``size`` on a grid every ``step`` pixels
    (:func:`dense_grid`; ``max_keypoints`` keeps the first ones in row-major order). An image
    smaller than a patch gives a ``(0, 128)`` array. ``root=True`` returns RootSIFT (:func:`rootsift`).
    ``return_keypoints=True`` also returns a ``T×4`` array ``(x, y, size, angle)``.

    Survey §2.1 question 1 (handcrafted features, the baseline deep features are compared with);
    taught in notebooks/05_embeddings_bow_vlad_fv.
    """
    import cv2

    if mode not in SIFT_MODES:
        raise ValueError(f"unknown SIFT mode {mode!r}; choose one of {SIFT_MODES}")
    if max_keypoints is not None and max_keypoints < 0:
        raise ValueError(f"max_keypoints must be >= 0 or None, got {max_keypoints}")
    gray = _to_gray_uint8(image)
    sift = cv2.SIFT_create(nfeatures=max_keypoints or 0) if mode == "detect" else cv2.SIFT_create()
    if mode == "dense":
        centres = dense_grid(gray.shape[0], gray.shape[1], step, size)[:max_keypoints]
        keypoints = [cv2.KeyPoint(float(x), float(y), float(size), 0.0) for x, y in centres]
        keypoints, desc = sift.compute(gray, keypoints) if keypoints else ((), None)
    else:
        keypoints, desc = sift.detectAndCompute(gray, None) if min(gray.shape) > 0 else ((), None)
        if desc is not None and max_keypoints is not None and len(keypoints) > max_keypoints:
            # OpenCV's nfeatures keeps ties at the cut-off; keep exactly the strongest max_keypoints.
            strongest = np.argsort([-kp.response for kp in keypoints], kind="stable")[:max_keypoints]
            keypoints, desc = [keypoints[i] for i in strongest], desc[strongest]
    if desc is None or len(keypoints) == 0:
        desc = np.zeros((0, SIFT_DIM), dtype=np.float32)
    desc = np.asarray(desc, dtype=np.float32)
    if root:
        desc = rootsift(desc)
    if return_keypoints:
        kps = np.array([(kp.pt[0], kp.pt[1], kp.size, kp.angle) for kp in keypoints], dtype=np.float32).reshape(-1, 4)
        return desc, kps
    return desc


def extract_sift(paths: Iterable, mode: str = "detect", step: int = DENSE_STEP, size: int = DENSE_SIZE,
                 max_keypoints: int | None = None, root: bool = False, bbox=None,
                 progress: bool | None = None, workers: int = 0) -> tuple[LocalDescriptors, list[tuple[str, str]]]:
    """SIFT for a list of image files → ``(LocalDescriptors, skipped)``.

    Image ``i`` of the batch is ``paths[i]``. Files that cannot be read are skipped and reported
    (``skipped`` holds ``(path, reason)``, also logged): their image keeps its slot with zero
    descriptors, so encodings stay aligned with ``paths`` (and encode to zero vectors).
    ``bbox``: optional list of per-image crops (``None`` entries allowed), e.g. revisitop query boxes.
    ``workers > 0`` decodes and describes images in that many threads (OpenCV and PIL release the GIL).
    Images are read with :func:`retrievalkit.datasets.images.read_image` (EXIF, RGB, alpha on white).
    """
    from tqdm.auto import tqdm

    from ..datasets.images import UnreadableImageError, read_image

    paths = [str(p) for p in paths]
    boxes = list(bbox) if bbox is not None else [None] * len(paths)
    if len(boxes) != len(paths):
        raise ValueError(f"bbox has {len(boxes)} entries for {len(paths)} paths")

    def describe(item):
        path, box = item
        try:
            image = read_image(path, bbox=box)
        except UnreadableImageError as err:
            return None, err.reason
        return sift_descriptors(image, mode=mode, step=step, size=size, max_keypoints=max_keypoints, root=root), None

    items = list(zip(paths, boxes))
    bar = tqdm(total=len(items), desc="SIFT", disable=not progress)
    results = []
    if workers and workers > 0:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(describe, items):
                results.append(result)
                bar.update()
    else:
        for item in items:
            results.append(describe(item))
            bar.update()
    bar.close()
    skipped = [(path, reason) for path, (_, reason) in zip(paths, results) if reason is not None]
    for path, reason in skipped:
        log.warning("skipping unreadable image %s (%s)", path, reason)
    empty = np.zeros((0, SIFT_DIM), np.float32)
    local = LocalDescriptors.from_list([desc if desc is not None else empty for desc, _ in results], dim=SIFT_DIM)
    return local, skipped


__all__ = [
    "LocalDescriptors", "as_batch", "sum_by_group", "weighted_sums_per_image",
    "encode_in_chunks", "column_positions", "conv_columns", "rootsift",
    "dense_grid", "sift_descriptors", "extract_sift", "SIFT_DIM",
]
