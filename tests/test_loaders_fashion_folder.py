"""Fashion-MNIST (Debian package files) and the any-folder loader, plus the shared helpers."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import retrievalkit.datasets as rkd
from retrievalkit.datasets import DatasetNotFoundError, QueryGroundTruth, fashion_mnist, folder
from retrievalkit.datasets.base import drop_database_rows
from retrievalkit.datasets.images import find_unreadable, read_image

from conftest import jpeg_bytes, truncated_jpeg_bytes

SIZE = (16, 12)  # width, height of the folder test's JPEGs


def test_registry_points_at_existing_functions():
    import importlib

    for name in ("roxford5k", "rparis6k", "oxford5k", "paris6k", "holidays", "ukbench", "fashion_mnist", "folder"):
        module, func = rkd.LOADERS[name].split(":")
        assert callable(getattr(importlib.import_module(f"retrievalkit.datasets.{module}"), func)), name


# --- Fashion-MNIST --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fashion(fashion_root):
    return rkd.load("fashion_mnist", root=fashion_root)


def test_fashion_full_sizes(fashion):
    ds = fashion
    assert (ds.n_db, ds.n_queries) == (60000, 10000)
    assert ds.db_arrays.shape == (60000, 28, 28) and ds.db_arrays.dtype == np.uint8
    assert ds.query_arrays.shape == (10000, 28, 28) and ds.query_arrays.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(ds.db_labels), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(ds.query_labels), [1000] * 10)
    assert ds.db_paths[42] == Path("fashion_mnist/train/00042")
    assert ds.query_paths[-1] == Path("fashion_mnist/test/09999")
    assert ds.meta["classes"][ds.db_labels[0]] == "Ankle boot"  # the first training image
    assert np.all(ds.query_db_index == -1)
    assert 0 < ds.db_arrays.mean() < 255
    assert ds.db_arrays.flags.writeable  # torch.from_numpy warns on read-only arrays


def test_fashion_positives_are_same_class_and_shared(fashion):
    ds = fashion
    for q in (0, 1, 9999):
        np.testing.assert_array_equal(ds.gnd[q].positives, np.flatnonzero(ds.db_labels == ds.query_labels[q]))
    distinct = {id(g.positives): g.positives for g in ds.gnd}
    assert len(distinct) == 10
    assert sum(a.nbytes for a in distinct.values()) == 60000 * 8  # not 10,000 × 6,000 indices
    assert not ds.gnd[0].positives.flags.writeable


def test_fashion_subsampling_is_seeded(fashion, fashion_root):
    small = fashion_mnist.load(root=fashion_root, n_db=1000, n_queries=100, seed=0)
    assert (small.n_db, small.n_queries) == (1000, 100)
    db_ids = [int(p.name) for p in small.db_paths]
    assert db_ids == sorted(set(db_ids))
    np.testing.assert_array_equal(small.db_arrays, fashion.db_arrays[db_ids])
    np.testing.assert_array_equal(small.db_labels, fashion.db_labels[db_ids])
    np.testing.assert_array_equal(small.gnd[3].positives, np.flatnonzero(small.db_labels == small.query_labels[3]))

    again = fashion_mnist.load(root=fashion_root, n_db=500, n_queries=100, seed=0)
    other = fashion_mnist.load(root=fashion_root, n_db=1000, n_queries=100, seed=1)
    assert again.query_paths == small.query_paths  # the query draw ignores n_db
    assert other.query_paths != small.query_paths


def test_fashion_swapped_splits_and_dotted_file_names(tmp_path, fashion_root):
    for path in fashion_root.glob("*-ubyte.gz"):
        dotted = path.name.replace("-idx", ".idx")
        (tmp_path / dotted).symlink_to(path)
    ds = fashion_mnist.load(root=tmp_path, split_db="test", queries="train", n_queries=10)
    assert (ds.n_db, ds.n_queries) == (10000, 10)


def test_fashion_without_root_asks_the_data_hub(tmp_path, monkeypatch, shared_mirror):
    import dataclasses

    from retrievalkit.datasets import manifest

    # An empty data home and no OS package: the hub copies the files from the mirror into the data home.
    entry = manifest.MANIFEST["fashion_mnist"]
    monkeypatch.setitem(manifest.MANIFEST, "fashion_mnist", dataclasses.replace(entry, system_dirs=()))
    monkeypatch.setenv("RETRIEVALKIT_MIRROR", str(shared_mirror))
    ds = fashion_mnist.load(data_home=tmp_path, download=False, n_db=20, n_queries=5)
    assert ds.root == tmp_path / "fashion_mnist"
    assert (ds.root / "train-images-idx3-ubyte.gz").is_file()
    assert ds.db_arrays.shape == (20, 28, 28)


def test_fashion_argument_and_file_errors(tmp_path):
    with pytest.raises(ValueError, match="other split"):
        fashion_mnist.load(root=tmp_path, split_db="test", queries="test")
    with pytest.raises(ValueError, match="split"):
        fashion_mnist.load(root=tmp_path, split_db="valid")
    with pytest.raises(DatasetNotFoundError, match="train-images-idx3-ubyte.gz"):
        fashion_mnist.load(root=tmp_path)


def test_read_idx_checks_the_header(tmp_path):
    good = tmp_path / "ok-idx1-ubyte.gz"
    good.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9])))
    np.testing.assert_array_equal(fashion_mnist.read_idx(good), [7, 8, 9])
    short = tmp_path / "short-idx1-ubyte"
    short.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 4, 7, 8, 9]))
    with pytest.raises(ValueError, match="header"):
        fashion_mnist.read_idx(short)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"not an idx file")
    with pytest.raises(ValueError, match="IDX"):
        fashion_mnist.read_idx(garbage)


# --- any folder -----------------------------------------------------------------------------

@pytest.fixture
def mixed_folder(tmp_path) -> Path:
    root = tmp_path / "photos"
    for group in ("cats", "dogs", "single"):
        (root / group).mkdir(parents=True)
    (root / "cats" / "a.jpg").write_bytes(jpeg_bytes(SIZE, seed=1))
    Image.new("RGBA", (10, 8), (255, 0, 0, 0)).save(root / "cats" / "b.png")
    Image.new("L", (10, 8), 128).save(root / "cats" / "c.jpg")
    Image.new("CMYK", (10, 8), (0, 255, 255, 0)).save(root / "dogs" / "d.jpg")
    (root / "dogs" / "e.jpg").write_bytes(truncated_jpeg_bytes(seed=3))
    (root / "dogs" / "f.jpg").write_bytes(jpeg_bytes(SIZE, seed=2))
    (root / "single" / "g.jpg").write_bytes(jpeg_bytes(SIZE, seed=4))
    (root / "loose.jpg").write_bytes(jpeg_bytes(SIZE, seed=5))
    (root / "notes.txt").write_text("not an image")
    return root


def names(ds, rows) -> set[str]:
    return {ds.db_paths[r].name for r in rows}


def test_folder_groups_by_subfolder_and_skips_bad_files(mixed_folder):
    ds = rkd.load("folder", root=mixed_folder)
    reported = ("truncated", "sub-folder", "not an image")
    assert sorted((p.name, any(r in why for r in reported)) for p, why in ds.skipped) == [
        ("e.jpg", True), ("loose.jpg", True), ("notes.txt", True)]
    assert [p.name for p in ds.db_paths] == ["a.jpg", "b.png", "c.jpg", "d.jpg", "f.jpg", "g.jpg"]
    np.testing.assert_array_equal(ds.db_labels, [0, 0, 0, 1, 1, 2])
    # g.jpg is alone in its group: a distractor, not a query
    assert [p.name for p in ds.query_paths] == ["a.jpg", "b.png", "c.jpg", "d.jpg", "f.jpg"]
    assert names(ds, ds.gnd[0].positives) == {"b.png", "c.jpg"}
    assert names(ds, ds.gnd[0].junk) == {"a.jpg"}
    assert names(ds, ds.gnd[3].positives) == {"f.jpg"}
    for path in ds.db_paths:
        img = read_image(path)
        assert img.mode == "RGB" and img.size in ((10, 8), (16, 12))


def test_find_unreadable_decodes_the_pixel_data(mixed_folder):
    truncated, fine = mixed_folder / "dogs" / "e.jpg", mixed_folder / "cats" / "a.jpg"
    empty = mixed_folder / "empty.jpg"
    empty.write_bytes(b"")
    good, bad = find_unreadable([truncated, empty, fine])
    assert good == [fine]
    assert [p for p, _ in bad] == [truncated, empty]
    assert "truncated" in bad[0][1]


def test_folder_groups_from_csv(mixed_folder):
    csv = mixed_folder / "groups.csv"
    csv.write_text("path,group\ncats/a.jpg,red\ndogs/d.jpg,red\ncats/c.jpg,grey\n"
                   f"{mixed_folder / 'dogs' / 'f.jpg'},grey\nloose.jpg,grey\n")
    ds = folder.load(mixed_folder, groups_csv="groups.csv")
    assert [p.name for p in ds.db_paths] == ["a.jpg", "d.jpg", "c.jpg", "f.jpg", "loose.jpg"]
    np.testing.assert_array_equal(ds.db_labels, [1, 1, 0, 0, 0])  # groups numbered in name order
    assert ds.meta["group_names"] == ["grey", "red"]
    assert names(ds, ds.gnd[0].positives) == {"d.jpg"}
    assert names(ds, ds.gnd[2].positives) == {"f.jpg", "loose.jpg"}
    assert ds.skipped == []


def test_folder_errors(mixed_folder, tmp_path):
    csv = tmp_path / "bad.csv"
    csv.write_text("cats/a.jpg,x\ncats/missing.jpg,x\n")
    with pytest.raises(FileNotFoundError, match=r"line 2.*missing\.jpg"):
        folder.load(mixed_folder, groups_csv=csv)
    with pytest.raises(FileNotFoundError, match="groups CSV"):
        folder.load(mixed_folder, groups_csv=tmp_path / "nope.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no grouped images"):
        folder.load(tmp_path / "empty")
    with pytest.raises(DatasetNotFoundError, match="no such folder"):
        folder.load(tmp_path / "absent")


def test_drop_database_rows_reindexes_every_list():
    gnd = [QueryGroundTruth.make(positives=[0, 2, 4], junk=[1, 5], easy=[0], hard=[2, 4], bbox=(1, 2, 3, 4))]
    keep = np.array([True, True, False, True, True, False])  # drop rows 2 and 5
    (g,) = drop_database_rows(gnd, keep)
    np.testing.assert_array_equal(g.positives, [0, 3])
    np.testing.assert_array_equal(g.junk, [1])
    np.testing.assert_array_equal(g.easy, [0])
    np.testing.assert_array_equal(g.hard, [3])
    assert g.bbox == (1.0, 2.0, 3.0, 4.0)
