"""``retrievalkit reproduce``: run every experiment on the default data, write results, figures and a report.

:data:`STEPS` holds every :class:`~retrievalkit.experiments.steps.Step` in the survey's order; each
writes its CSVs and figures and returns a Markdown section for ``figures/REPORT.md``. ``--from-cache``
(:func:`from_cache`) redraws the same figures from the saved CSVs and reassembles the report.
"""
from __future__ import annotations

import json
import logging
import platform
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from .. import config
from ..datasets.base import DatasetNotFoundError
from . import plan
from .steps import Figure, Run, Step, atomic_write, save_png

log = logging.getLogger(__name__)


def _all_steps() -> dict[str, Step]:
    from . import embedding_steps, finetune_steps, hashing_steps, instance_steps, offtheshelf_steps, rerank_steps

    hashing = dict(hashing_steps.STEPS)
    efficiency = {"efficiency": hashing.pop("efficiency")}  # Table 2.1 closes the survey's §2.5.3
    return {**offtheshelf_steps.STEPS, **embedding_steps.STEPS, **hashing, **finetune_steps.STEPS,
            **rerank_steps.STEPS, **efficiency, **instance_steps.STEPS}  # then the same lessons on real photos


STEPS: dict[str, Step] = _all_steps()


def _survey_timeline():
    from .. import figures, survey

    return figures.progress_timeline(survey.progress_timeline())


SURVEY_TIMELINE = Figure("survey_timeline", (), _survey_timeline, "Figure 2.12(a): the survey's reported results by year")


def cached_figures() -> list[Figure]:
    """Every figure drawn from CSVs alone (by a step and by ``--from-cache``), in the report's order."""
    return [SURVEY_TIMELINE] + [fig for step in STEPS.values() for fig in step.figures]


def redraw(results_dir="results", figures_dir="figures", names=None) -> tuple[list[Path], list[str]]:
    """Redraw the figures whose CSVs exist in ``results_dir``; returns (written files, skipped names).

    A figure is skipped (and named in the second list) when one of its CSVs is missing, i.e. its
    step has not been run; nothing is recomputed.
    """
    results, out, registry = Path(results_dir), Path(figures_dir), cached_figures()
    unknown = sorted(set(names or ()) - {fig.name for fig in registry})
    if unknown:
        raise ValueError(f"unknown figure(s) {unknown}; known: {', '.join(sorted(f.name for f in registry))}")
    out.mkdir(parents=True, exist_ok=True)
    written, skipped = [], []
    for fig in registry:
        if names and fig.name not in names:
            continue
        paths = {csv: results / f"{csv}.csv" for csv in fig.inputs}
        if not all(p.is_file() for p in paths.values()):
            skipped.append(fig.name)
            continue
        tables = {csv: pd.read_csv(p) for csv, p in paths.items()}
        written.append(save_png(fig.from_tables(tables), out / f"{fig.name}.png"))
    return written, skipped


def reproduce(
    steps=None,
    *,
    figures_dir="figures",
    results_dir="results",
    small: bool | None = None,
    full: bool | None = None,
    progress: bool | None = None,
    data_home=None,
    recompute: bool = False,
) -> list[Path]:
    """Run ``steps`` (default: all, in order) and write ``figures/REPORT.md``; returns the written files.

    A step whose inputs (code, data, mode, libraries, weights) match a cached output is written from
    the step cache (:mod:`.steps`); ``recompute=True`` computes every step again (to re-time a run)."""
    steps = list(steps or STEPS)
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise ValueError(f"unknown step(s) {unknown}; known steps: {', '.join(STEPS)}")
    run = Run(
        figures=Path(figures_dir),
        results=Path(results_dir),
        small=config.is_small() if small is None else small,
        full=config.is_full() if full is None else full,
        progress=True if progress is None else progress,
        data_home=data_home,
        reuse=not recompute,
    )
    run.figures.mkdir(parents=True, exist_ok=True)
    run.results.mkdir(parents=True, exist_ok=True)
    run.shared["probe_s"] = plan.probe_seconds()
    cached = {n: run.reuse and STEPS[n].is_cached(run) for n in steps}
    todo = plan.make_plan(steps, {n: STEPS[n].outputs for n in steps}, run.results, run.mode, run.shared["probe_s"],
                          cached=cached)
    print(plan.describe(todo), flush=True)
    failed = {}
    for i, (name, estimate) in enumerate(zip(steps, todo["estimate_s"]), 1):
        start = time.perf_counter()
        log.info("reproduce: step %s (estimate %s s)", name, "?" if estimate != estimate else f"{estimate:.0f}")
        try:
            with step_clock(f"[{i}/{len(steps)}] {name}", estimate, enabled=run.progress):
                section = STEPS[name](run)
        except (KeyboardInterrupt, DatasetNotFoundError):
            raise
        except Exception as err:  # one broken step must not throw away the others' results
            log.exception("reproduce: step %s failed", name)
            failed[name] = f"{type(err).__name__}: {err}"
            section = (f"## Step `{name}` failed\n\n`{failed[name]}` — see the log; rerun with "
                       f"`retrievalkit reproduce --steps {name}`.\n")
        _save_section(run, name, section, time.perf_counter() - start, from_cache=cached[name])
    run.written += redraw(run.results, run.figures, names=["survey_timeline"])[0]
    report = write_report(run.figures, run.results)
    run.written.append(report)
    if failed:
        raise StepsFailed(failed, run.written)
    return run.written


