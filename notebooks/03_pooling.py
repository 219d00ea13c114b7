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
# # 03 · Pooling: from a feature map to one vector
#
# **Goals.** Write each aggregation method of the survey's Figure 2.6 in a few lines of tensor
# code, check it against the library, then compare them on COIL-100 — the analogue of the survey's
# Figure 2.12(b).
#
# **Survey.** §2.3.2.1 (feature aggregation), Figure 2.6, Figure 2.12(b), Table 2.2.
#
# **Prerequisites.** Notebooks 00–01.

# %%
import numpy as np
import torch
from numpy.testing import assert_allclose

import retrievalkit as rk
from retrievalkit.experiments import offtheshelf
from retrievalkit.nn import functional as F

# %% tags=["parameters"]
SMALL = rk.config.SMALL  # 10 test + 10 learning objects at 160 px instead of 50 + 50 at 224 px
BACKBONE = "efficientnet_lite0"

# %% [markdown]
# ## 1 · Each pooling, written out
#
# A conv map `x` has shape N × C × H × W: at each of the H·W positions, a C-dimensional vector.
# Pooling collapses the positions. We use a real map: the last conv layer of EfficientNet-Lite0 on
# a COIL-100 image.

# %%
coil = offtheshelf.Coil(small=SMALL, progress=False)
test = coil.split("test")
net = rk.backbones.load_backbone(BACKBONE)
image = rk.datasets.images.read_image(test.db_paths[0]).resize((224, 224))
pixels = torch.as_tensor(np.array(image), dtype=torch.float32).permute(2, 0, 1)[None] / 255
with torch.inference_mode():
    x = net.forward_features(net.normalize(pixels))[net.default_layer].float().contiguous()
x.shape

# %% [markdown]
# **MAC** keeps, per channel, the strongest response anywhere; **SPoC** averages (sum pooling up
# to a constant, identical after L2), optionally with a Gaussian weight favouring the centre;
# **GeM** is the power mean `(mean x^p)^(1/p)`, which is SPoC at p = 1 and tends to MAC as p grows.

# %%
mac = x.flatten(2).max(dim=2).values
spoc = x.flatten(2).mean(dim=2)
p = 3.0
gem = x.clamp(min=1e-6).pow(p).flatten(2).mean(dim=2).pow(1 / p)

assert_allclose(mac, F.mac(x), rtol=1e-6)
assert_allclose(spoc, F.spoc(x), rtol=1e-5)
assert_allclose(gem, F.gem(x, p=p), rtol=1e-4, atol=1e-5)  # the clamp at 1e-6 leaves tiny values at dead channels
assert_allclose(F.gem(x, p=1.0), spoc, rtol=1e-5, atol=1e-5)  # GeM at p = 1 is average pooling

# %% [markdown]
# **R-MAC** takes MAC inside square regions at several scales (about 40% overlap between
# neighbours), L2-normalises each regional vector and sums them: objects that fill only part of the
# image still get a region of their own.

# %%
regions = F.rmac_regions(x.shape[2], x.shape[3], levels=3)
per_region = torch.stack([x[..., i:i + h, j:j + w].amax(dim=(2, 3)) for i, j, h, w in regions], dim=1)
rmac = torch.nn.functional.normalize(per_region, dim=2).sum(dim=1)
assert_allclose(rmac, F.rmac(x, levels=3), rtol=1e-5)
print(f"{len(regions)} regions on a {x.shape[2]}×{x.shape[3]} map, e.g. {regions[:3]}")

# %% [markdown]
# **CroW** weights positions by how strongly all channels fire there (spatial weight: the
# channel-summed map, normalised) and channels by how rarely they fire (an idf-like weight), then
# sums. This is also the simplest form of *attention* (notebook 06).

