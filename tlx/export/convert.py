"""Keras inference model -> .tflite bytes, one call per format of the format table.

The route is DESIGN's working one: model.export(dir, format="tf_saved_model") then
tf.lite.TFLiteConverter.from_saved_model(dir). Not from_concrete_functions: it produced
a graph of VAR_HANDLE ops that outputs NaN, silently. Not from_keras_model: it works but
prints a few hundred "Captures:" lines.
"""

from __future__ import annotations

import contextlib
import io
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from tlx.errors import TlxError
from tlx.export.formats import FormatSpec, OutputType, Quantization


@contextlib.contextmanager
def saved_model(model) -> Iterator[Path]:
    """Export `model` once to a temporary SavedModel; every format converts from it."""
    with tempfile.TemporaryDirectory(prefix="tlx-export-") as tmp:
        path = Path(tmp) / "saved_model"
        with _quiet():
            try:
                model.export(str(path), format="tf_saved_model", verbose=False)
            except Exception as exc:
                raise TlxError(f"Cannot trace the inference model for export: {_first_line(exc)}") from None
        yield path


def convert(saved_model_dir: str | Path, spec: FormatSpec, *,
            representative: Callable[[], Iterable[list[np.ndarray]]] | None = None,
            output_type: OutputType = OutputType.UINT8) -> bytes:
    """Convert the SavedModel with the settings of `spec`; returns the flatbuffer.

    `representative` (int8 only) yields [float32 batch of raw pixels] lists; its dtype must
    match the graph input (float32), while the .tflite input becomes uint8.
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
        converter.inference_output_type = {
            OutputType.UINT8: tf.uint8, OutputType.INT8: tf.int8, OutputType.FLOAT32: tf.float32,
        }[OutputType(output_type)]
    try:
        with _quiet():
            return bytes(converter.convert())
    except TlxError:
        raise
    except Exception as exc:
        raise TlxError(explain_converter_error(exc, spec.name)) from None


#: Converter messages name an unsupported op as 'tf.OpName' and its source as a
#: location like "model/layer/.../OpName@__inference_...".
_OP_PATTERNS = (
    re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op"),
    re.compile(r"'tf\.(\w+)' op"),
    re.compile(r"\bop '(\w+)'"),
    re.compile(r"ops? (?:are|is) not supported[^:]*: (?:\w+\.)?(\w+)"),
)
_LOCATION = re.compile(r'loc\((?:callsite\()?(?:fused\[)?"([^"]+)"')


def explain_converter_error(exc: BaseException, format_name: str) -> str:
    """A TlxError message naming the op (and the layer it came from) when the text allows."""
    text = str(exc)
    op = None
    for pattern in _OP_PATTERNS:
        match = pattern.search(text)
        if match:
            op = match.group(1)
            break
    layer = _layer_from_locations(text, op)
    if op:
        where = f" in layer {layer!r}" if layer else ""
        return (f"The TFLite converter cannot handle the op {op}{where} for the {format_name} format. "
                "Builtin TFLite ops only are allowed (the device runtimes have no TF Select ops); "
                "replace that layer, or leave out that format.")
    return f"The TFLite converter failed for the {format_name} format: {_first_line(exc)[:500]}"


def _layer_from_locations(text: str, op: str | None) -> str | None:
    for match in _LOCATION.finditer(text):
        location = match.group(1)
        if op and op not in location:
            continue
        parts = [p for p in re.split(r"[/@]", location) if p]
        # The first component is the model; drop the op and the function suffix.
        layers = [p for p in parts[1:] if not p.startswith("__inference") and p != op
                  and not p.startswith(f"{op}:")] if op else parts[1:-1]
        if layers:
            return "/".join(_strip_keras_suffix(p) for p in layers[:2])
    return None


def _strip_keras_suffix(name: str) -> str:
    # Keras 3 traces layers under "name_1" scopes.
    return re.sub(r"_\d+$", "", name)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def _quiet():
    """TensorFlow prints SavedModel and converter chatter to stdout; keep the CLI's output clean
    (and `--json` parseable)."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        yield
