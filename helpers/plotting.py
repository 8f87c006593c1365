"""Figures the chapters share (matplotlib + seaborn). Each function returns its
matplotlib Figure.

Call :func:`set_theme` once at the top of a chapter; importing this module changes no
global matplotlib or seaborn setting.

Every figure is built to be read at page width (about 780 px): at most
:data:`MAX_COLS` panels per row (:func:`_grid`, the one home of the panel grid),
at most :data:`MAX_WIDTH` inches wide, text of at least :data:`MIN_FONT` points, and
:data:`DPI` dots per inch inline and saved. Labels get one fixed colour per dataset
(:func:`palette`, read from ``adata.uns[f"{key}_colors"]``, which
``helpers.data.load_dataset`` attaches).
"""

from __future__ import annotations

import math

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

DPI = 150  # figure.dpi and savefig.dpi: inline PNGs are rendered at the figure's dpi
# inches: with the 0.1 in padding of inline PNGs a 7.8 in figure is 1,200 px at 150 dpi,
# shown in the book's 772 px text column at 0.64 x: 9 pt text stays 9 pt on screen
MAX_WIDTH = 7.8
MIN_FONT = 9  # points, every text element
MAX_COLS = 3  # panels per row
REST = "0.45"  # the pooled "all other cells" outline of target-vs-rest histograms

_FONTS = {
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": MIN_FONT,
    "ytick.labelsize": MIN_FONT,
    "legend.fontsize": MIN_FONT,
    "legend.title_fontsize": 10,
    "figure.titlesize": 11,
    "figure.labelsize": 10,
}


def set_theme() -> None:
    """The book's figure style: seaborn ``ticks`` style, fonts of at least
    :data:`MIN_FONT` points, :data:`DPI` dots per inch for inline and saved figures
    (Jupyter's inline backend renders a PNG at the figure's own dpi), no legend
    frames."""
    sns.set_theme(
        context="notebook",
        style="ticks",
        rc={
            **_FONTS,
            "figure.dpi": DPI,
            "savefig.dpi": DPI,
            "figure.figsize": (5.0, 3.6),
            "legend.frameon": False,
        },
    )


# ------------------------------------------------------------------ layout and colours


def _capped(figsize) -> tuple[float, float]:
    """``figsize`` scaled down (aspect kept) to at most :data:`MAX_WIDTH` wide."""
    w, h = figsize
    k = min(1.0, MAX_WIDTH / w)
    return (w * k, h * k)


def _grid(n: int, ncols: int = MAX_COLS, panel=(3.2, 2.8), **kw):
    """A figure of ``n`` panels in rows of at most ``min(ncols, MAX_COLS)``, balanced
    (4 panels: 2 × 2; 5: 3 + 2), each ``panel`` inches (scaled down together when the
    row would exceed :data:`MAX_WIDTH`); constrained layout. Returns ``(fig, axes)``
    with ``axes`` a flat list of ``n`` axes (unused grid cells removed)."""
    if n < 1:
        raise ValueError(f"n={n}: a figure needs at least one panel.")
    ncols = max(1, min(ncols, MAX_COLS, n))
    nrows = math.ceil(n / ncols)
    ncols = math.ceil(n / nrows)
    figsize = _capped((panel[0] * ncols, panel[1] * nrows))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=figsize, squeeze=False, layout="constrained", **kw
    )
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.remove()
    return fig, flat[:n]


def _ax(ax, figsize=(4.5, 4)):
    if ax is None:
        _, ax = plt.subplots(figsize=_capped(figsize), layout="constrained")
    return ax.figure, ax


def palette(adata, key: str) -> dict:
    """``{label: hex colour}`` of obs column ``key``, the scanpy way.

    Reads ``adata.uns[f"{key}_colors"]`` (aligned with the column's categories), as
    attached by ``helpers.data.load_dataset`` for the dataset's label keys, so a label
    keeps its colour in every chapter. Fallback, when ``uns`` holds no colours for
    ``key`` (a column added later, e.g. leiden clusters): the same fixed rule over the
    column's sorted labels (``helpers.data.label_colors``). A colour list whose length
    differs from the number of categories is stale and raises ``ValueError``.
    """
    from .data import check_obs_key, label_colors

    check_obs_key(adata, key)
    col = adata.obs[key]
    cats = (
        list(col.cat.categories)
        if isinstance(col.dtype, pd.CategoricalDtype)
        else sorted(pd.unique(col.dropna()), key=str)
    )
    colors = adata.uns.get(f"{key}_colors")
    if colors is None:
        colors = label_colors(cats)
    elif len(colors) != len(cats):
        raise ValueError(
            f"uns[{key + '_colors'!r}] holds {len(colors)} colours for {len(cats)} "
            f"categories of obs[{key!r}]: stale. Delete it (del adata.uns"
            f"[{key + '_colors'!r}]) to use the book's fixed colours."
        )
    return {str(c): mpl.colors.to_hex(v) for c, v in zip(cats, colors)}


