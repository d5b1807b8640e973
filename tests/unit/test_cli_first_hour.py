"""What a newcomer meets first on the command line: the help, the config check, the README's examples."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CMD = [sys.executable, "-m", "tui.cli"]


def sweepdeck(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_top_level_help_lists_every_command_and_every_action():
    from tui.cli import build_parser

    parser = build_parser()
    text = parser.format_help()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        nested = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
        if not nested:
            assert re.search(rf"^  {re.escape(name)}\s", text, re.M), name
        for action in nested[0].choices if nested else ():
            assert re.search(rf"^  {re.escape(name)} {re.escape(action)}\s", text, re.M), f"{name} {action}"
    assert "tekton run-pr" in text and "tekton cancel" in text  # the two the issue found missing


def test_queue_serve_help_states_its_default_port():
    res = sweepdeck("queue", "serve", "--help")
    assert res.returncode == 0 and re.search(r"default 8080", " ".join(res.stdout.split()))


def test_a_misspelt_key_anywhere_in_the_config_fails_every_command(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("profiles:\n  alvis:\n    backend: slurm\n    ssh_host: alvis2\n    acount: x\n")
    for command in (["runs"], ["results", "show", "nothing"], ["plan", "qwen-1.5b", "--gpu", "H100-80GB"]):
        res = sweepdeck("--config", str(bad), *command)
        assert res.returncode == 2, (command, res.stdout, res.stderr)
        assert "profiles.alvis.acount" in res.stderr and "did you mean 'account'" in res.stderr, command
        assert "Traceback" not in res.stderr
    good = tmp_path / "good.yaml"
    good.write_text("profiles:\n  alvis:\n    backend: slurm\n    ssh_host: alvis2\n    account: x\n")
    assert sweepdeck("--config", str(good), "runs").returncode == 0


def test_the_example_config_is_valid():
    from config.settings import load_settings

    settings = load_settings(ROOT / "examples" / "config.yaml")
    assert {p.backend for p in settings.profiles.values()} == {"slurm", "tekton", "argo"}


def test_the_example_matrix_transforms_as_the_readme_says():
    res = sweepdeck("tekton", "transform-pr", "examples/matrix-pipelinerun.yaml", "--unroll", "max-num-seqs",
                    "-n", "2", "-o", "-")
    assert res.returncode == 0, res.stderr
    assert "name: bench-0" in res.stdout and "name: bench-1" in res.stdout
    assert "6 combinations; 2 tasks" in res.stderr


def test_files_named_in_the_readme_examples_exist():
    text = (ROOT / "README.md").read_text()
    named = set(re.findall(r"\b((?:examples|config/data)/[\w./-]+\.ya?ml)\b", text))
    assert {"examples/config.yaml", "examples/matrix-pipelinerun.yaml", "config/data/values.yaml"} <= named
    for path in named:
        assert (ROOT / path).is_file(), path


@pytest.mark.parametrize("backend", ["local", "slurm", "tekton", "argo"])
def test_readme_lists_every_profile_key(backend):
    from config.profiles import fields_for

    text = (ROOT / "README.md").read_text()
    table = text.split(f"**{backend}**", 1)[1].split("\n\n", 2)[1]
    for name, field in fields_for(backend).items():
        assert f"| `{name}` |" in table, (backend, name)
        assert field.help or name in ("backend", "description"), f"{backend}.{name} has no help text"
