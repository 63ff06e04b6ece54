"""Host and devices side by side, for `tlx report RUN_DIR --device RESULT...`: accuracy, drop,
agreement, p50, the int8/float32 latency ratio and the machine, one row per model and backend.

The host's rows come from RUN_DIR/bench/bench.json, each device's from the result file
`tlx bench BUNDLE` wrote there, read through its schema (tlx.bundle.result) and checked to be
a measurement of this run's model and exported files. An emulated device shows accuracy and
agreement only. Cells are raw text: the report escapes them (tlx.text).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from tlx import files
from tlx.bench.rows import ModelRow
from tlx.bundle.result import DeviceResult, read_result
from tlx.drop import drop_text
from tlx.errors import TlxError
from tlx.run_dir import RunDir
from tlx.text import printable

HEADER = ["where", "machine", "model", "backend", "top-1 % [95% CI]", "drop pts [95% CI]",
          "agree Keras %", "outputs = host's", "p50 ms @1 image", "int8/float32 p50"]


def read_device_results(run: RunDir, paths) -> list[DeviceResult]:
    """The result files, each parsed and checked to come from a bundle of this run: the
    model.keras hash, the run id, the labels and every measured .tflite's hash must be the
    run's (TlxError naming each difference otherwise)."""
    results = [read_result(Path(p)) for p in paths]
    for path, result in zip(paths, results):
        problems = not_of_this_run(run, result)
        if problems:
            raise TlxError(f"{path} was not measured on this run's models ({run.root}):\n  "
                           + "\n  ".join(problems) + f"\nBundle this run (`tlx bundle {run.root}`), bench "
                           "that on the device and pass its result.")
    return results


def not_of_this_run(run: RunDir, result: DeviceResult) -> list[str]:
    """Why `result` is no measurement of this run's current files (empty: it is)."""
    measured = result.bundle.run
    if measured is None:
        return [f"it is the result of the sweep {printable(repr(result.bundle.sweep['name']))}'s bundle; pass it to "
                "`tlx report SWEEP_DIR`"]
    model_sha = run.model_sha256()
    if model_sha is None:
        return [f"the run has no {run.model.name} to compare the result's model hash with"]
    if measured.model_sha256 != model_sha:
        return [f"its bundle was made from another {run.model.name} (model hash {measured.model_sha256[:12]}, "
                f"the run's is {model_sha[:12]})"]
    problems = []
    run_id = run_id_of(run)
    if measured.run_id is not None and run_id is not None and measured.run_id != run_id:
        problems.append(f"its bundle is of run {measured.run_id!r}, this folder holds run {run_id!r}")
    labels = run.read_labels()
    if list(result.labels) != labels:
        problems.append(f"its labels {list(result.labels)} are not the run's {labels}")
    for name, sha in dict.fromkeys((Path(m.file).name, m.sha256) for m in result.models if m.sha256):
        exported = run.export / name
        if not exported.is_file():
            problems.append(f"the run has no export/{name}, which the device measured")
        elif files.sha256_file(exported) != sha:
            problems.append(f"export/{name} is not the file the device measured (exported again after "
                            "the bundle was made)")
    return problems


def run_id_of(run: RunDir) -> Optional[str]:
    try:
        return run.read_config().run_id if run.config.is_file() else None
    except TlxError:
        return None


def _machine(cpu, architecture, features) -> str:
    if features is None:  # a host record older than tlx.machine
        return str(cpu or "?")
    return f"{cpu or '?'} ({architecture or '?'}, {', '.join(features) or 'no int8 features'})"


def _pct(value: float, low: float, high: float) -> str:
    return f"{100 * value:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def _ratios(rows: list[tuple[str, str, Optional[float]]]) -> dict[str, Optional[float]]:
    """int8 p50 / float32 p50 per backend, from (model, backend, p50)."""
    p50 = {(model, backend): value for model, backend, value in rows}
    out = {}
    for (model, backend), value in p50.items():
        base = p50.get(("float32", backend))
        if model == "int8" and value and base:
            out[backend] = value / base
    return out


def host_rows(bench: dict, models: tuple[ModelRow, ...]) -> list[list[str]]:
    """The host's rows: bench.json's model rows (read by tlx.bench.rows) and its machine."""
    env = bench["environment"]
    where = f"host ({bench['date']})"
    machine = _machine(env.get("cpu"), env.get("architecture"), env.get("cpu_features"))
    plain = [(m.name.split(" (")[0], m.backend or "keras", m.first_p50) for m in models]
    ratios = _ratios(plain)
    rows = []
    for m, (name, backend, p50) in zip(models, plain):
        rows.append([where, machine, name, backend, _pct(m.accuracy.value, m.accuracy.low, m.accuracy.high),
                     "-" if m.drop is None else drop_text(m.drop),
                     "-" if m.agreement is None else f"{100 * m.agreement.value:.1f}",
                     "(host)", "-" if p50 is None else f"{p50:.2f}",
                     f"{ratios[backend]:.2f}" if name == "int8" and backend in ratios else "-"])
    return rows


def device_rows(result: DeviceResult) -> list[list[str]]:
    emulated = result.emulated
    where = (f"emulated: {emulated}" if emulated else "device") + f" ({result.date})"
    machine = _machine(result.machine.cpu, result.machine.architecture, result.machine.cpu_features)
    ratios = _ratios([(m.name, m.backend, m.first_p50) for m in result.models])
    rows = []
    for m in result.models:
        host = m.host
        same = host and (f"{host.identical}/{host.n}" + (f", max {host.max_steps} step(s)"
                                                          if host.max_steps is not None else ""))
        p50 = m.first_p50
        rows.append([where, machine, m.name, m.backend, _pct(m.accuracy.value, m.accuracy.low, m.accuracy.high),
                     drop_text(m.drop), f"{100 * m.agreement.value:.1f}",
                     same or "-",
                     "not a device figure" if emulated else "-" if p50 is None else f"{p50:.2f}",
                     "-" if emulated or m.name != "int8" or m.backend not in ratios
                     else f"{ratios[m.backend]:.2f}"])
    return rows


def comparison(bench: Optional[dict], host: tuple[ModelRow, ...],
               results: list[DeviceResult]) -> tuple[list[str], list[list[str]]]:
    """The table: the host's rows (bench.json and its rows; none without it), then each device's."""
    rows = host_rows(bench, host) if bench else []
    for result in results:
        rows += device_rows(result)
    return HEADER, rows
