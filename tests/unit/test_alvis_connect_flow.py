"""``sweepdeck alvis connect``'s steps before the job is submitted, over a scripted backend (no SSH, no SLURM).

tests/integration/slurm/test_connect.py runs the whole command against a real cluster; these cover the turns
that need a terminal or an unusual profile there: --port, a failed SSH check without a fix, a model without a
max length, the next-free-port and attach offers, and the profile's own checks.
"""

from __future__ import annotations

import argparse
import asyncio
import types

import pytest

import backends.slurm
from backends.base import Check
from config.errors import SweepdeckError
from tui.commands import alvis

OK = Check("ok", "pass")


class ScriptedBackend:
    """Stands in for SlurmBackend: the checks come from ``script``; records what connect did."""

    script: dict = {}
    made: list = []

    def __init__(self, settings, profile) -> None:
        self.profile = profile
        self.closed = 0
        ScriptedBackend.made.append(self)

    async def check_ssh(self):
        return self.script.get("ssh", OK)

    def catalog(self):
        return types.SimpleNamespace(models={})

    def resolve_model(self, model):
        return types.SimpleNamespace(path=f"/hub/{model}", max_model_len=self.script.get("max_len"))

    def check_duration(self):
        return self.script.get("duration", OK)

    async def check_existing(self):
        return self.script.get("existing", OK)

    def check_port(self, flag=None):
        # like the real one, read before any offer is taken
        self.port_asked_with = self.profile.get("local_port")
        return self.script.get("port", OK)

    def make_spec(self, model):
        return f"spec of {model}"

    def duration(self):
        return "1:00:00"

    async def close(self):
        self.closed += 1


@pytest.fixture
def connect(tmp_path, monkeypatch):
    """``connect(*argv, script=..., answers=...) -> (exit code, calls)`` with _drive/_attach recorded.

    The profile is not named alvis: that name brings the Alvis hub, which would be scanned over SSH.
    """
    cfg = tmp_path / "config.yaml"
    cfg.write_text("profiles:\n  lab:\n    backend: slurm\n    ssh_host: alvis2\n    local_port: 58000\n")
    monkeypatch.setattr(backends.slurm, "SlurmBackend", ScriptedBackend)
    ScriptedBackend.made = []
    calls: list = []

    async def drive(backend, spec, printer, args):
        calls.append(("drive", spec, backend.profile.get("local_port")))
        return 0

    async def attach(args, backend, printer):
        calls.append(("attach", args.attach))
        return 0

    monkeypatch.setattr(alvis, "_drive", drive)
    monkeypatch.setattr(alvis, "_attach", attach)

    def run(*argv, script=None, answers=None, catalog_checks=()):
        ScriptedBackend.script = script or {}
        if answers is not None:  # on a terminal: the offers are asked
            monkeypatch.setattr(alvis.sys, "stdin", type("TTY", (), {"isatty": lambda self: True})())
            replies = iter(answers)
            monkeypatch.setattr("builtins.input", lambda prompt: next(replies))
        monkeypatch.setattr(alvis, "_catalog_checks", lambda backend, spec: list(catalog_checks))
        parser = argparse.ArgumentParser()
        parser.add_argument("--config")
        parser.add_argument("--catalog-dir")
        alvis.add_parser(parser.add_subparsers(dest="command"))
        args = parser.parse_args(["--config", str(cfg), "alvis", "connect", *argv])
        return asyncio.run(alvis._connect(args)), calls

    return run


def test_port_flag_is_checked_then_used(connect):
    with pytest.raises(SweepdeckError, match="--port 70000 is not a TCP port"):
        connect("--port", "70000")
    assert ScriptedBackend.made == []  # refused before anything was set up
    code, calls = connect("--port", "58010", "-m", "m1")
    assert code == 0 and calls == [("drive", "spec of m1", 58010)]


def test_failed_ssh_check_without_a_fix(connect, capsys):
    code, calls = connect(script={"ssh": Check("ssh", "fail", "Permission denied (publickey)")})
    assert code == 1 and calls == []
    captured = capsys.readouterr()
    assert captured.err.splitlines() == ["[ERROR] Permission denied (publickey)"]
    assert ScriptedBackend.made[0].closed >= 1


def test_model_lines_with_and_without_a_max_length(connect, capsys):
    connect("-m", "m1")
    out = capsys.readouterr().out
    assert "[INFO] Model path: /hub/m1" in out and "Max model length" not in out
    connect("-m", "m1", script={"max_len": 8192})
    assert "[INFO] Max model length: 8192" in capsys.readouterr().out


def test_a_busy_port_taken_up_on_the_offer_moves_to_the_next_free_one(connect, capsys):
    busy = Check("Local port 58000 free", "fail", "port 58000 is in use by python3 (pid 7)",
                 data={"holder": "python3 (pid 7)", "next_free_port": 58001})
    code, calls = connect("-m", "m1", script={"port": busy}, answers=[""])
    assert code == 0 and calls == [("drive", "spec of m1", 58001)]
    assert ScriptedBackend.made[0].port_asked_with == 58000
    assert "[INFO] Using local port 58001" in capsys.readouterr().out


def test_an_existing_job_taken_up_on_the_offer_is_attached(connect):
    running = Check("No job", "fail", "job 5 of this profile is already RUNNING on alvis7-07",
                    data={"job_id": "5", "run_id": "r1"})
    code, calls = connect("-m", "m1", script={"existing": running}, answers=["y"])
    assert code == 0 and calls == [("attach", "r1")]


def test_an_offer_declined_is_a_failed_preflight(connect, capsys):
    running = Check("No job", "fail", "job 5 of this profile is already RUNNING on alvis7-07", data={"job_id": "5"})
    code, calls = connect("-m", "m1", script={"existing": running}, answers=["n"])
    assert code == 1 and calls == []
    assert "[INFO] Or cancel it with: scancel 5" in capsys.readouterr().out


def test_the_profiles_own_checks_warn_or_stop(connect, capsys):
    warns = [Check("container", "warn", "no container: vllm must be on the PATH", "set container: ..."),
             Check("max_model_len", "warn", "max_model_len is above the model's limit")]
    code, calls = connect("-m", "m1", catalog_checks=warns)
    assert code == 0 and calls == [("drive", "spec of m1", 58000)]
    out = capsys.readouterr().out.splitlines()
    i = out.index("[WARN] no container: vllm must be on the PATH")
    assert out[i:i + 4] == ["[WARN] no container: vllm must be on the PATH", "  set container: ...",
                            "[WARN] max_model_len is above the model's limit",
                            "[INFO] Submitting job (duration: 1:00:00)..."]
    code, calls = connect("-m", "m1", catalog_checks=[Check("container", "fail", "no such container", "fix it")])
    assert code == 1 and calls == [("drive", "spec of m1", 58000)]  # only the first run drove
    assert "[ERROR] container: no such container" in capsys.readouterr().err
