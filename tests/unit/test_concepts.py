"""Tests for helpers.concepts: metadata characterisation, GSEA bookkeeping,
explorer page."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from helpers import concepts as cc
from helpers.enrichment import gene_terms


def _table():
    # 200 cells: 100 "T", 60 "B", 40 "NK"; phase alternates G1/S
    ct = np.array(["T"] * 100 + ["B"] * 60 + ["NK"] * 40)
    phase = np.array(["G1", "S"] * 100)
    obs = pd.DataFrame({"cell_type": pd.Categorical(ct), "phase": phase})
    A = np.zeros((200, 4))
    A[:100, 0] = 1.0  # all T cells (share 1.0) -> specific
    A[:70, 1] = 0.5  # 70 T + 30 B = 100 cells, share 0.7 -> specific (>=)
    A[100:130, 1] = 0.3
    A[:60, 2] = 2.0  # 60 T + 40 NK = 100 cells, share 0.6 -> not specific
    A[160:200, 2] = 2.0
    A[:99, 3] = 1.0  # 99 cells -> not enough data
    return obs, A


def test_characterise_statuses():
    obs, A = _table()
    t = cc.characterise(
        obs, A, ["cell_type", "phase"], min_active_cells=100, specific_share=0.7
    )
    assert t["n_active"].tolist() == [100, 100, 100, 99]
    assert t["cell_type_top"].tolist()[:3] == ["T", "T", "T"]
    np.testing.assert_allclose(t["cell_type_share"].to_numpy()[:3], [1.0, 0.7, 0.6])
    assert t["cell_type_status"].tolist() == [
        "specific",
        "specific",
        "not specific",
        "not enough data",
    ]
    assert t["phase_status"].tolist()[:3] == ["not specific"] * 3  # phases are 50/50
    assert t["status"].tolist() == [
        "specific",
        "specific",
        "not specific",
        "not enough data",
    ]
    assert t["specific_to"].tolist() == ["cell_type", "cell_type", "", ""]
    s = cc.summary(t)
    assert s.loc["any", ["specific", "not specific", "not enough data"]].tolist() == [
        2,
        1,
        1,
    ]
    assert s.loc["phase", "specific"] == 0
    assert s.loc["any", "share_specific"] == pytest.approx(0.5)


def test_characterise_dead_concept_and_errors():
    obs, A = _table()
    A[:, 3] = 0.0
    t = cc.characterise(obs, A, ["cell_type"], min_active_cells=1)
    assert t.loc[3, "n_active"] == 0 and t.loc[3, "status"] == "not enough data"
    assert np.isnan(t.loc[3, "cell_type_share"])
    with pytest.raises(ValueError, match="no column 'tissue'"):
        cc.characterise(obs, A, ["tissue"])
    with pytest.raises(ValueError, match="rows but obs has"):
        cc.characterise(obs.iloc[:10], A, ["cell_type"])
    obs["score"] = np.linspace(0, 1, 200)
    with pytest.raises(ValueError, match="continuous.*pd.cut"):
        cc.characterise(obs, A, ["score"])


def test_gsea_annotate_levels_with_stub_prerank():
    lib = {"A": ["g1"], "B": ["g2"]}
    fake = {
        "u1": pd.DataFrame(
            {"Term": ["A", "B"], "NES": [2.0, 1.0], "NOM p-val": [0.0, 0.01]}
        ),
        "u2": pd.DataFrame(
            {"Term": ["A", "B"], "NES": [1.5, -3.0], "NOM p-val": [0.004, 0.0]}
        ),
        "u3": pd.DataFrame({"Term": ["A"], "NES": [1.2], "NOM p-val": [0.2]}),
    }
    calls = []

    def stub(scores, library, organism, **kw):
        calls.append((organism, kw))
        return fake[scores.name]

    attr = {u: pd.Series([1.0, 0.0], index=["g1", "g2"], name=u) for u in fake}
    t = cc.gsea_annotate(attr, lib, organism="mouse", prerank=stub, permutation_num=10)
    assert t["term"].tolist() == ["A", "A", "A"]  # negative NES never chosen
    assert t["annotation"].tolist() == ["strong", "weak", "none"]
    assert calls[0] == ("mouse", {"permutation_num": 10})
    s = cc.gsea_summary({"concepts": t})
    assert s.loc["concepts", "strong_or_weak"] == pytest.approx(2 / 3)


def test_gsea_annotate_quiet_swallows_stderr_and_counts_ties(capsys):
    import sys

    def noisy(scores, library, organism, **kw):
        print("2026-01-01 00:00:00 [WARNING] Duplicated values", file=sys.stderr)
        return pd.DataFrame({"Term": ["A"], "NES": [1.0], "NOM p-val": [0.5]})

    # 5 genes: two tied at 0, two tied at 0.2, one alone -> 4 of 5 tied
    attr = {"u": pd.Series([1.0, 0.2, 0.2, 0.0, 0.0], index=list("abcde"))}
    loud = cc.gsea_annotate(attr, {"A": ["a"]}, prerank=noisy)
    assert "Duplicated" in capsys.readouterr().err
    t = cc.gsea_annotate(attr, {"A": ["a"]}, prerank=noisy, quiet=True)
    assert capsys.readouterr().err == ""
    assert t.loc["u", "tied"] == pytest.approx(0.8) == loud.loc["u", "tied"]
    distinct = cc.gsea_annotate(
        {"u": pd.Series([3.0, 2.0, 1.0])}, {}, prerank=noisy, quiet=True
    )
    assert distinct.loc["u", "tied"] == 0.0


def test_gene_terms_case_insensitive():
    lib = {"big set": ["CDK1", "MKI67", "TOP2A"], "small set": ["CDK1"]}
    gt = gene_terms(["Cdk1", "Foo"], lib)
    assert gt == {"Cdk1": ["small set", "big set"], "Foo": []}


def _page_data(page: str) -> dict:
    return json.loads(re.search(r"var DATA = (\{.*?\});\n", page).group(1))


def test_explorer_html_is_self_contained():
    obs, A = _table()
    t = cc.characterise(obs, A, ["cell_type"], min_active_cells=10)
    attr = {0: pd.Series({"Cd3e": 0.9, "Ms4a1": 0.1}), 2: pd.Series({"Nkg7": 0.5})}
    comp = cc.composition(obs, A, ["cell_type"], [0, 2])
    assert comp[2]["cell_type"] == {"T": 60, "NK": 40}
    xy = np.random.default_rng(0).normal(size=(200, 2))
    page = cc.explorer_html(
        t, attr, {"Cd3e": ["T cell activation (GO:0042110)"]}, comp, xy, A
    )
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page and "<script src" not in page and "fetch(" not in page
    assert (
        "<link" not in page and "@import" not in page and "XMLHttpRequest" not in page
    )
    data = _page_data(page)
    # every concept of the table; those without attributions have no bars, plain labels
    assert [c["id"] for c in data["concepts"]] == ["0", "1", "2", "3"]
    assert [c["label"] for c in data["concepts"]][1::2] == ["c1", "c3"]
    assert data["attributions"]["0"][0] == ["Cd3e", 0.9]
    assert "1" not in data["attributions"]
    assert len(data["activations"]["2"]["idx"]) == 100
    # without obs: no label colouring, composition shares without base rates
    assert data["colour"]["keys"] == []
    assert data["composition"]["2"]["cell_type"] == [
        ["T", 60, 0.6, None],
        ["NK", 40, 0.4, None],
    ]
    # same inputs, same page (byte for byte)
    assert page == cc.explorer_html(
        t, attr, {"Cd3e": ["T cell activation (GO:0042110)"]}, comp, xy, A
    )


def _gsea_stub(units, terms, annotations, pvals):
    return pd.DataFrame(
        {
            "term": terms,
            "nes": [2.5] * len(units),
            "pval": pvals,
            "fdr": pvals,
            "lead_genes": [""] * len(units),
            "annotation": annotations,
            "tied": [0.0] * len(units),
        },
        index=pd.Index(units, name="unit"),
    )


def test_explorer_menu_labels_top_genes_and_gsea_term():
    obs, A = _table()
    t = cc.characterise(obs, A, ["cell_type"], min_active_cells=10)
    attr = {
        0: pd.Series(
            {"ISG15": 0.9, "MX1": 0.5, "IFIT3": 0.7, "IFI6": 0.1, "CD3E": -1.0}
        ),
        1: pd.Series({"CD3E": 0.2, "NKG7": -0.4}),
        2: pd.Series({"NKG7": 0.5}),
    }
    gsea = _gsea_stub(
        [0, 1, 2],
        ["response to virus (GO:0009615)", "T cell activation (GO:0042110)", None],
        ["strong", "none", "none"],
        [0.0, 0.2, np.nan],
    )
    xy = np.zeros((200, 2))
    data = _page_data(cc.explorer_html(t, attr, {}, None, xy, A, obs=obs, gsea=gsea))
    labels = {c["id"]: c["label"] for c in data["concepts"]}
    # the top three positive attributions, highest first; the term only when annotated
    assert labels["0"] == "c0 · ISG15, IFIT3, MX1 · response to virus (strong)"
    assert labels["1"] == "c1 · CD3E"  # p = 0.2: no annotation, no term in the label
    assert labels["2"] == "c2 · NKG7"
    assert labels["3"] == "c3"  # neither attribution nor GSEA: a plain label
    summary = {c["id"]: c["summary"] for c in data["concepts"]}
    assert any(
        "response to virus" in line and "strong" in line for line in summary["0"]
    )
    assert any("no positively enriched term" in line for line in summary["2"])
    assert not any("GSEA" in line for line in summary["3"])
    # the same label as the public helper
    assert cc.concept_label(0, attr[0], gsea.loc[0]) == labels["0"]
    assert cc.concept_label(7) == "c7"


def test_explorer_specificity_against_base_rates_planted():
    # 300 cells: A 30%, B 50%, C 20%; concept 0 fires on A cells only, concept 1 on
    # 40 A + 40 B cells
    labels = np.array(["A"] * 90 + ["B"] * 150 + ["C"] * 60)
    obs = pd.DataFrame({"cell_type": pd.Categorical(labels, ["C", "B", "A"])})
    A = np.zeros((300, 2))
    A[:90:2, 0] = 1.0  # 45 of the A cells
    A[50:130, 1] = 0.5  # 40 A (50..89) + 40 B (90..129)
    t = cc.characterise(obs, A, ["cell_type"], min_active_cells=10)
    rates = cc.base_rates(obs, ["cell_type"])
    assert rates == {"cell_type": pytest.approx({"A": 0.3, "B": 0.5, "C": 0.2})}
    # one rule: characterise's base rate is base_rates' value for its top label
    assert t.loc[0, "cell_type_base_rate"] == pytest.approx(rates["cell_type"]["A"])
    data = _page_data(cc.explorer_html(t, {}, {}, None, np.zeros((300, 2)), A, obs=obs))
    comp0 = data["composition"]["0"]["cell_type"]
    assert comp0 == [["A", 45, 1.0, pytest.approx(0.3)]]
    comp1 = {r[0]: r[1:] for r in data["composition"]["1"]["cell_type"]}
    assert comp1 == {
        "A": [40, 0.5, pytest.approx(0.3)],
        "B": [40, 0.5, pytest.approx(0.5)],
    }
    line0 = data["concepts"][0]["summary"][1]
    assert line0.startswith("cell_type: 100% of active cells are A; base rate 30%")
    assert "3.3× the base rate" in line0 and line0.endswith("specific")
    # a composition passed in gets the same base rates
    comp = cc.composition(obs, A, ["cell_type"], [0, 1])
    again = _page_data(
        cc.explorer_html(t, {}, {}, comp, np.zeros((300, 2)), A, obs=obs)
    )
    assert again["composition"] == data["composition"]


def test_explorer_colour_key_uses_dataset_colours():
    labels = np.array(["Beta", "Alpha", "Ductal", "Beta"] * 10)
    obs = pd.DataFrame({"ct": pd.Categorical(labels, ["Ductal", "Alpha", "Beta"])})
    A = np.zeros((40, 1))
    A[::4, 0] = 1.0
    t = cc.characterise(obs, A, ["ct"], min_active_cells=1)
    uns = {"ct_colors": ["#ff0000", "#00ff00", "#0000ff"]}  # scanpy: category order
    data = _page_data(
        cc.explorer_html(t, {}, {}, None, np.zeros((40, 2)), A, obs=obs, colors=uns)
    )
    col = data["colour"]
    assert col["keys"] == ["ct"] and col["labels"]["ct"] == ["Ductal", "Alpha", "Beta"]
    assert col["colors"]["ct"] == ["#ff0000", "#00ff00", "#0000ff"]
    # every cell's code points at its own label
    assert [col["labels"]["ct"][c] for c in col["codes"]["ct"]] == labels.tolist()
    # without stored colours (or too few): the book's fixed rule (tab10 by the rank
    # among the sorted labels, as helpers.data.label_colors and plotting.palette)
    assert cc.label_colors(obs, "ct") == {
        "Ductal": "#2ca02c",
        "Alpha": "#1f77b4",
        "Beta": "#ff7f0e",
    }
    assert cc.label_colors(obs, "ct", {"ct_colors": ["#ff0000"]}) == cc.label_colors(
        obs, "ct"
    )
    assert cc.label_colors(
        obs, "ct", {"ct": {"Beta": "red", "Alpha": "k", "Ductal": "w"}}
    ) == {"Ductal": "#ffffff", "Alpha": "#000000", "Beta": "#ff0000"}


def test_explorer_bad_inputs():
    obs, A = _table()
    t = cc.characterise(obs, A, ["cell_type"], min_active_cells=10)
    xy = np.zeros((200, 2))
    with pytest.raises(ValueError, match="pass obs"):
        cc.explorer_html(t, {}, {}, None, xy, A)
    with pytest.raises(ValueError, match="obs has 199 cells"):
        cc.explorer_html(t, {}, {}, None, xy, A, obs=obs.iloc[:199])
    with pytest.raises(ValueError, match="umap_xy must be"):
        cc.explorer_html(t, {}, {}, None, xy[:, :1], A, obs=obs)
    with pytest.raises(ValueError, match="no column 'nope'"):
        cc.explorer_html(t, {}, {}, None, xy, A, obs=obs, color_keys=["nope"])


def _cycle_obs(seed=0, n=10_000):
    """Cells with the pancreas-like phase imbalance: 77% G1, 5% a rare class."""
    rng = np.random.default_rng(seed)
    phase = rng.choice(["G1", "S", "G2M", "rare"], size=n, p=[0.77, 0.10, 0.08, 0.05])
    return pd.DataFrame({"phase": phase}), rng


def test_specificity_against_base_rates_planted_truth():
    obs, rng = _cycle_obs()
    n = len(obs)
    A = np.zeros((n, 3))
    A[rng.choice(n, 300, replace=False), 0] = 1.0  # random cells: mostly G1 by chance
    rare = np.flatnonzero(obs["phase"].to_numpy() == "rare")
    A[rng.choice(rare, 150, replace=False), 1] = 1.0  # the rare class's cells only
    g1 = np.flatnonzero(obs["phase"].to_numpy() == "G1")
    A[rng.choice(g1, 300, replace=False), 2] = 1.0  # G1 cells only: share 1 vs 0.77
    t = cc.characterise(obs, A, ["phase"], min_active_cells=100, alpha=0.01)
    base = (obs["phase"] == "G1").mean()
    assert t.loc[0, "phase_top"] == "G1" and t.loc[0, "phase_share"] >= 0.7
    assert t.loc[0, "phase_base_rate"] == pytest.approx(base)
    assert t.loc[0, "phase_enrichment"] == pytest.approx(t.loc[0, "phase_share"] / base)
    # chance: share >= 0.7 but not above the base rate -> not specific
    assert t.loc[0, "phase_pvalue"] > 0.05
    assert t.loc[0, "status"] == "not specific" and t.loc[0, "specific_by_share"]
    # the 5% class: share 1, enrichment ~ 20, tiny p -> specific
    assert t.loc[1, "phase_top"] == "rare" and t.loc[1, "phase_enrichment"] > 15
    assert t.loc[1, "phase_pvalue"] < 1e-100 and t.loc[1, "status"] == "specific"
    # G1 only: share 1.0 vs 0.77 over 300 cells is significant too
    assert t.loc[2, "status"] == "specific"
    # the paper's rule (share alone) calls the chance concept specific
    paper = cc.characterise(obs, A, ["phase"], min_active_cells=100, alpha=None)
    assert paper["status"].tolist() == ["specific"] * 3


def test_binomial_pvalue_and_bh():
    from scipy import stats

    obs, rng = _cycle_obs(1, n=2000)
    A = np.zeros((2000, 1))
    A[:200, 0] = 1.0
    t = cc.characterise(obs, A, ["phase"], min_active_cells=10, adjust=False)
    top = t.loc[0, "phase_top"]
    k = int((obs["phase"].iloc[:200] == top).sum())
    p0 = float((obs["phase"] == top).mean())
    expect = stats.binomtest(k, 200, p0, alternative="greater").pvalue
    assert t.loc[0, "phase_pvalue"] == pytest.approx(expect, rel=1e-9)
    np.testing.assert_allclose(
        cc.bh_adjust([0.01, 0.04, np.nan, 0.03]), [0.03, 0.04, np.nan, 0.04]
    )


def test_recipe_table_match_is_computed():
    theirs = {
        "batch size": (1024, "Table 3"),
        "lr": 1e-4,
        "threshold": 0.05,
        "scaler": "none",
    }
    ours = {
        "batch size": 1024,
        "lr": 1e-3,
        "threshold": 0.05 * 1.0,
        "scaler": "none",
        "epochs": 30,
    }
    t = cc.recipe_table(ours, theirs, why={"lr": "faster on CPU", "batch size": "x"})
    assert list(t.index) == ["batch size", "lr", "threshold", "scaler", "epochs"]
    assert t["match"].tolist() == [True, False, True, True, False]
    assert t.loc["lr", "why"] == "faster on CPU" and t.loc["batch size", "why"] == ""
    assert t.loc["batch size", "source"] == "Table 3"
    assert t.loc["epochs", "paper"] == "-"
    assert list(t.columns) == ["paper", "ours", "match", "why", "source"]


def test_gsea_annotate_numpy_engine_finds_the_planted_term():
    rng = np.random.default_rng(0)
    genes = [f"G{i}" for i in range(400)]
    library = {"planted": genes[:20]}
    library.update(
        {f"random{j}": list(rng.choice(genes, 25, replace=False)) for j in range(40)}
    )
    hot = pd.Series(rng.exponential(1.0, 400), index=genes)
    hot.iloc[:20] += 5.0  # the planted set's genes lead the ranking
    flat = pd.Series(rng.exponential(1.0, 400), index=genes)
    t = cc.gsea_annotate({"hot": hot, "flat": flat}, library, engine="numpy")
    assert t.loc["hot", "term"] == "planted" and t.loc["hot", "annotation"] == "strong"
    assert t.loc["flat", "annotation"] in ("none", "weak")
    with pytest.raises(ValueError, match="engine='fast'"):
        cc.gsea_annotate({"hot": hot}, library, engine="fast")
