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
from typing import Any

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


LAG_RESOLUTION_MS = 0.1
LAG_MAX_MS = 1000.0
_PER_MS = round(1 / LAG_RESOLUTION_MS)
_LAST = int(LAG_MAX_MS * _PER_MS)  # index of the last bucket: everything from 1 s up


class LagHistogram:
    """Event-loop lag samples in fixed 0.1 ms buckets up to 1 s (the last bucket holds the rest).

    Mergeable by adding counts, so the lag of several workers combines exactly;
    a percentile is exact to the bucket width. Only buckets in use are stored,
    so memory stays small however long the run is.
    """

    __slots__ = ("buckets", "count", "max_ms")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.max_ms = 0.0

    def add(self, lag_ms: float) -> None:
        if lag_ms < 0:
            lag_ms = 0.0
        i = min(int(lag_ms * _PER_MS), _LAST)
        self.buckets[i] = self.buckets.get(i, 0) + 1
        self.count += 1
        if lag_ms > self.max_ms:
            self.max_ms = lag_ms

    def merge(self, other: LagHistogram) -> None:
        buckets = self.buckets
        for i, n in other.buckets.items():
            buckets[i] = buckets.get(i, 0) + n
        self.count += other.count
        self.max_ms = max(self.max_ms, other.max_ms)

    def pct(self, q: float) -> float | None:
        """Upper edge (ms) of the bucket holding the ``q``-th percentile; None when empty."""
        if not self.count:
            return None
        rank = max(1, math.ceil(self.count * q / 100.0))
        seen = 0
        for i in sorted(self.buckets):
            seen += self.buckets[i]
            if seen >= rank:
                return self.max_ms if i == _LAST else min((i + 1) / _PER_MS, self.max_ms)
        return self.max_ms

    def to_sparse(self) -> dict[str, Any]:
        """A compact picklable/JSON form."""
        return {"buckets": dict(self.buckets), "max_ms": self.max_ms}

    @classmethod
    def from_sparse(cls, data: dict[str, Any]) -> LagHistogram:
        h = cls()
        h.buckets = {int(i): n for i, n in data["buckets"].items()}
        h.count = sum(h.buckets.values())
        h.max_ms = data["max_ms"]
        return h


LAG_LIMIT_MS = 5.0
"""The client limited a measurement when its event loop lagged more than this (p99)..."""
CPU_LIMIT_PCT = 80.0
"""...or when one worker process used more than this much of a core."""
LAG_MIN_SAMPLES = 50
"""Fewer lag probes than this (half a second of run) say nothing about the lag p99."""
CPU_MIN_WALL_S = 1.0
"""A worker's CPU share is judged only over at least this much of run."""


def client_verdict(lag: LagHistogram, cpu_pct: Sequence[float | None]) -> dict[str, Any]:
    """Whether the load generator itself limited the measurement, and by how much.

    Args:
        lag: Event-loop lag of all workers, merged.
        cpu_pct: CPU use of each worker over the run, in percent of one core (None: the
            run was too short to tell, see :data:`CPU_MIN_WALL_S`).

    Returns:
        ``{"limited", "reasons", "loop_lag_ms": {p50, p99, max}, "cpu_pct": [...], "cpu_pct_max",
        "lag_limit_ms", "cpu_limit_pct", "message"}``; ``message`` is "" when not limited.
    """
    p99 = lag.pct(99)
    known = [c for c in cpu_pct if c is not None]
    cpu_max = max(known) if known else None
    reasons = []
    if p99 is not None and p99 > LAG_LIMIT_MS and lag.count >= LAG_MIN_SAMPLES:
        why = ("; the workers were mostly idle, so other processes kept them from a CPU"
               if cpu_max is not None and cpu_max < CPU_LIMIT_PCT / 2 else "")
        reasons.append(f"event-loop lag p99 {p99:.1f} ms (limit {LAG_LIMIT_MS:g} ms): "
                       f"timestamps may be late by about that much{why}")
    if cpu_max is not None and cpu_max > CPU_LIMIT_PCT:
        worst = known.index(cpu_max)
        reasons.append(f"worker {worst} used {cpu_max:.0f}% of a core (limit {CPU_LIMIT_PCT:g}%)")
    message = ""
    if reasons:
        message = ("The load generator limited this measurement: " + "; ".join(reasons)
                   + ". Use more --workers, fewer requests in flight, or run the client on a less busy machine.")
    return {
        "limited": bool(reasons),
        "reasons": reasons,
        "loop_lag_ms": {"p50": lag.pct(50), "p99": p99, "max": lag.max_ms if lag.count else None},
        "cpu_pct": list(cpu_pct),
        "cpu_pct_max": cpu_max,
        "lag_limit_ms": LAG_LIMIT_MS,
        "cpu_limit_pct": CPU_LIMIT_PCT,
        "message": message,
    }
