"""Each reproduce step is declared once (experiments/steps.py): its figures come from its own tables, and a
figure a step draws is the picture ``--from-cache`` redraws from the CSVs."""
from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from retrievalkit.experiments import (embedding_steps, finetune_steps, hashing_steps, instance_steps, offtheshelf_steps,
                                      reproduce, rerank_steps)
from retrievalkit.experiments.offtheshelf import SMALL_TEST, Coil
from retrievalkit.experiments.steps import Figure, Run, Step

COMMITTED_RESULTS = Path(__file__).resolve().parents[1] / "results"
MODULES = (offtheshelf_steps, embedding_steps, hashing_steps, finetune_steps, rerank_steps, instance_steps)


@pytest.fixture(scope="module")
def home(request):
    from retrievalkit import config

    return None if (config.data_home() / "coil100").is_dir() else request.getfixturevalue("coil_home")


def test_names_are_unique_and_every_step_is_registered_once():
    steps = [step for module in MODULES for step in module.STEPS.values()]
    assert sorted(s.name for s in steps) == sorted(reproduce.STEPS)
    assert all(name == step.name for module in MODULES for name, step in module.STEPS.items())
    csvs = Counter(csv for s in steps for csv in s.outputs)
    figures = Counter(f.name for f in reproduce.cached_figures())
    assert max(csvs.values()) == 1 and max(figures.values()) == 1, (csvs, figures)


def test_every_figure_is_drawn_from_tables_its_own_step_computes():
    for step in reproduce.STEPS.values():
        for fig in step.figures:
            assert fig.inputs and set(fig.inputs) <= set(step.outputs), (step.name, fig.name)
    assert {csv for s in reproduce.STEPS.values() for csv in s.outputs} <= {p.stem for p in COMMITTED_RESULTS.glob("*.csv")}


def test_a_step_that_computes_other_tables_than_it_declares_fails(tmp_path):
    run = Run(figures=tmp_path, results=tmp_path, small=True, progress=False)
    step = Step("x", ("a",), lambda run: {"b": pd.DataFrame({"v": [1]})}, (), lambda run, t: "")
    with pytest.raises(RuntimeError, match=r"step x computed \['b'\] but declares \['a'\]"):
        step(run)


def test_per_query_aps_are_written_beside_their_table(tmp_path):
    df = pd.DataFrame({"mAP": [0.5]})
    df.attrs["per_query"] = [{"query": 0, "AP": 0.25}, {"query": 1, "AP": 0.75}]
    drawn = []
    step = Step("x", ("x",), lambda run: {"x": df},
                (Figure("x", ("x",), lambda t: drawn.append(t) or _blank(), "test"),),
                lambda run, tables: f"{sorted(tables)}")
    run = Run(figures=tmp_path, results=tmp_path, small=True, progress=False)
    assert step(run) == "['x', 'x_per_query']" and len(drawn) == 1
    pd.testing.assert_frame_equal(drawn[0], df)  # drawn from the CSV read back, as --from-cache draws it
    assert pd.read_csv(tmp_path / "x_per_query.csv")["AP"].tolist() == [0.25, 0.75]
    assert {p.name for p in run.written} == {"x.csv", "x_per_query.csv", "x.png"}


def _blank():
    import matplotlib.pyplot as plt

    return plt.figure(figsize=(1, 1))


def test_run_shares_one_coil_whose_small_test_split_is_objects_51_to_60(home):
    run = Run(figures=Path("f"), results=Path("r"), small=True, progress=False, data_home=home)
    assert isinstance(run.coil, Coil) and run.coil is run.coil and run.coil.small
    objects = {int(Path(p).name.split("__")[0].removeprefix("obj")) for p in run.coil.split("test").db_paths}
    assert objects == set(range(51, 61)) == set(SMALL_TEST)
    assert run.coil.memo == {} and Coil().memo is not Coil().memo  # one memo per set of splits


def test_a_steps_figures_equal_their_from_cache_redraw(home, tmp_path):
    """The step draws from the frames it computed; --from-cache from the CSVs it wrote: same PNG bytes."""
    results = tmp_path / "results"
    results.mkdir()
    shutil.copyfile(COMMITTED_RESULTS / "aggregation.csv", results / "aggregation.csv")  # depth reads it
    written = reproduce.reproduce(["baseline", "depth", "layers"], figures_dir=tmp_path / "run", results_dir=results,
                                  small=True, progress=False, data_home=home)
    drawn = {p.name for p in written if p.suffix == ".png"}
    assert {"baseline_protocols.png", "baseline_ranking.png", "depth.png", "layers.png"} <= drawn
    redrawn, _ = reproduce.redraw(results, tmp_path / "cache")
    compared = [p.name for p in redrawn if p.name in drawn]
    assert {"baseline_protocols.png", "depth.png", "layers.png", "survey_timeline.png"} <= set(compared)
    for name in compared:
        assert (tmp_path / "run" / name).read_bytes() == (tmp_path / "cache" / name).read_bytes(), name


