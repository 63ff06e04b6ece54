"""The measurement settings host bench (`tlx bench RUN_DIR`) and device bench (`tlx bench
BUNDLE`) share: one type, so the two benches time, warm up and gate alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from tlx.drop import DropGate


@dataclass(frozen=True)
class MeasureOptions:
    """How each model is timed and when the int8 drop fails the run."""

    #: Interpreter thread counts to time; the first one also runs the accuracy evaluation.
    threads: tuple[int, ...] = (1, 2)
    #: Timed runs per model, backend and thread count (after the warm-up).
    runs: int = 50
    #: Discarded warm-up runs before timing.
    warmup: int = 5
    #: Measure `tlx predict` cold start and peak memory in a fresh process.
    cold_start: bool = True
    #: Fail (exit 3) when an int8 model loses more than this many top-1 points against the
    #: reference (None: no limit). Checked by tlx.drop.check_max_drop.
    max_drop: Optional[float] = None
    #: What of the drop is held to max_drop: the point estimate, or the upper bound of its
    #: paired 95% interval (stricter: fails unless the data show the drop is within the limit).
    max_drop_on: DropGate = DropGate.POINT
