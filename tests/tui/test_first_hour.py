"""A user's first hour (issue 18): every screen usable at 80x24, 16 colours, nothing guessed, runs linked.

Pilot tests on the real app (fake backends where a run is not the point).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from rich.color import ColorSystem
from textual.widgets import DataTable, Input, OptionList, Static

from backends.base import Check
from backends.events import Fix
from tests.tui.app_fakes import FakeMonitor, make_app, seed_family, seed_store
from tui import bindings as keys
from tui.screens.dialogs import ConfirmDialog, HelpDialog, QuickCommandDialog, SpellingDialog
from tui.screens.runs import RunsScreen
from tui.widgets.footer import KeyFooter, _candidates, essential_ids
from tui.widgets.virtual_table import VirtualTable

SMALL = (80, 24)


def state_root() -> Path:
    return Path(os.environ["SWEEPDECK_STATE_DIR"])


def text_of(widget: Static) -> str:
    return str(widget.render())


async def settle(pilot, n: int = 3) -> None:
    for _ in range(n):
        await pilot.pause()


# ------------------------------------------------------------------ the footer


def assert_essentials_shown(screen, width: int = 80) -> list[str]:
    """Every essential key the screen offers now is in its footer, and the footer fits in ``width``."""
    footer = screen.query_one(KeyFooter)
    essential = essential_ids(screen)
    assert essential, f"{type(screen).__name__} names no essential keys"
    available = {b.id for b, _, _ in _candidates(screen, set(essential))}
    missing = [bid for bid in essential if bid in available and bid not in footer.shown_ids]
    assert not missing, f"{type(screen).__name__}: essential keys hidden at {width} columns: {missing}"
    assert sum(k.region.width for k in footer.children) <= width + len(footer.children)  # no overflow
    return footer.shown_ids


async def test_no_essential_footer_key_is_hidden_at_80x24_runs_and_wizard():
    seed_store(state_root())
    app = make_app(checks=[Check("Simulator available", "pass", "ok"),
                           Check("Tensor parallel", "warn", "TP=2 on the local backend", "Use --tp 1 here.")])
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot)
        shown = assert_essentials_shown(app.screen)
        assert {"new_experiment", "open_run", "help", "quit", "quick_command"} <= set(shown)
        await pilot.press("n")
        await settle(pilot)
        shown = assert_essentials_shown(app.screen)  # model step: typing in the filter, help is f1
        assert "help" in shown and "wizard_next" in shown
        footer = app.screen.query_one(KeyFooter)
        assert "f1 Help" in footer.rendered_text() and "enter Next" in footer.rendered_text()
        await pilot.press(*"qwen-1.5b", "enter")  # workload
        await settle(pilot)
        assert_essentials_shown(app.screen)
        await pilot.press("enter")  # review: the missing ? Help and : Quick cmd
        await settle(pilot)
        shown = assert_essentials_shown(app.screen)
        assert {"help", "quick_command", "edit_value", "confirm_changes", "wizard_next", "quit"} <= set(shown)
        await pilot.press("enter")  # summary
        await settle(pilot)
        assert_essentials_shown(app.screen)
        await pilot.press("enter")  # pre-flight
        await settle(pilot, 5)
        shown = assert_essentials_shown(app.screen)
        assert "edit_from_check" in shown and "override_warnings" in shown
        assert "enter Launch" in app.screen.query_one(KeyFooter).rendered_text()


async def test_no_essential_footer_key_is_hidden_at_80x24_monitor():
    from tests.tui.monitor_support import Gate, ScriptedBackend, make_spec, running_script, wait_for
    from tests.tui.monitor_support import make_app as monitor_app
    from tui.screens.monitor import RunMonitorScreen

    app = monitor_app(ScriptedBackend(running_script(Gate())))
    async with app.run_test(size=SMALL) as pilot:
        ctrl = app.launch_spec(make_spec())
        await wait_for(pilot, lambda: isinstance(app.screen, RunMonitorScreen) and app.screen.batches > 0)
        await settle(pilot)
        shown = assert_essentials_shown(app.screen)
        assert {"monitor_recovery", "monitor_cancel_run", "quit", "help", "monitor_back"} <= set(shown)
        await ctrl.cleanup(2.0)


async def test_no_essential_footer_key_is_hidden_at_80x24_results_and_matrix():
    from tests.tui.results_support import seed_results, wait_loaded
    from tui.screens.matrix import MatrixScreen
    from tui.screens.results import ResultsListScreen, ResultsScreen

    seed_results(state_root())
    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot)
        await pilot.press("R")
        await wait_loaded(pilot, ResultsListScreen)
        assert_essentials_shown(app.screen)
        await pilot.press("enter")
        await wait_loaded(pilot, ResultsScreen)
        shown = assert_essentials_shown(app.screen)
        assert {"results_close", "results_next_tab", "help"} <= set(shown)
        await pilot.press("escape", "escape")
        await settle(pilot)
        app.push_screen(MatrixScreen())
        await settle(pilot)
        assert_essentials_shown(app.screen)


async def test_every_screen_names_an_essential_set():
    """A screen with a footer that names no essential keys would let the footer drop anything."""
    from tui.screens.matrix import MatrixScreen
    from tui.screens.monitor import RunMonitorScreen
    from tui.screens.results import CompareScreen, ResultsListScreen, ResultsScreen
    from tui.screens.sweep import SweepMonitorScreen
    from tui.screens.wizard import WizardScreen

    for cls in (RunsScreen, MatrixScreen, RunMonitorScreen, SweepMonitorScreen, ResultsScreen, CompareScreen,
                ResultsListScreen, WizardScreen):
        names = getattr(cls, "FOOTER", ())
        assert names and all(keys.ESSENTIAL.get(n) for n in names), cls.__name__
    every_id = {k.id for k in keys.KEYS} | {"monitor_back", "monitor_recovery", "monitor_cancel_run"}
    for name, ids in keys.ESSENTIAL.items():
        assert set(ids) <= every_id, (name, set(ids) - every_id)


# --------------------------------------------------------------------- colours


def _row_styles(table: DataTable) -> dict[str, tuple]:
    """The table's row styles as a 16-colour terminal shows them: (fg, bg, bold)."""
    out = {}
    for part in ("header", "cursor", "even-row", "odd-row", "hover"):
        style = table.rich_style + table.get_component_rich_style(f"datatable--{part}")
        fg = style.color.downgrade(ColorSystem.STANDARD).number if style.color else None
        bg = style.bgcolor.downgrade(ColorSystem.STANDARD).number if style.bgcolor else None
        out[part] = (fg, bg, bool(style.bold))
    return out


