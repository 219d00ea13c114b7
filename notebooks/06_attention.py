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
# # 06 · Attention: where a descriptor should look
#
# **Goals.** Build the attention maps of the survey's Figure 2.8 — channel weights, spatial maps
# computed from the activations, class activation maps, and a small learned head — check each
# against the library, train the learned head on the learning split, look at the heat maps, and
# measure whether weighting positions beats plain pooling on COIL-100.
#
# **Survey.** §2.3.2.3 (attention mechanisms), Figure 2.8; Table 2.2 (CroW row).
#
# **Prerequisites.** Notebooks 03 (pooling, CroW, CAM) and 05.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
from numpy.testing import assert_allclose

import retrievalkit as rk
from retrievalkit import figures_embedding as fe
from retrievalkit.experiments import embedding as E
from retrievalkit.experiments import offtheshelf
from retrievalkit.nn import attention as att
from retrievalkit.nn import functional as F

# %% tags=["parameters"]
SMALL = rk.config.SMALL  # 10 test + 10 learning objects at 160 px instead of 50 + 50 at 224 px
EPOCHS = E.SMALL_ATTENTION_EPOCHS if SMALL else E.ATTENTION_EPOCHS

# %% [markdown]
# ## 1 · The maps, written out
#
# Real head maps of EfficientNet-Lite0 (kept in the feature cache: N × 1280 × h × w) for four test
# objects.

# %%
coil = offtheshelf.Coil(small=SMALL, progress=False)
maps = E.deep_maps(coil, "test")
rows = np.asarray(coil.split("test").query_db_index)[::4][:4]
x = torch.as_tensor(np.asarray(maps[rows], dtype=np.float32))
x.shape

# %% [markdown]
# **Papers.** CroW: Kalantidis, Mellina & Osindero, *Cross-dimensional weighting for aggregated deep
# convolutional features* ([arXiv:1512.04065](https://arxiv.org/abs/1512.04065)). CAM: Zhou et al.,
# *Learning deep features for discriminative localization* ([arXiv:1512.04150](https://arxiv.org/abs/1512.04150));
# CAM for retrieval: Jimenez, Alvarez & Giró-i-Nieto, *Class-weighted convolutional features for visual
# instance search* ([arXiv:1707.02581](https://arxiv.org/abs/1707.02581)). DELF's learned attention:
# Noh et al., *Large-scale image retrieval with attentive deep local features*
# ([arXiv:1612.06321](https://arxiv.org/abs/1612.06321)). The survey: [arXiv:2101.11282](https://arxiv.org/abs/2101.11282).
#
# The survey describes attention in words and in its Figure 2.8 rather than with numbered equations;
# the formulas below are CroW's, in our notation. A map $x\in\mathbb{R}^{C\times H\times W}$ has a
# column $x_{ij}\in\mathbb{R}^C$ at every position $(i, j)$.
#
# **Non-parametric spatial attention** (survey Figure 2.8b): how strongly the channels fire at each
# position. With the clamped channel sum $S_{ij} = \max\!\big(0, \sum_c x_{c,ij}\big)$, CroW's weights are
# $$\alpha_{ij} = \left(\frac{S_{ij}}{\lVert S\rVert_a}\right)^{1/b},\qquad \lVert S\rVert_a = \Big(\sum_{ij} S_{ij}^a\Big)^{1/a},\quad a = b = 2 .$$

# %% nbgrader={"grade": false, "grade_id": "crow_spatial", "locked": false, "schema_version": 3, "solution": true}
def my_crow_spatial(x, a=2.0, b=2.0):
    """CroW spatial weights: x (N, C, H, W) tensor -> (N, 1, H, W).

    Sum over channels, clamp negatives to 0, divide by the a-norm over the H*W positions,
    take the b-th root (survey §2.3.2.3, Figure 2.8b).
    """
    ### BEGIN SOLUTION
    s = x.sum(dim=1, keepdim=True).clamp(min=0)
    return (s / s.pow(a).sum(dim=(2, 3), keepdim=True).pow(1.0 / a)).pow(1.0 / b)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "crow_spatial_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
gen = torch.Generator().manual_seed(61)
cases = [(torch.randn(2, 16, 5, 5, generator=gen).relu(), 2.0, 2.0),
         (torch.randn(1, 32, 7, 4, generator=gen), 2.0, 2.0),          # negative sums must be clamped
         (torch.rand(3, 8, 3, 3, generator=gen), 1.0, 3.0)]
