"""Diffusion query time: online CG vs offline (precomputed inverse) vs no re-ranking (a benchmark, not a test).

Survey §2.4.2.1 (diffusion) and Table 2.1 (rows [150]†/‡: diffusion's time per query); taught in
notebooks/11_diffusion_and_reranking.

Data: COIL-100 test descriptors (EfficientNet-Lite0 GeM, the cached extraction; ``--small`` for
the 10-object SMALL split), optionally with ``--distractors`` synthetic rows from
:func:`retrievalkit.experiments.rerank.lifted_distractors` (fitted on the learning split). Each
method is built once (build time = kNN graph, plus per-component inverses / eigenpairs for the
offline variant), then the
first ``--queries`` queries are searched one at a time (whole ranking; median ms after a warm-up).
Ratios are printed against no re-ranking and against online CG; the top-10 overlap of the offline
ranking with CG's says what its low-rank truncation (components above ``--max-block``) costs.

    python benchmarks/diffusion.py                       # 3,600 images, ~1 minute on 2 cores
    python benchmarks/diffusion.py --distractors 16400   # 20,000 images
    python benchmarks/diffusion.py --small --rank 64 --max-block 0   # every component low-rank
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def median_ms(fn, n: int) -> float:
    fn(0)
    times = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main(argv=None) -> None:
    from retrievalkit import rerank
    from retrievalkit.experiments import rerank as E
    from retrievalkit.experiments.offtheshelf import Coil, layers_for
    from retrievalkit.index import exact_search

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="SMALL COIL-100 split (720 images)")
    p.add_argument("--distractors", type=int, default=0)
    p.add_argument("--graph-k", type=int, default=10)
    p.add_argument("--alpha", type=float, default=0.99)
    p.add_argument("--rank", type=int, default=E.RANK)
    p.add_argument("--max-block", type=int, default=rerank.diffusion.DEFAULT_MAX_BLOCK,
                   help="components up to this size keep an exact inverse (0: all low-rank)")
    p.add_argument("--queries", type=int, default=20)
    args = p.parse_args(argv)

    coil = Coil(small=args.small, progress=False)
    test = coil.split("test")
    x = coil.extract("test", E.BACKBONE, layers_for(E.BACKBONE)).get(E.LAYER, E.POOLING).astype(np.float32)
    rows = np.asarray(test.query_db_index)
    if args.distractors:
        xl = coil.extract("learn", E.BACKBONE, layers_for(E.BACKBONE)).get(E.LAYER, E.POOLING)
        x = np.concatenate([x, E.lifted_distractors(xl, args.distractors)])
    q, n = x[rows], min(args.queries, len(rows))
    print(f"database {x.shape[0]:,} × {x.shape[1]}, {n} single queries, graph k={args.graph_k}, "
          f"α={args.alpha}, rank={args.rank}")

    results = {"none": {"build_s": 0.0, "ms": median_ms(lambda i: exact_search(q[i : i + 1], x), n), "bytes": 0}}
    models = {"CG online": rerank.Diffusion(args.graph_k, args.alpha),
              "offline": rerank.OfflineDiffusion(args.graph_k, args.alpha, rank=args.rank, max_block=args.max_block)}
    rankings = {}
    for name, model in models.items():
        start = time.perf_counter()
        model.fit(x)
        build = time.perf_counter() - start
        if name == "offline":
            print(f"offline: {len(model.blocks_)} components, {model.n_spectral} kept low-rank")
        ms = median_ms(lambda i: model.search(q[i : i + 1], exclude=rows[i : i + 1], progress=False), n)
        rankings[name] = model.search(q[:n], 10, exclude=rows[:n], progress=False)[1]
        results[name] = {"build_s": build, "ms": ms, "bytes": model.nbytes}
    base, cg = results["none"]["ms"], results["CG online"]["ms"]
    print(f"{'method':<18}{'build s':>10}{'ms/query':>11}{'× none':>9}{'× CG':>8}{'MB':>9}")
    for name, r in results.items():
        print(f"{name:<18}{r['build_s']:>10.2f}{r['ms']:>11.2f}{r['ms'] / base:>9.1f}{r['ms'] / cg:>8.2f}"
              f"{r['bytes'] / 2**20:>9.2f}")
    overlap = np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(rankings["offline"], rankings["CG online"])])
    print(f"offline vs CG: top-10 overlap {overlap:.3f}; CG/offline query-time ratio "
          f"{cg / results['offline']['ms']:.1f}×")


if __name__ == "__main__":
    main()
