"""One run as the TUI sees it: a client of the run's supervisor, its recent history, the screens' feed.

:class:`RunController` is the TUI's side of a run (the run itself lives in its
supervisor process, :mod:`backends.supervisor`): ``start()`` starts a
supervisor and follows the new run, ``attach()`` follows a live run through
its supervisor (or replays an ended run's ``events.jsonl`` read-only),
``cancel()`` and ``cleanup()`` ask the supervisor to stop it, ``detach()``
lets it go on without this client, and ``relaunch(fix)`` starts the fixed
experiment that the recovery dialog asks for.

Screens do not see single events. Every event is folded into the
controller's bounded history (the last ``log_line_cap`` log lines, the latest
state per unit of work, the latest metrics...) and queued; at most every
``flush_interval`` seconds the queue goes to the subscribers as one
:class:`EventBatch`, in which a burst of status changes has already collapsed
to the latest state per unit. A screen that subscribes late (the monitor is
opened again from the runs list) first gets the whole history as one batch.

This module imports no Textual: it is the seam the headless tests and the
benchmarks drive directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backends.cleanup import CleanupRegistry
from backends.events import (
    Alert,
    Endpoint,
    Event,
    Finished,
    Fix,
    LogLine,
    Metrics,
    Notice,
    Phase,
    Progress,
    Sweep,
)
from backends.store import expand_record
from config.errors import SweepdeckError

if TYPE_CHECKING:
    from backends.base import Backend, Run
    from backends.store import RunDir, RunRecord, RunStore
    from backends.supervisor import RunLink
    from backends.supervisor.launcher import Launcher
    from config.spec import ExperimentSpec

log = logging.getLogger(__name__)

#: Lines kept per run when the settings say nothing (``settings.log_line_cap``).
DEFAULT_LOG_LINE_CAP = 100_000
#: Seconds between two deliveries to the screens (log lines are batched this long).
FLUSH_INTERVAL = 0.05
#: Throughput samples kept for the sparkline.
METRICS_HISTORY = 120
#: Notices kept (the monitor shows the latest few).
NOTICES_KEPT = 50

LIVE_STATES = ("launching", "running", "cancelling")

Subscriber = Callable[["EventBatch"], Any]


@dataclass(slots=True)
class EventBatch:
    """What happened since the last delivery, already collapsed.

    Args:
        lines: New log lines, oldest first (never more than the line cap).
        dropped: Lines that arrived but were dropped before delivery (line cap).
        phases: Latest Phase per unit changed in this batch, in first-seen order.
        metrics: Metrics events of this batch (the last is the current one).
        progress: Latest Progress, if any.
        endpoint: Latest Endpoint, if any.
        alerts: Alerts, in order.
        notices: Notices, in order.
        finished: The run's Finished event, if it came.
        state: The controller's state after this batch.
        reset: The batch replaces everything shown so far (history replay,
            a switch to another run).
        sweep: Latest work-queue Sweep snapshot, if any (a burst collapses to the last).
    """

    lines: list[LogLine] = field(default_factory=list)
    dropped: int = 0
    phases: dict[str, Phase] = field(default_factory=dict)
    metrics: list[Metrics] = field(default_factory=list)
    progress: Progress | None = None
    endpoint: Endpoint | None = None
    alerts: list[Alert] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    finished: Finished | None = None
    state: str = ""
    reset: bool = False
    state_changed: bool = False
    throughput: list[float] | None = None
    sweep: Sweep | None = None

    @property
    def empty(self) -> bool:
        return not (
            self.lines or self.phases or self.metrics or self.progress or self.endpoint
            or self.alerts or self.notices or self.finished or self.reset or self.state_changed
            or self.sweep is not None
        )


class RunController:
    """Drives one run and keeps what the monitor shows.

    Args:
        backend: The backend the run uses.
        spec: The resolved spec (None when opening a saved ``record``).
        store: The run store.
        record: A saved run to attach to or replay.
        registry: The run's registry when its supervisor runs in this process
            (a backend without a recipe: a test double).
        launcher: Where new runs' supervisors run (default: a process each).
        log_line_cap: Log lines kept (older ones are dropped).
        flush_interval: Seconds between deliveries to subscribers.
        default_image: The catalog's default image (for image-pull fixes).
    """

    def __init__(
        self,
        backend: Backend,
        spec: ExperimentSpec | None = None,
        *,
        store: RunStore,
        record: RunRecord | None = None,
        registry: CleanupRegistry | None = None,
        launcher: Launcher | None = None,
        log_line_cap: int = DEFAULT_LOG_LINE_CAP,
        flush_interval: float = FLUSH_INTERVAL,
        default_image: str | None = None,
    ) -> None:
        if spec is None and record is not None:
            try:
                spec = record.spec()
            except (OSError, ValueError, KeyError) as exc:
                log.warning("cannot read the spec of %s: %s", record.id, exc)
        self.backend = backend
        self.spec = spec
        self.store = store
        self.record = record
        self.registry = registry
        self.launcher = launcher
        self.flush_interval = flush_interval
        self.default_image = default_image
        self.run: Run | None = None
        self.link: RunLink | None = None
        self.state = record.state if record is not None else "created"
        self.read_only = False
        self.parent: RunController | None = None
        self.fix: Fix | None = None
        self.child: RunController | None = None
        # history (bounded)
        self.logs: deque[LogLine] = deque(maxlen=max(1, int(log_line_cap)))
        self._trim_at = 2 * self.logs.maxlen
        self.log_total = 0
        self.phases: dict[str, Phase] = {}
        self.metrics: Metrics | None = None
        self.throughput: deque[float] = deque(maxlen=METRICS_HISTORY)
        self.progress: Progress | None = None
        self.sweep: Sweep | None = None
        self.endpoint: Endpoint | None = None
        self.alerts: list[Alert] = []
        self.notices: deque[Notice] = deque(maxlen=NOTICES_KEPT)
        self.finished: Finished | None = None
        self.started_at: float | None = record.started if record is not None else None
        # delivery
        self._subscribers: list[Subscriber] = []
        self._pending = EventBatch()
        self._flush_handle: asyncio.TimerHandle | None = None
        self._follow: asyncio.Task | None = None
        self._launched = False
        self._detaching = False
        self._attached = False
        #: ``attach()`` of a lost run follows what it left running again (the runs list's attach key).
        self.adopt_lost = False

    # ------------------------------------------------------------ properties

    @property
    def id(self) -> str:
        if self.run is not None:
            return self.run.id
        if self.spec is not None:
            return self.spec.experiment_id
        return self.record.id if self.record is not None else "run"

    @property
    def live(self) -> bool:
        """True while this client follows a run that is going (something to clean up or detach)."""
        if self.read_only:
            return False
        if self.link is not None:
            return not self.link.closed and not self.link.done
        return self.state == "launching"

    @property
    def needs_replay(self) -> bool:
        """A saved run nobody has loaded yet (the monitor replays or follows it)."""
        return self.record is not None and not self._attached and self.link is None

    @property
    def log_line_cap(self) -> int:
        return self.logs.maxlen or DEFAULT_LOG_LINE_CAP

    def set_log_line_cap(self, cap: int) -> None:
        """Change how many lines are kept (the newest stay)."""
        cap = max(1, int(cap))
        if cap != self.logs.maxlen:
            self.logs = deque(self.logs, maxlen=cap)
        self._trim_at = 2 * cap

    # ----------------------------------------------------------- subscribers

    def subscribe(self, callback: Subscriber, *, replay: bool = True) -> Callable[[], None]:
        """Deliver batches to ``callback``; with ``replay`` it first gets the history as one batch.

        Returns:
            A function that unsubscribes.
        """
        if replay:
            # what is queued is already in the history: deliver it to the others
            # first, or the new subscriber would get it twice
            self.flush()
            callback(self.snapshot())
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def snapshot(self) -> EventBatch:
        """Everything kept so far as one ``reset`` batch."""
        return EventBatch(
            lines=list(self.logs),
            dropped=max(0, self.log_total - len(self.logs)),
            phases=dict(self.phases),
            metrics=[self.metrics] if self.metrics is not None else [],
            progress=self.progress,
            endpoint=self.endpoint,
            alerts=list(self.alerts),
            notices=list(self.notices),
            finished=self.finished,
            state=self.state,
            reset=True,
            throughput=list(self.throughput),
            sweep=self.sweep,
        )

    # ---------------------------------------------------------------- events

    def on_event(self, event: Event) -> None:
        """Fold one event into the history and queue it for the next delivery."""
        pending = self._pending
        if type(event) is LogLine:  # the hot path: one append (history is updated per batch)
            lines = pending.lines
            lines.append(event)
            if len(lines) > self._trim_at:
                self._trim_pending()
            if self._flush_handle is None:
                self._schedule()
            return
        if isinstance(event, Phase):
            self.phases[event.unit] = event
            pending.phases[event.unit] = event  # a burst collapses to the latest per unit
        elif isinstance(event, Metrics):
            self.metrics = event
            self.throughput.append(float(event.output_tokens_per_s or 0.0))
            pending.metrics.append(event)
        elif isinstance(event, Progress):
            self.progress = pending.progress = event
        elif isinstance(event, Sweep):
            # snapshots are complete: only the newest of a burst is worth drawing
            self.sweep = pending.sweep = event
        elif isinstance(event, Endpoint):
            self.endpoint = pending.endpoint = event
        elif isinstance(event, Alert):
            self.alerts.append(event)
            pending.alerts.append(event)
        elif isinstance(event, Notice):
            self.notices.append(event)
            pending.notices.append(event)
        elif isinstance(event, Finished):
            self.finished = pending.finished = event
            self.state = event.outcome
        else:  # an event type a newer backend adds: shown as a notice
            note = Notice(f"{type(event).__name__}: {event}")
            self.notices.append(note)
            pending.notices.append(note)
        self._schedule()

    def _trim_pending(self) -> None:
        """Keep queued lines within the cap while nothing is delivered (a producer that never yields)."""
        lines = self._pending.lines
        cap = self.log_line_cap
        excess = lines[:-cap]
        self.logs.extend(excess)
        self.log_total += len(excess)
        self._pending.dropped += len(excess)
        del lines[:-cap]

    def on_events(self, events) -> None:
        """Fold many events (a replay) at once."""
        for event in events:
            self.on_event(event)

    def on_lines(self, lines: list[LogLine]) -> None:
        """Fold a batch of log lines at once (the supervisor sends them batched)."""
        if not lines:
            return
        pending = self._pending.lines
        pending.extend(lines)
        if len(pending) > self._trim_at:
            self._trim_pending()
        if self._flush_handle is None:
            self._schedule()

    def _schedule(self) -> None:
        if self._flush_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flush_handle = loop.call_later(self.flush_interval, self.flush)

    def flush(self) -> None:
        """Deliver what is queued now (the timer calls this)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        batch, self._pending = self._pending, EventBatch()
        if batch.lines:
            self.logs.extend(batch.lines)
            self.log_total += len(batch.lines)
        cap = self.log_line_cap
        if len(batch.lines) > cap:
            batch.dropped += len(batch.lines) - cap
            del batch.lines[:-cap]
        batch.state = self.state
        if batch.empty:
            return
        for callback in list(self._subscribers):
            try:
                callback(batch)
            except Exception:  # one broken screen must not stop the run being followed
                log.exception("subscriber failed")

    def _set_state(self, state: str) -> None:
        """Change the state; the change alone is worth a delivery (the header shows it)."""
        if state != self.state:
            self.state = state
            self._pending.state_changed = True
            self._schedule()

    # ------------------------------------------------------------- lifecycle

    def _launcher(self) -> Launcher | None:
        """Where a new run's supervisor runs: the injected launcher, else a process of its own
        (or this loop, with this controller's registry, for a backend that has no recipe: a test double)."""
        if self.launcher is not None:
            return self.launcher
        from backends.registry import recipe_of

        if recipe_of(self.backend) is None:
            from backends.supervisor.launcher import InProcessLauncher

            return InProcessLauncher(self.registry)
        return None

    async def launch(self) -> Run:
        """Start the run's supervisor (pre-flight already done); ``start`` then follows it.

        Raises:
            SweepdeckError: the id is taken or the launch failed (nothing is left running).
        """
        if self._launched:
            assert self.run is not None
            return self.run
        if self.spec is None:
            raise SweepdeckError("Nothing to launch: this run has no spec.")
        from backends.base import Run
        from backends.store import RunDir
        from backends.supervisor import start_run

        self._set_state("launching")
        self.started_at = time.time()
        try:
            self.link = await start_run(
                self.backend, self.spec, store=self.store, launcher=self._launcher(), on_event=self.on_event,
                on_events=self.on_lines, default_image=self.default_image,
            )
            info = await self.link.launched()
        except BaseException as exc:
            self._set_state("failed")
            message = exc.message if isinstance(exc, SweepdeckError) else str(exc)
            self.on_event(Finished("failed", f"Launch failed: {message}"))
            self.flush()
            if self.link is not None:
                self.link.close()
            raise
        self.run = Run(info.id, info.backend, self.spec, RunDir(Path(info.path)), info.handle, info.started)
        self._launched = True
        self.started_at = self.run.started
        self._set_state("running")
        return self.run

    async def start(self) -> None:
        """Launch (unless :meth:`launch` already did) and follow the run until it ends."""
        await self.launch()
        await self._follow_link()

    async def _follow_link(self) -> None:
        """Wait for the supervisor's result; the events arrive meanwhile through the link."""
        assert self.link is not None
        # The wait runs in its own task: cancelling the caller's worker (the app quitting)
        # must not be mistaken for the run's end; cleanup/detach end it properly instead.
        self._follow = asyncio.ensure_future(self.link.result())
        try:
            result = await asyncio.shield(self._follow)
        finally:
            self.flush()
        outcome = result.get("outcome") or "failed"
        if outcome in ("detached", "left"):  # this client stopped following; the run goes on
            self._set_state("detached" if outcome == "detached" or self._detaching else self.state)
        else:
            if self.finished is None or outcome == "lost":
                self.on_event(Finished("failed" if outcome == "lost" else outcome, result.get("message") or ""))
            self._set_state(outcome)
        self.link.close()
        self.flush()

    def _reset(self) -> None:
        """A snapshot starts: what follows replaces everything shown."""
        self.logs.clear()
        self.log_total = 0
        self.phases.clear()
        self.metrics = None
        self.throughput.clear()
        self.progress = self.sweep = self.endpoint = self.finished = None
        self.alerts.clear()
        self.notices.clear()
        self._pending = EventBatch(reset=True)
        self._schedule()

    async def attach(self) -> None:
        """Show a saved run: follow it through its supervisor, or replay it read-only if it has ended.

        A run whose supervisor is gone is reconciled first (never shown as running).

        Raises:
            SweepdeckError: the supervisor of a live-looking run cannot be reached (its saved
                events are still shown).
        """
        if self.record is None:
            raise SweepdeckError("Nothing to attach to: no saved run.")
        if self._attached:
            return
        self._attached = True
        from backends.store import LIVE_STATES, RunDir, RunRecord
        from backends.supervisor import SupervisorGone, connect
        from backends.supervisor.reconcile import reconcile_dir

        run_dir = RunDir(self.record.path)
        meta = reconcile_dir(run_dir)
        self.record = RunRecord(self.record.id, self.record.path, meta)
        if self.adopt_lost and any(r.get("kind") != "pid" for r in meta.get("leftovers") or []):
            await self._adopt()
            return
        if meta.get("state") in LIVE_STATES:
            try:
                self.link = await connect(run_dir, on_event=self.on_event, on_events=self.on_lines,
                                          on_reset=self._reset)
            except SupervisorGone:
                meta = reconcile_dir(run_dir, supervisor_gone=True)
                self.record = RunRecord(self.record.id, self.record.path, meta)
            else:
                await self._follow_live(run_dir, meta)
                return
        self._replay(run_dir)

    async def _follow_live(self, run_dir: RunDir, meta: dict[str, Any]) -> None:
        from backends.base import Run
        from backends.supervisor import SupervisorGone

        assert self.link is not None and self.record is not None
        with contextlib.suppress(TimeoutError, SupervisorGone):
            await self.link.status()  # the run's facts (its handle) as the supervisor holds them
        await self.link.follow(snapshot=self.log_line_cap)
        info = self.link.info
        started = info.started if info is not None else float(meta.get("started") or time.time())
        handle = info.handle if info is not None else {}
        self.run = Run(self.record.id, str(meta.get("backend") or self.backend.name), self.spec, run_dir,
                       handle, started)
        self.started_at = meta.get("started") or started
        self._launched = True
        self._set_state("running")  # followed again (a detached run stays detached in the store)
        self.flush()
        await self._follow_link()

    async def _adopt(self) -> None:
        """A lost run whose job or PipelineRun may still be there: follow it again through a new supervisor."""
        from backends.base import Run
        from backends.store import RunDir
        from backends.supervisor import start_run

        assert self.record is not None
        self._set_state("launching")
        try:
            self.link = await start_run(
                self.backend, self.spec or self.record.spec(), store=self.store, launcher=self._launcher(),
                on_event=self.on_event, on_events=self.on_lines, default_image=self.default_image, adopt=self.record,
            )
            info = await self.link.launched()
        except SweepdeckError as exc:
            self.on_event(Notice(f"Cannot follow {self.record.id} again: {exc.message}", "error"))
            self._replay(RunDir(self.record.path))
            raise
        self.run = Run(info.id, info.backend, self.spec, RunDir(Path(info.path)), info.handle, info.started)
        self._launched = True
        self._set_state("running")
        await self._follow_link()

    def _replay(self, run_dir: RunDir) -> None:
        """A run that has ended: its saved events, read-only."""
        assert self.record is not None
        stamps: list[float] = []
        for _end, record in run_dir.records():
            events = expand_record(record)
            if record.get("type") == "LogBatch":
                self.on_lines(events)  # type: ignore[arg-type] # a LogBatch expands to LogLines only
            else:
                for event in events:
                    self.on_event(event)
            if len(stamps) < 50:
                stamps.extend(e.ts for e in events[:50] if getattr(e, "ts", None))
        if stamps:
            # the run began with its first events (or when its record was made, if earlier)
            self.started_at = min([*stamps, *([self.started_at] if self.started_at else [])])
        self.read_only = True
        self._set_state(self.record.state)
        self.flush()

    async def cancel(self) -> None:
        """Ask the run to stop; its events end with a ``cancelled`` Finished."""
        if self.link is None or not self.live:
            return
        self._set_state("cancelling")
        await self.link.cancel(graceful=True, reason="cancelled by the user")

    async def cleanup(self, timeout: float = 10.0, *, graceful: bool = True) -> list:
        """Stop the run and wait, within ``timeout`` seconds, for its supervisor's cleanup.

        A supervisor that does not finish in time gets SIGTERM (it stops the
        run at once and cleans up); one that still hangs is killed — whatever
        it started locally dies with it, and the run is reconciled (what lives
        elsewhere is then listed as its leftovers).

        Args:
            timeout: Seconds the whole stop + cleanup may take.
            graceful: False stops the run at once, skipping its own clean-up
                steps (Tekton ``finally`` tasks); see :meth:`backends.base.Backend.cancel`.
        """
        link = self.link
        if link is None or self.read_only or link.done:
            if self.state in LIVE_STATES or self.state == "created":
                self._set_state("cancelled")
            self.flush()
            return []
        deadline = time.monotonic() + timeout
        self._set_state("cancelling")
        await link.cancel(graceful=graceful, reason="stopped at once" if not graceful else "cleaned up",
                          timeout=max(0.5, timeout * 0.3), within=timeout * 0.8)
        if not await _wait_result(link, deadline - time.monotonic()):
            log.warning("run %s did not stop in time; stopping its supervisor", self.id)
            link.terminate()
            if not await _wait_result(link, 3.0):
                link.terminate(kill=True)
                await _wait_result(link, 1.0)
        if self._follow is not None and not self._follow.done():
            await asyncio.wait([self._follow], timeout=0.5)
        if self.state in LIVE_STATES or self.state == "created":
            self._set_state("cancelled")
        self.flush()
        return []

    async def detach(self) -> str:
        """Let the run go on without this client; returns the command that follows it again."""
        if self.link is None or not self.live:
            return ""
        self._detaching = True
        try:
            command = await self.link.detach()
        except SweepdeckError:
            self._detaching = False
            raise
        self._set_state("detached")
        self.link.close()
        self.flush()
        return command

    # -------------------------------------------------------------- relaunch

    def fixed_spec(self, fix: Fix | ExperimentSpec) -> ExperimentSpec:
        """The spec to relaunch with: ``fix`` applied under a new id, parent recorded."""
        if self.spec is None:
            raise SweepdeckError("This run has no spec to fix.")
        from backends.session import apply_fix
        from config.spec import ExperimentSpec, Source

        if isinstance(fix, Fix):
            return apply_fix(self.spec, fix, self.store)
        if not isinstance(fix, ExperimentSpec):
            raise TypeError(f"fix must be a Fix or an ExperimentSpec, not {type(fix).__name__}")
        new = fix
        if new.experiment_id == self.spec.experiment_id or self.store.exists(new.experiment_id):
            root = re.sub(r"-fix(-\d+)?$", "", self.spec.experiment_id)[:59].rstrip("-")
            new = new.set("experiment_id", self.store.free_id(f"{root}-fix"), Source.AUTO)
        return dataclasses.replace(new, parent=self.spec.experiment_id)

    async def relaunch(self, fix: Fix | ExperimentSpec, *, label: str | None = None) -> RunController:
        """Stop this run (if still live), launch the fixed experiment, and return its controller.

        The new run gets a new experiment id with this one as its parent; the
        fix is recorded in both runs' ``meta.json`` (``fix`` / ``relaunched_as``).
        The returned controller is launched but not yet followed: call its
        :meth:`start` (in a worker) to follow it.

        Raises:
            SweepdeckError: the fix cannot be applied, pre-flight fails, or the launch fails.
        """
        new_spec = self.fixed_spec(fix)
        if self.live:
            await self.cleanup()
        from backends.preflight import run_preflight
        from backends.session import check_preflight

        checks = await run_preflight(self.backend, new_spec, self.store)
        check_preflight(checks, allow_warnings=True)
        child = RunController(
            self.backend, new_spec, store=self.store, registry=self.registry, launcher=self.launcher,
            log_line_cap=self.log_line_cap, flush_interval=self.flush_interval,
            default_image=self.default_image,
        )
        child.parent = self
        if isinstance(fix, Fix):
            child.fix = fix
        else:
            changes = {c.field: c.value for c in _fix_changes(self.spec, new_spec)}
            child.fix = Fix(label or "Custom fix", changes, ", ".join(f"{k}={v}" for k, v in changes.items()))
        await child.launch()
        record = {"label": child.fix.label, "changes": _plain(child.fix.changes), "description": child.fix.description}
        assert child.run is not None
        child.run.store.update_meta(parent=self.id, fix=record)
        with contextlib.suppress(SweepdeckError):  # the old run has no directory (it never launched)
            self.store.open(self.id).update_meta(relaunched_as=child.id, fix=record)
        self.child = child
        child.on_event(Notice(f"Relaunched {self.id} as {child.id} with fix: {child.fix.label}"
                              + (f" ({child.fix.description})" if child.fix.description else "")))
        return child


async def _wait_result(link: RunLink, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for the supervisor's result; True if it came."""
    if link.done:
        return True
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(link.result(), max(0.05, timeout))
    return link.done


def _fix_changes(old: ExperimentSpec | None, new: ExperimentSpec) -> list:
    if old is None:
        return []
    try:
        return [c for c in new.diff(old) if c.field not in ("experiment_id", "parent")]
    except Exception:  # the record is informative only
        return []


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


__all__ = ["DEFAULT_LOG_LINE_CAP", "EventBatch", "RunController"]
