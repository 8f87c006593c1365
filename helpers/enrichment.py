"""Gene set enrichment of modules and attribution rankings, offline first.

Libraries are read from local files: ``<data_dir>/genesets/<name>.txt`` or ``.gmt``
(Enrichr text or GMT format), then the copies that ship inside blitzgsea
(``GO_Biological_Process_2023``, ``KEGG_2021_Human``), then the download cache
(``<cache>/genesets``); a library found nowhere is downloaded once from Enrichr's
library service into the cache (``$BOOK_DATA_MIRROR/<name>.txt`` when a mirror is set,
like the datasets). Human libraries are mapped to mouse symbols through the HGNC→MGI
ortholog table when it is present (``human2MouseOrthologs.tsv``), otherwise by case
(``INS1`` → ``Ins1``). Enrichr's own web service (library names fetched online) remains
an option: ``online=True``.

- :func:`pole_genes`: top genes at each sign of an eigenvector (the blog: top 1% per
  sign);
- :func:`gene_terms`: the terms of each gene (tooltips, the concept explorer);
- :func:`enrich`: over-representation (``gseapy.enrichr`` with a dict library and an
  explicit background = the model's genes), BH-adjusted p ≤ ``alpha``, top ``top``
  terms;
- :func:`enrich_poles`: both poles of a module against several libraries, one table;
- :func:`prerank` / :func:`prerank_units`: GSEA prerank of one score / of many units'
  scores at once (attribution-based GSEA): gseapy's statistic and permutation null,
  vectorised in numpy (``engine="gseapy"`` runs ``gseapy.prerank`` itself).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from . import data as _data
from . import sources as _sources


def _read_library(path: Path) -> dict[str, list[str]]:
    lib = {}
    for line in path.read_text().splitlines():
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 3:
            continue
        genes = [g.split(",")[0].strip() for g in parts[2:] if g.strip()]
        if genes:
            lib[parts[0]] = sorted(set(genes))
    return lib


#: Enrichr serves every library it names as text at this address (libraries are not
#: versioned there beyond the year in their name, so no hash is pinned).
ENRICHR_URL = (
    "https://maayanlab.cloud/Enrichr/geneSetLibrary?mode=text&libraryName={name}"
)


def library_source(name: str) -> _sources.Source:
    """Where a library is downloaded from when no copy is local (Enrichr, unpinned)."""
    return _sources.Source(f"{name}.txt", ENRICHR_URL.format(name=name), None)


def _library_path(name: str, data_dir=None, download: bool = True) -> Path:
    """A library file: the data dir, blitzgsea's copies, the cache, else Enrichr."""
    candidates = []
    folder = _data.data_dir(data_dir)
    if folder is not None:
        candidates += [
            folder / "genesets" / f"{name}{ext}" for ext in ("", ".txt", ".gmt")
        ]
    try:
        import blitzgsea

        candidates.append(Path(blitzgsea.__file__).parent / "data" / name)
    except ImportError:  # pragma: no cover - blitzgsea comes with pertpy
        pass
    cached = _data.cache_dir() / "genesets" / f"{name}.txt"
    candidates.append(cached)
    for c in candidates:
        if c.is_file():
            return c
    where = (
        f"{name}.txt (Enrichr format) or {name}.gmt in <data dir>/genesets "
        f"(looked in {[str(c) for c in candidates]})"
    )
    if not download:
        raise FileNotFoundError(
            f"Gene set library {name!r} not found locally. Put {where}."
        )
    return _sources.fetch(library_source(name), name, dest=cached, where=where)


@functools.lru_cache(maxsize=4)
def _orthologs(data_dir=None) -> dict[str, list[str]] | None:
    folder = _data.data_dir(data_dir)
    path = folder / "genesets" / "human2MouseOrthologs.tsv" if folder else None
    if path is None or not path.is_file():
        return None
    table = pd.read_csv(path, sep="\t", usecols=["fromSymbol", "toSymbol"]).dropna()
    return (
        table.groupby("fromSymbol")["toSymbol"]
        .apply(lambda s: sorted(set(s)))
        .to_dict()
    )


