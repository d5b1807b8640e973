"""The packaged Tekton Tasks/StepActions agree with the BLIS pipeline that uses them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from backends.tekton.render import render_files
from templates.render import template_path

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "tekton"
TASKS = template_path("tekton/tasks")
ACTIONS = template_path("tekton/stepactions")


def load_dir(path):
    return {d["metadata"]["name"]: d for p in sorted(path.glob("*.yaml")) for d in [yaml.safe_load(p.read_text())]}


def test_every_task_and_stepaction_is_valid_yaml_of_its_kind():
    tasks, actions = load_dir(TASKS), load_dir(ACTIONS)
    assert all(t["kind"] == "Task" and t["apiVersion"] == "tekton.dev/v1" for t in tasks.values())
    assert all(a["kind"] == "StepAction" for a in actions.values())
    for t in tasks.values():
        for step in t["spec"]["steps"]:
            ref = (step.get("ref") or {}).get("name")
            assert ref is None or ref in actions, f"{t['metadata']['name']} refers to missing StepAction {ref}"


CAMPAIGN = Path("/work/shared/reference/tektonc-data-collection/blis-campaign-14-qwen3-14b-h100-codegen")


@pytest.mark.parametrize("harness", ["guidellm", "inference-perf", "campaign", "campaign-tracing"])
def test_pipeline_params_match_task_params(tmp_path, harness):
    values = yaml.safe_load((FIX / "blis-values.yaml").read_text())
    template = template_path("tekton/blis/pipeline.yaml.j2")
    if harness == "inference-perf":
        values["workload"] = {"harness": "inference-perf", "profile": "p.yaml", "treatments": []}
    elif harness.startswith("campaign"):
        if not CAMPAIGN.is_dir():
            pytest.skip(f"the upstream campaign files are not at {CAMPAIGN}")
        values = yaml.safe_load((CAMPAIGN / "values.yaml").read_text())
        values["stack"]["treatments"]["tensorParallelism"] = [1, 2]
        values["stack"]["tracing"] = harness.endswith("tracing")
        template = template_path("tekton/blis/inference-perf.yaml.j2")
    (tmp_path / "v.yaml").write_text(yaml.safe_dump(values))
    doc, _ = render_files(template, tmp_path / "v.yaml")
    tasks = load_dir(TASKS)
    declared_ws = {w["name"] for w in doc["spec"]["workspaces"]}
    for section in ("tasks", "finally"):
        for pt in doc["spec"][section]:
            task = tasks[pt["taskRef"]["name"]]
            declared = {p["name"]: p for p in task["spec"].get("params") or []}
            given = {p["name"] for p in pt.get("params") or []}
            assert given <= set(declared), (pt["name"], given - set(declared))
            required = {n for n, p in declared.items() if "default" not in p}
            assert required <= given, (pt["name"], required - given)
            needed_ws = {w["name"] for w in task["spec"].get("workspaces") or []}
            bound = {w["name"] for w in pt.get("workspaces") or []}
            assert needed_ws == bound and bound <= declared_ws, pt["name"]
            for p in pt.get("params") or []:
                kind = declared[p["name"]].get("type", "string")
                assert isinstance(p["value"], list) == (kind == "array"), (pt["name"], p["name"])
                if isinstance(p["value"], dict) and kind == "string":
                    # Tekton hands a nested object to a string param as its JSON text; the task reads JSON
                    assert any(not isinstance(v, str) for v in p["value"].values()), (pt["name"], p["name"])
    if harness.startswith("campaign"):
        names = [t["name"] for t in doc["spec"]["tasks"]]
        assert ("deploy-otel-collector-2" in names) == harness.endswith("tracing")
        assert names[-1] == ("raw-upload-2")


def test_guidellm_load_generator_interface():
    t = yaml.safe_load((TASKS / "guidellm-load-generator.yaml").read_text())
    params = [p["name"] for p in t["spec"]["params"]]
    assert params == ["target-url", "model", "rate-type", "rate", "max-concurrency", "prompt-tokens", "output-tokens",
                      "max-seconds", "max-requests", "data-type", "data-path", "output-basename", "hf-secret-name",
                      "additional-args"]
    assert [r["name"] for r in t["spec"]["results"]] == ["benchmark-report", "log-file"]
    assert [w["name"] for w in t["spec"]["workspaces"]] == ["results"]


def test_deploy_model_applies_overrides(tmp_path):
    task = yaml.safe_load((TASKS / "deploy-model.yaml").read_text())
    out = tmp_path / "values.yaml"
    script = task["spec"]["steps"][0]["script"].replace("/workspace/values.yaml", str(out))
    helm = yaml.safe_load((FIX / "blis-values.yaml").read_text())["stack"]["model"]["helmValues"]
    overrides = [
        "decode.parallelism.tensor=4",
        'decode.containers[name="vllm"].args=--max-model-len=4096',
        'decode.containers[name="vllm"].args=--enable-prefix-caching',
        'decode.containers[name="vllm"].env[name="OTEL_EXPORTER_OTLP_ENDPOINT"].value=http://otel-e-4:4318',
    ]
    env = dict(os.environ, CONFIG=json.dumps(helm), MODEL="meta-llama/Llama-2-7b-hf", LABEL="e-4")
    proc = subprocess.run([sys.executable, "-c", script, *overrides], env=env, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    values = json.loads(out.read_text())
    vllm = values["decode"]["containers"][0]
    assert values["decode"]["parallelism"]["tensor"] == 4
    assert vllm["args"] == ["--max-model-len=4096", "--enable-prefix-caching"]
    assert {e["name"]: e["value"] for e in vllm["env"]}["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-e-4:4318"
    assert values["fullnameOverride"] == "e-4" and values["modelArtifacts"]["labels"]["llm-d.ai/model"] == "e-4"


def test_run_workload_inference_perf_blis_fills_the_placeholders_and_keeps_the_logs(tmp_path):
    """The task's run step, run here with a stand-in harness that records its config and writes a report."""
    task = yaml.safe_load((TASKS / "run-workload-inference-perf-blis.yaml").read_text())
    step = next(s for s in task["spec"]["steps"] if s["name"] == "run")
    harness = tmp_path / "inference-perf"
    harness.write_text("#!/bin/sh\n[ \"$1\" = --config_file ] || exit 9\ncp \"$2\" \"$(dirname \"$2\")/seen.json\"\n"
                       "echo '{\"load_summary\": {}}' > \"$(dirname \"$2\")/results/stage_0_lifecycle_metrics.json\"\n"
                       "echo running; echo warning >&2\n")
    harness.chmod(0o755)
    (tmp_path / "endpoint").write_text("http://10.0.0.7:8000\n")
    (tmp_path / "HF_TOKEN").write_text("hf_secret\n")
    template = {"load": {"type": "constant", "stages": [{"rate": 5.0, "duration": 600}]},
                "server": {"type": "vllm", "model_name": "MODEL", "base_url": "STACK_ENDPOINT", "ignore_eos": True},
                "tokenizer": {"pretrained_model_name_or_path": "TOKENIZER"},
                "data": {"type": "shared_prefix", "shared_prefix": {"question_len": 466}, "note": "PATH is kept here"},
                "storage": {"local_storage": {"path": "PATH"}}}
    results = tmp_path / "exp-1"
    env = dict(os.environ, MODEL="Qwen/Qwen3-14B", RESULTS=str(results), PROFILE_TEMPLATE=json.dumps(template),
               HARNESS=str(harness), ENDPOINT_FILE=str(tmp_path / "endpoint"), HF_TOKEN_FILE=str(tmp_path / "HF_TOKEN"))
    proc = subprocess.run([sys.executable, "-c", step["script"]], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads((results / "seen.json").read_text())
    assert seen["server"] == {"type": "vllm", "model_name": "Qwen/Qwen3-14B", "base_url": "http://10.0.0.7:8000",
                              "ignore_eos": True}
    assert seen["tokenizer"]["pretrained_model_name_or_path"] == "Qwen/Qwen3-14B"
    assert seen["storage"]["local_storage"]["path"] == str(results / "results")
    assert seen["data"]["note"] == "PATH is kept here" and seen["load"] == template["load"]
    assert (results / "results" / "stage_0_lifecycle_metrics.json").exists()
    assert (results / "results" / "stdout.log").read_text() == "running\n"
    assert (results / "results" / "stderr.log").read_text() == "warning\n"
    bad = dict(env, PROFILE_TEMPLATE="load: {")
    proc = subprocess.run([sys.executable, "-c", step["script"]], env=bad, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "profileTemplate is not JSON" in proc.stderr
