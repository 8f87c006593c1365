"""Exact identities and planted truth for the bilinear core."""

import numpy as np
import pytest
import torch

from helpers import bilinear, preprocess, synthetic


@pytest.mark.parametrize("bias", [False, True])
def test_quadratic_form_equals_model(bias):
    torch.manual_seed(0)
    model = bilinear.BilinearMLP(30, 8, 4, bias=bias).eval()
    x = torch.randn(50, 30)
    y = model(x).detach().double().numpy()
    xa = np.c_[x.double().numpy(), np.ones(50)] if bias else x.double().numpy()
    for a in range(4):
        B = bilinear.interaction_matrix(model, a)
        assert np.allclose(B, B.T)
        q = np.einsum("ni,ij,nj->n", xa, B, xa)
        assert np.max(np.abs(q - y[:, a])) <= 1e-5 * np.max(np.abs(y[:, a]))
        # and through the eigendecomposition: y_a = sum_i lambda_i (u_i . x)^2
        vals, vecs = bilinear.eigendecompose(model, a)[a]
        recon = (bilinear.module_scores(x.numpy(), vecs, bias) ** 2) @ vals
        assert np.max(np.abs(recon - y[:, a])) <= 1e-5 * np.max(np.abs(y[:, a]))


@pytest.mark.parametrize("g,h", [(40, 6), (10, 8)])  # g > 2h and g < 2h
def test_low_rank_equals_dense_eigh(g, h):
    torch.manual_seed(1)
    model = bilinear.BilinearMLP(g, h, 3)
    eig = bilinear.eigendecompose(model)
    for a in range(3):
        dense = np.linalg.eigvalsh(bilinear.interaction_matrix(model, a))
        dense = dense[np.argsort(-np.abs(dense), kind="stable")]
        vals, vecs = eig[a]
        r = len(vals)
        assert r == min(g, 2 * h)
        np.testing.assert_allclose(vals, dense[:r], atol=1e-10)
        assert np.all(
            np.abs(dense[r:]) < 1e-10
        )  # everything outside the subspace is zero
        assert np.all(np.diff(np.abs(vals)) <= 1e-12)  # sorted by |lambda|
        np.testing.assert_allclose(vecs.T @ vecs, np.eye(r), atol=1e-8)
        B = bilinear.interaction_matrix(model, a)
        np.testing.assert_allclose(B @ vecs, vecs * vals, atol=1e-8)


def test_range_basis_cholesky_qr2_and_its_fallbacks(monkeypatch):
    """U = QR with orthonormal Q: Cholesky-QR2 when U is tall and well conditioned,
    Householder when U is wide or too ill-conditioned for the squared condition number
    (the Gram matrix not positive definite, or the first pass off orthogonal
    by > 0.1)."""
    rng = np.random.default_rng(0)
    tall = torch.from_numpy(rng.normal(size=(300, 40)))
    A, _, B = torch.linalg.svd(tall, full_matrices=False)

    def conditioned(decades):  # singular values over `decades`, mixed by rotations
        return A * torch.logspace(0, -decades, 40, dtype=torch.float64) @ B

    householder = []
    qr = torch.linalg.qr
    monkeypatch.setattr(torch.linalg, "qr", lambda U: householder.append(True) or qr(U))
    cases = {  # U → Householder expected; 8.5 decades passes Cholesky, not the 0.1 test
        "tall": (tall, False),
        "column scales over 9 decades": (tall * torch.logspace(0, -9, 40), False),
        "1e6 condition": (conditioned(6), False),
        "3e8 condition": (conditioned(8.5), True),
        "1e9 condition": (conditioned(9), True),
        "wide": (torch.from_numpy(rng.normal(size=(20, 40))), True),
    }
    for name, (U, expect_householder) in cases.items():
        householder.clear()
        Q, R = bilinear._range_basis(U.double())
        assert bool(householder) == expect_householder, name
        k = min(U.shape)
        assert Q.shape == (U.shape[0], k) and R.shape == (k, U.shape[1])
        np.testing.assert_allclose((Q.T @ Q).numpy(), np.eye(k), atol=1e-12)
        np.testing.assert_allclose((Q @ R).numpy(), U.double().numpy(), atol=1e-12)


