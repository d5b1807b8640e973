"""The recovery dialog: a diagnosed failure → a fix → a relaunch recorded in the run store."""

from __future__ import annotations

import json
import socket

from backends.cleanup import CleanupRegistry
from tests.tui.monitor_support import ScriptedBackend, make_app, make_spec, ok_script, oom_script, wait_for
from tui.screens.monitor import RunMonitorScreen
from tui.screens.recovery import RecoveryDialog
from tui.widgets.logview import LogView


def _first_oom_then_ok(run):
    return oom_script() if run.spec.parent is None else ok_script()


async def _oom_dialog(app, pilot, spec):
    ctrl = app.launch_spec(spec)
    await wait_for(pilot, lambda: isinstance(app.screen, RecoveryDialog), timeout=8)
    return ctrl, app.screen


async def test_oom_alert_opens_the_dialog_and_reduce_context_relaunches():
    backend = ScriptedBackend(_first_oom_then_ok)
    app = make_app(backend)
    spec = make_spec()
    async with app.run_test(size=(120, 40)) as pilot:
        ctrl, dialog = await _oom_dialog(app, pilot, spec)
        current = str(dialog.query_one("#recovery-current").render())
        assert f"TP={spec.engine.tp}" in current
        assert f"max_model_len={spec.engine.max_model_len}" in current
        assert f"max_num_seqs={spec.engine.max_num_seqs}" in current
        labels = [f.label for f in dialog.alert.fixes]
        assert labels[:2] == ["Increase TP", "Reduce context"]
        options = dialog.query_one("#recovery-fixes")
        assert options.option_count == len(labels) + 1  # + "describe a custom fix"
        assert "CUDA out of memory" in str(dialog.query_one("#recovery-title").render())
        await pilot.press(str(labels.index("Reduce context") + 1))
        await wait_for(pilot, lambda: isinstance(app.screen, RunMonitorScreen) and app.screen.controller is not ctrl
                       and app.screen.controller.state == "succeeded", timeout=8)
        child = app.screen.controller
        assert child.id == f"{spec.experiment_id}-fix"
        assert child.spec.engine.max_model_len == spec.engine.max_model_len // 2
        assert child.spec.parent == spec.experiment_id
        assert child in app.controllers
        assert [s.engine.max_model_len for s in backend.launched] == [spec.engine.max_model_len,
                                                                      spec.engine.max_model_len // 2]
        meta = json.loads((child.run.store.path / "meta.json").read_text())
        assert meta["parent"] == spec.experiment_id and meta["fix"]["label"] == "Reduce context"
        old = json.loads((ctrl.run.store.path / "meta.json").read_text())
        assert old["state"] == "failed" and old["relaunched_as"] == child.id
        # the monitor now shows the new run
        await wait_for(pilot, lambda: app.screen.query_one(LogView).line_count >= 1)
        assert any(ln.text == "relaunched fine" for ln in app.screen.query_one(LogView).shown_lines())
        assert child.id in str(app.screen.query_one("#monitor-header").render())


async def test_custom_fix_uses_the_quick_command_grammar():
    backend = ScriptedBackend(_first_oom_then_ok)
    app = make_app(backend)
    spec = make_spec()
    async with app.run_test(size=(120, 40)) as pilot:
        ctrl, dialog = await _oom_dialog(app, pilot, spec)
        await pilot.press("c")
        await pilot.press(*"frobnicate")
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, RecoveryDialog)  # an error, shown inline
        error = dialog.query_one("#recovery-error")
        assert error.has_class("shown") and "✘" in str(error.render())
        field = dialog.query_one("#recovery-custom")
        field.value = "max_model_len=1024 max-num-seqs 64"
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, RunMonitorScreen) and app.screen.controller is not ctrl
                       and app.screen.controller.state == "succeeded", timeout=8)
        child = app.screen.controller
        assert child.spec.engine.max_model_len == 1024 and child.spec.engine.max_num_seqs == 64
        assert child.spec.parent == spec.experiment_id
        meta = json.loads((child.run.store.path / "meta.json").read_text())
        assert meta["fix"]["changes"] == {"engine.max_model_len": 1024, "engine.max_num_seqs": 64}


async def test_escape_keeps_the_failed_run_and_r_reopens_the_dialog():
    backend = ScriptedBackend(_first_oom_then_ok)
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        ctrl, dialog = await _oom_dialog(app, pilot, make_spec())
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, RunMonitorScreen))
        assert len(backend.launched) == 1
        assert "r: recovery options" in str(app.screen.query_one("#monitor-alert").render())
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, RecoveryDialog))
        await pilot.press("escape")
        assert len(backend.launched) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_simulator_oom_then_reduce_max_model_len_relaunch_succeeds():
    """The real local backend and simulator: --fail oom → dialog → reduce context → the relaunch serves."""
    from backends.local import LocalBackend
    from config.settings import Profile, load_settings

    settings = load_settings()
    registry = CleanupRegistry()
    options = {**settings.local.options, "port": _free_port(), "run_workload": False, "ready_timeout": 60.0}
    backend = LocalBackend(settings, Profile("local", "local", options),
                           sim_args=["--fail", "oom", "--speed", "0", "--startup-delay", "0.05"], registry=registry)
    app = make_app(backend, registry=registry)
    spec = make_spec()
    async with app.run_test(size=(120, 40)) as pilot:
        ctrl = app.launch_spec(spec)
        await wait_for(pilot, lambda: isinstance(app.screen, RecoveryDialog), timeout=30)
        dialog = app.screen
        assert dialog.alert.diagnosis == "cuda-oom"
        labels = [f.label for f in dialog.alert.fixes]
        await pilot.press(str(labels.index("Reduce context") + 1))
        await wait_for(pilot, lambda: isinstance(app.screen, RunMonitorScreen) and app.screen.controller is not ctrl
                       and app.screen.controller.state in ("succeeded", "failed"), timeout=40)
        child = app.screen.controller
        assert child.state == "succeeded", child.finished
        assert child.spec.engine.max_model_len == spec.engine.max_model_len // 2
        assert child.endpoint is not None and child.endpoint.url.startswith("http://127.0.0.1:")
        lines = [ln.text for ln in child.logs]
        assert any("--max-model-len" in t or "Application startup complete" in t for t in lines)
        assert ctrl.finished is not None and ctrl.finished.outcome == "failed"
        assert not registry.live()  # both servers stopped
        meta = json.loads((child.run.store.path / "meta.json").read_text())
        assert meta["parent"] == spec.experiment_id
        assert meta["fix"]["changes"] == {"engine.max_model_len": spec.engine.max_model_len // 2}