_uns_palette = palette  # for functions whose ``palette`` argument hides the name


def _colors(categories, palette=None) -> dict:
    """``{str(label): colour}`` for ``categories``: from ``palette`` (every label must
    be in it) or, without one, the fixed rule over the sorted labels."""
    from .data import label_colors

    cats = [str(c) for c in categories]
    if palette is None:
        return dict(zip(cats, label_colors(cats)))
    pal = {str(k): v for k, v in palette.items()}
    missing = [c for c in cats if c not in pal]
    if missing:
        raise ValueError(
            f"palette has no colour for {missing[:5]}: pass plotting.palette(adata, "
            "key) of the column these labels come from."
        )
    return {c: pal[c] for c in cats}


def _categories(labels) -> list[str]:
    """Labels' categories as strings: a categorical's order, else sorted."""
    cat = pd.Categorical(np.asarray(labels) if not hasattr(labels, "cat") else labels)
    return [str(c) for c in cat.categories]


def _legend_rows(n: int, per_col: int = 14) -> int:
    return max(1, math.ceil(n / per_col))


def _fig_legend(fig, ax, ncol: int | None = None, **kw):
    """One legend for the figure, below its panels (the handles of ``ax``)."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    return fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncol=ncol or min(len(labels), 4),
        **kw,
    )


def _subsample_index(values, max_cells: int, seed: int = 0) -> np.ndarray:
    """Positions of at most ``max_cells`` cells, stratified by ``values`` when they
    are categorical (``helpers.preprocess.subsample``'s rule)."""
    from anndata import AnnData

    from .preprocess import subsample

    v = pd.Series(np.asarray(values))
    categorical = v.dtype.name in ("category", "object", "bool")
    obs = pd.DataFrame(
        {"pos": np.arange(len(v)), "label": v.astype(str) if categorical else 0},
        index=[str(i) for i in range(len(v))],
    )
    light = AnnData(obs=obs)
    kept = subsample(
        light, max_cells, groupby="label" if categorical else None, seed=seed
    )
    return kept.obs["pos"].to_numpy()


# ------------------------------------------------------------------ single panels


def umap(
    adata,
    color,
    ax=None,
    basis: str = "X_umap",
    title: str | None = None,
    s: float = 6,
    cmap="viridis",
    palette: dict | None = None,
    max_cells: int | None = None,
    seed: int = 0,
    legend: bool = True,
):
    """Embedding scatter coloured by an obs column (categorical legend or continuous
    colour bar).

    Categorical colours: ``palette`` (``{label: colour}``), else the column's fixed
    colours (:func:`palette`, from ``adata.uns``), else the fixed rule. ``max_cells``:
    draw a subsample of at most that many cells, stratified by the colour label (seeded
    by ``seed``); the title then says how many cells are shown. None: every cell.
    """
    fig, ax = _ax(ax, (5.2, 3.8))
    xy = np.asarray(adata.obsm[basis])[:, :2]
    values = (
        adata.obs[color]
        if isinstance(color, str) and color in adata.obs
        else pd.Series(np.asarray(color))
    )
    title = title or (color if isinstance(color, str) else "")
    if max_cells is not None and len(values) > max_cells:
        keep = _subsample_index(values, max_cells, seed=seed)
        title = f"{title} ({len(keep):,} of {len(values):,} cells)"
        xy, values = xy[keep], values.iloc[keep]
    if values.dtype.name in ("category", "object", "bool"):
        cats = pd.Categorical(values)
        if palette is None and isinstance(color, str) and color in adata.obs:
            palette = _uns_palette(adata, color)
        colors = _colors(cats.categories, palette)
        for c in cats.categories:
            m = np.asarray(cats == c)
            if not m.any():
                continue
            ax.scatter(
                xy[m, 0],
                xy[m, 1],
                s=s,
                color=colors[str(c)],
                label=str(c),
                linewidths=0,
                rasterized=True,
            )
        if legend:
            ax.legend(
                markerscale=2.5,
                loc="center left",
                bbox_to_anchor=(1, 0.5),
                ncol=_legend_rows(len(cats.categories)),
                handletextpad=0.2,
                columnspacing=0.6,
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
        fig.colorbar(sc_, ax=ax, shrink=0.8)
    name = basis.removeprefix("X_").upper()
    ax.set(xticks=[], yticks=[], xlabel=f"{name} 1", ylabel=f"{name} 2", title=title)
    sns.despine(ax=ax)
    return fig


def training_curves(history: pd.DataFrame, metrics=("loss", "accuracy")):
    """Train vs validation curves per epoch for each metric present in ``history``.

    With early stopping (``history.attrs["early_stopping"]``) a dotted line marks the
    epoch whose weights the model kept.
    """
    metrics = [m for m in metrics if f"train_{m}" in history]
    fig, axes = _grid(len(metrics), panel=(3.8, 3.0))
    best = history.attrs.get("best_epoch")
    best = best if history.attrs.get("early_stopping") else None
    for ax, m in zip(axes, metrics):
        ax.plot(history["epoch"], history[f"train_{m}"], label="train")
        ax.plot(history["epoch"], history[f"val_{m}"], label="validation")
        if best is not None:
            ax.axvline(best, color="0.5", ls=":", lw=1, label=f"kept (epoch {best})")
        ax.set(xlabel="epoch", ylabel=m)
        sns.despine(ax=ax)
    axes[0].legend()
    return fig


def confusion(y_true, y_pred, labels, ax=None, normalize: bool = True, title: str = ""):
    """Confusion matrix, rows = true class, square cells.

    ``normalize``: each cell shows the per cent of its true class (row), else the count;
    empty cells are left blank (a share that rounds to 0 shows ``<1``).
    """
    from sklearn.metrics import confusion_matrix

    labels = [str(c) for c in labels]
    n = len(labels)
    counts = confusion_matrix(y_true, y_pred, labels=range(n))
    shown = 100 * counts / np.maximum(counts.sum(1, keepdims=True), 1)
    shown = shown if normalize else counts
    side = float(np.clip(1.6 + 0.32 * n, 3.6, 6.5))
    fig, ax = _ax(ax, (side + 0.4, side))
    vmax = 100 if normalize else max(int(counts.max()), 1)
    ax.imshow(shown, cmap="Blues", vmin=0, vmax=vmax)
    for i, j in zip(*np.nonzero(counts)):
        v = shown[i, j]
        text = (f"{v:.0f}" if v >= 0.5 else "<1") if normalize else f"{int(v)}"
        ax.text(
            j,
            i,
            text,
            ha="center",
            va="center",
            fontsize=MIN_FONT,
            color="white" if v > 0.6 * vmax else "0.1",
        )
    ax.set_xticks(range(n), labels, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), labels)
    ax.set_aspect("equal")
    ax.tick_params(length=0)
    for side_ in ax.spines.values():
        side_.set_visible(False)
    unit = "% of true class" if normalize else "cells"
    ax.set(
        xlabel="predicted",
        ylabel="true",
        title=f"{title}\n({unit})" if title else f"({unit})",
    )
    return fig


def eigen_spectrum(eigvals, ax=None, n: int = 20, title: str = ""):
    """Leading eigenvalues (sorted by |λ|), signed, as bars (red > 0, blue < 0)."""
    fig, ax = _ax(ax, (4, 3))
    v = np.asarray(eigvals)[:n]
    ax.bar(np.arange(len(v)), v, color=np.where(v >= 0, "C3", "C0"))
    ax.axhline(0, color="k", lw=0.6)
    ax.set(xlabel="module (sorted by |λ|)", ylabel="eigenvalue λ", title=title)
    sns.despine(ax=ax)
    return fig


def _target_vs_rest(ax, values, labels, highlight, color, bins: int = 40):
    """Density histograms of ``values``: the ``highlight`` cells filled in ``color``,
    all other cells pooled as a grey outline."""
    values, labels = np.asarray(values, float), np.asarray(labels).astype(str)
    own = labels == str(highlight)
    edges = np.histogram_bin_edges(values, bins)
    if (~own).any():
        ax.hist(
            values[~own],
            edges,
            density=True,
            histtype="step",
            color=REST,
            lw=1.4,
            label=f"all other cells ({(~own).sum():,})",
        )
    if own.any():
        ax.hist(
            values[own],
            edges,
            density=True,
            histtype="stepfilled",
            alpha=0.7,
            color=color,
            ec=color,
            lw=1.2,
            label=f"{highlight} ({own.sum():,})",
        )


def _label_histograms(ax, values, labels, colors, bins: int = 40):
    """One outline histogram per label (density), in the labels' colours."""
    values, labels = np.asarray(values, float), np.asarray(labels).astype(str)
    edges = np.histogram_bin_edges(values, bins)
    for c, col in colors.items():
        if (labels == c).any():
            ax.hist(
                values[labels == c],
                edges,
                density=True,
                histtype="step",
                color=col,
                lw=1.3,
                label=c,
            )


def module_distributions(
    scores: np.ndarray,
    labels,
    highlight=None,
    n_modules: int = 3,
    title: str = "",
    palette: dict | None = None,
):
    """Module score distributions, one panel per module: the ``highlight`` class
    (filled, its palette colour) against all other cells pooled (grey outline).

    Without ``highlight`` every label is drawn as an outline in its colour.
    """
    colors = _colors(_categories(labels), palette)
    fig, axes = _grid(n_modules, panel=(3.0, 2.9))
    for j, ax in enumerate(axes):
        if highlight is None:
            _label_histograms(ax, scores[:, j], labels, colors)
        else:
            _target_vs_rest(
                ax, scores[:, j], labels, highlight, colors.get(str(highlight), "C3")
            )
        ax.set(xlabel=f"module {j} score", ylabel="density" if j % 3 == 0 else "")
        sns.despine(ax=ax)
    _fig_legend(fig, axes[0])
    if title:
        fig.suptitle(title)
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
    palette: dict | None = None,
    legend: bool = True,
):
    """Scatter of a module score (or prediction) against a continuous target, coloured
    by label (``palette``: ``{label: colour}``; default the fixed rule)."""
    fig, ax = _ax(ax, (4.6, 3.6))
    labels = np.asarray(labels).astype(str)
    x, y = np.asarray(target), np.asarray(scores)
    colors = _colors(_categories(labels), palette)
    for c, col in colors.items():
        m = labels == c
        ax.scatter(x[m], y[m], s=s, color=col, label=c, linewidths=0, rasterized=True)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if legend:
        ax.legend(
            markerscale=2.5,
            loc="center left",
            bbox_to_anchor=(1, 0.5),
            ncol=_legend_rows(len(colors)),
        )
    sns.despine(ax=ax)
    return fig


