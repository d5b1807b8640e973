"""Step 1, Model: the catalog table with a fuzzy filter; ambiguous aliases are rows too."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.fuzzy import FuzzySearch
from textual.widgets import DataTable, Input, Static

from config.catalog import ModelInfo
from config.errors import SweepdeckError
from tui import bindings as keys
from tui.screens.dialogs import DisambiguationDialog, model_details
from tui.screens.wizard.steps.base import Step, clip, error_text


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
                    clip(name, model_width),
                    clip(", ".join(info.aliases), alias_width),
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
