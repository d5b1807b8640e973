"""Runs outlive their viewer, on SLURM: what the kill matrix, detach/attach and partition tests share.

* :class:`World` — one run's private corner of the shared test cluster: its
  own slurm profile (so its own job name), tunnel port, config file, state dir
  and XDG dirs, so cases can run side by side without seeing each other.
* :class:`Proc` — a headless client (``sweepdeck ...``) as a real process whose
  output a thread reads as it comes (a full pipe never stalls the client).
* :class:`Squeue` — one ``squeue`` call shared by every case that asks within
  a moment (many cases poll at once; the controller need not answer each).
* :class:`TuiApp` — ``sweepdeck`` in tmux on a world, launched on its slurm
  profile with the quick command, as a user types it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.integration.slurm.cluster import TestCluster
from tests.integration.slurm.conftest import ProfileFactory
from tests.support.procstate import eventually, gone, listening, session_members
from tests.support.tmux import Tmux

ROOT = Path(__file__).resolve().parents[3]
SWEEPDECK = Path(sys.executable).parent / "sweepdeck"
CMD = [str(SWEEPDECK)] if SWEEPDECK.exists() else [sys.executable, "-m", "tui.cli"]

#: The catalog's qwen-1.5b (Qwen/Qwen2.5-Math-1.5B) in models.json: ``sweepdeck run`` and the TUI find it by
#: its served name, ``alvis connect -m qwen-1.5b`` by its key.
MODELS = {
    "qwen-1.5b": {
        "path": "/mimer/NOBACKUP/Datasets/LLM/huggingface/hub/models--Qwen--Qwen2.5-Math-1.5B/snapshots/4a1b2c3/",
        "max_model_len": 4096,
        "description": "Qwen2.5 Math 1.5B",
    },
}
SIM = f"{sys.executable} -m backends.sim serve --stats-interval 0"


# ------------------------------------------------------------------ processes


def quiet_port(host: str = "127.0.0.1") -> int:
    """A free port below the kernel's ephemeral range.

    ``bind(0)`` hands out ephemeral ports, and so does every outgoing
    connection the tests make (SSH, HTTP): a tunnel port picked that way may
    be taken by a connection before the tunnel binds it.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(500):
        port = rng.randrange(20000, max(20001, low))
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        if not listening(port, host):
            return port
    raise RuntimeError("no free port below the ephemeral range")


class Proc:
    """``sweepdeck ARGS`` as a real process; a thread collects its output lines.

    Args:
        args: The command line after ``sweepdeck``.
        env: Its environment.
        preexec: Run in the child before exec (e.g. to ignore SIGHUP, as nohup does).
    """

    def __init__(self, *args: str, env: dict[str, str], preexec: Callable[[], None] | None = None) -> None:
        self.args = args
        self.proc = subprocess.Popen(CMD + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=ROOT, env=env, text=True, errors="replace",
                                     preexec_fn=preexec)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._done = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._done = True
            self._changed.notify_all()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))

    def wait_for(self, text: str, seconds: float = 60, count: int = 1) -> str:
        """Wait until ``count`` lines contain ``text``; returns the last of them."""
        end = time.monotonic() + seconds
        with self._changed:
            while True:
                found = [line for line in self.lines if text in line]
                if len(found) >= count:
                    return found[count - 1]
                left = end - time.monotonic()
                if left <= 0 or self._done:
                    why = "the client exited first" if self._done else f"not within {seconds:g} s"
                    raise AssertionError(f"{text!r} never appeared ({why}); `sweepdeck {' '.join(self.args)}` "
                                         f"said:\n{self.text[-4000:]}")
                self._changed.wait(min(left, 1.0))

    def finish(self, seconds: float = 30) -> int:
        """Wait for the exit (and the last output); returns the exit code."""
        try:
            rc = self.proc.wait(seconds)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"`sweepdeck {' '.join(self.args)}` did not exit in {seconds:g} s:\n"
                                 f"{self.text[-3000:]}") from None
        with self._changed:
            end = time.monotonic() + 5
            while not self._done and time.monotonic() < end:
                self._changed.wait(0.2)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def shown_lines(text: str) -> list[str]:
    """The server log lines a headless client printed (``[VLLM OUT] text``)."""
    return [line.split("] ", 1)[1] for line in text.splitlines()
            if line.startswith(("[VLLM OUT] ", "[VLLM ERR] ")) and "] " in line]


# ------------------------------------------------------------------ the cluster


class Squeue:
    """The cluster's queue, asked at most once per ``max_age`` seconds whoever asks (thread-safe)."""

    def __init__(self, cluster: TestCluster, max_age: float = 0.3) -> None:
        self.cluster = cluster
        self.max_age = max_age
        self._lock = threading.Lock()
        self._at = 0.0
        self._jobs: dict[str, str] = {}

    def jobs(self) -> dict[str, str]:
        """job id → state of every job still in squeue (COMPLETING ones too)."""
        with self._lock:
            if time.monotonic() - self._at > self.max_age:
                text = self.cluster.squeue("-o", "%i %T")
                self._jobs = dict(line.split(None, 1) for line in text.splitlines() if line.strip())
                self._at = time.monotonic()
            return dict(self._jobs)

    def state(self, job_id: str) -> str | None:
        return self.jobs().get(str(job_id))


