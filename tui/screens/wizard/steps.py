"""The wizard's steps, one widget each, shown one at a time.

Each step reads and changes the shared :class:`WizardState`; the screen asks
a step to :meth:`Step.commit` before moving on (commit says what blocks).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.fuzzy import FuzzySearch
from textual.widgets import DataTable, Input, Label, LoadingIndicator, Select, Static, TabbedContent, TabPane

from backends.registry import backend_class
from config import inference_perf
from config.catalog import RATE_TYPES, ModelInfo
from config.errors import SweepdeckError
from config.spec import rate_text
from tui import bindings as keys
from tui.screens import themed
from tui.screens.dialogs import ChoiceDialog, ConfirmDialog, DisambiguationDialog, TextInputDialog, model_details

if TYPE_CHECKING:
    from backends.base import Check, Remedy
    from tui.screens.wizard import WizardScreen
    from tui.screens.wizard.state import WizardState


def error_text(exc: SweepdeckError) -> Text:
    text = Text("✗ ERROR: ", style="bold")
    text.append(exc.message)
    if exc.hint:
        text.append("\n  " + exc.hint)
    return text


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@dataclass(frozen=True, slots=True)
class NamedSetting:
    """A setting a pre-flight fix names as a command-line flag (``--tp 1``)."""

    path: str  # field path in the spec (engine.tp)
    label: str  # what the review calls it (TP)
    value: str | None  # the value the fix suggests, if it gives one


#: Command-line flags a backend's fix text may name → (field path, the review's word for it).
FIX_FLAGS = {
    "--tp": ("engine.tp", "TP"),
    "--tensor-parallel-size": ("engine.tp", "TP"),
    "--max-model-len": ("engine.max_model_len", "max_model_len"),
    "--max-num-seqs": ("engine.max_num_seqs", "max_num_seqs"),
    "--max-num-batched-tokens": ("engine.max_num_batched_tokens", "max_num_batched_tokens"),
    "--image": ("engine.image", "the image"),
}
_FLAG_IN_TEXT = re.compile(
    r"(?<![\w-])(" + "|".join(re.escape(f) for f in FIX_FLAGS) + r")(?:[ =](\S+?))?(?=[\s.,;)]|$)"
)


def in_app_terms(fix: str) -> tuple[str, NamedSetting | None]:
    """A backend's fix text said the app's way: ``Use --tp 1`` → ``Use TP 1``, and the setting it names.

    Backends write their fixes for the command line (``sweepdeck run --tp 1``);
    in the app the same change is made in the vLLM review, so the flag is
    replaced by the review's name for the setting and the pre-flight step
    offers a key that goes there.
    """
    match = _FLAG_IN_TEXT.search(fix)
    if match is None:
        return fix, None
    path, label = FIX_FLAGS[match.group(1)]
    value = match.group(2)
    said = f"{label} {value}" if value else label
    return fix[: match.start()] + said + fix[match.end():], NamedSetting(path, label, value)


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


# ---------------------------------------------------------------------- model


class ModelStep(Step):
    """Catalog table with a fuzzy filter; ambiguous aliases are rows too."""

    TITLE = "Model"
    SCOPE = "model"
    BINDINGS = keys.bindings("model")

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._fuzzy = FuzzySearch()
        self._rows: list[tuple[str, str]] = []  # (kind model|alias, name)

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter: type part of a model id or alias (qwen, 70b, llama-7b…)", id="model-filter",
                    compact=True)
        table: DataTable = DataTable(id="model-table", cursor_type="row", zebra_stripes=True)
        table.add_columns("Model", "Aliases", "Size", "TP", "Context")
        yield table
        yield Static("", id="model-detail")

    def on_mount(self) -> None:
        self.fill()

    def activate(self) -> None:
        self.fill()
        table = self.query_one("#model-table", DataTable)
        if self.state.spec is not None:
            keys_ = [name for _, name in self._rows]
            current = self.state.spec.model
            if current in keys_:
                table.move_cursor(row=keys_.index(current))
        self.query_one("#model-filter", Input).focus()

    def candidates(self) -> list[tuple[str, str, str]]:
        """``(kind, name, searchable text)`` for every model and ambiguous alias."""
        models = self.state.catalogs.models
        out = [("model", mid, " ".join((mid,) + info.aliases)) for mid,
               info in sorted(models.models.items(), key=lambda kv: kv[0].lower())]
        out += [("alias", alias, alias) for alias in sorted(models.ambiguous)]
        return out

    def filtered(self, query: str) -> list[tuple[str, str]]:
        query = query.strip().lower()
        items = self.candidates()
        if not query:
            return [(k, n) for k, n, _ in items]
        scored = []
        for kind, name, hay in items:
            low = hay.lower()
            score = 1000.0 - low.index(query) if query in low else self._fuzzy.match(query, low)[0]
            if score > 0:
                scored.append((score, kind, name))
        scored.sort(key=lambda s: -s[0])
        return [(k, n) for _, k, n in scored]

    def fill(self) -> None:
        query = self.query_one("#model-filter", Input).value
        table = self.query_one("#model-table", DataTable)
        self._rows = self.filtered(query)
        table.clear()
        models = self.state.catalogs.models
        model_width, alias_width = self._widths()
        for kind, name in self._rows:
            if kind == "alias":
                n = len(models.ambiguous[name]["options"])
                table.add_row(Text(f"{name} ?", style="italic"), f"ambiguous: {n} models", "", "", "",
                              key=f"alias:{name}")
            else:
                info = models.models[name]
                table.add_row(
                    _clip(name, model_width),
                    _clip(", ".join(info.aliases), alias_width),
                    f"{info.size_gb:g} GB" if info.size_gb is not None else "",
                    ",".join(str(t) for t in info.tp),
                    f"{info.context_limit:,}" if info.context_limit else "",
                    key=f"model:{name}",
                )
        self.show_detail()

    def _widths(self) -> tuple[int, int]:
        """Model id and aliases share what size, TP and context leave, so all five columns fit the terminal
        (the highlighted model's id, aliases and facts are also in full under the table)."""
        room = (self.app.size.width or 160) - 2 - 5 * 2 - (8 + 5 + 10)  # scrollbar, cell padding, the three facts
        model = min(44, max(24, room * 3 // 5))
        return model, max(12, room - model)

    def on_resize(self) -> None:
        self.fill()

    def highlighted(self) -> tuple[str, str] | None:
        table = self.query_one("#model-table", DataTable)
        if not table.row_count or not self._rows:
            return None
        row = min(max(table.cursor_row, 0), len(self._rows) - 1)
        return self._rows[row]

    def show_detail(self) -> None:
        detail = self.query_one("#model-detail", Static)
        item = self.highlighted()
        if item is None:
            detail.update(Text("No model matches. Clear the filter (or add the model to "
                               f"{self.state.catalogs.models.path}).") if self._rows == [] else "")
            return
        kind, name = item
        models = self.state.catalogs.models
        if kind == "alias":
            entry = models.ambiguous[name]
            labels = " / ".join(o.get("label", o["id"]) for o in entry["options"])
            detail.update(Text(f"“{name}” is ambiguous — {entry.get('prompt', '')}\nenter opens a choice: {labels}"))
            return
        info: ModelInfo = models.models[name]
        text = Text(f"{name}", style="bold")
        if info.aliases:
            text.append(f" ({', '.join(info.aliases)})")
        text.append(f"  {model_details(info)}")
        if info.notes:
            text.append(f"\n{info.notes}")
        if info.large:
            text.append(f"\n⚠ WARNING: {info.download_warning()}", style="bold")
        detail.update(text)

    @on(Input.Changed, "#model-filter")
    def _filter(self) -> None:
        self.fill()

    @on(Input.Submitted, "#model-filter")
    async def _filter_enter(self) -> None:
        if self._rows:
            await self.wizard.action_next_step()

    @on(DataTable.RowHighlighted, "#model-table")
    def _highlight(self) -> None:
        self.show_detail()

    @on(DataTable.RowSelected, "#model-table")
    async def _select(self, event: DataTable.RowSelected) -> None:
        event.stop()
        await self.wizard.action_next_step()

    def on_key(self, event) -> None:
        # The filter keeps the focus (type to narrow); the arrows move the table's cursor.
        box = self.query_one("#model-filter", Input)
        if box.has_focus and event.key in ("down", "up", "pagedown", "pageup"):
            event.stop()
            table = self.query_one("#model-table", DataTable)
            getattr(table,
                    f"action_{'cursor' if event.key in ('up', 'down') else 'page'}_{event.key.removeprefix('page')}")()

    def action_focus_filter(self) -> None:
        self.query_one("#model-filter", Input).focus()

    async def commit(self) -> bool:
        item = self.highlighted()
        if item is None:
            self.wizard.set_status(Text("✗ No model selected: clear the filter or type another name."), error=True)
            return False
        kind, name = item
        if kind == "alias":
            self.app.push_screen(DisambiguationDialog.for_alias(self.state.catalogs, name), self._chosen(name))
            return False
        return self._take(name, None)

    def _chosen(self, alias: str):
        def chosen(model_id: str | None) -> None:
            if model_id and self._take(alias, model_id):
                self.wizard.go(self.wizard.index + 1)

        return chosen

    def _take(self, name: str, choice: str | None) -> bool:
        try:
            spec = self.state.choose_model(name, choice)
        except SweepdeckError as exc:
            self.wizard.set_status(error_text(exc), error=True)
            return False
        info = self.state.catalogs.models.resolve(spec.model)
        if info.large:
            self.app.notify(info.download_warning(), title="Large model", severity="warning", timeout=8)
        for note in self.state.notes:
            self.app.notify(note, severity="warning")
        return True


# ------------------------------------------------------------------- workload

CUSTOM_FIELDS: tuple[tuple[str, str], ...] = (
    ("prompt_tokens", "Prompt tokens"),
    ("prompt_tokens_stdev", "stdev"),
    ("prompt_tokens_min", "min"),
    ("prompt_tokens_max", "max"),
    ("output_tokens", "Output tokens"),
    ("output_tokens_stdev", "stdev"),
    ("output_tokens_min", "min"),
    ("output_tokens_max", "max"),
)


#: The workload step's row for the values file's own inference-perf profile template.
VALUES_ROW = "values.yaml"


class WorkloadStep(Step):
    """Presets table, or a custom form with inline validation."""

    TITLE = "Workload"
    SCOPE = "workload"
    BINDINGS = keys.bindings("workload")

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._names: list[str] = []
        self.custom_error: SweepdeckError | None = None

    def compose(self) -> ComposeResult:
        with TabbedContent(id="workload-tabs", initial="presets-pane"):
            with TabPane("Presets", id="presets-pane"):
                table: DataTable = DataTable(id="workload-table", cursor_type="row", zebra_stripes=True)
                table.add_columns("Preset", "Description", "Prompt", "Output", "Rate type", "Requests")
                yield table
                yield Static("", id="workload-detail")
            with TabPane("Custom", id="custom-pane"), VerticalScroll(id="custom-form"):
                with Grid(id="custom-grid"):
                    for name, label in CUSTOM_FIELDS:
                        yield Label(label, classes="custom-label")
                        yield Input(
                            id=f"custom-{name}",
                            classes="custom-input",
                            compact=True,
                            placeholder="2× mean" if name.endswith("_max") else "",
                        )
                with Horizontal(id="custom-row"):
                    yield Label("Max requests", classes="custom-label")
                    yield Input(id="custom-max_requests", classes="custom-input", compact=True)
                    yield Label("Rate", classes="custom-label")
                    yield Input(id="custom-rate", classes="custom-input", compact=True)
                    yield Label("Rate type", classes="custom-label")
                    yield Select([(r, r) for r in RATE_TYPES], id="custom-rate_type", allow_blank=False,
                                 value="constant", compact=True)
                yield Static("", id="custom-error")

    def on_mount(self) -> None:
        self.fill_presets()
        defaults = self.state.catalogs.workloads.custom_defaults
        for name, _ in CUSTOM_FIELDS:
            value = defaults.get(name)
            self.query_one(f"#custom-{name}", Input).value = "" if value is None else str(value)
        self.query_one("#custom-max_requests", Input).value = str(defaults.get("max_requests") or 50)
        self.query_one("#custom-rate", Input).value = str(defaults.get("rate") or 12)
        self.query_one("#custom-prompt_tokens", Input).value = "256"
        self.query_one("#custom-output_tokens", Input).value = "128"
        self.validate_custom()

    def fill_presets(self) -> None:
        """The presets; first, when the profile's values use inference-perf, their own profile template."""
        table = self.query_one("#workload-table", DataTable)
        table.clear()
        presets = self.state.catalogs.workloads.presets
        self._names = list(presets)
        template = self.state.values_template()
        if template is not None:
            self._names.insert(0, VALUES_ROW)
            rows = dict(inference_perf.summary_rows(template))
            load = template.get("load") if isinstance(template.get("load"), dict) else {}
            table.add_row("values.yaml", _clip(f"inference-perf: {rows['Data']}", 44), "", "",
                          str(load.get("type", "")), f"{len(load.get('stages') or [])} stages", key=VALUES_ROW)
        for name, preset in presets.items():
            p = preset.profile
            table.add_row(
                name,
                _clip(preset.description or preset.use_case, self._description_width()),
                str(p.prompt_tokens),
                str(p.output_tokens),
                p.rate_type,
                str(p.max_requests),
                key=name,
            )

    def _description_width(self) -> int:
        """The description column gets what the other columns leave (all six fit at 80 columns)."""
        width = self.app.size.width or 120
        return max(16, min(44, width - 62))

    def on_resize(self) -> None:
        table = self.query_one("#workload-table", DataTable)
        row = table.cursor_row
        self.fill_presets()
        if table.row_count:
            table.move_cursor(row=min(row, table.row_count - 1))

    def activate(self) -> None:
        self.fill_presets()  # the backend/profile may have changed (its values may use inference-perf)
        workload = self.state.workload
        tabs = self.query_one(TabbedContent)
        table = self.query_one("#workload-table", DataTable)
        if workload is not None and not isinstance(workload, str):
            self.load_custom(workload)
            tabs.active = "custom-pane"
            self.query_one("#custom-prompt_tokens", Input).focus()
            return
        name = self.state.spec.workload.app if self.state.spec is not None else None
        if workload is None and VALUES_ROW in self._names:
            name = VALUES_ROW  # the values' own profile template (nothing chosen yet, or chosen before)
        if isinstance(workload, str):
            with contextlib.suppress(SweepdeckError):
                name = self.state.catalogs.workloads.match(workload).name
        if name in self._names:
            table.move_cursor(row=self._names.index(name))
        tabs.active = "presets-pane"
        table.focus()
        self.show_detail()

    def load_custom(self, profile) -> None:
        for name, _ in CUSTOM_FIELDS + (("max_requests", ""), ("rate", "")):
            value = getattr(profile, name)
            self.query_one(f"#custom-{name}", Input).value = (
                "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
            )
        if profile.rate_type in RATE_TYPES:
            self.query_one("#custom-rate_type", Select).value = profile.rate_type

    def custom_values(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, _ in CUSTOM_FIELDS + (("max_requests", ""), ("rate", "")):
            text = self.query_one(f"#custom-{name}", Input).value.strip()
            if text:
                values[name] = text
        values["rate_type"] = self.query_one("#custom-rate_type", Select).value
        return values

    def validate_custom(self):
        """Build the custom profile from the form; show the error inline."""
        box = self.query_one("#custom-error", Static)
        try:
            profile = self.state.catalogs.workloads.custom(**self.custom_values())
        except SweepdeckError as exc:
            self.custom_error = exc
            box.update(error_text(exc))
            box.add_class("error")
            return None
        self.custom_error = None
        box.remove_class("error")
        box.update(Text(
            f"✓ OK: {profile.max_requests} requests of ~{profile.prompt_tokens} prompt / "
            f"~{profile.output_tokens} output tokens, {rate_text(profile, self.state.backend)}. "
            "enter or ctrl+→ to use it."
        ))
        return profile

    @on(Input.Changed, ".custom-input")
    def _custom_changed(self) -> None:
        self.validate_custom()

    @on(Select.Changed, "#custom-rate_type")
    def _rate_changed(self) -> None:
        self.validate_custom()

    @on(Input.Submitted, ".custom-input")
    async def _custom_submit(self) -> None:
        await self.wizard.action_next_step()

    @on(DataTable.RowHighlighted, "#workload-table")
    def _highlight(self) -> None:
        self.show_detail()

    @on(DataTable.RowSelected, "#workload-table")
    async def _select(self, event: DataTable.RowSelected) -> None:
        event.stop()
        await self.wizard.action_next_step()

    def show_detail(self) -> None:
        table = self.query_one("#workload-table", DataTable)
        detail = self.query_one("#workload-detail", Static)
        if not self._names:
            return
        name = self._names[min(max(table.cursor_row, 0), len(self._names) - 1)]
        if name == VALUES_ROW:
            template = self.state.values_template() or {}
            detail.update("values.yaml's inference-perf profile template · " + " · ".join(
                f"{label.lower()} {value}" for label, value in inference_perf.summary_rows(template)))
            return
        preset = self.state.catalogs.workloads.presets[name]
        p = preset.profile
        detail.update(
            f"{name}: prompt {p.prompt_tokens} (stdev {p.prompt_tokens_stdev}, "
            f"{p.prompt_tokens_min}-{p.prompt_tokens_max}) · "
            f"output {p.output_tokens} (stdev {p.output_tokens_stdev}, {p.output_tokens_min}-{p.output_tokens_max}) · "
            f"{rate_text(p, self.state.backend)} · {p.max_requests} requests"
            + (f" · prefix {p.prefix_tokens}" if p.prefix_tokens else "")
        )

    def action_custom(self) -> None:
        self.query_one(TabbedContent).active = "custom-pane"
        self.query_one("#custom-prompt_tokens", Input).focus()

    def action_presets(self) -> None:
        self.query_one(TabbedContent).active = "presets-pane"
        self.query_one("#workload-table", DataTable).focus()

    async def commit(self) -> bool:
        if self.query_one(TabbedContent).active == "custom-pane":
            profile = self.validate_custom()
            if profile is None:
                self.wizard.set_status(error_text(self.custom_error), error=True)  # type: ignore[arg-type]  # set just above when validation fails
                return False
            choice: Any = profile
        else:
            table = self.query_one("#workload-table", DataTable)
            choice = self._names[min(max(table.cursor_row, 0), len(self._names) - 1)]
            if choice == VALUES_ROW:
                choice = None  # the values file's own workload
        try:
            self.state.choose_workload(choice)
        except SweepdeckError as exc:
            self.wizard.set_status(error_text(exc), error=True)
            return False
        return True


# ---------------------------------------------------------------- vLLM review


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


# -------------------------------------------------------------------- summary


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


# ------------------------------------------------------------------ pre-flight

CHECK_WORDS = {"pass": ("✓", "PASS"), "warn": ("!", "WARN"), "fail": ("✗", "FAIL")}


class PreflightStep(Step):
    """Runs backend.preflight(spec) in a worker; failures block, warnings need an override."""

    TITLE = "Pre-flight"
    SCOPE = "preflight"
    BINDINGS = keys.bindings("preflight")

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.checks: list[Check] | None = None
        self.override = False
        self.running = False
        self._checked_spec = None

    def compose(self) -> ComposeResult:
        yield LoadingIndicator(id="preflight-loading")
        table: DataTable = DataTable(id="preflight-table", cursor_type="row")
        table.add_columns("Result", "Check", "Detail")
        yield table
        yield Static("", id="preflight-fix")
        yield Static("", id="preflight-verdict")

    def activate(self) -> None:
        spec = self.state.need_spec()
        if self.checks is None or self._checked_spec is not spec:
            self.run_checks()
        self.query_one("#preflight-table", DataTable).focus()

    def action_rerun(self) -> None:
        self.run_checks()

    def run_checks(self) -> None:
        self.checks = None
        self.override = False
        self.running = True
        self._checked_spec = self.state.spec
        self.query_one("#preflight-loading").display = True
        self.query_one("#preflight-table", DataTable).clear()
        self.query_one("#preflight-verdict", Static).update("Running the pre-flight checks…")
        self.query_one("#preflight-fix", Static).update("")
        self._preflight(self.state.need_spec())

    @work(exclusive=True, group="preflight", exit_on_error=False)
    async def _preflight(self, spec) -> None:
        from backends.base import Check
        from backends.preflight import run_preflight

        try:
            app: Any = self.app
            backend = app.backend_for(spec.backend, spec.profile, demo=self.state.sim_fail)
            checks = await run_preflight(backend, spec, app.store)
        except SweepdeckError as exc:
            checks = [Check("Backend ready", "fail", exc.message, exc.hint)]
        except Exception as exc:  # a backend bug must not kill the wizard
            checks = [Check("Backend ready", "fail", f"{type(exc).__name__}: {exc}", "See the log; this is a bug.")]
        if spec is not self.state.spec:
            return
        self.show_checks(checks)

    def show_checks(self, checks: list[Check]) -> None:
        self.checks = checks
        self.running = False
        self.query_one("#preflight-loading").display = False
        self._fill_table()
        self.update_verdict()
        self.show_fix()

    def _fill_table(self) -> None:
        """The checks, each on one line that fits the terminal: a long detail ends in … here and
        is shown whole under the table for the highlighted check (nothing scrolls sideways)."""
        table = self.query_one("#preflight-table", DataTable)
        row = table.cursor_row if table.row_count else 0
        checks = self.checks or []
        name_width = min(28, max([len(c.name) for c in checks] + [5]))
        detail_width = max(20, (self.app.size.width or 120) - 8 - name_width - 3 * 2 - 2)
        table.clear(columns=True)
        table.add_column("Result", width=6)
        table.add_column("Check", width=name_width)
        table.add_column("Detail", width=detail_width)
        for i, check in enumerate(checks):
            icon, word = CHECK_WORDS.get(check.status, ("?", check.status.upper()))
            style = {"pass": "$success", "warn": "bold $warning", "fail": "bold $error"}.get(check.status, "")
            table.add_row(themed(self.app, f"{icon} {word}", style), _clip(check.name, name_width),
                          _clip(check.detail.replace("\n", " "), detail_width), key=str(i))
        if checks:
            table.move_cursor(row=min(row, len(checks) - 1))

    def on_resize(self) -> None:
        if self.checks:
            self._fill_table()

    @on(DataTable.RowHighlighted, "#preflight-table")
    def _highlight(self) -> None:
        self.show_fix()

    @on(DataTable.RowSelected, "#preflight-table")
    async def _select(self, event: DataTable.RowSelected) -> None:
        # enter launches here, as it goes forward on every other step (when the checks allow it)
        event.stop()
        await self.wizard.action_next_step()

    def _ordered(self) -> list[Check]:
        """The checks, the highlighted one first."""
        if not self.checks:
            return []
        table = self.query_one("#preflight-table", DataTable)
        first = self.checks[min(max(table.cursor_row, 0), len(self.checks) - 1)]
        return [first] + [c for c in self.checks if c is not first]

    def remedy_check(self) -> Check | None:
        """The check the remedy key acts on: the highlighted one if it offers a remedy, else the first that does."""
        if self.running:
            return None
        return next((c for c in self._ordered() if c.status != "pass" and c.remedy is not None), None)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # The footer shows the remedy and edit keys only while there is something they would do.
        if action == "remedy":
            return self.remedy_check() is not None
        if action == "edit_setting":
            return self.setting_check() is not None
        return True

    def show_fix(self) -> None:
        """The highlighted check in full (its detail wrapped, so nothing is cut off), its fix in the
        app's terms, then the fixes of the other checks that did not pass; the remedy on offer first."""
        box = self.query_one("#preflight-fix", Static)
        self.wizard.refresh_bindings()
        if not self.checks:
            box.update("")
            return
        ordered = self._ordered()
        text = Text()
        offered = self.remedy_check()
        if offered is not None and offered.remedy is not None:
            # First line: the box is short at 80x24 and this is the one thing to press.
            text.append(f"{self.key_for('apply_remedy')}: {offered.remedy.label}", style="bold reverse")
            text.append(f"  (fixes “{offered.name}”; asks first)")
        first = ordered[0]
        icon, word = CHECK_WORDS.get(first.status, ("?", first.status.upper()))
        if text:
            text.append("\n")
        text.append(f"{icon} {first.name}: ", style="bold")
        text.append(first.detail)
        for check in ordered:
            if check.status == "pass" or not check.fix:
                continue
            icon, word = CHECK_WORDS.get(check.status, ("?", check.status.upper()))
            text.append("\n")
            text.append(f"FIX {icon} {check.name}: ", style="bold")
            fix, setting = in_app_terms(check.fix)
            text.append(fix)
            if setting is not None and check is self.setting_check():
                key = self.key_for("edit_from_check")
                text.append(f"  [{key}: change {setting.label} in the review]", style="bold")
        box.update(text)

    def setting_check(self) -> Check | None:
        """The check the edit key acts on: the highlighted one if its fix names a setting, else the first that does."""
        if self.running:
            return None
        return next((c for c in self._ordered() if c.status != "pass" and c.fix and in_app_terms(c.fix)[1]), None)

    def action_edit_setting(self) -> None:
        """Go back to the vLLM review with the setting the check's fix names, its editor open on the suggested value."""
        check = self.setting_check()
        setting = in_app_terms(check.fix)[1] if check is not None else None
        if setting is None:
            self.app.notify("No check here names a setting to change.")
            return
        wizard = self.wizard
        wizard.go(wizard.step_index("review"))
        wizard.query_one(ReviewStep).edit_path(setting.path, setting.value)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks or [] if c.status == "fail"]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks or [] if c.status == "warn"]

    def update_verdict(self) -> None:
        verdict = self.query_one("#preflight-verdict", Static)
        launch = self.key_for("launch")
        if self.checks is None:
            verdict.update("Running the pre-flight checks…")
        elif self.failures and self.remedy_check() is not None:
            verdict.update(Text(
                f"✗ BLOCKED: {len(self.failures)} check(s) failed. "
                f"Press {self.key_for('apply_remedy')} to let sweepdeck fix it, "
                f"or fix them yourself and press {self.key_for('rerun_preflight')} to re-run.",
                style="bold",
            ))
        elif self.failures:
            verdict.update(Text(
                f"✗ BLOCKED: {len(self.failures)} check(s) failed. Fix them and press "
                f"{self.key_for('rerun_preflight')} "
                "to re-run (or go back and change the experiment).",
                style="bold",
            ))
        elif self.warnings and not self.override:
            verdict.update(Text(
                f"! {len(self.warnings)} warning(s). "
                f"Press {self.key_for('override_warnings')} to override them and launch, "
                f"or fix them and press {self.key_for('rerun_preflight')}.",
                style="bold",
            ))
        elif self.warnings:
            verdict.update(Text(f"! WARNINGS OVERRIDDEN. Press enter or {launch} to launch.", style="bold"))
        else:
            verdict.update(Text(f"✓ ALL {len(self.checks)} CHECKS PASSED. Press enter or {launch} to launch.",
                                style="bold"))

    def action_remedy(self) -> None:
        """Offer the remedy of :meth:`remedy_check`; it runs only after a yes."""
        check = self.remedy_check()
        if check is None or check.remedy is None:
            self.app.notify("No failing check here has a fix sweepdeck can apply.")
            return
        remedy = check.remedy
        spec = self.state.need_spec()

        def answered(yes: bool | None) -> None:
            if yes:
                self._apply_remedy(spec, remedy)

        self.app.push_screen(ConfirmDialog(remedy.label, remedy.question), answered)

    @work(exclusive=True, group="preflight-remedy", exit_on_error=False)
    async def _apply_remedy(self, spec, remedy: Remedy) -> None:
        """Carry out a confirmed remedy, say what happened, then run the checks again."""
        from backends.base import apply_remedy

        self.running = True  # launch stays blocked until the checks ran again
        self.refresh_bindings()
        self.query_one("#preflight-verdict", Static).update(Text(f"… {remedy.label}…", style="bold"))
        try:
            backend = self.app.backend_for(spec.backend, spec.profile)  # type: ignore[attr-defined]  # a SweepdeckApp
            message = await apply_remedy(backend, spec, remedy)
        except SweepdeckError as exc:
            self.app.notify(exc.message + (f"\n{exc.hint}" if exc.hint else ""), title=f"{remedy.label}: not done",
                            severity="error", timeout=10)
        except Exception as exc:  # a backend bug: say it, keep the wizard usable
            self.app.notify(f"{type(exc).__name__}: {exc}", title=f"{remedy.label}: failed",
                            severity="error", timeout=10)
        else:
            self.app.notify(message or f"{remedy.label}: done.", title=remedy.label)
        if spec is self.state.spec:
            self.run_checks()
        else:
            self.running = False

    def action_override(self) -> None:
        if self.failures:
            self.app.notify("Failed checks cannot be overridden; fix them first.", severity="error")
            return
        if not self.warnings:
            self.app.notify("No warnings to override.")
            return
        self.override = True
        self.update_verdict()

    def blocked(self) -> str:
        """Why launch is not allowed now ('' when it is)."""
        if self.running or self.checks is None:
            return "The pre-flight checks are still running."
        if self._checked_spec is not self.state.spec:
            return "The experiment changed since the checks ran; press r to re-run them."
        if self.failures:
            return f"{len(self.failures)} pre-flight check(s) failed: launch is blocked."
        if self.warnings and not self.override:
            return f"{len(self.warnings)} warning(s): press {self.key_for('override_warnings')} to override them first."
        return ""

    async def action_launch(self) -> None:
        await self.wizard.action_next_step()

    async def commit(self) -> bool:
        reason = self.blocked()
        if reason:
            self.wizard.set_status(Text("✗ " + reason), error=True)
            return False
        return True
