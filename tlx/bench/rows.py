"""One measured model row, the same for host bench (RUN_DIR/bench/bench.json) and device bench
(the device result of `tlx bench BUNDLE`): one type, one `to_json()`, one reader
(`read_row`), so the two files carry the same fields under the same names.

A row is one model file (or the Keras model, on the host) on one backend:
    name, backend, file, size_bytes, sha256, accuracy, drop, agreement, host, latency,
    cold_start, failures: [{image, error}], confusion, candidate
Fields one side does not measure are null there: `host` (outputs against the host's) and
`candidate` (a sweep's) on the host; `confusion` on the device; `drop` and `agreement` of
the host's reference row.

The reader checks every figure that is stored twice (an accuracy is its successes over n with
that Wilson interval, a drop is the difference of two accuracies, a throughput is 1000 / p50, a
confusion matrix's diagonal is the accuracy's successes): a damaged figure is refused, with a
ResultError naming the place and what to do.

TensorFlow-free: the device writes it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any, NoReturn, Optional

from tlx.errors import TlxError
from tlx.stats import Latency, PairedDifference, Proportion, wilson
from tlx.text import printable

#: Longest error message kept per failed photo: the files stay small.
MAX_ERROR_CHARS = 1000
#: Longest text value (a name, a CPU string, an error message).
MAX_TEXT = 4096
MAX_LABELS = 100_000
MAX_IMAGES = 10_000_000
MAX_ROWS = 1024
MAX_THREADS = 64
#: Entries of a machine record's CPU features.
MAX_FEATURES = 64
#: A latency or cold start beyond these is no measurement of an image classifier.
MAX_MS = 1e7
MAX_SECONDS = 1e7
MAX_MB = 1e7

_SHA256 = re.compile(r"[0-9a-f]{64}")


class ResultError(TlxError):
    """A file of measurements from elsewhere (a device result, a bench.json) that cannot be
    trusted: not one, damaged, or from a newer tlx."""


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


def _latency_json(lat: Latency) -> dict:
    # Latency.to_json's throughput is Infinity at p50 = 0: not JSON. A result's p50 is > 0.
    return {"p50_ms": lat.p50, "p90_ms": lat.p90, "p99_ms": lat.p99, "mean_ms": lat.mean, "runs": lat.runs,
            "throughput_per_s": lat.throughput}


def shown(value: Any) -> str:
    """A value for an error message: short, never a whole container."""
    if isinstance(value, (dict, list)):
        return f"a JSON {'object' if isinstance(value, dict) else 'list'}"
    text = repr(value) if not isinstance(value, str) else repr(value[:60])
    return printable(text)[:80]


class Fields:
    """One JSON object of the file, read key by key with the type and range each must have;
    `where` (e.g. "models[2].latency") names the place in every error."""

    def __init__(self, value: Any, where: str, source: str, advice: str, what: str = "device result"):
        self.source, self.where, self.advice, self.what = source, where, advice, what
        if not isinstance(value, dict):
            self.fail(f"is {shown(value)}, not a JSON object")
        self.obj = value

    def fail(self, problem: str, key: Optional[str] = None) -> NoReturn:
        place = ".".join(p for p in (self.where, key) if p) or "the document"
        raise ResultError(f"{self.source} is not a usable {self.what}: {place} {problem}. {self.advice}")

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

    def sub(self, key: str, nullable: bool = False) -> Optional["Fields"]:
        value = self.get(key, nullable)
        return None if value is None else Fields(value, _join(self.where, key), self.source, self.advice, self.what)

    def text(self, key: str, nullable: bool = False, missing: Any = ...) -> Optional[str]:
        value = self.get(key, nullable, missing)
        if value is None:
            return None
        return self.check_text(value, key)

    def check_text(self, value: Any, key: str) -> str:
        if not isinstance(value, str):
            self.fail(f"is {shown(value)}, not text", key)
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
            self.fail(f"is {shown(value)}, not a whole number", key)
        if not low <= value <= high:
            self.fail(f"is {shown(value)}, outside {low}..{high}", key)
        return value

    def number(self, key: str, low: float, high: float, nullable: bool = False) -> Optional[float]:
        value = self.get(key, nullable)
        if value is None:
            return None
        return self.check_number(value, key, low, high)

    def check_number(self, value: Any, key: str, low: float, high: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(f"is {shown(value)}, not a number", key)
        value = float(value)
        if not math.isfinite(value) or not low <= value <= high:
            self.fail(f"is {shown(value)}, outside {low:g}..{high:g}", key)
        # -0.0 equals 0.0 and passes every check, but would be shown as a drop of "-0.0".
        return value + 0.0

    def boolean(self, key: str) -> bool:
        value = self.get(key)
        if not isinstance(value, bool):
            self.fail(f"is {shown(value)}, not true or false", key)
        return value

    def items(self, key: str, most: int, nullable: bool = False) -> Optional[list]:
        value = self.get(key, nullable)
        if value is None:
            return None
        if not isinstance(value, list):
            self.fail(f"is {shown(value)}, not a list", key)
        if len(value) > most:
            self.fail(f"has {len(value)} entries (at most {most})", key)
        return value

    def texts(self, key: str, most: int) -> tuple[str, ...]:
        return tuple(self.check_text(v, f"{key}[{i}]") for i, v in enumerate(self.items(key, most)))

    def sha256(self, key: str, nullable: bool = False, missing: Any = ...) -> Optional[str]:
        value = self.text(key, nullable, missing)
        if value is not None and not _SHA256.fullmatch(value):
            self.fail(f"is {shown(value)}, not a SHA-256 (64 hex digits)", key)
        return value

    def equal(self, key: str, value: Any, expected: Any, why: str) -> None:
        if value != expected:
            self.fail(f"is {shown(value)}, but {why} ({shown(expected)})", key)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def read_proportion(f: Fields, key: str, n: int) -> Proportion:
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


def read_drop(f: Fields, n: int, reference: Proportion, accuracy: Proportion) -> PairedDifference:
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


def read_latency(f: Fields, key: str, runs: int) -> Latency:
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


def read_host(f: Optional[Fields], n: int, backend: str) -> Optional[HostComparison]:
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
        f.fail(f"is {shown(max_abs_diff)}, but every photo's output is identical", "max_abs_diff")
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
                steps.fail(f"has the key {shown(key)}, not a step count")
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
                          top1_agreement=read_proportion(f, "top1_agreement", n), max_steps=max_steps,
                          steps=counts)


def read_candidate(f: Fields, n: int) -> SweepCandidate:
    run, reference = f.sub("run"), f.sub("reference")
    backbone, size = f.text("backbone"), f.integer("image_size", 8, 1 << 16)
    candidate = SweepCandidate(backbone=backbone, image_size=size, run=read_run(run),
                               reference_name=reference.text("name"),
                               reference_accuracy=read_proportion(reference, "accuracy", n))
    if candidate.run.name != f"{backbone}-{size}":
        run.fail(f"is {shown(candidate.run.name)}, not <backbone>-<image size>", "name")
    return candidate


def _failure(f: Fields) -> tuple[str, str]:
    return f.text("image"), f.text("error")

def read_run(run: Fields) -> RunRecord:
    return RunRecord(name=run.text("name"), run_id=run.text("run_id", nullable=True),
                     model_sha256=run.sha256("model_sha256"))

# --- the row -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelRow:
    """One model on one backend, measured on the host (bench.json) or a device (its result)."""

    name: str
    #: The interpreter backend; None for the Keras model (host only).
    backend: Optional[str]
    #: The model file: its path on the host, its member name (models/<file>.tflite) in a bundle.
    file: str
    size_bytes: int
    #: SHA-256 of the file measured (None: a version 1 device result, or a host row before it).
    sha256: Optional[str]
    accuracy: Proportion
    #: The reference's accuracy minus this model's, in points, paired (None: the reference).
    drop: Optional[PairedDifference]
    #: Top-1 agreement with the reference (None: the reference itself).
    agreement: Optional[Proportion]
    #: A device's outputs against the host's for the same file (None on the host).
    host: Optional[HostComparison]
    #: {threads: latency}, in the settings' thread order ({} for an untimed Keras model).
    latency: dict[int, Latency]
    cold_start: Optional[ColdStart]
    #: (photo, error) of photos the model failed on (a device keeps the first MAX_FAILURES).
    failures: tuple[tuple[str, str], ...] = ()
    #: Rows: true classes, columns: predicted (failed photos left out); None on a device.
    confusion: Optional[tuple[tuple[int, ...], ...]] = None
    #: The sweep candidate, in a sweep's device result; None otherwise.
    candidate: Optional[SweepCandidate] = None

    @property
    def first_p50(self) -> Optional[float]:
        first = next(iter(self.latency.values()), None)
        return first.p50 if first else None

    def to_json(self) -> dict:
        return {"name": self.name, "backend": self.backend, "file": self.file, "size_bytes": self.size_bytes,
                "sha256": self.sha256, "accuracy": self.accuracy.to_json(),
                "drop": self.drop and self.drop.to_json(),
                "agreement": self.agreement and self.agreement.to_json(),
                "host": self.host and self.host.to_json(),
                "latency": {str(t): _latency_json(lat) for t, lat in self.latency.items()},
                "cold_start": self.cold_start and self.cold_start.to_json(),
                "failures": [{"image": image, "error": error} for image, error in self.failures],
                "confusion": None if self.confusion is None else [list(row) for row in self.confusion],
                "candidate": self.candidate and self.candidate.to_json()}


def failures_of(pairs, most: Optional[int] = None) -> tuple[tuple[str, str], ...]:
    """(photo, error) pairs for a row: the first `most` (None: all), each error cut to
    MAX_ERROR_CHARS so that the file stays small and readable."""
    pairs = list(pairs)[:most] if most is not None else list(pairs)
    return tuple((str(image), str(error)[:MAX_ERROR_CHARS]) for image, error in pairs)


def cold_start_of(cost) -> Optional[ColdStart]:
    """A measured cold start (tlx.bench.measure.ProcessCost) as a row holds it: a `tlx predict`
    that printed nothing has no start-up time (NaN), so none was measured."""
    if cost is None or not (math.isfinite(cost.first_output_s) and math.isfinite(cost.peak_rss_mb)):
        return None
    return ColdStart(cost.first_output_s, cost.peak_rss_mb)


#: Rows written before the one row type, by who wrote them: fields renamed (old, new), and
#: fields they lack with the value that means "not recorded".
OLD_NAMES = {"host": (("path", "file"),), "device": (("agreement_reference", "agreement"),)}
OLD_MISSING = {"host": {"sha256": None, "host": None, "candidate": None},
               "device": {"confusion": None, "candidate": None}}


def renamed(row: Any, side: str) -> Any:
    """A row of an older file ("host": bench.json before format 2, "device": a device result
    before format 3) with its fields under today's names; anything not a JSON object is left
    for the reader to refuse."""
    if not isinstance(row, dict):
        return row
    row = {**OLD_MISSING[side], **row}
    for old, new in OLD_NAMES[side]:
        if old in row and new not in row:
            row[new] = row.pop(old)
    if side == "host":
        row.pop("drop_points", None)  # the drop's points, kept for readers older than "drop"
        if isinstance(row.get("failures"), list):
            row["failures"] = [{"image": f.get("path"), "error": f.get("error")} if isinstance(f, dict) else f
                               for f in row["failures"]]
        cold = row.get("cold_start")
        # A cold start that printed nothing was written as NaN; a row holds none then.
        if isinstance(cold, dict) and any(isinstance(v, float) and math.isnan(v) for v in cold.values()):
            row["cold_start"] = None
    return row


@dataclass(frozen=True)
class RowContext:
    """What a row is checked against: the file's photo count, labels and settings."""

    n: int
    n_labels: int
    threads: tuple[int, ...]
    runs: int
    #: The reference's accuracy, which the drop must agree with (None: this row is the reference).
    reference: Optional[Proportion]
    #: Failed photos a row may list.
    max_failures: int
    #: The row may have no latency (the host's Keras model) and no backend.
    may_be_untimed: bool = False
    #: A sweep's device result: the row names its candidate, whose reference its drop is against.
    sweep: bool = False
    #: The file was written before rows had a SHA-256 (device result format 1).
    sha256_optional: bool = False


