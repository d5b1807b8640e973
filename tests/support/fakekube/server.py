"""The fake Kubernetes API server: an in-memory store behind real HTTP.

See the package docstring (:mod:`tests.support.fakekube`) for the Python API.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import itertools
import json
import os
import queue as _queue
import random
import re
import socket
import string
import tarfile
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.support.fakekube.selectors import SelectorError, field_selector, label_selector

JSON = dict[str, Any]

# ----------------------------------------------------------------------------- resource types


@dataclass(frozen=True, slots=True)
class ResourceType:
    """One kind of object the server serves (``tekton.dev/v1 pipelineruns``)."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    subresources: tuple[str, ...] = ("status",)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        # Objects are stored per group+plural, so every served version sees them.
        return (self.group, self.plural)

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


DEFAULT_TYPES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "namespaces", "Namespace", namespaced=False),
    ResourceType("", "v1", "nodes", "Node", namespaced=False),
    ResourceType("", "v1", "pods", "Pod", subresources=("status", "log", "exec")),
    ResourceType("", "v1", "secrets", "Secret", subresources=()),
    ResourceType("", "v1", "configmaps", "ConfigMap", subresources=()),
    ResourceType("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim"),
    ResourceType("", "v1", "services", "Service"),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", subresources=()),
    ResourceType("", "v1", "events", "Event", subresources=()),
    ResourceType("batch", "v1", "jobs", "Job"),
    ResourceType("batch", "v1", "cronjobs", "CronJob"),
    ResourceType("apps", "v1", "deployments", "Deployment"),
    ResourceType("tekton.dev", "v1", "pipelines", "Pipeline", subresources=()),
    ResourceType("tekton.dev", "v1", "pipelineruns", "PipelineRun"),
    ResourceType("tekton.dev", "v1", "tasks", "Task", subresources=()),
    ResourceType("tekton.dev", "v1", "taskruns", "TaskRun"),
    ResourceType("tekton.dev", "v1beta1", "stepactions", "StepAction", subresources=()),
    ResourceType("tekton.dev", "v1beta1", "customruns", "CustomRun"),
    ResourceType("argoproj.io", "v1alpha1", "workflows", "Workflow"),
    ResourceType("argoproj.io", "v1alpha1", "cronworkflows", "CronWorkflow"),
    ResourceType("argoproj.io", "v1alpha1", "workflowtemplates", "WorkflowTemplate", subresources=()),
)


class ApiError(Exception):
    """Answered as a ``Status`` object with ``code``."""

    def __init__(self, code: int, reason: str, message: str, details: JSON | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def status(self) -> JSON:
        return status_object(self.code, self.reason, self.message, self.details)


def status_object(code: int, reason: str, message: str, details: JSON | None = None) -> JSON:
    out: JSON = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if code < 400 else "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        out["details"] = details
    return out


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (``None`` deletes a key; lists replace)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def json_patch(target: JSON, ops: list[JSON]) -> JSON:
    """RFC 6902 JSON patch: add / replace / remove / test (enough for clients)."""
    doc = copy.deepcopy(target)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        parent: Any = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        last = parts[-1]
        kind = op["op"]
        if kind in ("add", "replace"):
            if isinstance(parent, list):
                if last == "-":
                    parent.append(op["value"])
                elif kind == "add":
                    parent.insert(int(last), op["value"])
                else:
                    parent[int(last)] = op["value"]
            else:
                parent[last] = op["value"]
        elif kind == "remove":
            if isinstance(parent, list):
                del parent[int(last)]
            else:
                parent.pop(last, None)
        elif kind == "test":
            value = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if value != op["value"]:
                raise ApiError(422, "Invalid", f"test operation failed at {op['path']}")
    return doc


# ----------------------------------------------------------------------------- watchers


@dataclass(eq=False)
class _Watcher:
    key: tuple[str, str]
    namespace: str | None
    labels: Callable[[JSON], bool]
    fields: Callable[[JSON], bool]
    queue: asyncio.Queue
    loop: asyncio.AbstractEventLoop

    def matches(self, obj: JSON) -> bool:
        if self.namespace and obj.get("metadata", {}).get("namespace") != self.namespace:
            return False
        return self.labels(obj) and self.fields(obj)

    def offer(self, etype: str, obj: JSON, old: JSON | None) -> None:
        new_ok = self.matches(obj)
        old_ok = old is not None and self.matches(old)
        if etype == "MODIFIED" and not new_ok and old_ok:
            etype, new_ok = "DELETED", True  # left the selection
        elif etype == "MODIFIED" and new_ok and not old_ok:
            etype = "ADDED"  # entered the selection
        if new_ok:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (etype, obj))


