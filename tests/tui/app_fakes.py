"""Fakes for the app's Pilot tests: a backend, a run controller and a monitor screen.

They follow the real interfaces (Backend protocol; RunController(backend,
spec, *, store, record, registry) with start/attach/cleanup/detach/live;
RunMonitorScreen(controller)) so the app is tested without processes.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Static

from backends.base import Check, Remedy, Run
from backends.events import Endpoint, Finished

FIXED_TODAY = _dt.date(2026, 11, 23)
# 2026-11-23 10:00:00 UTC
FIXED_NOW = 1795423200.0


class FakeBackend:
    """Records calls; preflight returns ``checks``."""

    def __init__(self, name: str = "local", checks: list[Check] | None = None) -> None:
        self.name = name
        self.checks = checks if checks is not None else [
            Check("Simulator available", "pass", "python -m backends.sim"),
            Check("Port 8000 free", "pass", "127.0.0.1:8000 is free"),
        ]
        self.preflighted: list = []
        self.launched: list = []

    async def preflight(self, spec):
        self.preflighted.append(spec)
        await asyncio.sleep(0)
        return list(self.checks)

    async def launch(self, spec):
        self.launched.append(spec)
        return Run(spec.experiment_id, self.name, spec, store=None, started=FIXED_NOW - 65)

    async def events(self, run):
        yield Endpoint("http://127.0.0.1:8000/v1", model=run.spec.model)
        yield Finished("succeeded")

    async def cancel(self, run, *, graceful=True):
        pass

    async def cleanup(self, run):
        pass

    async def attach(self, saved):
        raise NotImplementedError


class RemedyBackend(FakeBackend):
    """A backend whose namespace check fails until its remedy (create the namespace) is applied.

    ``remedy_error`` makes the remedy raise that error instead (nothing changes).
    """

    def __init__(self, name: str = "local", remedy_error: Exception | None = None) -> None:
        super().__init__(name)
        self.namespace_exists = False
        self.remedied: list[tuple] = []
        self.remedy_error = remedy_error

    async def preflight(self, spec):
        self.preflighted.append(spec)
        await asyncio.sleep(0)
        checks = [Check("Cluster reachable", "pass", "fake cluster")]
        if self.namespace_exists:
            checks.append(Check("Namespace mert", "pass", "exists"))
        else:
            checks.append(Check(
                "Namespace mert", "fail", "does not exist", "kubectl create namespace mert",
                remedy=Remedy("create_namespace", "Create namespace mert",
                              "Create the namespace mert on the cluster?", {"namespace": "mert"}),
            ))
        return checks

    async def remedy(self, spec, remedy):
        self.remedied.append((spec.experiment_id, remedy.id, dict(remedy.args)))
        await asyncio.sleep(0)
        if self.remedy_error is not None:
            raise self.remedy_error
        self.namespace_exists = True
        return f"namespace {remedy.args['namespace']} created"


class FakeController:
    """A controller whose run stays live until cleaned up or detached.

    Its run lives in a (pretend) supervisor, as real runs do: nothing of it is in
    the app's registry. ``stuck=True`` makes cleanup hang (to test the bounded quit).
    """

    instances: list[FakeController] = []

    def __init__(self, backend, spec=None, *, store, record=None, registry=None, stuck: bool = False) -> None:
        self.backend = backend
        self.spec = spec
        self.store = store
        self.record = record
        self.registry = registry
        self.run = None
        self.state = "created" if record is None else record.state
        self.live = False
        self.started = asyncio.Event()
        self.cleaned = False
        self.detached = False
        self.attached = False
        self.stuck = stuck
        self._token = None
        self.forced = False
        self.replayed = False
        FakeController.instances.append(self)

    async def start(self) -> None:
        run = await self.backend.launch(self.spec)
        self.run = run
        self.state = "running"
        self.live = True
        self.started.set()
        await asyncio.Event().wait()  # consume events forever

    async def attach(self) -> None:
        if self.record.state != "detached":
            self.replayed = True  # a finished run: read-only replay of its events
            return
        self.attached = True
        self.state = "running"
        self.live = True
        self.run = Run(self.record.id, self.record.backend, None, store=None)
        self.started.set()
        await asyncio.Event().wait()

    async def cancel(self) -> None:
        self.state = "cancelled"

    async def cleanup(self, timeout: float = 10.0) -> list:
        if self.stuck:
            await asyncio.Event().wait()
        self.cleaned = True
        self.live = False
        self.state = "cancelled"
        return ["cleaned"]

    async def detach(self) -> str:
        self.detached = True
        self.live = False
        self.state = "detached"
        return f"sweepdeck attach {self.run.id if self.run else self.spec.experiment_id}"


class FakeMonitor(Screen):
    """Stands in for RunMonitorScreen(controller)."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Back", id="fake_monitor_back")]

    def __init__(self, controller) -> None:
        super().__init__()
        self.controller = controller

    def compose(self) -> ComposeResult:
        spec = self.controller.spec
        name = spec.experiment_id if spec is not None else self.controller.record.id
        yield Static(f"MONITOR {name}", id="fake-monitor")
        yield Footer()


