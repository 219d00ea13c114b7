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

import matplotlib.pyplot as plt
import numpy as np

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
# **Papers.** BoW: Sivic & Zisserman, *Video Google* (ICCV 2003,
# [doi:10.1109/ICCV.2003.1238663](https://doi.org/10.1109/ICCV.2003.1238663)). VLAD: Jégou et al.,
# *Aggregating local descriptors into a compact image representation* (CVPR 2010,
# [doi:10.1109/CVPR.2010.5540039](https://doi.org/10.1109/CVPR.2010.5540039)); intra-normalisation:
# Arandjelović & Zisserman, *All about VLAD* (CVPR 2013,
# [CVF](https://openaccess.thecvf.com/content_cvpr_2013/papers/Arandjelovic_All_About_VLAD_2013_CVPR_paper.pdf)).
# Fisher vectors: Perronnin & Dance (CVPR 2007,
# [doi:10.1109/CVPR.2007.383266](https://doi.org/10.1109/CVPR.2007.383266)). VLAD on conv columns:
# Ng et al., *Exploiting local features from deep networks for image retrieval*
# ([arXiv:1504.05133](https://arxiv.org/abs/1504.05133)); its trainable successor NetVLAD
# ([arXiv:1511.07247](https://arxiv.org/abs/1511.07247)). The survey: [arXiv:2101.11282](https://arxiv.org/abs/2101.11282).
#
# ## 1 · Three embeddings, written by you
#
# Notation (survey §2.3.2.2): an image gives $T$ local descriptors $x_1,\dots,x_T\in\mathbb{R}^D$;
# a codebook has $K$ words $c_1,\dots,c_K$. The **hard assignment** (survey Eq. 2.5) is
# $$\phi(x_t, c_k) = \begin{cases}1 & c_k \text{ is the word nearest to } x_t\\ 0 & \text{otherwise.}\end{cases}$$
#
# **BoW (survey Eqs. 2.4 and 2.6).** Count the votes of each word and divide by $T$, the *term
# frequency* $g(c_k) = \frac{1}{T}\sum_t \phi(x_t, c_k)$; the image is the $K$-vector
# $G_{BoW} = [g(c_1),\dots,g(c_K)]^\top$. Text retrieval adds an *inverse document frequency*:
# a word present in $n_k$ of $N$ learning images is worth $\mathrm{idf}_k = \log(N/n_k)$, so words
# found everywhere (background) weigh little. Then L2-normalise, so a dot product is a cosine.

# %% nbgrader={"grade": false, "grade_id": "bow", "locked": false, "schema_version": 3, "solution": true}
def my_bow(x, C, idf):
    """tf-idf BoW of ONE image: x (T, D) descriptors, C (K, D) words, idf (K,) -> (K,) with unit L2 norm.

    Eq. 2.5 (nearest word, squared Euclidean distance), Eq. 2.4 (count / T), times idf, then L2.
    """
    ### BEGIN SOLUTION
    words = ((x[:, None, :] - C[None, :, :]) ** 2).sum(-1).argmin(1)
    tf = np.bincount(words, minlength=len(C)) / len(x)
    v = tf * idf
    return v / np.linalg.norm(v)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "bow_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
def library_bow(x, C, idf):
    bow = emb.BoW(emb.KMeansCodebook.from_centroids(C), weighting="tfidf")
    bow.idf_ = idf.astype(np.float32)  # normally learned by bow.fit_idf(learning descriptors, split="learn")
    return bow.encode(emb.LocalDescriptors.from_list([x]))[0]


gen = np.random.default_rng(51)
cases = [(gen.normal(size=(t, d)).astype(np.float32), gen.normal(size=(k, d)).astype(np.float32),
          gen.uniform(0.1, 3.0, size=k).astype(np.float32)) for t, d, k in ((20, 2, 3), (50, 8, 6), (7, 4, 5))]
rk.grading.check(my_bow, library_bow, cases, name="my_bow")

# %% [markdown]
# **VLAD (survey Eqs. 2.7–2.8).** Instead of counting, add up where the descriptors fall *inside* their
# word's cell: the residuals
# $$v_k = \frac{1}{T}\sum_{t=1}^{T}\phi(x_t, c_k)\,(x_t - c_k), \qquad G_{VLAD} = [v_1^\top,\dots,v_K^\top]^\top \in \mathbb{R}^{KD}.$$
# Three normalisations follow in practice (they are not in the survey's equations): **intra**
# ($v_k \leftarrow v_k/\lVert v_k\rVert$, so a word hit by a burst of near-identical descriptors cannot
# dominate), **power** ($z \leftarrow \operatorname{sign}(z)\sqrt{|z|}$ element-wise) and a final **L2**.
# The figure shows the residuals on a 2-D toy: every arrow is one $x_t - c_k$, the thick arrow of each
# word is $T v_k$ (their sum).

