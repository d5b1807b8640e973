"""The busy-local-port check of the slurm backend: its fix names the way to change the port where it is shown."""

from __future__ import annotations

import socket

import pytest

from backends.slurm import SlurmBackend
from config.settings import Profile, Settings


@pytest.fixture
def busy_port():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def _backend(port: int) -> SlurmBackend:
    return SlurmBackend(Settings(), Profile("alvis", "slurm", {"ssh_host": "alvis2", "local_port": port}))


def test_preflight_fix_names_the_profile_setting(busy_port):
    """``sweepdeck run`` and the TUI show this fix: there is no --port there."""
    check = _backend(busy_port).check_port()
    assert check.status == "fail"
    assert f"port {busy_port} is in use by python" in check.detail
    nxt = check.data["next_free_port"]
    assert nxt and nxt > busy_port
    assert f"set local_port: {nxt} in profile alvis" in check.fix
    assert "--port" not in check.fix


def test_alvis_connect_fix_names_its_flag(busy_port):
    check = _backend(busy_port).check_port(flag="--port")
    nxt = check.data["next_free_port"]
    assert check.fix.endswith(f"the next free port: --port {nxt}")
    assert "local_port" not in check.fix


def test_free_port_passes():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert _backend(port).check_port().status == "pass"
