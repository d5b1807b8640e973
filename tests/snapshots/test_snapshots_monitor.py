"""SVG snapshots of the run monitor (running, with an alert, a slurm run) and the recovery dialog.

At 80×24 and 160×48; deterministic: fixed date and clock, scripted events with
fixed timestamps, no live timing. Update with
``pytest tests/snapshots/test_snapshots_monitor.py --snapshot-update``.
"""

from __future__ import annotations

import time

import pytest
from textual.widgets import Input

from tests.tui.monitor_support import (
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

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


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
            return phase is not None and phase.state == stage and screen.logview.line_count == (6 if stage == "broken" else 8)

        await wait_for(pilot, _monitor_ready(app, reached))
        app.clear_notifications()
        await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)
