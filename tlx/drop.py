"""The accuracy-drop limit (`--max-drop`): one check of the option and one gate, for export,
its int8 fallback, host bench and device bench alike."""

from __future__ import annotations

import enum
import math
from typing import Iterable, Optional

from tlx.errors import TlxError
from tlx.export.formats import is_int8_model
from tlx.stats import PairedDifference


class DropGate(str, enum.Enum):
    """What of an int8 model's drop `--max-drop` holds to the limit."""

    #: The measured drop (reference minus model, in points).
    POINT = "point"
    #: The upper bound of the drop's paired 95% interval: the run passes only when the data
    #: show the drop is within the limit, not merely that the estimate is.
    UPPER = "upper"


def check_max_drop(max_drop: Optional[float], on: DropGate = DropGate.POINT) -> Optional[float]:
    """`max_drop` when it is None or 0 or more percentage points; a TlxError otherwise, and
    when the upper-bound gate is asked for without a limit (it would silently gate nothing)."""
    if max_drop is not None and not max_drop >= 0:  # `not >=` also refuses NaN
        raise TlxError(f"--max-drop must be 0 or more percentage points (got {max_drop:g}).")
    if max_drop is None and DropGate(on) is DropGate.UPPER:
        raise TlxError("--max-drop-on upper holds the drop's interval to --max-drop, and no --max-drop "
                       "was given: add --max-drop POINTS.")
    return max_drop


def gated_value(drop: PairedDifference, on: DropGate) -> float:
    """The figure of `drop` held to the limit. Without an interval (no image changed
    correctness, so the drop is 0) the upper bound is the point itself."""
    if DropGate(on) is DropGate.UPPER and not math.isnan(drop.high):
        return drop.high
    return drop.points


def drop_exceeded(rows: Iterable[tuple[str, Optional[PairedDifference]]], max_drop: Optional[float],
                  on: DropGate = DropGate.POINT) -> bool:
    """True when an int8 model (named as in tlx.export.formats, optionally followed by
    " (backend)") among (model name, drop) rows lost more than `max_drop` points; rows
    without a drop (the reference itself) pass."""
    return max_drop is not None and any(
        drop is not None and gated_value(drop, on) > max_drop
        for name, drop in rows if is_int8_model(name))


def drop_text(drop: PairedDifference, digits: int = 2) -> str:
    """'+0.10 [-0.51, +0.31]': the drop in points with its paired 95% interval, the same
    in every table (terminal, Markdown, HTML) of host and device bench."""
    if math.isnan(drop.points):
        return "-"
    if math.isnan(drop.low):
        return f"{drop.points:+.{digits}f} (no image changed correctness)"
    return f"{drop.points:+.{digits}f} [{drop.low:+.{digits}f}, {drop.high:+.{digits}f}]"


def gate_text(max_drop: float, on: DropGate) -> str:
    """How the limit reads in messages: 'X points' or 'X points (upper 95% bound)'."""
    return f"{max_drop:g} points" + (" (upper bound of the 95% interval)"
                                     if DropGate(on) is DropGate.UPPER else "")
