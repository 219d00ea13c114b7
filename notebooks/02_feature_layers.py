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
# # 02 · Feature layers: which layer, how many passes, fused or not
#
# **Goals.** Compare descriptors read from different depths of one network (conv stages vs the
# fully-connected end), single-pass vs multi-pass extraction (Figure 2.7: rigid grid, spatial
# pyramid, dense patches) with their cost per image, and layer-level / model-level fusion.
#
# **Survey.** §2.3.1.1 (feedforward schemes), §2.3.1.2 (deep feature selection), §2.3.1.3 (fusion),
# Table 2.2 and the discussion in §2.5.3.
#
# **Prerequisites.** Notebooks 01 and 03 (pooling). Features are cached, so re-runs are fast.

# %%
import numpy as np
from numpy.testing import assert_allclose

import retrievalkit as rk
from retrievalkit.experiments import offtheshelf

# %% tags=["parameters"]
SMALL = rk.config.SMALL
BACKBONE = "efficientnet_lite0"
SCHEMES = ("grid", "pyramid") if SMALL else offtheshelf.MULTIPASS_SCHEMES
PASS_SIDE = 96 if SMALL else offtheshelf.MULTIPASS_SIDE

# %%
coil = offtheshelf.Coil(small=SMALL, progress=False)
test = coil.split("test")

# %% [markdown]
# ## 1 · Layer by layer, and conv vs fully-connected
#
# One forward pass gives every stage. Conv stages are GeM-pooled; `pool` (the average-pooled head,
# i.e. what the classifier reads) and `logits` (the 1000 ImageNet scores) play the role of the
# fully-connected layers AlexNet/VGG provide as fc6/fc7.

# %%
layers_df = offtheshelf.layers(coil, BACKBONE)
layers_df[layers_df["protocol"] == "all"][["variant", "kind", "dim", "mAP", "mP@10"]]

# %%
fig = rk.figures.variant_bars(layers_df, title=f"{BACKBONE}: layers, conv vs FC-like, fusion")

# %% [markdown]
# The survey reports the same tendencies on landmark data (fully-connected features lower than
# conv ones; layer fusion helping):

# %%
quotes = rk.survey.text_numbers()
quotes[quotes["topic"].isin(["fc_vs_conv", "layer_fusion", "model_fusion"])][["ref", "dataset", "metric", "value", "claim"]]

# %% [markdown]
# ## 2 · Layer-level fusion, by hand
#
# Fusion = L2-normalise each layer's pooled vector, concatenate, L2-normalise again (each layer then
# weighs the same, whatever its width).

# %%
f = coil.extract("test", BACKBONE, offtheshelf.layers_for(BACKBONE))
blocks = [f.get(layer, "gem") for layer in ("stage6", "stage7", "head")]  # already L2-normalised rows
fused = np.concatenate(blocks, axis=1)
fused /= np.linalg.norm(fused, axis=1, keepdims=True)
assert_allclose(fused, rk.features.fuse_layers(f, [("stage6", "gem"), ("stage7", "gem"), ("head", "gem")]), atol=1e-5)

# %% [markdown]
# ## 3 · Multiple passes: patches of the image (Figure 2.7)
#
# Instead of one forward pass over the whole image, cut it into patches — a rigid grid, a spatial
# pyramid (whole image + finer grids), or dense overlapping windows — run the network on each, and
# merge the patch vectors (L2-normalise each, then max). Every patch is a forward pass, so the cost
# per image grows with the number of patches; we run all views at the same small side so that
# four grid patches cost about one full-size pass.

# %%
boxes = rk.features.grid_boxes(128, 128, n=2)
assert boxes == [(0, 0, 64, 64), (64, 0, 128, 64), (0, 64, 64, 128), (64, 64, 128, 128)]
{kind: len(rk.features.make_scheme(kind).boxes(128, 128)) for kind in ("grid", "pyramid", "dense")}

# %%
mp = offtheshelf.multipass(coil, BACKBONE, schemes=SCHEMES, side=PASS_SIDE)
mp[mp["protocol"] == "all"][["variant", "ms_per_image", "mAP", "mP@10"]]

# %%
fig = rk.figures.variant_bars(mp, time_column="ms_per_image", title="single vs multi-pass: mAP and time per image")

# %% [markdown]
# ## What to notice
#
# * Deeper conv stages are more discriminative for object instances, but the last conv map usually
#   beats the fully-connected end, which has been trained to forget *where* and keep only *what class*.
# * Fusing layers adds a little at the price of a wider descriptor.
# * Multi-pass schemes cost several forward passes per image. On COIL-100, where one centred
#   object fills the frame, patches see *parts* of it — useful for the hard (far-view) protocol,
#   less so for the easy one. On cluttered landmark photos (Table 2.2) multi-pass shines more.
#
# ## Exercises
#
# 1. Add a 3×3 grid with 25% overlap (`{"kind": "grid", "grid": 3, "overlap": 0.25}`) to the
#    multi-pass comparison. Is it worth its cost?
# 2. Aggregate patches by mean instead of max (`"aggregate": "mean"`). Which protocol prefers which?
#
# <details><summary>Solutions</summary>
#
# 1. `coil.extract("test", BACKBONE, ["head"], ["gem"], size=PASS_SIDE, resize="fixed",
#    multipass={"kind": "grid", "grid": 3, "overlap": 0.25})` then `offtheshelf.score(...)`: nine
#    passes per image — compare its `seconds_per_image` and mAP with the 2×2 grid.
# 2. The same call with `multipass={"kind": "grid", "aggregate": "mean"}`; mean pooling of patches
#    behaves like SPoC over patches, max like MAC.
#
# </details>
