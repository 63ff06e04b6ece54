"""Bench charts: accuracy against latency, and one confusion matrix per model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tlx.charts import pyplot, save_png


def accuracy_vs_latency(points, path: Path) -> None:
    """points: (name, p50 ms, accuracy, ci_low, ci_high, size_bytes) per model."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, p50, accuracy, low, high, size in points:
        ax.errorbar([p50], [accuracy * 100], yerr=[[(accuracy - low) * 100], [(high - accuracy) * 100]],
                    fmt="o", capsize=4, markersize=6 + 6 * np.sqrt(size / 1e7))
        ax.annotate(f"{name}\n{size / 1e6:.1f} MB", (p50, accuracy * 100), textcoords="offset points",
                    xytext=(8, 4), fontsize=8)
    ax.set_xlabel("latency p50, 1 image (ms)")
    ax.set_ylabel("top-1 accuracy on the test split (%)")
    ax.set_title("Accuracy (95% Wilson interval) against latency")
    ax.grid(alpha=0.3)
    ax.set_xlim(left=0)
    save_png(fig, path, dpi=110)
    plt.close(fig)


def confusion(matrix: np.ndarray, labels, title: str, path: Path) -> None:
    plt = pyplot()
    n = len(labels)
    size = max(3.5, 0.55 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    top = matrix.max() if matrix.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                    color="white" if top and matrix[i, j] > top / 2 else "black", fontsize=8)
    save_png(fig, path, dpi=110)
    plt.close(fig)
