import numpy as np
import pytest
from PIL import Image

from retrievalkit.datasets.images import UnreadableImageError, find_unreadable, read_image


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P", "I;16", "1"])
def test_any_mode_becomes_rgb(tmp_path, mode):
    ext = "tiff" if mode in ("CMYK", "I;16") else "png"
    img = Image.new(mode, (10, 6))
    path = _save(img, tmp_path / f"x.{ext}")
    out = read_image(path)
    assert out.mode == "RGB" and out.size == (10, 6)


def test_transparent_pixels_become_white(tmp_path):
    path = _save(Image.new("RGBA", (4, 4), (255, 0, 0, 0)), tmp_path / "a.png")
    assert np.asarray(read_image(path))[0, 0].tolist() == [255, 255, 255]


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = _save(img, tmp_path / "rot.jpg", exif=exif.tobytes())
    assert read_image(path).size == (20, 40)


def test_bbox_crop_is_clipped_to_the_image(tmp_path):
    path = _save(Image.new("RGB", (50, 40)), tmp_path / "b.png")
    assert read_image(path, bbox=(10, 5, 30.4, 25)).size == (20, 20)
    assert read_image(path, bbox=(-5, -5, 500, 500)).size == (50, 40)


def test_truncated_and_garbage_files_name_the_file(tmp_path):
    good = _save(Image.new("RGB", (64, 64), "blue"), tmp_path / "good.jpg", quality=90)
    truncated = tmp_path / "trunc.jpg"
    truncated.write_bytes(good.read_bytes()[:200])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image at all")
    for bad in (truncated, garbage, tmp_path / "missing.jpg"):
        with pytest.raises(UnreadableImageError, match=bad.name):
            read_image(bad)
    ok, skipped = find_unreadable([good, garbage])
    assert ok == [good] and [p for p, _ in skipped] == [garbage]
