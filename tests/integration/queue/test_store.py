"""The queue store against SQLite and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from backends.queue.store import Conflict, Matrix, NotFound, QueueStore, priority
from config.errors import SweepdeckError


@contextlib.contextmanager
def pool_checkouts(store: QueueStore):
    """Count the store's pooled connections held at once while the block runs: ``{"now", "peak"}``."""
    from sqlalchemy import event

    held = {"now": 0, "peak": 0}

    def checkout(*_):
        held["now"] += 1
        held["peak"] = max(held["peak"], held["now"])

    def checkin(*_):
        held["now"] -= 1

    pool = store.engine.sync_engine.pool
    event.listen(pool, "checkout", checkout)
    event.listen(pool, "checkin", checkin)
    try:
        yield held
    finally:
        event.remove(pool, "checkout", checkout)
        event.remove(pool, "checkin", checkin)


pytestmark = pytest.mark.services

SMALL = Matrix(hardware=("H100:1", "A100:2"), frameworks=("vllm",), batch_sizes=(1, 8), sequence_lengths=(1024, 4096))


async def test_populate_counts_and_is_idempotent(store):
    dry = await store.populate("mv-1", SMALL, dry_run=True)
    assert dry["total"] == 2 * 1 * 5 * 2 * 2 == 40
    assert (await store.progress("mv-1"))["total"] == 0  # dry run writes nothing
    first = await store.populate("mv-1", SMALL)
    again = await store.populate("mv-1", SMALL)
    assert (first["created"], first["existing"]) == (40, 0)
    assert (again["created"], again["existing"]) == (0, 40)
    p = await store.progress("mv-1")
    assert p == {
        "model_version_id": "mv-1",
        "total": 40,
        "pending": 40,
        "running": 0,
        "completed": 0,
        "failed": 0,
        "progress_pct": 0.0,
    }


async def test_default_matrix_is_1800(store):
    info = await store.populate("mv-d", dry_run=True)
    assert info["total"] == 10 * 3 * 5 * 4 * 3 == 1800


async def test_claim_in_priority_order_and_threshold(store):
    await store.populate("mv-1", SMALL)
    batch = await store.claim(5)
    prios = [c["priority"] for c in batch]
    assert prios == sorted(prios) and prios[0] == priority("chatbot", 1, 1024) == 100
    assert all(c["status"] == "running" and c["started_at"] for c in batch)
    assert await store.claim(10, priority_threshold=50) == []
    high = await store.claim(500, priority_threshold=199)
    assert high and all(c["workload_type"] == "chatbot" for c in high)


async def test_priority_penalises_batches_and_sequences():
    assert priority("chatbot", 1, 1024) < priority("chatbot", 8, 1024) < priority("qa", 1, 1024)
    assert priority("chatbot", 1, 1024) < priority("chatbot", 1, 4096)


async def test_claim_limit_validated(store):
    with pytest.raises(SweepdeckError):
        await store.claim(0)
    with pytest.raises(SweepdeckError):
        await store.claim(501)


async def test_status_transitions(store):
    await store.populate("mv-1", SMALL)
    pending = (await store.list_configs("mv-1", "pending", limit=1))[0]
    with pytest.raises(Conflict):
        await store.set_status(pending["id"], "completed")  # never claimed: no lease
    c = (await store.claim(1))[0]
    done = await store.set_status(c["id"], "completed", lease_id=c["lease_id"])
    assert done["status"] == "completed" and done["completed_at"]
    with pytest.raises(SweepdeckError, match="must be one of completed, failed, pending"):
        await store.set_status(c["id"], "running", lease_id=c["lease_id"])
    with pytest.raises(Conflict, match="already completed under this lease"):
        await store.set_status(c["id"], "pending", lease_id=c["lease_id"])
    with pytest.raises(NotFound):
        await store.set_status(999_999, "completed", lease_id=c["lease_id"])
    c2 = (await store.claim(1))[0]
    failed = await store.set_status(c2["id"], "failed", "OOM killed during inference", lease_id=c2["lease_id"])
    assert failed["error_message"] == "OOM killed during inference"
    assert await store.failures("mv-1") == [{"error_message": "OOM killed during inference", "count": 1}]
    p = await store.progress("mv-1")
    assert (p["completed"], p["failed"], p["progress_pct"]) == (1, 1, 5.0)


