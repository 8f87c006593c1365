"""Benchmark: attribution GSEA, the numpy engine against gseapy.prerank, one run.

The concepts chapter annotates every attributed unit (20 concepts, 20 neurons by
default) with the best GO Biological Process term of a GSEA prerank of its attribution
scores. Both engines compute the same statistic and null (weighted running sum, 1,000
gene-label permutations):

1. ``gseapy``: ``gseapy.prerank`` (its Rust engine) once per unit, 2 threads;
2. ``numpy``: :func:`helpers.enrichment.prerank_units`, every unit at once, one null per
   gene-set size shared by the sets of that size and by the units.

Rankings: the chapter's own, ``attributions.parquet`` in its output folder (written by
``make book``: ``_build/outputs/concepts``), or ``--attributions PATH``; without one,
attribution-like synthetic rankings (human genes, 60% tied at 0, a planted GO term in
half of the units). Prints the seconds of each engine and their ratio, then how far the
annotations agree: the best term, its NES and the strong / weak / none level per unit,
for numpy against gseapy and, as the reference level of Monte Carlo disagreement, for
each engine against itself with another permutation seed; then the strong-or-weak counts
per group (concepts, neurons) and every unit whose level differs.

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

    kw = dict(organism=args.organism, permutations=args.permutations, quiet=True)
    runs, seconds = {}, {}
    for engine, seed in (("gseapy", 0), ("numpy", 0), ("gseapy", 1), ("numpy", 1)):
        t0 = time.perf_counter()
        runs[engine, seed] = concepts.gsea_annotate(
            ranked, library, engine=engine, threads=2, seed=seed, **kw
        )
        seconds[engine, seed] = time.perf_counter() - t0
        print(f"{engine:>6}, seed {seed}: {seconds[engine, seed]:7.1f} s")
    ratio = seconds["gseapy", 0] / seconds["numpy", 0]
    print(f"speed-up (gseapy / numpy, seed 0): {ratio:.0f}x")

    # the annotation level is a Monte Carlo estimate in both engines: the reference
    # for numpy vs gseapy is gseapy against itself with other permutations
    def agree(x, y):
        a, b = runs[x], runs[y]
        return dict(
            same_level=int((a["annotation"] == b["annotation"]).sum()),
            same_term=int((a["term"] == b["term"]).sum()),
            nes_diff_median=float((a["nes"] - b["nes"]).abs().median()),
        )

    pairs = {
        "gseapy seed 0 vs gseapy seed 1": (("gseapy", 0), ("gseapy", 1)),
        "numpy seed 0 vs numpy seed 1": (("numpy", 0), ("numpy", 1)),
        "numpy seed 0 vs gseapy seed 0": (("numpy", 0), ("gseapy", 0)),
        "numpy seed 1 vs gseapy seed 1": (("numpy", 1), ("gseapy", 1)),
    }
    table = pd.DataFrame({k: agree(*v) for k, v in pairs.items()}).T
    print(f"agreement over {len(ranked)} units:")
    print(table.round(3).to_string())

    group = pd.Series(
        [str(u).split(" ")[0] for u in runs["numpy", 0].index],
        index=runs["numpy", 0].index,
    )
    counts = pd.DataFrame(
        {
            f"{e}, seed {sd}": r["annotation"].ne("none").groupby(group).sum()
            for (e, sd), r in runs.items()
        }
    )
    print("units annotated strong or weak, per group:")
    print(counts.to_string())
    a, b = runs["numpy", 0], runs["gseapy", 0]
    differ = a.index[a["annotation"] != b["annotation"]]
    print(f"units whose level differs, numpy vs gseapy (seed 0): {len(differ)}")
    for u in differ:
        print(
            f"  {u}: gseapy {b.loc[u, 'annotation']} (p {b.loc[u, 'pval']:.4f}, "
            f"{b.loc[u, 'term']}) vs numpy {a.loc[u, 'annotation']} "
            f"(p {a.loc[u, 'pval']:.4f}, {a.loc[u, 'term']})"
        )


if __name__ == "__main__":
    main()
