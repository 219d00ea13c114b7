"""Diffusion on a kNN graph: the iterative random walk, its closed form by conjugate gradient, and an
offline variant (inverse precomputed per connected component, low-rank for large ones) whose
queries cost milliseconds.

Survey §2.4.2.1 (similarity initialisation → transition matrix → iteration scheme, Figure 2.11),
§2.5.3 and Table 2.1 (rows [150]†/‡: diffusion's query time). Taught in
notebooks/11_diffusion_and_reranking.

With ``S`` the normalised graph (:func:`~.graph.normalize`) and ``y`` a query's start vector (its
top-k affinities to the database, :func:`~.graph.query_seeds`), the random walk with restart
``f ← αSf + (1 − α)y`` (Zhou et al. 2004) converges to ``f* = (1 − α)(I − αS)⁻¹ y``. The constant
does not change the ranking, so Iscen et al. 2017 solve ``(I − αS) f = y`` directly by conjugate
gradient (``I − αS`` is symmetric positive definite for 0 < α < 1). Both are *online*: the graph is
built once at indexing time, but each query runs a solver over the whole graph.

The *offline* variant precomputes ``(I − αS)⁻¹`` at indexing time, one connected component at a
time (the inverse is block diagonal): exact dense blocks for small components, and for a large one
its ``r`` leading eigenpairs ``S_c ≈ U Λ Uᵀ``, ``(I − αS_c)⁻¹ y ≈ y + U diag(1/(1 − αλ) − 1) Uᵀ y``
(in the spirit of Iscen et al. 2018, "fast spectral ranking"). A query with a sparse ``y`` only
reads the blocks of its seeds; with truncation disabled it is exact. Queries are diffused one at a time (*inductive*); joint diffusion of
a whole query set added to the graph (*transductive*) is the separate :func:`joint_search`.
"""
from __future__ import annotations

import time

import numpy as np

from ..index import check_k, knn
from ..rows import as_rows
from .graph import DEFAULT_GAMMA, affinity, knn_graph, normalize

DEFAULT_K = 50        # graph neighbours (Iscen et al. 2017 use 50 on Oxford/Paris)
DEFAULT_ALPHA = 0.99  # restart 1 − α: long walks, as in Iscen et al. 2017
DEFAULT_QUERY_K = 10  # non-zeros of a query's start vector y
DEFAULT_RANK = 256    # eigenpairs kept for a large component by the offline variant
DEFAULT_MAX_BLOCK = 4000  # components up to this size keep their exact dense inverse (64 MB at 4,000)
SOLVERS = ("cg", "iterative")


