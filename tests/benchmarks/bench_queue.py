"""Work-queue benchmarks (run by hand: `.venv/bin/python tests/benchmarks/bench_queue.py`).

Measures, on a throw-away PostgreSQL cluster and on SQLite:
* claim throughput (configs claimed per second) with N concurrent claimers,
  batch 100, and asserts zero double claims; on PostgreSQL twice: with no
  claim gate (all 100 claims in the database at once) and with the store's
  default gate (``QueueStore.claim_concurrency``: the rest wait in the process);
* populate time for 9,000 configs;
* the progress query on 1,000,000 configs.
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from backends.queue.store import Matrix, QueueStore  # noqa: E402
from tests.support.postgres import postgres_cluster  # noqa: E402

NINE_K = Matrix(hardware=tuple(f"hw{i}:1" for i in range(50)))  # 50*3*5*4*3 = 9,000


async def claim_bench(store: QueueStore, claimers: int, configs_matrix: Matrix, mv: str) -> tuple[float, int]:
    await store.populate(mv, configs_matrix)
    total = configs_matrix.count

    async def claimer():
        got = []
        while True:
            batch = await store.claim(100, model_version_id=mv)
            if not batch:
                return got
            got.extend(c["id"] for c in batch)

    # steady state: open the pool's connections first (a long-running API server
    # has them open; connection set-up is not what this measures)
    await store.warm(claimers)
    t0 = time.perf_counter()
    c0 = time.process_time()
    results = await asyncio.gather(*(claimer() for _ in range(claimers)))
    dt = time.perf_counter() - t0
    print(f"  (client CPU {time.process_time() - c0:.2f} s of {dt:.2f} s wall)")
    ids = [i for r in results for i in r]
    assert len(ids) == total, (len(ids), total)
    dupes = len(ids) - len(set(ids))
    return total / dt, dupes


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
            from sqlalchemy import text

            await conn.execute(text("ANALYZE benchmark_configs"))
    await store.progress("mv-1m")  # warm
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        p = await store.progress("mv-1m")
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2], p


async def run(url: str, label: str, claimers: int) -> None:
    hw = int(os.environ.get("BENCH_CLAIM_HW", "500"))  # 500 hardware configs x 180 = 90,000 configs
    matrix = Matrix(hardware=tuple(f"hw{i}:1" for i in range(hw)))
    gates: tuple[int | None, ...] = (None, QueueStore.claim_concurrency) if label == "PostgreSQL" else (None,)
    store = None
    for n, gate in enumerate(gates):
        if store is not None:
            await store.close()
        store = QueueStore(url, pool_size=claimers if label == "PostgreSQL" else 5, claim_concurrency=gate)
        await store.create()
        rate, dupes = await claim_bench(store, claimers, matrix, f"claim{n}")
        how = "" if label != "PostgreSQL" else (" (no gate: every claim in the database at once)" if gate is None
                                                  else f" (default gate: {gate} claims in the database at once)")
        print(f"{label}: claim throughput, {claimers} claimers, batch 100, {matrix.count:,} configs: "
              f"{rate:,.0f} configs/s, double claims: {dupes}{how}")
    pop = await populate_bench(store)
    print(f"{label}: populate 9,000 configs: {pop * 1000:.0f} ms")
    if os.environ.get("BENCH_SKIP_1M") != "1":
        med, p = await progress_bench(store)
        print(f"{label}: progress query on {p['total']:,} configs: {med * 1000:.1f} ms (median of 10)")
    await store.close()


def main() -> None:
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores")
    with postgres_cluster() as url:
        asyncio.run(run(url, "PostgreSQL", 100))
    with tempfile.TemporaryDirectory() as d:
        asyncio.run(run(f"sqlite:///{d}/q.db", "SQLite", 8))


if __name__ == "__main__":
    main()
