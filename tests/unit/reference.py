"""Test-only reference code and toy models (no chapter or benchmark uses them)."""

import numpy as np
import pandas as pd

from helpers.sae import sae_metrics


class PairSumEmbedding:
    """A toy 'embedding' with planted genes: neuron j = genes 2j + 2j+1, minus 3."""

    def __init__(self, n_genes):
        self.genes = [f"g{i}" for i in range(n_genes)]
        self.W = np.zeros((n_genes, n_genes // 2))
        for j in range(n_genes // 2):
            self.W[2 * j : 2 * j + 2, j] = 1.0

    def encode(self, X, batch_size=1024):
        X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
        return (X @ self.W - 3.0).astype(np.float32)


def cross_r2(model, Z_train, Z_external) -> pd.DataFrame:
    """Reconstruction metrics of one SAE on its training embeddings and on other ones.

    Parameters
    ----------
    model
        A trained ``helpers.sae.TopKSAE``.
    Z_train, Z_external
        Embeddings (n x d) of the training cells and of cells from another dataset, in
        the same embedding space (same encoder).

    Returns
    -------
    DataFrame with rows ``within`` and ``across`` and the columns of
    ``helpers.sae.sae_metrics`` (r2, l0, n_dead, n_active). R² uses each evaluation
    set's own per-feature means, so ``across`` asks how much of the external data's
    variance the dictionary explains.
    """
    Z_train = np.asarray(Z_train, dtype=np.float32)
    Z_external = np.asarray(Z_external, dtype=np.float32)
    two_d = Z_train.ndim == Z_external.ndim == 2
    same_space = two_d and Z_train.shape[1] == Z_external.shape[1]
    if not same_space:
        raise ValueError(
            f"Z_train {Z_train.shape} and Z_external {Z_external.shape} must be 2-D "
            "with the same number of columns: encode both datasets with the same "
            "embedding model."
        )
    rows = {
        "within": sae_metrics(model, Z_train),
        "across": sae_metrics(model, Z_external),
    }
    return pd.DataFrame(rows).T
