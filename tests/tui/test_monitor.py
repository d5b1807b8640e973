"""The run monitor in the real app, on a scripted backend (Pilot)."""

from __future__ import annotations

import json

from backends.events import Finished, LogLine, Phase
from tests.tui.monitor_support import (
    FIXED_NOW,
    SLURM_JOB,
    SLURM_TUNNEL,
    SLURM_URL,
    Gate,
    ScriptedBackend,
    log_lines,
    make_app,
    make_spec,
    running_script,
    slurm_script,
    slurm_spec,
    wait_for,
)
from tui.screens.dialogs import ConfirmDialog, QuitDialog, TextInputDialog
from tui.screens.monitor import RunMonitorScreen
from tui.widgets.endpoint import EndpointPanel
from tui.widgets.logview import LogView
from tui.widgets.metrics import MetricsPanel
from tui.widgets.status import StatusView


async def _launch(app, pilot, spec=None):
    ctrl = app.launch_spec(spec or make_spec())
    await wait_for(pilot, lambda: isinstance(app.screen, RunMonitorScreen) and app.screen.batches > 0)
    return ctrl, app.screen


async def test_endpoint_logs_metrics_and_status_appear():
    gate = Gate()
    backend = ScriptedBackend(running_script(gate))
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        ctrl, screen = await _launch(app, pilot)
        endpoint = screen.query_one(EndpointPanel)
        await wait_for(pilot,
                       lambda: endpoint.endpoint is not None and screen.query_one(MetricsPanel).metrics is not None)
        assert endpoint.endpoint.url == "http://127.0.0.1:8000"
        assert "✔ reachable" in str(endpoint.render())
        view = screen.query_one(LogView)
        assert view.line_count == 40
        await pilot.pause()
        assert view.visible_text()[-1] == "[VLLM ERR] line 000039 INFO engine step 39"
        metrics = screen.query_one(MetricsPanel)
        numbers = str(screen.query_one("#metrics-numbers").render())
        assert "44.0 ms avg" in numbers and "345 tok/s" in numbers
        assert list(metrics.history) == [310.0, 345.0]
        assert list(screen.query_one("#metrics-spark").data) == [310.0, 345.0]
        assert "Progress: 42/100 done · 2 failed · 8 running · 50 pending" in str(
            screen.query_one("#metrics-progress-label").render()
        )
        status = screen.query_one(StatusView)
        assert [p.unit for p in status.units] == ["server", "workload"]
        row = status.row_text(status.phase("workload")).plain
        assert row.startswith("▶ running") and "25s" in row  # clock is FIXED_NOW + 30, started + 5
        header = str(screen.query_one("#monitor-header").render())
        assert ctrl.id in header and "▶ running" in header
        # more lines stream in while following
        gate.open()
        await wait_for(pilot, lambda: ctrl.state == "cancelled" or not ctrl.live or True)
        await ctrl.cleanup(2.0)


async def test_log_lines_go_to_the_widget_in_batches_and_the_cap_holds():
    gate = Gate()
    script = [gate] + [log_lines(500, start=i * 500) for i in range(10)] + [Finished("succeeded", "done")]
    backend = ScriptedBackend(script)
    app = make_app(backend, log_line_cap=1000)
    calls = []
    original = LogView.write_events

    def spy(self, lines, dropped=0):
        calls.append(len(lines))
        return original(self, lines, dropped)

    LogView.write_events = spy
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            ctrl, screen = await _launch(app, pilot)
            view = screen.query_one(LogView)
            gate.open()
            await wait_for(pilot, lambda: ctrl.state == "succeeded" and view.total == 5000)
            await pilot.pause()
            assert view.line_count == 1000 and ctrl.logs.maxlen == 1000
            assert view.dropped == 4000
            assert view.visible_text()[-1].endswith("step 4999")
            assert len(calls) <= 12, calls  # one widget call per batch, never one per line
            assert sum(calls) <= 5000
            assert "oldest dropped (cap 1,000)" in view.status_text()
    finally:
        LogView.write_events = original


