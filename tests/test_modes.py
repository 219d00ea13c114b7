"""The three sizes of a run: SMALL (notebooks in CI), the default (a laptop, ≤ 30 min) and --full (paper size)."""
import pytest

from retrievalkit import config
from retrievalkit.datasets import coil100
from retrievalkit.experiments import hashing, instance, offtheshelf
from retrievalkit.experiments.reproduce import full_mode_note


@pytest.mark.parametrize("env, mode", [({}, "default"), ({"RETRIEVALKIT_FULL": "1"}, "full"),
                                       ({"RETRIEVALKIT_SMALL": "1", "RETRIEVALKIT_FULL": "1"}, "SMALL")])
def test_mode_reads_the_environment_and_small_wins(monkeypatch, env, mode):
    for name in ("RETRIEVALKIT_SMALL", "RETRIEVALKIT_FULL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert config.mode() == mode
    assert config.mode(small=False, full=False) == "default"


def test_the_default_run_keeps_every_other_coil_view_and_the_queries(coil_home):
    full = coil100.load(data_home=coil_home, split="test", objects=(51, 52))
    half = coil100.load(data_home=coil_home, split="test", objects=(51, 52), pose_step=10)
    assert (full.n_db, half.n_db) == (144, 72)
    assert sorted(half.meta["poses"][half.query_db_index].tolist()) == sorted(full.meta["poses"][full.query_db_index].tolist())
    assert set(map(str, half.db_paths)) < set(map(str, full.db_paths))
    easy = [len(pos) for pos, _ in half.ground_truth("easy")]
    assert easy == [6] * len(easy)  # views 10°, 20°, 30° away on both sides
    assert "10° apart" in half.description


@pytest.mark.parametrize("step", [0, 7, 20, 60])
def test_a_pose_step_that_loses_query_poses_is_refused(coil_home, step):
    with pytest.raises(ValueError, match="pose_step"):
        coil100.load(data_home=coil_home, split="test", objects=(51,), pose_step=step)


def test_coil_splits_follow_the_mode():
    assert offtheshelf.Coil(small=False, full=False).pose_step == offtheshelf.DEFAULT_POSE_STEP == 10
    assert offtheshelf.Coil(small=False, full=True).pose_step == 5
    assert offtheshelf.Coil(small=True, full=False).pose_step == 5  # SMALL: its 10 objects keep every view


def test_full_mode_widens_the_grids_and_the_note_says_how():
    assert set(hashing.BITS) < set(hashing.FULL_BITS)
    assert instance.Sets(full=True).side == instance.FULL_SIDE > instance.Sets().side == instance.SIDE
    assert instance.Sets(full=True, small=True).side == instance.SIDE
    assert set(instance.FINETUNE_METHODS) < set(instance.FULL_FINETUNE_METHODS)
    assert set(instance.NETWORKS) < set(instance.FULL_NETWORKS)
    assert "efficientnet_lite1" in instance.Sets(full=True).networks and "efficientnet_lite1" not in instance.Sets().networks
    note = full_mode_note()
    assert "adds efficientnet_lite1" in note
    for fact in ("60,000", f"{hashing.FASHION_DB:,}", str(instance.FULL_SIDE), "36", "72"):
        assert fact in note


def test_fashion_encoders_learn_from_a_draw_of_the_database(fashion_root, monkeypatch):
    monkeypatch.setattr(hashing, "FASHION_LEARN", 100)
    data = hashing.fashion_data(True, fashion_root.parent, n_db=300, n_queries=20, progress=False)
    assert data.x_db.shape[0] == 300 and data.x_learn.shape[0] == 100
    rows = {r.tobytes() for r in data.x_db}
    assert all(r.tobytes() in rows for r in data.x_learn)  # learning rows are database rows, queries are not
    assert "learning rows = 100" in data.protocol
    small = hashing.fashion_data(True, fashion_root.parent, n_db=80, n_queries=20, progress=False)
    assert small.x_learn.shape[0] == 80  # a database no larger than FASHION_LEARN is learned whole
