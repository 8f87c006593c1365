"""Datasets: where they live, how they load, and what they must look like.

Every chapter gets its cells through :func:`load_dataset`. A dataset is either a name
from :data:`DATASETS` or a path to an ``.h5ad`` file. A named dataset resolves, in
order, to:

1. its file in the data directory (``data_dir`` argument, ``$BOOK_DATA_DIR``, or
   ``../shared/data`` beside the repository when that folder exists);
2. its converted ``.h5ad`` in the download cache (``$BOOK_CACHE_DIR`` or
   ``~/.cache/sc-weights-book``);
3. a download of its public source from a pinned URL, SHA-256 checked, converted to
AnnData
   and cached as ``.h5ad`` (:mod:`helpers.sources`; ``$BOOK_DATA_MIRROR`` replaces the
   host).

``pbmc68k_reduced`` ships inside scanpy. ``python -m helpers.data list|fetch|verify``
shows where each dataset resolves, pre-downloads, and checks local copies against their
hashes.

The ``check_*`` functions validate input at the boundary; each error names the problem
and the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData, read_h5ad

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ENV = "BOOK_DATA_DIR"
CACHE_ENV = "BOOK_CACHE_DIR"
MIRROR_ENV = "BOOK_DATA_MIRROR"


@dataclass(frozen=True)
class Dataset:
    """A named dataset: what it is, the file names it may have, and its public source.

    ``files``: names looked up in the data directory, then in the cache (the first is
    what the download route writes). ``source``: a key of
    :data:`helpers.sources.SOURCES` (None: bundled with a package).
    ``counts_recovered``: integer counts were recovered from normalised values (exactly,
    per the dataset's provenance), not read raw.
    """

    description: str
    files: tuple[str, ...]
    source: str | None = None
    organism: str = "human"
    label_keys: tuple[str, ...] = ()
    counts_recovered: bool = False
    citation: str = ""
    licence: str = ""
    aliases: tuple[str, ...] = field(default_factory=tuple)

    @property
    def label_key(self) -> str | None:
        """The default label key (the first of ``label_keys``)."""
        return self.label_keys[0] if self.label_keys else None

    @property
    def url(self) -> str | None:
        """The pinned public URL of the source (None when bundled)."""
        from .sources import SOURCES

        return SOURCES[self.source].url if self.source else None


_ZHENG = "Zheng et al. 2017, Nat Commun 8:14049, doi:10.1038/ncomms14049"
_KANG = "Kang et al. 2018, Nat Biotechnol 36:89-94, doi:10.1038/nbt.4042"
_NORMAN = "Norman et al. 2019, Science 365:786-793, doi:10.1126/science.aax4438"

DATASETS: dict[str, Dataset] = {
    "pancreas": Dataset(
        "Mouse pancreas endocrinogenesis E15.5, scVelo's cells on its 2,000 most "
        "variable genes",
        ("pancreas_endocrinogenesis.h5ad",),
        "supercell_pancreas.rda",
        "mouse",
        ("clusters", "clusters_coarse"),
        citation="Bastidas-Ponce et al. 2019, Development 146:dev173849, "
        "doi:10.1242/dev.173849",
        licence="GPL-3 (SuperCell repository); data public (GEO GSE132188)",
    ),
    "pancreas_full": Dataset(
        "Mouse pancreas endocrinogenesis E15.5, scVelo's file with all 27,998 genes "
        "(scvelo.datasets.pancreas)",
        ("endocrinogenesis_day15.h5ad",),
        "endocrinogenesis_day15.h5ad",
        "mouse",
        ("clusters", "clusters_coarse"),
        citation="Bastidas-Ponce et al. 2019, Development 146:dev173849, "
        "doi:10.1242/dev.173849",
        licence="BSD-3 (scvelo_notebooks); data public (GEO GSE132188)",
    ),
    "glioblastoma_panobinostat": Dataset(
        "Glioblastoma slice cultures of 5 patients, vehicle vs 0.2 uM panobinostat, "
        "300 genes",
        ("glioblastoma_panobinostat.h5ad",),
        "lemur_glioblastoma_example_data.rda",
        "human",
        ("condition",),
        citation="Zhao et al. 2021, Genome Med 13:82, doi:10.1186/s13073-021-00894-y",
        licence="MIT (lemur package); gene symbols: GENCODE v44 via celltypist (MIT)",
    ),
    "kang2018": Dataset(
        "PBMCs of lupus patients, control vs 6 h IFN-beta, 2,000 cells, 13 cell types",
        ("kang2018_ifnb_pbmc_2k.h5ad",),
        "scplotter_ifnb_sub.rda",
        "human",
        ("cell_type", "condition"),
        counts_recovered=True,
        citation=_KANG,
        licence="GPL>=3 (scplotter repository); data public (GEO GSE96583)",
    ),
    "kang2018_donors": Dataset(
        "Kang 2018 subset with donor ids: 1,556 cells, 2 donors x ctrl/stim, "
        "5 author labels",
        ("kang2018_ifnb_donors_1.6k.h5ad",),
        "muscat_example_sce.rda",
        "human",
        ("cell_type", "condition", "donor"),
        citation=_KANG,
        licence="GPL-3 (muscat repository); data public (GEO GSE96583, "
        "ExperimentHub EH2259)",
    ),
    "zheng2017_sorted": Dataset(
        "FACS-sorted PBMC populations, 7 x 500 cells, labels from the sort gate",
        ("zheng2017_sorted_pbmc_3.5k.h5ad",),
        "scminer_pbmc14k_expression.eset.rda",
        "human",
        ("cell_type",),
        counts_recovered=True,
        citation=f"{_ZHENG}; down-sampled by Abdelaal et al. 2019, Genome Biol 20:194",
        licence="Apache-2.0 (scMINER repository); 10x data CC BY 4.0",
    ),
    "zheng2017_donorA": Dataset(
        "10x frozen PBMCs of one donor (donor A), 2,896 cells, unlabelled",
        ("zheng2017_pbmc_donorA_2.9k.h5ad",),
        "mudan_pbmcA.rda",
        "human",
        (),
        citation=_ZHENG,
        licence="GPL-3 (MUDAN repository); 10x data CC BY 4.0",
    ),
    "norman2019": Dataset(
        "PerturBench subset: Norman 2019 CRISPRa singles and doubles (K562) plus "
        "McFaline-Figueroa 2024 CRISPRi, 500 genes",
        ("norman2019_mcfaline2024_crispr_6k.h5ad",),
        "perturbench_devel.h5ad",
        "human",
        ("perturbation", "cell_type"),
        counts_recovered=True,
        citation=f"{_NORMAN}; McFaline-Figueroa et al. 2024, Cell Genomics; "
        "PerturBench "
        "(Wu et al. 2024, arXiv:2408.10609)",
        licence="BSD-3 (PerturBench repository); data public (GEO GSE133344, "
        "GSE225775)",
    ),
    "immune_celltypist": Dataset(
        "559 human immune cells, raw UMI counts, unlabelled (celltypist sample data)",
        ("immune_celltypist_sample.h5ad",),
        "sample_cell_by_gene.csv",
        "human",
        (),
        citation="Dominguez Conde et al. 2022, Science 376:eabl5197, "
        "doi:10.1126/science.abl5197",
        licence="MIT (celltypist)",
    ),
    "pbmc68k_reduced": Dataset(
        "700 PBMCs shipped inside scanpy (scanpy.datasets.pbmc68k_reduced); "
        "counts recovered "
        "from .raw",
        (),
        None,
        "human",
        ("bulk_labels",),
        counts_recovered=True,
        citation=_ZHENG,
        licence="BSD-3 (scanpy); 10x data CC BY 4.0",
    ),
    "sciplex2": Dataset(
        "A549 cells, four drugs at seven doses (sci-Plex2), "
        "pertpy.data.srivatsan_2020_sciplex2",
        ("srivatsan_2020_sciplex2.h5ad",),
        "srivatsan_2020_sciplex2.h5ad",
        "human",
        ("perturbation",),
        citation="Srivatsan et al. 2020, Science 367:45-51, "
        "doi:10.1126/science.aax6234 "
        "(via scPerturb)",
        licence="data public (GEO GSE139944); file served by scverse (pertpy)",
    ),
    "kang2018_full": Dataset(
        "Kang 2018 PBMCs, control vs IFN-beta, all cells (pertpy.data.kang_2018)",
        ("kang_2018.h5ad",),
        "kang_2018.h5ad",
        "human",
        ("cell_type", "label"),
        citation=_KANG,
        licence="data public (GEO GSE96583); file served by scverse (pertpy)",
    ),
    "norman2019_full": Dataset(
        "Norman 2019 K562 CRISPRa screen, all cells (pertpy.data.norman_2019)",
        ("norman_2019.h5ad",),
        "norman_2019.h5ad",
        "human",
        ("perturbation_name",),
        citation=_NORMAN,
        licence="data public (GEO GSE133344); file served by scverse (pertpy)",
    ),
}


def data_dir(path: str | os.PathLike | None = None) -> Path | None:
    """The data directory: ``path``, ``$BOOK_DATA_DIR``, else ``../shared/data``."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_dir():
            raise FileNotFoundError(
                f"data_dir {str(p)!r} is not a directory. Pass an existing folder "
                f"or unset it to use ${DATA_ENV} or ../shared/data."
            )
        return p
    env = os.environ.get(DATA_ENV)
    if env:
        p = Path(env).expanduser()
        if not p.is_dir():
            raise FileNotFoundError(
                f"${DATA_ENV}={env!r} is not a directory. Point it at the folder "
                "that holds the .h5ad files, or unset it."
            )
        return p
    default = REPO_ROOT.parent / "shared" / "data"
    return default if default.is_dir() else None


def cache_dir() -> Path:
    """Where downloads go (``$BOOK_CACHE_DIR`` or ``~/.cache/sc-weights-book``)."""
    return Path(
        os.environ.get(CACHE_ENV, Path.home() / ".cache" / "sc-weights-book")
    ).expanduser()


ORGANISMS = ("human", "mouse")


def organism(name_or_path: str) -> str:
    """``"mouse"`` or ``"human"`` for a named dataset (paths default to human; a loaded
    file's organism is inferred from its gene symbols, see :func:`infer_organism`)."""
    ds = DATASETS.get(str(name_or_path))
    return ds.organism if ds else "human"


def infer_organism(var_names) -> str:
    """``"mouse"`` or ``"human"`` from the case of gene symbols.

    The rule: among names that look like symbols (start with a letter, contain a
    letter after the first; not Ensembl ids like ``ENSG...`` nor ``C1orf112``),
    mouse symbols are Capitalised (``Ins1``, ``Gcg``) and human symbols are UPPER
    (``INS``, ``GCG``). ``"mouse"`` when more names are Capitalised than upper case,
    else ``"human"`` (also when no name looks like a symbol).
    """
    names = pd.Series(np.asarray(var_names, dtype=str))
    symbol = names.str.match(r"^[A-Za-z][A-Za-z0-9\-\.]*$")
    symbol &= ~names.str.match(r"^ENS[A-Z]*[0-9]{6,}") & ~names.str.contains("orf")
    names = names[symbol]
    rest = names.str[1:].str.replace(r"[^A-Za-z]", "", regex=True)
    has = rest.str.len() > 0
    upper = int((has & (rest == rest.str.upper())).sum())
    capital = int((has & names.str[0].str.isupper() & (rest == rest.str.lower())).sum())
    return "mouse" if capital > upper else "human"


def resolve_organism(adata: AnnData, organism: str | None = None) -> str:
    """The organism a chapter uses: ``organism`` when given, else the dataset's.

    The dataset's is ``adata.uns["dataset"]["organism"]`` (the registry's for a named
    dataset, inferred from gene symbols for a file), else inferred here. Raises
    ``ValueError`` for anything but ``"human"`` or ``"mouse"``.
    """
    if organism is None:
        organism = adata.uns.get("dataset", {}).get("organism")
        if organism is None:
            organism = infer_organism(adata.var_names)
    if organism not in ORGANISMS:
        raise ValueError(
            f"organism={organism!r}; use one of {list(ORGANISMS)} (the gene-set "
            "libraries exist for these), or None to take it from the dataset."
        )
    return organism


def resolve(
    name: str, data_dir: str | os.PathLike | None = None
) -> tuple[str, Path | None]:
    """Where dataset ``name`` would load from now, without loading it.

    Returns ``(route, path)``: ``("local", file in the data directory)``, ``("cache",
    file in the cache)``, ``("download", the cache file it would write)`` or
    ``("bundled", None)``.
    """
    ds = _get(name)
    if ds.source is None:
        return "bundled", None
    local = _find_local(ds, data_dir)
    if local is not None:
        return "local", local
    for fname in ds.files:
        if (cache_dir() / fname).is_file():
            return "cache", cache_dir() / fname
    return "download", cache_dir() / ds.files[0]


def fetch(
    name: str, data_dir: str | os.PathLike | None = None
) -> tuple[str, Path | None]:
    """Make dataset ``name`` available locally (download and convert when needed).

    Returns the route it resolved by before the call and the file it loads from now.
    """
    route, path = resolve(name, data_dir)
    if route == "download":
        path = _download(name, DATASETS[name], data_dir)
    return route, path


def load_dataset(
    name_or_path: str | os.PathLike, data_dir: str | os.PathLike | None = None
) -> AnnData:
    """Load a named dataset or an ``.h5ad`` file.

    Parameters
    ----------
    name_or_path
        One of :data:`DATASETS` (``pancreas``, ``glioblastoma_panobinostat``,
        ``kang2018``, ``kang2018_donors``, ``zheng2017_sorted``, ``zheng2017_donorA``,
        ``norman2019``, ``immune_celltypist``, ``pbmc68k_reduced``, ``sciplex2``,
        ``pancreas_full``, ``kang2018_full``, ``norman2019_full``) or a path to an
        ``.h5ad`` file.
    data_dir
        Folder searched first for the dataset's file (see module docstring for the
        default).

    Returns
    -------
    AnnData with ``uns["dataset"] = {"name", "source", "organism", "route",
    "label_keys", "counts_recovered"}`` (``route``: local, cache, download or bundled).
    For a file: ``{"name", "source", "organism", "organism_inferred", "label_keys"}``,
    the organism inferred from the gene symbols (:func:`infer_organism`; a printed
    note says so; chapters take an ``organism`` parameter to override it).
    ``pbmc68k_reduced`` comes back with integer counts in ``X`` and ``layers["counts"]``
    recovered from its log-normalised ``.raw`` as ``round(expm1(raw) * n_counts /
    1e4)``. Each of a named dataset's label columns (``label_keys``) comes back
    categorical with sorted categories and its fixed colours in
    ``uns[f"{key}_colors"]`` (:func:`attach_label_colors`).

    Raises
    ------
    helpers.sources.DownloadError
        (a ``FileNotFoundError``) the download failed; names the file and where to put
        it.
    helpers.sources.ChecksumError
        the downloaded bytes differ from the pinned SHA-256 (nothing is cached).
    helpers.sources.ConversionError, ImportError
        the conversion failed, or a package it needs is missing.
    """
    key = str(name_or_path)
    if key.endswith(".h5ad") or os.sep in key:
        path = Path(key).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"No file at {str(path)!r}. Pass an existing .h5ad path or one of the "
                f"dataset names {sorted(DATASETS)}."
            )
        adata = read_h5ad(path)
        org = infer_organism(adata.var_names)
        print(
            f"{path.name}: gene symbols look {org} (organism inferred from their "
            "case); pass -p organism human|mouse to override."
        )
        adata.uns["dataset"] = {
            "name": path.stem,
            "source": str(path),
            "organism": org,
            "organism_inferred": True,
            "label_keys": [],
        }
        return adata
    ds = _get(key)
    if ds.source is None:  # pbmc68k_reduced
        adata, source, route = (
            _pbmc68k_counts(),
            "scanpy.datasets.pbmc68k_reduced (bundled)",
            "bundled",
        )
    else:
        route, path = resolve(key, data_dir)
        if route == "download":
            path = _download(key, ds, data_dir)
        adata, source = read_h5ad(path), str(path)
    adata.var_names_make_unique()
    adata.uns["dataset"] = {
        "name": key,
        "source": source,
        "organism": ds.organism,
        "route": route,
        "label_keys": list(ds.label_keys),
        "counts_recovered": ds.counts_recovered,
    }
    attach_label_colors(adata, ds.label_keys)
    return adata


