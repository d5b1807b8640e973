"""``sweepdeck tekton``: render templates, transform matrix PipelineRuns, install shared tasks, run.

Examples::

    sweepdeck tekton render -t pipeline.yaml.j2 -f values.yaml -r pipelinerun.yaml -o pipeline.yaml
    sweepdeck tekton transform-pr pipelinerun-matrix.yaml --unroll gaiePluginConfig -n 2 -o pr.yaml
    sweepdeck tekton install-shared
    sweepdeck tekton preflight llama2-7b -n mert
    sweepdeck tekton run llama2-7b -n mert --tp 2,4 --yes
    sweepdeck tekton cancel 20260101-llama2-7b-chatbot --now
"""

from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("tekton", help="Tekton: render (tektonc), transform-pr, run-pr, cancel, install-shared, "
                                      "preflight, run")
    ts = p.add_subparsers(dest="tekton_command", metavar="ACTION", required=True)

    r = ts.add_parser("render", help="render a tektonc pipeline template (loop nodes, two Jinja passes)",
                      description="tektonc's command: the same options, filters (dns, slug, tojson), global "
                                  "(enumerate_list) and output; errors exit 1.")
    r.add_argument("-t", "--template", help="pipeline template (.yaml.j2; - for stdin); default: sweepdeck's BLIS "
                                            "pipeline for the values' format (guidellm, or an inference-perf "
                                            "profileTemplate)")
    r.add_argument("-f", "--values", required=True, help="values file (YAML/JSON; - for stdin)")
    r.add_argument("-r", "--pipelinerun", help="PipelineRun whose 'stack'/'workload' params are merged into the values")
    r.add_argument("-o", "--out", help="output file (default: stdout)")
    r.add_argument("--explain", action="store_true", help="print the task name/runAfter table to stderr")
    r.add_argument("--debug", action="store_true", help="on an error, print the full traceback")

    t = ts.add_parser("transform-pr",
                      help="limit a matrix PipelineRun's parallelism (unroll / barrier / sliding window)",
                      description="The Tekton PoC's transform-pr-parallel.py: with no options the matrix is expanded "
                                  "into <task>-0, <task>-1… run one at a time (-n 1). Also: matrix.include, a matrix "
                                  "task that is not first, --unroll with -n / --sliding-window.")
    t.add_argument("input", metavar="IN", help="PipelineRun with a matrix task (- for stdin)")
    t.add_argument("--unroll", metavar="PARAMS",
                   help="comma-separated matrix parameters to unroll into one task per value")
    t.add_argument("-n", "--max-parallel", type=int, dest="limit", default=None,
                   help="at most N tasks running at once (default 1)")
    t.add_argument("--sliding-window", action="store_true",
                   help="task i waits for task i-N (default: barrier batches of N)")
    t.add_argument("--task", help="the matrix task to transform when there are several")
    t.add_argument("-o", "--out", "--output", dest="out", help="output file (default or -: stdout)")

    rp = ts.add_parser("run-pr", help="launch a (matrix) PipelineRun, optionally transformed like transform-pr, "
                                      "and watch it (done/total)")
    rp.add_argument("input", metavar="IN", help="PipelineRun file (e.g. a factor x level matrix)")
    rp.add_argument("--namespace", help="namespace to run in (default: the profile's)")
    rp.add_argument("-p", "--profile", help="tekton profile name")
    rp.add_argument("--unroll", help="comma-separated matrix parameters to unroll")
    rp.add_argument("-n", "--max-parallel", type=int, dest="limit", help="at most N tasks running at once")
    rp.add_argument("--sliding-window", action="store_true")
    rp.add_argument("--task", help="the matrix task to transform when there are several")
    rp.add_argument("--json", action="store_true", help="print events as JSON lines")

    k = ts.add_parser("cancel", help="cancel a saved run's PipelineRun (finally clean-ups run; --now stops them too)")
    k.add_argument("run_id", metavar="RUN-ID", help="run id (see: sweepdeck runs)")
    k.add_argument("--now", action="store_true", help="spec.status Cancelled: stop at once, skipping the finally tasks")
    k.add_argument("-p", "--profile", help="tekton profile name (default: the run's)")

    i = ts.add_parser("install-shared",
                      help="apply the shared guidellm-load-generator Task to the 'pipelines' namespace")
    i.add_argument("--namespace", default="pipelines")
    _cluster_args(i)
    i.add_argument("--dry-run", action="store_true", help="print the Task instead of applying it")

    for name, text in (("preflight", "check the cluster for an experiment (read-only)"),
                       ("run", "launch and watch an experiment (headless)")):
        c = ts.add_parser(name, help=text)
        c.add_argument("model", help="model id or alias")
        c.add_argument("-n", "--namespace", help="namespace to run in (default: the profile's)")
        c.add_argument("-p", "--profile", help="tekton profile name")
        c.add_argument("-w", "--workload", help="workload preset (default: the values file's)")
        c.add_argument("--tp", help="tensor parallel values, comma separated (a subset of values.yaml's, or new ones)")
        c.add_argument("--id", dest="experiment_id", help="experiment id (default: date-model-workload)")
        c.add_argument("--image", help="vLLM image")
        c.add_argument("--max-model-len", type=int)
        c.add_argument("--vllm-args", help="extra vLLM arguments, quoted as one string")
        c.add_argument("--yes", action="store_true", help="do not ask before launching; accept pre-flight warnings")
        c.add_argument("--fix", action="store_true",
                       help="do what pre-flight offers (create a missing namespace) without asking")
        if name == "run":
            c.add_argument("--render-only", metavar="DIR",
                           help="write the effective values, Pipeline, PipelineRun and Tasks to DIR; apply nothing")
            c.add_argument("--delete-after", action="store_true", help="delete the PipelineRun after copying results")
            c.add_argument("--json", action="store_true", help="print events as JSON lines")
            c.add_argument("--detach-on-exit", action="store_true",
                           help="on Ctrl+C/SIGTERM/SIGHUP keep the PipelineRun (reattach with: sweepdeck attach ID)")


