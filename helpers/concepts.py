"""Characterise and browse SAE concepts: metadata, attribution-based GSEA, explorer.

Follows Sections 3.1, 3.3, 3.4 and Figures 2.B / 3.A.b of *Discovering
interpretable biological concepts in single-cell RNA-seq foundation models*:

* :func:`characterise` - for each concept, the cells that activate it
  (activation > 0) and, per categorical obs column, the most common label, its
  share, its base rate (share among all cells), the enrichment (share / base
  rate) and a one-sided binomial p-value of the share against the base rate
  (Benjamini-Hochberg across concepts); "specific" when the share is >=
  ``specific_share`` (0.7 in the paper) *and* the adjusted p <= ``alpha`` (the
  paper uses the share alone, which counts a concept firing on random cells of
  a 77% class as specific), "not enough data" below ``min_active_cells``
  activating cells (100). :func:`summary` counts the statuses for a bar chart
  like Figure 2.B.
* :data:`PAPER_RECIPE` / :func:`recipe_table` - the paper's settings for the
  concept chapters and a table of ours against them (setting, paper, ours,
  match, why).
* :func:`gsea_annotate` - attribution-based GSEA: gseapy's prerank statistic (through
  :func:`helpers.enrichment.prerank_units`) of each unit's attribution scores; the
  best term per unit (highest NES among positively enriched terms) and the
  paper's annotation levels: strong (p <= 5e-5), weak (p <= 5e-3), none.
* :func:`explorer_html` / :func:`write_explorer` / :func:`show_explorer` - a
  self-contained, offline HTML+JS concept explorer (no CDN, no fetch; inline
  SVG and canvas): choose a concept, see its attributed genes (GO terms on
  hover), the metadata composition of its activating cells and the UMAP with
  activating cells highlighted.

This module writes nothing into AnnData objects; inputs are obs tables and
activation matrices (``helpers.sae.get_concepts(adata)`` from :mod:`helpers.sae`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import html as _html
import io
import json
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .data import to_dense
from .enrichment import prerank as _prerank
from .enrichment import prerank_units as _prerank_units
from .runtime import jsonable

__all__ = [
    "PAPER_RECIPE",
    "recipe_table",
    "bh_adjust",
    "characterise",
    "summary",
    "gsea_annotate",
    "gsea_summary",
    "composition",
    "explorer_html",
    "write_explorer",
    "show_explorer",
]

STATUSES = ("specific", "not specific", "not enough data")

#: The paper's settings for the steps the concept chapters reproduce, with where
#: each is stated. ``helpers.sae.PAPER_RECIPE`` / ``paper_settings`` hold the SAE's.
PAPER_RECIPE = {
    "specific share": (0.7, 'Section 4.2 ("at least 70%")'),
    "specificity test vs base rate": ("none", "Section 3.1 (share only)"),
    "min activating cells": (100, 'Figure 2 caption ("less than 100 cells")'),
    "prototypes per unit": (10, "Sections 4.2-4.3"),
    "counterfactuals per prototype": (3, "Sections 4.2-4.3 (N_C = 3)"),
    "attribution threshold": (0.05, "Section 4.2 / Figure 2.C (absolute)"),
    "units per group": (20, "Section 4.3"),
    "GSEA strong / weak p": ("5e-05 / 0.005", "Section 4.3"),
    "DEG max cells": (1000, "Appendix C"),
    "DEG p for deletion": (0.005, "Appendix C"),
    "deletion pairs": ("same prototypes as the ranking", "Appendix C"),
}


def _same(a, b) -> bool:
    try:
        return bool(np.isclose(float(a), float(b), rtol=1e-9, atol=0.0))
    except (TypeError, ValueError):
        return str(a) == str(b)


def recipe_table(
    ours: Mapping, theirs: Mapping, why: Mapping | None = None
) -> pd.DataFrame:
    """Our settings against the paper's (or a blog's), one row per setting.

    Parameters
    ----------
    ours
        ``{setting: value}`` - the values this run used (from its parameters).
    theirs
        ``{setting: value}`` or ``{setting: (value, source)}`` - the reference's.
    why
        ``{setting: reason}`` for settings that differ.

    Returns
    -------
    DataFrame indexed by ``setting`` with columns ``paper``, ``ours``, ``match``
    (computed: numbers equal to 1e-9 relative, else equal as text), ``why``
    (empty where they match) and ``source``. Settings in ``ours`` come first, in
    its order, then those only in ``theirs``; a missing side reads "-".
    """
    why = dict(why or {})
    rows = []
    for key in list(ours) + [k for k in theirs if k not in ours]:
        ref = theirs.get(key, "-")
        ref, src = ref if isinstance(ref, tuple) else (ref, "")
        val = ours.get(key, "-")
        same = key in ours and key in theirs and _same(val, ref)
        rows.append(
            dict(
                setting=key,
                paper=_fmt(ref),
                ours=_fmt(val),
                match=same,
                why="" if same else str(why.get(key, "")),
                source=src,
            )
        )
    return pd.DataFrame(rows).set_index("setting")


def _fmt(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    return str(v)


def bh_adjust(pvals) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values; NaN entries stay NaN, are not counted."""
    p = np.asarray(pvals, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    adj = p[order] * m / np.arange(1, m + 1)
    adj = np.minimum.accumulate(adj[::-1])[::-1]
    out[order] = np.clip(adj, 0.0, 1.0)
    return out


# ---------------------------------------------------------------------------
# metadata characterisation (Section 3.1, Figure 2.B)
# ---------------------------------------------------------------------------
def _acts_matrix(acts) -> np.ndarray:
    a = to_dense(acts, dtype=None)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"acts must be (n_cells, n_concepts), got shape {a.shape}.")
    return a


