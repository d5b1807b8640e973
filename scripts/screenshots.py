#!/usr/bin/env python3
"""Regenerate ``screenshots/*.svg``: one per screen and dialog, from the real app.

The app runs headless (``App.run_test``) on the real local backend with the
built-in vLLM simulator, in a private state directory, and is driven with
keys the way a user would: new experiment → model → workload → vLLM review →
summary → pre-flight → launch → run monitor; a ``--fail oom`` run for the
recovery dialog; quit with a live run for the quit dialog; Tekton (the real
``tekton`` backend on the tests' fake Kubernetes API server) for a pre-flight
remedy and the matrix sweep screen; an Argo sweep
(the real ``argo`` backend on the tests' fake Kubernetes API server, real
queue workers and queue API) for the sweep view. Nothing is left running
afterwards (every run is cleaned up through the quit dialog).

Usage::

    make screenshots            # or: .venv/bin/python scripts/screenshots.py [--out DIR] [--only sweep]
    .venv/bin/python scripts/screenshots.py --size 80x24 --out /tmp/shots-80   # every screen at another size
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZE = (120, 36)
#: The sweep view is shot larger, where it shows every section at once (``--size`` sets both).
SWEEP_SIZE_DEFAULT = (160, 48)


def make_app(state: Path, *, sim_args: list[str] | None = None, **local_options):
    """The real app on the local backend (simulator on a free port)."""
    from backends.cleanup import REGISTRY
    from backends.local import LocalBackend, free_port
    from backends.store import RunStore
    from config.profiles import fields_for
    from config.schema import validate
    from config.settings import Profile, Settings
    from tui.app import SweepdeckApp

    options = {"port": free_port(), "ready_timeout": 60.0, **local_options}
    profile = Profile("local", "local", validate(fields_for("local"), options, "screenshots", "local"))
    settings = Settings(local=profile)
    backend = LocalBackend(settings, profile, sim_args=sim_args, registry=REGISTRY)
    return SweepdeckApp(settings, {"local": backend}, store=RunStore(state), install_signals=False)


class Shooter:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.names: list[str] = []

    async def __call__(self, pilot, name: str) -> None:
        await pilot.pause()
        await pilot.pause()
        pilot.app.save_screenshot(filename=f"{name}.svg", path=str(self.out))
        self.names.append(name)
        print(f"  screenshots/{name}.svg")


async def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def fill_custom(pilot, requests: int) -> None:
    from textual.widgets import Input, Select

    screen = pilot.app.screen
    screen.query_one("#custom-prompt_tokens", Input).value = "128"
    screen.query_one("#custom-output_tokens", Input).value = "64"
    screen.query_one("#custom-max_requests", Input).value = str(requests)
    screen.query_one("#custom-rate", Input).value = "8"
    screen.query_one("#custom-rate_type", Select).value = "constant"
    await pilot.pause()


async def through_preflight(pilot, from_review: bool = True) -> None:
    """Next to the summary (from the review) and on to the pre-flight checks."""
    from tui.screens.wizard.steps import PreflightStep

    if from_review:
        await pilot.press("f8")  # summary
        await pilot.pause()
    await pilot.press("f8")  # pre-flight
    step = pilot.app.screen.query_one(PreflightStep)
    await wait_for(lambda: step.checks is not None, 30, "the pre-flight checks")


async def main_flow(shoot: Shooter, state: Path) -> None:
    """Every wizard step, the monitor, the runs list and the dialogs."""
    from textual.widgets import DataTable, Input

    from tui.screens.monitor import RunMonitorScreen

    app = make_app(state, keep_server=False)
    async with app.run_test(size=SIZE) as pilot:
        await shoot(pilot, "runs-empty")
        await pilot.press("n")
        await pilot.pause()
        await shoot(pilot, "wizard-1-model")
        await pilot.press(*"llama-7b", "enter")
        await pilot.pause()
        await shoot(pilot, "dialog-disambiguation")
        await pilot.press("escape", "ctrl+u")
        await pilot.press(*"70b")
        await shoot(pilot, "wizard-1-model-large")
        await pilot.press("ctrl+u", *"qwen-1.5b", "enter")
        await pilot.pause()
        await shoot(pilot, "wizard-2-workload")
        await pilot.press("c")
        await pilot.pause()
        pilot.app.screen.query_one("#custom-prompt_tokens", Input).value = "lots"
        await shoot(pilot, "wizard-2-workload-custom-error")
        await fill_custom(pilot, 60)
        await pilot.press("f8")
        await pilot.pause()
        wizard = pilot.app.screen
        table = wizard.query_one("#review-table", DataTable)
        table.move_cursor(row=table.get_row_index("engine.max_num_seqs"))
        await pilot.press("e", "ctrl+u", *"128", "enter", "plus", *"--enable-prefix-caching", "enter")
        await shoot(pilot, "wizard-3-review")
        await pilot.press("y", "f8")
        await shoot(pilot, "wizard-4-summary")
        await pilot.press("i")
        await pilot.pause()
        await shoot(pilot, "dialog-experiment-id")
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("b")
        await pilot.pause()
        await shoot(pilot, "dialog-backend-choice")
        await pilot.press("escape")
        await pilot.pause()
        await through_preflight(pilot, from_review=False)
        await shoot(pilot, "wizard-5-preflight")
        await pilot.press("l")
        await pilot.pause()
        monitor = pilot.app.screen
        assert isinstance(monitor, RunMonitorScreen), monitor
        ctrl = monitor.controller
        await wait_for(lambda: ctrl.metrics is not None and ctrl.metrics.completed >= 20, 90, "the workload")
        await shoot(pilot, "monitor")
        await wait_for(lambda: not ctrl.live, 120, "the run to finish")
        await shoot(pilot, "monitor-finished")
        await pilot.press("escape")
        await shoot(pilot, "runs")
        await pilot.press("question_mark")
        await shoot(pilot, "dialog-help")
        await pilot.press("escape", "colon", *"llama3-70b chatbot TP=4 in namespace mert")
        await shoot(pilot, "dialog-quick-command")
        await pilot.press("enter")
        await pilot.pause()
        await shoot(pilot, "wizard-quick-command-review")
        await pilot.press("escape", "escape", "escape")
        await pilot.pause()
        await pilot.press("colon", *"qwen-1.5b chatbt max_model_len=2048", "enter")
        await pilot.pause()
        await shoot(pilot, "dialog-spelling")
        await pilot.press("escape")  # back to the line, the unknown word named under it
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("d")
        await shoot(pilot, "dialog-confirm-delete")
        await pilot.press("n")
        await pilot.press("ctrl+p")
        await pilot.press(*"run")
        await shoot(pilot, "command-palette")
        await pilot.press("escape")
        await pilot.pause()
        # A second run that keeps serving, to show the quit dialog.
        await pilot.press("n")
        await pilot.pause()
        await pilot.press(*"qwen-1.5b", "enter")
        await pilot.pause()
        await pilot.press("c")
        await fill_custom(pilot, 5)
        await pilot.press("f8")  # review
        await pilot.pause()
        await through_preflight(pilot)
        pilot.app.backend_for("local").profile.options["keep_server"] = True
        await pilot.press("l")
        await pilot.pause()
        ctrl = pilot.app.screen.controller
        await wait_for(lambda: ctrl.endpoint is not None, 60, "the endpoint")
        await pilot.press("escape")
        await pilot.press("q")
        await shoot(pilot, "dialog-quit")
        await pilot.press("enter")
        from tui.screens.dialogs import CleanupScreen

        if isinstance(pilot.app.screen, CleanupScreen):  # shown while the registry runs (often only a moment)
            pilot.app.save_screenshot(filename="dialog-cleanup.svg", path=str(shoot.out))
        await wait_for(lambda: app.return_code is not None, 30, "cleanup and exit")


async def recovery_flow(shoot: Shooter, state: Path) -> None:
    """A ``--fail oom`` run: the recovery dialog; a fix relaunched; the family on the runs list."""
    from tui.screens.monitor import RunMonitorScreen
    from tui.screens.recovery import RecoveryDialog
    from tui.screens.runs import RunsScreen
    from tui.widgets.virtual_table import VirtualTable

    app = make_app(state, sim_args=["--fail", "oom"], keep_server=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("colon", *"llama2-7b chatbot max_requests=10", "enter")
        await pilot.pause()
        await through_preflight(pilot)
        await pilot.press("l")
        await wait_for(lambda: isinstance(pilot.app.screen, RecoveryDialog), 60, "the recovery dialog")
        await shoot(pilot, "dialog-recovery")
        await pilot.press("escape")
        await pilot.pause()
        await shoot(pilot, "monitor-failed")
        failed = pilot.app.screen.controller
        await pilot.press("r")
        await wait_for(lambda: isinstance(pilot.app.screen, RecoveryDialog), 10, "the recovery dialog again")
        labels = [fix.label for fix in pilot.app.screen.alert.fixes]
        await pilot.press(str(labels.index("Reduce batch") + 1))  # half the sequences: within the simulator's budget
        await wait_for(lambda: failed.child is not None and failed.child.state in ("succeeded", "failed"),
                       120, "the fix run")
        while not isinstance(pilot.app.screen, RunMonitorScreen):  # a dialog the fix run opened
            await pilot.press("escape")
            await pilot.pause()
        await pilot.press("escape")
        await wait_for(lambda: isinstance(pilot.app.screen, RunsScreen), 10, "the runs list")
        await pilot.pause()
        screen = pilot.app.screen
        table = screen.query_one("#runs-table", VirtualTable)
        table.move_cursor(row=table.get_row_index(failed.id))
        await shoot(pilot, "runs-family")
        await pilot.press("p")  # the failed run's replay: r lists what was relaunched from it
        await wait_for(lambda: isinstance(pilot.app.screen, RunMonitorScreen) and pilot.app.screen.batches > 0,
                       30, "the replay")
        await pilot.press("r")
        await wait_for(lambda: isinstance(pilot.app.screen, RecoveryDialog), 10, "the recovery dialog of the replay")
        await shoot(pilot, "dialog-recovery-relaunched")
        await pilot.press("escape", "escape")
        await pilot.pause()
        await pilot.press("q")
        await pilot.pause()
        if app.return_code is None:
            await pilot.press("enter")
        await wait_for(lambda: app.return_code is not None, 30, "cleanup and exit")


#: The fake benchmark each sweep config runs (argv words are formatted one by one, so no braces here).
SWEEP_BENCH = """#!/bin/sh
# $1 id  $2 batch size  $3 sequence length
id=$1; bs=$2; seq=$3
if [ $((id % 61)) -eq 0 ]; then sleep 60; fi  # a stuck worker: its batch turns stale
sleep 0.$((id % 4 + 2))
if [ "$bs" -eq 8 ] && [ "$seq" -eq 4096 ] && [ $((id % 2)) -eq 0 ]; then
  echo "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB" >&2; exit 1; fi
