"""The home screen: every run, live and saved.

Rows come from the run store (``meta.json`` of every run directory) merged
with the app's live controllers (a live controller's state wins over what
its directory says). A run whose supervisor is gone is reconciled when the
store is read (:mod:`backends.supervisor.reconcile`): it is never listed as
running; a ``lost`` one names what it may have left, and ``c`` removes that.
The screen refreshes once a second and after every action, at a cost that
does not grow with the number of runs: the store is followed by a
:class:`~backends.store.RunWatcher` (a stat of the runs directory, of the
live runs and of a slice of the others; only a changed ``meta.json`` is
read), the row list is rebuilt only when a run or a controller changed, and
the table (:class:`~tui.widgets.virtual_table.VirtualTable`) draws only the
rows on screen, redrawing only those whose cells changed.
"""

from __future__ import annotations

import contextlib
import gc
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich.cells import cell_len
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Header, Input, Static

from config.durations import format_elapsed
from config.errors import SweepdeckError
from tui import bindings as keys
from tui.screens import themed
from tui.screens.dialogs import ConfirmDialog
from tui.widgets.footer import KeyFooter
from tui.widgets.virtual_table import VirtualTable

if TYPE_CHECKING:
    from tui.app import SweepdeckApp

# State → (icon, word). Words carry the state; icons help; colour is extra.
STATES: dict[str, tuple[str, str]] = {
    "running": ("●", "running"),
    "succeeded": ("✓", "succeeded"),
    "failed": ("✗", "failed"),
    "cancelled": ("⊘", "cancelled"),
    "detached": ("⏸", "detached"),
    "created": ("◌", "starting"),
    "launching": ("◌", "starting"),
    "starting": ("◌", "starting"),
    "pending": ("◌", "pending"),
    "cleaning": ("◌", "cleaning"),
    "cancelling": ("◌", "cancelling"),
    "lost": ("⚠", "lost"),
}
FINISHED = ("succeeded", "failed", "cancelled", "lost")


STATE_STYLES = {
    "running": "bold $accent",
    "succeeded": "$success",
    "failed": "bold $error",
    "cancelled": "$text-muted",
    "detached": "italic $warning",
    "lost": "bold $warning",
}


def state_label(state: str, app: Any = None) -> Text:
    """``● running``: icon and word carry the state; the theme colour only helps."""
    icon, word = STATES.get(state, ("?", state or "unknown"))
    return themed(app, f"{icon} {word}", STATE_STYLES.get(state, ""))


def format_started(ts: float | None) -> str:
    if not ts:
        return "—"
    return time.strftime("%b %d %H:%M", time.localtime(ts))


format_duration = format_elapsed


