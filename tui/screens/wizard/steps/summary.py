"""Step 4, Summary: the whole experiment, the changes from the base values, the backend/profile choice."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from backends.registry import backend_class
from config.errors import SweepdeckError
from tui import bindings as keys
from tui.screens.dialogs import ChoiceDialog, TextInputDialog
from tui.screens.wizard.steps.base import Step, error_text


class SummaryStep(Step):
    """The whole experiment and the changes from the base values."""

    TITLE = "Summary"
    SCOPE = "summary"
    BINDINGS = keys.bindings("summary")

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="summary-scroll"):
            yield Static("", id="summary-body")

    def activate(self) -> None:
        self.fill()
        self.query_one("#summary-scroll").focus()

    async def on_key(self, event) -> None:
        # enter goes forward on every step (the summary has no row to select)
        if event.key == "enter":
            event.stop()
            await self.wizard.action_next_step()

    def render_summary(self) -> Text:
        state = self.state
        spec = state.need_spec()
        text = Text()
        text.append(f"EXPERIMENT: {spec.experiment_id}\n", style="bold")
        changed = [kind for kind, _ in state.change_lines() if kind != "MATCH"]
        if changed:
            # Small terminals show the top only: say there is more to read below.
            text.append(f"⚠ {len(changed)} change(s) from the base values — listed under "
                        f"{state.changes_title()} below (↓/pgdn scrolls)\n", style="bold")
        for title, rows in state.summary_sections():
            text.append(f"\n{title}\n", style="bold underline")
            for label, value in rows:
                text.append(f"  {label + ':':<18}{value}\n")
        info = state.info
        if info is not None and info.large:
            text.append(f"\n⚠ WARNING: {info.download_warning()}\n", style="bold")
        text.append(f"\n{state.changes_title()}\n", style="bold underline")
        changes = state.change_lines()
        if not changes:
            text.append("  (none: everything as recommended)\n")
        for kind, line in changes:
            text.append(f"  {kind:<9}", style="bold" if kind != "MATCH" else "")
            text.append(f"{line}\n")
        text.append(
            f"\n{self.key_for('edit_id')}: change the experiment id · "
            f"{self.key_for('choose_backend')}: backend/profile · enter: run the pre-flight checks"
        )
        return text

    def fill(self) -> None:
        self.query_one("#summary-body", Static).update(self.render_summary())

    def action_edit_id(self) -> None:
        state = self.state
        spec = state.need_spec()

        def check(value: str) -> None:
            spec.set("experiment_id", value)
            if state.store is not None and state.store.exists(value):
                raise SweepdeckError(
                    f"Experiment id {value!r} is already used by a saved run.",
                    f"Try {state.store.free_id(value)!r}.",
                )

        def done(value: str | None) -> None:
            if value and value != spec.experiment_id:
                state.edit("experiment_id", value)
                self.fill()

        self.app.push_screen(
            TextInputDialog("Experiment id", spec.experiment_id,
                            help="lower-case letters, digits and '-' (DNS-safe)", check=check),
            done,
        )

    def action_choose_backend(self) -> None:
        from config.settings import Settings
        from tui.screens.wizard.state import SIM_DEMOS

        state = self.state
        settings = state.settings
        # the embedded profile first (the config's top-level one: "BACKEND:", no profile name)
        embedded = (settings if settings is not None else Settings()).local
        kind = backend_class(embedded.backend)
        choices = [(f"{kind.name}:", f"{kind.name} — {kind.summary}" if kind.summary else kind.name)]
        if kind.runs_simulator(embedded):
            # the simulator's failure modes, to see the diagnosis and the recovery dialog without a GPU
            choices += [(f"{kind.name}::{mode}", f"{kind.name} · DEMONSTRATION: {what}")
                        for mode, what in SIM_DEMOS.items()]
        if settings is not None:
            for name, prof in sorted(settings.profiles.items()):
                desc = prof.get("description", "")
                choices.append((f"{prof.backend}:{name}", f"{name} — {prof.backend}" + (f" ({desc})" if desc else "")))
        current = f"{state.backend}:{state.profile or ''}" + (f":{state.sim_fail}" if state.sim_fail else "")

        def done(value: str | None) -> None:
            if not value:
                return
            backend, _, rest = value.partition(":")
            profile, _, demo = rest.partition(":")
            try:
                state.choose_backend(backend, profile or None)
            except SweepdeckError as exc:
                self.wizard.set_status(error_text(exc), error=True)
                return
            state.sim_fail = demo or None
            self.fill()

        self.app.push_screen(ChoiceDialog("Backend / profile", choices, current), done)
