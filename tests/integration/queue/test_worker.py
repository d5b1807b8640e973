"""Reference workers as real processes: spot interruptions and SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from backends.queue.worker import format_command, workload_for
from config.errors import SweepdeckError
from tests.integration.queue.conftest import W, auth

pytestmark = pytest.mark.services


def _worker(api, *extra):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tui.cli",
            "queue",
            "worker",
            "--api-url",
            api.url,
            "--token-file",
            str(api.token_file),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _populate(api, hardware=6):
    body = {
        "hardware": [f"hw{i}:1" for i in range(hardware)],
        "frameworks": ["vllm", "tgi"],
        "batch_sizes": [1, 2],
        "sequence_lengths": [1024],
    }
    r = httpx.post(f"{api.url}{W}/populate/mv1", json=body, timeout=10, headers=auth())
    assert r.json()["created"] == hardware * 2 * 5 * 2


def _configs(api, **params) -> list[dict]:
    return httpx.get(f"{api.url}{W}/configs/mv1", params={"limit": 10000, **params}, timeout=10, headers=auth()).json()


def _name(proc) -> str:
    return f"{socket.gethostname()}-{proc.pid}"  # the worker's default name


def _spot_kill(proc) -> None:
    """SIGKILL a worker and the config command it runs (the whole node goes away, no goodbye)."""
    try:
        children = [int(c) for c in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    except OSError:
        children = []
    proc.kill()
    proc.wait()
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _wait_until(predicate, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def test_spot_kill_then_reset_stale_completes_or_fails_every_config_once(api_db):
    """Kill 20% of the workers mid-batch; reset-stale returns their configs. A second
    interruption of some retried configs uses up their retries: those end failed."""
    api = api_db
    _populate(api, hardware=10)  # 200 configs
    workers = [_worker(api, "--batch-size", "5", "--command", "sleep 0.1") for _ in range(10)]
    victims, survivors = workers[:2], workers[2:]

    def mid_batch():  # each victim has finished a config and still holds claimed ones
        rows = _configs(api)
        return all(
            any(c["worker"] == _name(v) and c["status"] == "running" for c in rows)
            and any(c["worker"] == _name(v) and c["status"] == "completed" for c in rows)
            for v in victims
        )

    _wait_until(mid_batch, "both victims are mid-batch")
    for v in victims:
        _spot_kill(v)
    for w in survivors:
        assert w.wait(timeout=60) == 0
    stranded = _configs(api, status="running")
    assert stranded and {c["worker"] for c in stranded} <= {_name(v) for v in victims}
    assert len({c["worker"] for c in stranded}) == 2, "each victim died holding configs"
    first = {c["id"] for c in stranded}
    r = httpx.post(
        f"{api.url}{W}/maintenance/reset-stale", params={"timeout_minutes": 0, "max_retries": 1}, headers=auth()
    ).json()
    assert r == {"reset": len(first), "failed": 0}

    # Second interruption: a worker claims half of the returned configs and dies too.
    half = len(first) // 2
    unlucky = _worker(api, "--batch-size", str(half), "--command", "sleep 30")
    held = _wait_until(
        lambda: [c["id"] for c in _configs(api, status="running") if c["worker"] == _name(unlucky)],
        "the second victim holds its batch",
    )
    assert len(held) == half
    _spot_kill(unlucky)
    rescue = _worker(api, "--batch-size", "50", "--command", "true")
    assert rescue.wait(timeout=60) == 0  # runs the other half: the unlucky batch still looks running
    r = httpx.post(
        f"{api.url}{W}/maintenance/reset-stale", params={"timeout_minutes": 0, "max_retries": 1}, headers=auth()
    ).json()
    assert r == {"reset": 0, "failed": half}  # their one retry was used

    rows = {c["id"]: c for c in _configs(api)}
    prog = httpx.get(f"{api.url}{W}/progress/mv1", headers=auth()).json()
    assert (prog["total"], prog["completed"], prog["failed"], prog["running"], prog["pending"]) == (
        200,
        200 - half,
        half,
        0,
        0,
    )
    failed = {i for i, c in rows.items() if c["status"] == "failed"}
    assert failed == set(held) and failed < first
    for i in failed:  # failed with its retries recorded
        assert rows[i]["retry_count"] == 2 and "1 retries used" in rows[i]["error_message"], rows[i]
    retried_ok = {i for i, c in rows.items() if c["status"] == "completed" and c["retry_count"] == 1}
    assert retried_ok == first - failed and retried_ok, "the completed-after-a-retry branch is reached"
    assert all(c["retry_count"] == 0 for i, c in rows.items() if i not in first)
    # every completed config completed exactly once: one result row each, none for the failed
    results = httpx.get(f"{api.url}{W}/results/mv1", params={"limit": 1000}, headers=auth()).json()
    ids = [r["config_id"] for r in results]
    assert len(ids) == len(set(ids)) and set(ids) == {i for i, c in rows.items() if c["status"] == "completed"}


def test_sigterm_returns_unfinished_configs(api):
    _populate(api, hardware=2)  # 40 configs
    w = _worker(api, "--batch-size", "40", "--command", "sleep 5")
    deadline = time.monotonic() + 20
    while httpx.get(f"{api.url}{W}/progress/mv1", headers=auth()).json()["running"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    w.send_signal(signal.SIGTERM)
    out, _ = w.communicate(timeout=20)
    assert w.returncode == 0, out
    prog = httpx.get(f"{api.url}{W}/progress/mv1", headers=auth()).json()
    assert prog["running"] == 0 and prog["pending"] == 40, prog
    assert "returned to pending" in out


def test_failed_command_reports_error(api):
    _populate(api, hardware=1)  # 20 configs
    w = _worker(api, "--batch-size", "20", "--command", "sh -c 'echo boom {batch_size} >&2; exit 3'")
    assert w.wait(timeout=60) == 0
    groups = httpx.get(f"{api.url}{W}/failures/mv1", headers=auth()).json()
    assert {g["error_message"] for g in groups} == {"boom 1", "boom 2"}


def test_command_template_is_never_a_shell_string():
    cfg = {"id": 1, "batch_size": 4, "workload_type": "qa; rm -rf /", "sequence_length": 1024}
    argv = format_command("bench --wl {workload_type} --bs {batch_size}", cfg)
    assert argv == ["bench", "--wl", "qa; rm -rf /", "--bs", "4"]
    with pytest.raises(SweepdeckError, match="unknown field"):
        format_command("bench {nope}", cfg)


@pytest.mark.parametrize(
    "template,value,argv",
    [
        ("bench --wl {workload_type}", "--delete-all", None),
        ("bench {workload_type}", "-rf", None),
        ("bench {workload_type}{batch_size}", "-x", None),
        ("bench --wl={workload_type}", "--delete-all", ["bench", "--wl=--delete-all"]),  # the option's own value
        ("bench -- {workload_type}", "--delete-all", ["bench", "--", "--delete-all"]),  # after --: an operand
        ("bench --wl {workload_type}", "qa", ["bench", "--wl", "qa"]),
    ],
)
def test_a_config_value_never_becomes_an_option(template, value, argv):
    cfg = {"id": 7, "batch_size": 4, "workload_type": value, "sequence_length": 1024}
    if argv is None:
        with pytest.raises(SweepdeckError, match=r"Config 7: .* which the command would read as an option"):
            format_command(template, cfg)
    else:
        assert format_command(template, cfg) == argv


def test_worker_fails_a_config_whose_value_would_be_an_option(api, tmp_path):
    """The config is reported failed with the reason; the command never runs with the option."""
    from backends.queue.store import Matrix, QueueStore

    async def seed():
        # an operator's database populated before names were checked: straight rows, bypassing validation
        from sqlalchemy import update

        from backends.queue.models import BenchmarkConfig as C

        st = QueueStore(api.store.url)
        try:
            await st.populate(
                "mv1",
                Matrix(
                    hardware=("H100:1",),
                    frameworks=("vllm",),
                    workloads=("qa", "chatbot"),
                    batch_sizes=(1,),
                    sequence_lengths=(1024,),
                ),
            )
            async with st.engine.begin() as conn:
                await conn.execute(update(C).where(C.workload_type == "chatbot").values(workload_type="--now"))
        finally:
            await st.close()

    import asyncio

    asyncio.run(seed())
    marker = tmp_path / "ran"
    w = _worker(api, "--batch-size", "5", "--command", f"sh -c 'echo \"$1\" >> {marker}' sh {{workload_type}}")
    out, _ = w.communicate(timeout=60)
    assert w.returncode == 0, out
    assert marker.read_text().split() == ["qa"]  # the --now config never ran
    groups = httpx.get(f"{api.url}{W}/failures/mv1", headers=auth()).json()
    assert len(groups) == 1 and "'--now', which the command would read as an option" in groups[0]["error_message"]


def test_workload_for_maps_cells():
    prof = workload_for({"id": 3, "batch_size": 8, "sequence_length": 2048, "workload_type": "summarization"})
    assert prof.max_concurrency == 8 and prof.prompt_tokens + prof.output_tokens == 2048
    assert prof.prompt_tokens > prof.output_tokens


def test_worker_without_a_token_stops_with_one_clear_message(api):
    w = subprocess.run(
        [sys.executable, "-m", "tui.cli", "queue", "worker", "--api-url", api.url, "--command", "true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert w.returncode == 2 and "refused the worker's claim (HTTP 401)" in w.stderr and "--token-file" in w.stderr
    assert "Traceback" not in w.stderr


def test_cli_populate_dry_run_and_progress(tmp_path):
    db = f"sqlite:///{tmp_path / 'q.db'}"
    def run(*a):
        argv = [sys.executable, "-m", "tui.cli", "queue", *a]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    r = run("populate", "mv9", "--db", db, "--dry-run")
    assert r.returncode == 0 and "Expected Total: 1,800 configs" in r.stdout and "dry run" in r.stdout
    r = run("populate", "mv9", "--db", db, "--batch-sizes", "1,2", "--hardware", "H100:1")
    assert "Expected Total: 90 configs" in r.stdout and "Created 90" in r.stdout
    r = run("progress", "mv9", "--db", db, "--json")
    assert '"pending": 90' in r.stdout
    r = run("populate", "mv9", "--db", db, "--batch-sizes", "1,x")
    assert r.returncode != 0 and "Traceback" not in r.stderr and "comma-separated" in r.stderr
