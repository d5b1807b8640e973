"""Modal dialogs: quit, model disambiguation, confirm, quick command, help.

Every dialog answers with :meth:`ModalScreen.dismiss`; escape always means
"cancel" and every choice has a key, so no dialog needs a mouse.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from config.errors import AmbiguousModel, SweepdeckError
from tui import bindings as keys

if TYPE_CHECKING:
    from config.catalog import Catalogs, ModelInfo
    from config.settings import Settings
    from config.spec import ExperimentSpec


# ----------------------------------------------------------------------- quit

QUIT_CLEANUP = "cleanup"
QUIT_DETACH = "detach"
QUIT_CANCEL = "cancel"


class TypeAhead:
    """For dialogs whose first job is a text box: keys typed while the dialog was still opening are kept.

    Until the box has focus (it gets it in ``on_mount``), keys go to the screen itself and were lost;
    they arrive here afterwards, in order, and go into the box.
    """

    def on_key(self, event: events.Key) -> None:
        if not (event.is_printable and event.character):
            return
        boxes = self.query(Input)  # type: ignore[attr-defined] # mixed into a Screen
        if not boxes:
            return
        box = boxes.first()
        if not box.has_focus:
            box.focus()
        box.insert_text_at_cursor(event.character)
        event.stop()
        event.prevent_default()

class QuitDialog(ModalScreen[str]):
    """Quit with something live: clean up (default), detach, or cancel.

    Args:
        live: Short descriptions of what is live (run ids, cleanup labels).
    """

    DEFAULT_CLASSES = "dialog-screen"
    BINDINGS = [
        Binding("c", "choose('cleanup')", "Clean up", id="quit_dialog_cleanup"),
        Binding("d", "choose('detach')", "Detach", id="quit_dialog_detach"),
        Binding("escape,n", "choose('cancel')", "Cancel", id="quit_dialog_cancel"),
        Binding("left,up", "app.focus_previous", "Previous choice", show=False, id="quit_dialog_previous"),
        Binding("right,down", "app.focus_next", "Next choice", show=False, id="quit_dialog_next"),
    ]

    def __init__(self, live: list[str]) -> None:
        super().__init__()
        self.live = live

    def compose(self) -> ComposeResult:
        with Vertical(id="quit-dialog", classes="dialog"):
            yield Label("Quit sweepdeck?", classes="dialog-title")
            shown = self.live[:6]
            more = len(self.live) - len(shown)
            lines = ["Still live:"] + [f"  • {item}" for item in shown]
            if more > 0:
                lines.append(f"  … and {more} more")
            yield Static("\n".join(lines), id="quit-live")
            yield Static(
                "Clean up stops and removes everything this session started. "
                "Detach keeps runs going; reattach later with  a  on the runs list "
                "or `sweepdeck attach`.",
                classes="dialog-help",
            )
            with Vertical(classes="dialog-buttons-vertical"):
                yield Button("Clean up everything  \\[c]", id="quit-cleanup", variant="error", compact=True)
                yield Button("Detach (keep running; reattach later)  \\[d]", id="quit-detach", variant="primary",
                             compact=True)
                yield Button("Cancel  \\[esc]", id="quit-cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#quit-cleanup", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        choice = (event.button.id or "quit-cancel").removeprefix("quit-")
        self.dismiss(choice)

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)


class CleanupScreen(ModalScreen[None]):
    """Shown while cleanup runs (it is bounded; the app exits afterwards)."""

    DEFAULT_CLASSES = "dialog-screen"

    def __init__(self, pending: list[str], verb: str = "Cleaning up") -> None:
        super().__init__()
        self.pending = pending
        self.verb = verb

    def compose(self) -> ComposeResult:
        with Vertical(id="cleanup-dialog", classes="dialog"):
            yield Label(f"{self.verb}…", classes="dialog-title")
            body = "\n".join(f"  • {p}" for p in self.pending[:8]) or "  (nothing left to do)"
            yield Static(body, id="cleanup-pending")
            yield Static("This takes at most a few seconds; stuck steps are forced.", classes="dialog-help")


# ------------------------------------------------------------ disambiguation


def model_details(info: ModelInfo) -> str:
    """One line of facts about a model: context, size, download time, TP."""
    parts = []
    if info.context_limit:
        parts.append(f"context {info.context_limit:,}")
    if info.size_gb is not None:
        parts.append(f"{info.size_gb:g} GB")
    if info.download_time:
        parts.append(f"download {info.download_time}")
    if info.tp:
        parts.append("TP " + ",".join(str(t) for t in info.tp))
    return " · ".join(parts) or "no recommended settings in the catalog"


class _PickDialog(ModalScreen["str | None"]):
    """A dialog that answers one of its options (or None on escape).

    Subclasses compose an :class:`OptionList` whose options, in order, answer
    :attr:`answers`; 1–9 pick by number when :attr:`NUMBERED`.
    """

    DEFAULT_CLASSES = "dialog-screen"
    NUMBERED = True
    answers: list[str]
    initial = 0

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        options.highlighted = self.initial
        options.focus()

    def on_key(self, event) -> None:
        if self.NUMBERED and event.character and event.character.isdigit():
            n = int(event.character)
            if 1 <= n <= len(self.answers):
                event.stop()
                self.dismiss(self.answers[n - 1])

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.answers[event.option_index])

    def action_cancel(self) -> None:
        self.dismiss(None)


class DisambiguationDialog(_PickDialog):
    """Ask which model an ambiguous alias means; answers the chosen model id.

    Args:
        alias: What the user typed (``llama-7b``).
        prompt: The catalog's question (``Did you mean Llama 2 (7B) or Llama 3 (8B)?``).
        options: The catalog's option dicts (id, label, description).
        infos: The matching :class:`ModelInfo` per option id.
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="disambiguation_cancel")]

    def __init__(self, alias: str, prompt: str, options: list[dict], infos: dict[str, ModelInfo]) -> None:
        super().__init__()
        self.alias = alias
        self.prompt = prompt
        self.options = options
        self.infos = infos
        self.answers = [opt["id"] for opt in options]

    @classmethod
    def for_alias(cls, catalogs: Catalogs, alias: str) -> DisambiguationDialog:
        entry = catalogs.models.ambiguous[alias.strip().lower()]
        infos = {i.id: i for i in catalogs.models.options(alias)}
        return cls(alias, entry.get("prompt", "Which model do you mean?"), entry["options"], infos)

    def compose(self) -> ComposeResult:
        with Vertical(id="disambiguation-dialog", classes="dialog"):
            yield Label(f"“{self.alias}” is ambiguous", classes="dialog-title")
            yield Static(self.prompt, id="disambiguation-prompt")
            items = []
            for n, opt in enumerate(self.options, 1):
                info = self.infos.get(opt["id"])
                text = Text()
                text.append(f"{n}. {opt.get('label') or opt['id']}", style="bold")
                text.append(f" · {opt['id']}\n")
                if opt.get("description"):
                    text.append(f"   {opt['description']}\n")
                if info is not None:
                    text.append(f"   {model_details(info)}")
                    if info.large:
                        text.append(f"\n   ⚠ WARNING: {info.download_warning()}", style="bold")
                items.append(Option(text))
            yield OptionList(*items, id="disambiguation-options")
            yield Static("↑/↓ choose · enter select · 1-9 pick by number · esc cancel", classes="dialog-help")


