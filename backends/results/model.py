"""The one result model every source is read into.

A :class:`Result` is what one experiment measured: its load points (one per
sweep rate, constant-rate stage, concurrency level or queue config), why
requests failed, the configuration it ran with (each value with where it came
from) and which files it was read from. Every source (the built-in load
generator, guidellm, inference-perf, BLIS result directories, the Argo work
queue) fills the same fields, so showing, comparing, plotting and exporting
never depend on where a result came from.

Units: latencies in milliseconds, throughput in output tokens/s and
requests/s. ``None`` means "not measured by this source", never zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from backends.loadgen.stats import percentile

DIST_KEYS = ("mean", "p50", "p90", "p99")
LATENCIES = ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms")


def num(value: Any) -> float | None:
    """A finite float from a JSON number (None for anything else: bools, strings, NaN)."""
    kind = type(value)  # exact types: bool is an int subclass, and this runs once per request row
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is int:
        return float(value)
    return None


@dataclass(frozen=True, slots=True)
class Dist:
    """Summary of one latency distribution (milliseconds)."""

    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None

    @classmethod
    def of(cls, values: Iterable[float]) -> Dist:
        """Mean and linear-interpolated percentiles of the values (empty → all None)."""
        data = sorted(values)
        if not data:
            return cls()
        return cls(math.fsum(data) / len(data), percentile(data, 50), percentile(data, 90), percentile(data, 99))

    @classmethod
    def from_summary(cls, summary: Any, scale: float = 1.0) -> Dist:
        """From a harness's distribution summary, times ``scale`` (seconds → ms: 1000).

        Reads ``mean``, ``median``/``p50``, ``p90``, ``p99`` at the top level
        (inference-perf, the load generator) or under ``percentiles``
        (guidellm).
        """
        if not isinstance(summary, dict):
            return cls()
        pct = found if isinstance(found := summary.get("percentiles"), dict) else {}

        def pick(*names: str) -> float | None:
            for source in (summary, pct):
                for name in names:
                    value = num(source.get(name))
                    if value is not None:
                        return value * scale
            return None

        return cls(pick("mean"), pick("median", "p50"), pick("p90"), pick("p99"))

    @property
    def empty(self) -> bool:
        return self.mean is None and self.p50 is None and self.p90 is None and self.p99 is None

    def get(self, key: str) -> float | None:
        return getattr(self, key)

    def to_dict(self) -> dict[str, float | None]:
        return {"mean": self.mean, "p50": self.p50, "p90": self.p90, "p99": self.p99}


@dataclass(slots=True)
class LoadPoint:
    """One load level of an experiment and what it measured.

    Exactly one of ``rate`` (requests/s asked for) and ``concurrency``
    (requests in flight) says how the load was set; both are None when the
    source does not say (a throughput run with no cap).
    """

    label: str
    rate: float | None = None
    concurrency: int | None = None
    requests_ok: int = 0
    requests_failed: int = 0
    ttft_ms: Dist = field(default_factory=Dist)
    itl_ms: Dist = field(default_factory=Dist)
    tpot_ms: Dist = field(default_factory=Dist)
    e2e_ms: Dist = field(default_factory=Dist)
    output_tok_s: float | None = None
    req_s: float | None = None
    group: str | None = None
    """Section this point belongs to (a queue workload/sequence length, a BLIS TP); None for one section."""
    incomplete: int = 0
    """Requests cut off when the load point ended (guidellm's ``incomplete``, cancelled rows): not failures."""
    duration_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The load point as ``results show --json`` prints it (the issue's shape, nothing else)."""
        out: dict[str, Any] = {"label": self.label}
        if self.concurrency is not None and self.rate is None:
            out["concurrency"] = self.concurrency
        else:
            out["rate"] = self.rate
        out.update(
            requests_ok=self.requests_ok,
            requests_failed=self.requests_failed,
            ttft_ms=self.ttft_ms.to_dict(),
            itl_ms=self.itl_ms.to_dict(),
            tpot_ms=self.tpot_ms.to_dict(),
            e2e_ms=self.e2e_ms.to_dict(),
            output_tok_s=self.output_tok_s,
            req_s=self.req_s,
        )
        return out

    @property
    def load(self) -> str:
        """``12.5 req/s``, ``8 in flight`` or ``—``."""
        if self.rate is not None:
            return f"{self.rate:g} req/s"
        if self.concurrency is not None:
            return f"{self.concurrency} in flight"
        return "—"

    def metric(self, key: str) -> float | None:
        """A metric by its dotted key (``ttft_ms.p99``, ``output_tok_s``, ``requests_failed``...)."""
        name, _, part = key.partition(".")
        value = getattr(self, name)
        if isinstance(value, Dist):
            return value.get(part or "mean")
        return None if value is None else float(value)


@dataclass(slots=True)
class Failure:
    """Failed requests of one reason, with one full message as a sample."""

    reason: str
    count: int
    sample: str = ""


#: The harness of results read from the Argo work queue (:mod:`backends.results.queue`, which imports httpx:
#: the name lives here so that knowing it costs nothing).
QUEUE_HARNESS = "argo-queue"


@dataclass(slots=True)
class Origin:
    """Where a result was read from."""

    harness: str
    """``sweepdeck-loadgen``, ``guidellm``, ``inference-perf``, ``blis/guidellm``, ``argo-queue``..."""
    version: str | None = None
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"harness": self.harness, "version": self.version, "files": list(self.files)}

    def describe(self) -> str:
        return self.harness + (f" {self.version}" if self.version else "")

    @property
    def live(self) -> bool:
        """Read from a service whose results change without any file of the run changing (the work queue).

        Such a result is read again each time it is asked for: never cached, never summarised.
        """
        return self.harness == QUEUE_HARNESS


@dataclass(slots=True)
class Setting:
    """One configuration value and where it came from (``catalog``, ``user``, ``guidellm report``...)."""

    value: Any
    source: str | None = None


@dataclass(slots=True)
class Result:
    """Everything one experiment measured.

    Args:
        name: The run id, or the name an imported result was given.
        origin: Harness, version, files.
        load_points: In the report's order.
        failures: Reason → count and sample, largest first.
        spec: Setting path (``engine.tp``, ``workload.rate``...) → value and source; None when unknown.
        timeline: ``(seconds since start, output tokens/s)`` pairs for the tok/s-over-time plot.
        notes: What the reader should know (a saturated client, sampled rows) — shown, not exported.
        problems: Files that could not be read, one line each; the rest of the result still shows.
        model: The model served, when known.
        path: The run directory or imported path.
    """

    name: str
    origin: Origin
    load_points: list[LoadPoint] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    spec: dict[str, Setting] | None = None
    timeline: list[tuple[float, float]] = field(default_factory=list)
    timeline_note: str = ""
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    model: str | None = None
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """``results show --json``: name, source, load_points, failures, spec — exactly these keys."""
        return {
            "name": self.name,
            "source": self.origin.to_dict(),
            "load_points": [p.to_dict() for p in self.load_points],
            "failures": {f.reason: {"count": f.count, "sample": f.sample} for f in self.failures},
            "spec": None if self.spec is None
            else {k: {"value": s.value, "source": s.source} for k, s in self.spec.items()},
        }

    @property
    def requests_ok(self) -> int:
        return sum(p.requests_ok for p in self.load_points)

    @property
    def requests_failed(self) -> int:
        return sum(p.requests_failed for p in self.load_points)

    def best(self, key: str, higher: bool = True) -> float | None:
        """The best value of a metric over the load points (None when no point has it)."""
        values = [v for v in (p.metric(key) for p in self.load_points) if v is not None]
        if not values:
            return None
        return max(values) if higher else min(values)


@dataclass(frozen=True, slots=True)
class Metric:
    """A metric as tables, compare and export name it."""

    key: str
    label: str
    unit: str
    higher_is_better: bool


#: The metrics compared and exported, in table order.
METRICS: tuple[Metric, ...] = (
    Metric("requests_ok", "requests ok", "", True),
    Metric("requests_failed", "requests failed", "", False),
    Metric("ttft_ms.mean", "TTFT mean", "ms", False),
    Metric("ttft_ms.p50", "TTFT p50", "ms", False),
    Metric("ttft_ms.p90", "TTFT p90", "ms", False),
    Metric("ttft_ms.p99", "TTFT p99", "ms", False),
    Metric("itl_ms.mean", "ITL mean", "ms", False),
    Metric("itl_ms.p50", "ITL p50", "ms", False),
    Metric("itl_ms.p90", "ITL p90", "ms", False),
    Metric("itl_ms.p99", "ITL p99", "ms", False),
    Metric("tpot_ms.mean", "TPOT mean", "ms", False),
    Metric("tpot_ms.p50", "TPOT p50", "ms", False),
    Metric("tpot_ms.p90", "TPOT p90", "ms", False),
    Metric("tpot_ms.p99", "TPOT p99", "ms", False),
    Metric("e2e_ms.mean", "E2E mean", "ms", False),
    Metric("e2e_ms.p50", "E2E p50", "ms", False),
    Metric("e2e_ms.p90", "E2E p90", "ms", False),
    Metric("e2e_ms.p99", "E2E p99", "ms", False),
    Metric("output_tok_s", "output tok/s", "tok/s", True),
    Metric("req_s", "req/s", "req/s", True),
)
METRIC_BY_KEY = {m.key: m for m in METRICS}

#: The shorter set the compare view shows by default (every metric is in the exports).
COMPARE_METRICS = (
    "requests_ok", "requests_failed", "ttft_ms.p50", "ttft_ms.p99", "itl_ms.p50", "itl_ms.p99",
    "tpot_ms.p50", "e2e_ms.p50", "e2e_ms.p99", "output_tok_s", "req_s",
)


def fmt(value: float | None, unit: str = "") -> str:
    """A metric value for a table: 3 significant figures-ish, ``—`` when missing."""
    if value is None:
        return "—"
    if unit == "" and float(value).is_integer():
        return f"{int(value):,}"
    a = abs(value)
    if a >= 1000:
        return f"{value:,.0f}"
    if a >= 100:
        return f"{value:.1f}"
    if a >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"