rk.grading.check(my_crow_spatial, lambda x, a, b: att.spatial_attention(x, "crow", a=a, b=b), cases,
                 name="my_crow_spatial")

# %% [markdown]
# **Channel attention** (survey Figure 2.8a): CroW's idf-like weight. With $q_c$ the fraction of
# positions where channel $c$ is non-zero, and a small $\varepsilon$,
# $$\Omega_c = \log\frac{C\varepsilon + \sum_{h} q_h}{\varepsilon + q_c},$$
# so a channel that fires at few positions (small $q_c$) counts more — as a rare word does in tf-idf.

# %% nbgrader={"grade": false, "grade_id": "crow_channel", "locked": false, "schema_version": 3, "solution": true}
def my_crow_channel(x, eps=1e-6):
    """CroW channel weights: x (N, C, H, W) tensor -> (N, C), with q_c = fraction of positions where x > 0."""
    ### BEGIN SOLUTION
    q = (x > 0).float().mean(dim=(2, 3))
    return torch.log((x.shape[1] * eps + q.sum(dim=1, keepdim=True)) / (eps + q))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "crow_channel_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
gen = torch.Generator().manual_seed(62)
cases = [(torch.randn(2, 12, 5, 5, generator=gen) - 0.8,), (torch.randn(1, 40, 6, 6, generator=gen).relu(),)]
rk.grading.check(my_crow_channel, lambda x: att.channel_attention(x, eps=1e-6), cases, name="my_crow_channel")

# %% [markdown]
# **Attention pooling.** Normalise the spatial weights to sum to 1 and take the weighted sum of the
# columns, then multiply channel-wise by $\Omega$ (if given):
# $$v = \Omega \odot \frac{\sum_{ij}\alpha_{ij}\,x_{ij}}{\sum_{ij}\alpha_{ij}} .$$
# A uniform map gives average pooling (SPoC without its Gaussian); CroW is both weightings; DELF
# replaces $\alpha$ by a small network's output (Figure 2.8c).

# %% nbgrader={"grade": false, "grade_id": "attention_pool", "locked": false, "schema_version": 3, "solution": true}
def my_attention_pool(x, spatial, channel=None):
    """Weighted average of the columns: x (N, C, H, W), spatial (N, 1, H, W) >= 0, channel (N, C) or None
    -> (N, C), not L2-normalised."""
    ### BEGIN SOLUTION
    w = spatial / spatial.sum(dim=(2, 3), keepdim=True)
    v = (w * x).sum(dim=(2, 3))
    return v if channel is None else v * channel
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "attention_pool_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
gen = torch.Generator().manual_seed(63)
x1, x2 = torch.rand(2, 10, 4, 4, generator=gen), torch.randn(3, 6, 5, 3, generator=gen)
cases = [(x1, 3 * torch.rand(2, 1, 4, 4, generator=gen), None),
         (x2, torch.rand(3, 1, 5, 3, generator=gen), torch.rand(3, 6, generator=gen)),
         (x1, torch.ones(2, 1, 4, 4), None)]                                  # uniform map = average pooling
rk.grading.check(my_attention_pool, lambda x, s, c: att.attention_pool(x, s, c), cases, name="my_attention_pool")

# %% [markdown]
# From here on we use the library's versions on the four real maps.

# %%
crow_map, channel = att.spatial_attention(x, "crow"), att.channel_attention(x)
sum_map, max_map = att.spatial_attention(x, "sum"), att.spatial_attention(x, "max")
pooled = att.attention_pool(x, crow_map, channel)
pooled.shape

# %% [markdown]
# **CAM**: the ImageNet classifier applied at every position gives one map per class; we average
# the maps of each image's top classes (`F.CAM_TOP_CLASSES` of them, each scaled to [0, 1]).

