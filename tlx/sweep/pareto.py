"""The Pareto front of (accuracy, latency, size) and the pick under budgets. Pure, TensorFlow-free."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class ModelPoint:
    """One exported model of a sweep, as the front sees it."""

    #: "<run>/<format>", unique in a sweep.
    id: str
    #: Top-1 on the shared test split, 0..1.
    accuracy: float
    #: Median latency on the host (one thread), milliseconds.
    latency_ms: float
    size_bytes: int


@dataclass(frozen=True)
class Budgets:
    """Limits a recommended model must meet; None: no limit on that axis."""

    max_latency_ms: Optional[float] = None
    #: Megabytes of 1,000,000 bytes.
    max_size_mb: Optional[float] = None
    #: Top-1 as a fraction, 0..1.
    min_accuracy: Optional[float] = None

    def problems(self, point: ModelPoint) -> list[str]:
        """The budgets `point` misses, as text ("latency 3.1 ms > 2 ms"); empty when it meets all."""
        missed = []
        if self.max_latency_ms is not None and point.latency_ms > self.max_latency_ms:
            missed.append(f"latency {point.latency_ms:.2f} ms > {self.max_latency_ms:g} ms")
        if self.max_size_mb is not None and point.size_bytes > self.max_size_mb * 1e6:
            missed.append(f"size {point.size_bytes / 1e6:.2f} MB > {self.max_size_mb:g} MB")
        if self.min_accuracy is not None and point.accuracy < self.min_accuracy:
            missed.append(f"accuracy {point.accuracy:.3f} < {self.min_accuracy:g}")
        return missed

    def describe(self) -> str:
        parts = [f"latency <= {self.max_latency_ms:g} ms" if self.max_latency_ms is not None else "",
                 f"size <= {self.max_size_mb:g} MB" if self.max_size_mb is not None else "",
                 f"accuracy >= {self.min_accuracy:g}" if self.min_accuracy is not None else ""]
        return ", ".join(p for p in parts if p) or "no budgets"

    def to_json(self) -> dict:
        return {"max_latency_ms": self.max_latency_ms, "max_size_mb": self.max_size_mb,
                "min_accuracy": self.min_accuracy}


def dominates(a: ModelPoint, b: ModelPoint) -> bool:
    """`a` is at least as good as `b` on all three axes and better on one."""
    at_least = (a.accuracy >= b.accuracy and a.latency_ms <= b.latency_ms and a.size_bytes <= b.size_bytes)
    better = a.accuracy > b.accuracy or a.latency_ms < b.latency_ms or a.size_bytes < b.size_bytes
    return at_least and better


def pareto_front(points: Sequence[ModelPoint]) -> list[ModelPoint]:
    """The points no other point dominates, in the order given (quadratic: a sweep has tens)."""
    return [p for p in points if not any(dominates(q, p) for q in points)]


def _rank(point: ModelPoint):
    # Most accurate first; ties: faster, then smaller, then by id (the same pick every time).
    return (-point.accuracy, point.latency_ms, point.size_bytes, point.id)


def recommend(points: Sequence[ModelPoint], budgets: Budgets) -> tuple[Optional[ModelPoint], str]:
    """The most accurate model meeting every budget, and why it (or none) was chosen.

    It is always on the Pareto front: a model dominating it would meet the same budgets and
    rank before it."""
    if not points:
        return None, "no candidate finished, so there is no model to recommend"
    within = [p for p in points if not budgets.problems(p)]
    if not within:
        counts = _budget_counts(points, budgets)
        return None, (f"no model meets every budget ({budgets.describe()}): {counts}. "
                      "Relax a budget, or add smaller backbones or image sizes to the sweep")
    best = min(within, key=_rank)
    what = ("the most accurate model" if budgets == Budgets() else
            f"the most accurate of the {len(within)} of {len(points)} models within {budgets.describe()}")
    return best, (f"{what}: accuracy {best.accuracy:.3f}, {best.latency_ms:.2f} ms, "
                  f"{best.size_bytes / 1e6:.2f} MB (ties go to the faster, then the smaller)")


def _budget_counts(points: Sequence[ModelPoint], budgets: Budgets) -> str:
    counts = []
    for name, single in (("latency", Budgets(max_latency_ms=budgets.max_latency_ms)),
                         ("size", Budgets(max_size_mb=budgets.max_size_mb)),
                         ("accuracy", Budgets(min_accuracy=budgets.min_accuracy))):
        if single != Budgets():
            counts.append(f"{sum(not single.problems(p) for p in points)} of {len(points)} "
                          f"meet the {name} budget")
    return "; ".join(counts)
