"""The sweep view: live progress of an Argo work-queue sweep.

What the view draws comes from :class:`~backends.events.Sweep` snapshots (the
queue's counts, rate, failure groups, stale configs, breakdowns) and from
:class:`~backends.events.Phase` events of ``kind="workflow"`` / ``"node"``
(the Argo Workflow and its nodes). The monitor hands both over in collapsed
batches, so a burst of snapshots costs one update.

Every table is a :class:`SweepTable`, which diffs a new set of rows against
what it shows and touches only the cells that changed (new rows are
appended, vanished ones removed; the table is rebuilt only when the order of
its rows changed, which only happens to the small group-by tables). The node
table is updated per node, never rebuilt.

Nothing here depends on colour: the progress bar uses four glyphs (legend on
the next line), states carry an icon *and* a word, and the current section is
marked with ``▸`` as well as reverse video.

Layout: narrow (an 80×24 terminal) shows the progress block, a one-line
section bar and one section at a time (``[``/``]`` switch); wide (the view
at least :data:`WIDE_MIN_WIDTH` × :data:`WIDE_MIN_HEIGHT`) shows every
section at once in a grid.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widget import Widget
from textual.widgets import DataTable, Static
from textual.widgets.data_table import ColumnKey

from backends.events import Phase, Sweep
from config.durations import format_elapsed as fmt_duration
from config.durations import parse_timestamp
from tui import bindings as keys
from tui.widgets.status import ICONS, TERMINAL, state_category

#: The view switches to the all-sections grid at this size (cells of the view itself).
WIDE_MIN_WIDTH = 120
WIDE_MIN_HEIGHT = 16

#: Section id → label, in the order ``[``/``]`` visit them.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("failures", "Failures"),
    ("stale", "Stale"),
    ("workload", "Workloads"),
    ("priority", "Priorities"),
    ("nodes", "Nodes"),
)

#: Which column of the wide layout each section is in.
_COLUMN_OF = {"failures": "left", "stale": "left", "nodes": "left", "workload": "right", "priority": "right"}

#: Bar glyphs per status; the counts line is their legend (reads without colour).
GLYPHS = {"completed": "█", "failed": "▓", "running": "▒", "pending": "░"}
STATUS_ORDER = ("completed", "failed", "running", "pending")

#: Longest text kept in a table cell (error messages can be whole tracebacks).
CELL_MAX = 240


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def one_line(text: Any, limit: int = CELL_MAX) -> str:
    """``text`` on one line (newlines shown as ``⏎``), at most ``limit`` characters."""
    flat = " ⏎ ".join(part.strip() for part in str(text if text is not None else "").splitlines() if part.strip())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def mini_bar(done: int, total: int, width: int = 10) -> str:
    """``███░░░░░░░`` for a breakdown row."""
    filled = int(round(width * done / total)) if total else 0
    return GLYPHS["completed"] * filled + GLYPHS["pending"] * (width - filled)


def breakdown_counts(row: dict[str, Any]) -> tuple[int, int, int, int, int]:
    """``(completed, failed, running, pending, total)`` of one breakdown row."""
    c, f, r, p = (_int(row.get(k)) for k in STATUS_ORDER)
    return c, f, r, p, c + f + r + p


# ------------------------------------------------------------------ progress


class SweepProgress(Widget):
    """Three lines: the stacked bar with % and done/total; the counts (the bar's legend);
    configs per minute, ETA, stale count and the workflow's phase.

    Args:
        clock: Time source (snapshots fix it).
    """

    COMPONENT_CLASSES = {"sweep--completed", "sweep--failed", "sweep--running", "sweep--pending", "sweep--dim",
                         "sweep--warning"}

    DEFAULT_CSS = """
    SweepProgress {
        height: 3;
        padding: 0 1;
        & > .sweep--completed { color: $text-success; }
        & > .sweep--failed { color: $text-error; }
        & > .sweep--running { color: $text-accent; }
        & > .sweep--pending { color: $text-muted; }
        & > .sweep--dim { color: $text-muted; }
        & > .sweep--warning { color: $text-warning; text-style: bold; }
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.sweep: Sweep | None = None
        self.workflow: Phase | None = None

    def show(self, sweep: Sweep | None = None, workflow: Phase | None = None) -> None:
        if sweep is not None:
            self.sweep = sweep
        if workflow is not None:
            self.workflow = workflow
        self.refresh()

    def clear(self) -> None:
        self.sweep = None
        self.workflow = None
        self.refresh()

    def _style(self, name: str):
        return self.get_component_rich_style(f"sweep--{name}", partial=True)

    def bar_text(self, width: int) -> Text:
        """The stacked bar: completed, failed, running, pending, ``width`` cells."""
        s = self.sweep
        text = Text(no_wrap=True, end="")
        if s is None or not s.total or width <= 0:
            text.append(GLYPHS["pending"] * max(0, width), self._style("pending"))
            return text
        counts = {"completed": s.completed, "failed": s.failed, "running": s.running, "pending": s.pending}
        # largest-remainder rounding: the segments always add up to the width
        exact = {k: width * v / s.total for k, v in counts.items()}
        cells = {k: int(v) for k, v in exact.items()}
        for k in sorted(exact, key=lambda k: exact[k] - cells[k], reverse=True)[: width - sum(cells.values())]:
            cells[k] += 1
        for status in STATUS_ORDER:
            if cells[status]:
                text.append(GLYPHS[status] * cells[status], self._style(status))
        return text

    def lines(self, width: int) -> list[Text]:
        """The three lines at ``width`` cells (also what tests read)."""
        s = self.sweep
        if s is None:
            first = Text("◌ waiting for the first snapshot of the work queue…", style=self._style("dim"))
            return [first, Text(), self._third(None, width)]
        suffix = f" {s.pct:5.1f}%  {s.done:,}/{s.total:,} done"
        if not s.total:
            first = Text(f"◌ model version {s.model_version_id} has no configs yet (populate it first)",
                         style=self._style("warning"))
        else:
            first = self.bar_text(max(10, width - len(suffix)))
            first.append(suffix, style="bold")
        second = Text(no_wrap=True)
        for status in STATUS_ORDER:
            if len(second):
                second.append("  ")
            second.append(f"{GLYPHS[status]} ", self._style(status))
            second.append(f"{status} {getattr(s, status):,}", "bold" if status == "failed" and s.failed else "")
        return [first, second, self._third(s, width)]

    def _third(self, s: Sweep | None, width: int = 0) -> Text:
        text = self._third_text(s, long=True)
        if width and text.cell_len > width:
            text = self._third_text(s, long=False)  # the stale section has the threshold
        return text

    def _third_text(self, s: Sweep | None, *, long: bool) -> Text:
        text = Text(no_wrap=True)
        if s is not None:
            remaining = s.pending + s.running
            text.append(f"rate {s.configs_per_min:,.1f} configs/min", "bold")
            if s.total and not remaining:
                text.append("  ✔ all configs done", "bold")
            else:
                text.append(f"  ETA {fmt_duration(s.eta_s)}" + ("" if s.eta_s is not None else " (no recent rate)"))
            if s.stale:
                more = f" (running > {s.stale_after_min:g} min)" if long else ""
                text.append(f"  ⚠ {len(s.stale):,} stale{more}", self._style("warning"))
        wf = self.workflow
        if wf is not None:
            if len(text):
                text.append("  ")
            category = state_category(wf.state)
            text.append(f"workflow {ICONS[category]} {wf.state}", "bold" if category == "failed" else "")
            if wf.detail and category == "failed":
                text.append(f": {one_line(wf.detail, 80)}", self._style("dim"))
        return text

    def render(self) -> Text:
        width = self.content_size.width or 80
        out = Text(no_wrap=True, overflow="ellipsis", end="")
        for i, line in enumerate(self.lines(width)):
            if i:
                out.append("\n")
            line.truncate(width, overflow="ellipsis")
            out.append_text(line)
        return out


# -------------------------------------------------------------------- tables


Column = tuple[str, str, "int | None"]  # (key, label, fixed width or None for auto)


class SweepTable(DataTable):
    """A keyed table that applies a new set of rows by touching only what changed.

    Args:
        columns: ``(key, label, width)``; width ``None`` sizes the column to its content.
    """

    DEFAULT_CSS = """
    SweepTable { height: 1fr; }
    """

    def __init__(self, columns: Sequence[Column], *, fill: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=False)
        self.column_spec = list(columns)
        #: this column takes the width the others leave (long texts end in "…", no sideways scrolling)
        self.fill = fill
        if fill is not None:
            # the fill column makes the row fit: no sideways scrollbar taking a row
            self.styles.overflow_x = "hidden"
        self._cells: dict[str, tuple] = {}
        self._columns_added = False
        self._content: dict[str, int] = {}  # widest cell so far per auto-width column
        #: counters for tests and the benchmark
        self.rebuilds = 0
        self.cell_updates = 0

    def _ensure_columns(self) -> None:
        if not self._columns_added:
            self._columns_added = True
            for key, label, width in self.column_spec:
                self.add_column(label, width=width, key=key)

    def on_mount(self) -> None:
        self._ensure_columns()

    def on_resize(self) -> None:
        self._fit()

    def _measure(self, cells: tuple) -> None:
        """Track the widest cell of each auto-width column (what DataTable will size it to)."""
        for (key, _label, width), cell in zip(self.column_spec, cells, strict=False):
            if width is None and key != self.fill:
                n = cell.cell_len if isinstance(cell, Text) else len(str(cell))
                if n > self._content.get(key, 0):
                    self._content[key] = n

    def _fit(self) -> None:
        """Give the fill column what the other columns leave of the table's width."""
        if self.fill is None or not self._columns_added or not self.size.width:
            return
        pad = 2 * self.cell_padding
        others = 0
        for key, label, width in self.column_spec:
            if key != self.fill:
                others += pad + (width if width is not None else max(self._content.get(key, 0), Text(label).cell_len))
        width = self.size.width
        if len(self._cells) + (1 if self.show_header else 0) > self.size.height:
            # a vertical scrollbar is (or is about to be) shown: layout has not caught up yet
            width -= self.styles.scrollbar_size_vertical
        target = max(12, width - others - pad)
        column = self.columns.get(ColumnKey(self.fill))
        if column is not None and (column.auto_width or column.width != target):
            column.auto_width = False
            column.width = target
            self._require_update_dimensions = True
            self.refresh()

    @property
    def keys(self) -> list[str]:
        """Row keys in display order."""
        return list(self._cells)

    def cells(self, key: str) -> tuple | None:
        return self._cells.get(key)

    def row_plain(self, key: str) -> list[str]:
        """A row's cells as plain strings (tests)."""
        return [c.plain if isinstance(c, Text) else str(c) for c in self._cells.get(key, ())]

    def selected_key(self) -> str | None:
        if not self._cells or self.cursor_row < 0:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:
            return None

    def sync(self, rows: Iterable[tuple[str, tuple]]) -> None:
        """Show exactly ``rows`` (``(key, cells)``, in order), changing as little as possible."""
        self._ensure_columns()
        rows = list(rows)
        new = dict(rows)
        order = [k for k, _ in rows]
        old = self._cells
        survivors = [k for k in order if k in old]
        if [k for k in old if k in new] != survivors or order[: len(survivors)] != survivors:
            self._rebuild(rows)
            return
        for key in [k for k in old if k not in new]:
            self.remove_row(key)
            del old[key]
        for key in survivors:
            self._update(key, new[key])
        for key in order[len(survivors):]:
            self.add_row(*new[key], key=key)
            old[key] = new[key]
            self._measure(new[key])
        self._fit()

    def upsert(self, rows: Iterable[tuple[str, tuple]]) -> None:
        """Update or append rows; rows not given stay as they are."""
        self._ensure_columns()
        old = self._cells
        for key, cells in rows:
            if key in old:
                self._update(key, cells)
            else:
                self.add_row(*cells, key=key)
                old[key] = cells
                self._measure(cells)
        self._fit()

    def _update(self, key: str, cells: tuple) -> None:
        current = self._cells[key]
        if current == cells:
            return
        for (col, _label, width), a, b in zip(self.column_spec, current, cells, strict=False):
            if a != b:
                self.update_cell(key, col, b, update_width=width is None and col != self.fill)
                self.cell_updates += 1
        self._cells[key] = cells
        self._measure(cells)

    def _rebuild(self, rows: list[tuple[str, tuple]]) -> None:
        """Re-add every row (an order change); the cursor stays on the same key."""
        selected = self.selected_key()
        self.rebuilds += 1
        self.clear()
        self._cells = {}
        self._content = {}
        for key, cells in rows:
            self.add_row(*cells, key=key)
            self._cells[key] = cells
            self._measure(cells)
        self._fit()
        if selected is not None and selected in self._cells:
            self.move_cursor(row=self.get_row_index(selected), animate=False)

    def reset(self) -> None:
        self.clear()
        self._cells = {}
        self._content = {}


class FailuresTable(SweepTable):
    """The failure groups; enter (``sweep_open_group``) posts ``RowSelected``, the view opens the group."""

    BINDINGS = [keys.BY_ID["sweep_open_group"].binding()]


FAILURE_COLUMNS: list[Column] = [("count", "Configs", 8), ("share", "Share", 6), ("error", "Error message", None)]
STALE_COLUMNS: list[Column] = [
    ("id", "Config", 8), ("workload", "Workload", None), ("batch", "Batch", 5), ("seq", "Seq len", 7),
    ("age", "Running for", 11), ("retries", "Retries", 7), ("worker", "Worker", None),
]
BREAKDOWN_COLUMNS: list[Column] = [
    ("done_bar", "Progress", 10), ("pct", "Done", 4), ("completed", "✔ compl", 7), ("failed", "✘ fail", 6),
    ("running", "▶ run", 6), ("pending", "◌ pend", 7),
]
NODE_COLUMNS: list[Column] = [
    ("node", "Node", None), ("phase", "Phase", 12), ("duration", "Duration", 8), ("retries", "Retries", 7),
    ("message", "Message", None),
]


# ---------------------------------------------------------------------- view


class SweepView(Vertical):
    """Progress block, section bar and the five sections of a sweep.

    Args:
        clock: Time source for ages and durations (snapshots fix it).
        stale_key: How the reset key reads in the stale section's title (``R``).
    """

    DEFAULT_CSS = """
    SweepView { height: 1fr; }
    """

    class GroupSelected(Message):
        """The user chose a failure group (enter on it)."""

        def __init__(self, error_message: str, count: int) -> None:
            super().__init__()
            self.error_message = error_message
            self.count = count

    def __init__(self, *, clock: Callable[[], float] | None = None, stale_key: str = "R",
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.clock = clock or time.time
        self.stale_key = stale_key
        self.sweep: Sweep | None = None
        self.workflow: Phase | None = None
        self.nodes: dict[str, Phase] = {}
        self.current = SECTIONS[0][0]
        self.updates = 0
        self.last_applied: float | None = None
        self._ticking: set[str] = set()  # nodes whose duration changes every second

    def compose(self) -> ComposeResult:
        yield SweepProgress(id="sweep-progress")
        yield Static("", id="sweep-bar")
        # Wide: two columns (failures, stale, nodes | workloads, priorities; the
        # breakdown tables need ~72 cells). Narrow: one section of one column.
        with Horizontal(id="sweep-sections"):
            with Vertical(id="sweep-column-left", classes="sweep-column"):
                with Vertical(id="section-failures", classes="sweep-section"):
                    yield Static("", id="title-failures", classes="sweep-title")
                    yield FailuresTable(FAILURE_COLUMNS, fill="error", id="sweep-failures")
                with Vertical(id="section-stale", classes="sweep-section"):
                    yield Static("", id="title-stale", classes="sweep-title")
                    yield SweepTable(STALE_COLUMNS, fill="worker", id="sweep-stale")
                with Vertical(id="section-nodes", classes="sweep-section"):
                    yield Static("", id="title-nodes", classes="sweep-title")
                    yield SweepTable(NODE_COLUMNS, fill="message", id="sweep-nodes")
            with Vertical(id="sweep-column-right", classes="sweep-column"):
                with Vertical(id="section-workload", classes="sweep-section"):
                    yield Static("", id="title-workload", classes="sweep-title")
                    yield SweepTable([("workload", "Workload", None), *BREAKDOWN_COLUMNS], id="sweep-workload")
                with Vertical(id="section-priority", classes="sweep-section"):
                    yield Static("", id="title-priority", classes="sweep-title")
                    yield SweepTable([("priority", "Priority", 8), *BREAKDOWN_COLUMNS], id="sweep-priority")

    def on_mount(self) -> None:
        self.show_section(self.current)
        self._titles()
        self.set_interval(1.0, self._tick, name="sweep tick")

    def on_resize(self) -> None:
        wide = self.size.width >= WIDE_MIN_WIDTH and self.size.height >= WIDE_MIN_HEIGHT
        if wide != self.wide:
            self.set_class(wide, "-wide")
            self._titles()

    def on_descendant_focus(self, event) -> None:
        # wide, every section is on screen: the focused table's is the current one
        widget = getattr(event, "widget", None)
        if isinstance(widget, SweepTable) and widget.id and widget.id.startswith("sweep-"):
            section = widget.id.removeprefix("sweep-")
            if section != self.current:
                self.show_section(section)

    @property
    def wide(self) -> bool:
        return self.has_class("-wide")

    def table(self, section: str) -> SweepTable:
        return self.query_one(f"#sweep-{section}", SweepTable)

    @property
    def progress(self) -> SweepProgress:
        return self.query_one(SweepProgress)

    # ---------------------------------------------------------------- sections

    def show_section(self, section: str, *, focus: bool = False) -> None:
        """Make ``section`` the current one (the only one shown when narrow)."""
        self.current = section
        for name, _label in SECTIONS:
            self.query_one(f"#section-{name}").set_class(name == section, "-current")
        for side in ("left", "right"):
            self.query_one(f"#sweep-column-{side}").set_class(_COLUMN_OF[section] == side, "-current")
        self._bar()
        self._titles()
        if focus:
            self.table(section).focus()

    def cycle(self, step: int) -> str:
        """Go ``step`` sections on (wrapping); focuses the section's table."""
        names = [name for name, _ in SECTIONS]
        target = names[(names.index(self.current) + step) % len(names)]
        self.show_section(target, focus=True)
        return target

    def section_counts(self) -> dict[str, int]:
        s = self.sweep
        return {
            "failures": len(s.failures) if s else 0,
            "stale": len(s.stale) if s else 0,
            "workload": len(s.by_workload) if s else 0,
            "priority": len(s.by_priority) if s else 0,
            "nodes": len(self.nodes),
        }

    def _bar(self) -> None:
        counts = self.section_counts()
        text = Text(no_wrap=True, overflow="ellipsis")
        for i, (name, label) in enumerate(SECTIONS):
            if i:
                text.append(" │ ", "dim")
            item = f"{label} {counts[name]:,}"
            if name == self.current:
                text.append(f"▸{item}", "bold reverse")
            else:
                text.append(f" {item}")
        text.append("   [ ] switch", "dim")
        self.query_one("#sweep-bar", Static).update(text)

    def _titles(self) -> None:
        """Each section's title line; wide, the current (focused) one is marked ``▸``, not only by colour."""
        for name, text in self.title_texts().items():
            if self.wide and name == self.current:
                marked = Text("▸ ", style="bold", no_wrap=True, overflow="ellipsis")
                marked.append_text(text)
                text = marked
            self.query_one(f"#title-{name}", Static).update(text)

    def title_texts(self) -> dict[str, Text]:
        s = self.sweep
        out: dict[str, Text] = {}
        failures = s.failures if s else []
        n_failed = sum(_int(f.get("count")) for f in failures)
        t = Text(no_wrap=True, overflow="ellipsis")
        if failures:
            t.append(f"✘ Failures by error: {len(failures):,} group" + ("s" if len(failures) != 1 else ""), "bold")
            t.append(f", {n_failed:,} configs · enter: list a group's configs", "dim")
        else:
            t.append("✔ No failed configs" if s is not None else "Failures by error", "bold")
        out["failures"] = t

        t = Text(no_wrap=True, overflow="ellipsis")
        minutes = f"{s.stale_after_min:g}" if s is not None else "120"
        if s is not None and s.stale:
            t.append(f"⚠ Stale: {len(s.stale):,} running > {minutes} min", "bold")
            t.append(f" · {self.stale_key}: reset to pending", "dim")
        else:
            t.append(f"✔ No stale configs (none running > {minutes} min)" if s is not None else "Stale configs", "bold")
        out["stale"] = t

        n = len(s.by_workload) if s else 0
        out["workload"] = Text(f"By workload: {n:,} type" + ("s" if n != 1 else ""), "bold")
        n = len(s.by_priority) if s else 0
        t = Text(f"By priority: {n:,} level" + ("s" if n != 1 else ""), "bold")
        t.append(" · lower runs first", "dim")
        out["priority"] = t

        counts: dict[str, int] = {}
        for phase in self.nodes.values():
            category = state_category(phase.state, phase.detail)
            counts[category] = counts.get(category, 0) + 1
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(f"Workflow nodes: {len(self.nodes):,}", "bold")
        for category in ("running", "busy", "pending", "ok", "failed", "cancelled", "other"):
            if counts.get(category):
                t.append(f"  {ICONS[category]} {counts[category]:,} {_CATEGORY_WORDS[category]}")
        out["nodes"] = t
        return out

    # -------------------------------------------------------------------- data

    def update_sweep(self, sweep: Sweep) -> None:
        """Show a new snapshot (the latest of a burst)."""
        self.sweep = sweep
        self.progress.show(sweep)
        total_failed = sum(_int(f.get("count")) for f in sweep.failures) or sweep.failed or 1
        self.table("failures").sync(
            (str(f.get("error_message")), (
                Text(f"{_int(f.get('count')):,}", justify="right"),
                Text(f"{100.0 * _int(f.get('count')) / total_failed:.0f}%", justify="right"),
                Text(one_line(f.get("error_message")), no_wrap=True, overflow="ellipsis"),
            ))
            for f in sweep.failures
        )
        self.table("stale").sync(self._stale_rows(sweep.stale))
        self.table("workload").sync(self._breakdown_rows(sweep.by_workload, "workload_type"))
        self.table("priority").sync(self._breakdown_rows(sweep.by_priority, "priority"))
        self._titles()
        self._bar()
        self.updates += 1
        self.last_applied = time.perf_counter()

    def _stale_rows(self, stale: list[dict[str, Any]]) -> list[tuple[str, tuple]]:
        now = self.clock()
        rows = []
        for c in stale:
            started = parse_timestamp(c.get("started_at"))
            rows.append((str(c.get("id")), (
                Text(f"#{c.get('id')}"),
                Text(str(c.get("workload_type") or "—")),
                Text(str(c.get("batch_size", "—")), justify="right"),
                Text(str(c.get("sequence_length", "—")), justify="right"),
                Text(fmt_duration(now - started) if started is not None else "—", justify="right"),
                Text(str(_int(c.get("retry_count"))), justify="right"),
                Text(one_line(c.get("worker") or "—", 80), no_wrap=True, overflow="ellipsis"),
            )))
        return rows

    @staticmethod
    def _breakdown_rows(rows: list[dict[str, Any]], by: str) -> list[tuple[str, tuple]]:
        out = []
        for r in rows:
            c, f, run, p, total = breakdown_counts(r)
            done = c + f
            out.append((str(r.get(by)), (
                Text(str(r.get(by))),
                Text(mini_bar(done, total)),
                Text(f"{100.0 * done / total if total else 0.0:.0f}%", justify="right"),
                Text(f"{c:,}", justify="right"),
                Text(f"{f:,}", justify="right", style="bold" if f else ""),
                Text(f"{run:,}", justify="right"),
                Text(f"{p:,}", justify="right"),
            )))
        return out

    def update_phases(self, phases: Iterable[Phase]) -> None:
        """Apply the latest Phase per unit; only workflow and node phases are this view's."""
        changed = []
        for phase in phases:
            if phase.kind == "workflow":
                self.workflow = phase
                self.progress.show(workflow=phase)
            elif phase.kind == "node":
                self.nodes[phase.unit] = phase
                changed.append(phase)
        if not changed:
            return
        self.table("nodes").upsert((p.unit, self._node_cells(p)) for p in changed)
        for p in changed:
            if self._is_running(p):
                self._ticking.add(p.unit)
            else:
                self._ticking.discard(p.unit)
        self._titles()
        self._bar()

    @staticmethod
    def _is_running(phase: Phase) -> bool:
        return phase.started is not None and phase.finished is None and \
            state_category(phase.state, phase.detail) not in TERMINAL

    def _node_cells(self, p: Phase) -> tuple:
        category = state_category(p.state, p.detail)
        if p.started is None:
            duration = "—"
        else:
            end = p.finished if p.finished is not None else (None if category in TERMINAL else self.clock())
            duration = fmt_duration(max(0.0, end - p.started)) if end is not None else "—"
        return (
            Text(p.unit),
            Text(f"{ICONS[category]} {p.state}", style="bold" if category == "failed" else ""),
            Text(duration, justify="right"),
            Text(str(p.retries) if p.retries else "—", justify="right"),
            Text(one_line(p.detail, 160), no_wrap=True, overflow="ellipsis"),
        )

    def _tick(self) -> None:
        """Durations of running nodes and ages of stale configs move on."""
        if self._ticking:
            nodes = self.nodes
            self.table("nodes").upsert((u, self._node_cells(nodes[u])) for u in self._ticking if u in nodes)
        if self.sweep is not None and self.sweep.stale and len(self.sweep.stale) <= 200:
            self.table("stale").sync(self._stale_rows(self.sweep.stale))

    def reset(self) -> None:
        """Forget everything (another run is shown)."""
        self.sweep = None
        self.workflow = None
        self.nodes.clear()
        self._ticking.clear()
        self.progress.clear()
        for name, _ in SECTIONS:
            self.table(name).reset()
        self._titles()
        self._bar()

    # ------------------------------------------------------------------ events

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id != "sweep-failures":
            return
        event.stop()
        error = event.row_key.value
        if error is None:
            return
        count = next((_int(f.get("count")) for f in (self.sweep.failures if self.sweep else [])
                      if str(f.get("error_message")) == error), 0)
        self.post_message(self.GroupSelected(error, count))


_CATEGORY_WORDS = {
    "running": "running", "busy": "starting", "pending": "pending", "ok": "succeeded", "failed": "failed",
    "cancelled": "skipped", "other": "other",
}


__all__ = [
    "FailuresTable", "GLYPHS", "SECTIONS", "SweepProgress", "SweepTable", "SweepView", "WIDE_MIN_HEIGHT",
    "WIDE_MIN_WIDTH", "mini_bar", "one_line",
]
