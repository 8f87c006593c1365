"""Counterfactual occlusion attribution of concepts and neurons to genes.

Implements Eq. 1-3 and Appendix C of *Discovering interpretable biological
concepts in single-cell RNA-seq foundation models*:

1. **Prototypes**: the cells that activate a unit (an SAE concept or an
   embedding dimension, "neuron") the most.
2. **Counterfactuals** (Eq. 1): for each prototype, the nearest cells in
   embedding space whose activation is zero (``<= threshold``).
3. **Occlusion** (Eq. 2): for every gene ``l``, the drop in activation when the
   prototype's value of gene ``l`` is replaced by the counterfactual's value,
   ``a_l = f(x_p) - f(x_p with x_p[l] := x_c[l])``, evaluated through the whole
   pipeline (counts -> embedding -> SAE).
4. **Ranking** (Eq. 3): the mean over prototypes x counterfactuals, sorted.

Everything is generic over an *activation function* ``f(X_counts) -> (n,)``
that maps a dense count matrix to one unit's activation per row;
:func:`concept_activation` and :func:`neuron_activation` build it from an
embedding (``.encode``) and an SAE (``.encode``). The callables handle devices
(CPU/GPU); arrays are numpy at this module's boundary.

The vectorised :func:`occlusion_scores` builds perturbed copies only for the
(pair, gene) entries whose prototype and counterfactual values differ: an
equal gene contributes exactly 0 and costs no forward pass. Perturbed rows of
all genes and all pairs are stacked and sent through ``f`` in batches of
``batch_size`` rows. :func:`attribute_loop` is the plain per-gene reference.

Appendix C: :func:`deg` runs ``scanpy.tl.rank_genes_groups`` between the
maximally activating cells and their counterfactual cells, and
:func:`deletion_curve` / :func:`deletion_curves` record the activation as
genes are swapped in attribution order vs |fold change| order.
:func:`split_prototypes` splits a unit's prototypes into a ranking half and a
held-out half, so :func:`unit_deletion_curves` can score the attribution order
on pairs that did not produce it (the paper scores it on the same pairs, which
favours attribution by construction).

:func:`n_important` counts the genes the paper keeps: attribution above an
absolute 0.05 in activation units (:data:`PAPER_THRESHOLD`);
``relative=True`` counts those above 5% of the top gene's score instead.

This module writes nothing into AnnData objects.
"""

from __future__ import annotations

from typing import Callable, Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
import torch

from .data import get_matrix, to_dense

ActivationFn = Callable[[np.ndarray], np.ndarray]

__all__ = [
    "concept_activation",
    "neuron_activation",
    "prototypes",
    "counterfactuals",
    "occlusion_scores",
    "attribute",
    "attribute_loop",
    "unit_attributions",
    "unit_deletion_curves",
    "deletion_curve",
    "deletion_curves",
    "deg",
    "deg_order",
    "activating_and_counterfactual_cells",
    "split_prototypes",
    "n_important",
    "PAPER_THRESHOLD",
]

#: Genes with attribution above this (activation units) are kept, as in the
#: paper's Figure 2.C ("attribution > 0.05").
PAPER_THRESHOLD = 0.05


# ---------------------------------------------------------------------------
# activation functions
# ---------------------------------------------------------------------------
def _to_numpy(a) -> np.ndarray:
    return to_dense(a, dtype=None)


