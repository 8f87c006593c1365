"""Planted-truth data shared by tests and benchmarks (and chapters' planted checks).

Each generator returns data whose answer is known: the structure a method should recover
is stored beside it (``varm["planted_*"]``, ``uns["planted_*"]`` or a returned array).
Seeded; no file is read. Model: decoupler's ``dc.ds.toy()`` and scvi-tools'
``synthetic_iid``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData


# -------------------------------------------------------- counts, trajectories, modules


def _counts(rng, log_rate: np.ndarray, size_factor: np.ndarray) -> sp.csr_matrix:
    """Poisson counts with rates ``exp(log_rate) · size_factor`` (cells × genes,
    CSR)."""
    lam = np.exp(log_rate) * size_factor[:, None]
    return sp.csr_matrix(rng.poisson(lam).astype(np.float32))


def trajectory(
    n: int, d: int = 50, n_branches: int = 3, noise: float = 0.2, seed: int = 0
):
    """Cells along a trunk that splits into branches, in ``d`` dimensions, offset
    positive.

    Returns ``(X, t)``: ``n × d`` float64 positions and the planted pseudotime ``t ∈ [0,
    1]`` (branches leave the trunk at ``t = 0.4``).
    """
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 1, n)
    b = rng.integers(0, n_branches, n)
    dirs = rng.standard_normal((n_branches + 1, d)) / np.sqrt(d)
    Z = 3 * np.outer(t, dirs[0]) + 3 * np.maximum(t - 0.4, 0)[:, None] * dirs[1 + b]
    return 1.0 + Z + noise * rng.standard_normal((n, d)), t


def planted_module(
    n: int = 1200, g: int = 40, genes=(3, 7, 11, 19, 23), signs=None, seed: int = 0
):
    """Gaussian cells and a unit-norm gene module ``u`` on ``genes`` (with ``signs``,
    else +).

    Returns ``(X, u)``: ``n × g`` float32 standard-normal features and ``u`` (float64).
    Targets built from ``X @ u`` have ``u`` as the planted leading module.
    """
    rng = np.random.default_rng(seed)
    module = np.zeros(g)
    module[list(genes)] = 1.0 if signs is None else signs
    module /= np.linalg.norm(module)
    return rng.normal(size=(n, g)).astype(np.float32), module


def planted_module_classes(
    n: int = 1200, g: int = 40, seed: int = 0, threshold: float = 0.45
):
    """Two classes set by the co-expression of a 5-gene module: class 1 where ``(u·x)² >
    threshold`` (strong module activity, either sign). Returns ``(X, y, u)``."""
    X, module = planted_module(n, g, seed=seed)
    y = ((X @ module) ** 2 > threshold).astype(int)
    return X, y, module


# -------------------------------------------------------- perturbations and composition

#: sci-Plex2 drug names used by :func:`sciplex2_like` and its doses in nM.
SCIPLEX2_DRUGS = ("BMS345541", "dexamethasone", "nutlin3a", "SAHA")
SCIPLEX2_DOSES_NM = (10.0, 100.0, 1000.0, 10000.0)


def synthetic_combinations(
    seed: int = 0,
    n_cells: int = 150,
    n_genes: int = 200,
    effect: float = 1.0,
    genes_per_perturbation: int = 8,
) -> AnnData:
    """Counts with four single perturbations, one additive and one interacting
    combination.

    Groups (``n_cells`` each), in ``obs["perturbation"]``: ``control``, ``A``, ``B``,
    ``C``, ``D``, ``A+B`` and ``C+D``. Each single perturbation multiplies its own
    ``genes_per_perturbation`` genes by ``exp(±effect)`` (disjoint gene sets, half up,
    half down). ``A+B`` is additive on the log scale (both responses). ``C+D``
    interacts: D *buffers* C, so the combination shows D's response and none of C's
    (``uns["planted_interactions"] = {"C+D": "buffering"}``). Counts are Poisson with a
    log-normal size factor; normalise + log1p before use.
    """
    rng = np.random.default_rng(seed)
    singles = ["A", "B", "C", "D"]
    if n_genes < genes_per_perturbation * len(singles) + 10:
        raise ValueError(
            f"n_genes={n_genes} too small for {len(singles)} disjoint "
            "programs of "
            f"{genes_per_perturbation} genes; raise n_genes."
        )
    base = rng.normal(1.0, 0.8, n_genes)
    fold = np.zeros((n_genes, len(singles)))
    genes = rng.permutation(n_genes)
    for j in range(len(singles)):
        g = genes[j * genes_per_perturbation : (j + 1) * genes_per_perturbation]
        sign = np.where(np.arange(len(g)) < len(g) // 2, 1.0, -1.0)
        fold[g, j] = effect * sign
        base[g] = 1.5  # programme genes share one expression level
    design = {
        "control": [],
        "A": ["A"],
        "B": ["B"],
        "C": ["C"],
        "D": ["D"],
        "A+B": ["A", "B"],
        "C+D": ["D"],
    }
    blocks, labels = [], []
    for name, active in design.items():
        shift = sum((fold[:, singles.index(p)] for p in active), np.zeros(n_genes))
        sf = np.exp(rng.normal(0, 0.2, n_cells))
        blocks.append(_counts(rng, base[None, :] + shift[None, :], sf))
        labels += [name] * n_cells
    X = sp.vstack(blocks).tocsr()
    perturbation = pd.Categorical(labels, categories=list(design))
    obs = pd.DataFrame(
        {"perturbation": perturbation},
        index=[f"cell{i:05d}" for i in range(len(labels))],
    )
    obs["nperts"] = [0 if lab == "control" else lab.count("+") + 1 for lab in labels]
    var = pd.DataFrame(index=[f"G{i:03d}" for i in range(n_genes)])
    adata = AnnData(X, obs=obs, var=var)
    adata.varm["planted_log_fold"] = fold.astype(np.float32)
    adata.uns["planted_perturbations"] = singles
    adata.uns["planted_interactions"] = {"A+B": "additive", "C+D": "buffering"}
    return adata


def synthetic_interaction(
    seed: int = 0,
    n_cells: int = 150,
    n_genes: int = 200,
    effect: float = 1.0,
    genes_per_perturbation: int = 8,
    damping: float = 0.5,
    n_emergent: int = 8,
) -> AnnData:
    """Four equal single perturbations, one additive pair and one *interacting* pair.

    Groups (``n_cells`` each) in ``obs["perturbation"]``: ``control``, ``A``, ``B``,
    ``C``, ``D``, ``A+B``, ``C+D``. Every single multiplies its own
    ``genes_per_perturbation`` genes by ``exp(±effect)`` (disjoint, half up, half down,
    all at one base level): the four singles are alike in size and shape, so a test
    that tells the two pairs apart does so because of the pairs, not their parts.
    ``A+B`` is additive on the log scale (``fold_A + fold_B``). ``C+D`` interacts in
    two ways no sum of singles can produce: each part's response is scaled by
    ``damping`` (mutual dampening), and ``n_emergent`` genes no single moves switch
    by ``±effect`` (an emergent programme). ``damping=1, n_emergent=0`` makes ``C+D``
    additive too (the null twin of the plant). Counts are Poisson with a log-normal
    size factor; normalise + log1p before use.

    Planted truth: ``varm["planted_log_fold"]`` (genes × singles),
    ``varm["planted_combination_log_fold"]`` (genes × ``["A+B", "C+D"]``),
    ``uns["planted_interactions"]`` and ``uns["planted_emergent_genes"]``.
    """
    rng = np.random.default_rng(seed)
    singles = ["A", "B", "C", "D"]
    need = genes_per_perturbation * len(singles) + n_emergent + 10
    if n_genes < need:
        raise ValueError(
            f"n_genes={n_genes} too small for {len(singles)} programmes "
            f"of {genes_per_perturbation} genes and {n_emergent} emergent "
            f"genes; raise n_genes to at least {need}."
        )
    base = rng.normal(1.0, 0.8, n_genes)
    order = rng.permutation(n_genes)
    fold = np.zeros((n_genes, len(singles)))
    sign = np.where(
        np.arange(genes_per_perturbation) < genes_per_perturbation // 2, 1.0, -1.0
    )
    for j in range(len(singles)):
        g = order[j * genes_per_perturbation : (j + 1) * genes_per_perturbation]
        fold[g, j] = effect * sign
        base[g] = 1.5  # programme genes share one expression level
    start = len(singles) * genes_per_perturbation
    emergent = order[start : start + n_emergent]
    base[emergent] = 1.5
    combo = np.zeros((n_genes, 2))
    combo[:, 0] = fold[:, 0] + fold[:, 1]
    combo[:, 1] = damping * (fold[:, 2] + fold[:, 3])
    combo[emergent, 1] = effect * np.where(np.arange(n_emergent) % 2 == 0, 1.0, -1.0)
    shifts = {
        "control": np.zeros(n_genes),
        **{p: fold[:, j] for j, p in enumerate(singles)},
        "A+B": combo[:, 0],
        "C+D": combo[:, 1],
    }
    blocks, labels = [], []
    for name, shift in shifts.items():
        sf = np.exp(rng.normal(0, 0.2, n_cells))
        blocks.append(_counts(rng, base[None, :] + shift[None, :], sf))
        labels += [name] * n_cells
    groups = pd.Categorical(labels, categories=list(shifts))
    obs = pd.DataFrame(
        {"perturbation": groups}, index=[f"cell{i:05d}" for i in range(len(labels))]
    )
    obs["nperts"] = [0 if lab == "control" else lab.count("+") + 1 for lab in labels]
    adata = AnnData(
        sp.vstack(blocks).tocsr(),
        obs=obs,
        var=pd.DataFrame(index=[f"G{i:03d}" for i in range(n_genes)]),
    )
    adata.varm["planted_log_fold"] = fold.astype(np.float32)
    adata.varm["planted_combination_log_fold"] = combo.astype(np.float32)
    adata.uns["planted_perturbations"] = singles
    additive = damping == 1 and n_emergent == 0
    adata.uns["planted_interactions"] = {
        "A+B": "additive",
        "C+D": "additive" if additive else "interacting",
    }
    adata.uns["planted_emergent_genes"] = [f"G{i:03d}" for i in sorted(emergent)]
    return adata


def sciplex2_like(
    n_cells: int = 600,
    seed: int = 0,
    n_genes: int = 200,
    genes_per_drug: int = 10,
    effect: float = 1.2,
) -> AnnData:
    """A small AnnData shaped like pertpy's ``srivatsan_2020_sciplex2()`` (scPerturb
    conventions).

    obs columns as in scPerturb's harmonised drug files (the file pertpy downloads):
    ``perturbation`` (``"control"`` or one of :data:`SCIPLEX2_DRUGS`), ``dose_value``
    (float, nM; 0 for controls), ``dose_unit`` (``"nM"``), ``perturbation_type``
    (``"drug"``), ``time`` / ``time_unit`` (24, ``"h"``), ``cell_line`` (``"A549"``),
    ``celltype``, ``disease``, ``cancer``, ``tissue_type``, ``organism``, ``nperts``,
    ``ncounts``, ``ngenes``. Integer counts in ``X``.

    Sources for the names: pertpy 1.0.3 ``srivatsan_2020_sciplex2()`` only reads
    ``settings.datasetdir / "srivatsan_2020_sciplex2.h5ad"`` (scPerturb's file);
    pertpy's own example ``PseudobulkSpace().dose_response(srivatsan_2020_sciplex2(),
    dose_col="dose_value")`` uses ``target_col="perturbation"`` and
    ``reference_key="control"``; the remaining columns are scPerturb's harmonised obs
    fields. The exact drug label strings were not checked against the real file (no
    network here); nothing in the pipeline depends on them.

    Planted truth: drug ``d`` multiplies its own ``genes_per_drug`` genes (disjoint, all
    up) by ``exp(effect · s_d · log10(1 + dose) / 4)``: the log fold change grows
    linearly in log dose. ``s_d`` is 1 except dexamethasone (0.3, weak, as in the blog).
    ``varm["planted_log_fold"]`` is the log fold change at 10 µM. About a fifth of the
    cells have small libraries (for ``min_counts``).
    """
    rng = np.random.default_rng(seed)
    n_groups = 1 + len(SCIPLEX2_DRUGS) * len(SCIPLEX2_DOSES_NM)
    if n_cells < 2 * n_groups:
        raise ValueError(
            f"n_cells={n_cells}: need at least {2 * n_groups} (two per "
            "drug-dose group and controls)."
        )
    if n_genes < genes_per_drug * len(SCIPLEX2_DRUGS) + 10:
        raise ValueError(
            f"n_genes={n_genes} too small for {len(SCIPLEX2_DRUGS)} "
            f"programs of {genes_per_drug}."
        )
    strength = {"BMS345541": 1.0, "dexamethasone": 0.3, "nutlin3a": 1.0, "SAHA": 1.0}
    base = rng.normal(0.5, 1.0, n_genes)
    fold = np.zeros((n_genes, len(SCIPLEX2_DRUGS)))
    order = rng.permutation(n_genes)
    for j, d in enumerate(SCIPLEX2_DRUGS):
        g = order[j * genes_per_drug : (j + 1) * genes_per_drug]
        fold[g, j] = effect * strength[d]
        base[g] = 1.5  # programme genes share one level: equal weights are the truth
    group = rng.integers(0, n_groups, n_cells)
    group[:n_groups] = np.arange(n_groups)  # every group present
    pairs = [(d, x) for d in SCIPLEX2_DRUGS for x in SCIPLEX2_DOSES_NM]
    pert = np.array(["control"] + [d for d, _ in pairs])[group]
    dose = np.array([0.0] + [x for _, x in pairs])[group]
    log_rate = np.tile(base, (n_cells, 1))
    for j, d in enumerate(SCIPLEX2_DRUGS):
        sel = pert == d
        # the planted dose law written out, not the log_dose under test
        step = np.log10(1.0 + dose[sel]) / 4.0
        log_rate[sel] += fold[:, j][None, :] * step[:, None]
    size = np.exp(rng.normal(np.log(30.0), 0.3, n_cells))
    size[rng.random(n_cells) < 0.2] /= 8.0  # low-count cells, as in sci-Plex2
    X = _counts(rng, log_rate, size)
    obs = pd.DataFrame(
        {
            "perturbation": pd.Categorical(pert),
            "dose_value": dose,
            "dose_unit": np.where(pert == "control", "nM", "nM"),
            "perturbation_type": "drug",
            "time": 24.0,
            "time_unit": "h",
            "cell_line": "A549",
            "celltype": "lung epithelial",
            "disease": "lung adenocarcinoma",
            "cancer": True,
            "tissue_type": "cell_line",
            "organism": "human",
            "nperts": np.where(pert == "control", 0, 1),
            "ncounts": np.asarray(X.sum(1)).ravel(),
            "ngenes": np.diff(X.indptr),
        },
        index=[f"sciplex2_{i:06d}" for i in range(n_cells)],
    )
    for c in (
        "dose_unit",
        "perturbation_type",
        "time_unit",
        "cell_line",
        "celltype",
        "disease",
        "tissue_type",
        "organism",
    ):
        obs[c] = obs[c].astype("category")
    var = pd.DataFrame(index=[f"GENE{i:04d}" for i in range(n_genes)])
    adata = AnnData(X, obs=obs, var=var)
    adata.varm["planted_log_fold"] = fold.astype(np.float32)
    adata.uns["planted_perturbations"] = list(SCIPLEX2_DRUGS)
    return adata


# ---------------------------------------------------------- embeddings and dictionaries
def unit_dictionary(c: int, d: int, *, seed=0) -> np.ndarray:
    """``(c, d)`` atoms drawn uniformly on the unit sphere of R^d (normed Gaussians).

    ``seed`` is an int or a ``numpy.random.Generator`` (draws continue from it).
    """
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((c, d))
    return D / np.linalg.norm(D, axis=1, keepdims=True)


def planted_sparse_codes(
    n: int,
    D: np.ndarray,
    k: int,
    *,
    low: float = 0.5,
    high: float = 2.0,
    noise: float = 0.0,
    seed=0,
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings that are sparse non-negative combinations of the rows of ``D``.

    Every cell uses ``k`` distinct atoms chosen uniformly, with loadings uniform in
    ``[low, high)``, plus Gaussian noise of standard deviation ``noise``: a Top-K SAE
    with ``c >= len(D)`` and this ``k`` should recover ``D`` (up to order).

    Returns
    -------
    ``(Z, A)``: the ``(n, d)`` float32 embeddings and the ``(n, c)`` planted codes.
    """
    rng = np.random.default_rng(seed)
    c = D.shape[0]
    idx = np.argsort(rng.random((n, c)), axis=1)[:, :k]
    A = np.zeros((n, c), dtype=np.float32)
    np.put_along_axis(A, idx, rng.uniform(low, high, (n, k)).astype(np.float32), axis=1)
    Z = A @ D
    if noise:
        Z = Z + noise * rng.standard_normal(Z.shape)
    return Z.astype(np.float32), A


