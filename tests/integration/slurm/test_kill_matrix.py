"""Runs outlive their viewer, on SLURM: a client killed in every phase of a run leaves nothing behind.

{SIGINT, SIGTERM, SIGHUP, SIGKILL} × {starting, server up, workload running,
finishing} × {``sweepdeck run --backend slurm``, the TUI in tmux}, plus
``sweepdeck alvis connect`` while the job waits and while it serves. Real
processes throughout: the client, the run's supervisor, sshd, the SLURM
daemons, the job and the simulator in it. Within 10 s of the signal no job of
the run is left in squeue, the tunnel's local port is closed, the supervisor
and everything in its session are gone, the run store says how the run ended
(cancelled; succeeded when the workload had just completed), and every server
log line the client showed is in the run's ``events.jsonl``.

The cases share the session's cluster and run side by side (each in a world of
its own: profile, job name, port, state dir): the module's ``matrix`` fixture
starts every selected case at once, a few at a time, and each test waits for
its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from backends.events import Endpoint, Phase, Progress
from tests.integration.slurm.lifecycle import (
    SIM,
    Squeue,
    TuiApp,
    World,
    eventually,
    gone,
    kill_tree_of_supervisors,
    listening,
    session_members,
    shown_lines,
    tui_lines,
)
from tests.support.services import require_binary

pytestmark = [pytest.mark.services, pytest.mark.slow]

SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL]
#: Cases running at once. Each is a client, a supervisor, a job and a simulator (and, for the TUI, tmux and a
#: Textual app). Measured on a loaded 2-core machine: 4 or 6 at a time take the same ~2.5 min (the cases wait
#: more than they compute), but with 6 the slowest cleanup came within 1 s of the 10 s bound; with 4, 5 s.
WORKERS = int(os.environ.get("SWEEPDECK_KILL_MATRIX_WORKERS", "4"))
#: Seconds from the signal to "nothing of the run is left".
BOUND = 10.0
#: Seconds from the signal until the TUI's process is gone.
APP_EXIT = 5.0


@dataclass(frozen=True)
class Stage:
    """How to bring a run to a phase, and how to see that it is there."""

    profile: dict[str, Any]
    requests: int = 20000
    rate: float = 5
    marker: str = ""  # the headless client's line that says the run is in the phase
    reached: Callable[[list], bool] | None = None  # the same, from the run's events (the TUI case)


def _server_starting(events: list) -> bool:
    return any(isinstance(e, Phase) and e.kind == "server" and e.state == "STARTING" for e in events)


def _serving(events: list) -> bool:
    return any(isinstance(e, Endpoint) and e.reachable for e in events)


def _working(events: list) -> bool:
    return any(isinstance(e, Progress) and e.completed >= 1 for e in events)


def _workload_done(events: list) -> bool:
    return any(isinstance(e, Progress) and e.total and e.done >= e.total for e in events)


WORKLOAD = {"run_workload": True}
QUICK = {"run_workload": True, "container": f"{SIM} --startup-delay 0.2 --speed 0"}
#: The headless clients' phases: "starting" is a job SLURM holds (PENDING, JobHeldUser).
HEADLESS = {
    "starting": Stage({"sbatch_args": ["--hold"]}, marker=": PENDING (JobHeldUser)"),
    "server-up": Stage({}, marker="[INFO] Endpoint ready"),
    "workload": Stage(WORKLOAD, marker="[INFO] Progress:"),
    "finishing": Stage(QUICK, requests=3, rate=50, marker="[INFO] Progress: 3/3 done"),
}
ALVIS = {
    "starting": Stage({"sbatch_args": ["--hold"]}, marker="is pending (JobHeldUser)"),
    "server-up": Stage({}, marker="✓ Connection successful!"),
}
#: The TUI's phases: "starting" is a running job whose server is still loading (a slow container start).
TUI = {
    "starting": Stage({"container": f"{SIM} --startup-delay 600"}, reached=_server_starting),
    "server-up": Stage({}, reached=_serving),
    "workload": Stage(WORKLOAD, reached=_working),
    "finishing": Stage(QUICK, requests=3, rate=50, reached=_workload_done),
}
STAGES = {"run": HEADLESS, "alvis": ALVIS, "tui": TUI}
CASES = [(client, phase, sig) for client, stages in STAGES.items() for phase in stages for sig in SIGNALS]


def _case_id(case: tuple) -> str:
    client, phase, sig = case
    return f"{client}-{phase}-{sig.name}"


@dataclass
class Outcome:
    """What one case saw; ``problems`` is empty when everything held."""

    problems: list[str] = field(default_factory=list)
    took: float | None = None  # seconds from the signal until nothing of the run was left
    exited: float | None = None  # seconds from the signal until the client process was gone
    timeline: dict[str, float] = field(default_factory=dict)  # part of the run → seconds until it was gone
    context: str = ""

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)


class Matrix:
    """Runs the selected cases a few at a time on the session's cluster."""

    def __init__(self, cluster, root: Path, cases: list[tuple]) -> None:
        self.cluster = cluster
        self.root = root
        self.squeue = Squeue(cluster)
        self.env = dict(os.environ)
        self.worlds: list[World] = []
        self.tmux: list[TuiApp] = []
        self.pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="kill-case")
        self.futures: dict[tuple, Future] = {case: self.pool.submit(self._run, case) for case in _interleaved(cases)}

    def outcome(self, case: tuple) -> Outcome:
        return self.futures[case].result(timeout=900)

    def close(self) -> None:
        for fut in self.futures.values():
            fut.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)
        for app in self.tmux:
            app.tmux.kill()
        kill_tree_of_supervisors(self.root)
        for world in self.worlds:
            world.cancel_jobs()

    # --------------------------------------------------------------- one case
    def _run(self, case: tuple) -> Outcome:
        client, phase, sig = case
        stage = STAGES[client][phase]
        name = f"k{client[0]}-{phase}-{sig.name[3:].lower()}"
        world = World(self.cluster, self.root / name, name, base_env=self.env, **stage.profile)
        self.worlds.append(world)
        outcome = Outcome()
        try:
            if client == "tui":
                self._tui(world, stage, phase, sig, outcome)
            else:
                self._headless(world, client, stage, phase, sig, outcome)
        except Exception as exc:  # the test reports it
            outcome.problems.append(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-2000:]}")
        finally:
            world.cancel_jobs()
        return outcome

    def _left(self, world: World, job: str, sup: int) -> dict[str, str]:
        """What of the run is still there (what → how it looks)."""
        left = {}
        state = self.squeue.state(job)
        if state is not None:
            left["job"] = f"job {job} {state}"
        if listening(world.port):
            left["tunnel"] = f"a listener on the tunnel port {world.port}"
        if sup and not gone(sup):
            left["supervisor"] = f"the supervisor {sup}"
        members = session_members(sup) if sup else []
        if members:
            left["session"] = f"processes {members} of the supervisor's session"
        return left

    def _wait_clean(self, world: World, job: str, sup: int, began: float, outcome: Outcome,
                    also: Callable[[], dict[str, str]] = dict) -> None:
        """Wait (up to the bound) until nothing of the run is left; note when each part went."""
        left: dict[str, str] = {}
        seen: set[str] = set()

        def clean() -> bool:
            nonlocal left
            left = {**also(), **self._left(world, job, sup)}
            now = time.monotonic() - began
            for what in seen - set(left):
                outcome.timeline.setdefault(what, now)
            seen.update(left)
            return not left

        ok = eventually(clean, max(0.0, began + BOUND - time.monotonic()), 0.1)
        outcome.took = time.monotonic() - began
        outcome.check(ok, f"left {BOUND:g} s after the signal: {', '.join(left.values())}")

    @staticmethod
    def _run_facts(world: World, run_id: str, outcome: Outcome) -> tuple[str, int]:
        assert eventually(lambda: world.supervisor_pid(run_id) and world.meta(run_id).get("job_id"), 120), \
            f"run {run_id} never recorded its supervisor and job: {world.meta(run_id)}"
        return str(world.meta(run_id)["job_id"]), world.supervisor_pid(run_id)

    def _check_store(self, world: World, run_id: str, phase: str, shown: list[str], outcome: Outcome,
                     prefix: bool = False) -> dict:
        final = world.meta(run_id)
        expected = ("succeeded",) if phase == "finishing" else ("cancelled",)
        outcome.check(final.get("state") in expected, f"the run store says {final.get('state')!r} "
                      f"({final.get('message')!r}), not {' or '.join(expected)}")
        outcome.check(not final.get("supervisor"), f"meta.json still names a supervisor: {final.get('supervisor')}")
        saved = world.saved_lines(run_id)
        if prefix:  # the TUI cuts lines at the panel's width
            missing = [line for line in shown if not any(s.startswith(line) for s in saved)]
        else:
            missing = [line for line in shown if line not in saved]
        outcome.check(not missing, f"{len(missing)} of {len(shown)} log lines shown but not saved: {missing[:3]}")
        return final

    # ------------------------------------------------------- headless clients
    def _headless(self, world: World, client: str, stage: Stage, phase: str, sig: signal.Signals,
                  outcome: Outcome) -> None:
        if client == "run":
            proc = world.run("--max-requests", str(stage.requests), "--rate", f"{stage.rate:g}")
        else:
            proc = world.sweepdeck("alvis", "connect", "--profile", world.name, "-m", "qwen-1.5b")
        try:
            assert eventually(lambda: bool(world.run_ids()), 120), f"no run was made:\n{proc.text[-3000:]}"
            run_id = world.run_ids()[0]
            job, sup = self._run_facts(world, run_id, outcome)
            proc.wait_for(stage.marker, 180)
            shown = shown_lines(proc.text)
            proc.proc.send_signal(sig)
            began = time.monotonic()
            self._wait_clean(world, job, sup, began, outcome)
            rc = proc.finish(30)
        finally:
            proc.kill()
        outcome.context = proc.text[-3000:]
        final = self._check_store(world, run_id, phase, shown, outcome)
        if sig == signal.SIGKILL:
            outcome.check(rc == -signal.SIGKILL, f"exit code {rc} after SIGKILL")
            if final.get("state") == "cancelled":
                outcome.check("last client is gone" in final.get("message", "").lower(),
                              f"the run store's message does not say why: {final.get('message')!r}")
            return
        outcome.check("Traceback" not in proc.text, "a traceback was printed")
        if client == "alvis" and sig != signal.SIGHUP:
            expected = {0}  # Ctrl+C is how a serving session ends
        else:
            expected = {128 + sig} | ({0} if phase == "finishing" else set())
        outcome.check(rc in expected, f"exit code {rc}, expected {sorted(expected)}")
        if final.get("state") == "cancelled":
            outcome.check(f"stopped by {sig.name}".lower() in final.get("message", "").lower(),
                          f"the run store's message does not name {sig.name}: {final.get('message')!r}")

    # ------------------------------------------------------------- the TUI
    def _tui(self, world: World, stage: Stage, phase: str, sig: signal.Signals, outcome: Outcome) -> None:
        app = TuiApp(world, f"sdk-kill-{os.getpid()}-{world.name}")
        self.tmux.append(app)
        try:
            tui = app.start()
            app.launch(stage.requests, stage.rate)
            run_id = app.run_id()
            job, sup = self._run_facts(world, run_id, outcome)
            assert stage.reached is not None
            assert eventually(lambda: stage.reached(world.events(run_id)), 180, 0.2), \
                f"the run never got to {phase}:\n{app.tmux.screen()}"
            screen = app.tmux.screen()
            shown = tui_lines(screen)
            os.kill(tui, sig)
            began = time.monotonic()
            # the app's own exit is timed by a watcher of its own: the cleanup checks below (squeue, sockets)
            # take seconds on a loaded machine and would add their time to the app's
            exited = threading.Event()

            def watch_exit() -> None:
                while not gone(tui) and time.monotonic() - began < BOUND:
                    time.sleep(0.02)
                if gone(tui):
                    outcome.exited = time.monotonic() - began
                exited.set()

            threading.Thread(target=watch_exit, daemon=True).start()

            def app_left() -> dict[str, str]:
                return {} if exited.is_set() and outcome.exited is not None else {"app": f"the TUI (pid {tui})"}

            self._wait_clean(world, job, sup, began, outcome, also=app_left)
            # the bound for the app itself: a client that is told to go is gone within 5 s
            outcome.check(outcome.exited is not None and outcome.exited <= APP_EXIT,
                          f"the TUI took {outcome.exited} s to exit after {sig.name} (bound {APP_EXIT:g} s)")
            outcome.context = screen
        finally:
            app.tmux.kill()
        self._check_store(world, run_id, phase, shown, outcome, prefix=True)


