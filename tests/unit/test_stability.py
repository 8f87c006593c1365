"""Tests for helpers.stability: Hungarian matching, chance levels, gene overlap."""

import numpy as np
import pandas as pd
import pytest

from helpers.sae import SAETrainSettings, train_sae
from helpers.stability import (
    between_group_share,
    fit_saes,
    match_activations,
    match_dictionaries,
    matched_gene_table,
    r2_table,
    random_dictionary_null,
    seed_table,
    shared_gene_union,
    shuffled_activation_null,
    top_gene_overlap,
)
from helpers.synthetic import planted_sparse_codes, unit_dictionary
from reference import cross_r2


def _unit_rows(rng, c, d):
    return unit_dictionary(c, d, seed=rng)


def test_matching_recovers_a_known_permutation_exactly():
    rng = np.random.default_rng(0)
    D1 = _unit_rows(rng, 64, 16)
    perm = rng.permutation(64)
    D2 = D1[perm]  # atom perm[j] of D1 is row j of D2
    pairs = match_dictionaries(D1, D2)
    assert len(pairs) == 64
    inverse = np.argsort(perm)
    assert np.array_equal(
        pairs["atom_2"].to_numpy(), inverse[pairs["atom_1"].to_numpy()]
    )
    np.testing.assert_allclose(pairs["cosine"], 1.0, atol=1e-12)


def test_noisy_copy_matches_with_high_cosine_and_right_partner():
    rng = np.random.default_rng(1)
    D1 = _unit_rows(rng, 40, 32)
    perm = rng.permutation(40)
    D2 = D1[perm] + 0.05 * rng.standard_normal((40, 32))
    pairs = match_dictionaries(D1, D2)
    assert np.array_equal(
        pairs["atom_2"].to_numpy(), np.argsort(perm)[pairs["atom_1"].to_numpy()]
    )
    assert pairs["cosine"].min() > 0.9


def test_unequal_sizes_match_min_c_atoms_and_planted_subset_is_found():
    rng = np.random.default_rng(2)
    D1 = _unit_rows(rng, 10, 20)
    # 25 atoms, the last 10 are D1 reversed
    D2 = np.vstack([_unit_rows(rng, 15, 20), D1[::-1]])
    pairs = match_dictionaries(D1, D2)
    assert len(pairs) == 10
    assert set(pairs["atom_2"]) == set(range(15, 25))
    np.testing.assert_allclose(pairs["cosine"], 1.0, atol=1e-12)
    assert len(match_dictionaries(D2, D1)) == 10


def test_null_is_far_below_a_planted_match():
    rng = np.random.default_rng(3)
    c, d = 50, 32
    D1 = _unit_rows(rng, c, d)
    planted = match_dictionaries(
        D1, D1[rng.permutation(c)] + 0.1 * rng.standard_normal((c, d))
    )
    null = random_dictionary_null(c, d, n_draws=5, seed=0)
    assert null.shape == (5, c)
    assert np.all(np.diff(null, axis=1) <= 0)  # each draw sorted decreasing
    assert planted["cosine"].mean() > 0.8
    assert null.mean() < 0.5
    assert planted["cosine"].mean() - null.mean() > 0.5


def test_null_grows_with_atoms_per_dimension():
    # Hungarian maximisation makes chance alignment larger when c >> d: the reason to
    # measure it
    few = random_dictionary_null(8, 32, n_draws=4, seed=0).mean()
    many = random_dictionary_null(128, 4, n_draws=4, seed=0).mean()
    assert many > few + 0.2


def test_sign_matters_unless_absolute():
    rng = np.random.default_rng(4)
    D1 = _unit_rows(rng, 6, 10)
    signed = match_dictionaries(D1, -D1)
    assert signed["cosine"].max() < 1.0
    absolute = match_dictionaries(D1, -D1, absolute=True)
    np.testing.assert_allclose(absolute["cosine"], -1.0, atol=1e-12)
    assert np.array_equal(absolute["atom_1"].to_numpy(), absolute["atom_2"].to_numpy())


