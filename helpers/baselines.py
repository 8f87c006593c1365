"""Linear baselines on the same features and split as the bilinear models.

An interpretable model that loses to a linear one teaches the wrong lesson, so every bilinear
chapter reports one of these beside it.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge


def logistic(X: np.ndarray, y: np.ndarray, split: dict, C: float = 1.0, seed: int = 0) -> np.ndarray:
    """Multinomial logistic regression fit on ``split["train"]``; returns predicted classes for all cells."""
    model = LogisticRegression(C=C, max_iter=3000, random_state=seed)
    model.fit(X[split["train"]], y[split["train"]])
    return model.predict(X)


def ridge(X: np.ndarray, Y: np.ndarray, split: dict, alpha: float = 1.0) -> np.ndarray:
    """Ridge regression fit on ``split["train"]``; returns predictions (cells × outputs) for all cells."""
    model = Ridge(alpha=alpha).fit(X[split["train"]], Y[split["train"]])
    pred = model.predict(X)
    return pred[:, None] if pred.ndim == 1 else pred
