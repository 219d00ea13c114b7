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
# # 10 · Unsupervised fine-tuning: mining on manifolds, and pseudo-labels
#
# **Goals.** Build a kNN graph on off-the-shelf descriptors, diffuse similarities over it in a few
# lines (and check the result against the closed form and the library), use the gap between
# Euclidean and manifold rankings to mine positives and hard negatives *without labels*, and
# fine-tune with them; compare with a k-means pseudo-label baseline.
#
# **Survey.** §2.4.2 "Unsupervised fine-tuning", §2.4.2.1 "Mining samples with manifold learning"
# (Figure 2.11: affinity matrix → kNN graph → diffusion → positives/negatives for a verification
# loss, Eqs. 2.16–2.17); Table 2.3's unsupervised rows.
#
# **Prerequisites.** notebooks/09 (losses, the frozen-trunk trainer). **The rule:** no label is read to
# train or to choose anything; labels appear only to *measure* how good the mined pairs are and, as in
# every notebook, to score the test split (objects 51–100).

# %%
import numpy as np
import pandas as pd
from numpy.testing import assert_allclose

import retrievalkit as rk
from retrievalkit import figures_finetune as ff
from retrievalkit.experiments import finetune as E
from retrievalkit.experiments import offtheshelf
from retrievalkit.finetune import losses as L
from retrievalkit.finetune import trainer as T
from retrievalkit.finetune import unsupervised as U

# %% tags=["parameters"]
SMALL = rk.config.SMALL
ANCHORS = 200 if SMALL else 800

# %% [markdown]
# ## 1 · Diffusion on a kNN graph, by hand
#
# Two parallel arcs on the unit sphere, close to each other: an arc's end has many Euclidean
# neighbours on the *other* arc, but walking along the kNN graph stays on its own arc. With `S` the
# symmetrically normalised affinity of the kNN graph, iterate `f ← α S f + (1 − α) y` from the
# anchor's indicator `y` (a random walk that restarts at the anchor with probability `1 − α`). It
# converges to `(1 − α)(I − αS)⁻¹ y`.

# %%
t = np.linspace(0, 2, 120)
arcs = np.concatenate([np.stack([np.cos(t), np.sin(t), 0 * t], 1), np.stack([np.cos(t), np.sin(t), 0 * t + 0.08], 1)])
arcs /= np.linalg.norm(arcs, axis=1, keepdims=True)
arc = np.repeat([0, 1], 120)

k, gamma, alpha = 4, 3.0, 0.9
sim = arcs @ arcs.T
np.fill_diagonal(sim, -np.inf)
knn = np.argsort(-sim, axis=1)[:, :k]
A = np.zeros_like(sim)
for i in range(len(arcs)):
    A[i, knn[i]] = np.clip(sim[i, knn[i]], 0, None) ** gamma
A = np.maximum(A, A.T)
d = A.sum(1) ** -0.5
S = d[:, None] * A * d[None, :]
assert_allclose(U.knn_affinity(arcs, k, gamma).toarray(), S, atol=1e-12)

y = np.zeros((len(arcs), 1))
y[0] = 1  # the anchor: one end of the first arc
f = y.copy()
for _ in range(300):
    f = alpha * S @ f + (1 - alpha) * y
assert_allclose(f, (1 - alpha) * np.linalg.solve(np.eye(len(arcs)) - alpha * S, y), atol=1e-10)
assert_allclose(U.diffuse(U.knn_affinity(arcs, k, gamma), [0], alpha, 300), f, atol=1e-12)

# %% [markdown]
# Positives are close on the manifold but not among the Euclidean nearest; hard negatives are among
# the Euclidean nearest but far on the manifold (Iscen et al. 2018):

# %%
mined = U.manifold_mining(arcs, [0], k=k, k_pos=15, k_neg=20, k_manifold=30)
print("positives on the anchor's arc:", (arc[mined.positives[0]] == 0).mean(),
      "| negatives on the other arc:", (arc[mined.negatives[0]] == 1).mean())
euclid_top = np.argsort(-(arcs @ arcs[0]))[1:21]
print("Euclidean top-20 on the other arc:", (arc[euclid_top] == 1).mean(), "— what a Euclidean miner would call positive")

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.scatter(arcs[:, 0], arcs[:, 1] + 3 * arcs[:, 2], s=8, c=["tab:blue" if a == 0 else "tab:gray" for a in arc])
for rows, colour, label in ((mined.positives[0], "tab:green", "mined positives"), (mined.negatives[0], "tab:red", "mined negatives")):
    ax.scatter(arcs[rows, 0], arcs[rows, 1] + 3 * arcs[rows, 2], s=30, c=colour, label=label)
