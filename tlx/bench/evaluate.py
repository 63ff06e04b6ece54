"""Top-1 predictions of each model on the held-out test split.

The .tflite files run through tlx.runtime (the device's path: load_image, then the
interpreter); the Keras model, when TensorFlow is installed, runs on the very same
pixels. Images are decoded once and shared by all models.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tlx.errors import TlxError
from tlx.imaging import PREPROCESSING_VERSION
from tlx.pixels.cache import LabelledImages, load_labelled


def load_test_images(items, image_size: tuple[int, int],
                     preprocessing: int = PREPROCESSING_VERSION) -> LabelledImages:
    images = load_labelled(items, image_size, version=preprocessing)
    if not len(images):
        listed = "".join(f"\n  {path}: {reason}" for path, reason in images.skipped[:5])
        more = f"\n  ... and {len(images.skipped) - 5} more" if len(images.skipped) > 5 else ""
        raise TlxError(f"None of the {len(items)} test images could be read: nothing to measure."
                       f"{listed}{more}")
    return images


@dataclass
class Predictions:
    """Predicted class per test image (-1 where the model failed on that image)."""

    predicted: np.ndarray
    failures: list[tuple[str, str]]

    def correct(self, labels: np.ndarray) -> int:
        return int(np.sum(self.predicted == labels))


def tflite_predictions(classifier, images: LabelledImages) -> Predictions:
    scores, failures = tflite_scores(classifier, images.pixels, images.paths)
    return Predictions(top1(scores), failures)


def tflite_scores(classifier, pixels, paths) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Scores (n, classes) per image; a row of NaN where the model failed on that image
    (listed as (path, error)): one bad inference must not stop the benchmark."""
    from tlx.runtime.batch import run_over_pixels

    failed: list[tuple[int, str]] = []
    scores = run_over_pixels(classifier, pixels, failures=failed)
    return scores, [(paths[i], message) for i, message in failed]


def top1(scores: np.ndarray) -> np.ndarray:
    """Predicted class per row, -1 for a failed (NaN) row."""
    failed = np.isnan(scores).any(axis=1) if scores.size else np.zeros(len(scores), bool)
    predicted = np.argmax(np.nan_to_num(scores, nan=-np.inf), axis=1).astype(np.int64) if scores.size \
        else np.full(len(scores), -1, np.int64)
    predicted[failed] = -1
    return predicted


def keras_predictions(model_path, num_labels: int, images: LabelledImages) -> Predictions:
    """The trained Keras model, as the exporter's inference model (probabilities)."""
    from tlx.export.inference import build_inference_model, load_trained_model
    from tlx.export.parity import keras_probabilities

    model = build_inference_model(load_trained_model(model_path), num_labels)
    return Predictions(np.argmax(keras_probabilities(model, images), axis=1).astype(np.int64), [])


def tensorflow_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None
