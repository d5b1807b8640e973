"""The argo backend against the fake API server, the Argo test controller and a real queue API (fake-API tests)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from backends.base import apply_remedy
from backends.events import Alert, Finished, LogLine, Notice, Phase, Sweep
from backends.store import RunStore
from tests.integration.argo.conftest import MVID, NS, SMALL_TOTAL, W, populate, progress, with_options
from tests.integration.queue.conftest import auth
from tests.support.fakekube.argo_controller import remove_argo

pytestmark = pytest.mark.fakeapi

A = "argoproj.io/v1alpha1"


async def collect(backend, run, timeout=20, on_event=None):
    events = []

    async def go():
        async for ev in backend.events(run):
            events.append(ev)
            if on_event is not None:
                await on_event(ev)

    await asyncio.wait_for(go(), timeout)
    return events


def workflows(fake):
    return fake.list(A, "Workflow", NS)


# ----------------------------------------------------------------------------- pre-flight


async def test_preflight_all_pass(backend, spec, cluster, api):
    populate(api)
    checks = await backend.preflight(spec)
    by = {c.name: c for c in checks}
    assert [c.name for c in checks if c.status != "pass"] == []
    assert "Kubernetes v1.30" in by["Cluster reachable"].detail
    assert by["Argo installed"].detail.startswith("CRD workflows.argoproj.io")
    assert by[f"Namespace {NS}"].status == "pass"
    assert by["Queue API"].detail == f"{api.url} answers"
    assert by[f"Model version {MVID}"].detail.startswith(f"{SMALL_TOTAL} configs: {SMALL_TOTAL} pending")
    assert workflows(cluster) == []  # pre-flight changes nothing


async def test_preflight_without_argo(backend, spec, cluster, api):
    populate(api)
    remove_argo(cluster)
    by = {c.name: c for c in await backend.preflight(spec)}
    assert by["Argo installed"].status == "fail"
    assert by["Argo installed"].detail == "CRD workflows.argoproj.io is not installed"
    assert "Install Argo Workflows" in by["Argo installed"].fix


async def test_preflight_argo_from_discovery_when_crds_unreadable(backend, spec, fake_kube, api):
    """No apiextensions API (or no right to read it): API discovery decides."""
    fake_kube.ensure_namespace(NS)
    populate(api)
    by = {c.name: c for c in await backend.preflight(spec)}
    assert by["Argo installed"].status == "pass" and "from API discovery" in by["Argo installed"].detail
    fake_kube._types = {k: v for k, v in fake_kube._types.items() if k[0] != "argoproj.io"}
    by = {c.name: c for c in await backend.preflight(spec)}
    assert by["Argo installed"].status == "fail" and "argoproj.io/v1alpha1" in by["Argo installed"].detail


async def test_preflight_missing_namespace(backend, spec, cluster, api):
    populate(api)
    cluster.delete("v1", "Namespace", NS)
    by = {c.name: c for c in await backend.preflight(spec)}
    check = by[f"Namespace {NS}"]
    assert check.status == "fail" and f"kubectl create namespace {NS}" in check.fix
    r = check.remedy
    assert (r.id, r.label, r.args) == ("create_namespace", f"Create namespace {NS}", {"namespace": NS})
    assert r.question.startswith(f"Create namespace {NS} (context ") and "RBAC" in r.question
    assert not cluster.exists("v1", "Namespace", NS)  # pre-flight only offers it
    assert await apply_remedy(backend, spec, r) == f"created namespace {NS}"
    assert cluster.exists("v1", "Namespace", NS)
    assert await backend.remedy(spec, r) == f"namespace {NS} already exists"  # idempotent
    by = {c.name: c for c in await backend.preflight(spec)}
    assert by[f"Namespace {NS}"].status == "pass" and by[f"Namespace {NS}"].remedy is None


async def test_remedy_failures_are_readable(backend, spec, cluster, api):
    from backends.base import Remedy
    from config.errors import SweepdeckError

    cluster.delete("v1", "Namespace", NS)
    cluster.fail_next("POST", r"/namespaces$", 403, "Forbidden")
    with pytest.raises(SweepdeckError, match=f"Could not create namespace {NS}:"):
        await backend.remedy(spec, Remedy("create_namespace", "x", "?", {"namespace": NS}))
    assert not cluster.exists("v1", "Namespace", NS)
    with pytest.raises(SweepdeckError, match="no remedy 'reboot'"):
        await backend.remedy(spec, Remedy("reboot", "Reboot", "?"))
    down = with_options(backend, queue_url="http://127.0.0.1:9")  # discard port: nothing answers
    with pytest.raises(SweepdeckError, match=f"Could not populate {MVID}: .*did not answer"):
        await down.remedy(spec, Remedy("populate", "p", "?", {"model_version_id": MVID}))


async def test_preflight_queue_down(backend, spec, cluster):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    down = with_options(backend, queue_url=dead)
    by = {c.name: c for c in await down.preflight(spec)}
    assert by["Queue API"].status == "fail" and dead in by["Queue API"].detail
    assert "sweepdeck queue serve" in by["Queue API"].fix
    assert f"Model version {MVID}" not in by  # nothing to ask a queue that does not answer


async def test_preflight_unpopulated_model_version_shows_dry_run_count(backend, spec, cluster, api):
    by = {c.name: c for c in await backend.preflight(spec)}
    check = by[f"Model version {MVID}"]
    assert check.status == "fail" and check.detail == "has no configs in the queue"
    # the default matrix: 10 hardware × 3 frameworks × 5 workloads × 4 batch sizes × 3 sequence lengths
    assert check.fix == (
        f"Model version '{MVID}' has no configs. `sweepdeck queue populate {MVID}` would create 1,800 "
        "(10 hardware configs × 3 frameworks × 5 workloads × 4 batch sizes × 3 sequence lengths)."
    )
    r = check.remedy
    assert (r.id, r.label, r.args) == ("populate", f"Populate {MVID}", {"model_version_id": MVID, "expected": 1800})
    assert r.question == (
        f"Model version {MVID} has no configs. Populate it with 1,800 configs "
        "(10 hardware configs × 3 frameworks × 5 workloads × 4 batch sizes × 3 sequence lengths)?"
    )
    assert progress(api)["total"] == 0  # the dry run created nothing
    assert await apply_remedy(backend, spec, r) == (
        f"populated {MVID}: 1,800 configs created (10 hardware configs × 3 frameworks × 5 workloads × "
        "4 batch sizes × 3 sequence lengths)"
    )
    assert progress(api)["total"] == 1800
    assert (await backend.remedy(spec, r)).endswith(
        "0 configs created (10 hardware configs × 3 frameworks × 5 workloads × "
        "4 batch sizes × 3 sequence lengths), 1,800 already there"
    )
    by = {c.name: c for c in await backend.preflight(spec)}
    assert by[f"Model version {MVID}"].status == "pass"


async def test_preflight_no_model_version_and_taken_experiment(backend, spec, fake_kube, api):
    from tests.support.fakekube.argo_controller import install_argo_crds

    install_argo_crds(fake_kube)  # no controller: the old workflow stays Running
    fake_kube.ensure_namespace(NS)
    populate(api)
    fake_kube.create(
        {
            "apiVersion": A,
            "kind": "Workflow",
            "metadata": {
                "name": "old-sweep",
                "namespace": NS,
                "labels": {"sweepdeck.io/experiment": "sweep1", "sweepdeck.io/model-version": MVID},
            },
            "status": {"phase": "Running"},
        }
    )
    by = {c.name: c for c in await backend.preflight(spec)}
    assert by["Experiment id"].status == "fail" and "old-sweep" in by["Experiment id"].detail
    assert by["Other sweeps"].status == "warn" and by["Other sweeps"].data == {"workflows": ["old-sweep"]}
    none = with_options(backend, model_version_id=None)
    by = {c.name: c for c in await none.preflight(spec)}
    assert by["Model version id"].status == "fail" and "--model-version-id" in by["Model version id"].fix


async def test_preflight_unreachable_cluster(backend, spec, tmp_path, api):
    import yaml

    populate(api)
    kc = tmp_path / "dead-kubeconfig"
    kc.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            }
        )
    )
    by = {c.name: c for c in await with_options(backend, kubeconfig=str(kc)).preflight(spec)}
    assert by["Cluster reachable"].status == "fail" and "cannot reach" in by["Cluster reachable"].detail
    assert by["Queue API"].status == "pass"  # the queue is still checked


# ----------------------------------------------------------------------------- a sweep


async def test_submit_watch_success(backend, spec, cluster, api):
    populate(api)
    run = await backend.launch(spec, RunStore().create(spec))
    name = run.handle["workflow"]
    assert name.startswith("model-benchmark-pipeline-v2-") and backend.registry.pending() == [
        f"delete Workflow {name} in {NS}"
    ]
    wf = cluster.get(A, "Workflow", name, NS)
    params = {p["name"]: p["value"] for p in wf["spec"]["arguments"]["parameters"]}
    assert params["model-version-id"] == MVID and params["batch-size"] == "4" and params["max-parallel-pods"] == "3"
    assert params["api-base-url"] == api.url
    assert wf["metadata"]["labels"]["sweepdeck.io/experiment"] == "sweep1"
    saved = (run.store.path / "rendered" / "workflow.yaml").read_text()
    assert "generateName: model-benchmark-pipeline-v2-" in saved and f"value: {api.url}" in saved
    assert run.store.read_handle()["WORKFLOW"] == name

    events = await collect(backend, run)
    fin = events[-1]
    assert isinstance(fin, Finished) and fin.outcome == "succeeded", fin
    assert fin.summary["configs"] == {
        "total": SMALL_TOTAL,
        "pending": 0,
        "running": 0,
        "completed": SMALL_TOTAL,
        "failed": 0,
    }
    assert fin.summary["pods"] == {"Succeeded": 5}  # populate, 3 workers, finalize
    assert f"{SMALL_TOTAL}/{SMALL_TOTAL} configs completed" in fin.message

    wf_phases = [e.state for e in events if isinstance(e, Phase) and e.kind == "workflow"]
    assert wf_phases[0] in ("Pending", "Running") and wf_phases[-1] == "Succeeded" and "Running" in wf_phases
    nodes = [(e.unit, e.state) for e in events if isinstance(e, Phase) and e.kind == "node"]
    assert ("populate", "Succeeded") in nodes and ("finalize", "Succeeded") in nodes
    assert {f"worker({i}:{i})" for i in range(3)} <= {u for u, s in nodes if s == "Succeeded"}
    assert len(nodes) == len(set(nodes)), "a node is reported once per state"
    finalize = next(e for e in events if isinstance(e, Phase) and e.unit == "finalize" and e.state == "Succeeded")
    assert finalize.started and finalize.finished and finalize.finished >= finalize.started

    sweeps = [e for e in events if isinstance(e, Sweep)]
    done = [s.completed for s in sweeps]
    assert done == sorted(done) and done[-1] == SMALL_TOTAL and len(set(done)) >= 2, done
    assert sweeps[-1].by_workload and {r["workload_type"] for r in sweeps[-1].by_workload} == {
        "chatbot",
        "qa",
        "summarization",
        "code-generation",
        "creative-writing",
    }

    logs = [e for e in events if isinstance(e, LogLine)]
    assert logs and all(e.source.startswith(name + "-worker-") for e in logs if "claimed" in e.text)
    assert any("claimed 4 configs" in e.text for e in logs)
    sources = {e.source for e in logs}
    assert any("-populate-" in x for x in sources) and any("-worker-" in x for x in sources), (
        "populate's log, then a worker's"
    )
    assert backend.registry.pending() == []
    assert run.store.meta()["state"] == "succeeded"
    await backend.cleanup(run)
    assert cluster.exists(A, "Workflow", name, NS), "a finished Workflow is kept (delete_after is off)"


async def test_failed_node_alerts_and_fails(backend, spec, cluster, api):
    populate(api)
    cluster.controller.fail("worker(1:1)", "Error (exit code 137)")  # every attempt: retries run out
    cluster.workers.command = "test {workload_type} != qa"  # qa configs fail in the other workers
    run = await backend.launch(spec, RunStore().create(spec))
    events = await collect(backend, run)
    fin = events[-1]
    assert isinstance(fin, Finished) and fin.outcome == "failed"
    alert = next(e for e in events if isinstance(e, Alert) and e.kind == "workflow-failed")
    assert alert.severity == "error" and "worker(1:1)" in alert.message and "Error (exit code 137)" in alert.evidence
    retry = [e for e in events if isinstance(e, Phase) and e.unit == "worker(1:1)"]
    assert retry[-1].state == "Failed" and retry[-1].retries == 5 and retry[-1].detail == "No more retries left"
    assert not any(isinstance(e, Phase) and e.unit == "finalize" for e in events), "finalize never runs"
    final = [e for e in events if isinstance(e, Sweep)][-1]
    assert final.failures == [{"error_message": "exit code 1", "count": 8}]  # 40 configs, 8 of them qa
    assert final.completed == 32 and final.failed == 8
    assert fin.summary["configs"]["failed"] == 8


@pytest.mark.parametrize("graceful,strategy", [(True, "Stop"), (False, "Terminate")])
async def test_cancel_stops_workers_and_returns_their_configs(backend, spec, cluster, api, graceful, strategy):
    """graceful → Argo's Stop (exit handlers still run), else Terminate (they do not)."""
    populate(api)
    cluster.workers.command = "sleep 0.2"
    run = await backend.launch(spec, RunStore().create(spec))
    cluster.reset_requests()

    async def on_event(ev):
        if isinstance(ev, LogLine) and "claimed" in ev.text and not backend._stopping:
            await backend.cancel(run, graceful=graceful)

    events = await collect(backend, run, on_event=on_event)
    assert events[-1].outcome == "cancelled", events[-1]
    wf = cluster.get(A, "Workflow", run.handle["workflow"], NS)
    assert wf["spec"]["shutdown"] == strategy and wf["status"]["message"] == f"Stopped with strategy '{strategy}'"
    assert cluster.request_count("PATCH", f"/workflows/{run.handle['workflow']}") == 1  # one request over HTTP
    prog = progress(api)
    assert prog["running"] == 0 and prog["pending"] > 0, prog  # SIGTERM'd workers handed their batch back
    assert not any(isinstance(e, Alert) and e.kind == "workflow-failed" for e in events)


