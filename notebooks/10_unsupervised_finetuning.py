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
#
# **Papers.** Iscen, Tolias, Avrithis & Chum, *Mining on manifolds: metric learning without labels* (CVPR 2018,
# [arXiv:1803.11095](https://arxiv.org/abs/1803.11095)) — the miner of section 1; Iscen et al., *Efficient
# diffusion on region manifolds* (CVPR 2017, [arXiv:1611.05113](https://arxiv.org/abs/1611.05113)) — the kNN
# graph and its random walk; Radenović, Tolias & Chum, *CNN image retrieval learns from BoW: unsupervised
# fine-tuning with hard examples* (ECCV 2016, [arXiv:1604.02426](https://arxiv.org/abs/1604.02426)); Caron et al.,
# *Deep clustering for unsupervised learning of visual features* (ECCV 2018,
# [arXiv:1807.05520](https://arxiv.org/abs/1807.05520)) — k-means cluster ids as pseudo-labels.

# %%
import matplotlib.pyplot as plt
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
# The three steps of a diffusion process (survey §2.4.2.1, Figure 2.11), on unit descriptors $x_i$:
#
# 1. *similarity initialisation* — a kNN graph with weights $A_{ij} = \max(0, x_i^\top x_j)^{\gamma}$ when $j$ is
#    among the $k$ nearest neighbours of $i$ or $i$ among those of $j$, else 0;
# 2. *transition matrix* — the symmetric normalisation $S = D^{-1/2} A D^{-1/2}$ with $D = \operatorname{diag}(A\mathbf 1)$;
# 3. *iteration* — a random walk that restarts at the anchor with probability $1 - \alpha$: from the anchor's
#    indicator $y$,
#
# $$f^{(t+1)} = \alpha S f^{(t)} + (1 - \alpha)\, y \quad\longrightarrow\quad f^{\star} = (1 - \alpha)(I - \alpha S)^{-1} y .$$
#
# $f^\star_i$ is the *manifold similarity* of node $i$ to the anchor. Write steps 1–2, then step 3.

# %% nbgrader={"grade": false, "grade_id": "knn_affinity", "locked": false, "schema_version": 3, "solution": true}
def my_knn_affinity(x, k=4, gamma=3.0):
    """Dense normalised kNN affinity S = D^-1/2 A D^-1/2 (survey §2.4.2.1, steps 1-2), an (N, N) float64 array.

    x: (N, d) unit rows. A_ij = max(0, x_i·x_j) ** gamma when j is among the k most similar OTHER rows of i,
    or i among those of j (the union, so A is symmetric); otherwise 0. D holds A's row sums.
    """
    ### BEGIN SOLUTION
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    rows = np.arange(len(x))[:, None]
    knn = np.argsort(-sim, axis=1)[:, :k]
    A = np.zeros_like(sim)
    A[rows, knn] = np.clip(sim[rows, knn], 0, None) ** gamma
    A = np.maximum(A, A.T)
    d = A.sum(axis=1) ** -0.5
    return d[:, None] * A * d[None, :]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "knn_affinity_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
rng = np.random.default_rng(100)
cases = []
for n, k, gamma in ((12, 3, 3.0), (30, 5, 1.0), (20, 4, 2.0)):
    x = np.abs(rng.normal(size=(n, 6)))  # positive coordinates: every similarity is positive
    cases.append((x / np.linalg.norm(x, axis=1, keepdims=True), k, gamma))
rk.grading.check(my_knn_affinity, lambda x, k, gamma: U.knn_affinity(x, k, gamma).toarray(), cases,
                 name="my_knn_affinity")

# %% nbgrader={"grade": false, "grade_id": "diffuse", "locked": false, "schema_version": 3, "solution": true}
def my_diffuse(S, anchor, alpha=0.9, iterations=30):
    """Manifold similarities to one anchor (survey §2.4.2.1, step 3): an (N,) array.

    S: (N, N) normalised affinity; y: the anchor's indicator (1 at `anchor`, 0 elsewhere). Start from f = y and
    apply f <- alpha * S f + (1 - alpha) * y exactly `iterations` times.
    """
    ### BEGIN SOLUTION
    y = np.zeros(len(S))
    y[anchor] = 1.0
    f = y.copy()
    for _ in range(iterations):
        f = alpha * S @ f + (1 - alpha) * y
    return f
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "diffuse_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
rng = np.random.default_rng(101)
cases = []
for n, anchor, alpha, iterations in ((15, 0, 0.9, 30), (25, 7, 0.5, 10), (20, 19, 0.99, 100)):
    x = rng.normal(size=(n, 5))
    cases.append((U.knn_affinity(x / np.linalg.norm(x, axis=1, keepdims=True), 4).toarray(), anchor, alpha, iterations))
