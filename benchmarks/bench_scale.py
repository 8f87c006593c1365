"""Seconds and peak memory of each pipeline stage at growing numbers of cells.

Synthetic counts with planted cell types (``helpers.synthetic.atlas_counts``), 2,000
genes, at 50k, 200k and 1M cells (``--quick``: 5k and 20k). Every stage runs in a fresh
process (multiprocessing "spawn"), reads its inputs from files the earlier stages wrote,
and reports its wall time and its peak resident memory (``VmHWM``: what the stage
needed, loading included). Training stages take a fixed budget of optimizer steps (scVI:
one epoch capped at the same number of minibatches), so their time should not grow with
the cells; the rest should grow about linearly. The frequencies stage builds its kNN
graph on 50 principal components, the route at atlas scale. The
last table gives each stage's log–log slope of seconds and of memory against cells
(1 = linear). Not a timed test: ratios and slopes measured in one run.

Run:
``python benchmarks/bench_scale.py [--quick] [--sizes 50000 200000] [--stages ...]``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

STEPS = 200  # optimizer steps of every training stage
# scVI: one epoch, capped at STEPS minibatches (Lightning's limit_train_batches), so its
# time measures data handling and encoding, not a longer epoch
SCVI_BUDGET = dict(limit_train_batches=STEPS)


def _scvi(adata, d):
    """The scVI stage's model: trained once (one epoch capped at the step budget), then
    loaded from ``d / "scvi"`` by the attribution stage."""
    from helpers import embeddings

    return embeddings.fit_embedding(
        adata,
        "scvi",
        n_latent=16,
        max_epochs=1,
        progress=False,
        output_dir=d / "scvi",
        train_kwargs=SCVI_BUDGET,
    )


STAGES = (
    "load",
    "prepare",
    "bilinear",
    "modules",
    "frequencies",
    "scvi",
    "sae",
    "attribution",
    "probes",
)


def _peak_gb() -> float:
    """This process's peak resident memory. ``VmHWM`` belongs to the address space,
    which ``exec`` replaces; ``ru_maxrss`` survives ``exec`` on Linux, so a spawned
    stage would report the parent's peak when the parent's was higher."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2  # kB → GB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _stage(name: str, d: str, queue) -> None:
    import anndata as ad

    from helpers import bilinear, preprocess, sae, spectral

    d = Path(d)
    t0 = time.perf_counter()
    note = ""
    if name == "load":
        adata = ad.read_h5ad(d / "counts.h5ad")
        note = f"{adata.n_obs} cells, nnz {adata.X.nnz:,}"
    elif name == "prepare":
        adata = preprocess.prepare(ad.read_h5ad(d / "counts.h5ad"), n_top_genes=2000)
        adata.write_h5ad(d / "prepared.h5ad")
        note = f"{adata.n_vars} genes kept"
    elif name == "bilinear":
        adata = ad.read_h5ad(d / "prepared.h5ad")
        y = adata.obs["cell_type"].cat.codes.to_numpy()
        split = preprocess.split_indices(y, seed=0)
        model, hist = bilinear.fit(
            adata.X,
            y,
            split,
            hidden=64,
            max_steps=STEPS,
            batch_size=256,
            progress=False,
        )
        bilinear.torch.save(model.state_dict(), d / "bilinear.pt")
        note = f"{len(hist)} epochs, val acc {hist['val_accuracy'].iloc[-1]:.3f}"
    elif name == "modules":
        adata = ad.read_h5ad(d / "prepared.h5ad", backed="r")
        n_types = adata.obs["cell_type"].nunique()
        model = bilinear.BilinearMLP(adata.n_vars, 64, n_types)
        model.load_state_dict(bilinear.torch.load(d / "bilinear.pt"))
        out = bilinear.eigendecompose(model, n_modules=3)
        note = f"{len(out)} outputs × 3 modules"
    elif name == "frequencies":
        import scanpy as sc

        # at atlas scale the graph is built on principal components (use_rep): an
        # exact kNN on all genes costs cells² × genes (the chapter's 3,696 cells use X)
        adata = ad.read_h5ad(d / "prepared.h5ad")
        sc.pp.pca(adata, n_comps=50, random_state=0)
        spectral.frequencies(adata, n_freqs=5, k=15, use_rep="X_pca")
        note = "5 frequencies, k=15, graph on 50 PCs"
    elif name == "scvi":
        adata = ad.read_h5ad(d / "prepared.h5ad")
        emb = _scvi(adata, d)
        np.save(d / "z.npy", adata.obsm[emb.key])
        note = f"1 epoch capped at {STEPS} steps"
    elif name == "sae":
        Z = np.load(d / "z.npy")
        model, hist = sae.train_sae(
            Z,
            128,
            8,
            epochs=10**6,
            batch_size=1024,
            max_steps=STEPS,
            progress=False,
            lr=5e-4,
        )
        sae.torch.save(model.state_dict(), d / "sae.pt")
        note = f"{len(hist)} epochs, val R² {hist['val_r2'].iloc[-1]:.3f}"
    elif name == "attribution":
        from helpers import attribution

        adata = ad.read_h5ad(d / "prepared.h5ad")
        emb = _scvi(adata, d)
        Z = adata.obsm[emb.key]
        model = sae.TopKSAE(Z.shape[1], 128, 8)
        model.load_state_dict(sae.torch.load(d / "sae.pt"))
        acts = model.encode_numpy(Z)
        unit = int(np.argmax((acts > 0).sum(0)))
        f = attribution.concept_activation(emb, model, unit)
        scores = attribution.attribute(adata, f, Z, acts[:, unit], layer="counts")
        note = f"concept {unit}, {len(scores)} genes"
    elif name == "probes":
        from helpers import probes

        adata = ad.read_h5ad(d / "prepared.h5ad", backed="r")
        Z = np.load(d / "z.npy")
        res = probes.probe(Z, adata.obs["cell_type"].to_numpy(), seed=0)
        note = f"test acc {res['accuracy']:.3f}"
    else:
        raise ValueError(f"unknown stage {name!r}")
    queue.put(dict(seconds=time.perf_counter() - t0, peak_gb=_peak_gb(), note=note))