def check_alpha(alpha: float) -> float:
    """α of the walk must lie strictly in (0, 1) (at 1 the walk never restarts and I − αS is singular)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie strictly between 0 and 1 (restart probability 1 − alpha), got {alpha}")
    return float(alpha)


def _dense(y) -> tuple[np.ndarray, bool]:
    y = y.toarray() if hasattr(y, "toarray") else np.asarray(y)
    vec = y.ndim == 1
    return np.asarray(y.reshape(len(y), -1), dtype=np.float64), vec


def cg(S, y, alpha: float = DEFAULT_ALPHA, *, tol: float = 1e-6, max_iter: int = 1000) -> np.ndarray:
    """Solve ``(I − αS) f = y`` by conjugate gradient (Iscen et al. 2017), one column per query.

    ``y``: N or N×m (dense or sparse); each column runs its own CG and stops on its own when
    ``‖r‖ ≤ tol·‖y‖``, so a column's answer never depends on the others. Survey §2.4.2.1.
    """
    check_alpha(alpha)
    S = S.astype(np.float64) if hasattr(S, "astype") else np.asarray(S, dtype=np.float64)
    Y, vec = _dense(y)
    F = np.zeros_like(Y)
    R = Y.copy()
    P = R.copy()
    rr = (R * R).sum(axis=0)
    stop = tol ** 2 * np.maximum(rr, 1e-300)
    active = rr > stop
    for _ in range(max_iter):
        if not active.any():
            break
        a_idx = np.flatnonzero(active)
        Pa = P[:, a_idx]
        AP = Pa - alpha * (S @ Pa)
        step = rr[a_idx] / (Pa * AP).sum(axis=0)
        F[:, a_idx] += step * Pa
        R[:, a_idx] -= step * AP
        rr_new = (R[:, a_idx] ** 2).sum(axis=0)
        P[:, a_idx] = R[:, a_idx] + (rr_new / rr[a_idx]) * Pa
        rr[a_idx] = rr_new
        active[a_idx] = rr_new > stop[a_idx]
    if active.any():
        import warnings

        warnings.warn(f"cg: {int(active.sum())} of {len(active)} columns did not reach tol={tol:g} in "
                      f"max_iter={max_iter} iterations (residual/‖y‖ up to "
                      f"{float(np.sqrt((rr / np.maximum((Y * Y).sum(axis=0), 1e-300))[active].max())):.2e}); "
                      f"raise max_iter or lower alpha", RuntimeWarning, stacklevel=2)
    return F[:, 0] if vec else F


def iterate(S, y, alpha: float = DEFAULT_ALPHA, *, tol: float = 1e-6, max_iter: int = 5000) -> np.ndarray:
    """The random-walk iteration ``f ← αSf + (1 − α)y`` from ``f = y`` until ``‖Δf‖ ≤ tol·‖f‖``.

    Converges (geometrically, at rate α) to ``(1 − α)(I − αS)⁻¹ y`` = ``(1 − α)·`` :func:`cg`'s
    answer: same ranking, many more sparse products (≈ log(tol)/log(α) of them). Columns stop
    independently. Survey §2.4.2.1, item 3 (iteration scheme).
    """
    check_alpha(alpha)
    S = S.astype(np.float64) if hasattr(S, "astype") else np.asarray(S, dtype=np.float64)
    Y, vec = _dense(y)
    restart = (1 - alpha) * Y
    F = Y.copy()
    active = np.ones(F.shape[1], dtype=bool)
    for _ in range(max_iter):
        if not active.any():
            break
        a_idx = np.flatnonzero(active)
        new = alpha * (S @ F[:, a_idx]) + restart[:, a_idx]
        delta = np.linalg.norm(new - F[:, a_idx], axis=0)
        F[:, a_idx] = new
        active[a_idx] = delta > tol * np.maximum(np.linalg.norm(new, axis=0), 1e-300)
    return F[:, 0] if vec else F


def _similarities(queries: np.ndarray, database: np.ndarray) -> np.ndarray:
    """queries × N inner products (torch's matrix product: several times faster than NumPy's here)."""
    import torch

    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    return (q @ torch.from_numpy(database).T).numpy()


def rank_scores(f: np.ndarray, sims: np.ndarray, rank_k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rank database rows by diffused score ``f`` (rows), ties — e.g. nodes the walk never reached —
    broken by the original similarity ``sims``, then by lower id. Returns ``(scores, ids)``."""
    f, sims = np.atleast_2d(f), np.atleast_2d(sims)
    n = f.shape[1]
    rank_k = n if rank_k is None else check_k(rank_k, n, "rank_k")
    ids = np.empty((len(f), rank_k), dtype=np.int64)
    for i in range(len(f)):
        ids[i] = np.lexsort((-sims[i], -f[i]))[:rank_k]  # lexsort is stable: equal keys keep the lower id
    return np.take_along_axis(f, ids, 1).astype(np.float32), ids


