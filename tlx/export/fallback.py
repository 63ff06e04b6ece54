"""When int8 costs too much: find the layers int8 hurts and keep them in float.

`repair_int8` measures the full-int8 model on validation images. If it loses more than
`max_drop_points` percentage points against the float reference, it runs TensorFlow's
QuantizationDebugger on calibration images, ranks the quantized tensors by how much
information int8 destroys in them, and re-quantizes with the worst ones kept in float
(`denylisted_nodes`), one more layer per step, until the validation drop is within the
limit or `max_steps` is reached. Every step's validation accuracy, size, latency and number
of float ops is recorded; the decision is made on validation data only, and test data (if
given) is reported for the float reference, plain int8 and the chosen model.

Why the ranking metric is not RMSE / scale alone: rmse/scale (the metric of TensorFlow's
debugger tutorial) flags ops whose rounding goes wrong, but the common int8 collapse is a
tensor whose per-tensor range is set by a few outlier channels, so the step is larger than
the values of the channels that carry the signal: they round to zero with an error far
*below* one step, and rmse/scale calls the tensor fine. `channel_error` measures what is
lost per channel instead: the mean, over the tensor's channels (last axis), of
||dequantized - float|| / ||float||. 0 is exact; 1 means the channel is gone. Both metrics
go into the CSV.

Why a layer's consumers are kept in float with it: keeping an op in float only makes its
output tensor float. A quantized op that reads it quantizes it again with the same
calibrated range and loses the same channels. So a step keeps the sensitive tensor's
producer *and* its readers in float; the readers' outputs get their own (sane) ranges.

The re-quantization calls the quantizer behind the debugger's `get_nondebug_quantized_model`
(tensorflow.lite.python.convert.mlir_quantize) with the debugger's calibrated model, asking
for uint8 (or int8/float32) input and output types as the exporter's int8 format has them:
the debugger's own method only gives float input and output. The input keeps scale 1.0 and
zero point 0 (raw pixels), which the calibration's 0..255 coverage guarantees.
"""

from __future__ import annotations

import contextlib
import csv
import enum
import io
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tlx.errors import TlxError
from tlx.files import atomic_path
from tlx.export.calibration import cover_full_range
from tlx.export.formats import OutputType

class FallbackMode(str, enum.Enum):
    """`tlx export --fallback`: what to do when int8 loses more than --max-drop."""

    #: Keep the plain int8 model (the --max-drop gate only reports).
    NONE = "none"
    #: Keep the layers int8 hurts most in float until the validation drop is within --max-drop.
    AUTO = "auto"


#: Per-layer table and chart written next to the model (when an out_dir is given).
LAYERS_CSV = "fallback_layers.csv"
LAYERS_PNG = "fallback_layers.png"

#: Ranking metrics: name -> LayerError attribute.
METRICS = ("channel_error", "rmse_over_scale")

#: Ops whose int8 output range is fixed by the kernel (softmax: scale 1/256), not by
#: calibration: keeping them in float cannot fix a range, and tiny probabilities rounding to
#: zero (channel_error near 1 in a healthy model) do not change the top-1 class. Not ranked.
FIXED_RANGE_OPS = frozenset({"SOFTMAX", "LOG_SOFTMAX", "LOGISTIC", "TANH", "QUANTIZE",
                             "DEQUANTIZE"})


