"""Fine-tuning experiments on COIL-100: every §2.4 loss, before vs after, plus unsupervised mining.

Survey §2.4 (Eqs. 2.13–2.19, Figures 2.9–2.11) and Table 2.3; taught in
notebooks/09_supervised_finetuning and notebooks/10_unsupervised_finetuning. Functions return
tidy DataFrames; :mod:`retrievalkit.figures_finetune` draws them.

Protocol. EfficientNet-Lite0 at 128 px, frozen up to ``stage6`` (maps cached once per image);
the tail (stage7 + head conv + GeM p) is trained. The LEARNING split (objects 1–50) is cut by
whole objects: objects 1–40 train, objects 41–50 validate (early stopping, best epoch). The test
split (objects 51–100; 200 queries, each a database row excluded from its own ranking) is only
scored — before (the same tail with its ImageNet weights: the off-the-shelf GeM descriptor at
128 px) and after fine-tuning. The trainer is handed the test split's ids and objects and refuses
any overlap. Unsupervised methods read no label; they keep their last epoch (validation mAP is
only recorded, to draw the curve).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import pandas as pd

from .. import artifacts, evaluate
from ..finetune import trainer as T
from ..finetune import unsupervised as U
from .offtheshelf import Coil

VAL_FRACTION = 0.2  # of the learning objects, held out whole (objects 41–50 in full mode)
# 12 epochs: with 4, validation mAP (learning objects 41–50) was still rising at the last epoch for
# every loss; early stopping (patience 3) on that split decides where each run ends.
FULL_CONFIG = T.FinetuneConfig(epochs=12, queries=160, negatives=4, pool=1500, class_batches=20)
SMALL_CONFIG = T.FinetuneConfig(epochs=1, queries=16, negatives=3, pool=160, class_batches=2, batch_size=32)


class Method(NamedTuple):
    """One fine-tuning method: its loss (a key of ``losses.LOSSES``), and where the survey has it."""

    name: str
    supervision: str
    loss: str
    loss_kwargs: dict
    equation: str
    survey_loss: str  # the loss's name in the survey's Table 2.3


METHODS = (
    Method("ce", "supervised", "ce", {}, "2.13", "CE Loss"),
    Method("regression", "supervised", "regression", {"margin": 0.1}, "2.15", "Regression Loss"),
    Method("contrastive", "supervised", "contrastive", {"margin": 0.7}, "2.16", "Siamese Loss"),
    Method("triplet", "supervised", "triplet", {"margin": 0.1}, "2.17", "Triplet Loss"),
    Method("joint", "supervised", "joint", {"alpha": 1.0, "beta": 0.1}, "2.18", "Triplet Loss"),
    Method("double_margin", "supervised", "double_margin", {"m1": 0.1, "m2": 0.7}, "2.19", "Siamese Loss"),
    Method("ap", "supervised", "ap", {"bins": 25}, "AP loss", "AP Loss"),
    Method("manifold", "unsupervised", "contrastive", {"margin": 0.7}, "2.16", "Siamese Loss"),
    Method("kmeans", "unsupervised", "triplet", {"margin": 0.1}, "2.17", "Triplet Loss"),
)
EMBED_OBJECTS = 6  # test objects drawn in the before/after embedding plot
FEATURE = "EfficientNet-Lite0 GeM (stage7+head fine-tuned, 128 px)"


@dataclass
class FinetuneData:
    """Trunk maps of the training / validation parts of the learning split and of the test split."""

    train: T.TrainData
    val: T.TrainData
    test: T.TrainData
    test_dataset: object
    small: bool


def finetune_data(coil: Coil, val_fraction: float = VAL_FRACTION) -> FinetuneData:
    """Cached frozen-trunk maps; validation = the last ``val_fraction`` of the learning objects, held out whole."""
    learn = T.trunk_data(coil.split("learn"), progress=coil.progress)
    test = T.trunk_data(coil.split("test"), progress=coil.progress)
    objects = np.unique(learn.labels)
    val_objects = objects[-max(1, int(round(val_fraction * len(objects)))):]
    is_val = np.isin(learn.labels, val_objects)
    return FinetuneData(learn.subset(np.flatnonzero(~is_val)), learn.subset(np.flatnonzero(is_val)), test,
                        coil.split("test"), coil.small)


def test_scores(result: T.FinetuneResult, data: FinetuneData, per_query: list | None = None,
                key: dict | None = None) -> list[dict]:
    """COIL-100 test protocol (all / easy / hard) on the fine-tuned descriptors (or pair scores).

    ``per_query`` receives ``{**key, "query", "AP"}`` rows (protocol "all") for the verdicts' paired bootstrap.
    """
    from .offtheshelf import query_aps

    x = result.describe(data.test.maps)
    q = np.asarray(data.test_dataset.query_db_index)
    s = result.scores(x[q], x)
    ids = np.argsort(-s, axis=1, kind="stable")
    if per_query is not None:
        per_query += query_aps(ids, data.test_dataset, key)
    return evaluate.evaluate(ids, data.test_dataset)


def _base_config(small: bool) -> T.FinetuneConfig:
    return SMALL_CONFIG if small else FULL_CONFIG


RUN_VERSION = 1  # of the cached fine-tuning runs: bump when training changes what it learns


def run_method(data: FinetuneData, method: str, cfg: T.FinetuneConfig | None = None, progress=None,
               mining: dict | None = None, kmeans_k: int | None = None):
    """Train one row of :data:`METHODS`; returns ``(result, extra)`` (extra: mining statistics).

    Trained once per learning data, method and settings (:mod:`retrievalkit.artifacts`: the weights,
    history, best epoch and extra are read back on later calls, by ``reproduce`` and the notebooks alike).
    """
    m = method_named(method)
    cfg = replace(cfg or _base_config(data.small), loss=m.loss, loss_kwargs=dict(m.loss_kwargs))
    if m.supervision == "unsupervised":
        cfg = replace(cfg, select="last")
    key = _run_key(data, method, cfg, mining, kmeans_k)

    def train() -> dict:
        result, extra = _train(data, method, cfg, progress, mining, kmeans_k)
        return {"model": result.model.state_dict(), "loss": result.loss_module.state_dict(),
                "num_classes": next((mod.num_classes for mod in result.loss_module.modules()
                                     if hasattr(mod, "num_classes")), 0), "history": result.history,
                "best_epoch": result.best_epoch, "seen_ids": sorted(result.seen_ids), "extra": extra}

    run = artifacts.cached("finetune", key, train, version=RUN_VERSION)
    model = T.TailNet.for_config(cfg)
    model.load_state_dict(run["model"])
    loss = T.L.build(cfg.loss, model.dim, run["num_classes"], **cfg.loss_kwargs)
    loss.load_state_dict(run["loss"])
    return T.FinetuneResult(model.eval(), loss.eval(), run["history"], run["best_epoch"], set(run["seen_ids"]),
                            cfg), run["extra"]


def _run_key(data: FinetuneData, method: str, cfg: T.FinetuneConfig, mining, kmeans_k) -> dict:
    parts = (data.train.maps, data.train.labels, data.val.maps, data.val.labels)
    return {"data": artifacts.fingerprint(*parts), "method": method, "config": T.config_key(cfg),
            "mining": mining or {}, "kmeans_k": kmeans_k}


def _train(data: FinetuneData, method: str, cfg: T.FinetuneConfig, progress, mining, kmeans_k):
    m = method_named(method)
    guard = {"forbidden_ids": data.test.ids, "forbidden_labels": data.test.labels}
    extra: dict = {}
    if m.supervision == "supervised":
        return T.finetune(data.train, data.val, cfg, progress=progress, **guard), extra
    blind = T.TrainData(data.train.maps, None, data.train.ids)  # no label beyond this line
    x0 = T.describe(T.TailNet(cfg.backbone, cfg.frozen), blind.maps)
    if method == "manifold":
        opts = dict(mining or {})
        anchors = np.sort(np.random.default_rng(cfg.seed).choice(len(blind), size=min(opts.pop("anchors", 800),
                                                                                          len(blind)), replace=False))
        mined = U.manifold_mining(x0, anchors, **opts)
        tuples = U.manifold_tuples(mined, cfg.queries, cfg.negatives)
        extra = mining_stats(mined, data.train.labels)  # labels read only to REPORT mining quality
        return T.finetune(blind, data.val, cfg, tuples=tuples, progress=progress, **guard), extra
    k = kmeans_k or (10 if data.small else 50)
    pseudo = U.kmeans_labels(x0, k, seed=cfg.seed)
    extra = {"clusters": k}
    # cluster ids are not object ids: comparing them with the test objects would refuse any k > 50
    # for no reason; the image-id guard (and the object guard on the validation part) still apply
    T.check_protocol([("validation", data.val)], None, data.test.labels)
    return T.finetune(T.TrainData(blind.maps, pseudo, blind.ids), data.val, cfg, progress=progress,
                      forbidden_ids=data.test.ids), extra


def method_named(name: str) -> Method:
    """The :data:`METHODS` row called ``name``, or a ValueError listing the valid names."""
    for m in METHODS:
        if m.name == name:
            return m
    raise ValueError(f"unknown fine-tuning method {name!r}; choose from {[m.name for m in METHODS]}")


def mining_stats(mined: U.ManifoldMining, labels: np.ndarray) -> dict:
    """How often mined positives / negatives really match the anchor's object (diagnostics only)."""
    pos = [labels[p] == labels[a] for a, p in zip(mined.anchors, mined.positives) if len(p)]
    neg = [labels[n] != labels[a] for a, n in zip(mined.anchors, mined.negatives) if len(n)]
    return {"pos_precision": float(np.mean(np.concatenate(pos))) if pos else np.nan,
            "neg_precision": float(np.mean(np.concatenate(neg))) if neg else np.nan}


