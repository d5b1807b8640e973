"""The data behind the plots, shared by the terminal plots and ``results plot``.

* **throughput vs latency** — one point per load point: output tok/s against
  E2E p50 latency (the curve people pick a configuration from);
* **percentiles vs load** — TTFT and ITL p50/p90/p99 against achieved req/s;
* **tok/s over time** — output tokens per second in time buckets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from backends.results.model import LoadPoint, Result

#: At most this many buckets on the tok/s-over-time curve.
TIMELINE_BUCKETS = 120
_NICE = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)

PLOTS = ("throughput", "percentiles", "timeline")
PLOT_TITLES = {
    "throughput": "Throughput vs latency",
    "percentiles": "TTFT and ITL percentiles vs load",
    "timeline": "Output tok/s over time",
}


@dataclass(frozen=True, slots=True)
class Series:
    """One line of a plot."""

    name: str
    x: list[float]
    y: list[float]


def bucket_width(span: float) -> float:
    """A round bucket width giving at most :data:`TIMELINE_BUCKETS` buckets over ``span`` seconds."""
    # At most TIMELINE_BUCKETS buckets, and no narrower than a second unless the run is short.
    need = max(span / TIMELINE_BUCKETS, min(1.0, span / 10)) if span > 0 else 1.0
    for width in _NICE:
        if width >= need:
            return float(width)
    return float(int(need) + 1)


def timeline(events: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """``(end seconds, output tokens)`` of each request → ``(bucket start s, tok/s)``, empty buckets as 0.

    Times are relative to the earliest event, so the curve starts at 0 s.
    """
    pairs = [(t, n) for t, n in events if t is not None and n is not None]
    if not pairs:
        return []
    t0 = min(t for t, _ in pairs)
    span = max(t for t, _ in pairs) - t0
    width = bucket_width(span)
    buckets = [0.0] * (int(span // width) + 1)
    for t, n in pairs:
        buckets[int((t - t0) // width)] += n
    return [(i * width, total / width) for i, total in enumerate(buckets)]


def step_timeline(spans: Iterable[tuple[float, float, float]]) -> list[tuple[float, float]]:
    """``(start s, end s, tok/s)`` per load point → a step curve (for reports that keep only a sample of rows)."""
    rows = sorted((a, b, v) for a, b, v in spans if a is not None and b is not None and v is not None)
    if not rows:
        return []
    t0 = rows[0][0]
    out: list[tuple[float, float]] = []
    for a, b, v in rows:
        out += [(a - t0, v), (b - t0, v)]
    return out


def _xy(points: list[LoadPoint], xkey: str, ykey: str) -> tuple[list[float], list[float]]:
    pairs = [(p.metric(xkey), p.metric(ykey)) for p in points]
    known = sorted((x, y) for x, y in pairs if x is not None and y is not None)
    return [x for x, _ in known], [y for _, y in known]


def throughput_latency(result: Result, name: str | None = None) -> list[Series]:
    """Output tok/s (x) against E2E p50 (y), one point per load point."""
    x, y = _xy(result.load_points, "output_tok_s", "e2e_ms.p50")
    return [Series(name or result.name, x, y)] if x else []


def percentiles(result: Result, name: str | None = None, keys: tuple[str, ...] | None = None) -> list[Series]:
    """TTFT and ITL p50/p90/p99 against achieved req/s (a line per percentile)."""
    out = []
    for key in keys or ("ttft_ms.p50", "ttft_ms.p90", "ttft_ms.p99", "itl_ms.p50", "itl_ms.p90", "itl_ms.p99"):
        x, y = _xy(result.load_points, "req_s", key)
        if x:
            label = key.replace("_ms.", " ").upper().replace("P", "p")
            out.append(Series(f"{name} {label}" if name else label, x, y))
    return out


def tokens_over_time(result: Result, name: str | None = None) -> list[Series]:
    if not result.timeline:
        return []
    return [Series(name or result.name, [t for t, _ in result.timeline], [v for _, v in result.timeline])]


def series(kind: str, results: list[Result]) -> list[Series]:
    """The lines of plot ``kind`` for one result, or overlaid for several (one line per run)."""
    many = len(results) > 1
    out: list[Series] = []
    for r in results:
        if kind == "throughput":
            out += throughput_latency(r)
        elif kind == "percentiles":
            out += percentiles(r, r.name if many else None,
                               ("ttft_ms.p50", "ttft_ms.p99", "itl_ms.p50", "itl_ms.p99") if many else None)
        elif kind == "timeline":
            out += tokens_over_time(r)
        else:
            raise ValueError(f"unknown plot {kind!r}")
    return out


AXES = {
    "throughput": ("output tok/s", "E2E latency p50 (ms)"),
    "percentiles": ("achieved req/s", "latency (ms)"),
    "timeline": ("seconds since start", "output tok/s"),
}
