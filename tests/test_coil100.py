import numpy as np
import pytest

import retrievalkit as rk
from retrievalkit.datasets import DatasetNotFoundError, coil100


@pytest.fixture(scope="module")
def test_split(coil_home):
    return rk.datasets.load("coil100", data_home=coil_home, download=False)


def test_full_collection_from_the_mirror_zip(coil_home):
    full = coil100.load(data_home=coil_home, split="all", download=False)
    assert full.n_db == 7200 and full.n_queries == 400


def test_default_protocol(test_split):
    ds = test_split
    assert ds.n_db == 3600 and ds.n_queries == 200
    assert set(ds.db_labels.tolist()) == set(range(51, 101))
    for q in range(ds.n_queries):
        pos, junk = ds.ground_truth("all")[q]
        row = ds.query_db_index[q]
        assert len(pos) == 71 and junk.tolist() == [row]
        assert np.all(ds.db_labels[pos] == ds.query_labels[q])
        assert ds.query_paths[q] == ds.db_paths[row]
    assert sorted({ds.meta["poses"][r] for r in ds.query_db_index}) == [0, 90, 180, 270]


def test_easy_and_hard_by_angular_distance(test_split):
    ds = test_split
    poses = ds.meta["poses"]
    q = 0
    row = ds.query_db_index[q]
    easy, easy_junk = ds.ground_truth("easy")[q]
    hard, hard_junk = ds.ground_truth("hard")[q]
    assert np.all(coil100.angular_distance(poses[easy], poses[row]) <= 30) and len(easy) == 12
    assert np.all(coil100.angular_distance(poses[hard], poses[row]) >= 60) and len(hard) == 71 - 22
    # each protocol ignores the object's views it does not count, and the query itself
    assert len(easy_junk) == 1 + 71 - 12 and row in easy_junk and row in hard_junk


def test_learning_split_never_contains_test_objects(coil_home):
    learn = coil100.load(data_home=coil_home, split="learn", download=False)
    assert set(learn.db_labels.tolist()) == set(range(1, 51))
    assert not {p.name for p in learn.db_paths} & {coil100.image_name(o, a) for o in range(51, 101) for a in coil100.POSES}


def test_missing_dataset_names_the_path_and_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.delenv("RETRIEVALKIT_MIRROR", raising=False)
    with pytest.raises(DatasetNotFoundError) as err:
        rk.datasets.load("coil100", data_home=tmp_path, download=False)
    assert str(tmp_path) in str(err.value) and "retrievalkit datasets fetch coil100" in str(err.value)


def test_a_missing_image_is_reported_by_name(tmp_path):
    folder = tmp_path / "coil100" / "coil-100"
    folder.mkdir(parents=True)
    for pose in coil100.POSES[:-1]:
        (folder / coil100.image_name(51, pose)).write_bytes(b"")
    with pytest.raises(DatasetNotFoundError, match="obj51__355.png"):
        coil100.load(root=tmp_path / "coil100", objects=[51])


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match="coil100.*roxford5k"):
        rk.datasets.load("imagenet")
    with pytest.raises(ValueError, match="learn"):
        coil100.load(root=".", split="validation")
