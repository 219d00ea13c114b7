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
# **Non-parametric spatial attention** (Figure 2.8b): how strongly the channels fire at each
# position. The *sum* map adds the channels; CroW normalises that sum and takes a root; the *max*
# map keeps the strongest channel. **Channel attention** (Figure 2.8a): CroW's idf-like weight —
# channels that fire at few positions are more telling.

# %%
s = x.sum(dim=1, keepdim=True).clamp(min=0)
sum_map = s / s.amax(dim=(2, 3), keepdim=True)
crow_map = (s / s.pow(2).sum(dim=(2, 3), keepdim=True).sqrt()).sqrt()          # a = b = 2
fired = (x > 0).float().mean(dim=(2, 3))
channel = torch.log((x.shape[1] * 1e-6 + fired.sum(1, keepdim=True)) / (1e-6 + fired))

assert_allclose(sum_map, att.spatial_attention(x, "sum"), rtol=1e-5)
assert_allclose(crow_map, att.spatial_attention(x, "crow"), rtol=1e-4, atol=1e-6)
assert_allclose(channel, att.channel_attention(x), rtol=1e-4)

# %% [markdown]
# **Attention pooling**: a weighted average of the columns, `Σ a_ij x_ij / Σ a_ij`, optionally
# times channel weights. A uniform map gives average pooling; CroW = both weightings.

# %%
pooled = (crow_map * x).sum(dim=(2, 3)) / crow_map.sum(dim=(2, 3)) * channel
assert_allclose(pooled, att.attention_pool(x, crow_map, channel), rtol=1e-4)
assert_allclose(att.attention_pool(x), x.mean(dim=(2, 3)), rtol=1e-5)

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
# ## What to notice
#
# * COIL-100 objects sit centred on a black background: plain pooling already ignores the
#   background (its activations are near zero), so attention has little to remove and the variants
#   land within a few points of each other. On cluttered landmark photos, where CroW and DELF were
#   designed, the gap is larger (Table 2.2's CroW beats SPoC on Oxford5k by ~10 points).
# * The maps agree on *where* the object is but differ in how peaked they are: max and CAM maps
#   concentrate on a few cells, the sum and CroW maps are smooth.
# * The learned head is chosen on held-out learning objects; its validation mAP can peak early
#   (epoch 0 is the untrained head — a near-uniform map).
#
# ## Exercises
#
# 1. Combine CAM with CroW's channel weights (`att.attention_pool(x, att.cam_attention(x, W, b),
#    att.channel_attention(x))`). Does it help?
# 2. Train the head with `hidden=64` and with twice the epochs. Do the validation curve and the
#    test mAP move together?
# 3. Use GeM (p = 3) inside the attention pooling: `att.attention_pool(x, crow_map, p=3.0)`.
#
# <details><summary>Solutions</summary>
#
# 1. Score it with `offtheshelf.score(...)` on all test maps (loop over chunks as in
#    `E.attention_descriptors`); channel weights add a point or so, as they do for CroW.
# 2. `E.train_head(coil, epochs=2 * EPOCHS, hidden=64)`, then `E.attention(coil, epochs=..., hidden=64)`.
#    Validation objects differ from test objects, so the two curves agree only roughly — which is
#    why the epoch is chosen on validation, never on test.
# 3. The power mean sharpens the pooling towards the strongest columns inside the attended area;
#    on COIL it moves mAP by about as much as GeM vs average pooling does without attention.
#
# </details>
