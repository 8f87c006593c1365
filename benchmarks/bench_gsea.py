"""Benchmark: attribution GSEA, the numpy engine against gseapy.prerank, one run.

The concepts chapter annotates every attributed unit (20 concepts, 20 neurons by default)
with the best GO Biological Process term of a GSEA prerank of its attribution scores.
Both engines compute the same statistic and null (weighted running sum, 1,000 gene-label
permutations):

1. ``gseapy``: ``gseapy.prerank`` (its Rust engine) once per unit, 2 threads;
2. ``numpy``: :func:`helpers.enrichment.prerank_units`, every unit at once, one null per
   gene-set size shared by the sets of that size and by the units.

Rankings: the chapter's own, ``attributions.parquet`` in its output folder (written by
``make book``: ``_build/outputs/concepts``), or ``--attributions PATH``; without one,
attribution-like synthetic rankings (human genes, 60% tied at 0, a planted GO term in
half of the units). Prints the seconds of each engine and their ratio, then how far the
annotations agree: ES (must be equal), the best term, its NES and nominal p, and the
strong / weak / none level per unit, listing every unit whose level differs.

Run: ``python benchmarks/bench_gsea.py [--attributions PATH] [--units N]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import concepts, enrichment

DEFAULT = Path("_build/outputs/concepts/attributions.parquet")
LIBRARY = "GO_Biological_Process_2023"


def _synthetic(library: dict, n_units: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    universe = sorted({g for gs in library.values() for g in gs})
    genes = rng.choice(universe, 2000, replace=False)
    terms = [t for t, gs in library.items() if 15 <= len(set(gs) & set(genes)) <= 60]
    cols = {}
    for u in range(n_units):
        v = rng.exponential(1.0, len(genes))
        v[rng.random(len(genes)) < 0.6] = 0.0
        if u % 2 == 0:  # plant one term near the top
            members = np.flatnonzero(np.isin(genes, library[terms[u]]))
            v[members] = rng.exponential(3.0, len(members)) + 1.0
        cols[f"unit {u}"] = v
    return pd.DataFrame(cols, index=genes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attributions", type=Path, default=None)
    ap.add_argument("--organism", default="human")
    ap.add_argument("--units", type=int, default=None, help="first N units only")
    ap.add_argument("--permutations", type=int, default=1000)
    args = ap.parse_args()

    library = enrichment.load_library(LIBRARY, args.organism)
    path = args.attributions or (DEFAULT if DEFAULT.is_file() else None)
    if path is not None:
        table, source = pd.read_parquet(path), f"the chapter's rankings ({path})"
    else:
        table, source = _synthetic(library, args.units or 40), "synthetic rankings"
    if args.units:
        table = table.iloc[:, : args.units]
    ranked = {c: table[c].dropna() for c in table.columns}
    print(f"{len(ranked)} units, {len(table)} genes, {LIBRARY}: {source}")

    kw = dict(organism=args.organism, permutations=args.permutations, seed=0)
    runs, seconds = {}, {}
    for engine in ("gseapy", "numpy"):
        t0 = time.perf_counter()
        runs[engine] = concepts.gsea_annotate(
            ranked, library, engine=engine, threads=2, quiet=True, **kw
        )
        seconds[engine] = time.perf_counter() - t0
        print(f"{engine:>6}: {seconds[engine]:7.1f} s")
    print(f"speed-up (gseapy / numpy): {seconds['gseapy'] / seconds['numpy']:.0f}x")

    a, b = runs["numpy"], runs["gseapy"]
    same_term = (a["term"] == b["term"]).mean()
    print(f"same best term: {same_term:.2f} of units")
    both = a["term"] == b["term"]
    print(
        "on those, |NES difference| median "
        f"{(a['nes'] - b['nes'])[both].abs().median():.3f}, "
        f"|p difference| median {(a['pval'] - b['pval'])[both].abs().median():.4f}"
    )
    levels = pd.crosstab(
        b["annotation"].rename("gseapy"), a["annotation"].rename("numpy")
    )
    print("annotation levels (rows gseapy, columns numpy):")
    print(levels.to_string())
    differ = a.index[a["annotation"] != b["annotation"]]
    if len(differ) == 0:
        print("every unit has the same annotation level")
    for u in differ:
        print(
            f"  {u}: gseapy {b.loc[u, 'annotation']} (p {b.loc[u, 'pval']:.4f}, "
            f"{b.loc[u, 'term']}) vs numpy {a.loc[u, 'annotation']} "
            f"(p {a.loc[u, 'pval']:.4f}, {a.loc[u, 'term']})"
        )


if __name__ == "__main__":
    main()
