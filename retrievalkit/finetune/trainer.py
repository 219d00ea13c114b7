"""Fine-tuning on a frozen trunk: train the last block(s) + GeM(p) on cached intermediate maps.

Survey §2.4 (Figure 2.9); taught in notebooks/09_supervised_finetuning and
notebooks/10_unsupervised_finetuning.

CPU design. Fine-tuning a whole backbone at 224 px on a 2-core laptop takes hours, so the
network is cut in two. The early stages (EfficientNet-Lite0 up to ``stage6`` by default) stay
frozen: their output maps are computed ONCE per image at a modest input size (128 px, COIL-100's
native size) with :func:`retrievalkit.features.extract` (``keep_maps``), which caches them on disk
atomically under a key of everything that changes them. Only the tail — the remaining MBConv
stage(s), the 1×1 head conv, GeM with a learnable ``p`` and an optional whitening FC — is trained,
reading those cached maps. Batch-norm statistics and stochastic depth of the tail stay in eval
mode (frozen running statistics), as is usual with small retrieval batches; gradients still flow
into every weight.

Protocol guard: :func:`finetune` takes the image ids (paths) and labels it trains and validates
on, and ``forbidden_ids`` / ``forbidden_labels`` (the test split's); any overlap is an error. The
ids it actually read are returned in :attr:`FinetuneResult.seen_ids`. Model selection (the best
epoch, early stopping) uses only the validation part, carved out of the LEARNING split by the caller.

Reproducibility: each epoch draws its randomness from ``[seed, epoch]``; a checkpoint (written
atomically after every epoch) holds the weights, optimiser, history, best state and RNG states,
so ``resume=True`` continues exactly where an interrupted run stopped.
"""
from __future__ import annotations

import copy
import functools
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import config as rk_config
from .. import evaluate
from ..nn import functional as F
from ..nn.netvlad import NetVLAD
from ..nn.pooling import GeM
from ..train.loop import fit, sgd_epoch
from . import losses as L
from .miners import MPerClassSampler, fill_negatives, hardest_negatives, make_tuples, tuple_indices

__all__ = ["TrainData", "TailNet", "FinetuneConfig", "FinetuneResult", "trunk_data", "describe", "finetune",
           "check_protocol", "config_key", "init_pooling", "DEFAULT_FROZEN", "DEFAULT_SIZE", "POOLINGS"]

DEFAULT_BACKBONE = "efficientnet_lite0"
DEFAULT_FROZEN = "stage6"  # last frozen stage; its output maps are cached
DEFAULT_SIZE = 128  # COIL-100's native size: stage6 maps are 192×4×4
CHECKPOINT_VERSION = 2  # 2: the best epoch is stored as train.loop.fit keeps it
POOLINGS = ("gem", "netvlad")  # what the tail pools its last conv map with
NETVLAD_INIT_IMAGES = 400  # learning images whose tail columns seed NetVLAD's k-means words


@dataclass
class TrainData:
    """Cached frozen-trunk maps of one split part: ``maps`` N×C×h×w (float16/32), ``labels`` (or None), ``ids``."""

    maps: np.ndarray
    labels: np.ndarray | None
    ids: np.ndarray

    def __post_init__(self):
        self.ids = np.asarray(self.ids)
        if self.labels is not None:
            self.labels = np.asarray(self.labels)
            if len(self.labels) != len(self.maps):
                raise ValueError(f"{len(self.labels)} labels for {len(self.maps)} maps")
        if len(self.ids) != len(self.maps):
            raise ValueError(f"{len(self.ids)} ids for {len(self.maps)} maps")

    def __len__(self):
        return len(self.maps)

    def subset(self, rows) -> "TrainData":
        rows = np.asarray(rows)
        return TrainData(self.maps[rows], None if self.labels is None else self.labels[rows], self.ids[rows])


def trunk_data(dataset, backbone: str = DEFAULT_BACKBONE, frozen: str = DEFAULT_FROZEN, size: int = DEFAULT_SIZE,
               progress: bool | None = None, **kwargs) -> TrainData:
    """Frozen-trunk maps of every database image of ``dataset`` (cached on disk by :func:`features.extract`).

    Labels are ``dataset.db_labels`` (COIL-100 object ids), ids the image paths.
    """
    from .. import features

    f = features.extract(dataset, backbone, [frozen], "gem", size=size, resize="fixed", keep_maps=frozen,
                         progress=progress, **kwargs)
    return TrainData(np.asarray(f.maps(frozen)), getattr(dataset, "db_labels", None), np.asarray(f.paths))


