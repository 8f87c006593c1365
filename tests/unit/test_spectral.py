"""Transcriptional frequencies: known spectra, connectivity, sparse = dense,
AnnData keys, and planted truth for the bilinear regressor of a frequency-like
target."""

import warnings

import anndata as ad
import numpy as np
import pytest
import scipy.linalg
import scipy.sparse as sp

from helpers import bilinear, preprocess, spectral, synthetic


def _path(n):
    i = np.arange(n - 1)
    A = sp.coo_matrix((np.ones(n - 1), (i, i + 1)), shape=(n, n))
    return sp.csr_matrix(A + A.T)


def _ring(n):
    i = np.arange(n)
    A = sp.coo_matrix((np.ones(n), (i, (i + 1) % n)), shape=(n, n))
    return sp.csr_matrix(A + A.T)


def _trajectory(n, d=30, n_branches=3, noise=0.1, seed=0):
    """A branching trajectory (synthetic.trajectory) and its planted pseudotime."""
    return synthetic.trajectory(n, d=d, n_branches=n_branches, noise=noise, seed=seed)


def _assert_same_eigenspaces(vals, vecs, vals_ref, vecs_ref, tol=1e-6):
    """Eigenvalues equal; eigenvectors equal up to sign, or as subspaces for
    degenerate λ."""
    np.testing.assert_allclose(vals, vals_ref, atol=tol)
    groups = np.split(
        np.arange(len(vals)), np.flatnonzero(np.diff(vals_ref) > 1e-6) + 1
    )
    for g in groups:
        overlap = np.linalg.svd(vecs_ref[:, g].T @ vecs[:, g], compute_uv=False)
        assert overlap.min() > 1 - 1e-6, (g, overlap)
        if len(g) == 1:
            # fixed sign convention: both sides put the largest-|entry| positive
            assert vecs[:, g].ravel() @ vecs_ref[:, g].ravel() > 1 - 1e-6


@pytest.mark.parametrize("solver", ["dense", "lobpcg"])
def test_path_graph_spectrum(solver):
    n = 400 if solver == "dense" else 3000
    L = spectral.laplacian(_path(n))
    vals, vecs, info = spectral.smallest_eigenpairs(L, 6, solver=solver)
    expected = 2 - 2 * np.cos(np.pi * np.arange(6) / n)
    np.testing.assert_allclose(vals, expected, atol=1e-8)
    np.testing.assert_allclose(vecs.T @ vecs, np.eye(6), atol=1e-8)
    # the first nontrivial eigenvector of a path is cos(pi (i + 1/2) / n), up to sign
    ref = np.cos(np.pi * (np.arange(n) + 0.5) / n)
    ref /= np.linalg.norm(ref)
    assert abs(vecs[:, 1] @ ref) > 1 - 1e-8
    assert info["solver"].startswith(solver)


@pytest.mark.parametrize("solver", ["dense", "lobpcg"])
def test_ring_spectrum_with_degenerate_pairs(solver):
    n = 300 if solver == "dense" else 2500
    L = spectral.laplacian(_ring(n))
    # 0, then two pairs
    vals, vecs, _ = spectral.smallest_eigenpairs(L, 5, solver=solver)
    expected = 2 - 2 * np.cos(2 * np.pi * np.array([0, 1, 1, 2, 2]) / n)
    np.testing.assert_allclose(vals, expected, atol=1e-8)
    # a degenerate pair is any rotation of span{cos, sin}: compare subspaces
    i = np.arange(n)
    for m, cols in [(1, [1, 2]), (2, [3, 4])]:
        ref = np.c_[np.cos(2 * np.pi * m * i / n), np.sin(2 * np.pi * m * i / n)]
        ref /= np.linalg.norm(ref, axis=0)
        overlap = np.linalg.svd(ref.T @ vecs[:, cols], compute_uv=False)
        assert overlap.min() > 1 - 1e-8


def test_normalized_laplacian_of_ring_is_scaled():
    # the ring is 2-regular, so I - D^-1/2 A D^-1/2 = L / 2
    L = spectral.laplacian(_ring(200), normalized=True)
    vals, _, _ = spectral.smallest_eigenpairs(L, 3, solver="dense")
    np.testing.assert_allclose(
        vals, (1 - np.cos(2 * np.pi * np.array([0, 1, 1]) / 200)), atol=1e-10
    )


