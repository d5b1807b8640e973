"""The cleanup registry: everything that must not outlive the run.

Whatever a backend creates (child process, SLURM job, tunnel listener,
PipelineRun, SSH connection) registers its undo *when it is created*. The
run's supervisor runs the registry once, newest first, bounded in time, when
the run ends, is stopped, or loses its last client (unless detached).

An undo may describe what it removes as a *resource* (``{"kind": "pid",
"pid": …, "start": …}``, ``{"kind": "slurm_job", "id": …}``,
``{"kind": "pipelinerun", "name": …, "namespace": …}``). The supervisor saves
the resources still registered in the run directory whenever they change, so
a run whose supervisor died can be reconciled: what it recorded as possibly
alive is listed and offered for cleanup (:mod:`backends.supervisor.reconcile`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

Undo = Callable[[], Any] | Callable[[], Awaitable[Any]]


@dataclass(slots=True)
class Entry:
    token: int
    label: str
    undo: Undo
    force: Callable[[], Any] | None = None
    resource: dict[str, Any] | None = None
    error: str = ""  # why the undo did not finish (set when it failed or timed out)


@dataclass(slots=True)
class Outcome:
    """What happened to one undo."""

    label: str
    ok: bool
    error: str = ""
    seconds: float = 0.0


@dataclass
class CleanupRegistry:
    """A LIFO set of undo actions, run at most once.

    Args:
        timeout: Total seconds :meth:`run` may take; undos still running then
            are abandoned and their ``force`` callbacks (if any) called.
    """

    timeout: float = 15.0
    #: Called (with no arguments) after every register/unregister/run: the supervisor saves the resources.
    on_change: Callable[[], Any] | None = None
    _entries: dict[int, Entry] = field(default_factory=dict)
    _ids: Any = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ran: bool = False
    #: Undos that failed or timed out with no force that worked: the thing may still exist, so it stays
    #: in :meth:`resources` (and the run's ``resources.json``) for reconciliation, not silently forgotten.
    _unresolved: list[Entry] = field(default_factory=list)

    def register(
        self,
        label: str,
        undo: Undo,
        *,
        force: Callable[[], Any] | None = None,
        resource: dict[str, Any] | None = None,
    ) -> int:
        """Register an undo; returns a token for :meth:`unregister`.

        Args:
            label: Shown to the user (``scancel 5382685``).
            undo: Sync or async callable that removes the thing.
            force: Sync last resort when ``undo`` does not finish in time
                (e.g. SIGKILL a process group).
            resource: What the thing is, for reconciliation after a crash
                (JSON-ready; ``kind`` plus what identifies it).
        """
        with self._lock:
            token = next(self._ids)
            self._entries[token] = Entry(token, label, undo, force, resource)
        self._changed()
        return token

    def unregister(self, token: int) -> None:
        """Forget an undo (the thing was removed normally)."""
        with self._lock:
            gone = self._entries.pop(token, None)
        if gone is not None:
            self._changed()

    def resources(self) -> list[dict[str, Any]]:
        """What the registered undos would remove, newest first (``label`` plus the resource)."""
        with self._lock:
            entries = sorted(self._entries.values(), key=lambda e: -e.token)
            failed = list(self._unresolved)
        return [{"label": e.label, **(e.resource or {"kind": "other"})} for e in entries] + self.unresolved(failed)

    def unresolved(self, entries: list[Entry] | None = None) -> list[dict[str, Any]]:
        """Resources whose undo failed or timed out (they may still exist), each with its ``error``."""
        if entries is None:
            with self._lock:
                entries = list(self._unresolved)
        return [{"label": e.label, **(e.resource or {"kind": "other"}), "error": e.error} for e in entries
                if e.resource is not None]

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception as exc:  # saving what is registered must never stop a cleanup
                log.warning("cleanup registry change hook failed: %s", exc)

    def pending(self) -> list[str]:
        """Labels of the undos still registered, newest first."""
        with self._lock:
            return [e.label for e in sorted(self._entries.values(), key=lambda e: -e.token)]

    def __len__(self) -> int:
        return len(self._entries)

    def live(self) -> bool:
        """Is anything registered that would be left behind?"""
        return bool(self._entries)

    async def run(self, timeout: float | None = None) -> list[Outcome]:
        """Run every registered undo once, newest first, within ``timeout`` seconds.

        Calling it again does nothing more for undos already run; undos
        registered afterwards are run by the next call.
        """
        budget = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        with self._lock:
            entries = sorted(self._entries.values(), key=lambda e: -e.token)
            self._entries.clear()
            self._ran = True
        if entries:
            self._changed()
        outcomes: list[Outcome] = []
        for index, entry in enumerate(entries):
            left = deadline - time.monotonic()
            start = time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                result = entry.undo()
                if inspect.isawaitable(result):
                    await asyncio.wait_for(result, timeout=left)
                outcomes.append(Outcome(entry.label, True, seconds=time.monotonic() - start))
            except asyncio.CancelledError:
                # the cleanup itself is being abandoned (its owner is stopping hard): the undos it will
                # not wait for get their last resort now, and what that cannot settle stays on record
                self._abandon(entries[index:], "abandoned: the cleanup was cancelled")
                raise
            except TimeoutError:
                outcomes.append(Outcome(entry.label, False, "timed out", time.monotonic() - start))
            except Exception as exc:  # one failed undo must not stop the others
                log.warning("cleanup %s failed: %s", entry.label, exc)
                outcomes.append(Outcome(entry.label, False, str(exc) or type(exc).__name__, time.monotonic() - start))
            else:
                continue
            if not _force(entry):
                entry.error = outcomes[-1].error
                with self._lock:
                    self._unresolved.append(entry)
                self._changed()
        return outcomes

    def _abandon(self, entries: list[Entry], error: str) -> None:
        unresolved = [entry for entry in entries if not _force(entry)]
        for entry in unresolved:
            entry.error = error
        if unresolved:
            with self._lock:
                self._unresolved.extend(unresolved)
            self._changed()

    def run_sync(self, timeout: float | None = None) -> list[Outcome]:
        """Run the registry from synchronous code (e.g. atexit), in a fresh loop."""
        return asyncio.run(self.run(timeout))


def _force(entry: Entry) -> bool:
    """The entry's last resort; True when there was one and it did not fail."""
    if entry.force is None:
        return False
    try:
        entry.force()
    except Exception as exc:
        log.warning("force cleanup %s failed: %s", entry.label, exc)
        return False
    return True


