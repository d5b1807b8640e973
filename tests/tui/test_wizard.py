"""Pilot tests of the new-experiment wizard on a fake backend."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Static

from backends.base import Check
from config.catalog import load_catalogs
from tests.tui.app_fakes import FakeMonitor, make_app
from tests.tui.monitor_support import wait_for
from tui.screens.dialogs import ChoiceDialog, DisambiguationDialog, TextInputDialog
from tui.screens.wizard import WizardScreen
from tui.screens.wizard.state import WizardState
from tui.screens.wizard.steps import ModelStep, PreflightStep, ReviewStep

SIZE = (100, 32)


def text_of(widget: Static) -> str:
    return str(widget.render())


async def open_wizard(pilot) -> WizardScreen:
    await pilot.press("n")
    await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, WizardScreen)
    return screen


async def pick_model(pilot, name: str) -> WizardScreen:
    wizard = await open_wizard(pilot)
    await pilot.press(*name)
    await pilot.press("enter")
    await pilot.pause()
    return wizard


async def pick_preset(pilot, wizard: WizardScreen, name: str) -> None:
    names = list(wizard.state.catalogs.workloads.presets)
    table = wizard.query_one("#workload-table", DataTable)
    table.move_cursor(row=names.index(name))
    await pilot.press("enter")
    await pilot.pause()


async def to_review(pilot, model: str = "qwen-1.5b", preset: str = "chatbot") -> WizardScreen:
    wizard = await pick_model(pilot, model)
    assert wizard.index == 1
    await pick_preset(pilot, wizard, preset)
    assert wizard.index == 2
    return wizard


def review_cells(wizard: WizardScreen, key: str) -> list[str]:
    table = wizard.query_one("#review-table", DataTable)
    return [str(c) for c in table.get_row(key)]


# ------------------------------------------------------------------- model


async def test_model_filter_narrows_and_enter_chooses():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        wizard = await open_wizard(pilot)
        step = wizard.query_one(ModelStep)
        table = wizard.query_one("#model-table", DataTable)
        full = table.row_count
        await pilot.press(*"qwen-1.5")
        await pilot.pause()
        assert 0 < table.row_count < full
        assert step.highlighted() == ("model", "Qwen/Qwen2.5-Math-1.5B")
        await pilot.press("enter")
        await pilot.pause()
        assert wizard.index == 1
        assert wizard.state.spec.model == "Qwen/Qwen2.5-Math-1.5B"
        assert "Qwen2.5-Math-1.5B" in wizard.sub_title


async def test_model_table_shows_size_tp_context_and_ambiguous_rows():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        wizard = await open_wizard(pilot)
        table = wizard.query_one("#model-table", DataTable)
        row = [str(c) for c in table.get_row("model:meta-llama/Llama-2-7b-hf")]
        assert row[2:] == ["14 GB", "1,2", "4,096"]
        assert "llama2-7b" in row[1]
        alias = [str(c) for c in table.get_row("alias:llama-7b")]
        assert "ambiguous: 2 models" in alias[1]


async def test_large_model_shows_download_warning():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        wizard = await open_wizard(pilot)
        await pilot.press(*"llama3-70b")
        await pilot.pause()
        detail = text_of(wizard.query_one("#model-detail", Static))
        assert "This is a 140 GB model; if not already cached the download takes 30-60 minutes." in detail
        await pilot.press("enter")
        await pilot.pause()
        assert any("140 GB" in n.message for n in app._notifications)


async def test_ambiguous_alias_opens_disambiguation_with_details():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        wizard = await pick_model(pilot, "llama-7b")
        dialog = app.screen
        assert isinstance(dialog, DisambiguationDialog)
        shown = " ".join(str(o.prompt) for o in dialog.query_one("#disambiguation-options").options)
        for expected in ("Llama 2 7B", "Llama 3 8B", "context 4,096", "context 8,192", "14 GB", "16 GB",
                         "download 5-10 minutes"):
            assert expected in shown
        assert "Did you mean Llama 2 (7B) or Llama 3 (8B)?" in text_of(
            dialog.query_one("#disambiguation-prompt", Static)
        )
        await pilot.press("down", "enter")
        await pilot.pause()
        assert app.screen is wizard
        assert wizard.index == 1
        assert wizard.state.spec.model == "meta-llama/Meta-Llama-3-8B-Instruct"


async def test_ambiguous_alias_cancel_stays_on_model_step():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        wizard = await pick_model(pilot, "llama-70b")
        assert isinstance(app.screen, DisambiguationDialog)
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is wizard and wizard.index == 0 and wizard.state.spec is None


async def test_back_on_first_step_closes_wizard():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await open_wizard(pilot)
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, WizardScreen)


# ---------------------------------------------------------------- workload


async def test_preset_workload_is_taken():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        wizard = await to_review(pilot, preset="summarization")
        assert wizard.state.spec.workload.app == "summarization"
        assert wizard.state.spec.workload.prompt_tokens == 4096
        assert wizard.state.spec.experiment_id == "nov23-qwen2-5-math-1-5b-summarization"


async def test_custom_workload_inline_error_blocks_next():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        wizard = await pick_model(pilot, "qwen-1.5b")
        await pilot.press("c")
        await pilot.pause()
        box = wizard.query_one("#custom-prompt_tokens", Input)
        assert box.has_focus
        box.value = "abc"
        await pilot.pause()
        error = wizard.query_one("#custom-error", Static)
        assert "prompt_tokens must be a whole number, got 'abc'" in text_of(error)
        assert error.has_class("error")
        await pilot.press("f8")
        await pilot.pause()
        assert wizard.index == 1
        assert "whole number" in text_of(wizard.query_one("#wizard-status", Static))
        # min > max is caught too
        box.value = "300"
        wizard.query_one("#custom-output_tokens_min", Input).value = "900"
        wizard.query_one("#custom-output_tokens_max", Input).value = "100"
        await pilot.pause()
        assert "output_tokens_min (900) is larger than output_tokens_max (100)" in text_of(error)
        wizard.query_one("#custom-output_tokens_min", Input).value = "1"
        wizard.query_one("#custom-output_tokens_max", Input).value = ""
        wizard.query_one("#custom-max_requests", Input).value = "5"
        await pilot.pause()
        assert "✓ OK" in text_of(error)
        await pilot.press("enter")
        await pilot.pause()
        assert wizard.index == 2
        workload = wizard.state.spec.workload
        assert workload.custom and workload.prompt_tokens == 300 and workload.max_requests == 5


# ------------------------------------------------------------------ review


async def test_review_shows_blis_layout_with_sources():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        wizard = await to_review(pilot)
        table = wizard.query_one("#review-table", DataTable)
        assert review_cells(wizard, "engine.image")[:2] == ["Image (main container)", "vllm/vllm-openai:v0.11.0"]
        assert review_cells(wizard, "image:init")[0] == "Image (init container)"
        assert review_cells(wizard, "engine.max_model_len") == ["--max-model-len", "4096", "", "catalog"]
        assert review_cells(wizard, "auto:--port")[3] == "auto-configured"
        assert review_cells(wizard, "res:Memory")[1].startswith("128Gi")
        assert review_cells(wizard, "res:CPU")[1].startswith("32")
        assert review_cells(wizard, "res:GPUs")[1] == "1 (via TP=1)"
        assert table.row_count >= 12
        # No changes: nothing to confirm, next goes straight on.
        assert not wizard.query_one("#review-confirm").display
        await pilot.press("f8")
        await pilot.pause()
        assert wizard.index == 3


async def test_review_edit_is_highlighted_and_must_be_confirmed():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        wizard = await to_review(pilot)
        table = wizard.query_one("#review-table", DataTable)
        step = wizard.query_one(ReviewStep)
        table.move_cursor(row=table.get_row_index("engine.max_model_len"))
        await pilot.press("e")
        await pilot.pause()
        edit = wizard.query_one("#review-edit", Input)
        assert edit.has_focus and edit.value == "4096"
        edit.value = "99999"
        await pilot.press("enter")
        await pilot.pause()
        assert "above Qwen/Qwen2.5-Math-1.5B's limit of 4096" in text_of(wizard.query_one("#review-error", Static))
        assert wizard.state.spec.engine.max_model_len == 4096
        edit.value = "2048"
        await pilot.press("enter")
        await pilot.pause()
        cells = review_cells(wizard, "engine.max_model_len")
        assert cells[1] == "2048" and cells[2] == "CHANGED" and "was 4096" in cells[3]
        confirm = text_of(wizard.query_one("#review-confirm", Static))
        assert "NOT CONFIRMED" in confirm
        await pilot.press("f8")
        await pilot.pause()
        assert wizard.index == 2
        assert "CONFIRM FIRST" in text_of(wizard.query_one("#wizard-status", Static))
        await pilot.press("y")
        await pilot.pause()
        assert "CONFIRMED" in text_of(wizard.query_one("#review-confirm", Static))
        assert not step.state.needs_confirmation
        await pilot.press("f8")
        await pilot.pause()
        assert wizard.index == 3
        summary = text_of(wizard.query_one("#summary-body", Static))
        assert "CHANGES FROM THE CATALOG DEFAULTS" in summary
        assert "OVERRIDE" in summary and "engine.max_model_len: 4096 -> 2048" in summary
        assert "Max Model Len:    2048" in summary


async def test_review_memory_edit_is_validated_marked_and_confirmed():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        wizard = await to_review(pilot)
        table = wizard.query_one("#review-table", DataTable)
        assert review_cells(wizard, "res:Memory")[1:] == ["128Gi (limit/request)", "", "not enforced"]
        table.move_cursor(row=table.get_row_index("res:Memory"))
        await pilot.press("e")
        await pilot.pause()
        edit = wizard.query_one("#review-edit", Input)
        assert edit.has_focus and edit.value == "128Gi"
        edit.value = "64 gigs"
        await pilot.press("enter")
        await pilot.pause()
        error = text_of(wizard.query_one("#review-error", Static))
        assert "memory must be a positive Kubernetes memory quantity" in error and "64Gi" in error
        assert wizard.state.spec.engine.memory == "128Gi"
        assert not wizard.state.pending_changes()
        edit.value = "64Gi"
        await pilot.press("enter")
        await pilot.pause()
        cells = review_cells(wizard, "res:Memory")
        assert cells[1] == "64Gi (limit/request)" and cells[2] == "CHANGED"
        # recorded, but the local backend says it does not enforce it
        assert cells[3] == "you, not enforced (was 128Gi)"
        spec = wizard.state.spec
        assert spec.engine.memory == "64Gi" and spec.source("engine.memory") == "user"
        assert review_cells(wizard, "res:CPU")[1:3] == ["32 (limit/request)", ""]
        await pilot.press("f8")
        await pilot.pause()
        assert wizard.index == 2
        assert "CONFIRM FIRST" in text_of(wizard.query_one("#wizard-status", Static))
        await pilot.press("y", "f8")
        await pilot.pause()
        assert wizard.index == 3
        assert "engine.memory: 128Gi -> 64Gi" in text_of(wizard.query_one("#summary-body", Static))


async def test_review_add_argument_validated_and_marked_new():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        wizard = await to_review(pilot)
        await pilot.press("plus")
        await pilot.pause()
        edit = wizard.query_one("#review-edit", Input)
        error = wizard.query_one("#review-error", Static)
        for bad, message in (
            ("--max-model-len=5", "is an engine setting"),
            ("--gpu-memory-utilization=lots", "needs a number"),
            ("enforce-eager", "must start with --"),
        ):
            edit.value = bad
            await pilot.press("enter")
            await pilot.pause()
            assert message in text_of(error), bad
        assert wizard.state.spec.engine.extra_args == ()
        edit.value = "--enforce-eager --gpu-memory-utilization 0.8"
        await pilot.press("enter")
        await pilot.pause()
        assert wizard.state.spec.engine.extra_args == ("--enforce-eager", "--gpu-memory-utilization=0.8")
        assert review_cells(wizard, "arg:--enforce-eager")[2] == "NEW"
        assert wizard.state.needs_confirmation
        # x on a NEW argument removes it again; nothing left to confirm.
        table = wizard.query_one("#review-table", DataTable)
        for key in ("arg:--enforce-eager", "arg:--gpu-memory-utilization=0.8"):
            table.move_cursor(row=table.get_row_index(key))
            await pilot.press("x")
            await pilot.pause()
        assert wizard.state.spec.engine.extra_args == ()
        assert not wizard.state.needs_confirmation


async def test_review_escape_closes_editor_not_wizard():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        wizard = await to_review(pilot)
        await pilot.press("plus")
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert wizard.index == 2 and app.screen is wizard
        assert wizard.query_one("#review-table", DataTable).has_focus


async def test_back_and_forward_keep_the_spec():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        wizard = await to_review(pilot)
        wizard.state.edit("engine.max_num_seqs", 64)
        wizard.state.confirm()
        await pilot.press("escape")
        await pilot.pause()
        assert wizard.index == 1
        await pilot.press("escape")
        await pilot.pause()
        assert wizard.index == 0
        await pilot.press("f8")  # same model
        await pilot.pause()
        await pilot.press("f8")  # same preset
        await pilot.pause()
        assert wizard.index == 2
        assert wizard.state.spec.engine.max_num_seqs == 64
        assert review_cells(wizard, "engine.max_num_seqs")[2] == "CHANGED"
        assert not wizard.state.needs_confirmation  # the same change set stays confirmed


# ----------------------------------------------------------------- summary


async def test_summary_edit_experiment_id_refuses_collisions(tmp_path):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        wizard = await to_review(pilot)
        app.store.create(wizard.state.spec.set("experiment_id", "taken-id"))
        await pilot.press("f8")
        await pilot.pause()
        await pilot.press("i")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, TextInputDialog)
        box = dialog.query_one(Input)
        box.value = "taken-id"
        await pilot.press("enter")
        await pilot.pause()
        assert "already used" in text_of(dialog.query_one("#input-dialog-error", Static))
        box.value = "Bad_ID"
        await pilot.press("enter")
        await pilot.pause()
        assert "not DNS-safe" in text_of(dialog.query_one("#input-dialog-error", Static))
        box.value = "my-run-1"
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is wizard
        assert wizard.state.spec.experiment_id == "my-run-1"
        assert "EXPERIMENT: my-run-1" in text_of(wizard.query_one("#summary-body", Static))


async def test_summary_backend_choice_lists_profiles():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        wizard = await to_review(pilot)
        await pilot.press("f8")
        await pilot.pause()
        await pilot.press("b")
        await pilot.pause()
        assert isinstance(app.screen, ChoiceDialog)
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is wizard and wizard.state.spec.backend == "local"


async def test_choosing_a_tekton_profile_layers_values_yaml():
    app = make_app(with_profiles=True)
    async with app.run_test(size=SIZE) as pilot:
        wizard = await to_review(pilot)
        wizard.state.edit("engine.max_num_seqs", 64)
        await pilot.press("y", "f8", "b")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, ChoiceDialog)
        options = dialog.query_one("#choice-options")
        ids = [o.id for o in options.options]
        # the simulator's failure demonstrations are offered under local (the local backend runs the simulator)
        assert ids == ["local:", "local::oom", "local::model-not-found", "local::trust-remote-code",
                       "local::crash-after=20", "slurm:alvis", "tekton:mert"]
        options.highlighted = ids.index("tekton:mert")
        await pilot.press("enter")
        await pilot.pause()
        spec = wizard.state.spec
        assert (spec.backend, spec.profile) == ("tekton", "mert")
        assert spec.engine.max_num_seqs == 64  # the user's edit survives the switch
        summary = text_of(wizard.query_one("#summary-body", Static))
        assert "CHANGES FROM values.yaml" in summary and "tekton (mert)" in summary
        await pilot.press("escape")
        await pilot.pause()
        assert review_cells(wizard, "engine.max_model_len")[3] == "values.yaml"
        assert review_cells(wizard, "auto:--otlp-traces-endpoint")[3] == "auto-configured"
        # the tekton profile's values file gives the vllm container's memory/CPU
        assert review_cells(wizard, "res:Memory")[1:] == ["128Gi (limit/request)", "", "values.yaml"]
        assert review_cells(wizard, "res:CPU")[3] == "values.yaml"


# -------------------------------------------------------------- pre-flight


async def test_preflight_failure_blocks_launch():
    checks = [
        Check("Simulator available", "pass", "python -m backends.sim"),
        Check("Port 8000 free", "fail", "port 8000 is used by pid 42", "Set local.port or stop pid 42"),
    ]
    app = make_app(checks=checks)
    async with app.run_test(size=SIZE) as pilot:
        wizard = await to_review(pilot)
        await pilot.press("f8", "f8")
        await pilot.pause()
        await pilot.pause()
        step = wizard.query_one(PreflightStep)
        # the backend's two checks, then the ones every backend shares (the run store...)
        assert step.checks is not None
        assert [c.name for c in step.checks[:2]] == ["Simulator available", "Port 8000 free"]
        table = wizard.query_one("#preflight-table", DataTable)
        assert str(table.get_row("1")[0]) == "✗ FAIL"
        assert "Set local.port or stop pid 42" in text_of(wizard.query_one("#preflight-fix", Static))
        assert "BLOCKED" in text_of(wizard.query_one("#preflight-verdict", Static))
        await pilot.press("o")  # a failure cannot be overridden
        await pilot.press("l")
        await pilot.pause()
        assert app.screen is wizard and not app.controllers
        assert "launch is blocked" in text_of(wizard.query_one("#wizard-status", Static))
        # The fix is applied outside; re-run sees it and launch goes ahead.
        app.fake_backend.checks = [Check("Port 8000 free", "pass", "free")]
        await pilot.press("r")
        await pilot.pause()
        await pilot.pause()
        await pilot.press("l")
        await pilot.pause()
        assert isinstance(app.screen, FakeMonitor)


async def test_preflight_warning_needs_explicit_override_then_launches():
    checks = [Check("GPU memory", "warn", "no GPU found: the simulator will be used", "Install a GPU")]
    app = make_app(checks=checks)
    async with app.run_test(size=SIZE) as pilot:
        wizard = await to_review(pilot)
        await pilot.press("f8", "f8")
        await pilot.pause()
        await pilot.pause()
        assert str(wizard.query_one("#preflight-table", DataTable).get_row("0")[0]) == "! WARN"
        await pilot.press("l")
        await pilot.pause()
        assert app.screen is wizard and not app.controllers
        assert "override" in text_of(wizard.query_one("#wizard-status", Static))
        await pilot.press("o")
        await pilot.pause()
        assert "OVERRIDDEN" in text_of(wizard.query_one("#preflight-verdict", Static))
        await pilot.press("l")
        await pilot.pause()
        await pilot.pause()
        monitor = app.screen
        assert isinstance(monitor, FakeMonitor)
        ctrl = monitor.controller
        assert app.controllers == [ctrl]
        await ctrl.started.wait()
        assert ctrl.spec.model == "Qwen/Qwen2.5-Math-1.5B"
        assert app.fake_backend.launched == [ctrl.spec]
        # The wizard is gone: back from the monitor is the runs list.
        assert not any(isinstance(s, WizardScreen) for s in app.screen_stack)


async def test_preflight_backend_error_is_a_failed_check():
    class Broken:
        name = "local"

        async def preflight(self, spec):
            from config.errors import SweepdeckError

            raise SweepdeckError("Cannot reach the cluster.", "Check your VPN.")

    app = make_app()
    app._backends_arg = {"local": lambda name, profile: Broken()}
    async with app.run_test(size=SIZE) as pilot:
        wizard = await to_review(pilot)
        await pilot.press("f8", "f8")
        await pilot.pause()
        await pilot.pause()
        step = wizard.query_one(PreflightStep)
        assert [c.status for c in step.checks] == ["fail"]
        assert "Check your VPN." in text_of(wizard.query_one("#preflight-fix", Static))


# ------------------------------------------------------------------- state


def test_state_rebuild_keeps_user_edits_and_drops_impossible_ones():
    state = WizardState(load_catalogs(), today=_dt.date(2026, 11, 23))
    state.choose_model("llama3-70b")
    state.choose_workload("chatbot")
    state.edit("engine.max_model_len", 100_000)
    state.add_args("--enforce-eager")
    state.choose_model("llama2-7b")  # 4k context: the 100k edit cannot stay
    assert state.spec.engine.max_model_len == 4096
    assert state.spec.engine.extra_args == ("--enforce-eager",)
    assert any("max_model_len" in n for n in state.notes)
    assert state.spec.experiment_id == "nov23-llama-2-7b-hf-chatbot"


def test_state_review_rows_mark_removed_catalog_args(tmp_path):
    # A user catalog (only known-models.yaml; the rest falls back to the defaults).
    (tmp_path / "known-models.yaml").write_text(
        "aliases: {custom-7b: org/Custom-7B}\n"
        "recommended_settings:\n"
        "  org/Custom-7B: {tp: [1], max_model_len: 4096, requires_trust_remote_code: true}\n"
    )
    state = WizardState(load_catalogs(tmp_path))
    state.choose_model("custom-7b")
    state.choose_workload("chatbot")
    rows = {r.key: r for r in state.review_rows()}
    assert rows["arg:--trust-remote-code"].source == "catalog" and not rows["arg:--trust-remote-code"].status
    assert not state.needs_confirmation
    state.remove_arg("--trust-remote-code")
    rows = {r.key: r for r in state.review_rows()}
    assert rows["removed:--trust-remote-code"].status == "REMOVED"
    assert state.needs_confirmation
    state.restore_arg("--trust-remote-code")
    assert not state.needs_confirmation


def test_state_review_rows_follow_each_backends_description():
    # what each backend sets itself and whether it applies memory/CPU come from the backend's own description
    from config.settings import Settings

    state = WizardState(load_catalogs(), settings=Settings(), today=_dt.date(2026, 11, 23))
    state.choose_model("llama2-7b")
    state.choose_workload("chatbot")
    expected = {
        "local": (["--host", "--port"], "not enforced"),
        "slurm": (["--port"], "not applied by slurm"),
        "tekton": (["--otlp-traces-endpoint"], "values.yaml"),
        "argo": ([], "not applied by argo"),  # its workflow talks to a running server: no trace collector
    }
    for backend, (auto, memory) in expected.items():
        state.choose_backend(backend, None)
        rows = state.review_rows()
        assert [r.label for r in rows if r.key.startswith("auto:")] == auto, backend
        assert {r.key: r.source for r in rows}["res:Memory"] == memory, backend
    state.choose_backend("slurm", None)
    state.edit("engine.memory", "64Gi")
    assert {r.key: r.source for r in state.review_rows()}["res:Memory"] == "you, not applied by slurm"
    state.sim_fail = "oom"
    assert state.demonstration() is None  # SLURM runs no simulator: nothing is demonstrated there
    state.choose_backend("local", None)
    assert state.demonstration() == "oom"


async def test_launch_error_keeps_the_wizard_and_says_why():
    from config.errors import SweepdeckError

    def refusing(*args, **kw):
        raise SweepdeckError("Experiment id 'x' is already used by a saved run.", "Choose another id.")

    app = make_app(controller_factory=refusing)
    async with app.run_test(size=SIZE) as pilot:
        wizard = await to_review(pilot)
        await pilot.press("f8", "f8")
        await pilot.pause()
        await pilot.pause()
        await pilot.press("l")
        await pilot.pause()
        assert app.screen is wizard and wizard.index == 4
        assert "already used" in text_of(wizard.query_one("#wizard-status", Static))
        assert app.controllers == []


# ---------------------------------------------------------- pre-flight remedies


async def to_preflight(pilot, app) -> tuple[WizardScreen, PreflightStep]:
    wizard = await to_review(pilot)
    await pilot.press("f8", "f8")
    step = wizard.query_one(PreflightStep)
    await wait_for(pilot, lambda: step.checks is not None)
    return wizard, step


async def test_preflight_remedy_runs_once_after_confirming_then_checks_rerun():
    from tests.tui.app_fakes import RemedyBackend
    from tui.screens.dialogs import ConfirmDialog

    backend = RemedyBackend()
    app = make_app(backend=backend)
    async with app.run_test(size=(80, 24)) as pilot:
        wizard, step = await to_preflight(pilot, app)
        fix = text_of(wizard.query_one("#preflight-fix", Static))
        assert "f: Create namespace mert" in fix
        # the footer offers it too, by its binding id
        assert "apply_remedy" in {b.binding.id for b in wizard.active_bindings.values()}
        runs_before = len(backend.preflighted)
        await pilot.press("f")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, ConfirmDialog)
        assert "Create the namespace mert on the cluster?" in text_of(dialog.query_one("#confirm-message", Static))
        assert backend.remedied == []  # asked, not done
        await pilot.press("y")
        await wait_for(pilot, lambda: step.checks is not None and len(backend.preflighted) > runs_before)
        assert app.screen is wizard
        assert backend.remedied == [(wizard.state.spec.experiment_id, "create_namespace", {"namespace": "mert"})]
        assert len(backend.preflighted) == runs_before + 1  # pre-flight ran again
        assert [c.status for c in step.checks[:2]] == ["pass", "pass"]  # then the shared checks (run store)
        assert any("namespace mert created" in n.message for n in app._notifications)
        assert "f: " not in text_of(wizard.query_one("#preflight-fix", Static))
        assert "apply_remedy" not in {b.binding.id for b in wizard.active_bindings.values()}
        await pilot.press("f")  # nothing left to remedy: no dialog, nothing done
        await pilot.pause()
        assert app.screen is wizard and len(backend.remedied) == 1


async def test_preflight_remedy_declined_changes_nothing():
    from tests.tui.app_fakes import RemedyBackend
    from tui.screens.dialogs import ConfirmDialog

    backend = RemedyBackend()
    app = make_app(backend=backend)
    async with app.run_test(size=SIZE) as pilot:
        wizard, step = await to_preflight(pilot, app)
        runs_before = len(backend.preflighted)
        await pilot.press("f")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("n")
        await pilot.pause()
        await pilot.pause()
        assert app.screen is wizard
        assert backend.remedied == [] and not backend.namespace_exists
        assert len(backend.preflighted) == runs_before
        assert [c.status for c in step.checks[:2]] == ["pass", "fail"]
        assert "BLOCKED" in text_of(wizard.query_one("#preflight-verdict", Static))


async def test_preflight_remedy_error_is_a_readable_notification():
    from config.errors import SweepdeckError
    from tests.tui.app_fakes import RemedyBackend

    backend = RemedyBackend(remedy_error=SweepdeckError("Forbidden: cannot create namespaces.",
                                                        "Ask your cluster admin."))
    app = make_app(backend=backend)
    async with app.run_test(size=SIZE) as pilot:
        wizard, step = await to_preflight(pilot, app)
        runs_before = len(backend.preflighted)
        await pilot.press("f")
        await pilot.pause()
        await pilot.press("y")
        await wait_for(pilot, lambda: step.checks is not None and len(backend.preflighted) > runs_before)
        assert len(backend.remedied) == 1
        errors = [n for n in app._notifications if n.severity == "error"]
        assert errors and "Forbidden: cannot create namespaces." in errors[-1].message
        assert "Ask your cluster admin." in errors[-1].message and "Traceback" not in errors[-1].message
        assert app.screen is wizard and [c.status for c in step.checks[:2]] == ["pass", "fail"]


# ------------------------------------------------- the BLIS campaign's inference-perf values

CAMPAIGN = Path("/work/shared/reference/tektonc-data-collection/blis-campaign-14-qwen3-14b-h100-codegen")
needs_campaign = pytest.mark.skipif(not CAMPAIGN.is_dir(), reason=f"the upstream campaign files are not at {CAMPAIGN}")


def campaign_app():
    """The app with a default tekton profile whose values are the campaign's (workload.profileTemplate)."""
    from config.settings import Profile, validate_profile

    app = make_app()
    app.settings.profiles["camp"] = Profile("camp", "tekton", validate_profile("tekton", {
        "backend": "tekton", "namespace": "diya", "values": str(CAMPAIGN / "values.yaml")}, None, "profiles.camp"))
    app.settings.default_backend, app.settings.default_profile = "tekton", "camp"
    return app


