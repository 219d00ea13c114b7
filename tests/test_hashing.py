"""Hashing (retrievalkit.hashing): ITQ / PCA-sign / LSH, packing, code diagnostics, Hamming search, deep hashing."""
from __future__ import annotations

import numpy as np
import pytest

from retrievalkit import hashing as H
from retrievalkit.hashing import search as S
from conftest import hadamard, skewed_classes


def anisotropic(n, d=24, seed=0):
    """Rows with a decaying PCA spectrum: the case where ITQ's rotation pays off over PCA-sign."""
    rng = np.random.default_rng(seed)
    mix = np.linalg.qr(np.random.default_rng(7).normal(size=(d, d)))[0]
    return (rng.normal(size=(n, d)) * np.linspace(4, 0.3, d) @ mix + 2.0).astype(np.float32)


# --------------------------------------------------------------------------- ITQ, PCA-sign, LSH
def test_itq_rotation_is_orthogonal_and_loss_never_increases():
    X = anisotropic(1500)
    itq = H.ITQ(16, n_iter=30, seed=3).fit(X)
    R = itq.rotation_
    np.testing.assert_allclose(R.T @ R, np.eye(16), atol=1e-10)
    loss = itq.loss_history_
    assert len(loss) == 31
    assert np.all(np.diff(loss) <= 1e-9 * loss[0]), "quantisation loss went up"
    assert loss[-1] < loss[0]
    # the recorded loss is ‖B − VR‖² with B = sign(VR): recompute it from the fitted model
    V = itq.pca_.transform(X.astype(np.float64))
    B = itq.transform(X).astype(np.float64)
    assert np.sum((B - V @ R) ** 2) == pytest.approx(itq.quantization_loss_, rel=1e-9)
    assert itq.quantization_loss_ <= loss[-1] + 1e-9


def test_itq_quantisation_loss_beats_pca_sign():
    X = anisotropic(1500)
    pca_sign = H.PCASign(16).fit(X)
    itq = H.ITQ(16, seed=0).fit(X)
    assert itq.quantization_loss_ < pca_sign.quantization_loss_
    # PCA-sign is ITQ with R = I: same PCA, so its loss is the identity-rotation loss
    V = pca_sign.pca_.transform(X.astype(np.float64))
    assert H.quantization_loss(V) == pytest.approx(pca_sign.quantization_loss_)


@pytest.mark.parametrize("cls", [H.ITQ, H.PCASign])
def test_more_bits_than_the_learning_rank_is_a_clear_error(cls):
    X = anisotropic(10, d=24)  # 10 centred rows have rank 9
    with pytest.raises(ValueError, match="n_bits=16"):
        cls(16).fit(X)
    cls(8).fit(X)


def test_codes_shapes_dtypes_and_packing_match_transform():
    X_learn, X_test = anisotropic(600, seed=0), anisotropic(50, seed=1)
    for enc in (H.LSH(13, seed=1), H.PCASign(13), H.ITQ(13, n_iter=5)):
        enc.fit(X_learn)
        signs, bits = enc.transform(X_test), enc.transform(X_test, as_bits=True)
        assert signs.dtype == np.int8 and signs.shape == (50, 13) and set(np.unique(signs)) <= {-1, 1}
        assert bits.dtype == np.uint8 and set(np.unique(bits)) <= {0, 1}
        np.testing.assert_array_equal(bits, (signs > 0).astype(np.uint8))
        packed = enc.encode(X_test)
        assert packed.shape == (50, 2) and packed.dtype == np.uint8
        np.testing.assert_array_equal(H.unpack_codes(packed, 13), signs)


def test_transform_does_not_learn_from_the_data_it_encodes():
    X_learn, X_test = anisotropic(600, seed=0), anisotropic(300, seed=5) * 3
    itq = H.ITQ(8, n_iter=10).fit(X_learn)
    before = (itq.rotation_.copy(), itq.pca_.mean_.copy(), itq.loss_history_.copy())
    itq.transform(X_test)
    itq.encode(X_test)
    for a, b in zip(before, (itq.rotation_, itq.pca_.mean_, itq.loss_history_)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="not fitted"):
        H.ITQ(8).transform(X_test)


def test_lsh_through_the_learning_mean_balances_bits_of_relu_like_features():
    X, _ = skewed_classes(0)
    centred = H.LSH(64, center=True, seed=0).fit(X).transform(X)
    origin = H.LSH(64, center=False, seed=0).fit(X).transform(X)
    assert H.bit_balance(centred).mean() < 0.5 * H.bit_balance(origin).mean()
    # more hyperplanes than dimensions is allowed for LSH (random, not PCA-limited)
    assert H.LSH(64, seed=0).fit(X[:, :8]).transform(X[:, :8]).shape == (len(X), 64)


# --------------------------------------------------------------------------- packing
def test_packing_round_trips_and_has_the_documented_bit_order():
    rng = np.random.default_rng(0)
    signs = np.where(rng.random((30, 21)) < 0.5, -1, 1).astype(np.int8)
    packed = H.pack_codes(signs)
    assert packed.shape == (30, 3)
    np.testing.assert_array_equal(H.unpack_codes(packed, 21), signs)
    np.testing.assert_array_equal(H.unpack_codes(packed, 21, as_bits=True), H.to_bits(signs))
    np.testing.assert_array_equal(H.pack_codes(H.to_bits(signs)), packed)
    # bit j → byte j // 8, bit 7 − j % 8 (most significant first); padding bits are 0
    one_hot = -np.ones((2, 10), np.int8)
    one_hot[0, 0], one_hot[1, 9] = 1, 1
    assert H.pack_codes(one_hot).tolist() == [[0b10000000, 0], [0, 0b01000000]]
    with pytest.raises(ValueError, match="±1"):
        H.pack_codes(np.array([[0, 2, 1]]))


