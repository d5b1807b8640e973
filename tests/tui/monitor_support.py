"""A scripted backend and app helpers for the run-monitor tests.

:class:`ScriptedBackend` follows the Backend protocol; its ``events`` plays a
script of events and :class:`Gate` steps (the test opens a gate to let the
rest through), so every test decides exactly what the monitor has seen.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
from typing import Any

from backends.base import Check, Run
from backends.events import Endpoint, Finished, LogLine, Metrics, Phase, Progress

FIXED_TODAY = _dt.date(2026, 11, 23)
FIXED_NOW = 1795423200.0  # 2026-11-23 10:00:00 UTC


class Gate:
    """A script step that waits until the test calls :meth:`open`."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.reached = asyncio.Event()

    def open(self) -> None:
        self.event.set()


class ScriptedBackend:
    """Plays ``script`` (events and Gates) for every launch; records calls.

    Args:
        script: Events / Gates, or a callable ``(run) -> list`` for per-run scripts.
        name: Backend name.
    """

    def __init__(self, script: Any, name: str = "local", checks: list[Check] | None = None) -> None:
        self.script = script
        self.name = name
        self.checks = checks or [Check("ok", "pass")]
        self.launched: list = []
        self.cancelled: list = []
        #: ``(run id, graceful)`` of every cancel call, in order.
        self.cancel_calls: list[tuple[str, bool]] = []
        self.cleaned: list = []
        self.live: set[str] = set()
        self._cancel: dict[str, asyncio.Event] = {}

    async def preflight(self, spec):
        return list(self.checks)

    async def launch(self, spec, store=None):
        self.launched.append(spec)
        run = Run(spec.experiment_id, self.name, spec, store, handle={"pid": 0}, started=FIXED_NOW)
        self.live.add(run.id)
        self._cancel[run.id] = asyncio.Event()
        return run

    async def events(self, run):
        script = self.script(run) if callable(self.script) else self.script
        cancel = self._cancel[run.id]
        for step in script:
            if isinstance(step, Gate):
                step.reached.set()
                waiter = asyncio.ensure_future(step.event.wait())
                stopper = asyncio.ensure_future(cancel.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
                if cancel.is_set():
                    yield Finished("cancelled", "cancelled")
                    return
                continue
            if isinstance(step, list):
                for event in step:
                    yield event
                await asyncio.sleep(0)
                continue
            yield step
        if not any(isinstance(s, Finished) for s in script):
            await cancel.wait()
            yield Finished("cancelled", "cancelled")

    async def cancel(self, run, *, graceful=True):
        self.cancelled.append(run.id)
        self.cancel_calls.append((run.id, graceful))
        self._cancel[run.id].set()

    async def cleanup(self, run):
        self.cleaned.append(run.id)
        self.live.discard(run.id)

    async def attach(self, saved):
        raise NotImplementedError


def log_lines(n: int, start: int = 0, *, err_every: int = 3, source: str = "vllm") -> list[LogLine]:
    """``n`` numbered lines; every ``err_every``-th one on stderr."""
    return [
        LogLine(f"line {i:06d} INFO engine step {i}", "err" if i % err_every == 0 else "out", source,
                ts=FIXED_NOW + i / 1000)
        for i in range(start, start + n)
    ]


def running_script(gate: Gate | None = None) -> list:
    """Server starting → ready → endpoint → workload metrics; then waits at ``gate``."""
    t = FIXED_NOW
    steps: list = [
        Phase("server", "starting", "python -m backends.sim serve", kind="server", started=t, ts=t),
        log_lines(40),
        Phase("server", "ready", "http://127.0.0.1:8000", kind="server", started=t, ts=t + 5),
        Endpoint("http://127.0.0.1:8000", True, "Qwen/Qwen2.5-Math-1.5B", "pid 4242", ts=t + 5),
        Phase("workload", "running", "chatbot: 100 requests", kind="workload", started=t + 5, expected_s=60, ts=t + 5),
        Progress(100, pending=50, running=8, completed=40, failed=2, ts=t + 20),
        Metrics(completed=40, failed=2, in_flight=8, elapsed_s=15, ttft_ms_mean=42.5, ttft_ms_p50=40.0,
                ttft_ms_p90=61.2,
                itl_ms_mean=11.8, itl_ms_p90=15.1, latency_ms_mean=950.0, latency_ms_p90=1400.0,
                requests_per_s=2.7, output_tokens_per_s=310.0, ts=t + 20),
        Metrics(completed=60, failed=2, in_flight=8, elapsed_s=20, ttft_ms_mean=44.0, ttft_ms_p50=41.0,
                ttft_ms_p90=63.0,
                itl_ms_mean=12.0, itl_ms_p90=15.5, latency_ms_mean=960.0, latency_ms_p90=1410.0,
                requests_per_s=3.0, output_tokens_per_s=345.0, ts=t + 25),
    ]
    if gate is not None:
        steps.append(gate)
    return steps


def oom_script() -> list:
    """The vLLM startup lines and a CUDA OOM (the session's diagnosis raises the Alert)."""
    t = FIXED_NOW
    return [
        Phase("server", "starting", "vllm serve", kind="server", started=t, ts=t),
        LogLine("INFO 11-23 10:00:01 [api_server.py:1] vLLM API server version 0.11.0", ts=t + 1),
        LogLine("INFO 11-23 10:00:02 [gpu_model_runner.py:1] Loading model weights took 2.9 GiB", ts=t + 2),
        LogLine("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total "
                "capacity of 79.19 GiB of which 1.06 GiB is free.", "err", ts=t + 3),
        Phase("server", "exited", "exit code 1", kind="server", started=t, finished=t + 4, ts=t + 4),
        Finished("failed", "CUDA out of memory", ts=t + 4),
    ]


def ok_script() -> list:
    t = FIXED_NOW
    return [
        Phase("server", "ready", "", kind="server", started=t, ts=t),
        Endpoint("http://127.0.0.1:8000", True, "m", ts=t),
        LogLine("relaunched fine", ts=t),
        Finished("succeeded", "done", ts=t + 1),
    ]


def make_spec(model: str = "qwen-1.5b", workload: str = "chatbot", **kw):
    from config.catalog import load_catalogs
    from config.spec import build_spec

    return build_spec(load_catalogs(), model, workload=workload, today=FIXED_TODAY, **kw)


def make_app(backend, *, registry=None, store=None, log_line_cap: int | None = None, **kw):
    """The real SweepdeckApp with the real controller and monitor, on ``backend``."""
    from backends.cleanup import CleanupRegistry
    from config.settings import Settings
    from tui.app import SweepdeckApp

    settings = Settings()
    if log_line_cap is not None:
        settings.log_line_cap = log_line_cap
    app = SweepdeckApp(
        settings,
        {backend.name: backend},
        registry=registry if registry is not None else CleanupRegistry(),
        today=FIXED_TODAY,
        clock=lambda: FIXED_NOW + 30,
        install_signals=False,
        cleanup_timeout=5.0,
        store=store,
        **kw,
    )
    return app


async def wait_for(pilot, predicate, timeout: float = 20.0, step: float = 0.02) -> None:
    """Let the app run until ``predicate()`` is true and the screen on top has mounted its widgets.

    A screen is on top (``app.screen``) as soon as it is pushed, but it composes and mounts its
    children in its own task; on a busy machine a test that queries it right away finds nothing.
    So the wait also asks for ``app.screen.is_mounted``, and a predicate that queries a widget
    not mounted yet (``NoMatches``) counts as not true yet. The timeout is generous because it
    only matters when the test fails; a passing test waits only as long as the app takes.
    """
    from textual.css.query import NoMatches

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Exception | None = None
    while True:
        try:
            if predicate() and pilot.app.screen.is_mounted:
                return
        except NoMatches as error:
            last = error
        if loop.time() > deadline:
            what = getattr(predicate, "__name__", predicate)
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; on top: {pilot.app.screen!r}"
                                 + (f"; last query: {last}" if last else ""))
        await pilot.pause(step)