async def test_log_follow_switches_to_another_running_worker(backend, spec, cluster, api):
    populate(api)
    cluster.controller.hang["worker"] = True
    run = await backend.launch(spec, RunStore().create(spec))
    followed = []

    async def on_event(ev):
        if isinstance(ev, Notice) and ev.message.startswith("following the log of pod ") and "-worker-" in ev.message:
            pod = ev.message.rsplit(" ", 1)[-1]
            followed.append(pod)
            if len(followed) == 1:  # its container ends: the log stream closes
                cluster.append_log(NS, pod, "last words", container="main")
                cluster.patch("v1", "Pod", pod, {"status": {"phase": "Succeeded"}}, NS)
            elif len(followed) == 2:
                await backend.cancel(run)

    events = await collect(backend, run, on_event=on_event)
    assert len(followed) >= 2 and len(set(followed)) == len(followed), "each pod is followed once"
    logs = [e for e in events if isinstance(e, LogLine)]
    assert any(e.source == followed[0] and e.text == "last words" for e in logs)
    assert any(e.source == followed[1] and "starting worker(" in e.text for e in logs)
    assert events[-1].outcome == "cancelled"


async def test_cleanup_and_registry_delete_a_live_workflow(backend, spec, cluster, api):
    populate(api)
    cluster.controller.hang["worker"] = True
    run = await backend.launch(spec, RunStore().create(spec))
    name = run.handle["workflow"]
    cluster.wait_for(
        lambda: len(cluster.list("v1", "Pod", NS, label_selector=f"workflows.argoproj.io/workflow={name}")) >= 4
    )
    await backend.cleanup(run)
    assert not cluster.exists(A, "Workflow", name, NS)
    cluster.wait_for(lambda: not cluster.list("v1", "Pod", NS, label_selector=f"workflows.argoproj.io/workflow={name}"))
    assert backend.registry.pending() == []
    await backend.cleanup(run)  # idempotent

    spec2 = spec.set("experiment_id", "sweep2")
    run2 = await backend.launch(spec2, RunStore().create(spec2))
    outcomes = await backend.registry.run(5)  # what Ctrl+C / SIGTERM runs
    assert [o.label for o in outcomes] == [f"delete Workflow {run2.handle['workflow']} in {NS}"] and outcomes[0].ok
    assert not cluster.exists(A, "Workflow", run2.handle["workflow"], NS)
    events = await collect(backend, run2)
    assert (
        isinstance(events[-1], Finished)
        and events[-1].outcome == "cancelled"
        and "no longer exists" in " ".join(e.message for e in events if isinstance(e, Notice))
    )


