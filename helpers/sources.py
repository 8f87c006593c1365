"""Public sources of the named datasets: pinned URLs, SHA-256, download and conversion.

Every dataset in :data:`helpers.data.DATASETS` that is not bundled with a package names
a :class:`Source` here: the upstream file at a pinned URL (a commit, not a branch, where
the host allows it), its SHA-256, and the converter that turns it into the ``.h5ad`` the
book reads. :func:`build` downloads the source with pooch into ``<cache>/sources``,
checks its hash, converts it, and writes the ``.h5ad`` into the cache atomically, so a
later call reads the cache and a failed call leaves nothing behind that a later call
would read.

``BOOK_DATA_MIRROR`` (a base URL) replaces every source's host: the file is fetched from
``$BOOK_DATA_MIRROR/<Source.file>``. Point it at a local server serving a folder of the
source files (``python -m http.server``) to run the whole route without the internet.

Errors say what failed: :class:`DownloadError` (the download itself; a
``FileNotFoundError`` naming the file and where to put it, original error as
``__cause__``), :class:`ChecksumError` (the bytes differ from the pinned hash),
:class:`ConversionError` (the converter failed: a bug or a changed source, never
"offline"), and ``ImportError`` naming the missing package.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

MIRROR_ENV = "BOOK_DATA_MIRROR"
# packages the converters need, with the pins of requirements.txt
PACKAGES = {"rdata": "rdata==1.1.0", "pooch": "pooch==1.9.0"}


@dataclass(frozen=True)
class Source:
    """One upstream file: where it is served, its SHA-256, how it becomes AnnData.

    ``sha256=None`` means the hash is not pinned here (the file could not be hashed when
    the registry was written; see the dataset's note); such files are downloaded without
    a check and ``python -m helpers.data verify`` reports them as unpinned.
    ``convert=None``: the file already is the ``.h5ad`` (no conversion).
    """

    file: str
    url: str
    sha256: str | None
    convert: str | None = None
    needs: tuple[str, ...] = ()  # other sources the converter reads (keys of SOURCES)
    size: str = ""  # download size where known (the mirrored files), for `list`


_GH = "https://raw.githubusercontent.com"
_PERTPY = "https://scverse-exampledata.s3.eu-west-1.amazonaws.com/pertpy"
CELLTYPIST_COMMIT = "fe357564a6625d3b1732a022fd39f18e55696e80"

SOURCES: dict[str, Source] = {
    "supercell_pancreas.rda": Source(
        "supercell_pancreas.rda",
        f"{_GH}/GfellerLab/SuperCell/5de820e93ba4991b532ed2ac7ac7a09820bb0164"
        "/data/pancreas.rda",
        "df3719108994a3cb2c20aaed8083026c6f4532774ba656cbaa38eea10580d5cf",
        "pancreas",
        size="2.6 MB",
    ),
    "lemur_glioblastoma_example_data.rda": Source(
        "lemur_glioblastoma_example_data.rda",
        f"{_GH}/const-ae/lemur/0e62bc1287b17deec678f7db435ec09098a475f2"
        "/data/glioblastoma_example_data.rda",
        "4e56d9cff16fb6750dd0054a0f7f05a7429c612906dc610c8dd44cb3e60de37e",
        "glioblastoma",
        needs=("celltypist_GENCODEv44_Gene_id2name.csv",),
        size="2.7 MB",
    ),
    "celltypist_GENCODEv44_Gene_id2name.csv": Source(
        "celltypist_GENCODEv44_Gene_id2name.csv",
        f"{_GH}/Teichlab/celltypist/{CELLTYPIST_COMMIT}"
        "/celltypist/data/samples/GENCODEv44_Gene_id2name.csv",
        "0a8d9b07cf63f9ef70e65f3c7afc9d2092a7d9890281172df770003827912f53",
        size="1.7 MB",
    ),
    "scplotter_ifnb_sub.rda": Source(
        "scplotter_ifnb_sub.rda",
        f"{_GH}/pwwang/scplotter/bf209517b02cb830e41a82fc9623c3afc8b5ec87"
        "/data/ifnb_sub.rda",
        "449499b65ae3157f54385021710381bef93a04bc48000d7c7e896184f3b9d9a0",
        "kang2018",
        size="2.4 MB",
    ),
    "muscat_example_sce.rda": Source(
        "muscat_example_sce.rda",
        f"{_GH}/HelenaLC/muscat/7d68329bf1cd13fc6cda2a8f857bf90a605200e9"
        "/data/example_sce.rda",
        "f66811fa513a01a91dae01bad308e96ed5238277246b911d8e1cd5f4425c3ed9",
        "kang2018_donors",
        size="1.0 MB",
    ),
    "scminer_pbmc14k_expression.eset.rda": Source(
        "scminer_pbmc14k_expression.eset.rda",
        f"{_GH}/jyyulab/scMINER/eee143caf4b6fc6ae49bac33ecdb39309fd4aa2c"
        "/data/pbmc14k_expression.eset.rda",
        "dba04c86843855d317fd83090b3d2b1053cea7c27786cfa90a0a8149887ca59d",
        "zheng2017_sorted",
        size="2.6 MB",
    ),
    "mudan_pbmcA.rda": Source(
        "mudan_pbmcA.rda",
        f"{_GH}/JEFworks/MUDAN/3636ed2f9a404cbdfcfdce5500384b59a72de666/data/pbmcA.rda",
        "6d36da8505d38bb6f866e4a1a49e89b69e4f6d9312e85ce3da32eafa6e7b1aa8",
        "zheng2017_donorA",
        size="2.3 MB",
    ),
    "perturbench_devel.h5ad": Source(
        "perturbench_devel.h5ad",
        f"{_GH}/altoslabs/perturbench/d357dfae3b50968e800e9f5f273ff145080ae67c"
        "/src/perturbench/data/resources/devel.h5ad",
        "220998f5630c813228c8661c86dd52244b9ac87127511289af90e0d900d8429b",
        "norman2019",
        size="1.1 MB",
    ),
    # Not mirrored in ../shared/data/sources, so not hashed here (no network to hash
    # them when this was written): downloaded unchecked, reported as unpinned by
    # `verify`.
    "sample_cell_by_gene.csv": Source(
        "sample_cell_by_gene.csv",
        f"{_GH}/Teichlab/celltypist/{CELLTYPIST_COMMIT}"
        "/celltypist/data/samples/sample_cell_by_gene.csv",
        None,
        "celltypist_sample",
    ),
    "endocrinogenesis_day15.h5ad": Source(
        "endocrinogenesis_day15.h5ad",
        "https://github.com/theislab/scvelo_notebooks/raw/master/data/Pancreas"
        "/endocrinogenesis_day15.h5ad",
        None,
    ),
    "srivatsan_2020_sciplex2.h5ad": Source(
        "srivatsan_2020_sciplex2.h5ad", f"{_PERTPY}/srivatsan_2020_sciplex2.h5ad", None
    ),
    "kang_2018.h5ad": Source("kang_2018.h5ad", f"{_PERTPY}/kang_2018.h5ad", None),
    "norman_2019.h5ad": Source("norman_2019.h5ad", f"{_PERTPY}/norman_2019.h5ad", None),
}


class DownloadError(FileNotFoundError):
    """The download of a source file failed (network, server, HTTP error)."""


class ChecksumError(ValueError):
    """A download's SHA-256 differs from the pinned one; the file was discarded."""


class ConversionError(RuntimeError):
    """Converting a verified source file to AnnData failed (not a network problem)."""


def mirror() -> str | None:
    """The mirror base URL (``$BOOK_DATA_MIRROR``), or None."""
    return os.environ.get(MIRROR_ENV) or None


def source_url(src: Source) -> str:
    """Where ``src`` is fetched from: ``$BOOK_DATA_MIRROR/<file>`` or its pinned URL."""
    base = mirror()
    return f"{base.rstrip('/')}/{src.file}" if base else src.url


def sha256(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sources_dir() -> Path:
    """Where downloaded source files are kept: ``<cache>/sources``."""
    from .data import cache_dir

    return cache_dir() / "sources"


def _require(module: str, dataset: str | None = None):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        who = f"Dataset {dataset!r} needs" if dataset else "Needs"
        raise ImportError(
            f"{who} the Python package {module!r} to download or convert its source: "
            f"pip install {PACKAGES.get(module, module)}",
            name=module,
        ) from err


def fetch(src: Source, dataset: str, dest: Path | None = None, where: str = "") -> Path:
    """Download and hash-check ``src`` into ``dest`` (``<cache>/sources/<file>``).

    An existing ``dest`` whose hash matches is reused. The download goes to a temporary
    file beside ``dest`` and is moved into place only after its hash matched, so a
    failed or corrupted download leaves nothing a later call would read.
    """
    dest = Path(dest) if dest is not None else sources_dir() / src.file
    if dest.is_file() and (src.sha256 is None or sha256(dest) == src.sha256):
        return dest
    pooch = _require("pooch", dataset)
    url = source_url(src)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=dest.parent) as tmp:
        logger = pooch.get_logger()
        level = logger.level
        logger.setLevel("WARNING")  # pooch's INFO lines suggest pinning the hash we pin
        print(f"Downloading {url}", file=sys.stderr)
        try:
            got = Path(
                pooch.retrieve(
                    url, known_hash=None, fname=src.file, path=tmp, progressbar=False
                )
            )
        # requests, urllib3 and OS errors: all of them mean the download failed
        except Exception as err:
            hint = where or "the dataset's .h5ad in the data directory"
            raise DownloadError(
                f"Dataset {dataset!r}: the download of {src.file!r} from {url} failed "
                f"({type(err).__name__}: {err}). Offline? Put {hint}, or the file "
                f"{src.file!r} in {dest.parent}, or set ${MIRROR_ENV} to a server "
                "that has it."
            ) from err
        finally:
            logger.setLevel(level)
        found = sha256(got)
        if src.sha256 is not None and found != src.sha256:
            raise ChecksumError(
                f"Dataset {dataset!r}: {src.file!r} downloaded from {url} has SHA-256 "
                f"{found}, expected {src.sha256}. The file was discarded (nothing "
                "cached): a changed upstream file or a broken mirror; do not use it."
            )
        os.chmod(got, 0o644)
        os.replace(got, dest)
    return dest


def build(dataset: str, src: Source, target: Path, where: str = "") -> Path:
    """Fetch ``src`` and what its converter needs, convert, write ``target`` (.h5ad).

    ``target`` is written atomically (a temporary file renamed into place). ``where``
    tells a download error where the dataset's ``.h5ad`` could be put instead.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if src.convert is None:  # the source already is the .h5ad: download it to target
        return fetch(src, dataset, dest=target, where=where)
    paths = [fetch(src, dataset, where=where)]
    paths += [fetch(SOURCES[k], dataset, where=where) for k in src.needs]
    convert = CONVERTERS[src.convert]
    try:
        adata = convert(*paths)
    except ImportError as err:
        mod = (err.name or "?").split(".")[0]
        raise ImportError(
            f"Dataset {dataset!r} needs the Python package {mod!r} to convert "
            f"{src.file!r}: pip install {PACKAGES.get(mod, mod)}",
            name=mod,
        ) from err
    except Exception as err:
        raise ConversionError(
            f"Dataset {dataset!r}: converting {paths[0]} (SHA-256 checked) to "
            f"AnnData failed ({type(err).__name__}: {err}). This is not a network "
            "problem: the converter and the source disagree (report it with the "
            "traceback)."
        ) from err
    adata.uns["source"] = {
        "file": src.file,
        "url": src.url,
        "sha256": src.sha256 or "",
        "converter": f"helpers.sources.{src.convert}",
    }
    fd, tmp = tempfile.mkstemp(prefix=".convert-", suffix=".h5ad", dir=target.parent)
    os.close(fd)
    try:
        adata.write_h5ad(tmp, compression="gzip")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


# --------------------------------------------------------------------------- converters


def _read_rda(path):
    rdata = _require("rdata")
    import warnings

    with (
        warnings.catch_warnings()
    ):  # S4 classes without a constructor come back as dicts
        warnings.simplefilter("ignore")
        return rdata.read_rda(str(path))


def _dgc(m) -> sp.csc_matrix:
    """An R dgCMatrix (parsed by rdata) as a scipy CSC matrix (genes × cells)."""
    shape = tuple(int(d) for d in m.Dim)
    return sp.csc_matrix(
        (np.asarray(m.x), np.asarray(m.i), np.asarray(m.p)), shape=shape
    )


def _cells_by_genes(m) -> sp.csr_matrix:
    """dgCMatrix (genes × cells) → CSR cells × genes."""
    return _dgc(m).T.tocsr()


def _counts32(X) -> sp.csr_matrix:
    X = sp.csr_matrix(X, dtype=np.float32)
    X.sort_indices()
    X.eliminate_zeros()
    return X


def _strs(a) -> np.ndarray:
    return np.asarray(a).astype(str).astype(object)


def _cat(values, categories=None) -> pd.Categorical:
    return pd.Categorical(_strs(values), categories=categories)


PANCREAS_CLUSTERS = [
    "Ductal",
    "Ngn3 low EP",
    "Ngn3 high EP",
    "Pre-endocrine",
    "Beta",
    "Alpha",
    "Delta",
    "Epsilon",
]
PANCREAS_COARSE = [
    "Ductal",
    "Ngn3 low EP",
    "Ngn3 high EP",
    "Pre-endocrine",
    "Endocrine",
]


def convert_pancreas(path) -> AnnData:
    """SuperCell ``pancreas.rda`` → scVelo's pancreas on its 2,000 HVGs.

    The R list holds ``emat`` (spliced) and ``nmat`` (unspliced) dgCMatrices and
    ``meta``; cluster codes (0-based) follow scVelo's category order (checked by the
    cluster sizes). ``X`` = spliced counts, as in scVelo's file.
    """
    r = _read_rda(path)["pancreas"]
    spliced, unspliced = _cells_by_genes(r["emat"]), _cells_by_genes(r["nmat"])
    genes, cells = (_strs(d) for d in r["emat"].Dimnames)
    meta = r["meta"]
    obs = pd.DataFrame(index=pd.Index(cells))
    obs["clusters"] = pd.Categorical.from_codes(
        meta["clusters"].to_numpy(int), PANCREAS_CLUSTERS
    )
    obs["clusters_coarse"] = pd.Categorical.from_codes(
        meta["clusters.coarse"].to_numpy(int), PANCREAS_COARSE
    )
    obs["S_score"] = meta["S.score"].to_numpy(float)
    obs["G2M_score"] = meta["G2M.score"].to_numpy(float)
    adata = AnnData(
        _counts32(spliced), obs=obs, var=pd.DataFrame(index=pd.Index(genes))
    )
    adata.layers["spliced"] = adata.X.copy()
    adata.layers["unspliced"] = _counts32(unspliced)
    return adata


def convert_glioblastoma(path, gencode_csv) -> AnnData:
    """lemur ``glioblastoma_example_data`` (SingleCellExperiment) → AnnData.

    Gene names: the GENCODE v44 symbol of the unversioned Ensembl id (celltypist's
    table), the Ensembl id itself where the table has none; ``var['ensembl_id']`` keeps
    the versioned id of the count matrix.
    """
    sce = _read_rda(path)["glioblastoma_example_data"]
    assays = sce.assays.data.listData
    counts = assays["counts"]
    ens = _strs(counts.Dimnames[0])
    table = pd.read_csv(gencode_csv, header=None, names=["id", "symbol"], dtype=str)
    symbol = dict(zip(table["id"], table["symbol"]))
    names = [symbol.get(e.split(".")[0], e.split(".")[0]) for e in ens]
    col = sce.colData
    obs = pd.DataFrame(index=pd.Index(_strs(col.rownames)))
    for key, values in col.listData.items():
        values = np.asarray(values)
        obs[str(key)] = (
            values.astype(float) if values.dtype.kind == "f" else _strs(values)
        )
    adata = AnnData(
        _counts32(_cells_by_genes(counts)),
        obs=obs,
        var=pd.DataFrame({"ensembl_id": ens}, index=pd.Index(names)),
    )
    adata.layers["logcounts"] = _counts32(_cells_by_genes(assays["logcounts"]))
    adata.strings_to_categoricals()
    adata.obs["id"] = adata.obs["id"].astype(str).astype(object)
    return adata


KANG_DATASET = "Kang2018_GSE96583_batch2"


# A few readers for R objects that rdata parses but cannot convert (the Seurat object):
# walk rdata.parser's RObject tree directly.


def _r_type(name: str):
    from rdata.parser import RObjectType

    return getattr(RObjectType, name)


def _r_tag(o) -> str | None:
    t = o.tag
    if t is None:
        return None
    if t.info.type == _r_type("REF"):
        t = t.referenced_object
    v = t.value
    while hasattr(v, "value"):
        v = v.value
    return v.decode() if isinstance(v, bytes) else v


def _pairlist(o) -> dict:
    out = {}
    while o is not None and o.info.type == _r_type("LIST"):
        car, cdr = o.value
        out[_r_tag(o)] = car
        o = cdr
    return out


def _r_attrs(o) -> dict:
    return _pairlist(o.attributes) if o.attributes is not None else {}


def _r_strs(o) -> list:
    return [None if c.value is None else c.value.decode() for c in o.value]


def _r_named(o) -> dict:
    return dict(zip(_r_strs(_r_attrs(o)["names"]), o.value))


def _r_dgcmatrix(o) -> tuple[sp.csc_matrix, np.ndarray]:
    a = _r_attrs(o)
    shape = tuple(int(d) for d in a["Dim"].value)
    m = sp.csc_matrix(
        (np.asarray(a["x"].value), np.asarray(a["i"].value), np.asarray(a["p"].value)),
        shape=shape,
    )
    return m, np.asarray(_r_strs(a["Dimnames"].value[0]), dtype=object)


def _r_data_frame(o) -> dict:
    """An R data.frame as {column: values}, factors as labels, row names as _index."""
    out = {}
    for key, col in _r_named(o).items():
        a = _r_attrs(col)
        if col.info.type == _r_type("STR"):
            out[key] = np.asarray(_r_strs(col), dtype=object)
        elif "levels" in a:
            levels = np.asarray(_r_strs(a["levels"]), dtype=object)
            out[key] = levels[np.asarray(col.value) - 1]
        else:
            out[key] = np.asarray(col.value)
    out["_index"] = np.asarray(_r_strs(_r_attrs(o)["row.names"]), dtype=object)
    return out


def convert_kang2018(path) -> AnnData:
    """scplotter ``ifnb_sub`` (Seurat v4) → recovered integer counts.

    ``RNA@data`` = log1p(count / nCount_RNA × 1e4); counts = round(expm1(data) ×
    nCount_RNA / 1e4). rdata's default conversion fails on this Seurat object, so the
    parsed R object is walked directly.
    """
    rdata = _require("rdata")
    obj = _pairlist(rdata.parser.parse_file(str(path)).object)["ifnb_sub"]
    slots = _r_attrs(obj)
    rna = _r_attrs(_r_named(slots["assays"])["RNA"])
    data, genes = _r_dgcmatrix(rna["data"])
    meta = _r_data_frame(slots["meta.data"])
    n_count = np.asarray(meta["nCount_RNA"], float)
    X = data.T.tocsr()
    X.data = np.rint(np.expm1(X.data) * np.repeat(n_count, np.diff(X.indptr)) / 1e4)
    names = np.asarray(meta["_index"], dtype=object)
    # SeuratData cell names are "<barcode>.1" (".11" for a few); the 10x barcode is "-1"
    stem = [n.split(".")[0] for n in names]
    barcode = np.array([f"{b}-1" for b in stem], dtype=object)
    condition = np.array([s.lower() for s in meta["stim"]], dtype=object)
    obs = pd.DataFrame(index=pd.Index([f"{b}-{c}" for b, c in zip(stem, condition)]))
    obs["condition"] = pd.Categorical(condition)
    obs["cell_type"] = pd.Categorical(
        np.asarray(meta["seurat_annotations"], dtype=object)
    )
    X = _counts32(X)
    obs["n_counts"] = np.asarray(X.sum(axis=1)).ravel().astype(np.int64)
    obs["n_genes"] = np.diff(X.indptr).astype(np.int64)
    obs["barcode"] = pd.Categorical(barcode)
    obs["seuratdata_cell_name"] = pd.Categorical(names)
    obs["dataset"] = pd.Categorical([KANG_DATASET] * len(obs))
    return AnnData(
        X, obs=obs, var=pd.DataFrame(index=pd.Index(genes, name="gene_symbol"))
    )


def convert_kang2018_donors(path) -> AnnData:
    """muscat ``example_sce`` (SingleCellExperiment, integer counts) → AnnData."""
    sce = _read_rda(path)["example_sce"]
    counts = sce.assays.data.listData["counts"]
    rows = _strs(counts.Dimnames[0])
    X = _counts32(_cells_by_genes(counts))
    col = sce.colData.listData
    barcode = _strs(sce.colData.rownames)
    group = _strs(col["group_id"])
    sample = _strs(col["sample_id"])
    obs = pd.DataFrame(
        index=pd.Index(
            [
                f"{b.rsplit('-', 1)[0]}-{g}-{i}"
                for i, (b, g) in enumerate(zip(barcode, group))
            ]
        )
    )
    obs["condition"] = pd.Categorical(group)
    obs["donor"] = pd.Categorical([s[len(g) :] for s, g in zip(sample, group)])
    obs["sample_id"] = pd.Categorical(sample)
    obs["cell_type"] = pd.Categorical(_strs(col["cluster_id"]))
    obs["barcode"] = pd.Categorical(barcode)
    obs["dataset"] = pd.Categorical([KANG_DATASET] * len(obs))
    obs["n_counts_1267genes"] = np.asarray(X.sum(axis=1)).ravel().astype(np.int64)
    var = pd.DataFrame(index=pd.Index(rows, name="feature"))
    var["gene_symbol"] = [r.split("_ENSG")[0] for r in rows]
    var["muscat_row_name"] = rows
    return AnnData(X, obs=obs, var=var)


def convert_zheng2017_sorted(path) -> AnnData:
    """scMINER ``pbmc14k_expression.eset`` (log2(CPM+1)) → recovered integer counts.

    Per cell, the smallest nonzero value m is one UMI: library size
    T = 1e6 / (2^m − 1), counts = round((2^x − 1) × T / 1e6).
    """
    eset = _read_rda(path)["pbmc14k_expression.eset"]
    expr = eset.assayData.maps[0]["exprs"]
    genes, cells = (_strs(d) for d in expr.Dimnames)
    X = _cells_by_genes(expr).astype(np.float64)
    X.data = np.exp2(X.data) - 1.0  # CPM
    smallest = np.minimum.reduceat(X.data, X.indptr[:-1])
    total = 1e6 / smallest
    X.data = np.rint(X.data * np.repeat(total, np.diff(X.indptr)) / 1e6)
    X = _counts32(X)
    ph = eset.phenoData.data
    obs = pd.DataFrame(index=pd.Index(cells))
    obs["cell_type"] = pd.Categorical(_strs(ph["trueLabel"]))
    obs["cell_type_sorted_population"] = pd.Categorical(_strs(ph["trueLabel_full"]))
    obs["barcode"] = pd.Categorical(_strs(ph["CellID"]))
    obs["n_counts"] = np.asarray(X.sum(axis=1)).ravel().astype(np.int64)
    obs["n_genes"] = np.diff(X.indptr).astype(np.int32)
    obs["nUMI_all_genes"] = ph["nUMI"].to_numpy(float).round().astype(np.int64)
    obs["pct_mito"] = ph["pctMito"].to_numpy(float)
    obs["dataset"] = pd.Categorical(["Zheng2017_sorted_PBMC"] * len(obs))
    return AnnData(
        X, obs=obs, var=pd.DataFrame(index=pd.Index(genes, name="gene_symbol"))
    )


def convert_zheng2017_donorA(path) -> AnnData:
    """MUDAN ``pbmcA`` (dgCMatrix of raw counts, genes × cells) → AnnData."""
    m = _read_rda(path)["pbmcA"]
    genes, cells = (_strs(d) for d in m.Dimnames)
    X = _counts32(_cells_by_genes(m))
    obs = pd.DataFrame(index=pd.Index(cells))
    obs["barcode"] = cells
    obs["n_counts"] = np.asarray(X.sum(axis=1)).ravel().astype(np.int64)
    obs["n_genes"] = np.diff(X.indptr).astype(np.int32)
    obs["dataset"] = pd.Categorical(["Zheng2017_frozen_PBMC_donorA"] * len(obs))
    return AnnData(
        X, obs=obs, var=pd.DataFrame(index=pd.Index(genes, name="gene_symbol"))
    )


def convert_norman2019(path) -> AnnData:
    """PerturBench ``devel.h5ad`` (log1p of normalize_total 1e4, 500 HVGs) → counts.

    Per cell, e = expm1(x) and its smallest nonzero value e_min stands for k UMIs:
    counts = round(e / e_min × k). Norman 2019 cells:
    k = round(0.993 × ncounts × e_min / 1e4) (their normalisation total is
    0.993 × ncounts); McFaline-Figueroa cells: the smallest k ≥ 1 making every entry
    integral (k = 1 for all of them). The implied total k × 1e4 / e_min goes to
    ``obs['normalization_total']``.
    """
    from anndata import read_h5ad

    src = read_h5ad(path)
    X = sp.csr_matrix(src.X, dtype=np.float64)
    X.sort_indices()
    X.data = np.expm1(X.data)
    e_min = np.minimum.reduceat(X.data, X.indptr[:-1])
    norman = (src.obs["dataset"] == "norman19").to_numpy()
    k = np.ones(src.n_obs)
    k[norman] = np.rint(
        0.993 * src.obs["ncounts"].to_numpy(float)[norman] * e_min[norman] / 1e4
    )
    k = np.maximum(k, 1)
    for i in np.flatnonzero(
        ~norman
    ):  # smallest k making the row integral (1 in practice)
        row = X.data[X.indptr[i] : X.indptr[i + 1]] / e_min[i]
        for kk in range(1, 51):
            if np.abs(row * kk - np.rint(row * kk)).max() <= 1e-3:
                k[i] = kk
                break
    X.data = np.rint(
        X.data / np.repeat(e_min, np.diff(X.indptr)) * np.repeat(k, np.diff(X.indptr))
    )
    X = _counts32(X)
    o = src.obs
    obs = pd.DataFrame(index=src.obs_names.copy())
    for key in (
        "condition",
        "perturbation",
        "perturbation_type",
        "dataset",
        "cell_type",
    ):
        obs[key] = o[key].cat.remove_unused_categories()
    obs["n_guides_or_dose_code"] = o["dose"].cat.remove_unused_categories()
    obs["perturbation_raw"] = o["perturbation_raw"].cat.remove_unused_categories()
    obs["n_counts_all_genes"] = o["ncounts"].to_numpy(float)
    obs["n_genes_all_genes"] = o["ngenes"].to_numpy(np.int32)
    obs["n_counts_500hvg"] = np.asarray(X.sum(axis=1)).ravel().astype(np.int64)
    obs["normalization_total"] = np.rint(k * 1e4 / e_min)
    var = pd.DataFrame(index=pd.Index(src.var_names.to_numpy(), name="gene_symbol"))
    return AnnData(X, obs=obs, var=var)


def convert_celltypist_sample(path) -> AnnData:
    """celltypist's ``sample_cell_by_gene.csv`` (cells × genes, raw UMIs) → AnnData."""
    df = pd.read_csv(path, index_col=0)
    X = _counts32(sp.csr_matrix(df.to_numpy(np.float32)))
    obs = pd.DataFrame(index=pd.Index(df.index.astype(str)))
    return AnnData(X, obs=obs, var=pd.DataFrame(index=pd.Index(df.columns.astype(str))))


