"""SWEEP_DIR/pareto.png: every model's accuracy against its host latency, the Pareto front
joined, the recommended model ringed. matplotlib is optional (the `train` extra)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

from tlx.sweep.records import SweepRecord

CHART = "pareto.png"


def pareto_chart(record: SweepRecord, path: Path) -> Optional[Path]:
    """Write the chart; None when matplotlib is not installed or no model finished."""
    from tlx.charts import pyplot, save_png

    points = [(f"{c.run}/{m.format}", m) for c in record.candidates for m in c.models]
    if not points or importlib.util.find_spec("matplotlib") is None:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.8))
    front = sorted(((m.latency_ms, m.accuracy * 100) for name, m in points if name in record.pareto))
    ax.plot([x for x, _ in front], [y for _, y in front], "-", color="tab:orange", alpha=0.6,
            label="Pareto front (accuracy, latency, size)")
    for name, m in points:
        on_front = name in record.pareto
        ax.scatter([m.latency_ms], [m.accuracy * 100], s=30 + 300 * m.size_bytes / 2e7,
                   color="tab:orange" if on_front else "tab:gray", alpha=0.8, zorder=3)
        ax.annotate(f"{name}\n{m.size_bytes / 1e6:.1f} MB", (m.latency_ms, m.accuracy * 100),
                    textcoords="offset points", xytext=(6, 3), fontsize=7)
        if name == record.recommended:
            ax.scatter([m.latency_ms], [m.accuracy * 100], s=400, facecolors="none", edgecolors="tab:red",
                       linewidths=2, zorder=4, label="recommended")
    ax.set_xlabel("latency p50 on the host, 1 thread (ms)")
    ax.set_ylabel("top-1 on the shared test split (%)")
    ax.set_title("tlx sweep: accuracy against latency (marker area: file size)")
    ax.grid(alpha=0.3)
    ax.set_xlim(left=0)
    ax.legend(fontsize=8, loc="best")
    save_png(fig, path, dpi=110)
    plt.close(fig)
    return path
