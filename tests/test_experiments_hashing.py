"""Hashing and indexing experiments (experiments.hashing, experiments.efficiency) on SMALL COIL-100 features.

Shapes of the tidy results, the protocol (no fit ever sees a query or database row), and the
bit-balance regulariser doing what §2.3.2.4 says it does on real descriptors.
"""
from __future__ import annotations

import numpy as np
import pytest

from retrievalkit import artifacts, hashing
from retrievalkit import index as rk_index
from retrievalkit.experiments import efficiency as E
from retrievalkit.experiments import hashing as H
from retrievalkit.experiments.offtheshelf import Coil
from retrievalkit.whitening import PCA


@pytest.fixture(scope="module")
def data(request):
    # The checkout's data home (COIL-100 and its cached SMALL features) when present; else the mirror's.
    from retrievalkit import config

    home = None if (config.data_home() / "coil100").is_dir() else request.getfixturevalue("coil_home")
    return H.coil_data(Coil(small=True, data_home=home, progress=False))


def test_coil_data_is_the_default_protocol(data):
    assert data.x_learn.shape == (720, 1280) and data.x_db.shape == (720, 1280)
    assert len(data.x_query) == len(data.gnd) == 40
    # learning objects (1–10) and test objects (51–60) share no image: no learning row is a database row
    learn_rows = {row.tobytes() for row in data.x_learn}
    assert len(learn_rows) == len(data.x_learn)  # every image has its own row, so rows identify images
    assert learn_rows.isdisjoint(row.tobytes() for row in data.x_db)
    assert set(np.unique(data.y_learn)) == set(range(1, 11))


def test_code_length_rows_columns_and_curves(data):
    df, pr = H.code_length(data, bits=(16, 32), methods=("lsh", "itq", "deep"), small=True)
    assert list(df["method"]) == ["float"] + ["lsh"] * 2 + ["itq"] * 2 + ["deep"] * 2
    for column in ("dataset", "method", "bits", "bytes_per_vector", "metric", "mAP", "P@10", "mean_balance",
                   "mean_abs_corr", "mean_entropy", "unique_codes", "fit_s"):
        assert column in df.columns, column
    assert df.loc[df["method"] != "float", "bytes_per_vector"].tolist() == [2, 4] * 3
    assert ((df["mAP"] > 0.2) & (df["mAP"] <= 1)).all()
    assert df["mAP"].iloc[0] == df["mAP"].max()  # float descriptors beat 16/32-bit codes
    assert set(pr["method"]) == {"float"}  # no code at PR_BITS = 64 bits
    _, pr = H.code_length(data, bits=(64,), methods=("lsh",), small=True)
    assert pr.groupby("method").size().to_dict() == {"float": 11, "lsh": 11}
    assert (np.diff(pr[pr["method"] == "lsh"]["precision"].to_numpy()) <= 1e-12).all()  # interpolated: non-increasing


def test_accuracy_time_memory_and_scale_columns(data):
    table = E.accuracy_time_memory(data, kinds=(("flat", {}), ("ivf_flat", {"nprobe": 2})), hamming=(("itq", 32),),
                                   small=True, repeats=1, single_queries=3)
    assert table["method"].tolist() == ["flat", "ivf_flat nprobe=2", "hamming itq 32b"]
    assert {"mAP", "recall@k", "ms_per_query_batch", "ms_per_query_single", "bytes_per_vector"} <= set(table.columns)
    assert table.loc[0, "recall@k"] == 1.0
    assert table.loc[2, "bytes_per_vector"] < 5 < 5120 < table.loc[0, "bytes_per_vector"]
    sc = E.scale(data, sizes=(720, 1500), kinds=(("flat", {}),), small=True, single_queries=2)
    assert sc["n"].tolist() == [720, 720, 1500, 1500]
    assert sc["n_distractors"].tolist() == [0, 0, 780, 780]
    assert sc["method"].tolist() == ["flat", "hamming itq 64b"] * 2
    flat = sc[sc["kind"] == "flat"]
    assert (flat["recall@k"] == 1.0).all()
    assert flat["mAP@100"].iloc[1] <= flat["mAP@100"].iloc[0] + 1e-9  # distractors can only push positives down


def test_distractors_are_unit_vectors_like_the_learning_rows():
    rng = np.random.default_rng(0)
    learn = rng.standard_normal((500, 8)) + 3
    x = E.distractors(learn, 2000, seed=1)
    assert x.shape == (2000, 8) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    mean_dir = learn.mean(axis=0) / np.linalg.norm(learn.mean(axis=0))
    assert (x @ mean_dir).mean() > 0.8


def test_no_learning_step_sees_test_rows(data, monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(artifacts, "artifacts_root", lambda cache=None: tmp_path)  # empty: every fit really runs

    def spy(cls, name="fit"):
        original = getattr(cls, name)

        def wrapped(self, X, *args, **kwargs):
            seen.append((type(self).__name__, np.array(X, copy=True)))
            return original(self, X, *args, **kwargs)

        monkeypatch.setattr(cls, name, wrapped)

    for cls in (hashing.LSH, hashing.PCASign, hashing.ITQ, hashing.DeepHash):
        spy(cls)
    original_build = rk_index.build_index

    def build(kind, xb, *, xtrain=None, **params):
        if kind in rk_index.TRAINED_KINDS:
            seen.append((kind, np.array(xtrain, copy=True)))
        return original_build(kind, xb, xtrain=xtrain, **params)

    monkeypatch.setattr(rk_index, "build_index", build)
    H.code_length(data, bits=(16,), methods=H.METHODS, small=True, pr_bits=None)
    E.accuracy_time_memory(data, kinds=(("ivf_flat", {}), ("sq8", {})), hamming=(("itq", 16), ("deep", 16)),
                           small=True, repeats=1, single_queries=1)
    fitted = {name for name, _ in seen}
    assert {"LSH", "PCASign", "ITQ", "DeepHash", "ivf_flat", "sq8"} <= fitted
    for name, X in seen:
        assert np.array_equal(X, data.x_learn), f"{name} was fitted on rows other than the learning split"
    # the scale run learns in a PCA space: every fit gets exactly the learning rows, never a query
    seen.clear()
    E.scale(data, sizes=(1000,), kinds=(("ivf_flat", {}),), small=True, single_queries=1)
    assert {name for name, _ in seen} == {"ITQ", "ivf_flat"}
    pca = PCA(dim=E.SCALE_DIM).fit(data.x_learn)
    for name, X in seen:
        np.testing.assert_allclose(X, pca.transform(data.x_learn), atol=1e-5, err_msg=name)


def test_balance_regulariser_balances_bits_on_real_features(data):
    """Same seed, balance weight 0 vs 20: clearly better-balanced codes on the learning objects, and not
    worse on the unseen test objects (where the effect is small: the regulariser acts on learning batches)."""
    learn, test = {}, {}
    for weight in (0.0, 20.0):
        model = hashing.DeepHash(32, "pairwise", balance=weight, epochs=15, batch_size=128, seed=0)
        model.fit(data.x_learn, data.y_learn)
        learn[weight] = hashing.bit_balance(model.transform(data.x_learn)).mean()
        test[weight] = hashing.bit_balance(model.transform(data.x_db)).mean()
    assert learn[20.0] < 0.8 * learn[0.0], learn
    assert test[20.0] <= test[0.0], test
