"""Figures for re-ranking: accuracy against time per query (Table 2.1 as a picture), the learning-split grid.

They only draw (numbers from :mod:`retrievalkit.experiments.rerank`), so each can be redrawn from
``results/rerank.csv`` / ``rerank_scale.csv`` / ``rerank_grid.csv`` in seconds. Survey §2.4.2.1,
§2.5.3, Table 2.1; taught in notebooks/11_diffusion_and_reranking.
"""
from __future__ import annotations

import numpy as np

from .figures import finish_axes

MARKERS = {"none": "x", "AQE": "v", "αQE": "^", "DBA": "s", "DBA+αQE": "D", "diffusion iterative": "o",
           "diffusion CG (online)": "P", "diffusion offline (precomputed)": "*", "diffusion joint (transductive)": "h"}


def _plt():
    import matplotlib.pyplot as plt

    return plt


def accuracy_time(df, title: str | None = None):
    """mAP against ms per query (log x), one marker per method; one panel per database size.

    Joint (transductive) diffusion is drawn hollow: its time is a whole query set's cost shared out,
    not the cost of one query arriving alone. Rows without an mAP (timed only) sit on the x axis.
    """
    plt = _plt()
    sizes = list(dict.fromkeys(df["n_db"]))
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.4), squeeze=False)
    for ax, n in zip(axes[0], sizes):
        part = df[df["n_db"] == n]
        lo = np.nanmin(part["mAP"]) if part["mAP"].notna().any() else 0.0
        for _, row in part.iterrows():
            joint = "joint" in row["method"]
            y = row["mAP"] if np.isfinite(row["mAP"]) else lo - 0.02
            ax.scatter(row["ms_per_query"], y, marker=MARKERS.get(row["method"], "o"), s=70,
                       facecolors="none" if joint else None, edgecolors="k" if joint else None,
                       label=row["method"] + ("" if np.isfinite(row["mAP"]) else " (not scored)"))
        distr = int(part["distractors"].iloc[0])
        finish_axes(ax, "ms per query (one query at a time, log scale)", "mAP",
                    f"{part['dataset'].iloc[0]}: {n:,} images" + (f" ({distr:,} distractors)" if distr else ""),
                    log_x=True, grid={"alpha": 0.3, "which": "both"}, legend={"fontsize": 7, "loc": "best"})
    fig.suptitle(title or "Re-ranking: accuracy vs time per query (Survey Table 2.1, §2.4.2.1)")
    fig.tight_layout()
    return fig


def selection_grid(grid, title: str | None = None):
    """Learning-split mAP of each hyper-parameter setting (what :func:`select_params` chose from)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    ax = axes[0]
    for method, g in grid[grid["method"].isin(["AQE", "αQE", "DBA+αQE"])].groupby("method", sort=False):
        ax.plot(g["qe_k"], g["mAP"], marker=MARKERS.get(method, "o"), label=f"{method} (QE k)")
    g = grid[grid["method"] == "DBA"]
    ax.plot(g["dba_k"], g["mAP"], marker="s", label="DBA (DBA k)")
    finish_axes(ax, "k", "learning-split mAP", log_x=True, grid={"alpha": 0.3}, legend={"fontsize": 8})
    ax = axes[1]
    dif = grid[grid["method"] == "diffusion"]
    for alpha, g in dif.groupby("alpha"):
        ax.plot(g["graph_k"], g["mAP"], marker="o", label=f"α = {alpha:g}")
    finish_axes(ax, "graph k", None, "diffusion (CG)", log_x=True, grid={"alpha": 0.3}, legend={"fontsize": 8})
    fig.suptitle(title or "Hyper-parameters chosen on the learning split (objects 1–50)")
    fig.tight_layout()
    return fig


__all__ = ["accuracy_time", "selection_grid"]