@dataclass(slots=True)
class RunRow:
    """One line of the runs table."""

    id: str
    backend: str
    model: str
    workload: str
    state: str
    started: float | None
    finished: float | None
    controller: Any = None
    record: Any = None
    parent: str | None = None  # the run this one was relaunched from (a fix run)
    fix: str = ""  # the fix's label, when it was relaunched with one
    depth: int = 0  # how deep under its family's first run it is listed
    _started_text: str | None = field(default=None, repr=False, compare=False)
    _hay: str | None = field(default=None, repr=False, compare=False)
    _widths: tuple[bool, tuple[int, ...]] | None = field(default=None, repr=False, compare=False)

    @property
    def live(self) -> bool:
        if self.controller is not None:
            return bool(getattr(self.controller, "live", False))
        return self.state not in FINISHED and self.state != "detached"

    def duration(self, now: float) -> float | None:
        end = self.finished if self.finished else (now if self.state not in FINISHED + ("detached",) else None)
        return end - self.started if (self.started and end) else None

    def run_label(self, marked: bool = False) -> str:
        """The run id, under its parent when it is a fix run (``↳``), with ◆ when marked for compare."""
        prefix = ("  " * (self.depth - 1) + "↳ ") if self.depth else ""
        return prefix + ("◆ " if marked else "") + self.id

    @property
    def started_text(self) -> str:
        """When it started, as the list shows it (formatted once)."""
        if self._started_text is None:
            self._started_text = format_started(self.started)
        return self._started_text

    def cells(self, now: float, app: Any = None, marked: bool = False) -> tuple:
        """One cell per column of the wide layout (:data:`RunsScreen.COLUMNS`)."""
        return (
            state_label(self.state, app),
            self.run_label(marked),
            self.model.rsplit("/", 1)[-1],
            self.workload,
            self.backend,
            self.started_text,
            format_duration(self.duration(now)),
        )

    def texts(self, now: float, marked: bool = False) -> tuple[str, ...]:
        """The cells of :meth:`cells` as plain text (what the column widths are measured on)."""
        icon, word = STATES.get(self.state, ("?", self.state or "unknown"))
        return (f"{icon} {word}", self.run_label(marked), self.model.rsplit("/", 1)[-1], self.workload, self.backend,
                self.started_text, format_duration(self.duration(now)))

    def widths(self, now: float, marked: bool = False) -> tuple[int, ...]:
        """The terminal cells each of :meth:`texts` takes (kept while the run cannot change: it is finished)."""
        cached = self._widths
        if cached is not None and cached[0] == marked:
            return cached[1]
        widths = tuple(len(t) if t.isascii() else cell_len(t) for t in self.texts(now, marked))
        if not self.live and self.controller is None:
            self._widths = (marked, widths)
        return widths

    def narrow_cells(self, now: float, app: Any = None, marked: bool = False) -> tuple:
        """The cells of the two-line layout (80 columns): the run and, under it, what it ran where and when."""
        run = Text(self.run_label(marked))
        about = " · ".join(p for p in (self.model.rsplit("/", 1)[-1], self.workload, self.backend,
                                        self.started_text) if p)
        run.append("\n" + ("  " * self.depth) + about, style="dim")
        return (state_label(self.state, app), run, format_duration(self.duration(now)))

    def haystack(self) -> str:
        return " ".join((self.id, self.backend, self.model, self.workload, self.state, self.parent or ""))

    @property
    def search_text(self) -> str:
        """:meth:`haystack` in lower case (made once: the filter looks at every row on every key)."""
        if self._hay is None:
            self._hay = self.haystack().lower()
        return self._hay


def filter_rows(query: str, rows: list[RunRow]) -> list[RunRow]:
    """The rows that match ``query`` (case-insensitive), best first.

    Rows holding the query as typed come first, in list order; then rows
    holding its characters in order (``l3chat`` → ``llama-3 … chatbot``),
    tighter matches first. One substring test and at most one regex search
    a row: typing in the filter of 10,000 runs stays within a frame or two.
    """
    q = query.lower()
    letters = re.compile(".*?".join(re.escape(c) for c in q), re.DOTALL)
    exact: list[RunRow] = []
    fuzzy: list[tuple[float, RunRow]] = []
    for row in rows:
        hay = row.search_text
        if q in hay:
            exact.append(row)
        elif (found := letters.search(hay)) is not None:
            fuzzy.append((len(q) / (found.end() - found.start()), row))
    fuzzy.sort(key=lambda sr: -sr[0])  # stable: newest first among equals
    return exact + [row for _, row in fuzzy]


def row_of(rec) -> RunRow:
    """The row of a saved run."""
    fix = rec.meta.get("fix")
    return RunRow(
        id=rec.id,
        backend=rec.backend + (f"/{rec.meta['profile']}" if rec.meta.get("profile") else ""),
        model=rec.model,
        workload=rec.workload,
        state=rec.state,
        started=rec.started,
        finished=rec.finished,
        record=rec,
        parent=rec.meta.get("parent"),
        fix=str(fix.get("label") or "") if isinstance(fix, dict) else "",
    )


