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
* An inherited SIG_IGN for SIGINT is kept the same way, from the first
  instant (a background job of a script, ``sweepdeck run … &``, starts so:
  a Ctrl+C in that terminal is not meant for it); SIGTERM still stops it.
  Both are kept by :func:`backends.cleanup.install_signal_handlers`.
* With ``detach_on_signal`` every one of them detaches instead: the run goes
  on and ``sweepdeck attach RUN`` follows it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from backends.base import Check, Run
from backends.cleanup import install_signal_handlers
from backends.events import Alert, Event, Finished, Notice
from backends.session import SessionResult, check_preflight
from backends.store import RunDir
from backends.supervisor.client import RunInfo, RunLink, start_run
from backends.supervisor.supervisor import result_from_message
from config.errors import SweepdeckError

if TYPE_CHECKING:
    from backends.base import Backend
    from backends.cleanup import CleanupRegistry
    from backends.store import RunStore
    from backends.supervisor.launcher import Launcher
    from config.spec import ExperimentSpec


#: The result message of a client that hung up (SIGHUP): the supervisor stops the run without it.
HUNG_UP = "the client hung up; the run's supervisor stops it and cleans up"


class _EarlyInterrupt:
    """Ctrl+C during pre-flight, before anything exists: stop there, as a KeyboardInterrupt.

    Without this, SIGINT in that window is ``asyncio.run``'s: it cancels the main task, and a
    cancellation that an await swallows (Python 3.11's ``wait_for`` can, when its inner future
    finishes at the same moment) was lost — the launch went on and the run to its end (seen
    under load, Ctrl+C 0.25–0.6 s after starting ``sweepdeck run``). Here the signal is also
    remembered, and :meth:`check` raises it after pre-flight whatever became of the cancel.
    """

    def __init__(self, install: bool) -> None:
        self.signal: int | None = None
        self._task = asyncio.current_task()
        self._restore: Callable[[], None] = (
            install_signal_handlers(asyncio.get_running_loop(), self._on_signal, (signal.SIGINT,)) if install
            else (lambda: None))

    def _on_signal(self, sig: signal.Signals) -> None:
        self.signal = int(sig)
        if self._task is not None:
            self._task.cancel()

    def check(self) -> None:
        if self.signal is not None:
            self.restore()
            raise KeyboardInterrupt

    def restore(self) -> None:
        self._restore()
        self._restore = lambda: None


class _SignalPolicy:
    """What a headless client does with each signal (see module docs)."""

    def __init__(self, on_event: Callable[[Event], Any] | None, *, detach: bool = False, leave: bool = False,
                 on_stop: Callable[[int], Any] | None = None) -> None:
        self.on_event = on_event
        self.detach_on_signal = detach
        self.leave_on_signal = leave
        self.on_stop = on_stop
        self.link: RunLink | None = None
        self.presses = 0
        self.signal: int | None = None
        self.pending: list[str] = []
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def __call__(self, sig: signal.Signals) -> None:
        self.presses += 1
        if self.signal is None:
            self.signal = int(sig)
        if self.detach_on_signal:
            action = "detach"
        elif self.leave_on_signal or self.presses > 2:
            action = "leave"
        elif sig == signal.SIGHUP:
            action = "hangup"
        else:
            action = "cancel" if self.presses == 1 else "cancel_now"
        if action in ("cancel", "cancel_now"):
            self._say_stopping(self.presses)
        if self.link is None:
            self.pending.append(action)
        else:
            self.act(action)

    def _say_stopping(self, presses: int) -> None:
        if self.on_stop is not None:
            self.on_stop(presses)
        elif self.on_event is not None and presses == 1:
            self.on_event(Notice("Stopping the run and cleaning up (again: stop at once, skipping the run's "
                                 "own clean-up steps such as Tekton finally tasks)."))

    def attach(self, link: RunLink) -> None:
        self.link = link
        for action in self.pending:
            self.act(action)
        self.pending.clear()

    def act(self, action: str) -> None:
        link = self.link
        assert link is not None
        reason = f"stopped by {signal.Signals(self.signal).name}" if self.signal else "stopped"
        if action == "cancel":
            link.send_nowait({"op": "cancel", "graceful": True, "reason": reason})
        elif action == "cancel_now":
            link.send_nowait({"op": "cancel", "graceful": False, "reason": reason})
        elif action == "detach":
            self.detach_now()
        elif action == "hangup":
            asyncio.ensure_future(self._hang_up(link, reason))
        elif not self.ended.done():
            self.ended.set_result(action)

    async def _hang_up(self, link: RunLink, reason: str) -> None:
        """Say why the run stops, then go. The reply is awaited (bounded): closing a Unix socket that
        still has unread data resets it, and the supervisor would lose the request."""
        with contextlib.suppress(Exception):
            await link.cancel(graceful=True, reason=reason, timeout=1.0)
        if not self.ended.done():
            self.ended.set_result("hangup")

    def detach_now(self) -> None:
        if self.link is not None:
            asyncio.ensure_future(self._detach(self.link))

    async def _detach(self, link: RunLink) -> None:
        with contextlib.suppress(SweepdeckError):
            await link.detach()
        if not self.ended.done():
            self.ended.set_result("detached")


