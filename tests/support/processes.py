"""Servers the tests start as real processes: the built-in vLLM simulator, ``queue serve``.

Both are uvicorn apps on ``--port 0``; the URL is read from uvicorn's own
``Uvicorn running on http://…`` line, and the output is drained by a thread
(kept in ``lines`` for failure messages).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SIM_MODEL = "facebook/opt-125m"


class UvicornProcess:
    """A uvicorn server started as ``argv``; :meth:`wait_ready` returns its URL.

    Args:
        argv: The command (it must serve on a port it prints, e.g. ``--port 0``).
        what: Named in the failure message when it never starts.
    """

    def __init__(self, argv: list[str], what: str = "server") -> None:
        self.what = what
        self.lines: list[str] = []
        self.url: str | None = None
        self._ready = threading.Event()
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            m = re.search(r"Uvicorn running on (http://\S+)", line)
            if m:
                self.url = m.group(1)
                self._ready.set()
        self._ready.set()  # it exited: wait_ready says so at once

    def wait_ready(self, timeout: float = 30.0) -> str:
        self._ready.wait(timeout)
        assert self.url, f"{self.what} did not start:\n" + "\n".join(self.lines[-30:])
        return self.url

    def stop(self, grace: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(5)


class SimProcess(UvicornProcess):
    """``python -m backends.sim`` on 127.0.0.1, a free port, no start-up delay; ``args`` appended."""

    def __init__(self, *args: str) -> None:
        super().__init__([sys.executable, "-m", "backends.sim", SIM_MODEL, "--host", "127.0.0.1", "--port", "0",
                          "--startup-delay", "0", "--disable-log-stats", *args], what="simulator")
