"""RunController without a screen: batching, collapsing, history, cleanup, relaunch, attach, detach."""

from __future__ import annotations

import asyncio
import json
import time

from backends.cleanup import CleanupRegistry
from backends.events import Finished, Fix, LogLine, Phase
from backends.store import RunStore
from tests.tui.monitor_support import FIXED_NOW, Gate, ScriptedBackend, log_lines, make_spec, oom_script, running_script
from tui.controller import RunController


def _controller(backend, spec=None, **kw):
    return RunController(backend, spec or make_spec(), store=RunStore(), registry=CleanupRegistry(), **kw)


async def test_events_arrive_in_collapsed_batches_and_are_saved():
    burst = [Phase("job 1", "PENDING" if i % 2 else "RUNNING", f"step {i}", kind="job", ts=FIXED_NOW + i)
             for i in range(200)]
    script = [log_lines(500), burst, Phase("job 1", "COMPLETED", "done", kind="job"), log_lines(500, start=500),
              Finished("succeeded", "ok")]
    ctrl = _controller(ScriptedBackend(script))
    batches = []
    ctrl.subscribe(batches.append)
    assert batches[0].reset and not batches[0].lines  # the (empty) history first
    await ctrl.start()
    assert ctrl.state == "succeeded" and not ctrl.live
    lines = [ln for b in batches for ln in b.lines]
    assert len(lines) == 1000
    assert [ln.text for ln in lines[:2]] == ["line 000000 INFO engine step 0", "line 000001 INFO engine step 1"]
    # far fewer deliveries than events: lines are batched, status bursts collapse
    assert len(batches) < 20
    phase_updates = [p for b in batches for p in b.phases.values()]
    assert len(phase_updates) < 10
    assert ctrl.phases["job 1"].state == "COMPLETED"
    assert phase_updates[-1].state == "COMPLETED"
    assert any(b.finished is not None and b.finished.outcome == "succeeded" for b in batches)
    saved = list(ctrl.run.store.events())  # lines are saved in batches, read back one by one
    assert sum(1 for e in saved if isinstance(e, LogLine)) == 1000
    assert json.loads((ctrl.run.store.path / "meta.json").read_text())["state"] == "succeeded"


async def test_history_is_capped_and_replayed_to_late_subscribers():
    ctrl = _controller(ScriptedBackend([log_lines(3000), Finished("succeeded")]), log_line_cap=1000)
    await ctrl.start()
    assert len(ctrl.logs) == 1000 and ctrl.log_total == 3000
    late = []
    ctrl.subscribe(late.append)
    snap = late[0]
    assert snap.reset and len(snap.lines) == 1000 and snap.dropped == 2000
    assert snap.lines[0].text.startswith("line 002000")
    assert snap.finished.outcome == "succeeded"


async def test_diagnosed_alert_reaches_subscribers_with_fixes():
    spec = make_spec()
    ctrl = _controller(ScriptedBackend(oom_script()), spec)
    alerts = []
    ctrl.subscribe(lambda b: alerts.extend(b.alerts), replay=False)
    await ctrl.start()
    assert ctrl.state == "failed"
    oom = [a for a in alerts if a.diagnosis == "cuda-oom"]
    assert len(oom) == 1
    labels = [f.label for f in oom[0].fixes]
    assert "Reduce context" in labels


class StuckBackend(ScriptedBackend):
    """Its event stream ignores cancellation and its cleanup hangs."""

    released = False

    async def events(self, run):
        yield LogLine("started")
        while not self.released:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                continue  # stuck: swallows every cancel (until the test releases it)

    async def cleanup(self, run):
        await asyncio.sleep(3600)


async def test_cleanup_is_bounded_when_the_backend_is_stuck():
    registry = CleanupRegistry()
    forced = []

    async def hanging_undo():
        await asyncio.sleep(3600)

    backend = StuckBackend([])
    ctrl = RunController(backend, make_spec(), store=RunStore(), registry=registry)
    await ctrl.launch()
    registry.register("stuck server", hanging_undo, force=lambda: forced.append(True))
    task = asyncio.ensure_future(ctrl.start())
    try:
        await asyncio.sleep(0.1)
        assert ctrl.live
        began = time.monotonic()
        await ctrl.cleanup(timeout=1.5)
        took = time.monotonic() - began
        assert took < 3.0
        assert forced == [True]  # the hanging undo was forced
        assert not registry.live()
        assert ctrl.state in ("cancelled", "failed")
    finally:
        backend.released = True
        task.cancel()
        await asyncio.wait([task], timeout=2)


