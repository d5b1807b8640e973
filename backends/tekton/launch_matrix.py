"""Launching a Tekton matrix PipelineRun (the TUI's matrix screen): the file, the choice, the launch.

The headless ``sweepdeck tekton run-pr`` and the TUI's matrix screen make the
same choice (:mod:`backends.tekton.matrix`): run the matrix as it is, unroll
some parameters into one task per value, or expand it fully with at most N
tasks at once (barrier or sliding window), or unroll *and* limit.

:class:`MatrixLaunch` is a :class:`~backends.base.Backend`
for one ready PipelineRun (it creates it with
:meth:`~backends.tekton.TektonBackend.launch_pipelinerun` and delegates the
rest to the Tekton backend), so the app's one launch path — a
:class:`~tui.controller.RunController` driving a :class:`~backends.session.Session`
— runs a matrix sweep like any other experiment: run directory, events log,
cleanup registry, quit/detach, done/total progress from ``Progress`` events.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from backends.base import Check, Run
from config.errors import SweepdeckError

if TYPE_CHECKING:
    from backends.events import Event
    from backends.store import RunDir, RunRecord, RunStore
    from backends.tekton import TektonBackend
    from config.spec import ExperimentSpec

Mode = Literal["as_is", "unroll", "limit", "unroll_limit"]

MODES: tuple[tuple[Mode, str], ...] = (
    ("as_is", "Run as is (every combination at once)"),
    ("unroll", "Unroll parameters (one task per value, one after another)"),
    ("limit", "Full expansion, at most N at once"),
    ("unroll_limit", "Unroll parameters, at most N at once"),
)

#: PipelineRun params that name the model (the Tekton PoC uses ``model-id``).
MODEL_PARAMS = ("model-id", "model", "modelName", "model_name")

#: ``spec.workload.app`` of a matrix sweep's experiment record (see :func:`matrix_spec`):
#: what marks a run as a matrix run, live, attached or replayed.
MATRIX_APP = "matrix"


def is_matrix(spec: ExperimentSpec | None) -> bool:
    """Whether ``spec`` records a matrix sweep (no engine settings of its own apply)."""
    return spec is not None and spec.workload.app == MATRIX_APP


def matrix_facts(spec: ExperimentSpec, handle: dict[str, Any] | None, meta: dict[str, Any] | None) -> str:
    """The monitor header's facts of a matrix run: ``4 tasks · 36 combinations · PipelineRun NAME in NS``.

    The counts come first: at 80 columns the header ends about there.

    Args:
        spec: The run's experiment record (namespace; combinations = its requests).
        handle: The live or attached run's handle (the Tekton backend's
            ``pipelinerun``, ``namespace`` and ``matrix`` facts), if any.
        meta: The run store's meta (a replay has no handle), if any.
    """
    handle, meta = handle or {}, meta or {}
    name = handle.get("pipelinerun") or meta.get("pipelinerun") or spec.experiment_id
    ns = handle.get("namespace") or meta.get("namespace") or spec.namespace
    shape = handle.get("matrix") or meta.get("matrix") or {}
    parts = []
    tasks = shape.get("tasks")
    if tasks:
        parts.append(f"{tasks} task{'s' if tasks != 1 else ''}")
    combos = spec.workload.max_requests or shape.get("taskruns")
    if combos:
        parts.append(f"{combos} combinations")
    parts.append(f"PipelineRun {name}" + (f" in {ns}" if ns else ""))
    return " · ".join(parts)


@dataclass(slots=True)
class MatrixParam:
    """One matrix parameter (a factor) and its levels, in the file's order."""

    name: str
    values: list[Any]