async def test_search_filter_wrap_pause_keys():
    gate = Gate()
    backend = ScriptedBackend(running_script(gate) + [log_lines(20, start=40), Gate()])
    app = make_app(backend)
    async with app.run_test(size=(100, 30)) as pilot:
        ctrl, screen = await _launch(app, pilot)
        view = screen.query_one(LogView)
        await wait_for(pilot, lambda: view.line_count == 40)
        await pilot.press("slash")
        await pilot.press(*"step 3")
        await pilot.press("enter")
        # "step 3" and "step 30".."step 39"
        assert view.match_count == 11
        assert "search 'step 3' 11/11" in str(screen.query_one("#log-status").render())
        await pilot.press("n")
        assert view.current_match == 1
        await pilot.press("N")
        assert view.current_match == 11
        await pilot.press("escape")  # clears the search
        assert view.search_text == ""
        await pilot.press("slash", "x")
        assert screen.query_one("#log-input").display
        await pilot.press("escape")  # closes the input, nothing searched
        assert not screen.query_one("#log-input").display and view.search_text == ""
        assert app.focused is view
        await pilot.press("f", *"err]", "enter")
        assert view.row_count == 14 and all(ln.stream == "err" for ln in view.shown_lines())
        await pilot.press("F", *"err]", "enter")
        assert view.row_count == 26 and view.filter_inverse
        await pilot.press("f", "enter")  # empty: show all
        assert view.row_count == 40
        await pilot.press("w")
        assert view.wrap
        await pilot.press("w")
        assert not view.wrap
        await pilot.press("p")
        assert view.paused
        gate.open()
        await wait_for(pilot, lambda: len(view._held) == 20)
        assert view.line_count == 40
        # the status line redraws on the view's StatusChanged message: wait for it (a busy machine)
        await wait_for(pilot, lambda: "PAUSED — 20 new lines held" in str(screen.query_one("#log-status").render()))
        await pilot.press("p")
        assert not view.paused and view.line_count == 60
        await ctrl.cleanup(2.0)


async def test_scrolled_up_the_view_counts_new_lines_until_end():
    gate = Gate()
    backend = ScriptedBackend([log_lines(200), gate, log_lines(75, start=200), Gate()])
    app = make_app(backend)
    async with app.run_test(size=(100, 30)) as pilot:
        ctrl, screen = await _launch(app, pilot)
        view = screen.query_one(LogView)
        await wait_for(pilot, lambda: view.line_count == 200)
        await pilot.pause()
        view.focus()
        await pilot.press("pageup")
        await pilot.pause()
        assert not view.following
        top = view.visible_text()[0]
        gate.open()
        await wait_for(pilot, lambda: view.line_count == 275)
        await pilot.pause()
        assert view.visible_text()[0] == top
        assert "▼ 75 new lines — End to follow" in str(screen.query_one("#log-status").render())
        await pilot.press("end")
        await pilot.pause()
        assert view.following and view.visible_text()[-1].endswith("step 274")
        await ctrl.cleanup(2.0)


async def test_save_log_under_the_run_store_and_confirm_overwrite():
    backend = ScriptedBackend(running_script(Gate()))
    app = make_app(backend)
    async with app.run_test(size=(100, 30)) as pilot:
        ctrl, screen = await _launch(app, pilot)
        view = screen.query_one(LogView)
        await wait_for(pilot, lambda: view.line_count == 40)
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, TextInputDialog))
        expected = ctrl.run.store.path / "monitor.log"
        assert app.screen.query_one("Input").value == str(expected)
        await pilot.press("enter")
        await wait_for(pilot, lambda: expected.exists())
        lines = expected.read_text().splitlines()
        assert len(lines) == 40 and lines[0] == "[VLLM ERR] line 000000 INFO engine step 0"
        # saving again to the same file asks first; "keep" leaves it alone
        view.set_filter("vllm err")
        screen._save_to(expected)
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("n")
        await pilot.pause()
        assert len(expected.read_text().splitlines()) == 40
        screen._save_to(expected)
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await wait_for(pilot, lambda: len(expected.read_text().splitlines()) == 14)
        await ctrl.cleanup(2.0)


