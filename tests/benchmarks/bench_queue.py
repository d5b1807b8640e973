"""Work-queue benchmarks (run by hand: `.venv/bin/python tests/benchmarks/bench_queue.py`).

Claim throughput (configs claimed per second, batch 100, 100 concurrent claimers,
zero double claims asserted), each next to the same run without authentication
and leases, on a throw-away PostgreSQL cluster and on SQLite:

* **store**: the claim statement itself (``QueueStore.claim``: a lease per config and
  an audit row per config, written in the same statement on PostgreSQL) against the
  previous release's statement (no lease, no audit), both through the store's
  default claim gate (PostgreSQL: 4 claims in the database at once);
* **HTTP**: what a worker really does — ``POST /configs/get-batch`` over HTTP to the
  API in its own process (uvicorn, one worker, access log on) — with a bearer token
  checked and leases, against the same server with the token check and leases
  taken out (the previous release's claim, FastAPI's dependency override for the role).

Then populate time for 9,000 configs and the progress query on 1,000,000 configs.
Options: ``--only store|http|other``; ``BENCH_CLAIM_HW`` (hardware count, 500 = 90,000 configs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sqlalchemy import and_, select, text, update

from backends.queue.models import COUNT_SHARDS
from backends.queue.models import BenchmarkConfig as C
from backends.queue.store import CONFIG_FIELDS, Matrix, QueueStore, _bump, _moves, _now
from tests.support.postgres import postgres_cluster

NINE_K = Matrix(hardware=tuple(f"hw{i}:1" for i in range(50)))  # 50*3*5*4*3 = 9,000
CLAIMERS = 100
TOKEN = "bench-worker-token-0123456789abcdef"
LEGACY_FIELDS = CONFIG_FIELDS[: CONFIG_FIELDS.index("worker") + 1]  # the columns before leases existed


class LegacyStore(QueueStore):
    """The store with the previous release's claim: no lease, no audit row (the baseline)."""

    async def claim(self, limit=100, priority_threshold=None, *, model_version_id=None, worker=None, actor=None):
        now = _now()
        if self.is_pg:
            sql = text("""
                WITH picked AS (
                    SELECT id FROM benchmark_configs
                    WHERE status = 'pending' AND model_version_id = :mv
                    ORDER BY priority, id LIMIT :lim
                    FOR UPDATE SKIP LOCKED),
                claimed AS (
                    UPDATE benchmark_configs c SET status = 'running', started_at = :now, worker = :worker
                    FROM picked WHERE c.id = picked.id
                    RETURNING c.*),
                moved AS (
                    SELECT model_version_id, count(*) AS k FROM claimed GROUP BY model_version_id),
                counted AS (
                    UPDATE status_counts s
                    SET pending = s.pending - moved.k, running = s.running + moved.k
                    FROM moved WHERE s.model_version_id = moved.model_version_id AND s.shard = :shard)
                SELECT * FROM claimed""")
            params = {
                "lim": limit,
                "now": now,
                "worker": worker,
                "mv": model_version_id,
                "shard": random.randrange(COUNT_SHARDS),
            }
            async with self._claim_gate or _Null(), self.engine.begin() as conn:
                rows = (await conn.execute(sql, params)).all()
        else:
            pick = (
                select(C.id)
                .where(and_(C.status == "pending", C.model_version_id == model_version_id))
                .order_by(C.priority, C.id)
                .limit(limit)
            )
            stmt = (
                update(C)
                .where(C.id.in_(pick.scalar_subquery()), C.status == "pending")
                .values(status="running", started_at=now, worker=worker)
                .returning(*[getattr(C, k) for k in LEGACY_FIELDS])
            )
            async with self.engine.begin() as conn:
                rows = (await conn.execute(stmt)).all()
                if rows:
                    await _bump(conn, _moves([(r.model_version_id,) for r in rows], "pending", "running"))
        out = [
            {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in zip(LEGACY_FIELDS, r, strict=False)}
            for r in rows
        ]
        out.sort(key=lambda r: (r["priority"], r["id"]))
        return out


class _Null:
    async def __aenter__(self):
        return None

    async def __aexit__(self, *exc):
        return False


# ----------------------------------------------------------------------------- store level


