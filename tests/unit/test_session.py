"""The lifecycle driver with a fake in-test backend (no processes, no network)."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from backends import diagnosis as dg
from backends import session as session_mod
from backends.base import Check, Run
from backends.cleanup import CleanupRegistry
from backends.events import Alert, Finished, Fix, LogLine, Notice, Phase, Progress
from backends.session import PreflightFailed, Session, apply_fix, check_preflight
from backends.store import RunStore
from backends.supervisor.drive import drive
from config.catalog import load_catalogs
from config.errors import SweepdeckError
from config.spec import Source, build_spec

OOM = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB."
DEAD = "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue."


class FakeBackend:
    """Yields a scripted list of events; records every call."""

    name = "local"

    def __init__(self, script=(), checks=None, registry=None, hang=False, ignore_cancel=False, launch_error=None):
        self.script = list(script)
        self.checks = checks if checks is not None else [Check("ok", "pass")]
        self.registry = registry
        self.hang = hang
        self.ignore_cancel = ignore_cancel
        self.launch_error = launch_error
        self.calls: list[str] = []
        self.undone: list[str] = []
        self.cancel_modes: list[bool] = []
        self._cancel = asyncio.Event()

    async def preflight(self, spec):
        self.calls.append("preflight")
        return self.checks

    async def launch(self, spec, store=None):
        self.calls.append("launch")
        if self.registry is not None:
            self.registry.register("fake job", lambda: self.undone.append("job"))
            self.registry.register("fake tunnel", lambda: self.undone.append("tunnel"))
        if self.launch_error:
            raise self.launch_error
        return Run(spec.experiment_id, self.name, spec, store, handle={"job_id": 42, "host": "h"})

    async def events(self, run):
        for event in self.script:
            yield event
            await asyncio.sleep(0)
        if self.hang:
            if self.ignore_cancel:
                await asyncio.Event().wait()
            await self._cancel.wait()
            yield Finished("cancelled", "the job was cancelled.")

    async def cancel(self, run, *, graceful=True):
        self.calls.append("cancel")
        self.cancel_modes.append(graceful)
        self._cancel.set()

    async def cleanup(self, run):
        self.calls.append("cleanup")

    async def attach(self, saved):  # pragma: no cover - not used here
        raise NotImplementedError


@pytest.fixture
def spec():
    return build_spec(load_catalogs(), "llama2-7b", workload="chatbot", tp=2, experiment_id="exp-1")


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "state")


@pytest.fixture
def registry():
    return CleanupRegistry()


def saved_events(store, run_id):
    """The saved events as dicts (a LogBatch record counts as its lines)."""
    from backends.events import to_dict

    return [to_dict(e) for e in store.open(run_id).events()]


async def test_success_path_saves_events_and_meta(spec, store, registry):
    script = [
        Phase("job 42", "RUNNING", kind="job"),
        LogLine("INFO: Application startup complete."),
        Progress(total=2, completed=2),
        Finished("succeeded", "2 requests", summary={"completed": 2}),
    ]
    backend = FakeBackend(script, registry=registry)
    seen = []
    result = await drive(backend, spec, store=store, on_event=seen.append, assume_yes=True, install_signals=False,
                         registry=registry)
    assert result.outcome == "succeeded" and result.exit_code == 0
    assert backend.calls == ["preflight", "launch", "cleanup"]
    assert sorted(backend.undone) == ["job", "tunnel"]  # the registry ran once
    assert not registry.live()
    assert isinstance(seen[0], Notice) and "Launched exp-1" in seen[0].message
    assert [type(e).__name__ for e in seen[1:]] == ["Phase", "LogLine", "Progress", "Finished"]
    types = [e["type"] for e in saved_events(store, "exp-1")]
    assert types == ["Notice", "Phase", "LogLine", "Progress", "Finished"]
    meta = store.get("exp-1").meta
    assert meta["state"] == "succeeded" and meta["summary"] == {"completed": 2} and meta["finished"]
    session = store.get("exp-1").handle_values()
    assert session["JOB_ID"] == "42" and session["BACKEND"] == "local"
    assert oct(os.stat(store.root / "exp-1" / "handle").st_mode & 0o777) == "0o600"


async def test_one_alert_per_distinct_diagnosis_with_fixes(spec, store, registry):
    script = [LogLine("INFO loading"), LogLine(OOM, "err"), LogLine(OOM, "err"), LogLine(DEAD, "err"),
              Finished("failed", "")]
    seen = []
    result = await drive(FakeBackend(script), spec, store=store, on_event=seen.append, assume_yes=True,
                         install_signals=False, registry=registry)
    alerts = [e for e in seen if isinstance(e, Alert)]
    assert [a.diagnosis for a in alerts] == [dg.CUDA_OOM]  # engine death is an echo of the OOM
    assert alerts[0].fixes[0].changes == {"engine.tp": 4}
    assert result.outcome == "failed" and result.exit_code == 1
    assert result.message.startswith("CUDA out of memory")  # empty backend message takes the diagnosis
    assert store.get("exp-1").meta["diagnoses"] == [dg.CUDA_OOM]
    # the alert comes right after the line that triggered it
    kinds = [type(e).__name__ for e in seen]
    assert kinds[kinds.index("Alert") - 1] == "LogLine"


async def test_secondary_diagnosis_reported_when_alone(spec, store, registry):
    script = [LogLine(DEAD, "err"), Finished("failed", "server exited")]
    seen = []
    await drive(FakeBackend(script), spec, store=store, on_event=seen.append, assume_yes=True, install_signals=False,
                registry=registry)
    alerts = [e for e in seen if isinstance(e, Alert)]
    assert [a.diagnosis for a in alerts] == [dg.ENGINE_DEAD]
    assert [type(e).__name__ for e in seen][-2:] == ["Alert", "Finished"]


async def test_backend_alert_is_not_repeated(spec, store, registry):
    own = dg.alert_for(dg.diagnose_line(OOM), spec)
    script = [own, LogLine(OOM, "err"), Finished("failed", "oom")]
    seen = []
    await drive(FakeBackend(script), spec, store=store, on_event=seen.append, assume_yes=True, install_signals=False,
                registry=registry)
    assert len([e for e in seen if isinstance(e, Alert)]) == 1


async def test_failing_preflight_creates_nothing(spec, store, registry):
    backend = FakeBackend(checks=[Check("Port 8000 free", "fail", "in use by pid 7", "use --port 8001"),
                                  Check("Model", "pass")])
    with pytest.raises(PreflightFailed) as err:
        await drive(backend, spec, store=store, assume_yes=True, install_signals=False, registry=registry)
    assert "Port 8000 free: in use by pid 7" in err.value.message and "--port 8001" in err.value.hint
    assert backend.calls == ["preflight"]
    assert not store.exists("exp-1")


async def test_warnings_need_acceptance(spec, store, registry):
    checks = [Check("Tensor parallel", "warn", "TP=2 on local")]
    with pytest.raises(PreflightFailed, match="need your confirmation"):
        await drive(FakeBackend(checks=checks), spec, store=store, install_signals=False, registry=registry)
    asked = []

    def no(c):
        asked.append(c)
        return False

    with pytest.raises(SweepdeckError, match="Not started"):
        await drive(FakeBackend(checks=checks), spec, store=store, confirm=no, install_signals=False, registry=registry)
    assert asked and not store.exists("exp-1")
    result = await drive(
        FakeBackend([Finished("succeeded")], checks=checks), spec, store=store, confirm=lambda c: True,
        install_signals=False, registry=registry,
    )
    assert result.outcome == "succeeded"


def test_check_preflight_lists_every_failure():
    checks = [Check("a", "fail", "x", "fix a"), Check("b", "fail", "y", "fix b"), Check("c", "warn")]
    with pytest.raises(PreflightFailed) as err:
        check_preflight(checks, allow_warnings=True)
    assert "2 blocking" in err.value.message and "a: x" in err.value.message and "b: y" in err.value.message
    check_preflight([Check("c", "warn")], allow_warnings=True)


async def test_experiment_id_collision(spec, store, registry):
    store.create(spec)
    backend = FakeBackend([Finished("succeeded")])
    with pytest.raises(SweepdeckError, match="already used") as err:
        await drive(backend, spec, store=store, assume_yes=True, install_signals=False, registry=registry)
    assert "exp-1-2" in err.value.hint
    assert "launch" not in backend.calls


async def test_launch_error_cleans_up_and_records(spec, store, registry):
    backend = FakeBackend(registry=registry, launch_error=SweepdeckError("sbatch refused the job"))
    with pytest.raises(SweepdeckError, match="sbatch refused"):
        await drive(backend, spec, store=store, assume_yes=True, install_signals=False, registry=registry)
    assert sorted(backend.undone) == ["job", "tunnel"]
    meta = store.get("exp-1").meta
    assert meta["state"] == "failed" and "sbatch refused" in meta["message"]


async def test_cancel_runs_cleanup_once(spec, store, registry):
    backend = FakeBackend([LogLine("working")], registry=registry, hang=True)
    session = Session(backend, spec, store=store, registry=registry)
    await session.launch()
    task = asyncio.create_task(session.follow())
    await asyncio.sleep(0.05)
    session.request_cancel("cancelled by the user")
    session.request_cancel("again")  # idempotent
    result = await asyncio.wait_for(task, 5)
    assert result.outcome == "cancelled" and result.exit_code == 1
    assert "Cancelled by the user" in result.message
    assert backend.calls.count("cancel") == 1 and backend.calls.count("cleanup") == 1
    assert sorted(backend.undone) == ["job", "tunnel"]
    assert store.get("exp-1").state == "cancelled"


async def test_a_harder_second_cancel_stops_at_once(spec, store, registry):
    """Graceful first; a second request with graceful=False reaches the backend once; more change nothing."""
    backend = FakeBackend([LogLine("working")], registry=registry, hang=True, ignore_cancel=True)
    session = Session(backend, spec, store=store, registry=registry)
    await session.launch()
    task = asyncio.create_task(session.follow())
    await asyncio.sleep(0.05)
    session.request_cancel("stopped by SIGINT")
    await asyncio.sleep(0.05)
    session.request_cancel("stopped by SIGINT", graceful=False)
    session.request_cancel("stopped by SIGINT", graceful=False)  # a third: nothing more to escalate
    result = await asyncio.wait_for(task, 10)
    assert result.outcome == "cancelled"
    assert backend.cancel_modes == [True, False]
    assert sorted(backend.undone) == ["job", "tunnel"]


async def test_second_signal_escalates_and_the_first_says_how(spec, store, registry):
    backend = FakeBackend([LogLine("working")], registry=registry, hang=True, ignore_cancel=True)
    seen = []
    loop = asyncio.get_running_loop()
    loop.call_later(0.1, os.kill, os.getpid(), signal.SIGINT)
    loop.call_later(0.3, os.kill, os.getpid(), signal.SIGINT)
    result = await asyncio.wait_for(drive(backend, spec, store=store, on_event=seen.append, assume_yes=True,
                                          registry=registry), 10)
    assert result.outcome == "cancelled" and result.signal == signal.SIGINT
    assert backend.cancel_modes == [True, False]
    notices = [e.message for e in seen if isinstance(e, Notice)]
    assert any("again: stop at once" in m for m in notices), notices


async def test_backend_ignoring_cancel_is_abandoned(spec, store, registry, monkeypatch):
    monkeypatch.setattr(session_mod, "CANCEL_GRACE", 0.2)
    backend = FakeBackend(registry=registry, hang=True, ignore_cancel=True)
    session = Session(backend, spec, store=store, registry=registry)
    await session.launch()
    task = asyncio.create_task(session.follow())
    await asyncio.sleep(0.05)
    session.request_cancel("stop")
    result = await asyncio.wait_for(task, 5)
    assert result.outcome == "cancelled"
    assert sorted(backend.undone) == ["job", "tunnel"]


async def test_signal_cancels_cleans_and_exits_nonzero(spec, store, registry):
    backend = FakeBackend([LogLine("working")], registry=registry, hang=True)
    loop = asyncio.get_running_loop()
    loop.call_later(0.1, os.kill, os.getpid(), signal.SIGTERM)
    result = await asyncio.wait_for(drive(backend, spec, store=store, assume_yes=True, registry=registry), 5)
    assert result.outcome == "cancelled" and result.signal == signal.SIGTERM
    assert result.exit_code == 128 + signal.SIGTERM
    assert "SIGTERM" in result.message
    assert sorted(backend.undone) == ["job", "tunnel"]
    # the loop's handlers were removed again
    assert loop.remove_signal_handler(signal.SIGTERM) is False
    assert loop.remove_signal_handler(signal.SIGHUP) is False


async def test_signal_detaches_when_asked(spec, store, registry):
    """With detach_on_signal a SIGHUP detaches: the client returns, the run goes on in its supervisor."""
    backend = FakeBackend([LogLine("working")], registry=registry, hang=True)
    loop = asyncio.get_running_loop()
    loop.call_later(0.1, os.kill, os.getpid(), signal.SIGHUP)
    result = await asyncio.wait_for(
        drive(backend, spec, store=store, assume_yes=True, registry=registry, detach_on_signal=True), 5
    )
    assert result.outcome == "detached" and result.exit_code == 0
    assert "sweepdeck attach exp-1" in result.message
    assert backend.undone == [] and "cancel" not in backend.calls  # nothing was stopped
    assert store.get("exp-1").state == "detached"
    # the run is still held by its supervisor: stop it, and its cleanup runs
    from backends.supervisor import connect

    link = await connect(store.open("exp-1"))
    assert await link.cancel()
    outcome = await asyncio.wait_for(link.result(), 5)
    assert outcome["outcome"] == "cancelled" and sorted(backend.undone) == ["job", "tunnel"]


async def test_stream_ending_without_finished_is_a_failure(spec, store, registry):
    result = await drive(FakeBackend([LogLine("x")]), spec, store=store, assume_yes=True, install_signals=False,
                         registry=registry)
    assert result.outcome == "failed" and "without a result" in result.message


def test_apply_fix_records_source_and_parent(spec, store):
    fix = Fix("Increase TP", {"engine.tp": 4}, "TP=2 -> TP=4")
    new = apply_fix(spec, fix, store)
    assert new.engine.tp == 4 and new.source("engine.tp") == Source.FIX
    assert new.parent == "exp-1" and new.experiment_id == "exp-1-fix"
    # the change still diffs against the catalog value, as every user change does
    assert any(c.field == "engine.tp" and c.base == 1 and c.value == 4 and c.source == Source.FIX
               for c in new.changes())
    store.create(new)
    again = apply_fix(new, Fix("Reduce batch", {"engine.max_num_seqs": 128}), store)
    assert again.experiment_id == "exp-1-fix-2" and again.parent == "exp-1-fix"
    assert again.engine.tp == 4 and again.engine.max_num_seqs == 128
    with pytest.raises(SweepdeckError, match="no automatic change"):
        apply_fix(spec, Fix("Check the model"), store)


async def test_see_root_cause_above_reports_the_root_cause(spec, store, registry):
    cause = "ValueError: The model type 'gemma2' does not support float16. Reason: Numerical instability."
    script = [
        LogLine("(EngineCore_DP0 pid=9) ERROR 11-23 19:44:58 [core.py:708] " + cause, "err"),
        LogLine("(APIServer pid=1) RuntimeError: Engine core initialization failed. See root cause above. "
                "Failed core proc(s): {}", "err"),
        Finished("failed", ""),
    ]
    seen = []
    await drive(FakeBackend(script), spec, store=store, on_event=seen.append, assume_yes=True, install_signals=False,
                registry=registry)
    (alert,) = [e for e in seen if isinstance(e, Alert)]
    assert alert.diagnosis == dg.ENGINE_DEAD
    assert alert.evidence == cause  # what the user sees is the root cause, not "see root cause above"
    assert alert.message.startswith("vLLM engine failed to start: Root cause (line 1): ValueError")


async def test_an_undo_that_times_out_stays_a_leftover(spec, store):
    """scancel timing out must not leave a record that says "cancelled, nothing left": the job may run on."""
    registry = CleanupRegistry()
    backend = FakeBackend([LogLine("working")], registry=registry, hang=True)
    session = Session(backend, spec, store=store, registry=registry, cleanup_timeout=0.5)
    await session.launch()

    async def never() -> None:
        await asyncio.Event().wait()

    registry.register("scancel 52", never, resource={"kind": "slurm_job", "id": "52", "host": "alvis"})
    registry.register("tunnel 8000", lambda: None, force=lambda: None, resource={"kind": "pid", "pid": 1})
    task = asyncio.create_task(session.follow())
    await asyncio.sleep(0.05)
    session.request_cancel("cancelled by the user")
    result = await asyncio.wait_for(task, 5)
    assert result.outcome == "cancelled"
    meta = store.get("exp-1").meta
    assert meta["state"] == "cancelled"
    assert [(r["kind"], r["id"], r["error"]) for r in meta["leftovers"]] == [("slurm_job", "52", "timed out")]
    assert registry.unresolved() == meta["leftovers"] and registry.resources() == meta["leftovers"]


async def test_a_failed_undo_with_a_working_force_is_resolved():
    registry = CleanupRegistry()
    forced = []

    def fail() -> None:
        raise OSError("no such process group")

    registry.register("server 4242", fail, force=lambda: forced.append(1), resource={"kind": "pid", "pid": 4242})
    registry.register("job 7", fail, resource={"kind": "slurm_job", "id": "7"})
    outcomes = await registry.run(1.0)
    assert [o.ok for o in outcomes] == [False, False] and forced == [1]
    assert [r["id"] for r in registry.unresolved()] == ["7"] and not registry.live()


async def test_a_cleanup_cancelled_mid_undo_forces_what_it_will_not_wait_for():
    """An owner stopping hard cancels its cleanup: the undo it was waiting on, and those after it, get their
    force now; what has none stays on record (before, they were dropped from the registry unforced)."""
    registry = CleanupRegistry()
    forced = []
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    registry.register("job 9", lambda: None, resource={"kind": "slurm_job", "id": "9"})  # runs last: no force
    registry.register("tunnel", lambda: None, force=lambda: forced.append("tunnel"))
    registry.register("server", hang, force=lambda: forced.append("server"), resource={"kind": "pid", "pid": 5})
    task = asyncio.create_task(registry.run(60))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    await asyncio.wait([task], timeout=5)
    assert task.cancelled()
    assert forced == ["server", "tunnel"]
    assert [(r["id"], r["error"]) for r in registry.unresolved()] == [("9", "abandoned: the cleanup was cancelled")]
    assert not registry.live()


def test_handle_file_is_written_as_handle_and_an_older_session_file_is_still_read(tmp_path):
    from backends.store import RunDir

    run_dir = RunDir(tmp_path / "new")
    (tmp_path / "new").mkdir()
    run_dir.write_handle({"JOB_ID": "42"})
    assert (tmp_path / "new" / "handle").read_text() == "JOB_ID=42\n" and run_dir.read_handle() == {"JOB_ID": "42"}
    old = tmp_path / "old"
    old.mkdir()
    (old / "session").write_text("JOB_ID=7\nNODE=alvis7-07\n")  # a run directory from before the rename
    assert RunDir(old).read_handle() == {"JOB_ID": "7", "NODE": "alvis7-07"}
    assert RunDir(tmp_path / "none").read_handle() == {}


EARLY_INT = """
import asyncio, os, signal, sys
from pathlib import Path
from backends.cleanup import CleanupRegistry
from backends.events import Finished, LogLine
from backends.store import RunStore
from backends.supervisor.drive import drive
from config.catalog import load_catalogs
from config.spec import build_spec
from tests.unit.test_session import FakeBackend


