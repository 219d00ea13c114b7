"""Scale-out extraction throughput: one process vs a local Dask cluster of 1 and 2 workers (a benchmark, not a test).

COIL-100 images through :func:`retrievalkit.distributed.extract_distributed` into a fresh cache
each run (extract every shard, assemble, publish), against the single-process
:func:`retrievalkit.features.extract` on the same images. Clusters are started, and each worker
has loaded the backbone, before timing; cluster start-up is printed on its own. Best of
``--repeats``; the runs of a repeat are interleaved so a busy phase of a shared machine hits all.

    python benchmarks/distributed_extract.py                 # 256 images, Lite0 at 224 px, shards of 32
    python benchmarks/distributed_extract.py --n 512 --threads 2
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time

from extract_throughput import coil_paths  # the same COIL-100 images as the bare-forward benchmark


def _options(args) -> dict:
    return dict(pooling=("mac", "gem"), size=args.size, resize="fixed", batch_size=args.batch_size,
                name="coil100-bench", device="cpu")


def _time_single(paths, backbone, args) -> float:
    from retrievalkit.features import extract

    with tempfile.TemporaryDirectory(prefix="rk-bench-") as cache:
        start = time.perf_counter()
        extract(paths, backbone, cache=cache, workers=0, **_options(args))
        return time.perf_counter() - start


def _time_cluster(paths, client, threads, args) -> float:
    from retrievalkit.distributed import extract_distributed

    with tempfile.TemporaryDirectory(prefix="rk-bench-") as cache:
        start = time.perf_counter()
        extract_distributed(paths, args.backbone, client=client, cache=cache, shard_size=args.shard_size,
                            torch_threads=threads, **_options(args))
        return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=256, help="COIL-100 images")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (and of the single process)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    import torch
    from distributed import Client, LocalCluster

    from retrievalkit.backbones import load_backbone

    logging.getLogger("distributed").setLevel(logging.WARNING)  # the clusters' start/stop chatter
    paths = coil_paths(args.n)
    torch.set_num_threads(args.threads)
    backbone = load_backbone(args.backbone, device="cpu")
    print(f"{args.backbone}, {args.n} COIL-100 images at {args.size} px, batch {args.batch_size}, shards of "
          f"{args.shard_size}, torch threads per process {args.threads}, cpus {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    clusters = {}
    for workers in (1, 2):
        start = time.perf_counter()
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
        client = Client(cluster)
        _time_cluster(paths[:workers * args.shard_size], client, args.threads, args)  # each worker loads the backbone
        clusters[workers] = (cluster, client)
        print(f"start a {workers}-worker local cluster and load the backbone on it: {time.perf_counter() - start:.1f} s")
    _time_single(paths[:args.batch_size], backbone, args)  # warm-up

    best = {"one process (extract)": float("inf"), "dask, 1 worker": float("inf"), "dask, 2 workers": float("inf")}
    try:
        for _ in range(args.repeats):
            best["one process (extract)"] = min(best["one process (extract)"], _time_single(paths, backbone, args))
            for workers, (_, client) in clusters.items():
                name = f"dask, {workers} worker{'s' if workers > 1 else ''}"
                best[name] = min(best[name], _time_cluster(paths, client, args.threads, args))
    finally:
        for cluster, client in clusters.values():
            client.close()
            cluster.close()
    one = args.n / best["dask, 1 worker"]
    for name, seconds in best.items():
        ips = args.n / seconds
        print(f"{name:24s} {ips:6.1f} img/s   x{ips / one:.2f} of 1 worker   (best of {args.repeats})")
    print(f"load average now {os.getloadavg()[0]:.2f}: on a machine shared with other jobs, rerun and compare runs made together")


if __name__ == "__main__":
    main()
