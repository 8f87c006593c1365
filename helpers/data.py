"""Datasets: where they live, how they load, and what they must look like.

Every chapter gets its cells through :func:`load_dataset`. A dataset is either a name from
:data:`DATASETS` or a path to an ``.h5ad`` file. For a named dataset a local copy in the data
directory wins; otherwise the real upstream loader downloads it into a cache directory.

The data directory is, in order: the ``data_dir`` argument, the environment variable
``BOOK_DATA_DIR``, or ``../shared/data`` beside the repository when that folder exists.
The download cache is ``BOOK_CACHE_DIR`` or ``~/.cache/sc-weights-book``.

The ``check_*`` functions validate input at the boundary; each error names the problem and the fix.
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


@dataclass(frozen=True)
class Dataset:
    """A named dataset: local file names it may have, and how upstream serves it."""

    description: str
    files: tuple[str, ...]
    url: str | None = None
    organism: str = "human"
    label_key: str | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)


DATASETS: dict[str, Dataset] = {
    "pancreas": Dataset(
        "Mouse pancreas endocrinogenesis E15.5 (Bastidas-Ponce et al. 2019), scvelo.datasets.pancreas",
        ("pancreas_endocrinogenesis.h5ad", "endocrinogenesis_day15.h5ad"),
        "https://github.com/theislab/scvelo_notebooks/raw/master/data/Pancreas/endocrinogenesis_day15.h5ad",
        organism="mouse",
        label_key="clusters",
    ),
    "sciplex2": Dataset(
        "A549 cells, four drugs at seven doses (Srivatsan et al. 2020), pertpy.data.srivatsan_2020_sciplex2",
        ("srivatsan_2020_sciplex2.h5ad",),
        "https://scverse-exampledata.s3.eu-west-1.amazonaws.com/pertpy/srivatsan_2020_sciplex2.h5ad",
        label_key="perturbation",
    ),
    "pbmc68k_reduced": Dataset(
        "700 PBMCs shipped inside scanpy (scanpy.datasets.pbmc68k_reduced); counts recovered from .raw",
        (),
        None,
        label_key="bulk_labels",
    ),
    "glioblastoma_panobinostat": Dataset(
        "Glioblastoma slice cultures, vehicle vs 0.2 uM panobinostat (Zhao et al. 2021), 300 genes",
        ("glioblastoma_panobinostat.h5ad",),
        None,
        label_key="condition",
    ),
    "immune_celltypist": Dataset(
        "559 human immune cells, raw UMI counts, unlabelled (celltypist sample data)",
        ("immune_celltypist_sample.h5ad",),
        None,
    ),
}


def data_dir(path: str | os.PathLike | None = None) -> Path | None:
    """The data directory: ``path``, else ``$BOOK_DATA_DIR``, else ``../shared/data`` if it exists."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_dir():
            raise FileNotFoundError(f"data_dir {str(p)!r} is not a directory. Pass an existing folder "
                                    f"or unset it to use ${DATA_ENV} or ../shared/data.")
        return p
    env = os.environ.get(DATA_ENV)
    if env:
        p = Path(env).expanduser()
        if not p.is_dir():
            raise FileNotFoundError(f"${DATA_ENV}={env!r} is not a directory. Point it at the folder "
                                    "that holds the .h5ad files, or unset it.")
        return p
    default = REPO_ROOT.parent / "shared" / "data"
    return default if default.is_dir() else None