@dataclass(frozen=True)
class LayerError:
    """One quantized tensor (an op's output) and how much int8 costs it on calibration data."""

    #: 1 = the most sensitive.
    rank: int
    #: A readable layer name derived from the tensor name (the Keras layer, suffixes dropped).
    layer: str
    #: The op that produces the tensor (CONV_2D, FULLY_CONNECTED, ...).
    op: str
    #: The tensor name in the converted model: the `denylisted_nodes` key.
    tensor: str
    #: Mean over channels of ||dequantized - float|| / ||float|| (0 exact, 1 channel lost).
    channel_error: float
    #: sqrt(mean squared error) / quantization scale (TensorFlow's tutorial metric).
    rmse_over_scale: float
    mean_squared_error: float
    max_abs_error: float
    scale: float
    zero_point: int


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
    out_dir: str | Path | None = None,
    latency_runs: int = 20,
    log: Callable[[str], None] | None = None,
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
    `out_dir`: where the per-layer CSV and PNG go (None: no files).
    """
    say = log or (lambda message: None)
    if metric not in METRICS:
        raise TlxError(f"Unknown fallback metric {metric!r}. Choose from: {', '.join(METRICS)}.")
    if max_drop_points < 0:
        raise TlxError(f"--max-drop must be 0 or more percentage points (got {max_drop_points}).")
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
    calibration = cover_full_range(calibration)
    output_type = OutputType(getattr(output_type, "value", output_type))

    if reference_accuracy is None:
        say("Measuring the float32 reference on the validation images")
        float_model = _convert_float(saved_model_dir)
        reference_accuracy = _evaluate(float_model, val_pixels, val_labels, runs=0)[0]
    else:
        float_model = None

    say("Calibrating")
    samples = calibration[:max(1, debug_samples)]
    calibrating = _calibrating_debugger(saved_model_dir, calibration, samples)
    calibrated = calibrating.calibrated_model
    graph = _Graph(calibrated)
    layers: list = []
    steps: list[FallbackStep] = []
    models: list[bytes] = []

    def try_step(step: int, sensitive: list[str], nodes: list[str]) -> FallbackStep:
        model = _quantize(calibrated, nodes, output_type)
        accuracy, latency = _evaluate(model, val_pixels, val_labels, runs=latency_runs)
        drop = 100.0 * (reference_accuracy - accuracy)
        from tlx.inspect import inspect_bytes

        result = FallbackStep(
            step=step, float_layers=tuple(sensitive), float_nodes=tuple(nodes),
            float_ops=inspect_bytes(model).float_ops, val_accuracy=accuracy,
            val_drop_points=drop, size_bytes=len(model), latency_ms=latency,
            within_limit=drop <= max_drop_points + 1e-9)
        say(f"step {step}: {len(sensitive)} layer(s) in float, validation accuracy "
            f"{accuracy:.1%} (drop {drop:+.1f} points), {len(model)} bytes, {latency:.2f} ms")
        steps.append(result)
        models.append(model)
        return result

    current = try_step(0, [], [])
    if not current.within_limit:
        # Only now the expensive part: the debugger runs float and int8 layer by layer.
        say("Running the quantization debugger")
        debugger, channel_errors = _debug(calibrating, samples)
        layers = _rank_layers(debugger, graph, metric, channel_errors)
    sensitive: list[str] = []
    nodes: list[str] = []
    for layer, group in _groups(layers, graph):
        if current.within_limit or len(steps) - 1 >= max_steps:
            break
        sensitive.append(layer.layer)
        nodes.extend(n for n in group if n not in nodes)
        current = try_step(len(steps), sensitive, nodes)

    within = [i for i, s in enumerate(steps) if s.within_limit]
    if within:
        chosen = within[0]
    else:
        # Nothing met the limit: keep the most accurate candidate (the fewest float ops on ties).
        chosen = max(range(len(steps)), key=lambda i: (steps[i].val_accuracy, -steps[i].float_ops))
    result = FallbackResult(
        max_drop_points=float(max_drop_points), metric=metric,
        reference_accuracy=float(reference_accuracy), layers=layers, steps=steps,
        chosen=chosen, model=models[chosen], passed=bool(within))

    if test_pixels is not None and test_labels is not None and len(test_labels):
        test_pixels = _pixels(test_pixels, "test")
        test_labels = np.asarray(test_labels, dtype=np.int64)
        if float_model is None:
            float_model = _convert_float(saved_model_dir)
        test = {"images": int(len(test_labels))}
        for key, model in (("float32", float_model), ("int8", models[0]), ("chosen", models[chosen])):
            test[f"{key}_accuracy"] = _evaluate(model, test_pixels, test_labels, runs=0)[0]
        for key in ("int8", "chosen"):
            test[f"{key}_drop_points"] = 100.0 * (test["float32_accuracy"] - test[f"{key}_accuracy"])
        result.test = test

    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        result.files["csv"] = write_layers_csv(result, out_dir / LAYERS_CSV)
        result.files["png"] = plot_layers(result, out_dir / LAYERS_PNG)
    return result


# ------------------------------------------------------------------------------ conversion

def _pixels(pixels, what: str) -> np.ndarray:
    pixels = np.asarray(pixels)
    if pixels.ndim != 4 or pixels.shape[-1] != 3 or pixels.dtype != np.uint8:
        raise TlxError(f"The {what} images must be uint8 pixels of shape (n, height, width, 3); "
                       f"got {pixels.dtype} {pixels.shape}.")
    return pixels


def _representative(pixels: np.ndarray):
    def generate():
        for image in pixels:
            # The graph input is float32 raw pixels: the data's dtype must match it.
            yield [image[np.newaxis].astype(np.float32)]
    return generate


@contextlib.contextmanager
def _quiet():
    # The converter prints its settings to stdout; keep `--json` output parseable.
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _convert_float(saved_model_dir) -> bytes:
    import tensorflow as tf

    with _quiet():
        return bytes(tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir)).convert())


def _calibrating_debugger(saved_model_dir, calibration: np.ndarray, samples: np.ndarray):
    """A QuantizationDebugger built from the converter: it calibrates and instruments the
    model (its calibrated_model is what every step re-quantizes)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative(calibration)
    # Float builtins next to the int8 ones: the layers we keep in float need them.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                           tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        with _quiet(), _no_interpreter_warning():
            return tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=_representative(samples))
    except Exception as exc:
        raise TlxError(f"Calibrating the int8 model failed: {_first_line(exc)}") from None