@contextmanager
def step_clock(desc: str, estimate: float, *, enabled: bool = True, tick: float = 1.0):
    """One bar per step, filled by the clock against the plan's estimate (seconds), so it shows the ETA;
    without an estimate it counts elapsed seconds. The step's own bars (extraction, training) run beneath."""
    from tqdm.auto import tqdm

    known = estimate == estimate and estimate > 0
    bar = tqdm(total=round(estimate) if known else None, desc=desc, unit="s", disable=not enabled, position=0,
               leave=True, bar_format="{desc}: {percentage:3.0f}% |{bar}| {n:.0f}/{total:.0f} s est., ETA {remaining}"
               if known else "{desc}: {n:.0f} s")
    done = threading.Event()

    def advance():
        while not done.wait(tick):
            bar.update(min(tick, bar.total - bar.n) if known and bar.n + tick > bar.total else tick)

    ticker = threading.Thread(target=advance, daemon=True)
    ticker.start()
    try:
        yield bar
    finally:
        done.set()
        ticker.join()
        bar.close()


def _save_section(run: Run, name: str, markdown: str, seconds: float, from_cache: bool = False) -> None:
    """Keep each step's report section beside its CSVs, so a partial rerun updates only its own.

    A step written from the step cache keeps the record of the run that computed it (its seconds are
    what the step costs); the plan reads that record for its estimate."""
    folder = run.results / "report"
    folder.mkdir(parents=True, exist_ok=True)
    if from_cache and (folder / f"{name}.json").is_file() and (folder / f"{name}.md").is_file():
        try:
            if json.loads((folder / f"{name}.json").read_text()).get("mode") == run.mode:
                atomic_write(folder / f"{name}.md", markdown)
                return
        except ValueError:
            pass  # an unreadable record is rewritten below
    meta = {"step": name, "seconds": round(seconds, 1), "mode": run.mode,
            "date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.machine(),
            "probe_s": round(run.shared.get("probe_s") or plan.probe_seconds(), 5),
            "python": platform.python_version()}
    atomic_write(folder / f"{name}.md", markdown)
    atomic_write(folder / f"{name}.json", json.dumps(meta))


def write_report(figures_dir="figures", results_dir="results") -> Path:
    """Assemble ``figures/REPORT.md`` from the saved sections, in the survey's order; no recomputation."""
    folder = Path(results_dir) / "report"
    rows, sections = [], []
    for name in STEPS:
        md, meta = folder / f"{name}.md", folder / f"{name}.json"
        if md.is_file() and meta.is_file():
            info = json.loads(meta.read_text())
            rows.append(f"| {name} | {info['mode']} | {info['seconds']} | {info['date']} |")
            sections.append(md.read_text())
        else:
            rows.append(f"| {name} | not run | – | – |")
    header = (
        "# retrievalkit reproduction report\n\n"
        "Written by `retrievalkit reproduce`; every number below was computed by the code. "
        "Step, mode, wall time (s) and date of the run that produced each section:\n\n"
        "| step | mode | seconds | date |\n|---|---|---:|---|\n" + "\n".join(rows) + "\n\n"
        + full_mode_note() + "\n\n"
    )
    report = Path(figures_dir) / "REPORT.md"
    atomic_write(report, header + _claims_section(results_dir, figures_dir) + "\n".join(sections))
    return report


