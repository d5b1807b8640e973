"""A test controller that advances PipelineRuns, TaskRuns and pods like Tekton + llm-d.

It subscribes to a :class:`~tests.support.fakekube.FakeKube` and, for every
PipelineRun created there, resolves its Pipeline (``pipelineRef``), runs the
tasks in ``runAfter`` order (TaskRuns labelled ``tekton.dev/pipelineRun``,
``tekton.dev/pipelineTask``, each with a step pod and log), then the
``finally`` tasks, and sets the PipelineRun's ``Succeeded`` condition. The
``deploy-model`` task starts a vLLM pod labelled ``llm-d.ai/model=<label>``
that logs vLLM's startup lines; ``delete-model`` deletes it; ``run-workload``
writes the harness's reports (guidellm, or inference-perf for the campaign
format) under ``results_root/<label>/`` (served as ``/mnt/exp``
to any pod whose name starts with ``sweepdeck-results-``).
``spec.status: CancelledRunFinally`` / ``Cancelled`` cancel like Tekton.

Script failures with :meth:`TektonController.fail` (task name or prefix):

* ``oom`` — the vLLM log shows a CUDA OOM, the pod crashes, deploy-model fails;
* ``image-pull`` — the vLLM pod waits in ImagePullBackOff, deploy-model fails;
* ``unschedulable`` — the vLLM pod stays Pending (Unschedulable, no GPUs);
* ``timeout`` — the TaskRun fails with reason TaskRunTimeout;
* ``fail`` — the step exits 1 with an error in its log;
* ``flaky`` — the first attempt fails, the retry succeeds (retriesStatus).

``hang`` (task prefix → True) keeps a task running; ``backdate`` (prefix →
seconds) makes a task's startTime older, for over-time alerts.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path
from typing import Any

from tests.support.fakekube.controller import ControllerLoop
from tests.support.fakekube.server import ApiError, FakeKube

T = "tekton.dev/v1"
GUIDELLM_REPORT = (
    Path(__file__).resolve().parents[2] / "fixtures" / "tekton" / "reports" / "guidellm-0.3-benchmarks.json"
)
#: Real inference-perf 0.7 output (two constant-rate stages, shared_prefix data), read where the reference set keeps it.
INFERENCE_PERF_REPORTS = Path("/work/shared/reference/benchmark-reports/inference-perf/shared-prefix-constant")
INFERENCE_PERF_FILES = ("stage_0_lifecycle_metrics.json", "stage_1_lifecycle_metrics.json",
                        "summary_lifecycle_metrics.json", "config.yaml")

VLLM_START = [
    "INFO 01-01 00:00:01 [api_server.py:1885] vLLM API server version 0.11.0",
    "INFO 01-01 00:00:02 [model.py:547] Resolved architecture: LlamaForCausalLM",
    "INFO 01-01 00:00:20 [gpu_model_runner.py:2653] Model loading took 12.55 GiB and 15.2 seconds",
    "INFO 01-01 00:00:31 [api_server.py:1971] Starting vLLM API server 0 on http://0.0.0.0:8000",
    "INFO:     Application startup complete.",
]
OOM_LINES = [
    "ERROR 01-01 00:00:25 [core.py:708] EngineCore failed to start.",
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.96 GiB. GPU 0 has a total capacity of 79.19 GiB "
    "of which 1.02 GiB is free.",
]


def _now(offset: float = 0.0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - offset))


class TektonController(ControllerLoop):
    """Drives Tekton objects in a fake API server from a background thread."""

    def __init__(self, fake: FakeKube, *, step: float = 0.05, results_root: Path | None = None,
                 vllm_logs: bool = True) -> None:
        super().__init__(fake, "tekton-controller")
        self.step = step
        self.results_root = results_root
        self.vllm_logs = vllm_logs
        self.failures: dict[str, tuple[str, str]] = {}
        self.durations: dict[str, float] = {}
        self.hang: dict[str, bool] = {}
        self.backdate: dict[str, float] = {}
        self._runs: dict[tuple[str, str], dict[str, Any]] = {}

    # ------------------------------------------------------------------ control

    def fail(self, task: str, kind: str, message: str = "") -> None:
        """Make the task named (or prefixed) ``task`` fail the ``kind`` way (see module docs)."""
        self.failures[task] = (kind, message)

    # ------------------------------------------------------------------ events

    def _on_event(self, etype: str, obj: dict[str, Any]) -> None:
        kind, meta = obj.get("kind"), obj.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if kind == "PipelineRun":
            if etype == "ADDED" and key not in self._runs:
                self._later(0, lambda: self._start_run(key))
            elif etype == "MODIFIED" and key in self._runs:
                wanted = (obj.get("spec") or {}).get("status")
                run = self._runs[key]
                if wanted in ("Cancelled", "CancelledRunFinally", "StoppedRunFinally") and not run["cancel"]:
                    run["cancel"] = wanted
                    self._later(0, lambda: self._cancel(key))
                elif wanted == "Cancelled" and run["cancel"] in ("CancelledRunFinally", "StoppedRunFinally"):
                    # Tekton: Cancelled after a graceful cancel stops the finally tasks too
                    run["cancel"] = wanted
                    self._later(0, lambda: self._cancel(key, finally_too=True))
            elif etype == "DELETED":
                self._runs.pop(key, None)
        elif kind == "Pod" and etype == "ADDED" and meta.get("name", "").startswith("sweepdeck-results-"):
            self._later(self.step, lambda: self._reader_running(key, obj))

    def _reader_running(self, key: tuple[str, str], pod: dict[str, Any]) -> None:
        ns, name = key
        if self.results_root is not None:
            mounts = [m["mountPath"] for c in pod["spec"]["containers"] for m in c.get("volumeMounts") or []]
            self.fake.mount_dir(ns, name, mounts[0] if mounts else "/mnt/exp", self.results_root)
        self.fake.patch(
            "v1",
            "Pod",
            name,
            {
                "status": {
                    "phase": "Running",
                    "startTime": _now(),
                    "containerStatuses": [
                        {"name": "reader", "ready": True, "state": {"running": {"startedAt": _now()}}}
                    ],
                }
            },
            ns,
        )

    # ------------------------------------------------------------------ pipeline runs

    def _start_run(self, key: tuple[str, str]) -> None:
        ns, name = key
        pr = self.fake.get(T, "PipelineRun", name, ns)
        spec = pr.get("spec") or {}
        pipeline_spec = spec.get("pipelineSpec")
        pipeline_name = (spec.get("pipelineRef") or {}).get("name", "")
        if pipeline_spec is None:
            try:
                pipeline_spec = self.fake.get(T, "Pipeline", pipeline_name, ns)["spec"]
            except ApiError:
                self._set_pr(
                    key,
                    "False",
                    "CouldntGetPipeline",
                    f"Error retrieving pipeline for pipelinerun {ns}/{name}: pipeline {pipeline_name} not found",
                )
                return
        params = {p["name"]: p.get("value") for p in spec.get("params") or []}
        run = {
            "params": params, "pipeline": pipeline_name, "cancel": None,
            "tasks": {t["name"]: {"def": t, "state": "pending", "attempt": 0}
                      for t in pipeline_spec.get("tasks") or []},
            "order": [t["name"] for t in pipeline_spec.get("tasks") or []],
            "finally": [t["name"] for t in pipeline_spec.get("finally") or []],
            "finally_started": False, "done": False,
        }
        for t in pipeline_spec.get("finally") or []:
            run["tasks"][t["name"]] = {"def": t, "state": "pending", "attempt": 0, "finally": True}
        self._runs[key] = run
        self.fake.patch(T, "PipelineRun", name, {"status": {
            "startTime": _now(),
            "conditions": [{"type": "Succeeded", "status": "Unknown",
                            "reason": "Running", "message": "Tasks Completed: 0 (Failed: 0, Cancelled 0), Incomplete: "
                                                            f"{len(run['order'])}, Skipped: 0"}],
        }}, ns, status_only=True)
        self._advance(key)

    def _set_pr(self, key: tuple[str, str], status: str, reason: str, message: str) -> None:
        ns, name = key
        cond = {"type": "Succeeded", "status": status, "reason": reason, "message": message}
        patch: dict[str, Any] = {"conditions": [cond]}
        if status in ("True", "False"):
            patch["completionTime"] = _now()
        self.fake.patch(T, "PipelineRun", name, {"status": patch}, ns, status_only=True)

    def _advance(self, key: tuple[str, str]) -> None:
        run = self._runs.get(key)
        if run is None or run["done"]:
            return
        tasks = run["tasks"]
        if not run["cancel"]:
            for name in run["order"]:
                t = tasks[name]
                if t["state"] != "pending":
                    continue
                after = t["def"].get("runAfter") or []
                states = [tasks[a]["state"] for a in after if a in tasks]
                if any(s in ("failed", "skipped", "cancelled") for s in states):
                    t["state"] = "skipped"
                elif all(s == "succeeded" for s in states):
                    self._start_task(key, name)
        running = [n for n, t in tasks.items() if t["state"] == "running"]
        pending_main = [n for n in run["order"] if tasks[n]["state"] == "pending"]
        if running:
            return
        # nothing runs and nothing could start: what is left waits on a failed branch
        for n in pending_main:
            tasks[n]["state"] = "skipped"
        if run["finally"] and not run["finally_started"] and run["cancel"] != "Cancelled":
            run["finally_started"] = True
            for n in run["finally"]:
                self._start_task(key, n)
            return
        run["done"] = True
        main = [tasks[n]["state"] for n in run["order"]]
        failed = main.count("failed")
        done = main.count("succeeded")
        if run["cancel"]:
            self._set_pr(key, "False", "Cancelled", f"PipelineRun \"{key[1]}\" was cancelled")
        elif failed or main.count("skipped"):
            self._set_pr(key, "False", "Failed",
                         f"Tasks Completed: {done + failed} (Failed: {failed}, Cancelled 0), Skipped: "
                         f"{main.count('skipped')}")
        else:
            self._set_pr(key, "True", "Succeeded", f"Tasks Completed: {done} (Failed: 0, Cancelled 0), Skipped: 0")

    def _param(self, run: dict[str, Any], task: dict[str, Any], name: str) -> Any:
        for p in task.get("params") or []:
            if p.get("name") == name:
                value = p.get("value")
                if isinstance(value, str):
                    return re.sub(r"\$\(params\.([\w-]+)\)",
                                  lambda m: str(run["params"].get(m.group(1), m.group(0))), value)
                return value
        return None

    def _start_task(self, key: tuple[str, str], name: str) -> None:
        ns, pr_name = key
        run = self._runs[key]
        t = run["tasks"][name]
        t["state"] = "running"
        t["attempt"] += 1
        tr_name = f"{pr_name}-{name}"[:63].rstrip("-")
        pod = f"{tr_name}-pod"[:63]
        t["tr"], t["pod"] = tr_name, pod
        task_ref = (t["def"].get("taskRef") or {}).get("name", name)
        labels = {"tekton.dev/pipelineRun": pr_name, "tekton.dev/pipelineTask": name,
                  "tekton.dev/pipeline": run["pipeline"], "tekton.dev/task": task_ref}
        if t["def"].get("matrix"):
            self._start_matrix(key, name, labels)
            return
        offset = self._match(self.backdate, name) or 0.0
        status = {"podName": pod, "startTime": _now(offset),
                  "conditions": [{"type": "Succeeded", "status": "Unknown", "reason": "Running",
                                  "message": "Not all Steps in the Task have finished executing"}]}
        if t["attempt"] == 1:
            self.fake.create({"apiVersion": T, "kind": "TaskRun",
                              "metadata": {"name": tr_name, "namespace": ns, "labels": labels},
                              "spec": {"taskRef": {"name": task_ref}, "params": t["def"].get("params") or []},
                              "status": status})
        else:
            self.fake.patch(T, "TaskRun", tr_name, {"status": status}, ns, status_only=True)
        with contextlib.suppress(ApiError):
            self.fake.create({"apiVersion": "v1", "kind": "Pod",
                              "metadata": {"name": pod, "namespace": ns,
                                           "labels": {"tekton.dev/taskRun": tr_name, **labels}},
                              "spec": {"containers": [{"name": "step-run"}]}, "status": {"phase": "Running"}})
        self.fake.append_log(ns, pod, f"[{name}] starting (attempt {t['attempt']})", container="step-run")
        failure = self._match(self.failures, name)
        if task_ref == "deploy-model":
            self._deploy_model(key, name, failure)
        if self._match(self.hang, name):
            return
        duration = self._match(self.durations, name) or self.step
        self._later(duration, lambda: self._finish_task(key, name, failure))

    def _start_matrix(self, key: tuple[str, str], name: str, labels: dict[str, str]) -> None:
        """A matrix task fans out into one TaskRun per combination, named ``<pr>-<task>-<i>``,
        each with a step pod (container ``step-run``) that logs its combination.

        ``fail`` scripts a child by its row name (``<task>-<i>``, exact): its step
        exits 1, and the matrix task (so the PipelineRun) fails.
        """
        from backends.tekton.matrix import combinations

        ns, pr_name = key
        t = self._runs[key]["tasks"][name]
        combos = combinations(t["def"]["matrix"])
        t["children"] = []
        for i, (_label, combo) in enumerate(combos):
            tr = f"{pr_name}-{name}-{i}"
            pod = f"{tr}-pod"[:63]
            t["children"].append((tr, pod, f"{name}-{i}"))
            self.fake.create({"apiVersion": T, "kind": "TaskRun",
                              "metadata": {"name": tr, "namespace": ns, "labels": labels},
                              "spec": {"params": (t["def"].get("params") or []) + combo},
                              "status": {"podName": pod, "startTime": _now(),
                                         "steps": [{"name": "run", "container": "step-run",
                                                    "running": {"startedAt": _now()}}],
                                         "conditions": [{"type": "Succeeded", "status": "Unknown",
                                                         "reason": "Running"}]}})
            with contextlib.suppress(ApiError):
                self.fake.create({"apiVersion": "v1", "kind": "Pod",
                                  "metadata": {"name": pod, "namespace": ns,
                                               "labels": {"tekton.dev/taskRun": tr, **labels}},
                                  "spec": {"containers": [{"name": "step-run"}]}, "status": {"phase": "Running"}})
            shown = " ".join(f"{c['name']}={c['value']}" for c in combo)
            self.fake.append_log(ns, pod, f"[{name}-{i}] starting {shown}", container="step-run")

        def finish() -> None:
            if t["state"] != "running":
                return
            failed = False
            for tr, pod, row in t["children"]:
                bad = self.failures.get(row)
                failed = failed or bad is not None
                self.fake.append_log(ns, pod, f"error: {bad[1] or 'step failed'}" if bad else f"[{row}] done",
                                     container="step-run")
                cond = (
                    {
                        "type": "Succeeded",
                        "status": "False",
                        "reason": "Failed",
                        "message": '"step-run" exited with code 1',
                    }
                    if bad
                    else {"type": "Succeeded", "status": "True", "reason": "Succeeded"}
                )
                step = {"name": "run", "container": "step-run",
                        "terminated": {"exitCode": 1 if bad else 0, "reason": "Error" if bad else "Completed"}}
                self.fake.patch(T, "TaskRun", tr,
                                {"status": {"completionTime": _now(), "conditions": [cond], "steps": [step]}}, ns,
                                status_only=True)
                self.fake.patch("v1", "Pod", pod, {"status": {"phase": "Failed" if bad else "Succeeded"}}, ns)
            t["state"] = "failed" if failed else "succeeded"
            self._advance(key)

        if not self._match(self.hang, name):
            self._later(self._match(self.durations, name) or self.step, finish)

    def _label(self, key: tuple[str, str], name: str) -> str:
        run = self._runs[key]
        return str(self._param(run, run["tasks"][name]["def"], "modelLabel") or f"{key[1]}-model")

    def _deploy_model(self, key: tuple[str, str], name: str, failure: tuple[str, str] | None) -> None:
        ns = key[0]
        label = self._label(key, name)
        pod = f"{label}-decode-0"[:63]
        kind = failure[0] if failure else None
        status: dict[str, Any] = {"phase": "Pending"}
        if kind == "unschedulable":
            status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                     "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: "
                                                "0/3 nodes are available."}]
        elif kind == "image-pull":
            status["containerStatuses"] = [{"name": "vllm", "ready": False, "state": {"waiting": {
                "reason": "ImagePullBackOff", "message": 'Back-off pulling image "vllm/vllm-openai:nosuch"'}}}]
        with contextlib.suppress(ApiError):
            self.fake.create({"apiVersion": "v1", "kind": "Pod",
                              "metadata": {"name": pod, "namespace": ns,
                                           "labels": {"llm-d.ai/model": label, "llm-d.ai/inferenceServing": "true"}},
                              "spec": {"containers": [{"name": "vllm"}]}, "status": status})
        if kind in ("unschedulable", "image-pull"):
            return

        def running() -> None:
            self.fake.patch("v1", "Pod", pod,
                            {"status": {"phase": "Running", "startTime": _now(), "containerStatuses": [
                {"name": "vllm", "ready": kind != "oom", "state": {"running": {"startedAt": _now()}}}]}}, ns)
            if self.vllm_logs:
                lines = VLLM_START[:3] + (OOM_LINES if kind == "oom" else VLLM_START[3:])
                self.fake.append_log(ns, pod, "\n".join(lines), container="vllm")
            if kind == "oom":
                self._later(self.step / 2,
                            lambda: self.fake.patch("v1", "Pod", pod,
                                                    {"status": {"phase": "Running", "containerStatuses": [
                    {"name": "vllm", "ready": False, "restartCount": 1,
                     "state": {"waiting": {"reason": "CrashLoopBackOff",
                                           "message": "back-off 10s restarting failed container"}},
                     "lastState": {"terminated": {"reason": "Error", "exitCode": 1}}}]}}, ns))

        self._later(self.step / 4, running)

    def _finish_task(self, key: tuple[str, str], name: str, failure: tuple[str, str] | None) -> None:
        run = self._runs.get(key)
        if run is None or run["done"]:
            return
        t = run["tasks"][name]
        if t["state"] != "running":
            return
        ns = key[0]
        kind = failure[0] if failure else None
        task_ref = (t["def"].get("taskRef") or {}).get("name", name)
        if kind == "flaky" and t["attempt"] == 1 and (t["def"].get("retries") or 0) > 0:
            self.fake.append_log(ns, t["pod"], "error: connection refused (will retry)", container="step-run")
            tr = self.fake.get(T, "TaskRun", t["tr"], ns)
            retries = list((tr.get("status") or {}).get("retriesStatus") or []) + [
                {"conditions": [{"type": "Succeeded", "status": "False", "reason": "Failed"}]}
            ]
            self.fake.patch(T, "TaskRun", t["tr"], {"status": {"retriesStatus": retries}}, ns, status_only=True)
            t["state"] = "pending"
            self._start_task(key, name)
            return
        ok = kind is None or (kind == "flaky")
        if kind in ("oom", "image-pull", "unschedulable") and task_ref != "deploy-model":
            ok = True
        if ok:
            self.fake.append_log(ns, t["pod"], f"[{name}] done", container="step-run")
            if task_ref.startswith("run-workload") and self.results_root is not None:
                self._write_results(key, name, task_ref)
            if task_ref == "delete-model":
                pod = f"{self._label(key, name)}-decode-0"[:63]
                if self.fake.exists("v1", "Pod", pod, ns):
                    self.fake.delete("v1", "Pod", pod, ns)
            status = {"completionTime": _now(),
                      "conditions": [{"type": "Succeeded", "status": "True", "reason": "Succeeded",
                                      "message": "All Steps have completed executing"}],
                      "steps": [{"name": "run", "container": "step-run",
                                 "terminated": {"exitCode": 0, "reason": "Completed"}}]}
            t["state"] = "succeeded"
        else:
            reason, message, log = "Failed", failure[1] if failure else "", "error: step failed"
            if kind == "timeout":
                reason, message = "TaskRunTimeout", message or f'TaskRun "{t["tr"]}" failed to finish within "350m0s"'
                log = "step terminated: timeout"
            elif kind == "oom":
                message = message or "vLLM pod is not ready: CrashLoopBackOff"
                log = "error: timed out waiting for the condition on pods (vLLM container restarting)"
            elif kind == "image-pull":
                message = message or "vLLM pod is not ready: ImagePullBackOff"
                log = "error: timed out waiting for the condition on pods"
            elif kind == "unschedulable":
                message = message or "vLLM pod is not ready: Unschedulable"
                log = "error: timed out waiting for the condition on pods"
            else:
                message = message or '"step-run" exited with code 1'
            self.fake.append_log(ns, t["pod"], log, container="step-run")
            status = {"completionTime": _now(),
                      "conditions": [{"type": "Succeeded", "status": "False", "reason": reason, "message": message}],
                      "steps": [{"name": "run", "container": "step-run",
                                 "terminated": {"exitCode": 1, "reason": "Error"}}]}
            t["state"] = "failed"
        self.fake.patch(T, "TaskRun", t["tr"], {"status": status}, ns, status_only=True)
        self.fake.patch("v1", "Pod", t["pod"], {"status": {"phase": "Succeeded" if ok else "Failed"}}, ns)
        self._advance(key)

    def _write_results(self, key: tuple[str, str], name: str, task_ref: str) -> None:
        """What the harness leaves in the branch's directory of data-pvc.

        ``run-workload-inference-perf-blis`` (the campaign format): inference-perf's
        lifecycle reports under ``results/`` and the resolved ``profile.yaml``;
        any other run-workload: a real guidellm 0.3 report (synchronous, constant@5/s).
        """
        assert self.results_root is not None
        label = self._label(key, name)
        out = self.results_root / label
        out.mkdir(parents=True, exist_ok=True)
        (out / "exp-config.json").write_text(f'{{"tp": "{label.rsplit("-", 1)[-1]}"}}')
        if task_ref == "run-workload-inference-perf-blis":
            (out / "results").mkdir(exist_ok=True)
            for file in INFERENCE_PERF_FILES:
                (out / "results" / file).write_bytes((INFERENCE_PERF_REPORTS / file).read_bytes())
            run = self._runs[key]
            profile = self._param(run, run["tasks"][name]["def"], "profileTemplate")
            (out / "profile.yaml").write_text(json.dumps(profile))
            return
        (out / "guidellm-results.json").write_bytes(GUIDELLM_REPORT.read_bytes())

    def _cancel_task(self, t: dict, ns: str) -> None:
        """Tekton's own cancel of one running TaskRun: its condition says so, its pod fails."""
        cancelled = {"type": "Succeeded", "status": "False", "reason": "TaskRunCancelled",
                     "message": "TaskRun was cancelled"}
        self.fake.patch(T, "TaskRun", t["tr"], {"status": {"completionTime": _now(), "conditions": [cancelled]}},
                        ns, status_only=True)
        self.fake.patch("v1", "Pod", t["pod"], {"status": {"phase": "Failed"}}, ns)

    def _cancel(self, key: tuple[str, str], finally_too: bool = False) -> None:
        run = self._runs.get(key)
        if run is None or run["done"]:
            return
        ns = key[0]
        for t in run["tasks"].values():
            if finally_too and t.get("finally") and t["state"] == "running" and not t.get("children"):
                t["state"] = "cancelled"
                self._cancel_task(t, ns)
            elif t["state"] == "running" and not t.get("finally") and t.get("children"):
                t["state"] = "cancelled"
                for tr, pod, _row in t["children"]:
                    self.fake.patch(T, "TaskRun", tr, {"status": {"conditions": [
                        {"type": "Succeeded", "status": "False", "reason": "TaskRunCancelled"}]}}, ns, status_only=True)
                    self.fake.patch("v1", "Pod", pod, {"status": {"phase": "Failed"}}, ns)
            elif t["state"] == "running" and not t.get("finally"):
                t["state"] = "cancelled"
                self._cancel_task(t, ns)
            elif t["state"] == "pending" and not t.get("finally"):
                t["state"] = "skipped"
        self._advance(key)
