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
# # 09 · Supervised fine-tuning: classification, Siamese, triplet and listwise losses
#
# **Goals.** Write each fine-tuning loss of the survey in a line or two and check it against the
# library; see what hard-negative mining picks; fine-tune the last block of EfficientNet-Lite0 (+ GeM's
# `p`) on COIL-100's learning objects with several losses and compare the test mAP before and after.
#
# **Survey.** §2.4.1 "Supervised fine-tuning": classification (Eq. 2.13, Figure 2.9a), a transformation
# matrix over frozen features (Eq. 2.15, Figure 2.9b), Siamese (Eq. 2.16, Figure 2.10a), triplet
# (Eq. 2.17, Figure 2.10b), joint triplet + classification (Eq. 2.18, Figure 2.9f), double-margin
# Siamese (Eq. 2.19, Figure 2.10c) and listwise AP losses; Table 2.3 for the reported numbers. Section 5: four
# more losses of Figure 2.10 from the discussion after Eq. 2.19 — quadruplet (d), N-pair (f), lifted structure
# (g) and Proxy-NCA (j).
#
# **Prerequisites.** notebooks/03 (GeM pooling) and 06 (training a head on frozen maps). **The rule:**
# training reads only the learning split (objects 1–50); whole objects 41–50 are held out as the
# validation set that picks the epoch; the test split (51–100) is only scored. **CPU design:** the
# network up to `stage6` is frozen and its maps are computed once (128 px) and cached; only stage7, the
# head conv and GeM's `p` are trained, so an epoch takes seconds on a laptop.
#
# **Papers.** Babenko et al., *Neural codes for image retrieval* (ECCV 2014,
# [arXiv:1404.1777](https://arxiv.org/abs/1404.1777)) — classification fine-tuning; Hadsell, Chopra & LeCun,
# *Dimensionality reduction by learning an invariant mapping* (CVPR 2006,
# [doi:10.1109/CVPR.2006.100](https://doi.org/10.1109/CVPR.2006.100)) — the contrastive (Siamese) loss;
# Schroff et al., *FaceNet* (CVPR 2015, [arXiv:1503.03832](https://arxiv.org/abs/1503.03832)) — the triplet loss
# and its mining; Gordo et al., *Deep image retrieval: learning global representations for image search*
# (ECCV 2016, [arXiv:1604.01325](https://arxiv.org/abs/1604.01325)); Radenović, Tolias & Chum, *Fine-tuning CNN
# image retrieval with no human annotation* (TPAMI 2018, [arXiv:1711.02512](https://arxiv.org/abs/1711.02512)) —
# GeM and the hard-negative mining used here; Revaud et al., *Learning with average precision: training image
# retrieval with a listwise loss* (ICCV 2019, [arXiv:1906.07589](https://arxiv.org/abs/1906.07589)). Section 5:
# Chen et al., *Beyond triplet loss: a deep quadruplet network for person re-identification* (CVPR 2017,
# [arXiv:1704.01719](https://arxiv.org/abs/1704.01719)); Sohn, *Improved deep metric learning with multi-class
# N-pair loss objective* (NeurIPS 2016,
# [papers.nips.cc](https://papers.nips.cc/paper/6200-improved-deep-metric-learning-with-multi-class-n-pair-loss-objective));
# Oh Song et al., *Deep metric learning via lifted structured feature embedding* (CVPR 2016,
# [arXiv:1511.06452](https://arxiv.org/abs/1511.06452)); Movshovitz-Attias et al., *No fuss distance metric
# learning using proxies* (ICCV 2017, [arXiv:1703.07464](https://arxiv.org/abs/1703.07464)).

# %%
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from numpy.testing import assert_allclose

import retrievalkit as rk
from retrievalkit import figures_finetune as ff
from retrievalkit.experiments import finetune as E
from retrievalkit.experiments import offtheshelf
from retrievalkit.finetune import losses as L
from retrievalkit.finetune import miners
from retrievalkit.finetune import trainer as T
from retrievalkit.nn.netvlad import NetVLAD

# %% tags=["parameters"]
SMALL = rk.config.SMALL
NETVLAD_WORDS = 8
METHODS = ("triplet", "ap") if SMALL else ("ce", "regression", "contrastive", "triplet", "joint", "double_margin", "ap")

# %% [markdown]
# ## 1 · The losses, written out
#
# Descriptors are L2-normalised rows $f(x;\theta)$. Every verification loss measures a pair by the
# squared Euclidean distance (survey Eq. 2.14)
#
# $$D(x_i, x_j) = \lVert f(x_i;\theta) - f(x_j;\theta)\rVert_2^2 = 2 - 2\cos(x_i, x_j) \in [0, 4].$$
#
# A pair label $S_{ij}$ is 1 for two views of the same object, 0 otherwise. The **Siamese (contrastive)
# loss** (survey Eq. 2.16) pulls a matching pair all the way together and pushes a non-matching pair
# only until it is at least the margin $m$ apart:
#
# $$L_{Siam}(x_i, x_j) = \tfrac12 S_{ij}\, D_{ij} + \tfrac12 (1 - S_{ij}) \max(0,\ m - D_{ij}).$$
#
# Its double-margin variant (survey Eq. 2.19) stops pulling a matching pair once it is closer than $m_1$:
# $\tfrac12 S_{ij}\max(0, D_{ij} - m_1) + \tfrac12 (1 - S_{ij})\max(0, m_2 - D_{ij})$; with $m_1 = 0$ it is Eq. 2.16 again.
# The **triplet loss** (survey Eq. 2.17) asks only for an *order*: the negative must be farther from the
# anchor than the positive, by a margin,
#
# $$L_{Triplet}(x_a, x_p, x_n) = \max\bigl(0,\ m + D(x_a, x_p) - D(x_a, x_n)\bigr).$$
#
# The **classification loss** (survey Eq. 2.13) is a cross-entropy over classes; here the logits are
# cosines to one learned vector $w_c$ per class, divided by a temperature $T$:
# $L_{CE} = -\log \hat p_{y}$ with $\hat p_c = \operatorname{softmax}_c\bigl(\cos(x, w_c)/T\bigr)$.
# The joint loss (survey Eq. 2.18) is $\alpha L_{Triplet} + \beta L_{CE}$.
#
# The library calls every loss the way pytorch-metric-learning does, `loss(embeddings, labels, indices_tuple)`:
# the batch's rows, and which rows form pairs `(a, b, same)` or triplets `(a, p, n)` (left out, every pair or
# triplet the labels allow). Write the main ones yourself first; each check runs your function and the
# library's on fresh random inputs.