def _debug(calibrating, samples: np.ndarray):
    """Per-layer quantization errors: (debugger with layer_statistics, channel errors)."""
    import tensorflow as tf

    sums = _ChannelSums()
    try:
        with _quiet(), _no_interpreter_warning():
            # Built from a converter, the debugger runs the instrumented model without
            # experimental_preserve_all_tensors, so the float values its
            # layer_direct_compare_metrics receive are whatever reused the arena memory
            # (TF 2.21: errors of 0.7 on a tensor that rounds to within 0.2 %). A second
            # debugger built from the instrumented model itself preserves them.
            debugger = tf.lite.experimental.QuantizationDebugger(
                quant_debug_model_content=calibrating.quant_model,
                debug_dataset=_representative(samples),
                debug_options=tf.lite.experimental.QuantizationDebugOptions(
                    layer_direct_compare_metrics={"channel_error": sums}))
            debugger.run()
    except Exception as exc:
        raise TlxError(f"The TensorFlow quantization debugger failed: {_first_line(exc)}") from None
    return debugger, sums.per_tensor(len(debugger.layer_statistics or {}), len(samples))


@contextlib.contextmanager
def _no_interpreter_warning():
    # The debugger runs tf.lite.Interpreter, which warns that it is deprecated on every use.
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*tf\.lite\.Interpreter is deprecated")
        warnings.filterwarnings("ignore", message=r".*experimental_preserve_all_tensors")
        yield


def _quantize(calibrated: bytes, denylisted_nodes: list[str], output_type: OutputType) -> bytes:
    import tensorflow as tf

    try:
        from tensorflow.lite.python.convert import mlir_quantize
    except ImportError:  # pragma: no cover - a TensorFlow without the quantizer entry point
        raise TlxError("This TensorFlow has no tensorflow.lite.python.convert.mlir_quantize, "
                       "which the int8 fallback needs; use TensorFlow 2.16 to 2.21.") from None
    io_type = {OutputType.UINT8: tf.uint8, OutputType.INT8: tf.int8,
               OutputType.FLOAT32: tf.float32}
    try:
        with _quiet():
            return bytes(mlir_quantize(
                calibrated,
                input_data_type=tf.uint8,
                output_data_type=io_type[output_type],
                denylisted_nodes=list(denylisted_nodes) or None))
    except Exception as exc:
        raise TlxError(f"Re-quantizing with {len(denylisted_nodes)} float layer(s) failed: "
                       f"{_first_line(exc)}") from None


