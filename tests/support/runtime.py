"""Tiny .tflite models for the runtime tests, built once and cached.

Run as a script (with the main venv's TensorFlow) it writes the models into a folder;
the `runtime_models` fixture calls it in a child process so the test process itself
never imports TensorFlow, and caches the folder by this file's content and the
TensorFlow version.

The model reads colour: its scores are a softmax over the mean of the R, G and B
channels, so a red image is class 0 ('red'), green 1, blue 2. It goes through a conv
layer so int8 conversion has real work to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
LABELS = ["red", "green", "blue"]
SIZE = 32

#: name -> what the runtime should see (input dtype, input (scale, zero point), output dtype).
MODELS = {
    "float32": ("float32", None, "float32"),
    "int8": ("uint8", (1.0, 0), "uint8"),          # the exporter's int8 contract
    "int8_int8io": ("int8", (1.0, -128), "int8"),   # int8 input and output
    "int8_floatout": ("uint8", (1.0, 0), "float32"),
}


def annotate(path: Path, labels=LABELS, info: dict | None = None) -> Path:
    """Append the metadata zip the exporter writes: labels.txt and tlx.json."""
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("labels.txt", "\n".join(labels) + "\n")
        z.writestr("tlx.json", json.dumps(info or {"image_size": [SIZE, SIZE],
                                                   "labels": labels}))
    return path


def colour_image(rgb, size=(48, 64), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = np.array(rgb, np.float32) + rng.normal(0, 20, (size[0], size[1], 3))
    pixels[:3, :3] = 255
    pixels[-3:, -3:] = 0
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _build(out: Path) -> None:  # pragma: no cover - runs in a child process with TensorFlow
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tempfile

    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3), dtype="float32")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(3, 3, padding="same", use_bias=False,
                            kernel_initializer=keras.initializers.Constant(0.0),
                            name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(x)
    model = keras.Model(inputs, outputs)
    kernel = np.zeros((3, 3, 3, 3), np.float32)
    kernel[1, 1] = np.eye(3)  # identity: the conv passes colours through
    model.get_layer("conv").set_weights([kernel])
    model.get_layer("head").set_weights([np.eye(3, dtype=np.float32) * 8.0,
                                         np.full(3, -4.0, np.float32)])

    rng = np.random.default_rng(1)

    def representative():
        for i in range(24):
            image = rng.uniform(0, 255, (1, SIZE, SIZE, 3)).astype(np.float32)
            image[0, :2, :2] = 255.0
            image[0, -2:, -2:] = 0.0
            image[0] = np.clip(image[0] * 0.3 + np.array(
                [[200, 30, 30], [30, 200, 30], [30, 30, 200]][i % 3], np.float32) * 0.7, 0, 255)
            image[0, :2, :2] = 255.0
            image[0, -2:, -2:] = 0.0
            yield [image]

    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)

        def convert(input_type=None, output_type=None):
            c = tf.lite.TFLiteConverter.from_saved_model(tmp)
            if input_type is not None:
                c.optimizations = [tf.lite.Optimize.DEFAULT]
                c.representative_dataset = representative
                c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                c.inference_input_type = input_type
                if output_type is not None:
                    c.inference_output_type = output_type
            return c.convert()

        (out / "float32.tflite").write_bytes(convert())
        (out / "int8.tflite").write_bytes(convert(tf.uint8, tf.uint8))
        (out / "int8_int8io.tflite").write_bytes(convert(tf.int8, tf.int8))
        (out / "int8_floatout.tflite").write_bytes(convert(tf.uint8))

    # Not an image classifier: a vector in, a vector out.
    vec_in = keras.Input((10,))
    vec = keras.Model(vec_in, keras.layers.Dense(3, activation="softmax")(vec_in))
    with tempfile.TemporaryDirectory() as tmp:
        vec.export(tmp, format="tf_saved_model", verbose=False)
        (out / "vector.tflite").write_bytes(tf.lite.TFLiteConverter.from_saved_model(tmp).convert())

    for name in MODELS:
        plain = out / f"{name}.tflite"
        (out / f"{name}_nometa.tflite").write_bytes(plain.read_bytes())
        annotate(plain)


def _key() -> str:
    digest = hashlib.sha256(Path(__file__).read_bytes())
    try:  # the TensorFlow version, without importing TensorFlow
        from importlib.metadata import version
        digest.update(version("tensorflow-cpu").encode())
    except Exception:
        pass
    return digest.hexdigest()[:16]


def models_folder(request) -> Path:
    """The test models: $TLX_TEST_MODELS if set (prebuilt, e.g. for the emulated aarch64
    run where there is no TensorFlow), else built once into pytest's cache."""
    if os.environ.get("TLX_TEST_MODELS"):
        return Path(os.environ["TLX_TEST_MODELS"])
    return build_models(request.config.cache.mkdir("tlx-runtime-models"))


def build_models(cache_root: Path) -> Path:
    """The folder of test models, built on first use (a child process, ~20 s)."""
    folder = Path(cache_root) / _key()
    if (folder / "done").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, __file__, str(folder)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"building test models failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    (folder / "done").write_text("ok\n")
    return folder


if __name__ == "__main__":  # pragma: no cover
    _build(Path(sys.argv[1]))
