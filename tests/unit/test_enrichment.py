import numpy as np
import pandas as pd
import pytest

from helpers import enrichment


def test_pole_genes_top_fraction_per_sign():
    genes = [f"g{i}" for i in range(2000)]
    load = np.linspace(-1, 1, 2000)
    poles = enrichment.pole_genes(load, genes, frac=0.01)
    assert poles["pos"][:3] == ["g1999", "g1998", "g1997"] and len(poles["pos"]) == 20
    assert poles["neg"][:2] == ["g0", "g1"] and len(poles["neg"]) == 20


def test_enrich_recovers_planted_term():
    rng = np.random.default_rng(0)
    background = [f"G{i}" for i in range(1000)]
    library = {"planted": background[:30], **{f"noise{j}": list(rng.choice(background, 30, replace=False))
                                              for j in range(50)}}
    res = enrichment.enrich(background[:20] + background[500:505], library, background)
    assert res.iloc[0]["Term"] == "planted" and res.iloc[0]["Adjusted P-value"] < 1e-10
    assert (res["Adjusted P-value"] <= 0.05).all()


def test_enrich_skips_terms_too_small_in_the_background():
    background = [f"G{i}" for i in range(500)]
    library = {"tiny": ["G0", "G1", "NOT_MEASURED_1", "NOT_MEASURED_2"], "big": background[:40]}
    picked = ["G0", "G1"] + background[2:12]
    both = enrichment.enrich(picked, library, background, min_size=2)
    assert set(both["Term"]) == {"tiny", "big"}  # 2/2 of a tiny term is "significant"
    res = enrichment.enrich(picked, library, background)  # default min_size=5 drops it
    assert list(res["Term"]) == ["big"]


def test_local_libraries_human_and_mouse(shared_data):
    human = enrichment.load_library("GO_Biological_Process_2023", "human")
    mouse = enrichment.load_library("GO_Biological_Process_2023", "mouse")
    assert len(human) > 5000
    term = next(t for t in human if t.startswith("Insulin Secretion (GO:"))
    assert "PDX1" in human[term] and "Pdx1" in mouse[term] and "PDX1" not in mouse[term]
    kegg = enrichment.load_library("KEGG_2021_Human", "human")
    assert len(kegg) > 300


def test_missing_library_says_where_to_put_it():
    with pytest.raises(FileNotFoundError, match="genesets"):
        enrichment.load_library("No_Such_Library_2099")


def test_prerank_puts_planted_set_first():
    genes = [f"G{i}" for i in range(300)]
    scores = pd.Series(np.linspace(1, 0, 300), index=genes)
    library = {"top": genes[:20], "bottom": genes[-20:], "middle": genes[140:160]}
    res = enrichment.prerank(scores, library, permutations=200, seed=0)
    assert res.iloc[0]["Term"] == "top" and res.iloc[0]["NES"] > 0