def _evaluate(model: bytes, pixels: np.ndarray, labels: np.ndarray, runs: int) -> tuple[float, float]:
    """(accuracy, median latency in ms) through tlx.runtime.Classifier, as a device runs it."""
    from tlx.runtime import Classifier

    classifier = Classifier(model, num_threads=1, source="<fallback candidate>")
    try:
        if classifier.input_quantization not in (None, (1.0, 0)):
            scale, zero_point = classifier.input_quantization
            raise TlxError(f"The int8 input is quantized with scale {scale}, zero point "
                           f"{zero_point}, not 1.0 and 0 (raw pixels). This is a tlx bug: "
                           "please report it.")
        predictions = np.array([int(np.argmax(classifier.run(image))) for image in pixels])
        accuracy = float(np.mean(predictions == labels)) if len(labels) else 0.0
        latency = 0.0
        if runs > 0:
            times = []
            for _ in range(runs + 2):
                start = time.perf_counter()
                classifier.run(pixels[0])
                times.append(time.perf_counter() - start)
            latency = float(np.median(times[2:]) * 1000.0)  # the first runs warm up caches
        return accuracy, latency
    finally:
        classifier.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:500]


# ------------------------------------------------------------------------------ ranking

def channel_error(float_values: np.ndarray, quantized: np.ndarray, scale: float,
                  zero_point: int) -> float:
    """Mean over channels (last axis) of ||dequantized - float|| / ||float|| for one tensor.

    A QuantizationDebugger `layer_direct_compare_metrics` function: it gets the float op's
    output and the quantized op's output (integers) for the same quantized input.
    All-zero channels (e.g. dead ReLUs) carry nothing and are left out.
    """
    err, norm = _channel_sums(float_values, quantized, scale, zero_point)
    return _ratio(err, norm)


