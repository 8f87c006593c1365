"""Transcriptional frequencies: eigenvectors of a cell-cell graph Laplacian.

The construction follows the reference blog post so that eigenvalues are comparable:
a k-nearest-neighbour graph by cosine similarity on the preprocessed expression matrix
(k = 15, self excluded), binary adjacency symmetrised by union, the combinatorial
Laplacian ``L = D - A``, and the constant eigenvector (eigenvalue 0) dropped. The
eigenvectors with the next-smallest eigenvalues are the "frequencies": the lowest varies
slowly over the graph (few sign changes along the dominant trajectory), higher ones
oscillate on finer scales.

Everything stays sparse. The smallest eigenpairs come from LOBPCG preconditioned with
aggregation algebraic multigrid (pyamg), the route scikit-learn's
``spectral_embedding(eigen_solver="amg")`` uses; small graphs fall back to a dense
``scipy.linalg.eigh``. A 100,000-cell kNN Laplacian takes seconds
(``benchmarks/bench_spectral.py``); the dense route is O(n^3).

Keys written by :func:`frequencies`, read back by :func:`get_frequencies`
------------------------------------------------------------------------
``key_added`` defaults to ``"freq"`` (as ``sc.tl.umap`` writes ``X_umap``,
``uns["umap"]``).

``adata.obsm["X_<key_added>"]``
    ``n_obs x n_freqs`` float64, frequency ``j`` in column ``j`` (the constant / trivial
    eigenvector is not included). Each column has unit Euclidean norm, so entries are of
    order ``1/sqrt(n_obs)``; the sign is fixed so that the entry of largest magnitude is
    positive.
``adata.uns[key_added]``
    dict with ``eigenvalues`` (n_freqs, ascending, trivial 0 excluded), ``eigenvalue_0``
    (the dropped one, ~0), ``n_components`` (connected components of the graph),
    ``n_edges``, ``solver``, ``max_residual``, ``seconds`` and ``params`` (``n_freqs``,
    ``k``, ``graph``, ``mode``, ``normalized``, ``use_rep``, ``tol``, ``seed``).

A bilinear regressor of the frequencies (:func:`fit_frequencies`) is trained on
standardised targets; :func:`seed_ablation` repeats it over seeds and weight decays.
"""

from __future__ import annotations

import time
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.linalg
import scipy.sparse as sp
from pyamg import smoothed_aggregation_solver
from scipy.sparse.csgraph import connected_components
from scipy.sparse.csgraph import laplacian as _csgraph_laplacian
from scipy.sparse.linalg import lobpcg
from sklearn.metrics import r2_score
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits

from .bilinear import fit, module_tracking, predict
from .data import get_matrix
from .preprocess import split_indices

__all__ = [
    "knn_graph",
    "scanpy_graph",
    "laplacian",
    "smallest_eigenpairs",
    "fix_signs",
    "check_connected",
    "largest_component",
    "frequencies",
    "get_frequencies",
    "fit_frequencies",
    "predict_frequencies",
    "seed_ablation",
]

#: Graphs with at most this many nodes are solved densely by default.
DENSE_MAX_NODES = 1000


# ----------------------------------------------------------------------------- graphs


def _as_float_matrix(X, what: str):
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float64)
        data = X.data
    else:
        X = np.asarray(X, dtype=np.float64)
        data = X
    if X.ndim != 2:
        raise ValueError(f"{what} must be 2-D (cells x features), got shape {X.shape}.")
    if not np.all(np.isfinite(data)):
        raise ValueError(
            f"{what} contains NaN or inf; fix the preprocessing (e.g. log1p of "
            "negative values) or impute before building a graph."
        )
    return X


def _unit_rows(X):
    """Rows scaled to unit norm (then cosine neighbours are the Euclidean ones)."""
    norms = (
        np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
        if sp.issparse(X)
        else np.linalg.norm(X, axis=1)
    )
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise ValueError(
            f"{zero.size} cells have an all-zero profile (first: row {zero[0]}); "
            "cosine similarity is undefined for them. Filter empty cells first "
            "(sc.pp.filter_cells(adata, min_counts=1))."
        )
    inv = 1.0 / norms
    return sp.diags(inv) @ X if sp.issparse(X) else X * inv[:, None]


