"""VirtualTable: draws as DataTable does, asks only for the rows on screen, moves like DataTable."""

from __future__ import annotations

import pytest
from rich.style import Style
from rich.text import Text
from textual.app import App, ComposeResult
from textual.geometry import Region
from textual.widgets import DataTable

import tui.widgets.virtual_table as vt
from tui.widgets.virtual_table import VirtualTable

COLUMNS = [("State", "state", 12), ("Run", "run", 14), ("Model", "model", 10), ("Duration", "dur", 8)]
CELLS = [
    (Text("● running", style=Style(color="red", bold=True)), "run-1", "Qwen2.5", "1m30s"),
    (Text("✓ succeeded"), "↳ ◆ run-2", "", "—"),
    ("⚠ lost", "run-3", "a-name-much-too-long-for-it", "12s"),  # cut to its column, as DataTable does
    ("x", "漢字-run", "wide", "0s"),
    # right-justified (the results tables' figures), styled or not; an empty one; one Rich strips
    (Text("1.50 +3.0% ▲", style=Style(color="green", bold=True), justify="right"), Text("12", justify="right"),
     Text("", justify="right"), Text("7 ", justify="right")),
] * 5


class Both(App):
    """A VirtualTable and a DataTable with the same columns and cells, one above the other."""

    def __init__(self, height: int = 1, zebra: bool = True) -> None:
        super().__init__()
        self.row_height, self.zebra = height, zebra

    def compose(self) -> ComposeResult:
        yield VirtualTable(id="v", zebra_stripes=self.zebra)
        yield DataTable(id="d", zebra_stripes=self.zebra, cursor_type="row")

    def cells(self) -> list[tuple]:
        if self.row_height == 1:
            return CELLS
        return [(c[0], Text(f"{c[1]}\nsecond line", style=""), c[2], c[3]) for c in CELLS]

    def on_mount(self) -> None:
        cells = self.cells()
        v, d = self.query_one(VirtualTable), self.query_one(DataTable)
        v.styles.height = d.styles.height = 12
        v.set_columns(COLUMNS, row_height=self.row_height)
        v.set_rows([str(i) for i in range(len(cells))], lambda i: cells[i])
        for label, key, width in COLUMNS:
            d.add_column(label, key=key, width=width)
        for i, row in enumerate(cells):
            d.add_row(*row, key=str(i), height=self.row_height)


def lines_of(widget, width: int, height: int) -> list[list]:
    return [list(strip) for strip in widget.render_lines(Region(0, 0, width, height))]


@pytest.mark.parametrize("height", [1, 2])
@pytest.mark.parametrize("theme", ["textual-dark", "textual-light"])
async def test_it_draws_what_a_datatable_draws_with_the_same_cells(height, theme):
    app = Both(height)
    app.theme = theme
    async with app.run_test(size=(70, 26)) as pilot:
        await pilot.pause()
        v, d = app.query_one(VirtualTable), app.query_one(DataTable)
        for cursor in (0, 3):
            for focused in (False, True):
                v.move_cursor(row=cursor)
                d.move_cursor(row=cursor)
                if focused:
                    v.focus()
                else:
                    app.set_focus(None)
                await pilot.pause()
                got = lines_of(v, v.size.width, v.size.height)
                if focused:
                    d.focus()
                    await pilot.pause()
                want = lines_of(d, d.size.width, d.size.height)
                assert got == want, (cursor, focused)


async def test_the_quick_path_for_plain_cells_gives_what_rich_gives(monkeypatch):
    app = Both()
    async with app.run_test(size=(70, 26)) as pilot:
        await pilot.pause()
        v = app.query_one(VirtualTable)
        cursor_style = Style(color="white", bgcolor="blue", bold=True)
        for index, cells in enumerate(CELLS[:5]):
            for style, post in ((Style(bgcolor="grey11"), Style()), (cursor_style, Style(color="white"))):
                quick = [list(s) for s in v._render_row(index, cells, style, style, 1, 70, post)]
                monkeypatch.setattr(vt, "_plain_cell", lambda *_: None)
                slow = [list(s) for s in v._render_row(index, cells, style, style, 1, 70, post)]
                monkeypatch.undo()
                assert quick == slow, cells


