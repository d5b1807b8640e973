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
from collections.abc import Callable, Iterable, Iterator
from itertools import repeat
from pathlib import Path
from typing import Any

import msgspec

from backends.events import EVENT_TYPES, Event, LogLine, Stream, from_dict, to_dict
from config.errors import SweepdeckError

#: Seconds a log line may wait in a batch before it is written (a SIGKILL loses at most this).
#: The run directory's file of handle values (KEY=VALUE).
HANDLE_FILE = "handle"
FLUSH_AFTER = 0.04
#: Lines that make a batch go out at once.
BATCH_LINES = 2000
#: What a line of ``events.jsonl`` may be.
RECORD_TYPES = frozenset(EVENT_TYPES) | {"LogBatch"}
_MSGSPEC_ENCODE = msgspec.json.Encoder().encode
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


class RunRecord:
    """What the store knows of one run, without opening its event log.

    ``path`` may be given as a string: it becomes a :class:`Path` when first
    asked for (listing 10,000 runs makes no 10,000 Paths nobody reads).
    """

    __slots__ = ("id", "_path", "meta")

    def __init__(self, id: str, path: Path | str, meta: dict[str, Any]) -> None:
        self.id = id
        self._path = path
        self.meta = meta

    @property
    def path(self) -> Path:
        path = self._path
        if not isinstance(path, Path):
            path = self._path = Path(path)
        return path

    @property
    def location(self) -> str:
        """The run directory as a string (no Path made)."""
        return os.fspath(self._path)

    def __repr__(self) -> str:
        return f"RunRecord(id={self.id!r}, path={self.location!r}, meta={self.meta!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RunRecord):
            return NotImplemented
        return (self.id, self.location, self.meta) == (other.id, other.location, other.meta)

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
        self._write(encode_record(to_dict(event)))

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
        self._write(encode_record(batch_record(lines)))

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
    line's time; when the lines' times differ, ``dt_us`` lists each line's
    offset from it in whole microseconds (integers encode ~5x faster than the
    floats of the older ``ts_each``, which :func:`expand_record` still reads).
    """
    first = lines[0]
    ts = first.ts
    record: dict[str, Any] = {"type": "LogBatch", "source": first.source, "stream": first.stream, "ts": ts,
                              "lines": [line.text for line in lines]}
    streams = "".join(["e" if line.stream == "err" else "o" for line in lines])
    if "e" in streams and "o" in streams:
        record["streams"] = streams
    last = lines[-1].ts
    if last != ts or any(line.ts != ts for line in lines):
        record["dt_us"] = [round((line.ts - ts) * 1e6) for line in lines]
    return record


def expand_record(data: dict[str, Any]) -> list[Event]:
    """The events of one ``events.jsonl`` record (a LogBatch holds many)."""
    if data.get("type") != "LogBatch":
        return [from_dict(data)]
    source, stream, ts = data.get("source", "vllm"), data.get("stream", "out"), data.get("ts") or 0.0
    texts = data.get("lines") or []
    n = len(texts)
    stamps = _stamps(data, ts, n)
    streams = data.get("streams")
    words: Iterable[Stream]
    if isinstance(streams, str) and len(streams) == n:
        words = [_STREAM_WORDS.get(st, "out") for st in streams]
    else:
        words = repeat(stream, n)
    times: Iterable[float] = stamps if stamps is not None else repeat(ts, n)
    # map() over the columns: the per-line work is LogLine's own __init__ and nothing else
    return list(map(LogLine, texts, words, repeat(source, n), times))


_STREAM_WORDS: dict[str, Stream] = {"e": "err", "o": "out"}


def _stamps(data: dict[str, Any], ts: float, n: int) -> list[float] | None:
    """Each line's time from ``dt_us`` (or the older ``ts_each``), None when they all have ``ts``."""
    offsets = data.get("dt_us")
    if isinstance(offsets, list) and len(offsets) == n:
        return [ts + dt / 1e6 for dt in offsets]
    stamps = data.get("ts_each")
    if isinstance(stamps, list) and len(stamps) == n:
        return stamps
    return None