def concept_activation(
    embedding, sae, concept: int, batch_size: int = 4096
) -> ActivationFn:
    """Activation of one SAE concept as a function of counts.

    Parameters
    ----------
    embedding
        Object with ``encode(X_counts, batch_size) -> (n, d)`` numpy array.
    sae
        Object with ``encode(z) -> (n, c)`` (torch tensor or array), e.g.
        :class:`helpers.sae.TopKSAE`.
    concept
        Concept index ``i``.
    batch_size
        Rows per forward pass of the embedding.

    Returns
    -------
    callable
        ``f(X_counts) -> (n,)`` numpy float64:
        ``sae.encode(embedding.encode(X))[:, i]``.
    """

    def through_sae(Z):
        param = (
            next(iter(sae.parameters()), None) if hasattr(sae, "parameters") else None
        )
        if param is not None:
            Zt = torch.as_tensor(np.asarray(Z), dtype=param.dtype, device=param.device)
        else:
            Zt = torch.as_tensor(np.asarray(Z), dtype=torch.float32)
        with torch.no_grad():
            acts = sae.encode(Zt)
        return _to_numpy(acts)[:, concept].astype(np.float64)

    def f(X):
        return through_sae(embedding.encode(X, batch_size=batch_size))

    if hasattr(embedding, "encode_swaps"):
        f.swaps = lambda X_base, rows, genes, values: through_sae(
            embedding.encode_swaps(X_base, rows, genes, values, batch_size=batch_size)
        )
    return f


def neuron_activation(embedding, neuron: int, batch_size: int = 4096) -> ActivationFn:
    """Activation of one embedding dimension ("neuron") as a function of counts.

    Returns ``f(X_counts) -> embedding.encode(X)[:, neuron]`` (numpy float64).
    Neurons are not sparse: with the default ``threshold=0`` of
    :func:`counterfactuals`, a neuron "does not activate" where it is <= 0.
    """

    def f(X):
        return _to_numpy(embedding.encode(X, batch_size=batch_size))[:, neuron].astype(
            np.float64
        )

    if hasattr(embedding, "encode_swaps"):
        f.swaps = lambda X_base, rows, genes, values: _to_numpy(
            embedding.encode_swaps(X_base, rows, genes, values, batch_size=batch_size)
        )[:, neuron].astype(np.float64)
    return f


# ---------------------------------------------------------------------------
# prototypes and counterfactuals (Eq. 1)
# ---------------------------------------------------------------------------
def _check_acts(acts) -> np.ndarray:
    a = _to_numpy(acts).astype(np.float64).ravel()
    if not np.all(np.isfinite(a)):
        raise ValueError(
            "acts contains NaN or inf; check the embedding/SAE outputs before "
            "attribution."
        )
    return a


def prototypes(acts, n: int = 10, threshold: float = 0.0) -> np.ndarray:
    """Indices of the ``n`` cells with the highest activation (descending).

    Only activating cells (``acts > threshold``) are returned, so fewer than
    ``n`` come back when fewer cells activate.

    Raises
    ------
    ValueError
        If no cell activates (a dead concept).
    """
    a = _check_acts(acts)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    active = np.flatnonzero(a > threshold)
    if active.size == 0:
        raise ValueError(
            "This concept never activates (no cell has activation > "
            f"{threshold}); it is a dead concept. Pick a concept with active cells "
            "(see the n_active column of helpers.concepts.characterise) or train the "
            "SAE longer / with the auxiliary loss to revive dead concepts."
        )
    order = active[np.argsort(-a[active], kind="stable")]
    return order[:n]


