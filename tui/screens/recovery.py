"""The recovery dialog: a diagnosed failure, the current settings, and fixes to relaunch with.

Opened by the run monitor when an :class:`~backends.events.Alert` carries a
diagnosis (CUDA OOM, trust_remote_code, image pull...). The choices are the
alert's suggested fixes, in order, plus "Describe a custom fix", a line in the
quick-command grammar (``max_model_len=2048``, ``reduce max-num-seqs to 64``,
``add --enforce-eager``) applied to the current spec by
:func:`config.quick.apply_quick`. The dialog answers with the chosen
:class:`~backends.events.Fix`, the custom-fixed spec, or None (escape).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from backends.events import Alert
from config.errors import SweepdeckError

if TYPE_CHECKING:
    from backends.events import Fix
    from backends.lineage import Relaunch
    from config.catalog import Catalogs
    from config.settings import Settings
    from config.spec import ExperimentSpec

CUSTOM = "custom"


def current_settings(spec: ExperimentSpec, *, image: bool = False) -> str:
    """The settings a recovery usually changes, on one or two lines."""
    e = spec.engine
    line = (
        f"Now: TP={e.tp} · max_model_len={e.max_model_len} · max_num_seqs={e.max_num_seqs} · "
        f"max_num_batched_tokens={e.max_num_batched_tokens}"
    )
    if e.extra_args:
        line += "\nextra args: " + " ".join(e.extra_args)
    if image:
        line += f"\nimage: {e.image}"
    return line


class RecoveryDialog(ModalScreen["Fix | ExperimentSpec | None"]):
    """Choose a fix for a diagnosed failure.

    Args:
        alert: The Alert with ``diagnosis`` and ``fixes``.
        spec: The failed run's spec.
        catalogs: Catalogs for a custom fix (None: the built-in ones).
        settings: User settings (profile names in a custom fix).
        relaunched: The runs already relaunched from this one (:func:`backends.lineage.relaunches`):
            listed, and choosing the same fix again asks first.
    """

    DEFAULT_CLASSES = "dialog-screen"
    DEFAULT_CSS = """
    RecoveryDialog #recovery-dialog { width: 90; height: auto; max-height: 95%; }
    RecoveryDialog #recovery-about { height: auto; max-height: 6; }
    RecoveryDialog #recovery-message { height: auto; }
    RecoveryDialog #recovery-evidence { color: $text-muted; height: 1; }
    RecoveryDialog #recovery-current { height: auto; text-style: bold; padding: 1 0 0 0; }
    RecoveryDialog #recovery-lineage { height: auto; max-height: 4; padding: 1 0 0 0; color: $text-warning; }
    RecoveryDialog #recovery-fixes { height: auto; max-height: 8; margin: 1 0 0 0; border: none; padding: 0; }
    RecoveryDialog #recovery-keys { dock: bottom; height: 1; color: $text-muted; }
    RecoveryDialog #recovery-custom { display: none; margin: 1 0 0 0; }
    RecoveryDialog #recovery-error { color: $text-error; height: auto; display: none; }
    RecoveryDialog #recovery-error.shown { display: block; }
    """

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="recovery_cancel"),
        Binding("c", "custom", "Custom fix", id="recovery_custom"),
        *[Binding(str(n), f"choose_number({n})", show=False, id=f"recovery_choose_{n}") for n in range(1, 10)],
    ]

    def __init__(
        self,
        alert: Alert,
        spec: ExperimentSpec,
        catalogs: Catalogs | None = None,
        *,
        settings: Settings | None = None,
        relaunched: list[Relaunch] | None = None,
    ) -> None:
        super().__init__()
        self.alert = alert
        self.spec = spec
        self.catalogs = catalogs
        self.settings = settings
        self.relaunched = list(relaunched or [])

    def compose(self) -> ComposeResult:
        title, _, message = self.alert.message.partition(": ")
        if not message:
            title, message = (self.alert.diagnosis or self.alert.kind), self.alert.message
        with Vertical(id="recovery-dialog", classes="dialog"):
            yield Label(f"✘ {title}", classes="dialog-title", id="recovery-title")
            # What went wrong scrolls on its own; the fixes and the keys stay in view (80x24).
            with VerticalScroll(id="recovery-about"):
                yield Static(message, id="recovery-message")
                if self.alert.evidence:
                    evidence = self.alert.evidence
                    evidence = evidence if len(evidence) <= 160 else evidence[:157] + "…"
                    yield Static(Text("log: " + evidence, no_wrap=True, overflow="ellipsis"), id="recovery-evidence")
                now = current_settings(self.spec, image=self.alert.diagnosis == "image-pull")
                yield Static(now, id="recovery-current")
            if self.relaunched:  # outside the scrolling part: always in view, next to the fixes it names
                yield Static(self._lineage_text(), id="recovery-lineage")
            options = []
            for n, fix in enumerate(self.alert.fixes, 1):
                label = Text()
                label.append(f"{n}  {fix.label}", style="bold")
                if fix.description:
                    label.append(f" — {fix.description}")
                done = self.already(fix.changes)
                if done is not None:
                    label.append(f"  [already launched as {done.id}]", style="italic")
                options.append(Option(label, id=f"fix-{n - 1}"))
            custom = Text("c  Describe a custom fix… (e.g. max_model_len=2048, add --enforce-eager)")
            options.append(Option(custom, id=CUSTOM))
            yield OptionList(*options, id="recovery-fixes")
            yield Input(placeholder="a change in quick-command words, enter to relaunch", id="recovery-custom")
            yield Static("", id="recovery-error")
            yield Static(
                Text("enter/1-9: relaunch as a new run · c: custom fix · esc: cancel",
                     no_wrap=True, overflow="ellipsis"),
                id="recovery-keys",
            )

    def _lineage_text(self) -> Text:
        text = Text("Already relaunched from this run:", style="bold")
        for r in self.relaunched[-3:]:
            text.append(f"\n  ↳ {r.id} — {r.label}" + (f" ({r.state})" if r.state else ""))
        if len(self.relaunched) > 3:
            text.append(f"\n  … and {len(self.relaunched) - 3} more (runs list)")
        return text

    def already(self, changes: dict[str, Any]) -> Relaunch | None:
        """The latest relaunch that made exactly these changes, if any."""
        return next((r for r in reversed(self.relaunched) if r.same_fix(changes)), None)

    def _choose(self, choice: Fix | ExperimentSpec, changes: dict[str, Any], label: str) -> None:
        """Answer with ``choice``; a fix launched before is asked about first."""
        done = self.already(changes)
        if done is None:
            self.dismiss(choice)
            return
        from tui.screens.dialogs import ConfirmDialog

        def answer(yes: bool | None) -> None:
            if yes:
                self.dismiss(choice)

        self.app.push_screen(ConfirmDialog(
            "Launch this fix again?",
            f"“{label}” was already launched from this run as {done.id}"
            + (f" ({done.state})" if done.state else "") + ".\n\nLaunch it again as another new run?",
            yes="Launch again", no="Keep",
        ), answer)

    @on(OptionList.OptionSelected, "#recovery-fixes")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id == CUSTOM:
            self.action_custom()
            return
        index = int(str(event.option.id).removeprefix("fix-"))
        fix = self.alert.fixes[index]
        self._choose(fix, fix.changes, fix.label)

    def action_choose_number(self, n: int) -> None:
        if isinstance(self.focused, Input):
            return
        if 1 <= n <= len(self.alert.fixes):
            fix = self.alert.fixes[n - 1]
            self._choose(fix, fix.changes, fix.label)

    def action_custom(self) -> None:
        field = self.query_one("#recovery-custom", Input)
        field.display = True
        field.focus()

    def action_cancel(self) -> None:
        field = self.query_one("#recovery-custom", Input)
        if field.display and self.focused is field:
            field.display = False
            self.query_one("#recovery-fixes", OptionList).focus()
            return
        self.dismiss(None)

    @on(Input.Submitted, "#recovery-custom")
    def _custom_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        try:
            spec = self.apply_custom(event.value)
        except SweepdeckError as exc:
            error = self.query_one("#recovery-error", Static)
            error.update(Text("✘ " + exc.message + (f"\n  {exc.hint}" if exc.hint else "")))
            error.add_class("shown")
            return
        changes = {c.field: c.value for c in spec.diff(self.spec) if c.field not in ("experiment_id", "parent")}
        self._choose(spec, changes, event.value.strip())

    def apply_custom(self, text: str) -> ExperimentSpec:
        """The spec with a custom fix applied (quick-command grammar).

        Raises:
            SweepdeckError: empty or invalid text (shown inline).
        """
        text = text.strip()
        if not text:
            raise SweepdeckError("Describe the change.", "Example: max_model_len=2048 or add --enforce-eager")
        from config.quick import apply_quick

        catalogs = self.catalogs
        if catalogs is None:
            from config.catalog import load_catalogs

            catalogs = load_catalogs()
        kwargs: dict[str, Any] = {}
        if self.settings is not None:
            kwargs["settings"] = self.settings
        new = apply_quick(self.spec, text, catalogs, **kwargs)
        if new == self.spec:
            raise SweepdeckError(f"{text!r} changes nothing.", "Example: max_model_len=2048")
        return new


__all__ = ["RecoveryDialog", "current_settings"]
