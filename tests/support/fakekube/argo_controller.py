"""A test controller that advances Argo Workflows in the fake API server like the Argo controller.

It subscribes to a :class:`~tests.support.fakekube.FakeKube` and, for every
Workflow created there, validates it (every ``{{workflow.parameters.x}}`` used
must have a value; ``withParam`` and ``withSequence`` on one step is rejected),
sets ``status.phase`` Pending → Running and runs the entrypoint's ``steps``
group by group: each step becomes a node in ``status.nodes`` (a ``Retry`` node
with ``Pod`` attempt children when its template has a ``retryStrategy``),
``withSequence`` fans out into ``name(i:i)`` nodes, all of a group at once —
so the worker group runs ``max-parallel-pods`` pods in parallel. Every Pod
node gets a real Pod (labels ``workflows.argoproj.io/workflow`` plus the
template's ``metadata.labels``; containers ``main`` and ``wait``) with a log in
the fake server. A failed step fails its group after its siblings end, and the
Workflow ends ``Failed`` with Argo's ``child '<id>' failed`` message; otherwise
``Succeeded``. ``spec.shutdown: Stop|Terminate`` stops running pods (their
hooks see ``ctx.stopped``) and ends the Workflow ``Failed`` with
``Stopped with strategy '<s>'``. Deleting a Workflow deletes its pods.

What a pod does:

* ``run_pod(ctx)`` (constructor argument), called in its own thread with a
  :class:`PodContext` (``template``, ``node``, ``params``, ``args``, ``log()``,
  ``stopped``); it returns ``None``/``True`` (success), ``False`` or
  ``(ok, message)``; an exception fails the pod with its text. Return
  ``NotImplemented`` to get the default behaviour for that pod;
* by default: two log lines, then success after ``step`` seconds.

Script it with :meth:`ArgoController.fail` (node display name or prefix, e.g.
``worker(1:1)`` or ``finalize``; ``times`` = how many attempts fail, default
all) and ``hang`` (prefix → True keeps the pod running until shutdown).
:func:`install_argo_crds` registers ``apiextensions.k8s.io/v1``
CustomResourceDefinitions and creates Argo's, as installing Argo does.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.support.fakekube.controller import ControllerLoop
from tests.support.fakekube.server import ApiError, FakeKube, ResourceType

A = "argoproj.io/v1alpha1"
WORKFLOW_LABEL = "workflows.argoproj.io/workflow"
CRD_TYPE = ResourceType("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
                        namespaced=False)
_PARAM = re.compile(r"\{\{\s*workflow\.parameters\.([A-Za-z0-9_-]+)\s*\}\}")
_ITEM = re.compile(r"\{\{\s*item\s*\}\}")
_INPUT = re.compile(r"\{\{\s*inputs\.parameters\.([A-Za-z0-9_-]+)\s*\}\}")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def install_argo_crds(fake: FakeKube) -> list[str]:
    """Serve CRDs and create Argo's (workflows, cronworkflows, workflowtemplates)."""
    fake.register_resource(CRD_TYPE)
    names = []
    for plural, kind in (("workflows", "Workflow"), ("cronworkflows", "CronWorkflow"),
                         ("workflowtemplates", "WorkflowTemplate")):
        name = f"{plural}.argoproj.io"
        if not fake.exists("apiextensions.k8s.io/v1", "CustomResourceDefinition", name):
            fake.create({
                "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": name},
                "spec": {"group": "argoproj.io", "scope": "Namespaced", "names": {"plural": plural, "kind": kind},
                         "versions": [{"name": "v1alpha1", "served": True, "storage": True}]},
            })
        names.append(name)
    return names


def remove_argo(fake: FakeKube) -> None:
    """Make the server look like a cluster without Argo: no CRDs, no argoproj.io in discovery."""
    fake._types = {k: v for k, v in fake._types.items() if k[0] != "argoproj.io"}
    if ("apiextensions.k8s.io", "v1", "customresourcedefinitions") in fake._types:
        for crd in fake.list("apiextensions.k8s.io/v1", "CustomResourceDefinition"):
            if crd["metadata"]["name"].endswith(".argoproj.io"):
                fake.delete("apiextensions.k8s.io/v1", "CustomResourceDefinition", crd["metadata"]["name"])


