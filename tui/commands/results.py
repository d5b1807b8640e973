"""``sweepdeck results``: see, compare, plot, export and import what experiments measured.

RUN is a saved run id (``sweepdeck runs``; imported results too), a report
file or directory (guidellm, inference-perf, BLIS ``<id>-<tp>/`` directories,
a sweepdeck results.json), or ``queue:URL/MODEL_VERSION`` for an Argo sweep's
results in the work queue.

A report that cannot be read (empty, truncated, not JSON, an unknown version)
is one line on stderr naming the file and what was expected; whatever else
was asked for still shows, and the exit code is 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import IO, Any

RUN_HELP = "saved run id, report file or directory, or queue:URL/MODEL_VERSION"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "results",
        help="show, compare, plot, export or import benchmark results",
        description="Results of runs and of outside reports (guidellm, inference-perf, BLIS, the Argo work queue).",
    )
    token = argparse.ArgumentParser(add_help=False)
    token.add_argument("--queue-token", metavar="TOKEN",
                       help="bearer token for the work-queue API (default: $SWEEPDECK_QUEUE_TOKEN)")
    sub = p.add_subparsers(dest="results_command", metavar="ACTION", required=True)

    imp = sub.add_parser("import",
                         help="add a report file or directory as a result of its own (it appears with the runs)")
    imp.add_argument("path", metavar="PATH", help="guidellm/inference-perf report, BLIS directories, results.json")
    imp.add_argument("--name", help="run id to store it as (default: from the file name)")

    show = sub.add_parser("show", parents=[token], help="one result: load points, failures, configuration, files")
    show.add_argument("run", metavar="RUN", help=RUN_HELP)
    fmt = show.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object: name, source, load_points, failures, spec")
    fmt.add_argument("--csv", action="store_true", help="one CSV row per load point")

    cmp = sub.add_parser("compare", parents=[token],
                         help="2-8 results side by side: deltas against the first, settings that differ")
    cmp.add_argument("runs", metavar="RUN", nargs="+", help=RUN_HELP + " (2 to 8; the first is the baseline)")
    fmt = cmp.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object")
    fmt.add_argument("--csv", action="store_true", help="one CSV row per load point and metric")
    fmt.add_argument("--markdown", action="store_true", help="Markdown tables (for a report or a PR)")

    plot = sub.add_parser("plot", parents=[token], help="a static chart of one or more results (SVG or PNG)")
    plot.add_argument("runs", metavar="RUN", nargs="+", help=RUN_HELP + " (several are overlaid)")
    plot.add_argument("-o", "--output", required=True, metavar="FILE", help="FILE.svg or FILE.png")

    exp = sub.add_parser("export", parents=[token], help="one result as CSV, JSON or Markdown")
    exp.add_argument("run", metavar="RUN", help=RUN_HELP)
    exp.add_argument("--format", required=True, choices=("csv", "json", "md"))
    exp.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")


def main(args: argparse.Namespace) -> int:
    action = args.results_command
    if action == "import":
        return _import(args)
    if action == "show":
        return _show(args)
    if action == "compare":
        return _compare(args)
    if action == "plot":
        return _plot(args)
    return _export(args)


def _err(message: str, hint: str = "") -> None:
    print(f"[ERROR] {message}", file=sys.stderr)
    if hint:
        print(f"  {hint}", file=sys.stderr)


def _warn_problems(result: Any) -> int:
    """Print a result's unreadable files (one line each); 2 when there were any."""
    for problem in result.problems:
        print(f"[WARN] {problem}", file=sys.stderr)
    return 2 if result.problems else 0


def _load_many(runs: list[str], token: str | None) -> tuple[list[Any], int]:
    """Every result that can be read; each one that cannot is one error line (exit code 2)."""
    from backends.results import resolve
    from config.errors import SweepdeckError

    results, code = [], 0
    for what in runs:
        try:
            results.append(resolve(what, token=token))
        except SweepdeckError as exc:
            _err(exc.message, exc.hint)
            code = 2
    return results, code


def _import(args: argparse.Namespace) -> int:
    from backends.results import import_result

    run_id, result = import_result(args.path, args.name)
    print(f"Imported {args.path} as {run_id}: {result.origin.describe()}, {len(result.load_points)} load point(s), "
          f"{result.requests_ok:,} ok / {result.requests_failed:,} failed.")
    print(f"  stored in {result.path}; see it with: sweepdeck results show {run_id}")
    return _warn_problems(result)


def _show(args: argparse.Namespace) -> int:
    from backends.results import resolve
    from backends.results.export import result_csv, result_json

    result = resolve(args.run, token=args.queue_token)
    if args.json:
        sys.stdout.write(result_json(result))
    elif args.csv:
        sys.stdout.write(result_csv(result))
    else:
        print_result(sys.stdout, result)
    return _warn_problems(result)


def _compare(args: argparse.Namespace) -> int:
    from backends.results.compare import MAX_RUNS, MIN_RUNS, compare
    from backends.results.export import compare_csv, compare_json, compare_markdown
    from config.errors import SweepdeckError

    if not MIN_RUNS <= len(args.runs) <= MAX_RUNS:
        raise SweepdeckError(f"Compare takes {MIN_RUNS} to {MAX_RUNS} runs, got {len(args.runs)}.",
                             "Name between two and eight runs; the first is the baseline.")
    results, code = _load_many(args.runs, args.queue_token)
    if len(results) < MIN_RUNS:
        _err(f"Only {len(results)} of the {len(args.runs)} results could be read; nothing to compare.")
        return 2
    cmp = compare(results)
    if args.json:
        sys.stdout.write(compare_json(cmp))
    elif args.csv:
        sys.stdout.write(compare_csv(cmp))
    elif args.markdown:
        sys.stdout.write(compare_markdown(cmp))
    else:
        print_comparison(sys.stdout, cmp)
    for r in results:
        code = max(code, _warn_problems(r))
    return code


