"""The device result file: what `tlx bench BUNDLE` writes on the device and `tlx report
RUN_DIR --device RESULT.json` reads on the host. One typed schema for both sides: the device
builds a `DeviceResult` and writes `to_json()`; the host reads the file with `read_result`,
which parses it into the same classes, with bounds, before anything uses it.

The file came from another machine, by hand: it is read whole only below a size cap, every
value has its type and range, and the figures that are stored twice must agree (an accuracy
is its successes over n with that Wilson interval, a drop is the difference of two of those
accuracies, a throughput is 1000 / p50, every row has the result's photo count, the rows are
every model on every backend, each latency table has the settings' thread counts). A damaged
figure is refused rather than shown. Whether the result belongs to a given run is checked by
tlx.bundle.compare, which knows the run.

Layout (format_version 3):
    kind, format_version, tlx, date, machine, load_average, emulated,
    bundle: {file, sha256, run: {name, run_id, model_sha256}, created, tlx, host_machine},
    settings: {threads, runs, warmup, backends, max_drop, max_drop_on},
    labels, n_images,
    reference: {name, accuracy}, models: [ModelRow], peak_rss_mb, wall_s, max_drop_exceeded
Each model row is tlx.bench.rows.ModelRow, the row host bench writes to bench.json too.
Older formats still read: 2's rows name the agreement "agreement_reference" (3: "agreement")
and have no "confusion"; 2 and 1 may lack settings.max_drop_on (the point); 1 lacks the rows'
sha256.

A sweep's bundle (tlx bundle SWEEP_DIR) gives the same layout with bundle.run null and
bundle.sweep {name, split_sha256}, reference null, and each model row naming its candidate:
candidate {backbone, image_size, run: {name, run_id, model_sha256}, reference: {name, accuracy}}
(the drop of a row is against its own candidate's Keras model).

TensorFlow-free: the device writes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Optional

from tlx import files
from tlx.bench.rows import (MAX_FEATURES, MAX_IMAGES, MAX_LABELS, MAX_MB, MAX_ROWS, MAX_SECONDS, MAX_THREADS,
                            Fields as _Fields, ModelRow, ResultError, RowContext, RunRecord, read_proportion,
                            read_row, read_run as _run, renamed, shown as _shown)
from tlx.drop import DropGate, drop_exceeded
from tlx.machine import Machine
from tlx.stats import Proportion
from tlx.text import printable

#: What a device result file says it is, so that `tlx report --device` refuses anything else.
KIND = "tlx-device-result"
#: 2: each model row carries the SHA-256 of the .tflite it measured. 3: the rows are
#: tlx.bench.rows.ModelRow (bench.json's too: "agreement", "confusion"), settings.max_drop_on
#: is always written.
RESULT_VERSION = 3

#: Read at most this much: a genuine result is tens of kilobytes (a few rows per model, and
#: at most MAX_FAILURES failed photos per row). JSON of the costliest shape ([{}, {}, ...])
#: takes about 27 bytes of memory per byte of file: this caps parsing at about 30 MB.
MAX_RESULT_BYTES = 1 << 20
#: Failed photos listed per row (the first ones; accuracy counts them all as wrong).
MAX_FAILURES = 20
#: Entries of a machine record's package versions.
MAX_VERSIONS = 64
_AGAIN = ("Pass the .json that `tlx bench BUNDLE` wrote, unchanged; if it was damaged on the "
          "way, copy it again or bench the bundle again on the device.")


@dataclass(frozen=True)
class BundleRecord:
    """The bundle benched."""

    file: str
    sha256: str
    #: The run; None for a sweep's bundle (each model row names its candidate's run).
    run: Optional[RunRecord]
    created: Optional[str]
    tlx: Optional[str]
    host_machine: Machine
    #: {name, split_sha256} of a sweep's bundle.
    sweep: Optional[dict] = None

    def to_json(self) -> dict:
        return {"file": self.file, "sha256": self.sha256, "run": self.run and self.run.to_json(),
                "created": self.created, "tlx": self.tlx, "host_machine": self.host_machine.to_json(),
                **({"sweep": self.sweep} if self.sweep else {})}


@dataclass(frozen=True)
class Settings:
    threads: tuple[int, ...]
    runs: int
    warmup: int
    backends: tuple[str, ...]
    max_drop: Optional[float]
    #: What of the drop max_drop holds (results before it was an option: the point).
    max_drop_on: DropGate = DropGate.POINT

    def to_json(self) -> dict:
        return {"threads": list(self.threads), "runs": self.runs, "warmup": self.warmup,
                "backends": list(self.backends), "max_drop": self.max_drop,
                "max_drop_on": self.max_drop_on.value}


@dataclass(frozen=True)
class DeviceResult:
    """Everything `tlx bench BUNDLE` measured on one device."""

    tlx: str
    #: UTC, "YYYY-MM-DD HH:MM UTC".
    date: str
    machine: Machine
    load_average: Optional[tuple[float, float, float]]
    #: The emulator, when this "device" was one: its latency is then no device figure.
    emulated: Optional[str]
    bundle: BundleRecord
    settings: Settings
    labels: tuple[str, ...]
    n_images: int
    #: The bundled reference (Keras, computed on the host) and its accuracy on the photos;
    #: None in a sweep's result (each candidate has its own).
    reference_name: Optional[str]
    reference_accuracy: Optional[Proportion]
    models: tuple[ModelRow, ...]
    peak_rss_mb: Optional[float]
    wall_s: float
    format_version: int = RESULT_VERSION
    max_drop_exceeded: bool = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "max_drop_exceeded", drop_exceeded(
            ((m.name, m.drop) for m in self.models), self.settings.max_drop, self.settings.max_drop_on))

    def to_json(self) -> dict:
        return {
            "kind": KIND, "format_version": self.format_version, "tlx": self.tlx, "date": self.date,
            "machine": self.machine.to_json(),
            "load_average": None if self.load_average is None else list(self.load_average),
            "emulated": self.emulated, "bundle": self.bundle.to_json(), "settings": self.settings.to_json(),
            "labels": list(self.labels), "n_images": self.n_images,
            "reference": None if self.reference_accuracy is None else {
                "name": self.reference_name, "accuracy": self.reference_accuracy.to_json()},
            "models": [m.to_json() for m in self.models], "peak_rss_mb": self.peak_rss_mb,
            "wall_s": self.wall_s, "max_drop_exceeded": self.max_drop_exceeded}

    def dumps(self) -> str:
        """The file's text. No NaN or Infinity: not JSON, and never a figure."""
        return json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n"


