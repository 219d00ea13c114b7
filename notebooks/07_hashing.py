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
# # 07 · Hashing: binary codes from deep descriptors
#
# **Goals.** See why a hash function is trained through a `tanh` relaxation of `sign`, what the two
# code-quality regularisers (bit balance, bit uncorrelation) do to a code, derive ITQ in a few lines and
# check it against the library, then trace mAP against code length on COIL-100 and Fashion-MNIST for
# LSH, PCA-sign, ITQ and a deep hash head, and train a hash code without labels, from an autoencoder.
#
# **Survey.** §2.3.2.4 "Deep hash embedding" (Eq. 2.12, `b = h(f(x))`; bit balance `b·1 = 0` and bit
# uncorrelation `bbᵀ = I`), §2.1.2 challenge 3 (accuracy against efficiency), §2.4.2.2 (autoencoders for
# unsupervised hashing).
#
# **Prerequisites.** notebooks/03 (GeM pooling) and 04 (PCA). **The rule:** every encoder is fitted on
# the learning split only (COIL-100 objects 1–50; Fashion-MNIST's train split, which is also its
# database in the hashing literature's protocol). Queries are only encoded.

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from numpy.testing import assert_allclose

import retrievalkit as rk
from retrievalkit import figures_hashing as fh
from retrievalkit.experiments import hashing as H
from retrievalkit.experiments import offtheshelf

# %% tags=["parameters"]
SMALL = rk.config.SMALL
BITS = H.SMALL_BITS if SMALL else H.BITS
METHODS = ("lsh", "pca_sign", "itq", "deep", "deep+balance") if SMALL else H.METHODS

# %% [markdown]
# **Papers.** LSH with random hyperplanes: Charikar, *Similarity estimation techniques from rounding
# algorithms* (STOC 2002, [doi:10.1145/509907.509965](https://doi.org/10.1145/509907.509965)). ITQ: Gong &
# Lazebnik, *Iterative quantization: a Procrustean approach to learning binary codes* (CVPR 2011,
# [doi:10.1109/CVPR.2011.5995432](https://doi.org/10.1109/CVPR.2011.5995432)). The survey of learning to hash
# it cites for the quality criteria: Wang et al., *A survey on learning to hash*
# ([arXiv:1606.00185](https://arxiv.org/abs/1606.00185)). The survey: [arXiv:2101.11282](https://arxiv.org/abs/2101.11282).
#
# **The equation (survey Eq. 2.12).** A hash function binarises the network's descriptor $f(x;\theta)$:
# $$b = h\big(f(x;\theta)\big) \in \{-1, +1\}^K,\qquad \text{here } h(f) = \operatorname{sign}(W^\top (f - \mu)) .$$
# Code quality (survey §2.3.2.4 b), over the $N$ codes $B \in \{\pm1\}^{N\times K}$ of a data set:
# **bit balance** $B^\top \mathbf{1} = 0$ (each bit is $+1$ half of the time) and **bit
# uncorrelation** $\tfrac{1}{N} B^\top B = I$. Two codes are compared by the Hamming distance, the
# number of differing bits: for $\pm1$ codes $d_H(b, b') = \tfrac{1}{2}\,(K - b^\top b')$.
#
# ## 1 · A toy: why `tanh`, and what the regularisers change
#
# `sign` has zero gradient almost everywhere, so a network cannot learn through it. Replacing it by
# `tanh` during training gives gradients; a quantisation term `(|h| − 1)²` then pulls the outputs
# towards ±1 so that the final `sign` loses little. Two 2-D Gaussian blobs, a 2-bit linear hash head:
# with the similarity loss alone both bits may end up splitting the data the same way (correlated,
# and possibly unbalanced); the balance term asks each bit to be +1 half of the time, the
# decorrelation term asks the two bits to disagree as often as they agree.

# %%
rng = np.random.default_rng(0)
toy_x = np.concatenate([rng.normal([-2, 0], 0.6, (200, 2)), rng.normal([2, 0], 0.6, (200, 2))]).astype(np.float32)
toy_y = np.repeat([0, 1], 200)

