"""A table that draws only the rows on screen: DataTable's look, keys and messages, for 10,000 rows.

Textual's ``DataTable`` keeps every cell, measures every cell it is given
(10,000 rows × 7 cells before the first frame) and re-renders every visible
row when the cursor moves. :class:`VirtualTable` keeps only the row keys: the
cells of a row are asked of a callback when the row is drawn, column widths
are given by the caller (who knows its data), and a rendered row is cached
until its cells, its cursor/hover state or the styles change — a cursor
move redraws two rows.

It renders as ``DataTable`` does (the same component classes, padding,
zebra stripes, row cursor and style meta), so themes and the app's
16-colour rules apply to both, and it answers the part of ``DataTable``'s API
a row-cursor table needs (``row_count``, ``cursor_row``, ``move_cursor``,
``get_row``, ``get_row_index``, ``coordinate_to_cell_key``, ``ordered_columns``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.cells import cell_len
from rich.padding import Padding
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.coordinate import Coordinate
from textual.geometry import Region, Size, Spacing
from textual.message import Message
from textual.renderables.styled import Styled
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets.data_table import CellDoesNotExist, CellKey, ColumnKey, RowDoesNotExist, RowKey

#: Rendered rows kept (each is ``row_height`` strips); a screenful is ~50.
ROW_CACHE = 1024


@dataclass(slots=True)
class Column:
    """A column: its key, header label and content width (padding not included)."""

    key: ColumnKey
    label: Text
    width: int

    def get_render_width(self, table: VirtualTable) -> int:
        """Width in cells with the padding on both sides (as ``DataTable``'s ``Column``)."""
        return self.width + 2 * table.cell_padding


def _plain_cell(value: Any, width: int) -> tuple[str, Style | None, bool] | None:
    """(text, its style, right-justified) of a one-line cell of unstyled-span text fitting ``width``; else None.

    Left (the default) and right justification are put together directly;
    any other (centre, full) goes through Rich.
    """
    right = False
    if isinstance(value, str):
        text, style = value, None
    elif isinstance(value, Text) and not value.spans and (isinstance(value.style, Style) or not value.style):
        text, style = value.plain, value.style or None
        if value.justify == "right":
            right = True
            if text != text.rstrip():  # Rich strips what a right-justified line ends with
                return None
        elif value.justify not in (None, "default"):
            return None
    else:
        return None
    if not text.isprintable() or cell_len(text) > width:
        return None
    return text, style, right


def _simple_segments(cell: tuple[str, Style | None, bool], width: int, pad: int, pre: Style,
                     post: Style) -> list[Segment]:
    """The segments Rich makes of ``Styled(Padding(Text(text, style), (0, pad)), pre, post)`` at ``width``.

    Padding takes ``pre`` (and ``post`` when it has a colour); the text takes
    ``pre + style`` (then ``post``). Right-justified, the text is padded on
    its left with spaces of its own style (Rich's ``pad_left``).
    ``tests/tui/test_virtual_table.py`` checks that the lines come out as Rich's.
    """
    text, style, right = cell
    blank = pre + post if post else pre
    inner = pre + style if style else pre
    if post:
        inner = inner + post
    segments = [Segment(" " * pad, blank)]
    if right:
        body = " " * (width - cell_len(text)) + text
        if body:
            segments.append(Segment(body, inner))
        segments.append(Segment(" " * pad, blank))
        return segments
    if text:
        segments.append(Segment(text, inner))
    segments.append(Segment(" " * (width - cell_len(text) + pad), blank))
    return segments


def _cell(value: Any, height: int) -> Any:
    """A cell as Rich renders it: strings as plain text (no markup), one line unless the row is taller."""
    if isinstance(value, Text):
        return value
    if isinstance(value, str):
        return Text(value, no_wrap=height == 1, end="")
    return Text(str(value), no_wrap=height == 1, end="")


class _RowMessage(Message):
    """A message about one row, with DataTable's attributes (``data_table``, ``cursor_row``, ``row_key``)."""

    def __init__(self, table: VirtualTable, cursor_row: int, row_key: RowKey) -> None:
        self.data_table = table
        self.cursor_row = cursor_row
        self.row_key = row_key
        super().__init__()

    @property
    def control(self) -> VirtualTable:
        return self.data_table


class VirtualTable(ScrollView, can_focus=True):
    """A row-cursor table whose rows are keys and whose cells come from a callback when drawn."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Select", show=False),
        Binding("up", "cursor_up", "Cursor up", show=False),
        Binding("down", "cursor_down", "Cursor down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("ctrl+home", "scroll_top", "Top", show=False),
        Binding("ctrl+end", "scroll_bottom", "Bottom", show=False),
        Binding("home", "scroll_home", "Home", show=False),
        Binding("end", "scroll_end", "End", show=False),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "datatable--cursor",
        "datatable--hover",
        "datatable--header",
        "datatable--header-hover",
        "datatable--odd-row",
        "datatable--even-row",
    }

    # DataTable's own rules (textual 8.2), so both look the same under every theme.
    DEFAULT_CSS = """
    VirtualTable {
        background: $surface;
        color: $foreground;
        height: auto;
        max-height: 100%;

        &:focus {
            background-tint: $foreground 5%;
            & > .datatable--cursor {
                background: $block-cursor-background;
                color: $block-cursor-foreground;
                text-style: $block-cursor-text-style;
            }
            & > .datatable--header {
                background-tint: $foreground 5%;
            }
        }
        &:dark {
            & > .datatable--even-row {
                background: $surface-darken-1 40%;
            }
        }
        & > .datatable--header {
            text-style: bold;
            background: $panel;
            color: $foreground;
        }
        &:ansi > .datatable--header {
            background: ansi_bright_blue;
            color: ansi_default;
        }
        & > .datatable--odd-row {
        }
        & > .datatable--even-row {
            background: $surface-lighten-1 50%;
        }
        & > .datatable--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        & > .datatable--header-hover {
            background: $accent 30%;
        }
        & > .datatable--hover {
            background: $block-hover-background;
        }
    }
    """

    class RowHighlighted(_RowMessage):
        """The cursor moved to another row (or the rows under it changed)."""

    class RowSelected(_RowMessage):
        """Enter (or a click on the cursor row) chose the row."""

    def __init__(self, *, zebra_stripes: bool = False, cell_padding: int = 1,
                 on_highlight: Callable[[int], None] | None = None, name: str | None = None,
                 id: str | None = None, classes: str | None = None) -> None:
        """A table with no columns or rows yet (:meth:`set_columns`, :meth:`set_rows`).

        Args:
            zebra_stripes: Alternate the rows' background.
            cell_padding: Blank cells each side of a cell.
            on_highlight: Called (with the row) as soon as the cursor is on
                another row, before the next frame: what depends on the cursor
                is drawn in the same frame as the cursor (the
                :class:`RowHighlighted` message comes after it).
            name: As any widget.
            id: As any widget.
            classes: As any widget.
        """
        super().__init__(name=name, id=id, classes=classes)
        self.on_highlight = on_highlight
        self.zebra_stripes = zebra_stripes
        self.cell_padding = cell_padding
        self.header_height = 1
        self.row_height = 1
        self._columns: list[Column] = []
        self._keys: list[str] = []
        self._index: dict[str, int] = {}
        self._cells_of: Callable[[int], Sequence[Any]] = lambda _index: ()
        self._cursor = 0
        self._hover: int | None = None
        self._drawn: dict[str, tuple] = {}  # row key → the cells it was last drawn with (as text)
        self._rows: LRUCache[tuple, list[Strip]] = LRUCache(ROW_CACHE)
        self._header: tuple[tuple, list[Strip]] | None = None
        self._frame: dict[int, tuple[Sequence[Any], tuple]] = {}  # cells asked for in this render pass
        self._pass: tuple[Style, tuple] | None = None  # base style and state key of this render pass
        self._styles: dict[tuple[str, bool], Style] = {}  # component styles of this render pass

    # ------------------------------------------------------------------ data

    def set_columns(self, columns: Sequence[tuple[str, str, int]], row_height: int = 1) -> None:
        """Replace the columns: ``(label, key, content width)`` each; rows ``row_height`` lines tall."""
        self._columns = [Column(ColumnKey(key), Text(label), width) for label, key, width in columns]
        self.row_height = row_height
        self._changed_shape()

    def set_widths(self, widths: Sequence[int]) -> None:
        """New content widths of the columns (only redraws when one changed)."""
        if [c.width for c in self._columns] == list(widths):
            return
        for column, width in zip(self._columns, widths, strict=True):
            column.width = width
        self._changed_shape()

    def set_rows(self, keys: Sequence[str], cells_of: Callable[[int], Sequence[Any]]) -> None:
        """Show these rows; ``cells_of(index)`` gives a row's cells when it is drawn.

        The cursor stays on the row it was on when that row is still listed.
        """
        current = self._keys[self._cursor] if 0 <= self._cursor < len(self._keys) else None
        self._keys = list(keys)
        self._index = {key: i for i, key in enumerate(self._keys)}
        self._cells_of = cells_of
        self._drawn.clear()
        self._rows.clear()
        self._frame.clear()
        self._hover = None
        self._update_virtual_size()
        new = self._index.get(current, min(self._cursor, len(self._keys) - 1)) if current is not None else 0
        self._cursor = max(0, new)
        self.refresh()
        if self._keys and (current is None or current != self._keys[self._cursor]):
            self._post_highlighted()
        self._scroll_cursor_into_view()

    def redraw_changed(self) -> None:
        """Redraw the visible rows whose cells changed since they were drawn (the rest stay as they are)."""
        first, last = self._visible_rows()
        for index in range(first, last):
            key = self._keys[index]
            drawn = self._drawn.get(key)
            if drawn is not None and drawn != self._signature(self._cells_of(index)):
                self.refresh_row(index)

    def clear_cache(self) -> None:
        """Forget every rendered row (their cells may have changed in a way the text does not show)."""
        self._rows.clear()
        self._drawn.clear()
        self._header = None
        self.refresh()

    def _changed_shape(self) -> None:
        self._rows.clear()
        self._drawn.clear()
        self._header = None
        self._update_virtual_size()
        self.refresh()

    def _update_virtual_size(self) -> None:
        width = sum(c.get_render_width(self) for c in self._columns)
        self.virtual_size = Size(width, self.header_height + len(self._keys) * self.row_height)

    # ------------------------------------------------- DataTable's API (rows)

    @property
    def row_count(self) -> int:
        return len(self._keys)

    @property
    def cursor_row(self) -> int:
        return self._cursor

    @property
    def cursor_coordinate(self) -> Coordinate:
        return Coordinate(self._cursor, 0)

    @property
    def ordered_columns(self) -> list[Column]:
        return list(self._columns)

    @property
    def columns(self) -> dict[ColumnKey, Column]:
        """The columns by key, in order (as ``DataTable.columns``)."""
        return {c.key: c for c in self._columns}

    @property
    def row_keys(self) -> list[str]:
        """The keys of the rows, in order."""
        return list(self._keys)

    @property
    def cursor_key(self) -> str | None:
        """The key of the row under the cursor (None when there are no rows)."""
        return self._keys[self._cursor] if 0 <= self._cursor < len(self._keys) else None

    def get_row_index(self, row_key: RowKey | str) -> int:
        key = row_key.value if isinstance(row_key, RowKey) else row_key
        try:
            return self._index[key]
        except KeyError:
            raise RowDoesNotExist(f"No row with key {key!r}.") from None

    def get_row_at(self, row_index: int) -> list[Any]:
        if not 0 <= row_index < len(self._keys):
            raise RowDoesNotExist(f"No row at index {row_index}.")
        return list(self._cells_of(row_index))

    def get_row(self, row_key: RowKey | str) -> list[Any]:
        return self.get_row_at(self.get_row_index(row_key))

    def get_cell(self, row_key: RowKey | str, column_key: ColumnKey | str) -> Any:
        column = column_key if isinstance(column_key, ColumnKey) else ColumnKey(column_key)
        for i, col in enumerate(self._columns):
            if col.key == column:
                return self.get_row(row_key)[i]
        raise CellDoesNotExist(f"No column {column_key!r}.")

    def coordinate_to_cell_key(self, coordinate: Coordinate | tuple[int, int]) -> CellKey:
        row, column = coordinate
        if not (0 <= row < len(self._keys) and 0 <= column < len(self._columns)):
            raise CellDoesNotExist(f"No cell exists at {coordinate!r}.")
        return CellKey(RowKey(self._keys[row]), self._columns[column].key)

    def move_cursor(self, *, row: int | None = None, column: int | None = None, animate: bool = False,
                    scroll: bool = True) -> None:
        """Put the cursor on ``row`` (``column`` is accepted for DataTable's signature; the cursor is a row)."""
        if row is None or not self._keys:
            return
        row = max(0, min(row, len(self._keys) - 1))
        old, self._cursor = self._cursor, row
        if old != row:
            self.refresh_row(old)
            self.refresh_row(row)
            self._post_highlighted()
        if scroll:
            self._scroll_cursor_into_view(animate=animate)

    def _post_highlighted(self) -> None:
        if self._keys:
            if self.on_highlight is not None:
                self.on_highlight(self._cursor)
            self.post_message(self.RowHighlighted(self, self._cursor, RowKey(self._keys[self._cursor])))

    def refresh_row(self, row_index: int) -> None:
        """Redraw one row (when it is on screen)."""
        if 0 <= row_index < len(self._keys):
            self.refresh_lines(self.header_height + row_index * self.row_height, self.row_height)

    def _visible_rows(self) -> tuple[int, int]:
        """The rows at least partly on screen: ``[first, last)``."""
        top = int(self.scroll_y)
        lines = max(0, self.size.height - self.header_height)
        first = top // self.row_height
        last = min(len(self._keys), (top + lines) // self.row_height + 1)
        return first, last

    def _scroll_cursor_into_view(self, animate: bool = False) -> None:
        if not self._keys:
            return
        y = self.header_height + self._cursor * self.row_height
        width = sum(c.get_render_width(self) for c in self._columns)
        region = Region(int(self.scroll_x), y, width, self.row_height)
        self.scroll_to_region(region, animate=animate, spacing=Spacing(self.header_height, 0, 0, 0), force=True)

    # -------------------------------------------------------------- drawing

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._rows.clear()
        self._drawn.clear()
        self._header = None

    @staticmethod
    def _signature(cells: Sequence[Any]) -> tuple:
        return tuple(c.plain if isinstance(c, Text) else str(c) for c in cells)

    def render_lines(self, crop: Region) -> list[Strip]:
        self._frame.clear()  # cells are asked again each pass (a live run's duration grows)
        self._pass = None
        return super().render_lines(crop)

    def _styles_now(self) -> tuple[Style, tuple]:
        """(base style, state key) of this render pass (worked out once a pass: ``rich_style`` is not cheap)."""
        if self._pass is None:
            base = self.rich_style
            self._pass = (base, (self.size.width, base, self.get_pseudo_class_state(), self.row_height,
                                 tuple((c.key, c.width) for c in self._columns)))
            self._styles.clear()
        return self._pass

    def _component(self, name: str, partial: bool = True) -> Style:
        """A component class's style, once a render pass (``partial``: its ``.rich_style``, as DataTable's rows)."""
        key = (name, partial)
        style = self._styles.get(key)
        if style is None:
            style = self._styles[key] = (self.get_component_styles(name).rich_style if partial
                                         else self.get_component_rich_style(name))
        return style

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        scroll_x, scroll_y = self.scroll_offset
        base, state = self._styles_now()
        if y < self.header_height:
            line = self._header_lines(state)[y]
        else:
            index, line_no = divmod(y - self.header_height + scroll_y, self.row_height)
            if not 0 <= index < len(self._keys):
                return Strip.blank(width, base)
            line = self._row_lines(index, state)[line_no]
        if scroll_x == 0 and line.cell_length == width:
            return line
        return line.crop(scroll_x, scroll_x + width).adjust_cell_length(width, base).simplify()

    def _header_lines(self, state: tuple) -> list[Strip]:
        if self._header is None or self._header[0] != state:
            style = self._component("datatable--header")
            lines = self._render_row(-1, [c.label for c in self._columns], style, style, self.header_height, state[0])
            self._header = (state, lines)
        return self._header[1]

    def _row_lines(self, index: int, state: tuple) -> list[Strip]:
        key = self._keys[index]
        asked = self._frame.get(index)
        if asked is None:  # a row two lines tall is asked for once
            cells = self._cells_of(index)
            asked = self._frame[index] = (cells, self._signature(cells))
        cells, signature = asked
        cursor = index == self._cursor
        hover = index == self._hover
        cache_key = (key, index, signature, cursor, hover, state)
        lines = self._rows.get(cache_key)
        if lines is None:
            row_style = self._row_style(index, state[1])
            component, post = self._cursor_styles(cursor, hover)
            style = row_style + component
            lines = self._render_row(index, cells, style, style, self.row_height, state[0], post)
            self._rows[cache_key] = lines
        self._drawn[key] = signature
        return lines

    def _row_style(self, index: int, base: Style) -> Style:
        if not self.zebra_stripes:
            return base
        return self._component("datatable--odd-row" if index % 2 else "datatable--even-row")

    def _cursor_styles(self, cursor: bool, hover: bool) -> tuple[Style, Style]:
        """The component style of a row under the cursor/mouse, and the style forced over its cells."""
        component = Style()
        if hover:
            component += self._component("datatable--hover", partial=False)
        if cursor:
            component += self._component("datatable--cursor", partial=False)
        # the cursor's foreground wins over a cell's own colour (DataTable's cursor_foreground_priority="css")
        return component, Style.from_color(color=component.color)

    def _render_row(self, index: int, cells: Sequence[Any], style: Style, extend: Style, height: int, width: int,
                    post: Style | None = None) -> list[Strip]:
        """The ``height`` lines of one row (index -1: the header), filling ``width``.

        Each cell is drawn as DataTable draws it (padded, the row's style under
        it, ``post`` over it, ``row``/``column`` meta for the mouse); a one-line
        cell of plain text that fits is put together directly, the rest go
        through Rich.
        """
        pad = self.cell_padding
        post = post or Style()
        lines: list[list[Segment]] = [[] for _ in range(height)]
        table_width = 0
        count = len(self._columns)
        cells = [*cells[:count], *([""] * (count - len(cells)))]  # a short row: empty cells, as DataTable
        for column_index, (column, cell) in enumerate(zip(self._columns, cells, strict=True)):
            table_width += column.get_render_width(self)
            pre = style + Style.from_meta({"row": index, "column": column_index})
            simple = _plain_cell(cell, column.width) if height == 1 else None
            if simple is not None:
                lines[0].extend(_simple_segments(simple, column.width, pad, pre, post))
                continue
            options = self.app.console_options.update_dimensions(column.width + 2 * pad, height)
            if height == 1:
                options = options.update(no_wrap=True)
            rendered = self.app.console.render_lines(Styled(Padding(_cell(cell, height), (0, pad)), pre_style=pre,
                                                            post_style=post), options)
            for line, segments in zip(lines, rendered, strict=False):
                line.extend(segments)
        fill = Segment(" " * max(0, width - table_width),
                       extend + Style.from_meta({"row": index, "column": 0, "out_of_bounds": True}))
        return [Strip([*line, fill]).simplify() for line in lines]

    # --------------------------------------------------------------- actions

    def action_cursor_up(self) -> None:
        self._set_hover(None)
        self.move_cursor(row=self._cursor - 1)

    def action_cursor_down(self) -> None:
        self._set_hover(None)
        self.move_cursor(row=self._cursor + 1)

    def _page(self) -> tuple[int, int]:
        """(lines of a page, rows of a page) as DataTable counts them."""
        height = self.scrollable_content_region.height - self.header_height
        return height, height // self.row_height + 1

    def action_page_down(self) -> None:
        self._set_hover(None)
        height, rows = self._page()
        self.scroll_relative(y=height, animate=False, force=True)
        self.move_cursor(row=self._cursor + rows - 1, scroll=False)

    def action_page_up(self) -> None:
        self._set_hover(None)
        height, rows = self._page()
        self.scroll_relative(y=-height, animate=False)
        self.move_cursor(row=self._cursor - rows + 1, scroll=False)

    def action_scroll_top(self) -> None:
        self._set_hover(None)
        self.move_cursor(row=0)

    def action_scroll_bottom(self) -> None:
        self._set_hover(None)
        self.move_cursor(row=len(self._keys) - 1)

    def action_scroll_home(self) -> None:
        self.scroll_x = 0

    def action_scroll_end(self) -> None:
        self.scroll_x = self.max_scroll_x

    def action_select_cursor(self) -> None:
        self._set_hover(None)
        if self._keys:
            self.post_message(self.RowSelected(self, self._cursor, RowKey(self._keys[self._cursor])))

    # ----------------------------------------------------------------- mouse

    def _set_hover(self, row: int | None) -> None:
        if row != self._hover:
            old, self._hover = self._hover, row
            if old is not None:
                self.refresh_row(old)
            if row is not None:
                self.refresh_row(row)

    def _on_mouse_move(self, event: events.MouseMove) -> None:
        row = event.style.meta.get("row") if event.style.meta else None
        self._set_hover(row if isinstance(row, int) and row >= 0 else None)

    def _on_leave(self, _: events.Leave) -> None:
        self._set_hover(None)

    async def _on_click(self, event: events.Click) -> None:
        row = event.style.meta.get("row") if event.style.meta else None
        if not isinstance(row, int) or row < 0 or row >= len(self._keys):
            return
        again = row == self._cursor
        self.move_cursor(row=row, animate=True)
        if again:
            self.action_select_cursor()
        event.stop()


def text_width(values: Sequence[str] | set[str], label: str = "") -> int:
    """The widest of ``values`` (and ``label``) in terminal cells."""
    return max([cell_len(label), *(cell_len(v) for v in values)])


def column_widths(labels: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[int]:
    """Each column's content width: its widest cell's text (a ``Text``'s plain text) or its label."""
    columns = zip(*rows, strict=True) if rows else [()] * len(labels)
    return [text_width(VirtualTable._signature(column), label)
            for label, column in zip(labels, columns, strict=True)]
