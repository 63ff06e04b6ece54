"""Run an exported classifier over many preprocessed images, as a device runs them.

The one loop behind export's parity check, the int8 fallback's candidates and `tlx bench`:
uint8 pixels (n, height, width, 3) in, one `Classifier.run` per image, scores out.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tlx.errors import TlxError

#: The input quantization of a model fed raw 0..255 pixels: none (float input) or this.
RAW_PIXELS = (1.0, 0)


def require_raw_pixel_input(classifier, source: str = "<model>") -> None:
    """An exported model takes raw pixels: uint8 input with scale 1.0 and zero point 0, or
    float. Anything else means the export went wrong (calibration not covering 0..255)."""
    if classifier.input_quantization not in (None, RAW_PIXELS):
        scale, zero_point = classifier.input_quantization
        raise TlxError(f"{source}: the input is quantized with scale {scale}, zero point "
                       f"{zero_point}, not 1.0 and 0 (raw pixels). This is a tlx bug: please report it.")


def run_over_pixels(classifier, pixels: np.ndarray, advance: Callable[[int], None] | None = None,
                    failures: list[tuple[int, str]] | None = None) -> np.ndarray:
    """Scores (n, classes), float32, of every image. With a `failures` list, an image the
    interpreter fails on gets a row of NaN and (index, message) in the list instead of
    stopping the loop; without one the error propagates."""
    rows: list[np.ndarray | None] = []
    for i, image in enumerate(pixels):
        try:
            rows.append(np.asarray(classifier.run(image), dtype=np.float32))
        except Exception as exc:
            if failures is None:
                raise
            failures.append((i, f"{type(exc).__name__}: {exc}"))
            rows.append(None)
        if advance is not None:
            advance(1)
    width = next((len(r) for r in rows if r is not None), None)
    if width is None:
        width = classifier.num_classes
    scores = np.full((len(rows), width), np.nan, dtype=np.float32)
    for i, row in enumerate(rows):
        if row is not None:
            scores[i] = row
    return scores


def time_runs(classifier, pixels: np.ndarray, runs: int, warmup: int) -> list[float]:
    """Seconds per `Classifier.run` (input conversion, invoke, dequantization) on one
    preprocessed image, `runs` times; the first `warmup` calls (allocation, caches) are
    discarded."""
    import time

    for _ in range(warmup):
        classifier.run(pixels)
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        classifier.run(pixels)
        timings.append(time.perf_counter() - start)
    return timings