async def test_deleted_by_someone_else_fails(backend, spec, cluster, api):
    populate(api)
    cluster.controller.hang["worker"] = True
    run = await backend.launch(spec, RunStore().create(spec))
    cluster.delete(A, "Workflow", run.handle["workflow"], NS)
    events = await collect(backend, run)
    assert events[-1].outcome == "failed" and "Deleted" in events[-1].message


async def test_watch_relists_after_410_gone(backend, spec, cluster, api):
    populate(api)
    cluster.workers.command = "sleep 0.05"
    run = await backend.launch(spec, RunStore().create(spec))
    expired = []

    async def on_event(ev):
        if not expired and isinstance(ev, Phase) and ev.unit.startswith("worker(") and ev.state == "Running":
            # the event may come from the first list, before both watches are open: wait for them
            for _ in range(200):
                if len(cluster._watchers) >= 2:
                    break
                await asyncio.sleep(0.01)
            cluster.reset_requests()
            # every open watch ends; resuming from its resourceVersion now answers 410 Gone
            expired.append(cluster.expire_watches())

    events = await collect(backend, run, on_event=on_event)
    assert expired and expired[0] >= 2
    assert events[-1].outcome == "succeeded"
    relists = [r for r in cluster.requests if not r.watch and r.path.endswith("/workflows")]
    pod_relists = [r for r in cluster.requests if not r.watch and r.path.endswith("/pods")]
    assert relists and pod_relists, cluster.request_summary()
    assert sum(1 for e in events if isinstance(e, Phase) and e.unit == "finalize" and e.state == "Succeeded") == 1