def label_colors(categories) -> list[str]:
    """The book's fixed colour rule: one hex colour per category, aligned with
    ``categories``.

    The colour of a label is the palette entry at the label's rank among the *sorted*
    categories (sorted as strings), so it depends on the set of labels only, never on
    their order in the data: matplotlib's ``tab10`` for at most 10 labels, then
    scanpy's ``default_20``, ``default_28`` and ``default_102`` palettes (cycled
    beyond 102 labels).
    """
    import matplotlib as mpl
    from scanpy.plotting import palettes

    cats = [str(c) for c in categories]
    n = len(set(cats))
    if n <= 10:
        pal = [mpl.colors.to_hex(c) for c in mpl.colormaps["tab10"].colors]
    elif n <= 20:
        pal = list(palettes.default_20)
    elif n <= 28:
        pal = list(palettes.default_28)
    else:
        pal = list(palettes.default_102)
    rank = {c: i for i, c in enumerate(sorted(set(cats)))}
    return [mpl.colors.to_hex(pal[rank[c] % len(pal)]) for c in cats]


def attach_label_colors(adata: AnnData, keys) -> AnnData:
    """Store a fixed colour per label the scanpy way, in place: for each obs column
    of ``keys`` present in ``adata``, the column becomes categorical with its
    categories sorted (as strings; values unchanged) and
    ``uns[f"{key}_colors"]`` the :func:`label_colors` list aligned with them.

    Sorted categories keep the list aligned after ``data.check_labels`` (which sorts)
    and anndata subsets it with the cells (unused categories and their colours are
    dropped together), so every chapter that loads a dataset colours its labels alike.
    """
    for key in keys:
        if key not in adata.obs:
            continue
        col = adata.obs[key]
        if not isinstance(col.dtype, pd.CategoricalDtype):
            col = col.astype("category")
        col = col.cat.reorder_categories(sorted(col.cat.categories, key=str))
        adata.obs[key] = col
        adata.uns[f"{key}_colors"] = label_colors(col.cat.categories)
    return adata


