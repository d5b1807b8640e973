"""Load-generator accuracy and capacity against server-side truth (run by hand).

    PYTHONPATH=$PWD .venv/bin/python tests/benchmarks/bench_loadgen.py [--guidellm /tmp/guidellm-venv/bin/guidellm]

Part 1, accuracy. One simulator (``python -m backends.sim``, known TTFT and ITL,
no per-sequence or prefill cost, ``max_num_seqs`` above the concurrency) serves,
one after another in the same run and for each concurrency (default 64 and
256, 64-token outputs), closed-loop streaming completions from

(a) sweepdeck's :class:`~backends.loadgen.WorkloadRunner` (default workers),
(b) a minimal aiohttp client (one process, uvloop, ``TCPConnector(limit=0)``,
    a timestamp per ``iter_any`` chunk: the strongest simple alternative),
(c) guidellm 0.8.1 when ``--guidellm`` names its executable (it runs offline
    with the word-level tokenizer from the shared reference folder).

Truth is what the simulator measured itself for exactly those requests
(differences of its ``/metrics`` before and after each client):
TTFT = ``sweepdeck_sim:http_time_to_first_token_seconds`` (request bytes read
→ first token written; vLLM's own TTFT starts later, after HTTP parsing);
ITL = ``vllm:inter_token_latency_seconds``; TPOT =
``vllm:time_per_output_token_seconds``; req/s = requests finished / the
engine's busy window (``sweepdeck_sim:busy_since``/``idle_since``). Each
client's error vs truth is printed, and the client CPU (this process for
(a)'s parent and (b); not guidellm's).

Part 3, in flight: at concurrency 256 and 1,000 (requests that never finish),
the simulator's running-requests gauge must reach the concurrency (no
connection cap in between).

Part 2, capacity. A simulator with ``--speed 0`` (no latency at all): the most
requests/s the runner gets through vs the minimal aiohttp client, alternating
for a few rounds, medians.

What it leaves out: the simulator and the clients share this machine's CPUs
(a real server would not take CPU from the client); only closed-loop
(concurrent) load; one response shape (one token per chunk, 64 tokens); means
only (the simulator's histograms have coarse buckets, so no percentiles of
truth); loopback, no TLS and no network latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from backends.loadgen import WorkloadRunner  # noqa: E402  (after the sys.path line: run as a script)
from backends.loadgen.schedule import lengths, make_prompt  # noqa: E402 - after the sys.path line above
from config.catalog import make_workload  # noqa: E402 - after the sys.path line above

MODEL = "facebook/opt-125m"
TOKENIZER = Path("/work/shared/reference/benchmark-reports/tokenizer-wordlevel")


# ---------------------------------------------------------------- the simulator and its truth
def start_sim(*extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "backends.sim", MODEL, "--host", "127.0.0.1", "--port", "0", "--startup-delay", "0",
         "--disable-log-stats", "--max-num-seqs", "2048", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
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


def stop_sim(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def scrape(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"((?:vllm|sweepdeck_sim):\w+?)(_sum|_count)?\{([^}]*)\} (\S+)$", line)
        if m and "le=" not in m.group(3):
            key = m.group(1) + (m.group(2) or "")
            if "finished_reason" in m.group(3):
                key += "[" + m.group(3).rsplit('finished_reason="', 1)[1].rstrip('"') + "]"
            out[key] = float(m.group(4))
    return out


def truth(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    def mean(name: str) -> float:
        n = after[name + "_count"] - before[name + "_count"]
        return (after[name + "_sum"] - before[name + "_sum"]) / n * 1000.0

    done = sum(after[k] - before.get(k, 0) for k in after
               if k.startswith("vllm:request_success_total[") and "abort" not in k)
    window = after["sweepdeck_sim:idle_since_timestamp_seconds"] - after["sweepdeck_sim:busy_since_timestamp_seconds"]
    return {
        "ttft": mean("sweepdeck_sim:http_time_to_first_token_seconds"),
        "itl": mean("vllm:inter_token_latency_seconds"),
        "tpot": mean("vllm:time_per_output_token_seconds"),
        "rps": done / window,
        "engine_ttft": mean("vllm:time_to_first_token_seconds"),
    }


def wait_idle(url: str) -> None:
    for _ in range(600):
        m = scrape(url)
        if m["vllm:num_requests_running"] == 0 and m["vllm:num_requests_waiting"] == 0:
            return
        time.sleep(0.05)


# ---------------------------------------------------------------- the clients
def profile(n: int, concurrency: int, prompt: int, output: int):
    return make_workload("custom", {"prompt_tokens": prompt, "output_tokens": output, "max_requests": n,
                                    "rate_type": "concurrent", "max_concurrency": concurrency, "random_seed": 1})


async def run_runner(url: str, n: int, c: int, prompt: int, output: int, workers: int | None) -> dict:
    runner = WorkloadRunner(url, MODEL, profile(n, c, prompt, output), metrics_interval=0.5, workers=workers)
    cpu0 = time.process_time()
    async for _ in runner.events():
        pass
    s = runner.summary
    assert s["completed"] == n, s
    client = s["client"]
    cpu = ", ".join(f"{c:.0f}%" for c in client["cpu_pct"] if c is not None) or "-"
    note = f"{s['workers']} workers, CPU {cpu}, lag p99 {client['loop_lag_ms']['p99'] or 0:.1f} ms"
    return {"ttft": s["ttft_ms"]["mean"], "itl": s["itl_ms"]["mean"], "tpot": s["tpot_ms"]["mean"],
            "rps": s["requests_per_s"], "duration": s["duration_s"],
            "note": note + (" CLIENT-LIMITED" if client["limited"] else ""), "parent_cpu": time.process_time() - cpu0}


def bodies(n: int, c: int, prompt: int, output: int) -> list[bytes]:
    gen = lengths(profile(n, c, prompt, output))
    out = []
    for i in range(n):
        p, o = next(gen)
        out.append(json.dumps({"model": MODEL, "prompt": make_prompt(i, p), "max_tokens": o, "stream": True,
                               "ignore_eos": True, "stream_options": {"include_usage": True}}).encode())
    return out


async def run_aiohttp(url: str, n: int, c: int, prompt: int, output: int) -> dict:
    """The minimal client: what a careful person writes in 40 lines."""
    import aiohttp

    todo = iter(bodies(n, c, prompt, output))
    ttfts, itls, tpots = [], [], []
    ends: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def worker() -> None:
            for body in todo:
                t0 = time.perf_counter()
                first = last = 0.0
                chunks = 0
                async with session.post(url + "/v1/completions", data=body,
                                        headers={"content-type": "application/json"}) as resp:
                    async for data in resp.content.iter_any():
                        now = time.perf_counter()
                        k = data.count(b'"text":" ')
                        if k:
                            first = first or now
                            last = now
                            chunks += k
                ends.append(time.perf_counter())
                ttfts.append((first - t0) * 1000)
                itls.append((last - first) * 1000 / max(chunks - 1, 1))
                tpots.append((last - first) * 1000 / (output - 1))

        start, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(c)))
        dt = max(ends) - start
    return {"ttft": statistics.fmean(ttfts), "itl": statistics.fmean(itls), "tpot": statistics.fmean(tpots),
            "rps": n / dt, "duration": dt, "note": f"1 process, CPU {100 * (time.process_time() - cpu0) / dt:.0f}%"}


def run_guidellm(exe: str, url: str, n: int, c: int, prompt: int, output: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "b.json"
        argv = [exe, "run", "--backend", f"kind=openai_http,target={url},model={MODEL},request_format=/v1/completions",
                "--tokenizer", f"kind=huggingface_auto,model={TOKENIZER}",
                "--profile", f"kind=concurrent,streams={c}", "--constraint", f"kind=max_requests,count={n}",
                "--data", f"kind=synthetic_text,prompt_tokens={prompt},output_tokens={output}",
                "--output", f"kind=json,path={out}", "--disable-console"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        env.pop("PYTHONPATH", None)
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=1800)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError("guidellm failed: " + (proc.stderr or proc.stdout)[-2000:])
        bench = json.loads(out.read_text())["benchmarks"][0]
    m = bench["metrics"]
    ok = m["request_totals"]["successful"]
    itl = m["inter_token_latency_ms"]["successful"]["mean"]
    return {"ttft": m["time_to_first_token_ms"]["successful"]["mean"], "itl": itl,
            "tpot": itl,  # guidellm's ITL is (latency - TTFT) / (tokens - 1): vLLM's TPOT
            "rps": ok / bench["duration"], "duration": bench["duration"],
            "note": f"{ok} ok of {m['request_totals']['total']}"}


# ---------------------------------------------------------------- part 1
def pct(value: float, ref: float) -> str:
    return f"{100 * (value - ref) / ref:+.1f}%"


async def accuracy(args) -> None:
    proc, url = start_sim("--ttft-ms", str(args.ttft), "--itl-ms", str(args.itl), "--itl-ms-per-seq", "0",
                          "--prefill-us-per-token", "0")
    try:
        await run_runner(url, 200, 32, args.prompt, args.output, None)  # warm-up: imports, first connections
        p, o = args.prompt, args.output
        for c in args.concurrency:
            n = args.rounds * c
            print(f"\n== concurrency {c}, {n} requests, TTFT {args.ttft} ms, ITL {args.itl} ms, "
                  f"{args.output} output tokens ==")
            print(f"{'client':30}{'TTFT ms':>16}{'ITL ms':>16}{'TPOT ms':>16}{'req/s':>16}  notes")
            clients = [("sweepdeck runner", lambda n=n, c=c: run_runner(url, n, c, p, o, args.workers)),
                       ("sweepdeck runner --workers 1", lambda n=n, c=c: run_runner(url, n, c, p, o, 1)),
                       ("minimal aiohttp", lambda n=n, c=c: run_aiohttp(url, n, c, p, o))]
            if args.guidellm:
                clients.append(("guidellm 0.8.1", lambda n=n, c=c: asyncio.to_thread(
                    run_guidellm, args.guidellm, url, n, c, p, o)))
            for name, make in clients:
                wait_idle(url)
                time.sleep(0.2)  # a gap: the engine's busy window is this client's alone
                before = scrape(url)
                try:
                    got = await make()
                except Exception as exc:  # one client failing must not hide the others
                    print(f"{name:30} failed: {str(exc)[:300]}")
                    continue
                wait_idle(url)
                t = truth(before, scrape(url))
                print(f"{'  truth (server)':30}{t['ttft']:16.2f}{t['itl']:16.3f}{t['tpot']:16.3f}{t['rps']:16.1f}"
                      f"  vLLM-style engine TTFT {t['engine_ttft']:.2f} ms")
                print(f"{name:30}" + "".join(f"{got[k]:9.2f} {pct(got[k], t[k]):>6}" for k in ("ttft", "itl", "tpot"))
                      + f"{got['rps']:9.1f} {pct(got['rps'], t['rps']):>6}  {got['note']}")
    finally:
        stop_sim(proc)


# ---------------------------------------------------------------- part 2
async def capacity(args) -> None:
    proc, url = start_sim("--speed", "0")
    n, c = args.capacity_requests, args.capacity_concurrency
    rates: dict[str, list[float]] = {"runner": [], "runner-1": [], "aiohttp": []}
    try:
        await run_runner(url, 300, c, args.prompt, 16, None)
        await run_aiohttp(url, 300, c, args.prompt, 16)
        for r in range(args.capacity_rounds):
            rates["runner"].append((await run_runner(url, n, c, args.prompt, 16, args.workers))["rps"])
            rates["runner-1"].append((await run_runner(url, n, c, args.prompt, 16, 1))["rps"])
            rates["aiohttp"].append((await run_aiohttp(url, n, c, args.prompt, 16))["rps"])
            print(f"  round {r + 1}: " + "   ".join(f"{k} {v[-1]:7.1f} req/s" for k, v in rates.items()))
    finally:
        stop_sim(proc)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"\n--speed 0, {n} requests x {args.capacity_rounds} rounds, concurrency {c}, 16 output tokens (medians):")
    print(f"  sweepdeck runner (default workers): {med['runner']:7.1f} req/s  = "
          f"{100 * med['runner'] / med['aiohttp']:.0f}% of aiohttp")
    print(f"  sweepdeck runner --workers 1:       {med['runner-1']:7.1f} req/s  = "
          f"{100 * med['runner-1'] / med['aiohttp']:.0f}% of aiohttp")
    print(f"  minimal aiohttp client:             {med['aiohttp']:7.1f} req/s")


# ---------------------------------------------------------------- part 3
async def in_flight(args) -> None:
    """Requests in flight as the server sees them (its running-requests gauge), for each concurrency.

    A fresh simulator each time: it notices a client that went away only when it next sends a token.
    """
    for c in args.in_flight:
        proc, url = start_sim("--ttft-ms", "600000")
        try:
            runner = WorkloadRunner(url, MODEL, profile(c, c, 10, 4), metrics_interval=0.1)
            best, t0 = 0.0, time.perf_counter()
            async for event in runner.events():
                if runner._stopping or type(event).__name__ != "Progress" or event.running < c:
                    continue
                deadline = time.monotonic() + 30
                while best < c and time.monotonic() < deadline:
                    best = max(best, (await asyncio.to_thread(scrape, url))["vllm:num_requests_running"])
                    await asyncio.sleep(0.05)
                runner.stop()
        finally:
            stop_sim(proc)
        print(f"  concurrency {c:5d}: the server saw {best:.0f} requests running at once "
              f"({time.perf_counter() - t0:.1f} s, {runner.workers} workers)")


async def main(args) -> None:
    print(f"python {sys.version.split()[0]} on {platform.platform()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    if not args.skip_accuracy:
        await accuracy(args)
    if not args.skip_capacity:
        await capacity(args)
    if args.in_flight:
        print("\nin flight at the server (simulator gauge vllm:num_requests_running, max_num_seqs 2048):")
        await in_flight(args)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--rounds", type=int, default=20, help="requests per client = rounds x concurrency")
    ap.add_argument("--ttft", type=float, default=50.0)
    ap.add_argument("--itl", type=float, default=5.0)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--output", type=int, default=64)
    ap.add_argument("--workers", type=int, default=None, help="runner workers (default: its own default)")
    ap.add_argument("--guidellm", default=shutil.which("guidellm"), help="guidellm executable (default: on PATH)")
    ap.add_argument("--capacity-requests", type=int, default=3000)
    ap.add_argument("--capacity-concurrency", type=int, default=64)
    ap.add_argument("--capacity-rounds", type=int, default=3)
    ap.add_argument("--in-flight", type=int, nargs="*", default=[256, 1000],
                    help="concurrencies whose in-flight count is checked at the server")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-capacity", action="store_true")
    a = ap.parse_args()
    try:
        import uvloop

        uvloop.install()  # the aiohttp client's best case; the runner's parent loop barely works
    except ImportError:
        pass
    asyncio.run(main(a))
