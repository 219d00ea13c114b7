"""Feature embedding (BoW, VLAD, Fisher vectors) and attention on COIL-100: deep vs handcrafted.

Survey §2.3.2.2 (Eqs. 2.4–2.11: BoW, VLAD, FV), §2.3.2.3 (attention, Figure 2.8) and §2.1 question 1
(do off-the-shelf deep features beat handcrafted ones?). Taught in notebooks/05_embeddings_bow_vlad_fv
and notebooks/06_attention. Every experiment returns a tidy DataFrame (one row per variant × protocol);
figures are drawn by :mod:`retrievalkit.figures_embedding`.

Protocol (the default COIL-100 one): everything that learns — the PCA that shortens conv columns, the
k-means / GMM codebooks, BoW's idf, PCA-whitening and the learned attention head — sees the learning
split only (objects 1–50; in SMALL mode objects 1–10). The attention head picks its epoch on the last
20% of the learning objects (41–50). Every score is on the test split (objects 51–100).

Local descriptors (:func:`local_descriptors`):

* ``"conv"``: the 7×7 = 49 columns of EfficientNet-Lite0's 1280-channel head map (224-px input;
  5×5 at SMALL mode's 160 px), each L2-normalised, then reduced to :data:`COLUMN_DIM` = 128 by a PCA
  learned on learning-split columns and L2-normalised again (so deep and SIFT descriptors have the
  same width and the GMM stays cheap).
* ``"sift"``: OpenCV's difference-of-Gaussians keypoints on the native 128-px images, as RootSIFT
  (a few dozen per image; a dense grid cost ~6× more time here). Cached on disk.

Features are shared with the other experiments through :class:`retrievalkit.experiments.offtheshelf.Coil`;
the conv maps come from one cached extraction (``keep_maps``) that every variant here is derived from.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .. import artifacts, config, whitening
from .. import embedding as emb
from .offtheshelf import Coil, score

BACKBONE = "efficientnet_lite0"
LAYER = "head"
COLUMN_DIM = 128
COLUMN_PCA_ROWS = 20_000
SIFT_MODE = "detect"
SOURCES = ("conv", "sift")
METHODS = ("bow", "vlad", "fv")

K_GRID = {"bow": (64, 256, 1024, 4096), "vlad": (8, 16, 32, 64), "fv": (8, 16, 32, 64)}
SMALL_K_GRID = {"bow": (16, 64, 256), "vlad": (4, 8, 16), "fv": (4, 8, 16)}
# The deep-vs-handcrafted table uses K fixed in advance (not the test-set best of the sweep).
TABLE_K = {"bow": 1024, "vlad": 32, "fv": 16}
SMALL_TABLE_K = {"bow": 64, "vlad": 8, "fv": 8}
WHITEN_DIM = 512
GMM_MAX_TRAIN = 30_000
GMM_ITERATIONS = 50
SMALL_GMM_MAX_TRAIN = 5_000  # SMALL mode: notebooks must run in seconds
SMALL_GMM_ITERATIONS = 20
VAL_FRACTION = 0.2

ATTENTION_EPOCHS = 8
SMALL_ATTENTION_EPOCHS = 4
ATTENTION_HIDDEN = 256
PANEL_KINDS = ("crow", "sum", "max", "cam", "learned")

def _rows(base: dict, results: list[dict]) -> list[dict]:
    return [{**base, **r} for r in results]


# --------------------------------------------------------------------------- local descriptors
def deep_features(coil: Coil, split: str):
    """The one cached extraction everything here derives from: Lite0 ``head`` GeM rows + the kept head maps."""
    return coil.extract(split, BACKBONE, (LAYER,), ("gem",), keep_maps=(LAYER,))


def deep_maps(coil: Coil, split: str) -> np.ndarray:
    """``N×1280×h×w`` float16 head maps of a split (memory-mapped from the cache)."""
    return deep_features(coil, split).maps(LAYER)


ARTIFACT_VERSION = 1  # of the codebooks, idf, column PCA and attention head cached here: bump when they change


def _cached(coil: Coil, kind: str, key: dict, compute):
    """``compute()`` once per process (``coil.memo``) and once per cache (:mod:`retrievalkit.artifacts`)."""
    memo_key = (kind, *map(repr, key.values()))
    if memo_key not in coil.memo:
        coil.memo[memo_key] = artifacts.cached(kind, key, compute, version=ARTIFACT_VERSION)
    return coil.memo[memo_key]


def column_pca(coil: Coil, dim: int = COLUMN_DIM, max_rows: int = COLUMN_PCA_ROWS, seed: int = 0) -> whitening.PCA:
    """PCA (then L2) for L2-normalised conv columns, learned on at most ``max_rows`` LEARNING-split columns."""
    def fit():
        maps = deep_maps(coil, "learn")
        per_image = maps.shape[2] * maps.shape[3]
        n_images = min(len(maps), max(1, max_rows // per_image))
        images = np.sort(np.random.default_rng(seed).choice(len(maps), size=n_images, replace=False))
        columns = emb.conv_columns(np.asarray(maps[images]), normalize=True).descriptors
        return whitening.PCA(dim=min(dim, columns.shape[1])).fit(columns)

    key = {"data": deep_features(coil, "learn").key, "dim": dim, "max_rows": max_rows, "seed": seed}
    return _cached(coil, "column_pca", key, fit)


def _conv_local(coil: Coil, split: str, chunk: int = 256) -> emb.LocalDescriptors:
    maps = deep_maps(coil, split)
    pca = column_pca(coil)
    n, _, h, w = maps.shape
    out = np.empty((n * h * w, pca.transform(np.zeros((1, maps.shape[1]), np.float32)).shape[1]), np.float32)
    for start in range(0, n, chunk):
        cols = emb.conv_columns(np.asarray(maps[start:start + chunk]), normalize=True).descriptors
        out[start * h * w:start * h * w + len(cols)] = pca.transform(cols)
    return emb.LocalDescriptors(out, np.repeat(np.arange(n), h * w), n)


SIFT_CACHE_VERSION = 2  # bump when the descriptor code changes what it returns


def _sift_cache_path(paths, mode: str, bboxes=None) -> Path:
    """Cache file of RootSIFT for ``paths`` (cropped to ``bboxes`` when given): keyed by the files, the crops,
    the mode, OpenCV's version and ours (another OpenCV build may find other keypoints; a stale file would
    silently move every SIFT row)."""
    import cv2

    crops = [] if bboxes is None or all(b is None for b in bboxes) else [f"crop {b}" for b in bboxes]
    key = "\n".join([f"v{SIFT_CACHE_VERSION}", f"opencv {cv2.__version__}", mode, *map(str, paths), *crops])
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return config.cache_dir() / "sift" / f"rootsift-{mode}-{len(paths)}-{digest}.npz"


def sift_local(paths, mode: str = SIFT_MODE, bboxes=None, progress=None) -> emb.LocalDescriptors:
    """RootSIFT of every image of ``paths`` (optionally cropped), read from or written to the SIFT cache."""
    paths = [str(p) for p in paths]
    path = _sift_cache_path(paths, mode, bboxes)
    if path.is_file():
        with np.load(path) as data:
            return emb.LocalDescriptors(data["descriptors"], data["image_index"], int(data["n_images"]))
    local, skipped = emb.extract_sift(paths, mode=mode, root=True, bbox=bboxes, workers=2, progress=progress)
    with config.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, descriptors=local.descriptors, image_index=local.image_index, n_images=local.n_images,
                 meta=np.array(json.dumps({"mode": mode, "root": True, "skipped": len(skipped)})))
    return local


def _sift_local(coil: Coil, split: str, mode: str = SIFT_MODE) -> emb.LocalDescriptors:
    return sift_local(coil.split(split).db_paths, mode, progress=coil.progress)


def local_descriptors(coil: Coil, split: str, source: str) -> emb.LocalDescriptors:
    """Local descriptors of every database image of a split: ``source`` is ``"conv"`` or ``"sift"``.

    Survey §2.3.2.2 and §2.1 question 1; taught in notebooks/05_embeddings_bow_vlad_fv.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown local descriptor source {source!r}; choose one of {SOURCES}")
    key = ("local", split, source)
    memo = coil.memo
    if key not in memo:
        memo[key] = _conv_local(coil, split) if source == "conv" else _sift_local(coil, split)
    return memo[key]


