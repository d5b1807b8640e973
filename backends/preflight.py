"""Pre-flight: the backend's own checks plus the ones every launch needs.

The TUI's pre-flight step, ``sweepdeck run`` and the other headless launchers
all call :func:`run_preflight`, so a check added here is made everywhere.
Nothing here changes anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backends.base import Check

if TYPE_CHECKING:
    from backends.base import Backend
    from backends.store import RunStore
    from config.spec import ExperimentSpec


def state_dir_check(store: RunStore) -> Check:
    """Can the run store keep this run (writable, with some free space)?"""
    ok, detail = store.check_writable()
    if ok:
        return Check("Run store writable", "pass", detail)
    return Check(
        "Run store writable", "fail", detail,
        "Free some space or fix the permissions, or point SWEEPDECK_STATE_DIR at a writable directory.",
    )


async def run_preflight(backend: Backend, spec: ExperimentSpec, store: RunStore | None = None) -> list[Check]:
    """Every pre-flight check for launching ``spec`` on ``backend``."""
    if store is None:
        from backends.store import RunStore

        store = RunStore()
    checks = list(await backend.preflight(spec))
    from backends.planning import planner_check

    memory = planner_check(spec, getattr(backend, "settings", None))
    if memory is not None and all(c.name != memory.name for c in checks):
        checks.append(memory)
    checks.append(state_dir_check(store))
    return checks


__all__ = ["run_preflight", "state_dir_check"]