def _get(key: str) -> Dataset:
    if key not in DATASETS:
        raise ValueError(
            f"Unknown dataset {key!r}. Use one of {sorted(DATASETS)} or a path to an "
            ".h5ad file."
        )
    return DATASETS[key]


def _find_local(ds: Dataset, path) -> Path | None:
    folder = data_dir(path)
    if folder is None:
        return None
    for name in ds.files:
        if (folder / name).is_file():
            return folder / name
    return None


def _download(key: str, ds: Dataset, path) -> Path:
    """Download and convert ``key``'s source into the cache; returns the .h5ad path."""
    from . import sources

    folder = data_dir(path)
    where = (
        f"the data directory {str(folder)!r}"
        if folder
        else f"a folder named by ${DATA_ENV}"
    )
    where = f"{ds.files[0]!r} in {where}"
    return sources.build(
        key, sources.SOURCES[ds.source], cache_dir() / ds.files[0], where=where
    )


def _pbmc68k_counts() -> AnnData:
    import scanpy as sc

    full = sc.datasets.pbmc68k_reduced()
    raw = full.raw.to_adata()
    lognorm = raw.X.toarray() if sp.issparse(raw.X) else np.asarray(raw.X)
    counts = np.rint(
        np.expm1(lognorm) * full.obs["n_counts"].to_numpy()[:, None] / 1e4
    ).astype(np.float32)
    adata = AnnData(sp.csr_matrix(counts), obs=full.obs.copy(), var=raw.var[[]].copy())
    adata.layers["counts"] = adata.X.copy()
    adata.obsm["X_umap"] = full.obsm["X_umap"].copy()
    return adata