# %%
rng = np.random.default_rng(0)
toy = rng.normal(size=(30, 2)).astype(np.float32)
C = np.array([[-1, 0], [1, 0], [0, 1.2]], dtype=np.float32)
words = emb.KMeansCodebook.from_centroids(C).assign(toy)
colors = ["tab:blue", "tab:orange", "tab:green"]

fig, ax = plt.subplots(figsize=(7.2, 4.2), layout="constrained")
for k, c in enumerate(C):
    mine = toy[words == k]
    ax.scatter(*mine.T, s=14, color=colors[k], label=f"descriptors of word {k + 1}")
    for p in mine:
        ax.annotate("", xy=p, xytext=c, arrowprops=dict(arrowstyle="->", color=colors[k], lw=0.6, alpha=0.6))
    total = (mine - c).sum(0)
    ax.annotate("", xy=c + total, xytext=c, arrowprops=dict(arrowstyle="-|>", color="black", lw=2.2))
ax.scatter(*C.T, marker="*", s=260, color="black", zorder=3, label="words $c_k$")
ax.plot([], [], color="black", lw=2.2, label=r"sum of residuals $T\,v_k$")
ax.set_title("VLAD on a 2-D toy: residuals $x_t - c_k$ per word")
ax.set_aspect("equal")
ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)

# %% nbgrader={"grade": false, "grade_id": "vlad", "locked": false, "schema_version": 3, "solution": true}
def my_vlad(x, C):
    """Normalised VLAD of ONE image: x (T, D), C (K, D) -> (K*D,) (survey Eqs. 2.5, 2.7, 2.8).

    Block k (entries k*D ... k*D+D-1) = mean over the T descriptors of phi(x_t, c_k) (x_t - c_k);
    then intra-normalise each block (a word nobody chose keeps a zero block: do not divide by 0),
    signed square root of every entry, and L2-normalise the whole vector.
    """
    ### BEGIN SOLUTION
    words = ((x[:, None, :] - C[None, :, :]) ** 2).sum(-1).argmin(1)
    V = np.zeros(C.shape)
    for k in range(len(C)):
        V[k] = (x[words == k] - C[k]).sum(0) / len(x)
    V = V / np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-12)
    V = np.sign(V) * np.sqrt(np.abs(V))
    V = V.ravel()
    return V / np.linalg.norm(V)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "vlad_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
def library_vlad(x, C):
    return emb.VLAD(emb.KMeansCodebook.from_centroids(C)).encode(emb.LocalDescriptors.from_list([x]))[0]


gen = np.random.default_rng(52)
cases = [(gen.normal(size=(t, d)).astype(np.float32), gen.normal(size=(k, d)).astype(np.float32))
         for t, d, k in ((25, 2, 3), (60, 8, 4))]
far = np.array([[-1, 0], [1, 0], [40, 40]], dtype=np.float32)       # nobody picks the third word
cases.append((gen.normal(size=(15, 2)).astype(np.float32), far))
rk.grading.check(my_vlad, library_vlad, cases, name="my_vlad")

# %% [markdown]
# **Fisher vector (survey Eqs. 2.9–2.11).** Replace the hard vote by a Gaussian mixture's soft one.
# With weights $w_k$, means $\mu_k$ and diagonal standard deviations $\sigma_k$, the posterior
# (survey Eq. 2.9) is
# $$\gamma_k(x_t) = \frac{w_k\,\mathcal{N}(x_t;\mu_k,\sigma_k^2)}{\sum_j w_j\,\mathcal{N}(x_t;\mu_j,\sigma_j^2)},$$
# and the image records how it would pull each Gaussian — the gradient of the log-likelihood,
# rescaled by the Fisher information (survey Eq. 2.10). The mean term, the one VLAD resembles, is
# $$G_{\mu_k} = \frac{1}{T\sqrt{w_k}}\sum_{t=1}^{T}\gamma_k(x_t)\,\frac{x_t-\mu_k}{\sigma_k}\in\mathbb{R}^D$$
# (the survey prints $\gamma_k$ outside the sum; it belongs inside, as in the original papers). The
# variance term $G_{\sigma_k}$ does the same with $\big((x_t-\mu_k)/\sigma_k\big)^2-1$ and
# $1/(T\sqrt{2w_k})$; Eq. 2.11 stacks $[G_w, G_\mu, G_\sigma]$, usually keeping only $G_\mu$ and
# $G_\sigma$ ($2KD$ numbers).

