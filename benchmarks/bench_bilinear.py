"""Low-rank vs dense eigendecomposition of all t interaction matrices
(g=2000, h=128, t=8).

Prints both timings, their ratio and the largest eigenvalue difference, measured in one
run. The dense route builds each g×g matrix in turn (never all t at once) and calls
numpy.linalg.eigh (all eigenpairs). The low-rank route (helpers.bilinear.eigendecompose)
is timed twice: mapping all 2h eigenvectors back to genes (the like-for-like comparison)
and mapping only the 3 modules per output that helpers.bilinear.annotate stores. One
warm-up call precedes the timings (first-call library set-up is not what the comparison
is about), and each route is timed ``repeats`` times, the fastest run counting (as
``timeit`` does), dense and low-rank alike; all runs are printed. Last, the shared basis
step alone: Cholesky-QR2 (``bilinear._range_basis``) against Householder QR
(``torch.linalg.qr``) on the same U, one thread, fastest of 20 runs each.
"""

import time

import numpy as np
import torch

from helpers import bilinear
from helpers.runtime import single_thread


def _timed(fn, repeats: int):
    """``fn()``'s result and its fastest wall time over ``repeats`` runs
    (all runs too)."""
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        runs.append(time.perf_counter() - t0)
    return out, min(runs), runs


def main(
    g: int = 2000, h: int = 128, t: int = 8, seed: int = 0, repeats: int = 3
) -> dict:
    model = bilinear.BilinearMLP(g, h, t, seed=seed)
    bilinear.eigendecompose(model)  # warm-up
    fast, t_all, runs_all = _timed(lambda: bilinear.eigendecompose(model), repeats)
    _, t_three, runs_three = _timed(
        lambda: bilinear.eigendecompose(model, n_modules=3), repeats
    )

    def dense_all():
        out = {}
        for a in range(t):
            vals = np.linalg.eigh(bilinear.interaction_matrix(model, a))[0]
            out[a] = vals[np.argsort(-np.abs(vals), kind="stable")]
        return out

    dense, t_dense, runs_dense = _timed(dense_all, repeats)
    diff = max(
        np.max(np.abs(fast[a][0] - dense[a][: len(fast[a][0])])) for a in range(t)
    )
    rest = max(np.max(np.abs(dense[a][len(fast[a][0]) :])) for a in range(t))
    print(
        f"g={g} h={h} t={t}: dense eigh {t_dense:.2f} s; "
        f"low-rank, all {2 * h} eigenvectors {t_all:.3f} s "
        f"(speed-up {t_dense / t_all:.0f}x); "
        f"low-rank, eigenvalues + 3 modules {t_three:.3f} s "
        f"(speed-up {t_dense / t_three:.0f}x)"
    )
    for name, runs in [
        ("dense", runs_dense),
        ("all", runs_all),
        ("3 modules", runs_three),
    ]:
        print(f"  {name} runs (s): " + ", ".join(f"{r:.3f}" for r in runs))
    print(
        f"max |Δλ| {diff:.2e}, "
        f"max |λ| of the dense matrices outside the rank-2h subspace {rest:.2e}"
    )
    W, V = (p.detach().double() for p in (model.W, model.V))
    U = torch.cat([W.T, V.T], dim=1)
    with single_thread():
        _, t_chol, _ = _timed(lambda: bilinear._range_basis(U), 20)
        _, t_hh, _ = _timed(lambda: torch.linalg.qr(U), 20)
    print(
        f"basis of U ({g} x {2 * h}), one thread: Cholesky-QR2 {t_chol * 1e3:.1f} ms, "
        f"Householder QR {t_hh * 1e3:.1f} ms"
    )
    return {
        "dense_s": t_dense,
        "low_rank_all_s": t_all,
        "low_rank_3_s": t_three,
        "max_diff": diff,
    }


if __name__ == "__main__":
    main()
