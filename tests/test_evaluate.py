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
