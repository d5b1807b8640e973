"""The one Backend protocol every backend implements.

Lifecycle: ``preflight(spec)`` → ``launch(spec)`` → iterate ``events(run)``
until :class:`~backends.events.Finished` → ``cleanup(run)``. ``cancel(run)``
asks the run to stop (its events then end with a ``cancelled`` Finished);
``attach(record)`` rebuilds a :class:`Run` from a saved session so a detached
run can be watched again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator, Literal, Protocol, runtime_checkable

from backends.events import Event

if TYPE_CHECKING:
    from backends.store import RunDir, RunRecord
    from config.spec import ExperimentSpec

CheckStatus = Literal["pass", "warn", "fail"]


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
            PipelineRun name...). Saved in the session file for attach.
        started: Epoch seconds.
    """

    id: str
    backend: str
    spec: "ExperimentSpec"
    store: "RunDir"
    handle: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    detached: bool = False


@runtime_checkable
class Backend(Protocol):
    """What the TUI and the headless CLI drive. No backend imports textual."""

    name: str

    async def preflight(self, spec: "ExperimentSpec") -> list[Check]:
        """Check everything that can be checked before launching; never changes anything."""
        ...

    async def launch(self, spec: "ExperimentSpec") -> Run:
        """Start the experiment; register every created resource's cleanup."""
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

    async def attach(self, saved: "RunRecord") -> Run:
        """Re-open a detached run from its saved session."""
        ...


async def apply_remedy(backend: Backend, spec: "ExperimentSpec", remedy: Remedy) -> str:
    """Carry out a pre-flight :class:`Remedy` the user confirmed; returns what was done.

    Backends that offer remedies implement ``async remedy(spec, remedy) -> str``
    (it is not part of the protocol: most backends have nothing to offer).

    Raises:
        SweepdeckError: the backend cannot do it, or doing it failed.
    """
    from config.errors import SweepdeckError

    handler = getattr(backend, "remedy", None)
    if handler is None:
        raise SweepdeckError(f"The {backend.name} backend cannot {remedy.label.lower()}.", "Do it by hand, then re-run pre-flight.")
    return await handler(spec, remedy)
