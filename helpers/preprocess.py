"""Preprocessing shared by the chapters: gene filters, normalisation, HVGs, dense
features, splits.

:func:`prepare` is the blog's recipe in one call: pick a count layer, drop ribosomal
genes (Rpl/Rps) and genes detected in fewer than ``min_cells_per_gene`` cells,
``normalize_total`` + ``log1p``, keep the most variable genes. Results:

- ``adata.layers["counts"]``: the raw counts the features came from;
- ``adata.X``: log1p(normalised counts), restricted to the selected genes;
- ``adata.uns["preprocess"]``: the settings used.

Dask-backed AnnData (``adata.X`` a dask array, e.g. from ``anndata.experimental.
read_lazy`` or ``da.from_array``) goes through the same steps lazily: the count
checks and gene filters run block by block and scanpy's ``normalize_total``, ``log1p``
and ``highly_variable_genes`` take the dask route, so the work runs on whatever dask
scheduler is active (a ``dask.distributed`` cluster included). The result stays
dask-backed; ``adata.to_memory()`` gathers it.
"""

from __future__ import annotations

import numpy as np
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData
from sklearn.model_selection import train_test_split

from .data import get_matrix, is_dask


def drop_gene_prefixes(adata: AnnData, prefixes=("Rpl", "Rps")) -> AnnData:
    """Copy of ``adata`` without genes whose symbol starts with a prefix (any case)."""
    if not prefixes:
        return adata.copy()
    names = adata.var_names.str.lower()
    keep = ~np.zeros(adata.n_vars, bool)
    for p in prefixes:
        keep &= ~names.str.startswith(p.lower())
    return adata[:, keep].copy()


def normalize_log1p(
    adata: AnnData, layer: str | None = None, target_sum: float = 1e4
) -> AnnData:
    """In place: ``layers["counts"]`` = counts of ``layer``; X = log1p(normalised)."""
    counts = get_matrix(adata, layer=layer, counts=True)
    if is_dask(counts):  # stays lazy: scanpy normalises dask arrays block by block
        counts = counts.astype(np.float32)
        adata.layers["counts"] = counts
    else:
        counts = sp.csr_matrix(counts, dtype=np.float32)
        adata.layers["counts"] = counts.copy()
    adata.X = counts
    sc.pp.normalize_total(adata, target_sum=target_sum)
    sc.pp.log1p(adata)
    return adata


def select_hvgs(adata: AnnData, n_top_genes: int | None) -> AnnData:
    """Subset log-normalised ``adata`` to its ``n_top_genes`` most variable genes
    (scanpy, seurat flavour).

    ``None`` or a number ≥ the number of genes keeps all genes.
    """
    if n_top_genes is None or n_top_genes >= adata.n_vars:
        return adata
    if n_top_genes < 2:
        raise ValueError(f"n_top_genes={n_top_genes}: need at least 2 genes.")
    sc.pp.highly_variable_genes(adata, n_top_genes=n_top_genes)
    return adata[:, adata.var["highly_variable"].to_numpy()].copy()


def _n_expressed_block(block) -> np.ndarray:
    return np.asarray((block > 0).sum(axis=0)).reshape(1, -1)


def n_cells_expressed(X) -> np.ndarray:
    """Cells with a non-zero value, per gene (column), for numpy, scipy or dask ``X``
    (a dask array is counted block by block)."""
    if is_dask(X):
        per_block = X.map_blocks(
            _n_expressed_block,
            chunks=((1,) * X.numblocks[0], X.chunks[1]),
            dtype=np.int64,
        )
        return np.asarray(per_block.sum(axis=0).compute()).ravel()
    return np.asarray((X > 0).sum(axis=0)).ravel()


def prepare(
    adata: AnnData,
    layer: str | None = None,
    n_top_genes: int | None = 2000,
    drop_prefixes=("Rpl", "Rps"),
    min_cells_per_gene: int = 10,
) -> AnnData:
    """The standard pipeline: drop prefixes and rare genes → normalise + log1p → HVGs.
    Returns a new AnnData.

    ``min_cells_per_gene``: genes with non-zero counts in fewer cells are dropped before
    HVG selection. A model that reads its weights needs this more than a classifier
    does: a gene seen in one or two cells gets almost no gradient signal, Adam's
    per-parameter step normalisation lets its weights drift anyway, and it then tops
    module loadings while moving the scores of almost no cell (557 of the 2,000 genes in
    scVelo's pancreas file are detected in fewer than 10 cells).
    """
    get_matrix(adata, layer=layer, counts=True)  # fail early, before any copy
    out = drop_gene_prefixes(adata, drop_prefixes)
    expressed = n_cells_expressed(get_matrix(out, layer=layer)) >= min_cells_per_gene
    n_prefix = adata.n_vars - out.n_vars
    out = out[:, expressed].copy()
    normalize_log1p(out, layer)
    out = select_hvgs(out, n_top_genes)
    out.uns["preprocess"] = {
        "layer": str(layer),
        "n_top_genes": n_top_genes,
        "n_genes": out.n_vars,
        "n_genes_in": adata.n_vars,
        "n_dropped_prefix": n_prefix,
        "n_dropped_rare": int((~expressed).sum()),
        "min_cells_per_gene": min_cells_per_gene,
        "drop_prefixes": list(drop_prefixes or []),
        "normalize": "total 1e4 + log1p",
    }
    return out


def describe(adata: AnnData) -> str:
    """One line on what :func:`prepare` kept and dropped (``uns["preprocess"]``)."""
    u = adata.uns["preprocess"]
    return (
        f"{u['n_genes_in']} genes in: {u['n_dropped_prefix']} dropped by prefix "
        f"{u['drop_prefixes']}, "
        f"{u['n_dropped_rare']} detected in fewer than {u['min_cells_per_gene']} cells "
        "dropped; "
        f"{u['n_genes']} kept (n_top_genes={u['n_top_genes']})"
    )


