"""The ``tekton`` backend: BLIS data collection as Tekton PipelineRuns, through the API.

preflight → launch → events → (cancel) → cleanup, all with the official
``kubernetes`` client (no ``tkn``/``kubectl``). Status comes from watches
(PipelineRun, its TaskRuns by the ``tekton.dev/pipelineRun`` label, and the
vLLM pods by ``llm-d.ai/model=<experimentId>-<tp>``) that resume from their
last resourceVersion and re-list on 410 Gone; nothing polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from backends.base import BackendBase, Check, Remedy, Run
from backends.cleanup import CleanupRegistry
from backends.events import Alert, Event, Finished, LogLine, Notice, Outcome, Phase, Progress
from backends.kube import Kube, KubeError, WatchEvent, WatchStream
from backends.tekton.build import Build, Sources, build, expected_seconds
from backends.tekton.install import apply_all
from backends.tekton.reports import summarize as summarize_report
from config.durations import parse_timestamp
from config.errors import SweepdeckError

if TYPE_CHECKING:
    from backends.store import RunDir, RunRecord
    from config.settings import Profile, Settings
    from config.spec import ExperimentSpec

log = logging.getLogger(__name__)

TEKTON = ("tekton.dev", "v1")
CANCELLED = ("Cancelled", "CancelledRunFinally", "StoppedRunFinally", "PipelineRunCancelled", "TaskRunCancelled")
READER_PREFIX = "sweepdeck-results-"


def yaml_dump(doc: Any) -> str:
    import yaml

    return yaml.safe_dump(doc, sort_keys=False, width=float("inf"))


def succeeded_condition(obj: dict[str, Any]) -> tuple[str, str, str]:
    """``(status, reason, message)`` of ``status.conditions[type=Succeeded]`` (``("", "Pending", "")`` if none)."""
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Succeeded":
            return c.get("status", ""), c.get("reason", ""), c.get("message", "")
    return "", "Pending", ""


def task_state(obj: dict[str, Any]) -> str:
    """The state word shown for a TaskRun/PipelineRun: the Succeeded condition's reason."""
    status, reason, _ = succeeded_condition(obj)
    if reason:
        return reason
    return {"True": "Succeeded", "False": "Failed"}.get(status, "Running" if status == "Unknown" else "Pending")


def pod_state(pod: dict[str, Any]) -> tuple[str, str, str]:
    """``(state, reason, message)`` of a pod: a waiting/terminated reason beats the phase."""
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        st = cs.get("state") or {}
        waiting = st.get("waiting") or {}
        if waiting.get("reason") and waiting["reason"] not in ("ContainerCreating", "PodInitializing"):
            return "Waiting", waiting["reason"], waiting.get("message", "")
        term = st.get("terminated") or (cs.get("lastState") or {}).get("terminated") or {}
        if term.get("reason") in ("OOMKilled", "Error") and phase != "Succeeded":
            return "Terminated", term["reason"], term.get("message", "")
    for c in status.get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False":
            return "Pending", c.get("reason") or "Unschedulable", c.get("message", "")
    return phase, "", ""


@dataclass
class _RunState:
    """What the event loop knows about one run."""

    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # pipelineTask -> TaskRun
    shown: dict[str, tuple] = field(default_factory=dict)
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    following: dict[str, asyncio.Task] = field(default_factory=dict)
    alerted: set[tuple[str, str]] = field(default_factory=set)
    overtime: set[str] = field(default_factory=set)
    outcome: dict[str, str] = field(default_factory=dict)  # task -> running/completed/failed
    deadlines: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # task -> (due, started, expected)
    logs_shown: set[str] = field(default_factory=set)
    pipelinerun: dict[str, Any] | None = None
    task_logs: dict[str, tuple[str, str]] = field(default_factory=dict)  # task row -> followed (pod, container)
    workload_s: float | None = None  # the inference-perf load stages' total (run-workload's expected time)


