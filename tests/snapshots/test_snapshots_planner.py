"""SVG snapshots of the memory planner in the wizard: the review line (fits / does not fit) and pre-flight.

Update with ``pytest tests/snapshots/test_snapshots_planner.py --snapshot-update``.
"""

from __future__ import annotations

import pytest
from textual.widgets import DataTable

from backends.base import Check
from tests.snapshots import SIZES
from tests.snapshots.test_snapshots_app import settle, to_model
from tests.tui.app_fakes import make_app
from tests.tui.monitor_support import wait_for

CHECKS = [Check("Simulator available", "pass", "python -m backends.sim")]


def app_on(gpu: str):
    app = make_app(checks=CHECKS)
    app.settings.local.options["gpu"] = gpu  # the local profile names its GPU
    return app


async def to_review(pilot, model: str) -> None:
    await to_model(pilot, model)
    await pilot.press("enter")  # model → workload
    await pilot.pause()
    await pilot.press("enter")  # chatbot → review
    await pilot.pause()


async def tp_one(pilot) -> None:
    table = pilot.app.screen.query_one("#review-table", DataTable)
    table.move_cursor(row=table.get_row_index("engine.tp"))
    await pilot.press("e", "ctrl+u", "1", "enter")
    await pilot.pause()


async def review_fits(pilot):
    await to_review(pilot, "llama2-7b")
    await settle(pilot)


async def review_does_not_fit(pilot):
    await to_review(pilot, "llama3-70b")
    await tp_one(pilot)
    await settle(pilot)


async def preflight_does_not_fit(pilot):
    await to_review(pilot, "llama3-70b")
    await tp_one(pilot)
    await pilot.press("y", "f8")
    await pilot.pause()
    await pilot.press("f8")
    await wait_for(pilot, lambda: pilot.app.screen.query_one("#preflight-table", DataTable).row_count)
    await settle(pilot)


FLOWS = {"review_fits": ("H100-80GB", review_fits), "review_does_not_fit": ("A40", review_does_not_fit),
         "preflight_does_not_fit": ("A40", preflight_does_not_fit)}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("flow", list(FLOWS))
def test_planner_in_the_wizard(snap_compare, size, flow):
    gpu, run_before = FLOWS[flow]
    assert snap_compare(app_on(gpu), terminal_size=size, run_before=run_before)