CONVERTERS = {
    "pancreas": convert_pancreas,
    "glioblastoma": convert_glioblastoma,
    "kang2018": convert_kang2018,
    "kang2018_donors": convert_kang2018_donors,
    "zheng2017_sorted": convert_zheng2017_sorted,
    "zheng2017_donorA": convert_zheng2017_donorA,
    "norman2019": convert_norman2019,
    "celltypist_sample": convert_celltypist_sample,
}


def provenance(src: Source) -> str:
    """A JSON line: the source's URL and hash (for ``uns`` and the CLI)."""
    return json.dumps({"file": src.file, "url": src.url, "sha256": src.sha256})


# ---------------------------------------------------------------------------------- CLI


def _size(path: Path | None) -> str:
    if path is None or not path.is_file():
        return ""
    n = path.stat().st_size
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def list_datasets(data_dir=None) -> pd.DataFrame:
    """Each dataset: where it resolves (local/cache/download/bundled), size, source."""
    from . import data

    rows = []
    for name, ds in data.DATASETS.items():
        route, path = data.resolve(name, data_dir)
        src = SOURCES.get(ds.source) if ds.source else None
        size = (
            _size(path)
            if route in ("local", "cache")
            else (src.size or "?" if src else "")
        )
        rows.append(
            {
                "name": name,
                "route": route,
                "size": size,
                "path": str(path) if route in ("local", "cache") else "",
                "source": source_url(src) if src else "bundled with scanpy",
                "sha256": "pinned"
                if src and src.sha256
                else ("unpinned" if src else ""),
                "counts_recovered": ds.counts_recovered,
            }
        )
    return pd.DataFrame(rows).set_index("name")


