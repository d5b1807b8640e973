"""``sweepdeck attach RUN``: follow a run again (from any terminal), or read an ended one.

A run that is going is followed through its supervisor: its saved events
are printed, then the live ones. Ctrl+C (or SIGTERM/SIGHUP) only leaves — a
detached run goes on; a run that was not detached goes on while another
client follows it, and stops when its last client is gone. ``--stop`` stops
it and waits for its cleanup to be done.

A run whose supervisor is gone is reconciled first (``lost`` when nothing
says how it ended); if something it started may still exist elsewhere (a
SLURM job, a PipelineRun), ``attach`` follows that again through a new
supervisor, and ``attach --stop`` removes it.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "attach",
        help="follow a run again (its saved events, then the live ones); --stop stops it",
        description="Print a run's saved events and, if it is still going, follow it (Ctrl+C leaves it running).",
    )
    p.add_argument("run_id", metavar="RUN", help="run id (see `sweepdeck runs`)")
    p.add_argument("--json", action="store_true", help="print events as JSON lines")
    p.add_argument("--no-follow", action="store_true", help="only print the saved events")
    p.add_argument("--lines", default="1000", metavar="N|all", type=_lines,
                   help="start with the saved events that hold the last N log lines (default 1000; all: every one)")
    p.add_argument("--stop", action="store_true", help="stop a live run and wait until it is cleaned up")


def _lines(text: str) -> int | None:
    if text.strip().lower() == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--lines takes a number or 'all', not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("--lines takes a number of 0 or more, or 'all'")
    return value


def main(args: argparse.Namespace) -> int:
    import asyncio

    return asyncio.run(_attach(args))


async def _attach(args: argparse.Namespace) -> int:
    from backends.store import LIVE_STATES, RunDir, RunRecord, RunStore
    from backends.supervisor import SupervisorGone, connect
    from backends.supervisor.reconcile import reconcile_dir
    from config.errors import SweepdeckError
    from tui.headless import HeadlessPrinter

    store = RunStore()
    record = store.get(args.run_id)
    run_dir = RunDir(record.path)
    meta = reconcile_dir(run_dir)
    record = RunRecord(record.id, record.path, meta)
    try:
        spec = record.spec()
    except (OSError, ValueError, KeyError, SweepdeckError):
        spec = None
    printer = HeadlessPrinter(json_mode=args.json, spec=spec)
    if not args.json:
        printer._line(f"[INFO] Run {record.id}: {record.backend}, {record.model or '?'}, {record.workload or '?'}, "
                      f"state {record.state}")
    end = start = tail_offset(run_dir.path / "events.jsonl", args.lines)  # past the last record read
    if start and not args.json:
        printer._line(f"[INFO] Earlier events of {record.id} are not shown: the last {args.lines:,} log lines "
                      f"and what came with them (--lines all: every one)")
    for offset, data in run_dir.records(start):
        end = offset
        for event in _events(data):
            printer(event)
    if args.no_follow:
        printer.flush()
        return 0
    if record.state in LIVE_STATES:
        try:
            link = await connect(run_dir, on_event=printer)
        except SupervisorGone:
            record = RunRecord(record.id, record.path, reconcile_dir(run_dir, supervisor_gone=True))
        else:
            return await _follow(link, record, printer, args, end)
    return await _ended(record, printer, args)


def tail_offset(path, lines: int | None) -> int:
    """Byte offset of the first record to print so that the last ``lines`` log lines are printed (0: all).

    Reads the event log backwards, a MiB at a time, so a run with millions of lines is current at once
    (the records before the offset are never parsed).
    """
    import json

    if lines is None:
        return 0
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by the `with fh` below
    except OSError:
        return 0
    count = 0
    with fh:
        pos = fh.seek(0, 2)
        pending = b""  # the start of a record cut by the chunk boundary: completed by the next chunk
        while pos > 0:
            step = min(1 << 20, pos)
            pos -= step
            fh.seek(pos)
            parts = (fh.read(step) + pending).split(b"\n")
            pending = parts.pop(0) if pos > 0 else b""
            start = pos + (len(pending) + 1 if pos > 0 else 0)
            starts = []
            for part in parts:
                starts.append(start)
                start += len(part) + 1
            for part, begin in zip(reversed(parts), reversed(starts), strict=True):
                if b'"LogBatch"' in part:
                    try:
                        count += len(json.loads(part).get("lines") or [])
                    except ValueError:
                        continue
                elif b'"LogLine"' in part:
                    count += 1
                if count > lines:
                    return begin + len(part) + 1  # this record is one too many: start after it
    return 0


def _events(data):
    from backends.store import expand_record

    try:
        return expand_record(data)
    except (KeyError, TypeError, ValueError):
        return []


async def _follow(link, record, printer, args, offset: int | None) -> int:
    """Follow a live run through its supervisor until it ends (or this client leaves)."""
    import asyncio
    import contextlib

    from backends.cleanup import install_signal_handlers

    left = asyncio.get_running_loop().create_future()

    def on_signal(sig) -> None:
        if not left.done():
            left.set_result(sig)

    restore = install_signal_handlers(asyncio.get_running_loop(), on_signal)
    try:
        if offset is not None:  # (a link that started the supervisor follows from the first event already)
            await link.follow(offset=offset)
            with contextlib.suppress(Exception):
                # answered after the follow (in order): the supervisor now counts this client as holding
                # the run; and the run's facts (its handle), for the last line
                await link.status()
        if not args.json:
            state = "detached" if record.state == "detached" else "running"
            printer._line(f"[INFO] Following {record.id} ({state}); Ctrl+C leaves it running"
                          + ("" if args.stop else f", `sweepdeck attach {record.id} --stop` stops it") + ".")
        if args.stop:
            await link.cancel(graceful=True, reason="stopped with --stop")
        result = asyncio.ensure_future(link.result())
        await asyncio.wait({result, left}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        restore()
    if not result.done():
        result.cancel()
        link.close()
        if not args.json:
            printer._line(f"[INFO] Left {record.id}; follow it again with: sweepdeck attach {record.id}")
        printer.flush()
        return 0
    message = result.result()
    link.close()
    outcome = message.get("outcome")
    if args.stop and not args.json:
        job = (link.info.handle if link.info else {}).get("job_id")
        what = f"job {job} {outcome}" if job else str(outcome)
        printer._line(f"[INFO] Stopped {record.id}: {what}; its cleanup is done.")
    printer.flush()
    if outcome in ("succeeded", "detached") or (args.stop and outcome == "cancelled"):
        return 0
    return 1


async def _ended(record, printer, args) -> int:
    """A run whose supervisor is gone: say how it ended; follow or remove what it may have left."""
    from backends.supervisor.reconcile import check_leftovers, clean, describe

    leftovers = list(record.meta.get("leftovers") or [])
    if not leftovers:
        if not args.json:
            printer._line(f"[INFO] {record.id} has ended ({record.state})"
                          + (f": {record.meta.get('message')}" if record.meta.get("message") else "."))
        printer.flush()
        return 0
    leftovers = await check_leftovers(record)
    if not leftovers:
        if not args.json:
            printer._line(f"[INFO] {record.id} has ended ({record.state}); nothing it started is left.")
        printer.flush()
        return 0
    names = ", ".join(describe(r) for r in leftovers)
    if args.stop:
        record.meta["leftovers"] = leftovers
        for line in await clean(record):
            printer._line(f"[INFO] {line}")
        printer.flush()
        return 0
    remote = [r for r in leftovers if r.get("kind") != "pid"]
    if remote:
        return await _adopt(record, printer, args, names)
    printer._line(f"[WARN] {record.id} is {record.state}; still running: {names}. "
                  f"Remove it with: sweepdeck runs --clean {record.id}")
    printer.flush()
    return 1


async def _adopt(record, printer, args, names: str) -> int:
    """Follow a lost run's remote part again through a new supervisor (``backend.attach``)."""
    from backends.store import RunDir, RunStore
    from backends.supervisor import start_run
    from backends.supervisor.reconcile import backend_for_run
    from config.settings import load_settings

    backend = backend_for_run(RunDir(record.path), load_settings(args.config, args.catalog_dir))
    if not args.json:
        printer._line(f"[INFO] {record.id} lost its supervisor but {names} is still there: following it again.")
    link = await start_run(backend, record.spec(), store=RunStore(), on_event=printer, adopt=record)
    await link.launched()
    return await _follow(link, record, printer, args, offset=None)