#: The registry of a client process itself (the TUI's or a headless command's own
#: connections, e.g. an SSH connection pre-flight opened); a run's things are in
#: its supervisor's registry.
REGISTRY = CleanupRegistry()

TERMINATING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

#: The signals a terminal sends. A process started with one of them ignored keeps ignoring it:
#: ``nohup`` ignores SIGHUP, and a non-interactive shell starts its background jobs (``sweepdeck run
#: … &`` in a script) with SIGINT ignored — a Ctrl+C in that terminal is not meant for them.
KEPT_IF_IGNORED = (signal.SIGINT, signal.SIGHUP)


def install_signal_handlers(
    loop: asyncio.AbstractEventLoop,
    on_signal: Callable[[signal.Signals], None],
    signals: tuple[signal.Signals, ...] = TERMINATING_SIGNALS,
) -> Callable[[], None]:
    """Route terminating signals to ``on_signal`` inside the loop.

    A signal of :data:`KEPT_IF_IGNORED` that is ignored now is left ignored (and ``restore`` leaves it
    so too: removing a loop's handler puts the default back, not the ignore).

    Returns a function that restores the default handlers.
    """
    installed = []
    for sig in signals:
        if sig in KEPT_IF_IGNORED and signal.getsignal(sig) == signal.SIG_IGN:
            continue
        try:
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not main thread / platform
            pass

    def restore() -> None:
        for sig in installed:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)

    return restore
