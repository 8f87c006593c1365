"""The download route: pinned sources, checksums, conversion, errors saying what failed.

Mirrored datasets run the real download-and-convert code against a loopback
``http.server`` serving ``<data dir>/sources`` (``BOOK_DATA_MIRROR``) with an empty data
directory and cache, and the result is compared with the offline ``.h5ad`` beside it.
The full pertpy/scVelo files and the celltypist sample are not mirrored here: their URLs
and their offline errors are checked instead.
"""

import shutil
import socket
import sys
from urllib.parse import urlparse

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from helpers import data, sources

MIRRORED = {
    "pancreas": "pancreas_endocrinogenesis.h5ad",
    "glioblastoma_panobinostat": "glioblastoma_panobinostat.h5ad",
    "kang2018": "kang2018_ifnb_pbmc_2k.h5ad",
    "kang2018_donors": "kang2018_ifnb_donors_1.6k.h5ad",
    "zheng2017_sorted": "zheng2017_sorted_pbmc_3.5k.h5ad",
    "zheng2017_donorA": "zheng2017_pbmc_donorA_2.9k.h5ad",
    "norman2019": "norman2019_mcfaline2024_crispr_6k.h5ad",
}
NOT_MIRRORED = [
    "immune_celltypist",
    "sciplex2",
    "pancreas_full",
    "kang2018_full",
    "norman2019_full",
]


def assert_same(a: ad.AnnData, b: ad.AnnData) -> None:
    """Same cells, genes, counts, layers, obs (values, dtypes, categories) and var."""
    assert a.obs_names.equals(b.obs_names) and a.var_names.equals(b.var_names)
    assert list(a.obs.columns) == list(b.obs.columns)
    pd.testing.assert_frame_equal(a.obs, b.obs, check_exact=False, rtol=1e-12)
    pd.testing.assert_frame_equal(a.var, b.var)
    assert set(a.layers) == set(b.layers)
    for x, y in [(a.X, b.X)] + [(a.layers[k], b.layers[k]) for k in b.layers]:
        assert x.dtype == y.dtype and sp.issparse(x) == sp.issparse(y)
        assert (sp.csr_matrix(x) != sp.csr_matrix(y)).nnz == 0