class Diffusion:
    """Online diffusion: a kNN graph over the database, each query diffused over it at search time.

    ``fit(database)`` builds ``S`` (:func:`~.graph.knn_graph` + :func:`~.graph.normalize`).
    ``search(queries)`` makes each query's start vector from its ``query_k`` best affinities and
    solves with ``solver`` (``"cg"``, closed form; ``"iterative"``, the random walk). Inductive:
    a query's ranking depends only on itself and the database. Survey §2.4.2.1 / §2.5.3; taught in
    notebooks/11_diffusion_and_reranking.
    """

    def __init__(self, k: int = DEFAULT_K, alpha: float = DEFAULT_ALPHA, *, query_k: int = DEFAULT_QUERY_K,
                 similarity: str = "ip", gamma: float = DEFAULT_GAMMA, sigma: float | None = None,
                 mutual: bool = True, solver: str = "cg", tol: float = 1e-6, max_iter: int | None = None):
        if solver not in SOLVERS:
            raise ValueError(f"unknown solver {solver!r}; choose one of {SOLVERS}")
        self.k, self.alpha, self.query_k = k, check_alpha(alpha), query_k
        self.similarity, self.gamma, self.sigma, self.mutual = similarity, gamma, sigma, mutual
        self.solver, self.tol, self.max_iter = solver, tol, max_iter
        affinity(np.ones(1), similarity, gamma=gamma, sigma=sigma or 1.0)  # validate early

    def __repr__(self):
        return (f"{type(self).__name__}(k={self.k}, alpha={self.alpha}, query_k={self.query_k}, "
                f"similarity={self.similarity!r}, gamma={self.gamma}, mutual={self.mutual}, solver={self.solver!r})")

    def fit(self, database, S=None):
        """Build the graph over ``database``; ``S``: reuse a normalised graph already built on it
        with the same settings (e.g. another solver's ``S_``)."""
        start = time.perf_counter()
        self.database_ = as_rows(database, "database")
        check_k(self.query_k, len(self.database_) - 1, "query_k")
        # σ of the Gaussian affinity is fixed here, from the database alone, so that a query's seeds
        # never depend on the other queries searched with it (affinity's σ=None takes a median
        # over whatever similarities it is given: a whole batch of queries at search time)
        self.sigma_ = self.sigma
        if self.similarity == "gaussian" and self.sigma is None:
            n = len(self.database_)
            sims, _ = knn(self.database_, self.database_, check_k(self.k, n - 1, "graph k"),
                          exclude=np.arange(n)[:, None])
            self.sigma_ = float(np.sqrt(np.median(np.maximum(2 - 2 * sims, 0)))) or 1.0
        if S is None:
            W = knn_graph(self.database_, self.k, similarity=self.similarity, gamma=self.gamma, sigma=self.sigma_,
                          mutual=self.mutual)
            S = normalize(W)
        elif S.shape != (len(self.database_),) * 2:
            raise ValueError(f"S is {S.shape}, the database has {len(self.database_)} rows")
        self.S_ = S.astype(np.float64).tocsr()
        self.build_s_ = time.perf_counter() - start
        return self

    @property
    def nbytes(self) -> int:
        """Bytes kept beyond the descriptors: the sparse graph (data + indices + indptr)."""
        S = self.S_
        return int(S.data.nbytes + S.indices.nbytes + S.indptr.nbytes)

    def seeds(self, sims: np.ndarray, exclude=None) -> np.ndarray:
        """Dense start vectors ``y`` (queries × N) from query × database similarities: each query's
        ``query_k`` most similar rows, equal similarities → lower id (the rule of :func:`~.graph.knn`)."""
        sims = np.atleast_2d(sims)
        s = sims.copy()
        if exclude is not None:
            ex = np.asarray(exclude, dtype=np.int64).reshape(len(s), -1)
            for i, row in enumerate(ex):
                s[i, row[row >= 0]] = -np.inf
        top = np.argsort(-s, axis=1, kind="stable")[:, : self.query_k]
        y = np.zeros(sims.shape, dtype=np.float64)
        np.put_along_axis(y, top, affinity(np.take_along_axis(sims, top, 1), self.similarity, gamma=self.gamma,
                                           sigma=getattr(self, "sigma_", self.sigma)), 1)
        return y

    def solve(self, Y: np.ndarray) -> np.ndarray:
        """Diffuse start vectors (N×m) over the graph: columns of ``(I − αS)⁻¹ Y`` (up to a constant)."""
        if self.solver == "cg":
            return cg(self.S_, Y, self.alpha, tol=self.tol, max_iter=self.max_iter or 1000)
        return iterate(self.S_, Y, self.alpha, tol=self.tol, max_iter=self.max_iter or 5000)

    def search(self, queries, rank_k: int | None = None, *, exclude=None, batch: int = 64,
               progress: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Inductive diffusion of each query: ``(scores, ids)`` best first (``rank_k=None``: all).

        ``exclude[i]``: database rows left out of query ``i``'s start vector (its own row when it
        is a database image); they are still ranked. ``batch`` queries share the sparse products
        but are solved as independent columns (same answer as one at a time).
        """
        from tqdm.auto import tqdm

        q = as_rows(queries, "queries")
        ex = None if exclude is None else np.asarray(exclude, dtype=np.int64).reshape(len(q), -1)
        out_s, out_i = [], []
        starts = range(0, len(q), batch)
        if len(q) > batch:
            starts = tqdm(starts, disable=None if progress is None else not progress, desc="diffusion")
        for s in starts:
            sims = _similarities(q[s : s + batch], self.database_)
            Y = self.seeds(sims, None if ex is None else ex[s : s + batch])
            F = self.solve(Y.T).T
            sc, ids = rank_scores(F, sims, rank_k)
            out_s.append(sc)
            out_i.append(ids)
        return np.concatenate(out_s), np.concatenate(out_i)


class OfflineDiffusion(Diffusion):
    """Offline diffusion: ``(I − αS)⁻¹`` precomputed at indexing time, per connected component.

    The walk never leaves a connected component of the graph, so ``(I − αS)⁻¹`` is block diagonal.
    Components of at most ``max_block`` nodes (on COIL-100: one or two objects each) keep their exact
    dense inverse; a larger one keeps its ``rank`` leading eigenpairs ``S_c ≈ U Λ Uᵀ`` and applies
    ``y + U((h(Λ) − 1) ⊙ Uᵀy)``, ``h(λ) = 1/(1 − αλ)`` (the low-rank idea of Iscen et al. 2018, "fast
    spectral ranking"; the identity term stands for the discarded eigenvalues). A query touches only
    the blocks holding its seeds: a few small dense rows, or one product with ``U``.
    ``rank=None`` disables truncation (every component exact). Survey §2.4.2.1, Table 2.1; taught in
    notebooks/11_diffusion_and_reranking.
    """

    def __init__(self, k: int = DEFAULT_K, alpha: float = DEFAULT_ALPHA, *, rank: int | None = DEFAULT_RANK,
                 max_block: int = DEFAULT_MAX_BLOCK, **kwargs):
        kwargs.pop("solver", None)
        super().__init__(k, alpha, **kwargs)
        if rank is not None and (int(rank) != rank or rank < 1):
            raise ValueError(f"rank must be a positive integer or None (no truncation), got {rank!r}")
        self.rank, self.max_block = rank, int(max_block)
        self.eig_tol = 1e-6  # Lanczos tolerance: machine precision costs ~4× the time for no ranking change

    def __repr__(self):
        return super().__repr__()[:-1].replace(", solver='cg'", "") + f", rank={self.rank}, max_block={self.max_block})"

    def fit(self, database, S=None):
        from scipy.sparse.csgraph import connected_components

        super().fit(database, S)
        start = time.perf_counter()
        n = self.S_.shape[0]
        _, comp = connected_components(self.S_, directed=False)
        order = np.argsort(comp, kind="stable")
        bounds = np.flatnonzero(np.diff(comp[order])) + 1
        self.component_ = comp
        self.position_ = np.empty(n, dtype=np.int64)
        self.blocks_ = []  # (nodes, kind, data): kind "inverse" → dense inverse; "spectral" → (U, h)
        for nodes in np.split(order, bounds):
            self.position_[nodes] = np.arange(len(nodes))
            S_c = self.S_[nodes][:, nodes]
            if self.rank is None or len(nodes) <= self.max_block or self.rank >= len(nodes) - 1:
                inv = np.linalg.inv(np.eye(len(nodes)) - self.alpha * S_c.toarray())
                self.blocks_.append((nodes, "inverse", inv.astype(np.float32)))
            else:
                from scipy.sparse.linalg import eigsh

                v0 = np.full(len(nodes), 1 / np.sqrt(len(nodes)))  # deterministic start
                lam, U = eigsh(S_c, k=int(self.rank), which="LA", v0=v0, tol=self.eig_tol)
                h = (1 / (1 - self.alpha * lam) - 1).astype(np.float32)
                self.blocks_.append((nodes, "spectral", (np.ascontiguousarray(U, dtype=np.float32), h)))
        self.build_s_ += time.perf_counter() - start
        return self

    @property
    def n_spectral(self) -> int:
        """How many components use the low-rank (truncated) representation."""
        return sum(kind == "spectral" for _, kind, _ in self.blocks_)

    @property
    def nbytes(self) -> int:
        """Bytes of the precomputed blocks used at query time (dense inverses, eigenvectors, filters)."""
        total = self.component_.nbytes + self.position_.nbytes
        for nodes, kind, data in self.blocks_:
            total += nodes.nbytes + (data.nbytes if kind == "inverse" else data[0].nbytes + data[1].nbytes)
        return int(total)

    def solve(self, Y: np.ndarray) -> np.ndarray:
        Y = np.asarray(Y, dtype=np.float32)
        Y = Y.reshape(len(Y), -1)
        F = np.zeros_like(Y)
        nz = np.flatnonzero(np.abs(Y).sum(axis=1))  # y is sparse: only the seeds' blocks are touched
        for c in np.unique(self.component_[nz]):
            nodes, kind, data = self.blocks_[c]
            seeds = nz[self.component_[nz] == c]
            pos = self.position_[seeds]
            if kind == "inverse":
                F[nodes] += data[:, pos] @ Y[seeds]
            else:
                U, h = data
                F[nodes] += Y[nodes] + U @ ((U[pos].T @ Y[seeds]) * h[:, None])
        return F


def joint_search(queries, database, k: int = DEFAULT_K, alpha: float = DEFAULT_ALPHA, *, exclude=None,
                 similarity: str = "ip", gamma: float = DEFAULT_GAMMA, sigma: float | None = None,
                 mutual: bool = True, tol: float = 1e-6, max_iter: int = 1000, rank_k: int | None = None):
    """JOINT (transductive) mode: all queries become graph nodes, each diffused from its own node.

    Not the default: every query's ranking depends on which other queries were submitted, and the
    graph must be rebuilt for each query set. ``exclude[i]`` (the query's own database row) is kept
    from linking to query node ``i``. Returns ``(scores, ids)`` over the database rows only.
    Survey §2.4.2.1; taught in notebooks/11_diffusion_and_reranking.
    """
    check_alpha(alpha)
    q, db = as_rows(queries, "queries"), as_rows(database, "database")
    n, m = len(db), len(q)
    nodes = np.concatenate([db, q])
    pairs = np.full((n + m, 1), -1, dtype=np.int64)
    if exclude is not None:
        ex = np.asarray(exclude, dtype=np.int64).reshape(m)
        has = ex >= 0
        pairs[n + np.flatnonzero(has), 0] = ex[has]
        pairs[ex[has], 0] = n + np.flatnonzero(has)
    S = normalize(knn_graph(nodes, k, similarity=similarity, gamma=gamma, sigma=sigma, mutual=mutual,
                            exclude_pairs=pairs))
    Y = np.zeros((n + m, m))
    Y[n + np.arange(m), np.arange(m)] = 1.0
    F = cg(S, Y, alpha, tol=tol, max_iter=max_iter)[:n].T
    return rank_scores(F, _similarities(q, db), rank_k)


__all__ = ["check_alpha", "cg", "iterate", "rank_scores", "Diffusion", "OfflineDiffusion", "joint_search",
           "DEFAULT_K", "DEFAULT_ALPHA", "DEFAULT_QUERY_K", "DEFAULT_RANK", "DEFAULT_MAX_BLOCK"]