async def test_stale_configs_raise_an_alert_with_the_reset(backend, spec, cluster, api):
    populate(api)
    cluster.controller.hang["worker"] = True  # the pods run but claim nothing
    stale_backend = with_options(backend, stale_after_min=0.0005)  # 30 ms
    # a worker that claimed and then vanished, like a spot instance
    claimed = httpx.post(
        f"{api.url}{W}/configs/get-batch", json={"limit": 3, "model_version_id": MVID}, headers=auth("worker")
    ).json()
    run = await stale_backend.launch(spec, RunStore().create(spec))
    seen = []

    async def on_event(ev):
        if isinstance(ev, Alert) and ev.kind == "stale-configs":
            seen.append(ev)
            await stale_backend.cancel(run)

    await collect(stale_backend, run, on_event=on_event)
    alert = seen[0]
    assert "3 config(s) of mv1" in alert.message and alert.fixes[0].description.startswith(
        "sweepdeck queue reset-stale"
    )
    assert f"config #{claimed[0]['id']}" in alert.evidence
    assert len(seen) == 1, "one alert per set of newly stale configs"


async def test_attach_finds_the_workflow_again(backend, spec, cluster, api, settings, profile):
    from backends.argo import ArgoBackend
    from backends.store import RunDir, RunStore

    populate(api)
    cluster.workers.command = "true"
    run = await backend.launch(spec, RunStore().create(spec))
    record = RunStore().get(run.id)
    again = await ArgoBackend(settings, profile).attach(record)
    assert again.handle["workflow"] == run.handle["workflow"] and again.handle["model_version_id"] == MVID
    # without the name in the session, the experiment label finds it
    session = RunDir(record.path).read_handle()
    del session["WORKFLOW"]
    RunDir(record.path).write_handle(session)
    record.meta.pop("workflow", None)
    by_label = await ArgoBackend(settings, profile).attach(record)
    assert by_label.handle["workflow"] == run.handle["workflow"]
    events = await collect(backend, by_label)
    assert events[-1].outcome == "succeeded"
    cluster.delete(A, "Workflow", run.handle["workflow"], NS)
    from config.errors import SweepdeckError

    with pytest.raises(SweepdeckError, match="No Workflow of run sweep1"):
        await ArgoBackend(settings, profile).attach(record)


