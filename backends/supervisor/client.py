"""The client side of a run: start its supervisor, follow its events, ask it to stop or detach.

:func:`start_run` makes the run directory, starts the supervisor (a process
of its own by default, see :mod:`backends.supervisor.launcher`) and returns a
:class:`RunLink` connected through the supervisor's lifeline.
:func:`connect` links to the supervisor of a run that is already going (a
second terminal, ``sweepdeck attach``, the TUI's runs list).

A :class:`RunLink` reads every message in one task: events go to
``on_event`` (a ``LogBatch`` arrives as its LogLines, or as one list through
``on_events``), control messages resolve what :meth:`RunLink.launched`,
:meth:`RunLink.result` and the requests wait for. If the supervisor vanishes
without a result, the link ends with a ``lost`` result and the run is reconciled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from backends.events import Event, Finished, LogLine
from backends.store import StoreWriteError, expand_record
from backends.supervisor.protocol import MAX_LINE, connect_socket, decode, encode, socket_path
from config.errors import SweepdeckError

if TYPE_CHECKING:
    import socket

    from backends.base import Backend
    from backends.store import RunDir, RunRecord, RunStore
    from backends.supervisor.launcher import Launcher
    from config.spec import ExperimentSpec

log = logging.getLogger(__name__)


class SupervisorGone(SweepdeckError):
    """The run's supervisor is not there (it ended, or crashed)."""


@dataclass(slots=True)
class RunInfo:
    """What the supervisor says about the run it launched (or adopted)."""

    id: str
    backend: str
    path: str
    handle: dict[str, Any] = field(default_factory=dict)
    started: float = 0.0


#: Every open link of this process, for :func:`hang_up_all` (a signal handler's way to let go at once).
_OPEN: weakref.WeakSet[RunLink] = weakref.WeakSet()
_OPEN_LOCK = threading.Lock()


def hang_up_all() -> int:
    """Shut down every open link's socket now, from any thread (a signal handler, the terminal
    watcher) even while the event loop is blocked: each supervisor sees its client go at once and,
    unless its run was detached, starts stopping it, instead of when this process finally exits.

    Returns:
        How many links were hung up.
    """
    with _OPEN_LOCK:
        links = list(_OPEN)
    return sum(link.hang_up() for link in links)


