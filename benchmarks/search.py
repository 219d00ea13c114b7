"""Search speed and memory at scale: Hamming vs float, IVF-PQ vs Flat at equal recall (a benchmark, not a test).

Survey §2.1.2 challenge 3 (accuracy vs efficiency), §2.3.2.4 (hashing) and §2.5.3 / Table 2.1
(time per query); taught in notebooks/07_hashing and notebooks/08_indexing_and_efficiency.

Synthetic data, two models (``--data``):

* ``views`` (default, instance-retrieval-like): ``--n / --views`` "objects" drawn from a low-rank
  Gaussian model plus isotropic noise, each seen ``--views`` times with view noise
  ``--view-noise`` (every row L2-normalised). Queries are new views of database objects, so a
  query's exact top-10 are the other views of its object among ~1M distractor views — the
  situation of COIL-100 / UKBench / Holidays with distractors.
* ``continuous``: every row an independent draw of the object model. Nearest neighbours are then
  a fine-grained ranking inside a continuous cloud (ANN-benchmark-like), much harder for any
  compressed code.

Learning rows (``--ntrain``) are views of *other* objects: ITQ, IVF centroids and PQ codebooks
never see the database or the queries.

Measured with ``k = --k``, all queries in one batch (best of ``--repeats`` after a warm-up)
unless "single" (one query per call, the first 20 queries):

1. float exact search (faiss ``IndexFlatIP``) at each ``--dims``: the reference and ground truth;
2. Hamming search (faiss ``IndexBinaryFlat``) of ITQ codes of ``--bits`` bits, raw faiss and
   :func:`retrievalkit.hashing.hamming_search` (defined tie order); the recall of the Hamming
   top-k against the float top-k is the accuracy paid;
3. IVF-PQ, and IVF-PQ re-ranked with 8-bit vectors (``refine="sq8"``), at the first ``nprobe``
   (1, 2, 4, …) whose recall@k reaches ``--target-recall``, against Flat at the same dimension;
4. bytes per vector of every index (its faiss serialisation / N).

    python benchmarks/search.py                            # 1M vectors, a few minutes on 2 cores
    python benchmarks/search.py --n 100000                 # quicker
    python benchmarks/search.py --data continuous --dims 128 --bits 64
"""
from __future__ import annotations

import argparse
import time

import numpy as np

LATENT_DIM = 32
NOISE = 0.3
GEN_CHUNK = 100_000
SINGLE_QUERIES = 20
ITQ_TRAIN_ROWS = 20_000  # ITQ converges on far fewer rows than IVF/PQ training needs
ITQ_ITERATIONS = 20
REFINE_K_FACTOR = 8
GEN_SEED = 1234  # the object model (shared by all splits); --seed varies the draws


