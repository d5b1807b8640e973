"""Where a run's supervisor runs: a process of its own, or (for test doubles) this one.

:class:`ProcessLauncher` is what every registered backend gets: it writes
the launch request (``launch.json``: the backend's recipe, the options) into
the run directory and starts ``python -m backends.supervisor RUN_DIR`` in a
session of its own (``setsid``: no terminal, no terminal signals), handing it
one end of a socket pair as its lifeline. The supervisor outlives the client;
the client may die at any moment.

:class:`InProcessLauncher` runs the same :class:`Supervisor` as a task in the
caller's event loop, over the same socket pair and protocol. It is for a
backend object that cannot be described to another process (a test double
without ``recipe()``): such a run lives only as long as the caller.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from backends.registry import recipe_of
from config.errors import SweepdeckError

if TYPE_CHECKING:
    from backends.base import Backend
    from backends.cleanup import CleanupRegistry
    from backends.store import RunDir, RunRecord, RunStore
    from config.spec import ExperimentSpec

#: The project root, for the supervisor process to import the same packages as its client.
ROOT = str(Path(__file__).resolve().parent.parent.parent)


class Launcher(Protocol):
    """Starts a run's supervisor; returns the client's end of the lifeline (and the process, if any)."""

    async def start(
        self, run_dir: RunDir, backend: Backend, spec: ExperimentSpec, *, store: RunStore,
        default_image: str | None = None, adopt: RunRecord | None = None,
    ) -> tuple[socket.socket, Any]: ...


class ProcessLauncher:
    """The supervisor as a process of its own (see module docs).

    Args:
        python: The interpreter (default: this one).
    """

    def __init__(self, python: str | None = None) -> None:
        self.python = python or sys.executable

    async def start(
        self, run_dir: RunDir, backend: Backend, spec: ExperimentSpec, *, store: RunStore,
        default_image: str | None = None, adopt: RunRecord | None = None,
    ) -> tuple[socket.socket, Any]:
        recipe = recipe_of(backend)
        if recipe is None:
            raise SweepdeckError(
                f"The {backend.name} backend cannot be run by a supervisor process (it has no recipe)."
            )
        run_dir.write_json("launch.json", {
            "recipe": recipe, "default_image": default_image, "adopt": adopt is not None,
            "state_root": str(store.root.parent),
        })
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        try:
            with open(run_dir.path / "supervisor.log", "ab") as log_fh:
                os.chmod(run_dir.path / "supervisor.log", 0o600)
                process = subprocess.Popen(
                    [self.python, "-m", "backends.supervisor", str(run_dir.path), "--lifeline-fd",
                     str(theirs.fileno())],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log_fh, env=env,
                    pass_fds=(theirs.fileno(),), start_new_session=True, close_fds=True, cwd="/",
                )
        except OSError as exc:
            ours.close()
            raise SweepdeckError(f"Cannot start the run's supervisor: {exc.strerror or exc}.") from None
        finally:
            theirs.close()
        return ours, process


class InProcessLauncher:
    """The supervisor as a task in this event loop (for backends without a recipe; see module docs).

    Args:
        registry: The run's cleanup registry (a new one by default).
        listen: Serve the run's control socket for other clients too.
    """

    def __init__(self, registry: CleanupRegistry | None = None, *, listen: bool = True) -> None:
        self.registry = registry
        self.listen = listen
        self.supervisors: list[Any] = []
        self._tasks: set[asyncio.Task] = set()

    async def start(
        self, run_dir: RunDir, backend: Backend, spec: ExperimentSpec, *, store: RunStore,
        default_image: str | None = None, adopt: RunRecord | None = None,
    ) -> tuple[socket.socket, Any]:
        from backends.cleanup import CleanupRegistry
        from backends.supervisor.supervisor import Supervisor

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        registry = self.registry if self.registry is not None else getattr(backend, "registry", None)
        supervisor = Supervisor(
            run_dir, backend, spec, store=store, registry=registry if registry is not None else CleanupRegistry(),
            lifeline=theirs, adopt=adopt, default_image=default_image, listen=self.listen,
        )
        self.supervisors.append(supervisor)
        task = asyncio.ensure_future(supervisor.serve())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return ours, _TaskHandle(task)


class _TaskHandle:
    """What a client may do to an in-process supervisor that hangs (what a Popen offers for a process)."""

    def __init__(self, task: asyncio.Task) -> None:
        self.task = task

    def poll(self) -> int | None:
        return 0 if self.task.done() else None

    def terminate(self) -> None:
        self.task.cancel()  # the session cancels the run and cleans up (see Session.follow)

    def kill(self) -> None:
        self.task.cancel()


def default_launcher(backend: Backend) -> Launcher:
    """A process for every backend that has a recipe; this loop for one that has none (a test double)."""
    if recipe_of(backend) is not None:
        return ProcessLauncher()
    return InProcessLauncher()


__all__ = ["InProcessLauncher", "Launcher", "ProcessLauncher", "default_launcher"]