@dataclass(slots=True)
class MatrixFile:
    """A PipelineRun file with (exactly one chosen) matrix task, read once; never written.

    Args:
        path: Where it was read from.
        pr: The parsed PipelineRun.
        task: The matrix task (``spec.pipelineSpec.tasks[i]``).
        params: ``matrix.params`` as factors with their levels.
        includes: How many ``matrix.include`` entries it has.
        total: How many TaskRuns the matrix fans out into.
    """

    path: Path
    pr: dict[str, Any]
    task: dict[str, Any]
    params: list[MatrixParam]
    includes: int
    total: int

    @classmethod
    def load(cls, path: str | Path, task: str | None = None) -> MatrixFile:
        """Read ``path`` and find its matrix task.

        Raises:
            SweepdeckError: the file is missing or unreadable, is not YAML, is
                not a PipelineRun, has no (or several, with no ``task``) matrix tasks.
        """
        import yaml

        from backends.tekton.matrix import combinations, matrix_tasks

        text_path = str(path).strip()
        if not text_path:
            raise SweepdeckError("Give the path of a PipelineRun YAML file.",
                                 "e.g. ~/tekton-poc/pipelinerun-matrix.yaml")
        p = Path(text_path).expanduser()
        if not p.exists():
            raise SweepdeckError(f"No such file: {p}.",
                                 "Check the path (tab completion is not available here; paste it).")
        if p.is_dir():
            raise SweepdeckError(f"{p} is a directory, not a PipelineRun file.")
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SweepdeckError(f"Cannot read {p}: {exc}.") from None
        try:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise SweepdeckError(f"{p.name} is not valid YAML{where}: {problem}.",
                                 "Fix the file and load it again.") from None
        runs = [d for d in docs if isinstance(d, dict) and d.get("kind") == "PipelineRun"]
        if not runs:
            kinds = ", ".join(sorted({str(d.get("kind")) for d in docs if isinstance(d, dict)})) or "no mapping"
            raise SweepdeckError(f"{p.name} has no PipelineRun (found: {kinds}).",
                                 "Give a file with kind: PipelineRun.")
        if len(runs) > 1:
            raise SweepdeckError(f"{p.name} has {len(runs)} PipelineRuns.", "Keep one PipelineRun per file.")
        pr = runs[0]
        tasks = matrix_tasks(pr)
        if task:
            tasks = [t for t in tasks if t.get("name") == task]
        if not tasks:
            raise SweepdeckError(
                f"{p.name} has no matrix task" + (f" named {task!r}." if task else "."),
                "A matrix sweep needs a task under spec.pipelineSpec.tasks with matrix.params or matrix.include.",
            )
        if len(tasks) > 1:
            raise SweepdeckError(
                f"{p.name} has several matrix tasks: " + ", ".join(t["name"] for t in tasks) + ".",
                "Keep one matrix task in the file (the headless run-pr takes --task NAME).",
            )
        chosen = tasks[0]
        matrix = chosen["matrix"]
        params = [MatrixParam(str(m["name"]), list(m.get("value") or [])) for m in matrix.get("params") or []]
        return cls(p, pr, chosen, params, len(matrix.get("include") or []), len(combinations(matrix)))

    @property
    def name(self) -> str:
        return str((self.pr.get("metadata") or {}).get("name") or "")

    def param(self, *names: str) -> Any:
        """The value of the first PipelineRun param among ``names`` (None if none)."""
        return _param(self.pr, names)

    def describe(self) -> str:
        """``run-experiment: 4 × 3 × 3 = 36 combinations``."""
        levels = [str(len(p.values)) for p in self.params]
        text = f"{self.task['name']}: "
        if levels:
            text += " × ".join(levels)
            if self.includes:
                text += f" + {self.includes} include"
            return text + f" = {self.total} combinations"
        return text + f"{self.includes} include entries = {self.total} combinations"


