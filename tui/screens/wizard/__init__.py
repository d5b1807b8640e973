"""New experiment: Model → Workload → vLLM review → Summary → Pre-flight → Launch.

One screen with one widget per step; the spec lives in
:class:`~tui.screens.wizard.state.WizardState` and is kept across steps in
both directions. Next (enter on every step, or f8 / ctrl+→) commits the
current step; Back (esc / ctrl+←) never loses anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import ContentSwitcher, Header, Static

from tui import bindings as keys
from tui.screens.wizard.state import WizardState
from tui.screens.wizard.steps import ModelStep, PreflightStep, ReviewStep, Step, SummaryStep, WorkloadStep
from tui.widgets.footer import KeyFooter

if TYPE_CHECKING:
    from config.spec import ExperimentSpec

STEP_IDS = ("model", "workload", "review", "summary", "preflight")
STEP_CLASSES: dict[str, type[Step]] = {
    "model": ModelStep,
    "workload": WorkloadStep,
    "review": ReviewStep,
    "summary": SummaryStep,
    "preflight": PreflightStep,
}


class WizardScreen(Screen):
    """The new-experiment wizard.

    Args:
        state: Choices so far (a quick command gives a filled one).
        start: Step to open on (``review`` after a quick command).
    """

    SCOPE = "wizard"
    BINDINGS = keys.bindings("wizard")
    FOOTER = ("wizard",)

    def __init__(self, state: WizardState, start: str = "model") -> None:
        super().__init__()
        self.state = state
        self.index = STEP_IDS.index(start)
        self._busy = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="wizard-steps")
        with ContentSwitcher(id="wizard-body", initial=STEP_IDS[self.index]):
            for step_id in STEP_IDS:
                yield STEP_CLASSES[step_id](id=step_id, classes="wizard-step")
        yield Static("", id="wizard-status")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.go(self.index)

    def footer_essential(self) -> tuple[str, ...]:
        """The step's own keys first, then Next / Back and the keys of every screen."""
        step = STEP_CLASSES[STEP_IDS[self.index]]
        return tuple(dict.fromkeys(keys.ESSENTIAL.get(step.SCOPE, ()) + keys.ESSENTIAL["wizard"]))

    def footer_description(self, binding_id: str | None) -> str | None:
        """On the pre-flight step, Next is Launch."""
        if binding_id == "wizard_next" and self.index == len(STEP_IDS) - 1:
            return "Launch"
        return None

    def step_index(self, step_id: str) -> int:
        return STEP_IDS.index(step_id)

    @property
    def step(self) -> Step:
        return self.query_one(f"#{STEP_IDS[self.index]}", Step)

    def breadcrumb(self) -> Text:
        """``✓ 1 Model › [2 Workload] › 3 vLLM review …`` — words and brackets, not only colour."""
        text = Text()
        for i, step_id in enumerate(STEP_IDS):
            title = STEP_CLASSES[step_id].TITLE
            if i:
                text.append(" › ")
            if i == self.index:
                text.append(f"[{i + 1} {title}]", style="bold reverse")
            elif i < self.index:
                text.append(f"✓ {i + 1} {title}")
            else:
                text.append(f"{i + 1} {title}", style="dim")
        return text

    def describe(self) -> str:
        """``New experiment · Qwen2.5-Math-1.5B · chatbot`` for the header."""
        spec = self.state.spec
        parts = ["New experiment"]
        if spec is not None:
            parts.append(spec.model.rsplit("/", 1)[-1])
            if self.index > 1 or self.state.workload is not None:
                parts.append(spec.workload.app)
        return " · ".join(parts)

    def go(self, index: int) -> None:
        """Show step ``index`` (no commit: use :meth:`action_next_step` for that)."""
        self.index = max(0, min(index, len(STEP_IDS) - 1))
        self.query_one(ContentSwitcher).current = STEP_IDS[self.index]
        self.query_one("#wizard-steps", Static).update(self.breadcrumb())
        self.sub_title = self.describe()
        self.set_status("")
        self.step.activate()
        self.refresh_bindings()

    def set_status(self, message: str | Text, error: bool = False) -> None:
        status = self.query_one("#wizard-status", Static)
        status.update(message)
        status.set_class(error, "error")
        status.display = bool(str(message))

    async def action_next_step(self) -> None:
        """Commit this step and move on; on the last step, launch."""
        if self._busy:
            return
        self._busy = True
        try:
            if not await self.step.commit():
                return
            if self.index == len(STEP_IDS) - 1:
                self.launch()
                return
            self.go(self.index + 1)
        finally:
            self._busy = False

    def action_previous_step(self) -> None:
        if self.index == 0:
            self.app.pop_screen()
            return
        self.go(self.index - 1)

    def launch(self) -> None:
        from config.errors import SweepdeckError
        from tui.screens.wizard.steps import error_text

        spec = self.state.need_spec()
        try:
            demo = self.state.demonstration()
            if demo:
                app: Any = self.app
                app.launch_spec(spec, backend=app.backend_for(spec.backend, spec.profile, demo=demo))
            else:
                self.app.launch_spec(spec)  # type: ignore[attr-defined]  # a SweepdeckApp
        except SweepdeckError as exc:
            # e.g. the experiment id was taken meanwhile: stay here, say why
            self.set_status(error_text(exc), error=True)

    @property
    def spec(self) -> ExperimentSpec | None:
        return self.state.spec


__all__ = ["STEP_IDS", "WizardScreen", "WizardState"]
