"""Runs outlive their viewer: a headless client (``sweepdeck run``) killed in every phase, on the local backend.

Real processes throughout: the client, the run's supervisor, the process guard
and the simulator. Whatever kills the client — SIGINT, SIGTERM, SIGHUP or
SIGKILL — within 10 s no process, listening port or supervisor of the run is
left, the run store says how it ended, and every log line the client showed is
in the run's ``events.jsonl``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import pytest

from backends.procs import free_port
from tests.integration.supervisor.support import (
    Client,
    eventually,
    gone,
    group_members,
    listening,
    meta,
    runs_dir,
    saved_lines,
    session,
)

pytestmark = pytest.mark.slow

BASE = ["--model", "qwen-1.5b", "--yes", "--sim-arg=--startup-delay=0.05"]
# phase -> (extra arguments, the client's line that says the run is in that phase)
PHASES = {
    "starting": (["--max-requests", "20000", "--rate", "20", "--sim-arg=--startup-delay=30"],
                 "[INFO] server: starting"),
    "server-up": (["--max-requests", "20000", "--rate", "20"], "[INFO] Endpoint ready"),
    "workload": (["--max-requests", "20000", "--rate", "20"], "[INFO] Progress:"),
    "finishing": (["--max-requests", "3", "--rate", "50", "--sim-arg=--shutdown-delay=6"], "[INFO] server: stopping"),
}
SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL]


def _supervisor_pid(run_id: str) -> int:
    sup = meta(run_id).get("supervisor") or {}
    return int(sup.get("pid") or 0)


def _client_lines(text: str) -> list[str]:
    return [line.split("] ", 1)[1] for line in text.splitlines() if line.startswith("[VLLM ")]


@pytest.mark.parametrize("phase", list(PHASES))
@pytest.mark.parametrize("sig", SIGNALS, ids=[s.name for s in SIGNALS])
def test_client_killed_in_any_phase_leaves_nothing(sig, phase):
    extra, marker = PHASES[phase]
    port = free_port()
    run_id = f"kill-{sig.name.lower()}-{phase}"
    client = Client("run", *BASE, *extra, "--port", str(port), "--experiment-id", run_id)
    try:
        client.wait_for(marker, 60)
        pid = int(session(run_id).get("PID") or 0)
        sup = _supervisor_pid(run_id)
        assert pid and sup and not gone(pid) and not gone(sup)
        shown = _client_lines(client.text)
        client.proc.send_signal(sig)
        began = time.monotonic()
        rc = client.finish(20)
        assert eventually(lambda: gone(pid) and not group_members(pid) and gone(sup) and not listening(port), 10), (
            f"left after {time.monotonic() - began:.1f} s: server {pid} {'alive' if not gone(pid) else 'gone'}, "
            f"group {group_members(pid)}, supervisor {'alive' if not gone(sup) else 'gone'}, port {listening(port)}")
    finally:
        client.kill()
    final = meta(run_id)
    expected = ("succeeded", "cancelled") if phase == "finishing" else ("cancelled",)
    assert final.get("state") in expected, final
    if sig != signal.SIGKILL and final["state"] == "cancelled":
        assert f"Stopped by {sig.name}" in final.get("message", ""), final
    if sig == signal.SIGKILL:
        assert rc == -signal.SIGKILL
        if final["state"] == "cancelled":
            assert "last client is gone" in final.get("message", "").lower(), final
    else:
        assert rc in (128 + sig, 0 if phase == "finishing" else 128 + sig), client.text[-2000:]
        assert "Traceback" not in client.text
    saved = saved_lines(run_id)
    missing = [line for line in shown if line not in saved]
    assert not missing, f"shown but not saved: {missing[:5]}"


def test_sigkill_of_the_supervisor_leaves_no_local_process_and_the_run_shows_lost():
    port = free_port()
    run_id = "kill-the-supervisor"
    client = Client("run", *BASE, "--max-requests", "20000", "--rate", "20", "--port", str(port),
                    "--experiment-id", run_id)
    try:
        client.wait_for("[INFO] Progress:", 60)
        pid = int(session(run_id)["PID"])
        sup = _supervisor_pid(run_id)
        os.kill(sup, signal.SIGKILL)
        assert eventually(lambda: gone(pid) and not group_members(pid) and not listening(port), 10)
        rc = client.finish(20)
        assert rc != 0 and "Traceback" not in client.text
    finally:
        client.kill()
    listing = Client("runs", "--json")
    assert listing.finish(20) == 0
    import json

    rows = {row["id"]: row for row in (json.loads(line) for line in listing.text.splitlines() if line.startswith("{"))}
    assert rows[run_id]["state"] == "lost", rows[run_id]
    assert rows[run_id]["leftovers"] == []  # its server died with it: nothing local is left to clean


def _client_ignoring(sig: signal.Signals, run_id: str) -> Client:
    """A 30-request run started as a process that inherits ``sig`` ignored (``nohup``, a script's ``&``)."""

    def ignore() -> None:
        signal.signal(sig, signal.SIG_IGN)

    return Client("run", *BASE, "--max-requests", "30", "--rate", "20", "--port", str(free_port()),
                  "--experiment-id", run_id, preexec=ignore)


def _assert_all_thirty_completed(run_id: str) -> None:
    assert meta(run_id)["state"] == "succeeded"
    assert "30 requests completed" in meta(run_id)["message"]


def test_nohup_keeps_the_run_going_through_a_hangup():
    """An inherited SIG_IGN for SIGHUP (``nohup``) is respected: the hangup does nothing."""
    run_id = "nohup-run"
    client = _client_ignoring(signal.SIGHUP, run_id)
    try:
        client.wait_for("[INFO] Progress:", 60)
        client.proc.send_signal(signal.SIGHUP)
        assert client.finish(60) == 0, client.text[-2000:]
    finally:
        client.kill()
    _assert_all_thirty_completed(run_id)


def test_an_inherited_sigint_ignore_is_kept_from_the_first_moment():
    """A client started with SIGINT ignored (a script's background job) ignores it throughout: before
    this, a SIGINT in its first moments was ignored and one after its handlers were in stopped the run."""
    run_id = "ignored-int-run"
    client = _client_ignoring(signal.SIGINT, run_id)
    try:
        client.read_for(0.25)
        client.proc.send_signal(signal.SIGINT)  # pre-flight, or the supervisor starting
        client.wait_for("[INFO] Progress:", 60)
        client.proc.send_signal(signal.SIGINT)  # the run under way
        assert client.finish(60) == 0, client.text[-2000:]
    finally:
        client.kill()
    assert "Stopping the run" not in client.text
    _assert_all_thirty_completed(run_id)


@contextlib.contextmanager
def _tmpfs(path, size: str, *options: str):
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        from tests.support.services import require

        require(False, f"cannot mount a tmpfs for the full/read-only state dir test: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_read_only_state_dir_is_one_clear_error_and_nothing_runs(tmp_path):
    port = free_port()
    state = tmp_path / "ro-state"
    with _tmpfs(state, "1m", "ro"):
        env = dict(os.environ, SWEEPDECK_STATE_DIR=str(state))
        client = Client("run", *BASE, "--max-requests", "5", "--port", str(port), "--experiment-id", "ro-run", env=env)
        rc = client.finish(30)
    assert rc == 3, client.text
    assert "Run store writable" in client.text and "Traceback" not in client.text
    assert not listening(port)


def test_state_dir_filling_up_stops_the_run_with_one_clear_line(tmp_path):
    port = free_port()
    state = tmp_path / "small-state"
    with _tmpfs(state, "52m"):
        env = dict(os.environ, SWEEPDECK_STATE_DIR=str(state))
        client = Client("run", *BASE, "--max-requests", "20000", "--rate", "20", "--port", str(port),
                        "--experiment-id", "full-run", env=env)
        try:
            client.wait_for("[INFO] Progress:", 60)
            pid = int((state / "runs" / "full-run" / "handle").read_text().split("PID=", 1)[1].split()[0])
            filler = state / "filler"
            subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "count=60"], capture_output=True)
            rc = client.finish(30)
        finally:
            client.kill()
        assert eventually(lambda: gone(pid) and not listening(port), 10)
        assert rc == 1, client.text[-2000:]
        assert "Traceback" not in client.text
        assert "Cannot write" in client.text and "No space left on device" in client.text
        import json

        final = json.loads((state / "runs" / "full-run" / "meta.json").read_text())
        assert final["state"] == "failed" and "cannot write" in final["message"].lower(), final
    assert not runs_dir().exists() or not (runs_dir() / "full-run").exists()