def _check_keys(obs: pd.DataFrame, keys: Sequence[str]) -> list[str]:
    keys = [keys] if isinstance(keys, str) else list(keys)
    if not keys:
        raise ValueError(
            "keys is empty; pass at least one categorical obs column, e.g. ['clusters']."
        )
    for key in keys:
        if key not in obs.columns:
            raise ValueError(
                f"obs has no column {key!r}; available: {list(obs.columns)}. Pass one of those as a label key."
            )
        col = obs[key]
        if pd.api.types.is_float_dtype(col) and col.nunique() > 50:
            raise ValueError(
                f"obs[{key!r}] is continuous; characterise needs categorical labels. Bin it first, "
                f"e.g. obs[{key!r} + '_bin'] = pd.cut(obs[{key!r}], 5), or use phase_from_scores for cell-cycle scores."
            )
    return keys


def characterise(
    obs: pd.DataFrame,
    acts,
    keys: Sequence[str],
    min_active_cells: int = 100,
    specific_share: float = 0.7,
    concept_names: Sequence | None = None,
    alpha: float | None = 0.01,
    adjust: bool = True,
) -> pd.DataFrame:
    """Metadata characterisation of each concept by its activating cells.

    A concept is "specific" to a key when its top label's share of the activating
    cells is >= ``specific_share`` and that share is significantly above the
    label's base rate (its share of all cells): one-sided binomial test of the
    number of activating cells with the top label, ``X ~ Binomial(n_active, base
    rate)``, Benjamini-Hochberg across the concepts with enough data (per key)
    when ``adjust``, kept when ``p <= alpha``. ``alpha=None`` drops the test: the
    paper's rule, by share alone.

    Parameters
    ----------
    obs
        Cell metadata (``adata.obs``), one row per row of ``acts``.
    acts
        (n_cells, n_concepts) activations; a cell activates a concept when > 0.
    keys
        Categorical obs columns (cell type, phase, ...).
    min_active_cells
        Below this many activating cells the status is "not enough data".
    specific_share
        Share of activating cells with one label above which (>=) a concept is
        "specific" to that key.
    concept_names
        Index of the result (default 0..c-1).
    alpha, adjust
        Significance level of the base-rate test and whether its p-values are
        BH-adjusted across concepts (``None``: no test, share only).

    Returns
    -------
    pandas.DataFrame
        One row per concept: ``n_active``; per key ``<key>_top`` (most common
        label), ``<key>_share`` (its share of the activating cells, NaN when no
        cell activates), ``<key>_base_rate`` (the top label's share of all
        cells), ``<key>_enrichment`` (share / base rate), ``<key>_pvalue`` (the
        binomial test, BH-adjusted when ``adjust``; NaN without enough data) and
        ``<key>_status``; ``status`` = "specific" if specific for any key, "not
        enough data", else "not specific"; ``specific_to`` = the keys it is
        specific for, joined with "+"; ``specific_by_share`` = whether the paper's
        share-only rule would call it specific for some key.
    """
    A = _acts_matrix(acts)
    keys = _check_keys(obs, keys)
    if A.shape[0] != len(obs):
        raise ValueError(
            f"acts has {A.shape[0]} rows but obs has {len(obs)}; pass the activations of the same cells."
        )
    if not 0 < specific_share <= 1:
        raise ValueError(f"specific_share must be in (0, 1], got {specific_share}.")
    if alpha is not None and not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1] or None, got {alpha}.")
    active = A > 0
    n_active = active.sum(0)
    out = pd.DataFrame(
        {"n_active": n_active.astype(int)},
        index=pd.Index(
            concept_names if concept_names is not None else np.arange(A.shape[1]),
            name="concept",
        ),
    )
    enough = n_active >= min_active_cells
    specific_any = np.zeros(A.shape[1], dtype=bool)
    by_share_any = np.zeros(A.shape[1], dtype=bool)
    specific_to = [[] for _ in range(A.shape[1])]
    for key in keys:
        codes, labels = pd.factorize(obs[key].astype(str), sort=True)
        onehot = np.zeros((len(codes), len(labels)), dtype=np.float64)
        onehot[np.arange(len(codes)), codes] = 1.0
        counts = active.T.astype(np.float64) @ onehot  # (c, labels)
        top = counts.argmax(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = counts[np.arange(len(top)), top] / n_active
        share = np.where(n_active > 0, share, np.nan)
        base = onehot.mean(0)[top]
        n_top = counts[np.arange(len(top)), top]
        # P(X >= n_top), X ~ Binomial(n_active, base): sf at n_top - 1
        pval = stats.binom.sf(n_top - 1, n_active, base)
        pval = np.where(enough, pval, np.nan)
        if adjust:
            pval = bh_adjust(pval)
        by_share = enough & (share >= specific_share)
        spec = by_share if alpha is None else by_share & (pval <= alpha)
        out[f"{key}_top"] = np.where(n_active > 0, np.asarray(labels)[top], None)
        out[f"{key}_share"] = share
        out[f"{key}_base_rate"] = np.where(n_active > 0, base, np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"{key}_enrichment"] = np.where(n_active > 0, share / base, np.nan)
        out[f"{key}_pvalue"] = pval
        by_share_any |= by_share
        out[f"{key}_status"] = np.where(
            ~enough, "not enough data", np.where(spec, "specific", "not specific")
        )
        specific_any |= spec
        for i in np.flatnonzero(spec):
            specific_to[i].append(key)
    out["status"] = np.where(
        ~enough, "not enough data", np.where(specific_any, "specific", "not specific")
    )
    out["specific_to"] = ["+".join(s) for s in specific_to]
    out["specific_by_share"] = by_share_any
    return out


def summary(table: pd.DataFrame, keys: Sequence[str] | None = None) -> pd.DataFrame:
    """Counts of concept statuses per key (and ``"any"``), for a Figure 2.B-like bar chart.

    Returns
    -------
    pandas.DataFrame
        Index: ``"any"`` then each key; columns "specific", "not specific",
        "not enough data" (numbers of concepts) and ``share_specific`` (share of
        all concepts).
    """
    if keys is None:
        keys = [c[: -len("_status")] for c in table.columns if c.endswith("_status")]
    rows = {"any": table["status"].value_counts()}
    for key in keys:
        rows[key] = table[f"{key}_status"].value_counts()
    out = pd.DataFrame(rows).T.reindex(columns=list(STATUSES)).fillna(0).astype(int)
    out["share_specific"] = out["specific"] / max(len(table), 1)
    return out


# ---------------------------------------------------------------------------
# attribution-based GSEA (Section 3.4, Figure 3.A.b)
# ---------------------------------------------------------------------------
def _col(df: pd.DataFrame, *names: str) -> str:
    low = {c.lower().replace("_", " ").replace("-", " "): c for c in df.columns}
    for n in names:
        key = n.lower().replace("_", " ").replace("-", " ")
        if key in low:
            return low[key]
    raise KeyError(f"none of {names} in prerank result columns {list(df.columns)}")


def _best_term(res: pd.DataFrame) -> dict:
    if res is None or len(res) == 0:
        return dict(term=None, nes=np.nan, pval=np.nan, fdr=np.nan, lead_genes="")
    df = res.copy()
    if "Term" not in df.columns and df.index.name is not None:
        df = df.reset_index()
    t, nes, p = (
        _col(df, "Term"),
        _col(df, "NES"),
        _col(df, "NOM p-val", "pval", "nom pval"),
    )
    try:
        fdr = _col(df, "FDR q-val", "fdr")
    except KeyError:
        fdr = None
    try:
        lead = _col(df, "Lead_genes", "lead genes", "ledge genes")
    except KeyError:
        lead = None
    df[nes] = pd.to_numeric(df[nes], errors="coerce")
    df[p] = pd.to_numeric(df[p], errors="coerce")
    pos = df[df[nes] > 0]
    if len(pos) == 0:
        return dict(term=None, nes=np.nan, pval=np.nan, fdr=np.nan, lead_genes="")
    row = pos.sort_values([nes, p], ascending=[False, True], kind="stable").iloc[0]
    return dict(
        term=row[t],
        nes=float(row[nes]),
        pval=float(row[p]),
        fdr=float(pd.to_numeric(row[fdr])) if fdr else np.nan,
        lead_genes=str(row[lead]) if lead else "",
    )


def _tied_share(scores: pd.Series) -> float:
    s = scores.dropna()
    return float(s.duplicated(keep=False).mean()) if len(s) else 0.0


def gsea_annotate(
    attributions: Mapping,
    library,
    organism: str = "human",
    strong: float = 5e-5,
    weak: float = 5e-3,
    prerank: Callable | None = None,
    *,
    engine: str = "numpy",
    quiet: bool = False,
    **prerank_kwargs,
) -> pd.DataFrame:
    """Attribution-based GSEA: the best enriched term of each unit.

    Parameters
    ----------
    attributions
        ``{unit: pandas.Series of attribution scores indexed by gene}``.
    library
        Gene-set library ``{term: [genes]}`` (e.g. ``helpers.enrichment.load_library(
        "GO_Biological_Process_2023", organism)``) or a library name.
    organism
        "human" or "mouse" (mouse symbols are matched to human libraries).
    strong, weak
        p-value cut-offs of the paper (strong <= 5e-5, weak <= 5e-3).
    prerank
        A custom ``prerank(scores, library, organism, **kwargs) -> DataFrame`` run per
        unit; None (default) uses ``engine``.
    engine
        "numpy": :func:`helpers.enrichment.prerank_units`, every unit at once;
        "gseapy": ``gseapy.prerank`` per unit (``threads`` is read by this engine
        only). Same statistic and null; the nominal p-values differ by Monte Carlo
        error.
    quiet
        Swallow what ``prerank`` writes to stderr (gseapy logs a time-stamped
        warning for tied scores, and every gene whose counts are equal in prototype
        and counterfactual has attribution exactly 0, so attribution rankings always
        have ties). The share of tied genes is the column ``tied`` either way.
    **prerank_kwargs
        e.g. ``permutations``, ``seed``, ``min_size``, ``max_size``, ``threads``.

    Returns
    -------
    pandas.DataFrame
        Per unit: ``term`` (highest positive NES), ``nes``, ``pval``, ``fdr``,
        ``lead_genes``, ``annotation`` in {"strong", "weak", "none"}, ``tied`` (share of
        the unit's scored genes whose score equals another gene's).

    Notes
    -----
    The nominal p-value is the share of permutations with an enrichment at least as
    large, so its resolution is ``1 / permutations``: p = 0 means "no permutation
    reached it". With 1,000 permutations the paper's "strong" (p <= 5e-5) therefore
    means p = 0.
    """
    series = {u: pd.Series(s).astype(float) for u, s in attributions.items()}
    quiet_ctx = (
        (lambda: contextlib.redirect_stderr(io.StringIO()))
        if quiet
        else contextlib.nullcontext
    )
    if prerank is None and engine == "numpy":
        kw = {k: v for k, v in prerank_kwargs.items() if k != "threads"}
        tables = _prerank_units(series, library, organism=organism, **kw)
    else:
        if prerank is None:
            if engine != "gseapy":
                raise ValueError(f"engine={engine!r}; use 'numpy' or 'gseapy'.")
            prerank = functools.partial(_prerank, engine="gseapy")
        tables = {}
        for unit, s in series.items():
            with quiet_ctx():
                tables[unit] = prerank(s, library, organism=organism, **prerank_kwargs)
    rows = {
        unit: {**_best_term(tables[unit]), "tied": _tied_share(s)}
        for unit, s in series.items()
    }
    out = pd.DataFrame.from_dict(rows, orient="index")
    p = out["pval"]
    out["annotation"] = np.where(
        p <= strong, "strong", np.where(p <= weak, "weak", "none")
    )
    out.index.name = "unit"
    return out


def gsea_summary(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Share of units with strong / weak / no annotation, per group (e.g. concepts, neurons).

    "weak" counts only weak (strong units are not double counted); the column
    ``strong_or_weak`` is their sum.
    """
    rows = {}
    for name, t in tables.items():
        vc = t["annotation"].value_counts(normalize=True)
        rows[name] = {k: float(vc.get(k, 0.0)) for k in ("strong", "weak", "none")}
        rows[name]["n_units"] = len(t)
    out = pd.DataFrame.from_dict(rows, orient="index")
    out["strong_or_weak"] = out["strong"] + out["weak"]
    return out


# ---------------------------------------------------------------------------
# concept explorer (Section 3.3)
# ---------------------------------------------------------------------------
def composition(
    obs: pd.DataFrame, acts, keys: Sequence[str], concepts: Sequence[int]
) -> dict:
    """Label counts of the activating cells: ``{concept: {key: {label: n}}}``."""
    A = _acts_matrix(acts)
    keys = _check_keys(obs, keys)
    out = {}
    for c in concepts:
        on = A[:, int(c)] > 0
        out[c] = {
            k: {
                str(l): int(n)
                for l, n in obs.loc[on, k].astype(str).value_counts().items()
            }
            for k in keys
        }
    return out


_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>__TITLE__</title>
<style>
#__ID__ {font-family: system-ui, -apple-system, "Segoe UI", sans-serif; font-size: 13px; color: #222; max-width: 1100px;}
#__ID__ .row {display: flex; flex-wrap: wrap; gap: 16px;}
#__ID__ .panel {border: 1px solid #ddd; border-radius: 6px; padding: 8px; background: #fff;}
#__ID__ h3 {font-size: 14px; margin: 2px 0 6px 0;}
#__ID__ .meta {color: #555; margin: 6px 0;}
#__ID__ .bar {fill: #3b7dd8;} #__ID__ .bar.neg {fill: #d8603b;}
#__ID__ .gene:hover .bar {fill: #1a4f99;}
#__ID__ table {border-collapse: collapse;} #__ID__ td {padding: 1px 6px;}
#__ID__ .tip {color:#444; min-height: 2.6em; max-width: 480px; font-size: 12px;}
</style></head>
<body>
<div id="__ID__">
  <h3>__TITLE__</h3>
  <label>Concept: <select id="__ID__-select"></select></label>
  <div class="meta" id="__ID__-meta"></div>
  <div class="row">
    <div class="panel"><h3>Attributed genes (hover for GO terms)</h3>
      <svg id="__ID__-genes" width="400" height="360" role="img" aria-label="attributed genes"></svg>
      <div class="tip" id="__ID__-tip"></div></div>
    <div class="panel"><h3>Activating cells: metadata</h3><div id="__ID__-comp"></div></div>
    <div class="panel"><h3>Embedding UMAP (activating cells coloured)</h3>
      <canvas id="__ID__-umap" width="320" height="320"></canvas></div>
  </div>
</div>
<script>
(function () {
  var DATA = __DATA__;
  var ID = "__ID__";
  function el(s) { return document.getElementById(ID + "-" + s); }
  function svgEl(tag, attrs) {
    var e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }
  var sel = el("select");
  DATA.concepts.forEach(function (c) {
    var o = document.createElement("option");
    o.value = c.id; o.textContent = c.label; sel.appendChild(o);
  });
  function drawGenes(cid) {
    var svg = el("genes"); while (svg.firstChild) svg.removeChild(svg.firstChild);
    var genes = DATA.attributions[cid] || [];
    var maxAbs = 1e-12; genes.forEach(function (g) { maxAbs = Math.max(maxAbs, Math.abs(g[1])); });
    var rowH = 16, left = 90, width = 300;
    svg.setAttribute("height", Math.max(40, genes.length * rowH + 10));
    genes.forEach(function (g, i) {
      var terms = DATA.gene_terms[g[0]] || [];
      var tip = g[0] + " (attribution " + g[1].toPrecision(3) + ")\n" +
                (terms.length ? terms.join("\n") : "no GO Biological Process term in the local library");
      var grp = svgEl("g", {"class": "gene", "data-gene": g[0]});
      var title = svgEl("title", {}); title.textContent = tip; grp.appendChild(title);
      var label = svgEl("text", {x: left - 4, y: i * rowH + 12, "text-anchor": "end", "font-size": 11});
      label.textContent = g[0]; grp.appendChild(label);
      var w = Math.abs(g[1]) / maxAbs * width;
      grp.appendChild(svgEl("rect", {"class": g[1] < 0 ? "bar neg" : "bar", x: left, y: i * rowH + 2,
                                      width: Math.max(w, 0.5), height: rowH - 4}));
      grp.addEventListener("mouseenter", function () { el("tip").textContent = tip; });
      svg.appendChild(grp);
    });
  }
  function drawComp(cid) {
    var div = el("comp"); div.innerHTML = "";
    var comp = DATA.composition[cid] || {};
    Object.keys(comp).forEach(function (key) {
      var counts = comp[key], total = 0;
      Object.keys(counts).forEach(function (l) { total += counts[l]; });
      var h = document.createElement("div"); h.innerHTML = "<b></b>"; h.firstChild.textContent = key;
      div.appendChild(h);
      var t = document.createElement("table");
      Object.keys(counts).sort(function (a, b) { return counts[b] - counts[a]; }).forEach(function (l) {
        var tr = document.createElement("tr");
        var share = total ? counts[l] / total : 0;
        var td1 = document.createElement("td"); td1.textContent = l;
        var td2 = document.createElement("td"); td2.textContent = (100 * share).toFixed(1) + "%";
        var td3 = document.createElement("td");
        var bar = svgEl("svg", {width: 120, height: 10});
        bar.appendChild(svgEl("rect", {x: 0, y: 1, width: 120 * share, height: 8, fill: "#6a9f58"}));
        td3.appendChild(bar);
        tr.appendChild(td1); tr.appendChild(td2); tr.appendChild(td3); t.appendChild(tr);
      });
      div.appendChild(t);
    });
  }
  var xs = DATA.umap.map(function (p) { return p[0]; }), ys = DATA.umap.map(function (p) { return p[1]; });
  var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
  var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
  function drawUmap(cid) {
    var cv = el("umap"), ctx = cv.getContext("2d"), W = cv.width, H = cv.height, m = 8;
    ctx.clearRect(0, 0, W, H);
    function px(p) { return [m + (p[0] - x0) / (x1 - x0 || 1) * (W - 2 * m),
                             H - m - (p[1] - y0) / (y1 - y0 || 1) * (H - 2 * m)]; }
    ctx.fillStyle = "#d0d0d0";
    DATA.umap.forEach(function (p) { var q = px(p); ctx.fillRect(q[0] - 1, q[1] - 1, 2, 2); });
    var act = DATA.activations[cid] || {idx: [], val: []};
    var vmax = 1e-12; act.val.forEach(function (v) { vmax = Math.max(vmax, v); });
    act.idx.forEach(function (i, j) {
      var q = px(DATA.umap[i]), t = act.val[j] / vmax;
      ctx.fillStyle = "rgba(215," + Math.round(150 * (1 - t)) + ",30," + (0.35 + 0.65 * t).toFixed(2) + ")";
      ctx.fillRect(q[0] - 1.5, q[1] - 1.5, 3, 3);
    });
  }
  function show(cid) {
    var c = DATA.concepts.filter(function (x) { return String(x.id) === String(cid); })[0];
    el("meta").textContent = c ? c.summary : "";
    drawGenes(cid); drawComp(cid); drawUmap(cid);
    document.getElementById(ID).setAttribute("data-concept", cid);
  }
  sel.addEventListener("change", function () { show(sel.value); });
  if (DATA.concepts.length) show(DATA.concepts[0].id);
})();
</script>
</body></html>
"""


def explorer_html(
    concepts_table: pd.DataFrame,
    attributions: Mapping,
    gene_terms: Mapping[str, Sequence[str]],
    composition: Mapping,
    umap_xy,
    activations,
    n_genes: int = 20,
    title: str = "Concept explorer",
) -> str:
    """A self-contained offline HTML page to browse concepts.

    Parameters
    ----------
    concepts_table
        :func:`characterise` output; rows of the concepts to show (index =
        concept id). Its ``n_active``, ``status`` and ``<key>_top`` columns
        are summarised under the selector.
    attributions
        ``{concept: pandas.Series}`` attribution scores by gene; the top
        ``n_genes`` (by value) are drawn as bars.
    gene_terms
        ``{gene: [GO terms]}`` (:func:`helpers.enrichment.gene_terms`), shown on hover.
    composition
        ``{concept: {key: {label: count}}}`` (:func:`composition`).
    umap_xy
        (n_cells, 2) coordinates of the embedding UMAP.
    activations
        (n_cells, n_concepts) activation matrix (column = concept id) or
        ``{concept: (n_cells,) array}``; activating cells are highlighted.
    n_genes
        Genes per concept in the bar chart.
    title
        Page heading.

    Returns
    -------
    str
        A complete HTML document (no external resources, no network access).
    """
    xy = np.asarray(umap_xy, dtype=float)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(
            f"umap_xy must be (n_cells, 2), got {xy.shape}; pass adata.obsm['X_umap']."
        )
    # a reproducible element-id prefix: the same inputs give the same page (byte for byte)
    digest = hashlib.sha1(
        title.encode() + xy.tobytes() + repr(list(concepts_table.index)).encode()
    )
    uid = "cx" + digest.hexdigest()[:10]
    concepts = []
    attr_data, act_data, comp_data, used_genes = {}, {}, {}, set()
    top_cols = [c for c in concepts_table.columns if c.endswith("_top")]
    for cid, row in concepts_table.iterrows():
        if cid not in attributions:
            continue
        s = (
            pd.Series(attributions[cid])
            .astype(float)
            .sort_values(ascending=False)
            .head(n_genes)
        )
        attr_data[str(cid)] = [[str(g), float(v)] for g, v in s.items()]
        used_genes.update(map(str, s.index))
        if isinstance(activations, Mapping):
            a = np.asarray(activations[cid], dtype=float).ravel()
        else:
            a = _acts_matrix(activations)[:, int(cid)].astype(float)
        if a.shape[0] != xy.shape[0]:
            raise ValueError(
                f"activations of concept {cid} cover {a.shape[0]} cells, umap_xy {xy.shape[0]}."
            )
        idx = np.flatnonzero(a > 0)
        act_data[str(cid)] = {"idx": idx.tolist(), "val": np.round(a[idx], 4).tolist()}
        comp_data[str(cid)] = composition.get(cid, composition.get(str(cid), {}))
        tops = ", ".join(
            f"{c[:-4]}: {row[c]} ({row[c[:-4] + '_share']:.0%})"
            for c in top_cols
            if row[c] is not None and pd.notna(row.get(c[:-4] + "_share"))
        )
        status = row.get("status", "")
        concepts.append(
            {
                "id": str(cid),
                "label": f"concept {cid} - {status} - {int(row.get('n_active', idx.size))} cells",
                "summary": f"{int(row.get('n_active', idx.size))} activating cells; status: {status}; {tops}",
            }
        )
    data = {
        "concepts": concepts,
        "attributions": attr_data,
        "gene_terms": {g: list(gene_terms.get(g, [])) for g in sorted(used_genes)},
        "composition": comp_data,
        "umap": np.round(xy, 3).tolist(),
        "activations": act_data,
    }
    payload = json.dumps(jsonable(data, digits=5), separators=(",", ":")).replace(
        "</", "<\\/"
    )
    return (
        _TEMPLATE.replace("__DATA__", payload)
        .replace("__ID__", uid)
        .replace("__TITLE__", _html.escape(title))
    )


def write_explorer(path, *args, **kwargs) -> Path:
    """Write :func:`explorer_html` (same arguments) to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(explorer_html(*args, **kwargs), encoding="utf-8")
    return path


def show_explorer(page: str, height: int = 900):
    """Display an explorer page inside a notebook / Jupyter Book page.

    The page goes into an ``<iframe srcdoc=...>`` so its ids, styles and script
    are isolated from the host page, and it works in the static HTML build.
    """
    from IPython.display import HTML

    return HTML(
        f'<iframe srcdoc="{_html.escape(page, quote=True)}" style="width:100%;height:{int(height)}px;'
        'border:1px solid #ddd;border-radius:6px" sandbox="allow-scripts"></iframe>'
    )
