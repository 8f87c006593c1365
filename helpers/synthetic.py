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
