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
    opts = validate_profile("tekton", {"backend": "tekton", "namespace": namespace, "kubeconfig": KUBECONFIG.split(os.pathsep)[0]}, None, "cluster")
    backend = TektonBackend(settings, Profile("cluster", "tekton", opts), registry=CleanupRegistry())
    spec = build_spec(settings.catalogs, os.environ.get("SWEEPDECK_CLUSTER_MODEL", "Qwen/Qwen2.5-Math-1.5B"), backend="tekton",
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
    run = await backend.launch(spec)
    try:
        last = None
        async for ev in backend.events(run):
            last = ev
        assert isinstance(last, Finished) and last.outcome == "succeeded", last
    finally:
        await backend.cleanup(run)
