"""Every figure drawn from the committed CSVs reads well: no text on text, no legend over data, nothing cut off.

The checks live in ``tests/figure_lint.py``; the first tests here show that each check catches the defect
it names, the last one runs them over every figure ``retrievalkit reproduce --from-cache`` draws.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from figure_lint import problems  # noqa: E402
from retrievalkit import figures  # noqa: E402
from retrievalkit.experiments.reproduce import cached_figures  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"


def _drawable():
    return [fig for fig in cached_figures() if all((RESULTS / f"{name}.csv").is_file() for name in fig.inputs)]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_lint_finds_overlapping_texts():
    fig, ax = plt.subplots()
    ax.text(0.5, 0.5, "first label")
    ax.text(0.52, 0.5, "second label")
    assert problems(fig) == ["overlap: axes 0 text 'first label' and axes 0 text 'second label'"]


def test_lint_finds_crowded_tick_labels_but_not_slanted_ones_that_interleave():
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.set_xticks(range(6), [f"long tick label {i}" for i in range(6)])
    assert any("x-tick 'long tick label 0' and axes 0 x-tick 'long tick label 1'" in p for p in problems(fig))
    ax.set_xticks(range(6), [f"label {i}" for i in range(6)], rotation=45, ha="right", fontsize=6)
    fig.tight_layout()
    assert problems(fig) == []


def test_lint_finds_a_legend_over_bars_lines_and_points():
    fig, ax = plt.subplots()
    ax.bar([0, 1, 2], [1, 1, 1], label="bars")
    ax.legend(loc="upper right")
    assert problems(fig) == ["legend of axes 0 covers bar '_nolegend_' at x=1.6 of axes 0"]
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 1], marker="o", label="line")
    ax.scatter([0.02], [0.02], label="point")
    ax.legend(loc="upper right")
    assert problems(fig) == ["legend of axes 0 covers line 'line' of axes 0"]
    ax.get_legend().set_loc("lower left")
    assert problems(fig) == ["legend of axes 0 covers scatter 'point' of axes 0"]
    ax.get_legend().set_loc("center")
    assert problems(fig) == []


def test_lint_ignores_reference_lines_spanning_the_axes():
    fig, ax = plt.subplots()
    ax.plot([0, 0.2], [0, 0.2], label="data")
    ax.axhline(0.95, ls="--", label="reference")
    ax.legend(loc="upper right")
    assert problems(fig) == []


def test_lint_finds_texts_outside_the_figure():
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.set_title("a title much too long to fit in a figure only three inches wide, whatever the layout")
    ax.set_xticks([])
    ax.set_yticks([])
    assert problems(fig) == ["outside the figure: axes 0 title "
                             "'a title much too long to fit in a figure only three inches wide, whatever the layout'"]


def test_place_labels_keeps_a_cluster_of_labels_apart():
    """A dozen points in one spot (the Pareto plot's float indexes): every label finds its own place."""
    fig, ax = plt.subplots(figsize=(6, 4))
    rng = np.random.default_rng(0)
    x, y = 1 + rng.normal(0, 0.01, 12), 1 + rng.normal(0, 0.01, 12)
    ax.scatter(x, y)
    ax.set_xlim(0, 2)
    ax.set_ylim(0, 2)
    figures.place_labels(ax, x, y, [f"index {i}\n{100 * i} B" for i in range(12)])
    assert problems(fig) == []


def test_plain_log_ticks_write_numbers_not_powers():
    fig, ax = plt.subplots()
    ax.plot([0.3, 30], [0, 1])
    figures.finish_axes(ax, "ms", log_x=True)
    fig.canvas.draw()
    labels = {t.get_text() for t in ax.get_xticklabels() + ax.get_xticklabels(minor=True)} - {""}
    assert {"1", "10"} <= labels and not any("times" in t or "^" in t for t in labels), labels


def test_every_committed_figure_is_linted():
    """Each cached figure with a committed PNG has its CSVs committed too, so the lint below sees it."""
    committed = {p.stem for p in (REPO / "figures").glob("*.png")}
    linted = {fig.name for fig in _drawable()}
    assert {fig.name for fig in cached_figures()} & committed <= linted


@pytest.mark.parametrize("figure", _drawable(), ids=lambda fig: fig.name)
def test_figure_reads_well(figure):
    tables = {name: pd.read_csv(RESULTS / f"{name}.csv") for name in figure.inputs}
    found = problems(figure.from_tables(tables))
    assert not found, f"figure {figure.name} ({figure.what}):\n  " + "\n  ".join(found)
