"""--max-drop: one check for export, the int8 fallback, host bench and device bench."""

import math

import pytest

from tlx.drop import check_max_drop
from tlx.errors import TlxError


@pytest.mark.parametrize("value", [None, 0.0, 0.5, 100.0])
def test_none_and_zero_or_more_points_pass(value):
    assert check_max_drop(value) == value


@pytest.mark.parametrize("value", [-0.1, -math.inf, math.nan])
def test_negative_and_nan_are_refused_with_the_option_named(value):
    with pytest.raises(TlxError, match="--max-drop must be 0 or more percentage points"):
        check_max_drop(value)
