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

import asyncio
import builtins
import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.events import EVENT_TYPES, Event, LogLine, from_dict, to_dict
from config.errors import SweepdeckError

#: Seconds a log line may wait in a batch before it is written (a SIGKILL loses at most this).
#: The run directory's file of handle values (KEY=VALUE).
HANDLE_FILE = "handle"
FLUSH_AFTER = 0.04
#: Lines that make a batch go out at once.
BATCH_LINES = 2000
#: What a line of ``events.jsonl`` may be.
RECORD_TYPES = frozenset(EVENT_TYPES) | {"LogBatch"}
#: The run store's cache of every run's meta (see :meth:`RunStore.list`).
INDEX_NAME = ".index.json"
#: Free space the state dir must have before a launch (events, results, rendered files).
MIN_FREE_BYTES = 50 * 1024 * 1024


class StoreWriteError(SweepdeckError):
    """A run's files cannot be written (full disk, read-only state dir, permissions)."""

    def __init__(self, path: Path, exc: OSError) -> None:
        reason = exc.strerror or str(exc)
        super().__init__(
            f"Cannot write {path}: {reason}.",
            "Free some space or fix the permissions of the state dir "
            "(SWEEPDECK_STATE_DIR or $XDG_STATE_HOME/sweepdeck), then launch again.",
        )
        self.path = path
        self.errno = exc.errno


