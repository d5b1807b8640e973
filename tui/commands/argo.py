"""``sweepdeck argo``: submit a work-queue sweep as an Argo Workflow, and watch sweeps.

Examples::

    sweepdeck argo watch llama3-70b-v2 --queue-url http://127.0.0.1:8080
    sweepdeck argo watch llama3-70b-v2 --once
    sweepdeck argo submit --profile lab --model-version-id llama3-70b-v2 --dry-run
    sweepdeck argo submit --profile lab --model-version-id llama3-70b-v2 --populate --create-namespace --yes

Pre-flight's remedies (populate an empty model version, create a missing namespace,
create the Secret with the queue's tokens) are asked on a terminal, showing what will
change, or taken with their flags.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("argo",
                       help="Argo: submit a work-queue sweep workflow (submit) and follow a sweep's progress (watch)")
    acts = p.add_subparsers(dest="argo_command", metavar="ACTION", required=True)

    w = acts.add_parser("watch",
                        help="print a model version's sweep progress until it finishes (Ctrl+C stops watching)")
    w.add_argument("model_version_id", metavar="MVID", help="model version id")
    w.add_argument("-p", "--profile", help="argo profile to take queue_url / poll_interval / stale_after_min from")
    w.add_argument("--queue-url", help="work-queue API base URL (default: the profile's queue_url)")
    w.add_argument("--interval", type=float, help="seconds between reads (default: the profile's poll_interval)")
    w.add_argument("--stale-after", type=float, metavar="MIN", help="running longer than MIN minutes counts as stale")
    w.add_argument("-n", "--namespace", help="namespace of the sweep's Workflow (default: the profile's)")
    w.add_argument("--no-workflow", action="store_true",
                   help="queue progress only: do not look the Workflow up in the cluster")
    w.add_argument("--once", action="store_true", help="print one reading (with details) and exit")
    w.add_argument("--json", action="store_true", help="one JSON Sweep snapshot per line")

    s = acts.add_parser("submit", help="pre-flight, submit the benchmark Workflow and watch it until it ends")
    s.add_argument("-p", "--profile", help="argo profile name")
    s.add_argument("--model-version-id", metavar="MVID", help="model version to sweep (default: the profile's)")
    s.add_argument("-n", "--namespace", help="namespace (default: the profile's)")
    s.add_argument("--queue-url", help="work-queue API base URL (default: the profile's queue_url)")
    s.add_argument("--max-parallel-pods", type=int, help="worker pods (default: the profile's)")
    s.add_argument("--batch-size", type=int, help="configs per claim, 1-500 (default: the profile's)")
    s.add_argument("--model", help="model name the workers ask for at their endpoint")
    s.add_argument("--id", dest="experiment_id", help="experiment id (default: sweep-MVID-time)")
    s.add_argument("--dry-run", action="store_true", help="print the Workflow manifest; submit nothing")
    s.add_argument("--populate", action="store_true",
                   help="populate the model version's default matrix first if it has no configs")
    s.add_argument("--create-namespace", action="store_true", help="create the namespace first if it does not exist")
    s.add_argument("--create-token-secret", action="store_true",
                   help="create the Secret with the queue's tokens (from the profile's queue_token_file) "
                        "if it is missing")
    s.add_argument("--fix", action="store_true",
                   help="carry out every remedy pre-flight offers "
                        "(--populate, --create-namespace, --create-token-secret)")
    s.add_argument("--yes", action="store_true", help="accept pre-flight warnings and do not ask")
    s.add_argument("--detach", action="store_true",
                   help="on Ctrl+C/SIGTERM/SIGHUP keep the Workflow running (reattach: sweepdeck attach ID)")
    s.add_argument("--json", action="store_true", help="print events as JSON lines")


def main(args: argparse.Namespace) -> int:
    if args.argo_command == "watch":
        return _watch_command(args)
    return _submit_command(args)


def _profile(args: argparse.Namespace, **overrides):
    from config.settings import Profile, load_settings

    settings = load_settings(args.config, args.catalog_dir)
    profile = settings.profile(args.profile, "argo")
    extra = {k: v for k, v in overrides.items() if v is not None}
    if extra:
        profile = Profile(profile.name, profile.backend, {**profile.options, **extra})
    return settings, profile


def _positive(value: float | None, flag: str) -> None:
    if value is not None and value <= 0:
        from config.errors import SweepdeckError

        raise SweepdeckError(f"{flag} must be positive, got {value:g}.")


def _say(text: str, out=None) -> None:
    stream = out or sys.stdout
    try:
        stream.write(text + "\n")
        stream.flush()
    except BrokenPipeError:  # `... | head`: stop printing quietly
        pass


# ----------------------------------------------------------------------- watch


def _watch_command(args: argparse.Namespace) -> int:
    import asyncio

    from backends.argo.workflow import check_model_version_id

    _positive(args.interval, "--interval")
    _positive(args.stale_after, "--stale-after")
    settings, profile = _profile(args, namespace=args.namespace)
    mvid = check_model_version_id(args.model_version_id)
    url = args.queue_url or profile.get("queue_url") or "http://127.0.0.1:8080"
    interval = args.interval or float(profile.get("poll_interval", 2.0))
    stale = args.stale_after or float(profile.get("stale_after_min", 120.0))
    find = None if args.no_workflow else _workflow_finder(settings, profile, mvid)
    return asyncio.run(watch(url, mvid, interval=interval, stale_after_min=stale, once=args.once, json_mode=args.json,
                             find_workflow=find, token_file=profile.get("queue_token_file")))


def _has_kubeconfig(profile) -> bool:
    import os

    if profile.get("kubeconfig") or os.environ.get("KUBERNETES_SERVICE_HOST"):
        return True
    path = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or "~/.kube/config"
    return os.path.exists(os.path.expanduser(path))


def _workflow_finder(settings, profile, mvid: str):
    """``async () -> Workflow | None`` over the Kubernetes API, or None when there is no kubeconfig to use."""
    if not _has_kubeconfig(profile):
        return None
    from backends.argo import ArgoBackend
    from backends.cleanup import CleanupRegistry

    backend = ArgoBackend(settings, profile, registry=CleanupRegistry())  # reads only: nothing to clean up

    async def find():
        return await backend.find_workflow(mvid)

    return find


async def watch(url: str, mvid: str, *, interval: float = 2.0, stale_after_min: float = 120.0, once: bool = False,
                json_mode: bool = False, out=None, find_workflow=None, token_file: str | None = None) -> int:
    """Print progress lines until the sweep has nothing pending or running (0), or once.

    Counts are read every ``interval`` seconds; the failure groups, stale configs and
    breakdowns (group-by queries) every 5th read, and at the start and the end. With
    ``find_workflow`` (``async () -> Workflow dict | None``) the sweep's Workflow is read
    at each reading too, and its node states (phase, duration, retries, message) are
    printed at the start and the end, with the details, and whenever a node changes —
    what the TUI sweep view shows, as lines.

    Returns:
        0 when the sweep is done (or ``once`` read it); 1 when ``once`` finds no configs.

    Raises:
        SweepdeckError: the queue API does not answer on the first read.
    """
    import asyncio

    from backends.argo.backend import DETAIL_EVERY
    from backends.argo.sweep import QueueUnavailable, SweepReader

    workflow = _WorkflowLines(find_workflow, mvid, json_mode)
    tick = 0
    down = False
    async with SweepReader(url, mvid, stale_after_min=stale_after_min, token_file=token_file) as reader:
        while True:
            details = once or tick % DETAIL_EVERY == 0
            try:
                snap = await reader.snapshot(details=details)
            except QueueUnavailable as exc:
                if tick == 0 or once:
                    raise
                if not down:
                    _say(f"[WARN] {exc.message} (retrying every {interval:g} s)", out)
                down = True
                tick += 1
                await asyncio.sleep(interval)
                continue
            if down:
                _say("[INFO] the work-queue API answers again", out)
                down = False
            finished = snap.total > 0 and snap.pending == 0 and snap.running == 0
            if finished and not details:
                snap = await reader.snapshot(details=True)  # the end shows the failure groups
                details = True
            _show(snap, details, await workflow.lines(details), json_mode, out)
            code = _watch_result(snap, url, mvid, finished=finished, first=tick == 0, once=once, json_mode=json_mode,
                                 out=out)
            if code is not None:
                return code
            tick += 1
            await asyncio.sleep(interval)


def _show(snap, details: bool, extra: list[str], json_mode: bool, out) -> None:
    """One reading: the progress line (with the detail lines when read), then the Workflow's lines (``extra``)."""
    import json
    import time

    from backends.argo.sweep import detail_lines, progress_line
    from backends.events import to_dict

    if json_mode:
        _say(json.dumps(to_dict(snap), default=str), out)
        for line in extra:
            _say(line, out)
        return
    _say(f"[{time.strftime('%H:%M:%S')}] {snap.model_version_id} {progress_line(snap)}", out)
    if details:
        for line in detail_lines(snap):
            _say(line, out)
    for line in extra:
        _say(line, out)


