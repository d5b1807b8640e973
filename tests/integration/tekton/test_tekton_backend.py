"""The tekton backend against the fake API server and the test controller (fake-API tests)."""

from __future__ import annotations

import asyncio
import json

import pytest
import yaml

from backends.events import Alert, Finished, LogLine, Phase, Progress
from backends.store import RunStore

pytestmark = pytest.mark.fakeapi


async def collect(backend, run, timeout=20, on_event=None):
    """The run's events until it ends; ``on_event(ev)``, if given, is called after each one is appended."""
    events = []

    async def go():
        async for ev in backend.events(run):
            events.append(ev)
            if on_event is not None:
                on_event(ev)

    await asyncio.wait_for(go(), timeout)
    return events


def _running(ev, unit_prefix: str) -> bool:
    """``ev`` says a task whose unit starts with ``unit_prefix`` is running."""
    return isinstance(ev, Phase) and ev.unit.startswith(unit_prefix) and ev.state == "Running"


async def test_preflight_all_pass(backend, spec, cluster):
    checks = await backend.preflight(spec)
    by = {c.name: c for c in checks}
    assert [c.name for c in checks if c.status == "fail"] == []
    assert "Kubernetes v1.30" in by["Cluster reachable"].detail
    assert by["Tekton installed"].status == "pass"
    assert by["Secret hf-secret"].status == "pass" and by["PVC data-pvc"].status == "pass"
    assert by["GPUs"].status == "pass" and by["GPUs"].data["need"] == 6  # TP 2 + TP 4 at once
    # secrets were only ever asked for as metadata
    secret_reqs = [r for r in cluster.requests if "/secrets" in r.path]
    assert secret_reqs and all("PartialObjectMetadata" in r.accept for r in secret_reqs)


async def test_preflight_failures_and_fixes(backend, spec, fake_kube):
    from tests.integration.tekton.conftest import seed

    seed(fake_kube, gpus=(4,))
    fake_kube.delete("v1", "Secret", "s3-secret", "mert")
    fake_kube.delete("v1", "PersistentVolumeClaim", "model-pvc", "mert")
    fake_kube.patch("v1", "PersistentVolumeClaim", "data-pvc", {"status": {"phase": "Lost"}}, "mert")
    fake_kube.create({"apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
                      "metadata": {"name": "exp1", "namespace": "mert"}})
    fake_kube.create({"apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
                      "metadata": {"name": "exp1-2", "namespace": "mert"}})
    by = {c.name: c for c in await backend.preflight(spec)}
    assert (
        by["Secret s3-secret"].status == "fail"
        and "kubectl create secret generic s3-secret" in by["Secret s3-secret"].fix
    )
    assert by["PVC model-pvc"].status == "fail" and "kind: PersistentVolumeClaim" in by["PVC model-pvc"].fix
    assert by["PVC data-pvc"].status == "fail"
    assert by["GPUs"].status == "warn"  # 4 GPUs: TP4 fits, TP2+TP4 at once does not
    assert by["Experiment id"].status == "fail" and by["Experiment id"].data["free_id"] == "exp1-3"


async def test_preflight_missing_namespace_and_tekton(backend, spec, fake_kube):
    fake_kube._types = {k: v for k, v in fake_kube._types.items() if k[0] != "tekton.dev"}
    by = {c.name: c for c in await backend.preflight(spec)}
    assert by["Tekton installed"].status == "fail"
    ns_check = by["Namespace mert"]
    assert ns_check.status == "fail" and ns_check.remedy is not None
    assert (ns_check.remedy.id, ns_check.remedy.label, ns_check.remedy.args) == (
        "create_namespace",
        "Create namespace mert",
        {"namespace": "mert"},
    )
    assert "mert" in ns_check.remedy.question
    # what cannot be checked without the namespace says so (and is decided again after the remedy)
    assert by["Secret hf-secret"].data == {"blocked_by": "Namespace mert"} and by["PVC data-pvc"].data == {
        "blocked_by": "Namespace mert"
    }
    assert by["GPUs"].status == "fail"


