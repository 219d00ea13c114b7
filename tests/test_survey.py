"""survey.py against the survey's Markdown: every transcribed number is found again in the md."""
from __future__ import annotations

import math
import re

import pandas as pd
import pytest

from retrievalkit import survey

from conftest import SHARED

MD = SHARED / "survey" / "deep-image-retrieval-survey.md"
DEC = re.compile(r"\d+\.\d+")
NUM = re.compile(r"\d+(?:\.\d+)?")
TOL = 0.051  # the text quotes 81.74 / 76.75 where Table 2.2 prints 81.7 / 76.8


@pytest.fixture(scope="module")
def md() -> list[str]:
    if not MD.is_file():
        pytest.fail(f"the survey Markdown is missing: expected {MD} (../shared beside the checkout)")
    return MD.read_text(encoding="utf-8").splitlines()


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.split("|")[1:-1]]


def md_rows(md, pattern: str) -> list[list[str]]:
    """Cells of every md table line matching ``pattern`` (first: Table 2.2, second: Table 2.3)."""
    return [cells(line) for line in md if re.match(pattern, line)]


def numbers(values) -> list[float]:
    return [float(v) for v in values if not pd.isna(v)]


# ---------------------------------------------------------------- Table 2.1
def test_table_2_1_spot_values():
    t = survey.table_2_1().set_index(["label", "dataset", "distractors"])
    assert t.loc[("[153]", "oxford5k", None), ["mAP", "time_ms"]].tolist() == [91.3, 5.45]
    assert t.loc[("[153]", "oxford5k", "100k"), ["mAP", "time_ms"]].tolist() == [88.4, 809.0]
    assert t.loc[("[165]", "oxford5k", "100k"), "time_ms"] == 10.0
    assert t.loc[("[153]", "ukbench", None), "ns"] == 3.93 and math.isnan(t.loc[("[153]", "ukbench", None), "mAP"])
    assert t.loc[("[150]‡", "paris6k", None), "note"] == "query time with regional diffusion"


def test_table_2_1_matches_md_cell_by_cell(md):
    t = survey.table_2_1()
    rows = md_rows(md, r"^\| \[\d+\]")
    assert len(rows) == 7
    columns = {"oxford5k": (1, 2), "paris6k": (3, 4), "holidays": (5, 6), "ukbench": (7, 8)}
    seen = 0
    for row in rows:
        label = re.sub(r"\s*\[([†‡])\]", r"\1", row[0])
        for dataset, (score_col, time_col) in columns.items():
            ours = t[(t.label == label) & (t.dataset == dataset)]
            ours = ours.sort_values("distractors", key=lambda s: s.notna())  # plain first, then +100k
            score = "ns" if dataset == "ukbench" else "mAP"
            assert [float(x) for x in NUM.findall(row[score_col])] == numbers(ours[score]), (label, dataset)
            assert [float(x) for x in NUM.findall(row[time_col])] == numbers(ours["time_ms"]), (label, dataset)
            seen += len(ours)
    assert seen == len(t) == 16


# ---------------------------------------------------------------- Tables 2.2 and 2.3
@pytest.mark.parametrize("which", [0, 1], ids=["table_2_2", "table_2_3"])
def test_wide_tables_match_md_cell_by_cell(md, which):
    t = [survey.table_2_2, survey.table_2_3][which]()
    assert len(t) == 14

    def row(pattern):
        found = md_rows(md, pattern)
        assert len(found) == 2, pattern
        return found[which][2:]

    method, backbone, layer = row(r"^\| Method \|"), row(r"^\| Backbone \|"), row(r"^\| Output \|")
    dim, enhance = row(r"^\| Feature \| Dimension"), row(r"^\| Feature \| Enhance")
    holidays, ukb = row(r"^\| Holidavs \|"), row(r"^\| (UKB|UIKB) \|")
    oxford, paris = row(r"^\| Oxford5k \|"), row(r"^\| Paris6k \|")
    for i, r in t.iterrows():
        assert f"[{r.ref}]" in method[i]
        assert r.backbone in backbone[i]
        assert r.dim_text == dim[i]
        if "$" not in layer[i]:
            assert r.layer == layer[i]
        if "$" not in enhance[i] and "?" not in r.enhancement:
            assert r.enhancement == enhance[i]
        assert [float(x) for x in DEC.findall(holidays[i])] == numbers([r.holidays]), r.method
        assert [float(x) for x in DEC.findall(ukb[i])] == numbers([r.ukbench_ns, r.ukbench_map]), r.method
        assert ("mAP" in ukb[i]) == (not pd.isna(r.ukbench_map)), r.method
        assert [float(x) for x in DEC.findall(oxford[i])] == numbers([r.oxford5k, r.oxford105k]), r.method
        assert [float(x) for x in DEC.findall(paris[i])] == numbers([r.paris6k, r.paris106k]), r.method
    if which == 1:
        (loss,) = md_rows(md, r"^\| Loss \|")  # only Table 2.3 has a loss row
        assert t["loss"].tolist() == loss[2:]


