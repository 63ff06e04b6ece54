"""Headless matplotlib for every chart tlx writes (training curves, bench, fallback).

matplotlib is imported inside the functions: it comes with the `train` extra and a
device install may not have it.
"""

from __future__ import annotations

from pathlib import Path

from tlx import files


def pyplot():
    """matplotlib.pyplot on the Agg backend: no display needed, same output everywhere."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path, dpi: int = 100, tight: bool = True) -> Path:
    """Write `fig` as a PNG atomically (a temp file, then rename)."""
    path = Path(path)
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    return path
