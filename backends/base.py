"""The one Backend protocol every backend implements, and a base class with real defaults.

Lifecycle: ``preflight(spec)`` → ``launch(spec, store)`` → iterate
``events(run)`` until :class:`~backends.events.Finished` → ``cleanup(run)``.
``cancel(run)`` asks the run to stop (its events then end with a
``cancelled`` Finished); ``attach(record)`` rebuilds a :class:`Run` from a
saved session so a run whose supervisor is gone can be followed again.

:class:`BackendBase` is what the four registered backends derive from: it
holds the settings, the profile, the cleanup registry and the backend's
options, and gives the optional capabilities a real default — ``recipe()``
(how the run's supervisor, another process, builds the same backend),
``remedy()`` (none offered), ``leftovers()``/``clean_leftovers()`` (what a
crashed run may have left, from the resources its registry recorded).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

from backends.cleanup import REGISTRY, CleanupRegistry
from backends.events import Event

if TYPE_CHECKING:
    from backends.store import RunDir, RunRecord
    from config.settings import Profile, Settings
    from config.spec import ExperimentSpec

CheckStatus = Literal["pass", "warn", "fail"]

#: Spec fields not every backend applies: the vLLM container's memory and CPU (limit = request). A backend
#: lists the ones it enforces in :attr:`BackendBase.applies`; the others stay in the spec and the run's record.
OPTIONAL_FIELDS: frozenset[str] = frozenset({"engine.memory", "engine.cpu"})

#: The flag a pipeline backend's collector sets on vLLM (see :attr:`BackendBase.traces_collector`).
OTLP_FLAG = "--otlp-traces-endpoint"


@dataclass(slots=True)
class Remedy:
    """An action pre-flight can take for the user to clear a check (asked first, never automatic).

    Args:
        id: What to do, as the backend's :meth:`Backend.remedy` knows it
            (``create_namespace``, ``populate``).
        label: A short name for a key hint or a button (``Create namespace mert``).
        question: The confirmation shown before it is done; says exactly what
            will change (``Populate llama3-70b-v2 with 1,800 configs (…)?``).
        args: What the backend needs to do it (``{"namespace": "mert"}``).
    """

    id: str
    label: str
    question: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Check:
    """One pre-flight check result.

    Args:
        name: What was checked (``Port 58000 free``).
        status: ``pass``, ``warn`` or ``fail``; a fail blocks launch, a warn
            may be overridden by the user.
        detail: What was found.
        fix: What to do about a warn/fail (may be a command or YAML to apply).
        data: Machine-readable extras (e.g. ``{"next_free_port": 58001}``).
        remedy: An action the backend can take to clear this check, offered
            to the user (see :meth:`Backend.remedy`); None when only the user can.
    """

    name: str
    status: CheckStatus
    detail: str = ""
    fix: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    remedy: Remedy | None = None

    @property
    def ok(self) -> bool:
        return self.status != "fail"


def blocking(checks: list[Check]) -> list[Check]:
    """The checks that block a launch."""
    return [c for c in checks if c.status == "fail"]


@dataclass(slots=True)
class Run:
    """A launched experiment.

    Args:
        id: The experiment id (also the run store directory name).
        backend: Backend name.
        spec: The resolved spec it was launched with.
        store: Its run store directory.
        handle: Backend-specific, JSON-serialisable identifiers (pid, job id,
            PipelineRun name...). Saved in the run's handle file for attach.
        started: Epoch seconds.
    """

    id: str
    backend: str
    spec: ExperimentSpec
    store: RunDir
    handle: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    detached: bool = False


@runtime_checkable
class Backend(Protocol):
    """What the TUI and the headless CLI drive. No backend imports textual."""

    name: str

    async def preflight(self, spec: ExperimentSpec) -> list[Check]:
        """Check everything that can be checked before launching; never changes anything."""
        ...

    async def launch(self, spec: ExperimentSpec, store: RunDir) -> Run:
        """Start the experiment in run directory ``store``; register every created resource's cleanup."""
        ...

    def events(self, run: Run) -> AsyncIterator[Event]:
        """Yield events until (and including) one Finished."""
        ...

    async def cancel(self, run: Run, *, graceful: bool = True) -> None:
        """Ask the run to stop.

        Args:
            run: The run.
            graceful: Let the run's own clean-up steps run first (Tekton's
                ``finally`` tasks, Argo's exit handler); False stops at once
                where the backend makes a difference (``Cancelled``).
        """
        ...

    async def cleanup(self, run: Run) -> None:
        """Remove everything the run created (idempotent)."""
        ...

    async def attach(self, saved: RunRecord) -> Run:
        """Re-open a run from its saved session (its supervisor is gone but the run may not be)."""
        ...