@dataclass(slots=True)
class MatrixPlan:
    """How to run the matrix (the same choice as ``transform-pr``).

    Args:
        mode: ``as_is``, ``unroll``, ``limit`` (full expansion) or ``unroll_limit``.
        unroll: The parameters to unroll (``unroll`` modes).
        limit: At most this many tasks at once (``limit`` modes).
        sliding_window: With a limit: a task waits for the one N places before
            it (else barrier batches).
    """

    mode: Mode = "as_is"
    unroll: tuple[str, ...] = ()
    limit: int | None = None
    sliding_window: bool = False

    def check(self, matrix: MatrixFile) -> None:
        """Raise what is missing for this mode.

        Raises:
            SweepdeckError: no parameter picked to unroll, or no/bad N.
        """
        if self.mode in ("unroll", "unroll_limit"):
            if not matrix.params:
                raise SweepdeckError("This matrix has only include entries: there is no parameter to unroll.",
                                     "Choose full expansion instead.")
            if not self.unroll:
                raise SweepdeckError("Pick at least one parameter to unroll (space on a row).")
            known = {p.name for p in matrix.params}
            unknown = [u for u in self.unroll if u not in known]
            if unknown:
                raise SweepdeckError(f"Not a matrix parameter: {', '.join(unknown)}.")
        if self.mode in ("limit", "unroll_limit"):
            if self.limit is None:
                raise SweepdeckError("Give N: at most how many tasks run at once.", "A whole number of at least 1.")
            if self.limit < 1:
                raise SweepdeckError(f"N must be at least 1, not {self.limit}.")

    def pipelinerun(self, matrix: MatrixFile) -> dict[str, Any]:
        """The PipelineRun to create (a transformed copy; the file's own stays as read).

        Raises:
            SweepdeckError: see :meth:`check` and :func:`backends.tekton.matrix.transform`.
        """
        from backends.tekton.matrix import transform

        self.check(matrix)
        if self.mode == "as_is":
            return copy.deepcopy(matrix.pr)
        unroll = list(self.unroll) if self.mode in ("unroll", "unroll_limit") else None
        limit = self.limit if self.mode in ("limit", "unroll_limit") else None
        return transform(matrix.pr, unroll=unroll, limit=limit, sliding_window=self.sliding_window,
                         task=matrix.task["name"])

    def tasks(self, matrix: MatrixFile) -> list[int]:
        """The matrix size of each task that replaces the matrix task (1: a plain task)."""
        from backends.tekton.matrix import combinations

        if self.mode == "as_is":
            return [matrix.total]
        pr = self.pipelinerun(matrix)
        original = matrix.task["name"]
        names = {t["name"] for t in (matrix.pr["spec"]["pipelineSpec"].get("tasks") or [])} - {original}
        return [len(combinations(t["matrix"])) if t.get("matrix") else 1
                for t in pr["spec"]["pipelineSpec"]["tasks"] if t["name"] not in names]

    def preview(self, matrix: MatrixFile) -> str:
        """One line: ``12 tasks, each a matrix of 3, one after another`` / ``36 tasks, 4 at once, sliding window``.

        Raises:
            SweepdeckError: the plan is incomplete (see :meth:`check`).
        """
        if self.mode == "as_is":
            return f"1 task, a matrix of {matrix.total}: all {matrix.total} TaskRuns at once"
        sizes = self.tasks(matrix)
        n = len(sizes)
        text = f"{n} task{'s' if n != 1 else ''}"
        if any(s > 1 for s in sizes):
            if len(set(sizes)) == 1:
                text += f", each a matrix of {sizes[0]}"
            else:
                text += f", matrices of {min(sizes)}–{max(sizes)}"
        limit = self.limit if self.mode in ("limit", "unroll_limit") else 1
        if limit == 1:
            text += ", one after another"
        elif limit >= n:  # type: ignore[operator]  # validate(): an int of at least 1 in the limit modes
            text += f", all at once (N={limit} ≥ {n} tasks)"
        else:
            text += f", {limit} at once, " + ("sliding window" if self.sliding_window else "barrier")
        total = sum(sizes)
        if total != n:
            text += f" ({total} TaskRuns)"
        return text


def matrix_spec(matrix: MatrixFile, *, profile: str | None, namespace: str, store: RunStore) -> ExperimentSpec:
    """The experiment record of a matrix launch (run store, runs list, monitor header).

    The id is the PipelineRun's name (the next free one in the run store);
    the workload is ``matrix`` with one "request" per TaskRun, so the monitor's
    progress shows done/total before the first Progress event.

    Raises:
        SweepdeckError: the PipelineRun has no usable metadata.name.
    """
    return pipelinerun_spec(matrix.pr, profile=profile, namespace=namespace, store=store, total=matrix.total,
                            where=matrix.path.name)


def pipelinerun_spec(pr: dict[str, Any], *, profile: str | None, namespace: str, store: RunStore,
                     total: int | None = None, where: str = "the file") -> ExperimentSpec:
    """The experiment record of any ready PipelineRun (``sweepdeck tekton run-pr``, the matrix screen).

    Raises:
        SweepdeckError: the PipelineRun has no usable metadata.name.
    """
    import re

    from backends.tekton.matrix import units
    from config.catalog import WorkloadProfile
    from config.spec import EngineSettings, ExperimentSpec, Origin, Source

    name = (pr.get("metadata") or {}).get("name")
    if not name:
        raise SweepdeckError(f"The PipelineRun in {where} has no metadata.name.",
                             "Give it a name (generateName is not supported here).")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name):
        raise SweepdeckError(f"PipelineRun name {name!r} is not a valid Kubernetes name.",
                             "Use lower-case letters, digits and '-' (at most 63).")
    model = _param(pr, MODEL_PARAMS)
    origins = {k: Origin(Source.USER) for k in ("model", "workload", "experiment_id", "namespace", "profile")}
    return ExperimentSpec(
        model=str(model) if model else "(set by the PipelineRun)",
        backend="tekton",
        workload=WorkloadProfile(app=MATRIX_APP, rate_type="matrix",
                                 max_requests=total if total is not None else len(units(pr)), rate=0),
        engine=EngineSettings(image="(set by the PipelineRun)"),
        experiment_id=store.free_id(name),
        profile=profile,
        namespace=namespace,
        origins=origins,
    )


