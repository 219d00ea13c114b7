"""Re-ranking experiments (retrievalkit.experiments.rerank) on SMALL COIL-100 features: the protocol
(every choice made on the learning split), the table's rows, and the reproduce step's outputs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from retrievalkit import artifacts, rerank
from retrievalkit.experiments import rerank as E
from retrievalkit.experiments.offtheshelf import Coil


@pytest.fixture(scope="module")
def home(request):
    from retrievalkit import config

    return None if (config.data_home() / "coil100").is_dir() else request.getfixturevalue("coil_home")


@pytest.fixture(scope="module")
def coil(home):
    return Coil(small=True, data_home=home, progress=False)


@pytest.fixture(scope="module")
def splits(coil):
    return E.coil_splits(coil)


def test_splits_follow_the_default_protocol(splits, coil):
    learn, test, decision = splits
    assert learn.x.shape == test.x.shape == (720, 1280)
    assert len(learn.query_rows) == len(test.query_rows) == len(test.gnd) == 40
    for q, (pos, junk) in zip(test.query_rows, test.gnd):
        assert q in junk and q not in pos and len(pos) == 71  # the query is excluded from its own ranking
    assert decision["whitening"] in ("none", "pca_w")
    assert decision["whitening"] == ("pca_w" if decision["val_mAP_pca_w"] > decision["val_mAP_none"] else "none")


@pytest.fixture(scope="module")
def spied_table(coil, splits, tmp_path_factory):
    """``E.table`` run once with spies on every fit/selection (what each of them received)."""
    seen = {"select": [], "whitening": [], "fit": []}
    root = tmp_path_factory.mktemp("artifacts")  # an empty artifacts cache: the selection really runs
    select, choose, fit = E.select_params, E.choose_whitening, rerank.Diffusion.fit

    def spy_select(split, **kw):
        seen["select"].append(split)
        return select(split, **kw)

    def spy_choose(x, labels, rows):
        seen["whitening"].append(np.array(x, copy=True))
        return choose(x, labels, rows)

    def spy_fit(self, database, S=None):
        seen["fit"].append(np.array(database, copy=True))
        return fit(self, database, S)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(E, "select_params", spy_select)
        mp.setattr(E, "choose_whitening", spy_choose)
        mp.setattr(rerank.Diffusion, "fit", spy_fit)
        mp.setattr(artifacts, "artifacts_root", lambda cache=None: root)
        df, grid, params = E.table(coil)  # recomputes the splits, so the whitening decision is spied on too
    return df, grid, params, seen


def test_hyper_parameters_are_chosen_on_the_learning_split_only(coil, splits, spied_table):
    """Every fit/selection must see learning rows only; the test split only the final scoring."""
    learn, test, _ = splits
    df, grid, params, seen = spied_table
    assert len(seen["select"]) == 1
    chosen_on = seen["select"][0]
    np.testing.assert_array_equal(chosen_on.x, learn.x)
    np.testing.assert_array_equal(chosen_on.query_rows, learn.query_rows)
    assert not np.isin(chosen_on.x[:, 0], test.x[:, 0]).any()  # no test image among the selection rows
    raw_learn = coil.extract("learn", E.BACKBONE, E.layers_for(E.BACKBONE)).get(E.LAYER, E.POOLING)
    np.testing.assert_array_equal(seen["whitening"][0], raw_learn)
    # graphs fitted during selection are on learning rows; afterwards only on the test database
    n_grid = int((grid["method"] == "diffusion").sum())
    for x in seen["fit"][:n_grid]:
        np.testing.assert_array_equal(x, learn.x)
    for x in seen["fit"][n_grid:]:
        np.testing.assert_array_equal(x, test.x)
    # the chosen values are the learning grid's arg-max
    dif = grid[grid["method"] == "diffusion"]
    assert params["graph_k"] == dif.loc[dif["mAP"].idxmax(), "graph_k"]
    assert params["qe_k"] == grid[grid["method"] == "αQE"].set_index("qe_k")["mAP"].idxmax()
    assert list(df["method"]) == list(E.METHODS)


def test_table_rows_and_orderings(spied_table):
    df, _, params, _ = spied_table
    for column in ("method", "dataset", "n_db", "distractors", "mode", "mAP", "ms_per_query", "build_s",
                   "index_bytes", "note"):
        assert column in df.columns, column
    m = df.set_index("method")
    assert (m["mAP"] > 0.9).all() and (m["mAP"] <= 1).all()
    assert m.loc["diffusion CG (online)", "mAP"] > m.loc["none", "mAP"]  # diffusion helps on the turntable manifold
    assert m.loc["αQE", "mAP"] > m.loc["none", "mAP"]
    assert m.loc["DBA", "index_bytes"] == 720 * 1280 * 4
    assert 0 < m.loc["diffusion offline (precomputed)", "index_bytes"] < 720 * 720 * 4  # block diagonal
    assert m.loc["diffusion offline (precomputed)", "mAP"] == pytest.approx(m.loc["diffusion CG (online)", "mAP"],
                                                                           abs=0.01)
    assert m.loc["diffusion joint (transductive)", "mode"].startswith("joint")
    assert (df.loc[df["mode"] == "inductive", "mode"].size == len(df) - 1)


def test_scale_adds_distractors_that_never_count_as_positives(coil, splits):
    _, test, _ = splits
    params = {"aqe_k": 3, "qe_k": 3, "dba_k": 3, "dba_qe_k": 3, "graph_k": 10, "alpha": 0.9}
    sc = E.scale(coil, params, sizes=(1000,), splits=splits)
    assert set(sc["n_db"]) == {1000} and set(sc["distractors"]) == {280}
    assert "diffusion joint (transductive)" not in set(sc["method"])
    assert np.isnan(sc.set_index("method").loc["diffusion iterative", "mAP"])
    base = E.compare(test, params, methods=("none",), single_queries=1)
    # distractors can only push positives down, and real rows must stay first (ground truth still holds):
    # with the rows misaligned the mAP would collapse to chance (≈ 0.06 here)
    with_distractors, without = sc.set_index("method").loc["none", "mAP"], base["mAP"].iloc[0]
    assert without - 0.05 < with_distractors <= without + 1e-9
    small = test.x[:300, :48] / np.linalg.norm(test.x[:300, :48], axis=1, keepdims=True)
    extra = E.lifted_distractors(small, 2000, dim=16, seed=0)
    assert extra.shape == (2000, 48) and extra.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(extra, axis=1), 1, atol=1e-5)
    mean_dir = small.mean(axis=0) / np.linalg.norm(small.mean(axis=0))
    assert (extra @ mean_dir).mean() > 0.5  # they crowd the region of the real descriptors


def test_step_writes_csv_figures_and_section(home, splits, tmp_path):
    from retrievalkit.experiments.reproduce import Run
    from retrievalkit.experiments.rerank_steps import STEPS

    run = Run(figures=tmp_path / "fig", results=tmp_path / "res", small=True, progress=False, data_home=home)
    run.shared["rerank_splits"] = splits  # what an earlier step of the same run leaves behind
    run.figures.mkdir()
    run.results.mkdir()
    section = STEPS["rerank"](run)
    for name in ("rerank.csv", "rerank_scale.csv", "rerank_grid.csv"):
        assert (run.results / name).is_file(), name
    for name in ("rerank_accuracy_time.png", "rerank_grid.png"):
        assert (run.figures / name).stat().st_size > 10_000, name
    df = pd.read_csv(run.results / "rerank.csv")
    assert list(df["method"]) == list(E.METHODS)
    assert section.startswith("## Re-ranking") and "rerank_accuracy_time.png" in section
    assert "diffusion offline (precomputed)" in section and "Table 2.1" in section
