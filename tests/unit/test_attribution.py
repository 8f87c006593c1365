"""Tests for helpers.attribution: planted truth, exact identities, errors."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from helpers import attribution as at
from reference import PairSumEmbedding

N_CELLS, N_GENES, PLANTED = 300, 60, np.arange(6)


def _data(seed=0):
    """Counts where half of the cells switch on a program of 6 planted genes."""
    rng = np.random.default_rng(seed)
    rate = rng.gamma(2.0, 1.0, size=N_GENES)
    on = rng.random(N_CELLS) < 0.5
    lam = np.tile(rate, (N_CELLS, 1))
    lam[np.ix_(on, PLANTED)] *= 6.0
    X = rng.poisson(lam).astype(np.float64)
    X[:, -1] = 3.0  # a gene equal in every cell
    W = rng.normal(0, 0.05, size=(N_GENES, 5))
    W[PLANTED, 0] = 1.0
    return X, W


def _encoder(W):
    return lambda X: np.log1p(np.asarray(X, dtype=np.float64)) @ W


def _concept(W, thr):
    enc = _encoder(W)
    return lambda X: np.maximum(enc(X)[:, 0] - thr, 0.0)


def _setup(seed=0):
    X, W = _data(seed)
    Z = _encoder(W)(X)
    thr = np.median(Z[:, 0])
    f = _concept(W, thr)
    return X, Z, f, f(X)


def test_planted_genes_ranked_first():
    X, Z, f, acts = _setup()
    s = at.attribute(
        X,
        f,
        Z,
        acts,
        n_prototypes=10,
        n_counterfactuals=3,
        genes=[f"g{i}" for i in range(N_GENES)],
    )
    truth = np.isin(np.arange(N_GENES), PLANTED)
    scores = s.reindex([f"g{i}" for i in range(N_GENES)]).to_numpy()
    assert roc_auc_score(truth, scores) >= 0.95
    assert set(s.index[:6]) == {f"g{i}" for i in PLANTED}


def test_vectorised_equals_loop_small_batches():
    X, Z, f, acts = _setup(1)
    fast = at.attribute(
        X, f, Z, acts, n_prototypes=4, n_counterfactuals=2, batch_size=7
    )
    slow = at.attribute_loop(X, f, Z, acts, n_prototypes=4, n_counterfactuals=2)
    np.testing.assert_allclose(
        fast.sort_index().to_numpy(),
        slow.sort_index().to_numpy(),
        rtol=1e-10,
        atol=1e-12,
    )


def test_equal_genes_exactly_zero_and_not_evaluated():
    X, Z, f, acts = _setup(2)
    rows = []

    def counted(A):
        rows.append(len(A))
        return f(A)

    protos = at.prototypes(acts, n=5)
    cfs = at.counterfactuals(Z, acts, protos, 3)
    P, C = X[np.repeat(protos, 3)], X[cfs.ravel()]
    scores = at.occlusion_scores(counted, P, C, batch_size=50)
    equal = P == C
    assert equal.any() and (~equal).any()
    assert np.all(scores[equal] == 0.0)
    assert np.all(scores[:, -1] == 0.0)  # the constant gene
    # one baseline row per prototype + one row per distinct differing (prototype, gene,
    # new value)
    distinct = {
        (int(protos[r // 3]), int(g), float(C[r, g]))
        for r, g in zip(*np.nonzero(~equal))
    }
    assert sum(rows) == len(protos) + len(distinct)
    # shared counterfactual values are computed once
    assert len(distinct) < int((~equal).sum())
    assert max(rows) <= 50


def test_counterfactuals_are_nearest_inactive():
    X, Z, f, acts = _setup(3)
    protos = at.prototypes(acts, n=3)
    assert np.all(np.diff(acts[protos]) <= 0) and np.all(acts[protos] > 0)
    cfs = at.counterfactuals(Z, acts, protos, 4)
    inactive = np.flatnonzero(acts == 0)
    for p, row in zip(protos, cfs):
        d = np.linalg.norm(Z[inactive] - Z[p], axis=1)
        np.testing.assert_allclose(
            np.linalg.norm(Z[row] - Z[p], axis=1), np.sort(d)[:4]
        )
        assert np.all(acts[row] == 0)


def test_errors_never_active_and_always_active():
    X, Z, f, acts = _setup()
    with pytest.raises(ValueError, match="never activates"):
        at.attribute(X, f, Z, np.zeros(N_CELLS))
    with pytest.raises(ValueError, match="Every cell activates.*smaller k"):
        at.counterfactuals(Z, np.ones(N_CELLS), [0], 3)
    with pytest.raises(ValueError, match="one unit's activation"):
        at.occlusion_scores(lambda A: np.zeros((len(A), 2)), X[:2], X[2:4])


def test_deletion_curve_endpoints():
    X, Z, f, acts = _setup()
    p = at.prototypes(acts, 1)[0]
    c = at.counterfactuals(Z, acts, [p], 1)[0, 0]
    curve = at.deletion_curve(f, X[p], X[c], np.arange(N_GENES), steps=N_GENES)
    assert curve[0] == pytest.approx(acts[p])
    # every gene swapped = the counterfactual
    assert curve[-1] == pytest.approx(acts[c])
    flat = at.deletion_curve(f, X[p], X[c], [0, 1], steps=5)
    assert flat[2] == flat[5]  # order exhausted -> flat


def test_deg_and_deletion_curves_attribution_beats_deg():
    X, Z, f, acts = _setup()
    genes = [f"g{i}" for i in range(N_GENES)]
    act_idx, cf_idx = at.activating_and_counterfactual_cells(Z, acts, max_cells=100)
    table = at.deg(X, act_idx, cf_idx, genes=genes)
    assert set(table.index[:6]) == {f"g{i}" for i in PLANTED}  # planted genes are DE
    s = at.attribute(X, f, Z, acts, genes=genes)
    curves = at.deletion_curves(X, f, Z, acts, s, table, steps=10, genes=genes)
    assert list(curves.columns) == ["n_genes", "attribution", "deg"]
    assert curves.loc[0, "attribution"] == pytest.approx(1.0)
    # attribution order removes at least as much activation as |FC| order
    assert curves["attribution"].sum() <= curves["deg"].sum() + 1e-9


def test_scvi_concept_attribution_fast_route_equals_loop(tmp_path):
    """Through a real (briefly trained) scVI and a Top-K SAE, the batched first-layer
    route gives the per-gene loop's scores."""
    import anndata as ad
    import scipy.sparse as sp

    from helpers.embeddings import fit_embedding
    from helpers.sae import TopKSAE

    X, _ = _data(2)
    adata = ad.AnnData(X=sp.csr_matrix(X.astype(np.float32)))
    adata.layers["counts"] = adata.X.copy()
    emb = fit_embedding(adata, "scvi", n_latent=4, max_epochs=2, seed=0, progress=False)
    Z = adata.obsm["X_scvi"]
    sae = TopKSAE(4, 12, 3).eval()
    A = sae.encode_numpy(Z)
    c = int(np.argmin(np.abs((A > 0).sum(0) - 0.3 * len(X))))
    f = at.concept_activation(emb, sae, c)
    # the fast route is under test
    assert hasattr(f, "swaps") and emb._first_layer_route() is not None
    acts = f(X)
    fast = at.attribute(X, f, Z, acts, n_prototypes=3, n_counterfactuals=2)
    slow = at.attribute_loop(X, f, Z, acts, n_prototypes=3, n_counterfactuals=2)
    scale = np.abs(slow).max()
    np.testing.assert_allclose(
        fast.sort_index().to_numpy(),
        slow.sort_index().to_numpy(),
        rtol=0,
        atol=1e-5 * scale,
    )