@pytest.mark.parametrize("theme", ["textual-dark", "textual-light", "nord", "gruvbox"])
async def test_16_colours_the_cursor_row_differs_from_every_other_row_style(theme):
    seed_store(state_root())
    app = make_app(colours16=True)
    app.theme = theme
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot)
        assert "-c16" in app.classes
        table = app.screen.query_one("#runs-table", VirtualTable)
        for focused in (True, False):
            if not focused:
                app.screen.set_focus(None)
                await settle(pilot)
            styles = _row_styles(table)
            cursor = styles.pop("cursor")
            for part, style in styles.items():
                assert cursor[:2] != style[:2], f"{theme}: cursor {cursor} is {part} {style} (focused={focused})"


def test_16_colour_terminals_are_detected_as_textual_detects_them():
    from tui.terminal import has_16_colours

    assert has_16_colours({"TERM": "screen"}) and has_16_colours({"TERM": "linux"})
    assert not has_16_colours({"TERM": "xterm-256color"}) and not has_16_colours({"TERM": "screen-256color"})
    assert not has_16_colours({"TERM": "screen", "COLORTERM": "truecolor"})


# ------------------------------------------------------------------------ help


async def test_help_wraps_under_its_column_and_lists_this_screens_keys_first():
    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpDialog)
        body = text_of(app.screen.query_one("#help-keys", Static))
        lines = body.splitlines()
        assert lines[0].startswith("This screen: Runs")
        # a description that wraps continues under its own column, never at column 0
        help_line = next(i for i, line in enumerate(lines) if " quit " in line and "Quit (asks" in line)
        assert lines[help_line + 1].startswith(" " * 30) and lines[help_line + 1].strip()
        assert all(len(line) <= 80 for line in lines)
        await pilot.press("f1")
        await settle(pilot)
        assert isinstance(app.screen, RunsScreen)


# ------------------------------------------------------------------- runs list


async def test_runs_list_groups_a_fix_run_under_its_parent_and_names_the_family():
    seed_family(state_root())
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#runs-table", VirtualTable)
        ids = [table.coordinate_to_cell_key((i, 0)).row_key.value for i in range(table.row_count)]
        parent, child = "nov22-llama-2-7b-hf-summarization", "nov22-llama-2-7b-hf-summarization-fix"
        assert ids.index(child) == ids.index(parent) + 1  # right under it, though it started later
        assert str(table.get_row(child)[1]) == f"↳ {child}"
        table.move_cursor(row=ids.index(child))
        await settle(pilot)
        detail = text_of(app.screen.query_one("#runs-detail", Static))
        assert f"fix of {parent} (Reduce context)" in detail
        table.move_cursor(row=ids.index(parent))
        await settle(pilot)
        assert f"relaunched as {child}" in text_of(app.screen.query_one("#runs-detail", Static))


async def test_enter_in_the_runs_filter_opens_the_best_match():
    seed_store(state_root())
    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"detached", "enter")
        await settle(pilot)
        assert isinstance(app.screen, FakeMonitor)  # the detached run, attached


