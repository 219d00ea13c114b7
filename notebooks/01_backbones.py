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
# **Goals.** Recall what a convolutional network computes (a convolution, a non-linearity, a loss
# it was trained to minimise), follow how the feature map shrinks and each cell's view of the image
# grows through the stages, then meet the backbones the survey compares (AlexNet, VGG16, GoogLeNet,
# ResNet-50/101) and the EfficientNet-Lite family whose ImageNet weights ship with this project:
# how deep each is, what its named layers produce, and whether real pretrained weights recognise
# a photo.
#
# **Survey.** §2.2.1 (CNN basics, Eqs. 2.1–2.3), §2.2.2 (popular backbone architectures),
# Figure 2.13(a) (depth vs accuracy).
#
# **Papers.** AlexNet — Krizhevsky, Sutskever & Hinton, [doi:10.1145/3065386](https://doi.org/10.1145/3065386);
# VGG — Simonyan & Zisserman, [arXiv:1409.1556](https://arxiv.org/abs/1409.1556);
# GoogLeNet — Szegedy et al., [arXiv:1409.4842](https://arxiv.org/abs/1409.4842);
# ResNet — He et al., [arXiv:1512.03385](https://arxiv.org/abs/1512.03385);
# EfficientNet — Tan & Le, [arXiv:1905.11946](https://arxiv.org/abs/1905.11946);
# receptive fields in practice — Luo et al., [arXiv:1701.04128](https://arxiv.org/abs/1701.04128);
# class activation maps — Zhou et al., [arXiv:1512.04150](https://arxiv.org/abs/1512.04150).
#
# **Prerequisites.** Notebook 00. Torchvision's pretrained weights download on a connected
# machine; here, only EfficientNet-Lite0/1/2 have real weights offline, so the torchvision models
# are built with random weights (`weights=None`) just to inspect shapes.
#
# **Exercises.** Cells marked *graded* hold a function for you to write; the cell after each one
# runs it against the library (or against PyTorch itself) on fresh inputs and says in words what
# differs.

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from numpy.testing import assert_allclose

import retrievalkit as rk
from retrievalkit.experiments import offtheshelf

# %% tags=["parameters"]
SMALL = rk.config.SMALL
PROBE_SIZE = 224  # input side for the shape table

# %% [markdown]
# ## 1 · What a convolutional network computes (survey §2.2.1)
#
# A CNN stacks three kinds of layer: convolution, pooling and fully-connected. A convolutional
# layer $l$ reads the $M^{l-1}$ maps of the layer below and produces one output map per filter.
# Output map $n$ is a sum over the input maps, each correlated with its own small learnable
# 2-D kernel $\mathbf{w}_{n,i}$, plus a bias (survey Eq. 2.1):
#
# $$\mathbf{x}^{l}_n \;=\; \sum_{i=1}^{M^{l-1}} \mathbf{w}_{n,i} * \mathbf{x}^{l-1}_i \;+\; b_n .$$
#
# (The survey writes the bias inside the sum; it is one learned constant per output map either
# way.) A non-linearity $\sigma$ — ReLU, $\sigma(z)=\max(z, 0)$, or ReLU6 in EfficientNet-Lite —
# is applied to $\mathbf{x}^l$ before it feeds layer $l+1$, and pooling layers shrink the maps.
# The parameters $\boldsymbol\theta$ (all kernels and biases) are trained on labelled images
# $(x^j, y^j)$ by summing a loss $L$ over the training set (survey Eq. 2.2)
#
# $$J(\boldsymbol\theta) \;=\; \sum_j L\big(f(x^j;\boldsymbol\theta),\, y^j\big)$$
#
# and following its gradient towards (survey Eq. 2.3)
#
# $$\boldsymbol\theta^{*} \;=\; \arg\min_{\boldsymbol\theta} J(\boldsymbol\theta).$$
#
# For the ImageNet backbones here, $L$ is the cross-entropy of 1000 classes: the features were
# shaped to *name a class*, not to rank images — the domain shift that §2.3 and notebooks 09–10
# work against.
#
# **Graded exercise 1 — Eq. 2.1 by hand.** Deep-learning libraries compute a *correlation*
# (the kernel is not flipped); write it as the sum over input maps of shifted, weighted copies.

