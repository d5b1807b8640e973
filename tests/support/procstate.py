"""What the tests ask of processes and ports: gone, group and session members, listening, eventually.

One copy for every suite. ``/proc/PID/stat`` can vanish between ``open`` and
``read`` (the kernel then says ESRCH: ``ProcessLookupError``), so every read
here treats any ``OSError`` as "no such process".
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable


def _stat(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state first), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields or None


def gone(pid: int) -> bool:
    """No such process, or a zombie (PID 1 reaps them late here)."""
    fields = _stat(pid)
    return fields is None or fields[0] in ("Z", "X")


def _members(index: int, value: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(entry)
            if fields and len(fields) > index and fields[index] == str(value) and fields[0] not in ("Z", "X"):
                out.append(int(entry))
    return out


def group_members(pgid: int) -> list[int]:
    """Live processes of process group ``pgid``."""
    return _members(2, pgid)


def session_members(sid: int) -> list[int]:
    """Live processes of session ``sid`` (a supervisor runs in a session of its own)."""
    return _members(3, sid)


def listening(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """Does something accept TCP connections on ``host:port``?"""
    with socket.socket() as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
        except OSError:
            return False
    return True


def eventually(predicate: Callable[[], bool], seconds: float, step: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``seconds`` pass; its last answer."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
