"""Device choice and seeding, shared by every torch model in the book."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def get_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then CPU; anything else is passed to ``torch.device``."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} requested but CUDA is not available. Use device='auto' or 'cpu'.")
    return dev


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch. Returns a seeded generator.

    The CPU kernels the book uses (dense matmul, elementwise ops) are deterministic for a fixed
    thread count; on CUDA some reductions are not, so results there may differ in the last digits.
    """
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
