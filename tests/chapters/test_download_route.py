"""A reader without ../shared/data: chapters run end to end through the download route.

The data directory is empty, the cache is empty, and ``BOOK_DATA_MIRROR`` points at a
loopback ``http.server`` serving the upstream source files (``<data dir>/sources``) and
the one gene set library the chapters need that blitzgsea does not ship (Hallmark, as
Enrichr serves it): the chapters' datasets are downloaded (SHA-256 checked), converted
and cached, and the library downloaded and cached, by the same code a user with a
network runs.
"""

import json
import os
import subprocess
import sys

import pytest

from helpers import data


def test_fast_chapters_from_an_empty_data_dir(shared_data, serve_folder, tmp_path):
    sources, genesets = shared_data / "sources", shared_data / "genesets"
    if not sources.is_dir() or not genesets.is_dir():
        pytest.skip("needs <data dir>/sources (to mirror) and <data dir>/genesets")
    folder, cache, out = tmp_path / "data", tmp_path / "cache", tmp_path / "out"
    served = tmp_path / "mirror"
    for d in (folder, served):
        d.mkdir()
    for f in sources.iterdir():
        (served / f.name).symlink_to(f)
    hallmark = "MSigDB_Hallmark_2020.txt"
    (served / hallmark).symlink_to(genesets / hallmark)
    path = os.pathsep.join([str(data.REPO_ROOT), os.environ.get("PYTHONPATH", "")])
    env = dict(
        os.environ,
        PYTHONPATH=path.rstrip(os.pathsep),
        BOOK_DATA_DIR=str(folder),
        BOOK_CACHE_DIR=str(cache),
        BOOK_DATA_MIRROR=serve_folder(served),
        TQDM_DISABLE="1",
        PYTHONHASHSEED="0",
    )
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "helpers.chapter",
            "perturbation",
            "concepts",
            "--fast",
            "-o",
            str(out),
        ],
        cwd=data.REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-6000:]
    for chapter, dataset in [
        ("perturbation", "glioblastoma_panobinostat"),
        ("perturbation", "kang2018"),
        ("perturbation", "norman2019"),
        ("concepts", "kang2018"),
    ]:
        metrics = json.loads((out / chapter / "metrics.json").read_text())
        assert metrics["_about"] == "written by helpers.chapter"
        # the converted .h5ad is in the cache, its hash-checked source beside it
        ds = data.DATASETS[dataset]
        assert (cache / ds.files[0]).is_file(), sorted(p.name for p in cache.rglob("*"))
        assert (cache / "sources" / ds.source).is_file()
    assert (cache / "genesets" / hallmark).is_file()
    assert not list(folder.iterdir())
