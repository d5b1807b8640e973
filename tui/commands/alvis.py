"""``sweepdeck alvis connect``: the Alvis ``vllm-connect.sh`` workflow on the slurm backend.

Prints the original script's messages (``[INFO] Checking SSH connection to
alvis2...``, ``Job submitted: 5382685``, ``✓ Connection successful! ...``,
``[VLLM OUT] ...``, ``[INFO] Cancelling job N...``, ``[INFO] Cleaned up
successfully``). Import-light: everything heavy is imported inside ``main``.
"""

from __future__ import annotations

import argparse
import sys

PROFILE_EXAMPLE = """\
profile (in the sweepdeck config file, profiles: section):
  alvis:
    backend: slurm
    ssh_host: alvis2                  # an ~/.ssh/config alias works (user, key, ProxyJump)
    account: NAISS2025-22-1522
    gpus: "A40:1"                     # leave out for a CPU-only profile
    container: apptainer exec /apps/containers/vLLM/vllm-0.11.0.sif vllm serve
    hub: /mimer/NOBACKUP/Datasets/LLM/huggingface/hub  # models are discovered here (the default for 'alvis')
    models: ~/alvis-vllm/models.json  # optional overrides: name -> path, max_model_len, description
    workdir: ~/.sweepdeck/runs        # run directories on the shared filesystem
    local_port: 58000

examples:
  sweepdeck alvis connect                       # default model, 1:00:00
  sweepdeck alvis connect -m gpt-oss-20b -t 2:00:00
  sweepdeck alvis connect -i                    # pick the model from a numbered list
  sweepdeck alvis connect --list-models --refresh-models   # scan the cluster's hub again
  sweepdeck alvis connect --detach              # leave it serving; later: --attach
"""


