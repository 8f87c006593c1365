import json

import numpy as np
import pytest

from helpers import chapter


def test_metrics_json_roundtrip_and_no_overwrite_of_foreign_files(tmp_path):
    path = chapter.write_metrics({"acc": np.float32(0.5), "n": np.int64(3), "nan": float("nan"),
                                  "arr": np.arange(2)}, tmp_path)
    got = json.loads(path.read_text())
    assert got["acc"] == 0.5 and got["n"] == 3 and got["nan"] is None and got["arr"] == [0, 1]
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
        names = {line.split("=")[0].strip() for line in tagged[0].source.splitlines() if "=" in line}
        assert common <= names, (md.name, common - names)
        assert any(n.startswith("dataset") for n in names), md.name


def test_unknown_chapter():
    with pytest.raises(FileNotFoundError, match="Known chapters"):
        chapter.notebook_for("no_such_chapter", chapter.REPO_ROOT / "_build" / "tmp")
