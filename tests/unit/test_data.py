"""The data layer: named datasets, local-first loading, and errors that say what
to do."""

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from helpers import data, preprocess


def test_unknown_dataset_names_the_choices():
    with pytest.raises(ValueError, match="Unknown dataset 'pancreatic'.*pancreas"):
        data.load_dataset("pancreatic")


def test_missing_path():
    with pytest.raises(FileNotFoundError, match="No file at"):
        data.load_dataset("/nonexistent/cells.h5ad")


def test_offline_error_names_url_file_and_place(tmp_path, monkeypatch):
    # sci-Plex2 is downloaded from pertpy's URL with pooch (not through pertpy's loader,
    # whose settings moved); without a network the error says so and keeps the cause
    monkeypatch.setenv("BOOK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("BOOK_DATA_MIRROR", raising=False)
    import pooch

    def no_network(*a, **k):
        raise ConnectionError("network unreachable")

    monkeypatch.setattr(pooch, "retrieve", no_network)
    with pytest.raises(FileNotFoundError) as err:
        data.load_dataset("sciplex2", data_dir=tmp_path)
    msg = str(err.value)
    assert (
        "sciplex2" in msg
        and "scverse-exampledata" in msg
        and "srivatsan_2020_sciplex2.h5ad" in msg
    )
    assert str(tmp_path) in msg and "download" in msg and "AttributeError" not in msg
    assert isinstance(err.value.__cause__, ConnectionError)


def test_local_file_wins_and_no_cwd_litter(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "d"
    folder.mkdir()
    ad.AnnData(np.ones((3, 2), np.float32)).write_h5ad(
        folder / "srivatsan_2020_sciplex2.h5ad"
    )
    adata = data.load_dataset("sciplex2", data_dir=folder)
    assert adata.shape == (3, 2) and adata.uns["dataset"]["source"].endswith(
        "srivatsan_2020_sciplex2.h5ad"
    )
    assert not (tmp_path / "data").exists()


def test_data_dir_env_must_exist(monkeypatch):
    monkeypatch.setenv("BOOK_DATA_DIR", "/nonexistent/folder")
    with pytest.raises(FileNotFoundError, match="BOOK_DATA_DIR"):
        data.data_dir()


def test_pancreas_offline_copy(shared_data):
    adata = data.load_dataset("pancreas")
    assert adata.shape == (3696, 2000)
    assert adata.obs["clusters"].value_counts()["Delta"] == 70
    assert {"spliced", "unspliced"} <= set(adata.layers)


def test_pbmc68k_counts_are_integers():
    adata = data.load_dataset("pbmc68k_reduced")
    assert adata.shape == (700, 765) and data.is_integer_counts(adata.X)
    assert "bulk_labels" in adata.obs and "phase" in adata.obs
    # normalising the recovered counts by each cell's original total gives back scanpy's
    # .raw
    import scanpy as sc

    back = np.log1p(adata.X.toarray() / adata.obs["n_counts"].to_numpy()[:, None] * 1e4)
    raw = sc.datasets.pbmc68k_reduced().raw.X.toarray()
    assert np.abs(back - raw).max() < 0.05


def _toy(**obs):
    X = sp.csr_matrix(np.arange(12, dtype=np.float32).reshape(6, 2))
    return ad.AnnData(X, obs=obs or None)


def test_label_errors():
    adata = _toy(cell_type=["a", "a", "a", "a", "a", "b"])
    with pytest.raises(KeyError, match="obs column 'celltype' not found.*cell_type"):
        data.check_labels(adata, "celltype")
    with pytest.raises(ValueError, match="fewer than 2 cells.*'b': 1"):
        data.check_labels(adata, "cell_type")
    with pytest.raises(ValueError, match="at least 2"):
        data.check_labels(_toy(cell_type=["a"] * 6), "cell_type")
    assert list(
        data.check_labels(_toy(cell_type=["a", "b"] * 3), "cell_type").cat.categories
    ) == ["a", "b"]


def test_layer_nan_and_negative_errors():
    adata = _toy()
    with pytest.raises(KeyError, match="layer 'spliced' not found"):
        data.check_layer(adata, "spliced")
    bad = adata.copy()
    bad.X = bad.X.toarray()
    bad.X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN/inf"):
        preprocess.prepare(bad, n_top_genes=None)
    neg = adata.copy()
    neg.X = -neg.X.toarray()
    with pytest.raises(ValueError, match="negative values.*raw-count layer"):
        preprocess.prepare(neg, n_top_genes=None)


def test_infer_organism_from_symbol_case_and_resolve(tmp_path, capsys):
    import anndata as ad

    mouse = ["Ins1", "Gcg", "Sst", "Nkx6-1", "Rpl13", "mt-Co1", "ENSMUSG00000035804"]
    human = ["INS", "GCG", "SST", "NKX6-1", "RPL13", "MT-CO1", "HLA-DRA", "C1orf112"]
    assert data.infer_organism(mouse) == "mouse"
    assert data.infer_organism(human) == "human"
    assert data.infer_organism(["ENSG00000254647", "ENSG00000115263"]) == "human"
    a = ad.AnnData(np.ones((2, len(mouse)), np.float32))
    a.var_names = mouse
    a.write_h5ad(tmp_path / "mine.h5ad")
    got = data.load_dataset(str(tmp_path / "mine.h5ad"))
    assert got.uns["dataset"]["organism"] == "mouse"
    note = capsys.readouterr().out
    assert "look mouse" in note and "-p organism" in note
    assert data.resolve_organism(got) == "mouse"
    assert data.resolve_organism(got, "human") == "human"  # the override wins
    with pytest.raises(ValueError, match=r"organism='rat'.*'human', 'mouse'"):
        data.resolve_organism(got, "rat")
    del got.uns["dataset"]
    assert data.resolve_organism(got) == "mouse"  # inferred when nothing is recorded


def test_bad_inputs_give_one_clear_error_each():
    import anndata as ad

    from helpers import preprocess

    rng = np.random.default_rng(0)
    counts = rng.poisson(2, size=(60, 30)).astype(np.float32)
    a = ad.AnnData(counts.copy())
    a.var_names = [f"G{i}" for i in range(30)]
    a.layers["lognorm"] = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    a.layers["scaled"] = (counts - counts.mean(0)) / (counts.std(0) + 1)
    with pytest.raises(ValueError, match="looks normalised or log-transformed.*layer="):
        preprocess.prepare(a, layer="lognorm", n_top_genes=None)
    with pytest.raises(ValueError, match="negative values.*not scaled data"):
        preprocess.prepare(a, layer="scaled", n_top_genes=None)
    a.obs["one"] = "T cell"
    with pytest.raises(ValueError, match=r"has 1 class.*Choose another label key"):
        data.check_labels(a, "one")
    with pytest.raises(ValueError, match=r"1 class.*Choose another label key"):
        preprocess.split_indices(a.obs["one"].to_numpy())
    y = np.array(["B"] * 50 + ["rare"] * 3 + ["T"] * 7)
    with pytest.raises(ValueError, match=r"\{'rare': 3\}.*about 7 cells.*fractions"):
        preprocess.split_indices(y)
    assert len(preprocess.split_indices(y, stratify=False)["test"]) == 9