def verify(data_dir=None) -> list[tuple[str, str, str]]:
    """Check local files against their hashes: ``(status, file, detail)`` per file.

    ``SHA256SUMS`` in the data directory lists the offline ``.h5ad`` hashes (and the
    sources there); downloaded sources in ``<cache>/sources`` are checked against
    :data:`SOURCES`. Status is ``ok``, ``MISMATCH``, ``missing`` or ``unpinned``.
    """
    from . import data

    out = []
    folder = data.data_dir(data_dir)
    sums = folder / "SHA256SUMS" if folder is not None else None
    if sums is not None and sums.is_file():
        for line in sums.read_text().splitlines():
            if not line.strip():
                continue
            expected, fname = line.split(maxsplit=1)
            path = folder / fname.lstrip("*")
            if not path.is_file():
                out.append(("missing", str(path), "listed in SHA256SUMS"))
                continue
            found = sha256(path)
            out.append(
                ("ok", str(path), expected)
                if found == expected
                else ("MISMATCH", str(path), f"expected {expected}, found {found}")
            )
    places = [sources_dir()] + ([folder / "sources"] if folder is not None else [])
    for src in SOURCES.values():
        for place in places:
            path = place / src.file
            if not path.is_file():
                continue
            found = sha256(path)
            if src.sha256 is None:
                out.append(("unpinned", str(path), f"no pinned hash; found {found}"))
            elif found == src.sha256:
                out.append(("ok", str(path), src.sha256))
            else:
                out.append(
                    ("MISMATCH", str(path), f"expected {src.sha256}, found {found}")
                )
    return out


