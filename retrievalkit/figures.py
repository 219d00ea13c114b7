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
OUTSIDE = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "borderaxespad": 0.0}  # a legend right of the axes


def _frame(ax, color: str, width: float = 4.0) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(color)
        spine.set_linewidth(width)


def _thumbnail(path, bbox=None, size: int = 128, exif_transpose: bool = True):
    from .datasets.images import UnreadableImageError, read_image

    try:
        img = read_image(path, bbox, exif_transpose=exif_transpose)
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
        ax.imshow(_thumbnail(dataset.query_paths[q], dataset.gnd[q].bbox, exif_transpose=dataset.exif_transpose))
        _frame(ax, QUERY)
        ax.set_ylabel(row_labels[row] if row_labels else f"q{q}", fontsize=8)
        if row == 0:
            ax.set_title("query", fontsize=8)
        pos = set(positives.tolist())
        for col, i in enumerate(shown, start=1):
            ax = axes[row, col]
            ax.imshow(_thumbnail(dataset.db_paths[i], exif_transpose=dataset.exif_transpose))
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
    unit_axis(ax)
    ax.set_ylabel(value)
    if ax.get_legend():
        sns.move_legend(ax, OUTSIDE["loc"], **{k: v for k, v in OUTSIDE.items() if k != "loc"})
    for container in ax.containers:
        ax.bar_label(container, fmt="%.3f", fontsize=7)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def unit_axis(ax, low: float = 0.0) -> None:
    """A 0–1 score axis from ``low``, with room above 1 for the values written on top of bars."""
    ax.set_ylim(low, 1.0)
    ticks = ax.get_yticks()
    ax.set_ylim(low, 1.0 + 0.09 * (1.0 - low))
    ax.set_yticks(ticks[(ticks >= low - 1e-9) & (ticks <= 1.0 + 1e-9)])


def plain_log_ticks(axis) -> None:
    """Tick labels of a log axis as plain numbers (0.3, 20) rather than 3×10⁻¹, 2×10¹."""
    from matplotlib.ticker import LogFormatterSciNotation

    class Plain(LogFormatterSciNotation):  # matplotlib's choice of which ticks to label, written as plain numbers
        def __call__(self, x, pos=None):
            return f"{x:g}" if super().__call__(x, pos) else ""

    axis.set_major_formatter(Plain())
    axis.set_minor_formatter(Plain(labelOnlyBase=False))


