"""The lifecycle engine: one experiment from launch to cleanup, inside its supervisor.

One experiment goes through the same steps whoever watches it::

    run dir in the RunStore ─► launch ─► events … Finished ─► cleanup registry once (bounded)
                                            │
                             cancel (graceful or at once) ──┘

:class:`Session` runs them; it lives in the run's supervisor
(:mod:`backends.supervisor`), never in the process that draws the run.
Every event the backend yields is appended to the run's ``events.jsonl`` and
handed to ``on_event``; every :class:`LogLine` goes through
:mod:`backends.diagnosis`, which adds one :class:`Alert` per distinct failure
(with fixes computed from the spec). The run's ``meta.json`` follows the
state: ``created`` → ``running`` → ``succeeded`` / ``failed`` / ``cancelled``.

Every backend takes ``launch(spec, store)``: the run directory is made here
(or by the client that started the supervisor) before the backend is asked
to create anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from backends import diagnosis as dg
from backends.base import Check, Run, blocking
from backends.cleanup import CleanupRegistry
from backends.events import Alert, Event, Finished, Fix, LogLine, Notice
from backends.store import EventLog, StoreWriteError
from config.errors import SweepdeckError

if TYPE_CHECKING:
    from backends.base import Backend
    from backends.store import RunDir, RunRecord, RunStore
    from config.spec import ExperimentSpec

log = logging.getLogger(__name__)

EventSink = Callable[[Event], Any]

#: Seconds the whole cleanup (backend cleanup + registry) may take.
CLEANUP_TIMEOUT = 10.0
#: Log lines read by the diagnosis in one batch, at the latest after :data:`DIAGNOSE_AFTER` seconds:
#: one pass over a batch costs ~0.3 µs a line where reading line by line costs ~5 µs.
DIAGNOSE_BATCH = 512
DIAGNOSE_AFTER = 0.05
#: Seconds a backend gets to end its events after ``cancel`` before the driver stops following.
CANCEL_GRACE = 5.0

EXIT_OK = 0
EXIT_FAILED = 1


class PreflightFailed(SweepdeckError):
    """Pre-flight found a blocking problem (or warnings nobody accepted)."""

    exit_code = 3

    def __init__(self, message: str, hint: str, checks: list[Check]) -> None:
        super().__init__(message, hint)
        self.checks = checks


@dataclass(slots=True)
class SessionResult:
    """How a driven session ended.

    Args:
        outcome: ``succeeded``, ``failed``, ``cancelled`` or ``detached``.
        message: One line for the user.
        run: The run (None when it never launched).
        finished: The final Finished event.
        alerts: Every diagnosis Alert raised during the run.
        signal: The signal that ended it, if any.
    """

    outcome: str
    message: str = ""
    run: Run | None = None
    finished: Finished | None = None
    alerts: list[Alert] = field(default_factory=list)
    signal: int | None = None

    @property
    def exit_code(self) -> int:
        if self.outcome in ("succeeded", "detached"):  # detached: the client left a run that goes on
            return EXIT_OK
        if self.signal:
            return 128 + int(self.signal)
        return EXIT_FAILED


def check_preflight(checks: list[Check], *, allow_warnings: bool) -> None:
    """Raise unless the checks allow a launch.

    Args:
        checks: Pre-flight results.
        allow_warnings: The user accepted the warnings (``--yes``, a confirm
            prompt, the TUI's override).

    Raises:
        PreflightFailed: a check failed, or a warning was not accepted. The
            message lists every such check; the hint their fixes.
    """
    failing = blocking(checks)
    if failing:
        names = "; ".join(f"{c.name}: {c.detail}" if c.detail else c.name for c in failing)
        fixes = [c.fix for c in failing if c.fix]
        raise PreflightFailed(
            f"Pre-flight failed ({len(failing)} blocking): {names}.",
            " ".join(fixes) or "Fix the failing checks and try again.",
            failing,
        )
    warns = [c for c in checks if c.status == "warn"]
    if warns and not allow_warnings:
        names = "; ".join(f"{c.name}: {c.detail}" if c.detail else c.name for c in warns)
        raise PreflightFailed(
            f"Pre-flight warnings need your confirmation: {names}.",
            "Accept them with --yes (or answer the prompt on a terminal).",
            warns,
        )


class Session:
    """One experiment's lifecycle, step by step (run by its supervisor).

    Args:
        backend: The backend to drive.
        spec: The resolved spec.
        store: Run store (default: the XDG one).
        run_dir: The run directory, when the client made it already (else
            :meth:`launch` makes it in ``store``).
        on_event: Called with every event, after it is saved.
        registry: Cleanup registry (a new one by default: one run, one registry).
        cleanup_timeout: Bound on cleanup in seconds.
        default_image: Catalog default image, for image-pull fixes.
        pace: Awaited every :data:`DIAGNOSE_BATCH` log lines: the supervisor holds the backend
            there for a bounded moment while a client's socket is full (see ``Supervisor._pace``).
    """

    def __init__(
        self,
        backend: Backend,
        spec: ExperimentSpec,
        *,
        store: RunStore | None = None,
        run_dir: RunDir | None = None,
        on_event: EventSink | None = None,
        registry: CleanupRegistry | None = None,
        cleanup_timeout: float = CLEANUP_TIMEOUT,
        default_image: str | None = None,
        pace: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        if store is None:
            from backends.store import RunStore

            store = RunStore()
        self.backend = backend
        self.spec = spec
        self.store = store
        self.run_dir = run_dir
        self.on_event = on_event
        self.registry = registry if registry is not None else CleanupRegistry()
        self.cleanup_timeout = cleanup_timeout
        self.default_image = default_image
        self.pace = pace
        self.run: Run | None = None
        self.checks: list[Check] = []
        self.alerts: list[Alert] = []
        self.finished: Finished | None = None
        self.signal: int | None = None
        self.store_error: StoreWriteError | None = None
        self._diagnosed: set[str] = set()
        self._held: list[dg.Diagnosis] = []  # secondary diagnoses, reported only if nothing better shows up
        # Reads the run's log with context: the start-up settings and phase, and the
        # root cause above an engine's "see root cause above".
        self._reader = dg.LogDiagnoser()
        self._to_diagnose: list[str] = []  # log lines emitted but not read by the diagnosis yet
        self._diagnose_timer: asyncio.TimerHandle | None = None
        self._cancel_reason: str | None = None
        self._cancel_graceful = True
        self._stopping = asyncio.Event()  # set by the first stop request
        self._abandon_at = float("inf")  # loop time after which a stream that has not ended is abandoned
        self._pump: asyncio.Task | None = None
        self.closed = False
        self._primary_seen = False

    # ----------------------------------------------------------- preflight

    async def preflight(self) -> list[Check]:
        """Run the pre-flight checks (the backend's and the shared ones); changes nothing."""
        from backends.preflight import run_preflight

        self.checks = await run_preflight(self.backend, self.spec, self.store)
        return self.checks

    # -------------------------------------------------------------- launch

    async def launch(self) -> Run:
        """Create the run directory (unless given) and start the experiment.

        Raises:
            SweepdeckError: experiment id already used, or the launch failed
                (whatever it created is cleaned up first).
        """
        run_dir = self.run_dir or self.store.create(self.spec, backend=self.backend.name)
        self.run_dir = run_dir
        try:
            run_dir.update_meta(state="launching")
            run = await self.backend.launch(self.spec, run_dir)
        except BaseException as exc:
            state = "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"
            message = exc.message if isinstance(exc, SweepdeckError) else f"launch failed: {exc}"
            with contextlib.suppress(SweepdeckError):
                run_dir.append_event(Finished("failed", message))
                run_dir.update_meta(state=state, finished=time.time(), message=message)
            run_dir.close()
            await self._run_registry()
            raise
        self.run = run
        self._write_handle(run)
        run.store.update_meta(state="running", launched=time.time())
        await self._emit(Notice(f"Launched {run.id} on {run.backend}; run directory {run.store.path}"))
        return run

    async def adopt(self, record: RunRecord) -> Run:
        """Follow a run again whose supervisor is gone (``backend.attach``), instead of launching one.

        Raises:
            SweepdeckError: the backend cannot re-open it (its job or server is gone).
        """
        run = await self.backend.attach(record)
        if self.run_dir is not None and run.store.path == self.run_dir.path:
            # The backend opened the run's directory again; write through the one given (the supervisor's):
            # its clients are fed from that one's event log, and one file must not have two writers.
            run.store = self.run_dir
        self.run = run
        self.run_dir = run.store
        run.store.update_meta(state="running", reattached=time.time())
        await self._emit(Notice(f"Re-attached to {run.id} on {run.backend}"))
        return run

    def _write_handle(self, run: Run) -> None:
        values: dict[str, Any] = {"RUN_ID": run.id, "BACKEND": run.backend, "STARTED": f"{run.started:.3f}"}
        for key, value in (run.handle or {}).items():
            name = re.sub(r"[^A-Z0-9_]", "_", str(key).upper())
            if not re.match(r"[A-Z_]", name):
                name = "H_" + name
            text = "" if value is None else str(value)
            if "\n" not in text:
                values[name] = text
        existing = run.store.read_handle()
        existing.update({k: str(v) for k, v in values.items()})
        run.store.write_handle(existing)

    # -------------------------------------------------------------- follow

    async def follow(self) -> SessionResult:
        """Consume the run's events until Finished (or a stop); then clean up.

        A stop (:meth:`request_cancel`) asks the backend to cancel; a backend
        whose event stream does not end by the stop's deadline is abandoned
        (cancelled; left alone if it even swallows that), so the cleanup
        always runs within the bound the stop asked for.
        """
        if self.run is None:
            raise RuntimeError("launch() first")
        loop = asyncio.get_running_loop()
        pump = self._pump = asyncio.create_task(self._pump_events(self.run))
        if self._cancel_reason is not None:  # asked for while launching
            loop.create_task(self._cancel_run())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait([pump, stopping], return_when=asyncio.FIRST_COMPLETED)
            while not pump.done() and loop.time() < self._abandon_at:
                # the deadline can move closer while waiting (the backend acknowledged the cancel)
                await asyncio.wait([pump], timeout=min(0.1, max(0.0, self._abandon_at - loop.time())))
            if not pump.done():
                log.warning("the backend did not end its events after the stop; abandoning them")
                pump.cancel()
                await asyncio.wait([pump], timeout=0.2)
        except asyncio.CancelledError:
            # The caller was cancelled (the supervisor is stopping): stop the run, clean up, propagate.
            self.request_cancel("the supervisor stopped", within=3.0)
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._settle(pump)), 3.0)
            raise
        finally:
            stopping.cancel()
        if pump.done() and not pump.cancelled() and pump.exception() is not None:
            exc = pump.exception()
            log.error("event stream failed: %s", exc)
            if self.finished is None:
                await self._finish(Finished("failed", f"event stream failed: {exc}"))
        if self.finished is None:
            await self._flush_held()
            await self._finish(Finished("cancelled", self._reason()))
        return await self.close()

    async def _settle(self, pump: asyncio.Task) -> SessionResult:
        if not pump.done():
            pump.cancel()
            await asyncio.wait([pump], timeout=0.2)
        if self.finished is None:
            await self._finish(Finished("cancelled", self._reason()))
        return await self.close()

    def _reason(self) -> str:
        """Why the run was stopped, as a sentence (``Stopped by SIGINT``)."""
        reason = self._cancel_reason or "cancelled"
        return reason[:1].upper() + reason[1:]

    async def _pump_events(self, run: Run) -> None:
        agen = self.backend.events(run)
        # the event log's own append when the run's store is a RunDir (one call less per line)
        log = getattr(run.store, "log", None)
        append = log.append if isinstance(log, EventLog) else run.store.append_event
        try:
            async for event in agen:
                if type(event) is LogLine:
                    # the hot path, inline (no coroutine per line): saved, folded, queued for the diagnosis
                    try:
                        append(event)
                    except StoreWriteError as exc:
                        await self._store_failed(exc)
                    on_event = self.on_event
                    if on_event is not None:
                        result = on_event(event)
                        if result is not None and inspect.isawaitable(result):
                            await result
                    pending = self._to_diagnose
                    pending.append(event.text)
                    if len(pending) >= DIAGNOSE_BATCH:
                        await self._diagnose_pending()
                        if self.pace is not None:
                            await self.pace()
                    elif self._diagnose_timer is None:
                        self._diagnose_timer = asyncio.get_running_loop().call_later(
                            DIAGNOSE_AFTER, lambda: asyncio.ensure_future(self._diagnose_pending()))
                    continue
                if isinstance(event, Finished):
                    await self._diagnose_pending()
                    await self._flush_held()
                    await self._finish(self._explain(event))
                    return
                await self._diagnose_pending()  # the lines before this event are read first
                await self._emit(event)
                if isinstance(event, Alert) and event.diagnosis:
                    self._diagnosed.add(event.diagnosis)
                    rule = dg.RULES_BY_ID.get(event.diagnosis)
                    if rule is None or not rule.secondary:
                        self._primary_seen = True
                    self.alerts.append(event)
        except asyncio.CancelledError:
            await self._diagnose_pending()
            await self._flush_held()
            await self._finish(Finished("cancelled", self._reason()))
            raise
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(BaseException):  # best effort close of the backend's generator
                    await asyncio.wait_for(aclose(), timeout=2.0)
        if self.finished is None:
            await self._diagnose_pending()
            await self._flush_held()
            await self._finish(Finished("failed", "the backend's event stream ended without a result"))

    def _explain(self, event: Finished) -> Finished:
        """A run stopped on request says why (a signal, the last client gone), keeping what the backend reported."""
        if self.store_error is not None and event.outcome in ("failed", "cancelled"):
            return Finished("failed", f"{self.store_error.message} The run was stopped.", event.results, event.summary)
        if self._cancel_reason and event.outcome in ("failed", "cancelled"):
            message = f"{self._cancel_reason[:1].upper()}{self._cancel_reason[1:]}: {event.message}".rstrip(": ")
            return Finished("cancelled", message, event.results, event.summary)
        return event

    async def _diagnose_pending(self) -> None:
        """Read the log lines emitted since the last time, in one batch (see LogDiagnoser.feed_many)."""
        if self._diagnose_timer is not None:
            self._diagnose_timer.cancel()
            self._diagnose_timer = None
        if not self._to_diagnose:
            return
        texts, self._to_diagnose = self._to_diagnose, []
        for found in self._reader.feed_many(texts):
            await self._diagnosed_one(found)

    async def _diagnosed_one(self, found: dg.Diagnosis) -> None:
        if found.rule_id in self._diagnosed:
            return
        if found.secondary:
            if all(h.rule_id != found.rule_id for h in self._held):
                self._held.append(found)
            return
        await self._raise(found)

    async def _raise(self, found: dg.Diagnosis) -> None:
        self._diagnosed.add(found.rule_id)
        if not found.secondary:
            self._primary_seen = True
        alert = dg.alert_for(found, self.spec, default_image=self.default_image)
        self.alerts.append(alert)
        await self._emit(alert)

    async def _flush_held(self) -> None:
        """Report held secondary diagnoses when nothing more specific was seen."""
        held, self._held = self._held, []
        if not self._primary_seen:
            for found in held:
                if found.rule_id not in self._diagnosed:
                    await self._raise(found)

    async def _emit(self, event: Event) -> None:
        if self.run is not None:
            try:
                self.run.store.append_event(event)  # after a failure it still reaches the live clients
            except StoreWriteError as exc:
                await self._store_failed(exc)
        if self.on_event is not None:
            result = self.on_event(event)
            if result is not None and inspect.isawaitable(result):
                await result

    async def _store_failed(self, exc: StoreWriteError) -> None:
        """The run's files cannot be written: nothing it measures could be kept, so it stops."""
        if self.store_error is not None:
            return
        self.store_error = exc
        log.error("run store write failed: %s", exc.message)
        if self.run_dir is not None:
            self.run_dir.release_reserve()  # room for meta.json to say how the run ended
        self.request_cancel("the run store cannot be written")
        await self._emit(Notice(f"{exc.message} Stopping the run. {exc.hint}", "error"))

    async def _finish(self, event: Finished) -> None:
        if self.finished is not None:
            return
        if event.outcome == "failed" and not event.message and self.alerts:
            event = dataclasses.replace(event, message=self.alerts[0].message)
        self.finished = event
        await self._emit(event)
        if self.run is not None:
            meta: dict[str, Any] = {"state": event.outcome, "message": event.message, "finished": time.time()}
            if event.results:
                meta["results"] = event.results
            if event.summary:
                meta["summary"] = event.summary
            if self.alerts:
                meta["diagnoses"] = [a.diagnosis for a in self.alerts if a.diagnosis]
            try:
                self.run.store.update_meta(**meta)
                self.run.store.flush()
            except StoreWriteError as exc:
                await self._store_failed(exc)

    # ------------------------------------------------------------- cancel

    def request_cancel(self, reason: str = "cancelled by the user", sig: int | None = None, *,
                       graceful: bool = True, within: float | None = None) -> None:
        """Ask the run to stop (safe to call from a signal handler, more than once).

        Args:
            reason: Why (it becomes the Finished message).
            sig: The signal that asked, if any.
            graceful: False asks the backend to skip its own clean-up steps (see
                :meth:`backends.base.Backend.cancel`); the cleanup registry runs either way.
                A second request with False escalates a graceful stop.
            within: Seconds the whole stop and cleanup may take from now (the
                default allows the backend :data:`CANCEL_GRACE` plus the cleanup timeout).
        """
        loop = asyncio.get_running_loop()
        if within is not None:
            # the tightest bound asked for wins: split it between the stream's end and the cleanup
            self._abandon_at = min(self._abandon_at, loop.time() + within * 0.4)
            self.cleanup_timeout = min(self.cleanup_timeout, max(0.3, within * 0.55))
        if self._cancel_reason is not None:
            if not graceful and self._cancel_graceful and self.run is not None:
                # a harder second request (a second Ctrl+C): stop at once, skipping the run's own clean-up steps
                self._cancel_graceful = False
                loop.create_task(self._cancel_now())
            return
        self._cancel_reason = reason
        self._cancel_graceful = graceful
        if within is None and not self._drains():
            self._abandon_at = min(self._abandon_at, loop.time() + CANCEL_GRACE + 1.0)
        if sig is not None:
            self.signal = sig
        self._stopping.set()
        if self.run is not None and self._pump is not None and not self._pump.done():
            loop.create_task(self._cancel_run())

    async def _cancel_run(self) -> None:
        assert self.run is not None
        budget = max(0.1, min(CANCEL_GRACE, self._abandon_at - asyncio.get_running_loop().time()))
        try:
            await asyncio.wait_for(self.backend.cancel(self.run, graceful=self._cancel_graceful), timeout=budget)
        except BaseException as exc:  # cancel is best effort; cleanup follows
            log.warning("cancel failed: %s", exc)
        if not self._drains():
            # the backend has been told: a moment for it to report its own cancelled Finished, then the cleanup
            self._abandon_at = min(self._abandon_at, asyncio.get_running_loop().time() + 1.0)

    def _drains(self) -> bool:
        """A graceful stop that lets the run's own clean-up steps finish (their events are followed to the end)."""
        return self._cancel_graceful and bool(getattr(self.backend, "graceful_cancel_drains", False))

    async def _cancel_now(self) -> None:
        assert self.run is not None
        self._abandon_at = min(self._abandon_at, asyncio.get_running_loop().time() + CANCEL_GRACE + 1.0)
        try:
            await asyncio.wait_for(self.backend.cancel(self.run, graceful=False), timeout=CANCEL_GRACE)
        except BaseException as exc:  # best effort; the registry's cleanup follows anyway
            log.warning("cancel (at once) failed: %s", exc)

    @property
    def cancelled(self) -> bool:
        return self._cancel_reason is not None

    # ------------------------------------------------------------- cleanup

    async def close(self) -> SessionResult:
        """Clean up exactly once, bounded; returns the result."""
        if not self.closed:
            self.closed = True
            deadline = time.monotonic() + self.cleanup_timeout
            if self.run is not None:
                try:
                    await asyncio.wait_for(self.backend.cleanup(self.run), timeout=self.cleanup_timeout * 0.8)
                except BaseException as exc:  # the registry still runs
                    log.warning("backend cleanup failed: %s", exc)
            await self._run_registry(max(0.2, deadline - time.monotonic()))
            if self.run is not None:
                with contextlib.suppress(StoreWriteError):
                    self.run.store.close()
        finished = self.finished or Finished("failed", "no result")
        return SessionResult(
            outcome=finished.outcome,
            message=finished.message,
            run=self.run,
            finished=finished,
            alerts=list(self.alerts),
            signal=self.signal if finished.outcome == "cancelled" else None,
        )

    async def _run_registry(self, timeout: float | None = None) -> None:
        outcomes = await self.registry.run(self.cleanup_timeout if timeout is None else timeout)
        for outcome in outcomes:
            if not outcome.ok:
                await self._emit(Notice(f"cleanup {outcome.label}: {outcome.error}", "warning"))
        left = self.registry.unresolved()
        if left and self.run is not None:
            # the run's record must not say "cancelled, nothing left" while a job may still run:
            # `sweepdeck runs` lists these and `runs --clean` removes them
            with contextlib.suppress(StoreWriteError):
                self.run.store.update_meta(leftovers=left)


