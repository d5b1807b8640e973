"""Reference workers as real processes: spot interruptions and SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from backends.queue.store import Matrix, QueueStore
from backends.queue.worker import format_command, workload_for
from config.errors import SweepdeckError

pytestmark = pytest.mark.services

W = "/api/v1/workflow"


def _worker(api, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "queue", "worker", "--api-url", api.url, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _populate(api, hardware=6):
    body = {"hardware": [f"hw{i}:1" for i in range(hardware)], "frameworks": ["vllm", "tgi"], "batch_sizes": [1, 2], "sequence_lengths": [1024]}
    assert httpx.post(f"{api.url}{W}/populate/mv1", json=body, timeout=10).json()["created"] == hardware * 2 * 5 * 2


def test_spot_kill_then_reset_stale_completes_every_config_once(api, tmp_path):
    _populate(api)  # 120 configs
    workers = [_worker(api, "--batch-size", "8", "--command", "sleep 0.03") for _ in range(5)]
    time.sleep(1.5)
    victim = workers[0]  # 20% of the workers die like a spot instance: SIGKILL, no goodbye
    victim.kill()
    victim.wait()
    for w in workers[1:]:
        assert w.wait(timeout=60) == 0
    prog = httpx.get(f"{api.url}{W}/progress/mv1").json()
    assert prog["running"] > 0, "the killed worker's batch should be stranded as running"
    stranded = {c["id"] for c in httpx.get(f"{api.url}{W}/configs/mv1", params={"status": "running"}).json()}
    r = httpx.post(f"{api.url}{W}/maintenance/reset-stale", params={"timeout_minutes": 0}).json()
    assert r["reset"] == len(stranded)
    rescue = _worker(api, "--batch-size", "50", "--command", "true")
    assert rescue.wait(timeout=60) == 0
    prog = httpx.get(f"{api.url}{W}/progress/mv1").json()
    assert prog["completed"] == prog["total"] == 120 and prog["running"] == prog["pending"] == 0
    # every config completed exactly once: one result row each
    results = httpx.get(f"{api.url}{W}/results/mv1", params={"limit": 1000}).json()
    ids = [r["config_id"] for r in results]
    assert len(ids) == len(set(ids)) == 120
    retried = [c for c in httpx.get(f"{api.url}{W}/configs/mv1", params={"limit": 1000}).json() if c["retry_count"]]
    assert {c["id"] for c in retried} == stranded


def test_sigterm_returns_unfinished_configs(api):
    _populate(api, hardware=2)  # 40 configs
    w = _worker(api, "--batch-size", "40", "--command", "sleep 5")
    deadline = time.monotonic() + 20
    while httpx.get(f"{api.url}{W}/progress/mv1").json()["running"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    w.send_signal(signal.SIGTERM)
    out, _ = w.communicate(timeout=20)
    assert w.returncode == 0, out
    prog = httpx.get(f"{api.url}{W}/progress/mv1").json()
    assert prog["running"] == 0 and prog["pending"] == 40, prog
    assert "returned to pending" in out


def test_failed_command_reports_error(api):
    _populate(api, hardware=1)  # 20 configs
    w = _worker(api, "--batch-size", "20", "--command", "sh -c 'echo boom {batch_size} >&2; exit 3'")
    assert w.wait(timeout=60) == 0
    groups = httpx.get(f"{api.url}{W}/failures/mv1").json()
    assert {g["error_message"] for g in groups} == {"boom 1", "boom 2"}


def test_command_template_is_never_a_shell_string():
    cfg = {"id": 1, "batch_size": 4, "workload_type": "qa; rm -rf /", "sequence_length": 1024}
    argv = format_command("bench --wl {workload_type} --bs {batch_size}", cfg)
    assert argv == ["bench", "--wl", "qa; rm -rf /", "--bs", "4"]
    with pytest.raises(SweepdeckError, match="unknown field"):
        format_command("bench {nope}", cfg)


def test_workload_for_maps_cells():
    prof = workload_for({"id": 3, "batch_size": 8, "sequence_length": 2048, "workload_type": "summarization"})
    assert prof.max_concurrency == 8 and prof.prompt_tokens + prof.output_tokens == 2048
    assert prof.prompt_tokens > prof.output_tokens


def test_cli_populate_dry_run_and_progress(tmp_path):
    db = f"sqlite:///{tmp_path / 'q.db'}"
    run = lambda *a: subprocess.run([sys.executable, "-m", "tui.cli", "queue", *a], capture_output=True, text=True, timeout=60)
    r = run("populate", "mv9", "--db", db, "--dry-run")
    assert r.returncode == 0 and "Expected Total: 1,800 configs" in r.stdout and "dry run" in r.stdout
    r = run("populate", "mv9", "--db", db, "--batch-sizes", "1,2", "--hardware", "H100:1")
    assert "Expected Total: 90 configs" in r.stdout and "Created 90" in r.stdout
    r = run("progress", "mv9", "--db", db, "--json")
    assert "\"pending\": 90" in r.stdout
    r = run("populate", "mv9", "--db", db, "--batch-sizes", "1,x")
    assert r.returncode != 0 and "Traceback" not in r.stderr and "comma-separated" in r.stderr
