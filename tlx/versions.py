"""Versions of installed packages, for the records runs, exports and benchmarks keep.

Read from package metadata: nothing is imported, so asking about TensorFlow costs nothing
on a device without it.
"""

from __future__ import annotations

import importlib.metadata


def installed(*distributions: str) -> dict[str, str]:
    """{distribution: version} for those of `distributions` that are installed."""
    found = {}
    for name in distributions:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def tensorflow() -> str | None:
    """TensorFlow's version, whichever build is installed (tensorflow or tensorflow-cpu)."""
    found = installed("tensorflow", "tensorflow-cpu")
    return found.get("tensorflow") or found.get("tensorflow-cpu")
