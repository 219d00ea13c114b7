"""Figure functions: each takes results (a DataFrame or rankings) and returns a matplotlib Figure.

They only draw — experiments compute — so any figure can be redrawn from a cached CSV in seconds.
Survey Figures 2.1, 2.12, 2.13; taught in the notebook named in each docstring.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

GOOD = "#2ca02c"
BAD = "#d62728"
QUERY = "#1f77b4"


def _frame(ax, color: str, width: float = 4.0) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(color)
        spine.set_linewidth(width)


def _thumbnail(path, bbox=None, size: int = 128):
    from .datasets.images import UnreadableImageError, read_image

    try:
        img = read_image(path, bbox)
    except UnreadableImageError:
        return np.full((size, size, 3), 200, np.uint8)
    img.thumbnail((size, size))
    return np.asarray(img)


def ranking_panel(
    dataset, ids, queries: Sequence[int] = (0,), k: int = 10, protocol: str | None = None,
    title: str | None = None, row_labels: Sequence[str] | None = None,
):
    """Query and its top-k results, framed green (relevant) or red (not), like the survey's Figure 2.1.

    Junk results (e.g. the query itself) are skipped, as they are when AP is computed.
    Taught in notebooks/00_setup_and_data.
    """
    import matplotlib.pyplot as plt

    gnd = dataset.ground_truth(protocol)
    fig, axes = plt.subplots(len(queries), k + 1, figsize=(1.3 * (k + 1), 1.45 * len(queries)), squeeze=False)
    for row, q in enumerate(queries):
        positives, junk = gnd[q]
        shown = [i for i in ids[q] if i not in set(junk.tolist())][:k]
        ax = axes[row, 0]
        ax.imshow(_thumbnail(dataset.query_paths[q], dataset.gnd[q].bbox))
        _frame(ax, QUERY)
        ax.set_ylabel(row_labels[row] if row_labels else f"q{q}", fontsize=8)
        if row == 0:
            ax.set_title("query", fontsize=8)
        pos = set(positives.tolist())
        for col, i in enumerate(shown, start=1):
            ax = axes[row, col]
            ax.imshow(_thumbnail(dataset.db_paths[i]))
            _frame(ax, GOOD if i in pos else BAD)
            if row == 0:
                ax.set_title(f"#{col}", fontsize=8)
        for col in range(len(shown) + 1, k + 1):
            axes[row, col].axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def protocol_bars(df, value: str = "mAP", by: str = "protocol", hue: str | None = "method", title: str | None = None):
    """Bar chart of a metric per protocol (and method). Taught in notebooks/00_setup_and_data."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(5, 3.2))
    sns.barplot(data=df, x=by, y=value, hue=hue if hue in df.columns else None, ax=ax)
    ax.set_ylim(0, 1)
    ax.set_ylabel(value)
    for container in ax.containers:
        ax.bar_label(container, fmt="%.3f", fontsize=7)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
