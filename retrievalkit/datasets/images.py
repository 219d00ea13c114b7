"""The one image reader used everywhere: EXIF orientation, RGB, clear errors for bad files.

Taught in notebooks/00_setup_and_data. Holidays needs EXIF orientation, while the ROxford/RParis
and Oxford/Paris boxes refer to the stored pixels (each dataset's ``exif_transpose`` says which);
Paris6k ships ~20 corrupt JPEGs; user folders hold grayscale, CMYK, palette, RGBA and 16-bit files.
"""
from __future__ import annotations

import logging
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def image_extensions() -> frozenset[str]:
    """File extensions of every format the installed Pillow can decode (.jpg, .jfif, .png, .pbm, .pnm, .webp …).

    Stub formats (GRIB, HDF5, WMF …), which Pillow identifies but cannot decode without a plugin, are left out.
    """
    Image.init()

    def decodable(fmt: str) -> bool:
        factory = Image.OPEN.get(fmt, (None,))[0]
        return factory is not None and not (isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile))

    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if decodable(fmt))


class UnreadableImageError(OSError):
    """An image file could not be decoded; ``path`` names it."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"cannot read image {path}: {reason} (skip it, or replace the file)")
        self.path = Path(path)
        self.reason = reason


def _flatten_alpha(img: Image.Image) -> Image.Image:
    # Transparent pixels become white rather than whatever colour the file stored under alpha 0.
    background = Image.new("RGB", img.size, (255, 255, 255))
    background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
    return background


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit grey (``I;16*``, and ``I``, Pillow's mode for some 16-bit PNGs) scaled to 0–255, not clipped."""
    if not img.mode.startswith("I"):
        return img
    pixels = np.asarray(img, dtype=np.float64) / 257.0  # 65535 / 257 = 255 exactly
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "L")


def read_image(path, bbox=None, *, exif_transpose: bool = True) -> Image.Image:
    """Open ``path`` as an RGB PIL image, optionally cropped to ``bbox``.

    ``exif_transpose``: turn the image upright by its EXIF orientation tag first (Holidays needs
    it). ``bbox`` is ``(x1, y1, x2, y2)`` in pixels of the image as read: the upright frame, or with
    ``exif_transpose=False`` the stored pixels, the frame of revisitop's and Oxford/Paris's query
    boxes (pass ``dataset.exif_transpose``). 16-bit images are scaled to 8 bits.
    Raises :class:`UnreadableImageError` naming the file for missing, truncated or corrupt images.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                if exif_transpose:
                    img = ImageOps.exif_transpose(img)
                img = _to_8bit(img)
                if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                    img = _flatten_alpha(img)
                else:
                    img = img.convert("RGB")  # grayscale, CMYK, palette, 16-bit
    except FileNotFoundError:
        raise UnreadableImageError(path, "file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UnreadableImageError(path, f"{type(err).__name__}: {err}") from None
    if bbox is not None:
        x1, y1, x2, y2 = (int(round(v)) for v in bbox)
        x1, y1 = max(0, x1), max(0, y1)
        x2, y2 = min(img.width, max(x2, x1 + 1)), min(img.height, max(y2, y1 + 1))
        img = img.crop((x1, y1, x2, y2))
    return img


# JPEGs are decoded at 1/8 scale (libjpeg's DCT scaling): every byte of the entropy-coded data is
# still read, so truncated and corrupt files fail, at a fraction of the cost of a full decode.
_DRAFT_SCALE = 8


def _decode_quickly(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft("RGB", (max(1, img.width // _DRAFT_SCALE), max(1, img.height // _DRAFT_SCALE)))
            img.load()
            ImageOps.exif_transpose(img)


def find_unreadable(paths: Iterable, progress: bool | None = None) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Split ``paths`` into images that decode and ``(path, reason)`` for those that do not.

    Unlike a header check (``Image.verify``), this decodes the pixel data, so truncated JPEGs are
    caught. Cost: about 2–5 ms per Oxford/Paris-sized JPEG (≈ 20–30 s for Paris6k on two cores),
    about 30 ms for an 8-megapixel Holidays photo.
    """
    from tqdm.auto import tqdm

    good, bad = [], []
    for path in tqdm([Path(p) for p in paths], desc="decoding images", disable=not progress):
        try:
            _decode_quickly(path)
            good.append(path)
        except Exception as err:  # noqa: BLE001 - any decoder failure means "skip and report"
            bad.append((path, f"{type(err).__name__}: {err}"))
    for path, reason in bad:
        log.warning("skipping unreadable image %s (%s)", path, reason)
    return good, bad


def list_images(folder) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Every file under ``folder`` (recursive, sorted): ``(image files, [(other file, reason)])``.

    A file is an image when Pillow can open its extension; the others are returned with the
    reason, so a caller can report every file it does not read.
    """
    images, others = [], []
    known = image_extensions()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        if path.suffix.lower() in known:
            images.append(path)
        else:
            others.append((path, f"not an image: Pillow opens no {path.suffix or 'extension-less'} files"))
    return images, others
