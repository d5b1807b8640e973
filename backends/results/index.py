"""A small summary of every run's results, so the results list opens at once.

``<state dir>/results-index.json`` maps a run id to a one-line summary
(harness, load points, requests, best tok/s, lowest TTFT/E2E p50) and the
stamp of the files it was computed from (name, size, mtime of each file under
``results/`` and of ``spec.json``). A summary whose stamp no longer matches
is recomputed; the index is a cache only — deleting it loses nothing.
Argo sweeps are not summarised here (their results live in the queue).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from backends.results.model import Result
from config.errors import SweepdeckError

FILE = "results-index.json"
VERSION = 1


def stamp(run_dir: Path) -> list[list[Any]]:
    """``[relative path, size, mtime_ns]`` of the files a run's results are read from."""
    out: list[list[Any]] = []
    results = run_dir / "results"
    stack = [results]
    while stack:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.is_dir(follow_symlinks=False):
                stack.append(Path(e.path))
            else:
                st = e.stat()
                out.append([os.path.relpath(e.path, run_dir), st.st_size, st.st_mtime_ns])
    try:
        st = (run_dir / "spec.json").stat()
        out.append(["spec.json", st.st_size, st.st_mtime_ns])
    except OSError:
        pass
    return sorted(out)


def summarize(result: Result) -> dict[str, Any]:
    """The list's columns for one result."""
    return {
        "harness": result.origin.describe(),
        "model": result.model,
        "points": len(result.load_points),
        "ok": result.requests_ok,
        "failed": result.requests_failed,
        "best_tok_s": result.best("output_tok_s"),
        "ttft_p50": result.best("ttft_ms.p50", higher=False),
        "e2e_p50": result.best("e2e_ms.p50", higher=False),
        "problems": len(result.problems),
    }


@dataclass
class ResultsIndex:
    """Load, look up, update and save the summaries (one JSON file)."""

    path: Path
    entries: dict[str, dict[str, Any]]
    dirty: bool = False

    @classmethod
    def open(cls, state_dir: Path) -> ResultsIndex:
        path = state_dir / FILE
        try:
            data = msgspec.json.decode(path.read_bytes())  # ~5x json.loads: 1,000 runs' stamps
        except (OSError, msgspec.DecodeError):
            data = {}
        entries = data.get("runs") if isinstance(data, dict) and data.get("version") == VERSION else None
        return cls(path, entries if isinstance(entries, dict) else {})

    def get(self, run_id: str, current: list[list[Any]]) -> dict[str, Any] | None:
        entry = self.entries.get(run_id)
        if isinstance(entry, dict) and entry.get("stamp") == current:
            summary = entry.get("summary")
            return summary if isinstance(summary, dict) else None
        return None

    def put(self, run_id: str, current: list[list[Any]], summary: dict[str, Any]) -> None:
        self.entries[run_id] = {"stamp": current, "summary": summary}
        self.dirty = True

    def save(self) -> None:
        """Write the index if it changed (a failure to write only costs the next open some time)."""
        if not self.dirty:
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(msgspec.json.encode({"version": VERSION, "runs": self.entries}))
            os.replace(tmp, self.path)
            self.dirty = False
        except OSError:
            tmp.unlink(missing_ok=True)


def summary_for(index: ResultsIndex, run_dir: Path, load: Callable[[Path], Result]) -> dict[str, Any]:
    """The cached summary of a run, computed (and cached) when missing or stale.

    A run whose results cannot be read gets ``{"error": message}`` (cached too,
    until its files change).
    """
    current = stamp(run_dir)
    cached = index.get(run_dir.name, current)
    if cached is not None:
        return cached
    try:
        summary = summarize(load(run_dir))  # the caller's loader may skip the spec: no column shows it
    except SweepdeckError as exc:
        summary = {"error": exc.message}
    index.put(run_dir.name, current, summary)
    return summary
