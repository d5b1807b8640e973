"""Benchmark: wall time of `sweepdeck --help` (target: median < 0.4 s over 10 runs).

Run by hand (never collected by pytest)::

    .venv/bin/python tests/benchmarks/bench_cli_help.py [--runs 10] [--importtime]

Each run is a fresh process, as a user typing the command gets. With
``--importtime`` it also prints the ten slowest imports of one run
(``python -X importtime``), to find what to make lazy.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET_S = 0.4


def command() -> list[str]:
    script = Path(sys.executable).parent / "sweepdeck"
    return [str(script), "--help"] if script.exists() else [sys.executable, "-m", "tui.cli", "--help"]


def time_once(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.decode()[-2000:]}")
    return elapsed


def slowest_imports(n: int = 10) -> list[tuple[int, str]]:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import sys; sys.argv=['sweepdeck','--help']\n"
         "from tui.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    rows = []
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m:
            rows.append((int(m.group(2)), m.group(3).count(" ") // 2 * " " + m.group(4)))
    rows.sort(reverse=True)
    return rows[:n]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--importtime", action="store_true", help="also list the slowest imports")
    args = parser.parse_args()
    cmd = command()
    time_once(cmd)  # warm the page cache / .pyc files
    times = [time_once(cmd) for _ in range(args.runs)]
    median = statistics.median(times)
    print(f"command: {' '.join(cmd)}")
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}")
    print(f"runs: {args.runs}  median: {median * 1000:.0f} ms  min: {min(times) * 1000:.0f} ms  max: "
          f"{max(times) * 1000:.0f} ms")
    print(f"target: < {TARGET_S * 1000:.0f} ms -> {'OK' if median < TARGET_S else 'TOO SLOW'}")
    if args.importtime or median >= TARGET_S:
        print("slowest imports (cumulative us):")
        for us, name in slowest_imports():
            print(f"  {us:>8}  {name}")
    return 0 if median < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