def _is_mouse_library(lib: dict) -> bool:
    genes = [g for gs in list(lib.values())[:50] for g in gs]
    return np.mean([g[:1].isupper() and g[1:] != g[1:].upper() for g in genes]) > 0.5


@functools.lru_cache(maxsize=16)
def _load(name: str, organism: str, data_dir) -> dict:
    lib = _read_library(_library_path(name, data_dir))
    if organism == "human" or _is_mouse_library(lib):
        return lib
    orth = _orthologs(data_dir)
    out = {}
    for term, genes in lib.items():
        mapped = set()
        for g in genes:
            mapped.update(orth.get(g, [g.capitalize()]) if orth else [g.capitalize()])
        out[term] = sorted(mapped)
    return out


def load_library(
    name: str, organism: str = "human", data_dir=None
) -> dict[str, list[str]]:
    """A library as ``{term: [genes]}`` in the organism's symbols (human or mouse)."""
    if organism not in ("human", "mouse"):
        raise ValueError(f"organism={organism!r}; use 'human' or 'mouse'.")
    return {
        k: list(v)
        for k, v in _load(
            name, organism, None if data_dir is None else str(data_dir)
        ).items()
    }


def gene_terms(
    genes, library: Mapping[str, Sequence[str]], *, max_terms: int = 8
) -> dict:
    """The library terms of each gene (case-insensitive symbols), smallest gene set
    first.

    Mouse symbols match human library symbols upper-cased (what Enrichr does). At most
    ``max_terms`` per gene: the most specific ones, for tooltips and tables.
    """
    by_gene: dict[str, list[tuple[int, str]]] = {}
    for term, members in library.items():
        for g in members:
            by_gene.setdefault(str(g).upper(), []).append((len(members), term))
    out = {}
    for g in genes:
        terms = sorted(by_gene.get(str(g).upper(), []))
        out[str(g)] = [t for _, t in terms[:max_terms]]
    return out


def pole_genes(
    loadings, genes, frac: float = 0.01, min_genes: int = 10
) -> dict[str, list[str]]:
    """Genes with the largest positive and most negative loadings: top ``frac`` per
    sign.

    At least ``min_genes`` per pole (when that many genes have that sign), ordered by
    |loading|.
    """
    loadings = np.asarray(loadings, float)
    genes = np.asarray(genes)
    n = max(int(np.ceil(frac * len(genes))), min_genes)
    order = np.argsort(-loadings, kind="stable")
    pos = [g for g, v in zip(genes[order], loadings[order]) if v > 0][:n]
    neg = [g for g, v in zip(genes[order[::-1]], loadings[order[::-1]]) if v < 0][:n]
    return {"pos": pos, "neg": neg}


