"""Profile schemas, one module per backend (each owns its own keys).

Each module defines ``FIELDS: dict[str, config.schema.Field]``.
"""

from __future__ import annotations

import importlib

BACKENDS = ("local", "slurm", "tekton", "argo")


def fields_for(backend: str):
    """The schema of a backend's profile options."""
    return importlib.import_module(f"config.profiles.{backend}").FIELDS
