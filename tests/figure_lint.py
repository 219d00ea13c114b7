"""Layout lint for matplotlib figures: overlapping texts, legends over data, texts off the figure.

``problems(fig)`` draws ``fig`` and returns one readable line per defect; an empty list means the figure
reads well. Everything is measured in display coordinates after ``fig.canvas.draw()``. A rotated text is
its rotated rectangle (not the axis-aligned box around it), so slanted tick labels that merely interleave
are not reported.
"""
from __future__ import annotations

import numpy as np
from matplotlib.collections import PathCollection
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.text import Text

SLACK = 1.0  # display pixels two boxes may share before they count as overlapping


def _named_texts(fig):
    """(description, Text) for every drawn, non-empty text: titles, axis and tick labels, annotations, legends."""
    out = []

    def add(what, text):
        if text.get_visible() and text.get_text().strip():
            out.append((f"{what} {text.get_text()!r}", text))

    for t in fig.texts:
        add("figure text", t)
    for legend in fig.legends:
        for t in [legend.get_title(), *legend.get_texts()]:
            add("figure legend", t)
    for i, ax in enumerate(fig.axes):
        if not ax.get_visible():
            continue
        where = f"axes {i}"
        for t in (ax.title, ax._left_title, ax._right_title):
            add(f"{where} title", t)
        for t in ax.texts:
            add(f"{where} text", t)
        if ax.get_legend() is not None:
            legend = ax.get_legend()
            for t in [legend.get_title(), *legend.get_texts()]:
                add(f"{where} legend", t)
        if not ax.axison:
            continue
        for axis in (ax.xaxis, ax.yaxis):
            if not axis.get_visible():
                continue
            name = axis.axis_name
            add(f"{where} {name}-label", axis.label)
            add(f"{where} {name} offset", axis.offsetText)
            for tick in axis._update_ticks():  # the major and minor ticks inside the view, as drawn
                for label in (tick.label1, tick.label2):
                    if tick.get_visible():
                        add(f"{where} {name}-tick", label)
    return out


