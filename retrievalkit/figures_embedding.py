"""Figures for feature embedding (BoW / VLAD / FV) and attention: each takes results and returns a Figure.

They only draw — :mod:`retrievalkit.experiments.embedding` computes — so every figure can be redrawn
from the saved CSVs. Survey §2.3.2.2 (Eqs. 2.4–2.11), §2.3.2.3 (Figure 2.8); taught in
notebooks/05_embeddings_bow_vlad_fv and notebooks/06_attention.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .figures import OUTSIDE
from .rows import DEFAULT_EPS

METHOD_LABELS = {"bow": "BoW (tf-idf)", "vlad": "VLAD", "fv": "Fisher vector"}
SOURCE_STYLE = {"conv": "-", "sift": "--"}
SOURCE_LABELS = {"conv": "conv columns", "sift": "RootSIFT"}
METHOD_COLORS = {"bow": "#1f77b4", "vlad": "#ff7f0e", "fv": "#2ca02c"}
FAMILY_COLORS = {"handcrafted": "#8c8c8c", "deep": "#1f77b4"}
KIND_LABELS = {"crow": "CroW spatial", "sum": "channel sum", "max": "channel max", "cam": "CAM",
               "learned": "learned (DELF-style)"}


def _main(df, protocol: str):
    return df[df["protocol"] == protocol] if "protocol" in df.columns else df


def codebook_curves(df, protocol: str = "all", title: str | None = None):
    """mAP vs codebook size K (left) and vs bytes per image (right), one line per (descriptor, embedding).

    Solid lines: conv columns; dashed: RootSIFT. Taught in notebooks/05_embeddings_bow_vlad_fv.
    """
    import matplotlib.pyplot as plt

    data = _main(df, protocol)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for (source, method), part in data.groupby(["source", "method"], sort=False):
        part = part.sort_values("K")
        style = dict(ls=SOURCE_STYLE.get(source, ":"), color=METHOD_COLORS.get(method), marker="o", ms=4,
                     label=f"{SOURCE_LABELS.get(source, source)} · {METHOD_LABELS.get(method, method)}")
        axes[0].plot(part["K"], part["mAP"], **style)
        axes[1].plot(part["bytes_per_image"], part["mAP"], **style)
    axes[0].set_xscale("log", base=2)
    axes[0].set_xlabel("codebook size K (words / Gaussians)")
    axes[1].set_xscale("log", base=2)
    axes[1].set_xlabel("bytes per image (float32; BoW sparse)")
    for ax in axes:
        ax.set_ylabel(f"mAP ({protocol})")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, **OUTSIDE)
    fig.suptitle(title or "BoW, VLAD and Fisher vectors on COIL-100: codebook size and memory", fontsize=10)
    fig.tight_layout()
    return fig


def method_bars(df, label: str = "method", protocol: str = "all", color_by: str = "family", title: str | None = None):
    """Horizontal bars of mAP per method (e.g. the deep-vs-handcrafted table), coloured by family.

    The descriptor length is written at the end of each bar. Taught in notebooks/05_embeddings_bow_vlad_fv.
    """
    import matplotlib.pyplot as plt

    data = _main(df, protocol).reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(data) + 1.2))
    colors = [FAMILY_COLORS.get(v, "#9467bd") for v in data[color_by]] if color_by in data.columns else None
    y = np.arange(len(data))[::-1]
    ax.barh(y, data["mAP"], color=colors)
    ax.set_yticks(y, data[label], fontsize=8)
    for yi, (m, d) in zip(y, zip(data["mAP"], data.get("dim", [None] * len(data)))):
        ax.text(m + 0.01, yi, f"{m:.3f}" + (f"  ({int(d)}-d)" if d is not None and d == d else ""), va="center", fontsize=7)
    ax.set_xlim(0, 1.3)
    ax.set_xticks(np.linspace(0, 1, 6))
    ax.set_xlabel(f"mAP ({protocol})")
    if color_by in data.columns:
        for family, color in FAMILY_COLORS.items():
            if (data[color_by] == family).any():
                ax.barh([np.nan], [np.nan], color=color, label=family)
        ax.legend(fontsize=7, **OUTSIDE)
    ax.set_title(title or "Deep vs handcrafted on COIL-100 (survey §2.1, question 1)", fontsize=10)
    fig.tight_layout()
    return fig


def attention_bars(df, protocols: Sequence[str] = ("all", "easy", "hard"), title: str | None = None):
    """Grouped bars: mAP of every attention variant (and plain pooling) per protocol.

    Taught in notebooks/06_attention.
    """
    import matplotlib.pyplot as plt

    protocols = [p for p in protocols if p in set(df["protocol"])]
    variants = list(dict.fromkeys(df["variant"]))
    fig, ax = plt.subplots(figsize=(9, 3.6))
    width = 0.8 / max(len(protocols), 1)
    x = np.arange(len(variants))
    for i, protocol in enumerate(protocols):
        part = df[df["protocol"] == protocol].set_index("variant").reindex(variants)
        ax.bar(x + (i - (len(protocols) - 1) / 2) * width, part["mAP"], width, label=protocol)
    ax.set_xticks(x, variants, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("mAP")
    lo = float(np.nanmin(df["mAP"]))
    ax.set_ylim(max(0.0, lo - 0.1), 1.0)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, title="protocol", title_fontsize=8, **OUTSIDE)
    ax.set_title(title or "Attention-weighted vs plain pooling (Lite0 head, COIL-100)", fontsize=10)
    fig.tight_layout()
    return fig


def overlay(image, attention_map_hw, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Heat-map overlay: the ``h×w`` attention map upsampled bilinearly to the image, coloured, blended.

    ``image``: a PIL image (or ``H×W×3`` uint8 array). The map is min–max scaled to [0, 1] for
    display (so maps of any scale compare by shape, not magnitude), coloured with matplotlib's
    ``cmap`` and mixed as ``(1 - alpha)·image + alpha·heat``. Returns ``H×W×3`` uint8 RGB.
    Survey §2.3.2.3, Figure 2.8; taught in notebooks/06_attention.
    """
    import matplotlib
    import torch

    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"image must be RGB (H×W×3), got shape {rgb.shape}")
    m = torch.as_tensor(attention_map_hw).detach().to("cpu", torch.float32).squeeze()
    if m.ndim != 2:
        raise ValueError(f"attention map must be h×w (one image), got shape {tuple(m.shape)}")
    m = torch.nn.functional.interpolate(m[None, None], size=rgb.shape[:2], mode="bilinear", align_corners=False)[0, 0]
    m = (m - m.min()) / (m.max() - m.min()).clamp(min=DEFAULT_EPS)
    heat = matplotlib.colormaps[cmap](m.numpy())[..., :3] * 255
    return np.clip((1 - alpha) * rgb + alpha * heat, 0, 255).round().astype(np.uint8)