async def test_reset_stale_retries_then_fails(store):
    await store.populate("mv-1", SMALL)
    claimed = await store.claim(3)
    assert await store.reset_stale(timeout_minutes=60) == {"reset": 0, "failed": 0}  # not old enough
    r = await store.reset_stale(timeout_minutes=0, max_retries=1)
    assert r == {"reset": 3, "failed": 0}
    again = await store.claim(3)
    assert {c["id"] for c in again} == {c["id"] for c in claimed}
    assert all(c["retry_count"] == 1 for c in again)
    r = await store.reset_stale(timeout_minutes=0, max_retries=1)
    assert r == {"reset": 0, "failed": 3}
    groups = await store.failures("mv-1")
    assert groups[0]["count"] == 3 and "retries" in groups[0]["error_message"]


async def test_claim_gate_limits_claims_in_the_database_and_keeps_exactly_once(pg_url):
    """The default gate (PostgreSQL only: SQLite serialises writers itself).

    100 claimers, at most 4 claims in the database at once, every config handed out once.
    """
    from tests.integration.queue.conftest import _new_pg_database

    gated = QueueStore(await _new_pg_database(pg_url), pool_size=10)
    assert gated.claim_concurrency == 4
    try:
        await gated.create()
        await gated.populate("mv-gate", Matrix(hardware=tuple(f"hw{i}:1" for i in range(10))))  # 1,800

        async def claimer(n):
            got = []
            while batch := await gated.claim(20, worker=f"g{n}"):
                got.extend(c["id"] for c in batch)
            return got

        with pool_checkouts(gated) as held:
            results = await asyncio.gather(*(claimer(n) for n in range(100)))
        assert 1 <= held["peak"] <= 4, held
        ids = [i for r in results for i in r]
        assert len(ids) == len(set(ids)) == 1800
        assert (await gated.recount("mv-gate"))["running"] == 1800
    finally:
        await gated.close()


async def test_concurrent_claimers_never_share_a_config(store):
    from sqlalchemy import text

    m = Matrix(hardware=tuple(f"hw{i}:1" for i in range(50)))  # 9,000 configs
    await store.populate("mv-big", m)
    claimers = 100 if store.is_pg else 8
    if store.is_pg:
        await store.warm(claimers)  # 100 server connections, opened before the race
        async with store.engine.connect() as conn:
            connected = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND backend_type = 'client backend'"
                )
            )
        assert connected >= claimers

    async def claimer(n):
        got = []
        while True:
            batch = await store.claim(100, worker=f"w{n}")
            if not batch:
                return got
            got.extend(c["id"] for c in batch)

    with pool_checkouts(store) as held:
        results = await asyncio.gather(*(claimer(n) for n in range(claimers)))
    if store.is_pg:
        # every claimer had its own connection at once: none waited for a shared one
        assert held["peak"] == claimers, held
    ids = [i for r in results for i in r]
    assert len(ids) == len(set(ids)) == 9000
    # Asserted from the database: each of the 9,000 rows is running, claimed by one worker,
    # and that worker got it (a row handed to two workers would show the later one only).
    rows = await store.list_configs("mv-big", "running", limit=10000)
    assert len(rows) == 9000 and (await store.recount("mv-big"))["running"] == 9000
    owner = {r["id"]: r["worker"] for r in rows}
    for n, got in enumerate(results):
        assert all(owner[i] == f"w{n}" for i in got)
    assert sum(len(got) for got in results) == len(owner)


async def test_breakdown_and_results(store):
    await store.populate("mv-1", SMALL)
    c = (await store.claim(1))[0]
    rid, created = await store.add_result(c["id"], {"ttft_ms": 12.5}, lease_id=c["lease_id"])
    assert rid > 0 and created
    assert await store.add_result(c["id"], {"ttft_ms": 12.5}, lease_id=c["lease_id"]) == (rid, False)
    res = await store.results("mv-1")
    assert res[0]["config_id"] == c["id"] and res[0]["metrics"] == {"ttft_ms": 12.5}
    by_wl = {b["workload_type"]: b for b in await store.breakdown("mv-1")}
    assert set(by_wl) == {"chatbot", "qa", "summarization", "code-generation", "creative-writing"}
    assert by_wl["chatbot"]["running"] == 1 and by_wl["chatbot"]["pending"] == 7
    with pytest.raises(NotFound):
        await store.add_result(10**7, {}, lease_id=c["lease_id"])


