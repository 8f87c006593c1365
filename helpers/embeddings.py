"""Cell embeddings behind one interface: scVI, a PCA baseline, scGPT, precomputed.

Every embedding is an :class:`Embedding` with

* ``name``  – e.g. ``"scvi"``, ``"pca"``, ``"scgpt"``, ``"obsm:X_foo"``;
* ``genes`` – the var names it reads, in input order;
* ``dim``   – the embedding size;
* ``encode(X_counts, batch_size=1024) -> (n, dim) float32`` – raw counts
  (dense numpy or scipy sparse, columns in ``genes`` order) to embeddings,
  batched and deterministic, so attribution can embed perturbed cells.

:func:`fit_embedding` builds one from an AnnData and writes it to ``.obsm``.

Methods
-------
``scvi``
    scvi-tools ``SCVI`` trained on raw counts (seeded through
    ``scvi.settings.seed``). ``encode`` is the posterior mean of q(z|x),
    computed directly with the module's encoder in torch, the same numbers as
    ``model.get_latent_representation()``. With ``output_dir`` the model is saved
    under ``output_dir/scvi_<hash>`` (hash of the settings, the data shape, the
    gene names and the total count) and reloaded when they match.
``pca``
    Baseline: counts → ``log1p(counts / total * 1e4)`` → PCA (``n_latent``
    components, centred, unscaled); ``encode`` applies the same transform.
``scgpt``
    Adapter to a pretrained scGPT model: needs the optional ``scgpt`` package and
    a weights folder with ``args.json``, ``best_model.pt`` and ``vocab.json``
    (``scgpt_dir=`` or the environment variable ``BOOK_SCGPT_DIR``).
``obsm:<key>``
    A precomputed embedding in ``adata.obsm[<key>]``. It cannot embed new or
    perturbed cells unless ``encoder=`` (a callable counts → embedding) is given.

AnnData keys written
--------------------
A fitted embedding applied unchanged (frozen) to other cells, genes aligned by name:
:func:`apply_embedding` (the counts it reads: :func:`aligned_counts`).

``adata.obsm[key_added]`` (default ``"X_<method>"``, e.g. ``X_scvi``, ``X_pca``,
``X_scgpt``; for ``obsm:<key>`` nothing unless ``key_added`` differs from ``<key>``)
and ``adata.uns["embedding"][key_added]`` = the settings; a call with another
``key_added`` leaves earlier ones alone. Read them back with :func:`get_embedding` and
:func:`get_params`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import anndata as ad
import numpy as np
import scipy.sparse as sp
import torch
from sklearn.decomposition import PCA
from torch import nn

from .data import get_matrix, to_dense
from .runtime import get_device


__all__ = [
    "Embedding",
    "ScviEmbedding",
    "PcaEmbedding",
    "ScgptEmbedding",
    "ObsmEmbedding",
    "fit_embedding",
    "fit_embeddings",
    "get_embedding",
    "get_params",
    "aligned_counts",
    "apply_embedding",
    "METHODS",
    "SCGPT_ENV",
]

METHODS = ("scvi", "pca", "scgpt", "obsm:<key>")
SCGPT_ENV = "BOOK_SCGPT_DIR"
SCGPT_FILES = ("args.json", "best_model.pt", "vocab.json")
TARGET_SUM = 1e4


# ----------------------------------------------------------------------------
# the interface
# ----------------------------------------------------------------------------
class Embedding:
    """A map from raw counts to a cell embedding.

    Subclasses implement ``_encode_batch(X: np.ndarray float32 (b, n_genes)) ->
    np.ndarray (b, dim)``; :meth:`encode` validates, densifies and batches.

    Attributes
    ----------
    name : str
    genes : list[str]
        Var names read by :meth:`encode`, in column order.
    dim : int
        Embedding size.
    key : str or None
        The ``.obsm`` key :func:`fit_embedding` wrote.
    settings : dict
        What :func:`fit_embedding` was called with (JSON-serialisable).
    """

    name: str = "embedding"

    def __init__(
        self, genes, dim: int, settings: dict | None = None, key: str | None = None
    ):
        self.genes = [str(g) for g in genes]
        self.dim = int(dim)
        self.settings = dict(settings or {})
        self.key = key

    def encode(self, X_counts, batch_size: int = 1024) -> np.ndarray:
        """Embed raw counts.

        Parameters
        ----------
        X_counts
            ``(n, len(genes))`` raw counts, dense numpy or scipy sparse, columns in
            :attr:`genes` order (perturbed counts are fine).
        batch_size
            Cells per forward pass.

        Returns
        -------
        ``(n, dim)`` float32 array.
        """
        if X_counts.ndim != 2 or X_counts.shape[1] != len(self.genes):
            raise ValueError(
                f"{self.name}: expected counts of shape (n_cells, {len(self.genes)}) "
                f"with columns in embedding.genes order, got shape {X_counts.shape}; "
                "subset/reorder with adata[:, embedding.genes]."
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        n = X_counts.shape[0]
        out = np.empty((n, self.dim), dtype=np.float32)
        for start in range(0, n, batch_size):
            xb = to_dense(X_counts[start : start + batch_size])
            out[start : start + xb.shape[0]] = self._encode_batch(xb)
        return out

    def _encode_batch(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode_swaps(
        self, X_base, rows, genes, values, batch_size: int = 4096
    ) -> np.ndarray:
        """Embed cells that differ from a base cell in one gene each (counterfactual
        occlusion).

        Row ``r`` of the result is ``encode(x)`` with ``x = X_base[rows[r]]`` and
        ``x[genes[r]] = values[r]``. This generic version builds the perturbed rows in
        batches and calls :meth:`encode`; embeddings whose first layer is linear
        override it.
        """
        X_base = to_dense(X_base)
        rows, genes = (
            np.asarray(rows, dtype=np.int64),
            np.asarray(genes, dtype=np.int64),
        )
        values = np.asarray(values, dtype=np.float32)
        out = np.empty((rows.size, self.dim), dtype=np.float32)
        for start in range(0, rows.size, batch_size):
            sl = slice(start, start + batch_size)
            R = X_base[rows[sl]]  # fancy indexing: a fresh copy
            R[np.arange(R.shape[0]), genes[sl]] = values[sl]
            out[sl] = self.encode(R, batch_size=batch_size)
        return out

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, n_genes={len(self.genes)}, "
            f"dim={self.dim})"
        )


# ----------------------------------------------------------------------------
# counts
# ----------------------------------------------------------------------------
def _data_fingerprint(adata, X) -> dict:
    genes_hash = hashlib.sha1(
        "\n".join(map(str, adata.var_names)).encode()
    ).hexdigest()[:12]
    total = float(X.sum())
    return dict(
        n_obs=int(adata.n_obs), n_vars=int(adata.n_vars), genes=genes_hash, total=total
    )


def _hash(d: dict) -> str:
    return hashlib.sha1(
        json.dumps(d, sort_keys=True, default=str).encode()
    ).hexdigest()[:12]


# ----------------------------------------------------------------------------
# scVI
# ----------------------------------------------------------------------------
@contextmanager
def _quiet_lightning():
    """Silence lightning's banner/tips and scvi's info messages inside the block."""
    names = [
        "lightning",
        "lightning.pytorch",
        "lightning.fabric",
        "pytorch_lightning",
        "scvi",
    ]
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        for msg in (
            ".*does not have many workers.*",
            ".*GPU available but not used.*",
            ".*TPU available.*",
            ".*LightningCLI.*",
            ".*Trainer.fit` stopped.*",
            ".*`max_epochs` was not set.*",
            ".*torch.cuda.amp.*",
            ".*LeafSpec.*",
            ".*litlogger.*",
            ".*smaller than the logging interval.*",
        ):
            warnings.filterwarnings("ignore", message=msg)
        try:
            yield
        finally:
            for lg, lv in zip(loggers, levels):
                lg.setLevel(lv)


class ScviEmbedding(Embedding):
    """scVI posterior mean of q(z|x), through the module's encoder.

    Parameters
    ----------
    model
        A trained ``scvi.model.SCVI``. Its encoder reads counts only (scvi-tools'
        default ``encode_covariates=False``), so cells are encoded without a
        batch label even when the model was trained with a ``batch_key``.
    genes
        The var names the model was trained on.
    """

    name = "scvi"

    def __init__(self, model, genes, settings=None, key=None):
        super().__init__(genes, model.module.n_latent, settings, key)
        self.model = model

    def _encode_batch(self, X: np.ndarray) -> np.ndarray:
        module = self.model.module
        module.eval()
        dev = next(module.parameters()).device
        with torch.inference_mode():
            x = torch.as_tensor(X, dtype=torch.float32, device=dev)
            b = torch.zeros((x.shape[0], 1), dtype=torch.float32, device=dev)
            out = module.inference(x=x, batch_index=b, cont_covs=None, cat_covs=None)
            qz = out["qz"]
            if getattr(module, "latent_distribution", "normal") == "ln":
                raise NotImplementedError(
                    "latent_distribution='ln' has no closed-form mean; train with the "
                    "default 'normal'."
                )
            return qz.loc.float().cpu().numpy()

    def _first_layer_route(self):
        """The encoder's pieces when it is ``Linear → elementwise ops → … → mean``, else
        None."""
        module = self.model.module
        enc = getattr(module, "z_encoder", None)
        fc = getattr(getattr(enc, "encoder", None), "fc_layers", None)
        if (
            fc is None
            or getattr(module, "encode_covariates", False)
            or getattr(enc.encoder, "n_cov", 0)
            or getattr(module, "latent_distribution", "normal") != "normal"
            or not isinstance(fc[0][0], nn.Linear)
        ):
            return None
        first = fc[0][0]
        tail = [m for m in list(fc[0])[1:] if m is not None]
        for layer in list(fc)[1:]:
            tail += [m for m in layer if m is not None]
        return (
            first,
            tail,
            enc.mean_encoder,
            bool(getattr(module, "log_variational", True)),
        )

    def encode_swaps(
        self, X_base, rows, genes, values, batch_size: int = 8192
    ) -> np.ndarray:
        """One-gene swaps through scVI's encoder at the cost of its small layers.

        The encoder's first layer is linear in ``log1p(counts)``, so changing gene ``l``
        from ``a`` to ``b`` changes that layer's pre-activation by
        ``W[:, l] · (log1p(b) − log1p(a))``: the base cell's pre-activation is computed
        once and each swap adds one column of ``W``, instead of a full
        ``genes × hidden`` product per perturbed cell. Batch norm (eval mode), ReLU and
        dropout (off in eval) act elementwise afterwards, so the result equals
        :meth:`encode` on the perturbed rows up to float32 rounding. Falls back to the
        generic route for encoders of another shape.
        """

        route = self._first_layer_route()
        if route is None:
            return super().encode_swaps(X_base, rows, genes, values, batch_size)
        first, tail, mean_encoder, log_input = route
        module = self.model.module
        module.eval()
        dev = first.weight.device
        X_base = to_dense(X_base)
        rows_t = torch.as_tensor(np.asarray(rows, dtype=np.int64), device=dev)
        genes_t = torch.as_tensor(np.asarray(genes, dtype=np.int64), device=dev)
        vals_t = torch.as_tensor(np.asarray(values, dtype=np.float32), device=dev)
        out = np.empty((rows_t.numel(), self.dim), dtype=np.float32)
        with torch.inference_mode():
            xb = torch.as_tensor(X_base, device=dev)
            xb = torch.log1p(xb) if log_input else xb
            h0 = first(xb)  # (n_base, hidden): each base cell once
            for start in range(0, rows_t.numel(), batch_size):
                r, g = (
                    rows_t[start : start + batch_size],
                    genes_t[start : start + batch_size],
                )
                v = vals_t[start : start + batch_size]
                new = torch.log1p(v) if log_input else v
                h = h0[r] + (new - xb[r, g])[:, None] * first.weight[:, g].T
                for m in tail:
                    h = m(h)
                out[start : start + r.numel()] = mean_encoder(h).float().cpu().numpy()
        return out


def _fit_scvi(
    adata,
    X,
    n_latent,
    output_dir,
    seed,
    max_epochs,
    device,
    progress,
    model_kwargs,
    train_kwargs,
    batch_key=None,
):
    import scvi

    if (model_kwargs or {}).get("encode_covariates"):
        raise ValueError(
            "encode_covariates=True makes scVI's encoder need batch labels, so "
            "encode() on perturbed counts could not run; leave it False (the default)."
        )
    settings = dict(
        method="scvi",
        n_latent=int(n_latent),
        seed=int(seed),
        max_epochs=max_epochs,
        model_kwargs=model_kwargs,
        train_kwargs=train_kwargs,
        scvi_version=scvi.__version__,
    )
    fingerprint = _data_fingerprint(adata, X)
    if batch_key is not None:
        if batch_key not in adata.obs:
            raise KeyError(
                f"batch_key {batch_key!r} is not an obs column (available: "
                f"{list(adata.obs.columns)})."
            )
        batches = adata.obs[batch_key].astype(str)
        settings["batch_key"] = batch_key
        fingerprint["batches"] = hashlib.sha1("\n".join(batches).encode()).hexdigest()[
            :12
        ]
    tag = _hash({**settings, **fingerprint})
    dev = get_device(device)
    accelerator = {"cuda": "gpu", "mps": "mps"}.get(dev.type, "cpu")

    # a minimal AnnData: scvi's setup_anndata must not write into the user's object
    Xc = (
        X.astype(np.float32)
        if not sp.issparse(X)
        else sp.csr_matrix(X, dtype=np.float32)
    )
    bare = ad.AnnData(X=Xc)
    bare.obs_names = adata.obs_names.astype(str)
    bare.var_names = adata.var_names.astype(str)
    if batch_key is not None:
        bare.obs["batch"] = batches.to_numpy()

    path = Path(output_dir) / f"scvi_{tag}" if output_dir is not None else None
    scvi.settings.seed = int(seed)
    with _quiet_lightning():
        scvi.model.SCVI.setup_anndata(
            bare, batch_key="batch" if batch_key is not None else None
        )
        if path is not None and (path / "model.pt").exists():
            model = scvi.model.SCVI.load(str(path), adata=bare, accelerator=accelerator)
            settings["loaded_from"] = str(path)
        else:
            model = scvi.model.SCVI(
                bare, n_latent=int(n_latent), **(model_kwargs or {})
            )
            model.train(
                max_epochs=max_epochs,
                accelerator=accelerator,
                devices=1,
                enable_progress_bar=progress,
                **(train_kwargs or {}),
            )
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                model.save(str(path), overwrite=True, save_anndata=False)
                (path / "settings.json").write_text(
                    json.dumps({**settings, **fingerprint}, indent=1, default=str)
                )
                settings["saved_to"] = str(path)
    settings["hash"] = tag
    return ScviEmbedding(model, bare.var_names, settings)


# ----------------------------------------------------------------------------
# PCA baseline
# ----------------------------------------------------------------------------
def _log1p_normalize(X: np.ndarray, target_sum: float = TARGET_SUM) -> np.ndarray:
    """``log1p(x / sum(x) * target_sum)`` per cell (cells with no counts stay 0)."""
    X = np.asarray(X, dtype=np.float32)
    lib = X.sum(axis=1, keepdims=True)
    return np.log1p(X * (target_sum / np.maximum(lib, 1e-12)))


class PcaEmbedding(Embedding):
    """PCA of log1p-normalised counts: ``(log1p(x/Σx·1e4) − mean) @ components.T``."""

    name = "pca"

    def __init__(
        self, components, mean, genes, target_sum=TARGET_SUM, settings=None, key=None
    ):
        components = np.asarray(components, dtype=np.float32)
        super().__init__(genes, components.shape[0], settings, key)
        self.components = components
        self.mean = np.asarray(mean, dtype=np.float32)
        self.target_sum = float(target_sum)

    def _encode_batch(self, X: np.ndarray) -> np.ndarray:
        return (_log1p_normalize(X, self.target_sum) - self.mean) @ self.components.T


def _fit_pca(adata, X, n_latent, seed):
    n, g = X.shape
    n_comp = int(min(n_latent, n - 1, g))
    if n_comp < n_latent:
        warnings.warn(
            f"pca: n_latent={n_latent} reduced to {n_comp} (data shape {X.shape})."
        )
    if sp.issparse(X):
        lib = np.asarray(X.sum(axis=1)).ravel()
        Xn = sp.diags(
            (TARGET_SUM / np.maximum(lib, 1e-12)).astype(np.float32)
        ) @ sp.csr_matrix(X, dtype=np.float32)
        Xn = Xn.log1p()
        Xn = Xn.toarray() if g <= 5000 else Xn
    else:
        Xn = _log1p_normalize(X)
    solver = "covariance_eigh" if g <= 5000 else "arpack"
    pca = PCA(n_components=n_comp, svd_solver=solver, random_state=seed)
    Z = pca.fit_transform(Xn).astype(np.float32)
    settings = dict(
        method="pca",
        n_latent=n_comp,
        seed=int(seed),
        target_sum=TARGET_SUM,
        svd_solver=solver,
        explained_variance_ratio=[float(v) for v in pca.explained_variance_ratio_],
    )
    emb = PcaEmbedding(
        pca.components_, pca.mean_, adata.var_names, TARGET_SUM, settings
    )
    return emb, Z


# ----------------------------------------------------------------------------
# scGPT (optional)
# ----------------------------------------------------------------------------
def _scgpt_missing(scgpt_dir) -> list[str]:
    missing = []
    if importlib.util.find_spec("scgpt") is None:
        missing.append("the `scgpt` package is not installed")
    if scgpt_dir is None:
        missing.append(f"no weights folder given (scgpt_dir=... or ${SCGPT_ENV})")
    else:
        d = Path(scgpt_dir)
        absent = [f for f in SCGPT_FILES if not (d / f).is_file()]
        if absent:
            missing.append(f"{d} lacks {', '.join(absent)}")
    return missing


def scgpt_requirements_message(scgpt_dir=None) -> str:
    """The error text for a missing scGPT setup (what to install, where the weights
    go)."""
    missing = _scgpt_missing(scgpt_dir)
    return (
        "scGPT embeddings are optional and not set up here ("
        + "; ".join(missing)
        + "). "
        "To use them: `pip install scgpt`, download a pretrained scGPT model folder "
        "(e.g. scGPT_human, linked from the scGPT README) containing args.json, "
        "best_model.pt and vocab.json, and pass its path as scgpt_dir=... or set the "
        f"environment variable {SCGPT_ENV}=/path/to/folder. Otherwise use "
        "method='scvi' or 'pca'."
    )


class ScgptEmbedding(
    Embedding
):  # pragma: no cover - needs the optional package and weights
    """scGPT cell embedding (the <cls> token, L2-normalised) of a pretrained model.

    Genes absent from the model's vocabulary are ignored. Gene names must be the
    vocabulary's symbols (human HGNC for the released models). ``encode`` seeds
    torch and numpy so scGPT's gene sampling (cells with more than
    ``max_length`` expressed genes) is reproducible.
    """

    name = "scgpt"

    def __init__(
        self,
        scgpt_dir,
        genes,
        device="auto",
        max_length=1200,
        settings=None,
        key=None,
        seed=0,
    ):
        from scgpt.model import TransformerModel
        from scgpt.tokenizer import GeneVocab
        from scgpt.utils import load_pretrained

        d = Path(scgpt_dir)
        vocab = GeneVocab.from_file(d / "vocab.json")
        for s in ("<pad>", "<cls>", "<eoc>"):
            if s not in vocab:
                vocab.append_token(s)
        vocab.set_default_index(vocab["<pad>"])
        cfg = json.loads((d / "args.json").read_text())
        genes = [str(g) for g in genes]
        in_vocab = np.array([g in vocab for g in genes])
        if not in_vocab.any():
            raise ValueError(
                "scgpt: none of the genes is in the model's vocabulary; scGPT's "
                "released models use human gene symbols (for mouse data, map orthologs "
                "or upper-case symbols first)."
            )
        self.dev = get_device(device)
        model = TransformerModel(
            ntoken=len(vocab),
            d_model=cfg["embsize"],
            nhead=cfg["nheads"],
            d_hid=cfg["d_hid"],
            nlayers=cfg["nlayers"],
            nlayers_cls=cfg.get("n_layers_cls", 3),
            n_cls=1,
            vocab=vocab,
            dropout=cfg.get("dropout", 0.2),
            pad_token=cfg.get("pad_token", "<pad>"),
            pad_value=cfg.get("pad_value", -2),
            do_mvc=True,
            do_dab=False,
            use_batch_labels=False,
            domain_spec_batchnorm=False,
            explicit_zero_prob=False,
            use_fast_transformer=False,
            pre_norm=False,
        )
        load_pretrained(
            model, torch.load(d / "best_model.pt", map_location=self.dev), verbose=False
        )
        model.to(self.dev).eval()
        super().__init__(genes, cfg["embsize"], settings, key)
        self.model, self.vocab, self.cfg = model, vocab, cfg
        self.cfg.setdefault("pad_token", "<pad>")
        self.cfg.setdefault("pad_value", -2)
        self.in_vocab = in_vocab
        self.gene_ids = np.array(
            vocab([g for g, ok in zip(genes, in_vocab) if ok]), dtype=int
        )
        self.max_length, self.seed = int(max_length), int(seed)

    def _encode_batch(self, X: np.ndarray) -> np.ndarray:
        from scgpt.tasks.cell_emb import get_batch_cell_embeddings

        torch.manual_seed(self.seed)
        np.random.seed(self.seed)
        sub = ad.AnnData(X=X[:, self.in_vocab])
        return get_batch_cell_embeddings(
            sub,
            cell_embedding_mode="cls",
            model=self.model,
            vocab=self.vocab,
            max_length=self.max_length,
            batch_size=min(64, X.shape[0]),
            model_configs=self.cfg,
            gene_ids=self.gene_ids,
            use_batch_labels=False,
        ).astype(np.float32)


# ----------------------------------------------------------------------------
# precomputed
# ----------------------------------------------------------------------------
class ObsmEmbedding(Embedding):
    """A precomputed embedding; encodes new counts only through ``encoder``."""

    def __init__(self, key, genes, dim, encoder: Callable | None = None, settings=None):
        super().__init__(genes, dim, settings, key)
        self.name = f"obsm:{key}"
        self.encoder = encoder

    def _encode_batch(self, X: np.ndarray) -> np.ndarray:
        if self.encoder is None:
            raise RuntimeError(
                f"{self.name} is a precomputed embedding: it cannot embed new or "
                "perturbed cells (needed for attribution). Pass encoder=<callable "
                "counts -> embedding> to fit_embedding, or use an embedding with a "
                "model (method='scvi' or 'pca')."
            )
        Z = np.asarray(self.encoder(X), dtype=np.float32)
        if Z.shape != (X.shape[0], self.dim):
            raise ValueError(
                f"{self.name}: encoder returned shape {Z.shape}, expected "
                f"{(X.shape[0], self.dim)}."
            )
        return Z


# ----------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------
def fit_embedding(
    adata,
    method: str,
    *,
    layer: str | None = "counts",
    n_latent: int = 50,
    output_dir=None,
    seed: int = 0,
    max_epochs: int | None = None,
    device="auto",
    key_added: str | None = None,
    progress: bool = True,
    scgpt_dir=None,
    encoder: Callable | None = None,
    model_kwargs: dict | None = None,
    train_kwargs: dict | None = None,
    batch_key: str | None = None,
) -> Embedding:
    """Fit (or load) an embedding on ``adata`` and write ``adata.obsm[key_added]``.

    Parameters
    ----------
    adata
        Cells x genes, raw counts in ``adata.layers[layer]`` (``adata.X`` when
        ``layer=None``); not needed for ``obsm:<key>``.
    method
        ``"scvi"``, ``"pca"``, ``"scgpt"`` or ``"obsm:<key>"``.
    n_latent
        Embedding size (scVI latent size, number of PCs); the paper's scVI uses 50.
    output_dir
        scVI only: the model is saved to ``output_dir/scvi_<hash>`` and reused
        when settings and data match. ``None``: train every time, save nothing.
    seed
        ``scvi.settings.seed`` for scVI, ``random_state`` for PCA.
    max_epochs
        scVI epochs (``None``: scvi-tools' heuristic, 400 for < 20,000 cells).
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``.
    key_added
        ``.obsm`` key; default ``"X_<method>"`` (for ``obsm:<key>``: ``<key>``).
    progress
        Show scVI's training progress bar.
    scgpt_dir
        scGPT weights folder (``args.json``, ``best_model.pt``, ``vocab.json``);
        default ``$BOOK_SCGPT_DIR``.
    encoder
        ``obsm:<key>`` only: callable ``counts (n, n_genes) -> (n, dim)`` used by
        ``encode``.
    model_kwargs, train_kwargs
        scVI only: passed to ``scvi.model.SCVI(...)`` and ``.train(...)`` (e.g.
        ``dict(batch_size=256)``); part of the cache hash.
    batch_key
        scVI only: an ``adata.obs`` column of batches (datasets, donors). scVI's decoder
        is conditioned on it, so the latent space is corrected for batch; its encoder,
        with scvi-tools' default ``encode_covariates=False``, still reads counts alone,
        so ``encode`` (and attribution through it) needs no batch label. Part of the
        cache hash.

    Returns
    -------
    Embedding
        With ``.key`` the obsm key written.

    Raises
    ------
    KeyError
        The layer or the ``obsm`` key does not exist (:func:`helpers.data.get_matrix`;
        the message lists what exists).
    ValueError
        Unknown method; values that are not raw counts (the message names the
        matrix and the fix).
    RuntimeError
        ``scgpt`` without the package or the weights (message says what to
        install and where to put the weights).
    """
    if not isinstance(method, str):
        raise ValueError(f"method must be a string, one of {METHODS}, got {method!r}.")
    if batch_key is not None and method != "scvi":
        raise ValueError(
            f"batch_key is an scVI option; method={method!r} has no batch covariate. "
            "Pass batch_key=None, or correct the batches before embedding."
        )
    if method.startswith("obsm:"):
        key = method.split(":", 1)[1]
        Z = get_matrix(adata, use_rep=key, dense=True)
        key_added = key_added or key
        emb = ObsmEmbedding(
            key,
            adata.var_names,
            Z.shape[1],
            encoder,
            dict(method=method, n_latent=int(Z.shape[1])),
        )
        if key_added != key:
            adata.obsm[key_added] = Z
    elif method == "scgpt":
        scgpt_dir = scgpt_dir or os.environ.get(SCGPT_ENV)
        if _scgpt_missing(scgpt_dir):
            raise RuntimeError(scgpt_requirements_message(scgpt_dir))
        X = get_matrix(adata, layer=layer, counts=True)  # pragma: no cover
        emb = ScgptEmbedding(
            scgpt_dir,
            adata.var_names,
            device=device,
            seed=seed,  # pragma: no cover
            settings=dict(method="scgpt", scgpt_dir=str(scgpt_dir), seed=int(seed)),
        )
        Z = emb.encode(X)  # pragma: no cover
        key_added = key_added or "X_scgpt"
        adata.obsm[key_added] = Z
    elif method == "scvi":
        X = get_matrix(adata, layer=layer, counts=True)
        emb = _fit_scvi(
            adata,
            X,
            n_latent,
            output_dir,
            seed,
            max_epochs,
            device,
            progress,
            model_kwargs,
            train_kwargs,
            batch_key,
        )
        key_added = key_added or "X_scvi"
        adata.obsm[key_added] = emb.encode(X)
    elif method == "pca":
        X = get_matrix(adata, layer=layer, counts=True)
        emb, Z = _fit_pca(adata, X, n_latent, seed)
        key_added = key_added or "X_pca"
        adata.obsm[key_added] = Z
    else:
        raise ValueError(
            f"Unknown embedding method {method!r}; choose one of {METHODS}."
        )
    emb.key = key_added
    emb.settings.setdefault("layer", layer)
    uns = adata.uns.setdefault("embedding", {})
    uns[key_added] = _h5ad_safe(emb.settings)
    return emb


def _h5ad_safe(d: dict) -> dict:
    """JSON round-trip without ``None`` values (h5ad cannot store ``None``)."""

    def drop(x):
        if isinstance(x, dict):
            return {k: drop(v) for k, v in x.items() if v is not None}
        return x

    return drop(json.loads(json.dumps(d, default=str)))


def get_params(adata, *, key: str = "X_scvi") -> dict:
    """The settings :func:`fit_embedding` stored for ``key_added=key``."""
    params = adata.uns.get("embedding", {})
    if key not in params:
        raise KeyError(
            f"adata.uns['embedding'] has no {key!r} (available: "
            f"{list(params)}); run helpers.embeddings.fit_embedding(adata, "
            "method, key_added=...)."
        )
    return params[key]


def get_embedding(adata, *, key: str = "X_scvi") -> np.ndarray:
    """The ``(n_obs, dim)`` matrix that :func:`fit_embedding` wrote to ``key``."""
    get_params(adata, key=key)
    return get_matrix(adata, use_rep=key, dense=True)


def fit_embeddings(adata, methods, **kwargs) -> dict:
    """:func:`fit_embedding` with each of ``methods`` (same ``kwargs``), in order.

    Returns ``{method: (n_obs, dim) matrix}`` (each also written to ``adata.obsm``).
    """
    return {m: adata.obsm[fit_embedding(adata, m, **kwargs).key] for m in methods}


def aligned_counts(adata, embedding: Embedding, *, layer: str | None = "counts"):
    """The raw counts of ``adata`` over ``embedding.genes``, columns in that order.

    For an embedding fitted on other cells (a frozen model): genes are matched by
    name, genes ``adata`` has beyond the model's are left out.

    Raises
    ------
    ValueError
        ``adata`` lacks some of the model's genes (the message counts them, names a
        few and says how to fix it), or the values are not raw counts.
    KeyError
        ``layer`` does not exist.
    """
    names = adata.var_names.astype(str)
    if not names.is_unique:
        raise ValueError(
            "adata.var_names are not unique; run "
            "adata.var_names_make_unique() before applying a model that "
            "reads genes by name."
        )
    have = set(names)
    missing = [g for g in embedding.genes if g not in have]
    if missing:
        raise ValueError(
            f"adata lacks {len(missing)} of the {len(embedding.genes)} genes the "
            f"{embedding.name} model reads (e.g. {missing[:5]}); a frozen model needs "
            "every one of its genes. Fit the model on genes all datasets share "
            "(helpers.stability.shared_genes) or add the missing genes as zeros on "
            "purpose."
        )
    idx = names.get_indexer(embedding.genes)
    return get_matrix(adata, layer=layer, counts=True)[:, idx]


def apply_embedding(
    adata,
    embedding: Embedding,
    *,
    layer: str | None = "counts",
    key_added: str | None = None,
) -> np.ndarray:
    """Embed ``adata`` with an embedding fitted on other cells, unchanged (frozen).

    The nearest thing to a pretrained foundation model: the model is not updated on
    ``adata``; its genes are aligned by name (:func:`aligned_counts`) and its
    ``encode`` maps the counts to the space it learned elsewhere.

    Writes ``adata.obsm[key_added]`` (default ``"X_<name>"``) and
    ``adata.uns["embedding"][key_added]`` (the model's settings with ``frozen=True``)
    and returns the ``(n_obs, dim)`` matrix.
    """
    Z = embedding.encode(aligned_counts(adata, embedding, layer=layer))
    key_added = key_added or f"X_{embedding.name}"
    adata.obsm[key_added] = Z
    uns = adata.uns.setdefault("embedding", {})
    uns[key_added] = _h5ad_safe({**embedding.settings, "frozen": True, "layer": layer})
    return Z
