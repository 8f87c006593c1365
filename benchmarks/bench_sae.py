"""Top-K SAE training throughput (cells/s) and scale-sweep timing, measured in one run.

Data: synthetic 50-dimensional embeddings (like scVI's latent space) that are sparse
non-negative combinations of 200 planted atoms, so the numbers do not depend on a
download. Prints the throughput at the paper's scVI setting (d = 50, c = 500, k = 8,
batch 1024) on CPU, the cost of the auxiliary dead-latent loss, and a small Table-3-like
sweep with its timings.

Run: ``python benchmarks/bench_sae.py`` (``--n-cells``, ``--epochs``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from helpers.sae import SAETrainSettings, sae_metrics, scale_sweep, train_sae
from helpers.synthetic import planted_sparse_codes, unit_dictionary


def synthetic(
    n: int = 20_000, d: int = 50, n_atoms: int = 200, k: int = 4, seed: int = 0
) -> np.ndarray:
    D = unit_dictionary(n_atoms, d, seed=seed)
    return planted_sparse_codes(n, D, k, noise=0.05, seed=seed + 1)[0]


def throughput(Z, c, k, epochs, aux_coef=1 / 32, batch_size=1024):
    settings = SAETrainSettings(
        epochs=epochs,
        batch_size=batch_size,
        lr=1e-3,
        device="cpu",
        val_fraction=0.0,
        aux_coef=aux_coef,
        progress=False,
    )
    t0, c0 = time.perf_counter(), time.process_time()
    model, hist = train_sae(Z, c, k, settings)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return len(Z) * epochs / seconds, seconds, cpu, model


def main(n_cells: int = 10_000, epochs: int = 5, sweep_epochs: int = 5) -> dict:
    Z = synthetic(n_cells)
    print(
        f"CPU, torch threads = {torch.get_num_threads()}, "
        f"{n_cells} cells x {Z.shape[1]} dims"
    )
    # warm-up: first torch calls allocate and dispatch slowly
    throughput(Z[:2048], 500, 8, 1)
    cps, sec, cpu, model = throughput(Z, 500, 8, epochs)
    cps_noaux, _, cpu_noaux, _ = throughput(Z, 500, 8, epochs, aux_coef=0.0)
    m = sae_metrics(model, Z)
    print(
        f"SAE d=50 c=500 k=8 batch=1024: {cps:,.0f} cells/s wall "
        f"({epochs} epochs in {sec:.1f} s wall, "
        f"{cpu:.1f} s process CPU; R2 {m['r2']:.3f}, dead {m['n_dead']})"
    )
    print(
        f"without the aux loss: {cps_noaux:,.0f} cells/s wall; "
        "CPU time ratio aux/no-aux "
        f"x{cpu / cpu_noaux:.2f} (the aux term only runs once latents are dead)"
    )
    configs = [(200, 3), (500, 8), (1000, 16)]
    t0 = time.perf_counter()
    sweep = SAETrainSettings(epochs=sweep_epochs, lr=1e-3, device="cpu", progress=False)
    table = scale_sweep(Z, configs, sweep)
    total = time.perf_counter() - t0
    table["cells/s"] = len(Z) * 0.9 * sweep_epochs / table["seconds"]  # 90% train split
    print(f"scale sweep ({sweep_epochs} epochs each, {total:.1f} s total):")
    print(
        table[["c", "k", "r2", "l0", "n_active", "n_dead", "seconds", "cells/s"]]
        .round(3)
        .to_string(index=False)
    )
    return dict(
        cells_per_s=cps,
        cells_per_s_noaux=cps_noaux,
        cpu_seconds=cpu,
        sweep_seconds=total,
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-cells", type=int, default=10_000)
    p.add_argument("--epochs", type=int, default=5)
    args = p.parse_args()
    main(args.n_cells, args.epochs, args.epochs)
