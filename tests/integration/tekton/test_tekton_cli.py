"""`sweepdeck tekton run / preflight / install-shared` against the fake API server (fake-API tests)."""

from __future__ import annotations

import json

import pytest
import yaml

from backends.store import RunStore
from tui.cli import main

pytestmark = pytest.mark.fakeapi


@pytest.fixture
def config_file(tmp_path, fake_kube, user_files, monkeypatch):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"profiles": {"lab": {
        "backend": "tekton", "namespace": "newns", "kubeconfig": str(fake_kube.kubeconfig),
        "values": str(user_files / "blis-values.yaml"), "pipelinerun": str(user_files / "blis-pipelinerun.yaml"),
    }}}))
    monkeypatch.setenv("SWEEPDECK_CONFIG", str(cfg))
    return cfg


def test_install_shared_creates_namespace_and_task(fake_kube, config_file, capsys):
    assert main(["tekton", "install-shared", "--kubeconfig", str(fake_kube.kubeconfig)]) == 0
    task = fake_kube.get("tekton.dev/v1", "Task", "guidellm-load-generator", "pipelines")
    names = [p["name"] for p in task["spec"]["params"]]
    assert names[:4] == ["target-url", "model", "rate-type", "rate"] and "additional-args" in names
    assert [r["name"] for r in task["spec"]["results"]] == ["benchmark-report", "log-file"]
    assert [w["name"] for w in task["spec"]["workspaces"]] == ["results"]
    # a second install updates in place
    assert main(["tekton", "install-shared", "--kubeconfig", str(fake_kube.kubeconfig)]) == 0
    assert "Task guidellm-load-generator updated in pipelines" in capsys.readouterr().out


def test_preflight_offers_namespace_then_run_succeeds(fake_kube, config_file, tmp_path, capsys):
    from tests.integration.tekton.conftest import seed
    from tests.support.fakekube.tekton_controller import TektonController

    # everything but the namespace: preflight fails, --yes creates it
    assert main(["tekton", "preflight", "meta-llama/Llama-2-7b-hf", "--id", "cli1"]) == 3
    out = capsys.readouterr()
    assert "newns" in out.out + out.err
    seed(fake_kube, ns="newns")
    results = tmp_path / "pvc"
    results.mkdir()
    ctl = TektonController(fake_kube, step=0.03, results_root=results).start()
    try:
        code = main(["tekton", "run", "meta-llama/Llama-2-7b-hf", "--id", "cli1", "--tp", "4", "--yes", "--json",
                     "--delete-after"])
    finally:
        ctl.stop()
    out = capsys.readouterr().out
    assert code == 0, out
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert any(e.get("type") == "Phase" and e.get("unit") == "run-workload-tp4" and e.get("state") == "Succeeded"
               for e in events)
    assert not fake_kube.exists("tekton.dev/v1", "PipelineRun", "cli1", "newns")  # --delete-after
    pr_tasks = [t["name"] for t in fake_kube.get("tekton.dev/v1", "Pipeline", "cli1", "newns")["spec"]["tasks"]]
    assert "deploy-model-tp4" in pr_tasks and "deploy-model-tp2" not in pr_tasks  # --tp 4: a SUBSET of [2, 4]


def test_run_pr_matrix_unrolled_progress_done_total(fake_kube, config_file, capsys):
    from pathlib import Path

    from tests.support.fakekube.tekton_controller import TektonController

    fake_kube.ensure_namespace("newns")
    ctl = TektonController(fake_kube, step=0.03).start()
    src = Path(__file__).resolve().parents[2] / "fixtures" / "tekton" / "tekton-poc-pipelinerun-matrix.yaml"
    try:
        code = main(["tekton", "run-pr", str(src), "--unroll", "gaiePluginConfig", "-n", "2", "--json"])
    finally:
        ctl.stop()
    out = capsys.readouterr().out
    assert code == 0, out
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    progress = [e for e in events if e.get("type") == "Progress"]
    assert progress[-1]["total"] == 36 and progress[-1]["completed"] == 36
    units = {e["unit"] for e in events if e.get("type") == "Phase" and e.get("kind") == "task"}
    assert "run-experiment-0-0" in units and len(units) == 36
    # the unrolled tasks ran at most two at a time: task 3 started after tasks 1 and 2 were done
    pr = fake_kube.get("tekton.dev/v1", "PipelineRun", "experiment-matrix-run", "newns")
    tasks = pr["spec"]["pipelineSpec"]["tasks"]
    assert tasks[2]["runAfter"] == [tasks[0]["name"], tasks[1]["name"]]