def enrich(
    genes,
    library: dict | str,
    background,
    organism: str = "human",
    alpha: float = 0.05,
    top: int = 15,
    min_size: int = 5,
    online: bool = False,
) -> pd.DataFrame:
    """Over-representation of ``genes`` in ``library`` against ``background``
    (gseapy.enrichr).

    Parameters
    ----------
    library
        ``{term: genes}`` (see :func:`load_library`), or a library name (loaded locally;
        sent to Enrichr's web service only when ``online=True``).
    background
        The genes that could have been picked, i.e. the model's genes.
    min_size
        Terms with fewer than ``min_size`` genes in the background are not tested:
        against a background of a few hundred genes, a term that keeps two of its genes
        reaches BH ≤ 0.05 as soon as both fall in a pole, which says little about the
        process (Enrichr's web service tests every term against the whole genome
        instead). Local libraries only.

    Returns
    -------
    Terms with BH-adjusted p ≤ ``alpha``, best ``top`` by adjusted p, with columns
    ``Term, Overlap, P-value, Adjusted P-value, Odds Ratio, Genes``.
    """
    import gseapy

    cols = ["Term", "Overlap", "P-value", "Adjusted P-value", "Odds Ratio", "Genes"]
    empty = pd.DataFrame(columns=cols)
    genes = list(dict.fromkeys(genes))
    if not genes:
        return empty
    if isinstance(library, str) and not online:
        library = load_library(library, organism)
    if isinstance(library, dict):
        bg = set(background)
        library = {t: [g for g in gs if g in bg] for t, gs in library.items()}
        library = {t: gs for t, gs in library.items() if len(gs) >= max(min_size, 1)}
        if not library:
            return empty
    res = gseapy.enrichr(
        gene_list=genes,
        gene_sets=library,
        organism=organism,
        background=list(background),
        outdir=None,
        cutoff=1.0,
        no_plot=True,
    ).results
    if not isinstance(res, pd.DataFrame) or res.empty:  # no term overlaps the genes
        return empty
    res = res[res["Adjusted P-value"] <= alpha].sort_values(
        "Adjusted P-value", kind="stable"
    )
    return res[cols].head(top).reset_index(drop=True)


def enrich_poles(
    loadings,
    genes,
    libraries: Mapping[str, dict | str],
    *,
    poles: Sequence[str] = ("pos", "neg"),
    frac: float = 0.01,
    min_genes: int = 10,
    organism: str = "human",
    top: int | None = None,
    **enrich_kwargs,
) -> pd.DataFrame:
    """Enrichment of a module's poles against several libraries in one table.

    The poles are :func:`pole_genes` of ``loadings`` (one module, genes in ``genes``
    order), each tested with :func:`enrich` against every library (background =
    ``genes``).

    Parameters
    ----------
    libraries
        ``{name: library}``; a library is ``{term: genes}`` or a name for
        :func:`load_library`.
    poles
        Which poles to test: ``"pos"``, ``"neg"`` or both.
    top
        Keep the best ``top`` terms per pole across libraries (by adjusted p); ``None``
        keeps all.
    **enrich_kwargs
        Passed to :func:`enrich` (``alpha``, ``min_size``, ...).

    Returns
    -------
    DataFrame with ``pole``, ``library`` and :func:`enrich`'s columns, poles in the
    order given, within a pole sorted by adjusted p (ties keep library order).
    """
    found = pole_genes(loadings, genes, frac=frac, min_genes=min_genes)
    bad = set(poles) - set(found)
    if bad:
        raise ValueError(
            f"poles={tuple(poles)}: unknown pole(s) {sorted(bad)}; use 'pos', 'neg'."
        )
    tables = []
    for pole in poles:
        per_lib = [
            enrich(found[pole], lib, genes, organism=organism, **enrich_kwargs).assign(
                library=name
            )
            for name, lib in libraries.items()
        ]
        t = pd.concat(per_lib, ignore_index=True).sort_values(
            "Adjusted P-value", kind="stable"
        )
        tables.append((t if top is None else t.head(top)).assign(pole=pole))
    cols = [
        "pole",
        "library",
        "Term",
        "Overlap",
        "P-value",
        "Adjusted P-value",
        "Odds Ratio",
        "Genes",
    ]
    return pd.concat(tables, ignore_index=True)[cols]


