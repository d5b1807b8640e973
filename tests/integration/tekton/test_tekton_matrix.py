"""A matrix PipelineRun on the tekton backend: its TaskRuns' step logs and re-attaching (fake-API tests).

The real TektonBackend over real HTTP to the tests' fake API server; the test
controller fans each matrix task out into one TaskRun (and step pod, with a
log) per combination.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest

from backends.events import Finished, LogLine, Progress

pytestmark = pytest.mark.fakeapi

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "tekton"
NS = "mert"
PR = "experiment-matrix-run"
SOURCE = re.compile(r"^task/(run-experiment-\S+-\d+) question_len=(\d+),output_len=(\d+)$")


def unrolled(limit: int = 2) -> tuple[object, dict]:
    """The Tekton PoC matrix (4 × 3 × 3), gaiePluginConfig unrolled, at most ``limit`` tasks at once."""
    from backends.tekton.launch_matrix import MatrixFile, MatrixPlan

    matrix = MatrixFile.load(FIX / "tekton-poc-pipelinerun-matrix.yaml")
    return matrix, MatrixPlan("unroll_limit", ("gaiePluginConfig",), limit).pipelinerun(matrix)


def run_dir_for(matrix):
    """The run directory the session driver would make (spec.json, meta) for the matrix launch."""
    from backends.store import RunStore
    from backends.tekton.launch_matrix import matrix_spec

    store = RunStore()
    spec = matrix_spec(matrix, profile="lab", namespace=NS, store=store)
    return spec, store.create(spec, backend="tekton")


def live_followers(fake) -> int:
    """Log streams the fake API server is following right now."""
    with fake._lock:
        return sum(len(s.followers) for s in fake._logs.values())


async def collect(backend, run, timeout=30, until=None):
    events = []

    async def go():
        async for ev in backend.events(run):
            events.append(ev)
            if until is not None and until(ev):
                return

    await asyncio.wait_for(go(), timeout)
    return events


async def test_matrix_run_follows_running_taskrun_logs_bounded_with_combination_sources(backend, cluster):
    matrix, pr = unrolled(limit=2)
    # two tasks of 9 combinations run at once, long enough for their step logs to be followed
    cluster.controller.durations["run-experiment-"] = 0.6
    run = await backend.launch_pipelinerun(pr, NS, run_dir_for(matrix)[1])
    cluster.reset_requests()
    peak = 0

    async def sample():
        nonlocal peak
        while True:
            peak = max(peak, live_followers(cluster))
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    try:
        events = await collect(backend, run)
    finally:
        sampler.cancel()
    assert isinstance(events[-1], Finished) and events[-1].outcome == "succeeded"
    lines = [e for e in events if isinstance(e, LogLine)]
    assert lines, "the matrix run's TaskRun logs were not followed"
    by_source: dict[str, list[str]] = {}
    for line in lines:
        by_source.setdefault(line.source, []).append(line.text)
    for source, texts in by_source.items():
        m = SOURCE.match(source)
        assert m, source  # task row and its combination
        row, q, o = m.groups()
        # the pod's own line names the same combination as the source does
        assert texts[0] == f"[{row}] starting question_len={q} output_len={o}", (source, texts)
        assert texts[-1] == f"[{row}] done"
    # bounded: 18 TaskRuns run at once, 2 logs are followed; places are given again as follows end
    assert 2 < len(by_source) < 36
    assert 1 <= peak <= backend.task_log_follows
    assert cluster.request_count("GET", "/log") == len(by_source)  # no follow was started and dropped
    progress = [e for e in events if isinstance(e, Progress)]
    assert (progress[-1].done, progress[-1].total) == (36, 36)


async def test_matrix_failing_taskrun_step_log_is_shown_at_once(backend, cluster):
    matrix, pr = unrolled(limit=4)
    row = "run-experiment-2-4"  # question_len=300, output_len=300 (combination 4 of 3 × 3)
    cluster.controller.fail(row, "fail", "scheduler config rejected")
    backend.task_log_follows = 0  # nothing followed: the failure itself must show its step log
    run = await backend.launch_pipelinerun(pr, NS, run_dir_for(matrix)[1])
    events = await collect(backend, run)
    assert isinstance(events[-1], Finished) and events[-1].outcome == "failed"
    lines = [e for e in events if isinstance(e, LogLine)]
    assert [(e.source, e.stream, e.text) for e in lines] == [
        (f"task/{row} question_len=300,output_len=300", "err", f"[{row}] starting question_len=300 output_len=300"),
        (f"task/{row} question_len=300,output_len=300", "err", "error: scheduler config rejected"),
    ]
    assert cluster.request_count("GET", "/log") == 1  # one tail read, no follows


async def test_matrix_attach_after_detach_keeps_done_total(backend, cluster, settings):
    from backends.store import RunStore
    from backends.tekton import TektonBackend

    matrix, pr = unrolled(limit=2)
    cluster.controller.hang["run-experiment-1"] = True  # the first batch never ends
    spec, run_dir = run_dir_for(matrix)
    run = await backend.launch_pipelinerun(pr, NS, run_dir=run_dir)
    assert not (run_dir.path / "rendered" / "pipeline.yaml").exists()  # a ready PipelineRun has no rendered Pipeline
    # detach: the session stays, the PipelineRun keeps running; a new process attaches
    again = await TektonBackend(settings, backend.profile, registry=backend.registry).attach(RunStore().get(run.id))
    assert again.handle["pipelinerun"] == PR and again.handle["namespace"] == NS
    assert len(again.handle["tasks"]) == 36 and again.handle["matrix"]["tasks"] == 4
    assert again.spec.workload.app == "matrix"

    def settled(ev) -> bool:
        return isinstance(ev, Progress) and ev.completed == 9 and ev.running == 9

    events = await collect(backend, again, until=settled)
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress and {p.total for p in progress} == {36}
    assert (progress[-1].done, progress[-1].total) == (9, 36)

    # the PipelineRun gone from the cluster: the rendered copy in the run store still gives the total
    cluster.delete("tekton.dev/v1", "PipelineRun", PR, NS)
    later = await TektonBackend(settings, backend.profile, registry=backend.registry).attach(RunStore().get(run.id))
    assert len(later.handle["tasks"]) == 36 and later.handle["matrix"]["combinations"] == 36
    await backend.registry.run(5)


async def test_blis_attach_still_reads_the_rendered_pipeline(backend, spec, cluster, settings):
    """Not a matrix run: attach keeps the rendered Pipeline's tasks and follows no step logs."""
    from backends.store import RunStore
    from backends.tekton import TektonBackend

    cluster.controller.hang["download-model"] = True
    run = await backend.launch(spec, RunStore().create(spec))
    # the session driver saves the handle into the session file as it is: TPS=[2, 4]
    session = run.store.read_handle()
    assert session["TPS"] == "2,4"
    run.store.write_handle({**session, "TPS": str(run.handle["tps"])})
    again = await TektonBackend(settings, backend.profile, registry=backend.registry).attach(RunStore().get(run.id))
    assert "matrix" not in again.handle and len(again.handle["tasks"]) == 20 and again.handle["tps"] == [2, 4]
    start = time.monotonic()
    events = await collect(backend, again, until=lambda ev: isinstance(ev, Progress) and ev.running >= 1)
    assert time.monotonic() - start < 10
    assert not [e for e in events if isinstance(e, LogLine) and e.source.startswith("task/")]
    await backend.registry.run(5)
