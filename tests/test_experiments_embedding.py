"""Embedding and attention experiments (SMALL mode): tidy outputs, learning-split-only fits, the heat-map panel.

The protocol test spies on every fit (column PCA, k-means, GMM, idf, PCA-whitening, the attention head)
and checks, row by row, that each one saw only rows derived from LEARNING-split images.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from retrievalkit import artifacts, whitening
from retrievalkit import embedding as emb
from retrievalkit.experiments import embedding as E
from retrievalkit.experiments.offtheshelf import Coil
from retrievalkit.train.heads import LearnedAttention

TINY_GRID = {"bow": (16,), "vlad": (4,), "fv": (4,)}
METRICS = {"protocol", "mAP", "mAP_finite", "mP@10"}


def _rowset(X) -> set[bytes]:
    X = np.ascontiguousarray(np.asarray(X, dtype=np.float32))
    return {r.tobytes() for r in X.reshape(len(X), -1)}


@pytest.fixture(scope="module")
def spied(tmp_path_factory):
    """Run the SMALL experiments once with every fit spied on; return (coil, frames, calls)."""
    calls = []
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("artifacts")  # an empty artifacts cache: every fit really runs
    mp.setattr(artifacts, "artifacts_root", lambda cache=None: root)

    def spy(owner, name, what, pick):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            calls.append((what, pick(*args, **kwargs)))
            return original(*args, **kwargs)

        mp.setattr(owner, name, wrapper)

    rows = lambda X: X.descriptors if isinstance(X, emb.LocalDescriptors) else np.asarray(X)  # noqa: E731
    spy(emb.KMeansCodebook, "fit", "kmeans", lambda self, X, split=None: (rows(X).copy(), split))
    spy(emb.GMMCodebook, "fit", "gmm", lambda self, X, split=None: (rows(X).copy(), split))
    spy(emb.BoW, "fit_idf", "idf", lambda self, local, *a, split=None, **k: (local, split))
    spy(whitening.PCA, "fit", "pca", lambda self, X, y=None: (np.asarray(X).copy(), None))
    spy(whitening.PCAWhitening, "fit", "pcaw", lambda self, X, y=None: (np.asarray(X).copy(), None))
    spy(LearnedAttention, "fit", "attention",
        lambda self, maps, labels, maps_val=None, labels_val=None: ((maps, labels, maps_val, labels_val), None))
    try:
        coil = Coil(small=True, progress=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frames = {
                "sizes": E.codebook_sizes(coil, k_grid=TINY_GRID),
                "table": E.deep_vs_handcrafted(coil, table_k={"bow": 16, "vlad": 4, "fv": 4}, whiten_dim=64),
                "attention": E.attention(coil, epochs=1, hidden=32),
            }
    finally:
        mp.undo()
    return coil, frames, calls


def test_codebook_sizes_columns_and_rows(spied):
    _, frames, _ = spied
    df = frames["sizes"]
    assert {"source", "method", "K", "dim", "bytes_per_image", "local_per_image"} | METRICS <= set(df.columns)
    main = df[df["protocol"] == "all"]
    assert len(main) == 6  # 2 sources × 3 embeddings × 1 K
    assert set(main["source"]) == {"conv", "sift"} and set(main["method"]) == {"bow", "vlad", "fv"}
    assert set(df["protocol"]) == {"all", "easy", "hard"}
    dims = main.set_index(["source", "method"])["dim"]
    assert dims[("conv", "bow")] == 16 and dims[("conv", "vlad")] == 4 * E.COLUMN_DIM
    assert dims[("sift", "fv")] == 2 * 4 * 128
    assert main["mAP"].between(0, 1).all() and (main["mAP"] > 0.1).all()


def test_deep_vs_handcrafted_table(spied):
    _, frames, _ = spied
    df = frames["table"]
    main = df[df["protocol"] == "all"]
    assert {"family", "descriptor", "embedding", "method", "dim"} | METRICS <= set(df.columns)
    assert set(main["family"]) == {"deep", "handcrafted"}
    assert "colour histogram · global" in set(main["method"])
    for source in ("RootSIFT", "conv columns"):
        assert {f"{source} · {m}" for m in ("BOW", "VLAD", "FV", "VLAD + PCA_w", "FV + PCA_w")} <= set(main["method"])
    assert main["method"].is_unique
    assert (main.loc[main["embedding"].str.contains("PCA_w"), "dim"] <= 64).all()


def test_deep_vs_handcrafted_keeps_each_methods_ap_per_query(spied):
    """The verdicts' paired bootstrap needs every query's AP; their mean is the table's mAP."""
    _, frames, _ = spied
    main = frames["table"][frames["table"]["protocol"] == "all"].set_index("method")
    per_query = pd.DataFrame(frames["table"].attrs["per_query"])
    assert set(per_query["method"]) == set(main.index)
    for method, part in per_query.groupby("method"):
        assert list(part["query"]) == list(range(int(main.loc[method, "queries"])))
        assert part["AP"].mean() == pytest.approx(main.loc[method, "mAP"], abs=1e-12)


