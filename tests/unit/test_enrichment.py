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
    library = {
        "planted": background[:30],
        **{
            f"noise{j}": list(rng.choice(background, 30, replace=False))
            for j in range(50)
        },
    }
    res = enrichment.enrich(background[:20] + background[500:505], library, background)
    assert res.iloc[0]["Term"] == "planted" and res.iloc[0]["Adjusted P-value"] < 1e-10
    assert (res["Adjusted P-value"] <= 0.05).all()


def test_enrich_skips_terms_too_small_in_the_background():
    background = [f"G{i}" for i in range(500)]
    library = {
        "tiny": ["G0", "G1", "NOT_MEASURED_1", "NOT_MEASURED_2"],
        "big": background[:40],
    }
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


def test_library_downloads_once_into_the_cache(
    shared_data, serve_folder, tmp_path, monkeypatch
):
    """No local copy: the library comes from the mirror, then from the cache."""
    from helpers import enrichment

    lib = shared_data / "genesets" / "MSigDB_Hallmark_2020.txt"
    served = tmp_path / "mirror"
    served.mkdir()
    (served / lib.name).write_bytes(lib.read_bytes())
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("BOOK_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("BOOK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BOOK_DATA_MIRROR", serve_folder(served))
    enrichment._load.cache_clear()
    got = enrichment.load_library("MSigDB_Hallmark_2020")
    assert got == enrichment._read_library(lib) and len(got) == 50
    cached = tmp_path / "cache" / "genesets" / lib.name
    assert cached.read_bytes() == lib.read_bytes()
    (served / lib.name).unlink()  # the server no longer has it: the cache is read
    enrichment._load.cache_clear()
    assert enrichment.load_library("MSigDB_Hallmark_2020") == got


def test_library_offline_error_names_the_file_and_place(tmp_path, monkeypatch):
    from helpers import enrichment, sources

    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("BOOK_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("BOOK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BOOK_DATA_MIRROR", "http://127.0.0.1:9")  # nothing listens
    enrichment._load.cache_clear()
    with pytest.raises(sources.DownloadError) as err:
        enrichment.load_library("MSigDB_Hallmark_2020")
    msg = str(err.value)
    assert "MSigDB_Hallmark_2020.txt" in msg and "genesets" in msg
    assert err.value.__cause__ is not None
    assert not (tmp_path / "cache" / "genesets" / "MSigDB_Hallmark_2020.txt").exists()


def test_enrich_poles_finds_the_planted_term_on_its_pole_only():
    genes = [f"G{i}" for i in range(400)]
    load = np.zeros(400)
    load[:10] = np.linspace(1.0, 0.5, 10)  # positive pole: G0..G9
    load[10:20] = -np.linspace(1.0, 0.5, 10)  # negative pole: G10..G19
    load[20:] = np.random.default_rng(0).normal(0, 1e-3, 380)
    lib = {
        "planted": genes[:10] + genes[200:205],
        **{f"noise{i}": genes[30 + 10 * i : 40 + 10 * i] for i in range(30)},
    }
    libs = {"A": lib, "B": {"other": genes[300:320]}}
    table = enrichment.enrich_poles(load, genes, libs, frac=0.01, min_genes=10)
    assert list(table.columns[:3]) == ["pole", "library", "Term"]
    assert table.loc[table["pole"] == "pos", "Term"].tolist() == ["planted"]
    assert table.loc[table["pole"] == "pos", "library"].tolist() == ["A"]
    assert not (table["pole"] == "neg").any()
    one = enrichment.enrich_poles(load, genes, libs, poles=("pos",), top=1)
    assert len(one) == 1 and one["Term"].iloc[0] == "planted"
    with pytest.raises(ValueError, match="unknown pole"):
        enrichment.enrich_poles(load, genes, libs, poles=("up",))


def test_gene_terms_smallest_set_first_case_insensitive():
    lib = {"big": ["CDK1", "TOP2A", "MKI67", "A", "B"], "small": ["CDK1", "TOP2A"]}
    got = enrichment.gene_terms(["Cdk1", "Foo"], lib, max_terms=1)
    assert got == {"Cdk1": ["small"], "Foo": []}


# --- the numpy prerank engine against gseapy's -------------------------------------
def _toy_ranking(n_genes=400, n_sets=60, ties=False, seed=0):
    """Random scores, random gene sets, and one set planted at the top of the
    ranking."""
    rng = np.random.default_rng(seed)
    genes = [f"G{i}" for i in range(n_genes)]
    scores = pd.Series(rng.exponential(1.0, n_genes), index=genes)
    if ties:  # attribution-like: most genes tied at exactly 0
        scores[rng.random(n_genes) < 0.6] = 0.0
    top = list(scores.sort_values(ascending=False).index[:40])
    library = {"planted": list(rng.choice(top, 15, replace=False))}
    for j in range(n_sets):
        size = int(rng.integers(5, 60))
        library[f"random{j}"] = list(rng.choice(genes, size, replace=False))
    return scores, library


def _running_sum_es(scores: pd.Series, members) -> float:
    """GSEA's enrichment score by its definition: walk the whole ranking, +|s|/Σ|s|
    at a hit, -1/(N-k) at a miss; the extreme at a hit of larger magnitude."""
    ranked = scores.sort_values(ascending=False, kind="stable")
    hit = ranked.index.isin(members)
    w = np.abs(ranked.to_numpy()) * hit
    step = np.where(hit, w / w.sum(), -1.0 / (len(ranked) - hit.sum()))
    run = np.cumsum(step)
    top = run[hit].max()
    low = (run - np.where(hit, step, 0))[hit].min()  # just before each hit
    return top if abs(top) > abs(low) else low


@pytest.mark.parametrize("ties", [False, True])
def test_prerank_units_es_is_the_running_sum_and_gseapys(ties):
    scores, library = _toy_ranking(ties=ties)
    ours = enrichment.prerank(scores, library, permutations=200).set_index("Term")
    for term in ["planted", "random0", "random1", "random2"]:
        assert ours.loc[term, "ES"] == pytest.approx(
            _running_sum_es(scores, library[term]), abs=1e-12
        )
    theirs = enrichment.prerank(
        scores, library, permutations=200, engine="gseapy"
    ).set_index("Term")
    np.testing.assert_allclose(
        ours["ES"], theirs.loc[ours.index, "ES"], rtol=0, atol=1e-12
    )
    # the planted set's leading edge is the same genes, in gseapy's order
    assert ours.loc["planted", "Lead_genes"] == theirs.loc["planted", "Lead_genes"]


def test_prerank_units_nes_and_p_agree_with_gseapy_in_distribution():
    scores, library = _toy_ranking(n_sets=80, seed=1)
    ours = enrichment.prerank(scores, library, permutations=1000).set_index("Term")
    theirs = enrichment.prerank(
        scores, library, permutations=1000, engine="gseapy", threads=2
    ).set_index("Term")
    theirs = theirs.loc[ours.index]
    # the planted set: no permutation reaches it in either engine
    assert ours.loc["planted", "NOM p-val"] == 0 == theirs.loc["planted", "NOM p-val"]
    assert ours.loc["planted", "NES"] > 2 and theirs.loc["planted", "NES"] > 2
    # same statistic, other random draws: NES within a few per cent, p close
    assert np.corrcoef(ours["NES"], theirs["NES"])[0, 1] > 0.99
    assert np.median(np.abs(ours["NES"] - theirs["NES"])) < 0.05
    assert np.corrcoef(ours["NOM p-val"], theirs["NOM p-val"])[0, 1] > 0.95
    assert np.median(np.abs(ours["NOM p-val"] - theirs["NOM p-val"])) < 0.05


def test_prerank_units_nominal_p_is_uniform_under_the_null():
    rng = np.random.default_rng(3)
    genes = [f"G{i}" for i in range(500)]
    library = {f"s{j}": list(rng.choice(genes, 20, replace=False)) for j in range(200)}
    scores = {u: pd.Series(rng.normal(size=500), index=genes) for u in range(5)}
    p = pd.concat(
        [t["NOM p-val"] for t in enrichment.prerank_units(scores, library).values()]
    )
    assert 0.4 < p.mean() < 0.6 and 0.03 < (p <= 0.05).mean() < 0.08


def test_prerank_units_fdr_is_gseapys_formula():
    """With every set of one size sharing that size's null, the FDR equals gseapy's
    (algorithm.gsea_fdr) on the nulls repeated once per set."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from gseapy.algorithm import gsea_fdr

    rng = np.random.default_rng(1)
    null = rng.normal(0, 1, (5, 200)) * rng.uniform(0.5, 2, (5, 1))
    mult = rng.integers(1, 4, 5)
    nes = rng.normal(0, 1.5, mult.sum())
    expected = gsea_fdr(nes, null[np.repeat(np.arange(5), mult)])
    np.testing.assert_allclose(enrichment._fdr(nes, null, mult), expected, atol=0)


def test_prerank_units_batch_equals_one_by_one():
    scores, library = _toy_ranking(seed=2)
    other = scores.sample(frac=1.0, random_state=0) * 2.0 + 0.1
    short = scores.drop(index=scores.index[:7])  # another gene universe
    both = enrichment.prerank_units({"a": scores, "b": other, "c": short}, library)
    for unit, s in {"a": scores, "b": other, "c": short}.items():
        pd.testing.assert_frame_equal(both[unit], enrichment.prerank(s, library))


def test_prerank_units_bad_inputs():
    scores, library = _toy_ranking()
    with pytest.raises(ValueError, match="at least one unit"):
        enrichment.prerank_units({}, library)
    with pytest.raises(ValueError, match="permutations=0"):
        enrichment.prerank_units({0: scores}, library, permutations=0)
    with pytest.raises(ValueError, match="No gene set has between 5 and 500"):
        enrichment.prerank_units({0: scores}, {"x": ["nope1", "nope2"]})
    with pytest.raises(ValueError, match="engine='fast'"):
        enrichment.prerank(scores, library, engine="fast")
