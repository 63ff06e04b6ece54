"""`tlx report SWEEP_DIR --device RESULT.json ...`: the sweep's models measured on devices.

For each device: accuracy against the device's latency (a PNG inlined in SWEEP_DIR/report.html),
the Pareto front of (accuracy, device latency, size) by tlx.sweep.pareto, and the pick for each
latency budget with the reason. Each result is read through the one result schema
(tlx.bundle.result) and must be a measurement of this sweep: its split, its candidates'
model.keras and exported files, by hash. Text from the files goes through tlx.text.
"""

from __future__ import annotations

import base64
import datetime as _dt
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tlx
from tlx import files
from tlx.bundle.compare import run_id_of
from tlx.bench.rows import ModelRow
from tlx.bundle.result import DeviceResult, read_result
from tlx.drop import drop_text
from tlx.errors import TlxError
from tlx.report import STYLE, table
from tlx.run_dir import RunDir
from tlx.sweep.pareto import Budgets, ModelPoint, pareto_front, recommend
from tlx.sweep.records import DONE, SPLIT, SWEEP_JSON, SweepRecord, read_sweep
from tlx.text import html_text, printable

REPORT = "report.html"


@dataclass(frozen=True)
class DevicePoints:
    """One device result as the front sees it: a point per model row (latency at the first
    thread count), the front, and the pick per latency budget."""

    result: DeviceResult
    points: tuple[ModelPoint, ...]
    front: tuple[ModelPoint, ...]
    #: (budget, picked model or None, reason), the first without a latency budget.
    picks: tuple[tuple[Budgets, Optional[ModelPoint], str], ...]


def read_sweep_results(sweep_dir: Path, record: SweepRecord, paths) -> list[DeviceResult]:
    """Each result parsed by its schema and checked to be of this sweep (TlxError otherwise)."""
    results = []
    for path in paths:
        result = read_result(Path(path))
        problems = not_of_this_sweep(Path(sweep_dir), record, result)
        if problems:
            raise TlxError(f"{path} was not measured on this sweep's models ({sweep_dir}):\n  "
                           + "\n  ".join(problems) + f"\nBundle this sweep (`tlx bundle {sweep_dir}`), bench "
                           "that on the device and pass its result.")
        results.append(result)
    return results


def not_of_this_sweep(sweep_dir: Path, record: SweepRecord, result: DeviceResult) -> list[str]:
    """Why `result` is no measurement of this sweep's current files (empty: it is)."""
    sweep = result.bundle.sweep
    if sweep is None:
        return ["it is the result of a single run's bundle; pass it to `tlx report RUN_DIR`"]
    if sweep["split_sha256"] != files.sha256_file(sweep_dir / SPLIT):
        return [f"its bundle was made from another sweep (split hash {sweep['split_sha256'][:12]})"]
    runs = {c.run for c in record.candidates if c.status == DONE}
    problems, checked = [], set()
    for m in result.models:
        run_name = m.candidate.run.name
        # A name from the file: only ever a key of this sweep's candidates, never a path as given.
        if run_name not in runs:
            problems.append(f"it measured {printable(repr(run_name))}, which is no finished candidate of this "
                            "sweep")
            continue
        run = RunDir(sweep_dir / run_name)
        if run_name not in checked:
            checked.add(run_name)
            if m.candidate.run.model_sha256 != run.model_sha256():
                problems.append(f"{run_name}: its bundle was made from another model.keras")
            run_id = run_id_of(run)
            if None not in (m.candidate.run.run_id, run_id) and m.candidate.run.run_id != run_id:
                problems.append(f"{run_name}: its bundle is of another training run (run id)")
        exported = run.export / Path(m.file).name
        if m.sha256 and (not exported.is_file() or files.sha256_file(exported) != m.sha256):
            problems.append(f"{run_name}: export/{Path(m.file).name} is not the file the device measured")
    return list(dict.fromkeys(problems))


def row_id(m: ModelRow, several_backends: bool) -> str:
    base = f"{m.candidate.run.name}/{m.name}"
    return f"{base} ({m.backend})" if several_backends else base


def device_points(result: DeviceResult, budgets: Budgets) -> DevicePoints:
    """The front and the picks on this device. `budgets`: the sweep's size and accuracy budgets
    (its latency budget was on the host); each latency budget is one front point's p50."""
    several = len(result.settings.backends) > 1
    # An emulator's latency is no device figure: no front, no pick.
    points = () if result.emulated else tuple(
        ModelPoint(row_id(m, several), m.accuracy.value, m.first_p50, m.size_bytes)
        for m in result.models if m.first_p50 is not None)
    front = tuple(pareto_front(points))
    ceilings = sorted({_ceiling(p.latency_ms) for p in front})
    picks = [(budgets, *recommend(points, budgets))]
    for ceiling in ceilings:
        budget = Budgets(max_latency_ms=ceiling, max_size_mb=budgets.max_size_mb,
                         min_accuracy=budgets.min_accuracy)
        picks.append((budget, *recommend(points, budget)))
    return DevicePoints(result, points, front, tuple(picks))


def _ceiling(ms: float) -> float:
    """`ms` rounded up to two significant digits: a budget a person would state."""
    if ms <= 0:
        return ms
    step = 10 ** (math.floor(math.log10(ms)) - 1)
    return round(math.ceil(ms / step - 1e-9) * step, 10)


