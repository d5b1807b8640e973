"""Step 3, vLLM review: the complete vLLM configuration, its inline editor, the memory planner's line."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Input, Label, Static

from backends.registry import backend_class
from config.errors import SweepdeckError
from tui import bindings as keys
from tui.screens import themed
from tui.screens.wizard.steps.base import Step, error_text

STATUS_COLOURS = {"CHANGED": "$warning", "NEW": "$success", "REMOVED": "$error"}


class EditInput(Input):
    """The inline editor of the review step; escape closes it (not the wizard)."""

    EDITOR = True  # enter applies the edit here: the footer shows f8 for Next

    BINDINGS = [Binding("escape", "close", "Cancel edit", id="review_edit_cancel")]

    def action_close(self) -> None:
        step = self.screen.query_one(ReviewStep)
        step.close_editor()


class ReviewStep(Step):
    """The complete vLLM configuration; edits are highlighted and need a confirm."""

    TITLE = "vLLM review"
    SCOPE = "review"
    BINDINGS = keys.bindings("review")

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._rows: list = []
        self._editing: str | None = None  # field path, or "add"

    def compose(self) -> ComposeResult:
        yield Static("vLLM CONTAINER CONFIGURATION", classes="section-title")
        table: DataTable = DataTable(id="review-table", cursor_type="row")
        table.add_columns("Setting", "Value", "", "Source")
        yield table
        yield Static("", id="review-plan")
        with Horizontal(id="review-editor"):
            yield Label("", id="review-edit-label")
            yield EditInput(id="review-edit", compact=True)
        yield Static("", id="review-error")
        yield Static("", id="review-confirm")
        yield Static("", id="review-hint")

    def activate(self) -> None:
        self.fill()
        self.query_one("#review-table", DataTable).focus()

    def fill(self) -> None:
        """Redraw the table: section headings, then one row per setting."""
        table = self.query_one("#review-table", DataTable)
        current = table.cursor_row if table.row_count else 0
        rows = self.state.review_rows()
        self._rows = []
        table.clear()
        sections = {"image": "Image", "args": "Arguments", "resources": "Resources",
                    "workload": "Workload (inference-perf)"}
        last = None
        for row in rows:
            if row.section != last:
                last = row.section
                if row.section != "image":
                    table.add_row(Text(sections[row.section] + ":", style="bold underline"), "", "", "",
                                  key=f"hdr:{row.section}")
                    self._rows.append(None)
            # Marked rows carry a word (CHANGED/NEW/REMOVED) *and* the theme's
            # warning/success colours, so they read in monochrome too.
            colour = STATUS_COLOURS.get(row.status, "")
            value = themed(self.app, row.value, f"bold reverse {colour}" if row.status else "")
            label = Text(row.label, style="strike" if row.status == "REMOVED" else ("bold" if row.status else ""))
            source = row.source + (f" (was {row.base})" if row.status == "CHANGED" and row.base else "")
            status = themed(self.app, row.status, f"bold {colour}")
            table.add_row(label, value, status, source, key=row.key)
            self._rows.append(row)
        if self._rows:
            table.move_cursor(row=min(current, len(self._rows) - 1))
        self.update_confirm()
        self.update_plan()

    def update_plan(self) -> None:
        """The memory planner's line under the settings: fits, or a red "does not fit" with its fixes as keys."""
        box = self.query_one("#review-plan", Static)
        try:
            text, fits, fixes = self.state.plan_line()
        except SweepdeckError as exc:
            text, fits, fixes = f"memory plan: {exc.message}", None, []
        self._plan_fixes = fixes[:3]
        box.set_class(fits is False, "does-not-fit")
        box.set_class(fits is None, "not-planned")
        if fits is None:
            box.update(Text(text, style="dim"))
            return
        line = Text("✓ " if fits else "✗ ", style="bold")
        line.append(text, style="" if fits else "bold")
        for i, fix in enumerate(self._plan_fixes, 1):
            line.append("\n  ")
            line.append(f" {self.key_for(f'plan_fix_{i}')} ", style="reverse")
            line.append(f" {fix.description}")
        box.update(line)

    def action_plan_fix(self, number: int) -> None:
        """Apply the planner's fix ``number`` (its changes become your edits, shown as CHANGED)."""
        fixes = getattr(self, "_plan_fixes", [])
        if not 1 <= number <= len(fixes):
            self.app.notify("No memory-planner fix with that number.", severity="information")
            return
        fix = fixes[number - 1]
        try:
            for path, value in fix.changes.items():
                self.state.edit(path, value)
        except SweepdeckError as exc:
            self.query_one("#review-error", Static).update(error_text(exc))
            return
        self.app.notify(f"Applied: {fix.description}")
        self.fill()

    def update_confirm(self) -> None:
        box = self.query_one("#review-confirm", Static)
        hint = self.query_one("#review-hint", Static)
        pending = self.state.pending_changes()
        changed = sum(1 for r in self._rows if r is not None and r.status)
        confirm = self.key_for("confirm_changes")
        if not pending:
            box.display = False
            hint.update(
                f"No changes from the recommended settings. "
                f"{self.key_for('edit_value')}: edit the selected row · {self.key_for('add_arg')}: add argument · "
                f"enter: next"
            )
            return
        box.display = True
        if self.state.needs_confirmation:
            box.update(Text(f"[ ] NOT CONFIRMED: {changed} setting(s) CHANGED/NEW — press {confirm} to confirm",
                            style="bold"))
            box.set_class(True, "pending")
            hint.update(Text(
                f"Check the CHANGED / NEW rows, then press {confirm}. "
                f"{self.key_for('remove_arg')}: undo the selected change · {self.key_for('edit_value')}: edit"
            ))
        else:
            box.update(Text(f"[✓] CONFIRMED: {changed} change(s) reviewed ({confirm} to take it back)"))
            box.set_class(False, "pending")
            hint.update(Text("enter: next (summary)"))

    def on_click(self, event) -> None:
        if getattr(event.widget, "id", None) == "review-confirm":
            self.action_confirm()

    def selected(self):
        """The highlighted setting (None on a section heading)."""
        table = self.query_one("#review-table", DataTable)
        if not self._rows:
            return None
        return self._rows[min(max(table.cursor_row, 0), len(self._rows) - 1)]

    @on(DataTable.RowSelected, "#review-table")
    async def _select(self, event: DataTable.RowSelected) -> None:
        # enter goes forward here as on every step; e edits the row
        event.stop()
        await self.wizard.action_next_step()

    def action_edit(self) -> None:
        row = self.selected()
        if row is None:
            return
        if row.editable is None:
            if row.key.startswith(("arg:", "removed:")):
                self.app.notify(f"{row.label}: {self.key_for('remove_arg')} removes/restores it; "
                                f"{self.key_for('add_arg')} adds another.")
            else:
                self.app.notify(f"{row.label} is set by the backend, not here.")
            return
        current = self.state.need_spec().get(row.editable)
        value = row.edit_text or ("" if current is None else str(current))
        placeholder = "RATExSECONDS per stage: 5x600, 10x600" if row.key.endswith(".load.stages") else ""
        self.open_editor(row.editable, f"{row.label} =", value, placeholder)

    def edit_path(self, path: str, value: str | None = None) -> bool:
        """Select the row of setting ``path`` and open its editor (with ``value`` filled in, if given)."""
        table = self.query_one("#review-table", DataTable)
        for index, row in enumerate(self._rows):
            if row is not None and row.editable == path:
                table.move_cursor(row=index)
                self.action_edit()
                if value is not None:
                    box = self.query_one("#review-edit", EditInput)
                    box.value = value
                    box.action_end()
                return True
        self.app.notify(f"{path} is not a setting of this review.", severity="warning")
        return False

    def action_add_arg(self) -> None:
        self.open_editor("add", "Add vLLM argument:", "",
                         placeholder="--enable-prefix-caching or --gpu-memory-utilization=0.9")

    def open_editor(self, what: str, label: str, value: str, placeholder: str = "") -> None:
        self._editing = what
        self.query_one("#review-edit-label", Label).update(label)
        box = self.query_one("#review-edit", EditInput)
        box.placeholder = placeholder
        box.value = value
        self.query_one("#review-editor").add_class("shown")
        box.focus()
        box.action_end()

    def close_editor(self) -> None:
        self._editing = None
        self.query_one("#review-editor").remove_class("shown")
        self.query_one("#review-error", Static).update("")
        self.query_one("#review-table", DataTable).focus()

    @on(Input.Submitted, "#review-edit")
    def _apply(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        error = self.query_one("#review-error", Static)
        try:
            if self._editing == "add":
                _, warnings = self.state.add_args(text)
                for warning in warnings:
                    self.app.notify(warning, severity="warning")
            elif self._editing:
                spec = self.state.edit(self._editing, text)
                if backend_class(spec.backend).unapplied(self._editing) is not None:
                    # Recorded in the spec (and the run's record), but nothing applies it here.
                    self.app.notify(f"Recorded; the {spec.backend} backend does not enforce memory/CPU.")
        except SweepdeckError as exc:
            error.update(error_text(exc))
            return
        self.close_editor()
        self.fill()

    def action_remove_arg(self) -> None:
        row = self.selected()
        if row is None:
            return
        if row.key.startswith("arg:"):
            self.state.remove_arg(row.label)
        elif row.key.startswith("removed:"):
            self.state.restore_arg(row.label)
        elif row.status == "CHANGED" and row.editable:
            self.state.revert(row.editable)
        else:
            self.app.notify("Nothing to undo on this row.", severity="information")
            return
        self.fill()

    def action_confirm(self) -> None:
        if not self.state.pending_changes():
            self.app.notify("No changes to confirm.")
            return
        if self.state.needs_confirmation:
            self.state.confirm()
            self.wizard.set_status("")  # the "confirm first" warning is answered
        else:
            self.state.unconfirm()
        self.update_confirm()

    async def commit(self) -> bool:
        if self._editing:
            self.close_editor()
        if self.state.needs_confirmation:
            self.wizard.set_status(
                Text(
                    f"⚠ CONFIRM FIRST: press {self.key_for('confirm_changes')} to confirm the CHANGED / NEW settings."
                ),
                error=True,
            )
            return False
        return True
