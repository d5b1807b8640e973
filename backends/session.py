"""The lifecycle driver shared by the TUI and the headless CLI.

One experiment goes through the same steps whoever watches it::

    preflight ─► (confirm) ─► run dir in the RunStore ─► launch ─► events … Finished ─► cleanup
                                                            │
                                         signal / cancel ───┤── cancel, cleanup registry once (bounded)
                                                  detach ───┘── keep the run and its session file

:class:`Session` holds the steps for a caller that wants to interleave its own
UI (the TUI shows pre-flight checks, then asks); :func:`drive` runs them all
for the headless CLI. Every event the backend yields is appended to the run's
``events.jsonl`` and handed to ``on_event``; every :class:`LogLine` goes
through :mod:`backends.diagnosis`, which adds one :class:`Alert` per distinct
failure (with fixes computed from the spec). The run's ``meta.json`` follows
the state: ``created`` → ``running`` → ``succeeded`` / ``failed`` /
``cancelled`` / ``detached``.

Backends receive the run directory as ``launch(spec, store=run_dir)`` when
their ``launch`` accepts a ``store`` argument; a backend whose ``launch(spec)``
takes only the spec creates its own run directory (the driver then only
checks the experiment id for a collision first). A backend may also define
``async detach(run)``: the driver awaits it before it stops following a run it
detaches from (the local backend hands its server's output to a log file).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import re
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from backends import diagnosis as dg
from backends.base import Check, Run, blocking
from backends.cleanup import REGISTRY, CleanupRegistry, install_signal_handlers
from backends.events import Alert, Event, Finished, Fix, LogLine, Notice
from config.errors import SweepdeckError

if TYPE_CHECKING:
    from backends.base import Backend
    from backends.store import RunStore
    from config.spec import ExperimentSpec

log = logging.getLogger(__name__)

EventSink = Callable[[Event], Any]

#: Seconds the whole cleanup (backend cleanup + registry) may take.
CLEANUP_TIMEOUT = 10.0
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
        if self.outcome in ("succeeded", "detached"):
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
    """One experiment's lifecycle, step by step.

    Args:
        backend: The backend to drive.
        spec: The resolved spec.
        store: Run store (default: the XDG one).
        on_event: Called with every event, after it is saved.
        registry: Cleanup registry (the process-wide one by default).
        cleanup_timeout: Bound on cleanup in seconds.
        default_image: Catalog default image, for image-pull fixes.
    """

    def __init__(
        self,
        backend: "Backend",
        spec: "ExperimentSpec",
        *,
        store: "RunStore | None" = None,
        on_event: EventSink | None = None,
        registry: CleanupRegistry = REGISTRY,
        cleanup_timeout: float = CLEANUP_TIMEOUT,
        default_image: str | None = None,
    ) -> None:
        if store is None:
            from backends.store import RunStore

            store = RunStore()
        self.backend = backend
        self.spec = spec
        self.store = store
        self.on_event = on_event
        self.registry = registry
        self.cleanup_timeout = cleanup_timeout
        self.default_image = default_image
        self.run: Run | None = None
        self.checks: list[Check] = []
        self.alerts: list[Alert] = []
        self.finished: Finished | None = None
        self.signal: int | None = None
        self._diagnosed: set[str] = set()
        self._held: list[dg.Diagnosis] = []  # secondary diagnoses, reported only if nothing better shows up
        # Reads the run's log with context: the start-up settings and phase, and the
        # root cause above an engine's "see root cause above".
        self._reader = dg.LogDiagnoser()
        self._cancel_reason: str | None = None
        self._cancel_graceful = True
        self._detach = False
        self._pump: asyncio.Task | None = None
        self._closed = False
        self._primary_seen = False

    # ----------------------------------------------------------- preflight

    async def preflight(self) -> list[Check]:
        """Run the backend's pre-flight checks (changes nothing)."""
        self.checks = list(await self.backend.preflight(self.spec))
        return self.checks

    # -------------------------------------------------------------- launch

    async def launch(self) -> Run:
        """Create the run directory and start the experiment.

        Raises:
            SweepdeckError: experiment id already used, or the launch failed
                (whatever it created is cleaned up first).
        """
        run_dir = None
        accepts_store = "store" in inspect.signature(self.backend.launch).parameters
        if accepts_store:
            run_dir = self.store.create(self.spec, backend=self.backend.name)
        elif self.store.exists(self.spec.experiment_id):
            self.store.create(self.spec, backend=self.backend.name)  # raises the collision error
        try:
            if accepts_store:
                run = await self.backend.launch(self.spec, store=run_dir)
            else:
                run = await self.backend.launch(self.spec)
        except BaseException as exc:
            if run_dir is not None:
                state = "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"
                message = exc.message if isinstance(exc, SweepdeckError) else f"launch failed: {exc}"
                run_dir.update_meta(state=state, finished=time.time(), message=message)
                run_dir.append_event(Finished("failed", message))
                run_dir.close()
            await self._run_registry()
            raise
        self.run = run
        self._write_session(run)
        run.store.update_meta(state="running", launched=time.time())
        await self._emit(Notice(f"Launched {run.id} on {run.backend}; run directory {run.store.path}"))
        return run

    def _write_session(self, run: Run) -> None:
        values: dict[str, Any] = {"RUN_ID": run.id, "BACKEND": run.backend, "STARTED": f"{run.started:.3f}"}
        for key, value in (run.handle or {}).items():
            name = re.sub(r"[^A-Z0-9_]", "_", str(key).upper())
            if not re.match(r"[A-Z_]", name):
                name = "H_" + name
            text = "" if value is None else str(value)
            if "\n" not in text:
                values[name] = text
        existing = run.store.read_session()
        existing.update({k: str(v) for k, v in values.items()})
        run.store.write_session(existing)

    # -------------------------------------------------------------- follow

    async def follow(self) -> SessionResult:
        """Consume the run's events until Finished (or cancel/detach); then clean up."""
        if self.run is None:
            raise RuntimeError("launch() first")
        self._pump = asyncio.create_task(self._pump_events(self.run))
        if self._cancel_reason is not None:  # asked for while launching
            asyncio.get_running_loop().create_task(self._cancel_run())
        elif self._detach:
            asyncio.get_running_loop().create_task(self._detach_run())
        try:
            await asyncio.shield(self._pump)
        except asyncio.CancelledError:
            if self._pump.done():
                pass  # the pump itself was cancelled (cancel/detach): normal
            else:
                # The caller was cancelled (TUI closing): cancel the run, clean up, propagate.
                self.request_cancel("session closed")
                await asyncio.wait([self._pump], timeout=CANCEL_GRACE + 1.0)
                if not self._pump.done():
                    self._pump.cancel()
                    await asyncio.wait([self._pump], timeout=1.0)
                await self.close()
                raise
        except Exception as exc:  # a backend bug must not leave things running
            log.exception("event stream failed")
            if self.finished is None:
                await self._finish(Finished("failed", f"event stream failed: {exc}"))
        return await self.close()

    async def _pump_events(self, run: Run) -> None:
        agen = self.backend.events(run)
        try:
            async for event in agen:
                if isinstance(event, Finished):
                    await self._flush_held()
                    if self._cancel_reason and event.outcome in ("failed", "cancelled"):
                        # say why it stopped (a signal), keeping what the backend reported
                        message = f"{self._cancel_reason[:1].upper()}{self._cancel_reason[1:]}: {event.message}".rstrip(": ")
                        event = Finished("cancelled", message, event.results, event.summary)
                    await self._finish(event)
                    return
                await self._emit(event)
                if isinstance(event, LogLine):
                    await self._diagnose(event.text)
                elif isinstance(event, Alert) and event.diagnosis:
                    self._diagnosed.add(event.diagnosis)
                    rule = dg.RULES_BY_ID.get(event.diagnosis)
                    if rule is None or not rule.secondary:
                        self._primary_seen = True
                    self.alerts.append(event)
        except asyncio.CancelledError:
            if self._detach:
                await self._finish(
                    Finished("detached", f"Detached from {run.id}; it keeps running. Reattach with: sweepdeck attach {run.id}")
                )
            else:
                await self._flush_held()
                await self._finish(Finished("cancelled", self._cancel_reason or "cancelled"))
            raise
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                try:
                    await asyncio.wait_for(aclose(), timeout=2.0)
                except BaseException:  # noqa: BLE001 - best effort close of the backend's generator
                    pass
        if self.finished is None and self._detach:
            # the backend's detach hook ended its stream: that is the detach, not a failure
            await self._finish(
                Finished("detached", f"Detached from {run.id}; it keeps running. Reattach with: sweepdeck attach {run.id}")
            )
        if self.finished is None:
            await self._flush_held()
            await self._finish(Finished("failed", "the backend's event stream ended without a result"))

    async def _diagnose(self, text: str) -> None:
        found = self._reader.feed(text)
        if found is None or found.rule_id in self._diagnosed:
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
                self.run.store.append_event(event)
            except OSError as exc:  # a full disk must not stop the run being watched
                log.warning("cannot save event: %s", exc)
        if self.on_event is not None:
            result = self.on_event(event)
            if inspect.isawaitable(result):
                await result

    async def _finish(self, event: Finished) -> None:
        if self.finished is not None:
            return
        if event.outcome == "failed" and not event.message and self.alerts:
            event = dataclasses.replace(event, message=self.alerts[0].message)
        self.finished = event
        await self._emit(event)
        if self.run is not None:
            meta: dict[str, Any] = {"state": event.outcome, "message": event.message}
            if event.outcome != "detached":
                meta["finished"] = time.time()
            if event.results:
                meta["results"] = event.results
            if event.summary:
                meta["summary"] = event.summary
            if self.alerts:
                meta["diagnoses"] = [a.diagnosis for a in self.alerts if a.diagnosis]
            self.run.store.update_meta(**meta)
            self.run.store.flush()

    # ------------------------------------------------------ cancel / detach

    def request_cancel(self, reason: str = "cancelled by the user", sig: int | None = None, *,
                       graceful: bool = True) -> None:
        """Ask the run to stop (safe to call from a signal handler, more than once).

        ``graceful=False`` asks the backend to skip its own clean-up steps
        (see :meth:`backends.base.Backend.cancel`); the cleanup registry runs either way.
        """
        if self._cancel_reason is not None:
            if not graceful and self._cancel_graceful and self.run is not None:
                # a harder second request (a second Ctrl+C): stop at once, skipping the run's own clean-up steps
                self._cancel_graceful = False
                asyncio.get_running_loop().create_task(self._cancel_now())
            return
        self._cancel_reason = reason
        self._cancel_graceful = graceful
        if sig is not None:
            self.signal = sig
        if self.run is not None and self._pump is not None and not self._pump.done():
            asyncio.get_running_loop().create_task(self._cancel_run())

    async def _cancel_run(self) -> None:
        assert self.run is not None
        try:
            await asyncio.wait_for(self.backend.cancel(self.run, graceful=self._cancel_graceful), timeout=CANCEL_GRACE)
        except BaseException as exc:  # noqa: BLE001 - cancel is best effort; cleanup follows
            log.warning("cancel failed: %s", exc)
        if self._pump is not None and not self._pump.done():
            # give the backend a moment to report its own cancelled Finished
            await asyncio.wait([self._pump], timeout=1.0)
            if not self._pump.done():
                self._pump.cancel()

    async def _cancel_now(self) -> None:
        assert self.run is not None
        try:
            await asyncio.wait_for(self.backend.cancel(self.run, graceful=False), timeout=CANCEL_GRACE)
        except BaseException as exc:  # noqa: BLE001 - best effort; the registry's cleanup follows anyway
            log.warning("cancel (at once) failed: %s", exc)

    def request_detach(self) -> None:
        """Stop following; keep the run (and its session file) for ``attach``."""
        if self._detach or self._cancel_reason is not None:
            return
        self._detach = True
        if self.run is not None and self._pump is not None and not self._pump.done():
            asyncio.get_running_loop().create_task(self._detach_run())

    async def _detach_run(self) -> None:
        # An optional backend hook: prepare the run to live on without this
        # session (the local backend hands its server's output to a log file).
        hook = getattr(self.backend, "detach", None)
        if hook is not None and self.run is not None:
            try:
                await asyncio.wait_for(hook(self.run), timeout=CANCEL_GRACE)
            except BaseException as exc:  # noqa: BLE001 - detaching goes ahead regardless
                log.warning("detach hook failed: %s", exc)
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancel_reason is not None

    # ------------------------------------------------------------- cleanup

    async def close(self) -> SessionResult:
        """Clean up (or detach) exactly once, bounded; returns the result."""
        if not self._closed:
            self._closed = True
            if self._detach:
                kept = self.registry.detach()
                if self.run is not None:
                    self.run.detached = True
                    self.run.store.update_meta(state="detached", kept=kept)
                await self._run_registry()  # the non-detachable rest (listeners, connections)
            else:
                deadline = time.monotonic() + self.cleanup_timeout
                if self.run is not None:
                    try:
                        await asyncio.wait_for(self.backend.cleanup(self.run), timeout=self.cleanup_timeout * 0.8)
                    except BaseException as exc:  # noqa: BLE001 - the registry still runs
                        log.warning("backend cleanup failed: %s", exc)
                await self._run_registry(max(1.0, deadline - time.monotonic()))
            if self.run is not None:
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


