"""Small, dependency-free statistics for honest reports."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: z for a two-sided 95% interval.
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Proportion:
    """k successes out of n, with a Wilson score interval (sound for small n and for
    accuracies near 0 or 1, where the normal approximation is not)."""

    successes: int
    n: int
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.successes / self.n if self.n else float("nan")

    def to_json(self) -> dict:
        return {"value": self.value, "successes": self.successes, "n": self.n,
                "ci95": [self.low, self.high]}


def wilson(successes: int, n: int, z: float = Z95) -> Proportion:
    if n <= 0:
        return Proportion(successes, n, float("nan"), float("nan"))
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # The interval contains p exactly: at p = 0 or 1 rounding would otherwise leave an end a
    # hair on the wrong side (0.9999999999999999 for 42/42), and error bars below zero.
    return Proportion(successes, n, max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)))


@dataclass(frozen=True)
class Latency:
    """Milliseconds per call, after warm-up runs were discarded."""

    p50: float
    p90: float
    p99: float
    mean: float
    runs: int

    @property
    def throughput(self) -> float:
        """Calls per second at the median latency."""
        return 1000.0 / self.p50 if self.p50 > 0 else float("inf")

    def to_json(self) -> dict:
        return {"p50_ms": self.p50, "p90_ms": self.p90, "p99_ms": self.p99,
                "mean_ms": self.mean, "runs": self.runs, "throughput_per_s": self.throughput}


def latency_from_seconds(seconds) -> Latency:
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    if ms.size == 0:
        raise ValueError("no timings")
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return Latency(float(p50), float(p90), float(p99), float(ms.mean()), int(ms.size))


def confusion_matrix(true, predicted, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted ones; predictions of -1 (failures) are left out."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for t, p in zip(true, predicted):
        if p >= 0:
            matrix[int(t), int(p)] += 1
    return matrix


@dataclass(frozen=True)
class PairedDifference:
    """Accuracy of a reference minus another model's, in points, on the same images, with a
    95% interval (normal approximation on the per-image difference of correctness).

    `low`/`high` are NaN when no image changed correctness (or n < 2): the approximation
    then gives no interval, and saying so beats printing [0, 0]."""

    points: float
    low: float
    high: float
    n: int

    def to_json(self) -> dict:
        nan = math.isnan(self.low)
        return {"points": self.points, "ci95": None if nan else [self.low, self.high], "n": self.n}


def paired_difference(truth, reference, other, z: float = Z95) -> PairedDifference:
    """`reference` and `other` are predicted classes per image, `truth` the true ones."""
    truth = np.asarray(truth)
    d = (np.asarray(reference) == truth).astype(float) - (np.asarray(other) == truth).astype(float)
    n = len(d)
    if n == 0:
        return PairedDifference(float("nan"), float("nan"), float("nan"), 0)
    mean = float(d.mean())
    half = z * math.sqrt(d.var(ddof=1) / n) if n > 1 and d.any() else float("nan")
    return PairedDifference(100 * mean, 100 * (mean - half), 100 * (mean + half), n)
