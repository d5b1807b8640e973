"""Reconciliation: a run whose supervisor is gone is never shown as running.

On every start of the TUI, ``sweepdeck runs`` and ``sweepdeck attach``, each
run in a live state (``created``, ``launching``, ``running``, ``detached``…)
whose supervisor process is gone (checked by pid *and* start time) is
settled from what it saved:

* its ``Finished`` event, if it got that far → ``succeeded`` / ``failed`` / ``cancelled``;
* else complete workload results (``results/results.json``) → ``succeeded``;
* else ``lost``.

Either way ``meta.json`` gets ``leftovers``: the resources its cleanup
registry still held (``resources.json``) that may still exist — local
processes only if the same process is still running; SLURM jobs,
PipelineRuns and Workflows by name, checked with their backend on request
(:func:`check_leftovers`). :func:`clean` removes them (``sweepdeck runs
--clean``, the runs screen's clean key).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backends.procs import same_process, stop_pid_sync
from backends.store import LIVE_STATES, RunDir, RunRecord, StoreWriteError

if TYPE_CHECKING:
    from backends.store import RunStore

log = logging.getLogger(__name__)

#: A run the client made moments ago may not have its supervisor yet.
STARTING_GRACE_S = 30.0
#: Bytes read from the end of events.jsonl to find the Finished event.
TAIL_BYTES = 256 * 1024


def supervisor_alive(meta: dict[str, Any]) -> bool:
    """Is the run's recorded supervisor still that process?"""
    sup = meta.get("supervisor")
    if not isinstance(sup, dict) or not sup.get("pid"):
        return False
    try:
        pid = int(sup["pid"])
    except (TypeError, ValueError):
        return False
    return same_process(pid, sup.get("start"))


def needs_reconcile(meta: dict[str, Any], now: float | None = None) -> bool:
    """A live-looking run whose supervisor is gone."""
    state = meta.get("state")
    if state not in LIVE_STATES:
        return False
    if supervisor_alive(meta):
        return False
    if not meta.get("supervisor") and state == "created":
        started = meta.get("started") or 0
        return (now or time.time()) - float(started) > STARTING_GRACE_S
    return True


def reconcile_dir(run_dir: RunDir, *, supervisor_gone: bool = False) -> dict[str, Any]:
    """Settle one run if its supervisor is gone; returns its (possibly updated) meta.

    Args:
        run_dir: The run.
        supervisor_gone: The caller knows the supervisor just ended (its link
            closed without a result): skip the liveness check.
    """
    meta = run_dir.meta()
    if meta.get("state") not in LIVE_STATES:
        return meta
    if not supervisor_gone and not needs_reconcile(meta):
        return meta
    if supervisor_gone and supervisor_alive(meta):
        return meta
    finished = last_finished(run_dir.path)
    leftovers = possible_leftovers(run_dir)
    if finished is not None and finished.get("outcome") in ("succeeded", "failed", "cancelled"):
        state, message = finished["outcome"], finished.get("message") or ""
    elif results_complete(run_dir.path):
        state, message = (
            "succeeded",
            "The workload completed (results saved); its supervisor ended before the run closed.",
        )
    else:
        state = "lost"
        message = "Its supervisor ended unexpectedly while the run was " + str(meta.get("state"))
        message += f"; {len(leftovers)} thing(s) it started may still exist." if leftovers else "."
    values: dict[str, Any] = {"state": state, "message": message, "reconciled": time.time(), "leftovers": leftovers,
                              "supervisor": None}
    if not meta.get("finished"):
        values["finished"] = time.time()
    try:
        return run_dir.update_meta(**values)
    except StoreWriteError as exc:
        log.warning("cannot record the reconciliation of %s: %s", run_dir.id, exc.message)
        meta.update(values)
        return meta


def reconcile_records(records: list[RunRecord]) -> list[RunRecord]:
    """The same records with every run whose supervisor is gone settled (only live-looking runs are checked),
    and local processes that have ended since dropped from the leftovers."""
    now = time.time()
    out = []
    for record in records:
        if needs_reconcile(record.meta, now):
            record = RunRecord(record.id, record.path, reconcile_dir(RunDir(record.path)))
        elif record.meta.get("leftovers"):
            record = _drop_ended_processes(record)
        out.append(record)
    return out