def _channel_sums(float_values, quantized, scale, zero_point) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: (sum of squared errors, sum of squared float values)."""
    f = np.asarray(float_values, dtype=np.float64)
    q = (np.asarray(quantized).astype(np.float64) - float(zero_point)) * float(scale)
    channels = f.shape[-1] if f.ndim >= 2 else 1
    f = f.reshape(-1, channels)
    d = q.reshape(-1, channels) - f
    return np.sum(d * d, axis=0), np.sum(f * f, axis=0)


def _ratio(err: np.ndarray, norm: np.ndarray) -> float:
    live = norm > 0
    if not live.any():
        return 0.0
    return float(np.mean(np.sqrt(err[live] / norm[live])))


class _ChannelSums:
    """channel_error over the whole debug set rather than averaged per image.

    Per image, a pooled feature that is near zero for this image (the wrong class) rounds to
    zero and looks lost; over the set, its norm comes from the images where it is large, and
    only channels that are small *everywhere* (drowned by an outlier channel) stay lost.

    The debugger calls the metric per image and per instrumented tensor, in a fixed order
    (images outer, tensors inner, the order of its layer_statistics). The sums are matched to
    tensors by that order; if the call count does not fit it, `per_tensor` returns None and
    the debugger's per-image mean is used instead.
    """

    def __init__(self):
        self.calls: list[tuple[np.ndarray, np.ndarray, float]] = []

    def __call__(self, float_values, quantized, scale, zero_point) -> float:
        err, norm = _channel_sums(float_values, quantized, scale, zero_point)
        self.calls.append((err, norm, float(scale)))
        return _ratio(err, norm)

    def per_tensor(self, tensors: int, images: int) -> list[float] | None:
        if tensors == 0 or len(self.calls) != tensors * images:
            return None
        out = []
        for t in range(tensors):
            calls = self.calls[t::tensors]
            if len({(c[0].shape, c[2]) for c in calls}) != 1:
                return None  # not one tensor: the call order is not what we assumed
            out.append(_ratio(sum(c[0] for c in calls), sum(c[1] for c in calls)))
        return out


def layer_name(tensor: str) -> str:
    """A readable layer name from a converted tensor name: the deepest Keras layer scope
    (Keras 3 traces layer `name` under a `name_1` scope), e.g.
    'functional_1/efficientnet_lite0_1/block1a_project_bn_1/batchnorm/add_1;...'
    -> 'block1a_project_bn'."""
    first = tensor.split(";")[0]
    parts = [p for p in first.split("/") if p]
    if len(parts) < 3:
        return parts[-1] if parts else tensor
    scopes = [p for p in parts[1:-1] if re.search(r"_\d+$", p)]
    name = scopes[-1] if scopes else parts[-2]
    return re.sub(r"_\d+$", "", name)


def _rank_layers(debugger, graph: "_Graph", metric: str,
                 channel_errors: list[float] | None) -> list[LayerError]:
    buffer = io.StringIO()
    with _no_interpreter_warning():
        debugger.layer_statistics_dump(buffer)
    rows = list(csv.DictReader(io.StringIO(buffer.getvalue())))
    if channel_errors is not None and len(channel_errors) == len(rows):
        # The dump walks layer_statistics in the order the metric saw the tensors.
        for row, value in zip(rows, channel_errors):
            row["channel_error"] = value
    found = []
    for row in rows:
        tensor = graph.resolve(row["tensor_name"])
        if tensor is None or row["op_name"] in FIXED_RANGE_OPS:
            continue  # a debugger-only tensor; cannot be denylisted by name
        scale = float(row["scale"])
        mse = float(row["mean_squared_error"])
        found.append(dict(
            layer=layer_name(tensor), op=row["op_name"], tensor=tensor,
            channel_error=_finite(row.get("channel_error")),
            rmse_over_scale=_finite(np.sqrt(mse) / scale if scale > 0 else 0.0),
            mean_squared_error=_finite(mse), max_abs_error=_finite(row["max_abs_error"]),
            scale=scale, zero_point=int(float(row["zero_point"]))))
    found.sort(key=lambda r: (-r[metric], -r["rmse_over_scale" if metric == "channel_error"
                                            else "channel_error"], r["tensor"]))
    return [LayerError(rank=i + 1, **r) for i, r in enumerate(found)]


def _finite(value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 0.0
    return value if np.isfinite(value) else 0.0


def _groups(layers: list[LayerError], graph: "_Graph"):
    """(layer, [its tensor and its readers' outputs]) in rank order; layers whose whole group
    is already covered by earlier ones are skipped (they would add nothing)."""
    covered: set[str] = set()
    for layer in layers:
        group = [layer.tensor] + graph.reader_outputs(layer.tensor)
        if set(group) <= covered:
            continue
        covered.update(group)
        yield layer, group


class _Graph:
    """Tensor names and which ops read them, from the calibrated (float) model."""

    def __init__(self, model: bytes):
        from tensorflow.lite.python import schema_py_generated as schema

        model_t = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytes(model), 0))
        graph = model_t.subgraphs[0]
        self.names = [_text(t.name) for t in graph.tensors]
        self._readers: dict[int, list[list[int]]] = {}
        for op in graph.operators:
            outputs = [int(i) for i in (op.outputs if op.outputs is not None else []) if i >= 0]
            for i in (op.inputs if op.inputs is not None else []):
                if i >= 0:
                    self._readers.setdefault(int(i), []).append(outputs)
        self._index = {name: i for i, name in enumerate(self.names)}

    def resolve(self, debugger_name: str) -> str | None:
        """The model's tensor name for a name from the debugger's dump (which strips one
        trailing digit when the name ends in one)."""
        if debugger_name in self._index:
            return debugger_name
        for digit in "0123456789":
            if debugger_name + digit in self._index:
                return debugger_name + digit
        return None

    def reader_outputs(self, name: str) -> list[str]:
        index = self._index.get(name)
        out: list[str] = []
        for outputs in self._readers.get(index, []):
            out.extend(self.names[i] for i in outputs if self.names[i] not in out)
        return out


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value or "")


# ------------------------------------------------------------------------------ reports

def write_layers_csv(result: FallbackResult, path: str | Path) -> Path:
    """One row per quantized layer: rank, metrics, whether it is float in the chosen model
    (as a sensitive layer or as a reader of one) and the step it was picked at (if any)."""
    path = Path(path)
    added: dict[str, int] = {}
    for step in result.steps:
        for name in step.float_layers:
            added.setdefault(name, step.step)
    chosen = set(result.chosen_step.float_nodes)
    columns = ["rank", "layer", "op", "channel_error", "rmse_over_scale", "mean_squared_error",
               "max_abs_error", "scale", "zero_point", "float_in_chosen", "added_at_step", "tensor"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for layer in result.layers:
            row = asdict(layer)
            row["float_in_chosen"] = layer.tensor in chosen
            row["added_at_step"] = added.get(layer.layer, "")
            writer.writerow({k: row[k] for k in columns})
    return path


def plot_layers(result: FallbackResult, path: str | Path, top: int = 30) -> Path:
    """Left: the `top` most sensitive layers by the ranking metric (float ones highlighted).
    Right: validation accuracy and file size per step, with the limit."""
    from tlx.charts import pyplot, save_png

    plt = pyplot()
    path = Path(path)
    chosen = set(result.chosen_step.float_layers)
    shown = result.layers[:top]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, max(4.0, 0.28 * len(shown) + 1.5)))
    values = [getattr(layer, result.metric) for layer in shown]
    nodes = set(result.chosen_step.float_nodes)
    colours = ["tab:orange" if layer.layer in chosen else
               "navajowhite" if layer.tensor in nodes else "tab:blue" for layer in shown]
    positions = np.arange(len(shown))
    left.barh(positions, values, color=colours)
    left.set_yticks(positions, [f"{layer.layer} ({layer.op})" for layer in shown], fontsize=8)
    left.invert_yaxis()
    left.set_xlabel(result.metric.replace("_", " "))
    left.set_title("int8 error per layer (orange: kept in float; light: read it, also float)")

    steps = [s.step for s in result.steps]
    accuracy = [100 * s.val_accuracy for s in result.steps]
    right.plot(steps, accuracy, "o-", color="tab:blue", label="int8 validation accuracy")
    right.axhline(100 * result.reference_accuracy, color="tab:green", linestyle="--",
                  label="float reference")
    right.axhline(100 * result.reference_accuracy - result.max_drop_points, color="tab:red",
                  linestyle=":", label=f"limit (-{result.max_drop_points:g} points)")
    right.set_xlabel("layers kept in float")
    right.set_ylabel("validation accuracy (%)")
    right.set_xticks(steps)
    size_axis = right.twinx()
    size_axis.plot(steps, [s.size_bytes / 1024 for s in result.steps], "s--", color="tab:gray",
                   label="size (KB)")
    size_axis.set_ylabel("size (KB)")
    lines = right.get_legend_handles_labels()
    more = size_axis.get_legend_handles_labels()
    right.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="lower right")
    right.set_title(f"chosen: step {result.chosen_step.step}"
                    + ("" if result.passed else " (limit not met)"))
    fig.tight_layout()
    save_png(fig, path, dpi=100, tight=False)
    plt.close(fig)
    return path


def format_steps(result: FallbackResult) -> str:
    """A small table of the steps, for the CLI."""
    lines = [f"{'step':>4}  {'float layers':<40}  {'val acc':>7}  {'drop':>6}  {'size':>9}  "
             f"{'latency':>8}"]
    for s in result.steps:
        names = ", ".join(s.float_layers) or "(none: plain int8)"
        if len(names) > 40:
            names = names[:37] + "..."
        mark = " <" if s.step == result.chosen_step.step else ""
        lines.append(f"{s.step:>4}  {names:<40}  {100 * s.val_accuracy:>6.1f}%  "
                     f"{s.val_drop_points:>+6.1f}  {s.size_bytes:>9}  {s.latency_ms:>6.2f}ms{mark}")
    return "\n".join(lines)