async def drive(
    backend: Backend,
    spec: ExperimentSpec,
    *,
    store: RunStore | None = None,
    on_event: Callable[[Event], Any] | None = None,
    on_checks: Callable[[list[Check]], Any] | None = None,
    confirm: Callable[[list[Check]], bool] | None = None,
    assume_yes: bool = False,
    install_signals: bool = True,
    detach_on_signal: bool = False,
    detach_when: Callable[[Event], bool] | None = None,
    on_launched: Callable[[RunInfo], Any] | None = None,
    on_stop: Callable[[int], Any] | None = None,
    launcher: Launcher | None = None,
    registry: CleanupRegistry | None = None,
    default_image: str | None = None,
    skip_preflight: bool = False,
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
        detach_when: Detach once an event makes this true (``alvis connect
            --detach``: when the endpoint answers).
        on_launched: Called with the run's facts once it is launched.
        on_stop: Says that a stop was asked for: called with 1 (graceful) and 2 (at once)
            (default: a Notice the first time).
        launcher: Where the supervisor runs (default: a process of its own).
        registry: The run's registry when the supervisor runs in this process
            (a backend without a recipe: a test double).
        default_image: The catalog's default image (for image-pull fixes).
        skip_preflight: The caller made its own checks already.

    Returns:
        The :class:`SessionResult` (its ``exit_code`` is what a CLI exits with).

    Raises:
        SweepdeckError: pre-flight failed, the user said no, the experiment
            id is taken, or the launch failed. Nothing is left running.
    """
    from backends.preflight import run_preflight
    from backends.registry import recipe_of
    from backends.store import RunStore
    from backends.supervisor.launcher import InProcessLauncher, default_launcher

    store = store or RunStore()
    if not skip_preflight:
        interrupted = _EarlyInterrupt(install_signals)
        try:
            checks = await run_preflight(backend, spec, store)
            interrupted.check()
            if on_checks is not None:
                on_checks(checks)
            check_preflight(checks, allow_warnings=True)  # blocking failures first
            accepted = assume_yes
            if not assume_yes and confirm is not None:
                interrupted.restore()  # the prompt reads the terminal: Ctrl+C there is a KeyboardInterrupt
                accepted = bool(confirm(checks))
                if not accepted:
                    raise SweepdeckError("Not started.", "Nothing was created.")
            check_preflight(checks, allow_warnings=accepted)
        except asyncio.CancelledError:
            interrupted.check()  # our own cancel: a KeyboardInterrupt
            raise
        finally:
            interrupted.restore()
    if launcher is None:
        launcher = InProcessLauncher(registry) if recipe_of(backend) is None else default_launcher(backend)
    follower = _Follower(on_event, detach_when)
    policy = _SignalPolicy(follower, detach=detach_on_signal, on_stop=on_stop)
    follower.policy = policy
    restore = install_signal_handlers(asyncio.get_running_loop(), policy) if install_signals \
        else (lambda: None)
    try:
        link = await start_run(backend, spec, store=store, launcher=launcher, on_event=follower,
                               default_image=default_image)
        policy.attach(link)
        try:
            info = await link.launched()
        except SweepdeckError:
            await link.result()  # the supervisor has cleaned up what the launch made
            link.close()
            raise
        if on_launched is not None:
            on_launched(info)
        run = Run(info.id, info.backend, spec, RunDir(store.root / info.id), info.handle, info.started)
        return await _until_end(link, run, policy, follower)
    finally:
        restore()


async def follow_run(
    link: RunLink, run: Run, *, on_event: Callable[[Event], Any] | None = None, leave_on_signal: bool = False,
    detach_when: Callable[[Event], bool] | None = None, on_stop: Callable[[int], Any] | None = None,
    install_signals: bool = True,
) -> SessionResult:
    """Follow a run through an existing link until it ends (the signal policy as for :func:`drive`).

    The link's ``on_event`` must be ``follower`` from :func:`follower_for` when ``detach_when`` or
    the alerts of the result matter; events given through ``on_event`` here are wrapped.

    Args:
        leave_on_signal: A signal only makes this client leave (``sweepdeck attach``).
    """
    follower = link.on_event if isinstance(link.on_event, _Follower) else _Follower(on_event, detach_when)
    link.on_event = follower
    policy = _SignalPolicy(follower, leave=leave_on_signal, on_stop=on_stop)
    follower.policy = policy
    policy.attach(link)
    restore = install_signal_handlers(asyncio.get_running_loop(), policy) if install_signals \
        else (lambda: None)
    try:
        return await _until_end(link, run, policy, follower)
    finally:
        restore()


class _Follower:
    """The link's event sink: passes events on, keeps the alerts, detaches when asked to."""

    def __init__(self, on_event: Callable[[Event], Any] | None, detach_when: Callable[[Event], bool] | None) -> None:
        self.on_event = on_event
        self.detach_when = detach_when
        self.alerts: list[Alert] = []
        self.policy: _SignalPolicy | None = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, Alert):
            self.alerts.append(event)
        if self.on_event is not None:
            self.on_event(event)
        if self.detach_when is not None and self.policy is not None and self.detach_when(event):
            self.detach_when = None
            self.policy.detach_now()


async def _until_end(link: RunLink, run: Run, policy: _SignalPolicy, follower: _Follower) -> SessionResult:
    result_task = asyncio.ensure_future(link.result())
    waiting: set[asyncio.Future[Any]] = {result_task, policy.ended}
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    alerts = follower.alerts
    if result_task.done():
        finished = result_from_message(result_task.result())
        link.close()
        sig = policy.signal if finished.outcome == "cancelled" else None
        return SessionResult(finished.outcome, finished.message, run, finished, alerts, sig)
    result_task.cancel()
    link.close()  # a hangup: the supervisor stops the run; a detach or a leave: the run goes on
    how = policy.ended.result()
    if how in ("detached", "leave"):
        verb = "Detached from" if how == "detached" else "Left"
        message = f"{verb} {run.id}; it keeps running. Reattach with: sweepdeck attach {run.id}"
        finished = Finished("detached", message)
        if follower.on_event is not None:
            follower.on_event(finished)  # the client's own last word: the run itself goes on
        return SessionResult("detached", message, run, finished, alerts)
    return SessionResult("cancelled", HUNG_UP, run, Finished("cancelled", HUNG_UP), alerts, policy.signal)


__all__ = ["HUNG_UP", "drive", "follow_run"]
