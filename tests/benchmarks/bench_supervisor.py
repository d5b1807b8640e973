#!/usr/bin/env python3
"""The run supervisor as a user meets it: cleanup after a client dies, attach to a big live run, event-log cost.

Run by hand (not collected by pytest)::

    PYTHONPATH=$PWD .venv/bin/python tests/benchmarks/bench_supervisor.py [--only kill,attach,overhead]

Real processes throughout, on the local backend with the built-in simulator,
in a private state dir (``SWEEPDECK_STATE_DIR``) and config file. Every
headless client is ``python -m tui.cli ...`` on its own pseudo-terminal (a
user's terminal; ``PYTHONUNBUFFERED`` is removed from its environment, as in a
user's shell), read by a thread of this script as fast as it comes.

1. **kill** — ``sweepdeck run`` (simulator, a workload at 20 req/s) until it
   prints ``Progress:`` (the workload is running), then SIGKILL (default 20
   runs) or SIGTERM (20 runs, interleaved) of that client. Timed from the
   signal until nothing of the run is left, polled every ~10 ms: the server
   (the process guard) and every member of its process group gone, the
   supervisor gone, the port no longer accepting connections. Also: when the
   supervisor logged that it noticed, when ``meta.json`` said the final state,
   when the client exited (SIGTERM: it waits for the cleanup).
2. **attach** — a run whose server writes 1,000,000 lines (80–200 chars, ⅓ on
   stderr) as fast as a pipe takes them, then starts the simulator and prints a
   numbered ``bench-tick`` line every 20 ms (with its wall-clock time); the
   run is started with ``sweepdeck run --detach-on-exit`` and detached with
   SIGINT. Then, alternating, each round:

   * ``sweepdeck attach RUN`` on a pty: time until it prints ``Following``
     and until it prints a tick emitted after that; its peak RSS (``VmHWM``).
   * the simple alternative, ``tail -n +1 -f events.jsonl`` on the same kind of
     pty: every saved record, then the new ones (time to a fresh tick).
   * the TUI (``SweepdeckApp`` headless, ``run_test``) in a fresh process:
     the runs list shows the run, then ``open_run`` (what ``a``/Enter do) until
     the monitor's log shows a tick emitted after the attach began; its RSS.

   The server is a wrapper (``--flood-server``, this file) that floods and
   then ``exec``\\ s ``python -m backends.sim serve`` with the arguments the
   local backend gave it (profile ``server: command``); the ticks come from a
   child in the server's process group.
3. **overhead** — :class:`tests.support.flood.FloodBackend` (the same lines,
   ``--chunk`` 450 per read: about one 64 KiB pipe read of the local backend)
   run (a) by its supervisor process
   (:class:`backends.supervisor.launcher.ProcessLauncher`), the lines read back
   and decoded by a :class:`backends.supervisor.client.RunLink` in this process
   (what every client does), and (b) by :class:`backends.session.Session` in
   this process with no supervisor (the events handed to a callback). Both
   write the run's ``events.jsonl`` and feed the diagnosis. Best of 3
   alternating rounds; end to end (launch → result) and steady (first line →
   last line); CPU seconds of every process involved. Then one more supervised
   run with ``--burst`` 2,000 lines (~280 KiB) per read: the supervisor sends a
   client at most about one socket buffer (212,992 bytes here) per turn of its
   event loop, so a backend that hands over more than that per read leaves
   every client behind, however fast it reads (it gets a snapshot instead of
   the lines; the lines stay in ``events.jsonl``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import pty
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
THIS = str(Path(__file__).resolve())
PY = sys.executable

TICK = re.compile(rb"bench-tick (\d+) emitted=(\d+\.\d+)")
TICK_EVERY = 0.02
SKIPPED = "earlier log lines are in the run's events.jsonl"  # the notice of a snapshot (a client fell behind)
KILL_ARGS = ["--model", "qwen-1.5b", "--yes", "--sim-arg=--startup-delay=0.05", "--max-requests", "20000",
             "--rate", "20"]


# ------------------------------------------------------------------ shared helpers
# the process and port checks are the supervisor tests' own (the same "nothing left" they assert)
from backends.procs import free_port  # noqa: E402 - after the path is set
from tests.integration.supervisor.support import gone, group_members, listening  # noqa: E402 - after the path is set


def state_runs() -> Path:
    return Path(os.environ["SWEEPDECK_STATE_DIR"]) / "runs"


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def meta(run_id: str) -> dict:
    return read_json(state_runs() / run_id / "meta.json")


def server_pid(run_id: str) -> int:
    try:
        text = (state_runs() / run_id / "session").read_text()
    except OSError:
        return 0
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    return int(fields.get("PID") or 0)


def supervisor_pid(run_id: str) -> int:
    return int((meta(run_id).get("supervisor") or {}).get("pid") or 0)








def vm_hwm_mb(pid: int) -> float:
    """Peak RSS of a live process (``VmHWM``; 0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0




def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def load_average() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def wait_until(predicate: Callable[[], bool], seconds: float, what: str, step: float = 0.05) -> None:
    end = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError(f"{what}: not after {seconds:.0f} s")
        time.sleep(step)


# --------------------------------------------------------------- a client on a pty


class PtyClient:
    """A command whose stdout and stderr are a pseudo-terminal, drained by a thread.

    Keeps only the last 64 KiB of output; records when each watched marker first
    appeared, and (once ``live_after`` has appeared) the first tick line emitted
    after that moment.
    """

    def __init__(self, argv: list[str], *, markers: tuple[str, ...] = (), live_after: str | None = None,
                 fresh_since: float | None = None) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 48, 160, 0, 0))
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, cwd=ROOT,
                                     close_fds=True)
        os.close(slave)
        self.master = master
        self.markers = [m.encode() for m in markers]
        self.seen: dict[str, float] = {}
        self.live_after = live_after.encode() if live_after else None
        self.live: tuple[float, int, float] | None = None  # (seen at, tick number, emitted at, wall)
        self.bytes = 0
        self.newlines = 0
        self.tail = b""
        self._after = b""  # output after live_after, not yet split into lines
        # a tick is fresh when emitted after this wall time (default: when live_after appeared)
        self.fresh_since = fresh_since
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            while True:
                try:
                    chunk = os.read(self.master, 1 << 16)
                except OSError:  # EIO: every writer closed the pty
                    break
                if not chunk:
                    break
                self._take(chunk, time.monotonic())
        finally:
            self.ended.set()

    def _take(self, chunk: bytes, now: float) -> None:
        window = self.tail[-256:] + chunk
        self.bytes += len(chunk)
        self.newlines += chunk.count(b"\n")
        self.tail = (self.tail + chunk)[-65536:]
        start = None
        for marker in self.markers:
            key = marker.decode()
            if key in self.seen or marker not in window:
                continue
            self.seen[key] = now
            if marker == self.live_after:
                if self.fresh_since is None:
                    self.fresh_since = time.time()
                start = window[window.index(marker):]
        if self.live_after is None or self.live is not None:
            return
        if start is not None:
            self._after = start
        elif self.live_after.decode() in self.seen:
            self._after += chunk
        else:
            return
        self._scan_live(now)

    def _scan_live(self, now: float) -> None:
        cut = self._after.rfind(b"\n") + 1
        whole, self._after = self._after[:cut], self._after[cut:]
        for match in TICK.finditer(whole):
            emitted = float(match.group(2))
            if emitted >= (self.fresh_since or 0.0):  # written after the client said it follows
                self.live = (now, int(match.group(1)), emitted, time.time())
                self._after = b""
                return

    def wait_for(self, marker: str, seconds: float) -> float:
        end = time.monotonic() + seconds
        while marker not in self.seen:
            if time.monotonic() > end or (self.ended.is_set() and marker not in self.seen):
                raise TimeoutError(f"{marker!r} not seen after {seconds:.0f} s; exit {self.proc.poll()}; "
                                   f"last output:\n{self.tail[-1500:].decode(errors='replace')}")
            time.sleep(0.01)
        return self.seen[marker]

    def wait_live(self, seconds: float) -> tuple[float, int, float, float]:
        end = time.monotonic() + seconds
        while self.live is None:
            if time.monotonic() > end or self.ended.is_set():
                raise TimeoutError(f"no live tick after {seconds:.0f} s:\n{self.tail[-1500:].decode(errors='replace')}")
            time.sleep(0.005)
        return self.live

    def finish(self, seconds: float = 30) -> int | None:
        try:
            code = self.proc.wait(seconds)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.ended.wait(5)
        with contextlib.suppress(OSError):
            os.close(self.master)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.finish(10)


