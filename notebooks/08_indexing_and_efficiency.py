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

import faiss
import matplotlib.pyplot as plt
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

# %% [markdown]
# **Papers.** Product quantisation: Jégou, Douze & Schmid, *Product quantization for nearest neighbor
# search* (TPAMI 2011, [doi:10.1109/TPAMI.2010.57](https://doi.org/10.1109/TPAMI.2010.57)). faiss: Johnson,
# Douze & Jégou, *Billion-scale similarity search with GPUs* ([arXiv:1702.08734](https://arxiv.org/abs/1702.08734)).
# HNSW: Malkov & Yashunin ([arXiv:1603.09320](https://arxiv.org/abs/1603.09320)). ITQ codes: Gong & Lazebnik
# (CVPR 2011, [doi:10.1109/CVPR.2011.5995432](https://doi.org/10.1109/CVPR.2011.5995432)). The survey:
# [arXiv:2101.11282](https://arxiv.org/abs/2101.11282).
#
# The survey gives no numbered equation for search itself (its Table 2.1 reports accuracy against time);
# the definitions below are the standard ones.

# %%
data = H.coil_data(offtheshelf.Coil(small=SMALL, progress=False))
data

# %% [markdown]
# ## 1 · Exact search, written by you
#
# For L2-normalised rows the cosine similarity is an inner product, so exact search scores every
# database row, $s_{qi} = \langle q, x_i\rangle$, and keeps the $k$ best:
# $$\mathrm{kNN}_k(q) = \operatorname*{arg\,top\text{-}k}_{i}\ \langle q, x_i\rangle .$$
# Ties need a rule, or two correct programs return different lists: the library sorts by score,
# best first, and breaks ties by the **lower id**; it returns `(scores, ids)`, each queries × k.

# %% nbgrader={"grade": false, "grade_id": "knn", "locked": false, "schema_version": 3, "solution": true}
def my_knn(queries, database, k):
    """Exact inner-product kNN: queries (Nq, D), database (N, D) -> (scores, ids), each (Nq, k),
    best first, equal scores -> lower id first."""
    ### BEGIN SOLUTION
    scores = queries @ database.T
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]      # stable: ties keep the lower id first
    return np.take_along_axis(scores, ids, axis=1), ids
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "knn_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
gen = np.random.default_rng(81)
cases = [(gen.normal(size=(4, 6)).astype(np.float32), gen.normal(size=(30, 6)).astype(np.float32), 5),
         # small integers: many exactly equal scores, so the tie rule matters
         (gen.integers(-1, 2, size=(5, 3)).astype(np.float32), gen.integers(-1, 2, size=(20, 3)).astype(np.float32), 8)]
rk.grading.check(my_knn, lambda q, db, k: rk.index.knn(q, db, k), cases, name="my_knn")

# %% [markdown]
# faiss's `IndexFlatIP` does the same with optimised kernels:

# %%
flat = rk.index.build_index("flat", data.x_db)
S, I = rk.index.search(flat, data.x_query, K)
S_exact, I_exact = rk.index.knn(data.x_query, data.x_db, K)
assert_allclose(S, S_exact, atol=1e-5)
print("recall@10 of faiss flat vs the library's exact search:", rk.index.knn_recall(I, I_exact, K))

# %% [markdown]
# **Recall@k against exact search** measures an approximate index without labels: with $A_q$ the $k$
# ids it returns for query $q$ and $E_q$ the exact $k$ nearest,
# $$\mathrm{recall@}k = \frac{1}{|Q|}\sum_{q\in Q}\frac{|A_q\cap E_q|}{k} .$$
# faiss pads a short result list with id $-1$, which never counts as found.

# %% nbgrader={"grade": false, "grade_id": "recall", "locked": false, "schema_version": 3, "solution": true}
def my_recall_at_k(ids, ground_truth_ids, k):
    """Mean over queries of |ids[:, :k] ∩ ground_truth_ids[:, :k]| / k; ids may contain -1 (no result)."""
    ### BEGIN SOLUTION
    hits = [len(set(a[:k]) & set(e[:k]) - {-1}) for a, e in zip(ids, ground_truth_ids)]
    return float(np.mean(hits) / k)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "recall_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
