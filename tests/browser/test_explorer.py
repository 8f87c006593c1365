"""The concept explorer in a real headless browser (``driver``: conftest.py).

The page is written by ``write_explorer`` from toy data, so these tests need neither
an executed chapter nor a built book."""

import numpy as np
import pandas as pd

from helpers import concepts as cc
from helpers.enrichment import gene_terms

TERMS = {
    "glucagon secretion (GO:0070091)": ["GCG", "ARX"],
    "insulin secretion (GO:0030073)": ["INS1", "PDX1"],
    "pancreas development (GO:0031016)": ["PDX1", "NKX6-1", "ARX"],
}


def _page(tmp_path):
    rng = np.random.default_rng(0)
    n = 120
    labels = np.repeat(["Alpha", "Beta", "Ductal"], 40)
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical(labels, ["Ductal", "Alpha", "Beta"])}
    )
    A = np.zeros((n, 4))
    A[:40, 0] = rng.random(40) + 0.1  # concept 0: Alpha cells
    A[40:80, 2] = rng.random(40) + 0.1  # concept 2: Beta cells
    A[::3, 3] = 1.0  # concept 3: every third cell, no attribution
    t = cc.characterise(obs, A, ["cell_type"], min_active_cells=10)
    attr = {
        0: pd.Series({"Gcg": 1.0, "Irx2": 0.4, "Arx": 0.2}),
        2: pd.Series({"Ins1": 0.9, "Pdx1": 0.5, "Nkx6-1": -0.1}),
    }
    gsea = pd.DataFrame(
        {
            "term": [
                "glucagon secretion (GO:0070091)",
                "insulin secretion (GO:0030073)",
            ],
            "nes": [2.1, 1.9],
            "pval": [0.0, 0.002],
            "fdr": [0.0, 0.01],
            "lead_genes": ["Gcg", "Ins1"],
            "annotation": ["strong", "weak"],
            "tied": [0.0, 0.0],
        },
        index=pd.Index([0, 2], name="unit"),
    )
    terms = gene_terms(["Gcg", "Irx2", "Arx", "Ins1", "Pdx1", "Nkx6-1"], TERMS)
    xy = np.c_[np.repeat([0.0, 3.0, 6.0], 40), np.zeros(n)] + rng.normal(size=(n, 2))
    uns = {"cell_type_colors": ["#8c564b", "#1f77b4", "#d62728"]}  # category order
    return cc.write_explorer(
        tmp_path / "explorer.html",
        t.loc[[0, 2, 3]],
        attr,
        terms,
        umap_xy=xy,
        activations=A,
        obs=obs,
        gsea=gsea,
        colors=uns,
    )


def _genes(driver):
    from selenium.webdriver.common.by import By

    return [
        g.get_attribute("data-gene")
        for g in driver.find_elements(By.CSS_SELECTOR, "svg g.gene")
    ]


def _pixels(driver, rgb):
    """Canvas pixels of the UMAP within 8 of colour ``rgb``."""
    return driver.execute_script(
        "var c=document.querySelector('canvas'), t=arguments[0];"
        "var d=c.getContext('2d').getImageData(0,0,c.width,c.height).data;"
        "var n=0;for(var i=0;i<d.length;i+=4){if(d[i+3]>200&&Math.abs(d[i]-t[0])<8&&"
        "Math.abs(d[i+1]-t[1])<8&&Math.abs(d[i+2]-t[2])<8)n++;}return n;",
        list(rgb),
    )