def read_row(f: Fields, ctx: RowContext) -> ModelRow:
    """One row of a bench.json or device result, checked against `ctx` (ResultError otherwise)."""
    n, reference = ctx.n, ctx.reference
    candidate = read_candidate(f.sub("candidate"), n) if ctx.sweep else None
    if not ctx.sweep and f.get("candidate", nullable=True) is not None:
        f.fail("names a sweep candidate, but the file is not a sweep's", "candidate")
    if candidate is not None:
        reference = candidate.reference_accuracy
    accuracy = read_proportion(f, "accuracy", n)
    is_reference = reference is None
    drop = f.get("drop", nullable=is_reference)
    if is_reference and (drop is not None or f.get("agreement", nullable=True) is not None):
        f.fail("is the reference, but has a drop or an agreement against itself", "drop")
    latency = f.sub("latency")
    keys = [str(t) for t in ctx.threads]
    if list(latency.obj) != keys and not (ctx.may_be_untimed and not latency.obj):
        latency.fail(f"has the thread counts {shown(list(latency.obj)[:8])}, not settings.threads {keys}")
    backend = f.text("backend", nullable=ctx.may_be_untimed)
    cold = f.sub("cold_start", nullable=True)
    failures = f.items("failures", min(n, ctx.max_failures))
    return ModelRow(
        name=f.text("name"), backend=backend, file=f.text("file"), size_bytes=f.integer("size_bytes", 1, 1 << 40),
        sha256=f.sha256("sha256", nullable=ctx.sha256_optional, missing=None if ctx.sha256_optional else ...),
        accuracy=accuracy, drop=None if is_reference else read_drop(f, n, reference, accuracy),
        agreement=None if is_reference else read_proportion(f, "agreement", n),
        host=read_host(f.sub("host", nullable=True), n, backend),
        latency={t: read_latency(latency, str(t), ctx.runs) for t in ctx.threads if str(t) in latency.obj},
        cold_start=None if cold is None else ColdStart(cold.number("first_output_s", 0, MAX_SECONDS),
                                                       cold.number("peak_rss_mb", 0, MAX_MB)),
        failures=tuple(_failure(Fields(v, f"{f.where}.failures[{i}]", f.source, f.advice, f.what))
                       for i, v in enumerate(failures)),
        confusion=_confusion(f, ctx.n_labels, n, accuracy), candidate=candidate)