def objects(n: int, d: int, seed: int) -> np.ndarray:
    """``n`` L2-normalised rows from one low-rank + noise model (the same model for every split)."""
    mix = np.random.default_rng(GEN_SEED + d).standard_normal((LATENT_DIM, d)).astype(np.float32)
    scale = np.linspace(1.0, 0.3, LATENT_DIM, dtype=np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, GEN_CHUNK):
        m = min(GEN_CHUNK, n - start)
        x = (rng.standard_normal((m, LATENT_DIM), dtype=np.float32) * scale) @ mix
        x += NOISE * np.sqrt(LATENT_DIM / 3) * rng.standard_normal((m, d), dtype=np.float32)
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def views_of(base: np.ndarray, which: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """Noisy, re-normalised copies ``base[which] + noise·g/√d`` (chunked to bound memory)."""
    d = base.shape[1]
    rng = np.random.default_rng(seed)
    out = np.empty((len(which), d), dtype=np.float32)
    for start in range(0, len(which), GEN_CHUNK):
        idx = which[start : start + GEN_CHUNK]
        x = base[idx] + noise / np.sqrt(d) * rng.standard_normal((len(idx), d), dtype=np.float32)
        out[start : start + len(idx)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def make_data(args, d: int):
    """``(xb, xq, xtrain)`` for one dimension; the three splits are disjoint draws."""
    s = 10 * args.seed
    if args.data == "continuous":
        return objects(args.n, d, s + 1), objects(args.nq, d, s + 2), objects(args.ntrain, d, s + 3)
    n_obj = max(1, args.n // args.views)
    base = objects(n_obj, d, s + 1)
    xb = views_of(base, np.repeat(np.arange(n_obj), args.views)[: args.n], args.view_noise, s + 2)
    xq = views_of(base, np.random.default_rng(s + 3).integers(0, n_obj, args.nq), args.view_noise, s + 4)
    learn = objects(max(1, args.ntrain // args.views), d, s + 5)  # other objects
    xtrain = views_of(learn, np.repeat(np.arange(len(learn)), args.views), args.view_noise, s + 6)
    return xb, xq, xtrain


def best_time(fn, repeats: int):
    """Warm up once, then the best wall time of ``repeats`` calls; returns (result, seconds)."""
    out = fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def single_query_ms(search_one, xq) -> float:
    n = min(SINGLE_QUERIES, len(xq))
    search_one(xq[:1])
    start = time.perf_counter()
    for i in range(n):
        search_one(xq[i : i + 1])
    return 1e3 * (time.perf_counter() - start) / n


def row(name, size, bytes_per_vector, batch_s, nq, recall=None, single_ms=None, build_s=None, note=""):
    return {"method": name, "d/bits": size, "bytes/vec": bytes_per_vector, "ms/q batch": 1e3 * batch_s / nq,
            "ms/q single": single_ms, "q/s batch": nq / batch_s, "recall@k": recall, "build s": build_s, "note": note}


def print_table(rows):
    header = list(rows[0])
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else ("" if v is None else str(v))  # noqa: E731
    widths = [max(len(h), *(len(fmt(r[h])) for r in rows)) for h in header]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(fmt(r[h]).ljust(w) for h, w in zip(header, widths)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="database vectors")
    parser.add_argument("--nq", type=int, default=100, help="queries")
    parser.add_argument("--ntrain", type=int, default=50_000, help="learning rows (IVF / PQ training; ITQ uses 20k)")
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 512], help="float dimensions")
    parser.add_argument("--bits", type=int, nargs="+", default=[64, 128], help="code lengths")
    parser.add_argument("--data", choices=["views", "continuous"], default="views")
    parser.add_argument("--views", type=int, default=10, help="views per object (--data views)")
    parser.add_argument("--view-noise", type=float, default=0.5, help="view noise (--data views)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--target-recall", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="faiss/torch threads (default 1: on a shared machine, OpenMP barriers wait for "
                             "descheduled threads and make multi-threaded timings erratic)")
    args = parser.parse_args(argv)

    import faiss
    import torch

    from threadpoolctl import threadpool_limits

    # NumPy's OpenBLAS too: its threaded LAPACK (ITQ's SVDs, PCA's eigh) crawls on a busy machine
    threadpool_limits(args.threads)
    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)

    from retrievalkit import hashing
    from retrievalkit import index as rki

    k, nq = args.k, args.nq
    print(f"data={args.data} n={args.n:,} nq={nq} ntrain={args.ntrain:,} k={k}; faiss {faiss.__version__} "
          f"with {faiss.omp_get_max_threads()} threads, torch {torch.get_num_threads()} threads")
    rows, ratios = [], []
    for d in args.dims:
        t0 = time.perf_counter()
        xb, xq, xtrain = make_data(args, d)
        print(f"\n[d={d}] data generated in {time.perf_counter() - t0:.1f} s")

        start = time.perf_counter()
        flat = rki.build_index("flat", xb)
        build_s = time.perf_counter() - start
        (_, gt), flat_s = best_time(lambda: rki.search(flat, xq, k), args.repeats)
        flat_single = single_query_ms(lambda q: rki.search(flat, q, k), xq)
        flat_bpv = rki.index_bytes(flat) / args.n
        rows.append(row("flat IP (exact)", d, flat_bpv, flat_s, nq, 1.0, flat_single, build_s))
        del flat
        print(f"  flat IP: {nq / flat_s:.0f} q/s")

        for n_bits in args.bits:
            start = time.perf_counter()
            itq = hashing.ITQ(n_bits, n_iter=ITQ_ITERATIONS, seed=args.seed).fit(xtrain[:ITQ_TRAIN_ROWS])
            fit_s = time.perf_counter() - start
            start = time.perf_counter()
            db_codes, q_codes = itq.encode(xb), itq.encode(xq)
            enc_s = time.perf_counter() - start
            start = time.perf_counter()
            index = hashing.binary_index(db_codes)
            add_s = time.perf_counter() - start
            _, raw_s = best_time(lambda: index.search(q_codes, k), args.repeats)
            (_, ids), stable_s = best_time(lambda: hashing.hamming_search(q_codes, index, k), args.repeats)
            single = single_query_ms(lambda q: index.search(q, k), q_codes)
            recall = rki.knn_recall(ids, gt, k)
            bpv = rki.index_bytes(index) / args.n
            rows.append(row("Hamming ITQ, faiss raw", n_bits, bpv, raw_s, nq, recall, single, add_s,
                            f"ITQ fit {fit_s:.1f}s, encode {enc_s:.1f}s"))
            rows.append(row("Hamming ITQ, stable ties", n_bits, bpv, stable_s, nq, recall))
            ratios.append(f"Hamming {n_bits}-bit (binary flat) vs float flat IP {d}-d: {flat_s / raw_s:.1f}x q/s "
                          f"({flat_s / stable_s:.1f}x with stable ties; single query {flat_single / single:.1f}x), "
                          f"{flat_bpv / bpv:.0f}x less memory; Hamming top-{k} recall vs float = {recall:.3f}")
            print(f"  Hamming {n_bits} bits: {nq / raw_s:.0f} q/s, recall {recall:.3f}")
            del index, db_codes

        if d == args.dims[0]:
            start = time.perf_counter()
            ivfpq = rki.build_index("ivf_pq", xb, xtrain=xtrain)
            ivfpq_s = time.perf_counter() - start
            # The re-ranked variant reuses the built IVF-PQ: it only adds 8-bit vectors (trained on
            # the learning rows) — what build_index("ivf_pq", ..., refine="sq8") builds in one go.
            start = time.perf_counter()
            refined = faiss.IndexRefine(ivfpq, rki.build_index("sq8", xb, xtrain=xtrain))
            refine_s = ivfpq_s + time.perf_counter() - start
            ivf = faiss.extract_index_ivf(ivfpq)
            for label, index, build_s, runtime in (("IVF-PQ", ivfpq, ivfpq_s, {}),
                                                   ("IVF-PQ + SQ8 re-rank", refined, refine_s, {"k_factor": REFINE_K_FACTOR})):
                bpv = rki.index_bytes(index) / args.n
                found, sweep, nprobe = None, [], 1
                while nprobe <= ivf.nlist:
                    rki.search(index, xq, k, nprobe=nprobe, **runtime)  # warm-up
                    res = rki.measure_search(index, xq, k, gt, single_queries=SINGLE_QUERIES, repeats=args.repeats,
                                             nprobe=nprobe, **runtime)
                    sweep.append(f"{nprobe}:{res[f'recall@{k}']:.3f}")
                    if res[f"recall@{k}"] >= args.target_recall:
                        found = nprobe
                        break
                    nprobe *= 2
                print(f"  {label} (nlist={ivf.nlist}, {ivf.code_size}-byte PQ codes, built in {build_s:.0f} s) "
                      f"nprobe:recall@{k} {' '.join(sweep)}")
                batch_s = res["ms_per_query_batch"] * nq / 1e3
                note = (f"nprobe={found}" if found else f"nprobe up to {nprobe // 2}: below target") \
                    + (f", k_factor={runtime['k_factor']}" if runtime else "")
                rows.append(row(label, d, bpv, batch_s, nq, res[f"recall@{k}"], res["ms_per_query_single"], build_s, note))
                if found:
                    ratios.append(f"{label} vs flat IP {d}-d at recall@{k} = {res[f'recall@{k}']:.3f} (nprobe={found}): "
                                  f"{flat_s / batch_s:.1f}x q/s batch, {flat_single / res['ms_per_query_single']:.1f}x "
                                  f"single-query, {flat_bpv / bpv:.1f}x less memory")
                else:
                    ratios.append(f"{label} {d}-d: recall@{k} never reaches {args.target_recall} "
                                  f"(best {res[f'recall@{k}']:.3f}): PQ's quantisation error caps it; it needs more "
                                  f"bytes per code (pq_m) or more re-ranked candidates (k_factor)")
            del ivfpq, refined
        del xb

    print()
    print_table(rows)
    print()
    for line in ratios:
        print("*", line)
    print("\nTimings are wall clock on whatever else shares this machine; compare rows of one run only.")


if __name__ == "__main__":
    main()
