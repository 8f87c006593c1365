"""Figures are legible at page width: at most 7.8 in wide (the inline PNG at most 1,200
px at 150 dpi, shown in the book's 772 px column), <= 3 data panels per row, text >= 9
pt, square confusion matrices; one fixed colour per label per dataset."""

import io

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from IPython.core.pylabtools import print_figure
from matplotlib.text import Text
from PIL import Image

from helpers import data, plotting, preprocess

CLASSES = ["Alpha", "Beta", "Delta", "Ductal", "Epsilon", "Ngn3 high EP", "Pre-endo"]


@pytest.fixture(autouse=True)
def theme():
    with matplotlib.rc_context():
        plotting.set_theme()
        yield
    plt.close("all")


# ------------------------------------------------------------------ the checks


def _data_axes(fig):
    """Axes that hold data (colour bars and empty axes excluded)."""
    out = []
    for ax in fig.axes:
        if hasattr(ax, "_colorbar") or not ax.get_visible():
            continue
        if ax.collections or ax.patches or ax.lines or ax.images:
            out.append(ax)
    return out


def legibility_problems(fig) -> list[str]:
    """Why ``fig`` would not be legible at ~780 px (empty: none)."""
    fig.canvas.draw()
    problems = []
    width = fig.get_size_inches()[0]
    shown = fig.get_tightbbox(fig.canvas.get_renderer()).width  # inline: bbox tight
    if width > plotting.MAX_WIDTH + 1e-6 or shown > plotting.MAX_WIDTH + 0.05:
        problems.append(f"width {width:.2f} in (shown {shown:.2f} in)")
    png = print_figure(fig, "png")  # what Jupyter's inline backend sends
    pixels = Image.open(io.BytesIO(png)).size[0]
    if pixels > 1210:  # 772 px column: 9 pt at 150 dpi stays >= 9 pt on screen
        problems.append(f"inline PNG {pixels} px wide")
    rows = {}
    for ax in _data_axes(fig):
        box = ax.get_position()
        rows.setdefault(round((box.y0 + box.y1) / 2, 2), []).append(ax)
    for y, axes in rows.items():
        if len(axes) > plotting.MAX_COLS:
            problems.append(f"{len(axes)} panels in the row at y={y}")
    for t in fig.findobj(Text):
        if t.get_visible() and t.get_text().strip() and t.get_fontsize() < 9:
            problems.append(f"{t.get_text()!r} at {t.get_fontsize()} pt")
    return problems


def _assert_legible(fig):
    assert legibility_problems(fig) == []


def test_checks_catch_old_style_figures():
    fig, axes = plt.subplots(1, 4, figsize=(14, 3))
    for ax in axes:
        ax.plot([0, 1], [0, 1])
    ax.text(0, 0, "tiny", fontsize=7)
    problems = legibility_problems(fig)
    assert any("width" in p for p in problems)
    assert any("4 panels in the row" in p for p in problems)
    assert any("'tiny' at 7" in p for p in problems)


def test_theme_sets_dpi_and_fonts():
    assert plotting.MAX_WIDTH <= 8
    assert plt.rcParams["figure.dpi"] == plotting.DPI == 150
    assert plt.rcParams["savefig.dpi"] == 150
    for key in ("xtick.labelsize", "ytick.labelsize", "legend.fontsize"):
        assert plt.rcParams[key] >= 9


# ------------------------------------------------------------------ toy inputs


@pytest.fixture
def toy():
    rng = np.random.default_rng(0)
    n = 300
    labels = np.array(CLASSES)[rng.integers(0, len(CLASSES), n)]
    adata = AnnData(
        obs=pd.DataFrame(
            {"clusters": labels, "condition": rng.choice(["ctrl", "stim"], n)},
            index=[f"c{i}" for i in range(n)],
        )
    )
    adata.obsm["X_umap"] = rng.normal(size=(n, 2))
    data.attach_label_colors(adata, ["clusters", "condition"])
    eig = np.sort(rng.normal(size=20))[::-1]
    return {
        "adata": adata,
        "labels": labels,
        "scores": rng.normal(size=(n, 3)),
        "eig": eig,
        "codes": pd.Categorical(labels, categories=CLASSES).codes,
        "rng": rng,
    }


