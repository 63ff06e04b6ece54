"""Statistics behind the bench report."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tlx.stats import confusion_matrix, latency_from_seconds, wilson


def test_wilson_matches_published_values():
    # Wilson 95% interval for 81/263 (Newcombe 1998, example): 0.2553 to 0.3662.
    p = wilson(81, 263)
    assert p.low == pytest.approx(0.2553, abs=1e-4) and p.high == pytest.approx(0.3662, abs=1e-4)


@given(st.integers(1, 100_000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_interval_always_contains_the_proportion(successes_n):
    """Exactly, not within rounding: 42/42 gave high 0.9999999999999999 < 1.0 once, and the bench
    chart's error bar below zero made `tlx bench` fail on a perfect model."""
    successes, n = successes_n
    p = wilson(successes, n)
    assert 0.0 <= p.low <= p.value <= p.high <= 1.0


def test_wilson_is_sound_at_the_edges():
    perfect = wilson(20, 20)
    assert perfect.value == 1.0 and perfect.high == pytest.approx(1.0) and 0.80 < perfect.low < 0.85
    assert wilson(0, 10).low == pytest.approx(0.0)
    assert np.isnan(wilson(0, 0).low)


def test_latency_percentiles_in_milliseconds():
    lat = latency_from_seconds([0.001] * 98 + [0.010, 0.020])
    assert lat.p50 == pytest.approx(1.0) and lat.runs == 100
    assert lat.p99 > 9.0 and lat.throughput == pytest.approx(1000.0)


def test_confusion_matrix_leaves_out_failures():
    matrix = confusion_matrix([0, 0, 1, 1, 2], [0, 1, 1, -1, 2], 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
