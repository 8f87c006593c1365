"""Stability of SAE concepts: matching dictionaries, chance levels, cross-dataset R².

Two SAEs trained on different data, seeds or settings each give a dictionary of
unit-norm concept vectors (atoms, the rows of ``TopKSAE.dictionary``). Following the
paper (Section 4.4, after Fel et al. 2025), atoms are paired one-to-one by the Hungarian
algorithm so that the summed cosine similarity of the pairs is maximal; the distribution
of matched cosines tells how well the two dictionaries align (1 = identical up to a
permutation). Because Hungarian matching *maximises* cosines, even unrelated
dictionaries reach positive matched cosines, the more so the more atoms there are per
dimension. The chance level is therefore measured, not assumed:
:func:`random_dictionary_null` matches random unit dictionaries of the same shapes the
same way.

Dictionaries can only be matched inside one embedding space: an atom of an SAE on scVI
latents and an atom of an SAE on PCA scores live in different coordinate systems, and
their cosine has no meaning. Across spaces, :func:`match_activations` pairs concepts by
the correlation of their activations over the same cells instead.

All functions are pure (no AnnData is modified); this module writes no
``.obsm``/``.uns`` keys (:func:`shared_gene_union` returns a new AnnData).

Public API
----------
match_dictionaries(D1, D2, absolute=False) -> DataFrame(atom_1, atom_2, cosine)
match_activations(U1, U2) -> DataFrame(atom_1, atom_2, correlation)
random_dictionary_null(c, d, n_draws, seed, c2=None) -> ndarray (n_draws, min(c, c2))
shuffled_activation_null(U1, U2, n_draws, seed) -> ndarray (n_draws, min(c1, c2))
r2_table(models, embeddings) -> DataFrame (train dataset x evaluation dataset) of R²
between_group_share(Z, groups)
    -> float, share of the embedding's variance between groups
top_gene_overlap(scores_1, scores_2, n=10)
    -> dict(top_1, top_2, shared, n_shared, jaccard)
matched_gene_table(pairs, scores_1, scores_2, n=10)
    -> DataFrame, one row per matched pair
fit_saes(Zs, seeds, *, n_concepts, k, settings=None) -> {name: TopKSAE} or [TopKSAE]
fit_seed_saes(spaces, seeds, **kwargs) -> {space: [TopKSAE per seed]}
seed_table(models, spaces) -> DataFrame, one row per pair of seeds of each space
shared_gene_union(adatas, layers) -> AnnData of all cells over the shared genes
shared_genes(adatas) -> list of the genes every dataset holds (first dataset's order)
model_genes(adata, genes, n_top_genes, layer=None) -> the most variable of ``genes``
fit_pair_saes(Zs, seed, *, n_concepts, k, settings=None) -> (SAEs, seed twins)
alignment_verdict(value, null, seed_level) -> dict(verdict, chance_top, position)
r2_verdict(within, across, tolerance) -> str
pair_summary(saes, twins, Zs, null, *, tolerance) -> DataFrame, one row per dataset pair
read_pair(row, null, *, n_cells=None, shared=None) -> DataFrame of verdicts by rule

Frozen model (the paper's setting: one pretrained model embeds both datasets): fit the
embedding on one dataset over :func:`shared_genes` and apply it unchanged to the others
with :func:`helpers.embeddings.apply_embedding`.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations

import anndata as ad
import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from .data import get_matrix
from .sae import paper_row, paper_sae_rows, sae_metrics, train_sae

__all__ = [
    "match_dictionaries",
    "match_activations",
    "random_dictionary_null",
    "shuffled_activation_null",
    "r2_table",
    "between_group_share",
    "top_gene_overlap",
    "matched_gene_table",
    "fit_saes",
    "seed_table",
    "fit_seed_saes",
    "shared_gene_union",
    "shared_genes",
    "model_genes",
    "fit_pair_saes",
    "alignment_verdict",
    "r2_verdict",
    "pair_summary",
    "read_pair",
    "LARGER_GAP",
    "CHANCE_QUANTILE",
    "PAPER_STABILITY",
]


def _as_dictionary(D, what: str) -> np.ndarray:
    D = np.asarray(D, dtype=np.float64)
    if D.ndim != 2 or D.shape[0] == 0 or D.shape[1] == 0:
        raise ValueError(
            f"{what} must be a 2-D (n_atoms x d) array, got shape {D.shape}; "
            "pass the SAE's `.dictionary` (one atom per row)."
        )
    if not np.all(np.isfinite(D)):
        raise ValueError(
            f"{what} contains NaN or inf; retrain the SAE or drop those atoms."
        )
    norms = np.linalg.norm(D, axis=1)
    if np.any(norms == 0):
        raise ValueError(
            f"{what} has {int((norms == 0).sum())} all-zero atom(s), whose cosine is "
            "undefined; drop them (e.g. D[np.linalg.norm(D, axis=1) > 0]) before "
            "matching."
        )
    return D / norms[:, None]


def _hungarian(S: np.ndarray, value_name: str) -> pd.DataFrame:
    """One-to-one pairs maximising the summed similarity S (c1 x c2, any shape)."""
    rows, cols = linear_sum_assignment(S, maximize=True)
    out = pd.DataFrame({"atom_1": rows, "atom_2": cols, value_name: S[rows, cols]})
    return out.sort_values(value_name, ascending=False, kind="stable").reset_index(
        drop=True
    )


def match_dictionaries(D1, D2, absolute: bool = False) -> pd.DataFrame:
    """Pair the atoms of two dictionaries one-to-one by cosine similarity (Hungarian).

    Parameters
    ----------
    D1, D2
        Arrays of shape (c1, d) and (c2, d): one atom per row, same embedding space.
        Rows are normalised here, so unnormalised atoms are fine.
    absolute
        Match on |cosine| (sign-blind). Default False: SAE activations are non-negative,
        so an atom and its negative are different concepts.

    Returns
    -------
    DataFrame with columns ``atom_1`` (row of D1), ``atom_2`` (row of D2) and ``cosine``
    (signed cosine of the pair), min(c1, c2) rows sorted by decreasing cosine. When
    c1 != c2 the atoms of the larger dictionary that find no partner are left out.
    """
    A = _as_dictionary(D1, "D1")
    B = _as_dictionary(D2, "D2")
    if A.shape[1] != B.shape[1]:
        raise ValueError(
            f"D1 atoms have dimension {A.shape[1]} but D2 atoms have {B.shape[1]}: "
            "dictionaries from different embedding spaces cannot be matched by cosine; "
            "use match_activations on activations over the same cells instead."
        )
    C = A @ B.T
    out = _hungarian(np.abs(C) if absolute else C, "cosine")
    out["cosine"] = C[out["atom_1"].to_numpy(), out["atom_2"].to_numpy()]
    return out


def _standardise_columns(U: np.ndarray) -> np.ndarray:
    U = U - U.mean(axis=0)
    sd = np.linalg.norm(U, axis=0)
    sd[sd == 0] = 1.0  # a concept that never varies correlates 0 with everything
    return U / sd


def match_activations(U1, U2) -> pd.DataFrame:
    """Pair concepts of two SAEs by the Pearson correlation of their activations
    (Hungarian).

    Works across embedding spaces (scVI vs PCA), where atoms cannot be compared, because
    both activation matrices describe the same cells.

    Parameters
    ----------
    U1, U2
        Activations of shape (n_cells, c1) and (n_cells, c2), rows in the same cell
        order.

    Returns
    -------
    DataFrame with columns ``atom_1``, ``atom_2``, ``correlation``, sorted by decreasing
    correlation. Concepts that never vary (dead) have correlation 0 with every other.
    """
    U1 = np.asarray(U1, dtype=np.float64)
    U2 = np.asarray(U2, dtype=np.float64)
    if U1.ndim != 2 or U2.ndim != 2 or U1.shape[0] != U2.shape[0]:
        raise ValueError(
            f"U1 {U1.shape} and U2 {U2.shape} must be (n_cells x n_concepts) "
            "activations of the same cells in the same order; encode one embedding "
            "matrix per SAE for the same cells."
        )
    R = _standardise_columns(U1).T @ _standardise_columns(U2)
    return _hungarian(R, "correlation")


def random_dictionary_null(
    c: int, d: int, n_draws: int = 20, seed: int = 0, c2: int | None = None
) -> np.ndarray:
    """Matched cosines of random unit dictionaries: the chance level of
    :func:`match_dictionaries`.

    Each draw makes two dictionaries of c (and c2) atoms drawn uniformly on the unit
    sphere of R^d (normalised Gaussians) and matches them with the Hungarian algorithm.

    Returns
    -------
    ndarray of shape (n_draws, min(c, c2)); each row sorted in decreasing order.
    """
    c2 = c if c2 is None else c2
    if min(c, c2, d, n_draws) < 1:
        raise ValueError(f"c={c}, c2={c2}, d={d}, n_draws={n_draws} must all be >= 1.")
    rng = np.random.default_rng(seed)
    out = np.empty((n_draws, min(c, c2)))
    for i in range(n_draws):
        out[i] = match_dictionaries(
            rng.standard_normal((c, d)), rng.standard_normal((c2, d))
        )["cosine"].to_numpy()
    return out


def shuffled_activation_null(U1, U2, n_draws: int = 20, seed: int = 0) -> np.ndarray:
    """Chance level of :func:`match_activations`: match after shuffling the cells of U2.

    Returns
    -------
    ndarray of shape (n_draws, min(c1, c2)); each row sorted in decreasing order.
    """
    U2 = np.asarray(U2)
    rng = np.random.default_rng(seed)
    rows = [
        match_activations(U1, U2[rng.permutation(U2.shape[0])])[
            "correlation"
        ].to_numpy()
        for _ in range(n_draws)
    ]
    return np.vstack(rows)


def r2_table(models: Mapping, embeddings: Mapping) -> pd.DataFrame:
    """R² of every SAE on every dataset: rows = training dataset, columns = evaluation
    dataset.

    Parameters
    ----------
    models
        ``{dataset name: TopKSAE trained on that dataset}``.
    embeddings
        ``{dataset name: embedding matrix}``, all in the same embedding space.
    """
    table = pd.DataFrame(index=list(models), columns=list(embeddings), dtype=float)
    for a, model in models.items():
        for b, Z in embeddings.items():
            table.loc[a, b] = float(
                sae_metrics(model, np.asarray(Z, dtype=np.float32))["r2"]
            )
    table.index.name = "trained on"
    table.columns.name = "evaluated on"
    return table


def between_group_share(Z, groups) -> float:
    """Share of the total variance of ``Z`` that lies between group means (0 = groups
    overlap).

    ``sum_g n_g ||mean_g - mean||² / sum_i ||z_i - mean||²``: the R² of predicting each
    cell's embedding by its group's mean. Used to tell whether two datasets occupy
    different regions of a shared embedding space.
    """
    Z = np.asarray(Z, dtype=np.float64)
    groups = np.asarray(groups)
    if Z.ndim != 2 or groups.shape[0] != Z.shape[0]:
        raise ValueError(
            f"Z {Z.shape} needs one group label per row ({groups.shape[0]} given)."
        )
    grand = Z.mean(0)
    total = ((Z - grand) ** 2).sum()
    between = sum(
        (groups == g).sum() * ((Z[groups == g].mean(0) - grand) ** 2).sum()
        for g in np.unique(groups)
    )
    return float(between / total) if total > 0 else 0.0


def _top(scores: pd.Series, n: int) -> list[str]:
    if not isinstance(scores, pd.Series):
        raise ValueError(
            "gene scores must be a pandas Series indexed by gene name "
            "(what helpers.attribution.attribute returns)."
        )
    return [
        str(g) for g in scores.sort_values(ascending=False, kind="stable").index[:n]
    ]


def top_gene_overlap(scores_1: pd.Series, scores_2: pd.Series, n: int = 10) -> dict:
    """Overlap of the n top-scoring genes of two concepts.

    Genes are compared case-insensitively (mouse and human symbols of one gene then
    agree).

    Returns
    -------
    dict with ``top_1``, ``top_2`` (lists, best first), ``shared`` (genes of top_1 also
    in top_2, in top_1 order), ``n_shared`` and ``jaccard``.
    """
    t1, t2 = _top(scores_1, n), _top(scores_2, n)
    up2 = {g.upper() for g in t2}
    shared = [g for g in t1 if g.upper() in up2]
    union = len({g.upper() for g in t1} | up2)
    return {
        "top_1": t1,
        "top_2": t2,
        "shared": shared,
        "n_shared": len(shared),
        "jaccard": len(shared) / union if union else 0.0,
    }


def matched_gene_table(
    pairs: pd.DataFrame, scores_1: Mapping, scores_2: Mapping, n: int = 10
) -> pd.DataFrame:
    """Top genes of matched concept pairs side by side, with their overlap.

    Parameters
    ----------
    pairs
        Output of :func:`match_dictionaries` (or :func:`match_activations`), possibly a
        subset.
    scores_1, scores_2
        ``{concept index: gene-score Series}`` for the concepts of each SAE; pairs whose
        concepts have no scores are skipped.
    n
        Number of top genes compared.
    """
    sim = "cosine" if "cosine" in pairs else "correlation"
    rows = []
    for _, p in pairs.iterrows():
        a, b = int(p["atom_1"]), int(p["atom_2"])
        if a not in scores_1 or b not in scores_2:
            continue
        ov = top_gene_overlap(scores_1[a], scores_2[b], n=n)
        rows.append(
            {
                "atom_1": a,
                "atom_2": b,
                sim: float(p[sim]),
                "top_genes_1": ", ".join(ov["top_1"]),
                "top_genes_2": ", ".join(ov["top_2"]),
                "shared": ", ".join(ov["shared"]),
                "n_shared": ov["n_shared"],
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "atom_1",
            "atom_2",
            sim,
            "top_genes_1",
            "top_genes_2",
            "shared",
            "n_shared",
        ],
    )


#: The paper's stability setup (Section 4.4, Figure 4; SAE per Section 4.2 and
#: Table 3, scVI c = 500 on Tabula Sapiens Immune), for a recipe table.
PAPER_STABILITY = {
    "embedding model": ("scVI / scGPT pretrained on neither dataset", "Section 4.4"),
    "genes the model reads": (8000, "Table 2 (scVI: 8,000 HVG)"),
    **paper_sae_rows(
        500,
        8,
        float(paper_row(500)["lr"]),
        int(paper_row(500)["epochs"]),
        "Table 3, scVI c = 500 (Tabula Sapiens Immune)",
    ),
    "matching": ("Hungarian on cosine", "Section 4.4"),
    "chance level": ("none", "Figure 4.B"),
    "prototypes per concept": (10, "Sections 4.2-4.3"),
    "counterfactuals per prototype": (3, "Sections 4.2-4.3 (N_C = 3)"),
    "top genes compared per pair": (10, "Figure 4.C"),
}


def fit_saes(Zs, seeds, *, n_concepts: int, k: int, settings=None):
    """One Top-K SAE per embedding matrix and seed, on CPU in eval mode.

    ``Zs`` is a mapping ``{name: Z}`` (returns ``{name: model}``) or a sequence of
    matrices (returns a list), paired in order with ``seeds``; ``settings`` a
    :class:`helpers.sae.SAETrainSettings` (its seed is replaced by each seed).
    """
    names = list(Zs) if isinstance(Zs, Mapping) else None
    mats = [Zs[n] for n in names] if names is not None else list(Zs)
    models = [
        train_sae(Z, n_concepts, k, settings, seed=int(s), progress=False)[0]
        for Z, s in zip(mats, seeds, strict=True)
    ]
    models = [m.cpu().eval() for m in models]
    return dict(zip(names, models)) if names is not None else models


def seed_table(models: Mapping, spaces: Mapping) -> pd.DataFrame:
    """Every pair of seeds of every space matched (:func:`match_dictionaries`).

    ``models`` is ``{space: [SAE per seed]}``, ``spaces`` ``{space: embedding matrix}``.
    One row per pair: embedding, seeds, mean matched cosine, pairs > 0.9, R² (seed i).
    """
    rows = []
    for m, saes in models.items():
        for i, j in combinations(range(len(saes)), 2):
            cos = match_dictionaries(saes[i].dictionary, saes[j].dictionary)["cosine"]
            rows.append(
                {
                    "embedding": m,
                    "seeds": f"{i} vs {j}",
                    "mean matched cosine": cos.mean(),
                    "pairs > 0.9": int((cos > 0.9).sum()),
                    "R² (seed i)": sae_metrics(saes[i], spaces[m])["r2"],
                }
            )
    return pd.DataFrame(rows)


def shared_gene_union(adatas: Mapping, layers: Mapping | None = None) -> ad.AnnData:
    """The cells of several datasets over their shared genes, for one embedding model.

    ``adatas`` is ``{name: AnnData}``, ``layers`` ``{name: raw-count layer}``
    (missing or ``None``: X). Genes keep the first dataset's order. Returns an AnnData
    with ``obs["dataset"]`` (the names), counts in ``X`` and ``layers["counts"]``, obs
    names suffixed ``-<name>``.
    """
    layers = layers or {}
    shared = shared_genes(adatas)
    parts = {
        name: ad.AnnData(
            X=get_matrix(a, layer=layers.get(name)),
            obs=pd.DataFrame(index=a.obs_names),
            var=pd.DataFrame(index=a.var_names),
        )[:, shared].copy()
        for name, a in adatas.items()
    }
    union = ad.concat(parts, label="dataset", index_unique="-")
    union.layers["counts"] = union.X.copy()
    return union


def fit_seed_saes(spaces: Mapping, seeds, **kwargs) -> dict:
    """:func:`fit_saes` with every seed on every embedding: ``{space: [SAEs]}``."""
    seeds = list(seeds)
    return {m: fit_saes([Z] * len(seeds), seeds, **kwargs) for m, Z in spaces.items()}


def shared_genes(adatas: Mapping) -> list[str]:
    """The var names every dataset of ``{name: AnnData}`` holds, first one's order.

    Raises ``ValueError`` when they share none (the message names the datasets)."""
    if not adatas:
        raise ValueError("shared_genes needs at least one dataset ({name: AnnData}).")
    first = next(iter(adatas.values()))
    var_sets = [set(map(str, a.var_names)) for a in adatas.values()]
    shared = [str(g) for g in first.var_names if all(str(g) in v for v in var_sets)]
    if not shared:
        raise ValueError(
            f"the datasets {list(adatas)} share no gene names; check that "
            "they use the same gene identifiers (symbols vs Ensembl ids)."
        )
    return shared


def model_genes(
    adata, genes, n_top_genes: int | None, layer: str | None = None
) -> list[str]:
    """The ``n_top_genes`` most variable of ``genes`` in ``adata`` (the model's data).

    Counts of ``layer`` over ``genes`` are log-normalised and ranked by scanpy's
    ``highly_variable_genes`` (seurat flavour, :func:`helpers.preprocess.select_hvgs`),
    as a foundation model reads a fixed set of variable genes (the paper's scVI: 8,000).
    Returned in the order of ``genes``; ``None`` or a number >= len(genes) keeps all.
    """
    from .preprocess import normalize_log1p, select_hvgs

    genes = [str(g) for g in genes]
    missing = set(genes) - set(map(str, adata.var_names))
    if missing:
        raise ValueError(
            f"{len(missing)} of the genes are not in adata.var_names "
            f"(e.g. {sorted(missing)[:5]}); pass genes the dataset holds."
        )
    sub = ad.AnnData(
        X=get_matrix(adata[:, genes], layer=layer, counts=True),
        var=pd.DataFrame(index=genes),
    )
    kept = set(select_hvgs(normalize_log1p(sub), n_top_genes).var_names)
    return [g for g in genes if g in kept]


def fit_pair_saes(Zs: Mapping, seed: int, *, n_concepts: int, k: int, settings=None):
    """One SAE per dataset and a seed twin of each, for cross-dataset comparisons.

    Dataset ``i`` of ``Zs`` (``{name: Z}``) gets seed ``seed + i`` (with one seed, SAEs
    of two datasets would start from the same random dictionary and look aligned for
    that reason alone); its twin is trained on the same data with the next dataset's
    seed (the last one's with ``seed``), so the first two datasets' across pair and
    each one's seed-to-seed pair use the same two seeds. Returns ``(saes, twins)``, two
    ``{name: TopKSAE}``.
    """
    names = list(Zs)
    if len(names) < 2:
        raise ValueError(f"fit_pair_saes needs at least two datasets, got {names}.")
    seeds = [seed + i for i in range(len(names))]
    kw = dict(n_concepts=n_concepts, k=k, settings=settings)
    return fit_saes(Zs, seeds, **kw), fit_saes(Zs, seeds[1:] + seeds[:1], **kw)


#: The row of :func:`read_pair` for the paper's Figure 4.A observation.
LARGER_GAP = "larger dataset's SAE loses less R²"

#: Quantile of the random-dictionary draws' mean matched cosines taken as the top of
#: the chance band by :func:`alignment_verdict`.
CHANCE_QUANTILE = 95


def alignment_verdict(value: float, null, seed_level: float) -> dict:
    """Where a mean matched cosine lies between chance and the seed-to-seed level.

    Rule: *at chance* when ``value`` is at most the :data:`CHANCE_QUANTILE`-th
    percentile of the random draws' means (``null``: the ``(n_draws, c)`` output of
    :func:`random_dictionary_null`); *at the seed-to-seed level* when it reaches
    ``seed_level`` (two SAEs on one dataset, different seeds); otherwise *between chance
    and seed-to-seed*. ``position`` is ``(value - mean chance) / (seed_level - mean
    chance)``: 0 at chance, 1 at the seed level (NaN when the two levels coincide).
    """
    null = np.asarray(null, dtype=np.float64)
    if null.ndim != 2 or null.size == 0:
        raise ValueError(
            "null must be the (n_draws, c) array of "
            f"random_dictionary_null, got shape {null.shape}."
        )
    draws = null.mean(axis=1)
    top = float(np.percentile(draws, CHANCE_QUANTILE))
    span = float(seed_level) - float(draws.mean())
    position = (float(value) - float(draws.mean())) / span if span > 0 else float("nan")
    if value <= top:
        verdict = "at chance"
    elif value >= seed_level:
        verdict = "at the seed-to-seed level"
    else:
        verdict = "between chance and seed-to-seed"
    return {"verdict": verdict, "chance_top": top, "position": position}


def r2_verdict(within: float, across: float, tolerance: float) -> str:
    """The paper's reading of Figure 4.A as a rule: R² on the other dataset is *slightly
    lower* when ``0 <= within - across <= tolerance``, *not lower* when it is higher,
    *much lower* when the drop exceeds ``tolerance``."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}.")
    drop = float(within) - float(across)
    if drop < 0:
        return "not lower"
    return "slightly lower" if drop <= tolerance else "much lower"


def pair_summary(
    saes: Mapping, twins: Mapping, Zs: Mapping, null, *, tolerance: float
) -> pd.DataFrame:
    """Cross-dataset stability of every pair of datasets, with both reference levels.

    ``saes`` and ``twins`` are :func:`fit_pair_saes`' output on ``Zs`` (one embedding
    space), ``null`` :func:`random_dictionary_null` for their shape. One row per pair
    ``a vs b`` (in ``Zs`` order; columns ``a`` and ``b`` name them): the share of the
    two datasets' embedding variance between them (:func:`between_group_share`); R²
    within and across for each SAE and the verdict of :func:`r2_verdict` for each;
    mean matched cosine of the two dictionaries, the
    seed-to-seed level (mean of the two datasets' seed twins), the random-dictionary
    mean, and :func:`alignment_verdict`'s verdict and position.
    """
    r2 = r2_table(saes, Zs)
    seed_cos = {
        n: float(
            match_dictionaries(saes[n].dictionary, twins[n].dictionary)["cosine"].mean()
        )
        for n in saes
    }
    chance = float(np.asarray(null).mean())
    rows = []
    for a, b in combinations(list(saes), 2):
        cos = float(
            match_dictionaries(saes[a].dictionary, saes[b].dictionary)["cosine"].mean()
        )
        seed_level = (seed_cos[a] + seed_cos[b]) / 2
        read = alignment_verdict(cos, null, seed_level)
        groups = np.repeat([0, 1], [len(Zs[a]), len(Zs[b])])
        rows.append(
            {
                "pair": f"{a} vs {b}",
                "a": a,
                "b": b,
                "between-dataset variance share": between_group_share(
                    np.vstack([Zs[a], Zs[b]]), groups
                ),
                "R² within (a)": r2.loc[a, a],
                "R² across (a SAE on b)": r2.loc[a, b],
                "R² within (b)": r2.loc[b, b],
                "R² across (b SAE on a)": r2.loc[b, a],
                "R² (a SAE)": r2_verdict(r2.loc[a, a], r2.loc[a, b], tolerance),
                "R² (b SAE)": r2_verdict(r2.loc[b, b], r2.loc[b, a], tolerance),
                "mean matched cosine": cos,
                "seed-to-seed": seed_level,
                "random dictionaries": chance,
                "chance top": read["chance_top"],
                "alignment": read["verdict"],
                "position": read["position"],
            }
        )
    return pd.DataFrame(rows).set_index("pair")


def read_pair(
    row: pd.Series,
    null,
    *,
    n_cells: Mapping | None = None,
    shared: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """The verdicts of one :func:`pair_summary` row, each by its stated rule.

    Rows: the R² verdicts of both SAEs (:func:`r2_verdict`); the alignment of the two
    dictionaries (:func:`alignment_verdict`); whether the seed-to-seed level itself is
    above chance (*yes* unless :func:`alignment_verdict` puts it at chance: when it is
    not, no cross-dataset agreement can be expected beyond chance); with ``n_cells``
    (``{dataset: cells}``) the paper's Figure 4.A observation that the SAE of the larger
    dataset loses less R² (*yes*/*no*, *equal sizes* on a tie); with ``shared``
    (mean shared top genes of matched and of mismatched pairs) whether matched pairs
    share more. Returns a DataFrame with columns ``rule`` and ``verdict``.
    """
    a, b = row["a"], row["b"]
    seed = alignment_verdict(row["seed-to-seed"], null, row["seed-to-seed"])
    rows = {
        f"R², {a} SAE on {b}": ("r2_verdict", row["R² (a SAE)"]),
        f"R², {b} SAE on {a}": ("r2_verdict", row["R² (b SAE)"]),
        f"matched cosine, {a} vs {b}": ("alignment_verdict", row["alignment"]),
        "seed-to-seed above random dictionaries": (
            "alignment_verdict of the seed level",
            "no" if seed["verdict"] == "at chance" else "yes",
        ),
    }
    if n_cells is not None:
        drop = {
            a: row["R² within (a)"] - row["R² across (a SAE on b)"],
            b: row["R² within (b)"] - row["R² across (b SAE on a)"],
        }
        if n_cells[a] == n_cells[b]:
            verdict = "equal sizes"
        else:
            big, small = (a, b) if n_cells[a] > n_cells[b] else (b, a)
            verdict = "yes" if drop[big] < drop[small] else "no"
        rows[LARGER_GAP] = ("drop of the larger < smaller", verdict)
    if shared is not None:
        rows["genes of matched pairs"] = (
            "matched > mismatched shared top genes",
            "more shared" if shared[0] > shared[1] else "no more shared",
        )
    return pd.DataFrame.from_dict(rows, orient="index", columns=["rule", "verdict"])