async def test_palette_names_the_key_of_new_experiment():
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        from tui.palette import SweepdeckCommands

        provider = SweepdeckCommands(app.screen)
        found = {name: key for name, _, key, _ in provider.commands()}
        assert found["New experiment"] == "n"
        await pilot.press("n")
        await settle(pilot)
        provider = SweepdeckCommands(app.screen)
        found = {name: key for name, _, key, _ in provider.commands()}
        assert found["New experiment"] == "n on the runs list"  # elsewhere n is something else


# ------------------------------------------------------------------- wizard


async def to_review(pilot):
    await pilot.press("n")
    await settle(pilot)
    await pilot.press(*"qwen-1.5b", "enter")
    await settle(pilot)
    await pilot.press("enter")
    await settle(pilot)
    return pilot.app.screen


async def test_enter_goes_forward_on_every_wizard_step_and_launches_at_the_end():
    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        wizard = await to_review(pilot)
        assert wizard.index == 2
        await pilot.press("enter")  # the review: enter is Next here too (e edits)
        await settle(pilot)
        assert wizard.index == 3
        await pilot.press("enter")  # summary
        await settle(pilot, 5)
        assert wizard.index == 4
        await pilot.press("enter")  # pre-flight passed: enter launches
        await settle(pilot)
        assert isinstance(app.screen, FakeMonitor) and app.fake_backend.launched


async def test_the_confirm_first_warning_goes_once_confirmed():
    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        wizard = await to_review(pilot)
        table = wizard.query_one("#review-table", DataTable)
        table.move_cursor(row=table.get_row_index("engine.max_model_len"))
        await pilot.press("e", "ctrl+u", *"2048", "enter")
        await pilot.press("enter")  # refused: not confirmed
        await settle(pilot)
        status = wizard.query_one("#wizard-status", Static)
        assert "CONFIRM FIRST" in text_of(status) and status.display
        await pilot.press("y")
        await settle(pilot)
        assert "CONFIRM FIRST" not in text_of(status) and not status.display


async def test_preflight_shows_the_whole_detail_and_its_fix_as_a_key_to_the_setting():
    detail = "TP=2 on the local backend: the simulator only scales its timing model, so the numbers mean little"
    fix = "Use --tp 1 unless this machine has that many GPUs."
    app = make_app(checks=[Check("Tensor parallel", "warn", detail, fix)])
    async with app.run_test(size=SMALL) as pilot:
        wizard = await to_review(pilot)
        await pilot.press("enter", "enter")
        await settle(pilot, 5)
        fix = text_of(wizard.query_one("#preflight-fix", Static))
        assert detail in " ".join(fix.split())  # wrapped, never cut off
        assert "Use TP 1 unless" in fix and "--tp" not in fix and "e: change TP in the review" in fix
        await pilot.press("e")
        await settle(pilot)
        assert wizard.index == 2
        editor = wizard.query_one("#review-edit", Input)
        assert editor.has_focus and editor.value == "1"
        assert "f8 Next" in wizard.query_one(KeyFooter).rendered_text()  # enter applies the edit here


async def test_simulator_failure_demonstration_reaches_the_local_backend(tmp_path):
    from backends.cleanup import CleanupRegistry
    from backends.local import LocalBackend, free_port
    from config.profiles import fields_for
    from config.schema import validate
    from config.settings import Profile
    from tui.screens.dialogs import ChoiceDialog

    app = make_app()
    profile = Profile("local", "local", validate(fields_for("local"), {"port": free_port()}, "test", "local"))
    real = LocalBackend(app.settings, profile, registry=CleanupRegistry())
    app._backends_arg = {"local": real}
    async with app.run_test(size=SMALL) as pilot:
        wizard = await to_review(pilot)
        await pilot.press("enter", "b")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, ChoiceDialog)
        options = dialog.query_one("#choice-options", OptionList)
        ids = [o.id for o in options.options]
        assert "local::oom" in ids
        label = str(options.get_option("local::oom").prompt)
        assert "DEMONSTRATION" in label and "CUDA OOM" in label
        options.highlighted = ids.index("local::oom")
        await pilot.press("enter")
        await settle(pilot)
        assert wizard.state.sim_fail == "oom"
        assert "DEMONSTRATION" in text_of(wizard.query_one("#summary-body", Static))
        demo = app.backend_for("local", None, demo="oom")
        assert demo is not real and demo.sim_args == ["--fail", "oom"] and real.sim_args == []
        assert "--fail" in demo.server_argv(wizard.state.spec, 8000)


# --------------------------------------------------------------- quick command


