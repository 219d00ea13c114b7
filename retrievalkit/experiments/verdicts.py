"""The survey's claims checked against our cached results: what agrees and what does not.

Each check reads the CSVs a ``reproduce`` step wrote and states, in one row, the survey's claim
(§2.5.3, Figures 2.12–2.13, Tables 2.1–2.3; see :mod:`retrievalkit.survey`), what our run
measured, and a verdict computed from those numbers — never typed in. ``figures/REPORT.md``
opens with this table; notebooks/12_reproduce_survey_figures shows it. A check whose CSV is
missing says "not run".

Noise. COIL-100 has 200 test queries (40 in SMALL mode), so two mAPs can differ by a few
thousandths by chance. A comparison states a direction only when a **paired bootstrap over
queries** (:func:`paired_bootstrap`: :data:`RESAMPLES` resamples, fixed seed) puts the 95%
interval of the mean per-query AP difference on one side of zero; otherwise it reads "within
noise". The per-query APs come from the ``<name>_per_query.csv`` files the steps write; results
without them get "needs per-query results: rerun step …" instead of a guess.

No test-set selection. When a claim compares "the best of several" with something, the contender
is picked on the learning split (``learn_mAP`` columns, validation mAP of the fine-tuning runs, the
re-ranking grid), or every candidate is compared like with like; the test split only scores.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

TIE = 0.005  # mAP margin of the "nearly the same accuracy" claims (equivalence margin: 2 × TIE)
RESAMPLES = 2000
SEED = 0
LEVEL = 0.95
WITHIN_NOISE = "within noise"


class NeedsRerun(Exception):
    """A verdict needs data the cached results lack (per-query APs, learning-split scores)."""

    def __init__(self, step: str):
        super().__init__(f"needs per-query results: rerun step `{step}`")
        self.step = step


@dataclass(frozen=True)
class Paired:
    """Mean paired difference ``a − b`` (over queries) and its bootstrap interval."""

    mean: float
    lo: float
    hi: float

    @property
    def sign(self) -> str:
        return ">" if self.lo > 0 else ("<" if self.hi < 0 else "≈")

    def __str__(self) -> str:
        return f"Δ {self.mean:+.4f} [{self.lo:+.4f}, {self.hi:+.4f}]"


def paired_bootstrap(a, b, resamples: int | None = None, seed: int | None = None, level: float | None = None) -> Paired:
    """Percentile bootstrap of the mean of ``a − b``, resampling queries (pairs) with replacement.

    ``a``, ``b``: per-query APs of two methods on the same queries. Returns the observed mean
    difference and the ``level`` interval of its bootstrap distribution (fixed ``seed``: the same
    numbers give the same interval on every run). Defaults: the module's :data:`RESAMPLES`, :data:`SEED`
    and :data:`LEVEL`, read at each call.
    """
    resamples = RESAMPLES if resamples is None else resamples
    seed = SEED if seed is None else seed
    level = LEVEL if level is None else level
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.ndim != 1 or len(d) == 0:
        raise ValueError(f"paired_bootstrap needs two equal-length 1-D AP arrays, got shapes {np.shape(a)}, {np.shape(b)}")
    means = d[np.random.default_rng(seed).integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Paired(float(d.mean()), float(lo), float(hi))


def _direction(p: Paired, agree: str = ">") -> str:
    """Verdict of a directional claim ("a ``agree`` b") from its bootstrap interval."""
    return WITHIN_NOISE if p.sign == "≈" else ("agrees" if p.sign == agree else "disagrees")


def _tally(signs: list[str]) -> str:
    """Verdict of "every step / every method improves": agrees, partly, disagrees or within noise."""
    if signs and all(s == ">" for s in signs):
        return "agrees"
    if ">" in signs:
        return "partly"
    return "disagrees" if "<" in signs else WITHIN_NOISE


def _equivalent(p: Paired, margin: float = 2 * TIE) -> str:
    """Verdict of "as accurate as" (a − b not below −margin): agrees when the whole interval is above −margin."""
    return "agrees" if p.lo > -margin else ("disagrees" if p.hi < -margin else WITHIN_NOISE)


def _aps(r: dict, name: str, step: str, **key) -> np.ndarray:
    """Per-query APs (ordered by query) of the row of ``<name>_per_query.csv`` matching ``key``."""
    pq = r.get(f"{name}_per_query")
    if pq is None:
        raise NeedsRerun(step)
    mask = np.ones(len(pq), dtype=bool)
    for column, value in key.items():
        if column not in pq.columns:
            raise NeedsRerun(step)
        mask &= (pq[column] == value).to_numpy()
    part = pq[mask].sort_values("query")
    if part.empty:
        raise NeedsRerun(step)
    return part["AP"].to_numpy()


def _need(df: pd.DataFrame, column: str, step: str) -> None:
    if column not in df.columns or df[column].isna().all():
        raise NeedsRerun(step)


def _all(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["protocol"] == "all"] if "protocol" in df.columns else df


def _row(figure: str, claim: str, ours: str, verdict: str) -> dict:
    return {"figure": figure, "survey": claim, "ours": ours, "verdict": verdict}


def _short(name: str) -> str:
    return name.replace("efficientnet_", "")


def aggregation(r: dict) -> list[dict]:
    raw = _all(r["aggregation"])
    raw = raw[raw["whitening"] == "none"]
    _need(raw, "learn_mAP", "aggregation")
    parts, signs = [], []
    for backbone, part in raw.groupby("backbone", sort=False):
        hi, lo = part.loc[part["learn_mAP"].idxmax()], part.loc[part["learn_mAP"].idxmin()]
        p = paired_bootstrap(_aps(r, "aggregation", "aggregation", backbone=backbone, pooling=hi["pooling"], whitening="none"),
                             _aps(r, "aggregation", "aggregation", backbone=backbone, pooling=lo["pooling"], whitening="none"))
        signs.append(p.sign)
        parts.append(f"{_short(backbone)}: {hi['pooling']} − {lo['pooling']} {p}")
    differ = [s != "≈" for s in signs]
    rows = [_row("2.12b", "aggregation methods on one frozen network give different mAP",
                 "test mAP of the best minus the worst pooling on the learning split: " + "; ".join(parts),
                 "agrees" if all(differ) else ("partly" if any(differ) else WITHIN_NOISE))]
    first = raw["backbone"].iloc[0]
    lite0 = raw[raw["backbone"] == first].set_index("pooling")["mAP"]
    if {"rmac", "spoc"} <= set(lite0.index):
        p = paired_bootstrap(_aps(r, "aggregation", "aggregation", backbone=first, pooling="rmac", whitening="none"),
                             _aps(r, "aggregation", "aggregation", backbone=first, pooling="spoc", whitening="none"))
        rows.append(_row("2.12b / Table 2.2", "R-MAC beats SPoC on the same network (Oxford5k 66.9 vs 58.9)",
                         f"{first}: R-MAC {lite0['rmac']:.4f} {p.sign} SPoC {lite0['spoc']:.4f} ({p})",
                         _direction(p)))
    if {"crow", "spoc"} <= set(lite0.index):
        p = paired_bootstrap(_aps(r, "aggregation", "aggregation", backbone=first, pooling="crow", whitening="none"),
                             _aps(r, "aggregation", "aggregation", backbone=first, pooling="spoc", whitening="none"))
        rows.append(_row("§2.3.2.3 / Table 2.2", "CroW's attention weights beat plain sum pooling, SPoC "
                         "(Oxford5k 68.4 vs 58.9)",
                         f"{first}: CroW {lite0['crow']:.4f} {p.sign} SPoC {lite0['spoc']:.4f} ({p})", _direction(p)))
    return rows


def depth(r: dict) -> list[dict]:
    df = _all(r["depth"])
    df = df[df["whitening"] == "none"] if "whitening" in df.columns else df
    rows = []
    for pooling, part in df.groupby("pooling"):
        part = part.sort_values("depth")
        if len(part) < 2:
            rows.append(_row("2.13a", f"deeper backbones retrieve better ({pooling.upper()})",
                             f"one backbone only ({part['backbone'].iloc[0]}): no step in depth to compare", "not run"))
            continue
        aps = [_aps(r, "aggregation", "aggregation", backbone=b, pooling=pooling, whitening="none")
               for b in part["backbone"]]
        steps = [paired_bootstrap(b, a) for a, b in zip(aps, aps[1:])]
        curve = " → ".join(f"{_short(b)} ({d}) {m:.4f}" for b, d, m in zip(part["backbone"], part["depth"], part["mAP"]))
        rows.append(_row("2.13a", f"deeper backbones retrieve better ({pooling.upper()})",
                         curve + "; steps: " + ", ".join(str(p) for p in steps), _tally([p.sign for p in steps])))
    return rows


def dimension(r: dict) -> list[dict]:
    df = _all(r["dimension"])
    fc = df[df["recipe"] == "fc_learned"].sort_values("dim")
    if fc.empty:
        return []
    _need(fc, "val_mAP", "dimension")
    by_dim = fc.set_index("dim")
    dims = list(by_dim.index)
    first, middle = dims[0], dims[len(dims) // 2]
    chosen = int(by_dim["val_mAP"].idxmax())  # the width the learning split prefers
    aps = {d: _aps(r, "dimension", "dimension", recipe="fc_learned", dim=d) for d in {first, middle, chosen, 2048} & set(dims)}
    rise = paired_bootstrap(aps[middle], aps[first])
    ours = (f"FC head: {first}-d {by_dim.loc[first, 'mAP']:.4f} → {middle}-d {by_dim.loc[middle, 'mAP']:.4f} ({rise})")
    if chosen == 2048:
        ours += f"; 2048-d {by_dim.loc[2048, 'mAP']:.4f} is itself the best width on validation"
        saturates = "agrees"
    elif 2048 in aps:
        level = paired_bootstrap(aps[2048], aps[chosen])
        ours += f"; 2048-d {by_dim.loc[2048, 'mAP']:.4f} vs {chosen}-d (best on validation) {by_dim.loc[chosen, 'mAP']:.4f} ({level})"
        saturates = _equivalent(level)
    else:
        saturates = WITHIN_NOISE
    rises = _direction(rise)
    verdict = ("agrees" if rises == saturates == "agrees" else
               "partly" if "agrees" in (rises, saturates) else
               "disagrees" if "disagrees" in (rises, saturates) else WITHIN_NOISE)
    return [_row("2.13b", "mAP grows with dimension, then levels off; 2048-d is already competitive", ours, verdict)]


def layers(r: dict) -> list[dict]:
    df = _all(r["layers"])
    _need(df, "learn_mAP", "layers")
    df = df.set_index("variant")
    conv, fc = df[df["kind"] == "conv"], df[df["kind"] == "fc"]
    best_conv, best_fc = conv["learn_mAP"].idxmax(), fc["learn_mAP"].idxmax()
    ap = lambda v: _aps(r, "layers", "layers", variant=v)  # noqa: E731
    p = paired_bootstrap(ap(best_conv), ap(best_fc))
    rows = [_row("§2.5.3, Table 2.2", "conv-layer features beat fully-connected ones (Holidays 74.7 for FC6)",
                 f"conv {best_conv} {df.loc[best_conv, 'mAP']:.4f} {p.sign} FC-like {best_fc} {df.loc[best_fc, 'mAP']:.4f} "
                 f"({p}; each the best of its kind on the learning split)", _direction(p))]
    fused = df[df["kind"] == "layer fusion"]
    if len(fused):
        name = fused.index[0]
        p = paired_bootstrap(ap(name), ap(best_conv))
        rows.append(_row("§2.5.3, Table 2.2", "fusing layers beats a single layer (Holidays 91.4 vs 80.2)",
                         f"layer fusion {df.loc[name, 'mAP']:.4f} {p.sign} {best_conv} {df.loc[best_conv, 'mAP']:.4f} "
                         f"({p}; the single layer chosen on the learning split)", _direction(p)))
    return rows


def multipass(r: dict) -> list[dict]:
    df = _all(r["multipass"]).set_index("variant")
    schemes = [v for v in df.index if v.startswith("multi-pass")]
    single = _aps(r, "multipass", "multipass", variant="single pass")
    tests = {v: paired_bootstrap(_aps(r, "multipass", "multipass", variant=v), single) for v in schemes}
    ours = "; ".join(f"{v.removeprefix('multi-pass ')} {df.loc[v, 'mAP']:.4f} ({p})" for v, p in tests.items())
    return [_row("Figure 2.7, Table 2.2", "multiple passes over patches beat a single pass, at a higher cost",
                 f"each scheme against the single pass {df.loc['single pass', 'mAP']:.4f}: {ours} "
                 "(same 112-px patches, a 10-object slice)", _tally([p.sign for p in tests.values()]))]


def embedding(r: dict) -> list[dict]:
    df = _all(r["embedding_deep_vs_handcrafted"]).set_index("method")
    rows = []
    for source in ("conv columns", "RootSIFT"):
        fv, vlad = f"{source} · FV", f"{source} · VLAD"
        p = paired_bootstrap(_aps(r, "embedding_deep_vs_handcrafted", "embedding", method=fv),
                             _aps(r, "embedding_deep_vs_handcrafted", "embedding", method=vlad))
        rows.append(_row("§2.5.3, Tables 2.2–2.3", "Fisher vectors beat VLAD (Oxford5k 81.5 vs 62.5)",
                         f"{source}: FV {df.loc[fv, 'mAP']:.4f} {p.sign} VLAD {df.loc[vlad, 'mAP']:.4f} ({p})",
                         _direction(p)))
    return rows


def hashing(r: dict) -> list[dict]:
    # Bit balance is a property of the database codes (one number per code set), not a mean over queries.
    df = r["hashing"]
    rows = []
    for dataset, part in df[df["method"].isin(["deep", "deep+balance"])].groupby("dataset", sort=False):
        bits = int(part["bits"].median())
        at = part[part["bits"] == bits].set_index("method")["mean_balance"]
        if {"deep", "deep+balance"} <= set(at.index):
            ok = at["deep+balance"] < at["deep"]
            rows.append(_row("§2.3.2.4, Eq. 2.12", "a bit-balance term makes each bit split the data evenly",
                             f"{dataset}, {bits} bits: mean |bit mean| {at['deep+balance']:.4f} with the term vs "
                             f"{at['deep']:.4f} without", "agrees" if ok else "disagrees"))
    return rows


def table_2_1(r: dict) -> list[dict]:
    df = r["table_2_1"].set_index("method")
    fast = df["ms_per_query_batch"].idxmin()
    reference = "exact" if "exact" in df.index else "flat"
    p = paired_bootstrap(_aps(r, "table_2_1", "efficiency", method=fast), _aps(r, "table_2_1", "efficiency", method=reference))
    return [_row("Table 2.1", "the fastest searches pay in accuracy (its sub-millisecond rows stay below 70 mAP)",
                 f"fastest: {fast} {df.loc[fast, 'ms_per_query_batch']:.3f} ms, mAP {df.loc[fast, 'mAP']:.4f} {p.sign} "
                 f"exact search ({reference}) {df.loc[reference, 'ms_per_query_batch']:.3f} ms, "
                 f"mAP {df.loc[reference, 'mAP']:.4f} ({p})", _direction(p, "<"))]


def finetune(r: dict) -> list[dict]:
    df = _all(r["finetune"])
    before = df.loc[df["stage"] == "before", "mAP"].iloc[0]
    after = df[df["stage"] == "after"].set_index("method")
    base = _aps(r, "finetune", "finetune", method="off-the-shelf", stage="before")
    ap = lambda m: _aps(r, "finetune", "finetune", method=m, stage="after")  # noqa: E731
    tests = {m: paired_bootstrap(ap(m), base) for m in after.index}
    listed = lambda sign: ", ".join(f"{m} {p}" for m, p in tests.items() if p.sign == sign) or "none"  # noqa: E731
    rows = [_row("Table 2.3, §2.4", "fine-tuning for retrieval beats off-the-shelf features (Oxford5k 66.9 → 81.5)",
                 f"off-the-shelf {before:.4f}; after minus before, per method — better: {listed('>')}; "
                 f"worse: {listed('<')}; within noise: {listed('≈')}", _tally([p.sign for p in tests.values()]))]
    supervised = after[after["supervision"] == "supervised"]
    history = r.get("finetune_history")
    if "manifold" in after.index and len(supervised) and history is not None:
        # the supervised contender is the one with the best validation mAP (learning objects 41-50) at its kept epoch
        kept = history.merge(supervised["best_epoch"].rename("epoch").reset_index(), on=["method", "epoch"])
        pick = kept.loc[kept["val_mAP"].idxmax(), "method"]
        p = paired_bootstrap(ap("manifold"), ap(pick))
        rows.append(_row("Table 2.3, §2.4.2", "unsupervised manifold mining nearly matches supervised "
                         "fine-tuning (85.4 vs 86.1 on Oxford5k)",
                         f"manifold (no labels) {after.loc['manifold', 'mAP']:.4f} vs {pick} {after.loc[pick, 'mAP']:.4f}, "
                         f"the supervised loss best on validation ({p}; 'nearly' = not more than {2 * TIE} below)",
                         _equivalent(p)))
    return rows


def rerank(r: dict) -> list[dict]:
    df = r["rerank"]
    df = df[df["mode"] == "inductive"].set_index("method")
    base = df.loc["none"]
    ap = lambda m: _aps(r, "rerank", "rerank", method=m, mode="inductive")  # noqa: E731
    rows = []
    if "αQE" in df.index:
        m = df.loc["αQE"]
        p = paired_bootstrap(ap("αQE"), ap("none"))
        slower = m["ms_per_query"] > base["ms_per_query"]
        rows.append(_row("§2.4.2.1", "query expansion improves on the plain ranking, at the cost of a second search",
                         f"αQE {m['mAP']:.4f} ({m['ms_per_query']:.2f} ms) {p.sign} none {base['mAP']:.4f} "
                         f"({base['ms_per_query']:.2f} ms) ({p})",
                         _direction(p) if slower or p.sign != ">" else "disagrees"))
    diffusion = "diffusion CG (online)"
    grid = r.get("rerank_grid")
    if diffusion in df.index and grid is not None:
        learned = grid[~grid["method"].str.startswith("diffusion")].groupby("method")["mAP"].max()
        contender = learned.idxmax() if len(learned) else "none"  # the learning split's best non-diffusion method
        p = paired_bootstrap(ap(diffusion), ap(contender))
        rows.append(_row("Table 2.1, §2.4.2.1", "diffusion gives the most accurate rankings (Table 2.1's best "
                         "Oxford5k row, 95.8, is regional diffusion)",
                         f"diffusion {df.loc[diffusion, 'mAP']:.4f} {p.sign} {contender} {df.loc[contender, 'mAP']:.4f}, "
                         f"the best non-diffusion method on the learning split ({p})", _direction(p)))
    online, offline = "diffusion CG (online)", "diffusion offline (precomputed)"
    if {online, offline} <= set(df.index):
        a, b = df.loc[online], df.loc[offline]
        p = paired_bootstrap(ap(offline), ap(online))
        same = _equivalent(p)
        rows.append(_row("Table 2.1, §2.4.2.1", "diffusion's query time (20–700 ms in Table 2.1) is what limits "
                         "it; work moved to indexing time makes a query cheaper at the same accuracy",
                         f"online CG {a['ms_per_query']:.2f} ms, mAP {a['mAP']:.4f}; offline {b['ms_per_query']:.2f} ms, "
                         f"mAP {b['mAP']:.4f} ({p}; 'same' = not more than {2 * TIE} below)",
                         same if b["ms_per_query"] < a["ms_per_query"] else "disagrees"))
    return rows


# step: (check, CSVs it needs, optional CSVs: per-query APs and learning-split tables)
CHECKS = {
    "aggregation": (aggregation, ("aggregation",), ("aggregation_per_query",)),
    "depth": (depth, ("depth",), ("aggregation_per_query",)),
    "dimension": (dimension, ("dimension",), ("dimension_per_query",)),
    "layers": (layers, ("layers",), ("layers_per_query",)),
    "multipass": (multipass, ("multipass",), ("multipass_per_query",)),
    "embedding": (embedding, ("embedding_deep_vs_handcrafted",), ("embedding_deep_vs_handcrafted_per_query",)),
    "hashing": (hashing, ("hashing",), ()),
    "finetune": (finetune, ("finetune",), ("finetune_per_query", "finetune_history")),
    "rerank": (rerank, ("rerank",), ("rerank_per_query", "rerank_grid")),
    "efficiency": (table_2_1, ("table_2_1",), ("table_2_1_per_query",)),
}


def claims_vs_ours(results_dir="results") -> pd.DataFrame:
    """One row per survey claim: figure, survey, ours, verdict (agrees / partly / disagrees / within noise /
    not run / needs per-query results)."""
    results = Path(results_dir)
    rows = []
    for step, (check, csvs, optional) in CHECKS.items():
        paths = {name: results / f"{name}.csv" for name in csvs}
        if not all(p.is_file() for p in paths.values()):
            rows.append(_row(step, "–", f"step `{step}` not run", "not run"))
            continue
        found = {name: results / f"{name}.csv" for name in optional}
        data = {name: pd.read_csv(p) for name, p in {**paths, **found}.items() if p.is_file()}
        try:
            rows += check(data)
        except NeedsRerun as err:
            rows.append(_row(step, "–", f"the cached results of `{step}` predate per-query APs", str(err)))
    return pd.DataFrame(rows, columns=["figure", "survey", "ours", "verdict"])


# --------------------------------------------------------------------------- the same claims on real photos
INSTANCE_SETS = ("smvs_dvd", "rparis6k_mini", "sop_kettles_fans")
# claim → the start of the COIL-100 row of :func:`claims_vs_ours` that checks it (its verdict fills the COIL column)
INSTANCE_CLAIMS = {
    "aggregation methods on one frozen network give different mAP": "aggregation methods",
    "R-MAC beats SPoC on the same network": "R-MAC beats SPoC",
    "attention weighting (CroW) beats plain sum pooling (SPoC)": "CroW's attention weights beat",
    "deeper backbones retrieve better (GeM)": "deeper backbones retrieve better (GEM)",
    "PCA-whitening improves an off-the-shelf descriptor": None,
    "query expansion improves on the plain ranking": "query expansion improves",
    "diffusion beats query expansion": "diffusion gives the most accurate",
    "CNN features beat a colour histogram": None,
    "CNN features beat RootSIFT-VLAD (deep vs handcrafted)": None,
    "Fisher vectors beat VLAD (RootSIFT)": ("Fisher vectors beat VLAD", "RootSIFT"),  # (survey start, ours start)
}


def _paired(pq: pd.DataFrame, a: dict, b: dict) -> Paired:
    """Bootstrap of per-query AP ``a − b`` over the queries both rows score (NaN = no positives, dropped)."""
    def aps(key):
        mask = np.ones(len(pq), dtype=bool)
        for column, value in key.items():
            mask &= (pq[column] == value).to_numpy()
        return pq[mask].set_index("query")["AP"]

    both = pd.concat([aps(a), aps(b)], axis=1, keys=["a", "b"]).dropna()
    return paired_bootstrap(both["a"], both["b"])


def _instance_verdicts(r: dict, dataset: str) -> dict[str, str]:
    deep, pipe = r["instance_offtheshelf"], r["instance_pipeline"]
    pq = pd.concat([r["instance_offtheshelf_per_query"], r["instance_pipeline_per_query"].assign(source="pipeline"),
                    r["instance_baseline_per_query"].assign(source="baseline")], ignore_index=True)
    pq = pq[pq["dataset"] == dataset]
    deep_pq = pq[pq["source"].isna()]
    key = lambda net, pooling: {"network": net, "pooling": pooling}  # noqa: E731
    picked = deep.loc[deep["learn_mAP"].idxmax()]
    out = {}
    signs = []
    for net, part in deep.groupby("network", sort=False):
        hi, lo = part.loc[part["learn_mAP"].idxmax(), "pooling"], part.loc[part["learn_mAP"].idxmin(), "pooling"]
        signs.append(_paired(deep_pq, key(net, hi), key(net, lo)).sign != "≈")
    out["aggregation methods on one frozen network give different mAP"] = (
        "agrees" if all(signs) else "partly" if any(signs) else WITHIN_NOISE)
    out["R-MAC beats SPoC on the same network"] = _direction(
        _paired(deep_pq, key(picked["network"], "rmac"), key(picked["network"], "spoc")))
    if {"crow", "spoc"} <= set(deep.loc[deep["network"] == picked["network"], "pooling"]):
        out["attention weighting (CroW) beats plain sum pooling (SPoC)"] = _direction(
            _paired(deep_pq, key(picked["network"], "crow"), key(picked["network"], "spoc")))
    levels = deep.drop_duplicates("network").groupby("depth")["network"].apply(list).sort_index().tolist()
    steps = [_paired(deep_pq, key(b, "gem"), key(a, "gem")).sign
             for low, high in zip(levels, levels[1:]) for a in low for b in high]
    out["deeper backbones retrieve better (GeM)"] = _tally(steps) if steps else "not run"
    stage = lambda s: {"source": "pipeline", "stage": s}  # noqa: E731
    out["PCA-whitening improves an off-the-shelf descriptor"] = _direction(
        _paired(pq, stage("+ PCA-w"), stage("off-the-shelf")))
    chosen = pipe.loc[pipe["stage"] == "+ αQE", "whitening"].iloc[0]
    before = "off-the-shelf" if chosen == "none" else "+ PCA-w"
    out["query expansion improves on the plain ranking"] = _direction(_paired(pq, stage("+ αQE"), stage(before)))
    out["diffusion beats query expansion"] = _direction(_paired(pq, stage("+ diffusion"), stage("+ αQE")))
    out["CNN features beat a colour histogram"] = _direction(
        _paired(pq, stage("off-the-shelf"), {"source": "baseline", "stage": "colour histogram"}))
    if (pq["stage"] == "RootSIFT-VLAD").any():
        out["CNN features beat RootSIFT-VLAD (deep vs handcrafted)"] = _direction(
            _paired(pq, stage("off-the-shelf"), {"source": "baseline", "stage": "RootSIFT-VLAD"}))
    if (pq["stage"] == "RootSIFT-FV").any():
        out["Fisher vectors beat VLAD (RootSIFT)"] = _direction(
            _paired(pq, {"source": "baseline", "stage": "RootSIFT-FV"}, {"source": "baseline", "stage": "RootSIFT-VLAD"}))
    return out


def _coil_verdict(coil: pd.DataFrame, match) -> str:
    """The verdict of the COIL-100 row whose claim starts with ``match`` (or ``(claim start, ours start)``)."""
    if not match:
        return "–"
    start, ours = (match, "") if isinstance(match, str) else match
    theirs = coil["ours"] if "ours" in coil else [""] * len(coil)
    return next((v for s, o, v in zip(coil["survey"], theirs, coil["verdict"])
                 if s.startswith(start) and str(o).startswith(ours)), "–")


def instance_claims(results_dir="results", coil: pd.DataFrame | None = None) -> pd.DataFrame:
    """The claims that transfer to the real instance sets, one verdict column per dataset (COIL-100 first).

    Contenders are picked on SOP's learning products (``learn_mAP``) or by the pipeline's learned
    settings, never on a test set; every verdict is a paired bootstrap over that set's queries.
    """
    results = Path(results_dir)
    names = ("instance_offtheshelf", "instance_pipeline", "instance_baseline")
    paths = {n: results / f"{n}.csv" for n in names} | {f"{n}_per_query": results / f"{n}_per_query.csv" for n in names}
    coil = claims_vs_ours(results_dir) if coil is None else coil
    table = pd.DataFrame({"claim": list(INSTANCE_CLAIMS)})
    table["coil100"] = [_coil_verdict(coil, match) for match in INSTANCE_CLAIMS.values()]
    if not all(p.is_file() for p in paths.values()):
        for name in INSTANCE_SETS:
            table[name] = "not run"
        return table
    data = {n: pd.read_csv(p) for n, p in paths.items()}
    for name in INSTANCE_SETS:
        verdicts = _instance_verdicts(data, name)
        table[name] = table["claim"].map(verdicts).fillna("not run")
    return table