def per_class_bars(
    values: pd.DataFrame, ax=None, ylabel: str = "accuracy", title: str = ""
):
    """Horizontal grouped bars, rows = classes, columns = models (e.g. bilinear vs
    baseline), each value written at its bar's end; ``ylabel`` names the value axis.
    Readable with a single class (one pair of labelled bars)."""
    n_rows, n_cols = values.shape
    fig, ax = _ax(ax, (6.0, 1.2 + 0.3 * n_rows * n_cols))
    height = 0.8 / n_cols
    y = np.arange(n_rows)
    top = np.nanmax(np.abs(values.to_numpy(float))) if values.size else 1.0
    for k, col in enumerate(values.columns):
        v = values[col].to_numpy(float)
        pos = y - 0.4 + height * (k + 0.5)
        ax.barh(pos, v, height, label=str(col), color=f"C{k}")
        for p, x in zip(pos, v):
            if np.isfinite(x):
                ax.text(x + 0.01 * top, p, f"{x:.3g}", va="center", fontsize=MIN_FONT)
    ax.set_yticks(y, [str(i) for i in values.index])
    ax.invert_yaxis()
    ax.set_xlim(0, 1.15 * top if top > 0 else 1)
    ax.set(xlabel=ylabel, title=title, ylabel="")
    ax.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.45 if n_rows < 3 else -0.2),
        ncol=n_cols,
    )
    sns.despine(ax=ax)
    return fig