def node_id(wf: str, name: str) -> str:
    return f"{wf}-{zlib.crc32(name.encode()) % 10**10}"


@dataclass
class PodContext:
    """What a pod hook sees (see module docs)."""

    fake: FakeKube
    namespace: str
    pod: str
    workflow: str
    node: str
    template: str
    params: dict[str, str]
    args: list[str]
    attempt: int
    stopped: threading.Event = field(default_factory=threading.Event)

    def log(self, text: str) -> None:
        """Append lines to the pod's ``main`` container log (followers get them at once)."""
        self.fake.append_log(self.namespace, self.pod, text, container="main")

    def arg(self, flag: str, default: str | None = None) -> str | None:
        """The value after ``flag`` in the container's args."""
        if flag in self.args:
            i = self.args.index(flag)
            if i + 1 < len(self.args):
                return self.args[i + 1]
        return default


class ArgoController(ControllerLoop):
    """Drives Argo Workflows in a fake API server from a background thread."""

    def __init__(self, fake: FakeKube, *, step: float = 0.05,
                 run_pod: Callable[[PodContext], Any] | None = None) -> None:
        super().__init__(fake, "argo-controller")
        self.step = step
        self.run_pod = run_pod
        self.failures: dict[str, tuple[str, int | None]] = {}
        self.hang: dict[str, bool] = {}
        self.pods_started: list[str] = []
        self._runs: dict[tuple[str, str], dict[str, Any]] = {}
        self._hooks: list[threading.Thread] = []

    # ------------------------------------------------------------------ control

    def stop(self) -> None:
        for run in list(self._runs.values()):  # pods running user code stop first
            for ctx in run.get("ctx", {}).values():
                ctx.stopped.set()
        super().stop()
        for t in self._hooks:
            t.join(5)

    def fail(self, node: str, message: str = "Error (exit code 1)", times: int | None = None) -> None:
        """Fail the pods of the node named (or prefixed) ``node``: the first ``times`` attempts, or all."""
        self.failures[node] = (message, times)

    # ------------------------------------------------------------------ events

    def _on_event(self, etype: str, obj: dict[str, Any]) -> None:
        if obj.get("kind") != "Workflow":
            return
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if etype == "ADDED" and key not in self._runs:
            self._runs[key] = {"started": False}
            self._later(0, lambda: self._start(key))
        elif etype == "MODIFIED" and key in self._runs:
            wanted = (obj.get("spec") or {}).get("shutdown")
            run = self._runs[key]
            if wanted and run.get("started") and not run.get("shutdown") and not run.get("done"):
                run["shutdown"] = wanted
                self._later(0, lambda: self._shutdown(key))
        elif etype == "DELETED":
            run = self._runs.pop(key, None)
            if run:
                run["done"] = True
                for ctx in run.get("ctx", {}).values():
                    ctx.stopped.set()
            # ownerReferences garbage collection: the workflow's pods go with it
            for pod in self.fake.list("v1", "Pod", key[0], label_selector=f"{WORKFLOW_LABEL}={key[1]}"):
                with contextlib.suppress(ApiError):
                    self.fake.delete("v1", "Pod", pod["metadata"]["name"], key[0])

    # ------------------------------------------------------------------ workflows

    def _patch_status(self, key: tuple[str, str], status: dict[str, Any]) -> None:
        ns, name = key
        self.fake.patch(A, "Workflow", name, {"status": status}, ns, status_only=True)

    def _start(self, key: tuple[str, str]) -> None:
        ns, name = key
        try:
            wf = self.fake.get(A, "Workflow", name, ns)
        except ApiError:
            return
        spec = wf.get("spec") or {}
        params = {p["name"]: p.get("value") for p in (spec.get("arguments") or {}).get("parameters") or []}
        templates = {t["name"]: t for t in spec.get("templates") or []}
        problem = self._validate(spec, params, templates)
        run = self._runs[key]
        if problem:
            run["done"] = True
            self._patch_status(key,
                               {"phase": "Failed", "startedAt": _now(), "finishedAt": _now(),
                                "message": f"invalid spec: {problem}"})
            return
        run.update({
            "started": True, "params": {k: str(v) for k, v in params.items()}, "templates": templates,
            "groups": templates[spec["entrypoint"]].get("steps") or [], "group": -1, "nodes": {}, "ctx": {},
            "active": set(), "shutdown": None, "done": False, "pods": 0, "pods_ok": 0,
        })
        self._patch_status(key, {"phase": "Pending", "startedAt": _now(), "progress": "0/0"})
        root = self._node(key, name, name, "Steps", spec["entrypoint"], None, "Running")
        run["root"] = root["id"]
        self._later(self.step / 2, lambda: self._running(key))

    def _validate(self, spec: dict[str, Any], params: dict[str, Any], templates: dict[str, Any]) -> str | None:
        entry = spec.get("entrypoint")
        if entry not in templates:
            return f"spec.entrypoint {entry!r} template not found"
        import json

        text = json.dumps(spec.get("templates"))
        for used in sorted(set(_PARAM.findall(text))):
            if params.get(used) is None:
                return f"spec.arguments.{used}.value is required"
        for group in templates[entry].get("steps") or []:
            for step in group:
                if "withParam" in step and "withSequence" in step:
                    return (f"templates.{entry}.steps[{step.get('name')}] "
                            "only one of withItems, withParam, withSequence can be specified")
                if step.get("template") not in templates:
                    return f"templates.{entry}.steps[{step.get('name')}].template {step.get('template')!r} not found"
        return None

    def _running(self, key: tuple[str, str]) -> None:
        run = self._runs.get(key)
        if not run or run["done"]:
            return
        self._patch_status(key, {"phase": "Running"})
        self._next_group(key)

    def _node(self, key, name, display, ntype, template, parent_id, phase, **extra) -> dict[str, Any]:
        run = self._runs[key]
        wf = key[1]
        node = {"id": name if name == wf else node_id(wf, name), "name": name, "displayName": display, "type": ntype,
                "templateName": template, "phase": phase, "startedAt": _now(), "boundaryID": wf,
                "children": [], **extra}
        run["nodes"][node["id"]] = node
        if parent_id:
            run["nodes"][parent_id].setdefault("children", []).append(node["id"])
        self._sync(key)
        return node

    def _sync(self, key: tuple[str, str]) -> None:
        run = self._runs[key]
        self._patch_status(key, {"nodes": run["nodes"], "progress": f"{run['pods_ok']}/{run['pods']}"})

    def _set_node(self, key, nid: str, phase: str, message: str = "") -> None:
        node = self._runs[key]["nodes"][nid]
        node["phase"] = phase
        if message:
            node["message"] = message
        if phase in ("Succeeded", "Failed", "Error", "Skipped", "Omitted"):
            node["finishedAt"] = _now()

    def _resolve(self, run: dict[str, Any], value: Any, inputs: dict[str, str]) -> Any:
        if not isinstance(value, str):
            return value
        value = _PARAM.sub(lambda m: run["params"].get(m.group(1), m.group(0)), value)
        return _INPUT.sub(lambda m: inputs.get(m.group(1), m.group(0)), value)

    def _next_group(self, key: tuple[str, str]) -> None:
        run = self._runs[key]
        run["group"] += 1
        g = run["group"]
        if g >= len(run["groups"]):
            self._end(key, "Succeeded", "")
            return
        wf = key[1]
        group = self._node(key, f"{wf}[{g}]", f"[{g}]", "StepGroup", None, run["root"], "Running")
        run["current"] = {"group": group["id"], "steps": []}
        for step in run["groups"][g]:
            items: list[Any] = [None]
            if "withSequence" in step:
                count = int(self._resolve(run, str(step["withSequence"].get("count", "0")), {}))
                items = list(range(count))
            for item in items:
                display = step["name"] if item is None else f"{step['name']}({item}:{item})"
                inputs = {}
                for p in (step.get("arguments") or {}).get("parameters") or []:
                    value = _ITEM.sub(str(item), str(p.get("value", ""))) if item is not None else p.get("value", "")
                    inputs[p["name"]] = self._resolve(run, value, {})
                self._start_step(key, group["id"], f"{wf}[{g}].{display}", display, step["template"], inputs)

    def _start_step(self, key, parent: str, name: str, display: str, template_name: str,
                    inputs: dict[str, str]) -> None:
        run = self._runs[key]
        tmpl = run["templates"][template_name]
        retry = tmpl.get("retryStrategy")
        if retry is not None:
            top = self._node(key, name, display, "Retry", template_name, parent, "Running")
            step = {"top": top["id"], "retry_limit": int(self._resolve(run, str(retry.get("limit", "0")), {})),
                    "attempts": 0,
                    "name": name, "display": display, "template": template_name, "inputs": inputs}
        else:
            step = {"top": None, "retry_limit": 0, "attempts": 0, "name": name, "display": display,
                    "template": template_name, "inputs": inputs}
        run["current"]["steps"].append(step)
        self._attempt(key, step)

    def _attempt(self, key, step: dict[str, Any]) -> None:
        run = self._runs[key]
        ns, wf = key
        n = step["attempts"]
        step["attempts"] += 1
        if step["top"]:
            name, display, parent = f"{step['name']}({n})", f"{step['display']}({n})", step["top"]
        else:
            name, display, parent = step["name"], step["display"], run["current"]["group"]
        tmpl = run["templates"][step["template"]]
        pod = f"{wf}-{step['template']}-{zlib.crc32(name.encode()) % 10**10}"
        node = self._node(key, name, display, "Pod", step["template"], parent, "Running")
        step["pod_node"] = node["id"]
        run["pods"] += 1
        container = tmpl.get("container") or {}
        args = [str(self._resolve(run, a, step["inputs"])) for a in container.get("args") or []]
        labels = {WORKFLOW_LABEL: wf, "workflows.argoproj.io/completed": "false",
                  **((tmpl.get("metadata") or {}).get("labels") or {})}
        with contextlib.suppress(ApiError):
            self.fake.create({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": ns, "labels": labels,
                             "annotations": {"workflows.argoproj.io/node-name": name,
                                             "workflows.argoproj.io/node-id": node["id"]}},
                "spec": {"containers": [{"name": "wait", "image": "quay.io/argoproj/argoexec"},
                                        {"name": "main", "image": self._resolve(run, container.get("image", ""), {}),
                                         "command": container.get("command") or [], "args": args}]},
                "status": {"phase": "Running", "startTime": _now(),
                           "containerStatuses": [{"name": "main", "ready": True,
                                                  "state": {"running": {"startedAt": _now()}}}]},
            })
        self.pods_started.append(pod)
        ctx = PodContext(self.fake, ns, pod, wf, display, step["template"], dict(run["params"]), args, step["attempts"])
        run["ctx"][node["id"]] = ctx
        run["active"].add(node["id"])
        ctx.log(f"time=\"{_now()}\" level=info msg=\"starting {display}\"")
        failure = self._match(self.failures, display) or self._match(self.failures, step["display"])
        if failure is not None and (failure[1] is None or step["attempts"] <= failure[1]):
            message = failure[0]
            self._later(self.step,
                        lambda: self._pod_done(key, step, node["id"], False, message, "error: scripted failure"))
            return
        if self._match(self.hang, display) or self._match(self.hang, step["display"]):
            return
        if self.run_pod is not None:
            t = threading.Thread(target=self._hook, args=(key, step, node["id"], ctx), name=f"pod:{pod}", daemon=True)
            self._hooks.append(t)
            t.start()
            return
        self._later(self.step, lambda: self._pod_done(key, step, node["id"], True, "", f"{display} done"))

    def _hook(self, key, step: dict[str, Any], nid: str, ctx: PodContext) -> None:
        try:
            result = self.run_pod(ctx)  # type: ignore[misc]  # a callable stored as an attribute
        except Exception as exc:
            result = (False, f"{type(exc).__name__}: {exc}")
        if result is NotImplemented:
            time.sleep(self.step)
            result = True
        if result is None or result is True:
            ok, message = True, ""
        elif result is False:
            ok, message = False, "Error (exit code 1)"
        else:
            ok, message = bool(result[0]), str(result[1])
        if ctx.stopped.is_set() and not ok:
            message = message or "stopped"
        self._call_soon(lambda: self._pod_done(key, step, nid, ok, message, None))

    def _pod_done(self, key, step: dict[str, Any], nid: str, ok: bool, message: str, last_line: str | None) -> None:
        run = self._runs.get(key)
        if not run or nid not in run["active"]:
            return
        ns = key[0]
        run["active"].discard(nid)
        ctx = run["ctx"].pop(nid)
        if run.get("shutdown") and ok is False:
            message = f"Stopped with strategy '{run['shutdown']}'"
        if last_line:
            ctx.log(last_line)
        phase = "Succeeded" if ok else "Failed"
        if ok:
            run["pods_ok"] += 1
        code = 0 if ok else 1
        with contextlib.suppress(ApiError):
            self.fake.patch(
                "v1",
                "Pod",
                ctx.pod,
                {
                    "metadata": {"labels": {"workflows.argoproj.io/completed": "true"}},
                    "status": {
                        "phase": phase,
                        "containerStatuses": [
                            {
                                "name": "main",
                                "ready": False,
                                "state": {
                                    "terminated": {
                                        "exitCode": code,
                                        "reason": "Completed" if ok else "Error",
                                        "finishedAt": _now(),
                                    }
                                },
                            }
                        ],
                    },
                },
                ns,
            )
        self._set_node(key, nid, phase, "" if ok else message)
        retry_again = (not ok and step["top"] and step["attempts"] <= step["retry_limit"] and not run.get("shutdown"))
        if retry_again:
            self._sync(key)
            self._attempt(key, step)
            return
        if step["top"]:
            self._set_node(key, step["top"], phase,
                           "" if ok else ("No more retries left" if not run.get("shutdown") else message))
        step["result"] = (phase, message)
        self._sync(key)
        self._maybe_group_done(key)

    def _maybe_group_done(self, key) -> None:
        run = self._runs.get(key)
        if not run or run["done"]:
            return
        current = run.get("current")
        if current is None or any("result" not in s for s in current["steps"]):
            return
        failed = [s for s in current["steps"] if s["result"][0] != "Succeeded"]
        if run.get("shutdown"):
            self._set_node(key, current["group"], "Failed", f"Stopped with strategy '{run['shutdown']}'")
            self._end(key, "Failed", f"Stopped with strategy '{run['shutdown']}'")
            return
        if failed:
            child = failed[0]["top"] or failed[0]["pod_node"]
            self._set_node(key, current["group"], "Failed", f"child '{child}' failed")
            self._end(key, "Failed", f"child '{child}' failed")
            return
        self._set_node(key, current["group"], "Succeeded")
        self._sync(key)
        self._next_group(key)

    def _end(self, key, phase: str, message: str) -> None:
        run = self._runs[key]
        run["done"] = True
        self._set_node(key, run["root"], phase, message)
        status: dict[str, Any] = {"phase": phase, "finishedAt": _now(), "nodes": run["nodes"],
                                  "progress": f"{run['pods_ok']}/{run['pods']}"}
        if message:
            status["message"] = message
        self._patch_status(key, status)

    def _shutdown(self, key) -> None:
        run = self._runs.get(key)
        if not run or run["done"]:
            return
        for nid in list(run["active"]):
            ctx = run["ctx"].get(nid)
            if ctx is not None:
                ctx.stopped.set()
        # Pods without a hook thread (default or hanging ones) stop at once; hooks report when they return.
        for step in (run.get("current") or {}).get("steps", []):
            nid = step.get("pod_node")
            if nid in run["active"]:
                thread_running = any(t.name == f"pod:{run['ctx'][nid].pod}" and t.is_alive() for t in self._hooks)
                if not thread_running:
                    self._pod_done(key, step, nid, False, "", "received SIGTERM")
        self._maybe_group_done(key)
