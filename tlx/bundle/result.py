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

Layout (format_version 2; version 1 lacks the models' sha256):
    kind, format_version, tlx, date, machine, load_average, emulated,
    bundle: {file, sha256, run: {name, run_id, model_sha256}, created, tlx, host_machine},
    settings: {threads, runs, warmup, backends, max_drop, max_drop_on (missing: "point")},
    labels, n_images,
    reference: {name, accuracy}, models: [ModelResult], peak_rss_mb, wall_s, max_drop_exceeded

A sweep's bundle (tlx bundle SWEEP_DIR) gives the same layout with bundle.run null and
bundle.sweep {name, split_sha256}, reference null, and each model row naming its candidate:
candidate {backbone, image_size, run: {name, run_id, model_sha256}, reference: {name, accuracy}}
(the drop of a row is against its own candidate's Keras model).

TensorFlow-free: the device writes it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Optional

from tlx import files
from tlx.drop import DropGate, drop_exceeded
from tlx.errors import TlxError
from tlx.machine import Machine
from tlx.stats import Latency, PairedDifference, Proportion, wilson
from tlx.text import printable

#: What a device result file says it is, so that `tlx report --device` refuses anything else.
KIND = "tlx-device-result"
#: 2: each model row carries the SHA-256 of the .tflite it measured.
RESULT_VERSION = 2

#: Read at most this much: a genuine result is tens of kilobytes (a few rows per model, and
#: at most MAX_FAILURES failed photos per row). JSON of the costliest shape ([{}, {}, ...])
#: takes about 27 bytes of memory per byte of file: this caps parsing at about 30 MB.
MAX_RESULT_BYTES = 1 << 20
#: Failed photos listed per row (the first ones; accuracy counts them all as wrong).
MAX_FAILURES = 20
#: Longest text value (a name, a CPU string, an error message).
MAX_TEXT = 4096
MAX_LABELS = 100_000
MAX_IMAGES = 10_000_000
MAX_ROWS = 1024
MAX_THREADS = 64
MAX_FEATURES = 64
MAX_VERSIONS = 64
#: A latency or cold start beyond these is no measurement of an image classifier.
MAX_MS = 1e7
MAX_SECONDS = 1e7
MAX_MB = 1e7

_SHA256 = re.compile(r"[0-9a-f]{64}")
_AGAIN = ("Pass the .json that `tlx bench BUNDLE` wrote, unchanged; if it was damaged on the "
          "way, copy it again or bench the bundle again on the device.")


class ResultError(TlxError):
    """A device result file that cannot be trusted: not one, damaged, or from a newer tlx."""


# --- the schema --------------------------------------------------------------------------

@dataclass(frozen=True)
class ColdStart:
    """A fresh `tlx predict` process: seconds to its first result, and its peak RSS."""

    first_output_s: float
    peak_rss_mb: float

    def to_json(self) -> dict:
        return {"first_output_s": self.first_output_s, "peak_rss_mb": self.peak_rss_mb}


@dataclass(frozen=True)
class HostComparison:
    """This device's outputs against the host's for the same file and backend (or the host
    backend with the same kernels)."""

    #: The host backend compared with.
    backend: str
    same_backend: bool
    n: int
    #: Photos whose output equals the host's exactly; the others (failed ones included).
    identical: int
    differ: int
    #: Largest difference in probability over the photos that ran on both; None: none did.
    max_abs_diff: Optional[float]
    top1_agreement: Proportion
    #: Quantized outputs: the largest difference in quantization steps, and {steps: photos}.
    max_steps: Optional[int] = None
    steps: Optional[dict[int, int]] = None

    def to_json(self) -> dict:
        return {"backend": self.backend, "same_backend": self.same_backend, "n": self.n,
                "identical": self.identical, "differ": self.differ, "max_abs_diff": self.max_abs_diff,
                "top1_agreement": self.top1_agreement.to_json(), "max_steps": self.max_steps,
                "steps": None if self.steps is None else {str(k): v for k, v in self.steps.items()}}


@dataclass(frozen=True)
class RunRecord:
    """The run the bundle was made from."""

    name: str
    run_id: Optional[str]
    model_sha256: str

    def to_json(self) -> dict:
        return {"name": self.name, "run_id": self.run_id, "model_sha256": self.model_sha256}


@dataclass(frozen=True)
class SweepCandidate:
    """Which candidate of a sweep a model row belongs to, and its Keras reference's accuracy."""

    backbone: str
    image_size: int
    run: RunRecord
    reference_name: str
    reference_accuracy: Proportion

    def to_json(self) -> dict:
        return {"backbone": self.backbone, "image_size": self.image_size, "run": self.run.to_json(),
                "reference": {"name": self.reference_name, "accuracy": self.reference_accuracy.to_json()}}


@dataclass(frozen=True)
class ModelResult:
    """One model file on one backend."""

    name: str
    backend: str
    #: The model's member name in the bundle (models/<file>.tflite).
    file: str
    size_bytes: int
    #: SHA-256 of the .tflite measured (None in version 1 results).
    sha256: Optional[str]
    accuracy: Proportion
    #: The bundled reference's accuracy minus this model's, in points, paired.
    drop: PairedDifference
    agreement_reference: Proportion
    host: Optional[HostComparison]
    #: {threads: latency}, in the settings' thread order.
    latency: dict[int, Latency]
    cold_start: Optional[ColdStart]
    #: (photo, error) for the first MAX_FAILURES photos the model failed on.
    failures: tuple[tuple[str, str], ...] = ()
    #: The sweep candidate, in a sweep's result; None for a single run's.
    candidate: Optional[SweepCandidate] = None

    @property
    def first_p50(self) -> Optional[float]:
        first = next(iter(self.latency.values()), None)
        return first.p50 if first else None

    def to_json(self) -> dict:
        return {"name": self.name, "backend": self.backend, "file": self.file, "size_bytes": self.size_bytes,
                "sha256": self.sha256, "accuracy": self.accuracy.to_json(), "drop": self.drop.to_json(),
                "agreement_reference": self.agreement_reference.to_json(),
                "host": self.host and self.host.to_json(),
                "latency": {str(t): _latency_json(lat) for t, lat in self.latency.items()},
                "cold_start": self.cold_start and self.cold_start.to_json(),
                "failures": [{"image": image, "error": error} for image, error in self.failures],
                **({"candidate": self.candidate.to_json()} if self.candidate else {})}


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
    models: tuple[ModelResult, ...]
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


def _latency_json(lat: Latency) -> dict:
    # Latency.to_json's throughput is Infinity at p50 = 0: not JSON. A result's p50 is > 0.
    return {"p50_ms": lat.p50, "p90_ms": lat.p90, "p99_ms": lat.p99, "mean_ms": lat.mean, "runs": lat.runs,
            "throughput_per_s": lat.throughput}


# --- reading -----------------------------------------------------------------------------

def read_result(path: str | Path) -> DeviceResult:
    """A device result file, parsed and checked whole (ResultError, a TlxError, otherwise)."""
    path = Path(path)
    try:
        data = files.read_bounded(path, MAX_RESULT_BYTES)
    except FileNotFoundError:
        raise ResultError(f"{path}: no such file. Pass the .json that `tlx bench BUNDLE` wrote.") from None
    except OSError as exc:
        raise ResultError(f"{path}: cannot read it ({exc.strerror or exc}). {_AGAIN}") from None
    if data is None:
        raise ResultError(f"{path} is larger than {MAX_RESULT_BYTES >> 20} MB: no device result is. {_AGAIN}")
    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ResultError(f"{path} is not a device result: not JSON ({_brief(exc)}). {_AGAIN}") from None
    return parse_result(doc, str(path))


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number JSON allows")


def _brief(exc: BaseException) -> str:
    return printable(str(exc))[:200] or type(exc).__name__


def _shown(value: Any) -> str:
    """A value for an error message: short, never a whole container."""
    if isinstance(value, (dict, list)):
        return f"a JSON {'object' if isinstance(value, dict) else 'list'}"
    text = repr(value) if not isinstance(value, str) else repr(value[:60])
    return printable(text)[:80]


class _Fields:
    """One JSON object of the file, read key by key with the type and range each must have;
    `where` (e.g. "models[2].latency") names the place in every error."""

    def __init__(self, value: Any, where: str, source: str, advice: str = _AGAIN):
        self.source, self.where, self.advice = source, where, advice
        if not isinstance(value, dict):
            self.fail(f"is {_shown(value)}, not a JSON object")
        self.obj = value

    def fail(self, problem: str, key: Optional[str] = None) -> NoReturn:
        place = ".".join(p for p in (self.where, key) if p) or "the document"
        raise ResultError(f"{self.source} is not a usable device result: {place} {problem}. {self.advice}")

    def get(self, key: str, nullable: bool = False, missing: Any = ...) -> Any:
        """The value at `key`; null only when `nullable`; a missing key reads as `missing`
        when one is given (a field older versions lack), else it is an error."""
        if key not in self.obj:
            if missing is not ...:
                return missing
            self.fail("is missing", key)
        value = self.obj[key]
        if value is None and not nullable:
            self.fail("is null", key)
        return value

    def sub(self, key: str, nullable: bool = False) -> Optional["_Fields"]:
        value = self.get(key, nullable)
        return None if value is None else _Fields(value, _join(self.where, key), self.source, self.advice)

    def text(self, key: str, nullable: bool = False, missing: Any = ...) -> Optional[str]:
        value = self.get(key, nullable, missing)
        if value is None:
            return None
        return self.check_text(value, key)

    def check_text(self, value: Any, key: str) -> str:
        if not isinstance(value, str):
            self.fail(f"is {_shown(value)}, not text", key)
        if len(value) > MAX_TEXT:
            self.fail(f"is {len(value)} characters long (at most {MAX_TEXT})", key)
        return value

    def integer(self, key: str, low: int, high: int, nullable: bool = False) -> Optional[int]:
        value = self.get(key, nullable)
        if value is None:
            return None
        return self.check_integer(value, key, low, high)

    def check_integer(self, value: Any, key: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"is {_shown(value)}, not a whole number", key)
        if not low <= value <= high:
            self.fail(f"is {_shown(value)}, outside {low}..{high}", key)
        return value

    def number(self, key: str, low: float, high: float, nullable: bool = False) -> Optional[float]:
        value = self.get(key, nullable)
        if value is None:
            return None
        return self.check_number(value, key, low, high)

    def check_number(self, value: Any, key: str, low: float, high: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(f"is {_shown(value)}, not a number", key)
        value = float(value)
        if not math.isfinite(value) or not low <= value <= high:
            self.fail(f"is {_shown(value)}, outside {low:g}..{high:g}", key)
        # -0.0 equals 0.0 and passes every check, but would be shown as a drop of "-0.0".
        return value + 0.0

    def boolean(self, key: str) -> bool:
        value = self.get(key)
        if not isinstance(value, bool):
            self.fail(f"is {_shown(value)}, not true or false", key)
        return value

    def items(self, key: str, most: int, nullable: bool = False) -> Optional[list]:
        value = self.get(key, nullable)
        if value is None:
            return None
        if not isinstance(value, list):
            self.fail(f"is {_shown(value)}, not a list", key)
        if len(value) > most:
            self.fail(f"has {len(value)} entries (at most {most})", key)
        return value

    def texts(self, key: str, most: int) -> tuple[str, ...]:
        return tuple(self.check_text(v, f"{key}[{i}]") for i, v in enumerate(self.items(key, most)))

    def sha256(self, key: str, nullable: bool = False, missing: Any = ...) -> Optional[str]:
        value = self.text(key, nullable, missing)
        if value is not None and not _SHA256.fullmatch(value):
            self.fail(f"is {_shown(value)}, not a SHA-256 (64 hex digits)", key)
        return value

    def equal(self, key: str, value: Any, expected: Any, why: str) -> None:
        if value != expected:
            self.fail(f"is {_shown(value)}, but {why} ({_shown(expected)})", key)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def parse_result(doc: Any, source: str) -> DeviceResult:
    """A parsed JSON document checked to be a device result; `source` names it in errors."""
    import tlx

    top = _Fields(doc, "", source)
    if doc.get("kind") != KIND:
        raise ResultError(f"{source} is not a device result (its \"kind\" is not {KIND!r}). "
                          "Pass the .json that `tlx bench BUNDLE` wrote.")
    version = top.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > RESULT_VERSION:
        raise ResultError(f"{source} was written by a newer tlx ({_shown(top.get('tlx', nullable=True))}, "
                          f"result format {version}; this tlx {tlx.__version__} reads {RESULT_VERSION} and "
                          "older). Upgrade tlx here (pip install -U tlx-edge).")
    version = top.integer("format_version", 1, RESULT_VERSION)
    settings = _settings(top.sub("settings"))
    n_images = top.integer("n_images", 1, MAX_IMAGES)
    labels = top.texts("labels", MAX_LABELS)
    if not labels:
        top.fail("is empty", "labels")
    bundle = _bundle(top.sub("bundle"))
    reference = top.sub("reference", nullable=bundle.sweep is not None)
    if bundle.sweep is not None and reference is not None:
        top.fail("is not null, but a sweep's result has a reference per candidate", "reference")
    reference_accuracy = None if reference is None else _proportion(reference, "accuracy", n_images)
    rows = top.items("models", MAX_ROWS)
    models = tuple(_model(_Fields(row, f"models[{i}]", source), settings, n_images, reference_accuracy,
                          version, sweep=bundle.sweep is not None) for i, row in enumerate(rows))
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


def _settings(f: _Fields) -> Settings:
    threads = tuple(f.check_integer(v, f"threads[{i}]", 1, 1024)
                    for i, v in enumerate(f.items("threads", MAX_THREADS)))
    backends = f.texts("backends", MAX_ROWS)
    if not threads or len(set(threads)) != len(threads):
        f.fail("is empty or repeats a thread count", "threads")
    if not backends or len(set(backends)) != len(backends):
        f.fail("is empty or repeats a backend", "backends")
    gate = f.text("max_drop_on", missing=DropGate.POINT.value)
    if gate not in {g.value for g in DropGate}:
        f.fail(f"is {_shown(gate)}, not one of {', '.join(g.value for g in DropGate)}", "max_drop_on")
    return Settings(threads=threads, runs=f.integer("runs", 1, 10**7), warmup=f.integer("warmup", 0, 10**7),
                    backends=backends, max_drop=f.number("max_drop", 0, 100, nullable=True),
                    max_drop_on=DropGate(gate))


def _proportion(f: _Fields, key: str, n: int) -> Proportion:
    """k of n, whose value and Wilson interval must be k / n's: one damaged number is caught."""
    p = f.sub(key)
    p.equal("n", p.integer("n", 0, MAX_IMAGES), n, "the result has that many photos")
    successes = p.integer("successes", 0, n)
    expected = wilson(successes, n)
    p.equal("value", p.number("value", 0, 1), successes / n, "successes / n is")
    ci = p.items("ci95", 2)
    bounds = [p.check_number(v, f"ci95[{i}]", 0, 1) for i, v in enumerate(ci)]
    if len(bounds) != 2 or not (_close(bounds[0], expected.low) and _close(bounds[1], expected.high)):
        p.fail(f"is not the 95% Wilson interval of {successes} of {n} "
               f"([{expected.low:.6f}, {expected.high:.6f}])", "ci95")
    return expected


def _drop(f: _Fields, n: int, reference: Proportion, accuracy: Proportion) -> PairedDifference:
    d = f.sub("drop")
    d.equal("n", d.integer("n", 0, MAX_IMAGES), n, "the result has that many photos")
    points = d.number("points", -100, 100)
    expected = 100 * (reference.successes - accuracy.successes) / n
    if not _close(points, expected):
        d.fail(f"is {points:g}, but the reference's and the model's accuracies give {expected:g}", "points")
    ci = d.items("ci95", 2, nullable=True)
    if ci is None:
        # No interval: no photo changed correctness (or a single photo).
        if points != 0 and n >= 2:
            d.fail("is null, but photos changed correctness", "ci95")
        return PairedDifference(points, math.nan, math.nan, n)
    if len(ci) != 2:
        d.fail("is not two numbers", "ci95")
    # A normal interval on a few photos reaches past +-100 (n = 2: up to +-196).
    low, high = (d.check_number(v, f"ci95[{i}]", -300, 300) for i, v in enumerate(ci))
    # Symmetric about the points (a normal interval): one damaged bound is caught.
    if not (low <= points <= high and math.isclose(points - low, high - points, abs_tol=1e-6)):
        d.fail(f"[{low:g}, {high:g}] is no interval about {points:g}", "ci95")
    return PairedDifference(points, low, high, n)


def _latency(f: _Fields, key: str, runs: int) -> Latency:
    lat = f.sub(key)
    p50, p90, p99 = (lat.number(k, 1e-9, MAX_MS) for k in ("p50_ms", "p90_ms", "p99_ms"))
    if not p50 <= p90 <= p99:
        lat.fail(f"p50 {p50:g} <= p90 {p90:g} <= p99 {p99:g} does not hold", "")
    mean = lat.number("mean_ms", 1e-9, MAX_MS)
    lat.equal("runs", lat.integer("runs", 1, 10**7), runs, "settings.runs is")
    throughput = lat.number("throughput_per_s", 0, 1e13)
    if not _close(throughput, 1000.0 / p50):
        lat.fail(f"is {throughput:g}, not 1000 / p50 ({1000.0 / p50:g})", "throughput_per_s")
    return Latency(p50, p90, p99, mean, runs)


def _host(f: Optional[_Fields], n: int, backend: str) -> Optional[HostComparison]:
    if f is None:
        return None
    f.equal("n", f.integer("n", 0, MAX_IMAGES), n, "the result has that many photos")
    host_backend = f.text("backend")
    f.equal("same_backend", f.boolean("same_backend"), host_backend == backend,
            f"the host backend {host_backend!r} and this row's {backend!r} say")
    identical, differ = f.integer("identical", 0, n), f.integer("differ", 0, n)
    f.equal("differ", differ, n - identical, "n - identical is")
    # Probabilities: at most 1 apart (2 leaves room for float rounding).
    max_abs_diff = f.number("max_abs_diff", 0, 2, nullable=True)
    if identical == n and max_abs_diff != 0:
        f.fail(f"is {_shown(max_abs_diff)}, but every photo's output is identical", "max_abs_diff")
    steps = f.sub("steps", nullable=True)
    max_steps = f.integer("max_steps", 0, 2**31, nullable=True)
    counts = None
    if (steps is None) != (max_steps is None):
        f.fail("and steps must both be given (quantized output) or both be null", "max_steps")
    if steps is not None:
        if len(steps.obj) > n + 1:
            steps.fail(f"has {len(steps.obj)} entries for {n} photos")
        counts = {}
        for key, value in steps.obj.items():
            if not (key.isascii() and key.isdigit() and len(key) <= 10):
                steps.fail(f"has the key {_shown(key)}, not a step count")
            counts[int(key)] = steps.check_integer(value, key, 1, n)
        ran = sum(counts.values())
        # Identical photos are 0 steps apart (a difference under half a step rounds to 0 too).
        if ran > n or counts.get(0, 0) < identical or max_steps != max(counts, default=0):
            steps.fail(f"({ran} photos, {counts.get(0, 0)} at 0 steps, max {max(counts, default=0)}) does "
                       f"not agree with n {n}, identical {identical} and max_steps {max_steps}")
        if (max_abs_diff is None) != (ran == 0):
            f.fail("is null exactly when no photo ran on both machines", "max_abs_diff")
    return HostComparison(backend=host_backend, same_backend=host_backend == backend, n=n, identical=identical,
                          differ=differ, max_abs_diff=max_abs_diff,
                          top1_agreement=_proportion(f, "top1_agreement", n), max_steps=max_steps,
                          steps=counts)


def _candidate(f: _Fields, n: int) -> SweepCandidate:
    run, reference = f.sub("run"), f.sub("reference")
    backbone, size = f.text("backbone"), f.integer("image_size", 8, 1 << 16)
    candidate = SweepCandidate(backbone=backbone, image_size=size, run=_run(run),
                               reference_name=reference.text("name"),
                               reference_accuracy=_proportion(reference, "accuracy", n))
    if candidate.run.name != f"{backbone}-{size}":
        run.fail(f"is {_shown(candidate.run.name)}, not <backbone>-<image size>", "name")
    return candidate


def _model(f: _Fields, settings: Settings, n: int, reference: Optional[Proportion], version: int,
           sweep: bool = False) -> ModelResult:
    from tlx.bench.bench import model_name

    candidate = _candidate(f.sub("candidate"), n) if sweep else None
    if not sweep and f.get("candidate", nullable=True, missing=None) is not None:
        f.fail("names a sweep candidate, but the bundle is a single run's", "candidate")
    if candidate is not None:
        reference = candidate.reference_accuracy
    name, backend, file = f.text("name"), f.text("backend"), f.text("file")
    if not name or name != model_name(Path(file)):
        f.fail(f"is {_shown(name)}, not the name of its file {_shown(file)}", "name")
    if backend not in settings.backends:
        f.fail(f"is {_shown(backend)}, not one of settings.backends", "backend")
    accuracy = _proportion(f, "accuracy", n)
    latency = f.sub("latency")
    keys = [str(t) for t in settings.threads]
    if list(latency.obj) != keys:
        latency.fail(f"has the thread counts {_shown(list(latency.obj)[:8])}, not settings.threads {keys}")
    cold = f.sub("cold_start", nullable=True)
    failures = f.items("failures", min(n, MAX_FAILURES))
    return ModelResult(
        name=name, backend=backend, file=file, size_bytes=f.integer("size_bytes", 1, 1 << 40),
        sha256=f.sha256("sha256", missing=None) if version < 2 else f.sha256("sha256"),
        accuracy=accuracy, drop=_drop(f, n, reference, accuracy),
        agreement_reference=_proportion(f, "agreement_reference", n),
        host=_host(f.sub("host", nullable=True), n, backend),
        latency={t: _latency(latency, str(t), settings.runs) for t in settings.threads},
        cold_start=None if cold is None else ColdStart(cold.number("first_output_s", 0, MAX_SECONDS),
                                                       cold.number("peak_rss_mb", 0, MAX_MB)),
        failures=tuple(_failure(_Fields(v, f"{f.where}.failures[{i}]", f.source)) for i, v in enumerate(failures)),
        candidate=candidate)


def _failure(f: _Fields) -> tuple[str, str]:
    return f.text("image"), f.text("error")


def _check_rows(top: _Fields, models: tuple[ModelResult, ...], settings: Settings) -> None:
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


def _row_model(m: ModelResult) -> tuple[str, str]:
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


def _run(run: _Fields) -> RunRecord:
    return RunRecord(name=run.text("name"), run_id=run.text("run_id", nullable=True),
                     model_sha256=run.sha256("model_sha256"))
