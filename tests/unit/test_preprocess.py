import numpy as np
import pytest

from helpers import data, preprocess


def test_ribosomal_genes_dropped_and_hvgs(shared_data):
    import anndata as ad

    adata = ad.read_h5ad(shared_data / "pancreas_50obs_allgenes.h5ad")
    assert adata.var_names.str.match("^(Rpl|Rps)").sum() > 50
    out = preprocess.prepare(adata, layer="spliced", n_top_genes=300)
    assert out.n_vars == 300 and not out.var_names.str.match("^(Rpl|Rps)").any()
    assert "counts" in out.layers and out.uns["preprocess"]["layer"] == "spliced"
    np.testing.assert_allclose(np.expm1(out.X.toarray()).sum(1) > 0, True)


def test_rare_genes_are_dropped_before_hvgs():
    import anndata as ad

    rng = np.random.default_rng(0)
    X = rng.poisson(2.0, size=(200, 30)).astype(np.float32)
    X[:, 0] = 0
    X[0, 0] = 50  # detected in one cell: the most "variable" gene of all
    X[:, 1] = 0
    X[:9, 1] = 5  # detected in nine cells
    adata = ad.AnnData(X)
    adata.var_names = [f"g{i}" for i in range(30)]
    out = preprocess.prepare(adata, n_top_genes=None)
    assert "g0" not in out.var_names and "g1" not in out.var_names and out.n_vars == 28
    assert (
        out.uns["preprocess"]["min_cells_per_gene"] == 10
        and out.uns["preprocess"]["n_dropped_rare"] == 2
    )
    assert preprocess.describe(out).startswith(
        "30 genes in: 0 dropped by prefix ['Rpl', 'Rps'], 2 detected in"
    )
    kept = preprocess.prepare(adata, n_top_genes=None, min_cells_per_gene=1)
    assert {"g0", "g1"} <= set(kept.var_names)


def test_normalize_log1p_values():
    import anndata as ad

    adata = ad.AnnData(np.array([[1, 3], [0, 4]], np.float32))
    preprocess.normalize_log1p(adata)
    np.testing.assert_allclose(
        adata.X.toarray(), np.log1p([[2500, 7500], [0, 1e4]]), rtol=1e-6
    )


def test_split_is_stratified_and_disjoint():
    labels = np.array(["a"] * 70 + ["b"] * 30)
    s = preprocess.split_indices(labels, seed=0)
    allidx = np.concatenate([s["train"], s["val"], s["test"]])
    assert sorted(allidx) == list(range(100))
    assert (labels[s["train"]] == "b").sum() == 21
    with pytest.raises(ValueError, match="summing to 1"):
        preprocess.split_indices(10, fractions=(0.5, 0.5, 0.5))


def test_subsample_keeps_group_shares():
    import anndata as ad
    import pandas as pd

    labels = ["a"] * 300 + ["b"] * 100
    adata = ad.AnnData(
        np.zeros((400, 2), np.float32),
        obs=pd.DataFrame({"g": labels}, index=[f"c{i}" for i in range(400)]),
    )
    out = preprocess.subsample(adata, 100, groupby="g", seed=0)
    assert out.obs["g"].value_counts().to_dict() == {"a": 75, "b": 25}
    order = sorted(out.obs_names, key=lambda c: int(c[1:]))
    assert list(out.obs_names) == order  # cells keep their order
    assert preprocess.subsample(adata, 500) is adata  # nothing dropped: no copy
    again = preprocess.subsample(adata, 100, groupby="g", seed=0)
    assert list(again.obs_names) == list(out.obs_names)
