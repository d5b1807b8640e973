"""The sweep view (Argo runs) in the real app, on a scripted backend (Pilot).

The backend is named ``argo`` and plays what the Argo backend yields (the
Workflow's and its nodes' Phases, log lines, Sweep snapshots); the app's
default monitor factory then opens the sweep monitor. The drill-in and
reset-stale go through a fake reader that records its calls.
"""

from __future__ import annotations

from textual.widgets import Static

from backends.events import Phase, Sweep
from tests.tui.monitor_support import FIXED_NOW, Gate, ScriptedBackend, make_app, make_spec, running_script, wait_for
from tests.tui.sweep_support import (
    MVID,
    OOM,
    WORKFLOW,
    FakeReader,
    argo_backend,
    argo_spec,
    default_group_configs,
    node_phases,
    sweep,
    sweep_script,
)
from tui.controller import RunController
from tui.screens.dialogs import ConfirmDialog
from tui.screens.monitor import RunMonitorScreen
from tui.screens.sweep import FailureGroupScreen, SweepMonitorScreen, is_sweep_run, reader_for
from tui.widgets.sweep import SweepTable, SweepView

SIZE = (100, 30)


def text_of(widget) -> str:
    return str(widget.render())


def notes(app) -> list[str]:
    return [n.message for n in app._notifications]


async def _open(app, pilot, spec=None):
    """Launch on the argo backend and wait for the first snapshot on screen."""
    ctrl = app.launch_spec(spec or argo_spec())

    def ready() -> bool:
        screen = app.screen
        return isinstance(screen, SweepMonitorScreen) and screen.batches > 0 and screen.sweep_view.sweep is not None

    await wait_for(pilot, ready)
    await pilot.pause()
    return ctrl, app.screen


async def test_argo_runs_get_the_sweep_monitor_and_others_do_not():
    app = make_app(argo_backend(sweep_script()))
    async with app.run_test(size=SIZE) as pilot:
        ctrl, screen = await _open(app, pilot)
        assert is_sweep_run(ctrl)
        assert isinstance(screen, SweepMonitorScreen)
        # the sweep pane is on; status/metrics/endpoint are off until asked for
        assert screen.query_one("#pane-sweep").display and screen.query_one("#pane-logs").display
        assert not screen.query_one("#pane-status").display
        await pilot.press("1")
        assert screen.query_one("#pane-status").display
        await pilot.press("5")
        assert not screen.query_one("#pane-sweep").display
        await pilot.press("5")
        assert screen.query_one("#pane-sweep").display
        await ctrl.cleanup(2.0)
    plain = make_app(ScriptedBackend(running_script(Gate())))
    async with plain.run_test(size=SIZE) as pilot:
        ctrl = plain.launch_spec(make_spec())
        await wait_for(pilot, lambda: isinstance(plain.screen, RunMonitorScreen) and plain.screen.batches > 0)
        assert type(plain.screen) is RunMonitorScreen
        assert not is_sweep_run(ctrl)
        await ctrl.cleanup(2.0)


async def test_counts_percent_rate_eta_and_tables_are_shown():
    app = make_app(argo_backend(sweep_script()))
    async with app.run_test(size=SIZE) as pilot:
        ctrl, screen = await _open(app, pilot)
        view = screen.query_one(SweepView)
        progress = text_of(view.progress)
        for expected in ("42.3%", "3,807/9,000 done", "completed 3,700", "failed 107", "running 293",
                         "pending 4,900", "118.2 configs/min", "ETA 43m56s", "3 stale (running > 120 min)",
                         "workflow ▶ Running"):
            assert expected in progress, (expected, progress)
        # the bar reads without colour: four glyphs whose legend is the counts line
        first = progress.splitlines()[0]
        assert first.startswith("█") and "▒" in first and "░" in first
        assert "█ completed" in progress and "▓ failed" in progress
        failures = view.table("failures")
        assert failures.keys == [g["error_message"] for g in sweep().failures]
        assert failures.row_plain(OOM)[:2] == ["61", "57%"]
        assert "3 groups" in text_of(screen.query_one("#title-failures", Static))
        stale = view.table("stale")
        assert stale.row_plain("4211")[:6] == ["#4211", "chatbot", "8", "4096", "3h00m", "0"]
        workload = view.table("workload")
        assert workload.keys == ["chatbot", "code-generation", "creative-writing", "qa", "summarization"]
        assert workload.row_plain("chatbot")[2:5] == ["40%", "700", "22"]
        priority = view.table("priority")
        assert priority.keys[:3] == ["100", "105", "110"] and len(priority.keys) == 12
        assert priority.row_plain("100")[2] == "100%"
        nodes = view.table("nodes")
        assert nodes.keys[0] == "populate" and len(nodes.keys) == 14  # workflow itself is in the header
        assert nodes.row_plain("worker(3)")[1:4] == ["✘ Failed", "16s", "1"]
        assert nodes.row_plain("worker(0)")[1:3] == ["▶ Running", "25s"]  # clock: FIXED_NOW + 30
        assert "1 failed" in text_of(screen.query_one("#title-nodes", Static))
        assert "model version " + MVID in screen.query_one("#pane-sweep").border_title
        header = text_of(screen.query_one("#monitor-header", Static))
        assert "▶ running" in header and "argo · model version " + MVID in header
        assert "TP=" not in header  # the engine settings do not apply to a sweep
        # the section bar (narrow layout) counts every section and marks the current one
        bar = text_of(screen.query_one("#sweep-bar", Static))
        assert "▸Failures 3" in bar and "Stale 3" in bar and "Nodes 14" in bar
        await ctrl.cleanup(2.0)


