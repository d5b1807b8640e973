"""The control protocol between a run's supervisor and its clients.

One JSON object per line, both ways, over a Unix stream socket: the socket
``control.sock`` (mode 0600) in the run directory, or the socket pair the
starting client hands the supervisor (its *lifeline*).

Client → supervisor (``op``):

* ``{"op": "follow", "snapshot": N}`` — send the run's state now (with the last
  N log lines), then every event as it happens; this connection now *holds*
  the run (see the policy in :mod:`backends.supervisor.supervisor`).
  ``{"op": "follow", "offset": K}`` sends the saved records from byte K of
  ``events.jsonl`` instead of a snapshot.
* ``{"op": "cancel", "graceful": true}`` — stop the run (``false``: at once).
* ``{"op": "detach"}`` — the run no longer dies with its clients.
* ``{"op": "status"}`` — one ``_status`` reply; does not hold the run.

Supervisor → client: event-log records exactly as in ``events.jsonl`` (an
event's ``type`` is its class name; ``LogBatch`` holds many lines), and
control messages whose ``type`` starts with ``_``:

* ``_hello`` ``{pid, run_id}`` — the supervisor is up;
* ``_launched`` ``{run: {id, backend, handle, started, path}}`` or
  ``_launch_failed`` ``{message, hint}``;
* ``_snapshot`` ``{offset}`` … records … ``_live`` — a snapshot (a client
  treats it as "replace what you show");
* ``_reply`` ``{op, ok, message}`` — to cancel/detach;
* ``_status`` ``{state, detached, clients, pid, run_id, offset}``;
* ``_result`` ``{outcome, message, results, summary, signal, cleanup}`` — the
  run ended and its cleanup is done; the supervisor exits after this.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any

import msgspec

SOCKET_NAME = "control.sock"
#: Longest line either side accepts (a snapshot record of 10,000 log lines fits easily).
MAX_LINE = 64 * 1024 * 1024
#: Unix socket paths longer than this are reached through /proc/self/fd (sun_path holds 108 bytes).
_SUN_PATH_MAX = 100


def encode(message: dict[str, Any]) -> bytes:
    """One protocol line."""
    return (json.dumps(message, default=str, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def decode(line: bytes) -> dict[str, Any] | None:
    """A protocol line as a dict (None for a line that is not a JSON object)."""
    try:
        data = _decode(line)  # ~2x faster than json.loads on a batch of log lines
    except msgspec.DecodeError:
        try:  # what msgspec refuses and json takes (an escaped lone surrogate)
            data = json.loads(line)
        except ValueError:
            return None
    return data if isinstance(data, dict) else None


_decode = msgspec.json.Decoder().decode


def socket_path(run_dir: Path) -> Path:
    return run_dir / SOCKET_NAME


class _ShortPath:
    """A path short enough for ``sun_path``: the directory opened as an fd, named through /proc."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def __enter__(self) -> str:
        text = str(self.path)
        if len(text.encode()) <= _SUN_PATH_MAX or not os.path.isdir("/proc/self/fd"):
            return text
        self.fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        return f"/proc/self/fd/{self.fd}/{self.path.name}"

    def __exit__(self, *_exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def bind_socket(path: Path) -> socket.socket:
    """A listening Unix socket at ``path`` (mode 0600; a stale file is replaced)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with _ShortPath(path) as name:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
            old = os.umask(0o177)
            try:
                sock.bind(name)
            finally:
                os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(16)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def connect_socket(path: Path, timeout: float = 2.0) -> socket.socket:
    """A connected Unix socket to ``path``.

    Raises:
        OSError: nobody listens there (ConnectionRefusedError / FileNotFoundError) or it timed out.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        with _ShortPath(path) as name:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, name), timeout)
    except BaseException:
        sock.close()
        raise
    return sock


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end (Linux ``SO_PEERCRED``), None when unknown."""
    try:
        import struct

        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return int(struct.unpack("3i", creds)[1])
    except (OSError, AttributeError):
        return None


__all__ = ["MAX_LINE", "SOCKET_NAME", "bind_socket", "connect_socket", "decode", "encode", "peer_uid", "socket_path"]
