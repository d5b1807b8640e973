"""Fixtures for the argo backend: the fake API server with Argo installed and a test
controller whose worker pods run the real reference worker against a real queue API
(FastAPI + SQLite over HTTP on a free port)."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
import yaml

from tests.integration.queue.conftest import ApiServer
from tests.support.fakekube import fake_kube  # noqa: F401
from tests.support.fakekube.argo_controller import ArgoController, PodContext, install_argo_crds

NS = "sweeps"
MVID = "mv1"
W = "/api/v1/workflow"
#: 2 hardware × 1 framework × 5 workloads × 2 batch sizes × 2 sequence lengths
SMALL = {"hardware": ["H100-80GB:1", "A100-80GB:1"], "frameworks": ["vllm"], "batch_sizes": [1, 2], "sequence_lengths": [1024, 2048]}
SMALL_TOTAL = 40


def populate(api, mvid=MVID, matrix=SMALL) -> int:
    r = httpx.post(f"{api.url}{W}/populate/{mvid}", json=matrix, timeout=10)
    r.raise_for_status()
    return r.json()["created"]


def progress(api, mvid=MVID) -> dict:
    return httpx.get(f"{api.url}{W}/progress/{mvid}", timeout=10).json()


class Workers:
    """The worker pods' behaviour: ``sweepdeck queue worker`` (QueueWorker) with a command template."""

    def __init__(self) -> None:
        self.command = "sleep 0.03"
        self.counts: list[dict] = []

    def __call__(self, ctx: PodContext):
        if ctx.template != "worker":
            return NotImplemented  # populate/finalize: the controller's default (log, succeed)
        from backends.queue.worker import QueueWorker

        async def go():
            worker = QueueWorker(
                api_url=ctx.arg("--api-url"), batch_size=int(ctx.arg("--batch-size")),
                model_version_id=ctx.arg("--model-version-id"), command=self.command, name=ctx.pod, on_log=ctx.log,
            )
            loop = asyncio.get_running_loop()
            done = threading.Event()

            def sigterm() -> None:
                # Argo's stop sends the pod SIGTERM; here the controller sets ctx.stopped.
                while not ctx.stopped.wait(0.02):
                    if done.is_set():
                        return
                try:
                    loop.call_soon_threadsafe(worker.stop)
                except RuntimeError:  # the worker already ended and its loop closed
                    pass

            threading.Thread(target=sigterm, daemon=True).start()
            try:
                return await worker.run()
            finally:
                done.set()

        counts = asyncio.run(go())
        self.counts.append(counts)
        ctx.log(f"[INFO] worker finished: {counts['completed']} completed, {counts['failed']} failed, {counts['released']} returned to pending")
        return True


@pytest.fixture
def api(tmp_path):
    with ApiServer(f"sqlite:///{tmp_path / 'queue.db'}") as server:
        yield server


@pytest.fixture
def cluster(fake_kube):  # noqa: F811
    """The fake API server with Argo's CRDs, the namespace and a running Argo test controller."""
    install_argo_crds(fake_kube)
    fake_kube.ensure_namespace(NS)
    workers = Workers()
    ctl = ArgoController(fake_kube, step=0.03, run_pod=workers).start()
    fake_kube.controller = ctl
    fake_kube.workers = workers
    yield fake_kube
    ctl.stop()
    assert not [e for e in ctl.errors if not e.startswith("404")], ctl.errors


@pytest.fixture
def config_file(tmp_path, fake_kube, api):  # noqa: F811
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"profiles": {"sweep": {
        "backend": "argo", "namespace": NS, "kubeconfig": str(fake_kube.kubeconfig), "queue_url": api.url,
        "model_version_id": MVID, "max_parallel_pods": 3, "batch_size": 4, "poll_interval": 0.1, "watch_timeout": 30,
    }}}))
    return cfg


@pytest.fixture
def settings(config_file):
    from config.settings import load_settings

    return load_settings(config_file)


@pytest.fixture
def profile(settings):
    return settings.profile("sweep", "argo")


@pytest.fixture
def backend(settings, profile):
    from backends.argo import ArgoBackend
    from backends.cleanup import CleanupRegistry

    return ArgoBackend(settings, profile, registry=CleanupRegistry())


@pytest.fixture
def spec(settings, profile):
    from backends.argo.backend import sweep_spec

    return sweep_spec(settings, profile, model_version_id=MVID, experiment_id="sweep1")


def with_options(backend, **options):
    """The same backend class over a copy of its profile with ``options`` changed."""
    from backends.argo import ArgoBackend
    from config.settings import Profile

    prof = Profile(backend.profile.name, "argo", {**backend.profile.options, **options})
    return ArgoBackend(backend.settings, prof, registry=backend.registry)