async def test_sections_switch_with_keys_and_a_large_terminal_shows_them_all():
    app = make_app(argo_backend(sweep_script()))
    async with app.run_test(size=SIZE) as pilot:
        ctrl, screen = await _open(app, pilot)
        view = screen.sweep_view
        assert not view.wide and view.current == "failures"
        assert app.focused is view.table("failures")
        await pilot.press("right_square_bracket")
        assert view.current == "stale" and app.focused is view.table("stale")
        assert view.table("stale").display and screen.query_one("#section-stale").display
        assert not screen.query_one("#section-failures").display
        await pilot.press("left_square_bracket", "left_square_bracket")
        assert view.current == "nodes" and app.focused is view.table("nodes")
        assert "▸Nodes 14" in text_of(screen.query_one("#sweep-bar", Static))
        await ctrl.cleanup(2.0)
    app = make_app(argo_backend(sweep_script()))
    async with app.run_test(size=(160, 48)) as pilot:
        ctrl, screen = await _open(app, pilot, argo_spec("nov23-sweep-wide"))
        view = screen.sweep_view
        assert view.wide
        for name in ("failures", "stale", "workload", "priority", "nodes"):
            assert screen.query_one(f"#section-{name}").display
            assert view.table(name).region.height > 0, name
        assert not screen.query_one("#sweep-bar").display
        # every section shows: the focused table's section is the current one, marked ▸
        assert app.focused is view.table("failures")
        assert text_of(screen.query_one("#title-failures", Static)).startswith("▸ ")
        await pilot.press("tab")
        assert app.focused is view.table("stale") and view.current == "stale"
        assert text_of(screen.query_one("#title-stale", Static)).startswith("▸ ")
        assert not text_of(screen.query_one("#title-failures", Static)).startswith("▸")
        await pilot.press("right_square_bracket")
        assert app.focused is view.table("workload")
        await ctrl.cleanup(2.0)


async def test_failure_group_drill_in_lists_its_configs_from_the_reader():
    reader = FakeReader()
    app = make_app(argo_backend(sweep_script(), reader))
    async with app.run_test(size=SIZE) as pilot:
        ctrl, screen = await _open(app, pilot)
        assert app.focused is screen.sweep_view.table("failures")
        await pilot.press("enter")  # the cursor is on the largest group (CUDA OOM)
        await wait_for(pilot, lambda: isinstance(app.screen, FailureGroupScreen) and app.screen.loaded)
        dialog = app.screen
        assert reader.failed_calls == [OOM]
        assert dialog.error_message == OOM and dialog.count == 61
        table = dialog.query_one(SweepTable)
        expected = default_group_configs()[OOM]
        assert table.keys == [str(c["id"]) for c in expected]
        assert table.row_plain("812") == ["#812", "chatbot", "4", "4096", "0", OOM]
        assert table.row_plain("913")[1:5] == ["code-generation", "8", "4096", "1"]
        assert "61 configs" in str(dialog.query_one("#failure-group-title").render())
        assert text_of(dialog.query_one("#failure-group-status", Static)) == "61 configs"
        assert "hardware 1" in text_of(dialog.query_one("#failure-group-detail", Static))
        await pilot.press("down")
        await pilot.pause()
        assert "#913" in text_of(dialog.query_one("#failure-group-detail", Static))
        await pilot.press("r")  # reload
        await wait_for(pilot, lambda: len(reader.failed_calls) == 2)
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is screen
        # another group: down to the timeout group, enter
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, FailureGroupScreen) and app.screen.loaded)
        assert reader.failed_calls[-1].startswith("timeout")
        assert "No failed config has this message" in text_of(app.screen.query_one("#failure-group-status", Static))
        await pilot.press("escape")
        await ctrl.cleanup(2.0)