def top_genes_table(loadings, genes, n: int = 10) -> pd.DataFrame:
    """The ``n`` most positive and most negative genes of a module with their
    loadings."""
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
    """Stacked bars of concept statuses per label key (paper Figure 2.B);
    ``helpers.concepts.summary``."""
    fig, ax = _ax(ax, (5.8, 1.6 + 0.35 * len(summary)))
    cols = ["specific", "not specific", "not enough data"]
    share = summary[cols].div(summary[cols].sum(1), axis=0)
    share.plot.barh(
        stacked=True, ax=ax, color=["#3b7dd8", "#c9c9c9", "#f0b85a"], width=0.7
    )
    ax.set(xlabel="share of concepts", ylabel="", title=title, xlim=(0, 1))
    ax.invert_yaxis()
    ax.legend(loc="center left", bbox_to_anchor=(1, 0.5))
    sns.despine(ax=ax)
    return fig


def deletion_curves(curves: pd.DataFrame, ax=None, title: str = "deletion curves"):
    """Mean ± std over units of relative activation vs genes swapped (paper Figure 8).

    ``curves``: long table with columns ``unit``, ``n_genes``, ``attribution``, ``deg``.
    """
    fig, ax = _ax(ax, (5.0, 3.6))
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
    ax.legend()
    sns.despine(ax=ax)
    return fig


