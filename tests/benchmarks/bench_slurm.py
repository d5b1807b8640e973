"""Benchmarks of the slurm backend against a real sshd + single-node SLURM (run by hand, as root).

    .venv/bin/python tests/benchmarks/bench_slurm.py [--lines 1000] [--requests 2000]

1. Log latency: a line appended to the job's vllm.out (on the "cluster") until
   ``sweepdeck alvis connect`` prints it as ``[VLLM OUT] ...`` (p50/p95 over N lines).
2. Tunnel throughput: requests/s through the SSH tunnel (held by the
   ``sweepdeck alvis connect`` process) versus directly to the simulator, same
   client, same run.
3. squeue load: squeue calls made by the shared poller in a fixed time with
   1, 10 and 50 watchers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.integration.slurm.cluster import TestCluster, free_port  # noqa: E402 - after the sys.path line above


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def write_config(cluster: TestCluster, tmp: Path, name: str = "bench") -> tuple[Path, int]:
    import yaml

    models = tmp / "models.json"
    models.write_text(json.dumps({"gpt-oss-20b": {"path": "/mimer/hub/models--openai--gpt-oss-20b/snapshots/x/",
                                                  "max_model_len": 10000, "description": "GPT OSS 20B model"}}))
    port = free_port()
    cfg = tmp / "config.yaml"
    cfg.write_text(yaml.safe_dump({"profiles": {name: {
        "backend": "slurm", "ssh_host": "127.0.0.1", "ssh_port": cluster.ssh_port, "ssh_user": cluster.user,
        "ssh_key": str(cluster.client_key), "known_hosts": str(tmp / "known_hosts"), "gpus": "A40:1",
        "container": f"{sys.executable} -m backends.sim serve --startup-delay 0.1 --speed 0 --stats-interval 0",
        "server_host": "127.0.0.1", "workdir": str(cluster.base / "home" / "runs"), "local_port": port,
        "models": str(models), "poll_interval": 0.5, "time": "0:30:00",
    }}}))
    return cfg, port


def bench_connect(cluster: TestCluster, tmp: Path, lines: int, requests: int) -> dict:
    cfg, local_port = write_config(cluster, tmp)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SWEEPDECK_STATE_DIR": str(tmp / "state")}
    proc = subprocess.Popen([sys.executable, "-m", "tui.cli", "--config", str(cfg), "alvis", "connect"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    got: queue.Queue[tuple[float, str]] = queue.Queue()

    def reader() -> None:
        for line in proc.stdout:
            got.put((time.perf_counter(), line.rstrip("\n")))

    threading.Thread(target=reader, daemon=True).start()

    def wait_for(text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                _, line = got.get(timeout=1)
            except queue.Empty:
                continue
            if text in line:
                return line
        raise RuntimeError(f"no {text!r}")

    try:
        t0 = time.perf_counter()
        wait_for("Job submitted: ")
        wait_for("Streaming logs")
        startup = time.perf_counter() - t0
        address = None
        for run in (cluster.base / "home" / "runs").iterdir():
            if (run / "server_address.txt").exists():
                address = (run / "server_address.txt").read_text().strip()
                out_path = run / "vllm.out"
        assert address, "no server address"
        server_port = int(address.rpartition(":")[2])
        time.sleep(0.5)
        while not got.empty():
            got.get()

        # 1. log latency -------------------------------------------------------------
        latencies = []
        with open(out_path, "a") as fh:
            for i in range(lines):
                sent = time.perf_counter()
                fh.write(f"bench-line-{i}\n")
                fh.flush()
                while True:
                    ts, line = got.get(timeout=10)
                    if line == f"[VLLM OUT] bench-line-{i}":
                        latencies.append((ts - sent) * 1000)
                        break
                time.sleep(0.002)

        # 2. tunnel vs direct -----------------------------------------------------------
        rates = asyncio.run(_throughput(local_port, server_port, requests))
        return {
            "startup_to_streaming_s": round(startup, 2),
            "log_latency_ms": {"n": len(latencies), "p50": round(pct(latencies, 50), 2),
                               "p95": round(pct(latencies, 95), 2),
                               "max": round(max(latencies), 2), "mean": round(statistics.mean(latencies), 2)},
            "throughput": rates,
        }
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _throughput(local_port: int, server_port: int, n: int, concurrency: int = 16) -> dict:
    import httpx

    body = {"model": "openai/gpt-oss-20b", "prompt": "hello", "max_tokens": 4}

    async def run(port: int) -> float:
        sem = asyncio.Semaphore(concurrency)
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(trust_env=False, timeout=30, limits=limits) as client:
            async def one() -> None:
                async with sem:
                    r = await client.post(f"http://127.0.0.1:{port}/v1/completions", json=body)
                    r.raise_for_status()

            await asyncio.gather(*(one() for _ in range(50)))  # warm-up, keep-alive connections
            t0 = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(n)))
            return n / (time.perf_counter() - t0)

    direct, tunnel = [], []
    for _ in range(2):  # interleaved so both see the same machine load
        direct.append(await run(server_port))
        tunnel.append(await run(local_port))
    d, t = max(direct), max(tunnel)
    return {"requests": n, "concurrency": concurrency, "direct_rps": round(d, 1), "tunnel_rps": round(t, 1),
            "ratio": round(t / d, 3)}


def bench_squeue(cluster: TestCluster, tmp: Path, seconds: float = 5.0, interval: float = 0.5) -> dict:
    from backends.cleanup import REGISTRY
    from backends.slurm import SlurmBackend
    from config.settings import load_settings

    cfg, _ = write_config(cluster, tmp, "squeue")
    os.environ["SWEEPDECK_STATE_DIR"] = str(tmp / "state2")

    async def main() -> dict:
        settings = load_settings(cfg)
        prof = settings.profiles["squeue"]
        from config.settings import Profile

        prof = Profile(prof.name, prof.backend, {**prof.options, "sbatch_args": ["--hold"], "poll_interval": interval})
        backend = SlurmBackend(settings, prof)
        runs = [await backend.launch(backend.make_spec("gpt-oss-20b")) for _ in range(2)]
        out = {}
        try:
            for watchers in (1, 10, 50):
                poller = await backend.poller()
                subs = [poller.watch(runs[i % 2].handle["job_id"]) for i in range(watchers)]
                await asyncio.gather(*(s.next(10) for s in subs))
                before = poller.calls
                await asyncio.sleep(seconds)
                out[f"{watchers}_watchers"] = poller.calls - before
                for s in subs:
                    s.close()
                await asyncio.sleep(interval * 1.5)  # the poller idles once nobody watches
        finally:
            for r in runs:
                await backend.cancel(r)
            await backend.close()
            await REGISTRY.run(10)
        out["seconds"] = seconds
        out["interval_s"] = interval
        out["expected_per_profile"] = round(seconds / interval)
        return out

    return asyncio.run(main())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=2000)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (munged/sshd test cluster)", file=sys.stderr)
        return 2
    cluster = TestCluster().start()
    try:
        with tempfile.TemporaryDirectory(prefix="sweepdeck-bench-") as tmp:
            results = {"connect": bench_connect(cluster, Path(tmp), args.lines, args.requests)}
            results["squeue"] = bench_squeue(cluster, Path(tmp))
    finally:
        cluster.stop()
    print(json.dumps(results, indent=2))
    lat = results["connect"]["log_latency_ms"]
    thr = results["connect"]["throughput"]
    print(f"\nlog latency p50 {lat['p50']} ms, p95 {lat['p95']} ms over {lat['n']} lines (target p95 < 250 ms)")
    print(f"tunnel {thr['tunnel_rps']} req/s vs direct {thr['direct_rps']} req/s: "
          f"ratio {thr['ratio']:.0%} (target >= 50%)")
    sq = results["squeue"]
    print(f"squeue calls in {sq['seconds']} s at {sq['interval_s']} s interval: "
          + ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in sq.items() if k.endswith("watchers")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
