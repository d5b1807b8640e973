"""The TUI as a client of its runs, in a real terminal (tmux): killed, or its terminal gone.

Whatever ends the app — a signal, SIGKILL, ``tmux kill-server`` (the same as an
SSH drop) — it is gone within 5 s, and the run it showed is stopped and cleaned
up by its supervisor unless it was detached; a detached run goes on.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from backends.procs import free_port
from tests.integration.supervisor.support import ROOT, SCRIPT, Client, eventually, gone, group_members, listening
from tests.support.services import require_binary
from tests.support.tmux import Tmux

pytestmark = pytest.mark.slow

PHASES = {
    # phase -> (simulator arguments, what in the run's events says it is in that phase)
    "starting": (["--startup-delay", "30"], lambda kinds: ("Phase", "server", "starting") in kinds),
    "server-up": ([], lambda kinds: "Endpoint" in kinds),
    "workload": ([], lambda kinds: "Progress" in kinds),
    "finishing": (["--shutdown-delay", "6"], lambda kinds: ("Phase", "server", "stopping") in kinds),
}
SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL]


@pytest.fixture
def tmux(tmp_path):
    require_binary("/usr/bin/tmux", "tmux")
    if not SCRIPT.exists():
        pytest.skip(f"{SCRIPT} is not installed (pip install -e .)")
    t = Tmux(f"sweepdeck-kill-{os.getpid()}-{time.monotonic_ns()}")
    yield t
    t.kill()


class App:
    """sweepdeck in tmux on a private config and state dir."""

    def __init__(self, tmux: Tmux, tmp_path: Path, sim_args: list[str] | None = None) -> None:
        self.tmux = tmux
        self.port = free_port()
        self.state = Path(os.environ["SWEEPDECK_STATE_DIR"])
        config = tmp_path / "config.yaml"
        command = ["python", "-m", "backends.sim", "serve", "--startup-delay", "0.05", *(sim_args or [])]
        quoted = ", ".join(f'"{c}"' if c != "python" else f'"{os.sys.executable}"' for c in command)
        config.write_text(f"local:\n  server: command\n  port: {self.port}\n  command: [{quoted}]\n")
        env = {"SWEEPDECK_STATE_DIR": str(self.state), "HOME": os.environ["HOME"],
               "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"), "TERM": "xterm-256color", "PYTHONPATH": str(ROOT)}
        self.command = " ".join(["exec", "env"] + [f"{k}={v}" for k, v in env.items()]
                                + [str(SCRIPT), "--config", str(config)])

    def start(self) -> int:
        self.tmux("new-session", "-d", "-s", "s", "-x", "120", "-y", "36", self.command)
        pid = int(self.tmux("display", "-p", "-t", "s", "#{pane_pid}").stdout.strip())
        self.tmux.wait_for("sweepdeck", 30)
        return pid

    def launch(self, requests: int = 20000) -> None:
        """The quick command, then the wizard's steps, then launch (as a user types them)."""
        self.tmux.keys(":")
        self.tmux.wait_for("Quick command")
        self.tmux.keys(f"qwen-1.5b chatbot max_requests={requests} rate=20", literal=True)
        self.tmux.keys("Enter")
        self.tmux.wait_for("[3 vLLM review]", 20)
        self.tmux.keys("F8")
        self.tmux.wait_for("[4 Summary]")
        self.tmux.keys("F8")
        self.tmux.wait_for("CHECKS PASSED", 30)
        self.tmux.keys("l")

    def run_dir(self) -> Path:
        assert eventually(lambda: any((self.state / "runs").glob("*/meta.json")), 30), "no run was made"
        return next((self.state / "runs").glob("*/meta.json")).parent

    def wait_phase(self, run_dir: Path, phase: str) -> None:
        from backends.events import Phase
        from backends.store import RunDir

        def kinds() -> set:
            out: set = set()
            for e in RunDir(run_dir).events():
                out.add(type(e).__name__)
                if isinstance(e, Phase):
                    out.add(("Phase", e.unit, e.state))
            return out

        assert eventually(lambda: PHASES[phase][1](kinds()), 60, 0.1), f"the run never got to {phase}"