# ------------------------------------------------------------------ atlas-sized counts


def atlas_counts(
    n: int,
    g: int = 2000,
    *,
    n_types: int = 8,
    markers: int = 25,
    fold: float = 4.0,
    chunk: int = 50_000,
    seed: int = 0,
) -> AnnData:
    """Poisson counts for ``n`` cells of ``n_types`` planted cell types (benchmarks).

    Every type raises ``markers`` genes of its own ``fold``-fold over gamma-distributed
    base rates (about 5% of the entries non-zero); cells get log-normal size factors.
    Generated ``chunk`` cells at a time, so memory grows with the counts only.
    ``obs["cell_type"]`` holds the planted types, ``varm["planted_markers"]`` the
    ``(g, n_types)`` marker indicator.
    """
    if n_types * markers > g:
        raise ValueError(
            f"{n_types} types × {markers} markers need more than {g} genes."
        )
    rng = np.random.default_rng(seed)
    base = np.log(rng.gamma(0.3, 0.25, g))
    marker = np.zeros((g, n_types), bool)
    for t in range(n_types):
        marker[t * markers : (t + 1) * markers, t] = True
    types = rng.integers(0, n_types, n)
    blocks = []
    for start in range(0, n, chunk):
        tt = types[start : start + chunk]
        log_rate = base[None, :] + np.log(fold) * marker[:, tt].T
        size = rng.lognormal(0.0, 0.3, len(tt))
        blocks.append(_counts(rng, log_rate, size))
    adata = AnnData(sp.vstack(blocks, format="csr"))
    adata.obs_names = [f"cell{i}" for i in range(n)]
    adata.var_names = [f"gene{j}" for j in range(g)]
    adata.obs["cell_type"] = pd.Categorical([f"type{t}" for t in types])
    adata.varm["planted_markers"] = marker
    return adata
