"""Trained artefacts of the experiments go through the artifacts cache (issue 14, "a lab in minutes").

For each one: (1) a second call reads it back without training (the fit is patched to fail),
(2) a changed setting or changed learning rows trains again, (3) what comes back from the cache
gives the same outputs as a fit that never touched the cache. Each test gets its own artifacts
cache; the feature cache is shared with the real one, so the SMALL COIL-100 features are not
extracted again.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from retrievalkit import artifacts, config, hashing, whitening
from retrievalkit import embedding as emb
from retrievalkit.evaluate import label_ground_truth
from retrievalkit.experiments import embedding as E
from retrievalkit.experiments import finetune as F
from retrievalkit.experiments import hashing as H
from retrievalkit.experiments import offtheshelf
from retrievalkit.experiments import rerank as R
from retrievalkit.finetune import trainer as T
from retrievalkit.rows import l2n
from retrievalkit.train.heads import LearnedAttention, LearnedProjection


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh artifacts cache beside the real feature caches (symlinked, as the reproduce checks do)."""
    real, fresh = config.cache_dir(), tmp_path / "cache"
    fresh.mkdir()
    for name in ("features", "sift"):
        (real / name).mkdir(parents=True, exist_ok=True)
        (fresh / name).symlink_to(real / name)
    monkeypatch.setenv("RETRIEVALKIT_CACHE", str(fresh))
    return fresh


def forbid(monkeypatch, owner, name="fit"):
    """Make ``owner.name`` fail: any call means the cached artefact was not used."""
    def fail(*args, **kwargs):
        raise AssertionError(f"{owner.__name__}.{name} ran although its artefact is cached")
    monkeypatch.setattr(owner, name, fail)


def uncached(monkeypatch):
    """Route every ``artifacts.cached`` call straight to its compute: a fresh fit, no disk round trip."""
    monkeypatch.setattr(artifacts, "cached", lambda kind, key, compute, **kw: compute())


def kinds(cache) -> set[str]:
    return {row["kind"] for row in artifacts.list_cached(cache)}


# --------------------------------------------------------------------------- hashing encoders
def _hash_data(seed=0, n=200) -> H.HashData:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(10), n // 10)
    x = l2n(rng.standard_normal((10, 32))[y] + 0.5 * rng.standard_normal((n, 32))).astype(np.float32)
    rows = np.arange(0, n, 10)
    return H.HashData("synthetic", x, y, x, x[rows], label_ground_truth(y, rows), None, "synthetic")


@pytest.mark.parametrize("method,cls", [("itq", hashing.ITQ), ("deep", hashing.DeepHash)])
def test_a_fitted_hash_encoder_is_cached(cache, monkeypatch, method, cls):
    data = _hash_data()
    first = H.fit_encoder(H.make_encoder(method, 16, small=True), data)
    assert "hash_encoder" in kinds(cache)
    assert artifacts.seconds("hash_encoder", H._encoder_key(first, data), version=H.ENCODER_VERSION) > 0
    with monkeypatch.context() as m:
        uncached(m)
        fresh = H.fit_encoder(H.make_encoder(method, 16, small=True), data)
    np.testing.assert_array_equal(first.encode(data.x_db), fresh.encode(data.x_db))
    forbid(monkeypatch, cls)
    again = H.fit_encoder(H.make_encoder(method, 16, small=True, progress=True), data)  # progress: not a setting
    np.testing.assert_array_equal(again.encode(data.x_db), fresh.encode(data.x_db))
    with pytest.raises(AssertionError, match="ran although"):
        H.fit_encoder(H.make_encoder(method, 16, small=True, seed=1), data)
    with pytest.raises(AssertionError, match="ran although"):
        H.fit_encoder(H.make_encoder(method, 16, small=True), _hash_data(seed=1))


def test_code_length_reports_the_recorded_fit_time(cache, monkeypatch):
    data = _hash_data()
    first, _ = H.code_length(data, bits=(16,), methods=("itq",), pr_bits=None)
    forbid(monkeypatch, hashing.ITQ)
    again, _ = H.code_length(data, bits=(16,), methods=("itq",), pr_bits=None)
    pd.testing.assert_frame_equal(first.drop(columns="search_s"), again.drop(columns="search_s"))
    assert first.loc[first["method"] == "itq", "fit_s"].iloc[0] > 0


