"""Skip-or-fail for tests that need a real service.

On a developer's laptop a missing service binary skips the test with a clear
reason; CI sets ``SWEEPDECK_REQUIRE_SERVICES=1`` so the same condition fails,
and a green CI always means the real parts ran.
"""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRED = os.environ.get("SWEEPDECK_REQUIRE_SERVICES") == "1"


def require(condition: bool, reason: str) -> None:
    """Skip (or, with SWEEPDECK_REQUIRE_SERVICES=1, fail) unless ``condition``."""
    if condition:
        return
    if REQUIRED:
        pytest.fail(f"required service missing: {reason} (SWEEPDECK_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(reason)


def require_binary(path_or_name: str, package: str) -> str:
    """Return the binary's path, or skip/fail naming the Debian package to install."""
    found = (
        path_or_name if os.path.isabs(path_or_name) and os.access(path_or_name, os.X_OK) else shutil.which(path_or_name)
    )
    require(bool(found), f"{path_or_name} not found (install Debian package {package})")
    return found or ""