async def store_claims(store: QueueStore, matrix: Matrix, mv: str) -> tuple[float, int, float]:
    """(configs/s, double claims, client CPU share) for CLAIMERS claimers draining ``mv``."""
    await store.populate(mv, matrix)

    async def claimer(n: int) -> list[int]:
        got = []
        while batch := await store.claim(100, model_version_id=mv, worker=f"w{n}", actor="bench"):
            got.extend(c["id"] for c in batch)
        return got

    # steady state: the pool's connections are open (a long-running API server has them)
    await store.warm(CLAIMERS)
    t0, c0 = time.perf_counter(), time.process_time()
    results = await asyncio.gather(*(claimer(n) for n in range(CLAIMERS)))
    dt = time.perf_counter() - t0
    ids = [i for r in results for i in r]
    assert len(ids) == matrix.count, (len(ids), matrix.count)
    return matrix.count / dt, len(ids) - len(set(ids)), (time.process_time() - c0) / dt


#: Measured rounds of each variant, alternating (a drifting machine load hits both alike), after one warm-up
#: round that is not counted (a fresh cluster's first claims run on cold caches: 4-5x slower here).
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


async def store_bench(url: str, label: str, matrix: Matrix) -> None:
    pool = CLAIMERS if label == "PostgreSQL" else 5
    rows = []
    for rnd in range(ROUNDS + 1):
        for name, cls in (("leases + audit", QueueStore), ("before (no lease, no audit)", LegacyStore)):
            store = cls(url, pool_size=pool)
            await store.create()
            rate, dupes, cpu = await store_claims(store, matrix, f"s{rnd}-{cls.__name__}")
            await store.close()
            assert dupes == 0
            if rnd:
                rows.append((name, rate))
            print(
                f"{label} store claim, {CLAIMERS} claimers, batch 100, {matrix.count:,} configs, {name}: "
                f"{rate:,.0f} configs/s, double claims: {dupes} (client CPU {cpu:.0%})"
                + ("" if rnd else " [warm-up, not counted]"),
                flush=True,
            )
    _ratio(label, "store", rows)


def _ratio(label: str, level: str, rows: list[tuple[str, float]]) -> None:
    import statistics

    new = [r for n, r in rows if not n.startswith("before")]
    old = [r for n, r in rows if n.startswith("before")]
    mean = 100 * statistics.mean(new) / statistics.mean(old)
    median = 100 * statistics.median(new) / statistics.median(old)
    print(
        f"==> {label} {level}, {len(new)} runs each: mean {statistics.mean(new):,.0f} vs {statistics.mean(old):,.0f} "
        f"configs/s = {mean:.0f} %; median {statistics.median(new):,.0f} vs {statistics.median(old):,.0f} = "
        f"{median:.0f} % of the run without auth and leases",
        flush=True,
    )


# ----------------------------------------------------------------------------- HTTP level


def serve(url: str, mode: str, port: int) -> None:
    """The API as a server process: ``auth`` (the real app) or ``none`` (no token check, the old claim)."""
    import uvicorn

    from backends.queue.api import _worker, create_app
    from backends.queue.auth import Principal, TokenSet

    tokens = TokenSet([("bench", "worker", TOKEN)])
    store = (QueueStore if mode == "auth" else LegacyStore)(url, pool_size=20)
    app = create_app(store, tokens)
    if mode == "none":

        async def anyone() -> Principal:
            return Principal("anonymous", "worker")

        app.dependency_overrides[_worker] = anyone
    # keep-alive past the default 5 s: a claimer waiting on a busy server must not find its connection closed
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="info", timeout_keep_alive=60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def http_claims(base: str, mv: str, total: int, headers: dict) -> tuple[float, int]:
    import httpx

    limits = httpx.Limits(max_connections=CLAIMERS, max_keepalive_connections=CLAIMERS)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=120) as client:

        async def claimer(n: int) -> list[int]:
            got = []
            while True:
                r = await client.post(
                    "/api/v1/workflow/configs/get-batch", json={"limit": 100, "model_version_id": mv, "worker": f"w{n}"}
                )
                r.raise_for_status()
                batch = r.json()
                if not batch:
                    return got
                got.extend(c["id"] for c in batch)

        await asyncio.gather(*(client.get("/health") for _ in range(CLAIMERS)))  # connections open
        t0 = time.perf_counter()
        results = await asyncio.gather(*(claimer(n) for n in range(CLAIMERS)))
        dt = time.perf_counter() - t0
    ids = [i for r in results for i in r]
    assert len(ids) == total, (len(ids), total)
    return total / dt, len(ids) - len(set(ids))