# --- reading -----------------------------------------------------------------------------

def read_result(path: str | Path) -> DeviceResult:
    """A device result file, parsed and checked whole (ResultError, a TlxError, otherwise)."""
    path = Path(path)
    try:
        doc = files.read_json_bounded(path, MAX_RESULT_BYTES, parse_constant=_no_constant)
    except files.JsonFileError as exc:
        raise ResultError({
            "missing": f"{path}: no such file. Pass the .json that `tlx bench BUNDLE` wrote.",
            "unreadable": f"{path}: cannot read it ({exc.detail}). {_AGAIN}",
            "too_large": f"{path} is larger than {MAX_RESULT_BYTES >> 20} MB: no device result is. {_AGAIN}",
            "not_json": f"{path} is not a device result: not JSON ({_brief(exc)}). {_AGAIN}",
        }[exc.kind]) from None
    return parse_result(doc, str(path))


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number JSON allows")


def _brief(exc: BaseException) -> str:
    return printable(str(exc))[:200] or type(exc).__name__


def parse_result(doc: Any, source: str) -> DeviceResult:
    """A parsed JSON document checked to be a device result; `source` names it in errors."""
    import tlx

    top = _Fields(doc, "", source, _AGAIN)
    if doc.get("kind") != KIND:
        raise ResultError(f"{source} is not a device result (its \"kind\" is not {KIND!r}). "
                          "Pass the .json that `tlx bench BUNDLE` wrote.")
    version = top.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > RESULT_VERSION:
        raise ResultError(f"{source} was written by a newer tlx ({_shown(top.get('tlx', nullable=True))}, "
                          f"result format {version}; this tlx {tlx.__version__} reads {RESULT_VERSION} and "
                          "older). Upgrade tlx here (pip install -U tlx-edge).")
    version = top.integer("format_version", 1, RESULT_VERSION)
    settings = _settings(top.sub("settings"), version)
    n_images = top.integer("n_images", 1, MAX_IMAGES)
    labels = top.texts("labels", MAX_LABELS)
    if not labels:
        top.fail("is empty", "labels")
    bundle = _bundle(top.sub("bundle"))
    reference = top.sub("reference", nullable=bundle.sweep is not None)
    if bundle.sweep is not None and reference is not None:
        top.fail("is not null, but a sweep's result has a reference per candidate", "reference")
    reference_accuracy = None if reference is None else read_proportion(reference, "accuracy", n_images)
    rows = top.items("models", MAX_ROWS)
    # Rows of format 2 and 1 under today's field names (tlx.bench.rows.OLD_NAMES).
    rows = [row if version >= 3 else renamed(row, "device") for row in rows]
    models = tuple(_model(_Fields(row, f"models[{i}]", source, _AGAIN), settings, n_images, len(labels),
                          reference_accuracy, version, sweep=bundle.sweep is not None)
                   for i, row in enumerate(rows))
    _check_rows(top, models, settings)
    load = top.items("load_average", 3, nullable=True)
    if load is not None and len(load) != 3:
        top.fail(f"has {len(load)} entries, not 3 (1, 5 and 15 minutes)", "load_average")
    result = DeviceResult(
        tlx=top.text("tlx"), date=top.text("date"), machine=_machine(top.sub("machine")),
        load_average=None if load is None else tuple(
            top.check_number(v, f"load_average[{i}]", 0, 1e6) for i, v in enumerate(load)),
        emulated=top.text("emulated", nullable=True), bundle=bundle, settings=settings,
        labels=labels, n_images=n_images, reference_name=None if reference is None else reference.text("name"),
        reference_accuracy=reference_accuracy, models=models,
        peak_rss_mb=top.number("peak_rss_mb", 0, MAX_MB, nullable=True),
        wall_s=top.number("wall_s", 0, MAX_SECONDS), format_version=version)
    top.equal("max_drop_exceeded", top.boolean("max_drop_exceeded"), result.max_drop_exceeded,
              "the int8 drops and settings.max_drop and max_drop_on say otherwise")
    return result


