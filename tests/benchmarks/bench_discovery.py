"""Model discovery in a cluster's Hugging Face hub over real sshd (run by hand, as root).

    .venv/bin/python tests/benchmarks/bench_discovery.py [--models 40] [--runs 5]

Starts the test cluster (sshd on loopback; see tests/integration/slurm/cluster.py),
makes a hub of ``--models`` models (``models--ORG--NAME/{refs/main,snapshots/REV/config.json}``)
and times, as a user runs them, min over ``--runs``:

1. ``sweepdeck alvis connect --list-models --refresh-models``: SSH connect, one
   remote scan command for the whole hub, merge, print.
2. ``sweepdeck alvis connect --list-models`` with the profile's cached scan: no SSH.
3. The simple alternative to one scan command: one SSH command per model
   (``ssh … ls SNAPSHOTS; grep CONFIG``), as a shell script looping over
   ``ls HUB`` would do, with the same OpenSSH client and key.

What it leaves out: a real login node is farther away than loopback (each
round trip costs more there, which favours the single command even more) and
its shared filesystem is slower to list.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.integration.slurm.cluster import TestCluster  # noqa: E402 - after the sys.path line above


def make_hub(root: Path, n: int) -> Path:
    hub = root / "hub"
    for i in range(n):
        folder = hub / f"models--org{i % 7}--model-{i}-{(i % 9) + 1}B"
        snap = folder / "snapshots" / f"{i:040x}"
        snap.mkdir(parents=True)
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text(f"{i:040x}")
        (snap / "config.json").write_text(json.dumps({"max_position_embeddings": 4096 * (1 + i % 8)}))
    os.chmod(root, 0o755)
    return hub


def timed(argv: list[str], env: dict[str, str], runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        best = min(best, time.perf_counter() - start)
        if proc.returncode != 0:
            sys.exit(f"{argv} failed: {proc.stdout}{proc.stderr}")
    return best


def main() -> None:
    import yaml

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=40)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    cluster = TestCluster().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmpd = Path(tmp)
            hub = make_hub(cluster.base / "home", args.models)
            cfg = tmpd / "config.yaml"
            cfg.write_text(yaml.safe_dump({"profiles": {"bench": {
                "backend": "slurm", "ssh_host": "127.0.0.1", "ssh_port": cluster.ssh_port, "ssh_user": cluster.user,
                "ssh_key": str(cluster.client_key), "known_hosts": str(tmpd / "known_hosts"), "hub": str(hub),
            }}}))
            env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(tmpd / "cache")}
            cli = [sys.executable, "-m", "tui.cli", "--config", str(cfg), "alvis", "connect", "--list-models"]
            scan = timed(cli + ["--refresh-models"], env, args.runs)
            cached = timed(cli, env, args.runs)
            ssh = ["ssh", "-p", str(cluster.ssh_port), "-i", str(cluster.client_key), "-o", "BatchMode=yes",
                   "-o", f"UserKnownHostsFile={tmpd / 'known_hosts'}", "-o", "StrictHostKeyChecking=accept-new",
                   f"{cluster.user}@127.0.0.1"]
            folders = sorted(p.name for p in hub.iterdir())
            def one(folder: str) -> str:
                remote = (f"ls -1t {hub}/{folder}/snapshots | head -n 1; "
                          f"grep -o 'max_position_embeddings[^,}}]*' {hub}/{folder}/snapshots/*/config.json")
                return f"{shlex.join(ssh)} {shlex.quote(remote)} >/dev/null"

            script = "\n".join([f"{shlex.join(ssh)} ls {shlex.quote(str(hub))} >/dev/null"] + [one(f) for f in folders])
            per_model = timed(["sh", "-c", script], env, args.runs)
    finally:
        cluster.stop()
    print(f"hub of {args.models} models on loopback sshd, min of {args.runs}:")
    print(f"  --list-models --refresh-models (one scan command): {scan:.2f} s")
    print(f"  --list-models from the profile's cache (no SSH):   {cached:.2f} s")
    print(f"  one ssh command per model (the simple loop):       {per_model:.2f} s")


if __name__ == "__main__":
    main()