def add_parser(sub) -> None:
    p = sub.add_parser("alvis", help="connect to a vLLM server run as a SLURM job over SSH (the Alvis workflow)")
    acts = p.add_subparsers(dest="alvis_command", metavar="ACTION", required=True)
    c = acts.add_parser(
        "connect",
        help="submit a vLLM job, wait for it, tunnel to it and stream its logs (Ctrl+C cancels the job)",
        description="Submit a vLLM job on the cluster, wait for it, open an SSH tunnel to it on "
                    "localhost and stream its logs. Ctrl+C (or SIGTERM/SIGHUP) cancels the job and cleans up.",
        epilog=PROFILE_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pick = c.add_mutually_exclusive_group()
    pick.add_argument("-m", "--model", metavar="MODEL_NAME",
                      help="model to serve: org/name or name, as --list-models shows "
                           "(default: the profile's default_model)")
    pick.add_argument("-i", "--interactive", action="store_true",
                      help="choose the model from the grouped, numbered list")
    c.add_argument("-t", "--time", metavar="DURATION",
                   help="job duration, H:MM:SS or D-HH:MM:SS (default: the profile's time)")
    c.add_argument("--list-models", action="store_true",
                   help="list the models (discovered in the cluster's hub, with models.json overrides) and exit")
    c.add_argument("--refresh-models", action="store_true",
                   help="scan the cluster's hub again instead of using this profile's cached list")
    c.add_argument("--profile", metavar="NAME", help="slurm profile (default: 'alvis', or the only slurm profile)")
    c.add_argument("--port", type=int, metavar="PORT",
                   help="local tunnel port (default: the profile's local_port, 58000)")
    c.add_argument("--detach", action="store_true",
                   help="once the server answers, leave the job running and exit (reattach with --attach)")
    c.add_argument("--attach", nargs="?", const="", metavar="RUN",
                   help="re-open a detached job of this profile (the newest, or RUN)")
    c.add_argument("--json", action="store_true", help="print events as JSON lines")


def main(args: argparse.Namespace) -> int:
    import asyncio

    if args.alvis_command == "connect":
        return asyncio.run(_connect(args))
    return 2


# ------------------------------------------------------------------ printing


def say(text: str = "", err: bool = False) -> None:
    print(text, file=sys.stderr if err else sys.stdout, flush=True)


class Printer:
    """Events as the original script's lines (or JSON lines with ``--json``)."""

    def __init__(self, as_json: bool = False) -> None:
        self.as_json = as_json
        self.broken = False
        self.endpoint = None
        self.cleanup_problems: list[str] = []
        self.last_alert = ""

    def __call__(self, event) -> None:
        from backends.events import Endpoint, Notice, to_dict

        if isinstance(event, Notice) and event.level != "info" and event.message.startswith("cleanup "):
            self.cleanup_problems.append(event.message.removeprefix("cleanup "))
        if self.as_json:
            import json

            say(json.dumps(to_dict(event), default=str))
            if isinstance(event, Endpoint):
                self.endpoint = event
            return
        # Keyed by class name so that this module imports no backend code until it prints (see the module docs);
        # events without a line (Metrics: the live figures are the TUI's; Sweep) have no entry.
        handler = self._LINES.get(type(event).__name__)
        if handler is not None:
            handler(self, event)

    def _log_line(self, event) -> None:
        say(f"[VLLM {'ERR' if event.stream == 'err' else 'OUT'}] {event.text}")

    def _notice(self, event) -> None:
        if event.message.startswith("Launched "):
            return  # the job id line says it
        tag = {"warning": "WARN", "error": "ERROR"}.get(event.level, "INFO")
        say(f"[{tag}] {event.message}")

    def _endpoint(self, event) -> None:
        self.endpoint = event
        say(f"✓ Connection successful! Server available at {event.url}")
        say()

    def _alert(self, event) -> None:
        tag = {"warning": "WARN", "info": "INFO"}.get(event.severity, "ERROR")
        self.last_alert = event.message
        say(f"[{tag}] {event.message}")
        for n, fix in enumerate(event.fixes, 1):
            say(f"  fix {n}: {fix.label}" + (f" — {fix.description}" if fix.description else ""))

    def _progress(self, event) -> None:
        say(f"[INFO] Workload: {event.done}/{event.total} requests ({event.failed} failed)")

    def _finished(self, event) -> None:
        if event.outcome == "failed" and not self.last_alert.startswith(event.message):
            say(f"[ERROR] {event.message}")
        elif event.outcome in ("succeeded", "detached") and event.message:
            say(f"[INFO] {event.message}")

    def _phase(self, event) -> None:
        if event.kind == "job":
            job = event.unit.removeprefix("job ")
            if event.state == "SUBMITTED":
                say(f"Job submitted: {job}")
            elif event.state == "PENDING":
                if event.detail:
                    say(f"[INFO] Job {job} is pending ({event.detail})")
            elif event.state == "RUNNING":
                say(f"[INFO] Job is running on node: {event.detail}")
            else:
                say(f"[INFO] Job {job}: {event.state}" + (f" ({event.detail})" if event.detail else ""))
        elif event.kind in ("tunnel", "ssh"):
            if event.state == "broken":
                self.broken = True
                say(f"[WARN] SSH connection lost ({event.detail}); reconnecting...")
            elif event.state == "up" and self.broken:
                self.broken = False
                what = (
                    "tunnel re-opened on " + event.unit.removeprefix("tunnel ")
                    if event.kind == "tunnel"
                    else "connection restored"
                )
                say(f"[INFO] SSH reconnected; {what}")

    # How each event type is printed, by class name (the methods above, called with the printer).
    _LINES = {
        "LogLine": _log_line,
        "Notice": _notice,
        "Phase": _phase,
        "Endpoint": _endpoint,
        "Alert": _alert,
        "Progress": _progress,
        "Finished": _finished,
    }


# ------------------------------------------------------------------ connect


def _pick_profile(settings, name: str | None):
    from config.errors import SweepdeckError

    if name:
        return settings.profile(name, "slurm")
    if "alvis" in settings.profiles and settings.profiles["alvis"].backend == "slurm":
        return settings.profiles["alvis"]
    slurm = [p for p in settings.profiles.values() if p.backend == "slurm"]
    if len(slurm) == 1:
        return slurm[0]
    if not slurm:
        from config.settings import config_path

        raise SweepdeckError(
            "No slurm profile is configured.",
            f"Add one under 'profiles:' in {config_path()}, e.g. alvis: {{backend: slurm, ssh_host: alvis2, "
            "gpus: 'A40:1', container: 'apptainer exec /apps/containers/vLLM/vllm-0.11.0.sif vllm serve', models: "
            "~/alvis-vllm/models.json}",
        )
    raise SweepdeckError("Several slurm profiles exist: " + ", ".join(p.name for p in slurm) + ".",
                         "Name one with --profile.")


async def _connect(args: argparse.Namespace) -> int:
    from backends.cleanup import REGISTRY
    from backends.slurm import SlurmBackend
    from config.settings import load_settings

    settings = load_settings(args.config, args.catalog_dir)
    profile = _connect_profile(args, _pick_profile(settings, args.profile))
    backend = SlurmBackend(settings, profile)
    printer = Printer(args.json)

    try:
        if args.list_models:
            return await _list_models(args, backend)
        if args.attach is not None:
            return await _attach(args, backend, printer)
        return await _connect_new(args, backend, profile, printer)
    finally:
        await backend.close()
        await REGISTRY.run(10)


def _connect_profile(args: argparse.Namespace, profile):
    """The profile with ``-t`` and ``--port`` applied (checked first: bad input changes nothing)."""
    from config.durations import format_slurm_duration, parse_slurm_duration
    from config.errors import SweepdeckError
    from config.settings import Profile

    options = dict(profile.options)
    if args.time is not None:
        try:
            options["time"] = format_slurm_duration(parse_slurm_duration(args.time))
        except ValueError as exc:
            raise SweepdeckError(f"Invalid duration: {exc}.", "Example: -t 2:00:00 or -t 1-12:00:00") from None
    if args.port is not None:
        if not 1 <= args.port <= 65535:
            raise SweepdeckError(f"--port {args.port} is not a TCP port.", "Use a port between 1024 and 65535.")
        options["local_port"] = args.port
    return Profile(profile.name, profile.backend, options)


async def _connect_new(args: argparse.Namespace, backend, profile, printer: Printer) -> int:
    """A new job: SSH check, model, pre-flight, then submit and drive it (the original script's order)."""
    say(f"[INFO] Checking SSH connection to {profile['ssh_host']}...")
    check = await backend.check_ssh()
    if not check.ok:
        say(f"[ERROR] {check.detail}", err=True)
        if check.fix:
            say(f"  {check.fix}", err=True)
        return 1
    say("[INFO] SSH connection successful")
    await _discover(backend, args.refresh_models, required=False)
    model = choose_model(backend.catalog()) if args.interactive else args.model
    model = model or profile.get("default_model", "gpt-oss-20b")
    if not _say_model(backend, model):
        return 1
    code = await _preflight(args, backend, printer)
    if code is not None:
        return code
    spec = backend.make_spec(model)
    for check in _catalog_checks(backend, spec):
        if not check.ok:
            return _preflight_failed(check, backend)
        say(f"[WARN] {check.detail}")
        if check.fix:
            say(f"  {check.fix}")
    say(f"[INFO] Submitting job (duration: {backend.duration()})...")
    await backend.close()  # the run's supervisor opens its own connection
    return await _drive(backend, spec, printer, args)


def _say_model(backend, model: str) -> bool:
    """Print the model's configuration; False (after listing the available ones) when the catalog lacks it."""
    from backends.slurm.catalog import ModelNotInCatalog

    say(f"[INFO] Loading model configuration for: {model}")
    try:
        entry = backend.resolve_model(model)
    except ModelNotInCatalog as exc:
        say(f"[ERROR] {exc.message}", err=True)
        say("[INFO] Available models:")
        for line in exc.available:
            say(f"  - {line}")
        return False
    say(f"[INFO] Model path: {entry.path}")
    if entry.max_model_len:
        say(f"[INFO] Max model length: {entry.max_model_len}")
    return True


async def _preflight(args: argparse.Namespace, backend, printer: Printer) -> int | None:
    """Duration, an existing job, the tunnel port: None when the job can be submitted, else the exit code.

    A busy port moves to the next free one; an existing job of this profile is offered for attaching.
    """
    from config.settings import Profile

    # a job of this profile first: its detached supervisor holds the tunnel port, and attaching is the way out
    for check in (backend.check_duration(), await backend.check_existing(), backend.check_port(flag="--port")):
        if check.ok:
            continue
        offer = _offer(check)
        if offer == "port":
            nxt = check.data["next_free_port"]
            profile = backend.profile
            backend.profile = Profile(profile.name, profile.backend, {**profile.options, "local_port": nxt})
            say(f"[INFO] Using local port {nxt}")
            continue
        if offer == "attach":
            args.attach = check.data.get("run_id") or ""
            return await _attach(args, backend, printer)
        return _preflight_failed(check, backend)
    return None


# ------------------------------------------------------------ models


async def _discover(backend, refresh: bool, *, required: bool) -> None:
    """Scan the cluster's hub when there is no cached scan for the profile, or with --refresh-models.

    Args:
        required: A failed scan is an error (listing); otherwise a warning and
            the cached list or models.json stand in (connecting).
    """
    from backends.slurm.catalog import hub_dir, read_cache, refresh_profile_catalog
    from config.errors import SweepdeckError

    profile = backend.profile
    hub = hub_dir(profile)
    if not hub:
        if refresh:
            say(f"[WARN] Profile {profile.name} has no 'hub' to scan; its models come from models.json.")
        return
    if not refresh and read_cache(profile) is not None:
        return
    say(f"[INFO] Discovering models in {hub} on {profile['ssh_host']}...")
    try:
        catalog = await refresh_profile_catalog(await backend.remote(), profile, force=True)
    except SweepdeckError as exc:
        if required:
            raise
        say(f"[WARN] {exc.message}")
        return
    found = sum(1 for m in catalog.models.values() if m.source != "models.json")
    say(f"[INFO] Found {found} models in the hub (saved for this profile; --refresh-models scans again)")


def print_models(catalog) -> None:
    """The grouped, numbered list with each model's max length (the original's -i/--list-models layout)."""
    shorts: dict[str, int] = {}
    for m in catalog.models.values():
        shorts[m.short.lower()] = shorts.get(m.short.lower(), 0) + 1
    where = []
    if catalog.discovered:
        where.append(f"discovered in {catalog.hub}" + (f", scanned {catalog.scanned}" if catalog.scanned else ""))
    if catalog.path is not None:
        where.append(f"{'overrides from ' if catalog.discovered else 'from '}{catalog.path}")
    say(f"[INFO] Available models ({len(catalog.models)}; {'; '.join(where)}):")
    for provider, rows in catalog.grouped():
        say()
        say(f"{provider}:")
        for n, m in rows:
            name = m.short if shorts[m.short.lower()] == 1 and "/" in m.name else m.name
            size = f"max: {m.max_model_len}" if m.max_model_len else "max: default"
            desc = f" — {m.description}" if m.description else ""
            say(f"  {n:>2}. {name} ({size}){desc}")
    say()


def choose_model(catalog) -> str:
    """Show the numbered list and read a number (or a name) from the terminal, like the original's -i."""
    from config.errors import SweepdeckError

    models = catalog.numbered()
    if not models:
        raise SweepdeckError("There are no models to choose from.",
                             "Set 'hub' (the cluster's Hugging Face hub) or 'models' (models.json) in the profile.")
    print_models(catalog)
    for _ in range(3):
        try:
            answer = input(f"Select model (1-{len(models)}): ").strip()
        except EOFError:
            break
        if answer.isdigit() and 1 <= int(answer) <= len(models):
            return models[int(answer) - 1].name
        found = catalog.find(answer) if answer else None
        if found is not None:
            return found.name
        say(f"[WARN] {answer!r} is neither a number from 1 to {len(models)} nor a model name.")
    raise SweepdeckError("No model selected.", "Answer with a number from the list, or pass -m MODEL.")


async def _list_models(args, backend) -> int:
    from config.errors import SweepdeckError

    await _discover(backend, args.refresh_models, required=True)
    catalog = backend.catalog()
    if not catalog.models:
        raise SweepdeckError(f"Profile {backend.profile.name} has no models.",
                             "Set 'hub' (the cluster's Hugging Face hub) or 'models' (models.json) in the profile.")
    print_models(catalog)
    return 0


def _catalog_checks(backend, spec) -> list:
    """The profile's own checks (alvis without a container, max_model_len above the model's limit)."""
    from backends.slurm.preflight import profile_checks

    return [c for c in profile_checks(backend.profile, backend.catalog(), spec) if c.status != "pass"]


async def _drive(backend, spec, printer: Printer, args: argparse.Namespace) -> int:
    """The shared drive loop (the run lives in its supervisor): Ctrl+C cancels the job and cleans up."""
    from backends.events import Endpoint
    from backends.supervisor.drive import drive
    from config.errors import SweepdeckError

    job: dict = {"id": None}

    def on_stop(presses: int) -> None:
        if job["id"] and presses == 1:
            say(f"[INFO] Cancelling job {job['id']}...")
            job["announced"] = True

    try:
        result = await drive(
            backend, spec, on_event=printer, assume_yes=True, skip_preflight=True,
            detach_when=(lambda e: isinstance(e, Endpoint)) if args.detach else None,
            on_launched=lambda info: job.update(id=info.handle.get("job_id")), on_stop=on_stop,
        )
    except SweepdeckError as exc:
        say(f"[ERROR] {exc.message}", err=True)
        if exc.hint:
            say(f"  {exc.hint}", err=True)
        return 1
    return _report(result, job, printer)


def _report(result, job: dict, printer: Printer) -> int:
    from backends.supervisor.drive import HUNG_UP

    job_id = job.get("id")
    if result.message == HUNG_UP:
        return result.exit_code  # the terminal is gone: the run's supervisor cancels the job and cleans up
    if result.outcome == "detached":
        run = result.run
        say(f"[INFO] Detached: job {job_id} keeps running"
            + (f" and serving at {printer.endpoint.url}" if printer.endpoint else "") + ".")
        say(f"[INFO] Reattach with: sweepdeck alvis connect --attach {run.id if run else ''}".rstrip())
        return 0
    if job_id:
        if result.outcome == "cancelled" and not job.get("announced"):
            say(f"[INFO] Cancelling job {job_id}...")  # stopped before the job id was known to the handler
        if printer.cleanup_problems:
            say(f"[WARN] Cleanup of job {job_id} incomplete: " + "; ".join(printer.cleanup_problems))
            say(f"[WARN] Check with: squeue --me -j {job_id} (and scancel {job_id} if it is still there)")
            return 1
        say(f"[INFO] Cleaned up job {job_id}")
        say("[INFO] Cleaned up successfully")
    # Ctrl+C is how a serving session normally ends: not an error.
    return 0 if result.outcome in ("succeeded", "cancelled") else 1


def _offer(check) -> str | None:
    """On a terminal, offer the way out of a failed check: the next free port, or attaching."""
    if not sys.stdin.isatty():
        return None
    if check.data.get("next_free_port"):
        say(f"[WARN] {check.detail}")
        question = f"Use the next free port, {check.data['next_free_port']}, instead? [Y/n] "
        kind = "port"
    elif check.data.get("job_id"):
        say(f"[WARN] {check.detail}")
        question = "Attach to it instead of submitting another? [Y/n] "
        kind = "attach"
    else:
        return None
    try:
        answer = input(question).strip().lower()
    except EOFError:
        return None
    return kind if answer in ("", "y", "yes") else None


def _preflight_failed(check, backend) -> int:
    say(f"[ERROR] {check.name}: {check.detail}", err=True)
    if "next_free_port" in check.data:
        holder = check.data.get("holder")
        if holder:
            pid = holder.rsplit("pid ", 1)[-1].rstrip(")")
            say(f"[INFO] Port is held by {holder}; stop it (e.g. kill {pid}) or use another port.")
        nxt = check.data.get("next_free_port")
        if nxt:
            say(f"[INFO] Next free port: {nxt} (use --port {nxt})")
        return 1
    if check.data.get("job_id"):
        run_id = check.data.get("run_id")
        say(f"[INFO] Attach to it instead with: sweepdeck alvis connect --attach{' ' + run_id if run_id else ''}")
        say(f"[INFO] Or cancel it with: scancel {check.data['job_id']}")
        return 1
    if check.fix:
        say(f"  {check.fix}", err=True)
    return 1


async def _attach(args, backend, printer) -> int:
    """Follow a job of this profile again: through its supervisor, or (if that is gone) a new one."""
    from backends.base import Run
    from backends.events import Endpoint
    from backends.store import LIVE_STATES, RunDir, RunRecord, RunStore
    from backends.supervisor import SupervisorGone, connect, start_run
    from backends.supervisor.drive import follow_run
    from backends.supervisor.reconcile import reconcile_dir
    from config.errors import SweepdeckError

    if args.attach:
        record = RunStore().get(args.attach)
    else:
        runs = backend.live_runs()
        if not runs:
            raise SweepdeckError(f"No detached job of profile {backend.profile.name} to attach to.",
                                 "Start one with: sweepdeck alvis connect")
        record = runs[0]
    run_dir = RunDir(record.path)
    record = RunRecord(record.id, record.path, reconcile_dir(run_dir))
    job = {"id": record.handle_values().get("JOB_ID")}
    say(f"[INFO] Attaching to run {record.id} (job {job['id']})...")
    link = None
    if record.state in LIVE_STATES:
        try:
            link = await connect(run_dir, on_event=printer)
            await link.follow(snapshot=2000)
        except SupervisorGone:
            link = None
    if link is None:
        await backend.close()  # the new supervisor opens its own connection
        link = await start_run(backend, record.spec(), store=RunStore(), on_event=printer, adopt=record)
        await link.launched()

    def on_stop(presses: int) -> None:
        if presses == 1:
            say(f"[INFO] Cancelling job {job['id']}...")
            job["announced"] = True

    run = Run(record.id, "slurm", record.spec(), run_dir, {"job_id": job["id"]})
    result = await follow_run(link, run, on_event=printer, on_stop=on_stop,
                              detach_when=(lambda e: isinstance(e, Endpoint)) if args.detach else None)
    return _report(result, job, printer)
