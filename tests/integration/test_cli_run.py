"""`sweepdeck run` / `runs` / `attach` as real subprocesses with the simulator."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.procstate import gone

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).parent / "sweepdeck"
CMD = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "tui.cli"]
FAST = ["--sim-arg=--speed=0", "--sim-arg=--startup-delay=0.05", "--rate", "200"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sweepdeck(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        CMD + list(args), capture_output=True, text=True, timeout=timeout, cwd=ROOT, stdin=subprocess.DEVNULL, env=env
    )



def processes_with(text: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains ``text``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd and not gone(int(entry)):
            found.append(int(entry))
    return found


def runs_dir() -> Path:
    return Path(os.environ["SWEEPDECK_STATE_DIR"]) / "runs"


def server_pid(run_id: str) -> int:
    session = (runs_dir() / run_id / "handle").read_text()
    return int(dict(line.split("=", 1) for line in session.splitlines() if "=" in line)["PID"])


def wait_gone(pid: int, seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if gone(pid):
            return True
        time.sleep(0.05)
    return gone(pid)


def test_run_succeeds_and_leaves_nothing_running():
    port = free_port()
    res = sweepdeck(
        "run", "--backend", "local", "--model", "qwen-1.5b", "--workload", "chatbot", "--max-requests", "20",
        "--yes", "--port", str(port), "--experiment-id", "cli-ok", *FAST,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    out = res.stdout
    assert "[VLLM OUT]" in out and "[VLLM ERR] INFO:     Application startup complete." in out
    assert "✓ Port" in out and "[INFO] Endpoint ready: http://127.0.0.1:" in out
    assert "Finished: succeeded. 20 requests completed" in out
    assert "Summary" in out and "TTFT (ms)" in out and "20 completed, 0 failed" in out
    assert "\x1b[" not in out  # no colour codes when not a terminal
    assert "Traceback" not in res.stderr
    assert wait_gone(server_pid("cli-ok"))
    assert processes_with(f"--port {port}") == []
    results = json.loads((runs_dir() / "cli-ok" / "results" / "results.json").read_text())
    assert results["summary"]["completed"] == 20
    # runs lists it; attach replays it
    listed = [json.loads(line) for line in sweepdeck("runs", "--json").stdout.splitlines()]
    (row,) = [r for r in listed if r["id"] == "cli-ok"]
    assert row["state"] == "succeeded" and row["model"] == "Qwen/Qwen2.5-Math-1.5B" and row["duration_s"] > 0
    table = sweepdeck("runs")
    assert table.returncode == 0 and "cli-ok" in table.stdout and "succeeded" in table.stdout
    again = sweepdeck("attach", "cli-ok")
    assert again.returncode == 0 and "[VLLM OUT]" in again.stdout and "Finished: succeeded" in again.stdout


def test_sim_oom_prints_diagnosis_and_fixes():
    port = free_port()
    res = sweepdeck(
        "run", "--model", "qwen-1.5b", "--max-requests", "5", "--yes", "--port", str(port),
        "--sim-fail", "oom", "--experiment-id", "cli-oom", *FAST,
    )
    assert res.returncode == 1
    out = res.stdout
    assert "[ERROR] Diagnosis: CUDA out of memory" in out
    assert "1. Increase TP: TP=1 -> TP=2 (doubles GPU memory)   [re-run with --tp 2]" in out
    assert "2. Reduce context: max_model_len=4096 -> 2048" in out
    assert "3. Reduce batch: max_num_seqs=256 -> 128" in out
    # the simulator's OOM comes from vLLM's warm-up (profile_run) frames: smaller scheduler steps help there
    assert "4. Smaller scheduler steps: max_num_batched_tokens=2048 -> 1024" in out
    assert "[ERROR] failed: CUDA out of memory" in res.stderr and "Traceback" not in res.stderr
    assert wait_gone(server_pid("cli-oom"))
    meta = json.loads((runs_dir() / "cli-oom" / "meta.json").read_text())
    assert meta["state"] == "failed" and meta["diagnoses"] == ["cuda-oom"]


def test_json_lines_and_model_choice():
    port = free_port()
    res = sweepdeck(
        "run", "--model", "llama-7b", "--model-choice", "meta-llama/Llama-2-7b-hf", "--max-requests", "3",
        "--yes", "--json", "--port", str(port), "--experiment-id", "cli-json", *FAST,
    )
    assert res.returncode == 0, res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines()]
    types = [e["type"] for e in events]
    assert types[0] == "Spec" and "Check" in types and "LogLine" in types and "Endpoint" in types
    assert types[-2:] == ["Finished", "Result"]
    assert events[0]["model"] == "meta-llama/Llama-2-7b-hf"
    assert events[-1]["exit_code"] == 0 and events[-1]["run_id"] == "cli-json"


def _start(port: int, run_id: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        CMD + ["run", "--model", "qwen-1.5b", "--max-requests", "5000", "--rate", "20", "--yes", "--port", str(port),
               "--experiment-id", run_id, "--sim-arg=--startup-delay=0.05", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=ROOT,
    )


def _wait_for(proc: subprocess.Popen, text: str, seconds: float = 20) -> str:
    """Read stdout until ``text`` appears (returns what was read)."""
    buf = b""
    end = time.monotonic() + seconds
    while text.encode() not in buf:
        left = end - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise AssertionError(f"{text!r} never appeared: {buf.decode()[-2000:]}")
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            buf += os.read(proc.stdout.fileno(), 65536)
    return buf.decode()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_cleans_up_and_exits_nonzero(sig):
    port = free_port()
    run_id = f"cli-sig-{sig.name.lower()}"
    proc = _start(port, run_id)
    try:
        _wait_for(proc, "[INFO] Progress:")
        pid = server_pid(run_id)
        assert not gone(pid)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + sig
    assert wait_gone(pid) and processes_with(f"--port {port}") == []
    assert "Traceback" not in err.decode()
    if sig != signal.SIGHUP:  # a hangup leaves at once (no terminal to print on); the supervisor stops the run
        assert f"Stopped by {sig.name}" in out.decode()
    meta = _wait_meta(run_id, lambda m: m.get("state") == "cancelled")
    assert f"Stopped by {sig.name}" in meta["message"]


def _wait_meta(run_id: str, predicate, seconds: float = 10.0) -> dict:
    """meta.json once ``predicate`` holds (the supervisor writes it, maybe after the client left)."""
    end = time.monotonic() + seconds
    while True:
        meta = json.loads((runs_dir() / run_id / "meta.json").read_text())
        if predicate(meta) or time.monotonic() > end:
            return meta
        time.sleep(0.05)


def test_detach_on_exit_keeps_server_for_attach():
    port = free_port()
    proc = _start(port, "cli-detach", "--detach-on-exit")
    try:
        _wait_for(proc, "[INFO] Endpoint ready")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    pid = server_pid("cli-detach")
    try:
        assert proc.returncode == 0 and "sweepdeck attach cli-detach" in out.decode()
        assert not gone(pid)
        res = sweepdeck("attach", "cli-detach", "--stop", timeout=30)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr
        assert "Following cli-detach (detached)" in res.stdout
        assert "Stopped cli-detach: cancelled; its cleanup is done." in res.stdout
        assert gone(pid) or wait_gone(pid, 1.0)  # gone when --stop says the cleanup is done
        gone_again = sweepdeck("attach", "cli-detach")
        assert gone_again.returncode == 0 and "Stopped with --stop" in gone_again.stdout
        assert "has ended (cancelled)" in gone_again.stdout
    finally:
        if not gone(pid):
            os.killpg(pid, signal.SIGKILL)


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


BAD_INPUTS = {
    "unknown model": (["--model", "no-such-model-zz"], "Unknown model 'no-such-model-zz'"),
    "ambiguous alias": (["--model", "llama-7b"], "--model-choice"),
    "unknown workload": (["--model", "qwen-1.5b", "--workload", "zzz-nope"], "Unknown workload 'zzz-nope'"),
    "tp zero": (["--model", "qwen-1.5b", "--tp", "0"], "tp must be a positive integer"),
    "tp text": (["--model", "qwen-1.5b", "--tp", "abc"], "tp must be a positive integer"),
    "max_model_len above limit": (["--model", "qwen-1.5b", "--max-model-len", "999999"], "above"),
    "bad custom workload": (["--model", "qwen-1.5b", "--custom-workload", "prompt=abc output=5"], "whole number"),
    "bad sim fail": (["--model", "qwen-1.5b", "--sim-fail", "explode"], "Unknown --sim-fail mode"),
    "bad memory": (["--model", "qwen-1.5b", "--memory", "lots"], "memory"),
    "bad cpu": (["--model", "qwen-1.5b", "--cpu", "-2"], "cpu"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_clear_message(case, private_dirs):
    args, expected = BAD_INPUTS[case]
    port = free_port()
    before = _snapshot(private_dirs)
    res = sweepdeck("run", *args, "--yes", "--port", str(port))
    assert res.returncode != 0
    assert expected in res.stderr, res.stderr
    assert res.stderr.startswith("[ERROR] ")
    assert "Traceback" not in res.stderr
    assert not runs_dir().exists() or not any(runs_dir().iterdir())
    assert processes_with(f"--port {port}") == []
    assert _snapshot(private_dirs) == before


def test_busy_port_names_holder_and_next_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        res = sweepdeck("run", "--model", "qwen-1.5b", "--yes", "--port", str(port))
    assert res.returncode == 3
    assert f"✗ Port {port} free — 127.0.0.1:{port} is in use by pid {os.getpid()}" in res.stdout
    assert "Pre-flight failed" in res.stderr and "--port" in res.stderr and "Traceback" not in res.stderr
    assert not runs_dir().exists() or not any(runs_dir().iterdir())


def test_server_command_not_found():
    env = dict(os.environ, PATH="/nonexistent")
    res = sweepdeck("run", "--model", "qwen-1.5b", "--yes", "--server", "vllm", "--port", str(free_port()), env=env)
    assert res.returncode == 3
    assert "'vllm' not found on PATH" in res.stderr and "Traceback" not in res.stderr


def test_malformed_catalog_is_named_and_left_alone(tmp_path):
    cat = tmp_path / "catalog"
    cat.mkdir()
    bad = cat / "known-models.yaml"
    bad.write_text("aliases:\n  qwen-1.5b: [unclosed\n")
    before = bad.read_bytes()
    res = sweepdeck("--catalog-dir", str(cat), "run", "--model", "qwen-1.5b", "--yes")
    assert res.returncode == 2
    assert "known-models.yaml" in res.stderr and "malformed YAML" in res.stderr and "Traceback" not in res.stderr
    assert bad.read_bytes() == before


def test_no_tty_without_yes_refuses():
    res = sweepdeck("run", "--model", "qwen-1.5b", "--port", str(free_port()))
    assert res.returncode == 2
    assert "no terminal to ask on" in res.stderr and "--yes" in res.stderr
    assert not runs_dir().exists() or not any(runs_dir().iterdir())


def test_attach_unknown_run():
    res = sweepdeck("attach", "no-such-run")
    assert res.returncode == 2 and "No saved run 'no-such-run'" in res.stderr and "Traceback" not in res.stderr


def test_prompt_on_a_terminal_can_decline():
    import pty

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            CMD + ["run", "--model", "qwen-1.5b", "--port", str(free_port())],
            stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
        )
        os.write(master, b"n\n")
        out, err = proc.communicate(timeout=30)
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 2
    out, err = out.decode(), err.decode()
    assert "Experiment ID" in out and "Pre-flight checks:" in out and "Proceed? [Y/n]" in out
    assert "Not started." in err and "Traceback" not in err
    assert not runs_dir().exists() or not any(runs_dir().iterdir())


def test_retry_with_a_suggested_fix():
    port = free_port()
    first = sweepdeck("run", "--model", "qwen-1.5b", "--max-requests", "3", "--yes", "--port", str(port),
                      "--sim-fail", "oom", "--experiment-id", "cli-retry", *FAST)
    assert first.returncode == 1
    bad = sweepdeck("run", "--retry", "cli-retry", "--fix", "9", "--yes")
    assert bad.returncode == 2 and "has 4 suggested fixes, not 9" in bad.stderr and "3. Reduce batch" in bad.stderr
    res = sweepdeck("run", "--retry", "cli-retry", "--fix", "3", "--yes", "--port", str(port), "--sim-fail",
                    "oom", *FAST)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr
    assert "engine.max_num_seqs: 256 -> 128 (OVERRIDE, recovery fix)" in res.stdout
    meta = json.loads((runs_dir() / "cli-retry-fix" / "meta.json").read_text())
    assert meta["parent"] == "cli-retry" and meta["state"] == "succeeded"
    # the same fix again is refused, naming the run it made; --again launches it anyway
    again = sweepdeck("run", "--retry", "cli-retry", "--fix", "3", "--yes", "--port", str(port),
                      "--sim-fail", "oom", *FAST)
    assert again.returncode == 2 and "already relaunched with fix 3 (Reduce batch) as cli-retry-fix" in again.stderr
    assert "--again" in again.stderr and not (runs_dir() / "cli-retry-fix-2").exists()


def _assert_clean_failure(res, private_dirs, before, port: int) -> None:
    """One readable message, no traceback, nothing running, no user file changed."""
    assert res.returncode != 0
    ours = [line for line in (res.stdout + res.stderr).splitlines() if not line.startswith("[VLLM ")]
    assert not any("Traceback" in line for line in ours)  # the server's own traceback is shown as its log
    assert "[ERROR] " in res.stderr
    assert processes_with(f"--port {port}") == []
    user_files = {k: v for k, v in _snapshot(private_dirs).items() if "/state/" not in k}
    assert user_files == {k: v for k, v in before.items() if "/state/" not in k}


def test_endpoint_never_ready_is_stopped_with_a_clear_message(private_dirs):
    """The server starts but never answers in time: stopped, told why and what to do."""
    port = free_port()
    before = _snapshot(private_dirs)
    res = sweepdeck("run", "--model", "qwen-1.5b", "--yes", "--port", str(port), "--ready-timeout", "1.5",
                    "--sim-arg=--startup-delay=60")
    _assert_clean_failure(res, private_dirs, before, port)
    assert "ready" in res.stderr.lower() and "--ready-timeout" in res.stdout + res.stderr, (
        res.stdout[-1500:] + res.stderr
    )


def test_server_exiting_during_startup_is_reported_with_its_diagnosis(private_dirs):
    """vLLM's own "model not found" exit during startup: diagnosed, non-zero, nothing left."""
    port = free_port()
    before = _snapshot(private_dirs)
    res = sweepdeck("run", "--model", "qwen-1.5b", "--yes", "--port", str(port), "--sim-fail", "model-not-found",
                    *FAST[:2])
    _assert_clean_failure(res, private_dirs, before, port)
    assert "[VLLM ERR]" in res.stdout
    assert "exited" in (res.stdout + res.stderr).lower()
    assert "not found" in (res.stdout + res.stderr).lower()


