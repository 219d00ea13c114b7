"""Scale-out feature extraction on a Dask cluster, and a faiss index filled shard by shard.

Survey §2.1.2 (challenge 3: efficiency at scale — a million-image distractor set does not fit
one laptop's afternoon) and §2.3.1 (the same single-pass extraction); taught in
notebooks/08_indexing_and_efficiency. Optional: ``pip install retrievalkit[distributed]``.

How it works. The image list is cut into fixed row ranges (*shards*). Each shard is extracted
by a Dask worker with the ordinary single-process :func:`retrievalkit.features.extract` (same
backbone, same preprocessing, same pooling) into its own cache entry — sidecar, CRC-32, atomic
publish — under ``<cache>/features/shards/<final folder name>/``. A shard whose entry is
complete is never recomputed, so an interrupted run resumes where it stopped; a worker that
dies mid-shard (killed, out of memory, machine rebooted) makes Dask reschedule that shard on
another worker. When every shard is done their rows are copied, in order, into exactly the
folder :func:`~retrievalkit.features.extract` would have written (same key, same files,
same sidecar fields), so every other part of the package reads the result unchanged.

Why Dask distributed and not Ray: it is pure Python (~30 MB installed with its dependencies,
``import distributed`` ~0.3 s) and its ``dask scheduler`` / ``dask worker`` commands run on any
lab machines that share a file system, with the same venv as the notebooks. Ray is an 80 MB
binary wheel per platform (plus pyarrow for Ray Data) whose batch-inference API would replace
rather than reuse the extractor's loader and cache. All that is needed here is "run this
function on each shard, again if its worker died", which Dask's scheduler does.

Requirements on a real cluster: the image files and the cache folder are on a file system
every worker and the calling process see at the same paths (NFS, a lab share), and every
worker runs the same retrievalkit, torch and backbone weights (checked: a shard made with other
weights has another key and is refused).
"""
from __future__ import annotations

import logging
import math
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence
from urllib.parse import urlparse

import numpy as np

from .features import cache as store
from .features.extraction import DEFAULT_POOLINGS, plan_extraction
from .features.loading import ImageSource
from .rows import l2n

log = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 1024  # images per shard: minutes of CPU work, small enough to redo when a worker dies
SHARDS_DIR = "shards"
COPY_ROWS = 4096  # rows copied (or added to an index) at a time: memory stays bounded whatever N is
DEFAULT_TRAIN_SIZE = 100_000
INSTALL_HINT = "install the optional extra: pip install 'retrievalkit[distributed]'"


def _require_dask():
    try:
        import distributed
    except ImportError as err:
        raise ImportError(f"scale-out extraction needs Dask distributed: {INSTALL_HINT}") from err
    return distributed


# --------------------------------------------------------------------------- shards
@dataclass(frozen=True)
class ShardJob:
    """One row range of the image list and everything a worker needs to extract it."""

    index: int
    start: int
    stop: int
    source: ImageSource
    backbone: str
    weights: object
    device: str | None
    options: dict
    cache: str
    torch_threads: dict

    @property
    def label(self) -> str:
        return f"shard {self.index} (rows {self.start}-{self.stop - 1})"


def shard_ranges(n: int, shard_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n)`` in fixed-size row ranges (the last may be shorter)."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be a positive number of images, got {shard_size}")
    return [(start, min(start + shard_size, n)) for start in range(0, n, shard_size)]


def _slice_source(source: ImageSource, start: int, stop: int) -> ImageSource:
    return ImageSource(
        f"{source.name}-rows{start}-{stop - 1}", source.paths[start:stop],
        None if source.bboxes is None else source.bboxes[start:stop],
        None if source.arrays is None else np.array(source.arrays[start:stop]),  # a plain copy, not a memmap
        exif_transpose=source.exif_transpose)


_WORKER_BACKBONES: dict = {}


def _host(address: str) -> str:
    return urlparse(address).hostname or address


def _extract_shard(job: ShardJob) -> dict:
    """Run on a worker: extract one shard into its cache entry (a complete entry is just looked up)."""
    import torch

    from .backbones import load_backbone
    from .features.extraction import extract

    threads = job.torch_threads.get("*")
    if threads is None:
        from distributed import get_worker

        threads = job.torch_threads.get(_host(get_worker().address), 1)
    torch.set_num_threads(max(1, int(threads)))
    key = (job.backbone, str(job.weights), job.device)
    if key not in _WORKER_BACKBONES:  # loaded once per worker process, reused by its next shards
        _WORKER_BACKBONES[key] = load_backbone(job.backbone, weights=job.weights, device=job.device, progress=False)
    start = time.perf_counter()
    feats = extract(job.source, _WORKER_BACKBONES[key], cache=job.cache, workers=0, progress=False,
                    device=job.device, **job.options)
    return {"index": job.index, "folder": str(feats.folder), "key": feats.key, "config": feats.config,
            "from_cache": feats.from_cache, "seconds": time.perf_counter() - start,
            "host": platform.node(), "pid": os.getpid()}


