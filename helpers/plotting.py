"""Figures the chapters share (matplotlib + seaborn). Each function returns its matplotlib Figure.

Call :func:`set_theme` once at the top of a chapter; importing this module changes no global
matplotlib or seaborn setting.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns


def set_theme() -> None:
    """The book's figure style (seaborn ``notebook`` context, ``ticks`` style)."""
    sns.set_theme(context="notebook", style="ticks")


def _ax(ax, figsize=(4.5, 4)):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    return ax.figure, ax


def umap(
    adata,
    color,
    ax=None,
    basis: str = "X_umap",
    title: str | None = None,
    s: float = 6,
    cmap="viridis",
):
    """Embedding scatter coloured by an obs column (categorical legend or continuous colour bar)."""
    fig, ax = _ax(ax)
    xy = np.asarray(adata.obsm[basis])[:, :2]
    values = (
        adata.obs[color]
        if isinstance(color, str) and color in adata.obs
        else pd.Series(np.asarray(color))
    )
    if values.dtype.name in ("category", "object", "bool"):
        cats = pd.Categorical(values)
        palette = sns.color_palette(
            "tab20" if len(cats.categories) > 10 else "tab10", len(cats.categories)
        )
        for i, c in enumerate(cats.categories):
            m = np.asarray(cats == c)
            ax.scatter(
                xy[m, 0],
                xy[m, 1],
                s=s,
                color=palette[i],
                label=str(c),
                linewidths=0,
                rasterized=True,
            )
        ax.legend(
            markerscale=2.5,
            fontsize=7,
            frameon=False,
            loc="center left",
            bbox_to_anchor=(1, 0.5),
        )
    else:
        sc_ = ax.scatter(
            xy[:, 0],
            xy[:, 1],
            c=np.asarray(values, float),
            s=s,
            cmap=cmap,
            linewidths=0,
            rasterized=True,
        )
        fig.colorbar(sc_, ax=ax, shrink=0.7)
    ax.set(
        xticks=[],
        yticks=[],
        xlabel=f"{basis.removeprefix('X_').upper()} 1",
        ylabel=f"{basis.removeprefix('X_').upper()} 2",
        title=title or (color if isinstance(color, str) else ""),
    )
    sns.despine(ax=ax)
    return fig


def training_curves(history: pd.DataFrame, metrics=("loss", "accuracy")):
    """Train vs validation curves per epoch for each metric present in ``history``.

    With early stopping (``history.attrs["early_stopping"]``) a dotted line marks the
    epoch whose weights the model kept.
    """
    metrics = [m for m in metrics if f"train_{m}" in history]
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(4.2 * len(metrics), 3.2), squeeze=False
    )
    best = history.attrs.get("best_epoch")
    best = best if history.attrs.get("early_stopping") else None
    for ax, m in zip(axes[0], metrics):
        ax.plot(history["epoch"], history[f"train_{m}"], label="train")
        ax.plot(history["epoch"], history[f"val_{m}"], label="validation")
        if best is not None:
            ax.axvline(best, color="0.5", ls=":", lw=1, label=f"kept (epoch {best})")
        ax.set(xlabel="epoch", ylabel=m)
        ax.legend(frameon=False)
        sns.despine(ax=ax)
    fig.tight_layout()
    return fig


def confusion(y_true, y_pred, labels, ax=None, normalize: bool = True, title: str = ""):
    """Confusion matrix heatmap, rows = true class (normalised to 1 per row by default)."""
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(y_true, y_pred, labels=range(len(labels)))
    if normalize:
        cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = _ax(ax, (5.5, 4.8))
    sns.heatmap(
        pd.DataFrame(cm, index=labels, columns=labels),
        annot=True,
        fmt=".2f" if normalize else "d",
        cmap="Blues",
        cbar=False,
        ax=ax,
        annot_kws={"fontsize": 7},
    )
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    return fig


def eigen_spectrum(eigvals, ax=None, n: int = 20, title: str = ""):
    """Leading eigenvalues (sorted by |λ|), signed, as a stem plot."""
    fig, ax = _ax(ax, (4, 3))
    v = np.asarray(eigvals)[:n]
    ax.bar(np.arange(len(v)), v, color=np.where(v >= 0, "C3", "C0"))
    ax.axhline(0, color="k", lw=0.6)
    ax.set(xlabel="module (sorted by |λ|)", ylabel="eigenvalue λ", title=title)
    sns.despine(ax=ax)
    return fig


