"""Parity: the exported files against the Keras model, on the run's held-out test split.

For every file: top-1 agreement with Keras, accuracy, and the largest absolute difference
of the output probabilities (each file outputs probabilities; Keras' are the inference
model's, i.e. the trained logits through the same softmax).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from tlx.drop import drop_text
from tlx.imaging import PREPROCESSING_VERSION
from tlx.pixels.cache import LabelledImages, load_labelled
from tlx.progress import Advance
from tlx.stats import PairedDifference, paired_difference


#: The test split as parity reads it (kept as a name for the callers).
TestImages = LabelledImages


@dataclass(frozen=True)
class FormatParity:
    """One file against Keras."""

    format: str
    #: Fraction of test images where the file's top-1 label equals Keras' top-1.
    top1_agreement: float
    #: Fraction of test images the file classifies correctly.
    accuracy: float
    #: Keras accuracy minus this accuracy, in percentage points (positive = lost).
    accuracy_drop_points: float
    #: Largest |probability_file - probability_keras| over all images and labels.
    max_abs_prob_diff: float
    #: Largest logit difference (float outputs only; None for quantized outputs, whose
    #: probabilities are steps of 1/256). The files output probabilities, so logits are
    #: recovered as log p centered per image: softmax cannot see a shift common to all logits.
    max_abs_logit_diff: float | None = None
    #: accuracy_drop_points with its paired 95% interval (tlx.stats; the same images),
    #: as tlx bench gives it. None only for a report built without it.
    drop: PairedDifference | None = None

    def to_json(self) -> dict:
        return {**asdict(self), "drop": self.drop and self.drop.to_json()}


@dataclass(frozen=True)
class ParityReport:
    test_images: int
    keras_accuracy: float
    formats: tuple[FormatParity, ...]

    def get(self, name: str) -> FormatParity | None:
        return next((f for f in self.formats if f.format == name), None)

    def to_json(self) -> dict:
        return {"test_images": self.test_images, "keras_accuracy": self.keras_accuracy,
                "formats": {f.format: f.to_json() for f in self.formats}}


def load_test_images(items: Sequence[tuple[str, int]], image_size: tuple[int, int],
                     advance: Advance | None = None, preprocessing: int = PREPROCESSING_VERSION) -> TestImages:
    return load_labelled(items, image_size, advance, version=preprocessing)


def keras_probabilities(model, images: TestImages, batch_size: int = 32) -> np.ndarray:
    if len(images) == 0:
        return np.zeros((0, int(model.outputs[0].shape[-1])), np.float32)
    # Plain calls in batches: model.predict traces a new function for every model it sees
    # and warns about retracing after a few.
    return np.concatenate([
        np.asarray(model(images.pixels[i:i + batch_size].astype(np.float32), training=False), np.float32)
        for i in range(0, len(images), batch_size)])


def tflite_probabilities(model_content: bytes, pixels: np.ndarray, source: str = "<model>",
                         advance: Advance | None = None,
                         backend: str | None = None) -> tuple[np.ndarray, bool]:
    """Run the file through tlx.runtime.Classifier (what `tlx predict` and a device run) on
    uint8 pixels (n, h, w, 3), one image at a time. Returns dequantized float32 probabilities
    (n, labels) and whether the output tensor is float."""
    from tlx.runtime import Classifier
    from tlx.runtime.batch import require_raw_pixel_input, run_over_pixels

    with Classifier(model_content, source=source, backend=backend) as classifier:
        require_raw_pixel_input(classifier, source)
        probs = run_over_pixels(classifier, pixels, advance)
        return probs, classifier.output_quantization is None


#: Suffix of the extra parity row of a full-integer file run on the builtin kernels.
BUILTIN_SUFFIX = "/builtin"


def builtin_kernel_probabilities(model_content: bytes, pixels: np.ndarray,
                                 advance: Advance | None = None) -> np.ndarray | None:
    """The file on ai-edge-litert's builtin kernels, without the default XNNPACK delegate
    (tlx.runtime's "litert-builtin" backend). tflite-runtime 2.14 (Raspberry Pi OS Bookworm)
    runs int8 this way, and those kernels round differently from XNNPACK's: measured
    identical to tflite-runtime, and a few 1/256 steps away from ai-edge-litert's default
    path. None when ai-edge-litert is missing."""
    from tlx.errors import MissingDependencyError

    try:
        return tflite_probabilities(model_content, pixels, advance=advance, backend="litert-builtin")[0]
    except MissingDependencyError:
        return None


def centered_logits(probs: np.ndarray) -> np.ndarray:
    """Logits up to softmax's shift invariance: log p minus its per-image mean (p clipped at
    1e-30 so saturated probabilities stay finite)."""
    log_p = np.log(np.clip(probs.astype(np.float64), 1e-30, None))
    return log_p - log_p.mean(axis=1, keepdims=True)


def compare(name: str, probs: np.ndarray, reference: np.ndarray, labels: np.ndarray,
            float_output: bool = True) -> FormatParity:
    n = len(labels)
    if n == 0:
        return FormatParity(name, float("nan"), float("nan"), float("nan"), float("nan"))
    top1 = probs.argmax(axis=1)
    ref_top1 = reference.argmax(axis=1)
    accuracy = float(np.mean(top1 == labels))
    keras_accuracy = float(np.mean(ref_top1 == labels))
    return FormatParity(
        format=name,
        top1_agreement=float(np.mean(top1 == ref_top1)),
        accuracy=accuracy,
        accuracy_drop_points=round(100.0 * (keras_accuracy - accuracy), 6),
        max_abs_prob_diff=float(np.max(np.abs(probs - reference))),
        max_abs_logit_diff=(float(np.max(np.abs(centered_logits(probs) - centered_logits(reference))))
                            if float_output else None),
        drop=paired_difference(labels, ref_top1, top1),
    )


def measure(keras_model, files: dict[str, bytes], images: TestImages,
            advance: Advance | None = None, builtin_kernels: Collection[str] = ()) -> ParityReport:
    """Parity of each {format: tflite bytes} against the Keras inference model, through
    tlx.runtime (ai-edge-litert's default path: XNNPACK). Formats named in `builtin_kernels`
    get a second row, "<format>/builtin", run on the builtin kernels as tflite-runtime does."""
    reference = keras_probabilities(keras_model, images)
    keras_accuracy = float(np.mean(reference.argmax(axis=1) == images.labels)) if len(images) else float("nan")
    results = []
    for name, content in files.items():
        probs, float_output = tflite_probabilities(content, images.pixels, name, advance)
        results.append(compare(name, probs, reference, images.labels, float_output))
        if name in builtin_kernels:
            probs = builtin_kernel_probabilities(content, images.pixels, advance)
            if probs is not None:
                results.append(compare(name + BUILTIN_SUFFIX, probs, reference, images.labels, float_output))
    return ParityReport(len(images), keras_accuracy, tuple(results))


def format_table(report: ParityReport) -> str:
    """The terminal table."""
    rows = [("format", "top-1 agree", "accuracy", "drop pts [95% CI]", "max |dp|", "max |dlogit|"),
            ("keras", "-", _pct(report.keras_accuracy), "-", "-", "-")]
    for f in report.formats:
        logit = "-" if f.max_abs_logit_diff is None else f"{f.max_abs_logit_diff:.2e}"
        rows.append((f.format, _pct(f.top1_agreement), _pct(f.accuracy),
                     f"{f.accuracy_drop_points:+.2f}" if f.drop is None else drop_text(f.drop),
                     f"{f.max_abs_prob_diff:.2e}", logit))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
                       for i, cell in enumerate(row)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return f"Parity on {report.test_images} test images:\n" + "\n".join(lines)


def _pct(value: float) -> str:
    return "n/a" if value != value else f"{100 * value:.1f}%"
