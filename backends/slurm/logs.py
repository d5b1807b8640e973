"""Remote log tails that survive reconnects with no line lost or repeated.

A tail runs ``tail -c +OFFSET -F FILE`` on the login node (the run directory is
on the shared filesystem) and delivers complete lines. ``offset`` counts the
bytes of the lines already delivered, so after a dropped connection the next
tail starts exactly after the last delivered line: a partial line that was in
flight is read again from its start, never shown twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
from collections.abc import Callable

import asyncssh

from config.errors import SweepdeckError

log = logging.getLogger(__name__)

LineSink = Callable[[str, str], None]  # (stream, text)


class RemoteTail:
    """Follow one remote file.

    Args:
        remote: The :class:`~backends.slurm.ssh.Remote`.
        path: Absolute remote path.
        stream: ``out`` or ``err`` (passed to ``sink``).
        sink: Called with each complete line (without the newline).
        offset: Bytes already delivered (resume point).
    """

    def __init__(self, remote, path: str, stream: str, sink: LineSink, offset: int = 0) -> None:
        self.remote = remote
        self.path = path
        self.stream = stream
        self.sink = sink
        self.offset = offset
        self.lines = 0
        self._task: asyncio.Task | None = None
        self._process: asyncssh.SSHClientProcess | None = None
        self._stopped = False

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._stopped = False
            self._task = asyncio.create_task(self._run(), name=f"tail-{self.stream}")

    async def restart(self) -> None:
        """Resume from :attr:`offset` on the current connection (after a reconnect)."""
        if self._stopped:
            return
        await self._cancel()
        self.start()

    async def stop(self) -> None:
        self._stopped = True
        await self._cancel()

    async def finish(self, timeout: float = 15.0) -> None:
        """The file is complete (the job ended): stop following and deliver whatever is left, at once.

        A follower reads what ``tail -F`` has sent so far; on a busy login node the last lines
        (often the error that explains the end) may not have come through yet.
        """
        await self.stop()
        try:
            res = await self.remote.run(["tail", "-c", f"+{self.offset + 1}", self.path], timeout=timeout)
        except SweepdeckError as exc:
            log.debug("last read of %s failed: %s", self.path, exc.message)
            return
        if not res.ok or not res.stdout:
            return
        body = res.stdout[:-1] if res.stdout.endswith("\n") else res.stdout  # the last line may lack its newline
        for text in body.split("\n"):
            self.offset += len(text.encode("utf-8", "replace")) + 1
            self.lines += 1
            self.sink(self.stream, text.rstrip("\r"))

    async def _cancel(self) -> None:
        proc, self._process = self._process, None
        if proc is not None:
            with contextlib.suppress(Exception):
                proc.close()
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def command(self) -> str:
        # -c +N is 1-based: byte offset+1 is the first byte not yet delivered.
        return shlex.join(["tail", "-c", f"+{self.offset + 1}", "-F", self.path]) + " 2>/dev/null"

    async def _run(self) -> None:
        while not self._stopped:
            try:
                conn = await self.remote.wait_up()
                proc = await conn.create_process(self.command(), encoding=None)
                self._process = proc
                await self._pump(proc)
            except asyncio.CancelledError:
                raise
            except (asyncssh.Error, OSError, ConnectionError) as exc:
                log.debug("tail %s interrupted: %s", self.path, exc)
            # The connection dropped (or tail ended): the reconnect hook restarts
            # us; if it is still up, retry shortly ourselves.
            if self._stopped:
                return
            await asyncio.sleep(0.2)

    async def _pump(self, proc: asyncssh.SSHClientProcess) -> None:
        buf = b""
        while True:
            chunk = await proc.stdout.read(65536)
            if not chunk:
                return
            buf += chunk
            if b"\n" not in buf:
                continue
            *complete, buf = buf.split(b"\n")
            for raw in complete:
                self.offset += len(raw) + 1
                self.lines += 1
                text = raw.decode("utf-8", "replace").rstrip("\r")
                self.sink(self.stream, text)