def test_matching_errors_name_the_problem():
    with pytest.raises(ValueError, match="different embedding spaces"):
        match_dictionaries(np.eye(3), np.eye(4))
    with pytest.raises(ValueError, match="all-zero atom"):
        match_dictionaries(np.zeros((2, 3)), np.eye(3))
    with pytest.raises(ValueError, match="same cells"):
        match_activations(np.ones((5, 2)), np.ones((6, 2)))


def test_activation_matching_recovers_permuted_concepts_and_beats_shuffle():
    rng = np.random.default_rng(5)
    U1 = rng.exponential(size=(300, 12)) * (rng.random((300, 12)) < 0.3)
    perm = rng.permutation(12)
    # scale does not matter
    U2 = 2.0 * U1[:, perm] + 0.01 * rng.standard_normal((300, 12))
    pairs = match_activations(U1, U2)
    assert np.array_equal(
        pairs["atom_2"].to_numpy(), np.argsort(perm)[pairs["atom_1"].to_numpy()]
    )
    assert pairs["correlation"].min() > 0.99
    null = shuffled_activation_null(U1, U2, n_draws=3, seed=0)
    assert null.shape == (3, 12)
    assert null.mean() < 0.3


def test_top_gene_overlap_counts_shared_genes_case_insensitively():
    s1 = pd.Series({"CD3E": 5.0, "CD2": 4.0, "GZMB": 3.0, "X1": 0.1})
    s2 = pd.Series({"Cd3e": 1.0, "Nkg7": 0.9, "Cd2": 0.8, "X1": 0.7})
    ov = top_gene_overlap(s1, s2, n=3)
    assert ov["top_1"] == ["CD3E", "CD2", "GZMB"]
    assert ov["top_2"] == ["Cd3e", "Nkg7", "Cd2"]
    assert ov["shared"] == ["CD3E", "CD2"]
    assert ov["n_shared"] == 2
    assert ov["jaccard"] == pytest.approx(2 / 4)


def test_matched_gene_table_skips_pairs_without_scores():
    pairs = pd.DataFrame({"atom_1": [0, 1], "atom_2": [3, 4], "cosine": [0.9, 0.5]})
    s = {0: pd.Series({"A": 2.0, "B": 1.0})}
    t = {3: pd.Series({"B": 2.0, "C": 1.0}), 4: pd.Series({"A": 1.0})}
    table = matched_gene_table(pairs, s, t, n=2)
    assert len(table) == 1
    assert table.loc[0, "n_shared"] == 1 and table.loc[0, "shared"] == "B"


def _sparse_data(rng, D, n, k=2):
    return planted_sparse_codes(n, D, k, seed=rng)[0]


def test_cross_r2_drops_on_data_from_another_dictionary():
    rng = np.random.default_rng(6)
    D_a, D_b = _unit_rows(rng, 12, 8), _unit_rows(rng, 12, 8)
    Z_a, Z_a2, Z_b = (
        _sparse_data(rng, D_a, 1500),
        _sparse_data(rng, D_a, 500),
        _sparse_data(rng, D_b, 500),
    )
    model, _ = train_sae(
        Z_a,
        c=24,
        k=2,
        lr=3e-3,
        epochs=30,
        batch_size=256,
        seed=0,
        device="cpu",
        progress=False,
    )
    same = cross_r2(model, Z_a, Z_a2)
    assert list(same.index) == ["within", "across"] and "r2" in same.columns
    other = cross_r2(model, Z_a, Z_b)
    assert same.loc["within", "r2"] > 0.8
    assert abs(same.loc["within", "r2"] - same.loc["across", "r2"]) < 0.1
    assert other.loc["across", "r2"] < same.loc["across", "r2"] - 0.2
    table = r2_table({"a": model}, {"a": Z_a, "b": Z_b})
    assert table.shape == (1, 2)
    assert table.loc["a", "a"] == pytest.approx(same.loc["within", "r2"])
    with pytest.raises(ValueError, match="same embedding model"):
        cross_r2(model, Z_a, Z_b[:, :4])


def test_between_group_share_is_zero_for_identical_groups_and_one_for_points():
    rng = np.random.default_rng(7)
    Z = rng.standard_normal((50, 3))
    assert between_group_share(
        np.vstack([Z, Z]), np.r_[np.zeros(50), np.ones(50)]
    ) == pytest.approx(0.0)
    pts = np.vstack([np.zeros((10, 3)), np.ones((10, 3))])
    assert between_group_share(pts, np.r_[np.zeros(10), np.ones(10)]) == pytest.approx(
        1.0
    )
    with pytest.raises(ValueError, match="one group label per row"):
        between_group_share(Z, np.zeros(3))


