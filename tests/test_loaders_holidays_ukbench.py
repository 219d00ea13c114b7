"""Holidays (real image list, tiny images, EXIF, real samples) and UKBench (real samples) loaders."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrievalkit.datasets import DatasetNotFoundError, load
from retrievalkit.datasets import holidays, ukbench
from retrievalkit.datasets.images import read_image

from conftest import MIRROR, SAMPLES, jpeg_bytes

IMAGE_LIST = MIRROR / "holidays_images.dat"
ORIENTATION = 0x0112


# --- Holidays -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def holidays_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("holidays")
    shutil.copy(IMAGE_LIST, root)
    (root / "jpg").mkdir()
    tiny = jpeg_bytes()
    for name in IMAGE_LIST.read_text().split():
        (root / "jpg" / name).write_bytes(tiny)
    return root


def test_holidays_sizes(holidays_root):
    ds = load("holidays", root=holidays_root)
    assert ds.n_db == 1491
    assert len(np.unique(ds.db_labels)) == 500
    assert ds.n_queries == 500
    assert ds.skipped == []
    ids = np.array([int(p.stem) for p in ds.query_paths])
    assert np.all(ids % 100 == 0)
    np.testing.assert_array_equal(ds.query_labels, ids // 100)
    assert sum(len(g.positives) for g in ds.gnd) == 1491 - 500


@pytest.mark.parametrize("query_id", [100000, 129700, 149900])
def test_holidays_query_positives_are_its_group(holidays_root, query_id):
    ds = holidays.load(root=holidays_root)
    q = [p.stem for p in ds.query_paths].index(str(query_id))
    ids = [int(n.split(".")[0]) for n in IMAGE_LIST.read_text().split()]
    expected = {i for i in ids if i // 100 == query_id // 100 and i != query_id}
    got = {int(ds.db_paths[i].stem) for i in ds.gnd[q].positives}
    assert got == expected and expected
    row = ds.query_db_index[q]
    assert ds.db_paths[row] == ds.query_paths[q]
    np.testing.assert_array_equal(ds.gnd[q].junk, [row])  # excluded from its own ranking


def test_holidays_reports_missing_listed_images(holidays_root, tmp_path):
    root = tmp_path / "holidays"
    (root / "jpg").mkdir(parents=True)
    shutil.copy(IMAGE_LIST, root)
    for p in (holidays_root / "jpg").glob("*.jpg"):
        if p.name not in ("100001.jpg", "100100.jpg"):  # a database image and a query
            (root / "jpg" / p.name).symlink_to(p)
    ds = holidays.load(root=root)
    assert sorted(p.name for p, _ in ds.skipped) == ["100001.jpg", "100100.jpg"]
    assert ds.n_db == 1489 and ds.n_queries == 499
    q = [p.name for p in ds.query_paths].index("100000.jpg")
    assert {ds.db_paths[i].name for i in ds.gnd[q].positives} == {"100002.jpg"}


def test_holidays_missing_files(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="holidays_images.dat"):
        holidays.load(root=tmp_path)
    shutil.copy(IMAGE_LIST, tmp_path)
    with pytest.raises(DatasetNotFoundError, match="retrievalkit datasets fetch holidays"):
        holidays.load(root=tmp_path)


def write_sideways_jpeg(path: Path, orientation: int) -> None:
    """An upright 20×40 image (red top, blue bottom) stored sideways with an EXIF orientation tag."""
    upright = Image.new("RGB", (20, 40), "blue")
    upright.paste((255, 0, 0), (0, 0, 20, 20))
    # Tag 6 means "rotate 90° clockwise to display", so the stored pixels are the upright image
    # turned 90° counter-clockwise; tag 8 is the opposite.
    stored = upright.transpose(Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270)
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    stored.save(path, exif=exif, quality=95)


@pytest.mark.parametrize("orientation", [6, 8])
def test_holidays_exif_rotated_image_comes_out_upright(tmp_path, orientation):
    root = tmp_path / "holidays"
    (root / "jpg").mkdir(parents=True)
    (root / "holidays_images.dat").write_text("100000.jpg\n100001.jpg\n")
    write_sideways_jpeg(root / "jpg" / "100000.jpg", orientation)
    (root / "jpg" / "100001.jpg").write_bytes(jpeg_bytes())
    ds = holidays.load(root=root, check_images=True)
    assert ds.exif_transpose  # Holidays' rule: compare photos upright
    assert Image.open(ds.query_paths[0]).size == (40, 20)  # stored sideways
    img = np.asarray(read_image(ds.query_paths[0]))
    assert img.shape[:2] == (40, 20)
    assert img[5, 10, 0] > 200 and img[5, 10, 2] < 60  # red on top
    assert img[35, 10, 2] > 200 and img[35, 10, 0] < 60  # blue at the bottom


def test_holidays_real_samples(tmp_path):
    root = tmp_path / "holidays"
    (root / "jpg").mkdir(parents=True)
    names = ["100000.jpg", "100001.jpg", "100002.jpg"]
    (root / "holidays_images.dat").write_text("\n".join(names))
    for name in names:
        (root / "jpg" / name).symlink_to(SAMPLES / "holidays" / name)
    ds = holidays.load(root=root, check_images=True)
    assert ds.skipped == [] and ds.n_queries == 1
    assert {ds.db_paths[i].name for i in ds.gnd[0].positives} == {"100001.jpg", "100002.jpg"}
    for path in ds.db_paths:
        with Image.open(path) as raw:
            stored, tag = raw.size, raw.getexif().get(ORIENTATION, 1)
        img = read_image(path)
        assert img.mode == "RGB"
        assert img.size == (stored if tag in (1, 2, 3, 4) else stored[::-1])
    assert read_image(ds.db_paths[2]).size == (3264, 2448)  # tag 1: kept as stored


# --- UKBench --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ukbench_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ukbench")
    (root / "full").mkdir()
    for path in sorted((SAMPLES / "ukbench").glob("ukbench*.jpg")):
        (root / "full" / path.name).symlink_to(path)
    return root


def test_ukbench_groups_of_four_from_real_samples(ukbench_root):
    ds = load("ukbench", root=ukbench_root, check_images=True)
    assert ds.n_db == 10 and ds.n_queries == 10
    np.testing.assert_array_equal(ds.db_labels, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    np.testing.assert_array_equal(ds.query_db_index, np.arange(10))
    assert [p.name for p in ds.db_paths] == [ukbench.image_name(i) for i in range(10)]
    # the N-S score counts the query itself among its top 4
    np.testing.assert_array_equal(ds.gnd[0].positives, [0, 1, 2, 3])
    np.testing.assert_array_equal(ds.gnd[5].positives, [4, 5, 6, 7])
    np.testing.assert_array_equal(ds.gnd[9].positives, [8, 9])
    assert all(len(g.junk) == 0 for g in ds.gnd)
    assert [p.name for p, _ in ds.skipped] == ["ukbench00010.jpg", "ukbench00011.jpg"]
    assert read_image(ds.db_paths[0]).size == (640, 480)
    assert ds.exif_transpose and not ds.revisited


def test_ukbench_first_image_queries(ukbench_root):
    ds = ukbench.load(root=ukbench_root, queries="first")
    np.testing.assert_array_equal(ds.query_db_index, [0, 4, 8])
    np.testing.assert_array_equal(ds.query_labels, [0, 1, 2])
    np.testing.assert_array_equal(ds.gnd[1].positives, [4, 5, 6, 7])
    with pytest.raises(ValueError, match="queries"):
        ukbench.load(root=ukbench_root, queries="some")


def test_ukbench_missing_folder(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="retrievalkit datasets fetch ukbench"):
        ukbench.load(root=tmp_path)
