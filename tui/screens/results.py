"""Results screens: one run's results, a comparison of 2–8 runs, and the list of every run's results.

* :class:`ResultsScreen` — tabs: load points (one row per sweep rate, stage,
  concurrency or queue config), failures (reason → count, a sample message),
  configuration (every setting with where it came from), plots (throughput
  vs latency, TTFT/ITL percentiles vs load, tok/s over time) and files.
* :class:`CompareScreen` — tabs: metrics side by side with deltas against the
  first run (▲ better / ▼ worse by each metric's direction), the curves
  overlaid, and only the settings that differ.
* :class:`ResultsListScreen` — every run with results and its headline
  figures (from the summary index, so it opens at once; runs not summarised
  yet are read in a thread and filled in as they come).

Results are read in a thread (a large report, a queue over the network), so
the screen is drawn at once and says "Loading…" until they are there. Runs
marked for compare are read while the next is marked (:func:`prefetch`);
when every one is cached, the compare screen is given them and its first
frame has the table. Whether a run's results live in a work queue (read
again each time, never summarised) is asked of ``backends.results``
(``results_place``, ``Origin.live``): this module knows no backend's name.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Header, Static, TabbedContent, TabPane

from backends.results.compare import MAX_RUNS, MIN_RUNS, Comparison, compare
from backends.results.model import QUEUE_HARNESS, Result, fmt
from config.errors import SweepdeckError
from tui import bindings as keys
from tui.widgets.footer import KeyFooter
from tui.widgets.results import (
    VERDICT_MARK,
    CompareTable,
    ConfigDiffTable,
    ConfigTable,
    FailureTable,
    LoadPointTable,
    ResultPlot,
)
from tui.widgets.virtual_table import VirtualTable, column_widths

Loader = Callable[[str], Result]

#: The results screens' rules (styles/results.tcss) as their default CSS, not a ``CSS_PATH``: the first time a
#: screen with a ``CSS_PATH`` opens, Textual parses every stylesheet of the app again from scratch and restyles
#: every widget of every screen (~25 ms of the compare view's first open); default CSS is parsed on its own.
RESULTS_CSS = (Path(__file__).resolve().parent.parent / "styles" / "results.tcss").read_text(encoding="utf-8")


def _key(app: Any, binding_id: str) -> str:
    return keys.display_key(keys.effective_key(keys.BY_ID[binding_id], getattr(app, "user_keys", {}) or {}))


#: Results read recently, by run directory: (stamp of its files, result). Marking a run for
#: compare reads it here in the background, so the compare view only has to draw.
_CACHE: dict[Path, tuple[list, Result]] = {}
CACHE_SIZE = 16


def _run_dir(app: Any, run_id: str) -> Path | None:
    store = getattr(app, "store", None)
    path = store.root / run_id if store is not None else None
    return path if path is not None and (path / "meta.json").is_file() else None


def _fresh(path: Path, current: list | None = None) -> Result | None:
    """The run's cached result when its files' stamp (``current``, else taken now) is still the cached one."""
    from backends.results.index import stamp

    hit = _CACHE.get(path)
    if hit is None:
        return None
    return hit[1] if hit[0] == (stamp(path) if current is None else current) else None


def cached_only(app: Any, run_id: str) -> Result | None:
    """A run's result when the cache holds it and its files have not changed since; None otherwise (nothing read)."""
    path = _run_dir(app, run_id)
    return _fresh(path) if path is not None else None


def cached_result(app: Any, run_id: str) -> Result:
    """A run's result from the cache when its files have not changed since, else read (and cached).

    A result that changes without a file of the run changing (a queue
    sweep's: ``origin.live``) is read again every time.
    """
    from backends.results import resolve
    from backends.results.index import stamp

    path = _run_dir(app, run_id)
    if path is None:
        return resolve(run_id, getattr(app, "store", None))
    current = stamp(path)
    hit = _fresh(path, current)
    if hit is not None:
        return hit
    result = resolve(run_id, app.store)
    if not result.origin.live:
        _CACHE.pop(path, None)
        _CACHE[path] = (current, result)
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
    return result


def prefetch(app: Any, run_id: str) -> None:
    """Read a run's result into the cache in a thread (a run marked for compare)."""

    def read() -> None:
        with contextlib.suppress(SweepdeckError):  # the compare view says what is wrong when it opens
            cached_result(app, run_id)

    app.run_worker(read, thread=True, group="results-prefetch", exit_on_error=False)


def store_loader(app: Any) -> Loader:
    """Read a run of the app's run store by id (a path or queue address works too), through the cache."""
    return lambda run_id: cached_result(app, run_id)