class TektonBackend(BackendBase):
    """Runs BLIS experiments on Tekton (see module docs)."""

    name = "tekton"
    graceful_cancel_drains = True  # finally tasks / the exit handler run after a graceful stop
    applies = frozenset({"engine.memory", "engine.cpu"})  # the values file's vllm container resources
    traces_collector = True  # the pipeline's OpenTelemetry collector (inference-perf values: when stack.tracing)
    #: How many TaskRun step logs a ready PipelineRun (a matrix sweep) follows at
    #: once, so a 36-way fan-out opens 2 log streams, not 36: a free place goes to
    #: the most recently started running TaskRun. A failing TaskRun's step log is
    #: read at once anyway.
    task_log_follows = 2

    def __init__(self, settings: Settings, profile: Profile, *, registry: CleanupRegistry | None = None) -> None:
        super().__init__(settings, profile, registry=registry)
        self._kube: Kube | None = None
        self._builds: dict[str, Build] = {}
        self._tokens: dict[str, int] = {}

    # ------------------------------------------------------------------ helpers

    def kube(self) -> Kube:
        if self._kube is None:
            self._kube = Kube.connect(self.profile.get("kubeconfig"), self.profile.get("context"))
        return self._kube

    def namespace(self, spec: ExperimentSpec) -> str:
        ns = spec.namespace or self.profile.get("namespace") or (self._kube.default_namespace if self._kube else None)
        if not ns:
            raise SweepdeckError("No namespace for the Tekton run.",
                                 "Give one (--namespace NS) or set 'namespace' in the tekton profile.")
        return ns

    def build(self, spec: ExperimentSpec) -> Build:
        """Render the manifests for ``spec`` (cached per spec)."""
        key = json.dumps(spec.to_dict(), sort_keys=True, default=str)  # a changed spec renders again
        if key not in self._builds:
            self._builds[key] = build(spec, self.profile, Sources.from_profile(self.profile))
        return self._builds[key]

    # ------------------------------------------------------------------ preflight

    async def preflight(self, spec: ExperimentSpec) -> list[Check]:
        """Every check the BLIS skill ran with kubectl, through the API; changes nothing."""
        checks: list[Check] = []
        try:
            kube = self.kube()
            version = await kube.version()
        except KubeError as exc:
            return [Check("Cluster reachable", "fail", exc.message,
                          exc.hint or "Check your kubeconfig / log in again.")]
        checks.append(Check("Cluster reachable", "pass",
                            f"context {kube.context or '(default)'} at {kube.server}, Kubernetes {version}"))
        try:
            groups = await kube.api_groups()
        except KubeError as exc:
            groups = {}
            checks.append(Check("Tekton installed", "fail", exc.message))
        else:
            tekton = groups.get("tekton.dev") or []
            if "v1" in tekton:
                checks.append(Check("Tekton installed", "pass", "tekton.dev " + ", ".join(tekton)))
            else:
                checks.append(Check("Tekton installed", "fail", "the API has no tekton.dev/v1 (Tekton Pipelines CRDs)",
                                    "Install Tekton Pipelines (or OpenShift Pipelines) on the cluster."))
        try:
            ns = self.namespace(spec)
        except SweepdeckError as exc:
            checks.append(Check("Namespace", "fail", exc.message, exc.hint))
            return checks
        try:
            build_ = self.build(spec)
            checks.append(Check("Values", "pass", "; ".join(build_.changes) or "base values unchanged (MATCH)",
                                data={"changes": build_.changes}))
        except SweepdeckError as exc:
            checks.append(Check("Values", "fail", exc.message, exc.hint))
            build_ = None
        if build_ is not None and spec.profile_template is not None:
            checks.append(_workload_check(spec, build_))
        if await kube.get("", "v1", "namespaces", ns) is None:
            checks.append(Check(
                f"Namespace {ns}", "fail", "does not exist",
                f"kubectl create namespace {ns}, or let sweepdeck create it (it asks first)",
                remedy=Remedy("create_namespace", label=f"Create namespace {ns}",
                              question=f"Namespace {ns} does not exist. Create it?", args={"namespace": ns}),
            ))
            ns_ok = False
        else:
            checks.append(Check(f"Namespace {ns}", "pass", "exists"))
            ns_ok = True
        for secret in self.profile.get("secrets") or ["hf-secret", "s3-secret"]:
            if not ns_ok:
                # blocked_by: this check is decided again once the named check's remedy is done
                checks.append(Check(f"Secret {secret}", "fail", f"namespace {ns} does not exist",
                                    data={"blocked_by": f"Namespace {ns}"}))
                continue
            present = await kube.exists("secrets", secret, ns)  # metadata only: the data is never read
            keys = (
                "--from-literal=HF_TOKEN=<your token>"
                if "hf" in secret
                else "--from-literal=AWS_ACCESS_KEY_ID=<id> --from-literal=AWS_SECRET_ACCESS_KEY=<key>"
            )
            checks.append(Check(f"Secret {secret}", "pass" if present else "fail", "exists" if present else "not found",
                                "" if present else f"kubectl create secret generic {secret} -n {ns} {keys}"))
        for pvc in self.profile.get("pvcs") or ["model-pvc", "data-pvc"]:
            checks.append(
                await self._check_pvc(kube, ns, pvc)
                if ns_ok
                else Check(
                    f"PVC {pvc}", "fail", f"namespace {ns} does not exist", data={"blocked_by": f"Namespace {ns}"}
                )
            )
        checks.append(await self._check_gpus(kube, spec))
        if ns_ok:
            checks.append(await self._check_id(kube, ns, spec.experiment_id))
        if build_ is not None:
            info = None
            with contextlib.suppress(Exception):
                info = self.settings.catalogs.models.resolve(spec.model)
            warning = info.download_warning() if info is not None else ""
            if warning:
                checks.append(Check("Model download", "warn", warning + " (download-model task)"))
        return checks

    async def _check_pvc(self, kube: Kube, ns: str, name: str) -> Check:
        pvc = await kube.get("", "v1", "persistentvolumeclaims", name, ns)
        if pvc is None:
            yaml_text = (
                "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n"
                f"  name: {name}\n  namespace: {ns}\nspec:\n  accessModes: [ReadWriteMany]\n"
                f"  resources:\n    requests:\n      storage: {'300Gi' if 'model' in name else '20Gi'}\n"
            )
            return Check(f"PVC {name}", "fail", "not found", "Create it (kubectl apply -f -):\n" + yaml_text,
                         data={"yaml": yaml_text})
        phase = (pvc.get("status") or {}).get("phase", "Pending")
        if phase == "Bound":
            return Check(f"PVC {name}", "pass", "Bound")
        return Check(
            f"PVC {name}",
            "warn" if phase == "Pending" else "fail",
            phase,
            "A Pending PVC binds when its first pod starts (WaitForFirstConsumer); otherwise check its storage class.",
        )

    async def _check_gpus(self, kube: Kube, spec: ExperimentSpec) -> Check:
        product = self.profile.get("gpu_product")
        label = self.profile.get("gpu_label", "nvidia.com/gpu.product")
        tps = sorted(spec.tp_sweep or (spec.engine.tp,), reverse=True)
        need = sum(tps)
        try:
            nodes = await kube.list("", "v1", "nodes", None, label_selector=f"{label}={product}")
        except KubeError as exc:
            return Check("GPUs", "warn", f"cannot list nodes: {exc.message}",
                         "Ask for permission to list nodes, or check GPUs yourself.")
        free = []
        for node in nodes:
            alloc = ((node.get("status") or {}).get("allocatable") or {}).get("nvidia.com/gpu", "0")
            try:
                free.append(int(alloc))
            except ValueError:
                free.append(0)
        total = sum(free)
        detail = (f"{len(nodes)} {product} node(s), {total} allocatable GPUs; "
                  f"TP branches {'+'.join(map(str, tps))} need {need} at once")
        if not nodes or not free or max(free) < tps[0]:
            return Check("GPUs", "fail", detail,
                         f"No {product} node has {tps[0]} GPUs: lower TP, or set gpu_product in the profile.",
                         data={"need": need, "allocatable": total})
        # every branch runs at the same time and a TP group must fit on one node
        slots = sorted(free, reverse=True)
        for tp in tps:
            slots.sort(reverse=True)
            if slots[0] < tp:
                return Check("GPUs", "warn", detail,
                             "Not all branches fit at once: they will wait for GPUs in turn. "
                             "Lower TP or run fewer TP values.",
                             data={"need": need, "allocatable": total})
            slots[0] -= tp
        return Check("GPUs", "pass", detail, data={"need": need, "allocatable": total})

    async def _check_id(self, kube: Kube, ns: str, run_id: str) -> Check:
        if await kube.get(*TEKTON, "pipelineruns", run_id, ns) is None:
            return Check("Experiment id", "pass", f"{run_id} is free")
        names = {p["metadata"]["name"] for p in await kube.list(*TEKTON, "pipelineruns", ns, metadata_only=True)}
        free = next(f"{run_id[:58]}-{n}" for n in range(2, 10_000) if f"{run_id[:58]}-{n}" not in names)
        return Check("Experiment id", "fail", f"a PipelineRun {run_id} already exists in {ns}",
                     f"Use another id, e.g. {free}", data={"free_id": free})

    async def remedy(self, spec: ExperimentSpec, remedy: Remedy) -> str:
        """Carry out a pre-flight remedy the user confirmed (see :func:`backends.base.apply_remedy`).

        Returns:
            What was done, for the user (``Namespace mert created``).

        Raises:
            SweepdeckError: an unknown remedy, or the API refused it.
        """
        if remedy.id == "create_namespace":
            ns = str(remedy.args.get("namespace") or self.namespace(spec))
            try:
                await self.create_namespace(ns)
            except KubeError as exc:
                raise SweepdeckError(f"Cannot create namespace {ns}: {exc.message}",
                                     exc.hint or f"Ask a cluster admin: kubectl create namespace {ns}") from None
            return f"Namespace {ns} created"
        raise SweepdeckError(f"The tekton backend has no remedy {remedy.id!r}.",
                             "Do it by hand, then re-run pre-flight.")

    async def create_namespace(self, name: str) -> None:
        """Create a missing namespace (offered by the namespace check)."""
        try:
            await self.kube().create("", "v1", "namespaces",
                                     {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        except KubeError as exc:
            if exc.status != 409:
                raise

    # ------------------------------------------------------------------ launch

    async def launch(self, spec: ExperimentSpec, store: RunDir) -> Run:
        """Apply the Tasks/StepActions and Pipeline, create the PipelineRun, register its cancel."""
        kube = self.kube()
        ns = self.namespace(spec)
        b = self.build(spec)
        for name, text in b.files().items():
            store.write_rendered(name, text)
        pr_name = b.pipelinerun["metadata"]["name"]
        lines = await apply_all(kube, b.resources, ns)
        lines += await apply_all(kube, [b.pipeline], ns)
        try:
            await kube.create(*TEKTON, "pipelineruns", b.pipelinerun, ns)
        except KubeError as exc:
            if exc.status == 409:
                raise SweepdeckError(f"A PipelineRun {pr_name} already exists in {ns}.",
                                     "Choose another experiment id.") from None
            raise
        handle = {
            "namespace": ns, "pipelinerun": pr_name, "pipeline": b.pipeline["metadata"]["name"],
            "tps": b.tps, "tasks": b.task_names, "context": kube.context,
        }
        if b.workload_seconds:
            handle["workload_s"] = b.workload_seconds
        run = Run(spec.experiment_id, self.name, spec, store, handle)
        self._tokens[run.id] = self.registry.register(
            f"cancel PipelineRun {pr_name} in {ns}", lambda: self.cancel(run),
            resource={"kind": "pipelinerun", "name": pr_name, "namespace": ns})
        store.write_handle({
            "BACKEND": self.name, "NAMESPACE": ns, "PIPELINERUN": pr_name, "CONTEXT": kube.context or "",
            "KUBECONFIG": self.profile.get("kubeconfig") or "", "TPS": ",".join(map(str, b.tps)),
            "WORKLOAD_S": f"{b.workload_seconds:g}" if b.workload_seconds else "",
        })
        store.update_meta(namespace=ns, pipelinerun=pr_name, applied=lines)
        return run

    async def launch_pipelinerun(self, pr: dict[str, Any], namespace: str, run_dir: RunDir) -> Run:
        """Create a ready PipelineRun (e.g. a matrix sweep, transformed or not) and return its Run.

        ``handle["tasks"]`` counts every TaskRun the matrix fans out into, for done/total progress.
        """
        from backends.tekton.matrix import facts, units

        kube = self.kube()
        name = (pr.get("metadata") or {}).get("name")
        if not name:
            raise SweepdeckError("The PipelineRun has no metadata.name.",
                                 "Give it a name (generateName is not supported here).")
        body = json.loads(json.dumps(pr))
        body.setdefault("metadata", {})["namespace"] = namespace
        labels = body["metadata"].setdefault("labels", {})
        labels.setdefault("app.kubernetes.io/managed-by", "sweepdeck")
        tasks = units(body)
        shape = facts(body)
        run_dir.write_rendered("pipelinerun.yaml", yaml_dump(body))
        try:
            await kube.create(*TEKTON, "pipelineruns", body, namespace)
        except KubeError as exc:
            if exc.status == 409:
                raise SweepdeckError(f"A PipelineRun {name} already exists in {namespace}.",
                                     "Rename it (metadata.name).") from None
            raise
        # "matrix" marks a ready PipelineRun: its TaskRuns' step logs are followed (no vLLM pods)
        handle = {"namespace": namespace, "pipelinerun": name, "tps": [], "tasks": tasks, "matrix": shape}
        run = Run(run_dir.id, self.name, None, run_dir, handle)  # type: ignore[arg-type]  # a PipelineRun run from a file has no ExperimentSpec
        self._tokens[run.id] = self.registry.register(
            f"cancel PipelineRun {name} in {namespace}", lambda: self.cancel(run),
            resource={"kind": "pipelinerun", "name": name, "namespace": namespace})
        run_dir.write_handle({"BACKEND": self.name, "NAMESPACE": namespace, "PIPELINERUN": name,
                               "CONTEXT": kube.context or ""})
        run_dir.update_meta(namespace=namespace, pipelinerun=name,
                            matrix={"tasks": shape["tasks"], "taskruns": shape["taskruns"]})
        return run

    # ------------------------------------------------------------------ events

    async def events(self, run: Run) -> AsyncIterator[Event]:
        """Phase/LogLine/Progress/Alert events until one Finished."""
        kube = self.kube()
        streams = self._watch_streams(kube, run)
        queue: asyncio.Queue = asyncio.Queue()
        state = _RunState(workload_s=run.handle.get("workload_s"))
        pumps = [asyncio.create_task(self._pump(tag, s, queue)) for tag, s in streams.items()]
        total = len(run.handle.get("tasks") or [])
        finished: Finished | None = None
        try:
            while finished is None:
                wait = self._next_overtime(state)
                try:
                    tag, item = await asyncio.wait_for(queue.get(), timeout=wait)
                except TimeoutError:
                    for ev in self._overtime_alerts(state):
                        yield self._record(run, ev)
                    continue
                if tag == "log":  # the hot path: a batch of log lines (a list, never an error)
                    for ev in item:
                        yield self._record(run, ev)
                    continue
                events, finished_pr = await self._on_item(run, state, tag, item, queue, total)
                for ev in events:
                    yield self._record(run, ev)
                if finished_pr is not None:
                    async for ev in self._wind_up(kube, run, state, finished_pr, queue, total):
                        if isinstance(ev, Finished):
                            finished = ev
                        yield self._record(run, ev)
        finally:
            for s in streams.values():
                s.stop()
            for p in pumps:
                p.cancel()
            for t in state.following.values():
                t.cancel()
            run.store.flush()

    async def _on_item(self, run: Run, state: _RunState, tag: str, item: Any, queue: asyncio.Queue,
                       total: int) -> tuple[list[Event], dict | None]:
        """One queue item other than a batch of log events: a watch's error, a log's end, or a watch event."""
        if isinstance(item, KubeError):
            return [Notice(f"{item.message} (retrying)", "warning")], None
        if tag == "log-end":
            if run.handle.get("matrix") is not None:
                self._follow_tasks(run, state, queue)
            return [], None
        return await self._handle(run, state, tag, item, queue, total)

    def _watch_streams(self, kube: Kube, run: Run) -> dict[str, WatchStream]:
        """The watches of one run by queue tag: its PipelineRun, its TaskRuns and (BLIS runs) its vLLM pods."""
        ns, pr_name = run.handle["namespace"], run.handle["pipelinerun"]
        labels = ",".join(f"{run.id}-{tp}" for tp in run.handle.get("tps") or [])
        timeout = int(self.profile.get("watch_timeout", 300))
        streams = {
            "pr": kube.watch(*TEKTON, "pipelineruns", ns, field_selector=f"metadata.name={pr_name}",
                             timeout_seconds=timeout),
            "tr": kube.watch(*TEKTON, "taskruns", ns, label_selector=f"tekton.dev/pipelineRun={pr_name}",
                             timeout_seconds=timeout),
        }
        if labels:  # BLIS runs: the vLLM pods of each TP branch
            streams["pod"] = kube.watch("", "v1", "pods", ns, label_selector=f"llm-d.ai/model in ({labels})",
                                        timeout_seconds=timeout)
        return streams

    async def _wind_up(self, kube: Kube, run: Run, state: _RunState, finished_pr: dict[str, Any],
                       queue: asyncio.Queue, total: int) -> AsyncIterator[Event]:
        """The PipelineRun has ended: the TaskRuns' end states and the logs still on their way, then Finished."""
        ns, pr_name = run.handle["namespace"], run.handle["pipelinerun"]
        # The TaskRun watch is a separate stream and may lag the PipelineRun's:
        # one final list gives every task's end state before Finished.
        try:
            final = await kube.list(*TEKTON, "taskruns", ns, label_selector=f"tekton.dev/pipelineRun={pr_name}")
            tail, _ = await self._handle(run, state, "tr", WatchEvent("SYNC", objects=final), queue, total)
            for ev in tail:
                yield ev
        except KubeError as exc:
            yield Notice(f"final TaskRun list failed: {exc.message}", "warning")
        # let the log followers deliver what they have (they end with their pods)
        pending = [t for t in state.following.values() if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=1.0)
        while not queue.empty():
            tag, item = queue.get_nowait()
            if tag == "log":
                for ev in item:
                    yield ev
        async for ev in self._finish(run, state, finished_pr):
            yield ev

    @staticmethod
    def _record(run: Run, ev: Event) -> Event:
        # The session driver saves every event to the run's events.jsonl.
        return ev

    @staticmethod
    async def _pump(tag: str, stream, queue: asyncio.Queue) -> None:
        async for item in stream:
            await queue.put((tag, item))

    def _track_deadline(self, state: _RunState, name: str, tr: dict[str, Any]) -> None:
        """Keep ``state.deadlines`` (task -> epoch of 2x its expected duration) for running tasks only."""
        state.deadlines.pop(name, None)
        if name in state.overtime or succeeded_condition(tr)[0] in ("True", "False"):
            return
        started = parse_timestamp((tr.get("status") or {}).get("startTime"))
        expected = expected_seconds(name, self.profile, state.workload_s)
        if started and expected:
            state.deadlines[name] = (started + 2 * expected, started, expected)

    @staticmethod
    def _next_overtime(state: _RunState) -> float | None:
        if not state.deadlines:
            return None
        return max(0.0, min(d[0] for d in state.deadlines.values()) - time.time())

    @staticmethod
    def _overtime_alerts(state: _RunState) -> list[Event]:
        out: list[Event] = []
        now = time.time()
        for name, (due, started, expected) in list(state.deadlines.items()):
            if now >= due:
                del state.deadlines[name]
                state.overtime.add(name)
                out.append(
                    Alert(
                        "overtime",
                        f"{name} has run {int((now - started) // 60)} min, over 2x its expected "
                        f"{int(expected // 60)} min.",
                        "warning",
                        evidence=f"task {name} started {time.strftime('%H:%M:%S', time.localtime(started))}",
                    )
                )
        return out

    async def _handle(self, run: Run, state: _RunState, tag: str, item: WatchEvent, queue: asyncio.Queue,
                      total: int) -> tuple[list[Event], dict | None]:
        """The events of one watch event (``tag`` names its stream) and the PipelineRun if it has just ended."""
        objs = (item.objects or []) if item.type == "SYNC" else [item.object or {}]
        if tag == "pr":
            return self._on_pipelinerun(run, state, item.type, objs)
        if tag == "tr":
            return await self._on_taskruns(run, state, item.type, objs, queue, total), None
        if tag == "pod":
            return self._on_pods(run, state, item.type, objs, queue), None
        return [], None

    @staticmethod
    def _on_pipelinerun(run: Run, state: _RunState, etype: str,
                        objs: list[dict[str, Any]]) -> tuple[list[Event], dict | None]:
        events: list[Event] = []
        if etype == "SYNC" and not objs:
            return [Notice(f"PipelineRun {run.handle['pipelinerun']} no longer exists", "warning")], {"deleted": True}
        for pr in objs:
            if etype == "DELETED":
                return [Notice(f"PipelineRun {run.handle['pipelinerun']} was deleted", "warning")], {"deleted": True}
            state.pipelinerun = pr
            status, reason, message = succeeded_condition(pr)
            key = ("pr", reason)
            if state.shown.get("__pr__") != key:
                state.shown["__pr__"] = key
                events.append(Phase(f"PipelineRun {run.handle['pipelinerun']}", task_state(pr), message,
                                    kind="pipelinerun",
                                    started=parse_timestamp((pr.get("status") or {}).get("startTime")),
                                    finished=parse_timestamp((pr.get("status") or {}).get("completionTime"))))
            if status in ("True", "False"):
                return events, pr
        return events, None

    async def _on_taskruns(self, run: Run, state: _RunState, etype: str, objs: list[dict[str, Any]],
                           queue: asyncio.Queue, total: int) -> list[Event]:
        events: list[Event] = []
        if etype == "SYNC":
            state.tasks, state.outcome = {}, {}
            state.deadlines.clear()
        for tr in objs:
            name = _unit_name(tr, run.handle["pipelinerun"])
            if etype == "DELETED":
                state.tasks.pop(name, None)
                state.outcome.pop(name, None)
                state.deadlines.pop(name, None)
                continue
            state.tasks[name] = tr
            st = succeeded_condition(tr)[0]
            state.outcome[name] = "completed" if st == "True" else "failed" if st == "False" else "running"
            self._track_deadline(state, name, tr)
            events += await self._task_events(run, state, name, tr)
        if run.handle.get("matrix") is not None:
            self._follow_tasks(run, state, queue)
        counts = Counter(state.outcome.values())  # O(tasks) in C; cheap even at 10,000 rows
        total_now = max(total, len(state.tasks))
        done = counts["running"] + counts["completed"] + counts["failed"]
        events.append(Progress(total_now, pending=total_now - done, running=counts["running"],
                               completed=counts["completed"], failed=counts["failed"]))
        return events

    def _on_pods(self, run: Run, state: _RunState, etype: str, objs: list[dict[str, Any]],
                 queue: asyncio.Queue) -> list[Event]:
        events: list[Event] = []
        if etype == "SYNC":
            state.pods = {}
        for pod in objs:
            pname = pod["metadata"]["name"]
            if etype == "DELETED":
                state.pods.pop(pname, None)
                events.append(Phase(f"pod/{pname}", "Deleted", kind="pod"))
                continue
            state.pods[pname] = pod
            events += self._pod_events(run, state, pod, queue)
        return events

    async def _task_events(self, run: Run, state: _RunState, name: str, tr: dict[str, Any]) -> list[Event]:
        status = tr.get("status") or {}
        st, reason, message = succeeded_condition(tr)
        retries = len(status.get("retriesStatus") or [])
        shown = (task_state(tr), retries)
        if state.shown.get(name) == shown:
            return []
        state.shown[name] = shown
        events: list[Event] = [Phase(
            name, task_state(tr), message, kind="task", started=parse_timestamp(status.get("startTime")),
            finished=parse_timestamp(status.get("completionTime")), retries=retries,
            expected_s=expected_seconds(name, self.profile, state.workload_s),
        )]
        if st == "False" and reason not in CANCELLED and name not in state.logs_shown:
            state.logs_shown.add(name)
            events += await self._failed_task_log(run, state, name, tr)
            from backends import diagnosis

            found = diagnosis.diagnose_state("task", "Failed", reason, message)
            if found and (name, found.rule_id) not in state.alerted:
                state.alerted.add((name, found.rule_id))
                events.append(diagnosis.alert_for(found, run.spec))
            elif not found:
                events.append(Alert("task-failed", f"Task {name} failed: {reason} {message}".strip(), "error",
                                    evidence=message))
        return events

    async def _failed_task_log(self, run: Run, state: _RunState, name: str, tr: dict[str, Any]) -> list[Event]:
        """The failing step's log, shown at once (what `tkn tr logs` would show)."""
        status = tr.get("status") or {}
        pod = status.get("podName")
        if not pod:
            return []
        steps = status.get("steps") or []
        failing = [s for s in steps if ((s.get("terminated") or {}).get("exitCode") or 0) != 0] or steps[-1:]
        out: list[Event] = []
        for step in failing[:1]:
            container = step.get("container") or f"step-{step.get('name')}"
            if state.task_logs.get(name) == (pod, container):
                return []  # that log is being followed: its lines (and their diagnosis) come from there
            try:
                text = await self.kube().read_log(run.handle["namespace"], pod, container, tail_lines=100)
            except KubeError as exc:
                return [Notice(f"cannot read the log of {name}: {exc.message}", "warning")]
            lines = text.splitlines()
            from backends import diagnosis

            found = diagnosis.primary(diagnosis.diagnose_lines(lines))
            if found:
                out.append(diagnosis.alert_for(found, run.spec))
            source = self._task_source(run, state, name, tr)
            out += [LogLine(line, "err", source) for line in lines]
        return out

    @staticmethod
    def _task_source(run: Run, state: _RunState, name: str, tr: dict[str, Any]) -> str:
        """A task row's log source: ``task/<row>``, and for a matrix TaskRun its combination
        (``task/run-experiment-7 question_len=100,output_len=50``)."""
        task = ((tr.get("metadata") or {}).get("labels") or {}).get("tekton.dev/pipelineTask") or name
        shape = run.handle.get("matrix") or {}
        names = (shape.get("params") or {}).get(task)
        if names is None and state.pipelinerun is not None:  # not known at launch (e.g. a BLIS run): from the watch
            from backends.tekton.matrix import facts

            names = facts(state.pipelinerun)["params"].get(task)
        if not names:
            return f"task/{name}"
        values = {p.get("name"): p.get("value") for p in (tr.get("spec") or {}).get("params") or []
                  if isinstance(p, dict)}
        combo = ",".join(f"{n}={values[n]}" for n in names if n in values)
        return f"task/{name} {combo}" if combo else f"task/{name}"

    def _follow_tasks(self, run: Run, state: _RunState, queue: asyncio.Queue) -> None:
        """Follow running TaskRuns' step logs, at most :attr:`task_log_follows` at once
        (newest first; a follow is never stopped for a newer one, so no stream churns)."""
        free = self.task_log_follows - sum(1 for p, _ in state.task_logs.values() if not state.following[p].done())
        if free <= 0:
            return
        waiting = []
        for name, tr in state.tasks.items():
            status = tr.get("status") or {}
            # Tekton lists the steps once the pod exists: until then a later update names the container
            if (
                name in state.task_logs
                or not status.get("podName")
                or not status.get("steps")
                or state.outcome.get(name) != "running"
            ):
                continue
            waiting.append((parse_timestamp(status.get("startTime")) or 0.0, name, tr))
        waiting.sort(key=lambda w: w[0], reverse=True)
        for _, name, tr in waiting[:free]:
            status = tr["status"]
            steps = status["steps"]
            step = next((s for s in steps if "running" in s), None) or next(
                (s for s in steps if "terminated" not in s), steps[-1]
            )
            container = step.get("container") or f"step-{step.get('name')}"
            pod = status["podName"]
            state.task_logs[name] = (pod, container)
            state.following[pod] = asyncio.create_task(
                self._follow(run, state, pod, container, self._task_source(run, state, name, tr), queue))

    def _pod_events(self, run: Run, state: _RunState, pod: dict[str, Any], queue: asyncio.Queue) -> list[Event]:
        from backends import diagnosis

        pname = pod["metadata"]["name"]
        st, reason, message = pod_state(pod)
        events: list[Event] = []
        key = (st, reason)
        if state.shown.get(f"pod/{pname}") != key:
            state.shown[f"pod/{pname}"] = key
            events.append(Phase(f"pod/{pname}", st, " ".join(p for p in (reason, message) if p), kind="pod",
                                started=parse_timestamp((pod.get("status") or {}).get("startTime"))))
            if reason:
                found = diagnosis.diagnose_state("pod", st, reason, message)
                if found and (pname, found.rule_id) not in state.alerted:
                    state.alerted.add((pname, found.rule_id))
                    events.append(diagnosis.alert_for(found, run.spec))
        started = any(((cs.get("state") or {}).get("running") or (cs.get("state") or {}).get("terminated"))
                      for cs in (pod.get("status") or {}).get("containerStatuses") or [])
        if (
            started or (pod.get("status") or {}).get("phase") in ("Running", "Failed", "Succeeded")
        ) and pname not in state.following:
            containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
            container = "vllm" if "vllm" in containers else (containers[0] if containers else None)
            label = (pod["metadata"].get("labels") or {}).get("llm-d.ai/model", "")
            source = "vllm-tp" + label.rsplit("-", 1)[-1] if label.startswith(run.id + "-") else "vllm"
            state.following[pname] = asyncio.create_task(self._follow(run, state, pname, container, source, queue))
        return events

    async def _follow(self, run: Run, state: _RunState, pod: str, container: str | None, source: str,
                      queue: asyncio.Queue) -> None:
        from backends import diagnosis

        try:
            async for lines in self.kube().follow_log(run.handle["namespace"], pod, container):
                # Alerts go before their lines: a consumer that also diagnoses
                # lines (the session driver) then sees the rule as already reported.
                batch: list[Event] = []
                for text in lines:
                    found = diagnosis.diagnose_line(text)
                    if found and (pod, found.rule_id) not in state.alerted:
                        state.alerted.add((pod, found.rule_id))
                        batch.append(diagnosis.alert_for(found, run.spec))
                batch += [LogLine(text, "out", source) for text in lines]
                await queue.put(("log", batch))
        except KubeError as exc:
            await queue.put(("log", [Notice(f"log of {pod} ended: {exc.message}", "warning")]))
        except asyncio.CancelledError:
            raise
        finally:
            queue.put_nowait(("log-end", pod))  # a matrix run gives the free place to another TaskRun

    async def _finish(self, run: Run, state: _RunState, pr: dict[str, Any]) -> AsyncIterator[Event]:
        status, reason, message = succeeded_condition(pr) if not pr.get("deleted") else ("False", "Deleted", "")
        outcome: Outcome
        if status == "True":
            outcome = "succeeded"
        elif reason in CANCELLED:
            outcome = "cancelled"
        else:
            outcome = "failed"
        token = self._tokens.pop(run.id, None)
        if token is not None:
            self.registry.unregister(token)
        results = None
        summary: dict[str, Any] = {"reason": reason, "tasks": {n: task_state(t) for n, t in state.tasks.items()}}
        if self.profile.get("copy_results", True) and run.handle.get("tps") and not pr.get("deleted"):
            yield Notice("copying results from data-pvc")
            try:
                copied = await self.copy_results(run)
                results = str(run.store.results_dir)
                summary["results"] = copied
                yield Notice(f"results copied to {results}")
            except (KubeError, SweepdeckError) as exc:
                yield Alert("results", f"Results were not copied: {exc.message}", "warning")
        if self.profile.get("delete_after") or run.handle.get("delete_after"):
            await self.kube().delete(*TEKTON, "pipelineruns", run.handle["pipelinerun"], run.handle["namespace"])
            yield Notice(f"PipelineRun {run.handle['pipelinerun']} deleted")
        run.store.update_meta(state=outcome, finished=time.time(), reason=reason)
        yield Finished(outcome, f"PipelineRun {run.handle['pipelinerun']}: {reason} {message}".strip(),
                       results, summary)

    # ------------------------------------------------------------------ results

    async def copy_results(self, run: Run) -> dict[str, Any]:
        """Copy each branch's directory from data-pvc into the run store (exec tar, as ``kubectl cp``).

        A short-lived reader pod mounts data-pvc; its deletion is registered
        when it is created.
        """
        kube = self.kube()
        ns = run.handle["namespace"]
        pvc = (list(self.profile.get("pvcs") or []) + ["model-pvc", "data-pvc"])[1]
        mount = self.profile.get("results_path", "/mnt/exp")
        pod_name = (READER_PREFIX + run.id)[:63].rstrip("-")
        body = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name,
                         "labels": {"app.kubernetes.io/managed-by": "sweepdeck", "sweepdeck.io/experiment": run.id}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "reader", "image": self.profile.get("reader_image"),
                                "command": ["sleep", "3600"],
                                "volumeMounts": [{"name": "data", "mountPath": mount, "readOnly": True}]}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": pvc, "readOnly": True}}],
            },
        }
        try:
            await kube.create("", "v1", "pods", body, ns)
        except KubeError as exc:
            if exc.status != 409:
                raise
        token = self.registry.register(f"delete pod {pod_name} in {ns}",
                                       lambda: kube.delete("", "v1", "pods", pod_name, ns),
                                       resource={"kind": "pod", "name": pod_name, "namespace": ns})
        try:
            await self._wait_running(kube, ns, pod_name)
            copied: dict[str, Any] = {}
            for tp in run.handle.get("tps") or []:
                label = f"{run.id}-{tp}"
                try:
                    files = await kube.copy_from_pod(ns, pod_name, f"{mount}/{label}", run.store.results_dir / label,
                                                     container="reader")
                except KubeError as exc:
                    copied[label] = {"error": exc.message}
                    continue
                copied[label] = {"files": len(files), **summarize_report(files)}
            return copied
        finally:
            await kube.delete("", "v1", "pods", pod_name, ns)
            self.registry.unregister(token)

    async def _wait_running(self, kube: Kube, ns: str, pod: str, timeout: float = 300) -> None:
        stream = kube.watch("", "v1", "pods", ns, field_selector=f"metadata.name={pod}", timeout_seconds=int(timeout))
        deadline = time.monotonic() + timeout
        try:
            async for ev in stream:
                if isinstance(ev, KubeError):
                    continue
                for obj in ((ev.objects or []) if ev.type == "SYNC" else [ev.object or {}]):
                    phase = (obj.get("status") or {}).get("phase")
                    if phase == "Running":
                        return
                    if phase in ("Failed", "Succeeded"):
                        raise KubeError(f"reader pod {pod} ended ({phase}) before results could be copied")
                if time.monotonic() > deadline:
                    break
        finally:
            stream.stop()
        raise KubeError(f"reader pod {pod} did not start in {int(timeout)} s")

    # ------------------------------------------------------------------ cancel, cleanup, attach

    async def cancel(self, run: Run, *, graceful: bool = True) -> None:
        """Set ``spec.status``: CancelledRunFinally (finally clean-ups still run) or Cancelled."""
        value = "CancelledRunFinally" if graceful else "Cancelled"
        try:
            await self.kube().patch(*TEKTON, "pipelineruns", run.handle["pipelinerun"], {"spec": {"status": value}},
                                    run.handle["namespace"])
        except KubeError as exc:
            if exc.status != 404:
                raise

    async def cleanup(self, run: Run) -> None:
        """Cancel a still-running PipelineRun and remove the reader pod (idempotent)."""
        kube = self.kube()
        ns = run.handle["namespace"]
        pr = await kube.get(*TEKTON, "pipelineruns", run.handle["pipelinerun"], ns)
        if pr is not None and succeeded_condition(pr)[0] not in ("True", "False"):
            await self.cancel(run)
        await kube.delete("", "v1", "pods", (READER_PREFIX + run.id)[:63].rstrip("-"), ns)
        token = self._tokens.pop(run.id, None)
        if token is not None:
            self.registry.unregister(token)

    def describe(self, spec: ExperimentSpec | None, handle: dict[str, Any] | None,
                 meta: dict[str, Any] | None) -> str | None:
        """A matrix PipelineRun's own facts (the PipelineRun sets the engine per task)."""
        from backends.tekton.launch_matrix import is_matrix, matrix_facts

        return matrix_facts(spec, handle, meta) if spec is not None and is_matrix(spec) else None

    async def leftover_alive(self, resource: dict[str, Any]) -> bool | None:
        """Is a crashed run's PipelineRun (still running) or reader pod still there?"""
        kind = resource.get("kind")
        if kind not in ("pipelinerun", "pod"):
            return None
        group = TEKTON if kind == "pipelinerun" else ("", "v1")
        obj = await self.kube().get(*group, f"{kind}s", str(resource.get("name")), resource.get("namespace"))
        if obj is None:
            return False
        return kind == "pod" or succeeded_condition(obj)[0] not in ("True", "False")

    async def clean_leftover(self, resource: dict[str, Any]) -> str | None:
        """Cancel a crashed run's PipelineRun (finally tasks still run) / delete its reader pod."""
        kind, name, ns = resource.get("kind"), str(resource.get("name")), resource.get("namespace")
        if kind == "pipelinerun":
            try:
                await self.kube().patch(*TEKTON, "pipelineruns", name, {"spec": {"status": "CancelledRunFinally"}}, ns)
            except KubeError as exc:
                if exc.status != 404:
                    raise
                return f"PipelineRun {name} in {ns} is already gone"
            return f"cancelled PipelineRun {name} in {ns}"
        if kind == "pod":
            await self.kube().delete("", "v1", "pods", name, ns)
            return f"deleted pod {name} in {ns}"
        return None

    async def attach(self, saved: RunRecord) -> Run:
        """Re-open a run from its handle file (its supervisor is gone; the PipelineRun may not be)."""
        from backends.store import RunDir

        session = saved.handle_values()
        if not session.get("PIPELINERUN"):
            raise SweepdeckError(f"Run {saved.id} has no saved Tekton session.")
        import yaml

        from backends.tekton.matrix import facts, units

        store = RunDir(saved.path)
        handle: dict[str, Any] = {
            "namespace": session["NAMESPACE"], "pipelinerun": session["PIPELINERUN"],
            # "2,4" as launch wrote it, or "[2, 4]" once the session driver saved the handle
            "tps": [int(t) for t in re.findall(r"\d+", session.get("TPS", ""))],
        }
        if re.fullmatch(r"\d+(\.\d+)?", session.get("WORKLOAD_S") or ""):
            handle["workload_s"] = float(session["WORKLOAD_S"])
        rendered = saved.path / "rendered" / "pipeline.yaml"
        if rendered.exists():  # a BLIS run: its rendered Pipeline names the tasks
            try:
                pipeline = yaml.safe_load(rendered.read_text()) or {}
            except (OSError, ValueError):
                pipeline = {}
            spec_part = pipeline.get("spec") or {}
            handle["tasks"] = [t["name"] for t in (spec_part.get("tasks") or []) + (spec_part.get("finally") or [])]
        else:
            # A ready PipelineRun (a matrix sweep) has no rendered Pipeline: its own
            # pipelineSpec gives the TaskRuns, as created on the cluster (else as saved).
            pr = None
            with contextlib.suppress(KubeError):
                pr = await self.kube().get(*TEKTON, "pipelineruns", handle["pipelinerun"], handle["namespace"])
            if pr is None:
                try:
                    pr = yaml.safe_load((saved.path / "rendered" / "pipelinerun.yaml").read_text()) or {}
                except (OSError, ValueError):
                    pr = {}
            handle["tasks"], handle["matrix"] = units(pr), facts(pr)
        return Run(saved.id, self.name, saved.spec(), store, handle, started=saved.started or time.time())


