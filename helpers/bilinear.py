"""Bilinear MLPs and the gene modules read from their weights.

A bilinear layer computes ``y = P (W x ⊙ V x)`` with ``W, V ∈ R^{h×g}`` and ``P ∈ R^{t×h}``. Output
``a`` is the quadratic form ``xᵀ Q_a x`` with ``Q_a = Σ_h P_ah w_h v_hᵀ = Wᵀ diag(P_a) V``. Only the
symmetric part ``B_a = (Q_a + Q_aᵀ)/2`` contributes, and its eigenvectors are gene modules.

``B_a = U M_a Uᵀ`` with ``U = [Wᵀ Vᵀ] ∈ R^{g×2h}`` and ``M_a = ½[[0, diag P_a], [diag P_a, 0]]``, so
its rank is at most 2h. With ``U = Q R`` (thin QR, shared by every output) the nonzero eigenpairs of
``B_a`` are those of the 2h×2h matrix ``R M_a Rᵀ`` mapped back by ``Q``: no g×g matrix is ever built.

A bias, when asked for, is a constant 1 appended to x, so the model stays an exact quadratic form
(the last coordinate of every loading is then the constant's weight, not a gene's).

AnnData keys written by :func:`annotate` (``key`` defaults to ``"bilinear"``; ``<out>`` is the
output name with characters other than letters, digits, ``-`` and ``_`` replaced by ``_``):

- ``adata.varm["<key>_<out>_loadings"]``: genes × modules, eigenvectors sorted by |eigenvalue|;
- ``adata.obsm["<key>_<out>_scores"]``: cells × modules, projections of the features on them;
- ``adata.uns["<key>"]``: ``outputs`` (names), ``eigenvalues`` (dict: output → all 2h eigenvalues,
  sorted by |λ|), ``n_modules``, ``hidden``, ``bias``.
"""

from __future__ import annotations

import os
import re
import time

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .runtime import get_device, seed_everything


class BilinearMLP(nn.Module):
    """``y = P (W x ⊙ V x)``: one ``Linear(g, 2h)`` split into W and V, then a linear head P.

    Parameters
    ----------
    n_in, n_hidden, n_out
        Genes g, hidden width h, outputs t.
    bias
        Append a constant 1 to x (linear and constant terms while staying a quadratic form).
    dropout
        Dropout on the input genes during training (the constant input is never dropped).
    seed
        Seed for the initial weights (``None``: torch's global generator). Training is seeded
        separately by :func:`train_bilinear`; seed both for a reproducible run.
    """

    def __init__(self, n_in: int, n_hidden: int, n_out: int, bias: bool = False, dropout: float = 0.0,
                 seed: int | None = None):
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
        return self.proj.weight[self.n_hidden:]

    @property
    def P(self) -> torch.Tensor:
        return self.head.weight

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """x with the constant 1 appended when the model has a bias."""
        return torch.cat([x, torch.ones_like(x[:, :1])], 1) if self.bias else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right = self.proj(self.augment(self.drop(x))).chunk(2, dim=-1)
        return self.head(left * right)


# ------------------------------------------------------------------------------------ training

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


def train_bilinear(model: BilinearMLP, X: np.ndarray, Y: np.ndarray, split: dict,
                   task: str = "classification", loss: str | None = None, epochs: int = 100,
                   lr: float = 1e-3, weight_decay: float = 0.0, batch_size: int = 64,
                   noise_std: float = 0.0, class_weight: str | None = None, huber_delta: float = 1.0,
                   device: str = "auto", seed: int = 0, progress: bool = True):
    """Train with AdamW and a cosine learning-rate schedule; returns ``(model, history)``.

    Parameters
    ----------
    X
        cells × genes features (float).
    Y
        Class indices (classification) or cells × outputs targets (regression).
    split
        ``{"train": idx, "val": idx, ...}`` (see :func:`helpers.preprocess.split_indices`).
    class_weight
        ``"balanced"`` weighs the cross-entropy by inverse class frequency in the training split.
    noise_std
        Standard deviation of Gaussian noise added to training inputs (augmentation).

    Returns
    -------
    The trained model (on CPU, eval mode) and a per-epoch DataFrame with train/val loss and
    accuracy (classification) or MAE (regression).
    """
    if task not in ("classification", "regression"):
        raise ValueError(f"task={task!r}; use 'classification' or 'regression'.")
    if len(X) != len(Y):
        raise ValueError(f"X has {len(X)} cells but Y has {len(Y)}; they must match.")
    for part in ("train", "val"):
        if part not in split or len(split[part]) == 0:
            raise ValueError(f"split needs a non-empty {part!r} index array.")
    gen = seed_everything(seed)
    dev = get_device(device)
    Xt = torch.as_tensor(np.asarray(X, np.float32), device=dev)
    if task == "classification":
        Yt = torch.as_tensor(np.array(Y), dtype=torch.long, device=dev)
        weight = None
        if class_weight == "balanced":
            counts = torch.bincount(Yt[split["train"]], minlength=model.n_out).float()
            weight = (counts.sum() / (model.n_out * counts.clamp(min=1))).to(dev)
    else:
        Yt = torch.as_tensor(np.array(Y, np.float32), device=dev)
        Yt = Yt[:, None] if Yt.ndim == 1 else Yt
        weight = None
    criterion, loss = _loss_fn(task, loss, weight, huber_delta)
    model.to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, foreach=True)
    train_idx = torch.as_tensor(split["train"], device=dev)
    steps = epochs * int(np.ceil(len(train_idx) / batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    rows = []
    bar = tqdm(range(epochs), desc="training", disable=not progress or bool(os.environ.get("TQDM_DISABLE")), leave=False)
    t0 = time.perf_counter()
    for epoch in bar:
        model.train()
        perm = train_idx[torch.randperm(len(train_idx), generator=gen).to(dev)]
        for start in range(0, len(perm), batch_size):
            b = perm[start:start + batch_size]
            xb = Xt[b]
            if noise_std > 0:
                xb = xb + noise_std * torch.randn(xb.shape, generator=gen).to(dev)
            opt.zero_grad(set_to_none=True)
            criterion(model(xb), Yt[b]).backward()
            opt.step()
            sched.step()
        row = {"epoch": epoch + 1, "lr": sched.get_last_lr()[0]}
        row.update(_evaluate(model, Xt, Yt, split, criterion, task))
        rows.append(row)
        bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k.startswith("val_")})
    model.to("cpu").eval()
    history = pd.DataFrame(rows)
    history.attrs.update(seconds=time.perf_counter() - t0, device=str(dev), loss=loss)
    return model, history


