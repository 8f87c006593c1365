"""helpers.perturbation: targets on a hand-made table, planted truth, composition,
loader path, errors."""

import numpy as np
import pandas as pd
import pytest

from helpers import baselines
from helpers import perturbation as P
from helpers.bilinear import eigendecompose, predict
from helpers.data import get_matrix, load_dataset
from helpers.preprocess import normalize_log1p, split_indices
from helpers.synthetic import (
    SCIPLEX2_DRUGS,
    sciplex2_like,
    synthetic_combinations,
    synthetic_interaction,
)


@pytest.fixture
def table():
    return pd.DataFrame(
        {
            "drug": ["control", "A", "A", "B", "control", "B"],
            "dose": [0.0, 10.0, 1000.0, 100.0, np.nan, 9.0],
        },
        index=[f"c{i}" for i in range(6)],
    )


def test_dose_targets_hand_table(table):
    Y = P.dose_targets(table, "drug", "dose", control_value="control")
    assert list(Y.columns) == ["A", "B"] and list(Y.index) == list(table.index)
    expected = np.array(
        [
            [0, 0],
            [np.log10(11), 0],
            [np.log10(1001), 0],
            [0, np.log10(101)],
            [0, 0],
            [0, 1.0],
        ]
    )
    # log10(1 + 9) = 1 exactly
    np.testing.assert_allclose(Y.to_numpy(), expected, rtol=1e-6)
    raw = P.dose_targets(table, "drug", "dose", log=False)
    np.testing.assert_allclose(raw.to_numpy()[:, 0], [0, 10, 1000, 0, 0, 0])
    # no dose column: treated → 1, controls → 0
    ones = P.dose_targets(table, "drug", None)
    np.testing.assert_array_equal(
        ones.to_numpy(), [[0, 0], [1, 0], [1, 0], [0, 1], [0, 0], [0, 1]]
    )


def test_dose_transform_on_sciplex2_doses():
    np.testing.assert_allclose(
        P.log_dose([0, 10, 100, 1000, 10000]),
        [0, 1.0413927, 2.0043214, 3.0004341, 4.0000434],
        atol=1e-6,
    )


def test_bad_input_errors(table):
    with pytest.raises(KeyError, match="perturbation column 'treatment' not found"):
        P.dose_targets(table, "treatment", "dose")
    with pytest.raises(KeyError, match="dose column 'conc' not found"):
        P.dose_targets(table, "drug", "conc")
    missing = table.assign(dose=[0.0, np.nan, 1000.0, 100.0, 0.0, 9.0])
    with pytest.raises(
        ValueError, match="1 treated cells have a missing or non-numeric dose"
    ):
        P.dose_targets(missing, "drug", "dose")
    zero = table.assign(dose=[0.0, 0.0, 1000.0, -1.0, 0.0, 9.0])
    with pytest.raises(ValueError, match="2 treated cells have a dose ≤ 0"):
        P.dose_targets(zero, "drug", "dose")
    with pytest.raises(ValueError, match="No control cells.*Set control_value"):
        P.dose_targets(table, "drug", "dose", control_value="DMSO")
    only = table[table["drug"] == "control"]
    with pytest.raises(ValueError, match="Only control cells"):
        P.dose_targets(only, "drug", None)


def test_resolve_columns_mapping():
    gbm = P.resolve_columns("glioblastoma_panobinostat")
    assert (gbm["perturbation_key"], gbm["dose_key"], gbm["control_value"]) == (
        "condition",
        None,
        "ctrl",
    )
    obs = pd.DataFrame({"perturbation": ["control", "x"]})
    # pertpy conventions for an unknown file; "auto" dose drops a dose column the file
    # does not have
    assert P.resolve_columns("my.h5ad", obs)["dose_key"] is None
    assert P.resolve_columns("sciplex2")["dose_key"] == "dose_value"
    assert (
        P.resolve_columns("sciplex2", perturbation_key="drug", dose_key=None)[
            "perturbation_key"
        ]
        == "drug"
    )