def collect_rows(store, controllers: list, records: list | None = None, cache: dict | None = None) -> list[RunRow]:
    """Saved runs and live controllers, newest first; a controller overrides its record.

    ``cache`` (run id → (record, row)) keeps the row of a record that did not
    change (the same object), so a refresh of 10,000 runs where one changed
    makes one row.
    """
    rows: dict[str, RunRow] = {}
    if records is None:
        try:
            records = store.list()
        except OSError:
            records = []
    if cache is None:
        cache = {}
    kept: dict = {}
    for rec in records:
        hit = cache.get(rec.id)
        row = hit[1] if hit is not None and hit[0] is rec else row_of(rec)
        kept[rec.id] = (rec, row)
        rows[rec.id] = row
    cache.clear()
    cache.update(kept)
    for ctrl in controllers:
        run = getattr(ctrl, "run", None)
        spec = getattr(run, "spec", None) or getattr(ctrl, "spec", None)
        record = getattr(ctrl, "record", None)
        run_id = getattr(run, "id", None) or getattr(spec, "experiment_id", None) or getattr(record, "id", None)
        if not run_id:
            continue
        old = rows.get(run_id)
        state = getattr(ctrl, "state", None) or (old.state if old else "created")
        # the controller knows when its run ended even when the record read earlier did not (a fix run
        # relaunched here and finished since: "Duration —" before)
        ended = getattr(getattr(ctrl, "finished", None), "ts", None)
        finished = (ended or (old.finished if old else None)) if state in FINISHED else None
        rows[run_id] = RunRow(
            id=run_id,
            backend=(old.backend if old else getattr(spec, "backend", "?")),
            model=(old.model if old else getattr(spec, "model", "")),
            workload=(old.workload if old else getattr(getattr(spec, "workload", None), "app", "")),
            state=state,
            started=(old.started if old and old.started else None) or getattr(run, "started", None)
            or getattr(ctrl, "started_at", None),
            finished=finished,
            controller=ctrl,
            record=old.record if old else record,
            parent=(old.parent if old else None) or getattr(spec, "parent", None),
            fix=(old.fix if old else "") or str(getattr(getattr(ctrl, "fix", None), "label", "") or ""),
        )
    return in_families(sorted(rows.values(), key=_start, reverse=True))


def in_families(rows: list[RunRow]) -> list[RunRow]:
    """Newest first, with every fix run right under the run it fixes (``depth`` set)."""
    from backends.lineage import family_order

    by_id = {r.id: r for r in rows}
    out = []
    for run_id, depth in family_order((r.id, r.parent, r.started) for r in rows):
        row = by_id[run_id]
        row.depth = depth
        out.append(row)
    return out


def leftovers_of(row: RunRow) -> list[dict]:
    """What a lost (or reconciled) run recorded as possibly still alive."""
    if row.record is None or row.controller is not None:
        return []
    return list(row.record.meta.get("leftovers") or [])


class RunsFilter(Input):
    """The runs filter box: the list narrows while the key is handled.

    Input lays the screen out again on every key; narrowing the list from the
    ``Changed`` message (handled after that) would make it twice, and draw
    the key and the rows in two frames.
    """

    def watch_value(self, value: str) -> None:
        screen = self.screen
        if isinstance(screen, RunsScreen):
            screen.filter_changed()