# %% nbgrader={"grade": false, "grade_id": "conv_by_hand", "locked": false, "schema_version": 3, "solution": true}
def conv_by_hand(x, w, b):
    """One convolutional layer, survey Eq. 2.1, stride 1, no padding.

    x: (M, H, W) input maps; w: (N, M, k, k) kernels; b: (N,) biases.
    Returns (N, H-k+1, W-k+1): output map n = Σ_i (w[n, i] correlated with x[i]) + b[n].
    """
    ### BEGIN SOLUTION
    n_out, _, k, _ = w.shape
    h, wd = x.shape[1] - k + 1, x.shape[2] - k + 1
    out = torch.zeros(n_out, h, wd, dtype=x.dtype)
    for u in range(k):
        for v in range(k):
            out += torch.einsum("nm,mhw->nhw", w[:, :, u, v], x[:, u:u + h, v:v + wd])
    return out + b[:, None, None]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "conv_by_hand_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
gen = torch.Generator().manual_seed(1)
cases = [(torch.randn(m, h, wd, generator=gen), torch.randn(n, m, k, k, generator=gen), torch.randn(n, generator=gen))
         for m, h, wd, n, k in [(1, 5, 5, 1, 3), (3, 8, 6, 4, 3), (2, 7, 7, 5, 1), (4, 9, 9, 2, 5)]]
rk.grading.check(conv_by_hand, lambda x, w, b: torch.nn.functional.conv2d(x[None], w, b)[0], cases,
                 name="conv_by_hand", atol=1e-4)

# %% [markdown]
# **Graded exercise 2 — how big is the next map?** A $k\times k$ window moved by stride $s$ over a
# side of $n$ cells padded by $p$ on each border fits $\lfloor (n + 2p - k)/s \rfloor + 1$ times.
# Pooling layers follow the same rule. Write it; the check runs real PyTorch layers of that
# shape on zeros and reads off their output side.

