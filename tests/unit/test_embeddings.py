"""Embeddings: encode reproduces the fitted embedding; clear errors without counts
or scGPT."""

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from helpers.embeddings import Embedding, fit_embedding, get_embedding, get_params


def toy_counts(n=240, g=60, seed=0):
    """Poisson counts from two cell groups with different gene programs."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 2, n)
    rate = rng.gamma(2.0, 1.0, size=(2, g))[group] * rng.uniform(0.5, 2, size=(n, 1))
    X = rng.poisson(rate).astype(np.float32)
    a = ad.AnnData(X=X)
    a.obs_names = [f"c{i}" for i in range(n)]
    a.var_names = [f"g{j}" for j in range(g)]
    a.layers["counts"] = sp.csr_matrix(X)
    return a


def test_pca_encode_equals_obsm():
    a = toy_counts()
    emb = fit_embedding(a, "pca", n_latent=8)
    assert isinstance(emb, Embedding) and emb.name == "pca" and emb.key == "X_pca"
    assert emb.genes == list(a.var_names) and emb.dim == 8
    Z = a.obsm["X_pca"]
    assert Z.shape == (a.n_obs, 8) and Z.dtype == np.float32
    X = a.layers["counts"]
    np.testing.assert_allclose(emb.encode(X, batch_size=50), Z, atol=1e-4)
    # dense input, a subset in another batch size: the same rows
    np.testing.assert_allclose(
        emb.encode(X[10:37].toarray(), batch_size=7), Z[10:37], atol=1e-4
    )
    assert get_params(a, key="X_pca")["method"] == "pca"
    np.testing.assert_array_equal(get_embedding(a, key="X_pca"), Z)
    # a second call with another key_added keeps the first one's results
    fit_embedding(a, "pca", n_latent=4, key_added="X_pca4")
    assert get_params(a, key="X_pca")["n_latent"] == 8
    assert get_params(a, key="X_pca4")["n_latent"] == 4
    np.testing.assert_array_equal(a.obsm["X_pca"], Z)
    with pytest.raises(KeyError, match="fit_embedding"):
        get_params(a, key="X_other")


def test_scvi_encode_equals_latent_representation(tmp_path):
    a = toy_counts()
    kw = dict(
        n_latent=4,
        max_epochs=2,
        output_dir=tmp_path,
        seed=0,
        progress=False,
        train_kwargs=dict(batch_size=64),
    )
    emb = fit_embedding(a, "scvi", **kw)
    X = a.layers["counts"]
    lat = emb.model.get_latent_representation()
    Z = emb.encode(X, batch_size=33)
    assert Z.shape == (a.n_obs, 4) and Z.dtype == np.float32
    np.testing.assert_allclose(Z, lat, atol=1e-5)
    np.testing.assert_allclose(a.obsm["X_scvi"], lat, atol=1e-5)
    assert "saved_to" in emb.settings
    # the same settings reuse the saved model: no training, identical embedding
    b = toy_counts()
    emb2 = fit_embedding(b, "scvi", **kw)
    assert emb2.settings["loaded_from"] == emb.settings["saved_to"]
    np.testing.assert_allclose(b.obsm["X_scvi"], a.obsm["X_scvi"], atol=1e-6)
    # scvi's setup_anndata wrote nothing into the user's object
    assert not any(c.startswith("_scvi") for c in a.obs.columns)


def test_scvi_with_batch_key_encodes_counts_alone(tmp_path):
    a = toy_counts()
    a.obs["batch"] = np.where(np.arange(a.n_obs) % 2 == 0, "b0", "b1")
    kw = dict(
        n_latent=4,
        max_epochs=2,
        output_dir=tmp_path,
        seed=0,
        progress=False,
        batch_key="batch",
    )
    emb = fit_embedding(a, "scvi", **kw)
    assert (
        emb.settings["batch_key"] == "batch" and emb.model.summary_stats["n_batch"] == 2
    )
    # the encoder ignores the batch: encode() without labels equals scvi's own latent
    # representation
    np.testing.assert_allclose(
        emb.encode(a.layers["counts"]), emb.model.get_latent_representation(), atol=1e-5
    )
    # the batch labels are part of the cache key: other labels train a new model
    a2 = toy_counts()
    a2.obs["batch"] = "b0"
    emb2 = fit_embedding(a2, "scvi", **kw)
    assert "loaded_from" not in emb2.settings
    with pytest.raises(KeyError, match="batch_key 'donor' is not an obs column"):
        fit_embedding(
            a, "scvi", n_latent=4, max_epochs=1, batch_key="donor", progress=False
        )
    with pytest.raises(ValueError, match="encode_covariates=True"):
        fit_embedding(
            a,
            "scvi",
            n_latent=4,
            max_epochs=1,
            progress=False,
            model_kwargs=dict(encode_covariates=True),
        )


@pytest.mark.parametrize("method", ["scvi", "pca"])
def test_encode_swaps_equals_encoding_the_perturbed_rows(method, tmp_path):
    """scVI's first-layer route (and PCA's generic one) embed one-gene swaps exactly."""
    a = toy_counts()
    kw = (
        dict(max_epochs=2, progress=False, train_kwargs=dict(batch_size=64))
        if method == "scvi"
        else {}
    )
    emb = fit_embedding(a, method, n_latent=4, seed=0, **kw)
    if method == "scvi":
        # the fast route is the one under test
        assert emb._first_layer_route() is not None
    X = a.layers["counts"].toarray()[:5]
    rng = np.random.default_rng(1)
    rows, genes = rng.integers(0, 5, 300), rng.integers(0, a.n_vars, 300)
    values = rng.poisson(3.0, 300).astype(np.float32)
    R = X[rows].copy()
    R[np.arange(300), genes] = values
    np.testing.assert_allclose(
        emb.encode_swaps(X, rows, genes, values, batch_size=64),
        emb.encode(R),
        rtol=1e-5,
        atol=1e-5,
    )


def test_no_counts_errors():
    a = toy_counts()
    del a.layers["counts"]
    with pytest.raises(KeyError, match=r"layer 'counts' not found.*layer=None"):
        fit_embedding(a, "scvi")
    a.X = np.log1p(a.X)  # log-normalised values are not counts
    with pytest.raises(ValueError, match=r"X holds non-integer values.*layer='counts'"):
        fit_embedding(a, "pca", layer=None)
    with pytest.raises(KeyError, match=r"obsm\['X_nothing'\] not found"):
        fit_embedding(a, "obsm:X_nothing")


def test_scgpt_without_package_or_weights(tmp_path, monkeypatch):
    a = toy_counts()
    monkeypatch.delenv("BOOK_SCGPT_DIR", raising=False)
    with pytest.raises(RuntimeError, match=r"pip install scgpt.*BOOK_SCGPT_DIR"):
        fit_embedding(a, "scgpt")
    (tmp_path / "args.json").write_text("{}")
    monkeypatch.setenv("BOOK_SCGPT_DIR", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"lacks best_model.pt, vocab.json"):
        fit_embedding(a, "scgpt")


def test_precomputed_embedding():
    a = toy_counts()
    a.obsm["X_given"] = np.random.default_rng(0).normal(size=(a.n_obs, 5))
    emb = fit_embedding(a, "obsm:X_given")
    assert emb.key == "X_given" and emb.dim == 5
    with pytest.raises(RuntimeError, match="cannot embed new or perturbed cells"):
        emb.encode(a.X)
    W = np.random.default_rng(1).normal(size=(a.n_vars, 5))
    emb = fit_embedding(a, "obsm:X_given", encoder=lambda X: np.log1p(X) @ W)
    np.testing.assert_allclose(
        emb.encode(a.X, batch_size=100), np.log1p(a.X) @ W, rtol=1e-5
    )
    with pytest.raises(ValueError, match="embedding.genes order"):
        emb.encode(a.X[:, :10])
    with pytest.raises(ValueError, match="Unknown embedding method"):
        fit_embedding(a, "umap")