async def test_drill_in_shows_a_queue_error_in_the_dialog():
    from backends.argo.sweep import QueueUnavailable

    class Broken(FakeReader):
        async def failed_configs(self, error_message, limit=500):
            raise QueueUnavailable("The work-queue API at http://q:8080 did not answer (ConnectError).")

    app = make_app(argo_backend(sweep_script(), Broken()))
    async with app.run_test(size=SIZE) as pilot:
        ctrl, screen = await _open(app, pilot)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, FailureGroupScreen) and app.screen.error is not None)
        assert "did not answer" in text_of(app.screen.query_one("#failure-group-status", Static))
        await pilot.press("escape")
        await ctrl.cleanup(2.0)


async def test_reset_stale_asks_then_calls_the_reader_once_and_notifies():
    reader = FakeReader(reset_result={"reset": 3, "failed": 1})
    app = make_app(argo_backend(sweep_script(), reader))
    async with app.run_test(size=SIZE) as pilot:
        ctrl, screen = await _open(app, pilot)
        await pilot.press("R")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        message = text_of(app.screen.query_one("#confirm-message", Static))
        assert "3 configs have been running for over 120 min" in message
        assert reader.reset_calls == 0  # nothing before the answer
        await pilot.press("y")
        await wait_for(pilot, lambda: screen.last_reset is not None)
        assert reader.reset_calls == 1
        assert app.screen is screen
        assert any("Reset 3 stale configs to pending; 1 marked failed (retries used up)." in n for n in notes(app))
        await ctrl.cleanup(2.0)


async def test_reset_stale_cancelled_in_the_confirm_does_nothing():
    reader = FakeReader()
    app = make_app(argo_backend(sweep_script(), reader))
    async with app.run_test(size=SIZE) as pilot:
        ctrl, screen = await _open(app, pilot)
        await pilot.press("R")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("n")
        await pilot.pause()
        assert app.screen is screen
        await pilot.press("R")
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert reader.reset_calls == 0 and screen.last_reset is None
        assert "Nothing was reset." in notes(app)
        await ctrl.cleanup(2.0)


async def test_reset_stale_is_in_the_palette_and_remappable():
    from tui.palette import SweepdeckCommands

    reader = FakeReader(reset_result={"reset": 0, "failed": 0})
    app = make_app(argo_backend(sweep_script(), reader))
    async with app.run_test(size=SIZE) as pilot:
        ctrl, screen = await _open(app, pilot)
        names = {name: callback for name, _help, _key, callback in SweepdeckCommands(screen).commands()}
        assert "Reset stale configs (back to pending)" in names and "Sweep: next section" in names
        await names["Reset stale configs (back to pending)"]()
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("y")
        await wait_for(pilot, lambda: reader.reset_calls == 1 and screen.last_reset is not None)
        assert "Reset 0 stale configs to pending." in notes(app)
        app.set_keymap({"sweep_reset_stale": "ctrl+t"})
        await pilot.press("R")
        await pilot.pause()
        assert app.screen is screen  # R is no longer bound
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("n")
        await ctrl.cleanup(2.0)


