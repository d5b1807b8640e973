"""The simulator as a real subprocess: startup lines, endpoints, failures, signals, busy port."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from backends.sim import failures

ROOT = Path(__file__).resolve().parents[2]
UVICORN_LINES = (
    "INFO:     Started server process [",
    "INFO:     Waiting for application startup.",
    "INFO:     Application startup complete.",
    "INFO:     Uvicorn running on http://127.0.0.1:",
)


class Sim:
    """A simulator subprocess whose stdout/stderr lines are collected as they come."""

    def __init__(self, *args: str, module: str = "backends.sim"):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # no PYTHONUNBUFFERED: the simulator must flush every line by itself
            env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self.ready = threading.Event()
        self.url: str | None = None
        self.threads = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for t in self.threads:
            t.start()

    def _read(self, stream, sink: list[str]) -> None:
        for line in stream:
            sink.append(line.rstrip("\n"))
            match = re.search(r"Uvicorn running on (http://\S+)", line)
            if match:
                self.url = match.group(1)
                self.ready.set()

    def wait_ready(self, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"simulator not ready (rc={self.proc.poll()}):\n" + self.text())
        return self.url

    def wait(self, timeout: float = 10) -> int:
        rc = self.proc.wait(timeout)
        for t in self.threads:
            t.join(2)
        return rc

    def text(self) -> str:
        return "\n".join(self.out) + "\n--- stderr ---\n" + "\n".join(self.err)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


FAST = ("--host", "127.0.0.1", "--port", "0", "--startup-delay", "0", "--speed", "0")


@pytest.fixture(scope="module")
def sim():
    s = Sim(
        "serve", "meta-llama/Llama-2-7b-hf", *FAST, "--max-model-len", "2048",
        "--dtype", "bfloat16", "--gpu-memory-utilization=0.9", "--enable-prefix-caching",
        "--stats-interval", "0.3",
    )
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


def test_startup_lines_like_vllm(sim):
    out = "\n".join(sim.out)
    assert "vLLM API server version" in out
    assert "non-default args:" in out and "'max_model_len': 2048" in out
    for ignored in ("--dtype bfloat16", "--gpu-memory-utilization=0.9", "--enable-prefix-caching"):
        assert re.search(rf"WARNING .*ignoring unsupported argument: {re.escape(ignored)}", out), ignored
    for needle in ("Starting to load model meta-llama/Llama-2-7b-hf", "Loading model weights took",
                   "GPU KV cache size:", "# GPU blocks:"):
        assert needle in out
    port = sim.url.rsplit(":", 1)[1]
    assert f"Starting vLLM API server on http://127.0.0.1:{port}" in out
    # uvicorn's lines, on stderr, in order, exactly formatted
    positions = [next(i for i, line in enumerate(sim.err) if line.startswith(p)) for p in UVICORN_LINES]
    assert positions == sorted(positions)
    assert sim.err[positions[0]] == f"INFO:     Started server process [{sim.proc.pid}]"
    assert sim.err[positions[3]] == f"INFO:     Uvicorn running on http://127.0.0.1:{port} (Press CTRL+C to quit)"


def test_endpoints_and_metrics_move(sim):
    with httpx.Client(base_url=sim.url, timeout=10) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/v1/models").json()["data"][0]["id"] == "meta-llama/Llama-2-7b-hf"
        before = client.get("/metrics").text

        done = client.post("/v1/completions",
                           json={"model": "meta-llama/Llama-2-7b-hf", "prompt": "a b c", "max_tokens": 4})
        assert done.json()["usage"]["completion_tokens"] == 4

        with client.stream(
            "POST",
            "/v1/chat/completions",
            json={"model": "meta-llama/Llama-2-7b-hf", "messages": [{"role": "user", "content": "hi"}],
                  "max_tokens": 5, "stream": True, "stream_options": {"include_usage": True}},
        ) as resp:
            lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]"
        assert json.loads(lines[-2][6:])["usage"]["completion_tokens"] == 5

        with client.stream(
            "POST", "/v1/completions", json={"prompt": "x y", "max_tokens": 3, "stream": True}
        ) as resp:
            chunks = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: {")]
        assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "length"]

        assert client.post("/v1/completions", json={"model": "nope", "prompt": "x"}).status_code == 404
        too_long = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 5000})
        assert too_long.status_code == 400
        assert "maximum context length is 2048 tokens" in too_long.json()["error"]["message"]

        after = client.get("/metrics").text

    def value(text: str, metric: str) -> float:
        match = re.search(rf"^{re.escape(metric)}\{{[^}}]*\}} (\S+)$", text, re.M)
        return float(match.group(1))

    assert value(after, "vllm:generation_tokens_total") - value(before, "vllm:generation_tokens_total") == 12
    assert value(after, "vllm:prompt_tokens_total") - value(before, "vllm:prompt_tokens_total") == 6
    assert (
        value(after, "vllm:time_to_first_token_seconds_count") - value(before, "vllm:time_to_first_token_seconds_count")
        == 3
    )
    assert not any("/v1/completions HTTP/1.1" in line for line in sim.out + sim.err)  # no access log by default


def test_periodic_stats_line_after_traffic(sim):
    with httpx.Client(base_url=sim.url, timeout=10) as client:
        client.post("/v1/completions", json={"prompt": "a", "max_tokens": 2})
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if any("Avg prompt throughput:" in line for line in sim.out):
            break
        time.sleep(0.05)
    line = next(line for line in sim.out if "Avg prompt throughput:" in line)
    assert re.search(r"Running: \d+ reqs, Waiting: \d+ reqs, GPU KV cache usage: [\d.]+%", line)


@pytest.mark.parametrize(
    ("mode", "extra", "needles"),
    [
        ("oom", ("--max-model-len", "4096"), (failures.OOM_MARKER, "GPU 0 has a total capacity of 79.19 GiB",
                                               failures.ENGINE_INIT_FAILED)),
        ("model-not-found", (), (failures.MODEL_NOT_FOUND_MARKER, "is not a local folder",
                                 "Repository Not Found for url")),
        ("trust-remote-code", (), ("requires you to execute the configuration file in that repo",
                                   "set the option `trust_remote_code=True` to remove this error",
                                   "--trust-remote-code")),
    ],
)
def test_startup_failures_print_vllms_text_and_exit_1(mode, extra, needles):
    s = Sim("meta-llama/Llama-2-7b-hf", *FAST, "--fail", mode, *extra)
    rc = s.wait()
    assert rc == 1
    err = "\n".join(s.err)
    for needle in needles:
        assert needle in err, s.text()
    assert "vLLM API server version" in "\n".join(s.out)  # a realistic part of the startup came first
    assert not any("Uvicorn running" in line for line in s.err)


def test_the_fixes_make_failures_go_away():
    fixed_oom = Sim("meta-llama/Llama-2-7b-hf", *FAST, "--fail", "oom", "--max-model-len", "2048")
    fixed_trc = Sim("some/custom-model", *FAST, "--fail", "trust-remote-code", "--trust-remote-code")
    try:
        fixed_oom.wait_ready()
        fixed_trc.wait_ready()
    finally:
        fixed_oom.stop()
        fixed_trc.stop()


def test_crash_after_n_requests():
    s = Sim("m", *FAST, "--fail", "crash-after", "2")
    url = s.wait_ready()
    with httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(2):
            assert client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2}).status_code == 200
    rc = s.wait(10)
    assert rc == failures.EXIT_ENGINE_DEAD
    text = s.text()
    assert failures.ENGINE_FATAL in text
    assert failures.ENGINE_DEAD in text
    assert "INFO:     Shutting down" in text


def test_sigterm_exits_0_promptly_even_mid_stream():
    s = Sim("m", "--host", "127.0.0.1", "--port", "0", "--startup-delay", "0", "--itl-ms", "50")
    url = s.wait_ready()
    got_first = threading.Event()

    def long_stream() -> None:
        try:
            with httpx.Client(base_url=url, timeout=10) as client, client.stream(
                "POST", "/v1/completions", json={"prompt": "x", "max_tokens": 1000, "stream": True}
            ) as resp:
                for _ in resp.iter_lines():
                    got_first.set()
        except httpx.HTTPError:
            pass

    t = threading.Thread(target=long_stream, daemon=True)
    t.start()
    assert got_first.wait(5)
    t0 = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait(5) == 0
    assert time.monotonic() - t0 < 2.5
    err = "\n".join(s.err)
    assert "INFO:     Shutting down" in err
    assert f"INFO:     Finished server process [{s.proc.pid}]" in err
    t.join(5)


def test_sigterm_during_model_loading_exits_0():
    s = Sim("m", "--host", "127.0.0.1", "--port", "0", "--startup-delay", "30")
    deadline = time.monotonic() + 10
    while not any("Starting to load model" in line for line in s.out):
        assert time.monotonic() < deadline and s.proc.poll() is None, s.text()
        time.sleep(0.02)
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait(3) == 0


def test_busy_port_fails_with_errno_98():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        s = Sim("m", "--host", "127.0.0.1", "--port", str(port), "--startup-delay", "0")
        assert s.wait(10) == 1
    expected = failures.PORT_IN_USE_TEMPLATE.format(host="127.0.0.1", port=port)
    assert f"ERROR:    {expected}" in s.err
    assert "[Errno 98]" in expected and "address already in use" in expected


def test_sweepdeck_sim_subcommand_help():
    result = subprocess.run(
        [sys.executable, "-m", "tui.cli", "sim", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "usage: sweepdeck sim" in result.stdout
    assert "--fail" in result.stdout


def test_client_disconnect_frees_the_slot():
    # one slot; a client drops a 1000-token stream: the next request must not wait for it
    s = Sim("m", "--host", "127.0.0.1", "--port", "0", "--startup-delay", "0", "--max-num-seqs", "1",
            "--ttft-ms", "0", "--itl-ms", "20")
    url = s.wait_ready()
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            with client.stream(
                "POST", "/v1/completions", json={"prompt": "x", "max_tokens": 1000, "stream": True}
            ) as resp:
                next(resp.iter_lines())
            t0 = time.monotonic()
            assert client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2}).status_code == 200
            assert time.monotonic() - t0 < 2  # the dropped stream would hold the slot for 20 s
            metrics = client.get("/metrics").text
        assert re.search(r'finished_reason="abort"\} 1\.0', metrics)
    finally:
        s.stop()


def test_access_log_is_off_by_default_and_on_when_asked():
    s = Sim("m", *FAST, "--access-log")
    url = s.wait_ready()
    try:
        httpx.get(url + "/health", timeout=5)
        deadline = time.monotonic() + 3
        while not any('"GET /health HTTP/1.1" 200' in line for line in s.out) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert any(line.startswith("INFO:     127.0.0.1:") and '"GET /health HTTP/1.1" 200' in line for line in s.out)
    finally:
        s.stop()


def test_sweepdeck_sim_serve_replaces_vllm_in_a_jobscript():
    # `vllm serve MODEL ...` -> `sweepdeck sim serve MODEL ...`, through the real CLI entry
    s = Sim("sim", "serve", "org/model", *FAST, "--trust-remote-code", "--max-num-seqs", "4", module="tui.cli")
    url = s.wait_ready()
    try:
        assert httpx.get(url + "/v1/models", timeout=5).json()["data"][0]["id"] == "org/model"
    finally:
        s.stop()
    assert s.proc.returncode == 0
