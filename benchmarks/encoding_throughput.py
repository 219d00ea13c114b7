"""Encoding throughput of VLAD and Fisher vectors: vectorised batch vs a per-image Python loop (a benchmark, not a test).

Survey §2.3.2.2 ("FV … require more memory"); taught in notebooks/05_embeddings_bow_vlad_fv.

Two realistic shapes, random data with fixed seeds (only the sizes matter for speed):

* ``conv``: 49 columns of 1280-d per image (EfficientNet-Lite0's last map at 224 px, 7×7), L2-normalised;
* ``sift``: SIFT-like 128-d non-negative descriptors, 300 per image on average (150–450, so
  images differ in length and the padded batches are exercised).

Codebooks are built from sampled descriptors (k-means centroids; a GMM with those means, the data's
variance, equal weights), so only encoding is timed. For each encoder the script prints
descriptors/s of ``encoder.encode(batch)`` (one call for the whole batch) and of a straightforward
loop over images (NumPy inside each image: nearest word / posteriors, per-word sums, the same
normalisations), their ratio, the largest difference between the two (L2-normalised, before the
power step, first 50 images), and the memory of one encoded image (``K·D·4`` bytes for VLAD,
``2·K·D·4`` for FV with float32).

    python benchmarks/encoding_throughput.py                  # 1000 images, K=64, both shapes
    python benchmarks/encoding_throughput.py --n-images 200 --shapes sift
"""
from __future__ import annotations

import argparse
import time

import numpy as np

SHAPES = {"conv": dict(per_image=49, dim=1280), "sift": dict(per_image=300, dim=128)}


def make_batch(shape: str, n_images: int, seed: int = 0):
    from retrievalkit.embedding import LocalDescriptors, conv_columns

    rng = np.random.default_rng(seed)
    spec = SHAPES[shape]
    if shape == "conv":
        maps = np.maximum(rng.normal(size=(n_images, spec["dim"], 7, 7)).astype(np.float32), 0)
        return conv_columns(maps, normalize=True)
    counts = rng.integers(spec["per_image"] // 2, spec["per_image"] * 3 // 2 + 1, size=n_images)
    rows = rng.gamma(0.6, 30.0, size=(int(counts.sum()), spec["dim"])).astype(np.float32)
    return LocalDescriptors(rows, np.repeat(np.arange(n_images), counts), n_images)


def make_codebooks(local, k: int, seed: int = 0):
    from retrievalkit.embedding import GMMCodebook, KMeansCodebook

    rng = np.random.default_rng(seed)
    X = local.descriptors
    centres = X[rng.choice(len(X), size=k, replace=False)].astype(np.float64)
    variances = np.tile(X[rng.choice(len(X), size=min(len(X), 20000), replace=False)].var(axis=0) + 1e-4, (k, 1))
    return KMeansCodebook.from_centroids(centres), GMMCodebook.from_params(np.full(k, 1 / k), centres, variances)


# --------------------------------------------------------------------------- the straightforward loops
def _l2(v, eps=1e-6):
    return v / (np.linalg.norm(v) + eps)


def loop_vlad(local, book, alpha=0.5):
    C = book.centroids_
    k, d = C.shape
    c_sq = (C * C).sum(axis=1)
    out = np.zeros((local.n_images, k * d), np.float32)
    for i, X in enumerate(local.to_list()):
        if len(X) == 0:
            continue
        words = np.argmin((X * X).sum(axis=1, keepdims=True) - 2 * X @ C.T + c_sq, axis=1)
        v = np.zeros((k, d), np.float32)
        np.add.at(v, words, X - C[words])
        v /= len(X)
        v /= np.linalg.norm(v, axis=1, keepdims=True) + 1e-6
        v = v.ravel()
        out[i] = _l2(np.sign(v) * np.abs(v) ** alpha)
    return out


def loop_fisher(local, gmm, alpha=0.5):
    w, mu, var = gmm.weights_, gmm.means_.astype(np.float32), gmm.variances_.astype(np.float32)
    sigma = np.sqrt(var)
    k, d = mu.shape
    log_const = (np.log(w) - 0.5 * np.log(2 * np.pi * var.astype(np.float64)).sum(axis=1)).astype(np.float32)
    out = np.zeros((local.n_images, 2 * k * d), np.float32)
    for i, X in enumerate(local.to_list()):
        T = len(X)
        if T == 0:
            continue
        log_p = np.empty((T, k), np.float32)
        for j in range(k):
            log_p[:, j] = log_const[j] - 0.5 * (((X - mu[j]) ** 2) / var[j]).sum(axis=1)
        gamma = np.exp(log_p - log_p.max(axis=1, keepdims=True))
        gamma /= gamma.sum(axis=1, keepdims=True)
        g_mu = np.empty((k, d), np.float32)
        g_sigma = np.empty((k, d), np.float32)
        for j in range(k):
            z = (X - mu[j]) / sigma[j]
            g_mu[j] = gamma[:, j] @ z / (T * np.sqrt(w[j]))
            g_sigma[j] = gamma[:, j] @ (z * z - 1) / (T * np.sqrt(2 * w[j]))
        v = np.concatenate([g_mu.ravel(), g_sigma.ravel()])
        out[i] = _l2(np.sign(v) * np.abs(v) ** alpha)
    return out


def best_of(fn, repeats):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-images", type=int, default=1000)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--repeats", type=int, default=1, help="best of this many runs (vectorised side)")
    parser.add_argument("--loop-repeats", type=int, default=1, help="best of this many runs (loop side)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)

    import torch

    from retrievalkit.embedding import VLAD, FisherVector

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}; timings are wall-clock on whatever else the machine runs")
    header = f"{'shape':6} {'encoder':6} {'desc/img':>8} {'D':>5} {'K':>3} {'vectorised desc/s':>18} {'loop desc/s':>12} {'ratio':>6} {'max |diff|':>10} {'bytes/img':>10}"
    print(header)
    for shape in args.shapes:
        local = make_batch(shape, args.n_images)
        book, gmm = make_codebooks(local, args.k)
        m, d = local.n_descriptors, local.dim
        warm = local.select(range(min(4, local.n_images)))  # first calls load faiss / torch kernels: not timed
        for name, encoder, loop in (("VLAD", VLAD(book), loop_vlad), ("FV", FisherVector(gmm), loop_fisher)):
            encoder.encode(warm)
            model = book if name == "VLAD" else gmm
            fast_s, _ = best_of(lambda: encoder.encode(local), args.repeats)
            loop_s, _ = best_of(lambda: loop(local, model), args.loop_repeats)
            # Agreement is checked before the signed square root, which turns a 1e-8 rounding
            # difference in a near-zero entry into 1e-4.
            check = local.slice_images(0, 50)
            no_power = type(encoder)(model, alpha=None).encode(check)
            diff = float(np.abs(no_power - loop(check, model, alpha=1.0)).max())
            print(f"{shape:6} {name:6} {m / local.n_images:8.0f} {d:5d} {args.k:3d} {m / fast_s:18,.0f} {m / loop_s:12,.0f} "
                  f"{loop_s / fast_s:6.1f} {diff:10.1e} {encoder.dim * 4:10,d}")

if __name__ == "__main__":
    main()
