"""An Argo sweep's results through the queue API, on SQLite and a real PostgreSQL.

Real queue workers run every config of a small matrix against the real
simulator; the configs of the longer sequence length do not fit the
simulator's context, so their requests get vLLM's HTTP 400 and those configs
fail. The results are then read back through the API as one result, grouped
like the sweep view (workload, sequence length, batch size).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

from backends.queue.worker import QueueWorker
from backends.results.queue import QueueClient
from tests.integration.queue.conftest import ADMIN, WORKER, auth
from tests.support.processes import ROOT, SIM_MODEL, SimProcess

pytestmark = pytest.mark.services

W = "/api/v1/workflow"
MATRIX = {"hardware": ["H100:1"], "frameworks": ["vllm"], "workloads": ["qa", "chatbot"],
          "batch_sizes": [2, 1], "sequence_lengths": [64, 256]}


@pytest.fixture(scope="module")
def sim():
    s = SimProcess("--ttft-ms", "2", "--itl-ms", "1", "--max-model-len", "128")
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


async def _sweep(api, sim) -> None:
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(f"{api.url}{W}/populate/mv1", json=MATRIX, headers=auth("admin"))
        assert r.json()["created"] == 8
    worker = QueueWorker(api.url, batch_size=3, endpoint=sim.url, model=SIM_MODEL, on_log=lambda line: None,
                         token=WORKER)
    counts = await worker.run()
    assert counts["completed"] == 4 and counts["failed"] == 4


async def test_queue_results_grouped_like_the_sweep_view(api_db, sim):
    await _sweep(api_db, sim)
    with QueueClient(api_db.url, ADMIN) as client:
        result = client.result("mv1")
    assert result.origin.harness == "argo-queue" and result.name == "mv1"
    assert [p.label for p in result.load_points] == [
        "chatbot seq 64 batch 1", "chatbot seq 64 batch 2", "chatbot seq 256 batch 1", "chatbot seq 256 batch 2",
        "qa seq 64 batch 1", "qa seq 64 batch 2", "qa seq 256 batch 1", "qa seq 256 batch 2"]
    assert [p.group for p in result.load_points][::2] == ["chatbot · seq 64", "chatbot · seq 256", "qa · seq 64",
                                                          "qa · seq 256"]
    ok = [p for p in result.load_points if "seq 64 " in p.label]
    bad = [p for p in result.load_points if "seq 256" in p.label]
    for p in ok:
        # the worker runs 2 × batch requests at concurrency = batch
        assert p.concurrency == int(p.label[-1]) and p.rate is None
        assert p.requests_ok == 2 * p.concurrency and p.requests_failed == 0
        assert p.ttft_ms.p50 is not None and p.ttft_ms.p50 >= 1.5 and p.itl_ms.p50 is not None
        assert p.output_tok_s and p.output_tok_s > 0 and p.req_s and p.req_s > 0
    for p in bad:
        assert p.requests_ok == 0 and p.requests_failed == 2 * p.concurrency
    reasons = {f.reason: f.count for f in result.failures}
    assert reasons["config failed: HTTP 400: context length exceeded"] == 4
    assert reasons["HTTP 400: context length exceeded"] == sum(p.requests_failed for p in bad) == 12
    sample = next(f.sample for f in result.failures if f.reason.startswith("HTTP 400"))
    assert "maximum context length is 128 tokens" in sample
    assert result.spec["queue.batch_sizes"].value == [1, 2] and result.spec["queue.sequence_lengths"].value == [64, 256]


async def test_queue_results_from_the_cli(api_db, sim, tmp_path):
    await _sweep(api_db, sim)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "tui.cli", "results", "show", f"queue:{api_db.url}/mv1", "--json",
                          "--queue-token", ADMIN],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["name"] == "mv1" and data["source"]["harness"] == "argo-queue"
    assert [p["concurrency"] for p in data["load_points"]] == [1, 2] * 4
    assert data["failures"]["config failed: HTTP 400: context length exceeded"]["count"] == 4


async def test_an_argo_run_reads_its_results_from_the_queue(api_db, sim, tmp_path):
    """A saved Argo run has no results/ of its own: its session names the queue and model version."""
    import asyncio

    from backends.results import load_run

    await _sweep(api_db, sim)
    run = tmp_path / "runs" / "sweep-run"
    run.mkdir(parents=True)
    (run / "meta.json").write_text(json.dumps({"id": "sweep-run", "backend": "argo", "state": "succeeded",
                                               "model_version_id": "mv1"}))
    (run / "handle").write_text(f"QUEUE_URL={api_db.url}\nMODEL_VERSION_ID=mv1\n")
    result = await asyncio.to_thread(load_run, run, ADMIN)
    assert result.name == "sweep-run" and result.origin.harness == "argo-queue" and len(result.load_points) == 8
    assert result.spec["queue.model_version_id"].value == "mv1"
