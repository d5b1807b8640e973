"""Pilot tests of the app shell: runs list, quit/cleanup/detach, signals, keys, palette."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, Static

from backends.cleanup import CleanupRegistry
from backends.store import RunStore
from config.errors import SweepdeckError
from tests.support.procstate import gone
from tests.tui.app_fakes import FakeBackend, FakeController, FakeMonitor, make_app, seed_store
from tests.tui.monitor_support import wait_for
from tui import bindings as keys
from tui.screens.dialogs import ConfirmDialog, HelpDialog, QuickCommandDialog, QuitDialog
from tui.screens.runs import RunsScreen
from tui.screens.wizard import WizardScreen
from tui.widgets.virtual_table import VirtualTable

SIZE = (100, 30)


def state_root() -> Path:
    return Path(os.environ["SWEEPDECK_STATE_DIR"])


def text_of(widget: Static) -> str:
    return str(widget.render())


def row_ids(app) -> list[str]:
    table = app.screen.query_one("#runs-table", VirtualTable)
    return [table.coordinate_to_cell_key((i, 0)).row_key.value for i in range(table.row_count)]


def select(app, run_id: str) -> None:
    table = app.screen.query_one("#runs-table", VirtualTable)
    table.move_cursor(row=table.get_row_index(run_id))


async def launch_fake(pilot) -> FakeController:
    """Run the wizard through to a (fake) launch and go back to the runs list."""
    app = pilot.app
    await pilot.press("n")
    await pilot.pause()
    await pilot.press(*"qwen-1.5b", "enter")
    await pilot.pause()
    await pilot.press("enter")  # preset
    await pilot.pause()
    await pilot.press("f8", "f8")
    await pilot.pause()
    await pilot.pause()
    await pilot.press("l")
    await pilot.pause()
    assert isinstance(app.screen, FakeMonitor)
    ctrl = app.screen.controller
    await asyncio.wait_for(ctrl.started.wait(), 5)
    await pilot.press("escape")
    await pilot.pause()
    assert isinstance(app.screen, RunsScreen)
    return ctrl


# -------------------------------------------------------------------- runs


async def test_empty_runs_tells_what_to_press():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        empty = app.screen.query_one("#runs-empty", Static)
        assert empty.display
        text = text_of(empty)
        assert "No runs yet" in text and "n  to start a new experiment" in text and ":" in text


async def test_runs_list_shows_saved_runs_with_state_words():
    seed_store(state_root())
    app = make_app()
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause()
        ids = row_ids(app)
        assert ids[0] == "nov23-qwen2-5-7b-instruct-train"  # newest first
        assert len(ids) == 5
        table = app.screen.query_one("#runs-table", VirtualTable)
        states = {rid: str(table.get_row(rid)[0]) for rid in ids}
        assert states["nov22-llama-2-7b-hf-summarization"] == "✗ failed"
        assert states["nov23-qwen2-5-math-1-5b-chatbot"] == "✓ succeeded"
        assert states["nov21-mistral-7b-codesweep"] == "⊘ cancelled"
        assert states["nov23-qwen2-5-7b-instruct-train"] == "⏸ detached"
        assert states["nov20-llama-3-8b-instruct-chatbot"] == "⚠ lost"
        row = [str(c) for c in table.get_row("nov21-mistral-7b-codesweep")]
        assert (
            row[2:] == ["Mistral-7B-Instruct-v0.3", "codesweep", "local", "Nov 21 10:00", "1m35s"] or row[-1] == "1m35s"
        )


async def test_runs_columns_fit_80_columns():
    """At 80 columns each run takes two lines and keeps its model, workload, backend and start."""
    seed_store(state_root())
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        table = app.screen.query_one("#runs-table", VirtualTable)
        assert [str(c.label) for c in table.ordered_columns] == ["State", "Run", "Duration"]
        assert sum(c.get_render_width(table) for c in table.ordered_columns) <= 80 - 2  # no sideways scrolling
        run = str(table.get_row("nov20-llama-3-8b-instruct-chatbot")[1])
        assert run.splitlines()[0] == "nov20-llama-3-8b-instruct-chatbot"
        from tests.tui.app_fakes import FIXED_NOW
        from tui.screens.runs import format_started

        started = format_started(FIXED_NOW - 3 * 86400)  # the seeded run's start, in this machine's zone
        assert run.splitlines()[1].split(" · ") == ["Meta-Llama-3-8B-Instruct", "chatbot", "slurm", started]
        assert str(table.get_row("nov21-mistral-7b-codesweep")[2]) == "1m35s"
        assert "DETACHED" in text_of(app.screen.query_one("#runs-detail", Static))
        await pilot.resize_terminal(160, 48)
        await pilot.pause()
        assert [str(c.label) for c in table.ordered_columns] == list(app.screen.COLUMNS)


async def test_filter_runs():
    seed_store(state_root())
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("slash")
        await pilot.press(*"codesweep")
        await pilot.pause()
        assert row_ids(app) == ["nov21-mistral-7b-codesweep"]
        await pilot.press("escape")
        await pilot.pause()
        assert len(row_ids(app)) == 5


async def test_a_run_whose_supervisor_is_gone_is_listed_lost_never_running():
    from tests.tui.app_fakes import FIXED_NOW, write_record

    path = write_record(state_root(), "nov23-orphan", state="running", started=FIXED_NOW - 60)
    meta = json.loads((path / "meta.json").read_text())
    meta["supervisor"] = {"pid": 2 ** 22 + 7, "start": "1"}  # a process that does not exist
    (path / "meta.json").write_text(json.dumps(meta))
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        table = app.screen.query_one("#runs-table", VirtualTable)
        assert str(table.get_row("nov23-orphan")[0]) == "⚠ lost"
    assert json.loads((path / "meta.json").read_text())["state"] == "lost"


async def test_clean_key_asks_then_removes_what_a_lost_run_left(monkeypatch):
    import backends.supervisor.reconcile as reconcile

    seed_store(state_root())
    cleaned = []

    async def fake_clean(record):  # the SLURM job is on a cluster this test does not have
        cleaned.append(record.id)
        return ["cancelled SLURM job 5382685 on alvis2"]

    monkeypatch.setattr(reconcile, "clean", fake_clean)
    app = make_app()
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause()
        select(app, "nov20-llama-3-8b-instruct-chatbot")
        await pilot.pause()
        detail = text_of(app.screen.query_one("#runs-detail", Static))
        assert "may still run: SLURM job 5382685 on alvis2" in detail and "x: clean up" in detail
        await pilot.press("x")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("y")
        await wait_for(pilot, lambda: cleaned)
    assert cleaned == ["nov20-llama-3-8b-instruct-chatbot"]


async def test_delete_finished_run_after_confirmation():
    seed_store(state_root())
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        select(app, "nov22-llama-2-7b-hf-summarization")
        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("n")  # keep
        await pilot.pause()
        assert "nov22-llama-2-7b-hf-summarization" in row_ids(app)
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert "nov22-llama-2-7b-hf-summarization" not in row_ids(app)
        assert not (state_root() / "runs" / "nov22-llama-2-7b-hf-summarization").exists()


async def test_delete_refused_for_detached_run():
    seed_store(state_root())
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        select(app, "nov23-qwen2-5-7b-instruct-train")
        await pilot.press("d")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmDialog)
        assert any("only finished runs can be deleted" in n.message for n in app._notifications)
        assert (state_root() / "runs" / "nov23-qwen2-5-7b-instruct-train").exists()


async def test_attach_detached_run_opens_monitor():
    seed_store(state_root())
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        select(app, "nov23-qwen2-5-math-1-5b-chatbot")
        await pilot.press("a")  # finished: refused
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen)
        select(app, "nov23-qwen2-5-7b-instruct-train")
        await pilot.press("a")
        await pilot.pause()
        assert isinstance(app.screen, FakeMonitor)
        ctrl = app.screen.controller
        await asyncio.wait_for(ctrl.started.wait(), 5)
        assert ctrl.attached and ctrl.record.id == "nov23-qwen2-5-7b-instruct-train"
        assert app.controllers == [ctrl]


async def test_enter_on_finished_run_opens_replay_without_starting():
    seed_store(state_root())
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        select(app, "nov21-mistral-7b-codesweep")
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, FakeMonitor)
        ctrl = app.screen.controller
        assert ctrl.record.id == "nov21-mistral-7b-codesweep" and ctrl.spec is None
        await pilot.pause()
        assert ctrl.replayed and not ctrl.live
        assert not ctrl.started.is_set() and app.controllers == []


async def test_launched_run_appears_live_in_runs_list():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        ctrl = await launch_fake(pilot)
        await pilot.pause()
        ids = row_ids(app)
        assert ids == [ctrl.run.id]
        assert str(app.screen.query_one("#runs-table", VirtualTable).get_row(ctrl.run.id)[0]) == "● running"
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, FakeMonitor) and app.screen.controller is ctrl


# -------------------------------------------------------------------- quit


async def test_quit_with_nothing_live_exits_at_once():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
        await pilot.pause()
        assert not isinstance(app.screen, QuitDialog)
    assert app.return_code == 0


async def test_quit_with_live_run_asks_and_cleanup_is_the_default():
    registry = CleanupRegistry()
    app = make_app(registry=registry)
    async with app.run_test(size=SIZE) as pilot:
        ctrl = await launch_fake(pilot)
        assert ctrl.live
        await pilot.press("q")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, QuitDialog)
        assert any(ctrl.run.id in item for item in dialog.live)
        await pilot.press("escape")  # cancel
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen) and ctrl.live
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert isinstance(app.screen, QuitDialog)
        assert app.screen.focused.id == "quit-cleanup"
        await pilot.press("enter")
        await _wait(lambda: app.return_code is not None, 10, "the app to exit")
    assert app.return_code == 0
    assert ctrl.cleaned and not ctrl.live
    assert not registry.live()


async def test_quit_detach_keeps_the_run():
    registry = CleanupRegistry()
    app = make_app(registry=registry)
    async with app.run_test(size=SIZE) as pilot:
        ctrl = await launch_fake(pilot)
        await pilot.press("q")
        await pilot.pause()
        await pilot.press("d")
        await _wait(lambda: app.return_code is not None, 10, "the app to exit")
    assert ctrl.detached and not ctrl.cleaned
    assert any(f"sweepdeck attach {ctrl.run.id}" in line for line in app.farewell), app.farewell


async def test_cleanup_is_bounded_when_a_controller_is_stuck():
    registry = CleanupRegistry()

    def stuck_factory(*args, **kw):
        return FakeController(*args, stuck=True, **kw)

    app = make_app(registry=registry, controller_factory=stuck_factory, cleanup_timeout=1.5)
    client_side = []  # something this process opened itself (an SSH connection for pre-flight)
    registry.register("ssh connection", lambda: client_side.append("closed"))
    async with app.run_test(size=SIZE) as pilot:
        ctrl = await launch_fake(pilot)
        await pilot.press("q")
        await pilot.pause()
        start = time.monotonic()
        await pilot.press("c")
        await _wait(lambda: app.return_code is not None, 10, "the app to exit")
        elapsed = time.monotonic() - start
    assert app.return_code == 0
    assert elapsed < 6.0  # 1.5 s budget + scheduling slack on a loaded machine
    # The controller never finished; this process's own registry still ran.
    assert not ctrl.cleaned and client_side == ["closed"] and not registry.live()


async def test_sigterm_leaves_at_once():
    """SIGTERM (or a lost terminal): the app leaves without asking; its runs' supervisors stop them."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await launch_fake(pilot)
        app._terminal_lost(128 + signal.SIGTERM)
        await _wait(lambda: app.return_code is not None, 10, "the app to exit")
    assert app.return_code == 128 + signal.SIGTERM


