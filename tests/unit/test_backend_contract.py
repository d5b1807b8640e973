"""Every registered backend keeps the one contract (backends/base.py), so the session, the supervisor
and the UI can drive any of them the same way: a new backend that misses a part fails here."""

from __future__ import annotations

import inspect

import pytest

from backends.base import Backend, BackendBase
from backends.cleanup import CleanupRegistry
from backends.registry import BACKENDS, backend_class, create_backend, from_recipe, recipe_of
from config.settings import load_settings

NAMES = sorted(BACKENDS)


@pytest.mark.parametrize("name", NAMES)
def test_class_keeps_the_protocol(name):
    cls = backend_class(name)
    assert issubclass(cls, BackendBase), f"{cls.__name__} must derive from BackendBase (its defaults)"
    assert cls.name == name
    for method in ("preflight", "launch", "cancel", "cleanup", "attach", "remedy", "clean_leftover",
                   "leftover_alive"):
        assert inspect.iscoroutinefunction(getattr(cls, method)), f"{name}.{method} must be async"
    # one launch signature everywhere: the session hands every backend the run's directory
    params = list(inspect.signature(cls.launch).parameters)
    assert params[:3] == ["self", "spec", "store"], params
    events = cls.events
    assert inspect.isasyncgenfunction(events) or not inspect.iscoroutinefunction(events), \
        f"{name}.events must return an async iterator, not be awaited"
    assert isinstance(cls.capabilities, frozenset)


@pytest.mark.parametrize("name", NAMES)
def test_instance_is_a_backend_with_an_injected_registry_and_a_recipe(name):
    settings = load_settings()
    registry = CleanupRegistry()
    backend = create_backend(settings, name, settings.profile(None, name), registry=registry)
    assert isinstance(backend, Backend)  # the runtime-checkable protocol
    assert backend.registry is registry, "the cleanup registry is injected, never a module global"
    recipe = recipe_of(backend)
    assert recipe is not None and recipe["backend"] == name
    again = from_recipe(recipe, CleanupRegistry())  # what the run's supervisor does in its own process
    assert type(again) is type(backend) and again.name == name
    assert recipe_of(again) == recipe
