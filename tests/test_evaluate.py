import numpy as np
import pytest

from retrievalkit import evaluate as ev

EMPTY = np.zeros(0, np.int64)


@pytest.mark.parametrize(
    "ranks, trapezoid, finite",
    [([0, 2, 5], 0.6778, 0.7222), ([1, 2, 3], 0.5139, 0.6389), ([0, 1, 2], 1.0, 1.0)],
)
def test_golden_ap(ranks, trapezoid, finite):
    assert ev.ap_from_ranks(ranks, mode="trapezoid") == pytest.approx(trapezoid, abs=1e-4)
    assert ev.ap_from_ranks(ranks, mode="finite") == pytest.approx(finite, abs=1e-4)


def _loop_ap(ranking, positives, junk, mode):
    """Explicit per-item loop, the definition the vectorised code must match."""
    hits, rank, total = 0, 0, 0.0
    for item in ranking:
        if item in junk:
            continue
        if item in positives:
            if mode == "finite":
                total += (hits + 1) / (rank + 1)
            else:
                before = 1.0 if rank == 0 else hits / rank
                total += (before + (hits + 1) / (rank + 1)) / 2
            hits += 1
        rank += 1
    return total / len(set(positives) - set(junk))


@pytest.mark.parametrize("mode", ev.AP_MODES)
def test_vectorised_ap_matches_loop_with_junk(mode):
    rng = np.random.default_rng(1)
    ids = np.stack([rng.permutation(40) for _ in range(25)])
    gnd = []
    for _ in range(25):
        items = rng.permutation(40)
        gnd.append((np.sort(items[: rng.integers(1, 8)]), np.sort(items[10 : 10 + rng.integers(0, 5)])))
    got = ev.average_precision(ids, gnd, mode)
    want = [_loop_ap(ids[q], set(p), set(j), mode) for q, (p, j) in enumerate(gnd)]
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_junk_is_skipped_not_counted():
    ids = np.array([[9, 0, 1]])
    assert ev.mean_ap(ids, [(np.array([0]), np.array([9]))]) == pytest.approx(1.0)
    assert ev.mean_ap(ids, [(np.array([0]), EMPTY)]) < 1.0


def test_truncated_ranking_counts_missing_positives_as_zero():
    ids = np.array([[0, 5]])
    assert ev.mean_ap(ids, [(np.array([0, 7]), EMPTY)], "finite") == pytest.approx(0.5)


def test_query_without_positives_is_nan_and_skipped_by_mean():
    ids = np.array([[0, 1], [1, 0]])
    ap = ev.average_precision(ids, [(np.array([0]), EMPTY), (EMPTY, EMPTY)])
    assert ap[0] == 1.0 and np.isnan(ap[1])
    assert ev.mean_ap(ids, [(np.array([0]), EMPTY), (EMPTY, EMPTY)]) == 1.0


def test_precision_recall_at_k():
    ids = np.array([[3, 0, 4, 1, 2]])
    gnd = [(np.array([0, 1]), np.array([4]))]
    p = ev.precision_at_k(ids, gnd, ks=(1, 2, 3))
    assert p[1][0] == 0 and p[2][0] == 0.5 and p[3][0] == pytest.approx(2 / 3)
    r = ev.recall_at_k(ids, gnd, ks=(2, 3))
    assert r[2][0] == 0.5 and r[3][0] == 1.0


def test_revisited_precision_uses_last_positive_rank():
    # 2 positives at the top of the ranking: revisitop's mP@10 is 1.0, standard P@10 is 0.2.
    ids = np.arange(20)[None]
    gnd = [(np.array([0, 1]), EMPTY)]
    assert ev.revisited_precision_at_k(ids, gnd, (10,))[10][0] == 1.0
    assert ev.precision_at_k(ids, gnd, (10,))[10][0] == pytest.approx(0.2)


def test_ns_score_perfect_and_partial():
    groups = np.repeat(np.arange(3), 4)
    gnd = [(np.flatnonzero(groups == groups[i]), EMPTY) for i in range(12)]
    perfect = np.stack([np.concatenate([np.flatnonzero(groups == groups[i]), np.flatnonzero(groups != groups[i])]) for i in range(12)])
    assert ev.ns_score(perfect, gnd) == 4.0
    shifted = np.roll(perfect, 2, axis=1)  # the two last negatives come first: 2 of 4 in the top 4
    assert ev.ns_score(shifted, gnd) == 2.0


def test_map_at_k_hashing_convention():
    ids = np.array([[0, 9, 1, 8]])
    gnd = [(np.array([0, 1, 2]), EMPTY)]
    # hits at ranks 0 and 2 within top 4: (1/1 + 2/3) / 2
    assert ev.map_at_k(ids, gnd, k=4) == pytest.approx((1 + 2 / 3) / 2)


