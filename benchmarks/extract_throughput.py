"""Feature-extraction throughput and memory on COIL-100 (a benchmark, not a test).

DESIGN §9: the forward pass is the limit, so the whole pipeline (read → decode → resize →
forward → pool → cache write) is measured against the bare forward pass of the same backbone on
pre-decoded tensors of the same images, same size, batch and torch threads, in ``channels_last`` like
the pipeline's own forward (best of ``--repeats``). Target (issue 14): pipeline / bare ≥ 0.9 for
every default network (efficientnet_lite0/1/2, mobilenet_v2) at its input size. Then the peak RSS of extracting ``--rss-n`` images (default 3,600 and
7,200), each in a fresh subprocess: it must not grow with N (rows go to disk as they come).

    python benchmarks/extract_throughput.py                    # 512 images, Lite0, 224 px, batch 32, 2 workers
    python benchmarks/extract_throughput.py --n 256 --rss-n    # throughput only
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_MIRROR = REPO.parent / "shared" / "mirror"


def coil_paths(n: int) -> list[str]:
    if "RETRIEVALKIT_MIRROR" not in os.environ and SHARED_MIRROR.is_dir():
        os.environ["RETRIEVALKIT_MIRROR"] = str(SHARED_MIRROR)
    import retrievalkit as rk

    dataset = rk.datasets.load("coil100", split="all", progress=False)
    if n > dataset.n_db:
        raise SystemExit(f"COIL-100 has {dataset.n_db} images, asked for {n}")
    return [str(p) for p in dataset.db_paths[:n]]


def _backbone(args):
    import torch
    from retrievalkit.backbones import load_backbone

    if args.threads:
        torch.set_num_threads(args.threads)
    return load_backbone(args.backbone, device=args.device)


def _pipeline(paths, backbone, args) -> float:
    """Seconds for one full extraction into a fresh cache folder."""
    from retrievalkit.features import extract

    with tempfile.TemporaryDirectory(prefix="rk-bench-cache-") as cache:
        start = time.perf_counter()
        extract(paths, backbone, size=args.size, resize="fixed", batch_size=args.batch_size,
                workers=args.workers, cache=cache, name="coil100-bench", device=args.device)
        return time.perf_counter() - start


def _predecoded_batches(paths, backbone, args) -> list:
    """The same images, read and resized by the pipeline's own Dataset, as normalised input batches."""
    import torch
    from retrievalkit.features.loading import ImageDataset, ImageSource, to_model_input

    dataset = ImageDataset(ImageSource("bench", paths), "fixed", args.size)
    pixels = torch.stack([dataset[i]["views"][0][2] for i in range(len(paths))])
    batches = [to_model_input(pixels[i:i + args.batch_size], backbone) for i in range(0, len(paths), args.batch_size)]
    assert all(x.is_contiguous(memory_format=backbone.memory_format) for x in batches)  # the pipeline's format
    return batches


def _bare(batches, backbone) -> float:
    """Seconds for the forward passes alone on pre-decoded, pre-normalised batches."""
    import torch

    with torch.inference_mode():
        start = time.perf_counter()
        for x in batches:
            backbone.forward_features(x, [backbone.default_layer])
        return time.perf_counter() - start


def _rss_child(args) -> None:
    paths = coil_paths(args.rss_child)
    backbone = _backbone(args)
    seconds = _pipeline(paths, backbone, args)
    to_mb = 1 / 1024  # ru_maxrss is in KiB on Linux
    print(json.dumps({
        "n": len(paths), "seconds": seconds,
        "main_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * to_mb,
        "worker_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * to_mb,
    }))


def _rss(n: int, args) -> dict:
    cmd = [sys.executable, __file__, "--rss-child", str(n), "--backbone", args.backbone, "--size", str(args.size),
           "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--device", args.device,
           "--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=512, help="images for the throughput comparison")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=224, help="fixed square input side")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave torch's default)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rss-n", type=int, nargs="*", default=[3600, 7200], help="image counts for the memory check")
    parser.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        return _rss_child(args)

    import torch

    paths = coil_paths(args.n)
    backbone = _backbone(args)
    print(f"{args.backbone} on {backbone.device}, {args.n} COIL-100 images at {args.size} px, batch {args.batch_size}, "
          f"{args.workers} workers, torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    batches = _predecoded_batches(paths, backbone, args)
    _bare(batches[:1], backbone)  # warm-up
    # Alternate the two so that a slow phase of the machine hits both alike; keep the best of each.
    pipeline, bare = float("inf"), float("inf")
    for _ in range(args.repeats):
        pipeline = min(pipeline, _pipeline(paths, backbone, args))
        bare = min(bare, _bare(batches, backbone))
    del batches
    pipe_ips, bare_ips = args.n / pipeline, args.n / bare
    print(f"pipeline (read→decode→resize→forward→pool×5→cache): {pipe_ips:6.1f} img/s  (best of {args.repeats})")
    print(f"bare forward on pre-decoded tensors ({str(backbone.memory_format).replace('torch.', '')}): "
          f"{bare_ips:6.1f} img/s  (best of {args.repeats})")
    print(f"ratio pipeline / bare: {pipe_ips / bare_ips:.3f}   (target >= 0.9; load average now "
          f"{os.getloadavg()[0]:.2f} — other processes on the machine slow the pipeline's workers more than the bare loop)")
    for n in args.rss_n:
        r = _rss(n, args)
        print(f"peak RSS extracting {r['n']:5d} images: main {r['main_peak_mb']:7.1f} MB, largest worker "
              f"{r['worker_peak_mb']:6.1f} MB  ({r['n'] / r['seconds']:.1f} img/s)")


if __name__ == "__main__":
    main()