def fit(X: np.ndarray, Y: np.ndarray, split: dict, hidden: int = 128, task: str = "classification",
        bias: bool = False, dropout: float = 0.0, n_out: int | None = None, seed: int = 0, **train_kwargs):
    """Build a :class:`BilinearMLP` sized for ``X`` and ``Y`` (initial weights seeded) and train it.

    ``n_out`` defaults to ``max(Y) + 1`` classes (classification) or the columns of ``Y``
    (regression); every other keyword goes to :func:`train_bilinear`. Returns ``(model, history)``.
    """
    X = np.asarray(X, np.float32)
    if task == "regression":
        Y = np.asarray(Y, np.float32)
        Y = Y[:, None] if Y.ndim == 1 else Y
        n_out = n_out or Y.shape[1]
    else:
        n_out = n_out or int(np.max(Y)) + 1
    model = BilinearMLP(X.shape[1], hidden, n_out, bias=bias, dropout=dropout, seed=seed)
    return train_bilinear(model, X, Y, split, task=task, seed=seed, **train_kwargs)


@torch.no_grad()
def _evaluate(model, Xt, Yt, split, criterion, task) -> dict:
    model.eval()
    out = {}
    for part in ("train", "val"):
        idx = torch.as_tensor(split[part], device=Xt.device)
        pred = torch.cat([model(Xt[idx[i:i + 4096]]) for i in range(0, len(idx), 4096)])
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
    Xt = torch.as_tensor(np.asarray(X, np.float32))
    return torch.cat([model(Xt[i:i + batch_size]) for i in range(0, len(Xt), batch_size)]).numpy()


# ------------------------------------------------------------------ interaction matrices, eigen

def _weights(model: BilinearMLP):
    with torch.no_grad():
        return (model.W.detach().double().cpu().numpy(), model.V.detach().double().cpu().numpy(),
                model.P.detach().double().cpu().numpy())


def interaction_matrix(model: BilinearMLP, output: int) -> np.ndarray:
    """The dense symmetric ``B_a = (Q_a + Q_aᵀ)/2`` (g×g, or (g+1)×(g+1) with bias). Small g only."""
    W, V, P = _weights(model)
    Q = W.T @ (P[output][:, None] * V)
    return (Q + Q.T) / 2


def eigendecompose(model: BilinearMLP, outputs=None, n_modules: int | None = None):
    """Eigenpairs of every requested output's ``B_a`` through the rank-2h route.

    One thin QR of ``U = [Wᵀ Vᵀ]`` is shared by all outputs; the small matrices
    ``R M_a Rᵀ = ½ (R_W diag(P_a) R_Vᵀ + transpose)`` of all outputs are built and solved as one
    batched ``eigh``, in float64.

    Returns
    -------
    dict ``output index → (eigenvalues, eigenvectors)``: all nonzero-subspace eigenvalues (length
    min(g, 2h)) sorted by |λ| descending; eigenvectors as columns (g × r) for the first
    ``n_modules`` (default: all r), each oriented so that its largest-magnitude entry is positive.
    Mapping eigenvectors back to genes is the costly step, so ask only for the modules you read.
    """
    W, V, P = _weights(model)
    outputs = list(range(P.shape[0]) if outputs is None else ([outputs] if np.isscalar(outputs) else outputs))
    # thin QR, shared by all outputs (torch's LAPACK call is ~3x faster than numpy's here)
    Qo, R = (t.numpy() for t in torch.linalg.qr(torch.from_numpy(np.concatenate([W.T, V.T], axis=1))))
    h = W.shape[0]
    RW, RV = R[:, :h], R[:, h:]
    T = (RW[None] * P[outputs][:, None, :]) @ RV.T  # R_W diag(P_a) R_Vᵀ for every requested a
    vals_all, vecs_all = np.linalg.eigh(0.5 * (T + T.transpose(0, 2, 1)))  # ascending: reorder by |λ|
    result = {}
    for i, a in enumerate(outputs):
        order = np.argsort(-np.abs(vals_all[i]), kind="stable")
        vt = vecs_all[i][:, order[: n_modules or len(order)]].T @ Qo.T  # modules × genes, rows contiguous
        flip = np.sign(vt[np.arange(vt.shape[0]), np.abs(vt).argmax(1)])
        result[a] = (vals_all[i][order], (vt * flip[:, None]).T)
    return result


