"""Scale-out extraction on a local 2-worker Dask cluster: same cache as one process, killed workers, resume; faiss by blocks."""
from __future__ import annotations

import dataclasses
import functools
import os
import sys

import cloudpickle
import numpy as np
import pytest
from numpy.testing import assert_allclose
from PIL import Image

import retrievalkit.distributed as rkd
from retrievalkit.backbones import load_backbone
from retrievalkit.datasets import folder as folder_loader
from retrievalkit.features import cache as store
from retrievalkit.features.extraction import extract
from retrievalkit.index import build_index, search

OPTS = dict(layers=["stage6", "head"], pooling=("mac", "gem"), size=64, resize="fixed", batch_size=4)
SHARD_SIZE = 6
N_GROUPS, PER_GROUP = 6, 4
_REAL_TASK = rkd._extract_shard


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    # The fault-injecting tasks below live in this module, which workers cannot import: ship them by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    with Client(cluster) as c:
        yield c
    cluster.close()
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """24 small images in 6 groups plus one unreadable file (kept: check_images=False), so one row is skipped."""
    root = tmp_path_factory.mktemp("lab_folder")
    rng = np.random.default_rng(0)
    for g in range(N_GROUPS):
        (root / f"g{g}").mkdir()
        for k in range(PER_GROUP):
            w, h = 40 + 8 * k, 72 - 6 * g
            yy, xx = np.mgrid[0:h, 0:w]
            base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], axis=-1)
            pixels = np.clip(base + rng.normal(0, 40, (h, w, 3)) + rng.integers(-60, 60, 3), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / f"g{g}" / f"img{k}.png")
    (root / "g2" / "img_broken.png").write_bytes(b"not a png")
    return folder_loader.load(root, check_images=False)


@pytest.fixture(scope="module")
def single(dataset, tmp_path_factory):
    lite = load_backbone("efficientnet_lite0", device="cpu")
    return extract(dataset, lite, cache=tmp_path_factory.mktemp("single_cache"), workers=0, **OPTS)


def _die_once(job, marker: str, shard: int):
    """The first attempt of ``shard`` kills its whole worker process, as an OOM killer or a reboot would."""
    if job.index == shard and not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write(str(os.getpid()))
        os._exit(1)
    return _REAL_TASK(job)


def _fail(job, shard: int):
    if job.index == shard:
        raise OSError("injected failure")
    return _REAL_TASK(job)


def _run(dataset, cache, **kw):
    return rkd.extract_distributed(dataset, "efficientnet_lite0", shard_size=SHARD_SIZE, cache=cache,
                                   torch_threads=1, device="cpu", **OPTS, **kw)


def assert_same_cache(dist, single):
    """The distributed entry is the single-process one: same key and folder name, files, sidecar facts, rows."""
    assert dist.folder.name == single.folder.name and dist.key == single.key
    assert sorted(p.name for p in dist.folder.iterdir()) == sorted(p.name for p in single.folder.iterdir())
    assert (dist.folder / store.IMAGE_LIST).read_text() == (single.folder / store.IMAGE_LIST).read_text()
    a, b = dist.sidecar, single.sidecar
    assert a["config"] == b["config"] and a["complete"] is True
    for field in ("n_images", "skipped", "aliases", "default_layer", "forwards_per_image"):
        assert a[field] == b[field], field
    drop = lambda entries: [{k: v for k, v in e.items() if k not in ("bytes", "crc32")} for e in entries]
    assert drop(a["arrays"]) == drop(b["arrays"])
    for layer, pooling in single.available():
        expected = single.get(layer, pooling, normalize=False)
        assert_allclose(dist.get(layer, pooling, normalize=False), expected, rtol=1e-4,
                        atol=1e-5 * max(1.0, float(np.abs(expected).max())))


def test_distributed_cache_equals_single_process_and_a_killed_workers_shard_is_redone(
        client, dataset, single, tmp_path, monkeypatch):
    marker = tmp_path / "killed-once"
    monkeypatch.setattr(rkd, "_extract_shard", functools.partial(_die_once, marker=str(marker), shard=1))
    pids_before = set(client.run(os.getpid).values())

    dist = _run(dataset, tmp_path / "cache", client=client)

    killed = int(marker.read_text())
    assert killed in pids_before and killed not in set(client.run(os.getpid).values())
    assert dist.sidecar["distributed"] | {"seconds": 0, "shard_seconds": 0} == {
        "engine": "dask.distributed", "shard_size": SHARD_SIZE, "shards": 5, "computed": 5, "reused": 0,
        "workers": 2, "seconds": 0, "shard_seconds": 0}
    # the unreadable file sits in a later shard: its row number must be the global one
    assert len(single.skipped) == 1 and single.sidecar["skipped"][0][0] >= SHARD_SIZE
    assert_same_cache(dist, single)
    assert not (tmp_path / "cache" / store.SUBDIR / rkd.SHARDS_DIR / dist.folder.name).exists()
    # every other part of the package reads the published entry as its own
    again = extract(dataset, load_backbone("efficientnet_lite0", device="cpu"), cache=tmp_path / "cache", **OPTS)
    assert again.from_cache and again.folder == dist.folder

    blocks = rkd.row_blocks(dist, "head", "gem")
    assert [len(b) for b in blocks] == [6, 6, 6, 6, 1]
    assert_allclose(np.concatenate(blocks), dist.get("head", "gem", normalize=False))


