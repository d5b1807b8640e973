"""The cleanup registry: everything that must not outlive the session.

Whatever a backend creates (child process, SLURM job, tunnel listener,
PipelineRun, SSH connection) registers its undo *when it is created*. Quit,
Ctrl+C, SIGTERM and SIGHUP run the registry once, newest first, bounded in
time. Detach instead keeps the run alive and drops the undos registered
with ``detachable=True``.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

log = logging.getLogger(__name__)

Undo = Callable[[], Any] | Callable[[], Awaitable[Any]]


@dataclass(slots=True)
class Entry:
    token: int
    label: str
    undo: Undo
    detachable: bool
    force: Callable[[], Any] | None = None


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
    _entries: dict[int, Entry] = field(default_factory=dict)
    _ids: Any = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ran: bool = False
    detached: bool = False

    def register(
        self,
        label: str,
        undo: Undo,
        *,
        detachable: bool = True,
        force: Callable[[], Any] | None = None,
    ) -> int:
        """Register an undo; returns a token for :meth:`unregister`.

        Args:
            label: Shown to the user (``scancel 5382685``).
            undo: Sync or async callable that removes the thing.
            detachable: If True, detach keeps the thing alive (a job, a
                PipelineRun); if False it is always undone (a local listener).
            force: Sync last resort when ``undo`` does not finish in time
                (e.g. SIGKILL a process group).
        """
        with self._lock:
            token = next(self._ids)
            self._entries[token] = Entry(token, label, undo, detachable, force)
            return token

    def unregister(self, token: int) -> None:
        """Forget an undo (the thing was removed normally)."""
        with self._lock:
            self._entries.pop(token, None)

    def pending(self) -> list[str]:
        """Labels of the undos still registered, newest first."""
        with self._lock:
            return [e.label for e in sorted(self._entries.values(), key=lambda e: -e.token)]

    def __len__(self) -> int:
        return len(self._entries)

    def live(self) -> bool:
        """Is anything registered that would be left behind?"""
        return bool(self._entries)

    def detach(self) -> list[str]:
        """Keep detachable things running; returns their labels."""
        with self._lock:
            self.detached = True
            kept = [e.label for e in self._entries.values() if e.detachable]
            self._entries = {t: e for t, e in self._entries.items() if not e.detachable}
            return kept

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
        outcomes: list[Outcome] = []
        for entry in entries:
            left = deadline - time.monotonic()
            start = time.monotonic()
            try:
                if left <= 0:
                    raise asyncio.TimeoutError
                result = entry.undo()
                if inspect.isawaitable(result):
                    await asyncio.wait_for(result, timeout=left)
                outcomes.append(Outcome(entry.label, True, seconds=time.monotonic() - start))
            except asyncio.TimeoutError:
                outcomes.append(Outcome(entry.label, False, "timed out", time.monotonic() - start))
                _force(entry)
            except Exception as exc:  # one failed undo must not stop the others
                log.warning("cleanup %s failed: %s", entry.label, exc)
                outcomes.append(Outcome(entry.label, False, str(exc) or type(exc).__name__, time.monotonic() - start))
                _force(entry)
        return outcomes

    def run_sync(self, timeout: float | None = None) -> list[Outcome]:
        """Run the registry from synchronous code (e.g. atexit), in a fresh loop."""
        return asyncio.run(self.run(timeout))


def _force(entry: Entry) -> None:
    if entry.force is None:
        return
    try:
        entry.force()
    except Exception as exc:
        log.warning("force cleanup %s failed: %s", entry.label, exc)


#: The process-wide registry used by the CLI and the TUI.
REGISTRY = CleanupRegistry()

TERMINATING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def install_signal_handlers(
    loop: asyncio.AbstractEventLoop,
    on_signal: Callable[[signal.Signals], None],
    signals: tuple[signal.Signals, ...] = TERMINATING_SIGNALS,
) -> Callable[[], None]:
    """Route terminating signals to ``on_signal`` inside the loop.

    Returns a function that restores the default handlers.
    """
    installed = []
    for sig in signals:
        try:
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not main thread / platform
            pass

    def restore() -> None:
        for sig in installed:
            try:
                loop.remove_signal_handler(sig)
            except Exception:
                pass

    return restore