# %% nbgrader={"grade": false, "grade_id": "contrastive", "locked": false, "schema_version": 3, "solution": true}
def my_contrastive(a, b, s, margin=0.7):
    """Siamese loss (survey Eq. 2.16), averaged over B pairs.

    a, b: (B, D) tensors, pair i is (a[i], b[i]); s: (B,) float tensor, 1.0 for a matching pair, 0.0 otherwise;
    D is the squared Euclidean distance of Eq. 2.14. Returns a scalar tensor.
    """
    ### BEGIN SOLUTION
    d = ((a - b) ** 2).sum(dim=1)
    return (0.5 * s * d + 0.5 * (1 - s) * (margin - d).clamp(min=0)).mean()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "contrastive_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
gen = torch.Generator().manual_seed(90)
cases = []
for size, margin in ((6, 0.7), (10, 1.5), (5, 2.5)):
    a, b = (rk.nn.functional.l2n(torch.randn(size, 8, generator=gen)) for _ in range(2))
    cases.append((a, b, torch.arange(size).remainder(2).float(), margin))  # alternate matching / non-matching


def library_contrastive(a, b, s, margin):
    i = torch.arange(len(a))  # the batch is [a; b]: pair i is rows i and B + i
    return L.ContrastiveLoss(margin)(torch.cat([a, b]), None, (i, len(a) + i, s.bool()))


rk.grading.check(my_contrastive, library_contrastive, cases, name="my_contrastive")

# %% nbgrader={"grade": false, "grade_id": "triplet", "locked": false, "schema_version": 3, "solution": true}
def my_triplet(embeddings, triplets, margin=0.1):
    """Triplet loss (survey Eq. 2.17), averaged over the given triplets.

    embeddings: (N, D) tensor of rows; triplets: (anchors, positives, negatives), three (T,) index tensors
    into those rows. Returns a scalar tensor.
    """
    ### BEGIN SOLUTION
    a, p, n = (embeddings[i] for i in triplets)
    d_ap, d_an = ((a - p) ** 2).sum(dim=1), ((a - n) ** 2).sum(dim=1)
    return (margin + d_ap - d_an).clamp(min=0).mean()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "triplet_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
gen = torch.Generator().manual_seed(91)
cases = []
for rows, count, margin in ((12, 20, 0.1), (8, 15, 0.5), (20, 30, 1.0)):
    x = rk.nn.functional.l2n(torch.randn(rows, 16, generator=gen))
    cases.append((x, tuple(torch.randint(rows, (count,), generator=gen) for _ in range(3)), margin))
rk.grading.check(my_triplet, lambda x, t, margin: L.TripletLoss(margin)(x, None, t), cases, name="my_triplet")

# %% [markdown]
# **The triplet geometry.** Draw Eq. 2.17 in the plane. Around the anchor, the positive lies on the dashed
# circle of squared radius $D(x_a, x_p)$; the negative gives no loss only outside the solid *margin circle*
# of squared radius $D(x_a, x_p) + m$. One gradient step moves all three points: the positive towards the
# anchor, the negative away from it, the anchor towards the positive and away from the negative.

# %%
triangle = torch.tensor([[0.0, 0.0], [0.9, 0.3], [0.6, -0.5]], requires_grad=True)  # anchor, positive, negative
margin, step = 0.5, 0.25
one = (torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
loss_before = L.TripletLoss(margin)(triangle, None, one)
loss_before.backward()
moved = (triangle - step * triangle.grad).detach()
loss_after = L.TripletLoss(margin)(moved, None, one)

fig, axes = plt.subplots(1, 2, figsize=(9, 4.4), sharex=True, sharey=True)
for ax, pts, loss, title in ((axes[0], triangle.detach(), loss_before, "before"),
                             (axes[1], moved, loss_after, f"after one gradient step (rate {step})")):
    pts = pts.numpy()
    d_ap = float(((pts[0] - pts[1]) ** 2).sum())
    for r2, style, label in ((d_ap, "--", "radius² $D(x_a,x_p)$"), (d_ap + margin, "-", "margin circle: radius² $D(x_a,x_p)+m$")):
        ax.add_patch(plt.Circle(pts[0], np.sqrt(r2), fill=False, ls=style, color="0.4", label=label))
    for row, colour, label in ((0, "k", "anchor"), (1, "tab:green", "positive"), (2, "tab:red", "negative")):
        ax.scatter(*pts[row], s=70, c=colour, label=label, zorder=3)
    if ax is axes[1]:
        old = triangle.detach().numpy()
        for row in range(3):
            ax.annotate("", pts[row], old[row], arrowprops={"arrowstyle": "->", "color": "0.6"})
    ax.set_title(f"{title}: loss {loss.item():.3f}")
    ax.set_aspect("equal")
axes[0].set_xlim(-1.6, 2.0)
axes[0].set_ylim(-1.6, 1.6)
handles, labels = axes[0].get_legend_handles_labels()
fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8, frameon=False)
fig.tight_layout(rect=(0, 0.08, 1, 1))
print(f"Eq. 2.17 with m = {margin}: loss {loss_before.item():.3f} before the step, {loss_after.item():.3f} after")

