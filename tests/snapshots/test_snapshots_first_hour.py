"""SVG snapshots of the screens and dialogs issue 18 added or changed, at 80×24 and 160×48.

The spelling dialog (a misspelt quick command), the runs list with a fix run
under its parent, the clean-up question of a lost run, the pre-flight step with
a long detail and a fix that names a setting, the remedy question, the stop
question of the run monitor, and the recovery dialog of a run that was
already relaunched (and its "launch this fix again?" question).
Update with ``pytest tests/snapshots/test_snapshots_first_hour.py --snapshot-update``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backends.base import Check
from backends.events import Alert, Fix
from tests.snapshots import SIZES
from tests.snapshots.test_snapshots_app import settle
from tests.tui.app_fakes import RemedyBackend, make_app, seed_family


def select(pilot, run_id: str) -> None:
    from tui.widgets.virtual_table import VirtualTable

    table = pilot.app.screen.query_one("#runs-table", VirtualTable)
    table.move_cursor(row=table.get_row_index(run_id))


async def spelling(pilot):
    await pilot.press("colon", *"qwen-1.5b chatbt max_model_len=2048", "enter")
    await settle(pilot)


async def spelling_not_askable(pilot):
    await pilot.press("colon", *"qwen-1.5b frobnicate chatbt tp two", "enter")
    await settle(pilot)


async def runs_family(pilot):
    await settle(pilot)
    select(pilot, "nov22-llama-2-7b-hf-summarization-fix")
    await settle(pilot)


async def clean_lost(pilot):
    await settle(pilot)
    select(pilot, "nov20-llama-3-8b-instruct-chatbot")
    await pilot.press("x")
    await settle(pilot)


async def preflight_long_detail(pilot):
    await pilot.press("n")
    await pilot.pause()
    await pilot.press(*"qwen-1.5b", "enter")
    await pilot.pause()
    await pilot.press("enter", "enter", "enter")
    from tests.tui.monitor_support import wait_for
    from tui.screens.wizard.steps import PreflightStep

    await wait_for(pilot, lambda: pilot.app.screen.query_one(PreflightStep).checks is not None)
    await settle(pilot)


async def preflight_remedy_question(pilot):
    await preflight_long_detail(pilot)
    await pilot.press("f")
    await settle(pilot)


FLOWS = {"spelling": spelling, "spelling_not_askable": spelling_not_askable, "runs_family": runs_family,
         "clean_lost": clean_lost, "preflight_long_detail": preflight_long_detail,
         "preflight_remedy_question": preflight_remedy_question}

LONG = Check("Tensor parallel", "warn",
             "TP=2 on the local backend: the simulator only scales its timing model, "
             "so its numbers are not a 2-GPU server's",
             "Use --tp 1 unless this machine has that many GPUs.")


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("flow", list(FLOWS))
def test_first_hour_screens(snap_compare, size, flow):
    root = Path(os.environ["SWEEPDECK_STATE_DIR"])
    if flow in ("runs_family", "clean_lost"):
        seed_family(root)
    if flow == "preflight_remedy_question":
        app = make_app(backend=RemedyBackend())
    else:
        app = make_app(checks=[Check("Simulator available", "pass", "python -m backends.sim"), LONG],
                       with_profiles=flow.startswith("spelling"))
    assert snap_compare(app, terminal_size=size, run_before=FLOWS[flow])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("answer", ["dialog", "again"])
def test_recovery_of_a_run_already_relaunched(snap_compare, size, answer):
    """The recovery dialog names the runs relaunched from this one; the same fix again asks first."""
    from backends.lineage import Relaunch
    from tests.tui.monitor_support import make_spec
    from tui.screens.recovery import RecoveryDialog

    fixes = [Fix("Increase TP", {"engine.tp": 2}, "TP=1 -> TP=2 (doubles GPU memory)"),
             Fix("Reduce context", {"engine.max_model_len": 2048}, "max_model_len=4096 -> 2048"),
             Fix("Reduce batch", {"engine.max_num_seqs": 128}, "max_num_seqs=256 -> 128")]
    alert = Alert("error", "CUDA out of memory: The vLLM engine ran out of GPU memory. Spread the model over more "
                  "GPUs (higher TP), or lower max_model_len or max_num_seqs so the KV cache fits.",
                  diagnosis="cuda-oom", fixes=fixes,
                  evidence="torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB.")
    done = [Relaunch("nov23-qwen2-5-math-1-5b-chatbot-fix", "nov23-qwen2-5-math-1-5b-chatbot", "Reduce context",
                     {"engine.max_model_len": 2048}, "failed")]
    app = make_app()

    async def run_before(pilot):
        await pilot.pause()
        pilot.app.push_screen(RecoveryDialog(alert, make_spec(), relaunched=done))
        await settle(pilot)
        if answer == "again":
            await pilot.press("2")
            await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_monitor_stop_question(snap_compare, size):
    from tests.tui.monitor_support import Gate, ScriptedBackend, make_spec, running_script, wait_for
    from tests.tui.monitor_support import make_app as monitor_app
    from tui.screens.monitor import RunMonitorScreen

    app = monitor_app(ScriptedBackend(running_script(Gate())))

    async def run_before(pilot):
        app.launch_spec(make_spec())
        await wait_for(pilot, lambda: isinstance(app.screen, RunMonitorScreen) and app.screen.batches > 0
                       and app.screen.query_one("#metrics-panel").metrics is not None)
        await pilot.press("x")
        app.clear_notifications()
        await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)
