"""The ``local`` backend: a vLLM server (or the built-in simulator) on this machine.

(This module is the backend: its configuration, pre-flight, launch and stop. One
run's life — the server's output, readiness, the workload — is
:class:`backends.local.run.ServerRun`; the process and its producers are
:mod:`backends.local.server`.)


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

import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backends import diagnosis as dg
from backends.base import BackendBase, Check, Run
from backends.cleanup import CleanupRegistry
from backends.events import Event, Finished
from backends.local.run import ServerRun
from backends.local.server import LocalServer, url_host
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
)
from config.errors import SweepdeckError
from config.settings import Profile

if TYPE_CHECKING:
    from backends.store import RunDir, RunRecord
    from config.settings import Settings
    from config.spec import ExperimentSpec

log = logging.getLogger(__name__)



# ------------------------------------------------------------------- the backend


def server_kind(profile: Profile) -> str:
    """Which server a run with ``profile`` starts: ``sim``, ``vllm`` or ``command`` (``auto``: vLLM when on PATH)."""
    kind = str(profile.get("server", "sim"))
    if kind == "auto":
        return "vllm" if shutil.which("vllm") else "sim"
    return kind


def host_of(profile: Profile) -> str:
    """The address a run with ``profile`` binds its server to."""
    return str(profile.get("host", "127.0.0.1"))


def port_of(profile: Profile) -> int:
    """The port a run with ``profile`` asks for first (the next free one is taken when it is busy)."""
    value = profile.options.get("port")
    return 8000 if value is None else int(value)


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
    capabilities = frozenset({"simulator"})  # server: sim runs the built-in simulator (it demonstrates failures)
    unapplied_word = "not enforced"  # memory/CPU: the simulator and a local vLLM take what the machine has
    summary = "this machine (simulator or vLLM)"

    def __init__(
        self,
        settings: Settings,
        profile: Profile,
        *,
        registry: CleanupRegistry | None = None,
        sim_args: list[str] | None = None,
    ) -> None:
        super().__init__(settings, profile, registry=registry, sim_args=list(sim_args or []))
        self._servers: dict[str, LocalServer] = {}

    @property
    def sim_args(self) -> list[str]:
        return list(self.options.get("sim_args") or [])

    # ------------------------------------------------------------ description

    @classmethod
    def runs_simulator(cls, profile: Profile) -> bool:
        return server_kind(profile) == "sim"

    def demonstrating(self, failure: str) -> LocalBackend:
        """This backend again, its simulator started with ``--fail FAILURE`` (a labelled demonstration)."""
        return type(self)(self.settings, self.profile, registry=self.registry,
                          sim_args=[*self.sim_args, "--fail", failure])

    @classmethod
    def auto_args(cls, spec: ExperimentSpec, settings: Settings | None) -> list[tuple[str, str]]:
        """``--host`` and ``--port`` from the profile (the port moves on when it is taken)."""
        prof = (settings.profile(spec.profile, cls.name) if settings is not None else None) \
            or Profile(cls.name, cls.name, {})  # no settings: the defaults
        return [("--host", host_of(prof)), ("--port", f"{port_of(prof)} (or next free)")]

    # ---------------------------------------------------------- configuration

    @property
    def server_kind(self) -> str:
        return server_kind(self.profile)

    @property
    def host(self) -> str:
        return host_of(self.profile)

    @property
    def port(self) -> int:
        return port_of(self.profile)

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

    def server_argv(self, spec: ExperimentSpec, port: int) -> list[str]:
        """The full server argv for ``spec`` listening on ``port``."""
        argv = spec.serve_command(self.base_command(), port=port, host=self.host)
        if self.server_kind == "sim":
            argv += self.sim_args
            if spec.engine.gpu and "--gpu" not in self.sim_args and _planned(spec.model):
                # the simulator sizes memory like vLLM on that GPU: a configuration that cannot fit fails as it would
                argv += ["--gpu", spec.engine.gpu]
        return argv

    # -------------------------------------------------------------- preflight

    async def preflight(self, spec: ExperimentSpec) -> list[Check]:
        checks: list[Check] = []
        checks.append(self._check_command())
        checks.append(self._check_port())
        checks.extend(self._check_model(spec))
        tp = spec.engine.tp
        if tp == 1:
            checks.append(Check("Tensor parallel", "pass", "TP=1: one server process on this machine"))
        else:
            what = (
                "the simulator only scales its timing model"
                if self.server_kind == "sim"
                else f"vLLM needs {tp} GPUs here"
            )
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
                "Install vLLM (pip install vllm), or use the simulator: --server sim "
                "(or local: server: sim in the config)."
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
        fix = (
            f"Stop that process or use another port: --port {nxt}" if nxt else "Stop that process or use another port."
        )
        return Check(
            f"Port {port} free",
            "fail",
            f"{host}:{port} is in use{who}",
            fix,
            {"next_free_port": nxt, "holder_pid": holder[0] if holder else None},
        )

    def _check_model(self, spec: ExperimentSpec) -> list[Check]:
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

    async def launch(self, spec: ExperimentSpec, store: RunDir) -> Run:
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
        server = LocalServer(argv, host, port, proc, proc.pid, pgid, out_fd=out_r, err_fd=err_r)
        server.token = self.registry.register(
            f"stop local server (pid {proc.pid})",
            lambda: stop_group(pgid, proc),
            force=lambda: killpg(pgid, signal.SIGKILL),
            resource={"kind": "pid", "pid": proc.pid, "pgid": pgid, "start": start_time(proc.pid),
                      "what": f"local server on port {port}"},
        )
        url = f"http://{url_host(host)}:{port}"
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
        return ServerRun(self, run, server).events()

    def make_runner(self, run: Run, server: LocalServer) -> Any:
        """The load generator for ``run`` against ``server``."""
        from backends.loadgen import WorkloadRunner

        return WorkloadRunner(
            server.url,
            run.spec.model,
            run.spec.workload,
            results_path=run.store.results_dir / "results.json",
            metrics_interval=0.5,
        )

    def died(self, state: str, code: int | None, tail: list[str]) -> Finished:
        """The outcome of a server that exited on its own in ``state`` (diagnosed from its last lines)."""
        found = dg.primary(dg.diagnose_lines(tail))
        when = {"starting": "during startup", "ready": "right after startup", "workload": "while the workload ran"}.get(
            state, ""
        )
        message = f"The server exited with code {code} {when}".strip() + "."
        if found is not None:
            message = f"{found.title}: {found.message} ({message})"
        return Finished("failed", message, summary={"exit_code": code, "diagnosis": found.rule_id if found else None})

    def forget(self, server: LocalServer) -> None:
        """The server is gone: its undo is not needed any more."""
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
        self.forget(server)

    # ----------------------------------------------------------------- attach

    async def attach(self, saved: RunRecord) -> Run:
        """A local run cannot be re-opened without its supervisor: its server died with it.

        Raises:
            SweepdeckError: always, saying where the run's events and results are.
        """
        raise SweepdeckError(
            f"The server of run {saved.id} ran inside its supervisor, which is gone (and the server with it).",
            f"Its saved events and results stay in {saved.path}; start it again with: sweepdeck run --retry {saved.id}",
        )




def _planned(model: str) -> bool:
    """Does the planner know the model's architecture (so the simulator's ``--gpu`` can size it)?"""
    from config.planner import find_facts

    try:
        return find_facts(model) is not None
    except SweepdeckError:
        return False


__all__ = ["LocalBackend", "free_port", "next_free_port", "port_free", "port_holder", "stop_group"]