async def test_terminal_guard_installed_for_sigterm_and_sighup():
    app = make_app()
    app.install_signals = True
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            for sig in (signal.SIGTERM, signal.SIGHUP):
                assert signal.getsignal(sig) == app._guard._on_signal, sig
        assert {sig: signal.getsignal(sig) for sig in before} == before  # restored on exit
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


# ---------------------------------------------------------- keys and palette


async def test_keys_are_remappable_by_id():
    app = make_app(keys={"new_experiment": "ctrl+n"})
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen)
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert isinstance(app.screen, WizardScreen)


async def test_palette_and_quit_keys_are_remappable():
    from textual.command import CommandPalette

    app = make_app(keys={"palette": "ctrl+k", "quit": "ctrl+x"})
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+k")
        await pilot.pause()
        assert isinstance(app.screen, CommandPalette)
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("q")  # no longer quits
        await pilot.pause()
        assert app.return_code is None
        await pilot.press("ctrl+x")
        await _wait(lambda: app.return_code is not None, 10, "the app to exit")
    assert app.return_code == 0


def test_unknown_binding_id_is_a_clear_error():
    with pytest.raises(SweepdeckError) as err:
        make_app(keys={"new_experimnt": "ctrl+n"})
    assert "keys.new_experimnt" in err.value.message
    assert "new_experiment" in err.value.hint


