"""README.md's keys table and screens gallery are generated from the app: they must be current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_keys_and_screens_are_current():
    """A binding or screenshot added without `scripts/readme.py` fails here."""
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr + "\nRun: .venv/bin/python scripts/readme.py"


def test_readme_lists_every_binding_id_and_screenshot():
    sys.path.insert(0, str(ROOT))
    from tui import bindings

    text = (ROOT / "README.md").read_text()
    for spec in bindings.KEYS:
        assert f"`{spec.id}`" in text, spec.id
    for shot in (ROOT / "screenshots").glob("*.svg"):
        assert f"(screenshots/{shot.name})" in text, shot.name
