"""ROxford5k / RParis6k loaders on the real revisitop pickles, with tiny images under the official names."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from retrievalkit.datasets import DatasetNotFoundError, load
from retrievalkit.datasets.revisited import load_roxford5k, load_rparis6k

from conftest import MIRROR, jpeg_bytes, truncated_jpeg_bytes

EXPECTED = {"roxford5k": (4993, 70), "rparis6k": (6322, 70)}


def official_gnd(name: str) -> dict:
    with open(MIRROR / f"gnd_{name}.pkl", "rb") as f:
        return pickle.load(f)  # trusted test fixture; the loader itself uses the restricted unpickler


def make_root(root: Path, name: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(MIRROR / f"gnd_{name}.pkl", root)
    (root / "jpg").mkdir()
    tiny = jpeg_bytes()
    cfg = official_gnd(name)
    for image in cfg["imlist"] + cfg["qimlist"]:
        (root / "jpg" / f"{image}.jpg").write_bytes(tiny)
    return root


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def revisited_root(request, tmp_path_factory):
    name = request.param
    return name, make_root(tmp_path_factory.mktemp(name), name)


def test_sizes_and_separate_queries(revisited_root):
    name, root = revisited_root
    ds = load(name, root=root)
    assert (ds.n_db, ds.n_queries) == EXPECTED[name]
    assert ds.protocols == ("easy", "medium", "hard")
    assert np.all(ds.query_db_index == -1)
    assert ds.skipped == []
    cfg = official_gnd(name)
    assert [p.stem for p in ds.db_paths] == cfg["imlist"]
    assert [p.stem for p in ds.query_paths] == cfg["qimlist"]
    assert not set(cfg["qimlist"]) & set(cfg["imlist"])
    assert all(p.is_file() for p in ds.query_paths[:5] + ds.db_paths[:5])


@pytest.mark.parametrize("query", [0, 37, 69])
def test_protocols_follow_revisitop_rules(revisited_root, query):
    name, root = revisited_root
    ds = load_roxford5k(root=root) if name == "roxford5k" else load_rparis6k(root=root)
    g = official_gnd(name)["gnd"][query]
    easy, hard, junk = (np.sort(np.asarray(g[k], dtype=np.int64)) for k in ("easy", "hard", "junk"))
    expected = {
        "easy": (easy, np.union1d(junk, hard)),
        "medium": (np.union1d(easy, hard), junk),
        "hard": (hard, np.union1d(junk, easy)),
    }
    truth = {p: ds.ground_truth(p)[query] for p in ds.protocols}
    for protocol, (pos, jnk) in expected.items():
        np.testing.assert_array_equal(truth[protocol][0], pos, err_msg=protocol)
        np.testing.assert_array_equal(truth[protocol][1], jnk, err_msg=protocol)
    assert ds.gnd[query].bbox == tuple(float(v) for v in g["bbx"])


def test_every_query_has_a_box_inside_positive_coordinates(revisited_root):
    name, root = revisited_root
    ds = load(name, root=root)
    boxes = np.asarray(ds.query_bboxes, dtype=float)
    assert boxes.shape == (70, 4)
    assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])


def test_roxford_has_queries_without_easy_positives():
    # A quirk of the official file: two ROxford queries have no Easy positive.
    cfg = official_gnd("roxford5k")
    assert sum(len(g["easy"]) == 0 for g in cfg["gnd"]) == 2


def test_missing_image_folder_names_the_fetch_command(tmp_path):
    shutil.copy(MIRROR / "gnd_roxford5k.pkl", tmp_path)
    with pytest.raises(DatasetNotFoundError) as err:
        load_roxford5k(root=tmp_path)
    message = str(err.value)
    assert str(tmp_path / "jpg") in message
    assert "retrievalkit datasets fetch roxford5k" in message


def test_missing_ground_truth_file(tmp_path):
    (tmp_path / "jpg").mkdir()
    (tmp_path / "jpg" / "a.jpg").write_bytes(jpeg_bytes())
    with pytest.raises(DatasetNotFoundError, match="gnd_rparis6k.pkl"):
        load_rparis6k(root=tmp_path)


@pytest.fixture(scope="module")
def damaged_roxford(tmp_path_factory):
    root = make_root(tmp_path_factory.mktemp("damaged") / "roxford5k", "roxford5k")
    cfg = official_gnd("roxford5k")
    g0 = cfg["gnd"][0]
    removed_db = cfg["imlist"][g0["easy"][0]]
    corrupt_db = cfg["imlist"][g0["junk"][0]]
    corrupt_query = cfg["qimlist"][1]
    (root / "jpg" / f"{removed_db}.jpg").unlink()
    for image in (corrupt_db, corrupt_query):
        (root / "jpg" / f"{image}.jpg").write_bytes(truncated_jpeg_bytes())
    return root, cfg, {removed_db, corrupt_db}, corrupt_query


def test_missing_image_raises_unless_checking(damaged_roxford):
    root, *_ = damaged_roxford
    with pytest.raises(DatasetNotFoundError, match="check_images=True"):
        load_roxford5k(root=root)


def test_check_images_skips_and_reindexes(damaged_roxford):
    root, cfg, bad_db, bad_query = damaged_roxford
    ds = load_roxford5k(root=root, check_images=True)
    assert {p.stem for p, _ in ds.skipped} == bad_db | {bad_query}
    assert ds.n_db == 4993 - 2
    assert ds.n_queries == 69
    assert bad_query not in {p.stem for p in ds.query_paths}

    # query 0 keeps its names, minus the dropped images; query 2 became query 1
    for new_q, old_q in ((0, 0), (1, 2)):
        g = cfg["gnd"][old_q]
        for kind in ("easy", "hard", "junk"):
            got = {ds.db_paths[i].stem for i in getattr(ds.gnd[new_q], kind)}
            want = {cfg["imlist"][i] for i in g[kind]} - bad_db
            assert got == want, (new_q, kind)


def test_revisitop_reads_stored_pixels_and_scores_by_its_rules(revisited_root):
    # revisitop's boxes refer to the stored pixels, and its mP@k rule must survive a query subset
    name, root = revisited_root
    ds = load(name, root=root)
    assert ds.revisited and not ds.exif_transpose
    subset = ds.subset_queries([0, 1])
    assert subset.revisited and not subset.exif_transpose