async def test_help_lists_every_binding_with_its_id():
    app = make_app(keys={"delete_run": "ctrl+d"})
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, HelpDialog)
        shown = text_of(dialog.query_one("#help-keys", Static))
        for spec in keys.KEYS:
            assert spec.id in shown
        assert "ctrl+d" in shown
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen)


async def test_every_shown_binding_has_an_id():
    for spec in keys.KEYS:
        binding = spec.binding()
        assert binding.id == spec.id and binding.description


async def test_command_palette_runs_app_actions():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"quick command")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, QuickCommandDialog)


async def test_palette_lists_screen_actions():
    from tui.palette import SweepdeckCommands

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        provider = SweepdeckCommands(app.screen)
        names = [name for name, *_ in provider.commands()]
        for expected in ("Quit", "Help: list every key", "Quick command", "New experiment", "Delete run record",
                         "Attach to run", "Filter runs", "Open run"):
            assert expected in names, expected
        assert "Cursor up" not in names


# ---------------------------------------------------------------- backends


async def test_backends_are_injected_as_factories():
    calls = []

    def factory(name, profile):
        calls.append((name, profile))
        return FakeBackend(name)

    app = make_app()
    app._backends_arg = factory
    async with app.run_test(size=SIZE):
        first = app.backend_for("local")
        assert app.backend_for("local") is first
        assert calls == [("local", None)]
    app2 = make_app()
    async with app2.run_test(size=SIZE):
        with pytest.raises(SweepdeckError) as err:
            app2.backend_for("slurm", "alvis")
        assert "not available" in err.value.message