async def test_matrix_validation(store):
    with pytest.raises(SweepdeckError, match="empty"):
        await store.populate("mv", Matrix(frameworks=()))
    with pytest.raises(SweepdeckError, match="integers from 1 to 1,000,000, got 0"):
        await store.populate("mv", Matrix(batch_sizes=(0,)))
    with pytest.raises(SweepdeckError, match="got True"):
        await store.populate("mv", Matrix(batch_sizes=(True,)))
    with pytest.raises(SweepdeckError, match="'--rm' begins with '-'"):
        await store.populate("mv", Matrix(workloads=("--rm",)))
    with pytest.raises(SweepdeckError, match="GPU count outside 1-1024"):
        await store.populate("mv", Matrix(hardware=("H100:2147483648",)))
    assert (await store.progress("mv"))["total"] == 0


async def test_kept_counts_match_a_recount_after_mixed_writes(store):
    await store.populate("mv-c", SMALL)
    await store.populate("mv-d", SMALL)
    batches = await asyncio.gather(*(store.claim(7) for _ in range(4)))
    claimed = [c for b in batches for c in b]
    ids = [c["id"] for c in claimed]
    await store.set_status(ids[0], "completed", lease_id=claimed[0]["lease_id"])
    await store.set_status(ids[1], "failed", "x", lease_id=claimed[1]["lease_id"])
    await store.set_status(ids[1], "pending")  # an admin's retry
    await store.set_status(ids[2], "pending", lease_id=claimed[2]["lease_id"])  # a worker gives one back
    await store.release(ids[3:5])
    await store.reset_stale(timeout_minutes=0, max_retries=0)
    for mv in ("mv-c", "mv-d"):
        p = await store.progress(mv)
        assert {k: p[k] for k in ("pending", "running", "completed", "failed")} == await store.recount(mv)


async def test_completion_rate_uses_its_index_not_every_finished_row(store):
    import datetime as dt

    from sqlalchemy import text, update

    from backends.queue.models import BenchmarkConfig as C

    m = Matrix(hardware=tuple(f"hw{i}:1" for i in range(20)))  # 3,600 configs
    await store.populate("mv-r", m)
    await store.populate("mv-other", SMALL)
    old = dt.datetime(2020, 1, 1)
    async with store.engine.begin() as conn:  # a long sweep: almost everything finished long ago
        await conn.execute(update(C).where(C.model_version_id == "mv-r").values(status="completed", completed_at=old))
    done = await store.claim(5, model_version_id="mv-r")  # nothing pending: claims nothing
    assert done == []
    async with store.engine.begin() as conn:
        await conn.execute(text("ANALYZE"))
    since = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=5)
    q = store.rate_query("mv-r", since).compile(store.engine.sync_engine, compile_kwargs={"literal_binds": True})
    async with store.engine.connect() as conn:
        if store.is_pg:
            plan = "\n".join(r[0] for r in (await conn.execute(text(f"EXPLAIN {q}"))).all())
        else:
            plan = "\n".join(str(r[-1]) for r in (await conn.execute(text(f"EXPLAIN QUERY PLAN {q}"))).all())
    assert "ix_configs_mv_status_completed" in plan, plan
    assert "Seq Scan" not in plan and "SCAN benchmark_configs" not in plan, plan
    if not store.is_pg:
        assert "completed_at>" in plan.replace(" ", ""), plan  # a range on completed_at, not a filter afterwards
    assert await store.completion_rate("mv-r", 5) == 0.0
    async with store.engine.begin() as conn:
        await conn.execute(
            update(C)
            .where(C.model_version_id == "mv-r", C.id % 100 == 0)
            .values(completed_at=dt.datetime.now(dt.UTC).replace(tzinfo=None))
        )
    assert await store.completion_rate("mv-r", 5) == 36 / 5


async def test_create_adds_new_indexes_to_an_existing_database(store):
    from sqlalchemy import text

    async with store.engine.begin() as conn:
        await conn.execute(text("DROP INDEX ix_configs_mv_status_completed"))
    await store.create()
    async with store.engine.connect() as conn:
        if store.is_pg:
            found = await conn.scalar(
                text("SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_configs_mv_status_completed'")
            )
        else:
            found = await conn.scalar(
                text("SELECT count(*) FROM sqlite_master WHERE name = 'ix_configs_mv_status_completed'")
            )
    assert found == 1


