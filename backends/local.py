"""The ``local`` backend: a vLLM server (or the built-in simulator) on this machine.

``launch`` starts the server command from the profile (``server: sim`` runs
``python -m backends.sim serve MODEL ...``, ``vllm`` runs ``vllm serve MODEL
...``, ``auto`` picks vLLM when it is on PATH, ``command`` runs the profile's
own argv) in its own process group, and registers its cleanup (SIGTERM to the
group, SIGKILL after a grace period) the moment it exists. ``events`` streams
the server's stdout/stderr as :class:`LogLine` batches, detects readiness
(vLLM's "Application startup complete." / "Uvicorn running on" line *and* a
successful ``GET /v1/models``), emits :class:`Endpoint`, runs the workload
with :class:`backends.loadgen.WorkloadRunner` and relays its Progress/Metrics,
stops the server and ends with :class:`Finished`.

The backend runs inside the run's supervisor (:mod:`backends.supervisor`):
the server and the workload live exactly as long as the supervisor does. The
server runs under the process guard (:func:`backends.procs.guarded`), so even
a SIGKILL of the supervisor ends it and everything it started.

No Textual here; httpx and the load generator are imported when a run starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator

from backends import diagnosis as dg
from backends.base import BackendBase, Check, Run
from backends.cleanup import CleanupRegistry
from backends.events import Endpoint, Event, Finished, LogLine, Notice, Phase
from backends.procs import (
    alive,
    free_port,
    guarded,
    killpg,
    next_free_port,
    port_free,
    port_holder,
    start_time,
    stop_group,
    wait_pid,
)
from config.errors import SweepdeckError

if TYPE_CHECKING:
    from backends.store import RunDir, RunRecord
    from config.settings import Profile, Settings
    from config.spec import ExperimentSpec

log = logging.getLogger(__name__)

READY_MARKERS = ("Application startup complete", "Uvicorn running on")
_URL_RE = re.compile(r"Uvicorn running on (https?://[^\s]+)")
#: Fallback probe period for servers that never print vLLM's startup lines.
PROBE_PERIOD = 2.0
#: Lines of server output kept for the failure message.
TAIL_LINES = 200
CHUNK = 1 << 16


# ------------------------------------------------------------------- the backend


@dataclass
class _Server:
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


class LocalBackend(BackendBase):
    """Runs the experiment on this machine.

    Args:
        settings: User settings (catalogs).
        profile: The ``local`` profile (server, host, port, ready_timeout,
            run_workload, keep_server, command).
        registry: Cleanup registry (the process-wide one by default).
        sim_args: Extra simulator arguments (``--fail oom``); only used when
            the server is the simulator.
    """

    name = "local"

    def __init__(
        self,
        settings: "Settings",
        profile: "Profile",
        *,
        registry: CleanupRegistry | None = None,
        sim_args: list[str] | None = None,
    ) -> None:
        super().__init__(settings, profile, registry=registry, sim_args=list(sim_args or []))
        self._servers: dict[str, _Server] = {}

    @property
    def sim_args(self) -> list[str]:
        return list(self.options.get("sim_args") or [])

    # ---------------------------------------------------------- configuration

    @property
    def server_kind(self) -> str:
        kind = self.profile.get("server", "sim")
        if kind == "auto":
            return "vllm" if shutil.which("vllm") else "sim"
        return kind

    @property
    def host(self) -> str:
        return str(self.profile.get("host", "127.0.0.1"))

    @property
    def port(self) -> int:
        value = self.profile.options.get("port")
        return 8000 if value is None else int(value)

    def base_command(self) -> list[str]:
        """The server command without the model and settings."""
        kind = self.server_kind
        if kind == "sim":
            return [sys.executable, "-m", "backends.sim", "serve"]
        if kind == "vllm":
            return ["vllm", "serve"]
        command = self.profile.get("command")
        if not command:
            raise SweepdeckError(
                "The local profile says server: command but has no 'command'.",
                "Add e.g. command: [vllm, serve] under 'local:' in the config, or use server: sim.",
            )
        return [str(c) for c in command]

    def server_argv(self, spec: "ExperimentSpec", port: int) -> list[str]:
        """The full server argv for ``spec`` listening on ``port``."""
        argv = spec.serve_command(self.base_command(), port=port, host=self.host)
        if self.server_kind == "sim":
            argv += self.sim_args
            if spec.engine.gpu and "--gpu" not in self.sim_args and _planned(spec.model):
                # the simulator sizes memory like vLLM on that GPU: a configuration that cannot fit fails as it would
                argv += ["--gpu", spec.engine.gpu]
        return argv

    # -------------------------------------------------------------- preflight

    async def preflight(self, spec: "ExperimentSpec") -> list[Check]:
        checks: list[Check] = []
        checks.append(self._check_command())
        checks.append(self._check_port())
        checks.extend(self._check_model(spec))
        tp = spec.engine.tp
        if tp == 1:
            checks.append(Check("Tensor parallel", "pass", "TP=1: one server process on this machine"))
        else:
            what = "the simulator only scales its timing model" if self.server_kind == "sim" else f"vLLM needs {tp} GPUs here"
            checks.append(
                Check(
                    "Tensor parallel",
                    "warn",
                    f"TP={tp} on the local backend: {what}",
                    "Use --tp 1 unless this machine has that many GPUs.",
                    {"tp": tp},
                )
            )
        return checks

    def _check_command(self) -> Check:
        try:
            base = self.base_command()
        except SweepdeckError as exc:
            return Check("Server command", "fail", exc.message, exc.hint)
        kind = self.server_kind
        if kind == "sim":
            return Check("Server command", "pass", "built-in vLLM simulator (python -m backends.sim)")
        exe = base[0]
        found = shutil.which(exe) if os.sep not in exe else (exe if os.access(exe, os.X_OK) else None)
        if not found:
            fix = (
                "Install vLLM (pip install vllm), or use the simulator: --server sim (or local: server: sim in the config)."
                if kind == "vllm"
                else f"Check local.command in {self.settings.path or 'the config'}."
            )
            return Check("Server command", "fail", f"{exe!r} not found on PATH", fix)
        return Check("Server command", "pass", f"{shlex.join(base)} ({found})")

    def _check_port(self) -> Check:
        host, port = self.host, self.port
        if port == 0:
            return Check("Port free", "pass", f"a free port on {host} is picked at launch")
        if port_free(host, port):
            return Check(f"Port {port} free", "pass", f"{host}:{port} is free")
        holder = port_holder(port)
        nxt = next_free_port(host, port)
        who = f" by pid {holder[0]} ({holder[1][:120]})" if holder else ""
        fix = f"Stop that process or use another port: --port {nxt}" if nxt else "Stop that process or use another port."
        return Check(
            f"Port {port} free",
            "fail",
            f"{host}:{port} is in use{who}",
            fix,
            {"next_free_port": nxt, "holder_pid": holder[0] if holder else None},
        )

    def _check_model(self, spec: "ExperimentSpec") -> list[Check]:
        try:
            info = self.settings.catalogs.models.resolve(spec.model)
        except SweepdeckError as exc:
            return [Check("Model known", "fail", exc.message, exc.hint)]
        out = [Check("Model known", "pass", info.id + (f" ({info.size_gb:g} GB)" if info.size_gb else ""))]
        # a recommendation is never a limit: the model's own context length is (a warning when unknown)
        verdict = info.check_context(spec.engine.max_model_len)
        out.append(Check("max_model_len", verdict.status, verdict.detail, verdict.fix))
        warning = info.download_warning()
        if warning and self.server_kind != "sim":
            out.append(Check("Model download", "warn", warning, "Pre-download it with huggingface-cli download."))
        return out

    # ----------------------------------------------------------------- launch

    async def launch(self, spec: "ExperimentSpec", store: "RunDir") -> Run:
        """Start the server; its cleanup is registered before this returns."""
        host = self.host
        port = self.port or free_port(host)
        argv = self.server_argv(spec, port)
        store.write_rendered("server-command.txt", shlex.join(argv) + "\n")
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        if self.server_kind == "sim":
            # the child must import the same `backends` package as this process
            root = str(Path(__file__).resolve().parent.parent)
            env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        # the guard ends the server's whole group if this process dies, however it dies
        env["SWEEPDECK_GUARD_PARENT"] = str(os.getpid())
        exe = argv[0]
        if not (shutil.which(exe, path=env.get("PATH")) if os.sep not in exe else os.access(exe, os.X_OK)):
            raise SweepdeckError(
                f"Server command {exe!r} not found.",
                "Install vLLM, or use the simulator (--server sim).",
            )
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            proc = subprocess.Popen(
                guarded(argv),
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                env=env,
                start_new_session=True,  # its own process group: one killpg ends it all
                close_fds=True,
            )
        except FileNotFoundError:
            for fd in (out_r, err_r):
                os.close(fd)
            raise SweepdeckError(
                f"Server command {argv[0]!r} not found.",
                "Install vLLM, or use the simulator (--server sim).",
            ) from None
        except OSError as exc:
            for fd in (out_r, err_r):
                os.close(fd)
            raise SweepdeckError(f"Cannot start {argv[0]!r}: {exc.strerror or exc}.") from None
        finally:
            os.close(out_w)
            os.close(err_w)
        pgid = proc.pid
        server = _Server(argv, host, port, proc, proc.pid, pgid, out_fd=out_r, err_fd=err_r)
        server.token = self.registry.register(
            f"stop local server (pid {proc.pid})",
            lambda: stop_group(pgid, proc),
            force=lambda: killpg(pgid, signal.SIGKILL),
            resource={"kind": "pid", "pid": proc.pid, "pgid": pgid, "start": start_time(proc.pid),
                      "what": f"local server on port {port}"},
        )
        url = f"http://{_url_host(host)}:{port}"
        server.url = url
        run = Run(
            id=store.id,
            backend=self.name,
            spec=spec,
            store=store,
            handle={
                "pid": proc.pid,
                "pgid": pgid,
                "pid_start": start_time(proc.pid),
                "host": host,
                "port": port,
                "url": url,
                "command": shlex.join(argv),
            },
        )
        self._servers[run.id] = server
        return run

    # ----------------------------------------------------------------- events

    def events(self, run: Run) -> AsyncIterator[Event]:
        server = self._servers.get(run.id)
        if server is None:
            raise SweepdeckError(f"Run {run.id} is not known to this backend.")
        return self._events(run, server)

    async def _events(self, run: Run, server: _Server) -> AsyncIterator[Event]:
        spec = run.spec
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        tail: list[str] = []
        tasks: list[asyncio.Task] = []
        ready_timeout = float(self.profile.get("ready_timeout", 600.0))
        started = time.time()
        deadline = loop.time() + ready_timeout

        tasks.append(asyncio.create_task(_read_pipe(server.out_fd, "out", queue)))
        tasks.append(asyncio.create_task(_read_pipe(server.err_fd, "err", queue)))
        server.out_fd = server.err_fd = None  # owned by the readers now
        tasks.append(asyncio.create_task(_watch_exit(server, queue)))
        tasks.append(asyncio.create_task(_wake_on_cancel(server, queue)))
        probe: asyncio.Task | None = None
        fallback: asyncio.Task | None = None
        if self.server_kind == "command":
            # a custom command may never print vLLM's startup lines
            fallback = asyncio.create_task(_fallback_probe(server, queue))
            tasks.append(fallback)

        yield Phase("server", "starting", shlex.join(server.argv), kind="server", started=started)
        state = "starting"  # starting -> ready -> workload -> stopping
        runner = None
        eofs = 0
        exit_code: int | None = None
        outcome: Finished | None = None
        try:
            while True:
                timeout = max(0.0, deadline - loop.time()) if state == "starting" else None
                try:
                    kind, payload = await asyncio.wait_for(queue.get(), timeout)
                except asyncio.TimeoutError:
                    diag = dg.server_not_ready(ready_timeout)
                    yield dg.alert_for(diag, spec)
                    outcome = Finished(
                        "failed",
                        f"The server never became ready within {ready_timeout:g} s; it was stopped. "
                        "Raise the timeout (--ready-timeout SECONDS, or ready_timeout in the local profile), "
                        "or read the server log above.",
                    )
                    break
                if kind == "lines":
                    for line in payload:
                        yield line
                    tail.extend(line.text for line in payload)
                    del tail[:-TAIL_LINES]
                    if state == "starting" and probe is None:
                        for line in payload:
                            match = _URL_RE.search(line.text)
                            if match and server.port == 0:
                                server.url = match.group(1).rstrip("/")
                            if any(m in line.text for m in READY_MARKERS):
                                probe = asyncio.create_task(_probe_ready(server, queue, deadline))
                                tasks.append(probe)
                                break
                elif kind == "eof":
                    eofs += 1
                    if eofs == 2 and exit_code is not None:
                        break
                elif kind == "exit":
                    exit_code = payload
                    if outcome is not None:
                        pass
                    elif server.cancelled:
                        outcome = Finished("cancelled", "the server was stopped.")
                    elif state in ("starting", "ready", "workload", "serving"):
                        outcome = self._died(state, exit_code, tail)
                    if runner is not None:
                        runner.stop()
                    if eofs == 2:
                        break
                    # drain what the server printed last (bounded), then finish
                    tasks.append(asyncio.create_task(_later(queue, 2.0, ("drained", None))))
                elif kind == "drained":
                    break
                elif kind == "cancel":
                    if outcome is None:
                        outcome = Finished("cancelled", "the server was stopped.")
                    if runner is not None:
                        runner.stop()
                    if exit_code is not None:
                        break
                    tasks.append(asyncio.create_task(_stop_and_report(server, queue)))
                elif kind == "ready" and state == "starting":
                    state = "ready"
                    if fallback is not None:
                        fallback.cancel()
                    yield Phase("server", "ready", server.url, kind="server", started=started, finished=None)
                    yield Endpoint(server.url, True, spec.model, f"pid {server.pid}")
                    if server.cancelled:
                        continue
                    if not self.profile.get("run_workload", True):
                        if self.profile.get("keep_server", False):
                            yield Notice(f"Serving {spec.model} at {server.url} until you quit.")
                            continue
                        outcome = Finished("succeeded", f"Server was ready at {server.url}.")
                        tasks.append(asyncio.create_task(_stop_and_report(server, queue)))
                        state = "stopping"
                        continue
                    state = "workload"
                    runner = self._make_runner(run, server)
                    yield Phase("workload", "running", f"{spec.workload.app}: {spec.workload.max_requests} requests", kind="workload")
                    tasks.append(asyncio.create_task(_relay(runner, queue)))
                elif kind == "event":
                    yield payload
                elif kind == "workload-done":
                    error = payload
                    summary = runner.summary if runner is not None else None
                    if server.cancelled or outcome is not None:
                        continue  # cancel/exit already decided the outcome
                    results = str(run.store.results_dir / "results.json")
                    if error is not None:
                        outcome = Finished("failed", f"The workload failed: {error}", summary=summary or {})
                    else:
                        outcome = _workload_outcome(summary or {}, results)
                        found = dg.primary(dg.diagnose_lines(tail))
                        if outcome.outcome == "succeeded" and (found is not None or not alive(server.pid)):
                            # the server failed under load: the numbers are not a clean benchmark
                            why = f"{found.title}: {found.message}" if found else "The server exited"
                            outcome = Finished(
                                "failed", f"{why} (while the workload ran: {outcome.message[:-1]})", results, summary or {}
                            )
                    yield Phase("workload", "done" if outcome.outcome == "succeeded" else "failed", outcome.message, kind="workload")
                    if self.profile.get("keep_server", False) and outcome.outcome == "succeeded":
                        yield Notice(f"Workload done; still serving {spec.model} at {server.url} until you quit.")
                        state = "serving"
                        continue
                    state = "stopping"
                    yield Phase("server", "stopping", "workload finished", kind="server")
                    tasks.append(asyncio.create_task(_stop_and_report(server, queue)))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if runner is not None and runner.summary is None:
                runner.stop()
        if exit_code is None or alive(server.pid):
            await stop_group(server.pgid, server.proc)
            exit_code = server.proc.poll() if server.proc is not None else None
        self._forget(server)
        yield Phase("server", "exited", f"exit code {exit_code}", kind="server", finished=time.time())
        if outcome is None:
            outcome = self._died("stopping", exit_code, tail) if exit_code else Finished("failed", "The server stopped.")
        if runner is not None and runner.summary and "completed" not in (outcome.summary or {}):
            # a cancelled or crashed run still reports what its requests measured (next to why it ended)
            results = run.store.results_dir / "results.json"
            outcome = replace(outcome, summary={**runner.summary, **(outcome.summary or {})},
                              results=str(results) if results.exists() else None)
        yield outcome

    def _make_runner(self, run: Run, server: _Server):
        from backends.loadgen import WorkloadRunner

        return WorkloadRunner(
            server.url,
            run.spec.model,
            run.spec.workload,
            results_path=run.store.results_dir / "results.json",
            metrics_interval=0.5,
        )

    def _died(self, state: str, code: int | None, tail: list[str]) -> Finished:
        found = dg.primary(dg.diagnose_lines(tail))
        when = {"starting": "during startup", "ready": "right after startup", "workload": "while the workload ran"}.get(state, "")
        message = f"The server exited with code {code} {when}".strip() + "."
        if found is not None:
            message = f"{found.title}: {found.message} ({message})"
        return Finished("failed", message, summary={"exit_code": code, "diagnosis": found.rule_id if found else None})

    def _forget(self, server: _Server) -> None:
        if server.token is not None:
            self.registry.unregister(server.token)
            server.token = None

    # ---------------------------------------------------------- cancel/cleanup

    async def cancel(self, run: Run, *, graceful: bool = True) -> None:
        # graceful or not, the same: the workload stops and the server gets SIGTERM
        server = self._servers.get(run.id)
        if server is None or server.cancelled:
            return
        server.cancelled = True
        server.wake.set()

    async def cleanup(self, run: Run) -> None:
        server = self._servers.pop(run.id, None)
        if server is None:
            return
        for fd in (server.out_fd, server.err_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if server.proc is not None or alive(server.pid):
            await stop_group(server.pgid, server.proc)
        self._forget(server)

    # ----------------------------------------------------------------- attach

    async def attach(self, saved: "RunRecord") -> Run:
        """A local run cannot be re-opened without its supervisor: its server died with it.

        Raises:
            SweepdeckError: always, saying where the run's events and results are.
        """
        raise SweepdeckError(
            f"The server of run {saved.id} ran inside its supervisor, which is gone (and the server with it).",
            f"Its saved events and results stay in {saved.path}; start it again with: sweepdeck run --retry {saved.id}",
        )


# ------------------------------------------------------------- event producers


async def _read_pipe(fd: int | None, stream: str, queue: asyncio.Queue) -> None:
    """Read ``fd`` in chunks and queue whole lines as LogLine batches."""
    if fd is None:
        await queue.put(("eof", stream))
        return
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20, loop=loop)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop), os.fdopen(fd, "rb", buffering=0))
    partial = b""
    try:
        while True:
            chunk = await reader.read(CHUNK)
            if not chunk:
                break
            data = partial + chunk
            lines = data.split(b"\n")
            partial = lines.pop()
            if lines:
                now = time.time()
                await queue.put(
                    ("lines", [LogLine(_clean(raw), stream, "vllm", now) for raw in lines])  # type: ignore[arg-type]
                )
        if partial:
            await queue.put(("lines", [LogLine(_clean(partial), stream, "vllm")]))  # type: ignore[arg-type]
    finally:
        transport.close()
        await queue.put(("eof", stream))


def _clean(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").rstrip("\r")


async def _watch_exit(server: _Server, queue: asyncio.Queue) -> None:
    await wait_pid(server.pid, server.proc, None)
    code = server.proc.wait() if server.proc is not None else None
    await queue.put(("exit", code))


async def _wake_on_cancel(server: _Server, queue: asyncio.Queue) -> None:
    await server.wake.wait()
    await queue.put(("cancel", None))


async def _stop_and_report(server: _Server, queue: asyncio.Queue) -> None:
    await stop_group(server.pgid, server.proc)


async def _later(queue: asyncio.Queue, delay: float, item: tuple) -> None:
    await asyncio.sleep(delay)
    await queue.put(item)


async def _models_ok(url: str, timeout: float = 2.0) -> bool:
    import httpx

    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.get(url + "/v1/models")
            return response.status_code == 200
    except httpx.HTTPError:
        return False


async def _probe_ready(server: _Server, queue: asyncio.Queue, deadline: float) -> None:
    """After the startup line: GET /v1/models until it answers 200 (or the deadline)."""
    loop = asyncio.get_running_loop()
    delay = 0.05
    while loop.time() < deadline:
        if await _models_ok(server.url):
            await queue.put(("ready", server.url))
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


async def _fallback_probe(server: _Server, queue: asyncio.Queue) -> None:
    """For server commands that never print vLLM's startup lines: probe now and then."""
    while True:
        await asyncio.sleep(PROBE_PERIOD)
        if await _models_ok(server.url, timeout=1.0):
            await queue.put(("ready", server.url))
            return