def _watch_result(snap, url: str, mvid: str, *, finished: bool, first: bool, once: bool, json_mode: bool,
                  out) -> int | None:
    """After a reading: ``watch``'s exit code when it is done, else None (read again).

    ``finished`` is what the counts-only read said (the details read after it may already count new configs).
    """
    if snap.total == 0:
        if first or once:
            _say(f"[WARN] model version {mvid} has no configs at {url} yet; "
                 f"populate it with: sweepdeck queue populate {mvid}", out)
        return 1 if once else None
    if finished:
        if not json_mode:
            _say(f"[INFO] sweep of {mvid} finished: {snap.completed:,} completed, "
                 f"{snap.failed:,} failed of {snap.total:,}", out)
        return 0
    return 0 if once else None


class _WorkflowLines:
    """The sweep's Workflow as ``argo watch`` lines, only when due; each read problem is said once, not every read.

    Args:
        find_workflow: ``async () -> Workflow dict | None``, or None to show the queue only.
    """

    def __init__(self, find_workflow, mvid: str, json_mode: bool) -> None:
        self.find_workflow = find_workflow
        self.mvid = mvid
        self.json_mode = json_mode
        self.key: tuple | None = None  # what the last lines showed
        self.warned = False  # the Workflow could not be read (said once until it can)
        self.missing = False  # no Workflow has the label (said once until one has)

    async def lines(self, details: bool) -> list[str]:
        """The Workflow's lines when they are due (details, or a node changed); JSON mode: its Phase events."""
        from backends.kube import KubeError
        from config.errors import SweepdeckError

        if self.find_workflow is None:
            return []
        try:
            wf = await self.find_workflow()
        except (KubeError, SweepdeckError) as exc:
            if self.warned:
                return []
            self.warned = True
            return [f"[WARN] cannot read the sweep's Workflow: {exc.message} (showing the queue only)"]
        self.warned = False
        if wf is None:
            if self.missing:
                return []
            self.missing = True
            return [f"[INFO] no Workflow is labelled with model version {self.mvid} "
                    "(submitted with: sweepdeck argo submit)"]
        self.missing = False
        return self._node_lines(wf, details)

    def _node_lines(self, wf, details: bool) -> list[str]:
        import json

        from backends.argo.backend import node_phases, workflow_phase_event
        from backends.argo.sweep import node_lines
        from backends.events import to_dict

        top = workflow_phase_event(wf)
        nodes = [p for _nid, p in node_phases(wf)]
        key = (top.unit, top.state, top.detail,
               tuple((p.unit, p.state, p.detail, p.retries, p.finished) for p in nodes))
        if key == self.key and not details:
            return []
        self.key = key
        if self.json_mode:
            return [json.dumps(to_dict(p), default=str) for p in (top, *nodes)]
        return node_lines(top, nodes)


