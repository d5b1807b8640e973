"""Finding results: a path, a saved run, an imported result or a queue sweep → a :class:`Result`.

* :func:`load_path` reads a file or directory of any source (detected by its
  names and first bytes);
* :func:`load_run` reads a run directory of the run store: its ``results/``
  (the load generator's ``results.json``/``workload.json``, BLIS branch
  directories copied by the Tekton backend, an imported report) with the
  spec it ran with, or — for an Argo sweep — the work queue's results;
* :func:`import_result` stores an outside report as a run of its own (backend
  ``import``) so it appears everywhere runs do; a report that cannot be read
  leaves the run store untouched;
* :func:`resolve` turns what a user typed (a run id, a path,
  ``queue:URL/MODEL_VERSION``) into a result.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from backends.results import blis, guidellm, inference_perf, loadgen
from backends.results.jsonio import ReportError, read_bytes
from backends.results.model import Result, Setting
from config.errors import SweepdeckError

EXPECTED_ANY = ("a guidellm report, an inference-perf lifecycle report or directory, BLIS <experiment-id>-<tp> "
                "directories, or a sweepdeck results.json")
LOADGEN_FILES = ("results.json", "workload.json")
IMPORTED = "import"
QUEUE_PREFIX = "queue:"
_SNIFF = 65536


def _sniff(path: Path) -> str | None:
    """Which parser a JSON file is for, from its first bytes (None: unknown)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(_SNIFF)
    except OSError:
        return None
    if b'"benchmarks"' in head:
        return "guidellm"
    if b'"load_summary"' in head or b'"successes"' in head:
        return "inference-perf"
    if b'"summary"' in head or (b'"profile"' in head and b'"requests"' in head):
        return "loadgen"
    return None


#: File names that say nothing about the run: such a result is named after its directory.
_GENERIC_STEMS = ("benchmarks", "benchmark", "guidellm-results", "results", "workload", "report")


def default_name(path: Path) -> str:
    """``sweep`` for ``sweep/benchmarks.json``, ``run-a`` for ``run-a.json``."""
    if path.is_file() and path.stem.lower() in _GENERIC_STEMS and path.parent.name:
        return path.parent.name
    return path.stem if path.is_file() else path.name


def load_file(path: Path, name: str | None = None) -> Result:
    """One report file of any source.

    Raises:
        ReportError: empty, truncated, not JSON, an unknown layout or version.
    """
    name = name or default_name(path)
    if inference_perf.PER_REQUEST_FILE.match(path.name):
        raise ReportError(path, "holds inference-perf's per-request rows only",
                          "its directory, with the stage_<N>/summary lifecycle reports beside it")
    if inference_perf.is_report_file(path):
        return inference_perf.load_file(path, name)
    kind = _sniff(path)
    if kind == "guidellm":
        return guidellm.load(path, name)
    if kind == "inference-perf":
        return inference_perf.load_file(path, name)
    if kind == "loadgen":
        return loadgen.load(path, name)
    # Not recognised from its start: read it whole for a precise message (empty, truncated, not JSON...).
    from backends.results.jsonio import decode

    doc = decode(path, read_bytes(path, EXPECTED_ANY), EXPECTED_ANY)
    if guidellm.looks_like(doc):
        return guidellm.load(path, name)
    if loadgen.looks_like(doc):
        return loadgen.load(path, name)
    if inference_perf.looks_like(doc):
        return inference_perf.load_file(path, name)
    what = (f"an object with keys {', '.join(list(doc)[:6])}" if isinstance(doc, dict)
            else f"a JSON {type(doc).__name__}")
    raise ReportError(path, f"is {what}, not a report sweepdeck knows", EXPECTED_ANY)


def load_dir(directory: Path, name: str | None = None) -> Result:
    """A directory of reports (not a run directory): BLIS branches, inference-perf, guidellm, results.json.

    Raises:
        ReportError: nothing readable in it.
    """
    if blis.is_blis_dir(directory):
        return blis.load(directory, name)
    if inference_perf.stage_files(directory) or any(inference_perf.is_report_file(p) for p in directory.glob("*.json")):
        return inference_perf.load_dir(directory, name)
    for candidate in LOADGEN_FILES:
        if (directory / candidate).is_file():
            return loadgen.load(directory / candidate, name or directory.name)
    reports = [p for p in sorted(directory.glob("*.json")) if _sniff(p) == "guidellm"]
    if reports:
        return guidellm.load(reports[0], name or directory.name)
    branches = blis.branches(directory)
    if branches:
        return blis.load(directory, name)  # raises naming the first branch's problem
    raise ReportError(directory, "holds no report sweepdeck reads", EXPECTED_ANY)