def test_explorer_loads_and_switches_concepts(driver, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    path = _page(tmp_path)
    driver.get(path.resolve().as_uri())
    errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not errors, errors

    select = Select(driver.find_element(By.CSS_SELECTOR, "select"))
    # the menu names concepts by their top genes and best GSEA term
    assert [o.text for o in select.options] == [
        "c0 · Gcg, Irx2, Arx · glucagon secretion (strong)",
        "c2 · Ins1, Pdx1 · insulin secretion (weak)",
        "c3",
    ]
    assert _genes(driver) == ["Gcg", "Irx2", "Arx"]
    meta = driver.find_element(By.CSS_SELECTOR, "[id$='-meta']")
    assert "100% of active cells are Alpha; base rate 33%" in meta.text

    select.select_by_value("2")
    assert select.first_selected_option.text.startswith("c2 · Ins1, Pdx1")
    assert _genes(driver) == ["Ins1", "Pdx1", "Nkx6-1"]
    labels = [t.text for t in driver.find_elements(By.CSS_SELECTOR, "svg g.gene text")]
    assert labels == ["Ins1", "Pdx1", "Nkx6-1"]
    assert "100% of active cells are Beta; base rate 33%" in meta.text
    assert "insulin secretion" in meta.text and "Alpha" not in meta.text
    # hover a gene: its GO terms, one per line (a list item each), smallest set first
    bar = driver.find_element(By.CSS_SELECTOR, 'svg g.gene[data-gene="Pdx1"] rect.bar')
    ActionChains(driver).move_to_element(bar).perform()
    tip = driver.find_element(By.CSS_SELECTOR, "[id$='-tip']")
    items = [li.text for li in tip.find_elements(By.CSS_SELECTOR, "li")]
    assert items == [
        "insulin secretion (GO:0030073)",
        "pancreas development (GO:0031016)",
    ]
    assert tip.text.splitlines()[1:] == items
    # the native tooltip holds the same terms, one per line
    title = driver.find_element(By.CSS_SELECTOR, 'svg g.gene[data-gene="Pdx1"] title')
    assert title.get_attribute("textContent").splitlines()[1:] == items
    # composition of the activating cells: 100% Beta, against a base rate of 33.3%
    row = driver.find_element(By.CSS_SELECTOR, "[id$='-comp'] tr[data-label='Beta']")
    assert row.text.split() == ["Beta", "100.0%", "33.3%"]
    # the UMAP: activating cells on the activation ramp, a colour key beside it
    legend = driver.find_element(By.CSS_SELECTOR, "[id$='-legend']")
    assert legend.get_attribute("data-by") == "activation"
    assert "c2 activation" in legend.text and "active (40 cells)" in legend.text
    assert legend.find_elements(By.CSS_SELECTOR, ".ramp")
    n_red = driver.execute_script(
        "var c=document.querySelector('canvas');"
        "var d=c.getContext('2d').getImageData(0,0,c.width,c.height).data;"
        "var n=0;for(var i=0;i<d.length;i+=4){if(d[i]>d[i+1]+60&&d[i+3]>0)n++;}"
        "return n;"
    )
    assert n_red > 0

    # a concept without attribution: no bars, a plain label, still a composition
    select.select_by_value("3")
    assert _genes(driver) == []
    assert "No attribution" in driver.find_element(By.CSS_SELECTOR, "[id$='-tip']").text


def test_explorer_colour_key_by_cell_type(driver, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get(_page(tmp_path).resolve().as_uri())
    colorby = Select(driver.find_element(By.CSS_SELECTOR, "select[id$='-colorby']"))
    assert [o.text for o in colorby.options] == ["activation", "cell_type"]
    assert _pixels(driver, (31, 119, 180)) == 0  # no Alpha colour yet
    colorby.select_by_value("cell_type")
    legend = driver.find_element(By.CSS_SELECTOR, "[id$='-legend']")
    assert legend.get_attribute("data-by") == "cell_type"
    items = legend.find_elements(By.CSS_SELECTOR, ".item")
    # the dataset's colours (uns["cell_type_colors"], category order) in the key
    assert [i.text for i in items] == ["Ductal", "Alpha", "Beta"]
    swatches = [
        i.find_element(By.CSS_SELECTOR, ".sw").value_of_css_property("background-color")
        for i in items
    ]
    assert swatches == [
        "rgba(140, 86, 75, 1)",
        "rgba(31, 119, 180, 1)",
        "rgba(214, 39, 40, 1)",
    ]
    # and on the canvas: concept 0's Alpha cells solid in the Alpha colour
    assert _pixels(driver, (31, 119, 180)) > 0


def test_explorer_works_inside_the_books_iframe(driver, tmp_path):
    """The book shows the page through show_explorer (a sandboxed <iframe srcdoc>):
    it must run there."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    page = _page(tmp_path).read_text()
    host = tmp_path / "host.html"
    frame = cc.show_explorer(page).data
    host.write_text(f"<!DOCTYPE html><html><body><h1>chapter</h1>{frame}</body></html>")
    driver.get(host.resolve().as_uri())
    driver.switch_to.frame(driver.find_element(By.TAG_NAME, "iframe"))
    Select(driver.find_element(By.CSS_SELECTOR, "select")).select_by_value("2")
    assert _genes(driver) == ["Ins1", "Pdx1", "Nkx6-1"]


def test_explorer_in_the_built_book(driver, book_url, network_log):
    """The concepts chapter's own explorer (a full build, ``$BOOK_HTML``): choosing
    another concept changes the genes and the menu label; hovering a gene lists its
    GO terms, one per line. The quick build has no chapter outputs: skipped there."""
    import os

    import pytest
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    if not os.environ.get("BOOK_HTML"):
        pytest.skip("needs a full build with executed chapters (BOOK_HTML)")
    driver.get(f"{book_url}/chapters/concepts.html")
    frames = driver.find_elements(By.TAG_NAME, "iframe")
    assert frames, "the concepts chapter shows no explorer"
    driver.switch_to.frame(frames[0])
    select = Select(driver.find_element(By.CSS_SELECTOR, "select"))
    assert len(select.options) >= 2
    first_label, first_genes = select.first_selected_option.text, _genes(driver)
    assert " · " in first_label and first_genes  # labelled by its top genes
    select.select_by_index(1)
    assert select.first_selected_option.text != first_label
    genes = _genes(driver)
    assert genes and genes != first_genes
    bar = driver.find_element(By.CSS_SELECTOR, "svg g.gene rect.bar")
    ActionChains(driver).move_to_element(bar).perform()
    tip = driver.find_element(By.CSS_SELECTOR, "[id$='-tip']")
    items = [li.text for li in tip.find_elements(By.CSS_SELECTOR, "li")]
    assert items and all("\n" not in t for t in items)
    assert driver.find_element(By.CSS_SELECTOR, "[id$='-legend']").text
    outside = [u for u in network_log(driver) if u.startswith("http")
               and "127.0.0.1" not in u]  # fmt: skip
    assert not outside, outside
