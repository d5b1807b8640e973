"""Where the real upstream files are: ``shared/reference/`` beside the checkout.

Tests read them there and never copy them into the project. Looked up in
``$SWEEPDECK_REFERENCE_DIR``, then ``../shared/reference`` next to the
repository (CI's layout), then ``/work/shared/reference`` (the workplace's).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def reference_dir() -> Path:
    """The reference directory (the last candidate when none exists; tests skip on it)."""
    candidates = [Path(p) for p in (os.environ.get("SWEEPDECK_REFERENCE_DIR"),) if p]
    candidates += [ROOT.parent / "shared" / "reference", Path("/work/shared/reference")]
    for path in candidates:
        if path.is_dir():
            return path
    return candidates[-1]


REFERENCE = reference_dir()
REPORTS = REFERENCE / "benchmark-reports"
