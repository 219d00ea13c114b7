"""REPORT.md and every figure regenerate from cached CSVs; verdicts and the timeline come from data."""
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retrievalkit import cli, survey
from retrievalkit.experiments import reproduce, verdicts

COMMITTED_RESULTS = Path(__file__).resolve().parents[1] / "results"


def _no_compute(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("--from-cache must not extract features or run a step")

    monkeypatch.setattr("retrievalkit.features.extract", forbidden)
    monkeypatch.setattr("retrievalkit.features.extraction.extract", forbidden)
    monkeypatch.setattr("retrievalkit.experiments.steps.Step.__call__", forbidden)


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
    written, skipped = reproduce.redraw(tmp_path / "empty", tmp_path / "fig")
    assert [p.name for p in written] == ["survey_timeline.png"]
    assert "aggregation" in skipped and "survey_timeline" not in skipped
    with pytest.raises(ValueError, match="unknown figure"):
        reproduce.redraw(tmp_path, tmp_path, names=["nope"])


QUERIES = 40


def _noise(seed, scale=0.05):
    return np.random.default_rng(seed).normal(0, scale, QUERIES)


def _depth(means, noise=0.05):
    """A depth table and per-query APs: backbone i's AP = means[i] + query noise (shared + own)."""
    names = ["a", "b", "c"]
    shared = _noise(100, 0.1)
    per_query = pd.DataFrame([{"backbone": b, "pooling": "mac", "whitening": "none", "query": q,
                               "AP": m + shared[q] + own[q]}
                              for i, (b, m) in enumerate(zip(names, means)) for own in [_noise(i, noise)]
                              for q in range(QUERIES)])
    maps = per_query.groupby("backbone", sort=False)["AP"].mean().to_numpy()
    depth = pd.DataFrame({"backbone": names, "depth": [8, 16, 50], "pooling": "mac", "whitening": "none",
                          "protocol": "all", "mAP": maps})
    return {"depth": depth, "aggregation_per_query": per_query}


@pytest.mark.parametrize("means, noise, verdict", [
    ([0.5, 0.6, 0.7], 0.05, "agrees"), ([0.5, 0.7, 0.6], 0.05, "partly"), ([0.7, 0.6, 0.5], 0.05, "disagrees"),
    ([0.5, 0.502, 0.504], 0.05, "within noise")])
def test_depth_verdict_follows_the_bootstrap(means, noise, verdict):
    r = _depth(means, noise)
    (row,) = verdicts.depth(r)
    assert row["verdict"] == verdict and f"{r['depth']['mAP'].iloc[-1]:.4f}" in row["ours"]
    assert row["ours"].count("[") == 2  # both steps print their interval


def test_paired_bootstrap_is_reproducible_and_states_a_direction_only_beyond_noise():
    a = 0.6 + _noise(1)
    same = verdicts.paired_bootstrap(a, a)
    assert (same.mean, same.lo, same.hi, same.sign) == (0.0, 0.0, 0.0, "≈")
    clear = verdicts.paired_bootstrap(a + 0.05, a)
    assert clear.sign == ">" and clear.lo > 0 and clear.mean == pytest.approx(0.05)
    noisy = verdicts.paired_bootstrap(a + _noise(2, 0.05), a)  # a mean shift of ~0 with query noise
    assert noisy.sign == "≈" and noisy.lo < 0 < noisy.hi
    assert verdicts.paired_bootstrap(a + _noise(2), a) == verdicts.paired_bootstrap(a + _noise(2), a)
    assert verdicts.paired_bootstrap(a, a + 0.05).sign == "<"


def _layers(learn, test_means):
    variants = ["stage7", "head", "pool", "stage6+stage7+head"]
    kinds = ["conv", "conv", "fc", "layer fusion"]
    per_query = pd.DataFrame([{"variant": v, "query": q, "AP": m + e}
                              for i, (v, m) in enumerate(zip(variants, test_means))
                              for q, e in enumerate(_noise(i, 0.02))])
    maps = per_query.groupby("variant", sort=False)["AP"].mean()
    layers = pd.DataFrame({"variant": variants, "kind": kinds, "protocol": "all", "learn_mAP": learn,
                           "mAP": maps[variants].to_numpy()})
    return {"layers": layers, "layers_per_query": per_query}


def test_layer_contenders_are_picked_on_the_learning_split_not_on_test():
    # stage7 is best on test, head on the learning split: the verdict must compare head with the FC-like layer
    conv, fusion = verdicts.layers(_layers(learn=[0.5, 0.7, 0.6, 0.8], test_means=[0.8, 0.6, 0.65, 0.62]))
    assert conv["ours"].startswith("conv head") and "stage7" not in conv["ours"]
    assert conv["verdict"] == "disagrees"  # head (0.60) is clearly below pool (0.65) on test
    assert fusion["verdict"] == "agrees" and "stage7 " not in fusion["ours"]


def test_results_without_per_query_aps_ask_for_a_rerun_instead_of_guessing(tmp_path):
    # The committed tables as a run made before per-query APs existed would have left them.
    for table_csv in COMMITTED_RESULTS.glob("*.csv"):
        if not table_csv.name.endswith("_per_query.csv"):
            shutil.copyfile(table_csv, tmp_path / table_csv.name)
    table = verdicts.claims_vs_ours(tmp_path).set_index("figure")
    for step in ("embedding", "layers", "multipass", "finetune", "rerank"):
        assert table.loc[step, "verdict"] == f"needs per-query results: rerun step `{step}`"
    assert table.loc["depth", "verdict"] == "needs per-query results: rerun step `aggregation`"


def test_report_names_the_torch_checkpoint_folder_as_a_user_finds_it(tmp_path, monkeypatch):
    from retrievalkit.experiments import offtheshelf_steps

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "machine-specific"))
    monkeypatch.setattr(offtheshelf_steps.offtheshelf.bb, "weights_available", lambda name: False)
    note = offtheshelf_steps._missing_torchvision_note()
    assert "torch.hub.get_dir()/checkpoints" in note and str(tmp_path) not in note
    for section in (COMMITTED_RESULTS / "report").glob("*.md"):
        assert "/root/" not in section.read_text(), f"{section.name} prints a path of the machine that wrote it"


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


