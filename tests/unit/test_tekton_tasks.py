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


@pytest.mark.parametrize("harness", ["guidellm", "inference-perf"])
def test_pipeline_params_match_task_params(tmp_path, harness):
    values = yaml.safe_load((FIX / "blis-values.yaml").read_text())
    if harness == "inference-perf":
        values["workload"] = {"harness": "inference-perf", "profile": "p.yaml", "treatments": []}
    (tmp_path / "v.yaml").write_text(yaml.safe_dump(values))
    doc, _ = render_files(template_path("tekton/blis/pipeline.yaml.j2"), tmp_path / "v.yaml")
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


def test_guidellm_load_generator_interface():
    t = yaml.safe_load((TASKS / "guidellm-load-generator.yaml").read_text())
    params = [p["name"] for p in t["spec"]["params"]]
    assert params == ["target-url", "model", "rate-type", "rate", "max-concurrency", "prompt-tokens", "output-tokens",
                      "max-seconds", "max-requests", "data-type", "data-path", "output-basename", "hf-secret-name", "additional-args"]
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
    proc = subprocess.run([sys.executable, "-c", script, *overrides], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    values = json.loads(out.read_text())
    vllm = values["decode"]["containers"][0]
    assert values["decode"]["parallelism"]["tensor"] == 4
    assert vllm["args"] == ["--max-model-len=4096", "--enable-prefix-caching"]
    assert {e["name"]: e["value"] for e in vllm["env"]}["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-e-4:4318"
    assert values["fullnameOverride"] == "e-4" and values["modelArtifacts"]["labels"]["llm-d.ai/model"] == "e-4"
