"""The instance-retrieval step on the real lab packs, at a tiny input size (one network)."""
import numpy as np
import pytest

from conftest import _fetch_from_mirror
from retrievalkit.experiments import instance as I


@pytest.fixture(scope="module")
def sets(tmp_path_factory, shared_mirror):
    """The three packs fetched through the data hub into one home; features cached in a fresh folder."""
    home = tmp_path_factory.mktemp("lab_home")
    for name in I.DATASETS:
        _fetch_from_mirror(name, home, shared_mirror)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RETRIEVALKIT_CACHE", str(home / "cache"))
        yield I.Sets(small=True, data_home=home, progress=False, input_side=96, only=("mobilenet_v2",))


def test_queries_reuse_database_rows_only_when_they_are_uncropped_database_images(sets):
    db, q, exclude = sets.rows("sop_kettles_fans", "mobilenet_v2")
    ds = sets.dataset("sop_kettles_fans")
    np.testing.assert_array_equal(exclude, ds.query_db_index)
    np.testing.assert_array_equal(q, db[exclude])
    for name in ("smvs_dvd", "rparis6k_mini"):  # separate phone photos / cropped queries
        db, q, exclude = sets.rows(name, "mobilenet_v2")
        assert exclude is None and len(q) == sets.dataset(name).n_queries


def test_within_network_depth_curve_has_one_row_per_block_and_dataset(sets):
    curve = I.depth_within(sets, networks=("mobilenet_v2",))
    blocks = [f"block{i}" for i in range(1, 18)]
    for name in I.DATASETS:
        part = curve[(curve["dataset"] == name) & (curve["protocol"] == ("medium" if name == "rparis6k_mini" else "all"))]
        assert part["block"].tolist() == blocks
        assert part["block_depth"].tolist() == list(range(1, 18))
        assert part["mAP"].between(0, 1).all()
    # the curve is not flat: the depth of the tapped block changes what is retrieved
    assert curve["mAP"].std() > 0.01


def test_smvs_is_scored_overall_and_per_camera(sets):
    rows = I.offtheshelf(sets)
    smvs = rows[(rows["dataset"] == "smvs_dvd") & (rows["pooling"] == "gem")]
    assert sorted(smvs["protocol"]) == sorted(["all", "Canon", "Droid", "E63", "Palm"])
    overall = smvs.set_index("protocol")
    per_camera = overall.drop("all")
    # 100 queries per camera: the overall mAP is the mean of the four cameras'
    assert overall.loc["all", "mAP"] == pytest.approx(per_camera["mAP"].mean(), abs=1e-9)
    assert (per_camera["queries"] == 100).all()


def test_whitening_and_reranking_learn_on_sop_learning_products_only(sets, monkeypatch):
    learned_on = []
    real = I.pca_whiten

    def spy(learn, test, dim=None):
        learned_on.append(learn)
        return real(learn, test, dim)

    monkeypatch.setattr(I, "pca_whiten", spy)
    chosen = []
    real_select = I.select_params
    monkeypatch.setattr(I, "select_params", lambda split, **kw: (chosen.append(split), real_select(split, **kw))[1])
    frame, params = I.pipeline(sets, {"network": "mobilenet_v2", "pooling": "gem"})
    x_learn = sets.rows(I.LEARN, "mobilenet_v2")[0]
    learn_rows = {r.tobytes() for r in x_learn}
    assert learned_on and all({r.tobytes() for r in a} <= learn_rows for a in learned_on)
    assert [s.name for s in chosen] == [I.LEARN]
    assert set(frame["stage"]) == {"off-the-shelf", "+ PCA-w", "+ αQE", "+ diffusion"}
    assert {"qe_k", "graph_k", "alpha"} <= set(params)


def test_sop_finetuning_learns_on_learning_products_and_scores_test_products(sets):
    data = I.sop_finetune_data(sets)
    train, val, test = (set(np.unique(part.labels)) for part in (data.train, data.val, data.test))
    assert train and val and test
    assert not (train & val) and not ((train | val) & test)  # whole products, never shared
    frame = I.finetune_sop(sets, ("triplet",))
    rows = frame[frame["protocol"] == "all"].set_index("method")
    assert list(rows.index) == ["off-the-shelf", "triplet"]
    assert 0 < rows.loc["triplet", "best_val_mAP"] <= 1 and 0 < rows.loc["triplet", "mAP"] <= 1
    assert {r["method"] for r in frame.attrs["per_query"]} == {"off-the-shelf", "triplet"}


def test_rootsift_codebooks_learn_on_sop_learning_photos_only(sets, monkeypatch):
    from retrievalkit import artifacts
    from retrievalkit import embedding as emb

    fitted = []
    for cls in (emb.KMeansCodebook, emb.GMMCodebook):
        real_fit = cls.fit
        monkeypatch.setattr(cls, "fit", lambda self, X, _fit=real_fit, **kw: (fitted.append(X), _fit(self, X, **kw))[1])
    monkeypatch.setattr(artifacts, "cached", lambda kind, key, compute, version=0: compute())  # fit, do not read back
    monkeypatch.setattr(I, "DATASETS", ("rparis6k_mini",))  # cropped queries: their own SIFT
    frame = I.rootsift_embeddings(sets)
    learn = sets.dataset(I.LEARN)
    assert len(fitted) == 3 and all(x.n_images == learn.n_db for x in fitted)  # BoW and VLAD words, FV's GMM
    rows = frame[frame["dataset"] == "rparis6k_mini"]
    assert set(rows["stage"]) == {"RootSIFT-BoW", "RootSIFT-VLAD", "RootSIFT-FV"}
    assert set(rows["protocol"]) == {"easy", "medium", "hard"} and rows["mAP"].between(0, 1).all()
    assert {r["query"] for r in frame.attrs["per_query"]} == set(range(sets.dataset("rparis6k_mini").n_queries))


def test_dimension_whitens_with_sop_learning_rows_below_their_rank(sets, monkeypatch):
    monkeypatch.setattr(I, "DATASETS", ("smvs_dvd",))
    best = {"network": sets.networks[0], "pooling": "gem"}
    learned = []
    real = I.pca_whiten
    monkeypatch.setattr(I, "pca_whiten", lambda learn, x, dim: (learned.append(learn.shape), real(learn, x, dim))[1])
    frame = I.dimension(sets, best, dims=(8, 16, 10_000))
    n_learn = sets.dataset(I.LEARN).n_db
    assert learned and all(shape[0] == n_learn for shape in learned)
    rows = frame[frame["protocol"] == "all"]
    assert sorted(rows.loc[rows["recipe"] == "pca_w", "dim"]) == [8, 16]  # 10,000 is above the rank: skipped
    assert rows.loc[rows["recipe"] == "native", "dim"].item() > 16 and rows["mAP"].between(0, 1).all()
