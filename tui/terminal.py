"""Leaving for sure when the terminal is gone.

A TUI over SSH loses its terminal when the connection drops, the laptop
sleeps or tmux is killed. The runs do not care (their supervisors outlive
this process: a run that was not detached is stopped by its supervisor once
its last client is gone); what matters is that this process goes away, at
once, whatever it was doing — and a write to a dead terminal can block
forever (Textual's writer thread dies on EIO, the next write waits on a full
queue).

:class:`TerminalGuard` therefore works outside the event loop:

* SIGHUP, SIGTERM and SIGINT (Ctrl+C is a key in the app; a SIGINT comes from
  ``kill``) get plain Python handlers (they run in the main thread even while
  it is blocked on a lock); an inherited SIG_IGN for SIGHUP (``nohup``) is kept;
* a watcher thread polls the terminal for POLLHUP/POLLERR (EOF or EIO on the
  terminal means the same as SIGHUP);
* either first lets go of the runs (``let_go``: the supervisors' sockets are
  shut down there and then, so each starts stopping its run now rather than
  when this process is finally gone), then asks the app to exit (thread-safe)
  and starts a timer that ends the process with ``os._exit`` if the exit has
  not happened within the bound.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

#: Seconds between the terminal's loss and a forced exit (the issue's bound is 5 s).
EXIT_WITHIN = 3.0


class TerminalGuard:
    """See module docs.

    Args:
        on_lost: Called (from any thread) with the exit code when the terminal
            is gone or a terminating signal came; it should ask the app to exit.
        exit_within: Seconds after which the process exits regardless.
        watch_fds: Terminal fds to watch (default: stdin and stdout when they are terminals).
        let_go: Called first, in the signal handler or watcher thread (the event loop may be
            blocked on the dead terminal): must be thread-safe and quick.
    """

    def __init__(self, on_lost: Callable[[int], None], *, exit_within: float = EXIT_WITHIN,
                 watch_fds: tuple[int, ...] | None = None, let_go: Callable[[], object] | None = None) -> None:
        self.on_lost = on_lost
        self.let_go = let_go
        self.exit_within = exit_within
        self.watch_fds = watch_fds if watch_fds is not None else tuple(
            fd for fd in (0, 1) if _isatty(fd))
        self.fired: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._previous: dict[int, object] = {}
        self._thread: threading.Thread | None = None

    def install(self) -> None:
        """Install the handlers (main thread only) and start the watcher."""
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            current = signal.getsignal(sig)
            if sig == signal.SIGHUP and current == signal.SIG_IGN:
                continue  # nohup: the user asked for hangups to be ignored
            self._previous[sig] = current
            signal.signal(sig, self._on_signal)
        if self.watch_fds:
            self._thread = threading.Thread(target=self._watch, name="sweepdeck-terminal-guard", daemon=True)
            self._thread.start()

    def uninstall(self) -> None:
        self._stop.set()
        for sig, handler in self._previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler)  # type: ignore[arg-type] # what getsignal returned
        self._previous.clear()

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.lost(128 + signum)

    def lost(self, code: int) -> None:
        """The terminal is gone (or we were told to go): exit, bounded. A second time: exit now."""
        with self._lock:
            if self.fired is not None:
                os._exit(self.fired)
            self.fired = code
        timer = threading.Timer(self.exit_within, os._exit, args=(code,))
        timer.daemon = True
        timer.start()
        if self.let_go is not None:
            with contextlib.suppress(Exception):
                self.let_go()
        with contextlib.suppress(Exception):
            self.on_lost(code)

    def _watch(self) -> None:
        poller = select.poll()
        for fd in self.watch_fds:
            poller.register(fd, 0)  # no events asked: POLLHUP/POLLERR/POLLNVAL are reported anyway
        while not self._stop.is_set():
            try:
                ready = poller.poll(500)
            except OSError:
                return
            if any(mask & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _fd, mask in ready):
                self.lost(128 + signal.SIGHUP)
                return


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def print_after_exit(lines: list[str]) -> None:
    """Lines for the terminal the app leaves (a lost terminal swallows them quietly)."""
    for line in lines:
        with contextlib.suppress(OSError, ValueError):
            print(line, file=sys.stderr)


__all__ = ["EXIT_WITHIN", "TerminalGuard", "print_after_exit"]


def has_16_colours(environ: dict[str, str] | None = None) -> bool:
    """Whether the terminal shows only 16 colours, decided the way Textual's console decides.

    ``TERM=screen`` (tmux and screen without a 256-colour TERM), ``TERM=linux`` (the
    console), ``xterm`` without ``-256color``: the theme's colours are drawn with the
    nearest of 16 there, and rows of different colours can come out the same.
    ``TEXTUAL_COLOR_SYSTEM`` overrides the detection, as it does for Textual.
    """
    from rich.console import Console
    from textual import constants

    env = dict(os.environ if environ is None else environ)
    system: Any = env.get("TEXTUAL_COLOR_SYSTEM", constants.COLOR_SYSTEM if environ is None else "auto")
    console = Console(color_system=system, force_terminal=True, _environ=env)
    return console.color_system in ("standard", "windows")
