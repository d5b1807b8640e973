"""SVG snapshots of every screen and dialog of the app shell and the wizard.

At 80×24 (works over SSH) and 160×48 (shines). Deterministic: fixed date,
fixed clock, UTC, a fixed run store, fake backend, cursor blink off.
Update with ``pytest tests/snapshots/test_snapshots_app.py --snapshot-update``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input

from backends.base import Check
from tests.snapshots import SIZES
from tests.tui.app_fakes import make_app, seed_store
from tests.tui.monitor_support import wait_for
from tui.widgets.virtual_table import VirtualTable


@pytest.fixture
def seeded():
    seed_store(Path(os.environ["SWEEPDECK_STATE_DIR"]))


def freeze(app) -> None:
    """No blinking cursors in a snapshot."""
    for screen in app.screen_stack:
        for box in screen.query(Input):
            box.cursor_blink = False


async def settle(pilot) -> None:
    await pilot.pause()
    await pilot.pause()
    freeze(pilot.app)
    await pilot.pause()


async def to_model(pilot, text: str = "") -> None:
    await pilot.press("n")
    await pilot.pause()
    if text:
        await pilot.press(*text)


async def to_workload(pilot) -> None:
    await to_model(pilot, "qwen-1.5b")
    await pilot.press("enter")
    await pilot.pause()


async def to_review(pilot) -> None:
    await to_workload(pilot)
    await pilot.press("enter")
    await pilot.pause()


async def to_review_changed(pilot) -> None:
    await to_review(pilot)
    wizard = pilot.app.screen
    table = wizard.query_one("#review-table", DataTable)
    table.move_cursor(row=table.get_row_index("engine.max_model_len"))
    await pilot.press("e", "ctrl+u", *"2048", "enter")
    await pilot.press("plus", *"--enable-prefix-caching", "enter")
    await pilot.pause()


async def to_summary(pilot) -> None:
    await to_review_changed(pilot)
    await pilot.press("y", "f8")


async def to_preflight(pilot) -> None:
    await to_summary(pilot)
    await pilot.press("f8")
    await pilot.pause()
    await pilot.pause()


def flows():  # noqa: C901 - a test flow table / fake server dispatch; over 15 when lint was set up
    async def runs(pilot):
        await settle(pilot)

    async def model(pilot):
        await to_model(pilot)
        await settle(pilot)

    async def model_filtered(pilot):
        await to_model(pilot, "70b")
        await settle(pilot)

    async def disambiguation(pilot):
        await to_model(pilot, "llama-7b")
        await pilot.press("enter")
        await settle(pilot)

    async def workload(pilot):
        await to_workload(pilot)
        await settle(pilot)

    async def workload_custom_error(pilot):
        await to_workload(pilot)
        await pilot.press("c")
        await pilot.pause()
        pilot.app.screen.query_one("#custom-prompt_tokens", Input).value = "abc"
        await settle(pilot)

    async def review(pilot):
        await to_review(pilot)
        await settle(pilot)

    async def review_changed(pilot):
        await to_review_changed(pilot)
        await settle(pilot)

    async def review_editing(pilot):
        await to_review(pilot)
        await pilot.press("plus", *"--gpu-memory-utilization=lots", "enter")
        await settle(pilot)

    async def summary(pilot):
        await to_summary(pilot)
        await settle(pilot)

    async def preflight(pilot):
        await to_preflight(pilot)
        await settle(pilot)

    async def help_dialog(pilot):
        await pilot.press("question_mark")
        await settle(pilot)

    async def quick_command(pilot):
        await pilot.press("colon", *"llama2-7b chatbot tp=zero", "enter")
        await settle(pilot)

    async def quit_dialog(pilot):
        await to_preflight(pilot)
        await pilot.press("o", "l")
        await pilot.pause()
        await pilot.press("escape")  # monitor → runs list, the run stays live
        await pilot.pause()
        await pilot.press("q")
        await settle(pilot)

    async def backend_choice(pilot):
        await to_review(pilot)
        await pilot.press("f8", "b")
        await settle(pilot)

    async def review_tekton(pilot):
        await to_review(pilot)
        await pilot.press("f8", "b")
        await pilot.pause()
        dialog = pilot.app.screen
        options = dialog.query_one("#choice-options")
        options.highlighted = [o.id for o in options.options].index("tekton:mert")
        await pilot.press("enter", "escape")  # → tekton profile, back to the review
        await settle(pilot)

    async def experiment_id_dialog(pilot):
        await to_review(pilot)
        await pilot.press("f8", "i", "ctrl+u", *"Bad_ID", "enter")
        await settle(pilot)

    async def cleanup_screen(pilot):
        from tui.screens.dialogs import CleanupScreen

        await pilot.pause()
        pilot.app.push_screen(CleanupScreen(["run nov23-qwen2-5-math-1-5b-chatbot (running)",
                                             "stop local server (pid 4242)"]))
        await settle(pilot)

    async def confirm_delete(pilot):
        await pilot.pause()
        table = pilot.app.screen.query_one("#runs-table", VirtualTable)
        table.move_cursor(row=table.get_row_index("nov22-llama-2-7b-hf-summarization"))
        await pilot.press("d")
        await settle(pilot)

    async def command_palette(pilot):
        await pilot.pause()
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"run")
        # the palette searches in a worker; wait until its hits are listed
        await wait_for(pilot, lambda: pilot.app.screen.query_one("CommandList").option_count)
        await settle(pilot)

    return {name: fn for name, fn in locals().items() if callable(fn)}


FLOWS = flows()
CHECKS = [
    Check("Simulator available", "pass", "python -m backends.sim"),
    Check("Port 8000 free", "warn", "8000 is used by pid 4242 (uvicorn)", "Use local.port: 8001 or stop pid 4242"),
    Check("Model cached", "fail", "Qwen/Qwen2.5-Math-1.5B is not in the HF cache",
          "huggingface-cli download Qwen/Qwen2.5-Math-1.5B"),
]


@pytest.mark.parametrize("size", SIZES)
def test_runs_empty(snap_compare, size):
    assert snap_compare(make_app(), terminal_size=size, run_before=FLOWS["runs"])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("flow", ["runs", "confirm_delete", "command_palette"])
def test_runs_screens(snap_compare, seeded, size, flow):
    assert snap_compare(make_app(), terminal_size=size, run_before=FLOWS[flow])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(
    "flow",
    [
        "model", "model_filtered", "disambiguation", "workload", "workload_custom_error",
        "review", "review_changed", "review_editing", "summary", "preflight",
        "help_dialog", "quick_command", "quit_dialog", "backend_choice", "review_tekton", "experiment_id_dialog",
        "cleanup_screen",
    ],
)
def test_wizard_and_dialogs(snap_compare, size, flow):
    checks = [c for c in CHECKS if c.status != "fail"] if flow == "quit_dialog" else CHECKS
    app = make_app(checks=checks, with_profiles=flow in ("backend_choice", "review_tekton"))
    assert snap_compare(app, terminal_size=size, run_before=FLOWS[flow])


CAMPAIGN = Path("/work/shared/reference/tektonc-data-collection/blis-campaign-14-qwen3-14b-h100-codegen")


async def review_inference_perf(pilot):
    """The review of the BLIS campaign's inference-perf values: load stages (one edited) and shared_prefix data."""
    await to_model(pilot, "llama2-7b")
    await pilot.press("enter")
    await pilot.pause()
    await pilot.press("enter")  # the values' own profile template (the first row)
    await pilot.pause()
    table = pilot.app.screen.query_one("#review-table", DataTable)
    table.move_cursor(row=table.get_row_index("profile_template.load.stages"))
    await pilot.press("e", "ctrl+u", *"8x300, 16x300", "enter")
    await pilot.pause()
    table.move_cursor(row=table.get_row_index("profile_template.data.shared_prefix.question_len"))
    await settle(pilot)


@pytest.mark.skipif(not CAMPAIGN.is_dir(), reason=f"the upstream campaign files are not at {CAMPAIGN}")
@pytest.mark.parametrize("size", SIZES)
def test_review_inference_perf(snap_compare, size):
    from config.settings import Profile, validate_profile

    app = make_app(checks=CHECKS)
    app.settings.profiles["camp"] = Profile("camp", "tekton", validate_profile("tekton", {
        "backend": "tekton", "namespace": "diya", "values": str(CAMPAIGN / "values.yaml")}, None, "profiles.camp"))
    app.settings.default_backend, app.settings.default_profile = "tekton", "camp"
    assert snap_compare(app, terminal_size=size, run_before=review_inference_perf)
