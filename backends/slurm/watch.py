"""Following one SLURM run: the job's state, the tunnel and the log tails, as events.

:class:`RunWatch` drives a run for :class:`~backends.slurm.backend.SlurmBackend` (a fresh launch or
an attach): it waits for the job to run and the server to be ready, opens the SSH tunnel, tails the
server's logs from their saved byte offsets, reads them with the diagnosis and reports how the job
ended. What it needs to find the run again (job id, node, port, log offsets) goes into the run's
handle file (:meth:`backends.store.RunDir.write_handle`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from backends.base import Run
from backends.events import Alert, Endpoint, Event, Finished, LogLine, Notice, Phase
from backends.procs import holder_name
from backends.slurm import jobs
from backends.slurm.logs import RemoteTail
from backends.slurm.ssh import LOOPBACK, Remote
from config.durations import format_slurm_duration
from config.errors import SweepdeckError

if TYPE_CHECKING:
    from backends.slurm.backend import SlurmBackend

log = logging.getLogger(__name__)

#: A server log line that says vLLM is serving.
READY_MARKERS = ("Application startup complete",)


# ------------------------------------------------------------------ run watch


class RunWatch:
    """Drives one run's events (fresh launch or attach)."""

    def __init__(self, backend: SlurmBackend, run: Run) -> None:
        self.backend = backend
        self.run = run
        self.profile = backend.profile
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.buffer: list[tuple[LogLine, int]] | None = []  # lines held back until the tunnel works
        self.err_tail: deque[str] = deque(maxlen=30)
        self.out_tail: deque[str] = deque(maxlen=30)
        self.diagnoses: list[Any] = []
        from backends.diagnosis import LogDiagnoser

        self.reader = LogDiagnoser()
        self.ready = asyncio.Event()
        self.job_ended = asyncio.Event()
        self.job_state: jobs.JobState | None = None
        self.tails: dict[str, RemoteTail] = {}
        self.tunnel_open = False
        self.remote: Remote | None = None
        self.sub: jobs.Subscription | None = None
        self._tasks: list[asyncio.Task] = []
        self._finished = False
        self._state_listener: Callable[[str, str], Any] | None = None
        self._changed = asyncio.Event()  # set by the job watcher on each state change

    # emit -----------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        if self._finished:
            return
        if isinstance(event, Finished):
            self._finished = True
        # The driver (backends.session) saves every event in the run store.
        self.queue.put_nowait(event)

    def info(self, message: str) -> None:
        self.emit(Notice(message))

    def _on_line(self, stream: str, text: str) -> None:
        line = LogLine(text, "err" if stream == "err" else "out", "vllm")
        (self.err_tail if stream == "err" else self.out_tail).append(text)
        if any(m in text for m in READY_MARKERS):
            self.ready.set()
        self._diagnose(text)
        # The tail has counted this line's bytes already: ``after`` is where the
        # next line starts. Offsets saved for attach only cover lines shown.
        after = self.tails[stream].offset if stream in self.tails else 0
        if self.buffer is not None:
            self.buffer.append((line, after))
            if len(self.buffer) > 20000:
                del self.buffer[:5000]
        else:
            self.emit(line)
            self.run.handle.setdefault("offsets", {})[stream] = after

    def _diagnose(self, text: str) -> None:
        # read with context (vLLM's settings, the start-up phase, the exception a "see root cause above" means)
        found = self.reader.feed(text)
        if found and all(d.rule_id != found.rule_id for d in self.diagnoses):
            self.diagnoses.append(found)

    def _flush_buffer(self) -> None:
        buf, self.buffer = self.buffer, None
        offsets = self.run.handle.setdefault("offsets", {})
        for line, after in buf or []:
            self.emit(line)
            offsets[line.stream] = after

    # driver -----------------------------------------------------------------
    async def events(self) -> AsyncIterator[Event]:
        main = asyncio.create_task(self._main(), name=f"slurm-run-{self.run.id}")
        self._tasks.append(main)
        try:
            while True:
                event = await self.queue.get()
                yield event
                if isinstance(event, Finished):
                    break
        finally:
            if not main.done():
                main.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await main
            await self._stop_tails()
            # Save the byte offsets shown so far: attach resumes exactly there.
            self.backend._write_handle(self.run)
            self.run.store.flush()

    async def _main(self) -> None:
        try:
            await self._lifecycle()
        except asyncio.CancelledError:
            raise
        except SweepdeckError as exc:
            self.emit(Alert("slurm", exc.message + (f" ({exc.hint})" if exc.hint else ""), "error"))
            self.emit(Finished("failed", exc.message))
        except Exception as exc:  # never let a bug hang the event stream
            log.exception("slurm run %s failed", self.run.id)
            self.emit(Finished("failed", f"internal error: {exc}"))
        finally:
            await self._stop_tails()

    async def stop(self) -> None:
        """Stop watching (tunnel and tails closed; the job is not touched)."""
        await self._stop_tails()
        self._close_tunnel()
        if self.sub is not None:
            self.sub.close()
        if self.remote is not None:
            self.remote.forget(self._state_listener, self._resume_tails)
        for task in self._tasks:
            if not task.done() and task is not asyncio.current_task():
                task.cancel()

    async def _stop_tails(self) -> None:
        for tail in self.tails.values():
            await tail.stop()

    def _close_tunnel(self) -> None:
        if self.tunnel_open and self.remote is not None:
            self.remote.close_forward(int(self.run.handle["local_port"]))
            self.tunnel_open = False
        token = self.backend._tokens.pop((self.run.id, "tunnel"), None)
        if token is not None:
            self.backend.registry.unregister(token)

    def _on_ssh_state(self, state: str, detail: str) -> None:
        unit = (
            f"tunnel {LOOPBACK}:{self.run.handle['local_port']}"
            if self.tunnel_open
            else f"ssh {self.backend.target.host}"
        )
        self.emit(Phase(unit, state, detail, kind="tunnel" if self.tunnel_open else "ssh"))
        if state == "failed":
            self.emit(Alert("ssh", f"{detail} The job was left as it is (scancel it by hand if needed).", "error"))
            self.emit(Finished("failed", detail))

    async def _wait_running(self, job_id: str, started: float) -> bool:
        """Until the job runs (True), or it ended or did not start in time (False: reported, and cancelled)."""
        h = self.run.handle
        self.info("Waiting for job to start...")
        start_timeout = float(self.profile.get("start_timeout", 600.0))
        last_reason = None
        while True:
            st = self.job_state
            if st is not None and st.running:
                break
            if self.job_ended.is_set():
                await self._job_over("before it started")
                return False
            if st is not None and st.state == "PENDING" and st.reason != last_reason:
                last_reason = st.reason
                self.emit(Phase(f"job {job_id}", "PENDING", st.reason, kind="job"))
            left = start_timeout - (time.monotonic() - started)
            if left <= 0:
                await self._fail_and_cancel(
                    "job-start-timeout",
                    f"Job {job_id} did not start within {format_slurm_duration(int(start_timeout))}"
                    + (f" (still PENDING: {last_reason})" if last_reason else "")
                    + "; it was cancelled.",
                    "The cluster is busy: try a shorter duration (-t), another partition, or raise start_timeout.",
                )
                return False
            await self._wait_change(left)
        h["node"] = st.node
        self.backend._write_handle(self.run)
        self.run.store.update_meta(node=h["node"])
        return True

    async def _lifecycle(self) -> None:
        h = self.run.handle
        job_id = h["job_id"]
        self.remote = await self.backend.remote()
        self._state_listener = self._on_ssh_state
        self.remote.on_state(self._state_listener)
        self.remote.on_reconnect(self._resume_tails)
        poller = await self.backend.poller()
        self.sub = poller.watch(job_id)
        self._tasks.append(asyncio.create_task(self._watch_job(), name=f"watch-{job_id}"))
        started = time.monotonic()
        attached = bool(h.get("attached"))
        if not attached:
            self.emit(Phase(f"job {job_id}", "SUBMITTED", kind="job"))

        # 1. wait for RUNNING -------------------------------------------------
        if (not attached or not h.get("node")) and not await self._wait_running(job_id, started):
            return
        self.emit(Phase(f"job {job_id}", "RUNNING", h["node"], kind="job", started=time.time()))

        # 2. tails + server address -------------------------------------------
        self._start_tails()
        ready_timeout = float(self.profile.get("ready_timeout", 600.0))
        ready_started = time.monotonic()
        # An attached run whose server had already published its address was
        # ready before (its startup line is behind the saved offset).
        need_ready = not attached or not h.get("port")
        if not h.get("port"):
            self.info("Waiting for server address...")
            address = await self._wait_address(ready_started, ready_timeout)
            if address is None:
                return
            node, _, port = address.rpartition(":")
            h["node_addr"], h["port"] = node, port
            self.backend._write_handle(self.run)
        server_unit = f"server {h.get('node_addr') or h['node']}:{h['port']}"
        self.info(f"Server address: {h.get('node_addr') or h['node']}:{h['port']}")
        self.emit(Phase(server_unit, "STARTING", f"job {job_id}", kind="server"))

        # 3. server ready ------------------------------------------------------
        if need_ready:
            ok = await self._wait_ready(ready_started, ready_timeout)
            if not ok:
                return

        # 4. tunnel -------------------------------------------------------------
        local_port = int(h["local_port"])
        self.info(f"Establishing SSH tunnel (local port {local_port})...")
        target_host = self.profile.get("server_host") or h.get("node_addr") or h["node"]
        try:
            if self.profile.get("node_ssh"):
                await self.remote.forward(
                    local_port, target_host, int(h["port"]), via=h["node"], via_port=self.profile.get("node_ssh_port")
                )
            else:
                await self.remote.forward(local_port, target_host, int(h["port"]))
        except SweepdeckError as exc:
            return await self._fail_and_cancel(
                "tunnel", f"Could not open the tunnel through {h['node']}: {exc.message}", exc.hint, cancel=not attached
            )
        except OSError as exc:
            holder = holder_name(local_port)
            return await self._fail_and_cancel(
                "tunnel",
                f"Could not open the tunnel on local port {local_port}: {exc.strerror or exc}"
                + (f" (held by {holder})" if holder else "")
                + ".",
                "Free the port or choose another local_port.",
                cancel=not attached,
            )
        self.tunnel_open = True
        remote = self.remote

        def close_tunnel() -> None:
            remote.close_forward(local_port)

        self.backend._tokens[(self.run.id, "tunnel")] = self.backend.registry.register(
            f"close tunnel {LOOPBACK}:{local_port}", close_tunnel, resource={"kind": "listener", "port": local_port}
        )
        self.emit(Phase(f"tunnel {LOOPBACK}:{local_port}", "up", f"{target_host}:{h['port']}", kind="tunnel"))
        self.info("Testing connection...")
        url = f"http://localhost:{local_port}"
        # An attached server may still be loading: give it the ready timeout.
        probe_timeout = (
            self.backend.target.connect_timeout
            if need_ready
            else max(ready_timeout, self.backend.target.connect_timeout)
        )
        ok, detail = await self._test_connection(local_port, probe_timeout)
        if not ok:
            return await self._fail_and_cancel(
                "tunnel",
                f"The server did not answer through the tunnel within {probe_timeout:g} s ({detail}).",
                "Check that the compute node is reachable from the login node.",
                cancel=not attached,
            )
        self.emit(Phase(server_unit, "READY", url, kind="server"))
        self.emit(Endpoint(url, True, h.get("served_name", ""), f"job {job_id} on {h['node']}"))
        self.run.store.update_meta(endpoint=url)

        # 5. stream -------------------------------------------------------------
        self.info("Streaming logs (Ctrl+C to stop and cleanup)...")
        self._flush_buffer()
        if self.profile.get("run_workload"):
            await self._run_workload(url)
            return
        await self.job_ended.wait()
        await self._job_over("while serving")

    # pieces -------------------------------------------------------------------
    async def _watch_job(self) -> None:
        assert self.sub is not None
        while True:
            st = await self.sub.next()
            self.job_state = st
            self._changed.set()
            if not st.active:
                self.job_ended.set()
                return

    async def _wait_change(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
        self._changed.clear()

    def _start_tails(self) -> None:
        assert self.remote is not None
        offsets = self.run.handle.setdefault("offsets", {"out": 0, "err": 0})
        for stream, name in (("out", "vllm.out"), ("err", "vllm.err")):
            if stream not in self.tails:
                tail = RemoteTail(
                    self.remote,
                    f"{self.run.handle['run_dir']}/{name}",
                    stream,
                    self._on_line,
                    int(offsets.get(stream, 0)),
                )
                self.tails[stream] = tail
                tail.start()

    async def _resume_tails(self) -> None:
        for tail in self.tails.values():
            await tail.restart()

    async def _wait_address(self, started: float, timeout: float) -> str | None:
        assert self.remote is not None
        path = f"{self.run.handle['run_dir']}/server_address.txt"
        interval = self.backend.poll_interval
        while True:
            try:
                res = await self.remote.run(["cat", path], timeout=30)
            except SweepdeckError as exc:  # a hiccup: the connection comes back, keep waiting
                log.info("reading %s: %s", path, exc.message)
                res = None
            text = (
                res.stdout.strip().splitlines()[0].strip() if res is not None and res.ok and res.stdout.strip() else ""
            )
            if text and ":" in text and text.rpartition(":")[2].isdigit():
                return text
            if self.job_ended.is_set():
                await self._job_over("before publishing the server address")
                return None
            left = timeout - (time.monotonic() - started)
            if left <= 0:
                await self._server_not_ready(timeout, "no server address was published")
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.job_ended.wait(), min(interval, left))

    async def _wait_ready(self, started: float, timeout: float) -> bool:
        left = timeout - (time.monotonic() - started)
        ready = asyncio.create_task(self.ready.wait())
        ended = asyncio.create_task(self.job_ended.wait())
        try:
            await asyncio.wait({ready, ended}, timeout=max(left, 0), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (ready, ended):
                t.cancel()
        if self.ready.is_set():
            return True
        if self.job_ended.is_set():
            await asyncio.sleep(0.3)  # let the tails deliver the server's last lines
            await self._job_over("during server startup")
            return False
        await self._server_not_ready(timeout, "no 'Application startup complete' line")
        return False

    async def _test_connection(self, local_port: int, timeout: float) -> tuple[bool, str]:
        import httpx

        deadline = time.monotonic() + timeout
        detail = "no answer"
        async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                try:
                    r = await client.get(f"http://{LOOPBACK}:{local_port}/v1/models")
                    if r.status_code == 200:
                        return True, ""
                    detail = f"HTTP {r.status_code}"
                except httpx.HTTPError as exc:
                    detail = type(exc).__name__
                if self.job_ended.is_set():
                    return False, "the job ended"
                await asyncio.sleep(0.2)
        return False, detail

    async def _run_workload(self, url: str) -> None:
        from backends.loadgen import WorkloadRunner

        spec = self.run.spec
        runner = WorkloadRunner(
            url,
            self.run.handle.get("served_name") or spec.model,
            spec.workload,
            results_path=self.run.store.results_dir / "workload.json",
        )
        async for event in runner.events():
            self.emit(event)
        self.emit(
            Finished(
                "succeeded",
                "workload finished",
                str(self.run.store.results_dir / "workload.json"),
                summary=getattr(runner, "summary", {}) or {},
            )
        )

    async def _server_not_ready(self, timeout: float, detail: str) -> None:
        from backends.diagnosis import alert_for, server_not_ready

        self._flush_buffer()
        self.emit(alert_for(server_not_ready(timeout, detail), self.run.spec))
        await self._fail_and_cancel(
            "server-not-ready",
            f"The server did not become ready within {format_slurm_duration(int(timeout))} ({detail}); "
            f"job {self.run.handle['job_id']} was cancelled."
            + self._log_tail(),
            "Check the server's log above; raise ready_timeout for big models.",
        )

    def _log_tail(self, n: int = 20) -> str:
        """The last lines of vllm.err (or of vllm.out when the server wrote no stderr)."""
        for name, tail in (("vllm.err", self.err_tail), ("vllm.out", self.out_tail)):
            if tail:
                return f"\nLast lines of {name}:\n" + "\n".join(list(tail)[-n:])
        return ""

    async def _fail_and_cancel(self, kind: str, message: str, hint: str = "", cancel: bool = True) -> None:
        self._flush_buffer()
        if cancel:
            try:
                await self.backend.cancel(self.run)
            except SweepdeckError as exc:
                message += f" (scancel failed: {exc.message})"
        self.emit(Alert(kind, message + (f"\n{hint}" if hint else ""), "error"))
        self.emit(Finished("failed", message))

    async def _job_over(self, when: str) -> None:
        """The job left squeue: report how it ended and why."""
        from backends.diagnosis import alert_for, diagnose_state, primary

        st = self.job_state or jobs.JobState(self.run.handle["job_id"], "ENDED")
        job_id = self.run.handle["job_id"]
        if self.run.handle.get("cancelled"):
            # we stopped it: say so at once (the stop has a deadline; its last log lines do not matter)
            self._flush_buffer()
            self.emit(Finished("cancelled", f"Job {job_id} cancelled"))
            return
        # the job is over, so its logs are complete: read what the followers have not delivered yet
        # (the error that explains the end is often the last thing written), within a few seconds
        await asyncio.gather(*(tail.finish(timeout=5.0) for tail in self.tails.values()))
        self._flush_buffer()
        found = primary(self.diagnoses)
        state_diag = diagnose_state("job", st.state, st.reason)
        diag = found or state_diag
        exit_code = st.exit_code
        message = f"Job {job_id} ended {when}: {st.state}" + (
            f" (exit code {exit_code})" if exit_code and exit_code != "0:0" else ""
        )
        if found is None and state_diag is not None:
            # Log-line diagnoses are raised by the driver as the lines pass;
            # a state (TIMEOUT, OUT_OF_MEMORY...) is only known here.
            self.emit(alert_for(state_diag, self.run.spec))
        if st.state == "COMPLETED" and not found:
            self.emit(Finished("succeeded", message))
            return
        if st.state == "TIMEOUT" and not found:
            self.emit(Alert("job-time-limit", f"Job {job_id} reached its time limit.", "warning"))
            self.emit(Finished("succeeded", message))
            return
        if st.state == "CANCELLED":
            message = f"Job {job_id} was cancelled outside sweepdeck ({when})."
        if not diag:
            self.emit(Alert("job-ended", message + self._log_tail(10), "error"))
        self.emit(Finished("failed", message + (f" — {diag.title}" if diag else "")))