def main(argv=None) -> int:
    """``python -m helpers.data list | fetch NAME... | verify``."""
    import argparse

    from . import data

    ap = argparse.ArgumentParser(
        prog="python -m helpers.data",
        description="The book's datasets: where they resolve, "
        "pre-download, verify checksums.",
    )
    ap.add_argument(
        "--data-dir",
        default=None,
        help=f"data directory (default: ${data.DATA_ENV} or ../shared/data)",
    )
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="each dataset: local / cache / download, size, source")
    f = sub.add_parser("fetch", help="download and convert datasets into the cache now")
    f.add_argument(
        "names", nargs="*", help=f"dataset names: {', '.join(data.DATASETS)}"
    )
    f.add_argument(
        "--all",
        action="store_true",
        help="every dataset with a pinned hash (the full pertpy/scVelo files, "
        "several GB, only when named)",
    )
    sub.add_parser(
        "verify", help="check local copies against SHA256SUMS and pinned hashes"
    )
    args = ap.parse_args(argv)
    if args.command == "list":
        with pd.option_context("display.width", 200, "display.max_colwidth", 90):
            print(list_datasets(args.data_dir).drop(columns=["path"]).to_string())
        print(
            f"\ncache: {data.cache_dir()}  data dir: {data.data_dir(args.data_dir)}  "
            f"mirror: {mirror() or '-'}"
        )
        return 0
    if args.command == "fetch":
        names = list(args.names)
        if args.all:
            names += [
                n
                for n, d in data.DATASETS.items()
                if d.source and SOURCES[d.source].sha256 and n not in names
            ]
        if not names:
            ap.error("name at least one dataset (or --all)")
        for name in names:
            data._get(name)
        for name in names:
            route, path = data.fetch(name, args.data_dir)
            print(
                f"{name}: {'downloaded to' if route == 'download' else route} "
                f"{path or ''}"
            )
        return 0
    results = verify(args.data_dir)
    for status, path, detail in results:
        print(f"{status:9s} {path}  {detail}")
    bad = [r for r in results if r[0] in ("MISMATCH", "missing")]
    print(f"{len(results)} files checked, {len(bad)} problems")
    return 1 if bad else 0