def test_generic_run_and_attach_with_tekton_backend(fake_kube, config_file, tmp_path, capsys):
    """`sweepdeck run --backend tekton` (the shared session driver) and `sweepdeck attach` work too."""
    import asyncio

    from backends.cleanup import CleanupRegistry
    from backends.store import RunStore
    from backends.tekton import TektonBackend
    from config.settings import load_settings
    from config.spec import build_spec
    from tests.integration.tekton.conftest import seed
    from tests.support.fakekube.tekton_controller import TektonController

    seed(fake_kube, ns="newns")
    ctl = TektonController(fake_kube, step=0.03, results_root=tmp_path).start()
    try:
        code = main(["run", "--backend", "tekton", "--profile", "lab", "--model", "meta-llama/Llama-2-7b-hf",
                     "--namespace", "newns", "--experiment-id", "gen1", "--tp", "2", "--yes", "--json"])
        out = capsys.readouterr().out
        assert code == 0, out
        assert RunStore().get("gen1").state == "succeeded"
        saved = list(RunStore().open("gen1").events())
        assert any(getattr(e, "unit", "") == "deploy-model-tp2" for e in saved)  # the driver saved the events

        # launch another one, leave it running, then attach and follow it to the end
        settings = load_settings(config_file)
        backend = TektonBackend(settings, settings.profile("lab", "tekton"), registry=CleanupRegistry())
        spec = build_spec(settings.catalogs, "meta-llama/Llama-2-7b-hf", backend="tekton", profile="lab",
                          namespace="newns", experiment_id="gen2", tp=2)
        ctl.durations["download-model"] = 0.5
        asyncio.run(backend.launch(spec, RunStore().create(spec)))
        code = main(["attach", "gen2", "--json"])
        captured = capsys.readouterr()
        out = captured.out
        assert code == 0, out + captured.err
        assert RunStore().get("gen2").state == "succeeded"
    finally:
        ctl.stop()


def test_render_only_writes_files_and_applies_nothing(fake_kube, config_file, tmp_path, user_files):
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in user_files.iterdir()}
    out = tmp_path / "rendered"
    assert (
        main(
            [
                "tekton",
                "run",
                "meta-llama/Llama-2-7b-hf",
                "--id",
                "r1",
                "--tp",
                "4",
                "--image",
                "ghcr.io/x/vllm:1",
                "--render-only",
                str(out),
            ]
        )
        == 0
    )
    assert {p.name for p in out.iterdir()} == {"values.yaml", "pipeline.yaml", "pipelinerun.yaml", "resources.yaml",
                                               "changes.txt"}
    values = yaml.safe_load((out / "values.yaml").read_text())
    assert values["stack"]["treatments"]["tensorParallelism"] == [4]
    changes = (out / "changes.txt").read_text()
    assert (
        "tp_sweep: [2, 4] -> [4]" in changes
        and "[SUBSET]" in changes
        and "engine.image" in changes
        and "[OVERRIDE]" in changes
    )
    assert fake_kube.list("tekton.dev/v1", "Pipeline") == [] and fake_kube.request_count() == 0
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in user_files.iterdir()} == before