if (
    __name__ == "__main__"
):  # python -m helpers.data list|fetch|verify (the CLI is in sources)
    from helpers.sources import main

    raise SystemExit(main())


# ---------------------------------------------------------------- validation at the
# boundary
#
# One way to read a matrix (``get_matrix``), one way to make it dense (``to_dense``),
# one rule for
# counts (``check_counts``, tolerance ``COUNTS_TOL``, always ``ValueError``) and one for
# labels.

#: Largest distance from an integer that still counts as a count (float32 storage,
#: recovered counts).
COUNTS_TOL = 1e-3


def check_obs_key(adata: AnnData, key: str) -> None:
    """Raise ``KeyError`` if ``key`` is not an ``adata.obs`` column."""
    if key not in adata.obs:
        raise KeyError(
            f"obs column {key!r} not found. Available columns: "
            f"{list(adata.obs.columns)}. Pass one of them as the label key."
        )


def check_layer(adata: AnnData, layer: str | None) -> None:
    """Raise ``KeyError`` unless ``layer`` is None, ``"X"`` or in ``adata.layers``."""
    if layer not in (None, "X") and layer not in adata.layers:
        raise KeyError(
            f"layer {layer!r} not found. Available layers: {list(adata.layers)}; "
            "pass one of them, or layer=None to use X."
        )


