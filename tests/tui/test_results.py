"""Pilot tests of the results screens: from the runs list, tabs and plots, marking and compare, the list, bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from textual.widgets import DataTable, Static, TabbedContent

from backends.results.series import PLOTS
from tests.tui.app_fakes import FakeMonitor, make_app
from tests.tui.monitor_support import wait_for
from tests.tui.results_support import LOCAL_RUN, needs_reference, seed_results, wait_loaded
from tui.screens.results import CompareScreen, ResultsListScreen, ResultsScreen
from tui.screens.runs import RunsScreen
from tui.widgets.results import ResultPlot
from tui.widgets.virtual_table import VirtualTable

pytestmark = needs_reference
SIZE = (120, 36)


def state_root() -> Path:
    return Path(os.environ["SWEEPDECK_STATE_DIR"])


@pytest.fixture
def seeded():
    seed_results(state_root(), local=True)


def select(app, run_id: str, table_id: str = "#runs-table") -> None:
    table = app.screen.query_one(table_id)  # the runs list (VirtualTable) or a DataTable
    table.move_cursor(row=table.get_row_index(run_id))


def cell_texts(table: DataTable, row: int) -> list[str]:
    return [str(c) for c in table.get_row_at(row)]


async def test_enter_on_a_finished_run_with_results_opens_them(seeded):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        select(app, "sweep-a")
        await pilot.pause()
        detail = str(app.screen.query_one("#runs-detail", Static).render())
        assert "enter: results · p: replay" in detail
        await pilot.press("enter")
        await wait_loaded(pilot)
        screen = app.screen
        assert isinstance(screen, ResultsScreen) and screen.result.name == "sweep-a"
        head = str(screen.query_one("#results-head", Static).render())
        assert head.startswith("sweep-a · guidellm 0.8.1 · meta-llama/Llama-3.1-8B-Instruct · 6 load point(s)")
        table = screen.query_one("#results-points", DataTable)
        assert table.row_count == 6
        assert cell_texts(table, 2)[:4] == ["constant 12.75/s", "12.75 req/s", "90", "0"]
        assert [str(c.label) for c in table.columns.values()][:8] == [
            "Load point", "Load", "OK", "Failed", "TTFT p50", "TTFT p99", "ITL p50", "E2E p50"]
        # ] walks the tabs; the config tab lists each setting's source
        tabs = screen.query_one(TabbedContent)
        await pilot.press("right_square_bracket", "right_square_bracket")
        assert tabs.active == "tab-config"
        config = screen.query_one("#results-config", DataTable)
        assert cell_texts(config, 0) == ["model", "meta-llama/Llama-3.1-8B-Instruct", "guidellm report"]
        await pilot.press("left_square_bracket")
        assert tabs.active == "tab-failures"
        assert "No request failed." in str(screen.query_one("#results-no-failures", Static).render())
        # g shows the plots, then cycles them
        plot = screen.query_one(ResultPlot)
        await pilot.press("g")
        assert tabs.active == "tab-plots" and plot.kind == PLOTS[0]
        await pilot.press("g")
        assert plot.kind == PLOTS[1]
        await pilot.press("g", "g")
        assert plot.kind == PLOTS[0]
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen)


async def test_failures_config_sources_and_files_of_a_local_run(seeded):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        select(app, LOCAL_RUN)
        await pilot.press("enter")
        await wait_loaded(pilot)
        screen = app.screen
        assert screen.query_one(TabbedContent).get_tab("tab-failures").label.plain == "Failures (1)"
        failures = screen.query_one("#results-failures", DataTable)
        reason, count, sample = cell_texts(failures, 0)
        assert (reason, count) == ("HTTP 400: context length exceeded", "1")
        assert "maximum context length is 512 tokens" in sample
        config = {cell_texts(screen.query_one("#results-config", DataTable), i)[0]:
                  cell_texts(screen.query_one("#results-config", DataTable), i)[1:]
                  for i in range(screen.query_one("#results-config", DataTable).row_count)}
        assert config["engine.max_model_len"] == ["512", "user"]
        assert config["model"][1] in ("catalog", "user", "default")
        files = str(screen.query_one("#results-files", Static).render())
        assert str(state_root() / "runs" / LOCAL_RUN / "results" / "results.json") in files
        # the throughput timeline of the loadgen rows is drawn (a series with points)
        plot = screen.query_one(ResultPlot)
        await pilot.press("g", "g", "g")
        assert plot.kind == "timeline" and screen.result.timeline


async def test_replay_key_keeps_the_monitor_and_imports_have_none(seeded):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        select(app, LOCAL_RUN)
        await pilot.press("p")
        await pilot.pause()
        assert isinstance(app.screen, FakeMonitor) and app.screen.controller.replayed
        await pilot.press("escape")
        await pilot.pause()
        select(app, "perf-c")
        await pilot.press("p")
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen)
        assert any("imported result: it has no run to replay" in n.message for n in app._notifications)
        # a finished run without results still opens its replay on enter
        select(app, "nov22-llama-2-7b-hf-summarization")
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, FakeMonitor)


async def test_mark_three_runs_and_compare_them(seeded):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        for run_id in ("sweep-a", "const-b", "perf-c"):
            select(app, run_id)
            await pilot.press("space")
        table = app.screen.query_one("#runs-table", VirtualTable)
        assert str(table.get_cell("sweep-a", "Run")) == "◆ sweep-a"
        assert "3 marked · c: compare" in str(app.screen.query_one("#runs-detail", Static).render())
        select(app, "nov22-llama-2-7b-hf-summarization")
        await pilot.press("space")  # no results: not marked
        assert app.screen.marked == ["sweep-a", "const-b", "perf-c"]
        await pilot.press("c")
        await wait_loaded(pilot)
        screen = app.screen
        assert isinstance(screen, CompareScreen) and screen.comparison.names == ["sweep-a", "const-b", "perf-c"]
        head = str(screen.query_one("#results-head", Static).render())
        assert "Baseline: sweep-a · 3 runs · load points matched by position" in head
        cmp_table = screen.query_one("#compare-table", VirtualTable)
        assert [str(c.label) for c in cmp_table.columns.values()] == [
            "Load point", "Metric", "sweep-a", "const-b (Δ)", "perf-c (Δ)"]
        tok = next(cell_texts(cmp_table, i) for i in range(cmp_table.row_count)
                   if cell_texts(cmp_table, i)[1] == "output tok/s")
        assert tok[2:] == ["64.00", "576.0 +800.0% ▲", "119.9 +87.4% ▲"]
        ttft = next(cell_texts(cmp_table, i) for i in range(cmp_table.row_count)
                    if cell_texts(cmp_table, i)[1] == "TTFT p50")
        assert ttft[4].endswith("▲") and ttft[3].endswith("=")  # 38 ms vs 46 ms is better; 45.87 vs 45.92 same
        # curves and settings are made the first time they are shown: one series per run on the throughput plot
        assert not screen.query(ResultPlot) and not screen.query("#compare-diff")
        await pilot.press("g")
        plot = screen.query_one(ResultPlot)
        assert screen.query_one(TabbedContent).active == "tab-curves" and len(plot.results) == 3
        await pilot.press("right_square_bracket")
        diff = screen.query_one("#compare-diff", DataTable)
        rows = {cell_texts(diff, i)[0]: cell_texts(diff, i)[1:] for i in range(diff.row_count)}
        assert rows["workload.rate_type"] == ["sweep", "constant", "constant"]
        assert "model" not in rows  # the same model everywhere: not a difference
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen)


async def test_a_click_on_a_tab_not_made_yet_makes_it(seeded):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        for run_id in ("sweep-a", "const-b"):
            select(app, run_id)
            await pilot.press("space")
        await pilot.press("c")
        await wait_loaded(pilot, CompareScreen)
        screen = app.screen
        assert not screen.query("#compare-diff")
        await pilot.click("#--content-tab-tab-diff")
        await pilot.pause()
        assert screen.query_one(TabbedContent).active == "tab-diff"
        rows = screen.query_one("#compare-diff", DataTable)
        assert {cell_texts(rows, i)[0] for i in range(rows.row_count)} >= {"workload.rate_type"}
        await pilot.press("g")  # the curves: made by the key that shows them
        assert screen.query_one(TabbedContent).active == "tab-curves" and len(screen.query_one(ResultPlot).results) == 2


async def test_a_tab_shown_while_the_runs_are_read_is_made_when_they_are_there(seeded):
    import threading

    from tui.screens.results import store_loader

    release = threading.Event()
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        read = store_loader(app)

        def slow(run_id: str):
            release.wait(60)
            return read(run_id)

        app.push_screen(CompareScreen(["sweep-a", "const-b"], loader=slow))
        await pilot.pause()
        screen = app.screen
        await pilot.press("g")
        assert screen.query_one(TabbedContent).active == "tab-curves" and not screen.loaded
        assert not screen.query(ResultPlot)  # nothing to draw yet
        release.set()
        await wait_loaded(pilot, CompareScreen)
        await pilot.pause()
        assert [r.name for r in screen.query_one(ResultPlot).results] == ["sweep-a", "const-b"]


async def test_the_compare_footer_has_its_keys_when_the_screen_mounts(seeded):
    from textual.widgets._footer import FooterKey

    from tui.widgets.footer import KeyFooter

    seen: list[int] = []

    class Watched(CompareScreen):
        def on_mount(self) -> None:  # before the first frame (and before the "bindings changed" signal)
            seen.append(len(self.query_one(KeyFooter).query(FooterKey)))

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.push_screen(Watched(["sweep-a", "const-b"]))
        await wait_loaded(pilot, CompareScreen)
        await pilot.pause()
        footer = app.screen.query_one(KeyFooter)
        assert seen and seen[0] == len(footer.query(FooterKey)) > 0  # the same keys as after the signal
        assert "esc Back" in footer.rendered_text()


async def test_a_comparison_wider_than_the_terminal_scrolls_sideways_by_keys(seeded):
    app = make_app()
    async with app.run_test(size=(64, 24)) as pilot:
        await pilot.pause()
        for run_id in ("sweep-a", "const-b", "perf-c"):
            select(app, run_id)
            await pilot.press("space")
        await pilot.press("c")
        await wait_loaded(pilot, CompareScreen)
        table = app.screen.query_one("#compare-table", VirtualTable)
        assert app.focused is table and table.max_scroll_x > 0
        await pilot.press("right", "right")
        await pilot.pause()
        assert table.scroll_x > 0
        await pilot.press("end")
        await pilot.pause()
        assert table.scroll_x == table.max_scroll_x
        await pilot.press("home")
        await pilot.pause()
        assert table.scroll_x == 0 and table.cursor_row == 0


async def test_compare_needs_two_to_eight(seeded):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        select(app, "sweep-a")
        await pilot.press("space", "c")
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen)
        assert any("Mark 2 to 8 runs to compare (1 marked" in n.message for n in app._notifications)
        await pilot.press("space")  # unmark
        assert app.screen.marked == []


async def test_results_list_from_the_runs_list_and_the_palette(seeded):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("R")
        await wait_loaded(pilot)
        screen = app.screen
        assert isinstance(screen, ResultsListScreen)
        table = screen.query_one("#results-list", VirtualTable)
        ids = [table.coordinate_to_cell_key((i, 0)).row_key.value for i in range(table.row_count)]
        assert ids == [LOCAL_RUN, "perf-c", "const-b", "sweep-a"]  # runs with results only, newest first
        sweep = cell_texts(table, ids.index("sweep-a"))
        assert sweep[1:8] == ["sweep-a", "guidellm 0.8.1", "Llama-3.1-8B-Instruct", "6", "1,232", "0", "3,072"]
        assert (state_root() / "results-index.json").is_file()  # the summaries are cached for the next open
        select(app, "const-b", "#results-list")
        await pilot.press("space")
        select(app, "perf-c", "#results-list")
        await pilot.press("space", "c")
        await wait_loaded(pilot, CompareScreen)
        assert isinstance(app.screen, CompareScreen) and app.screen.comparison.names == ["const-b", "perf-c"]
        await pilot.press("escape")
        await pilot.pause()
        select(app, "perf-c", "#results-list")
        await pilot.press("enter")
        await wait_loaded(pilot, ResultsScreen)
        assert isinstance(app.screen, ResultsScreen) and app.screen.result.name == "perf-c"
        await pilot.press("escape", "escape")
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen)
        # the palette offers it from every screen
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"every run's results")
        await wait_for(pilot, lambda: app.screen.query_one("CommandList").option_count)
        await pilot.press("enter")
        await wait_loaded(pilot)
        assert isinstance(app.screen, ResultsListScreen)


async def test_a_queue_sweep_is_listed_to_be_read_when_opened_not_summarised(seeded):
    run = state_root() / "runs" / "argo-sweep"
    run.mkdir(parents=True)
    (run / "meta.json").write_text(json.dumps({"id": "argo-sweep", "backend": "argo", "model": "org/Qwen2.5-7B",
                                               "state": "succeeded", "started": 1.0, "finished": 2.0}))
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("R")
        await wait_loaded(pilot, ResultsListScreen)
        table = app.screen.query_one("#results-list", VirtualTable)
        assert cell_texts(table, table.get_row_index("argo-sweep"))[2:8] == [
            "argo-queue", "Qwen2.5-7B", "", "", "", "open to read the queue"]
        assert str(table.get_cell("sweep-a", "c4")) == "6"  # the others are summarised
    index = json.loads((state_root() / "results-index.json").read_text())
    assert "argo-sweep" not in json.dumps(index) and "sweep-a" in json.dumps(index)


async def test_a_broken_report_is_one_line_and_the_list_still_shows_the_rest(seeded):
    stored = state_root() / "runs" / "const-b" / "results" / "benchmarks.json"
    stored.write_bytes(stored.read_bytes()[:5000])
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        select(app, "const-b")
        await pilot.press("enter")
        await wait_loaded(pilot)
        head = str(app.screen.query_one("#results-head", Static).render())
        assert head == (f"Cannot show these results: {stored}: is truncated (the JSON ends in the middle); "
                        "expected a guidellm report (0.3, 0.4+ or 0.8): a JSON object with a 'benchmarks' list.")
        await pilot.press("escape", "R")
        await wait_loaded(pilot, ResultsListScreen)
        table = app.screen.query_one("#results-list", VirtualTable)
        assert str(table.get_cell("const-b", "c2")) == "unreadable"
        assert str(table.get_cell("sweep-a", "c4")) == "6"


async def test_export_writes_markdown_in_the_current_directory(seeded, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        select(app, "perf-c")
        await pilot.press("enter")
        await wait_loaded(pilot)
        await pilot.press("e")
        await pilot.pause()
        text = (tmp_path / "perf-c-results.md").read_text()
        assert text.startswith("# Results: perf-c") and "| stage 0 4/s | 4 req/s | 24 | 0 |" in text