# --------------------------------------------------------------------------- codebooks and encoders
def _learn_key(coil: Coil, source: str) -> str:
    """Fingerprint of the LEARNING-split local descriptors of ``source``: the data every codebook learns from."""
    if ("learn_key", source) not in coil.memo:
        learn = local_descriptors(coil, "learn", source)
        coil.memo["learn_key", source] = artifacts.fingerprint(learn.descriptors, learn.image_index,
                                                               np.int64(learn.n_images))
    return coil.memo["learn_key", source]


def codebook(coil: Coil, source: str, kind: str, k: int):
    """A k-means (``kind="kmeans"``) or GMM (``"gmm"``) codebook learned on LEARNING-split descriptors."""
    if kind == "kmeans":
        book = emb.KMeansCodebook(k=k, seed=0)
    else:
        n_iter, max_train = (SMALL_GMM_ITERATIONS, SMALL_GMM_MAX_TRAIN) if coil.small else (GMM_ITERATIONS, GMM_MAX_TRAIN)
        book = emb.GMMCodebook(k=k, seed=0, n_iter=n_iter, max_train=max_train)
    return _cached(coil, "codebook", {"data": _learn_key(coil, source), **artifacts.settings(book)},
                   lambda: book.fit(local_descriptors(coil, "learn", source), split="learn"))