def _param(pr: dict[str, Any], names: tuple[str, ...]) -> Any:
    """The first of ``names`` among the PipelineRun's params (None if none)."""
    for item in (pr.get("spec") or {}).get("params") or []:
        if isinstance(item, dict) and item.get("name") in names:
            return item.get("value")
    return None


@dataclass
class MatrixLaunch:
    """A Backend for one ready PipelineRun on the Tekton backend (see module docs).

    Args:
        tekton: The Tekton backend of the chosen profile.
        pipelinerun: The (transformed) PipelineRun to create.
        namespace: Where to create it.
    """

    tekton: TektonBackend
    pipelinerun: dict[str, Any]
    namespace: str
    name: str = field(init=False, default="tekton")
    graceful_cancel_drains: bool = field(init=False, default=True)

    def recipe(self) -> dict[str, Any]:
        """How the run's supervisor (another process) builds this same launch."""
        return {"factory": "backends.tekton.launch_matrix:MatrixLaunch.from_recipe", "tekton": self.tekton.recipe(),
                "pipelinerun": self.pipelinerun, "namespace": self.namespace}

    @classmethod
    def from_recipe(cls, recipe: dict[str, Any], registry: Any = None) -> MatrixLaunch:
        from backends.registry import from_recipe

        tekton = from_recipe(recipe["tekton"], registry)
        return cls(tekton, recipe["pipelinerun"], recipe["namespace"])

    async def preflight(self, spec: ExperimentSpec) -> list[Check]:
        """Cluster reachable, Tekton installed, namespace exists, PipelineRun name free (read-only)."""
        from backends.kube import KubeError
        from backends.tekton.backend import TEKTON

        try:
            kube = self.tekton.kube()
            version = await kube.version()
        except KubeError as exc:
            return [Check("Cluster reachable", "fail", exc.message,
                          exc.hint or "Check your kubeconfig / log in again.")]
        checks = [Check("Cluster reachable", "pass", f"{kube.server}, Kubernetes {version}")]
        try:
            groups = await kube.api_groups()
            tekton = "v1" in (groups.get("tekton.dev") or [])
            checks.append(Check("Tekton installed", "pass" if tekton else "fail",
                                "tekton.dev/v1" if tekton else "the API has no tekton.dev/v1",
                                "" if tekton else "Install Tekton Pipelines on the cluster."))
            ns = self.namespace
            if await kube.get("", "v1", "namespaces", ns) is None:
                checks.append(Check(f"Namespace {ns}", "fail", "does not exist", f"kubectl create namespace {ns}"))
                return checks
            checks.append(Check(f"Namespace {ns}", "pass", "exists"))
            name = self.pipelinerun["metadata"]["name"]
            if await kube.get(*TEKTON, "pipelineruns", name, ns) is not None:
                checks.append(Check(f"PipelineRun {name}", "fail", f"already exists in {ns}",
                                    "Rename it (metadata.name) or delete the old one."))
            else:
                checks.append(Check(f"PipelineRun {name}", "pass", "name is free"))
        except KubeError as exc:
            checks.append(Check("Cluster API", "fail", exc.message, exc.hint or ""))
        return checks

    async def launch(self, spec: ExperimentSpec, store: RunDir) -> Run:
        run = await self.tekton.launch_pipelinerun(self.pipelinerun, self.namespace, run_dir=store)
        run.spec = spec
        return run

    def events(self, run: Run) -> AsyncIterator[Event]:
        return self.tekton.events(run)

    async def cancel(self, run: Run, *, graceful: bool = True) -> None:
        await self.tekton.cancel(run, graceful=graceful)

    async def cleanup(self, run: Run) -> None:
        await self.tekton.cleanup(run)

    async def attach(self, saved: RunRecord) -> Run:
        return await self.tekton.attach(saved)

    def describe(self, spec: ExperimentSpec | None, handle: dict[str, Any] | None,
                 meta: dict[str, Any] | None) -> str | None:
        return self.tekton.describe(spec, handle, meta)


__all__ = [
    "MATRIX_APP", "MODES", "MatrixFile", "MatrixLaunch", "MatrixParam", "MatrixPlan", "is_matrix", "matrix_facts",
    "matrix_spec", "pipelinerun_spec",
]
