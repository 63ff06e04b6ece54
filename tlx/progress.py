"""The two ways long work reports to its caller, each with one meaning everywhere.

- `log`: a Log, called with one line of text per step ("Evaluating int8").
- `progress`: a Progress, called as progress(label, total) for work of `total` items; it
  returns a context manager yielding `advance(n)` (the CLI draws a progress bar with it).
"""

from __future__ import annotations

from typing import Callable, ContextManager

#: One line of text for the user.
Log = Callable[[str], None]
#: `advance(n)`: n more items done.
Advance = Callable[[int], None]
#: progress(label, total) -> a context manager yielding advance.
Progress = Callable[[str, int], ContextManager[Advance]]


def silent(message: str) -> None:
    """A Log that shows nothing."""