def prerank(
    scores: pd.Series,
    library: dict | str,
    organism: str = "human",
    min_size: int = 5,
    max_size: int = 500,
    permutations: int = 1000,
    seed: int = 0,
    threads: int = 1,
    engine: str = "numpy",
) -> pd.DataFrame:
    """GSEA prerank of a gene score (e.g. attribution); sorted by nominal p.

    Returns columns ``Term, ES, NES, NOM p-val, FDR q-val, Lead_genes``. The smallest
    reachable nominal p is ``1 / permutations``: use enough permutations for the
    thresholds you read.

    ``engine="numpy"`` (default): :func:`prerank_units` on this one score (gseapy's
    statistic, vectorised). ``engine="gseapy"``: ``gseapy.prerank`` itself (its Rust
    engine, with ``threads``), against which the numpy engine is validated.
    """
    if engine not in ("numpy", "gseapy"):
        raise ValueError(f"engine={engine!r}; use 'numpy' or 'gseapy'.")
    if engine == "numpy":
        return prerank_units(
            {0: scores},
            library,
            organism=organism,
            min_size=min_size,
            max_size=max_size,
            permutations=permutations,
            seed=seed,
        )[0]
    import gseapy

    if isinstance(library, str):
        library = load_library(library, organism)
    scores = _scored(scores)
    sets = _library_indices(scores.index, library, min_size, max_size)
    lib = {t: list(scores.index[idx]) for t, idx in sets.items()}
    res = gseapy.prerank(
        # ties in the order of the index, as the numpy engine ranks them
        rnk=scores.sort_values(ascending=False, kind="stable"),
        gene_sets=lib,
        min_size=min_size,
        max_size=max_size,
        permutation_num=permutations,
        seed=seed,
        threads=threads,
        outdir=None,
        no_plot=True,
        verbose=False,
    ).res2d
    res = res.astype(
        {"ES": float, "NES": float, "NOM p-val": float, "FDR q-val": float}
    )
    return _by_p(res[["Term", "ES", "NES", "NOM p-val", "FDR q-val", "Lead_genes"]])


def _by_p(res: pd.DataFrame) -> pd.DataFrame:
    """A prerank table in the book's order: nominal p, then NES descending."""
    return res.sort_values(
        ["NOM p-val", "NES"], ascending=[True, False], kind="stable"
    ).reset_index(drop=True)


def _scored(scores) -> pd.Series:
    """A gene score as floats, without NaN and without repeated genes."""
    s = pd.Series(scores, dtype=float).dropna()
    return s[~s.index.duplicated()]


# ---------------------------------------------------------------------------
# prerank GSEA, vectorised over gene sets, units and permutations
# ---------------------------------------------------------------------------
def _library_indices(genes: pd.Index, library: Mapping, min_size: int, max_size: int):
    """``{term: positions in genes}`` for the terms with min_size..max_size of genes;
    ``ValueError`` when there is none."""
    where = {g: i for i, g in enumerate(genes)}
    out = {}
    for term, members in library.items():
        idx = sorted({where[g] for g in members if g in where})
        # a set holding every scored gene has no misses: no enrichment to score
        if min_size <= len(idx) <= max_size and len(idx) < len(genes):
            out[term] = np.asarray(idx, dtype=np.int64)
    if not out:
        raise ValueError(
            f"No gene set has between {min_size} and {max_size} of the {len(genes)} "
            "scored genes. Check the organism (mouse vs human symbols) or lower "
            "min_size."
        )
    return out


def _running_extremes(w: np.ndarray, pos: np.ndarray, n_genes: int):
    """Enrichment scores of hit sets, from their sorted positions in the ranking.

    ``w``: weights of the hits (``|score| ** weight``), shape ``(..., k)``; ``pos``:
    their positions (sorted, 0-based, broadcastable to ``w``). The running sum of GSEA
    (+w/Σw at a hit, -1/(N-k) at a miss) peaks just after a hit and dips just before
    one, so both extremes are read at the hits (as gseapy's engine does: the end of
    the ranking is not a candidate). Returns ``(es, argmax, argmin)``: the
    extreme of larger magnitude (gseapy's rule) and the hit indices of the peak and of
    the dip (-1 when it is the start or the end of the ranking, value 0).
    """
    k = w.shape[-1]
    miss = (pos - np.arange(k)) / (n_genes - k)
    cum = np.cumsum(w, axis=-1)
    total = cum[..., -1:]
    # hits without weight add nothing (gseapy's engine: the sum only falls)
    scale = np.divide(1.0, total, out=np.zeros_like(total), where=total > 0)
    after = cum * scale - miss
    before = (cum - w) * scale - miss
    imax, imin = after.argmax(-1), before.argmin(-1)
    top = np.take_along_axis(after, imax[..., None], -1)[..., 0]
    low = np.take_along_axis(before, imin[..., None], -1)[..., 0]
    imax, imin = np.where(top > 0, imax, -1), np.where(low < 0, imin, -1)
    top, low = np.maximum(top, 0.0), np.minimum(low, 0.0)
    es = np.where(np.abs(top) > np.abs(low), top, low)
    return es, imax, imin


