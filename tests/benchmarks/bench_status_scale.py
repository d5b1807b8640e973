"""Status scale: 10,000 units in the status pane, 1,000 state changes per second for 10 s.

Run by hand (not collected by pytest)::

    .venv/bin/python tests/benchmarks/bench_status_scale.py [--units 10000] [--rate 1000] [--seconds 10]

Headless (``App.run_test``): Phase events go to :meth:`RunController.on_event`
exactly as a backend's events do, the controller collapses each 50 ms burst to
the latest state per unit, the monitor applies a batch with one call to the
status view. Reported: the lag between a change and the screen refresh that
shows it (once a second a probe change is timed; and the very last change),
whether the producer kept its rate, and peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from backends.events import Phase

STATES = ("PENDING", "RUNNING", "COMPLETED", "FAILED", "RUNNING", "PENDING")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=10_000)
    parser.add_argument("--rate", type=int, default=1000, help="state changes per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    os.environ.setdefault("SWEEPDECK_STATE_DIR", tempfile.mkdtemp(prefix="bench-status-"))

    from textual.app import App

    from backends.cleanup import CleanupRegistry
    from backends.store import RunStore
    from config.catalog import load_catalogs
    from config.spec import build_spec
    from tui.controller import RunController
    from tui.screens.monitor import RunMonitorScreen
    from tui.widgets.status import StatusView

    spec = build_spec(load_catalogs(), "qwen-1.5b", experiment_id=f"bench-status-{os.getpid()}")
    controller = RunController(None, spec, store=RunStore(), registry=CleanupRegistry())

    class Host(App):
        def on_mount(self) -> None:
            self.push_screen(RunMonitorScreen(controller, auto_recovery=False))

    rng = random.Random(42)
    now = time.time()
    names = [f"config-{i:05d}" for i in range(args.units)]
    app = Host()
    async with app.run_test(size=(160, 48)) as pilot:
        while not isinstance(app.screen, RunMonitorScreen) or not app.screen.batches:
            await pilot.pause(0.01)
        view = app.screen.query_one(StatusView)
        probes: list[tuple[Phase, float]] = []
        lags: list[float] = []
        original = view.update_phases

        def update(phases):
            original(phases)
            applied = [(p, t) for p, t in probes if view.phase(p.unit) is p]
            for probe in applied:
                probes.remove(probe)
                app.call_after_refresh(lambda t=probe[1]: lags.append(time.perf_counter() - t))

        view.update_phases = update  # type: ignore[method-assign]  # a counting wrapper

        began = time.perf_counter()
        on_event = controller.on_event
        for name in names:
            on_event(Phase(name, "PENDING", "queued", kind="config", started=now, expected_s=3600))
        controller.flush()
        await pilot.pause()
        while len(view.units) < args.units:
            await asyncio.sleep(0.01)
        load_s = time.perf_counter() - began

        loop = asyncio.get_running_loop()
        tick = 0.01
        per_tick = max(1, round(args.rate * tick))
        total = int(args.rate * args.seconds)
        sent = 0
        start = loop.time()
        next_probe = start
        last_phase = None
        while sent < total:
            for _ in range(min(per_tick, total - sent)):
                unit = names[rng.randrange(args.units)]
                phase = Phase(unit, STATES[sent % len(STATES)], f"change {sent}", kind="config", started=now)
                on_event(phase)
                sent += 1
            if loop.time() >= next_probe:
                probe = Phase(names[0], STATES[sent % len(STATES)], f"probe {sent}", kind="config", started=now)
                probes.append((probe, time.perf_counter()))
                on_event(probe)
                sent += 1
                next_probe += 1.0
            # keep the rate: sleep until the next tick (no busy loop)
            target = start + (sent / args.rate)
            await asyncio.sleep(max(0.0, target - loop.time()))
        produced_s = loop.time() - start
        # the very last change: unit 0 (on screen), timed until it is displayed
        last_phase = Phase(names[0], "COMPLETED", "the last change", kind="config", started=now, finished=now + 1)
        t_last = time.perf_counter()
        probes.append((last_phase, t_last))
        on_event(last_phase)
        while len(lags) < 1 or probes:
            await asyncio.sleep(0.002)
        last_lag = lags[-1]
        row = view.row_text(view.phase(names[0])).plain
        result = {
            "load_s": load_s,
            "produced": sent,
            "produced_s": produced_s,
            "rate": sent / produced_s,
            "probe_lags_ms": [round(x * 1000, 1) for x in lags[:-1]],
            "last_lag_ms": last_lag * 1000,
            "updates": view.updates,
            "peak_rss_mb": peak_rss_mb(),
            "row": row,
        }
    print(f"status scale: {args.units:,} units, {args.rate:,} changes/s for {args.seconds:g} s; "
          f"python {sys.version.split()[0]}; {os.cpu_count()} cpus")
    print(f"initial {args.units:,} units shown in {result['load_s'] * 1000:.0f} ms")
    print(f"changes sent: {result['produced']:,} in {result['produced_s']:.2f} s ({result['rate']:,.0f}/s; "
          f"{result['updates']} status-view updates after collapsing)")
    probes_ms = result["probe_lags_ms"]
    if probes_ms:
        print(f"lag change -> on screen, once a second: median {statistics.median(probes_ms):.1f} ms, "
              f"max {max(probes_ms):.1f} ms ({len(probes_ms)} probes)")
    print(f"lag of the last change -> on screen: {result['last_lag_ms']:.1f} ms   (row now: {result['row'][:50]!r})")
    print(f"peak RSS: {result['peak_rss_mb']:.0f} MB (target < 300 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