async def test_panes_toggle_maximise_and_resize():
    backend = ScriptedBackend(running_script(Gate()))
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        ctrl, screen = await _launch(app, pilot)
        status = screen.query_one("#pane-status")
        await pilot.press("1")
        assert not status.display
        await pilot.press("1")
        assert status.display
        await pilot.press("3", "4")
        assert not screen.query_one("#monitor-side").display
        await pilot.press("3", "4")
        assert screen.query_one("#monitor-side").display
        await pilot.pause()
        top_before = screen.query_one("#monitor-top").size.height
        await pilot.press("plus")
        await pilot.pause()
        assert screen.query_one("#monitor-top").size.height > top_before
        await pilot.press("minus", "minus")
        await pilot.pause()
        assert screen.query_one("#monitor-top").size.height < top_before
        width_before = status.size.width
        await pilot.press("greater_than_sign")
        await pilot.pause()
        assert status.size.width > width_before
        screen.query_one(LogView).focus()
        await pilot.press("z")
        assert screen.maximized is screen.query_one("#pane-logs")
        await pilot.press("escape")
        assert screen.maximized is None
        assert isinstance(app.screen, RunMonitorScreen)
        await ctrl.cleanup(2.0)


async def test_overtime_alert_from_expected_duration():
    t = FIXED_NOW
    script = [Phase("task/run-workload", "Running", kind="task", started=t - 200, expected_s=60), Gate()]
    backend = ScriptedBackend(script)
    app = make_app(backend)  # clock: FIXED_NOW + 30 -> 230 s elapsed > 2 x 60 s
    async with app.run_test(size=(120, 40)) as pilot:
        ctrl, screen = await _launch(app, pilot)
        await wait_for(pilot, lambda: any(a.kind == "overtime" for a in screen.alerts))
        alert = next(a for a in screen.alerts if a.kind == "overtime")
        assert "exceeded 2× its expected duration" in alert.message
        status = screen.query_one(StatusView)
        row = status.row_text(status.phase("task/run-workload")).plain
        assert row.startswith("⚠ Running") and "OVER TIME" in row
        assert "exceeded 2×" in str(screen.query_one("#status-alerts").render())
        await ctrl.cleanup(2.0)


async def test_back_and_reopen_replays_history_and_quit_cleans_up():
    gate = Gate()
    backend = ScriptedBackend(running_script(gate))
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        ctrl, screen = await _launch(app, pilot)
        await wait_for(pilot, lambda: screen.query_one(LogView).line_count == 40)
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, RunMonitorScreen))
        app._show_monitor(ctrl)
        await wait_for(pilot, lambda: isinstance(app.screen, RunMonitorScreen) and app.screen is not screen
                       and app.screen.batches > 0)
        again = app.screen
        await wait_for(pilot, lambda: again.query_one(LogView).line_count == 40)
        assert again.query_one(EndpointPanel).endpoint is not None
        assert ctrl.live
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitDialog))
        await pilot.press("c")
        await wait_for(pilot, lambda: not app.is_running or ctrl.id in backend.cleaned, timeout=8)
    assert ctrl.id in backend.cleaned
    assert not ctrl.live
    meta = json.loads((ctrl.run.store.path / "meta.json").read_text())
    assert meta["state"] == "cancelled"


async def test_replay_of_a_finished_run_is_read_only():
    backend = ScriptedBackend(running_script() + [LogLine("bye"), Finished("succeeded", "all done", ts=FIXED_NOW + 60)])
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        ctrl, screen = await _launch(app, pilot)
        await wait_for(pilot, lambda: ctrl.state == "succeeded")
        from backends.store import RunStore
        from tui.controller import RunController

        record = RunStore().get(ctrl.id)
        replay = RunController(backend, store=app.store, record=record, registry=app.registry)
        assert replay.needs_replay
        app.push_screen(RunMonitorScreen(replay))  # the monitor loads the saved events itself
        await wait_for(pilot, lambda: isinstance(app.screen, RunMonitorScreen) and app.screen.batches > 0
                       and app.screen.query_one(LogView).line_count == 41)
        header = str(app.screen.query_one("#monitor-header").render())
        assert "✔ succeeded" in header and "replay (read-only)" in header and "1m00s" in header
        assert not replay.live