def _fdr(nes: np.ndarray, null_norm: np.ndarray, mult: np.ndarray) -> np.ndarray:
    """gseapy's FDR q-value (``algorithm.gsea_fdr``), with each size class's
    normalised null counted once per gene set of that size (``mult``)."""
    flat = null_norm.ravel()
    wts = np.repeat(mult, null_norm.shape[1]).astype(float)
    ok = np.isfinite(flat)
    flat, wts = flat[ok], wts[ok]
    order = np.argsort(flat, kind="stable")
    flat, cw = flat[order], np.concatenate([[0.0], np.cumsum(wts[order])])
    n_all = cw[-1]
    obs = np.sort(nes[np.isfinite(nes)])

    def weight_at_or_above(x):
        return n_all - cw[np.searchsorted(flat, x, side="left")]

    def weight_below(x):
        return cw[np.searchsorted(flat, x, side="left")]

    out = np.ones(len(nes))
    with np.errstate(invalid="ignore", divide="ignore"):
        for i, v in enumerate(nes):
            if not np.isfinite(v):
                out[i] = np.nan
                continue
            if v >= 0:
                pi_null = weight_at_or_above(v) / weight_at_or_above(0.0)
                n_pos = len(obs) - np.searchsorted(obs, 0.0, side="left")
                pi_obs = (len(obs) - np.searchsorted(obs, v, side="left")) / n_pos
            else:
                pi_null = cw[np.searchsorted(flat, v, side="right")] / weight_below(0.0)
                n_neg = np.searchsorted(obs, 0.0, side="left")
                pi_obs = np.searchsorted(obs, v, side="right") / n_neg
            out[i] = min(pi_null / pi_obs, 1.0)
    return out


def prerank_units(
    scores: pd.DataFrame | Mapping,
    library: dict | str,
    organism: str = "human",
    min_size: int = 5,
    max_size: int = 500,
    permutations: int = 1000,
    seed: int = 0,
    weight: float = 1.0,
    chunk: int = 4_000_000,
) -> dict:
    """GSEA prerank of many gene scores at once (one per unit), gseapy's statistic.

    The same test as ``gseapy.prerank`` (weighted Kolmogorov–Smirnov running sum,
    ``weight`` = 1; gene-label permutations; NES = ES over the mean null ES of the same
    sign; nominal p = share of same-sign null ES at least as extreme; gseapy's FDR),
    computed with numpy. A gene-label permutation turns a set of ``k`` genes into ``k``
    random positions of the ranking, so the null depends on the set only through
    ``k``: one null per distinct size, drawn once from ``permutations`` random
    orderings shared by every unit (each unit weighs the drawn positions with its own
    scores). gseapy draws a null per set instead, so nominal p-values agree with its in
    distribution, not digit for digit. Ties are ranked by the order of the index
    (stable sort).

    Parameters
    ----------
    scores
        ``{unit: pandas.Series indexed by gene}`` or a genes × units DataFrame. NaN
        scores drop the gene for that unit.
    library, organism, min_size, max_size, permutations, seed
        As :func:`prerank`.
    chunk
        Upper bound on the elements of one null block (memory).

    Returns
    -------
    dict
        ``{unit: DataFrame}`` with the columns of :func:`prerank`, sorted the same way.
    """
    if isinstance(scores, pd.DataFrame):
        scores = {c: scores[c] for c in scores.columns}
    if not scores:
        raise ValueError("prerank_units needs at least one unit's scores")
    if permutations < 1:
        raise ValueError(f"permutations={permutations}; use at least 1.")
    if isinstance(library, str):
        library = load_library(library, organism)
    series = {unit: _scored(s) for unit, s in scores.items()}
    # units scoring the same genes share one null; group them
    groups: dict[tuple, list] = {}
    for unit, s in series.items():
        groups.setdefault(tuple(s.index), []).append(unit)
    out = {}
    for genes, units in groups.items():
        out.update(
            _prerank_group(
                pd.Index(genes),
                np.stack([series[u].to_numpy() for u in units]),
                units,
                library,
                min_size,
                max_size,
                permutations,
                seed,
                weight,
                chunk,
            )
        )
    return {u: out[u] for u in scores}


