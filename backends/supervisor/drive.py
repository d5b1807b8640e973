"""The headless client: pre-flight, start the run's supervisor, follow it, end it as the signals say.

:func:`drive` is what ``sweepdeck run`` and the other headless launchers
use. Pre-flight and the confirmation happen in the client, before anything
exists (Ctrl+C there is a plain KeyboardInterrupt). From the moment the
supervisor is started the signal handlers are in place — a Ctrl+C in the
first instant of a launch is held and sent as soon as the link exists:

* SIGINT / SIGTERM: stop the run gracefully; a second one: at once; a third:
  stop waiting (the supervisor finishes the cleanup on its own).
* SIGHUP (the terminal is gone): ask the run to stop and hang up at once
  (nothing more can be shown); the supervisor stops it and cleans up. An
  inherited SIG_IGN (``nohup``) is kept: the signal then never comes and the
  run goes on.
* With ``detach_on_signal`` every one of them detaches instead: the run goes
  on and ``sweepdeck attach RUN`` follows it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import TYPE_CHECKING, Any, Callable

from backends.base import Check, Run
from backends.cleanup import install_signal_handlers
from backends.events import Alert, Event, Finished, Notice
from backends.session import SessionResult, check_preflight
from backends.supervisor.client import RunLink, start_run
from backends.supervisor.supervisor import result_from_message
from config.errors import SweepdeckError

if TYPE_CHECKING:
    from backends.base import Backend
    from backends.cleanup import CleanupRegistry
    from backends.store import RunStore
    from backends.supervisor.launcher import Launcher
    from config.spec import ExperimentSpec


def hangup_ignored() -> bool:
    """Was SIGHUP ignored when this process started (``nohup``)? Then it stays ignored."""
    return signal.getsignal(signal.SIGHUP) == signal.SIG_IGN


def client_signals() -> tuple[signal.Signals, ...]:
    """The signals a client handles: SIGINT, SIGTERM, and SIGHUP unless it was ignored at start."""
    sigs = [signal.SIGINT, signal.SIGTERM]
    if not hangup_ignored():
        sigs.append(signal.SIGHUP)
    return tuple(sigs)


class _SignalPolicy:
    """What the headless client does with each signal (see module docs)."""

    def __init__(self, on_event: Callable[[Event], Any] | None, detach_on_signal: bool) -> None:
        self.on_event = on_event
        self.detach_on_signal = detach_on_signal
        self.link: RunLink | None = None
        self.presses = 0
        self.signal: int | None = None
        self.pending: list[str] = []
        self.ended = asyncio.get_running_loop().create_future()

    def __call__(self, sig: signal.Signals) -> None:
        self.presses += 1
        if self.signal is None:
            self.signal = int(sig)
        if self.detach_on_signal:
            action = "detach"
        elif sig == signal.SIGHUP or self.presses > 2:
            action = "hangup"
        else:
            action = "cancel" if self.presses == 1 else "cancel_now"
        if self.link is None:
            self.pending.append(action)
        else:
            self.act(action)

    def attach(self, link: RunLink) -> None:
        self.link = link
        for action in self.pending:
            self.act(action)
        self.pending.clear()

    def act(self, action: str) -> None:
        link = self.link
        assert link is not None
        name = signal.Signals(self.signal).name if self.signal else "a signal"
        if action == "cancel":
            link.send_nowait({"op": "cancel", "graceful": True, "reason": f"stopped by {name}"})
            if self.on_event is not None:
                self.on_event(Notice("Stopping the run and cleaning up (again: stop at once, skipping the run's "
                                     "own clean-up steps such as Tekton finally tasks)."))
        elif action == "cancel_now":
            link.send_nowait({"op": "cancel", "graceful": False, "reason": f"stopped by {name}"})
        elif action == "detach":
            asyncio.ensure_future(self._detach(link))
        elif not self.ended.done():  # hangup: say why it stops (the supervisor would stop it anyway), then go
            link.send_nowait({"op": "cancel", "graceful": True, "reason": f"stopped by {name}"})
            self.ended.set_result("hangup")

    async def _detach(self, link: RunLink) -> None:
        with contextlib.suppress(SweepdeckError):
            await link.detach()
        if not self.ended.done():
            self.ended.set_result("detached")


async def drive(
    backend: "Backend",
    spec: "ExperimentSpec",
    *,
    store: "RunStore | None" = None,
    on_event: Callable[[Event], Any] | None = None,
    on_checks: Callable[[list[Check]], Any] | None = None,
    confirm: Callable[[list[Check]], bool] | None = None,
    assume_yes: bool = False,
    install_signals: bool = True,
    detach_on_signal: bool = False,
    launcher: "Launcher | None" = None,
    registry: "CleanupRegistry | None" = None,
    default_image: str | None = None,
) -> SessionResult:
    """Run one experiment from pre-flight to cleanup, as a client of its supervisor.

    Args:
        backend: The backend.
        spec: The resolved spec.
        store: Run store (default: XDG state dir).
        on_event: Called with every event.
        on_checks: Called with the pre-flight results before anything starts.
        confirm: Asked (after ``on_checks``) whether to go ahead; False stops
            before anything is created. Not called with ``assume_yes``.
        assume_yes: Go ahead without asking; accepts pre-flight warnings.
        install_signals: Handle SIGINT/SIGTERM/SIGHUP as the module docs say.
        detach_on_signal: A terminating signal detaches instead of stopping.
        launcher: Where the supervisor runs (default: a process of its own).
        registry: The run's registry when the supervisor runs in this process
            (a backend without a recipe: a test double).
        default_image: The catalog's default image (for image-pull fixes).

    Returns:
        The :class:`SessionResult` (its ``exit_code`` is what a CLI exits with).

    Raises:
        SweepdeckError: pre-flight failed, the user said no, the experiment
            id is taken, or the launch failed. Nothing is left running.
    """
    from backends.preflight import run_preflight
    from backends.store import RunDir, RunStore
    from backends.supervisor.launcher import InProcessLauncher, default_launcher
    from backends.registry import recipe_of

    store = store or RunStore()
    checks = await run_preflight(backend, spec, store)
    if on_checks is not None:
        on_checks(checks)
    check_preflight(checks, allow_warnings=True)  # blocking failures first
    accepted = assume_yes
    if not assume_yes and confirm is not None:
        accepted = bool(confirm(checks))
        if not accepted:
            raise SweepdeckError("Not started.", "Nothing was created.")
    check_preflight(checks, allow_warnings=accepted)
    if launcher is None:
        launcher = InProcessLauncher(registry) if recipe_of(backend) is None else default_launcher(backend)

    alerts: list[Alert] = []

    def on(event: Event) -> None:
        if isinstance(event, Alert):
            alerts.append(event)
        if on_event is not None:
            on_event(event)

    policy = _SignalPolicy(on_event, detach_on_signal)
    restore = install_signal_handlers(asyncio.get_running_loop(), policy, client_signals()) if install_signals \
        else (lambda: None)
    try:
        link = await start_run(backend, spec, store=store, launcher=launcher, on_event=on, default_image=default_image)
        policy.attach(link)
        try:
            info = await link.launched()
        except SweepdeckError:
            await link.result()  # the supervisor has cleaned up what the launch made
            link.close()
            raise
        run = Run(info.id, info.backend, spec, RunDir(store.root / info.id), info.handle, info.started)
        result_task = asyncio.ensure_future(link.result())
        await asyncio.wait({result_task, policy.ended}, return_when=asyncio.FIRST_COMPLETED)
        if result_task.done():
            message = result_task.result()
            finished = result_from_message(message)
            sig = policy.signal if finished.outcome == "cancelled" else None
            return SessionResult(finished.outcome, finished.message, run, finished, alerts, sig)
        result_task.cancel()
        link.close()  # a hangup: the supervisor stops the run; a detach: the run goes on
        if policy.ended.result() == "detached":
            message = f"Detached from {run.id}; it keeps running. Follow it again with: sweepdeck attach {run.id}"
            return SessionResult("detached", message, run, Finished("detached", message), alerts)
        message = "the client hung up; the run's supervisor stops it and cleans up"
        return SessionResult("cancelled", message, run, Finished("cancelled", message), alerts, policy.signal)
    finally:
        restore()


__all__ = ["client_signals", "drive", "hangup_ignored"]
