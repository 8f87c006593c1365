"""Top-K SAE: exact identities, the unit-norm constraint, planted dictionary,
aux loss."""

import dataclasses
import math

import anndata as ad
import numpy as np
import pytest
import torch
from torch import nn

from helpers.sae import (
    SAELoss,
    SAETrainSettings,
    TopKSAE,
    annotate,
    get_concepts,
    get_metrics,
    get_params,
    reconstruction_r2,
    sae_loss,
    sae_metrics,
    scale_sweep,
    train_sae,
)
from helpers.synthetic import planted_sparse_codes, unit_dictionary


def planted(n=3000, d=32, c=48, k=3, seed=0):
    """Embeddings that are sparse non-negative combinations of c unit atoms."""
    D = unit_dictionary(c, d, seed=seed)
    return planted_sparse_codes(n, D, k, seed=seed + 1)[0], D


def test_k_equals_c_is_a_relu_autoencoder():
    torch.manual_seed(1)
    d, c = 7, 11
    m = TopKSAE(d, c, k=c)
    with torch.no_grad():  # move every parameter away from its initial value
        m.b_pre.normal_()
        m.encoder.weight.normal_()
        m.encoder.bias.normal_()
    z = np.random.default_rng(0).normal(size=(20, d)).astype(np.float32)
    We = m.encoder.weight.detach().numpy().astype(np.float64)
    be = m.encoder.bias.detach().numpy().astype(np.float64)
    Wd = m.decoder.weight.detach().numpy().astype(np.float64)
    bp = m.b_pre.detach().numpy().astype(np.float64)
    pre = (z - bp) @ We.T + be
    acts = np.maximum(pre, 0)
    z_hat = acts @ Wd.T + bp
    z_hat_t, acts_t, pre_t = m(torch.from_numpy(z))
    np.testing.assert_allclose(pre_t.detach().numpy(), pre, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(acts_t.detach().numpy(), acts, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(z_hat_t.detach().numpy(), z_hat, rtol=1e-5, atol=1e-5)
    # numpy in, numpy out (batched, no gradient), same numbers
    acts_np, z_hat_np = m.encode_numpy(z, batch_size=7, reconstruct=True)
    np.testing.assert_allclose(acts_np, acts, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(z_hat_np, z_hat, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m.encode_numpy(z), acts_np, rtol=1e-5, atol=1e-5)
    assert acts_np.dtype == np.float32


def test_topk_keeps_k_largest_then_relu():
    torch.manual_seed(0)
    m = TopKSAE(6, 40, k=5)
    z = torch.randn(30, 6)
    _, acts, pre = m(z)
    assert ((acts > 0).sum(1) <= 5).all()
    top = pre.topk(5, dim=1).indices
    expected = torch.zeros_like(pre).scatter(1, top, pre.gather(1, top).clamp_min(0))
    assert torch.equal(acts, expected)


def test_tied_init_and_unit_atoms():
    torch.manual_seed(0)
    m = TopKSAE(10, 30, 3)
    W = m.decoder.weight.detach()
    assert W.shape == (10, 30)
    np.testing.assert_allclose(W.norm(dim=0).numpy(), 1.0, atol=1e-6)
    assert torch.equal(m.encoder.weight.detach(), W.t())
    assert m.dictionary.shape == (30, 10)
    assert m.k_aux == 5  # d // 2


def test_decoder_columns_stay_unit_norm_and_grad_projection():
    Z, _ = planted(n=600, d=16, c=20)
    m, hist = train_sae(Z, c=40, k=3, lr=1e-2, epochs=5, batch_size=64, progress=False)
    np.testing.assert_allclose(np.linalg.norm(m.dictionary, axis=1), 1.0, atol=1e-5)
    assert len(hist) == 5 and {"loss", "recon", "aux", "val_r2", "n_dead"} <= set(
        hist.columns
    )
    # the projected gradient has no component along its column
    m.train()
    loss = sae_loss(m, torch.from_numpy(Z[:64])).total
    loss.backward()
    m.project_decoder_grad()
    W, G = m.decoder.weight.detach(), m.decoder.weight.grad
    assert G.abs().max() > 0
    np.testing.assert_allclose((W * G).sum(0).numpy(), 0.0, atol=1e-7)


def test_planted_dictionary_is_recovered():
    Z, D = planted()
    m, _ = train_sae(
        Z, c=48, k=3, lr=3e-3, epochs=100, batch_size=256, seed=0, progress=False
    )
    best = np.abs(D @ m.dictionary.T).max(axis=1)  # each true atom's best learned match
    assert best.mean() >= 0.9, best
    met = sae_metrics(m, Z)
    assert met["r2"] > 0.9 and met["l0"] <= 3


def test_aux_loss_reaches_dead_latents_only():
    torch.manual_seed(0)
    m = TopKSAE(8, 64, k=2, k_aux=4)
    z = torch.randn(32, 8)
    with torch.no_grad():
        acts = m.encode(z)
    dead = ~(acts > 0).any(0)  # latents silent on this batch
    assert dead.sum() > 10
    grads = {}
    for coef in (0.0, 1 / 32):
        m.zero_grad()
        sae_loss(m, z, dead, aux_coef=coef).total.backward()
        grads[coef] = m.encoder.weight.grad[dead].abs().sum(1)
    # without the aux loss, latents outside every top-k get no gradient at all
    assert torch.all(grads[0.0] == 0)
    # with it, the top-k_aux dead latents of each sample are trained
    assert (grads[1 / 32] > 0).sum() >= 4
    pre = m.pre_activations(z).detach()
    a_aux = m.aux_activations(pre, dead)
    assert torch.all(a_aux[:, ~dead] == 0) and ((a_aux > 0).sum(1) <= 4).all()


def test_deterministic_given_seed():
    Z, _ = planted(n=500, d=12, c=10)
    kw = dict(c=30, k=3, lr=1e-3, epochs=3, batch_size=128, progress=False)
    m1, h1 = train_sae(Z, seed=3, **kw)
    m2, h2 = train_sae(Z, seed=3, **kw)
    m3, _ = train_sae(Z, seed=4, **kw)
    for (n, p1), p2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(p1, p2), n
    np.testing.assert_array_equal(h1["loss"].to_numpy(), h2["loss"].to_numpy())
    assert not torch.equal(m1.decoder.weight, m3.decoder.weight)


def test_r2_definition_and_metrics():
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(50, 4)) * [1, 2, 3, 4] + [10, 0, -5, 1]
    noise = rng.normal(size=Z.shape) * 0.1
    expected = 1 - (noise**2).sum() / ((Z - Z.mean(0)) ** 2).sum()
    assert reconstruction_r2(Z, Z + noise) == pytest.approx(expected)
    assert reconstruction_r2(Z, np.tile(Z.mean(0), (50, 1))) == pytest.approx(0.0)


def test_sweep_and_annotate():
    Z, _ = planted(n=400, d=12, c=10)
    table = scale_sweep(Z, configs=[(20, 2), (40, 4, 3e-3)], epochs=2, progress=False)
    assert list(table[["c", "k"]].itertuples(index=False, name=None)) == [
        (20, 2),
        (40, 4),
    ]
    assert table["lr"].tolist() == [1e-4, 3e-3]
    assert {"r2", "l0", "n_active", "n_dead", "seconds"} <= set(table.columns)
    assert (table["n_active"] + table["n_dead"] == table["c"]).all()
    table, models = scale_sweep(
        Z,
        configs=[(20, 2)],
        epochs=2,
        progress=False,
        return_models=True,
        min_active_cells=5,
    )
    n_cells = (models[(20, 2)].encode_numpy(Z) > 0).sum(0)
    assert table.loc[0, "median cells/concept"] == np.median(n_cells)
    assert table.loc[0, "concepts >= 5 cells"] == (n_cells >= 5).sum()

    m, _ = train_sae(Z, c=20, k=2, epochs=2, progress=False)
    adata = ad.AnnData(np.zeros((400, 3), dtype=np.float32))
    adata.obsm["X_emb"] = Z
    annotate(adata, m, use_rep="X_emb")
    acts = get_concepts(adata)
    assert acts is adata.obsm["sae_concepts"]
    assert acts.shape == (400, 20) and acts.dtype == np.float32
    np.testing.assert_array_equal(acts, m.encode_numpy(Z))
    params = get_params(adata)
    assert params["k"] == 2 and params["use_rep"] == "X_emb"
    assert params["train"]["epochs"] == 2 and params["train"]["n_train"] == 360
    assert get_metrics(adata) == sae_metrics(m, Z)
    with pytest.raises(KeyError, match="obsm\\['X_missing'\\] not found"):
        annotate(adata, m, use_rep="X_missing")


def test_second_key_added_does_not_overwrite_the_first():
    Z, _ = planted(n=300, d=12, c=10)
    m1, _ = train_sae(Z, c=20, k=2, epochs=2, progress=False)
    m2, _ = train_sae(Z, c=30, k=3, epochs=2, seed=1, progress=False)
    adata = ad.AnnData(np.zeros((300, 3), dtype=np.float32))
    adata.obsm["X_emb"] = Z
    annotate(adata, m1, use_rep="X_emb")
    first = get_concepts(adata).copy()
    annotate(adata, m2, use_rep="X_emb", key_added="sae_big", sparse=True)
    np.testing.assert_array_equal(get_concepts(adata), first)
    assert get_params(adata)["c"] == 20 and get_params(adata, key="sae_big")["c"] == 30
    big = get_concepts(adata, key="sae_big")
    assert big is adata.obsm["sae_big_concepts"] and big.shape == (300, 30)
    np.testing.assert_array_equal(big.toarray(), m2.encode_numpy(Z))
    with pytest.raises(KeyError, match="annotate"):
        get_concepts(adata, key="nothing")


def test_settings_are_stored_with_the_model():
    Z, _ = planted(n=200, d=8, c=6)
    s = SAETrainSettings(epochs=2, batch_size=64, lr=1e-3, seed=5, progress=False)
    m, _ = train_sae(Z, 12, 2, s, device="cpu")
    # resolved: dead_after = the training split, device a string; the rest as given
    assert m.settings == dataclasses.replace(s, dead_after=180, device="cpu")
    assert m.fit_record["n_train"] == 180 and m.fit_record["n_val"] == 20
    with pytest.raises(ValueError, match="init must be"):
        SAETrainSettings(init="mode")
    with pytest.raises(ValueError, match="val_fraction"):
        train_sae(Z, 12, 2, s, val_fraction=1.0)


def test_loss_terms_add_up():
    Z, _ = planted(n=200, d=8, c=6)
    torch.manual_seed(0)
    m = TopKSAE(8, 40, k=2, k_aux=4)
    z = torch.from_numpy(Z[:50])
    dead = torch.zeros(40, dtype=torch.bool)
    dead[::2] = True
    loss = sae_loss(m, z, dead, aux_coef=0.25, scale=3.0)
    assert isinstance(loss, SAELoss)
    assert loss._fields == ("total", "recon", "aux", "acts")
    assert float(loss.aux.detach()) > 0
    torch.testing.assert_close(loss.total, loss.recon + 0.25 * loss.aux)
    z_hat = m(z)[0]
    torch.testing.assert_close(loss.recon, 3.0 * ((z - z_hat) ** 2).mean())
    assert torch.equal(loss.acts, m.encode(z))


def test_generator_seeding_reproduces_the_global_seed_stream_and_leaves_it_alone():
    d, c = 9, 25
    # what torch.manual_seed(s) + nn.Linear's own init + randn gave before generators
    torch.manual_seed(7)
    nn.Linear(d, c), nn.Linear(c, d, bias=False)
    w = torch.randn(d, c)
    expected = w / w.norm(dim=0, keepdim=True)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    m = TopKSAE(d, c, 3, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(m.decoder.weight.detach(), expected, rtol=0, atol=0)
    Z, _ = planted(n=300, d=d, c=6)
    m1, h1 = train_sae(Z, c, 3, epochs=2, batch_size=64, seed=7, progress=False)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG was not touched
    torch.manual_seed(999)  # another global state: same model
    m2, h2 = train_sae(Z, c, 3, epochs=2, batch_size=64, seed=7, progress=False)
    for (n, p1), p2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(p1, p2), n
    assert math.isfinite(h1["val_r2"].iloc[-1])


def test_errors():
    with pytest.raises(ValueError, match="k must be"):
        TopKSAE(4, 10, k=11)
    with pytest.raises(ValueError, match="NaN"):
        train_sae(np.full((10, 3), np.nan), c=5, k=1, epochs=1, progress=False)


def test_paper_settings_follow_table3():
    from helpers.sae import PAPER_RECIPE, paper_row, paper_settings, paper_table3

    t = paper_table3()
    ts = t[t["dataset"] == "Tabula Sapiens Immune"].set_index("c")
    for c in (200, 500, 1000, 2000, 5000):
        s = paper_settings(c)
        assert s.batch_size == PAPER_RECIPE["batch_size"] == 1024
        assert s.k_aux == PAPER_RECIPE["k_aux"] == 512
        assert s.lr == ts.loc[c, "lr"] and s.epochs == ts.loc[c, "epochs"]
    assert paper_settings(500).lr == 1e-4 and paper_settings(500).epochs == 1500
    assert paper_settings(2000).lr == 5e-4
    assert paper_settings(500, "Cross-tissue Immune Cell Atlas").epochs == 2000
    assert int(paper_row(100)["c"]) == 200 and int(paper_row(700)["c"]) == 500
    assert paper_settings(500, epochs=30, seed=3).epochs == 30
    with pytest.raises(ValueError, match="Table 3"):
        paper_row(500, "nope")


def test_settings_k_aux_is_capped_by_c_and_by_dead_latents():
    Z, _ = planted(n=300, d=8, c=12, k=2)
    model, _ = train_sae(
        Z, 20, 2, SAETrainSettings(epochs=1, k_aux=512, progress=False, device="cpu")
    )
    assert model.k_aux == 20 and model.settings.k_aux == 512
    pre = torch.randn(5, 20)
    dead = torch.zeros(20, dtype=torch.bool)
    dead[[3, 7, 11]] = True
    aux = model.aux_activations(pre, dead)
    assert ((aux != 0).sum(1) <= 3).all() and (aux[:, ~dead] == 0).all()
    explicit, _ = train_sae(
        Z, 20, 2, SAETrainSettings(epochs=1, k_aux=512, progress=False), k_aux=4
    )
    assert explicit.k_aux == 4
    table = scale_sweep(
        Z, [(20, 2, {"lr": 5e-4, "epochs": 2})], epochs=1, progress=False, device="cpu"
    )
    assert table.loc[0, "lr"] == 5e-4 and table.loc[0, "epochs"] == 2


def test_paper_sae_rows_agree_with_paper_settings():
    from helpers import sae as sae_mod
    from helpers.stability import PAPER_STABILITY

    st = sae_mod.paper_settings(500)
    rows = sae_mod.paper_sae_rows(500, 8, st.lr, st.epochs, "Table 3")
    assert (
        rows["SAE learning rate"][0] == st.lr == 1e-4 and rows["SAE epochs"][0] == 1500
    )
    assert rows["SAE batch size"][0] == st.batch_size == 1024
    assert rows["SAE aux_k"][0] == st.k_aux == 512
    assert {k: v[0] for k, v in rows.items()} == {
        k: PAPER_STABILITY[k][0] for k in rows
    }