def test_filter_low_count_cells():
    ad = sciplex2_like(200, seed=0)
    total = np.asarray(ad.X.sum(1)).ravel()
    cut = np.median(total)
    out = P.filter_low_count_cells(ad, cut)
    assert (
        out.n_obs == int((total >= cut).sum()) and out.obs["total_counts"].min() >= cut
    )
    with pytest.raises(ValueError, match="removes all 200 cells.*Lower min_counts"):
        P.filter_low_count_cells(ad, total.max() + 1)


def test_per_perturbation_mae_and_ridge():
    Y = np.array([[0, 0], [2, 0], [0, 1], [0, 0.0]])
    Yp = np.array([[0.5, 0], [1, 0], [0, 0], [0, 0.5]])
    m = P.per_perturbation_mae(Y, Yp, ["A", "B"])
    np.testing.assert_allclose(m["mae"], [1.5 / 4, 1.5 / 4])
    np.testing.assert_allclose(m["mae_treated"], [1.0, 1.0])
    assert m["n_treated"].tolist() == [1, 1]
    with pytest.raises(ValueError, match="one name per column"):
        P.per_perturbation_mae(Y, Yp, ["A"])
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5))
    T = X @ np.array([[1.0], [0], [0], [-2], [0]])
    split = split_indices(300, seed=0)
    pred, alpha = baselines.ridge(X, T, split, alpha=(0.1, 1.0, 10.0, 100.0))
    # exact linear truth
    assert alpha == 0.1 and np.abs(pred - T)[split["test"]].max() < 0.05
    one, a1 = baselines.ridge(X, T, split, alpha=100.0)  # one penalty: shrunk towards 0
    assert a1 == 100.0 and one.shape == (300, 1)
    te = split["test"]
    assert np.abs(one - T)[te].mean() > np.abs(pred - T)[te].mean()


def test_dose_module_summary_and_spearman():
    scores = np.array([[0.0, 1], [1, 1], [2, 0], [3, 0]])
    dose = np.array([0, 0, 10, 10])
    s = P.dose_module_summary(scores, dose)
    row = s[(s.module == 0) & (s.dose == 10)].iloc[0]
    assert (row["mean"], row["n"]) == (2.5, 2) and np.isclose(row["std"], np.sqrt(0.5))
    assert P.dose_spearman([1, 2, 3, 4], [0, 1, 2, 3]) == pytest.approx(1.0)
    assert P.dose_spearman([4, 3, 2, 1], [0, 1, 2, 3]) == pytest.approx(-1.0)
    assert np.isnan(P.dose_spearman([1, 2, 3], [5, 5, 5]))


def test_planted_dose_module_is_leading_eigenvector():
    """SAHA's planted programme (10 genes, log fold ∝ log dose) is the top eigenvector
    of its output."""
    ad = sciplex2_like(2400, seed=0, n_genes=60, effect=1.5)
    ad = P.filter_low_count_cells(
        ad[ad.obs["perturbation"].isin(["control", "SAHA"])].copy(), 2000
    )
    normalize_log1p(ad)
    Y = P.dose_targets(ad.obs, "perturbation", "dose_value")
    split = split_indices(ad.obs["perturbation"].astype(str).to_numpy(), seed=0)
    X, _, _ = P.standardize(get_matrix(ad, dense=True), ref=split["train"])
    model, _ = P.fit_regressor(
        X,
        Y.to_numpy(),
        split,
        hidden=8,
        epochs=40,
        lr=3e-2,
        dropout=0.0,
        batch_size=64,
        progress=False,
    )
    mae = np.abs(predict(model, X) - Y.to_numpy())[split["test"]].mean()
    assert mae < 0.2  # targets span 0..4
    vals, vecs = eigendecompose(model)[0]
    v = vecs[: ad.n_vars, 0]
    u = ad.varm["planted_log_fold"][
        :, list(ad.uns["planted_perturbations"]).index("SAHA")
    ]
    cosine = abs(v @ u) / np.linalg.norm(v) / np.linalg.norm(u)
    assert cosine >= 0.9, cosine
    assert abs(vals[0]) > 3 * abs(vals[1])  # one dominant module
    score = X @ vecs[: ad.n_vars, 0] + vecs[-1, 0]
    assert abs(P.dose_spearman(score, ad.obs["dose_value"])) > 0.7