def subsample(
    adata: AnnData, max_cells: int | None, *, groupby: str | None = None, seed: int = 0
) -> AnnData:
    """At most ``max_cells`` cells drawn without replacement (a copy; ``adata`` itself
    if fewer).

    With ``groupby`` (an obs column) every group keeps the same share of its cells (at
    least one), so the total can differ from ``max_cells`` by rounding. Cells keep their
    original order.
    """
    if max_cells is None or adata.n_obs <= max_cells:
        return adata
    if max_cells < 1:
        raise ValueError(
            f"max_cells={max_cells}: pass a positive number, or None to keep all."
        )
    rng = np.random.default_rng(seed)
    if groupby is None:
        keep = rng.choice(adata.n_obs, max_cells, replace=False)
    else:
        labels = adata.obs[groupby].astype(str).to_numpy()
        keep = []
        for g in np.unique(labels):
            idx = np.flatnonzero(labels == g)
            n = max(1, round(len(idx) * max_cells / adata.n_obs))
            keep.extend(rng.choice(idx, n, replace=False))
    return adata[np.sort(np.asarray(keep))].copy()


def min_cells_for_split(fractions=(0.7, 0.15, 0.15)) -> int:
    """Cells a class needs to be safe in a stratified split with ``fractions``: at
    least 2 in the validation + test share (split again, stratified) and 1 in train.
    Smaller classes may still split; a split that fails names the classes below this.
    """
    import math

    return max(
        math.ceil(2 / (fractions[1] + fractions[2]) - 1e-9),
        math.ceil(1 / fractions[0] - 1e-9) + 2,
    )


def _too_small(labels, fractions) -> ValueError:
    """The error for a stratified split that cannot be made: names the classes."""
    names, counts = np.unique(np.asarray(labels).astype(str), return_counts=True)
    if len(names) < 2:
        return ValueError(
            f"labels have {len(names)} class ({list(names)}); a stratified split for "
            "a classifier needs at least 2. Choose another label key."
        )
    need = min_cells_for_split(fractions)
    small = {str(k): int(v) for k, v in zip(names, counts) if v < need}
    return ValueError(
        f"classes with too few cells for a stratified {tuple(fractions)} split: "
        f"{small} (a class needs about {need} cells: at least 2 in validation + test "
        "and 1 in train). Drop or merge these classes (filter the label column of the "
        "AnnData), choose another label key, or change fractions."
    )


def split_indices(
    n_or_labels, fractions=(0.7, 0.15, 0.15), seed: int = 0, stratify: bool = True
) -> dict:
    """Train/validation/test index arrays, stratified by labels when given.

    Parameters
    ----------
    n_or_labels
        Number of cells, or per-cell labels (then the split is stratified when
        ``stratify``).
    fractions
        Train, validation and test shares; they must sum to 1.

    Raises
    ------
    ValueError
        Stratified, and there is one class, or a class is too small to split: the
        message names the classes below :func:`min_cells_for_split` and what to
        change.
    """
    if (
        not np.isclose(sum(fractions), 1.0)
        or len(fractions) != 3
        or min(fractions) <= 0
    ):
        raise ValueError(
            f"fractions={fractions} must be three positive shares summing to 1."
        )
    if np.isscalar(n_or_labels):
        n, labels = int(n_or_labels), None
    else:
        labels = np.asarray(n_or_labels)
        n = len(labels)
    strat = labels if (stratify and labels is not None) else None
    if strat is not None and len(np.unique(strat)) < 2:
        raise _too_small(strat, fractions)
    idx = np.arange(n)
    try:
        train, rest = train_test_split(
            idx, train_size=fractions[0], random_state=seed, stratify=strat
        )
        rest_strat = strat[rest] if strat is not None else None
        val, test = train_test_split(
            rest,
            train_size=fractions[1] / (fractions[1] + fractions[2]),
            random_state=seed,
            stratify=rest_strat,
        )
    except ValueError:
        if strat is None:
            raise
        raise _too_small(strat, fractions) from None
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def leiden(
    adata: AnnData, resolution: float = 1.0, seed: int = 0, key_added: str = "leiden"
):
    """Leiden clusters of ``adata``'s neighbour graph (run :func:`umap` or
    ``sc.pp.neighbors`` first), as a categorical Series; also stored in ``obs``.

    For unlabelled data: chapters colour figures and group cells by these clusters
    when no label key is given.
    """
    if "neighbors" not in adata.uns:
        raise KeyError(
            "adata has no neighbour graph; run preprocess.umap(adata) or "
            "sc.pp.neighbors(adata) first."
        )
    sc.tl.leiden(
        adata,
        resolution=resolution,
        random_state=seed,
        key_added=key_added,
        flavor="igraph",
        n_iterations=2,
        directed=False,
    )
    return adata.obs[key_added].astype("category")


def umap(
    adata: AnnData, n_pcs: int = 30, n_neighbors: int = 15, seed: int = 0
) -> AnnData:
    """PCA → kNN → UMAP with scanpy on ``adata.X``, in place (``X_pca``, ``X_umap``)."""
    n_pcs = min(n_pcs, adata.n_vars - 1, adata.n_obs - 1)
    sc.pp.pca(adata, n_comps=n_pcs, random_state=seed)
    sc.pp.neighbors(adata, n_neighbors=n_neighbors, n_pcs=n_pcs, random_state=seed)
    sc.tl.umap(adata, random_state=seed)
    return adata
