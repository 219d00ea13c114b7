"""REPORT.md and every figure regenerate from cached CSVs; verdicts and the timeline come from data."""
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retrievalkit import cli, survey
from retrievalkit.experiments import redraw, reproduce, verdicts

COMMITTED_RESULTS = Path(__file__).resolve().parents[1] / "results"


def _no_compute(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("--from-cache must not extract features or run a step")

    monkeypatch.setattr("retrievalkit.features.extract", forbidden)
    monkeypatch.setattr("retrievalkit.features.extraction.extract", forbidden)
    for name in reproduce.STEPS:
        monkeypatch.setitem(reproduce.STEPS, name, forbidden)


def test_from_cache_redraws_figures_and_report_without_computing(tmp_path, monkeypatch):
    assert (COMMITTED_RESULTS / "aggregation.csv").is_file(), "the default run's results/ are committed"
    results = tmp_path / "results"
    shutil.copytree(COMMITTED_RESULTS, results)
    _no_compute(monkeypatch)
    written = reproduce.from_cache(tmp_path / "figures", results)
    names = {p.name for p in written}
    assert {"aggregation.png", "depth.png", "dimension.png", "survey_timeline.png", "REPORT.md"} <= names
    report = (tmp_path / "figures" / "REPORT.md").read_text()
    for section in sorted((results / "report").glob("*.md")):
        assert section.read_text() in report, f"{section.name} missing from the regenerated report"
    assert "## The survey's claims against this run" in report and "survey_timeline.png" in report


def test_cli_from_cache_refuses_steps(capsys):
    assert cli.main(["reproduce", "--from-cache", "--steps", "depth"]) == 1
    assert "--from-cache" in capsys.readouterr().err


def test_redraw_skips_figures_whose_csv_is_missing(tmp_path):
    written, skipped = redraw.redraw(tmp_path / "empty", tmp_path / "fig")
    assert [p.name for p in written] == ["survey_timeline.png"]
    assert "aggregation" in skipped and "survey_timeline" not in skipped
    with pytest.raises(ValueError, match="unknown figure"):
        redraw.redraw(tmp_path, tmp_path, names=["nope"])


def _depth(values):
    return {"depth": pd.DataFrame({"backbone": ["a", "b", "c"], "depth": [8, 16, 50], "pooling": "mac",
                                   "whitening": "none", "protocol": "all", "mAP": values})}


@pytest.mark.parametrize("values, verdict", [([0.5, 0.6, 0.7], "agrees"), ([0.5, 0.7, 0.6], "partly"),
                                             ([0.7, 0.6, 0.5], "disagrees")])
def test_depth_verdict_follows_the_numbers(values, verdict):
    (row,) = verdicts.depth(_depth(values))
    assert row["verdict"] == verdict and f"{values[-1]:.4f}" in row["ours"]


def test_missing_csv_reads_not_run(tmp_path):
    table = verdicts.claims_vs_ours(tmp_path)
    assert set(table["verdict"]) == {"not run"} and len(table) == len(verdicts.CHECKS)


def test_progress_timeline_uses_only_reported_numbers():
    df = survey.progress_timeline()
    reported = pd.concat([survey.to_long(survey.table_2_2()), survey.to_long(survey.table_2_3())])
    keys = set(zip(reported["method"], reported["dataset"], reported["metric"], reported["value"]))
    assert all(k in keys for k in zip(df["method"], df["dataset"], df["metric"], df["value"]))
    assert set(df["method"]) <= set(survey.METHOD_YEARS)
    for _, part in df.groupby(["dataset", "metric"]):
        best = part["best_so_far"].to_numpy()
        assert np.all(np.diff(best) >= 0) and np.allclose(best, np.maximum.accumulate(part["value"]))
    assert df["year"].between(2014, 2020).all()
