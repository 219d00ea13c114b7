"""Handcrafted global descriptors: the pre-deep baseline the survey's methods are measured against.

Survey §2.1 (question 1: do deep features beat handcrafted ones?) and Figure 2.1's CBIR pipeline;
taught in notebooks/00_setup_and_data. A colour histogram ignores shape entirely, which is
exactly why it is a useful floor: every deep descriptor in later notebooks should beat it.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from .datasets.images import UnreadableImageError, read_image
from .rows import l2n

log = logging.getLogger(__name__)

DEFAULT_BINS = (8, 4, 4)  # hue is the most informative channel on COIL-100's turntable photos


def color_histogram(image: Image.Image, bins: Sequence[int] = DEFAULT_BINS, space: str = "HSV") -> np.ndarray:
    """Joint colour histogram, Hellinger-mapped (square root) and L2-normalised.

    After the square root, the inner product of two descriptors is the Bhattacharyya coefficient
    of the histograms, so the usual inner-product search ranks by histogram similarity.
    """
    pixels = np.asarray(image.convert(space), dtype=np.int64).reshape(-1, 3)
    bins = np.asarray(bins, dtype=np.int64)
    cells = (pixels * bins) // 256  # per-channel bin index
    flat = (cells[:, 0] * bins[1] + cells[:, 1]) * bins[2] + cells[:, 2]
    hist = np.bincount(flat, minlength=int(np.prod(bins))).astype(np.float32)
    hist = np.sqrt(hist / max(hist.sum(), 1.0))
    return l2n(hist)


def describe_images(
    paths: Sequence,
    describe: Callable[[Image.Image], np.ndarray] = color_histogram,
    *,
    bboxes: Sequence | None = None,
    exif_transpose: bool = True,
    workers: int = 2,
    progress: bool | None = None,
) -> tuple[np.ndarray, list[tuple[Path, str]]]:
    """Describe every image; unreadable ones get a zero row and are reported, never crash the run.

    Returns ``(descriptors N×D float32, skipped [(path, reason)])``. A zero row scores 0 against
    every query, so a bad database image simply sinks to the bottom of every ranking.
    ``exif_transpose``: the dataset's rule for EXIF orientation (see ``read_image``).
    """
    from tqdm.auto import tqdm

    bboxes = list(bboxes) if bboxes is not None else [None] * len(paths)

    def one(i: int):
        try:
            return describe(read_image(paths[i], bboxes[i], exif_transpose=exif_transpose)), None
        except UnreadableImageError as err:
            return None, (err.path, err.reason)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(tqdm(pool.map(one, range(len(paths))), total=len(paths), desc="describing", disable=not progress))
    width = next((len(d) for d, _ in results if d is not None), 0)
    out = np.zeros((len(paths), width), dtype=np.float32)
    skipped = []
    for i, (desc, failure) in enumerate(results):
        if failure is None:
            out[i] = desc
        else:
            skipped.append(failure)
            log.warning("skipped unreadable image %s (%s)", *failure)
    return out, skipped