def full_mode_note() -> str:
    """What ``reproduce --full`` changes against the default run, read from the settings themselves."""
    from . import hashing, instance, offtheshelf

    return (
        "The default run is sized for a 2-core laptop (the aim: 30 minutes; the seconds this run took are in the "
        "table above); `retrievalkit reproduce --full` keeps the paper-size settings: "
        f"every COIL-100 view (72 per object, 5° apart, instead of 36 at {offtheshelf.DEFAULT_POSE_STEP}°; "
        "the four query poses and the easy/hard angles are the same), "
        f"the whole Fashion-MNIST train split as hashing database (60,000 instead of {hashing.FASHION_DB:,}), "
        f"codes of {', '.join(map(str, hashing.FULL_BITS))} bits (instead of {', '.join(map(str, hashing.BITS))}), "
        f"instance photos at {instance.FULL_SIDE} px instead of {instance.SIDE} px with "
        f"{len(instance.FULL_NETWORKS)} networks instead of {len(instance.NETWORKS)} (adds "
        f"{', '.join(sorted(set(instance.FULL_NETWORKS) - set(instance.NETWORKS)))}), and every supervised loss "
        f"in the SOP fine-tuning ({len(instance.FULL_FINETUNE_METHODS)} instead of {len(instance.FINETUNE_METHODS)}). "
        "Each step's mode is in the table above."
    )


def _claims_section(results_dir, figures_dir) -> str:
    """The survey's claims beside our verdicts (computed from the CSVs), and its progress timeline."""
    from .verdicts import claims_vs_ours, instance_claims

    table = claims_vs_ours(results_dir)
    per_dataset = instance_claims(results_dir, coil=table)
    counts = table["verdict"].str.replace(r": rerun step .*", "", regex=True).value_counts()
    summary = ", ".join(f"{n} {v}" for v, n in counts.items())
    timeline = ""
    if (Path(figures_dir) / "survey_timeline.png").is_file():
        timeline = (
            "### The survey's progress curve (Figure 2.12a)\n\n"
            "Redrawn from the numbers Tables 2.2–2.3 print, each method dated by its paper's year "
            "(`retrievalkit.survey.METHOD_YEARS`, our addition: the survey prints no years); it is the "
            "literature's curve, not a result of this package.\n\n![timeline](survey_timeline.png)\n\n"
        )
    return (
        "## The survey's claims against this run\n\n"
        "Each verdict is computed from the CSVs in `results/` (`retrievalkit.experiments.verdicts`): a "
        "direction is stated only when a paired bootstrap over the test queries (2,000 resamples, fixed seed) "
        "puts the 95% interval of the mean AP difference, printed as Δ mean [low, high], on one side of zero; "
        "otherwise the comparison is 'within noise'. Contenders are picked on the learning split, never on "
        f"test numbers: {summary}. The survey's numbers are landmark "
        "benchmarks (Oxford5k, Paris6k, Holidays, UKBench) with VGG/ResNet backbones; ours are COIL-100 with "
        "EfficientNet-Lite, so only directions are compared — the sections below give both sets of numbers.\n\n"
        f"{table.to_markdown(index=False)}\n\n"
        "### The same claims on each dataset\n\n"
        "COIL-100 (from the table above) beside the real instance sets of the `instance` step (SMVS DVD covers, "
        "Paris6k-mini Medium, SOP test products); contenders and settings learned on SOP's learning products:\n\n"
        f"{per_dataset.to_markdown(index=False)}\n\n{timeline}"
    )


def from_cache(figures_dir="figures", results_dir="results") -> list[Path]:
    """Redraw every figure from the saved CSVs and rewrite REPORT.md; computes nothing. notebooks/12."""
    results = Path(results_dir)
    if not results.is_dir():
        raise FileNotFoundError(f"results folder {results} not found: pass the --results folder of an earlier "
                                "`retrievalkit reproduce` (default: results), or run `retrievalkit reproduce` first")
    if not any(results.glob("*.csv")) and not any(results.glob("report/*.md")):
        raise FileNotFoundError(f"results folder {results} holds no results (*.csv, report/*.md) to redraw from: "
                                "pass the --results folder of an earlier run, or run `retrievalkit reproduce` first")
    written, skipped = redraw(results_dir, figures_dir)
    if skipped:
        log.info("reproduce --from-cache: no CSVs yet for %s (run those steps first)", ", ".join(skipped))
    return written + [write_report(figures_dir, results_dir)]


class StepsFailed(RuntimeError):
    """Some reproduce steps failed; the others' results and the report were still written."""

    def __init__(self, failed: dict[str, str], written: list[Path]):
        super().__init__("reproduce steps failed: " + "; ".join(f"{k} ({v})" for k, v in failed.items())
                         + f". The other {len(written)} files were written; figures/REPORT.md says which.")
        self.failed = failed
        self.written = written