# %% nbgrader={"grade": false, "grade_id": "conv_output_side", "locked": false, "schema_version": 3, "solution": true}
def conv_output_side(n, k, stride=1, padding=0):
    """Output side (an int) of a k×k convolution or pooling with this stride and padding on an n×n map."""
    ### BEGIN SOLUTION
    return (n + 2 * padding - k) // stride + 1
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "conv_output_side_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
def torch_side(n, k, stride=1, padding=0):
    conv = torch.nn.functional.conv2d(torch.zeros(1, 1, n, n), torch.zeros(1, 1, k, k), stride=stride, padding=padding)
    pool = torch.nn.functional.max_pool2d(torch.zeros(1, 1, n, n), k, stride=stride, padding=min(padding, k // 2))
    assert padding > k // 2 or pool.shape[-1] == conv.shape[-1]  # pooling obeys the same rule
    return conv.shape[-1]


cases = [dict(n=224, k=7, stride=2, padding=3), dict(n=112, k=3, stride=2, padding=1), dict(n=7, k=3, stride=1, padding=1),
         dict(n=227, k=11, stride=4, padding=0), dict(n=13, k=3, stride=2, padding=0), dict(n=10, k=4, stride=3, padding=0)]
rk.grading.check(conv_output_side, torch_side, cases, name="conv_output_side")

# %% [markdown]
# ## 2 · Receptive fields, and where spatial detail is lost
#
# One cell of layer $l$ depends on a square of input pixels: its **receptive field**. A $k\times k$
# layer widens it by $k-1$ cells *of the layer below*, and each stride-$s$ layer makes those
# cells $s$ times coarser in pixels. With $j_i = \prod_{t<i} s_t$ the pixel step between cells
# that layer $i$ reads,
#
# $$r_L \;=\; 1 + \sum_{i=1}^{L} (k_i - 1)\, j_i .$$
#
# Every stride divides the map side, while the receptive field keeps growing: deep cells see most
# of the image but there are few of them, so *where* something is gets coarse. Fully-connected
# layers finish the job — every output depends on every input (survey §2.3.1.2).
#
# **Graded exercise 3.** Write $r_L$ for a stack given as `(k, s)` pairs. The check measures the
# receptive field independently: it builds the stack from all-ones convolutions, back-propagates
# from one output cell and measures the span of input pixels that receive a gradient.

# %% nbgrader={"grade": false, "grade_id": "receptive_field", "locked": false, "schema_version": 3, "solution": true}
def receptive_field(layers):
    """Receptive field side (pixels, an int) of one output cell of a stack of layers [(k, stride), ...], input first."""
    ### BEGIN SOLUTION
    r, jump = 1, 1
    for k, s in layers:
        r += (k - 1) * jump
        jump *= s
    return r
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "receptive_field_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
def measured_receptive_field(layers, side=160):
    """Extent (first to last pixel) of the input row pixels that reach output cell (0, 0), by back-propagation."""
    x = torch.zeros(1, 1, side, side, requires_grad=True)
    y = x
    for k, s in layers:
        y = torch.nn.functional.conv2d(y, torch.ones(1, 1, k, k), stride=s)
    y[0, 0, 0, 0].backward()
    hit = (x.grad[0, 0, 0] != 0).nonzero().ravel()
    return int(hit.max() - hit.min() + 1)


cases = [([(3, 1), (3, 1)],),                                          # two 3×3 convolutions: 5
         ([(7, 2), (3, 2)],),                                          # ResNet's stem: conv 7/2 + max-pool 3/2
         ([(3, 1), (3, 1), (2, 2), (3, 1), (3, 1), (2, 2), (3, 1)],),  # the start of VGG16
         ([(11, 4), (3, 2), (5, 1), (3, 2)],),                         # the start of AlexNet
         ([(1, 2), (1, 2), (3, 1)],)]                                  # 1×1 strided layers leave holes, yet the span grows
rk.grading.check(receptive_field, measured_receptive_field, cases, name="receptive_field")

# %% [markdown]
# The same measurement on EfficientNet-Lite0 itself (real weights, a 224-px input): for the
# centre cell of each stage, which input pixels receive a gradient? Beside it, the side of that
# stage's map.

# %%
lite0 = rk.backbones.load_backbone("efficientnet_lite0")
stages = [name for name in lite0.layers if name.startswith("stage")] + ["head"]
probe = torch.rand(1, 3, PROBE_SIZE, PROBE_SIZE, generator=torch.Generator().manual_seed(0), requires_grad=True)
with torch.enable_grad():
    maps = lite0.forward_features(lite0.normalize(probe), stages)
    sides, fields = [], []
    for name in stages:
        h, w = maps[name].shape[-2:]
        grad, = torch.autograd.grad(maps[name][0, :, h // 2, w // 2].sum(), probe, retain_graph=True)
        cols = (grad.abs().sum(dim=(0, 1, 2)) > 0).nonzero().ravel()
        sides.append(int(w))
        fields.append(int(cols.max() - cols.min() + 1))
rf_table = pd.DataFrame({"stage": stages, "map side": sides, "stride (px per cell)": [PROBE_SIZE // s for s in sides],
                         "receptive field (px, within the image)": fields})
rf_table

# %%
fig, (ax_side, ax_rf) = plt.subplots(1, 2, figsize=(10, 3.6))
pos = np.arange(len(stages))
ax_side.bar(pos, sides, color="tab:blue")
ax_side.set_yscale("log", base=2)
ax_side.set_yticks(sorted(set(sides)), [str(s) for s in sorted(set(sides))])
ax_side.minorticks_off()
ax_side.set_ylabel("map side (cells)")
ax_side.set_title("the map shrinks ...")
ax_rf.plot(pos, fields, "o-", color="tab:red", label="receptive field of the centre cell")
ax_rf.axhline(PROBE_SIZE, ls="--", color="grey", label=f"the whole image ({PROBE_SIZE} px)")
ax_rf.set_ylabel("pixels")
ax_rf.set_ylim(0, PROBE_SIZE * 1.1)
ax_rf.set_title("... while each cell sees more")
for ax in (ax_side, ax_rf):
    ax.set_xticks(pos, stages, rotation=45, ha="right")
ax_rf.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
fig.suptitle(f"EfficientNet-Lite0 on a {PROBE_SIZE}-px input")
fig.tight_layout()

# %%
whole = next((name for name, r in zip(stages, fields) if r >= PROBE_SIZE), None)
print(f"The map goes from {sides[0]}×{sides[0]} cells ({rf_table.iloc[0, 2]} px each) to {sides[-1]}×{sides[-1]} "
      f"({rf_table.iloc[-1, 2]} px each), while the centre cell's receptive field grows from {fields[0]} to "
      f"{fields[-1]} px.")
if whole is not None:
    print(f"From {whole} on, the centre cell already depends on every pixel of the {PROBE_SIZE}-px image: what is "
          f"left of 'where' is the cell's position in a small grid.")

# %% [markdown]
# ## 3 · The registry
#
# `depth` counts weight layers on the main path, the way the papers name their networks
# (VGG**16**, ResNet-**50**). `weights_offline` tells whether ImageNet weights are available
# without internet on this machine.

# %%
rk.backbones.list_backbones()

# %% [markdown]
# ## 4 · Named layers and their shapes
#
# Retrieval reads features from inside the network: the last convolutional map (`conv5` for
# AlexNet/VGG, `layer4` for ResNet, `head` for EfficientNet-Lite) or a fully-connected layer
# (`fc6`, `fc7`, or the global-average-pooled `pool`). A convolutional map keeps *where* things
# are (C × H × W); a fully-connected vector has lost it.

# %%
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

# %%
last = {r.backbone: r.shape for r in shapes[shapes["default"]].itertuples()}
print("; ".join(f"{b}: default layer {s[0]} × {s[1]} × {s[2]} (stride {PROBE_SIZE // s[1]})" for b, s in last.items()))

# %% [markdown]
# `forward_features` stops as soon as the deepest requested layer is computed, so asking only for
# an early stage costs only the early stages:

# %%
x = torch.rand(2, 3, 224, 224)
with torch.inference_mode():
    early = lite0.forward_features(lite0.normalize(x), ["stage3"])
    default = lite0.forward_features(lite0.normalize(x))
{k: tuple(v.shape) for k, v in {**early, **default}.items()}

# %% [markdown]
# **Question 1.** A COIL-100 image is 128 px. The cell below feeds one to ResNet-50 and counts the
# R-MAC regions (notebook 03) that fit on its last map. What does this tell you about using
# region pooling on small inputs?

# %%
resnet = rk.backbones.load_backbone("resnet50", weights=None)
with torch.inference_mode():
    conv5 = resnet.forward_features(torch.zeros(1, 3, 128, 128), ["conv5"])["conv5"]
regions = rk.nn.functional.rmac_regions(*conv5.shape[-2:], levels=3)
print(f"128 px → conv5 of shape {tuple(conv5.shape[1:])}: {len(regions)} R-MAC regions at 3 scales, "
      f"of which {len(set(regions))} are distinct")

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_small_input", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# At stride 32 a 128-px image leaves a map only a few cells wide (printed above). R-MAC's rule
# still lists its regions, but on so few cells several of them are the same square (count printed
# above) and each covers much of the map, so the "regional" descriptor is close to a re-weighted
# MAC: region pooling needs enough cells to have regions that differ. Feeding larger images (or upsampling) buys cells at the price of compute.

# %% [markdown]
# ## 5 · Do the weights work? An ImageNet sanity check on a real photo
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
# **Question 2.** EfficientNet-Lite expects inputs scaled with mean ≈ std ≈ 0.5 per channel; the
# torchvision networks use ImageNet's per-channel statistics. The cell below feeds the cat with the
# *wrong* (ImageNet) statistics. How robust is the network to this mistake, and why is it
# dangerous for retrieval?

# %%
imagenet_mean = torch.tensor(rk.backbones.IMAGENET_MEAN)[:, None, None]
imagenet_std = torch.tensor(rk.backbones.IMAGENET_STD)[:, None, None]
with torch.inference_mode():
    wrong = lite0((batch - imagenet_mean) / imagenet_std).softmax(dim=1)[0]
    cos = torch.nn.functional.cosine_similarity(
        lite0.forward_features(lite0.normalize(batch))["head"].mean(dim=(2, 3)),
        lite0.forward_features((batch - imagenet_mean) / imagenet_std)["head"].mean(dim=(2, 3))).item()
print(f"right statistics: class {int(probs.argmax())} with p = {probs.max():.3f}; "
      f"wrong statistics: class {int(wrong.argmax())} with p = {wrong.max():.3f}; "
      f"cosine between the two pooled head descriptors: {cos:.3f}")

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_normalisation", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# Compare the two lines printed above: the top class may survive while its probability moves, and
# the pooled descriptor itself is no longer the one the network would give (cosine below 1). In
# retrieval nothing flags this: if queries and database were normalised differently, or the
# statistics do not match the weights, distances shift silently and mAP drops by a few points
# with no error anywhere. A quick classification check on a known photo catches it early.

# %% [markdown]
# ## 6 · The classifier as a linear map on the last conv layer
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
# That average of the last map is already an image descriptor. For retrieval it is then
# L2-normalised, so that comparing two images by inner product is comparing them by cosine
# (survey §2.3.2.1: pooling "usually followed by L2 norm").
#
# **Graded exercise 4.** Write the L2-normalised global average descriptor of a batch of maps.

# %% nbgrader={"grade": false, "grade_id": "global_descriptor", "locked": false, "schema_version": 3, "solution": true}
def global_descriptor(fmap):
    """(N, C, H, W) feature maps → (N, C): the mean over the H·W positions, each row then divided by its L2 norm."""
    ### BEGIN SOLUTION
    v = fmap.mean(dim=(2, 3))
    return v / v.norm(dim=1, keepdim=True)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "global_descriptor_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
gen = torch.Generator().manual_seed(4)
cases = [(torch.rand(*shape, generator=gen),) for shape in [(2, 8, 5, 5), (3, 16, 7, 7), (1, 4, 1, 1), (2, 6, 3, 5)]]
rk.grading.check(global_descriptor, lambda x: rk.nn.functional.l2n(rk.nn.functional.avg_pool(x)), cases,
                 name="global_descriptor")

# %% [markdown]
# ## 7 · Depth vs feature width
#
# The survey's depth study (Figure 2.13a) uses each network's default descriptor width: AlexNet
# 256, VGG 512, GoogLeNet 1024, ResNet 2048. Deeper networks also tend to be wider at the end.

# %%
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
# **Question 3.** Section 2 showed that the centre cell of the deepest stages already sees the
# whole image. Why is a 7 × 7 conv map still more useful for instance retrieval than the
# fully-connected vector computed from it?

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_conv_vs_fc", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# Seeing the whole image is not the same as describing all of it equally: each cell is centred on
# a different place and is most sensitive near its centre (the effective receptive field is much
# smaller than the theoretical one), so the 49 cells are 49 local descriptions. Pooling can then
# choose how to combine them (max, GeM, regions, weights — notebook 03) and a partly visible or
# shifted object still produces similar cells. A fully-connected layer mixes all cells with fixed,
# position-specific weights trained for classification, so it loses the layout and is less
# tolerant to cropping, shifts and clutter (survey §2.3.1.2).

# %% [markdown]
# **Question 4.** The backbones were trained with Eqs. 2.2–2.3 and a 1000-class cross-entropy.
# Name one way in which features that minimise that loss can be poor for retrieving *the same
# object* (not the same class).

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_training_loss", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# The loss only asks that images of one class fall on the right side of the class boundaries; it
# rewards features that are *invariant* to everything that distinguishes two instances of a
# class (two different mugs get the same label). Retrieval needs exactly those differences, and
# also needs distances to be meaningful everywhere, not just the sign of a boundary. Hence
# fine-tuning with retrieval losses (§2.4, notebooks 09–10) or regional/whitened descriptors.

# %% [markdown]
# ## 8 · Does depth inside the network matter for retrieval? (teaching contrast)
#
# Notebook 02 studies layers in detail; here one number: GeM descriptors read from the shallowest
# extracted conv stage of EfficientNet-Lite0 against its deepest conv layer, scored on the COIL-100
# test split (features cached, shared with notebook 02).

# %%
coil = offtheshelf.Coil(small=SMALL, progress=False)
layer_df = offtheshelf.layers(coil, "efficientnet_lite0")
conv = layer_df[(layer_df["protocol"] == "all") & (layer_df["kind"] == "conv")]
shallow, deep = conv.iloc[0], conv.iloc[-1]
gap = deep["mAP"] - shallow["mAP"]
mode = "SMALL mode" if SMALL else "full mode"
if abs(gap) >= 0.03:
    better, worse = (deep, shallow) if gap > 0 else (shallow, deep)
    print(f"On COIL-100 ({mode}) the {'deepest' if gap > 0 else 'shallowest'} conv layer wins: "
          f"{better['variant']} {better['mAP']:.3f} mAP against {worse['variant']} {worse['mAP']:.3f} "
          f"(gap {abs(gap):.3f}).")
else:
    print(f"On COIL-100 ({mode}) {deep['variant']} gives {deep['mAP']:.3f} mAP and {shallow['variant']} "
          f"{shallow['mAP']:.3f}: the difference is below 0.03, so this run is not evidence either way.")

# %% [markdown]
# ## What to notice
#
# * A convolution (Eq. 2.1) is a sum of small correlations; stacking them with strides makes the
#   map smaller and each cell's view larger (section 2, numbers printed there).
# * Every backbone offers several layers; which one to use is a design choice (notebook 02).
# * The spatial size of the last map depends on the input size (the strides printed in
#   section 4). Pooling methods that use regions (R-MAC) need a map that is not too small
#   (Question 1).
# * A quick ImageNet check catches wrong weights or wrong input normalisation before they silently
#   ruin every retrieval number downstream (Question 2).