def module_distributions(
    scores: np.ndarray, labels, highlight=None, n_modules: int = 3, title: str = ""
):
    """Histogram of module scores per label, one panel per module (highlighted label drawn on top)."""
    labels = pd.Categorical(labels)
    fig, axes = plt.subplots(
        1, n_modules, figsize=(3.6 * n_modules, 2.9), squeeze=False
    )
    palette = dict(
        zip(labels.categories, sns.color_palette("tab10", len(labels.categories)))
    )
    for j, ax in enumerate(axes[0]):
        df = pd.DataFrame({"score": scores[:, j], "label": labels})
        for c in labels.categories:
            sub = df.loc[df.label == c, "score"]
            if len(sub):
                ax.hist(
                    sub,
                    bins=40,
                    histtype="stepfilled" if c == highlight else "step",
                    alpha=0.6 if c == highlight else 1,
                    color=palette[c],
                    label=str(c),
                    density=True,
                    lw=1.2,
                    zorder=3 if c == highlight else 2,
                )
        ax.set(xlabel=f"module {j} score", ylabel="density" if j == 0 else "")
        sns.despine(ax=ax)
    axes[0][-1].legend(
        fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1, 0.5)
    )
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def score_vs_target(
    scores,
    target,
    labels,
    ax=None,
    xlabel: str = "target",
    ylabel: str = "module score",
    title: str = "",
    s: float = 5,
):
    """Scatter of a module score (or prediction) against a continuous target, coloured by label."""
    fig, ax = _ax(ax, (4.2, 3.6))
    sns.scatterplot(
        x=np.asarray(target),
        y=np.asarray(scores),
        hue=pd.Categorical(labels),
        s=s,
        linewidth=0,
        ax=ax,
        palette="tab10",
        rasterized=True,
    )
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(
        fontsize=6,
        frameon=False,
        markerscale=2,
        loc="center left",
        bbox_to_anchor=(1, 0.5),
    )
    sns.despine(ax=ax)
    return fig


def per_class_bars(
    values: pd.DataFrame, ax=None, ylabel: str = "accuracy", title: str = ""
):
    """Grouped bars: rows = classes, columns = models (e.g. bilinear vs baseline)."""
    fig, ax = _ax(ax, (6, 3.2))
    values.plot.bar(ax=ax, width=0.8)
    ax.set(ylabel=ylabel, title=title, xlabel="")
    ax.legend(frameon=False, fontsize=8)
    plt.setp(ax.get_xticklabels(), rotation=35, ha="right")
    sns.despine(ax=ax)
    fig.tight_layout()
    return fig


def top_genes_table(loadings, genes, n: int = 10) -> pd.DataFrame:
    """The ``n`` most positive and most negative genes of a module with their loadings."""
    s = pd.Series(np.asarray(loadings, float), index=np.asarray(genes))
    pos, neg = s.sort_values(ascending=False).head(n), s.sort_values().head(n)
    return pd.DataFrame(
        {
            "positive pole": pos.index,
            "loading +": pos.values.round(3),
            "negative pole": neg.index,
            "loading −": neg.values.round(3),
        }
    )


def concept_status_bars(
    summary: pd.DataFrame, ax=None, title: str = "concepts by metadata"
):
    """Stacked bars of concept statuses per label key (paper Figure 2.B); ``helpers.concepts.summary``."""
    fig, ax = _ax(ax, (5.5, 3.2))
    cols = ["specific", "not specific", "not enough data"]
    share = summary[cols].div(summary[cols].sum(1), axis=0)
    share.plot.barh(
        stacked=True, ax=ax, color=["#3b7dd8", "#c9c9c9", "#f0b85a"], width=0.7
    )
    ax.set(xlabel="share of concepts", ylabel="", title=title, xlim=(0, 1))
    ax.invert_yaxis()
    ax.legend(frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1, 0.5))
    sns.despine(ax=ax)
    fig.tight_layout()
    return fig


