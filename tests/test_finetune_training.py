"""Mining, sampling, the frozen-trunk trainer and unsupervised mining (Survey §2.4, Figures 2.10–2.11).

Trainer tests use the cached EfficientNet-Lite0 stage6 maps of the SMALL COIL-100 splits.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from retrievalkit.finetune import miners, unsupervised as U
from retrievalkit.finetune import trainer as T


# --------------------------------------------------------------------------- miners
def _random_desc(n, d, seed):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("one_per_class", [True, False])
def test_hardest_negatives_are_the_most_similar_non_matching_items(one_per_class):
    q, pool = _random_desc(7, 8, 0), _random_desc(40, 8, 1)
    ql, pl = np.arange(7) % 3, np.random.default_rng(2).integers(0, 6, 40)
    got = miners.hardest_negatives(q, pool, ql, pl, k=4, one_per_class=one_per_class)
    for i in range(7):
        candidates = []  # brute force: every non-matching pool item, or the best of each other class
        for j in range(40):
            if pl[j] == ql[i]:
                continue
            if one_per_class and any(pl[j] == pl[c] and q[i] @ pool[c] >= q[i] @ pool[j] for c in range(40) if c != j):
                continue
            candidates.append((-float(q[i] @ pool[j]), j))
        want = [j for _, j in sorted(candidates)[:4]]
        assert got[i].tolist() == want
        assert (pl[got[i]] != ql[i]).all()
        if one_per_class:
            assert len(set(pl[got[i]])) == 4


def test_hardest_negatives_pad_with_minus_one_when_the_pool_runs_out():
    pl = np.array([0, 0, 1, 1, 2])
    got = miners.hardest_negatives(_random_desc(1, 4, 3), _random_desc(5, 4, 4), [0], pl, k=4)
    assert (got[0, :2] >= 0).all() and sorted(pl[got[0, :2]].tolist()) == [1, 2]  # one per other class
    assert got[0, 2:].tolist() == [-1, -1]


def test_fill_negatives_cycles_short_rows_and_drops_empty_ones():
    keep, filled = T.fill_negatives(np.array([[4, 7, -1, -1], [-1, -1, -1, -1], [2, 3, 5, 6], [9, -1, -1, -1]]))
    assert keep.tolist() == [True, False, True, True]
    assert filled.tolist() == [[4, 7, 4, 7], [2, 3, 5, 6], [9, 9, 9, 9]]
    keep, filled = T.fill_negatives(np.full((2, 3), -1))
    assert not keep.any() and filled.shape == (0, 3)


def test_trainer_never_uses_padding_as_a_negative(coil_data, monkeypatch):
    """With two classes and two negatives per tuple the miner pads with -1; the padding must not
    become ``pool[-1]`` (a real row, often of the query's own class): every negative of every
    batch is of another class than its query."""
    train, val = _part(coil_data, [1, 2]), _part(coil_data, [9, 10])
    batches = []
    real_batch = T._batch

    def spy_batch(maps, rows, device):
        rows = np.asarray(rows)
        if not np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows))):  # describe() reads ranges
            batches.append(rows.copy())
        return real_batch(maps, rows, device)

    monkeypatch.setattr(T, "_batch", spy_batch)
    T.finetune(train, val, _cfg(select="last", epochs=1, queries=8, pool=60, negatives=2))
    assert sum(len(b) for b in batches) == 8 * 4  # all 8 tuples trained (query, positive, 2 negatives)
    for b in batches:
        t = b.reshape(-1, 4)
        assert (train.labels[t[:, 0]] == train.labels[t[:, 1]]).all()
        assert (train.labels[t[:, 2:]] != train.labels[t[:, :1]]).all()


def test_trainer_explains_when_no_tuple_can_be_formed():
    maps = np.random.default_rng(0).normal(size=(6, 192, 4, 4)).astype(np.float32)
    one_class = T.TrainData(maps, np.zeros(6, int), np.arange(6).astype(str))
    cfg = _cfg(select="last", epochs=1, queries=4, pool=6)
    with pytest.raises(ValueError, match="no \\(query, positive, negative\\) tuple"):
        T.finetune(one_class, None, cfg, model=T.TailNet(weights=None))


def test_trainer_rejects_an_unknown_selection_rule(coil_data):
    with pytest.raises(ValueError, match="select must be"):
        T.finetune(_part(coil_data, [1, 2]), _part(coil_data, [9]), _cfg(select="best"))


def test_m_per_class_sampler_batches_and_determinism():
    labels = np.repeat(np.arange(10), 7)
    s = miners.MPerClassSampler(labels, m=3, batch_size=12, batches=5, seed=1)
    batches = list(s)
    assert len(batches) == 5
    for b in batches:
        counts = np.unique(labels[b], return_counts=True)[1]
        assert len(b) == 12 and (counts == 3).all() and len(counts) == 4
    assert batches == list(s)  # same epoch → same batches
    s.set_epoch(1)
    assert batches != list(s)
    with pytest.raises(ValueError, match="multiple of m=3"):
        miners.MPerClassSampler(labels, m=3, batch_size=10)
    with pytest.raises(ValueError, match="positive integer"):
        miners.MPerClassSampler(labels, m=0, batch_size=12)


def test_make_tuples_positive_is_another_view_of_the_same_class():
    labels = np.repeat(np.arange(4), 5)
    q, p = miners.make_tuples(labels, 12, np.random.default_rng(0))
    assert len(np.unique(q)) == 12 and (labels[q] == labels[p]).all() and (q != p).all()


# --------------------------------------------------------------------------- unsupervised
def _two_arcs(n=120):
    """Two parallel arcs on the unit sphere, 0.08 apart (about 5 steps along an arc): many Euclidean
    neighbours of a point lie on the other arc, but its kNN-graph neighbours (k = 4) never do."""
    t = np.linspace(0, 2.0, n)
    a = np.stack([np.cos(t), np.sin(t), np.zeros(n)], 1)
    b = np.stack([np.cos(t), np.sin(t), np.full(n, 0.08)], 1)
    x = np.concatenate([a, b])
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.repeat([0, 1], n)


def test_diffusion_matches_the_closed_form_linear_solve():
    x, _ = _two_arcs(20)
    s = U.knn_affinity(x, k=4)
    dense = s.toarray()
    assert_allclose(dense, dense.T, atol=1e-12)
    anchors = [0, 7, 30]
    y = np.zeros((40, 3))
    y[anchors, range(3)] = 1
    want = 0.1 * np.linalg.solve(np.eye(40) - 0.9 * dense, y)
    assert_allclose(U.diffuse(s, anchors, alpha=0.9, iterations=400), want, atol=1e-10)


def test_manifold_mining_positives_rank_better_on_the_manifold_and_negatives_cross_arcs():
    x, arc = _two_arcs()
    anchors = np.array([0, 5, 120, 125])  # arc ends, where the other arc is close in Euclidean terms
    m = U.manifold_mining(x, anchors, k=4, k_pos=15, k_neg=20, k_manifold=30)
    assert sum(len(p) for p in m.positives) > 0 and sum(len(n) for n in m.negatives) > 0
    for j, a in enumerate(anchors):
        for p in m.positives[j]:
            assert m.manifold_rank[j][p] < m.euclidean_rank[j][p]
        assert (arc[m.positives[j]] == arc[a]).all()  # the manifold follows the arc
        assert (arc[m.negatives[j]] != arc[a]).all()  # Euclidean neighbours on the other arc are rejected
        for n in m.negatives[j]:
            assert m.euclidean_rank[j][n] < m.manifold_rank[j][n]
    q, p, n = U.manifold_tuples(m, 3, 2)(1, np.random.default_rng(0))
    assert len(q) == 3 and n.shape == (3, 2) and (arc[q] == arc[p]).all()


def test_kmeans_pseudo_labels_recover_separated_groups():
    centres = _random_desc(3, 16, 5)
    x = np.repeat(centres, 20, 0) + 0.05 * _random_desc(60, 16, 6)
    labels = U.kmeans_labels(x, 3)
    truth = np.repeat(np.arange(3), 20)
    assert all(len(np.unique(labels[truth == c])) == 1 for c in range(3)) and len(np.unique(labels)) == 3


# --------------------------------------------------------------------------- trainer (real SMALL COIL-100 maps)
@pytest.fixture(scope="module")
def coil_data(request):
    from retrievalkit import config
    from retrievalkit.experiments import finetune as E
    from retrievalkit.experiments.offtheshelf import Coil

    home = None if (config.data_home() / "coil100").is_dir() else request.getfixturevalue("coil_home")
    return E.finetune_data(Coil(small=True, data_home=home, progress=False))


def _part(data, objects):
    learn = data.train if objects[0] in data.train.labels else data.val
    return learn.subset(np.flatnonzero(np.isin(learn.labels, objects)))


def _cfg(**kw):
    base = dict(loss="triplet", epochs=3, queries=16, negatives=2, pool=120, tuple_batch=8, seed=3)
    return T.FinetuneConfig(**{**base, **kw})


def test_resume_from_a_checkpoint_continues_identically(coil_data, tmp_path):
    import pandas as pd

    train, val = _part(coil_data, [1, 2]), _part(coil_data, [9, 10])
    cfg = dict(select="last", epochs=2, queries=8, pool=60)
    straight = T.finetune(train, val, _cfg(**cfg))
    ckpt = tmp_path / "ft.pt"
    first = T.finetune(train, val, _cfg(**{**cfg, "epochs": 1}), checkpoint=ckpt)
    assert [h["epoch"] for h in first.history] == [0, 1]
    resumed = T.finetune(train, val, _cfg(**cfg), checkpoint=ckpt)
    pd.testing.assert_frame_equal(pd.DataFrame(straight.history).drop(columns="seconds"),
                                  pd.DataFrame(resumed.history).drop(columns="seconds"), check_exact=True)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = first.model.state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)  # epoch 2 did change the weights
    with pytest.raises(ValueError, match="another configuration"):
        T.finetune(train, val, _cfg(**{**cfg, "lr": 1e-3}), checkpoint=ckpt)


def test_short_training_lowers_the_loss_and_raises_validation_map(coil_data):
    train, val = _part(coil_data, [1, 2, 3, 4, 5, 6, 7, 8]), _part(coil_data, [9, 10])
    res = T.finetune(train, val, _cfg(loss="contrastive", epochs=3, queries=48, pool=300, lr=2e-4))
    h = res.history
    assert h[-1]["loss"] < h[1]["loss"]
    assert max(r["val_mAP"] for r in h[1:]) > h[0]["val_mAP"]
    assert res.best_epoch == int(np.argmax([r["val_mAP"] for r in h]))


def test_trainer_refuses_test_split_images_or_objects_and_reports_what_it_read(coil_data):
    train, val, test = _part(coil_data, [1, 2]), _part(coil_data, [9]), coil_data.test
    leaky = T.TrainData(np.concatenate([train.maps, test.maps[:3]]), np.concatenate([train.labels, test.labels[:3]]),
                        np.concatenate([train.ids, test.ids[:3]]))
    with pytest.raises(ValueError, match="test split"):
        T.finetune(leaky, val, _cfg(epochs=1), forbidden_ids=test.ids)
    with pytest.raises(ValueError, match="test-split objects"):
        T.finetune(leaky, val, _cfg(epochs=1), forbidden_labels=test.labels)
    with pytest.raises(ValueError, match="test split"):  # the validation part is checked too
        T.finetune(train, test.subset(np.arange(5)), _cfg(epochs=1), forbidden_ids=test.ids)
    res = T.finetune(train, val, _cfg(epochs=1), forbidden_ids=test.ids, forbidden_labels=test.labels)
    assert res.seen_ids and res.seen_ids <= set(train.ids) | set(val.ids)
    assert not res.seen_ids & set(test.ids)


def test_initial_tail_reproduces_the_off_the_shelf_gem_descriptor(coil_data):
    """Epoch 0 is the off-the-shelf baseline: TailNet on cached stage6 maps = full Lite0 forward + GeM."""
    from retrievalkit import backbones
    from retrievalkit.nn import functional as F

    net = T.TailNet().eval()
    bb = backbones.load_backbone("efficientnet_lite0", device="cpu")
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        maps = bb.forward_features(bb.normalize(x), ["stage6", "head"])
        want = F.l2n(F.gem(maps["head"], 3.0))
        assert_allclose(net(maps["stage6"]).numpy(), want.numpy(), atol=1e-5)


def test_manifold_graph_and_diffusion_refuse_bad_arguments():
    x = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match="graph k=4 is larger than the 3"):
        U.knn_affinity(x, k=4)
    s = U.knn_affinity(x, k=2)
    for alpha in (0.0, 1.0):
        with pytest.raises(ValueError, match="0 < alpha < 1"):
            U.diffuse(s, [0], alpha=alpha)


def test_every_torch_load_in_the_package_refuses_pickled_code():
    """Checkpoints and weights load with ``weights_only=True``: a file cannot run code when read."""
    import ast
    from pathlib import Path

    import retrievalkit

    calls = []
    for path in Path(retrievalkit.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
                calls.append((path.name, node.lineno, kw.get("weights_only")))
    assert calls, "expected torch.load calls (checkpoints, bundled weights)"
    assert all(flag == "True" for *_, flag in calls), calls


_FINETUNE_SCRIPT = """
import hashlib, sys
import numpy as np, torch
from retrievalkit.finetune import trainer as T
torch.set_num_threads(int(sys.argv[2]))
d = np.load(sys.argv[1])
train, val = T.TrainData(d["xt"], d["yt"], d["it"]), T.TrainData(d["xv"], d["yv"], d["iv"])
cfg = T.FinetuneConfig(loss=sys.argv[3], epochs=2, queries=8, negatives=2, pool=60, tuple_batch=8, class_batches=2,
                       batch_size=16, m=4, seed=3)
res = T.finetune(train, val, cfg)
digest = hashlib.sha256()
for v in res.model.state_dict().values():
    digest.update(v.detach().contiguous().numpy().tobytes())
print(res.best_epoch, [round(h["val_mAP"], 12) for h in res.history], digest.hexdigest())
"""


@pytest.mark.parametrize("loss", ["triplet", "ap"])
def test_finetune_repeats_bit_for_bit_in_fresh_processes_and_thread_counts(coil_data, tmp_path, loss):
    """Same seed, same data: same weights, validation curve and best epoch, in two processes with 1 and 2 threads."""
    import subprocess
    import sys

    train, val = _part(coil_data, [1, 2, 3]), _part(coil_data, [9, 10])
    data = tmp_path / "maps.npz"
    np.savez(data, xt=np.asarray(train.maps), yt=train.labels, it=train.ids.astype(str),
             xv=np.asarray(val.maps), yv=val.labels, iv=val.ids.astype(str))
    runs = [subprocess.run([sys.executable, "-c", _FINETUNE_SCRIPT, str(data), str(n), loss], capture_output=True,
                           text=True, check=True).stdout for n in (1, 2)]
    assert runs[0] == runs[1] and runs[0].strip()


def test_finetune_runs_with_deterministic_kernels_and_restores_the_setting(coil_data, monkeypatch):
    from retrievalkit import config

    seen = []
    original = T.describe

    def spy(*args, **kwargs):  # called for validation inside the training loop
        seen.append(torch.are_deterministic_algorithms_enabled())
        return original(*args, **kwargs)

    monkeypatch.setattr(T, "describe", spy)
    train, val = _part(coil_data, [1, 2]), _part(coil_data, [9, 10])
    assert not torch.are_deterministic_algorithms_enabled()
    T.finetune(train, val, _cfg(select="last", epochs=1, queries=8, pool=60))
    assert seen and all(seen)
    assert not torch.are_deterministic_algorithms_enabled()  # the caller's setting is back
    with pytest.raises(KeyError):
        with config.deterministic():
            raise KeyError("restored on errors too")
    assert not torch.are_deterministic_algorithms_enabled()


def test_early_stopping_keeps_the_earliest_epoch_on_exact_ties(coil_data, monkeypatch):
    """Equal validation mAPs never move the kept epoch: a rerun cannot stop elsewhere on a tie."""
    monkeypatch.setattr(T.evaluate, "leave_one_out_map", lambda *args, **kwargs: 0.5)
    train, val = _part(coil_data, [1, 2]), _part(coil_data, [9, 10])
    res = T.finetune(train, val, _cfg(epochs=5, patience=2, queries=8, pool=60))
    assert res.best_epoch == 0
    assert [h["epoch"] for h in res.history] == [0, 1, 2]  # epochs 1 and 2 did not beat epoch 0: stop