class _TabbedResults(Screen):
    """What the results and compare screens share: loading in a thread, tab and plot keys, export."""

    SCOPE = "results"
    FOOTER = ("results",)
    BINDINGS = keys.bindings("results")
    DEFAULT_CSS = RESULTS_CSS
    TABS: tuple[str, ...] = ()
    #: Tabs whose content is made the first time they are shown (with results to show), not when the screen opens.
    LAZY: tuple[str, ...] = ()

    def __init__(self, run_ids: list[str], results: list[Result] | None = None, loader: Loader | None = None) -> None:
        super().__init__()
        self.run_ids = list(run_ids)
        self.results: list[Result] = list(results or [])
        self.errors: list[str] = []
        self._loader = loader
        self.loaded = bool(results)
        self.built: set[str] = set()

    def on_mount(self) -> None:
        if self.loaded:
            self.show_results()
        else:
            self._load()

    @work(thread=True, exclusive=True, group="results-load")
    def _load(self) -> None:
        loader = self._loader or store_loader(self.app)
        results, errors = [], []
        for run_id in self.run_ids:
            try:
                results.append(loader(run_id))
            except SweepdeckError as exc:
                errors.append(exc.message)
        self.app.call_from_thread(self._loaded, results, errors)

    def _loaded(self, results: list[Result], errors: list[str]) -> None:
        self.results, self.errors, self.loaded = results, errors, True
        self.show_results()

    def show_results(self) -> None:  # pragma: no cover - each screen draws its own
        raise NotImplementedError

    def show_tab(self, tab: str) -> None:
        """Make ``tab`` the active tab, its content first (a lazy tab shown for the first time)."""
        self.build_tab(tab)
        self.query_one(TabbedContent).active = tab

    def build_tab(self, tab: str) -> None:
        """Make a lazy tab's content once, when there are results to put in it."""
        if tab in self.LAZY and tab not in self.built and self.ready():
            self.built.add(tab)
            self.make_tab(tab)

    def ready(self) -> bool:
        """The results are read (and, for a comparison, compared): lazy tabs can be made."""
        return self.loaded and bool(self.results)

    def make_tab(self, tab: str) -> None:  # pragma: no cover - screens with lazy tabs make their own
        raise NotImplementedError

    @on(TabbedContent.TabActivated, "#results-tabs")
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id:  # a click on a tab: the keys build it before they switch
            self.build_tab(event.pane.id)

    def action_tab(self, step: int) -> None:
        tabs = self.query_one(TabbedContent)
        current = self.TABS.index(tabs.active) if tabs.active in self.TABS else 0
        self.show_tab(self.TABS[(current + step) % len(self.TABS)])

    def action_next_plot(self) -> None:
        """Show the plots; once they show, the next plot."""
        tabs = self.query_one(TabbedContent)
        if tabs.active != self.PLOT_TAB:
            self.show_tab(self.PLOT_TAB)
            return
        plots = self.query(ResultPlot)
        if plots:
            plots.first().next_kind()

    PLOT_TAB = ""

    def action_close(self) -> None:
        self.app.pop_screen()

    def action_export(self) -> None:
        if not self.loaded or not self.results:
            self.notify("Nothing to export yet.", severity="warning")
            return
        name, text = self.markdown()
        path = Path.cwd() / name
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            self.notify(f"Could not write {path}: {exc.strerror or exc}", severity="error")
            return
        self.notify(f"Wrote {path}")

    def markdown(self) -> tuple[str, str]:  # pragma: no cover - each screen exports its own
        raise NotImplementedError


