"""The bench report: a terminal table, bench.json, bench.md and the charts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tlx import files
from tlx.bench import plots
from tlx.drop import drop_text, gate_text
from tlx.run_dir import BENCH_CHART, BENCH_JSON, BENCH_MD, confusion_name
from tlx.text import markdown_text, printable


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def table_rows(result) -> tuple[list[str], list[list[str]]]:
    threads = list(result.config.measurement.threads)
    header = ["model", "backend", "size MB", "top-1 % [95% CI]", "drop pts [95% CI]", "agree %"]
    header += [f"p50/p90/p99 ms @{t}t" for t in threads]
    header += ["img/s @1t" if 1 in threads else f"img/s @{threads[0]}t", "cold start s", "peak RSS MB",
               "failed"]
    rows = []
    for m in result.models:
        acc = m.accuracy
        row = [m.name, m.backend or "keras", f"{m.size_bytes / 1e6:.2f}",
               f"{100 * acc.value:.1f} [{100 * acc.low:.1f}, {100 * acc.high:.1f}] n={acc.n}",
               "-" if m.drop is None else drop_text(m.drop),
               _fmt(m.agreement and 100 * m.agreement.value, ".1f")]
        for t in threads:
            lat = m.latency.get(t)
            row.append(f"{lat.p50:.2f}/{lat.p90:.2f}/{lat.p99:.2f}" if lat else "-")
        first = m.latency.get(1 if 1 in threads else threads[0])
        row += [_fmt(first and first.throughput, ".0f"),
                _fmt(m.cold_start and m.cold_start.first_output_s, ".2f"),
                _fmt(m.cold_start and m.cold_start.peak_rss_mb, ".0f"),
                str(len(m.failures))]
        rows.append(row)
    return header, rows


def text_table(result) -> str:
    header, rows = table_rows(result)
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def cpu_lines(env: dict) -> list[str]:
    """The int8-relevant CPU features and what they mean for int8 speed (records written
    before tlx.machine have neither: nothing is printed for them). Raw text: escape it for
    where it goes (tlx.text)."""
    if "cpu_features" not in env:
        return []
    lines = [f"- int8-relevant CPU features: {', '.join(env['cpu_features']) or 'none'}; "
             f"{env['int8_expectation']}"]
    if env.get("load_average"):
        lines.append("- load average (1, 5, 15 min) at the end: "
                     + ", ".join(f"{x:.2f}" for x in env["load_average"]))
    return lines


_md = markdown_text


def markdown(result, charts: bool = True) -> str:
    header, rows = table_rows(result)
    rows = [[_md(cell) for cell in row] for row in rows]
    env = result.environment
    measurement = result.config.measurement
    out = [
        f"# tlx bench: {_md(Path(result.config.run_dir).name)}",
        "",
        f"- date: {_md(env['date'])}",
        f"- machine: {_md(env['machine'])}; {_md(env['cpu'])}; {_md(env['cores'])} cores; "
        f"Python {_md(env['python'])}",
        *("- " + _md(line[2:]) for line in cpu_lines(env)),
        "- versions: " + ", ".join(f"{_md(k)} {_md(v)}" for k, v in env["versions"].items())
        + (f"; tlx commit {_md(env['tlx_commit'])}" if env.get("tlx_commit") else ""),
        f"- test split: {result.n_test} images ({len(result.unreadable)} unreadable, left out); "
        f"labels: {', '.join(_md(label) for label in result.labels)}",
        f"- drop and agreement are against {_md(result.reference)}; drop: reference minus model, in "
        f"points, paired 95% interval (same images); latency is one "
        f"`Classifier.run` (set input, invoke, dequantize) on one image after "
        f"{measurement.warmup} warm-up runs, {measurement.runs} timed runs",
        "- cold start: a new `tlx predict` process (for Keras: a Python process loading the .keras), "
        "start to first printed result; peak RSS of that process",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    if result.unreadable:
        out += ["", "Unreadable test images (left out):"]
        out += [f"- {_md(path)}: {_md(reason)}" for path, reason in result.unreadable]
    if measurement.max_drop is not None:
        verdict = "EXCEEDED" if result.failed_drop else "within"
        out += ["", f"int8 drop limit {gate_text(measurement.max_drop, measurement.max_drop_on)}: {verdict}."]
    if charts:
        out += ["", f"![accuracy against latency]({BENCH_CHART})", ""]
        out += [f"![confusion {_md(m.name)}]({_md(confusion_name(m.name))})" for m in result.models]
    return "\n".join(out) + "\n"


def _can_plot() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def write(result, out_dir: Path) -> dict[str, Path]:
    """Write every report file into `out_dir`; returns them by kind."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"json": out_dir / BENCH_JSON, "markdown": out_dir / BENCH_MD,
               "chart": out_dir / BENCH_CHART}
    charts = _can_plot()
    files.write_json(written["json"], result.to_json())
    files.write_text(written["markdown"], markdown(result, charts))
    if not charts:
        # A device install (numpy, pillow, one interpreter) has no matplotlib: numbers only.
        del written["chart"]
        return written
    first_threads = result.config.measurement.threads[0]
    points = [(m.name, m.latency[first_threads].p50, m.accuracy.value, m.accuracy.low, m.accuracy.high,
               m.size_bytes) for m in result.models if first_threads in m.latency]
    plots.accuracy_vs_latency(points, written["chart"])
    for m in result.models:
        path = out_dir / confusion_name(m.name)
        plots.confusion(np.asarray(m.confusion), result.labels, f"{m.name}: top-1 {100 * m.accuracy.value:.1f}%", path)
        written[f"confusion {m.name}"] = path
    return written