# %% nbgrader={"grade": false, "grade_id": "cosine_ce", "locked": false, "schema_version": 3, "solution": true}
def my_cosine_ce(x, weight, labels, temperature=0.05):
    """Cross-entropy (survey Eq. 2.13) of a cosine classifier, averaged over the batch.

    x: (B, D) descriptors; weight: (C, D) one vector per class (neither is unit length: normalise both
    rows); labels: (B,) class ids. The logits are cos(x_i, w_c) / temperature; return mean of −log p̂_{i, y_i}.
    """
    ### BEGIN SOLUTION
    logits = rk.nn.functional.l2n(x) @ rk.nn.functional.l2n(weight).T / temperature
    return -torch.log_softmax(logits, dim=1)[torch.arange(len(x)), labels].mean()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "cosine_ce_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
gen = torch.Generator().manual_seed(92)
cases = []
for size, dim, classes, temperature in ((6, 8, 3, 0.1), (10, 16, 5, 0.05), (4, 4, 2, 1.0)):
    cases.append((3 * torch.randn(size, dim, generator=gen), torch.randn(classes, dim, generator=gen),
                  torch.randint(classes, (size,), generator=gen), temperature))


def library_cosine_ce(x, weight, labels, temperature):
    loss = L.CosineClassifierLoss(x.shape[1], len(weight), temperature=temperature)
    with torch.no_grad():
        loss.weight.copy_(weight)
    return loss(x, labels)


rk.grading.check(my_cosine_ce, library_cosine_ce, cases, name="my_cosine_ce")

# %% [markdown]
# The remaining losses, against the library the same way: here the batch is `[a; b; n]`, so pair `i` is
# rows `i` and `6 + i`, and triplet `i` is rows `i`, `6 + i`, `12 + i`.

# %%
g = torch.Generator().manual_seed(0)
a, b, n = (rk.nn.functional.l2n(torch.randn(6, 8, generator=g)) for _ in range(3))
s = torch.tensor([1.0, 0, 1, 0, 1, 0])
D = lambda u, v: ((u - v) ** 2).sum(1)  # Eq. 2.14

siamese = (0.5 * s * D(a, b) + 0.5 * (1 - s) * (0.7 - D(a, b)).clamp(min=0)).mean()  # Eq. 2.16
double = (0.5 * s * (D(a, b) - 0.2).clamp(min=0) + 0.5 * (1 - s) * (0.7 - D(a, b)).clamp(min=0)).mean()  # Eq. 2.19
triplet = (0.1 + D(a, b) - D(a, n)).clamp(min=0).mean()  # Eq. 2.17
batch, i = torch.cat([a, b, n]), torch.arange(6)
pairs, triplets = (i, 6 + i, s.bool()), (i, 6 + i, 12 + i)
assert_allclose(L.ContrastiveLoss(0.7)(batch, None, pairs).item(), siamese.item(), rtol=1e-6)
assert_allclose(L.DoubleMarginContrastiveLoss(0.2, 0.7)(batch, None, pairs).item(), double.item(), rtol=1e-6)
assert_allclose(L.DoubleMarginContrastiveLoss(0.0, 0.7)(batch, None, pairs).item(), siamese.item(), rtol=1e-6)  # m1 = 0
assert_allclose(L.TripletLoss(0.1)(batch, None, triplets).item(), triplet.item(), rtol=1e-6)

ce = L.CosineClassifierLoss(8, 3, temperature=0.1)
y = torch.tensor([0, 1, 2, 0, 1, 2])
p_hat = torch.softmax(rk.nn.functional.l2n(a) @ rk.nn.functional.l2n(ce.weight).T / 0.1, dim=1)
cross_entropy = -(torch.nn.functional.one_hot(y, 3) * p_hat.log()).sum(1).mean()  # Eq. 2.13
assert_allclose(ce(a, y).item(), cross_entropy.item(), rtol=1e-5)
joint = L.JointLoss(8, 3, alpha=1.0, beta=0.5)
y3 = torch.cat([y, y, (y + 1) % 3])  # labels of the 18 rows: the CE term classifies every one
assert_allclose(joint(batch, y3, triplets).item(), (triplet + 0.5 * joint.ce(batch, y3)).item(), rtol=1e-6)
print(f"Siamese {siamese:.4f}  double-margin {double:.4f}  triplet {triplet:.4f}  CE {cross_entropy:.4f}")