def test_composition_separates_additive_from_interaction():
    ad = synthetic_combinations(seed=0)
    assert ad.uns["planted_interactions"] == {"A+B": "additive", "C+D": "buffering"}
    normalize_log1p(ad)
    res = P.composition_test(ad, n_boot=100, progress=False)
    t = res["table"]
    assert res["singles"] == ["A", "B", "C", "D"] and set(t.index) == {"A+B", "C+D"}
    # a perfectly composing model gives 0 for A+B and 1/√2 ≈ 0.71 for C+D (C's response
    # is missing)
    assert t.loc["A+B", "additive_error"] < 0.35
    assert t.loc["C+D", "additive_error"] > 0.55
    assert t.loc["A+B", "ci_high"] < t.loc["C+D", "ci_low"]
    # the model-free expression ratio agrees on which combination interacts
    assert (
        t.loc["A+B", "expression_additive_error"]
        < 0.35
        < 0.6
        < t.loc["C+D", "expression_additive_error"]
    )


def test_additive_error_on_arrays():
    """Known answers: an exact sum gives 0, a missing part 1/√2; bootstrap brackets."""
    ctrl, a, b = np.zeros(2), np.array([1.0, 0]), np.array([0, 1.0])
    assert P.additive_error(a + b, [a, b], ctrl)["additive_error"] == 0
    buffered = P.additive_error(b, [a, b], ctrl)  # the pair shows only b's response
    assert buffered["additive_error"] == pytest.approx(1 / np.sqrt(2))
    np.testing.assert_allclose(buffered["y_add"], [1, 1])
    shifted = P.additive_error(a + b + 1, [a + 1, b + 1], ctrl + 1)  # offset cancels
    assert shifted["additive_error"] == pytest.approx(0)
    cells = np.random.default_rng(0).normal(b, 0.1, size=(200, 2))
    r = P.additive_error(
        cells.mean(0), [a, b], ctrl, cells, n_boot=200, rng=np.random.default_rng(1)
    )
    assert r["ci_low"] < r["additive_error"] < r["ci_high"]
    assert r["ci_low"] > 0.6 and r["ci_high"] < 0.8
    assert np.isnan(P.additive_error(b, [a, b], ctrl)["ci_low"])  # no bootstrap asked


def test_fit_singles_trains_on_controls_and_singles_only():
    ad = synthetic_combinations(seed=0, n_cells=60)
    normalize_log1p(ad)
    res = P.fit_singles(
        ad, singles=["A", "B", "C", "D"], epochs=5, seed=2, progress=False
    )
    lab = ad.obs["perturbation"].astype(str).to_numpy()
    assert set(lab[res["single_cells"]]) == {"control", "A", "B", "C", "D"}
    assert res["Y"].shape == (5 * 60, 4) and res["model"].settings.seed == 2
    assert res["model"].settings.epochs == 5 and res["model"].settings.lr == 1e-2
    ctrl = res["single_cells"][lab[res["single_cells"]] == "control"]
    train = res["single_cells"][res["split"]["train"]]
    # z-scored: training controls at 0 on every gene
    train_ctrl = np.intersect1d(ctrl, train)
    np.testing.assert_allclose(res["X"][train_ctrl].mean(0), 0, atol=1e-4)


def test_composition_errors():
    ad = synthetic_combinations(seed=0, n_cells=20)
    singles_only = ad[
        ~ad.obs["perturbation"].astype(str).str.contains("+", regex=False)
    ].copy()
    with pytest.raises(ValueError, match="No combination labels"):
        P.composition_test(singles_only, progress=False)
    no_b = ad[
        ad.obs["perturbation"].astype(str).isin(["control", "A", "C", "D", "A+B"])
    ].copy()
    with pytest.raises(ValueError, match="No combination has all of its parts"):
        P.composition_test(no_b, progress=False)


