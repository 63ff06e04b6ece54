"""One self-contained HTML report of a run: dataset, learning curves, predictions,
float vs int8 table, accuracy/latency chart, confusion matrices. Images are inlined as
data URIs so the file can be mailed or attached to an issue as it is."""

from __future__ import annotations

import base64
import datetime as _dt
import math
from collections import Counter
from pathlib import Path

import tlx
from tlx import files
from tlx.bench.rows import ModelRow, read_bench
from tlx.drop import drop_text
from tlx.errors import TlxError
from tlx.run_dir import RunDir, confusion_name
from tlx.text import html_text

STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #1d2330; padding: 0 1rem; }
h1 { margin-bottom: .2rem; } .sub { color: #5b6475; margin-top: 0; }
table { border-collapse: collapse; margin: 1rem 0; font-size: .9rem; }
th, td { border: 1px solid #d5d9e2; padding: .35rem .6rem; text-align: right; }
th { background: #f1f3f8; } td:first-child, th:first-child { text-align: left; }
.headline { font-size: 1.15rem; background: #eef6ee; border: 1px solid #9fcf9f; padding: .8rem 1rem;
            border-radius: 6px; }
.incomplete { background: #fff3cd; border: 1px solid #e0b400; padding: .8rem 1rem; border-radius: 6px; }
figure { display: inline-block; margin: .5rem 1rem .5rem 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #e3e6ee; }
figcaption { color: #5b6475; font-size: .85rem; }
"""


def _image(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html_text(caption)}">'
            f"<figcaption>{html_text(caption)}</figcaption></figure>")


def table(header, rows) -> str:
    head = "".join(f"<th>{html_text(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html_text(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _dataset_section(run: RunDir) -> str:
    split = run.read_split()
    rows = []
    for index, name in enumerate(split.classes):
        counts = [Counter(label for _, label in items)[index] for items in (split.train, split.validation, split.test)]
        rows.append([name, *counts])
    rows.append(["all", len(split.train), len(split.validation), len(split.test)])
    skipped = f"<p>{len(split.skipped)} unreadable files were skipped.</p>" if split.skipped else ""
    # Folder names, not absolute paths: the report is meant to be passed around.
    folder = Path(split.data_dir).name or split.data_dir
    return (f"<h2>Dataset</h2><p>Folder <code>{html_text(folder)}</code>, {len(split.classes)} classes; "
            f"images resized to "
            f"{split.image_size[0]}x{split.image_size[1]}; split seed {split.seed}.</p>"
            + table(["class", "train", "validation", "test"], rows) + skipped)


def _training_section(run: RunDir) -> str:
    parts = ["<h2>Training</h2>"]
    if run.config.is_file():
        config = run.read_config().options.to_json()
        keys = ["backbone", "weights", "image_size", "phase1_epochs", "phase2_epochs", "fine_tune_at",
                "learning_rate", "augment"]
        parts.append(table(["option", "value"], [[k, config[k]] for k in keys if k in config]))
    if run.metrics.is_file():
        metrics = files.read_json(run.metrics)
        parts.append("<p>Keras test accuracy: "
                     f"<b>{100 * float(metrics.get('test_accuracy', metrics.get('accuracy', 0))):.1f}%</b></p>")
    for path, caption in ((run.learning_curves, "Learning curves of both phases"),
                          (run.predictions, "Test images: predicted (true) label")):
        if path.is_file():
            parts.append(_image(path, caption))
    return "".join(parts)


def _drop_text(m: ModelRow) -> str:
    return "-" if m.drop is None else drop_text(m.drop)


def _headline(bench: dict, rows: tuple[ModelRow, ...]) -> str:
    """One sentence with what most readers came for: what int8 costs and buys."""
    models = {m.name: m for m in rows}
    int8, reference = models.get("int8"), models.get(bench["reference"])
    if int8 is None or reference is None or int8 is reference:
        return ""
    float32 = models.get("float32")
    faster = ""
    if float32 and float32.first_p50 and int8.first_p50:
        faster = (f", {float32.first_p50 / int8.first_p50:.1f}x faster than float32 "
                  f"({int8.first_p50:.1f} ms per image)")
    smaller = f", {float32.size_bytes / int8.size_bytes:.1f}x smaller" if float32 else ""
    interval = "; in brackets its paired 95% interval" if int8.drop and not math.isnan(int8.drop.low) else ""
    return (f'<p class="headline">int8: top-1 {100 * int8.accuracy.value:.1f}% against '
            f'{100 * reference.accuracy.value:.1f}% for {html_text(reference.name)} '
            f'({html_text(_drop_text(int8))} points drop on {html_text(str(bench["n_test"]))} '
            f'test images{interval}){smaller}{faster}.</p>')


def _bench_section(run: RunDir, bench: dict, models: tuple[ModelRow, ...]) -> str:
    rows = []
    for m in models:
        acc = m.accuracy
        rows.append([
            m.name, f"{m.size_bytes / 1e6:.2f}",
            f"{100 * acc.value:.1f} [{100 * acc.low:.1f}, {100 * acc.high:.1f}]",
            _drop_text(m),
            "-" if m.first_p50 is None else f"{m.first_p50:.2f}",
            "-" if m.cold_start is None else f"{m.cold_start.first_output_s:.2f}",
        ])
    env = bench["environment"]
    parts = [
        "<h2>Float vs int8</h2>",
        f"<p>{html_text(str(bench['n_test']))} held-out test images, through tlx.runtime; drop against "
        f"<code>{html_text(str(bench['reference']))}</code>. {html_text(env['date'])}, "
        f"{html_text(env['cpu'])}, Python {html_text(env['python'])}."
        + (f" int8-relevant CPU features: {html_text(', '.join(env['cpu_features']) or 'none')}; "
           f"{html_text(env['int8_expectation'])}." if "cpu_features" in env else "") + "</p>",
        table(["model", "size MB", "top-1 % [95% CI]", "drop pts [95% CI]", "p50 ms (1 image)",
                "cold start s"], rows),
        _image(run.bench_chart, "Accuracy against latency"),
    ]
    for m in models:
        path = run.bench / confusion_name(m.name)
        if path.is_file():
            parts.append(_image(path, f"Confusion matrix: {m.name}"))
    return "".join(parts)


def missing_parts(run: RunDir) -> list[str]:
    wanted = {"training metrics": run.metrics, "learning curves": run.learning_curves,
              "predictions grid": run.predictions, "benchmark": run.bench_json,
              "accuracy/latency chart": run.bench_chart}
    return [name for name, path in wanted.items() if not path.is_file()]


def _devices_section(bench: dict | None, host: tuple[ModelRow, ...], results: list) -> str:
    from tlx.bundle.compare import comparison

    header, rows = comparison(bench, host, results)
    return ("<h2>Host and devices</h2><p>The same models on the host (<code>tlx bench RUN_DIR</code>) and "
            "on each device (<code>tlx bench BUNDLE</code>, the bundle's test photos). Drop and agreement "
            "are against the Keras model; <i>outputs = host's</i> counts the photos whose output equals "
            "the host's exactly for the same file and backend. An emulated device checks accuracy "
            "through the ARM kernels; its latency is not a device figure.</p>" + table(header, rows))


def write_report(run_dir: Path, title: str = "tlx run report", devices=()) -> Path:
    """Write RUN_DIR/report.html (atomically) and return its path. A run that lacks a part
    still gets a report, with a banner naming what is missing. `devices`: result files of
    `tlx bench BUNDLE`, shown side by side with the host."""
    from tlx.bundle.compare import read_device_results

    run = RunDir(run_dir)
    run.read_split()  # a clear error if this is no run folder at all
    device_results = read_device_results(run, list(devices))
    missing = missing_parts(run)
    sections = [_dataset_section(run), _training_section(run)]
    bench, rows = None, ()
    if run.bench_json.is_file():
        # The rows through their schema first: a damaged or hostile file is refused by it.
        bench, rows = read_bench(run.bench_json)
        run.require_bench_of_this_model(bench)
        sections.insert(0, _headline(bench, rows))
        sections.append(_bench_section(run, bench, rows))
    if device_results:
        sections.append(_devices_section(bench, rows, device_results))
    banner = ""
    if missing:
        banner = ('<p class="incomplete"><b>Incomplete run.</b> Missing: ' + html_text(", ".join(missing))
                  + ". Finish it (or run <code>tlx demo</code> again) and regenerate with "
                  "<code>tlx report</code>.</p>")
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html_text(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html_text(title)}</h1>"
            f'<p class="sub">Run folder <code>{html_text(run.root.resolve().name)}</code>; written '
            f'{_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")} by tlx {tlx.__version__}.</p>{banner}'
            f'{"".join(sections)}</body></html>')
    files.write_text(run.report, page)
    return run.report


def require_complete(run_dir: Path) -> None:
    missing = missing_parts(RunDir(run_dir))
    if missing:
        raise TlxError(f"{run_dir} is incomplete (missing: {', '.join(missing)}).")