def test_splits_follow_the_text():
    t22, t23 = survey.table_2_2().set_index("ref"), survey.table_2_3().set_index("ref")
    assert (t22["pass"] == "single").sum() == 6 and (t22["pass"] == "multiple").sum() == 8
    assert set(t22.loc[[25, 50, 92], "pass"]) == {"single"}  # line 527 contrasts these with multi-pass [85]
    assert set(t22.loc[[48, 65, 43, 108, 85], "pass"]) == {"multiple"}
    assert set(t23.loc[[32, 57, 151, 56, 152], "supervision"]) == {"unsupervised"}  # line 550
    assert set(t23.loc[[171, 140, 53, 50, 106, 89, 52], "supervision"]) == {"supervised"}
    assert t23.loc[[50, 106], "type"].eq("classification").all() and t23.loc[53, "type"] == "verification"


def test_the_survey_disagrees_with_itself_and_we_keep_both():
    t21, t23 = survey.table_2_1(), survey.table_2_3().set_index("ref")
    ox = t21[(t21.dataset == "oxford5k") & t21.distractors.isna()].set_index("label")["mAP"]
    assert ox["[52]"] == 55.5 and t23.loc[52, "oxford5k"] == 88.2
    assert ox["[57]"] == 64.8 and t23.loc[57, "oxford5k"] == 82.0


# ---------------------------------------------------------------- invariants of all tables
def test_no_duplicates_and_keys_unique():
    t21 = survey.table_2_1()
    assert not t21.duplicated(["label", "dataset", "distractors"]).any()
    for t in (survey.table_2_2(), survey.table_2_3()):
        assert t["ref"].is_unique and t["method"].is_unique
    text = survey.text_numbers()
    assert not text.duplicated(["line", "ref", "dataset", "distractors", "metric"]).any()


def test_ranges_and_dims():
    t21 = survey.table_2_1()
    assert t21["mAP"].dropna().between(0, 100).all() and t21["ns"].dropna().between(0, 4).all()
    assert (t21["time_ms"] > 0).all() and t21[["mAP", "ns"]].notna().sum(axis=1).eq(1).all()
    for t in (survey.table_2_2(), survey.table_2_3()):
        percent = t[["holidays", "ukbench_map", "oxford5k", "oxford105k", "paris6k", "paris106k"]]
        assert ((percent >= 0) & (percent <= 100) | percent.isna()).all().all()
        assert t["ukbench_ns"].dropna().between(0, 4).all()
        assert pd.api.types.is_integer_dtype(t["dim"]) and (t["dim"] > 0).all()
        assert not (t["ukbench_ns"].notna() & t["ukbench_map"].notna()).any()
    t22 = survey.table_2_2().set_index("ref")
    assert t22.loc[82, "dim"] == 25_000 and t22.loc[108, "dim"] == 500_000


def test_to_long_keeps_every_reported_value():
    for t in (survey.table_2_2(), survey.table_2_3()):
        long = survey.to_long(t)
        assert len(long) == t[["holidays", "ukbench_ns", "ukbench_map", "oxford5k", "oxford105k",
                               "paris6k", "paris106k"]].notna().sum().sum()
        row = long[(long.ref == t.ref[0]) & (long.dataset == "oxford5k") & long.distractors.isna()]
        assert row["value"].tolist() == [t.oxford5k[0]]


# ---------------------------------------------------------------- running text
# line 523 gives BoW's numbers without a ref (Table 2.2: BLCF [82]) and cites R-MAC as [159] (Table 2.2: [31])
UNCITED_IN_TEXT = {(523, 82), (523, 31)}


def _quoted_value(quote: str) -> float:
    number = float(NUM.search(quote).group())
    return number * 1000 if re.search(r"\d+k\b", quote) else number