def test_fit_saes_and_seed_table():
    rng = np.random.default_rng(3)
    Z = _sparse_data(rng, _unit_rows(rng, 10, 6), 400)
    kw = dict(n_concepts=12, k=2, settings=None)
    models = fit_saes({"a": Z, "b": Z}, [0, 1], **kw)
    again = fit_saes([Z, Z], [0, 1], **kw)
    assert list(models) == ["a", "b"] and len(again) == 2
    # the same seed gives the same dictionary, another seed another one
    np.testing.assert_array_equal(models["a"].dictionary, again[0].dictionary)
    assert not np.allclose(models["a"].dictionary, models["b"].dictionary)
    table = seed_table({"emb": again}, {"emb": Z})
    assert table[["embedding", "seeds"]].values.tolist() == [["emb", "0 vs 1"]]
    pairs = match_dictionaries(again[0].dictionary, again[1].dictionary)
    assert table.loc[0, "mean matched cosine"] == pytest.approx(pairs["cosine"].mean())


def test_shared_gene_union_keeps_shared_genes_and_reads_each_layer():
    import anndata as ad
    import scipy.sparse as sp

    a = ad.AnnData(np.arange(12, dtype=np.float32).reshape(3, 4))
    a.var_names = ["g1", "g2", "g3", "g4"]
    b = ad.AnnData(np.zeros((2, 3), dtype=np.float32))
    b.var_names = ["g4", "g2", "gx"]
    b.layers["counts"] = sp.csr_matrix(np.array([[1, 2, 3], [4, 5, 6]], np.float32))
    u = shared_gene_union({"a": a, "b": b}, {"b": "counts"})
    assert list(u.var_names) == ["g2", "g4"]
    assert u.obs["dataset"].tolist() == ["a"] * 3 + ["b"] * 2
    X = u.layers["counts"]
    X = X.toarray() if sp.issparse(X) else X
    np.testing.assert_array_equal(X, [[1, 3], [5, 7], [9, 11], [2, 1], [5, 4]])


# --- frozen models, shared genes, pair summaries and verdicts (issue 11) ---


def _toy_counts(n=200, g=40, seed=0, prefix="g"):
    """Poisson counts of two cell groups with different gene programs."""
    import anndata as ad

    rng = np.random.default_rng(seed)
    group = rng.integers(0, 2, n)
    rate = rng.gamma(2.0, 1.0, size=(2, g))[group] * rng.uniform(0.5, 2, size=(n, 1))
    a = ad.AnnData(X=rng.poisson(rate).astype(np.float32))
    a.var_names = [f"{prefix}{j}" for j in range(g)]
    return a


def test_frozen_model_aligns_genes_by_name_and_reproduces_its_own_embedding():
    from helpers.embeddings import aligned_counts, apply_embedding, fit_embedding

    train = _toy_counts(seed=0)
    emb = fit_embedding(train, "pca", layer=None, n_latent=5)
    # the same cells, genes in another order, two extra genes: identical embedding
    rng = np.random.default_rng(1)
    order = rng.permutation(train.n_vars)
    import anndata as ad

    extra = np.hstack([train.X[:, order], np.ones((train.n_obs, 2), np.float32)])
    other = ad.AnnData(X=extra)
    other.var_names = [train.var_names[i] for i in order] + ["x1", "x2"]
    np.testing.assert_array_equal(aligned_counts(other, emb, layer=None), train.X)
    Z = apply_embedding(other, emb, layer=None)
    np.testing.assert_allclose(Z, train.obsm["X_pca"], atol=1e-5)
    assert other.obsm["X_pca"] is Z and other.uns["embedding"]["X_pca"]["frozen"]
    # new cells: the model is not refitted, so the training cells embed as before
    new = _toy_counts(seed=2)
    Z_new = apply_embedding(new, emb, layer=None, key_added="X_f")
    assert Z_new.shape == (new.n_obs, 5) and "X_f" in new.obsm
    np.testing.assert_allclose(emb.encode(train.X), train.obsm["X_pca"], atol=1e-4)