ax.scatter(arcs[0, 0], arcs[0, 1], marker="*", s=200, c="k", label="anchor")
ax.set_title("two arcs (the second lifted for display): manifold vs Euclidean mining")
ax.legend(fontsize=8)
ax.set_xticks([]); ax.set_yticks([]);

# %% [markdown]
# ## 2 · Mining on COIL-100's learning objects, without labels
#
# The same on the off-the-shelf GeM descriptors (EfficientNet-Lite0, 128 px) of the training objects.
# Labels are read *only* to count how many mined pairs are right.

# %%
coil = offtheshelf.Coil(small=SMALL, progress=False)
data = E.finetune_data(coil)
x0 = T.describe(T.TailNet(), data.train.maps)
anchors = np.sort(np.random.default_rng(0).choice(len(x0), min(ANCHORS, len(x0)), replace=False))
mined = U.manifold_mining(x0, anchors)
labels = data.train.labels  # diagnostics only
pd.DataFrame([{"anchors": len(anchors),
               "positives per anchor": np.mean([len(p) for p in mined.positives]),
               "hard negatives per anchor": np.mean([len(n) for n in mined.negatives]),
               **E.mining_stats(mined, labels)}]).round(3)

# %% [markdown]
# ## 3 · Fine-tuning with mined tuples, and with k-means pseudo-labels
#
# Manifold tuples train the Siamese loss (Eq. 2.16); the k-means baseline clusters the same
# descriptors and treats cluster ids as labels for the triplet loss with hard-negative mining. Both
# keep their last epoch: choosing an epoch by validation mAP would need labels.

# %%
before = T.FinetuneResult(T.TailNet(), L.TripletLoss(), [], 0, set(), E.SMALL_CONFIG)
rows = [{"method": "off-the-shelf", "stage": "before", "supervision": "none", **r} for r in E.test_scores(before, data)]
history = []
for method in ("manifold", "kmeans"):
    result, extra = E.run_method(data, method)
    rows += [{"method": method, "stage": "after", "supervision": "unsupervised", **r} for r in E.test_scores(result, data)]
    history += [{"method": method, "supervision": "unsupervised", **h} for h in result.history]
scores, history = pd.DataFrame(rows), pd.DataFrame(history)
scores.pivot_table(index=["stage", "method"], columns="protocol", values="mAP", sort=False).round(4)

# %%
fig = ff.before_after(scores)

# %%
fig = ff.training_curves(history)

# %% [markdown]
# ## What to notice
#
# * On the arcs, a Euclidean miner would take points of the other arc as positives; the manifold
#   miner takes far points of the same arc as positives and the close points of the other arc as hard
#   negatives — exactly the pairs a network should learn from.
# * On COIL-100 the mined positives are nearly always views of the same object (consecutive poses
#   chain along the turntable), yet they are *not* the Euclidean nearest: they are the informative,
#   harder views.
# * Without labels there is no validation-based epoch choice: the number of epochs is a fixed
#   hyper-parameter, which the survey's unsupervised methods also have to set.
# * k-means pseudo-labels are only as good as the clusters; objects split or merged by k-means give
#   wrong positives and negatives, and the fine-tuning can reinforce those mistakes.
#
# ## Exercises
#
# 1. Lower `alpha` to 0.5. How do the number and the precision of mined positives change, and why?
# 2. Replace the Siamese loss by the triplet loss for manifold tuples. Which does better here?
#
# <details><summary>Solutions</summary>
#
# 1. A smaller `α` restarts the walk more often, so the diffusion stays close to the anchor and the
#    manifold ranking looks more like the Euclidean one: fewer positives (they must be outside the
#    Euclidean top-k), usually with higher precision.
# 2. `cfg = dataclasses.replace(E.SMALL_CONFIG, loss="triplet", loss_kwargs={"margin": 0.1}, select="last")`,
#    then `T.finetune(T.TrainData(data.train.maps, None, data.train.ids), data.val, cfg,
#    tuples=U.manifold_tuples(mined, cfg.queries, cfg.negatives))`. The triplet loss only asks the
#    positive to be closer than the negative, so noisy positives hurt it less.
#
# </details>
