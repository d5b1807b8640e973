"""Benchmark: requests/s the simulator serves with no simulated latency (``--speed 0``).

Starts ``python -m backends.sim`` as a subprocess on a free port, then drives it
with one httpx AsyncClient (one process, like the load generator) at a fixed
concurrency: non-streaming completions, then streaming chat completions.
Also measures the simulator's time from exec to "Application startup complete".

Run by hand:

    .venv/bin/python tests/benchmarks/bench_sim.py [--requests 3000] [--concurrency 32] [--tokens 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def start_sim(extra: list[str]) -> tuple[subprocess.Popen, str, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "backends.sim", "bench-model", "--host", "127.0.0.1", "--port", "0", *extra],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = None
    startup = 0.0
    for line in proc.stderr:
        if "Application startup complete." in line:
            startup = time.perf_counter() - t0
        match = re.search(r"Uvicorn running on (http://\S+)", line)
        if match:
            url = match.group(1)
            break
    if url is None:
        raise SystemExit("simulator did not start")
    return proc, url, startup


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive_aiohttp(url: str, n: int, concurrency: int, tokens: int, stream: bool) -> tuple[float, int]:
    """Same load with aiohttp (a cheaper client), to show what the server itself sustains."""
    import aiohttp

    errors = 0
    queue = iter(range(n))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, connector=connector) as session:

        async def worker() -> None:
            nonlocal errors
            for _ in queue:
                if stream:
                    body = {"model": "bench-model", "messages": [{"role": "user", "content": "hello " * 32}],
                            "max_tokens": tokens, "ignore_eos": True, "stream": True}
                    async with session.post("/v1/chat/completions", json=body) as resp:
                        chunks = 0
                        async for line in resp.content:
                            if line.startswith(b"data: "):
                                chunks += 1
                        ok = resp.status == 200 and chunks == tokens + 2
                else:
                    body = {"model": "bench-model", "prompt": "hello " * 32, "max_tokens": tokens, "ignore_eos": True}
                    async with session.post("/v1/completions", json=body) as resp:
                        data = await resp.json()
                        ok = resp.status == 200 and data["usage"]["completion_tokens"] == tokens
                errors += 0 if ok else 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - t0, errors


async def drive(url: str, n: int, concurrency: int, tokens: int, stream: bool) -> tuple[float, int]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    done = 0
    errors = 0
    queue = iter(range(n))

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal done, errors
            for _ in queue:
                if stream:
                    body = {
                        "model": "bench-model",
                        "messages": [{"role": "user", "content": "hello " * 32}],
                        "max_tokens": tokens,
                        "ignore_eos": True,
                        "stream": True,
                    }
                    async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
                        chunks = 0
                        async for line in resp.aiter_lines():
                            if line.startswith("data: "):
                                chunks += 1
                        ok = resp.status_code == 200 and chunks == tokens + 2  # role + tokens + [DONE]
                else:
                    body = {"model": "bench-model", "prompt": "hello " * 32, "max_tokens": tokens, "ignore_eos": True}
                    resp = await client.post("/v1/completions", json=body)
                    ok = resp.status_code == 200 and resp.json()["usage"]["completion_tokens"] == tokens
                done += 1
                errors += 0 if ok else 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - t0, errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=16)
    args = ap.parse_args()

    proc, url, startup = start_sim(["--speed", "0", "--startup-delay", "0", "--max-num-seqs", "1024"])
    try:
        print(f"startup to 'Application startup complete': {startup * 1000:.0f} ms (--startup-delay 0)")
        for client, fn in (("httpx", drive), ("aiohttp", drive_aiohttp)):
            for stream in (False, True):
                asyncio.run(fn(url, min(200, args.requests), args.concurrency, args.tokens, stream))  # warm-up
                server_cpu = cpu_seconds(proc.pid)
                elapsed, errors = asyncio.run(fn(url, args.requests, args.concurrency, args.tokens, stream))
                server_cpu = cpu_seconds(proc.pid) - server_cpu
                kind = "streaming chat" if stream else "completions"
                print(
                    f"{client:7s} {kind:14s}: {args.requests} req x {args.tokens} tokens, conc {args.concurrency}: "
                    f"{args.requests / elapsed:,.0f} req/s, {args.requests * args.tokens / elapsed:,.0f} tokens/s, "
                    f"{errors} errors; server CPU {server_cpu / args.requests * 1e3:.2f} ms/request"
                )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