def _drop_ended_processes(record: RunRecord) -> RunRecord:
    """A lost run's local leftovers may have ended since (the guard ends a server after its supervisor)."""
    left = record.meta.get("leftovers") or []
    kept = [r for r in left if r.get("kind") != "pid" or same_process(int(r.get("pid") or 0), r.get("start"))]
    if len(kept) == len(left):
        return record
    try:
        meta = RunDir(record.path).update_meta(leftovers=kept)
    except StoreWriteError:
        meta = {**record.meta, "leftovers": kept}
    return RunRecord(record.id, record.path, meta)


def reconcile_store(store: RunStore) -> list[RunRecord]:
    """Every run of ``store``, newest first, reconciled."""
    return reconcile_records(store.list())


def last_finished(path: Path) -> dict[str, Any] | None:
    """The last Finished record of a run's event log (read from its end)."""
    log_path = path / "events.jsonl"
    try:
        with open(log_path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - TAIL_BYTES))
            tail = fh.read()
    except OSError:
        return None
    for raw in reversed(tail.split(b"\n")):
        if b'"Finished"' not in raw:
            continue
        with contextlib.suppress(ValueError):
            data = json.loads(raw)
            if isinstance(data, dict) and data.get("type") == "Finished":
                return data
    return None


def results_complete(path: Path) -> bool:
    """Did the workload finish and save its results (every request sent, some completed)?"""
    try:
        doc = json.loads((path / "results" / "results.json").read_text())
    except (OSError, ValueError):
        return False
    summary = doc.get("summary") if isinstance(doc, dict) else None
    if not isinstance(summary, dict):
        return False
    return int(summary.get("completed") or 0) > 0 and int(summary.get("not_sent") or 0) == 0 \
        and not int(summary.get("cancelled") or 0)


def possible_leftovers(run_dir: RunDir) -> list[dict[str, Any]]:
    """The resources the run's registry still held that may still exist.

    A local process counts only while the same process (pid and start time)
    runs; anything remote is listed (checked by :func:`check_leftovers`).
    """
    resources = run_dir.read_json("resources.json", None)
    if resources is None:  # a run from before supervisors recorded resources: what its handle file names
        resources = resources_from_session(run_dir.read_handle(), run_dir.meta())
    out = []
    for res in resources:
        if not isinstance(res, dict):
            continue
        if res.get("kind") == "pid":
            try:
                pid = int(res.get("pid") or 0)
            except (TypeError, ValueError):
                continue
            if not same_process(pid, res.get("start")):
                continue
        elif res.get("kind") in (None, "other", "listener", "connection"):
            continue  # in-process things: they died with the supervisor
        out.append(res)
    return out


def resources_from_session(session: dict[str, str], meta: dict[str, Any]) -> list[dict[str, Any]]:
    """What a run's handle file says it created (for runs that have no ``resources.json``)."""
    out: list[dict[str, Any]] = []
    if session.get("PID", "").isdigit():
        pgid = session.get("PGID", "")
        out.append({"kind": "pid", "pid": int(session["PID"]), "pgid": int(pgid) if pgid.isdigit() else None,
                    "start": session.get("PID_START") or None, "what": "local server"})
    if session.get("JOB_ID"):
        out.append({"kind": "slurm_job", "id": session["JOB_ID"], "host": session.get("HOST", ""),
                    "profile": session.get("PROFILE") or meta.get("profile")})
    namespace = session.get("NAMESPACE") or meta.get("namespace")
    if session.get("PIPELINERUN"):
        out.append({"kind": "pipelinerun", "name": session["PIPELINERUN"], "namespace": namespace})
    if session.get("WORKFLOW"):
        out.append({"kind": "workflow", "name": session["WORKFLOW"], "namespace": namespace})
    return out


