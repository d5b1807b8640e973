"""``sweepdeck argo watch`` over a real queue API, and ``sweepdeck argo submit`` against the fake API server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from backends.store import RunStore
from tests.integration.argo.conftest import MVID, NS, SMALL_TOTAL, W, populate, progress
from tests.integration.queue.conftest import ADMIN, auth
from tui.cli import main

ROOT = Path(__file__).resolve().parents[3]
A = "argoproj.io/v1alpha1"


def settle(api, *, complete=6, fail=2, error="CUDA out of memory"):
    """Claim 10 configs; complete some, fail some with ``error``; the rest stay running."""
    w = auth("worker")
    batch = httpx.post(
        f"{api.url}{W}/configs/get-batch", json={"limit": 10, "model_version_id": MVID}, headers=w
    ).json()
    for c in batch[:complete]:
        httpx.post(
            f"{api.url}{W}/configs/{c['id']}/status", json={"status": "completed", "lease_id": c["lease_id"]}, headers=w
        ).raise_for_status()
    for c in batch[complete : complete + fail]:
        httpx.post(
            f"{api.url}{W}/configs/{c['id']}/status",
            headers=w,
            json={"status": "failed", "error_message": error, "lease_id": c["lease_id"]},
        ).raise_for_status()
    return batch


@pytest.fixture
def admin_env(monkeypatch):
    """`argo watch --queue-url` without a profile sends $SWEEPDECK_QUEUE_TOKEN."""
    monkeypatch.setenv("SWEEPDECK_QUEUE_TOKEN", ADMIN)


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


# ----------------------------------------------------------------------------- watch


def test_watch_once_prints_progress_and_details(api, capsys, admin_env):
    populate(api)
    settle(api)
    assert main(["argo", "watch", MVID, "--queue-url", api.url, "--once"]) == 0
    out = capsys.readouterr().out.splitlines()
    line = out[0]
    assert f"{MVID} [" in line and f"8/{SMALL_TOTAL}" in line and " 20.0%" in line
    assert "pending 30  running 2  completed 6  failed 2" in line and "configs/min" in line and "ETA" in line
    assert "Failures by error:" in out and "       2  CUDA out of memory" in out
    assert "By workload:" in out and any(row.strip().startswith("chatbot") for row in out)


def test_watch_once_unpopulated_says_how_to_populate(api, capsys, admin_env):
    assert main(["argo", "watch", "mv-empty", "--queue-url", api.url, "--once"]) == 1
    out = capsys.readouterr().out
    assert "0/0" in out and "sweepdeck queue populate mv-empty" in out


def test_watch_follows_until_the_sweep_finishes(api, admin_env):
    import io

    from backends.queue.worker import QueueWorker
    from tui.commands.argo import watch

    populate(api)
    out = io.StringIO()

    async def go():
        worker = QueueWorker(
            api_url=api.url,
            batch_size=5,
            model_version_id=MVID,
            command="true",
            on_log=lambda _l: None,
            token_file=str(api.token_file),
        )
        watching = asyncio.create_task(watch(api.url, MVID, interval=0.05, out=out))
        await worker.run()
        return await asyncio.wait_for(watching, 10)

    assert asyncio.run(go()) == 0
    lines = out.getvalue().splitlines()
    progress_lines = [line for line in lines if f"/{SMALL_TOTAL}" in line and "configs/min" in line]
    assert len(progress_lines) >= 2 and f"{SMALL_TOTAL}/{SMALL_TOTAL}" in progress_lines[-1]
    assert lines[-1] == f"[INFO] sweep of {MVID} finished: {SMALL_TOTAL} completed, 0 failed of {SMALL_TOTAL}"


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["argo", "watch", "a/b", "--once"], "Model version id 'a/b' is not usable."),
        (["argo", "watch", MVID, "--once", "--interval", "0"], "--interval must be positive"),
        (["argo", "watch", MVID, "--once", "--queue-url", "DEAD"], "did not answer"),
    ],
)
def test_watch_bad_input_is_one_readable_message(argv, expected, capsys):
    argv = [dead_url() if a == "DEAD" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


@pytest.mark.fakeapi
def test_watch_prints_the_workflows_node_states_and_priorities(config_file, cluster, api, backend, spec, capsys):
    """With a profile, watch looks the Workflow up by its model-version label: the sweep view's lines."""
    populate(api)
    cluster.controller.hang["worker"] = True
    cluster.controller.fail("worker(1:1)", "OOMKilled (exit code 137)", times=1)
    run = asyncio.run(backend.launch(spec, RunStore().create(spec)))
    try:
        name = run.handle["workflow"]
        cluster.wait_for(
            lambda: (
                sum(
                    n["phase"] == "Running" and n["type"] == "Pod"
                    for n in (cluster.get(A, "Workflow", name, NS).get("status") or {}).get("nodes", {}).values()
                )
                == 3
            ),
            timeout=15,
        )
        settle(api)
        assert main(["--config", str(config_file), "argo", "watch", MVID, "--profile", "sweep", "--once"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert "By priority:" in out
        prio = out[out.index("By priority:") + 1 :]
        # chatbot, batch 1, 1024 tokens: 2 hardware configs, claimed first and completed by settle()
        assert prio[0] == "  100                     2/2      100.0%  failed 0"
        assert f"Workflow {name}: Running (" in "\n".join(out)
        nodes = out[out.index("Nodes:") + 1 :]
        by_name = {line.split()[0]: line.split() for line in nodes}
        assert by_name["populate"][1] == "Succeeded"
        assert by_name["worker(0:0)"][1] == "Running" and by_name["worker(2:2)"][1] == "Running"
        assert by_name["worker(1:1)"][1:2] == ["Running"] and "retries" in by_name["worker(1:1)"]
        assert " ".join(by_name["worker(1:1)(0)"][1:]).endswith("OOMKilled (exit code 137)")
        assert by_name["worker(1:1)(0)"][1] == "Failed"

        # --json: the Sweep snapshot, then the Workflow and its nodes as Phase events
        assert (
            main(["--config", str(config_file), "argo", "watch", MVID, "--profile", "sweep", "--once", "--json"]) == 0
        )
        docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert docs[0]["type"] == "Sweep" and docs[0]["by_priority"]
        assert docs[1]["type"] == "Phase" and docs[1]["kind"] == "workflow" and docs[1]["unit"] == name
        assert {d["unit"] for d in docs[2:]} >= {"populate", "worker(0:0)", "worker(1:1)(0)"}

        # --no-workflow: the queue only, no request to the cluster
        cluster.reset_requests()
        assert (
            main(["--config", str(config_file), "argo", "watch", MVID, "--profile", "sweep", "--once", "--no-workflow"])
            == 0
        )
        assert "Nodes:" not in capsys.readouterr().out and cluster.request_count() == 0
    finally:
        asyncio.run(backend.cleanup(run))


@pytest.mark.fakeapi
def test_watch_without_a_workflow_or_cluster_still_shows_the_queue(config_file, fake_kube, api, capsys):
    from tests.support.fakekube.argo_controller import install_argo_crds

    install_argo_crds(fake_kube)
    fake_kube.ensure_namespace(NS)
    populate(api)
    assert main(["--config", str(config_file), "argo", "watch", MVID, "--profile", "sweep", "--once"]) == 0
    out = capsys.readouterr().out
    assert f"/{SMALL_TOTAL}" in out and f"[INFO] no Workflow is labelled with model version {MVID}" in out
    fake_kube.fail_next("GET", r"/workflows", 503, "ServiceUnavailable", times=100)
    assert main(["--config", str(config_file), "argo", "watch", MVID, "--profile", "sweep", "--once"]) == 0
    out = capsys.readouterr().out
    assert (
        f"/{SMALL_TOTAL}" in out
        and "[WARN] cannot read the sweep's Workflow:" in out
        and "showing the queue only" in out
    )
    assert "Traceback" not in out


# ----------------------------------------------------------------------------- submit


@pytest.mark.fakeapi
def test_submit_dry_run_prints_the_manifest_and_submits_nothing(config_file, fake_kube, api, capsys):
    fake_kube.reset_requests()
    assert (
        main(
            [
                "--config",
                str(config_file),
                "argo",
                "submit",
                "--profile",
                "sweep",
                "--model-version-id",
                "mv9",
                "--max-parallel-pods",
                "7",
                "--dry-run",
            ]
        )
        == 0
    )
    wf = yaml.safe_load(capsys.readouterr().out)
    assert wf["kind"] == "Workflow" and wf["metadata"]["generateName"] == "model-benchmark-pipeline-v2-"
    assert "name" not in wf["metadata"] and wf["metadata"]["namespace"] == NS
    params = {p["name"]: p["value"] for p in wf["spec"]["arguments"]["parameters"]}
    assert (
        params["model-version-id"] == "mv9" and params["max-parallel-pods"] == "7" and params["api-base-url"] == api.url
    )
    assert fake_kube.request_count() == 0


@pytest.mark.fakeapi
def test_submit_bad_batch_size_is_readable(config_file, capsys):
    assert main(["--config", str(config_file), "argo", "submit", "--batch-size", "900", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "batch_size must be an integer from 1 to 500" in err and "Traceback" not in err


@pytest.mark.fakeapi
def test_submit_runs_preflight_then_watches_to_the_end(config_file, cluster, api, capsys):
    populate(api)
    cluster.workers.command = "true"
    assert main(["--config", str(config_file), "argo", "submit", "--id", "cli-sweep", "--yes"]) == 0
    out = capsys.readouterr().out
    assert "[INFO] Pre-flight checks:" in out and f"Model version {MVID}" in out
    assert "[INFO] workflow model-benchmark-pipeline-v2-" in out and ": Succeeded" in out
    assert "[INFO] node worker(2:2): Succeeded" in out
    assert "[SWEEP] " in out and f"{SMALL_TOTAL}/{SMALL_TOTAL}" in out
    assert "[INFO] Finished: succeeded." in out
    assert progress(api)["completed"] == SMALL_TOTAL


@pytest.mark.fakeapi
def test_submit_without_remedy_flags_changes_nothing_and_names_them(config_file, cluster, api, capsys):
    cluster.delete("v1", "Namespace", NS)
    assert main(["--config", str(config_file), "argo", "submit", "--id", "rem0", "--yes"]) == 3
    cap = capsys.readouterr()
    assert (
        "re-run with --create-namespace --create-token-secret --populate "
        "(Create namespace sweeps; Create Secret sweepdeck-queue-token; Populate mv1)"
    ) in cap.err
    assert "Traceback" not in cap.err
    assert not cluster.exists("v1", "Namespace", NS) and progress(api)["total"] == 0  # nothing changed
    assert cluster.list(A, "Workflow", NS) == []


@pytest.mark.fakeapi
def test_submit_remedy_fails_when_something_else_blocks(config_file, cluster, api, capsys):
    """A launch that fails anyway (the experiment id is taken) changes nothing, even with --fix."""
    cluster.create(
        {
            "apiVersion": A,
            "kind": "Workflow",
            "metadata": {"name": "old", "namespace": NS, "labels": {"sweepdeck.io/experiment": "taken"}},
            "spec": {"entrypoint": "x", "templates": []},
        }
    )
    assert main(["--config", str(config_file), "argo", "submit", "--id", "taken", "--yes", "--fix"]) == 3
    assert "already belongs to experiment taken" in capsys.readouterr().out
    assert progress(api)["total"] == 0


def _submit_process(config_file, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "--config", str(config_file), "argo", "submit", "--yes", *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ),
    )


def _wait_for_line(proc, needle: str, timeout: float = 30) -> list[str]:
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    proc.kill()
    raise AssertionError(f"{needle!r} not seen:\n" + "".join(lines))


@pytest.mark.fakeapi
@pytest.mark.parametrize("detach", [False, True])
def test_submit_sigterm_stops_the_workflow_unless_detached(config_file, cluster, api, detach):
    populate(api)
    cluster.controller.hang["worker"] = True
    proc = _submit_process(config_file, *(["--detach"] if detach else []))
    _wait_for_line(proc, "node worker(2:2): Running")
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=30)
    [wf] = cluster.list(A, "Workflow", NS)
    if detach:
        assert proc.returncode == 0, rest
        assert "Reattach with: sweepdeck attach" in rest
        assert wf["status"]["phase"] == "Running" and "shutdown" not in wf["spec"]
    else:
        assert proc.returncode == 128 + signal.SIGTERM, rest
        assert "Cancelled" in rest
        assert wf["spec"]["shutdown"] == "Stop" and wf["status"]["phase"] == "Failed"
        assert not [p for p in cluster.list("v1", "Pod", NS) if p["status"]["phase"] == "Running"]


@pytest.mark.fakeapi
def test_submit_remedy_flags_create_the_namespace_and_populate(config_file, cluster, api):
    """Pre-flight offers both remedies; with their flags they are done, pre-flight passes, the Workflow runs."""
    cluster.delete("v1", "Namespace", NS)
    cluster.controller.hang["worker"] = True
    proc = _submit_process(config_file, "--id", "rem1", "--populate", "--create-namespace", "--create-token-secret")
    lines = _wait_for_line(proc, "node worker(2:2): Running")
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=30)
    out = "".join(lines) + rest
    assert f"[INFO] created namespace {NS}" in out
    assert f"[INFO] created Secret sweepdeck-queue-token in {NS} from the queue tokens of " in out
    assert (
        f"[INFO] populated {MVID}: 1,800 configs created (10 hardware configs × 3 frameworks × 5 workloads × "
        "4 batch sizes × 3 sequence lengths)"
    ) in out
    assert (
        out.index("created namespace")
        < out.index("created Secret")
        < out.index("populated")
        < out.index("[INFO] workflow model-benchmark-pipeline-v2-")
    )
    assert cluster.exists("v1", "Namespace", NS) and progress(api)["total"] == 1800
    [wf] = cluster.list(A, "Workflow", NS)
    assert wf["metadata"]["labels"]["sweepdeck.io/experiment"] == "rem1"
