"""Matrix PipelineRuns: count their combinations and limit how many run at once.

A Tekton matrix task (``matrix.params`` and/or ``matrix.include``) fans out
into every combination at the same time. :func:`transform` rewrites such a
PipelineRun (the Tekton PoC's ``transform-pr``):

* ``unroll=[P1, P2]``: one task per combination of the values of P1, P2, each
  keeping a matrix over the remaining parameters; they run one after another
  (or ``limit`` at a time);
* no ``unroll``: full expansion, one task per combination, at most ``limit``
  (default 1, as upstream) running at once: *barrier* (each batch of N waits
  for the whole previous batch) or *sliding window* (task i waits for task i-N).

The new tasks are named as the upstream script names them: ``<task>-<i>``
(``run-experiment-0``), in combination order. Beyond the upstream script:
``matrix.include`` entries, a matrix task that is not the first task (the
others are kept, and tasks that ran after it run after all of its
replacements), and ``limit`` with ``unroll``.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

from config.errors import SweepdeckError

Combo = list[dict[str, Any]]  # [{"name": ..., "value": ...}, ...]


def _spec(pr: dict[str, Any]) -> dict[str, Any]:
    spec = (pr.get("spec") or {}).get("pipelineSpec")
    if not isinstance(spec, dict):
        ref = (pr.get("spec") or {}).get("pipelineRef")
        if isinstance(ref, dict):
            what = (f"pipelineRef {ref.get('name')!r}" if ref.get("name")
                    else f"a pipelineRef through the {ref.get('resolver', '?')} resolver")
            raise SweepdeckError(
                f"The PipelineRun refers to its Pipeline ({what}); "
                "transform-pr cannot change a Pipeline it does not have.",
                "Supported: a PipelineRun with the Pipeline embedded as spec.pipelineSpec and the matrix task "
                "under its tasks. Embed the Pipeline's spec (e.g. from the Pipeline YAML) as spec.pipelineSpec, "
                "then transform.",
            )
        raise SweepdeckError(
            "The PipelineRun has no embedded spec.pipelineSpec to transform.",
            "transform-pr works on PipelineRuns whose matrix task is inline (pipelineSpec.tasks).",
        )
    return spec


def matrix_tasks(pr: dict[str, Any]) -> list[dict[str, Any]]:
    """The tasks of the PipelineRun's pipelineSpec that carry a matrix."""
    return [t for t in _spec(pr).get("tasks") or [] if isinstance(t, dict) and t.get("matrix")]


def combinations(matrix: dict[str, Any]) -> list[tuple[str | None, Combo]]:
    """Every combination a matrix runs, in Tekton's order: ``(include name, params)``.

    ``matrix.params`` gives the Cartesian product (parameter order as written,
    values in order); a ``matrix.include`` entry adds its extra params to the
    combinations it agrees with, or is a combination of its own.
    """
    params = matrix.get("params") or []
    names = [p["name"] for p in params]
    combos: list[tuple[str | None, Combo]] = []
    if params:
        for values in itertools.product(*[list(p.get("value") or []) for p in params]):
            combos.append((None, [{"name": n, "value": v} for n, v in zip(names, values, strict=True)]))
    base = len(combos)
    for entry in matrix.get("include") or []:
        extra = list(entry.get("params") or [])
        overlap = [p for p in extra if p["name"] in names]
        added = [p for p in extra if p["name"] not in names]
        merged = False
        for i in range(base):
            label, combo = combos[i]
            current = {c["name"]: c["value"] for c in combo}
            if all(current.get(p["name"]) == p["value"] for p in overlap):
                # no overlap: the extras go into every combination; else only where they agree
                combos[i] = (label or entry.get("name"), combo + copy.deepcopy(added))
                merged = True
        if not merged:
            combos.append((entry.get("name"), copy.deepcopy(extra)))
    return combos


def count(pr: dict[str, Any]) -> int:
    """How many TaskRuns the matrix tasks of ``pr`` start (for done/total progress; 0 for a pipelineRef)."""
    if not isinstance((pr.get("spec") or {}).get("pipelineSpec"), dict):
        return 0  # the Pipeline is on the cluster: its matrix is not known here
    return sum(len(combinations(t["matrix"])) for t in matrix_tasks(pr))