def _run_stage(name: str, d: Path) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_stage, args=(name, str(d), queue))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        return dict(seconds=np.nan, peak_gb=np.nan, note=f"failed ({proc.exitcode})")
    return queue.get()


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="5k and 20k cells")
    ap.add_argument("--sizes", type=int, nargs="+", default=None)
    ap.add_argument("--genes", type=int, default=2000)
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    args = ap.parse_args(argv)
    sizes = args.sizes or (
        [5_000, 20_000] if args.quick else [50_000, 200_000, 1_000_000]
    )
    from helpers import synthetic

    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix=f"bench_scale_{n}_") as tmp:
            d = Path(tmp)
            t0 = time.perf_counter()
            synthetic.atlas_counts(n, args.genes, seed=0).write_h5ad(d / "counts.h5ad")
            print(
                f"n={n:,}: data written in {time.perf_counter() - t0:.1f} s", flush=True
            )
            for name in args.stages:
                r = _run_stage(name, d)
                rows.append(dict(cells=n, stage=name, **r))
                print(
                    f"  {name:<12} {r['seconds']:8.1f} s {r['peak_gb']:7.2f} GB  "
                    f"{r['note']}",
                    flush=True,
                )
    table = pd.DataFrame(rows)
    wide = table.pivot(index="stage", columns="cells", values=["seconds", "peak_gb"])
    wide = wide.reindex([s for s in STAGES if s in args.stages])
    if len(sizes) > 1:
        logn = np.log(np.asarray(sizes, float))
        for what in ("seconds", "peak_gb"):
            vals = np.log(wide[what].to_numpy(float))
            wide[(what, "slope")] = [
                np.polyfit(logn, v, 1)[0] if np.isfinite(v).all() else np.nan
                for v in vals
            ]
    with pd.option_context("display.width", 200, "display.precision", 2):
        print(wide.sort_index(axis=1))
    return table


if __name__ == "__main__":
    main()
