"""Percentiles, summaries and the bounded live statistics of the load generator.

Live values (shown every ``metrics_interval``) come from :class:`LiveStat`: an
exact running count/sum/min/max plus a fixed-size uniform reservoir (Vitter's
algorithm R) for percentiles, so recording a sample is O(1) and an update
sorts at most :data:`RESERVOIR_SIZE` values however many requests ran. The
final summary sorts every sample once (:func:`describe`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence

RESERVOIR_SIZE = 2048

STAT_KEYS = ("mean", "median", "p90", "p99", "min", "max")


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) of already sorted values.

    Linear interpolation between the closest ranks (NumPy's default
    ``linear`` method), so ``percentile([1, 2, 3, 4], 50) == 2.5``.

    Returns:
        None for an empty sequence.
    """
    n = len(sorted_values)
    if n == 0:
        return None
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    pos = (n - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    a, b = sorted_values[lo], sorted_values[hi]
    return a + (b - a) * frac


def describe(values: Iterable[float]) -> dict[str, float | None]:
    """``{mean, median, p90, p99, min, max}`` of the values (all None when empty)."""
    data = sorted(values)
    if not data:
        return dict.fromkeys(STAT_KEYS)
    return {
        "mean": math.fsum(data) / len(data),
        "median": percentile(data, 50),
        "p90": percentile(data, 90),
        "p99": percentile(data, 99),
        "min": data[0],
        "max": data[-1],
    }


class LiveStat:
    """Running mean/min/max (exact) and percentiles (from a bounded reservoir).

    Args:
        size: Reservoir capacity; percentiles are exact until this many samples.
        seed: Seed of the reservoir's own RNG, so a run's live figures repeat.
    """

    __slots__ = ("count", "total", "min", "max", "_res", "_size", "_rng", "_sorted")

    def __init__(self, size: int = RESERVOIR_SIZE, seed: int = 0) -> None:
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf
        self._res: list[float] = []
        self._size = size
        self._rng = random.Random(seed)
        self._sorted: list[float] | None = None

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        if len(self._res) < self._size:
            self._res.append(value)
            self._sorted = None
        else:
            # Algorithm R: keep each of the `count` samples with probability size/count.
            j = self._rng.randrange(self.count)
            if j < self._size:
                self._res[j] = value
                self._sorted = None

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def pct(self, q: float) -> float | None:
        """Estimated ``q``-th percentile (exact while count <= reservoir size)."""
        if self._sorted is None:
            self._sorted = sorted(self._res)
        return percentile(self._sorted, q)
