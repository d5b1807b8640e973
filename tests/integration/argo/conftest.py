"""Fixtures for the argo backend: the fake API server with Argo installed and a test
controller whose worker pods run the real reference worker against a real queue API
(FastAPI + SQLite over HTTP on a free port).

The pods get the queue's tokens as a kubelet would: from the Secret their
volumes name (:func:`mounted_file`); a pod whose Secret is missing fails.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading

import httpx
import pytest
import yaml

from tests.integration.queue.conftest import TOKEN_ENTRIES, ApiServer, auth
from tests.support.fakekube import fake_kube  # noqa: F401 - a pytest fixture, found by its name
from tests.support.fakekube.argo_controller import ArgoController, PodContext, install_argo_crds

NS = "sweeps"
MVID = "mv1"
W = "/api/v1/workflow"
#: 2 hardware × 1 framework × 5 workloads × 2 batch sizes × 2 sequence lengths
SMALL = {
    "hardware": ["H100-80GB:1", "A100-80GB:1"],
    "frameworks": ["vllm"],
    "batch_sizes": [1, 2],
    "sequence_lengths": [1024, 2048],
}
SMALL_TOTAL = 40


def populate(api, mvid=MVID, matrix=SMALL) -> int:
    r = httpx.post(f"{api.url}{W}/populate/{mvid}", json=matrix, timeout=10, headers=auth())
    r.raise_for_status()
    return r.json()["created"]


def progress(api, mvid=MVID) -> dict:
    return httpx.get(f"{api.url}{W}/progress/{mvid}", timeout=10, headers=auth()).json()


def create_token_secret(fake, namespace=NS, name="sweepdeck-queue-token") -> None:
    """The Secret `sweepdeck argo submit` offers to create, holding the tests' tokens."""
    tokens = {role: token for _n, role, token in TOKEN_ENTRIES}
    lines = "".join(f"{n} {r} {t}\n" for n, r, t in TOKEN_ENTRIES)
    data = {
        k: base64.b64encode(v.encode()).decode()
        for k, v in (("tokens", lines), ("worker-token", tokens["worker"]), ("admin-token", tokens["admin"]))
    }
    fake.create(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace}, "data": data}
    )


def mounted_file(ctx: PodContext, path: str) -> str:
    """What a pod reads at ``path``: the Secret key its template mounts there (as the kubelet would).

    Raises:
        FileNotFoundError: no Secret volume is mounted there, or the Secret or key is missing (the pod cannot start).
    """
    wf = ctx.fake.get("argoproj.io/v1alpha1", "Workflow", ctx.workflow, ctx.namespace)
    template = next(t for t in wf["spec"]["templates"] if t["name"] == ctx.template)
    volumes = {v["name"]: v for v in wf["spec"].get("volumes") or []}
    for mount in template["container"].get("volumeMounts") or []:
        root = mount["mountPath"].rstrip("/") + "/"
        if not path.startswith(root):
            continue
        source = volumes[mount["name"]]["secret"]
        rel = path[len(root) :]
        items = {i["path"]: i["key"] for i in source.get("items") or []}
        key = items.get(rel, rel if not items else None)
        try:
            secret = ctx.fake.get("v1", "Secret", source["secretName"], ctx.namespace)
        except Exception as exc:
            raise FileNotFoundError(f"secret {source['secretName']!r} not found ({exc})") from None
        if key not in (secret.get("data") or {}):
            raise FileNotFoundError(f"secret {source['secretName']!r} has no key {key!r}")
        return base64.b64decode(secret["data"][key]).decode()
    raise FileNotFoundError(f"{path}: no volume is mounted there")


class Workers:
    """The pods' behaviour. Workers run ``sweepdeck queue worker`` (QueueWorker) with a command template and the
    worker token of their mounted Secret; populate and finalize call the queue with their admin token."""

    def __init__(self) -> None:
        self.command = "sleep 0.03"
        self.counts: list[dict] = []

    def __call__(self, ctx: PodContext):
        token = mounted_file(ctx, ctx.arg("--token-file"))
        if ctx.template != "worker":  # populate/finalize: the token must be an admin's, then the default (log, succeed)
            url = ctx.arg("--api-url")
            mvid = ctx.args[ctx.args.index("--") + 1]
            r = httpx.post(
                f"{url}{W}/populate/{mvid}",
                params={"dry_run": True},
                timeout=30,
                headers={"Authorization": f"Bearer {token}"},
            )
            r.raise_for_status()
            return NotImplemented
        from backends.queue.worker import QueueWorker

        async def go():
            worker = QueueWorker(
                api_url=ctx.arg("--api-url"),
                batch_size=int(ctx.arg("--batch-size")),
                token=token,
                model_version_id=ctx.arg("--model-version-id"),
                command=self.command,
                name=ctx.pod,
                on_log=ctx.log,
            )
            loop = asyncio.get_running_loop()
            done = threading.Event()

            def sigterm() -> None:
                # Argo's stop sends the pod SIGTERM; here the controller sets ctx.stopped.
                while not ctx.stopped.wait(0.02):
                    if done.is_set():
                        return
                with contextlib.suppress(RuntimeError):  # the worker already ended and its loop closed
                    loop.call_soon_threadsafe(worker.stop)

            threading.Thread(target=sigterm, daemon=True).start()
            try:
                return await worker.run()
            finally:
                done.set()

        counts = asyncio.run(go())
        self.counts.append(counts)
        ctx.log(f"[INFO] worker finished: {counts['completed']} completed, {counts['failed']} failed, "
                f"{counts['released']} returned to pending")
        return True


@pytest.fixture
def api(tmp_path):
    with ApiServer(f"sqlite:///{tmp_path / 'queue.db'}") as server:
        yield server


@pytest.fixture
def cluster(fake_kube):  # noqa: F811 - the fake_kube fixture imported above
    """The fake API server with Argo's CRDs, the namespace and a running Argo test controller."""
    install_argo_crds(fake_kube)
    fake_kube.ensure_namespace(NS)
    create_token_secret(fake_kube)
    workers = Workers()
    ctl = ArgoController(fake_kube, step=0.03, run_pod=workers).start()
    fake_kube.controller = ctl
    fake_kube.workers = workers
    yield fake_kube
    ctl.stop()
    assert not [e for e in ctl.errors if not e.startswith("404")], ctl.errors


@pytest.fixture
def config_file(tmp_path, fake_kube, api):  # noqa: F811 - the fake_kube fixture imported above
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "profiles": {
                    "sweep": {
                        "backend": "argo",
                        "namespace": NS,
                        "kubeconfig": str(fake_kube.kubeconfig),
                        "queue_url": api.url,
                        "queue_token_file": str(api.token_file),
                        "model_version_id": MVID,
                        "max_parallel_pods": 3,
                        "batch_size": 4,
                        "poll_interval": 0.1,
                        "watch_timeout": 30,
                    }
                }
            }
        )
    )
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