def cache_dir() -> Path:
    """Where upstream downloads go (``$BOOK_CACHE_DIR`` or ``~/.cache/sc-weights-book``)."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "sc-weights-book")).expanduser()


def organism(name_or_path: str) -> str:
    """``"mouse"`` or ``"human"`` for a named dataset (paths default to human)."""
    ds = DATASETS.get(str(name_or_path))
    return ds.organism if ds else "human"


def load_dataset(name_or_path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> AnnData:
    """Load a named dataset or an ``.h5ad`` file.

    Parameters
    ----------
    name_or_path
        One of :data:`DATASETS` (``pancreas``, ``sciplex2``, ``pbmc68k_reduced``,
        ``glioblastoma_panobinostat``, ``immune_celltypist``) or a path to an ``.h5ad`` file.
    data_dir
        Folder searched first for the dataset's file (see module docstring for the default).

    Returns
    -------
    AnnData with ``uns["dataset"] = {"name", "source", "organism"}``. ``pbmc68k_reduced`` comes
    back with integer counts in ``X`` and ``layers["counts"]`` recovered from its log-normalised
    ``.raw`` as ``round(expm1(raw) * n_counts / 1e4)``.
    """
    key = str(name_or_path)
    if key.endswith(".h5ad") or os.sep in key:
        path = Path(key).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"No file at {str(path)!r}. Pass an existing .h5ad path or one of the "
                                    f"dataset names {sorted(DATASETS)}.")
        adata = read_h5ad(path)
        adata.uns["dataset"] = {"name": path.stem, "source": str(path), "organism": "human"}
        return adata
    if key not in DATASETS:
        raise ValueError(f"Unknown dataset {key!r}. Use one of {sorted(DATASETS)} or a path to an .h5ad file.")
    ds = DATASETS[key]
    if key == "pbmc68k_reduced":
        adata, source = _pbmc68k_counts(), "scanpy.datasets.pbmc68k_reduced (bundled)"
    else:
        local = _find_local(ds, data_dir)
        if local is not None:
            adata, source = read_h5ad(local), str(local)
        else:
            adata, source = _download(key, ds, data_dir)
    adata.var_names_make_unique()
    adata.uns["dataset"] = {"name": key, "source": source, "organism": ds.organism}
    return adata


def _find_local(ds: Dataset, path) -> Path | None:
    folder = data_dir(path)
    if folder is None:
        return None
    for name in ds.files:
        if (folder / name).is_file():
            return folder / name
    return None


def _download(key: str, ds: Dataset, path) -> tuple[AnnData, str]:
    folder = data_dir(path)
    where = f"the data directory {str(folder)!r}" if folder else f"a folder named by ${DATA_ENV}"
    if ds.url is None:
        raise FileNotFoundError(f"Dataset {key!r} has no upstream download here. Put {ds.files[0]!r} in {where}.")
    target = cache_dir() / ds.files[-1]
    try:
        if key == "pancreas":
            import scvelo as scv

            target.parent.mkdir(parents=True, exist_ok=True)
            # an explicit path: scvelo's default leaves empty ./data/... folders in the cwd
            adata = scv.datasets.pancreas(file_path=target)
        elif key == "sciplex2":
            import pertpy as pt

            pt.settings.datasetdir = target.parent
            adata = pt.data.srivatsan_2020_sciplex2()
        else:  # pragma: no cover - every downloadable dataset is listed above
            raise AssertionError(key)
    except Exception as err:  # network errors come in many types
        raise FileNotFoundError(
            f"Could not load dataset {key!r}: download from {ds.url} failed ({type(err).__name__}: {err}). "
            f"Offline? Put the file {ds.files[0]!r} in {where} (or set ${DATA_ENV})."
        ) from err
    return adata, ds.url


def _pbmc68k_counts() -> AnnData:
    import scanpy as sc

    full = sc.datasets.pbmc68k_reduced()
    raw = full.raw.to_adata()
    lognorm = raw.X.toarray() if sp.issparse(raw.X) else np.asarray(raw.X)
    counts = np.rint(np.expm1(lognorm) * full.obs["n_counts"].to_numpy()[:, None] / 1e4).astype(np.float32)
    adata = AnnData(sp.csr_matrix(counts), obs=full.obs.copy(), var=raw.var[[]].copy())
    adata.layers["counts"] = adata.X.copy()
    adata.obsm["X_umap"] = full.obsm["X_umap"].copy()
    return adata


# ---------------------------------------------------------------- validation at the boundary
#
# One way to read a matrix (``get_matrix``), one way to make it dense (``to_dense``), one rule for
# counts (``check_counts``, tolerance ``COUNTS_TOL``, always ``ValueError``) and one for labels.

#: Largest distance from an integer that still counts as a count (float32 storage, recovered counts).
COUNTS_TOL = 1e-3


def check_obs_key(adata: AnnData, key: str) -> None:
    """Raise ``KeyError`` if ``key`` is not an ``adata.obs`` column."""
    if key not in adata.obs:
        raise KeyError(f"obs column {key!r} not found. Available columns: "
                       f"{list(adata.obs.columns)}. Pass one of them as the label key.")


def check_layer(adata: AnnData, layer: str | None) -> None:
    """Raise ``KeyError`` if ``layer`` is not ``None``/``"X"`` and not in ``adata.layers``."""
    if layer not in (None, "X") and layer not in adata.layers:
        raise KeyError(f"layer {layer!r} not found. Available layers: {list(adata.layers)}; "
                       "pass one of them, or layer=None to use X.")


def _where(layer: str | None = None, use_rep: str | None = None) -> str:
    if use_rep is not None:
        return f"obsm[{use_rep!r}]"
    return "X" if layer in (None, "X") else f"layer {layer!r}"


def to_dense(X, dtype=np.float32) -> np.ndarray:
    """A dense ``dtype`` array from a numpy array, a scipy sparse matrix or a torch tensor."""
    if hasattr(X, "detach"):
        X = X.detach().cpu().numpy()
    if sp.issparse(X):
        X = X.toarray()
    return np.asarray(X, dtype=dtype)


def get_matrix(adata: AnnData, *, layer: str | None = None, use_rep: str | None = None,
               counts: bool = False, dense: bool = False, dtype=np.float32):
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
        Return a dense ``dtype`` array (:func:`to_dense`); otherwise the stored object as is
        (sparse stays sparse, no copy).

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
            raise KeyError(f"obsm[{use_rep!r}] not found. Available representations: "
                           f"{list(adata.obsm)}; compute the embedding first or pass one of them.")
        X = adata.obsm[use_rep]
    else:
        check_layer(adata, layer)
        X = adata.X if layer in (None, "X") else adata.layers[layer]
    if counts:
        check_counts(X, _where(layer, use_rep))
    return to_dense(X, dtype) if dense else X


def _values(X) -> np.ndarray:
    return X.data if sp.issparse(X) else np.asarray(X)


def check_finite(X, what: str = "X") -> None:
    """Raise ``ValueError`` if ``X`` holds NaN or infinite values."""
    v = _values(X)
    if not np.all(np.isfinite(v)):
        n = int((~np.isfinite(v)).sum())
        raise ValueError(f"{what} contains {n} NaN/inf values. Remove or impute them before "
                         "training (e.g. drop the affected cells or genes).")


def is_integer_counts(X, tol: float = COUNTS_TOL) -> bool:
    """True when every stored value is a non-negative integer (within ``tol``)."""
    v = _values(X)
    return bool(v.size == 0 or (v.min() >= 0 and np.abs(v - np.rint(v)).max() <= tol))


def check_counts(X, what: str = "X") -> None:
    """Raise ``ValueError`` unless ``X`` holds finite, non-negative integer counts."""
    check_finite(X, what)
    v = _values(X)
    if v.size and v.min() < 0:
        raise ValueError(f"{what} has negative values (min {v.min():.3g}) where raw counts are "
                         "required. Pass the raw-count layer (e.g. layer='counts' or "
                         "'spliced'), not scaled data.")
    if not is_integer_counts(X):
        frac = float(np.abs(v - np.rint(v)).max())
        raise ValueError(f"{what} holds non-integer values (largest distance from an integer "
                         f"{frac:.3g}) where raw counts are required: it looks normalised or "
                         "log-transformed. Pass the raw-count layer (e.g. layer='counts'), or "
                         "recover counts before calling this.")


def check_labels(adata: AnnData, key: str, min_cells: int = 2) -> pd.Series:
    """Validate a label column: ≥ 2 classes, each with ≥ ``min_cells`` cells, none missing."""
    check_obs_key(adata, key)
    labels = adata.obs[key]
    if labels.isna().any():
        raise ValueError(f"obs[{key!r}] has {int(labels.isna().sum())} missing labels. "
                         "Drop those cells (adata[adata.obs[key].notna()]) or fill them.")
    counts = labels.astype(str).value_counts()
    if len(counts) < 2:
        raise ValueError(f"obs[{key!r}] has {len(counts)} class; a classifier needs at least 2. "
                         "Choose another label key.")
    small = counts[counts < min_cells]
    if len(small):
        raise ValueError(f"obs[{key!r}] classes with fewer than {min_cells} cells: "
                         f"{small.to_dict()}. Drop or merge these classes before splitting.")
    return labels.astype(str).astype("category")