def counterfactuals(
    space, acts, prototype_idx, n_counterfactuals: int = 3, threshold: float = 0.0
) -> np.ndarray:
    """Nearest non-activating cells of each prototype in embedding space (Eq. 1).

    Parameters
    ----------
    space
        (n, d) embedding used for distances (the model's cell embedding).
    acts
        (n,) activation of the unit.
    prototype_idx
        Indices of the prototype cells.
    n_counterfactuals
        ``N_c``, counterfactuals per prototype.
    threshold
        A cell "does not activate" when its activation is ``<= threshold``
        (0: exactly zero for an SAE concept).

    Returns
    -------
    numpy.ndarray
        (len(prototype_idx), n_counterfactuals) int indices, nearest first.
    """
    Z = np.asarray(_to_numpy(space), dtype=np.float64)
    a = _check_acts(acts)
    if Z.ndim != 2 or Z.shape[0] != a.shape[0]:
        raise ValueError(
            f"space has shape {Z.shape} but acts has {a.shape[0]} cells; pass the "
            "embedding (n_cells, d) of the same cells as acts."
        )
    if not np.any(a > threshold):
        raise ValueError(
            "This concept never activates, so it has no prototypes and no "
            "counterfactuals; pick a concept with active cells (n_active > 0)."
        )
    inactive = np.flatnonzero(a <= threshold)
    if inactive.size == 0:
        raise ValueError(
            "Every cell activates this unit, so no counterfactual (a cell with "
            f"activation <= {threshold}) exists. Use a sparser SAE (smaller k), "
            "another concept, or a higher threshold for dense units such as neurons."
        )
    if n_counterfactuals < 1:
        raise ValueError(f"n_counterfactuals must be >= 1, got {n_counterfactuals}.")
    P = np.asarray(prototype_idx, dtype=int).ravel()
    k = min(n_counterfactuals, inactive.size)
    Zi = Z[inactive]
    d2 = (Z[P] ** 2).sum(1)[:, None] - 2.0 * Z[P] @ Zi.T + (Zi**2).sum(1)[None, :]
    part = (
        np.argpartition(d2, k - 1, axis=1)[:, :k]
        if k < inactive.size
        else np.tile(np.arange(inactive.size), (P.size, 1))
    )
    rows = np.arange(P.size)[:, None]
    order = np.argsort(d2[rows, part], axis=1, kind="stable")
    return inactive[part[rows, order]]


# ---------------------------------------------------------------------------
# occlusion (Eq. 2)
# ---------------------------------------------------------------------------
def _call(f: ActivationFn, X: np.ndarray, expected: int) -> np.ndarray:
    out = np.asarray(_to_numpy(f(X)), dtype=np.float64).ravel()
    if out.shape[0] != expected:
        raise ValueError(
            f"The activation function returned {out.shape[0]} values for {expected} "
            "rows; it must map an (n, genes) matrix to an (n,) vector of one unit's "
            "activation."
        )
    return out