def units(pr: dict[str, Any]) -> list[str]:
    """The row name of every TaskRun the PipelineRun starts: ``<task>-<i>`` per matrix
    combination, else the task's name; ``tasks`` then ``finally`` ([] for a pipelineRef)."""
    spec = (pr.get("spec") or {}).get("pipelineSpec")
    if not isinstance(spec, dict):
        return []
    out: list[str] = []
    for section in ("tasks", "finally"):
        for t in spec.get(section) or []:
            if not isinstance(t, dict) or "name" not in t:
                continue
            n = len(combinations(t["matrix"])) if t.get("matrix") else 0
            out += [f"{t['name']}-{i}" for i in range(n)] if n else [t["name"]]
    return out


def facts(pr: dict[str, Any]) -> dict[str, Any]:
    """What a monitor shows of a ready PipelineRun and what its log sources need.

    Returns:
        ``tasks`` (pipeline tasks, finally excluded), ``taskruns`` (what
        :func:`units` counts), ``combinations`` (TaskRuns of the matrix tasks)
        and ``params`` (matrix task → the names of its matrix parameters,
        those that tell its TaskRuns apart).
    """
    spec = (pr.get("spec") or {}).get("pipelineSpec")
    if not isinstance(spec, dict):
        return {"tasks": 0, "taskruns": 0, "combinations": 0, "params": {}}
    tasks = [t for t in spec.get("tasks") or [] if isinstance(t, dict) and "name" in t]
    params: dict[str, list[str]] = {}
    for t in tasks + [t for t in spec.get("finally") or [] if isinstance(t, dict) and "name" in t]:
        m = t.get("matrix")
        if m:
            names = [p["name"] for p in m.get("params") or []]
            for entry in m.get("include") or []:
                names += [p["name"] for p in entry.get("params") or [] if p["name"] not in names]
            params[t["name"]] = names
    return {"tasks": len(tasks), "taskruns": len(units(pr)), "combinations": count(pr), "params": params}


def transform(
    pr: dict[str, Any],
    unroll: list[str] | None = None,
    limit: int | None = None,
    sliding_window: bool = False,
    task: str | None = None,
) -> dict[str, Any]:
    """A new PipelineRun with the matrix task unrolled / expanded (see module docs).

    As the Tekton PoC's ``transform-pr-parallel.py``: the new tasks are named
    ``<task>-0``, ``<task>-1``... in combination order, and with no options the
    matrix is fully expanded and run one task at a time (``-n 1``).

    Raises:
        SweepdeckError: no matrix task, an unknown parameter to unroll, a bad
            limit, or a new name that another task already has.
    """
    if limit is not None and limit < 1:
        raise SweepdeckError(f"-n must be at least 1, not {limit}.")
    out = copy.deepcopy(pr)
    spec = _spec(out)
    original = _matrix_task(spec, task)
    new_tasks = _unroll(original, unroll) if unroll else _expand(original)
    names = [t["name"] for t in new_tasks]
    taken = sorted({name for t in (spec.get("tasks") or []) + (spec.get("finally") or [])
                    if isinstance(t, dict) and t is not original and isinstance(name := t.get("name"), str)}
                   & set(names))
    if taken:
        raise SweepdeckError(
            f"The new task names {', '.join(taken)} are already used by other tasks of the PipelineRun.",
            f"Rename the matrix task {original['name']!r} or those tasks.",
        )
    _sequence(new_tasks, original.get("runAfter") or [], limit or 1, sliding_window)
    tasks: list[dict[str, Any]] = []
    for t in spec.get("tasks") or []:
        if t is original:
            tasks.extend(new_tasks)
            continue
        after = t.get("runAfter") if isinstance(t, dict) else None
        if after and original["name"] in after:
            t["runAfter"] = [a for a in after if a != original["name"]] + names
        tasks.append(t)
    spec["tasks"] = tasks
    return out


