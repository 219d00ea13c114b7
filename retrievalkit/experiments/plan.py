"""What ``retrievalkit reproduce`` will do before it does it: the steps, what is on disk, and an estimate per step.

The estimate is the step's last recorded wall time in the same mode (``results/report/<step>.json``),
scaled by how fast this machine is *now* against the machine that recorded it. Speed is measured by
a fixed probe (:func:`probe_seconds`: a few convolutions, the work that dominates extraction), timed
when a step is saved and again when a plan is printed; so a plan made on a laptop twice as slow as the
recording machine shows twice the recorded time.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd


def probe_seconds(repeats: int = 3) -> float:
    """Best-of-``repeats`` seconds of a fixed convolution workload (about 0.1 s on 2 cores)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 32, 56, 56, generator=gen)
    w = torch.randn(64, 32, 3, 3, generator=gen)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.perf_counter()
            torch.nn.functional.conv2d(torch.nn.functional.conv2d(x, w, padding=1)[:, :32], w, padding=1)
            best = min(best, time.perf_counter() - start)
    return best


def _recorded(folder: Path, step: str) -> dict | None:
    path = folder / f"{step}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def make_plan(steps, outputs: dict[str, tuple[str, ...]], results_dir="results", mode: str = "default",
              probe: float | None = None, cached: dict[str, bool] | None = None) -> pd.DataFrame:
    """One row per step, in run order: its last run (mode, date, seconds), whether its CSVs are on disk,
    whether the step cache holds its output (``cached``: then it is written from there, estimate 0),
    and the estimated seconds on this machine now (NaN when the step was never recorded in ``mode``:
    ``"SMALL"``, ``"default"`` or ``"full"``)."""
    cached = cached or {}
    results = Path(results_dir)
    probe = probe_seconds() if probe is None else probe
    rows = []
    for step in steps:
        meta = _recorded(results / "report", step)
        same_mode = meta is not None and meta.get("mode") == mode
        scale = probe / meta["probe_s"] if same_mode and meta.get("probe_s") else 1.0
        rows.append({
            "step": step,
            "last_run": f"{meta['date']} ({meta['mode']}, {meta['seconds']:.0f} s)" if meta else "never",
            "results_on_disk": all((results / f"{csv}.csv").is_file() for csv in outputs[step]),
            "cached": bool(cached.get(step)),
            "estimate_s": 0 if cached.get(step) else round(meta["seconds"] * scale) if same_mode else float("nan"),
        })
    return pd.DataFrame(rows)


def describe(plan: pd.DataFrame) -> str:
    """The plan as the lines printed before a run starts."""
    known = plan["estimate_s"].dropna()
    unknown = plan.loc[plan["estimate_s"].isna(), "step"].tolist()
    total = f"about {known.sum() / 60:.0f} min" if len(known) else ""
    if unknown:
        total += (" plus " if total else "") + f"{', '.join(unknown)} (no earlier run in this mode to estimate from)"
    table = plan.assign(estimate=plan["estimate_s"].map(lambda s: "?" if s != s else f"{s:.0f} s"))
    return (f"reproduce plan: {len(plan)} steps, {total}\n"
            + table[["step", "estimate", "cached", "results_on_disk", "last_run"]].to_string(index=False))
