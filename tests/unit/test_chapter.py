import json

import numpy as np
import pytest

from helpers import chapter


def test_metrics_json_roundtrip_and_no_overwrite_of_foreign_files(tmp_path):
    path = chapter.write_metrics(
        {
            "acc": np.float32(0.5),
            "n": np.int64(3),
            "nan": float("nan"),
            "arr": np.arange(2),
        },
        tmp_path,
    )
    got = json.loads(path.read_text())
    assert (
        got["acc"] == 0.5
        and got["n"] == 3
        and got["nan"] is None
        and got["arr"] == [0, 1]
    )
    chapter.write_metrics({"acc": 0.6}, tmp_path)  # ours: overwritten
    foreign = tmp_path / "other"
    foreign.mkdir()
    (foreign / "metrics.json").write_text('{"mine": 1}')
    with pytest.raises(FileExistsError, match="not written by this book"):
        chapter.write_metrics({"acc": 0.6}, foreign)
    assert json.loads((foreign / "metrics.json").read_text()) == {"mine": 1}


def test_every_chapter_has_a_parameters_cell_with_the_contract():
    import jupytext

    common = {"seed", "device", "output_dir", "fast"}
    for md in chapter.CHAPTERS.glob("*.md"):
        nb = jupytext.read(md)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, md.name
        names = {
            line.split("=")[0].strip()
            for line in tagged[0].source.splitlines()
            if "=" in line
        }
        assert common <= names, (md.name, common - names)
        assert any(n.startswith("dataset") for n in names), md.name


def test_unknown_chapter():
    with pytest.raises(FileNotFoundError, match="Known chapters"):
        chapter.notebook_for("no_such_chapter", chapter.REPO_ROOT / "_build" / "tmp")


def test_output_guard_refuses_foreign_files_and_allows_the_books(tmp_path):
    import nbformat

    user = tmp_path / "cell_typing.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), user)
    before = user.read_text()
    with pytest.raises(
        FileExistsError,
        match=r"cell_typing\.ipynb exists and was not "
        r"written by this book.*another output folder",
    ):
        chapter.run_chapter("cell_typing", {"fast": True}, tmp_path)
    assert user.read_text() == before and not (tmp_path / "_src").exists()
    for name in ("concept_explorer.html", "metrics.json"):
        (tmp_path / name).write_text("mine")
        with pytest.raises(FileExistsError, match=name):
            chapter.output_path(tmp_path / name)
    # files the book wrote (listed in the folder's manifest) may be written again
    ours = chapter.output_path(tmp_path / "page.html")
    ours.write_text("v1")
    assert chapter.output_path(ours) == ours and chapter.written_by_book(ours)
    assert chapter.MANIFEST in {p.name for p in tmp_path.iterdir()}
    src = chapter.notebook_for("cell_typing", tmp_path / "_src")
    assert chapter.notebook_for("cell_typing", tmp_path / "_src") == src
    # a notebook executed by the book before the manifest existed is recognised
    legacy = tmp_path / "old"
    (legacy / "_src").mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    source = legacy / "_src" / "frequencies.ipynb"
    nb.metadata["papermill"] = {"input_path": str(source)}
    nbformat.write(nb, legacy / "frequencies.ipynb")
    assert chapter.check_writable(legacy / "frequencies.ipynb")


def test_verdicts_follow_the_stated_rule():
    from helpers.chapter import Claim, glance

    assert Claim("acc", 0.90, 0.91, 0.02, "blog").verdict() == "reproduced"
    assert Claim("acc", 0.90, 0.95, 0.02, "blog").verdict() == "better"
    assert Claim("acc", 0.90, 0.80, 0.02, "blog").verdict() == "not reproduced"
    assert Claim("err", 0.10, 0.05, 0.02, "x", False).verdict() == "better"
    assert Claim("λ0", 0.272, 0.228, 0.02, "blog", None).verdict() == "not reproduced"
    assert Claim("λ0", 0.272, 0.265, 0.02, "blog", None).verdict() == "reproduced"
    assert Claim("acc", None, 0.9, 0.02, "blog").verdict() == "not comparable"
    table = glance([Claim("acc", 0.9, 0.9049, 0.02, "blog")])
    assert table.loc[0, ["reference", "ours", "verdict"]].tolist() == [
        "0.900",
        "0.905",
        "reproduced",
    ]
    # a named difference of setting overrides the numbers
    other = Claim("R²", 0.91, 0.91, 0.02, "paper", comparable=False, note="other data")
    assert other.verdict() == "not comparable"
    assert other.record()["verdict"] == "not comparable"


def test_book_glance_collects_every_chapter(tmp_path):
    from helpers.chapter import Claim, book_glance, glue_glance

    with pytest.raises(ValueError, match="at least one Claim"):
        glue_glance([])
    with pytest.raises(FileNotFoundError, match="run the chapters"):
        book_glance(tmp_path)
    claims = {
        "a": [Claim("acc", 0.9, 0.8, 0.02, "blog")],
        "b": [Claim("r", 0.5, 0.5, 0.1, "paper", None), Claim("n", None, 3, 0, "x")],
    }
    for name, cl in claims.items():
        (tmp_path / name).mkdir()
        records = glue_glance(cl).attrs["records"]
        (tmp_path / name / "metrics.json").write_text(json.dumps({"glance": records}))
    (tmp_path / "c").mkdir()  # a chapter without a table is left out
    (tmp_path / "c" / "metrics.json").write_text("{}")
    table = book_glance(tmp_path)
    assert table["chapter"].tolist() == ["a", "b", "b"]
    assert table["verdict"].tolist() == [
        "not reproduced",
        "reproduced",
        "not comparable",
    ]


def test_relative_output_dirs_are_taken_from_the_repository(tmp_path, monkeypatch):
    from helpers import chapter

    monkeypatch.chdir(tmp_path)
    out = chapter.resolve_output_dir("_build/test-chapters/_probe_", "x")
    assert out == chapter.REPO_ROOT / "_build" / "test-chapters" / "_probe_"
    assert chapter._portable(out) == "_build/test-chapters/_probe_"
    assert chapter._portable(tmp_path) == str(tmp_path.resolve())
    out.rmdir()


def test_glue_key_is_what_tabs_write():
    assert chapter.glue_key("ct_modules", "Ngn3 low EP") == "ct_modules_Ngn3_low_EP"
    assert chapter.glue_key("k", "CD4+ T cells") == "k_CD4_T_cells"
    assert chapter.glue_key("k", "Pre-endocrine") == "k_Pre_endocrine"


def test_glance_shows_counts_without_decimals():
    rows = chapter.glance(
        [
            chapter.Claim("types separated", 12, 9, 1, "study"),
            chapter.Claim("accuracy", 0.9, 1.0, 0.05, "study"),
            chapter.Claim("count, no reference", None, 4, 1, "study"),
        ]
    )
    assert list(rows["reference"]) == ["12", "0.900", "—"]
    assert list(rows["ours"]) == ["9", "1.000", "4"]
