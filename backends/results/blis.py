"""BLIS result directories as copied from the data PVC: ``<experiment-id>-<tp>/…``.

The BLIS pipeline writes each tensor-parallel branch of an experiment to
``/mnt/exp/<experiment-id>-<tp>/`` on data-pvc; ``kubectl cp`` (or the Tekton
backend's copy into ``results/``) brings those directories over whole. A
branch holds a guidellm report (``guidellm-results.json``, the older BLIS
format) or inference-perf lifecycle reports (the later format, possibly one
``treatment-N/`` directory each), next to ``exp-config.json`` and vLLM's
logging config. Every branch becomes a group of load points (``TP 2``); a
branch whose report cannot be read is named in ``problems`` and the other
branches still show.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from backends.results import guidellm, inference_perf
from backends.results.failures import Breakdown
from backends.results.jsonio import ReportError
from backends.results.model import LoadPoint, Origin, Result, Setting

BRANCH = re.compile(r"^(?P<id>[a-z0-9][a-z0-9.-]*?)-(?P<tp>\d+)$")
EXPECTED = "BLIS result directories <experiment-id>-<tp>/ holding a guidellm or inference-perf report"
MAX_DEPTH = 3
# JSON files next to a report that are not reports themselves.
_NOT_REPORTS = ("exp-config.json", "vllm_logging.json", "validation.json", "experiment.json")


def branches(directory: Path) -> list[tuple[int, Path]]:
    """``(tp, path)`` of the ``<id>-<tp>`` subdirectories, by TP."""
    out = []
    try:
        children = list(directory.iterdir())
    except OSError:
        return []
    for child in children:
        m = BRANCH.match(child.name)
        if m and child.is_dir():
            out.append((int(m.group("tp")), child))
    return sorted(out)


def _walk(directory: Path, depth: int = 0) -> Iterator[Path]:
    yield directory
    if depth >= MAX_DEPTH:
        return
    try:
        children = sorted(directory.iterdir())
    except OSError:
        return
    for child in children:
        if child.is_dir() and not child.name.startswith("."):
            yield from _walk(child, depth + 1)


def _guidellm_files(directory: Path) -> list[Path]:
    out = []
    for d in _walk(directory):
        for path in sorted(d.glob("*.json")):
            name = path.name
            if name in _NOT_REPORTS or "lifecycle_metrics" in name:
                continue
            if "guidellm" in name or name.startswith("benchmark"):
                out.append(path)
    return out


def _perf_dirs(directory: Path) -> list[Path]:
    return [d for d in _walk(directory) if any(inference_perf.is_report_file(p) for p in d.glob("*.json"))]


def has_reports(directory: Path) -> bool:
    return bool(_guidellm_files(directory) or _perf_dirs(directory))


def is_blis_dir(directory: Path) -> bool:
    return any(has_reports(path) for _, path in branches(directory))


def load_branch(path: Path, tp: int) -> Result:
    """The report of one branch directory (guidellm wins when both are there, as the BLIS viewer does).

    Raises:
        ReportError: the branch holds no readable report.
    """
    reports = _guidellm_files(path)
    errors: list[str] = []
    for report in reports:
        try:
            return guidellm.load(report, path.name)
        except ReportError as exc:
            errors.append(exc.message)
    perf = _perf_dirs(path)
    results = []
    for d in perf:
        prefix = f"{d.relative_to(path)}/" if d != path else ""
        try:
            results.append(inference_perf.load_dir(d, path.name, prefix))
        except ReportError as exc:
            errors.append(exc.message)
    if not results:
        if errors:
            raise ReportError(path, errors[0], "a readable guidellm or inference-perf report") from None
        raise ReportError(path, "holds no guidellm or inference-perf report", EXPECTED)
    first = results[0]
    for extra in results[1:]:
        first.load_points += extra.load_points
        first.failures += extra.failures
        first.origin.files += extra.origin.files
        first.problems += extra.problems
    first.problems += errors
    return first


def load(directory: Path, name: str | None = None) -> Result:
    """Every ``<experiment-id>-<tp>`` branch under ``directory``, as one result grouped by TP.

    Raises:
        ReportError: no branch with a readable report.
    """
    found = branches(directory)
    parts: list[tuple[int, Path, Result]] = []
    problems: list[str] = []
    for tp, path in found:
        if not has_reports(path):
            continue
        try:
            parts.append((tp, path, load_branch(path, tp)))
        except ReportError as exc:
            problems.append(exc.message)
    if not parts:
        raise ReportError(directory, problems[0] if problems else "has no <experiment-id>-<tp> directory with a report",
                          EXPECTED)
    ids = {BRANCH.match(p.name).group("id") for _, p in found if BRANCH.match(p.name)}  # type: ignore[union-attr]  # matched
    experiment = sorted(ids)[0] if len(ids) == 1 else directory.name
    return combine(name or experiment, parts, problems, str(directory), experiment)


def combine(name: str, parts: list[tuple[int, Path, Result]], problems: list[str], path: str,
            experiment: str) -> Result:
    """One result from the per-TP branch results (load points grouped and labelled by TP)."""
    points: list[LoadPoint] = []
    failures = Breakdown()
    files: list[str] = []
    harnesses = []
    for tp, branch, part in parts:
        for p in part.load_points:
            p.group = f"TP {tp}"
            p.label = f"TP{tp} {p.label}"
            points.append(p)
        for f in part.failures:
            failures.add(f.sample, f.count, reason=f.reason)
        files += part.origin.files
        if (branch / "exp-config.json").is_file():
            files.append(str(branch / "exp-config.json"))
        problems = problems + part.problems
        harnesses.append(part.origin)
    first_tp, _, first = parts[0]
    spec: dict[str, Setting] = dict(first.spec or {})
    spec["experiment_id"] = Setting(experiment, "directory name")
    spec["tp_sweep"] = Setting([tp for tp, _, _ in parts], "directory names")
    inner = harnesses[0]
    versions = sorted({o.version for o in harnesses if o.version})
    notes = list(first.notes)
    if first.timeline and len(parts) > 1:
        notes.append(f"tok/s over time is of TP {first_tp}")
    return Result(
        name=name, origin=Origin(f"blis/{inner.harness}", ", ".join(versions) or None, files),
        load_points=points, failures=failures.failures(), spec=spec, timeline=first.timeline,
        timeline_note=first.timeline_note, notes=notes, problems=problems, model=first.model, path=path,
    )

