"""Backend lookup by name (imported lazily so the CLI stays fast)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from config.errors import SweepdeckError

if TYPE_CHECKING:
    from backends.base import Backend
    from config.settings import Profile, Settings

BACKENDS = {
    "local": "backends.local:LocalBackend",
    "slurm": "backends.slurm:SlurmBackend",
    "tekton": "backends.tekton:TektonBackend",
    "argo": "backends.argo:ArgoBackend",
}


def get_backend(settings: "Settings", name: str | None = None, profile: str | None = None) -> "Backend":
    """Instantiate the backend for ``name`` (or ``profile``'s backend).

    Every backend class takes ``(settings, profile)``.
    """
    prof: Profile = settings.profile(profile, name)
    backend = name or prof.backend
    if backend not in BACKENDS:
        raise SweepdeckError(f"Unknown backend {backend!r}.", "Backends: " + ", ".join(BACKENDS))
    module_name, _, cls_name = BACKENDS[backend].partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, cls_name)(settings, prof)
