"""Every Argo manifest sweepdeck writes is valid Argo: checked against the official Argo Workflows
JSON schemas of v3.5.0 and v4.1.2 (read where they are, in ``shared/reference/argo-workflows/``),
with the queue's token Secret mounted."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

from tests.support.services import require

ROOT = Path(__file__).resolve().parents[2]
ARGO = ROOT / "templates" / "argo"
#: Where shared/ sits: beside the repository (CI's clone), beside the worktrees' folder, or /work/shared.
SCHEMA_DIRS = [p / "shared" / "reference" / "argo-workflows" for p in (ROOT.parent, ROOT.parent.parent, Path("/work"))]
VERSIONS = ("3.5.0", "4.1.2")
SECRET = "sweepdeck-queue-token"


@cache
def _validator(version: str, kind: str):
    import jsonschema

    found = [d / f"schema-v{version}.json" for d in SCHEMA_DIRS if (d / f"schema-v{version}.json").exists()]
    require(bool(found), f"Argo schema v{version} not found in {', '.join(map(str, SCHEMA_DIRS))}")
    schema = json.loads(found[0].read_text())
    root = {"$ref": f"#/definitions/io.argoproj.workflow.v1alpha1.{kind}", "definitions": schema["definitions"]}
    return jsonschema.Draft7Validator(root)


def errors(doc: dict, version: str) -> list[str]:
    """Schema violations of an Argo object (its kind picks the definition), as 'path: message' lines."""
    found = _validator(version, doc["kind"]).iter_errors(json.loads(json.dumps(doc)))
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in found]


def _refs(obj):
    text = yaml.safe_dump(obj)
    return set(re.findall(r"\{\{workflow\.parameters\.([a-z0-9-]+)\}\}", text))


def _token_mounts(spec: dict) -> dict[str, dict]:
    """``{template: {mountPath: (secretName, key)}}`` for the Secret volumes each container mounts."""
    volumes = {v["name"]: v["secret"] for v in spec.get("volumes") or [] if "secret" in v}
    out = {}
    for t in spec["templates"]:
        mounts = (t.get("container") or {}).get("volumeMounts") or []
        out[t["name"]] = {
            m["mountPath"] + "/" + volumes[m["name"]]["items"][0]["path"]: (
                volumes[m["name"]]["secretName"],
                volumes[m["name"]]["items"][0]["key"],
            )
            for m in mounts
            if m["name"] in volumes
        }
    return out


def _arg(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


# ----------------------------------------------------------------------------- the benchmark Workflow


@pytest.mark.parametrize("version", VERSIONS)
def test_packaged_benchmark_workflow_is_valid_argo(version):
    wf = yaml.safe_load((ARGO / "benchmark-workflow.yaml").read_text())
    assert errors(wf, version) == []


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    "options",
    [
        {},
        {
            "image": "registry.example/sweepdeck:1.2",
            "endpoint": "http://vllm.ns.svc:8000",
            "model": "-starts-with-a-dash",
            "namespace": "sweeps",
            "token_secret": "team-a.queue-tokens",
            "max_parallel_pods": 200,
            "batch_size": 500,
        },
    ],
)
def test_the_workflow_sweepdeck_submits_is_valid_argo_with_the_token_secret_mounted(version, options):
    from backends.argo.workflow import build_workflow, parameters

    wf = build_workflow(
        model_version_id="llama3-70b-v2", experiment_id="sweep-1", api_base_url="http://queue:8080", **options
    )
    assert errors(wf, version) == []
    secret = options.get("token_secret", SECRET)
    mounts = _token_mounts(wf["spec"])
    path = "/var/run/secrets/sweepdeck/"
    assert mounts == {
        "benchmark": {},
        "populate": {path + "admin-token": (secret, "admin-token")},
        "worker": {path + "worker-token": (secret, "worker-token")},
        "finalize": {path + "admin-token": (secret, "admin-token")},
    }
    templates = {t["name"]: t for t in wf["spec"]["templates"]}
    for name, (mount_path, _) in ((n, next(iter(m.items()))) for n, m in mounts.items() if m):
        assert _arg(templates[name]["container"]["args"], "--token-file") == mount_path  # each step reads its own
    # free-text values cannot become options: --flag=VALUE, and the model version after --
    args = templates["worker"]["container"]["args"]
    assert "--model={{workflow.parameters.model}}" in args and "--endpoint={{workflow.parameters.endpoint}}" in args
    for step in ("populate", "finalize"):
        a = templates[step]["container"]["args"]
        assert a[-2:] == ["--", "{{workflow.parameters.model-version-id}}"]
    assert parameters(wf)["model"] == options.get("model", "model")


@pytest.mark.parametrize("version", VERSIONS)
def test_the_schemas_catch_what_argo_rejects(version):
    """The validation has teeth: an integer field as a parameter string, a volume without a name, a bad mount."""
    from backends.argo.workflow import build_workflow

    wf = build_workflow(model_version_id="mv", experiment_id="e", api_base_url="http://q:8080")
    wf["spec"]["parallelism"] = "{{workflow.parameters.max-parallel-pods}}"
    del wf["spec"]["volumes"][0]["name"]
    wf["spec"]["templates"][2]["container"]["volumeMounts"][0]["readOnly"] = "yes"
    found = errors(wf, version)
    assert any(e.startswith("spec.parallelism:") for e in found), found
    assert any(e.startswith("spec.volumes.0:") and "'name' is a required property" in e for e in found), found
    assert any(e.startswith("spec.templates.2.container.volumeMounts.0.readOnly:") for e in found), found


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


def test_every_step_command_parses_with_sweepdecks_own_cli():
    """The args the templates give `sweepdeck queue …` are ones its parser takes (a renamed flag would fail here)."""
    import argparse

    from backends.argo.spot import spot_handler_manifests
    from backends.argo.workflow import build_workflow
    from tui.commands import queue

    parser = argparse.ArgumentParser()
    queue.add_parser(parser.add_subparsers(dest="command"))
    wf = build_workflow(model_version_id="mv", experiment_id="e", api_base_url="http://q:8080", model="-x")
    cron_wf, cron_job = spot_handler_manifests("4", api_base_url="http://q:8080")
    containers = [t["container"] for t in wf["spec"]["templates"] if "container" in t]
    containers += [t["container"] for t in cron_wf["spec"]["workflowSpec"]["templates"]]
    containers += cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    params = {p["name"]: p.get("value") or "mv" for p in wf["spec"]["arguments"]["parameters"]}
    params.update({"timeout-minutes": "120", "model": "-x"})
    for c in containers:
        argv = [re.sub(r"\{\{workflow\.parameters\.([a-z-]+)\}\}", lambda m: params[m.group(1)], a) for a in c["args"]]
        ns = parser.parse_args(c["command"][1:] + argv)
        assert ns.token_file.startswith("/var/run/secrets/sweepdeck/"), c
        if getattr(ns, "model", None) is not None:
            assert ns.model == "-x"  # a value that looks like an option stays a value


def test_template_parallelism_is_an_integer():
    wf = yaml.safe_load((ARGO / "benchmark-workflow.yaml").read_text())
    params = {p["name"]: p.get("value") for p in wf["spec"]["arguments"]["parameters"]}
    # Argo's CRD types parallelism as an integer: a {{...}} string would be rejected
    assert isinstance(wf["spec"]["parallelism"], int) and wf["spec"]["parallelism"] == int(params["max-parallel-pods"])


def test_submitted_manifest_sets_parallelism_from_max_parallel_pods():
    from backends.argo.workflow import build_workflow, parameters

    for pods in (1, 7, 200):
        wf = build_workflow(
            model_version_id="mv1", experiment_id="e1", api_base_url="http://queue:8080", max_parallel_pods=pods
        )
        assert wf["spec"]["parallelism"] == pods and type(wf["spec"]["parallelism"]) is int
        assert parameters(wf)["max-parallel-pods"] == str(pods)
        assert "{{" not in yaml.safe_dump(wf["spec"]["parallelism"])


@pytest.mark.parametrize(
    "bad,message",
    [
        ({"token_secret": "Bad_Name"}, "Secret name 'Bad_Name' is not a Kubernetes name"),
        ({"model_version_id": "m" * 65}, "is not usable"),
    ],
)
def test_bad_values_are_refused_before_a_manifest_exists(bad, message):
    from backends.argo.workflow import build_workflow
    from config.errors import SweepdeckError

    kw = {"model_version_id": "mv", "experiment_id": "e", "api_base_url": "http://q:8080", **bad}
    with pytest.raises(SweepdeckError, match=message):
        build_workflow(**kw)


# ----------------------------------------------------------------------------- the spot handler


@pytest.mark.parametrize(
    "argo,schema,field",
    [
        ("3.5", "3.5.0", "schedule"),
        ("v3.5.0", "3.5.0", "schedule"),
        ("3.6", "4.1.2", "schedules"),
        ("4", "4.1.2", "schedules"),
        ("v4.1.2", "4.1.2", "schedules"),
    ],
)
def test_spot_handler_is_written_for_the_clusters_argo_version(argo, schema, field):
    from backends.argo.spot import spot_handler_manifests

    cron_wf, cron_job = spot_handler_manifests(
        argo,
        api_base_url="http://queue.sweeps:8080/",
        token_secret="qt",
        image="reg/sweepdeck:2",
        timeout_minutes=90,
        namespace="sweeps",
    )
    assert errors(cron_wf, schema) == []
    other = "4.1.2" if schema == "3.5.0" else "3.5.0"
    # no one form fits both: 3.5 requires `schedule`, 4 requires `schedules`
    assert any(("schedule" in e) for e in errors(cron_wf, other)), errors(cron_wf, other)
    spec = cron_wf["spec"]
    assert spec[field] == ("*/30 * * * *" if field == "schedule" else ["*/30 * * * *"])
    assert ({"schedule", "schedules"} - {field}).isdisjoint(spec)
    assert list(spec)[0] == field
    wf_spec = spec["workflowSpec"]
    assert {p["name"]: p["value"] for p in wf_spec["arguments"]["parameters"]} == {
        "api-base-url": "http://queue.sweeps:8080",
        "timeout-minutes": "90",
        "image": "reg/sweepdeck:2",
    }
    assert _token_mounts(wf_spec) == {"reset-stale": {"/var/run/secrets/sweepdeck/admin-token": ("qt", "admin-token")}}
    assert _refs(wf_spec) <= {p["name"] for p in wf_spec["arguments"]["parameters"]}
    # the plain CronJob: the same call, the same Secret
    pod = cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["sweepdeck", "queue", "reset-stale"] and container["image"] == "reg/sweepdeck:2"
    assert _arg(container["args"], "--api-url") == "http://queue.sweeps:8080"
    assert _arg(container["args"], "--timeout-minutes") == "90"
    assert _arg(container["args"], "--token-file") == "/var/run/secrets/sweepdeck/admin-token"
    assert pod["volumes"][0]["secret"]["secretName"] == "qt"
    assert cron_wf["metadata"]["namespace"] == cron_job["metadata"]["namespace"] == "sweeps"


def test_packaged_spot_handler_file_is_the_3_6_and_later_form():
    docs = list(yaml.safe_load_all((ARGO / "spot-handler.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"CronWorkflow", "CronJob"}
    assert errors(kinds["CronWorkflow"], "4.1.2") == []
    assert kinds["CronWorkflow"]["spec"]["schedules"] == ["*/30 * * * *"]
    assert kinds["CronJob"]["spec"]["schedule"] == "*/30 * * * *"
    cw = kinds["CronWorkflow"]["spec"]["workflowSpec"]
    assert "reset-stale" in cw["templates"][0]["container"]["command"]
    assert _refs(cw) <= {p["name"] for p in cw["arguments"]["parameters"]}


@pytest.mark.parametrize(
    "version,message", [("3.4", "older than 3.5"), ("latest", "is not a version"), ("", "not a version")]
)
def test_spot_handler_bad_version_is_one_message(version, message):
    from backends.argo.spot import spot_handler_manifests
    from config.errors import SweepdeckError

    with pytest.raises(SweepdeckError, match=message):
        spot_handler_manifests(version, api_base_url="http://q:8080")


def test_spot_handler_cli_prints_both_manifests(capsys):
    from tui.cli import main

    assert main(["queue", "spot-handler", "--argo-version", "3.5", "--api-url", "http://q:8080"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == ["CronWorkflow", "CronJob"]
    assert errors(docs[0], "3.5.0") == []
    assert main(["queue", "spot-handler", "--argo-version", "2.9"]) == 2
    assert "older than 3.5" in capsys.readouterr().err


def test_ranking_orders_by_metric():
    from tui.commands.queue import ranking

    configs = {
        1: {"hardware_config_id": 1, "framework_id": 1, "workload_type": "qa"},
        2: {"hardware_config_id": 2, "framework_id": 1, "workload_type": "qa"},
    }
    results = [
        {"config_id": 1, "metrics": {"output_tokens_per_s": 10.0}},
        {"config_id": 2, "metrics": {"output_tokens_per_s": 30.0}},
        {"config_id": 2, "metrics": {"output_tokens_per_s": 50.0}},
    ]
    text = ranking(configs, results, "output_tokens_per_s", 5).splitlines()
    assert "40.00" in text[1] and text[1].split()[1] == "2"
    assert "10.00" in text[2]
    assert "no results" in ranking(configs, [], "x", 5)
