"""The summary of a training run: what `tlx train` prints and returns (--json)."""

from __future__ import annotations

from tlx.run_dir import RunDir
from tlx.run_config import TrainConfig


def summarize(config: TrainConfig, split, history: dict, metrics: dict, seconds: float,
              run: RunDir) -> dict:
    def phase(key, epochs):
        record = history.get(key, {})
        times = record.get("seconds", [])
        last = {k: (v[-1] if v else None) for k, v in record.items() if k != "seconds"}
        return {"epochs": epochs, "accuracy": last.get("accuracy"), "val_accuracy": last.get("val_accuracy"),
                "loss": last.get("loss"), "val_loss": last.get("val_loss"),
                "seconds_per_epoch": (sum(times) / len(times)) if times else None}

    return {
        "run_dir": str(run.root),
        "classes": list(split.classes),
        "images": {"train": len(split.train), "validation": len(split.validation),
                   "test": len(split.test), "skipped": len(split.skipped)},
        "backbone": config.backbone,
        "initial": history.get("initial", {}),
        "phase1": phase("phase1", config.phase1_epochs),
        "phase2": phase("phase2", config.phase2_epochs),
        "test_loss": metrics["test_loss"],
        "test_accuracy": metrics["test_accuracy"],
        "seconds": seconds,
    }


def format_summary(summary: dict) -> str:
    def num(value, fmt=".4f"):
        return "-" if value is None else format(value, fmt)

    rows = [("", "epochs", "loss", "accuracy", "val_loss", "val_acc", "s/epoch")]
    initial = summary.get("initial") or {}
    rows.append(("before training", "", "", "", num(initial.get("loss")), num(initial.get("accuracy")), ""))
    for key, name in (("phase1", "phase 1 (frozen)"), ("phase2", "phase 2 (fine-tune)")):
        p = summary[key]
        rows.append((name, str(p["epochs"]), num(p["loss"]), num(p["accuracy"]), num(p["val_loss"]),
                     num(p["val_accuracy"]), num(p["seconds_per_epoch"], ".1f")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in rows]
    images = summary["images"]
    lines += [
        "",
        f"test: loss {summary['test_loss']:.4f}  accuracy {summary['test_accuracy']:.4f}  "
        f"({images['test']} images)",
        f"images: {images['train']} train, {images['validation']} validation, {images['test']} test, "
        f"{images['skipped']} skipped",
        f"time: {summary['seconds']:.1f} s",
        f"run dir: {summary['run_dir']}",
    ]
    return "\n".join(lines)
