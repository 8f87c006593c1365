"""Benchmark: counterfactual attribution, three routes, one run.

The real pipeline on 2,000 genes of the pancreas counts (synthetic negative-binomial
counts when the offline data are absent): an scVI model (scvi-tools, trained for a few
epochs: its weights do not change the cost) and a Top-K SAE on its latent space; one
concept, 10 prototypes x 3 counterfactuals. All three routes compute Eq. 2 for every
gene and pair:

1. the per-gene loop (`attribute_loop`): one forward pass per (pair, gene);
2. batched, generic: equal genes skipped (exact zeros), the distinct perturbed cells
   stacked and sent through the whole encoder in batches;
3. batched, first-layer route (what `attribute` does for scVI): as 2, but a swap only
   adds one column of the encoder's first weight matrix to the base cell's
   pre-activation (`ScviEmbedding.encode_swaps`).

Prints the agreement of the scores and the speed ratios measured in this one run.
Run: ``python benchmarks/bench_attribution.py``.
"""

from __future__ import annotations

import time

import anndata as ad
import numpy as np
import scipy.sparse as sp
import torch

from helpers import attribution as at
from helpers.embeddings import fit_embedding
from helpers.sae import TopKSAE


def _counts(n_genes: int = 2000, seed: int = 0):
    try:
        from helpers import data

        adata = data.load_dataset("pancreas")
        X = data.get_matrix(adata, layer="counts" if "counts" in adata.layers else None)
        return data.to_dense(X[:, :n_genes]), "pancreas (real counts)"
    except Exception as err:  # offline data absent: synthetic counts of the same size
        rng = np.random.default_rng(seed)
        mu = rng.gamma(0.3, 2.0, size=n_genes)
        X = rng.negative_binomial(2, 2 / (2 + mu), size=(3000, n_genes)).astype(
            np.float32
        )
        return X, f"synthetic NB counts ({type(err).__name__}: {err})"


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(
    n_genes: int = 2000,
    n_prototypes: int = 10,
    n_counterfactuals: int = 3,
    seed: int = 0,
) -> dict:
    torch.manual_seed(seed)
    X, source = _counts(n_genes, seed)
    adata = ad.AnnData(X=sp.csr_matrix(X))
    adata.layers["counts"] = adata.X.copy()
    emb = fit_embedding(
        adata,
        "scvi",
        n_latent=10,
        max_epochs=3,
        seed=seed,
        progress=False,
        device="cpu",
    )
    Z = adata.obsm["X_scvi"]
    sae = TopKSAE(Z.shape[1], 100, 5).eval()
    A = sae.encode_numpy(Z)
    # a concept active in ~10% of cells
    concept = int(np.argmin(np.abs((A > 0).sum(0) - 0.1 * len(X))))
    f = at.concept_activation(emb, sae, concept)
    # the same function without the swap route: whole-encoder passes
    generic = lambda X_: f(X_)
    acts = f(X)
    pairs = n_prototypes * n_counterfactuals
    protos = at.prototypes(acts, n_prototypes)
    cfs = at.counterfactuals(Z, acts, protos, n_counterfactuals)
    differ = float((X[np.repeat(protos, n_counterfactuals)] != X[cfs.ravel()]).mean())

    kw = dict(n_prototypes=n_prototypes, n_counterfactuals=n_counterfactuals)
    fast, t_fast = _timed(lambda: at.attribute(X, f, Z, acts, **kw))
    batched, t_batched = _timed(
        lambda: at.attribute(X, generic, Z, acts, batch_size=4096, **kw)
    )
    slow, t_loop = _timed(lambda: at.attribute_loop(X, f, Z, acts, **kw))

    ref = slow.sort_index().to_numpy()
    act_scale = float(np.max(np.abs(acts[protos])))
    print(
        f"data: {source}, {X.shape[0]} cells x {X.shape[1]} genes; "
        "scVI (10 latent dims) + Top-K SAE "
        f"(c=100, k=5); concept {concept} active in {int((acts > 0).sum())} cells; "
        f"{pairs} pairs"
    )
    print(
        "genes that differ between prototype and counterfactual: "
        f"{differ:.1%} of (pair, gene) entries; "
        f"loop forward passes: {pairs * (X.shape[1] + 1)}"
    )
    print(f"per-gene loop:                 {t_loop:8.3f} s")
    print(
        f"batched, whole encoder:        {t_batched:8.3f} s   "
        f"loop / batched = {t_loop / t_batched:6.1f}x"
    )
    print(
        f"batched, first-layer route:    {t_fast:8.3f} s   "
        f"loop / route   = {t_loop / t_fast:6.1f}x (goal >= 50x)"
    )
    for name, s in (("batched", batched), ("first-layer route", fast)):
        d = float(np.max(np.abs(s.sort_index().to_numpy() - ref)))
        print(
            f"{name}: max |score - loop score| = {d:.3g} "
            f"({d / act_scale:.2g} of the prototype activation "
            f"{act_scale:.3g}; float32 rounding); same top-20 genes in the same order: "
            f"{list(s.index[:20]) == list(slow.index[:20])}"
        )
    return dict(
        loop_s=t_loop, batched_s=t_batched, route_s=t_fast, ratio=t_loop / t_fast
    )


if __name__ == "__main__":
    main()