def encoder(coil: Coil, source: str, method: str, k: int):
    """A fitted BoW (tf-idf from the learning split), VLAD or FV encoder with ``k`` words / Gaussians."""
    if method == "bow":
        book = codebook(coil, source, "kmeans", k)
        bow = emb.BoW(book)
        idf = _cached(coil, "bow_idf", {"data": _learn_key(coil, source), **artifacts.settings(book)},
                      lambda: bow.fit_idf(local_descriptors(coil, "learn", source), split="learn").idf_)
        bow.idf_, bow.n_learning_images_ = idf, local_descriptors(coil, "learn", source).n_images
        return bow
    if method == "vlad":
        return emb.VLAD(codebook(coil, source, "kmeans", k))
    if method == "fv":
        return emb.FisherVector(codebook(coil, source, "gmm", k))
    raise ValueError(f"unknown embedding {method!r}; choose one of {METHODS}")


def encode(coil: Coil, split: str, source: str, method: str, k: int) -> np.ndarray:
    """``N×dim`` L2-normalised embeddings of a split's database images."""
    key = ("encoded", split, source, method, k)
    memo = coil.memo
    if key not in memo:
        memo[key] = np.asarray(encoder(coil, source, method, k).encode(local_descriptors(coil, split, source)),
                               dtype=np.float32)
    return memo[key]


def _bytes_per_image(method: str, X: np.ndarray) -> float:
    if method == "bow":  # stored sparse, as in an inverted file: (word id, weight) pairs of 4 + 4 bytes
        return float(8 * np.count_nonzero(X, axis=1).mean())
    return float(4 * X.shape[1])


def _embedding_rows(coil: Coil, source: str, method: str, k: int, base: dict | None = None) -> list[dict]:
    test = coil.split("test")
    start = time.perf_counter()
    X = encode(coil, "test", source, method, k)
    seconds = time.perf_counter() - start
    local = local_descriptors(coil, "test", source)
    row = {"source": source, "method": method, "K": k, "dim": X.shape[1], "desc_dim": local.dim,
           "local_per_image": local.n_descriptors / max(local.n_images, 1),
           "bytes_per_image": _bytes_per_image(method, X), "encode_s": seconds, **(base or {})}
    return _rows(row, score(X, test))


