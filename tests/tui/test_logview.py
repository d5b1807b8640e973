"""The log view on its own: streams, tail-follow, cap, search, filter, wrap, pause, save."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult

from backends.events import LogLine
from tests.tui.monitor_support import log_lines
from tui.widgets.logview import LogView, line_prefix, plain_line


class LogApp(App):
    def __init__(self, cap: int = 100_000) -> None:
        super().__init__()
        self.cap = cap

    def compose(self) -> ComposeResult:
        yield LogView(self.cap, id="log")


def test_prefixes_name_source_and_stream():
    assert line_prefix(LogLine("x", "out")) == "[VLLM OUT] "
    assert line_prefix(LogLine("x", "err")) == "[VLLM ERR] "
    assert line_prefix(LogLine("x", "out", "vllm-tp4")) == "[VLLM-TP4 OUT] "
    assert plain_line(LogLine("a\tb\x07", "err")) == "[VLLM ERR] a       b\ufffd"


async def test_out_and_err_are_styled_apart_and_prefixed():
    app = LogApp()
    async with app.run_test(size=(80, 12)) as pilot:
        view = app.query_one(LogView)
        view.write_events([LogLine("hello out", "out"), LogLine("hello err", "err")])
        await pilot.pause()
        out_strip = view._line_strip(0)
        err_strip = view._line_strip(1)
        assert out_strip.text.startswith("[VLLM OUT] hello out")
        assert err_strip.text.startswith("[VLLM ERR] hello err")
        out_style = next(s.style for s in out_strip if s.text.startswith("[VLLM"))
        err_style = next(s.style for s in err_strip if s.text.startswith("[VLLM"))
        assert out_style != err_style
        assert err_style.bold


async def test_follows_only_at_the_bottom_and_counts_new_lines():
    app = LogApp()
    async with app.run_test(size=(80, 12)) as pilot:
        view = app.query_one(LogView)
        view.write_events(log_lines(100))
        await pilot.pause()
        assert view.following
        assert view.visible_text()[-1].endswith("step 99")
        view.focus()
        await pilot.press("home")
        await pilot.pause()
        assert not view.following
        top_before = view.visible_text()[0]
        view.write_events(log_lines(50, start=100))
        await pilot.pause()
        assert view.visible_text()[0] == top_before  # the view stayed put
        assert view.unseen == 50
        assert "▼ 50 new lines — End to follow" in view.status_text()
        await pilot.press("end")
        await pilot.pause()
        assert view.following and view.unseen == 0
        assert view.visible_text()[-1].endswith("step 149")
        view.write_events(log_lines(5, start=150))
        await pilot.pause()
        assert view.visible_text()[-1].endswith("step 154")


async def test_line_cap_keeps_memory_bounded_and_the_view_stable():
    app = LogApp(cap=1000)
    async with app.run_test(size=(80, 12)) as pilot:
        view = app.query_one(LogView)
        for start in range(0, 2500, 500):
            view.write_events(log_lines(500, start=start))
        await pilot.pause()
        assert view.line_count == 1000
        assert view.total == 2500
        assert view.dropped == 1500
        assert view.shown_lines()[0].text.startswith("line 001500")
        assert "1,500 oldest dropped (cap 1,000)" in view.status_text()
        # scrolled up, the cap drops lines above: what is read stays on screen
        view.scroll_to(y=500, animate=False, immediate=True)
        await pilot.pause()
        assert not view.following
        top = view.visible_text()[0]
        view.write_events(log_lines(200, start=2500))
        await pilot.pause()
        assert view.visible_text()[0] == top
        assert view.line_count == 1000


async def test_a_batch_larger_than_the_cap_keeps_the_newest():
    app = LogApp(cap=1000)
    async with app.run_test(size=(80, 12)) as pilot:
        view = app.query_one(LogView)
        view.write_events(log_lines(3000))
        await pilot.pause()
        assert view.line_count == 1000
        assert view.shown_lines()[0].text.startswith("line 002000")
        assert view.visible_text()[-1].endswith("step 2999")


async def test_search_highlights_counts_and_moves_between_matches():
    app = LogApp()
    async with app.run_test(size=(80, 12)) as pilot:
        view = app.query_one(LogView)
        view.write_events(log_lines(300))
        await pilot.pause()
        count = view.set_search("STEP 1")  # case-insensitive: step 1, 10-19, 100-199
        assert count == 1 + 10 + 100
        assert view.current_match == count  # starts at the last match
        assert "search 'step 1' 111/111" in view.status_text()
        assert view.goto_match(1) == 1  # wraps around to the first
        assert view.line(view._current).text.startswith("line 000001 ")
        assert any("line 000001 " in row for row in view.visible_text())
        assert not view.following
        assert view.goto_match(1) == 2
        assert view.line(view._current).text.startswith("line 000010 ")
        assert view.goto_match(-1) == 1
        strip = view._line_strip(100)  # a match that is not the current one
        match_style = view.get_component_rich_style("logview--match")
        highlighted = [s.text for s in strip if s.style and s.style.bgcolor == match_style.bgcolor]
        assert any(t.lower() == "step 1" for t in highlighted)
        current = view._line_strip(view._current)
        current_bg = view.get_component_rich_style("logview--current").bgcolor
        assert any(s.style and s.style.bgcolor == current_bg for s in current)
        # new lines that match are counted
        view.write_events([LogLine("another step 1 here")])
        assert view.match_count == count + 1
        view.set_search("")
        assert view.match_count == 0


async def test_filter_and_inverse_filter_apply_to_new_lines_too():
    app = LogApp()
    async with app.run_test(size=(80, 12)) as pilot:
        view = app.query_one(LogView)
        lines = log_lines(90)  # every 3rd line on stderr
        view.write_events(lines)
        view.set_filter("vllm err")
        assert view.row_count == 30
        assert all(ln.stream == "err" for ln in view.shown_lines())
        view.write_events(log_lines(9, start=90))
        assert view.row_count == 33
        await pilot.pause()
        assert all("[VLLM ERR]" in row for row in view.visible_text())
        view.set_filter("vllm err", inverse=True)
        assert view.row_count == 66
        assert all(ln.stream == "out" for ln in view.shown_lines())
        assert "NOT filter 'vllm err'" in view.status_text()
        # search inside a filtered view only counts shown lines
        assert view.set_search("step 9") == len([ln for ln in view.shown_lines() if "step 9" in ln.text])
        view.set_filter("")
        assert view.row_count == 99


async def test_filter_with_a_cap_prunes_the_view():
    app = LogApp(cap=1000)
    async with app.run_test(size=(80, 12)) as pilot:
        view = app.query_one(LogView)
        view.set_filter("vllm err")
        for start in range(0, 6000, 600):
            view.write_events(log_lines(600, start=start))
        await pilot.pause()
        assert view.line_count == 1000
        shown = view.shown_lines()
        assert len(shown) == view.row_count
        assert all(ln.stream == "err" for ln in shown)
        assert shown[0].text >= "line 005000"
        assert view.visible_text()[-1].endswith("step 5997")


async def test_wrap_splits_long_lines_into_rows():
    app = LogApp()
    async with app.run_test(size=(40, 12)) as pilot:
        view = app.query_one(LogView)
        long = "x" * 100
        view.write_events([LogLine("short"), LogLine(long), LogLine("tail line")])
        await pilot.pause()
        assert view.virtual_size.height == 3
        view.toggle_wrap()
        await pilot.pause()
        width = view.scrollable_content_region.width
        rows_for_long = -(-(len("[VLLM OUT] ") + 100) // width)
        assert view.virtual_size.height == 2 + rows_for_long
        text = view.visible_text()
        assert text[0].startswith("[VLLM OUT] short")
        assert "".join(t for t in text[1:1 + rows_for_long]) .startswith("[VLLM OUT] " + "x" * 10)
        assert text[-1].startswith("[VLLM OUT] tail line")
        assert "wrap" in view.status_text()
        view.toggle_wrap()
        assert view.virtual_size.height == 3


async def test_wrap_with_cap_and_new_lines():
    app = LogApp(cap=1000)
    async with app.run_test(size=(40, 10)) as pilot:
        view = app.query_one(LogView)
        view.set_wrap(True)
        for start in range(0, 3000, 500):
            view.write_events(log_lines(500, start=start))
        await pilot.pause()
        assert view.line_count == 1000
        assert view.visible_text()[-1].strip().endswith("2999")


async def test_pause_holds_lines_and_resume_shows_them():
    app = LogApp()
    async with app.run_test(size=(80, 12)) as pilot:
        view = app.query_one(LogView)
        view.write_events(log_lines(20))
        await pilot.pause()
        view.pause()
        before = view.visible_text()
        view.write_events(log_lines(30, start=20))
        await pilot.pause()
        assert view.visible_text() == before
        assert view.line_count == 20
        assert "⏸ PAUSED — 30 new lines held" in view.status_text()
        view.resume()
        await pilot.pause()
        assert view.line_count == 50 and view.following
        assert view.visible_text()[-1].endswith("step 49")


async def test_save_writes_the_shown_lines_and_never_overwrites_silently(tmp_path):
    app = LogApp()
    async with app.run_test(size=(80, 12)):
        view = app.query_one(LogView)
        view.write_events(log_lines(9))
        target = tmp_path / "sub" / "log.txt"
        assert view.save(target) == 9
        text = target.read_text().splitlines()
        assert text[0] == "[VLLM ERR] line 000000 INFO engine step 0"
        assert text[1] == "[VLLM OUT] line 000001 INFO engine step 1"
        view.set_filter("vllm err")
        with pytest.raises(FileExistsError):
            view.save(target)
        assert len(target.read_text().splitlines()) == 9  # unchanged
        assert view.save(target, overwrite=True) == 3
        assert len(target.read_text().splitlines()) == 3


def test_a_long_source_is_shortened_on_screen_and_kept_whole_when_saved():
    """A matrix TaskRun's source (task + combination) must not push the text off an 80-column line."""
    source = "task/run-experiment-inf-sche-prefix-yaml-8 question_len=1000,output_len=1000"
    line = LogLine("step 3/7 done", "out", source)
    shown = line_prefix(line)
    assert len(shown) <= 40 and shown.startswith("[TASK/RUN-EXP") and "…" in shown and shown.endswith("=1000 OUT] ")
    assert plain_line(line) == f"[{source.upper()} OUT] step 3/7 done"
    assert line_prefix(LogLine("x", "err", "vllm")) == "[VLLM ERR] "


async def test_a_log_pane_makes_young_collections_rarer_and_never_more_frequent():
    import gc

    from tui.widgets import logview

    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        logview.relax_gc()
        assert gc.get_threshold() == (logview.GC_YOUNG_THRESHOLD, 10, 10)
        gc.set_threshold(100_000, 5, 5)
        logview.relax_gc()
        assert gc.get_threshold() == (100_000, 5, 5)  # an app that chose rarer ones keeps them
        gc.set_threshold(0, 10, 10)
        logview.relax_gc()
        assert gc.get_threshold() == (0, 10, 10)  # a collector switched off stays off
    finally:
        gc.set_threshold(*saved)
