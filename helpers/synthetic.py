"""Planted-truth data shared by tests and benchmarks (and chapters' planted checks).

Each generator returns data whose answer is known: the structure a method should recover is
stored beside it (``varm["planted_*"]``, ``uns["planted_*"]`` or a returned array). Seeded; no
file is read. Model: decoupler's ``dc.ds.toy()`` and scvi-tools' ``synthetic_iid``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData


# ------------------------------------------------------------------ counts, trajectories, modules


# ------------------------------------------------------------------ perturbations and composition


# ------------------------------------------------------------------ embeddings and dictionaries
def unit_dictionary(c: int, d: int, *, seed=0) -> np.ndarray:
    """``(c, d)`` atoms drawn uniformly on the unit sphere of R^d (normed Gaussians).

    ``seed`` is an int or a ``numpy.random.Generator`` (draws continue from it).
    """
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((c, d))
    return D / np.linalg.norm(D, axis=1, keepdims=True)


def planted_sparse_codes(n: int, D: np.ndarray, k: int, *, low: float = 0.5,
                         high: float = 2.0, noise: float = 0.0,
                         seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings that are sparse non-negative combinations of the rows of ``D``.

    Every cell uses ``k`` distinct atoms chosen uniformly, with loadings uniform in
    ``[low, high)``, plus Gaussian noise of standard deviation ``noise``: a Top-K SAE
    with ``c >= len(D)`` and this ``k`` should recover ``D`` (up to order).

    Returns
    -------
    ``(Z, A)``: the ``(n, d)`` float32 embeddings and the ``(n, c)`` planted codes.
    """
    rng = np.random.default_rng(seed)
    c = D.shape[0]
    idx = np.argsort(rng.random((n, c)), axis=1)[:, :k]
    A = np.zeros((n, c), dtype=np.float32)
    np.put_along_axis(A, idx, rng.uniform(low, high, (n, k)).astype(np.float32), axis=1)
    Z = A @ D
    if noise:
        Z = Z + noise * rng.standard_normal(Z.shape)
    return Z.astype(np.float32), A
