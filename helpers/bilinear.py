"""Bilinear MLPs and the gene modules read from their weights.

A bilinear layer computes ``y = P (W x ⊙ V x)`` with ``W, V ∈ R^{h×g}`` and
``P ∈ R^{t×h}``. Output ``a`` is the quadratic form ``xᵀ Q_a x`` with
``Q_a = Σ_h P_ah w_h v_hᵀ = Wᵀ diag(P_a) V``. Only the symmetric part
``B_a = (Q_a + Q_aᵀ)/2`` contributes, and its eigenvectors are gene modules.

``B_a = U M_a Uᵀ`` with ``U = [Wᵀ Vᵀ] ∈ R^{g×2h}`` and
``M_a = ½[[0, diag P_a], [diag P_a, 0]]``, so its rank is at most 2h. With ``U = Q R``
(thin QR, shared by every output) the nonzero eigenpairs of ``B_a`` are those of the
2h×2h matrix ``R M_a Rᵀ`` mapped back by ``Q``: no g×g matrix is ever built.

A bias, when asked for, is a constant 1 appended to x, so the model stays an exact
quadratic form (the last coordinate of every loading is then the constant's weight, not
a gene's).

AnnData keys written by :func:`annotate` (``key_added`` defaults to ``"bilinear"``;
``<out>`` is the output name with characters other than letters, digits, ``-`` and ``_``
replaced by ``_``); read them back with :func:`get_modules` rather than rebuilding the
names:

- ``adata.varm["<key_added>_<out>_loadings"]``: genes × modules, sorted by |eigenvalue|;
- ``adata.obsm["<key_added>_<out>_scores"]``: cells × modules, projections of the
  features;
- ``adata.uns["<key_added>"]``: ``outputs`` (names), ``eigenvalues`` (dict: output → all
  2h
  eigenvalues, sorted by |λ|) and ``params`` (``n_modules``, ``hidden``, ``bias``,
  ``oriented``).

Training settings are a :class:`BilinearTrainSettings`, stored with the model
(``model.settings``); :func:`fit` builds and trains in one call, :func:`fit_repeats`
once per seed.
"""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from scipy.stats import spearmanr
from torch import nn
from tqdm.auto import tqdm

from .baselines import logistic
from .data import get_matrix
from .preprocess import split_indices
from .runtime import epochs_for_budget, get_device, single_thread


class BilinearMLP(nn.Module):
    """``y = P (W x ⊙ V x)``: one ``Linear(g, 2h)`` split into W and V, then a linear
    head P.

    Parameters
    ----------
    n_in, n_hidden, n_out
        Genes g, hidden width h, outputs t.
    bias
        Append a constant 1 to x (linear and constant terms while staying a quadratic
        form).
    dropout
        Dropout on the input genes during training (the constant input is never
        dropped).
    seed
        Seed for the initial weights (``None``: torch's global generator). Training is
        seeded separately by :func:`train_bilinear`; seed both for a reproducible run.
    """

    def __init__(
        self,
        n_in: int,
        n_hidden: int,
        n_out: int,
        bias: bool = False,
        dropout: float = 0.0,
        seed: int | None = None,
    ):
        super().__init__()
        self.n_in, self.n_hidden, self.n_out, self.bias = n_in, n_hidden, n_out, bias
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            self.proj = nn.Linear(n_in + int(bias), 2 * n_hidden, bias=False)
            self.head = nn.Linear(n_hidden, n_out, bias=False)
        self.drop = nn.Dropout(dropout)

    @property
    def W(self) -> torch.Tensor:
        return self.proj.weight[: self.n_hidden]

    @property
    def V(self) -> torch.Tensor:
        return self.proj.weight[self.n_hidden :]

    @property
    def P(self) -> torch.Tensor:
        return self.head.weight

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """x with the constant 1 appended when the model has a bias."""
        return torch.cat([x, torch.ones_like(x[:, :1])], 1) if self.bias else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right = self.proj(self.augment(self.drop(x))).chunk(2, dim=-1)
        return self.head(left * right)


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True)
class BilinearTrainSettings:
    """How :func:`train_bilinear` trains: stored with the trained model as
    ``model.settings``.

    ``task`` is ``"classification"`` (cross-entropy, ``loss="ce"``) or ``"regression"``
    (``loss="mse"`` or ``"huber"`` with ``huber_delta``); ``loss=None`` picks the task's
    default. ``class_weight="balanced"`` weighs the cross-entropy by inverse class
    frequency in the training split; ``noise_std`` adds Gaussian noise to training
    inputs. ``seed`` seeds the batch order, the noise and dropout (see
    :func:`train_bilinear`).

    Early stopping (criterion: validation loss): ``restore_best=True`` keeps the
    weights of the epoch with the lowest validation loss (ties: the earliest);
    ``patience`` stops training after that many epochs without a lower validation
    loss (``None``: run all ``epochs``). ``patience`` alone also restores the best
    epoch. Off by default (the blog's recipe trains a fixed number of epochs); the
    chapters turn it on.

    ``max_steps`` caps ``epochs`` at a budget of optimizer steps
    (:func:`helpers.runtime.epochs_for_budget`; ``None``: no cap); the stored
    settings hold the epochs run.
    """

    task: str = "classification"
    loss: str | None = None
    epochs: int = 100
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64
    noise_std: float = 0.0
    class_weight: str | None = None
    huber_delta: float = 1.0
    device: str = "auto"
    seed: int = 0
    restore_best: bool = False
    patience: int | None = None
    max_steps: int | None = None

    def __post_init__(self):
        if self.task not in ("classification", "regression"):
            raise ValueError(
                f"task={self.task!r}; use 'classification' or 'regression'."
            )
        if self.patience is not None and self.patience < 1:
            raise ValueError(
                f"patience={self.patience}; pass a positive number of "
                "epochs, or None to train all epochs."
            )

    @property
    def early_stopping(self) -> bool:
        """True when the best validation epoch's weights are kept."""
        return self.restore_best or self.patience is not None


