"""Chapters' code cells: formatted by ruff (what `make format` applies), 88 columns.

Each chapter goes through the same pipe as `make format` (jupytext hands every code
cell to ``ruff format -``) into a temporary file, which must equal the chapter.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHAPTERS = sorted((ROOT / "chapters").glob("*.md"))
BIN = Path(sys.executable).parent


def _formatted(src: Path, dest: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run(
        [str(BIN / "jupytext"), "--pipe", "ruff format -", "--pipe-fmt", "py:percent",
         str(src), "-o", str(dest), "-q"],
        check=True, env=env, capture_output=True,
    )  # fmt: skip
    return dest.read_text()


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_code_cells_are_formatted(chapter, tmp_path):
    assert _formatted(chapter, tmp_path / chapter.name) == chapter.read_text(), (
        f"{chapter.name}: code cells not formatted; run `make format`"
    )


def test_the_check_catches_an_unformatted_cell(tmp_path):
    src = tmp_path / "bad.md"
    text = CHAPTERS[0].read_text()
    assert "seed=seed)" in text
    src.write_text(text.replace("seed=seed)", "seed = seed )", 1))
    assert _formatted(src, tmp_path / "out.md") != src.read_text()


def _long_code_lines(text: str, limit: int = 88) -> list[str]:
    import jupytext

    nb = jupytext.reads(text, fmt="md:myst")
    return [
        line
        for cell in nb.cells
        if cell.cell_type == "code"
        for line in cell.source.splitlines()
        if len(line) > limit
    ]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_code_lines_fit_88_columns(chapter):
    assert _long_code_lines(chapter.read_text()) == []


def test_the_line_check_catches_a_long_line():
    text = CHAPTERS[0].read_text()
    assert _long_code_lines(text.replace("seed=seed)", "seed=seed)  # " + "x" * 88, 1))
