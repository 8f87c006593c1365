"""Preprocessing on a Dask cluster (two local worker processes on loopback) gives the
features the in-memory path gives."""

import numpy as np
import pytest
import scipy.sparse as sp
from anndata import AnnData

from helpers import data, preprocess

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("dask.distributed")


def _counts(n=1200, g=150, seed=0) -> AnnData:
    rng = np.random.default_rng(seed)
    rate = rng.gamma(0.4, 2.0, size=(1, g)) * rng.gamma(2.0, 0.5, size=(n, 1))
    X = rng.poisson(rate).astype(np.float32)
    X[:, :3] = 0  # three genes detected nowhere: dropped by min_cells_per_gene
    X[:5, 3] = 1  # one gene detected in 5 cells: dropped too
    adata = AnnData(sp.csr_matrix(X))
    adata.var_names = [f"Rpl{i}" if i < 2 else f"g{i}" for i in range(g)]
    return adata


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    ) as lc:
        with distributed.Client(lc) as client:
            yield client


@pytest.mark.parametrize("chunk_type", ["dense", "sparse"])
def test_prepare_on_a_dask_cluster_equals_in_memory(cluster, chunk_type):
    adata = _counts()
    lazy = adata.copy()
    X = adata.X if chunk_type == "sparse" else adata.X.toarray()
    lazy.X = da.from_array(X, chunks=(300, 150))
    ref = preprocess.prepare(adata, n_top_genes=40)
    got = preprocess.prepare(lazy, n_top_genes=40)
    assert data.is_dask(got.X)
    assert len(cluster.scheduler_info()["workers"]) == 2
    assert got.var_names.tolist() == ref.var_names.tolist()
    assert got.uns["preprocess"] == ref.uns["preprocess"]
    Xg = got.X.compute()
    Xg = Xg.toarray() if sp.issparse(Xg) else Xg
    np.testing.assert_allclose(Xg, ref.X.toarray(), rtol=1e-5, atol=1e-6)


def test_count_checks_run_block_by_block_with_the_in_memory_messages(cluster):
    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert data.value_summary(da.from_array(X, chunks=(2, 3))) == data.value_summary(X)
    for bad, msg in [
        (-1.0, "negative values"),
        (0.5, "non-integer values"),
        (np.nan, "1 NaN/inf values"),
    ]:
        Y = X.copy()
        Y[3, 2] = bad
        for arr in (Y, da.from_array(Y, chunks=(2, 3))):
            with pytest.raises(ValueError, match=msg):
                data.check_counts(arr)
