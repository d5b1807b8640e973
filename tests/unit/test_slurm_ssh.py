"""accept-new host keys, local port checks and the CLI surface (no SSH server needed)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import asyncssh
import pytest

from backends.procs import holder_name, next_free_port, port_free
from backends.slurm.ssh import HostKeys


def test_accept_new_appends_unknown_host_and_refuses_changed_key(tmp_path):
    kh = HostKeys(tmp_path / "ssh" / "known_hosts")
    k1 = asyncssh.generate_private_key("ssh-ed25519")
    k2 = asyncssh.generate_private_key("ssh-ed25519")
    assert kh.validate("alvis2.c3se.chalmers.se", "129.16.1.1", 22, k1) is True
    text = kh.path.read_text()
    assert text.startswith("alvis2.c3se.chalmers.se ssh-ed25519 ")
    assert oct(kh.path.stat().st_mode & 0o777) == "0o600"
    assert oct(kh.path.parent.stat().st_mode & 0o777) == "0o700"
    # the stored key now matches through asyncssh's own known_hosts matching
    assert kh.load().match("alvis2.c3se.chalmers.se", "", None)[0][0] == k1.convert_to_public()
    # same host, another key: refused, file untouched
    assert kh.validate("alvis2.c3se.chalmers.se", "129.16.1.1", 22, k2) is False
    assert "has changed" in kh.refused and kh.path.read_text() == text
    # non-default port: [host]:port entries; a new node is accepted separately
    assert kh.validate("alvis7-07", "10.0.0.7", 2222, k2) is True
    assert "[alvis7-07]:2222 ssh-ed25519 " in kh.path.read_text()
    assert kh.added == ["alvis2.c3se.chalmers.se", "[alvis7-07]:2222"]


def test_port_checks_name_the_holder():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not port_free("127.0.0.1", port)
        holder = holder_name(port)
        assert holder.endswith(f"(pid {os.getpid()})") and len(holder) > len(f"(pid {os.getpid()})") + 1
        nxt = next_free_port("127.0.0.1", port)
        assert nxt and nxt > port and port_free("127.0.0.1", nxt)
    assert port_free("127.0.0.1", port)


def test_alvis_help_and_import_light():
    r = subprocess.run([sys.executable, "-m", "tui.cli", "alvis", "connect", "--help"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0
    for opt in ("-m MODEL_NAME", "-t DURATION", "--list-models", "--profile", "--detach", "--attach"):
        assert opt in r.stdout
    code = ("import sys, tui.commands.alvis; "
            "print(any(m.startswith(('asyncssh', 'backends', 'httpx')) for m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.stdout.strip() == "False"


@pytest.mark.parametrize("args, words", [
    (["-t", "25:99:00"], "minutes and seconds must be below 60"),
    (["-t", "soon"], "is not a duration"),
])
def test_bad_duration_is_refused_before_connecting(tmp_path, args, words):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("profiles:\n  alvis:\n    backend: slurm\n    ssh_host: alvis2.invalid\n")
    r = subprocess.run([sys.executable, "-m", "tui.cli", "--config", str(cfg), "alvis", "connect", *args],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and words in r.stderr and "Traceback" not in r.stderr
    assert "Checking SSH" not in r.stdout


def test_no_slurm_profile_is_explained(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("profiles: {}\n")
    r = subprocess.run([sys.executable, "-m", "tui.cli", "--config", str(cfg), "alvis", "connect"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode != 0 and "No slurm profile is configured" in r.stderr


def test_terminal_offers_next_port_or_attach(monkeypatch, capsys):
    from backends.base import Check
    from tui.commands import alvis

    class TTY:
        def isatty(self):
            return True

    monkeypatch.setattr(alvis.sys, "stdin", TTY())
    answers = iter(["", "n", "y"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    busy = Check("Local port 58000 free", "fail", "port 58000 is in use by python3 (pid 7)",
                 data={"holder": "python3 (pid 7)", "next_free_port": 58001})
    assert alvis._offer(busy) == "port"
    assert alvis._offer(busy) is None
    running = Check("No job", "fail", "job 5 of this profile is already RUNNING on alvis7-07",
                    data={"job_id": "5", "run_id": "r"})
    assert alvis._offer(running) == "attach"
    assert "port 58000 is in use by python3 (pid 7)" in capsys.readouterr().out
    monkeypatch.setattr(alvis.sys, "stdin", type("P", (), {"isatty": lambda self: False})())
    assert alvis._offer(busy) is None  # never asks when not on a terminal
