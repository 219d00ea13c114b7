"""The fine-tuning reproduce step in SMALL mode: tidy tables, figures, the protocol (Survey §2.4, Table 2.3)."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from retrievalkit.experiments import finetune as E


@pytest.fixture(scope="module")
def home(request):
    from retrievalkit import config

    return None if (config.data_home() / "coil100").is_dir() else request.getfixturevalue("coil_home")


def test_validation_objects_are_held_out_whole_from_the_learning_split(home):
    from retrievalkit.experiments.offtheshelf import Coil

    data = E.finetune_data(Coil(small=True, data_home=home, progress=False))
    train, val, test = set(data.train.labels), set(data.val.labels), set(data.test.labels)
    assert train == set(range(1, 9)) and val == {9, 10} and test == set(range(51, 61))
    assert not set(data.train.ids) & set(data.test.ids) and not set(data.val.ids) & set(data.test.ids)
    assert data.train.maps.shape[1:] == (192, 4, 4)  # stage6 maps at 128 px


# One method per code path the step adds to the trainer tests (W-only regression, m-per-class AP,
# tuples + cross-entropy, label-free manifold tuples, k-means pseudo-labels), to keep this test short.
STEP_METHODS = ("regression", "ap", "joint", "manifold", "kmeans")


def test_step_finetune_small_writes_tables_and_figures(tmp_path, home, monkeypatch):
    from retrievalkit.experiments.finetune_steps import STEPS
    from retrievalkit.experiments.reproduce import Run

    monkeypatch.setattr(E, "METHODS", tuple(m for m in E.METHODS if m.name in STEP_METHODS))
    run = Run(figures=tmp_path / "fig", results=tmp_path / "res", small=True, progress=False, data_home=home)
    run.figures.mkdir()
    run.results.mkdir()
    section = STEPS["finetune"](run)
    names = {p.name for p in run.written}
    for name in ("finetune.csv", "finetune_history.csv", "finetune_embedding.csv", "table_2_3_ours.csv",
                 "finetune_before_after.png", "finetune_curves.png", "finetune_embedding.png",
                 "table_2_3_reported_vs_ours.png"):
        assert name in names and (run.figures / name if name.endswith(".png") else run.results / name).is_file()
    scores = pd.read_csv(run.results / "finetune.csv")
    methods = [m.name for m in E.METHODS]
    assert list(dict.fromkeys(scores.loc[scores["stage"] == "after", "method"])) == methods
    assert set(scores["protocol"]) == {"all", "easy", "hard"}
    assert (scores.groupby(["stage", "method"]).size() == 3).all()
    assert ((scores["mAP"] > 0.5) & (scores["mAP"] <= 1)).all() and (scores["queries"] == 40).all()
    after = scores[scores["stage"] == "after"]
    assert (after["test_images_seen"] == 0).all()  # no test image was ever read by training or validation
    history = pd.read_csv(run.results / "finetune_history.csv")
    assert set(history["method"]) == set(methods) and {"epoch", "loss", "val_mAP", "p"} <= set(history.columns)
    assert (history.groupby("method")["epoch"].min() == 0).all()
    ours = pd.read_csv(run.results / "table_2_3_ours.csv")
    assert list(ours.columns[:4]) == ["method", "supervision", "loss", "equation"] and len(ours) == len(methods)
    assert "Table 2.3" in section and "Protocol differences" in section
    assert re.search(r"^\|\s*after\s*\|\s*joint\s*\|", section, re.M)  # the before/after table has the joint row
    emb = pd.read_csv(run.results / "finetune_embedding.csv")
    assert emb["stage"].nunique() == 2 and emb["object"].nunique() == E.EMBED_OBJECTS
    assert np.isfinite(emb[["x", "y"]].to_numpy()).all()
    # the verdicts' paired bootstrap reads each method's test AP per query
    per_query = pd.read_csv(run.results / "finetune_per_query.csv")
    main = scores[scores["protocol"] == "all"].set_index(["method", "stage"])["mAP"]
    assert np.allclose(per_query.groupby(["method", "stage"])["AP"].mean().reindex(main.index), main, atol=1e-12)
    from retrievalkit.experiments import verdicts

    rows = verdicts.finetune({"finetune": scores, "finetune_per_query": per_query, "finetune_history": history})
    assert rows and all("[" in r["ours"] for r in rows)


def test_unknown_method_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown fine-tuning method 'tripplet'"):
        E.run_method(None, "tripplet")


def test_methods_are_named_rows_whose_losses_exist():
    from retrievalkit.finetune import losses as L

    assert len({m.name for m in E.METHODS}) == len(E.METHODS)
    for m in E.METHODS:
        assert E.method_named(m.name) is m and m.supervision in ("supervised", "unsupervised")
        L.build(m.loss, 8, 3, **m.loss_kwargs)  # every row's loss builds with its keyword arguments
    assert E.method_named("joint")._asdict() == {"name": "joint", "supervision": "supervised", "loss": "joint",
                                                 "loss_kwargs": {"alpha": 1.0, "beta": 0.1}, "equation": "2.18",
                                                 "survey_loss": "Triplet Loss"}


def test_mining_stats_count_how_often_mined_rows_really_match():
    from retrievalkit.finetune.unsupervised import ManifoldMining

    labels = np.array([0, 0, 0, 1, 1, 2])
    mined = ManifoldMining(np.array([0, 3]), [np.array([1, 3]), np.array([4])], [np.array([5]), np.array([0, 4])],
                           [], [])
    # positives: row 1 matches anchor 0, row 3 does not; row 4 matches anchor 3 → 2/3
    # negatives: row 5 is another object than anchor 0, row 0 too, row 4 is not → 2/3
    assert E.mining_stats(mined, labels) == pytest.approx({"pos_precision": 2 / 3, "neg_precision": 2 / 3})
