"""`sweepdeck run` offers pre-flight remedies: --fix does them, a terminal is asked, otherwise the fix is printed.

Fake-API tests: the tekton backend's missing-namespace check carries a
``create_namespace`` Remedy; the namespace is created through the (fake) API.
A namespace template — as OpenShift project templates or a policy engine
provision real clusters — adds the secrets and Bound PVCs once the namespace
exists, so the run can go ahead after the remedy.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import yaml

from tests.support.fakekube import fake_kube  # noqa: F401 - a pytest fixture, found by its name
from tui.cli import main

pytestmark = pytest.mark.fakeapi

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "tekton"
NS = "fresh"


@pytest.fixture
def config_file(tmp_path, fake_kube, monkeypatch):  # noqa: F811 - the fake_kube fixture imported above
    blis = tmp_path / "blis"
    blis.mkdir()
    for name in ("blis-values.yaml", "blis-pipelinerun.yaml"):
        (blis / name).write_bytes((FIX / name).read_bytes())
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"profiles": {"lab": {
        "backend": "tekton", "namespace": NS, "kubeconfig": str(fake_kube.kubeconfig),
        "values": str(blis / "blis-values.yaml"), "pipelinerun": str(blis / "blis-pipelinerun.yaml"),
    }}}))
    monkeypatch.setenv("SWEEPDECK_CONFIG", str(cfg))
    fake_kube.add_node("gpu-0", {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, gpus=8)
    return cfg


@pytest.fixture
def namespace_template(fake_kube):  # noqa: F811 - the fake_kube fixture imported above
    """Provision hf-secret, s3-secret and Bound model-pvc/data-pvc in every namespace created."""
    events = fake_kube.subscribe()
    stop = threading.Event()

    def provision() -> None:
        import queue

        while not stop.is_set():
            try:
                etype, obj = events.get(timeout=0.05)
            except queue.Empty:
                continue
            if obj.get("kind") != "Namespace" or etype != "ADDED":
                continue
            ns = obj["metadata"]["name"]
            for name in ("hf-secret", "s3-secret"):
                fake_kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
                                  "data": {"k": "dg=="}})
            for name in ("model-pvc", "data-pvc"):
                fake_kube.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                  "metadata": {"name": name, "namespace": ns},
                                  "spec": {"accessModes": ["ReadWriteMany"]}, "status": {"phase": "Bound"}})

    thread = threading.Thread(target=provision, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(2)
    fake_kube.unsubscribe(events)


RUN = ["run", "--backend", "tekton", "--profile", "lab", "--model", "meta-llama/Llama-2-7b-hf",
       "--namespace", NS, "--tp", "2", "--yes"]


def test_fix_creates_the_namespace_and_the_run_proceeds(fake_kube, config_file, namespace_template, tmp_path, capsys):  # noqa: F811 - the fake_kube fixture imported above
    from backends.store import RunStore
    from tests.support.fakekube.tekton_controller import TektonController

    ctl = TektonController(fake_kube, step=0.03, results_root=tmp_path / "pvc").start()
    (tmp_path / "pvc").mkdir()
    try:
        code = main(RUN + ["--experiment-id", "fix1", "--fix", "--json"])
    finally:
        ctl.stop()
    out = capsys.readouterr().out
    assert code == 0, out
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    checks = [e for e in events if e.get("type") == "Check" and e["name"] == f"Namespace {NS}"]
    # first pre-flight: fails with the remedy; second (after the remedy): passes
    assert [c["status"] for c in checks] == ["fail", "pass"]
    assert checks[0]["remedy"]["id"] == "create_namespace" and checks[0]["remedy"]["args"] == {"namespace": NS}
    assert any(e.get("type") == "Notice" and e.get("message") == f"Namespace {NS} created" for e in events)
    assert fake_kube.exists("v1", "Namespace", NS)
    assert RunStore().get("fix1").state == "succeeded"


def test_without_fix_or_terminal_prints_the_fix_and_changes_nothing(fake_kube, config_file, capsys):  # noqa: F811 - the fake_kube fixture imported above
    code = main(RUN + ["--experiment-id", "fix2"])
    err = capsys.readouterr().err
    assert code == 3
    assert f"Namespace {NS}: does not exist" in err and f"kubectl create namespace {NS}" in err
    assert f"re-run with --fix (Create namespace {NS})" in err and "Traceback" not in err
    assert not fake_kube.exists("v1", "Namespace", NS)


class _Terminal:
    """stdin as a terminal where the user types ``answer``."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.asked = 0

    def isatty(self) -> bool:
        return True

    def readline(self) -> str:
        self.asked += 1
        return self.answer


@pytest.mark.parametrize("answer", ["y\n", "n\n"])
def test_a_terminal_is_asked(fake_kube, config_file, namespace_template, tmp_path, capsys, monkeypatch, answer):  # noqa: F811 - the fake_kube fixture imported above
    from tests.support.fakekube.tekton_controller import TektonController

    term = _Terminal(answer)
    monkeypatch.setattr("sys.stdin", term)
    (tmp_path / "pvc").mkdir()
    ctl = TektonController(fake_kube, step=0.03, results_root=tmp_path / "pvc").start()
    try:
        code = main(RUN + ["--experiment-id", "fix3"])
    finally:
        ctl.stop()
    captured = capsys.readouterr()
    assert f"Namespace {NS} does not exist. Create it? [y/N]" in captured.out
    assert term.asked == 1
    if answer.startswith("y"):
        assert code == 0, captured.out + captured.err
        assert fake_kube.exists("v1", "Namespace", NS)
    else:
        assert code == 3 and not fake_kube.exists("v1", "Namespace", NS)


def test_fix_n_still_needs_retry(config_file, capsys):
    assert main(RUN + ["--fix", "2"]) == 2
    assert "--fix N needs --retry RUN" in capsys.readouterr().err
