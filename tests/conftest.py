"""Shared fixtures: every test gets private XDG dirs so no user file is touched, and no run outlives its test."""

from __future__ import annotations

import contextlib
import os
import signal

import pytest


@pytest.fixture(autouse=True)
def private_dirs(tmp_path, monkeypatch):
    """Point the run store and every XDG dir at the test's own temp dir; stop what its runs left."""
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
    state = home / "state" / "sweepdeck"
    monkeypatch.setenv("SWEEPDECK_STATE_DIR", str(state))
    monkeypatch.setenv("NO_COLOR", "1")
    yield home
    _stop_supervisors_under(str(tmp_path))


def _stop_supervisors_under(root: str) -> None:
    """A test that detached a run and did not stop it must not leave its supervisor running
    (the supervisor's guard then ends the run's local processes too)."""
    if not os.path.isdir("/proc"):
        return
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if b"backends.supervisor" in argv and any(a.startswith(root.encode()) for a in argv):
            with contextlib.suppress(OSError):
                os.kill(int(entry), signal.SIGKILL)


def pytest_configure(config):
    """Give this process (the main one, and each xdist worker) the SIGINT a terminal's foreground process has.

    A non-interactive shell starts its background jobs with SIGINT ignored (``make test &`` in a script, a
    CI runner), the workers inherit that, and so does every client a test starts — and ``sweepdeck run``
    keeps an inherited ignore, as a background job should. The tests that press Ctrl+C on a client would
    then test how the suite was started. (This is why the early Ctrl+C test failed only in such runs.)
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        with contextlib.suppress(ValueError):  # not the main thread: leave it
            signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups to schedule by them
def pytest_collection_modifyitems(config, items):
    """``make test`` runs two workers (pytest-xdist, ``--dist loadgroup``); tests that share one service
    run on one worker: the SLURM cluster (slurmctld, slurmd, sshd, munged) is started once per worker
    process, so every SLURM test goes to the same one; the supervisor kill tests, which time exits
    against bounds, are kept on one worker too (one at a time, not two kill suites at once)."""
    groups = {
        "tests/integration/slurm/": "slurm",
        "tests/integration/supervisor/": "supervisor",
    }
    for item in items:
        path = str(item.path).replace(os.sep, "/")
        for prefix, group in groups.items():
            if f"/{prefix}" in path:
                item.add_marker(pytest.mark.xdist_group(group))
                break
