"""Dependency direction: ``tui → backends → templates, config``.

Each check runs in a fresh interpreter, imports the package and every module
under it (found with pkgutil; a module that fails to import fails the test),
and looks at ``sys.modules`` after each import so the message names the module
that pulled in what it must not. The only modules not imported are
``__main__`` modules (importing one runs the program); the test compares the
walk with the files on disk so nothing else can be missed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_PROBE = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys

    packages, forbidden = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    del sys.argv[1:]  # a module that reads argv at import must not see ours
    imported, errors, leaks = [], [], []

    def onerror(name):
        errors.append(f"{name}: {sys.exc_info()[1]!r}")

    def check(name):
        bad = sorted({m.split(".")[0] for m in sys.modules} & set(forbidden))
        if bad and not leaks:
            leaks.append(f"importing {name} loaded {', '.join(bad)}")

    for pkg_name in packages:
        try:
            pkg = importlib.import_module(pkg_name)
        except Exception as exc:
            errors.append(f"{pkg_name}: {exc!r}")
            continue
        imported.append(pkg_name)
        check(pkg_name)
        if not hasattr(pkg, "__path__"):
            continue
        for info in pkgutil.walk_packages(pkg.__path__, pkg_name + ".", onerror=onerror):
            if info.name.endswith(".__main__"):
                continue  # importing it runs the program; the test lists these explicitly
            try:
                importlib.import_module(info.name)
            except Exception as exc:
                errors.append(f"{info.name}: {exc!r}")
                continue
            imported.append(info.name)
            check(info.name)
    print(json.dumps({"imported": imported, "errors": errors, "leaks": leaks}))
    """
)


def probe(packages: list[str], forbidden: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(packages), json.dumps(forbidden)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "package, forbidden",
    [
        ("config", ["textual", "tui", "backends", "templates"]),
        ("templates", ["textual", "tui", "backends"]),
        ("backends", ["textual", "tui"]),
    ],
)
def test_core_packages_import_without_textual(package, forbidden):
    result = probe([package], forbidden)
    assert not result["errors"], "modules that failed to import: " + "; ".join(result["errors"])
    assert not result["leaks"], result["leaks"]
    assert package in result["imported"]
    # The walk really walked: every .py file under the package was imported.
    on_disk = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / package).rglob("*.py")
        if "__pycache__" not in p.parts and p.name != "__main__.py"
    }
    missing = sorted(on_disk - set(result["imported"]))
    assert not missing, f"modules not reached by the walk (missing __init__.py?): {missing}"


def test_headless_cli_imports_without_textual():
    result = probe(["tui.cli", "tui.commands"], ["textual"])
    assert not result["errors"], "; ".join(result["errors"])
    assert not result["leaks"], result["leaks"]
    assert "tui.cli" in result["imported"]
    commands = {p.stem for p in (ROOT / "tui" / "commands").glob("*.py") if p.stem != "__init__"}
    assert {f"tui.commands.{c}" for c in commands} <= set(result["imported"])


def test_probe_would_catch_a_leak(tmp_path):
    # The probe itself must be able to fail: a package that imports json is seen.
    pkg = tmp_path / "leaky"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "inner.py").write_text("import sqlite3\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(["leaky"]), json.dumps(["sqlite3"])],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["leaks"] == ["importing leaky.inner loaded sqlite3"]


#: The backends' own packages: the UI learns about a run from events and a backend's description,
#: never from its implementation.
BACKEND_PACKAGES = ("local", "slurm", "tekton", "argo", "kube", "queue", "sim", "loadgen")
#: The UI's modules (tui/commands are headless per-backend commands and may use their backend).
UI_MODULES = [*sorted((ROOT / "tui" / "screens").rglob("*.py")), *sorted((ROOT / "tui" / "widgets").rglob("*.py")),
              ROOT / "tui" / "app.py", ROOT / "tui" / "controller.py"]
#: Allowed, with the reason: the Tekton matrix screen edits a matrix PipelineRun file, a Tekton format.
UI_ALLOWED = {("tui/screens/matrix.py", "backends.tekton.launch_matrix")}


def test_the_ui_imports_only_the_public_surface_of_backends():
    import ast

    found = []
    for path in UI_MODULES:
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                parts = name.split(".")
                if parts[0] == "backends" and len(parts) > 1 and parts[1] in BACKEND_PACKAGES \
                        and (rel, name) not in UI_ALLOWED:
                    found.append(f"{rel}: {name}")
    assert not found, "the UI imports a backend's implementation: " + "; ".join(found)
    assert len(UI_MODULES) > 20  # the walk found the UI


#: Modules under tui/screens and tui/widgets that may compare against a backend's name, with the reason.
NAME_ALLOWED = {
    # the Tekton matrix screen is about one backend: it offers Tekton profiles and launches on Tekton
    "tui/screens/matrix.py": {"tekton"},
}


def backend_name_comparisons(source: str, filename: str, names: set[str]) -> list[str]:
    """``line: 'name'`` for every comparison with a backend name literal (``==``, ``!=``, ``in (...)``)."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Compare):
            continue
        for operand in (node.left, *node.comparators):
            items = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
            found += [f"{node.lineno}: {item.value!r}" for item in items
                      if isinstance(item, ast.Constant) and item.value in names]
    return found


def test_the_ui_never_compares_against_a_backend_name():
    from backends.registry import BACKENDS

    names = set(BACKENDS)
    modules = [*sorted((ROOT / "tui" / "screens").rglob("*.py")), *sorted((ROOT / "tui" / "widgets").rglob("*.py"))]
    found = []
    for path in modules:
        rel = path.relative_to(ROOT).as_posix()
        allowed = NAME_ALLOWED.get(rel, set())
        found += [f"{rel}:{hit}" for hit in backend_name_comparisons(path.read_text(), rel, names - allowed)]
    assert not found, ("the UI branches on a backend's name (describe it on the backend instead: "
                       "backends/base.py BackendBase): " + "; ".join(found))
    assert any(p.parent.name == "wizard" for p in modules)  # the walk reached the wizard package
    for rel, allowed in NAME_ALLOWED.items():  # an allowance nobody needs any more goes
        hits = backend_name_comparisons((ROOT / rel).read_text(), rel, allowed)
        assert hits, f"{rel} no longer names {sorted(allowed)}: remove it from NAME_ALLOWED"


def test_the_name_check_sees_each_form_of_comparison():
    names = {"local", "tekton", "argo"}
    source = ('if spec.backend == "local": pass\n'
              'ok = "tekton" != backend\n'
              'x = name in ("argo", "other")\n'
              'y = name == "elsewhere" or label == "local:"\n')
    assert backend_name_comparisons(source, "t.py", names) == ["1: 'local'", "2: 'tekton'", "3: 'argo'"]
