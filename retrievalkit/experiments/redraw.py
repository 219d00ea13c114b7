"""Redraw every reproduced figure from the CSVs of an earlier run — no features, no training.

``retrievalkit reproduce --from-cache`` and notebooks/12_reproduce_survey_figures use it: a figure
is a pure function of its CSVs (figure functions only draw), so changing a plot's style, or looking
at a colleague's ``results/`` folder, takes seconds. Figures that need images (the ranking panel,
the attention overlays) are only drawn by their step.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd


@dataclass(frozen=True)
class CachedFigure:
    """A figure file and how to draw it from the CSVs named in ``inputs`` (read from the results folder)."""

    name: str
    inputs: tuple[str, ...]
    draw: Callable[..., object]
    what: str


def _registry() -> list[CachedFigure]:
    from .. import figures as f
    from .. import figures_embedding as fe
    from .. import figures_finetune as ff
    from .. import figures_hashing as fh
    from .. import figures_rerank as fr
    from .. import survey
    from . import hashing

    return [
        CachedFigure("survey_timeline", (), lambda: f.progress_timeline(survey.progress_timeline()),
                     "Figure 2.12(a): the survey's reported results by year"),
        CachedFigure("baseline_protocols", ("baseline",),
                     lambda d: f.protocol_bars(d, hue="method", title="Colour-histogram baseline, COIL-100"),
                     "colour-histogram baseline per protocol"),
        CachedFigure("aggregation", ("aggregation",), f.aggregation_bars, "Figure 2.12(b): aggregation methods"),
        CachedFigure("depth", ("depth",), f.depth_curve, "Figure 2.13(a): depth"),
        CachedFigure("dimension", ("dimension",), f.dimension_curve, "Figure 2.13(b): dimension"),
        CachedFigure("layers", ("layers",),
                     lambda d: f.variant_bars(d, title="EfficientNet-Lite0: layer by layer, FC-like vs conv, fusion"),
                     "feature layers and fusion"),
        CachedFigure("multipass", ("multipass",),
                     lambda d: f.variant_bars(d, time_column="ms_per_image",
                                              title="Single vs multi-pass (Figure 2.7) and multi-scale: mAP and time"),
                     "Figure 2.7: single vs multiple passes"),
        CachedFigure("embedding_codebook_size", ("embedding_codebook_size",), fe.codebook_curves,
                     "BoW / VLAD / FV against codebook size"),
        CachedFigure("embedding_deep_vs_handcrafted", ("embedding_deep_vs_handcrafted",), fe.method_bars,
                     "deep vs handcrafted embeddings"),
        CachedFigure("attention", ("attention",), fe.attention_bars, "attention pooling variants"),
        CachedFigure("attention_training", ("attention_training",), fe.training_curve,
                     "learned attention: training curve"),
        CachedFigure("hashing_map_vs_bits", ("hashing",), fh.map_vs_bits, "hashing: mAP vs code length"),
        CachedFigure("hashing_diagnostics", ("hashing",), lambda d: fh.code_diagnostics(d, hashing.PR_BITS),
                     "hashing: bit balance and correlation"),
        CachedFigure("hashing_pr", ("hashing_pr",), fh.pr_curves, "hashing: precision-recall"),
        CachedFigure("finetune_before_after", ("finetune",), ff.before_after,
                     "fine-tuning: test mAP before and after, per loss"),
        CachedFigure("finetune_curves", ("finetune_history",), ff.training_curves, "fine-tuning: training curves"),
        CachedFigure("finetune_embedding", ("finetune_embedding",), ff.embedding,
                     "fine-tuning: test descriptors in 2-D before and after"),
        CachedFigure("table_2_3_reported_vs_ours", ("table_2_3_ours",),
                     lambda d: ff.reported_vs_ours(d, survey.table_2_3()), "Table 2.3: reported vs ours"),
        CachedFigure("rerank_accuracy_time", ("rerank", "rerank_scale"),
                     lambda a, b: fr.accuracy_time(pd.concat([a, b], ignore_index=True)),
                     "re-ranking and diffusion: mAP vs ms per query"),
        CachedFigure("rerank_grid", ("rerank_grid",), fr.selection_grid,
                     "re-ranking hyper-parameters chosen on the learning split"),
        CachedFigure("table_2_1_pareto", ("table_2_1",), fh.pareto, "Table 2.1: accuracy vs time vs memory"),
        CachedFigure("scale", ("scale",), fh.scale_curves, "search time and memory against database size"),
    ]


def cached_figures() -> list[CachedFigure]:
    """Every figure :func:`redraw` knows, in the report's order."""
    return _registry()


def redraw(results_dir="results", figures_dir="figures", names=None) -> tuple[list[Path], list[str]]:
    """Redraw the figures whose CSVs exist in ``results_dir``; returns (written files, skipped names).

    A figure is skipped (and named in the second list) when one of its CSVs is missing, i.e. its
    step has not been run; nothing is recomputed.
    """
    results, out = Path(results_dir), Path(figures_dir)
    registry = cached_figures()
    known = {fig.name for fig in registry}
    unknown = sorted(set(names or ()) - known)
    if unknown:
        raise ValueError(f"unknown figure(s) {unknown}; known: {', '.join(sorted(known))}")
    out.mkdir(parents=True, exist_ok=True)
    written, skipped = [], []
    for fig_spec in registry:
        if names and fig_spec.name not in names:
            continue
        paths = [results / f"{csv}.csv" for csv in fig_spec.inputs]
        if not all(p.is_file() for p in paths):
            skipped.append(fig_spec.name)
            continue
        fig = fig_spec.draw(*[pd.read_csv(p) for p in paths])
        written.append(save_png(fig, out / f"{fig_spec.name}.png"))
    return written, skipped


def save_png(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` atomically (temp file + rename) and close it; every figure goes through here."""
    import matplotlib.pyplot as plt

    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path