def _chart(device: DevicePoints, title: str) -> Optional[str]:
    """The accuracy/latency chart as an <img> with a data URI; None without matplotlib."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None or not device.points:
        return None
    from tlx.charts import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.8))
    front_ids = {p.id for p in device.front}
    line = sorted((p.latency_ms, 100 * p.accuracy) for p in device.front)
    ax.plot([x for x, _ in line], [y for _, y in line], "-", color="tab:orange", alpha=0.6,
            label="Pareto front (accuracy, device latency, size)")
    for p in device.points:
        ax.scatter([p.latency_ms], [100 * p.accuracy], s=30 + 300 * p.size_bytes / 2e7, zorder=3, alpha=0.8,
                   color="tab:orange" if p.id in front_ids else "tab:gray")
    # Only the front named, above and below in turn: a sweep's labels would overlap (the table names all).
    for i, p in enumerate(sorted(device.front, key=lambda p: p.latency_ms)):
        ax.annotate(f"{p.id}\n{p.size_bytes / 1e6:.1f} MB", (p.latency_ms, 100 * p.accuracy),
                    textcoords="offset points", xytext=(6, 4 if i % 2 == 0 else -22), fontsize=7)
    ax.set_xlabel(f"latency p50 on the device, {device.result.settings.threads[0]} thread(s) (ms)")
    ax.set_ylabel("top-1 on the bundle's test photos (%)")
    ax.set_title("accuracy against device latency (marker area: file size)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.set_xlim(left=0)
    ax.legend(fontsize=8, loc="best")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html_text(title)}">'
            f"<figcaption>{html_text(title)}</figcaption></figure>")


def _device_section(device: DevicePoints) -> str:
    result = device.result
    mach = result.machine
    title = f"{mach.cpu} ({mach.architecture}), {result.date}"
    parts = [f"<h2>Device: {html_text(title)}</h2>",
             f"<p>Bundle <code>{html_text(result.bundle.file)}</code>; {result.n_images} photos; "
             f"backends {html_text(', '.join(result.settings.backends))}; load average "
             f"{html_text('-' if result.load_average is None else ', '.join(f'{x:.2f}' for x in result.load_average))}.</p>"]
    if result.emulated:
        parts.append(f"<p class=incomplete>Emulated ({html_text(result.emulated)}): accuracy through the "
                     "ARM kernels only; its latency is not a device figure, so no front or pick.</p>")
    several = len(result.settings.backends) > 1
    front_ids = {p.id for p in device.front}
    rows = []
    for m in result.models:
        ident = row_id(m, several)
        acc = m.accuracy
        p50 = m.first_p50
        rows.append([ident, f"{100 * acc.value:.1f} [{100 * acc.low:.1f}, {100 * acc.high:.1f}]",
                     drop_text(m.drop, digits=1),
                     "not a device figure" if result.emulated else "-" if p50 is None else f"{p50:.2f}",
                     f"{m.size_bytes / 1e6:.2f}", "" if result.emulated else "*" if ident in front_ids else ""])
    parts.append(table(["model", "top-1 % [95% CI]", "drop vs its Keras pts [95% CI]", "p50 ms", "MB", "front"], rows))
    if result.emulated:
        return "".join(parts)
    chart = _chart(device, f"Accuracy against latency on {title}")
    if chart:
        parts.append(chart)
    picks = [[budget.describe(), pick.id if pick else "none", reason] for budget, pick, reason in device.picks]
    parts.append("<h3>Pick per budget</h3>" + table(["budget on this device", "pick", "why"], picks))
    return "".join(parts)


def write_sweep_report(sweep_dir: Path, devices=()) -> Path:
    """SWEEP_DIR/report.html (atomically): the host's table of sweep.json and, per device
    result, its front and picks. TlxError before anything is written when a result is not of
    this sweep."""
    sweep_dir = Path(sweep_dir)
    record = read_sweep(sweep_dir / SWEEP_JSON)
    results = read_sweep_results(sweep_dir, record, list(devices))
    budgets = Budgets(max_size_mb=record.budgets.get("max_size_mb"),
                      min_accuracy=record.budgets.get("min_accuracy"))
    host_rows = [[f"{c.run}/{m.format}", f"{100 * m.accuracy:.1f}", f"{m.latency_ms:.2f}",
                  f"{m.size_bytes / 1e6:.2f}", "*" if f"{c.run}/{m.format}" in record.pareto else ""]
                 for c in record.candidates for m in c.models]
    sections = ["<h2>Host</h2>",
                f"<p>Recommended on the host: <b>{html_text(record.recommended or 'none')}</b> "
                f"({html_text(record.reason)}).</p>",
                table(["model", "top-1 %", "host p50 ms", "MB", "front"], host_rows)]
    sections += [_device_section(device_points(result, budgets)) for result in results]
    title = f"tlx sweep report: {sweep_dir.resolve().name}"
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html_text(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html_text(title)}</h1>"
            f'<p class="sub">Written {_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")} by '
            f"tlx {tlx.__version__}. The front: no other model is at least as accurate, as fast on that "
            f"machine and as small, and better in one.</p>{''.join(sections)}</body></html>")
    files.write_text(sweep_dir / REPORT, page)
    return sweep_dir / REPORT
