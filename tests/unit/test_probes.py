"""Tests for helpers.probes: planted-label probes, cell-cycle scoring, balanced
sampling."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from reference import PairSumEmbedding

from helpers.probes import (
    balanced_indices,
    cell_cycle_genes,
    marker_hits,
    phase_from_scores,
    probe,
    probe_task,
    score_cell_cycle,
    top_units,
)


def test_probe_finds_the_concept_that_carries_the_label():
    rng = np.random.default_rng(0)
    n, c, carrier = 600, 30, 17
    y = rng.integers(0, 3, size=n)
    # sparse non-negative "concept activations", pure noise except concept 17 which
    # encodes y
    U = rng.exponential(size=(n, c)) * (rng.random((n, c)) < 0.2)
    U[:, carrier] = y * 2.0 + 0.3 * rng.random(n)
    labels = np.array(["G1", "S", "G2M"])[y]
    res = probe(U, labels, seed=0, test_size=0.3)
    assert res["accuracy"] > 0.95
    assert res["chance"] < 0.4
    assert res["confusion"].to_numpy().sum() == len(res["test_idx"]) == 180
    assert list(res["coef"].index) == ["G1", "G2M", "S"]
    # the unit with the largest |coefficient| overall is the carrier
    assert res["coef"].abs().max(axis=0).idxmax() == carrier
    # class with the highest code (G2M = 2) votes for the carrier most positively
    top = top_units(res["coef"], n=1)
    assert top.set_index("class").loc["G2M", "unit"] == carrier
    # G1 = low carrier values
    assert top.set_index("class").loc["G1", "unit"] != carrier
    assert (
        top_units(res["coef"], n=1, sign="abs").set_index("class").loc["G1", "unit"]
        == carrier
    )


def test_probe_on_noise_is_near_chance():
    rng = np.random.default_rng(1)
    U = rng.standard_normal((600, 10))
    labels = rng.choice(["a", "b", "c"], size=600)
    res = probe(U, labels, seed=0)
    assert res["accuracy"] < 0.5


def test_probe_binary_coefficients_have_two_opposite_rows():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((200, 4))
    y = np.where(X[:, 2] > 0, "pos", "neg")
    res = probe(X, y, seed=0, feature_names=["a", "b", "c", "d"])
    assert res["coef"].shape == (2, 4)
    np.testing.assert_allclose(res["coef"].loc["pos"], -res["coef"].loc["neg"])
    assert res["coef"].loc["pos"].idxmax() == "c"


def test_probe_errors():
    with pytest.raises(ValueError, match="one label per cell"):
        probe(np.ones((5, 2)), ["a", "b"])
    with pytest.raises(ValueError, match="at least 2 classes"):
        probe(np.ones((5, 2)), ["a"] * 5)
    with pytest.raises(ValueError, match="NaN"):
        probe(np.full((4, 2), np.nan), ["a", "b"] * 2)


def test_balanced_indices():
    labels = np.array(["a"] * 50 + ["b"] * 20 + ["c"] * 5)
    idx = balanced_indices(labels, seed=0)
    assert pd.Series(labels[idx]).value_counts().to_dict() == {"a": 5, "b": 5, "c": 5}
    assert len(set(idx)) == len(idx) and np.all(np.diff(idx) > 0)
    idx2 = balanced_indices(labels, min_class_size=10, seed=0)
    assert pd.Series(labels[idx2]).value_counts().to_dict() == {"a": 20, "b": 20}
    idx3 = balanced_indices(labels, n_per_class=3, seed=1)
    assert pd.Series(labels[idx3]).value_counts().to_dict() == {"a": 3, "b": 3, "c": 3}
    assert not np.array_equal(
        balanced_indices(labels, 3, seed=1), balanced_indices(labels, 3, seed=2)
    )
    with pytest.raises(ValueError, match="smallest kept class"):
        balanced_indices(labels, n_per_class=6)
    with pytest.raises(ValueError, match="fewer than 2 classes"):
        balanced_indices(labels, min_class_size=30)


def test_regev_list_split():
    s, g2m = cell_cycle_genes()
    assert len(s) == 43 and len(g2m) == 54
    assert s[0] == "MCM5" and "TOP2A" in g2m and not set(s) & set(g2m)


def _toy_cell_cycle(mouse=False):
    """Cells 0-19 express S genes highly, cells 20-39 G2M genes, 40-59 neither."""
    s, g2m = cell_cycle_genes()
    other = [f"GENE{i}" for i in range(200)]
    genes = s + g2m + other
    if mouse:
        genes = [g.capitalize() for g in genes]
    rng = np.random.default_rng(0)
    X = rng.poisson(2.0, size=(60, len(genes))).astype(np.float32)
    X[:20, : len(s)] += rng.poisson(20.0, size=(20, len(s)))
    X[20:40, len(s) : len(s) + len(g2m)] += rng.poisson(20.0, size=(20, len(g2m)))
    return ad.AnnData(X=X, var=pd.DataFrame(index=genes))


@pytest.mark.parametrize("mouse", [False, True])
def test_cell_cycle_scoring_on_a_hand_made_anndata(mouse):
    adata = _toy_cell_cycle(mouse)
    out = score_cell_cycle(adata)  # integer counts -> normalised internally
    phase = adata.obs["phase"].astype(str).to_numpy()
    assert (phase[:20] == "S").all()
    assert (phase[20:40] == "G2M").all()
    # cells high in neither score near zero, below every planted cell
    assert out["S_score"].iloc[:20].min() > out["S_score"].iloc[20:].max()
    g2m = out["G2M_score"].to_numpy()
    assert g2m[20:40].min() > max(g2m[:20].max(), g2m[40:].max())
    assert np.abs(out.iloc[40:, :2].to_numpy()).max() < 0.5 * g2m[20:40].min()
    np.testing.assert_array_equal(
        phase, phase_from_scores(out["S_score"], out["G2M_score"])
    )


def test_cell_cycle_scoring_refuses_too_few_genes():
    adata = _toy_cell_cycle()[:, 40:]  # keeps 3 S genes and all G2M genes
    with pytest.raises(
        ValueError, match="only 3/43 S .*Score before selecting highly variable"
    ):
        score_cell_cycle(adata)


def test_phase_from_scores_rule():
    np.testing.assert_array_equal(
        phase_from_scores([-1, 0.5, 0.2, -0.1], [-2, 0.1, 0.3, 0.2]),
        ["G1", "S", "G2M", "G2M"],
    )
    # scanpy's rule: G1 only when both scores are strictly negative (0 is not G1)
    np.testing.assert_array_equal(
        phase_from_scores([0.0, -0.5, 0.0], [-0.5, 0.0, 0.0]), ["S", "G2M", "S"]
    )


def test_probe_task_uses_one_balanced_split_for_concepts_and_neurons():
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "c"], [120, 60, 90])
    U = np.zeros((270, 6))
    U[np.arange(270), pd.factorize(labels)[0]] = 1.0  # concept i fires on class i only
    Z = rng.standard_normal((270, 4))  # neurons: noise
    r = probe_task(U, Z, labels, seed=0, test_size=0.3)
    assert r["classes"] == ["a", "b", "c"] and len(r["idx"]) == 180
    test_idx = [r["res"][unit]["test_idx"] for unit in ("concepts", "neurons")]
    np.testing.assert_array_equal(*test_idx)
    assert r["summary"]["cells per class"] == 60 and r["summary"]["test cells"] == 54
    assert r["summary"]["concepts"] == 1.0 and r["summary"]["neurons"] < 0.7


def test_marker_hits_case_insensitive_and_ordered():
    assert marker_hits(["Top2a", "Actb", "Mki67"], ["MKI67", "TOP2A"]) == [
        "Top2a",
        "Mki67",
    ]


def test_cell_cycle_labels_rescore_or_fall_back_to_shipped_scores():
    from helpers.probes import cell_cycle_labels

    full = _toy_cell_cycle()
    phase, source = cell_cycle_labels(full)
    assert "score_genes_cell_cycle" in source and "43/43 S" in source
    # input untouched
    assert (phase.iloc[20:40] == "G2M").all() and "phase" not in full.obs
    cut = full[:, 40:].copy()  # 3 S genes left: too few to rescore
    cut.obs["S_score"] = np.r_[np.ones(20), -np.ones(40)]
    cut.obs["G2M_score"] = np.r_[-np.ones(20), np.ones(20), -np.ones(20)]
    phase, source = cell_cycle_labels(cut)
    assert "precomputed" in source and "3/43 S" in source
    assert list(phase.iloc[[0, 25, 50]]) == ["S", "G2M", "G1"]
    del cut.obs["S_score"]
    with pytest.raises(ValueError, match="full gene space"):
        cell_cycle_labels(cut)


def test_read_top_units_reads_each_class_top_neuron_through_its_genes():
    from helpers.probes import read_top_units

    rng = np.random.default_rng(0)
    emb = PairSumEmbedding(8)
    X = rng.poisson(2.0, size=(150, 8)).astype(np.float32)
    adata = ad.AnnData(X)
    adata.layers["counts"] = X
    run = dict(adata=adata, emb=emb, Z=emb.encode(X), sae=None, U=None)
    coef = pd.DataFrame(
        [[3.0, 0.1, 0.0, 0.0], [0.0, 0.2, 2.0, 0.0]], index=["S", "G2M"]
    )
    top = read_top_units(
        coef,
        run,
        concepts=False,
        n=1,
        n_genes=2,
        n_prototypes=5,
        n_counterfactuals=2,
        markers={"S": ["G0"], "G2M": ["G5", "G0"]},
    )
    assert top["unit"].tolist() == [0, 2]
    # neuron j is driven by genes 2j and 2j+1 only
    genes = [set(g.split(", ")) for g in top["top genes"]]
    assert genes == [{"g0", "g1"}, {"g4", "g5"}]
    assert top["Regev hits"].tolist() == ["g0", "g5"]
    assert top["hits own phase"].tolist() == ["g0", "g5"]


def test_probe_defaults_are_the_papers():
    from sklearn.linear_model import LogisticRegression

    from helpers.probes import PAPER_PROBE, SCALED_PROBE

    assert PAPER_PROBE["cell type"] == dict(C=1.0, max_iter=50, scale=False)
    assert PAPER_PROBE["cell cycle"]["max_iter"] == LogisticRegression().max_iter
    assert PAPER_PROBE["cell cycle"]["C"] == LogisticRegression().C
    rng = np.random.default_rng(3)
    X = rng.exponential(size=(300, 5)) * 50
    y = np.where(X[:, 1] > np.median(X[:, 1]), "hi", "lo")
    res = probe(X, y, seed=0)
    assert len(res["model"]) == 1  # no scaler in front
    lr = res["model"][-1]
    assert lr.max_iter == 100 and lr.C == 1.0
    assert res["n_iter"] <= 100 and isinstance(res["converged"], bool)
    short = probe(X, y, seed=0, max_iter=1)
    assert not short["converged"]
    scaled = probe(X, y, seed=0, **SCALED_PROBE)
    assert len(scaled["model"]) == 2 and scaled["converged"]


def test_probe_task_reports_the_compared_variant():
    from helpers.probes import SCALED_PROBE

    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "c"], [120, 60, 90])
    U = np.zeros((270, 6))
    U[np.arange(270), pd.factorize(labels)[0]] = 1.0
    Z = rng.standard_normal((270, 4))
    r = probe_task(
        U,
        Z,
        labels,
        seed=0,
        max_iter=50,
        compare=SCALED_PROBE,
        compare_label="scaled, 2000 iter",
    )
    assert r["res"]["concepts"]["model"][-1].max_iter == 50
    assert r["summary"]["concepts (scaled, 2000 iter)"] == 1.0
    np.testing.assert_array_equal(
        r["res_compare"]["concepts"]["test_idx"], r["res"]["concepts"]["test_idx"]
    )


def test_cell_cycle_coverage_counts_each_list_and_applies_the_rule():
    from helpers.probes import cell_cycle_coverage

    s, g2m = cell_cycle_genes()
    genes = [g.lower() for g in s[:30]] + g2m[:20] + ["ACTB"]  # case-insensitive
    cov = cell_cycle_coverage(genes, min_coverage=0.5)
    assert (cov["S genes"], cov["S listed"], cov["G2M genes"], cov["G2M listed"]) == (
        30,
        43,
        20,
        54,
    )
    assert cov["S share"] == pytest.approx(30 / 43)
    assert cov["G2M share"] == pytest.approx(20 / 54)
    assert not cov["phase probe"]  # the weaker list decides: 20/54 < 0.5
    assert cell_cycle_coverage(genes, min_coverage=20 / 54)["phase probe"]
    assert cell_cycle_coverage(genes)["phase probe"]  # no rule
    with pytest.raises(ValueError, match="share between 0 and 1"):
        cell_cycle_coverage(genes, min_coverage=5)


def test_load_tasks_without_phase_coverage_or_cell_type_key_says_what_to_change(
    tmp_path,
):
    from helpers.probes import load_tasks

    path = tmp_path / "toy.h5ad"
    _toy_cell_cycle()[:, 40:].copy().write_h5ad(path)  # 3 of 43 S genes
    with pytest.raises(ValueError, match="nothing to probe.*min_cell_cycle_coverage"):
        load_tasks(str(path), min_coverage=0.5, n_top_genes=None)


def test_marker_overlap_is_the_hypergeometric_tail():
    from math import comb

    from helpers.probes import marker_overlap

    universe = [f"G{i}" for i in range(100)]
    markers = {"S": [f"G{i}" for i in range(10)] + ["NOT_IN_INPUT"], "G2M": ["G50"]}
    # class "a": two units whose genes overlap; 3 distinct S markers among 8 genes
    top = pd.DataFrame(
        {
            "class": ["a", "a", "b"],
            "top genes": ["G0, G1, G20, G21", "g2, G1, G22, G23, G24, G25", ""],
        }
    )
    out = marker_overlap(top, markers, universe).set_index(["class", "markers"])
    row = out.loc[("a", "S")]
    assert (row["genes drawn"], row["markers in input"], row["hits"]) == (9, 10, 3)
    assert row["expected"] == pytest.approx(9 * 10 / 100)
    exact = sum(comb(10, x) * comb(90, 9 - x) for x in range(3, 10)) / comb(100, 9)
    assert row["p"] == pytest.approx(exact, rel=1e-9)
    assert row["hit genes"] == "G0, G1, g2"
    assert out.loc[("a", "G2M"), "hits"] == 0 and out.loc[("a", "G2M"), "p"] == 1.0
    assert out.loc[("b", "S"), "genes drawn"] == 0 and out.loc[("b", "S"), "p"] == 1.0
    with pytest.raises(ValueError, match="universe is empty"):
        marker_overlap(top, markers, [])


def _results(classes, concepts, neurons, test_cells):
    summary = {
        "classes": len(classes),
        "cells per class": 100,
        "test cells": test_cells,
        "chance": 1 / len(classes),
        "concepts": concepts,
        "neurons": neurons,
        "converged": True,
    }
    return {"classes": sorted(classes), "summary": summary}


def test_accuracy_claims_follow_the_comparability_rule_and_the_papers_figures():
    from helpers.probes import PAPER_ACCURACY, accuracy_claims, gap_table

    results = {
        ("sorted", "cell type"): _results(list("ABCDEFG"), 0.70, 0.80, 400),
        ("ifn", "cell cycle"): _results(["G1", "S", "G2M"], 0.50, 0.46, 300),
    }
    claims = {c.figure: c for c in accuracy_claims(results, 0.05)}
    assert len(claims) == 6
    ct = claims["cell type probe accuracy, concepts (sorted, 400 test cells)"]
    assert ct.theirs == PAPER_ACCURACY["cell type"]["concepts"] == 0.86
    assert not ct.comparable and ct.verdict() == "not comparable"  # other classes
    cc = claims["cell cycle probe accuracy, neurons (ifn, 300 test cells)"]
    assert cc.comparable and cc.theirs == 0.48 and cc.verdict() == "reproduced"
    gap = claims["cell type probe: concepts − neurons (sorted)"]
    assert gap.theirs == -0.01 and gap.ours == pytest.approx(-0.10)
    assert gap.verdict() == "not reproduced"
    assert (
        claims["cell cycle probe: concepts − neurons (ifn)"].verdict() == "reproduced"
    )
    gaps = gap_table(results).set_index("task")
    se = np.sqrt((0.7 * 0.3 + 0.8 * 0.2) / 400)
    assert gaps.loc["cell type", "s.e. of the gap"] == pytest.approx(se)
    assert gaps.loc["cell cycle", "paper: concepts − neurons"] == pytest.approx(0.01)


def test_paper_rows_are_the_papers_test_sets():
    from helpers.probes import PAPER_PROBE_SETUP, paper_rows

    rows = {r["task"]: r for r in paper_rows()}
    # Appendix G / Figure 10: 2000 test cells per type (7 types), 1000 per phase (3)
    assert (
        rows["cell type"]["test cells"] == 14000
        and rows["cell cycle"]["test cells"] == 3000
    )
    assert rows["cell type"]["cells per class"] == 8000
    assert PAPER_PROBE_SETUP["test share (cell type)"][0] == 0.25
