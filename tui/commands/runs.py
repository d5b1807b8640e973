"""``sweepdeck runs``: list saved runs (newest first)."""

from __future__ import annotations

import argparse

from config.durations import format_elapsed


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "runs",
        help="list saved runs (id, backend, model, workload, state, started, duration)",
        description="List the runs in the run store (newest first).",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per run")
    p.add_argument("--state", help="only runs in this state (running, detached, succeeded, failed, cancelled)")
    p.add_argument("--limit", type=int, default=0, metavar="N", help="show at most N runs")


def format_duration(seconds: float | None) -> str:
    return format_elapsed(seconds, missing="-")


def rows(records) -> list[dict]:
    """The listed fields of each run (``duration_s`` None while it runs)."""
    out = []
    for r in records:
        started, finished = r.started, r.finished
        out.append(
            {
                "id": r.id,
                "backend": r.backend,
                "model": r.model,
                "workload": r.workload,
                "state": r.state,
                "started": started,
                "finished": finished,
                "duration_s": (finished - started) if started and finished else None,
                "parent": r.meta.get("parent"),
                "path": str(r.path),
            }
        )
    return out


def main(args: argparse.Namespace) -> int:
    import json
    import sys
    import time

    from backends.store import RunStore

    records = RunStore().list()
    if args.state:
        records = [r for r in records if r.state == args.state]
    if args.limit and args.limit > 0:
        records = records[: args.limit]
    data = rows(records)
    if args.json:
        for row in data:
            print(json.dumps(row))
        return 0
    if not data:
        print("No saved runs. Start one with: sweepdeck run --model qwen-1.5b --workload chatbot --yes")
        return 0
    from rich import box
    from rich.table import Table

    from tui.headless import make_console

    table = Table(box=box.SIMPLE_HEAD)
    for col in ("ID", "BACKEND", "MODEL", "WORKLOAD", "STATE", "STARTED", "DURATION"):
        table.add_column(col, no_wrap=col in ("ID", "STATE", "STARTED"))
    for row in data:
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["started"])) if row["started"] else "-"
        table.add_row(
            row["id"], row["backend"], row["model"], row["workload"], row["state"], started, format_duration(row["duration_s"])
        )
    make_console(sys.stdout, width=200).print(table)
    return 0
