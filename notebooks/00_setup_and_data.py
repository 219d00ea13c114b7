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
# # 00 · Setup, data and metrics
#
# **Goals.** Load the default dataset and see its retrieval protocol; understand how a ranking is
# scored (the two AP conventions of the literature); run a first, handcrafted baseline and look
# at what it retrieves.
#
# **Survey.** §2.1 (the CBIR pipeline of Figure 2.1), §2.5.1 (datasets), §2.5.2 (metrics,
# Eqs. 2.20–2.21).
#
# **Prerequisites.** `make setup` (or `pip install -e .`) and the COIL-100 archive, fetched by
# `retrievalkit datasets fetch coil100` — or found in a lab mirror named by `RETRIEVALKIT_MIRROR`.

# %%
import numpy as np
from numpy.testing import assert_allclose

import retrievalkit as rk

# %% tags=["parameters"]
SMALL = rk.config.SMALL  # RETRIEVALKIT_SMALL=1 → a 10-object test split, so this runs in seconds
TEST_OBJECTS = range(51, 61) if SMALL else None  # None → the full test split (objects 51–100)

# %% [markdown]
# ## 1 · The datasets
#
# Every benchmark of the survey's §2.5.1 is registered, with its official sources and checksums.
# Only COIL-100 is needed for the notebooks; the others are fetched on demand (they are large).

# %%
import pandas as pd

from retrievalkit.datasets import download, manifest

table = pd.DataFrame(manifest.table())
table["present"] = [download.is_present(name) for name in table["name"]]
table[["name", "title", "images", "queries", "download_bytes", "present"]]

# %% [markdown]
# ## 2 · The default protocol on COIL-100
#
# COIL-100 photographs 100 objects on a turntable every 5°. We use it like an instance-retrieval
# benchmark: objects 1–50 form the **learning split** (anything that learns — whitening, codebooks,
# hashing, fine-tuning — sees only these), objects 51–100 the **test split**. Each test object
# contributes four queries (poses 0°, 90°, 180°, 270°); a query's positives are the other 71 views
# of its object, and the query itself is *junk*: removed from its own ranking.
#
# Like ROxford's Easy/Hard protocols, we also score only near views (≤ 30° away: *easy*) or only
# far views (≥ 60°: *hard*), ignoring the other views of the object in each case.

# %%
coil = rk.datasets.load("coil100", split="test", objects=TEST_OBJECTS)
coil

# %%
q = 0
positives, junk = coil.ground_truth("all")[q]
easy, _ = coil.ground_truth("easy")[q]
hard, _ = coil.ground_truth("hard")[q]
print(f"query {coil.query_paths[q].name}: {len(positives)} positives, {len(easy)} easy, {len(hard)} hard; junk = {junk}")
assert len(positives) == 71 and junk.tolist() == [coil.query_db_index[q]]

# %% [markdown]
# ## 3 · Scoring a ranking: two APs
#
# Average precision summarises a ranking by the precision reached at each relevant item (Eq. 2.20).
# The survey's formula is a *finite sum*: add the precision at each hit, divide by the number of
# relevant items. The Oxford/Paris evaluation code — and hence most instance-retrieval papers —
# integrates the precision–recall curve with the *trapezoid* rule instead: each hit contributes the
# mean of the precision just before and just after it. Take three relevant items found at
# (0-based) ranks 0, 2 and 5:

# %%
ranks = np.array([0, 2, 5])
hits = np.arange(1, len(ranks) + 1)            # 1st, 2nd, 3rd relevant item
after = hits / (ranks + 1)                      # precision once the hit is counted
before = np.where(ranks > 0, (hits - 1) / np.maximum(ranks, 1), 1.0)  # precision just before it
finite_sum = after.mean()
trapezoid = ((before + after) / 2).mean()
print(f"finite sum {finite_sum:.4f}   trapezoid {trapezoid:.4f}")

assert_allclose(finite_sum, rk.evaluate.ap_from_ranks(ranks, mode="finite"))
assert_allclose(trapezoid, rk.evaluate.ap_from_ranks(ranks, mode="trapezoid"))