class BackendBase:
    """Shared state and real defaults of the registered backends.

    Args:
        settings: The user settings.
        profile: The backend's profile.
        registry: Cleanup registry (the process-wide one by default; in a run's
            supervisor that is the run's own).
        options: Backend options beyond the profile (the local backend's
            ``sim_args``); JSON-ready, so the supervisor can rebuild the backend.
    """

    name: ClassVar[str] = ""
    #: A graceful cancel lets the run's own clean-up steps run (Tekton ``finally`` tasks, Argo's exit
    #: handler) and its events go on until they are done; False: the events end right after the cancel.
    graceful_cancel_drains: ClassVar[bool] = False
    #: What the UI may offer for this backend's runs, by name (the UI never asks a backend's name):
    #: ``work_queue`` — its runs sweep a work queue (the sweep view; :meth:`reader` makes its reader);
    #: ``simulator`` — it can run the built-in simulator, which demonstrates a failure on request
    #: (:meth:`runs_simulator` says whether a profile does; :meth:`demonstrating` makes that backend).
    capabilities: ClassVar[frozenset[str]] = frozenset()
    #: The :data:`OPTIONAL_FIELDS` this backend enforces (the others are recorded, not applied).
    applies: ClassVar[frozenset[str]] = frozenset()
    #: What the review says of an optional field this backend does not apply ("" → ``not applied by NAME``).
    unapplied_word: ClassVar[str] = ""
    #: Its runs start a trace collector that sets ``--otlp-traces-endpoint`` on vLLM (a pipeline's
    #: collector; with an inference-perf values file only when the values ask for it, ``stack.tracing``).
    traces_collector: ClassVar[bool] = False
    #: Where its runs go, in a few words, for the backend chooser's line of the embedded profile
    #: (the one it runs without a profile of the user's); "" when it has none.
    summary: ClassVar[str] = ""

    def __init__(
        self, settings: Settings, profile: Profile, *, registry: CleanupRegistry | None = None, **options: Any
    ) -> None:
        self.settings = settings
        self.profile = profile
        self.registry = registry if registry is not None else REGISTRY
        self.options = options

    def recipe(self) -> dict[str, Any]:
        """How another process builds this same backend (see :func:`backends.registry.from_recipe`)."""
        return {
            "backend": self.name,
            "profile": {"name": self.profile.name, "backend": self.profile.backend,
                        "options": dict(self.profile.options)},
            "config": str(self.settings.path) if self.settings.path else None,
            "catalog_dir": str(self.settings.catalog_dir) if self.settings.catalog_dir else None,
            "options": dict(self.options),
        }

    # ------------------------------------------------------------ description (class-level)

    @classmethod
    def unapplied(cls, path: str) -> str | None:
        """What the review says of spec field ``path`` when this backend does not apply it; None when it does
        (every field but the :data:`OPTIONAL_FIELDS` is applied by every backend)."""
        if path not in OPTIONAL_FIELDS or path in cls.applies:
            return None
        return cls.unapplied_word or f"not applied by {cls.name}"

    @classmethod
    def auto_args(cls, spec: ExperimentSpec, settings: Settings | None) -> list[tuple[str, str]]:
        """The vLLM arguments this backend sets itself for ``spec``: ``(flag, what the review shows)``.

        Args:
            spec: The experiment.
            settings: The user settings (the profile's own options and values file), None when unknown.
        """
        if not cls.traces_collector:
            return []
        if spec.profile_template is not None:
            values = (settings.base_values(spec.backend, spec.profile) if settings is not None else None) or {}
            if not (values.get("stack") or {}).get("tracing"):
                return []
        return [(OTLP_FLAG, "(pipeline collector)")]

    @classmethod
    def runs_simulator(cls, profile: Profile) -> bool:
        """Does a run with ``profile`` start the built-in simulator (so a failure can be demonstrated)?"""
        return False

    def demonstrating(self, failure: str) -> BackendBase:
        """This backend again, its simulator told to show ``failure`` (``sim serve --fail FAILURE``).

        Raises:
            SweepdeckError: this backend runs no simulator.
        """
        raise _no_simulator(self.name)

    # ------------------------------------------------------------ optional capabilities

    async def remedy(self, spec: ExperimentSpec, remedy: Remedy) -> str:
        """Carry out a pre-flight remedy; this backend offers none."""
        from config.errors import SweepdeckError

        raise SweepdeckError(f"The {self.name} backend cannot {remedy.label.lower()}.",
                             "Do it by hand, then re-run pre-flight.")

    def describe(self, spec: ExperimentSpec | None, handle: dict[str, Any] | None,
                 meta: dict[str, Any] | None) -> str | None:
        """A run's facts for the monitor's header when the engine settings do not describe it
        (a Tekton matrix PipelineRun: ``4 tasks · 36 combinations · PipelineRun X in NS``); None: they do."""
        return None

    async def clean_leftover(self, resource: dict[str, Any]) -> str | None:
        """Remove one resource a crashed run left (see :mod:`backends.supervisor.reconcile`).

        Returns:
            What was done, or None when this backend does not know the kind
            (local processes are handled before a backend is asked).
        """
        return None

    async def leftover_alive(self, resource: dict[str, Any]) -> bool | None:
        """Is a remote resource of a crashed run still there? None when unknown."""
        return None


async def apply_remedy(backend: Backend, spec: ExperimentSpec, remedy: Remedy) -> str:
    """Carry out a pre-flight :class:`Remedy` the user confirmed; returns what was done.

    Backends that offer remedies implement ``async remedy(spec, remedy) -> str``
    (:class:`BackendBase` says it has none to offer).

    Raises:
        SweepdeckError: the backend cannot do it, or doing it failed.
    """
    from config.errors import SweepdeckError

    handler = getattr(backend, "remedy", None)
    if handler is None:
        raise SweepdeckError(f"The {backend.name} backend cannot {remedy.label.lower()}.",
                             "Do it by hand, then re-run pre-flight.")
    return await handler(spec, remedy)


def demonstration(backend: Backend, failure: str) -> BackendBase:
    """``backend`` again, its built-in simulator demonstrating ``failure`` (see :meth:`BackendBase.demonstrating`).

    Raises:
        SweepdeckError: the backend runs no simulator (a backend that is not a :class:`BackendBase` has none).
    """
    if not isinstance(backend, BackendBase):
        raise _no_simulator(backend.name)
    return backend.demonstrating(failure)


def _no_simulator(name: str) -> Exception:
    from config.errors import SweepdeckError

    return SweepdeckError(f"The {name} backend has no simulator to demonstrate a failure with.",
                          "Demonstrations run on the local backend with the built-in simulator.")
