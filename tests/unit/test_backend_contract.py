"""Every registered backend keeps the one contract (backends/base.py), so the session, the supervisor
and the UI can drive any of them the same way: a new backend that misses a part fails here."""

from __future__ import annotations

import inspect

import pytest

from backends.base import OPTIONAL_FIELDS, OTLP_FLAG, Backend, BackendBase, demonstration
from backends.cleanup import CleanupRegistry
from backends.registry import BACKENDS, backend_class, create_backend, from_recipe, recipe_of
from config.errors import SweepdeckError
from config.settings import load_settings
from config.spec import build_spec

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


# ---------------------------------------------------------------- the description the UI reads


@pytest.mark.parametrize("name", NAMES)
def test_description_says_which_optional_fields_it_applies(name):
    cls = backend_class(name)
    assert cls.applies <= OPTIONAL_FIELDS, f"{name}.applies names fields that are not optional"
    for path in OPTIONAL_FIELDS:
        note = cls.unapplied(path)
        if path in cls.applies:
            assert note is None
        else:
            assert isinstance(note, str) and note, f"{name} must say how the review marks {path}"
    assert cls.unapplied("engine.tp") is None  # every backend applies the rest of the spec
    assert isinstance(cls.summary, str)


@pytest.mark.parametrize("name", NAMES)
def test_description_lists_the_vllm_arguments_it_sets_itself(name):
    cls = backend_class(name)
    settings = load_settings()
    spec = build_spec(settings.catalogs, "llama2-7b", backend=name)
    assert spec.profile_template is None
    rows = cls.auto_args(spec, settings)
    assert all(flag.startswith("--") and shown for flag, shown in rows), rows
    assert len({flag for flag, _ in rows}) == len(rows)
    # a backend with a trace collector says so for a spec that has no inference-perf template
    assert (OTLP_FLAG in dict(rows)) == cls.traces_collector
    # the wizard may have no settings (a state built in a test): the description still answers
    assert all(flag.startswith("--") for flag, _ in cls.auto_args(spec, None))


@pytest.mark.parametrize("name", NAMES)
def test_a_simulator_backend_demonstrates_a_failure_and_the_others_refuse(name):
    settings = load_settings()
    registry = CleanupRegistry()
    profile = settings.profile(None, name)
    backend = create_backend(settings, name, profile, registry=registry)
    simulator = "simulator" in type(backend).capabilities
    assert type(backend).runs_simulator(profile) is (simulator and profile.get("server", "sim") == "sim")
    if not simulator:
        with pytest.raises(SweepdeckError, match="no simulator"):
            demonstration(backend, "oom")
        return
    demo = demonstration(backend, "oom")
    assert type(demo) is type(backend) and demo is not backend and demo.registry is registry
    # the run's supervisor rebuilds the backend from its recipe: the demonstration must survive that
    again = from_recipe(recipe_of(demo), CleanupRegistry())
    assert recipe_of(again) == recipe_of(demo) != recipe_of(backend)
    assert "oom" in str(recipe_of(again)["options"])


def test_a_backend_that_is_not_a_backend_base_has_no_simulator():
    class Double:
        name = "double"

    with pytest.raises(SweepdeckError, match="double backend has no simulator"):
        demonstration(Double(), "oom")  # type: ignore[arg-type]  # a test double, not a Backend