def _neighbours(X, k: int, method: str, random_state: int) -> np.ndarray:
    """Each row's ``k`` nearest other rows (Euclidean), ``n x k`` indices."""
    n = X.shape[0]
    if method == "auto":
        d = X.shape[1]
        method = "exact" if (n <= 50_000 or (d > 100 and n <= 200_000)) else "nndescent"
    if method == "exact":
        nn = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="euclidean")
        nn.fit(X)
        # kneighbors() without a query excludes each point itself, duplicates included.
        return nn.kneighbors(return_distance=False)
    if method != "nndescent":
        raise ValueError(
            f"method must be 'auto', 'exact' or 'nndescent', got {method!r}."
        )
    from pynndescent import NNDescent  # optional: graphs beyond exact search only

    index = NNDescent(
        X,
        n_neighbors=k + 1,
        metric="euclidean",
        random_state=random_state,
        n_jobs=1,
        low_memory=True,
    )
    nbr, _ = index.neighbor_graph
    idx = np.empty((n, k), dtype=np.int64)
    for i in range(n):  # drop self (usually column 0; duplicates may move it)
        row = nbr[i][nbr[i] != i]
        idx[i] = row[:k]
    return idx


def knn_graph(
    X,
    k: int = 15,
    metric: str = "cosine",
    mode: str = "union",
    method: str = "auto",
    random_state: int = 0,
) -> sp.csr_matrix:
    """Binary symmetric k-nearest-neighbour adjacency, the blog's construction.

    Parameters
    ----------
    X
        ``n x d`` matrix (dense or sparse), e.g. the log-normalised expression matrix.
    k
        Neighbours per cell, the cell itself excluded.
    metric
        ``"cosine"`` (rows are L2-normalised and searched in Euclidean distance, which
        gives the same neighbour order) or ``"euclidean"``.
    mode
        ``"union"``: ``A_ij = 1`` if j is among i's neighbours or i among j's (the
        blog); ``"mutual"``: both.
    method
        ``"exact"`` (scikit-learn brute force, chunked), ``"nndescent"`` (pynndescent,
        approximate) or ``"auto"``: exact up to 50,000 cells or when ``d > 100`` with up
        to 200,000 cells, else nndescent.
    random_state
        Seed for nndescent.

    Returns
    -------
    scipy.sparse.csr_matrix
        ``n x n`` float64 with entries 0/1, symmetric, zero diagonal.
    """
    X = _as_float_matrix(X, "X")
    n = X.shape[0]
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    if k >= n:
        raise ValueError(
            f"k={k} must be smaller than the number of cells ({n}); lower k."
        )
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}.")
    if mode not in ("union", "mutual"):
        raise ValueError(f"mode must be 'union' or 'mutual', got {mode!r}.")
    if metric == "cosine":
        X = _unit_rows(X)
    if sp.issparse(X) and X.shape[0] * X.shape[1] <= 50_000_000:
        # dense BLAS distances are much faster than sparse ones for expression matrices
        # (measured in benchmarks/bench_spectral.py)
        X = X.toarray()
    idx = _neighbours(X, k, method, random_state)
    rows = np.repeat(np.arange(n), k)
    B = sp.csr_matrix((np.ones(n * k), (rows, idx.ravel())), shape=(n, n))
    A = B.maximum(B.T) if mode == "union" else B.minimum(B.T)
    A = sp.csr_matrix(A)
    A.setdiag(0)
    A.eliminate_zeros()
    A.sort_indices()
    return A