# %% [markdown]
# **A transformation matrix over frozen features** (survey Eq. 2.15) scores a pair with a vector
# $W \in \mathbb{R}^{2d\times 1}$, $S_W(x_i, x_j) = W^\top \phi(f_i, f_j)$, and regresses it to the cosine moved by a margin:
#
# $$L_W(x_i, x_j) = \bigl|\,S_W(x_i, x_j) - S_{ij}\,(\mathrm{sim}(x_i, x_j) + m) - (1 - S_{ij})\,(\mathrm{sim}(x_i, x_j) - m)\,\bigr|.$$
#
# A plain linear map of the concatenation $[f_i, f_j]$ would add one score per image and could not rank a
# database for a query, so the library's $\phi$ is the symmetric pair feature $[f_i \odot f_j,\ |f_i - f_j|]$
# (still $2d$ long) and $W$ starts at $[1\dots1, 0\dots0]$, i.e. at the cosine:

# %%
reg = L.PairRegressionLoss(8, margin=0.1)
score = (a * b) @ reg.weight[:8] + (a - b).abs() @ reg.weight[8:]
sim = (a * b).sum(1)
by_hand = (score - s * (sim + 0.1) - (1 - s) * (sim - 0.1)).abs().mean()  # Eq. 2.15
assert_allclose(reg(batch, None, pairs).item(), by_hand.item(), rtol=1e-6)
assert_allclose(score.detach(), sim, atol=1e-6)  # before training S_W is the cosine

# %% [markdown]
# **A listwise AP loss.** AP depends on a sort, which has no gradient. Histogram binning replaces the
# sort: each similarity spreads its weight over the two nearest of `Q` bin centres, precision is counted
# bin by bin from the most similar one, and AP becomes a smooth function of the similarities. When
# every similarity sits exactly on its own bin centre, the soft AP *is* the finite-sum AP:

# %%
ap = L.APLoss(bins=11)  # centres 1.0, 0.8, …, −1.0
sim = torch.tensor([[1.0, 0.8, 0.6, 0.4, 0.2, 0.0]])
pos = torch.tensor([[True, False, True, False, False, True]])
exact = np.mean([1 / 1, 2 / 3, 3 / 6])  # positives at ranks 1, 3 and 6
assert_allclose(ap.binned_ap(sim, pos, torch.ones_like(pos)).item(), exact, rtol=1e-6)

# %% [markdown]
# ## 2 · Hard negatives, mined again every epoch
#
# Random non-matching images are too easy: the loss is already zero for most of them. Radenović et al.
# take, for every query, the non-matching images most similar under the *current* network, at most one
# per object so that the negatives are varied. Write that miner: for query $q$ with label $y_q$, rank the pool
# by the inner product $\langle f_q, f_j\rangle$ (on unit vectors, the smallest $D$ of Eq. 2.14 first), drop the
# rows with label $y_q$, keep only the first row of each remaining label, and return the first $k$.

# %% nbgrader={"grade": false, "grade_id": "hardest_negatives", "locked": false, "schema_version": 3, "solution": true}
def my_hardest_negatives(query_desc, pool_desc, query_labels, pool_labels, k=3):
    """For each query, the k pool rows of OTHER labels most similar to it (inner product), at most one per label.

    query_desc: (Q, D) and pool_desc: (N, D) NumPy arrays of unit rows; query_labels (Q,), pool_labels (N,).
    Returns a (Q, k) integer array of pool indices, most similar first (Radenović et al.'s mining).
    """
    ### BEGIN SOLUTION
    sim = query_desc @ pool_desc.T
    out = []
    for i in range(len(query_desc)):
        picked, seen = [], set()
        for j in np.argsort(-sim[i], kind="stable"):
            if pool_labels[j] != query_labels[i] and pool_labels[j] not in seen:
                picked.append(j)
                seen.add(pool_labels[j])
            if len(picked) == k:
                break
        out.append(picked)
    return np.array(out)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "hardest_negatives_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
rng = np.random.default_rng(93)
cases = []
for queries, pool, labels, k in ((4, 30, 6, 3), (6, 50, 10, 5), (3, 20, 4, 2)):
    unit = lambda m: (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float32)
    cases.append((unit(rng.normal(size=(queries, 8))), unit(rng.normal(size=(pool, 8))),
                  rng.integers(labels, size=queries), rng.integers(labels, size=pool), k))
rk.grading.check(my_hardest_negatives, miners.hardest_negatives, cases, name="my_hardest_negatives")

# %% [markdown]
# On COIL-100's learning objects with the untrained tail (the library's miner):

# %%
coil = offtheshelf.Coil(small=SMALL, progress=False)
data = E.finetune_data(coil)
print(f"train {len(data.train)} images (objects {data.train.labels.min()}–{data.train.labels.max()}), "
      f"validation {len(data.val)} (objects {data.val.labels.min()}–{data.val.labels.max()}), test {len(data.test)}; "
      f"frozen maps {data.train.maps.shape[1:]}")
net = T.TailNet()
x = T.describe(net, data.train.maps)
queries = np.arange(0, len(x), 72)[:4]
hard = miners.hardest_negatives(x[queries], x, data.train.labels[queries], data.train.labels, k=5)
pd.DataFrame({"query object": data.train.labels[queries],
              "negative objects": [data.train.labels[h].tolist() for h in hard],
              "cosine": [np.round(x[q] @ x[h].T, 3).tolist() for q, h in zip(queries, hard)]})

# %% [markdown]
# How many triplets still have something to teach? With the same untrained descriptors, draw 200 queries with
# a positive, give each 5 negatives either at random from other objects or by the miner, and count the
# triplets whose Eq. 2.17 loss is above zero (margin 0.1). Also count the matching pairs that a double margin
# $m_1 = 0.5$ (Eq. 2.19) would leave alone:

# %%
rng = np.random.default_rng(0)
train_labels = data.train.labels
q_rows, p_rows = miners.make_tuples(train_labels, 200, rng)
random_neg = np.stack([rng.choice(np.flatnonzero(train_labels != train_labels[i]), 5) for i in q_rows])
mined_neg = miners.hardest_negatives(x[q_rows], x, train_labels[q_rows], train_labels, k=5)
d_pos = ((x[q_rows] - x[p_rows]) ** 2).sum(1)[:, None]
active = {name: float((0.1 + d_pos - ((x[q_rows, None] - x[neg]) ** 2).sum(-1) > 0).mean())
          for name, neg in (("random", random_neg), ("mined", mined_neg))}
below_m1 = float((d_pos < 0.5).mean())
print(f"Triplets with a non-zero loss: {active['random']:.1%} with random negatives, {active['mined']:.1%} with mined "
      f"ones ({'more' if active['mined'] > active['random'] else 'not more'} with mining). "
      f"Matching pairs already closer than m1 = 0.5: {below_m1:.0%}.")

# %% [markdown]
# **Question 1.** Why train the triplet loss with mined rather than random negatives? Use the fractions printed above.

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_mining", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# A triplet whose negative is already more than the margin farther than the positive has zero loss and zero
# gradient: it costs computation and teaches nothing. A random negative is usually an unrelated object, far
# from the query, so it rarely violates the margin; the miner takes the other objects the current network
# ranks closest to the query, which are the triplets that can still be violated. The two fractions printed
# above measure this on this run: only the active share of the triplets moves the weights. Because the network
# changes, the mining is redone every epoch; taking one negative per object keeps the batch from being filled
# with views of a single confusing object.

# %% [markdown]
# **Question 2.** With the double-margin loss (Eq. 2.19), what happens to matching pairs when $m_1$ goes from
# 0 to 0.5? Use the last number printed above.

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_double_margin", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# With $m_1 = 0$ every matching pair is pulled until it coincides (Eq. 2.16). With $m_1 = 0.5$ — a cosine of
# 0.75 on unit vectors — a matching pair closer than that gets no pull at all, which is the share printed
# above; only the pairs farther apart (the very different poses) and the negatives still produce gradients.
# The loss therefore stops squeezing each object's views into one point, which keeps some spread within an
# object; whether that helps mAP has to be measured on the validation objects, not assumed.

# %% [markdown]
# ## 3 · Fine-tuning on COIL-100: before and after
#
# `E.run_method` trains one loss (tuples of query, positive and hard negatives for the verification
# losses; batches of `m` views of a few objects for cross-entropy and AP). The epoch with the best
# validation mAP is kept. "Before" is the same tail with its ImageNet weights: the off-the-shelf GeM
# descriptor of the same 128-px input.

# %%
before = T.FinetuneResult(T.TailNet(), L.TripletLoss(), [], 0, set(), E.SMALL_CONFIG)
rows = [{"method": "off-the-shelf", "stage": "before", "supervision": "none", **r} for r in E.test_scores(before, data)]
history, results = [], {}
for method in METHODS:
    result, _ = E.run_method(data, method)
    results[method] = result
    rows += [{"method": method, "stage": "after", "supervision": "supervised", **r} for r in E.test_scores(result, data)]
    history += [{"method": method, "supervision": "supervised", **h} for h in result.history]
scores, history = pd.DataFrame(rows), pd.DataFrame(history)
scores.pivot_table(index=["stage", "method"], columns="protocol", values="mAP", sort=False).round(4)

# %%
fig = ff.training_curves(history)

# %%
fig = ff.before_after(scores)

# %%
fig = ff.embedding(E.embedding_table(data, before, results[METHODS[0]], METHODS[0]))

# %% [markdown]
# ## 4 · After versus before fine-tuning
#
# The test objects are unseen during training: fine-tuning helps only as far as what it learns about views
# of the training objects transfers to new objects. The cell below compares every trained loss with the
# off-the-shelf descriptor on the test split's "all" protocol.

# %%
test_map = scores[scores.protocol == "all"].set_index("method")["mAP"]
mode = "SMALL mode" if SMALL else "full mode"
for method in METHODS:
    gap = test_map[method] - test_map["off-the-shelf"]
    if abs(gap) >= 0.03:
        print(f"{method}: fine-tuning {'raises' if gap > 0 else 'lowers'} test mAP from "
              f"{test_map['off-the-shelf']:.3f} to {test_map[method]:.3f} ({gap:+.3f}).")
    else:
        print(f"{method}: on this data ({mode}) the difference after vs before fine-tuning is {gap:+.3f} mAP "
              f"({test_map[method]:.3f} vs {test_map['off-the-shelf']:.3f}), below 0.03, so it is not evidence "
              "either way.")

