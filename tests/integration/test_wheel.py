"""Packaging: the wheel installs into a fresh venv and works outside the repo.

Builds the wheel, creates a venv WITHOUT system site packages (so a missing
dependency or data file cannot hide behind the development venv), installs the
wheel with its dependencies (from the index / pip's cache), then runs
``sweepdeck --help`` and ``sweepdeck sim --help`` from a directory outside the
repository, loads the shipped catalogs from the installed package, and checks
that every file of the four packages (Python, YAML, Jinja, .tcss) is inside
the wheel.

Takes about 30 s here (almost all of it pip installing the dependencies).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("tui", "backends", "config", "templates")
# Read at import, before the autouse fixture points XDG_* at temp dirs: pip
# should keep using the machine's own pip.conf and cache.
_ORIGINAL_ENV = dict(os.environ)

pytestmark = pytest.mark.slow


def _pip_env() -> dict[str, str]:
    env = {k: v for k, v in _ORIGINAL_ENV.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    return env


def _run(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{argv} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _repo_files() -> set[str]:
    """Every file of the shipped packages, as wheel paths.

    Files git ignores are left out (the wheel builder leaves them out too);
    without git, every file on disk counts.
    """
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *PACKAGES],
            cwd=ROOT, capture_output=True, text=True, timeout=30, check=True,
        ).stdout.split("\n")
        candidates = [ROOT / name for name in listed if name]
    except (OSError, subprocess.SubprocessError):
        candidates = [p for package in PACKAGES for p in (ROOT / package).rglob("*")]
    return {
        p.relative_to(ROOT).as_posix()
        for p in candidates
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    argv = [sys.executable, "-m", "build", "--wheel", "--outdir", str(out)]
    if importlib.util.find_spec("build") is None:
        argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(out)]
    elif importlib.util.find_spec("hatchling") is not None:
        argv.append("--no-isolation")  # the backend is here: no download needed
    _run(argv + [str(ROOT)], cwd=ROOT, env=_pip_env())
    [built] = list(out.glob("sweepdeck-*.whl"))
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv (no system site packages) with the wheel and its dependencies."""
    home = tmp_path_factory.mktemp("venv")
    env_dir = home / "venv"
    # No pip inside: the running pip installs into it with --python (saves the ensurepip step).
    venv.EnvBuilder(system_site_packages=False, with_pip=False, symlinks=True).create(env_dir)
    python = env_dir / "bin" / "python"
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-compile", str(wheel)],
        cwd=home,
        env=_pip_env(),
        timeout=600,
    )
    return env_dir


def _outside_env(env_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_wheel_contains_every_package_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(_repo_files() - names)
    assert not missing, f"files not in the wheel: {missing}"
    # The data the app cannot start without, spelled out.
    for data in ("known-models.yaml", "workload-presets.yaml", "vllm-args.yaml", "values.yaml"):
        assert f"config/data/{data}" in names
    assert any(n.startswith("templates/") and not n.endswith(".py") for n in names)
    for tcss in (ROOT / "tui").rglob("*.tcss"):
        assert tcss.relative_to(ROOT).as_posix() in names
    # Nothing from outside the four packages (tests, fixtures, the venv).
    top = {n.split("/")[0] for n in names if not n.startswith("sweepdeck-")}
    assert top <= set(PACKAGES), top
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "sweepdeck = tui.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_help_runs_outside_the_repo(installed, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = _outside_env(installed)
    exe = str(installed / "bin" / "sweepdeck")
    top = _run([exe, "--help"], cwd=outside, env=env, timeout=60)
    assert "usage: sweepdeck" in top.stdout
    assert "sim" in top.stdout
    sim = _run([exe, "sim", "--help"], cwd=outside, env=env, timeout=60)
    assert "usage: sweepdeck sim" in sim.stdout


def test_installed_package_is_used_and_loads_its_data(installed, tmp_path):
    code = (
        "import config, tui.cli; from config.catalog import load_catalogs; "
        "c = load_catalogs(); c.validate(); "
        "print(config.__file__); print(len(c.workloads.presets))"
    )
    proc = _run([str(installed / "bin" / "python"), "-c", code], cwd=tmp_path, env=_outside_env(installed), timeout=60)
    path, presets = proc.stdout.split()
    assert Path(path).resolve().is_relative_to(installed.resolve()), path
    assert presets == "8"
