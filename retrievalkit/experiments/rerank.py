"""Re-ranking experiments on COIL-100: QE, αQE, DBA, diffusion (online / offline / joint), and scale.

Survey §2.4.2.1 (diffusion), §2.5.3 and Table 2.1 (accuracy and time per query of re-ranking).
Taught in notebooks/11_diffusion_and_reranking. Every function returns a tidy DataFrame; figures
are drawn by :mod:`retrievalkit.figures_rerank`.

Protocol (nothing is chosen on a test query):

* Descriptors: EfficientNet-Lite0 GeM on the ``head`` map (the cached extraction shared with
  notebooks/03–08). Whether to PCA-whiten them (whitening learned on the learning split) is
  decided by :func:`choose_whitening` *inside* the learning split: whiten fitted on the first half
  of the learning objects, scored on the second half.
* Every re-ranking hyper-parameter with a grid (QE k, DBA k, graph k, α of the walk) is picked by
  :func:`select_params` on the learning split (objects 1–50, same query protocol: four views per
  object are queries, the query's own row is junk). Fixed a priori: αQE/DBA exponent 3
  (Radenović et al. 2018), affinity γ = 3 and mutual kNN (Iscen et al. 2017), 10 seeds per query;
  the offline variant keeps exact inverses of components up to 4,000 nodes, 256 eigenpairs above.
* Test split: database = 3,600 images of objects 51–100, 200 queries that are database rows. Each
  query's own row is excluded from every neighbour set it uses (expansion, diffusion seeds) and
  is junk in scoring, exactly like :func:`retrievalkit.experiments.offtheshelf.score`. DBA and the
  diffusion graph are computed once on the database alone (label-free; the query images are
  database images in this protocol).
* mAP = trapezoid AP over the full ranking. Time = ms for one query at a time (inductive), whole
  ranking, 2 shared CPU cores; build time = offline indexing work; bytes = precomputed structures.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import artifacts, evaluate, rerank
from ..index import exact_search, time_queries
from ..rows import l2n
from .efficiency import distractors
from .hashing import BACKBONE, LAYER, POOLING
from .offtheshelf import Coil, layers_for, pca_whiten

QE_KS = (1, 2, 5, 10, 20, 50)
DBA_KS = (1, 2, 5, 10, 20, 50, 100)
GRAPH_KS = (3, 5, 10, 20, 50)
ALPHAS = (0.9, 0.99)
QE_ALPHA = 3.0     # αQE / DBA weight exponent, fixed a priori (Radenović et al. 2018)
GAMMA = 3.0        # affinity = max(s, 0)^3, fixed a priori (Iscen et al. 2017)
QUERY_K = 10       # seeds per query, fixed a priori
RANK = 256         # eigenpairs for a component above 4,000 nodes in the offline variant, fixed a priori
SMALL_RANK = 64
ITERATIVE_TOL = 1e-4  # the random walk stops when a step changes f by < 0.01 %
SINGLE_QUERIES, SMALL_SINGLE_QUERIES = 20, 5
SCALE_SIZES, SMALL_SCALE_SIZES = (20_000,), (2_000,)
SMALL_GRIDS = {"qe_ks": (1, 3, 10), "dba_ks": (1, 3, 10), "graph_ks": (10, 20, 50), "alphas": (0.9, 0.99)}
DISTRACTOR_DIM = 256  # PCA space (learning rows) where the distractor Gaussian is fitted

METHODS = ("none", "AQE", "αQE", "DBA", "DBA+αQE", "diffusion iterative", "diffusion CG (online)",
           "diffusion offline (precomputed)", "diffusion joint (transductive)")


@dataclass
class Split:
    """Database rows, which rows are queries, and the per-query ground truth (query row = junk)."""

    name: str
    x: np.ndarray
    query_rows: np.ndarray
    gnd: list

    @property
    def queries(self) -> np.ndarray:
        return self.x[self.query_rows]

    def __repr__(self):
        return f"Split({self.name!r}, db={self.x.shape}, queries={len(self.query_rows)})"


def choose_whitening(x_learn: np.ndarray, labels: np.ndarray, query_rows: np.ndarray,
                     dims: tuple = (None,)) -> tuple[str, dict]:
    """``"none"``, ``"pca_w"`` (all dimensions) or ``"pca_w@<dim>"``, decided inside the learning split only.

    PCA-whitening (one candidate per entry of ``dims``; ``None`` keeps every dimension) is fitted on
    the first half of the learning objects and every variant is scored (exact search, trapezoid
    mAP) on the second half's queries. Returns the best and all scores.
    """
    objects = np.unique(labels)
    fit_rows = np.isin(labels, objects[: len(objects) // 2])
    val = np.flatnonzero(~fit_rows)
    val_labels = labels[val]
    vq = np.flatnonzero(np.isin(val, query_rows))
    gnd = evaluate.label_ground_truth(val_labels, vq)
    variants = {"none": x_learn[val]}
    for dim in dims:
        variants["pca_w" if dim is None else f"pca_w@{dim}"] = pca_whiten(x_learn[fit_rows], x_learn[val], dim)
    scores = {name: evaluate.mean_ap(exact_search(xv[vq], xv)[1], gnd) for name, xv in variants.items()}
    return max(scores, key=scores.get), scores


def coil_splits(coil: Coil) -> tuple[Split, Split, dict]:
    """Learning and test :class:`Split` with the whitening decision applied; plus the decision record."""
    learn, test = coil.split("learn"), coil.split("test")
    xl = coil.extract("learn", BACKBONE, layers_for(BACKBONE)).get(LAYER, POOLING)
    xt = coil.extract("test", BACKBONE, layers_for(BACKBONE)).get(LAYER, POOLING)
    ql, qt = np.asarray(learn.query_db_index), np.asarray(test.query_db_index)
    choice, scores = choose_whitening(xl, np.asarray(learn.db_labels), ql)
    if choice == "pca_w":
        xl, xt = pca_whiten(xl, xl), pca_whiten(xl, xt)
    xl, xt = (np.ascontiguousarray(x, dtype=np.float32) for x in (xl, xt))
    return (Split("coil100-learn", xl, ql, learn.ground_truth("all")),
            Split("coil100-test", xt, qt, test.ground_truth("all")),
            {"whitening": choice, **{f"val_mAP_{k}": v for k, v in scores.items()}})


def _map(ids, split: Split) -> float:
    return evaluate.mean_ap(ids, split.gnd, "trapezoid")


# --------------------------------------------------------------------------- selection (learning split only)
SELECT_VERSION = 1  # of the cached selections: bump when the search changes what it picks


def select_params(learn: Split, *, qe_ks=QE_KS, dba_ks=DBA_KS, graph_ks=GRAPH_KS, alphas=ALPHAS,
                  progress: bool | None = None) -> tuple[dict, pd.DataFrame]:
    """Grid search of every re-ranking hyper-parameter on the LEARNING split; returns (best, grid rows).

    Only ``learn`` is read; the experiment passes the learning split here and nothing else.
    Diffusion is scored with the CG solver (the iterative walk and the offline variant share its
    fixed point); QE k and DBA k are chosen first, then αQE on the chosen DBA database. Searched once
    per learning split and grid (:mod:`retrievalkit.artifacts`), then read back.
    """
    grids = {"qe_ks": list(qe_ks), "dba_ks": list(dba_ks), "graph_ks": list(graph_ks), "alphas": list(alphas)}
    key = {"data": artifacts.fingerprint(learn.x, learn.query_rows, *[a for g in learn.gnd for a in g]),
           **grids, "qe_alpha": QE_ALPHA, "gamma": GAMMA, "query_k": QUERY_K}
    found = artifacts.cached("rerank_params", key, lambda: _search(learn, progress=progress, **grids),
                             version=SELECT_VERSION)
    return found["chosen"], pd.DataFrame(found["grid"])


def _search(learn: Split, *, qe_ks, dba_ks, graph_ks, alphas, progress) -> dict:
    q, rows, n = learn.queries, learn.query_rows, len(learn.x)
    grid = []
    for k in [k for k in qe_ks if k < n - 1]:
        for name, alpha in (("AQE", 0.0), ("αQE", QE_ALPHA)):
            grid.append({"method": name, "qe_k": k, "mAP": _map(rerank.alpha_qe(q, learn.x, k, alpha, exclude=rows)[1],
                                                                  learn)})
    for k in [k for k in dba_ks if k < n - 1]:
        grid.append({"method": "DBA", "dba_k": k,
                     "mAP": _map(exact_search(q, rerank.dba(learn.x, k, QE_ALPHA))[1], learn)})
    for k in [k for k in graph_ks if k < n - 1]:
        for alpha in alphas:
            dif = rerank.Diffusion(k, alpha, query_k=QUERY_K, gamma=GAMMA).fit(learn.x)
            grid.append({"method": "diffusion", "graph_k": k, "alpha": alpha,
                         "mAP": _map(dif.search(q, exclude=rows, progress=progress)[1], learn)})
    df = pd.DataFrame(grid)

    def best(method):
        part = df[df["method"] == method]
        return part.loc[part["mAP"].idxmax()]

    chosen = {"aqe_k": int(best("AQE")["qe_k"]), "qe_k": int(best("αQE")["qe_k"]), "dba_k": int(best("DBA")["dba_k"]),
              "graph_k": int(best("diffusion")["graph_k"]), "alpha": float(best("diffusion")["alpha"])}
    xdba = rerank.dba(learn.x, chosen["dba_k"], QE_ALPHA)
    combo = []
    for k in [k for k in qe_ks if k < n - 1]:
        combo.append({"method": "DBA+αQE", "dba_k": chosen["dba_k"], "qe_k": k,
                      "mAP": _map(rerank.alpha_qe(q, xdba, k, QE_ALPHA, exclude=rows)[1], learn)})
    combo = pd.DataFrame(combo)
    chosen["dba_qe_k"] = int(combo.loc[combo["mAP"].idxmax(), "qe_k"])
    return {"chosen": chosen, "grid": pd.concat([df, combo], ignore_index=True).to_dict("records")}


# --------------------------------------------------------------------------- methods on one database
def _ms_single(search, n: int) -> float:
    """ms per query of ``search(rows)`` one query at a time (:func:`~retrievalkit.index.time_queries`, best of 2)."""
    return time_queries(search, n, repeats=2, single_queries=n, batch=False)[0]["ms_per_query_single"]


def compare(split: Split, params: dict, *, db=None, n_distractors: int = 0, single_queries: int = SINGLE_QUERIES,
            rank: int = RANK, methods=METHODS, iterative_map: bool = True,
            progress: bool | None = None) -> pd.DataFrame:
    """Every method of :data:`METHODS` on one database: mAP, ms/query (one at a time), build s, bytes.

    ``db``: database rows (default ``split.x``; the scale run passes real rows + distractors, real
    rows first so the ground truth still holds). Rows are in the form of Survey Table 2.1.
    """
    db = split.x if db is None else np.ascontiguousarray(db, dtype=np.float32)
    q, rows = split.queries, split.query_rows
    n1 = min(single_queries, len(q))
    ex = rows[:, None]
    out, per_query = [], []

    def add(method, ids, ms, build_s=0.0, nbytes=0, mode="inductive", note=""):
        if ids is not None:
            ap = evaluate.average_precision(ids, split.gnd, "trapezoid")
            per_query.extend({"method": method, "mode": mode, "query": i, "AP": float(a)} for i, a in enumerate(ap))
        out.append({"method": method, "dataset": split.name, "n_db": len(db), "distractors": n_distractors,
                    "mode": mode, "mAP": np.nan if ids is None else _map(ids, split), "ms_per_query": ms,
                    "build_s": build_s, "index_bytes": int(nbytes), "note": note})

    def timed_build(fn):
        start = time.perf_counter()
        obj = fn()
        return obj, time.perf_counter() - start

    if "none" in methods:
        add("none", exact_search(q, db)[1], _ms_single(lambda r: exact_search(q[r], db), n1),
            note="exact inner-product search")
    for name, k, alpha in (("AQE", params["aqe_k"], 0.0), ("αQE", params["qe_k"], QE_ALPHA)):
        if name in methods:
            add(name, rerank.alpha_qe(q, db, k, alpha, exclude=rows)[1],
                _ms_single(lambda r: rerank.alpha_qe(q[r], db, k, alpha, exclude=ex[r]), n1),
                note=f"k={k}" + (f", α={alpha:g}" if alpha else ""))
    if "DBA" in methods or "DBA+αQE" in methods:
        xdba, build = timed_build(lambda: rerank.dba(db, params["dba_k"], QE_ALPHA))
        if "DBA" in methods:
            add("DBA", exact_search(q, xdba)[1], _ms_single(lambda r: exact_search(q[r], xdba), n1), build,
                xdba.nbytes, note=f"k={params['dba_k']}, α={QE_ALPHA:g}; queries not augmented")
        if "DBA+αQE" in methods:
            k = params["dba_qe_k"]
            add("DBA+αQE", rerank.alpha_qe(q, xdba, k, QE_ALPHA, exclude=rows)[1],
                _ms_single(lambda r: rerank.alpha_qe(q[r], xdba, k, QE_ALPHA, exclude=ex[r]), n1), build,
                xdba.nbytes, note=f"DBA k={params['dba_k']}, QE k={k}")
    gk, alpha = params["graph_k"], params["alpha"]
    common = {"query_k": QUERY_K, "gamma": GAMMA}
    graph_note = f"graph k={gk}, α={alpha:g}, γ={GAMMA:g}, mutual, {QUERY_K} seeds"
    diffusion = [m for m in methods if m.startswith("diffusion") and "joint" not in m]
    if diffusion:  # one kNN graph serves the three inductive solvers (its build time is on each row)
        cg_model, graph_s = timed_build(lambda: rerank.Diffusion(gk, alpha, **common).fit(db))
    for name in diffusion:
        if name == "diffusion CG (online)":
            dif, build = cg_model, graph_s
        elif name == "diffusion iterative":
            dif = rerank.Diffusion(gk, alpha, solver="iterative", tol=ITERATIVE_TOL, **common).fit(db, cg_model.S_)
            build = graph_s
        else:
            dif, extra = timed_build(lambda: rerank.OfflineDiffusion(gk, alpha, rank=rank, **common).fit(db, cg_model.S_))
            build = graph_s + extra
        score_all = name != "diffusion iterative" or iterative_map
        ids = dif.search(q, exclude=rows, progress=progress)[1] if score_all else None
        n_time = max(1, n1 // 4) if name == "diffusion iterative" else n1  # the walk is slow: fewer timed queries
        note = graph_note
        if isinstance(dif, rerank.OfflineDiffusion):
            note += (f", {len(dif.blocks_)} components, {dif.n_spectral} above {dif.max_block} nodes "
                     f"kept as rank-{dif.rank} eigenpairs")
        note += "" if score_all else "; mAP not computed (same fixed point as CG)"
        add(name, ids, _ms_single(lambda r: dif.search(q[r], exclude=ex[r], progress=False), n_time), build,
            dif.nbytes, note=note)
    if "diffusion joint (transductive)" in methods:
        (scores, ids), total = timed_build(lambda: rerank.joint_search(q, db, gk, alpha, exclude=rows, gamma=GAMMA))
        add("diffusion joint (transductive)", ids, 1e3 * total / len(q), mode="joint (all queries as graph nodes)",
            note=graph_note + "; graph rebuilt per query set, time = total / queries")
    df = pd.DataFrame(out)
    df.attrs["per_query"] = per_query  # AP per query, for the verdicts' paired bootstrap
    return df


def table(coil: Coil, *, splits=None, progress: bool | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Table 2.1 analogue on the COIL-100 test split: (results, learning-split grid, chosen params).

    ``splits``: the output of :func:`coil_splits` when already computed (it is the slow part).
    """
    learn, test, decision = splits or coil_splits(coil)
    params, grid = select_params(learn, progress=progress, **(SMALL_GRIDS if coil.small else {}))
    params.update(decision)
    df = compare(test, params, single_queries=SMALL_SINGLE_QUERIES if coil.small else SINGLE_QUERIES,
                 rank=SMALL_RANK if coil.small else RANK, progress=progress)
    return df, grid, params