def test_disconnected_graph_zero_multiplicity_and_error():
    blocks = [_path(50), _ring(60), _path(70)]
    A = sp.block_diag(blocks, format="csr")
    vals, _, _ = spectral.smallest_eigenpairs(spectral.laplacian(A), 5, solver="dense")
    assert np.sum(np.abs(vals) < 1e-10) == 3  # one zero per component
    assert vals[3] > 1e-4
    with pytest.raises(
        ValueError, match=r"3 connected components.*larger k.*largest component"
    ):
        spectral.check_connected(A)
    with pytest.warns(UserWarning, match="multiplicity 3"):
        assert spectral.check_connected(A, allow_disconnected=True) == 3
    mask = spectral.largest_component(A)
    assert mask.sum() == 70 and mask[-70:].all()


def test_frequencies_on_disconnected_data_raises_with_fix():
    rng = np.random.default_rng(0)
    far = np.zeros((2, 20))
    # two orthogonal clusters: cosine neighbours never cross
    far[0, :10], far[1, 10:] = 1, 1
    X = np.repeat(far, 100, axis=0) + 0.01 * rng.random((200, 20))
    with pytest.raises(
        ValueError, match="2 connected components.*Fix: build the graph with a larger k"
    ):
        spectral.frequencies(ad.AnnData(X.astype(np.float32)), n_freqs=3, k=5)


def test_knn_graph_is_binary_symmetric_union():
    X, _ = _trajectory(500, seed=1)
    A = spectral.knn_graph(X, k=10)
    assert (A != A.T).nnz == 0
    assert set(np.unique(A.data)) == {1.0}
    assert A.diagonal().sum() == 0
    deg = np.asarray(A.sum(1)).ravel()
    assert deg.min() >= 10  # union: every cell keeps at least its own k neighbours
    M = spectral.knn_graph(X, k=10, mode="mutual")
    assert M.nnz < A.nnz and (M.multiply(A) != M).nnz == 0  # mutual ⊂ union
    # cosine: rescaling a cell does not change the graph
    X2 = X * np.random.default_rng(2).uniform(0.5, 3, (len(X), 1))
    assert (spectral.knn_graph(X2, k=10) != A).nnz == 0
    with pytest.raises(ValueError, match="all-zero profile"):
        spectral.knn_graph(np.vstack([X, np.zeros(X.shape[1])]), k=10)


def test_sparse_equals_dense_on_clustered_cells():
    X, _ = _trajectory(2000, noise=0.15, seed=3)
    L = spectral.laplacian(spectral.knn_graph(X, k=15))
    vals, vecs, info = spectral.smallest_eigenpairs(L, 11, solver="lobpcg")
    assert info["solver"] == "lobpcg+amg"
    ref_vals, ref_vecs = scipy.linalg.eigh(L.toarray(), subset_by_index=[0, 10])
    spectral.fix_signs(ref_vecs)
    _assert_same_eigenspaces(vals, vecs, ref_vals, ref_vecs)
    # deterministic: same seed, same bits
    vals2, vecs2, _ = spectral.smallest_eigenpairs(L, 11, solver="lobpcg")
    np.testing.assert_array_equal(vals, vals2)
    np.testing.assert_array_equal(vecs, vecs2)


def test_frequencies_writes_anndata_keys_and_tracks_pseudotime():
    X, t = _trajectory(1500, n_branches=1, noise=0.05, seed=4)  # one long axis
    adata = ad.AnnData(X.astype(np.float32))
    out = spectral.frequencies(adata, n_freqs=4, k=15)
    assert out is adata
    lam, F = spectral.get_frequencies(adata)
    assert F is adata.obsm["X_freq"] and F.shape == (1500, 4)
    np.testing.assert_allclose(F.T @ F, np.eye(4), atol=1e-8)
    assert np.abs(F.sum(0)).max() < 1e-6  # orthogonal to the dropped constant vector
    u = adata.uns["freq"]
    for key in ("eigenvalues", "n_components", "solver", "eigenvalue_0", "params"):
        assert key in u
    p = u["params"]
    assert p["k"] == 15 and p["graph"] == "cosine" and p["normalized"] is False
    assert p["n_freqs"] == 4 and p["use_rep"] == "X"
    np.testing.assert_array_equal(lam, u["eigenvalues"])
    assert u["n_components"] == 1 and abs(u["eigenvalue_0"]) < 1e-8
    assert len(u["eigenvalues"]) == 4 and np.all(np.diff(u["eigenvalues"]) >= 0)
    assert u["eigenvalues"][0] > 1e-4
    # eigenpairs really are eigenpairs of the stored graph's Laplacian
    L = spectral.laplacian(spectral.knn_graph(X, k=15))
    np.testing.assert_allclose(L @ F, F * u["eigenvalues"], atol=1e-6)
    # the lowest frequency runs along the trajectory: monotone in pseudotime
    from scipy.stats import spearmanr

    assert abs(spearmanr(F[:, 0], t).statistic) > 0.9
    # sign convention: the largest-|entry| of each column is positive
    assert np.all(F[np.abs(F).argmax(0), np.arange(4)] > 0)