z = torch.linspace(-3, 3, 7, requires_grad=True)
torch.tanh(z).sum().backward()
print("tanh gradient:", z.grad.numpy().round(3), "— sign's gradient would be all zeros")

rows = []
for name, reg in {"loss only": {}, "+ balance": {"balance": 5.0}, "+ decorrelation": {"decorrelation": 5.0},
                  "+ both": {"balance": 5.0, "decorrelation": 5.0}}.items():
    model = rk.hashing.DeepHash(2, "pairwise", epochs=30, batch_size=64, seed=1, **reg).fit(toy_x, toy_y)
    codes = model.transform(toy_x)
    report = rk.hashing.code_report(codes)
    ones = rk.hashing.metrics.fraction_of_ones(codes)
    constant = bool((rk.hashing.bit_balance(codes) == 1).any())
    rows.append({"objective": name, "ones_bit1": ones[0], "ones_bit2": ones[1],
                 # Pearson correlation is undefined when a bit never changes: show NaN, not the library's 0
                 "abs_corr": np.nan if constant else report["mean_abs_corr"],
                 "abs_BtB_offdiag": abs(rk.hashing.metrics.bit_correlation(codes, centered=False)[0, 1]),
                 "unique_codes": report["unique_codes"]})
toy_table = pd.DataFrame(rows).set_index("objective")
toy_table.round(3)

# %% [markdown]
# Columns: the fraction of $+1$ per bit (0.5 = balanced, 0 or 1 = a constant bit, which carries no
# information), the Pearson correlation $|r|$ between the two bits (undefined, NaN, when a bit is
# constant), the survey's uncentred form $|\tfrac{1}{N}\sum_n b_{n1} b_{n2}|$ (0 when the bits agree as
# often as they disagree), and the number of distinct codes used (at most 4).

# %%
for name, r in toy_table.iterrows():
    corr = "undefined (a bit is constant)" if np.isnan(r["abs_corr"]) else f"{r['abs_corr']:.3f}"
    print(f"{name:16s}: {int(r['unique_codes'])} codes used, bit 1 is +1 for {r['ones_bit1']:.1%} and bit 2 for "
          f"{r['ones_bit2']:.1%} of the points, |r| = {corr}, |BᵀB/N| off-diagonal = {r['abs_BtB_offdiag']:.3f}")

# %% [markdown]
# Two blobs carry one bit of label information, and the pairwise similarity loss is satisfied as soon
# as the codes separate the blobs — so nothing in the loss rewards a second, independent bit. Read the
# printed rows against that: a regulariser can make a bit balanced, but a balanced second bit that
# only repeats (or negates) the first is exactly as redundant, which is what a large $|r|$ shows.

# %% [markdown]
# The penalties are just the survey's two conditions written on the batch's relaxed codes; check
# them against a direct computation:

# %%
h = torch.tanh(torch.as_tensor(rng.standard_normal((64, 8)), dtype=torch.float32))
assert_allclose(rk.hashing.deep.balance_penalty(h).item(), (h.mean(0) ** 2).mean().item(), rtol=1e-5)
gram = h.T @ h / len(h)
assert_allclose(rk.hashing.deep.decorrelation_penalty(h).item(), ((gram - torch.eye(8)) ** 2).mean().item(), rtol=1e-5)

# %% [markdown]
# ## 2 · LSH, ITQ and the Hamming distance, written by you
#
# **LSH** (random hyperplanes): draw $W\in\mathbb{R}^{D\times K}$ with i.i.d. $\mathcal{N}(0,1)$ entries;
# bit $k$ says on which side of the hyperplane $w_k$ (through the learning mean $\mu$) a vector lies,
# $b_k = \operatorname{sign}\big(w_k^\top(x-\mu)\big)$. Nothing is learned but $\mu$. The figure shows three
# such hyperplanes on the toy blobs, and PCA-sign's two (the principal axes, used by ITQ's start).

