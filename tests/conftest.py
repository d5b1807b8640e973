"""Shared fixtures: every test gets private XDG dirs so no user file is touched."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def private_dirs(tmp_path, monkeypatch):
    """Point the run store and every XDG dir at the test's own temp dir."""
    home = tmp_path / "home"
    for name, sub in (
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_STATE_HOME", "state"),
        ("XDG_DATA_HOME", "data"),
        ("XDG_CACHE_HOME", "cache"),
    ):
        path = home / sub
        path.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(name, str(path))
    monkeypatch.setenv("SWEEPDECK_STATE_DIR", str(home / "state" / "sweepdeck"))
    monkeypatch.setenv("NO_COLOR", "1")
    return home
