"""Headline numbers of the chapters executed with fast parameters by `make test`.

`make test` executes every chapter into _build/test-chapters/<name>/ before pytest runs;
these tests read the metrics.json each run wrote and hold the fast runs to the science
they claim.
"""

import json
from pathlib import Path

import pytest

OUT = Path(__file__).resolve().parents[2] / "_build" / "test-chapters"


def metrics(name: str) -> dict:
    path = OUT / name / "metrics.json"
    if not path.is_file():
        pytest.skip(
            f"{path} missing: run `make test`, which executes the chapters first"
        )
    return json.loads(path.read_text())


def test_cell_typing_fast():
    m = metrics("cell_typing")
    assert m["n_cells"] == 3696 and m["n_genes"] == 300
    assert m["test_accuracy"] >= 0.85
    assert m["test_accuracy"] >= m["baseline_test_accuracy"] - 0.03
    assert set(m["per_class_accuracy"]) == {
        "Alpha",
        "Beta",
        "Delta",
        "Ductal",
        "Epsilon",
        "Ngn3 high EP",
        "Ngn3 low EP",
        "Pre-endocrine",
    }
    # the model's own modules carry the canonical hormones
    assert (
        "Gcg" in m["top_genes_module0"]["Alpha"]
        and "Sst" in m["top_genes_module0"]["Delta"]
    )


def test_cell_typing_reruns_on_pbmc68k_with_parameters_only():
    m = metrics("cell_typing_pbmc68k")
    assert m["dataset"] == "pbmc68k_reduced" and m["n_cells"] == 700
    assert len(m["per_class_accuracy"]) == 10  # bulk_labels has 10 cell types
    assert m["test_accuracy"] > 3 / 10 and m["baseline_test_accuracy"] > 3 / 10


def test_stability_fast():
    m = metrics("stability")
    assert all(r > 0.9 for r in m["r2_within"].values())
    # chance level of Hungarian matching for 64 atoms in 16 dimensions, and for the
    # paper's 500 x 50
    assert 0.45 < m["mean_matched_cosine_null"] < 0.6
    assert 0.35 < m["mean_matched_cosine_null_paper_shape"] < 0.45
    # concepts of SAEs on scVI and on PCA co-activate on the same cells far more than
    # shuffled cells
    assert (
        m["across_embeddings_mean_activation_correlation"]
        > 2 * m["across_embeddings_shuffled_null"]
    )


def test_concepts_fast_follows_the_papers_recipe():
    m = metrics("concepts")
    # immune cells by default
    assert m["dataset"] == "kang2018" and m["n_genes"] == 2000
    recipe = {r["setting"]: r for r in m["recipe"]}
    for setting in (
        "SAE batch size",
        "SAE aux_k",
        "attribution threshold",
        "specific share",
    ):
        assert recipe[setting]["match"], setting
    # every deviation says why
    assert all(r["why"] for r in m["recipe"] if not r["match"])
    # fast: 3 scVI epochs and 30 SAE epochs on Kang's 2,000 cells (0.872 when written)
    assert m["sae_r2"] > 0.8
    # results at a glance: the R² row carries Table 3's scVI c = 500 figure
    r2 = m["glance"][0]
    assert r2["figure"].startswith("SAE R²") and r2["theirs"] == 0.988
    assert r2["verdict"] == (
        "reproduced"
        if abs(m["sae_r2"] - 0.988) <= r2["tolerance"]
        else "not reproduced"
        if m["sae_r2"] < 0.988
        else "better"
    )
    # the base-rate test can only remove concepts from the paper's share-only count
    assert m["n_specific"] <= m["n_specific_share_only"]
    assert m["deletion_held_out"] and "deletion_auc_attribution_in_sample" in m


def test_probes_fast_use_the_papers_probe():
    m = metrics("probes")
    paper = {"C": 1.0, "max_iter": 50, "scale": False}
    assert m["probe_settings"]["cell type"] == paper
    assert m["probe_settings"]["cell cycle"]["max_iter"] == 100


def test_probes_fast():
    m = metrics("probes")
    ct = m["probe_accuracy"]["zheng2017_sorted/cell type"]
    assert ct["n_classes"] == 7 and ct["concepts"] > 3 * ct["chance"]
    assert ct["neurons"] > 3 * ct["chance"] and ct["test_cells"] > 0
    # the phase probe runs where the Regev coverage rule allows it, and only there
    cover = {r["dataset"]: r["phase probe"] for r in m["regev_coverage"]}
    assert cover == {"zheng2017_sorted": False, "kang2018": True}
    assert set(m["probe_accuracy"]) == {
        "zheng2017_sorted/cell type",
        "kang2018/cell cycle",
    }
    assert all(m["counts_recovered"].values())
    assert {r["verdict"] for r in m["glance"]} <= {
        "reproduced",
        "not reproduced",
        "better",
        "not comparable",
    }


def test_perturbation_fast():
    m = metrics("perturbation")
    assert m["n_genes"] == 223 and m["dataset"] == "glioblastoma_panobinostat"
    comp = m["composition_synthetic"]
    # the planted additive pair composes, the planted interaction does not: intervals
    # separate
    assert comp["A+B"]["additive_high"] < comp["C+D"]["additive_low"]
    assert comp["A+B"]["verdict"] == "consistent with additive"
    assert comp["C+D"]["verdict"] == "not additive"
    doubles = m["composition_norman"]["doubles"]
    assert set(doubles) == {
        "MAP2K3+MAP2K6",
        "KLF1+TGFBR2",
        "MAPK1+TGFBR2",
        "MAP2K3+SLC38A2",
        "KLF1+MAP2K6",
    }
    assert all(
        {"additive", "additive_low", "additive_high", "verdict"} <= set(d)
        for d in doubles.values()
    )
    assert "CD14 Mono" in m["kang_separation_by_cell_type"]["all_cells"]
