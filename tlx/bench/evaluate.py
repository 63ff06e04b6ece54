"""Top-1 predictions of each model on the held-out test split.

The .tflite files run through tlx.runtime (the device's path: load_image, then the
interpreter); the Keras model, when TensorFlow is installed, runs on the very same
pixels. Images are decoded once and shared by all models.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tlx.errors import ImageError, TlxError
from tlx.imaging import load_image


@dataclass
class TestImages:
    """Decoded test images (uint8, at the model size) and their true labels."""

    paths: list[str]
    labels: np.ndarray
    pixels: np.ndarray
    #: (path, reason) for test files that could not be decoded.
    unreadable: list[tuple[str, str]] = field(default_factory=list)


def load_test_images(items, image_size: tuple[int, int]) -> TestImages:
    paths, labels, pixels, unreadable = [], [], [], []
    for path, label in items:
        try:
            pixels.append(load_image(path, image_size))
        except ImageError as exc:
            unreadable.append((path, exc.reason))
            continue
        paths.append(path)
        labels.append(label)
    if not pixels:
        raise TlxError("None of the test images could be read: nothing to measure.")
    return TestImages(paths, np.asarray(labels, dtype=np.int64), np.stack(pixels), unreadable)


@dataclass
class Predictions:
    """Predicted class per test image (-1 where the model failed on that image)."""

    predicted: np.ndarray
    failures: list[tuple[str, str]]

    def correct(self, labels: np.ndarray) -> int:
        return int(np.sum(self.predicted == labels))


def tflite_predictions(classifier, images: TestImages) -> Predictions:
    predicted = np.full(len(images.paths), -1, dtype=np.int64)
    failures = []
    for i, pixels in enumerate(images.pixels):
        try:
            predicted[i] = int(np.argmax(classifier.run(pixels)))
        except Exception as exc:  # one bad inference must not stop the benchmark
            failures.append((images.paths[i], f"{type(exc).__name__}: {exc}"))
    return Predictions(predicted, failures)


def keras_predictions(model_path, num_labels: int, images: TestImages, batch_size: int = 32) -> Predictions:
    """The trained Keras model, as the exporter's inference model (probabilities)."""
    from tlx.export.inference import build_inference_model, load_trained_model

    model = build_inference_model(load_trained_model(model_path), num_labels)
    # Plain calls in batches: model.predict would trace a new function per model and warn.
    scores = [np.asarray(model(images.pixels[i:i + batch_size].astype(np.float32), training=False))
              for i in range(0, len(images.pixels), batch_size)]
    return Predictions(np.argmax(np.concatenate(scores), axis=1).astype(np.int64), [])


def tensorflow_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None