def occlusion_scores(
    f: ActivationFn, X_proto, X_cf, batch_size: int = 4096
) -> np.ndarray:
    """Occlusion attribution for paired prototype/counterfactual rows (Eq. 2).

    Parameters
    ----------
    f
        Activation function ``f(X) -> (n,)``.
    X_proto, X_cf
        (p, g) counts: row ``r`` of ``X_proto`` is perturbed towards row ``r``
        of ``X_cf`` (repeat a prototype row once per counterfactual).
    batch_size
        Perturbed rows per call of ``f`` (rows of all genes and pairs are
        stacked, so a batch can mix pairs).

    Returns
    -------
    numpy.ndarray
        (p, g) float64, ``f(x_p) - f(x_p with gene l from x_c)``. Entries of
        genes whose values are equal are exactly 0 and were never evaluated.

    Notes
    -----
    ``f`` is evaluated on each distinct prototype row once (its baseline) and
    on each distinct perturbation ``(prototype, gene, new value)`` once: when
    several counterfactuals of a prototype share a gene's value (often 0 in
    counts), that perturbed cell is computed once. ``f`` must act row-wise
    (a cell's activation may not depend on the other rows of the batch).

    When ``f`` has an attribute ``swaps(X_base, rows, genes, values) -> (m,)`` (set by
    :func:`concept_activation` and :func:`neuron_activation` for embeddings with
    ``encode_swaps``), the perturbed cells are never materialised: it is called once
    with the distinct prototypes and the ``(prototype, gene, new value)`` triples.
    """
    P = to_dense(X_proto, dtype=None)
    C = to_dense(X_cf, dtype=None)
    if P.ndim == 1:
        P, C = P[None, :], np.asarray(C).reshape(1, -1)
    if P.shape != C.shape:
        raise ValueError(
            f"X_proto {P.shape} and X_cf {C.shape} must have the same shape; repeat "
            "each prototype row once per counterfactual."
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    n_pairs, n_genes = P.shape
    scores = np.zeros((n_pairs, n_genes), dtype=np.float64)
    pair_idx, gene_idx = np.nonzero(P != C)
    if pair_idx.size == 0:
        return scores
    # A prototype paired with several counterfactuals is one row repeated: evaluate its
    # baseline once, and evaluate each distinct perturbation (prototype, gene, new
    # value) once.
    protos, proto_of_pair = np.unique(P, axis=0, return_inverse=True)
    proto_of_pair = proto_of_pair.ravel()
    triples = np.stack(
        [
            proto_of_pair[pair_idx].astype(np.float64),
            gene_idx.astype(np.float64),
            C[pair_idx, gene_idx].astype(np.float64),
        ],
        axis=1,
    )
    uniq, inverse = np.unique(triples, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    u_proto, u_gene = uniq[:, 0].astype(np.int64), uniq[:, 1].astype(np.int64)
    u_value = C[pair_idx, gene_idx][np.unique(inverse, return_index=True)[1]]
    base = _call(f, protos, protos.shape[0])
    swaps = getattr(f, "swaps", None)
    if (
        swaps is not None
    ):  # the embedding embeds one-gene swaps itself (e.g. scVI's linear first layer)
        perturbed = np.asarray(
            swaps(protos, u_proto, u_gene, u_value), dtype=np.float64
        ).ravel()
        if perturbed.shape[0] != uniq.shape[0]:
            raise ValueError(
                f"f.swaps returned {perturbed.shape[0]} values for {uniq.shape[0]} "
                "perturbed cells."
            )
    else:
        perturbed = np.empty(uniq.shape[0], dtype=np.float64)
        dtype = np.result_type(P.dtype, C.dtype)
        for start in range(0, uniq.shape[0], batch_size):
            sl = slice(start, start + batch_size)
            rows = np.take(protos, u_proto[sl], axis=0).astype(
                dtype, copy=False
            )  # a fresh copy already
            rows[np.arange(rows.shape[0]), u_gene[sl]] = u_value[sl]
            perturbed[sl] = _call(f, rows, rows.shape[0])
    scores[pair_idx, gene_idx] = base[proto_of_pair[pair_idx]] - perturbed[inverse]
    return scores


def split_prototypes(
    acts, n_prototypes: int = 10, seed: int = 0, threshold: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Split a unit's ``n_prototypes`` top cells into a ranking and a held-out half.

    The prototypes (:func:`prototypes`) are permuted with ``seed``; the first
    ``ceil(n / 2)`` rank the genes, the other ``floor(n / 2)`` score the ranking.
    The halves are disjoint; each is returned sorted by activation (descending).

    Raises
    ------
    ValueError
        When fewer than 2 cells activate the unit (nothing to hold out).
    """
    protos = prototypes(acts, n=n_prototypes, threshold=threshold)
    if protos.size < 2:
        raise ValueError(
            f"{protos.size} prototype(s) for this unit; a held-out split needs >= 2. "
            "Raise n_prototypes or pick a unit with more activating cells."
        )
    perm = np.random.default_rng(seed).permutation(protos.size)
    n_rank = (protos.size + 1) // 2
    rank, held = np.sort(perm[:n_rank]), np.sort(perm[n_rank:])
    return protos[rank], protos[held]


def n_important(
    scores: pd.Series, threshold: float = PAPER_THRESHOLD, relative: bool = False
) -> int:
    """Genes with attribution ``> threshold`` (absolute, activation units).

    ``relative=True``: above ``threshold`` times the top gene's score instead (a
    per-unit scale; not the paper's rule).
    """
    s = pd.Series(scores, dtype=np.float64)
    if s.empty:
        return 0
    cut = threshold * float(s.max()) if relative else threshold
    return int((s > cut).sum())


def _pairs(
    X, space, acts, n_prototypes, n_counterfactuals, threshold, prototype_idx=None
):
    if prototype_idx is None:
        protos = prototypes(acts, n=n_prototypes, threshold=threshold)
    else:
        protos = np.asarray(prototype_idx, dtype=int).ravel()
    cfs = counterfactuals(space, acts, protos, n_counterfactuals, threshold=threshold)
    p_rows = np.repeat(protos, cfs.shape[1])
    c_rows = cfs.ravel()
    return protos, cfs, p_rows, c_rows


def _genes_and_matrix(X_counts, genes, layer):
    if hasattr(X_counts, "var_names") and hasattr(X_counts, "layers"):
        adata = X_counts
        if genes is None:
            genes = adata.var_names
        X = get_matrix(adata, layer=layer)
    else:
        X = X_counts
    n_genes = X.shape[1]
    if genes is None:
        genes = [f"gene_{i}" for i in range(n_genes)]
    genes = pd.Index([str(g) for g in genes])
    if len(genes) != n_genes:
        raise ValueError(
            f"{len(genes)} gene names for a matrix with {n_genes} genes; pass one name "
            "per column."
        )
    return X, genes


def _rows(X, idx) -> np.ndarray:
    return to_dense(X[np.asarray(idx)], dtype=None)


def attribute(
    X_counts,
    f: ActivationFn,
    space,
    acts,
    n_prototypes: int = 10,
    n_counterfactuals: int = 3,
    genes: Sequence[str] | None = None,
    batch_size: int = 4096,
    threshold: float = 0.0,
    layer: str | None = None,
    return_pairs: bool = False,
    prototype_idx=None,
):
    """Gene attribution of one unit, mean over prototypes x counterfactuals (Eq. 3).

    Parameters
    ----------
    X_counts
        (n, g) counts (numpy or scipy sparse), or an AnnData (``layer`` or X).
    f
        Activation function of the unit, ``f(X_counts) -> (n,)``.
    space
        (n, d) embedding used to find counterfactuals.
    acts
        (n,) activation of the unit on all cells (``f(X_counts)``, usually cached).
    n_prototypes, n_counterfactuals
        10 and ``N_c = 3`` in the paper.
    genes
        Gene names (default: AnnData var_names or ``gene_<i>``).
    batch_size
        Rows per call of ``f``.
    threshold
        Activation at or below which a cell counts as not activating.
    layer
        AnnData layer holding counts (None: X).
    return_pairs
        Also return ``dict(prototypes=, counterfactuals=, scores=(pairs, g))``.
    prototype_idx
        Explicit prototype cells (e.g. a half of :func:`split_prototypes`);
        default the ``n_prototypes`` most activating cells.

    Returns
    -------
    pandas.Series
        Attribution per gene, sorted descending (Eq. 3), named ``"attribution"``.
    """
    X, genes = _genes_and_matrix(X_counts, genes, layer)
    protos, cfs, p_rows, c_rows = _pairs(
        X, space, acts, n_prototypes, n_counterfactuals, threshold, prototype_idx
    )
    scores = occlusion_scores(
        f, _rows(X, p_rows), _rows(X, c_rows), batch_size=batch_size
    )
    s = pd.Series(scores.mean(0), index=genes, name="attribution")
    s = s.sort_values(ascending=False, kind="stable")
    if return_pairs:
        return s, dict(prototypes=protos, counterfactuals=cfs, scores=scores)
    return s


def attribute_loop(
    X_counts,
    f: ActivationFn,
    space,
    acts,
    n_prototypes: int = 10,
    n_counterfactuals: int = 3,
    genes: Sequence[str] | None = None,
    threshold: float = 0.0,
    layer: str | None = None,
) -> pd.Series:
    """Reference implementation of :func:`attribute`: one forward pass per gene and
    pair.

    Every gene is evaluated, equal or not, one perturbed row at a time, as a
    direct transcription of Eq. 2. Used by the tests and the benchmark.
    """
    X, genes = _genes_and_matrix(X_counts, genes, layer)
    protos, cfs, p_rows, c_rows = _pairs(
        X, space, acts, n_prototypes, n_counterfactuals, threshold
    )
    total = np.zeros(len(genes), dtype=np.float64)
    for p, c in zip(p_rows, c_rows):
        xp = _rows(X, [p])
        xc = _rows(X, [c])
        base = _call(f, xp, 1)[0]
        for gene in range(len(genes)):
            xt = xp.copy()
            xt[0, gene] = xc[0, gene]
            total[gene] += base - _call(f, xt, 1)[0]
    s = pd.Series(total / len(p_rows), index=genes, name="attribution")
    return s.sort_values(ascending=False, kind="stable")


# ---------------------------------------------------------------------------
# Appendix C: DEG and deletion curves
# ---------------------------------------------------------------------------
def deletion_curve(
    f: ActivationFn, x_proto, x_cf, order, steps: int | Sequence[int] = 50
) -> np.ndarray:
    """Activation of a prototype as its genes are swapped to the counterfactual's.

    Parameters
    ----------
    f
        Activation function.
    x_proto, x_cf
        (g,) counts of one prototype and one counterfactual.
    order
        Gene column indices, most important first (genes are swapped
        cumulatively in this order).
    steps
        Number of genes swapped: an int ``s`` means 0, 1, ..., s; or an explicit
        increasing sequence of counts. Counts beyond ``len(order)`` keep every
        gene of ``order`` swapped (the curve goes flat).

    Returns
    -------
    numpy.ndarray
        Activation after swapping each number of genes (first entry: no swap).
    """
    xp = to_dense(x_proto, dtype=None).ravel()
    xc = to_dense(x_cf, dtype=None).ravel()
    order = np.asarray(order, dtype=int).ravel()
    counts = (
        np.arange(int(steps) + 1)
        if np.isscalar(steps)
        else np.asarray(steps, dtype=int)
    )
    counts = np.minimum(counts, order.size)
    dtype = np.result_type(xp.dtype, xc.dtype)
    rows = np.repeat(xp[None, :].astype(dtype), counts.size, axis=0)
    for r, m in enumerate(counts):
        cols = order[:m]
        rows[r, cols] = xc[cols]
    return _call(f, rows, counts.size)


def activating_and_counterfactual_cells(
    space,
    acts,
    max_cells: int = 1000,
    n_counterfactuals: int = 3,
    threshold: float = 0.0,
):
    """Cells for the DEG comparison of Appendix C.

    The (at most ``max_cells``) maximally activating cells, and the union of
    their ``n_counterfactuals`` nearest non-activating cells (at most
    ``max_cells``, nearest to the strongest activators first).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Indices of activating and of counterfactual cells.
    """
    active = prototypes(acts, n=max_cells, threshold=threshold)
    cfs = counterfactuals(space, acts, active, n_counterfactuals, threshold=threshold)
    _, first = np.unique(cfs.ravel(), return_index=True)
    cf_cells = cfs.ravel()[np.sort(first)][:max_cells]
    return active, cf_cells


def deg(
    X_counts,
    active_idx,
    cf_idx,
    genes: Sequence[str] | None = None,
    method: str = "wilcoxon",
    layer: str | None = None,
) -> pd.DataFrame:
    """Differential expression of activating vs counterfactual cells (scanpy).

    Counts are library-size normalised and log1p-transformed, then
    ``scanpy.tl.rank_genes_groups`` compares group "active" against reference
    "counterfactual".

    Returns
    -------
    pandas.DataFrame
        Indexed by gene: ``logfoldchange``, ``pval``, ``pval_adj``, ``score``.
    """
    X, genes = _genes_and_matrix(X_counts, genes, layer)
    active_idx = np.asarray(active_idx, dtype=int)
    cf_idx = np.asarray(cf_idx, dtype=int)
    if active_idx.size < 2 or cf_idx.size < 2:
        raise ValueError(
            f"DEG needs >= 2 cells per group (got {active_idx.size} active, "
            f"{cf_idx.size} counterfactual); choose a concept with more activating "
            "cells."
        )
    idx = np.concatenate([active_idx, cf_idx])
    Xs = X[idx]
    Xs = (
        sp.csr_matrix(Xs, dtype=np.float32)
        if sp.issparse(Xs)
        else np.asarray(Xs, dtype=np.float32)
    )
    groups = np.array(["active"] * active_idx.size + ["counterfactual"] * cf_idx.size)
    a = ad.AnnData(
        Xs,
        obs=pd.DataFrame(
            {"group": pd.Categorical(groups)}, index=[str(i) for i in range(idx.size)]
        ),
    )
    a.var_names = genes
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    sc.tl.rank_genes_groups(
        a,
        "group",
        groups=["active"],
        reference="counterfactual",
        method=method,
        key_added="deg",
    )
    df = sc.get.rank_genes_groups_df(a, group="active", key="deg")
    df = df.rename(
        columns={
            "names": "gene",
            "logfoldchanges": "logfoldchange",
            "pvals": "pval",
            "pvals_adj": "pval_adj",
            "scores": "score",
        }
    )
    return df.set_index("gene")[["logfoldchange", "pval", "pval_adj", "score"]]


def deg_order(
    deg_table: pd.DataFrame, genes: Sequence[str], max_pval: float = 5e-3
) -> np.ndarray:
    """Column indices of DEG genes with ``pval <= max_pval``, by |log fold change|
    desc."""
    t = deg_table[deg_table["pval"] <= max_pval]
    t = t.reindex(
        t["logfoldchange"].abs().sort_values(ascending=False, kind="stable").index
    )
    pos = pd.Index([str(g) for g in genes]).get_indexer(t.index.astype(str))
    return pos[pos >= 0]


def deletion_curves(
    X_counts,
    f: ActivationFn,
    space,
    acts,
    attribution: pd.Series,
    deg_table: pd.DataFrame,
    steps: int = 50,
    n_prototypes: int = 10,
    n_counterfactuals: int = 3,
    genes: Sequence[str] | None = None,
    max_pval: float = 5e-3,
    threshold: float = 0.0,
    layer: str | None = None,
    prototype_idx=None,
) -> pd.DataFrame:
    """Attribution- vs DEG-ordered deletion curves of one unit (paper Figure 8).

    For every prototype x counterfactual pair, genes are swapped from the
    counterfactual into the prototype in attribution order and in |fold
    change| order (DEG genes with p <= ``max_pval``). Activations are divided by
    the prototype's unperturbed activation and averaged over pairs.
    ``prototype_idx``: score on these prototypes (e.g. the held-out half of
    :func:`split_prototypes`) instead of the ``n_prototypes`` most activating.

    Returns
    -------
    pandas.DataFrame
        Columns ``n_genes``, ``attribution``, ``deg`` (relative activation).
    """
    X, genes = _genes_and_matrix(X_counts, genes, layer)
    _, _, p_rows, c_rows = _pairs(
        X, space, acts, n_prototypes, n_counterfactuals, threshold, prototype_idx
    )
    order_attr = pd.Index(genes).get_indexer(
        attribution.sort_values(ascending=False).index.astype(str)
    )
    order_attr = order_attr[order_attr >= 0]
    order_deg = deg_order(deg_table, genes, max_pval=max_pval)
    curves = {"attribution": [], "deg": []}
    for p, c in zip(p_rows, c_rows):
        xp, xc = _rows(X, [p])[0], _rows(X, [c])[0]
        for name, order in (("attribution", order_attr), ("deg", order_deg)):
            curve = deletion_curve(f, xp, xc, order, steps)
            curves[name].append(curve / curve[0] if curve[0] != 0 else curve)
    return pd.DataFrame(
        {
            "n_genes": np.arange(steps + 1),
            "attribution": np.mean(curves["attribution"], axis=0),
            "deg": np.mean(curves["deg"], axis=0),
        }
    )


def unit_attributions(
    X_counts,
    embedding,
    units,
    sae=None,
    space=None,
    acts=None,
    n_prototypes: int = 10,
    n_counterfactuals: int = 3,
    genes=None,
    batch_size: int = 4096,
) -> dict:
    """Counterfactual gene attribution (:func:`attribute`) of several units.

    Parameters
    ----------
    X_counts
        (n, g) counts in ``embedding.genes`` order.
    embedding
        A ``helpers.embeddings.Embedding`` (its ``encode`` maps counts to the space).
    units
        Concept indices when ``sae`` is given, else embedding dimensions ("neurons").
    sae
        A ``helpers.sae.TopKSAE`` or None (neurons).
    space, acts
        (n, d) embedding of the cells and (n, n_units_total) activations of all
        units; computed from ``X_counts`` when None.
    genes
        Gene names (default ``embedding.genes``).

    Returns
    -------
    ``{unit: Series of gene attribution scores, sorted descending}``.
    """
    genes = list(embedding.genes) if genes is None else list(genes)
    if space is None:
        space = embedding.encode(X_counts)
    if acts is None:
        acts = sae.encode_numpy(space) if sae is not None else space
    acts = np.asarray(acts)
    out = {}
    for u in units:
        u = int(u)
        if sae is not None:
            f = concept_activation(embedding, sae, u, batch_size=batch_size)
        else:
            f = neuron_activation(embedding, u, batch_size=batch_size)
        out[u] = attribute(
            X_counts,
            f,
            space,
            acts[:, u],
            n_prototypes=n_prototypes,
            n_counterfactuals=n_counterfactuals,
            genes=genes,
            batch_size=batch_size,
        )
    return out


def unit_deletion_curves(
    X_counts,
    embedding,
    sae,
    space,
    acts,
    attributions: dict,
    *,
    steps: int = 50,
    n_prototypes: int = 10,
    n_counterfactuals: int = 3,
    genes=None,
    max_cells: int = 1000,
    holdout: bool = True,
    seed: int = 0,
) -> pd.DataFrame:
    """:func:`deletion_curves` of several concepts against a DEG between their
    activating cells and counterfactuals (:func:`activating_and_counterfactual_cells`,
    :func:`deg`).

    ``attributions`` is ``{concept: gene-score Series}`` (:func:`unit_attributions`);
    ``acts`` the ``(n, c)`` activations of all concepts.

    With ``holdout`` (default) each concept's ``n_prototypes`` prototypes are split
    by :func:`split_prototypes` (``seed``): the attribution order is recomputed on
    the ranking half (:func:`attribute`) and the curves are scored on the held-out
    half (columns ``attribution``, ``deg``); the same ranking scored on the ranking
    half is the in-sample comparison (``attribution_in_sample``,
    ``deg_in_sample``). Only the keys of ``attributions`` are used then. Without
    ``holdout``: the given attributions, scored on all prototypes (the paper's
    protocol, which favours attribution since the same pairs produced it).

    Returns the curves stacked, with a ``unit`` column.
    """
    curves = []
    for c, scores in attributions.items():
        f = concept_activation(embedding, sae, c)
        act_idx, cf_idx = activating_and_counterfactual_cells(
            space, acts[:, c], max_cells=max_cells, n_counterfactuals=n_counterfactuals
        )
        deg_table = deg(X_counts, act_idx, cf_idx, genes=genes)
        kw = dict(
            steps=steps,
            n_prototypes=n_prototypes,
            n_counterfactuals=n_counterfactuals,
            genes=genes,
        )
        if not holdout:
            curve = deletion_curves(
                X_counts, f, space, acts[:, c], scores, deg_table, **kw
            )
            curves.append(curve.assign(unit=c))
            continue
        rank, held = split_prototypes(acts[:, c], n_prototypes, seed=seed)
        ranked = attribute(
            X_counts,
            f,
            space,
            acts[:, c],
            n_prototypes=n_prototypes,
            n_counterfactuals=n_counterfactuals,
            genes=genes,
            prototype_idx=rank,
        )
        out = deletion_curves(
            X_counts, f, space, acts[:, c], ranked, deg_table, prototype_idx=held, **kw
        )
        ins = deletion_curves(
            X_counts, f, space, acts[:, c], ranked, deg_table, prototype_idx=rank, **kw
        )
        curves.append(
            out.assign(
                attribution_in_sample=ins["attribution"],
                deg_in_sample=ins["deg"],
                unit=c,
            )
        )
    return pd.concat(curves, ignore_index=True)
