"""The fake API server, driven by the official kubernetes client (fake-API tests)."""

from __future__ import annotations

import io
import tarfile
import threading
import time

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream

pytestmark = pytest.mark.fakeapi


@pytest.fixture
def api(fake_kube):
    return config.new_client_from_config(config_file=str(fake_kube.kubeconfig))


def test_discovery_and_version(api, fake_kube):
    assert client.VersionApi(api).get_code().git_version.startswith("v1.30")
    groups = {g.name for g in client.ApisApi(api).get_api_versions().groups}
    assert {"tekton.dev", "argoproj.io", "batch"} <= groups
    res = client.CustomObjectsApi(api).get_api_resources("tekton.dev", "v1")
    names = {r.name for r in res.resources}
    assert {"pipelineruns", "taskruns", "pipelines", "tasks", "pipelineruns/status"} <= names
    core = {r.name for r in client.CoreV1Api(api).get_api_resources().resources}
    assert {"pods", "secrets", "persistentvolumeclaims", "nodes", "namespaces", "pods/log", "pods/exec"} <= core
    # trailing slash and unknown group
    import json
    import urllib.request
    req = urllib.request.Request(fake_kube.url + "/apis/tekton.dev/v1/", headers={"Authorization": "Bearer fake-token"})
    assert json.load(urllib.request.urlopen(req))["groupVersion"] == "tekton.dev/v1"
    req = urllib.request.Request(fake_kube.url + "/apis/nosuch.io/v1", headers={"Authorization": "Bearer fake-token"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req)
    assert err.value.code == 404


def test_bad_token_is_401(fake_kube, tmp_path):
    fake_kube.token = "other"
    api = config.new_client_from_config(config_file=str(fake_kube.kubeconfig))
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(api).list_namespace()
    assert err.value.status == 401


def test_create_get_conflict_notfound(api, fake_kube):
    core = client.CoreV1Api(api)
    ns = core.create_namespace({"metadata": {"name": "exp"}})
    assert ns.metadata.uid and ns.status.phase == "Active"
    cm = core.create_namespaced_config_map("exp", {"metadata": {"generateName": "cfg-"}, "data": {"a": "1"}})
    assert cm.metadata.name.startswith("cfg-") and len(cm.metadata.name) == 9
    assert int(cm.metadata.resource_version) > int(ns.metadata.resource_version)
    assert cm.metadata.creation_timestamp is not None
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("exp", {"metadata": {"name": cm.metadata.name}})
    assert err.value.status == 409 and '"reason":"AlreadyExists"' in err.value.body.replace(" ", "")
    with pytest.raises(ApiException) as err:
        core.read_namespaced_secret("hf-secret", "exp")
    assert err.value.status == 404 and "NotFound" in err.value.body
    with pytest.raises(ApiException) as err:
        core.create_namespaced_secret("nosuch-ns", {"metadata": {"name": "s"}})
    assert err.value.status == 404


def test_custom_objects_crud_patch_apply(api, fake_kube):
    co = client.CustomObjectsApi(api)
    body = {"apiVersion": "tekton.dev/v1", "kind": "PipelineRun", "metadata": {"name": "pr1", "labels": {"a": "x"}},
            "spec": {"params": []}}
    created = co.create_namespaced_custom_object("tekton.dev", "v1", "default", "pipelineruns", body)
    assert created["metadata"]["generation"] == 1
    patched = co.patch_namespaced_custom_object("tekton.dev", "v1", "default", "pipelineruns", "pr1",
                                                {"spec": {"status": "CancelledRunFinally"}})
    assert patched["spec"]["status"] == "CancelledRunFinally" and patched["spec"]["params"] == []
    assert patched["metadata"]["generation"] == 2
    st = co.patch_namespaced_custom_object_status(
        "tekton.dev",
        "v1",
        "default",
        "pipelineruns",
        "pr1",
        {"status": {"conditions": [{"type": "Succeeded", "status": "Unknown", "reason": "Running"}]}},
    )
    assert st["status"]["conditions"][0]["reason"] == "Running" and st["metadata"]["generation"] == 2
    # replace with a stale resourceVersion -> 409 Conflict
    stale = dict(created)
    with pytest.raises(ApiException) as err:
        co.replace_namespaced_custom_object("tekton.dev", "v1", "default", "pipelineruns", "pr1", stale)
    assert err.value.status == 409
    # server-side apply creates when absent, merges when present
    task = {"apiVersion": "tekton.dev/v1", "kind": "Task", "metadata": {"name": "t1"},
            "spec": {"steps": [{"name": "s", "image": "busybox"}]}}
    co.patch_namespaced_custom_object("tekton.dev", "v1", "default", "tasks", "t1", task,
                                      field_manager="test", _content_type="application/apply-patch+yaml")
    assert (
        co.get_namespaced_custom_object("tekton.dev", "v1", "default", "tasks", "t1")["spec"]["steps"][0]["image"]
        == "busybox"
    )
    listed = co.list_namespaced_custom_object("tekton.dev", "v1", "default", "pipelineruns",
                                              label_selector="a in (x,y)")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["pr1"]
    assert (
        co.list_namespaced_custom_object("tekton.dev", "v1", "default", "pipelineruns", label_selector="a!=x")["items"]
        == []
    )
    co.delete_namespaced_custom_object("tekton.dev", "v1", "default", "pipelineruns", "pr1")
    with pytest.raises(ApiException) as err:
        co.get_namespaced_custom_object("tekton.dev", "v1", "default", "pipelineruns", "pr1")
    assert err.value.status == 404
    # argo and batch kinds are served too
    co.create_namespaced_custom_object("argoproj.io", "v1alpha1", "default", "workflows",
                                       {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                                        "metadata": {"generateName": "wf-"}})
    assert len(co.list_namespaced_custom_object("argoproj.io", "v1alpha1", "default", "workflows")["items"]) == 1
    client.BatchV1Api(api).create_namespaced_cron_job(
        "default",
        {
            "metadata": {"name": "cj"},
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}},
        },
    )