def dose_modules(summary: pd.DataFrame, ax=None, title: str = ""):
    """Module score mean ± std by dose, one line per module
    (``helpers.perturbation.dose_module_summary``)."""
    fig, ax = _ax(ax, (4.2, 3.2))
    doses = np.sort(summary["dose"].unique())
    pos = {d: i for i, d in enumerate(doses)}  # categorical steps (0, 10, 100 nM)
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
    ax.legend()
    sns.despine(ax=ax)
    return fig


def composition_bars(table: pd.DataFrame, ax=None, title: str = "composition"):
    """Relative additive error per combination (model outputs, 95% bootstrap bars)
    beside the model-free expression-space ratio
    (``helpers.perturbation.composition_test`` table)."""
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
    ax.set_xticks(x, table.index, rotation=30, ha="right", rotation_mode="anchor")
    ax.set(ylabel="relative additive error", title=title)
    ax.legend()
    sns.despine(ax=ax)
    return fig


# ----------------------------------------------------------- bilinear chapters' figures


def _is_categorical(adata, color) -> bool:
    values = (
        adata.obs[color] if isinstance(color, str) and color in adata.obs else color
    )
    return pd.Series(np.asarray(values)).dtype.name in ("category", "object", "bool")


def umap_panels(adata, panels: dict, cmap="viridis", panel_width: float = 4.2):
    """One UMAP per ``{title: color}`` entry (an obs column or per-cell values), in
    rows of at most three (two when a panel carries a categorical legend)."""
    legend = any(_is_categorical(adata, c) for c in panels.values())
    fig, axes = _grid(
        len(panels), ncols=2 if legend else MAX_COLS, panel=(panel_width, 3.4)
    )
    for ax, (title, color) in zip(axes, panels.items()):
        umap(adata, color, ax=ax, title=title, cmap=cmap)
    return fig


def _confusions(panels: list, labels, title: str = ""):
    """Square confusion matrices (``[(y_true, y_pred, title), ...]``), two per row."""
    n = len(labels)
    side = float(np.clip(1.6 + 0.3 * n, 3.4, 4.0))
    fig, axes = _grid(len(panels), ncols=2, panel=(side + 0.4, side + 0.4))
    for ax, (y_true, y_pred, t) in zip(axes, panels):
        confusion(y_true, y_pred, labels, ax=ax, title=t)
    if title:
        fig.suptitle(title)
    return fig


def confusion_pair(y_true, preds: dict, labels):
    """Confusion matrices of several predictions (``{title: predicted classes}``),
    square, two per row."""
    return _confusions([(y_true, p, t) for t, p in preds.items()], labels)


def module_figure(
    eigvals,
    scores,
    labels,
    highlight,
    n_modules: int = 3,
    name: str = "",
    palette: dict | None = None,
):
    """A class's eigenvalue spectrum, then one panel of module scores per module
    (spectrum + 3 modules: a 2 × 2 grid).

    Each module panel draws ``highlight``'s cells filled in its palette colour
    against all other cells pooled (grey outline), so it shows whether the module
    separates that class from the rest.
    """
    colors = _colors(_categories(labels), palette)
    fig, axes = _grid(1 + n_modules, panel=(3.6, 2.7))
    eigen_spectrum(eigvals, ax=axes[0], title=f"{name}: eigenvalues")
    for j, ax in enumerate(axes[1:]):
        _target_vs_rest(
            ax, scores[:, j], labels, highlight, colors.get(str(highlight), "C3")
        )
        ax.set(
            xlabel=f"module {j} score",
            ylabel="density",
            title=f"module {j}: λ = {eigvals[j]:.3g}",
        )
        sns.despine(ax=ax)
    _fig_legend(fig, axes[1], ncol=2)
    return fig


