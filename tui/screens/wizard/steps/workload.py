"""Step 2, Workload: the presets table (the values file's own profile template first), or a custom form."""

from __future__ import annotations

import contextlib
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.widgets import DataTable, Input, Label, Select, Static, TabbedContent, TabPane

from config import inference_perf
from config.catalog import RATE_TYPES
from config.errors import SweepdeckError
from config.spec import rate_text
from tui import bindings as keys
from tui.screens.wizard.steps.base import Step, clip, error_text

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
            table.add_row("values.yaml", clip(f"inference-perf: {rows['Data']}", 44), "", "",
                          str(load.get("type", "")), f"{len(load.get('stages') or [])} stages", key=VALUES_ROW)
        for name, preset in presets.items():
            p = preset.profile
            table.add_row(
                name,
                clip(preset.description or preset.use_case, self._description_width()),
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