def _plotted_points(ax) -> np.ndarray:
    """Display points every few pixels along each line of ``ax``, and each scatter point: where labels must not go."""
    from matplotlib.cbook import STEP_LOOKUP_MAP

    pts = [np.empty((0, 2))]
    for line in ax.lines:
        xy = np.column_stack(STEP_LOOKUP_MAP[line.get_drawstyle()](*np.asarray(line.get_xydata(), float).T))
        xy = line.get_transform().transform(xy)
        for a, b in zip(xy[:-1], xy[1:]):
            pts.append(np.linspace(a, b, int(np.nan_to_num(np.hypot(*(b - a))) // 3) + 2))
    pts += [c.get_offset_transform().transform(c.get_offsets()) for c in ax.collections]
    pts = np.vstack(pts)
    return pts[np.isfinite(pts).all(axis=1)]


def place_labels(ax, x, y, labels, fontsize: float = 7, colors=None, sizes=None) -> None:
    """Write ``labels`` beside the points (``x``, ``y``; marker areas ``sizes`` in pt², as for ``scatter``)
    where they cover neither each other nor the plotted lines and points, moving a label further out (with a
    thin leader line) when the nearest spots are taken.

    Greedy, in display coordinates: call it after the axes' size and limits are final (after
    ``tight_layout``)."""
    from matplotlib.text import Text

    ax.figure.canvas.draw()  # fixes the limits (autoscaling is lazy) and gives a renderer
    renderer = ax.figure.canvas.get_renderer()
    pts = ax.transData.transform(np.column_stack([x, y]).astype(float))
    half = np.sqrt(np.broadcast_to(64.0 if sizes is None else sizes, len(pts))) / 2 * ax.figure.dpi / 72
    taken = [(px - r, py - r, px + r, py + r) for (px, py), r in zip(pts, half)]
    plotted, inside = _plotted_points(ax), ax.get_window_extent(renderer)
    rings = [(r, a) for r in (5, 14, 24, 36, 50, 66, 86, 110) for a in range(0, 360, 30)]
    for i, label in enumerate(labels):
        for radius, angle in rings:
            dx, dy = radius * np.cos(np.radians(angle)), radius * np.sin(np.radians(angle))
            text = ax.annotate(label, (x[i], y[i]), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                               color=None if colors is None else colors[i],
                               ha="left" if dx > 1 else "right" if dx < -1 else "center",
                               va="bottom" if dy > 1 else "top" if dy < -1 else "center",
                               arrowprops={"arrowstyle": "-", "lw": 0.6, "color": "0.4"} if radius > 5 else None)
            text.update_positions(renderer)
            box = Text.get_window_extent(text, renderer).padded(1)  # the words only, not the leader line
            fits = (inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1
                    and not any(box.x0 < t[2] and t[0] < box.x1 and box.y0 < t[3] and t[1] < box.y1 for t in taken)
                    and not box.count_contains(plotted))
            if fits or (radius, angle) == rings[-1]:
                break
            text.remove()
        taken.append((box.x0, box.y0, box.x1, box.y1))


def finish_axes(ax, xlabel: str, ylabel: str | None = None, title: str | None = None, *, log_x: bool = False,
                grid: dict | None = None, legend: dict | None = None, title_size: float | None = None) -> None:
    """The finishing the line and scatter plots share: optional log x, axis labels, title, grid, legend."""
    if log_x:
        ax.set_xscale("log")
        plain_log_ticks(ax.xaxis)
    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, **({"fontsize": title_size} if title_size else {}))
    if grid is not None:
        ax.grid(**grid)
    if legend is not None:
        ax.legend(**legend)


def _main_protocol(df, protocol: str = "all"):
    return df[df["protocol"] == protocol] if "protocol" in df.columns else df


def aggregation_bars(df, protocol: str = "all", title: str | None = None):
    """mAP of every pooling per backbone, raw and PCA-whitened — the survey's Figure 2.12(b) on our data.

    Taught in notebooks/03_pooling.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    data = _main_protocol(df, protocol).copy()
    data["pooling"] = data["pooling"].str.replace("(center_prior=True)", "+prior", regex=False)
    backbones = list(dict.fromkeys(data["backbone"]))
    fig, axes = plt.subplots(1, len(backbones), figsize=(4.2 * len(backbones), 3.4), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], backbones):
        sns.barplot(data=data[data["backbone"] == name], x="pooling", y="mAP", hue="whitening", ax=ax)
        ax.set_title(name, fontsize=9)
        ax.tick_params(axis="x", rotation=45, labelsize=7)
        ax.set_xlabel("")
        ax.set_ylim(max(0.0, data["mAP"].min() - 0.05), 1.0)
        ax.get_legend().remove()
    axes[0, -1].legend(*axes[0, 0].get_legend_handles_labels(), title="whitening", fontsize=7, title_fontsize=7,
                       **OUTSIDE)
    fig.suptitle(title or f"Aggregation methods on COIL-100 ({protocol} protocol)", fontsize=10)
    fig.tight_layout()
    return fig


def depth_curve(df, protocol: str = "all", title: str | None = None):
    """mAP against network depth, one marker per network and pooling — Figure 2.13(a) on our data.

    No line joins two networks: networks of equal depth (EfficientNet-Lite1 and Lite2: compound
    scaling changes width and resolution, not depth) sit side by side and are labelled as such.
    notebooks/02_feature_layers.
    """
    import matplotlib.pyplot as plt

    data = _main_protocol(df, protocol)
    data = data[data["whitening"] == "none"] if "whitening" in data.columns else data
    nets = data.drop_duplicates("backbone")[["backbone", "depth"]].sort_values(["depth", "backbone"])
    span = max(float(nets["depth"].max() - nets["depth"].min()), 1.0)
    offset = {}
    for depth, same in nets.groupby("depth"):
        for i, name in enumerate(same["backbone"]):
            offset[name] = depth + (i - (len(same) - 1) / 2) * 0.04 * span
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    for pooling, part in data.groupby("pooling"):
        ax.scatter(part["backbone"].map(offset), part["mAP"], label=pooling, s=24)
    top = data.groupby("backbone")["mAP"].max()
    for name, depth in zip(nets["backbone"], nets["depth"]):
        scaled = (nets["depth"] == depth).sum() > 1
        ax.annotate(name.replace("efficientnet_", "") + ("\n(compound\nscaling)" if scaled else ""),
                    (offset[name], top[name]), fontsize=6, xytext=(0, 4), textcoords="offset points",
                    ha="center", va="bottom")
    ax.margins(y=0.25)
    finish_axes(ax, "depth (weight layers)", "mAP", title or f"Depth vs mAP on COIL-100 ({protocol})",
                legend={"fontsize": 7, "loc": "lower right"}, title_size=10)
    fig.tight_layout()
    return fig


def dimension_curve(df, protocol: str = "all", title: str | None = None):
    """mAP against descriptor dimension (log scale), one line per recipe — Figure 2.13(b). notebooks/04."""
    import matplotlib.pyplot as plt

    data = _main_protocol(df, protocol)
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for recipe, part in data[data["recipe"] != "native"].groupby("recipe"):
        part = part.sort_values("dim")
        ax.plot(part["dim"], part["mAP"], marker="o", label=recipe)
    native = data[data["recipe"] == "native"]
    if len(native):
        ax.axvline(native["dim"].iloc[0], color="grey", ls=":", lw=1)
        ax.scatter(native["dim"], native["mAP"], color="black", zorder=3, label="native (no projection)")
    ax.set_xscale("log", base=2)
    finish_axes(ax, "descriptor dimension", "mAP", title or f"Dimension vs mAP on COIL-100 ({protocol})",
                legend={"fontsize": 8}, title_size=10)
    fig.tight_layout()
    return fig


def variant_bars(df, label: str = "variant", protocol: str = "all", time_column: str | None = None,
                 title: str | None = None):
    """mAP per variant (layers, fusion, multi-pass), with time per image on a second axis when given."""
    import matplotlib.pyplot as plt

    data = _main_protocol(df, protocol).reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(max(4.5, 0.75 * len(data)), 3.4))
    ax.bar(range(len(data)), data["mAP"], color="#4c72b0")
    ax.set_xticks(range(len(data)), data[label], rotation=35, ha="right", fontsize=7)
    unit_axis(ax, max(0.0, data["mAP"].min() - 0.05))
    ax.set_ylabel("mAP")
    for i, v in enumerate(data["mAP"]):
        ax.text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=7)
    if time_column:
        twin = ax.twinx()
        twin.plot(range(len(data)), data[time_column], color="#dd8452", marker="s")
        twin.set_ylabel("ms per image", color="#dd8452")
    ax.set_title(title or "", fontsize=10)
    fig.tight_layout()
    return fig


def progress_timeline(df, metric: str = "mAP", title: str | None = None):
    """The survey's Figure 2.12(a) redrawn from its tables: reported results by year, best-so-far steps.

    ``df`` is :func:`retrievalkit.survey.progress_timeline`. notebooks/12_reproduce_survey_figures.
    """
    import matplotlib.pyplot as plt

    data = df[df["metric"] == metric]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    records = []
    for i, (dataset, part) in enumerate(data.groupby("dataset", sort=True)):
        color = f"C{i}"
        jitter = (i - 1.5) * 0.06  # keeps datasets of the same year apart
        ax.scatter(part["year"] + jitter, part["value"], s=18, color=color, alpha=0.6)
        best = part.groupby("year")["best_so_far"].max()
        ax.step(best.index, best.values, where="post", color=color, label=dataset)
        yearly_top = part.loc[part.groupby("year")["value"].idxmax()]
        new_best = yearly_top[yearly_top["value"] > yearly_top["value"].cummax().shift(fill_value=-np.inf)]
        records += [(r["year"] + jitter, r["value"], r["method"], color) for _, r in new_best.iterrows()]
    ax.set_xticks(sorted(data["year"].unique()))
    ax.set_xlabel("year of the method's paper")
    ax.set_ylabel(f"reported {metric} (%)")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title or "Survey Fig. 2.12(a) from Tables 2.2–2.3: best reported result so far", fontsize=10)
    fig.tight_layout()
    x, y, names, colors = zip(*records)  # name only the methods that set a new best
    place_labels(ax, np.array(x), np.array(y), names, fontsize=6, colors=colors, sizes=18)
    return fig