@dataclass(eq=False)
class _LogStream:
    lines: list[str] = field(default_factory=list)
    closed: bool = False
    followers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = field(default_factory=list)


@dataclass(slots=True)
class Request:
    """One request the server answered (for the request counter)."""

    method: str
    path: str
    query: dict[str, str]
    status: int = 0
    accept: str = ""

    @property
    def watch(self) -> bool:
        return self.query.get("watch") in ("true", "1", "True")


# ----------------------------------------------------------------------------- the server


class FakeKube:
    """An in-memory Kubernetes API server on 127.0.0.1 (see package docs)."""

    def __init__(self, token: str = "fake-token", version: tuple[str, str] = ("1", "30")) -> None:
        self.token = token
        self.version = version
        self._lock = threading.RLock()
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._by_kind: dict[tuple[str, str], ResourceType] = {}
        self._objects: dict[tuple[str, str], dict[tuple[str, str], JSON]] = {}
        self._rv = itertools.count(1000)
        self.resource_version = 1000
        self._history: deque[tuple[int, tuple[str, str], str, JSON]] = deque()
        self.compacted_rv = 0
        self.history_limit: int | None = None
        self.bookmark_interval = 5.0
        self._watchers: list[_Watcher] = []
        self._logs: dict[tuple[str, str, str], _LogStream] = {}
        self._files: dict[tuple[str, str], dict[str, bytes]] = {}
        self._mounts: dict[tuple[str, str], list[tuple[str, Path]]] = {}
        self.exec_handlers: list[Callable[..., tuple[bytes, bytes, int] | None]] = []
        self._subscribers: list[_queue.Queue] = []
        self._failures: list[tuple[str, re.Pattern, int, str, int]] = []
        self.requests: list[Request] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0
        for rt in DEFAULT_TYPES:
            self.register_resource(rt)
        self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeKube:
        """Serve on 127.0.0.1:<free port> from a background thread."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self._dispatch)
            self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
            self.loop.run_until_complete(self._runner.setup())
            site = web.SockSite(self._runner, sock)
            self.loop.run_until_complete(site.start())
            ready.set()
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"fakekube:{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake API server did not start")
        return self

    def stop(self) -> None:
        """Close every stream and stop the server thread."""
        if not self.loop or not self._thread:
            return
        with self._lock:
            for stream in self._logs.values():
                self._close_stream(stream)

        async def shutdown() -> None:
            if self._runner:
                await self._runner.cleanup()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
        self._thread = None

    def write_kubeconfig(self, path: str | os.PathLike, namespace: str = "default", context: str = "fake") -> Path:
        """Write a kubeconfig that points at this server (token auth, plain HTTP)."""
        import yaml

        path = Path(path)
        data = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": self.token}}],
            "contexts": [{"name": context, "context": {"cluster": "fake", "user": "tester", "namespace": namespace}}],
            "current-context": context,
            "preferences": {},
        }
        path.write_text(yaml.safe_dump(data))
        return path

    # ------------------------------------------------------------------ types

    def register_resource(self, rt: ResourceType | None = None, **kwargs: Any) -> ResourceType:
        """Serve another kind: ``register_resource(group=, version=, plural=, kind=, namespaced=)``."""
        rt = rt or ResourceType(**kwargs)
        with self._lock:
            self._types[(rt.group, rt.version, rt.plural)] = rt
            self._by_kind[(rt.group, rt.kind)] = rt
            self._objects.setdefault(rt.key, {})
        return rt

    def resource(self, api_version: str, kind_or_plural: str) -> ResourceType:
        """Look a type up by ``apiVersion`` and kind (``Pod``) or plural (``pods``)."""
        group, _, version = api_version.rpartition("/")
        rt = self._types.get((group, version, kind_or_plural)) or self._by_kind.get((group, kind_or_plural))
        if rt is None:
            for t in self._types.values():
                if t.group == group and (t.plural == kind_or_plural or t.kind == kind_or_plural):
                    return t
            raise KeyError(f"unknown resource {api_version} {kind_or_plural}")
        return rt

    def _versions(self, group: str) -> list[str]:
        return sorted({t.version for t in self._types.values() if t.group == group}, reverse=True)

    # ------------------------------------------------------------------ store (thread-safe)

    def _next_rv(self) -> int:
        self.resource_version = next(self._rv)
        return self.resource_version

    def _record(self, rt: ResourceType, etype: str, obj: JSON, old: JSON | None) -> None:
        rv = int(obj["metadata"]["resourceVersion"])
        snap = copy.deepcopy(obj)
        self._history.append((rv, rt.key, etype, snap))
        if self.history_limit is not None:
            while len(self._history) > self.history_limit:
                dropped = self._history.popleft()
                self.compacted_rv = dropped[0]
        for w in list(self._watchers):
            if w.key == rt.key:
                w.offer(etype, snap, old)
        for sub in self._subscribers:
            sub.put((etype, snap))
        if rt.plural == "pods":
            ns, name = obj["metadata"].get("namespace", ""), obj["metadata"]["name"]
            phase = (obj.get("status") or {}).get("phase")
            if etype == "DELETED" or phase in ("Succeeded", "Failed"):
                for (lns, lpod, _c), stream in self._logs.items():
                    if (lns, lpod) == (ns, name):
                        self._close_stream(stream)

    def create(self, obj: JSON, namespace: str | None = None, *, rt: ResourceType | None = None) -> JSON:
        """Create an object (``apiVersion``/``kind`` pick its type). Raises ApiError 409/404/422."""
        rt = rt or self.resource(obj.get("apiVersion", "v1"), obj.get("kind", ""))
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        with self._lock:
            ns = (namespace or meta.get("namespace") or "default") if rt.namespaced else None
            if ns is not None and (None, ns) not in self._objects[("", "namespaces")]:
                raise ApiError(404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"})
            if not meta.get("name"):
                prefix = meta.get("generateName")
                if not prefix:
                    raise ApiError(
                        422,
                        "Invalid",
                        f"{rt.kind} is invalid: metadata.name: Required value: name or generateName is required",
                    )
                while True:
                    name = prefix + "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
                    if (ns, name) not in self._objects[rt.key]:
                        break
                meta["name"] = name
            name = meta["name"]
            if (ns, name) in self._objects[rt.key]:
                raise ApiError(
                    409, "AlreadyExists", f'{rt.qualified} "{name}" already exists',
                    {"name": name, "group": rt.group, "kind": rt.plural},
                )
            if ns is not None:
                meta["namespace"] = ns
            else:
                meta.pop("namespace", None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            meta["generation"] = 1
            meta["resourceVersion"] = str(self._next_rv())
            obj["apiVersion"] = rt.api_version
            obj["kind"] = rt.kind
            if rt.plural == "namespaces":
                obj.setdefault("status", {"phase": "Active"})
            self._objects[rt.key][(ns, name)] = obj
            self._record(rt, "ADDED", obj, None)
            return copy.deepcopy(obj)

    def _stored(self, rt: ResourceType, name: str, namespace: str | None) -> JSON:
        ns = (namespace or "default") if rt.namespaced else None
        obj = self._objects[rt.key].get((ns, name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{rt.qualified} "{name}" not found',
                           {"name": name, "group": rt.group, "kind": rt.plural})
        return obj

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> JSON:
        """A copy of one object. Raises ApiError 404."""
        rt = self.resource(api_version, kind)
        with self._lock:
            return copy.deepcopy(self._stored(rt, name, namespace))

    def exists(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        try:
            self.get(api_version, kind, name, namespace)
            return True
        except ApiError:
            return False

    def list(
        self, api_version: str, kind: str, namespace: str | None = None,
        label_selector: str | None = None, field_selector: str | None = None,
    ) -> list[JSON]:
        """Copies of the matching objects, sorted by namespace and name."""
        rt = self.resource(api_version, kind)
        return [copy.deepcopy(o) for o in self._select(rt, namespace, label_selector, field_selector)]

    def _select(self, rt: ResourceType, namespace: str | None, lsel: str | None, fsel: str | None) -> list[JSON]:
        lmatch, fmatch = label_selector(lsel), field_selector(fsel)
        with self._lock:
            items = [o for (ns, _n), o in self._objects[rt.key].items() if not namespace or ns == namespace]
        items = [o for o in items if lmatch(o) and fmatch(o)]
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return items

    def replace(self, obj: JSON, namespace: str | None = None, *, rt: ResourceType | None = None,
                status_only: bool = False) -> JSON:
        """PUT semantics: a stale ``metadata.resourceVersion`` gives 409 Conflict."""
        rt = rt or self.resource(obj.get("apiVersion", "v1"), obj.get("kind", ""))
        with self._lock:
            meta = obj.get("metadata") or {}
            current = self._stored(rt, meta.get("name", ""), namespace or meta.get("namespace"))
            rv = meta.get("resourceVersion")
            if rv and rv != current["metadata"]["resourceVersion"]:
                raise ApiError(
                    409, "Conflict",
                    f'Operation cannot be fulfilled on {rt.qualified} "{meta.get("name")}": '
                    "the object has been modified; please apply your changes to the latest version and try again",
                )
            if status_only:
                new = copy.deepcopy(current)
                new["status"] = copy.deepcopy(obj.get("status"))
            else:
                new = copy.deepcopy(obj)
                if "status" not in new and "status" in current:
                    new["status"] = copy.deepcopy(current["status"])
            return self._commit(rt, current, new)

    def _commit(self, rt: ResourceType, current: JSON, new: JSON) -> JSON:
        meta = new.setdefault("metadata", {})
        for keep in ("uid", "creationTimestamp", "namespace", "name"):
            if keep in current["metadata"]:
                meta[keep] = current["metadata"][keep]
        spec_changed = current.get("spec") != new.get("spec")
        meta["generation"] = current["metadata"].get("generation", 1) + (1 if spec_changed else 0)
        meta["resourceVersion"] = str(self._next_rv())
        new["apiVersion"], new["kind"] = rt.api_version, rt.kind
        ns, name = (meta.get("namespace") if rt.namespaced else None), meta["name"]
        self._objects[rt.key][(ns, name)] = new
        self._record(rt, "MODIFIED", new, current)
        return copy.deepcopy(new)

    def patch(
        self, api_version: str, kind: str, name: str, patch: Any, namespace: str | None = None,
        *, patch_type: str = "merge", status_only: bool = False, create_if_absent: bool = False,
    ) -> JSON:
        """Merge (``merge``/``strategic``/``apply``) or JSON (``json``) patch an object."""
        rt = self.resource(api_version, kind)
        with self._lock:
            try:
                current = self._stored(rt, name, namespace)
            except ApiError:
                if not create_if_absent:
                    raise
                body = copy.deepcopy(patch)
                body.setdefault("metadata", {})["name"] = name
                return self.create(body, namespace, rt=rt)
            if patch_type == "json":
                new = json_patch(current, patch)
            else:
                if not isinstance(patch, dict):
                    raise ApiError(400, "BadRequest", "merge patch body must be a JSON object")
                body = {"status": patch.get("status")} if status_only else patch
                if status_only and "status" not in patch:
                    body = {}
                new = merge_patch(current, body)
            return self._commit(rt, current, new)

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> JSON:
        """Delete an object (a namespace takes its objects with it). Raises ApiError 404."""
        rt = self.resource(api_version, kind)
        with self._lock:
            current = self._stored(rt, name, namespace)
            ns = current["metadata"].get("namespace") if rt.namespaced else None
            del self._objects[rt.key][(ns, name)]
            gone = copy.deepcopy(current)
            gone["metadata"]["resourceVersion"] = str(self._next_rv())
            gone["metadata"]["deletionTimestamp"] = _now()
            self._record(rt, "DELETED", gone, None)
            if rt.plural == "namespaces":
                for other in self._types.values():
                    if other.namespaced:
                        for (ons, oname) in [k for k in self._objects[other.key] if k[0] == name]:
                            self.delete(other.api_version, other.kind, oname, ons)
            return gone

    # ------------------------------------------------------------------ conveniences for tests

    def ensure_namespace(self, name: str) -> JSON:
        try:
            return self.get("v1", "Namespace", name)
        except ApiError:
            return self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    def add_node(self, name: str, labels: dict[str, str] | None = None, gpus: int = 0, ready: bool = True) -> JSON:
        """A node with ``nvidia.com/gpu`` allocatable/capacity ``gpus``."""
        res = {"cpu": "64", "memory": "512Gi", "nvidia.com/gpu": str(gpus)}
        return self.create({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": dict(labels or {})},
            "status": {
                "capacity": res, "allocatable": res,
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            },
        })

    def subscribe(self) -> _queue.Queue:
        """A thread-safe queue receiving ``(event_type, object)`` for every change (for controllers)."""
        q: _queue.Queue = _queue.Queue()
        with self._lock:
            self._subscribers.append(q)
        return q

    def unsubscribe(self, q: _queue.Queue) -> None:
        with self._lock:
            if q in self._subscribers:
                self._subscribers.remove(q)

    def compact(self) -> int:
        """Forget all watch history: any watch from an older resourceVersion gets 410 Gone."""
        with self._lock:
            self._history.clear()
            self.compacted_rv = self.resource_version
            return self.compacted_rv

    def drop_watches(self) -> int:
        """End every open watch stream (as an API server restart would); returns how many."""
        with self._lock:
            watchers = list(self._watchers)
        for w in watchers:
            w.loop.call_soon_threadsafe(w.queue.put_nowait, None)
        return len(watchers)

    def expire_watches(self) -> int:
        """Atomically end every open watch and forget history, so that each client's next
        watch from its last resourceVersion gets 410 Gone (it must re-list)."""
        with self._lock:
            dropped = self.drop_watches()
            self._next_rv()  # the window now starts after every version a client has seen
            self.compact()
            return dropped

    def fail_next(self, method: str, path_regex: str, code: int = 500, reason: str = "InternalError",
                  times: int = 1) -> None:
        """Answer the next ``times`` requests matching ``method`` and the path regex with an error Status."""
        with self._lock:
            self._failures.append((method.upper(), re.compile(path_regex), code, reason, times))

    # logs
    def _stream(self, namespace: str, pod: str, container: str | None) -> _LogStream:
        key = (namespace, pod, container or "")
        with self._lock:
            if key not in self._logs:
                self._logs[key] = _LogStream()
            return self._logs[key]

    def append_log(self, namespace: str, pod: str, text: str, container: str | None = None) -> None:
        """Append one or more lines to a pod's (container's) log; followers get them at once."""
        lines = [line + "\n" for line in text.splitlines()] or ["\n"]
        with self._lock:
            stream = self._stream(namespace, pod, container)
            stream.lines.extend(lines)
            for loop, q in list(stream.followers):
                loop.call_soon_threadsafe(q.put_nowait, "".join(lines))

    def close_log(self, namespace: str, pod: str, container: str | None = None) -> None:
        """End a followed log (the container terminated)."""
        with self._lock:
            self._close_stream(self._stream(namespace, pod, container))

    @staticmethod
    def _close_stream(stream: _LogStream) -> None:
        stream.closed = True
        for loop, q in list(stream.followers):
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(q.put_nowait, None)

    # files served to ``tar cf -`` over exec
    def set_files(self, namespace: str, pod: str, files: dict[str, bytes | str]) -> None:
        """Files (absolute in-pod path -> content) that exec ``tar``/``cat`` see in ``pod``."""
        with self._lock:
            store = self._files.setdefault((namespace, pod), {})
            for path, data in files.items():
                store["/" + path.lstrip("/")] = data.encode() if isinstance(data, str) else data

    def mount_dir(self, namespace: str, pod: str, pod_path: str, local_dir: str | os.PathLike) -> None:
        """Serve a local directory tree at ``pod_path`` inside ``pod``."""
        with self._lock:
            self._mounts.setdefault((namespace, pod), []).append(("/" + pod_path.strip("/"), Path(local_dir)))

    def pod_files(self, namespace: str, pod: str) -> dict[str, bytes]:
        """Every file the pod shows (in-memory and mounted)."""
        with self._lock:
            out = dict(self._files.get((namespace, pod), {}))
            mounts = list(self._mounts.get((namespace, pod), []))
        for prefix, local in mounts:
            for p in sorted(local.rglob("*")):
                if p.is_file():
                    out[prefix + "/" + p.relative_to(local).as_posix()] = p.read_bytes()
        return out

    # request counter
    def reset_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def request_count(self, method: str | None = None, path_contains: str | None = None,
                      watch: bool | None = None) -> int:
        with self._lock:
            reqs = list(self.requests)
        return sum(
            1 for r in reqs
            if (method is None or r.method == method)
            and (path_contains is None or path_contains in r.path)
            and (watch is None or r.watch == watch)
        )

    def request_summary(self) -> Counter:
        """``Counter`` of ``"METHOD path [watch]"``."""
        with self._lock:
            return Counter(f"{r.method} {r.path}{' [watch]' if r.watch else ''}" for r in self.requests)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01) -> Any:
        """Poll ``predicate`` (a test helper; the server itself never polls)."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met in time")
            time.sleep(interval)

    # ------------------------------------------------------------------ HTTP

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        query = {k: v for k, v in request.query.items()}
        entry = Request(request.method, path, query, accept=request.headers.get("Accept", ""))
        with self._lock:
            self.requests.append(entry)
            failure = None
            for i, (m, rx, code, reason, times) in enumerate(self._failures):
                if m == request.method and rx.search(path):
                    failure = (code, reason)
                    if times <= 1:
                        del self._failures[i]
                    else:
                        self._failures[i] = (m, rx, code, reason, times - 1)
                    break
        try:
            if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if failure:
                raise ApiError(failure[0], failure[1], f"injected failure for {request.method} {path}")
            resp = await self._route(request, path)
        except ApiError as exc:
            resp = web.json_response(exc.status(), status=exc.code)
        except SelectorError as exc:
            resp = web.json_response(status_object(400, "BadRequest", str(exc)), status=400)
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
            resp = web.json_response(status_object(400, "BadRequest", f"bad request body: {exc}"), status=400)
        entry.status = resp.status
        return resp

    async def _route(self, request: web.Request, path: str) -> web.StreamResponse:
        parts = [p for p in path.split("/") if p]
        if parts == ["version"]:
            major, minor = self.version
            return web.json_response({
                "major": major, "minor": minor, "gitVersion": f"v{major}.{minor}.0-fake",
                "gitCommit": "fake", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.22", "compiler": "gc", "platform": "linux/amd64",
            })
        if parts == ["healthz"] or parts == ["readyz"] or parts == ["livez"]:
            return web.Response(text="ok")
        if parts == ["api"]:
            return web.json_response({
                "kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}],
            })
        if parts == ["apis"]:
            return web.json_response({"kind": "APIGroupList", "apiVersion": "v1",
                                      "groups": [self._group(g) for g in self._groups()]})
        if parts and parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts and parts[0] == "apis" and len(parts) >= 2:
            group = parts[1]
            if group not in self._groups():
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if len(parts) == 2:
                return web.json_response({"kind": "APIGroup", "apiVersion": "v1", **self._group(group)})
            version, rest = parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if version not in self._versions(group):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            return web.json_response(self._resource_list(group, version))
        return await self._resource_request(request, group, version, rest)

    def _groups(self) -> list[str]:
        return sorted({t.group for t in self._types.values() if t.group})

    def _group(self, group: str) -> JSON:
        versions = [{"groupVersion": f"{group}/{v}", "version": v} for v in self._versions(group)]
        return {"name": group, "versions": versions, "preferredVersion": versions[0]}

    def _resource_list(self, group: str, version: str) -> JSON:
        resources = []
        for t in self._types.values():
            if t.group != group or t.version != version:
                continue
            resources.append({
                "name": t.plural, "singularName": t.kind.lower(), "namespaced": t.namespaced, "kind": t.kind,
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            })
            for sub in t.subresources:
                resources.append({"name": f"{t.plural}/{sub}", "singularName": "", "namespaced": t.namespaced,
                                  "kind": t.kind, "verbs": ["get", "patch", "update"]})
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version, "resources": resources}

    async def _resource_request(self, request: web.Request, group: str, version: str,  # noqa: C901 - a test flow table / fake server dispatch; over 15 when lint was set up
                                rest: list[str]) -> web.StreamResponse:
        namespace: str | None = None
        types = self._types
        if (
            rest[0] == "namespaces"
            and len(rest) >= 3
            and (group, version, rest[2]) in types
            and types[(group, version, rest[2])].namespaced
        ):
            namespace, rest = rest[1], rest[2:]
        rt = types.get((group, version, rest[0]))
        if rt is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if len(rest) > 3 or (sub and sub not in rt.subresources):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        method, q = request.method, request.query
        if name is None:
            if method == "GET":
                if q.get("watch") in ("true", "1", "True"):
                    return await self._watch(request, rt, namespace)
                body = self._list_response(rt, namespace, q)
                if "as=PartialObjectMetadata" in request.headers.get("Accept", ""):
                    body = _metadata_only_list(body)
                return web.json_response(body)
            if method == "POST":
                body = await request.json()
                return web.json_response(self.create(body, namespace, rt=rt), status=201)
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on a collection")
        if sub == "log":
            return await self._log(request, namespace or "default", name)
        if sub == "exec":
            return await self._exec(request, namespace or "default", name)
        status_only = sub == "status"
        if method == "GET":
            with self._lock:
                obj = copy.deepcopy(self._stored(rt, name, namespace))
            if "as=PartialObjectMetadata" in request.headers.get("Accept", ""):
                obj = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}
            return web.json_response(obj)
        if method == "PUT":
            body = await request.json()
            body.setdefault("metadata", {}).setdefault("name", name)
            return web.json_response(self.replace(body, namespace, rt=rt, status_only=status_only))
        if method == "PATCH":
            ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
            raw = await request.read()
            if ctype == "application/apply-patch+yaml":
                import yaml

                body = yaml.safe_load(raw) or {}
                return web.json_response(self.patch(rt.api_version, rt.plural, name, body, namespace,
                                                    status_only=status_only, create_if_absent=True))
            body = json.loads(raw or b"null")
            ptype = "json" if ctype == "application/json-patch+json" else "merge"
            if ptype == "json" and not isinstance(body, list):
                raise ApiError(400, "BadRequest", "json patch body must be a list")
            return web.json_response(self.patch(rt.api_version, rt.plural, name, body, namespace, patch_type=ptype,
                                                status_only=status_only))
        if method == "DELETE":
            return web.json_response(self.delete(rt.api_version, rt.plural, name, namespace))
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")

    def _list_response(self, rt: ResourceType, namespace: str | None, q: Any) -> JSON:
        with self._lock:
            rv = self.resource_version
            items = self._select(rt, namespace, q.get("labelSelector"), q.get("fieldSelector"))
        meta: JSON = {"resourceVersion": str(rv)}
        limit = int(q.get("limit") or 0)
        start = int(q.get("continue") or 0)
        if limit:
            page = items[start:start + limit]
            if start + limit < len(items):
                meta["continue"] = str(start + limit)
                meta["remainingItemCount"] = len(items) - start - limit
            items = page
        return {"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": meta, "items": items}

    async def _watch(self, request: web.Request, rt: ResourceType, namespace: str | None) -> web.StreamResponse:  # noqa: C901 - a test flow table / fake server dispatch; over 15 when lint was set up
        q = request.query
        lsel, fsel = label_selector(q.get("labelSelector")), field_selector(q.get("fieldSelector"))
        timeout = float(q.get("timeoutSeconds") or 1800)
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1", "True")
        rv_text = q.get("resourceVersion") or ""
        loop = asyncio.get_running_loop()
        watcher = _Watcher(rt.key, namespace, lsel, fsel, asyncio.Queue(), loop)
        initial: list[tuple[str, JSON]] = []
        gone = False
        with self._lock:
            if rv_text in ("", "0"):
                # No resourceVersion: the current state as ADDED events, then changes.
                for obj in self._select(rt, namespace, q.get("labelSelector"), q.get("fieldSelector")):
                    initial.append(("ADDED", copy.deepcopy(obj)))
            else:
                try:
                    since = int(rv_text)
                except ValueError:
                    raise ApiError(400, "BadRequest", f"invalid resourceVersion {rv_text!r}") from None
                if since < self.compacted_rv:
                    gone = True
                else:
                    for rv, key, etype, obj in self._history:
                        if rv > since and key == rt.key and watcher.matches(obj):
                            initial.append((etype, obj))
            if not gone:
                self._watchers.append(watcher)
        resp = web.StreamResponse(status=200,
                                  headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
        await resp.prepare(request)
        try:
            if gone:
                err = status_object(410, "Expired", f"too old resource version: {rv_text} ({self.compacted_rv})")
                await resp.write(json.dumps({"type": "ERROR", "object": err}).encode() + b"\n")
                return resp
            for etype, obj in initial:
                await resp.write(json.dumps({"type": etype, "object": obj}).encode() + b"\n")
            deadline = loop.time() + timeout
            next_bookmark = loop.time() + self.bookmark_interval
            while True:
                now = loop.time()
                if now >= deadline:
                    break
                wait = deadline - now
                if bookmarks:
                    wait = min(wait, max(0.0, next_bookmark - now))
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), timeout=wait)
                    if item is None:  # drop_watches()
                        break
                    etype, obj = item
                except TimeoutError:
                    if bookmarks and loop.time() >= next_bookmark:
                        mark = {"kind": rt.kind, "apiVersion": rt.api_version,
                                "metadata": {"resourceVersion": str(self.resource_version)}}
                        await resp.write(json.dumps({"type": "BOOKMARK", "object": mark}).encode() + b"\n")
                        next_bookmark = loop.time() + self.bookmark_interval
                    continue
                chunk = [json.dumps({"type": etype, "object": obj})]
                while not watcher.queue.empty():  # batch what is already queued into one write
                    nxt = watcher.queue.get_nowait()
                    if nxt is None:
                        watcher.queue.put_nowait(None)
                        break
                    chunk.append(json.dumps({"type": nxt[0], "object": nxt[1]}))
                await resp.write(("\n".join(chunk) + "\n").encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            with self._lock:
                if watcher in self._watchers:
                    self._watchers.remove(watcher)
        return resp

    async def _log(self, request: web.Request, namespace: str, pod: str) -> web.StreamResponse:
        with self._lock:
            podobj = self._stored(self._types[("", "v1", "pods")], pod, namespace)
        q = request.query
        container = q.get("container")
        containers = [c.get("name") for c in (podobj.get("spec") or {}).get("containers") or []]
        if container and containers and container not in containers:
            raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {pod}")
        if not container and len(containers) == 1:
            container = containers[0]
        key_container = container or ""
        with self._lock:
            stream = self._logs.get((namespace, pod, key_container)) or self._logs.get((namespace, pod, ""))
            if stream is None:
                stream = self._stream(namespace, pod, key_container)
            lines = list(stream.lines)
            follow = q.get("follow") in ("true", "1", "True") and not stream.closed
            fq: asyncio.Queue = asyncio.Queue()
            if follow:
                stream.followers.append((asyncio.get_running_loop(), fq))
        tail = q.get("tailLines")
        if tail is not None:
            lines = lines[-int(tail):] if int(tail) else []
        if not follow:
            return web.Response(text="".join(lines), content_type="text/plain")
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/plain", "Transfer-Encoding": "chunked"})
        await resp.prepare(request)
        try:
            if lines:
                await resp.write("".join(lines).encode())
            while True:
                item = await fq.get()
                if item is None:
                    break
                await resp.write(item.encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            with self._lock:
                if (asyncio.get_running_loop(), fq) in stream.followers:
                    stream.followers.remove((asyncio.get_running_loop(), fq))
        return resp

    async def _exec(self, request: web.Request, namespace: str, pod: str) -> web.StreamResponse:
        with self._lock:
            self._stored(self._types[("", "v1", "pods")], pod, namespace)
        argv = request.query.getall("command", [])
        container = request.query.get("container")
        ws = web.WebSocketResponse(protocols=("v4.channel.k8s.io", "channel.k8s.io"))
        await ws.prepare(request)
        try:
            stdout, stderr, rc = await asyncio.to_thread(self._run_exec, namespace, pod, container, argv)
            step = 256 * 1024
            for i in range(0, len(stdout), step):
                await ws.send_bytes(b"\x01" + stdout[i:i + step])
            if stderr:
                await ws.send_bytes(b"\x02" + stderr)
            if rc == 0:
                status = {"metadata": {}, "status": "Success"}
            else:
                status = {
                    "metadata": {}, "status": "Failure",
                    "message": "command terminated with non-zero exit code: error executing command "
                               f"[{' '.join(argv)}], exit code {rc}",
                    "reason": "NonZeroExitCode",
                    "details": {"causes": [{"reason": "ExitCode", "message": str(rc)}]},
                }
            await ws.send_bytes(b"\x03" + json.dumps(status).encode())
        finally:
            await ws.close()
        return ws

    def _run_exec(self, namespace: str, pod: str, container: str | None, argv: list[str]) -> tuple[bytes, bytes, int]:
        for handler in list(self.exec_handlers):
            result = handler(namespace, pod, container, argv)
            if result is not None:
                return result
        if not argv:
            return b"", b"no command\n", 1
        files = self.pod_files(namespace, pod)
        if argv[0] == "tar":
            return _tar(files, argv[1:])
        if argv[0] == "cat" and len(argv) == 2:
            data = files.get("/" + argv[1].lstrip("/"))
            if data is None:
                return b"", f"cat: {argv[1]}: No such file or directory\n".encode(), 1
            return data, b"", 0
        if argv == ["true"]:
            return b"", b"", 0
        if argv[:1] == ["ls"]:
            target = "/" + (argv[-1] if len(argv) > 1 else "").strip("/")
            names = sorted({p[len(target):].lstrip("/").split("/")[0] for p in files
                            if p.startswith(target.rstrip("/") + "/")})
            if not names:
                return b"", f"ls: cannot access '{argv[-1]}': No such file or directory\n".encode(), 2
            return ("\n".join(names) + "\n").encode(), b"", 0
        return b"", f"{argv[0]}: command not found\n".encode(), 127


def _metadata_only_list(body: JSON) -> JSON:
    """The ``as=PartialObjectMetadataList`` form: metadata only, no spec/data/status."""
    return {
        "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": body["metadata"],
        "items": [{"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": i["metadata"]}
                  for i in body["items"]],
    }


def _tar(files: dict[str, bytes], args: list[str]) -> tuple[bytes, bytes, int]:
    """``tar c[z]f - [-C DIR] PATH...`` over the pod's files, the way GNU tar names members."""
    mode, paths, cwd, gz = "", [], "/", False
    it = iter(args)
    for arg in it:
        if arg == "-C":
            cwd = next(it, "/")
        elif arg.startswith("-") and arg != "-" or not mode and not paths and set(arg) <= set("cxzvf"):
            flags = arg.lstrip("-")
            mode += flags
            gz = gz or "z" in flags
            if "f" in flags:
                target = next(it, "-")
                if target != "-":
                    return b"", b"tar: only stdout archives are supported\n", 2
        else:
            paths.append(arg)
    if "c" not in mode:
        return b"", b"tar: only 'c' (create) is supported here\n", 2
    buf = io.BytesIO()
    errors = []
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tar:
        for path in paths:
            full = path if path.startswith("/") else cwd.rstrip("/") + "/" + path
            full = os.path.normpath(full)
            matched = sorted(p for p in files if p == full or p.startswith(full.rstrip("/") + "/"))
            if not matched:
                errors.append(f"tar: {path}: Cannot stat: No such file or directory\n")
                continue
            base = "/" if path.startswith("/") else cwd
            for p in matched:
                arc = os.path.relpath(p, base) if not path.startswith("/") else p.lstrip("/")
                data = files[p]
                info = tarfile.TarInfo(arc)
                info.size = len(data)
                info.mtime = int(time.time())
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
    if errors:
        return (
            buf.getvalue(),
            ("".join(errors) + "tar: Exiting with failure status due to previous errors\n").encode(),
            2,
        )
    return buf.getvalue(), b"", 0


def iter_types(fake: FakeKube) -> Iterable[ResourceType]:
    return list(fake._types.values())
