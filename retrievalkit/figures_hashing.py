"""Figures for hashing and indexing: mAP vs bits, code diagnostics, PR curves, Pareto, scale.

They only draw (the numbers come from :mod:`retrievalkit.experiments.hashing`), so each can be
redrawn from ``results/hashing*.csv``, ``table_2_1.csv`` or ``scale.csv`` in seconds.
Survey §2.3.2.4, §2.1.2 challenge 3, Table 2.1; taught in notebooks/07_hashing and
notebooks/08_indexing_and_efficiency.
"""
from __future__ import annotations

import numpy as np

from .figures import OUTSIDE, finish_axes, place_labels

MARKERS = {"lsh": "v", "pca_sign": "s", "itq": "o", "deep": "D", "deep+balance": "^", "deep+decorrelation": "<",
           "deep+both": "*", "float": "x"}


def _plt():
    import matplotlib.pyplot as plt

    return plt


def map_vs_bits(df, title: str | None = None):
    """One panel per dataset: the headline mAP against code length, one line per method; the
    uncompressed float descriptor as a dashed line."""
    plt = _plt()
    datasets = list(dict.fromkeys(df["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    for ax, name in zip(axes[0], datasets):
        part = df[df["dataset"] == name]
        for method, g in part[part["method"] != "float"].groupby("method", sort=False):
            g = g.sort_values("bits")
            ax.plot(g["bits"], g["mAP"], marker=MARKERS.get(method, "o"), label=method)
        flt = part[part["method"] == "float"]
        if len(flt):
            ax.axhline(flt["mAP"].iloc[0], color="k", ls="--", lw=1,
                       label=f"float {int(flt['bytes_per_vector'].iloc[0])} B")
        ax.set_xscale("log", base=2)
        bits = sorted(part.loc[part["method"] != "float", "bits"].unique())
        ax.set_xticks(bits, [str(b) for b in bits])
        ax.set_xlabel("code length (bits)")
        ax.set_ylabel(part["metric"].iloc[0])
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, **OUTSIDE)
    fig.suptitle(title or "mAP vs code length (Survey §2.3.2.4)")
    fig.tight_layout()
    return fig


def code_diagnostics(df, bits: int | None = None, title: str | None = None):
    """Bit imbalance and mean |bit correlation| per method (lower is better for both), per dataset."""
    plt = _plt()
    data = df[df["method"] != "float"]
    bits = bits or int(data["bits"].median())
    data = data[data["bits"] == bits]
    datasets = list(dict.fromkeys(data["dataset"]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.8 / max(len(datasets), 1)
    methods = list(dict.fromkeys(data["method"]))
    x = np.arange(len(methods))
    for ax, column, label, what in ((axes[0], "mean_balance", "mean |mean of ±1 bit|", "bit balance (0 = balanced)"),
                                    (axes[1], "mean_abs_corr", "mean |corr| between bits",
                                     "bit correlation (0 = uncorrelated)")):
        for i, name in enumerate(datasets):
            part = data[data["dataset"] == name].set_index("method").reindex(methods)
            ax.bar(x + i * width, part[column], width, label=name)
        ax.set_xticks(x + width * (len(datasets) - 1) / 2, methods, rotation=30, ha="right")
        ax.set_ylabel(label)
        ax.set_title(what, fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    axes[1].legend(fontsize=8, **OUTSIDE)
    fig.suptitle(title or f"Code quality at {bits} bits: bit balance and bit uncorrelation (§2.3.2.4 b)")
    fig.tight_layout()
    return fig


def pr_curves(curves, title: str | None = None):
    """Interpolated precision–recall, one panel per dataset, one line per method."""
    plt = _plt()
    datasets = list(dict.fromkeys(curves["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    for ax, name in zip(axes[0], datasets):
        part = curves[curves["dataset"] == name]
        for method, g in part.groupby("method", sort=False):
            ax.plot(g["recall"], g["precision"], marker=MARKERS.get(method, "o"), ms=4, label=method,
                    ls="--" if method == "float" else "-")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(f"{name} ({int(part.loc[part['method'] != 'float', 'bits'].iloc[0])} bits)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, **OUTSIDE)
    fig.suptitle(title or "Precision–recall of binary codes vs float descriptors")
    fig.tight_layout()
    return fig


def pareto(table, y: str = "mAP", x: str = "ms_per_query_batch", title: str | None = None):
    """Accuracy vs time per query, marker area ∝ bytes per vector (log), Pareto front in grey."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    size = 20 + 60 * np.log2(np.maximum(table["bytes_per_vector"].to_numpy(dtype=float), 1)) / 4
    colors = {"float index": "#1f77b4", "binary codes": "#d62728"}
    for (fam, g), s in zip(table.groupby("family", sort=False), [None] * 10):
        ax.scatter(g[x], g[y], s=size[g.index], alpha=0.7, color=colors.get(fam), label=fam, edgecolor="k")
    order = table.sort_values([x, y], ascending=[True, False])
    front, best = [], -np.inf
    for _, r in order.iterrows():
        if r[y] > best:
            front.append((r[x], r[y]))
            best = r[y]
    if front:
        fx, fy = zip(*front)
        ax.step(fx, fy, where="post", color="grey", lw=1, ls=":")
    finish_axes(ax, f"{x.replace('_', ' ')} (ms, log)", y,
                title or "Accuracy–time–memory (Table 2.1 analogue; marker area ~ log bytes per vector)",
                log_x=True, grid={"alpha": 0.3}, legend={"fontsize": 8, **OUTSIDE}, title_size=10)
    ax.margins(0.15)
    fig.tight_layout()
    place_labels(ax, table[x].to_numpy(), table[y].to_numpy(),
                 [f"{r['method']}\n{r['bytes_per_vector']:.0f} B" for _, r in table.iterrows()], sizes=size)
    return fig


def scale_curves(df, title: str | None = None):
    """Time per query and bytes per vector against database size (real + distractors), per method."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    acc = [c for c in df.columns if c.startswith("mAP@")][0]
    for method, g in df.groupby("method", sort=False):
        g = g.sort_values("n")
        axes[0].plot(g["n"], g["ms_per_query_batch"], marker="o", label=method)
        axes[1].plot(g["n"], g["bytes_per_vector"], marker="o", label=method)
        axes[2].plot(g["n"], g[acc], marker="o", label=method)
    for ax, label in zip(axes, ("ms per query (batch)", "bytes per vector (index size / N)", acc)):
        ax.set_xscale("log")
        ax.set_xlabel("database size N (real + distractors)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    axes[2].legend(fontsize=8)
    fig.suptitle(title or "Scale: COIL-100 test database + synthetic distractors")
    fig.tight_layout()
    return fig


__all__ = ["map_vs_bits", "code_diagnostics", "pr_curves", "pareto", "scale_curves"]
