"""Step budgets: training time that grows with the budget, not with the cells."""

import numpy as np
import pytest

from helpers import bilinear, sae
from helpers.runtime import epochs_for_budget


def test_a_step_budget_caps_whole_epochs():
    assert epochs_for_budget(100, 1000, 100) == 100  # no budget
    assert epochs_for_budget(100, 1000, 100, max_steps=250) == 25
    assert epochs_for_budget(100, 1001, 100, max_steps=250) == 22  # 11 steps per epoch
    assert epochs_for_budget(3, 1000, 100, max_steps=10_000) == 3  # epochs still cap
    assert epochs_for_budget(100, 10**6, 100, max_steps=5) == 1  # at least one epoch
    with pytest.raises(ValueError, match="max_steps=0"):
        epochs_for_budget(10, 100, 10, max_steps=0)
    with pytest.raises(ValueError, match="each must be at least 1"):
        epochs_for_budget(10, 0, 10)


def test_trainers_stop_at_the_budget():
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(500, 8)).astype(np.float32)
    model, hist = sae.train_sae(
        Z,
        16,
        2,
        epochs=50,
        batch_size=90,
        max_steps=12,
        progress=False,
        val_fraction=0.1,
    )
    assert len(hist) == model.settings.epochs == 2  # 450 training cells: 5 steps/epoch
    y = (Z[:, 0] > 0).astype(int)
    split = {"train": np.arange(300), "val": np.arange(300, 400)}
    m = bilinear.BilinearMLP(8, 4, 2, seed=0)
    m, h = bilinear.train_bilinear(
        m, Z, y, split, epochs=40, batch_size=100, max_steps=9, progress=False
    )
    assert len(h) == m.settings.epochs == 3


def test_sparse_features_train_the_dense_model_without_densifying():
    import scipy.sparse as sp

    from helpers import synthetic

    adata = synthetic.atlas_counts(600, 300, n_types=3, markers=10, seed=1)
    X = adata.X.log1p()
    y = adata.obs["cell_type"].cat.codes.to_numpy()
    split = {"train": np.arange(400), "val": np.arange(400, 500)}
    kw = dict(hidden=6, epochs=3, batch_size=64, progress=False)
    dense, _ = bilinear.fit(X.toarray(), y, split, **kw)
    sparse, h = bilinear.fit(sp.csr_matrix(X), y, split, **kw)
    for a, b in zip(dense.state_dict().values(), sparse.state_dict().values()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-6)
    feats = bilinear.Features(X)
    assert feats.dense is None and feats.csr.nnz == X.nnz  # kept sparse
    np.testing.assert_allclose(
        bilinear.predict(sparse, X), bilinear.predict(sparse, X.toarray()), atol=1e-6
    )
    longer, h = bilinear.fit(sp.csr_matrix(X), y, split, **{**kw, "epochs": 40})
    assert h["val_accuracy"].iloc[-1] > 0.8  # the planted types are learned


def test_single_thread_restores_the_thread_counts():
    import torch
    from threadpoolctl import threadpool_info

    from helpers.runtime import single_thread

    before = torch.get_num_threads()
    with single_thread():
        assert torch.get_num_threads() == 1
        assert all(p["num_threads"] == 1 for p in threadpool_info())
    assert torch.get_num_threads() == before