async def test_stop_run_asks_then_cancels_and_cleans_up():
    backend = ScriptedBackend(running_script(Gate()))
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        ctrl, screen = await _launch(app, pilot)
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("n")
        await pilot.pause()
        assert ctrl.live and backend.cancelled == []
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await wait_for(pilot, lambda: not ctrl.live and ctrl.id in backend.cleaned)
        assert backend.cancelled == [ctrl.id]
        assert ctrl.state == "cancelled"
        await wait_for(pilot, lambda: "⊘ cancelled" in str(screen.query_one("#monitor-header").render()))


async def test_stop_now_asks_then_cancels_without_grace():
    backend = ScriptedBackend(running_script(Gate()))
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        ctrl, screen = await _launch(app, pilot)
        await pilot.press("X")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        message = str(app.screen.query_one("#confirm-message").render())
        assert "at once, skipping the run's own clean-up steps (Tekton finally tasks)?" in message
        await pilot.press("n")
        await pilot.pause()
        assert ctrl.live and backend.cancel_calls == []
        await pilot.press("X")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await wait_for(pilot, lambda: not ctrl.live and ctrl.id in backend.cleaned)
        assert backend.cancel_calls == [(ctrl.id, False)]
        assert ctrl.state == "cancelled"


async def test_stop_run_stays_graceful():
    backend = ScriptedBackend(running_script(Gate()))
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        ctrl, screen = await _launch(app, pilot)
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await wait_for(pilot, lambda: not ctrl.live and ctrl.id in backend.cleaned)
        assert backend.cancel_calls == [(ctrl.id, True)]


async def test_tunnel_broken_and_reconnecting_read_without_colour():
    t = FIXED_NOW
    unit = "tunnel 127.0.0.1:58000"
    gate = Gate()
    script = [Phase(unit, "up", "alvis7-07:41084", kind="tunnel", ts=t),
              Phase(unit, "broken", "SSH connection to alvis2 lost", kind="tunnel", ts=t + 1), gate,
              Phase(unit, "reconnecting", "attempt 1", kind="tunnel", ts=t + 2), Gate()]
    app = make_app(ScriptedBackend(script))
    async with app.run_test(size=(120, 40)) as pilot:
        ctrl, screen = await _launch(app, pilot)
        status = screen.query_one(StatusView)
        await wait_for(pilot, lambda: status.phase(unit) is not None and status.phase(unit).state == "broken")
        row = status.row_text(status.phase(unit)).plain
        assert row.startswith("✘ broken") and "SSH connection to alvis2 lost" in row
        assert "✘ 1" in screen.query_one("#pane-status").border_title
        gate.open()
        await wait_for(pilot, lambda: status.phase(unit).state == "reconnecting")
        row = status.row_text(status.phase(unit)).plain
        assert row.startswith("↻ reconnecting") and "attempt 1" in row
        assert "↻ 1" in screen.query_one("#pane-status").border_title
        await ctrl.cleanup(2.0)


async def test_status_duration_without_a_start_uses_first_sighting():
    t = FIXED_NOW
    script = [Phase("workload", "running", "no start given", kind="workload", ts=t + 10),
              Phase("server", "exited", "exit code 1", kind="server", finished=t + 20, ts=t),
              Phase("server2", "exited", "exit code 0", kind="server", ts=t), Gate()]
    app = make_app(ScriptedBackend(script))  # clock: FIXED_NOW + 30
    async with app.run_test(size=(120, 40)) as pilot:
        ctrl, screen = await _launch(app, pilot)
        status = screen.query_one(StatusView)
        await wait_for(pilot, lambda: len(status.units) == 3)
        assert "20s" in status.row_text(status.phase("workload")).plain
        crashed = status.row_text(status.phase("server")).plain
        assert crashed.startswith("✘ exited") and "20s" in crashed
        assert status.row_text(status.phase("server2")).plain.startswith("✔ exited")
        await ctrl.cleanup(2.0)


