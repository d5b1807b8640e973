"""Compare 2–8 results: metrics side by side, deltas against the first, and the settings that differ.

Load points are matched by label when every result has the same labels
(the same sweep stages, the same queue configs); otherwise by position (the
i-th point of each), and the comparison says so. Each delta is in percent of
the first result's value and is *better* or *worse* by the metric's own
direction (lower latency is better, higher throughput is better); within
:data:`SAME_PCT` it is *same*.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from backends.results.model import COMPARE_METRICS, METRIC_BY_KEY, LoadPoint, Metric, Result
from config.errors import SweepdeckError

MIN_RUNS, MAX_RUNS = 2, 8
SAME_PCT = 0.5


@dataclass(slots=True)
class Row:
    """One metric at one load point, across the runs."""

    point: str
    metric: Metric
    values: list[float | None]
    deltas: list[float | None]
    verdicts: list[str | None]
    """Per run: ``better``, ``worse``, ``same`` or None (the first run, or a value missing)."""


@dataclass(slots=True)
class Comparison:
    names: list[str]
    rows: list[Row]
    points: list[str]
    matched_by: str
    config_diff: list[tuple[str, list[Any]]] = field(default_factory=list)
    harnesses: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": self.names,
            "sources": self.harnesses,
            "baseline": self.names[0],
            "matched_by": self.matched_by,
            "rows": [
                {"load_point": r.point, "metric": r.metric.key, "values": r.values,
                 "delta_pct": r.deltas, "verdict": r.verdicts}
                for r in self.rows
            ],
            "config_diff": {key: values for key, values in self.config_diff},
        }


def delta(base: float | None, value: float | None) -> float | None:
    """``value`` against ``base`` in percent (None without both, or with a zero base)."""
    if base is None or value is None or base == 0:
        return None
    return (value - base) / abs(base) * 100.0


def verdict(metric: Metric, pct: float | None) -> str | None:
    if pct is None:
        return None
    if abs(pct) < SAME_PCT:
        return "same"
    return "better" if (pct > 0) == metric.higher_is_better else "worse"


def _match(results: list[Result]) -> tuple[list[str], list[list[LoadPoint | None]], str]:
    """(point names, per point the matching load point of each run, how they were matched)."""
    labels = [[p.label for p in r.load_points] for r in results]
    if all(sorted(ls) == sorted(labels[0]) for ls in labels) and len(set(labels[0])) == len(labels[0]):
        by_label = [{p.label: p for p in r.load_points} for r in results]
        return labels[0], [[m[label] for m in by_label] for label in labels[0]], "label"
    n = max(len(ls) for ls in labels)
    names = []
    matched: list[list[LoadPoint | None]] = []
    for i in range(n):
        row = [r.load_points[i] if i < len(r.load_points) else None for r in results]
        first = next(p for p in row if p is not None)
        names.append(f"#{i + 1} {first.label}")
        matched.append(row)
    return names, matched, "position"


def config_diff(results: list[Result]) -> list[tuple[str, list[Any]]]:
    """Settings whose value differs between the runs that report them.

    A setting only one run reports (a harness's own option, such as
    guidellm's target URL next to an inference-perf run) has nothing to
    differ from and is left out; a run that does not report a listed setting
    shows None for it.
    """
    keys: list[str] = []
    for r in results:
        for key in r.spec or {}:
            if key not in keys:
                keys.append(key)
    out = []
    for key in keys:
        values = [(r.spec or {}).get(key) for r in results]
        known = {json.dumps(v.value, sort_keys=True, default=str) for v in values if v is not None}
        if len(known) > 1:
            out.append((key, [None if v is None else v.value for v in values]))
    return out


def compare(results: list[Result], metrics: tuple[str, ...] = COMPARE_METRICS) -> Comparison:
    """Compare results; the first is the baseline.

    Raises:
        SweepdeckError: fewer than 2 or more than 8 results, or a result with no load points.
    """
    if not MIN_RUNS <= len(results) <= MAX_RUNS:
        raise SweepdeckError(f"Compare takes {MIN_RUNS} to {MAX_RUNS} runs, got {len(results)}.",
                             "Name between two and eight runs.")
    for r in results:
        if not r.load_points:
            raise SweepdeckError(f"{r.name} has no load points to compare.")
    names, matched, how = _match(results)
    rows = []
    for name, points in zip(names, matched, strict=True):
        for key in metrics:
            metric = METRIC_BY_KEY[key]
            values = [p.metric(key) if p is not None else None for p in points]
            deltas = [None] + [delta(values[0], v) for v in values[1:]]
            rows.append(Row(name, metric, values, deltas, [verdict(metric, d) for d in deltas]))
    return Comparison([r.name for r in results], rows, names, how, config_diff(results),
                      [r.origin.describe() for r in results])
