"""helpers.book: the tables the book's build computes, and the notebook install cell."""

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from helpers import book

CHAPTER = textwrap.dedent(
    """\
    ---
    jupytext:
      text_representation:
        extension: .md
        format_name: myst
    kernelspec:
      display_name: Python 3
      language: python
      name: python3
    ---
    # A chapter

    ```{code-cell} ipython3
    :tags: [parameters]

    epochs = 100      # a comment
    lr = None
    seeds = [0, 1, 2]
    name = "pancreas"
    fast = False
    ```

    ```{code-cell} ipython3
    if fast:  # the preset
        epochs, seeds = 5, []
        lr = 1e-3 if lr is None else lr
        extra = 7

    import math
    ```
    """
)


def _book(tmp_path, chapters=("one",), text=CHAPTER):
    (tmp_path / "chapters").mkdir()
    for name in chapters:
        (tmp_path / "chapters" / f"{name}.md").write_text(text)
    toc = {
        "format": "jb-book",
        "root": "book/intro",
        "parts": [
            {"caption": "A", "chapters": [{"file": "book/background"}]},
            {"caption": "B", "chapters": [{"file": f"chapters/{n}"} for n in chapters]},
        ],
    }
    (tmp_path / "_toc.yml").write_text(json.dumps(toc))  # JSON is YAML
    return tmp_path


def test_book_chapters_in_toc_order(tmp_path):
    root = _book(tmp_path, chapters=("zeta", "alpha"))
    assert book.book_chapters(root) == ["zeta", "alpha"]


def test_fast_preset_lists_exactly_what_fast_changes(tmp_path):
    root = _book(tmp_path)
    rows = book.fast_preset("one", root)
    assert rows == [
        {"parameter": "epochs", "default": 100, "fast": 5},
        {"parameter": "lr", "default": None, "fast": 1e-3},
        {"parameter": "seeds", "default": [0, 1, 2], "fast": []},
        {"parameter": "extra", "default": None, "fast": 7},
    ]


def test_fast_preset_errors(tmp_path):
    root = _book(tmp_path)
    with pytest.raises(FileNotFoundError, match="No chapter 'missing'"):
        book.fast_preset("missing", root)
    (root / "chapters" / "noparams.md").write_text(
        CHAPTER.replace(":tags: [parameters]", "")
    )
    with pytest.raises(ValueError, match="no code cell tagged 'parameters'"):
        book.fast_preset("noparams", root)
    (root / "chapters" / "nofast.md").write_text(
        CHAPTER.replace("if fast:", "if True:")
    )
    with pytest.raises(ValueError, match="top-level 'if fast:' block"):
        book.fast_preset("nofast", root)


def test_every_chapter_of_this_book_has_a_fast_preset():
    chapters = book.book_chapters()
    assert chapters
    for name in chapters:
        assert book.fast_preset(name), f"fast changes nothing in {name}"


def test_fast_runtime_reads_the_reference_notebook(tmp_path):
    ref = tmp_path / "tests" / "reference"
    ref.mkdir(parents=True)
    meta = {"papermill": {"duration": 12.5, "start_time": "2026-01-02T03:04:05+00:00"}}
    (ref / "one.ipynb").write_text(json.dumps({"metadata": meta, "cells": []}))
    assert book.fast_runtime("one", tmp_path) == (12.5, "2026-01-02")
    assert book.fast_runtime("two", tmp_path) is None


def test_runtime_rows(tmp_path):
    root = _book(tmp_path, chapters=("one", "two"))
    exec_data = {
        "chapters/one": {"runtime": 61.4, "mtime": 0.0, "succeeded": True},
        "chapters/two": None,
    }
    rows = book._runtime_rows(exec_data, root)
    assert rows == [
        ["one", "61", "no reference notebook"],
        ["two", "not executed in this build", "no reference notebook"],
    ]


URL = "https://github.com/example-org/example-book"


def test_install_cell_does_nothing_where_helpers_imports(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError(f"install cell ran {args}")

    monkeypatch.setattr(subprocess, "run", refuse)
    cell = book.install_cell(URL)
    exec(cell["source"], {})  # noqa: S102 - helpers imports: nothing is cloned
    assert list(tmp_path.iterdir()) == []
    assert f'"{URL}"' in cell["source"] and '"example-book"' in cell["source"]


def test_add_install_cell_once(tmp_path):
    path = tmp_path / "nb.ipynb"
    cells = [{"cell_type": "markdown", "metadata": {}, "source": "# x"}]
    path.write_text(json.dumps({"cells": cells, "metadata": {}}))
    assert book.add_install_cell(path, URL) is True
    assert book.add_install_cell(path, URL) is False
    nb = json.loads(path.read_text())
    assert [c["cell_type"] for c in nb["cells"]] == ["code", "markdown"]
    assert nb["cells"][0]["metadata"]["tags"] == ["book-install"]


def test_clone_steps_use_the_repository_url():
    lines = book.clone_steps(URL + "/").splitlines()
    assert lines[:2] == [f"git clone {URL}/", "cd example-book"]
    assert [ln.split()[:2] for ln in lines[2:]] == [["make", "book"], ["make", "test"]]


def test_config_repository_url_is_the_one_url():
    """_config.yml names the repository once; the README's clone line uses it too."""
    import yaml

    root = Path(book.REPO_ROOT)
    url = yaml.safe_load((root / "_config.yml").read_text())["repository"]["url"]
    assert url.startswith("https://github.com/")
    assert f"git clone {url}" in (root / "README.md").read_text()


def test_runtime_sentence_reads_one_chapters_row():
    row = book._runtime_rows(
        {"chapters/probes": {"runtime": 61.4}}, book.REPO_ROOT, ["probes"]
    )[0]
    text = book.runtime_sentence(row)
    assert text.startswith("Run time in seconds: 61 with the default parameters")
    fast = book.fast_runtime("probes")
    assert f"{fast[0]:.0f} (run {fast[1]}) with fast=True" in text
