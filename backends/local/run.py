"""One local run as a small state machine: the server starts, serves, runs the workload, stops.

:class:`ServerRun` consumes what the producers of :mod:`backends.local.server`
put on its queue and turns it into events. Its state moves

    starting ──ready──► ready ──► workload ──done──► stopping ──exit──► (ended)
        │                  │          │                  ▲
        └──── exit / cancel / startup timeout ───────────┘   (serving: keep_server)

and each kind of message has one handler (``_on_<kind>``), which yields
what the user should see and decides the outcome. What happened last (exit
code, outcome, the workload's summary) is kept on the instance, so the end
(:meth:`_end`) reports one Finished however the run got there.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from backends import diagnosis as dg
from backends.events import Endpoint, Event, Finished, LogLine, Notice, Phase
from backends.local import server as srv
from backends.procs import alive, stop_group

if TYPE_CHECKING:
    from backends.base import Run
    from backends.local.backend import LocalBackend
    from backends.local.server import LocalServer

READY_MARKERS = ("Application startup complete", "Uvicorn running on")
_URL_RE = re.compile(r"Uvicorn running on (https?://[^\s]+)")
#: Lines of server output kept for the failure message.
TAIL_LINES = 200
#: Seconds the server's last output may take to arrive after it exited.
DRAIN_SECONDS = 2.0


class ServerRun:
    """See module docs.

    Args:
        backend: The local backend (profile options, the runner factory, the registry).
        run: The run.
        server: Its server process.
    """

    def __init__(self, backend: LocalBackend, run: Run, server: LocalServer) -> None:
        self.backend = backend
        self.run = run
        self.spec = run.spec
        self.server = server
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.tasks: list[asyncio.Task] = []
        self.state = "starting"
        self.tail: list[str] = []
        self.eofs = 0
        self.exit_code: int | None = None
        self.outcome: Finished | None = None
        self.runner: Any = None
        self.probe: asyncio.Task | None = None
        self.fallback: asyncio.Task | None = None
        self.done = False
        self.started = time.time()
        self.ready_timeout = float(backend.profile.get("ready_timeout", 600.0))
        self.deadline = 0.0

    # ---------------------------------------------------------------- loop

    async def events(self) -> AsyncIterator[Event]:
        self.deadline = asyncio.get_running_loop().time() + self.ready_timeout
        self._start_producers()
        yield Phase("server", "starting", shlex.join(self.server.argv), kind="server", started=self.started)
        try:
            while not self.done:
                kind, payload = await self._next()
                handler: Callable[[Any], Iterator[Event]] | None = getattr(self, f"_on_{kind.replace('-', '_')}", None)
                if handler is not None:
                    for event in handler(payload):
                        yield event
        finally:
            await self._stop_producers()
        async for event in self._end():
            yield event

    async def _next(self) -> tuple[str, Any]:
        """The next message; while starting, a ``timeout`` one when the ready deadline passes."""
        if self.state != "starting":
            return await self.queue.get()
        left = max(0.0, self.deadline - asyncio.get_running_loop().time())
        try:
            return await asyncio.wait_for(self.queue.get(), left)
        except TimeoutError:
            return "timeout", None

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self.tasks.append(task)
        return task

    def _start_producers(self) -> None:
        server = self.server
        self._spawn(srv.read_pipe(server.out_fd, "out", self.queue))
        self._spawn(srv.read_pipe(server.err_fd, "err", self.queue))
        server.out_fd = server.err_fd = None  # owned by the readers now
        self._spawn(srv.watch_exit(server, self.queue))
        self._spawn(srv.wake_on_cancel(server, self.queue))
        if self.backend.server_kind == "command":
            # a custom command may never print vLLM's startup lines
            self.fallback = self._spawn(srv.fallback_probe(server, self.queue))

    async def _stop_producers(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.runner is not None and self.runner.summary is None:
            self.runner.stop()

    def _stop_server(self) -> None:
        self._spawn(srv.stop(self.server))

    def _stop_runner(self) -> None:
        if self.runner is not None:
            self.runner.stop()

    # ------------------------------------------------------------ handlers

    def _on_timeout(self, _payload: None) -> Iterator[Event]:
        yield dg.alert_for(dg.server_not_ready(self.ready_timeout), self.spec)
        self.outcome = Finished(
            "failed",
            f"The server never became ready within {self.ready_timeout:g} s; it was stopped. "
            "Raise the timeout (--ready-timeout SECONDS, or ready_timeout in the local profile), "
            "or read the server log above.",
        )
        self.done = True

    def _on_lines(self, lines: list[LogLine]) -> Iterator[Event]:
        yield from lines
        self.tail.extend(line.text for line in lines)
        del self.tail[:-TAIL_LINES]
        if self.state == "starting" and self.probe is None:
            self._look_for_ready(lines)

    def _look_for_ready(self, lines: list[LogLine]) -> None:
        for line in lines:
            match = _URL_RE.search(line.text)
            if match and self.server.port == 0:
                self.server.url = match.group(1).rstrip("/")
            if any(m in line.text for m in READY_MARKERS):
                self.probe = self._spawn(srv.probe_ready(self.server, self.queue, self.deadline))
                return

    def _on_eof(self, _stream: str) -> Iterator[Event]:
        self.eofs += 1
        if self.eofs == 2 and self.exit_code is not None:
            self.done = True
        return iter(())

    def _on_exit(self, code: int | None) -> Iterator[Event]:
        self.exit_code = code
        if self.outcome is None:
            if self.server.cancelled:
                self.outcome = Finished("cancelled", "the server was stopped.")
            elif self.state in ("starting", "ready", "workload", "serving"):
                self.outcome = self.backend.died(self.state, code, self.tail)
        self._stop_runner()
        if self.eofs == 2:
            self.done = True
        else:  # what the server printed last may still be in the pipes: bounded
            self._spawn(srv.later(self.queue, DRAIN_SECONDS, ("drained", None)))
        return iter(())

    def _on_drained(self, _payload: None) -> Iterator[Event]:
        self.done = True
        return iter(())

    def _on_cancel(self, _payload: None) -> Iterator[Event]:
        if self.outcome is None:
            self.outcome = Finished("cancelled", "the server was stopped.")
        self._stop_runner()
        if self.exit_code is not None:
            self.done = True
        else:
            self._stop_server()
        return iter(())

    def _on_ready(self, _url: str) -> Iterator[Event]:
        if self.state != "starting":
            return
        self.state = "ready"
        if self.fallback is not None:
            self.fallback.cancel()
        server, profile = self.server, self.backend.profile
        yield Phase("server", "ready", server.url, kind="server", started=self.started, finished=None)
        yield Endpoint(server.url, True, self.spec.model, f"pid {server.pid}")
        if server.cancelled:
            return
        if not profile.get("run_workload", True):
            if profile.get("keep_server", False):
                yield Notice(f"Serving {self.spec.model} at {server.url} until you quit.")
                return
            self.outcome = Finished("succeeded", f"Server was ready at {server.url}.")
            self.state = "stopping"
            self._stop_server()
            return
        self.state = "workload"
        self.runner = self.backend.make_runner(self.run, server)
        workload = self.spec.workload
        yield Phase("workload", "running", f"{workload.app}: {workload.max_requests} requests", kind="workload")
        self._spawn(srv.relay(self.runner, self.queue))

    def _on_event(self, event: Event) -> Iterator[Event]:
        yield event

    def _on_workload_done(self, error: str | None) -> Iterator[Event]:
        if self.server.cancelled or self.outcome is not None:
            return  # a cancel or the server's exit decided the outcome already
        self.outcome = self._workload_verdict(error)
        word = "done" if self.outcome.outcome == "succeeded" else "failed"
        yield Phase("workload", word, self.outcome.message, kind="workload")
        if self.backend.profile.get("keep_server", False) and self.outcome.outcome == "succeeded":
            yield Notice(f"Workload done; still serving {self.spec.model} at {self.server.url} until you quit.")
            self.state = "serving"
            return
        self.state = "stopping"
        yield Phase("server", "stopping", "workload finished", kind="server")
        self._stop_server()

    def _workload_verdict(self, error: str | None) -> Finished:
        summary = (self.runner.summary if self.runner is not None else None) or {}
        results = str(self.run.store.results_dir / "results.json")
        if error is not None:
            return Finished("failed", f"The workload failed: {error}", summary=summary)
        outcome = workload_outcome(summary, results)
        found = dg.primary(dg.diagnose_lines(self.tail))
        if outcome.outcome == "succeeded" and (found is not None or not alive(self.server.pid)):
            # the server failed under load: the numbers are not a clean benchmark
            why = f"{found.title}: {found.message}" if found else "The server exited"
            return Finished("failed", f"{why} (while the workload ran: {outcome.message[:-1]})", results, summary)
        return outcome

    # ----------------------------------------------------------------- end

    async def _end(self) -> AsyncIterator[Event]:
        server = self.server
        if self.exit_code is None or alive(server.pid):
            await stop_group(server.pgid, server.proc)
            self.exit_code = server.proc.poll() if server.proc is not None else None
        self.backend.forget(server)
        yield Phase("server", "exited", f"exit code {self.exit_code}", kind="server", finished=time.time())
        outcome = self.outcome
        if outcome is None:
            code = self.exit_code
            outcome = (
                self.backend.died("stopping", code, self.tail) if code else Finished("failed", "The server stopped.")
            )
        summary = self.runner.summary if self.runner is not None else None
        if summary and "completed" not in (outcome.summary or {}):
            # a cancelled or crashed run still reports what its requests measured (next to why it ended)
            results = self.run.store.results_dir / "results.json"
            outcome = replace(outcome, summary={**summary, **(outcome.summary or {})},
                              results=str(results) if results.exists() else None)
        yield outcome


def workload_outcome(summary: dict[str, Any], results: str) -> Finished:
    """The run's Finished from the workload's summary (no request succeeded: failed)."""
    done = int(summary.get("completed") or 0)
    failed = int(summary.get("failed") or 0) + int(summary.get("cancelled") or 0)
    rps = summary.get("requests_per_s") or 0.0
    msg = f"{done} requests completed" + (f", {failed} failed" if failed else "") + f" ({rps:.2f} req/s)."
    if done == 0:
        errors = summary.get("errors") or {}
        first = next(iter(errors), "")
        return Finished("failed", f"No request succeeded ({failed} failed{': ' + first if first else ''}).",
                        results, summary)
    return Finished("succeeded", msg, results, summary)