# %%
energy = x.sum(dim=1).clamp(min=0)                                   # N × H × W
spatial = (energy / energy.pow(2).sum(dim=(1, 2), keepdim=True).sqrt()).sqrt()   # a = b = 2
fired = (x > 0).float().mean(dim=(2, 3))                             # fraction of positions > 0
channel = torch.log((x.shape[1] * 1e-6 + fired.sum(1, keepdim=True)) / (1e-6 + fired))
crow = channel * (x * spatial[:, None]).sum(dim=(2, 3))
assert_allclose(crow, F.crow(x), rtol=1e-4)

# %% [markdown]
# **CAM pooling** uses the ImageNet classifier: for each of the top predicted classes, the class
# activation map (classifier weights applied at every position) weights the positions. The library's
# `F.cam_weighted(x, net.classifier_weight, net.classifier_bias)` implements it.

# %% [markdown]
# ## 2 · Comparing them on COIL-100
#
# Every pooling on the last conv map of each backbone that has real ImageNet weights here, raw
# (L2-normalised) and PCA-whitened (whitening learned on the learning split only). Features are
# extracted once and cached under `data/cache/`; a second run reads them back.

# %%
agg = offtheshelf.aggregation(coil)
agg[agg["protocol"] == "all"].pivot_table(index="pooling", columns=["backbone", "whitening"], values="mAP").round(4)

# %%
fig = rk.figures.aggregation_bars(agg)

# %% [markdown]
# The survey's reported Oxford5k numbers for the same family of methods (VGG16, off the shelf)
# are in its Table 2.2:

# %%
rk.survey.table_2_2().query("`pass` == 'single'")[["method", "backbone", "enhancement", "dim", "oxford5k", "paris6k", "holidays"]]

# %% [markdown]
# ## 3 · Look at the rankings
#
# The browser shows a query's top-10 for any backbone and pooling (`rk.widgets.query_browser` in
# JupyterLab; the static version below is what the rendered notebook shows).

# %%
rankings = {}
features_test = coil.extract("test", BACKBONE, offtheshelf.layers_for(BACKBONE))
for pooling in ("mac", "gem", "rmac", "crow"):
    db = features_test.get(net.default_layer, pooling)
    rankings[(BACKBONE, pooling)] = rk.index.rank(db[test.query_db_index], db)
fig = rk.widgets.static_browser(test, rankings, query=0, pooling="rmac")

# %%
# In JupyterLab: rk.widgets.query_browser(test, rankings)

# %% [markdown]
# ## What to notice
#
# * On COIL-100 the objects are centred and fill most of the frame, so MAC, GeM and CroW are close;
#   region-based R-MAC gains less here than on Oxford, where landmarks occupy part of a cluttered
#   photo. The *ordering* of methods depends on the data — which is the survey's point in §2.5.3.
# * Whether PCA-whitening helps depends on how much learning data there is relative to the
#   dimension: with few learning images it over-fits (compare SMALL and full mode).
# * The centre prior of SPoC assumes the object sits in the middle; COIL objects do, but they also
#   have informative edges.
#
# ## Exercises
#
# 1. Plot mAP against GeM's p for p in 1, 2, 3, 5, 10, 50. Where does it peak?
# 2. R-MAC with `levels=1` versus `levels=3`: what changes on this 7×7 map?
# 3. Use the *hard* protocol in `rk.figures.aggregation_bars(agg, protocol="hard")`. Does the
#    ranking of methods change?
#
# <details><summary>Solutions</summary>
#
# 1. `coil.extract("test", BACKBONE, ["head"], [("gem", {"p": p}) for p in (1, 2, 3, 5, 10, 50)])`,
#    then `offtheshelf.score(f.get("head", f"gem(p={p})"), test)` for each p. The optimum is usually
#    a small p (around 3), between average and max pooling.
# 2. `len(F.rmac_regions(7, 7, levels=1))` is 1 region (the whole map — R-MAC degenerates to MAC
#    after L2), three levels give 14 regions.
# 3. Hard queries (views ≥ 60° away) reward descriptors that keep more of the object's parts;
#    compare the gaps between methods with the "all" protocol.
#
# </details>
