#!/usr/bin/env python3
"""Regenerate ``screenshots/*.svg``: one per screen and dialog, from the real app.

The app runs headless (``App.run_test``) on the real local backend with the
built-in vLLM simulator, in a private state directory, and is driven with
keys the way a user would: new experiment → model → workload → vLLM review →
summary → pre-flight → launch → run monitor; a ``--fail oom`` run for the
recovery dialog; quit with a live run for the quit dialog. Nothing is left
running afterwards (every run is cleaned up through the quit dialog).

Usage::

    make screenshots            # or: .venv/bin/python scripts/screenshots.py [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZE = (120, 36)


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
        await wait_for(lambda: app.return_code is not None, 30, "cleanup and exit")


async def recovery_flow(shoot: Shooter, state: Path) -> None:
    """A ``--fail oom`` run: the recovery dialog."""
    from tui.screens.recovery import RecoveryDialog

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
        await pilot.press("q")
        await pilot.pause()
        if app.return_code is None:
            await pilot.press("enter")
        await wait_for(lambda: app.return_code is not None, 30, "cleanup and exit")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots", help="output directory")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.pop("NO_COLOR", None)
    shoot = Shooter(args.out)
    with tempfile.TemporaryDirectory(prefix="sweepdeck-shots-") as tmp:
        os.environ["SWEEPDECK_STATE_DIR"] = tmp
        state = Path(tmp)
        asyncio.run(main_flow(shoot, state))
        asyncio.run(recovery_flow(shoot, state))
    from backends.cleanup import REGISTRY

    if REGISTRY.live():  # never leave a simulator behind, whatever happened above
        REGISTRY.run_sync(10)
    print(f"{len(shoot.names)} screenshots in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
