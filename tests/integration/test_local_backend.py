"""The local backend against the real simulator process (no GPU, no network beyond loopback)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import time

import pytest

from backends import diagnosis as dg
from backends.cleanup import CleanupRegistry
from backends.events import Alert, Endpoint, Finished, LogLine, Metrics, Phase, Progress
from backends.local import LocalBackend, port_holder
from backends.session import Session
from backends.store import RunStore
from backends.supervisor.drive import drive
from config.errors import SweepdeckError
from config.settings import Profile, load_settings
from config.spec import build_spec
from tests.support.procstate import gone

FAST = ["--speed", "0", "--startup-delay", "0.05"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



def group_gone(pgid: int) -> bool:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
                return False
    return True


@pytest.fixture
def settings():
    return load_settings()


@pytest.fixture
def registry():
    return CleanupRegistry()


def make_backend(settings, registry, sim_args=(), **options):
    opts = {**settings.local.options, "port": free_port(), **options}
    return LocalBackend(settings, Profile("local", "local", opts), sim_args=list(sim_args), registry=registry)


def spec_for(settings, requests=8, **kw):
    spec = build_spec(settings.catalogs, "qwen-1.5b", workload="chatbot",
                      experiment_id=kw.pop("experiment_id", "loc-1"), **kw)
    spec = spec.set("workload.max_requests", requests)
    return spec.set("workload.rate", 200)


async def run_to_end(backend, spec, registry, store=None):
    seen = []
    result = await asyncio.wait_for(
        drive(backend, spec, store=store or RunStore(), on_event=seen.append, assume_yes=True, install_signals=False,
              registry=registry),
        60,
    )
    return result, seen


async def test_full_run_streams_logs_runs_workload_and_stops_server(settings, registry):
    backend = make_backend(settings, registry, FAST)
    result, seen = await run_to_end(backend, spec_for(settings), registry)
    assert result.outcome == "succeeded", result.message
    kinds = {type(e) for e in seen}
    assert {Phase, LogLine, Endpoint, Progress, Metrics, Finished} <= kinds
    texts = [e.text for e in seen if isinstance(e, LogLine)]
    assert any("Application startup complete" in t for t in texts)
    assert any(e.stream == "out" for e in seen if isinstance(e, LogLine))
    endpoint = next(e for e in seen if isinstance(e, Endpoint))
    assert endpoint.url == f"http://127.0.0.1:{backend.port}" and endpoint.reachable
    # readiness comes before the workload's first progress
    assert seen.index(endpoint) < next(i for i, e in enumerate(seen) if isinstance(e, Progress))
    fin = result.finished
    assert fin.summary["completed"] == 8 and fin.summary["failed"] == 0
    assert os.path.exists(fin.results)
    pid = int(result.run.handle["pid"])
    assert gone(pid) and group_gone(pid)
    assert not registry.live()
    assert (result.run.store.path / "rendered" / "server-command.txt").read_text().startswith(os.sys.executable)


async def test_oom_at_startup_is_diagnosed_with_fixes(settings, registry):
    backend = make_backend(settings, registry, FAST + ["--fail", "oom"])
    result, seen = await run_to_end(backend, spec_for(settings), registry)
    assert result.outcome == "failed"
    assert result.message.startswith("CUDA out of memory") and "during startup" in result.message
    alerts = [e for e in seen if isinstance(e, Alert)]
    assert [a.diagnosis for a in alerts] == [dg.CUDA_OOM]
    assert alerts[0].fixes[0].changes == {"engine.tp": 2}
    assert not any(isinstance(e, Endpoint) for e in seen)
    assert gone(int(result.run.handle["pid"]))


async def test_trust_remote_code_fix_cures_the_failure(settings, registry, tmp_path):
    from backends.session import apply_fix

    store = RunStore(tmp_path / "s")
    backend = make_backend(settings, registry, FAST + ["--fail", "trust-remote-code"])
    spec = spec_for(settings, requests=2)
    result, seen = await run_to_end(backend, spec, registry, store)
    assert result.outcome == "failed"
    (alert,) = [e for e in seen if isinstance(e, Alert)]
    assert alert.diagnosis == dg.TRUST_REMOTE_CODE
    fixed = apply_fix(spec, alert.fixes[0], store)
    assert fixed.parent == spec.experiment_id and "--trust-remote-code" in fixed.engine.extra_args
    result2, _ = await run_to_end(make_backend(settings, registry, FAST + ["--fail", "trust-remote-code"]), fixed,
                                  registry, store)
    assert result2.outcome == "succeeded", result2.message
    assert store.get(fixed.experiment_id).meta["parent"] == spec.experiment_id


async def test_server_never_ready_is_stopped(settings, registry):
    backend = make_backend(settings, registry, ["--startup-delay", "30"], ready_timeout=0.6)
    start = time.monotonic()
    result, seen = await run_to_end(backend, spec_for(settings), registry)
    assert time.monotonic() - start < 15
    assert result.outcome == "failed" and "never became ready within 0.6 s" in result.message
    assert [a.diagnosis for a in seen if isinstance(a, Alert)] == [dg.SERVER_NOT_READY]
    assert gone(int(result.run.handle["pid"]))


async def test_engine_crash_during_workload(settings, registry):
    backend = make_backend(settings, registry, FAST + ["--fail", "crash-after=3"])
    result, seen = await run_to_end(backend, spec_for(settings, requests=20), registry)
    assert result.outcome == "failed"
    assert "while the workload ran" in result.message
    assert dg.ENGINE_DEAD in [a.diagnosis for a in seen if isinstance(a, Alert)]
    assert result.finished.summary.get("completed", 0) >= 1  # what was measured is kept
    assert gone(int(result.run.handle["pid"]))


async def test_cancel_during_startup(settings, registry, tmp_path):
    backend = make_backend(settings, registry, ["--startup-delay", "30"])
    session = Session(backend, spec_for(settings), store=RunStore(tmp_path / "s"), registry=registry)
    run = await session.launch()
    task = asyncio.create_task(session.follow())
    await asyncio.sleep(0.3)
    session.request_cancel("cancelled by the user")
    result = await asyncio.wait_for(task, 15)
    assert result.outcome == "cancelled"
    assert gone(int(run.handle["pid"])) and not registry.live()


async def test_preflight_busy_port_names_the_holder(settings, registry):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        backend = make_backend(settings, registry, port=port)
        checks = await backend.preflight(spec_for(settings))
        (check,) = [c for c in checks if c.name.startswith("Port")]
        assert check.status == "fail"
        assert f"pid {os.getpid()}" in check.detail
        nxt = check.data["next_free_port"]
        assert nxt and nxt > port and f"--port {nxt}" in check.fix
        assert port_holder(port)[0] == os.getpid()


async def test_preflight_command_not_found(settings, registry, monkeypatch, tmp_path):
    backend = make_backend(settings, registry, server="command", command=["/nonexistent/bin/vllm-xyz", "serve"])
    (check,) = [c for c in await backend.preflight(spec_for(settings)) if c.name == "Server command"]
    assert check.status == "fail" and "vllm-xyz" in check.detail
    monkeypatch.setenv("PATH", "/nonexistent")
    backend = make_backend(settings, registry, server="vllm")
    (check,) = [c for c in await backend.preflight(spec_for(settings)) if c.name == "Server command"]
    assert check.status == "fail" and "simulator" in check.fix
    # launching anyway gives a clear error and leaves nothing behind
    spec = spec_for(settings, experiment_id="loc-nf")
    with pytest.raises(SweepdeckError, match="not found"):
        await backend.launch(spec, RunStore(tmp_path / "s").create(spec))
    assert not registry.live()


async def test_preflight_model_limit_and_tp(settings, registry):
    backend = make_backend(settings, registry)
    spec = spec_for(settings)
    too_long = dataclasses.replace(spec, engine=dataclasses.replace(spec.engine, max_model_len=999_999, tp=2))
    checks = {c.name: c for c in await backend.preflight(too_long)}
    assert checks["max_model_len"].status == "fail" and "4096" in checks["max_model_len"].detail
    assert checks["Tensor parallel"].status == "warn"
    assert checks["Model known"].status == "pass"
    unknown = dataclasses.replace(spec, model="nobody/nothing-1b")
    checks = {c.name: c for c in await backend.preflight(unknown)}
    assert checks["Model known"].status == "fail"


async def test_detach_then_attach_then_stop(settings, registry, tmp_path):
    """Detach a local run: the server and the workload go on in the supervisor; a new client follows it."""
    import httpx

    from backends.supervisor import connect, start_run

    store = RunStore(tmp_path / "s")
    backend = make_backend(settings, registry, ["--speed", "1", "--startup-delay", "0.05", "--access-log"])
    spec = spec_for(settings, requests=400).set("workload.rate", 20)
    progress: list[Progress] = []
    link = await start_run(backend, spec, store=store,
                           on_event=lambda e: progress.append(e) if isinstance(e, Progress) else None)
    run = await asyncio.wait_for(link.launched(), 15)
    for _ in range(300):
        if progress and progress[-1].done >= 2:
            break
        await asyncio.sleep(0.05)
    assert await link.detach()
    link.close()
    done_at_detach = progress[-1].done
    pid = int(run.handle["pid"])
    for _ in range(100):  # nobody follows: the workload goes on in the supervisor
        if sum(1 for _ in store.open(run.id).events() if False) or _done(store, run.id) > done_at_detach + 5:
            break
        await asyncio.sleep(0.1)
    assert not gone(pid) and _done(store, run.id) > done_at_detach + 5
    assert store.get(run.id).state == "detached"
    async with httpx.AsyncClient() as client:
        assert (await client.get(run.handle["url"] + "/v1/models?after=detach")).status_code == 200

    seen = []
    again = await connect(store.open(run.id), on_event=seen.append)
    await again.follow(snapshot=1000)
    for _ in range(100):
        if any(isinstance(e, LogLine) and "after=detach" in e.text for e in seen):
            break
        await asyncio.sleep(0.05)
    assert any(isinstance(e, LogLine) and "after=detach" in e.text for e in seen)
    assert any(isinstance(e, Endpoint) and e.reachable for e in seen)  # from the snapshot
    assert await again.cancel()
    result = await asyncio.wait_for(again.result(), 15)
    assert result["outcome"] == "cancelled"
    for _ in range(100):
        if gone(pid) and group_gone(pid):
            break
        await asyncio.sleep(0.05)
    assert gone(pid) and group_gone(pid)
    assert store.get(run.id).state == "cancelled"


def _done(store, run_id) -> int:
    """Requests done so far, from the run's saved Progress events."""
    done = 0
    for event in store.open(run_id).events():
        if isinstance(event, Progress):
            done = event.done
    return done
