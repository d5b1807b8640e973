"""Workload-runner overhead (run by hand: `.venv/bin/python tests/benchmarks/bench_loadgen.py`).

In one run: start the simulator with no simulated latency (``--speed 0``) on
127.0.0.1, then drive the same number of streaming completions with the same
concurrency, in this single process,

(a) with :class:`backends.loadgen.WorkloadRunner` (measuring TTFT/ITL/latency,
    live stats, per-request rows), and
(b) with plain httpx: one ``AsyncClient`` whose pool holds all N connections,
    N workers each posting the same bodies and draining the stream
    (``aiter_bytes``, i.e. the least work a client can do), and
(c) the same plain httpx code with the runner's pool layout (clients of
    ``SHARD_CONNECTIONS`` connections; httpcore's pool costs O(connections) per
    request, so this is the like-for-like baseline for the runner's own overhead),

alternating (a), (b), (c) for a few rounds after a warm-up, and print the request
rates (median over rounds), the client CPU per request (``time.process_time``,
this process only: much less disturbed by other load on the machine than wall
time) and the ratios. Target: (a) >= 80% of the plain-httpx rate.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from backends.loadgen import WorkloadRunner  # noqa: E402
from backends.loadgen.runner import SHARD_CONNECTIONS  # noqa: E402
from backends.loadgen.schedule import lengths, make_prompt  # noqa: E402
from config.catalog import make_workload  # noqa: E402

MODEL = "facebook/opt-125m"


def start_sim() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "backends.sim", MODEL, "--host", "127.0.0.1", "--port", "0", "--speed", "0",
         "--startup-delay", "0", "--disable-log-stats", "--max-num-seqs", "1024"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    found: list[str] = []
    ready = threading.Event()

    def drain() -> None:
        for line in proc.stdout:
            m = re.search(r"Uvicorn running on (http://\S+)", line)
            if m:
                found.append(m.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    ready.wait(30)
    if not found:
        proc.kill()
        raise SystemExit("simulator did not start")
    return proc, found[0]


def profile(args, n: int):
    return make_workload("custom", {
        "prompt_tokens": args.prompt, "output_tokens": args.output, "max_requests": n,
        "rate_type": "throughput", "max_concurrency": args.concurrency, "random_seed": 1,
    })


async def run_loadgen(url: str, args, n: int, results: Path | None) -> tuple[float, dict]:
    runner = WorkloadRunner(url, MODEL, profile(args, n), results_path=results, metrics_interval=0.5)
    t0, c0 = time.perf_counter(), time.process_time()
    async for _ in runner.events():
        pass
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    s = runner.summary
    assert s["completed"] == n, s
    return n / dt, cpu / n, s


async def run_plain(url: str, args, n: int, pool: int | None = None) -> tuple[float, float]:
    """Plain httpx: one client holding every connection (pool=None), or clients of ``pool`` connections."""
    # Same bodies as the runner sends (prompt text, max_tokens, stream options).
    gen = lengths(profile(args, n))
    bodies = []
    for i in range(n):
        prompt, out = next(gen)
        bodies.append(json.dumps({
            "model": MODEL, "prompt": make_prompt(i, prompt), "max_tokens": out, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True},
        }, separators=(",", ":")).encode())
    size = pool or args.concurrency
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    headers = {"content-type": "application/json"}
    it = iter(bodies)
    failures = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal failures
        for body in it:
            async with client.stream("POST", url + "/v1/completions", content=body, headers=headers) as r:
                async for _ in r.aiter_bytes():
                    pass
                failures += r.status_code != 200

    clients = [httpx.AsyncClient(limits=limits, timeout=600) for _ in range(-(-args.concurrency // size))]
    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(clients[i % len(clients)]) for i in range(args.concurrency)))
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    for client in clients:
        await client.aclose()
    assert failures == 0
    return n / dt, cpu / n


async def main(args) -> None:
    print(f"python {sys.version.split()[0]} ({platform.python_implementation()}) on {platform.platform()}, "
          f"{platform.machine()}, {os.cpu_count()} CPUs, httpx {httpx.__version__}, "
          f"sniffio {'present' if importlib.util.find_spec('sniffio') else 'MISSING (slower httpcore)'}")
    print(f"requests={args.requests} concurrency={args.concurrency} prompt={args.prompt} tokens "
          f"output={args.output} tokens rounds={args.rounds} (simulator --speed 0, separate process)")
    kinds = ("runner", "plain-1", f"plain-{SHARD_CONNECTIONS}")
    rates: dict[str, list[float]] = {k: [] for k in kinds}
    cpus: dict[str, list[float]] = {k: [] for k in kinds}
    proc, url = start_sim()
    summary: dict = {}
    try:
        warm = min(300, args.requests)  # imports, first connections
        await run_loadgen(url, args, warm, None)
        await run_plain(url, args, warm)
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.rounds):
                rate, cpu, summary = await run_loadgen(url, args, args.requests, Path(tmp) / f"r{r}.json")
                rates["runner"].append(rate)
                cpus["runner"].append(cpu)
                for kind, pool in (("plain-1", None), (f"plain-{SHARD_CONNECTIONS}", SHARD_CONNECTIONS)):
                    rate, cpu = await run_plain(url, args, args.requests, pool)
                    rates[kind].append(rate)
                    cpus[kind].append(cpu)
                print(f"  round {r + 1}: " + "   ".join(
                    f"{k} {rates[k][-1]:7.1f} req/s ({cpus[k][-1] * 1e6:5.0f} us CPU/req)" for k in kinds))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    med = {k: statistics.median(v) for k, v in rates.items()}
    cpu = {k: statistics.median(v) for k, v in cpus.items()}
    shard = f"plain-{SHARD_CONNECTIONS}"
    print(f"(a) WorkloadRunner:                      {med['runner']:7.1f} req/s, {cpu['runner'] * 1e6:5.0f} us CPU/req "
          f"({med['runner'] * args.output:.0f} output tok/s)")
    print(f"(b) plain httpx, one client of {args.concurrency:3d} conns:  {med['plain-1']:7.1f} req/s, "
          f"{cpu['plain-1'] * 1e6:5.0f} us CPU/req")
    print(f"(c) plain httpx, clients of {SHARD_CONNECTIONS} conns:      {med[shard]:7.1f} req/s, "
          f"{cpu[shard] * 1e6:5.0f} us CPU/req  (the runner's own pool layout)")
    print(f"ratio a/b: {100 * med['runner'] / med['plain-1']:.1f}%   ratio a/c: {100 * med['runner'] / med[shard]:.1f}%"
          f"   (target >= 80%; medians of {args.rounds} rounds)")
    print(f"CPU-time ratio c/a (plain CPU per request / runner CPU per request, insensitive to other load): "
          f"{100 * cpu[shard] / cpu['runner']:.1f}%")
    print(f"last runner summary: ttft p50 {summary['ttft_ms']['median']:.2f} ms, "
          f"itl mean {summary['itl_ms']['mean']:.3f} ms, latency p90 {summary['latency_ms']['p90']:.2f} ms")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--output", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(ap.parse_args()))
