"""What a run looks like now, folded from its events: the snapshot a new client starts from.

A client that attaches to a live run does not read the whole event log (a run
may have logged a million lines): the supervisor keeps this fold and sends it
as a short list of records — the latest state of every unit, the latest
progress, sweep and endpoint, the recent metrics (the sparkline's history),
every alert, the recent notices and the last lines of the log — then the live
events from the byte offset the snapshot is current at.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from backends.events import (
    Alert,
    Endpoint,
    Event,
    Finished,
    LogLine,
    Metrics,
    Notice,
    Phase,
    Progress,
    Sweep,
    to_dict,
)
from backends.store import batch_record

#: Log lines a snapshot carries when the client does not say.
SNAPSHOT_LINES = 10_000
#: Metrics events kept (the monitor's throughput sparkline shows 120).
METRICS_KEPT = 120
#: Notices kept.
NOTICES_KEPT = 50


class RunState:
    """The fold of one run's events (no Textual, no I/O).

    Args:
        log_lines: Log lines kept for snapshots.
    """

    def __init__(self, log_lines: int = SNAPSHOT_LINES) -> None:
        self.logs: deque[LogLine] = deque(maxlen=max(1, log_lines))
        self.log_total = 0
        self.phases: dict[str, Phase] = {}
        self.metrics: deque[Metrics] = deque(maxlen=METRICS_KEPT)
        self.progress: Progress | None = None
        self.sweep: Sweep | None = None
        self.endpoint: Endpoint | None = None
        self.alerts: list[Alert] = []
        self.notices: deque[Notice] = deque(maxlen=NOTICES_KEPT)
        self.finished: Finished | None = None
        self.others: list[Event] = []

    def apply(self, event: Event) -> None:
        """Fold one event in."""
        if type(event) is LogLine:
            self.logs.append(event)
            self.log_total += 1
        elif isinstance(event, Phase):
            self.phases[event.unit] = event
        elif isinstance(event, Metrics):
            self.metrics.append(event)
        elif isinstance(event, Progress):
            self.progress = event
        elif isinstance(event, Sweep):
            self.sweep = event
        elif isinstance(event, Endpoint):
            self.endpoint = event
        elif isinstance(event, Alert):
            self.alerts.append(event)
        elif isinstance(event, Notice):
            self.notices.append(event)
        elif isinstance(event, Finished):
            self.finished = event
        else:  # an event type a newer backend adds
            self.others.append(event)

    def records(self, log_lines: int | None = None) -> list[dict[str, Any]]:
        """The snapshot as event-log records, oldest kind of fact first, Finished last.

        Args:
            log_lines: Log lines to include (default: every kept one).
        """
        out: list[dict[str, Any]] = []
        out.extend(to_dict(p) for p in self.phases.values())
        if self.endpoint is not None:
            out.append(to_dict(self.endpoint))
        out.extend(to_dict(n) for n in self.notices)
        lines = list(self.logs)
        if log_lines is not None:
            lines = lines[-log_lines:] if log_lines > 0 else []
        dropped = self.log_total - len(lines)
        if dropped > 0:
            out.append(to_dict(Notice(f"{dropped:,} earlier log lines are in the run's events.jsonl")))
        out.extend(_batches(lines))
        out.extend(to_dict(m) for m in self.metrics)
        for single in (self.progress, self.sweep):
            if single is not None:
                out.append(to_dict(single))
        out.extend(to_dict(a) for a in self.alerts)
        out.extend(to_dict(e) for e in self.others)
        if self.finished is not None:
            out.append(to_dict(self.finished))
        return out


def _batches(lines: list[LogLine]) -> list[dict[str, Any]]:
    """Consecutive lines of one source as LogBatch records."""
    out: list[dict[str, Any]] = []
    run: list[LogLine] = []
    for line in lines:
        if run and run[0].source != line.source:
            out.append(batch_record(run))
            run = []
        run.append(line)
    if run:
        out.append(batch_record(run))
    return out


__all__ = ["RunState", "SNAPSHOT_LINES"]