def test_sciplex2_loader_path(tmp_path):
    """The named loader finds a file of pertpy's name in the data directory; the
    mapping fits it."""
    fake = sciplex2_like(300, seed=1)
    fake.write_h5ad(tmp_path / "srivatsan_2020_sciplex2.h5ad")
    ad = load_dataset("sciplex2", data_dir=tmp_path)
    assert ad.uns["dataset"]["name"] == "sciplex2" and ad.n_obs == 300
    cols = P.resolve_columns("sciplex2", ad.obs)
    assert cols == {
        "perturbation_key": "perturbation",
        "dose_key": "dose_value",
        "control_value": "control",
        "sep": "+",
    }
    for c in (
        "perturbation",
        "dose_value",
        "dose_unit",
        "perturbation_type",
        "cell_line",
        "nperts",
    ):
        assert c in ad.obs
    Y = P.dose_targets(
        ad.obs, cols["perturbation_key"], cols["dose_key"], cols["control_value"]
    )
    assert list(Y.columns) == sorted(SCIPLEX2_DRUGS)
    ctrl = (ad.obs["perturbation"] == "control").to_numpy()
    assert (Y.to_numpy()[ctrl] == 0).all()
    top = (ad.obs["dose_value"] == 10000).to_numpy()
    np.testing.assert_allclose(Y.to_numpy()[top].max(1), np.log10(10001), rtol=1e-6)
    assert (np.count_nonzero(Y.to_numpy(), axis=1) == (~ctrl).astype(int)).all()


# ------------------------------------------------------------ the interaction plant


def test_interaction_plant_is_no_copy_and_singles_are_alike():
    """A+B is the sum of its singles; C+D is not, nor a copy of any single; the four
    singles are equally strong, so a separation of the pairs cannot come from them."""
    ad = synthetic_interaction(seed=0)
    fold, combo = ad.varm["planted_log_fold"], ad.varm["planted_combination_log_fold"]
    np.testing.assert_allclose(combo[:, 0], fold[:, 0] + fold[:, 1])
    assert np.linalg.norm(combo[:, 1] - fold[:, 2] - fold[:, 3]) > 1.0
    assert min(np.linalg.norm(combo[:, 1] - fold[:, j]) for j in range(4)) > 1.0
    np.testing.assert_allclose(np.linalg.norm(fold, axis=0), np.linalg.norm(fold[:, 0]))
    assert ad.uns["planted_interactions"] == {"A+B": "additive", "C+D": "interacting"}
    emergent = ad.var_names.isin(ad.uns["planted_emergent_genes"])
    assert (fold[emergent] == 0).all() and (combo[emergent, 1] != 0).all()
    twin = synthetic_interaction(seed=0, damping=1.0, n_emergent=0)
    assert twin.uns["planted_interactions"]["C+D"] == "additive"
    with pytest.raises(ValueError, match="raise n_genes to at least 50"):
        synthetic_interaction(n_genes=40)


def _readout(ad, **kw):
    normalize_log1p(ad)
    fitted = P.fit_singles(ad, singles=["A", "B", "C", "D"], seed=0, progress=False)
    return P.composition_readout(ad, fitted, n_boot=100, **kw)


def test_composition_intervals_separate_because_of_the_interaction():
    """The output-space intervals of A+B and C+D separate on the plant, and overlap on
    its null twin (same singles, C+D made additive): the interaction decides."""
    ad = synthetic_interaction(seed=0)
    normalize_log1p(ad)
    t = P.composition_test(ad, n_boot=100, progress=False)["table"]
    assert t.loc["A+B", "ci_high"] < t.loc["C+D", "ci_low"]
    twin = synthetic_interaction(seed=0, damping=1.0, n_emergent=0)
    normalize_log1p(twin)
    t0 = P.composition_test(twin, n_boot=100, progress=False)["table"]
    assert t0.loc["C+D", "ci_low"] < t0.loc["A+B", "ci_high"]  # no separation
    assert t0.loc["C+D", "additive_error"] < t.loc["C+D", "ci_low"]


