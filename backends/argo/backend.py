"""The ``argo`` backend: a database-driven sweep run by Argo Workflows workers.

A model version's configs live in the work queue (``sweepdeck queue serve``);
the benchmark Workflow (:mod:`backends.argo.workflow`) populates it, starts
``max-parallel-pods`` workers that claim batches through the queue's HTTP API,
and finalizes. This backend

* checks before submitting (cluster, Argo CRDs, namespace, the Secret with the
  queue's tokens — its existence only, never its data —, queue API and token, the
  model version populated) without changing anything, and offers remedies
  (create the namespace, create the token Secret, populate);
* creates the Workflow through the official ``kubernetes`` client (never the
  ``argo``/``kubectl`` binaries) and registers its deletion at once;
* watches it — the Workflow (``status.phase``, ``status.nodes``) and its pods,
  each with a watch that resumes from its resourceVersion and re-lists on
  410 Gone — follows one worker pod's log at a time, and reads the queue's
  progress every ``poll_interval`` seconds (the queue has no watch API), the
  group-by details only every :data:`DETAIL_EVERY` reads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backends.argo.sweep import QueueUnavailable, SweepReader
from backends.argo.workflow import (
    CRD_NAME,
    EXPERIMENT_LABEL,
    GROUP,
    MODEL_VERSION_ANNOTATION,
    MODEL_VERSION_LABEL,
    PLURAL,
    TOKEN_SECRET,
    VERSION,
    WORKFLOW_LABEL,
    check_model_version_id,
    label_value,
    workflow_for,
    yaml_dump,
)
from backends.base import BackendBase, Check, Remedy, Run
from backends.cleanup import CleanupRegistry
from backends.events import Alert, Event, Finished, Fix, LogLine, Notice, Outcome, Phase, Sweep
from backends.kube import Kube, KubeError, WatchEvent
from config.durations import parse_timestamp
from config.errors import SweepdeckError

if TYPE_CHECKING:
    from backends.store import RunDir, RunRecord
    from config.settings import Profile, Settings
    from config.spec import ExperimentSpec

log = logging.getLogger(__name__)

ARGO = (GROUP, VERSION, PLURAL)
CRD = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")
TERMINAL = ("Succeeded", "Failed", "Error")
#: Argo's grouping nodes: they only mirror their children.
GROUP_NODES = ("StepGroup", "TaskGroup")
#: Every n-th queue read also fetches failures, stale configs and breakdowns (group-bys).
DETAIL_EVERY = 5
#: A Sweep is emitted at least this often even when nothing changed (fresh rate/ETA).
SWEEP_HEARTBEAT_S = 30.0
ROLE_LABEL = "sweepdeck/role"


def workflow_phase(wf: dict[str, Any]) -> str:
    return ((wf.get("status") or {}).get("phase")) or "Pending"


def is_finished(wf: dict[str, Any]) -> bool:
    return workflow_phase(wf) in TERMINAL


def fmt_count(n: int) -> str:
    return f"{n:,}"


def populate_breakdown(info: dict[str, Any]) -> str:
    """``10 hardware configs × 3 frameworks × …`` from a populate dry run."""
    return " × ".join(
        [
            f"{info.get('hardware_configs', '?')} hardware configs",
            f"{info.get('frameworks', '?')} frameworks",
            f"{info.get('workloads', '?')} workloads",
            f"{info.get('batch_sizes', '?')} batch sizes",
            f"{info.get('sequence_lengths', '?')} sequence lengths",
        ]
    )


def populate_text(mvid: str, info: dict[str, Any]) -> str:
    """``9,000 (10 hardware configs × 3 frameworks × …)`` from a populate dry run."""
    return f"{fmt_count(int(info.get('total', 0)))} ({populate_breakdown(info)})"


def workflow_phase_event(wf: dict[str, Any]) -> Phase:
    """The Workflow itself as a ``kind="workflow"`` :class:`Phase`."""
    status = wf.get("status") or {}
    return Phase(
        (wf.get("metadata") or {}).get("name", ""),
        workflow_phase(wf),
        status.get("message") or "",
        kind="workflow",
        started=parse_timestamp(status.get("startedAt")),
        finished=parse_timestamp(status.get("finishedAt")),
    )


def node_phases(wf: dict[str, Any]) -> list[tuple[str, Phase]]:
    """``(node id, Phase)`` of each node in ``status.nodes``, in start order.

    Grouping nodes (they mirror their children) and the root node (the Workflow
    itself) are left out; a ``Retry`` node's retries are its attempts past the first.
    """
    name = (wf.get("metadata") or {}).get("name")
    nodes = [
        n
        for n in ((wf.get("status") or {}).get("nodes") or {}).values()
        if n.get("type") not in GROUP_NODES and n.get("id") != name
    ]
    nodes.sort(key=lambda n: (n.get("startedAt") or "", n.get("name") or ""))
    out = []
    for node in nodes:
        retries = max(0, len(node.get("children") or []) - 1) if node.get("type") == "Retry" else 0
        nid = node.get("id") or node.get("name") or ""
        out.append(
            (
                nid,
                Phase(
                    node.get("displayName") or node.get("name") or nid,
                    node.get("phase") or "Pending",
                    node.get("message") or "",
                    kind="node",
                    started=parse_timestamp(node.get("startedAt")),
                    finished=parse_timestamp(node.get("finishedAt")),
                    retries=retries,
                ),
            )
        )
    return out


@dataclass
class _RunState:
    """What the event loop knows about one run."""

    workflow: dict[str, Any] | None = None
    shown: dict[str, tuple] = field(default_factory=dict)
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    following: tuple[str, asyncio.Task] | None = None
    followed: set[str] = field(default_factory=set)
    sweep: Sweep | None = None
    sweep_key: tuple | None = None
    sweep_emitted: float = 0.0
    details: tuple[list, list, list, list] | None = None
    stale_alerted: set[Any] = field(default_factory=set)
    queue_down: bool = False


class ArgoBackend(BackendBase):
    """Runs work-queue sweeps on Argo Workflows (see module docs).

    Args:
        settings: The user settings.
        profile: An ``argo`` profile.
        registry: Cleanup registry (the process-wide one by default).
    """

    name = "argo"
    graceful_cancel_drains = True  # finally tasks / the exit handler run after a graceful stop
    capabilities = frozenset({"work_queue"})  # the sweep view reads its queue through reader()

    def __init__(self, settings: Settings, profile: Profile, *, registry: CleanupRegistry | None = None) -> None:
        super().__init__(settings, profile, registry=registry)
        self._kube: Kube | None = None
        self._tokens: dict[str, int] = {}
        self._stopping: set[str] = set()  # runs this session cancelled or deleted

    # ------------------------------------------------------------------ helpers

    def kube(self) -> Kube:
        if self._kube is None:
            self._kube = Kube.connect(self.profile.get("kubeconfig"), self.profile.get("context"))
        return self._kube

    def model_version_id(self, spec: ExperimentSpec | None = None) -> str:
        """The model version to sweep.

        ExperimentSpec has no model-version field (a spec describes one vLLM
        server), so it comes from the profile (``--model-version-id`` overrides it).

        Raises:
            SweepdeckError: none set, or not usable as an id.
        """
        return check_model_version_id(self.profile.get("model_version_id"))

    def namespace(self, spec: ExperimentSpec | None = None) -> str:
        ns = (
            (spec.namespace if spec is not None else None)
            or self.profile.get("namespace")
            or (self._kube.default_namespace if self._kube else None)
        )
        if not ns:
            raise SweepdeckError(
                "No namespace for the Argo workflow.",
                "Give one (--namespace NS) or set 'namespace' in the argo profile.",
            )
        return ns

    def queue_url(self) -> str:
        return str(self.profile.get("queue_url") or "http://127.0.0.1:8080").rstrip("/")

    def reader(self, model_version_id: str, queue_url: str | None = None) -> SweepReader:
        """A :class:`SweepReader` over the profile's queue API, sending its admin token (close it with ``aclose``)."""
        return SweepReader(
            queue_url or self.queue_url(),
            model_version_id,
            stale_after_min=float(self.profile.get("stale_after_min", 120.0)),
            token_file=self.profile.get("queue_token_file"),
        )

    def token_secret(self) -> str:
        return str(self.profile.get("queue_token_secret") or TOKEN_SECRET)

    def manifest(self, spec: ExperimentSpec) -> dict[str, Any]:
        """The Workflow that :meth:`launch` submits (no cluster needed)."""
        ns = spec.namespace or self.profile.get("namespace")
        return workflow_for(spec, self.profile, self.model_version_id(spec), ns)

    async def populate(self, spec: ExperimentSpec | None = None, *, dry_run: bool = False) -> dict[str, int]:
        """Populate the model version's default matrix through the queue API (offered by pre-flight)."""
        async with self.reader(self.model_version_id(spec)) as reader:
            return await reader.populate(dry_run=dry_run)

    # ------------------------------------------------------------------ preflight

    async def preflight(self, spec: ExperimentSpec) -> list[Check]:
        """Cluster, Argo, namespace, queue API, model version; changes nothing."""
        checks: list[Check] = []
        kube: Kube | None = None
        try:
            kube = self.kube()
            version = await kube.version()
        except KubeError as exc:
            checks.append(
                Check("Cluster reachable", "fail", exc.message, exc.hint or "Check your kubeconfig / log in again.")
            )
            kube = None
        else:
            checks.append(
                Check(
                    "Cluster reachable",
                    "pass",
                    f"context {kube.context or '(default)'} at {kube.server}, Kubernetes {version}",
                )
            )
        try:
            mvid: str | None = self.model_version_id(spec)
        except SweepdeckError as exc:
            checks.append(Check("Model version id", "fail", exc.message, exc.hint))
            mvid = None
        if kube is not None:
            checks += await self._cluster_checks(kube, spec, mvid)
        checks += await self._check_queue(mvid)
        if mvid:
            try:
                self.manifest(spec)
            except SweepdeckError as exc:
                checks.append(Check("Workflow manifest", "fail", exc.message, exc.hint))
        return checks

    async def _cluster_checks(self, kube: Kube, spec: ExperimentSpec, mvid: str | None) -> list[Check]:
        """Argo, the namespace, the token Secret, the experiment id and other sweeps of the model version."""
        checks = [await self._check_argo(kube)]
        try:
            ns = self.namespace(spec)
        except SweepdeckError as exc:
            return [*checks, Check("Namespace", "fail", exc.message, exc.hint)]
        checks.append(await self._check_namespace(kube, ns))
        ns_ok = checks[-1].status == "pass"
        # a missing namespace has no Secret either: say so now, its remedy runs after the namespace's
        checks.append(await self._check_token_secret(kube, ns, exists=ns_ok))
        if ns_ok:
            checks.append(await self._check_experiment(kube, ns, spec.experiment_id))
            if mvid:
                checks.append(await self._check_running(kube, ns, mvid))
        return checks

    async def _check_argo(self, kube: Kube) -> Check:
        name = "Argo installed"
        fix = (
            "Install Argo Workflows on the cluster (its CRDs and controller), e.g. "
            "kubectl create namespace argo && kubectl apply -n argo -f "
            "https://github.com/argoproj/argo-workflows/releases/latest/download/install.yaml"
        )
        crd = None
        try:
            crd = await kube.get(*CRD, CRD_NAME)
        except KubeError as exc:
            if exc.status not in (401, 403):
                return Check(name, "fail", exc.message, exc.hint)
        if crd is not None:
            versions = [v.get("name") for v in (crd.get("spec") or {}).get("versions") or [] if v.get("served", True)]
            if VERSION in versions:
                return Check(name, "pass", f"CRD {CRD_NAME} ({', '.join(versions)})")
            return Check(
                name,
                "fail",
                f"CRD {CRD_NAME} serves {', '.join(versions) or 'no version'}, not {VERSION}",
                "Upgrade Argo Workflows to a release that serves argoproj.io/v1alpha1.",
            )
        try:
            groups = await kube.api_groups()
        except KubeError as exc:
            return Check(name, "fail", exc.message, exc.hint)
        if "apiextensions.k8s.io" in groups and crd is None:
            # The CRD API answered and has no such CRD: it is really missing.
            try:
                await kube.list(*CRD, None, field_selector=f"metadata.name={CRD_NAME}", metadata_only=True)
                return Check(name, "fail", f"CRD {CRD_NAME} is not installed", fix)
            except KubeError:
                pass  # not allowed to read CRDs: discovery decides
        served = groups.get(GROUP) or []
        if VERSION in served:
            return Check(name, "pass", f"{GROUP} {', '.join(served)} (from API discovery)")
        return Check(name, "fail", f"the API serves no {GROUP}/{VERSION} (Argo Workflows CRDs)", fix)

    async def _check_namespace(self, kube: Kube, ns: str) -> Check:
        try:
            found = await kube.get("", "v1", "namespaces", ns)
        except KubeError as exc:
            return Check(f"Namespace {ns}", "warn", f"cannot read it: {exc.message}", exc.hint)
        if found is None:
            where = f"context {kube.context}" if kube.context else kube.server
            return Check(
                f"Namespace {ns}",
                "fail",
                "does not exist",
                f"Create it (kubectl create namespace {ns}) and install Argo's workflow RBAC there, "
                "or set 'namespace' in the argo profile.",
                remedy=Remedy(
                    "create_namespace",
                    f"Create namespace {ns}",
                    f"Create namespace {ns} ({where})? Argo's workflow service account and RBAC there are up to you.",
                    {"namespace": ns},
                ),
            )
        return Check(f"Namespace {ns}", "pass", "exists")

    async def _check_token_secret(self, kube: Kube, ns: str, *, exists: bool = True) -> Check:
        """The Secret the workflow's steps mount the queue tokens from: its existence only (the data is never read).

        Args:
            exists: False when the namespace is missing (so is the Secret; nothing is asked of the cluster).
        """
        from backends.queue.auth import default_token_path

        name = self.token_secret()
        title = f"Queue token Secret {name}"
        present = False
        if exists:
            try:
                present = await kube.exists("secrets", name, ns)
            except KubeError as exc:
                return Check(title, "warn", f"cannot check it: {exc.message}", exc.hint)
        if present:
            return Check(title, "pass", f"exists in {ns} (its contents are not read)")
        source = Path(self.profile.get("queue_token_file") or default_token_path()).expanduser()
        made = "" if source.exists() else " (generated now, mode 0600)"
        return Check(
            title,
            "fail",
            f"not found in {ns}: the workflow's steps could not authenticate to the queue",
            f"Create it from the queue's token file: kubectl create secret generic {name} -n {ns} "
            f"--from-file=tokens={source} --from-literal=worker-token=WORKER_TOKEN "
            "--from-literal=admin-token=ADMIN_TOKEN "
            "(`sweepdeck queue tokens --print worker|admin` prints them), or let sweepdeck create it.",
            remedy=Remedy(
                "create_token_secret",
                f"Create Secret {name}",
                f"Create Secret {name} in {ns} with the queue tokens of {source}{made} (keys tokens, "
                f"worker-token, admin-token)? The queue must accept them: sweepdeck queue serve --token-file {source}",
                {"namespace": ns, "secret": name, "token_file": str(source)},
            ),
        )

    async def _check_experiment(self, kube: Kube, ns: str, experiment_id: str) -> Check:
        """generateName never collides; the experiment label must stay unique so attach finds one Workflow."""
        try:
            items = await kube.list(*ARGO, ns, label_selector=f"{EXPERIMENT_LABEL}={experiment_id}", metadata_only=True)
        except KubeError as exc:
            return Check("Experiment id", "warn", f"cannot list workflows: {exc.message}", exc.hint)
        if not items:
            return Check("Experiment id", "pass", f"{experiment_id} is free")
        names = ", ".join(i["metadata"]["name"] for i in items)
        return Check(
            "Experiment id",
            "fail",
            f"workflow {names} in {ns} already belongs to experiment {experiment_id}",
            "Use another experiment id (--id).",
            data={"workflows": names},
        )

    async def _check_running(self, kube: Kube, ns: str, mvid: str) -> Check:
        value = label_value(mvid)
        if value is None:
            return Check("Other sweeps", "pass", "model version id is not a label value; not checked")
        try:
            items = await kube.list(*ARGO, ns, label_selector=f"{MODEL_VERSION_LABEL}={value}")
        except KubeError as exc:
            return Check("Other sweeps", "warn", f"cannot list workflows: {exc.message}", exc.hint)
        live = [i["metadata"]["name"] for i in items if not is_finished(i)]
        if not live:
            return Check("Other sweeps", "pass", f"no other workflow is sweeping {mvid}")
        return Check(
            "Other sweeps",
            "warn",
            f"{', '.join(live)} already sweeping {mvid}",
            "A second workflow shares the same queue (no config runs twice) but doubles the pods; "
            "watch the running one instead.",
            data={"workflows": live},
        )

    async def _check_queue(self, mvid: str | None) -> list[Check]:
        url = self.queue_url()
        try:
            reader = self.reader(mvid or "-", url)
        except SweepdeckError as exc:  # the profile's token file is missing or malformed
            return [Check("Queue token", "fail", exc.message, exc.hint)]
        try:
            if not await reader.health():
                return [
                    Check(
                        "Queue API",
                        "fail",
                        f"{url} does not answer /health",
                        "Start it with `sweepdeck queue serve --db URL`, or set queue_url in the argo profile.",
                    )
                ]
            out = [Check("Queue API", "pass", f"{url} answers")]
            if not mvid:
                return out
            try:
                prog = await reader.progress()
            except QueueUnavailable as exc:
                if exc.status in (401, 403):
                    return out + [Check("Queue token", "fail", exc.message, exc.hint)]
                return out + [Check(f"Model version {mvid}", "fail", exc.message, exc.hint)]
            out.append(Check("Queue token", "pass", "the queue accepts sweepdeck's admin token"))
            total = int(prog.get("total", 0))
            if total == 0:
                remedy = None
                try:
                    info = await reader.populate(dry_run=True)
                except QueueUnavailable as exc:
                    would = f"(dry run failed: {exc.message})"  # no count to show: nothing offered
                else:
                    would = populate_text(mvid, info)
                    expected = int(info.get("total", 0))
                    remedy = Remedy(
                        "populate",
                        f"Populate {mvid}",
                        f"Model version {mvid} has no configs. Populate it with {fmt_count(expected)} configs "
                        f"({populate_breakdown(info)})?",
                        {"model_version_id": mvid, "expected": expected},
                    )
                return out + [
                    Check(
                        f"Model version {mvid}",
                        "fail",
                        "has no configs in the queue",
                        f"Model version {mvid!r} has no configs. "
                        f"`sweepdeck queue populate {mvid}` would create {would}.",
                        remedy=remedy,
                    )
                ]
            left = int(prog.get("pending", 0)) + int(prog.get("running", 0))
            counts = (
                f"{fmt_count(total)} configs: {fmt_count(int(prog.get('pending', 0)))} pending, "
                f"{fmt_count(int(prog.get('running', 0)))} running, "
                f"{fmt_count(int(prog.get('completed', 0)))} completed, "
                f"{fmt_count(int(prog.get('failed', 0)))} failed"
            )
            if left == 0:
                return out + [
                    Check(
                        f"Model version {mvid}",
                        "warn",
                        counts + " — nothing left to run",
                        "The workers would exit at once. Retry failed configs or choose another model version.",
                    )
                ]
            return out + [Check(f"Model version {mvid}", "pass", counts, data={"total": total})]
        finally:
            await reader.aclose()

    async def find_workflow(self, model_version_id: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The newest Workflow sweeping ``model_version_id`` (found by its model-version label), or None.

        Raises:
            KubeError: the cluster cannot be reached or listed.
        """
        ns = namespace or self.namespace()
        value = label_value(model_version_id)
        if value is not None:
            items = await self.kube().list(*ARGO, ns, label_selector=f"{MODEL_VERSION_LABEL}={value}")
        else:  # not a label value: the annotation holds the full id
            items = [
                w
                for w in await self.kube().list(*ARGO, ns, label_selector="app.kubernetes.io/managed-by=sweepdeck")
                if ((w.get("metadata") or {}).get("annotations") or {}).get(MODEL_VERSION_ANNOTATION)
                == model_version_id
            ]
        items.sort(
            key=lambda w: (
                (w.get("metadata") or {}).get("creationTimestamp") or "",
                (w.get("metadata") or {}).get("name") or "",
            )
        )
        return items[-1] if items else None

    async def create_namespace(self, name: str) -> bool:
        """Create a missing namespace (offered by the namespace check); False if it already existed."""
        try:
            await self.kube().create(
                "", "v1", "namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            )
        except KubeError as exc:
            if exc.status != 409:
                raise
            return False
        return True

    async def _create_token_secret(self, args: dict[str, Any]) -> str:
        """The token Secret from the queue's token file (generated if missing).

        Its keys: ``tokens`` (the file), ``worker-token`` and ``admin-token``.
        """
        import base64

        from backends.argo.workflow import check_secret_name
        from backends.queue.auth import default_token_path, ensure_token_file, pick_token

        ns, name = str(args.get("namespace") or ""), check_secret_name(args.get("secret") or self.token_secret())
        if not ns:
            raise SweepdeckError("The create_token_secret remedy names no namespace.")
        path, entries, created = ensure_token_file(str(args.get("token_file") or default_token_path()))
        admin = pick_token(entries, "admin", path)
        worker = pick_token(entries, "worker", path)
        lines = "".join(f"{n} {r} {t}\n" for n, r, t in entries)
        data = {
            k: base64.b64encode(v.encode()).decode()
            for k, v in (("tokens", lines), ("worker-token", worker), ("admin-token", admin))
        }
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "sweepdeck"}},
            "data": data,
        }
        try:
            await self.kube().create("", "v1", "secrets", body, ns)
        except KubeError as exc:
            if exc.status == 409:
                return f"Secret {name} already exists in {ns} (left as it is)"
            raise SweepdeckError(f"Could not create Secret {name} in {ns}: {exc.message}", exc.hint) from None
        made = f"{path} (generated now, mode 0600)" if created else str(path)
        return f"created Secret {name} in {ns} from the queue tokens of {made}"

    async def remedy(self, spec: ExperimentSpec, remedy: Remedy) -> str:
        """Carry out a pre-flight remedy the user confirmed (see :func:`backends.base.apply_remedy`).

        ``create_namespace`` creates the namespace through the Kubernetes API;
        ``create_token_secret`` creates the Secret with the queue's tokens (from the
        profile's ``queue_token_file`` or the default token file, generated if missing);
        ``populate`` populates the model version's default matrix through the queue API.

        Returns:
            What was done, as one line.

        Raises:
            SweepdeckError: an unknown remedy, or the API refused or did not answer.
        """
        if remedy.id == "create_namespace":
            ns = str(remedy.args.get("namespace") or "")
            if not ns:
                raise SweepdeckError("The create_namespace remedy names no namespace.")
            try:
                created = await self.create_namespace(ns)
            except KubeError as exc:
                raise SweepdeckError(f"Could not create namespace {ns}: {exc.message}", exc.hint) from None
            return f"created namespace {ns}" if created else f"namespace {ns} already exists"
        if remedy.id == "create_token_secret":
            return await self._create_token_secret(remedy.args)
        if remedy.id == "populate":
            mvid = check_model_version_id(remedy.args.get("model_version_id") or self.model_version_id(spec))
            async with self.reader(mvid) as reader:
                try:
                    done = await reader.populate(dry_run=False)
                except QueueUnavailable as exc:
                    raise SweepdeckError(f"Could not populate {mvid}: {exc.message}", exc.hint) from None
            count = fmt_count(int(done.get("created", 0)))
            text = f"populated {mvid}: {count} configs created ({populate_breakdown(done)})"
            if done.get("existing"):
                text += f", {fmt_count(int(done['existing']))} already there"
            return text
        raise SweepdeckError(f"The argo backend has no remedy {remedy.id!r}.", "Do it by hand, then re-run pre-flight.")

    # ------------------------------------------------------------------ launch

    async def launch(self, spec: ExperimentSpec, store: RunDir) -> Run:
        """Create the Workflow and register its deletion; ``store`` is the run directory."""
        kube = self.kube()
        mvid = self.model_version_id(spec)
        ns = self.namespace(spec)
        body = workflow_for(spec, self.profile, mvid, ns)
        store.write_rendered("workflow.yaml", yaml_dump(body))
        created = await kube.create(*ARGO, body, ns)
        name = created["metadata"]["name"]
        handle = {
            "namespace": ns,
            "workflow": name,
            "model_version_id": mvid,
            "queue_url": self.queue_url(),
            "context": kube.context,
        }
        run = Run(spec.experiment_id, self.name, spec, store, handle)
        # Registered before anything else can fail: the Workflow's pods must not outlive the session.
        self._tokens[run.id] = self.registry.register(f"delete Workflow {name} in {ns}", lambda: self._delete(run),
                                                      resource={"kind": "workflow", "name": name, "namespace": ns})
        store.write_handle({
            "BACKEND": self.name, "NAMESPACE": ns, "WORKFLOW": name, "MODEL_VERSION_ID": mvid,
            "QUEUE_URL": handle["queue_url"], "CONTEXT": kube.context or "",
            "KUBECONFIG": self.profile.get("kubeconfig") or "",
        })
        store.update_meta(namespace=ns, workflow=name, model_version_id=mvid)
        return run

    # ------------------------------------------------------------------ events

    async def events(self, run: Run) -> AsyncIterator[Event]:
        """Phase/LogLine/Sweep/Alert/Notice events until one Finished."""
        kube = self.kube()
        ns, wf_name = run.handle["namespace"], run.handle["workflow"]
        timeout = int(self.profile.get("watch_timeout", 300))
        streams = {
            "wf": kube.watch(*ARGO, ns, field_selector=f"metadata.name={wf_name}", timeout_seconds=timeout),
            "pod": kube.watch(
                "", "v1", "pods", ns, label_selector=f"{WORKFLOW_LABEL}={wf_name}", timeout_seconds=timeout
            ),
        }
        queue: asyncio.Queue = asyncio.Queue()
        state = _RunState()
        reader = self.reader(run.handle["model_version_id"], run.handle.get("queue_url"))
        tasks = [asyncio.create_task(self._pump(tag, s, queue)) for tag, s in streams.items()]
        tasks.append(asyncio.create_task(self._poll(reader, queue, float(self.profile.get("poll_interval", 2.0)))))
        finished: Finished | None = None
        try:
            while finished is None:
                tag, item = await queue.get()
                if tag != "wf" or isinstance(item, KubeError):
                    for ev in self._handle(run, state, queue, tag, item):
                        yield ev
                    continue
                events, done = self._workflow_events(run, state, item)
                for ev in events:
                    yield ev
                if done is not None:
                    async for ev in self._finish(run, state, done, reader, queue):
                        if isinstance(ev, Finished):
                            finished = ev
                        yield ev
        finally:
            await _stop_following(run, streams, tasks, state, reader)

    def _handle(self, run: Run, state: _RunState, queue: asyncio.Queue, tag: str, item: Any) -> list[Event]:
        """The events of one item of the event loop's queue, except the Workflow's own."""
        if isinstance(item, KubeError):
            return [Notice(f"{item.message} (retrying)", "warning")]
        if tag == "log":
            return list(item)
        if tag == "log-end":
            if state.following is not None and state.following[0] == item:
                state.following = None
            return self._follow_next(run, state, queue)
        if tag == "sweep":
            return self._sweep_events(run, state, *item)
        if tag == "sweep-error":
            if state.queue_down:
                return []
            state.queue_down = True
            every = self.profile.get("poll_interval", 2.0)
            return [Notice(f"{item.message} (retrying every {every:g} s)", "warning")]
        if tag == "pod":
            self._pods(state, item)
            return self._follow_next(run, state, queue)
        return []

    @staticmethod
    async def _pump(tag: str, stream, queue: asyncio.Queue) -> None:
        async for item in stream:
            await queue.put((tag, item))

    @staticmethod
    async def _poll(reader: SweepReader, queue: asyncio.Queue, interval: float) -> None:
        """Read the queue every ``interval`` s; the group-by details every DETAIL_EVERY-th read."""
        tick = 0
        while True:
            details = tick % DETAIL_EVERY == 0
            try:
                snap = await reader.snapshot(details=details)
            except QueueUnavailable as exc:
                await queue.put(("sweep-error", exc))
            else:
                await queue.put(("sweep", (snap, details)))
            tick += 1
            await asyncio.sleep(interval)

    # -- the queue

    def _sweep_events(self, run: Run, state: _RunState, snap: Sweep, details: bool, force: bool = False) -> list[Event]:
        out: list[Event] = []
        if state.queue_down:
            state.queue_down = False
            out.append(Notice("the work-queue API answers again"))
        if details:
            state.details = (snap.failures, snap.stale, snap.by_workload, snap.by_priority)
        elif state.details is not None:
            # Counts-only reads keep showing the last details instead of blanking them.
            snap.failures, snap.stale, snap.by_workload, snap.by_priority = (list(x) for x in state.details)
        state.sweep = snap
        key = (
            snap.total,
            snap.pending,
            snap.running,
            snap.completed,
            snap.failed,
            round(snap.configs_per_min, 2),
            json.dumps(
                [snap.failures, [c.get("id") for c in snap.stale], snap.by_workload, snap.by_priority],
                default=str,
                sort_keys=True,
            ),
        )
        now = time.monotonic()
        if force or key != state.sweep_key or now - state.sweep_emitted >= SWEEP_HEARTBEAT_S:
            state.sweep_key, state.sweep_emitted = key, now
            out.append(snap)
        if details and snap.stale:
            new = [c for c in snap.stale if c.get("id") not in state.stale_alerted]
            if new:
                state.stale_alerted.update(c.get("id") for c in new)
                minutes = f"{snap.stale_after_min:g}"
                first = new[0]
                out.append(
                    Alert(
                        "stale-configs",
                        f"{len(snap.stale)} config(s) of {snap.model_version_id} have been running for over "
                        f"{minutes} min "
                        "(a worker was probably interrupted); reset them to pending.",
                        "warning",
                        fixes=[
                            Fix("Reset stale configs", {}, f"sweepdeck queue reset-stale --timeout-minutes {minutes}")
                        ],
                        evidence=f"config #{first.get('id')} {first.get('workload_type', '')} "
                        f"started {first.get('started_at')}".strip(),
                    )
                )
        return out

    # -- the Workflow

    def _workflow_events(
        self, run: Run, state: _RunState, item: WatchEvent
    ) -> tuple[list[Event], dict[str, Any] | None]:
        wf_name = run.handle["workflow"]
        objs = (item.objects or []) if item.type == "SYNC" else [item.object or {}]
        if (item.type == "SYNC" and not objs) or item.type == "DELETED":
            return [Notice(f"Workflow {wf_name} no longer exists", "warning")], {"deleted": True}
        events: list[Event] = []
        for wf in objs:
            state.workflow = wf
            status = wf.get("status") or {}
            phase = workflow_phase(wf)
            key = (phase, status.get("message") or "")
            if state.shown.get("__workflow__") != key:
                state.shown["__workflow__"] = key
                events.append(
                    Phase(
                        wf_name,
                        phase,
                        status.get("message") or "",
                        kind="workflow",
                        started=parse_timestamp(status.get("startedAt")),
                        finished=parse_timestamp(status.get("finishedAt")),
                    )
                )
            for nid, node in node_phases(wf):
                nkey = (node.state, node.detail, node.finished, node.retries)
                if state.shown.get(nid) == nkey:
                    continue
                state.shown[nid] = nkey
                events.append(node)
            if phase in TERMINAL:
                return events, wf
        return events, None

    # -- pods and their logs

    @staticmethod
    def _pods(state: _RunState, item: WatchEvent) -> None:
        if item.type == "SYNC":
            state.pods = {p["metadata"]["name"]: p for p in item.objects or []}
            return
        pod = item.object or {}
        name = (pod.get("metadata") or {}).get("name")
        if not name:
            return
        if item.type == "DELETED":
            state.pods.pop(name, None)
        else:
            state.pods[name] = pod

    def _follow_next(self, run: Run, state: _RunState, queue: asyncio.Queue) -> list[Event]:
        """Follow one running pod's log; a worker when there is one (see module docs)."""
        if state.following is not None and not state.following[1].done():
            return []
        def is_worker(pod: dict[str, Any]) -> bool:
            meta = pod.get("metadata") or {}
            return (meta.get("labels") or {}).get(ROLE_LABEL) == "worker" or "worker" in (
                meta.get("annotations") or {}
            ).get("workflows.argoproj.io/node-name", "")

        def candidate(pod: dict[str, Any]) -> bool:
            phase = (pod.get("status") or {}).get("phase")
            # a running pod; or a one-off step (populate, finalize) that ended before it was seen running:
            # its log is still there and says what it did (or why it failed)
            return phase == "Running" or (phase in ("Succeeded", "Failed") and not is_worker(pod))

        running = [p for name, p in state.pods.items() if name not in state.followed and candidate(p)]
        if not running:
            return []

        def rank(pod: dict[str, Any]) -> tuple[int, int, str]:
            live = (pod.get("status") or {}).get("phase") == "Running"
            return (0 if live else 1, 0 if is_worker(pod) else 1, (pod.get("metadata") or {}).get("name", ""))

        pod = min(running, key=rank)
        name = pod["metadata"]["name"]
        containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        container = "main" if "main" in containers else (containers[0] if containers else None)
        state.followed.add(name)
        state.following = (name, asyncio.create_task(self._follow(run, name, container, queue)))
        return [Notice(f"following the log of pod {name}")]

    async def _follow(self, run: Run, pod: str, container: str | None, queue: asyncio.Queue) -> None:
        try:
            async for lines in self.kube().follow_log(run.handle["namespace"], pod, container):
                await queue.put(("log", [LogLine(text, "out", pod) for text in lines]))
        except KubeError as exc:
            await queue.put(("log", [Notice(f"log of {pod} ended: {exc.message}", "warning")]))
        await queue.put(("log-end", pod))

    # -- the end

    async def _finish(
        self, run: Run, state: _RunState, wf: dict[str, Any], reader: SweepReader, queue: asyncio.Queue
    ) -> AsyncIterator[Event]:
        wf_name = run.handle["workflow"]
        deleted = bool(wf.get("deleted"))
        status = wf.get("status") or {}
        phase = "Deleted" if deleted else workflow_phase(wf)
        message = "" if deleted else (status.get("message") or "")
        outcome = self._outcome(run, wf, phase, message)
        # Let the log follower deliver what its pod wrote last (it ends with the pod).
        if state.following is not None and not state.following[1].done():
            await asyncio.wait([state.following[1]], timeout=1.0)
        while not queue.empty():
            tag, item = queue.get_nowait()
            if tag == "log":
                for ev in item:
                    yield ev
        try:
            snap = await reader.snapshot(details=True)
            for ev in self._sweep_events(run, state, snap, True, force=True):
                yield ev
        except QueueUnavailable as exc:
            yield Notice(f"final queue read failed: {exc.message}", "warning")
        if outcome == "failed":
            yield _failure_alert(wf_name, phase, message, status)
        token = self._tokens.pop(run.id, None)
        if token is not None:
            self.registry.unregister(token)
        delete_after = self.profile.get("delete_after") or run.handle.get("delete_after")
        if not deleted and delete_after and await self.kube().delete(*ARGO, wf_name, run.handle["namespace"]):
            yield Notice(f"Workflow {wf_name} deleted")
        summary, text = _summary(run, wf_name, phase, message, status, state.sweep)
        run.store.update_meta(state=outcome, finished=time.time(), phase=phase)
        yield Finished(outcome, text, None, summary)

    def _outcome(self, run: Run, wf: dict[str, Any], phase: str, message: str) -> Outcome:
        if phase == "Succeeded":
            return "succeeded"
        stopped = (
            run.id in self._stopping
            or bool((wf.get("spec") or {}).get("shutdown"))
            or message.startswith("Stopped with strategy")
        )
        return "cancelled" if stopped else "failed"

    # ------------------------------------------------------------------ cancel, cleanup, attach

    async def cancel(self, run: Run, *, graceful: bool = True) -> None:
        """Argo's stop: ``spec.shutdown`` Stop (exit handlers still run) or Terminate.

        Either way Argo sends the worker pods SIGTERM; ``sweepdeck queue worker``
        then hands its unfinished configs back to pending.
        """
        self._stopping.add(run.id)
        try:
            await self.kube().patch(
                *ARGO,
                run.handle["workflow"],
                {"spec": {"shutdown": "Stop" if graceful else "Terminate"}},
                run.handle["namespace"],
            )
        except KubeError as exc:
            if exc.status != 404:
                raise

    async def _delete(self, run: Run) -> bool:
        self._stopping.add(run.id)
        return await self.kube().delete(*ARGO, run.handle["workflow"], run.handle["namespace"])

    async def cleanup(self, run: Run) -> None:
        """Delete the Workflow while it still runs (that stops its pods); idempotent.

        A finished Workflow is kept — its node states and the finalize step's
        ranking stay readable — unless the profile sets ``delete_after``.
        """
        wf = await self.kube().get(*ARGO, run.handle["workflow"], run.handle["namespace"])
        if wf is not None and (
            not is_finished(wf) or self.profile.get("delete_after") or run.handle.get("delete_after")
        ):
            await self._delete(run)
        token = self._tokens.pop(run.id, None)
        if token is not None:
            self.registry.unregister(token)

    async def leftover_alive(self, resource: dict[str, Any]) -> bool | None:
        """Is a crashed run's Workflow still running?"""
        if resource.get("kind") != "workflow":
            return None
        wf = await self.kube().get(*ARGO, str(resource.get("name")), resource.get("namespace"))
        return wf is not None and not is_finished(wf)

    async def clean_leftover(self, resource: dict[str, Any]) -> str | None:
        """Delete a crashed run's Workflow (that stops its pods)."""
        if resource.get("kind") != "workflow":
            return None
        name, ns = str(resource.get("name")), resource.get("namespace")
        deleted = await self.kube().delete(*ARGO, name, ns)
        return f"deleted Workflow {name} in {ns}" if deleted else f"Workflow {name} in {ns} is already gone"

    async def attach(self, saved: RunRecord) -> Run:
        """Find a run's Workflow again (by name, else by its experiment label)."""
        from backends.store import RunDir

        session = saved.handle_values()
        meta = saved.meta
        ns = session.get("NAMESPACE") or meta.get("namespace") or self.profile.get("namespace")
        if not ns:
            raise SweepdeckError(f"Run {saved.id} has no saved Argo namespace.")
        kube = self.kube()
        name = session.get("WORKFLOW") or meta.get("workflow")
        wf = await kube.get(*ARGO, name, ns) if name else None
        if wf is None:
            found = await kube.list(*ARGO, ns, label_selector=f"{EXPERIMENT_LABEL}={saved.id}")
            found.sort(key=lambda w: w["metadata"].get("creationTimestamp", ""))
            if not found:
                raise SweepdeckError(
                    f"No Workflow of run {saved.id} in {ns} (looked for {name or 'its label'}).",
                    "It was deleted; its configs' progress is still in the queue: sweepdeck argo watch MVID",
                )
            wf = found[-1]
        mvid = (
            session.get("MODEL_VERSION_ID")
            or meta.get("model_version_id")
            or ((wf.get("metadata") or {}).get("annotations") or {}).get("sweepdeck.io/model-version-id")
            or self.model_version_id()
        )
        handle = {
            "namespace": ns,
            "workflow": wf["metadata"]["name"],
            "model_version_id": str(mvid),
            "queue_url": session.get("QUEUE_URL") or self.queue_url(),
            "context": session.get("CONTEXT", ""),
        }
        return Run(saved.id, self.name, saved.spec(), RunDir(saved.path), handle, started=saved.started or time.time())


async def _stop_following(run: Run, streams: dict[str, Any], tasks: list[asyncio.Task], state: _RunState,
                          reader: SweepReader) -> None:
    """End the watches, the queue poll and the log follower of one run's event loop."""
    for stream in streams.values():
        stream.stop()
    for task in tasks:
        task.cancel()
    if state.following is not None:
        state.following[1].cancel()
    await reader.aclose()
    run.store.flush()


def _failure_alert(wf_name: str, phase: str, message: str, status: dict[str, Any]) -> Alert:
    """The Alert of a failed Workflow: its message and the pods that failed."""
    failed_nodes = [
        n
        for n in (status.get("nodes") or {}).values()
        if n.get("type") == "Pod" and n.get("phase") in ("Failed", "Error")
    ]
    evidence = "; ".join(f"{n.get('displayName')}: {n.get('message') or n.get('phase')}" for n in failed_nodes[:3])
    text = f"Workflow {wf_name} {phase}" + (f": {message}" if message else "")
    if failed_nodes:
        shown = ", ".join(str(n.get("displayName")) for n in failed_nodes[:5])
        text += f" ({len(failed_nodes)} failed pod(s): {shown})"
    return Alert("workflow-failed", text, "error", evidence=evidence or message)


def _summary(
    run: Run, wf_name: str, phase: str, message: str, status: dict[str, Any], snap: Sweep | None
) -> tuple[dict[str, Any], str]:
    """The Finished event's summary (configs, pods by phase) and its one-line text."""
    configs = {k: getattr(snap, k) for k in ("total", "pending", "running", "completed", "failed")} if snap else {}
    nodes: dict[str, int] = {}
    for n in (status.get("nodes") or {}).values():
        if n.get("type") == "Pod":
            nodes[n.get("phase") or "Pending"] = nodes.get(n.get("phase") or "Pending", 0) + 1
    summary: dict[str, Any] = {
        "workflow": wf_name,
        "phase": phase,
        "model_version_id": run.handle["model_version_id"],
        "configs": configs,
        "pods": nodes,
    }
    text = f"Workflow {wf_name} {phase}" + (f": {message}" if message else "")
    if snap is not None:
        text += (
            f"; {fmt_count(snap.completed)}/{fmt_count(snap.total)} configs completed, {fmt_count(snap.failed)} failed"
        )
    return summary, text


def sweep_spec(
    settings: Settings,
    profile: Profile,
    *,
    model_version_id: str,
    model: str | None = None,
    experiment_id: str | None = None,
    namespace: str | None = None,
) -> ExperimentSpec:
    """A spec for a queue sweep (``sweepdeck argo submit``): no catalog model is needed.

    The spec names the run (experiment id ``sweep-<mvid>-<time>``), the namespace
    and the model the workers ask for at their endpoint; its engine settings are
    unused by the workflow.
    """
    from config.catalog import dns_label, make_workload
    from config.spec import EngineSettings, ExperimentSpec, Origin, Source

    mvid = check_model_version_id(model_version_id)
    spec = ExperimentSpec(
        model="model",
        backend="argo",
        workload=make_workload("queue-sweep", {}),
        engine=EngineSettings(image=profile.get("image") or "sweepdeck:latest"),
        experiment_id=dns_label(f"sweep-{mvid}-{time.strftime('%m%d-%H%M%S')}"),
        # a profile made of defaults (no argo profile in the config) has no name to find it by on attach
        profile=profile.name if profile.name in settings.profiles else None,
        origins={"experiment_id": Origin(Source.AUTO)},
    )
    if model:
        spec = spec.set("model", model)
    if experiment_id:
        spec = spec.set("experiment_id", experiment_id)
    ns = namespace or profile.get("namespace")
    if ns:
        spec = spec.set("namespace", ns)
    return spec
