"""TensorFlow's quantizer and QuantizationDebugger, as the int8 fallback drives them.

The re-quantization calls the quantizer behind the debugger's `get_nondebug_quantized_model`
(tensorflow.lite.python.convert.mlir_quantize) with the debugger's calibrated model, asking
for uint8 (or int8/float32) input and output types as the exporter's int8 format has them:
the debugger's own method only gives float input and output. The input keeps scale 1.0 and
zero point 0 (raw pixels), which the calibration's 0..255 coverage guarantees.

The converter settings, output-type map, representative data and chatter suppression are
tlx.export.convert's and tlx.export.calibration's.
"""

from __future__ import annotations


import numpy as np

from tlx.errors import TlxError, first_line
from tlx.export.calibration import representative
from tlx.export.convert import no_interpreter_warning, quiet, tensorflow_type
from tlx.export.formats import OutputType
from tlx.export.sensitivity import ChannelSums


def calibrating_debugger(saved_model_dir, calibration: np.ndarray, samples: np.ndarray):
    """A QuantizationDebugger built from the converter: it calibrates and instruments the
    model (its calibrated_model is what every step re-quantizes)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative(calibration)
    # Float builtins next to the int8 ones: the layers we keep in float need them.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                           tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        with quiet(), no_interpreter_warning():
            return tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=representative(samples))
    except Exception as exc:
        raise TlxError(f"Calibrating the int8 model failed: {first_line(exc)}") from None


def debug(calibrating, samples: np.ndarray):
    """Per-layer quantization errors: (debugger with layer_statistics, channel errors)."""
    import tensorflow as tf

    sums = ChannelSums()
    try:
        with quiet(), no_interpreter_warning():
            # Built from a converter, the debugger runs the instrumented model without
            # experimental_preserve_all_tensors, so the float values its
            # layer_direct_compare_metrics receive are whatever reused the arena memory
            # (TF 2.21: errors of 0.7 on a tensor that rounds to within 0.2 %). A second
            # debugger built from the instrumented model itself preserves them.
            debugger = tf.lite.experimental.QuantizationDebugger(
                quant_debug_model_content=calibrating.quant_model,
                debug_dataset=representative(samples),
                debug_options=tf.lite.experimental.QuantizationDebugOptions(
                    layer_direct_compare_metrics={"channel_error": sums}))
            debugger.run()
    except Exception as exc:
        raise TlxError(f"The TensorFlow quantization debugger failed: {first_line(exc)}") from None
    return debugger, sums.per_tensor(len(debugger.layer_statistics or {}), len(samples))


def quantize(calibrated: bytes, denylisted_nodes: list[str], output_type: OutputType) -> bytes:
    import tensorflow as tf

    try:
        from tensorflow.lite.python.convert import mlir_quantize
    except ImportError:  # pragma: no cover - a TensorFlow without the quantizer entry point
        raise TlxError("This TensorFlow has no tensorflow.lite.python.convert.mlir_quantize, "
                       "which the int8 fallback needs; use TensorFlow 2.16 to 2.21.") from None
    try:
        with quiet():
            return bytes(mlir_quantize(
                calibrated,
                input_data_type=tf.uint8,
                output_data_type=tensorflow_type(output_type),
                denylisted_nodes=list(denylisted_nodes) or None))
    except Exception as exc:
        raise TlxError(f"Re-quantizing with {len(denylisted_nodes)} float layer(s) failed: "
                       f"{first_line(exc)}") from None