def test_selectors_and_metadata_only_secret_check(api, fake_kube):
    fake_kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf-secret", "namespace": "default"},
                      "data": {"HF_TOKEN": "c2VjcmV0"}})
    fake_kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1", "labels": {"app": "vllm"}},
                      "status": {"phase": "Running"}})
    fake_kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p2", "labels": {"app": "other"}},
                      "status": {"phase": "Pending"}})
    core = client.CoreV1Api(api)
    assert [
        p.metadata.name for p in core.list_namespaced_pod("default", field_selector="status.phase=Running").items
    ] == ["p1"]
    assert [p.metadata.name for p in core.list_namespaced_pod("default", label_selector="app,app!=vllm").items] == [
        "p2"
    ]
    assert [p.metadata.name for p in core.list_namespaced_pod("default", label_selector="!nosuch").items] == [
        "p1",
        "p2",
    ]
    names = [s.metadata.name
             for s in core.list_namespaced_secret("default", field_selector="metadata.name=hf-secret").items]
    assert names == ["hf-secret"]
    page = core.list_namespaced_pod("default", limit=1)
    assert len(page.items) == 1 and page.metadata._continue
    rest = core.list_namespaced_pod("default", limit=1, _continue=page.metadata._continue)
    assert rest.items[0].metadata.name == "p2"


def test_watch_resume_bookmarks_and_410(api, fake_kube):
    co = client.CustomObjectsApi(api)
    fake_kube.bookmark_interval = 0.2
    first = fake_kube.create({"apiVersion": "tekton.dev/v1", "kind": "TaskRun",
                              "metadata": {"name": "tr1", "labels": {"tekton.dev/pipelineRun": "pr"}}})
    rv = first["metadata"]["resourceVersion"]
    fake_kube.patch("tekton.dev/v1", "TaskRun", "tr1", {"status": {"podName": "p"}}, "default")
    fake_kube.create({"apiVersion": "tekton.dev/v1", "kind": "TaskRun", "metadata": {"name": "other"}})
    w = watch.Watch()
    seen = []
    for ev in w.stream(co.list_namespaced_custom_object, "tekton.dev", "v1", "default", "taskruns",
                       label_selector="tekton.dev/pipelineRun=pr", resource_version=rv, timeout_seconds=2,
                       allow_watch_bookmarks=True):
        seen.append(ev["type"])
        if ev["type"] == "BOOKMARK":
            break
    assert seen[0] == "MODIFIED" and "ADDED" not in seen and seen[-1] == "BOOKMARK"
    # events that arrive while watching are streamed at once
    def later():
        time.sleep(0.2)
        fake_kube.patch("tekton.dev/v1", "TaskRun", "tr1", {"status": {"x": 1}}, "default")
    threading.Thread(target=later).start()
    t0 = time.monotonic()
    for ev in watch.Watch().stream(co.list_namespaced_custom_object, "tekton.dev", "v1", "default", "taskruns",
                                   resource_version=str(fake_kube.resource_version), timeout_seconds=5):
        assert ev["object"]["status"]["x"] == 1
        break
    assert time.monotonic() - t0 < 2
    # timeoutSeconds ends an idle watch
    t0 = time.monotonic()
    assert list(watch.Watch().stream(co.list_namespaced_custom_object, "tekton.dev", "v1", "default", "taskruns",
                                     resource_version=str(fake_kube.resource_version), timeout_seconds=1)) == []
    assert 0.9 < time.monotonic() - t0 < 3
    # compacted history -> 410 Gone
    fake_kube.compact()
    with pytest.raises(ApiException) as err:
        list(watch.Watch().stream(co.list_namespaced_custom_object, "tekton.dev", "v1", "default", "taskruns",
                                  resource_version=rv, timeout_seconds=1))
    assert err.value.status == 410
    # a bounded history window
    fake_kube.history_limit = 2
    for i in range(4):
        fake_kube.patch("tekton.dev/v1", "TaskRun", "tr1", {"status": {"i": i}}, "default")
    assert fake_kube.compacted_rv > int(rv)