def test_run_app_reports_bad_config(tmp_path):
    from argparse import Namespace

    from tui.app import run_app

    cfg = tmp_path / "config.yaml"
    cfg.write_text("keys: {no_such_binding: x}\n")
    with pytest.raises(SweepdeckError):
        run_app(Namespace(config=str(cfg), catalog_dir=None))


# ------------------------------------------- real local backend + simulator



async def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def local_app(registry: CleanupRegistry, sim_args: list[str] | None = None, **local_options):
    """The real app on the real local backend (simulator on a free port)."""
    from backends.local import LocalBackend, free_port
    from config.profiles import fields_for
    from config.schema import validate
    from config.settings import Profile, Settings
    from tests.tui.app_fakes import FIXED_TODAY, shared_catalogs
    from tui.app import SweepdeckApp

    options = {"port": free_port(), "ready_timeout": 60.0, **local_options}
    profile = Profile("local", "local", validate(fields_for("local"), options, "test", "local"))
    settings = Settings(local=profile)
    settings._catalogs = shared_catalogs()
    backend = LocalBackend(settings, profile, sim_args=sim_args, registry=registry)
    return SweepdeckApp(settings, {"local": backend}, registry=registry, today=FIXED_TODAY, install_signals=False)


async def wizard_to_launch(pilot, requests: str = "4", *, model: str = "qwen-1.5b", choice: str | None = None,
                           preset: str | None = None, edit: tuple[str, str] | None = None) -> None:
    """Model → workload → vLLM review → summary → pre-flight → launch, asserting each step on the way.

    Args:
        requests: max_requests of the short custom workload (when no ``preset``).
        model: What to type in the model filter.
        choice: ``model`` is an ambiguous alias: the option label to pick in the disambiguation dialog.
        preset: Take this workload preset instead of the custom form.
        edit: ``(review row key, value)`` to change on the review step; the change must show
            as CHANGED, block Next until confirmed, and reach the summary.
    """
    from textual.widgets import Input, Select

    from tui.screens.dialogs import DisambiguationDialog
    from tui.screens.wizard.steps import PreflightStep

    app = pilot.app
    await pilot.press("n")
    await pilot.pause()
    wizard = app.screen
    assert isinstance(wizard, WizardScreen)
    await pilot.press(*model, "enter")
    await pilot.pause()
    if choice is not None:
        dialog = app.screen
        assert isinstance(dialog, DisambiguationDialog), f"{model} should be ambiguous"
        options = dialog.query_one("#disambiguation-options")
        labels = [str(o.prompt) for o in options.options]
        index = next(i for i, label in enumerate(labels) if choice in label)
        await pilot.press(*["down"] * index, "enter")
        await pilot.pause()
        assert app.screen is wizard
    assert wizard.index == 1, "the model step should have moved on to the workload"
    if preset is not None:
        names = list(wizard.state.catalogs.workloads.presets)
        wizard.query_one("#workload-table", DataTable).move_cursor(row=names.index(preset))
        await pilot.press("enter")
        await pilot.pause()
        assert wizard.state.spec.workload.app == preset
    else:
        await pilot.press("c")
        await pilot.pause()
        wizard.query_one("#custom-prompt_tokens", Input).value = "32"
        wizard.query_one("#custom-output_tokens", Input).value = "16"
        wizard.query_one("#custom-max_requests", Input).value = requests
        wizard.query_one("#custom-rate", Input).value = "20"
        wizard.query_one("#custom-rate_type", Select).value = "constant"
        await pilot.pause()
        await pilot.press("f8")  # → review
        await pilot.pause()
    assert wizard.index == 2
    if edit is not None:
        row, value = edit
        table = wizard.query_one("#review-table", DataTable)
        table.move_cursor(row=table.get_row_index(row))
        await pilot.press("e", "ctrl+u", *value, "enter")
        await pilot.pause()
        cells = [str(c) for c in table.get_row(row)]
        assert cells[1] == value and cells[2] == "CHANGED", cells  # highlighted as a change
        assert "NOT CONFIRMED" in text_of(wizard.query_one("#review-confirm", Static))
        await pilot.press("f8")  # refused until confirmed
        await pilot.pause()
        assert wizard.index == 2 and "CONFIRM FIRST" in text_of(wizard.query_one("#wizard-status", Static))
        await pilot.press("y")
        await pilot.pause()
        assert "CONFIRMED" in text_of(wizard.query_one("#review-confirm", Static))
    await pilot.press("f8")  # → summary
    await pilot.pause()
    assert wizard.index == 3
    if edit is not None:
        summary = text_of(wizard.query_one("#summary-body", Static))
        assert f"{edit[0]}: " in summary and f"-> {edit[1]}" in summary, summary
    await pilot.press("f8")  # → pre-flight
    step = wizard.query_one(PreflightStep)
    await _wait(lambda: step.checks is not None, 20, "pre-flight checks")
    assert not step.failures, [(c.name, c.detail) for c in step.failures]
    await pilot.press("l")
    await pilot.pause()