def _cluster_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context (default: current)")


def main(args: argparse.Namespace) -> int:
    action = args.tekton_command
    if action == "render":
        return _render(args)
    if action == "transform-pr":
        return _transform(args)
    if action == "install-shared":
        return _install_shared(args)
    if action == "run-pr":
        return _run_pr(args)
    if action == "cancel":
        return _cancel(args)
    return _run_command(args)


def _write(text: str, out: str | None) -> None:
    if out:
        from pathlib import Path

        Path(out).expanduser().write_text(text, encoding="utf-8")
        print(f"[INFO] wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def _render(args: argparse.Namespace) -> int:
    """tektonc: render, print warnings and the --explain table to stderr; every failure exits 1."""
    import traceback

    from config.errors import SweepdeckError

    try:
        text, notes, table = _render_text(args)
    except SweepdeckError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"[ERROR] {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  {exc.hint}", file=sys.stderr)
        return 1
    except Exception as exc:  # tektonc's catch-all: one line (the traceback with --debug), exit 1
        if args.debug:
            traceback.print_exc()
        else:
            print(f"[ERROR] {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return 1
    for note in notes:
        print(f"[WARN] {note}", file=sys.stderr)
    if table:
        sys.stderr.write(table)
    _write(text, args.out)
    return 0


def _render_text(args: argparse.Namespace) -> tuple[str, list[str], str]:
    import io

    from backends.tekton.render import STDIN, dump, explain, load_values, read_text, render_files

    piped = None
    if STDIN in (args.template, args.values) and args.template != args.values:
        piped = read_text(STDIN, "Values file" if args.values == STDIN else "Template")  # read once, used twice
    template = args.template
    if not template:
        from backends.tekton.build import package_template  # (only here: -t renders without the spec model)

        # sweepdeck's own template for the values' format (guidellm, or an inference-perf profileTemplate)
        template = str(package_template(load_values(args.values, io.StringIO(piped or ""))))
    notes: list[str] = []
    doc, _values = render_files(template, args.values, args.pipelinerun, notes, io.StringIO(piped or ""))
    return dump(doc), notes, explain(doc) if args.explain else ""


def _transform(args: argparse.Namespace) -> int:
    from backends.tekton.matrix import count, transform
    from backends.tekton.render import STDIN, dump, load_yaml_file
    from config.errors import SweepdeckError

    pr = load_yaml_file(args.input, "PipelineRun file")
    shown = "standard input" if args.input == STDIN else args.input
    if not isinstance(pr, dict):
        raise SweepdeckError(f"{shown} is not a PipelineRun (a YAML mapping).")
    unroll = [u.strip() for u in args.unroll.split(",") if u.strip()] if args.unroll else None
    out = transform(pr, unroll=unroll, limit=args.limit, sliding_window=args.sliding_window, task=args.task)
    mode = ("unroll " + ",".join(unroll) if unroll else "expand")
    mode += ", sliding window" if args.sliding_window else ", barrier"
    print(f"[INFO] {count(pr)} combinations; {len(out['spec']['pipelineSpec']['tasks'])} tasks "
          f"({mode}, at most {args.limit or 1} at once)", file=sys.stderr)
    _write(dump(out), None if args.out == STDIN else args.out)
    return 0


def _install_shared(args: argparse.Namespace) -> int:
    import asyncio

    import yaml

    from templates.render import render

    task = yaml.safe_load(render("tekton/tasks/guidellm-load-generator.yaml"))
    task["metadata"]["namespace"] = args.namespace
    if args.dry_run:
        sys.stdout.write(yaml.safe_dump(task, sort_keys=False))
        return 0
    from backends.tekton.install import install_shared

    for line in asyncio.run(install_shared(task, args.namespace, args.kubeconfig, args.context)):
        print(f"[INFO] {line}")
    return 0


def _prepare(args: argparse.Namespace):
    """Settings, profile, spec (against the profile's base values) and backend."""
    import shlex

    from backends.tekton import TektonBackend
    from backends.tekton.build import Sources
    from backends.tekton.render import merge_pipelinerun
    from config.errors import SweepdeckError
    from config.settings import Profile, load_settings
    from config.spec import build_spec

    settings = load_settings(args.config, args.catalog_dir)
    profile = settings.profile(args.profile, "tekton")
    sources = Sources.from_profile(profile)
    base = merge_pipelinerun(sources.base_values(), sources.base_pipelinerun())
    extra = None
    if args.vllm_args:
        try:
            extra = shlex.split(args.vllm_args)
        except ValueError as exc:
            raise SweepdeckError(f"Cannot parse --vllm-args {args.vllm_args!r}: {exc}.") from None
    spec = build_spec(
        settings.catalogs, args.model, backend="tekton", workload=args.workload, profile=profile.name,
        namespace=args.namespace or profile.get("namespace"), experiment_id=args.experiment_id,
        image=args.image, max_model_len=args.max_model_len, extra_args=extra, base_values=base,
    )
    if args.tp:
        try:
            tps = tuple(int(t) for t in args.tp.split(",") if t.strip())
        except ValueError:
            raise SweepdeckError(f"--tp takes comma-separated integers, not {args.tp!r}.",
                                 "Example: --tp 2,4") from None
        spec = spec.set("tp_sweep", tps)
    if getattr(args, "delete_after", False):
        profile = Profile(profile.name, profile.backend, {**profile.options, "delete_after": True})
    return settings, spec, TektonBackend(settings, profile)


async def _offer_remedies(backend, spec, printer, fix: bool):
    """Run the checks; carry out the remedies they offer when the user agrees (or ``--fix``)."""
    from tui.headless import ask_yes_no, offer_remedies

    checks = await backend.preflight(spec)
    if await offer_remedies(backend, spec, checks, printer, fix=fix, ask=ask_yes_no):
        checks = await backend.preflight(spec)
    return checks


def _run_command(args: argparse.Namespace) -> int:
    import asyncio

    from backends.base import blocking
    from backends.supervisor.drive import drive
    from tui.headless import HeadlessPrinter, ask_yes_no

    _settings, spec, backend = _prepare(args)
    if getattr(args, "render_only", None):
        from pathlib import Path

        out = Path(args.render_only).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        for name, text in backend.build(spec).files().items():
            (out / name).write_text(text, encoding="utf-8")
            print(f"[INFO] wrote {out / name}")
        return 0
    printer = HeadlessPrinter(json_mode=getattr(args, "json", False), spec=spec)
    printer.spec_summary(spec)
    if args.tekton_command == "preflight":
        checks = asyncio.run(_offer_remedies(backend, spec, printer, args.fix or args.yes))
        printer.checks(checks)
        printer.flush()
        return 3 if blocking(checks) else 0

    async def go():
        await _offer_remedies(backend, spec, printer, args.fix or args.yes)
        return await drive(
            backend, spec, on_event=printer, on_checks=printer.checks,
            confirm=None if args.yes else (lambda checks: ask_yes_no("Proceed?")),
            assume_yes=args.yes, detach_on_signal=args.detach_on_exit,
        )

    result = asyncio.run(go())
    printer.result(result)
    return result.exit_code


def _run_pr(args: argparse.Namespace) -> int:
    """Launch a PipelineRun file (transformed when asked) and print its events until it ends."""
    import asyncio

    from backends.tekton import TektonBackend
    from backends.tekton.matrix import transform
    from backends.tekton.render import load_yaml_file
    from config.errors import SweepdeckError
    from config.settings import load_settings
    from tui.headless import HeadlessPrinter

    pr = load_yaml_file(args.input, "PipelineRun file")
    if not isinstance(pr, dict) or pr.get("kind") != "PipelineRun":
        raise SweepdeckError(f"{args.input} is not a PipelineRun.")
    if args.unroll or args.limit is not None:
        unroll = [u.strip() for u in args.unroll.split(",") if u.strip()] if args.unroll else None
        pr = transform(pr, unroll=unroll, limit=args.limit, sliding_window=args.sliding_window, task=args.task)
    settings = load_settings(args.config, args.catalog_dir)
    profile = settings.profile(args.profile, "tekton")
    namespace = args.namespace or profile.get("namespace")
    if not namespace:
        raise SweepdeckError("No namespace.", "Give --namespace NS or set 'namespace' in the tekton profile.")
    backend = TektonBackend(settings, profile)
    printer = HeadlessPrinter(json_mode=args.json, progress_every=0.0)
    return asyncio.run(_run_pr_supervised(backend, pr, namespace, printer, profile.name))


async def _run_pr_supervised(backend, pr: dict, namespace: str, printer, profile: str) -> int:
    """A ready PipelineRun, as a run with its own supervisor: pre-flight, launch, events until it ends.

    Ctrl+C cancels it gracefully (``CancelledRunFinally``: the finally tasks run and are
    followed to the end); a second Ctrl+C stops it at once (``Cancelled``); a third stops waiting.
    """
    from backends.events import Notice
    from backends.store import RunStore
    from backends.supervisor.drive import drive
    from backends.tekton.launch_matrix import MatrixLaunch, pipelinerun_spec
    from backends.tekton.matrix import count, units

    store = RunStore()
    spec = pipelinerun_spec(pr, profile=profile, namespace=namespace, store=store)
    name = pr["metadata"]["name"]
    launch = MatrixLaunch(backend, pr, namespace)

    def launched(info) -> None:
        tasks = len(info.handle.get("tasks") or units(pr))
        printer(Notice(f"PipelineRun {name} created in {namespace}: {count(pr) or tasks} matrix combinations, "
                       f"{tasks} TaskRuns"))

    def on_stop(presses: int) -> None:
        if presses == 1:
            printer(Notice(f"Cancelling PipelineRun {name} (finally tasks run; Ctrl+C again to stop at once)…"))
        else:
            printer(
                Notice(f"Stopping PipelineRun {name} at once (Cancelled: finally tasks are stopped too)…", "warning")
            )

    result = await drive(launch, spec, store=store, on_event=printer, assume_yes=True, on_launched=launched,
                         on_stop=on_stop)
    printer.flush()
    return 0 if result.outcome == "succeeded" else 1


def _cancel(args: argparse.Namespace) -> int:
    """``sweepdeck tekton cancel RUN-ID [--now]``: set the saved run's PipelineRun ``spec.status``."""
    import asyncio
    import contextlib

    from backends.base import Run
    from backends.store import RunDir, RunStore
    from backends.tekton import TektonBackend
    from backends.tekton.backend import TEKTON, succeeded_condition
    from config.errors import SweepdeckError
    from config.settings import load_settings

    record = RunStore().get(args.run_id)
    if record.backend != "tekton":
        raise SweepdeckError(f"Run {args.run_id} ran on the {record.backend} backend, not tekton.",
                             "Cancel it with: sweepdeck attach " + args.run_id + " (then Ctrl+C)")
    settings = load_settings(args.config, args.catalog_dir)
    session = record.handle_values()
    spec = None
    with contextlib.suppress(SweepdeckError, OSError, ValueError):
        spec = record.spec()  # a run-pr run has no spec; its PipelineRun is in the run's meta
    profile = settings.profile(args.profile or (spec.profile if spec is not None else None), "tekton")
    backend = TektonBackend(settings, profile)

    async def go() -> int:
        if session.get("PIPELINERUN"):
            run = await backend.attach(record)
        elif record.meta.get("pipelinerun") and record.meta.get("namespace"):
            handle = {"pipelinerun": record.meta["pipelinerun"], "namespace": record.meta["namespace"]}
            run = Run(record.id, "tekton", spec, RunDir(record.path), handle)
        else:
            raise SweepdeckError(f"Run {args.run_id} has no saved PipelineRun to cancel.")
        ns, name = run.handle["namespace"], run.handle["pipelinerun"]
        pr = await backend.kube().get(*TEKTON, "pipelineruns", name, ns)
        if pr is None:
            raise SweepdeckError(f"PipelineRun {name} no longer exists in {ns}.", "Nothing to cancel.")
        status, reason, _ = succeeded_condition(pr)
        if status in ("True", "False"):
            print(f"[INFO] PipelineRun {name} in {ns} has already finished ({reason}); nothing to cancel.")
            return 0
        await backend.cancel(run, graceful=not args.now)
        value = "Cancelled (finally tasks skipped)" if args.now else "CancelledRunFinally (finally tasks run)"
        print(f"[INFO] PipelineRun {name} in {ns}: spec.status set to {value}.")
        if session.get("PIPELINERUN"):
            print(f"[INFO] Follow it with: sweepdeck attach {record.id}")
        return 0

    return asyncio.run(go())