rk.grading.check(my_diffuse, lambda S, anchor, alpha, iterations: U.diffuse(S, [anchor], alpha, iterations)[:, 0],
                 cases, name="my_diffuse")

# %% [markdown]
# A toy manifold: two parallel arcs on the unit sphere, close to each other. An arc's end has many Euclidean
# neighbours on the *other* arc, but walking along the kNN graph stays on its own arc. The library's graph and
# walk, and the walk against its closed form:

# %%
t = np.linspace(0, 2, 120)
arcs = np.concatenate([np.stack([np.cos(t), np.sin(t), 0 * t], 1), np.stack([np.cos(t), np.sin(t), 0 * t + 0.08], 1)])
arcs /= np.linalg.norm(arcs, axis=1, keepdims=True)
arc = np.repeat([0, 1], 120)

k, gamma, alpha = 4, 3.0, 0.9
S = U.knn_affinity(arcs, k, gamma)
f = U.diffuse(S, [0], alpha, 300)  # anchor 0: one end of the first arc
closed_form = (1 - alpha) * np.linalg.solve(np.eye(len(arcs)) - alpha * S.toarray(), np.eye(len(arcs))[:, [0]])
assert_allclose(f, closed_form, atol=1e-10)
print(f"after 300 steps the walk is within {np.abs(f - closed_form).max():.1e} of (1 − α)(I − αS)⁻¹y")

# %% [markdown]
# **Mining.** Positives are close on the manifold but not among the Euclidean nearest; hard negatives are
# among the Euclidean nearest but far on the manifold (Iscen et al. 2018). With $\mathrm{NN}^e_k$ and
# $\mathrm{NN}^m_k$ the $k$ nearest by inner product and by $f^\star$,
#
# $$P^{+} = \mathrm{NN}^m_{k_{pos}} \setminus \mathrm{NN}^e_{k_{pos}}, \qquad P^{-} = \mathrm{NN}^e_{k_{neg}} \setminus \mathrm{NN}^m_{k_{man}},$$
#
# and the mined tuples train a verification loss (the Siamese loss, survey Eq. 2.16, or the triplet loss,
# Eq. 2.17) exactly as labelled pairs would.