# %% [markdown]
# ## 5 · More losses of Figure 2.10
#
# The survey's discussion after Eq. 2.19 (§2.4.1.2) names losses that put more samples into one term;
# Figure 2.10 sketches them. Four are in the library (`L.LOSSES` keys `quadruplet`, `npair`, `lifted`,
# `proxy_nca`), all fed labelled batches, and the tests check three of them against pytorch-metric-learning
# and the quadruplet loss against a loop over every quadruplet.
#
# **Quadruplet** (Chen et al., Figure 2.10d). Take an anchor and positive of one class and negatives $n_1$, $n_2$
# of two *other, different* classes. Besides the triplet term, the positive pair must also be closer than a
# negative pair that does not touch the anchor, by a smaller margin $m_2 < m_1$ — which makes distances
# comparable across anchors, not only around each one:
#
# $$L_{Quad} = \max\bigl(0,\ m_1 + D(x_a, x_p) - D(x_a, x_{n_1})\bigr) + \max\bigl(0,\ m_2 + D(x_a, x_p) - D(x_{n_1}, x_{n_2})\bigr).$$
#
# **N-pair** (Sohn, Figure 2.10f). The batch is $N$ pairs $(x_i, x_i^+)$ of $N$ different classes; the other
# $N-1$ positives serve as anchor $i$'s negatives. With inner products $f_i^\top f_j^+$ of the descriptors, anchor
# $i$ must pick out its own positive, a softmax cross-entropy over $N$ candidates:
#
# $$L_{N\text{-}pair} = \frac1N \sum_{i=1}^{N} \log\Bigl(1 + \sum_{j \ne i} \exp\bigl(f_i^\top f_j^+ - f_i^\top f_i^+\bigr)\Bigr).$$
#
# **Lifted structure** (Oh Song et al., Figure 2.10g). Each matching pair $(i, j)$ faces *every* negative of
# either member, combined by a log-sum-exp — a smooth maximum that lets the hardest negatives dominate while
# all get a gradient. Here $d$ is the Euclidean distance (not squared, as in the paper), $\alpha$ a margin and
# $P$ the set of matching pairs:
#
# $$J_{ij} = \log\Bigl(\sum_{k:\,y_k \ne y_i} e^{\alpha - d_{ik}} + \sum_{l:\,y_l \ne y_j} e^{\alpha - d_{jl}}\Bigr) + d_{ij},
# \qquad L_{Lifted} = \frac{1}{2|P|} \sum_{(i,j) \in P} \max(0, J_{ij})^2.$$
#
# **Proxy-NCA** (Movshovitz-Attias et al., Figure 2.10j). One learned *proxy* $p_c$ per class stands in for
# the class's samples, so a row is compared with $C$ proxies instead of with other rows and nothing needs
# mining. With $\hat{\ }$ marking L2 normalisation and a scale $s$,
#
# $$L_{Proxy} = -\log \frac{\exp\bigl(-s\,D(\hat x, \hat p_y)\bigr)}{\sum_{c} \exp\bigl(-s\,D(\hat x, \hat p_c)\bigr)}.$$
#
# (The library's denominator runs over all proxies, as pytorch-metric-learning's does; the paper leaves out
# $p_y$, which makes the loss unbounded below.) Each loss's `terms(x, labels)` returns its terms before the
# mean. On a toy batch of 4 objects × 3 views, how many terms does each loss have, and how many still push?

# %%
g = torch.Generator().manual_seed(7)
centres = rk.nn.functional.l2n(torch.randn(4, 8, generator=g))
y_toy = torch.arange(4).repeat_interleave(3)  # 4 objects × 3 views
x_toy = rk.nn.functional.l2n(centres[y_toy] + 0.5 * torch.randn(12, 8, generator=g))
a_t, p_t, n_t = L.all_triplets(y_toy)
d_toy = L.sq_distances(x_toy)
proxy_nca = L.ProxyNCALoss(8, 4)
proxy_nca.init_from_means(x_toy, y_toy)  # proxies at the class means, as the trainer starts them
more_losses = {
    "triplet, Eq. 2.17": (L.TripletLoss(0.1), (0.1 + d_toy[a_t, p_t] - d_toy[a_t, n_t]).clamp(min=0), "triplet"),
    "quadruplet, Fig. 2.10d": (L.QuadrupletLoss(0.1, 0.05), None, "quadruplet"),
    "N-pair, Fig. 2.10f": (L.NPairLoss(), None, "anchor (one pair per class)"),
    "lifted structure, Fig. 2.10g": (L.LiftedStructureLoss(1.0), None, "ordered matching pair"),
    "Proxy-NCA, Fig. 2.10j": (proxy_nca, None, "row"),
}
rows = []
with torch.no_grad():
    for name, (loss, terms, unit) in more_losses.items():
        terms = loss.terms(x_toy, y_toy) if terms is None else terms
        rows.append({"loss": name, "value": loss(x_toy, y_toy).item(), "one term per": unit, "terms": len(terms),
                     "share non-zero": (terms > 0).float().mean().item()})
more_table = pd.DataFrame(rows).set_index("loss")
more_table.round(3)

# %%
share = more_table["share non-zero"]
n_neg = 2 * int((y_toy != 0).sum())  # negatives of both members of a matching pair
floor = np.log(n_neg) + 1.0 - 2.0  # J ≥ log(n_neg) + α − max d, and d ≤ 2 on unit vectors
print(f"The hinge losses switch off what they already satisfy: {share.iloc[0]:.0%} of the triplets and "
      f"{share.iloc[1]:.0%} of the quadruplets still push. N-pair and Proxy-NCA are softmax cross-entropies: "
      f"{min(share.iloc[2], share.iloc[4]):.0%} of their terms are above zero, smaller when satisfied but never off. "
      f"The lifted loss is a hinge, yet its log-sum-exp over the {n_neg} negatives of a pair is at least "
      f"log({n_neg}) + α − 2 = {floor:.2f} {'>' if floor > 0 else '≤'} 0 on unit vectors with α = 1, so {share.iloc[3]:.0%} of its pairs push.")

# %% [markdown]
# Write the lifted structure term of one matching pair. (Training with any of the four is
# `T.finetune(learn, val, T.FinetuneConfig(loss="lifted"))`; N-pair wants two views per object in a batch,
# `m=2`, and the quadruplet loss at least three objects per batch.)

