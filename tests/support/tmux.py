"""A private tmux server (``tmux -L``) with one session ``s``: send-keys in, capture-pane out.

The tests that drive the real app in a real terminal use it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time


class Tmux:
    """A private tmux server (``-L``) with one session ``s``."""

    def __init__(self, socket_name: str) -> None:
        self.socket = socket_name

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=check,
                              timeout=20)

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "s", check=False).stdout

    def alive(self) -> bool:
        return self("has-session", "-t", "s", check=False).returncode == 0

    def keys(self, *keys: str, literal: bool = False) -> None:
        self("send-keys", "-t", "s", *(["-l"] if literal else []), *keys)

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        end = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < end:
            screen = self.screen()
            if text in screen:
                return screen
            if not self.alive():
                break
            time.sleep(0.2)
        raise AssertionError(f"{text!r} did not appear; the screen was:\n{screen}")

    def kill(self) -> None:
        self("kill-server", check=False)
        # the server leaves its socket file behind
        tmpdir = os.environ.get("TMUX_TMPDIR") or "/tmp"
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(tmpdir, f"tmux-{os.getuid()}", self.socket))