def test_depth_with_a_single_backbone_compares_nothing():
    r = _depth([0.5, 0.6, 0.7])
    r["depth"] = r["depth"].iloc[:1]
    (row,) = verdicts.depth(r)
    assert row["verdict"] == "not run" and "one backbone only" in row["ours"]


def test_finetune_contender_is_the_supervised_loss_best_on_validation():
    """Manifold mining is compared with the supervised loss that the validation split prefers, not the test winner."""
    methods = ["triplet", "contrastive", "manifold"]
    test_means = {"triplet": 0.90, "contrastive": 0.70, "manifold": 0.70}  # triplet wins on test...
    per_query = pd.DataFrame([{"method": m, "stage": "after", "query": q, "AP": test_means[m] + e}
                              for i, m in enumerate(methods) for q, e in enumerate(_noise(i, 0.01))]
                             + [{"method": "off-the-shelf", "stage": "before", "query": q, "AP": 0.6 + e}
                                for q, e in enumerate(_noise(9, 0.01))])
    scores = pd.DataFrame({"method": ["off-the-shelf"] + methods, "stage": ["before"] + ["after"] * 3,
                           "supervision": ["none", "supervised", "supervised", "unsupervised"],
                           "best_epoch": [0, 2, 1, 3], "protocol": "all",
                           "mAP": [0.6] + [test_means[m] for m in methods]})
    history = pd.DataFrame({"method": ["triplet", "triplet", "contrastive", "contrastive"], "epoch": [1, 2, 1, 2],
                            "val_mAP": [0.95, 0.5, 0.6, 0.99]})  # ...contrastive's kept epoch (1) scores 0.6,
    # triplet's kept epoch (2) 0.5: the validation split prefers contrastive
    overall, manifold = verdicts.finetune({"finetune": scores, "finetune_per_query": per_query,
                                           "finetune_history": history})
    assert overall["verdict"] == "agrees"
    assert "vs contrastive" in manifold["ours"] and manifold["verdict"] == "agrees"
