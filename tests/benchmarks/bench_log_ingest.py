"""Log ingest: 1,000,000 lines through the monitor's real event path vs Textual's bare ``Log``.

Run by hand (not collected by pytest)::

    .venv/bin/python tests/benchmarks/bench_log_ingest.py [--lines 1000000] [--session]

Both halves run in this process, headless (``App.run_test``), on the same
lines (80–200 characters, mixed ``out``/``err``, generated on the fly so the
input itself does not weigh on memory):

1. **monitor** — a producer yields :class:`~backends.events.LogLine` events the
   way a backend does (a few thousand per read, then the loop runs); each goes
   to :meth:`RunController.on_event`; the controller delivers a batch every
   50 ms; the :class:`RunMonitorScreen` turns each batch into one message whose
   handler writes it into the :class:`LogView` in one call. Timed until the log
   view holds the last line. Peak RSS is read right after (before the bare
   half runs), with the default line cap (100,000).
2. **bare** — Textual's ``Log(max_lines=cap)`` fed the same lines with
   ``write_lines`` in chunks of the same size, the loop running between chunks.

``--session`` adds a third run through :class:`backends.session.Session`
(every event saved to ``events.jsonl`` and checked by the diagnosis rules
before it reaches the controller) — the full path a live run takes.
No ``pilot.pause()`` per chunk: only the loop yields between chunks.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from textual.app import App, ComposeResult  # noqa: E402
from textual.widgets import Log  # noqa: E402

from backends.events import Finished, LogLine  # noqa: E402

CHUNK = 2000  # lines a backend hands over per read before the loop runs again
WORDS = ("INFO", "engine", "step", "kv-cache", "usage", "prefill", "decode", "tokens/s", "GPU", "batch", "req", "ms")


def text_of(i: int) -> str:
    """Line ``i``: 80–200 characters, deterministic."""
    length = 80 + (i * 7919) % 121
    head = f"{'ERROR' if i % 5 == 0 else 'INFO'} 11-23 10:{(i // 60) % 60:02d}:{i % 60:02d} [worker.py:{i % 997}] #{i} "
    body = []
    n = len(head)
    k = i
    while n < length:
        word = WORDS[k % len(WORDS)]
        body.append(word)
        n += len(word) + 1
        k = k * 31 + 7
    return (head + " ".join(body))[:length]


def stream_of(i: int) -> str:
    return "err" if i % 3 == 0 else "out"


#: Distinct lines, reused cyclically: making a line must not be what is measured.
POOL_SIZE = 10_007
POOL = [text_of(i) for i in range(POOL_SIZE)]
PREFIXED = [f"[VLLM {'ERR' if stream_of(i) == 'err' else 'OUT'}] {POOL[i]}" for i in range(POOL_SIZE)]
STREAMS = [stream_of(i) for i in range(POOL_SIZE)]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


async def run_monitor(n: int, session: bool) -> dict:
    from backends.cleanup import CleanupRegistry
    from backends.store import RunStore
    from config.catalog import load_catalogs
    from config.spec import build_spec
    from tui.controller import RunController
    from tui.screens.monitor import RunMonitorScreen
    from tui.widgets.logview import LogView

    spec = build_spec(load_catalogs(), "qwen-1.5b", experiment_id=f"bench-{'s' if session else 'c'}-{os.getpid()}")
    done = asyncio.Event()

    class Producer:
        """A backend whose run prints ``n`` lines."""

        name = "bench"

        async def preflight(self, spec):
            return []

        async def launch(self, spec, store=None):
            from backends.base import Run

            return Run(spec.experiment_id, self.name, spec, store)

        async def events(self, run):
            for start in range(0, n, CHUNK):
                for i in range(start, min(n, start + CHUNK)):
                    j = i % POOL_SIZE
                    yield LogLine(POOL[j], STREAMS[j])
                await asyncio.sleep(0)
            yield Finished("succeeded")

        async def cancel(self, run):
            pass

        async def cleanup(self, run):
            pass

        async def attach(self, saved):
            raise NotImplementedError

    backend = Producer()
    controller = RunController(backend, spec, store=RunStore(), registry=CleanupRegistry())

    class Host(App):
        def on_mount(self) -> None:
            self.push_screen(RunMonitorScreen(controller, auto_recovery=False))

    app = Host()
    result: dict = {}
    async with app.run_test(size=(160, 48)) as pilot:
        while not isinstance(app.screen, RunMonitorScreen) or not app.screen.batches:
            await pilot.pause(0.01)
        view = app.screen.query_one(LogView)
        writes = 0
        original = view.write_events

        def counted(lines, dropped=0):
            nonlocal writes
            writes += 1
            original(lines, dropped)
            if view.total >= n:
                done.set()

        view.write_events = counted  # type: ignore[method-assign]
        began = time.perf_counter()
        if session:
            await controller.start()
        else:
            # the controller without the session: the backend's events straight to on_event
            on_event = controller.on_event
            async for event in backend.events(None):
                if type(event) is LogLine:
                    on_event(event)
        await asyncio.wait_for(done.wait(), 600)
        await _refreshed(app)  # timed until the last line is on screen
        elapsed = time.perf_counter() - began
        result = {
            "lines": view.total,
            "seconds": elapsed,
            "rate": n / elapsed,
            "widget_calls": writes,
            "kept": view.line_count,
            "peak_rss_mb": peak_rss_mb(),
            "rss_mb": rss_mb(),
            "last": view.visible_text()[-1][:60],
        }
    return result


async def _refreshed(app) -> None:
    """Wait for the next screen refresh (the lines written so far are then displayed)."""
    shown = asyncio.Event()
    app.call_after_refresh(shown.set)
    app.screen.refresh()
    await shown.wait()


async def run_bare(n: int, cap: int, chunk: int) -> dict:
    class Bare(App):
        def compose(self) -> ComposeResult:
            yield Log(max_lines=cap, id="log")

    app = Bare()
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        log = app.query_one(Log)
        began = time.perf_counter()
        for start in range(0, n, chunk):
            lines = [PREFIXED[i % POOL_SIZE] for i in range(start, min(n, start + chunk))]
            log.write_lines(lines)
            await asyncio.sleep(0)
        await _refreshed(app)
        elapsed = time.perf_counter() - began
        return {"lines": n, "seconds": elapsed, "rate": n / elapsed, "kept": log.line_count, "chunk": chunk}


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--session", action="store_true", help="also run the full Session path (saves every event)")
    parser.add_argument("--repeat", type=int, default=3, help="alternating rounds; the best of each is reported")
    args = parser.parse_args()
    os.environ.setdefault("SWEEPDECK_STATE_DIR", tempfile.mkdtemp(prefix="bench-log-"))
    n = args.lines
    print(f"log ingest: {n:,} lines, 80-200 chars, 1/3 on stderr; python {sys.version.split()[0]}; {os.cpu_count()} cpus; "
          f"best of {args.repeat} alternating rounds (the machine is shared)")
    ours = await run_monitor(n, session=False)
    peak = ours["peak_rss_mb"]  # before any bare run: the monitor path alone
    chunk = max(1, round(n / max(1, ours["widget_calls"])))
    bare = await run_bare(n, 100_000, chunk)
    bare_big = await run_bare(n, 100_000, 100_000)
    for _ in range(args.repeat - 1):
        again = await run_monitor(n, session=False)
        ours = max(ours, again, key=lambda r: r["rate"])
        bare = max(bare, await run_bare(n, 100_000, chunk), key=lambda r: r["rate"])
        bare_big = max(bare_big, await run_bare(n, 100_000, 100_000), key=lambda r: r["rate"])
    print(f"monitor path  : {ours['rate']:>10,.0f} lines/s  ({ours['seconds']:.2f} s, {ours['widget_calls']} widget calls, "
          f"~{chunk:,} lines each; kept {ours['kept']:,}; last line shown: {ours['last'][:40]!r})")
    print(f"bare Log      : {bare['rate']:>10,.0f} lines/s  ({bare['seconds']:.2f} s, write_lines in chunks of {chunk:,}; "
          f"kept {bare['kept']:,})")
    print(f"bare Log (100k chunks): {bare_big['rate']:>10,.0f} lines/s  ({bare_big['seconds']:.2f} s)")
    best_bare = max(bare["rate"], bare_big["rate"])
    print(f"ratio monitor / best bare: {ours['rate'] / best_bare:.0%}  (target >= 80%)")
    print(f"peak RSS of the monitor run (before the bare runs): {peak:.0f} MB (target < 300 MB)")
    if args.session:
        full = await run_monitor(n, session=True)
        print(f"full Session path (events.jsonl + diagnosis): {full['rate']:>10,.0f} lines/s ({full['seconds']:.2f} s; "
              f"peak RSS so far {full['peak_rss_mb']:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
