"""Benchmarks of the tekton backend's watch path against the fake API server.

Run by hand (never collected by pytest)::

    .venv/bin/python tests/benchmarks/bench_tekton.py                 # all three
    .venv/bin/python tests/benchmarks/bench_tekton.py --only table --taskruns 10000
    .venv/bin/python tests/benchmarks/bench_tekton.py --only latency --changes 200
    .venv/bin/python tests/benchmarks/bench_tekton.py --only requests --seconds 60

The fake API server runs in a child process so that the figures are the
client's own (its time and its peak RSS), as they would be against a real
cluster:

1. ``table``: N TaskRuns of one PipelineRun in one namespace → list (paged, 500
   a page) + watch → the complete status table (one Phase per task, as the
   TUI/headless output get it). Floors: < 3 s, < 300 MB.
2. ``latency``: a TaskRun status change on the server → its line printed by
   the headless printer. The server stamps the change time into the
   condition message; p50/p95/max over ``--changes`` changes. Floor: p95 < 200 ms.
3. ``requests``: API requests the client makes while 100 TaskRuns keep
   changing for ``--seconds`` (the BLIS skill polled ``tkn`` every 30 s; a
   1 s poll of 3 collections would be 3 x seconds requests).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing as mp
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

NS = "bench"
PR = "bench-run"


def taskrun(i: int, state: str = "Running") -> dict:
    name = f"task-{i:05d}"
    status = {"True": "Succeeded", "Unknown": "Running"}
    cond = "True" if state == "Succeeded" else "Unknown"
    return {
        "apiVersion": "tekton.dev/v1", "kind": "TaskRun",
        "metadata": {"name": f"{PR}-{name}", "namespace": NS, "labels": {
            "tekton.dev/pipelineRun": PR, "tekton.dev/pipelineTask": name, "tekton.dev/pipeline": "bench",
            "tekton.dev/task": "run-workload", "app.kubernetes.io/managed-by": "tekton-pipelines"}},
        "spec": {"taskRef": {"name": "run-workload"}, "serviceAccountName": "helm-installer", "timeout": "5h30m0s",
                 "params": [{"name": "modelLabel", "value": f"bench-{i % 8}"}, {"name": "rate", "value": "12"},
                            {"name": "prompt_tokens", "value": "70"}, {"name": "output_tokens", "value": "215"}]},
        "status": {"podName": f"{PR}-{name}-pod", "startTime": "2026-01-01T00:00:00Z",
                   "conditions": [{"type": "Succeeded", "status": cond, "reason": status[cond],
                                   "message": "Not all Steps in the Task have finished executing"}],
                   "steps": [{"name": "run", "container": "step-run",
                              "running": {"startedAt": "2026-01-01T00:00:01Z"}}]},
    }


# ----------------------------------------------------------------------------- server process


def server(conn, n: int, kubeconfig: str) -> None:
    from tests.support.fakekube import FakeKube

    fake = FakeKube().start()
    fake.write_kubeconfig(kubeconfig)
    fake.ensure_namespace(NS)
    fake.bookmark_interval = 60.0
    fake.create({"apiVersion": "tekton.dev/v1", "kind": "PipelineRun", "metadata": {"name": PR, "namespace": NS},
                 "status": {"conditions": [{"type": "Succeeded", "status": "Unknown", "reason": "Running"}]}})
    for i in range(n):
        fake.create(taskrun(i))
    fake.reset_requests()
    conn.send(("ready", fake.port))
    while True:
        cmd, arg = conn.recv()
        if cmd == "stop":
            conn.send(("bye", None))
            fake.stop()
            return
        if cmd == "changes":  # arg = (count, spacing seconds, first index range)
            count, spacing, pool = arg
            for k in range(count):
                i = random.randrange(pool)
                stamp = time.time()
                fake.patch("tekton.dev/v1", "TaskRun", f"{PR}-task-{i:05d}", {"status": {"conditions": [
                    {"type": "Succeeded", "status": "Unknown", "reason": f"Step{k}", "message": f"t0={stamp:.6f}"}]}},
                    NS, status_only=True)
                time.sleep(spacing)
            conn.send(("done", None))
        elif cmd == "requests":
            conn.send(("requests", (len(fake.requests), dict(fake.request_summary()))))


def start_server(n: int) -> tuple[mp.Process, object, str]:
    kubeconfig = os.path.join(tempfile.mkdtemp(prefix="bench-tekton-"), "kubeconfig")
    parent, child = mp.Pipe()
    proc = mp.get_context("fork").Process(target=server, args=(child, n, kubeconfig), daemon=True)
    proc.start()
    msg, _port = parent.recv()
    assert msg == "ready"
    return proc, parent, kubeconfig


def stop_server(proc, conn) -> None:
    conn.send(("stop", None))
    conn.recv()
    proc.join(5)


def make_backend(kubeconfig: str):
    from backends.base import Run
    from backends.cleanup import CleanupRegistry
    from backends.store import RunDir
    from backends.tekton import TektonBackend
    from config.settings import Profile, Settings, validate_profile

    opts = validate_profile("tekton", {"backend": "tekton", "namespace": NS, "kubeconfig": kubeconfig}, None, "bench")
    backend = TektonBackend(Settings(), Profile("bench", "tekton", opts), registry=CleanupRegistry())
    store = RunDir(Path(tempfile.mkdtemp(prefix="bench-run-")))
    run = Run(PR, "tekton", None, store, {"namespace": NS, "pipelinerun": PR, "tps": [1], "tasks": []})
    return backend, run


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- benchmarks


async def bench_table(n: int) -> dict:
    from backends.events import Phase

    proc, conn, kubeconfig = start_server(n)
    try:
        backend, run = make_backend(kubeconfig)
        backend.kube()  # client construction is not part of the figure
        base = rss_mb()
        t0 = time.perf_counter()
        table: dict[str, str] = {}
        async for ev in backend.events(run):
            if isinstance(ev, Phase) and ev.kind == "task":
                table[ev.unit] = ev.state
                if len(table) == n:
                    break
        elapsed = time.perf_counter() - t0
        peak = rss_mb()
        conn.send(("requests", None))
        _, (count, summary) = conn.recv()
        return {"taskruns": n, "seconds": round(elapsed, 3), "rows": len(table), "peak_rss_mb": round(peak, 1),
                "rss_growth_mb": round(peak - base, 1), "requests": count}
    finally:
        stop_server(proc, conn)


async def bench_latency(changes: int, spacing: float, n: int = 100) -> dict:
    from backends.events import Phase
    from tui.headless import HeadlessPrinter

    proc, conn, kubeconfig = start_server(n)
    try:
        backend, run = make_backend(kubeconfig)
        printer = HeadlessPrinter(out=io.StringIO(), err=io.StringIO())
        latencies: list[float] = []
        loop = asyncio.get_running_loop()
        synced = 0
        agen = backend.events(run)
        async for ev in agen:
            if isinstance(ev, Phase) and ev.kind == "task":
                synced += 1
                if synced == n:
                    break
        await loop.run_in_executor(None, conn.send, ("changes", (changes, spacing, n)))
        async for ev in agen:
            if printer is not None:
                printer(ev)
            if isinstance(ev, Phase) and ev.detail.startswith("t0="):
                latencies.append((time.time() - float(ev.detail[3:])) * 1000)
                if len(latencies) >= changes:
                    break
        await agen.aclose()
        await loop.run_in_executor(None, conn.recv)
        latencies.sort()
        return {"taskruns": n, "changes": len(latencies), "p50_ms": round(statistics.median(latencies), 1),
                "p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 1), "max_ms": round(latencies[-1], 1)}
    finally:
        stop_server(proc, conn)


async def bench_requests(seconds: float) -> dict:
    from backends.events import Phase

    proc, conn, kubeconfig = start_server(100)
    try:
        backend, run = make_backend(kubeconfig)
        changes = int(seconds / 0.1)
        loop = asyncio.get_running_loop()
        synced = asyncio.Event()
        counts = {"phases": 0}

        async def consume() -> None:
            async for ev in backend.events(run):
                if isinstance(ev, Phase) and ev.kind == "task":
                    counts["phases"] += 1
                    if counts["phases"] == 100:
                        synced.set()

        consumer = asyncio.create_task(consume())
        await synced.wait()
        started = time.monotonic()
        await loop.run_in_executor(None, lambda: (conn.send(("changes", (changes, 0.1, 100))), conn.recv()))
        watched = time.monotonic() - started
        await asyncio.sleep(0.5)  # let the last changes arrive
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        await loop.run_in_executor(None, conn.send, ("requests", None))
        _, (count, summary) = await loop.run_in_executor(None, conn.recv)
        return {"seconds": round(watched, 1), "taskrun_changes": changes, "requests": count,
                "phase_events": counts["phases"],
                "by_request": summary, "poll_1s_equivalent": int(3 * watched)}
    finally:
        stop_server(proc, conn)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("table", "latency", "requests"))
    ap.add_argument("--taskruns", type=int, default=10_000)
    ap.add_argument("--changes", type=int, default=200)
    ap.add_argument("--latency-taskruns", type=int, default=100, help="TaskRuns present during the latency benchmark")
    ap.add_argument("--spacing", type=float, default=0.02, help="seconds between status changes (latency)")
    ap.add_argument("--seconds", type=float, default=60.0, help="watch duration of the request-count benchmark")
    args = ap.parse_args()
    if not args.only or args.only == "table":
        print("table   ", asyncio.run(bench_table(args.taskruns)), flush=True)
    if not args.only or args.only == "latency":
        print("latency ", asyncio.run(bench_latency(args.changes, args.spacing, args.latency_taskruns)), flush=True)
    if not args.only or args.only == "requests":
        print("requests", asyncio.run(bench_requests(args.seconds)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