def sweepdeck(config: Path, *args: str) -> list[str]:
    """The argv of the headless client (the same as the ``sweepdeck`` script runs)."""
    return [PY, "-m", "tui.cli", "--config", str(config), *args]


def write_config(path: Path, local: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"default_backend": "local", "local": local}))
    return path


# ------------------------------------------------------------------------- 1. kill


def supervisor_noticed(run_id: str) -> float | None:
    """Wall time of the supervisor's "the last client is gone" log line (ms resolution), if any."""
    try:
        text = (state_runs() / run_id / "supervisor.log").read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if "the last client is gone" in line or "cancel (stopped by" in line:
            stamp = line[:23]
            with contextlib.suppress(ValueError):
                return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


class Leftovers:
    """What of one run is still there: cheap checks every poll, a /proc scan only when it may be done."""

    def __init__(self, server: int, supervisor: int, port: int) -> None:
        self.server = server
        self.supervisor = supervisor
        self.port = port
        self.members = set(group_members(server)) | {server}

    def server_gone(self) -> bool:
        if not all(gone(pid) for pid in self.members):
            return False
        extra = group_members(self.server)  # anything the group started later
        self.members |= set(extra)
        return not extra

    def supervisor_gone(self) -> bool:
        return gone(self.supervisor)

    def port_closed(self) -> bool:
        return not listening(self.port)


