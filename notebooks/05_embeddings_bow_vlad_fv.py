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
# # 05 · Embedding local descriptors: BoW, VLAD and Fisher vectors
#
# **Goals.** Turn a *set* of local descriptors into one vector in three ways — a histogram of
# visual words (BoW), summed residuals to the words (VLAD), and gradients of a Gaussian mixture
# (Fisher vectors) — by writing each in a few lines and checking it against the library. Then embed
# two kinds of local descriptors of COIL-100, conv-map columns and RootSIFT, and answer the survey's
# first question on our data: do off-the-shelf deep features beat handcrafted ones?
#
# **Survey.** §2.3.2.2 (feature embedding, Eqs. 2.4–2.11), §2.1 question 1, Table 2.2 (BoW/VLAD rows).
#
# **Prerequisites.** Notebooks 02–04 (feature maps, pooling, PCA-whitening).

# %%
import warnings

import numpy as np
from numpy.testing import assert_allclose

import retrievalkit as rk
from retrievalkit import embedding as emb
from retrievalkit import figures_embedding as fe
from retrievalkit.experiments import embedding as E
from retrievalkit.experiments import offtheshelf

warnings.filterwarnings("ignore", message=".*did not converge.*")  # tiny GMMs in SMALL mode

# %% tags=["parameters"]
SMALL = rk.config.SMALL  # 10 test + 10 learning objects at 160 px instead of 50 + 50 at 224 px
K_GRID = E.SMALL_K_GRID if SMALL else E.K_GRID

# %% [markdown]
# ## 1 · Three embeddings on a toy example
#
# Two "images" with 5 and 3 two-dimensional local descriptors, and a codebook of K = 3 words.

# %%
rng = np.random.default_rng(0)
X = [rng.normal(size=(5, 2)).astype(np.float32), rng.normal(size=(3, 2)).astype(np.float32)]
local = emb.LocalDescriptors.from_list(X)
C = np.array([[-1, 0], [1, 0], [0, 1]], dtype=np.float32)
book = emb.KMeansCodebook.from_centroids(C)

# %% [markdown]
# **BoW (Eqs. 2.4–2.6).** Each descriptor votes for its nearest word (Eq. 2.5's indicator φ); the
# image is the normalised histogram of votes. With `weighting="tf"` and no L2 the library gives
# exactly this; by default it also multiplies by idf (rare words count more) and L2-normalises.

# %%
def nearest(x, C):
    return ((x[:, None] - C[None]) ** 2).sum(-1).argmin(1)


bow = np.stack([np.bincount(nearest(x, C), minlength=len(C)) / len(x) for x in X])
assert_allclose(bow, emb.BoW(book, weighting="tf", normalize=False).encode(local), rtol=1e-6)
bow

# %% [markdown]
# **VLAD (Eqs. 2.7–2.8).** Instead of counting, add up the residuals `x − c_k` of the descriptors
# assigned to word k, and concatenate the K sums: K·D numbers. The library's default then
# normalises each block, takes a signed square root and L2-normalises; switching those off gives the
# plain equations.

# %%
def vlad(x, C):
    words = nearest(x, C)
    return np.concatenate([(x[words == k] - C[k]).sum(0) / len(x) for k in range(len(C))])


V = np.stack([vlad(x, C) for x in X])
plain = emb.VLAD(book, intra_norm=False, alpha=None, normalize=False)
assert_allclose(V, plain.encode(local), rtol=1e-5, atol=1e-6)
V.shape

# %% [markdown]
# **Fisher vector (Eqs. 2.9–2.11).** Replace hard assignments by a Gaussian mixture's soft ones
# γ_k(x) (Eq. 2.9), and record how the image would pull each Gaussian's mean and spread
# (Eq. 2.10's gradients, scaled by the Fisher information): 2·K·D numbers.

# %%
w = np.array([0.3, 0.3, 0.4])
var = np.array([[0.5, 0.5], [0.8, 0.4], [0.6, 0.6]])
gmm = emb.GMMCodebook.from_params(w, C, var)


def fisher(x, w, mu, var):
    logp = -0.5 * (((x[:, None] - mu) ** 2 / var).sum(-1) + np.log(2 * np.pi * var).sum(-1)) + np.log(w)
    gamma = np.exp(logp - logp.max(1, keepdims=True))
    gamma /= gamma.sum(1, keepdims=True)                                   # Eq. 2.9
    z = (x[:, None] - mu) / np.sqrt(var)                                   # T × K × D
    g_mu = (gamma[..., None] * z).sum(0) / (len(x) * np.sqrt(w)[:, None])
    g_sigma = (gamma[..., None] * (z ** 2 - 1)).sum(0) / (len(x) * np.sqrt(2 * w)[:, None])
    return np.concatenate([g_mu.ravel(), g_sigma.ravel()])                 # Eq. 2.11's layout


