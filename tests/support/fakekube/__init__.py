"""A fake Kubernetes API server owned by the tests.

No real API server can run on the test machines, so the fake-API tests
(marker ``fakeapi``) talk real HTTP to this one: an in-memory store served by
aiohttp on ``127.0.0.1:<free port>`` from a background thread, reached through
a temporary kubeconfig (token auth, plain HTTP) exactly as the official
``kubernetes`` client reaches a cluster.

What it serves
--------------
* discovery: ``/version``, ``/api``, ``/api/v1``, ``/apis``, ``/apis/{g}``,
  ``/apis/{g}/{v}`` (a trailing slash is accepted everywhere);
* core v1 namespaces, nodes, pods, secrets, configmaps, PVCs, services,
  serviceaccounts, events; batch/v1 jobs, cronjobs; apps/v1 deployments;
  tekton.dev/v1 pipelines, pipelineruns, tasks, taskruns (v1beta1 stepactions,
  customruns); argoproj.io/v1alpha1 workflows, cronworkflows,
  workflowtemplates — and any other kind after :meth:`FakeKube.register_resource`;
* create (201; uid, server-wide increasing ``resourceVersion``,
  ``creationTimestamp``, ``generation``, ``generateName``; 404 when the
  namespace does not exist), get, list (``labelSelector``, ``fieldSelector``,
  ``limit``/``continue``), replace (409 Conflict on a stale resourceVersion),
  delete (a namespace takes its objects), merge/strategic patch, JSON patch,
  apply patch (server-side apply treated as merge, creating if absent), the
  ``/status`` subresource; errors are ``Status`` objects (404 NotFound,
  409 AlreadyExists, 401, 400, 422);
* watches (``?watch=true``): no/0 ``resourceVersion`` → current objects as
  ADDED then changes; a given one → every change after it, or one ``ERROR``
  event with a 410 ``Expired`` Status when it is older than the retained
  window (:meth:`FakeKube.compact`, :attr:`FakeKube.history_limit`);
  ``timeoutSeconds`` ends the stream; ``allowWatchBookmarks`` adds BOOKMARK
  events every :attr:`FakeKube.bookmark_interval` seconds; objects leaving a
  label selection arrive as DELETED;
* pod logs (``/pods/{name}/log``; ``container``, ``tailLines``, ``follow=true``
  as chunked text that stays open, streams :meth:`FakeKube.append_log` lines
  and ends on :meth:`FakeKube.close_log`, pod deletion or a terminal pod phase);
* exec over the websocket channel protocol ``v4.channel.k8s.io`` (channel
  byte 1 stdout, 2 stderr, 3 the error-channel Status JSON): ``tar c[z]f -
  [-C DIR] PATH...``, ``cat FILE``, ``ls DIR``, ``true`` over the files given
  by :meth:`FakeKube.set_files` / :meth:`FakeKube.mount_dir`; more commands
  through :attr:`FakeKube.exec_handlers` (``f(ns, pod, container, argv) ->
  (stdout, stderr, rc) | None``). stdin is not read.

Python API for test controllers (all thread-safe)
------------------------------------------------
``create(obj, namespace=None)``, ``get(api_version, kind, name, ns)``,
``list(api_version, kind, ns, label_selector, field_selector)``,
``replace(obj)``, ``patch(api_version, kind, name, patch, ns,
patch_type="merge"|"json", status_only=False)``, ``delete(...)``,
``exists(...)`` — ``kind`` may be a Kind (``TaskRun``) or a plural
(``taskruns``); failures raise :class:`ApiError` (``.code``, ``.reason``).
``ensure_namespace(name)``, ``add_node(name, labels, gpus)``,
``drop_watches()`` / ``expire_watches()`` (end open watches; the latter
also forces 410 Gone on resume), ``subscribe()`` → a ``queue.Queue`` of ``(event_type, object)`` for every
change (drive a controller thread from it), ``fail_next(method, path_regex,
code, reason, times)`` to script API errors, ``requests`` /
``request_count(method, path_contains, watch)`` / ``request_summary()`` /
``reset_requests()`` (the request counter), ``wait_for(predicate, timeout)``,
``write_kubeconfig(path)``, ``url``, ``token``.

Controllers
-----------
:mod:`tests.support.fakekube.tekton_controller` advances PipelineRuns, TaskRuns
and vLLM pods like Tekton + llm-d and scripts failures;
:mod:`tests.support.fakekube.argo_controller` advances Argo Workflows (status.phase,
status.nodes, worker pods with logs, retries, shutdown) the same way
(``subscribe()`` + ``patch(..., status_only=True)``).

Fixture
-------
:func:`fake_kube` starts a server, writes ``kubeconfig`` in the test's
``tmp_path``, points ``KUBECONFIG`` at it and yields the :class:`FakeKube`
(with ``.kubeconfig`` set); the server stops at teardown. Use it from a
conftest with ``from tests.support.fakekube import fake_kube  # noqa: F401 - a pytest fixture, found by its name``.
"""

from __future__ import annotations

import pytest

from tests.support.fakekube.server import ApiError, FakeKube, ResourceType, status_object

__all__ = ["ApiError", "FakeKube", "ResourceType", "fake_kube", "start_fake_kube", "status_object"]


def start_fake_kube(kubeconfig_path, namespace: str = "default") -> FakeKube:
    """Start a server and write its kubeconfig (for benchmarks and scripts)."""
    fake = FakeKube().start()
    fake.kubeconfig = fake.write_kubeconfig(kubeconfig_path, namespace=namespace)  # type: ignore[attr-defined]  # a test-only attribute
    return fake


@pytest.fixture
def fake_kube(tmp_path, monkeypatch):
    """A running :class:`FakeKube` with ``KUBECONFIG`` pointing at it."""
    fake = start_fake_kube(tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig))  # type: ignore[attr-defined]  # a test-only attribute
    try:
        yield fake
    finally:
        fake.stop()
