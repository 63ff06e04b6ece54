"""The accuracy-drop limit (`--max-drop`): one check of the option, for export, its int8
fallback, host bench and device bench alike."""

from __future__ import annotations

from typing import Optional

from tlx.errors import TlxError


def check_max_drop(max_drop: Optional[float]) -> Optional[float]:
    """`max_drop` when it is None or 0 or more percentage points; a TlxError otherwise."""
    if max_drop is not None and not max_drop >= 0:  # `not >=` also refuses NaN
        raise TlxError(f"--max-drop must be 0 or more percentage points (got {max_drop:g}).")
    return max_drop
