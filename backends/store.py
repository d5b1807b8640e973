"""The run store: one directory per experiment under the XDG state dir.

``~/.local/state/sweepdeck/runs/<experiment-id>/`` holds:

* ``spec.json``     — the resolved ExperimentSpec
* ``rendered/``     — rendered manifests and scripts (never the user's originals)
* ``session``       — ``KEY=VALUE`` lines (mode 0600) for attach
* ``events.jsonl``  — every event, one JSON object a line
* ``results/``      — retrieved results (``results.json`` from the workload runner...)
* ``meta.json``     — backend, state, started/finished, parent

``SWEEPDECK_STATE_DIR`` overrides the root (tests use it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from backends.events import Event, from_dict, to_dict
from config.errors import SweepdeckError


def state_root() -> Path:
    env = os.environ.get("SWEEPDECK_STATE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_state_path

    return user_state_path("sweepdeck")


_ID_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")

TERMINAL_STATES = ("succeeded", "failed", "cancelled")


@dataclass(slots=True)
class RunRecord:
    """What the store knows of one run, without opening its event log."""

    id: str
    path: Path
    meta: dict[str, Any]

    @property
    def backend(self) -> str:
        return self.meta.get("backend", "?")

    @property
    def state(self) -> str:
        return self.meta.get("state", "unknown")

    @property
    def started(self) -> float | None:
        return self.meta.get("started")

    @property
    def finished(self) -> float | None:
        return self.meta.get("finished")

    @property
    def model(self) -> str:
        return self.meta.get("model", "")

    @property
    def workload(self) -> str:
        return self.meta.get("workload", "")

    @property
    def live(self) -> bool:
        return self.state not in TERMINAL_STATES

    def session(self) -> dict[str, str]:
        return RunDir(self.path).read_session()

    def spec(self):
        from config.spec import ExperimentSpec

        return ExperimentSpec.from_dict(json.loads((self.path / "spec.json").read_text()))


class RunDir:
    """One run's directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._events_fh = None

    @property
    def id(self) -> str:
        return self.path.name

    # meta
    def meta(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / "meta.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def update_meta(self, **values: Any) -> dict[str, Any]:
        meta = self.meta()
        meta.update(values)
        _atomic_write(self.path / "meta.json", json.dumps(meta, indent=2, sort_keys=True))
        return meta

    # spec
    def write_spec(self, spec) -> None:
        _atomic_write(self.path / "spec.json", json.dumps(spec.to_dict(), indent=2))

    def read_spec(self):
        from config.spec import ExperimentSpec

        return ExperimentSpec.from_dict(json.loads((self.path / "spec.json").read_text()))

    # rendered files
    def write_rendered(self, name: str, text: str) -> Path:
        target = self.path / "rendered" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(target, text)
        return target

    # session file (KEY=VALUE, 0600: it can name hosts and job ids)
    def write_session(self, values: dict[str, Any]) -> Path:
        lines = []
        for key, value in values.items():
            text = "" if value is None else str(value)
            if "\n" in text or not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key):
                raise ValueError(f"bad session entry {key!r}")
            lines.append(f"{key}={text}")
        target = self.path / "session"
        tmp = target.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        os.replace(tmp, target)
        os.chmod(target, 0o600)
        return target

    def read_session(self) -> dict[str, str]:
        try:
            text = (self.path / "session").read_text()
        except FileNotFoundError:
            return {}
        out = {}
        for line in text.splitlines():
            if "=" in line:
                key, _, value = line.partition("=")
                out[key.strip()] = value
        return out

    # events
    def append_event(self, event: Event) -> None:
        if self._events_fh is None:
            self._events_fh = open(self.path / "events.jsonl", "a", encoding="utf-8", buffering=1 << 16)
        self._events_fh.write(json.dumps(to_dict(event), default=str) + "\n")

    def flush(self) -> None:
        if self._events_fh is not None:
            self._events_fh.flush()

    def close(self) -> None:
        if self._events_fh is not None:
            self._events_fh.close()
            self._events_fh = None

    def events(self) -> Iterator[Event]:
        self.flush()
        try:
            fh = open(self.path / "events.jsonl", encoding="utf-8")
        except FileNotFoundError:
            return
        with fh:
            for line in fh:
                line = line.strip()
                if line:
                    try:
                        yield from_dict(json.loads(line))
                    except (KeyError, TypeError, json.JSONDecodeError):
                        continue

    # results
    @property
    def results_dir(self) -> Path:
        path = self.path / "results"
        path.mkdir(exist_ok=True)
        return path


class RunStore:
    """All runs under one root."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or state_root()) / "runs"

    def create(self, spec, *, backend: str | None = None) -> RunDir:
        """Make the run directory for ``spec.experiment_id``.

        Raises:
            SweepdeckError: the id is not DNS-safe or already used (the
                message suggests a free one).
        """
        run_id = spec.experiment_id
        if not _ID_RE.match(run_id):
            raise SweepdeckError(f"Experiment id {run_id!r} is not DNS-safe.")
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / run_id
        try:
            path.mkdir()
        except FileExistsError:
            raise SweepdeckError(
                f"Experiment id {run_id!r} is already used by a saved run.",
                f"Choose another id, e.g. {self.free_id(run_id)!r} (or delete the old run).",
            ) from None
        run = RunDir(path)
        run.write_spec(spec)
        run.update_meta(
            id=run_id,
            backend=backend or spec.backend,
            profile=spec.profile,
            model=spec.model,
            workload=spec.workload.app,
            state="created",
            started=time.time(),
            parent=spec.parent,
        )
        return run

    def exists(self, run_id: str) -> bool:
        return (self.root / run_id).exists()

    def free_id(self, run_id: str) -> str:
        """``run_id`` or ``run_id-2``, ``run_id-3``... whichever is free."""
        if not self.exists(run_id):
            return run_id
        for n in range(2, 10_000):
            candidate = f"{run_id[:58]}-{n}"
            if not self.exists(candidate):
                return candidate
        raise SweepdeckError("No free experiment id found.")

    def open(self, run_id: str) -> RunDir:
        path = self.root / run_id
        if not re.fullmatch(r"[a-z0-9-]+", run_id) or not path.is_dir():
            raise SweepdeckError(f"No saved run {run_id!r}.", "List saved runs with: sweepdeck runs")
        return RunDir(path)

    def get(self, run_id: str) -> RunRecord:
        run = self.open(run_id)
        return RunRecord(run_id, run.path, run.meta())

    def list(self) -> list[RunRecord]:
        """Every run, newest first."""
        if not self.root.is_dir():
            return []
        out = []
        for path in self.root.iterdir():
            if path.is_dir():
                out.append(RunRecord(path.name, path, RunDir(path).meta()))
        out.sort(key=lambda r: r.started or 0, reverse=True)
        return out

    def delete(self, run_id: str) -> None:
        """Remove a finished run's record.

        Raises:
            SweepdeckError: the run is still live (cancel or clean it up first).
        """
        record = self.get(run_id)
        if record.live and record.state != "created":
            raise SweepdeckError(
                f"Run {run_id!r} is {record.state}; only finished runs can be deleted.",
                "Attach to it and clean it up first.",
            )
        shutil.rmtree(record.path)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