def _meta(run_dir: Path) -> dict:
    import json

    return json.loads((run_dir / "meta.json").read_text())


def _pids(run_dir: Path) -> tuple[int, int]:
    session = dict(line.split("=", 1) for line in (run_dir / "handle").read_text().splitlines() if "=" in line)
    return int(session["PID"]), int((_meta(run_dir).get("supervisor") or {}).get("pid") or 0)


def _all_gone(pid: int, sup: int, port: int) -> bool:
    return gone(pid) and not group_members(pid) and (not sup or gone(sup)) and not listening(port)


@pytest.mark.parametrize("phase", list(PHASES))
@pytest.mark.parametrize("sig", SIGNALS, ids=[s.name for s in SIGNALS])
def test_tui_killed_in_any_phase_leaves_nothing(tmux, tmp_path, sig, phase):
    app = App(tmux, tmp_path, PHASES[phase][0])
    tui = app.start()
    app.launch(requests=3 if phase == "finishing" else 20000)
    run_dir = app.run_dir()
    app.wait_phase(run_dir, phase)
    pid, sup = _pids(run_dir)
    os.kill(tui, sig)
    assert eventually(lambda: gone(tui), 5), f"the app survived {sig.name}:\n{tmux.screen()}"
    assert eventually(lambda: _all_gone(pid, sup, app.port), 10), "the run's processes or port were left"
    expected = ("succeeded", "cancelled") if phase == "finishing" else ("cancelled",)
    assert _meta(run_dir)["state"] in expected, _meta(run_dir)


def test_terminal_loss_with_a_live_run_exits_and_cleans_up(tmux, tmp_path):
    app = App(tmux, tmp_path)
    tui = app.start()
    app.launch()
    run_dir = app.run_dir()
    app.wait_phase(run_dir, "workload")
    pid, sup = _pids(run_dir)
    tmux("kill-server", check=False)  # what an SSH drop does to the terminal
    assert eventually(lambda: gone(tui), 5), "the app outlived its terminal"
    assert eventually(lambda: _all_gone(pid, sup, app.port), 10)
    assert _meta(run_dir)["state"] == "cancelled"


def test_terminal_loss_when_idle_exits(tmux, tmp_path):
    app = App(tmux, tmp_path)
    tui = app.start()
    tmux.wait_for("No runs yet", 30)
    tmux("kill-server", check=False)
    assert eventually(lambda: gone(tui), 5), "the idle app outlived its terminal"


def test_terminal_loss_after_a_detach_leaves_the_run_going(tmux, tmp_path):
    app = App(tmux, tmp_path)
    app.start()
    app.launch()
    run_dir = app.run_dir()
    app.wait_phase(run_dir, "workload")
    tmux.keys("q")
    tmux.wait_for("Detach")
    tmux.keys("d")  # detach: the app leaves, the run goes on
    assert eventually(lambda: not tmux.alive(), 10)
    pid, sup = _pids(run_dir)
    assert not gone(pid) and not gone(sup) and _meta(run_dir)["state"] == "detached"
    # a new session attaches to it; then its terminal dies: the detached run is not stopped
    tui = app.start()
    tmux.wait_for("detached", 20)
    tmux.keys("a")
    tmux.wait_for("[VLLM", 30)
    tmux("kill-server", check=False)
    assert eventually(lambda: gone(tui), 5)
    before = _completed(run_dir)
    assert eventually(lambda: _completed(run_dir) > before + 3, 20), "the detached workload stopped"
    assert not gone(pid) and not gone(sup)
    stop = Client("attach", run_dir.name, "--stop")
    assert stop.finish(30) == 0, stop.text
    assert eventually(lambda: _all_gone(pid, sup, app.port), 10)


def _completed(run_dir: Path) -> int:
    from backends.events import Progress
    from backends.store import RunDir

    done = 0
    for event in RunDir(run_dir).events():
        if isinstance(event, Progress):
            done = event.completed
    return done