def test_eigendecompose_rank_deficient_u_and_threads():
    """V = W makes U = [Wᵀ Vᵀ] rank h (a singular Gram matrix): eigenpairs still match
    dense eigh; splitting the outputs among threads changes nothing."""
    torch.manual_seed(2)
    model = bilinear.BilinearMLP(50, 6, 4)
    with torch.no_grad():
        model.V.copy_(model.W)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = bilinear.eigendecompose(model)
        torch.set_num_threads(3)
        three = bilinear.eigendecompose(model)
    finally:
        torch.set_num_threads(n)
    for a in range(4):
        np.testing.assert_array_equal(one[a][0], three[a][0])
        np.testing.assert_array_equal(one[a][1], three[a][1])
        B = bilinear.interaction_matrix(model, a)
        dense = np.linalg.eigvalsh(B)
        dense = dense[np.argsort(-np.abs(dense), kind="stable")]
        vals, vecs = one[a]
        np.testing.assert_allclose(vals, dense[: len(vals)], atol=1e-10)
        nz = np.abs(vals) > 1e-8
        assert nz.sum() == 6  # rank h
        np.testing.assert_allclose(B @ vecs[:, nz], vecs[:, nz] * vals[nz], atol=1e-8)


def test_eigenvectors_oriented_by_their_largest_entry():
    torch.manual_seed(3)
    model = bilinear.BilinearMLP(60, 10, 3)
    for vals, vecs in bilinear.eigendecompose(model).values():
        peak = vecs[np.abs(vecs).argmax(0), np.arange(vecs.shape[1])]
        assert (peak > 0).all()


def _planted(seed=0, n=1200, g=40):
    """Cells whose class depends on the co-expression of a known 5-gene module."""
    return synthetic.planted_module_classes(n=n, g=g, seed=seed)


def test_planted_module_recovered_by_leading_eigenvector():
    X, y, module = _planted(n=2000)
    split = preprocess.split_indices(y, seed=0)
    model = bilinear.BilinearMLP(X.shape[1], 16, 2, bias=True)
    model, hist = bilinear.train_bilinear(
        model,
        X,
        y,
        split,
        epochs=30,
        lr=1e-2,
        weight_decay=1e-3,
        batch_size=128,
        seed=0,
        progress=False,
    )
    assert hist["val_accuracy"].iloc[-1] > 0.85
    vals, vecs = bilinear.eigendecompose(model, 1)[1]
    cos = abs(vecs[: X.shape[1], 0] @ module) / np.linalg.norm(vecs[: X.shape[1], 0])
    assert cos >= 0.9


def test_regression_huber_and_history():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 10)).astype(np.float32)
    Y = np.c_[X[:, 0] * X[:, 1], X[:, 2] ** 2].astype(np.float32)
    split = preprocess.split_indices(400, seed=0)
    model = bilinear.BilinearMLP(10, 8, 2)
    model, hist = bilinear.train_bilinear(
        model,
        X,
        Y,
        split,
        task="regression",
        loss="huber",
        epochs=40,
        lr=1e-2,
        batch_size=32,
        seed=0,
        progress=False,
    )
    assert list(hist.columns[:2]) == ["epoch", "lr"] and len(hist) == 40
    assert hist["val_mae"].iloc[-1] < 0.3 * hist["val_mae"].iloc[0]