def test_pr_curve_monotone_and_bounded():
    rng = np.random.default_rng(0)
    ids = np.stack([rng.permutation(30) for _ in range(5)])
    gnd = [(np.arange(5), EMPTY)] * 5
    levels, precision = ev.pr_curve(ids, gnd)
    assert precision.shape == levels.shape
    assert np.all(np.diff(precision) <= 1e-12) and precision.max() <= 1.0


def test_bad_shapes_and_modes_raise():
    with pytest.raises(ValueError, match="rows"):
        ev.average_precision(np.zeros((2, 3), int), [(np.array([0]), EMPTY)])
    with pytest.raises(ValueError, match="AP mode"):
        ev.average_precision(np.zeros((1, 3), int), [(np.array([0]), EMPTY)], mode="area")


def test_queries_without_positives_are_nan_in_precision_and_recall():
    ids = np.array([[0, 1], [1, 0]])
    gnd = [(np.array([0]), EMPTY), (EMPTY, EMPTY)]
    for scores in (ev.precision_at_k(ids, gnd, (1,)), ev.revisited_precision_at_k(ids, gnd, (1,)),
                   ev.recall_at_k(ids, gnd, (1,))):
        assert scores[1][0] == 1.0 and np.isnan(scores[1][1])


def test_positive_missing_from_a_truncated_ranking_still_scores_zero():
    ids = np.array([[5, 6]])
    assert ev.revisited_precision_at_k(ids, [(np.array([0]), EMPTY)], (1,))[1][0] == 0.0


def test_zero_queries_do_not_crash_the_metrics():
    ids = np.zeros((0, 5), np.int64)
    rel, keep = ev.relevance(ids, [])
    assert rel.shape == keep.shape == (0, 5)


def _roxford_with_perfect_ranking(name="roxford5k", revisited=True):
    """The real ROxford ground truth and a ranking that is perfect under all three protocols:
    easy, then hard, then junk, then the rest (each protocol ignores the others' positives)."""
    from pathlib import Path

    from retrievalkit.datasets.base import RetrievalDataset
    from retrievalkit.datasets.download import load_gnd_pickle
    from retrievalkit.datasets.revisited import _query_ground_truth

    from conftest import MIRROR

    cfg = load_gnd_pickle(MIRROR / "gnd_roxford5k.pkl")
    n_db = len(cfg["imlist"])
    ids = []
    for g in cfg["gnd"]:
        first = list(g["easy"]) + list(g["hard"]) + list(g["junk"])
        ids.append(first + sorted(set(range(n_db)) - set(first)))
    dataset = RetrievalDataset(
        name=name, root=Path(MIRROR), db_paths=[Path(n) for n in cfg["imlist"]],
        query_paths=[Path(n) for n in cfg["qimlist"]], gnd=[_query_ground_truth(g) for g in cfg["gnd"]],
        protocols=("easy", "medium", "hard"), revisited=revisited,
    )
    return np.asarray(ids), dataset


def test_perfect_ranking_on_real_roxford_scores_one_and_counts_68_easy_queries():
    # revisitop's compute_map skips the two queries without easy positives (map / (nq - nempty)).
    ids, dataset = _roxford_with_perfect_ranking()
    rows = {r["protocol"]: r for r in ev.evaluate(ids, dataset)}
    assert [rows[p]["queries"] for p in ("easy", "medium", "hard")] == [68, 70, 70]
    for row in rows.values():
        assert row["mAP"] == 1.0 and row["mAP_finite"] == 1.0
        assert row["mP@1"] == row["mP@5"] == row["mP@10"] == 1.0


def test_revisitop_precision_follows_the_dataset_flag_not_its_name():
    # a partial copy (rparis6k_mini) has another name but the same rules
    ids, dataset = _roxford_with_perfect_ranking(name="rparis6k_mini")
    medium = [r for r in ev.evaluate(ids, dataset) if r["protocol"] == "medium"][0]
    assert medium["mP@10"] == 1.0
    ids, plain = _roxford_with_perfect_ranking(name="roxford5k", revisited=False)
    medium = [r for r in ev.evaluate(ids, plain) if r["protocol"] == "medium"][0]
    assert medium["mP@10"] < 1.0  # standard P@10: queries with fewer than 10 positives cannot reach 1


def test_evaluate_without_queries_says_so():
    from pathlib import Path

    from retrievalkit.datasets.base import RetrievalDataset

    empty = RetrievalDataset(name="mine", root=Path("/data/mine"), db_paths=[Path("a.jpg")], query_paths=[],
                             gnd=[], description="one image")
    with pytest.raises(ValueError, match=r"mine \(/data/mine\) has no queries"):
        ev.evaluate(np.zeros((0, 1), np.int64), empty)