@pytest.mark.slow
async def test_launch_on_local_simulator_then_quit_cleans_up():
    from tui.controller import RunController
    from tui.screens.monitor import RunMonitorScreen

    registry = CleanupRegistry()
    app = local_app(registry, keep_server=True)
    async with app.run_test(size=(120, 36)) as pilot:
        await wizard_to_launch(pilot)
        monitor = app.screen
        assert isinstance(monitor, RunMonitorScreen)
        ctrl = monitor.controller
        assert isinstance(ctrl, RunController) and app.controllers == [ctrl]
        await _wait(lambda: ctrl.run is not None, 30, "the launch")
        pid = ctrl.run.handle["pid"]
        assert not gone(pid)
        await _wait(lambda: ctrl.endpoint is not None, 60, "the Endpoint event")
        assert ctrl.endpoint.url.startswith("http://127.0.0.1:")
        await _wait(lambda: ctrl.log_total > 0, 10, "log lines")
        await _wait(lambda: ctrl.metrics is not None and ctrl.metrics.completed > 0, 60, "metrics")
        await pilot.pause()
        assert ctrl.live and not gone(pid)  # the server lives in the run's supervisor, not in the app
        await pilot.press("question_mark")  # help lists the monitor's own keys too
        await pilot.pause()
        assert isinstance(app.screen, HelpDialog)
        assert "monitor_search" in text_of(app.screen.query_one("#help-keys", Static))
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, RunMonitorScreen)
        await pilot.press("escape")  # back to the runs list: the run is listed as running
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen)
        assert row_ids(app)[0] == ctrl.id
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, QuitDialog)
        await pilot.press("enter")  # clean up everything
        await _wait(lambda: app.return_code is not None, 20, "the app to exit")
    await _wait(lambda: gone(pid), 5, f"simulator pid {pid} to be gone")
    assert not registry.live()


