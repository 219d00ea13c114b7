"""The plan ``retrievalkit reproduce`` prints before it starts: steps, what is on disk, estimates."""
import json
import math
import time

import pandas as pd

from retrievalkit.cli import main
from retrievalkit.experiments import plan, reproduce


def _record(folder, step, seconds, mode="full", probe_s=0.1):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{step}.json").write_text(json.dumps({"step": step, "seconds": seconds, "mode": mode,
                                                     "date": "2026-01-01 00:00", "probe_s": probe_s}))


def test_estimates_scale_the_recorded_time_by_the_machines_speed_now(tmp_path):
    _record(tmp_path / "report", "a", 100.0, probe_s=0.1)
    _record(tmp_path / "report", "b", 50.0, mode="SMALL")
    pd.DataFrame({"x": [1]}).to_csv(tmp_path / "a.csv", index=False)
    table = plan.make_plan(["a", "b", "c"], {"a": ("a",), "b": ("b",), "c": ("c",)}, tmp_path, mode="full",
                           probe=0.2)
    assert table["step"].tolist() == ["a", "b", "c"]
    assert table.loc[0, "estimate_s"] == 200  # this machine is half as fast as the recording one
    assert math.isnan(table.loc[1, "estimate_s"]) and math.isnan(table.loc[2, "estimate_s"])  # other mode / never
    assert table["results_on_disk"].tolist() == [True, False, False]
    text = plan.describe(table)
    assert "about 3 min plus b, c (no earlier run" in text and "never" in text
    assert "about 0 min" not in plan.describe(table.iloc[1:])


def test_the_printed_plan_lists_exactly_the_steps_that_run(tmp_path, monkeypatch, capsys):
    ran = []
    monkeypatch.setattr("retrievalkit.experiments.steps.Step.__call__", lambda self, run: ran.append(self.name) or "")
    reproduce.reproduce(["depth", "baseline", "rerank"], figures_dir=tmp_path / "f", results_dir=tmp_path / "r",
                        small=True, progress=False)
    printed = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(printed) if line.startswith("reproduce plan: 3 steps"))
    listed = [line.split()[0] for line in printed[start + 2:start + 5]]
    assert listed == ran == ["depth", "baseline", "rerank"]
    meta = json.loads((tmp_path / "r" / "report" / "rerank.json").read_text())
    assert meta["probe_s"] > 0  # so the next plan can scale this run's time


def test_plan_flag_prints_without_running(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("retrievalkit.experiments.steps.Step.__call__", lambda *a: (_ for _ in ()).throw(AssertionError))
    assert main(["reproduce", "--plan", "--steps", "layers", "--results", str(tmp_path)]) == 0
    assert "layers" in capsys.readouterr().out


def test_a_default_run_does_not_take_its_estimate_from_a_full_one(tmp_path):
    _record(tmp_path / "report", "a", 3000.0, mode="full")
    _record(tmp_path / "report", "b", 60.0, mode="default", probe_s=0.1)
    table = plan.make_plan(["a", "b"], {"a": ("a",), "b": ("b",)}, tmp_path, mode="default", probe=0.1)
    assert math.isnan(table.loc[0, "estimate_s"]) and table.loc[1, "estimate_s"] == 60


def test_the_run_records_its_mode(tmp_path, monkeypatch):
    monkeypatch.setattr("retrievalkit.experiments.steps.Step.__call__", lambda self, run: f"{run.mode} {run.coil.full}")
    for kwargs, mode in (({"small": True, "full": True}, "SMALL"), ({"small": False, "full": True}, "full"),
                         ({"small": False, "full": False}, "default")):
        reproduce.reproduce(["depth"], figures_dir=tmp_path / "f", results_dir=tmp_path / mode, progress=False, **kwargs)
        assert json.loads((tmp_path / mode / "report" / "depth.json").read_text())["mode"] == mode
        assert (tmp_path / mode / "report" / "depth.md").read_text() == f"{mode} {kwargs['full'] and mode != 'SMALL'}"


def test_full_flag_reaches_the_run(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr("retrievalkit.experiments.steps.Step.__call__", lambda self, run: seen.setdefault("mode", run.mode) and "")
    monkeypatch.delenv("RETRIEVALKIT_SMALL", raising=False)
    assert main(["-q", "reproduce", "--full", "--steps", "depth", "--results", str(tmp_path / "r"),
                 "--figures", str(tmp_path / "f")]) == 0
    assert seen["mode"] == "full"


def test_a_step_clock_counts_towards_the_estimate_and_stops_with_the_step():
    with reproduce.step_clock("x", 100.0, tick=0.01) as bar:
        time.sleep(0.15)
    assert 0.05 <= bar.n <= 0.5 and bar.total == 100  # n counts elapsed seconds
    with reproduce.step_clock("y", 0.02, tick=0.01) as bar:
        time.sleep(0.1)
    assert bar.n <= bar.total  # a step slower than its estimate stops at 100 %, it does not overflow
    with reproduce.step_clock("z", float("nan"), tick=0.01) as bar:
        time.sleep(0.05)
    assert bar.total is None and bar.n >= 0.02