# ------------------------------------------------------------------ one world per run


class World:
    """One run's private config, profile, port, state dir and environment on the shared cluster.

    Args:
        cluster: The session's test cluster.
        root: A directory of its own.
        name: The profile name (the job is ``sweepdeck-<name>``); also the run id where the client takes one.
        base_env: The environment to start from (a snapshot: threads must not read os.environ while a
            test's monkeypatch changes it).
        profile: Profile options on top of :class:`ProfileFactory`'s defaults.
    """

    def __init__(self, cluster: TestCluster, root: Path, name: str, *, base_env: dict[str, str] | None = None,
                 **profile) -> None:
        self.cluster = cluster
        self.root = root
        self.name = name
        root.mkdir(parents=True, exist_ok=True)
        self.factory = ProfileFactory(cluster, root, name)
        self.factory.local_port = self.port = quiet_port()
        # a workdir of its own, as another user's home would be: the TUI names its runs by date, model and
        # workload, so two worlds' runs may have the same id, and the job's run directory is <workdir>/<id>
        options = {"gpus": None, "container": f"{SIM} --startup-delay 0.2", "start_timeout": 300.0,
                   "ready_timeout": 300.0, "workdir": str(cluster.base / "home" / name / "runs"), **profile}
        self.config = self.factory.write(MODELS, **options)
        self.state = root / "state"
        self.env = {
            **(dict(os.environ) if base_env is None else base_env),
            "SWEEPDECK_STATE_DIR": str(self.state),
            "XDG_CONFIG_HOME": str(root / "xdg" / "config"),
            "XDG_STATE_HOME": str(root / "xdg" / "state"),
            "XDG_DATA_HOME": str(root / "xdg" / "data"),
            "XDG_CACHE_HOME": str(root / "xdg" / "cache"),
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "NO_COLOR": "1",
        }

    @property
    def job_name(self) -> str:
        return f"sweepdeck-{self.name}"

    def sweepdeck(self, *args: str, preexec: Callable[[], None] | None = None) -> Proc:
        """``sweepdeck --config CFG ARGS`` in this world."""
        return Proc("--config", str(self.config), *args, env=self.env, preexec=preexec)

    def run(self, *args: str, run_id: str | None = None, preexec: Callable[[], None] | None = None) -> Proc:
        """``sweepdeck run`` on this world's profile (the run id is the world's name unless given)."""
        return self.sweepdeck("run", "--backend", "slurm", "--profile", self.name, "--model", "qwen-1.5b", "--yes",
                              "--experiment-id", run_id or self.name, *args, preexec=preexec)

    # the run store, read as a user's next command would ------------------------------
    def run_dir(self, run_id: str | None = None) -> Path:
        return self.state / "runs" / (run_id or self.name)

    def run_ids(self) -> list[str]:
        runs = self.state / "runs"
        return sorted(p.parent.name for p in runs.glob("*/meta.json")) if runs.exists() else []

    def meta(self, run_id: str | None = None) -> dict:
        try:
            return json.loads((self.run_dir(run_id) / "meta.json").read_text())
        except (OSError, ValueError):
            return {}

    def supervisor_pid(self, run_id: str | None = None) -> int:
        return int((self.meta(run_id).get("supervisor") or {}).get("pid") or 0)

    def events(self, run_id: str | None = None) -> list:
        from backends.store import RunDir

        return list(RunDir(self.run_dir(run_id)).events())

    def saved_lines(self, run_id: str | None = None) -> list[str]:
        from backends.events import LogLine

        return [e.text for e in self.events(run_id) if isinstance(e, LogLine)]

    def vllm_out(self, run_id: str | None = None) -> Path:
        """The job's vllm.out on the cluster's shared filesystem."""
        return Path(self.meta(run_id)["run_dir"]) / "vllm.out"

    def cancel_jobs(self) -> None:
        """Never leave a job behind, whatever the test did."""
        subprocess.run(self.cluster.cmd(["scancel", "-n", self.job_name]), env=self.cluster.env,
                       capture_output=True, timeout=30)


def supervisor_status(run_dir: Path, timeout: float = 10.0) -> dict:
    """The run supervisor's ``_status`` (state, holding clients, detached), asked over its control socket."""
    from backends.supervisor.protocol import SOCKET_NAME, decode, encode

    fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)  # the socket's path may be too long for sun_path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(f"/proc/self/fd/{fd}/{SOCKET_NAME}")
            sock.sendall(encode({"op": "status"}))
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    raise AssertionError(f"the supervisor of {run_dir.name} hung up without a status")
                data += chunk
                for line in data.split(b"\n")[:-1]:
                    message = decode(line)
                    if message and message.get("type") == "_status":
                        return message
    finally:
        os.close(fd)