def _interleaved(cases: list[tuple]) -> list[tuple]:
    """The cases taking turns by client: the TUI cases (the heaviest) are spread over the run, not bunched."""
    by_client: dict[str, list[tuple]] = {}
    for case in cases:
        by_client.setdefault(case[0], []).append(case)
    queues = sorted(by_client.values(), key=len, reverse=True)
    out: list[tuple] = []
    while any(queues):
        for queue in queues:
            if queue:
                out.append(queue.pop(0))
    return out


def _selected(request) -> list[tuple]:
    """The cases of this module's tests that this session will run, in their order."""
    out = []
    for item in request.session.items:
        if item.module is request.module and hasattr(item, "callspec") and "case" in item.callspec.params:
            out.append(item.callspec.params["case"])
    return out


@pytest.fixture(scope="module")
def matrix(cluster, tmp_path_factory, request):
    require_binary("/usr/bin/tmux", "tmux")
    m = Matrix(cluster, tmp_path_factory.mktemp("kills"), _selected(request))
    try:
        yield m
    finally:
        m.close()
        _report(request, m)


def _report(request, m: Matrix) -> None:
    """How long the cleanup took after each signal (in the terminal summary)."""
    done = {case: fut.result() for case, fut in m.futures.items()
            if fut.done() and not fut.cancelled() and fut.exception() is None}
    took = {case: o.took for case, o in done.items() if o.took is not None}
    exited = {case: o.exited for case, o in done.items() if o.exited is not None}
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if not took or reporter is None:
        return
    lines = [f"SLURM kill matrix, {WORKERS} cases at a time: {_figures(took)}, from the signal to nothing left"]
    if exited:
        lines.append(f"  the TUI process itself gone: {_figures(exited)}")
    slowest = max(took, key=lambda case: took[case])
    steps = sorted(done[slowest].timeline.items(), key=lambda item: item[1])
    lines.append(f"  slowest, {_case_id(slowest)}: " + ", ".join(f"{what} gone at {t:.1f} s" for what, t in steps))
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)


def _figures(seconds: dict[tuple, float]) -> str:
    values = sorted(seconds.values())
    p95 = values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
    slowest = max(seconds, key=lambda case: seconds[case])
    return (f"{len(values)} cases, p50 {statistics.median(values):.2f} s, p95 {p95:.2f} s, "
            f"max {values[-1]:.2f} s ({_case_id(slowest)})")


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_client_killed_in_any_phase_leaves_nothing(matrix, case):
    outcome = matrix.outcome(case)
    assert not outcome.problems, "\n".join(outcome.problems) + "\n--- the client showed:\n" + outcome.context