class ResultsScreen(_TabbedResults):
    """One run's results."""

    AUTO_FOCUS = "#results-points"

    TABS = ("tab-points", "tab-failures", "tab-config", "tab-plots", "tab-files")
    PLOT_TAB = "tab-plots"

    def __init__(self, run_id: str, result: Result | None = None, loader: Loader | None = None) -> None:
        super().__init__([run_id], [result] if result is not None else None, loader)

    @property
    def result(self) -> Result | None:
        return self.results[0] if self.results else None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"Loading the results of {self.run_ids[0]}…", id="results-head")
        with TabbedContent(id="results-tabs", initial="tab-points"):
            with TabPane("Load points", id="tab-points"):
                yield Static("Latencies in ms · tok/s: output tokens per second · → for every percentile",
                             id="results-units")
                yield LoadPointTable(id="results-points")
            with TabPane("Failures", id="tab-failures"):
                yield Static("", id="results-no-failures")
                yield FailureTable(id="results-failures")
            with TabPane("Config", id="tab-config"):
                yield ConfigTable(id="results-config")
            with TabPane("Plots", id="tab-plots"):
                yield ResultPlot(id="results-plot")
            with TabPane("Files", id="tab-files"):
                yield Static("", id="results-files")
        yield KeyFooter(at_once=True)  # its keys in the first frame, not in two more

    def on_mount(self) -> None:
        # No super().on_mount(): Textual calls each class's handler in the MRO (_TabbedResults.on_mount next);
        # calling it here too read and drew the results twice.
        self.sub_title = f"Results · {self.run_ids[0]}"

    def show_results(self) -> None:
        head = self.query_one("#results-head", Static)
        r = self.result
        if r is None:
            head.update(Text("Cannot show these results: " + " ".join(self.errors), style="bold"))
            return
        failed = f" · {r.requests_failed:,} failed" if r.requests_failed else ""
        line = (f"{r.name} · {r.origin.describe()}" + (f" · {r.model}" if r.model else "")
                + f" · {len(r.load_points)} load point(s) · {r.requests_ok:,} ok{failed}")
        notes = [f"⚠ {p}" for p in r.problems] + [f"note: {n}" for n in r.notes]
        head.update("\n".join([line] + notes[:3]))
        self.query_one(LoadPointTable).show(r)
        self.query_one(FailureTable).show(r)
        none = self.query_one("#results-no-failures", Static)
        none.update("No request failed." if not r.failures else f"{r.requests_failed:,} failed request(s) by reason:")
        self.query_one(FailureTable).display = bool(r.failures)
        self.query_one(ConfigTable).show(r)
        self.query_one(ResultPlot).show([r])
        files = [f"Run: {r.path}"] if r.path else []
        files += ["Files read:"] + [f"  {f}" for f in r.origin.files]
        if r.timeline_note:
            files.append(f"Note: {r.timeline_note}")
        self.query_one("#results-files", Static).update("\n".join(files))
        tabs = self.query_one(TabbedContent)
        tabs.get_tab("tab-failures").label = f"Failures ({len(r.failures)})"  # type: ignore[assignment]  # str → Content
        tabs.get_tab("tab-config").label = (  # type: ignore[assignment]  # str → Content
            f"Config ({len(r.spec)})" if r.spec else "Config (unknown)")

    def markdown(self) -> tuple[str, str]:
        from backends.results.export import result_markdown

        assert self.result is not None
        return f"{self.result.name}-results.md", result_markdown(self.result)


class CompareScreen(_TabbedResults):
    """2–8 runs side by side.

    Only the metrics tab is made when the screen opens; the curves and the
    settings that differ are made the first time they are shown.
    """

    AUTO_FOCUS = "#compare-table"

    TABS = ("tab-metrics", "tab-curves", "tab-diff")
    LAZY = ("tab-curves", "tab-diff")
    PLOT_TAB = "tab-curves"

    def __init__(self, run_ids: list[str], results: list[Result] | None = None, loader: Loader | None = None) -> None:
        super().__init__(run_ids, results, loader)
        self.comparison: Comparison | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"Loading {len(self.run_ids)} runs…", id="results-head")
        with TabbedContent(id="results-tabs", initial="tab-metrics"):
            with TabPane("Metrics", id="tab-metrics"):
                yield CompareTable(id="compare-table")
            yield TabPane("Curves", id="tab-curves")
            yield TabPane("Settings that differ", id="tab-diff")
        yield KeyFooter(at_once=True)  # its keys in the first frame, not in two more

    def on_mount(self) -> None:
        self.sub_title = f"Compare · {len(self.run_ids)} runs"  # then _TabbedResults.on_mount (Textual's MRO)

    def ready(self) -> bool:
        return self.comparison is not None

    def show_results(self) -> None:
        head = self.query_one("#results-head", Static)
        try:
            self.comparison = cmp = compare(self.results)
        except SweepdeckError as exc:
            head.update(Text(" ".join([exc.message] + self.errors), style="bold"))
            return
        marks = f"{VERDICT_MARK['better']} better  {VERDICT_MARK['worse']} worse  {VERDICT_MARK['same']} same"
        lines = [f"Baseline: {cmp.names[0]} · {len(cmp.names)} runs · load points matched by {cmp.matched_by} · "
                 f"Δ% against the baseline: {marks}"]
        lines += [f"⚠ {e}" for e in self.errors]
        head.update("\n".join(lines))
        self.query_one(CompareTable).show(cmp)
        tabs = self.query_one(TabbedContent)
        tabs.get_tab("tab-diff").label = (  # type: ignore[assignment]  # str → Content
            f"Settings that differ ({len(cmp.config_diff)})")
        self.build_tab(tabs.active)  # a lazy tab shown before the results were read

    def make_tab(self, tab: str) -> None:
        cmp = self.comparison
        assert cmp is not None
        pane = self.query_one(f"#{tab}", TabPane)
        if tab == "tab-curves":
            plot = ResultPlot(id="compare-plot")
            pane.mount(plot)
            plot.show(self.results)
            return
        note = ("Every run ran with the same settings (as far as their sources say)." if not cmp.config_diff
                else f"{len(cmp.config_diff)} setting(s) differ (settings only one run reports are left out):")
        diff = ConfigDiffTable(id="compare-diff")
        pane.mount(Static(note, id="compare-no-diff"), diff)
        diff.show(cmp)
        diff.display = bool(cmp.config_diff)

    def markdown(self) -> tuple[str, str]:
        from backends.results.export import compare_markdown

        assert self.comparison is not None
        return "compare-" + "-vs-".join(self.comparison.names[:3]) + ".md", compare_markdown(self.comparison)


