"""Plain event types every backend yields.

The TUI and the headless CLI consume exactly these; they are dataclasses with
no behaviour so that they can be logged as JSON lines (:func:`to_dict`,
:func:`from_dict`) and replayed from the run store.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

Stream = Literal["out", "err"]
Severity = Literal["info", "warning", "error"]
Outcome = Literal["succeeded", "failed", "cancelled", "detached"]


def _now() -> float:
    return time.time()


@dataclass(slots=True)
class Phase:
    """A unit of work changed state (TaskRun, SLURM job, workflow node, server process).

    Args:
        unit: Stable name of the unit (e.g. ``job 5382685``, ``deploy-model-tp4``).
        state: Backend's own state word (``PENDING``, ``RUNNING``, ``Succeeded``...).
        detail: Why it is in that state (pending reason, node name, message).
        kind: What the unit is: ``job``, ``task``, ``pod``, ``node``, ``server``, ``tunnel``...
        started: Epoch seconds the unit started, if known.
        finished: Epoch seconds the unit finished, if known.
        retries: How many times it has been retried.
        expected_s: Expected duration in seconds, for over-time alerts.
    """

    unit: str
    state: str
    detail: str = ""
    kind: str = "task"
    started: float | None = None
    finished: float | None = None
    retries: int = 0
    expected_s: float | None = None
    ts: float = field(default_factory=_now)


@dataclass(slots=True)
class LogLine:
    """One line of a log (``source`` is e.g. ``vllm``, ``vllm-tp4``, ``task/run-workload``)."""

    text: str
    stream: Stream = "out"
    source: str = "vllm"
    ts: float = field(default_factory=_now)


@dataclass(slots=True)
class Progress:
    """Counts of a sweep's or a workload's items."""

    total: int
    pending: int = 0
    running: int = 0
    completed: int = 0
    failed: int = 0
    ts: float = field(default_factory=_now)

    @property
    def done(self) -> int:
        return self.completed + self.failed

    @property
    def pct(self) -> float:
        return 100.0 * self.done / self.total if self.total else 0.0


@dataclass(slots=True)
class Sweep:
    """A snapshot of a work-queue sweep (Argo): what the sweep view draws.

    Attributes:
        model_version_id: The model version being swept.
        total/pending/running/completed/failed: Config counts by status.
        configs_per_min: Configs finished (completed or failed) per minute, recent window.
        eta_s: Seconds to finish at that rate (``None`` when the rate is 0).
        failures: Failed configs grouped by error: ``{"error_message", "count"}``, largest first.
        stale: Running configs older than the stale threshold (``id``, ``workload_type``,
            ``started_at``, ``retry_count``...), oldest first.
        by_workload: Status counts per workload type (``workload_type`` + the four statuses).
        by_priority: Status counts per priority (``priority`` + the four statuses).
        stale_after_min: The threshold the ``stale`` list used.
    """

    model_version_id: str
    total: int = 0
    pending: int = 0
    running: int = 0
    completed: int = 0
    failed: int = 0
    configs_per_min: float = 0.0
    eta_s: float | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)
    stale: list[dict[str, Any]] = field(default_factory=list)
    by_workload: list[dict[str, Any]] = field(default_factory=list)
    by_priority: list[dict[str, Any]] = field(default_factory=list)
    stale_after_min: float = 120.0
    ts: float = field(default_factory=_now)

    @property
    def done(self) -> int:
        return self.completed + self.failed

    @property
    def pct(self) -> float:
        return 100.0 * self.done / self.total if self.total else 0.0


@dataclass(slots=True)
class Fix:
    """A suggested change to the spec that may cure a failure.

    Args:
        label: Short text shown as a choice (``Increase TP``).
        changes: Spec field paths to new values (``{"engine.tp": 4}``).
        description: Longer explanation (``TP=2 -> TP=4 (doubles GPU memory)``).
    """

    label: str
    changes: dict[str, Any] = field(default_factory=dict)
    description: str = ""


@dataclass(slots=True)
class Alert:
    """Something the user should see; with ``diagnosis`` set it names a known failure.

    Args:
        kind: Short identifier (``cuda-oom``, ``image-pull``, ``overtime``, ``tunnel``...).
        message: Human-readable text.
        severity: ``info``, ``warning`` or ``error``.
        diagnosis: Rule id from :mod:`backends.diagnosis` when one matched.
        fixes: Suggested fixes, in the order to offer them.
        evidence: The log line or state that triggered it.
    """

    kind: str
    message: str
    severity: Severity = "warning"
    diagnosis: str | None = None
    fixes: list[Fix] = field(default_factory=list)
    evidence: str = ""
    ts: float = field(default_factory=_now)


@dataclass(slots=True)
class Notice:
    """A plain progress message (printed as ``[INFO] ...`` headless)."""

    message: str
    level: Severity = "info"
    ts: float = field(default_factory=_now)


@dataclass(slots=True)
class Endpoint:
    """A URL that now serves the model (or stopped serving it)."""

    url: str
    reachable: bool = True
    model: str = ""
    detail: str = ""
    ts: float = field(default_factory=_now)


@dataclass(slots=True)
class Metrics:
    """Live workload measurements (milliseconds; throughputs per second).

    ``client_limited`` is a sentence (empty when all is well) saying that the load
    generator's event-loop lag (p99 > 5 ms) or CPU (> 80 % of a core in a worker)
    limited the measurement; ``client_loop_lag_ms_p99`` / ``client_cpu_pct_max``
    are the figures behind it.
    """

    completed: int = 0
    failed: int = 0
    in_flight: int = 0
    elapsed_s: float = 0.0
    ttft_ms_mean: float | None = None
    ttft_ms_p50: float | None = None
    ttft_ms_p90: float | None = None
    itl_ms_mean: float | None = None
    itl_ms_p90: float | None = None
    latency_ms_mean: float | None = None
    latency_ms_p90: float | None = None
    requests_per_s: float = 0.0
    output_tokens_per_s: float = 0.0
    ts: float = field(default_factory=_now)
    # Time per output token after the first (ms), next to ITL.
    tpot_ms_mean: float | None = None
    tpot_ms_p90: float | None = None
    # Non-empty when the load generator itself limited the measurement: what and by how much.
    client_limited: str = ""
    client_loop_lag_ms_p99: float | None = None
    client_cpu_pct_max: float | None = None


@dataclass(slots=True)
class Finished:
    """The run ended (or the session detached from it)."""

    outcome: Outcome
    message: str = ""
    results: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    ts: float = field(default_factory=_now)


Event = Phase | LogLine | Progress | Alert | Notice | Endpoint | Metrics | Finished | Sweep

EVENT_TYPES: dict[str, type] = {
    cls.__name__: cls for cls in (Phase, LogLine, Progress, Alert, Notice, Endpoint, Metrics, Finished, Sweep)
}


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def to_dict(event: Event) -> dict[str, Any]:
    """Serialise an event as a JSON-ready dict with a ``type`` key.

    Flat events (every one but :class:`Alert`, whose fixes are dataclasses) are read
    field by field: ``dataclasses.asdict`` deep-copies recursively and costs ~4 µs
    per log line on the hot path.
    """
    cls = type(event)
    if cls is Alert:
        data = asdict(event)
    else:
        names = _FIELD_NAMES.get(cls)
        if names is None:
            names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
        data = {name: getattr(event, name) for name in names}
        for key, value in data.items():
            # lists/dicts (Finished.summary, Sweep's groups) are copied so the
            # caller can keep mutating its own without changing what was logged
            if isinstance(value, (list, dict)):
                data[key] = copy.deepcopy(value)
    data["type"] = cls.__name__
    return data


def from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event from :func:`to_dict` output (unknown keys are ignored)."""
    cls = EVENT_TYPES[data["type"]]
    names = {f.name for f in fields(cls)}
    kwargs = {k: v for k, v in data.items() if k in names}
    if cls is Alert:
        kwargs["fixes"] = [Fix(**f) for f in kwargs.get("fixes", [])]
    return cls(**kwargs)