@functools.lru_cache(maxsize=4)
def _tail(backbone: str, frozen: str, weights) -> tuple[tuple[str, ...], nn.Sequential, int]:
    """The stages after ``frozen`` of a loaded backbone (loaded once per process; callers deep-copy)."""
    from ..backbones import load_backbone

    bb = load_backbone(backbone, weights=weights, device="cpu", progress=False)
    names = list(bb.layers)
    start, stop = names.index(bb.resolve(frozen)) + 1, names.index(bb.default_layer) + 1
    stages = dict(bb.spec.stages(bb.model))
    return tuple(names[start:stop]), nn.Sequential(*[stages[n] for n in names[start:stop]]), bb.out_channels()


class TailNet(nn.Module):
    """The trainable tail: backbone stages after ``frozen`` up to the last conv map → pooling → [FC] → L2N.

    ``pooling``: ``"gem"`` (GeM with a learnable p; with its initial weights the tail reproduces the
    off-the-shelf GeM descriptor of the same input size) or ``"netvlad"`` (:class:`NetVLAD` with
    ``clusters`` words, K·D dims; seed its words with :func:`init_pooling` before use). Built from a
    registered backbone with ImageNet weights (``weights=None``: random, for tests).
    Survey §2.4, Figure 2.9; taught in notebooks/09_supervised_finetuning.
    """

    def __init__(self, backbone: str = DEFAULT_BACKBONE, frozen: str = DEFAULT_FROZEN, p: float = 3.0,
                 whiten: bool = False, weights="imagenet", pooling: str = "gem", clusters: int = 8):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if pooling == "netvlad" and whiten:
            raise ValueError("whiten=True puts a D×D layer after pooling: with NetVLAD's K·D dims that is too "
                             "large here; reduce a NetVLAD descriptor with PCA-whitening learned afterwards")
        names, stages, dim = _tail(backbone, frozen, weights)
        self.backbone, self.frozen, self.stage_names = backbone, frozen, list(names)
        self.stages = copy.deepcopy(stages)
        self.pool = GeM(p=p, learn_p=True) if pooling == "gem" else NetVLAD(dim, clusters)
        self.dim = dim if pooling == "gem" else self.pool.out_dim
        self.whiten = None
        if whiten:
            self.whiten = nn.Linear(dim, dim)
            nn.init.eye_(self.whiten.weight)
            nn.init.zeros_(self.whiten.bias)
        self.to(memory_format=torch.channels_last)

    @classmethod
    def for_config(cls, cfg: "FinetuneConfig", **kwargs) -> "TailNet":
        """The tail a :class:`FinetuneConfig` trains (its words not yet seeded, for NetVLAD)."""
        return cls(cfg.backbone, cfg.frozen, whiten=cfg.whiten, pooling=cfg.pooling, clusters=cfg.clusters, **kwargs)

    def columns(self, maps: torch.Tensor) -> torch.Tensor:
        """The last conv map of the tail (before pooling)."""
        return self.stages(maps.contiguous(memory_format=torch.channels_last))

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.columns(maps))
        if self.whiten is not None:
            x = self.whiten(x)
        return F.l2n(x)

    def extra_repr(self):
        return f"backbone={self.backbone!r}, frozen={self.frozen!r}, trained={self.stage_names}"


@torch.no_grad()
def init_pooling(model: TailNet, learn: TrainData, seed: int = 0, images: int = NETVLAD_INIT_IMAGES,
                 device=None) -> TailNet:
    """Seed a NetVLAD tail's words by k-means on the tail's conv columns of ``images`` LEARNING images
    (the paper's initialisation); a GeM tail needs nothing."""
    if not isinstance(model.pool, NetVLAD):
        return model
    device = device or next(model.parameters()).device
    rows = np.sort(np.random.default_rng(seed).choice(len(learn), size=min(images, len(learn)), replace=False))
    cols = [model.columns(_batch(learn.maps, rows[s:s + 128], device)).float()
            for s in range(0, len(rows), 128)]
    local = torch.cat([c.permute(0, 2, 3, 1).reshape(-1, c.shape[1]) for c in cols]).cpu().numpy()
    model.pool.init_from(local, seed=seed)
    return model


def _batch(maps, rows, device) -> torch.Tensor:
    rows = np.asarray(rows)
    order = np.argsort(rows, kind="stable")  # memmaps read in order
    x = np.empty((len(rows),) + tuple(maps.shape[1:]), dtype=np.float32)
    x[order] = np.asarray(maps[rows[order]], dtype=np.float32)
    return torch.as_tensor(x, device=device)


