"""SVG snapshots of the sweep view (Argo runs), its failure-group drill-in and the reset confirmation.

At 80×24 (one section at a time, the section bar) and 160×48 (every section
at once); deterministic: fixed date and clock, scripted events with fixed
timestamps, a fake reader. Update with
``pytest tests/snapshots/test_snapshots_sweep.py --snapshot-update``.
"""

from __future__ import annotations

import pytest

from tests.snapshots import SIZES
from tests.snapshots.test_snapshots_monitor import settle
from tests.tui.monitor_support import make_app, wait_for
from tests.tui.sweep_support import FakeReader, argo_backend, argo_spec, sweep_script
from tui.screens.dialogs import ConfirmDialog
from tui.screens.sweep import FailureGroupScreen, SweepMonitorScreen


def _app():
    return make_app(argo_backend(sweep_script(), FakeReader()))


async def _ready(app, pilot) -> SweepMonitorScreen:
    app.launch_spec(argo_spec())

    def ready() -> bool:
        screen = app.screen
        return isinstance(screen, SweepMonitorScreen) and screen.batches > 0 and screen.sweep_view.sweep is not None \
            and len(screen.sweep_view.nodes) == 14

    await wait_for(pilot, ready)
    await settle(pilot)
    return app.screen


@pytest.mark.parametrize("size", SIZES)
def test_sweep_view(snap_compare, size):
    app = _app()

    async def run_before(pilot):
        await _ready(app, pilot)
        app.clear_notifications()
        await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_sweep_view_nodes_section(snap_compare, size):
    """``[`` goes (backwards) to the nodes section; wide, the focus moves to the node table."""
    app = _app()

    async def run_before(pilot):
        await _ready(app, pilot)
        await pilot.press("left_square_bracket")
        app.clear_notifications()
        await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_sweep_failure_group(snap_compare, size):
    app = _app()

    async def run_before(pilot):
        await _ready(app, pilot)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, FailureGroupScreen) and app.screen.loaded)
        app.clear_notifications()
        await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_sweep_reset_confirm(snap_compare, size):
    app = _app()

    async def run_before(pilot):
        await _ready(app, pilot)
        await pilot.press("R")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        app.clear_notifications()
        await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)