gen = np.random.default_rng(82)
exact_ids = np.stack([gen.permutation(50)[:10] for _ in range(6)])
approx = exact_ids.copy()
approx[:, 7:] = gen.integers(50, 60, size=(6, 3))                  # three wrong ids per query
approx[0, 9] = -1                                                 # a padded slot
shuffled = np.stack([gen.permutation(row) for row in exact_ids])   # same sets, another order
cases = [(approx, exact_ids, 10), (approx, exact_ids, 5), (shuffled, exact_ids, 10)]
rk.grading.check(my_recall_at_k, lambda a, e, k: rk.index.knn_recall(a, e, k), cases, name="my_recall_at_k")

# %% [markdown]
# **Product quantisation** (Jégou et al.) compresses a vector by cutting it into $M$ sub-vectors of
# $D/M$ numbers and storing, for each, only the id of the nearest of 256 sub-space centroids (one
# byte): $\mathrm{code}_m(x) = \arg\min_j \lVert x^{(m)} - c^{(m)}_j\rVert^2$. A 1280-d float vector
# (5,120 bytes) becomes $M$ bytes.

# %% nbgrader={"grade": false, "grade_id": "pq_encode", "locked": false, "schema_version": 3, "solution": true}
def my_pq_encode(X, codebooks):
    """PQ codes: X (N, D), codebooks (M, 256, D // M) -> (N, M) integer ids; sub-vector m of a row is
    X[:, m*D//M : (m+1)*D//M], encoded by its nearest centroid (squared Euclidean) in codebooks[m]."""
    ### BEGIN SOLUTION
    M, _, ds = codebooks.shape
    codes = [((X[:, None, m * ds:(m + 1) * ds] - codebooks[m][None]) ** 2).sum(-1).argmin(1) for m in range(M)]
    return np.stack(codes, axis=1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "pq_encode_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
def faiss_pq_encode(X, codebooks):
    M, n_centroids, ds = codebooks.shape
    pq = faiss.ProductQuantizer(M * ds, M, int(np.log2(n_centroids)))  # 8 bits: one byte per sub-space
    faiss.copy_array_to_vector(np.ascontiguousarray(codebooks, dtype=np.float32).ravel(), pq.centroids)
    return pq.compute_codes(np.ascontiguousarray(X, dtype=np.float32))


gen = np.random.default_rng(83)
cases = [(gen.normal(size=(20, d)).astype(np.float32), gen.normal(size=(m, 256, d // m)).astype(np.float32))
         for d, m in ((8, 2), (24, 4))]
rk.grading.check(my_pq_encode, faiss_pq_encode, cases, name="my_pq_encode")

# %% [markdown]
# **IVF** (an inverted file over k-means cells): the database is split into the Voronoi cells of
# `nlist` centroids learned on the learning split; a query scores only the rows of its `nprobe`
# nearest cells. The diagram shows it on a 2-D toy: a true neighbour that falls in an unprobed cell
# is lost.

# %%
rng = np.random.default_rng(8)
toy_db = np.concatenate([rng.normal(c, 0.7, (60, 2)) for c in ((-2, -1), (2, 0), (0, 2.5), (1, -2.5))])
toy_learn = np.concatenate([rng.normal(c, 0.7, (60, 2)) for c in ((-2, -1), (2, 0), (0, 2.5), (1, -2.5))])
cells = rk.embedding.KMeansCodebook(k=8, seed=0).fit(toy_learn, split="learn")
query = np.array([[0.2, 0.6]])
nprobe, k_toy = 2, 8
probed = np.argsort(((cells.centroids_ - query) ** 2).sum(1))[:nprobe]
db_cell = cells.assign(toy_db)
true_nn = np.argsort(((toy_db - query) ** 2).sum(1), kind="stable")[:k_toy]
visited = np.flatnonzero(np.isin(db_cell, probed))
ivf_nn = visited[np.argsort(((toy_db[visited] - query) ** 2).sum(1), kind="stable")[:k_toy]]

gx, gy = np.meshgrid(np.linspace(-5, 5, 300), np.linspace(-5, 5.5, 300))
grid_cell = cells.assign(np.c_[gx.ravel(), gy.ravel()].astype(np.float32)).reshape(gx.shape)
fig, ax = plt.subplots(figsize=(7.6, 5), layout="constrained")
ax.imshow(np.isin(grid_cell, probed), extent=(-5, 5, -5, 5.5), origin="lower", cmap="Greys", alpha=0.25, aspect="auto")
ax.contour(gx, gy, grid_cell, levels=np.arange(cells.k) + 0.5, colors="grey", linewidths=0.6)
ax.scatter(*toy_db.T, s=8, color="tab:blue", label="database rows")
ax.scatter(*cells.centroids_.T, marker="^", s=60, color="black", label="IVF centroids (learning split)")
ax.scatter(*toy_db[true_nn].T, s=70, facecolors="none", edgecolors="tab:green", lw=1.5, label=f"exact {k_toy}-NN")
ax.scatter(*toy_db[ivf_nn].T, s=14, marker="x", color="tab:red", label=f"IVF result, nprobe={nprobe}")
ax.scatter(*query.T, marker="*", s=250, color="gold", edgecolors="black", zorder=4, label="query")
ax.plot([], [], marker="s", ls="", color="lightgrey", label="probed cells (shaded)")
ax.set(xlim=(-5, 5), ylim=(-5, 5.5), title="IVF: search only the query's nearest cells", xlabel="$x_1$", ylabel="$x_2$")
ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
found = len(set(true_nn) & set(ivf_nn))
print(f"nprobe={nprobe} of {cells.k} cells: {len(visited)} of {len(toy_db)} rows scored, {found} of the {k_toy} exact "
      f"neighbours found (recall@{k_toy} = {found / k_toy:.2f}).")

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
# ## 5 · Re-ranking IVF-PQ with the full vectors
#
# `refine="flat"` keeps the float vectors beside the PQ codes and re-scores the `k_factor · k` best
# PQ candidates exactly.

# %%
refined = E.accuracy_time_memory(data, kinds=[("ivf_pq", {"nprobe": 8}),
                                              ("ivf_pq", {"nprobe": 8, "refine": "flat", "k_factor": 4})],
                                 hamming=(), small=SMALL, repeats=1, single_queries=5)
refined[["method", "recall@k", "ms_per_query_batch", "bytes_per_vector"]].round(4)

# %% [markdown]
# ## What to notice
#
# Computed from the tables above on this run:

# %%
t = table.set_index("method")
flat_ms, flat_bytes = t.loc["flat", "ms_per_query_batch"], t.loc["flat", "bytes_per_vector"]
print(f"• flat (exact) search: {flat_ms:.3f} ms per query in a batch over {len(data.x_db)} vectors.")
bigger = [m for m in t.index if m != "exact" and t.loc[m, "bytes_per_vector"] > flat_bytes]
print(f"• Rows storing more bytes per vector than flat ({flat_bytes:.0f}), overheads included: {', '.join(bigger) or 'none'}.")
binary = [m for m in t.index if m.startswith("hamming")]
smallest = t["bytes_per_vector"].idxmin()
print(f"• Most compact: {smallest} ({t.loc[smallest, 'bytes_per_vector']:.1f} bytes, recall@{K} "
      f"{t.loc[smallest, 'recall@k']:.3f}); binary rows' recall@{K}: "
      + ", ".join(f"{m} {t.loc[m, 'recall@k']:.3f} ({t.loc[m, 'bytes_per_vector']:.0f} B)" for m in binary) + ".")
r = refined.set_index("method")
print(f"• Re-ranking IVF-PQ: recall@{K} {r['recall@k'].iloc[0]:.3f} → {r['recall@k'].iloc[1]:.3f}, bytes per vector "
      f"{r['bytes_per_vector'].iloc[0]:.0f} → {r['bytes_per_vector'].iloc[1]:.0f}.")

# %% [markdown]
# Timings on a shared machine are noisy: compare rows measured together, never across runs.
#
# ## 6 · The contrast: approximate vs exact search
#
# Here the headline is a trade-off, not a winner: how much recall (and mAP) each approximate index
# gives up for how much speed. On a database of a few hundred vectors the speed ratios are mostly
# noise and fixed overheads; section 4's larger databases are where they start to mean something.

# %%
mode = "SMALL" if SMALL else "full"
approx = t.drop(index=["exact", "flat"])
for m, row in approx.iterrows():
    print(f"{m:22s} recall@{K} {row['recall@k']:.3f}, {flat_ms / row['ms_per_query_batch']:6.1f}× the speed of flat, "
          f"mAP {row['mAP'] - t.loc['flat', 'mAP']:+.3f} vs exact")
worst = (approx["mAP"] - t.loc["flat", "mAP"]).idxmin()
drop = t.loc["flat", "mAP"] - approx.loc[worst, "mAP"]
if drop >= 0.03:
    print(f"On COIL-100 ({mode} mode) approximate search can cost mAP: {worst} loses {drop:.3f} against exact search "
          f"({approx.loc[worst, 'mAP']:.3f} vs {t.loc['flat', 'mAP']:.3f}).")
else:
    print(f"On COIL-100 ({mode} mode) no approximate index loses 0.03 mAP against exact search (largest loss {drop:.3f}, "
          f"{worst}): on this data the mAP difference is not evidence either way; recall and time are the contrast.")

# %% [markdown]
# ## Questions
#
# **Question 1.** An index's recall@10 against exact search can be well below 1 while its mAP is
# almost that of exact search (compare the two columns above). How can both be true?

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_recall_map", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# Recall@k against exact search asks for the *same* k neighbours; mAP asks whether *relevant* images
# come first. If the approximate index swaps a true neighbour for another image of the same object
# (or reorders images of the query's object, all of which are relevant), recall drops while mAP
# barely moves. On COIL-100 each object has many near-identical views, so many different top-10 lists
# are equally good for mAP. Recall@k measures the index; mAP measures the retrieval task.

# %% [markdown]
# **Question 2.** Why must the IVF centroids and the PQ codebooks be trained on the learning split,
# even though they "only" affect speed and memory?

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_train_split", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# They also affect *which* results come back: cells and codebooks fitted to the database itself adapt
# to the test distribution (cells split exactly the database's clusters, codebooks quantise exactly its
# vectors), so the measured recall and mAP would be better than what the system gets on images it has
# not seen. A real index is trained once and then receives new images; the learning split plays that
# role. `build_index` refuses to train without `xtrain` for this reason.

# %% [markdown]
# **Question 3.** In the IVF diagram some exact neighbours may lie in an unprobed cell. When does that
# happen, and what are the two knobs that trade it against speed?

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_nprobe", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# A query near a cell boundary has neighbours on both sides; if the other side's centroid is not among
# its `nprobe` nearest, those neighbours are never scored. Raising `nprobe` visits more cells (higher
# recall, more work, as section 2 printed); fewer, larger cells (smaller `nlist`) make boundaries rarer
# but each probe scores more rows. At `nprobe = nlist` IVF is exact search again.

# %% [markdown]
# **Question 4.** Section 5 printed what re-ranking does to IVF-PQ. Why does it recover recall, and
# why does it cost the memory PQ saved?

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_refine", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# PQ scores are approximate (each sub-vector replaced by its centroid), so true neighbours can rank
# just below the top k. Taking `k_factor · k` candidates and re-scoring them with the exact vectors
# restores the correct order among them, so recall approaches the candidate list's recall. But the
# exact vectors must be stored to re-score, so the index holds the float vectors as well as the codes:
# bytes per vector grow past the flat index's.
