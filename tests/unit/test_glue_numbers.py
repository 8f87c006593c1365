"""chapter.glue_numbers: the chapters' prose shows what was computed."""

import math

import numpy as np
import pytest

from helpers import chapter


@pytest.fixture
def glued(monkeypatch):
    import myst_nb

    calls = {}

    def glue(key, value, display=True):
        calls[key] = (value, display)

    monkeypatch.setattr(myst_nb, "glue", glue)
    return calls


def test_glue_numbers_rounds_floats_keeps_ints_and_hides_output(glued):
    out = chapter.glue_numbers(
        digits=3, acc=0.91234567, n=np.int64(70), lam=np.float32(0.0741), pct=15
    )
    assert out == {"acc": 0.912, "n": 70, "lam": 0.074, "pct": 15}
    assert glued["acc"] == (0.912, False)
    assert type(glued["n"][0]) is int and type(glued["acc"][0]) is float
    # a value that differs only beyond the printed digits glues the same text
    assert chapter.glue_numbers(x=0.1 + 0.2)["x"] == chapter.glue_numbers(x=0.3)["x"]


def test_glue_numbers_missing_values_read_nan(glued):
    out = chapter.glue_numbers(none=None, nan=float("nan"))
    assert math.isnan(out["none"]) and math.isnan(out["nan"])
    assert format(glued["none"][0], ".2f") == "nan"


@pytest.mark.parametrize("bad", ["0.9", True, [0.9]])
def test_glue_numbers_refuses_anything_but_a_number(glued, bad):
    with pytest.raises(TypeError, match="not a number"):
        chapter.glue_numbers(x=bad)
    assert glued == {}
