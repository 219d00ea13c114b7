import numpy as np
import pytest
from PIL import Image

from conftest import sideways_jpeg

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


RAMP = (np.arange(256, dtype=np.uint16) * 257).reshape(1, 256).repeat(3, axis=0)  # 0 … 65535


@pytest.mark.parametrize("ext", ["png", "tiff"])
def test_16bit_grey_is_scaled_linearly_not_clipped(tmp_path, ext):
    path = _save(Image.fromarray(RAMP), tmp_path / f"ramp.{ext}")
    assert Image.open(path).mode.startswith("I")
    out = np.asarray(read_image(path))
    np.testing.assert_array_equal(out[0, :, 0], np.arange(256))
    assert (out[..., 0] == out[..., 2]).all()


def _png_rgb16(path, pixels: np.ndarray):
    """A 16-bit-per-channel RGB PNG, written by hand (Pillow cannot create one)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w, _ = pixels.shape
    rows = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(h))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


def test_16bit_rgb_is_scaled_linearly(tmp_path):
    path = _png_rgb16(tmp_path / "rgb16.png", np.stack([RAMP, RAMP[:, ::-1], RAMP], axis=-1))
    out = np.asarray(read_image(path))
    np.testing.assert_array_equal(out[0, :, 0], np.arange(256))
    np.testing.assert_array_equal(out[0, :, 1], np.arange(256)[::-1])


def test_stored_frame_crop_ignores_exif_orientation(tmp_path):
    path = sideways_jpeg(tmp_path / "side.jpg")
    assert read_image(path, exif_transpose=False).size == (40, 20)
    crop = np.asarray(read_image(path, bbox=(0, 0, 40, 8), exif_transpose=False)).reshape(-1, 3)
    assert crop.shape[0] == 320 and (crop[:, 0] > 200).all() and (crop[:, 2] < 60).all()  # all red
    upright = np.asarray(read_image(path, bbox=(0, 0, 40, 8))).reshape(-1, 3)
    assert upright.shape[0] == 160 and (upright[:, 2] > 200).any()  # the upright frame mixes in blue


def test_a_datasets_exif_rule_reaches_the_extractor_and_its_cache_key(tmp_path):
    from retrievalkit.datasets.base import QueryGroundTruth, RetrievalDataset
    from retrievalkit.features import as_source

    path = sideways_jpeg(tmp_path / "side.jpg")

    def dataset(exif_transpose):
        return RetrievalDataset(name="d", root=tmp_path, db_paths=[path], query_paths=[path],
                                gnd=[QueryGroundTruth.make([0], bbox=(0, 0, 40, 8))], exif_transpose=exif_transpose)

    stored, upright = as_source(dataset(False), "queries"), as_source(dataset(True), "queries")
    assert stored.read(0).size == (40, 8) and upright.read(0).size == (20, 8)
    assert as_source(dataset(False), "db").read(0).size == (40, 20)
    assert stored.digest() != upright.digest()
