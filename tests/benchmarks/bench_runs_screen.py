#!/usr/bin/env python3
"""Runs list with many saved runs: time to show it, and the cost of a refresh.

Writes N run directories (meta.json + spec.json, like the store does) into a
temporary state dir, starts the app headless and measures:

* startup: app start → runs table filled (N rows);
* refresh: one ``refresh_rows()`` when nothing changed (the 1 s timer's cost);
* re-read: one refresh after the store changed (a run was added).

Usage: .venv/bin/python tests/benchmarks/bench_runs_screen.py [N]
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def seed(root: Path, n: int) -> None:
    from config.catalog import load_catalogs
    from config.spec import build_spec

    spec = build_spec(load_catalogs(), "qwen-1.5b", workload="chatbot").to_dict()
    runs = root / "runs"
    runs.mkdir(parents=True)
    now = time.time()
    states = ("succeeded", "failed", "cancelled", "detached")
    for i in range(n):
        run_id = f"run-{i:05d}"
        path = runs / run_id
        path.mkdir()
        (path / "spec.json").write_text(json.dumps({**spec, "experiment_id": run_id}))
        (path / "meta.json").write_text(json.dumps({
            "id": run_id, "backend": "local", "model": spec["model"], "workload": "chatbot",
            "state": states[i % 4], "started": now - i * 60, "finished": now - i * 60 + 30,
        }))


async def measure(n: int) -> dict[str, float]:
    from config.settings import Settings
    from tui.app import SweepdeckApp
    from tui.screens.runs import RunsScreen

    app = SweepdeckApp(Settings(), {}, install_signals=False)
    start = time.perf_counter()
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.screen
        while not isinstance(screen, RunsScreen) or len(screen.rows) < n:
            await asyncio.sleep(0.005)
            screen = app.screen
        startup = time.perf_counter() - start
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            screen.refresh_rows()
            times.append(time.perf_counter() - t0)
        reread = []
        for i in range(5):
            (app.store.root / f"zz-new-{i}").mkdir()
            t0 = time.perf_counter()
            screen.refresh_rows()
            reread.append(time.perf_counter() - t0)
        await pilot.pause()
    return {"startup": startup, "refresh": statistics.median(times), "reread": statistics.median(reread)}


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SWEEPDECK_STATE_DIR"] = tmp
        os.environ["NO_COLOR"] = "1"
        seed(Path(tmp), n)
        result = asyncio.run(measure(n))
    print(f"runs screen with {n} saved runs (headless, 160x48):")
    print(f"  startup to a filled table: {result['startup'] * 1000:.0f} ms")
    print(f"  refresh, nothing changed (1 s timer): {result['refresh'] * 1000:.2f} ms (median of 20)")
    print(f"  refresh after the store changed: {result['reread'] * 1000:.1f} ms (median of 5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
