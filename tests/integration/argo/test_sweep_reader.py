"""SweepReader against the real queue API over HTTP (FastAPI + SQLite)."""

from __future__ import annotations

import socket

import httpx
import pytest

from backends.argo.sweep import QueueUnavailable, SweepReader
from tests.integration.argo.conftest import MVID, SMALL_TOTAL, W, populate
from tests.integration.queue.conftest import ADMIN, WORKER, auth


def claim(api, n):
    return httpx.post(
        f"{api.url}{W}/configs/get-batch", json={"limit": n, "model_version_id": MVID}, headers=auth("worker")
    ).json()


def report(api, config, status, error=None):
    httpx.post(
        f"{api.url}{W}/configs/{config['id']}/status",
        headers=auth("worker"),
        json={"status": status, "error_message": error, "lease_id": config["lease_id"]},
    ).raise_for_status()


async def test_snapshot_counts_rate_failures_and_breakdowns(api):
    populate(api)
    batch = claim(api, 12)
    for c in batch[:5]:
        report(api, c, "completed")
    for c in batch[5:8]:
        report(api, c, "failed", "CUDA out of memory")
    report(api, batch[8], "failed", "timeout")
    async with SweepReader(api.url, MVID, token=ADMIN) as reader:
        assert await reader.health() is True
        s = await reader.snapshot()
        assert (s.total, s.pending, s.running, s.completed, s.failed) == (SMALL_TOTAL, 28, 3, 5, 4)
        assert s.configs_per_min == pytest.approx(9 / 5.0)  # 9 finished in the 5-minute window
        assert s.eta_s == pytest.approx((28 + 3) / (9 / 5.0) * 60)
        assert s.failures == [
            {"error_message": "CUDA out of memory", "count": 3},
            {"error_message": "timeout", "count": 1},
        ]
        assert s.stale == []  # nothing running for 120 min
        assert sum(r["completed"] + r["failed"] + r["pending"] + r["running"] for r in s.by_workload) == SMALL_TOTAL
        assert {r["priority"] for r in s.by_priority} and all("priority" in r for r in s.by_priority)
        light = await reader.snapshot(details=False)
        assert light.completed == 5 and light.failures == [] and light.by_workload == []
        group = await reader.failed_configs("CUDA out of memory")  # drill into one group
        assert sorted(c["id"] for c in group) == sorted(c["id"] for c in batch[5:8])
        assert all(c["error_message"] == "CUDA out of memory" for c in group)


async def test_stale_and_reset_stale(api):
    populate(api)
    running = claim(api, 4)
    async with SweepReader(api.url, MVID, stale_after_min=0.0, token=ADMIN) as reader:
        s = await reader.snapshot()
        assert sorted(c["id"] for c in s.stale) == sorted(c["id"] for c in running) and s.stale_after_min == 0.0
        assert await reader.reset_stale(timeout_minutes=0) == {"reset": 4, "failed": 0}
        after = await reader.snapshot()
        assert after.running == 0 and after.pending == SMALL_TOTAL and after.stale == []
    async with SweepReader(api.url, MVID, token=ADMIN) as patient:  # the default 120 min: a fresh claim is not stale
        claim(api, 2)
        assert (await patient.snapshot()).stale == []


async def test_populate_dry_run_then_for_real(api):
    async with SweepReader(api.url, "mv-new", token_file=str(api.token_file)) as reader:
        info = await reader.populate(dry_run=True)
        assert info["total"] == 1800 and info["created"] == 0
        assert (await reader.progress())["total"] == 0
        assert (await reader.populate(dry_run=False))["created"] == 1800
        assert (await reader.snapshot(details=False)).total == 1800


async def test_unreachable_and_error_answers_raise_queue_unavailable(api):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with SweepReader(dead, MVID) as reader:
        assert await reader.health() is False
        with pytest.raises(QueueUnavailable, match="did not answer") as exc:
            await reader.snapshot()
        assert "sweepdeck queue serve" in exc.value.hint
    async with SweepReader(api.url, "a b", token=ADMIN) as odd:  # the API rejects it: an HTTP error, said readably
        with pytest.raises(QueueUnavailable, match="HTTP 4"):
            await odd.breakdown("nonsense")


async def test_the_reader_sends_the_admin_token_and_says_what_to_do_without_one(api, monkeypatch):
    populate(api)
    async with SweepReader(api.url, MVID) as nobody:  # no token anywhere
        assert await nobody.health() is True  # /health needs none
        with pytest.raises(QueueUnavailable, match="HTTP 401") as exc:
            await nobody.progress()
        assert exc.value.status == 401 and "queue_token_file" in exc.value.hint
    async with SweepReader(api.url, MVID, token=WORKER) as worker:
        with pytest.raises(QueueUnavailable, match="HTTP 403.*worker role"):
            await worker.snapshot()
    monkeypatch.setenv("SWEEPDECK_QUEUE_TOKEN", ADMIN)
    async with SweepReader(api.url, MVID) as from_env:
        assert (await from_env.snapshot()).total == SMALL_TOTAL
