"""``sweepdeck run``: one experiment, headless, from pre-flight to cleanup.

Runs the same lifecycle as the app (:func:`backends.session.drive`) and prints
every event as a line (``[VLLM OUT] ...``, ``[INFO] ...``), the diagnosis of a
failure with numbered fixes, and a summary table. Exit code 0 on success;
non-zero otherwise (1 failed, 2 bad input, 3 pre-flight, 128+N on signal N).

Only argparse is imported at module level (``sweepdeck --help`` stays fast).
"""

from __future__ import annotations

import argparse

SIM_FAILS = ("oom", "model-not-found", "trust-remote-code", "crash-after=N")
FIX_PREFLIGHT = "preflight"  # bare --fix: carry out pre-flight remedies (--fix N is a recovery fix)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "run",
        help="run one experiment headless (logs as lines, summary table, exit code)",
        description=(
            "Run one experiment without the full-screen app: pre-flight, launch, stream the "
            "server log and workload metrics, print a summary. Example: sweepdeck run --backend "
            "local --model qwen-1.5b --workload chatbot --yes"
        ),
    )
    what = p.add_argument_group("what to run")
    what.add_argument("--model", "-m", help="model id or alias (see the catalog); required unless --retry")
    what.add_argument("--model-choice", metavar="ID",
                      help="which model an ambiguous alias means (e.g. meta-llama/Llama-2-7b-hf)")
    what.add_argument("--workload", "-w", help="workload preset or keyword (default: chatbot)")
    what.add_argument(
        "--custom-workload",
        metavar="'prompt=N output=N ...'",
        help="a custom workload instead of a preset: "
        "prompt=, output=, *_stdev/_min/_max, max_requests=, rate=, rate_type=",
    )
    what.add_argument("--max-requests", metavar="N", help="number of requests to send")
    what.add_argument("--retry", metavar="RUN",
                      help="relaunch a saved run's spec (with --fix N: apply its diagnosis' fix N)")
    what.add_argument(
        "--fix", metavar="N", nargs="?", const=FIX_PREFLIGHT,
        help="alone: do what pre-flight offers to fix (e.g. create a missing namespace) without asking; "
        "--fix N with --retry: apply the saved run's suggested fix N",
    )
    what.add_argument("--again", action="store_true",
                      help="with --retry RUN --fix N: launch fix N even though it was already launched from RUN")
    what.add_argument("--rate", metavar="R", help="request rate (requests/s) of the workload")
    where = p.add_argument_group("where")
    where.add_argument("--backend", "-b", help="local, slurm, tekton or argo (default: the config's default_backend)")
    where.add_argument("--profile", "-p", help="backend profile from the config file")
    where.add_argument("--namespace", help="Kubernetes namespace (tekton/argo)")
    where.add_argument("--experiment-id", metavar="ID",
                       help="DNS-safe experiment id (default {date}-{model}-{workload})")
    eng = p.add_argument_group("vLLM engine")
    eng.add_argument("--tp", metavar="N", help="tensor parallel size")
    eng.add_argument("--max-model-len", metavar="N")
    eng.add_argument("--max-num-seqs", metavar="N")
    eng.add_argument("--max-num-batched-tokens", metavar="N")
    eng.add_argument("--image", help="vLLM container image")
    eng.add_argument("--memory", metavar="QTY",
                     help="vLLM container memory limit/request, e.g. 64Gi (tekton applies it)")
    eng.add_argument("--cpu", metavar="N", help="vLLM container CPU limit/request, e.g. 16 or 500m (tekton applies it)")
    eng.add_argument(
        "--vllm-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra vLLM argument; repeat, and write it with '=': --vllm-arg=--enable-prefix-caching",
    )
    loc = p.add_argument_group("local backend")
    loc.add_argument("--server", choices=("sim", "vllm", "auto"),
                     help="server to start (default from the local profile: sim)")
    loc.add_argument("--port", metavar="N", help="server port (0 = pick a free one)")
    loc.add_argument("--ready-timeout", metavar="SECONDS", help="seconds to wait for the server to become ready")
    loc.add_argument("--sim-fail", metavar="MODE", help="make the simulator fail: " + ", ".join(SIM_FAILS))
    loc.add_argument("--sim-arg", action="append", default=[], metavar="ARG",
                     help="extra simulator argument, e.g. --sim-arg=--speed=10")
    how = p.add_argument_group("behaviour")
    how.add_argument("--yes", "-y", action="store_true", help="do not ask; accept pre-flight warnings")
    how.add_argument("--json", action="store_true", help="print events as JSON lines")
    how.add_argument("--detach-on-exit", action="store_true",
                     help="on Ctrl+C/SIGTERM/SIGHUP detach (keep the run) instead of cleaning up")


