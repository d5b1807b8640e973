"""One local server process and what it reports, as messages on a queue.

The producers here each watch one thing and put ``(kind, payload)`` on the
run's queue (:class:`backends.local.run.ServerRun` consumes them):

* ``("lines", [LogLine…])`` — the server's stdout/stderr, read in chunks, whole lines;
* ``("eof", stream)`` — a pipe closed;
* ``("exit", code)`` — the process exited;
* ``("cancel", None)`` — the run was asked to stop;
* ``("ready", url)`` — ``GET /v1/models`` answered 200;
* ``("event", Event)`` / ``("workload-done", error)`` — the load generator's events and end;
* ``("drained", None)`` — the grace period after an exit is over.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from backends.events import LogLine
from backends.procs import stop_group, wait_pid
from config.errors import SweepdeckError

#: Bytes read from a pipe at a time.
CHUNK = 1 << 16
#: Fallback probe period for servers that never print vLLM's startup lines.
PROBE_PERIOD = 2.0

Queue = "asyncio.Queue[tuple[str, Any]]"


@dataclass
class LocalServer:
    """What the backend knows about one run's server process."""

    argv: list[str]
    host: str
    port: int
    proc: subprocess.Popen | None
    pid: int
    pgid: int
    token: int | None = None
    out_fd: int | None = None
    err_fd: int | None = None
    url: str = ""
    cancelled: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)


async def read_pipe(fd: int | None, stream: str, queue: asyncio.Queue) -> None:
    """Read ``fd`` in chunks and queue whole lines as LogLine batches."""
    if fd is None:
        await queue.put(("eof", stream))
        return
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20, loop=loop)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop),
                                                os.fdopen(fd, "rb", buffering=0))
    partial = b""
    try:
        while True:
            chunk = await reader.read(CHUNK)
            if not chunk:
                break
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop()
            if lines:
                now = time.time()
                await queue.put(("lines", [LogLine(clean(raw), stream, "vllm", now) for raw in lines]))  # type: ignore[arg-type]  # stream is "out" or "err"
        if partial:
            await queue.put(("lines", [LogLine(clean(partial), stream, "vllm")]))  # type: ignore[arg-type]  # stream is "out" or "err"
    finally:
        transport.close()
        await queue.put(("eof", stream))


def clean(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").rstrip("\r")


async def watch_exit(server: LocalServer, queue: asyncio.Queue) -> None:
    await wait_pid(server.pid, server.proc, None)
    code = server.proc.wait() if server.proc is not None else None
    await queue.put(("exit", code))


async def wake_on_cancel(server: LocalServer, queue: asyncio.Queue) -> None:
    await server.wake.wait()
    await queue.put(("cancel", None))


async def stop(server: LocalServer) -> None:
    """SIGTERM the server's group (its exit reaches the queue through :func:`watch_exit`)."""
    await stop_group(server.pgid, server.proc)


async def later(queue: asyncio.Queue, delay: float, item: tuple) -> None:
    await asyncio.sleep(delay)
    await queue.put(item)


async def models_ok(url: str, timeout: float = 2.0) -> bool:
    import httpx

    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.get(url + "/v1/models")
            return response.status_code == 200
    except httpx.HTTPError:
        return False


async def probe_ready(server: LocalServer, queue: asyncio.Queue, deadline: float) -> None:
    """After the startup line: GET /v1/models until it answers 200 (or the deadline)."""
    loop = asyncio.get_running_loop()
    delay = 0.05
    while loop.time() < deadline:
        if await models_ok(server.url):
            await queue.put(("ready", server.url))
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


async def fallback_probe(server: LocalServer, queue: asyncio.Queue) -> None:
    """For server commands that never print vLLM's startup lines: probe now and then."""
    while True:
        await asyncio.sleep(PROBE_PERIOD)
        if await models_ok(server.url, timeout=1.0):
            await queue.put(("ready", server.url))
            return


async def relay(runner: Any, queue: asyncio.Queue) -> None:
    """The load generator's events onto the queue, then its end (an error message or None)."""
    import logging

    error: str | None = None
    try:
        async for event in runner.events():
            await queue.put(("event", event))
    except SweepdeckError as exc:
        error = exc.message
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # reported as the run's failure
        logging.getLogger(__name__).exception("workload runner failed")
        error = f"{type(exc).__name__}: {exc}"
    await queue.put(("workload-done", error))


def url_host(host: str) -> str:
    """``host`` as it goes into a URL (a wildcard address is reached on loopback)."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