def _confusion(f: Fields, n_labels: int, n: int, accuracy: Proportion) -> Optional[tuple[tuple[int, ...], ...]]:
    """A labels x labels matrix of photo counts whose diagonal is the accuracy's successes."""
    rows = f.items("confusion", n_labels, nullable=True)
    if rows is None:
        return None
    matrix = []
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != n_labels:
            f.fail(f"row {i} is not {n_labels} counts (one per label)", "confusion")
        matrix.append(tuple(f.check_integer(v, f"confusion[{i}][{j}]", 0, n) for j, v in enumerate(row)))
    if len(matrix) != n_labels:
        f.fail(f"has {len(matrix)} rows, not {n_labels} (one per label)", "confusion")
    if sum(map(sum, matrix)) > n or sum(matrix[i][i] for i in range(n_labels)) != accuracy.successes:
        f.fail(f"does not hold {accuracy.successes} correct of at most {n} photos", "confusion")
    return tuple(matrix)


# --- the rows of a bench.json --------------------------------------------------------------

#: What a bench.json says it is.
BENCH_KIND = "tlx-bench"
#: 2: kind and format_version; each model row is a ModelRow (as in a device result: "file",
#: not "path"; failures {image, error}; sha256, host, candidate; no "drop_points");
#: settings.max_drop_on. A bench.json without format_version is format 1.
BENCH_VERSION = 2
_BENCH_AGAIN = "Measure the run again with `tlx bench RUN_DIR`."