def _prerank_group(
    genes, values, units, library, min_size, max_size, permutations, seed, weight, chunk
):
    n_units, n = values.shape
    sets = _library_indices(genes, library, min_size, max_size)
    terms = list(sets)
    size = np.array([len(sets[t]) for t in terms])
    sizes, size_class, mult = np.unique(size, return_inverse=True, return_counts=True)
    # each unit's ranking: position of every gene, weights in ranked order
    order = np.argsort(-values, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(n)[None, :], axis=1)
    w_ranked = np.abs(np.take_along_axis(values, order, axis=1)) ** weight
    # null: positions of a random k-subset = the first k of a random ordering, sorted
    rng = np.random.default_rng(seed)
    perm = np.argsort(rng.random((permutations, n)), axis=1)
    null = np.empty((n_units, len(sizes), permutations))
    for c, k in enumerate(sizes):
        pos = np.sort(perm[:, :k], axis=1)
        step = max(1, int(chunk // (permutations * k)))
        for u0 in range(0, n_units, step):
            w = w_ranked[u0 : u0 + step][:, pos]
            null[u0 : u0 + step, c] = _running_extremes(w, pos, n)[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        pos, neg = null >= 0, null < 0
        pos_mean = np.where(pos, null, 0).sum(2) / pos.sum(2)
        neg_mean = np.where(neg, null, 0).sum(2) / neg.sum(2)
    result = {}
    for u, unit in enumerate(units):
        es = np.empty(len(terms))
        lead = []
        for i, t in enumerate(terms):
            hits = np.sort(rank[u, sets[t]])
            e, imax, imin = _running_extremes(w_ranked[u, hits], hits, n)
            es[i] = e
            ranked_genes = genes[order[u, hits]]
            if e >= 0:
                lead.append(";".join(ranked_genes[: imax + 1]) if imax >= 0 else "")
            else:
                # gseapy lists a negative set's leading edge from the bottom up
                tail = ranked_genes[imin:][::-1]
                lead.append(";".join(tail) if imin >= 0 else "")
        nu = null[u, size_class]  # (sets, permutations)
        with np.errstate(invalid="ignore", divide="ignore"):
            pval = np.where(
                es >= 0,
                (nu >= es[:, None]).sum(1) / (nu >= 0).sum(1),
                (nu < es[:, None]).sum(1) / (nu < 0).sum(1),
            )
            nes = np.where(
                es >= 0, es / pos_mean[u, size_class], -es / neg_mean[u, size_class]
            )
            null_norm = np.where(
                null[u] >= 0,
                null[u] / pos_mean[u][:, None],
                -null[u] / neg_mean[u][:, None],
            )
        res = pd.DataFrame(
            {
                "Term": terms,
                "ES": es,
                "NES": nes,
                "NOM p-val": pval,
                "FDR q-val": _fdr(nes, null_norm, mult),
                "Lead_genes": lead,
            }
        )
        result[unit] = _by_p(res)
    return result