def _where(layer: str | None = None, use_rep: str | None = None) -> str:
    if use_rep is not None:
        return f"obsm[{use_rep!r}]"
    return "X" if layer in (None, "X") else f"layer {layer!r}"


def to_dense(X, dtype=np.float32) -> np.ndarray:
    """A dense ``dtype`` array from a numpy array, a scipy matrix or a torch tensor."""
    if hasattr(X, "detach"):
        X = X.detach().cpu().numpy()
    if sp.issparse(X):
        X = X.toarray()
    return np.asarray(X, dtype=dtype)


def get_matrix(
    adata: AnnData,
    *,
    layer: str | None = None,
    use_rep: str | None = None,
    counts: bool = False,
    dense: bool = False,
    dtype=np.float32,
):
    """The one way to read a cells × features matrix from ``adata``.

    Parameters
    ----------
    layer
        ``None`` or ``"X"`` for ``adata.X``, else a key of ``adata.layers``.
    use_rep
        A key of ``adata.obsm`` (an embedding); excludes ``layer``.
    counts
        Require raw counts (finite, non-negative, integers within :data:`COUNTS_TOL`); a
        ``ValueError`` names the fix otherwise.
    dense
        Return a dense ``dtype`` array (:func:`to_dense`); otherwise the stored object
        as is (sparse stays sparse, no copy).

    Raises
    ------
    KeyError
        The layer or representation does not exist (the message lists what does).
    ValueError
        ``counts=True`` and the values are not counts.
    """
    if use_rep is not None:
        if layer not in (None, "X"):
            raise ValueError(f"Pass layer={layer!r} or use_rep={use_rep!r}, not both.")
        if use_rep not in adata.obsm:
            raise KeyError(
                f"obsm[{use_rep!r}] not found. Available representations: "
                f"{list(adata.obsm)}; compute the embedding first or pass one of them."
            )
        X = adata.obsm[use_rep]
    else:
        check_layer(adata, layer)
        X = adata.X if layer in (None, "X") else adata.layers[layer]
    if counts:
        check_counts(X, _where(layer, use_rep))
    return to_dense(X, dtype) if dense else X


