"""Top-K sparse autoencoders: decompose cell embeddings into sparse concepts.

The architecture and training recipe follow Gao et al. (2024), *Scaling and
evaluating sparse autoencoders*, as used on single-cell embeddings by the paper
*Discovering interpretable biological concepts in single-cell RNA-seq foundation
models* (Table 3: batch size 1024, ``aux_k`` 512, learning rate ~1e-4):

.. math::

    \\text{pre} = W_{enc}(z - b_{pre}) + b_{enc}, \\quad
    a = \\mathrm{ReLU}(\\mathrm{TopK}_k(\\text{pre})), \\quad
    \\hat z = W_{dec}\\, a + b_{pre}

* ``b_pre`` (pre-encoder bias) is subtracted before the encoder and added back
  after the decoder; :func:`train_sae` initialises it to the data mean (or the
  geometric median).
* The decoder weight ``W_dec`` is ``d x c``; its columns are the concept
  *atoms* and are kept at unit norm: before each optimiser step the gradient
  component parallel to each column is removed, after the step every column
  is renormalised.
* Tied initialisation: the encoder weight starts as the decoder's transpose.
* Auxiliary Top-K loss on dead latents: a latent is *dead* when it has not
  been active on any of the last ``dead_after`` training samples. The residual
  ``e = z - ẑ`` is reconstructed from the ``k_aux`` largest pre-activations
  among dead latents, ``ê = W_dec a_aux``, and ``aux_coef * ||e - ê||² / ||e||²``
  is added to the loss. It gives dead latents a gradient and revives them.

The reconstruction term is the normalised MSE ``mean((z - ẑ)²) / mean((z - z̄)²)``
with ``z̄`` the per-feature mean of the training split, i.e. ``1 - R²`` on the
batch, so the learning rate does not depend on the scale of the embedding.

AnnData keys written by :func:`annotate`
---------------------------------------
``adata.obsm["sae_concepts"]``
    ``(n_obs, c)`` concept activations (dense float32, or CSR when ``sparse=True``).
``adata.uns["sae"]``
    dict: ``use_rep``, ``d``, ``c``, ``k``, ``k_aux``, the training settings
    (``train``) and :func:`sae_metrics` on the annotated cells (``metrics``).
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import nn
from tqdm.auto import tqdm

from .runtime import get_device


__all__ = [
    "TopKSAE",
    "train_sae",
    "sae_metrics",
    "scale_sweep",
    "annotate",
    "reconstruction_r2",
    "sae_loss",
    "geometric_median",
]


# ----------------------------------------------------------------------------
# model
# ----------------------------------------------------------------------------
class TopKSAE(nn.Module):
    """Top-K sparse autoencoder with a pre-encoder bias and unit-norm atoms.

    Parameters
    ----------
    d
        Embedding dimension (input and output size).
    c
        Number of concepts (latents, dictionary size).
    k
        Number of latents kept per sample (``1 <= k <= c``). With ``k == c``
        the model is a plain ReLU autoencoder.
    k_aux
        Number of dead latents used by the auxiliary loss; default ``d // 2``
        (at least 1, at most ``c``).

    Attributes
    ----------
    b_pre : nn.Parameter ``(d,)``
    encoder : nn.Linear ``d -> c`` (weight ``c x d``, with bias)
    decoder : nn.Linear ``c -> d`` without bias (weight ``d x c``; columns = atoms)
    samples_since_active : buffer ``(c,)`` int64
        Training samples seen since each latent was last active (updated by
        :meth:`update_activity`, used by :meth:`dead_mask`).

    Notes
    -----
    :meth:`encode`, :meth:`decode` and :meth:`forward` accept a tensor (then
    return tensors, differentiable) or a numpy/scipy array (then return numpy
    float32 arrays, computed without gradients in batches on the model's
    device).
    """

    def __init__(self, d: int, c: int, k: int, k_aux: int | None = None):
        super().__init__()
        d, c, k = int(d), int(c), int(k)
        if d < 1 or c < 1:
            raise ValueError(f"d and c must be positive, got d={d}, c={c}.")
        if not 1 <= k <= c:
            raise ValueError(f"k must be in [1, c={c}], got k={k}; choose fewer active concepts.")
        if k_aux is None:
            k_aux = max(1, d // 2)
        self.d, self.c, self.k, self.k_aux = d, c, k, int(min(max(1, k_aux), c))
        self.b_pre = nn.Parameter(torch.zeros(d))
        self.encoder = nn.Linear(d, c, bias=True)
        self.decoder = nn.Linear(c, d, bias=False)
        self.register_buffer("samples_since_active", torch.zeros(c, dtype=torch.long))
        self.reset_parameters()
        self.train_settings: dict = {}

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random unit-norm atoms, encoder = decoder transpose, zero biases."""
        w = torch.randn(self.d, self.c)
        self.decoder.weight.copy_(w / w.norm(dim=0, keepdim=True).clamp_min(1e-12))
        self.encoder.weight.copy_(self.decoder.weight.t())
        self.encoder.bias.zero_()
        self.b_pre.zero_()
        self.samples_since_active.zero_()

    # -- unit-norm constraint -------------------------------------------------
    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale every decoder column (atom) to unit L2 norm."""
        w = self.decoder.weight
        w.div_(w.norm(dim=0, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Remove from the decoder gradient its component along each column."""
        w, g = self.decoder.weight, self.decoder.weight.grad
        if g is None:
            return
        g.sub_(w * (w * g).sum(dim=0, keepdim=True))

    # -- forward pieces -------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.b_pre.device

    def pre_activations(self, z: torch.Tensor) -> torch.Tensor:
        """``W_enc (z - b_pre) + b_enc``, shape ``(n, c)``."""
        return self.encoder(z - self.b_pre)

    def _topk_relu(self, pre: torch.Tensor) -> torch.Tensor:
        if self.k == self.c:
            return torch.relu(pre)
        vals, idx = pre.topk(self.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))

    def _encode_t(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre = self.pre_activations(z)
        return self._topk_relu(pre), pre

    def _decode_t(self, acts: torch.Tensor) -> torch.Tensor:
        return self.decoder(acts) + self.b_pre

    def encode(self, z, batch_size: int = 8192):
        """Concept activations ``ReLU(TopK(W_enc(z - b_pre) + b_enc))``, ``(n, c)``."""
        if torch.is_tensor(z):
            return self._encode_t(z)[0]
        return self._numpy_apply(z, lambda t: self._encode_t(t)[0], batch_size)

    def decode(self, acts, batch_size: int = 8192):
        """Reconstruction ``W_dec acts + b_pre``, ``(n, d)``."""
        if torch.is_tensor(acts):
            return self._decode_t(acts)
        return self._numpy_apply(acts, self._decode_t, batch_size)

    def forward(self, z):
        """Return ``(z_hat, acts, pre_acts)``."""
        if not torch.is_tensor(z):
            d, c = self.d, self.c
            both = self._numpy_apply(z, lambda t: torch.cat(self.forward(t), dim=1), 8192)
            return both[:, :d], both[:, d : d + c], both[:, d + c :]
        acts, pre = self._encode_t(z)
        return self._decode_t(acts), acts, pre

    @torch.no_grad()
    def _numpy_apply(self, x, fn, batch_size: int) -> np.ndarray:
        n = x.shape[0]
        out = []
        for start in range(0, n, batch_size):
            xb = x[start : start + batch_size]
            xb = xb.toarray() if sp.issparse(xb) else np.asarray(xb)
            t = torch.as_tensor(xb, dtype=torch.float32, device=self.device)
            out.append(fn(t).float().cpu().numpy())
        if not out:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(out, axis=0).astype(np.float32, copy=False)

    # -- dictionary and dead latents -----------------------------------------
    @property
    def dictionary(self) -> np.ndarray:
        """The ``c x d`` concept atoms (unit-norm rows), as numpy float32."""
        return self.decoder.weight.detach().t().float().cpu().numpy().copy()

    @torch.no_grad()
    def update_activity(self, acts: torch.Tensor) -> None:
        """Advance the dead-latent counters by one batch of activations."""
        fired = (acts > 0).any(dim=0)
        self.samples_since_active.add_(acts.shape[0])
        self.samples_since_active[fired] = 0

    def dead_mask(self, dead_after: int) -> torch.Tensor:
        """Boolean ``(c,)``: latents inactive on the last ``dead_after`` samples."""
        return self.samples_since_active >= int(dead_after)

    def aux_activations(self, pre: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
        """``ReLU(TopK_{k_aux})`` of the pre-activations restricted to dead latents."""
        n_dead = int(dead.sum())
        if n_dead == 0:
            return torch.zeros_like(pre)
        k_aux = min(self.k_aux, n_dead)
        masked = pre.masked_fill(~dead, float("-inf"))
        vals, idx = masked.topk(k_aux, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))

    def extra_repr(self) -> str:
        return f"d={self.d}, c={self.c}, k={self.k}, k_aux={self.k_aux}"


# ----------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------
def reconstruction_r2(Z: np.ndarray, Z_hat: np.ndarray) -> float:
    """R² = 1 − Σ‖z − ẑ‖² / Σ‖z − z̄‖², with z̄ the per-feature mean of ``Z``."""
    Z = np.asarray(Z, dtype=np.float64)
    Z_hat = np.asarray(Z_hat, dtype=np.float64)
    ss_res = float(((Z - Z_hat) ** 2).sum())
    ss_tot = float(((Z - Z.mean(axis=0, keepdims=True)) ** 2).sum())
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


def _as_embedding(Z, what: str = "Z") -> np.ndarray:
    if sp.issparse(Z):
        Z = Z.toarray()
    Z = np.asarray(Z, dtype=np.float32)
    if Z.ndim != 2 or Z.shape[0] < 2:
        raise ValueError(
            f"{what} must be a 2-D (cells x dims) matrix with at least 2 cells, got shape {Z.shape}."
        )
    if not np.isfinite(Z).all():
        raise ValueError(
            f"{what} contains NaN or infinite values; drop those cells or recompute the embedding."
        )
    return Z


def sae_metrics(model: TopKSAE, Z, batch_size: int = 8192) -> dict:
    """Reconstruction and sparsity metrics of an SAE on embeddings ``Z``.

    Parameters
    ----------
    model
        A trained :class:`TopKSAE`.
    Z
        ``(n, d)`` embeddings.

    Returns
    -------
    dict with

    ``r2``
        R² = 1 − Σᵢ‖zᵢ − ẑᵢ‖² / Σᵢ‖zᵢ − z̄‖², sums over cells and dimensions,
        ``z̄`` the per-feature (per-dimension) mean of ``Z``: the share of the
        embedding's total variance that the reconstruction explains.
    ``mse``
        Mean squared error per entry.
    ``l0``
        Mean number of non-zero concept activations per cell (≤ k).
    ``n_active`` / ``n_dead``
        Concepts active on at least one cell of ``Z`` / on none of them.
    ``frac_active``, ``n_cells``, ``c``, ``k``.
    """
    Z = _as_embedding(Z)
    if Z.shape[1] != model.d:
        raise ValueError(f"Z has {Z.shape[1]} dimensions but the SAE expects d={model.d}.")
    was_training = model.training
    model.eval()
    acts = model.encode(Z, batch_size=batch_size)
    Z_hat = model.decode(acts, batch_size=batch_size)
    model.train(was_training)
    nnz = acts > 0
    n_active = int(nnz.any(axis=0).sum())
    return {
        "r2": reconstruction_r2(Z, Z_hat),
        "mse": float(((Z.astype(np.float64) - Z_hat) ** 2).mean()),
        "l0": float(nnz.sum(axis=1).mean()),
        "n_active": n_active,
        "n_dead": int(model.c - n_active),
        "frac_active": n_active / model.c,
        "n_cells": int(Z.shape[0]),
        "c": model.c,
        "k": model.k,
    }


# ----------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------
def geometric_median(X: np.ndarray, n_iter: int = 100, tol: float = 1e-6) -> np.ndarray:
    """Geometric median of the rows of ``X`` (Weiszfeld iterations)."""
    X = np.asarray(X, dtype=np.float64)
    y = X.mean(axis=0)
    for _ in range(n_iter):
        dist = np.linalg.norm(X - y, axis=1).clip(min=1e-12)
        w = 1.0 / dist
        y_new = (w[:, None] * X).sum(axis=0) / w.sum()
        if np.linalg.norm(y_new - y) <= tol * max(1.0, np.linalg.norm(y)):
            return y_new
        y = y_new
    return y


def sae_loss(
    model: TopKSAE,
    z: torch.Tensor,
    dead: torch.Tensor | None = None,
    aux_coef: float = 1 / 32,
    scale: float = 1.0,
):
    """Training objective on one batch.

    ``loss = scale * mean((z - ẑ)²) + aux_coef * ||e - ê||² / ||e||²`` where
    ``e = z - ẑ`` (detached) and ``ê = W_dec ReLU(TopK_{k_aux}(pre[dead]))``;
    the auxiliary term is 0 when no latent is dead or ``aux_coef == 0``.

    Returns
    -------
    ``(loss, recon, aux, acts)`` tensors (``acts`` the batch's activations).
    """
    z_hat, acts, pre = model(z)
    recon = ((z - z_hat) ** 2).mean() * scale
    aux = torch.zeros((), device=z.device)
    if aux_coef > 0 and dead is not None and bool(dead.any()):
        resid = (z - z_hat).detach()
        e_hat = model.decoder(model.aux_activations(pre, dead))
        aux = ((resid - e_hat) ** 2).sum() / (resid**2).sum().clamp_min(1e-12)
        aux = torch.nan_to_num(aux, nan=0.0)
    return recon + aux_coef * aux, recon, aux, acts


def train_sae(
    Z,
    c: int,
    k: int,
    lr: float = 1e-4,
    epochs: int = 100,
    batch_size: int = 1024,
    seed: int = 0,
    device: str | torch.device = "auto",
    k_aux: int | None = None,
    aux_coef: float = 1 / 32,
    dead_after: int | None = None,
    val_fraction: float = 0.1,
    b_pre_init: str = "mean",
    progress: bool = True,
) -> tuple[TopKSAE, pd.DataFrame]:
    """Train a :class:`TopKSAE` on embeddings ``Z`` with Adam.

    Parameters
    ----------
    Z
        ``(n, d)`` embeddings (numpy or scipy sparse), finite.
    c, k, k_aux
        See :class:`TopKSAE` (``k_aux`` default ``d // 2``).
    lr, epochs, batch_size
        Adam learning rate, passes over the training split, minibatch size.
    seed
        Seeds the initialisation, the train/validation split and the batch
        order; on CPU two runs with the same seed give identical weights.
    device
        ``"auto"`` (GPU when available), ``"cpu"``, ``"cuda"``...
    aux_coef
        Weight of the auxiliary dead-latent loss (Gao et al.: 1/32); 0 disables it.
    dead_after
        A latent is dead when inactive on the last ``dead_after`` training
        samples. Default: the size of the training split (one epoch).
    val_fraction
        Share of cells held out to report the validation R² per epoch
        (0 to train on all cells).
    b_pre_init
        ``"mean"`` or ``"median"`` (geometric median) of the training split.
    progress
        Show a tqdm bar over epochs.

    Returns
    -------
    model
        The trained SAE in eval mode; ``model.train_settings`` holds the settings.
    history
        One row per epoch: ``epoch``, ``loss``, ``recon`` (normalised MSE =
        1 − batch R²), ``aux`` (auxiliary loss), ``val_r2`` (NaN without a
        validation split), ``n_dead`` (by the ``dead_after`` counter), ``seconds``
        (cumulative).
    """
    Z = _as_embedding(Z)
    n, d = Z.shape
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs}, {batch_size}.")
    if b_pre_init not in ("mean", "median"):
        raise ValueError(f"b_pre_init must be 'mean' or 'median', got {b_pre_init!r}.")
    dev = get_device(device)

    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and n - n_val < 1:
        raise ValueError(f"val_fraction={val_fraction} leaves no training cells out of {n}.")
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    Z_train, Z_val = Z[train_idx], Z[val_idx]
    n_train = len(train_idx)
    dead_after = n_train if dead_after is None else int(dead_after)

    torch.manual_seed(seed)
    model = TopKSAE(d, c, k, k_aux=k_aux)
    center = Z_train.mean(axis=0) if b_pre_init == "mean" else geometric_median(Z_train)
    with torch.no_grad():
        model.b_pre.copy_(torch.as_tensor(center, dtype=torch.float32))
    model.to(dev)
    model.train()

    var = float(((Z_train - Z_train.mean(axis=0)) ** 2).mean())
    scale = 1.0 / var if var > 0 else 1.0
    X = torch.as_tensor(Z_train, device=dev)
    X_val = torch.as_tensor(Z_val, device=dev) if n_val else None
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)

    rows = []
    t0 = time.perf_counter()
    bar = tqdm(range(1, epochs + 1), desc=f"SAE c={c} k={k}", disable=not progress, leave=False)
    for epoch in bar:
        order = torch.randperm(n_train, generator=gen).to(dev)
        tot = rec_tot = aux_tot = 0.0
        n_seen = 0
        for start in range(0, n_train, batch_size):
            zb = X[order[start : start + batch_size]]
            loss, recon, aux, acts = sae_loss(
                model, zb, model.dead_mask(dead_after), aux_coef=aux_coef, scale=scale
            )
            aux_val = float(aux.detach())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            model.project_decoder_grad()
            opt.step()
            model.normalize_decoder()
            model.update_activity(acts.detach())
            m = zb.shape[0]
            n_seen += m
            tot += float(loss.detach()) * m
            rec_tot += float(recon.detach()) * m
            aux_tot += aux_val * m
        val_r2 = float("nan")
        if X_val is not None:
            with torch.no_grad():
                zh = model(X_val)[0]
                val_r2 = 1.0 - float(((X_val - zh) ** 2).sum()) / float(
                    ((X_val - X_val.mean(0)) ** 2).sum().clamp_min(1e-12)
                )
        n_dead = int(model.dead_mask(dead_after).sum())
        rows.append(
            dict(
                epoch=epoch,
                loss=tot / n_seen,
                recon=rec_tot / n_seen,
                aux=aux_tot / n_seen,
                val_r2=val_r2,
                n_dead=n_dead,
                seconds=time.perf_counter() - t0,
            )
        )
        if progress:
            bar.set_postfix(loss=f"{tot / n_seen:.4f}", val_r2=f"{val_r2:.3f}", dead=n_dead)
    model.eval()
    model.train_settings = dict(
        c=int(c), k=int(k), k_aux=model.k_aux, lr=float(lr), epochs=int(epochs),
        batch_size=int(batch_size), seed=int(seed), aux_coef=float(aux_coef),
        dead_after=int(dead_after), val_fraction=float(val_fraction), b_pre_init=b_pre_init,
        n_train=int(n_train), n_val=int(n_val), device=str(dev),
        seconds=float(time.perf_counter() - t0),
    )
    history = pd.DataFrame(rows)
    return model, history