def scanpy_graph(adata, k: int = 15, use_rep: str | None = None, random_state: int = 0):
    """Scanpy's neighbour graph (UMAP connectivities, weighted, symmetric).

    ``sc.pp.neighbors`` runs on a throw-away AnnData sharing ``adata.X`` so nothing is
    written to ``adata``. With ``use_rep=None`` it uses ``adata.obsm["X_pca"]`` if
    present, else scanpy computes a PCA. Note scanpy counts the cell itself among
    ``n_neighbors``.
    """
    tmp = ad.AnnData(X=adata.X, obs=adata.obs[[]])
    rep = use_rep
    if rep is None and "X_pca" in adata.obsm:
        rep = "X_pca"
    if rep is not None:
        if rep not in adata.obsm and rep != "X":
            raise ValueError(
                f"use_rep={rep!r} is not in adata.obsm (keys: {list(adata.obsm)}); "
                "compute it first or pass use_rep=None."
            )
        if rep != "X":
            tmp.obsm[rep] = adata.obsm[rep]
    sc.pp.neighbors(tmp, n_neighbors=k, use_rep=rep, random_state=random_state)
    A = sp.csr_matrix(tmp.obsp["connectivities"], dtype=np.float64)
    A.setdiag(0)
    A.eliminate_zeros()
    return A


def laplacian(A, normalized: bool = False) -> sp.csr_matrix:
    """Graph Laplacian ``L = D - A`` or, normalised, ``I - D^-1/2 A D^-1/2``.

    Thin wrapper over :func:`scipy.sparse.csgraph.laplacian` that checks symmetry and
    returns float64 CSR.
    """
    A = sp.csr_matrix(A, dtype=np.float64)
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"adjacency must be square, got shape {A.shape}.")
    asym = abs(A - A.T)
    if asym.nnz and asym.max() > 1e-10 * max(abs(A).max(), 1.0):
        raise ValueError(
            "adjacency is not symmetric; symmetrise it first (A.maximum(A.T) for a "
            "union graph, or (A + A.T) / 2)."
        )
    if A.nnz and A.data.min() < 0:
        raise ValueError(
            "adjacency has negative weights; a graph Laplacian needs weights >= 0."
        )
    L = _csgraph_laplacian(A, normed=normalized)
    L = sp.csr_matrix(L)
    L.sort_indices()
    return L


# ------------------------------------------------------------------------ eigensolver


def fix_signs(vecs: np.ndarray) -> np.ndarray:
    """Flip each column so that its entry of largest magnitude is positive (in
    place)."""
    if vecs.size == 0:
        return vecs
    i = np.argmax(np.abs(vecs), axis=0)
    s = np.sign(vecs[i, np.arange(vecs.shape[1])])
    s[s == 0] = 1.0
    vecs *= s
    return vecs


def _lobpcg_amg(L, n: int, block: int, tol: float, maxiter: int, seed: int):
    """The ``n`` smallest eigenpairs by LOBPCG (block size ``block``) with an AMG
    preconditioner; see :func:`smallest_eigenpairs`."""
    N = L.shape[0]
    L = sp.csr_matrix(L, dtype=np.float64)
    # A Laplacian is singular; build the multigrid hierarchy on a slightly shifted
    # copy (as scikit-learn does) so the preconditioner is well defined. Prolongator
    # smoothing is off (smooth=None): on kNN graphs it makes the Galerkin products fill
    # in (setup many times slower on a 100k-cell graph) and saved no LOBPCG iterations.
    shift = 1e-5 * max(float(L.diagonal().mean()), 1e-12)
    ml = smoothed_aggregation_solver(L + shift * sp.eye(N, format="csr"), smooth=None)
    M = ml.aspreconditioner()
    rng = np.random.default_rng(seed)
    X0 = rng.standard_normal((N, block))
    X0[:, 0] = 1.0  # the constant vector is the null vector of a connected L = D - A
    # LOBPCG's dense work is on thin N x 3n blocks, where BLAS threads cost more than
    # they give (one thread is faster on 100k cells: benchmarks/bench_spectral.py).
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        # we check convergence ourselves and give one clear warning
        warnings.simplefilter("ignore", UserWarning)
        vals, vecs, lam_hist = lobpcg(
            L, X0, M=M, tol=tol, maxiter=maxiter, largest=False, retLambdaHistory=True
        )
    order = np.argsort(vals)[:n]
    vals, vecs = vals[order], vecs[:, order]
    res = np.linalg.norm(L @ vecs - vecs * vals, axis=0)
    # The final Rayleigh-Ritz step gives residuals slightly above tol; allow 10x.
    if res.max() > 10 * tol * max(1.0, abs(vals).max()):
        warnings.warn(
            f"LOBPCG stopped after {len(lam_hist) - 1} iterations with max residual "
            f"{res.max():.2e} > tol {tol:.0e}; raise maxiter or loosen tol.",
            RuntimeWarning,
            stacklevel=3,
        )
    info = dict(
        solver="lobpcg+amg", iterations=len(lam_hist) - 1, max_residual=float(res.max())
    )
    return vals, vecs, info