def lifted_distractors(x_learn: np.ndarray, n: int, *, dim: int = DISTRACTOR_DIM, seed: int = 0) -> np.ndarray:
    """``n`` unit distractors in the descriptor space of ``x_learn`` (learning rows only).

    :func:`~retrievalkit.experiments.efficiency.distractors` needs a full-rank covariance, which 1,280-d
    descriptors of a few thousand (SMALL: 720) images do not have; so it runs in a ``dim``-d PCA
    space of the learning rows and its unit directions are mapped back: ``l2n(mean + r·u·P)``, ``r``
    = the median norm of the centred, reduced learning rows.
    """
    from ..whitening import PCA

    pca = PCA(dim=min(dim, len(x_learn) - 2, x_learn.shape[1]), normalize=False).fit(x_learn)
    reduced = pca.transform(x_learn)
    u = distractors(reduced, n, seed)
    x = pca.mean_ + np.median(np.linalg.norm(reduced, axis=1)) * (u @ pca.components_)
    return l2n(x).astype(np.float32)


def scale(coil: Coil, params: dict, sizes=None, *, splits=None, seed: int = 0,
          progress: bool | None = None) -> pd.DataFrame:
    """ms per query of each method with synthetic distractors added to the test database.

    Distractors: :func:`retrievalkit.experiments.efficiency.distractors` (a Gaussian fitted on the
    learning rows, in the same descriptor space as the database, L2-normalised). Joint diffusion
    is left out (it rebuilds the graph per query set); the iterative walk is timed but not scored.
    """
    learn, test, _ = splits or coil_splits(coil)
    sizes = tuple(sizes or (SMALL_SCALE_SIZES if coil.small else SCALE_SIZES))
    extra = lifted_distractors(learn.x, max(0, max(sizes) - len(test.x)), seed=seed)
    frames = []
    for n in sizes:
        n_extra = max(0, n - len(test.x))
        db = np.concatenate([test.x, extra[:n_extra]])
        frames.append(compare(test, params, db=db, n_distractors=n_extra,
                              single_queries=SMALL_SINGLE_QUERIES if coil.small else 10,
                              rank=SMALL_RANK if coil.small else RANK, iterative_map=False,
                              methods=[m for m in METHODS if "joint" not in m], progress=progress))
    return pd.concat(frames, ignore_index=True)


__all__ = ["Split", "choose_whitening", "coil_splits", "select_params", "compare", "table", "scale", "METHODS",
           "lifted_distractors", "QE_KS", "DBA_KS", "GRAPH_KS", "ALPHAS"]
