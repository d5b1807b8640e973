"""``sweepdeck tekton render`` against upstream tektonc on tektonc's own samples, same run.

Run by hand (never collected by pytest)::

    .venv/bin/python tests/benchmarks/bench_tekton_render.py --tektonc /path/to/tektonc/tektonc.py [--rounds 5]

For every sample template in ``../shared/reference/tektonc-data-collection/tektoncsample/`` that
tektonc renders, and for the BLIS campaign's values with sweepdeck's inference-perf template:

* ``process``: a fresh ``sweepdeck tekton render -t T -f values.yaml`` process, wall time to exit
  (what a user waits for), median of ``--rounds``; the same for ``python tektonc.py -t T -f
  values.yaml``, run alternately with it, when ``--tektonc`` names upstream's script (it is not
  part of this project: clone github.com/inference-sim/tektonc-data-collection). Output is piped.
* ``in-process``: ``render_files`` alone (no interpreter start-up), median of ``--rounds``.

It also checks the two outputs are identical (addresses of printed methods aside) so the figures
compare the same work. What it leaves out: the first run's cold page cache (one warm-up round
is dropped), and YAML writing to a terminal.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
REFERENCE = Path("/work/shared/reference/tektonc-data-collection")


def _walls(commands: list[list[str]], rounds: int) -> tuple[list[float], list[str]]:
    """Median wall time of each command, run alternately (so a busy machine slows them alike)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    times: list[list[float]] = [[] for _ in commands]
    outs = [""] * len(commands)
    for i in range(rounds + 1):
        for k, argv in enumerate(commands):
            start = time.perf_counter()
            proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
            elapsed = time.perf_counter() - start
            if proc.returncode != 0:
                raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
            outs[k] = proc.stdout
            if i:  # the first round warms the page cache
                times[k].append(elapsed)
    return [statistics.median(t) for t in times], outs


def _in_process(template: Path, values: Path, rounds: int) -> float:
    from backends.tekton.render import render_files

    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        render_files(template, values)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tektonc", type=Path, help="upstream tektonc.py, to compare with")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    from backends.tekton.build import INFERENCE_PERF_TEMPLATE
    from templates.render import template_path

    cases = [(t, t.parent / "values.yaml") for t in sorted((REFERENCE / "tektoncsample").glob("*/*.yaml.j2"))
             if t.with_name(t.name.replace(".yaml.j2", ".tektonc-output.yaml")).exists()]
    campaign = REFERENCE / "blis-campaign-14-qwen3-14b-h100-codegen" / "values.yaml"
    cases.append((template_path(INFERENCE_PERF_TEMPLATE), campaign))
    print(f"{'sample':<42} {'sweepdeck':>10} {'tektonc':>10} {'in-process':>11}  same output")
    for template, values in cases:
        commands = [[sys.executable, "-m", "tui.cli", "tekton", "render", "-t", str(template), "-f", str(values)]]
        upstream = args.tektonc and template.parent.parent.name == "tektoncsample"
        if upstream:
            commands.append([sys.executable, str(args.tektonc), "-t", str(template), "-f", str(values)])
        seconds, outs = _walls(commands, args.rounds)
        theirs, same = "-", "-"
        if upstream:
            theirs = f"{seconds[1] * 1000:.0f} ms"
            same = str(re.sub(r" at 0x[0-9a-f]+", "", outs[0]) == re.sub(r" at 0x[0-9a-f]+", "", outs[1]))
        name = f"{template.parent.name}/{template.name}"
        inner = _in_process(template, values, args.rounds)
        print(f"{name:<42} {seconds[0] * 1000:>7.0f} ms {theirs:>10} {inner * 1000:>8.1f} ms  {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