def test_additive_only_model_fails_the_interacting_case():
    """Expression space: the additive prediction (single A + single B − control)
    explains A+B up to sampling noise and fails C+D; no re-weighting of the singles
    reaches the emergent programme; the model's outputs see the dampened parts."""
    r = _readout(synthetic_interaction(seed=0))
    e, o = r["expression"], r["outputs"]
    assert e.loc["A+B", "additive_low"] <= 0 <= e.loc["A+B", "additive_high"]
    assert e.loc["C+D", "additive_low"] > 0.3
    assert list(e["additive holds"]) == [True, False]
    assert e.loc["C+D", "span_low"] > 0  # emergent genes: outside the singles' span
    assert o["separated"].all()
    cd = o.loc["C+D", "retained"]
    assert (cd < o.loc["A+B", "retained"].min()).all()  # dampened parts: outputs lower
    assert e.loc["C+D", "read-out better"]
    twin = _readout(synthetic_interaction(seed=0, damping=1.0, n_emergent=0))
    assert twin["expression"]["additive holds"].all()


def test_composition_readout_errors():
    ad = synthetic_interaction(seed=0, n_cells=20)
    normalize_log1p(ad)
    fitted = P.fit_singles(ad, singles=["A", "B"], epochs=2, seed=0, progress=False)
    with pytest.raises(ValueError, match="No combination among"):
        P.composition_readout(ad, fitted, combos=["C+D"])
    with pytest.raises(KeyError, match="pass the result of fit_singles"):
        P.composition_readout(ad, {"model": fitted["model"]})


def test_separation_by_group_hand_values():
    score = [0, 1, 2, 3, 5, 5, 0, 1]
    cond = ["c", "c", "t", "t", "c", "t", "c", "t"]
    grp = ["x", "x", "x", "x", "y", "y", "y", "y"]
    s = P.separation_by_group(score, cond, grp, control_value="c", min_cells=1)
    assert s.loc["x", "auroc"] == 1.0 and s.loc["x", "difference"] == 2.0
    # pairs (treated, control): (5, 5) tie ½, (5, 0) 1, (1, 5) 0, (1, 0) 1 → 2.5 / 4
    assert s.loc["y", "auroc"] == 0.625
    few = P.separation_by_group(score, cond, grp, control_value="c", min_cells=3)
    assert few["auroc"].isna().all() and few["n_treated"].tolist() == [2, 2]
    with pytest.raises(ValueError, match="No control cells"):
        P.separation_by_group(score, cond, grp, control_value="ctrl")
    with pytest.raises(ValueError, match="one value per cell"):
        P.separation_by_group(score[:3], cond, grp, control_value="c")


def test_condition_response_separates_within_every_group():
    """A treatment planted in every cell of two groups: module 0 separates it within
    each group (all cells and held-out cells); its positive pole holds the up genes."""
    ad = synthetic_interaction(seed=1, n_cells=300, n_genes=60, effect=1.5)
    ad = ad[ad.obs["perturbation"].isin(["control", "A"])].copy()
    ad.obs["perturbation"] = ad.obs["perturbation"].astype(str)
    ad.obs["type"] = np.where(np.arange(ad.n_obs) % 2 == 0, "x", "y")
    normalize_log1p(ad)
    r = P.condition_response(
        ad,
        condition_key="perturbation",
        control_value="control",
        group_key="type",
        epochs=60,
        lr=3e-2,
        dropout=0.0,
        hidden=8,
        batch_size=64,
        progress=False,
    )
    assert r["output"] == "A" and list(r["separation"].index) == ["x", "y"]
    assert (r["separation"]["auroc"] > 0.95).all()
    assert (r["separation_test"]["auroc"] > 0.9).all()
    from helpers.bilinear import get_modules

    loadings = get_modules(ad, "A", key="response")[1][:, 0]
    up = ad.varm["planted_log_fold"][:, 0] > 0
    assert set(np.argsort(-loadings)[:2]) <= set(np.flatnonzero(up))
    with pytest.raises(KeyError, match="group column 'celltype' not found"):
        P.condition_response(
            ad,
            condition_key="perturbation",
            control_value="control",
            group_key="celltype",
        )
    three = synthetic_interaction(seed=1, n_cells=20)
    three = three[three.obs["perturbation"].isin(["control", "A", "B"])].copy()
    three.obs["type"] = "x"
    with pytest.raises(ValueError, match="compares one treatment"):
        P.condition_response(
            three,
            condition_key="perturbation",
            control_value="control",
            group_key="type",
        )