# ---------------------------------------------------------------------- submit


class SweepPrinter:
    """A :class:`~tui.headless.HeadlessPrinter` that also prints Sweep snapshots as progress lines.

    A line is printed when the counts change, at most every ``every`` seconds (always
    for the last one); the failure/stale detail lines when they change.
    """

    def __init__(self, inner, every: float = 2.0) -> None:
        self.inner = inner
        self.every = every
        self._last = 0.0
        self._last_counts: tuple | None = None
        self._last_details: list[str] | None = None

    def __call__(self, event) -> None:
        import dataclasses
        import time

        from backends.argo.sweep import detail_lines, progress_line
        from backends.events import Sweep

        if not isinstance(event, Sweep) or self.inner.json_mode:
            self.inner(event)
            return
        counts = (event.total, event.pending, event.running, event.completed, event.failed)
        now = time.monotonic()
        last = event.total > 0 and event.pending == 0 and event.running == 0
        if counts != self._last_counts and (last or now - self._last >= self.every):
            self._last, self._last_counts = now, counts
            _say(f"[SWEEP] {progress_line(event)}", self.inner.out)
        # failure groups and stale configs only: the breakdowns would repeat every few seconds
        details = detail_lines(dataclasses.replace(event, by_workload=[], by_priority=[]))
        if details and details != self._last_details:
            self._last_details = details
            for line in details:
                _say(line, self.inner.out)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def _remedy_hint(remedies) -> str:
    flags = {"populate": "--populate", "create_namespace": "--create-namespace",
             "create_token_secret": "--create-token-secret"}
    wanted = " ".join(dict.fromkeys(flags.get(r.id, "--fix") for r in remedies))
    return f"Or let sweepdeck do it: re-run with {wanted} ({'; '.join(r.label for r in remedies)})."


def _submit_command(args: argparse.Namespace) -> int:
    import asyncio

    from backends.argo import ArgoBackend
    from backends.argo.backend import sweep_spec
    from backends.argo.workflow import yaml_dump
    from tui.headless import HeadlessPrinter

    settings, profile = _profile(
        args, model_version_id=args.model_version_id, queue_url=args.queue_url, namespace=args.namespace,
        max_parallel_pods=args.max_parallel_pods, batch_size=args.batch_size,
    )
    backend = ArgoBackend(settings, profile)
    spec = sweep_spec(settings, profile, model_version_id=backend.model_version_id(), model=args.model,
                      experiment_id=args.experiment_id, namespace=args.namespace)
    if args.dry_run:
        sys.stdout.write(yaml_dump(backend.manifest(spec)))
        return 0
    inner = HeadlessPrinter(json_mode=args.json, spec=spec)
    printer = SweepPrinter(inner, every=float(profile.get("poll_interval", 2.0)))

    accept = {name for name, on in (("populate", args.populate), ("create_namespace", args.create_namespace),
                                    ("create_token_secret", args.create_token_secret)) if on}

    async def go():
        from tui.headless import ask_yes_no, drive_with_remedies

        return await drive_with_remedies(
            backend, spec, printer, fix=True if args.fix else accept, ask=ask_yes_no, hint=_remedy_hint,
            on_checks=inner.checks,
            confirm=(lambda checks: ask_yes_no("Submit the workflow?")) if not args.yes and sys.stdin.isatty()
            else None,
            assume_yes=args.yes, detach_on_signal=args.detach,
        )

    result = asyncio.run(go())
    inner.result(result)
    return result.exit_code