def write_record(root: Path, run_id: str, *, state: str, started: float, finished: float | None = None,
                 backend: str = "local", model: str = "Qwen/Qwen2.5-Math-1.5B", workload: str = "chatbot",
                 leftovers: list | None = None, message: str = "") -> Path:
    """A saved run in the store layout (meta.json + spec.json), with fixed times.

    A live run (``detached``, ``running``) gets this test process as its supervisor, so the
    reconciliation that settles runs whose supervisor is gone leaves it as it is.
    """
    import os

    from backends.procs import start_time
    from backends.store import LIVE_STATES
    from config.catalog import load_catalogs
    from config.spec import build_spec

    path = root / "runs" / run_id
    path.mkdir(parents=True, exist_ok=True)
    spec = build_spec(load_catalogs(), model, workload=workload, backend=backend, experiment_id=run_id,
                      today=FIXED_TODAY)
    (path / "spec.json").write_text(json.dumps(spec.to_dict()))
    meta = {"id": run_id, "backend": backend, "model": model, "workload": workload, "state": state, "started": started}
    if finished is not None:
        meta["finished"] = finished
    if state in LIVE_STATES:
        meta["supervisor"] = {"pid": os.getpid(), "start": start_time(os.getpid())}
    if leftovers:
        meta["leftovers"] = leftovers
    if message:
        meta["message"] = message
    (path / "meta.json").write_text(json.dumps(meta))
    return path


def seed_store(root: Path) -> None:
    """Five saved runs in every finished/detached state, one of them lost with its SLURM job left."""
    write_record(root, "nov23-qwen2-5-math-1-5b-chatbot", state="succeeded", started=FIXED_NOW - 3600,
                 finished=FIXED_NOW - 3000)
    write_record(root, "nov22-llama-2-7b-hf-summarization", state="failed", started=FIXED_NOW - 86400,
                 finished=FIXED_NOW - 86000, model="meta-llama/Llama-2-7b-hf", workload="summarization")
    write_record(root, "nov21-mistral-7b-codesweep", state="cancelled", started=FIXED_NOW - 2 * 86400,
                 finished=FIXED_NOW - 2 * 86400 + 95, model="mistralai/Mistral-7B-Instruct-v0.3", workload="codesweep")
    write_record(root, "nov23-qwen2-5-7b-instruct-train", state="detached", started=FIXED_NOW - 1200,
                 model="Qwen/Qwen2.5-7B-Instruct", workload="train")
    write_record(
        root,
        "nov20-llama-3-8b-instruct-chatbot",
        state="lost",
        started=FIXED_NOW - 3 * 86400,
        finished=FIXED_NOW - 3 * 86400 + 420,
        backend="slurm",
        model="meta-llama/Meta-Llama-3-8B-Instruct",
        leftovers=[{"kind": "slurm_job", "id": "5382685", "host": "alvis2", "label": "scancel 5382685"}],
        message="Its supervisor ended unexpectedly while the run was running; 1 thing(s) it started may still exist.",
    )


def seed_family(root: Path) -> None:
    """The seeded store plus a fix run of the failed llama-2 run (as the app records one)."""
    seed_store(root)
    path = write_record(root, "nov22-llama-2-7b-hf-summarization-fix", state="succeeded", started=FIXED_NOW - 80000,
                        finished=FIXED_NOW - 79000, model="meta-llama/Llama-2-7b-hf", workload="summarization")
    meta = json.loads((path / "meta.json").read_text())
    meta["parent"] = "nov22-llama-2-7b-hf-summarization"
    meta["fix"] = {"label": "Reduce context", "changes": {"engine.max_model_len": 2048}}
    (path / "meta.json").write_text(json.dumps(meta))


def clock() -> float:
    return FIXED_NOW


_CATALOGS = None


def shared_catalogs():
    """The shipped catalogs, parsed once per test session (they are read-only)."""
    global _CATALOGS
    if _CATALOGS is None:
        from config.catalog import load_catalogs

        _CATALOGS = load_catalogs()
        _CATALOGS.validate()
    return _CATALOGS


def profiles() -> dict:
    """Two remote profiles as a user's config would define them."""
    from config.settings import Profile, validate_profile

    return {
        "alvis": Profile("alvis", "slurm", validate_profile("slurm", {
            "backend": "slurm", "ssh_host": "alvis2", "account": "NAISS2025-22-1522", "gpus": "A40:1",
            "description": "Alvis A40 nodes",
        }, None, "profiles.alvis", lenient=True)),
        "mert": Profile("mert", "tekton", validate_profile("tekton", {
            "backend": "tekton", "namespace": "mert",
        }, None, "profiles.mert")),
    }


def make_app(*, checks: list[Check] | None = None, backend: FakeBackend | None = None, keys: dict | None = None,
             registry=None, controller_factory=None, store=None, cleanup_timeout: float = 5.0,
             with_profiles: bool = False, **kw):
    """A SweepdeckApp on fakes with fixed dates (the store is the test's SWEEPDECK_STATE_DIR)."""
    from backends.cleanup import CleanupRegistry
    from config.settings import Settings
    from tui.app import SweepdeckApp

    settings = Settings(keys=dict(keys or {}), profiles=profiles() if with_profiles else {})
    settings._catalogs = shared_catalogs()
    backend = backend or FakeBackend(checks=checks)
    app = SweepdeckApp(
        settings,
        {"local": backend},
        registry=registry if registry is not None else CleanupRegistry(),
        today=FIXED_TODAY,
        clock=clock,
        controller_factory=controller_factory or FakeController,
        monitor_factory=FakeMonitor,
        install_signals=False,
        cleanup_timeout=cleanup_timeout,
        store=store,
        **kw,
    )
    app.fake_backend = backend  # type: ignore[attr-defined]  # a test-only attribute
    return app
