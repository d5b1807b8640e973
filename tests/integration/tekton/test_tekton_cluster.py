"""Opt-in: the same flows against a real cluster (``pytest -m cluster``; needs ``KUBECONFIG``).

* always (read-only): client construction, discovery, the preflight checks;
* with ``SWEEPDECK_CLUSTER_NAMESPACE=ns``: checks in that namespace;
* with ``SWEEPDECK_CLUSTER_LAUNCH=1`` too: a full launch → watch → results run of a
  TP=1 experiment (needs GPUs, hf-secret, s3-secret, model-pvc, data-pvc and Tekton).
"""

from __future__ import annotations

import asyncio
import os

import pytest

from backends.store import RunStore

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

KUBECONFIG = os.environ.get("KUBECONFIG", "")


@pytest.fixture
def real_kube():
    if not KUBECONFIG:
        pytest.skip("set KUBECONFIG to run the cluster tests")
    from backends.kube import Kube

    kube = Kube.connect(KUBECONFIG.split(os.pathsep)[0], os.environ.get("SWEEPDECK_CLUSTER_CONTEXT"))
    yield kube
    kube.close()


async def test_discovery_and_watch_namespaces(real_kube):
    assert (await real_kube.version()).startswith("v1.")
    groups = await real_kube.api_groups()
    assert "apps" in groups
    stream = real_kube.watch("", "v1", "namespaces", None, timeout_seconds=5)
    try:
        first = await asyncio.wait_for(stream.__aiter__().__anext__(), 30)
    finally:
        stream.stop()
    assert first.type == "SYNC" and first.objects


def _backend_and_spec(namespace):
    from backends.cleanup import CleanupRegistry
    from backends.tekton import TektonBackend
    from config.settings import Profile, load_settings, validate_profile
    from config.spec import build_spec

    settings = load_settings()
    opts = validate_profile(
        "tekton",
        {"backend": "tekton", "namespace": namespace, "kubeconfig": KUBECONFIG.split(os.pathsep)[0]},
        None,
        "cluster",
    )
    backend = TektonBackend(settings, Profile("cluster", "tekton", opts), registry=CleanupRegistry())
    spec = build_spec(settings.catalogs, os.environ.get("SWEEPDECK_CLUSTER_MODEL", "Qwen/Qwen2.5-Math-1.5B"),
                      backend="tekton",
                      namespace=namespace, tp=1, experiment_id=os.environ.get("SWEEPDECK_CLUSTER_ID", "sweepdeck-ci"))
    return backend, spec


async def test_preflight_on_real_cluster(real_kube):
    ns = os.environ.get("SWEEPDECK_CLUSTER_NAMESPACE", "default")
    backend, spec = _backend_and_spec(ns)
    checks = await backend.preflight(spec)
    names = [c.name for c in checks]
    assert names[0] == "Cluster reachable" and checks[0].status == "pass"
    assert "Tekton installed" in names and "GPUs" in names


async def test_launch_on_real_cluster(real_kube):
    if os.environ.get("SWEEPDECK_CLUSTER_LAUNCH") != "1" or not os.environ.get("SWEEPDECK_CLUSTER_NAMESPACE"):
        pytest.skip("set SWEEPDECK_CLUSTER_NAMESPACE and SWEEPDECK_CLUSTER_LAUNCH=1 to launch a real experiment")
    from backends.events import Finished

    backend, spec = _backend_and_spec(os.environ["SWEEPDECK_CLUSTER_NAMESPACE"])
    run = await backend.launch(spec, RunStore().create(spec))
    try:
        last = None
        async for ev in backend.events(run):
            last = ev
        assert isinstance(last, Finished) and last.outcome == "succeeded", last
    finally:
        await backend.cleanup(run)


def _namespace_or_skip() -> str:
    ns = os.environ.get("SWEEPDECK_CLUSTER_NAMESPACE")
    if not ns or os.environ.get("SWEEPDECK_CLUSTER_LAUNCH") != "1":
        pytest.skip("set SWEEPDECK_CLUSTER_NAMESPACE and SWEEPDECK_CLUSTER_LAUNCH=1 to change things on a real cluster")
    return ns


def _tiny_pipelinerun(name: str) -> dict:
    """A PipelineRun with one long main task and one finally task (busybox; no GPUs)."""
    step = {"name": "run", "image": "busybox:1.36", "script": "sleep 600"}
    done = {"name": "run", "image": "busybox:1.36", "script": "echo cleaned"}
    return {"apiVersion": "tekton.dev/v1", "kind": "PipelineRun", "metadata": {"name": name}, "spec": {"pipelineSpec": {
        "tasks": [{"name": "work", "taskSpec": {"steps": [step]}}],
        "finally": [{"name": "cleanup", "taskSpec": {"steps": [done]}}],
    }}}


@pytest.mark.parametrize("graceful", [True, False], ids=["finally-runs", "now"])
async def test_cancel_on_real_cluster(real_kube, graceful):
    """CancelledRunFinally runs the finally task; Cancelled skips it (a busybox PipelineRun, deleted afterwards)."""
    import time

    from backends.events import Finished
    from backends.tekton.backend import TEKTON

    ns = _namespace_or_skip()
    backend, _spec = _backend_and_spec(ns)
    name = f"sweepdeck-ci-cancel-{'soft' if graceful else 'now'}-{int(time.time()) % 100000}"
    run = await backend.launch_pipelinerun(_tiny_pipelinerun(name), ns,
                                           RunStore().create(_spec.set("experiment_id", name)))
    try:
        cancelled = False
        last = None
        async for ev in backend.events(run):
            last = ev
            if not cancelled and getattr(ev, "unit", "") == "work" and getattr(ev, "state", "") == "Running":
                await backend.cancel(run, graceful=graceful)
                cancelled = True
        assert isinstance(last, Finished) and last.outcome == "cancelled", last
        pr = await real_kube.get(*TEKTON, "pipelineruns", name, ns)
        assert pr["spec"]["status"] == ("CancelledRunFinally" if graceful else "Cancelled")
        trs = await real_kube.list(*TEKTON, "taskruns", ns, label_selector=f"tekton.dev/pipelineRun={name}")
        ran = {t["metadata"]["labels"].get("tekton.dev/pipelineTask") for t in trs}
        assert ("cleanup" in ran) is graceful
    finally:
        await real_kube.delete(*TEKTON, "pipelineruns", name, ns)


async def test_install_shared_on_real_cluster(real_kube):
    """install-shared applies the guidellm Task to a namespace (create, then update in place)."""
    import yaml

    from backends.tekton.backend import TEKTON
    from backends.tekton.install import install_shared
    from templates.render import render

    ns = os.environ.get("SWEEPDECK_CLUSTER_SHARED_NAMESPACE") or _namespace_or_skip()
    task = yaml.safe_load(render("tekton/tasks/guidellm-load-generator.yaml"))
    task["metadata"]["namespace"] = ns
    first = await install_shared(task, ns, KUBECONFIG.split(os.pathsep)[0], os.environ.get("SWEEPDECK_CLUSTER_CONTEXT"))
    again = await install_shared(task, ns, KUBECONFIG.split(os.pathsep)[0], os.environ.get("SWEEPDECK_CLUSTER_CONTEXT"))
    assert any("guidellm-load-generator" in line for line in first)
    assert any("updated" in line for line in again)
    got = await real_kube.get(*TEKTON, "tasks", "guidellm-load-generator", ns)
    assert [r["name"] for r in got["spec"]["results"]] == ["benchmark-report", "log-file"]
