"""The survey's comparisons on real instance photos, beside COIL-100.

COIL-100's turntable objects on black saturate: a colour histogram ties off-the-shelf CNN features
there. The survey's lessons (§2.3 off-the-shelf features, §2.3.2 whitening, §2.3.4 query expansion
and diffusion, §2.5.3 Figure 2.13a depth) come from cluttered photos of the same object or place,
so this step repeats them on three real sets small enough for a laptop:

* ``smvs_dvd`` — phone photos of DVD covers (4 cameras) against the 100 clean covers; one positive each.
* ``rparis6k_mini`` — the Paris6k photos present, scored with the revisited Easy/Medium/Hard protocol.
* ``sop_kettles_fans`` — the test products of Stanford Online Products' kettles and fans.

Protocol: nothing is learned on these test sets. PCA-whitening, the choice of the best network and
pooling, and the re-ranking hyper-parameters are all learned on SOP's *learning* products (SMVS and
Paris6k-mini have no learning split). Taught in notebooks/13_instance_retrieval.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import backbones as bb
from .. import baselines, datasets, evaluate, features, rerank
from ..figures_instance import HEADLINE  # each set's headline protocol: the one per-query APs are kept for
from ..index import exact_search
from .offtheshelf import LITE, pca_whiten
from .rerank import GAMMA, QE_ALPHA, QUERY_K, Split, choose_whitening, select_params

DATASETS = ("smvs_dvd", "rparis6k_mini", "sop_kettles_fans")
LEARN = "sop_kettles_fans-learn"
FULL_NETWORKS = ("mobilenet_v2", *LITE)
# The default run leaves out Lite1: at one fixed input side Lite1 and Lite2 differ only in width (compound
# scaling's resolution step is gone), so Lite2 keeps that contrast; the COIL-100 steps keep all three.
NETWORKS = ("mobilenet_v2", "efficientnet_lite0", "efficientnet_lite2")
POOLINGS = ("mac", "spoc", "gem", "rmac", "crow")
DEPTH_NETWORKS = ("efficientnet_lite0", "mobilenet_v2")
# Longest side in pixels, aspect kept. SOP photos are ≤ 256 px, SMVS covers 640 px, Paris 1024 px.
# 224 px (a 7×5 last map) in the default run; --full uses 320 px, a 10×8 map with more regions for
# R-MAC, at about twice the cost. SMALL mode keeps every image (the sets are small) and two networks.
SIDE = 224
FULL_SIDE = 320
SMALL_NETWORKS = ("efficientnet_lite0", "mobilenet_v2")
# Re-ranking grids searched on the SOP learning products (few positives per query: small k).
GRIDS = {"qe_ks": (1, 2, 3, 5), "dba_ks": (1, 2, 3, 5), "graph_ks": (5, 10, 20), "alphas": (0.9, 0.99)}


@dataclass
class Sets:
    """The instance datasets and their extracted rows, loaded once and shared by the step's parts."""

    small: bool = False
    data_home: object = None
    progress: bool | None = None
    full: bool = False  # --full: FULL_SIDE and every supervised loss in the SOP fine-tuning
    input_side: int | None = None  # default: SIDE, or FULL_SIDE with ``full``
    only: tuple[str, ...] | None = None  # restrict the networks (tests, quick looks)
    _data: dict = field(default_factory=dict)
    _nets: dict = field(default_factory=dict)
    _feats: dict = field(default_factory=dict)

    @property
    def side(self) -> int:
        return self.input_side or (FULL_SIDE if self.full and not self.small else SIDE)

    @property
    def networks(self) -> tuple[str, ...]:
        wanted = self.only or (SMALL_NETWORKS if self.small else FULL_NETWORKS if self.full else NETWORKS)
        return tuple(n for n in wanted if bb.weights_available(n))

    def dataset(self, name: str):
        """A test set by name, or :data:`LEARN` for SOP's learning products."""
        if name not in self._data:
            base, _, split = name.partition("-")
            kwargs = {"split": split or "test"} if base == "sop_kettles_fans" else {}
            self._data[name] = datasets.load(base, data_home=self.data_home, progress=self.progress, **kwargs)
        return self._data[name]

    def backbone(self, net: str):
        if net not in self._nets:
            self._nets[net] = bb.load_backbone(net, progress=self.progress)
        return self._nets[net]

    def blocks(self, net: str) -> list[str]:
        """Every block's output, shallow to deep (the taps of the within-network depth curve)."""
        return [n for n in self.backbone(net).layers if n.startswith(("block", "stage"))]

    def features(self, name: str, net: str, images: str = "db") -> features.Features:
        """The last conv map with every pooling and, for the networks of the depth curve, every block
        with GeM, from one forward pass (``block_pooling``: no R-MAC or CroW on large early maps); cached."""
        key = (name, net, images)
        if key not in self._feats:
            last = self.backbone(net).default_layer
            depth = net in DEPTH_NETWORKS
            self._feats[key] = features.extract(self.dataset(name), self.backbone(net),
                                               [*self.blocks(net), last] if depth else [last], POOLINGS,
                                               block_pooling=("gem",) if depth else None, images=images,
                                               size=self.side, resize="max_side", progress=self.progress)
        return self._feats[key]

    def rows(self, name: str, net: str, layer: str | None = None, pooling: str = "gem"):
        """``(database rows, query rows, exclude)`` of one descriptor (a ``layer`` other than the last
        conv map is a block of the depth curve, pooled with GeM).

        Queries that are uncropped database images reuse their rows and are excluded from their
        own re-ranking (``exclude`` = their database row); the others are extracted themselves.
        """
        ds = self.dataset(name)
        layer = layer or self.backbone(net).default_layer
        db = self.features(name, net).get(layer, pooling)
        index = ds.query_rows_in_db
        if index is not None:
            return db, db[index], index
        return db, self.features(name, net, images="queries").get(layer, pooling), None