def test_finish_axes_sets_only_what_it_is_given():
    import matplotlib.pyplot as plt

    from retrievalkit.figures import finish_axes

    fig, (a, b) = plt.subplots(1, 2)
    a.plot([1, 10], [0, 1], label="line")
    finish_axes(a, "k", "mAP", "title", log_x=True, grid={"alpha": 0.3}, legend={"fontsize": 7}, title_size=9)
    default_title_size = b.title.get_fontsize()
    finish_axes(b, "graph k", None, "plain")
    assert (a.get_xscale(), a.get_xlabel(), a.get_ylabel(), a.get_title()) == ("log", "k", "mAP", "title")
    assert a.title.get_fontsize() == 9 and a.get_legend().get_texts()[0].get_fontsize() == 7
    assert (b.get_xscale(), b.get_ylabel(), b.get_legend()) == ("linear", "", None)
    assert b.title.get_fontsize() == default_title_size != 9  # no size given: matplotlib's title size stays
    plt.close(fig)


# --------------------------------------------------------------------------- the step cache
def _counting_step(calls: list, value: float = 0.5) -> Step:
    def compute(run):
        calls.append(run.mode)
        return {"t": pd.DataFrame({"mAP": [value, 0.125], "method": ["a", "b"]})}

    return Step("counted", ("t",), compute,
                (Figure("counted_fig", ("t",), lambda t: _blank(), "test"),),
                lambda run, tables: f"section {tables['t']['mAP'].sum()}",
                live_figures=lambda run, tables: {"counted_live": _blank()})


def _computed_once(root: Path) -> tuple[Step, list]:
    """A counting step run once in ``root`` (run "one"); ``calls`` records each computation."""
    calls = []
    step = _counting_step(calls)
    step(_run(root, "one"))
    return step, calls


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A data home and cache of its own, so the step cache starts empty and the data fingerprint is ours."""
    home = tmp_path / "data"
    (home / "pack").mkdir(parents=True)
    (home / "pack" / "a.jpg").write_bytes(b"x" * 10)
    monkeypatch.setenv("RETRIEVALKIT_DATA", str(home))
    monkeypatch.setenv("RETRIEVALKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path


def _run(root: Path, name: str, **kwargs) -> Run:
    run = Run(figures=root / name / "f", results=root / name / "r", small=True, progress=False, reuse=True, **kwargs)
    run.figures.mkdir(parents=True)
    run.results.mkdir(parents=True)
    return run


def test_a_second_run_writes_the_step_from_the_step_cache(isolated):
    calls = []
    step = _counting_step(calls)
    first, second = _run(isolated, "one"), _run(isolated, "two")
    assert not step.is_cached(first)
    assert step(first) == step(second) == "section 0.625"
    assert calls == ["SMALL"] and step.is_cached(second)
    for name in ("r/t.csv", "f/counted_fig.png", "f/counted_live.png"):
        assert (isolated / "one" / name).read_bytes() == (isolated / "two" / name).read_bytes(), name
    assert {p.name for p in second.written} == {"t.csv", "counted_fig.png", "counted_live.png"}


def test_what_the_step_depends_on_changing_recomputes_it(isolated):
    step, calls = _computed_once(isolated)
    (isolated / "data" / "pack" / "b.jpg").write_bytes(b"y")  # an image added to the data home
    step(_run(isolated, "two"))
    (isolated / "data" / "pack" / "b.jpg").write_bytes(b"yy")  # replaced by one of another size
    step(_run(isolated, "three"))
    default = _run(isolated, "four")
    default.small = False  # another mode
    step(default)
    assert calls == ["SMALL", "SMALL", "SMALL", "default"]
    step(_run(isolated, "five"))  # nothing changed since "three"
    assert len(calls) == 4


def test_a_dataset_folder_the_step_did_not_read_leaves_it_cached(isolated):
    """A later step of the same run extracts its own dataset: the earlier steps stay cached."""
    step, calls = _computed_once(isolated)
    (isolated / "data" / "later_pack").mkdir()
    (isolated / "data" / "later_pack" / "x.jpg").write_bytes(b"z")
    assert step.is_cached(_run(isolated, "two"))
    step(_run(isolated, "three"))
    assert len(calls) == 1
    (isolated / "data" / "pack" / "a.jpg").unlink()  # an image the step read is gone
    assert not step.is_cached(_run(isolated, "four"))
    step(_run(isolated, "five"))
    assert len(calls) == 2


def test_a_changed_source_file_makes_every_step_stale(isolated, monkeypatch):
    from retrievalkit.experiments import steps as steps_module

    step, calls = _computed_once(isolated)
    monkeypatch.setattr(steps_module, "source_fingerprint", lambda: "edited")
    step(_run(isolated, "two"))
    assert len(calls) == 2


def test_a_damaged_step_cache_entry_is_refused_and_recomputed(isolated, caplog):
    from retrievalkit import artifacts

    step, calls = _computed_once(isolated)
    folder = next((isolated / "cache" / "artifacts" / "step_output").iterdir())
    value = folder / artifacts.JSON_FILE
    value.write_bytes(value.read_bytes()[: value.stat().st_size // 2])  # a copy that stopped mid-file
    assert step(_run(isolated, "two")) == "section 0.625"
    assert len(calls) == 2 and "step_output" in caplog.text


def test_recompute_ignores_the_step_cache(isolated, monkeypatch):
    calls = []
    monkeypatch.setitem(reproduce.STEPS, "counted", _counting_step(calls))
    for flag in (False, False, True):
        reproduce.reproduce(["counted"], figures_dir=isolated / "f", results_dir=isolated / "r", small=True,
                            progress=False, recompute=flag)
    assert len(calls) == 2
    meta = (isolated / "r" / "report" / "counted.json").read_text()
    assert '"mode": "SMALL"' in meta
