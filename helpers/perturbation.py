"""Perturbation and dose: regression targets, baselines, dose–module summaries, composition.

The blog's perturbation task is regression onto *dose-scaled one-hot* targets: one output per
perturbation, equal to the log-transformed dose for cells that received it and 0 otherwise
(controls are 0 everywhere). :func:`dose_targets` builds them from any ``obs`` table with a
perturbation column and an optional dose column; :data:`COLUMN_MAPS` and :func:`resolve_columns`
hold the column names of the datasets this book knows (pertpy/scPerturb conventions).

Dose transform
    ``log10(1 + dose)``. A dose of 0 maps to 0 (so "untreated" and "target 0" agree), every positive
    dose stays positive, and sci-Plex2's doses in nM (10, 100, 1000, 10000) become ≈ 1.04, 2.00,
    3.00, 4.00: one unit per decade. Without a dose column a treated cell gets target 1.

Composition (beyond the blog)
    :func:`composition_test` trains on control and single-perturbation cells only and asks whether
    the model's outputs on held-out *combination* cells equal the sum of the single-perturbation
    outputs. The statistic, per combination ``c = p1+…+pk``, is the relative additive error::

        e_c = ‖ f̄(c) − ŷ_add(c) ‖₂ / ‖ ŷ_add(c) − f̄(control) ‖₂,
        ŷ_add(c) = Σ_i f̄(p_i) − (k − 1) f̄(control),

    where ``f̄(g)`` is the model's mean output vector over held-out cells of group ``g``. ``e_c ≈ 0``:
    the outputs compose; ``e_c`` of order 1: the combination moves the cells somewhere the sum of
    its parts does not predict (an interaction). The same ratio in expression space (mean log
    expression shifts instead of outputs) is reported as the model-free reference, and a bootstrap
    over combination cells gives a 95% interval. :func:`synthetic_combinations` plants one additive
    and one interacting (buffering: the second perturbation abolishes the first's response) pair.

AnnData keys
    :func:`filter_low_count_cells` writes ``obs["total_counts"]``; :func:`sciplex2_like` writes
    ``varm["planted_log_fold"]`` (genes × drugs, log fold change at the top dose) and
    ``uns["planted_perturbations"]`` (the column order); :func:`synthetic_combinations` writes
    ``varm["planted_log_fold"]``, ``uns["planted_perturbations"]`` and ``uns["planted_interactions"]``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scipy.stats import spearmanr

AUTO = "auto"

#: Column names per dataset: perturbation column, dose column (None: single dose), control label,
#: separator of combinations. "pertpy" is the scPerturb convention that pertpy's loaders share.
COLUMN_MAPS: dict[str, dict] = {
    "pertpy": {"perturbation_key": "perturbation", "dose_key": "dose_value", "control_value": "control",
               "sep": "+"},
    "sciplex2": {"perturbation_key": "perturbation", "dose_key": "dose_value", "control_value": "control",
                 "sep": "+"},
    "glioblastoma_panobinostat": {"perturbation_key": "condition", "dose_key": None, "control_value": "ctrl",
                                  "sep": "+"},
    "norman_2019": {"perturbation_key": "perturbation_name", "dose_key": None, "control_value": "control",
                    "sep": "+"},
    "synthetic_combinations": {"perturbation_key": "perturbation", "dose_key": None,
                               "control_value": "control", "sep": "+"},
}

#: sci-Plex2 drug names used by :func:`sciplex2_like` and its doses in nM.
SCIPLEX2_DRUGS = ("BMS345541", "dexamethasone", "nutlin3a", "SAHA")
SCIPLEX2_DOSES_NM = (10.0, 100.0, 1000.0, 10000.0)


def log_dose(dose) -> np.ndarray:
    """The book's dose transform, ``log10(1 + dose)`` (0 → 0, 10 nM → 1.04, 10 µM → 4.00)."""
    return np.log10(1.0 + np.asarray(dose, dtype=np.float64))


