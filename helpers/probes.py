"""Downstream probes: do concept activations keep the biological signal of the
embedding?

Following the paper (Section 5, Appendix G): label cells (cell type from the data;
cell-cycle phase from scanpy's ``score_genes_cell_cycle`` with the Regev lab list),
balance the classes, fit a logistic regression on concept activations and on the
embedding's own dimensions ("neurons"), compare held-out accuracy and confusion
matrices, then read the units with the largest coefficients through their genes and
count how many are known markers.

The probe is the paper's (Appendix G): scikit-learn's ``LogisticRegression`` with
default parameters on the raw features, ``max_iter=50`` for cell types
(:data:`PAPER_PROBE`). ``scale=True`` / a larger ``max_iter`` give the standardised
variant, reported beside it.

Keys written
------------
:func:`score_cell_cycle` writes ``adata.obs["S_score"]``, ``adata.obs["G2M_score"]`` and
``adata.obs[key_added]`` (default ``"phase"``: categorical G1/S/G2M). Nothing else in
this module modifies its inputs.

Public API
----------
cell_cycle_genes(data_dir=None, path=None) -> (s_genes, g2m_genes)
score_cell_cycle(adata, s_genes=None, g2m_genes=None, layer=None, min_genes=10, ...)
    -> DataFrame
phase_from_scores(s_score, g2m_score) -> ndarray of "G1"/"S"/"G2M" (scanpy's rule)
cell_cycle_labels(adata, min_genes=10, ...) -> (phase Series, source sentence)
balanced_indices(labels, n_per_class=None, seed=0, min_class_size=None) -> int ndarray
probe(features, labels, seed=0, test_size=0.3, ...)
    -> dict(accuracy, chance, confusion, coef, model, ...)
top_units(coef, n=3, sign="positive") -> DataFrame(class, rank, unit, coef)
marker_hits(genes, marker_set) -> list of genes that are markers (case-insensitive)
load_tasks(dataset, *, layer, cell_type_key, ...) -> dict(adata, tasks, ...)
prepare_runs(datasets, *, layers, cell_type_keys, ..., **fit_kw) -> {name: run dict}
fit_run(adata, *, embedding, ..., n_concepts, k, sae_settings) -> dict(emb, Z, sae, U)
probe_task(U, Z, labels, *, seed, test_size, C, ...) -> dict(res, idx, classes, summary)
read_top_units(coef, run, *, concepts, n, n_genes, markers, ...) -> DataFrame of genes
cell_cycle_coverage(var_names, markers=None, min_coverage=None)
    -> dict (phase probe rule)
coverage_table(runs) / accuracy_table(results) / gap_table(results) -> DataFrame
marker_overlap(top, markers, universe, by=("class",)) -> DataFrame (hypergeometric)
read_phase_units(results, runs, *, markers, n, ...) -> (units table, overlap table)
read_cell_type_units(results, runs, *, n=1, ...) -> DataFrame
accuracy_claims(results, tolerance) -> list of helpers.chapter.Claim (vs PAPER_ACCURACY)
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .attribution import unit_attributions
from .data import check_labels, get_matrix, is_integer_counts, load_dataset
from .data import data_dir as _data_dir
from .embeddings import fit_embedding
from .preprocess import prepare, subsample
from .sae import paper_sae_rows, sae_metrics, train_sae

__all__ = [
    "cell_cycle_genes",
    "score_cell_cycle",
    "phase_from_scores",
    "cell_cycle_labels",
    "balanced_indices",
    "probe",
    "top_units",
    "marker_hits",
    "load_tasks",
    "fit_run",
    "prepare_runs",
    "probe_task",
    "read_top_units",
    "cell_cycle_coverage",
    "coverage_table",
    "paper_rows",
    "accuracy_table",
    "gap_table",
    "marker_overlap",
    "read_phase_units",
    "read_cell_type_units",
    "accuracy_claims",
    "PAPER_PROBE",
    "SCALED_PROBE",
    "PAPER_PROBE_SETUP",
    "PAPER_ACCURACY",
    "PAPER_CELL_TYPES",
]

#: The paper's probes (Appendix G): "logistic regression from sklearn with default
#: parameters" (cell cycle) and "with default parameters and max_iter = 50" (cell
#: types); no feature scaling is mentioned, so none is applied.
PAPER_PROBE = {
    "cell type": dict(C=1.0, max_iter=50, scale=False),
    "cell cycle": dict(C=1.0, max_iter=100, scale=False),
}
#: The variant reported beside it: standardised features, enough iterations to converge.
SCALED_PROBE = dict(C=1.0, max_iter=2000, scale=True)
#: The paper's probe results (Section 5; Appendix G and Figure 10): scGPT SAE on
#: Tabula Sapiens Immune, balanced classes, held-out accuracy of the probe on concept
#: and on neuron activations, and the cells per class of its train and test sets.
PAPER_ACCURACY = {
    "cell type": {
        "concepts": 0.86,
        "neurons": 0.87,
        "classes": 7,
        "train_per_class": 6000,
        "test_per_class": 2000,
        "source": "paper, Section 5 and Figure 10.A",
    },
    "cell cycle": {
        "concepts": 0.49,
        "neurons": 0.48,
        "classes": 3,
        "train_per_class": 10000,
        "test_per_class": 1000,
        "source": "paper, Section 5 and Figure 10.B",
    },
}
#: The paper's 7 cell types (Appendix G), Tabula Sapiens Immune names.
PAPER_CELL_TYPES = (
    "B cell",
    "CD8-positive, alpha-beta T cell",
    "CD4-positive, alpha-beta T cell",
    "natural killer cell",
    "neutrophil",
    "classical monocyte",
    "monocyte",
)
#: Where the paper's probes ran.
PAPER_PROBE_DATA = "paper: Tabula Sapiens immune, scGPT"


def _paper_test_share(task: str) -> float:
    a = PAPER_ACCURACY[task]
    return a["test_per_class"] / (a["train_per_class"] + a["test_per_class"])


#: The paper's probe setup (Appendix G, Section 4.2, Table 3): an scGPT SAE with
#: c = 5000, k = 80 on Tabula Sapiens Immune; balanced train/test cells per class.
PAPER_PROBE_SETUP = {
    "embedding model": ("scGPT", "Appendix G / Figure 10"),
    # scGPT row: helpers.sae.paper_table3 holds the scVI rows only
    **paper_sae_rows(
        5000, 80, 5e-5, 1500, "Table 3, scGPT c = 5000 (Tabula Sapiens Immune)"
    ),
    "probe": ("sklearn LogisticRegression, defaults", "Appendix G"),
    "feature scaling": ("none", "Appendix G (default parameters)"),
    "C": (1.0, "Appendix G (sklearn default)"),
    "max_iter (cell type)": (50, "Appendix G"),
    "max_iter (cell cycle)": (100, "Appendix G (sklearn default)"),
    "test share (cell type)": (
        _paper_test_share("cell type"),
        "Appendix G: 6000 train, 2000 test per class",
    ),
    "test share (cell cycle)": (
        _paper_test_share("cell cycle"),
        "Appendix G: 10000 train, 1000 test per class",
    ),
}

PHASES = ("G1", "S", "G2M")  # the categories of a phase column, in scanpy's order
REGEV_FILE = "genesets/regev_lab_cell_cycle_genes.txt"
N_S_GENES = 43  # the file lists 43 S-phase genes, then 54 G2M genes


def cell_cycle_genes(data_dir=None, path=None) -> tuple[list[str], list[str]]:
    """The Regev lab cell-cycle genes (Tirosh et al. 2016), as scanpy's tutorial uses
    them.

    Parameters
    ----------
    data_dir
        Data directory holding ``genesets/regev_lab_cell_cycle_genes.txt``; default
        ``helpers.data.data_dir()``.
    path
        Explicit path to the file (overrides ``data_dir``).

    Returns
    -------
    (s_genes, g2m_genes): the first 43 and the last 54 human symbols of the file.
    """
    if path is None:
        root = _data_dir(data_dir)
        if root is None:
            raise FileNotFoundError(
                "no data directory found for the Regev cell-cycle list; set "
                f"$BOOK_DATA_DIR or pass data_dir= (a folder containing {REGEV_FILE})."
            )
        path = Path(root) / REGEV_FILE
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found; put scanpy_usage's 180209_cell_cycle/data/"
            f"regev_lab_cell_cycle_genes.txt there or pass path=."
        )
    genes = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(genes) != 97:
        raise ValueError(
            f"{path} has {len(genes)} genes, expected 97 (43 S then 54 G2M)."
        )
    return genes[:N_S_GENES], genes[N_S_GENES:]


def _match_case_insensitive(genes: Iterable[str], var_names) -> list[str]:
    lookup = {}
    for v in map(str, var_names):
        lookup.setdefault(v.upper(), v)
    return [lookup[g.upper()] for g in genes if g.upper() in lookup]


def phase_from_scores(s_score, g2m_score) -> np.ndarray:
    """Scanpy's phase rule: G1 if both scores are negative, else G2M if G2M > S, else S.

    The one copy of the rule (``scanpy.tl.score_genes_cell_cycle``: G1 when both scores
    are ``< 0``); wrap it in ``pd.Categorical(..., categories=PHASES)`` for obs.
    """
    s = np.asarray(s_score, dtype=float)
    g = np.asarray(g2m_score, dtype=float)
    return np.where((s < 0) & (g < 0), "G1", np.where(g > s, "G2M", "S"))


def score_cell_cycle(
    adata,
    s_genes=None,
    g2m_genes=None,
    layer: str | None = None,
    min_genes: int = 10,
    key_added: str = "phase",
    data_dir=None,
    seed: int = 0,
) -> pd.DataFrame:
    """Cell-cycle phase per cell with ``scanpy.tl.score_genes_cell_cycle`` and the Regev
    list.

    Gene symbols are matched case-insensitively, so the human list works on mouse data
    (``MCM5`` -> ``Mcm5``). Scoring needs log-normalised expression: when the chosen
    matrix holds integer counts it is normalised (``normalize_total`` + ``log1p``) on a
    copy first.

    Parameters
    ----------
    adata
        Cells x genes, gene symbols as ``var_names``.
    s_genes, g2m_genes
        Gene lists; default :func:`cell_cycle_genes`.
    layer
        Layer to score (default ``X``).
    min_genes
        Minimum number of S and of G2M genes that must be present; fewer raises
        ValueError (scores from one or two genes are mostly noise).
    key_added
        ``obs`` column for the phase; ``S_score`` and ``G2M_score`` are written too.
    seed
        Seed of scanpy's random control-gene draw.

    Returns
    -------
    DataFrame (index = cells) with S_score, G2M_score and the phase, also written to
    ``adata.obs``.
    """
    if s_genes is None or g2m_genes is None:
        s_default, g2m_default = cell_cycle_genes(data_dir)
        s_genes = s_default if s_genes is None else s_genes
        g2m_genes = g2m_default if g2m_genes is None else g2m_genes
    s_found = _match_case_insensitive(s_genes, adata.var_names)
    g2m_found = _match_case_insensitive(g2m_genes, adata.var_names)
    if len(s_found) < min_genes or len(g2m_found) < min_genes:
        raise ValueError(
            f"only {len(s_found)}/{len(list(s_genes))} S and "
            f"{len(g2m_found)}/{len(list(g2m_genes))} G2M cell-cycle genes are in "
            f"adata.var_names (need {min_genes} of each). Score before selecting "
            "highly variable genes (the full gene space), make sure var_names are gene "
            "symbols, or use precomputed scores with phase_from_scores(obs['S_score'], "
            "obs['G2M_score'])."
        )
    X = get_matrix(adata, layer=layer)
    tmp = ad.AnnData(
        X=X.copy(),
        obs=pd.DataFrame(index=adata.obs_names),
        var=pd.DataFrame(index=adata.var_names),
    )
    if is_integer_counts(tmp.X):
        sc.pp.normalize_total(tmp, target_sum=1e4)
        sc.pp.log1p(tmp)
    sc.tl.score_genes_cell_cycle(
        tmp, s_genes=s_found, g2m_genes=g2m_found, random_state=seed
    )
    out = pd.DataFrame(
        {
            "S_score": tmp.obs["S_score"].to_numpy(),
            "G2M_score": tmp.obs["G2M_score"].to_numpy(),
        },
        index=adata.obs_names,
    )
    out[key_added] = pd.Categorical(
        tmp.obs["phase"].astype(str).to_numpy(), categories=list(PHASES)
    )
    for col in out:
        adata.obs[col] = out[col].to_numpy()
    adata.obs[key_added] = out[key_added].values
    return out


def cell_cycle_labels(
    adata, min_genes: int = 10, layer: str | None = None, data_dir=None, seed: int = 0
) -> tuple[pd.Series, str]:
    """Phase labels: Regev-list scoring when the genes are there, else the dataset's own
    scores.

    Scores with :func:`score_cell_cycle` when at least ``min_genes`` S and G2M genes are
    in ``adata.var_names``. Otherwise (e.g. a dataset cut to a few thousand variable
    genes) it falls back to ``obs["S_score"]``/``obs["G2M_score"]`` shipped with the
    data (scored upstream on the full gene space) through :func:`phase_from_scores`, and
    says so in the returned source.

    Returns
    -------
    (phase, source): a categorical Series (G1/S/G2M) indexed like ``adata.obs`` and a
    sentence naming where the labels come from.
    """
    s_genes, g2m_genes = cell_cycle_genes(data_dir)
    n_s = len(_match_case_insensitive(s_genes, adata.var_names))
    n_g = len(_match_case_insensitive(g2m_genes, adata.var_names))
    found = (
        f"{n_s}/{len(s_genes)} S and {n_g}/{len(g2m_genes)} G2M Regev genes in the data"
    )
    if n_s >= min_genes and n_g >= min_genes:
        out = score_cell_cycle(
            adata.copy(),
            s_genes,
            g2m_genes,
            layer=layer,
            min_genes=min_genes,
            seed=seed,
        )
        phase, source = (
            out["phase"],
            f"scanpy score_genes_cell_cycle, Regev list ({found})",
        )
    elif {"S_score", "G2M_score"} <= set(adata.obs.columns):
        phase = pd.Series(
            phase_from_scores(adata.obs["S_score"], adata.obs["G2M_score"]),
            index=adata.obs_names,
        )
        source = (
            f"precomputed obs S_score/G2M_score with scanpy's rule (only {found}; "
            f"fewer than {min_genes} each, too few to rescore)"
        )
    else:
        raise ValueError(
            f"only {found} (need {min_genes} of each) and no obs S_score/G2M_score to "
            "fall back on; score the cells on the full gene space before selecting "
            "variable genes."
        )
    phase = pd.Series(
        pd.Categorical(np.asarray(phase, dtype=str), categories=PHASES),
        index=adata.obs_names,
        name="phase",
    )
    return phase, source


def balanced_indices(
    labels,
    n_per_class: int | None = None,
    seed: int = 0,
    min_class_size: int | None = None,
) -> np.ndarray:
    """Indices of a class-balanced subsample: the same number of cells from every class.

    Parameters
    ----------
    labels
        One label per cell.
    n_per_class
        Cells drawn (without replacement) per class; default the size of the smallest
        kept class.
    seed
        Seed of the draw.
    min_class_size
        Drop classes with fewer cells than this first (the paper keeps only classes
        "with enough samples").

    Returns
    -------
    Sorted int array of positions into ``labels``.
    """
    labels = pd.Series(np.asarray(labels, dtype=object)).astype(str)
    counts = labels.value_counts()
    if min_class_size is not None:
        counts = counts[counts >= min_class_size]
    if len(counts) < 2:
        raise ValueError(
            "fewer than 2 classes left (class sizes: "
            f"{labels.value_counts().to_dict()}); lower min_class_size or use a label "
            "with more populated classes."
        )
    n = int(counts.min()) if n_per_class is None else int(n_per_class)
    if n < 1 or n > counts.min():
        raise ValueError(
            f"n_per_class={n} but the smallest kept class ({counts.idxmin()!r}) has "
            f"{int(counts.min())} cells; lower n_per_class, or set min_class_size={n} "
            "to drop smaller classes."
        )
    rng = np.random.default_rng(seed)
    picks = [
        rng.choice(np.flatnonzero(labels.to_numpy() == c), size=n, replace=False)
        for c in sorted(counts.index)
    ]
    return np.sort(np.concatenate(picks))


def probe(
    features,
    labels,
    seed: int = 0,
    test_size: float = 0.3,
    feature_names=None,
    C: float = 1.0,
    max_iter: int = 100,
    train_idx=None,
    test_idx=None,
    scale: bool = False,
) -> dict:
    """Logistic-regression probe of labels from features, with a held-out test split.

    A multinomial ``sklearn.linear_model.LogisticRegression`` (L2, ``C``; defaults as
    sklearn's, as in the paper) is fitted on the raw features; with ``scale`` they
    are standardised first (fitted on the training cells), so that coefficients
    compare units per standard deviation. A run that stops at ``max_iter`` is kept
    (as the paper's ``max_iter=50``) and reported by ``converged``.

    Parameters
    ----------
    features
        (n_cells, n_units) array: concept activations or embedding dimensions.
    labels
        One label per cell.
    seed, test_size
        Stratified train/test split, unless ``train_idx`` and ``test_idx`` are given.
    feature_names
        Names of the units (default ``0..n_units-1``).
    C, max_iter
        Passed to LogisticRegression.
    scale
        Standardise the features first (``StandardScaler``).

    Returns
    -------
    dict with ``accuracy`` (held-out), ``chance`` (share of the most frequent test
    class), ``converged`` (the solver stopped before ``max_iter``), ``n_iter``,
    ``confusion`` (DataFrame, true class x predicted class, counts), ``coef``
    (DataFrame, class x unit), ``model`` (fitted sklearn Pipeline), ``train_idx``,
    ``test_idx``, ``y_test``, ``y_pred``.
    """
    X = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=object).astype(str)
    if X.ndim != 2 or X.shape[0] != y.shape[0]:
        raise ValueError(
            f"features {X.shape} must be (n_cells x n_units) with one label per cell "
            f"({y.shape[0]} labels given)."
        )
    if not np.all(np.isfinite(X)):
        raise ValueError("features contain NaN or inf; check the embedding/SAE output.")
    classes = sorted(set(y))
    if len(classes) < 2:
        raise ValueError(f"need at least 2 classes to probe, got {classes}.")
    if (train_idx is None) != (test_idx is None):
        raise ValueError("give both train_idx and test_idx, or neither.")
    if train_idx is None:
        train_idx, test_idx = train_test_split(
            np.arange(len(y)), test_size=test_size, random_state=seed, stratify=y
        )
    train_idx, test_idx = np.sort(np.asarray(train_idx)), np.sort(np.asarray(test_idx))
    steps = [StandardScaler()] if scale else []
    model = make_pipeline(
        *steps, LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X[train_idx], y[train_idx])
    y_pred = model.predict(X[test_idx])
    lr = model[-1]
    coef = lr.coef_
    if coef.shape[0] == 1:  # binary: sklearn stores one row for the positive class
        coef = np.vstack([-coef[0], coef[0]])
    names = list(range(X.shape[1])) if feature_names is None else list(feature_names)
    coef = pd.DataFrame(coef, index=[str(c) for c in lr.classes_], columns=names)
    conf = pd.DataFrame(
        confusion_matrix(y[test_idx], y_pred, labels=classes),
        index=pd.Index(classes, name="true"),
        columns=pd.Index(classes, name="predicted"),
    )
    chance = float(pd.Series(y[test_idx]).value_counts(normalize=True).max())
    n_iter = int(np.max(lr.n_iter_))
    return {
        "accuracy": float(accuracy_score(y[test_idx], y_pred)),
        "chance": chance,
        "converged": n_iter < max_iter,
        "n_iter": n_iter,
        "confusion": conf,
        "coef": coef,
        "model": model,
        "train_idx": train_idx,
        "test_idx": test_idx,
        "y_test": y[test_idx],
        "y_pred": y_pred,
    }


def top_units(coef: pd.DataFrame, n: int = 3, sign: str = "positive") -> pd.DataFrame:
    """The n units with the largest coefficients for each class.

    Parameters
    ----------
    coef
        Class x unit coefficients (``probe(...)["coef"]``).
    n
        Units per class.
    sign
        ``"positive"`` (largest coefficients: the unit votes for the class) or ``"abs"``
        (largest magnitude, either direction).

    Returns
    -------
    Long DataFrame with columns class, rank (1 = largest), unit, coef.
    """
    if sign not in ("positive", "abs"):
        raise ValueError(f"sign={sign!r}; use 'positive' or 'abs'.")
    rows = []
    for cls, row in coef.iterrows():
        key = row.abs() if sign == "abs" else row
        for rank, unit in enumerate(
            key.sort_values(ascending=False, kind="stable").index[:n], 1
        ):
            rows.append(
                {"class": cls, "rank": rank, "unit": unit, "coef": float(row[unit])}
            )
    return pd.DataFrame(rows, columns=["class", "rank", "unit", "coef"])


def marker_hits(genes: Iterable[str], marker_set: Iterable[str]) -> list[str]:
    """The genes (in their given order) that are in ``marker_set``, compared
    case-insensitively."""
    markers = {str(m).upper() for m in marker_set}
    return [g for g in map(str, genes) if g.upper() in markers]


# ------------------------------------------------------------------------------------
# the probes chapter's steps: one call per dataset, per task, per set of top units
# ------------------------------------------------------------------------------------
def cell_cycle_coverage(
    var_names, markers: dict | None = None, min_coverage: float | None = None
) -> dict:
    """How much of each cell-cycle marker list a dataset's genes hold.

    Parameters
    ----------
    var_names
        The data's genes (symbols; matched case-insensitively).
    markers
        ``{phase: genes}``; default the Regev list (:func:`cell_cycle_genes`).
    min_coverage
        The rule for a phase probe: every list must be covered to at least this share
        (``None``: no rule, ``phase probe`` is True).

    Returns
    -------
    ``{"<phase> genes": found, "<phase> listed": n, "<phase> share": found / n, ...,
    "phase probe": bool}``.
    """
    if markers is None:
        s_genes, g2m_genes = cell_cycle_genes()
        markers = {"S": s_genes, "G2M": g2m_genes}
    if min_coverage is not None and not 0 <= min_coverage <= 1:
        raise ValueError(f"min_coverage={min_coverage}; use a share between 0 and 1.")
    out, shares = {}, []
    for phase, genes in markers.items():
        genes = list(genes)
        found = len(_match_case_insensitive(genes, var_names))
        share = found / len(genes) if genes else 0.0
        out.update(
            {
                f"{phase} genes": found,
                f"{phase} listed": len(genes),
                f"{phase} share": share,
            }
        )
        shares.append(share)
    out["phase probe"] = bool(min_coverage is None or min(shares) >= min_coverage)
    return out


def load_tasks(
    dataset,
    *,
    layer: str | None = None,
    cell_type_key: str | None = None,
    max_cells: int | None = None,
    min_genes: int = 10,
    n_top_genes: int | None = 2000,
    seed: int = 0,
    min_coverage: float | None = None,
) -> dict:
    """Load one dataset, label its cells (phase, cell type), prepare it for embedding.

    Subsamples to ``max_cells`` (:func:`helpers.preprocess.subsample`), measures the
    Regev coverage of its own genes (:func:`cell_cycle_coverage`; with
    ``min_coverage``, a dataset below it gets no phase task), labels phases by
    :func:`cell_cycle_labels`, tries :func:`score_cell_cycle` (its refusal, a string, is
    returned as ``refused``), then :func:`helpers.preprocess.prepare` (raw counts in
    ``layers["counts"]``, at most ``n_top_genes`` variable genes).

    Returns
    -------
    ``dict(adata, tasks={"cell cycle": labels, "cell type": labels}, phase_source,
    refused, coverage, counts_recovered)``, labels as string arrays aligned with
    ``adata``; a task is absent when its rule or key excludes it.
    """
    raw = subsample(load_dataset(dataset), max_cells, seed=seed)
    coverage = cell_cycle_coverage(raw.var_names, min_coverage=min_coverage)
    if not coverage["phase probe"] and not cell_type_key:
        raise ValueError(
            f"{dataset}: nothing to probe: its genes cover less than min_coverage="
            f"{min_coverage} of a Regev list and no cell-type key is given; lower "
            "min_cell_cycle_coverage or give a cell_type_keys entry."
        )
    phase, source, refused = None, "no phase task (Regev coverage below the rule)", None
    if coverage["phase probe"]:
        phase, source = cell_cycle_labels(
            raw, min_genes=min_genes, layer=layer, seed=seed
        )
        if min(coverage["S genes"], coverage["G2M genes"]) < min_genes:
            try:  # the refusal says why the shipped scores were used
                score_cell_cycle(raw.copy(), layer=layer, min_genes=min_genes)
            except ValueError as err:
                refused = str(err)
    recovered = bool(raw.uns.get("dataset", {}).get("counts_recovered", False))
    adata = prepare(
        raw, layer=layer, n_top_genes=n_top_genes if raw.n_vars > n_top_genes else None
    )
    tasks = {}
    if phase is not None:
        tasks["cell cycle"] = phase.loc[adata.obs_names].astype(str).to_numpy()
    if cell_type_key:
        labels = check_labels(raw, cell_type_key).loc[adata.obs_names]
        tasks["cell type"] = labels.astype(str).to_numpy()
    return dict(
        adata=adata,
        tasks=tasks,
        phase_source=source,
        refused=refused,
        coverage=coverage,
        counts_recovered=recovered,
    )


def fit_run(
    adata,
    *,
    embedding: str = "scvi",
    n_latent: int = 16,
    max_epochs=None,
    seed: int = 0,
    device="auto",
    output_dir=None,
    n_concepts: int = 64,
    k: int = 4,
    sae_settings=None,
) -> dict:
    """Embed ``adata`` (raw counts in ``layers["counts"]``) and fit a Top-K SAE on it.

    ``sae_settings`` is a :class:`helpers.sae.SAETrainSettings`. Returns
    ``dict(emb, Z, sae, U, sae_metrics)``: the embedding, its ``(n, d)`` matrix, the SAE
    (on CPU, eval mode), its ``(n, c)`` activations and :func:`helpers.sae.sae_metrics`.
    """
    emb = fit_embedding(
        adata,
        embedding,
        layer="counts",
        n_latent=n_latent,
        seed=seed,
        max_epochs=max_epochs,
        device=device,
        output_dir=output_dir,
        progress=False,
    )
    Z = adata.obsm[emb.key]
    model, _ = train_sae(
        Z,
        c=n_concepts,
        k=k,
        settings=sae_settings,
        seed=seed,
        device=device,
        progress=False,
    )
    model = model.cpu().eval()
    return dict(
        emb=emb,
        Z=Z,
        sae=model,
        U=model.encode_numpy(Z),
        sae_metrics=sae_metrics(model, Z),
    )


def probe_task(
    U,
    Z,
    labels,
    *,
    seed: int = 0,
    test_size: float = 0.3,
    C: float = 1.0,
    max_iter: int = 100,
    min_class_size: int | None = None,
    scale: bool = False,
    compare: dict | None = None,
    compare_label: str = "scaled",
) -> dict:
    """Probe concepts ``U`` and neurons ``Z`` on the same balanced cells and split.

    ``C``, ``max_iter``, ``scale`` as in :func:`probe` (defaults: the paper's
    cell-cycle probe; :data:`PAPER_PROBE` has both tasks'). ``compare`` (e.g.
    :data:`SCALED_PROBE`) fits a second probe per feature set on the same split; its
    accuracies go to the summary as ``concepts (<compare_label>)`` and ``neurons
    (<compare_label>)``.

    Returns ``dict(res={"concepts": probe(...), "neurons": probe(...)}, idx, classes,
    summary)`` with ``summary`` the row of the accuracy table (classes, cells per class,
    test cells, chance, concepts, neurons, converged), and ``res_compare`` with
    ``compare``.
    """
    labels = np.asarray(labels)
    idx = balanced_indices(labels, seed=seed, min_class_size=min_class_size)
    y = labels[idx]
    tr, te = train_test_split(
        np.arange(len(idx)), test_size=test_size, random_state=seed, stratify=y
    )
    feats = (("concepts", U), ("neurons", Z))
    res = {
        unit: probe(
            f[idx],
            y,
            seed=seed,
            C=C,
            max_iter=max_iter,
            train_idx=tr,
            test_idx=te,
            scale=scale,
        )
        for unit, f in feats
    }
    classes = sorted(set(y))
    summary = {
        "classes": len(classes),
        "cells per class": len(idx) // len(classes),
        "test cells": len(te),
        "chance": res["concepts"]["chance"],
        "concepts": res["concepts"]["accuracy"],
        "neurons": res["neurons"]["accuracy"],
        "converged": all(r["converged"] for r in res.values()),
    }
    out = dict(res=res, idx=idx, classes=classes, summary=summary)
    if compare is not None:
        out["res_compare"] = {
            unit: probe(f[idx], y, seed=seed, train_idx=tr, test_idx=te, **compare)
            for unit, f in feats
        }
        for unit in ("concepts", "neurons"):
            summary[f"{unit} ({compare_label})"] = out["res_compare"][unit]["accuracy"]
    return out


def read_top_units(
    coef: pd.DataFrame,
    run: dict,
    *,
    concepts: bool = True,
    n: int = 3,
    n_genes: int = 10,
    markers: dict | None = None,
    n_prototypes: int = 10,
    n_counterfactuals: int = 3,
) -> pd.DataFrame:
    """The ``n`` top-coefficient units of each class, read through their genes.

    ``run`` is :func:`fit_run`'s dict plus ``adata`` (counts in ``layers["counts"]``);
    ``concepts=False`` reads neurons. Units that never activate get no genes. With
    ``markers`` (``{class: genes}``) two columns count marker genes among the top genes:
    ``Regev hits`` (any class's markers) and ``hits own phase`` (the unit's class).

    Returns
    -------
    DataFrame with class, rank, unit, coef, top genes (and the two hit columns).
    """
    top = top_units(coef, n=n)
    acts = run["U"] if concepts else run["Z"]
    live = [u for u in top["unit"].unique() if (acts[:, u] > 0).sum() >= 1]
    attr = unit_attributions(
        run["adata"].layers["counts"],
        run["emb"],
        live,
        sae=run["sae"] if concepts else None,
        space=run["Z"],
        acts=acts,
        n_prototypes=n_prototypes,
        n_counterfactuals=n_counterfactuals,
    )
    genes = [list(attr[u].index[:n_genes]) if u in attr else [] for u in top["unit"]]
    top["top genes"] = [", ".join(g) for g in genes]
    if markers is not None:
        every = [m for ms in markers.values() for m in ms]
        top["Regev hits"] = [", ".join(marker_hits(g, every)) for g in genes]
        top["hits own phase"] = [
            ", ".join(marker_hits(g, markers.get(cls, [])))
            for g, cls in zip(genes, top["class"])
        ]
    return top


def prepare_runs(
    datasets,
    *,
    layers: dict | None = None,
    cell_type_keys: dict | None = None,
    max_cells: int | None = None,
    min_genes: int = 10,
    n_top_genes: int | None = 2000,
    seed: int = 0,
    markers: dict | None = None,
    min_coverage: float | None = None,
    **fit_kw,
) -> dict:
    """:func:`load_tasks` then :func:`fit_run` for each dataset, saying what each found.

    ``layers`` and ``cell_type_keys`` are keyed by dataset name (a path's file name
    without ``.h5ad``); ``markers`` (``{"S": genes, "G2M": genes}``) are looked up in
    each model's input genes for the printout; ``min_coverage`` is the phase-probe
    rule of :func:`cell_cycle_coverage`; ``fit_kw`` go to :func:`fit_run`.

    Returns
    -------
    ``{name: dict(adata, tasks, phase_source, refused, coverage, counts_recovered,
    emb, Z, sae, U, sae_metrics)}``.
    """
    layers, cell_type_keys, markers = layers or {}, cell_type_keys or {}, markers or {}
    runs = {}
    for ds in datasets:
        name = Path(ds).stem if str(ds).endswith(".h5ad") else str(ds)
        run = runs[name] = load_tasks(
            ds,
            layer=layers.get(name),
            cell_type_key=cell_type_keys.get(name),
            max_cells=max_cells,
            min_genes=min_genes,
            n_top_genes=n_top_genes,
            seed=seed,
            min_coverage=min_coverage,
        )
        if run["refused"]:
            print(f"{name}: score_cell_cycle refused: {run['refused']}")
        run.update(fit_run(run["adata"], seed=seed, **fit_kw))
        _print_run(name, run, markers)
    return runs


def _print_run(name: str, run: dict, markers: dict) -> None:
    genes, m = run["emb"].genes, run["sae_metrics"]
    print(
        f"{name}: {run['adata'].n_obs} cells, {len(genes)} genes in the model; "
        f"tasks: {', '.join(run['tasks'])}; phase labels: {run['phase_source']}"
    )
    if run.get("counts_recovered"):
        print(
            "   counts recovered exactly from normalised values (the data's "
            "PROVENANCE.md)"
        )
    if markers:
        found = {p: marker_hits(genes, g) for p, g in markers.items()}
        print(
            "   Regev genes in the model input: "
            + ", ".join(
                f"{p} {len(found[p])}/{len(g)} {found[p]}" for p, g in markers.items()
            )
        )
    print(f"   SAE: R² {m['r2']:.3f}, active concepts {m['n_active']}/{run['sae'].c}")


# ------------------------------------------------------------------------------------
# tables of the chapter: coverage, accuracies with the paper's, gaps, marker overlap
# ------------------------------------------------------------------------------------
def coverage_table(runs: dict) -> pd.DataFrame:
    """Regev coverage of each run's own genes and whether it got a phase probe
    (``run["coverage"]`` of :func:`load_tasks`), one row per dataset."""
    return pd.DataFrame(
        {name: run["coverage"] for name, run in runs.items()}
    ).T.rename_axis("dataset")


def paper_rows() -> list[dict]:
    """The paper's probes as rows of :func:`accuracy_table` (:data:`PAPER_ACCURACY`)."""
    rows = []
    for task, a in PAPER_ACCURACY.items():
        per_class = a["train_per_class"] + a["test_per_class"]
        rows.append(
            {
                "dataset": PAPER_PROBE_DATA,
                "task": task,
                "classes": a["classes"],
                "cells per class": per_class,
                "test cells": a["classes"] * a["test_per_class"],
                "chance": 1 / a["classes"],
                "concepts": a["concepts"],
                "neurons": a["neurons"],
            }
        )
    return rows


def accuracy_table(results: dict, paper: bool = True) -> pd.DataFrame:
    """One row per ``(dataset, task)`` of ``results`` (:func:`probe_task` outputs keyed
    by ``(dataset, task)``): its summary, then the paper's rows (:func:`paper_rows`)."""
    rows = [
        {"dataset": name, "task": task, **r["summary"]}
        for (name, task), r in results.items()
    ]
    return pd.DataFrame(rows + (paper_rows() if paper else []))


def _paper_gap(task: str) -> float:
    """The paper's concepts − neurons accuracy (two-decimal figures: rounded so that
    float error does not show)."""
    a = PAPER_ACCURACY[task]
    return round(a["concepts"] - a["neurons"], 2)


def gap_table(results: dict) -> pd.DataFrame:
    """Concepts − neurons per probe, beside the paper's, with binomial standard errors.

    ``s.e. of the gap`` is ``sqrt(p_c(1-p_c)/n + p_n(1-p_n)/n)`` on ``n`` test cells
    (the two probes share the test cells, so this ignores their correlation).
    """
    acc = accuracy_table(results, paper=False)
    out = acc[["dataset", "task", "test cells", "concepts", "neurons"]].copy()
    out["concepts − neurons"] = out["concepts"] - out["neurons"]
    n = out["test cells"]
    out["s.e. of the gap"] = np.sqrt(
        (
            out["concepts"] * (1 - out["concepts"])
            + out["neurons"] * (1 - out["neurons"])
        )
        / n
    )
    out["paper: concepts − neurons"] = [
        _paper_gap(t) if t in PAPER_ACCURACY else np.nan for t in out["task"]
    ]
    return out


def marker_overlap(
    top: pd.DataFrame, markers: dict, universe, by=("class",)
) -> pd.DataFrame:
    """Hypergeometric overlap of the top genes of top units with marker lists.

    For each group of ``top`` (``by`` columns, e.g. the probe's class) the distinct
    genes of its units' ``top genes`` (comma-separated, as :func:`read_top_units`
    writes them) are drawn from ``universe`` (the model's input genes); for each
    marker list, ``hits`` of them are markers, against ``expected = drawn x markers
    in input / input genes``, and ``p`` is the one-sided hypergeometric
    ``P(X >= hits)``.

    Returns
    -------
    DataFrame: the ``by`` columns, markers, genes drawn, markers in input, input genes,
    hits, expected, p, hit genes.
    """
    from scipy.stats import hypergeom

    universe = {str(g).upper() for g in universe}
    if not universe:
        raise ValueError("universe is empty: pass the model's input genes.")
    by = list(by)
    rows = []
    for key, group in top.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        drawn = sorted(
            {
                g
                for genes in group["top genes"]
                for g in str(genes).split(", ")
                if g and g.upper() in universe
            }
        )
        for phase, genes in markers.items():
            listed = {str(g).upper() for g in genes} & universe
            hits = marker_hits(drawn, listed)
            n_universe, n_marked, n_drawn = len(universe), len(listed), len(drawn)
            rows.append(
                {
                    **dict(zip(by, key)),
                    "markers": phase,
                    "genes drawn": n_drawn,
                    "markers in input": n_marked,
                    "input genes": n_universe,
                    "hits": len(hits),
                    "expected": n_drawn * n_marked / n_universe,
                    "p": float(
                        hypergeom.sf(len(hits) - 1, n_universe, n_marked, n_drawn)
                    ),
                    "hit genes": ", ".join(hits),
                }
            )
    return pd.DataFrame(rows)


def read_phase_units(
    results: dict, runs: dict, *, markers: dict, n: int = 3, **read_kw
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the top units of every phase probe (concepts and neurons) through their
    genes (:func:`read_top_units`) and test their overlap with ``markers``
    (:func:`marker_overlap`, universe: each model's input genes).

    Returns ``(table, overlap)``: the units with their genes and hits, and one
    overlap row per dataset, units, class and marker list.
    """
    tables, overlaps = [], []
    for (name, task), r in results.items():
        if task != "cell cycle":
            continue
        for units in ("concepts", "neurons"):
            top = read_top_units(
                r["res"][units]["coef"],
                runs[name],
                concepts=units == "concepts",
                n=n,
                markers=markers,
                **read_kw,
            ).assign(dataset=name, units=units)
            tables.append(top)
            overlaps.append(
                marker_overlap(
                    top,
                    markers,
                    runs[name]["emb"].genes,
                    by=("dataset", "units", "class"),
                )
            )
    if not tables:
        raise ValueError("no cell-cycle probe in results: nothing to read.")
    cols = [
        "dataset",
        "units",
        "class",
        "rank",
        "unit",
        "coef",
        "top genes",
        "Regev hits",
        "hits own phase",
    ]
    return (
        pd.concat(tables, ignore_index=True)[cols],
        pd.concat(overlaps, ignore_index=True),
    )


def read_cell_type_units(
    results: dict, runs: dict, *, n: int = 1, **read_kw
) -> pd.DataFrame:
    """The top concept(s) of every cell-type probe, read through their genes."""
    tables = [
        read_top_units(r["res"]["concepts"]["coef"], runs[name], n=n, **read_kw).assign(
            dataset=name
        )
        for (name, task), r in results.items()
        if task == "cell type"
    ]
    if not tables:
        return pd.DataFrame(
            columns=["dataset", "cell type", "concept", "coef", "top genes"]
        )
    out = pd.concat(tables, ignore_index=True)
    out = out.rename(columns={"class": "cell type", "unit": "concept"})
    return out[["dataset", "cell type", "concept", "coef", "top genes"]]


def accuracy_claims(results: dict, tolerance: float) -> list:
    """Results-at-a-glance claims (:class:`helpers.chapter.Claim`) of every probe
    against the paper's (:data:`PAPER_ACCURACY`): accuracy of concepts, of neurons,
    and the gap concepts − neurons, the paper's own claim ("similar accuracy").

    Rule for ``comparable``: the gap always; an accuracy when the classes are the
    paper's (cell cycle: G1/S/G2M by the same scoring; cell type: only if the class
    names are :data:`PAPER_CELL_TYPES`), since accuracy depends on which classes
    must be told apart.
    """
    from .chapter import Claim

    claims = []
    for (name, task), r in results.items():
        if task not in PAPER_ACCURACY:
            continue
        a, s = PAPER_ACCURACY[task], r["summary"]
        same = (task == "cell cycle" and set(r["classes"]) == set(PHASES)) or (
            set(r["classes"]) == set(PAPER_CELL_TYPES)
        )
        why = (
            ""
            if same
            else f"{s['classes']} classes of {name} vs the paper's {a['classes']} "
            "Tabula Sapiens types: accuracy depends on which classes must be told "
            "apart; "
        )
        model = "scVI trained here vs frozen scGPT"
        for units in ("concepts", "neurons"):
            claims.append(
                Claim(
                    f"{task} probe accuracy, {units} "
                    f"({name}, {s['test cells']} test cells)",
                    a[units],
                    s[units],
                    tolerance,
                    a["source"],
                    comparable=same,
                    note=why + model,
                )
            )
        claims.append(
            Claim(
                f"{task} probe: concepts − neurons ({name})",
                _paper_gap(task),
                s["concepts"] - s["neurons"],
                tolerance,
                a["source"],
                note=model,
            )
        )
    return claims
