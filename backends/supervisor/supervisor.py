"""The run supervisor: the one process that owns a run.

It holds what the run is made of — the backend and its :class:`Session`
(server process, SSH connection and tunnel, load generator, watches), the
event log and the cleanup registry — and serves its clients (the TUI, a
headless command) over the control protocol (:mod:`backends.supervisor.protocol`).

Policy, the same for every backend:

* A run that is not detached dies with its last client: when the last
  connection that *holds* the run closes — quit, signal, SIGKILL, a lost
  terminal — the supervisor cancels the run and runs its cleanup, bounded by
  :data:`LOST_CLIENT_CLEANUP` seconds.
* ``detach`` makes the run independent of its clients: it goes on until it
  finishes or a client stops it (``cancel``).
* SIGTERM to the supervisor stops the run (a second one: at once).
* Whatever it starts dies with it (:mod:`backends.procs`): a SIGKILL of the
  supervisor leaves no local process; what lives elsewhere (a SLURM job, a
  PipelineRun) is in ``resources.json`` for reconciliation.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import struct
import sys
import termios
import time
from typing import TYPE_CHECKING, Any

from backends.events import Finished, Notice, to_dict
from backends.procs import start_time
from backends.session import CLEANUP_TIMEOUT, Session, SessionResult
from backends.store import StoreWriteError, encode_record
from backends.supervisor.protocol import MAX_LINE, bind_socket, decode, encode, peer_uid, socket_path
from backends.supervisor.state import SNAPSHOT_LINES, RunState
from config.errors import SweepdeckError

if TYPE_CHECKING:
    from backends.base import Backend
    from backends.cleanup import CleanupRegistry
    from backends.store import RunDir, RunRecord, RunStore
    from config.spec import ExperimentSpec

log = logging.getLogger(__name__)

#: ioctl that tells the bytes a socket has sent but its peer not yet read (Linux; None elsewhere).
_OUTQ: int | None = getattr(termios, "TIOCOUTQ", None) if sys.platform.startswith("linux") else None

#: Seconds from the last client's disappearance to a finished cleanup (the issue's bound is 5 s).
LOST_CLIENT_CLEANUP = 4.0
#: Bytes a client may have unread before it is sent a fresh snapshot instead of every record.
LAG_HIGH = 32 * 1024 * 1024
#: Kernel send buffer asked for each client's socket (the kernel may grant less: ``net.core.wmem_max``).
#: The default (~200 KB) is less than a busy backend logs between two turns of the loop.
SOCKET_BUFFER = 4 * 1024 * 1024
#: Bytes queued for a reading client above which the backend is held (at most :data:`PACE_WAIT`).
PACE_HIGH = 4 * 1024 * 1024
#: Longest the backend is held for one client at a time; one that has read nothing in that time is
#: not waited for again until it reads again (it can still fall :data:`LAG_HIGH` behind and get a snapshot).
#: A client that reads, slowly, can go a while without taking a byte when the machine is busy (it is
#: decoding and showing a batch): with 0.25 s, the slow-reader test once got a snapshot in the suite
#: under load (1 run of 7), so the wait is longer; a stopped client costs the run this once per pause.
PACE_WAIT = 1.0
#: Seconds the supervisor waits for its clients to read the result before it exits.
LINGER = 2.0


class _Client:
    """One connection: the lifeline or a client that connected to the socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str) -> None:
        self.reader = reader
        self.writer = writer
        self.name = name
        self.holds = False
        self.follows = False
        self.lagging = False
        self.closed = False
        self.unpaced = False  # it did not read for PACE_WAIT: the backend does not wait for it
        self.sent = 0  # bytes queued for it so far
        self.read_mark = 0  # what it had read when it was last found not reading
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        transport = writer.transport
        if transport is not None:
            # drain() waits while more than PACE_HIGH is queued, until a quarter of it is left
            transport.set_write_buffer_limits(high=PACE_HIGH, low=PACE_HIGH // 4)

    def backlog(self) -> int:
        """Bytes queued in this process for the client."""
        transport = self.writer.transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def unread(self) -> int:
        """Bytes the client has not read: :meth:`backlog` and what waits in the kernel's socket
        (the process's share moves only when the client has read half the kernel's buffer)."""
        queued = 0
        sock = self.writer.get_extra_info("socket")
        if sock is not None and _OUTQ is not None:
            with contextlib.suppress(OSError, ValueError):
                queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0"))[0]
        return self.backlog() + queued

    def consumed(self) -> int:
        """Bytes the client has read so far."""
        return self.sent - self.unread()

    def send(self, data: bytes) -> bool:
        """Queue bytes; False when the client fell too far behind (it gets a snapshot later)."""
        if self.closed or self.lagging:
            return False
        try:
            self.writer.write(data)
        except (ConnectionError, RuntimeError):
            self.closed = True
            return False
        self.sent += len(data)
        transport = self.writer.transport
        if transport is not None and transport.get_write_buffer_size() > LAG_HIGH:
            self.lagging = True
            return False
        return True


class Supervisor:
    """Owns one run and serves its clients.

    Args:
        run_dir: The run's directory (made by the client that started the supervisor).
        backend: The backend, built in this process.
        spec: The run's spec.
        store: The run store.
        registry: The run's cleanup registry.
        lifeline: The starting client's end of a socket pair: a holding,
            following client from the first moment (no race with a socket that
            does not exist yet).
        adopt: A saved run to follow again (``backend.attach``) instead of launching one.
        default_image: The catalog's default image (for image-pull fixes).
        cleanup_timeout: Bound on a normal cleanup.
        lost_client_timeout: Bound on the cleanup after the last client vanished.
        snapshot_lines: Log lines kept for the snapshots new clients get.
        listen: Serve ``control.sock`` in the run dir (off for in-process tests that need no second client).
    """

    def __init__(
        self,
        run_dir: RunDir,
        backend: Backend,
        spec: ExperimentSpec,
        *,
        store: RunStore,
        registry: CleanupRegistry,
        lifeline: socket.socket | None = None,
        adopt: RunRecord | None = None,
        default_image: str | None = None,
        cleanup_timeout: float = CLEANUP_TIMEOUT,
        lost_client_timeout: float = LOST_CLIENT_CLEANUP,
        snapshot_lines: int = SNAPSHOT_LINES,
        listen: bool = True,
    ) -> None:
        self.run_dir = run_dir
        self.backend = backend
        self.spec = spec
        self.store = store
        self.registry = registry
        self.adopt_record = adopt
        self.lifeline = lifeline
        self.lost_client_timeout = lost_client_timeout
        self.listen = listen
        self.state = RunState(snapshot_lines)
        self.clients: set[_Client] = set()
        self.detached = False
        self.result: SessionResult | None = None
        self._result_line: bytes | None = None
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
        self._launched = asyncio.Event()
        self._all_gone = asyncio.Event()
        self.session = Session(
            backend, spec, store=store, run_dir=run_dir, on_event=self.state.apply, registry=registry,
            cleanup_timeout=cleanup_timeout, default_image=default_image, pace=self._pace,
        )
        run_dir.log.on_record = self._broadcast
        registry.on_change = self._save_resources

    # ------------------------------------------------------------ the run

    async def serve(self) -> SessionResult:
        """Launch (or adopt) the run, follow it to the end, clean up, tell the clients; returns the result."""
        try:
            self.run_dir.update_meta(supervisor={"pid": os.getpid(), "start": start_time(os.getpid())})
            self.run_dir.make_reserve()
        except StoreWriteError as exc:
            return await self._fail_early(exc.message, exc.hint)
        if self.lifeline is not None:
            await self._add_lifeline(self.lifeline)
        if self.listen:
            await self._listen()
        self._broadcast(encode({"type": "_hello", "pid": os.getpid(), "run_id": self.run_dir.id}))
        if self.session.cancelled:  # the starting client was gone (or asked to stop) before anything existed
            return await self._fail_early("The run was stopped before it started.", "", outcome="cancelled")
        try:
            run = await (self.session.adopt(self.adopt_record) if self.adopt_record else self.session.launch())
        except Exception as exc:  # any launch error becomes the client's one line
            message = exc.message if isinstance(exc, SweepdeckError) else f"launch failed: {exc}"
            hint = exc.hint if isinstance(exc, SweepdeckError) else ""
            self._broadcast(encode({"type": "_launch_failed", "message": message, "hint": hint}))
            return await self._end(SessionResult("failed", message))
        self._launched.set()
        self._broadcast(encode({"type": "_launched", "run": self._run_info()}))
        try:
            result = await self.session.follow()
        except asyncio.CancelledError:
            result = SessionResult("cancelled", "the supervisor was stopped", run=run)
        return await self._end(result)

    async def _fail_early(self, message: str, hint: str, outcome: str = "failed") -> SessionResult:
        self._broadcast(encode({"type": "_launch_failed", "message": message, "hint": hint}))
        with contextlib.suppress(StoreWriteError):
            self.run_dir.append_event(Finished(outcome, message))  # type: ignore[arg-type] # outcome is a literal word
            self.run_dir.update_meta(state=outcome, finished=time.time(), message=message)
        self.run_dir.close()
        return await self._end(SessionResult(outcome, message))

    async def _end(self, result: SessionResult) -> SessionResult:
        """Tell every client how it ended (cleanup is done by now), then close."""
        log.info("run %s ended (%s); cleanup done", self.run_dir.id, result.outcome)
        self.result = result
        finished = result.finished
        message = {
            "type": "_result", "outcome": result.outcome, "message": result.message, "signal": result.signal,
            "results": finished.results if finished else None, "summary": _plain(finished.summary) if finished else {},
        }
        self._result_line = encode(message)
        for client in list(self.clients):
            if client.follows and client.lagging and not client.closed:
                # it missed the end of the log while behind: the final snapshot first, or the last
                # lines never reach its screen (its resync task returns now that the result is set)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.writer.drain(), LINGER)
                client.lagging = False
                if not client.closed:
                    self._send_snapshot(client, SNAPSHOT_LINES)
            if client.follows:
                client.lagging = False
                client.send(self._result_line)
        with contextlib.suppress(StoreWriteError):
            self.run_dir.update_meta(supervisor=None)
        # give the clients a moment to read the result and hang up
        waiting = [c for c in self.clients if not c.closed]
        if waiting:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._drain_all(), LINGER)
        await self.close()
        return result

    async def _drain_all(self) -> None:
        for client in list(self.clients):
            with contextlib.suppress(Exception):
                await client.writer.drain()
        if any(not c.closed for c in self.clients):
            await self._all_gone.wait()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None
            with contextlib.suppress(OSError):
                socket_path(self.run_dir.path).unlink()
        for client in list(self.clients):
            client.closed = True
            with contextlib.suppress(Exception):
                client.writer.close()
        for task in list(self._tasks):
            task.cancel()
        self.registry.on_change = None
        self.run_dir.release_reserve()

    # ---------------------------------------------------------- events out

    def _broadcast(self, data: bytes) -> None:
        for client in list(self.clients):
            if client.follows and not client.send(data) and client.lagging and not client.closed:
                self._spawn(self._resync(client))

    async def _pace(self) -> None:
        """Back-pressure: hold the backend while a reading client's socket is full.

        The backend is held at most :data:`PACE_WAIT` at a time per client, and
        only for a client that reads: one that read nothing in that time (a
        stopped terminal, a blocked loop) is not waited for again until it reads
        again or its backlog is below :data:`PACE_HIGH`, so it cannot stall the
        run. A client that keeps reading, however slowly, gets every record
        instead of a catch-up snapshot; the backend goes at that client's pace
        meanwhile. (One that only paused — a process starved of CPU on a busy
        machine — is waited for again once it reads: each pause costs the run at
        most :data:`PACE_WAIT`.)
        """
        for client in list(self.clients):
            if not client.follows or client.lagging or client.closed:
                continue
            if client.backlog() <= PACE_HIGH:
                client.unpaced = False
                continue
            if client.unpaced:
                if client.consumed() <= client.read_mark:
                    continue  # still not reading
                client.unpaced = False  # it reads again
            before = client.consumed()
            try:
                await asyncio.wait_for(client.writer.drain(), PACE_WAIT)
            except TimeoutError:
                if client.consumed() <= before:  # it read nothing meanwhile
                    client.unpaced, client.read_mark = True, before
            except (ConnectionError, RuntimeError):
                client.closed = True

    async def _resync(self, client: _Client) -> None:
        """A client that fell behind gets a fresh snapshot once it has read what it was sent."""
        if getattr(client, "_resyncing", False):
            return
        client._resyncing = True  # type: ignore[attr-defined] # a flag for this task only
        try:
            await client.writer.drain()
            if client.closed or self.result is not None:  # the end sends the last snapshot itself
                return
            client.lagging = False
            self._send_snapshot(client, SNAPSHOT_LINES)
        except Exception:  # a client that cannot be written to is closed below
            client.closed = True
        finally:
            client._resyncing = False  # type: ignore[attr-defined]  # the flag set above

    def _send_snapshot(self, client: _Client, lines: int) -> None:
        with contextlib.suppress(StoreWriteError):
            self.run_dir.log.flush()  # everything folded so far has gone to the other clients
        parts = [encode({"type": "_snapshot", "offset": self.run_dir.log.size})]
        parts.extend(encode_record(record) for record in self.state.records(lines))
        parts.append(encode({"type": "_live"}))
        client.send(b"".join(parts))

    def _save_resources(self) -> None:
        try:
            self.run_dir.write_json("resources.json", self.registry.resources())
        except StoreWriteError as exc:
            log.warning("cannot save the run's resources: %s", exc.message)

    # ------------------------------------------------------------- clients

    async def _listen(self) -> None:
        path = socket_path(self.run_dir.path)
        try:
            sock = bind_socket(path)
        except OSError as exc:
            log.warning("cannot serve %s: %s", path, exc)
            return
        self._server = await asyncio.start_unix_server(self._accept, sock=sock, limit=MAX_LINE)

    async def _add_lifeline(self, sock: socket.socket) -> None:
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=MAX_LINE)
        client = _Client(reader, writer, "lifeline")
        client.holds = client.follows = True  # it sees every event from the first one
        self.clients.add(client)
        self._spawn(self._serve_client(client))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        uid = peer_uid(sock) if sock is not None else None
        if uid is not None and uid != os.getuid():
            writer.close()  # the socket is 0600 already; this is the second lock
            return
        client = _Client(reader, writer, f"client {len(self.clients) + 1}")
        self.clients.add(client)
        with contextlib.suppress(asyncio.CancelledError):  # the supervisor is closing: not an error to log
            await self._serve_client(client)

    async def _serve_client(self, client: _Client) -> None:
        try:
            while True:
                try:
                    line = await client.reader.readline()
                except (ConnectionError, asyncio.LimitOverrunError, ValueError):
                    break
                if not line:
                    break
                message = decode(line)
                if message is not None:
                    await self._handle(client, message)
        finally:
            client.closed = True
            self.clients.discard(client)
            with contextlib.suppress(Exception):
                client.writer.close()
            self._client_gone(client)

    def _client_gone(self, client: _Client) -> None:
        if not any(not c.closed for c in self.clients):
            self._all_gone.set()
        if not client.holds or self.detached or self.result is not None:
            return
        if any(c.holds and not c.closed for c in self.clients):
            return
        log.info("the last client is gone: stopping the run")
        self.session.request_cancel("the last client is gone", within=self.lost_client_timeout)

    async def _handle(self, client: _Client, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op != "status":
            log.info("%s: %s", client.name, op if op != "cancel" else f"cancel ({message.get('reason')})")
        if op == "follow":
            client.holds = bool(message.get("hold", True))
            if self._result_line is not None:
                client.follows = True
                client.send(self._result_line)
                return
            if "offset" in message:
                self._send_saved(client, int(message.get("offset") or 0))
            else:
                self._send_snapshot(client, int(message.get("snapshot", SNAPSHOT_LINES)))
            client.follows = True
        elif op == "cancel":
            graceful = bool(message.get("graceful", True))
            within = message.get("within")
            self.session.request_cancel(str(message.get("reason") or "stopped by the user"), graceful=graceful,
                                        within=(float(within) if isinstance(within, (int, float)) and within > 0
                                                else None))
            self._reply(client, "cancel", True, "stopping" if graceful else "stopping at once")
        elif op == "detach":
            self._detach(client)
        elif op == "status":
            client.send(encode(self._status()))
        else:
            self._reply(client, str(op), False, f"unknown op {op!r}")

    def _detach(self, client: _Client) -> None:
        if self.result is not None:
            self._reply(client, "detach", False, "the run has ended")
            return
        if not self.detached:
            self.detached = True
            with contextlib.suppress(StoreWriteError):
                self.run_dir.update_meta(state="detached", detached=time.time())
            note = Notice(f"Detached: {self.run_dir.id} keeps running without a client. "
                          f"Follow it again with: sweepdeck attach {self.run_dir.id}")
            self._spawn(self.session._emit(note))
        self._reply(client, "detach", True, f"sweepdeck attach {self.run_dir.id}")

    def _run_info(self) -> dict[str, Any] | None:
        run = self.session.run
        if run is None:
            return None
        return {"id": run.id, "backend": run.backend, "handle": _plain(run.handle), "started": run.started,
                "path": str(run.store.path)}

    def _status(self) -> dict[str, Any]:
        meta = self.run_dir.meta()
        return {
            "run": self._run_info(), "type": "_status", "state": meta.get("state", "unknown"),
            "detached": self.detached,
            "clients": sum(1 for c in self.clients if c.holds and not c.closed), "pid": os.getpid(),
            "run_id": self.run_dir.id, "offset": self.run_dir.log.size, "launched": self._launched.is_set(),
            "outcome": self.result.outcome if self.result else None,
        }

    def _send_saved(self, client: _Client, offset: int) -> None:
        """The saved records from byte ``offset`` (a client that read the file itself up to there)."""
        with contextlib.suppress(StoreWriteError):
            self.run_dir.log.flush()
        end = self.run_dir.log.size
        try:
            with open(self.run_dir.log.path, "rb") as fh:
                fh.seek(max(0, offset))
                data = fh.read(max(0, end - offset))
        except OSError:
            data = b""
        cut = data.rfind(b"\n") + 1  # whole lines only
        client.send(encode({"type": "_saved", "offset": offset}) + data[:cut] + encode({"type": "_live"}))

    def _reply(self, client: _Client, op: str, ok: bool, message: str) -> None:
        client.send(encode({"type": "_reply", "op": op, "ok": ok, "message": message}))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------ signals

    def install_signals(self) -> None:
        """SIGTERM stops the run (twice: at once); terminal signals are not ours (own session)."""
        loop = asyncio.get_running_loop()
        presses = 0

        def on_term() -> None:
            nonlocal presses
            presses += 1
            self.session.request_cancel("the supervisor got SIGTERM", int(signal.SIGTERM), graceful=presses == 1,
                                        within=LOST_CLIENT_CLEANUP)

        loop.add_signal_handler(signal.SIGTERM, on_term)
        for sig in (signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)


def _plain(value: Any) -> Any:
    """JSON-ready copy (handles, summaries)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def result_from_message(message: dict[str, Any]) -> Finished:
    """The Finished a ``_result`` message describes."""
    return Finished(message.get("outcome") or "failed", message.get("message") or "",
                    message.get("results"), message.get("summary") or {})


__all__ = ["LOST_CLIENT_CLEANUP", "Supervisor", "result_from_message", "to_dict"]
