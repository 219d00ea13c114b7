"""Figures for fine-tuning: before/after mAP per loss, training curves, embeddings before/after.

They only draw (numbers come from :mod:`retrievalkit.experiments.finetune`), so each can be redrawn
from ``results/finetune*.csv`` in seconds. Survey §2.4, Table 2.3; taught in
notebooks/09_supervised_finetuning and notebooks/10_unsupervised_finetuning.
"""
from __future__ import annotations

import numpy as np

from .figures import OUTSIDE


def _plt():
    import matplotlib.pyplot as plt

    return plt


def before_after(scores, protocols=("all", "easy", "hard")):
    """Grouped bars: test mAP after fine-tuning per method, the off-the-shelf level as a dashed line per protocol."""
    from matplotlib.patches import Patch

    plt = _plt()
    protocols = [p for p in protocols if p in set(scores["protocol"])]
    fig, axes = plt.subplots(1, len(protocols), figsize=(5 * len(protocols), 4), squeeze=False, sharey=True)
    after = scores[scores["stage"] == "after"]
    methods = list(dict.fromkeys(after["method"]))
    for ax, proto in zip(axes[0], protocols):
        part = after[after["protocol"] == proto].set_index("method")
        off = scores[(scores["stage"] == "before") & (scores["protocol"] == proto)]["mAP"]
        colors = ["tab:blue" if part.loc[m, "supervision"] == "supervised" else "tab:orange" for m in methods]
        ax.bar(range(len(methods)), [part.loc[m, "mAP"] for m in methods], color=colors)
        if len(off):
            ax.axhline(float(off.iloc[0]), color="k", ls="--", lw=1, label="off-the-shelf")
        ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right")
        ax.set_title(f"COIL-100 test, protocol '{proto}'")
        lo = min([part["mAP"].min()] + ([float(off.iloc[0])] if len(off) else []))
        ax.set_ylim(max(0.0, lo - 0.1), 1.0)
    handles = [Patch(color="tab:blue", label="supervised"), Patch(color="tab:orange", label="unsupervised")]
    axes[0][-1].legend(handles=handles + axes[0][-1].get_legend_handles_labels()[0], fontsize=8, **OUTSIDE)
    axes[0][0].set_ylabel("mAP after fine-tuning")
    fig.tight_layout()
    return fig


def training_curves(history):
    """Two panels: training loss per epoch (each method scaled by its first epoch) and validation mAP per epoch."""
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for method, g in history.groupby("method", sort=False):
        g = g.sort_values("epoch")
        trained = g[g["epoch"] > 0]
        if len(trained) and trained["loss"].iloc[0] > 0:
            ax1.plot(trained["epoch"], trained["loss"] / trained["loss"].iloc[0], marker="o", label=method)
        if "val_mAP" in g:
            ls = "-" if (g["supervision"] == "supervised").all() else "--"
            ax2.plot(g["epoch"], g["val_mAP"], marker="o", ls=ls, label=method)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss / loss of epoch 1")
    ax1.set_title("training loss")
    ax2.set_xlabel("epoch (0 = before fine-tuning)")
    ax2.set_ylabel("validation mAP (learning objects held out)")
    ax2.set_title("validation mAP (dashed: unsupervised, monitor only)")
    ax2.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def embedding(points):
    """Scatter of 2-D PCA coordinates of a few test objects, one panel per stage (before / after)."""
    plt = _plt()
    stages = list(dict.fromkeys(points["stage"]))
    fig, axes = plt.subplots(1, len(stages), figsize=(5 * len(stages), 4.5), squeeze=False)
    objects = sorted(points["object"].unique())
    cmap = plt.get_cmap("tab10")
    for ax, stage in zip(axes[0], stages):
        part = points[points["stage"] == stage]
        for i, obj in enumerate(objects):
            g = part[part["object"] == obj]
            ax.scatter(g["x"], g["y"], s=12, color=cmap(i % 10), label=f"object {obj}")
        ax.set_title(f"test objects, PCA 2-D — {stage}")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def reported_vs_ours(ours, reported):
    """Left: the survey's Table 2.3 Oxford5k mAP by loss family; right: our COIL-100 before → after by loss."""
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    rep = reported.dropna(subset=["oxford5k"])
    for i, (loss, g) in enumerate(rep.groupby("loss", sort=False)):
        ax1.scatter([i] * len(g), g["oxford5k"], s=20)
    ax1.set_xticks(range(rep["loss"].nunique()), list(dict.fromkeys(rep["loss"])), rotation=30, ha="right")
    ax1.set_ylabel("Oxford5k mAP (%)")
    ax1.set_title("survey Table 2.3 (reported)")
    x = np.arange(len(ours))
    ax2.bar(x - 0.2, 100 * ours["coil100_mAP_before"], 0.4, label="before (off-the-shelf)", color="0.7")
    ax2.bar(x + 0.2, 100 * ours["coil100_mAP_after"], 0.4, label="after", color="tab:blue")
    ax2.set_xticks(x, ours["method"], rotation=30, ha="right")
    ax2.set_ylabel("COIL-100 test mAP (%)")
    ax2.set_ylim(max(0, 100 * min(ours["coil100_mAP_before"].min(), ours["coil100_mAP_after"].min()) - 10), 100)
    ax2.set_title("ours (reproduced)")
    ax2.legend(fontsize=8, **OUTSIDE)
    fig.tight_layout()
    return fig