def module_scores(X: np.ndarray, eigvecs: np.ndarray, bias: bool = False) -> np.ndarray:
    """Cells projected on modules: ``X @ eigvecs`` (with bias, x carries its constant 1)."""
    X = np.asarray(X, np.float64)
    if bias:
        X = np.concatenate([X, np.ones((len(X), 1))], 1)
    return X @ eigvecs


def orient(vecs: np.ndarray, X: np.ndarray, target: np.ndarray, bias: bool = False) -> np.ndarray:
    """Flip each eigenvector (column) so that its module score correlates positively with ``target``.

    An eigenvector's sign is arbitrary; after this, the positive pole reads "higher where the
    target is higher" (in the class, along the axis).
    """
    sc_ = module_scores(X, vecs, bias)
    t = np.asarray(target, float)
    corr = ((sc_ - sc_.mean(0)) * (t - t.mean())[:, None]).sum(0)
    return vecs * np.where(corr < 0, -1.0, 1.0)


def module_tracking(model: BilinearMLP, X: np.ndarray, targets: np.ndarray, idx=None, n_modules: int = 3,
                    output_names=None) -> pd.DataFrame:
    """How well each leading module's score follows its output's target.

    For output ``a`` and module ``m`` (sorted by |λ|, oriented with :func:`orient` on all rows):
    ``λ``, ``|λ| / |λ0|`` and the Spearman correlation of the module score with ``targets[:, a]``
    on the rows ``idx`` (default all; pass the test split). Remember the output is
    ``Σ_m λ_m score_m²``: a module with λ < 0 lowers the output where its score is large.

    Returns
    -------
    DataFrame indexed by (output, module) with columns ``lambda``, ``rel_lambda``, ``spearman``.
    """
    from scipy.stats import spearmanr

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
            rows.append({"output": names[a], "module": m, "lambda": vals[m], "rel_lambda": abs(vals[m] / vals[0]),
                         "spearman": float(spearmanr(scores[:, m], T[idx, a]).statistic)})
    return pd.DataFrame(rows).set_index(["output", "module"])


def safe_key(name) -> str:
    """An AnnData-safe key from an output name."""
    return re.sub(r"[^0-9A-Za-z_-]+", "_", str(name)).strip("_")


def annotate(adata, model: BilinearMLP, output_names, n_modules: int = 3, X: np.ndarray | None = None,
             targets: np.ndarray | None = None, key: str = "bilinear"):
    """Write loadings, module scores and eigenvalues of every output into ``adata`` (see module doc).

    ``X`` defaults to ``adata.X`` (the features the model was trained on, genes in ``adata.var`` order).
    ``targets`` (cells × outputs: one-hot classes or regression targets), when given, orients each
    module so that its score correlates positively with its output's target: the positive pole then
    reads "higher in this class / along this axis". An eigenvector's sign is otherwise arbitrary.
    """
    from .preprocess import dense

    if len(output_names) != model.n_out:
        raise ValueError(f"{len(output_names)} output names for a model with {model.n_out} outputs.")
    if adata.n_vars != model.n_in:
        raise ValueError(f"adata has {adata.n_vars} genes but the model was trained on {model.n_in}; "
                         "annotate the AnnData the features came from.")
    X = dense(adata.X) if X is None else np.asarray(X)
    eig = eigendecompose(model, n_modules=n_modules)
    uns = {"outputs": [str(o) for o in output_names], "eigenvalues": {}, "n_modules": n_modules,
           "hidden": model.n_hidden, "bias": model.bias}
    for a, name in enumerate(output_names):
        vals, vecs = eig[a]
        k = safe_key(name)
        if targets is not None:
            vecs = vecs.copy()
            vecs[:, :n_modules] = orient(vecs[:, :n_modules], X, np.asarray(targets, float)[:, a], model.bias)
        adata.varm[f"{key}_{k}_loadings"] = vecs[: model.n_in, :n_modules].astype(np.float32)
        adata.obsm[f"{key}_{k}_scores"] = module_scores(X, vecs[:, :n_modules], model.bias).astype(np.float32)
        uns["eigenvalues"][k] = vals.astype(np.float64)
    adata.uns[key] = uns
    return adata
