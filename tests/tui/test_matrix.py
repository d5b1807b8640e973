"""Pilot tests of the Tekton matrix sweep screen on the fake Kubernetes API server (fake-API tests).

The real app, the real TektonBackend and RunController, real HTTP to the
tests' fake API server with its Tekton controller advancing the TaskRuns.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
import yaml
from textual.widgets import DataTable, Input, Static

from tests.support.fakekube import fake_kube  # noqa: F401 - a pytest fixture, found by its name
from tests.support.fakekube.tekton_controller import TektonController

pytestmark = pytest.mark.fakeapi

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "tekton"
NS = "mert"
SIZE = (100, 32)


def text_of(widget: Static) -> str:
    return str(widget.render())


async def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def tekton_app(fake, tmp_path, registry):
    """The real app with the tekton backend of a ``lab`` profile on the fake API server."""
    from backends.tekton import TektonBackend
    from config.settings import load_settings
    from tests.tui.app_fakes import FIXED_TODAY
    from tui.app import SweepdeckApp

    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"profiles": {"lab": {
        "backend": "tekton", "namespace": NS, "kubeconfig": str(fake.kubeconfig), "expected_minutes": {},
    }}}))
    settings = load_settings(cfg)
    backend = TektonBackend(settings, settings.profile("lab", "tekton"), registry=registry)
    return SweepdeckApp(settings, {"tekton": backend}, registry=registry, today=FIXED_TODAY, install_signals=False)


@pytest.fixture
def matrix_file(tmp_path) -> Path:
    """The Tekton PoC's factor × level PipelineRun, as a user's own file (never changed)."""
    path = tmp_path / "user" / "pipelinerun-matrix.yaml"
    path.parent.mkdir()
    path.write_bytes((FIX / "tekton-poc-pipelinerun-matrix.yaml").read_bytes())
    return path


async def open_matrix(pilot, path: Path | str):
    from tui.screens.matrix import MatrixScreen

    await pilot.press("m")
    await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, MatrixScreen)
    screen.query_one("#matrix-path", Input).value = str(path)
    await pilot.press("enter")
    await pilot.pause()
    return screen


async def test_matrix_launch_unroll_plus_n_creates_the_transformed_run_and_reaches_done_total(
    fake_kube, tmp_path, matrix_file  # noqa: F811 - the fake_kube fixture imported above
):
    from backends.cleanup import CleanupRegistry
    from tui.controller import RunController
    from tui.screens.monitor import RunMonitorScreen
    from tui.screens.runs import RunsScreen
    from tui.widgets.metrics import MetricsPanel

    fake_kube.ensure_namespace(NS)
    before = (matrix_file.read_bytes(), matrix_file.stat().st_mtime_ns)
    registry = CleanupRegistry()
    app = tekton_app(fake_kube, tmp_path, registry)
    ctl = TektonController(fake_kube, step=0.03).start()
    ctl.durations["run-experiment-"] = 0.3  # long enough for the step logs to be followed
    try:
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_matrix(pilot, matrix_file)
            summary = text_of(screen.query_one("#matrix-summary", Static))
            assert "run-experiment: 4 × 3 × 3 = 36 combinations" in summary and "Qwen/Qwen3-0.6B" in summary
            table = screen.query_one("#matrix-params", DataTable)
            assert [str(c) for c in table.get_row("gaiePluginConfig")][1:3] == ["gaiePluginConfig", "4"]
            assert [str(c) for c in table.get_row("output_len")][1:3] == ["output_len", "3"]
            assert "1 task, a matrix of 36" in text_of(screen.query_one("#matrix-preview", Static))
            # the table has the focus after loading: space marks the highlighted parameter
            await pilot.press("space")
            await pilot.pause()
            assert str(table.get_row("gaiePluginConfig")[0]) == "[x]" and screen.mode == "unroll"
            assert "4 tasks, each a matrix of 9, one after another" in text_of(
                screen.query_one("#matrix-preview", Static)
            )
            # tab to the choice, down to "unroll + N", then N = 2
            await pilot.press("tab")
            await pilot.pause()
            await pilot.press("down", "down", "enter")  # the radio set cursor starts on the selected mode (unroll)
            await pilot.pause()
            assert screen.mode == "unroll_limit", screen.mode
            screen.query_one("#matrix-limit", Input).value = "2"
            await pilot.pause()
            preview = text_of(screen.query_one("#matrix-preview", Static))
            assert "4 tasks, each a matrix of 9, 2 at once, barrier (36 TaskRuns)" in preview
            await pilot.press("f8")
            await _wait(lambda: isinstance(app.screen, RunMonitorScreen), 20, "the run monitor")
            monitor = app.screen
            ctrl = monitor.controller
            assert isinstance(ctrl, RunController) and app.controllers == [ctrl]
            await _wait(lambda: ctrl.state == "succeeded", 60, "the matrix run to succeed")
            await pilot.pause(0.2)
            assert ctrl.progress is not None and (ctrl.progress.done, ctrl.progress.total) == (36, 36)
            panel = monitor.query_one(MetricsPanel)
            label = panel.query_one("#metrics-progress-label")
            assert "36/36 done" in str(label.render())
            assert panel.children[0] is label  # no load-generator metrics: progress comes first
            # the header has the matrix's facts, not engine fields that do not apply
            header = text_of(monitor.query_one("#monitor-header", Static))
            assert "4 tasks · 36 combinations · PipelineRun experiment-matrix-run in mert" in header, header
            assert "TP=" not in header and "max_model_len" not in header
            # the running TaskRuns' step logs reached the log pane, named by task and combination
            sources = {line.source for line in ctrl.logs}
            assert sources and all(re.fullmatch(r"task/run-experiment-\d-\d question_len=\d+,output_len=\d+", s)
                                   for s in sources), sources
            assert monitor.logview.line_count == len(ctrl.logs) > 0
            # the PipelineRun on the cluster is the transformed one
            pr = fake_kube.get("tekton.dev/v1", "PipelineRun", "experiment-matrix-run", NS)
            tasks = pr["spec"]["pipelineSpec"]["tasks"]
            assert [t["name"] for t in tasks] == ["run-experiment-0", "run-experiment-1", "run-experiment-2",
                                                  "run-experiment-3"]
            assert [p["name"] for p in tasks[0]["matrix"]["params"]] == ["question_len", "output_len"]
            assert {"name": "gaiePluginConfig", "value": "inf-sche-none.yaml"} in tasks[0]["params"]
            assert "runAfter" not in tasks[0] and "runAfter" not in tasks[1]
            assert tasks[2]["runAfter"] == [tasks[0]["name"], tasks[1]["name"]]  # barrier of 2
            # the run store has it like any other run: spec, rendered PipelineRun, events
            run_dir = ctrl.run.store
            assert run_dir.id == "experiment-matrix-run"
            assert yaml.safe_load((run_dir.path / "rendered" / "pipelinerun.yaml").read_text())["spec"]["pipelineSpec"][
                "tasks"
            ][2]["runAfter"]
            assert run_dir.meta()["state"] == "succeeded"
            await pilot.press("escape")
            await pilot.pause()
            assert isinstance(app.screen, RunsScreen)  # the matrix screen was replaced by the monitor
            assert not registry.live()  # the PipelineRun finished: nothing left to cancel
            await pilot.press("q")
            await _wait(lambda: app.return_code is not None, 10, "the app to exit")
    finally:
        ctl.stop()
    assert (matrix_file.read_bytes(), matrix_file.stat().st_mtime_ns) == before  # the user's file is only read


async def test_matrix_file_errors_are_inline_and_nothing_is_created(fake_kube, tmp_path):  # noqa: F811 - the fake_kube fixture imported above
    from backends.cleanup import CleanupRegistry

    app = tekton_app(fake_kube, tmp_path, CleanupRegistry())
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("apiVersion: tekton.dev/v1\nkind: PipelineRun\nspec: [unclosed\n")
    no_matrix = tmp_path / "plain.yaml"
    no_matrix.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "tekton.dev/v1",
                "kind": "PipelineRun",
                "metadata": {"name": "p"},
                "spec": {"pipelineSpec": {"tasks": [{"name": "a", "taskRef": {"name": "t"}}]}},
            }
        )
    )
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_matrix(pilot, tmp_path / "missing.yaml")
        error = screen.query_one("#matrix-error", Static)
        assert "No such file" in text_of(error) and "missing.yaml" in text_of(error)
        assert not screen.query_one("#matrix-loaded").display
        for path, expected in ((bad_yaml, "not valid YAML at line"), (no_matrix, "has no matrix task")):
            screen.query_one("#matrix-path", Input).value = str(path)
            await pilot.press("enter")
            await pilot.pause()
            assert expected in text_of(error), text_of(error)
            assert screen.matrix is None and not screen.query_one("#matrix-loaded").display
        await pilot.press("f8")  # nothing loaded: launch only repeats the error
        await pilot.pause()
        assert app.screen is screen and app.controllers == []
    assert fake_kube.list("tekton.dev/v1", "PipelineRun", None) == []


async def test_matrix_preflight_failure_blocks_launch(fake_kube, tmp_path, matrix_file):  # noqa: F811 - the fake_kube fixture imported above
    """No namespace on the cluster: the launch is refused inline, nothing is created."""
    from backends.cleanup import CleanupRegistry

    app = tekton_app(fake_kube, tmp_path, CleanupRegistry())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_matrix(pilot, matrix_file)
        screen.query_one("#mode-limit").value = True
        screen.query_one("#matrix-sliding").value = True
        await pilot.pause()
        assert "36 tasks, 4 at once, sliding window" in text_of(screen.query_one("#matrix-preview", Static))
        screen.query_one("#matrix-limit", Input).value = "0"
        await pilot.pause()
        assert "N must be at least 1" in text_of(screen.query_one("#matrix-preview", Static))
        screen.query_one("#matrix-limit", Input).value = "4"
        await pilot.press("f8")
        await _wait(lambda: screen.checks is not None, 20, "the cluster checks")
        await pilot.pause()
        checks = text_of(screen.query_one("#matrix-checks", Static))
        assert "BLOCKED" in checks and f"Namespace {NS}: does not exist" in checks
        assert app.screen is screen and app.controllers == []
    assert fake_kube.list("tekton.dev/v1", "PipelineRun", None) == []


async def test_matrix_screen_from_the_command_palette(fake_kube, tmp_path):  # noqa: F811 - the fake_kube fixture imported above
    from backends.cleanup import CleanupRegistry
    from tui.screens.matrix import MatrixScreen

    app = tekton_app(fake_kube, tmp_path, CleanupRegistry())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"matrix sweep")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, MatrixScreen)
        assert app.screen.query_one("#matrix-namespace", Input).value == NS  # from the lab profile


async def launch_unroll_plus_2(pilot, matrix_file):
    """Load the file, unroll gaiePluginConfig, at most 2 at once, F8: the run monitor."""
    from tui.screens.monitor import RunMonitorScreen

    screen = await open_matrix(pilot, matrix_file)
    await pilot.press("space", "tab")
    await pilot.pause()
    await pilot.press("down", "down", "enter")
    await pilot.pause()
    screen.query_one("#matrix-limit", Input).value = "2"
    await pilot.pause()
    await pilot.press("f8")
    await _wait(lambda: isinstance(pilot.app.screen, RunMonitorScreen), 20, "the run monitor")
    return pilot.app.screen


async def test_matrix_run_detached_then_attached_keeps_done_total_and_header(fake_kube, tmp_path, matrix_file):  # noqa: F811 - the fake_kube fixture imported above
    """Detach a running matrix sweep, attach in a new session: done/total is still n/36 (fake-API test)."""
    from backends.cleanup import CleanupRegistry
    from backends.store import RunStore
    from tui.screens.dialogs import QuitDialog
    from tui.widgets.metrics import MetricsPanel

    fake_kube.ensure_namespace(NS)
    ctl = TektonController(fake_kube, step=0.03).start()
    ctl.hang["run-experiment-1"] = True  # the first batch never ends
    try:
        app = tekton_app(fake_kube, tmp_path, CleanupRegistry())
        async with app.run_test(size=SIZE) as pilot:
            monitor = await launch_unroll_plus_2(pilot, matrix_file)
            ctrl = monitor.controller
            await _wait(lambda: ctrl.progress is not None and ctrl.progress.completed == 9, 30,
                        "the first task's 9 TaskRuns")
            assert ctrl.progress.total == 36
            await pilot.press("q")
            await pilot.pause()
            assert isinstance(app.screen, QuitDialog)
            await pilot.press("d")
            await _wait(lambda: app.return_code is not None, 20, "the app to exit")
        assert RunStore().get("experiment-matrix-run").state == "detached"
        pr = fake_kube.get("tekton.dev/v1", "PipelineRun", "experiment-matrix-run", NS)
        assert "status" not in pr["spec"]  # detach does not cancel

        app2 = tekton_app(fake_kube, tmp_path, CleanupRegistry())
        async with app2.run_test(size=SIZE) as pilot:
            await pilot.pause()
            await pilot.press("a")
            await pilot.pause()
            ctrl2 = app2.controllers[0]
            await _wait(lambda: ctrl2.live and ctrl2.progress is not None and ctrl2.progress.running == 9, 30,
                        "the attach")
            assert (ctrl2.progress.done, ctrl2.progress.total) == (9, 36)
            monitor2 = app2.screen
            await pilot.pause(0.2)
            assert "9/36 done" in str(monitor2.query_one(MetricsPanel).query_one("#metrics-progress-label").render())
            header = text_of(monitor2.query_one("#monitor-header", Static))
            assert "4 tasks · 36 combinations · PipelineRun experiment-matrix-run in mert" in header, header
            await pilot.press("q")
            await pilot.pause()
            assert isinstance(app2.screen, QuitDialog)
            await pilot.press("enter")  # clean up: cancels the PipelineRun
            await _wait(lambda: app2.return_code is not None, 20, "the app to exit")
        pr = fake_kube.get("tekton.dev/v1", "PipelineRun", "experiment-matrix-run", NS)
        assert pr["spec"].get("status") in ("CancelledRunFinally", "Cancelled")
    finally:
        ctl.stop()


async def test_metrics_panel_puts_progress_first_only_without_metrics():
    """Progress but no Metrics (a matrix sweep): progress on top; Metrics arrive: the usual order again."""
    from textual.app import App

    from backends.events import Metrics, Progress
    from tui.widgets.metrics import MetricsPanel

    class Host(App):
        def compose(self):
            yield MetricsPanel(id="metrics-panel")

    async with Host().run_test(size=(60, 12)) as pilot:
        panel = pilot.app.query_one(MetricsPanel)

        def order():
            return [w.id for w in panel.children]

        usual = ["metrics-numbers", "metrics-spark-label", "metrics-spark", "metrics-progress-label",
                 "metrics-progress"]
        assert order() == usual
        panel.update_progress(Progress(36, pending=27, running=9))
        await pilot.pause()
        assert order()[:2] == ["metrics-progress-label", "metrics-progress"]
        assert panel.query_one("#metrics-progress-label").region.y == 0
        assert not panel.query_one("#metrics-numbers").display  # no "no measurements yet" under the progress
        panel.update_metrics([Metrics(completed=3, output_tokens_per_s=10.0)])
        await pilot.pause()
        assert order() == usual and panel.query_one("#metrics-numbers").display
        panel.reset()
        await pilot.pause()
        assert order() == usual
