"""The concept explorer in a real headless browser (``driver``: conftest.py)."""

import numpy as np
import pandas as pd

from helpers import concepts as cc
from helpers.enrichment import gene_terms


def _page(tmp_path):
    rng = np.random.default_rng(0)
    n = 120
    obs = pd.DataFrame({"cell_type": np.repeat(["Alpha", "Beta", "Ductal"], 40)})
    A = np.zeros((n, 3))
    A[:40, 0] = rng.random(40) + 0.1  # concept 0: Alpha cells
    A[40:80, 2] = rng.random(40) + 0.1  # concept 2: Beta cells
    t = cc.characterise(obs, A, ["cell_type"], min_active_cells=10)
    attr = {
        0: pd.Series({"Gcg": 1.0, "Irx2": 0.4, "Arx": 0.2}),
        2: pd.Series({"Ins1": 0.9, "Pdx1": 0.5, "Nkx6-1": -0.1}),
    }
    terms = gene_terms(
        ["Gcg", "Ins1"],
        {
            "glucagon secretion (GO:0070091)": ["GCG"],
            "insulin secretion (GO:0030073)": ["INS1", "PDX1"],
        },
    )
    comp = cc.composition(obs, A, ["cell_type"], [0, 2])
    xy = rng.normal(size=(n, 2))
    return cc.write_explorer(tmp_path / "explorer.html", t, attr, terms, comp, xy, A)


def test_explorer_loads_and_switches_concepts(driver, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    path = _page(tmp_path)
    driver.get(path.resolve().as_uri())
    errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not errors, errors

    def genes():
        return [
            g.get_attribute("data-gene")
            for g in driver.find_elements(By.CSS_SELECTOR, "svg g.gene")
        ]

    select = Select(driver.find_element(By.CSS_SELECTOR, "select"))
    assert [o.text.split(" -")[0] for o in select.options] == ["concept 0", "concept 2"]
    assert genes() == ["Gcg", "Irx2", "Arx"]

    select.select_by_value("2")
    assert genes() == ["Ins1", "Pdx1", "Nkx6-1"]
    labels = [t.text for t in driver.find_elements(By.CSS_SELECTOR, "svg g.gene text")]
    assert labels == ["Ins1", "Pdx1", "Nkx6-1"]
    # GO terms on hover: the <title> tooltip of each gene bar
    title = driver.find_element(By.CSS_SELECTOR, 'svg g.gene[data-gene="Ins1"] title')
    assert "insulin secretion (GO:0030073)" in title.get_attribute("textContent")
    # composition of the activating cells: 100% Beta
    assert "Beta" in driver.find_element(By.CSS_SELECTOR, "[id$='-comp']").text
    assert "100.0%" in driver.find_element(By.CSS_SELECTOR, "[id$='-comp']").text
    # the UMAP canvas has highlighted (red-ish) pixels for activating cells
    n_red = driver.execute_script(
        "var c=document.querySelector('canvas');"
        "var d=c.getContext('2d').getImageData(0,0,c.width,c.height).data;"
        "var n=0;for(var i=0;i<d.length;i+=4){if(d[i]>d[i+1]+60&&d[i+3]>0)n++;}"
        "return n;"
    )
    assert n_red > 0


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
    genes = [
        g.get_attribute("data-gene")
        for g in driver.find_elements(By.CSS_SELECTOR, "svg g.gene")
    ]
    assert genes == ["Ins1", "Pdx1", "Nkx6-1"]