def test_umap_categorical_and_continuous(toy):
    a = toy["adata"]
    _assert_legible(plotting.umap(a, "clusters"))
    _assert_legible(plotting.umap(a, toy["scores"][:, 0], title="score"))


def test_umap_draws_its_palette_and_max_cells(toy):
    a = toy["adata"]
    fig = plotting.umap(a, "clusters", max_cells=100)
    ax = fig.axes[0]
    assert "of 300 cells" in ax.get_title()
    drawn = sum(len(c.get_offsets()) for c in ax.collections)
    assert 90 <= drawn <= 110
    pal = plotting.palette(a, "clusters")
    for c in ax.collections:
        got = matplotlib.colors.to_hex(c.get_facecolor()[0])
        assert got == pal[c.get_label()]
    # default: every cell, title unchanged
    ax = plotting.umap(a, "clusters").axes[0]
    assert sum(len(c.get_offsets()) for c in ax.collections) == a.n_obs
    assert ax.get_title() == "clusters"


def test_panel_figures(toy):
    a, lab, sc, eig = toy["adata"], toy["labels"], toy["scores"], toy["eig"]
    pal = plotting.palette(a, "clusters")
    figs = {
        "umap_panels": plotting.umap_panels(
            a, {"types": "clusters", **{f"f{j}": sc[:, j] for j in range(3)}}
        ),
        "umap_panels_cont": plotting.umap_panels(
            a, {f"f{j}": sc[:, j % 3] for j in range(5)}
        ),
        "umaps": plotting.umaps(a, ["clusters", "condition"]),
        "module_figure": plotting.module_figure(
            eig, sc, lab, "Beta", name="Beta", palette=pal
        ),
        "module_distributions": plotting.module_distributions(
            sc, lab, highlight="Beta", n_modules=3, title="t", palette=pal
        ),
        "module_distributions_all": plotting.module_distributions(sc, lab),
        "predicted_vs_true": plotting.predicted_vs_true(
            sc, sc + 0.1, lab, [0.9, 0.8, 0.7], palette=pal
        ),
        "modules_vs_target": plotting.modules_vs_target(
            eig, sc, sc[:, 0], lab, [0, 1], [0.5, 0.4, 0.3], palette=pal
        ),
        "score_vs_target": plotting.score_vs_target(sc[:, 0], sc[:, 1], lab),
    }
    for name, fig in figs.items():
        assert legibility_problems(fig) == [], name


def test_module_figure_is_target_vs_rest_in_two_rows(toy):
    lab, pal = toy["labels"], plotting.palette(toy["adata"], "clusters")
    fig = plotting.module_figure(toy["eig"], toy["scores"], lab, "Beta", palette=pal)
    axes = _data_axes(fig)
    assert len(axes) == 4
    assert len({round(ax.get_position().y0, 2) for ax in axes}) == 2  # 2 x 2
    hist = axes[1]
    filled = [p for p in hist.patches if p.get_fill()]
    outlines = [p for p in hist.patches if not p.get_fill()]
    assert len(filled) == 1 and len(outlines) == 1  # Beta against the pooled rest
    assert matplotlib.colors.to_hex(filled[0].get_facecolor()) == pal["Beta"]