def compare(coil: Coil, methods=None, progress=None, cfg: T.FinetuneConfig | None = None):
    """Before/after test mAP for every method; returns ``(scores, history, embedding)`` DataFrames.

    ``scores``: one row per method × protocol (``stage`` "before" / "after"), with ``best_epoch``,
    ``train_s``, ``s_per_epoch``. ``history``: loss and validation mAP per epoch per method.
    ``scores.attrs["per_query"]``: test AP per query per method (records). ``embedding``: 2-D PCA
    coordinates of a few test objects before and after the triplet loss.
    """
    data = finetune_data(coil)
    cfg = cfg or _base_config(coil.small)
    names = list(methods or [m.name for m in METHODS])
    for name in names:
        method_named(name)  # fail before any training on a misspelt name
    before = T.FinetuneResult(T.TailNet(cfg.backbone, cfg.frozen), T.L.TripletLoss(), [], 0, set(), cfg)
    rows, hist, results, pq = [], [], {}, []
    base = {"feature": FEATURE, "dim": before.model.dim, "train_images": len(data.train),
            "val_images": len(data.val)}
    for r in test_scores(before, data, pq, {"method": "off-the-shelf", "stage": "before"}):
        rows.append({"method": "off-the-shelf", "supervision": "none", "loss": "-", "equation": "-",
                     "survey_loss": "-", "stage": "before", **base, **r})
    for name in names:
        meta = method_named(name)
        result, extra = run_method(data, name, cfg, progress)
        seconds = artifacts.seconds("finetune", _run_key(data, name, result.config, None, None), version=RUN_VERSION)
        results[name] = result
        epochs = [h for h in result.history if h["epoch"] > 0]
        info = {"method": name, "supervision": meta.supervision, "loss": meta.loss, "equation": meta.equation,
                "survey_loss": meta.survey_loss,
                "stage": "after", **base, "best_epoch": result.best_epoch, "epochs_run": len(epochs),
                "train_s": seconds, "s_per_epoch": float(np.mean([h["seconds"] for h in epochs])) if epochs else 0.0,
                "gem_p": float(result.model.pool.p.detach()),
                "test_images_seen": len(result.seen_ids & set(map(str, data.test.ids))), **extra}
        rows += [{**info, **r} for r in test_scores(result, data, pq, {"method": name, "stage": "after"})]
        hist += [{"method": name, "supervision": meta.supervision, **h} for h in result.history]
    scores = pd.DataFrame(rows)
    scores.attrs["per_query"] = pq
    history = pd.DataFrame(hist)
    show = "triplet" if "triplet" in results else (names[0] if names else None)
    embedding = embedding_table(data, before, results.get(show), show) if show else pd.DataFrame()
    return scores, history, embedding


