"""The files of a sweep folder, each parsed by one typed schema here, with bounds.

    SWEEP_DIR/plan.json                  what the sweep trains (written first; shards must agree)
    SWEEP_DIR/split.json                 the one split every candidate trains and is tested on
    SWEEP_DIR/<backbone>-<size>/         an ordinary `tlx train` run folder per candidate
    SWEEP_DIR/candidates/<run>.json      the outcome of one candidate (models or the error)
    SWEEP_DIR/sweep.json                 every candidate, the Pareto front, the pick

Candidate records and sweep.json may come from another machine (a shard) or be edited:
they are read only through `read_candidate` / `read_sweep`, which check every field's type
and range and refuse files larger than a sweep could write.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tlx import files
from tlx.errors import TlxError

PLAN = "plan.json"
SPLIT = "split.json"
CANDIDATES = "candidates"
SWEEP_JSON = "sweep.json"
#: Bumped when a file's layout changes.
FORMAT = 1

DONE, FAILED, PENDING = "done", "failed", "pending"
STATUSES = (DONE, FAILED, PENDING)
#: Bounds of what a sweep writes: anything larger is not ours.
MAX_CANDIDATE_BYTES = 256 * 1024
MAX_SWEEP_BYTES = 16 * 1024 * 1024
MAX_CANDIDATES = 4096
MAX_MODELS = 16
MAX_TEXT = 4000
MAX_IMAGE_SIZE = 4096
#: A run folder name: <backbone>-<size>, letters, digits, _ . - only (no separators, no "..").
RUN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}-[0-9]{1,4}$")


def run_name(backbone: str, image_size: int) -> str:
    return f"{backbone}-{image_size}"


@dataclass(frozen=True)
class ModelRecord:
    """One exported model of a candidate, measured on the host."""

    format: str
    #: Top-1 on the shared test split, 0..1.
    accuracy: float
    #: Median (p50) latency, one interpreter thread, on the host.
    latency_ms: float
    size_bytes: int

    def to_json(self) -> dict:
        return {"format": self.format, "accuracy": self.accuracy, "latency_ms": self.latency_ms,
                "size_bytes": self.size_bytes}


@dataclass(frozen=True)
class CandidateRecord:
    backbone: str
    image_size: int
    #: The run folder, relative to SWEEP_DIR.
    run: str
    status: str = PENDING
    models: tuple[ModelRecord, ...] = ()
    #: What went wrong, for a failed candidate.
    error: Optional[str] = None
    #: Wall time of the candidate's train + export + bench (this attempt).
    seconds: Optional[float] = None

    def to_json(self) -> dict:
        return {"backbone": self.backbone, "image_size": self.image_size, "run": self.run,
                "status": self.status, "error": self.error, "seconds": self.seconds,
                "models": [m.to_json() for m in self.models]}


@dataclass(frozen=True)
class SweepRecord:
    """sweep.json."""

    candidates: tuple[CandidateRecord, ...]
    #: "<run>/<format>" of every model on the Pareto front.
    pareto: tuple[str, ...]
    budgets: dict
    #: "<run>/<format>" of the recommended model, or None.
    recommended: Optional[str]
    reason: str
    data_dir: str = ""
    date: str = ""
    environment: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"format": FORMAT, "date": self.date, "data_dir": self.data_dir, "split": SPLIT,
                "candidates": [c.to_json() for c in self.candidates],
                "pareto": list(self.pareto), "budgets": self.budgets,
                "recommended": {"model": self.recommended, "reason": self.reason},
                "environment": self.environment}


# -- reading ----------------------------------------------------------------------------

class _Bad(ValueError):
    pass


def read_bounded_json(path: Path, limit: int, what: str):
    """A file the sweep wrote, through the one bounded JSON reader; TlxError naming `what`."""
    try:
        return files.read_json_bounded(path, limit)
    except files.JsonFileError as exc:
        raise TlxError({
            "missing": f"{path} is missing ({what}).",
            "unreadable": f"Cannot read {path} ({exc.detail}).",
            "too_large": f"{path} is larger than {limit:,} bytes: not a file tlx sweep wrote ({what}).",
            "not_json": f"{path} is not valid JSON ({exc.detail}): the file is damaged ({what}).",
        }[exc.kind]) from None


def _get(obj, key: str, kind, where: str, optional: bool = False):
    if not isinstance(obj, dict):
        raise _Bad(f"{where} is not an object")
    value = obj.get(key)
    if value is None and optional:
        return None
    ok = isinstance(value, kind) and not (kind in (int, float, (int, float)) and isinstance(value, bool))
    if not ok:
        raise _Bad(f"{where}.{key} is {value!r}")
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise _Bad(f"{where}.{key} is longer than {MAX_TEXT} characters")
    return value


def _number(obj, key: str, where: str, low: float, high: float, optional: bool = False):
    value = _get(obj, key, (int, float), where, optional)
    if value is None:
        return None
    try:
        inside = math.isfinite(value) and low <= value <= high
    except OverflowError:  # an integer too large for a float
        inside = False
    if not inside:
        raise _Bad(f"{where}.{key} is {value!r}, outside {low:g}..{high:g}")
    return float(value)


def _model(obj, where: str) -> ModelRecord:
    fmt = _get(obj, "format", str, where)
    if not fmt or len(fmt) > 64:
        raise _Bad(f"{where}.format is {fmt!r}")
    size = _get(obj, "size_bytes", int, where)
    if not 0 < size < 1 << 40:
        raise _Bad(f"{where}.size_bytes is {size!r}")
    return ModelRecord(format=fmt, accuracy=_number(obj, "accuracy", where, 0.0, 1.0),
                       latency_ms=_number(obj, "latency_ms", where, 0.0, 1e7), size_bytes=size)


def parse_candidate(obj, where: str = "candidate") -> CandidateRecord:
    """A candidate record (a file of candidates/ or an entry of sweep.json); _Bad names the field."""
    backbone = _get(obj, "backbone", str, where)
    size = _get(obj, "image_size", int, where)
    if not 8 <= size <= MAX_IMAGE_SIZE:
        raise _Bad(f"{where}.image_size is {size}")
    run = _get(obj, "run", str, where)
    if run != run_name(backbone, size) or not RUN_NAME.match(run):
        raise _Bad(f"{where}.run is {run!r}, expected {run_name(backbone, size)!r}")
    status = _get(obj, "status", str, where)
    if status not in STATUSES:
        raise _Bad(f"{where}.status is {status!r}, expected one of {', '.join(STATUSES)}")
    models = _get(obj, "models", list, where)
    if len(models) > MAX_MODELS:
        raise _Bad(f"{where}.models lists {len(models)} models (at most {MAX_MODELS})")
    parsed = tuple(_model(m, f"{where}.models[{i}]") for i, m in enumerate(models))
    if len({m.format for m in parsed}) != len(parsed):
        raise _Bad(f"{where}.models lists a format twice")
    if (status == DONE) != bool(parsed):
        raise _Bad(f"{where} is {status} with {len(parsed)} models")
    return CandidateRecord(backbone=backbone, image_size=size, run=run, status=status, models=parsed,
                           error=_get(obj, "error", str, where, optional=True),
                           seconds=_number(obj, "seconds", where, 0.0, 1e9, optional=True))


def read_candidate(path: Path) -> CandidateRecord:
    obj = read_bounded_json(path, MAX_CANDIDATE_BYTES, "a candidate's outcome")
    try:
        return parse_candidate(obj, path.name)
    except _Bad as exc:
        raise TlxError(f"{path} is not a valid candidate record ({exc}). Delete it and run the "
                       "sweep again: that candidate is redone.") from None


def write_candidate(sweep_dir: Path, record: CandidateRecord) -> None:
    files.write_json(Path(sweep_dir) / CANDIDATES / f"{record.run}.json", record.to_json())


def parse_sweep(obj) -> SweepRecord:
    if _get(obj, "format", int, "sweep.json") != FORMAT:
        raise _Bad(f"format is {obj.get('format')!r}, this tlx reads {FORMAT}")
    entries = _get(obj, "candidates", list, "sweep.json")
    if len(entries) > MAX_CANDIDATES:
        raise _Bad(f"it lists {len(entries)} candidates (at most {MAX_CANDIDATES})")
    candidates = tuple(parse_candidate(c, f"candidates[{i}]") for i, c in enumerate(entries))
    ids = {f"{c.run}/{m.format}" for c in candidates for m in c.models}
    pareto = _get(obj, "pareto", list, "sweep.json")
    if not all(isinstance(p, str) and p in ids for p in pareto):
        raise _Bad("pareto names a model that no candidate has")
    recommended = _get(obj, "recommended", dict, "sweep.json")
    model = _get(recommended, "model", str, "recommended", optional=True)
    if model is not None and model not in pareto:
        raise _Bad(f"the recommended model {model!r} is not on the Pareto front")
    budgets = _get(obj, "budgets", dict, "sweep.json")
    for key in ("max_latency_ms", "max_size_mb", "min_accuracy"):
        _number(budgets, key, "budgets", 0.0, 1e9, optional=True)
    environment = _get(obj, "environment", dict, "sweep.json", optional=True) or {}
    return SweepRecord(candidates=candidates, pareto=tuple(pareto), budgets=budgets, recommended=model,
                       reason=_get(recommended, "reason", str, "recommended"),
                       data_dir=_get(obj, "data_dir", str, "sweep.json"),
                       date=_get(obj, "date", str, "sweep.json"), environment=environment)


def read_sweep(path: Path) -> SweepRecord:
    obj = read_bounded_json(path, MAX_SWEEP_BYTES, "the sweep's summary")
    try:
        return parse_sweep(obj)
    except _Bad as exc:
        raise TlxError(f"{path} is not a valid sweep.json ({exc}). Write it again with "
                       f"`tlx sweep {path.parent} --collect`.") from None


def write_sweep(path: Path, record: SweepRecord) -> None:
    """sweep.json under a temporary name, read back through the schema, then renamed."""
    with files.atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record.to_json(), indent=2) + "\n", encoding="utf-8")
        read_sweep(tmp)


#: The thread count a sweep times models with (latency_ms is its p50).
BENCH_THREADS = 1


def models_from_bench(path: Path) -> tuple[ModelRecord, ...]:
    """The .tflite models of a run's bench.json (not the Keras reference), read through the
    one row schema (tlx.bench.rows): accuracy on the test split, p50 latency at
    BENCH_THREADS, file size."""
    from tlx.bench.rows import ResultError, read_bench

    again = "The sweep measures it again when you run it again."
    try:
        _, rows = read_bench(path)
        if len(rows) > MAX_MODELS + 1:
            raise _Bad(f"it lists {len(rows)} models")
        models = []
        for i, row in enumerate(rows):
            if row.name == "keras":
                continue
            latency = row.latency.get(BENCH_THREADS)
            if latency is None:
                raise _Bad(f"models[{i}] has no {BENCH_THREADS}-thread latency")
            models.append(_model({"format": row.name, "size_bytes": row.size_bytes,
                                  "accuracy": row.accuracy.value, "latency_ms": latency.p50}, f"models[{i}]"))
    except ResultError as exc:
        raise TlxError(f"{exc} {again}") from None
    except _Bad as exc:
        raise TlxError(f"{path} is not a bench.json with {BENCH_THREADS}-thread latencies ({exc}). {again}") from None
    if not models:
        raise TlxError(f"{path} holds no .tflite model.")
    return tuple(models)