# %% nbgrader={"grade": false, "grade_id": "lifted_pair", "locked": false, "schema_version": 3, "solution": true}
def my_lifted_pair(x, labels, i, j, margin=1.0):
    """Lifted structured loss of ONE matching pair (i, j): ½·max(0, J_ij)² (Oh Song et al.; survey Fig. 2.10g).

    x: (B, D) tensor of rows; labels: (B,) tensor; i ≠ j with labels[i] == labels[j]. d is the Euclidean
    distance (NOT squared); J_ij = log(Σ_{k: y_k ≠ y_i} exp(margin − d_ik) + Σ_{l: y_l ≠ y_j} exp(margin − d_jl)) + d_ij.
    Returns a scalar tensor.
    """
    ### BEGIN SOLUTION
    d = torch.cdist(x, x)
    neg = labels != labels[i]  # y_i = y_j: both members have the same negatives
    soft = torch.logsumexp(torch.cat([margin - d[i, neg], margin - d[j, neg]]), dim=0)
    return 0.5 * (soft + d[i, j]).clamp(min=0) ** 2
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "lifted_pair_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
gen = torch.Generator().manual_seed(94)
cases = []
for size, classes, i, margin in ((8, 3, 0, 1.0), (12, 4, 1, 0.5), (10, 2, 3, 2.0)):
    x = 2 * torch.randn(size, 6, generator=gen, dtype=torch.float64)  # rows of any length
    cases.append((x, torch.arange(size) % classes, i, i + classes, margin))  # rows i and i + classes match


def library_lifted_pair(x, labels, i, j, margin):
    a, b, same = L.all_pairs(labels)
    k = ((a[same] == i) & (b[same] == j)).nonzero().item()  # the pair's place among the matching pairs
    return L.LiftedStructureLoss(margin).terms(x, labels)[k]


rk.grading.check(my_lifted_pair, library_lifted_pair, cases, name="my_lifted_pair")

# %% [markdown]
# ## 6 · NetVLAD: VLAD as a layer, trained end to end
#
# VLAD (survey Eqs. 2.7–2.8, notebook 05) sums each local descriptor's residual to its *nearest* word. That
# choice is a hard indicator, so no gradient reaches the words or the features that chose them, and VLAD can
# only be learned apart from the network. NetVLAD (Arandjelović et al., CVPR 2016,
# [arXiv:1511.07247](https://arxiv.org/abs/1511.07247); Table 2.3's NetVLAD row, trained with the triplet loss)
# softens the choice. For the L2-normalised columns $x_i$ of the last conv map and $K$ words $c_k$,
#
# $$\bar a_k(x_i) = \frac{e^{\,w_k^\top x_i + b_k}}{\sum_{k'} e^{\,w_{k'}^\top x_i + b_{k'}}},\qquad
# V_k = \sum_i \bar a_k(x_i)\,(x_i - c_k),$$
#
# then each $V_k$ is L2-normalised (intra-normalisation) and the $K \cdot D$ numbers once more as a whole.
# Writing $-\alpha\lVert x - c_k\rVert^2 = 2\alpha c_k^\top x - \alpha\lVert c_k\rVert^2 - \alpha\lVert x\rVert^2$ shows
# where the layer starts: $w_k = 2\alpha c_k$, $b_k = -\alpha\lVert c_k\rVert^2$ (the last term is the same for
# every word and cancels), and with a large $\alpha$ the softmax becomes VLAD's indicator. Training then moves
# $w$, $b$ and $c$ separately, together with the conv stages below, by the same triplet loss as section 3.
#
# First write the layer's two operations yourself.

