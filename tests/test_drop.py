"""--max-drop: one check for export, the int8 fallback, host bench and device bench, and
one gate (point or upper bound of the paired interval) for host and device bench."""

import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from tlx.drop import DropGate, check_max_drop, drop_exceeded, drop_text, gated_value
from tlx.errors import TlxError
from tlx.export.formats import FORMATS, is_int8_model
from tlx.stats import paired_difference


@pytest.mark.parametrize("value", [None, 0.0, 0.5, 100.0])
def test_none_and_zero_or_more_points_pass(value):
    assert check_max_drop(value) == value


@pytest.mark.parametrize("value", [-0.1, -math.inf, math.nan])
def test_negative_and_nan_are_refused_with_the_option_named(value):
    with pytest.raises(TlxError, match="--max-drop must be 0 or more percentage points"):
        check_max_drop(value)


# --- the gate ------------------------------------------------------------------------------


def _drop(n: int, lost: int):
    """A real paired drop: the reference right on all n images, the model wrong on `lost`."""
    truth = np.zeros(n, dtype=int)
    other = np.where(np.arange(n) < lost, 1, 0)
    return paired_difference(truth, truth, other)


def test_the_upper_bound_gate_fails_where_the_point_gate_passes():
    drop = _drop(200, 2)  # 1.00 points, 95% interval about [-0.38, +2.38]
    assert drop.points == 1.0 and drop.low < 0 < drop.points < 1.5 < drop.high
    rows = [("keras", None), ("float32", _drop(200, 0)), ("int8", drop)]
    assert not drop_exceeded(rows, 1.5, DropGate.POINT)
    assert drop_exceeded(rows, 1.5, DropGate.UPPER)
    assert drop_exceeded(rows, 0.5, DropGate.POINT)  # under the measured drop: both fail
    assert not drop_exceeded(rows, None, DropGate.UPPER)  # no limit, no gate
    assert not drop_exceeded(rows, 2.5, DropGate.UPPER)  # over the upper bound: both pass


def test_only_int8_models_of_the_format_table_are_gated():
    lossy = _drop(200, 50)
    assert [name for name in FORMATS if is_int8_model(name)] == ["int8"]
    assert is_int8_model("int8 (litert-builtin)")  # tlx bench --compare-backends' row names
    for name in ("float32", "float16", "dynamic", "keras", "int8_floatout", "int8x"):
        assert not is_int8_model(name)
        assert not drop_exceeded([(name, lossy)], 1.0, DropGate.POINT)
    assert drop_exceeded([("int8 (tflite-runtime)", lossy)], 1.0, DropGate.POINT)


def test_without_an_interval_the_upper_bound_is_the_point():
    same = _drop(50, 0)  # no image changed correctness: no interval
    assert gated_value(same, DropGate.UPPER) == gated_value(same, "point") == 0.0
    assert not drop_exceeded([("int8", same)], 0.0, DropGate.UPPER)
    assert drop_text(same) == "+0.00 (no image changed correctness)"
    assert drop_text(_drop(200, 2)) == "+1.00 [-0.38, +2.38]"


@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=300),
       st.floats(0, 100, allow_nan=False))
def test_the_upper_bound_gate_is_never_laxer_than_the_point_gate(pairs, limit):
    truth = np.zeros(len(pairs), dtype=int)
    reference = np.array([0 if right else 1 for right, _ in pairs])
    model = np.array([0 if right else 1 for _, right in pairs])
    rows = [("int8", paired_difference(truth, reference, model))]
    if drop_exceeded(rows, limit, DropGate.POINT):
        assert drop_exceeded(rows, limit, DropGate.UPPER)


def test_the_upper_bound_gate_without_a_limit_is_refused():
    """It would gate nothing: a forgotten --max-drop must not pass silently."""
    assert check_max_drop(1.0, DropGate.UPPER) == 1.0
    assert check_max_drop(None, DropGate.POINT) is None
    with pytest.raises(TlxError, match="--max-drop-on upper .* add --max-drop POINTS"):
        check_max_drop(None, DropGate.UPPER)
