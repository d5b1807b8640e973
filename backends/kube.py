"""Kubernetes access shared by the Tekton and Argo backends (official ``kubernetes`` client).

* :meth:`Kube.connect` loads a kubeconfig (path, ``$KUBECONFIG`` or
  ``~/.kube/config``; optional context) into a private ``ApiClient``;
* every blocking client call runs in a thread (:meth:`Kube.call`), so the
  event loop (and the TUI) never waits on the network;
* :class:`WatchStream` is list + watch in one background thread feeding an
  asyncio queue: it lists (in pages), then watches from the list's
  resourceVersion, resumes from the last resourceVersion it saw (bookmarks
  included) when a watch ends, and lists again when the server answers
  410 Gone — the informer pattern, without polling;
* :meth:`Kube.follow_log` streams a pod log (``follow=true``) line by line;
* :meth:`Kube.copy_from_pod` copies a directory out of a pod by exec'ing
  ``tar cf -`` over the websocket channel protocol, as ``kubectl cp`` does.

Objects are plain dicts (JSON as the server sent it): no model deserialisation,
which keeps a 10,000-object list fast and small.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import io
import json
import logging
import os
import posixpath
import tarfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.errors import SweepdeckError

log = logging.getLogger(__name__)

JSON = dict[str, Any]
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"

# core/v1 plural -> CoreV1Api method stem (list_namespaced_<stem>, read_namespaced_<stem>...)
_CORE = {
    "pods": "pod",
    "secrets": "secret",
    "persistentvolumeclaims": "persistent_volume_claim",
    "configmaps": "config_map",
    "services": "service",
    "events": "event",
    "serviceaccounts": "service_account",
}
_CORE_CLUSTER = {"nodes": "node", "namespaces": "namespace"}


class KubeError(SweepdeckError):
    """A Kubernetes API call failed; ``status`` is the HTTP code (0: no answer)."""

    def __init__(self, message: str, hint: str = "", status: int = 0, reason: str = "") -> None:
        super().__init__(message, hint)
        self.status = status
        self.reason = reason


def _status_of(exc: Exception) -> tuple[int, str, str]:
    """(code, reason, message) of an ApiException (its body is a Status object)."""
    code = int(getattr(exc, "status", 0) or 0)
    reason = str(getattr(exc, "reason", "") or "")
    message = reason
    body = getattr(exc, "body", None)
    if body:
        try:
            data = json.loads(body)
            reason = data.get("reason") or reason
            message = data.get("message") or message
        except (TypeError, ValueError):
            pass
    return code, reason, message


def translate(exc: Exception, what: str) -> KubeError:
    """A readable KubeError for a client exception."""
    from kubernetes.client.rest import ApiException

    if isinstance(exc, ApiException):
        code, reason, message = _status_of(exc)
        if code == 0:
            return KubeError(f"{what}: cannot reach the API server ({message}).",
                             "Check the kubeconfig's server and your network/VPN.")
        if code == 401:
            return KubeError(f"{what}: unauthorized (401).",
                             "Your credentials expired or are wrong: log in again (e.g. oc login / refresh the token).",
                             code, reason)
        if code == 403:
            return KubeError(f"{what}: forbidden (403): {message}",
                             "Ask for RBAC permission, or use another namespace.", code, reason)
        return KubeError(f"{what}: {message} ({code} {reason}).", "", code, reason)
    if isinstance(exc, KubeError):
        return exc
    import urllib3

    if isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):
        cause = getattr(exc, "reason", None) or exc
        return KubeError(f"{what}: cannot reach the API server ({cause}).",
                         "Check the kubeconfig's server and your network/VPN.")
    return KubeError(f"{what}: {type(exc).__name__}: {exc}", "Check the kubeconfig's server and your network/VPN.")


@dataclass(slots=True)
class WatchEvent:
    """``type`` is ADDED, MODIFIED, DELETED, or SYNC (``objects`` is a full re-list)."""

    type: str
    object: JSON | None = None
    objects: list[JSON] | None = None
    resource_version: str = ""


class Kube:
    """One connection to a cluster (see module docs)."""

    def __init__(self, api_client: Any, context: str = "", server: str = "", namespace: str | None = None) -> None:
        from kubernetes import client

        self.api = api_client
        self.context = context
        self.server = server
        self.default_namespace = namespace
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    # ------------------------------------------------------------------ construction

    @classmethod
    def connect(cls, kubeconfig: str | None = None, context: str | None = None) -> Kube:
        """Load a kubeconfig into a private client.

        Raises:
            KubeError: no kubeconfig, unknown context, or an invalid file.
        """
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or "~/.kube/config"
        path = os.path.expanduser(path)
        if not os.path.exists(path) and not kubeconfig and os.environ.get("KUBERNETES_SERVICE_HOST"):
            # running inside a pod: its service account
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            configuration.connection_pool_maxsize = 32
            return cls(client.ApiClient(configuration), "in-cluster", configuration.host)
        if not os.path.exists(path):
            raise KubeError(f"No kubeconfig at {path}.",
                            "Set KUBECONFIG or the profile's 'kubeconfig', or log in to the cluster first.")
        try:
            contexts, active = config.list_kube_config_contexts(config_file=path)
            names = [c["name"] for c in contexts or []]
            if context and context not in names:
                raise KubeError(f"Context {context!r} is not in {path}.", "Contexts: " + (", ".join(names) or "(none)"))
            chosen = next((c for c in contexts if c["name"] == context), None) if context else active
            configuration = client.Configuration()
            config.load_kube_config(config_file=path, context=context, client_configuration=configuration,
                                    persist_config=False)
        except ConfigException as exc:
            raise KubeError(f"Invalid kubeconfig {path}: {exc}.",
                            "Fix the file or point KUBECONFIG at another one.") from None
        # Watches, log follows and calls run at the same time: one connection each.
        configuration.connection_pool_maxsize = 32
        configuration.retries = False
        api_client = client.ApiClient(configuration)
        ctx = (chosen or {}).get("context") or {}
        return cls(api_client, (chosen or {}).get("name", ""), configuration.host, ctx.get("namespace"))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.api.close()

    async def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking client call in a thread; errors become :class:`KubeError`."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except Exception as exc:
            raise translate(exc, what) from None

    # ------------------------------------------------------------------ generic objects

    def _fn(self, verb: str, group: str, version: str, plural: str,
            namespace: str | None) -> tuple[Callable[..., Any], tuple]:
        """The client method and leading args for ``verb`` (list/read/create/replace/patch/delete)."""
        if not group:
            if plural in _CORE_CLUSTER:
                return getattr(self.core, f"{verb}_{_CORE_CLUSTER[plural]}"), ()
            stem = _CORE.get(plural)
            if stem is None:
                raise KubeError(f"Unsupported core resource {plural!r}.")
            if namespace is None and verb == "list":
                return getattr(self.core, f"list_{stem}_for_all_namespaces"), ()
            return getattr(self.core, f"{verb}_namespaced_{stem}"), ()
        stem = {"read": "get"}.get(verb, verb)
        if namespace is None:
            return getattr(self.custom, f"{stem}_cluster_custom_object"), (group, version, plural)
        return getattr(self.custom, f"{stem}_namespaced_custom_object"), (group, version)

    def _args(self, verb: str, group: str, version: str, plural: str, namespace: str | None,
              name: str | None = None) -> tuple[Callable[..., Any], list[Any]]:
        fn, lead = self._fn(verb, group, version, plural, namespace)
        args: list[Any] = list(lead)
        if group:
            if namespace is not None:
                args += [namespace, plural]
            if name is not None:
                args.append(name)
        else:
            if name is not None:
                args.append(name)
            if namespace is not None and plural not in _CORE_CLUSTER:
                args.append(namespace)
        return fn, args

    def list_raw(self, group: str, version: str, plural: str, namespace: str | None = None, *,
                 label_selector: str | None = None,
                 field_selector: str | None = None, page: int = 500,
                 metadata_only: bool = False) -> tuple[list[JSON], str]:
        """Blocking paged list as dicts; returns ``(items, resourceVersion)``."""
        fn, args = self._args("list", group, version, plural, namespace)
        items: list[JSON] = []
        token: str | None = None
        rv = ""
        while True:
            kwargs: dict[str, Any] = {"_preload_content": False, "limit": page}
            if label_selector:
                kwargs["label_selector"] = label_selector
            if field_selector:
                kwargs["field_selector"] = field_selector
            if token:
                kwargs["_continue"] = token
            if metadata_only:
                kwargs["_headers"] = {"Accept": METADATA_ONLY}
            resp = fn(*args, **kwargs)
            data = json.loads(resp.data)
            items.extend(data.get("items") or [])
            meta = data.get("metadata") or {}
            rv = rv or meta.get("resourceVersion", "")
            token = meta.get("continue")
            if not token:
                return items, rv

    async def list(self, group: str, version: str, plural: str, namespace: str | None = None,
                   **kwargs: Any) -> list[JSON]:
        items, _rv = await self.call(f"list {plural}", self.list_raw, group, version, plural, namespace, **kwargs)
        return items

    def get_raw(self, group: str, version: str, plural: str, name: str, namespace: str | None = None) -> JSON | None:
        from kubernetes.client.rest import ApiException

        fn, args = self._args("read", group, version, plural, namespace, name)
        try:
            resp = fn(*args, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return json.loads(resp.data)

    async def get(self, group: str, version: str, plural: str, name: str, namespace: str | None = None) -> JSON | None:
        """The object, or None when it does not exist."""
        return await self.call(f"get {plural}/{name}", self.get_raw, group, version, plural, name, namespace)

    async def exists(self, plural: str, name: str, namespace: str) -> bool:
        """Does a core object exist? Asks for metadata only (a Secret's data never leaves the server)."""
        items = await self.list("", "v1", plural, namespace, field_selector=f"metadata.name={name}", metadata_only=True)
        return any((i.get("metadata") or {}).get("name") == name for i in items)

    async def create(self, group: str, version: str, plural: str, body: JSON, namespace: str | None = None) -> JSON:
        fn, args = self._args("create", group, version, plural, namespace)
        return _plain(await self.call(f"create {plural}/{body.get('metadata', {}).get('name', '')}", fn, *args, body))

    async def replace(self, group: str, version: str, plural: str, name: str, body: JSON,
                      namespace: str | None = None) -> JSON:
        fn, args = self._args("replace", group, version, plural, namespace, name)
        return _plain(await self.call(f"update {plural}/{name}", fn, *args, body))

    async def patch(self, group: str, version: str, plural: str, name: str, body: JSON,
                    namespace: str | None = None) -> JSON:
        """A JSON merge patch."""
        fn, args = self._args("patch", group, version, plural, namespace, name)
        kwargs = {"_content_type": "application/merge-patch+json"}
        return _plain(await self.call(f"patch {plural}/{name}", fn, *args, body, **kwargs))

    async def delete(self, group: str, version: str, plural: str, name: str, namespace: str | None = None) -> bool:
        """Delete; False when it was already gone."""
        fn, args = self._args("delete", group, version, plural, namespace, name)
        try:
            await self.call(f"delete {plural}/{name}", fn, *args, _preload_content=False)
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def apply(self, body: JSON, namespace: str) -> tuple[str, JSON]:
        """Create or update ``body`` (by apiVersion/kind); returns ``("created"|"updated", object)``."""
        group, _, version = body["apiVersion"].rpartition("/")
        plural = plural_of(body["kind"])
        name = body["metadata"]["name"]
        current = await self.get(group, version, plural, name, namespace)
        if current is None:
            return "created", await self.create(group, version, plural, body, namespace)
        new = json.loads(json.dumps(body))
        new.setdefault("metadata", {})["resourceVersion"] = current["metadata"]["resourceVersion"]
        return "updated", await self.replace(group, version, plural, name, new, namespace)

    # ------------------------------------------------------------------ cluster facts

    async def version(self) -> str:
        from kubernetes import client

        info = await self.call("read the server version", client.VersionApi(self.api).get_code)
        return info.git_version

    async def api_groups(self) -> dict[str, builtins.list[str]]:
        """``{group: [versions]}`` from discovery."""
        from kubernetes import client

        groups = await self.call("discover API groups", client.ApisApi(self.api).get_api_versions)
        return {g.name: [v.version for v in g.versions] for g in groups.groups}

    # ------------------------------------------------------------------ watch, logs, exec

    def watch(self, group: str, version: str, plural: str, namespace: str | None, *, label_selector: str | None = None,
              field_selector: str | None = None, timeout_seconds: int = 300) -> WatchStream:
        """A started-on-iteration :class:`WatchStream`."""
        return WatchStream(self, group, version, plural, namespace, label_selector, field_selector, timeout_seconds)

    async def read_log(self, namespace: str, pod: str, container: str | None = None,
                       tail_lines: int | None = None) -> str:
        kwargs: dict[str, Any] = {"_preload_content": False}
        if container:
            kwargs["container"] = container
        if tail_lines is not None:
            kwargs["tail_lines"] = tail_lines
        resp = await self.call(f"read the log of {pod}", self.core.read_namespaced_pod_log, pod, namespace, **kwargs)
        return resp.data.decode("utf-8", "replace")

    async def follow_log(self, namespace: str, pod: str,
                         container: str | None = None) -> AsyncIterator[builtins.list[str]]:
        """Lines of a followed pod log, in batches (ends when the container ends)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        holder: dict[str, Any] = {}
        stop = threading.Event()

        def run() -> None:
            try:
                kwargs: dict[str, Any] = {"follow": True, "_preload_content": False}
                if container:
                    kwargs["container"] = container
                resp = self.core.read_namespaced_pod_log(pod, namespace, **kwargs)
                holder["resp"] = resp
                buffer = b""
                # One batch per network chunk: lines that arrive together are
                # delivered together, and nothing waits for a following line.
                for chunk in resp.stream(amt=None, decode_content=False):  # type: ignore[attr-defined]  # not preloaded: a urllib3 response
                    if stop.is_set():
                        break
                    buffer += chunk if isinstance(chunk, bytes) else chunk.encode()
                    if b"\n" not in buffer:
                        continue
                    complete, _, buffer = buffer.rpartition(b"\n")
                    lines = complete.decode("utf-8", "replace").split("\n")
                    loop.call_soon_threadsafe(queue.put_nowait, lines)
                if buffer and not stop.is_set():
                    loop.call_soon_threadsafe(queue.put_nowait, [buffer.decode("utf-8", "replace")])
            except Exception as exc:  # the pod went away, or the connection dropped
                if not stop.is_set():
                    loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(queue.put_nowait, None)

        thread = threading.Thread(target=run, name=f"log:{pod}", daemon=True)
        thread.start()
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, Exception):
                    raise translate(item, f"follow the log of {pod}")
                yield item
        finally:
            stop.set()
            _shutdown(holder.get("resp"))

    def _exec_bytes(self, namespace: str, pod: str, command: builtins.list[str], container: str | None,
                    timeout: float) -> tuple[bytes, str, JSON]:
        from kubernetes import client
        from kubernetes.stream import stream

        # stream() swaps the ApiClient's transport while it runs: use a private
        # client so concurrent watches on the shared one are not affected.
        private = client.ApiClient(self.api.configuration)
        try:
            core = client.CoreV1Api(private)
            kwargs: dict[str, Any] = dict(command=command, stderr=True, stdin=False, stdout=True, tty=False,
                                          _preload_content=False, binary=True)
            if container:
                kwargs["container"] = container
            resp = stream(core.connect_get_namespaced_pod_exec, pod, namespace, **kwargs)
            out = bytearray()
            err = bytearray()
            deadline = time.monotonic() + timeout
            while resp.is_open() and time.monotonic() < deadline:
                resp.update(timeout=1)
                if resp.peek_stdout():
                    out += resp.read_stdout()
                if resp.peek_stderr():
                    err += resp.read_stderr()
            if resp.peek_stdout():
                out += resp.read_stdout()
            if resp.peek_stderr():
                err += resp.read_stderr()
            status_raw = resp.read_channel(3)
            resp.close()
        finally:
            private.close()
        if isinstance(status_raw, bytes):
            status_raw = status_raw.decode("utf-8", "replace")
        try:
            status = json.loads(status_raw) if status_raw else {}
        except ValueError:
            status = {"status": "Failure", "message": status_raw}
        return bytes(out), bytes(err).decode("utf-8", "replace"), status

    async def exec(self, namespace: str, pod: str, command: builtins.list[str], container: str | None = None,
                   timeout: float = 600) -> tuple[bytes, str, JSON]:
        """Run ``command`` (an argv, never a shell string) in a pod: ``(stdout, stderr, status)``."""
        return await self.call(f"exec in {pod}", self._exec_bytes, namespace, pod, command, container, timeout)

    async def copy_from_pod(self, namespace: str, pod: str, path: str, dest: Path,
                            container: str | None = None) -> builtins.list[Path]:
        """Copy ``path`` (a directory or file in the pod) into ``dest`` like ``kubectl cp``.

        Returns the files written. Members that would land outside ``dest``
        (absolute paths, ``..``, links) are refused.
        """
        path = posixpath.normpath("/" + path.lstrip("/"))
        parent, base = posixpath.split(path)
        data, stderr, status = await self.exec(namespace, pod, ["tar", "cf", "-", "-C", parent or "/", base], container)
        if status.get("status") != "Success":
            raise KubeError(
                f"Copying {path} from pod {pod} failed: {stderr.strip() or status.get('message', 'unknown error')}",
                "Check that the results exist on the volume.",
            )
        return await asyncio.to_thread(_extract, data, dest, base)


def _extract(data: bytes, dest: Path, base: str) -> list[Path]:
    dest = dest.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            name = posixpath.normpath(member.name)
            # 'base/x/y' -> dest/x/y (the copied directory's content goes into dest)
            parts = name.split("/")
            rel = "/".join(parts[1:]) if parts[0] == base and len(parts) > 1 else name
            target = (dest / rel).resolve()
            if name.startswith("/") or ".." in parts or not str(target).startswith(str(dest)):
                raise KubeError(f"Refusing unsafe archive member {member.name!r}.")
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            if not member.isfile():
                continue  # links and devices are not copied
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            target.write_bytes(src.read() if src else b"")
            written.append(target)
    return written


def _plain(obj: Any) -> JSON:
    if isinstance(obj, dict):
        return obj
    to_dict = getattr(obj, "to_dict", None)
    return to_dict() if to_dict else {}


def _shutdown(resp: Any) -> None:
    """Unblock a thread reading a streaming response."""
    if resp is None:
        return
    import socket

    try:
        conn = getattr(resp, "connection", None) or getattr(resp, "_connection", None)
        sock = getattr(conn, "sock", None) if conn else None
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    with contextlib.suppress(Exception):
        resp.close()


_PLURALS = {
    "PipelineRun": "pipelineruns", "Pipeline": "pipelines", "Task": "tasks", "TaskRun": "taskruns",
    "StepAction": "stepactions", "Workflow": "workflows", "CronWorkflow": "cronworkflows",
    "WorkflowTemplate": "workflowtemplates", "PersistentVolumeClaim": "persistentvolumeclaims",
    "ConfigMap": "configmaps", "Secret": "secrets", "Namespace": "namespaces", "Pod": "pods",
    "Service": "services", "ServiceAccount": "serviceaccounts", "Node": "nodes",
}


def plural_of(kind: str) -> str:
    return _PLURALS.get(kind) or kind.lower() + "s"


class WatchStream:
    """List + watch one collection from a background thread (see module docs).

    ``async for event in stream`` yields a ``SYNC`` event with every object
    after each (re)list, then ADDED/MODIFIED/DELETED changes. ``relists``
    and ``watches`` count the requests made; :meth:`stop` ends it.
    """

    def __init__(self, kube: Kube, group: str, version: str, plural: str, namespace: str | None,
                 label_selector: str | None, field_selector: str | None, timeout_seconds: int) -> None:
        self.kube, self.group, self.version, self.plural = kube, group, version, plural
        self.namespace, self.label_selector, self.field_selector = namespace, label_selector, field_selector
        self.timeout_seconds = timeout_seconds
        self.resource_version = ""
        self.relists = 0
        self.watches = 0
        self.gone = 0
        self._stop = threading.Event()
        self._resp: Any = None
        self._queue: asyncio.Queue | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> WatchStream:
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._queue = asyncio.Queue()
            self._thread = threading.Thread(target=self._run, name=f"watch:{self.plural}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        _shutdown(self._resp)

    def _emit(self, item: Any) -> None:
        assert self._loop is not None and self._queue is not None
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # loop closed
            self._stop.set()

    def _relist(self) -> None:
        items, rv = self.kube.list_raw(self.group, self.version, self.plural, self.namespace,
                                       label_selector=self.label_selector, field_selector=self.field_selector)
        self.relists += 1
        self.resource_version = rv
        self._emit(WatchEvent("SYNC", objects=items, resource_version=rv))

    def _run(self) -> None:
        from kubernetes.client.rest import ApiException
        from kubernetes.watch.watch import iter_resp_lines

        backoff = 0.5
        need_list = True
        while not self._stop.is_set():
            try:
                if need_list:
                    self._relist()
                    need_list = False
                fn, args = self.kube._args("list", self.group, self.version, self.plural, self.namespace)
                kwargs: dict[str, Any] = {
                    "watch": True, "_preload_content": False, "resource_version": self.resource_version,
                    "timeout_seconds": self.timeout_seconds, "allow_watch_bookmarks": True,
                    "_request_timeout": (10, self.timeout_seconds + 30),
                }
                if self.label_selector:
                    kwargs["label_selector"] = self.label_selector
                if self.field_selector:
                    kwargs["field_selector"] = self.field_selector
                self._resp = fn(*args, **kwargs)
                self.watches += 1
                for line in iter_resp_lines(self._resp):
                    if self._stop.is_set():
                        break
                    if not line:
                        continue
                    event = json.loads(line)
                    etype, obj = event.get("type"), event.get("object") or {}
                    if etype == "ERROR":
                        if obj.get("code") == 410:
                            self.gone += 1
                            need_list = True  # our resourceVersion is too old: start over from a list
                            break
                        raise KubeError(f"watch {self.plural}: {obj.get('message', obj)}",
                                        status=int(obj.get("code") or 0))
                    rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if rv:
                        self.resource_version = rv
                    if etype != "BOOKMARK":
                        self._emit(WatchEvent(etype, object=obj, resource_version=rv or ""))
                backoff = 0.5
            except Exception as exc:
                if self._stop.is_set():
                    break
                if isinstance(exc, ApiException) and exc.status == 410:
                    self.gone += 1
                    need_list = True
                    continue
                err = translate(exc, f"watch {self.plural}")
                self._emit(err)
                log.debug("watch %s failed: %s", self.plural, exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                need_list = need_list or not self.resource_version
            finally:
                _shutdown(self._resp)
                self._resp = None
        self._emit(None)

    def __aiter__(self) -> WatchStream:
        self.start()
        return self

    async def __anext__(self) -> WatchEvent | KubeError:
        assert self._queue is not None
        item = await self._queue.get()
        if item is None:
            raise StopAsyncIteration
        return item