def attention_panel(images, maps: dict, alpha: float = 0.5, size: int = 2.0, title: str | None = None):
    """Heat-map overlays: one axis per (image, kind) — rows are images, columns attention kinds.

    ``images``: PIL images (or H×W×3 arrays); ``maps``: ``{kind: n×h×w}`` as returned by
    :func:`retrievalkit.nn.attention.attention_maps` (tensors or arrays). Each map is min–max
    scaled for display by :func:`overlay`. Taught in notebooks/06_attention.
    """
    import matplotlib.pyplot as plt

    kinds = list(maps)
    n = len(images)
    if any(len(maps[k]) != n for k in kinds):
        raise ValueError(f"every kind needs one map per image ({n}), got {[len(maps[k]) for k in kinds]}")
    fig, axes = plt.subplots(n, len(kinds), figsize=(size * len(kinds), size * n), squeeze=False)
    for r, image in enumerate(images):
        for c, kind in enumerate(kinds):
            ax = axes[r, c]
            ax.imshow(overlay(image, maps[kind][r], alpha=alpha))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(KIND_LABELS.get(kind, kind), fontsize=8)
    fig.suptitle(title or "Where each attention looks (Survey Figure 2.8): heat maps on COIL-100 test images",
                 fontsize=9)
    fig.tight_layout()
    return fig


def training_curve(history, title: str | None = None):
    """The learned attention head's training: loss (left axis) and validation mAP (right axis) per epoch.

    Validation objects are held out of the LEARNING split; epoch 0 is the untrained head.
    Taught in notebooks/06_attention.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(history["epoch"], history["loss"], "o-", color="#1f77b4", label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (cosine softmax)", color="#1f77b4")
    if "val_mAP" in history:
        ax2 = ax.twinx()
        ax2.plot(history["epoch"], history["val_mAP"], "s--", color="#d62728", label="validation mAP")
        ax2.set_ylabel("validation mAP (learning split)", color="#d62728")
        best = int(np.nanargmax(history["val_mAP"].to_numpy()))
        ax2.axvline(history["epoch"].iloc[best], color="#d62728", alpha=0.3)
    ax.grid(alpha=0.3)
    ax.set_title(title or "Learned attention head: training curve", fontsize=10)
    fig.tight_layout()
    return fig


__all__ = ["codebook_curves", "method_bars", "attention_bars", "attention_panel", "training_curve"]