#: Read at most this much of a bench.json: its confusion matrices grow with the square of the
#: labels (1000 labels, 4 models: about 40 MB as tlx writes it, indented).
MAX_BENCH_BYTES = 64 << 20
#: Objects and lists, and values, a bench.json may hold (counted before parsing: within the
#: byte cap, a file of nothing but "[]," would be 21 million Python lists, over 1 GB). A
#: genuine one has a few hundred objects plus one list per label per row, and its values are
#: mostly the confusion matrices' (1000 labels, 4 models: 4 million).
MAX_BENCH_CONTAINERS = 300_000
MAX_BENCH_VALUES = 5_000_000


def read_bench(path) -> tuple[dict, tuple[ModelRow, ...]]:
    """A bench.json read below MAX_BENCH_BYTES and parsed, and its rows through
    read_bench_rows; ResultError (a TlxError naming the file and what to do) otherwise."""
    from tlx import files

    try:
        # NaN is read (an older bench.json wrote a cold start that printed nothing so); the
        # row schema refuses it anywhere else.
        doc = files.read_json_bounded(path, MAX_BENCH_BYTES, (MAX_BENCH_CONTAINERS, MAX_BENCH_VALUES))
    except files.JsonFileError as exc:
        raise ResultError({
            "missing": f"{path}: cannot read it ({exc.detail}). {_BENCH_AGAIN}",
            "unreadable": f"{path}: cannot read it ({exc.detail}). {_BENCH_AGAIN}",
            "too_large": f"{path} is larger than {MAX_BENCH_BYTES >> 20} MB: no bench.json is. {_BENCH_AGAIN}",
            "too_dense": f"{path} holds {exc.detail}; a bench.json has at most {MAX_BENCH_CONTAINERS} and "
                         f"{MAX_BENCH_VALUES}. {_BENCH_AGAIN}",
            "not_json": f"{path} is not a bench.json: not JSON ({printable(exc.detail)[:200]}). {_BENCH_AGAIN}",
        }[exc.kind]) from None
    return doc, read_bench_rows(doc, str(path))