def test_failed_shard_is_reported_and_a_rerun_extracts_only_it(client, dataset, single, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setattr(rkd, "_extract_shard", functools.partial(_fail, shard=2))
    with pytest.raises(RuntimeError, match=r"1 of 5 shards failed; first: shard 2 \(rows 12-17\).*"
                                           r"injected failure.*run the same call again"):
        _run(dataset, cache, client=client)
    monkeypatch.setattr(rkd, "_extract_shard", _REAL_TASK)

    dist = _run(dataset, cache, client=client, keep_shards=True)
    assert (dist.sidecar["distributed"]["computed"], dist.sidecar["distributed"]["reused"]) == (1, 4)
    assert_same_cache(dist, single)

    # Interrupted after every shard was done but before publishing: assembling needs no cluster.
    store.abort(dist.folder)
    monkeypatch.setattr(rkd, "_open_client", lambda *a: pytest.fail("a cluster was started for finished shards"))
    assembled = _run(dataset, cache)
    assert (assembled.sidecar["distributed"]["computed"], assembled.sidecar["distributed"]["reused"]) == (0, 5)
    assert_same_cache(assembled, single)
    assert _run(dataset, cache).from_cache  # published: read back, nothing else done


def test_ivf_pq_filled_shard_by_shard_equals_one_built_from_the_whole_array(tmp_path, monkeypatch):
    monkeypatch.setattr(rkd, "COPY_ROWS", 64)  # several add() calls per block
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(12, 32))
    blocks = []
    for i, n in enumerate((300, 250, 170)):
        rows = (centres[rng.integers(0, 12, n)] + 0.3 * rng.normal(size=(n, 32))).astype(np.float32)
        np.save(tmp_path / f"shard{i}.npy", rows)
        blocks.append(np.load(tmp_path / f"shard{i}.npy", mmap_mode="r"))
    params = dict(nlist=8, pq_m=4, pq_bits=8)

    sharded = rkd.build_index_from_shards(blocks, "ivf_pq", train=blocks, train_size=400, seed=3, **params)

    train = rkd.sample_rows(blocks, 400, seed=3)
    raw = rkd.sample_rows(blocks, 400, seed=3, normalize=False)
    assert all(np.isin(raw[:, 0], b[:, 0]).sum() > 50 for b in blocks)  # drawn across every shard
    whole = np.concatenate(blocks)
    whole = whole / (np.linalg.norm(whole, axis=1, keepdims=True) + 1e-6)
    reference = build_index("ivf_pq", whole, xtrain=train, **params)
    assert sharded.ntotal == reference.ntotal == 720
    queries = whole[::37]
    s1, i1 = search(sharded, queries, 10, nprobe=4)
    s2, i2 = search(reference, queries, 10, nprobe=4)
    np.testing.assert_array_equal(i1, i2)
    assert_allclose(s1, s2, rtol=1e-5, atol=1e-6)


def test_clear_errors(dataset, monkeypatch):
    with pytest.raises(TypeError, match="registry name"):
        rkd.extract_distributed(dataset, load_backbone("efficientnet_lite0", device="cpu"))
    with pytest.raises(ValueError, match="shared by the workers"):
        rkd.extract_distributed(dataset, "efficientnet_lite0", cache=False)
    with pytest.raises(ValueError, match="must be trained"):
        rkd.build_index_from_shards([np.ones((300, 8), np.float32)], "ivf_pq")
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r"pip install 'retrievalkit\[distributed\]'"):
        rkd._open_client(None, None, 2)


def _other_input_size(job):
    """A worker whose setup differs from the caller's (here: its input size), as a machine with other weights would."""
    return _REAL_TASK(dataclasses.replace(job, options={**job.options, "size": 72}))


def test_shard_made_with_another_configuration_is_refused(client, dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(rkd, "_extract_shard", _other_input_size)
    with pytest.raises(RuntimeError, match=r"different configuration \(input\): install the same retrievalkit"):
        _run(dataset, tmp_path / "cache", client=client)


class _FakeClient:
    def scheduler_info(self):
        return {"workers": {"tcp://10.0.0.1:4001": {}, "tcp://10.0.0.1:4002": {}, "tcp://10.0.0.2:4001": {}}}

    def run(self, function):
        return {address: 8 for address in self.scheduler_info()["workers"]}


def test_torch_threads_share_each_machines_cores_among_its_workers():
    assert rkd._threads_per_host(_FakeClient(), None) == {"10.0.0.1": 4, "10.0.0.2": 8}
    assert rkd._threads_per_host(_FakeClient(), 3) == {"*": 3}