def _settings(
    settings: BilinearTrainSettings | None, overrides: dict
) -> BilinearTrainSettings:
    return replace(settings or BilinearTrainSettings(), **overrides)


def _loss_fn(task: str, loss: str | None, class_weight, huber_delta: float):
    loss = loss or ("ce" if task == "classification" else "mse")
    if task == "classification":
        if loss != "ce":
            raise ValueError(f"loss={loss!r} for classification; use 'ce'.")
        return nn.CrossEntropyLoss(weight=class_weight), loss
    if loss == "mse":
        return nn.MSELoss(), loss
    if loss == "huber":
        return nn.HuberLoss(delta=huber_delta), loss
    raise ValueError(f"loss={loss!r} for regression; use 'mse' or 'huber'.")


def _check_inputs(X, Y, split) -> None:
    if X.shape[0] != len(Y):
        raise ValueError(
            f"X has {X.shape[0]} cells but Y has {len(Y)}; they must match."
        )
    for part in ("train", "val"):
        if part not in split or len(split[part]) == 0:
            raise ValueError(f"split needs a non-empty {part!r} index array.")


class Features:
    """Cells × genes for training and prediction: a dense tensor on ``device``, or a
    scipy sparse matrix kept sparse and densified one batch of rows at a time (so
    memory grows with the non-zeros, not with cells × genes). Index with a torch
    index tensor or a slice; returns a dense float32 tensor on ``device``."""

    def __init__(self, X, device="cpu"):
        self.device = torch.device(device)
        self.csr = sp.csr_matrix(X, dtype=np.float32) if sp.issparse(X) else None
        self.dense = (
            None
            if self.csr is not None
            else torch.as_tensor(np.asarray(X, np.float32), device=self.device)
        )
        self.shape = tuple((self.csr if self.csr is not None else self.dense).shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> torch.Tensor:
        if self.dense is not None:
            return self.dense[idx]
        rows = idx.cpu().numpy() if torch.is_tensor(idx) else idx
        return torch.from_numpy(self.csr[rows].toarray()).to(self.device)


def _tensors(model, X, Y, split, s: BilinearTrainSettings, dev):
    """Features, targets and the loss (class weights from the training split) on
    ``dev``."""
    Xt = Features(X, dev)
    weight = None
    if s.task == "classification":
        Yt = torch.as_tensor(np.array(Y), dtype=torch.long, device=dev)
        if s.class_weight == "balanced":
            counts = torch.bincount(Yt[split["train"]], minlength=model.n_out).float()
            weight = (counts.sum() / (model.n_out * counts.clamp(min=1))).to(dev)
    else:
        Yt = torch.as_tensor(np.array(Y, np.float32), device=dev)
        Yt = Yt[:, None] if Yt.ndim == 1 else Yt
    criterion, loss = _loss_fn(s.task, s.loss, weight, s.huber_delta)
    return Xt, Yt, criterion, loss


def _train_epoch(
    model, Xt, Yt, train_idx, criterion, opt, sched, s, gen, *, shard=None, forward=None
) -> None:
    """One pass over the training cells in a random order (drawn from ``gen``).

    Data-parallel (:mod:`helpers.distributed`): every process draws the same order and
    ``shard`` keeps its share of each batch; ``forward`` is the wrapped model.
    """
    dev = Xt.device
    model.train()
    perm = train_idx[torch.randperm(len(train_idx), generator=gen).to(dev)]
    for start in range(0, len(perm), s.batch_size):
        b = perm[start : start + s.batch_size]
        b = b if shard is None else shard(b)
        xb = Xt[b]
        if s.noise_std > 0:
            xb = xb + s.noise_std * torch.randn(xb.shape, generator=gen).to(dev)
        opt.zero_grad(set_to_none=True)
        criterion((forward or model)(xb), Yt[b]).backward()
        opt.step()
        sched.step()


def train_bilinear(
    model: BilinearMLP,
    X: np.ndarray,
    Y: np.ndarray,
    split: dict,
    settings: BilinearTrainSettings | None = None,
    *,
    progress: bool = True,
    fabric=None,
    **overrides,
):
    """Train with AdamW and a cosine learning-rate schedule; returns
    ``(model, history)``.

    Parameters
    ----------
    X
        cells × genes features (float; a scipy sparse matrix stays sparse, see
        :class:`Features`).
    Y
        Class indices (classification) or cells × outputs targets (regression).
    split
        ``{"train": idx, "val": idx, ...}`` (see
        :func:`helpers.preprocess.split_indices`).
    settings
        :class:`BilinearTrainSettings` (default: its defaults); keyword ``overrides``
        replace single fields (``epochs=30``). The settings used are stored as
        ``model.settings``.
    fabric
        A launched ``lightning.fabric.Fabric`` for data-parallel training (see
        :mod:`helpers.distributed`): each process takes its share of every batch and
        gradients are averaged. ``None`` (default): one process on ``settings.device``.

    Seeding: the batch order and noise come from a local ``torch.Generator`` seeded with
    ``settings.seed``; dropout draws from torch's global generator, so the loop runs
    inside ``torch.random.fork_rng`` after ``torch.manual_seed(seed)``: the run is
    reproducible and the caller's global random state is the same afterwards as before.

    Early stopping (``settings.restore_best`` / ``settings.patience``): the weights of
    the epoch with the lowest validation loss are kept and the model returned has them;
    training stops after ``patience`` epochs without improvement. Stopping draws nothing
    from the generators, so the epochs that ran are the same as in a full run.

    Returns
    -------
    The trained model (on CPU, eval mode) and a per-epoch DataFrame with train/val loss
    and accuracy (classification) or MAE (regression), and ``best`` (True on the epoch
    whose weights the model has: the best validation epoch with early stopping, else the
    last). ``history.attrs``: ``best_epoch``, ``stopped_epoch`` (the last epoch run),
    ``early_stopping``, ``seconds``, ``device``, ``loss``.
    """
    s = _settings(settings, overrides)
    _check_inputs(X, Y, split)
    dev = get_device(s.device) if fabric is None else fabric.device
    Xt, Yt, criterion, loss = _tensors(model, X, Y, split, s, dev)
    model.to(dev)
    opt = torch.optim.AdamW(
        model.parameters(), lr=s.lr, weight_decay=s.weight_decay, foreach=True
    )
    ddp = {}
    if fabric is not None:
        from .distributed import ddp_hooks

        forward, opt = fabric.setup(model, opt)
        ddp = {"shard": ddp_hooks(fabric)["shard"], "forward": forward}
    train_idx = torch.as_tensor(split["train"], device=dev)
    s = replace(
        s, epochs=epochs_for_budget(s.epochs, len(train_idx), s.batch_size, s.max_steps)
    )
    steps = s.epochs * int(np.ceil(len(train_idx) / s.batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    quiet = not progress or bool(os.environ.get("TQDM_DISABLE"))
    rows = []
    best_loss, best_epoch, best_state = np.inf, s.epochs, None
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(s.seed)
        gen = torch.Generator().manual_seed(s.seed)
        bar = tqdm(range(s.epochs), desc="training", disable=quiet, leave=False)
        for epoch in bar:
            _train_epoch(model, Xt, Yt, train_idx, criterion, opt, sched, s, gen, **ddp)
            row = {"epoch": epoch + 1, "lr": sched.get_last_lr()[0]}
            row.update(_evaluate(model, Xt, Yt, split, criterion, s.task))
            rows.append(row)
            bar.set_postfix(
                {k: f"{v:.3f}" for k, v in row.items() if k.startswith("val_")}
            )
            if not s.early_stopping:
                continue
            if row["val_loss"] < best_loss:
                best_loss, best_epoch = row["val_loss"], epoch + 1
                best_state = {
                    k: v.detach().clone() for k, v in model.state_dict().items()
                }
            elif s.patience is not None and epoch + 1 - best_epoch >= s.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_epoch = len(rows)
    model.to("cpu").eval()
    model.settings = s
    history = pd.DataFrame(rows)
    history["best"] = history["epoch"] == best_epoch
    history.attrs.update(
        seconds=time.perf_counter() - t0,
        device=str(dev),
        loss=loss,
        best_epoch=int(best_epoch),
        stopped_epoch=len(rows),
        early_stopping=s.early_stopping,
    )
    return model, history


def best_epoch(history: pd.DataFrame) -> int:
    """The epoch whose weights a :func:`train_bilinear` model has
    (``history.attrs["best_epoch"]``)."""
    return int(history.attrs.get("best_epoch", len(history)))


def fit(
    X: np.ndarray,
    Y: np.ndarray,
    split: dict,
    *,
    hidden: int = 128,
    bias: bool = False,
    dropout: float = 0.0,
    n_out: int | None = None,
    settings: BilinearTrainSettings | None = None,
    progress: bool = True,
    **overrides,
):
    """Build a :class:`BilinearMLP` sized for ``X`` and ``Y`` and train it: the one-call
    entry.

    The initial weights are seeded with ``settings.seed`` too. ``n_out`` defaults to
    ``max(Y) + 1`` classes (classification) or the columns of ``Y`` (regression).
    ``settings`` and keyword ``overrides`` (``task="regression"``, ``epochs=30``, ...)
    are as in :func:`train_bilinear`. Returns ``(model, history)``.
    """
    s = _settings(settings, overrides)
    X = X.astype(np.float32) if sp.issparse(X) else np.asarray(X, np.float32)
    if s.task == "regression":
        Y = np.asarray(Y, np.float32)
        Y = Y[:, None] if Y.ndim == 1 else Y
        n_out = n_out or Y.shape[1]
    else:
        n_out = n_out or int(np.max(Y)) + 1
    model = BilinearMLP(
        X.shape[1], hidden, n_out, bias=bias, dropout=dropout, seed=s.seed
    )
    return train_bilinear(model, X, Y, split, s, progress=progress)


@torch.no_grad()
def _evaluate(model, Xt, Yt, split, criterion, task) -> dict:
    model.eval()
    out = {}
    for part in ("train", "val"):
        idx = torch.as_tensor(split[part], device=Xt.device)
        pred = torch.cat(
            [model(Xt[idx[i : i + 4096]]) for i in range(0, len(idx), 4096)]
        )
        out[f"{part}_loss"] = float(criterion(pred, Yt[idx]))
        if task == "classification":
            out[f"{part}_accuracy"] = float((pred.argmax(1) == Yt[idx]).float().mean())
        else:
            out[f"{part}_mae"] = float((pred - Yt[idx]).abs().mean())
    return out


@torch.no_grad()
def predict(model: BilinearMLP, X: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Model outputs for ``X`` (cells × outputs), computed on CPU in batches."""
    model = model.to("cpu").eval()
    Xt = Features(X)
    return torch.cat(
        [model(Xt[i : i + batch_size]) for i in range(0, len(Xt), batch_size)]
    ).numpy()


# ---------------------------------------------------------- interaction matrices, eigen


def _weights(model: BilinearMLP):
    with torch.no_grad():
        return (
            model.W.detach().double().cpu().numpy(),
            model.V.detach().double().cpu().numpy(),
            model.P.detach().double().cpu().numpy(),
        )


def interaction_matrix(model: BilinearMLP, output: int) -> np.ndarray:
    """The dense symmetric ``B_a = (Q_a + Q_aᵀ)/2`` (g×g, or (g+1)×(g+1) with bias).
    Small g only."""
    W, V, P = _weights(model)
    Q = W.T @ (P[output][:, None] * V)
    return (Q + Q.T) / 2


def eigendecompose(model: BilinearMLP, outputs=None, n_modules: int | None = None):
    """Eigenpairs of every requested output's ``B_a`` through the rank-2h route.

    ``B_a = U M_a Uᵀ`` with ``U = [Wᵀ Vᵀ]`` (g × 2h). One orthonormal basis ``U = QR``
    (:func:`_range_basis`) is shared by all outputs; the small matrices
    ``R M_a Rᵀ = ½ (R_W diag(P_a) R_Vᵀ + transpose)`` of all outputs are solved as one
    batched ``eigh``, and their eigenvectors ``y`` lifted to genes as ``Q y``; all in
    float64. The outputs are shared among Python threads (as many as torch's thread
    count), each calling single-threaded LAPACK/BLAS: unlike BLAS's own threads these do
    not spin-wait, so a busy machine costs nothing extra
    (see :func:`helpers.runtime.single_thread` and ``benchmarks/bench_bilinear.py``).

    Returns
    -------
    dict ``output index → (eigenvalues, eigenvectors)``: all nonzero-subspace
    eigenvalues (length min(g, 2h)) sorted by |λ| descending; eigenvectors as columns
    (g × r) for the first ``n_modules`` (default: all r), each oriented so that its
    largest-magnitude entry is positive (when the largest positive and negative entries
    tie exactly, the sign stays as LAPACK returned it). Lifting eigenvectors to genes is
    the costly step, so ask only for the modules you read.
    """
    n_threads = torch.get_num_threads()
    with single_thread():
        return _eigendecompose(model, outputs, n_modules, n_threads)


def _range_basis(U: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``Q, R`` with ``U = QR``, ``Q`` orthonormal columns spanning U's column space.

    Tall U (g ≥ 2h, the usual case) goes through Cholesky-QR2: ``R₁ = chol(UᵀU)``,
    ``Q₁ = U R₁⁻¹``, then once more on ``Q₁`` to restore orthogonality to machine
    precision (Yamamoto et al. 2015), in less time than Householder QR
    (``benchmarks/bench_bilinear.py`` prints both). Householder QR is kept for wide U
    (g < 2h, rank-deficient Gram matrix) and whenever the first pass is not reliable
    (Gram matrix not numerically positive definite, or ``Q₁`` off orthogonal by more
    than 0.1: U too ill-conditioned for the squared condition number).
    """
    g, r = U.shape
    if g >= r:
        L1, info = torch.linalg.cholesky_ex(U.T @ U)
        if not info:
            Q1 = torch.linalg.solve_triangular(L1, U.T, upper=False).T
            G2 = Q1.T @ Q1
            off = (G2 - torch.eye(r, dtype=U.dtype)).abs().max()
            L2, info = torch.linalg.cholesky_ex(G2)
            if not info and off <= 0.1:
                Q = torch.linalg.solve_triangular(L2, Q1.T, upper=False).T
                return Q, L2.T @ L1.T
    return torch.linalg.qr(U)


def _eigendecompose(model: BilinearMLP, outputs, n_modules: int | None, n_threads: int):
    with torch.no_grad():
        W, V, P = (t.detach().double().cpu() for t in (model.W, model.V, model.P))
    outputs = list(
        range(P.shape[0])
        if outputs is None
        else ([outputs] if np.isscalar(outputs) else outputs)
    )
    Q, R = _range_basis(torch.cat([W.T, V.T], dim=1))
    h = W.shape[0]
    T = (R[None, :, :h] * P[outputs][:, None, :]) @ R[:, h:].T  # R_W diag(P_a) R_Vᵀ
    S = 0.5 * (T + T.transpose(1, 2))
    chunks = np.array_split(
        np.arange(len(outputs)), max(1, min(n_threads, len(outputs)))
    )

    def solve(idx):
        return _lifted_eigenpairs(S[idx], Q, n_modules)

    if len(chunks) == 1:
        parts = [solve(chunks[0])]
    else:
        with ThreadPoolExecutor(len(chunks)) as pool:
            parts = list(pool.map(solve, chunks))
    return {
        outputs[i]: (vals[j], lifted[j].T)
        for idx, (vals, lifted) in zip(chunks, parts)
        for j, i in enumerate(idx)
    }


def _lifted_eigenpairs(S: torch.Tensor, Q: torch.Tensor, n_modules: int | None):
    """Eigenpairs of a batch of small symmetric ``S``, sorted by |λ|, vectors lifted by
    Q.

    Returns eigenvalues (batch × r) and oriented eigenvectors (batch × modules × genes).
    """
    vals, vecs = torch.linalg.eigh(S)  # ascending
    order = torch.argsort(-vals.abs(), dim=1, stable=True)
    vals = torch.take_along_dim(vals, order, dim=1).numpy()
    k = n_modules or vals.shape[1]
    vecs = torch.take_along_dim(vecs, order[:, None, :k], dim=2)
    lifted = (vecs.transpose(1, 2) @ Q.T).numpy()
    lifted *= np.where(lifted.max(2) >= -lifted.min(2), 1.0, -1.0)[:, :, None]
    return vals, lifted


def module_scores(X: np.ndarray, eigvecs: np.ndarray, bias: bool = False) -> np.ndarray:
    """Cells projected on modules: ``X @ eigvecs`` (with bias, x carries its constant
    1)."""
    X = np.asarray(X, np.float64)
    if bias:
        X = np.concatenate([X, np.ones((len(X), 1))], 1)
    return X @ eigvecs


def truncated_outputs(
    X: np.ndarray, modules: dict, k: int | None = None, bias: bool = False
) -> np.ndarray:
    """Every output rebuilt from its ``k`` modules of largest |λ|: ``Σ_m λ_m (u_mᵀx)²``.

    ``modules`` is :func:`eigendecompose`'s result (eigenpairs sorted by |λ|);
    ``k=None`` keeps them all, which reproduces the model's outputs exactly
    (cells × outputs, in the order of ``modules``).
    """
    cols = []
    for vals, vecs in modules.values():
        kk = len(vals) if k is None else k
        cols.append(module_scores(X, vecs[:, :kk], bias) ** 2 @ vals[:kk])
    return np.stack(cols, axis=1)


def orient(
    vecs: np.ndarray, X: np.ndarray, target: np.ndarray, bias: bool = False
) -> np.ndarray:
    """Flip each eigenvector (column) so that its module score correlates positively
    with ``target``.

    An eigenvector's sign is arbitrary; after this, the positive pole reads "higher
    where the target is higher" (in the class, along the axis).
    """
    sc_ = module_scores(X, vecs, bias)
    t = np.asarray(target, float)
    corr = ((sc_ - sc_.mean(0)) * (t - t.mean())[:, None]).sum(0)
    return vecs * np.where(corr < 0, -1.0, 1.0)


def module_tracking(
    model: BilinearMLP,
    X: np.ndarray,
    targets: np.ndarray,
    idx=None,
    n_modules: int = 3,
    output_names=None,
) -> pd.DataFrame:
    """How well each leading module's score follows its output's target.

    For output ``a`` and module ``m`` (sorted by |λ|, oriented with :func:`orient` on
    all rows): ``λ``, ``|λ| / |λ0|`` and the Spearman correlation of the module score
    with ``targets[:, a]`` on the rows ``idx`` (default all; pass the test split).
    Remember the output is ``Σ_m λ_m score_m²``: a module with λ < 0 lowers the output
    where its score is large.

    Returns
    -------
    DataFrame indexed by (output, module) with columns ``lambda``, ``rel_lambda``,
    ``spearman``.
    """
    X = np.asarray(X, np.float64)
    T = np.asarray(targets, float)
    T = T[:, None] if T.ndim == 1 else T
    names = list(output_names) if output_names is not None else list(range(model.n_out))
    idx = np.arange(len(X)) if idx is None else np.asarray(idx)
    rows = []
    for a, (vals, vecs) in eigendecompose(model, n_modules=n_modules).items():
        vecs = orient(vecs, X, T[:, a], model.bias)
        scores = module_scores(X[idx], vecs, model.bias)
        for m in range(vecs.shape[1]):
            rows.append(
                {
                    "output": names[a],
                    "module": m,
                    "lambda": vals[m],
                    "rel_lambda": abs(vals[m] / vals[0]),
                    "spearman": float(spearmanr(scores[:, m], T[idx, a]).statistic),
                }
            )
    return pd.DataFrame(rows).set_index(["output", "module"])


def safe_key(name) -> str:
    """An AnnData-safe key from an output name."""
    return re.sub(r"[^0-9A-Za-z_-]+", "_", str(name)).strip("_")


def _keys(key: str, output) -> tuple[str, str]:
    k = safe_key(output)
    return f"{key}_{k}_loadings", f"{key}_{k}_scores"


def annotate(
    adata,
    model: BilinearMLP,
    output_names,
    *,
    n_modules: int = 3,
    X: np.ndarray | None = None,
    targets: np.ndarray | None = None,
    key_added: str = "bilinear",
):
    """Write loadings, module scores and eigenvalues of every output into ``adata``
    (module doc).

    ``X`` defaults to ``adata.X`` (the features the model was trained on, genes in
    ``adata.var`` order). ``targets`` (cells × outputs: one-hot classes or regression
    targets), when given, orients each module so that its score correlates positively
    with its output's target: the positive pole then reads "higher in this class / along
    this axis". An eigenvector's sign is otherwise arbitrary. Read the results back with
    :func:`get_modules`.
    """
    if len(output_names) != model.n_out:
        raise ValueError(
            f"{len(output_names)} output names for a model with {model.n_out} outputs."
        )
    if adata.n_vars != model.n_in:
        raise ValueError(
            f"adata has {adata.n_vars} genes but the model was trained on "
            f"{model.n_in}; annotate the AnnData the features came from."
        )
    X = get_matrix(adata, dense=True) if X is None else np.asarray(X)
    eig = eigendecompose(model, n_modules=n_modules)
    uns = {
        "outputs": [str(o) for o in output_names],
        "eigenvalues": {},
        "params": {
            "n_modules": n_modules,
            "hidden": model.n_hidden,
            "bias": model.bias,
            "oriented": targets is not None,
        },
    }
    for a, name in enumerate(output_names):
        vals, vecs = eig[a]
        if targets is not None:
            vecs = vecs.copy()
            target = np.asarray(targets, float)[:, a]
            vecs[:, :n_modules] = orient(vecs[:, :n_modules], X, target, model.bias)
        loadings_key, scores_key = _keys(key_added, name)
        adata.varm[loadings_key] = vecs[: model.n_in, :n_modules].astype(np.float32)
        scores = module_scores(X, vecs[:, :n_modules], model.bias)
        adata.obsm[scores_key] = scores.astype(np.float32)
        uns["eigenvalues"][safe_key(name)] = vals.astype(np.float64)
    adata.uns[key_added] = uns
    return adata


def get_modules(adata, output, *, key: str = "bilinear"):
    """``(eigenvalues, loadings, scores)`` of one output as :func:`annotate` stored
    them.

    ``eigenvalues``: all of the output's eigenvalues sorted by |λ|; ``loadings``: genes
    × modules; ``scores``: cells × modules. ``key`` is the ``key_added`` of
    :func:`annotate`.
    """
    if key not in adata.uns or "eigenvalues" not in adata.uns[key]:
        raise KeyError(
            f"uns[{key!r}] holds no bilinear modules; run bilinear.annotate("
            f"adata, model, names, key_added={key!r}) first."
        )
    vals = adata.uns[key]["eigenvalues"]
    if safe_key(output) not in vals:
        raise KeyError(
            f"output {output!r} not in uns[{key!r}]; outputs: "
            f"{adata.uns[key]['outputs']}."
        )
    loadings_key, scores_key = _keys(key, output)
    return vals[safe_key(output)], adata.varm[loadings_key], adata.obsm[scores_key]


# ------------------------------------------------------------------------ repeated fits


def fit_repeats(
    X,
    Y,
    seeds,
    *,
    splits=None,
    stratify: bool = True,
    progress: bool = False,
    **fit_kwargs,
) -> list[dict]:
    """One :func:`fit` per seed: a fresh split and initial weights, training seeded
    alike.

    ``splits`` (one per seed) overrides the default split,
    :func:`~helpers.preprocess.split_indices` of ``Y`` (stratified when ``stratify``; of
    ``len(Y)`` otherwise) with that seed. Other keywords go to :func:`fit`. Returns one
    ``{"seed", "split", "model", "history"}`` per seed.
    """
    runs = []
    for i, s in enumerate(seeds):
        split = (
            splits[i]
            if splits is not None
            else split_indices(Y if stratify else len(Y), seed=s, stratify=stratify)
        )
        model, history = fit(X, Y, split, seed=s, progress=progress, **fit_kwargs)
        runs.append({"seed": s, "split": split, "model": model, "history": history})
    return runs


def classes_of(model: BilinearMLP, X) -> np.ndarray:
    """Predicted class per cell (argmax of the outputs)."""
    return predict(model, X).argmax(1)


def accuracy(pred, y, idx) -> float:
    """Share of cells ``idx`` whose prediction equals the label."""
    return float((np.asarray(pred)[idx] == np.asarray(y)[idx]).mean())


def per_class_accuracy(preds: dict, y, idx, classes) -> pd.DataFrame:
    """Accuracy per class on the cells ``idx``, one column per ``{name: predictions}``,
    and ``test cells`` (how many cells of each class ``idx`` holds). ``y`` holds class
    indices into ``classes``."""
    idx = np.asarray(idx)
    y = np.asarray(y)
    table = {
        name: [accuracy(p, y, idx[y[idx] == c]) for c in range(len(classes))]
        for name, p in preds.items()
    }
    table["test cells"] = [int((y[idx] == c).sum()) for c in range(len(classes))]
    return pd.DataFrame(table, index=classes)


def split_repeats(
    X, y, seeds, *, known: dict | None = None, **fit_kwargs
) -> pd.DataFrame:
    """Test accuracy of the classifier and the logistic baseline over random splits.

    For each seed: the stratified split with that seed, a bilinear :func:`fit` seeded
    with it and :func:`helpers.baselines.logistic` on the same split. ``known`` maps a
    seed to ``(bilinear predictions, baseline predictions)`` already computed (not
    refitted). Returns a table indexed by ``split seed`` with ``bilinear test``,
    ``baseline test`` and a ``mean`` row; ``table.attrs["best_epoch"]`` maps each seed
    fitted here to the epoch its model kept (:func:`best_epoch`).
    """
    known = known or {}
    todo = [s for s in seeds if s not in known]
    runs = {r["seed"]: r for r in fit_repeats(X, y, todo, **fit_kwargs)}
    rows = []
    for s in seeds:
        split = split_indices(y, seed=s)
        if s in known:
            pred, base = known[s]
        else:
            pred = classes_of(runs[s]["model"], X)
            base = logistic(X, y, split, seed=s)
        rows.append(
            {
                "split seed": s,
                "bilinear test": accuracy(pred, y, split["test"]),
                "baseline test": accuracy(base, y, split["test"]),
            }
        )
    table = pd.DataFrame(rows).set_index("split seed")
    table.loc["mean"] = table.mean()
    table.attrs["best_epoch"] = {s: best_epoch(r["history"]) for s, r in runs.items()}
    return table


def recipe_ablation(
    features: dict,
    y,
    split,
    recipes: dict,
    *,
    focus: int | None = None,
    focus_name: str = "focus",
    known: dict | None = None,
    seed: int = 0,
    **fit_kwargs,
) -> pd.DataFrame:
    """Training recipes on several feature sets, on one split, beside a logistic
    baseline.

    ``features`` maps a label (e.g. the number of genes) to a cells × genes matrix;
    ``recipes`` maps a name to :func:`fit` keywords (``bias``, ``epochs``, ...); other
    keywords are shared. ``known`` maps ``(feature label, model name)`` to predictions
    already computed. For each feature set the rows are the baseline (``"logistic
    baseline"``), then the recipes. Columns: validation and test accuracy, and test
    accuracy on class ``focus`` (``"<focus_name> (test)"``, NaN without one). Indexed by
    ``(genes, model)``.
    """
    known = known or {}
    va, te = split["val"], split["test"]
    rows = []
    for label, X in features.items():
        preds = {"logistic baseline": known.get((label, "logistic baseline"))}
        if preds["logistic baseline"] is None:
            preds["logistic baseline"] = logistic(X, y, split, seed=seed)
        for name, kw in recipes.items():
            if (label, name) in known:
                preds[name] = known[(label, name)]
                continue
            model, _ = fit(X, y, split, seed=seed, progress=False, **fit_kwargs, **kw)
            preds[name] = classes_of(model, X)
        for name, p in preds.items():
            in_focus = te[y[te] == focus] if focus is not None else None
            rows.append(
                {
                    "genes": label,
                    "model": name,
                    "validation accuracy": accuracy(p, y, va),
                    "test accuracy": accuracy(p, y, te),
                    f"{focus_name} (test)": accuracy(p, y, in_focus)
                    if focus is not None
                    else np.nan,
                }
            )
    return pd.DataFrame(rows).set_index(["genes", "model"])