def _workload_check(spec: ExperimentSpec, b: Build) -> Check:
    """What the inference-perf branches will run (the campaign format): load stages, data, API, upload."""
    from config import inference_perf

    rows = dict(inference_perf.summary_rows(spec.profile_template or {}))
    target = b.values.get("upload_target") if isinstance(b.values.get("upload_target"), dict) else None
    upload = (f"; raw results uploaded to {target.get('type')}" if target
              else "; no upload_target: results stay on data-pvc")
    detail = f"inference-perf, {rows['Load']}; data {rows['Data']}; API {rows['API']}{upload}"
    return Check("Workload", "pass", detail, data={"harness": "inference-perf", "seconds": b.workload_seconds})


def _unit_name(tr: dict[str, Any], pipelinerun: str) -> str:
    """A TaskRun's row name: its pipeline task, plus the matrix index for a matrix fan-out
    (Tekton names those ``<pr>-<task>-<i>``, all with the same pipelineTask label)."""
    meta = tr.get("metadata") or {}
    task = (meta.get("labels") or {}).get("tekton.dev/pipelineTask")
    name = meta.get("name", "")
    if task and name.startswith(f"{pipelinerun}-{task}-"):
        suffix = name[len(pipelinerun) + len(task) + 2:]
        if suffix.isdigit():
            return f"{task}-{suffix}"
    return task or name