async def test_session_driver_runs_preflight_submit_and_cleanup(backend, spec, cluster, api):
    """The same path the TUI and `sweepdeck argo submit` take."""
    from backends.session import PreflightFailed
    from backends.supervisor.drive import drive

    seen = []
    with pytest.raises(PreflightFailed, match="has no configs"):
        await drive(
            backend, spec, on_event=seen.append, assume_yes=True, install_signals=False, registry=backend.registry
        )
    assert workflows(cluster) == []
    populate(api)
    cluster.workers.command = "true"
    result = await drive(
        backend, spec, on_event=seen.append, assume_yes=True, install_signals=False, registry=backend.registry
    )
    assert result.outcome == "succeeded" and result.exit_code == 0
    assert any(isinstance(e, Sweep) for e in seen)
    saved = [type(e).__name__ for e in result.run.store.events()]
    assert "Sweep" in saved and saved[-1] == "Finished"


# ----------------------------------------------------------------------------- the queue's token Secret


def _secret_requests(cluster):
    return [r for r in cluster.requests if "/secrets" in r.path]


async def test_preflight_checks_the_token_secret_without_reading_it_and_offers_to_create_it(
    backend, spec, cluster, api
):
    import base64
    import os
    import stat

    from backends.queue.auth import read_token_file

    populate(api)
    cluster.reset_requests()
    by = {c.name: c for c in await backend.preflight(spec)}
    assert by["Queue token Secret sweepdeck-queue-token"].status == "pass"
    assert by["Queue token Secret sweepdeck-queue-token"].detail == f"exists in {NS} (its contents are not read)"
    assert by["Queue token"].status == "pass"
    reads = _secret_requests(cluster)
    assert reads and all(
        r.method == "GET" and "as=PartialObjectMetadata" in r.accept and r.path.endswith("/secrets") for r in reads
    ), [(r.method, r.path, r.accept) for r in reads]  # metadata only, never the data

    cluster.delete("v1", "Secret", "sweepdeck-queue-token", NS)
    fresh = api.token_file.parent / "new-tokens"
    other = with_options(backend, queue_token_file=str(fresh), queue_token_secret="queue-tokens")
    by = {c.name: c for c in await other.preflight(spec)}
    assert by["Queue token"].status == "fail" and f"Token file {fresh} does not exist" in by["Queue token"].detail
    check = by["Queue token Secret queue-tokens"]
    assert check.status == "fail" and "could not authenticate" in check.detail
    assert f"kubectl create secret generic queue-tokens -n {NS} --from-file=tokens={fresh}" in check.fix
    r = check.remedy
    assert (r.id, r.label) == ("create_token_secret", "Create Secret queue-tokens")
    assert r.question.startswith(
        f"Create Secret queue-tokens in {NS} with the queue tokens of {fresh} (generated now, mode 0600)"
    )
    assert not fresh.exists(), "pre-flight changes nothing"
    assert await apply_remedy(other, spec, r) == (
        f"created Secret queue-tokens in {NS} from the queue tokens of {fresh} (generated now, mode 0600)"
    )
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o600
    tokens = {role: t for _n, role, t in read_token_file(fresh)}
    secret = cluster.get("v1", "Secret", "queue-tokens", NS)
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["worker-token"] == tokens["worker"] and data["admin-token"] == tokens["admin"]
    assert [tuple(line.split()) for line in data["tokens"].splitlines()] == read_token_file(fresh)
    assert await other.remedy(spec, r) == f"Secret queue-tokens already exists in {NS} (left as it is)"
    # the Workflow it submits mounts that Secret: workers the worker token only, populate/finalize the admin token
    wf = other.manifest(spec)
    volumes = {v["name"]: v["secret"] for v in wf["spec"]["volumes"]}
    assert {v["secretName"] for v in volumes.values()} == {"queue-tokens"}
    templates = {t["name"]: t for t in wf["spec"]["templates"]}
    mounted = {
        name: [m["name"] for m in t["container"]["volumeMounts"]] for name, t in templates.items() if "container" in t
    }
    assert mounted == {
        "populate": ["queue-admin-token"],
        "worker": ["queue-worker-token"],
        "finalize": ["queue-admin-token"],
    }
    assert [i["key"] for i in volumes["queue-worker-token"]["items"]] == ["worker-token"]