if [ $((id % 41)) -eq 0 ]; then echo "timeout: the vLLM server was not ready after 600 s" >&2; exit 1; fi
if [ $((id % 53)) -eq 0 ]; then echo "guidellm: connection refused (http://vllm-0:8000/v1)" >&2; exit 1; fi
echo "config $id: 1432.5 tok/s"
"""

SWEEP_SIZE = SWEEP_SIZE_DEFAULT


async def sweep_flow(shoot: Shooter, state: Path) -> None:
    """An Argo work-queue sweep: the sweep view, a failure group, the reset-stale question.

    The real ``argo`` backend talks to the fake Kubernetes API server of the
    tests (``tests/support/fakekube``: no cluster runs here) whose Argo test
    controller starts the worker pods; each runs the real reference worker
    (``QueueWorker``) against a real queue API (FastAPI + SQLite on a free
    port), with a small shell script as the benchmark. Shot at 160×48, where
    the sweep view shows every section at once.
    """
    import httpx
    import yaml

    from backends.argo import ArgoBackend
    from backends.argo.backend import sweep_spec
    from backends.cleanup import CleanupRegistry
    from backends.store import RunStore
    from config.settings import load_settings
    from tests.integration.queue.conftest import WORKER, ApiServer, auth
    from tests.support.fakekube import start_fake_kube
    from tests.support.fakekube.argo_controller import ArgoController, install_argo_crds
    from tui.app import SweepdeckApp
    from tui.screens.dialogs import ConfirmDialog
    from tui.screens.sweep import FailureGroupScreen, SweepMonitorScreen

    ns, mvid = "sweeps", "llama3-70b-v2"
    work = state / "sweep"
    work.mkdir()
    bench = work / "bench.sh"
    bench.write_text(SWEEP_BENCH)

    def run_pod(ctx):
        if ctx.template != "worker":
            return NotImplemented  # populate / finalize: the controller's default
        import threading

        from backends.queue.worker import QueueWorker

        async def go():
            worker = QueueWorker(api_url=ctx.arg("--api-url"), batch_size=int(ctx.arg("--batch-size")),
                                 model_version_id=ctx.arg("--model-version-id"), name=ctx.pod, on_log=ctx.log,
                                 token=WORKER,
                                 command=f"sh {bench} {{id}} {{batch_size}} {{sequence_length}}")
            loop = asyncio.get_running_loop()

            def stop_on_sigterm() -> None:
                ctx.stopped.wait()
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(worker.stop)

            threading.Thread(target=stop_on_sigterm, daemon=True).start()
            return await worker.run()

        asyncio.run(go())
        return True

    fake = start_fake_kube(work / "kubeconfig", namespace=ns)
    controller = None
    try:
        install_argo_crds(fake)
        fake.ensure_namespace(ns)
        controller = ArgoController(fake, step=0.05, run_pod=run_pod).start()
        with ApiServer(f"sqlite:///{work / 'queue.db'}") as api:
            matrix = {"hardware": ["H100-80GB:1", "A100-80GB:1", "L40S:1", "A40:1"],
                      "frameworks": ["vllm", "sglang", "tgi"]}
            httpx.post(f"{api.url}/api/v1/workflow/populate/{mvid}", json=matrix, timeout=30,
                       headers=auth("admin")).raise_for_status()
            config = work / "config.yaml"
            config.write_text(yaml.safe_dump({"profiles": {"sweep": {
                "backend": "argo", "namespace": ns, "kubeconfig": str(fake.kubeconfig), "queue_url": api.url,
                "queue_token_file": str(api.token_file), "model_version_id": mvid, "max_parallel_pods": 12,
                "batch_size": 4, "poll_interval": 0.5,
                "stale_after_min": 0.1,
            }}}))
            settings = load_settings(config)
            profile = settings.profile("sweep", "argo")
            registry = CleanupRegistry()
            backend = ArgoBackend(settings, profile, registry=registry)
            spec = sweep_spec(settings, profile, model_version_id=mvid, experiment_id=f"sweep-{mvid}")
            app = SweepdeckApp(settings, {"argo": backend}, store=RunStore(state), registry=registry,
                               install_signals=False)
            async with app.run_test(size=SWEEP_SIZE) as pilot:
                ctrl = app.launch_spec(spec)

                def interesting() -> bool:
                    s = ctrl.sweep
                    return s is not None and s.pct >= 40 and len(s.failures) >= 3 and len(s.stale) >= 1

                await wait_for(interesting, 180, "a sweep with failures and stale configs")
                screen = pilot.app.screen
                assert isinstance(screen, SweepMonitorScreen), screen
                await shoot(pilot, "sweep")
                await pilot.press("enter")
                await wait_for(lambda: isinstance(pilot.app.screen, FailureGroupScreen) and pilot.app.screen.loaded,
                               30, "the failure group")
                await shoot(pilot, "sweep-failure-group")
                await pilot.press("escape")
                await pilot.pause()
                await pilot.press("R")
                await wait_for(lambda: isinstance(pilot.app.screen, ConfirmDialog), 10, "the reset question")
                await shoot(pilot, "dialog-reset-stale")
                await pilot.press("n")
                await pilot.pause()
                await pilot.press("q")
                await pilot.pause()
                if app.return_code is None:
                    await pilot.press("enter")  # clean up everything: the Workflow is deleted
                await wait_for(lambda: app.return_code is not None, 30, "cleanup and exit")
    finally:
        if controller is not None:
            controller.stop()
        fake.stop()


async def tekton_flow(shoot: Shooter, state: Path) -> None:
    """Tekton on the tests' fake Kubernetes API (no cluster runs here): a pre-flight remedy and a matrix sweep.

    The real ``tekton`` backend and app; the fake API server's Tekton test
    controller advances the TaskRuns. The namespace is missing at first, so
    pre-flight offers to create it (``f``); then the Tekton PoC's 36-combination
    matrix PipelineRun is launched from the matrix screen, unrolled over one
    parameter with two tasks at once.
    """
    import yaml
    from textual.widgets import Input

    from backends.cleanup import CleanupRegistry
    from backends.store import RunStore
    from config.settings import load_settings
    from tests.support.fakekube import start_fake_kube
    from tests.support.fakekube.tekton_controller import TektonController
    from tui.app import SweepdeckApp
    from tui.screens.dialogs import ConfirmDialog
    from tui.screens.matrix import MatrixScreen
    from tui.screens.monitor import RunMonitorScreen

    ns = "mert"
    work = state / "tekton"
    work.mkdir()
    matrix_file = work / "pipelinerun-matrix.yaml"
    matrix_file.write_bytes(
        (ROOT / "tests" / "fixtures" / "tekton" / "tekton-poc-pipelinerun-matrix.yaml").read_bytes()
    )
    fake = start_fake_kube(work / "kubeconfig", namespace=ns)
    for i in range(2):
        fake.add_node(f"gpu-{i}", {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, gpus=8)
    controller = TektonController(fake, step=0.4).start()
    try:
        config = work / "config.yaml"
        config.write_text(yaml.safe_dump({"default_backend": "tekton", "default_profile": "lab", "profiles": {"lab": {
            "backend": "tekton", "namespace": ns, "kubeconfig": str(fake.kubeconfig)}}}))
        settings = load_settings(config)
        registry = CleanupRegistry()
        from backends.tekton import TektonBackend

        backend = TektonBackend(settings, settings.profile("lab", "tekton"), registry=registry)
        app = SweepdeckApp(settings, {"tekton": backend}, store=RunStore(state), registry=registry,
                           install_signals=False)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("colon", *"llama2-7b chatbot in namespace mert", "enter")
            await pilot.pause()
            await through_preflight(pilot)
            await shoot(pilot, "wizard-5-preflight-remedy")
            await pilot.press("f")
            await wait_for(lambda: isinstance(pilot.app.screen, ConfirmDialog), 10, "the remedy question")
            await shoot(pilot, "dialog-remedy")
            await pilot.press("y")
            await wait_for(lambda: fake.exists("v1", "Namespace", ns), 10, "the namespace")
            from tui.screens.runs import RunsScreen

            while not isinstance(pilot.app.screen, RunsScreen):  # back through the wizard's steps, then close it
                await pilot.press("escape")
                await pilot.pause()
            await pilot.press("m")
            await wait_for(lambda: isinstance(pilot.app.screen, MatrixScreen), 10, "the matrix screen")
            screen = pilot.app.screen
            screen.query_one("#matrix-path", Input).value = str(matrix_file)
            await pilot.press("enter")
            await pilot.pause()
            await pilot.press("space", "tab")
            await pilot.pause()
            await pilot.press("down", "down", "enter")
            await pilot.pause()
            screen.query_one("#matrix-limit", Input).value = "2"
            await shoot(pilot, "matrix")
            await pilot.press("f8")
            await wait_for(lambda: isinstance(pilot.app.screen, RunMonitorScreen), 20, "the run monitor")
            ctrl = pilot.app.screen.controller
            await wait_for(lambda: ctrl.progress is not None and 9 <= ctrl.progress.done < 36, 90, "matrix progress")
            await shoot(pilot, "monitor-matrix")
            await pilot.press("q")
            await pilot.pause()
            if app.return_code is None:
                await pilot.press("enter")  # clean up everything: the PipelineRun is cancelled
            await wait_for(lambda: app.return_code is not None, 30, "cleanup and exit")
    finally:
        controller.stop()
        fake.stop()


async def results_flow(shoot: Shooter, state: Path) -> None:
    """Results: one run's load points and a plot, the results list, a compare of three runs.

    The results are real reports (guidellm 0.8 and inference-perf against the
    simulator, from shared/reference/benchmark-reports) imported the way a
    user does (``sweepdeck results import``), next to any run the other flows
    left in the store.
    """
    from backends.results import import_result
    from backends.store import RunStore
    from tests.support.reference import REPORTS

    store = RunStore(state)
    for path, name in ((REPORTS / "guidellm" / "sweep" / "benchmarks.json", "llama-8b-sweep"),
                       (REPORTS / "guidellm" / "constant" / "benchmarks.json", "llama-8b-constant-10"),
                       (REPORTS / "inference-perf" / "shared-prefix-constant", "llama-8b-shared-prefix")):
        if not store.exists(name):
            import_result(path, name, store)
    app = make_app(state)

    def loaded() -> bool:
        screen = pilot.app.screen
        return getattr(screen, "loaded", True) and not getattr(screen, "pending", None)

    def select(run_id: str, table: str) -> None:
        t = pilot.app.screen.query_one(table)  # the runs list (VirtualTable) or a DataTable
        t.move_cursor(row=t.get_row_index(run_id))

    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        select("llama-8b-sweep", "#runs-table")
        await pilot.press("enter")
        await wait_for(loaded, 30, "the results")
        await shoot(pilot, "results")
        await pilot.press("g", "g")  # the plots, then the second: TTFT/ITL percentiles vs load
        await shoot(pilot, "results-plot")
        await pilot.press("escape", "R")
        await wait_for(loaded, 30, "the results list")
        await shoot(pilot, "results-list")
        for run_id in ("llama-8b-sweep", "llama-8b-constant-10", "llama-8b-shared-prefix"):
            select(run_id, "#results-list")
            await pilot.press("space")
        await pilot.press("c")
        await wait_for(loaded, 30, "the comparison")
        await shoot(pilot, "results-compare")
        await pilot.press("g")
        await shoot(pilot, "results-compare-curves")
        await pilot.press("escape", "escape")
        await pilot.pause()


FLOWS = {"main": main_flow, "recovery": recovery_flow, "sweep": sweep_flow, "tekton": tekton_flow,
         "results": results_flow}


def main(argv: list[str] | None = None) -> int:
    global SIZE, SWEEP_SIZE  # --size sets the size of every flow's shots
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots", help="output directory")
    parser.add_argument("--only", choices=sorted(FLOWS), action="append",
                        help="regenerate only this flow's screenshots (repeatable; default: every flow)")
    parser.add_argument("--size", metavar="WxH", help=f"terminal size of every shot (default {SIZE[0]}x{SIZE[1]}; "
                        f"the sweep view {SWEEP_SIZE_DEFAULT[0]}x{SWEEP_SIZE_DEFAULT[1]})")
    args = parser.parse_args(argv)
    if args.size:
        width, _, height = args.size.partition("x")
        SIZE = SWEEP_SIZE = (int(width), int(height))
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.pop("NO_COLOR", None)
    shoot = Shooter(args.out)
    with tempfile.TemporaryDirectory(prefix="sweepdeck-shots-") as tmp:
        os.environ["SWEEPDECK_STATE_DIR"] = tmp
        state = Path(tmp)
        for name, flow in FLOWS.items():
            if not args.only or name in args.only:
                asyncio.run(flow(shoot, state))
    from backends.cleanup import REGISTRY

    if REGISTRY.live():  # never leave a simulator behind, whatever happened above
        REGISTRY.run_sync(10)
    print(f"{len(shoot.names)} screenshots in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
