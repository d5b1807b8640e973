"""Runs that belong together: a failed run and the fix runs relaunched from it.

A relaunch records its lineage in the run store: the new run's ``meta.json``
has ``parent`` (and, from the app, ``fix``: the fix's label and changes); the
failed run's has ``relaunched_as`` (the latest one). Headless relaunches
(``sweepdeck run --retry RUN --fix N``) record only ``parent``; what they
changed is read from the two specs. This module answers, from the store
alone, "what was relaunched from this run, with which fix" — so the runs
list can group a family, the monitor can name it, and the same fix is not
launched twice without asking.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backends.store import RunRecord


@dataclass(frozen=True, slots=True)
class Relaunch:
    """One run relaunched from another.

    Attributes:
        id: The new run's id.
        parent: The run it was relaunched from.
        label: The fix's label (``Reduce context``), or a description of its changes.
        changes: Field path → value the fix set (``engine.max_model_len`` → 2048).
        state: The new run's state.
        started: When it started (epoch seconds), if known.
    """

    id: str
    parent: str
    label: str
    changes: dict[str, Any] = field(default_factory=dict)
    state: str = ""
    started: float | None = None

    def same_fix(self, changes: Mapping[str, Any]) -> bool:
        """Whether this relaunch set every one of ``changes`` to the same value."""
        if not changes:
            return False
        return all(path in self.changes and _same(self.changes[path], value) for path, value in changes.items())


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return [str(x) for x in a] == [str(x) for x in b]
    return str(a) == str(b)


def relaunch_of(record: RunRecord, parent: RunRecord | None = None) -> Relaunch | None:
    """The lineage ``record`` carries, or None when it was not relaunched from another run."""
    meta = record.meta
    parent_id = meta.get("parent")
    if not parent_id:
        return None
    fix = meta.get("fix") if isinstance(meta.get("fix"), dict) else None
    changes: dict[str, Any] = dict(fix.get("changes") or {}) if fix else {}
    label = str(fix.get("label") or "") if fix else ""
    if not changes and parent is not None:
        changes = _spec_changes(record, parent)
    if not label:
        label = ", ".join(f"{_short(k)}={v}" for k, v in changes.items()) or "relaunch"
    return Relaunch(str(record.id), str(parent_id), label, changes, str(meta.get("state") or ""), record.started)


def _short(path: str) -> str:
    return path.split(".", 1)[1] if path.startswith(("engine.", "workload.")) else path


def _spec_changes(record: RunRecord, parent: RunRecord) -> dict[str, Any]:
    """What the relaunch changed, read from the two saved specs (headless relaunches record no fix)."""
    try:
        new, old = record.spec(), parent.spec()
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    from config.errors import SweepdeckError

    try:
        return {c.field: c.value for c in new.diff(old) if c.field not in ("experiment_id", "parent")}
    except SweepdeckError:
        return {}


def relaunches(records: Iterable[RunRecord], run_id: str) -> list[Relaunch]:
    """Every run relaunched from ``run_id``, oldest first."""
    records = list(records)
    by_id = {r.id: r for r in records}
    out = []
    for record in records:
        if record.meta.get("parent") == run_id:
            found = relaunch_of(record, by_id.get(run_id))
            if found is not None:
                out.append(found)
    return sorted(out, key=lambda r: r.started or 0)


def family_order(ids_started: Iterable[tuple[str, str | None, float | None]]) -> list[tuple[str, int]]:
    """Runs in list order with fix runs right under the run they fix: ``(id, depth)``.

    Args:
        ids_started: ``(id, parent id or None, started)`` of every run.

    A family (a run and everything relaunched from it, at any depth) is placed
    by its newest member, newest family first; inside it each run is followed
    by its relaunches, oldest first. A parent that is not listed (deleted)
    leaves its fix runs as runs of their own.
    """
    rows = list(ids_started)
    known = {run_id for run_id, _, _ in rows}
    children: dict[str, list[tuple[str, float]]] = {}
    roots: list[tuple[str, float]] = []
    for run_id, parent, started in rows:
        if parent and parent in known and parent != run_id:
            children.setdefault(parent, []).append((run_id, started or 0.0))
        else:
            roots.append((run_id, started or 0.0))

    def newest(run_id: str, start: float, seen: frozenset[str]) -> float:
        kids = [k for k in children.get(run_id, []) if k[0] not in seen]
        return max([start] + [newest(k, s, seen | {k}) for k, s in kids])

    def family_start(root: tuple[str, float]) -> float:
        # most runs have no relaunches: their own start, without the walk (10,000 runs are listed often)
        return newest(root[0], root[1], frozenset({root[0]})) if root[0] in children else root[1]

    out: list[tuple[str, int]] = []
    placed: set[str] = set()

    def walk(run_id: str, depth: int) -> None:
        if run_id in placed:  # a cycle in hand-edited metadata: each run once
            return
        placed.add(run_id)
        out.append((run_id, depth))
        for kid, _ in sorted(children.get(run_id, []), key=lambda k: k[1]):
            walk(kid, depth + 1)

    for root, _ in sorted(roots, key=family_start, reverse=True):
        walk(root, 0)
    for run_id, _, _ in rows:  # only in a cycle: no root leads to it
        walk(run_id, 0)
    return out


__all__ = ["Relaunch", "family_order", "relaunch_of", "relaunches"]