async def drive(
    backend: "Backend",
    spec: "ExperimentSpec",
    *,
    store: "RunStore | None" = None,
    on_event: EventSink | None = None,
    on_checks: Callable[[list[Check]], Any] | None = None,
    confirm: Callable[[list[Check]], bool] | None = None,
    assume_yes: bool = False,
    install_signals: bool = True,
    detach_on_signal: bool = False,
    registry: CleanupRegistry = REGISTRY,
    cleanup_timeout: float = CLEANUP_TIMEOUT,
    default_image: str | None = None,
) -> SessionResult:
    """Run one experiment from pre-flight to cleanup.

    Args:
        backend: The backend.
        spec: The resolved spec.
        store: Run store (default: XDG state dir).
        on_event: Called with every event (after it is saved).
        on_checks: Called with the pre-flight results before anything starts.
        confirm: Asked (after ``on_checks``) whether to go ahead; False stops
            before anything is created. Not called with ``assume_yes``.
        assume_yes: Go ahead without asking; accepts pre-flight warnings.
        install_signals: Route SIGINT/SIGTERM/SIGHUP to cancel (or detach)
            while the run is live.
        detach_on_signal: A terminating signal detaches instead of cancelling.

    Returns:
        The :class:`SessionResult` (its ``exit_code`` is what a CLI exits with).

    Raises:
        SweepdeckError: pre-flight failed, the user said no, the experiment
            id is taken, or the launch failed. Nothing is left running.
    """
    session = Session(
        backend, spec, store=store, on_event=on_event, registry=registry,
        cleanup_timeout=cleanup_timeout, default_image=default_image,
    )
    # Pre-flight and the question happen before any handler is installed and
    # before anything exists: Ctrl+C there is a plain KeyboardInterrupt.
    checks = await session.preflight()
    if on_checks is not None:
        on_checks(checks)
    check_preflight(checks, allow_warnings=True)  # blocking failures first
    accepted = assume_yes
    if not assume_yes and confirm is not None:
        accepted = bool(confirm(checks))
        if not accepted:
            raise SweepdeckError("Not started.", "Nothing was created.")
    check_preflight(checks, allow_warnings=accepted)

    loop = asyncio.get_running_loop()
    restore = lambda: None  # noqa: E731

    signals_seen = 0

    def on_signal(sig: signal.Signals) -> None:
        nonlocal signals_seen
        signals_seen += 1
        name = signal.Signals(sig).name
        if detach_on_signal and session.run is not None:
            session.request_detach()
        elif signals_seen == 1:
            session.request_cancel(f"stopped by {name}", int(sig))
            if on_event is not None and session.run is not None:
                on_event(Notice(f"Stopping {session.run.id} and cleaning up (again: stop at once, "
                                "skipping the run's own clean-up steps such as Tekton finally tasks)."))
        else:  # the second signal while stopping: the user wants it gone now
            session.request_cancel(f"stopped by {name}", int(sig), graceful=False)

    if install_signals:
        restore = install_signal_handlers(loop, on_signal)
    try:
        await session.launch()
        return await session.follow()
    finally:
        if not session._closed and session.run is not None:
            await session.close()
        restore()


# ------------------------------------------------------------------ relaunch


def apply_fix(spec: "ExperimentSpec", fix: Fix | dict[str, Any], store: "RunStore | None" = None) -> "ExperimentSpec":
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


__all__ = [
    "CLEANUP_TIMEOUT", "PreflightFailed", "Session", "SessionResult", "apply_fix", "check_preflight", "drive",
]