def main(args: argparse.Namespace) -> int:
    import asyncio
    import sys

    from tui.headless import HeadlessPrinter

    spec, settings, backend = prepare(args)
    if not args.yes and not sys.stdin.isatty():
        from config.errors import SweepdeckError

        raise SweepdeckError(
            "Not starting without confirmation: no terminal to ask on.",
            "Add --yes to run non-interactively.",
        )
    printer = HeadlessPrinter(json_mode=args.json, spec=spec)
    printer.spec_summary(spec)

    def confirm(checks) -> bool:
        try:
            if args.json:  # keep stdout pure JSON lines
                sys.stderr.write("Proceed? [Y/n] ")
                sys.stderr.flush()
                answer = sys.stdin.readline()
                if not answer:
                    return False
                answer = answer.strip().lower()
            else:
                answer = input("Proceed? [Y/n] ").strip().lower()
        except EOFError:
            return False
        return answer in ("", "y", "yes")

    async def go():
        from tui.headless import ask_yes_no, drive_with_remedies

        return await drive_with_remedies(
            backend, spec, printer,
            fix=args.fix == FIX_PREFLIGHT,
            ask=lambda question: ask_yes_no(question, sys.stderr if args.json else sys.stdout),
            hint=lambda remedies: "Or let sweepdeck do it: re-run with --fix "
            f"({'; '.join(r.label for r in remedies)}).",
            on_checks=printer.checks,
            confirm=None if args.yes else confirm,
            assume_yes=args.yes,
            detach_on_signal=args.detach_on_exit,
            default_image=_default_image(settings),
        )

    result = asyncio.run(go())
    printer.result(result)
    return result.exit_code


def _default_image(settings) -> str | None:
    try:
        return settings.catalogs.models.default_image
    except Exception:  # only used to suggest a fix
        return None


def prepare(args: argparse.Namespace):
    """Settings, spec and backend from the command line (raises SweepdeckError on bad input)."""
    import contextlib

    from backends.store import RunStore
    from config.errors import AmbiguousModel, SweepdeckError
    from config.settings import load_settings
    from config.spec import Source, build_spec, custom_workload, with_profile_gpu

    settings = load_settings(args.config, args.catalog_dir)
    catalogs = settings.catalogs
    catalogs.validate()
    backend_name = args.backend
    if args.profile and not backend_name:
        backend_name = settings.profile(args.profile).backend
    backend_name = backend_name or settings.default_backend

    if args.retry:
        spec = _retry_spec(args)
        backend_name = args.backend or spec.backend
        return _finish(args, settings, spec, backend_name)
    if args.fix not in (None, FIX_PREFLIGHT):
        raise SweepdeckError("--fix N needs --retry RUN (the run whose diagnosis suggested the fix).",
                             "Use --fix alone to let sweepdeck fix what pre-flight reports.")
    if not args.model:
        raise SweepdeckError("No model given.",
                             "Name one with --model (e.g. --model qwen-1.5b), or relaunch a run with --retry RUN.")
    workload = args.workload
    if args.custom_workload:
        if args.workload:
            raise SweepdeckError("Give either --workload or --custom-workload, not both.")
        workload = custom_workload(catalogs, **parse_custom(args.custom_workload))
    try:
        spec = build_spec(
            catalogs,
            args.model,
            backend=backend_name,
            workload=workload,
            model_choice=args.model_choice,
            profile=args.profile,
            namespace=args.namespace,
            experiment_id=args.experiment_id,
            tp=args.tp,
            max_model_len=args.max_model_len,
            max_num_batched_tokens=args.max_num_batched_tokens,
            max_num_seqs=args.max_num_seqs,
            image=args.image,
            memory=args.memory,
            cpu=args.cpu,
            extra_args=_extra_args(args) or None,
            base_values=settings.base_values(backend_name, args.profile),  # as the wizard does (tekton, argo)
        )
    except AmbiguousModel as exc:
        options = ", ".join(f"{o['id']} ({o.get('label', '')})" for o in exc.options)
        raise SweepdeckError(
            f"{exc.alias!r} is ambiguous: {exc.prompt}",
            f"Pick one with --model-choice ID: {options}",
        ) from None
    spec = _workload_flags(args, spec)
    with contextlib.suppress(SweepdeckError):  # a bad profile is reported by the backend itself
        # the GPU the profile names, for the memory plan in pre-flight
        spec = with_profile_gpu(spec, settings.profile(args.profile, backend_name).options)
    if not args.experiment_id:
        # the default id is per day: a second run today gets -2, -3...
        free = RunStore().free_id(spec.experiment_id)
        if free != spec.experiment_id:
            spec = spec.set("experiment_id", free, Source.AUTO)
    return _finish(args, settings, spec, backend_name)