def deletion_curves(curves: pd.DataFrame, ax=None, title: str = "deletion curves"):
    """Mean ± std over units of relative activation vs genes swapped (paper Figure 8).

    ``curves``: long table with columns ``unit``, ``n_genes``, ``attribution``, ``deg``.
    """
    fig, ax = _ax(ax, (4.5, 3.4))
    for col, color, label in (
        ("attribution", "#3b7dd8", "attribution order"),
        ("deg", "#d8603b", "DEG |log fold change| order"),
    ):
        g = curves.groupby("n_genes")[col]
        m, s = g.mean(), g.std().fillna(0)
        ax.plot(m.index, m.values, color=color, label=label)
        ax.fill_between(m.index, m - s, m + s, color=color, alpha=0.2, lw=0)
    ax.set(
        xlabel="genes swapped to the counterfactual",
        ylabel="activation / prototype activation",
        title=title,
    )
    ax.legend(frameon=False, fontsize=8)
    sns.despine(ax=ax)
    fig.tight_layout()
    return fig


def dose_modules(summary: pd.DataFrame, ax=None, title: str = ""):
    """Module score mean ± std by dose, one line per module (``helpers.perturbation.dose_module_summary``)."""
    fig, ax = _ax(ax, (4.2, 3.2))
    doses = np.sort(summary["dose"].unique())
    pos = {
        d: i for i, d in enumerate(doses)
    }  # doses are categorical steps (0, 10, 100, ... nM)
    for m, sub in summary.groupby("module"):
        sub = sub.sort_values("dose")
        x = np.array([pos[d] for d in sub["dose"]]) + 0.08 * (m - 1)
        ax.errorbar(
            x,
            sub["mean"],
            yerr=sub["std"],
            marker="o",
            ms=4,
            capsize=3,
            lw=1.2,
            label=f"module {m}",
        )
    ax.set_xticks(range(len(doses)), [f"{d:g}" for d in doses])
    ax.set(xlabel="dose", ylabel="module score (mean ± std)", title=title)
    ax.legend(frameon=False, fontsize=7)
    sns.despine(ax=ax)
    return fig


def composition_bars(table: pd.DataFrame, ax=None, title: str = "composition"):
    """Relative additive error per combination (model outputs, 95% bootstrap bars) beside the
    model-free expression-space ratio (``helpers.perturbation.composition_test`` table)."""
    fig, ax = _ax(ax, (4.6, 3.2))
    x = np.arange(len(table))
    err = np.vstack(
        [
            table["additive_error"] - table["ci_low"],
            table["ci_high"] - table["additive_error"],
        ]
    )
    ax.bar(
        x - 0.2,
        table["additive_error"],
        0.4,
        yerr=err,
        capsize=3,
        label="model outputs",
        color="C0",
    )
    ax.bar(
        x + 0.2,
        table["expression_additive_error"],
        0.4,
        label="expression (no model)",
        color="C7",
    )
    ax.set_xticks(x, table.index)
    ax.set(ylabel="relative additive error", title=title)
    ax.legend(frameon=False, fontsize=8)
    sns.despine(ax=ax)
    return fig


# ------------------------------------------------------------------ bilinear chapters' figures


def _legend_right(ax, fontsize=6):
    ax.legend(
        fontsize=fontsize, frameon=False, loc="center left", bbox_to_anchor=(1, 0.5)
    )


def umap_panels(adata, panels: dict, cmap="viridis", panel_width: float = 4.2):
    """One UMAP per ``{title: color}`` entry (an obs column or per-cell values), side by
    side."""
    fig, axes = plt.subplots(
        1, len(panels), figsize=(panel_width * len(panels), 3.6), squeeze=False
    )
    for ax, (title, color) in zip(axes[0], panels.items()):
        umap(adata, color, ax=ax, title=title, cmap=cmap)
    fig.tight_layout()
    return fig


def confusion_pair(y_true, preds: dict, labels):
    """Confusion matrices of several predictions (``{title: predicted classes}``) side
    by side."""
    fig, axes = plt.subplots(
        1, len(preds), figsize=(6 * len(preds), 4.8), squeeze=False
    )
    for ax, (title, pred) in zip(axes[0], preds.items()):
        confusion(y_true, pred, labels, ax=ax, title=title)
    fig.tight_layout()
    return fig