# --------------------------------------------------------------------------- the cluster
def _open_client(client, scheduler, n_workers):
    """``(client, close)``: the given client, one connected to ``scheduler``, or a local cluster."""
    distributed = _require_dask()
    if client is not None:
        return client, None
    if scheduler is not None:
        client = distributed.Client(scheduler)
        return client, client.close
    cluster = distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                       dashboard_address=":0")
    client = distributed.Client(cluster)

    def close():
        client.close()
        cluster.close()
    return client, close


def _threads_per_host(client, torch_threads) -> dict:
    """Torch threads per worker: ``torch_threads`` when given, else a host's cores shared by its workers."""
    if torch_threads is not None:
        return {"*": int(torch_threads)}
    workers = client.scheduler_info()["workers"]
    per_host: dict[str, int] = {}
    for address in workers:
        per_host[_host(address)] = per_host.get(_host(address), 0) + 1
    cores = client.run(os.cpu_count)  # each worker's own machine
    return {_host(a): max(1, (cores.get(a) or 1) // per_host[_host(a)]) for a in workers}


def _run_jobs(client, jobs: list[ShardJob], progress) -> tuple[list[dict], list[tuple[ShardJob, BaseException]]]:
    """Submit every job, wait for all (a failure does not cancel the others), return results and failures."""
    from distributed import as_completed
    from tqdm.auto import tqdm

    futures = {client.submit(_extract_shard, job, pure=False): job for job in jobs}
    results, failures = [], []
    with tqdm(total=len(jobs), desc="shards", unit="shard", disable=not progress) as bar:
        for future in as_completed(futures):
            job = futures[future]
            if future.status == "error":
                failures.append((job, future.exception()))
            else:
                results.append(future.result())
            bar.update(1)
    return results, failures


# --------------------------------------------------------------------------- assembly
def _shard_mismatch(expected: dict, found: dict) -> str:
    keys = sorted(k for k in set(expected) | set(found) if expected.get(k) != found.get(k))
    return ", ".join(keys) or "nothing visible"


def _assemble(plan, shards: list[tuple[Path, dict]], ranges, root: Path, info: dict, replace: bool) -> Path:
    """Copy the shards' rows, in order, into one cache entry with the single-process layout; publish it."""
    n = len(plan.source)
    first = shards[0][1]
    tmp = store.begin(root, plan.config)
    try:
        store.write_image_list(tmp, plan.source.paths)
        sidecar = {kind: [] for kind in ("arrays", "maps")}
        for kind in sidecar:
            for entry in first.get(kind, []):
                shape = (n, *entry["shape"][1:])
                writer = store.RowWriter(tmp / entry["file"], shape, entry["dtype"])
                try:
                    for (folder, shard), (start, _) in zip(shards, ranges):
                        rows = store.load_array(folder / entry["file"])
                        for s in range(0, len(rows), COPY_ROWS):
                            writer.write(start + s, rows[s:s + COPY_ROWS])
                finally:
                    writer.close()
                sidecar[kind].append({k: v for k, v in entry.items() if k not in ("bytes", "crc32")}
                                     | {"shape": list(shape)})
        read_ok = [len(range(*r)) - len(s["skipped"]) for (_, s), r in zip(shards, ranges)]
        sidecar.update({
            "n_images": n,
            "skipped": [[i + start, path, reason] for (_, s), (start, _) in zip(shards, ranges)
                        for i, path, reason in s["skipped"]],
            "seconds": info["seconds"],
            "seconds_per_image": info["seconds"] / n,
            "forwards_per_image": sum(s["forwards_per_image"] * k for (_, s), k in zip(shards, read_ok))
            / max(sum(read_ok), 1),
            "aliases": first["aliases"], "default_layer": first["default_layer"],
            "batch_size": first["batch_size"], "workers": first["workers"],
            "device": first["device"], "torch": first["torch"], "python": first["python"],
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "distributed": info,
        })
        return store.commit(tmp, plan.config, sidecar, replace=replace)
    except BaseException:
        store.abort(tmp)
        raise


def extract_distributed(data, backbone: str, layers=None, pooling=DEFAULT_POOLINGS, *, images: str = "db",
                        bboxes: Sequence | None = None, size: int | None = None, resize: str | None = "default",
                        scales: Sequence[float] = (1.0,), multipass=None, keep_maps=False,
                        batch_size: int | None = None, weights="imagenet", device: str | None = "auto",
                        shard_size: int = DEFAULT_SHARD_SIZE, client=None, scheduler: str | None = None,
                        n_workers: int = 2, torch_threads: int | None = None, cache=True, refresh: bool = False,
                        keep_shards: bool = False, name: str | None = None, progress: bool | None = None):
    """:func:`retrievalkit.features.extract`, shard by shard on a Dask cluster; same result, same cache entry.

    Survey §2.1.2 and §2.3.1; taught in notebooks/08_indexing_and_efficiency.

    The extraction arguments (``data`` … ``batch_size``, ``weights``, ``name``) mean what they mean
    for ``extract``; ``backbone`` must be a registry name (each worker loads it). Where the work
    runs: ``client`` (a ``distributed.Client``), else ``scheduler`` (an address such as
    ``"tcp://lab-head:8786"``), else a local cluster of ``n_workers`` processes started for this
    call. ``torch_threads`` per worker defaults to its machine's cores divided by the workers on it.

    ``shard_size`` images per shard. Complete shards are kept until the whole result is published
    (then removed unless ``keep_shards``), so calling again after a failure or an interruption
    redoes only the missing shards. ``cache``: True (``config.cache_dir()``) or a folder, which
    must be shared by every worker. ``refresh`` recomputes everything. Returns a
    :class:`~retrievalkit.features.Features` read from the published folder; its
    ``sidecar["distributed"]`` says how many shards were computed, reused and how long it took.
    """
    from .backbones import load_backbone
    from .features.extraction import Features

    if not isinstance(backbone, str):
        raise TypeError(f"extract_distributed needs a backbone registry name (each worker loads it), got "
                        f"{type(backbone).__name__}; a fine-tuned model: save its state dict and pass weights=<path>")
    if cache is False:
        raise ValueError("extract_distributed writes shards to a cache folder shared by the workers: pass cache=True "
                         "or a folder, not cache=False")
    local = load_backbone(backbone, weights=weights, device="cpu", progress=False)
    options = dict(layers=layers, pooling=pooling, scales=scales, multipass=multipass, keep_maps=keep_maps)
    plan = plan_extraction(data, local, images=images, bboxes=bboxes, size=size, resize=resize,
                           batch_size=batch_size, name=name, **options)
    # Shards run with the resolved input (the default depends on the dataset name, which a shard changes).
    options.update(resize=plan.resize, size=plan.size, batch_size=plan.batch_size)
    root = store.features_root(None if cache is True else cache)
    shard_cache = root / SHARDS_DIR / plan.folder_name
    if refresh:
        shutil.rmtree(shard_cache, ignore_errors=True)
    else:
        found = store.lookup(root, plan.config)
        if found is not None:
            return Features(found[1], folder=found[0], from_cache=True)

    start = time.perf_counter()
    ranges = shard_ranges(len(plan.source), int(shard_size))
    sources = [_slice_source(plan.source, a, b) for a, b in ranges]
    shard_configs = [plan_extraction(s, local, images=images, name=s.name, **options).config for s in sources]
    shard_root = store.features_root(shard_cache)
    todo = [i for i, cfg in enumerate(shard_configs) if store.lookup(shard_root, cfg) is None]
    info = {"engine": "dask.distributed", "shard_size": int(shard_size), "shards": len(ranges),
            "computed": len(todo), "reused": len(ranges) - len(todo), "shard_seconds": 0.0, "workers": 0}
    if todo:
        client, close = _open_client(client, scheduler, n_workers)
        try:
            threads = _threads_per_host(client, torch_threads)
            info["workers"] = len(client.scheduler_info()["workers"])
            jobs = [ShardJob(i, *ranges[i], sources[i], backbone, weights, device, options, str(shard_cache), threads)
                    for i in todo]
            results, failures = _run_jobs(client, jobs, progress)
        finally:
            if close is not None:
                close()
        if failures:
            job, err = min(failures, key=lambda f: f[0].index)
            raise RuntimeError(
                f"{len(failures)} of {len(jobs)} shards failed; first: {job.label}: {type(err).__name__}: {err}. "
                f"The finished shards are kept under {shard_cache}: fix the cause and run the same call again "
                "to extract only the missing ones") from err
        info["shard_seconds"] = sum(r["seconds"] for r in results)
        info["computed"] = sum(not r["from_cache"] for r in results)  # a worker may find a shard already done
        info["reused"] = len(ranges) - info["computed"]
        for r in results:
            expected = store.cache_key(shard_configs[r["index"]])
            if r["key"] != expected:
                raise RuntimeError(
                    f"shard {r['index']} was extracted on {r['host']} with a different configuration "
                    f"({_shard_mismatch(store.canonical(shard_configs[r['index']]), r['config'])}): install the same "
                    "retrievalkit, torch and backbone weights on every worker, then run again")
    shards = []
    for i, cfg in enumerate(shard_configs):
        found = store.lookup(shard_root, cfg)
        if found is None:
            raise RuntimeError(
                f"shard {i} (rows {ranges[i][0]}-{ranges[i][1] - 1}) is not readable under {shard_root}: the cache "
                "folder must be on a file system shared by every worker and this process (pass cache=<shared folder>)")
        shards.append(found)
    info["seconds"] = time.perf_counter() - start
    final = _assemble(plan, shards, ranges, root, info, replace=refresh)
    if not keep_shards:
        shutil.rmtree(shard_cache, ignore_errors=True)
    return Features(store.read_sidecar(final), folder=final)


# --------------------------------------------------------------------------- faiss from shards
def row_blocks(features, layer: str | None = None, pooling: str | None = None,
               block_rows: int | None = None) -> list[np.ndarray]:
    """The raw cached rows of ``(layer, pooling)`` as memory-mapped blocks (nothing is read yet).

    Blocks follow the shards of a distributed extraction (its ``shard_size``) unless ``block_rows``
    is given; a single-process extraction is cut into blocks of ``COPY_ROWS``.
    """
    if features.folder is None:
        raise ValueError("row_blocks reads a cached extraction; this Features is in memory (cache=False)")
    entry = features._entry(layer, pooling)
    rows = store.load_array(features.folder / entry["file"])
    step = int(block_rows or features.sidecar.get("distributed", {}).get("shard_size") or COPY_ROWS)
    return [rows[a:b] for a, b in shard_ranges(len(rows), step)]


def sample_rows(blocks: Sequence[np.ndarray], n: int, seed: int = 0, normalize: bool = True) -> np.ndarray:
    """``n`` rows drawn uniformly without replacement across all ``blocks``, in block order (a copy)."""
    sizes = [len(b) for b in blocks]
    total = sum(sizes)
    picked = np.sort(np.random.default_rng(seed).choice(total, size=min(int(n), total), replace=False))
    offsets = np.cumsum([0, *sizes])
    parts = [np.asarray(b[picked[(picked >= lo) & (picked < hi)] - lo], dtype=np.float32)
             for b, lo, hi in zip(blocks, offsets[:-1], offsets[1:])]
    rows = np.concatenate(parts)
    return l2n(rows) if normalize else rows


def build_index_from_shards(blocks: Sequence[np.ndarray], kind: str = "ivf_pq", *, train=None,
                            train_size: int = DEFAULT_TRAIN_SIZE, seed: int = 0, normalize: bool = True, **params):
    """Train a faiss index once, then ``add`` the database block by block: N never sits in memory at once.

    Survey §2.1.2 and Table 2.1; taught in notebooks/08_indexing_and_efficiency. ``blocks``: the
    database rows as a sequence of arrays (e.g. :func:`row_blocks`, memory-mapped), raw or
    normalised; each is L2-normalised ``COPY_ROWS`` rows at a time when ``normalize``. ``train``:
    the learning-split rows (an array, used as given), or a sequence of blocks from which
    ``train_size`` rows are sampled with :func:`sample_rows` — pass the database's own blocks only
    where training on it is intended (a distractor collection without queries). As in
    :func:`retrievalkit.index.build_index`, trained kinds never fall back to the database silently.
    ``params`` go to ``build_index``; IVF's default ``nlist`` counts every block's rows.
    """
    from . import index as rk_index

    if kind == "exact":
        raise ValueError("the 'exact' kind keeps every row in memory: use 'flat', 'ivf_pq', … to fill it by blocks")
    if kind in rk_index.TRAINED_KINDS and train is None:
        raise ValueError(f"build_index_from_shards({kind!r}) must be trained: pass train=<learning-split rows>, or "
                         "train=<blocks> to sample train_size rows from them")
    if train is not None and not isinstance(train, np.ndarray):
        train = sample_rows(train, train_size, seed=seed, normalize=normalize)
    total = sum(len(b) for b in blocks)
    if total == 0:
        raise ValueError("build_index_from_shards: the blocks hold no rows")
    if kind in ("ivf_flat", "ivf_pq") and not params.get("nlist"):
        params["nlist"] = rk_index._default_nlist(total, len(train))

    def chunks():
        for block in blocks:
            for a in range(0, len(block), COPY_ROWS):
                rows = np.asarray(block[a:a + COPY_ROWS], dtype=np.float32)
                yield l2n(rows) if normalize else rows

    stream = chunks()
    index = rk_index.build_index(kind, next(stream), xtrain=train, **params)
    for rows in stream:
        index.add(rows)
    return index


__all__ = ["extract_distributed", "shard_ranges", "row_blocks", "sample_rows", "build_index_from_shards",
           "ShardJob", "DEFAULT_SHARD_SIZE"]
