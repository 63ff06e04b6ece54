"""Load a trained model.keras safely and rebuild it as the model a device runs.

The inference model takes raw RGB pixels 0..255 (float32, the training size) and outputs
one probability per label. It reuses the trained layers by name (the layer-name contract
of tlx.trainer.model) and leaves out augmentation and dropout: exporting the training
model would keep random augmentation ops active, which vary the outputs call to call and
need TF Select ops the device runtimes lack.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from tlx.errors import TlxError, first_line
from tlx.trainer.model import BACKBONE, LOGITS, NORMALIZATION, POOL

#: Names in the inference graph (they show up in the .tflite tensor names).
INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"

#: The trained layers the inference model is made of, in order.
REQUIRED_LAYERS = (NORMALIZATION, BACKBONE, POOL, LOGITS)


def load_trained_model(path: str | Path):
    """keras.saving.load_model in safe mode, with a clear TlxError for every way it fails.

    Safe mode refuses Lambda layers (arbitrary pickled Python code) without running them:
    a model file is data, and exporting one must not execute code from it.
    """
    import keras

    path = Path(path)
    if not path.is_file():
        raise TlxError(f"{path}: no such model file. Pass the --out folder of a `tlx train` run.")
    if not zipfile.is_zipfile(path):
        raise TlxError(f"{path} is not a Keras model (.keras is a zip archive; this file is "
                       "damaged or something else). Re-run `tlx train` or copy the file again.")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises ValueError, TypeError, KeyError, OSError, ...
        message = str(exc)
        if "Lambda" in message or "safe_mode" in message:
            raise TlxError(
                f"{path} contains a Lambda layer (arbitrary Python code). tlx loads models in "
                "Keras safe mode and refuses to execute it. Models from `tlx train` have no "
                "Lambda layers; rebuild the model with standard layers."
            ) from None
        raise TlxError(f"{path} cannot be loaded as a Keras model ({first_line(exc)}). "
                       "Is it damaged? Re-run `tlx train`.") from None


def check_layers(model) -> None:
    names = {layer.name for layer in model.layers}
    missing = [name for name in REQUIRED_LAYERS if name not in names]
    if missing:
        raise TlxError(
            f"The model has no layer named {', '.join(repr(m) for m in missing)}. tlx export "
            f"rebuilds the inference model from the layers {', '.join(REQUIRED_LAYERS)} that "
            "`tlx train` creates; this model was not made by `tlx train`."
        )


def input_size(model) -> tuple[int, int]:
    """(height, width) of the trained model's pixel input."""
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[-1] != 3 or shape[1] is None or shape[2] is None:
        raise TlxError(f"The model input has shape {shape}; tlx export needs (batch, height, width, 3).")
    return int(shape[1]), int(shape[2])


def normalization(model) -> dict:
    """The trained "normalization" layer as metadata: normalized = pixels * scale + offset,
    i.e. (pixels - mean) / std. Read from the model itself, not the backbone registry: it is
    what the exported graph does."""
    layer = model.get_layer(NORMALIZATION)
    scale, offset = _scalar(layer.scale), _scalar(layer.offset)
    if isinstance(scale, float) and isinstance(offset, float) and scale:
        return {"scale": scale, "offset": offset, "mean": -offset / scale, "std": 1.0 / scale}
    return {"scale": scale, "offset": offset}


def _scalar(value):
    import numpy as np

    array = np.asarray(value, dtype=np.float64).reshape(-1)
    return float(array[0]) if array.size == 1 else [float(v) for v in array]


def num_logits(model) -> int:
    return int(model.get_layer(LOGITS).units)


def build_inference_model(trained, num_labels: int):
    """raw pixels -> normalization -> backbone (inference mode) -> pool -> logits -> probabilities.

    Softmax over N logits; a binary model's single logit z becomes [1 - sigmoid(z), sigmoid(z)],
    so every file outputs one probability per label, as off-the-shelf TFLite classifiers
    expect. Only standard layers: the result must load in safe mode and convert without
    custom ops.
    """
    import keras

    check_layers(trained)
    height, width = input_size(trained)
    logits_count = num_logits(trained)
    expected = 1 if num_labels == 2 else num_labels
    if logits_count != expected:
        raise TlxError(f"The model has {logits_count} output(s) but labels.txt lists {num_labels} "
                       f"labels (expected {expected} output(s)). Are model.keras and labels.txt "
                       "from the same run?")

    pixels = keras.Input(shape=(height, width, 3), dtype="float32", name=INPUT_NAME)
    x = trained.get_layer(NORMALIZATION)(pixels)
    # training=False: BatchNorm uses its moving averages, whatever the layer's trainable flag.
    x = trained.get_layer(BACKBONE)(x, training=False)
    x = trained.get_layer(POOL)(x)
    logits = trained.get_layer(LOGITS)(x)
    if logits_count == 1:
        # softmax([-z/2, z/2]) == [1 - sigmoid(z), sigmoid(z)]. Ending in a Softmax op (rather
        # than sigmoid, 1 - p and a concatenation) matters for int8: TFLite's int8 softmax has
        # a fixed output range 0..1 (scale 1/256), while a concatenation's range is whatever the
        # calibration images produced; a set where p stayed below 0.5 would clip every higher
        # probability on the device.
        pair = keras.layers.Concatenate(axis=-1, name="binary_logits")([
            keras.layers.Rescaling(-0.5, name="negative_half")(logits),
            keras.layers.Rescaling(0.5, name="positive_half")(logits),
        ])
        outputs = keras.layers.Softmax(name=OUTPUT_NAME)(pair)
    else:
        outputs = keras.layers.Softmax(name=OUTPUT_NAME)(logits)
    return keras.Model(pixels, outputs, name="tlx_inference")
