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
# ## What to notice
#
# * The baseline is far from useless on COIL-100: many objects have a distinctive colour.
# * *Easy* (near views) is much easier than *hard* (≥ 60° away) — colour barely changes with
#   pose, but the visible side of an object does; hard views are where shape has to matter.
# * Red frames tend to be objects of the same colour and a different shape: the motivation for
#   the deep, shape-aware descriptors of the next notebooks.
#
# ## Exercises
#
# 1. Change the histogram to 16×4×4 bins. Does mAP go up? Which protocol gains most?
# 2. Compute AP for relevant items at ranks `[1, 2, 3]` by hand with both conventions, then check
#    with `rk.evaluate.ap_from_ranks`.
# 3. Find the query with the lowest AP and show its panel. Why does colour fail there?
#
# <details><summary>Solutions</summary>
#
# 1. `rk.baselines.describe_images(coil.db_paths, lambda im: rk.baselines.color_histogram(im, (16, 4, 4)))`,
#    then `rk.index.exact_search` and `rk.evaluate.evaluate`. Finer hue bins separate similar
#    colours, so the mAP usually moves a little; the hard protocol still lags far behind easy.
# 2. Finite sum: (1/2 + 2/3 + 3/4) / 3 = 0.6389. Trapezoid: ((0 + 1/2)/2 + (1/2 + 2/3)/2 +
#    (2/3 + 3/4)/2) / 3 = 0.5139.
# 3. `ap = rk.evaluate.average_precision(ids, coil.ground_truth("all")); q = int(np.nanargmin(ap))`
#    then `rk.figures.ranking_panel(coil, ids, [q])` — typically a grey or white object whose
#    histogram matches many others.
#
# </details>