FV = np.stack([fisher(x.astype(np.float64), w, C, var) for x in X])
assert_allclose(FV, emb.FisherVector(gmm, alpha=None, normalize=False).encode(local), rtol=1e-4, atol=1e-5)
FV.shape

# %% [markdown]
# Lengths: BoW K, VLAD K·D, FV 2·K·D. BoW needs many words to be discriminative (the survey quotes
# a 25k-word vocabulary for BoW on conv features); VLAD and FV carry more per word and need few.
#
# ## 2 · Local descriptors of COIL-100
#
# * **Deep**: the columns of EfficientNet-Lite0's 1280-channel head map (7×7 at 224 px, 5×5 in
#   SMALL mode), each L2-normalised and reduced to 128-d by a PCA learned on learning-split columns.
# * **Handcrafted**: OpenCV's SIFT at difference-of-Gaussians keypoints, as RootSIFT, on the native
#   128-px photos (a few dozen per image).
#
# Codebooks, idf and every PCA learn on the learning split only (`split="learn"` is enforced).

# %%
coil = offtheshelf.Coil(small=SMALL, progress=False)
for source in E.SOURCES:
    d = E.local_descriptors(coil, "test", source)
    print(f"{source:5s}: {d.n_images} images, {d.n_descriptors / d.n_images:.1f} descriptors/image, {d.dim}-d")

# %% [markdown]
# ## 3 · mAP vs codebook size, and vs memory

# %%
sizes = E.codebook_sizes(coil, k_grid=K_GRID)
sizes[sizes["protocol"] == "all"].pivot_table(index=["method", "K"], columns="source", values="mAP").round(4)

# %%
fig = fe.codebook_curves(sizes)

# %% [markdown]
# ## 4 · Deep vs handcrafted (survey §2.1, question 1)
#
# K is fixed in advance for this table (not picked on the test split). "+ PCA_w": PCA-whitening
# learned on the learning split's embeddings, as in several rows of Table 2.2.

# %%
table = E.deep_vs_handcrafted(coil)
table.pivot_table(index=["method", "dim"], columns="protocol", values="mAP", sort=False).round(4)

# %%
fig = fe.method_bars(table)

# %% [markdown]
# What the survey reports on landmarks (Oxford5k/Paris6k, mAP %):

# %%
quotes = rk.survey.text_numbers()
quotes[quotes["topic"].isin(["bow_on_conv", "embedding"])][["topic", "ref", "dataset", "value", "claim"]]

# %% [markdown]
# ## What to notice
#
# * On conv columns, VLAD and FV are far ahead of BoW at every memory budget: a handful of words
#   with residuals keeps more than many counted words. BoW improves only slowly with K — the
#   reason the survey's BoW-on-conv result needs 25k words.
# * FV ≈ VLAD here, whereas the survey quotes FV at 81.5 vs VLAD 62.5 on Oxford5k; those two numbers
#   come from different papers and networks, so they say less about the embedding than it seems.
# * Deep beats handcrafted: conv columns with any embedding beat RootSIFT with the same embedding,
#   and a plain GeM vector beats all of them. On COIL-100 a colour histogram is a strong baseline
#   (objects differ by colour), stronger than grey-level SIFT — a reminder that the dataset shapes
#   the answer to question 1.
# * PCA-whitening on a few hundred learning images can hurt (SMALL mode); compare with full mode.
#
# ## Exercises
#
# 1. Switch off VLAD's intra-normalisation and power law (`emb.VLAD(book, intra_norm=False,
#    alpha=None)`) on conv columns. How much mAP do they buy?
# 2. Use only the mean part of the Fisher vector (`parts=("mu",)`): half the length. What is lost?
# 3. Search BoW with the inverted file (`emb.InvertedFile`) and check it ranks like a dense search.
#
# <details><summary>Solutions</summary>
#
# 1. `book = E.codebook(coil, "conv", "kmeans", 8)`, then
#    `offtheshelf.score(emb.VLAD(book, intra_norm=False, alpha=None).encode(E.local_descriptors(coil, "test", "conv")), coil.split("test"))`;
#    bursty words dominate without the two normalisations and mAP drops by a few points.
# 2. `emb.FisherVector(E.codebook(coil, "conv", "gmm", 8), parts=("mu",))`: usually a small drop —
#    the first-order part carries most of the information, like VLAD.
# 3. `enc = E.encoder(coil, "conv", "bow", 64)`; `Xs = enc.encode(E.local_descriptors(coil, "test", "conv"), sparse=True)`;
#    `D, I = emb.InvertedFile(Xs).search(Xs[coil.split("test").query_db_index], k=10)` — the same ids
#    as `rk.index.exact_search` on the dense vectors, visiting only the postings of the query's words.
#
# </details>
