"""``python -m backends.loadgen BASE_URL MODEL``: run a workload against any OpenAI-compatible server.

Prints one ``[METRICS]`` line per update and a summary (TTFT, ITL, TPOT,
latency; a ``[WARN]`` line when the client itself limited the measurement);
writes the results JSON with ``--results``. Exit code: 0 when every request completed, 1 when
some failed or were cancelled, 2 on bad input, 130 after Ctrl+C.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal
import sys
from pathlib import Path

from config.errors import SweepdeckError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m backends.loadgen",
        description="Run a sweepdeck workload profile against an OpenAI-compatible endpoint (streaming).",
        epilog="Example: python -m backends.loadgen http://127.0.0.1:8000 facebook/opt-125m --workload chatbot "
        "--set max_requests=200 --set rate_type=poisson --results out.json",
    )
    p.add_argument("base_url", help="server root, e.g. http://127.0.0.1:8000")
    p.add_argument("model", help="served model name")
    p.add_argument("--workload", default="chatbot", help="preset name or keyword (default chatbot), or 'custom'")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a profile field (prompt_tokens, output_tokens, max_requests, rate, rate_type, "
                        "max_concurrency, max_seconds, random_seed, ...); repeatable")
    p.add_argument("--api", choices=("completions", "chat"), default="completions")
    p.add_argument("--results", type=Path, help="write the results JSON here")
    p.add_argument("--max-seconds", type=float, help="stop after this many seconds")
    p.add_argument("--timeout", type=float, default=600.0, help="per-request timeout in seconds (default 600)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between metrics lines (default 1)")
    p.add_argument("--catalog-dir", type=Path, help="directory with workload-presets.yaml (default: built-in)")
    p.add_argument("--workers", type=_workers, default=None,
                   help="worker processes (default: the CPU count, at most one per request in flight; "
                        "1 = this process)")
    p.add_argument("--json", action="store_true", help="print events and the summary as JSON lines")
    return p


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid worker count: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def resolve_profile(args):
    """The preset (or custom template) named by ``--workload`` with ``--set`` overrides applied."""
    from config.catalog import load_catalogs, make_workload

    values = {}
    for item in args.sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SweepdeckError(f"--set {item!r} is not KEY=VALUE.", "Example: --set prompt_tokens=500")
        values[key.strip()] = value.strip()
    workloads = load_catalogs(args.catalog_dir).workloads
    if args.workload.strip().lower() == "custom":
        return workloads.custom(**values)
    preset = workloads.match(args.workload)
    base = {k: v for k, v in dataclasses.asdict(preset.profile).items() if k != "app"}
    base.update(values)
    return make_workload(preset.name, base, source=f"workload {preset.name}")


def _ms(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def format_metrics(m, total: int) -> str:
    return (
        f"[METRICS] {m.completed + m.failed}/{total} done ({m.failed} failed), {m.in_flight} in flight, "
        f"{m.elapsed_s:.1f} s, {m.requests_per_s:.2f} req/s, {m.output_tokens_per_s:.0f} tok/s, "
        f"TTFT p50 {_ms(m.ttft_ms_p50)} p90 {_ms(m.ttft_ms_p90)} ms, ITL {_ms(m.itl_ms_mean)} ms, "
        f"TPOT {_ms(m.tpot_ms_mean)} ms, latency p90 {_ms(m.latency_ms_p90)} ms"
        + (" [client-limited]" if m.client_limited else "")
    )


_STAT_COLUMNS = ("mean", "median", "p90", "p99", "min", "max")
_END = {"max_requests": "all requests sent", "max_seconds": "max_seconds reached", "stopped": "stopped early"}


def format_summary(s: dict) -> str:
    invalid = f", {s['invalid']} invalid" if s.get("invalid") else ""
    lines = [
        f"requests: {s['count']} sent, {s['completed']} completed, {s['failed']} failed, {s['cancelled']} cancelled"
        f"{invalid} ({s['mode']}, {_END.get(s['stop_reason'], s['stop_reason'])}, {s['duration_s']:.1f} s, "
        f"{s.get('workers', 1)} worker{'s' if s.get('workers', 1) != 1 else ''})",
        f"throughput: {s['requests_per_s']:.2f} req/s, {s['output_tokens_per_s']:.1f} output tok/s "
        f"({s['total_output_tokens']} output, {s['total_prompt_tokens']} prompt tokens)",
        f"{'':12}" + "".join(f"{k:>10}" for k in _STAT_COLUMNS),
    ]
    rows = (("ttft_ms", "TTFT ms"), ("itl_ms", "ITL ms"), ("tpot_ms", "TPOT ms"), ("latency_ms", "latency ms"))
    for key, label in rows:
        d = s.get(key) or {}
        lines.append(f"{label:12}" + "".join(f"{_ms(d.get(k)):>10}" for k in _STAT_COLUMNS))
    for msg, n in s["errors"].items():
        lines.append(f"[ERROR] {n} x {msg}")
    client = s.get("client") or {}
    lag, cpu = (client.get("loop_lag_ms") or {}).get("p99"), client.get("cpu_pct_max")
    if lag is not None or cpu is not None:
        lines.append(f"client: event-loop lag p99 {_ms(lag)} ms, busiest worker {_ms(cpu)}% of a core")
    if client.get("limited"):
        lines.append(f"[WARN] {client['message']}")
    return "\n".join(lines)


async def amain(args) -> int:
    from backends.events import Metrics, to_dict
    from backends.loadgen import WorkloadRunner

    profile = resolve_profile(args)
    runner = WorkloadRunner(
        args.base_url, args.model, profile, results_path=args.results, api=args.api,
        max_seconds=args.max_seconds, timeout=args.timeout, metrics_interval=args.interval, workers=args.workers,
    )
    interrupted = False

    def on_signal() -> None:
        nonlocal interrupted
        interrupted = True
        runner.stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    if not args.json:
        print(f"[INFO] {profile.app}: {runner.mode.describe()}, {runner.max_requests} requests -> {runner.url} "
              f"({runner.workers} worker{'s' if runner.workers != 1 else ''})", flush=True)
    async for event in runner.events():
        if args.json:
            print(json.dumps(to_dict(event)), flush=True)
        elif isinstance(event, Metrics):  # a final Notice (client-limited) is said by the summary, with figures
            print(format_metrics(event, runner.max_requests), flush=True)
    summary = runner.summary or {}
    if args.json:
        print(json.dumps({"type": "Summary", **summary}), flush=True)
    else:
        print(format_summary(summary))
        if args.results:
            print(f"[INFO] results: {args.results}")
    if interrupted:
        return 130
    return 0 if summary.get("completed") == summary.get("count") == runner.max_requests else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(amain(args))
    except SweepdeckError as exc:
        print(f"[ERROR] {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
