"""Linear baselines on the same features and split as the bilinear models.

An interpretable model that loses to a linear one teaches the wrong lesson, so every
bilinear chapter reports one of these beside it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge


def logistic(
    X: np.ndarray, y: np.ndarray, split: dict, C: float = 1.0, seed: int = 0
) -> np.ndarray:
    """Multinomial logistic regression fit on ``split["train"]``; predicted classes, all
    cells."""
    model = LogisticRegression(C=C, max_iter=3000, random_state=seed)
    model.fit(X[split["train"]], y[split["train"]])
    return model.predict(X)


def ridge(
    X: np.ndarray, Y: np.ndarray, split: dict, *, alpha: float | Sequence[float] = 1.0
) -> tuple[np.ndarray, float]:
    """Ridge regression fit on ``split["train"]`` (float64).

    ``alpha`` is the penalty, or several candidates: then the one with the lowest mean
    absolute error on ``split["val"]`` is kept (the first on ties).

    Returns
    -------
    ``(predictions, alpha)``: predictions (cells × outputs) for every row of ``X`` and
    the penalty used.
    """
    X = np.asarray(X, np.float64)
    Y = np.asarray(Y, np.float64).reshape(len(X), -1)
    train, val = split["train"], split["val"]
    best = None
    for a in np.atleast_1d(alpha).tolist():
        model = Ridge(alpha=a).fit(X[train], Y[train])
        mae = np.abs(model.predict(X[val]).reshape(len(val), -1) - Y[val]).mean()
        if best is None or mae < best[0]:
            best = (mae, a, model)
    _, alpha, model = best
    return model.predict(X).reshape(len(X), -1), alpha