# ---------------------------------------------------------------- slurm runs

SLURM_JOB = "5382685"
SLURM_NODE = "alvis7-07"
SLURM_SERVER = f"{SLURM_NODE}:41084"
SLURM_TUNNEL = "tunnel 127.0.0.1:58000"
SLURM_URL = "http://localhost:58000"


def slurm_spec(experiment_id: str = "alvis-1123-100000-gpt-oss-20b"):
    """A spec shaped like :meth:`backends.slurm.SlurmBackend.make_spec` makes (models.json name, profile)."""
    from config.catalog import load_catalogs
    from config.spec import EngineSettings, ExperimentSpec, Origin, Source

    workload = load_catalogs().workloads.match("chatbot").profile
    engine = EngineSettings(image="apptainer exec /apps/containers/vLLM/vllm-0.11.0.sif vllm serve",
                            max_model_len=10000)
    return ExperimentSpec(
        model="gpt-oss-20b", backend="slurm", workload=workload, engine=engine, experiment_id=experiment_id,
        profile="alvis", origins={"model": Origin(Source.USER), "engine.max_model_len": Origin(Source.CATALOG)},
    )


def slurm_script(gates: dict[str, Gate]) -> list:
    """The events :class:`backends.slurm.watch.RunWatch` emits, in its order and shapes.

    Waits at ``gates[name]`` for each name given: ``pending`` (job PENDING on
    Resources), ``serving`` (tunnel up, endpoint, logs), ``broken`` (SSH lost),
    ``reconnecting`` (backoff attempt), ``up`` (tunnel back, more lines).
    """
    from backends.events import Notice

    t = FIXED_NOW
    job = f"job {SLURM_JOB}"
    server = f"server {SLURM_SERVER}"

    def gate(name: str) -> list:
        return [gates[name]] if name in gates else []

    first_lines = [
        LogLine("(APIServer pid=20037) INFO 11-23 10:00:05 [api_server.py:1839] vLLM API server version 0.11.0",
                "out", "vllm", ts=t + 5),
        LogLine("(EngineCore_DP0 pid=20037) INFO 11-23 10:00:09 [default_loader.py:267] "
                "Loading weights took 3.91 seconds", "out", "vllm", ts=t + 9),
        LogLine("(APIServer pid=20037) INFO 11-23 10:00:12 [api_server.py:1912] Starting vLLM API server on http://0.0.0.0:41084",
                "out", "vllm", ts=t + 12),
        LogLine("INFO:     Started server process [20037]", "err", "vllm", ts=t + 12),
        LogLine("INFO:     Waiting for application startup.", "err", "vllm", ts=t + 12),
        LogLine("INFO:     Application startup complete.", "err", "vllm", ts=t + 12),
    ]
    later_lines = [
        LogLine('INFO:     127.0.0.1:52114 - "GET /v1/models HTTP/1.1" 200 OK', "err", "vllm", ts=t + 25),
        LogLine("(APIServer pid=20037) INFO 11-23 10:00:26 [loggers.py:123] Engine 000: "
                "Avg prompt throughput: 0.0 tokens/s, Avg generation throughput: 0.0 tokens/s, Running: 0 reqs",
                "out", "vllm", ts=t + 26),
    ]
    return [
        Phase(job, "SUBMITTED", kind="job", ts=t - 60),
        Notice("Waiting for job to start...", ts=t - 60),
        Phase(job, "PENDING", "Resources", kind="job", ts=t - 59),
        *gate("pending"),
        Phase(job, "RUNNING", SLURM_NODE, kind="job", started=t, ts=t),
        Notice("Waiting for server address...", ts=t),
        Notice(f"Server address: {SLURM_SERVER}", ts=t + 4),
        Phase(server, "STARTING", job, kind="server", ts=t + 4),
        Notice("Establishing SSH tunnel (local port 58000)...", ts=t + 13),
        Phase(SLURM_TUNNEL, "up", f"{SLURM_SERVER}", kind="tunnel", ts=t + 13),
        Notice("Testing connection...", ts=t + 13),
        Phase(server, "READY", SLURM_URL, kind="server", ts=t + 14),
        Endpoint(SLURM_URL, True, "openai/gpt-oss-20b", f"job {SLURM_JOB} on {SLURM_NODE}", ts=t + 14),
        Notice("Streaming logs (Ctrl+C to stop and cleanup)...", ts=t + 14),
        first_lines,
        *gate("serving"),
        Phase(SLURM_TUNNEL, "broken", "SSH connection to alvis2 lost", kind="tunnel", ts=t + 20),
        *gate("broken"),
        Phase(SLURM_TUNNEL, "reconnecting", "attempt 1", kind="tunnel", ts=t + 21),
        *gate("reconnecting"),
        Phase(SLURM_TUNNEL, "up", "reconnected to alvis2", kind="tunnel", ts=t + 22),
        later_lines,
        *gate("up"),
    ]