def _scores(ids: np.ndarray, ds, key: dict, per_query: list | None = None) -> list[dict]:
    """Tidy metric rows of a ranking; ``per_query`` receives the per-query APs of the headline protocol
    (the input of the paired bootstrap in :mod:`retrievalkit.experiments.verdicts`)."""
    rows = [{**key, **r} for r in evaluate.evaluate(ids, ds)]
    if ds.name == "smvs_dvd":  # the benchmark reports P@1 (= recall@1 with one positive) per camera too
        for cam, part in datasets.smvs.by_camera(ds).items():
            rows += [{**key, **r, "protocol": cam} for r in evaluate.evaluate(ids[part.meta["query_rows"]], part)]
    if per_query is not None:
        aps = evaluate.average_precision(ids, ds.ground_truth(HEADLINE[ds.name]))
        per_query += [{**key, "dataset": ds.name, "query": q, "AP": float(a)} for q, a in enumerate(aps)]
    return rows


def _frame(rows: list[dict], per_query: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame.attrs["per_query"] = per_query
    return frame


def colour_histogram(sets: Sets) -> pd.DataFrame:
    """The colour-histogram baseline (a non-learned, pre-deep descriptor) on every set."""
    out, pq = [], []
    for name in DATASETS:
        ds = sets.dataset(name)
        db, _ = baselines.describe_images(ds.db_paths, exif_transpose=ds.exif_transpose, progress=sets.progress)
        index = ds.query_rows_in_db
        if index is not None:
            q = db[index]
        else:
            q, _ = baselines.describe_images(ds.query_paths, bboxes=ds.query_bboxes, exif_transpose=ds.exif_transpose,
                                             progress=sets.progress)
        out += _scores(exact_search(q, db)[1], ds, {"method": "colour histogram", "stage": "colour histogram"}, pq)
    return _frame(out, pq)


def learn_map(sets: Sets, backbone: str, layer: str, pooling: str) -> float:
    """mAP over SOP's learning products (their own queries): how the best descriptor is chosen."""
    db, q, _ = sets.rows(LEARN, backbone, layer, pooling)
    return evaluate.mean_ap(exact_search(q, db)[1], sets.dataset(LEARN).ground_truth("all"))


def offtheshelf(sets: Sets) -> pd.DataFrame:
    """Every network × pooling of its last conv map on every set, with the SOP-learning mAP that ranks them."""
    out, pq = [], []
    for net in sets.networks:
        layer = sets.backbone(net).default_layer
        for pooling in POOLINGS:
            key = {"network": net, "depth": bb.get_spec(net).depth, "pooling": pooling, "stage": "off-the-shelf",
                   "learn_mAP": learn_map(sets, net, layer, pooling)}
            for name in DATASETS:
                db, q, _ = sets.rows(name, net, layer, pooling)
                out += _scores(exact_search(q, db)[1], sets.dataset(name), {"method": f"{net} {pooling}", **key}, pq)
    return _frame(out, pq)


WHITEN_DIMS = (64, 128, 256)  # PCA-w candidates; SOP's learning half has ~420 photos, so full rank is out


def _learn_split(sets: Sets, net: str, layer: str, pooling: str, whiten) -> Split:
    ds = sets.dataset(LEARN)
    db, _, rows = sets.rows(LEARN, net, layer, pooling)
    return Split(LEARN, np.ascontiguousarray(whiten(db), dtype=np.float32), rows, ds.ground_truth("all"))


def pipeline(sets: Sets, best: dict) -> tuple[pd.DataFrame, dict]:
    """The best off-the-shelf descriptor, + PCA-w, then + αQE and + diffusion.

    ``best``: ``network`` and ``pooling`` picked by :func:`offtheshelf`'s ``learn_mAP``. On SOP's
    learning products only: PCA-w's dimension is chosen (:func:`choose_whitening`, half the
    products fit, the other half score), then whether to whiten at all, then the re-ranking
    settings on the descriptor so chosen; αQE and diffusion run on that descriptor. Returns the
    rows and the learned settings.
    """
    net, pooling = best["network"], best["pooling"]
    layer = sets.backbone(net).default_layer
    ds_learn = sets.dataset(LEARN)
    x_learn, _, learn_queries = sets.rows(LEARN, net, layer, pooling)
    choice, scores = choose_whitening(x_learn, np.asarray(ds_learn.db_labels), learn_queries, WHITEN_DIMS)
    best_w = max((k for k in scores if k != "none"), key=scores.get)

    def whitener(name):
        dim = None if name == "none" else int(name.partition("@")[2])
        return (lambda x: x) if dim is None else \
            (lambda x: np.ascontiguousarray(pca_whiten(x_learn, x, dim), dtype=np.float32))

    params, _ = select_params(_learn_split(sets, net, layer, pooling, whitener(choice)), **GRIDS,
                              progress=sets.progress)
    params.update(whitening=choice, pca_w=best_w, **{f"learn_mAP_{k}": v for k, v in scores.items()})
    base = {"network": net, "pooling": pooling, "method": f"{net} {pooling}"}
    out, pq = [], []
    for name in DATASETS:
        ds = sets.dataset(name)
        db, q, exclude = sets.rows(name, net, layer, pooling)
        out += _scores(exact_search(q, db)[1], ds, {**base, "stage": "off-the-shelf", "whitening": "none"}, pq)
        w = whitener(best_w)
        out += _scores(exact_search(w(q), w(db))[1], ds, {**base, "stage": "+ PCA-w", "whitening": best_w}, pq)
        w = whitener(choice)
        db, q = w(db), w(q)
        k = min(params["qe_k"], len(db) - 1)
        out += _scores(rerank.alpha_qe(q, db, k, QE_ALPHA, exclude=exclude)[1], ds,
                       {**base, "stage": "+ αQE", "whitening": choice}, pq)
        dif = rerank.Diffusion(min(params["graph_k"], len(db) - 1), params["alpha"], query_k=QUERY_K, gamma=GAMMA)
        out += _scores(dif.fit(db).search(q, exclude=exclude)[1], ds,
                       {**base, "stage": "+ diffusion", "whitening": choice}, pq)
    return _frame(out, pq), params


def depth_within(sets: Sets, networks=DEPTH_NETWORKS, pooling: str = "gem") -> pd.DataFrame:
    """GeM on the output of every block of one network (Figure 2.13a's depth axis inside a network).

    Across networks, depth changes with everything else (width, resolution, training recipe);
    inside one network only the depth of the tapped block changes.
    """
    out = []
    for net in [n for n in networks if n in sets.networks]:
        blocks = sets.blocks(net)
        for name in DATASETS:
            ds = sets.dataset(name)
            for depth, block in enumerate(blocks, start=1):
                db, q, _ = sets.rows(name, net, block, pooling)
                out += _scores(exact_search(q, db)[1], ds,
                               {"network": net, "layer": block, "block": f"block{depth}", "block_depth": depth,
                                "pooling": pooling})
    return pd.DataFrame(out)


FULL_FINETUNE_METHODS = ("ce", "contrastive", "triplet", "joint", "double_margin", "regression", "ap")  # every supervised one
# The default run trains one loss of each family: classification, pairs, triplets, and the two-margin pairs.
FINETUNE_METHODS = ("ce", "contrastive", "triplet", "double_margin")


def sop_finetune_data(sets: Sets, val_fraction: float = 0.2):
    """Frozen-trunk maps of SOP's learning products (the last ``val_fraction`` of them validate) and test products.

    The same recipe as the COIL-100 fine-tuning (:mod:`retrievalkit.experiments.finetune`): EfficientNet-Lite0
    frozen up to ``stage6`` at 128 px, the tail trained; whole products are held out for validation.
    """
    from ..finetune import trainer as T
    from .finetune import FinetuneData

    learn = T.trunk_data(sets.dataset(LEARN), progress=sets.progress)
    test = T.trunk_data(sets.dataset("sop_kettles_fans"), progress=sets.progress)
    products = np.unique(learn.labels)
    is_val = np.isin(learn.labels, products[-max(1, int(round(val_fraction * len(products)))):])
    return FinetuneData(learn.subset(np.flatnonzero(~is_val)), learn.subset(np.flatnonzero(is_val)), test,
                        sets.dataset("sop_kettles_fans"), sets.small)


def finetune_sop(sets: Sets, methods=None) -> pd.DataFrame:
    """Real instance-level fine-tuning (§2.4): every supervised loss trained on SOP's learning products,
    scored on its test products before and after; ``best_val_mAP`` (validation products) ranks the runs."""
    from ..finetune import trainer as T
    from .finetune import _base_config, run_method, test_scores

    methods = methods or (FULL_FINETUNE_METHODS if sets.full and not sets.small else FINETUNE_METHODS)
    data = sop_finetune_data(sets)
    cfg = _base_config(sets.small)
    before = T.FinetuneResult(T.TailNet(cfg.backbone, cfg.frozen), T.L.TripletLoss(), [], 0, set(), cfg)
    pq: list[dict] = []
    rows = [{"method": "off-the-shelf", "stage": "before", "best_val_mAP": np.nan, **r}
            for r in test_scores(before, data, pq, {"method": "off-the-shelf", "stage": "before"})]
    for name in methods:
        result, _ = run_method(data, name, cfg, sets.progress)
        best_val = max((h.get("val_mAP", np.nan) for h in result.history), default=np.nan)
        rows += [{"method": name, "stage": "after", "best_val_mAP": best_val, "best_epoch": result.best_epoch, **r}
                 for r in test_scores(result, data, pq, {"method": name, "stage": "after"})]
    for r in pq:
        r["dataset"] = "sop_kettles_fans"
    return _frame(rows, pq)


# Handcrafted embeddings of RootSIFT (§2.3.2.2), every codebook learned on SOP's learning photos. Sizes as
# the COIL-100 embedding step's table (BoW 1,024 words, VLAD 64 words, FV 16 Gaussians); SMALL mode shrinks them.
ROOTSIFT_K = {"bow": 1024, "vlad": 64, "fv": 16}
SMALL_ROOTSIFT_K = {"bow": 256, "vlad": 16, "fv": 8}
ROOTSIFT_STAGE = {"bow": "RootSIFT-BoW", "vlad": "RootSIFT-VLAD", "fv": "RootSIFT-FV"}
CODEBOOK_VERSION = 1  # of the cached RootSIFT codebooks and idf: bump when their fit changes


def rootsift_encoders(sets: Sets) -> dict:
    """BoW (tf-idf), VLAD and FV encoders of RootSIFT, their codebooks (and idf) learned on SOP's learning
    photos only and cached by those descriptors and settings (:mod:`retrievalkit.artifacts`)."""
    from .. import artifacts
    from .. import embedding as emb
    from .embedding import sift_local

    learn = sift_local(sets.dataset(LEARN).db_paths, progress=sets.progress)
    data = artifacts.fingerprint(learn.descriptors, learn.image_index, np.int64(learn.n_images))
    ks = SMALL_ROOTSIFT_K if sets.small else ROOTSIFT_K

    def fitted(book):
        return artifacts.cached("codebook", {"data": data, **artifacts.settings(book)},
                                lambda: book.fit(learn, split="learn"), version=CODEBOOK_VERSION)

    words = fitted(emb.KMeansCodebook(k=ks["bow"], seed=0))
    bow = emb.BoW(words)
    bow.idf_ = artifacts.cached("bow_idf", {"data": data, **artifacts.settings(words)},
                                lambda: bow.fit_idf(learn, split="learn").idf_, version=CODEBOOK_VERSION)
    bow.n_learning_images_ = learn.n_images
    return {"bow": bow, "vlad": emb.VLAD(fitted(emb.KMeansCodebook(k=ks["vlad"], seed=0))),
            "fv": emb.FisherVector(fitted(emb.GMMCodebook(k=ks["fv"], seed=0)))}


def rootsift_embeddings(sets: Sets) -> pd.DataFrame:
    """The handcrafted side of §2.3.2.2 on every set: RootSIFT aggregated by BoW, VLAD and FV."""
    from .embedding import sift_local

    encoders = rootsift_encoders(sets)
    ks = SMALL_ROOTSIFT_K if sets.small else ROOTSIFT_K
    out, pq = [], []
    for name in DATASETS:
        ds = sets.dataset(name)
        db_local = sift_local(ds.db_paths, progress=sets.progress)
        index = ds.query_rows_in_db
        q_local = None if index is not None else sift_local(ds.query_paths, bboxes=ds.query_bboxes,
                                                           progress=sets.progress)
        for method, enc in encoders.items():
            db = np.ascontiguousarray(enc.encode(db_local), dtype=np.float32)
            q = db[index] if index is not None else np.ascontiguousarray(enc.encode(q_local), dtype=np.float32)
            out += _scores(exact_search(q, db)[1], ds, {"method": f"{ROOTSIFT_STAGE[method]} (K={ks[method]})",
                                                        "stage": ROOTSIFT_STAGE[method], "dim": db.shape[1]}, pq)
    return _frame(out, pq)


DIMENSIONS = (16, 32, 64, 128, 256)  # PCA-w widths: below SOP's ~420 learning photos (PCA's rank limit)


def dimension(sets: Sets, best: dict, dims=DIMENSIONS) -> pd.DataFrame:
    """Figure 2.13(b) on real photos: mAP of the chosen descriptor PCA-whitened to each width (learned on SOP's
    learning photos), beside its native width."""
    net, pooling = best["network"], best["pooling"]
    layer = sets.backbone(net).default_layer
    x_learn = sets.rows(LEARN, net, layer, pooling)[0]
    out = []
    for name in DATASETS:
        ds = sets.dataset(name)
        db, q, _ = sets.rows(name, net, layer, pooling)
        base = {"network": net, "pooling": pooling}
        out += _scores(exact_search(q, db)[1], ds, {**base, "recipe": "native", "dim": db.shape[1]})
        for dim in (d for d in dims if d < min(len(x_learn), db.shape[1])):
            w = lambda x: np.ascontiguousarray(pca_whiten(x_learn, x, dim), dtype=np.float32)  # noqa: E731
            out += _scores(exact_search(w(q), w(db))[1], ds, {**base, "recipe": "pca_w", "dim": dim})
    return pd.DataFrame(out)