def test_link_states_have_their_own_categories():
    from tui.widgets.status import ICONS, TERMINAL, state_category

    assert state_category("broken") == "broken" and ICONS["broken"] != ICONS["other"]
    assert state_category("reconnecting") == "retrying" and ICONS["retrying"] != ICONS["other"]
    # a broken link may come back: not a final state (its duration keeps ticking)
    assert "broken" not in TERMINAL and "retrying" not in TERMINAL
    assert state_category("SUBMITTED") == "pending"


async def test_slurm_run_job_server_tunnel_and_logs():
    """A slurm run as the backend reports it.

    PENDING (Resources) → RUNNING on a node, tunnel up → broken → reconnecting → up.
    """
    gates = {name: Gate() for name in ("pending", "serving", "broken", "reconnecting", "up")}
    backend = ScriptedBackend(slurm_script(gates), name="slurm")
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        ctrl, screen = await _launch(app, pilot, slurm_spec())
        status = screen.query_one(StatusView)
        job = f"job {SLURM_JOB}"

        def row(unit: str) -> str:
            return status.row_text(status.phase(unit)).plain

        await wait_for(pilot, lambda: status.phase(job) is not None and status.phase(job).state == "PENDING")
        assert row(job).startswith("◌ PENDING") and "Resources" in row(job)
        header = str(screen.query_one("#monitor-header").render())
        assert "slurm" in header and "gpt-oss-20b" in header

        gates["pending"].open()
        view = screen.query_one(LogView)
        endpoint = screen.query_one(EndpointPanel)
        await wait_for(pilot, lambda: endpoint.endpoint is not None and view.line_count == 6)
        assert row(job).startswith("▶ RUNNING") and "alvis7-07" in row(job)
        assert row("server alvis7-07:41084").startswith("▶ READY") and SLURM_URL in row("server alvis7-07:41084")
        assert row(SLURM_TUNNEL).startswith("▶ up") and "alvis7-07:41084" in row(SLURM_TUNNEL)
        assert endpoint.endpoint.url == SLURM_URL and "job 5382685 on alvis7-07" in endpoint.endpoint.detail
        assert "✔ reachable" in str(endpoint.render())
        await pilot.pause()
        shown = view.visible_text()
        assert (
            "[VLLM OUT] (APIServer pid=20037) INFO 11-23 10:00:05 [api_server.py:1839] vLLM API server version 0.11.0"
            in shown
        )
        assert shown[-1] == "[VLLM ERR] INFO:     Application startup complete."

        gates["serving"].open()
        await wait_for(pilot, lambda: status.phase(SLURM_TUNNEL).state == "broken")
        assert row(SLURM_TUNNEL).startswith("✘ broken") and "SSH connection to alvis2 lost" in row(SLURM_TUNNEL)
        gates["broken"].open()
        await wait_for(pilot, lambda: status.phase(SLURM_TUNNEL).state == "reconnecting")
        assert row(SLURM_TUNNEL).startswith("↻ reconnecting") and "attempt 1" in row(SLURM_TUNNEL)
        gates["reconnecting"].open()
        await wait_for(pilot, lambda: status.phase(SLURM_TUNNEL).state == "up" and view.line_count == 8)
        assert row(SLURM_TUNNEL).startswith("▶ up") and "reconnected to alvis2" in row(SLURM_TUNNEL)
        # one row per unit, however often its state changed
        assert [p.unit for p in status.units] == [job, "server alvis7-07:41084", SLURM_TUNNEL]
        assert ctrl.live
        await ctrl.cleanup(2.0)
        assert backend.cancel_calls == [(ctrl.id, True)]
