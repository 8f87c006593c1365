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
- :func:`prerank`: ``gseapy.prerank`` on a ranked score (attribution-based GSEA).
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
) -> pd.DataFrame:
    """GSEA prerank of a gene score (e.g. attribution) with gseapy; sorted by nominal p.

    Returns columns ``Term, ES, NES, NOM p-val, FDR q-val, Lead_genes``. The smallest
    reachable nominal p is ``1 / permutations``: use enough permutations for the
    thresholds you read.
    """
    import gseapy

    if isinstance(library, str):
        library = load_library(library, organism)
    scores = pd.Series(scores, dtype=float).dropna()
    scores = scores[~scores.index.duplicated()]
    genes = set(scores.index)
    lib = {t: [g for g in gs if g in genes] for t, gs in library.items()}
    lib = {t: gs for t, gs in lib.items() if min_size <= len(gs) <= max_size}
    if not lib:
        raise ValueError(
            f"No gene set has between {min_size} and {max_size} of the {len(genes)} "
            "scored genes. "
            "Check the organism (mouse vs human symbols) or lower min_size."
        )
    res = gseapy.prerank(
        rnk=scores.sort_values(ascending=False),
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
    return res.sort_values(
        ["NOM p-val", "NES"], ascending=[True, False], kind="stable"
    )[["Term", "ES", "NES", "NOM p-val", "FDR q-val", "Lead_genes"]].reset_index(
        drop=True
    )
