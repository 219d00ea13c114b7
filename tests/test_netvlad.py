"""NetVLAD (retrievalkit/nn/netvlad.py): hard VLAD in the limit, its initialisation, end-to-end gradients,
and a NetVLAD tail fine-tuned by the trainer on real SMALL COIL-100 maps."""
import math

import numpy as np
import pytest
import torch

from retrievalkit.embedding.codebook import KMeansCodebook
from retrievalkit.embedding.vlad import VLAD
from retrievalkit.finetune import trainer as T
from retrievalkit.nn.netvlad import SECOND_WORD_WEIGHT, NetVLAD
from retrievalkit.rows import l2n


def _maps(n=3, d=6, h=4, w=5, seed=0):
    return torch.randn(n, d, h, w, generator=torch.Generator().manual_seed(seed))


def test_with_a_large_alpha_the_layer_is_the_librarys_hard_vlad():
    x = _maps()
    words = l2n(np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32))
    layer = NetVLAD(6, clusters=4)
    layer.set_words(torch.from_numpy(words), alpha=1e4)
    cols = l2n(x.permute(0, 2, 3, 1).reshape(-1, 6).numpy())  # NetVLAD L2-normalises every column first
    vlad = VLAD(KMeansCodebook.from_centroids(words), intra_norm=True, alpha=None, normalize=False)
    expected = vlad.encode(cols, image_index=np.repeat(np.arange(3), 20), n_images=3)
    with torch.no_grad():
        got = layer(x).numpy()
    assert got.shape == (3, 4 * 6) == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_a_small_alpha_spreads_each_column_over_several_words():
    layer = NetVLAD(6, clusters=4)
    layer.set_words(torch.from_numpy(l2n(np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32))), 0.1)
    with torch.no_grad():
        a = layer.soft_assignment(_maps())
    torch.testing.assert_close(a.sum(dim=1), torch.ones(3, 4, 5))
    assert a.max() < 0.5  # nearly uniform: hard VLAD would put 1 on one word


def test_init_sets_kmeans_words_and_alpha_from_the_two_nearest_words():
    rng = np.random.default_rng(0)
    centres = l2n(rng.standard_normal((3, 8)).astype(np.float32))
    cols = np.repeat(centres, 200, axis=0) + 0.05 * rng.standard_normal((600, 8)).astype(np.float32)
    layer = NetVLAD(8, clusters=3).init_from(cols, seed=0)
    words = layer.centroids.detach().numpy()
    x = l2n(cols)  # the words are k-means words of the L2-normalised columns
    np.testing.assert_array_equal(words, KMeansCodebook(k=3, seed=0, max_train=20_000).fit(x, split="learn").centroids_)
    d2 = np.sort(((x[:, None] - words[None]) ** 2).sum(-1), axis=1)
    assert math.isclose(layer.alpha * np.mean(d2[:, 1] - d2[:, 0]), -math.log(SECOND_WORD_WEIGHT), rel_tol=1e-4)
    torch.testing.assert_close(layer.assign.weight[:, :, 0, 0], 2 * layer.alpha * layer.centroids)


def test_gradients_reach_the_words_the_assignment_and_the_input():
    layer = NetVLAD(6, clusters=4)
    x = _maps().requires_grad_()
    (layer(x) * torch.randn(3, 24, generator=torch.Generator().manual_seed(2))).sum().backward()
    for name, grad in (("centroids", layer.centroids.grad), ("assign", layer.assign.weight.grad), ("input", x.grad)):
        assert grad is not None and grad.abs().sum() > 0, name


def test_words_of_the_wrong_shape_are_refused_with_their_shape():
    with pytest.raises(ValueError, match=r"4 words of 6 dims, got centroids of shape \(3, 6\)"):
        NetVLAD(6, clusters=4).set_words(torch.zeros(3, 6), 1.0)


def test_a_netvlad_tail_cannot_take_the_dxd_whitening_layer():
    with pytest.raises(ValueError, match="too large"):
        T.TailNet(weights=None, pooling="netvlad", whiten=True)
    with pytest.raises(ValueError, match="pooling must be one of"):
        T.TailNet(weights=None, pooling="vlad")


@pytest.fixture(scope="module")
def coil_data(request):
    from retrievalkit import config
    from retrievalkit.experiments import finetune as E
    from retrievalkit.experiments.offtheshelf import Coil

    home = None if (config.data_home() / "coil100").is_dir() else request.getfixturevalue("coil_home")
    return E.finetune_data(Coil(small=True, data_home=home, progress=False))


def test_the_trainer_fine_tunes_a_netvlad_tail_end_to_end(coil_data):
    train, val = coil_data.train, coil_data.val
    cfg = T.FinetuneConfig(loss="triplet", epochs=2, queries=24, negatives=2, pool=120, tuple_batch=8, seed=3,
                           pooling="netvlad", clusters=4, select="last")
    start = T.init_pooling(T.TailNet.for_config(cfg).eval(), train, cfg.seed)
    res = T.finetune(train, val, cfg)
    assert res.model.dim == 4 * 1280 and res.describe(val.maps[:5]).shape == (5, 4 * 1280)
    assert "p" not in res.history[0] and all(np.isfinite(h["val_mAP"]) for h in res.history)
    before, after = start.state_dict(), res.model.state_dict()
    assert torch.equal(before["pool.centroids"], T.init_pooling(T.TailNet.for_config(cfg).eval(), train,
                                                                 cfg.seed).state_dict()["pool.centroids"])
    for name in ("pool.centroids", "pool.assign.weight"):  # the words learn, and so does the network below them
        assert not torch.equal(before[name], after[name]), name
    changed = [k for k in before if k.startswith("stages") and not torch.equal(before[k], after[k])]
    assert changed


def test_gem_runs_keep_their_cache_keys():
    key = T.config_key(T.FinetuneConfig())
    assert "pooling" not in key and "clusters" not in key
    assert T.config_key(T.FinetuneConfig(pooling="netvlad", clusters=4))["clusters"] == 4