# %%
net = rk.backbones.load_backbone(E.BACKBONE, device="cpu")
W, b = net.classifier_weight.float(), net.classifier_bias.float()
scores = torch.einsum("kc,nchw->nkhw", W, x)                          # class maps, N × 1000 × h × w
top = (x.mean(dim=(2, 3)) @ W.T + b).topk(F.CAM_TOP_CLASSES, dim=1).indices   # top classes of the pooled vector
cams = scores.gather(1, top[:, :, None, None].expand(-1, -1, *x.shape[2:])).clamp(min=0)
cams = cams / cams.amax(dim=(2, 3), keepdim=True).clamp(min=1e-6)
cam_map = cams.mean(1, keepdim=True)
cam_map = cam_map / cam_map.amax(dim=(2, 3), keepdim=True)
assert_allclose(cam_map, att.cam_attention(x, W, b), rtol=1e-3, atol=1e-4)

# %% [markdown]
# ## 2 · A learned attention head (Figure 2.8c)
#
# DELF's block — 1×1 conv → ReLU → 1×1 conv → softplus — scores each position from its own 1280
# activations. We train it on the frozen maps of learning objects with a cosine-softmax
# (classification) loss; the last 20% of the learning objects are held out to pick the epoch. The
# test objects are never seen.

# %%
head, history = E.train_head(coil, epochs=EPOCHS)
history.round(4)

# %%
fig = fe.training_curve(history)

# %% [markdown]
# ## 3 · Heat maps
#
# Every kind of map over the same test images (each map min–max scaled for display).

# %%
images, panel_maps = E.attention_examples(coil, n=4, epochs=EPOCHS)
fig = fe.attention_panel(images, panel_maps)

# %% [markdown]
# ## 4 · Attention vs plain pooling on COIL-100
#
# Same maps, same L2 normalisation, no whitening: only the weighting changes.

# %%
res = E.attention(coil, epochs=EPOCHS)
res.pivot_table(index=["variant", "kind"], columns="protocol", values="mAP", sort=False).round(4)

# %%
fig = fe.attention_bars(res)

# %% [markdown]
# ## 5 · How peaked is each map?
#
# A map that puts most of its weight on a few positions pools almost like max pooling; a flat one
# like average pooling. Left: the share of the total weight held by the top positions, per kind of
# map (averaged over all test images; 1.0 on the diagonal = a uniform map). Right: the distribution
# of CroW's channel weights $\Omega$ over the 1280 channels of the four example images.

# %%
x_all = torch.as_tensor(np.asarray(maps[:200], dtype=np.float32))
fc = (W, b)
kinds = {"sum": att.spatial_attention(x_all, "sum"), "crow": att.spatial_attention(x_all, "crow"),
         "max": att.spatial_attention(x_all, "max"), "cam": att.cam_attention(x_all, *fc)}
n_pos = x_all.shape[2] * x_all.shape[3]
share = {}
for kind, m in kinds.items():
    w = m.flatten(1).sort(dim=1, descending=True).values
    share[kind] = (w.cumsum(1) / w.sum(1, keepdim=True).clamp(min=1e-12)).mean(0).numpy()
positions = np.arange(1, n_pos + 1) / n_pos

fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
for kind, curve in share.items():
    axes[0].plot(positions, curve, marker="o", ms=3, label=kind)
axes[0].plot([0, 1], [0, 1], ls=":", color="grey", label="uniform")
axes[0].set(xlabel="fraction of positions (largest weights first)", ylabel="fraction of total weight",
            title="Concentration of the spatial maps")
axes[0].legend(loc="lower right", fontsize=8)
axes[1].hist(channel.flatten().numpy(), bins=40, color="tab:purple")
axes[1].set(xlabel=r"channel weight $\Omega_c$", ylabel="channels × images", title="CroW channel weights")

top = max(1, round(0.1 * n_pos))
top_share = {kind: float(curve[top - 1]) for kind, curve in share.items()}
print(f"Weight held by the top {top} of {n_pos} positions ({100 * top / n_pos:.0f}%): "
      + ", ".join(f"{k} {v:.2f}" for k, v in sorted(top_share.items(), key=lambda kv: -kv[1])))
silent = (x > 0).flatten(2).any(2).logical_not()
print(f"{silent.float().mean():.0%} of the example images' channels never fire (Ω = {channel[silent].min():.1f} for "
      f"them, against at most {channel[~silent].max():.1f} for the others): the tall bar on the right. Their pooled "
      f"value is 0, so their large weight changes nothing.")

# %% [markdown]
# ## What to notice
#
# Computed from this run's numbers:

