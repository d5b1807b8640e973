"""``sweepdeck argo watch``'s loop over a scripted queue reader and Workflow finder (no queue API, no cluster).

The integration tests (tests/integration/argo/test_argo_cli.py) run it against a real queue API; these script
what a real API rarely does on cue: going away and coming back, staying empty, a sweep that ends between detail
reads, a Workflow that cannot be read, is missing, or has not changed.
"""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from backends.argo import sweep as sweep_mod
from backends.argo.sweep import QueueUnavailable
from backends.events import Sweep
from backends.kube import KubeError
from tui.commands.argo import watch

MVID = "mv1"


class ScriptedReader:
    """Stands in for SweepReader: each snapshot() takes the next item (a Sweep, or an exception to raise)."""

    script: list = []
    asked: list[bool] = []

    def __init__(self, url, mvid, **kwargs) -> None:
        pass

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        pass

    async def snapshot(self, *, details: bool = True) -> Sweep:
        ScriptedReader.asked.append(details)
        item = ScriptedReader.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


@pytest.fixture
def reader(monkeypatch):
    monkeypatch.setattr(sweep_mod, "SweepReader", ScriptedReader)
    ScriptedReader.asked = []
    return ScriptedReader


def run_watch(**kwargs) -> tuple[int, list[str]]:
    out = io.StringIO()
    code = asyncio.run(asyncio.wait_for(watch("http://queue", MVID, interval=0.001, out=out, **kwargs), 30))
    return code, out.getvalue().splitlines()


def test_the_queue_going_away_and_coming_back_is_said_once_each(reader):
    down = QueueUnavailable("the work-queue API at http://queue did not answer")
    reader.script = [
        Sweep(MVID, total=4, pending=4),
        down, down,
        Sweep(MVID, total=4, pending=2, running=2),
        Sweep(MVID, total=4, completed=4),  # finished on a counts-only read: read again with the details
        Sweep(MVID, total=4, completed=3, failed=1, failures=[{"error_message": "CUDA out of memory", "count": 1}]),
    ]
    code, lines = run_watch()
    assert code == 0
    assert reader.asked == [True, False, False, False, False, True]
    assert [line for line in lines if line.startswith("[WARN]")] == [
        "[WARN] the work-queue API at http://queue did not answer (retrying every 0.001 s)"]
    assert lines.count("[INFO] the work-queue API answers again") == 1
    assert "       1  CUDA out of memory" in lines
    assert lines[-1] == f"[INFO] sweep of {MVID} finished: 3 completed, 1 failed of 4"


def test_an_empty_model_version_is_warned_about_once_then_waited_for(reader):
    reader.script = [Sweep(MVID), Sweep(MVID), Sweep(MVID, total=2, completed=2), Sweep(MVID, total=2, completed=2)]
    code, lines = run_watch()
    assert code == 0
    assert sum("has no configs at http://queue yet" in line for line in lines) == 1
    assert lines[-1] == f"[INFO] sweep of {MVID} finished: 2 completed, 0 failed of 2"


def test_json_mode_prints_snapshots_and_no_finished_line(reader):
    reader.script = [Sweep(MVID, total=2, pending=2), Sweep(MVID, total=2, completed=2),
                     Sweep(MVID, total=2, completed=2)]
    code, lines = run_watch(json_mode=True)
    assert code == 0
    assert [json.loads(line)["completed"] for line in lines] == [0, 2]


def _workflow(phase: str) -> dict:
    return {"metadata": {"name": "sweep-abc"},
            "status": {"phase": phase, "nodes": {"n1": {"id": "n1", "name": "populate", "displayName": "populate",
                                                        "type": "Pod", "phase": phase}}}}


def test_workflow_lines_only_when_due_and_each_problem_said_once(reader):
    running, done = _workflow("Running"), _workflow("Succeeded")
    found = [running, running, KubeError("list workflows: forbidden (403)"), KubeError("again"), None, None,
             running, done]

    async def find_workflow():
        item = found.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    reader.script = [Sweep(MVID, total=2, pending=2)] * 7 + [Sweep(MVID, total=2, completed=2)] * 2
    code, lines = run_watch(find_workflow=find_workflow)
    assert code == 0 and found == []
    warns = [line for line in lines if "cannot read the sweep's Workflow" in line]
    assert warns == [
        "[WARN] cannot read the sweep's Workflow: list workflows: forbidden (403) (showing the queue only)"]
    assert sum("no Workflow is labelled with model version mv1" in line for line in lines) == 1
    # The Workflow's node lines: at the start and at the end, where it changed; not on reads 2 and 7, where it
    # had not changed since it was last shown and no details were due.
    populate = [line for line in lines if "populate" in line and "sweep-abc" not in line]
    assert populate == ["  populate  Running          —", "  populate  Succeeded        —"], lines