def scale_sweep(
    Z,
    configs: Sequence[tuple] = ((200, 3), (500, 8), (1000, 16)),
    lr: float = 1e-4,
    epochs: int = 100,
    batch_size: int = 1024,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = True,
    return_models: bool = False,
    **train_kwargs,
):
    """Train one SAE per ``(c, k)`` (or ``(c, k, lr)``) and tabulate its metrics.

    In the spirit of the paper's Table 3. Metrics are computed on all cells of
    ``Z`` with :func:`sae_metrics`.

    Returns
    -------
    DataFrame with columns ``c``, ``k``, ``lr``, ``epochs``, ``r2``, ``val_r2``
    (last epoch), ``l0``, ``n_active``, ``n_dead``, ``frac_active``, ``seconds``;
    with ``return_models=True`` also a dict ``{(c, k): model}``.
    """
    Z = _as_embedding(Z)
    rows, models = [], {}
    for cfg in configs:
        if len(cfg) not in (2, 3):
            raise ValueError(f"each config must be (c, k) or (c, k, lr), got {cfg!r}.")
        c, k = int(cfg[0]), int(cfg[1])
        lr_i = float(cfg[2]) if len(cfg) == 3 else lr
        t0 = time.perf_counter()
        model, hist = train_sae(
            Z, c, k, lr=lr_i, epochs=epochs, batch_size=batch_size, seed=seed,
            device=device, progress=progress, **train_kwargs,
        )
        seconds = time.perf_counter() - t0
        m = sae_metrics(model, Z)
        rows.append(
            dict(
                c=c, k=k, lr=lr_i, epochs=epochs, r2=m["r2"], val_r2=float(hist["val_r2"].iloc[-1]),
                l0=m["l0"], n_active=m["n_active"], n_dead=m["n_dead"],
                frac_active=m["frac_active"], seconds=seconds,
            )
        )
        models[(c, k)] = model
    table = pd.DataFrame(rows)
    return (table, models) if return_models else table