def test_frequencies_options_and_input_errors():
    X, _ = _trajectory(600, seed=5)
    adata = ad.AnnData(X.astype(np.float32))
    adata.obsm["X_rep"] = X[:, :10]
    spectral.frequencies(
        adata, n_freqs=3, k=10, normalized=True, use_rep="X_rep", key_added="F"
    )
    assert adata.obsm["X_F"].shape == (600, 3) and "freq" not in adata.uns
    assert adata.uns["F"]["params"]["normalized"] is True
    assert adata.uns["F"]["params"]["use_rep"] == "X_rep"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spectral.frequencies(adata, n_freqs=3, k=10, graph="scanpy", use_rep="X_rep")
    assert adata.uns["freq"]["params"]["graph"] == "scanpy"
    assert adata.obsm["X_freq"].shape == (600, 3)
    # the second call under the default key left the first result in place
    assert adata.uns["F"]["params"]["graph"] == "cosine"
    assert adata.obsm["X_F"].shape == (600, 3)
    assert not np.allclose(np.abs(adata.obsm["X_F"]), np.abs(adata.obsm["X_freq"]))
    with pytest.raises(KeyError, match="no frequencies under key 'nope'"):
        spectral.get_frequencies(adata, key="nope")
    with pytest.raises(ValueError, match="graph must be 'cosine' or 'scanpy'"):
        spectral.frequencies(adata, graph="umap")
    with pytest.raises(KeyError, match="obsm\\['nope'\\] not found"):
        spectral.frequencies(adata, use_rep="nope")
    with pytest.raises(ValueError, match="not symmetric"):
        spectral.laplacian(sp.csr_matrix(np.triu(np.ones((4, 4)), 1)))
    with pytest.raises(
        ValueError, match="k=700 must be smaller than the number of cells"
    ):
        spectral.knn_graph(X, k=700)


def test_bilinear_regressor_recovers_planted_quadratic_module():
    """Targets quadratic in a known gene module (a frequency-like axis): the regressor's
    leading eigenvector for that output is the module (|cosine| >= 0.9)."""
    n, g = 2000, 40
    X, module = synthetic.planted_module(
        n, g, genes=[2, 5, 11, 17, 29, 33], signs=[1, 1, 1, -1, -1, 1]
    )
    y = (X @ module) ** 2 + 0.05 * np.random.default_rng(1).normal(size=n)
    # standardised, as in the chapter
    Y = ((y - y.mean()) / y.std()).astype(np.float32)[:, None]
    split = preprocess.split_indices(n, seed=0, stratify=False)
    model = bilinear.BilinearMLP(g, 16, 1)
    model, hist = bilinear.train_bilinear(
        model,
        X,
        Y,
        split,
        task="regression",
        loss="huber",
        epochs=20,
        lr=3e-3,
        weight_decay=1e-4,
        batch_size=128,
        device="cpu",
        seed=0,
        progress=False,
    )
    assert hist["val_mae"].iloc[-1] < 0.5 * hist["val_mae"].iloc[0]
    vals, vecs = bilinear.eigendecompose(model, 0)[0]
    assert abs(vecs[:, 0] @ module) >= 0.9
    assert abs(vals[0]) > 3 * abs(vals[1])  # one dominant module


def test_fit_frequencies_standardises_and_ablation_rows():
    """The frequency regressor recovers a planted quadratic target in its own units."""
    n, g = 1200, 20
    X, module = synthetic.planted_module(n, g, genes=[1, 4, 7], seed=2)
    F = np.c_[(X @ module) ** 2, X[:, 0] * X[:, 3]] * 0.01  # tiny, as unit-norm vectors
    split = preprocess.split_indices(n, seed=0, stratify=False)
    model, _ = spectral.fit_frequencies(
        X, F, split, hidden=8, loss="mse", epochs=30, lr=1e-2, progress=False
    )
    mu, sd = model.target_scale
    np.testing.assert_allclose(mu, F[split["train"]].mean(0))
    pred = spectral.predict_frequencies(model, X)
    from sklearn.metrics import r2_score

    assert r2_score(F[split["test"], 0], pred[split["test"], 0]) > 0.9
    table = spectral.seed_ablation(
        X,
        F,
        [0, 1],
        [1e-4, 1.0],
        names=["f0", "f1"],
        hidden=8,
        loss="mse",
        epochs=3,
        lr=1e-2,
    )
    assert len(table) == 4
    assert list(table["weight decay"]) == ["0.0001", "1", "0.0001", "1"]
    expected = {"val R² (frequency 0)", "ρ module 0", "best |ρ| (first modules)"}
    assert expected <= set(table)