async def http_bench(url: str, label: str, matrix: Matrix) -> None:
    rows = []
    for rnd in range(ROUNDS + 1):
        for mode, name in (("auth", "token + leases + audit"), ("none", "before (no token, no lease, no audit)")):
            mv = f"h{rnd}-{mode}"
            store = QueueStore(url)
            await store.create()
            await store.populate(mv, matrix)
            await store.close()
            rate, dupes = await _served_claims(url, mode, mv, matrix.count)
            assert dupes == 0
            if rnd:
                rows.append((name, rate))
            print(
                f"{label} HTTP claim, {CLAIMERS} claimers, batch 100, {matrix.count:,} configs, {name}: "
                f"{rate:,.0f} configs/s, double claims: {dupes}" + ("" if rnd else " [warm-up, not counted]"),
                flush=True,
            )
    _ratio(label, "HTTP", rows)


async def _served_claims(url: str, mode: str, mv: str, total: int) -> tuple[float, int]:
    """Start the API process in ``mode``, drain ``mv`` through it, stop it (its log is shown if anything fails)."""
    port = _free_port()
    with tempfile.NamedTemporaryFile("w+", prefix="bench-queue-server-", suffix=".log") as log:
        proc = subprocess.Popen([sys.executable, __file__, "--serve", url, mode, str(port)], stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            await _until_up(base)
            headers = {"Authorization": f"Bearer {TOKEN}"} if mode == "auth" else {}
            return await http_claims(base, mv, total, headers)
        except Exception:
            log.seek(0)
            print("server log (last lines):\n" + "".join(log.readlines()[-30:]), flush=True)
            raise
        finally:
            proc.terminate()
            proc.wait(30)


async def _until_up(base: str) -> None:
    import httpx

    deadline = time.monotonic() + 60
    async with httpx.AsyncClient() as c:
        while True:
            try:
                if (await c.get(f"{base}/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the API server did not start")
            await asyncio.sleep(0.1)


# ----------------------------------------------------------------------------- populate, progress


async def populate_bench(store: QueueStore) -> float:
    t0 = time.perf_counter()
    info = await store.populate("pop-9k", NINE_K)
    dt = time.perf_counter() - t0
    assert info["created"] == 9000
    return dt


async def progress_bench(store: QueueStore) -> tuple[float, dict]:
    # 1,000,000 configs: 50 hw * 10 fw * 5 wl * 20 batch sizes * 20 sequence lengths
    big = Matrix(
        hardware=tuple(f"hw{i}:1" for i in range(50)),
        frameworks=tuple(f"fw{i}" for i in range(10)),
        batch_sizes=tuple(range(1, 21)),
        sequence_lengths=tuple(range(1024, 1024 + 20)),
    )
    assert big.count == 1_000_000
    t0 = time.perf_counter()
    await store.populate("mv-1m", big)
    print(f"  (populated 1,000,000 configs in {time.perf_counter() - t0:.1f} s)")
    await store.claim(500, model_version_id="mv-1m")
    if store.is_pg:
        async with store.engine.begin() as conn:
            await conn.execute(text("ANALYZE benchmark_configs"))
    await store.progress("mv-1m")  # warm
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        p = await store.progress("mv-1m")
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2], p


async def other_bench(url: str, label: str) -> None:
    store = QueueStore(url)
    await store.create()
    pop = await populate_bench(store)
    print(f"{label}: populate 9,000 configs: {pop * 1000:.0f} ms")
    if os.environ.get("BENCH_SKIP_1M") != "1":
        med, p = await progress_bench(store)
        print(f"{label}: progress query on {p['total']:,} configs: {med * 1000:.1f} ms (median of 10)")
    await store.close()


async def run(url: str, label: str, only: str | None) -> None:
    hw = int(os.environ.get("BENCH_CLAIM_HW", "500"))  # 500 hardware configs x 180 = 90,000 configs
    matrix = Matrix(hardware=tuple(f"hw{i}:1" for i in range(hw)))
    if only in (None, "store"):
        await store_bench(url, label, matrix)
    if only in (None, "http"):
        await http_bench(url, label, matrix)
    if only in (None, "other"):
        await other_bench(url, label)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=("store", "http", "other"))
    parser.add_argument("--db", choices=("postgresql", "sqlite"))
    args = parser.parse_args()
    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    if args.db in (None, "postgresql"):
        with postgres_cluster() as url:
            asyncio.run(run(url, "PostgreSQL", args.only))
    if args.db in (None, "sqlite"):
        with tempfile.TemporaryDirectory() as d:
            asyncio.run(run(f"sqlite:///{d}/q.db", "SQLite", args.only))


if __name__ == "__main__":
    main()
