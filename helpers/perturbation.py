"""Perturbation and dose: regression targets, baselines, dose–module summaries,
composition.

The blog's perturbation task is regression onto *dose-scaled one-hot* targets: one
output per perturbation, equal to the log-transformed dose for cells that received it
and 0 otherwise (controls are 0 everywhere). :func:`dose_targets` builds them from any
``obs`` table with a perturbation column and an optional dose column;
:data:`COLUMN_MAPS` and :func:`resolve_columns` hold the column names of the datasets
this book knows (pertpy/scPerturb conventions).

Dose transform
    ``log10(1 + dose)``. A dose of 0 maps to 0 (so "untreated" and "target 0" agree),
    every positive dose stays positive, and sci-Plex2's doses in nM (10, 100, 1000,
    10000) become ≈ 1.04, 2.00, 3.00, 4.00: one unit per decade. Without a dose column a
    treated cell gets target 1.

Composition (beyond the blog)
    :func:`composition_test` trains on control and single-perturbation cells only and
    asks whether the model's outputs on held-out *combination* cells equal the sum of
    the single-perturbation outputs. The statistic, per combination ``c = p1+…+pk``, is
    the relative additive error::

        e_c = ‖ f̄(c) − ŷ_add(c) ‖₂ / ‖ ŷ_add(c) − f̄(control) ‖₂,
        ŷ_add(c) = Σ_i f̄(p_i) − (k − 1) f̄(control),

    where ``f̄(g)`` is the model's mean output vector over held-out cells of group
    ``g``. ``e_c ≈ 0``: the outputs compose; ``e_c`` of order 1: the combination moves
    the cells somewhere the sum of its parts does not predict (an interaction). The same
    ratio in expression space (mean log expression shifts instead of outputs) is
    reported as the model-free reference, and a bootstrap over combination cells gives a
    95% interval. :func:`fit_singles` is the training part, :func:`additive_error` the
    statistic on arrays; synthetic data with planted answers live in
    :mod:`helpers.synthetic` (``synthetic_combinations``, ``sciplex2_like``).

AnnData keys
    :func:`filter_low_count_cells` writes ``obs["total_counts"]``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy.stats import spearmanr

from .bilinear import BilinearTrainSettings, fit, predict
from .data import get_matrix
from .preprocess import split_indices

AUTO = "auto"

#: Column names per dataset: perturbation column, dose column (None: single dose),
#: control label, separator of combinations. "pertpy" is the scPerturb convention that
#: pertpy's loaders share.
COLUMN_MAPS: dict[str, dict] = {
    "pertpy": {
        "perturbation_key": "perturbation",
        "dose_key": "dose_value",
        "control_value": "control",
        "sep": "+",
    },
    "sciplex2": {
        "perturbation_key": "perturbation",
        "dose_key": "dose_value",
        "control_value": "control",
        "sep": "+",
    },
    "glioblastoma_panobinostat": {
        "perturbation_key": "condition",
        "dose_key": None,
        "control_value": "ctrl",
        "sep": "+",
    },
    "norman_2019": {
        "perturbation_key": "perturbation_name",
        "dose_key": None,
        "control_value": "control",
        "sep": "+",
    },
    "synthetic_combinations": {
        "perturbation_key": "perturbation",
        "dose_key": None,
        "control_value": "control",
        "sep": "+",
    },
}

#: The blog's perturbation regressor: Huber loss, AdamW, batch 128, weight decay 1e-3.
REGRESSOR = BilinearTrainSettings(
    task="regression",
    loss="huber",
    epochs=100,
    lr=1e-3,
    weight_decay=1e-3,
    batch_size=128,
)
#: Training for :func:`composition_test`: the same, 30 epochs at a higher learning rate.
COMPOSITION = replace(REGRESSOR, epochs=30, lr=1e-2)


def log_dose(dose) -> np.ndarray:
    """The book's dose transform, ``log10(1 + dose)`` (0 → 0, 10 nM → 1.04,
    10 µM → 4.00)."""
    return np.log10(1.0 + np.asarray(dose, dtype=np.float64))


def resolve_columns(
    dataset: str | None,
    obs: pd.DataFrame | None = None,
    perturbation_key: str | None = None,
    dose_key: str | None = AUTO,
    control_value: str | None = None,
) -> dict:
    """Column names for a dataset: explicit arguments win, then :data:`COLUMN_MAPS`,
    then pertpy's.

    Parameters
    ----------
    dataset
        A name in :data:`COLUMN_MAPS`, or anything else (an ``.h5ad`` path) for pertpy
        conventions.
    obs
        When given, ``dose_key="auto"`` resolves to the mapped dose column only if
        ``obs`` has it.
    dose_key
        ``"auto"`` (default) for the mapping's dose column, ``None`` for "no dose
        column", or a name.

    Returns
    -------
    dict with ``perturbation_key``, ``dose_key``, ``control_value``, ``sep``.
    """
    base = dict(COLUMN_MAPS.get(str(dataset), COLUMN_MAPS["pertpy"]))
    if perturbation_key is not None:
        base["perturbation_key"] = perturbation_key
    if control_value is not None:
        base["control_value"] = control_value
    if dose_key != AUTO:
        base["dose_key"] = dose_key
    elif (
        obs is not None and base["dose_key"] is not None and base["dose_key"] not in obs
    ):
        base["dose_key"] = None
    return base


def _obs(obs_or_adata) -> pd.DataFrame:
    return obs_or_adata.obs if hasattr(obs_or_adata, "obs") else obs_or_adata


def _labels(obs: pd.DataFrame, perturbation_key: str) -> pd.Series:
    if perturbation_key not in obs:
        raise KeyError(
            f"perturbation column {perturbation_key!r} not found in obs. Available "
            f"columns: {list(obs.columns)}. Pass perturbation_key=<the column naming "
            "each cell's perturbation> (pertpy/scPerturb files call it 'perturbation')."
        )
    labels = obs[perturbation_key]
    if labels.isna().any():
        raise ValueError(
            f"obs[{perturbation_key!r}] has {int(labels.isna().sum())} missing labels. "
            "Drop those cells or fill them (controls with the control label)."
        )
    return labels.astype(str)


def dose_targets(
    obs,
    perturbation_key: str,
    dose_key: str | None = None,
    control_value: str = "control",
    log: bool = True,
) -> pd.DataFrame:
    """Dose-scaled one-hot regression targets, one column per perturbation.

    Parameters
    ----------
    obs
        A cell table (``adata.obs``) or an AnnData.
    perturbation_key
        Column with each cell's perturbation label; controls carry ``control_value``.
    dose_key
        Numeric dose column, or ``None`` when every treated cell has the same (unknown)
        dose. Controls' doses are ignored (vehicle wells may record 0 or NaN).
    log
        Apply :func:`log_dose` (``log10(1 + dose)``); ``False`` keeps raw doses.

    Returns
    -------
    DataFrame (cells × perturbations, float32, index = obs index): the transformed dose
    in the cell's own perturbation column, 0 elsewhere; controls are all 0; without a
    dose column 1.
    """
    obs = _obs(obs)
    labels = _labels(obs, perturbation_key)
    control = str(control_value)
    is_ctrl = (labels == control).to_numpy()
    present = labels.value_counts()
    if not is_ctrl.any():
        raise ValueError(
            f"No control cells: no value of obs[{perturbation_key!r}] equals "
            f"control_value={control!r}. Values present: "
            f"{present.index.tolist()[:10]}. Set control_value to the "
            "vehicle/untreated label (e.g. 'control', 'ctrl', 'DMSO')."
        )
    if is_ctrl.all():
        raise ValueError(
            f"Only control cells: every value of obs[{perturbation_key!r}] is "
            f"{control!r}, so there is nothing to regress. Use a dataset with treated "
            "cells, or check perturbation_key/control_value."
        )
    names = sorted(set(labels) - {control})
    if dose_key is None:
        dose = np.ones(len(obs))
    else:
        if dose_key not in obs:
            raise KeyError(
                f"dose column {dose_key!r} not found in obs. Available columns: "
                f"{list(obs.columns)}. Pass dose_key=<numeric dose column> "
                "(pertpy/scPerturb: 'dose_value'), or dose_key=None when all treated "
                "cells share one dose."
            )
        dose = pd.to_numeric(obs[dose_key], errors="coerce").to_numpy(np.float64)
        treated = ~is_ctrl
        bad_nan = treated & ~np.isfinite(dose)
        if bad_nan.any():
            ex = labels[bad_nan].value_counts().head(3).to_dict()
            raise ValueError(
                f"{int(bad_nan.sum())} treated cells have a missing or non-numeric "
                f"dose in obs[{dose_key!r}] (by perturbation: {ex}). Fill the doses, "
                "drop those cells, or pass dose_key=None to use target 1 for every "
                "treated cell."
            )
        bad_pos = treated & (dose <= 0)
        if bad_pos.any():
            ex = labels[bad_pos].value_counts().head(3).to_dict()
            raise ValueError(
                f"{int(bad_pos.sum())} treated cells have a dose ≤ 0 in "
                f"obs[{dose_key!r}] (by perturbation: {ex}). Treated cells need "
                f"positive doses: relabel zero-dose cells as {control!r} or drop them."
            )
        dose = np.where(is_ctrl, 0.0, dose)
    value = log_dose(dose) if (log and dose_key is not None) else dose
    Y = np.zeros((len(obs), len(names)), np.float32)
    col = {n: j for j, n in enumerate(names)}
    for i, (lab, v) in enumerate(zip(labels.to_numpy(), value)):
        if lab != control:
            Y[i, col[lab]] = v
    return pd.DataFrame(Y, index=obs.index, columns=names)


def filter_low_count_cells(
    adata: AnnData, min_counts: float, *, layer: str | None = None
) -> AnnData:
    """Copy of ``adata`` without cells whose total count is below ``min_counts``.

    Totals come from ``layer`` (default ``X``; must be raw counts) and are stored in
    ``obs["total_counts"]``. The blog dropped sci-Plex2 cells under 5,000 counts.
    """
    X = get_matrix(adata, layer=layer, counts=True)
    if min_counts is None or min_counts < 0:
        raise ValueError(
            f"min_counts={min_counts!r}: pass a number ≥ 0 (0 keeps every cell)."
        )
    total = np.asarray(X.sum(axis=1)).ravel()
    keep = total >= min_counts
    if not keep.any():
        raise ValueError(
            f"min_counts={min_counts} removes all {adata.n_obs} cells "
            f"(median total count {np.median(total):.0f}, max "
            f"{total.max():.0f}). Lower min_counts."
        )
    out = adata[keep].copy()
    out.obs["total_counts"] = total[keep]
    return out


def standardize(X, ref=None, center=None):
    """z-score genes: ``(X − mean) / std`` with statistics from rows ``ref`` (default
    all rows).

    ``center`` (row indices) overrides the mean only, e.g. control cells so that
    controls sit at 0. Genes with zero spread get std 1. Returns ``(Z, mean, std)``
    (float32). Fit the statistics on training cells only, so that held-out cells do not
    leak into the features.
    """
    X = np.asarray(X, np.float64)
    ref = np.arange(len(X)) if ref is None else np.asarray(ref)
    mean = X[ref].mean(0) if center is None else X[np.asarray(center)].mean(0)
    std = X[ref].std(0)
    std[std == 0] = 1.0
    return ((X - mean) / std).astype(np.float32), mean, std


def fit_regressor(
    X,
    Y,
    split,
    *,
    hidden: int = 64,
    dropout: float = 0.4,
    bias: bool = True,
    settings: BilinearTrainSettings = REGRESSOR,
    progress: bool = True,
    **overrides,
):
    """The blog's perturbation regressor: a bilinear MLP with Huber loss
    (:data:`REGRESSOR`).

    ``bias=True`` appends a constant input so the quadratic form can centre the features
    (the eigenvectors then carry the constant's weight as their last coordinate).
    ``overrides`` replace settings fields (``epochs``, ``seed``, ...). Returns ``(model,
    history)``.
    """
    return fit(
        X,
        Y,
        split,
        hidden=hidden,
        bias=bias,
        dropout=dropout,
        settings=settings,
        progress=progress,
        **overrides,
    )


def per_perturbation_mae(Y_true, Y_pred, names) -> pd.DataFrame:
    """MAE per output column.

    Returns
    -------
    DataFrame indexed by perturbation with ``mae`` (over all given cells: treated, other
    perturbations and controls), ``mae_treated`` (only cells with a nonzero target in
    that column) and ``n_treated``.
    """
    Y_true = np.asarray(Y_true, np.float64)
    Y_pred = np.asarray(Y_pred, np.float64)
    Y_true = Y_true[:, None] if Y_true.ndim == 1 else Y_true
    Y_pred = Y_pred[:, None] if Y_pred.ndim == 1 else Y_pred
    if Y_true.shape != Y_pred.shape:
        raise ValueError(
            f"Y_true {Y_true.shape} and Y_pred {Y_pred.shape} differ; pass predictions "
            "for the same cells and outputs."
        )
    if len(names) != Y_true.shape[1]:
        raise ValueError(
            f"{len(names)} names for {Y_true.shape[1]} outputs; pass one name per "
            "column."
        )
    err = np.abs(Y_true - Y_pred)
    treated = Y_true != 0
    rows = {}
    for j, n in enumerate(names):
        t = treated[:, j]
        rows[str(n)] = {
            "mae": err[:, j].mean(),
            "mae_treated": err[t, j].mean() if t.any() else np.nan,
            "n_treated": int(t.sum()),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def dose_module_summary(scores, dose, n_modules: int | None = None) -> pd.DataFrame:
    """Module score mean ± std by dose (the blog's dose–module plot).

    Parameters
    ----------
    scores
        cells × modules module scores for one perturbation's output.
    dose
        Per-cell dose of that perturbation (0 for controls and other perturbations).

    Returns
    -------
    Long DataFrame with ``module``, ``dose``, ``mean``, ``std``, ``n``.
    """
    scores = np.asarray(scores, np.float64)
    scores = scores[:, None] if scores.ndim == 1 else scores
    dose = np.asarray(dose, np.float64)
    if len(dose) != len(scores):
        raise ValueError(
            f"{len(dose)} doses for {len(scores)} cells; pass one dose per cell."
        )
    k = scores.shape[1] if n_modules is None else min(n_modules, scores.shape[1])
    rows = []
    for m in range(k):
        for d in np.unique(dose):
            s = scores[dose == d, m]
            rows.append(
                {
                    "module": m,
                    "dose": d,
                    "mean": s.mean(),
                    "std": s.std(ddof=1) if len(s) > 1 else 0.0,
                    "n": len(s),
                }
            )
    return pd.DataFrame(rows)


def dose_spearman(score, dose) -> float:
    """Spearman correlation of a module score with dose (NaN if either is constant).

    The sign of an eigenvector is arbitrary, so only |ρ| is meaningful across models;
    with one dose this is a rank (point-biserial-like) measure of treated/untreated
    separation, not a dose trend.
    """
    score = np.asarray(score, np.float64).ravel()
    dose = np.asarray(dose, np.float64).ravel()
    if np.ptp(score) == 0 or np.ptp(dose) == 0:
        return float("nan")
    return float(spearmanr(score, dose).statistic)


# -------------------------------------------------------------------------- composition


def _parse_groups(labels: pd.Series, control: str, sep: str):
    groups = sorted(set(labels))
    if control not in groups:
        raise ValueError(
            f"No control cells labelled {control!r}; composition needs them as the "
            "baseline. Set control_value to the control label."
        )
    combos = [g for g in groups if g != control and sep in g]
    singles = [g for g in groups if g != control and sep not in g]
    if not combos:
        raise ValueError(
            f"No combination labels (containing {sep!r}) among {groups[:10]}. "
            "Composition needs cells under combined perturbations; set sep to the "
            "combination separator."
        )
    usable, missing = [], {}
    for c in combos:
        parts = [p for p in c.split(sep) if p != control]
        absent = [p for p in parts if p not in singles]
        (missing.__setitem__(c, absent) if absent else usable.append(c))
    if not usable:
        raise ValueError(
            "No combination has all of its parts as single perturbations (missing: "
            f"{dict(list(missing.items())[:5])}). Composition needs each part measured "
            "alone."
        )
    return singles, usable, missing


def additive_error(
    group_mean, part_means, control_mean, cells=None, *, n_boot: int = 0, rng=None
) -> dict:
    """Relative additive error of one combination from group means (see module doc).

    ``e = ‖ f̄(c) − ŷ_add ‖ / ‖ ŷ_add − f̄(control) ‖`` with ``ŷ_add = Σ_i f̄(p_i) − (k
    − 1) f̄(control)``. ``part_means`` is a sequence of the k parts' mean vectors. With
    ``cells`` (the combination's cells × outputs) and ``n_boot > 0``, the 95% bootstrap
    interval over cells (resampled with ``rng``) is added.

    Returns
    -------
    dict with ``additive_error``, ``ci_low``, ``ci_high`` (NaN without a bootstrap) and
    ``y_add``.
    """
    base = np.asarray(control_mean)
    y_add = sum(np.asarray(m) for m in part_means) - (len(part_means) - 1) * base
    denom = np.linalg.norm(y_add - base)
    out = {
        "additive_error": np.linalg.norm(np.asarray(group_mean) - y_add) / denom,
        "ci_low": np.nan,
        "ci_high": np.nan,
        "y_add": y_add,
    }
    if cells is not None and n_boot:
        rng = np.random.default_rng(0) if rng is None else rng
        n = len(cells)
        boot = [
            np.linalg.norm(cells[rng.integers(0, n, n)].mean(0) - y_add) / denom
            for _ in range(n_boot)
        ]
        out["ci_low"] = np.quantile(boot, 0.025)
        out["ci_high"] = np.quantile(boot, 0.975)
    return out


def fit_singles(
    adata: AnnData,
    *,
    perturbation_key: str = "perturbation",
    control_value: str = "control",
    singles,
    hidden: int = 16,
    dropout: float = 0.0,
    bias: bool = True,
    scale: bool = True,
    settings: BilinearTrainSettings = COMPOSITION,
    progress: bool = True,
    **overrides,
) -> dict:
    """The training part of :func:`composition_test`: a regressor on control and single
    cells.

    Targets are 1 in the cell's own perturbation column (``singles`` order); the split
    (seeded with ``settings.seed``) is stratified by label. With ``scale`` genes are
    z-scored (:func:`standardize`: centred on the training controls, spread of the
    training cells).

    Returns
    -------
    dict with ``model``, ``history``, ``X`` (the features of every cell of ``adata``),
    ``single_cells`` (rows of the controls and singles), ``split`` (into those rows),
    ``Y`` (their targets), ``singles`` (the output names, in column order) and
    ``test_mae``.
    """
    s = replace(settings, **overrides)
    labels = _labels(adata.obs, perturbation_key)
    X = get_matrix(adata, dense=True)
    lab = labels.to_numpy()
    rows = np.flatnonzero(np.isin(lab, list(singles) + [control_value]))
    Y = dose_targets(adata.obs.iloc[rows], perturbation_key, None, control_value)
    Y = Y[list(singles)].to_numpy()
    split = split_indices(lab[rows], seed=s.seed)
    if scale:
        train = rows[split["train"]]
        ctrl = train[lab[train] == control_value]
        _, mean, std = standardize(X, ref=train, center=ctrl)
        X = ((X - mean) / std).astype(np.float32)
    model, history = fit_regressor(
        X[rows],
        Y,
        split,
        hidden=hidden,
        dropout=dropout,
        bias=bias,
        settings=s,
        progress=progress,
    )
    held = predict(model, X[rows[split["test"]]])
    return {
        "model": model,
        "history": history,
        "X": X,
        "single_cells": rows,
        "split": split,
        "Y": Y,
        "singles": list(singles),
        "test_mae": float(np.abs(held - Y[split["test"]]).mean()),
    }


def composition_test(
    adata: AnnData,
    *,
    perturbation_key: str = "perturbation",
    control_value: str = "control",
    sep: str = "+",
    n_boot: int = 200,
    n_expression_genes: int = 50,
    min_cells: int = 10,
    **fit_kwargs,
) -> dict:
    """Do output directions compose? Train on singles, predict combinations as sums
    (module doc).

    Parameters
    ----------
    adata
        Log-normalised features in ``X`` (e.g. after
        :func:`helpers.preprocess.normalize_log1p`); ``obs[perturbation_key]`` holds
        control, single and combination labels (``"A+B"``). Combinations whose parts
        were not all measured alone are skipped (listed in ``skipped``).
    n_expression_genes
        The model-free expression-space ratio uses the genes that respond most to any
        single part (largest ``max_p |Δ_p|``, chosen from single-perturbation cells
        only); with all genes the ratio is dominated by sampling noise in unresponsive
        genes.
    min_cells
        Groups with fewer cells are dropped first (they cannot be split or averaged
        reliably).
    **fit_kwargs
        To :func:`fit_singles` (``hidden``, ``scale``, ``settings`` and settings fields
        such as ``epochs``, ``lr``, ``seed``, ``device``; the seed also drives the
        bootstrap).

    Returns
    -------
    dict with
        ``table``: one row per combination — ``n_cells``, ``additive_error`` (relative,
        model outputs), ``ci_low``/``ci_high`` (bootstrap 95% over combination cells),
        ``expression_additive_error`` (the same ratio on mean log-expression shifts, no
        model), ``mae_vs_additive`` (cell-level MAE of outputs against ``ŷ_add``),
        ``mae_vs_truth`` (against the additive target: 1 in each part's column),
        ``additive_mae_vs_truth`` (``ŷ_add`` against that target);
        ``group_means``: mean output per group (held-out singles/controls, all
        combination cells);
        ``singles``, ``skipped``, ``model``, ``history``, ``test_mae`` (singles'
        held-out MAE).
    """
    labels = _labels(adata.obs, perturbation_key)
    control = str(control_value)
    keep = labels.map(labels.value_counts()).to_numpy() >= min_cells
    if not keep.all():
        adata, labels = adata[keep], labels[keep]
    singles, combos, skipped = _parse_groups(labels, control, sep)
    fitted = fit_singles(
        adata,
        perturbation_key=perturbation_key,
        control_value=control,
        singles=singles,
        **fit_kwargs,
    )
    model, X, rows = fitted["model"], fitted["X"], fitted["single_cells"]
    lab = labels.to_numpy()
    held = rows[fitted["split"]["test"]]
    out_held = predict(model, X[held])
    means = {g: out_held[lab[held] == g].mean(0) for g in singles + [control]}
    expr = {g: X[rows[lab[rows] == g]].mean(0) for g in singles + [control]}
    rng = np.random.default_rng(model.settings.seed)
    shifts = np.stack([expr[p] - expr[control] for p in singles])
    genes = np.argsort(-np.abs(shifts).max(0))[:n_expression_genes]
    col = {s: j for j, s in enumerate(singles)}
    table = {}
    for c in combos:
        parts = [p for p in c.split(sep) if p != control]
        cells = np.flatnonzero(lab == c)
        out_c = predict(model, X[cells])
        means[c] = out_c.mean(0)
        err = additive_error(
            means[c],
            [means[p] for p in parts],
            means[control],
            out_c,
            n_boot=n_boot,
            rng=rng,
        )
        y_add = err.pop("y_add")
        d_add = sum(expr[p] - expr[control] for p in parts)
        d_obs = X[cells].mean(0) - expr[control]
        truth = np.zeros(len(singles))
        truth[[col[p] for p in parts]] = 1.0
        table[c] = {
            "n_cells": len(cells),
            **err,
            "expression_additive_error": (
                np.linalg.norm((d_obs - d_add)[genes]) / np.linalg.norm(d_add[genes])
            ),
            "mae_vs_additive": np.abs(out_c - y_add).mean(),
            "mae_vs_truth": np.abs(out_c - truth).mean(),
            "additive_mae_vs_truth": np.abs(y_add - truth).mean(),
        }
    table = pd.DataFrame.from_dict(table, orient="index")
    table.index.name = "combination"
    return {
        "table": table,
        "group_means": pd.DataFrame(means, index=singles).T,
        "singles": singles,
        "skipped": skipped,
        "model": model,
        "history": fitted["history"],
        "test_mae": fitted["test_mae"],
    }


# ------------------------------------------------------------ separation within groups


def separation_by_group(
    score,
    condition,
    groups,
    *,
    control_value: str,
    treated_value: str | None = None,
    min_cells: int = 3,
) -> pd.DataFrame:
    """Does a score separate treated from control cells *within* each group?

    Parameters
    ----------
    score
        One value per cell (e.g. a module score).
    condition
        Per-cell condition labels; ``control_value`` marks controls, ``treated_value``
        (default: every other label) the treated cells.
    groups
        Per-cell group labels (e.g. cell types).
    min_cells
        Groups with fewer control or treated cells get NaN (listed, not dropped).

    Returns
    -------
    DataFrame indexed by group with ``n_control``, ``n_treated``, ``mean_control``,
    ``mean_treated``, ``difference`` (treated − control mean) and ``auroc``: the
    probability that a treated cell scores above a control cell of the same group
    (Mann–Whitney; ties count one half). 0.5 is no separation, 1 complete.
    """
    score = np.asarray(score, np.float64).ravel()
    condition = np.asarray(condition).astype(str)
    groups = np.asarray(groups).astype(str)
    if not len(score) == len(condition) == len(groups):
        raise ValueError(
            f"score ({len(score)}), condition ({len(condition)}) and "
            f"groups ({len(groups)}) need one value per cell each."
        )
    is_ctrl = condition == str(control_value)
    if not is_ctrl.any():
        raise ValueError(
            f"No control cells: no condition equals control_value="
            f"{control_value!r} (values: {sorted(set(condition))[:10]})."
        )
    is_trt = ~is_ctrl if treated_value is None else condition == str(treated_value)
    if not is_trt.any():
        raise ValueError(
            f"No treated cells (treated_value={treated_value!r}; values: "
            f"{sorted(set(condition))[:10]})."
        )
    rows = {}
    for g in sorted(set(groups)):
        c, t = score[(groups == g) & is_ctrl], score[(groups == g) & is_trt]
        ok = min(len(c), len(t)) >= min_cells
        if ok:
            # Mann–Whitney U / (n_t n_c), average ranks: AUROC (ties count one half)
            ranks = pd.Series(np.concatenate([t, c])).rank().to_numpy()
            u = ranks[: len(t)].sum() - len(t) * (len(t) + 1) / 2
            auroc = u / (len(t) * len(c))
        rows[g] = {
            "n_control": len(c),
            "n_treated": len(t),
            "mean_control": c.mean() if ok else np.nan,
            "mean_treated": t.mean() if ok else np.nan,
            "difference": t.mean() - c.mean() if ok else np.nan,
            "auroc": auroc if ok else np.nan,
        }
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "group"
    return out


# ------------------------------------------------------- composition of real doubles


def _ci(samples, axis=0):
    return (
        np.quantile(samples, 0.025, axis=axis),
        np.quantile(samples, 0.975, axis=axis),
    )


def composition_readout(
    adata: AnnData,
    fitted: dict,
    *,
    perturbation_key: str = "perturbation",
    control_value: str = "control",
    sep: str = "+",
    combos=None,
    n_genes: int | None = None,
    held_out=("val", "test"),
    n_boot: int = 200,
    seed: int = 0,
) -> dict:
    """Doubles read through a model trained on singles (:func:`fit_singles`).

    For each combination ``d = p1+…+pk`` whose parts are all among the model's outputs:

    (a) **outputs**: the retained fraction of each part,
        ``w_p = (f̄_p(d) − f̄_p(ctrl)) / (f̄_p(p) − f̄_p(ctrl))`` (1: the double raises
        ``p``'s output as much as ``p`` alone; 0: not at all), with ``f̄`` the mean
        output over the combination's cells and the held-out singles and controls
        (splits ``held_out`` of ``fitted``; the validation split only chose the epoch).
        ``separated``: the part's own held-out output increment
        ``f̄_p(p) − f̄_p(ctrl)`` has a 95% interval above 0; only then is ``w_p``
        defined (else NaN). ``raised``: separated and the interval of ``w_p`` lies
        above 0.
    (b) **expression** (log-normalised ``adata.X``; all genes, or with ``n_genes`` the
        genes with the largest response ``|Δ_p| / SE`` to any single, chosen on single
        cells only, which hides programmes only a combination moves): the observed
        change
        ``Δ_d = x̄(d) − x̄(ctrl)`` against three predictions ``Σ ω_p Δ_p`` from the
        parts' changes ``Δ_p = x̄(p) − x̄(ctrl)`` (all cells of each part): *additive*
        ``ω = 1`` (single A + single B − control); *read-out* ``ω = w`` (the parts'
        changes scaled by the model's outputs on the double: the singles' output
        directions read on the double); *span* (least squares: the floor of any
        prediction that only re-weights the parts). Each is scored by its
        **unexplained share** ``(‖Δ_d − Σ ω_p Δ_p‖² − N_r) / (‖Δ_d‖² − N_d)``, where
        ``N`` is the sampling noise expected in that squared norm (``Σ_g s²_g / n`` of
        every group mean involved, weighted by ``ω²``): 0 when the prediction is exact
        up to sampling noise, 1 when it explains nothing; noise can push it below 0.
        ``noise``: ``sqrt(N_r) / ‖Δ_d‖`` of the additive prediction, how large the
        plain relative error ``‖Δ_d − ΣΔ_p‖ / ‖Δ_d‖`` of an exact prediction would be.

    A bootstrap (cells resampled within every group, ``n_boot`` times; replicates
    remove the noise twice, once for the sample and once for the resampling) gives
    95% intervals per combination and for the mean over combinations (``overall``).
    Verdicts, per combination: ``additive holds`` when the interval of the additive
    share reaches down to 0 (the double is the sum of its parts within sampling
    noise); ``read-out better`` when the interval of (additive − read-out share) lies
    above 0 (NaN unless every part is separated); ``both raised`` when every part is
    raised. ``change`` (``‖Δ_d‖² / N_d − 1``, the double's change over its sampling
    noise) is ``detectable`` when its interval lies above 0; ``verdict`` is then
    "consistent with additive" or "not additive", otherwise "no change to explain"
    (a share of a change that is only noise means nothing). ``overall`` averages the
    expression shares over detectable combinations only (``n``).

    Returns
    -------
    dict with ``outputs`` (one row per combination and part), ``expression`` (one row
    per combination: ``additive``, ``readout``, ``span`` shares and
    ``output_additive_error`` (:func:`additive_error` on the outputs), each with
    ``_low``/``_high``, ``noise``, verdicts), ``overall`` (means over combinations,
    with intervals) and ``genes`` (the genes used).
    """
    labels = _labels(adata.obs, perturbation_key).to_numpy()
    control = str(control_value)
    if "singles" not in fitted:
        raise KeyError("fitted has no 'singles'; pass the result of fit_singles.")
    singles = list(fitted["singles"])
    combos = sorted({g for g in labels if sep in g}) if combos is None else list(combos)
    usable = [
        c
        for c in combos
        if all(p in singles for p in c.split(sep)) and (labels == c).any()
    ]
    if not usable:
        raise ValueError(
            f"No combination among {combos[:10]} has all of its parts "
            f"among the model's outputs {singles[:10]} and cells in adata."
        )
    out = predict(fitted["model"], fitted["X"])
    expr = get_matrix(adata, dense=True).astype(np.float64)
    rows = fitted["single_cells"]
    held = rows[np.concatenate([fitted["split"][k] for k in held_out])]
    col = {s: j for j, s in enumerate(singles)}
    parts = {c: c.split(sep) for c in usable}
    need = sorted({p for c in usable for p in parts[c]} | {control})
    held_idx = {g: held[labels[held] == g] for g in need}
    all_idx = {g: np.flatnonzero(labels == g) for g in need + usable}
    for g, idx in {**held_idx, **all_idx}.items():
        if len(idx) < 2:
            raise ValueError(
                f"group {g!r} has {len(idx)} cells (held-out for outputs, "
                "all for expression); need at least 2 to average and "
                "bootstrap."
            )

    ctrl_x = expr[all_idx[control]]
    z = []
    for p in singles:
        xp = expr[labels == p]
        se = np.sqrt(xp.var(0, ddof=1) / len(xp) + ctrl_x.var(0, ddof=1) / len(ctrl_x))
        z.append(np.abs(xp.mean(0) - ctrl_x.mean(0)) / np.where(se > 0, se, np.inf))
    genes = (
        np.arange(expr.shape[1])
        if n_genes is None
        else np.sort(np.argsort(-np.max(z, 0), kind="stable")[:n_genes])
    )
    expr = expr[:, genes]

    def stats(h, a, k_noise=1):
        """Per-combination statistics from index sets h (outputs) and a (expression);
        ``k_noise`` sampling-noise terms are removed from squared norms (2 in a
        bootstrap replicate: the sample's noise and the resampling's)."""
        f = {g: out[h[g]].mean(0) for g in need}
        x = {g: expr[a[g]].mean(0) for g in need}
        res = {}
        for c in usable:
            fc = out[a[c]].mean(0)
            sep_p = np.array([f[p][col[p]] - f[control][col[p]] for p in parts[c]])
            w = np.array([fc[col[p]] - f[control][col[p]] for p in parts[c]]) / sep_p
            d_obs = expr[a[c]].mean(0) - x[control]
            D = np.stack([x[p] - x[control] for p in parts[c]])
            v = {
                g: (expr[a[g]].var(0, ddof=1) / len(a[g])).sum()
                for g in [c, control] + parts[c]
            }
            denom = d_obs @ d_obs - k_noise * (v[c] + v[control])

            def unexplained(weights):
                r = d_obs - weights @ D
                noise = (
                    v[c]
                    + (1 - weights.sum()) ** 2 * v[control]
                    + sum(wp**2 * v[p] for wp, p in zip(weights, parts[c]))
                )
                return (r @ r - k_noise * noise) / denom

            coef = np.linalg.lstsq(D.T, d_obs, rcond=None)[0]
            add = additive_error(fc, [f[p] for p in parts[c]], f[control])
            res[c] = {
                "w": w,
                "sep": sep_p,
                "change": (d_obs @ d_obs) / (v[c] + v[control]) - k_noise,
                "additive": unexplained(np.ones(len(parts[c]))),
                "readout": unexplained(w),
                "span": unexplained(coef),
                "output_additive_error": add["additive_error"],
            }
        return res

    point = stats(held_idx, all_idx)
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(n_boot):
        h = {g: rng.choice(i, len(i)) for g, i in held_idx.items()}
        a = {g: rng.choice(i, len(i)) for g, i in all_idx.items()}
        boot.append(stats(h, a, k_noise=2))
    keys = ("additive", "readout", "span", "output_additive_error")
    out_rows, expr_rows = [], []
    for c in usable:
        lo, hi = _ci(np.stack([b[c]["w"] for b in boot]))
        s_lo, s_hi = _ci(np.stack([b[c]["sep"] for b in boot]))
        for j, p in enumerate(parts[c]):
            ok = bool(s_lo[j] > 0)
            out_rows.append(
                {
                    "combination": c,
                    "part": p,
                    "single_increment": point[c]["sep"][j],
                    "single_low": s_lo[j],
                    "single_high": s_hi[j],
                    "separated": ok,
                    "retained": point[c]["w"][j] if ok else np.nan,
                    "ci_low": lo[j] if ok else np.nan,
                    "ci_high": hi[j] if ok else np.nan,
                    "raised": bool(ok and lo[j] > 0),
                }
            )
        var = sum(
            expr[all_idx[g]].var(0, ddof=1) / len(all_idx[g])
            for g in [c, control] + parts[c]
        )
        norm = np.linalg.norm(expr[all_idx[c]].mean(0) - expr[all_idx[control]].mean(0))
        row = {
            "combination": c,
            "n_cells": len(all_idx[c]),
            "noise": float(np.sqrt(var.sum()) / norm),
            "change": point[c]["change"],
        }
        row["change_low"], row["change_high"] = _ci([b[c]["change"] for b in boot])
        row["detectable"] = bool(row["change_low"] > 0)
        for k in keys:
            lo_k, hi_k = _ci([b[c][k] for b in boot])
            row.update({k: point[c][k], f"{k}_low": lo_k, f"{k}_high": hi_k})
        gain = [b[c]["additive"] - b[c]["readout"] for b in boot]
        row["gain_low"], row["gain_high"] = _ci(gain)
        row["additive holds"] = bool(row["additive_low"] <= 0)
        mine = [r for r in out_rows if r["combination"] == c]
        if not all(r["separated"] for r in mine):
            for k in (
                "readout",
                "readout_low",
                "readout_high",
                "gain_low",
                "gain_high",
            ):
                row[k] = np.nan
        row["read-out better"] = bool(row["gain_low"] > 0)
        row["verdict"] = (
            "no change to explain"
            if not row["detectable"]
            else "consistent with additive"
            if row["additive holds"]
            else "not additive"
        )
        row["both raised"] = all(r["raised"] for r in mine)
        expr_rows.append(row)
    overall = {}
    for k in keys:
        have = [
            r["combination"]
            for r in expr_rows
            if np.isfinite(r[k]) and (r["detectable"] or k == "output_additive_error")
        ]
        if not have:
            overall[k] = {"mean": np.nan, "ci_low": np.nan, "ci_high": np.nan, "n": 0}
            continue
        lo_k, hi_k = _ci([np.mean([b[c][k] for c in have]) for b in boot])
        overall[k] = {
            "mean": float(np.mean([point[c][k] for c in have])),
            "ci_low": float(lo_k),
            "ci_high": float(hi_k),
            "n": len(have),
        }
    overall["noise"] = {
        "mean": float(np.mean([r["noise"] for r in expr_rows])),
        "n": len(expr_rows),
    }
    return {
        "outputs": pd.DataFrame(out_rows).set_index(["combination", "part"]),
        "expression": pd.DataFrame(expr_rows).set_index("combination"),
        "overall": overall,
        "genes": list(adata.var_names[genes]),
    }


def condition_response(
    adata: AnnData,
    *,
    condition_key: str,
    control_value: str,
    group_key: str,
    key_added: str = "response",
    n_modules: int = 3,
    min_cells: int = 3,
    hidden: int = 64,
    dropout: float = 0.4,
    seed: int = 0,
    progress: bool = True,
    **overrides,
) -> dict:
    """One treated-vs-control output, its modules, and their separation per group.

    The regressor (:func:`fit_regressor`, target 1 for treated cells) is trained on a
    70/15/15 split stratified by condition, on genes z-scored with training-cell
    statistics; its modules are written into ``adata`` under ``key_added``
    (:func:`helpers.bilinear.annotate`, oriented so that the score rises with
    treatment). :func:`separation_by_group` then asks, per ``group_key`` value, whether
    module 0 separates treated from control cells, on all cells and on the held-out
    test cells. ``overrides`` go to the training settings (``epochs``, ``lr``, ...).

    Returns
    -------
    dict with ``model``, ``history``, ``split``, ``X``, ``Y`` (DataFrame), ``output``
    (the treated output's name), ``separation`` (all cells) and
    ``separation_test`` (test cells), both from :func:`separation_by_group`.
    """
    from .bilinear import annotate, get_modules

    cond = _labels(adata.obs, condition_key)
    if group_key not in adata.obs:
        raise KeyError(
            f"group column {group_key!r} not found in obs; available: "
            f"{list(adata.obs.columns)}."
        )
    Y = dose_targets(adata.obs, condition_key, None, control_value)
    if Y.shape[1] != 1:
        raise ValueError(
            f"obs[{condition_key!r}] holds {Y.shape[1]} treated labels "
            f"{list(Y.columns)[:5]}; condition_response compares one "
            "treatment with its control."
        )
    split = split_indices(cond.to_numpy(), seed=seed)
    X, _, _ = standardize(get_matrix(adata, dense=True), ref=split["train"])
    model, history = fit_regressor(
        X,
        Y.to_numpy(),
        split,
        hidden=hidden,
        dropout=dropout,
        seed=seed,
        progress=progress,
        **overrides,
    )
    name = str(Y.columns[0])
    annotate(
        adata,
        model,
        [name],
        n_modules=n_modules,
        X=X,
        targets=Y.to_numpy(),
        key_added=key_added,
    )
    score = get_modules(adata, name, key=key_added)[2][:, 0]
    groups = adata.obs[group_key].astype(str).to_numpy()
    te = split["test"]
    return {
        "model": model,
        "history": history,
        "split": split,
        "X": X,
        "Y": Y,
        "output": name,
        "separation": separation_by_group(
            score, cond, groups, control_value=control_value, min_cells=min_cells
        ),
        "separation_test": separation_by_group(
            score[te],
            cond.to_numpy()[te],
            groups[te],
            control_value=control_value,
            min_cells=min_cells,
        ),
    }