# %% [markdown]
# The trapezoid value is lower: it charges each hit for the misses just before it. Numbers from
# the two conventions are not comparable, so every table here says which one it reports
# (`mAP` = trapezoid, `mAP_finite` = finite sum).

# %% [markdown]
# ## 4 · A handcrafted baseline: colour histograms
#
# Before deep features, a global colour histogram was a standard CBIR descriptor. We quantise HSV
# into 8×4×4 cells, take the square root of the normalised counts and L2-normalise: the inner
# product of two such vectors is then the Bhattacharyya coefficient of the histograms.

# %%
from retrievalkit.datasets.images import read_image

image = read_image(coil.query_paths[0])
hsv = np.asarray(image.convert("HSV")).reshape(-1, 3).astype(int)
cells = hsv * np.array([8, 4, 4]) // 256
hist = np.zeros((8, 4, 4))
np.add.at(hist, (cells[:, 0], cells[:, 1], cells[:, 2]), 1)
mine = np.sqrt(hist.ravel() / hist.sum())
mine /= np.linalg.norm(mine)
assert_allclose(mine, rk.baselines.color_histogram(image), atol=1e-6)

# %%
from retrievalkit.experiments import baseline

results, ids = baseline.run(coil, progress=False)
results[["protocol", "queries", "mAP", "mAP_finite", "mP@1", "mP@5", "mP@10", "describe_ms_per_image"]]

# %% [markdown]
# ## 5 · What did it retrieve?
#
# Green frames are views of the query's object, red frames are other objects — the survey's
# Figure 2.1 in miniature.

# %%
fig = rk.figures.ranking_panel(coil, ids, queries=[0, 1, len(coil.query_paths) - 1], k=8)

# %% [markdown]
# ## 6 · UKBench and its N-S score
#
# UKBench (Nistér & Stewénius, CVPR 2006, [paper](https://doi.org/10.1109/CVPR.2006.264)) photographs each
# object four times; every image is a query and its *positives are the four images of its object, itself
# included*. The survey's Table 2.2–2.3 column "UKB" reports the **N-S score** (§2.5.2): how many of those four
# appear among the first four results, averaged over queries — 4 is perfect, and the query finding itself
# (it is in the database) already gives 1. Only ten sample images are here (`../shared/samples/ukbench`:
# objects 0 and 1 complete, object 2 with two of its four), so the scores below illustrate the metric, not
# a benchmark result; point `UKBENCH_IMAGES` at the `full/` folder of the real UKBench for the real one.

# %% tags=["parameters"]
from pathlib import Path

UKBENCH_IMAGES = Path("../../shared/samples/ukbench")

# %%
import shutil
import tempfile

from retrievalkit.datasets import ukbench

if not any(UKBENCH_IMAGES.glob("ukbench*.jpg")):
    raise FileNotFoundError(f"no ukbench*.jpg images in {UKBENCH_IMAGES.resolve()}: set UKBENCH_IMAGES to a folder "
                            "of UKBench images (the samples live in ../shared/samples/ukbench beside the checkout)")
ukb_root = Path(tempfile.mkdtemp(prefix="ukbench-")) / "ukbench"
shutil.copytree(UKBENCH_IMAGES, ukb_root / ukbench.IMAGE_FOLDER)  # the loader's layout: <root>/full/
ukb = ukbench.load(root=ukb_root, download=False)
print(ukb.description)
print(f"skipped (missing members of an incomplete group): {[p.name for p, _ in ukb.skipped]}")

# %% [markdown]
# The N-S score by hand: rank the database for each query, look at its first four results, and count the
# images of the query's object among them.

# %%
ukb_features = {
    "colour histogram": np.stack([rk.baselines.color_histogram(read_image(p)) for p in ukb.db_paths]),
    "EfficientNet-Lite0 GeM": rk.features.extract(ukb, "efficientnet_lite0", pooling="gem", cache=False, progress=False)
                                         .get(pooling="gem"),
}
groups = np.asarray(ukb.db_labels)
ns_rows = []
for name, X in ukb_features.items():
    _, ranking = rk.index.exact_search(X[ukb.query_db_index], X)
    by_hand = (groups[ranking[:, :4]] == groups[ukb.query_db_index][:, None]).sum(axis=1)
    library = rk.evaluate.ns_score(ranking, ukb.ground_truth())
    assert_allclose(by_hand.mean(), library)
    ns_rows.append({"descriptor": name, "N-S score": library, "per query": by_hand.tolist()})