# %%
lsh_toy = rk.hashing.LSH(3, seed=3).fit(toy_x)
pca_toy = rk.hashing.PCASign(2).fit(toy_x)
fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained", sharey=True)
for ax, (title, enc, normals, mean) in zip(axes, [
        ("LSH: 3 random hyperplanes", lsh_toy, lsh_toy.hyperplanes_.T, lsh_toy.mean_),
        ("PCA-sign: 2 principal hyperplanes", pca_toy, pca_toy.pca_.projection_.T, toy_x.mean(0))]):
    codes = enc.transform(toy_x, as_bits=True)
    labels = codes @ (2 ** np.arange(codes.shape[1]))
    ax.scatter(*toy_x.T, c=labels, cmap="tab10", vmin=0, vmax=9, s=8)
    for n in normals:
        d = np.array([-n[1], n[0]]) / np.linalg.norm(n)
        ax.plot(*np.stack([mean - 6 * d, mean + 6 * d]).T, color="black", lw=1.2)
        ax.annotate("", xy=mean + 0.9 * n / np.linalg.norm(n), xytext=mean,
                    arrowprops=dict(arrowstyle="->", color="crimson", lw=1.5))
    ax.set(xlim=(-4.5, 4.5), ylim=(-3, 3), title=title, xlabel="$x_1$")
    ax.set_aspect("equal")