def one_kill(config: Path, sig: signal.Signals, index: int, poll: float) -> dict[str, Any]:
    port = free_port()
    run_id = f"bench-kill-{sig.name.lower()}-{index}-{os.getpid()}"
    client = PtyClient(sweepdeck(config, "run", *KILL_ARGS, "--port", str(port), "--experiment-id", run_id),
                       markers=("[INFO] Progress:",))
    try:
        client.wait_for("[INFO] Progress:", 120)
        left = Leftovers(server_pid(run_id), supervisor_pid(run_id), port)
        assert left.server and left.supervisor and not gone(left.server), (run_id, left.server, left.supervisor)
        wall = time.time()
        began = time.monotonic()
        client.proc.send_signal(sig)
        times = watch_cleanup(left, client, run_id, began, poll)
    finally:
        client.kill()
    noticed = supervisor_noticed(run_id)
    times["noticed"] = noticed - wall if noticed else None
    times["state"] = meta(run_id).get("state")
    times["exit"] = client.proc.returncode
    return times


def watch_cleanup(left: Leftovers, client: PtyClient, run_id: str, began: float, poll: float) -> dict[str, Any]:
    """Poll every ``poll`` s until nothing of the run is left; when each part went."""
    checks: dict[str, Callable[[], bool]] = {
        "server": left.server_gone, "supervisor": left.supervisor_gone, "port": left.port_closed,
        "client": lambda: client.proc.poll() is not None,
        "final": lambda: meta(run_id).get("state") in ("cancelled", "succeeded", "failed"),
    }
    when: dict[str, Any] = {}
    deadline = began + 60
    while True:
        now = time.monotonic()
        for name, check in checks.items():
            if name not in when and check():
                when[name] = time.monotonic() - began
        if all(k in when for k in ("server", "supervisor", "port")):
            when["all"] = max(when["server"], when["supervisor"], when["port"])
            if ("client" in when and "final" in when) or now > began + when["all"] + 10:
                return when
        elif now > deadline:
            when["all"] = None
            when["left"] = {"server": not left.server_gone(), "supervisor": not left.supervisor_gone(),
                            "port": not left.port_closed()}
            return when
        time.sleep(max(0.0, poll - (time.monotonic() - now)))


def bench_kill(config: Path, runs: int, poll: float) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {"SIGKILL": [], "SIGTERM": []}
    for i in range(runs):
        for sig in (signal.SIGKILL, signal.SIGTERM):
            r = one_kill(config, sig, i, poll)
            results[sig.name].append(r)
            print(f"  {sig.name} #{i + 1:>2}: all gone {fmt_s(r['all'])} (server {fmt_s(r.get('server'))}, "
                  f"supervisor {fmt_s(r.get('supervisor'))}, port {fmt_s(r.get('port'))}; noticed "
                  f"{fmt_s(r.get('noticed'))}, meta {r['state']} at {fmt_s(r.get('final'))}, client exit "
                  f"{r['exit']} at {fmt_s(r.get('client'))}) load {load_average()}", flush=True)
    return results