def smallest_eigenpairs(
    L,
    n: int,
    solver: str = "auto",
    tol: float = 1e-8,
    maxiter: int = 2000,
    seed: int = 0,
    extra: int | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """The ``n`` smallest eigenpairs of a symmetric positive semi-definite sparse
    matrix.

    Parameters
    ----------
    L
        ``N x N`` symmetric PSD matrix (a graph Laplacian), sparse or dense.
    n
        Number of eigenpairs, trivial ones included.
    solver
        ``"lobpcg"`` (LOBPCG with a pyamg smoothed-aggregation preconditioner),
        ``"dense"`` (``scipy.linalg.eigh`` on the dense matrix, O(N^3); only for small
        N), or ``"auto"``: dense for ``N <= DENSE_MAX_NODES`` or ``N < 5 * block``, else
        lobpcg.
    tol
        LOBPCG residual tolerance ``||L v - lambda v||``. Eigenvalue errors are of order
        ``tol**2 / gap``; 1e-8 gives eigenvalues equal to dense ``eigh`` well within
        1e-6.
    maxiter
        LOBPCG iteration cap; if reached, a warning reports the largest residual.
    seed
        Seed for the random initial block (results are deterministic for a fixed seed).
    extra
        Extra block vectors beyond ``n``. Default 0: scipy's LOBPCG stops only when
        every block vector has converged, and the extra ones converge slowly (measured
        on a 20k-cell kNN graph: 42 iterations with block n, 189 with n + 5).

    Returns
    -------
    eigenvalues : (n,) ascending
    eigenvectors : (N, n), orthonormal columns, signs fixed by :func:`fix_signs`
    info : dict with ``solver``, ``iterations`` (lobpcg), ``max_residual``
    """
    N = L.shape[0]
    if L.shape != (N, N):
        raise ValueError(f"L must be square, got shape {L.shape}.")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}.")
    if n > N:
        raise ValueError(f"asked for {n} eigenpairs of a {N} x {N} matrix; lower n.")
    extra = 0 if extra is None else int(extra)
    block = min(n + extra, N)
    if solver == "auto":
        solver = "dense" if (N <= DENSE_MAX_NODES or N < 5 * block) else "lobpcg"
    if solver == "dense":
        M = L.toarray() if sp.issparse(L) else np.asarray(L, dtype=np.float64)
        vals, vecs = scipy.linalg.eigh(M, subset_by_index=[0, n - 1])
        res = np.linalg.norm(M @ vecs - vecs * vals, axis=0)
        info = dict(solver="dense", iterations=None, max_residual=float(res.max()))
        return vals, fix_signs(vecs), info
    if solver != "lobpcg":
        raise ValueError(f"solver must be 'auto', 'lobpcg' or 'dense', got {solver!r}.")
    if N < 5 * block:
        raise ValueError(
            f"LOBPCG needs N >= 5 * block ({5 * block}) but N = {N}; use "
            "solver='dense'."
        )
    vals, vecs, info = _lobpcg_amg(L, n, block, tol, maxiter, seed)
    return vals, fix_signs(vecs), info


# ------------------------------------------------------------------------ connectivity


