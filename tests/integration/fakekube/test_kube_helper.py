"""backends/kube.py (shared by Tekton and Argo) against the fake API server (fake-API tests)."""

from __future__ import annotations

import asyncio
import io
import tarfile

import pytest

from backends.kube import Kube, KubeError

pytestmark = pytest.mark.fakeapi


@pytest.fixture
def kube(fake_kube):
    k = Kube.connect(str(fake_kube.kubeconfig))
    yield k
    k.close()


def test_connect_errors(tmp_path, fake_kube):
    with pytest.raises(KubeError, match="No kubeconfig"):
        Kube.connect(str(tmp_path / "nope"))
    with pytest.raises(KubeError, match="Context 'other' is not in"):
        Kube.connect(str(fake_kube.kubeconfig), "other")
    k = Kube.connect()  # $KUBECONFIG from the fixture
    assert k.context == "fake" and k.server == fake_kube.url and k.default_namespace == "default"


async def test_paged_list_apply_exists(kube, fake_kube):
    for i in range(5):
        fake_kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c{i}"}})
    items, rv = await asyncio.to_thread(kube.list_raw, "", "v1", "configmaps", "default", page=2)
    assert [i["metadata"]["name"] for i in items] == [f"c{i}" for i in range(5)] and int(rv) >= 1000
    assert fake_kube.request_count(path_contains="/configmaps") == 3
    task = {"apiVersion": "tekton.dev/v1", "kind": "Task", "metadata": {"name": "t"}, "spec": {"steps": []}}
    assert (await kube.apply(task, "default"))[0] == "created"
    task["spec"]["steps"] = [{"name": "s"}]
    action, obj = await kube.apply(task, "default")
    assert action == "updated" and obj["spec"]["steps"] == [{"name": "s"}]
    fake_kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf-secret"},
                      "data": {"HF_TOKEN": "eA=="}})
    assert await kube.exists("secrets", "hf-secret", "default") and not await kube.exists(
        "secrets", "s3-secret", "default"
    )
    assert await kube.get("", "v1", "pods", "nope", "default") is None
    assert await kube.delete("", "v1", "configmaps", "c0", "default") is True
    assert await kube.delete("", "v1", "configmaps", "c0", "default") is False


async def test_watch_stream_resumes_and_relists_on_410(kube, fake_kube):
    fake_kube.create({"apiVersion": "tekton.dev/v1", "kind": "TaskRun",
                      "metadata": {"name": "a", "labels": {"p": "x"}}})
    stream = kube.watch("tekton.dev", "v1", "taskruns", "default", label_selector="p=x", timeout_seconds=30)
    it = stream.__aiter__()
    first = await asyncio.wait_for(it.__anext__(), 5)
    assert first.type == "SYNC" and [o["metadata"]["name"] for o in first.objects] == ["a"]
    fake_kube.create({"apiVersion": "tekton.dev/v1", "kind": "TaskRun",
                      "metadata": {"name": "b", "labels": {"p": "x"}}})
    ev = await asyncio.wait_for(it.__anext__(), 5)
    assert (ev.type, ev.object["metadata"]["name"]) == ("ADDED", "b")
    # a plain end of the watch: it resumes from the last resourceVersion without a list
    fake_kube.drop_watches()
    fake_kube.patch("tekton.dev/v1", "TaskRun", "a", {"status": {"x": 1}}, "default")
    ev = await asyncio.wait_for(it.__anext__(), 5)
    assert ev.type == "MODIFIED" and stream.relists == 1
    # history gone: 410 -> a fresh list (SYNC) and a new watch
    fake_kube.expire_watches()
    ev = await asyncio.wait_for(it.__anext__(), 5)
    assert ev.type == "SYNC" and stream.gone == 1 and stream.relists == 2
    assert sorted(o["metadata"]["name"] for o in ev.objects) == ["a", "b"]
    stream.stop()


async def test_watch_reports_errors_and_retries(kube, fake_kube):
    fake_kube.fail_next("GET", r"/taskruns$", 503, "ServiceUnavailable")
    stream = kube.watch("tekton.dev", "v1", "taskruns", "default", timeout_seconds=30)
    it = stream.__aiter__()
    err = await asyncio.wait_for(it.__anext__(), 5)
    assert isinstance(err, KubeError) and "503" in err.message
    ok = await asyncio.wait_for(it.__anext__(), 5)
    assert ok.type == "SYNC"
    stream.stop()


async def test_follow_log_and_copy_from_pod(kube, fake_kube, tmp_path):
    fake_kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                      "spec": {"containers": [{"name": "vllm"}]}})
    fake_kube.append_log("default", "p", "one\ntwo", container="vllm")
    got = []

    async def follow():
        async for lines in kube.follow_log("default", "p", "vllm"):
            got.extend(lines)
            if len(got) == 2:
                fake_kube.append_log("default", "p", "three", container="vllm")
                fake_kube.close_log("default", "p", container="vllm")

    await asyncio.wait_for(follow(), 5)
    assert got == ["one", "two", "three"]
    fake_kube.set_files("default", "p",
                        {"/mnt/exp/run-1/a.json": "{}", "/mnt/exp/run-1/sub/b.txt": "b", "/mnt/exp/other/c": "c"})
    files = await kube.copy_from_pod("default", "p", "/mnt/exp/run-1", tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in files) == ["a.json", "sub/b.txt"]
    with pytest.raises(KubeError, match="No such file"):
        await kube.copy_from_pod("default", "p", "/mnt/exp/none", tmp_path / "out2")


async def test_copy_refuses_unsafe_members(kube, fake_kube, tmp_path):
    fake_kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "evil"}})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../../escape.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    fake_kube.exec_handlers.append(lambda ns, pod, c, argv: (buf.getvalue(), b"", 0) if pod == "evil" else None)
    with pytest.raises(KubeError, match="unsafe"):
        await kube.copy_from_pod("default", "evil", "/data/x", tmp_path / "dest")
    assert not (tmp_path / "escape.txt").exists()