def read_bench_rows(doc: Any, source: str) -> tuple[ModelRow, ...]:
    """The model rows of a parsed bench.json (format 2, or 1 read under today's names), each
    checked against the file's photo count, labels, settings and reference; ResultError
    (naming `source` and what to do) otherwise."""
    import tlx

    top = Fields(doc, "", source, _BENCH_AGAIN, what="bench.json")
    version = top.get("format_version", missing=1)
    if isinstance(version, int) and not isinstance(version, bool) and version > BENCH_VERSION:
        raise ResultError(f"{source} was written by a newer tlx (bench.json format {version}; this tlx "
                          f"{tlx.__version__} reads {BENCH_VERSION} and older). Upgrade tlx "
                          f"(pip install -U tlx-edge) or {_BENCH_AGAIN[0].lower()}{_BENCH_AGAIN[1:]}")
    version = top.check_integer(version, "format_version", 1, BENCH_VERSION)
    if version >= 2 and top.text("kind") != BENCH_KIND:
        top.fail(f"is not {BENCH_KIND!r}", "kind")
    _check_environment(top)
    n, labels = top.integer("n_test", 1, MAX_IMAGES), top.texts("labels", MAX_LABELS)
    settings = top.sub("settings")
    threads = tuple(settings.check_integer(v, f"threads[{i}]", 1, 1024)
                    for i, v in enumerate(settings.items("threads", MAX_THREADS)))
    runs, reference_name = settings.integer("runs", 1, 10**7), top.text("reference")
    entries = [row if version >= 2 else renamed(row, "host") for row in top.items("models", MAX_ROWS)]
    names = [e.get("name") if isinstance(e, dict) else None for e in entries]
    if reference_name not in names:
        top.fail(f"{shown(reference_name)} names no row of models", "reference")
    if len(set(map(str, names))) != len(names):
        top.fail("name a model twice", "models")
    first = names.index(reference_name)
    context = RowContext(n=n, n_labels=len(labels), threads=threads, runs=runs, reference=None,
                         max_failures=n, may_be_untimed=True, sha256_optional=version < 2)
    reference = read_row(Fields(entries[first], f"models[{first}]", source, _BENCH_AGAIN, "bench.json"), context)
    context = replace(context, reference=reference.accuracy)
    return tuple(reference if i == first else
                 read_row(Fields(e, f"models[{i}]", source, _BENCH_AGAIN, "bench.json"), context)
                 for i, e in enumerate(entries))


def _check_environment(top: Fields) -> None:
    """The text of the machine record that reports show beside the rows (tlx report, the
    host row of `tlx report --device`): text where text is shown, or the file is refused."""
    top.text("date")
    env = top.sub("environment")
    for key in ("date", "cpu", "python"):
        env.text(key)
    env.text("architecture", nullable=True, missing=None)
    # Records written before tlx.machine have neither; a newer one has both.
    if env.get("cpu_features", nullable=True, missing=None) is not None:
        env.texts("cpu_features", MAX_FEATURES)
        env.text("int8_expectation")