def test_busy_port_and_missing_command_change_no_user_file(private_dirs):
    before = _snapshot(private_dirs)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        busy = sweepdeck("run", "--model", "qwen-1.5b", "--yes", "--port", str(port))
    missing = sweepdeck("run", "--model", "qwen-1.5b", "--yes", "--server", "vllm", "--port", str(free_port()),
                        env=dict(os.environ, PATH="/nonexistent"))
    for res in (busy, missing):
        assert res.returncode == 3 and "Traceback" not in res.stderr
    assert _snapshot(private_dirs) == before
    assert not runs_dir().exists() or not any(runs_dir().iterdir())


def test_lines_reach_a_pipe_as_they_come():
    """A client whose output is a pipe (``| tee``, CI) printed nothing until the run ended (block buffering)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen([sys.executable, "-m", "tui.cli", "run", "--model", "qwen-1.5b", "--yes",
                             "--max-requests", "200", "--rate", "2", "--experiment-id", "piped"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        events = runs_dir() / "piped" / "events.jsonl"
        end = time.monotonic() + 120
        while time.monotonic() < end and not (events.exists() and b'"Endpoint"' in events.read_bytes()):
            time.sleep(0.05)
        assert events.exists() and b'"Endpoint"' in events.read_bytes(), "the run never got its endpoint"
        # the run saved its endpoint; its line reaches the pipe soon after (block-buffered, it waited for
        # 8 KiB of output: tens of seconds at this rate)
        seen = b""
        end = time.monotonic() + 15
        while b"Endpoint ready" not in seen and time.monotonic() < end and proc.poll() is None:
            if select.select([proc.stdout], [], [], 0.2)[0]:
                seen += os.read(proc.stdout.fileno(), 65536)
        assert b"Endpoint ready" in seen and proc.poll() is None, seen[-2000:]
    finally:
        proc.terminate()
        proc.wait(30)