def _corners(text: Text, renderer) -> np.ndarray:
    """The four corners of ``text``'s (possibly rotated) box in display pixels."""
    box = Text.get_window_extent(text, renderer)  # an annotation's words, without its arrow
    angle = text.get_rotation()
    if angle % 90 == 0:
        return np.array([[box.x0, box.y0], [box.x1, box.y0], [box.x1, box.y1], [box.x0, box.y1]])
    text.set_rotation(0)
    flat = Text.get_window_extent(text, renderer)
    text.set_rotation(angle)
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    half = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [flat.width / 2, flat.height / 2]
    return half @ np.array([[c, s], [-s, c]]) + [(box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2]


def _overlap(a: np.ndarray, b: np.ndarray, slack: float = SLACK) -> bool:
    """Do two convex polygons overlap by more than ``slack`` pixels along every separating direction?"""
    for poly in (a, b):
        for i in range(len(poly)):
            edge = poly[(i + 1) % len(poly)] - poly[i]
            normal = np.array([-edge[1], edge[0]]) / (np.hypot(*edge) or 1.0)
            pa, pb = a @ normal, b @ normal
            if min(pa.max(), pb.max()) - max(pa.min(), pb.min()) <= slack:
                return False
    return True


def _data_in(ax, box, renderer) -> list[str]:
    """What of ``ax``'s plotted data lies under the display box ``box``."""
    clip = ax.bbox
    hits = []
    for line in ax.lines:
        if not line.get_visible() or line.get_transform() != ax.transData and line.get_transform().contains_branch(ax.transAxes):
            continue  # axhline / axvline: a reference spanning the axes, not data points
        xy = line.get_transform().transform(np.asarray(line.get_xydata(), float))
        xy = xy[np.isfinite(xy).all(axis=1)]
        if _points_in(xy, box, clip, _marker_radius(line, ax)).any():
            hits.append(f"line {line.get_label()!r}")
    for coll in ax.collections:
        if not isinstance(coll, PathCollection) or not coll.get_visible():
            continue
        xy = coll.get_offset_transform().transform(np.asarray(coll.get_offsets(), float))
        keep = np.isfinite(xy).all(axis=1)
        sizes = np.resize(coll.get_sizes(), len(xy)) if len(coll.get_sizes()) else np.full(len(xy), 36.0)
        radius = np.sqrt(sizes) / 2 * ax.figure.dpi / 72
        if _points_in(xy[keep], box, clip, radius[keep]).any():
            hits.append(f"scatter {coll.get_label()!r}")
    for patch in ax.patches:
        if not isinstance(patch, Rectangle) or not patch.get_visible():
            continue
        bar = patch.get_window_extent(renderer)
        if not np.isfinite(bar.bounds).all():
            continue
        x0, x1 = max(bar.x0, clip.x0, box.x0), min(bar.x1, clip.x1, box.x1)
        y0, y1 = max(bar.y0, clip.y0, box.y0), min(bar.y1, clip.y1, box.y1)
        if x1 - x0 > SLACK and y1 - y0 > SLACK:
            hits.append(f"bar {patch.get_label()!r} at x={patch.get_x():.3g}")
    return hits


def _marker_radius(line: Line2D, ax) -> float:
    return (line.get_markersize() / 2 * ax.figure.dpi / 72) if line.get_marker() not in (None, "None", "", " ") else 0.0


def _points_in(xy: np.ndarray, box, clip, radius) -> np.ndarray:
    """Which points (discs of ``radius`` pixels) inside the axes ``clip`` touch ``box``."""
    if not len(xy):
        return np.zeros(0, bool)
    x, y = xy[:, 0], xy[:, 1]
    shown = (x >= clip.x0) & (x <= clip.x1) & (y >= clip.y0) & (y <= clip.y1)
    dx = np.maximum(np.maximum(box.x0 - x, x - box.x1), 0)
    dy = np.maximum(np.maximum(box.y0 - y, y - box.y1), 0)
    return shown & (np.hypot(dx, dy) < np.asarray(radius) - SLACK + 1e-9)


def problems(fig) -> list[str]:
    """Every layout defect of ``fig``: (a) texts overlapping each other, (b) a legend covering plotted data
    or a text, (c) a text or legend reaching outside the figure."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    found = []
    texts = [(name, t, _corners(t, renderer)) for name, t in _named_texts(fig)]
    for i, (name_a, _, a) in enumerate(texts):
        for name_b, _, b in texts[i + 1:]:
            if _overlap(a, b):
                found.append(f"overlap: {name_a} and {name_b}")
    figbox = fig.bbox
    for name, _, corners in texts:
        if (corners[:, 0].min() < figbox.x0 - SLACK or corners[:, 0].max() > figbox.x1 + SLACK
                or corners[:, 1].min() < figbox.y0 - SLACK or corners[:, 1].max() > figbox.y1 + SLACK):
            found.append(f"outside the figure: {name}")
    legends = [(f"legend of axes {i}", ax.get_legend()) for i, ax in enumerate(fig.axes) if ax.get_legend()]
    legends += [("figure legend", lg) for lg in fig.legends]
    for where, legend in legends:
        if not legend.get_visible():
            continue
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            for hit in _data_in(ax, box, renderer):
                found.append(f"{where} covers {hit} of axes {fig.axes.index(ax)}")
        own = {id(t) for t in [legend.get_title(), *legend.get_texts()]}
        rect = np.array([[box.x0, box.y0], [box.x1, box.y0], [box.x1, box.y1], [box.x0, box.y1]])
        for name, t, corners in texts:
            if id(t) not in own and _overlap(rect, corners):
                found.append(f"{where} covers {name}")
        if box.x0 < figbox.x0 - SLACK or box.x1 > figbox.x1 + SLACK or box.y0 < figbox.y0 - SLACK or box.y1 > figbox.y1 + SLACK:
            found.append(f"outside the figure: {where}")
    return found


__all__ = ["problems"]
