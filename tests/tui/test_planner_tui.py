"""The memory planner in the wizard: the review line, its fixes as keys, and the pre-flight check (Pilot)."""

from __future__ import annotations

from textual.widgets import DataTable, Static

from backends.base import Check
from tests.tui.app_fakes import make_app
from tests.tui.monitor_support import wait_for
from tests.tui.test_wizard import SIZE, text_of, to_review
from tui.screens.wizard.steps import PreflightStep


def planner_app(gpu: str):
    app = make_app(checks=[Check("Simulator available", "pass", "python -m backends.sim")])
    app.settings.local.options["gpu"] = gpu  # the local profile names its GPU
    return app


async def set_value(pilot, wizard, key: str, value: str) -> None:
    table = wizard.query_one("#review-table", DataTable)
    table.move_cursor(row=table.get_row_index(key))
    await pilot.press("e", "ctrl+u", *value, "enter")
    await pilot.pause()


async def test_review_line_fits_and_follows_edits_at_once():
    app = planner_app("H100-80GB")
    async with app.run_test(size=SIZE) as pilot:
        wizard = await to_review(pilot, "llama2-7b")
        line = text_of(wizard.query_one("#review-plan", Static))
        assert line.startswith("✓ fits: weights 12.6 GiB · KV ") and line.endswith("at 4096")
        cells = [str(c) for c in wizard.query_one("#review-table", DataTable).get_row("res:GPU")]
        assert cells[:2] == ["GPU model", "H100-80GB"] and cells[3] == "profile"
        await set_value(pilot, wizard, "engine.max_model_len", "1024")
        assert text_of(wizard.query_one("#review-plan", Static)).endswith("at 1024")
        await set_value(pilot, wizard, "res:GPU", "A40")
        assert "✓ fits: weights 12.6 GiB" in text_of(wizard.query_one("#review-plan", Static))
        assert wizard.state.spec.engine.gpu == "A40"


async def test_does_not_fit_shows_fixes_as_keys_and_a_key_applies_one():
    app = planner_app("A40")
    async with app.run_test(size=SIZE) as pilot:
        wizard = await to_review(pilot, "llama3-70b")
        await set_value(pilot, wizard, "engine.tp", "1")
        box = wizard.query_one("#review-plan", Static)
        text = text_of(box)
        assert text.startswith("✗ does not fit: weights 131.4 GiB per GPU do not fit in 43.8 GiB")
        assert " 1  TP=1 -> TP=4 (4 GPUs): " in text
        assert box.has_class("does-not-fit")
        await pilot.press("1")
        await pilot.pause()
        assert wizard.state.spec.engine.tp == 4
        assert text_of(box).startswith("✓ fits: weights 32.9 GiB")
        assert not box.has_class("does-not-fit")


async def test_preflight_lists_the_memory_plan_check():
    app = planner_app("A40")
    async with app.run_test(size=SIZE) as pilot:
        wizard = await to_review(pilot, "llama3-70b")
        await set_value(pilot, wizard, "engine.tp", "1")
        await pilot.press("y", "f8")  # confirm the change, on to the summary
        await pilot.pause()
        await pilot.press("f8")  # pre-flight
        step = wizard.query_one(PreflightStep)
        await wait_for(pilot, lambda: step.checks is not None)
        names = [c.name for c in step.checks]
        assert names[:2] == ["Simulator available", "Memory plan"]  # then the shared checks (run store)
        memory = step.checks[1]
        assert memory.status == "fail" and memory.detail.startswith("does not fit: weights 131.4 GiB")
        assert "TP=1 -> TP=4" in memory.fix
        assert "Memory plan" in str(step.query_one("#preflight-table", DataTable).get_row_at(1)[1])


async def test_no_gpu_says_how_to_plan():
    app = make_app(checks=[Check("Simulator available", "pass", "python -m backends.sim")])
    async with app.run_test(size=SIZE) as pilot:
        wizard = await to_review(pilot, "qwen-1.5b")
        text = text_of(wizard.query_one("#review-plan", Static))
        assert text == "memory plan: GPU unknown — edit GPU model, or set gpu: in the profile"


async def test_recovery_dialog_offers_the_planners_nearest_fits():
    from tests.tui.monitor_support import ScriptedBackend, make_spec, ok_script, oom_script, wait_for
    from tests.tui.monitor_support import make_app as make_monitor_app
    from tui.screens.monitor import RunMonitorScreen
    from tui.screens.recovery import RecoveryDialog

    def first_oom_then_ok(run):
        return oom_script() if run.spec.parent is None else ok_script()

    backend = ScriptedBackend(first_oom_then_ok)
    app = make_monitor_app(backend)
    spec = make_spec("llama3-70b", tp=2, max_model_len=32768).set("engine.gpu", "A100-80GB")
    async with app.run_test(size=(120, 40)) as pilot:
        app.launch_spec(spec)
        await wait_for(pilot, lambda: isinstance(app.screen, RecoveryDialog), timeout=8)
        dialog = app.screen
        labels = [f.label for f in dialog.alert.fixes]
        assert labels[0] == "Planner: TP 4" and all(label.startswith("Planner: ") for label in labels)
        assert "Increase TP" not in labels  # no blind doubling
        await pilot.press("1")
        await wait_for(pilot, lambda: isinstance(app.screen, RunMonitorScreen)
                       and app.screen.controller.spec.parent == spec.experiment_id, timeout=8)
        assert app.screen.controller.spec.engine.tp == 4
