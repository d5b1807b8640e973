"""Snapshot fixtures: clock text renders the same on every machine."""

from __future__ import annotations

import time

import pytest


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    """Times on screen in UTC whatever the machine's zone."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture(autouse=True)
def fixed_run_store_check(monkeypatch):
    """The shared pre-flight check names the run store's path and its free space: fixed words here,
    so a snapshot does not depend on the test's temp dir or the disk."""
    import backends.preflight as preflight
    from backends.base import Check

    fixed = Check("Run store writable", "pass", "~/.local/state/sweepdeck/runs is writable, 120.0 GB free")
    monkeypatch.setattr(preflight, "state_dir_check", lambda store: fixed)