def check_connected(A, allow_disconnected: bool = False) -> int:
    """Number of connected components of ``A``; error (or warning) if more than one.

    A Laplacian has eigenvalue 0 with multiplicity equal to the number of connected
    components, so on a disconnected graph the "lowest frequencies" are arbitrary
    combinations of component indicators and are not well defined.
    """
    n_comp, labels = connected_components(A, directed=False)
    if n_comp > 1:
        sizes = np.sort(np.bincount(labels))[::-1]
        msg = (
            f"the kNN graph has {n_comp} connected components (sizes "
            f"{sizes[:5].tolist()}{'...' if n_comp > 5 else ''}), so eigenvalue 0 has "
            f"multiplicity {n_comp} and the frequencies are ill-defined. Fix: build "
            "the graph with a larger k, or restrict to the largest component "
            "(helpers.spectral.largest_component)."
        )
        if not allow_disconnected:
            raise ValueError(msg)
        warnings.warn(msg, UserWarning, stacklevel=3)
    return int(n_comp)


def largest_component(A) -> np.ndarray:
    """Boolean mask of the nodes in the largest connected component of ``A``."""
    _, labels = connected_components(A, directed=False)
    return labels == np.argmax(np.bincount(labels))


# ------------------------------------------------------------------------ AnnData API


