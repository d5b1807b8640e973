"""Diagnosis cost per log line, and ``sweepdeck diagnose`` on a large saved log (run by hand).

    .venv/bin/python tests/benchmarks/bench_diagnosis.py [--repeat 20] [--rounds 7]

Input: the six real vLLM v0.19.0 start-up logs in ``$SWEEPDECK_REFERENCE/vllm-capacity/logs``
(10,109 lines, DEBUG level, 139 characters on average), repeated ``--repeat`` times.

1. Per-line cost on the live path. Every LogLine of a run goes through the
   session's diagnosis: :class:`backends.diagnosis.LogDiagnoser.feed` (context:
   settings, phase, root cause) against the stateless :func:`diagnose_line`
   alone (what the session called before) in the same process, interleaved,
   ``--rounds`` rounds; min and median µs per line.
2. ``sweepdeck diagnose FILE`` (a new process, as a user runs it) on the
   repeated logs with a CUDA-graph OOM at the end, against ``grep -n -E`` with
   vLLM's failure phrases, the simple alternative that finds the line but
   neither explains it nor computes a fix. Wall time, min of 3.

What it leaves out: logs of a failing run are shorter than this; lines that
match a rule cost more (the rule's regexes and fact extraction) but are rare.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from backends import diagnosis as dg  # noqa: E402 - after the sys.path line above

REFERENCE = Path(os.environ.get("SWEEPDECK_REFERENCE", "/work/shared/reference"))
GREP = (r"out of memory|OutOfMemoryError|KV cache memory|Free memory on device|derived max_model_len|"
        r"must be divisible|not divisible|does not recognize|not supported for now|NCCL error|"
        r"GatedRepoError|outgoing traffic|root cause above")
FAILURE = [
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 64.00 MiB. GPU 0 has a total capacity of "
    "79.19 GiB of which 22.88 MiB is free.",
    "(APIServer pid=1) RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}",
]


def real_lines() -> list[str]:
    lines: list[str] = []
    for path in sorted((REFERENCE / "vllm-capacity" / "logs").glob("*.log")):
        lines += path.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines:
        sys.exit(f"no reference logs under {REFERENCE}")
    return lines


def per_line(lines: list[str], rounds: int) -> dict[str, list[float]]:
    def timed(feed) -> float:
        start = time.perf_counter()
        for line in lines:
            feed(line)
        return (time.perf_counter() - start) / len(lines) * 1e6

    out: dict[str, list[float]] = {"diagnose_line (stateless)": [], "LogDiagnoser.feed (context)": []}
    for _ in range(rounds):
        out["diagnose_line (stateless)"].append(timed(dg.diagnose_line))
        out["LogDiagnoser.feed (context)"].append(timed(dg.LogDiagnoser().feed))
    return out


def wall(argv: list[str], runs: int = 3) -> float:
    best = float("inf")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=20, help="how many times the six logs are repeated")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    base = real_lines()
    lines = base * args.repeat
    print(f"input: {len(base)} real vLLM lines x {args.repeat} = {len(lines)} lines")
    for name, values in per_line(lines, args.rounds).items():
        print(f"  {name:30s} min {min(values):6.2f} us/line   median {statistics.median(values):6.2f} us/line")
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "vllm.log"
        log.write_text("\n".join(lines + FAILURE) + "\n")
        size = log.stat().st_size / 1e6
        diag = wall([sys.executable, "-m", "tui.cli", "diagnose", str(log)])
        grep = wall(["grep", "-n", "-E", GREP, str(log)])
        empty = Path(tmp) / "empty.log"
        empty.write_text("\n")
        start_up = wall([sys.executable, "-m", "tui.cli", "diagnose", str(empty)])
    print(f"sweepdeck diagnose on {size:.1f} MB ({len(lines) + 2} lines): {diag:.3f} s "
          f"(of which process start-up {start_up:.3f} s); grep -n -E: {grep:.3f} s")


if __name__ == "__main__":
    main()
