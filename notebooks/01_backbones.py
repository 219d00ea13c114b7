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
# # 01 · Backbones: the networks features come from
#
# **Goals.** Meet the backbones the survey compares (AlexNet, VGG16, GoogLeNet, ResNet-50/101) and
# the EfficientNet-Lite family whose ImageNet weights ship with this project; see how deep each is,
# what its named layers produce, and check that real pretrained weights really recognise a photo.
#
# **Survey.** §2.2.2 (popular backbone architectures), Figure 2.13(a) (depth vs accuracy).
#
# **Prerequisites.** Notebook 00. Torchvision's pretrained weights download on a connected
# machine; here, only EfficientNet-Lite0/1/2 have real weights offline, so the torchvision models
# are built with random weights (`weights=None`) just to inspect shapes.

# %%
import numpy as np
import torch
from numpy.testing import assert_allclose

import retrievalkit as rk

# %% tags=["parameters"]
SMALL = rk.config.SMALL
PROBE_SIZE = 224  # input side for the shape table

# %% [markdown]
# ## 1 · The registry
#
# `depth` counts weight layers on the main path, the way the papers name their networks
# (VGG**16**, ResNet-**50**). `weights_offline` tells whether ImageNet weights are available
# without internet on this machine.

# %%
rk.backbones.list_backbones()

# %% [markdown]
# ## 2 · Named layers and their shapes
#
# Retrieval reads features from inside the network: the last convolutional map (`conv5` for
# AlexNet/VGG, `layer4` for ResNet, `head` for EfficientNet-Lite) or a fully-connected layer
# (`fc6`, `fc7`, or the global-average-pooled `pool`). A convolutional map keeps *where* things
# are (C × H × W); a fully-connected vector has lost it. With a 224-pixel input, most networks
# end on a 7 × 7 map (stride 32) — which is why a 128-pixel COIL image would give only 4 × 4.

# %%
import pandas as pd

names = ["efficientnet_lite0", "resnet50"] if SMALL else list(rk.backbones.BACKBONES)
rows = []
for name in names:
    weights = "imagenet" if rk.backbones.weights_available(name) else None
    net = rk.backbones.load_backbone(name, weights=weights)
    with torch.inference_mode():
        outs = net.forward_features(torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE), net.layers)
    for layer, t in outs.items():
        rows.append({"backbone": name, "layer": layer, "shape": tuple(t.shape[1:]), "default": layer == net.default_layer})
shapes = pd.DataFrame(rows)
shapes[shapes["backbone"] == names[0]]

# %% [markdown]
# `forward_features` stops as soon as the deepest requested layer is computed, so asking only for
# an early stage costs only the early stages:

# %%
lite0 = rk.backbones.load_backbone("efficientnet_lite0")
x = torch.rand(2, 3, 224, 224)
with torch.inference_mode():
    early = lite0.forward_features(lite0.normalize(x), ["stage3"])
    default = lite0.forward_features(lite0.normalize(x))
{k: tuple(v.shape) for k, v in {**early, **default}.items()}

# %% [markdown]
# ## 3 · Do the weights work? An ImageNet sanity check on a real photo
#
# Before trusting features from a network, check that it classifies a real image sensibly.
# scikit-image ships a photo of a cat (`chelsea`); ImageNet's cat classes are 281–285.

# %%
from PIL import Image
from skimage import data as skdata

photo = Image.fromarray(skdata.chelsea()).resize((lite0.input_size, lite0.input_size))
batch = torch.as_tensor(np.array(photo), dtype=torch.float32).permute(2, 0, 1)[None] / 255
with torch.inference_mode():
    probs = lite0(lite0.normalize(batch)).softmax(dim=1)[0]
top5 = probs.topk(5)
print("top-5 ImageNet classes:", top5.indices.tolist(), "probabilities:", np.round(top5.values.numpy(), 3))
assert int(top5.indices[0]) in range(281, 286), "EfficientNet-Lite0 should see a cat"

# %% [markdown]
# ## 4 · The classifier as a linear map on the last conv layer
#
# In the ResNet and EfficientNet families, the logits are a linear function of the *average* of
# the last conv map. That is what class-activation maps (CAM, used for pooling in notebook 03) rely
# on: applying the classifier weights at each position instead of after averaging. Check it:

# %%
with torch.inference_mode():
    fmap = lite0.forward_features(lite0.normalize(batch))[lite0.default_layer]
    logits_by_hand = fmap.mean(dim=(2, 3)) @ lite0.classifier_weight.T + lite0.classifier_bias
    logits = lite0(lite0.normalize(batch))
assert_allclose(logits_by_hand.numpy(), logits.numpy(), atol=1e-3)

# %% [markdown]
# ## 5 · Depth vs feature width
#
# The survey's depth study (Figure 2.13a) uses each network's default descriptor width: AlexNet
# 256, VGG 512, GoogLeNet 1024, ResNet 2048. Deeper networks also tend to be wider at the end.

# %%
import matplotlib.pyplot as plt

table = rk.backbones.list_backbones()
fig, ax = plt.subplots(figsize=(5, 3))
ax.scatter(table["depth"], table["channels"])
ax.set_xlabel("depth (weight layers)")
ax.set_ylabel("channels of the default layer")
ax.set_title("Backbones: depth vs descriptor width")
ax.margins(0.2)
fig.tight_layout()
# Lite1 and Lite2 share a point (same depth and width: compound scaling changes resolution); place_labels keeps names apart
rk.figures.place_labels(ax, table["depth"].to_numpy(), table["channels"].to_numpy(), table["name"])

# %% [markdown]
# ## What to notice
#
# * Every backbone offers several layers; which one to use is a design choice (notebook 02).
# * The spatial size of the last map depends on the input size: 224 px → 7 × 7 at stride 32.
#   Pooling methods that use regions (R-MAC) need a map that is not too small.
# * A quick ImageNet check catches wrong weights or wrong input normalisation before they silently
#   ruin every retrieval number downstream.
#
# ## Exercises
#
# 1. Feed a 128-pixel image to `resnet50` and print the `conv5` shape. How many R-MAC regions at
#    3 scales fit? (`rk.nn.functional.rmac_regions`)
# 2. Normalise the cat photo with the wrong statistics (ImageNet mean/std instead of Lite's) and
#    compare the top-5. How robust is the network to this mistake?
#
# <details><summary>Solutions</summary>
#
# 1. `rk.backbones.load_backbone("resnet50", weights=None).forward_features(torch.zeros(1, 3, 128, 128), ["conv5"])`
#    gives 2048 × 4 × 4; `len(rk.nn.functional.rmac_regions(4, 4, levels=3))` counts the regions
#    (many coincide on such a small map).
# 2. `(batch - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]`
#    then `lite0(...)`: the top class often survives, but the probabilities change — silent
#    damage that retrieval metrics would only show as a few points of mAP.
#
# </details>
