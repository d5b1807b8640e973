"""What every wizard step shares: the :class:`Step` base, the error line, clipping to a column."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.containers import Vertical

from config.errors import SweepdeckError
from tui import bindings as keys

if TYPE_CHECKING:
    from tui.screens.wizard import WizardScreen
    from tui.screens.wizard.state import WizardState


def error_text(exc: SweepdeckError) -> Text:
    text = Text("✗ ERROR: ", style="bold")
    text.append(exc.message)
    if exc.hint:
        text.append("\n  " + exc.hint)
    return text


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


class Step(Vertical):
    """Base of every step."""

    TITLE = ""
    SCOPE = ""

    @property
    def wizard(self) -> WizardScreen:
        return self.screen  # type: ignore[return-value]  # steps live on the wizard screen

    @property
    def state(self) -> WizardState:
        return self.wizard.state

    def activate(self) -> None:
        """Called when the step is shown: refresh from the state and focus."""

    async def commit(self) -> bool:
        """Take the step's current choice; False (with a message shown) blocks Next."""
        return True

    def key_for(self, binding_id: str) -> str:
        return keys.display_key(keys.effective_key(keys.BY_ID[binding_id], self.app.user_keys))  # type: ignore[attr-defined]  # a SweepdeckApp
