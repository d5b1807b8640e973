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

Detach keeps the server: its pipes are handed to ``cat`` relays that append
to ``server-out.log`` / ``server-err.log`` in the run directory (so the server
never writes into a closed pipe), and ``attach`` follows those files and the
server's health until it exits or is stopped.

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
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator

from backends import diagnosis as dg
from backends.base import Check, Run
from backends.cleanup import REGISTRY, CleanupRegistry
from backends.events import Endpoint, Event, Finished, LogLine, Notice, Phase
from config.errors import SweepdeckError

if TYPE_CHECKING:
    from backends.store import RunDir, RunRecord
    from config.settings import Profile, Settings
    from config.spec import ExperimentSpec

log = logging.getLogger(__name__)

READY_MARKERS = ("Application startup complete", "Uvicorn running on")
_URL_RE = re.compile(r"Uvicorn running on (https?://[^\s]+)")
#: Seconds between SIGTERM and SIGKILL of the server's process group.
STOP_GRACE = 5.0
#: Fallback probe period for servers that never print vLLM's startup lines.
PROBE_PERIOD = 2.0
#: Lines of server output kept for the failure message.
TAIL_LINES = 200
CHUNK = 1 << 16


# --------------------------------------------------------------- process helpers


def _alive(pid: int) -> bool:
    """Is ``pid`` a running (not zombie) process?"""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode(errors="replace")
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks (guards attach against pid reuse)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().decode(errors="replace").rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _group_alive(pgid: int) -> bool:
    """Is any non-zombie process left in the group?"""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as fh:
                    fields = fh.read().decode(errors="replace").rsplit(")", 1)[1].split()
            except OSError:
                continue
            if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
                return True
        return False
    except OSError:
        return True


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _wait_pid(pid: int, proc: subprocess.Popen | None, timeout: float | None) -> bool:
    """Wait (event-driven where the kernel allows) until ``pid`` exits; True if it did."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    fd = None
    with contextlib.suppress(OSError, AttributeError):
        fd = os.pidfd_open(pid)
    if fd is not None:
        fut: asyncio.Future = loop.create_future()
        loop.add_reader(fd, lambda: fut.done() or fut.set_result(True))
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            return False
        finally:
            loop.remove_reader(fd)
            os.close(fd)
        if proc is not None:
            proc.poll()
        return True
    # no pidfd: poll, coarsely
    while True:
        if proc is not None and proc.poll() is not None:
            return True
        if proc is None and not _alive(pid):
            return True
        if deadline is not None and loop.time() >= deadline:
            return False
        await asyncio.sleep(0.05)


async def stop_group(pgid: int, proc: subprocess.Popen | None = None, grace: float = STOP_GRACE) -> None:
    """SIGTERM the process group, SIGKILL whatever is left after ``grace`` seconds."""
    _killpg(pgid, signal.SIGTERM)
    exited = await _wait_pid(pgid, proc, grace)
    if not exited or _group_alive(pgid):
        if exited:
            # the leader is gone; give the rest of the group a moment before the hammer
            loop = asyncio.get_running_loop()
            end = loop.time() + min(1.0, grace)
            while _group_alive(pgid) and loop.time() < end:
                await asyncio.sleep(0.05)
        if _group_alive(pgid):
            _killpg(pgid, signal.SIGKILL)
            await _wait_pid(pgid, proc, 2.0)
    if proc is not None:
        with contextlib.suppress(Exception):
            proc.wait(timeout=0.5)


# ----------------------------------------------------------------- port helpers


def port_free(host: str, port: int) -> bool:
    """Can a listener bind ``host:port`` now?"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def next_free_port(host: str, port: int, tries: int = 200) -> int | None:
    for candidate in range(port + 1, min(port + 1 + tries, 65536)):
        if port_free(host, candidate):
            return candidate
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel says is free right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_holder(port: int) -> tuple[int, str] | None:
    """(pid, command line) of the process listening on ``port``, when /proc tells."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                next(fh, None)
                for line in fh:
                    parts = line.split()
                    if len(parts) < 10 or parts[3] != "0A":  # 0A = LISTEN
                        continue
                    if int(parts[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(parts[9])
        except OSError:
            continue
    if not inodes:
        return None
    wanted = {f"socket:[{i}]" for i in inodes}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            for fd in os.scandir(f"/proc/{entry.name}/fd"):
                try:
                    if os.readlink(fd.path) in wanted:
                        with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                            cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
                        return int(entry.name), cmd
                except OSError:
                    continue
        except OSError:
            continue
    return None


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
    attached: bool = False
    detaching: bool = False
    log_dir: Path | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class LocalBackend:
    """Runs the experiment on this machine.

    Args:
        settings: User settings (catalogs).
        profile: The ``local`` profile (server, host, port, ready_timeout,
            run_workload, keep_server, command).
        sim_args: Extra simulator arguments (``--fail oom``); only used when
            the server is the simulator.
        registry: Cleanup registry (the process-wide one by default).
    """

    name = "local"

    def __init__(
        self,
        settings: "Settings",
        profile: "Profile",
        *,
        sim_args: list[str] | None = None,
        registry: CleanupRegistry = REGISTRY,
    ) -> None:
        self.settings = settings
        self.profile = profile
        self.sim_args = list(sim_args or [])
        self.registry = registry
        self._servers: dict[str, _Server] = {}

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
        limit = info.context_limit
        mml = spec.engine.max_model_len
        if limit and mml > limit:
            out.append(Check("max_model_len", "fail", f"{mml} is above {info.id}'s limit of {limit}", f"Use --max-model-len {limit} or less."))
        else:
            out.append(Check("max_model_len", "pass", f"{mml}" + (f" (limit {limit})" if limit else "")))
        warning = info.download_warning()
        if warning and self.server_kind != "sim":
            out.append(Check("Model download", "warn", warning, "Pre-download it with huggingface-cli download."))
        return out

    # ----------------------------------------------------------------- launch

    async def launch(self, spec: "ExperimentSpec", store: "RunDir | None" = None) -> Run:
        """Start the server; its cleanup is registered before this returns."""
        if store is None:
            from backends.store import RunStore

            store = RunStore().create(spec, backend=self.name)
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
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            proc = subprocess.Popen(
                argv,
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
            detachable=True,
            force=lambda: _killpg(pgid, signal.SIGKILL),
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
                "pid_start": _start_time(proc.pid),
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
            raise SweepdeckError(f"Run {run.id} is not known to this session.")
        if server.attached:
            return self._watch_attached(run, server)
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

        tasks.append(asyncio.create_task(_read_pipe(server.out_fd, "out", queue, server)))
        tasks.append(asyncio.create_task(_read_pipe(server.err_fd, "err", queue, server)))
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
                        if outcome.outcome == "succeeded" and (found is not None or not _alive(server.pid)):
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
        if exit_code is None or _alive(server.pid):
            await stop_group(server.pgid, server.proc)
            exit_code = server.proc.poll() if server.proc is not None else None
        self._forget(server)
        yield Phase("server", "exited", f"exit code {exit_code}", kind="server", finished=time.time())
        if outcome is None:
            outcome = self._died("stopping", exit_code, tail) if exit_code else Finished("failed", "The server stopped.")
        if runner is not None and runner.summary and not outcome.summary:
            # a cancelled or crashed run still reports what its requests measured
            results = run.store.results_dir / "results.json"
            outcome = replace(outcome, summary=runner.summary, results=str(results) if results.exists() else None)
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

    async def detach(self, run: Run) -> None:
        """The session goes away but the server stays: its output goes to log files from now on."""
        server = self._servers.get(run.id)
        if server is not None and not server.attached:
            server.log_dir = run.store.path
            server.detaching = True

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
        if server.proc is not None or _alive(server.pid):
            await stop_group(server.pgid, server.proc)
        self._forget(server)

    # ----------------------------------------------------------------- attach

    async def attach(self, saved: "RunRecord") -> Run:
        """Re-open a detached local run whose server still runs.

        Raises:
            SweepdeckError: no session, or the server process is gone.
        """
        session = saved.session()
        try:
            pid = int(session.get("PID", ""))
        except ValueError:
            raise SweepdeckError(f"Run {saved.id} has no saved server process.", "It cannot be re-attached.") from None
        pgid = int(session.get("PGID") or pid)
        if not _alive(pid) or (session.get("PID_START") and _start_time(pid) != session["PID_START"]):
            raise SweepdeckError(
                f"The server of run {saved.id} (pid {pid}) is no longer running.",
                f"Its saved events and results stay in {saved.path}.",
            )
        from backends.store import RunDir

        spec = saved.spec()
        server = _Server([], session.get("HOST", "127.0.0.1"), int(session.get("PORT") or 0), None, pid, pgid, attached=True)
        server.url = session.get("URL", "")
        server.token = self.registry.register(
            f"stop local server (pid {pid})",
            lambda: stop_group(pgid, None),
            detachable=True,
            force=lambda: _killpg(pgid, signal.SIGKILL),
        )
        run = Run(saved.id, self.name, spec, RunDir(saved.path), handle=dict(session), started=float(session.get("STARTED") or time.time()))
        self._servers[run.id] = server
        return run

    async def _watch_attached(self, run: Run, server: _Server) -> AsyncIterator[Event]:
        yield Notice(f"Re-attached to the server of {run.id} (pid {server.pid}) at {server.url}")
        ok = await _models_ok(server.url, timeout=3.0)
        yield Endpoint(server.url, ok, run.spec.model, "answers /v1/models" if ok else "does not answer /v1/models")
        tails = [_LogTail(run.store, "out"), _LogTail(run.store, "err")]
        exited = asyncio.create_task(_wait_pid(server.pid, None, None))
        woken = asyncio.create_task(server.wake.wait())
        try:
            while True:
                # What the server printed while detached is in its log files
                # (see detach); follow them like `tail -F` does, by polling.
                for tail in tails:
                    for line in tail.read():
                        yield line
                done, _ = await asyncio.wait({exited, woken}, timeout=0.25, return_when=asyncio.FIRST_COMPLETED)
                if done:
                    break
        finally:
            exited.cancel()
            woken.cancel()
        if server.cancelled:
            await stop_group(server.pgid, None)
        for tail in tails:
            for line in tail.read():
                yield line
        self._forget(server)
        if server.cancelled:
            yield Endpoint(server.url, False, run.spec.model, "stopped")
            yield Finished("cancelled", "The server was stopped.")
        else:
            yield Endpoint(server.url, False, run.spec.model, "server exited")
            yield Finished("failed", f"The server (pid {server.pid}) exited.")


class _LogTail:
    """Reads new whole lines of a detached server's log file; the offset lives in meta.json."""

    def __init__(self, store: "RunDir", stream: str) -> None:
        self.store = store
        self.stream = stream
        self.path = store.path / f"server-{stream}.log"
        self.offset = int((store.meta().get("log_offsets") or {}).get(stream, 0))

    def read(self) -> list[LogLine]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read(1 << 20)
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        chunk = data[: end + 1]
        self.offset += len(chunk)
        offsets = dict(self.store.meta().get("log_offsets") or {})
        offsets[self.stream] = self.offset
        self.store.update_meta(log_offsets=offsets)
        now = time.time()
        return [LogLine(_clean(raw), self.stream, "vllm", now) for raw in chunk.split(b"\n")[:-1]]  # type: ignore[arg-type]