def _plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    from backends.results.plot import FORMATS, plot
    from config.errors import SweepdeckError

    out = Path(args.output)
    if out.suffix.lower() not in FORMATS:
        raise SweepdeckError(f"Cannot write a chart as {out.name!r}.", "Name the output FILE.svg or FILE.png.")
    results, code = _load_many(args.runs, args.queue_token)
    if not results:
        return 2
    plot(results, out)
    print(f"Wrote {out} ({', '.join(r.name for r in results)}).")
    for r in results:
        code = max(code, _warn_problems(r))
    return code


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from backends.results import resolve
    from backends.results.export import export
    from config.errors import SweepdeckError

    result = resolve(args.run, token=args.queue_token)
    text = export(result, args.format)
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise SweepdeckError(f"Could not write {args.output}: {exc.strerror or exc}.") from None
        print(f"Wrote {args.output} ({args.format}, {len(result.load_points)} load point(s)).")
    else:
        sys.stdout.write(text)
    return _warn_problems(result)


# ------------------------------------------------------------------- text output


def print_result(out: IO[str], result: Any) -> None:
    """The plain-text view of one result (rich tables, no colour when not a terminal)."""
    from rich import box
    from rich.table import Table

    from backends.results.model import fmt
    from tui.headless import make_console

    console = make_console(out, width=160)
    console.print(f"{result.name} · {result.origin.describe()}" + (f" · {result.model}" if result.model else ""))
    table = Table(box=box.SIMPLE_HEAD, title="Load points", title_justify="left")
    for col in ("LOAD POINT", "LOAD", "OK", "FAILED", "TTFT p50", "TTFT p99", "ITL p50", "TPOT p50",
                "E2E p50", "E2E p99", "TOK/S", "REQ/S"):
        table.add_column(col, justify="left" if col in ("LOAD POINT", "LOAD") else "right", no_wrap=True)
    for p in result.load_points:
        table.add_row(p.label, p.load, f"{p.requests_ok:,}", f"{p.requests_failed:,}", fmt(p.ttft_ms.p50, "ms"),
                      fmt(p.ttft_ms.p99, "ms"), fmt(p.itl_ms.p50, "ms"), fmt(p.tpot_ms.p50, "ms"),
                      fmt(p.e2e_ms.p50, "ms"), fmt(p.e2e_ms.p99, "ms"), fmt(p.output_tok_s, "tok/s"),
                      fmt(p.req_s, "req/s"))
    console.print(table)
    console.print("(latencies in ms)")
    if result.failures:
        fails = Table(box=box.SIMPLE_HEAD, title="Failures", title_justify="left")
        fails.add_column("REASON")
        fails.add_column("COUNT", justify="right")
        fails.add_column("SAMPLE")
        for f in result.failures:
            fails.add_row(f.reason, f"{f.count:,}", f.sample)
        console.print(fails)
    else:
        console.print("Failures: none.")
    if result.spec:
        cfg = Table(box=box.SIMPLE_HEAD, title="Configuration", title_justify="left")
        cfg.add_column("SETTING")
        cfg.add_column("VALUE")
        cfg.add_column("SOURCE")
        for key, s in result.spec.items():
            cfg.add_row(key, _value(s.value), s.source or "")
        console.print(cfg)
    console.print("Files:")
    for f in result.origin.files:
        console.print(f"  {f}")
    for note in result.notes:
        console.print(f"Note: {note}")


def _value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or "(none)"
    return "—" if value is None else str(value)


def print_comparison(out: IO[str], cmp: Any) -> None:
    from rich import box
    from rich.table import Table

    from backends.results.export import pct
    from backends.results.model import fmt
    from tui.headless import make_console

    marks = {"better": "▲", "worse": "▼", "same": "="}
    console = make_console(out, width=200)
    console.print(f"Baseline: {cmp.names[0]} · load points matched by {cmp.matched_by} · "
                  "▲ better / ▼ worse than the baseline")
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("LOAD POINT", no_wrap=True)
    table.add_column("METRIC", no_wrap=True)
    for name in cmp.names:
        table.add_column(name, justify="right", no_wrap=True)
    last = None
    for r in cmp.rows:
        cells = [r.point if r.point != last else "", r.metric.label, fmt(r.values[0], r.metric.unit)]
        last = r.point
        for i in range(1, len(r.values)):
            d = r.deltas[i]
            cells.append(fmt(r.values[i], r.metric.unit) + (f" {pct(d)} {marks.get(r.verdicts[i] or '', '')}"
                                                           if d is not None else ""))
        table.add_row(*cells)
    console.print(table)
    if cmp.config_diff:
        diff = Table(box=box.SIMPLE_HEAD, title="Settings that differ", title_justify="left")
        diff.add_column("SETTING")
        for name in cmp.names:
            diff.add_column(name)
        for key, values in cmp.config_diff:
            diff.add_row(key, *(_value(v) for v in values))
        console.print(diff)
    else:
        console.print("Settings that differ: none.")
