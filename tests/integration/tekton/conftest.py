"""Fake-API fixtures for the tekton backend: a seeded cluster, a controller, a backend and a spec."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.support.fakekube import fake_kube  # noqa: F401 - a pytest fixture, found by its name
from tests.support.fakekube.tekton_controller import TektonController

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "tekton"
NS = "mert"


def seed(fake, ns=NS, gpus=(8,), product="NVIDIA-H100-80GB-HBM3"):
    """A namespace with hf-secret, s3-secret, Bound model-pvc/data-pvc and GPU nodes."""
    fake.ensure_namespace(ns)
    for name, data in (("hf-secret", {"HF_TOKEN": "c2VjcmV0LXRva2Vu"}), ("s3-secret", {"AWS_ACCESS_KEY_ID": "a2V5"})):
        fake.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns}, "data": data})
    for name in ("model-pvc", "data-pvc"):
        fake.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": ns},
                     "spec": {"accessModes": ["ReadWriteMany"]}, "status": {"phase": "Bound"}})
    for i, n in enumerate(gpus):
        fake.add_node(f"gpu-{i}", {"nvidia.com/gpu.product": product}, gpus=n)
    fake.add_node("cpu-0", {}, gpus=0)


@pytest.fixture
def cluster(fake_kube, tmp_path):  # noqa: F811 - the fake_kube fixture imported above
    seed(fake_kube)
    results = tmp_path / "data-pvc"
    results.mkdir()
    ctl = TektonController(fake_kube, step=0.05, results_root=results).start()
    fake_kube.controller = ctl
    yield fake_kube
    ctl.stop()
    assert not [e for e in ctl.errors if not e.startswith("404")], ctl.errors


@pytest.fixture
def user_files(tmp_path):
    """A user's BLIS checkout-like files (values + pipelinerun) that must never change."""
    d = tmp_path / "blis"
    d.mkdir()
    for name in ("blis-values.yaml", "blis-pipelinerun.yaml"):
        (d / name).write_bytes((FIX / name).read_bytes())
    return d


@pytest.fixture
def settings(tmp_path, user_files, fake_kube):  # noqa: F811 - the fake_kube fixture imported above
    from config.settings import load_settings

    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"profiles": {"lab": {
        "backend": "tekton", "namespace": NS, "kubeconfig": str(fake_kube.kubeconfig),
        "values": str(user_files / "blis-values.yaml"), "pipelinerun": str(user_files / "blis-pipelinerun.yaml"),
        "expected_minutes": {},
    }}}))
    return load_settings(cfg)


@pytest.fixture
def backend(settings):
    from backends.cleanup import CleanupRegistry
    from backends.tekton import TektonBackend

    return TektonBackend(settings, settings.profile("lab", "tekton"), registry=CleanupRegistry())


@pytest.fixture
def spec(settings, user_files):
    from config.spec import build_spec

    values = yaml.safe_load((user_files / "blis-values.yaml").read_text())
    return build_spec(settings.catalogs, "meta-llama/Llama-2-7b-hf", backend="tekton", profile="lab",
                      namespace=NS, experiment_id="exp1", base_values=values)