def test_frozen_model_errors_name_the_problem():
    from helpers.embeddings import apply_embedding, fit_embedding

    emb = fit_embedding(_toy_counts(), "pca", layer=None, n_latent=3)
    short = _toy_counts()[:, 3:].copy()
    with pytest.raises(ValueError, match="lacks 3 of the 40 genes"):
        apply_embedding(short, emb, layer=None)
    dup = _toy_counts()
    dup.var_names = ["g0"] * 2 + list(dup.var_names[2:])
    with pytest.raises(ValueError, match="not unique"):
        apply_embedding(dup, emb, layer=None)
    logged = _toy_counts()
    logged.X = np.log1p(logged.X) + 0.1
    with pytest.raises(ValueError, match="count"):
        apply_embedding(logged, emb, layer=None)


def test_shared_genes_keep_the_first_order_and_fail_when_none_are_shared():
    from helpers.stability import shared_genes

    a, b = _toy_counts(g=6), _toy_counts(g=6)
    b.var_names = ["g5", "g1", "gx", "g3", "gy", "gz"]
    assert shared_genes({"a": a, "b": b}) == ["g1", "g3", "g5"]
    with pytest.raises(ValueError, match="share no gene"):
        shared_genes({"a": a, "c": _toy_counts(g=4, prefix="h")})


def test_model_genes_pick_the_planted_variable_genes_in_input_order():
    import anndata as ad
    from helpers.stability import model_genes

    rng = np.random.default_rng(3)
    n, g = 300, 400  # enough genes to populate every mean bin of the seurat flavour
    rates = rng.gamma(2.0, 5.0, g)  # genes expressed at many levels
    X = rng.poisson(rates, size=(n, g)).astype(np.float32)
    on = rng.random(n) < 0.5
    # two genes of a median level that are on in half the cells only
    mid = float(np.median(rates))
    X[:, 7] = np.where(on, rng.poisson(2 * mid, n), 0)
    X[:, 19] = np.where(~on, rng.poisson(2 * mid, n), 0)
    a = ad.AnnData(X=X)
    a.var_names = [f"g{j}" for j in range(g)]
    picked = model_genes(a, [f"g{j}" for j in range(g - 1, -1, -1)], 2)
    assert picked == ["g19", "g7"]  # the order of the genes passed
    assert model_genes(a, ["g1", "g2"], None) == ["g1", "g2"]
    with pytest.raises(ValueError, match="not in adata.var_names"):
        model_genes(a, ["g1", "nope"], 1)


def test_pair_saes_twins_share_the_next_datasets_seed():
    from helpers.stability import fit_pair_saes

    rng = np.random.default_rng(8)
    Z = _sparse_data(rng, _unit_rows(rng, 8, 6), 300)
    saes, twins = fit_pair_saes({"a": Z, "b": Z, "c": Z}, 5, n_concepts=10, k=2)
    # same data: b's SAE (seed 6) is a's twin (seed 6); c's twin has seed 5
    np.testing.assert_array_equal(saes["b"].dictionary, twins["a"].dictionary)
    np.testing.assert_array_equal(saes["a"].dictionary, twins["c"].dictionary)
    assert not np.allclose(saes["a"].dictionary, twins["a"].dictionary)
    with pytest.raises(ValueError, match="at least two datasets"):
        fit_pair_saes({"a": Z}, 0, n_concepts=10, k=2)


def test_alignment_verdict_follows_its_rule():
    from helpers.stability import CHANCE_QUANTILE, alignment_verdict

    null = np.array([[0.4, 0.4], [0.5, 0.5], [0.6, 0.6]])  # draws' means 0.4, 0.5, 0.6
    top = np.percentile([0.4, 0.5, 0.6], CHANCE_QUANTILE)
    assert alignment_verdict(top, null, 0.9)["verdict"] == "at chance"
    mid = alignment_verdict(0.7, null, 0.9)
    assert mid["verdict"] == "between chance and seed-to-seed"
    assert mid["position"] == pytest.approx((0.7 - 0.5) / (0.9 - 0.5))
    assert mid["chance_top"] == pytest.approx(top)
    assert alignment_verdict(0.9, null, 0.9)["verdict"] == "at the seed-to-seed level"
    assert alignment_verdict(0.5, null, 0.9)["position"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="n_draws, c"):
        alignment_verdict(0.5, np.array([0.5]), 0.9)


