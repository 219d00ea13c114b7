"""The off-the-shelf experiments on a tiny COIL-100 slice, and the learned FC projection."""
import numpy as np
import pytest

from retrievalkit import evaluate, whitening
from retrievalkit.train import heads
from retrievalkit.experiments import offtheshelf


@pytest.fixture(scope="module")
def tiny(coil_home, tmp_path_factory, monkeypatch_module):
    """3 test and 3 learning objects at 64 px: enough to run every experiment end to end in seconds."""
    monkeypatch_module.setenv("RETRIEVALKIT_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch_module.setattr(offtheshelf, "SMALL_TEST", (51, 52, 53))
    monkeypatch_module.setattr(offtheshelf, "SMALL_LEARN", (1, 2, 3))
    monkeypatch_module.setattr(offtheshelf, "SMALL_MULTIPASS_OBJECTS", (51, 52))
    monkeypatch_module.setattr(offtheshelf, "SMALL_SIDE", 64)
    return offtheshelf.Coil(small=True, data_home=coil_home, progress=False)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_aggregation_rows_cover_every_pooling_raw_and_whitened(tiny):
    df = offtheshelf.aggregation(tiny)
    main = df[df["protocol"] == "all"]
    assert set(main["whitening"]) == {"none", "pca_w"}
    assert {"mac", "spoc", "gem", "rmac", "crow", "cam"} <= set(main["pooling"])
    assert main["mAP"].between(0, 1).all() and main["queries"].eq(12).all()
    depth = offtheshelf.depth(df)
    assert set(depth["pooling"]) == {"mac", "gem"}


def test_whitening_learns_only_from_the_learning_split(tiny, monkeypatch):
    seen = []
    original = whitening.PCAWhitening.fit

    def spy(self, X, *args, **kwargs):
        seen.append(np.asarray(X).shape[0])
        return original(self, X, *args, **kwargs)

    monkeypatch.setattr(whitening.PCAWhitening, "fit", spy)
    offtheshelf.aggregation(tiny)
    assert seen and set(seen) == {tiny.split("learn").n_db}


def test_layers_and_multipass_tables(tiny):
    layers = offtheshelf.layers(tiny)
    assert {"conv", "fc", "layer fusion"} <= set(layers["kind"])
    mp = offtheshelf.multipass(tiny, schemes=("grid",), side=64)
    assert list(mp[mp["protocol"] == "all"]["variant"]) == ["single pass", "multi-scale", "multi-pass grid"]
    assert (mp["ms_per_image"] > 0).all()


def test_dimension_curve_has_both_recipes(tiny):
    df = offtheshelf.dimension(tiny, dims=(16, 2048), epochs=2)
    main = df[df["protocol"] == "all"]
    assert set(main["recipe"]) == {"native", "pca_w", "fc_learned"}
    assert set(main[main["recipe"] == "fc_learned"]["dim"]) == {16, 2048}
    assert set(main[main["recipe"] == "pca_w"]["dim"]) == {16}  # PCA-w cannot go above the native width


def test_learned_projection_learns_classes_and_selects_on_validation():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((6, 20))
    labels = np.repeat(np.arange(6), 30)
    x = (centers[labels] + 1.5 * rng.standard_normal((180, 20))).astype(np.float32)
    train, val = labels < 4, labels >= 4
    proj = heads.LearnedProjection(32, epochs=15, lr=1e-2).fit(x[train], labels[train], x[val], labels[val])
    assert proj.transform(x).shape == (180, 32)
    assert proj.history_[-1]["loss"] < proj.history_[0]["loss"]
    best = max(proj.history_, key=lambda r: r["val_mAP"])
    assert proj.best_epoch_ == best["epoch"]
    # the kept weights are the best epoch's, not the last one's
    assert evaluate.leave_one_out_map(proj.transform(x[val]), labels[val]) == pytest.approx(best["val_mAP"])
    # without validation data the last epoch is kept; it separates its training classes better than raw vectors
    last = heads.LearnedProjection(32, epochs=15, lr=1e-2).fit(x[train], labels[train])
    assert last.best_epoch_ == 15
    unit = x[train] / np.linalg.norm(x[train], axis=1, keepdims=True)
    assert evaluate.leave_one_out_map(last.transform(x[train]), labels[train]) > evaluate.leave_one_out_map(unit, labels[train])


def test_projection_must_be_fitted_first():
    with pytest.raises(whitening.NotFittedError, match="not fitted"):
        heads.LearnedProjection(8).transform(np.zeros((2, 3)))


def test_projection_module_moved_to_train_heads_keeps_its_old_name():
    import retrievalkit as rk

    assert rk.train.heads.LearnedProjection is heads.LearnedProjection
    assert rk.projection is heads  # the lazy alias for code written before the move