async def _relay(runner, queue: asyncio.Queue) -> None:
    error: str | None = None
    try:
        async for event in runner.events():
            await queue.put(("event", event))
    except SweepdeckError as exc:
        error = exc.message
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - reported as the run's failure
        log.exception("workload runner failed")
        error = f"{type(exc).__name__}: {exc}"
    await queue.put(("workload-done", error))


def _workload_outcome(summary: dict[str, Any], results: str) -> Finished:
    done = int(summary.get("completed") or 0)
    failed = int(summary.get("failed") or 0) + int(summary.get("cancelled") or 0)
    rps = summary.get("requests_per_s") or 0.0
    msg = f"{done} requests completed" + (f", {failed} failed" if failed else "") + f" ({rps:.2f} req/s)."
    if done == 0:
        errors = summary.get("errors") or {}
        first = next(iter(errors), "")
        return Finished("failed", f"No request succeeded ({failed} failed{': ' + first if first else ''}).", results, summary)
    return Finished("succeeded", msg, results, summary)


def _planned(model: str) -> bool:
    """Does the planner know the model's architecture (so the simulator's ``--gpu`` can size it)?"""
    from config.planner import find_facts

    try:
        return find_facts(model) is not None
    except SweepdeckError:
        return False


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


__all__ = ["LocalBackend", "free_port", "next_free_port", "port_free", "port_holder", "stop_group"]