async def test_a_misspelling_is_asked_about_never_taken():
    app = make_app(with_profiles=True)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("colon", *"qwen-1.5b chatbt on mertt", "enter")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, SpellingDialog) and dialog.word == "chatbt"
        assert ("chatbot", "workload preset") in dialog.suggestions
        await pilot.press("1")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, SpellingDialog) and dialog.word == "mertt"
        assert dialog.suggestions[0][0] == "mert"
        await pilot.press("enter")
        await settle(pilot)
        from tui.screens.wizard import WizardScreen

        assert isinstance(app.screen, WizardScreen)
        spec = app.screen.state.spec
        assert spec.workload.app == "chatbot" and (spec.backend, spec.profile) == ("tekton", "mert")


async def test_every_unknown_word_is_shown_when_nothing_can_be_asked():
    app = make_app(with_profiles=True)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("colon", *"qwen-1.5b frobnicate chatbt tp two", "enter")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, QuickCommandDialog)
        error = text_of(dialog.query_one("#quick-error", Static))
        assert "'frobnicate'" in error and "'chatbt'" in error and "tp needs a value" in error
        assert "did you mean chatbot (workload preset)" in error


async def test_escape_in_the_spelling_dialog_returns_to_the_line():
    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("colon", *"qwen-1.5b chatbt", "enter")
        await settle(pilot)
        assert isinstance(app.screen, SpellingDialog)
        await pilot.press("escape")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, QuickCommandDialog)
        assert dialog.query_one(Input).value == "qwen-1.5b chatbt" and dialog.query_one(Input).has_focus
        assert "'chatbt'" in text_of(dialog.query_one("#quick-error", Static))


# ------------------------------------------------------------------ recovery


async def test_recovery_lists_what_was_relaunched_and_asks_before_the_same_fix_again():
    from backends.events import Alert
    from backends.lineage import Relaunch
    from tests.tui.monitor_support import make_spec
    from tui.screens.recovery import RecoveryDialog

    fixes = [Fix("Reduce context", {"engine.max_model_len": 2048}, "max_model_len 4096 -> 2048"),
             Fix("Reduce batch", {"engine.max_num_seqs": 128}, "max_num_seqs 256 -> 128")]
    alert = Alert("error", "CUDA out of memory: the GPU ran out of memory.", diagnosis="cuda-oom", fixes=fixes)
    done = [Relaunch("run-fix", "run", "Reduce context", {"engine.max_model_len": 2048}, "failed")]
    answers = []
    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        app.push_screen(RecoveryDialog(alert, make_spec(), relaunched=done), answers.append)
        await settle(pilot)
        dialog = app.screen
        lineage = text_of(dialog.query_one("#recovery-lineage", Static))
        assert "run-fix — Reduce context (failed)" in lineage
        keys_line = dialog.query_one("#recovery-keys", Static)
        assert keys_line.region.y + 1 <= SMALL[1] and keys_line.region.height == 1  # in view at 80x24
        await pilot.press("1")  # the fix already launched: asked first
        await settle(pilot)
        assert isinstance(app.screen, ConfirmDialog)
        assert "already launched from this run as run-fix" in text_of(app.screen.query_one("#confirm-message", Static))
        await pilot.press("n")
        await settle(pilot)
        assert app.screen is dialog and answers == []
        await pilot.press("2")  # a new fix: no question
        await settle(pilot)
        assert answers == [fixes[1]]


async def test_monitor_header_keeps_the_model_and_shortens_the_parent_at_80_columns():
    import dataclasses

    from tests.tui.monitor_support import ScriptedBackend, make_spec, ok_script, wait_for
    from tests.tui.monitor_support import make_app as monitor_app
    from tui.screens.monitor import RunMonitorScreen

    parent = "nov22-llama-2-7b-hf-summarization-with-a-long-name"
    app = monitor_app(ScriptedBackend(ok_script()))
    async with app.run_test(size=SMALL) as pilot:
        app.launch_spec(dataclasses.replace(make_spec(), parent=parent))
        await wait_for(pilot, lambda: isinstance(app.screen, RunMonitorScreen) and app.screen.batches > 0)
        await settle(pilot)
        header = text_of(app.screen.query_one("#monitor-header", Static)).splitlines()
        assert len(header) == 2 and all(len(line) <= 80 for line in header)
        assert "Qwen2.5-Math-1.5B · chatbot" in header[1]
        # the parent's name is shortened in the middle (both ends say which run), not dropped
        assert "fix of nov22-" in header[1] and "…" in header[1] and header[1].rstrip().endswith("name")


def test_shorten_middle_keeps_both_ends():
    from tui.screens.monitor import shorten_middle

    text = "nov22-llama-2-7b-hf-summarization"
    short = shorten_middle(text, 20)
    head, tail = short.split("…")
    assert len(short) == 20 and text.startswith(head) and text.endswith(tail) and len(head) >= 9 and len(tail) >= 9
    assert shorten_middle("short", 20) == "short"