def embedding_table(data: FinetuneData, before: T.FinetuneResult, after: T.FinetuneResult | None,
                    label: str, objects: int = EMBED_OBJECTS) -> pd.DataFrame:
    """2-D PCA of a few test objects' descriptors, before and after (one PCA per panel; display only)."""
    chosen = np.unique(data.test.labels)[:objects]
    rows = np.flatnonzero(np.isin(data.test.labels, chosen))
    out = []
    for stage, res in (("before", before), (f"after ({label})", after)):
        if res is None:
            continue
        x = res.describe(data.test.maps[rows])
        x = (x - x.mean(0)).astype(np.float64)
        val, vec = np.linalg.eigh(x @ x.T)  # PCA through the small Gram matrix: N×N instead of D×D
        xy = vec[:, ::-1][:, :2] * np.sqrt(np.clip(val[::-1][:2], 0, None))
        out.append(pd.DataFrame({"stage": stage, "object": data.test.labels[rows], "x": xy[:, 0], "y": xy[:, 1]}))
    return pd.concat(out, ignore_index=True)


def table_2_3_like(scores: pd.DataFrame) -> pd.DataFrame:
    """Our rows in the shape of Table 2.3 (loss, feature, dim, COIL-100 mAP before → after, protocol 'all')."""
    s = scores[scores["protocol"] == "all"]
    off = float(s.loc[s["stage"] == "before", "mAP"].iloc[0])
    after = s[s["stage"] == "after"]
    return pd.DataFrame({
        "method": after["method"], "supervision": after["supervision"], "loss": after["survey_loss"],
        "equation": after["equation"], "feature": after["feature"], "dim": after["dim"],
        "coil100_mAP_before": off, "coil100_mAP_after": after["mAP"].to_numpy(),
    }).reset_index(drop=True)