async def test_relaunch_with_a_fix_records_parent_and_fix():
    spec = make_spec()
    backend = ScriptedBackend(lambda run: oom_script() if run.spec.parent is None else [Finished("succeeded")])
    ctrl = _controller(backend, spec)
    await ctrl.start()
    fix = next(f for f in ctrl.alerts[0].fixes if f.label == "Reduce context")
    child = await ctrl.relaunch(fix)
    assert child.id == f"{spec.experiment_id}-fix"
    assert child.spec.parent == spec.experiment_id
    assert child.spec.engine.max_model_len == spec.engine.max_model_len // 2
    assert child.spec.source("engine.max_model_len") == "recovery fix"
    meta = json.loads((child.run.store.path / "meta.json").read_text())
    assert meta["parent"] == spec.experiment_id
    assert meta["fix"]["label"] == "Reduce context"
    assert meta["fix"]["changes"] == {"engine.max_model_len": spec.engine.max_model_len // 2}
    old_meta = json.loads((ctrl.run.store.path / "meta.json").read_text())
    assert old_meta["relaunched_as"] == child.id
    await child.start()
    assert child.state == "succeeded"
    # a second relaunch of the same parent gets the next free id
    again = await ctrl.relaunch(Fix("Reduce batch", {"engine.max_num_seqs": 8}))
    assert again.id == f"{spec.experiment_id}-fix-2"
    await again.cleanup(1.0)


async def test_relaunch_with_a_custom_spec():
    from config.catalog import load_catalogs
    from config.quick import apply_quick

    spec = make_spec()
    ctrl = _controller(
        ScriptedBackend(lambda run: [Finished("failed")] if run.spec.parent is None else [Finished("succeeded")]), spec
    )
    await ctrl.start()
    custom = apply_quick(spec, "max_model_len=1024", load_catalogs())
    child = await ctrl.relaunch(custom)
    assert child.spec.engine.max_model_len == 1024
    assert child.spec.parent == spec.experiment_id and child.id != spec.experiment_id
    meta = json.loads((child.run.store.path / "meta.json").read_text())
    assert meta["fix"]["changes"] == {"engine.max_model_len": 1024}
    await child.cleanup(1.0)


async def test_attach_replays_a_finished_run_read_only():
    ctrl = _controller(ScriptedBackend(running_script() + [Finished("succeeded", "ok")]))
    await ctrl.start()
    record = RunStore().get(ctrl.id)
    replay = RunController(ScriptedBackend([]), store=RunStore(), record=record, registry=CleanupRegistry())
    assert replay.spec is not None and replay.spec.experiment_id == ctrl.id
    batches = []
    replay.subscribe(batches.append, replay=False)
    await replay.attach()
    assert replay.read_only and not replay.live
    assert replay.state == "succeeded"
    assert len(replay.logs) == 40
    assert replay.endpoint is not None and replay.endpoint.url == "http://127.0.0.1:8000"
    assert replay.phases["workload"].state == "running"
    assert batches and batches[-1].state == "succeeded"


async def _stop_through_the_socket(run_id: str) -> dict:
    """Stop a detached run the way a second client would (its supervisor serves control.sock)."""
    from backends.supervisor import connect

    link = await connect(RunStore().open(run_id))
    assert await link.cancel()
    return await asyncio.wait_for(link.result(), 5)


async def test_detach_keeps_the_run_and_marks_it_detached():
    gate = Gate()
    backend = ScriptedBackend(running_script(gate))
    registry = CleanupRegistry()
    ctrl = RunController(backend, make_spec(), store=RunStore(), registry=registry)
    undone = []
    task = asyncio.ensure_future(ctrl.start())
    await asyncio.wait_for(gate.reached.wait(), 5)
    registry.register("server", lambda: undone.append("server"))
    assert "sweepdeck attach" in await ctrl.detach()
    await asyncio.wait_for(task, 5)
    assert ctrl.state == "detached" and not ctrl.live
    await asyncio.sleep(0.2)  # the client is gone: a run that was not detached would be stopped now
    assert backend.cleaned == [] and backend.cancelled == []
    assert undone == []
    assert json.loads((ctrl.run.store.path / "meta.json").read_text())["state"] == "detached"
    result = await _stop_through_the_socket(ctrl.id)
    assert result["outcome"] == "cancelled" and undone == ["server"] and backend.cleaned == [ctrl.id]


async def test_the_last_client_gone_stops_the_run_within_the_bound():
    gate = Gate()
    backend = ScriptedBackend(running_script(gate))
    registry = CleanupRegistry()
    ctrl = RunController(backend, make_spec(), store=RunStore(), registry=registry)
    undone = []
    task = asyncio.ensure_future(ctrl.start())
    await asyncio.wait_for(gate.reached.wait(), 5)
    registry.register("server", lambda: undone.append("server"))
    began = time.monotonic()
    ctrl.link.close()  # as if the client died: no cancel, no detach, just gone
    await asyncio.wait_for(task, 5)
    while RunStore().get(ctrl.id).state == "running" and time.monotonic() - began < 5:
        await asyncio.sleep(0.02)
    assert RunStore().get(ctrl.id).state == "cancelled"
    assert time.monotonic() - began < 5.0
    assert undone == ["server"] and backend.cleaned == [ctrl.id]


async def test_a_subscriber_joining_mid_batch_gets_each_line_once():
    gate = Gate()
    ctrl = _controller(ScriptedBackend([log_lines(40), gate]))
    ctrl.flush_interval = 60.0  # the lines stay queued until the subscriber joins
    task = asyncio.ensure_future(ctrl.start())
    await asyncio.wait_for(gate.reached.wait(), 5)
    while len(ctrl._pending.lines) < 40:  # through the supervisor's event log and socket
        await asyncio.sleep(0.005)
    got = []
    ctrl.subscribe(lambda b: got.extend(b.lines))
    ctrl.flush()
    assert len(got) == 40 and len({line.text for line in got}) == 40
    await ctrl.cleanup(2.0)
    await asyncio.wait([task], timeout=2)


async def test_attach_to_a_detached_run_gets_its_state_then_follows():
    """A second client of a detached run gets a snapshot (lines, endpoint, phases), then the live events."""
    gate = Gate()
    backend = ScriptedBackend(running_script(gate) + [LogLine("after reattach"), Finished("succeeded", "done")])
    registry = CleanupRegistry()
    ctrl = RunController(backend, make_spec(), store=RunStore(), registry=registry)
    task = asyncio.ensure_future(ctrl.start())
    await asyncio.wait_for(gate.reached.wait(), 5)
    await ctrl.detach()
    await asyncio.wait_for(task, 5)
    record = RunStore().get(ctrl.id)
    assert record.state == "detached" and record.live
    again = RunController(backend, store=RunStore(), record=record, registry=registry)
    attaching = asyncio.ensure_future(again.attach())
    while len(again.logs) + len(again._pending.lines) < 40:
        await asyncio.sleep(0.02)
    assert again.live and again.state == "running"  # followed again; still detached in the store
    assert RunStore().get(ctrl.id).state == "detached"
    gate.open()
    await asyncio.wait_for(attaching, 5)
    texts = [ln.text for ln in again.logs]
    assert len(texts) == 41 and texts[-1] == "after reattach"  # the 40 of the snapshot, then the live one
    assert again.endpoint is not None  # from the snapshot
    assert again.state == "succeeded" and not again.read_only
    assert RunStore().get(ctrl.id).state == "succeeded"
    assert len(backend.launched) == 1  # the same run, not a new one


def test_queued_lines_stay_bounded_without_a_loop():
    # no running loop: nothing is delivered until flush(), yet memory stays bounded
    ctrl = RunController(ScriptedBackend([]), make_spec(), store=RunStore(), registry=CleanupRegistry(),
                         log_line_cap=1000)
    ctrl._schedule = lambda: None  # as if the timer never got to run
    for ln in log_lines(10_000):
        ctrl.on_event(ln)
    assert len(ctrl._pending.lines) <= 2000
    got = []
    ctrl.subscribe(got.append)
    assert ctrl.log_total == 10_000 and len(ctrl.logs) == 1000
    assert got[0].dropped == 9000 and got[0].lines[-1].text.startswith("line 009999")