class SpellingDialog(_PickDialog):
    """Ask which word an unknown word of a quick command meant; answers the chosen word (never a guess).

    Args:
        word: The word as typed (``chatbt``).
        text: The whole command, for context.
        suggestions: ``(word, what it is)`` pairs, closest first.
        note: What the word looked like it meant (``no profile named 'alvis' is configured``).
    """

    BINDINGS = [Binding("escape", "cancel", "Edit the line", id="spelling_cancel")]

    def __init__(self, word: str, text: str, suggestions: list[tuple[str, str]] | tuple, note: str = "") -> None:
        super().__init__()
        self.word = word
        self.text = text
        self.suggestions = list(suggestions)
        self.note = note
        self.answers = [word for word, _ in self.suggestions]

    def compose(self) -> ComposeResult:
        with Vertical(id="spelling-dialog", classes="dialog"):
            yield Label(f"“{self.word}” is not a word sweepdeck knows", classes="dialog-title")
            prompt = f"In: {self.text}\nDid you mean:"
            if self.note:
                prompt = f"In: {self.text}\n{self.note[0].upper()}{self.note[1:]}.\nDid you mean:"
            yield Static(prompt, id="spelling-prompt")
            items = []
            for n, (word, what) in enumerate(self.suggestions, 1):
                text = Text()
                text.append(f"{n}. {word}", style="bold")
                text.append(f" — {what}")
                items.append(Option(text))
            yield OptionList(*items, id="spelling-options")
            yield Static("↑/↓ choose · enter or 1-9 use it · esc: edit the line yourself", classes="dialog-help")