def test_confusions_square_and_legible(toy):
    rng, codes = toy["rng"], toy["codes"]
    pred = np.where(rng.random(len(codes)) < 0.8, codes, rng.integers(0, 7, len(codes)))
    res = {
        u: {
            "y_test": np.array(CLASSES)[codes],
            "y_pred": np.array(CLASSES)[pred],
            "accuracy": 0.8,
        }
        for u in ("concepts", "neurons")
    }
    for fig in (
        plotting.confusion(codes, pred, CLASSES),
        plotting.confusion_pair(codes, {"a": pred, "b": codes}, CLASSES),
        plotting.probe_confusions(res, CLASSES, title="pbmc, cell type"),
    ):
        _assert_legible(fig)
        for ax in _data_axes(fig):
            assert ax.get_aspect() == 1.0
            w, h = ax.get_window_extent().width, ax.get_window_extent().height
            assert 0.8 < w / h < 1.25  # a square, not a strip
    # counts mode writes integers; empty cells stay blank
    fig = plotting.confusion([0, 0, 1], [0, 0, 0], ["x", "y"], normalize=False)
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert texts == ["1", "2"]


def test_other_figures(toy):
    rng, eig = toy["rng"], toy["eig"]
    hist = pd.DataFrame(
        {
            "epoch": range(10),
            "train_loss": rng.random(10),
            "val_loss": rng.random(10),
            "train_accuracy": rng.random(10),
            "val_accuracy": rng.random(10),
        }
    )
    dose_summary = pd.DataFrame(
        [(d, m, rng.normal(), 0.1) for d in (0, 10, 100) for m in range(3)],
        columns=["dose", "module", "mean", "std"],
    )
    comp = pd.DataFrame(
        {
            "additive_error": [0.1, 0.4],
            "ci_low": [0.05, 0.3],
            "ci_high": [0.2, 0.5],
            "expression_additive_error": [0.2, 0.3],
        },
        index=["A+B", "C+D"],
    )
    idx = pd.MultiIndex.from_tuples([("A+B", "A"), ("A+B", "B"), ("C+D", "C")])
    outputs = pd.DataFrame(
        {
            "separated": [True, True, False],
            "retained": [0.9, 0.5, 0.0],
            "ci_low": [0.8, 0.4, 0.0],
            "ci_high": [1.0, 0.6, 0.0],
        },
        index=idx,
    )
    expression = pd.DataFrame(
        {
            f"{k}{s}": v
            for k in ("additive", "readout", "span")
            for s, v in (("", [0.3, 0.1]), ("_low", [0.2, 0.0]), ("_high", [0.4, 0.2]))
        },
        index=["A+B", "C+D"],
    )
    null = rng.random((20, 30))
    pairs = {"cosine": np.sort(rng.random(30))[::-1]}
    figs = {
        "training_curves": plotting.training_curves(hist),
        "eigen_spectrum": plotting.eigen_spectrum(eig),
        "spectrum_line": plotting.spectrum_line(eig),
        "per_class_bars": plotting.per_class_bars(
            pd.DataFrame({"bilinear": [0.1, 0.2], "ridge": [0.2, 0.3]}, ["a", "b"])
        ),
        "per_class_bars_one": plotting.per_class_bars(
            pd.DataFrame({"bilinear MAE": [0.12], "ridge MAE": [0.2]}, ["drug"]),
            ylabel="test MAE",
        ),
        "concept_status_bars": plotting.concept_status_bars(
            pd.DataFrame(
                {"specific": [3, 1], "not specific": [5, 6], "not enough data": [1, 2]},
                index=["cell_type", "condition"],
            )
        ),
        "deletion_curves": plotting.deletion_curves(
            pd.DataFrame(
                {
                    "unit": np.repeat([0, 1], 5),
                    "n_genes": np.tile(range(5), 2),
                    "attribution": rng.random(10),
                    "deg": rng.random(10),
                }
            )
        ),
        "dose_module_figure": plotting.dose_module_figure(eig, dose_summary, "SAHA"),
        "composition_figure": plotting.composition_figure(
            {
                "table": comp,
                "group_means": pd.DataFrame(rng.normal(size=(3, 2))),
                "singles": ["A", "B"],
            }
        ),
        "composition_readout": plotting.composition_readout_figure(
            {"outputs": outputs, "expression": expression}, title="plant"
        ),
        "gsea_bars": plotting.gsea_bars(
            pd.DataFrame({"strong": [0.2], "weak": [0.3], "none": [0.5]}, ["SAE"])
        ),
        "matched_cosines": plotting.matched_cosines(
            null, {"a": pairs}, pairs, "a vs b"
        ),
        "matched_correlations": plotting.matched_correlations(
            {"a vs b": {"correlation": pairs["cosine"]}}, null
        ),
        "score_by_group": plotting.score_by_group(
            toy["scores"][:, 0],
            toy["labels"],
            toy["adata"].obs["condition"],
            separation=pd.DataFrame({"auroc": dict.fromkeys(CLASSES, 0.7)}),
            palette=plotting.palette(toy["adata"], "condition"),
        ),
    }
    for name, fig in figs.items():
        assert legibility_problems(fig) == [], name