def fmt_s(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


# ----------------------------------------------------------------------- 2. attach


def flood_server(n: int, rest: list[str]) -> None:
    """The server of the attach benchmark: ``n`` lines, then a tick child, then ``exec`` the simulator."""
    from tests.support.flood import POOL, POOL_SIZE, STREAMS

    chunk = 2000
    for start in range(0, n, chunk):
        out: list[str] = []
        err: list[str] = []
        for i in range(start, min(n, start + chunk)):
            j = i % POOL_SIZE
            (err if STREAMS[j] == "err" else out).append(POOL[j])
        if out:
            write_all(1, ("\n".join(out) + "\n").encode())
        if err:
            write_all(2, ("\n".join(err) + "\n").encode())
    if os.fork() == 0:  # the ticks: a child in the server's process group (the group's cleanup ends it)
        with contextlib.suppress(BrokenPipeError, OSError):
            k = 0
            while True:
                k += 1
                os.write(1, f"bench-tick {k} emitted={time.time():.6f}\n".encode())
                time.sleep(TICK_EVERY)
        os._exit(0)
    argv = [PY, "-m", "backends.sim", "serve", *rest, "--startup-delay", "0.05"]
    os.execv(PY, argv)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def saved_counts(run_id: str) -> tuple[int, int, int]:
    """(log lines, records, bytes) in the run's events.jsonl."""
    path = state_runs() / run_id / "events.jsonl"
    lines = records = 0
    with open(path, "rb") as fh:
        for raw in fh:
            records += 1
            if raw.startswith(b'{"type":"LogBatch"') or b'"type":"LogBatch"' in raw[:40]:
                lines += len(json.loads(raw).get("lines") or [])
            elif b'"type":"LogLine"' in raw[:40]:
                lines += 1
    return lines, records, path.stat().st_size


def make_big_run(config: Path, n: int) -> str:
    """A detached local run whose log holds ``n`` flood lines and grows by a tick every 20 ms."""
    port = free_port()
    run_id = f"bench-attach-{os.getpid()}"
    began = time.monotonic()
    client = PtyClient(sweepdeck(config, "run", "--model", "qwen-1.5b", "--yes", "--detach-on-exit",
                                 "--max-requests", "1000000", "--rate", "5", "--port", str(port),
                                 "--experiment-id", run_id),
                       markers=("[INFO] Progress:", "bench-tick", SKIPPED))
    try:
        client.wait_for("bench-tick", 900)
        client.wait_for("[INFO] Progress:", 300)
        skipped = "; it fell behind and got a snapshot" if SKIPPED in client.seen else ", every one"
        print(f"  the run's own client (sweepdeck run) printed {client.newlines:,} lines{skipped}; the first tick "
              f"after {time.monotonic() - began:.1f} s", flush=True)
        client.proc.send_signal(signal.SIGINT)  # --detach-on-exit: detach, the run goes on
        code = client.finish(60)
    except BaseException:
        client.kill()
        raise
    wait_until(lambda: meta(run_id).get("state") == "detached", 30, "the run to be detached")
    print(f"  detached (the client exited with {code})", flush=True)
    return run_id


def attach_headless(config: Path, run_id: str) -> dict[str, Any]:
    client = PtyClient(sweepdeck(config, "attach", run_id), markers=("[INFO] Following",),
                       live_after="[INFO] Following")
    peak = 0.0
    try:
        end = time.monotonic() + 600
        while client.live is None and time.monotonic() < end and not client.ended.is_set():
            peak = max(peak, vm_hwm_mb(client.proc.pid))
            time.sleep(0.05)
        seen, tick, emitted, wall = client.wait_live(1)
        peak = max(peak, vm_hwm_mb(client.proc.pid))
        cpu = cpu_seconds(client.proc.pid)
        following = client.seen["[INFO] Following"] - client.started
        client.proc.send_signal(signal.SIGINT)  # attach: Ctrl+C only leaves
        client.finish(30)
    except BaseException:
        client.kill()
        raise
    return {"following": following, "live": seen - client.started, "tick_latency": wall - emitted,
            "rss": peak, "cpu": cpu, "bytes": client.bytes, "exit": client.proc.returncode}


def attach_tail(run_id: str) -> dict[str, Any]:
    """The simple alternative: ``tail -n +1 -f events.jsonl`` until it shows a tick written after it started."""
    path = state_runs() / run_id / "events.jsonl"
    size = path.stat().st_size
    client = PtyClient(["tail", "-n", "+1", "-f", str(path)], markers=("bench-tick",), live_after="bench-tick",
                       fresh_since=time.time())
    try:
        seen, tick, emitted, wall = client.wait_live(600)
        rss = vm_hwm_mb(client.proc.pid)
    finally:
        client.kill()
    return {"live": seen - client.started, "tick_latency": wall - emitted, "rss": rss, "bytes": client.bytes,
            "size": size}


def attach_tui(config: Path, run_id: str) -> dict[str, Any]:
    began = time.monotonic()
    out = subprocess.run([PY, THIS, "--tui-attach", run_id, "--config", str(config)], capture_output=True,
                         text=True, cwd=ROOT, timeout=900)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"TUI attach failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    result = json.loads(lines[-1])
    result["process"] = time.monotonic() - began
    return result


async def tui_attach_child(run_id: str, config: str) -> dict[str, Any]:
    """In a fresh process: the app lists the run, opens it, until the monitor shows a fresh tick."""
    from config.settings import load_settings
    from tui.app import SweepdeckApp
    from tui.screens.monitor import RunMonitorScreen
    from tui.screens.runs import RunsScreen
    from tui.widgets.logview import LogView

    started = time.perf_counter()
    app = SweepdeckApp(load_settings(config), install_signals=False)
    result: dict[str, Any] = {}
    async with app.run_test(size=(160, 48)):
        await until(lambda: isinstance(app.screen, RunsScreen) and any(r.id == run_id for r in app.screen.rows), 120)
        result["listed"] = time.perf_counter() - started
        row = next(r for r in app.screen.rows if r.id == run_id)
        wall = time.time()
        cpu = time.process_time()
        t0 = time.perf_counter()
        app.open_run(row)
        await until(lambda: isinstance(app.screen, RunMonitorScreen) and bool(app.screen.query(LogView)), 60)
        view = app.screen.query_one(LogView)
        await until(lambda: view.line_count > 0, 600)
        result["first_lines"] = time.perf_counter() - t0
        tick = await until_fresh_tick(view, wall)
        await refreshed(app)
        result["current"] = time.perf_counter() - t0
        result["cpu"] = time.process_time() - cpu
        shown = [int(m.group(1)) for m in (TICK.search(text.encode()) for text in view.visible_text()) if m]
        result["shown"] = bool(shown) and max(shown) >= tick  # that tick, or a later one, is on screen
        result.update(kept=view.line_count, total=view.total, rss=vm_hwm_mb(os.getpid()), tick=tick)
    return result


async def until(predicate: Callable[[], bool], seconds: float) -> None:
    end = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError(f"not after {seconds} s")
        await asyncio.sleep(0.005)


async def until_fresh_tick(view: Any, wall: float) -> int:
    """The monitor's newest line is a tick emitted after ``wall``; its number."""
    end = time.monotonic() + 600
    while time.monotonic() < end:
        if view.line_count:
            match = TICK.search(view.line(view.total - 1).text.encode())
            if match and float(match.group(2)) >= wall - TICK_EVERY:
                return int(match.group(1))
        await asyncio.sleep(0.005)
    raise TimeoutError("no fresh tick in the monitor")


async def refreshed(app: Any) -> None:
    """The next screen refresh has happened (what was written is on screen)."""
    shown = asyncio.Event()
    app.call_after_refresh(shown.set)
    app.screen.refresh()
    await shown.wait()


def bench_attach(work: Path, n: int, rounds: int, tui: bool) -> dict[str, Any]:
    config = write_config(work / "flood.yaml", {
        "server": "command", "command": [PY, THIS, "--flood-server", str(n)], "ready_timeout": 900.0,
    })
    run_id = make_big_run(config, n)
    try:
        lines, records, size = saved_counts(run_id)
        print(f"  {run_id}: {lines:,} log lines in {records:,} records, events.jsonl {size / 1e6:.0f} MB; "
              f"load {load_average()}", flush=True)
        out: dict[str, Any] = {"saved_lines": lines, "records": records, "bytes": size,
                               "headless": [], "tail": [], "tui": []}
        for i in range(rounds):
            r = attach_headless(config, run_id)
            out["headless"].append(r)
            print(f"  round {i + 1}: attach: following after {r['following']:.2f} s, fresh tick after "
                  f"{r['live']:.2f} s (CPU {r['cpu']:.2f} s), peak RSS {r['rss']:.0f} MB, "
                  f"{r['bytes'] / 1e6:.0f} MB printed; load {load_average()}", flush=True)
            t = attach_tail(run_id)
            out["tail"].append(t)
            print(f"  round {i + 1}: tail -f: fresh tick after {t['live']:.2f} s, {t['bytes'] / 1e6:.0f} MB printed",
                  flush=True)
            if tui:
                u = attach_tui(config, run_id)
                out["tui"].append(u)
                print(f"  round {i + 1}: TUI: listed after {u['listed']:.2f} s; open → first lines "
                      f"{u['first_lines']:.2f} s, → fresh tick on screen {u['current']:.2f} s (CPU {u['cpu']:.2f} s; "
                      f"on screen: {u['shown']}); "
                      f"{u['kept']:,} lines kept; peak RSS {u['rss']:.0f} MB; load {load_average()}", flush=True)
            if meta(run_id).get("state") != "detached":
                raise RuntimeError(f"the run is {meta(run_id).get('state')} after an attach: it should go on")
    finally:
        stop_run(config, run_id)
    return out


def stop_run(config: Path, run_id: str) -> None:
    subprocess.run(sweepdeck(config, "attach", run_id, "--stop"), cwd=ROOT, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=120)


# --------------------------------------------------------------------- 3. overhead


async def overhead_supervised(n: int, chunk: int) -> dict[str, Any]:
    from backends.store import RunStore
    from backends.supervisor.client import start_run
    from backends.supervisor.launcher import ProcessLauncher
    from tests.support.flood import FloodBackend

    spec = flood_spec("sup")
    count = [0, 0.0, 0.0]  # lines, first at, last at

    def on_lines(lines: list) -> None:
        if not count[0]:
            count[1] = time.perf_counter()
        count[0] += len(lines)
        count[2] = time.perf_counter()

    cpu = time.process_time()
    began = time.perf_counter()
    link = await start_run(FloodBackend(n, chunk), spec, store=RunStore(), launcher=ProcessLauncher(),
                           on_events=on_lines, on_event=lambda e: None)
    resets: list[int] = []  # a snapshot instead of the records: the supervisor found this client behind
    link.on_reset = lambda: resets.append(count[0])
    result = await asyncio.wait_for(link.result(), 900)
    ended = time.perf_counter()
    client_cpu = time.process_time() - cpu
    supervisor_cpu = cpu_seconds(link.pid or 0)  # it lingers a moment for its clients: still there
    link.close()
    assert result["outcome"] == "succeeded", result
    return {"lines": count[0], "total": ended - began, "steady": count[2] - count[1],
            "size": (state_runs() / spec.experiment_id / "events.jsonl").stat().st_size,
            "cpu": client_cpu + supervisor_cpu, "client_cpu": client_cpu, "supervisor_cpu": supervisor_cpu,
            "resets": resets}


async def overhead_in_process(n: int, chunk: int) -> dict[str, Any]:
    from backends.events import LogLine
    from backends.session import Session
    from backends.store import RunStore
    from tests.support.flood import FloodBackend

    spec = flood_spec("inp")
    count = [0, 0.0, 0.0]

    def on_event(event: Any) -> None:
        if type(event) is LogLine:
            if not count[0]:
                count[1] = time.perf_counter()
            count[0] += 1
            count[2] = time.perf_counter()

    cpu = time.process_time()
    began = time.perf_counter()
    session = Session(FloodBackend(n, chunk), spec, store=RunStore(), on_event=on_event)
    await session.launch()
    result = await session.follow()
    ended = time.perf_counter()
    assert result.outcome == "succeeded", result
    return {"lines": count[0], "total": ended - began, "steady": count[2] - count[1],
            "size": (state_runs() / spec.experiment_id / "events.jsonl").stat().st_size,
            "cpu": time.process_time() - cpu}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process so far."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def flood_spec(tag: str) -> Any:
    from config.catalog import load_catalogs
    from config.spec import build_spec

    return build_spec(load_catalogs(), "qwen-1.5b", experiment_id=f"bench-{tag}-{os.getpid()}-{time.monotonic_ns()}")


async def bench_overhead(n: int, rounds: int, chunk: int, burst: int) -> dict[str, Any]:
    runs: dict[str, Any] = {"supervised": [], "in_process": [], "chunk": chunk}
    for i in range(rounds):
        for mode, fn in (("supervised", overhead_supervised), ("in_process", overhead_in_process)):
            r = await fn(n, chunk)
            runs[mode].append(r)
            print(f"  round {i + 1} {mode:<10}: {overhead_text(n, r)}; load {load_average()}", flush=True)
    if burst:
        r = await overhead_supervised(n, burst)
        runs["burst"] = dict(r, chunk=burst)
        print(f"  {burst:,} lines per read, supervised: {overhead_text(n, r)}; load {load_average()}", flush=True)
    return runs


def overhead_text(n: int, r: dict) -> str:
    behind = f", {len(r['resets'])} snapshot(s) instead (the client was found behind)" if r.get("resets") else ""
    return (f"{r['lines']:,} lines received{behind}, {n / r['total']:,.0f} lines/s end to end ({r['total']:.2f} s), "
            f"{r['lines'] / max(r['steady'], 1e-9):,.0f} lines/s steady; CPU {cpu_text(r)}; "
            f"events.jsonl {r['size'] / 1e6:.0f} MB")


# ------------------------------------------------------------------------- report


def cpu_text(r: dict) -> str:
    if "client_cpu" in r:
        return f"{r['cpu']:.2f} s (client {r['client_cpu']:.2f} s + supervisor {r['supervisor_cpu']:.2f} s)"
    return f"{r['cpu']:.2f} s"


def row(label: str, value: str) -> None:
    print(f"{label:<76} {value}")


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def listed(rows: list[dict], key: str) -> str:
    return ", ".join(f"{r[key]:.2f}" for r in rows)


def report(kill: dict | None, attach: dict | None, overhead: dict | None, n: int) -> None:
    print()
    print(f"{'what':<76} figure")
    print("-" * 140)
    if kill:
        for name, rows in kill.items():
            done = [r["all"] for r in rows if r["all"] is not None]
            failed = len(rows) - len(done)
            line = (f"p50 {pct(done, 50):.2f} s, p95 {pct(done, 95):.2f} s, max {max(done):.2f} s"
                    if done else "no run cleaned up")
            row(f"{name} of the client → nothing left ({len(rows)} runs)",
                line + (f"; {failed} NOT cleaned up in 60 s" if failed else ""))
            parts = []
            for key, label in (("noticed", "supervisor noticed"), ("server", "server group gone"),
                               ("port", "port closed"), ("supervisor", "supervisor gone"), ("final", "meta final"),
                               ("client", "client exited")):
                vals = [r[key] for r in rows if r.get(key) is not None]
                if vals and not (name == "SIGKILL" and key == "client"):
                    parts.append(f"{label} p50 {statistics.median(vals):.2f} s")
            row("  of which", "; ".join(parts))
            states = sorted({str(r["state"]) for r in rows})
            row("  final states", ", ".join(states))
    if attach:
        h, t, u = attach["headless"], attach["tail"], attach["tui"]
        row(f"attach to a live run with {attach['saved_lines']:,} saved log lines",
            f"events.jsonl {attach['bytes'] / 1e6:.0f} MB")
        row("  sweepdeck attach (pty): following / fresh tick (median)",
            f"{median(h, 'following'):.2f} s / {median(h, 'live'):.2f} s (rounds: {listed(h, 'live')})")
        row("  sweepdeck attach: its CPU seconds until then (median) / peak RSS (max)",
            f"{median(h, 'cpu'):.2f} s / {max(r['rss'] for r in h):.0f} MB")
        row("  tail -n +1 -f events.jsonl (pty): fresh tick (median)",
            f"{median(t, 'live'):.2f} s (rounds: {listed(t, 'live')})")
        if u:
            row("  TUI: open → fresh tick on screen (median)",
                f"{median(u, 'current'):.2f} s (rounds: {listed(u, 'current')}); "
                f"first lines {median(u, 'first_lines'):.2f} s; CPU {median(u, 'cpu'):.2f} s")
            row("  TUI peak RSS (max) / lines kept", f"{max(r['rss'] for r in u):.0f} MB / {u[0]['kept']:,}")
    if overhead:
        modes = {m: overhead[m] for m in ("supervised", "in_process")}
        best = {m: max(rows, key=lambda r: n / r["total"]) for m, rows in modes.items()}
        steady = {m: max(rows, key=lambda r: r["lines"] / max(r["steady"], 1e-9)) for m, rows in modes.items()}
        s, i = best["supervised"], best["in_process"]
        rate = {m: r["lines"] / max(r["steady"], 1e-9) for m, r in steady.items()}
        row(f"event log, {n:,} lines, {overhead['chunk']} per read: supervisor → socket → client decode",
            f"{n / s['total']:,.0f} lines/s end to end, {rate['supervised']:,.0f} steady")
        row("  in-process Session, no supervisor",
            f"{n / i['total']:,.0f} lines/s end to end, {rate['in_process']:,.0f} steady")
        row("  ratio supervised / in-process (best of each)",
            f"{i['total'] / s['total']:.0%} end to end, {rate['supervised'] / rate['in_process']:.0%} steady")
        cpu_s = min(r["cpu"] for r in overhead["supervised"])
        cpu_i = min(r["cpu"] for r in overhead["in_process"])
        row("  CPU seconds, all processes (least of the rounds)",
            f"supervised {cpu_s:.2f} s, in-process {cpu_i:.2f} s: {cpu_s / cpu_i:.2f}×")
        skipped = [n - r["lines"] for r in overhead["supervised"] if r["lines"] != n]
        if skipped:
            row("  lines the client did not get (found behind: a snapshot instead)", str(skipped))
        burst = overhead.get("burst")
        if burst:
            row(f"  the same, supervised, {burst['chunk']:,} lines (~{burst['chunk'] * 141 // 1000} KB) per read",
                f"{burst['lines']:,} of {n:,} lines received, {len(burst['resets'])} snapshot(s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="kill,attach,overhead", help="comma-separated: kill, attach, overhead")
    parser.add_argument("--kills", type=int, default=20, help="runs per signal (SIGKILL and SIGTERM interleaved)")
    parser.add_argument("--poll", type=float, default=0.01, help="seconds between cleanup checks")
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--attach-rounds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the overhead comparison")
    parser.add_argument("--chunk", type=int, default=450,
                        help="log lines the backend hands over per read (450 ≈ the local backend's 64 KiB pipe read)")
    parser.add_argument("--burst", type=int, default=2000,
                        help="one more supervised run with this many lines per read (0: none)")
    parser.add_argument("--no-tui", action="store_true", help="skip the TUI attach")
    parser.add_argument("--keep", action="store_true", help="keep the state dir (~1.3 GB of run logs) at the end")
    parser.add_argument("--tui-attach", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--config", default=None, help=argparse.SUPPRESS)
    if sys.argv[1:2] == ["--flood-server"]:  # the attach benchmark's server (argv from the local backend follows)
        flood_server(int(sys.argv[2]), sys.argv[3:])
        return 0
    args = parser.parse_args()
    if args.tui_attach:
        print(json.dumps(asyncio.run(tui_attach_child(args.tui_attach, args.config))))
        return 0
    os.environ.pop("PYTHONUNBUFFERED", None)  # the clients get a user's environment (their stdout is a pty)
    work = Path(tempfile.mkdtemp(prefix="bench-supervisor-"))
    os.environ["SWEEPDECK_STATE_DIR"] = str(work / "state")
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(ROOT) + (os.pathsep + path if path else "")
    only = set(args.only.split(","))
    print(f"run supervisor benchmark: python {sys.version.split()[0]}, {os.cpu_count()} cpus, load {load_average()} "
          f"(a shared machine); state dir {work / 'state'}", flush=True)
    try:
        results = run_parts(work, only, args)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report(*results, args.lines)
    print(f"load average at the end: {load_average()}")
    return 0


def run_parts(work: Path, only: set[str], args: argparse.Namespace) -> tuple[Any, Any, Any]:
    kill = attach = overhead = None
    if "kill" in only:
        print(f"1. client killed while the workload runs: {args.kills} × SIGKILL and {args.kills} × SIGTERM",
              flush=True)
        kill = bench_kill(write_config(work / "sim.yaml", {"server": "sim"}), args.kills, args.poll)
    if "attach" in only:
        print(f"2. attach to a live run with {args.lines:,} log lines", flush=True)
        attach = bench_attach(work, args.lines, args.attach_rounds, not args.no_tui)
    if "overhead" in only:
        print(f"3. event-log overhead, {args.lines:,} lines, {args.rounds} alternating rounds", flush=True)
        overhead = asyncio.run(bench_overhead(args.lines, args.rounds, args.chunk, args.burst))
    return kill, attach, overhead


if __name__ == "__main__":
    sys.exit(main())
