#!/usr/bin/env python3
"""Results: the results list with 1,000 runs, a compare of 8 runs × 10 load points, a 100 MB guidellm report.

Run by hand (not collected by pytest)::

    .venv/bin/python tests/benchmarks/bench_results.py [--only list|compare|parse] [--runs 1000] [--mb 100]

* **list** — N run directories like a finished local run leaves them
  (meta.json, spec.json, ``results/results.json`` written by the real load
  generator against the real simulator app: 40 requests, one failing with
  HTTP 400). The app starts headless on the runs list; ``R`` opens the results
  list. Measured: keypress → every row filled with its figures, first with no
  summary index (every results.json read, in a worker thread) and again with
  the index the first open wrote; and, as the simplest alternative, a plain
  loop of ``json.load`` + the same summary over the N files (no UI).
* **compare** — 8 imported guidellm reports of 10 benchmarks each (the real
  guidellm 0.8.1 sweep report from shared/reference, its constant-rate
  benchmarks repeated at scaled rates). Marked on the runs list; measured:
  ``c`` → the compare view drawn (the 8 reports read in a thread, compared,
  the table filled and a refresh done); ``g`` → the overlaid curves drawn;
  and ``compare()`` alone on the loaded results.
* **parse** — a guidellm report grown to ``--mb`` MB by repeating the real
  sweep report's per-request rows (prompts, outputs and all) in each
  benchmark. Each reader runs in a fresh process; measured: wall time and
  peak RSS (``VmHWM``) of ``backends.results.guidellm.load`` and of a
  plain ``json.load`` of the same file, and of a process that only imports
  what ``load`` imports (the floor).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support.reference import REPORTS  # noqa: E402  # after the sys.path line above

SWEEP = REPORTS / "guidellm" / "sweep" / "benchmarks.json"


# ------------------------------------------------------------------------ list


def seed_runs(state: Path, n: int) -> None:
    from tests.tui.results_support import write_loadgen_run

    template = write_loadgen_run(state, "run-00000", started=time.time() - n * 60)
    for i in range(1, n):
        run_id = f"run-{i:05d}"
        path = state / "runs" / run_id
        shutil.copytree(template, path)
        meta = json.loads((path / "meta.json").read_text())
        meta.update(id=run_id, started=time.time() - (n - i) * 60, finished=time.time() - (n - i) * 60 + 42)
        (path / "meta.json").write_text(json.dumps(meta))


async def open_list(n: int) -> list[tuple[float, float, float]]:
    """(first paint, filled, CPU seconds of the process until filled) from the R keypress: cold, then warm."""
    from tests.tui.app_fakes import make_app
    from tui.screens.results import ResultsListScreen

    app = make_app()
    out = []
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        for _ in range(2):
            t0, c0 = time.perf_counter(), time.process_time()
            await app.screen.run_action("results_list")  # what R does; pilot.press would wait for idle
            while not isinstance(app.screen, ResultsListScreen) or not app.screen.is_mounted:
                await asyncio.sleep(0.001)
            screen = app.screen
            while screen.query_one("#results-list").row_count < n:
                await asyncio.sleep(0.001)
            await asyncio.sleep(0)
            first = time.perf_counter() - t0
            while screen.filled_at is None:
                await asyncio.sleep(0.001)
            await pilot.pause()
            filled, cpu = time.perf_counter() - t0, time.process_time() - c0
            assert screen.query_one("#results-list").row_count == n
            out.append((first, filled, cpu))
            await pilot.press("escape")
            await pilot.pause()
    return out


def plain_loop(state: Path) -> float:
    from backends.results import loadgen
    from backends.results.index import summarize

    t0 = time.perf_counter()
    for path in sorted(p for p in (state / "runs").iterdir() if p.is_dir()):  # not the store's .index.json
        with open(path / "results" / "results.json") as fh:
            doc = json.load(fh)
        summarize(loadgen.from_document(doc, str(path), path.name))
    return time.perf_counter() - t0


def bench_list(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        os.environ["SWEEPDECK_STATE_DIR"] = tmp
        seed_runs(state, n)
        size = (state / "runs" / "run-00000" / "results" / "results.json").stat().st_size
        cold, warm = asyncio.run(open_list(n))
        c0 = time.process_time()
        plain = plain_loop(state)
        plain_cpu = time.process_time() - c0
    print(f"results list, {n} runs with results (results.json of 40 requests, {size / 1024:.0f} KiB each), 160x48,"
          f" load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs:")
    print(f"  R → rows shown, figures being read (cold): {cold[0] * 1000:.0f} ms")
    print(f"  R → every row filled, no index (cold):     {cold[1] * 1000:.0f} ms wall, {cold[2] * 1000:.0f} ms CPU")
    print(f"  R → every row filled, with the index:      {warm[1] * 1000:.0f} ms wall, {warm[2] * 1000:.0f} ms CPU")
    print(f"  plain json.load + summary of the {n} files, no UI: {plain * 1000:.0f} ms wall,"
          f" {plain_cpu * 1000:.0f} ms CPU")


# --------------------------------------------------------------------- compare


def ten_point_report(scale: float) -> dict:
    """The real sweep report with 10 benchmarks: its 4 constant-rate ones repeated at scaled rates."""
    doc = json.loads(SWEEP.read_text())
    constants = [b for b in doc["benchmarks"] if b["config"]["strategy"]["type_"] == "constant"]
    benches = []
    for i in range(10):
        b = json.loads(json.dumps(constants[i % len(constants)]))
        b["config"]["strategy"]["rate"] = round((i + 1) * 5 * scale, 2)
        benches.append(b)
    doc["benchmarks"] = benches
    return doc


class Frames:
    """When the app handed each frame to the terminal after ``start()``, and the first one with the table in it.

    Headless, a frame is rendered (the compositor's update is built) but not
    written: what writing ~160 × 48 cells to a real terminal costs is not in
    these figures. The table counts as drawn once it rendered a line with rows to show.

    It patches ``table_class.render_line`` for every instance: use it as a context
    manager, so the patch is undone (``stop()``) even when the benchmark fails.
    """

    def __init__(self, app, table_class: type) -> None:
        self.t0 = 0.0
        self.on = False
        self.drawn_at: float | None = None  # the last frame after start()
        self.table_at: float | None = None  # the first frame the table had rendered lines for
        self._table_lines = False
        display = app._display  # Textual's one place a frame leaves the app
        render_line = table_class.render_line

        def frame(screen, renderable) -> None:
            display(screen, renderable)
            if self.on and renderable is not None:
                now = time.perf_counter() - self.t0
                self.drawn_at = now
                if self._table_lines and self.table_at is None:
                    self.table_at = now

        def line(widget, y):
            self._table_lines = self._table_lines or (self.on and widget.row_count > 0)
            return render_line(widget, y)

        app._display = frame
        self._restore = (table_class, render_line)
        table_class.render_line = line

    def start(self) -> None:
        self.t0, self.on = time.perf_counter(), True

    def stop(self) -> None:
        """Stop timing and undo the ``render_line`` patch (twice is harmless)."""
        self.on = False
        table_class, render_line = self._restore
        table_class.render_line = render_line

    def __enter__(self) -> Frames:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


async def compare_view(ids: list[str], prefetched: bool) -> tuple[float, ...]:
    """(c → drawn wall, CPU; g → curves drawn; g → next plot; c → first frame with the table; c → last frame).

    "drawn" is what the Pilot sees: the key pressed, the screen loaded and
    the app idle again (Textual's ``wait_for_idle`` needs 20 ms without CPU
    work, so this includes a tail the user does not wait for); the frames
    are timed where the app hands them to the terminal.
    """
    from tests.tui.app_fakes import make_app
    from tui.screens import results as results_screens
    from tui.screens.results import CompareScreen
    from tui.widgets.results import CompareTable

    results_screens._CACHE.clear()
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        table = app.screen.query_one("#runs-table")
        for run_id in ids:
            table.move_cursor(row=table.get_row_index(run_id))
            await pilot.press("space")
        await app.workers.wait_for_complete()  # the marked runs' prefetch
        if not prefetched:
            results_screens._CACHE.clear()
        with Frames(app, CompareTable) as frames:
            frames.start()
            t0, c0 = frames.t0, time.process_time()
            await pilot.press("c")
            screen = app.screen
            assert isinstance(screen, CompareScreen)
            while not screen.loaded:
                await asyncio.sleep(0.001)
            await pilot.pause()
            drawn, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert screen.query_one("#compare-table").row_count == 10 * 11
        assert frames.table_at is not None
        t0 = time.perf_counter()
        await pilot.press("g")
        await pilot.pause()
        curves = time.perf_counter() - t0
        t0 = time.perf_counter()
        await pilot.press("g")
        await pilot.pause()
        next_plot = time.perf_counter() - t0
    return drawn, cpu, curves, next_plot, frames.table_at, frames.drawn_at


async def bare_table(rows: list[list[str]]) -> tuple[float, ...]:
    """The floor: push a screen holding only a DataTable (and a footer) of the same cells, as plain strings.

    (push → idle wall, CPU; push → first frame with the table; push → last frame), as :func:`compare_view`.
    """
    from textual.screen import Screen
    from textual.widgets import DataTable, Footer

    from tests.tui.app_fakes import make_app

    class Bare(Screen):
        def compose(self):
            yield DataTable()
            yield Footer()

        def on_mount(self) -> None:
            table = self.query_one(DataTable)
            table.add_columns(*rows[0])
            table.add_rows(rows[1:])
            table.focus()

    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        with Frames(app, DataTable) as frames:
            frames.start()
            t0, c0 = frames.t0, time.process_time()
            app.push_screen(Bare())
            await pilot.pause()
            out = time.perf_counter() - t0, time.process_time() - c0
        assert frames.table_at is not None
        return (*out, frames.table_at, frames.drawn_at)


def bench_compare() -> None:
    import csv
    import io

    from backends.results import import_result, resolve
    from backends.results.compare import compare
    from backends.results.export import compare_csv
    from backends.store import RunStore

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SWEEPDECK_STATE_DIR"] = tmp
        store = RunStore(Path(tmp))
        ids = []
        for k in range(8):
            path = Path(tmp) / f"report-{k}.json"
            path.write_text(json.dumps(ten_point_report(1 + k / 10)))
            ids.append(import_result(path, f"tp-{k}", store)[0])
        size = (Path(tmp) / "report-0.json").stat().st_size
        warm = [asyncio.run(compare_view(ids, prefetched=True)) for _ in range(3)]
        cold = [asyncio.run(compare_view(ids, prefetched=False)) for _ in range(3)]
        results = [resolve(i, store) for i in ids]
        t = []
        for _ in range(20):
            t0 = time.perf_counter()
            cmp = compare(results)
            t.append(time.perf_counter() - t0)
        rows = list(csv.reader(io.StringIO(compare_csv(cmp))))
        bare = [asyncio.run(bare_table([r[:10] for r in rows])) for _ in range(3)]

    def med(rounds: list[tuple], i: int) -> float:
        return statistics.median(r[i] for r in rounds) * 1000

    print(f"compare 8 runs × 10 load points (guidellm reports of {size / 1e6:.1f} MB), 160x48, median of 3,"
          f" load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs:")
    def rounds(rs: list[tuple], i: int) -> str:
        return ", ".join(f"{r[i] * 1000:.0f}" for r in rs)

    print(f"  c → compare view drawn, marked runs read while marking (Pilot: key, loaded, idle): {med(warm, 0):.0f} ms"
          f" wall, {med(warm, 1):.0f} ms CPU (rounds: {rounds(warm, 0)})")
    print(f"    c → first frame with the table: {med(warm, 4):.0f} ms (rounds: {rounds(warm, 4)});"
          f" c → last frame of the view: {med(warm, 5):.0f} ms (rounds: {rounds(warm, 5)})")
    print(f"  c → compare view drawn, nothing read before (8 reports parsed after c): {med(cold, 0):.0f} ms wall,"
          f" {med(cold, 1):.0f} ms CPU; first frame with the table {med(cold, 4):.0f} ms,"
          f" last frame {med(cold, 5):.0f} ms")
    print(f"  floor: a bare DataTable screen with the same 110 × 10 cells as plain text (Pilot: push, idle):"
          f" {med(bare, 0):.0f} ms wall, {med(bare, 1):.0f} ms CPU (rounds: {rounds(bare, 0)})")
    print(f"    push → first frame with the table: {med(bare, 2):.0f} ms (rounds: {rounds(bare, 2)});"
          f" push → last frame: {med(bare, 3):.0f} ms (rounds: {rounds(bare, 3)})")
    print(f"  g → overlaid curves drawn: {med(warm, 2):.0f} ms; g again → next plot: {med(warm, 3):.0f} ms")
    print(f"  compare() alone on the loaded results: {statistics.median(t) * 1000:.2f} ms (median of 20)")


# ----------------------------------------------------------------------- parse


def grow_report(path: Path, mb: int) -> int:
    """The real sweep report with its per-request rows repeated until the file is ``mb`` MB."""
    doc = json.loads(SWEEP.read_text())
    base = len(json.dumps(doc))
    rows = [json.dumps(r) for b in doc["benchmarks"] for r in b["requests"]["successful"]]
    per_row = sum(len(r) + 2 for r in rows) / len(rows)
    extra = int((mb * 1_000_000 - base) / per_row)
    per_bench = extra // len(doc["benchmarks"])
    for b in doc["benchmarks"]:
        own = b["requests"]["successful"]
        b["requests"]["successful"] = [own[i % len(own)] for i in range(len(own) + per_bench)]
    text = json.dumps(doc)
    path.write_text(text)
    return sum(len(b["requests"]["successful"]) for b in doc["benchmarks"])


CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
mode, path = sys.argv[1], sys.argv[2]
if mode == "load":
    from backends.results import guidellm
elif mode == "floor":
    from backends.results import guidellm
t0 = time.perf_counter()
if mode == "load":
    r = guidellm.load(__import__("pathlib").Path(path))
    n = len(r.load_points)
elif mode == "json":
    with open(path) as fh:
        doc = json.load(fh)
    n = len(doc["benchmarks"])
else:
    n = 0
dt = time.perf_counter() - t0
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork + exec from the (large) parent.
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({{"s": dt, "rss_mb": hwm / 1024, "n": n}}))
"""


def run_child(mode: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT)), mode, str(path)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def bench_parse(mb: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "benchmarks.json"
        rows = grow_report(path, mb)
        size = path.stat().st_size
        floor = run_child("floor", path)
        rounds = {"load": [], "json": []}
        for _ in range(3):  # alternate, so machine noise hits both alike
            for mode in rounds:
                rounds[mode].append(run_child(mode, path))
    print(f"parse a guidellm report of {size / 1e6:.0f} MB ({rows:,} per-request rows), fresh process each, best of 3:")
    for mode, label in (("load", "backends.results.guidellm.load"), ("json", "plain json.load")):
        best = min(rounds[mode], key=lambda r: r["s"])
        every = ", ".join(f"{r['s']:.2f}" for r in rounds[mode])
        print(f"  {label}: {best['s']:.2f} s, peak RSS {best['rss_mb']:.0f} MB (all: {every} s)")
    print(f"  floor (the interpreter with load's imports, nothing read): peak RSS {floor['rss_mb']:.0f} MB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("list", "compare", "parse"), action="append")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--mb", type=int, default=100)
    args = parser.parse_args()
    if not SWEEP.is_file():
        print(f"the reference reports are not at {REPORTS}", file=sys.stderr)
        return 2
    os.environ["NO_COLOR"] = "1"
    only = args.only or ["list", "compare", "parse"]
    if "list" in only:
        bench_list(args.runs)
    if "compare" in only:
        bench_compare()
    if "parse" in only:
        bench_parse(args.mb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