def test_watch_without_rv_lists_then_streams_and_selection_exit(api, fake_kube):
    core = client.CoreV1Api(api)
    fake_kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1", "labels": {"llm-d.ai/model": "m"}}})
    events = []
    def change():
        time.sleep(0.2)
        fake_kube.patch("v1", "Pod", "p1", {"metadata": {"labels": {"llm-d.ai/model": "gone"}}}, "default")
    threading.Thread(target=change).start()
    for ev in watch.Watch().stream(core.list_namespaced_pod, "default", label_selector="llm-d.ai/model=m",
                                   timeout_seconds=3):
        events.append((ev["type"], ev["object"].metadata.name))
        if len(events) == 2:
            break
    assert events == [("ADDED", "p1"), ("DELETED", "p1")]


def test_pod_log_follow_streams_appended_lines(api, fake_kube):
    core = client.CoreV1Api(api)
    fake_kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "vllm-0"},
                      "spec": {"containers": [{"name": "vllm"}]}})
    fake_kube.append_log("default", "vllm-0", "INFO starting\nINFO loading", container="vllm")
    assert core.read_namespaced_pod_log("vllm-0", "default", tail_lines=1) == "INFO loading\n"
    got = []
    def feed():
        time.sleep(0.2)
        fake_kube.append_log("default", "vllm-0", "torch.OutOfMemoryError: CUDA out of memory", container="vllm")
        time.sleep(0.1)
        fake_kube.patch("v1", "Pod", "vllm-0", {"status": {"phase": "Failed"}}, "default")
    threading.Thread(target=feed).start()
    resp = core.read_namespaced_pod_log("vllm-0", "default", container="vllm", follow=True, _preload_content=False)
    for line in watch.watch.iter_resp_lines(resp):
        got.append(line)
    assert got == ["INFO starting", "INFO loading", "torch.OutOfMemoryError: CUDA out of memory"]


def test_exec_tar_copy_over_websocket(api, fake_kube, tmp_path):
    core = client.CoreV1Api(api)
    fake_kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "reader"},
                      "spec": {"containers": [{"name": "c"}]}})
    local = tmp_path / "tree"
    (local / "exp1" / "sub").mkdir(parents=True)
    (local / "exp1" / "results.json").write_text('{"ok": true}')
    (local / "exp1" / "sub" / "big.bin").write_bytes(bytes(range(256)) * 4096)
    fake_kube.mount_dir("default", "reader", "/mnt/exp", local)
    resp = stream(core.connect_get_namespaced_pod_exec, "reader", "default",
                  command=["tar", "cf", "-", "/mnt/exp/exp1"],
                  stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False, binary=True)
    data = b""
    while resp.is_open():
        resp.update(timeout=1)
        if resp.peek_stdout():
            data += resp.read_stdout()
    err = resp.read_channel(3)
    resp.close()
    assert "Success" in (err.decode() if isinstance(err, bytes) else err)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = sorted(tar.getnames())
        assert names == ["mnt/exp/exp1/results.json", "mnt/exp/exp1/sub/big.bin"]
        assert tar.extractfile("mnt/exp/exp1/sub/big.bin").read() == bytes(range(256)) * 4096
    # a missing path -> non-zero exit on the error channel
    out = stream(core.connect_get_namespaced_pod_exec, "reader", "default", command=["tar", "cf", "-", "/mnt/exp/none"],
                 stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
    out.run_forever(timeout=3)
    assert "NonZeroExitCode" in out.read_channel(3)


def test_request_counter_and_injected_failure(api, fake_kube):
    core = client.CoreV1Api(api)
    fake_kube.reset_requests()
    core.list_namespaced_pod("default")
    core.list_namespaced_pod("default")
    assert fake_kube.request_count(method="GET", path_contains="/pods") == 2
    fake_kube.fail_next("GET", r"/pods$", 503, "ServiceUnavailable")
    with pytest.raises(ApiException) as err:
        core.list_namespaced_pod("default")
    assert err.value.status == 503
    core.list_namespaced_pod("default")
    assert fake_kube.request_summary()["GET /api/v1/namespaces/default/pods"] == 4


def test_namespace_delete_cascades(api, fake_kube):
    fake_kube.ensure_namespace("tmp")
    fake_kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "tmp"}})
    client.CoreV1Api(api).delete_namespace("tmp")
    assert not fake_kube.exists("v1", "ConfigMap", "c", "tmp")
