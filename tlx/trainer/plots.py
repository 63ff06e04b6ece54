"""The tutorial's two figures: learning curves of both phases, and 3x3 test predictions.

matplotlib is imported inside the functions with the Agg backend: no display needed,
and importing this module stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from tlx.charts import pyplot, save_png


def learning_curves(history: dict, path: Path) -> Path:
    """Accuracy and loss (train and validation) over both phases, the start of
    fine-tuning marked, as the tutorial plots them. `history` is history.json's content."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    p1, p2 = history.get("phase1", {}), history.get("phase2", {})

    def series(key):
        return list(p1.get(key, [])) + list(p2.get(key, []))

    start = len(p1.get("loss", []))
    epochs = np.arange(1, len(series("loss")) + 1)
    fig = plt.figure(figsize=(8, 8))
    try:
        for row, (metric, title, ylabel) in enumerate((
                ("accuracy", "Training and Validation Accuracy", "Accuracy"),
                ("loss", "Training and Validation Loss", "Cross Entropy"))):
            ax = fig.add_subplot(2, 1, row + 1)
            what = "Loss" if row else "Accuracy"
            ax.plot(epochs, series(metric), marker=".", label=f"Training {what}")
            ax.plot(epochs, series(f"val_{metric}"), marker=".", label=f"Validation {what}")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if p2.get("loss"):
                # The boundary between the last phase-1 epoch and the first phase-2 epoch.
                ax.axvline(start + 0.5, color="green", linestyle="--", label="Start Fine Tuning")
            if metric == "accuracy":
                ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.02)
                ax.legend(loc="lower right")
            else:
                ax.set_ylim(0, max(1.0, ax.get_ylim()[1]))
                ax.legend(loc="upper right")
            ax.set_ylabel(ylabel)
            ax.set_title(title)
        ax.set_xlabel("epoch")
        fig.tight_layout()
        save_png(fig, Path(path))
    finally:
        plt.close(fig)
    return Path(path)


def predictions(images: np.ndarray, true: Sequence[int], predicted: Sequence[int],
                classes: Sequence[str], path: Path) -> Path:
    """Up to 9 images in a 3x3 grid titled 'predicted (true: ...)'; wrong ones in red."""
    plt = pyplot()
    fig = plt.figure(figsize=(10, 10))
    try:
        for i in range(min(9, len(images))):
            ax = fig.add_subplot(3, 3, i + 1)
            ax.imshow(np.asarray(images[i]).astype("uint8"))
            ok = int(predicted[i]) == int(true[i])
            ax.set_title(f"{classes[int(predicted[i])]} (true: {classes[int(true[i])]})",
                         color="black" if ok else "red")
            ax.axis("off")
        fig.tight_layout()
        save_png(fig, Path(path))
    finally:
        plt.close(fig)
    return Path(path)