def test_per_class_bars_writes_values():
    fig = plotting.per_class_bars(
        pd.DataFrame({"bilinear MAE": [0.123], "ridge MAE": [0.2]}, ["drug"])
    )
    assert {t.get_text() for t in fig.axes[0].texts} == {"0.123", "0.2"}


# ------------------------------------------------------------------ colours


def test_label_colors_depend_on_the_label_set_only():
    a = data.label_colors(["b", "a", "c"])
    b = data.label_colors(["c", "b", "a"])
    assert dict(zip("bac", a)) == dict(zip("cba", b))
    assert len(set(data.label_colors([f"l{i}" for i in range(34)]))) == 34


def test_palette_reads_uns_and_falls_back(toy):
    a = toy["adata"]
    assert list(plotting.palette(a, "clusters").values()) == list(
        a.uns["clusters_colors"]
    )
    a.uns["clusters_colors"] = ["#000000"] * len(CLASSES)  # a user's own colours win
    assert set(plotting.palette(a, "clusters").values()) == {"#000000"}
    del a.uns["clusters_colors"]  # fallback: the same fixed rule
    assert list(plotting.palette(a, "clusters").values()) == data.label_colors(CLASSES)
    a.uns["clusters_colors"] = ["#000000"]  # stale list: a clear error
    with pytest.raises(ValueError, match="stale"):
        plotting.palette(a, "clusters")
    with pytest.raises(KeyError):
        plotting.palette(a, "no_such_column")


def test_palette_argument_must_cover_the_labels(toy):
    with pytest.raises(ValueError, match="no colour for"):
        plotting.score_vs_target([1, 2], [1, 2], ["a", "b"], palette={"a": "red"})


def test_load_dataset_attaches_fixed_colours():
    one, two = (data.load_dataset("pbmc68k_reduced") for _ in range(2))
    cats = list(one.obs["bulk_labels"].cat.categories)
    assert cats == sorted(cats)
    assert list(one.uns["bulk_labels_colors"]) == list(two.uns["bulk_labels_colors"])
    assert list(one.uns["bulk_labels_colors"]) == data.label_colors(cats)
    # check_labels (sorted categories) stays aligned with the stored list
    labels = data.check_labels(one, "bulk_labels")
    assert list(labels.cat.categories) == cats
    pal = plotting.palette(one, "bulk_labels")
    # a subset keeps each label's colour (anndata drops unused colours with them)
    sub = one[one.obs["bulk_labels"] != cats[0]].copy()
    assert plotting.palette(sub, "bulk_labels") == {
        k: v for k, v in pal.items() if k != cats[0]
    }
    # and so do prepare and subsample
    prepped = preprocess.prepare(one, n_top_genes=200, min_cells_per_gene=3)
    assert plotting.palette(prepped, "bulk_labels") == pal
    small = preprocess.subsample(one, 200, groupby="bulk_labels")
    assert set(plotting.palette(small, "bulk_labels").items()) <= set(pal.items())


def test_pancreas_colours_same_in_every_load(shared_data):
    a = data.load_dataset("pancreas")
    b = data.load_dataset("pancreas")
    assert plotting.palette(a, "clusters") == plotting.palette(b, "clusters")
    assert plotting.palette(a, "clusters_coarse") == plotting.palette(
        b, "clusters_coarse"
    )