def _values(X) -> np.ndarray:
    return X.data if sp.issparse(X) else np.asarray(X)


def is_dask(X) -> bool:
    """True for a dask array (``adata.X`` of a lazily read or Dask-backed AnnData)."""
    return type(X).__module__.split(".")[0] == "dask"


def _block_summary(block) -> np.ndarray:
    v = np.asarray(_values(block), dtype=np.float64).ravel()
    finite = np.isfinite(v)
    v = v[finite]
    if not v.size:
        return np.array([[float((~finite).sum()), np.inf, 0.0]])
    return np.array([[float((~finite).sum()), v.min(), np.abs(v - np.rint(v)).max()]])


def value_summary(X) -> tuple[int, float, float]:
    """``(non-finite values, minimum, largest distance from an integer)`` of the stored
    values of ``X`` (finite ones for the last two; ``inf`` minimum when none).

    A dask array is summarised block by block (one pass, nothing gathered), so the
    count checks work on data larger than memory and on a Dask cluster.
    """
    if is_dask(X):
        parts = X.map_blocks(_block_summary, chunks=(1, 3), dtype=np.float64)
        rows = np.asarray(parts.compute()).reshape(-1, 3)
    else:
        rows = _block_summary(X)
    return int(rows[:, 0].sum()), float(rows[:, 1].min()), float(rows[:, 2].max())


