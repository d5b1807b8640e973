"""Sweep view lag: 9,000 configs, 100 workers reporting; a status change in the DB → on screen.

Run by hand (not collected by pytest)::

    .venv/bin/python tests/benchmarks/bench_sweep_view.py [--configs 9000] [--workers 100]
        [--batch 10] [--work-ms 20] [--fail-rate 0.03] [--poll 0.5]

What runs, all real parts but the cluster:

* the work queue: :class:`backends.queue.store.QueueStore` on SQLite in a temp
  dir, populated with ``--configs`` configs of one model version;
* ``--workers`` simulated workers in a child process (the pods' side), each
  claiming batches of ``--batch`` and reporting every config completed or
  failed (``--fail-rate``, four error messages) after ``--work-ms`` (± 75 %) of
  "work", through ``QueueStore.claim``/``set_status``; each worker notes the
  time its status change was committed (``set_status`` returned);
* the queue's HTTP API (FastAPI under uvicorn, in a thread of this process);
* the TUI side: the real app screen (:class:`tui.screens.sweep.SweepMonitorScreen`,
  headless via ``App.run_test``) on a real :class:`tui.controller.RunController`,
  fed by a poll loop that reads the API with :class:`backends.argo.sweep.SweepReader`
  every ``--poll`` seconds exactly as the Argo backend does (counts every read,
  the group-by details every ``DETAIL_EVERY``-th) and hands each Sweep to the
  controller, which collapses bursts and delivers batches to the screen.

Lag of a status change = when the screen first showed a completed (or failed)
count that includes it (timestamped after the refresh that drew it) minus when
its commit returned. Both sides use ``time.monotonic()`` (one clock per
machine on Linux). The queue has no push API, so the poll interval is part of
the lag: at ``--poll P`` a change waits on average P/2 for the next read.
Reported: median / p95 / max lag over every change, the lag of the last
change, configs processed per second, and the cost of one snapshot read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import random
import resource
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

MVID = "bench-sweep-view"
#: The queue API's admin token (the sweep view reads with it, as the Argo backend does).
BENCH_TOKEN = "bench-admin-token-0123456789abcdef"
ERRORS = (
    "CUDA out of memory. Tried to allocate 20.00 GiB",
    "timeout: the vLLM server was not ready after 600 s",
    "guidellm: connection refused",
    "worker pod evicted (spot instance reclaimed)",
)


# ------------------------------------------------------------------ workers


def workers_main(db_url: str, workers: int, batch: int, work_ms: float, fail_rate: float, go, out_path: str) -> None:
    """The child process: ``workers`` claimers/reporters on the queue until it is empty."""
    asyncio.run(_workers(db_url, workers, batch, work_ms, fail_rate, go, out_path))


async def _workers(db_url: str, workers: int, batch: int, work_ms: float, fail_rate: float, go, out_path: str) -> None:
    from backends.queue.store import QueueStore

    store = QueueStore(db_url)
    await store.warm(workers)
    records: list[tuple[float, str]] = []  # (commit returned, status)
    rng = random.Random(7)
    while not go.is_set():
        await asyncio.sleep(0.01)

    async def worker(n: int) -> None:
        name = f"worker-{n}"
        while True:
            configs = await store.claim(batch, model_version_id=MVID, worker=name)
            if not configs:
                return
            for cfg in configs:
                await asyncio.sleep(work_ms / 1000 * rng.uniform(0.25, 1.75))
                if rng.random() < fail_rate:
                    status, error = "failed", rng.choice(ERRORS)
                else:
                    status, error = "completed", None
                await store.set_status(cfg["id"], status, error, lease_id=cfg["lease_id"])
                records.append((time.monotonic(), status))

    await asyncio.gather(*(worker(n) for n in range(workers)))
    await store.close()
    Path(out_path).write_text(json.dumps(records))


# --------------------------------------------------------------- API server


class ApiServer:
    """The queue API (FastAPI) under uvicorn in a thread, on a free port."""

    def __init__(self, db_url: str) -> None:
        import uvicorn

        from backends.queue.api import create_app
        from backends.queue.auth import TokenSet
        from backends.queue.store import QueueStore

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        app = create_app(QueueStore(db_url), TokenSet([("bench", "admin", BENCH_TOKEN)]))
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])), daemon=True)

    def __enter__(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("queue API did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


# ---------------------------------------------------------------- the bench


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def lags(records: list[tuple[float, str]], shown: list[tuple[float, int, int]]) -> list[float]:
    """Per change: first time the screen showed a count including it, minus its commit time."""
    out = []
    for status, column in (("completed", 1), ("failed", 2)):
        commits = sorted(t for t, s in records if s == status)
        i = 0
        for rank, t_commit in enumerate(commits, 1):
            while i < len(shown) and shown[i][column] < rank:
                i += 1
            if i == len(shown):
                raise AssertionError(f"the screen never showed {rank} {status}")
            out.append(shown[i][0] - t_commit)
    return out


async def run(args) -> dict:  # noqa: C901 - the benchmark's one scripted run; over 15 when lint was set up
    from textual.app import App

    from backends.argo.sweep import SweepReader
    from backends.cleanup import CleanupRegistry
    from backends.events import Phase
    from backends.queue.store import Matrix, QueueStore
    from backends.store import RunStore
    from config.catalog import load_catalogs
    from config.spec import build_spec
    from tui.controller import RunController
    from tui.screens.sweep import SweepMonitorScreen

    try:
        from backends.argo.backend import DETAIL_EVERY
    except ImportError:  # the backend's constant; 5 when it is not there
        DETAIL_EVERY = 5

    tmp = Path(tempfile.mkdtemp(prefix="bench-sweep-view-"))
    os.environ.setdefault("SWEEPDECK_STATE_DIR", str(tmp / "state"))
    db_url = f"sqlite:///{tmp / 'queue.db'}"

    # 9,000 = 30 hardware × 5 frameworks × 5 workloads × 4 batch sizes × 3 sequence lengths
    per_hw = 5 * 5 * 4 * 3
    hardware = max(1, args.configs // per_hw)
    matrix = Matrix(hardware=tuple(f"hw{i}:1" for i in range(hardware)), frameworks=tuple(f"fw{i}" for i in range(5)))
    store = QueueStore(db_url)
    await store.create()
    info = await store.populate(MVID, matrix)
    total = info["created"]
    await store.close()

    ctx = mp.get_context("spawn")
    go = ctx.Event()
    out_path = str(tmp / "commits.json")
    child = ctx.Process(target=workers_main,
                        args=(db_url, args.workers, args.batch, args.work_ms, args.fail_rate, go, out_path))
    child.start()

    spec = build_spec(load_catalogs(), "qwen-1.5b", experiment_id=f"bench-sweep-{os.getpid()}", backend="argo")
    controller = RunController(None, spec, store=RunStore(tmp / "state"), registry=CleanupRegistry())

    class Host(App):
        def on_mount(self) -> None:
            self.push_screen(SweepMonitorScreen(controller, auto_recovery=False))

    shown: list[tuple[float, int, int]] = []  # (displayed, completed, failed)
    read_ms: list[float] = []
    read_at: dict[int, float] = {}  # id(snapshot) -> when its read returned
    view_ms: list[float] = []  # read returned -> on screen: the TUI's own part of the lag
    result: dict = {"total": total}
    with ApiServer(db_url) as api:
        app = Host()
        async with app.run_test(size=(160, 48)) as pilot:
            while not isinstance(app.screen, SweepMonitorScreen) or not app.screen.batches:
                await pilot.pause(0.01)
            view = app.screen.sweep_view
            original = view.update_sweep

            def update_sweep(sweep):
                original(sweep)

                def displayed() -> None:
                    now = time.monotonic()
                    shown.append((now, sweep.completed, sweep.failed))
                    if id(sweep) in read_at:
                        view_ms.append((now - read_at.pop(id(sweep))) * 1000)

                app.call_after_refresh(displayed)

            view.update_sweep = update_sweep  # type: ignore[method-assign]  # a counting wrapper

            # the workflow's worker nodes, as the Argo backend reports them
            t0 = time.time()
            for n in range(args.workers):
                controller.on_event(Phase(f"worker({n})", "Running", "", kind="node", started=t0))

            reader = SweepReader(api.url, MVID, token=BENCH_TOKEN)

            async def poll() -> None:
                # what ArgoBackend._poll/_sweep_events do: counts every read, the
                # group-bys every DETAIL_EVERY-th; details carried over in between
                tick, details_kept = 0, None
                while True:
                    details = tick % DETAIL_EVERY == 0
                    began = time.perf_counter()
                    snap = await reader.snapshot(details=details)
                    read_ms.append((time.perf_counter() - began) * 1000)
                    read_at[id(snap)] = time.monotonic()
                    if details:
                        details_kept = (snap.failures, snap.stale, snap.by_workload, snap.by_priority)
                    elif details_kept is not None:
                        snap.failures, snap.stale, snap.by_workload, snap.by_priority = (list(x) for x in details_kept)
                    controller.on_event(snap)
                    tick += 1
                    await asyncio.sleep(args.poll)

            poller = asyncio.create_task(poll())
            await pilot.pause(0.5)
            began = time.monotonic()
            go.set()
            while child.is_alive():
                await asyncio.sleep(0.05)
            child.join()
            if child.exitcode != 0:
                raise SystemExit(f"the worker process failed (exit code {child.exitcode})")
            records = [tuple(r) for r in json.loads(Path(out_path).read_text())]
            # wait until the screen shows every change
            deadline = time.monotonic() + 30
            while not shown or shown[-1][1] + shown[-1][2] < total:
                if time.monotonic() > deadline:
                    raise SystemExit(f"the screen did not reach {total} done (last: {shown[-1] if shown else None})")
                await asyncio.sleep(0.01)
            for n in range(args.workers):
                controller.on_event(Phase(f"worker({n})", "Succeeded", "", kind="node", started=t0,
                                          finished=time.time()))
            await pilot.pause(0.2)
            poller.cancel()
            await reader.aclose()
            first, last = min(t for t, _ in records), max(t for t, _ in records)
            all_lags = lags(records, shown)
            last_change = max(records)
            result.update(
                changes=len(records),
                failed=sum(1 for _, s in records if s == "failed"),
                sweep_s=last - first,
                rate=len(records) / (last - first),
                start_to_first_s=first - began,
                lag_median=statistics.median(all_lags),
                lag_p95=percentile(all_lags, 95),
                lag_max=max(all_lags),
                last_lag=next(t for t, c, f in shown if c + f >= total) - last_change[0],
                screen_updates=view.updates,
                snapshots=len(read_ms),
                read_ms_median=statistics.median(read_ms),
                read_ms_max=max(read_ms),
                view_ms_median=statistics.median(view_ms),
                view_ms_max=max(view_ms),
                progress=view.progress.lines(150)[0].plain[-30:],
                nodes=len(view.nodes),
                rebuilds={name: view.table(name).rebuilds for name in ("failures", "workload", "priority", "nodes")},
            )
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=9000)
    parser.add_argument("--workers", type=int, default=100)
    parser.add_argument("--batch", type=int, default=10, help="configs per claim")
    parser.add_argument("--work-ms", type=float, default=20.0, help="mean simulated work per config")
    parser.add_argument("--fail-rate", type=float, default=0.03)
    parser.add_argument("--poll", type=float, default=0.5,
                        help="seconds between queue reads (the argo profile's poll_interval)")
    args = parser.parse_args()
    r = asyncio.run(run(args))
    print(f"sweep view lag: {r['total']:,} configs, {args.workers} workers "
          f"(batch {args.batch}, ~{args.work_ms:g} ms each, {args.fail_rate:.0%} failing), "
          f"SQLite, queue API over HTTP, poll every {args.poll:g} s; "
          f"python {sys.version.split()[0]}, {platform.machine()}, {os.cpu_count()} cpus")
    print(f"processed: {r['changes']:,} status changes ({r['failed']:,} failed) in {r['sweep_s']:.1f} s "
          f"= {r['rate']:,.0f} configs/s")
    print(f"lag commit -> on screen over every change: median {r['lag_median'] * 1000:.0f} ms, "
          f"p95 {r['lag_p95'] * 1000:.0f} ms, max {r['lag_max'] * 1000:.0f} ms   (target < 1000 ms)")
    print(f"lag of the last change: {r['last_lag'] * 1000:.0f} ms; screen now: ...{r['progress']!r}")
    print(f"of which the TUI (snapshot read -> controller -> screen drawn): median {r['view_ms_median']:.0f} ms, "
          f"max {r['view_ms_max']:.0f} ms; the rest is the poll wait and the read")
    print(
        f"queue reads: {r['snapshots']} snapshots, median {r['read_ms_median']:.1f} ms, max {r['read_ms_max']:.1f} ms; "
        f"sweep view updates: {r['screen_updates']}; table rebuilds: {r['rebuilds']}; nodes shown: {r['nodes']}"
    )
    print(f"peak RSS (TUI + API process): {r['peak_rss_mb']:.0f} MB")
    return 0 if r["lag_max"] < 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