# %% nbgrader={"grade": false, "grade_id": "mine", "locked": false, "schema_version": 3, "solution": true}
def my_mine(x, anchor, k_pos=5, k_neg=10, k_manifold=10):
    """Positives and hard negatives of one anchor, without labels (Iscen et al. 2018; survey §2.4.2.1).

    x: (N, d) unit rows. Manifold similarities: f = U.diffuse(U.knn_affinity(x, 10, 3.0), [anchor], 0.9, 30)[:, 0].
    Rank every row except the anchor twice, most similar first (ties: lower index first): by x @ x[anchor]
    (Euclidean ranking) and by f (manifold ranking; rows with f == 0 were never reached and are never manifold
    neighbours). Positives: the k_pos manifold nearest that are NOT among the k_pos Euclidean nearest, in
    manifold order. Negatives: the k_neg Euclidean nearest that are NOT among the k_manifold manifold nearest,
    in Euclidean order. Returns (positives, negatives), two 1-D integer arrays.
    """
    ### BEGIN SOLUTION
    f = U.diffuse(U.knn_affinity(x, 10, 3.0), [anchor], 0.9, 30)[:, 0]
    others = np.flatnonzero(np.arange(len(x)) != anchor)
    by_euclid = others[np.argsort(-(x[others] @ x[anchor]), kind="stable")]
    reached = others[f[others] > 0]
    by_manifold = reached[np.argsort(-f[reached], kind="stable")]
    positives = np.array([i for i in by_manifold[:k_pos] if i not in set(by_euclid[:k_pos])], dtype=np.int64)
    negatives = np.array([i for i in by_euclid[:k_neg] if i not in set(by_manifold[:k_manifold])], dtype=np.int64)
    return positives, negatives
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "mine_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
rng = np.random.default_rng(102)
cases = []
for n, anchor, k_pos, k_neg, k_manifold in ((250, 0, 20, 30, 40), (200, 60, 25, 30, 50), (300, 299, 30, 40, 60)):
    t = np.linspace(0, 1, n // 2) + 0.002 * rng.normal(size=n // 2)  # two close arcs, as in the toy above
    two_arcs = np.concatenate([np.stack([np.cos(t), np.sin(t), 0 * t], 1), np.stack([np.cos(t), np.sin(t), 0 * t + 0.1], 1)])
    two_arcs += 0.002 * rng.normal(size=two_arcs.shape)
    cases.append((two_arcs / np.linalg.norm(two_arcs, axis=1, keepdims=True), anchor, k_pos, k_neg, k_manifold))

def library_mine(x, anchor, k_pos, k_neg, k_manifold):
    mined = U.manifold_mining(x, [anchor], k_pos=k_pos, k_neg=k_neg, k_manifold=k_manifold)
    return mined.positives[0], mined.negatives[0]


rk.grading.check(my_mine, library_mine, cases, name="my_mine")

# %% [markdown]
# The library's miner on the arcs, drawn over the kNN graph the walk moves on:

# %%
mined = U.manifold_mining(arcs, [0], k=k, k_pos=15, k_neg=20, k_manifold=30)
euclid_top = np.argsort(-(arcs @ arcs[0]))[1:21]
print(f"mined positives on the anchor's arc: {(arc[mined.positives[0]] == 0).mean():.0%}; mined negatives on the "
      f"other arc: {(arc[mined.negatives[0]] == 1).mean():.0%}; Euclidean top-20 on the other arc: "
      f"{(arc[euclid_top] == 1).mean():.0%} — what a Euclidean miner would call positive")

# %%
from matplotlib.collections import LineCollection

shown = np.c_[np.arctan2(arcs[:, 1], arcs[:, 0]), arc]  # unrolled: angle along the arc, and which arc
i_edge, j_edge = S.nonzero()
fig, ax = plt.subplots(figsize=(8, 3.6))
ax.add_collection(LineCollection(np.stack([shown[i_edge], shown[j_edge]], 1), colors="0.6", linewidths=1.0,
                                 label=f"kNN graph edges (k = {k})"))
ax.scatter(*shown.T, s=10, c="0.3")
ax.scatter(*shown[euclid_top].T, s=110, facecolors="none", edgecolors="tab:orange", label="Euclidean top 20")
for rows, colour, label in ((mined.positives[0], "tab:green", "mined positives"),
                            (mined.negatives[0], "tab:red", "mined hard negatives")):
    ax.scatter(*shown[rows].T, s=30, c=colour, label=label, zorder=3)
ax.scatter(*shown[0], marker="*", s=250, c="k", label="anchor", zorder=4)
ax.set_xlim(-0.03, 0.5)
ax.set_ylim(-0.5, 1.5)
ax.set_yticks([0, 1], ["anchor's arc", "other arc"])
ax.set_xlabel("angle along the arc (rad; the first quarter of the arcs)")
crossing = int((arc[i_edge] != arc[j_edge]).sum()) // 2
ax.set_title(f"the walk moves along graph edges: {crossing} of {len(i_edge) // 2} edges join the two arcs")
fig.legend(loc="lower center", ncol=5, fontsize=8, frameon=False)
fig.tight_layout(rect=(0, 0.08, 1, 1))

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
# The restart probability $1 - \alpha$ sets how far the walk goes. Mine again with a shorter walk, $\alpha = 0.5$:

# %%
by_alpha = {}
for a in (0.9, 0.5):
    m = U.manifold_mining(x0, anchors, alpha=a)
    by_alpha[a] = {"positives per anchor": np.mean([len(p) for p in m.positives]),
                   "hard negatives per anchor": np.mean([len(n) for n in m.negatives]), **E.mining_stats(m, labels)}
print(pd.DataFrame(by_alpha).T.rename_axis("alpha").round(3).to_string())
print(f"From α = 0.9 to 0.5 the positives per anchor go from {by_alpha[0.9]['positives per anchor']:.1f} to "
      f"{by_alpha[0.5]['positives per anchor']:.1f}, their precision from {by_alpha[0.9]['pos_precision']:.3f} to "
      f"{by_alpha[0.5]['pos_precision']:.3f}.")

# %% [markdown]
# **Question 1.** What does lowering $\alpha$ from 0.9 to 0.5 do to the mined positives, and why? Use the numbers
# printed above.

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_alpha", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# With $\alpha = 0.5$ the walk restarts at the anchor every second step, so its mass stays within a few hops:
# the manifold ranking then weights graph distance from the anchor more than the number of paths, and near the
# anchor it resembles the Euclidean ranking. Positives are the manifold neighbours *outside* the Euclidean
# top-$k$, so usually fewer of them remain. Their precision is not guaranteed to rise: a short walk no longer averages
# over many paths, so a single stray edge to another object weighs more. The table above says which way each
# moved on this run; a long walk ($\alpha$ near 1) finds more distant, more informative positives while the
# many paths inside one object outweigh a weak link to another — at the risk of leaking along such a link
# when the objects are close.

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
# How good are the k-means pseudo-labels the baseline trained on? Cluster the same off-the-shelf descriptors
# with the same number of clusters, and read the labels only to measure:

# %%
clusters = 10 if SMALL else 50  # what E.run_method uses for "kmeans"
pseudo = U.kmeans_labels(x0, clusters, seed=(E.SMALL_CONFIG if SMALL else E.FULL_CONFIG).seed)
table = pd.crosstab(pseudo, labels)
purity = table.max(axis=1).sum() / len(labels)
split = int((table > 0).sum(axis=0).gt(1).sum())
print(f"{clusters} clusters over {labels.max() - labels.min() + 1} training objects: purity {purity:.3f} (share of "
      f"images whose cluster's majority object is their own); {split} objects are split over several clusters.")

# %% [markdown]
# **Question 2.** When do k-means pseudo-labels mislead the triplet loss? Use the purity and the split count printed
# above.

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_kmeans", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# A cluster that merges two objects makes views of different objects "positives" and pulls them together; an
# object split over two clusters makes its own views "negatives" and pushes them apart. Both errors follow the
# Euclidean geometry of the off-the-shelf descriptor, so the network is trained to confirm that descriptor's
# mistakes rather than correct them. The impurity (1 − purity) bounds how many images carry a merged label, and
# the split count how many objects are pushed apart from themselves; with more clusters than objects, as here,
# splits are unavoidable. Manifold mining avoids the split error by design: its negatives must be far on the graph.

# %% [markdown]
# ## 4 · After versus before fine-tuning, without labels

# %%
test_map = scores[scores.protocol == "all"].set_index("method")["mAP"]
mode = "SMALL mode" if SMALL else "full mode"
for method in ("manifold", "kmeans"):
    gap = test_map[method] - test_map["off-the-shelf"]
    if abs(gap) >= 0.03:
        print(f"{method}: unsupervised fine-tuning {'raises' if gap > 0 else 'lowers'} test mAP from "
              f"{test_map['off-the-shelf']:.3f} to {test_map[method]:.3f} ({gap:+.3f}).")
    else:
        print(f"{method}: on this data ({mode}) the difference after vs before fine-tuning is {gap:+.3f} mAP "
              f"({test_map[method]:.3f} vs {test_map['off-the-shelf']:.3f}), below 0.03, so it is not evidence "
              "either way.")

# %% [markdown]
# ## What to notice
#
# * On the arcs, a Euclidean miner would take points of the other arc as positives (the share printed in
#   section 1); the manifold miner takes farther points of the anchor's own arc as positives and the close
#   points of the other arc as hard negatives — the pairs a network should learn from.
# * On COIL-100 the precision of the mined pairs is measured in section 2 (labels read only there): consecutive
#   poses chain along the turntable, so the graph links views of one object, and the mined positives are by
#   construction *not* the Euclidean nearest — the harder views.
# * Without labels there is no validation-based epoch choice: the number of epochs is a fixed
#   hyper-parameter, which the survey's unsupervised methods also have to set.
# * k-means pseudo-labels are only as good as the clusters (purity and splits printed in section 3).
#
# ## Questions
#
# **Question 3.** For the manifold tuples, the library trains the Siamese loss (Eq. 2.16). Why might the triplet
# loss (Eq. 2.17) tolerate wrongly mined positives better?

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_loss_noise", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# The Siamese loss pulls every mined positive all the way to distance 0, so a wrong positive (a view of another
# object reached through a weak graph link) receives the full pull, for as long as it stays apart. The triplet
# loss only asks that the positive be closer than the hard negatives by a margin; once that order holds it stops,
# so a wrong positive is pulled only as far as needed and never collapsed onto the anchor. To know which trains
# better here one would have to run both — and without labels, the choice could only be checked afterwards.

# %% [markdown]
# **Question 4.** Why is the number of epochs fixed in advance here, while notebook 09 picked the epoch on
# validation objects? What would be a label-free way to choose it?

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_epochs", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# Validation mAP needs to know which views match, i.e. labels, and this notebook's rule is that no label chooses
# anything. A label-free proxy must be computed from the images alone, for example the training loss on mined
# tuples held out from training, or the agreement between the Euclidean and the manifold rankings of the
# fine-tuned descriptors (as the descriptor learns the manifold, its nearest neighbours should agree with the
# diffused ones). Such proxies can still reward degenerate solutions, so the fixed budget is the honest default.