@needs_campaign
async def test_inference_perf_values_review_shows_and_edits_stages_and_data():
    app = campaign_app()
    async with app.run_test(size=SIZE) as pilot:
        wizard = await pick_model(pilot, "codellama-34b")
        table = wizard.query_one("#workload-table", DataTable)
        # the values' own profile template is the first row, and the one chosen
        assert [str(c) for c in table.get_row("values.yaml")][0] == "values.yaml" and table.cursor_row == 0
        detail = text_of(wizard.query_one("#workload-detail", Static))
        assert "load constant: 5/s for 600 s → 10/s for 600 s" in detail
        await pilot.press("enter")
        await pilot.pause()
        assert wizard.index == 2 and wizard.state.spec.workload.app == "inference-perf"
        assert review_cells(wizard, "profile_template.load.stages") == [
            "load.stages", "5/s×600s → 10/s×600s", "", "values.yaml"]
        assert review_cells(wizard, "profile_template.data.type")[1] == "shared_prefix"
        assert review_cells(wizard, "profile_template.data.shared_prefix.question_len")[:2] == ["question_len", "466"]
        assert review_cells(wizard, "profile_template.api.streaming")[1] == "true"
        review = wizard.query_one("#review-table", DataTable)
        keys = [row.key.value for row in review.ordered_rows]
        assert "hdr:workload" in keys and "auto:--otlp-traces-endpoint" not in keys  # no stack.tracing: no collector
        # the stages are edited as RATExSECONDS; a bad stage is refused in place
        review.move_cursor(row=review.get_row_index("profile_template.load.stages"))
        await pilot.press("e")
        await pilot.pause()
        assert wizard.query_one("#review-edit", Input).value == "5x600, 10x600"
        await pilot.press("ctrl+u", *"fast", "enter")
        await pilot.pause()
        assert "cannot read the stage 'fast'" in text_of(wizard.query_one("#review-error", Static))
        await pilot.press("ctrl+u", *"8x300, 16x300", "enter")
        await pilot.pause()
        cells = review_cells(wizard, "profile_template.load.stages")
        assert cells[1:3] == ["8/s×300s → 16/s×300s", "CHANGED"]
        assert cells[3] == "you (was 5/s×600s → 10/s×600s)"
        review.move_cursor(row=review.get_row_index("profile_template.data.shared_prefix.question_len"))
        await pilot.press("e", "ctrl+u", *"500", "enter")
        await pilot.pause()
        assert review_cells(wizard, "profile_template.data.shared_prefix.question_len")[1:3] == ["500", "CHANGED"]
        # like any changed setting: confirm first
        await pilot.press("f8")
        await pilot.pause()
        assert wizard.index == 2 and wizard.state.needs_confirmation
        await pilot.press("y", "f8")
        await pilot.pause()
        assert wizard.index == 3
        summary = text_of(wizard.query_one("#summary-body", Static))
        assert "constant: 8/s for 300 s → 16/s for 300 s (600 s)" in summary and "question_len=500" in summary
        assert "profile_template.load.stages" in summary and "Max Requests" not in summary


@needs_campaign
async def test_choosing_a_preset_over_inference_perf_values_is_an_override():
    app = campaign_app()
    async with app.run_test(size=SIZE) as pilot:
        wizard = await pick_model(pilot, "codellama-34b")
        table = wizard.query_one("#workload-table", DataTable)
        table.move_cursor(row=table.get_row_index("chatbot"))  # the presets come after the values' row
        await pilot.press("enter")
        await pilot.pause()
        spec = wizard.state.spec
        assert spec.profile_template["data"]["type"] == "random" and spec.workload.app == "chatbot"
        assert review_cells(wizard, "profile_template.data.type")[3] == "preset chatbot"
        assert ("OVERRIDE", "workload: inference-perf -> chatbot (OVERRIDE, you)") in [
            (k, line.replace("user)", "you)")) for k, line in wizard.state.change_lines()]
        # back to the workload step: the values' own template is still offered
        await pilot.press("escape")
        await pilot.pause()
        table = wizard.query_one("#workload-table", DataTable)
        table.move_cursor(row=0)
        await pilot.press("enter")
        await pilot.pause()
        assert wizard.state.spec.profile_template["data"]["type"] == "shared_prefix"
