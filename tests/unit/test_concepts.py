"""Tests for helpers.concepts: metadata characterisation, GSEA bookkeeping, explorer page."""

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
    A[:100, 0] = 1.0                 # all T cells (share 1.0) -> specific
    A[:70, 1] = 0.5                  # 70 T + 30 B = 100 cells, share 0.7 -> specific (>=)
    A[100:130, 1] = 0.3
    A[:60, 2] = 2.0                  # 60 T + 40 NK = 100 cells, share 0.6 -> not specific
    A[160:200, 2] = 2.0
    A[:99, 3] = 1.0                  # 99 cells -> not enough data
    return obs, A


def test_characterise_statuses():
    obs, A = _table()
    t = cc.characterise(obs, A, ["cell_type", "phase"], min_active_cells=100, specific_share=0.7)
    assert t["n_active"].tolist() == [100, 100, 100, 99]
    assert t["cell_type_top"].tolist()[:3] == ["T", "T", "T"]
    np.testing.assert_allclose(t["cell_type_share"].to_numpy()[:3], [1.0, 0.7, 0.6])
    assert t["cell_type_status"].tolist() == ["specific", "specific", "not specific", "not enough data"]
    assert t["phase_status"].tolist()[:3] == ["not specific"] * 3  # phases are 50/50
    assert t["status"].tolist() == ["specific", "specific", "not specific", "not enough data"]
    assert t["specific_to"].tolist() == ["cell_type", "cell_type", "", ""]
    s = cc.summary(t)
    assert s.loc["any", ["specific", "not specific", "not enough data"]].tolist() == [2, 1, 1]
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
        "u1": pd.DataFrame({"Term": ["A", "B"], "NES": [2.0, 1.0], "NOM p-val": [0.0, 0.01]}),
        "u2": pd.DataFrame({"Term": ["A", "B"], "NES": [1.5, -3.0], "NOM p-val": [0.004, 0.0]}),
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


def test_gene_terms_case_insensitive():
    lib = {"big set": ["CDK1", "MKI67", "TOP2A"], "small set": ["CDK1"]}
    gt = gene_terms(["Cdk1", "Foo"], lib)
    assert gt == {"Cdk1": ["small set", "big set"], "Foo": []}


def test_explorer_html_is_self_contained():
    obs, A = _table()
    t = cc.characterise(obs, A, ["cell_type"], min_active_cells=10)
    attr = {0: pd.Series({"Cd3e": 0.9, "Ms4a1": 0.1}), 2: pd.Series({"Nkg7": 0.5})}
    comp = cc.composition(obs, A, ["cell_type"], [0, 2])
    assert comp[2]["cell_type"] == {"T": 60, "NK": 40}
    xy = np.random.default_rng(0).normal(size=(200, 2))
    page = cc.explorer_html(t, attr, {"Cd3e": ["T cell activation (GO:0042110)"]}, comp, xy, A)
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page and "<script src" not in page and "fetch(" not in page
    data = json.loads(re.search(r"var DATA = (\{.*?\});\n", page).group(1))
    assert [c["id"] for c in data["concepts"]] == ["0", "2"]  # only concepts with attributions
    assert data["attributions"]["0"][0] == ["Cd3e", 0.9]
    assert len(data["activations"]["2"]["idx"]) == 100