# --------------------------------------------------------------------------- codebooks, idf
def _coil_with_local(seed=0) -> offtheshelf.Coil:
    """A Coil whose learning-split conv columns are synthetic (nothing is read from disk)."""
    coil = offtheshelf.Coil(small=True, progress=False)
    rng = np.random.default_rng(seed)
    coil.memo["local", "learn", "conv"] = emb.LocalDescriptors(
        l2n(rng.standard_normal((600, 16))).astype(np.float32), np.repeat(np.arange(60), 10), 60)
    return coil


def test_codebooks_and_idf_are_cached(cache, monkeypatch):
    local = _coil_with_local().memo["local", "learn", "conv"]
    with monkeypatch.context() as m:
        uncached(m)
        coil = _coil_with_local()
        fresh = {"bow": E.encoder(coil, "conv", "bow", 8), "fv": E.encoder(coil, "conv", "fv", 4)}
    coil = _coil_with_local()
    first = {"bow": E.encoder(coil, "conv", "bow", 8), "fv": E.encoder(coil, "conv", "fv", 4)}
    assert {"codebook", "bow_idf"} <= kinds(cache)
    for owner, name in ((emb.KMeansCodebook, "fit"), (emb.GMMCodebook, "fit"), (emb.BoW, "fit_idf")):
        forbid(monkeypatch, owner, name)
    coil = _coil_with_local()  # a new process: an empty memo
    again = {"bow": E.encoder(coil, "conv", "bow", 8), "fv": E.encoder(coil, "conv", "fv", 4)}
    for method in ("bow", "fv"):
        np.testing.assert_array_equal(first[method].encode(local), fresh[method].encode(local))
        np.testing.assert_array_equal(again[method].encode(local), fresh[method].encode(local))
    np.testing.assert_array_equal(again["bow"].idf_, fresh["bow"].idf_)
    assert again["bow"].n_learning_images_ == 60
    with pytest.raises(AssertionError, match="ran although"):
        E.codebook(_coil_with_local(), "conv", "kmeans", 16)
    with pytest.raises(AssertionError, match="ran although"):
        E.codebook(_coil_with_local(seed=1), "conv", "gmm", 4)


# --------------------------------------------------------------------------- SMALL COIL-100: column PCA, attention head, FC projections
@pytest.fixture(scope="module")
def small_coil():
    return offtheshelf.Coil(small=True, progress=False)


class _OtherFeatures:
    """The same features under another cache key: what changed learning images look like to a key."""

    def __init__(self, features):
        self.features, self.key = features, "other-" + features.key

    def __getattr__(self, name):
        return getattr(self.features, name)


def test_column_pca_and_attention_head_are_cached(cache, monkeypatch, small_coil):
    def run(coil):
        pca = E.column_pca(coil)
        head, history = E.train_head(coil, epochs=1, hidden=16)
        maps = E.deep_maps(coil, "test")[:40]
        return pca.transform(np.eye(1280, dtype=np.float32)[:50]), E.attention_descriptors(maps, "learned", head=head), history

    with monkeypatch.context() as m:
        uncached(m)
        fresh = run(offtheshelf.Coil(small=True, progress=False))
    first = run(offtheshelf.Coil(small=True, progress=False))
    assert {"column_pca", "attention_head"} <= kinds(cache)
    forbid(monkeypatch, whitening.PCA)
    forbid(monkeypatch, LearnedAttention)
    again = run(offtheshelf.Coil(small=True, progress=False))
    for got in (first, again):
        np.testing.assert_array_equal(got[0], fresh[0])
        np.testing.assert_array_equal(got[1], fresh[1])
        pd.testing.assert_frame_equal(got[2].drop(columns="train_s"), fresh[2].drop(columns="train_s"))
    assert again[2]["train_s"].iloc[0] == first[2]["train_s"].iloc[0] > 0  # the recorded training time
    for changed in (lambda c: E.column_pca(c, dim=64), lambda c: E.train_head(c, epochs=1, hidden=8)):
        with pytest.raises(AssertionError, match="ran although"):
            changed(offtheshelf.Coil(small=True, progress=False))
    original = E.deep_features
    monkeypatch.setattr(E, "deep_features", lambda coil, split: _OtherFeatures(original(coil, split)))
    with pytest.raises(AssertionError, match="ran although"):
        E.train_head(offtheshelf.Coil(small=True, progress=False), epochs=1, hidden=16)