# ----------------------------------------------------------------------------
# AnnData
# ----------------------------------------------------------------------------
def annotate(
    adata,
    model: TopKSAE,
    use_rep: str,
    key_added: str = "sae_concepts",
    sparse: bool = False,
    batch_size: int = 8192,
):
    """Write concept activations of the embedding ``adata.obsm[use_rep]``.

    Writes ``adata.obsm[key_added]`` (``(n_obs, c)``, dense float32, or CSR
    when ``sparse=True``) and ``adata.uns["sae"]`` (settings and
    :func:`sae_metrics` on these cells). Returns ``adata``.
    """
    if use_rep not in adata.obsm:
        raise KeyError(
            f"adata.obsm has no {use_rep!r} (available: {list(adata.obsm)}); compute the "
            "embedding first, e.g. helpers.embeddings.fit_embedding(adata, 'scvi')."
        )
    Z = _as_embedding(adata.obsm[use_rep], f"adata.obsm[{use_rep!r}]")
    if Z.shape[1] != model.d:
        raise ValueError(
            f"adata.obsm[{use_rep!r}] has {Z.shape[1]} dimensions but the SAE was trained on d={model.d}."
        )
    acts = model.encode(Z, batch_size=batch_size)
    adata.obsm[key_added] = sp.csr_matrix(acts) if sparse else acts.astype(np.float32)
    adata.uns["sae"] = dict(
        use_rep=use_rep,
        key=key_added,
        d=model.d,
        c=model.c,
        k=model.k,
        k_aux=model.k_aux,
        train=dict(model.train_settings),
        metrics=sae_metrics(model, Z, batch_size=batch_size),
    )
    return adata
