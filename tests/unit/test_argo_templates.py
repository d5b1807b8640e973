"""The shipped Argo templates are valid Argo (the seed's own file was not)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ARGO = Path(__file__).resolve().parents[2] / "templates" / "argo"


def _refs(obj):
    text = yaml.safe_dump(obj)
    return set(re.findall(r"\{\{workflow\.parameters\.([a-z0-9-]+)\}\}", text))


def test_benchmark_workflow_is_runnable_argo():
    wf = yaml.safe_load((ARGO / "benchmark-workflow.yaml").read_text())
    assert wf["apiVersion"] == "argoproj.io/v1alpha1" and wf["kind"] == "Workflow"
    assert "name" not in wf["metadata"] and wf["metadata"]["generateName"].endswith("-")
    params = {p["name"]: p.get("value") for p in wf["spec"]["arguments"]["parameters"]}
    assert params["batch-size"] == "100" and params["max-parallel-pods"] == "50"
    assert "model-version-id" in params and params["model-version-id"] is None  # required at submit
    assert _refs(wf) <= set(params), "every referenced parameter is declared"
    templates = {t["name"]: t for t in wf["spec"]["templates"]}
    assert wf["spec"]["entrypoint"] in templates
    steps = [s for group in templates["benchmark"]["steps"] for s in group]
    assert [s["name"] for s in steps] == ["populate", "worker", "finalize"]
    for step in steps:
        assert step["template"] in templates
        assert not ("withParam" in step and "withSequence" in step), "Argo rejects withParam mixed with withSequence"
    worker = next(s for s in steps if s["name"] == "worker")
    assert worker["withSequence"]["count"] == "{{workflow.parameters.max-parallel-pods}}"
    cmd = templates["worker"]["container"]["command"]
    assert cmd == ["sweepdeck", "queue", "worker"]


def test_spot_handler_has_cronworkflow_and_cronjob():
    docs = list(yaml.safe_load_all((ARGO / "spot-handler.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"CronWorkflow", "CronJob"}
    assert kinds["CronWorkflow"]["spec"]["schedule"] == "*/30 * * * *"
    assert kinds["CronJob"]["spec"]["schedule"] == "*/30 * * * *"
    cw = kinds["CronWorkflow"]["spec"]["workflowSpec"]
    assert any("reset-stale" in a for a in cw["templates"][0]["container"]["args"])
    assert _refs(cw) <= {p["name"] for p in cw["arguments"]["parameters"]}


def test_ranking_orders_by_metric():
    from tui.commands.queue import ranking

    configs = {1: {"hardware_config_id": 1, "framework_id": 1, "workload_type": "qa"},
               2: {"hardware_config_id": 2, "framework_id": 1, "workload_type": "qa"}}
    results = [{"config_id": 1, "metrics": {"output_tokens_per_s": 10.0}},
               {"config_id": 2, "metrics": {"output_tokens_per_s": 30.0}},
               {"config_id": 2, "metrics": {"output_tokens_per_s": 50.0}}]
    text = ranking(configs, results, "output_tokens_per_s", 5).splitlines()
    assert "40.00" in text[1] and text[1].split()[1] == "2"
    assert "10.00" in text[2]
    assert "no results" in ranking(configs, [], "x", 5)


def test_template_parallelism_is_an_integer():
    wf = yaml.safe_load((ARGO / "benchmark-workflow.yaml").read_text())
    params = {p["name"]: p.get("value") for p in wf["spec"]["arguments"]["parameters"]}
    # Argo's CRD types parallelism as an integer: a {{...}} string would be rejected
    assert isinstance(wf["spec"]["parallelism"], int) and wf["spec"]["parallelism"] == int(params["max-parallel-pods"])


def test_submitted_manifest_sets_parallelism_from_max_parallel_pods():
    from backends.argo.workflow import build_workflow, parameters

    for pods in (1, 7, 200):
        wf = build_workflow(model_version_id="mv1", experiment_id="e1", api_base_url="http://queue:8080", max_parallel_pods=pods)
        assert wf["spec"]["parallelism"] == pods and type(wf["spec"]["parallelism"]) is int
        assert parameters(wf)["max-parallel-pods"] == str(pods)
        assert "{{" not in yaml.safe_dump(wf["spec"]["parallelism"])