def _settings(f: _Fields, version: int) -> Settings:
    threads = tuple(f.check_integer(v, f"threads[{i}]", 1, 1024)
                    for i, v in enumerate(f.items("threads", MAX_THREADS)))
    backends = f.texts("backends", MAX_ROWS)
    if not threads or len(set(threads)) != len(threads):
        f.fail("is empty or repeats a thread count", "threads")
    if not backends or len(set(backends)) != len(backends):
        f.fail("is empty or repeats a backend", "backends")
    # Results of format 2 and 1 may come from before the option: the point, then.
    gate = f.text("max_drop_on", missing=DropGate.POINT.value if version < 3 else ...)
    if gate not in {g.value for g in DropGate}:
        f.fail(f"is {_shown(gate)}, not one of {', '.join(g.value for g in DropGate)}", "max_drop_on")
    return Settings(threads=threads, runs=f.integer("runs", 1, 10**7), warmup=f.integer("warmup", 0, 10**7),
                    backends=backends, max_drop=f.number("max_drop", 0, 100, nullable=True),
                    max_drop_on=DropGate(gate))


def _model(f: _Fields, settings: Settings, n: int, n_labels: int, reference: Optional[Proportion],
           version: int, sweep: bool = False) -> ModelRow:
    """A device row: the one row schema (tlx.bench.rows), and what a device's row must be
    besides: named for its bundle member, on one of the settings' backends, timed."""
    from tlx.bench.bench import model_name

    row = read_row(f, RowContext(n=n, n_labels=n_labels, threads=settings.threads, runs=settings.runs,
                                 reference=reference, max_failures=MAX_FAILURES, sweep=sweep,
                                 sha256_optional=version < 2))
    if not row.name or row.name != model_name(Path(row.file)):
        f.fail(f"is {_shown(row.name)}, not the name of its file {_shown(row.file)}", "name")
    if row.backend not in settings.backends:
        f.fail(f"is {_shown(row.backend)}, not one of settings.backends", "backend")
    if row.confusion is not None:
        f.fail("is given, but a device result records no confusion matrix", "confusion")
    return row