def state_root() -> Path:
    env = os.environ.get("SWEEPDECK_STATE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_state_path

    return user_state_path("sweepdeck")


_ID_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")

TERMINAL_STATES = ("succeeded", "failed", "cancelled", "lost")
#: States of a run that is still going (its supervisor should be alive).
LIVE_STATES = ("created", "launching", "running", "submitted", "detached", "cancelling")


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

    def handle_values(self) -> dict[str, str]:
        """What the run's backend saved to find it again (its handle file)."""
        return RunDir(self.path).read_handle()

    def spec(self):
        from config.spec import ExperimentSpec

        return ExperimentSpec.from_dict(json.loads((self.path / "spec.json").read_text()))


class EventLog:
    """A run's ``events.jsonl``: appended line by line, never more than :data:`FLUSH_AFTER` behind.

    Every record is one JSON object on one line, written with a single
    ``write`` to a file opened ``O_APPEND`` (mode 0600), so a SIGKILL of the
    writer loses at most what was still batched. Log lines are batched: runs of
    :class:`LogLine` with the same source and stream become one ``LogBatch``
    record (serialising a list of strings once is ~20× cheaper than one object
    per line); the batch goes out when :data:`FLUSH_AFTER` seconds have passed,
    when :data:`BATCH_LINES` lines wait, or when any other event comes (so the
    order of events is kept). :meth:`RunDir.events` turns batches back into
    LogLines.

    Args:
        path: The file.
        on_record: Called with each encoded record (bytes, newline included)
            after it was written: the supervisor sends the same bytes to its clients.

    Raises:
        StoreWriteError: (from :meth:`append` / :meth:`flush`, once) the file
            cannot be written; later records still reach ``on_record``.
    """

    def __init__(self, path: Path, on_record: Callable[[bytes], None] | None = None) -> None:
        self.path = path
        self.on_record = on_record
        self._fd: int | None = None
        self._lines: list[LogLine] = []
        self._timer: Any = None
        self.size = 0
        self.failed: StoreWriteError | None = None
        self._reported = False

    def _open(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                self.size = os.fstat(self._fd).st_size
            except OSError as exc:
                raise self._error(exc) from None
        return self._fd

    def _error(self, exc: OSError) -> StoreWriteError:
        self.failed = StoreWriteError(self.path, exc)
        return self.failed

    def append(self, event: Event) -> None:
        """Log one event (a LogLine may wait up to :data:`FLUSH_AFTER` seconds in the batch)."""
        if type(event) is LogLine:
            lines = self._lines
            if lines and lines[0].source != event.source:
                self.flush()
                lines = self._lines
            lines.append(event)
            if len(lines) >= BATCH_LINES:
                self.flush()
            elif self._timer is None:
                self._arm()
            return
        self.flush()
        self._write(_encode(to_dict(event)))

    def _arm(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()  # no loop to flush later from: write now
            return
        self._timer = loop.call_later(FLUSH_AFTER, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        with contextlib.suppress(StoreWriteError):  # kept in self.failed; the owner checks it
            self.flush()

    def flush(self) -> None:
        """Write the waiting batch of log lines now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        self._write(_encode(batch_record(lines)))

    def _write(self, data: bytes) -> None:
        if self.failed is None:
            try:
                fd = self._open()
                written = os.write(fd, data)
                while written < len(data):  # a short write (full disk edge, signal): finish or fail
                    written += os.write(fd, data[written:])
            except OSError as exc:
                self._error(exc)
            except StoreWriteError:
                pass  # _open kept it in self.failed
            else:
                self.size += len(data)
        # the live clients still get what could not be saved; the owner stops the run
        if self.on_record is not None:
            self.on_record(data)
        if self.failed is not None and not self._reported:
            self._reported = True
            raise self.failed

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None


def batch_record(lines: list[LogLine]) -> dict[str, Any]:
    """One ``LogBatch`` record for log lines of one source.

    ``stream`` is the first line's stream; when the batch mixes stdout and
    stderr, ``streams`` spells each line's (``o`` / ``e``). ``ts`` is the first
    line's time; ``ts_each`` lists every line's when they differ.
    """
    first = lines[0]
    record: dict[str, Any] = {"type": "LogBatch", "source": first.source, "stream": first.stream, "ts": first.ts,
                              "lines": [line.text for line in lines]}
    streams = "".join("e" if line.stream == "err" else "o" for line in lines)
    if "e" in streams and "o" in streams:
        record["streams"] = streams
    stamps = [line.ts for line in lines]
    if any(ts != first.ts for ts in stamps):
        record["ts_each"] = stamps
    return record


def expand_record(data: dict[str, Any]) -> list[Event]:
    """The events of one ``events.jsonl`` record (a LogBatch holds many)."""
    if data.get("type") != "LogBatch":
        return [from_dict(data)]
    source, stream, ts = data.get("source", "vllm"), data.get("stream", "out"), data.get("ts") or 0.0
    texts = data.get("lines") or []
    stamps = data.get("ts_each")
    if not (isinstance(stamps, list) and len(stamps) == len(texts)):
        stamps = None
    streams = data.get("streams")
    if isinstance(streams, str) and len(streams) == len(texts):
        return [LogLine(text, "err" if st == "e" else "out", source, stamps[i] if stamps else ts)
                for i, (text, st) in enumerate(zip(texts, streams, strict=True))]
    if stamps:
        return [LogLine(text, stream, source, stamp) for text, stamp in zip(texts, stamps, strict=True)]
    return [LogLine(text, stream, source, ts) for text in texts]


def _encode(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, default=str, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8", "replace")


class RunDir:
    """One run's directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._log: EventLog | None = None

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def log(self) -> EventLog:
        """The run's event log (opened for appending on first write)."""
        if self._log is None:
            self._log = EventLog(self.path / "events.jsonl")
        return self._log

    # meta
    def meta(self) -> dict[str, Any]:
        try:
            data = json.loads((self.path / "meta.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def update_meta(self, **values: Any) -> dict[str, Any]:
        """Merge ``values`` into ``meta.json`` (replaced atomically).

        Raises:
            StoreWriteError: the state dir cannot be written.
        """
        meta = self.meta()
        meta.update(values)
        _atomic_write(self.path / "meta.json", json.dumps(meta, indent=2, sort_keys=True, default=str))
        return meta

    # spec
    def write_spec(self, spec) -> None:
        _atomic_write(self.path / "spec.json", json.dumps(spec.to_dict(), indent=2))

    def read_spec(self):
        from config.spec import ExperimentSpec

        return ExperimentSpec.from_dict(json.loads((self.path / "spec.json").read_text()))

    # any JSON document of the run (launch recipe, resources...)
    def write_json(self, name: str, data: Any) -> Path:
        target = self.path / name
        _atomic_write(target, json.dumps(data, indent=2, sort_keys=True, default=str))
        return target

    def read_json(self, name: str, default: Any = None) -> Any:
        try:
            return json.loads((self.path / name).read_text())
        except (OSError, ValueError):
            return default

    # rendered files
    def write_rendered(self, name: str, text: str) -> Path:
        target = self.path / "rendered" / name
        _mkdir_private(target.parent)
        _atomic_write(target, text)
        return target

    # handle file (KEY=VALUE, 0600: it can name hosts and job ids): what a backend needs to find its run
    # again (a SLURM job id, a PipelineRun's name); older run directories call it ``session``
    def write_handle(self, values: dict[str, Any]) -> Path:
        lines = []
        for key, value in values.items():
            text = "" if value is None else str(value)
            if "\n" in text or not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key):
                raise ValueError(f"bad handle entry {key!r}")
            lines.append(f"{key}={text}")
        target = self.path / HANDLE_FILE
        _atomic_write(target, "\n".join(lines) + "\n")
        return target

    def read_handle(self) -> dict[str, str]:
        for name in (HANDLE_FILE, "session"):  # "session": run directories written before the rename
            try:
                text = (self.path / name).read_text()
            except FileNotFoundError:
                continue
            out = {}
            for line in text.splitlines():
                if "=" in line:
                    key, _, value = line.partition("=")
                    out[key.strip()] = value
            return out
        return {}

    # events
    def append_event(self, event: Event) -> None:
        """Log one event (see :class:`EventLog`).

        Raises:
            StoreWriteError: the event log cannot be written.
        """
        self.log.append(event)

    def flush(self) -> None:
        if self._log is not None:
            self._log.flush()

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def events(self, offset: int = 0) -> Iterator[Event]:
        """Every saved event from byte ``offset`` on (log batches as single LogLines)."""
        for _end, record in self.records(offset):
            yield from expand_record(record)

    def records(self, offset: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(end offset, record)`` of each whole line from byte ``offset`` (a torn last line is skipped)."""
        if self._log is not None:
            with contextlib.suppress(StoreWriteError):
                self._log.flush()
        try:
            fh = open(self.path / "events.jsonl", "rb")  # noqa: SIM115 - closed by the `with fh` below
        except FileNotFoundError:
            return
        with fh:
            fh.seek(offset)
            position = offset
            for raw in fh:
                position += len(raw)
                if not raw.endswith(b"\n"):
                    break  # written half when the writer died
                try:
                    data = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(data, dict) and data.get("type") in RECORD_TYPES:
                    yield position, data

    # a little disk kept back, so a run that fills the disk can still record how it ended
    def make_reserve(self, size: int = 256 * 1024) -> None:
        with contextlib.suppress(OSError):
            fd = os.open(self.path / ".reserve", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"\0" * size)
            finally:
                os.close(fd)

    def release_reserve(self) -> None:
        with contextlib.suppress(OSError):
            (self.path / ".reserve").unlink()

    # results
    @property
    def results_dir(self) -> Path:
        path = self.path / "results"
        _mkdir_private(path)
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
        _mkdir_private(self.root)
        path = self.root / run_id
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            raise SweepdeckError(
                f"Experiment id {run_id!r} is already used by a saved run.",
                f"Choose another id, e.g. {self.free_id(run_id)!r} (or delete the old run).",
            ) from None
        except OSError as exc:
            raise StoreWriteError(path, exc) from None
        run = RunDir(path)
        try:
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
        except StoreWriteError:
            shutil.rmtree(path, ignore_errors=True)  # no half-made run dir is left
            raise
        return run

    def check_writable(self, min_free: int = MIN_FREE_BYTES) -> tuple[bool, str]:
        """Can runs be saved here: the runs dir writable, with ``min_free`` bytes free?

        Returns:
            ``(ok, detail)``; the detail names the directory and what is wrong.
        """
        root = self.root
        probe_dir = root if root.exists() else next((p for p in root.parents if p.exists()), Path("/"))
        if root.exists() and not root.is_dir():
            return False, f"{root} is not a directory"
        if not os.access(probe_dir, os.W_OK | os.X_OK):
            return False, f"{probe_dir} is not writable"
        try:
            probe = tempfile_in(probe_dir)
        except OSError as exc:
            return False, f"{probe_dir} cannot be written: {exc.strerror or exc}"
        probe.unlink(missing_ok=True)
        try:
            st = os.statvfs(probe_dir)
        except OSError:
            return True, "writable"
        free = st.f_bavail * st.f_frsize
        if free < min_free:
            return False, f"only {free / 1e6:.1f} MB free in {probe_dir} (at least {min_free / 1e6:.0f} MB needed)"
        return True, f"writable, over {min_free // 1_000_000} MB free"

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
        """Every run, newest first.

        Each run's ``meta.json`` is read only when it changed since the last
        listing (its mtime and size, kept in ``runs/.index.json``): listing
        10,000 runs costs a directory scan and a ``stat`` per run, not 10,000
        JSON reads. The index is a cache — deleting it loses nothing.
        """
        if not self.root.is_dir():
            return []
        index = self._read_index()
        fresh: dict[str, list[Any]] = {}
        out = []
        changed = False
        with os.scandir(self.root) as entries:
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                meta, key = self._meta_of(Path(entry.path), index.get(entry.name))
                changed = changed or key != (index.get(entry.name) or [None])[0]
                fresh[entry.name] = [key, meta]
                out.append(RunRecord(entry.name, Path(entry.path), meta))
        if changed or len(fresh) != len(index):
            self._write_index(fresh)
        out.sort(key=lambda r: r.started or 0, reverse=True)
        return out

    def _meta_of(self, path: Path,
                 cached: builtins.list[Any] | None) -> tuple[dict[str, Any], builtins.list[int] | None]:
        """The run's meta (from the index when ``meta.json`` is unchanged) and its (mtime, size) key."""
        try:
            st = os.stat(path / "meta.json")
        except OSError:
            return {}, None
        key = [st.st_mtime_ns, st.st_size]
        if cached and cached[0] == key and isinstance(cached[1], dict):
            return cached[1], key
        return RunDir(path).meta(), key

    def _read_index(self) -> dict[str, builtins.list[Any]]:
        try:
            data = json.loads((self.root / INDEX_NAME).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_index(self, index: dict[str, builtins.list[Any]]) -> None:
        with contextlib.suppress(StoreWriteError):  # a cache: the next listing reads the runs again
            _atomic_write(self.root / INDEX_NAME, json.dumps(index, separators=(",", ":"), default=str))

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


def tempfile_in(directory: Path) -> Path:
    """Create (and return) an empty private probe file in ``directory``."""
    import tempfile

    fd, name = tempfile.mkstemp(prefix=".probe-", dir=directory)
    os.close(fd)
    return Path(name)


def _atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (write a private temp file, then rename).

    Raises:
        StoreWriteError: it cannot be written (the old file, if any, is unchanged).
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StoreWriteError(path, exc) from None


def _mkdir_private(path: Path) -> None:
    """Make ``path`` (and its parents) with mode 0700 for what is created here.

    Raises:
        StoreWriteError: it cannot be created.
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreWriteError(path, exc) from None