def module_figure(
    eigvals, scores, labels, highlight, n_modules: int = 3, name: str = ""
):
    """A class's eigenvalue spectrum, then one histogram panel of module scores per
    module.

    Every label's cells are drawn as an outline and ``highlight``'s filled, so the panel
    shows whether the module separates that class from the rest.
    """
    labels = np.asarray(labels)
    fig, axes = plt.subplots(1, 1 + n_modules, figsize=(3.6 * (1 + n_modules), 2.9))
    eigen_spectrum(eigvals, ax=axes[0], title=f"{name}: eigenvalues")
    for j, ax in enumerate(axes[1:]):
        for c in pd.unique(labels):
            own = c == highlight
            ax.hist(
                scores[labels == c, j],
                bins=40,
                density=True,
                lw=1.2,
                label=str(c),
                histtype="stepfilled" if own else "step",
                alpha=0.6 if own else 1,
            )
        ax.set(xlabel=f"module {j} score", title=f"λ = {eigvals[j]:.3g}")
    _legend_right(axes[-1])
    fig.tight_layout()
    return fig


def spectrum_line(eigvals, ax=None, title: str = "graph spectrum"):
    """Laplacian eigenvalues in order (the frequencies' spectrum)."""
    fig, ax = _ax(ax, (4, 3))
    ax.plot(np.arange(len(eigvals)), eigvals, "o-")
    ax.set(xlabel="frequency", ylabel="Laplacian eigenvalue λ", title=title)
    fig.tight_layout()
    return fig


def predicted_vs_true(pred, true, labels, r2, what: str = "frequency"):
    """Prediction against truth per output column, with the diagonal and each column's
    R²."""
    pred, true = np.asarray(pred), np.asarray(true)
    n = true.shape[1]
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 3.6), squeeze=False)
    for j, ax in enumerate(axes[0]):
        score_vs_target(
            pred[:, j],
            true[:, j],
            labels,
            ax=ax,
            xlabel=f"{what} {j} (true)",
            ylabel="predicted",
            title=f"test cells, R² = {r2[j]:.2f}",
        )
        lim = [true[:, j].min(), true[:, j].max()]
        ax.plot(lim, lim, "k--", lw=0.8)
        if j < n - 1:
            ax.get_legend().remove()
    fig.tight_layout()
    return fig


def modules_vs_target(
    eigvals, scores, target, labels, modules, rho, name: str = "frequency 0"
):
    """Eigenvalue spectrum, then module score against the target for each module in
    ``modules`` (``rho[m]``: its test Spearman correlation, shown in the title)."""
    fig, axes = plt.subplots(
        1,
        1 + len(modules),
        figsize=(13, 3.3),
        gridspec_kw={"width_ratios": [1] * len(modules) + [1.3]},
    )
    eigen_spectrum(eigvals, ax=axes[0], title=f"{name}: eigenvalues of B")
    for m, ax in zip(modules, axes[1:]):
        score_vs_target(
            scores[:, m],
            target,
            labels,
            ax=ax,
            xlabel=name,
            ylabel=f"module {m} score",
            title=f"module {m}: λ = {eigvals[m]:.3g}, ρ(test) = {rho[m]:.2f}",
        )
    axes[1].get_legend().remove()
    fig.tight_layout()
    return fig


def dose_module_figure(eigvals, summary: pd.DataFrame, name: str = ""):
    """A perturbation's eigenvalue spectrum beside its modules' mean score by dose."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    eigen_spectrum(eigvals, ax=axes[0], title=f"{name}: eigenvalues")
    dose_modules(summary, ax=axes[1], title=f"{name}: modules by dose")
    fig.tight_layout()
    return fig


def composition_figure(result: dict, title: str = "synthetic: relative additive error"):
    """:func:`composition_bars` beside the mean output per group (a composition test
    result)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    composition_bars(result["table"], ax=axes[0], title=title)
    means = result["group_means"]
    im = axes[1].imshow(means.to_numpy(), cmap="RdBu_r", vmin=-1.2, vmax=1.2)
    axes[1].set(
        xticks=range(len(result["singles"])),
        xticklabels=result["singles"],
        yticks=range(len(means)),
        yticklabels=means.index,
        xlabel="output",
        title="mean output per group",
    )
    fig.colorbar(im, ax=axes[1], shrink=0.8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ concept chapters' figures
def umaps(adata, keys, title_prefix: str = ""):
    """One :func:`umap` panel per obs column, side by side."""
    keys = list(keys)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.3 * len(keys), 3.6))
    for ax, key in zip(np.atleast_1d(axes), keys):
        umap(adata, key, ax=ax, title=f"{title_prefix}{key}")
    fig.tight_layout()
    return fig