def frequencies(
    adata,
    *,
    n_freqs: int = 10,
    k: int = 15,
    graph: str = "cosine",
    normalized: bool = False,
    use_rep: str | None = None,
    key_added: str = "freq",
    mode: str = "union",
    allow_disconnected: bool = False,
    solver: str = "auto",
    tol: float = 1e-8,
    seed: int = 0,
):
    """Compute transcriptional frequencies and store them in ``adata`` (in place).

    Parameters
    ----------
    adata
        AnnData with the preprocessed (log-normalised) expression in ``X``.
    n_freqs
        Number of frequencies to keep, the trivial eigenvector excluded.
    k
        Neighbours per cell.
    graph
        ``"cosine"``: the blog's binary union kNN graph by cosine similarity on ``X``
        (or ``obsm[use_rep]``); ``"scanpy"``: ``sc.pp.neighbors`` connectivities on PCA
        space.
    normalized
        Use the symmetric normalised Laplacian instead of ``L = D - A``.
    use_rep
        ``obsm`` key to build the graph on instead of ``X``.
    key_added
        Results go to ``obsm["X_<key_added>"]`` and ``uns[key_added]``; another key
        keeps an earlier result.
    mode
        ``"union"`` or ``"mutual"`` symmetrisation (cosine graph only).
    allow_disconnected
        If False (default) a disconnected graph raises ``ValueError``; if True it warns.
    solver, tol, seed
        Passed to :func:`smallest_eigenpairs`.

    Returns
    -------
    AnnData
        The same object (see the module docstring for the keys).
    """
    if not isinstance(adata, ad.AnnData):
        raise TypeError(f"adata must be an AnnData, got {type(adata).__name__}.")
    if not isinstance(n_freqs, (int, np.integer)) or n_freqs < 1:
        raise ValueError(f"n_freqs must be a positive integer, got {n_freqs!r}.")
    if n_freqs + 1 > adata.n_obs:
        raise ValueError(
            f"n_freqs={n_freqs} needs more than {adata.n_obs} cells; lower n_freqs."
        )
    t0 = time.perf_counter()
    if graph == "cosine":
        X = get_matrix(adata, use_rep=use_rep, dtype=np.float64)
        A = knn_graph(X, k=k, metric="cosine", mode=mode, random_state=seed)
    elif graph == "scanpy":
        A = scanpy_graph(adata, k=k, use_rep=use_rep, random_state=seed)
    else:
        raise ValueError(f"graph must be 'cosine' or 'scanpy', got {graph!r}.")
    t_graph = time.perf_counter() - t0
    n_comp = check_connected(A, allow_disconnected=allow_disconnected)
    L = laplacian(A, normalized=normalized)
    t1 = time.perf_counter()
    vals, vecs, info = smallest_eigenpairs(
        L, n_freqs + n_comp, solver=solver, tol=tol, seed=seed
    )
    t_eig = time.perf_counter() - t1
    # drop the null space (one vector per component; one for a connected graph)
    adata.obsm[f"X_{key_added}"] = vecs[:, n_comp:]
    adata.uns[key_added] = dict(
        eigenvalues=vals[n_comp:],
        eigenvalue_0=float(vals[0]),
        n_components=n_comp,
        n_edges=int(A.nnz // 2),
        solver=info["solver"],
        max_residual=info["max_residual"],
        seconds=dict(graph=t_graph, eigensolve=t_eig),
        params=dict(
            n_freqs=int(n_freqs),
            k=int(k),
            graph=graph,
            mode=mode if graph == "cosine" else "scanpy",
            normalized=bool(normalized),
            use_rep="X" if use_rep is None else use_rep,
            tol=tol,
            seed=seed,
        ),
    )
    return adata


def get_frequencies(adata, *, key: str = "freq"):
    """``(eigenvalues, frequencies)`` stored by :func:`frequencies` with
    ``key_added=key``."""
    if key not in adata.uns or f"X_{key}" not in adata.obsm:
        raise KeyError(
            f"no frequencies under key {key!r}; run "
            f"spectral.frequencies(adata, key_added={key!r}) first."
        )
    return adata.uns[key]["eigenvalues"], adata.obsm[f"X_{key}"]


# ------------------------------------------------------------------ bilinear regressor


def fit_frequencies(
    X, F, split, *, hidden: int = 128, progress: bool = True, **settings
):
    """A bilinear regressor (bias on) of the frequencies ``F``, standardised on training
    cells.

    Frequencies are unit-norm vectors with entries of order ``1/sqrt(n)``: each column
    is z-scored with the mean and standard deviation of ``split["train"]`` before
    training, and the scale is kept on the model (``model.target_scale = (mean, std)``)
    for :func:`predict_frequencies`. ``settings`` are
    :class:`helpers.bilinear.BilinearTrainSettings` fields (``loss``, ``epochs``,
    ``seed``, ...). Returns ``(model, history)``.
    """
    F = np.asarray(F)
    mu, sd = F[split["train"]].mean(0), F[split["train"]].std(0)
    Z = ((F - mu) / sd).astype(np.float32)
    model, history = fit(
        X,
        Z,
        split,
        hidden=hidden,
        bias=True,
        task="regression",
        progress=progress,
        **settings,
    )
    model.target_scale = (mu, sd)
    return model, history


def predict_frequencies(model, X) -> np.ndarray:
    """Predictions of a :func:`fit_frequencies` model, in the frequencies' own units."""
    mu, sd = model.target_scale
    return predict(model, X) * sd + mu


def seed_ablation(
    X, F, seeds, weight_decays, *, names, n_modules: int = 3, **settings
) -> pd.DataFrame:
    """Retrain :func:`fit_frequencies` per seed (split and weights) and weight decay.

    Each run uses an unstratified split with its seed; the row reports the validation
    and test R² of frequency 0 and its leading modules on the test cells
    (``module_tracking``): λ0, |λ1| / |λ0|, ρ of modules 0 and 1, and the best |ρ| of
    the first ``n_modules``.
    """
    rows = []
    for s in seeds:
        for wd in weight_decays:
            split = split_indices(len(F), seed=s, stratify=False)
            model, _ = fit_frequencies(
                X, F, split, seed=s, weight_decay=wd, progress=False, **settings
            )
            te, va = split["test"], split["val"]
            tr = module_tracking(
                model, X, F, idx=te, n_modules=n_modules, output_names=names
            ).loc[names[0]]
            pred = predict_frequencies(model, X)
            rows.append(
                {
                    "seed": s,
                    "weight decay": f"{wd:g}",
                    "val R² (frequency 0)": r2_score(F[va, 0], pred[va, 0]),
                    "test R² (frequency 0)": r2_score(F[te, 0], pred[te, 0]),
                    "λ0": tr.loc[0, "lambda"],
                    "|λ1| / |λ0|": tr.loc[1, "rel_lambda"],
                    "ρ module 0": tr.loc[0, "spearman"],
                    "ρ module 1": tr.loc[1, "spearman"],
                    "best |ρ| (first modules)": tr["spearman"].abs().max(),
                }
            )
    return pd.DataFrame(rows)
