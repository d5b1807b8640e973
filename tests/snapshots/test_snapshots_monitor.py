"""SVG snapshots of the run monitor (running, with an alert) and the recovery dialog.

At 80×24 and 160×48; deterministic: fixed date and clock, scripted events with
fixed timestamps, no live timing. Update with
``pytest tests/snapshots/test_snapshots_monitor.py --snapshot-update``.
"""

from __future__ import annotations

import time

import pytest
from textual.widgets import Input

from tests.tui.monitor_support import Gate, ScriptedBackend, make_app, make_spec, oom_script, running_script, wait_for
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
