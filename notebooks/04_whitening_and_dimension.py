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
# # 04 · Whitening and descriptor dimension
#
# **Goals.** Derive PCA-whitening from the covariance matrix and check it against the library;
# compare it with *learned* whitening from matching pairs; then trace mAP against descriptor
# dimension from 32-d to 8192-d — the analogue of the survey's Figure 2.13(b).
#
# **Survey.** §2.3.2 (post-processing of aggregated features: PCA, whitening; "PCA$_w$" in
# Table 2.2), §2.5.3 and Figure 2.13(b) (feature dimension). The survey names these steps without
# numbering their formulas; the equations below follow the original papers.
#
# **Papers.** PCA-whitening for retrieval — Jégou & Chum, "Negative evidences and co-occurrences
# in image retrieval: the benefit of PCA and whitening" (ECCV 2012); neural codes with PCA —
# Babenko et al., [arXiv:1404.1777](https://arxiv.org/abs/1404.1777); power normalisation —
# Perronnin, Sánchez & Mensink, "Improving the Fisher kernel" (ECCV 2010); learned whitening —
# Radenović, Tolias & Chum, [arXiv:1604.02426](https://arxiv.org/abs/1604.02426) and
# [arXiv:1711.02512](https://arxiv.org/abs/1711.02512).
#
# **The rule.** Everything that is *fitted* here — means, covariances, projections, FC layers —
# sees only the learning split (COIL-100 objects 1–50). The test split is only scored.
#
# Cells marked *graded* hold a function for you to write; the cell after each checks it against
# the library on fresh inputs.

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from numpy.testing import assert_allclose

import retrievalkit as rk
from retrievalkit.experiments import offtheshelf

# %% tags=["parameters"]
SMALL = rk.config.SMALL
BACKBONE = "efficientnet_lite0"
POOLING = "gem"
DIMS = (32, 128, 512, 2048) if SMALL else offtheshelf.DIMENSIONS
EPOCHS = 5 if SMALL else 20

# %%
coil = offtheshelf.Coil(small=SMALL, progress=False)
test, learn = coil.split("test"), coil.split("learn")
layer = rk.backbones.get_spec(BACKBONE).default_layer
x_test = coil.extract("test", BACKBONE, offtheshelf.layers_for(BACKBONE)).get(layer, POOLING)
x_learn = coil.extract("learn", BACKBONE, offtheshelf.layers_for(BACKBONE)).get(layer, POOLING)
x_learn.shape, x_test.shape

# %% [markdown]
# ## 1 · PCA-whitening by hand
#
# Centre the $n$ learning descriptors, eigen-decompose their covariance, keep the $d$ directions
# of largest variance and divide each by its standard deviation:
#
# $$\boldsymbol\mu = \frac1n\sum_{k}\mathbf x_k,\qquad
# \Sigma = \frac{1}{n-1}\sum_{k}(\mathbf x_k-\boldsymbol\mu)(\mathbf x_k-\boldsymbol\mu)^\top = U\Lambda U^\top,$$
#
# $$\mathbf y = P^\top(\mathbf x-\boldsymbol\mu),\qquad P = U_d\,\Lambda_d^{-1/2},\qquad
# \hat{\mathbf y} = \frac{\mathbf y}{\lVert\mathbf y\rVert}.$$
#
# In the new coordinates the learning data has identity covariance: frequent, correlated
# directions (bursty visual elements, co-occurring channels) are damped and rare ones boosted.
# The final L2 normalisation makes inner products cosines again.
#
# First, a picture: a 2-D toy cloud with correlated coordinates, after the rotation onto the
# principal directions (plain PCA) and after the scaling (PCA-whitening).

# %%
rng = np.random.default_rng(0)
toy = rng.multivariate_normal([3.0, 1.0], [[3.0, 2.2], [2.2, 2.0]], size=400)
steps = {"raw": toy,
         "PCA: centred and rotated": rk.whitening.PCA(dim=2, normalize=False).fit(toy).transform(toy),
         "PCA-whitened": rk.whitening.PCAWhitening(dim=2, normalize=False).fit(toy).transform(toy)}
fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
lim = np.abs(np.concatenate(list(steps.values()))).max() * 1.05
for ax, (title, pts) in zip(axes, steps.items()):
    ax.scatter(pts[:, 0], pts[:, 1], s=5, alpha=0.5, color="tab:blue")
    cov = np.cov(pts, rowvar=False)
    vals, vecs = np.linalg.eigh(cov)
    cov = np.round(cov, 2) + 0.0  # + 0.0 turns a printed -0.00 into 0.00
    centre = pts.mean(axis=0)
    for val, vec in zip(vals, vecs.T):  # one standard deviation along each principal direction
        ax.plot(*np.stack([centre, centre + np.sqrt(val) * vec]).T, color="tab:red", lw=2)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_title(f"{title}\ncov = [[{cov[0, 0]:.2f}, {cov[0, 1]:.2f}], [{cov[1, 0]:.2f}, {cov[1, 1]:.2f}]]", fontsize=9)
fig.suptitle("Red: one standard deviation along each principal direction")
fig.tight_layout()

# %% [markdown]
# **Graded exercise 1.** Fit PCA-whitening: return the mean $\boldsymbol\mu$ and the projection
# $P$. Eigenvectors are defined only up to their sign, so the check compares $\boldsymbol\mu$ and
# $PP^\top$ (which does not depend on those signs) with the library's.

# %% nbgrader={"grade": false, "grade_id": "pcaw_fit", "locked": false, "schema_version": 3, "solution": true}
def pcaw_fit(X, d):
    """X: (n, D) learning rows → (mean (D,), P (D, d)) with P = U_d Λ_d^(-1/2), covariance with n - 1 (as np.cov)."""
    ### BEGIN SOLUTION
    mean = X.mean(axis=0)
    vals, vecs = np.linalg.eigh(np.cov(X - mean, rowvar=False))
    top = np.argsort(vals)[::-1][:d]
    return mean, vecs[:, top] / np.sqrt(vals[top])
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "pcaw_fit_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
def sign_free(fit):
    mean, P = fit
    return mean, P @ P.T


def library_fit(X, d):
    w = rk.whitening.PCAWhitening(dim=d).fit(X)
    return w.mean_, w.projection_


rng = np.random.default_rng(7)
cases = [(rng.normal(size=(40, 5)) @ rng.normal(size=(5, 5)) + 2.0, 3),
         (rng.random((60, 8)), 8),
         (rng.normal(size=(25, 4)) * [5.0, 2.0, 1.0, 0.3], 2)]
rk.grading.check(lambda X, d: sign_free(pcaw_fit(X, d)), lambda X, d: sign_free(library_fit(X, d)), cases,
                 name="(mean, P Pᵀ) of your PCA-whitening", rtol=1e-4, atol=1e-6)

# %% [markdown]
# On the real descriptors, the library's `PCAWhitening` does the same; check that it really gives
# the learning rows identity covariance:

# %%
d = 64
pcaw = rk.whitening.PCAWhitening(dim=d).fit(x_learn)
white_learn = rk.whitening.PCAWhitening(dim=d, normalize=False).fit(x_learn).transform(x_learn)
assert_allclose(np.cov(white_learn, rowvar=False), np.eye(d), atol=1e-3)  # identity covariance on the split it learned
white_test = rk.whitening.PCAWhitening(dim=d, normalize=False).fit(x_learn).transform(x_test)
off = np.abs(np.cov(white_test, rowvar=False) - np.eye(d)).max()
print(f"Covariance of the whitened rows: identity on the learning split; on the test split it is off the identity "
      f"by up to {off:.2f} — whitening is learned, and only as good as the learning rows are representative.")

# %% [markdown]
# **Power-law normalisation** damps components that dominate by sheer size before (or after)
# the linear steps: each coordinate becomes $\operatorname{sign}(x)\,\lvert x\rvert^{\alpha}$
# ($\alpha = 0.5$: the signed square root), then the row is L2-normalised again.
#
# **Graded exercise 2.** Write it.

# %% nbgrader={"grade": false, "grade_id": "power_law", "locked": false, "schema_version": 3, "solution": true}
def power_law(X, alpha=0.5):
    """(n, D) rows → (n, D): sign(x)·|x|**alpha element-wise, then each row divided by its L2 norm."""
    ### BEGIN SOLUTION
    Y = np.sign(X) * np.abs(X) ** alpha
    return Y / np.linalg.norm(Y, axis=1, keepdims=True)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "power_law_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
rng = np.random.default_rng(8)
cases = [(rng.normal(size=(5, 6)), 0.5), (rng.random((3, 4)) ** 3, 0.5), (rng.normal(size=(4, 3)), 0.2), (rng.normal(size=(2, 5)), 1.0)]
rk.grading.check(power_law, lambda X, alpha: rk.whitening.PowerLaw(alpha).fit(X).transform(X), cases, name="power_law")