ns_table = pd.DataFrame(ns_rows)
ns_table

# %%
best = ns_table.loc[ns_table["N-S score"].idxmax()]
ceiling = np.mean([min(4, int((groups == g).sum())) for g in groups[ukb.query_db_index]])
reported = pd.concat([rk.survey.table_2_2(), rk.survey.table_2_3()])["ukbench_ns"].dropna()
print(f"Highest N-S here: {best['descriptor']} with {best['N-S score']:.2f}. The ceiling on these ten images is "
      f"{ceiling:.2f}, not 4, because object 2 has only two images. On the full UKBench the N-S scores that "
      f"Tables 2.2–2.3 print range from {reported.min():.2f} to {reported.max():.2f} ({len(reported)} methods).")

# %% [markdown]
# ## What to notice
#
# The sentences below are written from the table above, so they hold for whichever split ran.

# %%
by = results.set_index("protocol")["mAP"]
chance = len(positives) / coil.n_db  # a random ranking's AP is about the share of positives
print(f"All views: mAP {by['all']:.3f}, against about {chance:.3f} for a random ranking "
      f"({len(positives)} positives among {coil.n_db} images): {by['all'] / chance:.1f} times chance.")
print(f"Near views (easy) score {by['easy']:.3f}, far views (hard) {by['hard']:.3f}: colour barely changes "
      "with pose, but the visible side of an object does.")

# %% [markdown]
# In the panel above, the red frames are worth a look: they tend to share the query's dominant
# colours, whatever their shape — the motivation for the deep, shape-aware descriptors of the next
# notebooks.
#
# ## Exercises
#
# ### Exercise 1 (graded) · AP by the survey's formula
#
# Walk down a ranked list; at each position $k$ where a relevant item sits, read off the precision
# $P(k)$ of the first $k$ results. The survey's AP (Eq. 2.20) averages those precisions over the $R$
# relevant items:
#
# $$\mathrm{AP} = \frac{1}{R}\sum_{k=1}^{N} P(k)\,\mathrm{rel}(k), \qquad
#   P(k) = \frac{1}{k}\sum_{i=1}^{k}\mathrm{rel}(i),$$
#
# with $\mathrm{rel}(k) = 1$ when the $k$-th result is relevant, else 0; mAP (Eq. 2.21) is its mean
# over queries. This is the *finite sum* of section 3. Write it for one list (numpy only, no loop
# needed: `np.cumsum` gives the hits so far). The check compares your function with
# `rk.evaluate.ap_from_ranks(..., mode="finite")` on fresh lists.

# %% nbgrader={"grade": false, "grade_id": "average_precision", "locked": false, "schema_version": 3, "solution": true}
def my_average_precision(relevant):
    """Finite-sum AP (survey Eq. 2.20) of one ranked list.

    relevant: 1-D boolean array; relevant[k] is True when the (k+1)-th result is relevant (junk already
    removed). Every relevant item of the query is in the list, so R = relevant.sum() (at least 1).
    Returns a float.
    """
    ### BEGIN SOLUTION
    relevant = np.asarray(relevant, dtype=bool)
    precision_at_k = np.cumsum(relevant) / np.arange(1, len(relevant) + 1)
    return float(precision_at_k[relevant].sum() / relevant.sum())
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "average_precision_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
gen = np.random.default_rng(20)
cases = [(np.array([False, True, True, True]),)]  # relevant items at 0-based ranks 1, 2 and 3
for share in (0.1, 0.5, 0.9):
    relevant = gen.random(30) < share
    relevant[gen.integers(30)] = True  # at least one relevant item
    cases.append((relevant,))
rk.grading.check(my_average_precision,
                 lambda relevant: rk.evaluate.ap_from_ranks(np.flatnonzero(relevant), mode="finite"),
                 cases, name="my_average_precision")

# %% [markdown]
# **Question 1.** Give the histogram finer hue cells, 16×4×4 instead of 8×4×4. Does mAP go up, and
# which protocol gains most? The cell below describes the database again with the finer histogram
# (`describe_images` returns the descriptors *and* the list of images it could not read) and scores
# it like the baseline.