async def test_preflight_says_when_the_queue_refuses_sweepdecks_token(backend, spec, cluster, api, tmp_path):
    populate(api)
    wrong = tmp_path / "wrong"
    wrong.write_text("someone-elses-token-0123456789\n")
    by = {c.name: c for c in await with_options(backend, queue_token_file=str(wrong)).preflight(spec)}
    assert by["Queue token"].status == "fail" and "HTTP 401" in by["Queue token"].detail
    assert "queue_token_file" in by["Queue token"].fix
    assert f"Model version {MVID}" not in by


async def test_pods_without_the_token_secret_fail_and_say_why(backend, spec, cluster, api):
    """Launched past pre-flight with no Secret: the pods cannot read their token (as the kubelet could not mount it)."""
    populate(api)
    cluster.delete("v1", "Secret", "sweepdeck-queue-token", NS)
    run = await backend.launch(spec, RunStore().create(spec))
    events = await collect(backend, run, timeout=60)
    assert events[-1].outcome == "failed"
    failed = [e for e in events if isinstance(e, Phase) and e.kind == "node" and e.state in ("Failed", "Error")]
    assert any("FileNotFoundError: secret 'sweepdeck-queue-token' not found" in e.detail for e in failed), failed
    assert progress(api)["running"] == 0 and progress(api)["completed"] == 0