# %% [markdown]
# **Dimension reduction** keeps only the top $d$ principal directions, *without* the scaling:
# $\mathbf y = U_d^\top(\mathbf x - \boldsymbol\mu)$, then L2 again (the dropped directions took
# some of each row's norm with them).
#
# **Graded exercise 3.** Fit PCA on learning rows, reduce test rows to $d$ dimensions and
# re-normalise. The check compares the cosine similarities between your output rows (again free
# of eigenvector signs) with the library's `PCA`.

# %% nbgrader={"grade": false, "grade_id": "pca_reduce", "locked": false, "schema_version": 3, "solution": true}
def pca_reduce(X_learn, X_test, d):
    """Fit mean and top-d eigenvectors on X_learn (n, D); return X_test (m, D) → (m, d): centred, projected, rows L2-normalised."""
    ### BEGIN SOLUTION
    mean = X_learn.mean(axis=0)
    vals, vecs = np.linalg.eigh(np.cov(X_learn - mean, rowvar=False))
    Y = (X_test - mean) @ vecs[:, np.argsort(vals)[::-1][:d]]
    return Y / np.linalg.norm(Y, axis=1, keepdims=True)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "pca_reduce_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
def similarities(Y):
    return Y @ Y.T


rng = np.random.default_rng(9)
cases = [(rng.normal(size=(50, 6)) @ rng.normal(size=(6, 6)), rng.normal(size=(7, 6)), 3),
         (rng.random((30, 10)), rng.random((5, 10)), 4),
         (rng.normal(size=(20, 3)), rng.normal(size=(4, 3)), 3)]
rk.grading.check(lambda *a: similarities(pca_reduce(*a)),
                 lambda XL, XT, d: similarities(rk.whitening.PCA(dim=d).fit(XL).transform(XT)), cases,
                 name="cosine similarities of your reduced rows")

# %% [markdown]
# ## 2 · Learned whitening from matching pairs
#
# PCA-whitening ignores which images match. Learned whitening (Radenović et al.) first whitens the
# covariance of *differences between matching pairs* (so that the variation between views of one
# object is flattened), then keeps the directions along which all images spread most. Pairs come
# from the learning split's labels.

# %%
rows = []
for name, method in [("raw", None),
                     ("PCA-w", rk.whitening.PCAWhitening(dim=d)),
                     ("learned", rk.whitening.LearnedWhitening(dim=d))]:
    if method is None:
        z = x_test
    elif name == "learned":
        z = method.fit(x_learn, labels=learn.db_labels).transform(x_test)
    else:
        z = method.fit(x_learn).transform(x_test)
    for r in offtheshelf.score(z, test):
        rows.append({"method": name, "dim": z.shape[1], **r})
whitening_table = pd.DataFrame(rows).pivot_table(index="method", columns="protocol", values="mAP")
whitening_table.round(4)

# %% [markdown]
# **Question 1.** Shrinkage blends the eigenvalues towards their mean before the scaling,
# $\lambda' = (1-s)\lambda + s\,\bar\lambda$, so weak directions are boosted less. The cell compares
# $s = 0$ and $s = 0.5$ at $d = 512$ (or the largest $d$ the learning rows allow). When would you
# expect shrinkage to help?

# %%
d_big = min(512, len(x_learn) - 1)
shrink = {s: offtheshelf.score(rk.whitening.PCAWhitening(dim=d_big, shrinkage=s).fit(x_learn).transform(x_test),
                               test, ["all"])[0]["mAP"] for s in (0.0, 0.5)}
print(f"PCA-whitening to d = {d_big} from {len(x_learn)} learning rows: shrinkage 0 → {shrink[0.0]:.3f} mAP, "
      f"shrinkage 0.5 → {shrink[0.5]:.3f} (raw descriptors: {whitening_table.loc['raw', 'all']:.3f})")

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_shrinkage", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# The smallest eigenvalues are estimated from few effective samples and are mostly noise; dividing
# by their square root multiplies that noise most. With many directions kept relative to the
# number of learning rows (here hundreds of directions from the number of rows printed above),
# full whitening over-fits, and shrinkage — a tempered boost — should help; the printed pair shows
# by how much on this run. With ample learning data and few kept directions it matters little.