def spectrum_line(eigvals, ax=None, title: str = "graph spectrum"):
    """Laplacian eigenvalues in order (the frequencies' spectrum)."""
    fig, ax = _ax(ax, (4, 3))
    ax.plot(np.arange(len(eigvals)), eigvals, "o-")
    ax.set(xlabel="frequency", ylabel="Laplacian eigenvalue λ", title=title)
    return fig


def predicted_vs_true(
    pred, true, labels, r2, what: str = "frequency", palette: dict | None = None
):
    """Prediction against truth per output column, with the diagonal and each column's
    R²; three panels per row, one label legend below."""
    pred, true = np.asarray(pred), np.asarray(true)
    n = true.shape[1]
    fig, axes = _grid(n, panel=(2.9, 3.2))
    for j, ax in enumerate(axes):
        score_vs_target(
            pred[:, j],
            true[:, j],
            labels,
            ax=ax,
            xlabel=f"{what} {j} (true)",
            ylabel="predicted",
            title=f"test cells, R² = {r2[j]:.2f}",
            palette=palette,
            legend=False,
        )
        lim = [true[:, j].min(), true[:, j].max()]
        ax.plot(lim, lim, "k--", lw=0.8)
    _fig_legend(fig, axes[0], markerscale=2.5)
    return fig


def modules_vs_target(
    eigvals,
    scores,
    target,
    labels,
    modules,
    rho,
    name: str = "frequency 0",
    palette: dict | None = None,
):
    """Eigenvalue spectrum, then module score against the target for each module in
    ``modules`` (``rho[m]``: its test Spearman correlation, shown in the title); one
    label legend below."""
    fig, axes = _grid(1 + len(modules), panel=(2.9, 3.3))
    eigen_spectrum(eigvals, ax=axes[0], title=f"{name}:\neigenvalues of B")
    for m, ax in zip(modules, axes[1:]):
        score_vs_target(
            scores[:, m],
            target,
            labels,
            ax=ax,
            xlabel=name,
            ylabel=f"module {m} score",
            title=f"module {m}: λ = {eigvals[m]:.3g}\nρ(test) = {rho[m]:.2f}",
            palette=palette,
            legend=False,
        )
    _fig_legend(fig, axes[1], markerscale=2.5)
    return fig


def dose_module_figure(eigvals, summary: pd.DataFrame, name: str = ""):
    """A perturbation's eigenvalue spectrum beside its modules' mean score by dose."""
    fig, axes = _grid(2, panel=(4.0, 3.2))
    eigen_spectrum(eigvals, ax=axes[0], title=f"{name}: eigenvalues")
    dose_modules(summary, ax=axes[1], title=f"{name}: modules by dose")
    return fig


def composition_figure(result: dict, title: str = "synthetic: relative additive error"):
    """:func:`composition_bars` beside the mean output per group (a composition test
    result)."""
    fig, axes = _grid(2, panel=(4.0, 3.4))
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
    return fig


# ------------------------------------------------------------ concept chapters' figures
def umaps(adata, keys, title_prefix: str = ""):
    """One :func:`umap` panel per obs column (:func:`umap_panels`)."""
    return umap_panels(adata, {f"{title_prefix}{k}": k for k in keys})


def gsea_bars(table: pd.DataFrame, title: str = "attribution-based GSEA"):
    """Stacked shares of strong / weak / no annotation per unit group
    (``helpers.concepts.gsea_summary``; paper Figure 3.A.b)."""
    fig, ax = _ax(None, (5.8, 1.4 + 0.35 * len(table)))
    table[["strong", "weak", "none"]].plot.barh(
        stacked=True, ax=ax, color=["#2a6f3a", "#8cc78f", "#d0d0d0"]
    )
    ax.set(xlabel="share of units", xlim=(0, 1), title=title)
    ax.legend(loc="center left", bbox_to_anchor=(1, 0.5))
    return fig