def load_path(path: Path | str, name: str | None = None) -> Result:
    """A file or directory of any source (a run directory too).

    Raises:
        SweepdeckError: no such path; ReportError: nothing readable.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise SweepdeckError(f"{path}: no such file or directory.",
                             "Give a report file, a report directory or a run id.")
    if path.is_dir():
        if (path / "meta.json").is_file() and (path / "results").is_dir():
            return load_run(path)
        return load_dir(path, name)
    return load_file(path, name)


# ------------------------------------------------------------------------- runs


def _meta(run_dir: Path) -> dict[str, Any]:
    try:
        meta = json.loads((run_dir / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def run_spec(run_dir: Path) -> dict[str, Setting] | None:
    """Every setting of the run's saved spec with its source (None when there is no readable spec)."""
    try:
        data = json.loads((run_dir / "spec.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    from config.spec import FIELDS, ExperimentSpec

    try:
        spec = ExperimentSpec.from_dict(data)
    except SweepdeckError:
        return None
    out: dict[str, Setting] = {}
    for path in FIELDS:
        value = spec.get(path)
        out[path] = Setting(list(value) if isinstance(value, tuple) else value, str(spec.source(path)))
    return out


def results_files(run_dir: Path) -> list[Path]:
    """What a run's ``results/`` holds (top level), without creating the directory."""
    try:
        return sorted(p for p in (run_dir / "results").iterdir() if not p.name.startswith("."))
    except OSError:
        return []


#: Where a run's results live (:func:`results_place`): files of its own, read once and summarised...
IN_FILES = "files"
#: ...or a work queue: read over the network each time they are opened, never summarised or cached.
IN_QUEUE = "queue"


def _queue_sweep(meta: dict[str, Any]) -> bool:
    """The run is a sweep whose workers post their results to the Argo work queue."""
    return meta.get("backend") == "argo"


def results_place(run_dir: Path, meta: dict[str, Any] | None = None) -> str | None:
    """Where the run's results live: :data:`IN_FILES`, :data:`IN_QUEUE`, or None (no results (yet)).

    What the screens need to know of a run's kind (whether there is a
    summary to show or "open to read the queue"), so they never test a
    backend's name.
    """
    if results_files(run_dir):
        return IN_FILES
    meta = meta if meta is not None else _meta(run_dir)
    return IN_QUEUE if _queue_sweep(meta) else None


def has_results(run_dir: Path, meta: dict[str, Any] | None = None) -> bool:
    """True when the run has something to show (a queue sweep always may)."""
    return results_place(run_dir, meta) is not None


def queue_of(run_dir: Path, meta: dict[str, Any]) -> tuple[str, str] | None:
    """(queue URL, model version) of an Argo run, from its handle file and meta."""
    from backends.store import RunDir

    handle = RunDir(run_dir).read_handle()
    mvid = handle.get("MODEL_VERSION_ID") or meta.get("model_version_id")
    url = handle.get("QUEUE_URL") or meta.get("queue_url")
    return (str(url), str(mvid)) if url and mvid else None


def load_run(run_dir: Path, token: str | None = None, spec: bool = True) -> Result:
    """The results of one run directory, with the spec it ran with (``spec=False``: without reading it).

    Raises:
        SweepdeckError: the run has no results (yet), or its reports cannot be read.
    """
    meta = _meta(run_dir)
    run_id = str(meta.get("id") or run_dir.name)
    files = results_files(run_dir)
    if _queue_sweep(meta) and not files:
        where = queue_of(run_dir, meta)
        if where is None:
            raise SweepdeckError(f"Run {run_id} does not say which work queue holds its results.",
                                 "Read them with: sweepdeck results show queue:URL/MODEL_VERSION")
        from backends.results.queue import QueueClient

        with QueueClient(where[0], token or os.environ.get("SWEEPDECK_QUEUE_TOKEN")) as client:
            result = client.result(where[1], run_id)
    elif not files:
        state = meta.get("state", "unknown")
        raise SweepdeckError(f"Run {run_id} has no results ({state}): {run_dir / 'results'} is empty.",
                             "Results appear when the workload finishes "
                             "(or import a report: sweepdeck results import PATH).")
    else:
        result = _load_results_dir(run_dir / "results", files, run_id)
    result.name = run_id
    result.path = str(run_dir)
    saved = run_spec(run_dir) if spec else None
    if saved is not None:
        # The saved spec (with its sources) comes first; what the report adds follows.
        result.spec = {**saved, **{k: v for k, v in (result.spec or {}).items() if k not in saved}}
    if meta.get("model") and not result.model:
        result.model = str(meta["model"])
    return result


def _load_results_dir(results: Path, files: list[Path], run_id: str) -> Result:
    for name in LOADGEN_FILES:
        if (results / name).is_file():
            return loadgen.load(results / name, run_id)
    if len(files) == 1 and (files[0].is_file() or not blis.BRANCH.match(files[0].name)):
        return load_path(files[0], run_id)  # an imported report (file or directory)
    return load_dir(results, run_id)


# ----------------------------------------------------------------------- import


_SLUG = re.compile(r"[^a-z0-9-]+")


def slug(text: str) -> str:
    """A DNS-safe run id from a name (``Sweep 1.json`` → ``sweep-1-json``)."""
    out = _SLUG.sub("-", text.lower()).strip("-")
    return (out[:63].rstrip("-")) or "imported"


def import_result(path: Path | str, name: str | None = None, store: Any = None) -> tuple[str, Result]:
    """Copy an outside report into the run store as a run of its own.

    The report is read first; only a readable one is copied, into a
    temporary directory beside the runs root that is renamed into place in
    one step, so a failed import leaves the run store as it was.

    Returns:
        The new run id and the result read from the stored copy.

    Raises:
        SweepdeckError: unreadable report, bad or taken name.
    """
    from backends.store import RunStore

    store = store or RunStore()
    source = Path(path).expanduser().resolve()
    result = load_path(source)
    if name is not None:
        run_id = name
        if slug(name) != name:
            raise SweepdeckError(f"Name {name!r} is not usable as a run id.",
                                 f"Use lower-case letters, digits and '-', e.g. {slug(name)!r}.")
        if store.exists(run_id):
            raise SweepdeckError(f"Name {name!r} is already used by a saved run.",
                                 f"Choose another, e.g. {store.free_id(run_id)!r}.")
    else:
        run_id = store.free_id(slug(default_name(source)))
    store.root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".results-import-", dir=store.root.parent))
    try:
        target = tmp / "results" / source.name
        target.parent.mkdir()
        if source.is_dir():
            shutil.copytree(source, target, symlinks=False)
        else:
            shutil.copy2(source, target)
        now = time.time()
        meta = {
            "id": run_id, "backend": IMPORTED, "state": "succeeded", "started": now, "finished": now,
            "model": result.model or "", "workload": _workload_of(result), "harness": result.origin.describe(),
            "imported_from": str(source),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
        os.rename(tmp, store.root / run_id)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SweepdeckError(f"Could not store the imported result: {exc.strerror or exc}.",
                             f"Check that {store.root} is writable and the disk is not full.") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return run_id, load_run(store.root / run_id)


def _workload_of(result: Result) -> str:
    spec = result.spec or {}
    for key in ("workload", "workload.rate_type", "inference_perf.data"):
        if key in spec and spec[key].value:
            return str(spec[key].value)
    return result.origin.harness


# ---------------------------------------------------------------------- resolve


def resolve(what: str, store: Any = None, token: str | None = None) -> Result:
    """What a user typed → a result: a saved run id, a path, or ``queue:URL/MODEL_VERSION``.

    Raises:
        SweepdeckError: nothing of that name, or it cannot be read.
    """
    if what.startswith(QUEUE_PREFIX):
        url, _, mvid = what[len(QUEUE_PREFIX):].rstrip("/").rpartition("/")
        if not url.startswith(("http://", "https://")) or not mvid:
            raise SweepdeckError(f"{what!r} is not a queue address.",
                                 "Write queue:URL/MODEL_VERSION, e.g. queue:http://127.0.0.1:8080/sweep-1.")
        from backends.results.queue import QueueClient

        with QueueClient(url, token or os.environ.get("SWEEPDECK_QUEUE_TOKEN")) as client:
            return client.result(mvid)
    from backends.store import RunStore

    store = store or RunStore()
    if re.fullmatch(r"[a-z0-9-]+", what) and (store.root / what).is_dir():
        return load_run(store.root / what, token)
    path = Path(what).expanduser()
    if path.exists():
        return load_path(path)
    raise SweepdeckError(f"No saved run or file {what!r}.",
                         "Give a run id (sweepdeck runs), a report file or directory, or queue:URL/MODEL_VERSION.")
