"""The workload runner against the real simulator subprocess (``python -m backends.sim``)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time

import pytest

from backends.events import Progress
from backends.loadgen import WorkloadRunner, run_workload
from config.catalog import make_workload
from tests.support.processes import ROOT, SimProcess
from tests.support.processes import SIM_MODEL as MODEL


@pytest.fixture(scope="module")
def sim():
    if not (ROOT / "backends" / "sim" / "__main__.py").exists():
        pytest.fail("backends/sim is missing: the simulator is part of the repository")
    s = SimProcess("--ttft-ms", "5", "--prefill-us-per-token", "100", "--itl-ms", "4", "--max-num-seqs", "64")
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


def workload(prompt: int, **kw):
    values = {"prompt_tokens": prompt, "prompt_tokens_stdev": prompt // 20, "output_tokens": 6,
              "output_tokens_stdev": 1,
              "max_requests": 12, "rate_type": "concurrent", "max_concurrency": 4, "random_seed": 3}
    values.update(kw)
    return make_workload("custom", values)


async def test_ttft_grows_with_prompt_length_and_results_are_complete(sim, tmp_path):
    short_path, long_path = tmp_path / "short.json", tmp_path / "long.json"
    short = await run_workload(sim.url, MODEL, workload(100), results_path=short_path)
    long = await run_workload(sim.url, MODEL, workload(3000, prefix_tokens=64), results_path=long_path)
    for s in (short, long):
        assert s["completed"] == 12 and s["failed"] == 0 and s["cancelled"] == 0 and s["errors"] == {}
    # 100 µs per prompt token: ~290 ms more prefill for the long prompts
    assert long["ttft_ms"]["mean"] > short["ttft_ms"]["mean"] + 150
    assert long["ttft_ms"]["min"] > short["ttft_ms"]["max"]
    # ITL is the simulator's 4 ms (plus a little per running request), independent of the prompt
    assert 3.5 < short["itl_ms"]["median"] < 15 and 3.5 < long["itl_ms"]["median"] < 15

    data = json.loads(long_path.read_text())
    assert set(data) >= {"profile", "model", "base_url", "started", "duration_s", "requests", "summary"}
    assert data["summary"] == long and data["model"] == MODEL and data["base_url"] == sim.url
    assert data["profile"]["prompt_tokens"] == 3000 and data["profile"]["prefix_tokens"] == 64
    assert len(data["requests"]) == 12
    for row in data["requests"]:
        assert row["status"] == "ok" and row["http_status"] == 200 and row["error"] is None
        # the simulator's usage (one token per word) agrees with the intended length
        assert row["output_tokens"] == row["max_tokens"] == row["chunks"]
        assert 64 + 2700 <= row["prompt_tokens"] <= 64 + 3300
        for key in ("ttft_ms", "itl_ms", "latency_ms"):
            assert row[key] > 0
    assert long["total_prompt_tokens"] == sum(r["prompt_tokens"] for r in data["requests"])
    for key in ("ttft_ms", "itl_ms", "latency_ms"):
        assert all(long[key][k] is not None for k in ("mean", "median", "p90", "p99", "min", "max"))


async def test_chat_api_constant_rate_and_a_wrong_model(sim):
    runner = WorkloadRunner(sim.url, MODEL, workload(50, rate_type="constant", rate=40, max_requests=10,
                                                      max_concurrency=None), api="chat", metrics_interval=0.05)
    events = [e async for e in runner.events()]
    assert runner.summary["completed"] == 10 and events[-2].completed == 10 and events[-1].requests_per_s > 0
    # a model the server does not serve: every request fails with vLLM's 404 text, none is dropped
    s = await run_workload(sim.url, "no/such-model", workload(10, max_requests=3))
    assert s["failed"] == 3 and s["completed"] == 0
    ((msg, n),) = s["errors"].items()
    assert n == 3 and msg.startswith("HTTP 404:") and "no/such-model" in msg


async def test_engine_crash_mid_run_is_counted(tmp_path):
    sim = SimProcess("--speed", "0", "--fail", "crash-after", "3")
    try:
        url = sim.wait_ready()
        out = tmp_path / "crash.json"
        s = await run_workload(url, MODEL, workload(20, rate_type="synchronous", max_requests=8), results_path=out,
                               timeout=10)
    finally:
        sim.stop()
    assert s["count"] == 8 and s["completed"] == 3 and s["failed"] == 5, s
    assert sum(s["errors"].values()) == 5
    rows = json.loads(out.read_text())["requests"]
    assert [r["status"] for r in sorted(rows, key=lambda r: r["index"])][:3] == ["ok"] * 3
    assert all(r["error"] for r in rows if r["status"] == "error")


def test_command_line_runs_a_preset_with_overrides(sim, tmp_path):
    out = tmp_path / "cli.json"
    proc = subprocess.run(
        [sys.executable, "-m", "backends.loadgen", sim.url, MODEL, "--workload", "chatbot-style",
         "--set", "max_requests=6",
         "--set", "rate_type=concurrent", "--set", "max_concurrency=3", "--set", "output_tokens=5",
         "--interval", "0.05", "--results", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[INFO] chatbot: 3 concurrent, 6 requests" in proc.stdout
    assert "[METRICS] 6/6 done (0 failed)" in proc.stdout
    assert re.search(r"^TTFT ms\s+\d", proc.stdout, re.M) and "6 completed, 0 failed" in proc.stdout
    data = json.loads(out.read_text())
    assert data["profile"]["app"] == "chatbot" and data["profile"]["max_concurrency"] == 3
    assert len(data["requests"]) == 6

    bad = subprocess.run([sys.executable, "-m", "backends.loadgen", sim.url, MODEL, "--set", "rate_type=bursty"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "rate_type 'bursty'" in bad.stderr and "Traceback" not in bad.stderr
    failing = subprocess.run([sys.executable, "-m", "backends.loadgen", sim.url, "wrong-model", "--workload", "custom",
                              "--set", "prompt_tokens=5", "--set", "output_tokens=2", "--set", "max_requests=2"],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert failing.returncode == 1 and "[ERROR] 2 x HTTP 404" in failing.stdout


def test_command_line_ctrl_c_cancels_and_still_reports(sim, tmp_path):
    out = tmp_path / "int.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "backends.loadgen", sim.url, MODEL, "--workload", "custom", "--set", "prompt_tokens=5",
         "--set", "output_tokens=3000", "--set", "max_requests=4", "--set", "rate_type=concurrent",
         "--set", "max_concurrency=2", "--interval", "0.05", "--results", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        for line in proc.stdout:
            if line.startswith("[METRICS]") and "2 in flight" in line:
                break
        proc.send_signal(signal.SIGINT)
        rest = proc.stdout.read()
        assert proc.wait(15) == 130, rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "0 completed, 0 failed, 2 cancelled (2 concurrent, stopped early" in rest
    assert json.loads(out.read_text())["summary"]["cancelled"] == 2


def _gauge(url: str, name: str) -> float:
    import httpx

    text = httpx.get(url + "/metrics", timeout=10).text
    m = re.search(rf"^{re.escape(name)}{{[^}}]*}} (\S+)$", text, re.M)
    assert m, f"{name} missing from /metrics"
    return float(m.group(1))


async def test_reasoning_model_first_token_is_the_first_reasoning_token(tmp_path):
    # 12 reasoning tokens at 25 ms each come before any content: a client that waits for
    # content would report TTFT >= 30 + 12 * 25 = 330 ms
    sim = SimProcess("--ttft-ms", "30", "--itl-ms", "25", "--itl-ms-per-seq", "0", "--prefill-us-per-token", "0",
                     "--reasoning-tokens", "12")
    try:
        url = sim.wait_ready()
        s = await run_workload(url, MODEL, workload(10, output_tokens=16, output_tokens_stdev=0, max_requests=4,
                                                    max_concurrency=2), api="chat", results_path=tmp_path / "r.json")
    finally:
        sim.stop()
    assert s["completed"] == 4 and s["total_output_tokens"] == 64
    assert 30 <= s["ttft_ms"]["max"] < 200, s["ttft_ms"]
    assert s["itl_ms"]["median"] == pytest.approx(25, rel=0.3) and s["tpot_ms"]["median"] == pytest.approx(25, rel=0.3)


async def test_300_requests_in_flight_reach_the_server():
    # no connection cap below the concurrency: the simulator's running-requests gauge says 300
    sim = SimProcess("--ttft-ms", "120000", "--max-num-seqs", "1024")
    try:
        url = sim.wait_ready()
        runner = WorkloadRunner(url, MODEL, workload(10, max_requests=300, max_concurrency=300), metrics_interval=0.1)
        seen = 0.0
        async for event in runner.events():
            if isinstance(event, Progress) and event.running == 300 and not runner._stopping:
                deadline = time.monotonic() + 60
                while (seen := await asyncio.to_thread(_gauge, url, "vllm:num_requests_running")) < 300:
                    assert time.monotonic() < deadline, f"the server saw {seen} of 300 requests"
                    await asyncio.sleep(0.1)
                runner.stop()
    finally:
        sim.stop()
    assert seen == 300
    s = runner.summary
    assert s["cancelled"] == 300 and s["workers"] >= 1 and s["stop_reason"] == "stopped"