class SwallowsTheCancel(FakeBackend):
    async def preflight(self, spec):
        self.calls.append("preflight")
        asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signal.SIGINT)
        try:
            await asyncio.sleep(2)
        except asyncio.CancelledError:
            pass  # as Python 3.11's wait_for can when its inner future finishes at the same moment
        return self.checks


async def main():
    spec = build_spec(load_catalogs(), "llama2-7b", workload="chatbot", experiment_id="exp-1")
    backend = SwallowsTheCancel([LogLine("working"), Finished("succeeded", "done")], registry=CleanupRegistry())
    try:
        await drive(backend, spec, store=RunStore(Path(sys.argv[1])), assume_yes=True, registry=backend.registry)
    finally:
        print("calls", backend.calls, flush=True)

try:
    asyncio.run(main())  # the real runner: its SIGINT handler cancels the main task
except KeyboardInterrupt:
    sys.exit(130)
print("the run went on")
"""


def test_ctrl_c_during_preflight_stops_there_even_when_the_cancel_is_swallowed(tmp_path):
    """Issue 11: a Ctrl+C in the first moments of ``sweepdeck run`` was once ignored and the run went on.

    In pre-flight the SIGINT was asyncio.run's: it cancels the main task, and an await that swallows
    the cancellation lost it. Now it is also remembered and raised after pre-flight (a real process:
    a SIGINT to the test process itself would stop pytest if the handling ever broke).
    """
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    state = tmp_path / "state"
    proc = subprocess.run([sys.executable, "-c", EARLY_INT, str(state)], cwd=root, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 130, proc.stdout + proc.stderr
    assert "calls ['preflight']" in proc.stdout and "the run went on" not in proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    assert not RunStore(state).exists("exp-1")