def test_r2_verdict_reads_figure_4a_by_a_stated_tolerance():
    from helpers.stability import r2_verdict

    assert r2_verdict(0.95, 0.93, 0.05) == "slightly lower"
    assert r2_verdict(0.95, 0.90, 0.05) == "slightly lower"
    assert r2_verdict(0.95, 0.80, 0.05) == "much lower"
    assert r2_verdict(0.90, 0.95, 0.05) == "not lower"
    with pytest.raises(ValueError, match="tolerance"):
        r2_verdict(0.9, 0.8, -0.1)


def test_pair_summary_tells_a_shared_dictionary_from_another_one():
    from helpers.stability import fit_pair_saes, pair_summary

    rng = np.random.default_rng(9)
    D, D_other = _unit_rows(rng, 10, 8), _unit_rows(rng, 10, 8)
    Zs = {
        "a": _sparse_data(rng, D, 1200),
        "b": _sparse_data(rng, D, 1200),
        "c": _sparse_data(rng, D_other, 1200),
    }
    settings = SAETrainSettings(epochs=40, lr=3e-3, batch_size=128, device="cpu")
    saes, twins = fit_pair_saes(Zs, 0, n_concepts=10, k=2, settings=settings)
    null = random_dictionary_null(10, 8, n_draws=10, seed=0)
    t = pair_summary(saes, twins, Zs, null, tolerance=0.05)
    assert list(t.index) == ["a vs b", "a vs c", "b vs c"]
    same, other = t.loc["a vs b"], t.loc["a vs c"]
    assert same["R² (a SAE)"] == "slightly lower"
    assert other["R² (a SAE)"] == "much lower"
    assert same["mean matched cosine"] > other["mean matched cosine"] + 0.2
    assert same["alignment"] != "at chance"
    assert same["between-dataset variance share"] < 0.05
    assert same["random dictionaries"] == pytest.approx(null.mean())
    r2 = r2_table(saes, Zs)
    assert other["R² across (a SAE on b)"] == pytest.approx(r2.loc["a", "c"])


def test_read_pair_applies_each_rule_to_a_planted_row():
    from helpers.stability import LARGER_GAP, read_pair

    null = np.array([[0.4, 0.4], [0.5, 0.5], [0.6, 0.6]])
    row = pd.Series(
        {
            "a": "x",
            "b": "y",
            "R² within (a)": 0.95,
            "R² across (a SAE on b)": 0.93,
            "R² within (b)": 0.95,
            "R² across (b SAE on a)": 0.70,
            "R² (a SAE)": "slightly lower",
            "R² (b SAE)": "much lower",
            "alignment": "at chance",
            "seed-to-seed": 0.55,
        }
    )
    t = read_pair(row, null, n_cells={"x": 900, "y": 100}, shared=(2.0, 0.5))
    assert t.loc["R², x SAE on y", "verdict"] == "slightly lower"
    assert t.loc["R², y SAE on x", "verdict"] == "much lower"
    # 0.55 lies inside the random band (top: the 95th percentile of 0.4, 0.5, 0.6)
    assert t.loc["seed-to-seed above random dictionaries", "verdict"] == "no"
    assert t.loc[LARGER_GAP, "verdict"] == "yes"  # x is larger and drops 0.02 < 0.25
    assert (
        read_pair(row, null, n_cells={"x": 100, "y": 900}).loc[LARGER_GAP, "verdict"]
        == "no"
    )
    assert (
        read_pair(row, null, n_cells={"x": 5, "y": 5}).loc[LARGER_GAP, "verdict"]
        == "equal sizes"
    )
    assert t.loc["genes of matched pairs", "verdict"] == "more shared"
    high_row = row.copy()
    high_row["seed-to-seed"] = 0.9
    high = read_pair(high_row, null)
    assert high.loc["seed-to-seed above random dictionaries", "verdict"] == "yes"
    assert LARGER_GAP not in high.index and "genes of matched pairs" not in high.index