# -------------------------------------------------------------------- confirm


class ConfirmDialog(ModalScreen[bool]):
    """A yes/no question; escape and ``n`` answer no."""

    DEFAULT_CLASSES = "dialog-screen"
    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="confirm_yes"),
        Binding("escape,n", "answer(False)", "No", id="confirm_no"),
        Binding("left", "app.focus_previous", "Previous choice", show=False, id="confirm_previous"),
        Binding("right", "app.focus_next", "Next choice", show=False, id="confirm_next"),
    ]

    def __init__(self, title: str, message: str, yes: str = "Yes", no: str = "No") -> None:
        super().__init__()
        self.title_text = title
        self.message = message
        self.yes = yes
        self.no = no

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-dialog", classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.message, id="confirm-message")
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.yes}  \\[y]", id="confirm-yes", variant="error", compact=True)
                yield Button(f"{self.no}  \\[n]", id="confirm-no", variant="primary", compact=True)

    def on_mount(self) -> None:
        # The safe answer has the focus.
        self.query_one("#confirm-no", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm-yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


# -------------------------------------------------------------- quick command

QUICK_EXAMPLES = (
    "llama3-70b chatbot TP=4 in namespace mert",
    "qwen-1.5b summarization max_model_len=8k --enable-prefix-caching",
    "llama2-7b custom prompt=500 output=100 max_requests=20",
)


class QuickCommandDialog(TypeAhead, ModalScreen["ExperimentSpec | None"]):
    """``:`` — one line of the quick-command grammar → a filled-in spec.

    An ambiguous alias opens the disambiguation dialog and then parses again
    with the choice; any error is shown under the input and nothing changes.

    Args:
        catalogs: Loaded catalogs.
        settings: User settings (profile names, ``on alvis``).
        today: Date for the default experiment id.
        parse: Injected parser (``config.quick.parse_quick`` by default).
        taken: Returns True when an experiment id is already used in the run store.
    """

    DEFAULT_CLASSES = "dialog-screen"
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="quick_cancel")]

    def __init__(
        self,
        catalogs: Catalogs,
        settings: Settings | None = None,
        *,
        today: _dt.date | None = None,
        text: str = "",
        parse: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__()
        self.catalogs = catalogs
        self.settings = settings
        self.today = today
        self.initial = text
        self._parse = parse

    def compose(self) -> ComposeResult:
        with Vertical(id="quick-dialog", classes="dialog"):
            yield Label("Quick command", classes="dialog-title")
            yield Input(self.initial, placeholder=QUICK_EXAMPLES[0], id="quick-input")
            yield Static("", id="quick-error")
            yield Static(
                "Model, workload and settings in any order, e.g.\n"
                + "\n".join(f"  {e}" for e in QUICK_EXAMPLES)
                + "\nenter: open the vLLM review with this spec · esc: cancel",
                classes="dialog-help",
            )

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def show_error(self, exc: SweepdeckError) -> None:
        text = Text("✗ ERROR: ", style="bold")
        text.append(exc.message)
        unknown = getattr(exc, "unknown", None)
        if unknown is not None:
            # one line per unknown word and per other problem: every problem of the line at once
            for entry in unknown:
                text.append("\n  " + entry.line())
            for problem in getattr(exc, "problems", []):
                text.append(f"\n  {problem.message}" + (f" {problem.hint}" if problem.hint else ""))
        elif exc.hint:
            text.append("\n  " + exc.hint)
        error = self.query_one("#quick-error", Static)
        error.update(text)
        error.add_class("shown")

    def parse(self, text: str, model_choice: str | None = None) -> ExperimentSpec:
        parse = self._parse
        if parse is None:
            from config.quick import parse_quick as parse
        cmd = parse(text, self.catalogs, settings=self.settings, model_choice=model_choice, today=self.today)
        if cmd.spec is None:
            raise SweepdeckError(
                f"No model in {text!r}.", "Start with a model, e.g. " + QUICK_EXAMPLES[0]
            )
        return cmd.spec

    @on(Input.Submitted, "#quick-input")
    def _submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            self.show_error(SweepdeckError("Type a quick command first.", "Example: " + QUICK_EXAMPLES[0]))
            return
        self._try(text, None)

    def _try(self, text: str, choice: str | None) -> None:
        from config.quick import UnknownWords

        try:
            spec = self.parse(text, choice)
        except UnknownWords as exc:
            if exc.askable:
                self._ask_spelling(text, choice, list(exc.unknown))
            else:
                self.show_error(exc)
            return
        except AmbiguousModel as exc:
            dialog = DisambiguationDialog.for_alias(self.catalogs, exc.alias)

            def chosen(model_id: str | None) -> None:
                if model_id:
                    self._try(text, model_id)
                else:
                    self.query_one(Input).focus()

            self.app.push_screen(dialog, chosen)
            return
        except SweepdeckError as exc:
            self.show_error(exc)
            return
        except Exception as exc:  # a parser bug must not take the app down
            self.show_error(SweepdeckError(f"Cannot parse {text!r} ({type(exc).__name__}: {exc}).",
                                           "Rephrase it, or use n for the wizard."))
            return
        self.dismiss(spec)

    def _ask_spelling(self, text: str, choice: str | None, unknown: list) -> None:
        """Ask about each unknown word in turn; then parse the line with the chosen words (shown in the box)."""
        from config.quick import replace_word

        if not unknown:
            self.query_one(Input).value = text
            self._try(text, choice)
            return
        first, rest = unknown[0], unknown[1:]

        def chosen(word: str | None) -> None:
            if word is None:  # the user edits the line instead
                box = self.query_one(Input)
                box.value = text
                box.focus()
                self.show_error(SweepdeckError(f"{first.word!r} is not a known word.", first.line()))
                return
            self._ask_spelling(replace_word(text, first.word, word), choice, rest)

        self.app.push_screen(SpellingDialog(first.word, text, first.suggestions, first.note), chosen)

    def action_cancel(self) -> None:
        self.dismiss(None)


# ----------------------------------------------------------------------- help


class HelpKeys(Static):
    """The keys as three columns; a long description wraps in its own column (a hanging indent).

    Args:
        rows: ``(where, key, id, what)``; a new ``where`` starts a titled section.
    """

    DEFAULT_CSS = "HelpKeys { width: 1fr; }"  # the wrapping follows the dialog's width, not the text's
    KEY_WIDTH = 14
    ID_WIDTH = 24

    def __init__(self, rows: list[tuple[str, str, str, str]], **kw: Any) -> None:
        super().__init__(help_text(rows, 100, self.KEY_WIDTH, self.ID_WIDTH), **kw)
        self.rows = rows
        self._laid_out_at = 0

    def on_resize(self) -> None:
        # the wrapping depends on the width, known only now (and after every resize)
        if self.size.width and self.size.width != self._laid_out_at:
            self._laid_out_at = self.size.width
            self.update(help_text(self.rows, self.size.width, self.KEY_WIDTH, self.ID_WIDTH))


def help_text(rows: list[tuple[str, str, str, str]], width: int, key_width: int = 14, id_width: int = 24) -> Text:
    """The help table as text ``width`` columns wide, descriptions wrapped under themselves."""
    import textwrap

    what_width = max(20, width - key_width - id_width - 2)
    indent = " " * (2 + key_width + id_width)
    text = Text()
    last = None
    for where, key, bid, what in rows:
        if where != last:
            last = where
            text.append(("\n" if text else "") + where + "\n", style="bold underline")
        text.append(f"  {key:<{key_width - 1}} ", style="bold")
        text.append(f"{bid:<{id_width - 1}} ", style="italic")
        lines = textwrap.wrap(what, what_width) or [""]
        text.append(lines[0] + "\n")
        for line in lines[1:]:
            text.append(indent + line + "\n")
    return text


class HelpDialog(ModalScreen[None]):
    """Every key binding with its id (for remapping) and key; the keys of the screen underneath first.

    Args:
        user_keys: The user's remapping (binding id → key).
        other: Extra ``(scope title, key, id, description)`` rows — bindings of
            the screen underneath that are not in :mod:`tui.bindings`.
        here: The rows of the screen underneath (what works there now), shown first.
        here_title: Its section title.
    """

    DEFAULT_CLASSES = "dialog-screen"
    BINDINGS = [Binding("escape,q,question_mark,f1", "close", "Close", id="help_close")]

    def __init__(
        self,
        user_keys: dict[str, str],
        other: list[tuple[str, str, str, str]] | None = None,
        *,
        here: list[tuple[str, str, str]] | None = None,
        here_title: str = "This screen",
    ) -> None:
        super().__init__()
        self.user_keys = user_keys
        self.other = other or []
        self.here = here or []
        self.here_title = here_title

    def rows(self) -> list[tuple[str, str, str, str]]:
        out = [(self.here_title, key, bid, what) for key, bid, what in self.here]
        for spec in keys.KEYS:
            key = keys.effective_key(spec, self.user_keys)
            out.append((keys.SCOPE_TITLES.get(spec.scope, spec.scope), keys.display_key(key), spec.id,
                        spec.help or spec.description))
        out.append(("Everywhere", "ctrl+p", "palette", "Command palette: every action by name"))
        out.extend(self.other)
        return out

    def render_keys(self, width: int = 100) -> Text:
        return help_text(self.rows(), width)

    def compose(self) -> ComposeResult:
        with Vertical(id="help-dialog", classes="dialog"):
            yield Label("Keys", classes="dialog-title")
            with VerticalScroll(id="help-scroll"):
                yield HelpKeys(self.rows(), id="help-keys")
            yield Static(
                "Remap a key in your config by its id:  keys: {new_experiment: ctrl+n}  · ↑/↓ scroll · esc closes",
                classes="dialog-help",
            )

    def on_mount(self) -> None:
        self.query_one("#help-scroll").focus()

    def action_close(self) -> None:
        self.dismiss(None)


# ---------------------------------------------------------------- text input


class TextInputDialog(TypeAhead, ModalScreen["str | None"]):
    """Ask for one line of text, validated by ``check`` (raises SweepdeckError)."""

    DEFAULT_CLASSES = "dialog-screen"
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="input_cancel")]

    def __init__(self, title: str, value: str = "", *, help: str = "",
                 check: Callable[[str], Any] | None = None) -> None:
        super().__init__()
        self.title_text = title
        self.value = value
        self.help = help
        self.check = check

    def compose(self) -> ComposeResult:
        with Vertical(id="input-dialog", classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Input(self.value, id="input-dialog-input")
            yield Static("", id="input-dialog-error")
            if self.help:
                yield Static(self.help, classes="dialog-help")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        if self.check is not None:
            try:
                self.check(value)
            except SweepdeckError as exc:
                error = self.query_one("#input-dialog-error", Static)
                error.update(Text("✗ ERROR: " + exc.message + (f"\n  {exc.hint}" if exc.hint else "")))
                error.add_class("shown")
                return
        self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ChoiceDialog(_PickDialog):
    """Pick one of several ``(id, label)`` choices."""

    NUMBERED = False  # its help line offers enter and esc only
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="choice_cancel")]

    def __init__(self, title: str, choices: list[tuple[str, str]], current: str | None = None) -> None:
        super().__init__()
        self.title_text = title
        self.choices = choices
        self.current = current
        self.answers = [cid for cid, _ in choices]
        self.initial = self.answers.index(current) if current in self.answers else 0

    def compose(self) -> ComposeResult:
        with Vertical(id="choice-dialog", classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield OptionList(*(Option(label, id=cid) for cid, label in self.choices), id="choice-options")
            yield Static("enter select · esc cancel", classes="dialog-help")


__all__ = [
    "ChoiceDialog", "CleanupScreen", "ConfirmDialog", "DisambiguationDialog", "HelpDialog", "HelpKeys",
    "SpellingDialog",
    "QuickCommandDialog", "QuitDialog", "TextInputDialog", "model_details",
    "QUIT_CANCEL", "QUIT_CLEANUP", "QUIT_DETACH",
]