def resolve_columns(dataset: str | None, obs: pd.DataFrame | None = None, perturbation_key: str | None = None,
                    dose_key: str | None = AUTO, control_value: str | None = None) -> dict:
    """Column names for a dataset: explicit arguments win, then :data:`COLUMN_MAPS`, then pertpy's.

    Parameters
    ----------
    dataset
        A name in :data:`COLUMN_MAPS`, or anything else (an ``.h5ad`` path) for pertpy conventions.
    obs
        When given, ``dose_key="auto"`` resolves to the mapped dose column only if ``obs`` has it.
    dose_key
        ``"auto"`` (default) for the mapping's dose column, ``None`` for "no dose column", or a name.

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
    elif obs is not None and base["dose_key"] is not None and base["dose_key"] not in obs:
        base["dose_key"] = None
    return base


def _obs(obs_or_adata) -> pd.DataFrame:
    return obs_or_adata.obs if hasattr(obs_or_adata, "obs") else obs_or_adata


def _labels(obs: pd.DataFrame, perturbation_key: str) -> pd.Series:
    if perturbation_key not in obs:
        raise KeyError(f"perturbation column {perturbation_key!r} not found in obs. Available columns: "
                       f"{list(obs.columns)}. Pass perturbation_key=<the column naming each cell's "
                       "perturbation> (pertpy/scPerturb files call it 'perturbation').")
    labels = obs[perturbation_key]
    if labels.isna().any():
        raise ValueError(f"obs[{perturbation_key!r}] has {int(labels.isna().sum())} missing labels. Drop those "
                         "cells or fill them (controls with the control label).")
    return labels.astype(str)


def perturbation_names(obs, perturbation_key: str, control_value: str = "control") -> list[str]:
    """Sorted non-control labels of ``obs[perturbation_key]`` (the target columns)."""
    labels = _labels(_obs(obs), perturbation_key)
    return sorted(set(labels) - {str(control_value)})


def dose_targets(obs, perturbation_key: str, dose_key: str | None = None, control_value: str = "control",
                 log: bool = True) -> pd.DataFrame:
    """Dose-scaled one-hot regression targets, one column per perturbation.

    Parameters
    ----------
    obs
        A cell table (``adata.obs``) or an AnnData.
    perturbation_key
        Column with each cell's perturbation label; controls carry ``control_value``.
    dose_key
        Numeric dose column, or ``None`` when every treated cell has the same (unknown) dose.
        Controls' doses are ignored (vehicle wells may record 0 or NaN).
    log
        Apply :func:`log_dose` (``log10(1 + dose)``); ``False`` keeps raw doses.

    Returns
    -------
    DataFrame (cells × perturbations, float32, index = obs index): the transformed dose in the
    cell's own perturbation column, 0 elsewhere; controls are all 0; without a dose column 1.
    """
    obs = _obs(obs)
    labels = _labels(obs, perturbation_key)
    control = str(control_value)
    is_ctrl = (labels == control).to_numpy()
    present = labels.value_counts()
    if not is_ctrl.any():
        raise ValueError(f"No control cells: no value of obs[{perturbation_key!r}] equals control_value="
                         f"{control!r}. Values present: {present.index.tolist()[:10]}. Set control_value to "
                         "the vehicle/untreated label (e.g. 'control', 'ctrl', 'DMSO').")
    if is_ctrl.all():
        raise ValueError(f"Only control cells: every value of obs[{perturbation_key!r}] is {control!r}, so "
                         "there is nothing to regress. Use a dataset with treated cells, or check "
                         "perturbation_key/control_value.")
    names = sorted(set(labels) - {control})
    if dose_key is None:
        dose = np.ones(len(obs))
    else:
        if dose_key not in obs:
            raise KeyError(f"dose column {dose_key!r} not found in obs. Available columns: {list(obs.columns)}. "
                           "Pass dose_key=<numeric dose column> (pertpy/scPerturb: 'dose_value'), or "
                           "dose_key=None when all treated cells share one dose.")
        dose = pd.to_numeric(obs[dose_key], errors="coerce").to_numpy(np.float64)
        treated = ~is_ctrl
        bad_nan = treated & ~np.isfinite(dose)
        if bad_nan.any():
            ex = labels[bad_nan].value_counts().head(3).to_dict()
            raise ValueError(f"{int(bad_nan.sum())} treated cells have a missing or non-numeric dose in "
                             f"obs[{dose_key!r}] (by perturbation: {ex}). Fill the doses, drop those cells, "
                             "or pass dose_key=None to use target 1 for every treated cell.")
        bad_pos = treated & (dose <= 0)
        if bad_pos.any():
            ex = labels[bad_pos].value_counts().head(3).to_dict()
            raise ValueError(f"{int(bad_pos.sum())} treated cells have a dose ≤ 0 in obs[{dose_key!r}] (by "
                             f"perturbation: {ex}). Treated cells need positive doses: relabel zero-dose "
                             f"cells as {control!r} or drop them.")
        dose = np.where(is_ctrl, 0.0, dose)
    value = log_dose(dose) if (log and dose_key is not None) else dose
    Y = np.zeros((len(obs), len(names)), np.float32)
    col = {n: j for j, n in enumerate(names)}
    for i, (lab, v) in enumerate(zip(labels.to_numpy(), value)):
        if lab != control:
            Y[i, col[lab]] = v
    return pd.DataFrame(Y, index=obs.index, columns=names)


def filter_low_count_cells(adata: AnnData, min_counts: float, layer: str | None = None) -> AnnData:
    """Copy of ``adata`` without cells whose total count is below ``min_counts``.

    Totals come from ``layer`` (default ``X``; must be raw counts) and are stored in
    ``obs["total_counts"]``. The blog dropped sci-Plex2 cells under 5,000 counts.
    """
    from .data import check_counts, check_layer

    check_layer(adata, layer)
    X = adata.X if layer in (None, "X") else adata.layers[layer]
    check_counts(X, "X" if layer in (None, "X") else f"layer {layer!r}")
    if min_counts is None or min_counts < 0:
        raise ValueError(f"min_counts={min_counts!r}: pass a number ≥ 0 (0 keeps every cell).")
    total = np.asarray(X.sum(axis=1)).ravel()
    keep = total >= min_counts
    if not keep.any():
        raise ValueError(f"min_counts={min_counts} removes all {adata.n_obs} cells (median total count "
                         f"{np.median(total):.0f}, max {total.max():.0f}). Lower min_counts.")
    out = adata[keep].copy()
    out.obs["total_counts"] = total[keep]
    return out


def standardize(X, ref=None, center=None):
    """z-score genes: ``(X − mean) / std`` with statistics from rows ``ref`` (default all rows).

    ``center`` (row indices) overrides the mean only, e.g. control cells so that controls sit at 0.
    Genes with zero spread get std 1. Returns ``(Z, mean, std)`` (float32). Fit the statistics on
    training cells only, so that held-out cells do not leak into the features.
    """
    X = np.asarray(X, np.float64)
    ref = np.arange(len(X)) if ref is None else np.asarray(ref)
    mean = X[ref].mean(0) if center is None else X[np.asarray(center)].mean(0)
    std = X[ref].std(0)
    std[std == 0] = 1.0
    return ((X - mean) / std).astype(np.float32), mean, std


def subsample(adata: AnnData, max_cells: int | None, key: str | None = None, seed: int = 0) -> AnnData:
    """At most ``max_cells`` cells, the same share from every ``obs[key]`` group (copy; all if fewer)."""
    if max_cells is None or adata.n_obs <= max_cells:
        return adata.copy()
    rng = np.random.default_rng(seed)
    if key is None:
        keep = rng.choice(adata.n_obs, max_cells, replace=False)
    else:
        labels = adata.obs[key].astype(str).to_numpy()
        keep = []
        for g in np.unique(labels):
            idx = np.flatnonzero(labels == g)
            keep.extend(rng.choice(idx, max(1, round(len(idx) * max_cells / adata.n_obs)), replace=False))
    return adata[np.sort(np.asarray(keep))].copy()


def fit_regressor(X, Y, split, hidden: int = 64, epochs: int = 100, lr: float = 1e-3,
                  weight_decay: float = 1e-3, dropout: float = 0.4, batch_size: int = 128,
                  loss: str = "huber", bias: bool = True, device: str = "auto", seed: int = 0,
                  progress: bool = True):
    """The blog's perturbation regressor: a bilinear MLP with Huber loss; returns ``(model, history)``.

    ``bias=True`` appends a constant input so the quadratic form can centre the features (the
    eigenvectors then carry the constant's weight as their last coordinate).
    """
    from .bilinear import fit

    return fit(X, Y, split, hidden=hidden, task="regression", bias=bias, dropout=dropout, seed=seed, loss=loss,
               epochs=epochs, lr=lr, weight_decay=weight_decay, batch_size=batch_size, device=device,
               progress=progress)


def ridge_baseline(X, Y, split, alphas=(0.1, 1.0, 10.0, 100.0)):
    """Linear baseline on the same split: sklearn ``Ridge``, alpha chosen by validation MAE.

    Returns
    -------
    ``(model, alpha, predictions)`` with predictions for every cell (rows of ``X``).
    """
    from sklearn.linear_model import Ridge

    X = np.asarray(X, np.float64)
    Y = np.asarray(Y, np.float64).reshape(len(X), -1)
    best = None
    for a in alphas:
        m = Ridge(alpha=a).fit(X[split["train"]], Y[split["train"]])
        val = split["val"]
        mae = np.abs(m.predict(X[val]).reshape(len(val), -1) - Y[val]).mean()
        if best is None or mae < best[0]:
            best = (mae, a, m)
    _, alpha, model = best
    return model, alpha, model.predict(X).reshape(len(X), -1)


def per_perturbation_mae(Y_true, Y_pred, names) -> pd.DataFrame:
    """MAE per output column.

    Returns
    -------
    DataFrame indexed by perturbation with ``mae`` (over all given cells: treated, other
    perturbations and controls), ``mae_treated`` (only cells with a nonzero target in that column)
    and ``n_treated``.
    """
    Y_true = np.asarray(Y_true, np.float64)
    Y_pred = np.asarray(Y_pred, np.float64)
    Y_true = Y_true[:, None] if Y_true.ndim == 1 else Y_true
    Y_pred = Y_pred[:, None] if Y_pred.ndim == 1 else Y_pred
    if Y_true.shape != Y_pred.shape:
        raise ValueError(f"Y_true {Y_true.shape} and Y_pred {Y_pred.shape} differ; pass predictions for the "
                         "same cells and outputs.")
    if len(names) != Y_true.shape[1]:
        raise ValueError(f"{len(names)} names for {Y_true.shape[1]} outputs; pass one name per column.")
    err = np.abs(Y_true - Y_pred)
    treated = Y_true != 0
    rows = {}
    for j, n in enumerate(names):
        t = treated[:, j]
        rows[str(n)] = {"mae": err[:, j].mean(), "mae_treated": err[t, j].mean() if t.any() else np.nan,
                        "n_treated": int(t.sum())}
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
        raise ValueError(f"{len(dose)} doses for {len(scores)} cells; pass one dose per cell.")
    k = scores.shape[1] if n_modules is None else min(n_modules, scores.shape[1])
    rows = []
    for m in range(k):
        for d in np.unique(dose):
            s = scores[dose == d, m]
            rows.append({"module": m, "dose": d, "mean": s.mean(), "std": s.std(ddof=1) if len(s) > 1 else 0.0,
                         "n": len(s)})
    return pd.DataFrame(rows)


def dose_spearman(score, dose) -> float:
    """Spearman correlation of a module score with dose (NaN if either is constant).

    The sign of an eigenvector is arbitrary, so only |ρ| is meaningful across models; with one dose
    this is a rank (point-biserial-like) measure of treated/untreated separation, not a dose trend.
    """
    score = np.asarray(score, np.float64).ravel()
    dose = np.asarray(dose, np.float64).ravel()
    if np.ptp(score) == 0 or np.ptp(dose) == 0:
        return float("nan")
    return float(spearmanr(score, dose).statistic)


# ------------------------------------------------------------------------------- composition


def _parse_groups(labels: pd.Series, control: str, sep: str):
    groups = sorted(set(labels))
    if control not in groups:
        raise ValueError(f"No control cells labelled {control!r}; composition needs them as the baseline. "
                         "Set control_value to the control label.")
    combos = [g for g in groups if g != control and sep in g]
    singles = [g for g in groups if g != control and sep not in g]
    if not combos:
        raise ValueError(f"No combination labels (containing {sep!r}) among {groups[:10]}. Composition needs "
                         "cells under combined perturbations; set sep to the combination separator.")
    usable, missing = [], {}
    for c in combos:
        parts = [p for p in c.split(sep) if p != control]
        absent = [p for p in parts if p not in singles]
        (missing.__setitem__(c, absent) if absent else usable.append(c))
    if not usable:
        raise ValueError(f"No combination has all of its parts as single perturbations (missing: "
                         f"{dict(list(missing.items())[:5])}). Composition needs each part measured alone.")
    return singles, usable, missing


def composition_test(adata: AnnData, perturbation_key: str = "perturbation", control_value: str = "control",
                     sep: str = "+", hidden: int = 16, epochs: int = 30, lr: float = 1e-2,
                     weight_decay: float = 1e-3, dropout: float = 0.0, batch_size: int = 128,
                     loss: str = "huber", bias: bool = True, scale: bool = True, n_boot: int = 200,
                     n_expression_genes: int = 50, min_cells: int = 10, device: str = "auto",
                     seed: int = 0, progress: bool = True) -> dict:
    """Do output directions compose? Train on singles, predict combinations as sums (see module doc).

    Parameters
    ----------
    adata
        Log-normalised features in ``X`` (e.g. after :func:`helpers.preprocess.normalize_log1p`);
        ``obs[perturbation_key]`` holds control, single and combination labels (``"A+B"``).
        Combinations whose parts were not all measured alone are skipped (listed in ``skipped``).
    scale
        z-score genes (:func:`standardize`, centred on control cells, spread of training cells).
    n_expression_genes
        The model-free expression-space ratio uses the genes that respond most to any single part
        (largest ``max_p |Δ_p|``, chosen from single-perturbation cells only); with all genes the
        ratio is dominated by sampling noise in unresponsive genes.
    min_cells
        Groups with fewer cells are dropped first (they cannot be split or averaged reliably).

    Returns
    -------
    dict with
        ``table``: one row per combination — ``n_cells``, ``additive_error`` (relative, model outputs),
        ``ci_low``/``ci_high`` (bootstrap 95% over combination cells), ``expression_additive_error``
        (the same ratio on mean log-expression shifts, no model), ``mae_vs_additive`` (cell-level
        MAE of outputs against ``ŷ_add``), ``mae_vs_truth`` (against the additive target: 1 in
        each part's column), ``additive_mae_vs_truth`` (``ŷ_add`` against that target);
        ``group_means``: mean output per group (held-out singles/controls, all combination cells);
        ``singles``, ``skipped``, ``model``, ``history``, ``test_mae`` (singles' held-out MAE).
    """
    from .preprocess import dense, split_indices
    from .bilinear import predict

    labels = _labels(adata.obs, perturbation_key)
    control = str(control_value)
    sizes = labels.value_counts()
    keep = labels.map(sizes).to_numpy() >= min_cells
    if not keep.all():
        adata, labels = adata[keep], labels[keep]
    singles, combos, skipped = _parse_groups(labels, control, sep)
    X = dense(adata.X)
    lab = labels.to_numpy()
    is_single = np.isin(lab, singles + [control])
    idx_single = np.flatnonzero(is_single)
    Y = dose_targets(adata.obs.iloc[idx_single], perturbation_key, None, control)
    Y = Y[singles].to_numpy()
    split = split_indices(lab[idx_single], seed=seed)
    if scale:
        train = idx_single[split["train"]]
        _, mean, std = standardize(X, ref=train, center=train[lab[train] == control])
        X = ((X - mean) / std).astype(np.float32)
    model, history = fit_regressor(X[idx_single], Y, split, hidden=hidden, epochs=epochs, lr=lr,
                                   weight_decay=weight_decay, dropout=dropout, batch_size=batch_size,
                                   loss=loss, bias=bias, device=device, seed=seed, progress=progress)
    held = idx_single[split["test"]]
    out_held = predict(model, X[held])
    test_mae = float(np.abs(out_held - Y[split["test"]]).mean())
    means, expr = {}, {}
    for g in singles + [control]:
        sel = lab[held] == g
        means[g] = out_held[sel].mean(0)
        expr[g] = X[idx_single[lab[idx_single] == g]].mean(0)
    rng = np.random.default_rng(seed)
    rows = {}
    shifts = np.stack([expr[p] - expr[control] for p in singles])
    genes = np.argsort(-np.abs(shifts).max(0))[:n_expression_genes]
    col = {s: j for j, s in enumerate(singles)}
    for c in combos:
        parts = [p for p in c.split(sep) if p != control]
        cells = np.flatnonzero(lab == c)
        out_c = predict(model, X[cells])
        means[c] = out_c.mean(0)
        base = means[control]
        y_add = sum(means[p] for p in parts) - (len(parts) - 1) * base
        denom = np.linalg.norm(y_add - base)
        err = np.linalg.norm(means[c] - y_add) / denom
        boot = [np.linalg.norm(out_c[rng.integers(0, len(cells), len(cells))].mean(0) - y_add) / denom
                for _ in range(n_boot)]
        d_add = sum(expr[p] - expr[control] for p in parts)
        d_obs = X[cells].mean(0) - expr[control]
        truth = np.zeros(len(singles))
        truth[[col[p] for p in parts]] = 1.0
        rows[c] = {"n_cells": len(cells), "additive_error": err,
                   "ci_low": np.quantile(boot, 0.025) if n_boot else np.nan,
                   "ci_high": np.quantile(boot, 0.975) if n_boot else np.nan,
                   "expression_additive_error": (np.linalg.norm((d_obs - d_add)[genes])
                                                 / np.linalg.norm(d_add[genes])),
                   "mae_vs_additive": np.abs(out_c - y_add).mean(),
                   "mae_vs_truth": np.abs(out_c - truth).mean(),
                   "additive_mae_vs_truth": np.abs(y_add - truth).mean()}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "combination"
    group_means = pd.DataFrame(means, index=singles).T
    return {"table": table, "group_means": group_means, "singles": singles, "skipped": skipped,
            "model": model, "history": history, "test_mae": test_mae}


# ------------------------------------------------------------------------------ synthetic data


def _counts(rng, log_rate: np.ndarray, size_factor: np.ndarray) -> sp.csr_matrix:
    lam = np.exp(log_rate) * size_factor[:, None]
    return sp.csr_matrix(rng.poisson(lam).astype(np.float32))


def synthetic_combinations(seed: int = 0, n_cells: int = 150, n_genes: int = 200, effect: float = 1.0,
                           genes_per_perturbation: int = 8) -> AnnData:
    """Counts with four single perturbations, one additive and one interacting combination.

    Groups (``n_cells`` each), in ``obs["perturbation"]``: ``control``, ``A``, ``B``, ``C``, ``D``,
    ``A+B`` and ``C+D``. Each single perturbation multiplies its own ``genes_per_perturbation`` genes
    by ``exp(±effect)`` (disjoint gene sets, half up, half down). ``A+B`` is additive on the log
    scale (both responses). ``C+D`` interacts: D *buffers* C, so the combination shows D's response
    and none of C's (``uns["planted_interactions"] = {"C+D": "buffering"}``). Counts are Poisson
    with a log-normal size factor; normalise + log1p before use.
    """
    rng = np.random.default_rng(seed)
    singles = ["A", "B", "C", "D"]
    if n_genes < genes_per_perturbation * len(singles) + 10:
        raise ValueError(f"n_genes={n_genes} too small for {len(singles)} disjoint programs of "
                         f"{genes_per_perturbation} genes; raise n_genes.")
    base = rng.normal(1.0, 0.8, n_genes)
    fold = np.zeros((n_genes, len(singles)))
    genes = rng.permutation(n_genes)
    for j in range(len(singles)):
        g = genes[j * genes_per_perturbation:(j + 1) * genes_per_perturbation]
        sign = np.where(np.arange(len(g)) < len(g) // 2, 1.0, -1.0)
        fold[g, j] = effect * sign
        base[g] = 1.5  # programme genes share one expression level
    design = {"control": [], "A": ["A"], "B": ["B"], "C": ["C"], "D": ["D"], "A+B": ["A", "B"], "C+D": ["D"]}
    blocks, labels = [], []
    for name, active in design.items():
        shift = sum((fold[:, singles.index(p)] for p in active), np.zeros(n_genes))
        sf = np.exp(rng.normal(0, 0.2, n_cells))
        blocks.append(_counts(rng, base[None, :] + shift[None, :], sf))
        labels += [name] * n_cells
    X = sp.vstack(blocks).tocsr()
    obs = pd.DataFrame({"perturbation": pd.Categorical(labels, categories=list(design))},
                       index=[f"cell{i:05d}" for i in range(len(labels))])
    obs["nperts"] = [0 if lab == "control" else lab.count("+") + 1 for lab in labels]
    var = pd.DataFrame(index=[f"G{i:03d}" for i in range(n_genes)])
    adata = AnnData(X, obs=obs, var=var)
    adata.varm["planted_log_fold"] = fold.astype(np.float32)
    adata.uns["planted_perturbations"] = singles
    adata.uns["planted_interactions"] = {"A+B": "additive", "C+D": "buffering"}
    return adata


def sciplex2_like(n_cells: int = 600, seed: int = 0, n_genes: int = 200, genes_per_drug: int = 10,
                  effect: float = 1.2) -> AnnData:
    """A small AnnData shaped like pertpy's ``srivatsan_2020_sciplex2()`` (scPerturb conventions).

    obs columns as in scPerturb's harmonised drug files (the file pertpy downloads):
    ``perturbation`` (``"control"`` or one of :data:`SCIPLEX2_DRUGS`), ``dose_value`` (float, nM;
    0 for controls), ``dose_unit`` (``"nM"``), ``perturbation_type`` (``"drug"``), ``time`` /
    ``time_unit`` (24, ``"h"``), ``cell_line`` (``"A549"``), ``celltype``, ``disease``, ``cancer``,
    ``tissue_type``, ``organism``, ``nperts``, ``ncounts``, ``ngenes``. Integer counts in ``X``.

    Sources for the names: pertpy 1.0.3 ``srivatsan_2020_sciplex2()`` only reads
    ``settings.datasetdir / "srivatsan_2020_sciplex2.h5ad"`` (scPerturb's file); pertpy's own
    example ``PseudobulkSpace().dose_response(srivatsan_2020_sciplex2(), dose_col="dose_value")``
    uses ``target_col="perturbation"`` and ``reference_key="control"``; the remaining columns are
    scPerturb's harmonised obs fields. The exact drug label strings were not checked against the
    real file (no network here); nothing in the pipeline depends on them.

    Planted truth: drug ``d`` multiplies its own ``genes_per_drug`` genes (disjoint, all up) by
    ``exp(effect · s_d · log10(1 + dose) / 4)``: the log fold change grows linearly in log dose.
    ``s_d`` is 1 except dexamethasone (0.3, weak, as in the blog). ``varm["planted_log_fold"]`` is the
    log fold change at 10 µM. About a fifth of the cells have small libraries (for ``min_counts``).
    """
    rng = np.random.default_rng(seed)
    n_groups = 1 + len(SCIPLEX2_DRUGS) * len(SCIPLEX2_DOSES_NM)
    if n_cells < 2 * n_groups:
        raise ValueError(f"n_cells={n_cells}: need at least {2 * n_groups} (two per drug-dose group and controls).")
    if n_genes < genes_per_drug * len(SCIPLEX2_DRUGS) + 10:
        raise ValueError(f"n_genes={n_genes} too small for {len(SCIPLEX2_DRUGS)} programs of {genes_per_drug}.")
    strength = {"BMS345541": 1.0, "dexamethasone": 0.3, "nutlin3a": 1.0, "SAHA": 1.0}
    base = rng.normal(0.5, 1.0, n_genes)
    fold = np.zeros((n_genes, len(SCIPLEX2_DRUGS)))
    order = rng.permutation(n_genes)
    for j, d in enumerate(SCIPLEX2_DRUGS):
        g = order[j * genes_per_drug:(j + 1) * genes_per_drug]
        fold[g, j] = effect * strength[d]
        base[g] = 1.5  # programme genes share one expression level: equal weights are the truth
    group = rng.integers(0, n_groups, n_cells)
    group[:n_groups] = np.arange(n_groups)  # every group present
    pert = np.array(["control"] + [d for d in SCIPLEX2_DRUGS for _ in SCIPLEX2_DOSES_NM])[group]
    dose = np.array([0.0] + [x for _ in SCIPLEX2_DRUGS for x in SCIPLEX2_DOSES_NM])[group]
    log_rate = np.tile(base, (n_cells, 1))
    for j, d in enumerate(SCIPLEX2_DRUGS):
        sel = pert == d
        log_rate[sel] += fold[:, j][None, :] * (log_dose(dose[sel]) / 4.0)[:, None]
    size = np.exp(rng.normal(np.log(30.0), 0.3, n_cells))
    size[rng.random(n_cells) < 0.2] /= 8.0  # low-count cells, as in sci-Plex2
    X = _counts(rng, log_rate, size)
    obs = pd.DataFrame({
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
    }, index=[f"sciplex2_{i:06d}" for i in range(n_cells)])
    for c in ("dose_unit", "perturbation_type", "time_unit", "cell_line", "celltype", "disease",
              "tissue_type", "organism"):
        obs[c] = obs[c].astype("category")
    var = pd.DataFrame(index=[f"GENE{i:04d}" for i in range(n_genes)])
    adata = AnnData(X, obs=obs, var=var)
    adata.varm["planted_log_fold"] = fold.astype(np.float32)
    adata.uns["planted_perturbations"] = list(SCIPLEX2_DRUGS)
    return adata


# ---------------------------------------------------------------------- real combinatorial data


def load_norman_2019(data_dir=None, max_cells: int | None = 20000, seed: int = 0) -> AnnData:
    """Norman et al. 2019 (CRISPRa singles and pairs) through ``pertpy.data.norman_2019()``.

    A local ``norman_2019.h5ad`` in the data directory is read directly; otherwise pertpy downloads
    it (network needed) into the book's cache. ``max_cells`` subsamples for speed. Columns follow
    :data:`COLUMN_MAPS` ``["norman_2019"]`` (``perturbation_name``, controls ``"control"``, pairs ``"A+B"``).
    """
    from anndata import read_h5ad

    from .data import cache_dir
    from .data import data_dir as _data_dir

    folder = _data_dir(data_dir)
    local = folder / "norman_2019.h5ad" if folder is not None else None
    if local is not None and local.is_file():
        adata = read_h5ad(local)
    else:
        try:
            import pertpy as pt

            pt.settings.datasetdir = cache_dir()
            adata = pt.data.norman_2019()
        except Exception as err:  # network errors come in many types
            raise FileNotFoundError(f"Could not load norman_2019 ({type(err).__name__}: {err}). Offline? Put "
                                    "'norman_2019.h5ad' (pertpy's file) in the data directory.") from err
    if max_cells is not None and adata.n_obs > max_cells:
        keep = np.sort(np.random.default_rng(seed).choice(adata.n_obs, max_cells, replace=False))
        adata = adata[keep].copy()
    return adata
