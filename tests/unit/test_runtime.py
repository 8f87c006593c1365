"""Step budgets: training time that grows with the budget, not with the cells."""

import numpy as np
import pytest

from helpers import bilinear, sae
from helpers.runtime import epochs_for_budget


def test_a_step_budget_caps_whole_epochs():
    assert epochs_for_budget(100, 1000, 100) == 100          # no budget
    assert epochs_for_budget(100, 1000, 100, max_steps=250) == 25
    assert epochs_for_budget(100, 1001, 100, max_steps=250) == 22  # 11 steps per epoch
    assert epochs_for_budget(3, 1000, 100, max_steps=10_000) == 3   # epochs still cap
    assert epochs_for_budget(100, 10**6, 100, max_steps=5) == 1     # at least one epoch
    with pytest.raises(ValueError, match="max_steps=0"):
        epochs_for_budget(10, 100, 10, max_steps=0)
    with pytest.raises(ValueError, match="each must be at least 1"):
        epochs_for_budget(10, 0, 10)


def test_trainers_stop_at_the_budget():
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(500, 8)).astype(np.float32)
    model, hist = sae.train_sae(Z, 16, 2, epochs=50, batch_size=90, max_steps=12,
                                progress=False, val_fraction=0.1)
    assert len(hist) == model.settings.epochs == 2  # 450 training cells: 5 steps/epoch
    y = (Z[:, 0] > 0).astype(int)
    split = {"train": np.arange(300), "val": np.arange(300, 400)}
    m = bilinear.BilinearMLP(8, 4, 2, seed=0)
    m, h = bilinear.train_bilinear(m, Z, y, split, epochs=40, batch_size=100,
                                   max_steps=9, progress=False)
    assert len(h) == m.settings.epochs == 3
