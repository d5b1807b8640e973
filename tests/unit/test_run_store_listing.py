"""Listing the run store: the index of metas, and the watcher that keeps a listing current cheaply."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import backends.store as store_mod
from backends.store import INDEX_NAME, RunRecord, RunStore, RunWatcher


def write_run(root: Path, run_id: str, *, state: str = "succeeded", started: float = 1000.0, **extra) -> Path:
    path = root / "runs" / run_id
    path.mkdir(parents=True, exist_ok=True)
    (path / "meta.json").write_text(json.dumps({"id": run_id, "backend": "local", "state": state,
                                                "started": started, **extra}))
    return path


def touch_meta(path: Path, **changes) -> None:
    """Rewrite a run's meta (a new mtime, as a writer's atomic replace gives it)."""
    meta = json.loads((path / "meta.json").read_text())
    meta.update(changes)
    (path / "meta.json").write_text(json.dumps(meta))
    st = os.stat(path / "meta.json")
    os.utime(path / "meta.json", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # coarse clocks


class Counting:
    """Counts the metas read and the stats taken by the store module."""

    def __init__(self, monkeypatch) -> None:
        self.reads: list[str] = []
        self.stats = 0
        read, key = store_mod.read_meta, store_mod.meta_key

        def read_meta(path: str):
            self.reads.append(os.path.basename(path))
            return read(path)

        def meta_key(path: str):
            self.stats += 1
            return key(path)

        monkeypatch.setattr(store_mod, "read_meta", read_meta)
        monkeypatch.setattr(store_mod, "meta_key", meta_key)

    def reset(self) -> None:
        self.reads.clear()
        self.stats = 0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "state"


def test_list_is_newest_first_and_reads_a_meta_only_when_it_changed(root, monkeypatch):
    for i in range(20):
        write_run(root, f"run-{i:02d}", started=1000.0 + i)
    store = RunStore(root)
    count = Counting(monkeypatch)
    records = store.list()
    assert [r.id for r in records] == [f"run-{i:02d}" for i in reversed(range(20))]
    assert len(count.reads) == 20 and (root / "runs" / INDEX_NAME).exists()
    count.reset()
    assert [r.meta for r in store.list()] == [r.meta for r in records]
    assert count.reads == []  # the index had every meta
    touch_meta(root / "runs" / "run-07", state="lost")
    count.reset()
    again = {r.id: r for r in store.list()}
    assert count.reads == ["run-07"] and again["run-07"].state == "lost"


def test_a_record_is_compared_by_value_and_makes_its_path_when_asked(root):
    path = write_run(root, "run-a")
    record = RunRecord("run-a", str(path), {"state": "failed"})
    assert record.location == str(path) and record.path == path and isinstance(record.path, Path)
    assert record == RunRecord("run-a", path, {"state": "failed"})
    assert record != RunRecord("run-a", path, {"state": "lost"})
    assert not record.live and RunRecord("x", path, {"state": "running"}).live


def test_a_run_without_a_start_time_is_listed_last(root):
    write_run(root, "run-a", started=5.0)
    write_run(root, "run-b", started=None)
    write_run(root, "run-c", started="yesterday")  # hand-edited: not a number
    assert [r.id for r in RunStore(root).list()][0] == "run-a"


def test_the_watcher_reads_nothing_and_stats_a_slice_when_nothing_changed(root, monkeypatch):
    for i in range(1000):
        write_run(root, f"run-{i:04d}", started=float(i))
    write_run(root, "run-live", state="running", started=5000.0)
    clock = Clock()
    watcher = RunWatcher(RunStore(root), sweep_seconds=10.0, clock=clock)
    assert watcher.refresh() and len(watcher.records()) == 1001
    version = watcher.version
    count = Counting(monkeypatch)
    clock.now += 1.0  # a refresh a second: a tenth of the runs, and the live one
    assert not watcher.refresh()
    assert count.reads == [] and count.stats <= 101 + 1
    assert watcher.version == version


def test_the_watcher_picks_up_a_new_run_a_removed_run_and_a_live_runs_change_at_once(root):
    write_run(root, "run-old", started=1.0)
    live = write_run(root, "run-live", state="running", started=2.0)
    clock = Clock()
    watcher = RunWatcher(RunStore(root), sweep_seconds=1e9, clock=clock)  # no sweep: only what changed is seen
    watcher.refresh()
    write_run(root, "run-new", started=3.0)
    clock.now += 1
    assert watcher.refresh()
    assert [r.id for r in watcher.records()] == ["run-new", "run-live", "run-old"]
    touch_meta(live, state="succeeded", finished=9.0)
    clock.now += 1
    assert watcher.refresh() and watcher.get("run-live").state == "succeeded"
    import shutil

    shutil.rmtree(root / "runs" / "run-old")
    clock.now += 1
    assert watcher.refresh() and [r.id for r in watcher.records()] == ["run-new", "run-live"]


def test_a_finished_runs_change_is_seen_within_one_sweep(root):
    paths = [write_run(root, f"run-{i:03d}", started=float(i)) for i in range(100)]
    clock = Clock()
    watcher = RunWatcher(RunStore(root), sweep_seconds=10.0, clock=clock)
    watcher.refresh()
    touch_meta(paths[42], leftovers=[], relaunched_as="run-fix")  # no run added: the runs dir is unchanged
    seen_after = None
    for second in range(1, 12):
        clock.now += 1.0
        watcher.refresh()
        if watcher.get("run-042").meta.get("relaunched_as") == "run-fix":
            seen_after = second
            break
    assert seen_after is not None and seen_after <= 10


def test_a_run_dir_made_before_its_meta_is_watched_until_the_meta_comes(root):
    clock = Clock()
    watcher = RunWatcher(RunStore(root), clock=clock)
    (root / "runs").mkdir(parents=True)
    watcher.refresh()
    (root / "runs" / "run-half").mkdir()  # RunStore.create: the dir first, then spec and meta
    clock.now += 1
    watcher.refresh()
    assert watcher.get("run-half").meta == {}
    write_run(root, "run-half", state="created")
    clock.now += 0.01
    assert watcher.refresh() and watcher.get("run-half").state == "created"


def test_settle_sees_new_changed_and_live_runs_and_its_answer_replaces_theirs(root):
    write_run(root, "run-done", started=1.0)
    write_run(root, "run-gone-sup", state="running", started=2.0)
    settled: list[list[str]] = []

    def settle(records: list[RunRecord]) -> list[RunRecord]:
        settled.append(sorted(r.id for r in records))
        return [RunRecord(r.id, r.location, {**r.meta, "state": "lost"}) if r.state == "running" else r
                for r in records]

    clock = Clock()
    watcher = RunWatcher(RunStore(root), settle=settle, clock=clock)
    watcher.refresh()
    assert settled[0] == ["run-gone-sup"]  # only the live-looking run (and any with leftovers) is settled
    assert watcher.get("run-gone-sup").state == "lost" and not watcher.get("run-gone-sup").live
    settled.clear()
    write_run(root, "run-new", state="running", started=3.0)
    clock.now += 1
    watcher.refresh()
    assert ["run-new"] in settled and watcher.get("run-new").state == "lost"


def test_the_watcher_survives_a_missing_state_dir(root):
    watcher = RunWatcher(RunStore(root))
    assert not watcher.refresh() and watcher.records() == []
    write_run(root, "run-a")
    assert watcher.refresh(full=True) and [r.id for r in watcher.records()] == ["run-a"]