def _workload_flags(args, spec):
    if args.max_requests is not None:
        spec = spec.set("workload.max_requests", _positive_int("--max-requests", args.max_requests))
    if args.rate is not None:
        spec = spec.set("workload.rate", args.rate)
    return spec


def _extra_args(args) -> list[str]:
    import shlex

    from config.errors import SweepdeckError

    extra: list[str] = []
    for value in args.vllm_arg:
        try:
            extra += shlex.split(value)
        except ValueError as exc:
            raise SweepdeckError(f"Cannot parse --vllm-arg {value!r}: {exc}.") from None
    return extra


def _retry_spec(args):
    """The saved run's spec with fix N of its diagnosis (and any engine/workload flags) applied."""
    from backends.events import Alert
    from backends.session import apply_fix
    from backends.store import RunStore
    from config.errors import SweepdeckError
    from config.spec import Source

    for flag in ("model", "workload", "custom_workload", "model_choice"):
        if getattr(args, flag):
            raise SweepdeckError(
                f"--{flag.replace('_', '-')} cannot be combined with --retry (the saved run names it)."
            )
    store = RunStore()
    record = store.get(args.retry)
    spec = record.spec()
    alerts = [e for e in store.open(args.retry).events() if isinstance(e, Alert) and e.fixes]
    fix = None
    if args.fix not in (None, FIX_PREFLIGHT):
        if not alerts:
            raise SweepdeckError(f"Run {args.retry!r} has no suggested fixes.",
                                 "Retry it without --fix, or change settings with flags.")
        fixes = alerts[0].fixes
        number = _positive_int("--fix", args.fix)
        if number > len(fixes):
            listing = "; ".join(f"{i}. {f.label}" for i, f in enumerate(fixes, 1))
            raise SweepdeckError(f"Run {args.retry!r} has {len(fixes)} suggested fixes, not {number}.",
                                 f"Fixes: {listing}")
        fix = fixes[number - 1]
    if fix is not None:
        _refuse_repeated_fix(args, store, fix)
        new = apply_fix(spec, fix, store)
    else:
        import dataclasses

        new = spec.set("experiment_id", store.free_id(f"{spec.experiment_id[:56]}-retry"), Source.AUTO)
        new = dataclasses.replace(new, parent=spec.experiment_id)
    # flags given with --retry are the user's own changes on top
    for flag, path in (
        ("tp", "engine.tp"), ("max_model_len", "engine.max_model_len"), ("max_num_seqs", "engine.max_num_seqs"),
        ("max_num_batched_tokens", "engine.max_num_batched_tokens"), ("image", "engine.image"),
        ("memory", "engine.memory"), ("cpu", "engine.cpu"),
    ):
        if getattr(args, flag) is not None:
            new = new.set(path, getattr(args, flag))
    extra = _extra_args(args)
    if extra:
        new = new.set("engine.extra_args", tuple(dict.fromkeys(new.engine.extra_args + tuple(extra))))
    if args.experiment_id:
        new = new.set("experiment_id", args.experiment_id)
    return _workload_flags(args, new)