# ------------------------------------------------------------------ relaunch


def apply_fix(spec: ExperimentSpec, fix: Fix | dict[str, Any], store: RunStore | None = None) -> ExperimentSpec:
    """The spec with a recovery fix applied, under a new experiment id.

    Every change is recorded with :attr:`Source.FIX`; the new spec's
    ``parent`` is the failed experiment's id and its id is
    ``<parent>-fix`` (``-fix-2``... when taken).
    """
    from config.spec import Source

    changes = fix.changes if isinstance(fix, Fix) else dict(fix)
    if not changes:
        raise SweepdeckError("This suggestion has no automatic change.", "Change the spec yourself and launch again.")
    new = spec
    for path, value in changes.items():
        new = new.set(path, value, Source.FIX)
    root = re.sub(r"-fix(-\d+)?$", "", spec.experiment_id)[:59].rstrip("-")
    candidate = f"{root}-fix"
    if store is None:
        from backends.store import RunStore

        store = RunStore()
    new_id = store.free_id(candidate)
    new = new.set("experiment_id", new_id, Source.AUTO)
    return dataclasses.replace(new, parent=spec.experiment_id)


__all__ = ["CLEANUP_TIMEOUT", "PreflightFailed", "Session", "SessionResult", "apply_fix", "check_preflight"]