def _signal_masks(pid: int) -> str:
    """Whether SIGINT is ignored, caught or blocked in process ``pid`` now (from /proc)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            fields = dict(line.split(":", 1) for line in fh.read().splitlines() if ":" in line)
    except OSError:
        return "process gone"
    bit = 1 << (signal.SIGINT - 1)
    return ", ".join(f"SIGINT {word}: {bool(int(fields[key].strip(), 16) & bit)}"
                     for key, word in (("SigIgn", "ignored"), ("SigCgt", "caught"), ("SigBlk", "blocked")))


@pytest.mark.parametrize("delay", [0.25, 0.33, 0.6, 1.0, 1.6])
def test_ctrl_c_is_honoured_from_the_first_moment_of_a_launch(delay):
    """Issue 11: a Ctrl+C 0.33 s after launch was once ignored and the run went on to completion. The run here
    would finish in about a second; whenever the SIGINT comes, it must not: the client stops, nothing is left."""
    port = free_port()
    run_id = f"early-int-{int(delay * 1000)}"
    client = Client("run", *BASE, "--max-requests", "3", "--rate", "50", "--port", str(port), "--experiment-id", run_id)
    try:
        client.read_for(delay)
        assert client.proc.poll() is None, client.text[-2000:]
        masks = _signal_masks(client.proc.pid)  # for the failure message: was SIGINT ignored or caught then?
        client.proc.send_signal(signal.SIGINT)
        rc = client.finish(30)
    finally:
        client.kill()
    shown = client.text if len(client.text) < 4000 else f"{client.text[:2000]}\n[…]\n{client.text[-2000:]}"
    assert rc != 0, f"the SIGINT {delay} s after starting was not honoured ({masks}):\n{shown}"
    assert "Traceback" not in client.text, shown
    if not (runs_dir() / run_id).exists():
        return  # stopped in pre-flight: nothing was created
    # never run to the end: stopped. A client stopped while its supervisor was still starting leaves the
    # run to it; the supervisor then records the stop itself (within the 10 s)
    assert eventually(lambda: meta(run_id).get("state") == "cancelled", 10), meta(run_id)
    sup = _supervisor_pid(run_id)
    assert eventually(lambda: (not sup or gone(sup)) and not listening(port), 10), (sup, listening(port))