class Big(App):
    def __init__(self, rows: int) -> None:
        super().__init__()
        self.asked: list[int] = []
        self.keys = [f"run-{i:05d}" for i in range(rows)]
        self.highlighted: list[str] = []
        self.selected: list[str] = []

    def compose(self) -> ComposeResult:
        yield VirtualTable(id="t", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one(VirtualTable)
        table.set_columns([("Run", "run", 10), ("N", "n", 6)])
        table.set_rows(self.keys, self.cells)
        table.focus()

    def cells(self, index: int) -> tuple:
        self.asked.append(index)
        return (self.keys[index], str(index))

    def on_virtual_table_row_highlighted(self, message: VirtualTable.RowHighlighted) -> None:
        self.highlighted.append(message.row_key.value)

    def on_virtual_table_row_selected(self, message: VirtualTable.RowSelected) -> None:
        self.selected.append(message.row_key.value)


async def test_ten_thousand_rows_cost_what_the_rows_on_screen_cost():
    app = Big(10_000)
    async with app.run_test(size=(40, 12)) as pilot:
        await pilot.pause()
        table = app.query_one(VirtualTable)
        assert table.row_count == 10_000 and table.virtual_size.height == 10_001
        assert app.asked and max(app.asked) < 12  # only rows that fit on screen were asked for
        app.asked.clear()
        await pilot.press("ctrl+end")
        await pilot.pause()
        assert table.cursor_row == 9_999 and app.highlighted[-1] == "run-09999"
        assert app.asked and min(app.asked) >= 10_000 - 12
        assert "run-09999" in "".join(s.text for s in table.render_lines(Region(0, 0, 40, 12)))


async def test_keys_move_the_cursor_as_a_datatable_moves_it():
    app = Big(100)
    async with app.run_test(size=(40, 12)) as pilot:
        await pilot.pause()
        table = app.query_one(VirtualTable)
        await pilot.press("down", "down", "up")
        assert table.cursor_row == 1 and table.cursor_key == "run-00001"
        await pilot.press("pagedown")
        page = table.scrollable_content_region.height - 1
        assert table.cursor_row == 1 + page
        await pilot.press("pageup")
        assert table.cursor_row == 1
        await pilot.press("ctrl+end")
        assert table.cursor_row == 99 and table.scroll_y == table.max_scroll_y
        await pilot.press("ctrl+home")
        assert table.cursor_row == 0 and table.scroll_y == 0
        await pilot.press("up")  # already at the top: stays
        assert table.cursor_row == 0
        await pilot.press("enter")
        await pilot.pause()
        assert app.selected == ["run-00000"]
        assert app.highlighted[:4] == ["run-00000", "run-00001", "run-00002", "run-00001"]  # the first: rows came


async def test_a_click_moves_the_cursor_and_a_second_click_selects():
    app = Big(100)
    async with app.run_test(size=(40, 12)) as pilot:
        await pilot.pause()
        table = app.query_one(VirtualTable)
        await pilot.click(VirtualTable, offset=(2, 4))  # line 4: the header, then rows 0..2
        await pilot.pause()
        assert table.cursor_row == 3 and app.selected == []
        await pilot.click(VirtualTable, offset=(2, 4))
        await pilot.pause()
        assert app.selected == ["run-00003"]


async def test_the_cursor_stays_on_its_row_when_rows_come_and_go():
    app = Big(50)
    async with app.run_test(size=(40, 12)) as pilot:
        await pilot.pause()
        table = app.query_one(VirtualTable)
        table.move_cursor(row=10)
        app.keys = ["new-run", *app.keys]
        table.set_rows(app.keys, app.cells)
        assert table.cursor_row == 11 and table.cursor_key == "run-00010"
        app.keys = [k for k in app.keys if k != "run-00010"]
        table.set_rows(app.keys, app.cells)  # its row is gone: the cursor keeps its place
        assert table.cursor_row == 11 and table.cursor_key == "run-00011"
        assert table.get_row_index("run-00020") == 20 and table.get_row("run-00020") == ["run-00020", "20"]


async def test_only_rows_whose_cells_changed_are_drawn_again():
    app = Big(30)
    async with app.run_test(size=(40, 12)) as pilot:
        await pilot.pause()
        table = app.query_one(VirtualTable)
        refreshed: list[int] = []
        table.refresh_row = refreshed.append  # type: ignore[method-assign]  # record, do not draw
        table.redraw_changed()
        assert refreshed == []
        app.keys[4] = "run-renamed"
        table.redraw_changed()
        assert refreshed == [4]