def test_attention_variants_and_history(spied):
    _, frames, _ = spied
    df = frames["attention"]
    assert list(df[df["protocol"] == "all"]["variant"]) == [v for v, _ in E.ATTENTION_VARIANTS]
    assert (df["dim"] == 1280).all() and df["mAP"].between(0, 1).all()
    history = df.attrs["history"]
    assert list(history["epoch"]) == [0, 1] and {"loss", "val_mAP"} <= set(history.columns)


def test_every_fit_sees_only_learning_split_rows(spied):
    coil, _, calls = spied
    kinds = {what for what, _ in calls}
    assert {"kmeans", "gmm", "idf", "pca", "pcaw", "attention"} <= kinds

    learn_maps, test_maps = E.deep_maps(coil, "learn"), E.deep_maps(coil, "test")
    columns = {s: _rowset(emb.conv_columns(np.asarray(m), normalize=True).descriptors)
               for s, m in (("learn", learn_maps), ("test", test_maps))}
    local = {(s, src): _rowset(E.local_descriptors(coil, s, src).descriptors)
             for s in ("learn", "test") for src in E.SOURCES}
    # PCA-whitening inputs: pooled GeM rows and embeddings, per split
    pooled = {s: _rowset(E.deep_features(coil, s).get(E.LAYER, "gem")) for s in ("learn", "test")}
    for key, X in coil.memo.items():
        if key[0] == "encoded":
            pooled[key[1]] |= _rowset(X)

    def only_learn(rows, learn, test):
        rows = _rowset(rows)
        assert rows and rows <= learn, "a fit received rows that are not learning-split rows"
        assert not (rows & (test - learn)), "a fit received test-split rows"

    for what, (payload, split) in calls:
        if what in ("kmeans", "gmm"):
            assert split == "learn"
            learn = local[("learn", "conv")] | local[("learn", "sift")]
            only_learn(payload, learn, local[("test", "conv")] | local[("test", "sift")])
        elif what == "idf":
            assert split == "learn" and payload.n_images == len(coil.split("learn").db_paths)
            only_learn(payload.descriptors, local[("learn", "conv")] | local[("learn", "sift")],
                       local[("test", "conv")] | local[("test", "sift")])
        elif what == "pca":
            only_learn(payload, columns["learn"], columns["test"])
        elif what == "pcaw":
            only_learn(payload, pooled["learn"], pooled["test"])
        elif what == "attention":
            maps, labels, maps_val, labels_val = payload
            learn_objects = set(np.unique(coil.split("learn").db_labels))
            assert set(np.unique(labels)) | set(np.unique(labels_val)) <= learn_objects
            assert not set(np.unique(labels)) & set(np.unique(labels_val))  # validation objects held out
            assert len(maps) + len(maps_val) == len(learn_maps)
            only_learn(maps, _rowset(learn_maps), _rowset(test_maps))
            only_learn(maps_val, _rowset(learn_maps), _rowset(test_maps))


def test_attention_panel_one_axis_per_image_and_kind():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from retrievalkit import figures_embedding as fe

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    maps = {k: rng.random((3, 5, 5)).astype(np.float32) for k in ("crow", "sum", "cam", "learned")}
    fig = fe.attention_panel(images, maps)
    assert len(fig.axes) == 3 * 4
    assert [ax.get_title() for ax in fig.axes[:4]] == [fe.KIND_LABELS[k] for k in maps]
    plt.close(fig)
    with pytest.raises(ValueError, match="one map per image"):
        fe.attention_panel(images[:2], maps)


def test_attention_examples_real_maps(spied):
    coil, _, _ = spied
    images, maps = E.attention_examples(coil, n=2, kinds=("crow", "sum", "cam"), epochs=1, hidden=32)
    assert len(images) == 2 and set(maps) == {"crow", "sum", "cam"}
    h, w = E.deep_maps(coil, "test").shape[2:]
    assert all(m.shape == (2, h, w) and (m >= 0).all() for m in maps.values())


def test_sift_cache_is_keyed_by_the_opencv_build(monkeypatch):
    import cv2

    paths = ["a.png", "b.png"]
    first = E._sift_cache_path(paths, "detect")
    monkeypatch.setattr(cv2, "__version__", cv2.__version__ + ".other")
    assert E._sift_cache_path(paths, "detect") != first
    assert E._sift_cache_path(paths, "dense") != E._sift_cache_path(paths, "detect")