# %%
finer_db, skipped = rk.baselines.describe_images(
    coil.db_paths, lambda im: rk.baselines.color_histogram(im, (16, 4, 4)), progress=False)
assert not skipped, f"unreadable images: {skipped}"
_, finer_ids = rk.index.exact_search(finer_db[coil.query_db_index], finer_db)
finer = pd.DataFrame(rk.evaluate.evaluate(finer_ids, coil)).set_index("protocol")["mAP"]
gain = finer - by
print(pd.DataFrame({"8×4×4": by, "16×4×4": finer, "change": gain}).round(3).to_string())
print(f"Finer hue cells change mAP by {gain['all']:+.3f} on all views; the largest change is on "
      f"'{gain.abs().idxmax()}' ({gain[gain.abs().idxmax()]:+.3f}); hard still trails easy by "
      f"{finer['easy'] - finer['hard']:.3f}.")

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_finer_bins", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# Finer hue cells separate colours that 8 cells lump together, so two objects of similar but not
# equal colour stop matching; they also split one object's colour across neighbouring cells when
# lighting shifts its hue. Which effect wins is what the numbers printed above measure. Whatever
# the change, it is small next to the gap between easy and hard: more colour resolution does not
# tell the histogram what a far view of the object looks like, because the descriptor has no shape.

# %% [markdown]
# **Question 2.** Which query does colour serve worst, and why does it fail there?

# %%
import matplotlib.pyplot as plt

ap = rk.evaluate.average_precision(ids, coil.ground_truth("all"))
worst = int(np.nanargmin(ap))
worst_positives, worst_junk = coil.ground_truth("all")[worst]
ranking = ids[worst][~np.isin(ids[worst], worst_junk)]  # the ranking without the query itself
relevant = np.isin(ranking, worst_positives)
objects = np.array([coil.db_paths[i].name.split("__")[0] for i in ranking])
intruder = pd.Series(objects[:len(worst_positives)][~relevant[:len(worst_positives)]]).value_counts()
print(f"Query {worst} ({coil.query_paths[worst].name}) has the lowest AP, {ap[worst]:.3f} (the mean is "
      f"{np.nanmean(ap):.3f}). Its first other-object result is at rank {int(np.argmax(~relevant)) + 1}; "
      f"among its first {len(worst_positives)} results, {int((~relevant[:len(worst_positives)]).sum())} are "
      f"other objects, {intruder.iloc[0]} of them views of {intruder.index[0]}.")

shown = {"query": coil.query_paths[worst],
         f"its own view ranked last (#{int(np.flatnonzero(relevant)[-1]) + 1})": coil.db_paths[ranking[np.flatnonzero(relevant)[-1]]],
         f"best view of {intruder.index[0]} (#{int(np.argmax(objects == intruder.index[0])) + 1})":
             coil.db_paths[ranking[np.argmax(objects == intruder.index[0])]]}
fig, axes = plt.subplots(1, 3, figsize=(9, 3.4))
for ax, (title, path) in zip(axes, shown.items()):
    ax.imshow(read_image(path))
    ax.set_title(title, fontsize=9)
    ax.axis("off")
fig.tight_layout()

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_worst_query", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# The histogram only counts colours. The query's own far views show a different side of the object,
# with other proportions of its colours, while the other object named above is made of similar
# colours; so many of that object's views score higher than the query's own far views, and every one
# of them pushes a true match down the ranking. Nothing in a colour histogram records shape, so
# nothing can separate the two objects.

# %% [markdown]
# **Question 3.** UKBench's N-S score counts the query's own image among its four positives, and the
# query is in the database. Why is that a fair protocol there, when COIL-100 and the Oxford/Paris protocols
# remove the query from its own ranking (junk)?

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_ns_self", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# Every UKBench image is a query and each object has exactly four images, so counting the query itself
# adds the same 1 to every query's score: it shifts the scale (a system that finds only itself scores 1,
# not 0) without changing which system ranks first. Protocols with a varying number of positives, or
# with cropped queries that are not database images, remove the query instead, so that AP measures only
# what the system found.