def encode_record(data: dict[str, Any]) -> bytes:
    """One ``events.jsonl`` line (newline included) for a record."""
    if data.get("type") == "LogBatch":
        try:
            # msgspec writes a batch of strings ~3x faster than json.dumps; the same JSON
            return _MSGSPEC_ENCODE(data) + b"\n"
        except (UnicodeEncodeError, TypeError, OverflowError):
            pass  # a lone surrogate in a line: json.dumps below replaces it
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
        return read_meta(os.fspath(self.path))

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
        out = [RunRecord(name, path, meta) for name, path, meta, _key in self.scan()]
        out.sort(key=newest_first)
        return out

    def scan(self) -> builtins.list[tuple[str, str, dict[str, Any], builtins.list[int] | None]]:
        """``(id, directory, meta, key)`` of every run, in directory order (see :meth:`list`).

        ``key`` is ``[mtime_ns, size]`` of its ``meta.json`` (None when it has none yet).
        """
        index = self._read_index()
        fresh: dict[str, builtins.list[Any]] = {}
        out = []
        changed = False
        try:
            entries = os.scandir(self.root)
        except OSError:
            return []
        with entries:
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                name, path = entry.name, entry.path
                cached = index.get(name)
                meta, key = meta_of(path, cached)
                if not changed and (cached is None or key != cached[0]):
                    changed = True
                fresh[name] = [key, meta]
                out.append((name, path, meta, key))
        if changed or len(fresh) != len(index):
            self._write_index(fresh)
        return out

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