def open_compare(app: Any, run_ids: list[str]) -> bool:
    """Push the compare screen for 2–8 runs (else say why); True when it opened."""
    if not MIN_RUNS <= len(run_ids) <= MAX_RUNS:
        app.notify(f"Mark {MIN_RUNS} to {MAX_RUNS} runs to compare ({len(run_ids)} marked; "
                   f"{_key(app, 'mark_run')} marks the selected run).", severity="warning")
        return False
    # Runs marked with space were read while the next was marked: then the view is drawn with its table in
    # the first frame (no "Loading…" frame, no thread to wait for); else they are read in a thread.
    cached = [cached_only(app, run_id) for run_id in run_ids]
    ready = [r for r in cached if r is not None]
    app.push_screen(CompareScreen(run_ids, ready if len(ready) == len(run_ids) else None))
    return True


# ---------------------------------------------------------------------- list


class ResultsListScreen(Screen):
    """Every run that has results, with its headline figures."""

    SCOPE = "results_list"
    FOOTER = ("results_list",)
    BINDINGS = keys.bindings("results_list")
    DEFAULT_CSS = RESULTS_CSS
    COLUMNS = ("", "Run", "Source", "Model", "Points", "OK", "Failed", "Best tok/s", "TTFT p50", "E2E p50", "Finished")

    def __init__(self) -> None:
        super().__init__()
        self.marked: list[str] = []
        self.pending: list[Path] = []
        self.filled_at: float | None = None
        self._rows: dict[str, Any] = {}
        self._queued: set[str] = set()  # runs whose results live in a work queue
        self._summaries: dict[str, dict[str, Any]] = {}
        self._lines: list[tuple] = []  # the rows' cells, in the order of self._rows

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="results-list-head")
        yield VirtualTable(id="results-list", zebra_stripes=True)
        yield KeyFooter(at_once=True)  # its keys in the first frame, not in two more

    def on_mount(self) -> None:
        self.sub_title = "Results"
        self.fill()
        self.query_one("#results-list", VirtualTable).focus()

    def fill(self) -> None:
        """Rows from the run store and the summary index; what is not summarised yet is read in a thread."""
        from backends.results.index import ResultsIndex, stamp
        from backends.results.library import IN_QUEUE, results_place

        store = self.app.store  # type: ignore[attr-defined]  # SweepdeckApp
        self.index = ResultsIndex.open(store.root.parent)
        self.pending = []
        places = {r.id: (r, results_place(r.path, r.meta)) for r in store.list() if not r.live}
        records = [r for r, place in places.values() if place is not None]
        self._rows = {r.id: r for r in records}
        self._queued = {r.id for r, place in places.values() if place == IN_QUEUE}
        self._summaries = {}
        for record in records:
            if record.id in self._queued:
                continue  # results in a queue are read when opened (they change without a file here changing)
            summary = self.index.get(record.id, stamp(record.path))
            if summary is None:
                self.pending.append(record.path)
            else:
                self._summaries[record.id] = summary
        self._show()
        self._head()
        if self.pending:
            self._summarize(list(self.pending))
        else:
            self.filled_at = time.monotonic()

    def _show(self) -> None:
        """Every row drawn again from what is known now.

        The columns are as wide as their widest cell, measured here from the
        cells' text: a ``DataTable`` measured rows on a later idle and could draw
        rows it had not measured yet with the widths of the rows before them
        (truncated sources, once, in a snapshot).
        """
        table = self.query_one("#results-list", VirtualTable)
        run_ids = list(self._rows)
        self._lines = [self._cells(self._rows[k], self._summaries.get(k)) for k in run_ids]
        widths = column_widths(self.COLUMNS, self._lines)
        if table.ordered_columns:
            table.set_widths(widths)
        else:
            table.set_columns([(label, f"c{i}", w) for i, (label, w) in enumerate(zip(self.COLUMNS, widths,
                                                                                            strict=True))])
        table.set_rows(run_ids, self._lines.__getitem__)

    def _cells(self, record: Any, summary: dict[str, Any] | None) -> tuple:
        mark = "◆" if record.id in self.marked else ""
        finished = time.strftime("%b %d %H:%M", time.localtime(record.finished)) if record.finished else "—"
        model = (record.model or "").rsplit("/", 1)[-1]
        if record.id in self._queued:
            return (mark, record.id, QUEUE_HARNESS, model, "", "", "", "open to read the queue", "", "", finished)
        if summary is None:
            return (mark, record.id, "…", model, "", "", "", "", "", "", finished)
        if "error" in summary:
            return (mark, record.id, Text("unreadable", style="bold"), model, "", "", "", "", "", "", finished)
        return (mark, record.id, summary.get("harness", ""), (summary.get("model") or model).rsplit("/", 1)[-1],
                Text(str(summary.get("points", 0)), justify="right"),
                Text(f"{summary.get('ok', 0):,}", justify="right"),
                Text(f"{summary.get('failed', 0):,}", justify="right"),
                Text(fmt(summary.get("best_tok_s"), "tok/s"), justify="right"),
                Text(fmt(summary.get("ttft_p50"), "ms"), justify="right"),
                Text(fmt(summary.get("e2e_p50"), "ms"), justify="right"), finished)

    def _head(self) -> None:
        n = self.query_one("#results-list", VirtualTable).row_count
        marked = f" · {len(self.marked)} marked" if self.marked else ""
        reading = f" · reading {len(self.pending)}…" if self.pending else ""
        self.query_one("#results-list-head", Static).update(
            f"{n} run(s) with results{marked}{reading} · {_key(self.app, 'results_list_open')}: open · "
            f"{_key(self.app, 'results_list_mark')}: mark · {_key(self.app, 'results_list_compare')}: compare")

    @work(thread=True, exclusive=True, group="results-summaries")
    def _summarize(self, paths: list[Path]) -> None:
        from backends.results.index import summary_for
        from backends.results.library import load_run

        done: dict[str, dict[str, Any]] = {}
        last = time.monotonic()
        for path in paths:
            done[path.name] = summary_for(self.index, path, partial(load_run, spec=False))
            if time.monotonic() - last > 0.5:  # progress in the head line; the table is redrawn once, at the end
                last = time.monotonic()
                self.app.call_from_thread(self._progress, len(paths) - len(done))
        self.index.save()
        self.app.call_from_thread(self._filled, done)

    def _progress(self, left: int) -> None:
        self.pending = self.pending[-left:] if left else []
        self._head()

    def _filled(self, summaries: dict[str, dict[str, Any]]) -> None:
        """Every summary is there: the rows are drawn again once (the cursor stays on its run)."""
        self._summaries.update(summaries)
        self._show()
        self.pending = []
        self.filled_at = time.monotonic()
        self._head()

    def selected_id(self) -> str | None:
        return self.query_one("#results-list", VirtualTable).cursor_key

    @on(VirtualTable.RowSelected, "#results-list")
    def _selected(self) -> None:
        self.action_open_result()

    def action_open_result(self) -> None:
        run_id = self.selected_id()
        if run_id is None:
            self.notify("No run has results yet.", severity="warning")
            return
        self.app.push_screen(ResultsScreen(run_id))

    def action_mark_result(self) -> None:
        run_id = self.selected_id()
        if run_id is None:
            return
        if run_id in self.marked:
            self.marked.remove(run_id)
        elif len(self.marked) >= MAX_RUNS:
            self.notify(f"At most {MAX_RUNS} runs can be compared.", severity="warning")
            return
        else:
            self.marked.append(run_id)
            prefetch(self.app, run_id)
        table = self.query_one("#results-list", VirtualTable)
        index = table.get_row_index(run_id)
        self._lines[index] = ("◆" if run_id in self.marked else "", *self._lines[index][1:])
        table.redraw_changed()
        self._head()

    def action_compare_marked(self) -> None:
        open_compare(self.app, list(self.marked))

    def action_close(self) -> None:
        self.app.pop_screen()
