"""The upstream tools' own files, read where they are kept (never copied into the project).

``/work/shared/reference`` holds unmodified files from the upstream projects
(see its README); ``SWEEPDECK_REFERENCE`` points elsewhere. A test that needs
one calls :func:`upstream`, which skips (or, with
``SWEEPDECK_REQUIRE_SERVICES=1``, fails) when the file is not on this machine.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.services import require

REFERENCE = Path(os.environ.get("SWEEPDECK_REFERENCE", "/work/shared/reference"))
#: The BLIS data collector's catalogs (known-models, workload-presets, vllm-args) and sample values.
BLIS = REFERENCE / "tektonc-data-collection"


def upstream(*parts: str) -> Path:
    """The path of an upstream file or folder under the reference directory (skip if absent)."""
    path = REFERENCE.joinpath(*parts)
    require(path.exists(), f"upstream reference file {path} is not on this machine (set SWEEPDECK_REFERENCE)")
    return path


def blis_catalog_dir() -> Path:
    """The folder with the BLIS skill's three catalog files, as a user would point catalog_dir at it."""
    return upstream("tektonc-data-collection")