def closed_port_url() -> str:
    """A loopback URL where nothing listens (the port was just free)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_every_dataset_has_a_route_and_metadata():
    for name, ds in data.DATASETS.items():
        assert ds.description and "\n" not in ds.description, name
        assert ds.organism in ("human", "mouse") and ds.citation and ds.licence, name
        if ds.source is None:
            assert name == "pbmc68k_reduced"
            continue
        src = sources.SOURCES[ds.source]
        url = urlparse(src.url)
        assert url.scheme == "https" and url.netloc and " " not in src.url
        assert src.sha256 is None or len(src.sha256) == 64
        assert src.convert is None or src.convert in sources.CONVERTERS
        assert (src.sha256 is not None) == (name in MIRRORED), name
    counts_recovered = {n for n, d in data.DATASETS.items() if d.counts_recovered}
    assert counts_recovered == {
        "kang2018",
        "zheng2017_sorted",
        "norman2019",
        "pbmc68k_reduced",
    }


def test_pinned_hashes_match_the_mirrored_files(shared_data):
    folder = shared_data / "sources"
    if not folder.is_dir():
        pytest.skip("no sources folder")
    pinned = {s.file: s.sha256 for s in sources.SOURCES.values() if s.sha256}
    assert {p.name for p in folder.iterdir() if p.name != "README.md"} == set(pinned)
    for fname, expected in pinned.items():
        assert sources.sha256(folder / fname) == expected, fname


@pytest.mark.parametrize("name", list(MIRRORED))
def test_download_and_convert_equals_offline_copy(name, source_mirror, shared_data):
    _, cache, _ = source_mirror
    assert data.resolve(name)[0] == "download"
    adata = data.load_dataset(name)
    assert adata.uns["dataset"]["route"] == "download"
    assert adata.uns["dataset"]["name"] == name
    assert (cache / MIRRORED[name]).is_file()
    offline = ad.read_h5ad(shared_data / MIRRORED[name])
    # load_dataset sorts the label columns' categories (fixed colours, plotting.palette)
    data.attach_label_colors(offline, data.DATASETS[name].label_keys)
    assert_same(adata, offline)
    # the next call reads the cache, not the network
    assert data.resolve(name) == ("cache", cache / MIRRORED[name])
    again = data.load_dataset(name)
    assert again.uns["dataset"]["route"] == "cache"
    assert_same(again, offline)


def test_corrupted_download_is_refused_and_not_cached(
    source_mirror, serve_folder, tmp_path, monkeypatch
):
    _, cache, folder = source_mirror
    bad = tmp_path / "bad"
    bad.mkdir()
    payload = bytearray((folder / "muscat_example_sce.rda").read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    (bad / "muscat_example_sce.rda").write_bytes(bytes(payload))
    url = serve_folder(bad)
    monkeypatch.setenv("BOOK_DATA_MIRROR", url)
    with pytest.raises(sources.ChecksumError) as err:
        data.load_dataset("kang2018_donors")
    msg = str(err.value)
    src = sources.SOURCES["muscat_example_sce.rda"]
    assert "'kang2018_donors'" in msg and f"{url}/muscat_example_sce.rda" in msg
    assert src.sha256 in msg and sources.sha256(bad / "muscat_example_sce.rda") in msg
    # nothing a later call would read: no h5ad, no source file, no temporary left over
    assert not cache.exists() or not [p for p in cache.rglob("*") if p.is_file()]
    assert data.resolve("kang2018_donors")[0] == "download"


def test_server_down_says_download_failed_with_cause(
    source_mirror, monkeypatch, tmp_path
):
    url = closed_port_url()
    monkeypatch.setenv("BOOK_DATA_MIRROR", url)
    with pytest.raises(FileNotFoundError) as err:
        data.load_dataset("glioblastoma_panobinostat")
    assert isinstance(err.value, sources.DownloadError)
    msg = str(err.value)
    assert "glioblastoma_panobinostat" in msg and "download" in msg and "failed" in msg
    assert "lemur_glioblastoma_example_data.rda" in msg and url in msg
    assert (
        "glioblastoma_panobinostat.h5ad" in msg and str(tmp_path / "empty-data") in msg
    )
    assert err.value.__cause__ is not None


def test_conversion_error_is_not_reported_as_offline(source_mirror, monkeypatch):
    def broken(path):
        raise KeyError("pancreas")

    monkeypatch.setitem(sources.CONVERTERS, "pancreas", broken)
    with pytest.raises(sources.ConversionError) as err:
        data.load_dataset("pancreas")
    msg = str(err.value)
    assert "'pancreas'" in msg and "KeyError" in msg and "not a network problem" in msg
    assert "Offline" not in msg and not isinstance(err.value, FileNotFoundError)
    assert isinstance(err.value.__cause__, KeyError)
    assert not (source_mirror[1] / "pancreas_endocrinogenesis.h5ad").exists()


def test_missing_package_is_reported_as_such(source_mirror, monkeypatch):
    monkeypatch.setitem(sys.modules, "rdata", None)  # import rdata -> ImportError
    with pytest.raises(
        ImportError, match=r"'zheng2017_donorA'.*'rdata'.*pip install rdata=="
    ) as err:
        data.load_dataset("zheng2017_donorA")
    assert "Offline" not in str(err.value)
    monkeypatch.setitem(sys.modules, "pooch", None)  # and without the downloader
    with pytest.raises(
        ImportError, match=r"'kang2018'.*'pooch'.*pip install pooch=="
    ) as err:
        data.load_dataset("kang2018")
    assert "Offline" not in str(err.value)


@pytest.mark.parametrize("name", NOT_MIRRORED)
def test_unmirrored_url_and_offline_error(name, tmp_path, monkeypatch):
    ds = data.DATASETS[name]
    src = sources.SOURCES[ds.source]
    url = urlparse(src.url)
    assert url.scheme == "https" and url.netloc in (
        "raw.githubusercontent.com",
        "github.com",
        "scverse-exampledata.s3.eu-west-1.amazonaws.com",
    )
    assert url.path.endswith("/" + src.file) and " " not in src.url
    if "celltypist" in src.url:  # pinned to the commit of the GENCODE table
        assert sources.CELLTYPIST_COMMIT in url.path
    (tmp_path / "d").mkdir()
    monkeypatch.setenv("BOOK_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("BOOK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("BOOK_DATA_MIRROR", raising=False)
    import pooch

    calls = []

    def no_network(url, **kwargs):
        calls.append(url)
        raise ConnectionError("network unreachable")

    monkeypatch.setattr(pooch, "retrieve", no_network)
    with pytest.raises(FileNotFoundError) as err:
        data.load_dataset(name)
    msg = str(err.value)
    assert calls == [src.url]  # the pinned URL itself is what would be fetched
    assert (
        f"'{name}'" in msg and src.url in msg and "failed" in msg and "Offline?" in msg
    )
    assert ds.files[0] in msg and str(tmp_path / "d") in msg
    assert isinstance(err.value.__cause__, ConnectionError)
    # and through a mirror that is down: the mirror URL is named instead
    monkeypatch.undo()
    monkeypatch.setenv("BOOK_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("BOOK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BOOK_DATA_MIRROR", closed_port_url())
    with pytest.raises(sources.DownloadError, match=rf"{name}.*{src.file}.*failed"):
        data.load_dataset(name)
    assert not (tmp_path / "cache" / ds.files[0]).exists()


def test_h5ad_sources_are_used_as_is(tmp_path, serve_folder, monkeypatch):
    """Unconverted sources (pertpy, scVelo files) land in the cache and load from it."""
    folder = tmp_path / "srv"
    folder.mkdir()
    fake = ad.AnnData(sp.csr_matrix(np.eye(3, dtype=np.float32)))
    fake.obs["perturbation"] = ["a", "b", "control"]
    fake.write_h5ad(folder / "srivatsan_2020_sciplex2.h5ad")
    (tmp_path / "d").mkdir()
    monkeypatch.setenv("BOOK_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("BOOK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BOOK_DATA_MIRROR", serve_folder(folder))
    adata = data.load_dataset("sciplex2")
    assert adata.shape == (3, 3) and adata.uns["dataset"]["route"] == "download"
    assert (tmp_path / "cache" / "srivatsan_2020_sciplex2.h5ad").is_file()
    assert data.load_dataset("sciplex2").uns["dataset"]["route"] == "cache"


def test_celltypist_csv_converter(shared_data, tmp_path):
    offline = ad.read_h5ad(shared_data / "immune_celltypist_sample.h5ad")[:4].copy()
    dense = pd.DataFrame(
        offline.X.toarray().astype(int),
        index=offline.obs_names,
        columns=offline.var_names,
    )
    dense.to_csv(tmp_path / "sample_cell_by_gene.csv")
    assert_same(
        sources.convert_celltypist_sample(tmp_path / "sample_cell_by_gene.csv"), offline
    )


def test_cli_list_fetch_verify(source_mirror, shared_data, capsys, monkeypatch):
    _, cache, _ = source_mirror
    assert sources.main(["list"]) == 0
    out = capsys.readouterr().out
    table = {
        line.split()[0]: line.split()[1]
        for line in out.splitlines()[1:]
        if line.strip() and line.split()[0] in data.DATASETS
    }
    assert table["kang2018"] == "download" and table["pbmc68k_reduced"] == "bundled"
    assert sources.main(["fetch", "kang2018_donors"]) == 0
    assert "kang2018_donors: downloaded to" in capsys.readouterr().out
    assert (cache / "kang2018_ifnb_donors_1.6k.h5ad").is_file()
    assert sources.main(["list"]) == 0
    assert any(
        line.startswith("kang2018_donors") and " cache " in line
        for line in capsys.readouterr().out.splitlines()
    )
    # verify: the downloaded source against its pinned hash, then the offline copies
    assert sources.main(["verify"]) == 0
    assert "ok" in capsys.readouterr().out
    monkeypatch.setenv("BOOK_DATA_DIR", str(shared_data))
    results = sources.verify()
    assert results and all(status == "ok" for status, _, _ in results)
    listed = {p.split("/")[-1] for _, p, _ in results}
    assert {"kang2018_ifnb_pbmc_2k.h5ad", "muscat_example_sce.rda"} <= listed


def test_verify_reports_a_mismatch(tmp_path, monkeypatch, capsys):
    (tmp_path / "x.h5ad").write_bytes(b"not the file")
    (tmp_path / "SHA256SUMS").write_text(f"{'0' * 64}  x.h5ad\n{'1' * 64}  gone.h5ad\n")
    monkeypatch.setenv("BOOK_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BOOK_CACHE_DIR", str(tmp_path / "cache"))
    assert sources.main(["verify"]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out and "missing" in out and "2 problems" in out


def test_cli_runs_as_module(tmp_path):
    import os
    import subprocess

    env = dict(os.environ, BOOK_CACHE_DIR=str(tmp_path / "cache"))
    res = subprocess.run(
        [sys.executable, "-m", "helpers.data", "list"],
        capture_output=True,
        text=True,
        env=env,
        cwd=data.REPO_ROOT,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "pancreas_full" in res.stdout and "download" in res.stdout
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