def lines_after(proc: Proc, marker: str, text: str) -> list[str]:
    """The client's lines containing ``text`` printed after its first line containing ``marker``."""
    lines = list(proc.lines)
    start = next((i for i, line in enumerate(lines) if marker in line), len(lines))
    return [line for line in lines[start + 1:] if text in line]


def append_lines(path: Path, lines: list[str]) -> None:
    """Append whole lines to a log the job writes too (O_APPEND: no interleaving inside a line)."""
    with open(path, "a") as fh:
        for line in lines:
            fh.write(line + "\n")
            fh.flush()


def numbered(lines: list[str], prefix: str) -> list[int]:
    """The numbers of the lines ``<prefix><n>`` in order (a repeat or a gap shows)."""
    return [int(line[len(prefix):]) for line in lines if line.startswith(prefix) and line[len(prefix):].isdigit()]


def completed_by_server(port: int) -> float:
    """Requests the server behind the tunnel says it finished (vLLM's ``request_success_total``)."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10, trust_env=False).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:request_success_total"))


def served_models(port: int) -> list[str]:
    import httpx

    r = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10, trust_env=False)
    r.raise_for_status()
    return [m["id"] for m in r.json()["data"]]


def last_progress(world: World, run_id: str | None = None) -> int:
    """Completed requests of the run's last Progress event in events.jsonl."""
    from backends.events import Progress

    done = 0
    for event in world.events(run_id):
        if isinstance(event, Progress):
            done = event.completed
    return done


# ------------------------------------------------------------------ the TUI in tmux


#: Characters the log panel draws around a line (borders, scrollbar).
_PANEL = "│▏▕▁▂▃▄▅▆▇█ "


def tui_lines(screen: str) -> list[str]:
    """The server log lines on a TUI screen (cut at the panel's width: compare as prefixes)."""
    out = []
    for row in screen.splitlines():
        m = re.search(r"\[VLLM (?:OUT|ERR)\] (.*)", row)
        if m:
            # a notification drawn over the panel's right side starts with its own border
            text = re.split(r"[▌▐▊▍▎]", m.group(1), maxsplit=1)[0].rstrip(_PANEL)
            if text:
                out.append(text)
    return out


class TuiApp:
    """``sweepdeck`` in tmux on a world's config and state dir."""

    def __init__(self, world: World, socket_name: str) -> None:
        self.world = world
        self.tmux = Tmux(socket_name)
        env = {k: world.env[k] for k in ("SWEEPDECK_STATE_DIR", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME",
                                        "XDG_CACHE_HOME", "PYTHONPATH", "HOME")}
        env["TERM"] = "xterm-256color"
        self.command = " ".join(["exec", "env", *(f"{k}={v}" for k, v in env.items()), *CMD,
                                 "--config", str(world.config)])
        self.pid = 0

    def start(self) -> int:
        self.tmux("new-session", "-d", "-s", "s", "-x", "120", "-y", "36", self.command)
        self.pid = int(self.tmux("display", "-p", "-t", "s", "#{pane_pid}").stdout.strip())
        self.tmux.wait_for("sweepdeck", 60)
        return self.pid

    def launch(self, requests: int, rate: float) -> None:
        """The quick command on the world's profile, the wizard's review and summary, pre-flight, launch."""
        t = self.tmux
        t.wait_for("No runs yet", 60)
        t.keys(":")
        t.wait_for("Quick command", 30)
        t.keys(f"qwen-1.5b chatbot max_requests={requests} rate={rate:g} on {self.world.name}", literal=True)
        t.keys("Enter")
        t.wait_for("[3 vLLM review]", 30)
        t.keys("F8")
        t.wait_for("[4 Summary]", 30)
        t.keys("F8")
        t.wait_for("CHECKS PASSED", 60)
        t.keys("l")

    def run_id(self, timeout: float = 60) -> str:
        assert eventually(lambda: bool(self.world.run_ids()), timeout), "the TUI made no run:\n" + self.tmux.screen()
        return self.world.run_ids()[0]


def kill_tree_of_supervisors(root: Path) -> None:
    """SIGKILL every supervisor whose run lives under ``root`` (a failed test must not leave one)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if b"backends.supervisor" in argv and any(a.startswith(str(root).encode()) for a in argv):
            with contextlib.suppress(OSError):
                os.kill(int(entry), signal.SIGKILL)


__all__ = [
    "MODELS", "Proc", "SIM", "Squeue", "Tmux", "TuiApp", "World", "append_lines", "completed_by_server", "eventually",
    "gone", "kill_tree_of_supervisors", "last_progress", "listening", "numbered", "quiet_port",
    "served_models", "session_members", "shown_lines", "supervisor_status", "tui_lines", "lines_after",
]