def gsea_bars(table: pd.DataFrame, title: str = "attribution-based GSEA"):
    """Stacked shares of strong / weak / no annotation per unit group
    (``helpers.concepts.gsea_summary``; paper Figure 3.A.b)."""
    fig, ax = plt.subplots(figsize=(4.5, 2.6))
    table[["strong", "weak", "none"]].plot.barh(
        stacked=True, ax=ax, color=["#2a6f3a", "#8cc78f", "#d0d0d0"]
    )
    ax.set(xlabel="share of units", xlim=(0, 1), title=title)
    ax.legend(frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    return fig


def probe_confusions(res: dict, classes, title: str = ""):
    """Confusion matrices of the concept and the neuron probe of one task, side by side
    (``helpers.probes.probe_task(...)["res"]``; paper Figure 10)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    code = {c: i for i, c in enumerate(classes)}
    for ax, unit in zip(axes, ("concepts", "neurons")):
        r = res[unit]
        y_true, y_pred = [code[c] for c in r["y_test"]], [code[c] for c in r["y_pred"]]
        confusion(
            y_true,
            y_pred,
            classes,
            ax=ax,
            title=f"{title}: {unit} (acc {r['accuracy']:.2f})",
        )
    fig.tight_layout()
    return fig


def matched_cosines(null, references: dict, across, label: str):
    """Matched cosines (``helpers.stability.match_dictionaries``) vs two chance levels.

    Left: sorted matched cosines of ``across`` (label ``label``) and of each seed-seed
    reference in ``references`` (``{name: pairs}``) over the 5–95% band of ``null``
    (``random_dictionary_null``); right: their distributions.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    ranks = np.arange(1, null.shape[1] + 1)
    lo, hi = np.percentile(null, [5, 95], axis=0)
    axes[0].fill_between(
        ranks, lo, hi, color="0.8", label="random dictionaries (5–95%)"
    )
    axes[0].plot(ranks, null.mean(0), color="0.4", lw=1)
    for name, pairs in references.items():
        axes[0].plot(ranks, pairs["cosine"], ls="--", label=f"seed vs seed, {name}")
    axes[0].plot(ranks, across["cosine"], color="k", lw=2, label=label)
    axes[0].set(
        xlabel="matched pair (sorted)", ylabel="cosine", title="matched cosines"
    )
    axes[0].legend(fontsize=7, frameon=False)
    bins = np.linspace(-0.2, 1, 31)
    axes[1].hist(null.ravel(), bins=bins, density=True, color="0.8", label="random")
    axes[1].hist(
        next(iter(references.values()))["cosine"],
        bins=bins,
        density=True,
        histtype="step",
        lw=1.5,
        label="seed vs seed",
    )
    axes[1].hist(
        across["cosine"],
        bins=bins,
        density=True,
        histtype="step",
        color="k",
        lw=2,
        label="across datasets",
    )
    axes[1].set(
        xlabel="cosine of matched atoms", ylabel="density", title="distribution"
    )
    axes[1].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def matched_correlations(curves: dict, null):
    """Sorted matched activation correlations (``helpers.stability.match_activations``),
    one line per ``{label: pairs}``, beside the shuffled-cells mean ``null``."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ranks = np.arange(1, null.shape[1] + 1)
    for i, (label, pairs) in enumerate(curves.items()):
        style = dict(color="k", lw=2) if i == 0 else dict(ls="--")
        ax.plot(ranks, pairs["correlation"], label=label, **style)
    ax.plot(ranks, null.mean(0), color="0.5", label="cells shuffled")
    ax.set(
        xlabel="matched pair (sorted)",
        ylabel="activation correlation",
        title="concepts matched by activations",
    )
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


# ------------------------------------------------------- perturbation: groups, doubles


def score_by_group(
    score,
    groups,
    condition,
    separation: pd.DataFrame | None = None,
    ylabel: str = "module 0 score",
    title: str = "",
):
    """Box plots of a score per group (x) and condition (hue); with ``separation``
    (``helpers.perturbation.separation_by_group``) each group's AUROC is written above
    its boxes. Groups are ordered by their number of cells."""
    df = pd.DataFrame(
        {
            "score": np.asarray(score, float),
            "group": np.asarray(groups).astype(str),
            "condition": np.asarray(condition).astype(str),
        }
    )
    order = df["group"].value_counts().index.tolist()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.62 * len(order)), 3.6))
    sns.boxplot(
        data=df,
        x="group",
        y="score",
        hue="condition",
        order=order,
        ax=ax,
        fliersize=1.5,
        linewidth=0.8,
    )
    if separation is not None:
        top = df["score"].max()
        for i, g in enumerate(order):
            a = separation["auroc"].get(g, np.nan)
            ax.text(
                i,
                top,
                "—" if not np.isfinite(a) else f"{a:.2f}",
                ha="center",
                va="bottom",
                fontsize=7,
            )
        ax.set_ylim(top=top + 0.1 * (top - df["score"].min()))
    ax.set(xlabel="", ylabel=ylabel, title=title)
    ax.tick_params(axis="x", rotation=45, labelsize=8)
    for t in ax.get_xticklabels():
        t.set_ha("right")
    ax.legend(frameon=False, fontsize=8, loc="lower left")
    sns.despine(ax=ax)
    fig.tight_layout()
    return fig


def composition_readout_figure(readout: dict, title: str = ""):
    """Two panels from ``helpers.perturbation.composition_readout``: each part's
    retained output on the combination (95% intervals; parts the model does not
    separate from control are marked ×), and the unexplained share of the
    combination's expression change under the additive, read-out and span
    predictions (0: exact up to sampling noise; the axis stops at -1.2 and 1.6, so
    wider intervals run off the frame)."""
    out, ex = readout["outputs"], readout["expression"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    ax = axes[0]
    labels = [f"{c}: {p}" for c, p in out.index]
    y = np.arange(len(out))
    ok = out["separated"].to_numpy(bool)
    val = out["retained"].to_numpy(float)
    xerr = np.vstack([val - out["ci_low"], out["ci_high"] - val])[:, ok]
    ax.errorbar(
        val[ok],
        y[ok],
        xerr=xerr,
        fmt="o",
        color="C0",
        capsize=3,
        label="separated part",
    )
    if (~ok).any():
        ax.plot(
            np.zeros((~ok).sum()),
            y[~ok],
            "x",
            color="C7",
            label="not separated from control",
        )
    ax.axvline(1, color="k", lw=0.6, ls="--")
    ax.axvline(0, color="k", lw=0.6)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set(
        xlabel="retained output w (1 = as in the single)",
        title="(a) outputs on the combination",
    )
    ax.legend(frameon=False, fontsize=7)
    ax = axes[1]
    x = np.arange(len(ex))
    for j, (k, name) in enumerate(
        [
            ("additive", "additive"),
            ("readout", "read-out"),
            ("span", "best re-weighting"),
        ]
    ):
        v = ex[k].to_numpy(float)
        err = np.vstack([v - ex[f"{k}_low"], ex[f"{k}_high"] - v])
        ax.bar(
            x + (j - 1) * 0.27,
            np.nan_to_num(v),
            0.27,
            yerr=np.nan_to_num(err),
            capsize=2,
            label=name,
            color=f"C{j}",
        )
    ax.axhline(0, color="k", lw=0.6)
    low, high = ax.get_ylim()
    ax.set_ylim(max(low, -1.2), min(high, 1.6))  # wide intervals are cut at the frame
    ax.set_xticks(x, ex.index, rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="unexplained share", title="(b) expression change of the combination")
    ax.legend(frameon=False, fontsize=7)
    sns.despine(fig=fig)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