def test_dimension_projections_are_cached(cache, monkeypatch, small_coil):
    def run(**kw):
        return offtheshelf.dimension(offtheshelf.Coil(small=True, progress=False), dims=(16,), **{"epochs": 1, **kw})

    with monkeypatch.context() as m:
        uncached(m)
        fresh = run()
    first = run()
    assert "fc_projection" in kinds(cache)
    forbid(monkeypatch, LearnedProjection)
    again = run()
    for got in (first, again):
        pd.testing.assert_frame_equal(got.drop(columns="train_s"), fresh.drop(columns="train_s"))
        assert got.attrs["per_query"] == fresh.attrs["per_query"]
    assert again["train_s"].equals(first["train_s"])
    with pytest.raises(AssertionError, match="ran although"):
        run(epochs=2)


# --------------------------------------------------------------------------- fine-tuning runs
def _finetune_data(seed=0) -> F.FinetuneData:
    rng = np.random.default_rng(seed)

    def part(objects, tag):
        labels = np.repeat(objects, 8)
        maps = rng.random((len(labels), 192, 4, 4), dtype=np.float32)
        return T.TrainData(maps, labels, np.array([f"{tag}{i}" for i in range(len(labels))]))

    return F.FinetuneData(part(np.arange(1, 7), "train"), part(np.arange(7, 9), "val"), part(np.arange(51, 53), "test"),
                          None, True)


@pytest.mark.parametrize("method", ["joint", "regression", "kmeans"])
def test_a_fine_tuning_run_is_cached(cache, monkeypatch, method):
    data = _finetune_data()

    def outputs(result):
        x = result.describe(data.test.maps)
        history = [{k: v for k, v in h.items() if k != "seconds"} for h in result.history]  # timing aside
        return x, result.scores(x[:4], x), history, result.best_epoch

    with monkeypatch.context() as m:
        uncached(m)
        fresh, fresh_extra = F.run_method(data, method)
    first, first_extra = F.run_method(data, method)
    assert "finetune" in kinds(cache)
    forbid(monkeypatch, T, "finetune")
    again, again_extra = F.run_method(data, method)
    assert fresh_extra == first_extra == again_extra
    for got in (first, again):
        for a, b in zip(outputs(got), outputs(fresh)):
            np.testing.assert_equal(a, b)
        assert got.seen_ids == fresh.seen_ids and got.config == fresh.config
    with pytest.raises(AssertionError, match="ran although"):
        F.run_method(data, method, cfg=replace(F.SMALL_CONFIG, seed=1))
    with pytest.raises(AssertionError, match="ran although"):
        F.run_method(_finetune_data(seed=1), method)


# --------------------------------------------------------------------------- re-ranking selection
GRIDS = {"qe_ks": (1, 3), "dba_ks": (1, 3), "graph_ks": (5,), "alphas": (0.9,)}


def _learn_split(seed=0) -> R.Split:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(8), 12)
    x = l2n(rng.standard_normal((8, 16))[labels] + 0.7 * rng.standard_normal((96, 16))).astype(np.float32)
    rows = np.arange(0, 96, 6)
    return R.Split("synthetic", x, rows, label_ground_truth(labels, rows))


def test_the_rerank_selection_is_cached(cache, monkeypatch):
    learn = _learn_split()
    with monkeypatch.context() as m:
        uncached(m)
        fresh = R.select_params(learn, **GRIDS)
    first = R.select_params(learn, **GRIDS)
    assert "rerank_params" in kinds(cache)
    forbid(monkeypatch, R, "_search")
    again = R.select_params(learn, **GRIDS)
    for chosen, grid in (first, again):
        assert chosen == fresh[0]
        pd.testing.assert_frame_equal(grid, fresh[1])
    with pytest.raises(AssertionError, match="ran although"):
        R.select_params(learn, **{**GRIDS, "graph_ks": (5, 10)})
    with pytest.raises(AssertionError, match="ran although"):
        R.select_params(_learn_split(seed=1), **GRIDS)