def test_preflight_fix_creates_the_namespace(fake_kube, config_file, capsys):
    # GPUs without a remedy fail: nothing is done
    assert main(["tekton", "preflight", "meta-llama/Llama-2-7b-hf", "--id", "cli0", "--fix"]) == 3
    assert "created" not in capsys.readouterr().out and not fake_kube.exists("v1", "Namespace", "newns")
    # only the namespace (and what it blocks) fails: --fix creates it
    fake_kube.add_node("gpu-0", {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, gpus=8)
    assert (
        main(["tekton", "preflight", "meta-llama/Llama-2-7b-hf", "--id", "cli0", "--fix"]) == 3
    )  # secrets etc. still missing
    out = capsys.readouterr().out
    assert "[INFO] Namespace newns created" in out and fake_kube.exists("v1", "Namespace", "newns")
    assert "✓ Namespace newns" in out or "ok Namespace newns" in out


def test_cancel_saved_run_now_and_gracefully(fake_kube, config_file, capsys):
    """`sweepdeck tekton cancel RUN-ID [--now]` on runs in the run store (attach from the session file)."""
    import asyncio

    from backends.cleanup import CleanupRegistry
    from backends.tekton import TektonBackend
    from config.settings import load_settings
    from config.spec import build_spec
    from tests.integration.tekton.conftest import seed
    from tests.support.fakekube.tekton_controller import TektonController

    seed(fake_kube, ns="newns")
    ctl = TektonController(fake_kube, step=0.03).start()
    ctl.hang["download-model"] = True
    settings = load_settings(config_file)
    try:
        for exp in ("now1", "soft1"):
            backend = TektonBackend(settings, settings.profile("lab", "tekton"), registry=CleanupRegistry())
            spec = build_spec(settings.catalogs, "meta-llama/Llama-2-7b-hf", backend="tekton", profile="lab",
                              namespace="newns", experiment_id=exp, tp=2)
            asyncio.run(backend.launch(spec, RunStore().create(spec)))
        fake_kube.wait_for(lambda: fake_kube.exists("tekton.dev/v1", "TaskRun", "now1-download-model", "newns"))
        assert main(["tekton", "cancel", "now1", "--now"]) == 0
        assert "spec.status set to Cancelled (finally tasks skipped)" in capsys.readouterr().out
        assert main(["tekton", "cancel", "soft1"]) == 0
        assert "CancelledRunFinally" in capsys.readouterr().out

        def reason(name):
            pr = fake_kube.get("tekton.dev/v1", "PipelineRun", name, "newns")
            return next((c["reason"] for c in (pr.get("status") or {}).get("conditions") or []
                         if c["status"] == "False"), None)

        fake_kube.wait_for(lambda: reason("now1") == "Cancelled" and reason("soft1") == "Cancelled")
        assert fake_kube.get("tekton.dev/v1", "PipelineRun", "now1", "newns")["spec"]["status"] == "Cancelled"
        assert (
            fake_kube.get("tekton.dev/v1", "PipelineRun", "soft1", "newns")["spec"]["status"] == "CancelledRunFinally"
        )

        def tasks(pr):
            return {t["metadata"]["labels"]["tekton.dev/pipelineTask"] for t in fake_kube.list(
                "tekton.dev/v1", "TaskRun", "newns", label_selector=f"tekton.dev/pipelineRun={pr}")}

        assert not [t for t in tasks("now1") if t.startswith("finally-")]  # --now: finally skipped
        assert "finally-delete-model-tp2" in tasks("soft1")  # graceful: the finally clean-ups ran
        # a finished run: nothing to do, said so
        assert main(["tekton", "cancel", "now1", "--now"]) == 0
        assert "already finished (Cancelled)" in capsys.readouterr().out
    finally:
        ctl.stop()
    assert main(["tekton", "cancel", "no-such-run"]) != 0
    assert "Traceback" not in capsys.readouterr().err


def test_run_pr_second_ctrl_c_stops_finally_at_once(fake_kube, config_file, tmp_path):
    """Real SIGINTs to `sweepdeck tekton run-pr`: the first cancels gracefully, the second sets Cancelled."""
    import os
    import queue
    import signal
    import subprocess
    import sys
    import threading
    import time
    from pathlib import Path

    from tests.support.fakekube.tekton_controller import TektonController

    fake_kube.ensure_namespace("newns")
    pr = {"apiVersion": "tekton.dev/v1", "kind": "PipelineRun", "metadata": {"name": "sig1"}, "spec": {"pipelineSpec": {
        "tasks": [{"name": "work",
                   "taskSpec": {"steps": [{"name": "run", "image": "busybox", "script": "sleep 3600"}]}}],
        "finally": [{"name": "cleanup",
                     "taskSpec": {"steps": [{"name": "run", "image": "busybox", "script": "sleep 3600"}]}}],
    }}}
    src = tmp_path / "pr.yaml"
    src.write_text(yaml.safe_dump(pr))
    ctl = TektonController(fake_kube, step=0.03).start()
    ctl.hang["work"] = ctl.hang["cleanup"] = True
    script = Path(sys.executable).parent / "sweepdeck"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "tui.cli"]
    proc = subprocess.Popen(cmd + ["tekton", "run-pr", str(src)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "NO_COLOR": "1"}, cwd=Path(__file__).resolve().parents[3])
    lines: queue.Queue = queue.Queue()
    seen: list[str] = []
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()

    def wait_line(text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in s for s in seen):
            try:
                seen.append(lines.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"no {text!r} in:\n" + "".join(seen)) from None

    try:
        wait_line("work: Running")
        proc.send_signal(signal.SIGINT)
        wait_line("Ctrl+C again to stop at once")
        wait_line("cleanup: Running")  # graceful: the finally task started
        assert fake_kube.get("tekton.dev/v1", "PipelineRun", "sig1", "newns")["spec"]["status"] == "CancelledRunFinally"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
        ctl.stop()
    while not lines.empty():
        seen.append(lines.get())
    text = "".join(seen)
    assert "[INFO] Cancelling PipelineRun sig1 (finally tasks run; Ctrl+C again to stop at once)…" in text
    assert "Stopping PipelineRun sig1 at once" in text and "Traceback" not in text
    assert fake_kube.get("tekton.dev/v1", "PipelineRun", "sig1", "newns")["spec"]["status"] == "Cancelled"
    cleanup = fake_kube.get("tekton.dev/v1", "TaskRun", "sig1-cleanup", "newns")
    assert cleanup["status"]["conditions"][0]["reason"] == "TaskRunCancelled"
