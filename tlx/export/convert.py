"""Keras inference model -> .tflite bytes, one call per format of the format table.

The route is DESIGN's working one: model.export(dir, format="tf_saved_model") then
tf.lite.TFLiteConverter.from_saved_model(dir). Not from_concrete_functions: it produced
a graph of VAR_HANDLE ops that outputs NaN, silently. Not from_keras_model: it works but
prints a few hundred "Captures:" lines.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path

import numpy as np

from tlx.errors import TlxError, first_line
from tlx.export.formats import FormatSpec, OutputType, Quantization


#: Name prefix of the temporary SavedModel folder (hidden: it is no export of its own).
SAVED_MODEL_PREFIX = ".tlx-export-"


@contextlib.contextmanager
def saved_model(model, folder: str | Path | None = None) -> Iterator[Path]:
    """Export `model` once to a temporary SavedModel (in `folder`, else the system's temp
    folder); every format converts from it."""
    with tempfile.TemporaryDirectory(prefix=SAVED_MODEL_PREFIX, dir=folder) as tmp:
        path = Path(tmp) / "saved_model"
        with quiet():
            try:
                model.export(str(path), format="tf_saved_model", verbose=False)
            except Exception as exc:
                raise TlxError(f"Cannot trace the inference model for export: {first_line(exc)}") from None
        yield path


def convert(saved_model_dir: str | Path, spec: FormatSpec, *,
            representative: Callable[[], Iterable[list[np.ndarray]]] | None = None,
            output_type: OutputType = OutputType.UINT8,
            layer_names: Collection[str] = ()) -> bytes:
    """Convert the SavedModel with the settings of `spec`; returns the flatbuffer.

    `representative` (int8 only) yields [float32 batch of raw pixels] lists; its dtype must
    match the graph input (float32), while the .tflite input becomes uint8.
    `layer_names` (see `layer_names()`) lets an error name the nested layer of an op.
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    quantization = spec.quantization
    if quantization is Quantization.FLOAT16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization is Quantization.DYNAMIC:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization is Quantization.INT8:
        if representative is None:
            raise TlxError("The int8 format needs calibration images (a representative dataset).")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        # Builtin int8 kernels only: a float fallback would silently keep ops in float.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # uint8 pixels in; with calibration covering 0..255 and the rescaling inside the
        # graph this gives input scale 1.0 / zero point 0 (pixels pass straight in).
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tensorflow_type(output_type)
    try:
        with quiet():
            return bytes(converter.convert())
    except TlxError:
        raise
    except Exception as exc:
        raise TlxError(explain_converter_error(exc, spec.name, layer_names)) from None


def tensorflow_type(output_type: OutputType | str):
    """The tf.DType of an int8 file's output tensor type."""
    import tensorflow as tf

    return {OutputType.UINT8: tf.uint8, OutputType.INT8: tf.int8,
            OutputType.FLOAT32: tf.float32}[OutputType(getattr(output_type, "value", output_type))]


#: The converter's error text names each unsupported op as 'tf.OpName' and its source as
#: fused["OpName:", "model/layer/.../OpName@__inference_..."]; a summary line lists them all.
_OP_ERROR = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")
_OP_SUMMARY = re.compile(r"(?:TF Select|Flex) ops: ([\w, ]+)")
_OP_LOCATION = re.compile(r'fused\["(\w+):", "([^"@]+)')


def explain_converter_error(exc: BaseException, format_name: str,
                            layer_names: Collection[str] = ()) -> str:
    """A TlxError message naming the unsupported op(s) and the layer each came from."""
    text = str(exc)
    ops: list[str] = []
    summary = _OP_SUMMARY.search(text)
    if summary:
        ops = [op.strip() for op in summary.group(1).split(",") if op.strip()]
    for op in _OP_ERROR.findall(text):
        if op not in ops:
            ops.append(op)
    if not ops:
        return f"The TFLite converter failed for the {format_name} format: {first_line(exc, 500)}"
    layers: dict[str, str] = {}
    for op, path in _OP_LOCATION.findall(text):
        if op in ops and op not in layers:
            layer = _layer_of(path, layer_names)
            if layer:
                layers[op] = layer
    # The most telling op first: one we can place in a layer.
    ops.sort(key=lambda op: op not in layers)
    described = ", ".join(f"{op} (layer {layers[op]!r})" if op in layers else op for op in ops)
    return (f"The TFLite converter cannot handle the op{'s' if len(ops) > 1 else ''} {described} "
            f"for the {format_name} format. The device runtimes have builtin TFLite ops only (no TF "
            "Select ops): replace that layer with standard ones, or leave out that format.")


def _layer_of(path: str, layer_names: Collection[str] = ()) -> str | None:
    """'tlx_inference_1/backbone_1/resize_1/resize/ResizeBicubic' -> 'backbone/resize'.

    The first component is the model, the last the op. Keras 3 traces each layer call under
    a "name_N" scope; op scopes inside a layer have no such suffix. Nested components count
    while they are such scopes and name layers of the model."""
    raw = [p for p in path.split("/") if p][1:-1]
    if not raw:
        return None
    names = set(layer_names)
    nested = [_strip_keras_suffix(raw[0])]
    for part in raw[1:]:
        name = _strip_keras_suffix(part)
        if name == part or name not in names:
            break
        nested.append(name)
    return "/".join(nested)


def layer_names(model) -> set[str]:
    """Names of the model's layers, nested models included."""
    names: set[str] = set()
    stack = [model]
    while stack:
        layer = stack.pop()
        names.add(layer.name)
        stack.extend(getattr(layer, "layers", ()))
    return names


def _strip_keras_suffix(name: str) -> str:
    # Keras 3 traces layers under "name_1" scopes.
    return re.sub(r"_\d+$", "", name)


@contextlib.contextmanager
def quiet():
    """TensorFlow writes SavedModel and converter chatter to stdout and stderr, much of it from
    C++ ("fully_quantize: ...", pages of MLIR on a failure). Swallow it: stdout must stay clean
    for `--json`, and a failure is reported as one TlxError naming the op and layer.
    Set TLX_DEBUG=1 to see it."""
    import os
    import sys

    if os.environ.get("TLX_DEBUG"):
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        saved = (os.dup(1), os.dup(2))
    except OSError:  # no file descriptors (embedded interpreters): best effort
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            with contextlib.redirect_stdout(sys.stderr):
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


@contextlib.contextmanager
def no_interpreter_warning():
    # The debugger runs tf.lite.Interpreter, which warns that it is deprecated on every use.
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*tf\.lite\.Interpreter is deprecated")
        warnings.filterwarnings("ignore", message=r".*experimental_preserve_all_tensors")
        yield
