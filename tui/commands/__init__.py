"""Subcommands of the ``sweepdeck`` CLI (one module each, import-light)."""

from __future__ import annotations

import argparse


def tui_main(args: argparse.Namespace) -> int:
    """Open the full-screen app (imports textual only now)."""
    from tui.app import run_app

    return run_app(args)