def describe(resource: dict[str, Any]) -> str:
    """One line for a leftover (``SLURM job 42 on alvis``)."""
    kind = resource.get("kind")
    if kind == "pid":
        return f"process {resource.get('pid')} ({resource.get('what') or 'local'})"
    if kind == "slurm_job":
        return f"SLURM job {resource.get('id')}" + (f" on {resource['host']}" if resource.get("host") else "")
    if kind in ("pipelinerun", "workflow", "pod"):
        name = {"pipelinerun": "PipelineRun", "workflow": "Workflow", "pod": "pod"}[kind]
        return f"{name} {resource.get('name')}" + (f" in {resource['namespace']}" if resource.get("namespace") else "")
    return str(resource.get("label") or kind)


def backend_for_run(run_dir: RunDir, settings: Any = None) -> Any:
    """The run's backend, rebuilt from the recipe its launch saved, else from its backend and profile names.

    Raises:
        SweepdeckError: the run names no backend, or its profile is not configured any more.
    """
    from backends.registry import from_recipe, get_backend

    request = run_dir.read_json("launch.json", {}) or {}
    if request.get("recipe"):
        return from_recipe(request["recipe"])
    meta = run_dir.meta()
    if settings is None:
        from config.settings import load_settings

        settings = load_settings()
    return get_backend(settings, meta.get("backend"), meta.get("profile"))


async def check_leftovers(record: RunRecord) -> list[dict[str, Any]]:
    """The record's leftovers that still exist (remote ones asked of their backend; unknown ones kept)."""
    leftovers = list(record.meta.get("leftovers") or [])
    if not leftovers:
        return []
    run_dir = RunDir(record.path)
    backend = None
    out = []
    for res in leftovers:
        if res.get("kind") == "pid":
            if same_process(int(res.get("pid") or 0), res.get("start")):
                out.append(res)
            continue
        if backend is None:
            try:
                backend = backend_for_run(run_dir)
            except Exception as exc:  # listed as possibly alive when it cannot be asked
                log.warning("cannot rebuild the backend of %s: %s", record.id, exc)
        there = None
        if backend is not None:
            with contextlib.suppress(Exception):
                there = await backend.leftover_alive(res)
        if there is not False:
            out.append(res)
    with contextlib.suppress(StoreWriteError):
        run_dir.update_meta(leftovers=out)
    return out


async def clean(record: RunRecord) -> list[str]:
    """Remove what a lost (or reconciled) run left behind; returns a line per thing done.

    Raises:
        SweepdeckError: a remote leftover could not be removed (the rest are still tried; the
            message lists what failed).
    """
    from config.errors import SweepdeckError

    run_dir = RunDir(record.path)
    leftovers = list(record.meta.get("leftovers") or [])
    done: list[str] = []
    failed: list[str] = []
    remaining: list[dict[str, Any]] = []
    backend = None
    for res in leftovers:
        what = describe(res)
        if res.get("kind") == "pid":
            pgid = res.get("pgid")
            if stop_pid_sync(int(res.get("pid") or 0), res.get("start"), pgid=int(pgid) if pgid else None):
                done.append(f"stopped {what}")
            continue
        if backend is None:
            try:
                backend = backend_for_run(run_dir)
            except Exception as exc:  # reported below
                failed.append(f"{what}: cannot reach its backend ({exc})")
                remaining.append(res)
                continue
        try:
            note = await backend.clean_leftover(res)
        except Exception as exc:  # one failure must not stop the others
            failed.append(f"{what}: {getattr(exc, 'message', None) or exc}")
            remaining.append(res)
            continue
        if note is None:
            failed.append(f"{what}: the {getattr(backend, 'name', '?')} backend does not know how to remove it")
            remaining.append(res)
        else:
            done.append(note)
    with contextlib.suppress(StoreWriteError):
        run_dir.update_meta(leftovers=remaining, cleaned=time.time())
    if failed:
        raise SweepdeckError("Could not remove everything: " + "; ".join(failed) + ".",
                             "Remove it by hand, then run `sweepdeck runs --clean` again.")
    return done


__all__ = [
    "backend_for_run", "check_leftovers", "clean", "describe", "last_finished", "needs_reconcile", "possible_leftovers",
    "reconcile_dir", "reconcile_records", "reconcile_store", "results_complete", "supervisor_alive",
]
