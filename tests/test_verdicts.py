"""Each survey-claim check of experiments/verdicts.py on tiny synthetic results whose outcome is known.

A method's AP on query q is its mean + a query difficulty shared by all methods (the pairing the
bootstrap exploits) + its own noise. Means 0.1 apart are a clear direction; equal means are within
noise. Every row must state the verdict and print the bootstrap interval of the right pair, in the
right order (a − b). Depth, the layer contenders and the fine-tuning contender are in test_report.py.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from retrievalkit.experiments import verdicts

QUERIES = 40
DIFFICULTY = np.random.default_rng(100).normal(0, 0.1, QUERIES)


def aps(pq: pd.DataFrame, key: dict) -> np.ndarray:
    mask = np.logical_and.reduce([(pq[c] == v).to_numpy() for c, v in key.items()])
    return pq[mask].sort_values("query")["AP"].to_numpy()


def synthetic(name: str, entries, noise: float = 0.05) -> dict:
    """``{name: results table, name_per_query: APs}`` from ``(key, mean AP, other table columns)`` entries."""
    pq = pd.DataFrame([{**key, "query": q, "AP": mean + DIFFICULTY[q] + own}
                       for i, (key, mean, _) in enumerate(entries)
                       for q, own in enumerate(np.random.default_rng(i).normal(0, noise, QUERIES))])
    table = pd.DataFrame([{**key, **cols, "protocol": "all", "mAP": aps(pq, key).mean()} for key, _, cols in entries])
    return {name: table, f"{name}_per_query": pq}


def interval(r: dict, name: str, a: dict, b: dict) -> str:
    """The printed bootstrap of ``a − b``, e.g. ``Δ +0.1000 [+0.0900, +0.1100]``."""
    pq = r[f"{name}_per_query"]
    return str(verdicts.paired_bootstrap(aps(pq, a), aps(pq, b)))


# --- aggregation (Figure 2.12b): best vs worst pooling on the learning split, then R-MAC vs SPoC ----------------

def _aggregation(test: dict, learn: dict) -> dict:
    return synthetic("aggregation", [({"backbone": b, "pooling": p, "whitening": "none"}, m, {"learn_mAP": learn[b, p]})
                                     for (b, p), m in test.items()])


def _pool(backbone: str, pooling: str) -> dict:
    return {"backbone": backbone, "pooling": pooling, "whitening": "none"}


LEARN = {(b, p): v for b in ("efficientnet_lite0", "efficientnet_b3")
         for p, v in (("spoc", 0.9), ("rmac", 0.8), ("mac", 0.7))}  # spoc best, mac worst on the learning split


@pytest.mark.parametrize("test, verdict, rmac_vs_spoc", [
    ({"lite0": (0.75, 0.65, 0.55), "b3": (0.8, 0.7, 0.6)}, "agrees", "agrees"),
    ({"lite0": (0.55, 0.65, 0.45), "b3": (0.7, 0.7, 0.7)}, "partly", "disagrees"),
    ({"lite0": (0.6, 0.6, 0.6), "b3": (0.7, 0.7, 0.7)}, "within noise", "within noise"),
])
def test_aggregation_verdicts(test, verdict, rmac_vs_spoc):
    means = {(f"efficientnet_{b}", p): m for b, row in test.items() for p, m in zip(("rmac", "spoc", "mac"), row)}
    r = _aggregation(means, LEARN)
    differ, rmac = verdicts.aggregation(r)
    assert differ["verdict"] == verdict and rmac["verdict"] == rmac_vs_spoc
    for b in ("lite0", "b3"):  # spoc − mac: the pair the learning split picks, whatever test says
        full = f"efficientnet_{b}"
        spoc_mac = interval(r, "aggregation", _pool(full, "spoc"), _pool(full, "mac"))
        assert f"{b}: spoc − mac {spoc_mac}" in differ["ours"]
    lite0 = "efficientnet_lite0"
    assert interval(r, "aggregation", _pool(lite0, "rmac"), _pool(lite0, "spoc")) in rmac["ours"]


def test_aggregation_ignores_whitened_rows():
    r = _aggregation({("efficientnet_lite0", p): m for p, m in (("rmac", 0.7), ("spoc", 0.6), ("mac", 0.5))}, LEARN)
    whitened = r["aggregation"].iloc[:1].assign(whitening="pcaw", learn_mAP=0.99)  # if read, rmac would be the best
    r["aggregation"] = pd.concat([r["aggregation"], whitened])
    differ, _ = verdicts.aggregation(r)
    assert differ["verdict"] == "agrees" and "spoc − mac" in differ["ours"]


# --- dimension (Figure 2.13b): rises from the smallest to the middle width; 2048-d level with the validated width

DIMS = (64, 128, 256, 1024, 2048)  # first 64, middle 256


def _width(d: int) -> dict:
    return {"recipe": "fc_learned", "dim": d}


def _dimension(means, val, noise) -> dict:
    r = synthetic("dimension", [(_width(d), m, {"val_mAP": v}) for d, m, v in zip(DIMS, means, val)], noise)
    # the backbone's own width is no learned width: counted in, it would move the middle width to 1024
    native = {"recipe": "native", "dim": 1280, "val_mAP": np.nan, "protocol": "all", "mAP": 0.99}
    r["dimension"] = pd.concat([r["dimension"], pd.DataFrame([native])], ignore_index=True)
    return r


@pytest.mark.parametrize("means, val, noise, verdict", [
    ((0.4, 0.5, 0.6, 0.7, 0.7), (0.4, 0.5, 0.6, 0.8, 0.7), 0.01, "agrees"),   # rises; 2048 as good as the chosen 1024
    ((0.4, 0.5, 0.7, 0.8, 0.7), (0.4, 0.5, 0.9, 0.6, 0.6), 0.01, "agrees"),   # validation picks 256, not test's 1024
    ((0.4, 0.5, 0.6, 0.7, 0.6), (0.4, 0.5, 0.6, 0.8, 0.7), 0.01, "partly"),   # rises, but 2048 clearly below 1024
    ((0.7, 0.65, 0.6, 0.5, 0.4), (0.9, 0.5, 0.5, 0.5, 0.4), 0.01, "disagrees"),  # falls; 2048 below the chosen 64
    ((0.6,) * 5, (0.4, 0.5, 0.6, 0.8, 0.7), 0.05, "within noise"),
])
def test_dimension_verdicts(means, val, noise, verdict):
    r = _dimension(means, val, noise)
    (row,) = verdicts.dimension(r)
    chosen = DIMS[int(np.argmax(val))]
    assert row["verdict"] == verdict
    assert interval(r, "dimension", _width(256), _width(64)) in row["ours"]
    assert interval(r, "dimension", _width(2048), _width(chosen)) in row["ours"]
    assert f"vs {chosen}-d (best on validation)" in row["ours"]


def test_dimension_when_validation_prefers_2048():
    (row,) = verdicts.dimension(_dimension((0.4, 0.5, 0.6, 0.7, 0.72), (0.4, 0.5, 0.6, 0.7, 0.8), 0.01))
    assert row["verdict"] == "agrees" and "2048-d 0.7" in row["ours"]
    assert "itself the best width on validation" in row["ours"]


# --- multi-pass (Figure 2.7): every scheme against the single pass --------------------------------------------

@pytest.mark.parametrize("single, grid, dense, verdict", [
    (0.6, 0.7, 0.75, "agrees"), (0.6, 0.7, 0.6, "partly"), (0.6, 0.5, 0.6, "disagrees"),
    (0.6, 0.6, 0.6, "within noise")])
def test_multipass_verdicts(single, grid, dense, verdict):
    variants = {"single pass": single, "multi-pass grid": grid, "multi-pass dense": dense}
    r = synthetic("multipass", [({"variant": v}, m, {}) for v, m in variants.items()])
    (row,) = verdicts.multipass(r)
    assert row["verdict"] == verdict
    for scheme in ("grid", "dense"):
        assert interval(r, "multipass", {"variant": f"multi-pass {scheme}"}, {"variant": "single pass"}) in row["ours"]


# --- embedding (Tables 2.2-2.3): Fisher vectors against VLAD, on deep and on hand-crafted local features --------

@pytest.mark.parametrize("means, expected", [
    ({"conv columns": (0.8, 0.6), "RootSIFT": (0.5, 0.7)}, ["agrees", "disagrees"]),
    ({"conv columns": (0.6, 0.6), "RootSIFT": (0.5, 0.5)}, ["within noise", "within noise"]),
])
def test_embedding_verdicts(means, expected):
    entries = [({"method": f"{s} · {e}"}, m, {}) for s, pair in means.items() for e, m in zip(("FV", "VLAD"), pair)]
    r = synthetic("embedding_deep_vs_handcrafted", entries)
    rows = verdicts.embedding(r)
    assert [row["verdict"] for row in rows] == expected
    for row, source in zip(rows, means):
        fv, vlad = {"method": f"{source} · FV"}, {"method": f"{source} · VLAD"}
        assert row["ours"].startswith(source) and interval(r, "embedding_deep_vs_handcrafted", fv, vlad) in row["ours"]


# --- hashing (§2.3.2.4): the balance term lowers the mean |bit mean| of the codes, at the median code length ----

def test_hashing_verdict_compares_bit_balance_at_the_median_code_length():
    balance = {  # (dataset, bits): (deep, deep+balance); the other lengths say the opposite of 32 bits
        ("coil100", 16): (0.05, 0.3), ("coil100", 32): (0.2, 0.05), ("coil100", 64): (0.05, 0.3),
        ("fashion_mnist", 16): (0.3, 0.05), ("fashion_mnist", 32): (0.1, 0.15), ("fashion_mnist", 64): (0.3, 0.05)}
    df = pd.DataFrame([{"dataset": d, "method": m, "bits": b, "mean_balance": v}
                       for (d, b), pair in balance.items() for m, v in zip(("deep", "deep+balance"), pair)]
                      + [{"dataset": "coil100", "method": "lsh", "bits": 128, "mean_balance": 0.0}])
    coil, fashion = verdicts.hashing({"hashing": df})
    assert coil["verdict"] == "agrees"
    assert coil["ours"] == "coil100, 32 bits: mean |bit mean| 0.0500 with the term vs 0.2000 without"
    assert fashion["verdict"] == "disagrees"
    assert fashion["ours"] == "fashion_mnist, 32 bits: mean |bit mean| 0.1500 with the term vs 0.1000 without"


# --- Table 2.1: the fastest search is less accurate than exact search ----------------------------------------------

@pytest.mark.parametrize("fast_map, verdict", [(0.4, "agrees"), (0.7, "within noise"), (0.8, "disagrees")])
@pytest.mark.parametrize("reference", ["exact", "flat"])
def test_table_2_1_verdicts(fast_map, verdict, reference):
    methods = {"flat": (0.7, 0.5), "ivf_flat nprobe=1": (0.5, 0.05), "hamming itq 64b": (fast_map, 0.01)}
    if reference == "exact":
        methods = {"exact": (0.7, 1.0), **methods}
    r = synthetic("table_2_1", [({"method": m}, ap, {"ms_per_query_batch": ms}) for m, (ap, ms) in methods.items()])
    (row,) = verdicts.table_2_1(r)
    assert row["verdict"] == verdict
    assert row["ours"].startswith("fastest: hamming itq 64b 0.010 ms") and f"exact search ({reference})" in row["ours"]
    assert interval(r, "table_2_1", {"method": "hamming itq 64b"}, {"method": reference}) in row["ours"]


# --- re-ranking (§2.4.2.1, Table 2.1): αQE, diffusion against the learning split's best, offline diffusion --------

ONLINE, OFFLINE = "diffusion CG (online)", "diffusion offline (precomputed)"


def _method(name: str) -> dict:
    return {"method": name, "mode": "inductive"}


def _rerank(methods: dict, grid: dict) -> dict:
    r = synthetic("rerank", [(_method(m), ap, {"ms_per_query": ms}) for m, (ap, ms) in methods.items()], noise=0.01)
    transductive = {"method": ONLINE, "mode": "transductive", "mAP": 0.99, "ms_per_query": 0.1}  # must be ignored
    r["rerank"] = pd.concat([r["rerank"], pd.DataFrame([transductive])], ignore_index=True)
    r["rerank_grid"] = pd.DataFrame({"method": list(grid), "mAP": list(grid.values())})
    return r


# the learning-split grid prefers αQE over DBA; on test DBA is closer to diffusion
GRID = {"αQE": 0.7, "DBA": 0.65, ONLINE: 0.9}


@pytest.mark.parametrize("methods, expected", [
    ({"none": (0.5, 1.0), "αQE": (0.6, 2.0), "DBA": (0.74, 1.5), ONLINE: (0.75, 50.0), OFFLINE: (0.75, 5.0)},
     ["agrees", "agrees", "agrees"]),
    ({"none": (0.6, 1.0), "αQE": (0.6, 2.0), "DBA": (0.5, 1.5), ONLINE: (0.5, 50.0), OFFLINE: (0.4, 5.0)},
     ["within noise", "disagrees", "disagrees"]),
    # αQE better but not slower: the claimed cost is absent; offline as accurate but slower
    ({"none": (0.6, 1.0), "αQE": (0.7, 0.5), "DBA": (0.5, 1.5), ONLINE: (0.7, 50.0), OFFLINE: (0.7, 80.0)},
     ["disagrees", "within noise", "disagrees"]),
])
def test_rerank_verdicts(methods, expected):
    r = _rerank(methods, GRID)
    qe, diffusion, offline = verdicts.rerank(r)
    assert [qe["verdict"], diffusion["verdict"], offline["verdict"]] == expected
    assert interval(r, "rerank", _method("αQE"), _method("none")) in qe["ours"]
    assert "αQE " in diffusion["ours"] and "DBA" not in diffusion["ours"]  # the contender picked on the learning split
    assert interval(r, "rerank", _method(ONLINE), _method("αQE")) in diffusion["ours"]
    assert interval(r, "rerank", _method(OFFLINE), _method(ONLINE)) in offline["ours"]


# --------------------------------------------------------------------------- per-dataset claims (instance step)
def _instance_results(folder, rng_seed=0):
    """Tiny instance-step CSVs whose outcomes are known: R-MAC > SPoC, deeper better, PCA-w hurts,
    αQE within noise, diffusion better than αQE, CNN better than the colour histogram."""
    rng = np.random.default_rng(rng_seed)
    sets = verdicts.INSTANCE_SETS
    n = 40
    noise = lambda: rng.normal(0, 0.002, n)  # noqa: E731
    deep, deep_pq = [], []
    effect = {"rmac": 0.2, "gem": 0.1, "spoc": 0.0, "mac": 0.05, "crow": 0.15}
    for net, depth, lift in (("shallow", 10, 0.0), ("deep", 20, 0.1)):
        for pooling, gain in effect.items():
            for ds in sets:
                ap = np.clip(0.4 + lift + gain + noise(), 0, 1)
                deep.append({"network": net, "depth": depth, "pooling": pooling, "learn_mAP": 0.5 + lift + gain,
                             "dataset": ds, "protocol": "all", "mAP": ap.mean()})
                deep_pq += [{"network": net, "pooling": pooling, "dataset": ds, "query": q, "AP": a}
                            for q, a in enumerate(ap)]
    pipe, pipe_pq, base, base_pq = [], [], [], []
    for ds in sets:
        pca = np.clip(0.4 + noise(), 0, 1)
        stages = {"off-the-shelf": np.clip(0.5 + noise(), 0, 1), "+ PCA-w": pca,
                  "+ αQE": pca + 0.0005 * (-1.0) ** np.arange(n),  # mean difference 0: within noise
                  "+ diffusion": np.clip(0.6 + noise(), 0, 1)}
        for stage, ap in stages.items():
            pipe.append({"stage": stage, "whitening": "none" if stage == "off-the-shelf" else "pca_w@64",
                         "dataset": ds, "protocol": "all", "mAP": ap.mean()})
            pipe_pq += [{"stage": stage, "dataset": ds, "query": q, "AP": a} for q, a in enumerate(ap)]
        ap = np.clip(0.1 + noise(), 0, 1)
        base.append({"stage": "colour histogram", "dataset": ds, "protocol": "all", "mAP": ap.mean()})
        base_pq += [{"stage": "colour histogram", "dataset": ds, "query": q, "AP": a} for q, a in enumerate(ap)]
    for name, rows in (("instance_offtheshelf", deep), ("instance_offtheshelf_per_query", deep_pq),
                       ("instance_pipeline", pipe), ("instance_pipeline_per_query", pipe_pq),
                       ("instance_baseline", base), ("instance_baseline_per_query", base_pq)):
        pd.DataFrame(rows).to_csv(folder / f"{name}.csv", index=False)


def test_instance_claims_have_one_verdict_column_per_dataset_from_paired_bootstraps(tmp_path):
    _instance_results(tmp_path)
    coil = pd.DataFrame({"survey": ["R-MAC beats SPoC on the same network (…)"], "verdict": ["disagrees"]})
    table = verdicts.instance_claims(tmp_path, coil=coil).set_index("claim")
    assert list(table.columns) == ["coil100", *verdicts.INSTANCE_SETS]
    expected = {
        "aggregation methods on one frozen network give different mAP": "agrees",
        "R-MAC beats SPoC on the same network": "agrees",
        "attention weighting (CroW) beats plain sum pooling (SPoC)": "agrees",
        "deeper backbones retrieve better (GeM)": "agrees",
        "PCA-whitening improves an off-the-shelf descriptor": "disagrees",
        "query expansion improves on the plain ranking": verdicts.WITHIN_NOISE,
        "diffusion beats query expansion": "agrees",
        "CNN features beat a colour histogram": "agrees",
    }
    for claim, verdict in expected.items():
        assert (table.loc[claim, list(verdicts.INSTANCE_SETS)] == verdict).all(), (claim, table.loc[claim].tolist())
    assert table.loc["R-MAC beats SPoC on the same network", "coil100"] == "disagrees"
    assert table.loc["CNN features beat a colour histogram", "coil100"] == "–"
    assert (table.loc["CNN features beat RootSIFT-VLAD (deep vs handcrafted)", list(verdicts.INSTANCE_SETS)]
            == "not run").all()  # these CSVs hold no RootSIFT-VLAD rows


def test_instance_claims_say_not_run_without_the_instance_step(tmp_path):
    coil = pd.DataFrame({"survey": [], "verdict": []})
    table = verdicts.instance_claims(tmp_path, coil=coil)
    assert (table[list(verdicts.INSTANCE_SETS)] == "not run").all().all()


def test_the_coil_column_can_pick_a_claims_row_by_what_ours_says():
    from retrievalkit.experiments.verdicts import _coil_verdict

    coil = pd.DataFrame({"survey": ["Fisher vectors beat VLAD (x)"] * 2,
                         "ours": ["conv columns: FV 0.9 > VLAD 0.8", "RootSIFT: FV 0.5 < VLAD 0.6"],
                         "verdict": ["agrees", "disagrees"]})
    assert _coil_verdict(coil, ("Fisher vectors beat VLAD", "RootSIFT")) == "disagrees"
    assert _coil_verdict(coil, "Fisher vectors beat VLAD") == "agrees"
    assert _coil_verdict(coil, None) == "–" and _coil_verdict(coil, "nothing like it") == "–"