@pytest.mark.slow
async def test_oom_on_simulator_recovery_relaunch_succeeds():
    from tui.screens.recovery import RecoveryDialog

    registry = CleanupRegistry()
    app = local_app(registry, sim_args=["--fail", "oom"])
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("colon", *"llama2-7b chatbot max_requests=3 rate=20", "enter")
        await pilot.pause()
        wizard = app.screen
        assert isinstance(wizard, WizardScreen) and wizard.index == 2
        await pilot.press("f8", "f8")
        from tui.screens.wizard.steps import PreflightStep

        step = wizard.query_one(PreflightStep)
        await _wait(lambda: step.checks is not None, 20, "pre-flight checks")
        await pilot.press("l")
        await _wait(lambda: isinstance(app.screen, RecoveryDialog), 60, "the recovery dialog")
        first = app.controllers[0]
        first_pid = first.run.handle["pid"]
        await pilot.press("2")  # reduce context: max_model_len 4096 -> 2048
        await _wait(lambda: len(app.controllers) == 2, 30, "the relaunch")
        second = app.controllers[1]
        assert second.spec.engine.max_model_len == 2048 and second.spec.parent == first.id
        await _wait(lambda: second.state == "succeeded", 60, "the fixed run to succeed")
        second_pid = second.run.handle["pid"]
        await pilot.press("q")
        await pilot.pause()
        if isinstance(app.screen, QuitDialog):
            await pilot.press("enter")
        await _wait(lambda: app.return_code is not None, 20, "the app to exit")
    await _wait(lambda: gone(first_pid) and gone(second_pid), 5, "both simulators to be gone")
    assert not registry.live()