def _table_values(table: str, r) -> list[float]:
    if table == "2.1":
        t = survey.table_2_1()
        t = t[(t.ref == r.ref) & (t.dataset == r.dataset)
              & (t.distractors.isna() if r.distractors is None else t.distractors == r.distractors)]
        return numbers(t[r.metric])
    wide = (survey.table_2_2() if table == "2.2" else survey.table_2_3()).set_index("ref")
    if r.ref not in wide.index:
        return []
    if r.metric in ("dim", "ns"):
        column = {"dim": "dim", "ns": "ukbench_ns"}[r.metric]
    elif r.dataset == "ukbench":
        column = "ukbench_map"
    else:
        column = {"oxford5k": "oxford105k", "paris6k": "paris106k"}[r.dataset] if r.distractors else r.dataset
    return numbers([wide.loc[r.ref, column]])


def test_text_numbers_are_verbatim_at_their_line(md):
    text = survey.text_numbers()
    assert len(text) >= 40
    for r in text.itertuples():
        assert r.quote in md[r.line - 1], (r.line, r.quote)
        assert _quoted_value(r.quote) == r.value, r.quote
        if (r.line, r.ref) not in UNCITED_IN_TEXT:
            assert re.search(rf"\[[\d, ]*\b{r.ref}\b[\d, ]*\]", md[r.line - 1]), (r.line, r.ref)
        assert r.claim[:30] not in md[r.line - 1]  # the claims are ours, not pasted


def test_text_numbers_agree_with_the_table_they_name():
    for r in survey.text_numbers().itertuples():
        if r.table is not None:
            assert any(abs(v - r.value) <= TOL for v in _table_values(r.table, r)), (r.line, r.ref, r.quote)
        elif r.metric == "mAP":  # no table named: no table may hold it either, or `table` is wrong
            for table in ("2.1", "2.2", "2.3"):
                assert not any(abs(v - r.value) <= TOL for v in _table_values(table, r)), (r.line, r.ref)


def test_headline_comparisons():
    text = survey.text_numbers().set_index(["topic", "ref"])
    assert text.loc[("finetune_siamese", 31), "value"] == 66.9 and text.loc[("finetune_siamese", 53), "value"] == 81.5
    assert text.loc[("layer_fusion", 92), "value"] > text.loc[("layer_fusion", 25), "value"]
    assert text.loc[("fc_vs_conv", 50), ["dataset", "value"]].tolist() == ["holidays", 74.7]


# ---------------------------------------------------------------- figures
def test_figure_claims_carry_no_values_and_match_the_text(md):
    claims = survey.figure_claims()
    assert set(claims) == {"2.12a", "2.12b", "2.13a", "2.13b"}
    for name, c in claims.items():
        assert c["values_available"] is False and "not" in c["note"]
        assert f"Figure {name[:4]}" in md[c["caption_line"] - 1]
        assert f"Figure {name[:4]}({name[4]})" in md[c["text_line"] - 1]
    depth = md[claims["2.13a"]["text_line"] - 1]
    for net, dim in claims["2.13a"]["setup"]["default_dims"].items():
        assert re.search(rf"{re.escape(net.split('-')[0])}[\w/-]* \({dim}-d\)", depth), net  # "ResNet-50/101 (2048-d)"
    assert "MAC" in depth and claims["2.13a"]["setup"]["pooling"] == "MAC"
    lo, hi = claims["2.13b"]["setup"]["dims"]
    dims = md[claims["2.13b"]["text_line"] - 1]
    assert f"{lo}-d" in dims and f"{hi}-d" in dims and f"{claims['2.13b']['setup']['competitive_dim']}-d" in dims
    assert "Figure 2.12(b)" in md[claims["2.12b"]["text_line"] - 1]


def test_figure_claims_equals_the_table_and_is_a_deep_copy():
    claims = survey.figure_claims()
    assert claims == survey.FIGURE_CLAIMS and claims is not survey.FIGURE_CLAIMS
    claims["2.13a"]["setup"]["default_dims"]["AlexNet"] = 0  # a nested edit must not reach the module's table
    assert survey.FIGURE_CLAIMS["2.13a"]["setup"]["default_dims"]["AlexNet"] == 256
    assert survey.figure_claims() == survey.FIGURE_CLAIMS


def test_citation():
    assert "Deep Image Retrieval: A Survey" in survey.CITATION and "hdl.handle.net/1887/3217054" in survey.CITATION
