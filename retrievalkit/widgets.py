"""An interactive query browser: pick a query, a backbone and a pooling; see the top-k and the AP.

Survey Figure 2.1 (retrieved images framed green/red); taught in notebooks/03_pooling.
ipywidgets is imported only when :func:`query_browser` is called; :func:`static_browser` draws
the same panel with matplotlib for CI and for readers of a rendered notebook.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from . import evaluate, figures


def _split_keys(rankings: Mapping[tuple[str, str], np.ndarray]) -> tuple[list[str], list[str]]:
    backbones = sorted({b for b, _ in rankings})
    poolings = sorted({p for _, p in rankings})
    return backbones, poolings


def static_browser(dataset, rankings: Mapping[tuple[str, str], np.ndarray], query: int = 0,
                   backbone: str | None = None, pooling: str | None = None, k: int = 10, protocol: str | None = None):
    """The browser's panel for one choice, as a matplotlib Figure (no widgets needed)."""
    backbones, poolings = _split_keys(rankings)
    key = (backbone or backbones[0], pooling or poolings[0])
    if key not in rankings:
        raise KeyError(f"no ranking for {key}; available: {sorted(rankings)}")
    ids = rankings[key]
    ap = evaluate.average_precision(ids[query : query + 1], dataset.ground_truth(protocol)[query : query + 1])[0]
    title = f"{key[0]} + {key[1]}: query {query}, AP {ap:.3f}"
    return figures.ranking_panel(dataset, ids, [query], k=k, protocol=protocol, title=title)


def query_browser(dataset, rankings: Mapping[tuple[str, str], np.ndarray], k: int = 10,
                  protocol: str | None = None, queries: Sequence[int] | None = None):
    """An ipywidgets explorer over precomputed ``rankings`` keyed by ``(backbone, pooling)``."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    backbones, poolings = _split_keys(rankings)
    queries = list(queries) if queries is not None else list(range(dataset.n_queries))
    query = w.Dropdown(options=queries, value=queries[0], description="query")
    backbone = w.Dropdown(options=backbones, value=backbones[0], description="backbone")
    pooling = w.Dropdown(options=poolings, value=poolings[0], description="pooling")
    out = w.Output()

    def redraw(*_):
        out.clear_output(wait=True)
        with out:
            if (backbone.value, pooling.value) not in rankings:
                print(f"no ranking for {backbone.value} + {pooling.value}")
                return
            fig = static_browser(dataset, rankings, query.value, backbone.value, pooling.value, k, protocol)
            plt.show(fig)

    for control in (query, backbone, pooling):
        control.observe(redraw, names="value")
    redraw()
    return w.VBox([w.HBox([query, backbone, pooling]), out])