# --------------------------------------------------------------------------- experiments
def codebook_sizes(coil: Coil, sources=SOURCES, methods=METHODS, k_grid: dict | None = None) -> pd.DataFrame:
    """mAP vs codebook size K for BoW, VLAD and FV on conv columns and on RootSIFT (also vs dim and bytes).

    ``k_grid`` maps each method to its Ks (default :data:`K_GRID`, or :data:`SMALL_K_GRID` in SMALL
    mode). Columns: source, method, K, dim (the embedding's length), desc_dim, local_per_image,
    bytes_per_image (float32 dense; BoW as sparse (id, weight) pairs), encode_s, then the metrics of
    :func:`retrievalkit.evaluate.evaluate` per protocol. Survey §2.3.2.2, Eqs. 2.4–2.11.
    """
    grid = k_grid or (SMALL_K_GRID if coil.small else K_GRID)
    rows = []
    for source in sources:
        for method in methods:
            for k in grid[method]:
                rows += _embedding_rows(coil, source, method, k)
    return pd.DataFrame(rows)


def _whitened(coil: Coil, source: str, method: str, k: int, dim: int = WHITEN_DIM) -> np.ndarray:
    learn_x, test_x = encode(coil, "learn", source, method, k), encode(coil, "test", source, method, k)
    dim = min(dim, len(learn_x) - 1, learn_x.shape[1])
    return whitening.PCAWhitening(dim=dim).fit(learn_x).transform(test_x).astype(np.float32)


def deep_vs_handcrafted(coil: Coil, table_k: dict | None = None, whiten_dim: int = WHITEN_DIM) -> pd.DataFrame:
    """The survey's question 1 on COIL-100: handcrafted vs deep descriptors, global and embedded.

    Rows: colour histogram; RootSIFT + BoW / VLAD / FV; deep global GeM (raw and PCA-whitened);
    conv columns + BoW / VLAD / FV; VLAD and FV of both sources again after PCA-whitening to
    ``whiten_dim`` (the "+ PCA_w" of Table 2.2). K is fixed in advance (:data:`TABLE_K`), not picked on
    the test split. All learning (codebooks, idf, PCA, whitening) on the learning split.
    Survey §2.1 question 1, §2.3.2.2, Table 2.2.
    """
    from .. import baselines

    ks = table_k or (SMALL_TABLE_K if coil.small else TABLE_K)
    test = coil.split("test")
    rows, pq = [], []

    def sc(X, base: dict) -> list[dict]:
        return score(X, test, per_query=pq, key={"method": f"{base['descriptor']} · {base['embedding']}"})

    hist, _ = baselines.describe_images(test.db_paths, progress=coil.progress)
    rows += _rows({"family": "handcrafted", "descriptor": "colour histogram", "embedding": "global",
                   "K": np.nan, "dim": hist.shape[1]},
                  sc(hist, {"descriptor": "colour histogram", "embedding": "global"}))
    for source, family, name in (("sift", "handcrafted", "RootSIFT"), ("conv", "deep", "conv columns")):
        if source == "conv":
            ft, fl = deep_features(coil, "test").get(LAYER, "gem"), deep_features(coil, "learn").get(LAYER, "gem")
            rows += _rows({"family": "deep", "descriptor": "GeM (Lite0 head)", "embedding": "global",
                           "K": np.nan, "dim": ft.shape[1]},
                          sc(ft, {"descriptor": "GeM (Lite0 head)", "embedding": "global"}))
            dim = min(whiten_dim, len(fl) - 1, fl.shape[1])
            xw = whitening.PCAWhitening(dim=dim).fit(fl).transform(ft).astype(np.float32)
            rows += _rows({"family": "deep", "descriptor": "GeM (Lite0 head)", "embedding": "global + PCA_w",
                           "K": np.nan, "dim": xw.shape[1]},
                          sc(xw, {"descriptor": "GeM (Lite0 head)", "embedding": "global + PCA_w"}))
        for method in METHODS:
            X = encode(coil, "test", source, method, ks[method])
            base = {"family": family, "descriptor": name, "embedding": method.upper() if method != "fv" else "FV",
                    "K": ks[method], "dim": X.shape[1]}
            rows += _rows(base, sc(X, base))
            if method in ("vlad", "fv"):
                xw = _whitened(coil, source, method, ks[method], whiten_dim)
                whitened = {**base, "embedding": f"{base['embedding']} + PCA_w", "dim": xw.shape[1]}
                rows += _rows(whitened, sc(xw, whitened))
    df = pd.DataFrame(rows)
    df["method"] = df["descriptor"] + " · " + df["embedding"]
    df.attrs["per_query"] = pq  # test AP per query, for the verdicts' paired bootstrap
    return df