async def test_preflight_unreachable_cluster(settings, spec, tmp_path):
    from backends.cleanup import CleanupRegistry
    from backends.tekton import TektonBackend
    from config.settings import Profile

    kc = tmp_path / "dead-kubeconfig"
    kc.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", "current-context": "c",
                                  "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
                                  "users": [{"name": "u", "user": {"token": "t"}}],
                                  "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    prof = settings.profile("lab", "tekton")
    b = TektonBackend(settings, Profile("lab", "tekton", {**prof.options, "kubeconfig": str(kc)}),
                      registry=CleanupRegistry())
    checks = await b.preflight(spec)
    assert checks[0].name == "Cluster reachable" and checks[0].status == "fail" and "cannot reach" in checks[0].detail


async def test_launch_watch_success_copies_results(backend, spec, cluster, user_files):
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in user_files.iterdir()}
    spec = spec.set("engine.image", "ghcr.io/me/vllm:dev").set("engine.extra_args", ("--enable-prefix-caching",))
    run = await backend.launch(spec, RunStore().create(spec))
    assert backend.registry.pending() == ["cancel PipelineRun exp1 in mert"]
    pr = cluster.get("tekton.dev/v1", "PipelineRun", "exp1", "mert")
    assert {p["name"]: p["value"] for p in pr["spec"]["params"]} == {"experimentId": "exp1",
                                                                     "model": "meta-llama/Llama-2-7b-hf",
                                                                     "namespace": "mert"}
    assert {w["name"]: (w.get("persistentVolumeClaim") or w.get("secret")) for w in pr["spec"]["workspaces"]}[
        "data"
    ] == {"claimName": "data-pvc"}
    assert pr["spec"]["timeouts"] == {"pipeline": "6h", "tasks": "5h30m"}
    assert cluster.exists("tekton.dev/v1", "Task", "deploy-model", "mert")
    assert cluster.exists("tekton.dev/v1beta1", "StepAction", "helm-upgrade", "mert")
    pipeline = cluster.get("tekton.dev/v1", "Pipeline", "exp1", "mert")
    deploy = next(t for t in pipeline["spec"]["tasks"] if t["name"] == "deploy-model-tp2")
    params = {p["name"]: p["value"] for p in deploy["params"]}
    assert 'decode.containers[name="vllm"].args=--enable-prefix-caching' in params["overrides"]
    assert json.loads(params["config"])["decode"]["containers"][0]["image"] == "ghcr.io/me/vllm:dev"
    assert json.loads(params["config"])["decode"]["initContainers"][0]["image"] == "ghcr.io/me/vllm:dev"
    rendered = run.store.path / "rendered"
    assert {"values.yaml", "pipeline.yaml", "pipelinerun.yaml"} <= {p.name for p in rendered.iterdir()}
    assert "engine.image" in (rendered / "changes.txt").read_text()

    events = await collect(backend, run)
    fin = events[-1]
    assert isinstance(fin, Finished) and fin.outcome == "succeeded", fin
    phases = {(e.unit, e.state) for e in events if isinstance(e, Phase)}
    assert ("deploy-model-tp4", "Succeeded") in phases and ("finally-delete-model-tp2", "Succeeded") in phases
    assert any(isinstance(e, LogLine) and e.source == "vllm-tp2" and "startup complete" in e.text for e in events)
    prog = [e for e in events if isinstance(e, Progress)][-1]
    assert prog.total == 20 and prog.completed == 20
    results = run.store.results_dir
    assert (results / "exp1-2" / "guidellm-results.json").exists() and (results / "exp1-4" / "exp-config.json").exists()
    tp4 = fin.summary["results"]["exp1-4"]
    assert tp4["harness"] == "guidellm" and tp4["report"] == "guidellm-results.json"
    assert [b["name"] for b in tp4["benchmarks"]] == ["synchronous", "constant@5/s"]
    assert tp4["benchmarks"][1]["completed"] == 297 and tp4["benchmarks"][1]["ttft_ms"]["p99"] == 142.6
    assert not cluster.exists("v1", "Pod", "sweepdeck-results-exp1", "mert")
    assert backend.registry.pending() == []
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in user_files.iterdir()} == before
    assert run.store.meta()["state"] == "succeeded"