# %%
main = res[res["protocol"] == "all"].set_index("variant")["mAP"]
spread = main.max() - main.min()
print(f"• The {len(main)} variants span {spread:.3f} mAP on COIL-100 ({main.idxmin()} {main.min():.3f} → "
      f"{main.idxmax()} {main.max():.3f}).")
peaked = max(top_share, key=top_share.get)
flat = min(top_share, key=top_share.get)
print(f"• Most peaked map: {peaked} (top {100 * top / n_pos:.0f}% of positions hold {top_share[peaked]:.2f} of the "
      f"weight); flattest: {flat} ({top_share[flat]:.2f}).")
best_epoch = int(history.loc[history["val_mAP"].idxmax(), "epoch"]) if "val_mAP" in history else None
if best_epoch is not None:
    print(f"• The learned head's validation mAP peaks at epoch {best_epoch} of {int(history['epoch'].max())} "
          "(epoch 0 = the untrained head).")

# %% [markdown]
# COIL-100 objects sit centred on a black background, where activations are already near zero, so
# plain pooling ignores most of the background by itself. CroW and DELF were designed for cluttered
# landmark photos, where the survey's Table 2.2 has CroW well ahead of SPoC on Oxford5k.
#
# ## 6 · The contrast: attention vs none

# %%
plain = main["average (SPoC)"]
attended = main[[v for v in main.index if v not in ("average (SPoC)", "GeM p=3")]]
best = attended.idxmax()
gap = attended[best] - plain
mode = "SMALL" if SMALL else "full"
if abs(gap) >= 0.03:
    print(f"On COIL-100 ({mode} mode) the best attention variant ({best}, {attended[best]:.3f} mAP) "
          f"{'beats' if gap > 0 else 'loses to'} plain average pooling ({plain:.3f}) by {abs(gap):.3f} mAP.")
else:
    print(f"On COIL-100 ({mode} mode) the best attention variant ({best}, {attended[best]:.3f}) and plain average "
          f"pooling ({plain:.3f}) differ by {gap:+.3f} mAP, below 0.03: on this data that is not evidence either way.")

# %% [markdown]
# ## Questions
#
# **Question 1.** Attention pooling divides by $\sum_{ij}\alpha_{ij}$. Why does multiplying a spatial
# map by a constant not change the final (L2-normalised) descriptor, and what does a one-hot map give?

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_scale", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# The constant appears in the numerator and in the denominator, so it cancels; even without the
# division it would only scale $v$, which the L2 normalisation undoes. Only the *relative* weights
# matter. A one-hot map gives all weight to one position, so the descriptor is that position's column
# $x_{ij}$ (times $\Omega$) — one local feature instead of a summary of the image.

# %% [markdown]
# **Question 2.** CroW's channel weight resembles idf in text retrieval. What plays the role of a
# "document" and of a "word", and why should rarely firing channels count more?

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_idf", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# A position of the map plays the document, a channel the word: $q_c$ is the fraction of positions
# ("documents") in which channel $c$ ("word") occurs. A channel that fires almost everywhere (a
# texture or background detector) says little about *which* object is shown, like "the" in a text; a
# channel that fires at a few positions responds to something specific, so boosting it makes the
# descriptor more discriminative. Because $\Omega$ is computed per image, the weighting adapts to the
# image, not to a corpus.

# %% [markdown]
# **Question 3.** Section 6 printed the gap between attention and plain pooling on COIL-100. Why is a
# small gap here no argument against attention on landmark datasets?

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_coil", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# Attention helps by down-weighting irrelevant positions. COIL-100 photos have one centred object on a
# black background whose activations are already near zero, so average pooling is already dominated
# by the object and there is little for attention to remove. Landmark photos contain sky, people,
# cars and other buildings; there the weighting changes which columns dominate, and the gap can be
# large. A result on one dataset only speaks for data like it.

# %% [markdown]
# **Question 4.** The learned head is chosen by its validation mAP on held-out *learning* objects.
# Why not pick the epoch with the best test mAP, and why do the validation and test curves agree only
# roughly?

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_val", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# Picking on the test split turns the test set into training data for the choice of epoch: the
# reported mAP would be optimistic and would not predict performance on new images. Validation
# objects are different objects from the test ones (unseen classes), so what helps on one set of
# objects helps on the other only on average; with few objects in SMALL mode both curves are noisy,
# and their peaks need not coincide.
