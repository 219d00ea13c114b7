# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---


# %% [markdown]
# # 08 · Indexing and efficiency: accuracy, time and memory
#
# **Goals.** Compare exact search with faiss's approximate index kinds and with Hamming search over
# binary codes: recall@k against exact search, mAP, milliseconds per query and bytes per vector — the
# analogue of the survey's Table 2.1 — then grow the database with synthetic distractors.
#
# **Survey.** §2.1.2 challenge 3 (efficiency), §2.5.3 and Table 2.1 (accuracy against time per query),
# §2.3.2.4 (binary codes).
#
# **Prerequisites.** notebooks/07 (hashing). **The rule:** IVF centroids, PQ codebooks, SQ ranges, PCA
# and hash functions are trained on the learning split (objects 1–50), never on the database searched.

# %%
import time

import numpy as np
from numpy.testing import assert_allclose

import retrievalkit as rk
from retrievalkit import figures_hashing as fh
from retrievalkit.experiments import efficiency as E
from retrievalkit.experiments import hashing as H
from retrievalkit.experiments import offtheshelf

# %% tags=["parameters"]
SMALL = rk.config.SMALL
K = 10
SIZES = E.SMALL_SCALE_SIZES if SMALL else E.SCALE_SIZES

# %%
data = H.coil_data(offtheshelf.Coil(small=SMALL, progress=False))
data

# %% [markdown]
# ## 1 · Exact search, by hand and with faiss
#
# For L2-normalised rows the cosine similarity is an inner product, so exact search is one matrix
# product and a sort. faiss's `IndexFlatIP` does the same with optimised kernels.

# %%
scores = data.x_query @ data.x_db.T
mine = np.argsort(-scores, axis=1, kind="stable")[:, :K]
flat = rk.index.build_index("flat", data.x_db)
S, I = rk.index.search(flat, data.x_query, K)
assert_allclose(S, np.take_along_axis(scores, mine, 1), atol=1e-5)
print("recall@10 of faiss flat vs numpy:", rk.index.knn_recall(I, mine, K))

# %% [markdown]
# ## 2 · Recall@k of approximate indexes
#
# IVF visits only `nprobe` of its lists; HNSW walks a graph; SQ8 and PQ store compressed vectors. Each
# trades some recall for speed or memory. Ground truth = exact search.

# %%
gt = rk.index.exact_search(data.x_query, data.x_db, K)[1]
for nprobe in (1, 4, 16):
    row = rk.index.measure("ivf_flat", data.x_db, data.x_query, data.x_learn, k=K, ground_truth_ids=gt,
                           nprobe=nprobe, single_queries=10)
    print(f"ivf_flat nprobe={nprobe:2d}: recall@{K} {row[f'recall@{K}']:.3f}, {row['ms_per_query_batch']:.3f} ms/query")

# %% [markdown]
# ## 3 · The accuracy–time–memory table (Table 2.1 analogue)

# %%
table = E.accuracy_time_memory(data, small=SMALL, repeats=1 if SMALL else 3, single_queries=20 if SMALL else 50)
table[["method", "mAP", "recall@k", "ms_per_query_batch", "ms_per_query_single", "bytes_per_vector"]].round(4)

# %%
rk.survey.table_2_1()

# %%
fig = fh.pareto(table)

# %% [markdown]
# ## 4 · Scale: real database + synthetic distractors
#
# Descriptors are reduced to 128-d by a PCA learned on objects 1–50; distractors are drawn from a
# Gaussian fitted to the learning rows in that space (so they look like real descriptors of other
# objects) and appended to the real test database.

# %%
start = time.perf_counter()
sc = E.scale(data, sizes=SIZES, small=SMALL, single_queries=5 if SMALL else 20)
print(f"{time.perf_counter() - start:.1f} s")
sc[["n", "method", "ms_per_query_batch", "bytes_per_vector", "index_MB", "recall@k", "mAP@100"]].round(4)

# %%
fig = fh.scale_curves(sc)

# %% [markdown]
# ## What to notice
#
# * On a few thousand vectors everything is fast: a flat index is exact and costs well under a
#   millisecond per query. Approximate indexes pay off only when N grows (section 4).
# * Bytes per vector include fixed training overheads (a PCA matrix, IVF centroids): on a small database
#   they dominate, which is why `pca_pq` can look *bigger* than `flat` here.
# * Binary codes are the most compact (8 bytes for 64 bits) but lose the most recall; ITQ with 256 bits
#   recovers most of it for 32 bytes.
# * Timings on a shared 2-core machine are noisy: compare rows measured together, never across runs.
#
# ## Exercises
#
# 1. Add `("ivf_pq", {"nprobe": 8, "refine": "flat", "k_factor": 4})` to the table. What happens to recall
#    and to bytes per vector?
# 2. Train the IVF index on the database instead of the learning split. Why is this a protocol
#    violation even though it "only" affects speed?
#
# <details><summary>Solutions</summary>
#
# 1. `E.accuracy_time_memory(data, kinds=[("ivf_pq", {"nprobe": 8, "refine": "flat", "k_factor": 4})], hamming=())`:
#    re-ranking with the full vectors restores almost all recall, but the refine index stores the
#    float vectors too, so memory is no longer saved.
# 2. The centroids would adapt to the test distribution, so the recall measured is better than what a
#    system would get on images it has not seen; `build_index` refuses to train without `xtrain` for this reason.
#
# </details>