axes[0].set_ylabel("$x_2$")
axes[1].plot([], [], color="black", label="hyperplane (bit flips here)")
axes[1].plot([], [], color="crimson", label="normal $w_k$ (side of bit +1)")
axes[1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
n_lsh = len(np.unique(lsh_toy.transform(toy_x), axis=0))
n_pca = len(np.unique(pca_toy.transform(toy_x), axis=0))
print(f"Colours = distinct codes. LSH's 3 bits use {n_lsh} of 8 codes, PCA-sign's 2 bits {n_pca} of 4: a random "
      "hyperplane through the mean of two distant blobs almost always passes between them, so random bits repeat "
      "each other; the second principal axis splits each blob instead.")

# %% nbgrader={"grade": false, "grade_id": "lsh", "locked": false, "schema_version": 3, "solution": true}
def my_lsh(X, n_bits, seed):
    """LSH codes of the rows of X (N, D) -> (N, n_bits) of ±1, fitted on X itself.

    Hyperplanes W = np.random.default_rng(seed).standard_normal((D, n_bits)) through the mean of X;
    a projection of exactly 0 gives +1.
    """
    ### BEGIN SOLUTION
    W = np.random.default_rng(seed).standard_normal((X.shape[1], n_bits))
    P = (X - X.mean(0)) @ W
    return np.where(P >= 0, 1, -1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "lsh_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
gen = np.random.default_rng(71)
cases = [(gen.normal(size=(50, 8)), 16, 0), (gen.uniform(size=(30, 20)), 8, 5)]
rk.grading.check(my_lsh, lambda X, n_bits, seed: rk.hashing.LSH(n_bits, seed=seed).fit(X).transform(X), cases,
                 name="my_lsh")

# %% [markdown]
# **ITQ** (Gong & Lazebnik). Project the centred rows on the top-$K$ principal directions,
# $V\in\mathbb{R}^{N\times K}$, then find a rotation $R$ that brings $VR$ close to the corners of the
# hypercube, i.e. minimise the quantisation loss
# $$Q(B, R) = \lVert B - VR\rVert_F^2,\qquad B\in\{\pm1\}^{N\times K},\ R^\top R = I .$$
# Alternate two exact steps: for fixed $R$, $B = \operatorname{sign}(VR)$; for fixed $B$, the
# orthogonal Procrustes solution: $\operatorname{SVD}(V^\top B) = U\Sigma \tilde W^\top$, $R = U\tilde W^\top$.
# Neither step can increase $Q$.

# %% nbgrader={"grade": false, "grade_id": "itq", "locked": false, "schema_version": 3, "solution": true}
def my_itq_rotation(X, n_bits, n_iter, seed):
    """ITQ's rotation R (n_bits, n_bits) for the rows of X (N, D).

    V = rk.whitening.PCA(dim=n_bits, normalize=False).fit(X).transform(X); start from
    R = rk.hashing.codes.random_rotation(n_bits, seed); then n_iter times: B = sign(V R) (0 -> +1),
    SVD of V^T B, R = U W^T.
    """
    ### BEGIN SOLUTION
    V = rk.whitening.PCA(dim=n_bits, normalize=False).fit(X).transform(X)
    R = rk.hashing.codes.random_rotation(n_bits, seed)
    for _ in range(n_iter):
        B = np.where(V @ R >= 0, 1.0, -1.0)
        U, _, Wt = np.linalg.svd(V.T @ B)
        R = U @ Wt
    return R
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "itq_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
gen = np.random.default_rng(72)
cases = [(gen.normal(size=(200, 16)), 8, 1, 0), (gen.normal(size=(300, 24)) @ gen.normal(size=(24, 24)), 12, 10, 3)]
rk.grading.check(my_itq_rotation, lambda X, n_bits, n_iter, seed:
                 rk.hashing.ITQ(n_bits, n_iter=n_iter, seed=seed).fit(X).rotation_, cases,
                 name="my_itq_rotation", atol=1e-6)

# %% nbgrader={"grade": false, "grade_id": "hamming", "locked": false, "schema_version": 3, "solution": true}
def my_hamming(q, db):
    """All Hamming distances between ±1 codes: q (Nq, K), db (Ndb, K) -> (Nq, Ndb) integers.

    Use one matrix product: d = (K - q db^T) / 2.
    """
    ### BEGIN SOLUTION
    return (q.shape[1] - q.astype(np.int64) @ db.astype(np.int64).T) // 2
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "hamming_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
gen = np.random.default_rng(73)
cases = [(np.where(gen.random((5, k)) < 0.5, -1, 1).astype(np.int8), np.where(gen.random((9, k)) < 0.5, -1, 1).astype(np.int8))
         for k in (8, 13, 64)]
rk.grading.check(my_hamming, lambda q, db: rk.hashing.hamming_distances(q, db, packed=False), cases, name="my_hamming")

# %% [markdown]
# The library's ITQ on the COIL-100 learning descriptors: the quantisation loss falls from PCA-sign's
# value (the random rotation's start) as the rotation is learned.

# %%
coil = offtheshelf.Coil(small=SMALL, progress=False)
coil_data = H.coil_data(coil)
itq = rk.hashing.ITQ(32, n_iter=50, seed=0).fit(coil_data.x_learn)
assert np.all(np.diff(itq.loss_history_) <= 1e-6 * itq.loss_history_[0])   # never increases
print(f"quantisation loss ‖B − VR‖²: {itq.loss_history_[0]:.1f} at the random start → {itq.loss_history_[-1]:.1f} "
      f"after {itq.n_iter} iterations (PCA-sign, R = I: {rk.hashing.PCASign(32).fit(coil_data.x_learn).quantization_loss_:.1f})")
coil_data

# %% [markdown]
# ## 3 · mAP vs code length on COIL-100 and Fashion-MNIST
#
# COIL-100: trapezoid mAP over the full Hamming ranking, default protocol (the deep head is trained on
# objects 1–50 and scored on 51–100 — *unseen* objects). Fashion-MNIST: mAP@1000 with the train split as
# database and learning set, test images as queries (SMALL: 2,000 / 200 at 32 px; full: 60,000 / 1,000
# at 64 px). The `float` row is the uncompressed 1280-d descriptor.

# %%
fashion_data = H.fashion_data(SMALL, progress=False)
scores, curves = [], []
for data in (coil_data, fashion_data):
    s, c = H.code_length(data, bits=BITS, methods=METHODS, small=SMALL)
    scores.append(s)
    curves.append(c)
scores, curves = pd.concat(scores, ignore_index=True), pd.concat(curves, ignore_index=True)
scores.pivot_table(index="method", columns=["dataset", "bits"], values="mAP", sort=False).round(3)

# %%
fig = fh.map_vs_bits(scores)

# %%
fig = fh.code_diagnostics(scores, bits=64)

# %%
fig = fh.pr_curves(curves)

# %% [markdown]
# ## What to notice
#
# Computed from the table above on this run:

# %%
learned = ["pca_sign", "itq", "deep"]
short, long_ = min(BITS), max(BITS)
for dataset, part in scores[scores["method"] != "float"].groupby("dataset", sort=False):
    m = part.pivot_table(index="method", columns="bits", values="mAP")
    best_short = m.loc[learned, short].idxmax()
    print(f"• {dataset}: at {short} bits the best learned code ({best_short}, {m.loc[best_short, short]:.3f}) vs LSH "
          f"{m.loc['lsh', short]:.3f} (gap {m.loc[best_short, short] - m.loc['lsh', short]:+.3f}); at {long_} bits "
          f"the gap to LSH is {m.loc[learned, long_].max() - m.loc['lsh', long_]:+.3f}.")
    print(f"  ITQ − PCA-sign: {m.loc['itq', short] - m.loc['pca_sign', short]:+.3f} at {short} bits, "
          f"{m.loc['itq', long_] - m.loc['pca_sign', long_]:+.3f} at {long_} bits; deep − ITQ at {long_} bits: "
          f"{m.loc['deep', long_] - m.loc['itq', long_]:+.3f}.")
float_bytes = 4 * coil_data.x_db.shape[1]
print(f"• {long_} bits = {long_ // 8} bytes per image against {float_bytes} bytes for the float descriptor: "
      f"{float_bytes // (long_ // 8)}× less memory.")

# %% [markdown]
# The deep head is trained with labels. On Fashion-MNIST the queries come from the same 10 classes as
# the training images; on COIL-100 the test objects are classes the head never saw — hashing with
# labels learns categories, not a general similarity.

# %% [markdown]
# ## 4 · Unsupervised hashing with an autoencoder (survey §2.4.2.2)
#
# The deep head above needs labels. An **autoencoder** learns a code without any: an encoder squeezes a
# descriptor into $K$ numbers, a decoder rebuilds the descriptor from them, and both are trained so the
# round trip loses as little as possible. Make the bottleneck a relaxed binary code and it is a hash
# function — the idea of *semantic hashing* (Salakhutdinov & Hinton, Int. J. Approx. Reasoning 2009,
# [doi:10.1016/j.ijar.2008.11.006](https://doi.org/10.1016/j.ijar.2008.11.006)); the survey lists
# autoencoders among the unsupervised frameworks for hash learning (§2.4.2.2, §2.3.2.4).
#
# **The objective.** For a batch of $B$ standardised descriptors $\tilde x_i\in\mathbb{R}^D$ (centred and
# scaled with learning-split statistics), encoder $f_\theta$ and decoder $g_\phi$:
# $$h_i = \tanh\big(f_\theta(\tilde x_i)\big)\in(-1,1)^K,\qquad \hat x_i = g_\phi(h_i),$$
# $$\mathcal{L}(\theta,\phi) = \underbrace{\frac{1}{BD}\sum_{i=1}^{B}\lVert \tilde x_i-\hat x_i\rVert_2^2}_{\text{reconstruction}}
#   \;+\;\lambda\,\underbrace{\frac{1}{BK}\sum_{i=1}^{B}\sum_{k=1}^{K}\big(|h_{ik}|-1\big)^2}_{\text{quantisation}},
#   \qquad b_i = \operatorname{sign}(h_i) .$$
# The quantisation term is the same as the deep head's: it pulls the bottleneck to the corners $\pm1$ so that
# the test-time `sign` changes little. No label appears anywhere.

# %% nbgrader={"grade": false, "grade_id": "ae_objective", "locked": false, "schema_version": 3, "solution": true}
def my_ae_objective(x, h, x_hat, lam):
    """The autoencoder-hashing objective of one batch (a scalar tensor).

    x: (B, D) standardised inputs, h: (B, K) tanh bottleneck, x_hat: (B, D) reconstructions, lam: the
    quantisation weight λ. Mean squared reconstruction error over all B·D entries, plus λ times the
    mean over all B·K entries of (|h| − 1)².
    """
    ### BEGIN SOLUTION
    return ((x - x_hat) ** 2).mean() + lam * ((h.abs() - 1) ** 2).mean()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ae_objective_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
gen = torch.Generator().manual_seed(74)
cases = [(torch.randn(b, d, generator=gen), torch.tanh(torch.randn(b, k, generator=gen)), torch.randn(b, d, generator=gen), lam)
         for b, d, k, lam in [(4, 6, 3, 0.1), (16, 32, 8, 1.0), (5, 10, 12, 0.0)]]
rk.grading.check(my_ae_objective, lambda x, h, x_hat, lam: rk.hashing.autoencoder_loss(x, h, x_hat, quantization=lam),
                 cases, name="my_ae_objective")

# %% [markdown]
# Train `rk.hashing.AutoencoderHash` on the COIL-100 learning rows — descriptors only, the labels stay
# unused — and score its codes with the same Hamming search and mAP as the table of section 3. Here encoder
# and decoder are linear (`hidden=None`): each bit is then the sign of a learned projection, like ITQ's, and
# training takes seconds. (The library's default puts a hidden layer on each side; try `hidden=256`.)

# %%
AE_EPOCHS = 10 if SMALL else 30
ae_rows = []
for n_bits in BITS:
    ae = rk.hashing.AutoencoderHash(n_bits, hidden=None, epochs=AE_EPOCHS, lr=3e-3, seed=0).fit(coil_data.x_learn)
    _, ids = rk.hashing.hamming_search(ae.encode(coil_data.x_query), ae.encode(coil_data.x_db), len(coil_data.x_db))
    rec = [r["reconstruction"] for r in ae.history_]
    ae_rows.append({"bits": n_bits, "autoencoder": H.score_ranking(coil_data, ids)["mAP"],
                    "reconstruction_first": rec[0], "reconstruction_last": rec[-1]})
coil_scores = scores[scores["dataset"] == "coil100"].pivot_table(index="bits", columns="method", values="mAP")
ae_table = pd.DataFrame(ae_rows).set_index("bits").join(coil_scores[["lsh", "itq", "deep"]])
ae_table.round(3)

# %%
names = {"lsh": "LSH", "itq": "ITQ", "deep": "the supervised deep head"}
for n_bits, r in ae_table.iterrows():
    versus = lambda other: (f"{'above' if r['autoencoder'] > r[other] else 'below'} "  # noqa: E731
                            f"{names[other]} ({r[other]:.3f})")
    print(f"COIL-100, {n_bits} bits: autoencoder codes {r['autoencoder']:.3f} mAP — {versus('lsh')}, {versus('itq')}, "
          f"{versus('deep')}; reconstruction error {r['reconstruction_first']:.3f} after epoch 1 → "
          f"{r['reconstruction_last']:.3f} after epoch {AE_EPOCHS}.")

# %% [markdown]
# ## 5 · The contrast: best vs worst hasher at one code length

# %%
at = scores[(scores["method"] != "float") & (scores["bits"] == long_)]
mode = "SMALL" if SMALL else "full"
for dataset, part in at.groupby("dataset", sort=False):
    m = part.set_index("method")["mAP"]
    best, worst = m.idxmax(), m.idxmin()
    gap = m[best] - m[worst]
    if gap >= 0.03:
        print(f"{dataset} ({mode} mode, {long_} bits): {best} ({m[best]:.3f} mAP) beats {worst} ({m[worst]:.3f}) "
              f"by {gap:.3f}.")
    else:
        print(f"{dataset} ({mode} mode, {long_} bits): best ({best}) and worst ({worst}) differ by {gap:.3f} mAP, "
              "below 0.03: on this data that is not evidence either way.")

# %% [markdown]
# ## Questions
#
# **Question 1.** Why is a hash head trained through `tanh` (plus a quantisation term) instead of
# `sign`, and what does the quantisation term $(|h| - 1)^2$ buy at test time?

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_tanh", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# `sign` is flat almost everywhere, so its gradient is 0 and back-propagation cannot move the
# weights (the printed tanh gradients are non-zero). `tanh` is a smooth stand-in. But the network is
# trained on the relaxed outputs and evaluated on their signs; if the outputs sit near 0, taking the
# sign changes them a lot and the learned similarities are lost. Pulling $|h|$ towards 1 keeps the
# relaxed codes close to their binary versions, so the final `sign` loses little.

# %% [markdown]
# **Question 2.** In the toy table, why is the Pearson correlation of a constant bit reported as
# undefined rather than 0, and why is a constant bit worse than a correlated one?

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_constant", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# Pearson's $r$ divides by each bit's standard deviation, which is 0 for a bit that never changes: the
# value is 0/0. Printing 0 would read as "perfectly uncorrelated", the best score, although a constant
# bit carries no information at all — every code has the same value there, so it never separates two
# images. A correlated bit at least separates something (if redundantly); the balance criterion
# ($B^\top\mathbf 1 = 0$) is what catches a constant bit, and the entropy is 0 for it.

# %% [markdown]
# **Question 3.** ITQ keeps PCA's subspace and only rotates it. Why can a rotation improve the codes,
# when it changes neither the distances between the projected points nor the variance they keep?

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_rotation", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# The rotation changes nothing for the real-valued vectors, but `sign` acts per axis: it is not
# rotation-invariant. PCA's first directions hold most of the variance and the last ones little, so
# the last bits are decided by noise near 0. Rotating spreads the variance more evenly over the axes
# and moves the points towards the hypercube's corners, so fewer points sit near a sign boundary and
# the quantisation loss $\lVert B - VR\rVert_F^2$ drops (printed above).

# %% [markdown]
# **Question 4.** Raising the balance weight to 50 makes every bit split every batch in half. Why can
# that lower mAP with labels such as Fashion-MNIST's 10 classes?

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_balance", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# A useful bit may separate one class from the other nine, i.e. be +1 for only 10 % of the images. A
# strong balance term forces it to 50 %, so it must cut through classes, putting similar images on
# both sides; the similarity loss loses against the regulariser and images of one class get more
# distant codes. Balance is a property of good codes on average, not a goal worth any price.

# %% [markdown]
# **Question 5.** The autoencoder never sees a label. Why can its code still rank better than LSH's at the
# same length (compare the sentences printed in section 4)? And what does its objective not know about
# similarity — when would its codes lose to a label-trained head, or to ITQ?

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_autoencoder", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# LSH's hyperplanes are random: most of them cut through directions in which the descriptors barely vary or
# vary only by noise, so many bits are spent on nothing. To rebuild a descriptor from $K$ numbers the
# autoencoder must keep the directions of largest variance (without the tanh, the best linear autoencoder
# spans exactly PCA's top-$K$ subspace), and on pooled CNN descriptors much of that variance is what separates objects — so its bits are
# placed where the data differ, like PCA-sign and ITQ. But reconstruction rewards keeping *whatever* varies:
# a strong change of background, lighting or pose costs as much reconstruction error as a change of object, so
# the code spends bits on it, and two views of one object can get distant codes. Nothing in the loss says which
# pairs should be close; a head trained with labels (or pseudo-labels from clusters or kNN graphs, as the survey
# describes) is told that. Trained by a few epochs of gradient steps it also only approaches PCA's subspace,
# while ITQ computes that subspace exactly and then rotates it towards the hypercube's corners, so it need not
# beat ITQ; the sentences printed in section 4 show where it lands on this run.
