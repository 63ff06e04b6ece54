"""The int8 fallback's reports: the per-layer CSV and chart next to the model, and the
step table the CLI prints."""

from __future__ import annotations

import csv
from dataclasses import asdict
from pathlib import Path

import numpy as np

from tlx.export.fallback import FallbackResult
from tlx.files import atomic_path

#: Per-layer table and chart written next to the model.
LAYERS_CSV = "fallback_layers.csv"
LAYERS_PNG = "fallback_layers.png"


def write_reports(result: FallbackResult | None, out_dir: str | Path) -> list[str]:
    """The CSV and PNG of `result` into `out_dir` (recorded in result.files). Without a result,
    an older export's reports go: the folder describes one model. Returns the names removed."""
    out_dir = Path(out_dir)
    if result is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        result.files["csv"] = write_layers_csv(result, out_dir / LAYERS_CSV)
        result.files["png"] = plot_layers(result, out_dir / LAYERS_PNG)
        return []
    removed = []
    for name in (LAYERS_CSV, LAYERS_PNG):
        if (out_dir / name).is_file():
            (out_dir / name).unlink()
            removed.append(name)
    return removed


def write_layers_csv(result: FallbackResult, path: str | Path) -> Path:
    """One row per quantized layer: rank, metrics, whether it is float in the chosen model
    (as a sensitive layer or as a reader of one) and the step it was picked at (if any)."""
    path = Path(path)
    added: dict[str, int] = {}
    for step in result.steps:
        for name in step.float_layers:
            added.setdefault(name, step.step)
    chosen = set(result.chosen_step.float_nodes)
    columns = ["rank", "layer", "op", "channel_error", "rmse_over_scale", "mean_squared_error",
               "max_abs_error", "scale", "zero_point", "float_in_chosen", "added_at_step", "tensor"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for layer in result.layers:
            row = asdict(layer)
            row["float_in_chosen"] = layer.tensor in chosen
            row["added_at_step"] = added.get(layer.layer, "")
            writer.writerow({k: row[k] for k in columns})
    return path


def plot_layers(result: FallbackResult, path: str | Path, top: int = 30) -> Path:
    """Left: the `top` most sensitive layers by the ranking metric (float ones highlighted).
    Right: validation accuracy and file size per step, with the limit."""
    from tlx.charts import pyplot, save_png

    plt = pyplot()
    path = Path(path)
    chosen = set(result.chosen_step.float_layers)
    shown = result.layers[:top]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, max(4.0, 0.28 * len(shown) + 1.5)))
    values = [getattr(layer, result.metric) for layer in shown]
    nodes = set(result.chosen_step.float_nodes)
    colours = ["tab:orange" if layer.layer in chosen else
               "navajowhite" if layer.tensor in nodes else "tab:blue" for layer in shown]
    positions = np.arange(len(shown))
    left.barh(positions, values, color=colours)
    left.set_yticks(positions, [f"{layer.layer} ({layer.op})" for layer in shown], fontsize=8)
    left.invert_yaxis()
    left.set_xlabel(result.metric.replace("_", " "))
    left.set_title("int8 error per layer (orange: kept in float; light: read it, also float)")

    steps = [s.step for s in result.steps]
    accuracy = [100 * s.val_accuracy for s in result.steps]
    right.plot(steps, accuracy, "o-", color="tab:blue", label="int8 validation accuracy")
    right.axhline(100 * result.reference_accuracy, color="tab:green", linestyle="--",
                  label="float reference")
    right.axhline(100 * result.reference_accuracy - result.max_drop_points, color="tab:red",
                  linestyle=":", label=f"limit (-{result.max_drop_points:g} points)")
    right.set_xlabel("layers kept in float")
    right.set_ylabel("validation accuracy (%)")
    right.set_xticks(steps)
    size_axis = right.twinx()
    size_axis.plot(steps, [s.size_bytes / 1024 for s in result.steps], "s--", color="tab:gray",
                   label="size (KB)")
    size_axis.set_ylabel("size (KB)")
    lines = right.get_legend_handles_labels()
    more = size_axis.get_legend_handles_labels()
    right.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="lower right")
    right.set_title(f"chosen: step {result.chosen_step.step}"
                    + ("" if result.passed else " (limit not met)"))
    fig.tight_layout()
    save_png(fig, path, dpi=100, tight=False)
    plt.close(fig)
    return path


def format_steps(result: FallbackResult) -> str:
    """A small table of the steps, for the CLI."""
    lines = [f"{'step':>4}  {'float layers':<40}  {'val acc':>7}  {'drop':>6}  {'size':>9}  "
             f"{'latency':>8}"]
    for s in result.steps:
        names = ", ".join(s.float_layers) or "(none: plain int8)"
        if len(names) > 40:
            names = names[:37] + "..."
        mark = " <" if s.step == result.chosen_step.step else ""
        lines.append(f"{s.step:>4}  {names:<40}  {100 * s.val_accuracy:>6.1f}%  "
                     f"{s.val_drop_points:>+6.1f}  {s.size_bytes:>9}  {s.latency_ms:>6.2f}ms{mark}")
    return "\n".join(lines)
