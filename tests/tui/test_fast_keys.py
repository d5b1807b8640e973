"""Keys typed faster than screens close (issue 11: "q then s quickly → NoMatches traceback, exit 1")."""

from __future__ import annotations

from textual import events

from tests.tui.monitor_support import ScriptedBackend, make_app, make_spec, ok_script, wait_for
from tui.screens.monitor import RunMonitorScreen


async def test_q_then_s_on_a_finished_run_leaves_cleanly():
    """``q`` quits (nothing is live), the ``s`` behind it must not open a save dialog on an app that is leaving."""
    app = make_app(ScriptedBackend(lambda run: ok_script()))
    async with app.run_test(size=(120, 40)) as pilot:
        app.launch_spec(make_spec())
        await wait_for(pilot, lambda: isinstance(app.screen, RunMonitorScreen) and not app.screen.controller.live, 20)
        # both keys queued before either is handled, as a fast typist's reach the app
        app.post_message(events.Key("q", "q"))
        app.post_message(events.Key("s", "s"))
        await wait_for(pilot, lambda: app.return_code is not None, 10)
    assert app.return_code == 0
    assert not any(type(s).__name__ == "TextInputDialog" for s in app.screen_stack)


async def test_after_a_stop_no_unit_runs_and_the_endpoint_is_closed():
    """Issue 11: after a stop, units showed "ready / running" with ticking timers and the endpoint "reachable"."""
    from tests.tui.monitor_support import Gate, running_script
    from tui.widgets.endpoint import EndpointPanel
    from tui.widgets.status import TERMINAL, StatusView, state_category

    gate = Gate()
    app = make_app(ScriptedBackend(running_script(gate)))
    async with app.run_test(size=(120, 40)) as pilot:
        app.launch_spec(make_spec())
        await wait_for(pilot, lambda: isinstance(app.screen, RunMonitorScreen) and gate.reached.is_set(), 20)
        screen = app.screen
        status = screen.query_one("#status-view", StatusView)
        await wait_for(pilot, lambda: status.phase("workload") is not None, 10)
        assert state_category(status.phase("server").state) == "running"
        await screen.controller.cleanup(timeout=10)
        await wait_for(pilot, lambda: screen.controller.finished is not None and not screen.controller.live, 10)
        await wait_for(pilot, lambda: all(state_category(p.state, p.detail) in TERMINAL for p in status.units), 10)
        assert all(p.finished is not None for p in status.units)  # no timer ticks on
        endpoint = screen.query_one("#endpoint-panel", EndpointPanel)
        await wait_for(pilot, lambda: endpoint.ended, 10)
        assert "reachable" not in str(endpoint.render()) and "closed" in str(endpoint.render())


def test_a_finished_run_shown_by_its_controller_has_a_duration():
    """Issue 11: a fix run relaunched in the app and finished since showed "Duration —" (the record was read
    while it ran; the controller knew when it ended)."""
    from types import SimpleNamespace

    from backends.events import Finished
    from tui.screens.runs import collect_rows

    record = SimpleNamespace(id="exp-fix", backend="local", model="m", workload="chatbot", state="running",
                             started=1000.0, finished=None, meta={"parent": "exp"})
    ctrl = SimpleNamespace(run=SimpleNamespace(id="exp-fix", spec=None, started=1000.0), spec=None, record=record,
                           state="succeeded", finished=Finished("succeeded", "done", ts=1042.0), live=False,
                           started_at=1000.0, fix=None)
    (row,) = collect_rows(None, [ctrl], records=[record])
    assert row.duration(now=5000.0) == 42.0


async def test_keys_typed_while_an_input_dialog_opens_reach_its_box():
    """Issue 11: characters typed right after an input dialog opened were sometimes lost."""
    from textual.widgets import Input

    app = make_app(ScriptedBackend(lambda run: ok_script()))
    async with app.run_test(size=(120, 40)) as pilot:
        app.launch_spec(make_spec())
        await wait_for(pilot, lambda: isinstance(app.screen, RunMonitorScreen) and not app.screen.controller.live, 20)
        for ch in "sxyz":  # s opens "save log to"; x y z come before the dialog has mounted
            app.post_message(events.Key(ch, ch))
        await wait_for(pilot, lambda: type(app.screen).__name__ == "TextInputDialog", 10)
        box = app.screen.query_one(Input)
        await wait_for(pilot, lambda: box.value.endswith("xyz"), 10)
        assert box.has_focus
        await pilot.press("!")
        assert box.value.endswith("xyz!")  # and typing goes on in order
