"""What every module shares at run time: the device, seeds, and JSON-safe values.

``PYTHONHASHSEED`` cannot be set from inside a running interpreter (it is read at
start-up): ``make test`` sets it in the environment of the chapter runs.
"""

from __future__ import annotations

import math
import random
from contextlib import contextmanager

import numpy as np
import torch


def get_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``: CUDA, then Apple MPS, then CPU; else ``torch.device(device)``."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if (
            getattr(torch.backends, "mps", None) is not None
            and torch.backends.mps.is_available()
        ):
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={device!r} requested but CUDA is not available. Use "
            "device='auto' or 'cpu'."
        )
    return dev


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch. Returns a seeded generator.

    The CPU kernels the book uses (dense matmul, elementwise ops) are deterministic for
    a fixed thread count; on CUDA some reductions are not, so results there may differ
    in the last digits.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def jsonable(x, digits: int | None = None):
    """``x`` with numpy/pandas values as JSON types (NaN → None; ``digits`` rounds)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v, digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v, digits) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist(), digits)
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        if not math.isfinite(float(x)):
            return None
        return float(x) if digits is None else round(float(x), digits)
    if hasattr(x, "to_dict"):
        return jsonable(x.to_dict(), digits)
    return x


def epochs_for_budget(
    epochs: int, n_train: int, batch_size: int, max_steps: int | None = None
) -> int:
    """Epochs to run: ``epochs``, capped so that at most about ``max_steps`` optimizer
    steps are taken (whole epochs, at least one).

    A budget in steps keeps training time linear in the budget rather than in the
    number of cells: defaults tuned on thousands of cells do not become hours on an
    atlas. ``max_steps=None`` (default) runs all ``epochs``.
    """
    if epochs < 1 or n_train < 1 or batch_size < 1:
        raise ValueError(
            f"epochs={epochs}, n_train={n_train}, batch_size={batch_size}: "
            "each must be at least 1."
        )
    if max_steps is None:
        return int(epochs)
    if max_steps < 1:
        raise ValueError(f"max_steps={max_steps}; pass a positive step budget or None.")
    per_epoch = math.ceil(n_train / batch_size)
    return int(min(epochs, max(1, max_steps // per_epoch)))


@contextmanager
def single_thread():
    """Run the enclosed numpy/scipy (BLAS, LAPACK) and torch calls on one thread.

    For many small dense problems (the rank-2h eigenproblems of
    :func:`helpers.bilinear.eigendecompose`) threads cost more than they give, and on
    a busy machine spinning BLAS threads can make them 10-100× slower. The previous
    thread counts are restored on exit.
    """
    from threadpoolctl import threadpool_limits

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(n)