# --------------------------------------------------------------------------- attention
def _labels_split(labels: np.ndarray, val_fraction: float = VAL_FRACTION) -> np.ndarray:
    """Boolean mask of the validation rows: the last ``val_fraction`` of the (learning) objects."""
    objects = np.unique(labels)
    val_ids = objects[-max(1, int(round(val_fraction * len(objects)))):]
    return np.isin(labels, val_ids)


def train_head(coil: Coil, epochs: int | None = None, hidden: int = ATTENTION_HIDDEN, seed: int = 0):
    """The DELF-style attention head trained on frozen LEARNING-split head maps: ``(head, history DataFrame)``.

    Training objects: the first 80% of the learning objects; validation (epoch choice): the last 20%.
    Survey §2.3.2.3, Figure 2.8c; taught in notebooks/06_attention.
    """
    from ..train.heads import LearnedAttention

    epochs = epochs if epochs is not None else (SMALL_ATTENTION_EPOCHS if coil.small else ATTENTION_EPOCHS)
    model = LearnedAttention(hidden, epochs=epochs, seed=seed, device="cpu", progress=coil.progress)
    labels = np.asarray(coil.split("learn").db_labels)

    def fit():
        maps = deep_maps(coil, "learn")
        is_val = _labels_split(labels)
        train_idx, val_idx = np.flatnonzero(~is_val), np.flatnonzero(is_val)
        maps_train = np.asarray(maps[train_idx[0]:train_idx[-1] + 1]) if _contiguous(train_idx) else np.asarray(maps[train_idx])
        maps_val = np.asarray(maps[val_idx[0]:val_idx[-1] + 1]) if _contiguous(val_idx) else np.asarray(maps[val_idx])
        with config.deterministic():
            return model.fit(maps_train, labels[train_idx], maps_val, labels[val_idx])

    key = {"data": deep_features(coil, "learn").key, "labels": artifacts.fingerprint(labels),
           "val_fraction": VAL_FRACTION, **artifacts.settings(model)}
    fitted = _cached(coil, "attention_head", key, fit)
    history = pd.DataFrame(fitted.history_)
    history["train_s"] = artifacts.seconds("attention_head", key, version=ARTIFACT_VERSION)
    return fitted.head_, history


def _contiguous(idx: np.ndarray) -> bool:
    return len(idx) > 0 and idx[-1] - idx[0] + 1 == len(idx)


def _classifier():
    from .. import backbones as bb

    net = bb.load_backbone(BACKBONE, device="cpu")
    return net.classifier_weight.detach().float().cpu(), net.classifier_bias.detach().float().cpu()


ATTENTION_VARIANTS = (
    # (variant, kind) — see :func:`attention`
    ("average (SPoC)", "plain"),
    ("GeM p=3", "plain"),
    ("spatial: CroW", "non-parametric spatial"),
    ("spatial: sum", "non-parametric spatial"),
    ("spatial: max", "non-parametric spatial"),
    ("channel only (CroW Ω)", "non-parametric channel"),
    ("CroW (spatial + channel)", "non-parametric both"),
    ("CAM (top-10 classes)", "non-parametric class maps"),
    ("learned (DELF-style head)", "parametric"),
)


