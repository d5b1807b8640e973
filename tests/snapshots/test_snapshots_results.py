"""SVG snapshots of the results screens: one run's results, a plot, a compare of three runs, the list.

Real reports (guidellm 0.8, inference-perf; from ../shared/reference) imported
into the run store with fixed times. Update with
``pytest tests/snapshots/test_snapshots_results.py --snapshot-update``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.snapshots import SIZES
from tests.tui.app_fakes import make_app
from tests.tui.results_support import needs_reference, seed_results, wait_loaded
from tui.screens.results import CompareScreen, ResultsListScreen, ResultsScreen

pytestmark = needs_reference


@pytest.fixture
def seeded():
    seed_results(Path(os.environ["SWEEPDECK_STATE_DIR"]))


def _select(pilot, run_id: str, table: str) -> None:
    t = pilot.app.screen.query_one(table)  # the runs list (VirtualTable) or a DataTable
    t.move_cursor(row=t.get_row_index(run_id))


async def _open(pilot, run_id: str = "sweep-a") -> None:
    await pilot.pause()
    _select(pilot, run_id, "#runs-table")
    await pilot.press("enter")
    await wait_loaded(pilot, ResultsScreen)


async def _compare(pilot) -> None:
    await pilot.pause()
    for run_id in ("sweep-a", "const-b", "perf-c"):
        _select(pilot, run_id, "#runs-table")
        await pilot.press("space")
    await pilot.press("c")
    await wait_loaded(pilot, CompareScreen)


def flows():
    async def results(pilot):
        await _open(pilot)

    async def failures_tab(pilot):
        await _open(pilot, "perf-c")
        await pilot.press("right_square_bracket")
        await pilot.pause()

    async def plot(pilot):
        await _open(pilot)
        await pilot.press("g")
        await pilot.pause()

    async def compare(pilot):
        await _compare(pilot)

    async def compare_curves(pilot):
        await _compare(pilot)
        await pilot.press("g")
        await pilot.pause()

    async def compare_settings(pilot):
        await _compare(pilot)
        await pilot.press("left_square_bracket")
        await pilot.pause()

    async def results_list(pilot):
        await pilot.pause()
        await pilot.press("R")
        await wait_loaded(pilot, ResultsListScreen)

    return {name: fn for name, fn in locals().items() if callable(fn)}


FLOWS = flows()


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("flow", list(FLOWS))
def test_results_screens(snap_compare, seeded, size, flow):
    assert snap_compare(make_app(), terminal_size=size, run_before=FLOWS[flow])