# ------------------------------------------------------------- event producers


async def _read_pipe(fd: int | None, stream: str, queue: asyncio.Queue, server: "_Server | None" = None) -> None:
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
        if server is not None and server.detaching:
            _relay_to_file(transport, server, stream)
        transport.close()
        await queue.put(("eof", stream))


def _relay_to_file(transport, server: "_Server", stream: str) -> None:
    """Keep draining a detached server's pipe into ``server-<stream>.log`` in the run dir.

    The server outlives this session; without a reader its next write would
    fail with EPIPE. ``cat`` holds the read end from now on and ends with the
    server (EOF).
    """
    if server.log_dir is None:
        return
    pipe = transport.get_extra_info("pipe")
    if pipe is None:
        return
    try:
        fd = os.dup(pipe.fileno())
        # asyncio made the (shared) file description non-blocking; cat needs blocking reads
        os.set_blocking(fd, True)
    except (OSError, ValueError):
        return
    try:
        with open(server.log_dir / f"server-{stream}.log", "ab") as log_fh:
            subprocess.Popen(
                ["cat"], stdin=fd, stdout=log_fh, stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True
            )
    except OSError as exc:
        log.warning("cannot relay the server's %s to a file: %s", stream, exc)
    finally:
        os.close(fd)


def _clean(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").rstrip("\r")


async def _watch_exit(server: _Server, queue: asyncio.Queue) -> None:
    await _wait_pid(server.pid, server.proc, None)
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


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


__all__ = ["LocalBackend", "next_free_port", "port_free", "port_holder", "stop_group"]