def test_training_is_deterministic():
    X, y, _ = _planted(n=300, g=30)
    split = preprocess.split_indices(y, seed=0)
    outs = []
    for _ in range(2):
        m, _h = bilinear.train_bilinear(
            bilinear.BilinearMLP(30, 4, 2, seed=5),
            X,
            y,
            split,
            epochs=3,
            seed=5,
            progress=False,
        )
        outs.append(bilinear.predict(m, X))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_annotate_keys_and_orientation():
    import anndata as ad

    X, y, module = _planted(n=600)
    adata = ad.AnnData(X)
    split = preprocess.split_indices(y, seed=0)
    model, _ = bilinear.train_bilinear(
        bilinear.BilinearMLP(X.shape[1], 8, 2),
        X,
        y,
        split,
        epochs=20,
        lr=3e-3,
        seed=0,
        progress=False,
    )
    onehot = np.eye(2)[y]
    bilinear.annotate(
        adata, model, ["rest", "active cells"], n_modules=2, targets=onehot
    )
    assert adata.varm["bilinear_active_cells_loadings"].shape == (X.shape[1], 2)
    vals, loadings, scores = bilinear.get_modules(adata, "active cells")
    assert scores is adata.obsm["bilinear_active_cells_scores"]
    assert scores.shape == (600, 2)
    for j in range(
        2
    ):  # oriented: every module score correlates non-negatively with its target
        assert np.corrcoef(scores[:, j], onehot[:, 1])[0, 1] >= 0
    np.testing.assert_allclose(scores, X @ loadings, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(vals, bilinear.eigendecompose(model, 1)[1][0])
    assert set(adata.uns["bilinear"]["eigenvalues"]) == {"rest", "active_cells"}
    params = adata.uns["bilinear"]["params"]
    assert params == {"n_modules": 2, "hidden": 8, "bias": False, "oriented": True}
    # a second call under another key keeps the first; unoriented modules differ in sign
    bilinear.annotate(
        adata, model, ["rest", "active cells"], n_modules=1, key_added="raw"
    )
    assert adata.uns["bilinear"]["params"]["n_modules"] == 2
    raw = bilinear.get_modules(adata, "active cells", key="raw")[1]
    assert raw.shape == (X.shape[1], 1)
    assert adata.uns["raw"]["params"]["oriented"] is False
    np.testing.assert_allclose(np.abs(raw[:, 0]), np.abs(loadings[:, 0]), atol=1e-6)
    with pytest.raises(KeyError, match="not in uns"):
        bilinear.get_modules(adata, "absent")
    with pytest.raises(KeyError, match="run bilinear.annotate"):
        bilinear.get_modules(adata, "rest", key="nothing")


def test_errors_name_the_problem():
    model = bilinear.BilinearMLP(5, 2, 2)
    X = np.zeros((10, 5), np.float32)
    with pytest.raises(ValueError, match="task="):
        bilinear.train_bilinear(
            model, X, np.zeros(10), {"train": [0], "val": [1]}, task="ranking"
        )
    with pytest.raises(ValueError, match="must match"):
        bilinear.train_bilinear(model, X, np.zeros(9), {"train": [0], "val": [1]})
    with pytest.raises(ValueError, match="use 'mse' or 'huber'"):
        bilinear.train_bilinear(
            model,
            X,
            np.zeros((10, 2)),
            {"train": [0], "val": [1]},
            task="regression",
            loss="l1",
        )


def test_module_tracking_orients_and_ranks_the_planted_module():
    """y = (u·x)² planted: the leading module is u, oriented so that its score rises
    with y."""
    rng = np.random.default_rng(3)
    g, n = 20, 1500
    u = np.zeros(g)
    u[[2, 5, 9]] = 1 / np.sqrt(3)
    X = (rng.normal(size=(n, g)) + 1.5).astype(
        np.float32
    )  # u·x ~ N(2.6, 1): almost always > 0
    y = ((X @ u) ** 2)[:, None].astype(np.float32)
    split = preprocess.split_indices(n, seed=0, stratify=False)
    model = bilinear.BilinearMLP(g, 8, 1, seed=0)
    model, _ = bilinear.train_bilinear(
        model,
        X,
        y,
        split,
        task="regression",
        epochs=60,
        lr=1e-2,
        batch_size=64,
        seed=0,
        progress=False,
    )
    tr = bilinear.module_tracking(
        model, X, y, idx=split["test"], n_modules=3, output_names=["y"]
    )
    assert list(tr.index) == [("y", 0), ("y", 1), ("y", 2)]
    assert tr.loc[("y", 0), "lambda"] > 0 and tr.loc[("y", 0), "rel_lambda"] == 1.0
    assert (
        tr.loc[("y", 0), "spearman"] > 0.95
    )  # oriented: positive, and the module carries y
    assert tr.loc[("y", 1), "rel_lambda"] < 0.2
    vecs = bilinear.orient(
        bilinear.eigendecompose(model, n_modules=1)[0][1], X, y[:, 0]
    )
    assert (
        vecs[[2, 5, 9], 0].min() > 0.5
    )  # the planted genes load positively after orientation


def test_fit_equals_building_and_training_by_hand():
    X, y, _ = _planted(n=300, g=30)
    split = preprocess.split_indices(y, seed=0)
    kw = dict(epochs=3, lr=1e-2, batch_size=32, progress=False)
    a, _ = bilinear.fit(X, y, split, hidden=4, bias=True, seed=7, **kw)
    b, _ = bilinear.train_bilinear(
        bilinear.BilinearMLP(30, 4, 2, bias=True, seed=7), X, y, split, seed=7, **kw
    )
    assert a.n_out == 2 and a.bias
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_settings_stored_with_model_and_global_rng_untouched():
    X, y, _ = _planted(n=300, g=30)
    split = preprocess.split_indices(y, seed=0)
    settings = bilinear.BilinearTrainSettings(epochs=2, lr=1e-2, batch_size=32, seed=3)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    np_before = np.random.get_state()[1].copy()
    model = bilinear.BilinearMLP(30, 4, 2, dropout=0.3, seed=3)
    model, _ = bilinear.train_bilinear(model, X, y, split, settings, progress=False)
    assert torch.equal(torch.get_rng_state(), before)  # dropout drew from a fork
    np.testing.assert_array_equal(np.random.get_state()[1], np_before)
    assert model.settings == settings
    # reproducible with dropout on, whatever the global state: same seed, same weights
    torch.manual_seed(999)
    fresh = lambda: bilinear.BilinearMLP(30, 4, 2, dropout=0.3, seed=3)
    again, _ = bilinear.train_bilinear(fresh(), X, y, split, settings, progress=False)
    for pa, pb in zip(model.parameters(), again.parameters()):
        assert torch.equal(pa, pb)
    # another seed through a keyword override
    other, _ = bilinear.train_bilinear(
        fresh(), X, y, split, settings, progress=False, seed=4
    )
    assert other.settings.seed == 4 and other.settings.epochs == 2
    assert not torch.equal(other.proj.weight, model.proj.weight)
    with pytest.raises(ValueError, match="task="):
        bilinear.BilinearTrainSettings(task="ranking")


def test_fit_repeats_and_split_repeats():
    X, y, _ = _planted(n=400, g=30)
    kw = dict(hidden=4, epochs=3, lr=1e-2, batch_size=32)
    runs = bilinear.fit_repeats(X, y, [0, 1], **kw)
    assert [r["seed"] for r in runs] == [0, 1]
    split1 = preprocess.split_indices(y, seed=1)
    one, _ = bilinear.fit(X, y, split1, seed=1, progress=False, **kw)
    np.testing.assert_array_equal(
        runs[1]["split"]["test"], preprocess.split_indices(y, seed=1)["test"]
    )
    for pa, pb in zip(runs[1]["model"].parameters(), one.parameters()):
        assert torch.equal(pa, pb)  # one seed drives the split, weights and training
    pred0 = bilinear.classes_of(runs[0]["model"], X)
    known = {0: (pred0, np.zeros_like(y))}
    table = bilinear.split_repeats(X, y, [0, 1], known=known, **kw)
    assert list(table.index) == [0, 1, "mean"]
    te0 = runs[0]["split"]["test"]
    assert table.loc[0, "bilinear test"] == bilinear.accuracy(pred0, y, te0)
    assert table.loc[0, "baseline test"] == float((y[te0] == 0).mean())  # as known
    pred1 = bilinear.classes_of(one, X)
    assert table.loc[1, "bilinear test"] == bilinear.accuracy(pred1, y, split1["test"])
    mean = table.iloc[:2]["bilinear test"].mean()
    assert table.loc["mean", "bilinear test"] == pytest.approx(mean)


def test_recipe_ablation_rows():
    X, y, _ = _planted(n=400, g=30)
    split = preprocess.split_indices(y, seed=0)
    recipes = {"a": dict(epochs=2, lr=1e-2), "b": dict(epochs=3, lr=1e-3)}
    table = bilinear.recipe_ablation(
        {30: X, 10: X[:, :10]},
        y,
        split,
        recipes,
        focus=1,
        focus_name="one",
        known={(30, "a"): y},
        hidden=4,
    )
    models = ("logistic baseline", "a", "b")
    assert list(table.index) == [(g, m) for g in (30, 10) for m in models]
    assert table.loc[(30, "a"), "test accuracy"] == 1.0  # known predictions: the truth
    assert list(table.columns) == ["validation accuracy", "test accuracy", "one (test)"]


def test_per_class_accuracy_by_hand():
    y = np.array([0, 0, 1, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 0, 2])
    t = bilinear.per_class_accuracy({"m": pred}, y, [0, 1, 2, 3, 4], ["a", "b", "c"])
    assert list(t.index) == ["a", "b", "c"] and list(t.columns) == ["m", "test cells"]
    assert t.loc["a", "m"] == 0.5 and t.loc["b", "m"] == pytest.approx(2 / 3)
    assert np.isnan(t.loc["c", "m"]) and t["test cells"].tolist() == [2, 3, 0]


def _noisy_continuous(n=600, g=300, a=0.15, seed=0):
    """A continuous latent t in g noisy genes (x = t·loading + noise); class t > 0."""
    rng = np.random.default_rng(seed)
    t = rng.normal(size=n)
    load = a * rng.choice([-1, 1], size=g)
    X = (t[:, None] * load + rng.normal(size=(n, g))).astype(np.float32)
    return X, (t > 0).astype(int)


def test_early_stopping_keeps_the_best_validation_epoch():
    import torch.nn.functional as F

    X, y = _noisy_continuous()
    split = preprocess.split_indices(y, seed=0)
    kw = dict(hidden=16, bias=True, epochs=12, lr=1e-2, seed=0, progress=False)
    last, h_last = bilinear.fit(X, y, split, **kw)
    best, h_best = bilinear.fit(X, y, split, restore_best=True, **kw)
    # the same epochs ran (stopping draws nothing); only the weights kept differ
    cols = ["epoch", "train_loss", "val_loss"]
    pd_eq = h_last[cols].to_numpy() == h_best[cols].to_numpy()
    assert pd_eq.all()
    k = int(h_best["val_loss"].idxmin())
    assert h_best.attrs["best_epoch"] == k + 1 == bilinear.best_epoch(h_best)
    assert h_best["best"].sum() == 1 and h_best["best"].iloc[k]
    assert h_last.attrs["best_epoch"] == 12 and not h_last.attrs["early_stopping"]
    # the model returned has the best epoch's weights: its validation loss is that
    # epoch's, not the last one's (which has risen: the last epoch overfits)
    va = split["val"]
    val_loss = lambda m: float(
        F.cross_entropy(
            torch.as_tensor(bilinear.predict(m, X[va])), torch.as_tensor(y[va])
        )
    )
    assert val_loss(best) == pytest.approx(h_best["val_loss"].iloc[k], rel=1e-5)
    assert val_loss(last) == pytest.approx(h_last["val_loss"].iloc[-1], rel=1e-5)
    assert val_loss(best) < 0.9 * val_loss(last)
    # patience stops training early, with the same kept epoch
    stopped, h_stop = bilinear.fit(X, y, split, patience=3, **kw)
    assert len(h_stop) <= k + 1 + 3 and h_stop.attrs["best_epoch"] == k + 1
    np.testing.assert_allclose(
        bilinear.predict(stopped, X), bilinear.predict(best, X), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="patience=0"):
        bilinear.BilinearTrainSettings(patience=0)


@pytest.mark.parametrize("bias", [False, True])
def test_truncated_outputs_with_every_module_are_the_model(bias):
    torch.manual_seed(0)
    model = bilinear.BilinearMLP(12, 5, 3, bias=bias)
    X = np.random.default_rng(0).normal(size=(40, 12))
    eig = bilinear.eigendecompose(model)
    full = bilinear.truncated_outputs(X, eig, bias=bias)
    np.testing.assert_allclose(full, bilinear.predict(model, X), rtol=1e-5, atol=1e-6)
    # one module per output: only the leading eigenpair's term
    vals, vecs = eig[1]
    one = bilinear.truncated_outputs(X, eig, 1, bias=bias)[:, 1]
    np.testing.assert_allclose(
        one, vals[0] * bilinear.module_scores(X, vecs[:, :1], bias)[:, 0] ** 2
    )