def _refuse_repeated_fix(args, store, fix) -> None:
    """The same fix was already launched from this run: say which run that was (``--again`` launches it again).

    Not ``--yes``: scripts pass that to skip the confirmation, and a second
    identical relaunch is rarely what they mean."""
    from backends.lineage import relaunches
    from config.errors import SweepdeckError

    done = next((r for r in reversed(relaunches(store.list(), args.retry)) if r.same_fix(fix.changes)), None)
    if done is not None and not args.again:
        raise SweepdeckError(
            f"Run {args.retry!r} was already relaunched with fix {args.fix} ({fix.label}) as {done.id}"
            + (f" ({done.state})." if done.state else "."),
            f"See that run (sweepdeck results show {done.id}), or add --again to launch the same fix once more.",
        )


def _finish(args, settings, spec, backend_name):
    from config.errors import SweepdeckError
    from config.settings import Profile

    profile = settings.profile(args.profile or (spec.profile if args.retry else None), backend_name)
    if spec.backend != backend_name:
        spec = spec.set("backend", backend_name)
    local_flags = {"server": args.server, "port": args.port, "ready_timeout": args.ready_timeout}
    given = {k: v for k, v in local_flags.items() if v is not None}
    if given and backend_name != "local":
        raise SweepdeckError(
            f"--{next(iter(given)).replace('_', '-')} only applies to the local backend.",
        )
    if (args.sim_fail or args.sim_arg) and backend_name != "local":
        raise SweepdeckError("--sim-fail/--sim-arg only apply to the local backend's simulator.")
    if given:
        options = dict(profile.options)
        if "port" in given:
            port = _int("--port", given["port"])
            if not 0 <= port <= 65535:
                raise SweepdeckError(f"--port must be 0..65535, got {port}.")
            options["port"] = port
        if "ready_timeout" in given:
            try:
                timeout = float(given["ready_timeout"])
            except ValueError:
                timeout = -1
            if not timeout > 0:
                raise SweepdeckError("--ready-timeout must be a positive number of seconds, got "
                                     f"{given['ready_timeout']!r}.")
            options["ready_timeout"] = timeout
        if "server" in given:
            options["server"] = given["server"]
        profile = Profile(profile.name, profile.backend, options)
    options: dict = {}
    if backend_name == "local":
        sim_args: list[str] = []
        if args.sim_fail:
            mode = args.sim_fail.strip()
            base = mode.split("=", 1)[0].split(":", 1)[0]
            if base not in ("oom", "model-not-found", "trust-remote-code", "crash-after"):
                raise SweepdeckError(f"Unknown --sim-fail mode {mode!r}.", "Modes: " + ", ".join(SIM_FAILS))
            sim_args += ["--fail", mode]
        sim_args += list(args.sim_arg)
        options["sim_args"] = sim_args
    from backends.registry import create_backend

    backend = create_backend(settings, backend_name, profile, **options)
    return spec, settings, backend


def _int(flag: str, value: str) -> int:
    from config.errors import SweepdeckError

    try:
        return int(str(value).strip())
    except ValueError:
        raise SweepdeckError(f"{flag} must be a whole number, got {value!r}.") from None


def _positive_int(flag: str, value: str) -> int:
    from config.errors import SweepdeckError

    number = _int(flag, value)
    if number < 1:
        raise SweepdeckError(f"{flag} must be a positive integer, got {value!r}.")
    return number


_CUSTOM_KEYS = {
    "prompt": "prompt_tokens",
    "output": "output_tokens",
    "prompt_stdev": "prompt_tokens_stdev",
    "prompt_min": "prompt_tokens_min",
    "prompt_max": "prompt_tokens_max",
    "output_stdev": "output_tokens_stdev",
    "output_min": "output_tokens_min",
    "output_max": "output_tokens_max",
    "requests": "max_requests",
    "prefix": "prefix_tokens",
    "seed": "random_seed",
    "concurrency": "max_concurrency",
}


def parse_custom(text: str) -> dict[str, str]:
    """``'prompt=500 output=100 rate=5'`` -> ``{prompt_tokens: '500', ...}`` (validated later)."""
    from config.errors import SweepdeckError

    values: dict[str, str] = {}
    for item in text.replace(",", " ").split():
        key, eq, value = item.partition("=")
        if not eq or not key or not value:
            raise SweepdeckError(
                f"Cannot read {item!r} in --custom-workload.", "Write key=value pairs, e.g. 'prompt=500 output=100'."
            )
        key = key.strip().lower().replace("-", "_")
        values[_CUSTOM_KEYS.get(key, key)] = value.strip()
    return values