# %% nbgrader={"grade": false, "grade_id": "netvlad_layer", "locked": false, "schema_version": 3, "solution": true}
def my_netvlad(columns, words, alpha):
    """Soft VLAD of one image before the final L2: (T, D) columns, (K, D) words, a float alpha -> (K*D,) tensor.

    Normalise each column to unit length, weight it over the words by a softmax of -alpha * squared distance,
    sum the weighted residuals x - c_k per word, L2-normalise each word's sum (eps 1e-6), and flatten word by word.
    """
    ### BEGIN SOLUTION
    x = columns / (columns.norm(dim=1, keepdim=True) + 1e-6)
    a = torch.softmax(-alpha * torch.cdist(x, words) ** 2, dim=1)  # T×K
    v = a.T @ x - a.sum(dim=0)[:, None] * words  # K×D
    return (v / (v.norm(dim=1, keepdim=True) + 1e-6)).reshape(-1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "netvlad_layer_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
gen = torch.Generator().manual_seed(93)
cases = []
for (t, d, k, alpha) in ((12, 6, 3, 5.0), (20, 8, 4, 30.0), (9, 5, 2, 0.5)):
    cases.append((torch.randn(t, d, generator=gen), rk.nn.functional.l2n(torch.randn(k, d, generator=gen)), alpha))


def library_netvlad(columns, words, alpha):
    layer = NetVLAD(words.shape[1], clusters=len(words))
    layer.set_words(words, alpha)
    with torch.no_grad():
        return layer(columns.T[None, :, :, None])[0]  # one image whose T columns form a T×1 map


rk.grading.check(my_netvlad, library_netvlad, cases, name="my_netvlad")

# %% [markdown]
# Now the layer on the tail of section 3. Its words start as k-means centres of the tail's columns on
# learning images (`T.init_pooling`, as the paper initialises them), with $\alpha$ set so that the second-nearest
# word weighs about 1% of the nearest; that starting point is an off-the-shelf VLAD of the conv columns. Then
# the triplet loss trains words, assignment and the conv stages together, with the validation objects choosing
# the epoch exactly as for GeM.

# %%
vlad_cfg = replace(E.SMALL_CONFIG if SMALL else E.FULL_CONFIG, pooling="netvlad", clusters=NETVLAD_WORDS)
seeded = T.init_pooling(T.TailNet.for_config(vlad_cfg).eval(), data.train, vlad_cfg.seed)
vlad_before = T.FinetuneResult(seeded, L.TripletLoss(), [], 0, set(), vlad_cfg)
vlad_after, _ = E.run_method(data, "triplet", cfg=vlad_cfg)
gem_rows = scores[(scores.protocol == "all") & scores.method.isin(["off-the-shelf", "triplet"])]
vlad_rows = pd.DataFrame([{"pooling": f"NetVLAD, {NETVLAD_WORDS} words", "stage": stage, **r}
                          for stage, res in (("before", vlad_before), ("after", vlad_after))
                          for r in E.test_scores(res, data) if r["protocol"] == "all"])
netvlad_table = pd.concat([gem_rows.assign(pooling="GeM")[["pooling", "stage", "mAP"]],
                           vlad_rows[["pooling", "stage", "mAP"]]], ignore_index=True)
netvlad_table["dim"] = [T.TailNet.for_config(E.SMALL_CONFIG).dim] * len(gem_rows) + [seeded.dim] * len(vlad_rows)
netvlad_table.round(4)

# %%
m = netvlad_table.set_index(["pooling", "stage"])["mAP"]
vlad_name = f"NetVLAD, {NETVLAD_WORDS} words"
for name in ("GeM", vlad_name):
    gap = m[name, "after"] - m[name, "before"]
    verdict = (f"fine-tuning {'raises' if gap > 0 else 'lowers'} it" if abs(gap) >= 0.03
               else "the change is below 0.03, not evidence either way")
    print(f"{name}: test mAP {m[name, 'before']:.3f} before, {m[name, 'after']:.3f} after ({gap:+.3f}); {verdict}.")
best_epoch = vlad_after.best_epoch
print(f"NetVLAD's validation mAP by epoch: {[round(h['val_mAP'], 3) for h in vlad_after.history]} "
      f"(epoch {best_epoch} kept).")

# %% [markdown]
# ## What to notice
#
# * Every loss is a few tensor operations on distances; what differs is *which* pairs get a gradient:
#   the Siamese loss pulls every matching pair to distance 0, the double margin stops at $m_1$, the
#   triplet loss only cares about the order of positive and negative, AP about the whole ranking.
# * Mined negatives come from *other* objects that the current descriptor ranks close to the query (the
#   cosines in the table of section 2); the fractions printed there say how many triplets of each kind are active.
# * The gain or loss of each method is printed in section 4 from this run's numbers. Table 2.3's landmark
#   results come from training and test images of the same domain (buildings); here the test objects are new.
# * The validation curve, not the test score, picks the epoch. The test split never chooses anything.
# * NetVLAD (section 6) starts as VLAD on the tail's conv columns and is trained by the same loss; whether its
#   8·1280 dimensions beat 1280-d GeM on these objects, before or after training, is printed there from this run.
# * The losses of section 5 differ in what a term holds (a quadruplet, one pair per class, all negatives of a
#   pair, a proxy per class) and in whether satisfied terms go silent: the shares printed there say which.
#
# ## Questions
#
# **Question 3.** Why is the epoch chosen on held-out validation objects and not on the test objects?

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_validation", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# Any choice made by looking at the test scores — an epoch, a margin, a loss — adapts the method to those
# particular test objects, so the reported test mAP would be optimistic and would no longer estimate how the
# descriptor does on new objects. Whole held-out objects mimic the test situation, unseen objects,
# while leaving the test split untouched; holding out views of training objects instead would reward
# memorising those objects.

# %% [markdown]
# **Question 4.** The triplet loss asks only that the negative be farther than the positive by $m$; the
# Siamese loss asks that matching pairs reach distance 0. Which is closer to what retrieval measures, and why
# might the Siamese loss still be useful?

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_order", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# Retrieval is scored by ranks (AP), and ranks depend only on the order of distances, which is exactly what
# the triplet loss constrains for one query; collapsing every matching pair to one point is more than a
# ranking needs and can fight the natural variation between views. The Siamese loss, however, constrains
# absolute distances, so a single threshold separates matches from non-matches across queries, and its pairs
# are cheaper to form; the listwise AP loss goes furthest towards the metric by scoring a whole ranking.

# %% [markdown]
# **Question 5.** NetVLAD starts from weights that make it (almost) hard-assignment VLAD. Why not start from
# random words and assignment, and what does training gain over fitting VLAD's k-means words once?

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_netvlad", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# Random words describe nothing: the residuals to them carry no structure and the softmax spreads each column
# evenly, so the first epochs would only rediscover what k-means finds in seconds; starting at VLAD gives a
# descriptor that already retrieves, and the loss only has to improve it. K-means places words where
# columns are dense, which is not the same as where they separate matching from non-matching images; the
# triplet loss moves the words, the assignment (no longer tied to the words) and the conv features below them
# towards what ranks the positive above the negatives. With few training objects that gain can be small or
# negative on new objects — the table of section 6 says which happened here.