# %% nbgrader={"grade": false, "grade_id": "fv_mu", "locked": false, "schema_version": 3, "solution": true}
def my_fv_mu(x, w, mu, var):
    """Mean part of the Fisher vector of ONE image, not normalised: x (T, D), w (K,), mu (K, D),
    var (K, D) diagonal variances -> (K*D,), block k = G_mu_k (survey Eqs. 2.9-2.10).

    Compute the posteriors gamma (T, K) in the log domain (subtract each row's max before exp).
    """
    ### BEGIN SOLUTION
    logp = -0.5 * (((x[:, None] - mu) ** 2 / var).sum(-1) + np.log(2 * np.pi * var).sum(-1)) + np.log(w)
    gamma = np.exp(logp - logp.max(1, keepdims=True))
    gamma /= gamma.sum(1, keepdims=True)
    z = (x[:, None] - mu) / np.sqrt(var)                      # T x K x D
    g_mu = (gamma[..., None] * z).sum(0) / (len(x) * np.sqrt(w)[:, None])
    return g_mu.ravel()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "fv_mu_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
def library_fv_mu(x, w, mu, var):
    gmm = emb.GMMCodebook.from_params(w, mu, var)
    fv = emb.FisherVector(gmm, parts=("mu",), alpha=None, normalize=False)
    return fv.encode(emb.LocalDescriptors.from_list([x]))[0]


gen = np.random.default_rng(53)
cases = []
for t, d, k in ((30, 2, 3), (40, 6, 4)):
    w = gen.uniform(0.5, 1.5, size=k)
    cases.append((gen.normal(size=(t, d)).astype(np.float32), w / w.sum(), gen.normal(size=(k, d)),
                  gen.uniform(0.3, 1.5, size=(k, d))))
rk.grading.check(my_fv_mu, library_fv_mu, cases, name="my_fv_mu", rtol=1e-3, atol=1e-4)

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
# ## 5 · Do the normalisations and the second-order part pay?
#
# The library's VLAD applies intra, power and L2 normalisation, its FV keeps $G_\mu$ and $G_\sigma$.
# Switch each extra off on the conv columns (same codebooks, K of the table above) and score again.

# %%
K_TABLE = E.SMALL_TABLE_K if SMALL else E.TABLE_K
test = coil.split("test")
conv = E.local_descriptors(coil, "test", "conv")


def map_all(X):
    return next(r["mAP"] for r in offtheshelf.score(X, test) if r["protocol"] == "all")


book = E.codebook(coil, "conv", "kmeans", K_TABLE["vlad"])
gmm = E.codebook(coil, "conv", "gmm", K_TABLE["fv"])
ablation = {
    "VLAD, intra + power + L2": map_all(emb.VLAD(book).encode(conv)),
    "VLAD, L2 only": map_all(emb.VLAD(book, intra_norm=False, alpha=None).encode(conv)),
    "FV, mu + sigma": map_all(emb.FisherVector(gmm).encode(conv)),
    "FV, mu only": map_all(emb.FisherVector(gmm, parts=("mu",)).encode(conv)),
}
for name, value in ablation.items():
    print(f"{name:26s} mAP {value:.3f}")
gain_norm = ablation["VLAD, intra + power + L2"] - ablation["VLAD, L2 only"]
gain_sigma = ablation["FV, mu + sigma"] - ablation["FV, mu only"]
print(f"Intra + power normalisation {'adds' if gain_norm > 0 else 'costs'} {abs(gain_norm):.3f} mAP to VLAD; "
      f"the variance part {'adds' if gain_sigma > 0 else 'costs'} {abs(gain_sigma):.3f} mAP to the FV "
      f"({'SMALL' if SMALL else 'full'} mode, conv columns).")

# %% [markdown]
# ## What to notice
#
# Each sentence below is computed from the tables above on this run.

# %%
main = sizes[sizes["protocol"] == "all"]
conv_sizes = main[main["source"] == "conv"]
bow_best = conv_sizes[conv_sizes["method"] == "bow"]["mAP"].max()
rich_worst = conv_sizes[conv_sizes["method"] != "bow"]["mAP"].min()
print(f"• Conv columns: the best BoW ({bow_best:.3f}) is {'below' if bow_best < rich_worst else 'not below'} "
      f"the worst VLAD/FV of the grid ({rich_worst:.3f}).")
tab = table[table["protocol"] == "all"].set_index("method")["mAP"]
vlad_c, fv_c = tab["conv columns · VLAD"], tab["conv columns · FV"]
print(f"• At the table's K, FV gives {fv_c:.3f} and VLAD {vlad_c:.3f} on conv columns (difference {fv_c - vlad_c:+.3f}).")
same = [e for e in ("BOW", "VLAD", "FV") if tab[f"conv columns · {e}"] > tab[f"RootSIFT · {e}"]]
print(f"• Conv columns beat RootSIFT with the same embedding for {len(same)} of 3 embeddings ({', '.join(same) or 'none'}).")
gem, hist = tab["GeM (Lite0 head) · global"], tab["colour histogram · global"]
best_sift = tab[[m for m in tab.index if m.startswith("RootSIFT")]].max()
print(f"• Plain GeM: {gem:.3f}, {'the best row' if gem >= tab.max() else 'not the best row'} of the table; "
      f"the colour histogram: {hist:.3f} against the best RootSIFT row's {best_sift:.3f}.")
