"""The runs list with 10,000 saved runs: it opens, shows rows, answers keys, narrows, and follows the store.

Timings are the benchmark's (tests/benchmarks/bench_runs_screen.py); these tests wait on conditions.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from backends.procs import start_time
from tests.tui.app_fakes import FIXED_NOW, make_app
from tui.screens.runs import RunsScreen
from tui.widgets.virtual_table import VirtualTable

RUNS = 10_000
MODELS = ("Qwen/Qwen2.5-Math-1.5B", "meta-llama/Llama-2-7b-hf", "mistralai/Mistral-7B-Instruct-v0.3")
FINISHED = ("succeeded", "failed", "cancelled")


def seed_many(root: Path, n: int = RUNS) -> None:
    """``run-00000`` (newest) … ``run-09999``; every 100th a fix of the run before it; the newest two detached."""
    runs = root / "runs"
    runs.mkdir(parents=True)
    supervisor = {"pid": os.getpid(), "start": start_time(os.getpid())}  # alive: the detached runs stay so
    for i in range(n):
        run_id = f"run-{i:05d}"
        meta = {"id": run_id, "backend": "local", "model": MODELS[i % 3], "workload": "chatbot",
                "state": FINISHED[i % 3], "started": FIXED_NOW - 60 * (i + 1), "finished": FIXED_NOW - 60 * i - 5}
        if i < 2:
            meta.update(state="detached", finished=None, supervisor=supervisor)
        if i % 100 == 10:
            meta.update(parent=f"run-{i + 1:05d}", fix={"label": "Reduce context"})
        (runs / run_id).mkdir()
        (runs / run_id / "meta.json").write_text(json.dumps(meta))


def state_root() -> Path:
    return Path(os.environ["SWEEPDECK_STATE_DIR"])


async def until(pilot, condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def drawn(table: VirtualTable) -> str:
    """What the table shows now: its visible lines as text."""
    return "\n".join(strip.text for strip in table.render_lines(table.size.region))


def detail(app) -> str:
    return str(app.screen.query_one("#runs-detail").render())


async def open_list(pilot) -> VirtualTable:
    app = pilot.app
    await until(pilot, lambda: isinstance(app.screen, RunsScreen)
                and app.screen.query_one("#runs-table", VirtualTable).row_count >= RUNS, "the 10,000 rows")
    return app.screen.query_one("#runs-table", VirtualTable)


async def test_ten_thousand_runs_open_answer_keys_narrow_and_follow_the_store():
    seed_many(state_root())
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        table = await open_list(pilot)
        assert table.row_count == RUNS
        shown = drawn(table)
        assert "run-00000" in shown and "⏸ detached" in shown and "run-09999" not in shown
        assert "↳ run-00010" in shown  # a fix run, right under the run it fixes
        lines = shown.splitlines()
        assert lines.index(next(line for line in lines if "↳ run-00010" in line)) == \
            lines.index(next(line for line in lines if " run-00011 " in line)) + 1

        # keys: the cursor moves, the detail line follows, the far end is drawn
        await pilot.press("down", "down", "down")
        assert table.cursor_row == 3
        assert detail(app).startswith(f"{table.cursor_key} · ")
        await pilot.press("pagedown")
        assert table.cursor_row > 3 + 30
        await pilot.press("ctrl+end")
        await pilot.pause()
        assert table.cursor_key == "run-09999" and "run-09999" in drawn(table)
        assert detail(app).startswith("run-09999 · ")
        await pilot.press("ctrl+home")
        assert table.cursor_row == 0

        # the filter narrows (what holds the words first), esc brings every run back
        await pilot.press("slash", *"mistral")
        await until(pilot, lambda: table.row_count < RUNS, "the filter to narrow")
        exact = sum(1 for i in range(RUNS) if MODELS[i % 3].startswith("mistral"))
        assert table.row_count >= exact
        assert all("Mistral" in str(table.get_row_at(i)[2]) for i in range(exact))
        await pilot.press(*"ai/mistral-7b")
        await until(pilot, lambda: table.row_count == exact, "the longer query to narrow further")
        await pilot.press("escape")
        await until(pilot, lambda: table.row_count == RUNS, "every run again")

        # a run written by another process while the list is open appears at the top
        new = state_root() / "runs" / "run-new"
        new.mkdir()
        (new / "meta.json").write_text(json.dumps({"id": "run-new", "backend": "local", "model": MODELS[0],
                                                   "workload": "chatbot", "state": "succeeded",
                                                   "started": FIXED_NOW, "finished": FIXED_NOW + 1}))
        await until(pilot, lambda: table.row_count == RUNS + 1, "the new run")
        assert table.coordinate_to_cell_key((0, 0)).row_key.value == "run-new"
        assert "run-new" in drawn(table)

        # a fix run relaunched from an older run is listed right under it
        fix = state_root() / "runs" / "run-00005-fix"
        fix.mkdir()
        (fix / "meta.json").write_text(json.dumps({"id": "run-00005-fix", "backend": "local", "model": MODELS[0],
                                                   "workload": "chatbot", "state": "failed", "parent": "run-00005",
                                                   "started": FIXED_NOW + 5, "finished": FIXED_NOW + 9}))
        await until(pilot, lambda: table.row_count == RUNS + 2, "the fix run")
        assert table.get_row_index("run-00005-fix") == table.get_row_index("run-00005") + 1
        assert str(table.get_row("run-00005-fix")[1]) == "↳ run-00005-fix"

        # a live run that finishes changes on screen
        meta_path = state_root() / "runs" / "run-00001" / "meta.json"
        meta = json.loads(meta_path.read_text())
        meta.update(state="succeeded", finished=FIXED_NOW - 10, supervisor=None)
        meta_path.write_text(json.dumps(meta))
        await until(pilot, lambda: str(table.get_row("run-00001")[0]) == "✓ succeeded", "the finished state")
        await until(pilot, lambda: "✓ succeeded" in next(line for line in drawn(table).splitlines()
                                                         if " run-00001 " in line), "the row drawn again")


async def test_ten_thousand_runs_at_80_columns_take_two_lines_each_and_still_move():
    seed_many(state_root())
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        table = await open_list(pilot)
        assert [str(c.label) for c in table.ordered_columns] == ["State", "Run", "Duration"]
        assert table.row_height == 2 and table.virtual_size.height == 1 + 2 * RUNS
        lines = drawn(table).splitlines()
        first = next(i for i, line in enumerate(lines) if "run-00000" in line)
        assert "Qwen2.5-Math-1.5B · chatbot · local" in lines[first + 1]
        await pilot.press("end", "ctrl+end")
        await pilot.pause()
        assert table.cursor_key == "run-09999" and "run-09999" in drawn(table)


def test_the_filter_puts_what_holds_the_words_first_then_letters_in_order():
    from tui.screens.runs import RunRow, filter_rows

    def row(run_id: str, model: str, workload: str = "chatbot") -> RunRow:
        return RunRow(id=run_id, backend="local", model=model, workload=workload, state="succeeded",
                      started=None, finished=None)

    rows = [row("a-new", "meta-llama/Meta-Llama-3-8B-Instruct"), row("b", "Qwen/Qwen2.5-7B"),
            row("c", "meta-llama/Llama-2-7b-hf", "summarization"), row("d-old", "mistralai/Mistral-7B")]
    # as typed (any case) first, in list order; then "l…l…a…m…a" across local/mistralai/chatbot
    assert [r.id for r in filter_rows("LLAMA", rows)] == ["a-new", "c", "d-old"]
    assert [r.id for r in filter_rows("l3chat", rows)] == ["a-new"]  # letters in order: llama-3 … chatbot
    fuzzy = filter_rows("mis7", rows)
    assert fuzzy[0].id == "d-old"  # holds "mis" then "7" closest together
    assert filter_rows("zzz", rows) == []
