"""When int8 costs too much: find the layers int8 hurts and keep them in float.

`repair_int8` measures the full-int8 model on validation images. If it loses more than
`max_drop_points` percentage points against the float reference, it runs TensorFlow's
QuantizationDebugger on calibration images, ranks the quantized tensors by how much
information int8 destroys in them, and re-quantizes with the worst ones kept in float
(`denylisted_nodes`), one more layer per step, until the validation drop is within the
limit or `max_steps` is reached. Every step's validation accuracy, size, latency and number
of float ops is recorded; the decision is made on validation data only, and test data (if
given) is reported for the float reference, plain int8 and the chosen model.

How a tensor is ranked and grouped: tlx.export.sensitivity. The quantizer and the debugger:
tlx.export.requantize. The CSV, chart and step table: tlx.export.fallback_report.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tlx.drop import check_max_drop
from tlx.errors import TlxError
from tlx.export import requantize
from tlx.export.calibration import cover_full_range
from tlx.export.formats import OutputType
from tlx.export.sensitivity import METRICS, Graph, LayerError, groups, rank_layers
from tlx.progress import Log


class FallbackMode(str, enum.Enum):
    """`tlx export --fallback`: what to do when int8 loses more than --max-drop."""

    #: Keep the plain int8 model (the --max-drop gate only reports).
    NONE = "none"
    #: Keep the layers int8 hurts most in float until the validation drop is within --max-drop.
    AUTO = "auto"


@dataclass(frozen=True)
class FallbackStep:
    """One candidate model: plain int8 (step 0) or int8 with the top `step` layers in float."""

    step: int
    #: Readable names of the sensitive layers kept in float so far (rank order).
    float_layers: tuple[str, ...]
    #: Every denylisted tensor (the sensitive ones and their readers).
    float_nodes: tuple[str, ...]
    #: Ops computing in float32 in the file (QUANTIZE/DEQUANTIZE not counted).
    float_ops: int
    #: Accuracy on the validation images (0..1).
    val_accuracy: float
    #: Reference accuracy minus val_accuracy, in percentage points (positive = lost).
    val_drop_points: float
    size_bytes: int
    #: Median single-image latency through tlx.runtime (1 thread), in milliseconds.
    latency_ms: float
    #: val_drop_points <= max_drop_points.
    within_limit: bool

    def to_json(self) -> dict:
        out = asdict(self)
        out["float_layers"] = list(self.float_layers)
        out["float_nodes"] = list(self.float_nodes)
        return out


@dataclass
class FallbackResult:
    """What `repair_int8` did. `model` is the chosen .tflite (without metadata)."""

    max_drop_points: float
    metric: str
    #: Float reference accuracy on the validation images (0..1).
    reference_accuracy: float
    layers: list[LayerError]
    steps: list[FallbackStep]
    #: Index into `steps` of the chosen model.
    chosen: int
    model: bytes = field(repr=False)
    #: True when the chosen model is within max_drop_points on validation data.
    passed: bool
    #: Test-split report: float / plain int8 / chosen accuracy (None without test data).
    test: dict | None = None
    #: Files written: {"csv": path, "png": path}.
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def chosen_step(self) -> FallbackStep:
        return self.steps[self.chosen]

    def to_json(self) -> dict:
        """The export.json entry (no model bytes)."""
        chosen = self.chosen_step
        return {
            "max_drop_points": self.max_drop_points,
            "metric": self.metric,
            "decided_on": "validation",
            "reference_val_accuracy": self.reference_accuracy,
            "passed": self.passed,
            "chosen_step": chosen.step,
            "float_layers": list(chosen.float_layers),
            "float_nodes": list(chosen.float_nodes),
            "steps": [s.to_json() for s in self.steps],
            "layers": [asdict(layer) for layer in self.layers],
            "test": self.test,
            "files": {k: Path(v).name for k, v in self.files.items()},
        }


def repair_int8(
    saved_model_dir: str | Path,
    calibration: np.ndarray,
    val_pixels: np.ndarray,
    val_labels: Sequence[int],
    *,
    max_drop_points: float,
    reference_accuracy: float | None = None,
    max_steps: int = 10,
    output_type: OutputType | str = OutputType.UINT8,
    metric: str = "channel_error",
    debug_samples: int = 64,
    test_pixels: np.ndarray | None = None,
    test_labels: Sequence[int] | None = None,
    latency_runs: int = 20,
    log: Log | None = None,
) -> FallbackResult:
    """Full-int8 with float fallback for the layers int8 hurts most (see the module doc).

    `saved_model_dir`: the inference model exported as a SavedModel (raw 0..255 float32
    pixels in, as tlx.export.convert.saved_model makes it).
    `calibration`: uint8 pixels (n, h, w, 3) from the training split; the first
    `debug_samples` of them also feed the debugger.
    `val_pixels`, `val_labels`: uint8 pixels and label indices the decision is made on.
    `reference_accuracy`: the float model's validation accuracy (0..1); None measures the
    float32 .tflite of `saved_model_dir` on the validation images.
    `test_pixels`, `test_labels`: optional, only reported (never used to decide).
    The per-layer CSV and chart: tlx.export.fallback_report.write_reports(result, folder).
    """
    say = log or (lambda message: None)
    calibration, val_pixels, val_labels = _checked_inputs(
        calibration, val_pixels, val_labels, metric, max_drop_points, max_steps)
    output_type = OutputType(getattr(output_type, "value", output_type))

    if reference_accuracy is None:
        say("Measuring the float32 reference on the validation images")
        float_model = _convert_float(saved_model_dir)
        reference_accuracy = _evaluate(float_model, val_pixels, val_labels, runs=0)[0]
    else:
        float_model = None

    say("Calibrating")
    samples = calibration[:max(1, debug_samples)]
    calibrating = requantize.calibrating_debugger(saved_model_dir, calibration, samples)
    search = _Search(calibrating.calibrated_model, val_pixels, val_labels, output_type,
                     reference_accuracy, max_drop_points, latency_runs, say)
    layers = search.run(calibrating, samples, metric, max_steps)
    chosen, passed = search.choice()
    result = FallbackResult(
        max_drop_points=float(max_drop_points), metric=metric,
        reference_accuracy=float(reference_accuracy), layers=layers, steps=search.steps,
        chosen=chosen, model=search.models[chosen], passed=passed)
    if test_pixels is not None and test_labels is not None and len(test_labels):
        result.test = _test_record(float_model or _convert_float(saved_model_dir),
                                   search.models[0], search.models[chosen],
                                   _pixels(test_pixels, "test"), np.asarray(test_labels, dtype=np.int64))
    return result


def _checked_inputs(calibration, val_pixels, val_labels, metric: str, max_drop_points: float,
                    max_steps: int):
    """The options and arrays, checked before anything is converted."""
    if metric not in METRICS:
        raise TlxError(f"Unknown fallback metric {metric!r}. Choose from: {', '.join(METRICS)}.")
    check_max_drop(max_drop_points)
    if max_steps < 1:
        raise TlxError(f"The fallback needs at least 1 step (got {max_steps}).")
    calibration = _pixels(calibration, "calibration")
    val_pixels = _pixels(val_pixels, "validation")
    val_labels = np.asarray(val_labels, dtype=np.int64)
    if len(val_labels) != len(val_pixels):
        raise TlxError(f"{len(val_pixels)} validation images but {len(val_labels)} labels.")
    if len(val_labels) == 0:
        raise TlxError("The int8 fallback decides on validation images, and the run has none. "
                       "Train with a validation split, or export without --fallback auto.")
    return cover_full_range(calibration), val_pixels, val_labels


class _Search:
    """The steps of the fallback: each keeps one more sensitive layer in float and is
    measured on the validation images, until one is within the limit or steps run out."""

    def __init__(self, calibrated: bytes, val_pixels, val_labels, output_type: OutputType,
                 reference_accuracy: float, max_drop_points: float, latency_runs: int, say: Log):
        self.calibrated = calibrated
        self.val_pixels, self.val_labels = val_pixels, val_labels
        self.output_type = output_type
        self.reference_accuracy = reference_accuracy
        self.max_drop_points = max_drop_points
        self.latency_runs = latency_runs
        self.say = say
        self.steps: list[FallbackStep] = []
        self.models: list[bytes] = []

    def run(self, calibrating, samples, metric: str, max_steps: int) -> list:
        """Try plain int8, then more layers in float; returns the ranked layers (empty when
        plain int8 was within the limit: the debugger never ran)."""
        graph = Graph(self.calibrated)
        layers: list = []
        current = self._try([], [])
        if not current.within_limit:
            # Only now the expensive part: the debugger runs float and int8 layer by layer.
            self.say("Running the quantization debugger")
            debugger, channel_errors = requantize.debug(calibrating, samples)
            layers = rank_layers(debugger, graph, metric, channel_errors)
        sensitive: list[str] = []
        nodes: list[str] = []
        for layer, group in groups(layers, graph):
            if current.within_limit or len(self.steps) - 1 >= max_steps:
                break
            sensitive.append(layer.layer)
            nodes.extend(n for n in group if n not in nodes)
            current = self._try(sensitive, nodes)
        return layers

    def _try(self, sensitive: list[str], nodes: list[str]) -> FallbackStep:
        from tlx.inspect import inspect_bytes

        step = len(self.steps)
        model = requantize.quantize(self.calibrated, nodes, self.output_type)
        accuracy, latency = _evaluate(model, self.val_pixels, self.val_labels, runs=self.latency_runs)
        drop = 100.0 * (self.reference_accuracy - accuracy)
        result = FallbackStep(
            step=step, float_layers=tuple(sensitive), float_nodes=tuple(nodes),
            float_ops=inspect_bytes(model).float_ops, val_accuracy=accuracy,
            val_drop_points=drop, size_bytes=len(model), latency_ms=latency,
            within_limit=drop <= self.max_drop_points + 1e-9)
        self.say(f"step {step}: {len(sensitive)} layer(s) in float, validation accuracy "
                 f"{accuracy:.1%} (drop {drop:+.1f} points), {len(model)} bytes, {latency:.2f} ms")
        self.steps.append(result)
        self.models.append(model)
        return result

    def choice(self) -> tuple[int, bool]:
        """The first step within the limit; when none is, the most accurate (the fewest float
        ops on ties). And whether the limit was met."""
        within = [i for i, s in enumerate(self.steps) if s.within_limit]
        if within:
            return within[0], True
        steps = self.steps
        return max(range(len(steps)), key=lambda i: (steps[i].val_accuracy, -steps[i].float_ops)), False


def _test_record(float_model: bytes, int8_model: bytes, chosen_model: bytes, pixels, labels) -> dict:
    """Test-split accuracies, only reported: the decision never sees the test split."""
    test = {"images": int(len(labels))}
    for key, model in (("float32", float_model), ("int8", int8_model), ("chosen", chosen_model)):
        test[f"{key}_accuracy"] = _evaluate(model, pixels, labels, runs=0)[0]
    for key in ("int8", "chosen"):
        test[f"{key}_drop_points"] = 100.0 * (test["float32_accuracy"] - test[f"{key}_accuracy"])
    return test


def _pixels(pixels, what: str) -> np.ndarray:
    pixels = np.asarray(pixels)
    if pixels.ndim != 4 or pixels.shape[-1] != 3 or pixels.dtype != np.uint8:
        raise TlxError(f"The {what} images must be uint8 pixels of shape (n, height, width, 3); "
                       f"got {pixels.dtype} {pixels.shape}.")
    return pixels


def _convert_float(saved_model_dir) -> bytes:
    from tlx.export.convert import convert
    from tlx.export.formats import get_format

    return convert(saved_model_dir, get_format("float32"))


def _evaluate(model: bytes, pixels: np.ndarray, labels: np.ndarray, runs: int) -> tuple[float, float]:
    """(accuracy, median latency in ms over `runs` after 2 warm-up calls) through
    tlx.runtime.Classifier on 1 thread, as a device runs it."""
    from tlx.runtime import Classifier
    from tlx.runtime.batch import require_raw_pixel_input, run_over_pixels, time_runs

    with Classifier(model, num_threads=1, source="<fallback candidate>") as classifier:
        require_raw_pixel_input(classifier, "the int8 model")
        predictions = np.argmax(run_over_pixels(classifier, pixels), axis=1)
        accuracy = float(np.mean(predictions == labels)) if len(labels) else 0.0
        latency = float(np.median(time_runs(classifier, pixels[0], runs, warmup=2)) * 1000) if runs else 0.0
        return accuracy, latency