# %% [markdown]
# **Question 2.** What does whitening *undo*? Think of two channels that always fire together
# (the toy's correlated coordinates), and of the identity covariance checked in section 1.

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_what_whitening_undoes", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# It undoes correlation and unequal variance. Channels that co-fire (the same visual element
# seen by many filters, or a pattern repeated across an image) count many times in a plain inner
# product; after whitening they form one direction with unit variance, so they count once
# (Jégou & Chum's "co-occurrences"). Directions where all images vary a lot — often generic,
# uninformative content — are shrunk, and rare, distinctive directions are boosted. The catch:
# it is learned, so directions that vary little in the learning rows may be noise that whitening
# then amplifies (Question 1, and the test-split covariance printed in section 1).

# %% [markdown]
# **Question 3.** Why can PCA-whitening keep at most $n - 1$ directions from $n$ learning rows,
# whatever $D$? The cell prints the rank the library found.

# %%
print(f"{len(x_learn)} learning rows of dimension {x_learn.shape[1]}: "
      f"rank of their centred covariance = {rk.whitening.PCA().fit(x_learn).rank_}")

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_rank", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# Centring subtracts the mean, so the $n$ centred rows sum to zero and span at most $n - 1$
# dimensions; the covariance is a sum of their outer products and has the same rank. All other
# eigenvalues are zero (numerically tiny), and $\lambda^{-1/2}$ would blow them up into pure
# noise: the library refuses a `dim` above the rank. In SMALL mode this caps the whitened
# dimension well below the 1280 channels.

# %% [markdown]
# ## 3 · Dimension: 32-d … 8192-d
#
# The survey varies the width of fully-connected layers on top of pooled ResNet-50 features. We
# do the same with one FC+ReLU layer of each width on the 1280-d GeM vector of EfficientNet-Lite0,
# trained on learning objects with a cosine-softmax loss; the epoch is picked on *held-out learning
# objects*, never on the test split. Below the native width, PCA-whitening gives a second curve.

# %%
dim_df = offtheshelf.dimension(coil, BACKBONE, POOLING, dims=DIMS, epochs=EPOCHS)
dim_df[dim_df["protocol"] == "all"][["recipe", "dim", "mAP", "best_epoch", "val_mAP"]]

# %%
fig = rk.figures.dimension_curve(dim_df)

# %%
rk.survey.figure_claims()["2.13b"]

# %%
curves = dim_df[dim_df["protocol"] == "all"].sort_values("dim")
for recipe, part in curves.groupby("recipe", sort=False):
    print(f"{recipe:>10}: " + ", ".join(f"{int(r.dim)}-d {r.mAP:.3f}" for r in part.itertuples()))

# %% [markdown]
# **Question 4.** The epoch of each FC layer was chosen on held-out *learning* objects. Why not
# simply keep the epoch with the best test mAP, or train on all 50 learning objects and keep the
# last epoch?

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_model_selection", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# Choosing the epoch by test mAP uses the test split to fit a setting: the reported number is then
# the maximum of many noisy estimates and overstates what a new test set would give. Held-out
# learning objects estimate the same thing without touching the test split. Training on all
# learning objects and keeping the last epoch is honest too (no selection at all) — comparing it
# with early stopping on held-out objects measures what early stopping is worth, without peeking.

# %% [markdown]
# ## 4 · PCA-whitening vs raw descriptors (teaching contrast)

# %%
raw_map, pcaw_map = whitening_table.loc["raw", "all"], whitening_table.loc["PCA-w", "all"]
gap = pcaw_map - raw_map
mode = "SMALL mode" if SMALL else "full mode"
if abs(gap) >= 0.03:
    print(f"On COIL-100 ({mode}) PCA-whitening to {d} dimensions {'beats' if gap > 0 else 'loses to'} the raw "
          f"{x_test.shape[1]}-d descriptors: {pcaw_map:.3f} against {raw_map:.3f} mAP (gap {abs(gap):.3f}), learned on "
          f"{len(x_learn)} learning rows.")
else:
    print(f"On COIL-100 ({mode}) PCA-whitening to {d} dimensions gives {pcaw_map:.3f} mAP and the raw {x_test.shape[1]}-d "
          f"descriptors {raw_map:.3f}: the difference is below 0.03, so this run is not evidence either way.")

# %% [markdown]
# ## What to notice
#
# * Whitening is *learned*: its effect here (section 4's contrast, Question 1's shrinkage pair)
#   depends on how many learning rows there are per kept direction, and the learning split caps
#   the number of directions (Question 3). Compare SMALL and full mode.
# * The dimension curves printed in section 3 show where extra width stops paying on this data;
#   the survey saw saturation on ResNet-50 (2048-d already competitive).
# * Model selection used held-out *learning* objects. Picking the epoch by test mAP would inflate
#   every number on this page.