def _matrix_task(spec: dict[str, Any], task: str | None) -> dict[str, Any]:
    """The one matrix task under ``tasks`` to transform (``task`` names it when there are several)."""
    candidates = [t for t in spec.get("tasks") or [] if isinstance(t, dict) and t.get("matrix")]
    if task:
        candidates = [t for t in candidates if t.get("name") == task]
    if not candidates:
        in_finally = [t["name"] for t in spec.get("finally") or []
                      if isinstance(t, dict) and t.get("matrix") and (not task or t.get("name") == task)]
        if in_finally:
            # Tekton forbids runAfter in finally: their order cannot be limited
            raise SweepdeckError(
                f"The matrix task {in_finally[0]!r} is in finally; transform-pr only limits matrix tasks under "
                "pipelineSpec.tasks.",
                "Finally tasks all start together and cannot have runAfter, so their parallelism cannot be limited. "
                "Move the matrix task to spec.pipelineSpec.tasks (runAfter the tasks it follows), or run it as it is.",
            )
        raise SweepdeckError("The PipelineRun has no matrix task" + (f" named {task!r}." if task else "."))
    if len(candidates) > 1:
        raise SweepdeckError(
            "The PipelineRun has several matrix tasks: " + ", ".join(t["name"] for t in candidates) + ".",
            "Choose one with --task NAME.",
        )
    return candidates[0]


def _unroll(task: dict[str, Any], unroll: list[str]) -> list[dict[str, Any]]:
    matrix = task["matrix"]
    params = matrix.get("params") or []
    by_name = {p["name"]: p for p in params}
    unknown = [u for u in unroll if u not in by_name]
    if unknown:
        known = ", ".join(by_name) or "(none: the matrix only has include entries)"
        raise SweepdeckError(f"Cannot unroll {', '.join(unknown)}: not a matrix parameter of {task['name']}.",
                             f"Matrix parameters: {known}.")
    chosen = [p["name"] for p in params if p["name"] in unroll]  # the file's order, as the upstream script
    keep = [p for p in params if p["name"] not in unroll]
    out = []
    for i, values in enumerate(itertools.product(*[list(_values(by_name[u])) for u in chosen])):
        t = copy.deepcopy(task)
        t["name"] = f"{task['name']}-{i}"
        fixed = [{"name": u, "value": v} for u, v in zip(chosen, values, strict=True)]
        t["params"] = list(t.get("params") or []) + fixed
        new_matrix = {k: v for k, v in matrix.items() if k not in ("params", "include")}
        if keep:
            new_matrix["params"] = copy.deepcopy(keep)
        includes = [inc for inc in matrix.get("include") or [] if _agrees(inc, dict(zip(chosen, values, strict=True)))]
        if includes:
            new_matrix["include"] = copy.deepcopy(includes)
        if new_matrix.get("params") or new_matrix.get("include"):
            t["matrix"] = new_matrix
        else:
            t.pop("matrix", None)
        out.append(t)
    return out


def _values(param: dict[str, Any]) -> list[Any]:
    value = param.get("value")
    return list(value) if isinstance(value, list) else [value]


def _agrees(include: dict[str, Any], fixed: dict[str, Any]) -> bool:
    return all(fixed.get(p["name"], p["value"]) == p["value"] for p in include.get("params") or [])


def _expand(task: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for i, (_label, combo) in enumerate(combinations(task["matrix"])):
        t = copy.deepcopy(task)
        t.pop("matrix", None)
        t["name"] = f"{task['name']}-{i}"
        t["params"] = list(t.get("params") or []) + copy.deepcopy(combo)
        out.append(t)
    return out


def _sequence(tasks: list[dict[str, Any]], first_after: list[str], limit: int, sliding: bool) -> None:
    """Set runAfter so at most ``limit`` of ``tasks`` run at once."""
    for i, t in enumerate(tasks):
        if i < limit:
            after = list(first_after)
        elif sliding:
            after = [tasks[i - limit]["name"]]
        else:
            batch = i // limit
            after = [x["name"] for x in tasks[(batch - 1) * limit: batch * limit]]
        if after:
            t["runAfter"] = after
        else:
            t.pop("runAfter", None)
