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
        "0.900", "0.905", "reproduced"]


def test_relative_output_dirs_are_taken_from_the_repository(tmp_path, monkeypatch):
    from helpers import chapter

    monkeypatch.chdir(tmp_path)
    out = chapter.resolve_output_dir("_build/test-chapters/_probe_", "x")
    assert out == chapter.REPO_ROOT / "_build" / "test-chapters" / "_probe_"
    assert chapter._portable(out) == "_build/test-chapters/_probe_"
    assert chapter._portable(tmp_path) == str(tmp_path.resolve())
    out.rmdir()