def test_unit_attributions_of_neurons_rank_their_own_genes_first():
    rng = np.random.default_rng(0)
    emb = PairSumEmbedding(12)
    X = rng.poisson(2.0, size=(200, 12)).astype(np.float32)
    attr = at.unit_attributions(X, emb, [1, 4], n_prototypes=5, n_counterfactuals=2)
    assert set(attr) == {1, 4}
    assert set(attr[1].index[:2]) == {"g2", "g3"}
    assert set(attr[4].index[:2]) == {"g8", "g9"}
    assert (attr[4].drop(["g8", "g9"]) == 0).all()


def test_split_prototypes_disjoint_seeded_halves():
    _, _, _, acts = _setup()
    protos = at.prototypes(acts, 10)
    rank, held = at.split_prototypes(acts, 10, seed=0)
    assert len(rank) == 5 and len(held) == 5 and not set(rank) & set(held)
    assert set(rank) | set(held) == set(protos)
    assert np.all(np.diff(acts[rank]) <= 0) and np.all(np.diff(acts[held]) <= 0)
    again = at.split_prototypes(acts, 10, seed=0)
    np.testing.assert_array_equal(again[0], rank)
    other = [tuple(at.split_prototypes(acts, 10, seed=s)[0]) for s in range(1, 6)]
    assert any(o != tuple(rank) for o in other)
    r3, h3 = at.split_prototypes(acts, 3, seed=0)
    assert len(r3) == 2 and len(h3) == 1
    one = np.zeros_like(acts)
    one[0] = 1.0
    with pytest.raises(ValueError, match="held-out"):
        at.split_prototypes(one, 10)


def test_attribute_and_deletion_curves_on_given_prototypes():
    X, Z, f, acts = _setup()
    genes = [f"g{i}" for i in range(N_GENES)]
    rank, held = at.split_prototypes(acts, 10, seed=0)
    s, pairs = at.attribute(
        X, f, Z, acts, genes=genes, prototype_idx=rank, return_pairs=True
    )
    np.testing.assert_array_equal(pairs["prototypes"], rank)
    assert set(s.index[:6]) == {f"g{i}" for i in PLANTED}
    act_idx, cf_idx = at.activating_and_counterfactual_cells(Z, acts, max_cells=100)
    table = at.deg(X, act_idx, cf_idx, genes=genes)
    held_c = at.deletion_curves(
        X, f, Z, acts, s, table, steps=10, genes=genes, prototype_idx=held
    )
    in_c = at.deletion_curves(
        X, f, Z, acts, s, table, steps=10, genes=genes, prototype_idx=rank
    )
    assert not np.allclose(held_c["attribution"], in_c["attribution"])
    # the planted program generalises: the held-out curve still beats DEG order
    assert held_c["attribution"].sum() <= held_c["deg"].sum() + 1e-9


def test_n_important_absolute_and_relative():
    s = pd.Series([2.0, 0.2, 0.06, 0.05, -1.0], index=list("abcde"))
    assert at.PAPER_THRESHOLD == 0.05
    assert at.n_important(s) == 3  # > 0.05 in activation units
    assert at.n_important(s, relative=True) == 2  # > 5% of 2.0 = 0.1
    assert at.n_important(s * 100) == 4 and at.n_important(s * 100, relative=True) == 2
    assert at.n_important(pd.Series(dtype=float)) == 0