pw = {m: tab[f"{m} + PCA_w"] - tab[m] for m in tab.index if f"{m} + PCA_w" in tab.index}
print(f"• PCA-whitening (learned on {'few' if SMALL else 'the'} learning images) changes mAP by "
      + ", ".join(f"{d:+.3f} ({m})" for m, d in pw.items()) + ".")

# %% [markdown]
# The survey quotes FV at 81.5 and VLAD at 62.5 mAP on Oxford5k; those numbers come from different
# papers and networks, so they say less about the two embeddings than the side-by-side rows above.
#
# ## 6 · The contrast: deep vs handcrafted local descriptors (survey §2.1, question 1)

# %%
deep_best = tab[[f"conv columns · {e}" for e in ("BOW", "VLAD", "FV")]].idxmax()
sift_best = tab[[f"RootSIFT · {e}" for e in ("BOW", "VLAD", "FV")]].idxmax()
gap = tab[deep_best] - tab[sift_best]
mode = "SMALL" if SMALL else "full"
if abs(gap) >= 0.03:
    print(f"On COIL-100 ({mode} mode) the best embedding of conv columns ({deep_best}, {tab[deep_best]:.3f} mAP) "
          f"{'beats' if gap > 0 else 'loses to'} the best of RootSIFT ({sift_best}, {tab[sift_best]:.3f}) "
          f"by {abs(gap):.3f} mAP.")
else:
    print(f"On COIL-100 ({mode} mode) the best conv-column embedding and the best RootSIFT embedding differ by "
          f"{gap:+.3f} mAP, below 0.03: on this data that is not evidence either way.")

# %% [markdown]
# ## Questions
#
# **Question 1.** BoW with 64 words and VLAD with 8 words: which vector is longer, and why does VLAD
# need so many fewer words to tell images apart?

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_words", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# BoW gives K numbers (64), VLAD K·D (8 × 128 = 1024). A BoW entry only says *how many* descriptors
# fell in a cell; a VLAD block also says *where* inside the cell they fell (the mean residual, a
# D-vector), so a coarse partition already separates descriptors that share a word. BoW has to cut
# space into many small cells to get the same resolution, which is why BoW on conv features needs
# vocabularies of tens of thousands of words.

# %% [markdown]
# **Question 2.** Section 5 printed whether intra + power normalisation helps VLAD on this run. Why
# were they introduced, and why can they fail to help on COIL-100?

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_norm", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# They fight *burstiness*: on landmark photos repeated structures (windows, bricks, leaves) send many
# near-identical descriptors to the same word, and that one block then dominates the vector and the
# dot product. Intra-normalisation caps each word's block at unit length and the signed square root
# damps large entries. On COIL-100 each object is seen alone on a black background with few,
# non-repetitive columns per image, so there is little burstiness to remove; equalising the words
# instead amplifies blocks filled by one or two noisy columns, and the plain vector can score as well
# or better — compare the two numbers printed in section 5 rather than assuming the landmark result.

# %% [markdown]
# **Question 3.** The variance part $G_\sigma$ doubles the Fisher vector's length. Section 5 printed
# what it changes here. Why may second-order statistics add little (or cost) with a small GMM learned
# on few images?

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_sigma", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# $G_\sigma$ measures how the spread of an image's descriptors around each mean differs from the
# model's; its value depends on the squared, variance-scaled residuals, which are noisy when the
# variances were estimated from few descriptors (SMALL mode learns the GMM on a few thousand columns).
# After the L2 normalisation the noisy half takes norm away from the informative mean part. With a
# well-estimated GMM on many descriptors the second-order term carries real information, which is why
# the improved FV keeps it.

# %% [markdown]
# **Question 4.** An inverted file (`emb.InvertedFile`) answers a BoW query by visiting only the
# postings of the query's words. Why does this save work for BoW with a large vocabulary but not for
# VLAD or Fisher vectors?

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_invfile", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# A BoW vector with thousands of words and a few dozen descriptors per image is sparse: most entries
# are 0, and the dot product with a database image only involves the words both share, so the search
# touches only the lists of the query's words. VLAD and FV vectors are dense (every block is non-zero
# once a soft or residual statistic is recorded, and after the power law nothing is exactly 0), so
# every database vector shares every dimension with the query and there is nothing to skip; they are
# searched with dense (or compressed, notebook 08) indexes instead.
