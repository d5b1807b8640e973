"""Backend lookup by name (imported lazily so the CLI stays fast), and rebuilding one from its recipe."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, cast

from config.errors import SweepdeckError

if TYPE_CHECKING:
    from backends.base import Backend, BackendBase
    from backends.cleanup import CleanupRegistry
    from config.settings import Profile, Settings

BACKENDS = {
    "local": "backends.local:LocalBackend",
    "slurm": "backends.slurm:SlurmBackend",
    "tekton": "backends.tekton:TektonBackend",
    "argo": "backends.argo:ArgoBackend",
}


def backend_class(name: str) -> type[BackendBase]:
    """The class of backend ``name`` (its class attributes describe it: :class:`backends.base.BackendBase`).

    Raises:
        SweepdeckError: no such backend.
    """
    if name not in BACKENDS:
        raise SweepdeckError(f"Unknown backend {name!r}.", "Backends: " + ", ".join(BACKENDS))
    module_name, _, cls_name = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module_name), cls_name)


def create_backend(settings: Settings, name: str, profile: Profile, **options: Any) -> Backend:
    """Backend ``name`` for ``profile`` (every backend class takes ``(settings, profile, *, registry, **options)``)."""
    # every registered class derives from BackendBase and keeps the Backend protocol (test_backend_contract.py)
    return cast("Backend", backend_class(name)(settings, profile, **options))


def get_backend(settings: Settings, name: str | None = None, profile: str | None = None) -> Backend:
    """Instantiate the backend for ``name`` (or ``profile``'s backend)."""
    prof: Profile = settings.profile(profile, name)
    return create_backend(settings, name or prof.backend, prof)


def from_recipe(recipe: dict[str, Any], registry: CleanupRegistry | None = None) -> Backend:
    """The backend :meth:`backends.base.BackendBase.recipe` describes, in this process.

    A recipe may instead name a ``factory`` (``"module:callable"``) that takes
    ``(recipe, registry)``: a launcher wrapping a backend (a Tekton matrix
    launch) describes itself that way.

    Raises:
        SweepdeckError: the recipe names an unknown backend, or the config it names cannot be read.
    """
    factory = recipe.get("factory")
    if factory:
        module_name, _, attr = str(factory).partition(":")
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
        return target(recipe, registry)
    from config.settings import Profile, load_settings

    settings = load_settings(recipe.get("config"), recipe.get("catalog_dir"))
    prof = recipe.get("profile") or {}
    name = str(recipe["backend"])
    profile = Profile(str(prof.get("name") or name), str(prof.get("backend") or name), dict(prof.get("options") or {}))
    return create_backend(settings, name, profile, registry=registry, **dict(recipe.get("options") or {}))


def recipe_of(backend: Backend) -> dict[str, Any] | None:
    """The backend's recipe, or None when it cannot be rebuilt in another process (a test double)."""
    make = getattr(backend, "recipe", None)
    return make() if callable(make) else None


__all__ = ["BACKENDS", "backend_class", "create_backend", "from_recipe", "get_backend", "recipe_of"]