async def test_every_state_change_is_audited_with_who_and_which_lease(store):
    await store.populate("mv-a", SMALL, actor="ops")
    batch = await store.claim(3, worker="pod-1", actor="pods")
    assert all(c["created_by"] == "ops" for c in await store.list_configs("mv-a", "running"))
    one, two, three = batch
    await store.set_status(one["id"], "completed", metrics={"tps": 1}, lease_id=one["lease_id"], actor="pods")
    await store.set_status(two["id"], "failed", "OOM", lease_id=two["lease_id"], actor="pods")
    await store.set_status(two["id"], "pending", actor="ops")
    await store.reset_stale(0, 0, actor="spot-handler")  # three: retries used up at once
    h = {c["id"]: await store.history(c["id"]) for c in batch}
    assert [(e["action"], e["actor"], e["from_status"], e["to_status"]) for e in h[one["id"]]["events"]] == [
        ("claim", "pods", "pending", "running"),
        ("result", "pods", None, None),
        ("complete", "pods", "running", "completed"),
    ]
    assert (
        h[one["id"]]["results"][0]["lease_id"] == one["lease_id"] and h[one["id"]]["results"][0]["created_by"] == "pods"
    )
    assert [(e["action"], e["actor"], e["detail"]) for e in h[two["id"]]["events"]] == [
        ("claim", "pods", "pod-1"),
        ("fail", "pods", "OOM"),
        ("retry", "ops", None),
    ]
    [claim, failed] = h[three["id"]]["events"]
    assert (failed["action"], failed["actor"], failed["lease_id"]) == ("expire-fail", "spot-handler", three["lease_id"])
    assert all(e["at"] for ev in h.values() for e in ev["events"])
    with pytest.raises(NotFound):
        await store.history(10**6)


async def test_claim_audit_rows_are_written_with_the_claim(store):
    await store.populate("mv-b", Matrix(hardware=tuple(f"hw{i}:1" for i in range(10))))  # 1,800
    batches = await asyncio.gather(*(store.claim(100, actor=f"w{n}") for n in range(12)))
    from sqlalchemy import func, select

    from backends.queue.models import ConfigEvent

    async with store.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(ConfigEvent.config_id, ConfigEvent.actor, ConfigEvent.lease_id).where(
                    ConfigEvent.action == "claim"
                )
            )
        ).all()
        assert await conn.scalar(select(func.count()).select_from(ConfigEvent)) == 1200
    claimed = {c["id"]: (f"w{n}", c["lease_id"]) for n, b in enumerate(batches) for c in b}
    assert len(claimed) == 1200 and {r.config_id: (r.actor, r.lease_id) for r in rows} == claimed


async def test_create_upgrades_a_database_of_the_release_before_leases(store):
    """Columns, the audit table and the one-result-per-attempt index are added to an older database."""
    from sqlalchemy import text

    await store.populate("mv-old", SMALL)
    async with store.engine.begin() as conn:
        await conn.execute(text("DROP TABLE config_events"))
        await conn.execute(text("DROP INDEX uq_results_attempt"))
        for table, cols in (
            ("benchmark_configs", ("lease_id", "lease_expires_at", "renewed_at", "created_by")),
            ("benchmark_results", ("lease_id", "created_by")),
        ):
            for col in cols:
                await conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {col}"))
    await store.create()
    [c] = await store.claim(1)
    assert len(c["lease_id"]) == 32
    assert (await store.add_result(c["id"], {"x": 1}, lease_id=c["lease_id"]))[1] is True
    assert (await store.add_result(c["id"], {"x": 1}, lease_id=c["lease_id"]))[1] is False
    assert [e["action"] for e in (await store.history(c["id"]))["events"]] == ["claim", "result"]


async def test_reset_stale_revokes_only_expired_or_unrenewed_leases(store):
    import datetime as dt

    from sqlalchemy import update

    from backends.queue.models import BenchmarkConfig as C

    await store.populate("mv-s", SMALL)
    fresh, expired, silent = await store.claim(3)
    long_ago = dt.datetime(2020, 1, 1)
    async with store.engine.begin() as conn:
        await conn.execute(update(C).where(C.id == expired["id"]).values(lease_expires_at=long_ago))
        await conn.execute(update(C).where(C.id == silent["id"]).values(renewed_at=long_ago))
    assert {c["id"] for c in await store.stale("mv-s", 120)} == {expired["id"], silent["id"]}
    assert await store.reset_stale(120, 3) == {"reset": 2, "failed": 0}
    with pytest.raises(Conflict) as late:
        await store.set_status(expired["id"], "completed", lease_id=expired["lease_id"])
    assert late.value.reason == "lease_revoked"
    assert (await store.set_status(fresh["id"], "completed", lease_id=fresh["lease_id"]))["status"] == "completed"
    assert (await store.heartbeat([(silent["id"], silent["lease_id"])]))["revoked"] == [silent["id"]]
