"""A real terminal: ``sweepdeck`` in tmux, driven with send-keys, read with capture-pane.

New experiment → qwen-1.5b → preset workload → review → summary → pre-flight
→ launch on the local backend with the simulator → the endpoint and the vLLM
logs are on screen → quit with "clean up everything" → no simulator process
is left. Uses a private tmux socket (``tmux -L``) and a private state dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.support.services import require_binary
from tests.support.tmux import Tmux

ROOT = Path(__file__).resolve().parents[2]
SWEEPDECK = Path(sys.executable).parent / "sweepdeck"

pytestmark = [pytest.mark.slow]


def sim_pids(port: int) -> list[int]:
    """Simulator processes serving on ``port`` (zombies count as gone)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        if b"backends.sim" in cmd and str(port).encode() in cmd:
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def tmux(tmp_path):
    require_binary("/usr/bin/tmux", "tmux")
    if not SWEEPDECK.exists():
        pytest.skip(f"{SWEEPDECK} is not installed (pip install -e .)")
    socket = f"sweepdeck-smoke-{os.getpid()}"
    t = Tmux(socket)
    yield t
    t.kill()


def start_app(tmux: Tmux, tmp_path: Path) -> tuple[int, Path]:
    """Start sweepdeck in tmux on a private config (simulator on a free port)."""
    from backends.local import free_port

    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(f"local:\n  server: sim\n  port: {port}\n  keep_server: true\n")
    state = tmp_path / "state"
    env = {
        "SWEEPDECK_STATE_DIR": str(state),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "TERM": "xterm-256color",
        "PYTHONPATH": str(ROOT),
    }
    command = " ".join(["exec", "env"] + [f"{k}={v}" for k, v in env.items()]
                       + [str(SWEEPDECK), "--config", str(config)])
    tmux("new-session", "-d", "-s", "s", "-x", "100", "-y", "30", command)
    return port, state


def launch(tmux: Tmux, port: int) -> None:
    """Keys from the runs list to a running experiment with its endpoint on screen."""
    tmux.wait_for("No runs yet", 30)
    tmux.keys("n")
    tmux.wait_for("[1 Model]")
    tmux.keys("qwen-1.5b", literal=True)
    tmux.wait_for("Qwen/Qwen2.5-Math-1.5B")
    tmux.keys("Enter")
    tmux.wait_for("[2 Workload]")
    tmux.keys("Enter")  # the highlighted preset (chatbot)
    screen = tmux.wait_for("[3 vLLM review]")
    assert "Image (main container)" in screen and "--max-model-len" in screen
    tmux.keys("C-Right")  # ctrl+→ (f8 is the alternative for terminals that eat it)
    screen = tmux.wait_for("[4 Summary]")
    assert "EXPERIMENT:" in screen and "CORE SETTINGS" in screen
    tmux.keys("F8")
    tmux.wait_for("CHECKS PASSED", 30)
    tmux.keys("l")
    tmux.wait_for(f"http://127.0.0.1:{port}", 60)
    tmux.wait_for("[VLLM OUT]", 30)
    assert sim_pids(port), "the simulator should be running"


def wait_gone(tmux: Tmux, port: int) -> None:
    deadline = time.monotonic() + 30
    while tmux.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not tmux.alive(), "sweepdeck did not exit:\n" + tmux.screen()
    deadline = time.monotonic() + 5
    while sim_pids(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sim_pids(port) == []


def kill_leftovers(port: int) -> None:
    for pid in sim_pids(port):  # never leave one behind, even when the test fails
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


def test_launch_and_quit_in_a_real_terminal(tmux, tmp_path):
    port, state = start_app(tmux, tmp_path)
    try:
        launch(tmux, port)
        tmux.keys("q")
        tmux.wait_for("Quit sweepdeck?")
        tmux.keys("Enter")  # clean up everything (the default)
        wait_gone(tmux, port)
        meta = json.loads((next(d for d in (state / "runs").iterdir() if d.is_dir()) / "meta.json").read_text())
        assert meta["state"] in ("cancelled", "succeeded")
    finally:
        kill_leftovers(port)


def test_sigterm_in_a_real_terminal_cleans_up(tmux, tmp_path):
    port, _ = start_app(tmux, tmp_path)
    try:
        launch(tmux, port)
        pid = int(tmux("list-panes", "-t", "s", "-F", "#{pane_pid}").stdout.split()[0])
        assert b"sweepdeck" in Path(f"/proc/{pid}/cmdline").read_bytes()
        os.kill(pid, signal.SIGTERM)
        wait_gone(tmux, port)
    finally:
        kill_leftovers(port)
