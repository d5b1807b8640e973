"""The tunnel's local end: free ports and who holds one, on loopback (the helpers are :mod:`backends.procs`')."""

from __future__ import annotations

import contextlib
from pathlib import Path

from backends import procs


def port_free(port: int) -> bool:
    return procs.port_free("127.0.0.1", port)


def next_free_port(port: int, tries: int = 200) -> int | None:
    return procs.next_free_port("127.0.0.1", port, tries)


def port_holder(port: int) -> str:
    """``name (pid N)`` of the process listening on ``port``, if it can be found."""
    found = procs.port_holder(port)
    if found is None:
        return ""
    pid, command = found
    name = Path(command.split(" ", 1)[0]).name if command else ""
    with contextlib.suppress(OSError):
        name = Path(f"/proc/{pid}/comm").read_text().strip() or name
    return f"{name} (pid {pid})"
