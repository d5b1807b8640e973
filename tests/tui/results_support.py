"""A run store with results for the results screens' Pilot and snapshot tests.

Three imported real reports (the guidellm 0.8 sweep and constant-rate runs,
the inference-perf run; read from ../shared/reference) and one local run
whose results.json the real load generator wrote against the real simulator
app, with its saved spec — one of its 40 requests failed with HTTP 400
(context length). Times are fixed so snapshots do not change.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.support.reference import REPORTS
from tests.tui.app_fakes import FIXED_NOW, FIXED_TODAY, seed_store

SWEEP = REPORTS / "guidellm" / "sweep" / "benchmarks.json"
CONSTANT = REPORTS / "guidellm" / "constant" / "benchmarks.json"
PERF = REPORTS / "inference-perf" / "shared-prefix-constant"
IMPORTS = (("sweep-a", SWEEP, 600), ("const-b", CONSTANT, 500), ("perf-c", PERF, 400))
LOCAL_RUN = "nov23-qwen-chatbot-results"

needs_reference = pytest.mark.skipif(not SWEEP.is_file(), reason=f"reference reports not found at {REPORTS}")


def _fix_times(run_dir: Path, started: float, finished: float) -> None:
    meta = json.loads((run_dir / "meta.json").read_text())
    meta.update(started=started, finished=finished)
    (run_dir / "meta.json").write_text(json.dumps(meta))


def write_loadgen_run(root: Path, run_id: str = LOCAL_RUN, started: float = FIXED_NOW - 300) -> Path:
    """A finished local run: saved spec + meta + results/results.json from the real runner and simulator."""
    from config.catalog import load_catalogs, make_workload
    from config.spec import Source, build_spec

    run = root / "runs" / run_id
    (run / "results").mkdir(parents=True)
    spec = build_spec(load_catalogs(), "qwen-1.5b", workload="chatbot", experiment_id=run_id, today=FIXED_TODAY)
    spec = spec.set("engine.max_model_len", 512, Source.USER)
    (run / "spec.json").write_text(json.dumps(spec.to_dict()))
    (run / "meta.json").write_text(json.dumps({"id": run_id, "backend": "local", "model": spec.model,
                                               "workload": "chatbot", "state": "succeeded", "started": started,
                                               "finished": started + 42}))
    profile = make_workload("custom", {"prompt_tokens": 400, "prompt_tokens_stdev": 60, "prompt_tokens_max": 600,
                                       "output_tokens": 32, "max_requests": 40, "rate_type": "concurrent",
                                       "max_concurrency": 4, "random_seed": 7})

    async def go() -> None:
        from tests.support.sim_server import run_workload

        await run_workload(profile, run / "results" / "results.json", "--speed", "0", "--max-model-len", "512")

    asyncio.run(go())
    return run


def seed_results(root: Path, *, local: bool = False) -> None:
    """The four runs of :func:`seed_store` plus three imported reports (and the local run)."""
    from backends.results import import_result
    from backends.store import RunStore

    seed_store(root)
    store = RunStore(root)
    for name, path, age in IMPORTS:
        run_id, _ = import_result(path, name, store)
        _fix_times(store.root / run_id, FIXED_NOW - age, FIXED_NOW - age + 60)
    if local:
        write_loadgen_run(root)


async def wait_loaded(pilot, kind: type | None = None, timeout: float = 30.0) -> None:
    """Until a results screen (of ``kind``, when given) is on top and has read its results (the list:
    every summary, its table rebuilt).

    The key that opens it may still be on its way when this is called (a busy machine), so the screen
    that was on top before it — the runs list, or another results screen when ``kind`` says which one
    is wanted — does not count.
    """
    from tui.screens.results import CompareScreen, ResultsListScreen, ResultsScreen

    wanted = kind or (ResultsScreen, CompareScreen, ResultsListScreen)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        screen = pilot.app.screen
        if isinstance(screen, wanted):
            if isinstance(screen, ResultsListScreen):
                if screen.filled_at is not None and not screen.pending:
                    break
            elif screen.loaded:
                break
        assert loop.time() < deadline, f"{type(screen).__name__} is on top: the results screen did not open or load"
        await pilot.pause(0.02)
    # and the tables have measured their new rows (a DataTable does that when idle; under load that
    # can come after a few pauses — textual 8's private flags say when it has)
    from textual.widgets import DataTable

    for table in pilot.app.screen.query(DataTable):
        while table._new_rows or table._updated_cells or table._require_update_dimensions:
            assert loop.time() < deadline, "a table did not measure its rows"
            await pilot.pause(0.02)
    await pilot.pause()