def check_finite(X, what: str = "X") -> None:
    """Raise ``ValueError`` if ``X`` holds NaN or infinite values."""
    n = value_summary(X)[0]
    if n:
        raise ValueError(
            f"{what} contains {n} NaN/inf values. Remove or impute them before "
            "training (e.g. drop the affected cells or genes)."
        )


def is_integer_counts(X, tol: float = COUNTS_TOL) -> bool:
    """True when every stored value is a non-negative integer (within ``tol``)."""
    n_bad, low, frac = value_summary(X)
    return bool(n_bad == 0 and (low == np.inf or (low >= 0 and frac <= tol)))


def check_counts(X, what: str = "X") -> None:
    """Raise ``ValueError`` unless ``X`` holds finite, non-negative integer counts."""
    check_finite(X, what)
    _, low, frac = value_summary(X)
    if low < 0:
        raise ValueError(
            f"{what} has negative values (min {low:.3g}) where raw counts are "
            "required. Pass the raw-count layer (e.g. layer='counts' or "
            "'spliced'), not scaled data."
        )
    if frac > COUNTS_TOL:
        raise ValueError(
            f"{what} holds non-integer values (largest distance from an integer "
            f"{frac:.3g}) where raw counts are required: it looks normalised or "
            "log-transformed. Pass the raw-count layer (e.g. layer='counts'), or "
            "recover counts before calling this."
        )


def check_labels(adata: AnnData, key: str, min_cells: int = 2) -> pd.Series:
    """Validate labels: ≥ 2 classes, each with ≥ ``min_cells`` cells, none missing."""
    check_obs_key(adata, key)
    labels = adata.obs[key]
    if labels.isna().any():
        raise ValueError(
            f"obs[{key!r}] has {int(labels.isna().sum())} missing labels. "
            "Drop those cells (adata[adata.obs[key].notna()]) or fill them."
        )
    counts = labels.astype(str).value_counts()
    if len(counts) < 2:
        raise ValueError(
            f"obs[{key!r}] has {len(counts)} class; a classifier needs at least 2. "
            "Choose another label key."
        )
    small = counts[counts < min_cells]
    if len(small):
        raise ValueError(
            f"obs[{key!r}] classes with fewer than {min_cells} cells: "
            f"{small.to_dict()}. Drop or merge these classes before splitting."
        )
    return labels.astype(str).astype("category")