async def test_a_burst_of_1000_snapshots_ends_showing_the_last():
    gate = Gate()
    burst = [sweep(completed=2000 + i, failed=100 + i // 100, running=293, rate=100.0 + i / 10, ts=FIXED_NOW + 40 + i)
             for i in range(1000)]
    app = make_app(argo_backend(sweep_script(gate) + [burst, Gate()]))
    async with app.run_test(size=SIZE) as pilot:
        ctrl, screen = await _open(app, pilot)
        view = screen.sweep_view
        before = view.updates
        failures_rebuilds = view.table("failures").rebuilds
        gate.open()
        await wait_for(pilot, lambda: view.sweep is not None and view.sweep.completed == 2999)
        await pilot.pause()
        last = burst[-1]
        assert view.sweep == last and ctrl.sweep == last  # the same snapshot (it came through the supervisor)
        progress = text_of(view.progress)
        assert f"{last.done:,}/9,000 done" in progress and "completed 2,999" in progress and "failed 109" in progress
        assert "199.9 configs/min" in progress
        # collapsed: far fewer updates than snapshots; tables updated in place
        assert view.updates - before < 50, view.updates - before
        assert view.table("failures").row_plain(OOM)[0] == "61"
        assert view.table("failures").rebuilds == failures_rebuilds
        await ctrl.cleanup(2.0)


async def test_node_updates_touch_only_changed_cells_with_100_workers():
    gate = Gate()
    later = [Phase(f"worker({i})", "Succeeded", "", kind="node", started=FIXED_NOW + 5 + i, finished=FIXED_NOW + 29)
             for i in range(0, 100, 10)]
    app = make_app(argo_backend(sweep_script(gate, workers=100) + [later, Gate()]))
    async with app.run_test(size=SIZE) as pilot:
        ctrl, screen = await _open(app, pilot)
        nodes = screen.sweep_view.table("nodes")
        assert len(nodes.keys) == 102
        updates = nodes.cell_updates
        gate.open()
        await wait_for(pilot, lambda: nodes.row_plain("worker(10)")[1] == "✔ Succeeded")
        assert nodes.rebuilds == 0
        # 10 nodes changed: phase and duration (and the 1-s tick moves nothing: the clock is fixed)
        assert nodes.cell_updates - updates <= 20
        assert nodes.row_plain("worker(10)")[2] == "14s"
        assert "10 succeeded" not in text_of(screen.query_one("#title-nodes", Static))
        assert "11 succeeded" in text_of(screen.query_one("#title-nodes", Static))  # + populate
        await ctrl.cleanup(2.0)


async def test_stale_alert_banner_points_at_the_reset_key():
    from backends.events import Alert, Fix

    alert = Alert("stale-configs", f"3 config(s) of {MVID} have been running for over 120 min (a worker was probably "
                  "interrupted); reset them to pending.", "warning",
                  fixes=[Fix("Reset stale configs", {}, "sweepdeck queue reset-stale --timeout-minutes 120")])
    script = sweep_script()
    script.insert(-1, alert)
    app = make_app(argo_backend(script))
    async with app.run_test(size=SIZE) as pilot:
        ctrl, screen = await _open(app, pilot)
        await wait_for(pilot, lambda: screen.alerts)
        banner = text_of(screen.query_one("#monitor-alert", Static))
        assert "R: reset stale configs" in banner
        await ctrl.cleanup(2.0)


async def test_controller_keeps_the_latest_sweep_and_replays_it():
    from backends.cleanup import CleanupRegistry

    ctrl = RunController(None, make_spec(), store=None, registry=CleanupRegistry())  # type: ignore[arg-type]  # no backend or store: only the controller's sweep state is tested
    got = []
    ctrl.subscribe(got.append, replay=False)
    snaps = [sweep(completed=i) for i in range(1000, 1010)]
    for s in snaps:
        ctrl.on_event(s)
    ctrl.flush()
    assert len(got) == 1 and got[0].sweep is snaps[-1] and not got[0].notices
    assert ctrl.sweep is snaps[-1]
    replay = ctrl.snapshot()
    assert replay.sweep is snaps[-1] and replay.reset


def test_reader_comes_from_the_backend_with_the_run_model_version():
    class Backend:
        name = "argo"
        capabilities = frozenset({"work_queue"})

        def __init__(self):
            self.calls = []

        def reader(self, model_version_id, queue_url=None):
            self.calls.append((model_version_id, queue_url))
            return "reader"

    class Run:
        handle = {"model_version_id": "mv-7", "queue_url": "http://q:8080"}

    class Ctrl:
        backend = Backend()
        run = Run()
        record = None
        sweep = None

    assert reader_for(Ctrl) == "reader" and Ctrl.backend.calls == [("mv-7", "http://q:8080")]
    Ctrl.run = None
    assert reader_for(Ctrl) is None  # nothing says which model version yet
    Ctrl.sweep = Sweep("mv-9")
    assert reader_for(Ctrl) == "reader" and Ctrl.backend.calls[-1] == ("mv-9", None)
    assert is_sweep_run(Ctrl)


async def test_workflow_and_nodes_come_from_phase_events_only():
    app = make_app(argo_backend(sweep_script()))
    async with app.run_test(size=SIZE) as pilot:
        ctrl, screen = await _open(app, pilot)
        view = screen.sweep_view
        assert view.workflow is not None and view.workflow.unit == WORKFLOW
        assert set(view.nodes) == {p.unit for p in node_phases() if p.kind == "node"}
        await ctrl.cleanup(2.0)