@pytest.mark.slow
async def test_detach_then_attach_in_a_new_session_on_simulator():
    registry = CleanupRegistry()
    app = local_app(registry, keep_server=True)
    async with app.run_test(size=(120, 36)) as pilot:
        await wizard_to_launch(pilot)
        ctrl = app.controllers[0]
        await _wait(lambda: ctrl.endpoint is not None, 60, "the Endpoint event")
        pid = ctrl.run.handle["pid"]
        run_id = ctrl.id
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, QuitDialog)
        await pilot.press("d")  # detach: keep running
        await _wait(lambda: app.return_code is not None, 20, "the app to exit")
    try:
        assert not gone(pid), "detach must keep the simulator running"
        assert RunStore().get(run_id).state == "detached"
        # A new session: the run is listed as detached; 'a' attaches to it.
        registry2 = CleanupRegistry()
        app2 = local_app(registry2, keep_server=True)
        async with app2.run_test(size=(120, 36)) as pilot:
            await pilot.pause()
            assert row_ids(app2) == [run_id]
            table = app2.screen.query_one("#runs-table", VirtualTable)
            assert str(table.get_row(run_id)[0]) == "⏸ detached"
            await pilot.press("a")
            await pilot.pause()
            ctrl2 = app2.controllers[0]
            await _wait(lambda: ctrl2.state == "running" and ctrl2.live, 20, "the attach")
            assert ctrl2.endpoint is not None and str(ctrl2.endpoint.url).endswith(str(ctrl.run.handle["port"]))
            await pilot.press("q")
            await pilot.pause()
            assert isinstance(app2.screen, QuitDialog)
            await pilot.press("enter")
            await _wait(lambda: app2.return_code is not None, 20, "the app to exit")
        await _wait(lambda: gone(pid), 10, f"simulator pid {pid} to be gone")
    finally:
        if not gone(pid):
            os.killpg(pid, signal.SIGKILL)


@pytest.mark.slow
async def test_end_to_end_ambiguous_alias_preset_edit_launch_then_quit_cleans_up():
    """The whole flow on the real local backend with the simulator, keyboard only."""
    from tui.screens.monitor import RunMonitorScreen

    registry = CleanupRegistry()
    app = local_app(registry, sim_args=["--speed", "20"], keep_server=True)
    async with app.run_test(size=(120, 36)) as pilot:
        await wizard_to_launch(pilot, model="llama-7b", choice="Llama 2 7B", preset="chatbot",
                               edit=("engine.max_num_seqs", "32"))
        monitor = app.screen
        assert isinstance(monitor, RunMonitorScreen)
        ctrl = monitor.controller
        assert ctrl.spec.model == "meta-llama/Llama-2-7b-hf" and ctrl.spec.workload.app == "chatbot"
        assert ctrl.spec.engine.max_num_seqs == 32
        await _wait(lambda: ctrl.run is not None, 30, "the launch")
        pid = ctrl.run.handle["pid"]
        assert not gone(pid)
        # the simulator was started with the edited, confirmed value
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
        assert b"--max-num-seqs=32" in argv, argv
        await _wait(lambda: ctrl.endpoint is not None, 60, "the Endpoint event")
        assert ctrl.endpoint.url.startswith("http://127.0.0.1:")
        await _wait(lambda: ctrl.log_total > 0, 10, "log lines")
        await _wait(lambda: ctrl.metrics is not None and ctrl.metrics.completed > 0, 60, "metrics")
        first = ctrl.metrics.completed
        await _wait(lambda: ctrl.metrics.completed > first, 30, "the metrics to update")
        await pilot.pause(0.2)
        assert "Llama-2-7b-hf" in text_of(monitor.query_one("#monitor-header", Static))
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, QuitDialog)
        await pilot.press("enter")  # clean up everything (the default)
        await _wait(lambda: app.return_code is not None, 20, "the app to exit")
    await _wait(lambda: gone(pid), 5, f"simulator pid {pid} to be gone")
    assert not registry.live()