def describe(model: TailNet, maps, batch_size: int = 256, device=None) -> np.ndarray:
    """L2-normalised descriptors (N×D float32) of cached trunk maps, without gradients."""
    device = device or next(model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(maps), batch_size):
            out.append(model(_batch(maps, np.arange(start, min(start + batch_size, len(maps))), device)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.dim), np.float32)


@dataclass
class FinetuneConfig:
    """Everything that shapes a fine-tuning run (saved in checkpoints; ``epochs`` may grow on resume).

    ``loss``: a key of :data:`retrievalkit.finetune.losses.LOSSES`; ``loss_kwargs`` its arguments.
    Losses of pairs or triplets (contrastive, double_margin, triplet, joint, regression) see
    ``queries`` tuples per epoch of (query, positive, ``negatives`` hardest negatives from a random
    pool of ``pool`` rows); losses of labels (ce, ap, npair, lifted, proxy_nca, quadruplet) see
    ``class_batches`` m-per-class batches of ``batch_size`` (npair uses two rows per class: set ``m=2``;
    quadruplet needs three classes per batch). ``select``:
    ``"val"`` keeps the best validation epoch (an epoch must beat it strictly: on an exact tie the
    earlier one stays) and stops after ``patience`` epochs without gain,
    ``"last"`` keeps the last epoch (no labels needed for selection).
    """

    loss: str = "triplet"
    loss_kwargs: dict = field(default_factory=dict)
    epochs: int = 5
    lr: float = 1e-4
    head_lr: float = 1e-2  # GeM p, class weights, regression W
    weight_decay: float = 1e-5
    queries: int = 200
    negatives: int = 4
    pool: int = 1500
    tuple_batch: int = 10
    batch_size: int = 64
    m: int = 4
    class_batches: int = 40
    whiten: bool = False
    select: str = "val"
    patience: int = 3
    seed: int = 0
    backbone: str = DEFAULT_BACKBONE
    frozen: str = DEFAULT_FROZEN
    pooling: str = "gem"  # or "netvlad" (TailNet); ``clusters``: its number of words
    clusters: int = 8


def config_key(cfg: FinetuneConfig) -> dict:
    """The configuration as cache and checkpoint keys hold it. A GeM run leaves out the NetVLAD fields,
    so its key is the one it had before NetVLAD existed and runs cached then are still found."""
    d = asdict(cfg)
    if d["pooling"] == "gem":
        d.pop("pooling"), d.pop("clusters")
    return d


@dataclass
class FinetuneResult:
    model: TailNet
    loss_module: nn.Module
    history: list[dict]
    best_epoch: int
    seen_ids: set
    config: FinetuneConfig

    def describe(self, maps, batch_size: int = 256) -> np.ndarray:
        return describe(self.model, maps, batch_size)

    def scores(self, queries: np.ndarray, database: np.ndarray) -> np.ndarray:
        """Q×N similarities: inner products, or the learned pair score S_W for the regression loss."""
        if isinstance(self.loss_module, L.PairRegressionLoss):
            return self.loss_module.score(torch.as_tensor(queries), torch.as_tensor(database)).numpy()
        return queries @ database.T


def check_protocol(parts, forbidden_ids, forbidden_labels) -> None:
    """Refuse training/validation data that shares an image or an object with the test split."""
    if forbidden_ids is not None:
        bad = set(map(str, forbidden_ids))
        for name, part in parts:
            if part is not None:
                clash = bad.intersection(map(str, part.ids))
                if clash:
                    raise ValueError(f"{len(clash)} {name} images belong to the test split (e.g. {sorted(clash)[0]}): "
                                     f"fine-tuning may only read the learning split")
    if forbidden_labels is not None:
        bad = set(np.asarray(forbidden_labels).tolist())
        for name, part in parts:
            if part is not None and part.labels is not None:
                clash = bad.intersection(np.asarray(part.labels).tolist())
                if clash:
                    raise ValueError(f"{name} data holds test-split objects {sorted(clash)[:5]}: "
                                     f"hold whole objects out — fine-tuning may only read the learning split")


def _comparable(cfg: FinetuneConfig) -> dict:
    d = config_key(cfg)
    d.pop("epochs")
    return d