def attention_descriptors(maps, variant: str, *, fc=None, head=None, chunk: int = 256) -> np.ndarray:
    """L2-normalised ``N×C`` descriptors of stored maps under one of :data:`ATTENTION_VARIANTS`."""
    import torch

    from ..nn import attention as att
    from ..nn import functional as F

    if variant.startswith("learned"):
        return att.attention_descriptors(maps, head)
    out = []
    with torch.inference_mode():
        for start in range(0, len(maps), chunk):
            x = torch.as_tensor(np.asarray(maps[start:start + chunk], dtype=np.float32))
            if variant == "average (SPoC)":
                v = att.attention_pool(x)
            elif variant == "GeM p=3":
                v = att.attention_pool(x, p=3.0)
            elif variant.startswith("spatial: "):
                v = att.attention_pool(x, att.spatial_attention(x, variant.split(": ")[1].lower()))
            elif variant.startswith("channel only"):
                v = att.attention_pool(x, channel=att.channel_attention(x))
            elif variant.startswith("CroW"):
                v = att.attention_pool(x, att.spatial_attention(x, "crow"), att.channel_attention(x))
            elif variant.startswith("CAM"):
                v = att.attention_pool(x, att.cam_attention(x, *fc))
            else:
                raise ValueError(f"unknown attention variant {variant!r}; choose from {[v for v, _ in ATTENTION_VARIANTS]}")
            out.append(F.l2n(v).numpy())
    return np.concatenate(out).astype(np.float32)


def attention(coil: Coil, epochs: int | None = None, hidden: int = ATTENTION_HIDDEN) -> pd.DataFrame:
    """Attention-weighted pooling vs plain pooling on the Lite0 head maps (Survey §2.3.2.3, Figure 2.8).

    One row per variant × protocol (:data:`ATTENTION_VARIANTS`): plain average and GeM pooling;
    CroW, channel-sum and channel-max spatial maps; CroW's channel weights alone; both (CroW);
    CAM of the ImageNet classifier; a learned DELF-style head (trained by :func:`train_head` on the
    learning split). All L2-normalised, no whitening, so the only difference is the weighting.
    The head's training history is in ``df.attrs["history"]``.
    """
    test = coil.split("test")
    maps = deep_maps(coil, "test")
    head, history = train_head(coil, epochs, hidden)
    fc = _classifier()
    rows = []
    for variant, kind in ATTENTION_VARIANTS:
        start = time.perf_counter()
        X = attention_descriptors(maps, variant, fc=fc, head=head)
        rows += _rows({"variant": variant, "kind": kind, "dim": X.shape[1],
                       "ms_per_image": 1000 * (time.perf_counter() - start) / len(maps)}, score(X, test))
    df = pd.DataFrame(rows)
    df.attrs["history"] = history
    return df


def attention_examples(coil: Coil, n: int = 4, kinds=PANEL_KINDS, epochs: int | None = None,
                       hidden: int = ATTENTION_HIDDEN):
    """``(images, maps)`` for a heat-map panel: ``n`` test images (pose 0° of the first objects) and
    ``{kind: n×h×w}`` attention maps of every kind (the learned one from :func:`train_head`)."""
    import torch

    from ..datasets.images import read_image
    from ..nn import attention as att

    test = coil.split("test")
    rows = np.asarray(test.query_db_index)[::4][:n]  # 4 query poses per object: one per object
    x = torch.as_tensor(np.asarray(deep_maps(coil, "test")[np.sort(rows)], dtype=np.float32))
    rows = np.sort(rows)
    fc_weight, fc_bias = _classifier() if "cam" in kinds else (None, None)
    head = train_head(coil, epochs, hidden)[0] if "learned" in kinds else None
    maps = att.attention_maps(x, kinds, fc_weight=fc_weight, fc_bias=fc_bias, head=head)
    images = [read_image(test.db_paths[i]) for i in rows]
    return images, {k: v.numpy() for k, v in maps.items()}


__all__ = [
    "BACKBONE", "LAYER", "COLUMN_DIM", "SIFT_MODE", "K_GRID", "SMALL_K_GRID", "TABLE_K", "SMALL_TABLE_K",
    "ATTENTION_VARIANTS", "deep_features", "deep_maps", "column_pca", "local_descriptors", "codebook", "encoder",
    "encode", "codebook_sizes", "deep_vs_handcrafted", "train_head", "attention", "attention_descriptors",
    "attention_examples",
]