class RunWatcher:
    """Every run of a store, kept current at a small cost per :meth:`refresh` (the runs screen calls it each second).

    A refresh stats the runs directory (a run added or removed changes its
    mtime; only then is the directory scanned), the ``meta.json`` of every
    run that is still live (their state changes) and of a slice of the
    others, so that each run is looked at once every ``sweep_seconds`` (a
    finished run's meta changes rarely: a relaunch records ``relaunched_as``,
    ``runs --clean`` its leftovers). A changed ``meta.json`` is re-read;
    nothing else is. At 10,000 runs, 10 s sweeps and a refresh a second that
    is ~1,000 stats a refresh instead of 10,000 stats and a 2 MB index.

    Args:
        store: The run store.
        settle: Called with new, changed and live records; returns them
            settled (the supervisor's reconciliation: a run whose supervisor
            is gone is never listed as running). A settled record that is
            a different object replaces the one read.
        sweep_seconds: Every run's ``meta.json`` is stat-ed at least this often.
        clock: Monotonic seconds (tests pass their own).
    """

    def __init__(self, store: RunStore, *, settle: Callable[[list[RunRecord]], list[RunRecord]] | None = None,
                 sweep_seconds: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.settle = settle
        self.sweep_seconds = sweep_seconds
        self.clock = clock
        #: Bumped whenever a run was added, removed or changed.
        self.version = 0
        self._records: dict[str, RunRecord] = {}
        self._keys: dict[str, list[int] | None] = {}
        self._live: set[str] = set()  # runs not finished (or without a meta yet): looked at every refresh
        self._root_stamp: int | None = None
        self._sweep: list[str] = []
        self._sweep_at = 0
        self._last = 0.0
        self._sorted: list[RunRecord] | None = None
        self._loaded = False
        self._changed: set[str] = set()  # runs added, changed or removed since take_changes()
        self._reloaded = False  # everything was read again since take_changes()

    def records(self) -> list[RunRecord]:
        """Every run, newest first (the same list object until something changes)."""
        if self._sorted is None:
            self._sorted = sorted(self._records.values(), key=newest_first)
        return self._sorted

    def get(self, run_id: str) -> RunRecord | None:
        return self._records.get(run_id)

    def take_changes(self) -> tuple[set[str], bool]:
        """The runs added, changed or removed since the last call, and whether the whole store was read again."""
        changed, reloaded = self._changed, self._reloaded
        self._changed, self._reloaded = set(), False
        return changed, reloaded

    def refresh(self, *, full: bool = False) -> bool:
        """Catch up with the store; True when something changed (``full``: stat every run now)."""
        now = self.clock()
        elapsed, self._last = now - self._last, now
        if not self._loaded or full:
            changed = self._load()
        else:
            changed = self._rescan_if_moved()
            changed |= self._check(self._live_ids())
            changed |= self._check(self._next_slice(elapsed))
            changed |= self._settle_live()
        if changed:
            self.version += 1
            self._sorted = None
        return changed

    def _root_mtime(self) -> int | None:
        try:
            return os.stat(self.store.root).st_mtime_ns
        except OSError:
            return None

    def _load(self) -> bool:
        """Everything from the store's listing (its index spares unchanged metas)."""
        self._root_stamp = self._root_mtime()
        before = self._records
        records, keys = {}, {}
        for name, path, meta, key in self.store.scan():
            old = before.get(name)
            records[name] = old if old is not None and old.meta is meta else RunRecord(name, path, meta)
            keys[name] = key
        self._records, self._keys, self._loaded = records, keys, True
        self._reloaded = True
        self._live = {name for name, r in records.items() if r.live}
        self._settle([r for r in records.values() if r.live or r.meta.get("leftovers")])
        self._sweep = []
        return records.keys() != before.keys() or any(before.get(k) is not r for k, r in records.items())

    def _rescan_if_moved(self) -> bool:
        """Runs added or removed (the runs directory's mtime moved)."""
        stamp = self._root_mtime()
        if stamp == self._root_stamp:
            return False
        self._root_stamp = stamp
        try:
            with os.scandir(self.store.root) as entries:
                present = {e.name: e.path for e in entries if e.is_dir(follow_symlinks=False)}
        except OSError:
            present = {}
        gone = [name for name in self._records if name not in present]
        for name in gone:
            del self._records[name]
            self._keys.pop(name, None)
            self._live.discard(name)
            self._changed.add(name)
        added = []
        for name, path in present.items():
            if name not in self._records:
                key = meta_key(path)
                added.append(self._put(RunRecord(name, path, read_meta(path) if key else {}), key))
        self._settle(added)
        if gone or added:
            self._sweep = []
        return bool(gone or added)

    def _put(self, record: RunRecord, key: list[int] | None) -> RunRecord:
        self._changed.add(record.id)
        self._records[record.id] = record
        self._keys[record.id] = key
        if record.live:
            self._live.add(record.id)
        else:
            self._live.discard(record.id)
        return record

    def _live_ids(self) -> list[str]:
        return list(self._live)

    def _next_slice(self, elapsed: float) -> list[str]:
        """The next runs of the round-robin sweep: enough that every run is seen each ``sweep_seconds``."""
        if not self._sweep:
            self._sweep = list(self._records)
            self._sweep_at = 0
        total = len(self._sweep)
        if not total:
            return []
        count = min(total, max(1, int(-(-total * max(elapsed, 0.0) // self.sweep_seconds))))
        start = self._sweep_at
        chunk = self._sweep[start:start + count]
        if len(chunk) < count:
            chunk += self._sweep[: count - len(chunk)]
        self._sweep_at = (start + count) % total
        return chunk

    def _check(self, names: list[str]) -> bool:
        """Re-read the runs among ``names`` whose ``meta.json`` changed."""
        changed = []
        for name in names:
            record = self._records.get(name)
            if record is None:
                continue
            key = meta_key(record.location)
            if key != self._keys.get(name):
                changed.append(self._put(RunRecord(name, record.location, read_meta(record.location) if key else {}),
                                         key))
        self._settle(changed)
        return bool(changed)

    def _settle_live(self) -> bool:
        """Live runs whose supervisor may have gone since (their meta says nothing of it)."""
        return self._settle([r for name in self._live if (r := self._records[name]).meta])

    def _settle(self, records: list[RunRecord]) -> bool:
        if not records or self.settle is None:
            return False
        changed = False
        for old, new in zip(records, self.settle(records), strict=True):
            if new is not old:
                self._put(new, meta_key(new.location))  # settling rewrote meta.json: not a change to re-read
                changed = changed or new.meta != old.meta
        return changed


def newest_first(record: RunRecord) -> float:
    """Sort key of the run list: the newest start first (a run without a start time last)."""
    started = record.meta.get("started")
    return -started if isinstance(started, (int, float)) else 0.0


def meta_key(path: str) -> list[int] | None:
    """``[mtime_ns, size]`` of a run's ``meta.json`` (None when it has none)."""
    try:
        st = os.stat(os.path.join(path, "meta.json"))
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size]


def meta_of(path: str, cached: list[Any] | None) -> tuple[dict[str, Any], list[int] | None]:
    """A run's meta (``cached[1]`` when ``meta.json`` still has the key ``cached[0]``) and its key."""
    key = meta_key(path)
    if key is None:
        return {}, None
    if cached and cached[0] == key and isinstance(cached[1], dict):
        return cached[1], key
    return read_meta(path), key


def read_meta(path: str) -> dict[str, Any]:
    """The run's ``meta.json`` ({} when it is missing or not a JSON object)."""
    try:
        with open(os.path.join(path, "meta.json"), "rb") as fh:
            data = json.loads(fh.read())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


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
