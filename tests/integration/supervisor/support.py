"""Watching runs from outside: processes, ports, the run store, a headless client as a real process."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

from tests.support.procstate import eventually, gone, group_members, listening  # noqa: F401  (re-exported)

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = Path(sys.executable).parent / "sweepdeck"
CMD = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "tui.cli"]


def runs_dir() -> Path:
    return Path(os.environ["SWEEPDECK_STATE_DIR"]) / "runs"


def meta(run_id: str) -> dict:
    try:
        return json.loads((runs_dir() / run_id / "meta.json").read_text())
    except (OSError, ValueError):
        return {}


def session(run_id: str) -> dict[str, str]:
    try:
        text = (runs_dir() / run_id / "handle").read_text()
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def saved_lines(run_id: str) -> list[str]:
    """The log lines in the run's events.jsonl (batches included)."""
    from backends.events import LogLine
    from backends.store import RunDir

    return [e.text for e in RunDir(runs_dir() / run_id).events() if isinstance(e, LogLine)]


class Client:
    """A headless client (``sweepdeck ARGS``) as a real process whose output is read as it comes."""

    def __init__(self, *args: str, env: dict | None = None, preexec=None) -> None:
        self.proc = subprocess.Popen(CMD + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=ROOT, env=env, preexec_fn=preexec)
        self.buf = b""

    @property
    def text(self) -> str:
        return self.buf.decode(errors="replace")

    def read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if ready:
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            self.buf += chunk

    def read_for(self, seconds: float) -> None:
        """Read the output as it comes for ``seconds``, or until the process exits."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and self.proc.poll() is None:
            self.read(max(0.0, end - time.monotonic()))

    def wait_for(self, text: str, seconds: float = 30) -> None:
        end = time.monotonic() + seconds
        while text.encode() not in self.buf:
            left = end - time.monotonic()
            if left <= 0 or (self.proc.poll() is not None and not select.select([self.proc.stdout], [], [], 0)[0]):
                raise AssertionError(f"{text!r} never appeared:\n{self.text[-3000:]}")
            self.read(min(left, 0.5))

    def finish(self, seconds: float = 30) -> int:
        end = time.monotonic() + seconds
        while self.proc.poll() is None and time.monotonic() < end:
            self.read(0.2)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the client did not exit in {seconds} s:\n{self.text[-3000:]}")
        while select.select([self.proc.stdout], [], [], 0)[0]:
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                break
            self.buf += chunk
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