@rk_config.deterministic()
def finetune(learn: TrainData, val: TrainData | None = None, cfg: FinetuneConfig | None = None, *,
             tuples=None, checkpoint: str | os.PathLike | None = None, resume: bool = True,
             forbidden_ids=None, forbidden_labels=None, model: TailNet | None = None,
             device="auto", progress: bool | None = None) -> FinetuneResult:
    """Fine-tune a :class:`TailNet` on cached trunk maps of the learning split; returns a :class:`FinetuneResult`.

    ``learn``: training part (labels: object ids or pseudo-labels; may be None when ``tuples`` is
    given). ``val``: validation part, also from the LEARNING split, with labels — for the
    validation mAP curve and, with ``cfg.select == "val"``, model selection. ``tuples``: for
    unsupervised training, a callable ``tuples(epoch, rng) -> (queries, positives, negatives)`` of
    row indices into ``learn`` (negatives Q×k, −1 = none: short rows are cycled and rows without
    a negative dropped, see :func:`fill_negatives`), used instead of label-based mining.
    ``checkpoint``: a file written after every epoch; with ``resume`` an existing one is continued.
    ``forbidden_ids`` / ``forbidden_labels``: the test split's image ids and objects (refused).
    ``history``: one dict per epoch (epoch 0 = the starting model), with ``loss`` (training mean),
    ``val_mAP``, ``p`` (GeM) and ``seconds``. Survey §2.4; taught in notebooks/09 and 10.
    """
    cfg = cfg or FinetuneConfig()
    if cfg.select not in ("val", "last"):
        raise ValueError(f"select must be 'val' (best validation epoch) or 'last', got {cfg.select!r}")
    check_protocol([("training", learn), ("validation", val)], forbidden_ids, forbidden_labels)
    if learn.labels is None and tuples is None:
        raise ValueError("training data without labels needs tuples= (e.g. from finetune.unsupervised)")
    if cfg.select == "val" and (val is None or val.labels is None):
        raise ValueError("select='val' needs labelled validation data from the learning split; or use select='last'")
    dev = rk_config.device(device)
    torch.manual_seed(cfg.seed)
    if model is None:
        model = init_pooling(TailNet.for_config(cfg).to(dev).eval(), learn, cfg.seed)
    model = model.to(dev).eval()
    classes, y = (None, None) if learn.labels is None else np.unique(learn.labels, return_inverse=True)
    loss_fn = L.build(cfg.loss, model.dim, 0 if classes is None else len(classes), **cfg.loss_kwargs).to(dev)
    if loss_fn.needs_labels and learn.labels is None:
        raise ValueError(f"loss {cfg.loss!r} needs labels (object ids or pseudo-labels)")
    y_t = None if y is None else torch.as_tensor(y, device=dev)
    if hasattr(loss_fn, "init_from_means"):
        loss_fn.init_from_means(torch.as_tensor(describe(model, learn.maps, device=dev), device=dev), y_t)
    scores_pairs = hasattr(loss_fn, "score")  # Eq. (2.15): the loss learns its own pair score; the network is frozen
    if scores_pairs:
        for prm in model.parameters():
            prm.requires_grad_(False)
        groups = [{"params": list(loss_fn.parameters()), "lr": cfg.head_lr}]
    else:  # GeM's p learns at the head's rate; NetVLAD's words and assignment at the network's
        head = [prm for name, prm in model.named_parameters() if name == "pool.p"] + list(loss_fn.parameters())
        body = [prm for name, prm in model.named_parameters() if name != "pool.p"]
        groups = [{"params": body, "lr": cfg.lr}, {"params": head, "lr": cfg.head_lr}]
    opt = torch.optim.Adam(groups, weight_decay=cfg.weight_decay)
    seen: set = set()

    def validate() -> dict:
        record = {}
        if val is not None and val.labels is not None:
            xv = describe(model, val.maps, device=dev)
            scores = (loss_fn.score(torch.as_tensor(xv, device=dev), torch.as_tensor(xv, device=dev)).cpu().numpy()
                      if scores_pairs else None)
            record["val_mAP"] = evaluate.leave_one_out_map(xv, val.labels, scores=scores)
            seen.update(map(str, val.ids))
        if isinstance(model.pool, GeM):
            record["p"] = float(model.pool.p.detach())
        return record

    ckpt = Path(checkpoint) if checkpoint is not None else None
    saved = None
    if ckpt is not None and resume and ckpt.is_file():
        state = torch.load(ckpt, map_location=dev, weights_only=True)
        if state.get("version") != CHECKPOINT_VERSION or state["config"] != _comparable(cfg):
            raise ValueError(f"checkpoint {ckpt} was written with another configuration or version: "
                             f"delete it or pass resume=False")
        model.load_state_dict(state["model"])
        loss_fn.load_state_dict(state["loss"])
        opt.load_state_dict(state["optimizer"])
        saved, seen = {"history": state["history"], "best": state["best"]}, set(state["seen_ids"])
        torch.set_rng_state(state["torch_rng"])

    def checkpoint_epoch(epoch: int, history: list, best: dict) -> None:
        if ckpt is not None:
            with rk_config.atomic_path(ckpt) as tmp:
                torch.save({"version": CHECKPOINT_VERSION, "config": _comparable(cfg), "epoch": epoch,
                            "model": model.state_dict(), "loss": loss_fn.state_dict(), "optimizer": opt.state_dict(),
                            "history": history, "best": best, "seen_ids": sorted(seen),
                            "torch_rng": torch.get_rng_state()}, tmp)

    sampler = None
    if loss_fn.needs == "labels":
        sampler = MPerClassSampler(y, cfg.m, min(cfg.batch_size, cfg.m * len(classes)), cfg.class_batches, cfg.seed)

    def loss_of(batch: np.ndarray):
        flat = batch.reshape(-1)
        seen.update(map(str, learn.ids[np.unique(flat)]))
        desc = model(_batch(learn.maps, flat, dev))
        indices = None if sampler is not None else tuple_indices(*batch.shape, loss_fn.needs, dev)
        return loss_fn(desc, None if y_t is None else y_t[torch.as_tensor(flat, device=dev)], indices)

    def run_epoch(epoch: int) -> dict:
        tic = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, epoch])
        torch.manual_seed(cfg.seed * 100_003 + epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
            batches = [np.asarray(b) for b in sampler]
        else:
            batches = _tuple_batches(learn, model, cfg, rng, tuples, epoch, dev)
        return {"loss": sgd_epoch(loss_of, batches, opt)["loss"], "seconds": time.perf_counter() - tic}

    result = fit(run_epoch, [model, loss_fn], epochs=cfg.epochs, validate=validate,
                 start=lambda: {"loss": float("nan"), "seconds": 0.0}, select=cfg.select, patience=cfg.patience,
                 resume=saved, on_epoch_end=checkpoint_epoch, progress=progress, desc=f"fine-tune {cfg.loss}")
    return FinetuneResult(model.eval(), loss_fn.eval(), result.history, result.best_epoch, seen, cfg)


def _tuple_batches(learn: TrainData, model: TailNet, cfg: FinetuneConfig, rng, tuples, epoch: int, dev) -> list:
    """One epoch of ``(query, positive, negative_1 … negative_k)`` row tuples, shuffled, in batches.

    From ``tuples(epoch, rng)`` when given, otherwise mined: random queries with a positive each and
    the hardest negatives of a random pool under the current model (Radenović et al.).
    """
    if tuples is not None:
        q, pos, neg = tuples(epoch, rng)
    else:
        q, pos = make_tuples(learn.labels, cfg.queries, rng)
        pool = np.sort(rng.choice(len(learn), size=min(cfg.pool, len(learn)), replace=False))
        rows = np.unique(np.concatenate([q, pool]))
        desc = np.zeros((len(learn), model.dim), np.float32)
        desc[rows] = describe(model, learn.subset(rows).maps, device=dev)
        hard = hardest_negatives(desc[q], desc[pool], learn.labels[q], learn.labels[pool], cfg.negatives)
        neg = np.where(hard >= 0, pool[np.maximum(hard, 0)], -1)  # keep the -1 padding (pool[-1] is a real row)
    q, pos = np.asarray(q, dtype=np.int64), np.asarray(pos, dtype=np.int64)
    keep, neg = (fill_negatives(np.asarray(neg, dtype=np.int64).reshape(len(q), -1)) if len(q)
                 else (np.zeros(0, bool), np.zeros((0, 1), np.int64)))
    tup = np.concatenate([q[keep, None], pos[keep, None], neg], axis=1)
    if not len(tup):
        raise ValueError(f"epoch {epoch}: no (query, positive, negative) tuple could be formed from "
                         f"{len(q)} queries: every query needs another image of its class and a pool "
                         f"item of another class; use more classes or a larger pool (cfg.pool={cfg.pool})")
    tup = tup[rng.permutation(len(tup))]
    return [tup[s:s + cfg.tuple_batch] for s in range(0, len(tup), cfg.tuple_batch)]
