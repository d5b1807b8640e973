"""``sweepdeck attach RUN``: re-open a saved run.

Prints the run's saved events; if it is still live (detached, or its session
ended without cleaning up) the backend re-attaches and the command follows it
until it ends. Ctrl+C (or SIGTERM/SIGHUP) detaches again and leaves the run
alone; ``--stop`` stops it and cleans up instead.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "attach",
        help="re-open a saved run: print its events and follow it if it is still live",
        description="Print a saved run's events and, if it is still live, follow it (Ctrl+C detaches again).",
    )
    p.add_argument("run_id", metavar="RUN", help="run id (see `sweepdeck runs`)")
    p.add_argument("--json", action="store_true", help="print events as JSON lines")
    p.add_argument("--no-follow", action="store_true", help="only print the saved events")
    p.add_argument("--stop", action="store_true", help="stop a live run and clean it up")


def main(args: argparse.Namespace) -> int:
    import asyncio

    return asyncio.run(_attach(args))


async def _attach(args: argparse.Namespace) -> int:
    import asyncio
    import time

    from backends.cleanup import install_signal_handlers
    from backends.events import Finished
    from backends.session import Session, SessionResult
    from backends.store import TERMINAL_STATES, RunStore
    from config.errors import SweepdeckError
    from tui.headless import HeadlessPrinter

    store = RunStore()
    record = store.get(args.run_id)
    run_dir = store.open(args.run_id)
    try:
        spec = record.spec()
    except (OSError, SweepdeckError):
        spec = None
    printer = HeadlessPrinter(json_mode=args.json, spec=spec)
    if not args.json:
        printer._line(f"[INFO] Run {record.id}: {record.backend}, {record.model or '?'}, {record.workload or '?'}, state {record.state}")
    for event in run_dir.events():
        printer(event)
    live = record.state not in TERMINAL_STATES and record.state != "created"
    if not live or args.no_follow or spec is None:
        if not args.json and live:
            printer._line(f"[INFO] The run is {record.state}; follow it with: sweepdeck attach {record.id}")
        printer.flush()
        return 0

    from backends.registry import get_backend
    from config.settings import load_settings

    settings = load_settings(args.config, args.catalog_dir)
    backend = get_backend(settings, record.backend, record.meta.get("profile") if record.backend != "local" else None)
    try:
        run = await backend.attach(record)
    except SweepdeckError as exc:
        # The run ended while nobody watched: record that, then say so.
        run_dir.update_meta(state="failed", finished=time.time(), message=exc.message)
        gone = Finished("failed", exc.message)
        run_dir.append_event(gone)
        run_dir.close()
        printer(gone)
        raise
    session = Session(backend, spec, store=store, on_event=printer)
    session.run = run
    run_dir.update_meta(state="running", reattached=time.time())

    def on_signal(sig) -> None:
        if args.stop:
            session.request_cancel(f"stopped by {sig.name}", int(sig))
        else:
            session.request_detach()

    restore = install_signal_handlers(asyncio.get_running_loop(), on_signal)
    try:
        if args.stop:
            session.request_cancel("stopped with --stop")
        result: SessionResult = await session.follow()
    finally:
        restore()
    stopped = args.stop and result.outcome == "cancelled"
    if stopped:
        import io

        printer.err = io.StringIO()  # the stop was asked for: no "[ERROR] cancelled" line
    printer.result(result)
    if stopped and not args.json:
        job = (run.handle or {}).get("job_id")
        printer._line(f"[INFO] Stopped {record.id}: " + (f"job {job} cancelled and cleaned up" if job else "cleaned up"))
        printer.flush()
    return 0 if result.outcome in ("detached",) or (args.stop and result.outcome == "cancelled") else result.exit_code
