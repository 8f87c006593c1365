"""Top-K sparse autoencoders: decompose cell embeddings into sparse concepts.

The architecture and training recipe follow Gao et al. (2024), *Scaling and
evaluating sparse autoencoders*, as used on single-cell embeddings by the paper
*Discovering interpretable biological concepts in single-cell RNA-seq foundation
models* (its Appendix B and Table 3: batch size 1024, ``aux_k`` 512, learning rate
1e-4 for c <= 1000 and 5e-4 for c >= 2000 on scVI). :func:`paper_settings` returns
that recipe for a dictionary size, :data:`PAPER_RECIPE` holds its fixed part.
The model:

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

AnnData keys written by :func:`annotate` (scanpy style; read them back with the getters)
------------------------------------------------------------------------------------
``adata.obsm[f"{key_added}_concepts"]``
    ``(n_obs, c)`` concept activations (dense float32, or CSR when ``sparse=True``);
    :func:`get_concepts`.
``adata.uns[key_added]``
    dict: ``params`` (``use_rep``, ``obsm_key``, ``d``, ``c``, ``k``, ``k_aux`` and the
    :class:`SAETrainSettings` with the training record) and ``metrics``
    (:func:`sae_metrics` on the annotated cells); :func:`get_params`,
    :func:`get_metrics`.

With the default ``key_added="sae"`` the activations go to ``obsm["sae_concepts"]``
and the settings to ``uns["sae"]``; another ``key_added`` writes
``obsm[f"{key_added}_concepts"]`` and ``uns[key_added]`` and leaves the first call's
keys alone.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import nn
from tqdm.auto import tqdm

from .data import check_finite, get_matrix, to_dense
from .runtime import epochs_for_budget, get_device, jsonable


__all__ = [
    "TopKSAE",
    "SAETrainSettings",
    "SAELoss",
    "train_sae",
    "train_epoch",
    "train_step",
    "init_sae",
    "sae_metrics",
    "scale_sweep",
    "annotate",
    "get_concepts",
    "get_params",
    "get_metrics",
    "reconstruction_r2",
    "sae_loss",
    "geometric_median",
    "paper_table3",
    "paper_row",
    "paper_settings",
    "PAPER_RECIPE",
    "paper_sae_rows",
]

#: The fixed part of the paper's SAE recipe (Appendix B: "Batch size is fixed to
#: 1024 and aux_k to 512"); learning rate and epochs depend on the Table 3 row.
PAPER_RECIPE = {
    "batch_size": 1024,
    "k_aux": 512,
    "source": "Appendix B and Table 3 (scVI rows)",
}


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
    generator
        ``torch.Generator`` of the initialisation (default: torch's global one).

    Attributes
    ----------
    b_pre : nn.Parameter ``(d,)``
    encoder : nn.Linear ``d -> c`` (weight ``c x d``, with bias)
    decoder : nn.Linear ``c -> d`` without bias (weight ``d x c``; columns = atoms)
    samples_since_active : buffer ``(c,)`` int64
        Training samples seen since each latent was last active (updated by
        :meth:`update_activity`, used by :meth:`dead_mask`).
    settings : SAETrainSettings or None
        How :func:`train_sae` trained it (``None`` before training).
    fit_record : dict
        What :func:`train_sae` measured: ``n_train``, ``n_val``, ``seconds``.

    Notes
    -----
    :meth:`encode`, :meth:`decode` and :meth:`forward` work on tensors
    (differentiable); :meth:`encode_numpy` is the one entry for numpy/scipy
    arrays (batched, without gradients).
    """

    def __init__(
        self,
        d: int,
        c: int,
        k: int,
        k_aux: int | None = None,
        *,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        d, c, k = int(d), int(c), int(k)
        if d < 1 or c < 1:
            raise ValueError(f"d and c must be positive, got d={d}, c={c}.")
        if not 1 <= k <= c:
            raise ValueError(
                f"k must be in [1, c={c}], got k={k}; choose fewer active concepts."
            )
        if k_aux is None:
            k_aux = max(1, d // 2)
        self.d, self.c, self.k, self.k_aux = d, c, k, int(min(max(1, k_aux), c))
        self.b_pre = nn.Parameter(torch.zeros(d))
        # no draw here: reset_parameters makes every random draw, from ``generator``
        self.encoder = nn.utils.skip_init(nn.Linear, d, c, bias=True)
        self.decoder = nn.utils.skip_init(nn.Linear, c, d, bias=False)
        self.register_buffer("samples_since_active", torch.zeros(c, dtype=torch.long))
        self.reset_parameters(generator)
        self.settings: SAETrainSettings | None = None
        self.fit_record: dict = {}

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Random unit-norm atoms, encoder = decoder transpose, zero biases.

        The draws are, in order, those ``nn.Linear``'s default initialisation makes
        for the encoder (weight, bias) and the decoder (weight), then ``randn(d, c)``
        for the atoms; the first three are overwritten but keep the random stream of
        a seed the same as when the layers drew them themselves.
        """
        g = generator
        for lin in (self.encoder, self.decoder):
            nn.init.kaiming_uniform_(lin.weight, a=math.sqrt(5), generator=g)
            if lin.bias is not None:
                bound = 1 / math.sqrt(lin.in_features)
                nn.init.uniform_(lin.bias, -bound, bound, generator=g)
        w = torch.randn(self.d, self.c, generator=g)
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

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """Concept activations ``ReLU(TopK(W_enc(z - b_pre) + b_enc))``, ``(n, c)``."""
        return self._topk_relu(self.pre_activations(z))

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``W_dec acts + b_pre``, ``(n, d)``."""
        return self.decoder(acts) + self.b_pre

    def forward(self, z: torch.Tensor):
        """Return ``(z_hat, acts, pre_acts)``."""
        pre = self.pre_activations(z)
        acts = self._topk_relu(pre)
        return self.decode(acts), acts, pre

    @torch.no_grad()
    def encode_numpy(self, Z, batch_size: int = 8192, *, reconstruct: bool = False):
        """Activations of a numpy/scipy ``(n, d)`` array, in batches, without gradients.

        Returns the ``(n, c)`` float32 activations, or ``(acts, Z_hat)`` with
        ``reconstruct=True`` (``Z_hat`` the ``(n, d)`` float32 reconstruction).
        """
        acts, recon = [], []
        for start in range(0, Z.shape[0], batch_size):
            zb = to_dense(Z[start : start + batch_size])
            zb = torch.as_tensor(zb, device=self.device)
            z_hat, a, _ = self(zb)
            acts.append(a.float().cpu().numpy())
            recon.append(z_hat.float().cpu().numpy())
        acts = np.concatenate(acts) if acts else np.zeros((0, self.c), np.float32)
        if not reconstruct:
            return acts
        recon = np.concatenate(recon) if recon else np.zeros((0, self.d), np.float32)
        return acts, recon

    # -- dictionary and dead latents -----------------------------------------
    @property
    def dictionary(self) -> np.ndarray:
        """The ``c x d`` concept atoms (unit-norm rows), as numpy float32."""
        return self.decoder.weight.detach().t().float().cpu().numpy().copy()

    @torch.no_grad()
    def update_activity(self, acts: torch.Tensor, reduce=None) -> None:
        """Advance the dead-latent counters by one batch of activations.

        ``reduce`` (data-parallel training) sums a tensor over all processes, so that
        every process counts the whole global batch and the counters stay identical.
        """
        fired = (acts > 0).any(dim=0)
        n = torch.tensor(acts.shape[0], device=acts.device)
        if reduce is not None:
            fired, n = reduce(fired.to(torch.float32)) > 0, reduce(n)
        self.samples_since_active.add_(int(n))
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
    Z = to_dense(Z)
    if Z.ndim != 2 or Z.shape[0] < 2:
        raise ValueError(
            f"{what} must be a 2-D (cells x dims) matrix with at least "
            f"2 cells, got shape {Z.shape}."
        )
    check_finite(Z, what)
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
        :func:`reconstruction_r2`: 1 − Σᵢ‖zᵢ − ẑᵢ‖² / Σᵢ‖zᵢ − z̄‖², sums over cells and
        dimensions, ``z̄`` the per-dimension mean of ``Z``: the share of the
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
        raise ValueError(
            f"Z has {Z.shape[1]} dimensions but the SAE expects d={model.d}."
        )
    was_training = model.training
    model.eval()
    acts, Z_hat = model.encode_numpy(Z, batch_size=batch_size, reconstruct=True)
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
@dataclass(frozen=True)
class SAETrainSettings:
    """How :func:`train_sae` trains a :class:`TopKSAE` (stored as ``model.settings``).

    Attributes
    ----------
    epochs, batch_size, lr
        Passes over the training split, minibatch size, Adam learning rate.
    aux_coef
        Weight of the auxiliary dead-latent loss (Gao et al.: 1/32); 0 disables it.
    dead_after
        A latent is dead when inactive on the last ``dead_after`` training samples;
        ``None``: the size of the training split (one epoch). The stored settings
        hold the resolved number.
    val_fraction
        Share of cells held out to report the validation R² per epoch (0: none).
    init
        ``b_pre`` initialisation: ``"mean"`` or ``"median"`` (geometric median) of the
        training split.
    seed
        Seeds the split (numpy), the initialisation and the batch order (two local
        ``torch.Generator``s); the global random state is not touched.
    device
        ``"auto"`` (GPU when available), ``"cpu"``, ``"cuda"``...; stored resolved.
    progress
        Show a tqdm bar over epochs.
    k_aux
        Dead latents used by the auxiliary loss (:class:`TopKSAE`); ``None``:
        ``d // 2``. The paper's 512 is capped at ``c`` and, per batch, at the
        number of dead latents (:meth:`TopKSAE.aux_activations`). An explicit
        ``k_aux`` argument of :func:`train_sae` wins over this field.
    max_steps
        Step budget: ``epochs`` is capped so that about this many optimizer steps
        are taken (:func:`helpers.runtime.epochs_for_budget`); ``None``: no cap. The
        stored settings hold the epochs run.
    """

    epochs: int = 100
    batch_size: int = 1024
    lr: float = 1e-4
    aux_coef: float = 1 / 32
    dead_after: int | None = None
    val_fraction: float = 0.1
    init: str = "mean"
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    k_aux: int | None = None
    max_steps: int | None = None

    def __post_init__(self):
        if not 0 <= self.val_fraction < 1:
            raise ValueError(
                f"val_fraction must be in [0, 1), got {self.val_fraction}."
            )
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(
                "epochs and batch_size must be positive, got "
                f"{self.epochs}, {self.batch_size}."
            )
        if self.init not in ("mean", "median"):
            raise ValueError(f"init must be 'mean' or 'median', got {self.init!r}.")


class SAELoss(NamedTuple):
    """The objective on one batch and its terms: ``total = recon + aux_coef * aux``."""

    total: torch.Tensor
    recon: torch.Tensor
    aux: torch.Tensor
    acts: torch.Tensor


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
    *,
    forward=None,
    reduce=None,
) -> SAELoss:
    """Training objective on one batch.

    ``total = scale * mean((z - ẑ)²) + aux_coef * ||e - ê||² / ||e||²`` where
    ``e = z - ẑ`` (detached) and ``ê = W_dec ReLU(TopK_{k_aux}(pre[dead]))``;
    the auxiliary term is 0 when no latent is dead or ``aux_coef == 0``.
    ``recon`` is the first term (scaled), ``aux`` the unweighted second one and
    ``acts`` the batch's activations. ``forward`` (default ``model``) runs the forward
    pass: a data-parallel wrapper of ``model`` (see :mod:`helpers.distributed`);
    there ``reduce`` (a sum over processes) makes the auxiliary term's denominator the
    global batch's, so that the averaged gradients equal one process's.
    """
    z_hat, acts, pre = (forward or model)(z)
    recon = ((z - z_hat) ** 2).mean() * scale
    aux = torch.zeros((), device=z.device)
    if aux_coef > 0 and dead is not None and bool(dead.any()):
        resid = (z - z_hat).detach()
        e_hat = model.decoder(model.aux_activations(pre, dead))
        denom = (resid**2).sum()
        if reduce is not None:  # the global batch's mean share per process
            denom = reduce(denom) / reduce(torch.ones((), device=denom.device))
        aux = ((resid - e_hat) ** 2).sum() / denom.clamp_min(1e-12)
        aux = torch.nan_to_num(aux, nan=0.0)
    return SAELoss(recon + aux_coef * aux, recon, aux, acts)


def _split(n: int, settings: SAETrainSettings) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, validation) cell indices of a seeded permutation."""
    perm = np.random.default_rng(settings.seed).permutation(n)
    n_val = int(round(settings.val_fraction * n))
    if settings.val_fraction > 0 and n - n_val < 1:
        raise ValueError(
            f"val_fraction={settings.val_fraction} leaves no training cells out of {n}."
        )
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def init_sae(
    Z_train: np.ndarray,
    c: int,
    k: int,
    k_aux: int | None = None,
    *,
    init: str = "mean",
    generator: torch.Generator | None = None,
) -> TopKSAE:
    """A :class:`TopKSAE` for ``Z_train``, ``b_pre`` at its mean or geometric median."""
    model = TopKSAE(Z_train.shape[1], c, k, k_aux=k_aux, generator=generator)
    center = Z_train.mean(axis=0) if init == "mean" else geometric_median(Z_train)
    with torch.no_grad():
        model.b_pre.copy_(torch.as_tensor(center, dtype=torch.float32))
    return model


def train_step(
    model: TopKSAE,
    zb: torch.Tensor,
    opt: torch.optim.Optimizer,
    *,
    dead_after: int,
    aux_coef: float,
    scale: float,
    forward=None,
    reduce=None,
) -> SAELoss:
    """One Adam step on ``zb`` under the unit-norm constraint; returns the terms.

    ``forward`` and ``reduce``: data-parallel training (:mod:`helpers.distributed`);
    by default one process.
    """
    dead = model.dead_mask(dead_after)
    loss = sae_loss(
        model, zb, dead, aux_coef=aux_coef, scale=scale, forward=forward, reduce=reduce
    )
    opt.zero_grad(set_to_none=True)
    loss.total.backward()
    model.project_decoder_grad()
    opt.step()
    model.normalize_decoder()
    model.update_activity(loss.acts.detach(), reduce)
    return loss


def train_epoch(
    model: TopKSAE,
    X: torch.Tensor,
    opt: torch.optim.Optimizer,
    order: torch.Tensor,
    *,
    batch_size: int,
    dead_after: int,
    aux_coef: float,
    scale: float,
    shard=None,
    forward=None,
    reduce=None,
) -> dict:
    """One pass over ``X`` in ``order``; per-sample means of loss, recon and aux.

    Data-parallel (:mod:`helpers.distributed`): every process walks the same global
    batches and ``shard`` keeps its share of each; the means are over all processes.
    """
    sums = dict(loss=0.0, recon=0.0, aux=0.0)
    for start in range(0, X.shape[0], batch_size):
        idx = order[start : start + batch_size]
        zb = X[idx if shard is None else shard(idx)]
        loss = train_step(
            model,
            zb,
            opt,
            dead_after=dead_after,
            aux_coef=aux_coef,
            scale=scale,
            forward=forward,
            reduce=reduce,
        )
        m = zb.shape[0]
        sums["aux"] += float(loss.aux.detach()) * m
        sums["loss"] += float(loss.total.detach()) * m
        sums["recon"] += float(loss.recon.detach()) * m
    if reduce is not None:
        sums = dict(zip(sums, reduce(torch.tensor(list(sums.values()))).tolist()))
    return {key: v / X.shape[0] for key, v in sums.items()}


def train_sae(
    Z,
    c: int,
    k: int,
    settings: SAETrainSettings | None = None,
    *,
    k_aux: int | None = None,
    fabric=None,
    **overrides,
) -> tuple[TopKSAE, pd.DataFrame]:
    """Train a :class:`TopKSAE` on embeddings ``Z`` with Adam.

    Parameters
    ----------
    Z
        ``(n, d)`` embeddings (numpy or scipy sparse), finite.
    c, k, k_aux
        See :class:`TopKSAE` (``k_aux`` default: ``settings.k_aux``, else ``d // 2``).
    settings
        :class:`SAETrainSettings` (default: its defaults).
    **overrides
        Fields of :class:`SAETrainSettings` replaced for this call, e.g.
        ``train_sae(Z, 500, 8, lr=1e-3, epochs=30)``.
    fabric
        A launched ``lightning.fabric.Fabric`` for data-parallel training (see
        :mod:`helpers.distributed`): each process takes its share of every batch,
        gradients are averaged and the dead-latent counters summed across processes.
        ``None`` (default): one process on ``settings.device``.

    Returns
    -------
    model
        The trained SAE in eval mode; ``model.settings`` holds the (resolved)
        settings, ``model.fit_record`` the split sizes and the time taken. On CPU
        two runs with the same seed give identical weights.
    history
        One row per epoch: ``epoch``, ``loss``, ``recon`` (normalised MSE =
        1 − batch R²), ``aux`` (auxiliary loss), ``val_r2`` (:func:`reconstruction_r2`
        on the validation split, NaN without one), ``n_dead`` (by the ``dead_after``
        counter), ``seconds`` (cumulative).
    """
    settings = dataclasses.replace(settings or SAETrainSettings(), **overrides)
    if k_aux is None:
        k_aux = settings.k_aux
    Z = _as_embedding(Z)
    dev = get_device(settings.device) if fabric is None else fabric.device
    train_idx, val_idx = _split(Z.shape[0], settings)
    Z_train, Z_val = Z[train_idx], Z[val_idx]
    dead_after = settings.dead_after
    dead_after = len(train_idx) if dead_after is None else int(dead_after)
    epochs = epochs_for_budget(
        settings.epochs, len(train_idx), settings.batch_size, settings.max_steps
    )
    settings = dataclasses.replace(
        settings, dead_after=dead_after, device=str(dev), epochs=epochs
    )
    # two generators, as before: one draws the initialisation, the other the batch order
    init_gen = torch.Generator().manual_seed(settings.seed)
    order_gen = torch.Generator().manual_seed(settings.seed)
    model = init_sae(Z_train, c, k, k_aux, init=settings.init, generator=init_gen)
    model.to(dev)
    model.train()
    var = float(((Z_train - Z_train.mean(axis=0)) ** 2).mean())
    step_kw = dict(
        batch_size=settings.batch_size,
        dead_after=dead_after,
        aux_coef=settings.aux_coef,
        scale=1.0 / var if var > 0 else 1.0,
    )
    X = torch.as_tensor(Z_train, device=dev)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    if fabric is not None:
        from .distributed import ddp_hooks

        forward, opt = fabric.setup(model, opt)
        step_kw.update(ddp_hooks(fabric), forward=forward)
    rows, t0 = [], time.perf_counter()
    bar = tqdm(
        range(1, settings.epochs + 1),
        desc=f"SAE c={c} k={k}",
        disable=not settings.progress,
        leave=False,
    )
    for epoch in bar:
        order = torch.randperm(len(train_idx), generator=order_gen).to(dev)
        row = dict(epoch=epoch, **train_epoch(model, X, opt, order, **step_kw))
        row["val_r2"] = _val_r2(model, Z_val)
        row["n_dead"] = int(model.dead_mask(dead_after).sum())
        rows.append({**row, "seconds": time.perf_counter() - t0})
        bar.set_postfix(
            loss=f"{row['loss']:.4f}", val_r2=f"{row['val_r2']:.3f}", dead=row["n_dead"]
        )
    model.eval()
    model.settings = settings
    model.fit_record = dict(
        n_train=len(train_idx),
        n_val=len(val_idx),
        seconds=float(time.perf_counter() - t0),
    )
    return model, pd.DataFrame(rows)


def _val_r2(model: TopKSAE, Z_val: np.ndarray) -> float:
    if len(Z_val) == 0:
        return float("nan")
    return reconstruction_r2(Z_val, model.encode_numpy(Z_val, reconstruct=True)[1])


def scale_sweep(
    Z,
    configs: Sequence[tuple] = ((200, 3), (500, 8), (1000, 16)),
    settings: SAETrainSettings | None = None,
    *,
    return_models: bool = False,
    min_active_cells: int | None = None,
    **overrides,
):
    """Train one SAE per ``(c, k)`` (or ``(c, k, lr)``) and tabulate its metrics.

    In the spirit of the paper's Table 3. ``settings``/``overrides`` as in
    :func:`train_sae` (a config's ``lr`` replaces the settings' one; a config's
    third element may also be a dict of :class:`SAETrainSettings` fields, e.g.
    ``(500, 8, {"lr": 1e-4, "epochs": 1500})``). Metrics are computed on all cells
    of ``Z`` with :func:`sae_metrics`.

    Returns
    -------
    DataFrame with columns ``c``, ``k``, ``lr``, ``epochs``, ``r2``, ``val_r2``
    (last epoch), ``l0``, ``n_active``, ``n_dead``, ``frac_active``, ``seconds``;
    with ``min_active_cells`` also ``median cells/concept`` and ``concepts >=
    {min_active_cells} cells`` (how many cells activate each concept); with
    ``return_models=True`` also a dict ``{(c, k): model}``.
    """
    Z = _as_embedding(Z)
    settings = dataclasses.replace(settings or SAETrainSettings(), **overrides)
    rows, models = [], {}
    for cfg in configs:
        if len(cfg) not in (2, 3):
            raise ValueError(f"each config must be (c, k) or (c, k, lr), got {cfg!r}.")
        c, k = int(cfg[0]), int(cfg[1])
        s = settings
        if len(cfg) == 3 and isinstance(cfg[2], dict):
            s = dataclasses.replace(settings, **cfg[2])
        elif len(cfg) == 3:
            s = dataclasses.replace(settings, lr=float(cfg[2]))
        t0 = time.perf_counter()
        model, hist = train_sae(Z, c, k, s)
        seconds = time.perf_counter() - t0
        m = sae_metrics(model, Z)
        rows.append(
            dict(
                c=c,
                k=k,
                lr=s.lr,
                epochs=s.epochs,
                r2=m["r2"],
                val_r2=float(hist["val_r2"].iloc[-1]),
                l0=m["l0"],
                n_active=m["n_active"],
                n_dead=m["n_dead"],
                frac_active=m["frac_active"],
                seconds=seconds,
            )
        )
        models[(c, k)] = model
    table = pd.DataFrame(rows)
    if min_active_cells is not None:
        cells = [(models[(r["c"], r["k"])].encode_numpy(Z) > 0).sum(0) for r in rows]
        table["median cells/concept"] = [float(np.median(n)) for n in cells]
        table[f"concepts >= {min_active_cells} cells"] = [
            int((n >= min_active_cells).sum()) for n in cells
        ]
    return (table, models) if return_models else table


# ----------------------------------------------------------------------------
# AnnData
# ----------------------------------------------------------------------------
def _obsm_key(key: str) -> str:
    return f"{key}_concepts"


def annotate(
    adata,
    model: TopKSAE,
    *,
    use_rep: str,
    key_added: str = "sae",
    sparse: bool = False,
    batch_size: int = 8192,
):
    """Write concept activations of the embedding ``adata.obsm[use_rep]``, scanpy style.

    Writes ``adata.obsm[f"{key_added}_concepts"]`` (``(n_obs, c)``, dense float32, or
    CSR when ``sparse=True``) and ``adata.uns[key_added]`` = ``{"params": ...,
    "metrics": sae_metrics(...)}``; other ``key_added`` values leave these alone.
    Read them back with :func:`get_concepts`, :func:`get_params`, :func:`get_metrics`.
    Returns ``adata``.
    """
    Z = _as_embedding(get_matrix(adata, use_rep=use_rep), f"adata.obsm[{use_rep!r}]")
    if Z.shape[1] != model.d:
        raise ValueError(
            f"adata.obsm[{use_rep!r}] has {Z.shape[1]} dimensions but "
            f"the SAE was trained on d={model.d}."
        )
    acts = model.encode_numpy(Z, batch_size=batch_size)
    adata.obsm[_obsm_key(key_added)] = sp.csr_matrix(acts) if sparse else acts
    train = dataclasses.asdict(model.settings) if model.settings is not None else {}
    params = dict(
        use_rep=use_rep,
        obsm_key=_obsm_key(key_added),
        d=model.d,
        c=model.c,
        k=model.k,
        k_aux=model.k_aux,
        train={**train, **model.fit_record},
    )
    adata.uns[key_added] = dict(
        params=jsonable(params), metrics=sae_metrics(model, Z, batch_size=batch_size)
    )
    return adata


def _uns(adata, key: str) -> dict:
    if key not in adata.uns or "params" not in adata.uns[key]:
        raise KeyError(
            f"adata.uns has no SAE results under {key!r}; run helpers.sae."
            f"annotate(adata, model, use_rep=..., key_added={key!r})."
        )
    return adata.uns[key]


def get_concepts(adata, *, key: str = "sae"):
    """The ``(n_obs, c)`` activations :func:`annotate` wrote with ``key_added=key``."""
    return adata.obsm[_uns(adata, key)["params"]["obsm_key"]]


def get_params(adata, *, key: str = "sae") -> dict:
    """The settings :func:`annotate` stored under ``adata.uns[key]["params"]``."""
    return _uns(adata, key)["params"]


def get_metrics(adata, *, key: str = "sae") -> dict:
    """:func:`sae_metrics` on the annotated cells (``adata.uns[key]["metrics"]``)."""
    return _uns(adata, key)["metrics"]


def paper_table3() -> pd.DataFrame:
    """The scVI rows of the paper's Table 3: size, learning rate, epochs, R², active.

    Batch size (1024) and ``aux_k`` (512) are the same for every row
    (:data:`PAPER_RECIPE`).
    """
    return pd.DataFrame(
        {
            "dataset": (
                ["Tabula Sapiens Immune"] * 5 + ["Cross-tissue Immune Cell Atlas"] * 5
            ),
            "c": [200, 500, 1000, 2000, 5000] * 2,
            "k": [3, 8, 16, 32, 80] * 2,
            "lr": [1e-4, 1e-4, 1e-4, 5e-4, 5e-4] * 2,
            "epochs": [1000, 1500, 1000, 2000, 3000, 2000, 2000, 2000, 2000, 4000],
            "R2": [
                0.936,
                0.988,
                0.991,
                0.997,
                0.998,
                0.946,
                0.982,
                0.992,
                0.997,
                0.999,
            ],
            "active concepts": [199, 489, 972, 1634, 4108, 198, 487, 974, 1607, 3399],
        }
    )


def paper_row(c: int, dataset: str = "Tabula Sapiens Immune") -> pd.Series:
    """The Table 3 scVI row of ``dataset`` whose ``c`` is nearest to ``c``.

    Ties go to the smaller dictionary. The row's ``c`` says which one was used
    (e.g. ``c = 100`` reads the ``c = 200`` row).
    """
    t = paper_table3()
    t = t[t["dataset"] == dataset]
    if t.empty:
        raise ValueError(
            f"no Table 3 rows for dataset {dataset!r}; choose one of "
            f"{sorted(paper_table3()['dataset'].unique())}."
        )
    dist = (np.log(t["c"].to_numpy(float)) - np.log(float(c))) ** 2
    return t.iloc[int(np.argmin(dist))]


def paper_sae_rows(c: int, k: int, lr: float, epochs: int, source: str) -> dict:
    """The paper's SAE settings as recipe-table rows ``{setting: (value, source)}``.

    ``c``, ``k``, ``lr`` and ``epochs`` come from the row of Table 3 (or Section 4.2)
    that ``source`` names; batch size and ``aux_k`` from :data:`PAPER_RECIPE`.
    """
    return {
        "SAE c": (c, source),
        "SAE k": (k, source),
        "SAE learning rate": (lr, source),
        "SAE epochs": (epochs, source),
        "SAE batch size": (PAPER_RECIPE["batch_size"], "Appendix B"),
        "SAE aux_k": (PAPER_RECIPE["k_aux"], "Appendix B"),
    }


def paper_settings(
    c: int, dataset: str = "Tabula Sapiens Immune", **overrides
) -> SAETrainSettings:
    """The paper's training recipe for a dictionary of size ``c``.

    Batch size 1024 and ``k_aux`` 512 (:data:`PAPER_RECIPE`), learning rate and
    epochs of the nearest Table 3 scVI row (:func:`paper_row`) of ``dataset``
    (default Tabula Sapiens Immune, the dataset of the paper's Figures 2-3).
    ``overrides`` replace fields (e.g. ``epochs`` when the paper's are not
    affordable, ``seed``, ``device``).
    """
    row = paper_row(c, dataset)
    base = SAETrainSettings(
        epochs=int(row["epochs"]),
        lr=float(row["lr"]),
        batch_size=PAPER_RECIPE["batch_size"],
        k_aux=PAPER_RECIPE["k_aux"],
    )
    return dataclasses.replace(base, **overrides)
