"""Host and devices side by side, for `tlx report RUN_DIR --device RESULT...`: accuracy, drop,
agreement, p50, the int8/float32 latency ratio and the machine, one row per model and backend.

The host's rows come from RUN_DIR/bench/bench.json, each device's from the result file
`tlx bench BUNDLE` wrote there. An emulated device shows accuracy and agreement only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from tlx.bundle.device import read_result
from tlx.errors import TlxError
from tlx.run_dir import RunDir

HEADER = ["where", "machine", "model", "backend", "top-1 % [95% CI]", "drop pts", "agree Keras %",
          "outputs = host's", "p50 ms @1 image", "int8/float32 p50"]


def read_device_results(run: RunDir, paths) -> list[dict]:
    """The result files, each checked to come from a bundle of this run's model."""
    results = [read_result(Path(p)) for p in paths]
    model_sha = run.model_sha256() if results else None
    if model_sha is not None:
        for path, result in zip(paths, results):
            if result["bundle"]["run"].get("model_sha256") != model_sha:
                raise TlxError(f"{path} was measured on a bundle of another model than {run.model}. "
                               f"Bundle this run (`tlx bundle {run.root}`) and bench that on the device.")
    return results


def _machine(record: dict) -> str:
    if "cpu_features" not in record:  # a record older than tlx.machine
        return str(record.get("cpu", "?"))
    features = ", ".join(record["cpu_features"]) or "no int8 features"
    return f"{record.get('cpu', '?')} ({record.get('architecture', '?')}, {features})"


def _pct(p: dict) -> str:
    return f"{100 * p['value']:.1f} [{100 * p['ci95'][0]:.1f}, {100 * p['ci95'][1]:.1f}]"


def _first_p50(latency: dict) -> Optional[float]:
    first = next(iter(latency.values()), None)
    return first["p50_ms"] if first else None


def _ratios(rows: list[tuple[str, str, Optional[float]]]) -> dict[str, Optional[float]]:
    """int8 p50 / float32 p50 per backend, from (model, backend, p50)."""
    p50 = {(model, backend): value for model, backend, value in rows}
    out = {}
    for (model, backend), value in p50.items():
        base = p50.get(("float32", backend))
        if model == "int8" and value and base:
            out[backend] = value / base
    return out


def host_rows(bench: dict) -> list[list[str]]:
    env = bench["environment"]
    where = f"host ({bench['date']})"
    models = [m for m in bench["models"]]
    plain = [(m["name"].split(" (")[0], m["backend"] or "keras", _first_p50(m["latency"])) for m in models]
    ratios = _ratios(plain)
    rows = []
    for m, (name, backend, p50) in zip(models, plain):
        rows.append([where, _machine(env), name, backend, _pct(m["accuracy"]),
                     "-" if m["drop_points"] is None else f"{m['drop_points']:+.1f}",
                     "-" if m["agreement"] is None else f"{100 * m['agreement']['value']:.1f}",
                     "(host)", "-" if p50 is None else f"{p50:.2f}",
                     f"{ratios[backend]:.2f}" if name == "int8" and backend in ratios else "-"])
    return rows


def device_rows(result: dict) -> list[list[str]]:
    emulated = result.get("emulated")
    where = (f"emulated: {emulated}" if emulated else "device") + f" ({result['date']})"
    models = result["models"]
    ratios = _ratios([(m["name"], m["backend"], _first_p50(m["latency"])) for m in models])
    rows = []
    for m in models:
        host = m["host"]
        same = host and (f"{host['identical']}/{host['n']}" + (f", max {host['max_steps']} step(s)"
                                                                if host["max_steps"] is not None else ""))
        p50 = _first_p50(m["latency"])
        rows.append([where, _machine(result["machine"]), m["name"], m["backend"], _pct(m["accuracy"]),
                     f"{m['drop']['points']:+.1f}", f"{100 * m['agreement_reference']['value']:.1f}",
                     same or "-",
                     "not a device figure" if emulated else "-" if p50 is None else f"{p50:.2f}",
                     "-" if emulated or m["name"] != "int8" or m["backend"] not in ratios
                     else f"{ratios[m['backend']]:.2f}"])
    return rows


def comparison(bench: Optional[dict], results: list[dict]) -> tuple[list[str], list[list[str]]]:
    rows = host_rows(bench) if bench else []
    for result in results:
        rows += device_rows(result)
    return HEADER, rows
