"""Pilot tests of the dialogs: quick command, quit, confirm, disambiguation, help."""

from __future__ import annotations

from textual.app import App
from textual.widgets import Input, Static

from tests.tui.app_fakes import make_app, shared_catalogs
from tui.screens.dialogs import (
    ConfirmDialog,
    DisambiguationDialog,
    QuickCommandDialog,
    QuitDialog,
)
from tui.screens.wizard import WizardScreen

SIZE = (100, 30)


def text_of(widget: Static) -> str:
    return str(widget.render())


class Host(App):
    """Pushes one dialog and records its answer."""

    def __init__(self, dialog) -> None:
        super().__init__()
        self.dialog = dialog
        self.answers: list = []

    def on_mount(self) -> None:
        self.push_screen(self.dialog, self.answers.append)


async def answer(dialog, *keys_: str):
    app = Host(dialog)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press(*keys_)
        await pilot.pause()
    return app.answers


# ------------------------------------------------------------ quick command


async def test_quick_command_fills_the_review():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("colon")
        await pilot.pause()
        assert isinstance(app.screen, QuickCommandDialog)
        await pilot.press(*"llama3-70b chatbot TP=4 max_num_seqs=64", "enter")
        await pilot.pause()
        wizard = app.screen
        assert isinstance(wizard, WizardScreen)
        assert wizard.index == 2  # vLLM review
        spec = wizard.state.spec
        assert spec.model == "meta-llama/Llama-3.3-70B-Instruct"
        assert spec.engine.tp == 4 and spec.engine.max_num_seqs == 64
        assert spec.workload.app == "chatbot"
        assert wizard.state.needs_confirmation  # TP/seqs differ from the catalog
        await pilot.press("escape")  # back to the workload step: chatbot is highlighted
        await pilot.pause()
        assert wizard.index == 1


async def test_quick_command_ambiguous_alias_asks_first():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("colon")
        await pilot.press(*"llama-7b summarization", "enter")
        await pilot.pause()
        assert isinstance(app.screen, DisambiguationDialog)
        await pilot.press("1")
        await pilot.pause()
        wizard = app.screen
        assert isinstance(wizard, WizardScreen)
        assert wizard.state.spec.model == "meta-llama/Llama-2-7b-hf"
        assert wizard.state.spec.workload.app == "summarization"


async def test_quick_command_errors_inline_and_keeps_the_text():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("colon")
        await pilot.press(*"llama2-7b chatbot tp=zero", "enter")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, QuickCommandDialog)
        error = dialog.query_one("#quick-error", Static)
        assert error.has_class("shown") and "ERROR" in text_of(error)
        assert dialog.query_one(Input).value == "llama2-7b chatbot tp=zero"
        dialog.query_one(Input).value = "chatbot"
        await pilot.press("enter")
        await pilot.pause()
        assert "model" in text_of(error).lower()
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, (QuickCommandDialog, WizardScreen))


async def test_quick_command_inside_wizard_replaces_it():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        await pilot.pause()
        # The model filter has focus: ':' types; ctrl+p → palette would work too.
        app.action_quick_command()
        await pilot.pause()
        await pilot.press(*"qwen-7b doc", "enter")
        await pilot.pause()
        assert sum(isinstance(s, WizardScreen) for s in app.screen_stack) == 1
        assert app.screen.state.spec.workload.app == "doc"


# -------------------------------------------------------------------- quit


async def test_quit_dialog_keys():
    assert await answer(QuitDialog(["run a (running)"]), "enter") == ["cleanup"]
    assert await answer(QuitDialog(["run a (running)"]), "d") == ["detach"]
    assert await answer(QuitDialog(["run a (running)"]), "escape") == ["cancel"]
    assert await answer(QuitDialog(["run a (running)"]), "down", "enter") == ["detach"]


async def test_quit_dialog_lists_what_is_live():
    dialog = QuitDialog([f"thing {i}" for i in range(9)])
    app = Host(dialog)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        live = text_of(dialog.query_one("#quit-live", Static))
        assert "thing 0" in live and "and 3 more" in live


# ----------------------------------------------------------------- confirm


async def test_confirm_dialog_defaults_to_no():
    assert await answer(ConfirmDialog("Delete?", "really?"), "enter") == [False]
    assert await answer(ConfirmDialog("Delete?", "really?"), "y") == [True]
    assert await answer(ConfirmDialog("Delete?", "really?"), "escape") == [False]


# ---------------------------------------------------------- disambiguation


async def test_disambiguation_by_number_and_escape():
    catalogs = shared_catalogs()
    assert await answer(DisambiguationDialog.for_alias(catalogs, "llama"), "3") == ["meta-llama/Llama-3.3-70B-Instruct"]
    assert await answer(DisambiguationDialog.for_alias(catalogs, "llama-70b"), "escape") == [None]


async def test_disambiguation_warns_about_large_options():
    dialog = DisambiguationDialog.for_alias(shared_catalogs(), "llama-70b")
    app = Host(dialog)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        shown = " ".join(str(o.prompt) for o in dialog.query_one("#disambiguation-options").options)
        assert "This is a 140 GB model" in shown and "context 131,072" in shown