class RunsScreen(Screen):
    """Home: the runs table, a filter, and the keys to start or open runs."""

    SCOPE = "runs"
    FOOTER = ("runs",)
    BINDINGS = keys.bindings("runs")
    COLUMNS = ("State", "Run", "Model", "Workload", "Backend", "Started", "Duration")
    #: Below this width each run takes two lines: the run id, and under it its model,
    #: workload, backend and start (nothing is dropped at 80 columns).
    WIDE = 118
    NARROW_COLUMNS = ("State", "Run", "Duration")
    REFRESH_SECONDS = 1.0
    # Each refresh looks at the runs directory and at the live runs; every other run's
    # meta.json is looked at once in this many seconds (see backends.store.RunWatcher).
    STORE_SECONDS = 10.0

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[RunRow] = []
        self._shown: list[RunRow] = []  # the rows in the table (filtered), in table order
        self._cols: tuple[str, ...] = ()
        self._widths: dict[str, int] = {}
        self._watch: Any = None  # backends.store.RunWatcher, made on mount
        self._row_cache: dict = {}  # run id → (record, row): rows of unchanged records are kept
        self._rows_key: tuple | None = None  # (store version, controllers) the rows were built from
        self._rows_version = 0
        self._children: dict[str, list[str]] = {}  # run id → the runs relaunched from it
        self._positions: dict[str, int] = {}  # run id → its place in self.rows
        self._order_version = 0  # bumped when the rows were ordered again (not when one changed in place)
        self._newest = 0.0  # the latest start of a listed run
        self._filtered: tuple[tuple[int, str], list[RunRow], list[RunRow]] | None = None
        self._table_key: tuple | None = None  # what the table was last filled with
        self._finished_widths: tuple[int, ...] = ()
        self._widths_key: tuple | None = None
        self._live_rows: list[RunRow] = []
        self._detail: str | None = None
        self._detail_lines = 0
        self.marked: list[str] = []  # runs marked for compare, in marking order

    @property
    def sd_app(self) -> SweepdeckApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="runs-body"):
            yield RunsFilter(placeholder="filter runs (id, model, workload, state) — esc clears", id="runs-filter")
            yield VirtualTable(id="runs-table", zebra_stripes=True, on_highlight=lambda _row: self._update_detail())
            yield Static("", id="runs-empty")
            yield Static("", id="runs-detail")
        yield KeyFooter()

    def on_mount(self) -> None:
        from backends.store import RunWatcher
        from backends.supervisor.reconcile import reconcile_records

        self.sub_title = "Runs"
        self._watch = RunWatcher(self.sd_app.store, settle=reconcile_records, sweep_seconds=self.STORE_SECONDS)
        self._layout(self.app.size.width)
        self.refresh_rows()
        self.set_interval(self.REFRESH_SECONDS, self.refresh_rows)
        self.query_one(VirtualTable).focus()

    def on_screen_resume(self) -> None:
        self.refresh_rows()  # runs may have finished while another screen was shown

    # ------------------------------------------------------------------ rows

    def on_resize(self, event) -> None:
        if self._layout(event.size.width):
            self.refresh_rows()

    def _layout(self, width: int) -> bool:
        """Pick the layout for ``width``; True when it changed."""
        narrow = width < self.WIDE
        cols = self.NARROW_COLUMNS if narrow else self.COLUMNS
        # two-line rows: the run column takes what the state and duration leave (cell padding, scrollbar)
        widths = {"State": 11, "Run": max(20, width - 11 - 8 - 3 * 2 - 2), "Duration": 8} if narrow else {}
        if (cols, widths) == (self._cols, self._widths):
            return False
        self._cols, self._widths = cols, widths
        table = self.query_one("#runs-table", VirtualTable)
        table.set_columns([(name, name, widths.get(name) or cell_len(name)) for name in cols],
                          row_height=2 if narrow else 1)
        self._table_key = None
        self._widths_key = None
        return True

    @property
    def narrow(self) -> bool:
        return self._cols == self.NARROW_COLUMNS

    def key_for(self, binding_id: str) -> str:
        return keys.display_key(keys.effective_key(keys.BY_ID[binding_id], self.sd_app.user_keys))

    def refresh_rows(self, *, reread: bool = False) -> None:
        """Catch up with the store and the controllers; redraw only what changed.

        Args:
            reread: Stat every run now (``ctrl+r``, after a delete or a clean up),
                not only the live ones and the next slice of the sweep.
        """
        if self._watch is None:
            return
        self._rebuild_if_changed(reread)
        self._show()

    def _show(self) -> None:
        """Fill the table from the rows and the filter (only when they changed; else redraw changed cells)."""
        query = self.query_one("#runs-filter", Input).value.strip()
        shown = self._filter(query)
        table = self.query_one("#runs-table", VirtualTable)
        # without a filter a run changing in place keeps every row where it is: only its cells are drawn again
        version = self._rows_version if query else self._order_version
        table_key = (version, query, tuple(self.marked))
        if table_key != self._table_key:
            self._table_key = table_key
            self._shown = shown
            self._set_widths(table)
            table.set_rows([r.id for r in shown], self._cells_at)
        else:
            self._set_widths(table)
            table.redraw_changed()  # live durations and states: only the rows on screen
        self._update_empty(query)
        self._update_detail()

    def _rebuild_if_changed(self, reread: bool) -> None:
        """The row list, rebuilt when a run or a controller changed (rows of unchanged runs are kept)."""
        app = self.sd_app
        whole = reread or self._rows_key is None  # the whole store is read now
        with contextlib.suppress(OSError):  # the state dir went away: keep what is listed
            self._watch.refresh(full=reread)
        controllers = tuple((id(c), getattr(c, "state", None), bool(getattr(c, "live", False)))
                            for c in app.controllers)
        key = (self._watch.version, controllers)
        changed, reloaded = self._watch.take_changes()
        if key == self._rows_key:
            return
        same_controllers = self._rows_key is not None and controllers == self._rows_key[1]
        self._rows_key = key
        self._rows_version += 1
        self._filtered = None
        if same_controllers and not reloaded and self._patch_rows(changed):
            return
        self.rows = collect_rows(app.store, app.controllers, self._watch.records(), cache=self._row_cache)
        self._order_version += 1
        self._positions = {row.id: i for i, row in enumerate(self.rows)}
        self._newest = max((_start(row) for row in self.rows), default=0.0)
        children: dict[str, list[str]] = {}
        for row in self.rows:
            if row.parent:
                children.setdefault(row.parent, []).append(row.id)
        self._children = children
        self._live_rows = [r for r in self.rows if r.controller is not None or r.live]
        if whole and getattr(app, "freeze_heap", False):
            gc.freeze()  # 10,000 runs' records and rows live long: spare them the full collections

    def _patch_rows(self, changed: set[str]) -> bool:
        """Put the rows of runs that changed in their places; False when the list must be ordered again.

        A run's state changing (the usual change: a live run moving on) keeps
        its place; a new run newer than every listed one, relaunched from
        none, goes first. Anything else (a run removed, a start or parent
        changed, a fix run added) needs :func:`collect_rows`.
        """
        placed, added = [], []
        for run_id in changed:
            record, at = self._watch.get(run_id), self._positions.get(run_id)
            if record is None:
                return False
            row = row_of(record)
            if at is None:
                if row.parent or run_id in self._children or not _start(row) > self._newest:
                    return False
                added.append((record, row))
                continue
            old = self.rows[at]
            if old.controller is not None or (row.parent, row.started) != (old.parent, old.started):
                return False
            row.depth = old.depth
            placed.append((at, record, row))
        for at, _record, row in placed:
            self.rows[at] = row
        if added:
            added.sort(key=lambda rr: _start(rr[1]))  # the newest ends up first
            for _record, row in added:
                self.rows.insert(0, row)
            self._newest = max(self._newest, *(_start(row) for _, row in added))
            self._positions = {row.id: i for i, row in enumerate(self.rows)}
            self._order_version += 1
        self._fold_in([(record, row) for _, record, row in placed] + added, changed)
        return True

    def _fold_in(self, rows: list, changed: set[str]) -> None:
        """Keep the row cache, the live rows and the finished runs' column widths up to date with ``rows``."""
        marked = set(self.marked)
        widths = self._finished_widths
        for record, row in rows:
            self._row_cache[row.id] = (record, row)
            if widths and not row.live:  # the columns grow to fit it (they shrink when the list is ordered again)
                widths = tuple(map(max, widths, row.widths(self.sd_app.clock(), row.id in marked)))
        self._finished_widths = widths
        self._live_rows = [r for r in self._live_rows if r.id not in changed]
        self._live_rows += [row for _, row in rows if row.live]

    def _filter(self, query: str) -> list[RunRow]:
        """The rows matching ``query``; a longer query searches only what the shorter one matched."""
        if not query:
            return self.rows
        cached = self._filtered
        if cached is not None and cached[0] == (self._rows_version, query):
            return cached[2]
        base = self.rows
        if cached is not None and cached[0][0] == self._rows_version and query.lower().startswith(cached[0][1].lower()):
            base = cached[1]  # every match of "llam" holds "lla"'s letters too
        matched = filter_rows(query, base)
        chosen = {id(r) for r in matched}
        in_order = [r for r in base if id(r) in chosen] if len(matched) != len(base) else base
        self._filtered = ((self._rows_version, query), in_order, matched)
        return matched

    def _cells_at(self, index: int) -> tuple:
        row = self._shown[index]
        app = self.sd_app
        if self.narrow:
            return row.narrow_cells(app.clock(), app, row.id in self.marked)
        return row.cells(app.clock(), app, row.id in self.marked)

    def _set_widths(self, table: VirtualTable) -> None:
        """Fit the wide layout's columns to every run, filtered out or not (the narrow one has set widths).

        Finished runs are measured when the rows change; live ones (their
        duration grows) on every refresh.
        """
        if self.narrow:
            return
        now = self.sd_app.clock()
        key = (self._order_version, tuple(self.marked))
        marked = set(self.marked)
        if key != self._widths_key:
            self._widths_key = key
            live = {id(r) for r in self._live_rows}
            every = [row.widths(now, row.id in marked) for row in self.rows if id(row) not in live]
            self._finished_widths = tuple(map(max, zip(tuple(cell_len(name) for name in self._cols), *every,
                                                       strict=True)))
        widths = self._finished_widths
        if self._live_rows:
            widths = tuple(map(max, zip(widths, *(r.widths(now, r.id in marked) for r in self._live_rows),
                                        strict=True)))
        table.set_widths(widths)

    def _update_empty(self, query: str) -> None:
        empty = self.query_one("#runs-empty", Static)
        if self._shown:
            empty.display = False
            return
        empty.display = True
        if query:
            empty.update(f"No run matches “{query}”. Press esc to clear the filter.")
        else:
            empty.update(
                "No runs yet.\n\n"
                f"Press  {self.key_for('new_experiment')}  to start a new experiment,\n"
                f"       {self.key_for('quick_command')}  to type one in a line (llama3-70b chatbot TP=4),\n"
                f"       {self.key_for('matrix_sweep')}  to launch a Tekton matrix PipelineRun,\n"
                f"       {self.key_for('help')}  for every key."
            )

    def selected_row(self) -> RunRow | None:
        table = self.query_one("#runs-table", VirtualTable)
        index = table.cursor_row
        if 0 <= index < len(self._shown) and table.row_count == len(self._shown):
            return self._shown[index]
        return None

    def selected_id(self) -> str | None:
        row = self.selected_row()
        return row.id if row is not None else None

    def _update_detail(self) -> None:
        row = self.selected_row()
        self._set_detail(self._detail_text(row) if row is not None else "")

    def _set_detail(self, text: str) -> None:
        """Show ``text`` under the table; a new layout only when it needs another number of lines."""
        detail = self.query_one("#runs-detail", Static)
        if text == self._detail:
            return
        width = detail.content_region.width
        lines = (1 if cell_len(text) <= width else 2) if width else 0  # 0: not laid out yet, not known
        layout = not lines or lines != self._detail_lines or not text
        self._detail, self._detail_lines = text, lines
        detail.update(text, layout=layout)

    def _detail_text(self, row: RunRow) -> str:
        hint = []
        if row.controller is not None and row.live:
            hint.append(f"{self.key_for('open_run')}: watch")
        elif row.state == "detached":
            hint.append(f"{self.key_for('attach_run')}: attach")
        elif _has_results(row):
            hint.append(f"{self.key_for('open_run')}: results · {self.key_for('replay_run')}: replay")
        else:
            hint.append(f"{self.key_for('open_run')}: replay")
        left = leftovers_of(row)
        if left:
            from backends.supervisor.reconcile import describe

            hint.insert(0, "may still run: " + ", ".join(describe(r) for r in left))
            hint.append(f"{self.key_for('clean_run')}: clean up")
            if any(r.get("kind") != "pid" for r in left):
                hint.append(f"{self.key_for('attach_run')}: follow again")
        if row.state in FINISHED and row.controller is None:
            hint.append(f"{self.key_for('delete_run')}: delete")
        if self.marked:
            hint.append(f"{len(self.marked)} marked · {self.key_for('compare_runs')}: compare")
        icon, word = STATES.get(row.state, ("?", row.state))
        return f"{row.id} · {row.model} · {word.upper()}{self._lineage(row)} · " + " · ".join(hint)

    def _lineage(self, row: RunRow) -> str:
        """`` · fix of X (Reduce context) · relaunched as Y``: the selected run's family."""
        parts = []
        if row.parent:
            parts.append(f"fix of {row.parent}" + (f" ({row.fix})" if row.fix else ""))
        children = self._children.get(row.id, [])
        if children:
            parts.append(("relaunched as " if len(children) == 1 else f"relaunched {len(children)}×: ")
                         + ", ".join(children))
        return "".join(f" · {p}" for p in parts)

    @on(VirtualTable.RowHighlighted, "#runs-table")
    def _highlighted(self) -> None:
        self._update_detail()

    @on(VirtualTable.RowSelected, "#runs-table")
    def _selected(self) -> None:
        self.action_open_run()

    # --------------------------------------------------------------- filter

    def action_filter_runs(self) -> None:
        box = self.query_one("#runs-filter", Input)
        box.add_class("shown")
        box.focus()

    def filter_changed(self) -> None:
        """A key in the filter: the rows as they are, narrowed (a key does not wait on the store)."""
        if self._watch is not None:
            self._show()

    @on(Input.Submitted, "#runs-filter")
    def _filter_done(self) -> None:
        """enter in the filter opens the best match (the highlighted row), as enter on the list does."""
        table = self.query_one("#runs-table", VirtualTable)
        table.focus()
        if table.row_count:
            self.action_open_run()

    def on_key(self, event) -> None:
        box = self.query_one("#runs-filter", Input)
        if event.key == "escape" and (box.has_focus or box.value):
            event.stop()
            box.value = ""
            box.remove_class("shown")
            self.query_one("#runs-table", VirtualTable).focus()
        elif event.key == "down" and box.has_focus:
            event.stop()
            self.query_one("#runs-table", VirtualTable).focus()

    # -------------------------------------------------------------- actions

    def action_refresh_runs(self) -> None:
        self._table_key = None
        self.refresh_rows(reread=True)

    def action_new_experiment(self) -> None:
        self.sd_app.action_new_experiment()

    def action_open_run(self) -> None:
        row = self.selected_row()
        if row is None:
            self.notify("No run selected. Press n to start one.", severity="warning")
            return
        if not (row.controller is not None and row.live) and row.state in FINISHED and _has_results(row):
            from tui.screens.results import ResultsScreen

            self.app.push_screen(ResultsScreen(row.id))
            return
        self.action_replay_run()

    def action_replay_run(self) -> None:
        """The monitor: live, attached, or the replay of a finished run's saved events."""
        row = self.selected_row()
        if row is None:
            self.notify("No run selected. Press n to start one.", severity="warning")
            return
        if row.record is not None and row.record.meta.get("backend") == "import":
            self.notify(f"{row.id} is an imported result: it has no run to replay.", severity="warning")
            return
        try:
            self.sd_app.open_run(row)
        except SweepdeckError as exc:
            self.sd_app.show_error(exc)

    def action_attach_run(self) -> None:
        row = self.selected_row()
        if row is None:
            self.notify("No run selected.", severity="warning")
            return
        if row.controller is not None and row.live:
            self.sd_app.open_run(row)
            return
        if row.state in FINISHED and not any(r.get("kind") != "pid" for r in leftovers_of(row)):
            self.notify(f"{row.id} is {row.state}; only detached (or live) runs can be attached.", severity="warning")
            return
        try:
            self.sd_app.attach_run(row)
        except SweepdeckError as exc:
            self.sd_app.show_error(exc)

    def action_clean_run(self) -> None:
        """Remove what a lost run may have left (asks first; the backend checks what still exists)."""
        from backends.supervisor.reconcile import describe

        row = self.selected_row()
        if row is None:
            self.notify("No run selected.", severity="warning")
            return
        left = leftovers_of(row)
        if not left:
            self.notify(f"{row.id} left nothing behind that sweepdeck knows of.")
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._clean(row), name=f"clean {row.id}", exit_on_error=False)

        self.app.push_screen(
            ConfirmDialog(
                "Clean up lost run?",
                f"{row.id} lost its supervisor ({row.state}). It may have left:\n\n"
                + "\n".join(f"  • {describe(r)}" for r in left)
                + "\n\nStop and remove what still exists?",
                yes="Clean up",
                no="Keep",
            ),
            answer,
        )

    async def _clean(self, row: RunRow) -> None:
        from backends.supervisor.reconcile import clean

        try:
            done = await clean(row.record)
        except SweepdeckError as exc:
            self.sd_app.show_error(exc)
        else:
            self.notify("; ".join(done) or f"Nothing of {row.id} was still there.", title=f"Cleaned up {row.id}")
        self.refresh_rows(reread=True)

    def action_delete_run(self) -> None:
        row = self.selected_row()
        if row is None:
            self.notify("No run selected.", severity="warning")
            return
        if row.live or row.state not in FINISHED:
            self.notify(
                f"{row.id} is {row.state}; only finished runs can be deleted. Attach and clean it up first.",
                severity="warning",
            )
            return

        def answer(yes: bool | None) -> None:
            if not yes:
                return
            try:
                self.sd_app.store.delete(row.id)
            except SweepdeckError as exc:
                self.sd_app.show_error(exc)
                return
            self.sd_app.controllers[:] = [c for c in self.sd_app.controllers
                                          if getattr(getattr(c, "run", None), "id", None) != row.id]
            self.notify(f"Deleted the record of {row.id} ({getattr(row.record, 'path', '')}).")
            self.refresh_rows(reread=True)

        self.app.push_screen(
            ConfirmDialog(
                "Delete run record?",
                f"Delete the saved record of {row.id} ({STATES.get(row.state, ('', row.state))[1]})?\n\n"
                "Its saved spec, event log and results are removed from the run store. "
                "This cannot be undone.",
                yes="Delete",
                no="Keep",
            ),
            answer,
        )

    # ------------------------------------------------------------- results

    def action_mark_run(self) -> None:
        from backends.results.compare import MAX_RUNS

        row = self.selected_row()
        if row is None:
            return
        if row.id in self.marked:
            self.marked.remove(row.id)
        elif not _has_results(row):
            self.notify(f"{row.id} has no results to compare.", severity="warning")
            return
        elif len(self.marked) >= MAX_RUNS:
            self.notify(f"At most {MAX_RUNS} runs can be compared.", severity="warning")
            return
        else:
            self.marked.append(row.id)
            from tui.screens.results import prefetch

            prefetch(self.app, row.id)  # read now, so the compare view only has to draw
        self.refresh_rows()

    def action_compare_runs(self) -> None:
        from tui.screens.results import open_compare

        open_compare(self.app, list(self.marked))

    def action_results_list(self) -> None:
        from tui.screens.results import ResultsListScreen

        self.app.push_screen(ResultsListScreen())


def _start(row: RunRow) -> float:
    """When the run started, for ordering (a missing or hand-edited non-number counts as the oldest)."""
    return row.started if isinstance(row.started, (int, float)) else 0.0


def _has_results(row: RunRow) -> bool:
    """A finished run with something in its results/ (or an Argo sweep, whose results are in the queue)."""
    if row.record is None:
        return False
    from backends.results.library import has_results

    return has_results(row.record.path, row.record.meta)