@pytest.mark.parametrize("kind,rule,evidence", [
    ("oom", "cuda-oom", "CUDA out of memory"),
    ("image-pull", "image-pull", "ImagePullBackOff"),
    ("unschedulable", "gpu-unschedulable", "Insufficient nvidia.com/gpu"),
])
async def test_scripted_vllm_failures_are_diagnosed(backend, spec, cluster, kind, rule, evidence):
    cluster.controller.fail("deploy-model-tp4", kind)
    cluster.controller.durations["deploy-model"] = 0.4
    run = await backend.launch(spec, RunStore().create(spec))
    events = await collect(backend, run)
    assert events[-1].outcome == "failed"
    alerts = [e for e in events if isinstance(e, Alert) and e.diagnosis]
    assert any(a.diagnosis.startswith(rule.split("-")[0]) and evidence in a.evidence for a in alerts), [
        (a.diagnosis, a.evidence) for a in alerts
    ]
    # the failing task's step log is shown
    assert any(isinstance(e, LogLine) and e.source == "task/deploy-model-tp4" for e in events)
    # finally still cleaned up both branches
    states = {e.unit: e.state for e in events if isinstance(e, Phase)}
    assert states["finally-delete-model-tp4"] == "Succeeded"
    assert "run-workload-tp4" not in states  # skipped: never started


async def test_task_timeout_and_retries(backend, spec, cluster):
    cluster.controller.fail("run-workload-tp2", "timeout")
    cluster.controller.fail("run-workload-tp4", "flaky")
    run = await backend.launch(spec, RunStore().create(spec))
    events = await collect(backend, run)
    phases = [e for e in events if isinstance(e, Phase)]
    assert any(p.unit == "run-workload-tp2" and p.state == "TaskRunTimeout" for p in phases)
    assert any(p.unit == "run-workload-tp4" and p.state == "Succeeded" and p.retries == 1 for p in phases)
    assert events[-1].outcome == "failed"


async def test_overtime_alert(backend, spec, cluster):
    backend.profile.options["expected_minutes"] = {"download-model": 1}
    cluster.controller.backdate["download-model"] = 125  # started more than 2 x 1 min ago
    cluster.controller.durations["download-model"] = 0.5
    run = await backend.launch(spec, RunStore().create(spec))
    events = await collect(backend, run)
    overtime = [e for e in events if isinstance(e, Alert) and e.kind == "overtime"]
    assert len(overtime) == 1 and "download-model" in overtime[0].message


async def test_cancel_gracefully_runs_finally(backend, spec, cluster):
    cluster.controller.hang["run-workload"] = True
    run = await backend.launch(spec, RunStore().create(spec))
    seen = []

    async def watch():
        async for ev in backend.events(run):
            seen.append(ev)
            if isinstance(ev, Phase) and ev.unit == "run-workload-tp2" and ev.state == "Running":
                await backend.cancel(run)

    await asyncio.wait_for(watch(), 20)
    assert seen[-1].outcome == "cancelled"
    pr = cluster.get("tekton.dev/v1", "PipelineRun", "exp1", "mert")
    assert pr["spec"]["status"] == "CancelledRunFinally"
    assert any(isinstance(e, Phase) and e.unit == "finally-delete-model-tp4" and e.state == "Succeeded" for e in seen)


async def test_cancel_now_skips_finally(backend, spec, cluster):
    """cancel(graceful=False): spec.status Cancelled, and no finally task ever runs."""
    cluster.controller.hang["run-workload"] = True
    run = await backend.launch(spec, RunStore().create(spec))
    seen = []

    async def watch():
        async for ev in backend.events(run):
            seen.append(ev)
            if isinstance(ev, Phase) and ev.unit == "run-workload-tp2" and ev.state == "Running":
                await backend.cancel(run, graceful=False)

    await asyncio.wait_for(watch(), 20)
    assert isinstance(seen[-1], Finished) and seen[-1].outcome == "cancelled"
    pr = cluster.get("tekton.dev/v1", "PipelineRun", "exp1", "mert")
    assert pr["spec"]["status"] == "Cancelled"
    taskruns = [t["metadata"]["labels"]["tekton.dev/pipelineTask"]
                for t in cluster.list("tekton.dev/v1", "TaskRun", "mert")]
    assert "run-workload-tp2" in taskruns and not [t for t in taskruns if t.startswith("finally-")]
    assert not any(isinstance(e, Phase) and e.unit.startswith("finally-") for e in seen)