def probe_confusions(res: dict, classes, title: str = ""):
    """Confusion matrices of the concept and the neuron probe of one task, side by
    side, square (``helpers.probes.probe_task(...)["res"]``; paper Figure 10)."""
    code = {c: i for i, c in enumerate(classes)}
    panels = [
        (
            [code[c] for c in res[unit]["y_test"]],
            [code[c] for c in res[unit]["y_pred"]],
            f"{unit} (accuracy {res[unit]['accuracy']:.2f})",
        )
        for unit in ("concepts", "neurons")
    ]
    return _confusions(panels, classes, title=title)


def matched_cosines(null, references: dict, across, label: str):
    """Matched cosines (``helpers.stability.match_dictionaries``) vs two chance levels.

    Left: sorted matched cosines of ``across`` (label ``label``) and of each seed-seed
    reference in ``references`` (``{name: pairs}``) over the 5–95% band of ``null``
    (``random_dictionary_null``); right: their distributions. Legends below each panel.
    """
    fig, axes = _grid(2, panel=(4.0, 3.6))
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
    for ax in axes:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2))
    return fig


def matched_correlations(curves: dict, null):
    """Sorted matched activation correlations (``helpers.stability.match_activations``),
    one line per ``{label: pairs}``, beside the shuffled-cells mean ``null``."""
    fig, ax = _ax(None, (5.5, 3.8))
    ranks = np.arange(1, null.shape[1] + 1)
    for i, (label, pairs) in enumerate(curves.items()):
        style = {"color": "k", "lw": 2} if i == 0 else {"ls": "--"}
        ax.plot(ranks, pairs["correlation"], label=label, **style)
    ax.plot(ranks, null.mean(0), color="0.5", label="cells shuffled")
    ax.set(
        xlabel="matched pair (sorted)",
        ylabel="activation correlation",
        title="concepts matched by activations",
    )
    ax.legend()
    return fig


# ------------------------------------------------------- perturbation: groups, doubles


def score_by_group(
    score,
    groups,
    condition,
    separation: pd.DataFrame | None = None,
    ylabel: str = "module 0 score",
    title: str = "",
    palette: dict | None = None,
):
    """Box plots of a score per group (x) and condition (hue; ``palette``:
    ``{condition: colour}``); with ``separation``
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
    fig, ax = _ax(None, (min(MAX_WIDTH, max(6.0, 0.55 * len(order))), 3.8))
    sns.boxplot(
        data=df,
        x="group",
        y="score",
        hue="condition",
        order=order,
        ax=ax,
        fliersize=1.5,
        linewidth=0.8,
        palette=_colors(_categories(df["condition"]), palette),
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
                fontsize=MIN_FONT,
            )
        ax.set_ylim(top=top + 0.12 * (top - df["score"].min()))
    ax.set(xlabel="", ylabel=ylabel, title=title)
    ax.tick_params(axis="x", rotation=45)
    for t in ax.get_xticklabels():
        t.set_ha("right")
        t.set_rotation_mode("anchor")
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1), title="condition")
    sns.despine(ax=ax)
    return fig


def composition_readout_figure(readout: dict, title: str = ""):
    """Two panels from ``helpers.perturbation.composition_readout``, one above the
    other: each part's retained output on the combination (95% intervals; parts the
    model does not separate from control are marked ×), and the unexplained share of
    the combination's expression change under the additive, read-out and span
    predictions (0: exact up to sampling noise; the axis stops at -1.2 and 1.6, so
    wider intervals run off the frame)."""
    out, ex = readout["outputs"], readout["expression"]
    top_h = 1.2 + 0.24 * len(out)
    fig, axes = plt.subplots(
        2,
        1,
        figsize=(7.0, top_h + 3.4),
        height_ratios=[top_h, 3.4],
        layout="constrained",
    )
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
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set(
        xlabel="retained output w (1 = as in the single)",
        title="(a) outputs on the combination",
    )
    ax.legend(loc="center left", bbox_to_anchor=(1, 0.5))
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
    ax.set_xticks(x, ex.index, rotation=30, ha="right", rotation_mode="anchor")
    ax.set(ylabel="unexplained share", title="(b) expression change of the combination")
    ax.legend(loc="center left", bbox_to_anchor=(1, 0.5))
    sns.despine(fig=fig)
    if title:
        fig.suptitle(title)
    return fig
