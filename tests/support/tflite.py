"""Converting tiny Keras test models to .tflite the way the exporter does (SavedModel route)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def convert_float_and_int8(model, workdir: Path, calibration: np.ndarray) -> dict[str, bytes]:
    """{"float32": ..., "int8": ...} without metadata. int8 is full-integer with uint8 input
    and output; `calibration` (float32 raw pixels) gets a 0 and a 255 so the input scale is
    exactly 1.0."""
    import tensorflow as tf

    saved = Path(workdir) / "saved_model"
    model.export(str(saved), format="tf_saved_model", verbose=False)
    float_model = tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert()

    calibration = np.array(calibration, dtype=np.float32)
    calibration[0, 0, 0] = 0.0
    calibration[0, 0, 1] = 255.0

    def representative():
        for image in calibration:
            yield [image[None]]

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    return {"float32": float_model, "int8": converter.convert()}