class RunLink:
    """A client's connection to one run's supervisor.

    Args:
        reader, writer: The connection.
        on_event: Called with every event, in order.
        on_events: Called with the lines of a log batch as one list (instead of
            ``on_event`` per line), when given: the TUI's fast path.
        on_reset: Called when a snapshot starts (show only what follows).
        process: The supervisor process, when this client started it (reaped at the end).
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        on_event: Callable[[Event], Any] | None = None,
        on_events: Callable[[list[LogLine]], Any] | None = None,
        on_reset: Callable[[], Any] | None = None,
        process: Any = None,
        run_dir: RunDir | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.on_event = on_event
        self.on_events = on_events
        self.on_reset = on_reset
        self.process = process
        self.run_dir = run_dir
        self.info: RunInfo | None = None
        self.detached = False
        self.pid: int | None = None
        loop = asyncio.get_running_loop()
        self._launched: asyncio.Future[RunInfo] = loop.create_future()
        self._result: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._replies: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        self._reader_task: asyncio.Task | None = None
        self.closed = False
        sock = writer.get_extra_info("socket")
        self._fd: int | None = sock.fileno() if sock is not None else None
        with _OPEN_LOCK:
            _OPEN.add(self)

    def hang_up(self) -> bool:
        """Shut the connection down at once (thread-safe; the loop notices the end later)."""
        fd = self._fd
        if fd is None or self.closed:
            return False
        try:
            # shutdown acts on the socket, not the descriptor: a duplicate reaches the same connection
            with socket.socket(fileno=os.dup(fd)) as dup:
                dup.shutdown(socket.SHUT_RDWR)
        except OSError:
            return False
        return True

    def start(self) -> None:
        """Start reading (once)."""
        if self._reader_task is None:
            self._reader_task = asyncio.ensure_future(self._read())

    # -------------------------------------------------------------- reading

    async def _read(self) -> None:
        try:
            while True:
                try:
                    line = await self.reader.readline()
                except (ConnectionError, ValueError, asyncio.LimitOverrunError):
                    break
                if not line:
                    break
                message = decode(line)
                if message is not None:
                    self._dispatch(message)
        finally:
            self._ended()

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type", "")
        if not kind.startswith("_"):
            self._deliver(message)
        elif kind == "_hello":
            self.pid = message.get("pid")
        elif kind == "_launched":
            self.info = _run_info(message.get("run") or {})
            _settle(self._launched, self.info)
        elif kind == "_launch_failed":
            _fail(self._launched,
                  SweepdeckError(message.get("message") or "The launch failed.", message.get("hint") or ""))
        elif kind == "_snapshot" and self.on_reset is not None:
            self.on_reset()
        elif kind in ("_reply", "_status"):
            op = message.get("op") if kind == "_reply" else "status"
            waiters = self._replies.get(str(op)) or []
            if waiters:
                _settle(waiters.pop(0), message)
        elif kind == "_result":
            _settle(self._result, message)

    def _deliver(self, record: dict[str, Any]) -> None:
        try:
            events = expand_record(record)
        except (KeyError, TypeError, ValueError):
            return
        if self.on_events is not None and record.get("type") == "LogBatch":
            self.on_events(events)  # type: ignore[arg-type] # a LogBatch expands to LogLines only
            return
        if self.on_event is not None:
            for event in events:
                self.on_event(event)

    def _ended(self) -> None:
        self.closed = True
        with _OPEN_LOCK:
            _OPEN.discard(self)
        gone = SupervisorGone("The run's supervisor ended without saying how the run ended.",
                              "Its state is reconciled from its saved events: see `sweepdeck runs`.")
        _fail(self._launched, gone)
        if not self._result.done():
            self._result.set_result(self._lost_result())
        for waiters in self._replies.values():
            for waiter in waiters:
                _fail(waiter, gone)
        self._replies.clear()
        if self.process is not None:
            with contextlib.suppress(Exception):
                self.process.poll()

    def _lost_result(self) -> dict[str, Any]:
        """The supervisor vanished: reconcile the run from what it saved."""
        outcome, message = "lost", "the run's supervisor ended unexpectedly"
        if self.run_dir is not None:
            from backends.supervisor.reconcile import reconcile_dir

            with contextlib.suppress(Exception):
                meta = reconcile_dir(self.run_dir, supervisor_gone=True)
                outcome = meta.get("state") or outcome
                message = meta.get("message") or message
        return {"type": "_result", "outcome": outcome, "message": message, "summary": {}, "results": None,
                "signal": None}

    # ------------------------------------------------------------- requests

    async def send(self, message: dict[str, Any]) -> None:
        """Send one message (a closed link ignores it)."""
        if self.closed:
            return
        try:
            self.writer.write(encode(message))
            await self.writer.drain()
        except (ConnectionError, RuntimeError):
            self.closed = True

    def send_nowait(self, message: dict[str, Any]) -> None:
        """Send from synchronous code (a signal handler)."""
        if self.closed:
            return
        try:
            self.writer.write(encode(message))
        except (ConnectionError, RuntimeError):
            self.closed = True

    async def _request(self, op: str, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies.setdefault(op, []).append(waiter)
        await self.send(message)
        if self.closed and not waiter.done():
            raise SupervisorGone("The run's supervisor is gone.")
        return await asyncio.wait_for(waiter, timeout)

    async def follow(self, *, snapshot: int | None = None, offset: int | None = None, hold: bool = True) -> None:
        """Ask for the run's state (a snapshot with ``snapshot`` log lines, or the saved records from
        byte ``offset``) and then every event; with ``hold`` this connection keeps the run alive."""
        message: dict[str, Any] = {"op": "follow", "hold": hold}
        if offset is not None:
            message["offset"] = offset
        elif snapshot is not None:
            message["snapshot"] = snapshot
        await self.send(message)

    async def cancel(self, *, graceful: bool = True, reason: str = "stopped by the user", timeout: float = 5.0,
                     within: float | None = None) -> bool:
        """Ask the run to stop (``within`` seconds for the stop and the cleanup, when given);
        True when the supervisor took the request."""
        message: dict[str, Any] = {"op": "cancel", "graceful": graceful, "reason": reason}
        if within is not None:
            message["within"] = within
        try:
            reply = await self._request("cancel", message, timeout)
        except (TimeoutError, SupervisorGone):
            return False
        return bool(reply.get("ok"))

    async def detach(self, timeout: float = 5.0) -> str:
        """Make the run independent of its clients; returns the command that attaches again.

        Raises:
            SweepdeckError: the run has ended (or the supervisor is gone).
        """
        try:
            reply = await self._request("detach", {"op": "detach"}, timeout)
        except (TimeoutError, SupervisorGone):
            raise SweepdeckError("The run's supervisor did not answer; it cannot be detached.") from None
        if not reply.get("ok"):
            raise SweepdeckError(f"Not detached: {reply.get('message') or 'refused'}.")
        self.detached = True
        return str(reply.get("message") or "")

    async def status(self, timeout: float = 2.0) -> dict[str, Any]:
        """The supervisor's ``_status`` (state, clients, detached; ``run``: the launched run's facts).

        Raises:
            SupervisorGone: no answer.
        """
        reply = await self._request("status", {"op": "status"}, timeout)
        if reply.get("run") and self.info is None:
            self.info = _run_info(reply["run"])
        return reply

    def terminate(self, *, kill: bool = False) -> None:
        """Stop a supervisor that does not answer: SIGTERM (it stops the run at once and cleans
        up), or with ``kill`` SIGKILL (what it started locally dies with it; the run is reconciled)."""
        if self.process is not None:
            with contextlib.suppress(OSError):
                self.process.kill() if kill else self.process.terminate()
            return
        if self.pid and self.pid != os.getpid():  # a supervisor this client did not start
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL if kill else signal.SIGTERM)

    # --------------------------------------------------------------- waiting

    async def launched(self) -> RunInfo:
        """The launched run (raises the launch's SweepdeckError if it failed)."""
        return await asyncio.shield(self._launched)

    async def result(self) -> dict[str, Any]:
        """The ``_result`` message (after the supervisor's cleanup), or a ``lost`` one."""
        return await asyncio.shield(self._result)

    @property
    def done(self) -> bool:
        return self._result.done()

    def close(self) -> None:
        """Hang up (a holding connection: if it was the last, the supervisor stops the run).

        The link's result is then ``detached`` (after :meth:`detach`) or ``left``: this client
        stopped following, which says nothing of how the run ends.
        """
        if not self._result.done():
            outcome = "detached" if self.detached else "left"
            self._result.set_result({"type": "_result", "outcome": outcome, "message": "", "summary": {},
                                     "results": None, "signal": None})
        self.closed = True  # before the descriptor closes: hang_up must not touch a reused number
        with _OPEN_LOCK:
            _OPEN.discard(self)
        with contextlib.suppress(Exception):
            self.writer.close()
        if self._reader_task is not None and not self._reader_task.done():
            self._reader_task.cancel()


def _run_info(run: dict[str, Any]) -> RunInfo:
    return RunInfo(run.get("id", ""), run.get("backend", ""), run.get("path", ""), run.get("handle") or {},
                   float(run.get("started") or time.time()))


def _settle(fut: asyncio.Future, value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _fail(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
        fut.exception()  # retrieved: nobody may be waiting for a launch that already happened


#: Bytes one read of the supervisor's socket may take (asyncio's default is 256 KiB a turn of the loop:
#: a client whose turns are long — a screen being drawn — then reads less than a busy run sends).
READ_CHUNK = 4 * 1024 * 1024


async def _open(sock: socket.socket, **kwargs: Any) -> RunLink:
    reader, writer = await asyncio.open_unix_connection(sock=sock, limit=MAX_LINE)
    with contextlib.suppress(AttributeError):  # asyncio's selector transport reads max_size bytes a turn
        writer.transport.max_size = READ_CHUNK  # type: ignore[attr-defined] # absent on other loops (uvloop)
    link = RunLink(reader, writer, **kwargs)
    link.start()
    return link


async def start_run(
    backend: Backend,
    spec: ExperimentSpec,
    *,
    store: RunStore,
    launcher: Launcher | None = None,
    on_event: Callable[[Event], Any] | None = None,
    on_events: Callable[[list[LogLine]], Any] | None = None,
    default_image: str | None = None,
    adopt: RunRecord | None = None,
) -> RunLink:
    """Make the run directory and start the run's supervisor; the link holds the run from the first moment.

    Args:
        backend: The backend (pre-flight already done by the caller).
        spec: The spec to launch.
        store: The run store.
        launcher: Where the supervisor runs (default: :func:`backends.supervisor.launcher.default_launcher`).
        on_event, on_events: As for :class:`RunLink`.
        default_image: The catalog's default image (image-pull fixes).
        adopt: A saved run to follow again instead of launching ``spec``.

    Raises:
        SweepdeckError: the experiment id is taken, the state dir cannot be
            written, or the supervisor cannot be started (nothing is left behind).
    """
    from backends.supervisor.launcher import default_launcher

    launcher = launcher or default_launcher(backend)
    if adopt is not None:
        from backends.store import RunDir

        run_dir = RunDir(adopt.path)
    else:
        run_dir = store.create(spec, backend=backend.name)
    try:
        sock, process = await launcher.start(run_dir, backend, spec, store=store, default_image=default_image,
                                             adopt=adopt)
    except BaseException as exc:
        message = exc.message if isinstance(exc, SweepdeckError) else f"cannot start the run's supervisor: {exc}"
        with contextlib.suppress(StoreWriteError):
            run_dir.append_event(Finished("failed", message))
            run_dir.update_meta(state="failed", finished=time.time(), message=message)
        run_dir.close()
        if isinstance(exc, SweepdeckError):
            raise
        raise SweepdeckError(message) from exc
    return await _open(sock, on_event=on_event, on_events=on_events, process=process, run_dir=run_dir)


async def connect(
    run_dir: RunDir,
    *,
    on_event: Callable[[Event], Any] | None = None,
    on_events: Callable[[list[LogLine]], Any] | None = None,
    on_reset: Callable[[], Any] | None = None,
    timeout: float = 2.0,
) -> RunLink:
    """A link to the supervisor of a live run (call :meth:`RunLink.follow` to get its events).

    Raises:
        SupervisorGone: nothing answers on the run's control socket.
    """
    try:
        sock = await connect_socket(socket_path(run_dir.path), timeout)
    except (TimeoutError, OSError):
        raise SupervisorGone(f"Run {run_dir.id} has no supervisor running.") from None
    return await _open(sock, on_event=on_event, on_events=on_events, on_reset=on_reset, run_dir=run_dir)


__all__ = ["RunInfo", "RunLink", "SupervisorGone", "connect", "hang_up_all", "start_run"]