async def test_cancel_escalates_from_graceful_to_now(backend, spec, cluster):
    """A graceful cancel whose finally tasks hang, then Cancelled: the finally tasks are stopped too."""
    cluster.controller.hang["run-workload"] = True
    cluster.controller.hang["finally-delete-model"] = True
    run = await backend.launch(spec, RunStore().create(spec))
    seen = []

    async def watch():
        async for ev in backend.events(run):
            seen.append(ev)
            if isinstance(ev, Phase) and ev.unit == "run-workload-tp2" and ev.state == "Running":
                await backend.cancel(run)
            if isinstance(ev, Phase) and ev.unit == "finally-delete-model-tp2" and ev.state == "Running":
                await backend.cancel(run, graceful=False)

    await asyncio.wait_for(watch(), 20)
    assert seen[-1].outcome == "cancelled"
    assert cluster.get("tekton.dev/v1", "PipelineRun", "exp1", "mert")["spec"]["status"] == "Cancelled"
    tr = cluster.get("tekton.dev/v1", "TaskRun", "exp1-finally-delete-model-tp2", "mert")
    assert tr["status"]["conditions"][0]["reason"] == "TaskRunCancelled"


async def test_remedy_creates_the_namespace(backend, spec, fake_kube):
    from backends.base import apply_remedy
    from config.errors import SweepdeckError

    check = next(c for c in await backend.preflight(spec) if c.name == "Namespace mert")
    assert await apply_remedy(backend, spec, check.remedy) == "Namespace mert created"
    assert fake_kube.exists("v1", "Namespace", "mert")
    assert next(c for c in await backend.preflight(spec) if c.name == "Namespace mert").status == "pass"
    with pytest.raises(SweepdeckError, match="no remedy 'populate'"):
        await apply_remedy(backend, spec, type(check.remedy)("populate", "Populate", "?"))


async def test_cleanup_registry_cancels_and_attach(backend, spec, cluster, settings):
    from backends.store import RunStore
    from backends.tekton import TektonBackend

    cluster.controller.hang["download-model"] = True
    run = await backend.launch(spec, RunStore().create(spec))
    record = RunStore().get(run.id)
    again = await TektonBackend(settings, backend.profile).attach(record)
    assert again.handle["pipelinerun"] == "exp1" and again.handle["tps"] == [2, 4] and len(again.handle["tasks"]) == 20
    outcomes = await backend.registry.run(5)
    assert outcomes and outcomes[0].ok
    pr = cluster.get("tekton.dev/v1", "PipelineRun", "exp1", "mert")
    assert pr["spec"]["status"] == "CancelledRunFinally"


async def test_watch_survives_410_and_resumes(backend, spec, cluster):
    cluster.controller.durations["deploy-model"] = 0.6
    run = await backend.launch(spec, RunStore().create(spec))
    compacted = False

    def compact(ev):
        nonlocal compacted
        if not compacted and _running(ev, "deploy-model"):
            compacted = True
            cluster.reset_requests()
            # end every open watch: they resume from a resourceVersion the server no longer has
            assert cluster.expire_watches() >= 3

    events = await collect(backend, run, on_event=compact)
    assert events[-1].outcome == "succeeded"
    gone = [r for r in cluster.requests if r.watch and "/taskruns" in r.path]
    relists = [r for r in cluster.requests if not r.watch and r.path.endswith("/taskruns")]
    assert gone and len(relists) >= 2, cluster.request_summary()  # re-listed after 410 Gone, plus the final list
    assert sum(1 for e in events if isinstance(e, Phase) and e.unit == "upload-tp4" and e.state == "Succeeded") == 1


async def test_launch_refuses_taken_id(backend, spec, cluster):
    from config.errors import SweepdeckError

    cluster.create({"apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
                    "metadata": {"name": "exp1", "namespace": "mert"}})
    with pytest.raises(SweepdeckError, match="already exists"):
        await backend.launch(spec, RunStore().create(spec))
    assert backend.registry.pending() == []


async def test_deleted_pipelinerun_ends_the_watch(backend, spec, cluster):
    cluster.controller.hang["download-model"] = True
    run = await backend.launch(spec, RunStore().create(spec))
    cluster.delete("tekton.dev/v1", "PipelineRun", "exp1", "mert")
    events = await collect(backend, run)
    assert events[-1].outcome == "failed" and "Deleted" in events[-1].message


