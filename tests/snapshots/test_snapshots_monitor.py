"""SVG snapshots of the run monitor and the recovery dialog.

The monitor: running, with an alert, a slurm run, a Tekton matrix sweep.

At 80×24 and 160×48; deterministic: fixed date and clock, scripted events with
fixed timestamps, no live timing. Update with
``pytest tests/snapshots/test_snapshots_monitor.py --snapshot-update``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Input

from tests.snapshots import SIZES
from tests.tui.monitor_support import (
    FIXED_NOW,
    SLURM_TUNNEL,
    Gate,
    ScriptedBackend,
    make_app,
    make_spec,
    oom_script,
    running_script,
    slurm_script,
    slurm_spec,
    wait_for,
)
from tui.screens.monitor import RunMonitorScreen
from tui.screens.recovery import RecoveryDialog


async def settle(pilot) -> None:
    await pilot.pause()
    for screen in pilot.app.screen_stack:
        for box in screen.query(Input):
            box.cursor_blink = False
    await pilot.pause()


def _monitor_ready(app, check):
    def ready() -> bool:
        screen = app.screen
        return isinstance(screen, RunMonitorScreen) and screen.batches > 0 and check(screen)

    return ready


@pytest.mark.parametrize("size", SIZES)
def test_monitor_running(snap_compare, size):
    app = make_app(ScriptedBackend(running_script(Gate())))

    async def run_before(pilot):
        app.launch_spec(make_spec())
        await wait_for(pilot, _monitor_ready(app, lambda s: s.query_one("#metrics-panel").metrics is not None
                                             and s.query_one("#metrics-panel").progress is not None))
        await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_monitor_with_alert(snap_compare, size):
    app = make_app(ScriptedBackend(oom_script()), monitor_factory=lambda c: RunMonitorScreen(c, auto_recovery=False))

    async def run_before(pilot):
        ctrl = app.launch_spec(make_spec())
        await wait_for(pilot, _monitor_ready(app, lambda s: ctrl.state == "failed" and s.alerts))
        app.clear_notifications()
        await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_recovery_dialog(snap_compare, size):
    app = make_app(ScriptedBackend(oom_script()))

    async def run_before(pilot):
        app.launch_spec(make_spec())
        await wait_for(pilot, lambda: isinstance(app.screen, RecoveryDialog))
        app.clear_notifications()
        await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_monitor_log_search_and_scrolled(snap_compare, size):
    app = make_app(ScriptedBackend(running_script(Gate())))

    async def run_before(pilot):
        app.launch_spec(make_spec())
        await wait_for(pilot, _monitor_ready(app, lambda s: s.logview.line_count == 40))
        await pilot.press("slash", *"step 2", "enter")
        await pilot.press("n")
        await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("stage", ["broken", "up"])
@pytest.mark.parametrize("size", SIZES)
def test_monitor_slurm_run(snap_compare, size, stage):
    """A slurm job serving through its tunnel: while the SSH link is broken, and after it came back."""
    gates = {name: Gate() for name in ("pending", "serving", "broken", "reconnecting", "up")}
    for name in ("pending", "serving", "broken", "reconnecting", "up"):
        if name == stage:
            break
        gates[name].open()
    app = make_app(ScriptedBackend(slurm_script(gates), name="slurm"))

    async def run_before(pilot):
        app.launch_spec(slurm_spec())

        def reached(screen) -> bool:
            phase = screen.query_one("#status-view").phase(SLURM_TUNNEL)
            view = screen.logview
            # and the following view has scrolled to its last line (else the scrollbar's place is a race)
            return (phase is not None and phase.state == stage and view.line_count == (6 if stage == "broken" else 8)
                    and view.scroll_y >= view.max_scroll_y)

        await wait_for(pilot, _monitor_ready(app, reached))
        app.clear_notifications()
        await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


# ---------------------------------------------------------------- a Tekton matrix sweep

MATRIX_FILE = Path(__file__).resolve().parents[1] / "fixtures" / "tekton" / "tekton-poc-pipelinerun-matrix.yaml"


class MatrixScriptedBackend(ScriptedBackend):
    """The scripted backend with the handle the Tekton backend gives a matrix PipelineRun."""

    async def launch(self, spec, store=None):
        run = await super().launch(spec, store)
        run.handle = {"namespace": "mert", "pipelinerun": "experiment-matrix-run", "tps": [],
                      "tasks": [f"t-{i}" for i in range(36)],
                      "matrix": {"tasks": 4, "taskruns": 36, "combinations": 36, "params": {}}}
        return run

    def describe(self, spec, handle, meta):
        """As the Tekton backend describes a matrix run."""
        from backends.tekton.launch_matrix import is_matrix, matrix_facts

        return matrix_facts(spec, handle, meta) if spec is not None and is_matrix(spec) else None


def matrix_script(gate: Gate) -> list:
    """The unrolled matrix, first batch of two tasks: 9 TaskRuns done, 9 running; step logs with their combination."""
    from backends.events import LogLine, Phase, Progress

    t = FIXED_NOW

    steps: list = [Phase("PipelineRun experiment-matrix-run", "Running", "Tasks Completed: 0", kind="pipelinerun",
                         started=t, ts=t)]
    for i in range(9):
        steps.append(Phase(f"run-experiment-inf-sche-none-yaml-{i}", "Succeeded", kind="task", started=t + 1,
                           finished=t + 12, ts=t + 12))
        steps.append(Phase(f"run-experiment-inf-sche-prefix-yaml-{i}", "Running", kind="task",
                           started=t + 13, ts=t + 13))
    src = "task/run-experiment-inf-sche-prefix-yaml-8 question_len=1000,output_len=1000"
    steps.append([LogLine(text, "out", src, ts=t + 14 + n) for n, text in enumerate((
        "[run-experiment-inf-sche-prefix-yaml-8] starting question_len=1000 output_len=1000",
        "deploying the stack (gaiePluginConfig=inf-sche-prefix.yaml)",
        "waiting for the inference pool to be ready",
    ))])
    steps.append(Progress(36, pending=18, running=9, completed=9, ts=t + 20))
    steps.append(gate)
    return steps


@pytest.mark.parametrize("size", SIZES)
def test_monitor_matrix_run(snap_compare, size):
    """A matrix PipelineRun: its facts in the header (no engine fields), done/total visible at 80×24."""
    from backends.store import RunStore
    from backends.tekton.launch_matrix import MatrixFile, matrix_spec

    app = make_app(MatrixScriptedBackend(matrix_script(Gate()), name="tekton"))
    spec = matrix_spec(MatrixFile.load(MATRIX_FILE), profile=None, namespace="mert", store=RunStore())

    async def run_before(pilot):
        app.launch_spec(spec)
        await wait_for(pilot, _monitor_ready(app, lambda s: s.query_one("#metrics-panel").progress is not None
                                             and s.logview.line_count == 3))
        app.clear_notifications()
        await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)
