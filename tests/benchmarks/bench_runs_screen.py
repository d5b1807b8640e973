#!/usr/bin/env python3
"""The run store at 10,000 runs: ``sweepdeck runs`` and the runs screen, against a stock DataTable.

Run by hand (not collected by pytest)::

    .venv/bin/python tests/benchmarks/bench_runs_screen.py [--runs 10000] [--rounds 3] [--idle 10] [--only cli|tui]

Writes N run directories (``meta.json`` + ``spec.json``, as the store does)
into a temporary state dir: finished runs of four models, workloads and three
backends, every 50th a fix run relaunched from the run before it (lineage),
and three detached runs whose supervisor is this process (live: their
duration ticks, the screen must keep them current). Then:

* **cli** — ``sweepdeck runs`` (and ``--limit 20``, ``--json``) as a fresh
  process, its output read through a pipe: the first call (no index of the
  store yet) once, then the median of 5.
* **tui** — the real path of ``sweepdeck`` with no arguments
  (``tui.cli.main([])`` → settings → the app), headless at 160×48 in a fresh
  process (``App.run(headless=True, auto_pilot=...)``), each round:

  - *first draw*: process start → the first frame written after the runs
    table was rendered with rows (interpreter start and imports included);
  - *keypress → redraw*: 200 presses on the table (100 ↓, 50 ↑, 25 PgDn,
    25 PgUp): key posted → the first frame whose cursor row, rows and detail
    line are those the key left. A frame is "written" when the app hands
    the compositor's update over to the driver; the headless driver writes
    nothing, so the wrapper turns the update into the terminal's bytes
    (``render_segments``), as a real driver does, and counts that time;
  - *filter*: ``/`` then ``llama`` typed a key at a time (each key → the frame
    with the narrowed rows), then ``esc``;
  - *idle CPU*: process CPU time (``time.process_time``) over ``--idle``
    seconds on the open runs list, and the worst event-loop lag in that time
    (a 10 ms ticker: how long the 1 s refresh blocks the loop);
  - *a new run*: a run directory written while the list is open → the frame
    that lists it.

  In the same round, the **strongest simple alternative**: a stock Textual
  ``DataTable`` (row cursor, zebra stripes) filled with the same rows as
  plain strings from ``RunStore().list()`` — first draw, the same 200 keys.
  It has no filter, no live refresh, no lineage and no detail line.

Python's bytecode caches are written first (``compileall``), as an installed
package has them; a shell with ``PYTHONDONTWRITEBYTECODE=1`` compiles every
sweepdeck module on every start (~50 ms for ``runs``, more for the TUI).

What the figures leave out: a real terminal (bytes are produced, not written
to a tty, nor drawn by a terminal emulator); SSH; the wide-character and
16-colour paths; mouse; a cold disk cache (the store is read right after it
was written, so the OS cache is warm).
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

MODELS = ("Qwen/Qwen2.5-Math-1.5B", "meta-llama/Llama-2-7b-hf", "mistralai/Mistral-7B-Instruct-v0.3",
          "meta-llama/Meta-Llama-3-8B-Instruct")
WORKLOADS = ("chatbot", "summarization", "codesweep", "train")
BACKENDS = ("local", "slurm", "tekton")
FINISHED = ("succeeded", "failed", "cancelled", "lost")
KEYS = ["down"] * 100 + ["up"] * 50 + ["pagedown"] * 25 + ["pageup"] * 25


def seed(root: Path, n: int, live: int = 3) -> None:
    """N runs under ``root/runs`` (the newest ``live`` detached, supervised by this process)."""
    from backends.procs import start_time
    from config.catalog import load_catalogs
    from config.spec import build_spec

    spec = build_spec(load_catalogs(), "qwen-1.5b", workload="chatbot").to_dict()
    runs = root / "runs"
    runs.mkdir(parents=True)
    now = time.time()
    supervisor = {"pid": os.getpid(), "start": start_time(os.getpid())}
    for i in range(n):
        run_id = f"run-{i:05d}"
        path = runs / run_id
        path.mkdir()
        (path / "spec.json").write_text(json.dumps({**spec, "experiment_id": run_id}))
        meta = {"id": run_id, "backend": BACKENDS[i % 3], "model": MODELS[i % 4], "workload": WORKLOADS[(i // 4) % 4],
                "state": FINISHED[i % 4], "started": now - i * 60, "finished": now - i * 60 + 30 + i % 600}
        if i < live:
            meta.update(state="detached", finished=None, supervisor=supervisor)
        if i % 50 == 1:
            meta.update(parent=f"run-{i + 1:05d}", fix={"label": "Reduce context"})
        (path / "meta.json").write_text(json.dumps(meta))


def add_run(root: Path, run_id: str) -> None:
    path = root / "runs" / run_id
    path.mkdir()
    (path / "meta.json").write_text(json.dumps({
        "id": run_id, "backend": "local", "model": MODELS[0], "workload": "chatbot", "state": "succeeded",
        "started": time.time(), "finished": time.time() + 1,
    }))


# ------------------------------------------------------------------------- cli


def bench_cli(env: dict[str, str]) -> dict[str, object]:
    exe = str(Path(sys.executable).parent / "sweepdeck")

    def once(*args: str) -> tuple[float, int]:
        t0 = time.perf_counter()
        out = subprocess.run([exe, "runs", *args], env=env, capture_output=True, check=True).stdout
        return time.perf_counter() - t0, out.count(b"\n")

    first, lines = once()
    plain = [once() for _ in range(5)]
    limit = [once("--limit", "20") for _ in range(5)]
    as_json = [once("--json") for _ in range(5)]
    return {
        "first": first, "lines": lines,
        "runs": statistics.median(t for t, _ in plain), "runs_all": [t for t, _ in plain],
        "limit": statistics.median(t for t, _ in limit), "limit_lines": limit[0][1],
        "json": statistics.median(t for t, _ in as_json), "json_lines": as_json[0][1],
    }


# ------------------------------------------------------------------------- tui


class Frames:
    """Wraps ``App._display``: the time of each frame handed to the driver, and the state it showed."""

    def __init__(self, state) -> None:
        self.state = state  # app -> a tuple describing what the frame shows
        self.log: list[tuple[float, tuple]] = []
        self.rendered_rows = False  # the runs table was rendered with rows
        self.first_draw: float | None = None  # time.time() of the first frame after that

    def install(self, app_cls) -> None:
        from textual._compositor import CompositorUpdate

        frames, original = self, app_cls._display

        def _display(app, screen, renderable):
            if isinstance(renderable, CompositorUpdate):
                renderable.render_segments(app.console)  # the bytes a real driver writes
            original(app, screen, renderable)
            if frames.rendered_rows and frames.first_draw is None:
                frames.first_draw = time.time()
            if renderable is not None:
                frames.log.append((time.perf_counter(), frames.state(app)))

        app_cls._display = _display

    def watch_table(self, table_cls) -> None:
        frames, original = self, table_cls.render_lines

        def render_lines(widget, crop):
            if widget.id == "runs-table" and widget.row_count:
                frames.rendered_rows = True
            return original(widget, crop)

        table_cls.render_lines = render_lines

    async def drawn(self, timeout: float = 120.0) -> None:
        deadline = time.perf_counter() + timeout
        while self.first_draw is None:
            if time.perf_counter() > deadline:
                raise TimeoutError("the runs table was never drawn with rows")
            await asyncio.sleep(0.005)

    async def until(self, t0: float, want: tuple, timeout: float = 10.0) -> float:
        """Seconds from ``t0`` to the first frame after it that showed ``want``."""
        deadline = time.perf_counter() + timeout
        seen = 0
        while time.perf_counter() < deadline:
            for t, state in self.log[seen:]:
                if t >= t0 and state == want:
                    return t - t0
            seen = len(self.log)
            await asyncio.sleep(0.001)
        raise TimeoutError(f"no frame showed {want}")


def table_state(app) -> tuple:
    table = app.screen.query_one("#runs-table")
    detail = ""
    for widget in app.screen.query("#runs-detail"):
        detail = str(widget.render())
    filter_value = ""
    for widget in app.screen.query("#runs-filter"):
        filter_value = widget.value
    first = table.coordinate_to_cell_key((0, 0)).row_key.value if table.row_count else None
    return (table.cursor_row, table.row_count, first, detail, filter_value)


async def press_all(pilot, frames: Frames, keys: list[str], state=table_state) -> list[tuple[str, float]]:
    """(key, key posted → the first frame showing what it left) for each key that changed something."""
    out = []
    for key in keys:
        before = state(pilot.app)
        t0 = time.perf_counter()
        await pilot.press(key)
        after = state(pilot.app)
        if after != before:  # a key that changed nothing (↓ on the last row) draws nothing
            out.append((key, await frames.until(t0, after)))
    return out


async def idle(seconds: float) -> tuple[float, float]:
    """(process CPU share, worst loop lag in s) over ``seconds`` of doing nothing."""
    worst = 0.0
    c0, w0 = time.process_time(), time.perf_counter()
    end = w0 + seconds
    while (now := time.perf_counter()) < end:
        await asyncio.sleep(0.01)
        worst = max(worst, time.perf_counter() - now - 0.01)
    return (time.process_time() - c0) / (time.perf_counter() - w0), worst


def child_sweepdeck(t_start: float, idle_s: float, state: Path) -> dict[str, object]:
    from textual.widgets import DataTable

    import tui.app as tui_app
    from tui.cli import main

    frames = Frames(table_state)
    frames.install(tui_app.SweepdeckApp)
    frames.watch_table(DataTable)
    try:
        from tui.widgets.virtual_table import VirtualTable
    except ImportError:  # before the virtual table
        pass
    else:
        frames.watch_table(VirtualTable)
    result: dict[str, object] = {}

    async def drive(pilot) -> None:
        app = pilot.app
        await frames.drawn()
        result["first_draw"] = frames.first_draw - t_start
        await pilot.pause()
        result["rows"] = app.screen.query_one("#runs-table").row_count
        result["keys"] = await press_all(pilot, frames, KEYS)
        await pilot.press("slash")
        result["filter"] = await press_all(pilot, frames, list("llama"))
        result["filtered_rows"] = app.screen.query_one("#runs-table").row_count
        await press_all(pilot, frames, ["escape"])
        await asyncio.sleep(1.5)
        result["idle_cpu"], result["idle_lag"] = await idle(idle_s)
        before = app.screen.query_one("#runs-table").row_count
        t0 = time.perf_counter()
        add_run(state, "zz-new-run")
        table = app.screen.query_one("#runs-table")
        while table.row_count == before:
            await asyncio.sleep(0.001)
        result["new_run"] = await frames.until(t0, table_state(app))
        app.exit()

    original_run = tui_app.SweepdeckApp.run

    def run(self, *args, **kwargs):
        return original_run(self, headless=True, size=(160, 48), auto_pilot=drive)

    tui_app.SweepdeckApp.run = run
    main([])
    return result


def child_datatable(t_start: float) -> dict[str, object]:
    from textual.app import App, ComposeResult
    from textual.widgets import DataTable

    from backends.store import RunStore

    frames = Frames(lambda app: (app.query_one(DataTable).cursor_row, app.query_one(DataTable).row_count))

    class Bare(App):
        def compose(self) -> ComposeResult:
            yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)

        def on_mount(self) -> None:
            table = self.query_one(DataTable)
            table.add_columns("State", "Run", "Model", "Workload", "Backend", "Started", "Duration")
            rows = []
            for r in RunStore().list():
                dur = f"{r.finished - r.started:.0f}s" if r.started and r.finished else "-"
                rows.append((r.state, r.id, r.model.rsplit("/", 1)[-1], r.workload, r.backend,
                             time.strftime("%b %d %H:%M", time.localtime(r.started or 0)), dur))
            table.add_rows(rows)
            table.focus()

    frames.install(Bare)
    frames.watch_table(DataTable)
    result: dict[str, object] = {}

    async def drive(pilot) -> None:
        await frames.drawn()
        result["first_draw"] = frames.first_draw - t_start
        await pilot.pause()
        result["rows"] = pilot.app.query_one(DataTable).row_count
        result["keys"] = await press_all(pilot, frames, KEYS, frames.state)
        pilot.app.exit()

    Bare().run(headless=True, size=(160, 48), auto_pilot=drive)
    return result


def run_child(kind: str, env: dict[str, str], idle_s: float, state: Path) -> dict[str, object]:
    t_start = time.time()
    proc = subprocess.run([sys.executable, __file__, "--child", kind, "--t-start", repr(t_start),
                           "--idle", str(idle_s), "--state", str(state)],
                          env=env, capture_output=True, text=True, timeout=600)
    marker = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not marker:
        raise RuntimeError(f"{kind} child failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(marker[-1][len("RESULT "):])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def bench_tui(env: dict[str, str], rounds: int, idle_s: float, state: Path) -> dict[str, list]:
    out: dict[str, list] = {"sweepdeck": [], "datatable": []}
    for _ in range(rounds):
        out["sweepdeck"].append(run_child("sweepdeck", env, idle_s, state))
        shutil.rmtree(state / "runs" / "zz-new-run", ignore_errors=True)  # the same N runs for each
        out["datatable"].append(run_child("datatable", env, idle_s, state))
    return out


def report_tui(res: dict[str, list], n: int) -> None:
    ms = 1000
    sd, dt = res["sweepdeck"], res["datatable"]
    keys = [t for r in sd for _, t in r["keys"]]
    dkeys = [t for r in dt for _, t in r["keys"]]
    typed = [t for r in sd for _, t in r["filter"]]
    print(f"TUI, {n} runs, headless 160x48, {len(sd)} rounds (fresh process each):")
    def each(values, scale=ms, fmt="{:.0f}"):
        return ", ".join(fmt.format(v * scale) for v in values)

    first = [r["first_draw"] for r in sd]
    dfirst = [r["first_draw"] for r in dt]
    print(f"  sweepdeck  first draw (process start -> frame with rows): median {statistics.median(first) * ms:.0f} ms"
          f" (rounds: {each(first)}), {sd[0]['rows']} rows")
    print(f"  DataTable  first draw (same rows, plain strings):         median {statistics.median(dfirst) * ms:.0f} ms"
          f" (rounds: {each(dfirst)}), {dt[0]['rows']} rows")
    print(f"  sweepdeck  keypress -> frame: p50 {pct(keys, 50) * ms:.1f} ms, p99 {pct(keys, 99) * ms:.1f} ms,"
          f" max {max(keys) * ms:.1f} ms ({len(keys)} presses)")
    print(f"  DataTable  keypress -> frame: p50 {pct(dkeys, 50) * ms:.1f} ms, p99 {pct(dkeys, 99) * ms:.1f} ms,"
          f" max {max(dkeys) * ms:.1f} ms ({len(dkeys)} presses)")
    for name, res_ in (("sweepdeck", sd), ("DataTable", dt)):
        by_kind = {kind: [t for r in res_ for k, t in r["keys"] if (k in ("up", "down")) == (kind == "up/down")]
                   for kind in ("up/down", "pageup/pagedown")}
        print(f"  {name:<9}  " + "; ".join(f"{kind}: p50 {pct(v, 50) * ms:.1f} ms, p99 {pct(v, 99) * ms:.1f} ms"
                                            for kind, v in by_kind.items() if v))
    print(f"  sweepdeck  filter key -> frame ('llama', {n} rows -> {sd[0]['filtered_rows']}):"
          f" p50 {pct(typed, 50) * ms:.1f} ms, max {max(typed) * ms:.1f} ms ({len(typed)} keys)")
    print(f"  sweepdeck  idle CPU: {each([r['idle_cpu'] for r in sd], 100, '{:.1f} %')};"
          f" worst loop lag: {each([r['idle_lag'] for r in sd])} ms")
    print(f"  sweepdeck  a run written while open -> listed: {each([r['new_run'] for r in sd])} ms")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--only", choices=("cli", "tui"))
    parser.add_argument("--child", choices=("sweepdeck", "datatable"))
    parser.add_argument("--t-start", type=float)
    parser.add_argument("--state")
    args = parser.parse_args()
    if args.child:
        if args.child == "sweepdeck":
            result = child_sweepdeck(args.t_start, args.idle, Path(args.state))
        else:
            result = child_datatable(args.t_start)
        print("RESULT " + json.dumps(result))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        config_home = Path(tmp) / "config"  # no user config: the defaults
        config_home.mkdir()
        env = {**os.environ, "SWEEPDECK_STATE_DIR": tmp, "PYTHONPATH": str(ROOT), "XDG_CONFIG_HOME": str(config_home)}
        # bytecode caches, as an installed package has them (a shell with PYTHONDONTWRITEBYTECODE=1
        # would compile every sweepdeck module on every start)
        for name in ("NO_COLOR", "SWEEPDECK_CONFIG", "PYTHONDONTWRITEBYTECODE"):
            env.pop(name, None)
        subprocess.run([sys.executable, "-m", "compileall", "-q", "tui", "backends", "config", "templates", "tests"],
                       cwd=ROOT, env=env, check=True, capture_output=True)
        t0 = time.perf_counter()
        seed(Path(tmp), args.runs)
        print(f"seeded {args.runs} runs in {time.perf_counter() - t0:.1f} s; load average {os.getloadavg()[0]:.1f}")
        if args.only in (None, "cli"):
            cli = bench_cli(env)
            print(f"sweepdeck runs, {args.runs} runs, fresh process, stdout to a pipe:")
            print(f"  first call (no index yet): {cli['first'] * 1000:.0f} ms, {cli['lines']} lines")
            print(f"  sweepdeck runs:            median {cli['runs'] * 1000:.0f} ms of 5"
                  f" ({', '.join(f'{t * 1000:.0f}' for t in cli['runs_all'])})")
            print(f"  sweepdeck runs --limit 20: median {cli['limit'] * 1000:.0f} ms of 5, {cli['limit_lines']} lines")
            print(f"  sweepdeck runs --json:     median {cli['json'] * 1000:.0f} ms of 5, {cli['json_lines']} lines")
        if args.only in (None, "tui"):
            report_tui(bench_tui(env, args.rounds, args.idle, Path(tmp)), args.runs)
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