def _check_rows(top: _Fields, models: tuple[ModelRow, ...], settings: Settings) -> None:
    """The device runs every model on every backend, in that order: nothing dropped or doubled."""
    names = list(dict.fromkeys(_row_model(m) for m in models))
    expected = [(name, backend) for name in names for backend in settings.backends]
    if [(_row_model(m), m.backend) for m in models] != expected or not models:
        top.fail("are not every model on every backend of settings.backends, once each", "models")
    files, candidates = {}, {}
    for m in models:
        if files.setdefault(_row_model(m), (m.file, m.size_bytes, m.sha256)) != (m.file, m.size_bytes, m.sha256):
            top.fail(f"give the model {_shown(m.name)} two different files", "models")
        if m.candidate and candidates.setdefault(m.candidate.run.name, m.candidate) != m.candidate:
            top.fail(f"describe the candidate {_shown(m.candidate.run.name)} in two ways", "models")


def _row_model(m: ModelRow) -> tuple[str, str]:
    """A model's identity in a result: its candidate's run (in a sweep's) and its name."""
    return (m.candidate.run.name if m.candidate else "", m.name)


def parse_machine(obj: Any, source: str, advice: str = _AGAIN) -> Machine:
    """A machine record (tlx.machine.Machine.to_json) from a file; ResultError otherwise,
    ending with `advice` (what to do)."""
    return _machine(_Fields(obj, "", source, advice))


def _machine(f: _Fields) -> Machine:
    features = f.texts("cpu_features", MAX_FEATURES)
    versions = f.sub("versions")
    if len(versions.obj) > MAX_VERSIONS:
        versions.fail(f"has {len(versions.obj)} entries (at most {MAX_VERSIONS})")
    return Machine(cpu=f.text("cpu"), architecture=f.text("architecture"),
                   cores=f.integer("cores", 1, 1 << 20, nullable=True), cpu_features=features,
                   os=f.text("os"), python=f.text("python"),
                   versions={versions.check_text(k, "(name)"): versions.check_text(v, k)
                             for k, v in versions.obj.items()})


def _bundle(f: _Fields) -> BundleRecord:
    sweep = f.sub("sweep", nullable=True) if f.get("sweep", nullable=True, missing=None) is not None else None
    run = f.sub("run", nullable=sweep is not None)
    if (run is None) == (sweep is None):
        f.fail("names both a run and a sweep" if run else "names neither a run nor a sweep", "run")
    return BundleRecord(file=f.text("file"), sha256=f.sha256("sha256"),
                        run=None if run is None else _run(run),
                        created=f.text("created", nullable=True), tlx=f.text("tlx", nullable=True),
                        host_machine=_machine(f.sub("host_machine")),
                        sweep=None if sweep is None else {"name": sweep.text("name"),
                                                          "split_sha256": sweep.sha256("split_sha256")})