async def test_recovery_fix_relaunches_with_parent(backend, spec, cluster):
    from backends.session import apply_fix

    cluster.controller.fail("deploy-model-tp2", "oom")
    run = await backend.launch(spec, RunStore().create(spec))
    events = await collect(backend, run)
    oom = next(e for e in events if isinstance(e, Alert) and e.diagnosis == "cuda-oom")
    assert oom.fixes and oom.fixes[0].changes  # e.g. Increase TP
    fixed = apply_fix(spec, oom.fixes[0])
    cluster.controller.failures.clear()
    run2 = await backend.launch(fixed, RunStore().create(fixed))
    pr = cluster.get("tekton.dev/v1", "PipelineRun", fixed.experiment_id, "mert")
    assert fixed.experiment_id == "exp1-fix" and pr["metadata"]["annotations"]["sweepdeck.io/parent"] == "exp1"
    events2 = await collect(backend, run2)
    assert events2[-1].outcome == "succeeded"


def _watching(cluster, plural):
    return any(r.watch and r.path.endswith(f"/{plural}") for r in cluster.requests)


async def test_a_failed_watch_list_is_retried_with_a_notice(backend, spec, cluster):
    from backends.events import Notice

    run = await backend.launch(spec, RunStore().create(spec))
    cluster.fail_next("GET", r"/taskruns$", 503, "ServiceUnavailable")  # the TaskRun watch's first list
    events = await collect(backend, run)
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert any("(retrying)" in m for m in notices), notices
    assert events[-1].outcome == "succeeded"


async def test_a_failed_final_taskrun_list_is_a_notice_not_the_end(backend, spec, cluster):
    from backends.events import Notice

    cluster.controller.durations["deploy-model"] = 0.6
    run = await backend.launch(spec, RunStore().create(spec))
    armed = False

    def arm(ev):
        nonlocal armed
        # Once the TaskRun watch has listed and is watching, the next plain list is the final one.
        if not armed and _watching(cluster, "taskruns"):
            armed = True
            cluster.fail_next("GET", r"/taskruns$", 503, "ServiceUnavailable")

    events = await collect(backend, run, on_event=arm)
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert any(m.startswith("final TaskRun list failed: ") for m in notices), notices
    assert events[-1].outcome == "succeeded"


async def test_a_pipelinerun_deleted_while_watched_ends_the_watch(backend, spec, cluster):
    from backends.events import Notice

    cluster.controller.hang["download-model"] = True
    run = await backend.launch(spec, RunStore().create(spec))
    deleted = False

    def delete(ev):
        nonlocal deleted
        if not deleted and _running(ev, "download-model"):
            deleted = True
            cluster.delete("tekton.dev/v1", "PipelineRun", "exp1", "mert")

    events = await collect(backend, run, on_event=delete)
    assert any(isinstance(e, Notice) and e.message == "PipelineRun exp1 was deleted" for e in events)
    assert events[-1].outcome == "failed" and "Deleted" in events[-1].message


async def test_a_deleted_taskrun_leaves_the_progress_count(backend, spec, cluster):
    cluster.controller.hang["download-model"] = True
    run = await backend.launch(spec, RunStore().create(spec))
    deleted = ended = False

    def delete(ev):
        nonlocal deleted, ended
        if not deleted and _running(ev, "download-model"):
            deleted = True
            tr = next(t for t in cluster.list("tekton.dev/v1", "TaskRun", "mert")
                      if "download-model" in t["metadata"]["name"])
            cluster.delete("tekton.dev/v1", "TaskRun", tr["metadata"]["name"], "mert")
        elif deleted and not ended and isinstance(ev, Progress) and ev.running == 0:
            ended = True  # the deleted TaskRun no longer counts as running: end the hung run
            cluster.delete("tekton.dev/v1", "PipelineRun", "exp1", "mert")

    events = await collect(backend, run, on_event=delete)
    running = [e.running for e in events if isinstance(e, Progress)]
    assert 1 in running and running[-1] == 0, running
    assert events[-1].outcome == "failed"
