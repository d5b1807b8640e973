"""SVG snapshots of the Tekton matrix sweep screen, at 80×24 and 160×48.

The PipelineRun file is the Tekton PoC's matrix, copied to the test's own
``~/tekton-poc/`` so the path on screen is the same on every machine. Update
with ``pytest tests/snapshots/test_snapshots_matrix.py --snapshot-update``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Input

from tests.snapshots import SIZES
from tests.tui.app_fakes import make_app

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "tekton"


@pytest.fixture(autouse=True)
def user_home(private_dirs, monkeypatch):
    monkeypatch.setenv("HOME", str(private_dirs))
    poc = private_dirs / "tekton-poc"
    poc.mkdir()
    (poc / "pipelinerun-matrix.yaml").write_bytes((FIX / "tekton-poc-pipelinerun-matrix.yaml").read_bytes())
    (poc / "broken.yaml").write_text("kind: PipelineRun\nspec:\n  params: [unclosed\n")
    return private_dirs


async def settle(pilot) -> None:
    await pilot.pause()
    for box in pilot.app.screen.query(Input):
        box.cursor_blink = False
    await pilot.pause()


async def open_file(pilot, path: str) -> None:
    await pilot.press("m")
    await pilot.pause()
    await pilot.press(*path, "enter")
    await pilot.pause()


async def unroll_plus_n(pilot) -> None:
    await open_file(pilot, "~/tekton-poc/pipelinerun-matrix.yaml")
    await pilot.press("space", "tab")  # unroll gaiePluginConfig, then to the choice
    await pilot.pause()
    await pilot.press("down", "down", "enter", "tab", "ctrl+u", "2")  # unroll + N, N = 2
    await settle(pilot)


async def file_error(pilot) -> None:
    await open_file(pilot, "~/tekton-poc/broken.yaml")
    await settle(pilot)


FLOWS = {"unroll_plus_n": unroll_plus_n, "file_error": file_error}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("flow", list(FLOWS))
def test_matrix_screen(snap_compare, size, flow):
    app = make_app(with_profiles=True)
    assert snap_compare(app, terminal_size=size, run_before=FLOWS[flow])
