import numpy as np
import pytest

from retrievalkit.index import exact_search, rank


def _brute(q, db, k):
    s = q @ db.T
    ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, ids, 1), ids


@pytest.mark.parametrize("k, qc, dc", [(10, 7, 333), (None, 1024, 65536), (1, 3, 50)])
def test_chunked_search_equals_brute_force(k, qc, dc):
    rng = np.random.default_rng(0)
    db = rng.standard_normal((1000, 16)).astype(np.float32)
    q = rng.standard_normal((20, 16)).astype(np.float32)
    s, i = exact_search(q, db, k, query_chunk=qc, db_chunk=dc)
    bs, bi = _brute(q, db, k or 1000)
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_allclose(s, bs, atol=1e-5)


def test_ties_keep_lower_id_first_across_chunks():
    db = np.ones((10, 2), np.float32)
    q = np.ones((1, 2), np.float32)
    assert rank(q, db, 5, db_chunk=3).tolist() == [[0, 1, 2, 3, 4]]


def test_width_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="same width"):
        exact_search(np.zeros((2, 3)), np.zeros((4, 5)))