# --------------------------------------------------------------------------- metrics
def test_hadamard_codes_are_balanced_and_uncorrelated():
    codes = hadamard(16)[:, 1:]  # drop the all-ones column: 15 balanced, pairwise orthogonal bits
    np.testing.assert_array_equal(H.bit_balance(codes), 0)
    np.testing.assert_array_equal(H.fraction_of_ones(codes), 0.5)
    np.testing.assert_allclose(H.bit_correlation(codes), np.eye(15), atol=1e-12)
    np.testing.assert_allclose(H.bit_correlation(codes, centered=False), np.eye(15), atol=1e-12)  # bbᵀ = I
    assert H.mean_abs_correlation(codes) == pytest.approx(0, abs=1e-12)
    np.testing.assert_allclose(H.bit_entropy(codes), 1.0)
    # the same codes as 0/1 bits give the same diagnostics
    np.testing.assert_allclose(H.bit_correlation(H.to_bits(codes)), np.eye(15), atol=1e-12)


def test_constant_and_duplicated_bits_are_flagged():
    codes = hadamard(8)[:, 1:4]
    constant = np.ones((8, 1), np.int8)
    imbalanced = np.array([[1], [1], [1], [1], [1], [1], [-1], [-1]], np.int8)  # 3/4 ones
    codes = np.hstack([codes, codes[:, :1], constant, imbalanced])  # bit 3 duplicates bit 0
    balance = H.bit_balance(codes)
    np.testing.assert_allclose(balance, [0, 0, 0, 0, 1, 0.5])
    np.testing.assert_allclose(H.bit_entropy(codes)[4:], [0, -(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25))])
    C = H.bit_correlation(codes)
    assert C[0, 3] == pytest.approx(1) and C[4, :4].tolist() == [0, 0, 0, 0] and C[4, 4] == 1
    report = H.code_report(codes)
    assert report["max_balance"] == 1 and report["mean_balance"] == pytest.approx(1.5 / 6)


def test_correlation_matches_numpy_corrcoef():
    rng = np.random.default_rng(1)
    base = rng.random((500, 1)) < 0.5
    bits = ((rng.random((500, 6)) < 0.2) ^ base).astype(np.uint8)  # correlated through `base`
    np.testing.assert_allclose(H.bit_correlation(bits), np.corrcoef(bits.T.astype(float)), atol=1e-12)
    off = ~np.eye(6, dtype=bool)
    assert H.mean_abs_correlation(bits) == pytest.approx(np.abs(np.corrcoef(bits.T.astype(float))[off]).mean())
    assert H.mean_abs_correlation(bits) > 0.2


# --------------------------------------------------------------------------- Hamming search
def random_packed(n, n_bits, seed):
    return H.pack_codes(np.random.default_rng(seed).integers(0, 2, (n, n_bits)))


def test_faiss_hamming_distances_equal_numpy_popcount():
    db, q = random_packed(700, 64, 0), random_packed(9, 64, 1)
    ref = H.hamming_distances(q, db)
    explicit = np.array([[bin(int.from_bytes(a.tobytes(), "big") ^ int.from_bytes(b.tobytes(), "big")).count("1")
                          for b in db] for a in q])
    np.testing.assert_array_equal(ref, explicit)
    scores, ids = H.hamming_search(q, db, k=len(db))
    np.testing.assert_array_equal(np.take_along_axis(64 - 2 * ref, ids, 1), scores)  # scores = K − 2·d
    assert np.all(np.diff(scores, axis=1) <= 0)


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_tie_order_is_distance_then_lower_id(kind):
    # 12-bit codes over 2,000 rows: every distance is shared by many rows, at the k-th one too
    rng = np.random.default_rng(2)
    signs = np.where(rng.random((2000, 12)) < 0.5, -1, 1)
    db, q = H.pack_codes(signs), H.pack_codes(np.where(rng.random((30, 12)) < 0.5, -1, 1))
    index = H.binary_index(db, kind, train_codes=random_packed(500, 12, 3) if kind == "ivf" else None, nlist=8)
    scores, ids = H.hamming_search(q, index, k=37, nprobe=8 if kind == "ivf" else None)
    ref_s, ref_i = H.hamming_search_numpy(q, db, 37)
    np.testing.assert_array_equal(scores, ref_s)
    np.testing.assert_array_equal(ids, ref_i)
    # identical codes: ids come back in database order
    same = np.repeat(db[:1], 50, axis=0)
    assert H.hamming_search(db[:1], same, 10)[1].tolist() == [list(range(10))]
    # signed codes are accepted with packed=False
    np.testing.assert_array_equal(H.hamming_search(signs[:3], signs, 5, packed=False)[1][:, 0], [0, 1, 2])


def test_hamming_search_input_checks():
    with pytest.raises(ValueError, match="packed codes"):
        H.hamming_search(np.ones((1, 16), np.int8), np.ones((4, 16), np.int8), 2)
    with pytest.raises(ValueError, match="train_codes"):
        H.binary_index(random_packed(100, 32, 0), "ivf")
    with pytest.raises(ValueError, match="nprobe"):
        H.hamming_search(random_packed(2, 32, 1), random_packed(100, 32, 0), 5, nprobe=4)
