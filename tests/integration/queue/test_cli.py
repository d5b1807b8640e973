"""The `sweepdeck queue` CLI: report (paged), reset-stale, serve as a real process, the worker's --endpoint mode."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import httpx
import pytest

from backends.queue.store import QueueStore
from backends.queue.worker import PROMPT_SHARE
from tests.support.processes import UvicornProcess
from tui.cli import main

pytestmark = pytest.mark.services

W = "/api/v1/workflow"
MATRIX = {"hardware": ["H100:1", "A100:1"], "frameworks": ["vllm"], "batch_sizes": [1, 2], "sequence_lengths": [1024]}  # 20


def _complete_all(url: str, metric=lambda c: float(c["id"])) -> list[dict]:
    with httpx.Client(base_url=url, timeout=10) as c:
        assert c.post(f"{W}/populate/mv1", json=MATRIX).json()["created"] == 20
        batch = c.post(f"{W}/configs/get-batch", json={"limit": 500}).json()
        for cfg in batch:
            c.post(f"{W}/configs/{cfg['id']}/status",
                   json={"status": "completed", "metrics": {"output_tokens_per_s": metric(cfg)}}).raise_for_status()
    return batch


def _table(out: str) -> list[list[str]]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("rank"))
    return [line.split() for line in lines[start + 1:]]


@pytest.mark.parametrize("page_size", [7, 20, 10_000])
def test_report_pages_through_every_config_and_result(api, capsys, page_size):
    batch = _complete_all(api.url)
    assert main(["queue", "report", "--api-url", api.url, "mv1", "--page-size", str(page_size), "--top", "50"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("20 completed, 0 failed of 20 (100.00%)")
    rows = _table(out)
    # every result is ranked: 2 hardware × 5 workloads = 10 groups of 2 configs (the batch sizes)
    assert len(rows) == 10 and sum(int(r[-1]) for r in rows) == 20
    # the best group holds the highest config ids, which only the last page of a small page size has
    best = max(batch, key=lambda c: c["id"])
    mates = [c["id"] for c in batch if (c["hardware_config_id"], c["workload_type"]) == (best["hardware_config_id"], best["workload_type"])]
    assert rows[0][1] == str(best["hardware_config_id"]) and rows[0][3] == best["workload_type"]
    assert float(rows[0][4]) == pytest.approx(sum(mates) / len(mates))


def test_report_bad_page_size_is_one_message(api, capsys):
    assert main(["queue", "report", "--api-url", api.url, "mv1", "--page-size", "0"]) == 2
    err = capsys.readouterr().err
    assert "--page-size must be 1-10000" in err and "Traceback" not in err


def test_results_listing_has_offset(api):
    _complete_all(api.url)
    with httpx.Client(base_url=api.url, timeout=10) as c:
        whole = [r["id"] for r in c.get(f"{W}/results/mv1", params={"limit": 100}).json()]
        paged = [r["id"] for off in (0, 8, 16) for r in c.get(f"{W}/results/mv1", params={"limit": 8, "offset": off}).json()]
        assert len(whole) == 20 and paged == whole
        assert c.get(f"{W}/results/mv1", params={"offset": -1}).status_code == 422


# ----------------------------------------------------------------------------- serve, reset-stale, worker --endpoint



def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui.cli", "queue", *args], capture_output=True, text=True, timeout=timeout)


def test_serve_is_a_real_http_server_over_the_given_database(tmp_path):
    db = f"sqlite:///{tmp_path / 'served.db'}"
    server = UvicornProcess([sys.executable, "-m", "tui.cli", "queue", "serve", "--db", db, "--port", "0"],
                            what="queue serve")
    try:
        url = server.wait_ready()
        with httpx.Client(base_url=url, timeout=10) as c:
            assert c.get("/health").json() == {"status": "ok"}
            assert c.get("/docs").status_code == 200 and "/api/v1/workflow/progress/{model_version_id}" in c.get("/openapi.json").json()["paths"]
            assert c.post(f"{W}/populate/mv1", json=MATRIX).json()["created"] == 20
            assert len(c.post(f"{W}/configs/get-batch", json={"limit": 5}).json()) == 5
            assert c.post(f"{W}/populate/mv1", json={"batch_sizes": [0]}).status_code == 422
    finally:
        code = server.stop()
    # uvicorn shuts down cleanly on SIGTERM, then re-raises the signal (so its exit says why it stopped)
    assert code in (0, -signal.SIGTERM) and "INFO:     Application shutdown complete." in server.lines, server.lines
    # what was served is in the database file: another client reads it directly
    r = _cli("progress", "mv1", "--db", db, "--json")
    assert r.returncode == 0 and '"running": 5' in r.stdout and '"pending": 15' in r.stdout


def test_serve_bad_database_url_is_one_message():
    r = _cli("serve", "--db", "mysql://x/y", "--port", "0", timeout=30)
    assert r.returncode == 2 and "Unsupported database URL 'mysql://x/y'" in r.stderr and "Traceback" not in r.stderr


def test_reset_stale_cli_returns_then_fails_stranded_configs(tmp_path):
    db = f"sqlite:///{tmp_path / 'q.db'}"
    assert _cli("populate", "mv1", "--db", db, "--hardware", "H100:1", "--frameworks", "vllm",
                "--batch-sizes", "1", "--sequence-lengths", "1024").returncode == 0  # 5 configs

    async def claim(n):
        store = QueueStore(db)
        try:
            return [c["id"] for c in await store.claim(n)]
        finally:
            await store.close()

    first = asyncio.run(claim(3))
    r = _cli("reset-stale", "--db", db, "--timeout-minutes", "60")
    assert r.returncode == 0 and "reset 0 stale configs" in r.stdout  # not stale yet
    r = _cli("reset-stale", "--db", db, "--timeout-minutes", "0", "--max-retries", "1")
    assert r.returncode == 0 and "[INFO] reset 3 stale configs to pending; 0 failed after 1 retries" in r.stdout
    assert sorted(asyncio.run(claim(3))) == sorted(first)  # the same configs come back first (priority order)
    r = _cli("reset-stale", "--db", db, "--timeout-minutes", "0", "--max-retries", "1")
    assert "[INFO] reset 0 stale configs to pending; 3 failed after 1 retries" in r.stdout
    r = _cli("progress", "mv1", "--db", db)
    assert "pending 2 · running 0 · completed 0 · failed 3" in r.stdout
    r = _cli("reset-stale", "--db", db, "--timeout-minutes", "-1")
    assert r.returncode == 2 and "must not be negative" in r.stderr and "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def sim():
    from tests.support.processes import SimProcess

    s = SimProcess("--ttft-ms", "2", "--itl-ms", "1", "--max-num-seqs", "16")
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


def test_worker_endpoint_mode_runs_each_config_against_the_simulator(api, sim):
    from tests.integration.test_loadgen_sim import MODEL

    small = {"hardware": ["H100:1"], "frameworks": ["vllm"], "batch_sizes": [1, 2], "sequence_lengths": [64]}  # 10 configs
    with httpx.Client(base_url=api.url, timeout=10) as c:
        assert c.post(f"{W}/populate/mv1", json=small).json()["created"] == 10
    w = subprocess.run([sys.executable, "-m", "tui.cli", "queue", "worker", "--api-url", api.url, "--batch-size", "4",
                        "--endpoint", sim.url, "--model", MODEL, "--max-requests", "3"], capture_output=True, text=True, timeout=120)
    assert w.returncode == 0, w.stdout + w.stderr
    assert "[INFO] worker finished: 10 completed, 0 failed, 0 returned to pending" in w.stdout
    with httpx.Client(base_url=api.url, timeout=10) as c:
        prog = c.get(f"{W}/progress/mv1").json()
        assert (prog["completed"], prog["failed"], prog["pending"], prog["running"]) == (10, 0, 0, 0)
        configs = {cfg["id"]: cfg for cfg in c.get(f"{W}/configs/mv1", params={"limit": 100}).json()}
        results = c.get(f"{W}/results/mv1").json()
    assert sorted(r["config_id"] for r in results) == sorted(configs)  # one result per config
    for r in results:
        m, cfg = r["metrics"], configs[r["config_id"]]
        assert m["completed"] == m["count"] == 3 and m["failed"] == 0
        # the cell's sequence length split into prompt and output tokens, sent to the server for real
        prompt = int(64 * PROMPT_SHARE[cfg["workload_type"]])
        assert (m["total_prompt_tokens"], m["total_output_tokens"]) == (3 * prompt, 3 * (64 - prompt)), (cfg, m)
        assert m["mode"] == f"{cfg['batch_size']} concurrent"  # the batch size is the concurrency
        assert m["output_tokens_per_s"] > 0 and m["ttft_ms"]["max"] > 0
