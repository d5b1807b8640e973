"""From a spec to the BLIS run's values, Pipeline, PipelineRun and Tasks (no cluster)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from backends.tekton.build import (
    Sources,
    add_vllm_args,
    build,
    effective_values,
    expected_seconds,
    set_image,
    set_resources,
)
from config.settings import Profile, load_settings, validate_profile
from config.spec import build_spec
from tests.support.upstream_files import blis_catalog_dir

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "tekton"


@pytest.fixture
def base():
    return yaml.safe_load((FIX / "blis-values.yaml").read_text())


@pytest.fixture
def profile(tmp_path):
    opts = validate_profile(
        "tekton",
        {
            "backend": "tekton",
            "namespace": "mert",
            "values": str(FIX / "blis-values.yaml"),
            "pipelinerun": str(FIX / "blis-pipelinerun.yaml"),
        },
        None,
        "t",
    )
    return Profile("t", "tekton", opts)


@pytest.fixture
def spec(base):
    settings = load_settings()
    return build_spec(settings.catalogs, "meta-llama/Llama-2-7b-hf", backend="tekton", namespace="mert",
                      experiment_id="exp9", base_values=base)


def test_effective_values_subset_override_and_image(base, spec):
    spec = spec.set("tp_sweep", (4,)).set("engine.max_model_len", 2048).set("engine.image", "quay.io/x/vllm:1")
    kinds = {c.field: c.kind for c in spec.user_fields()}
    assert kinds["tp_sweep"] == "SUBSET" and kinds["engine.max_model_len"] == "OVERRIDE"
    values = effective_values(base, spec)
    assert values["stack"]["treatments"]["tensorParallelism"] == [4]
    assert values["stack"]["MAX_MODEL_LEN"] == 2048
    decode = values["stack"]["model"]["helmValues"]["decode"]
    assert decode["containers"][0]["image"] == "quay.io/x/vllm:1"
    assert decode["initContainers"][0]["image"] == "quay.io/x/vllm:1"
    assert values["experiment"]["name"] == "exp9"
    assert base["stack"]["treatments"]["tensorParallelism"] == [2, 4]  # the base is not changed


def test_match_when_nothing_changes(base, spec):
    assert [c.field for c in spec.changes()] == ["experiment_id"]  # only the chosen id differs
    values = effective_values(base, spec)
    assert values["stack"]["treatments"]["tensorParallelism"] == [2, 4]
    assert values["stack"]["workload"]["app"] == "chatsweep"


def test_inference_perf_values_are_kept(base, spec):
    base["workload"] = {"harness": "inference-perf", "profile": "shared_prefix_synthetic.yaml",
                        "treatments": [{"question_len": 100}]}
    base["stack"]["workload"] = {"app": "keep-me"}
    values = effective_values(base, spec)
    assert values["workload"]["harness"] == "inference-perf" and values["stack"]["workload"] == {"app": "keep-me"}


def test_set_image_leaves_unrelated_init_containers():
    values = {"stack": {"model": {"helmValues": {"decode": {
        "containers": [{"name": "vllm", "image": "a"}, {"name": "side", "image": "s"}],
        "initContainers": [{"name": "deps", "image": "a"}, {"name": "other", "image": "busybox"}]}}}}}
    set_image(values, "b")
    decode = values["stack"]["model"]["helmValues"]["decode"]
    assert [c["image"] for c in decode["containers"]] == ["b", "s"]
    assert [c["image"] for c in decode["initContainers"]] == ["b", "busybox"]


def _vllm(values):
    return next(c for c in values["stack"]["model"]["helmValues"]["decode"]["containers"] if c["name"] == "vllm")


def test_memory_and_cpu_read_from_values_and_overridden_in_limits_and_requests(base, spec):
    assert (spec.engine.memory, spec.engine.cpu) == ("128Gi", "32")
    assert spec.source("engine.memory") == "values.yaml" and spec.source("engine.cpu") == "values.yaml"
    untouched = effective_values(base, spec)
    assert _vllm(untouched)["resources"] == _vllm(base)["resources"]  # the file's own text ("32") stays
    changed = spec.set("engine.memory", "64Gi").set("engine.cpu", "500m")
    values = effective_values(base, changed)
    res = _vllm(values)["resources"]
    assert res["limits"] == {"memory": "64Gi", "cpu": "500m"} and res["requests"] == {"memory": "64Gi", "cpu": "500m"}
    assert _vllm(base)["resources"]["limits"] == {"memory": "128Gi", "cpu": "32"}  # the base is not changed
    # what the deploy-model task hands to helm: the rendered Pipeline's config param
    from backends.tekton.render import render_text
    from templates.render import template_path

    pipeline = render_text(template_path("tekton/blis/pipeline.yaml.j2").read_text(), values, "pipeline.yaml.j2")
    deploy = next(t for t in pipeline["spec"]["tasks"] if t["taskRef"]["name"] == "deploy-model")
    config = json.loads(next(p["value"] for p in deploy["params"] if p["name"] == "config"))
    assert _vllm({"stack": {"model": {"helmValues": config}}})["resources"]["requests"]["memory"] == "64Gi"


def test_set_resources_keeps_other_keys_and_adds_missing_sections():
    values = {"stack": {"model": {"helmValues": {"decode": {"containers": [
        {"name": "vllm", "resources": {"limits": {"memory": "128Gi", "cpu": "32", "nvidia.com/gpu": "1"}}},
        {"name": "side", "resources": {"limits": {"memory": "1Gi"}}}]}}}}}
    set_resources(values, "64Gi", "32")
    vllm, side = values["stack"]["model"]["helmValues"]["decode"]["containers"]
    # only the changed value is written, into both limits and requests; the GPU count stays
    assert vllm["resources"] == {"limits": {"memory": "64Gi", "cpu": "32", "nvidia.com/gpu": "1"},
                                 "requests": {"memory": "64Gi"}}
    assert side["resources"] == {"limits": {"memory": "1Gi"}}
    bare = {"stack": {"model": {"helmValues": {"decode": {"containers": [{"name": "vllm"}]}}}}}
    set_resources(bare, "128Gi", "32")  # no resources in the file: the review's defaults are made true
    assert bare["stack"]["model"]["helmValues"]["decode"]["containers"][0]["resources"] == {
        "limits": {"memory": "128Gi", "cpu": "32"}, "requests": {"memory": "128Gi", "cpu": "32"}}


def test_build_pipeline_pipelinerun_and_resources(spec, profile):
    spec = spec.set("engine.extra_args", ("--trust-remote-code", "--enable-prefix-caching"))
    b = build(spec, profile, Sources.from_profile(profile))
    assert b.tps == [2, 4] and len(b.task_names) == 20
    deploy = [t for t in b.pipeline["spec"]["tasks"] if t["taskRef"]["name"] == "deploy-model"]
    assert len(deploy) == 2
    for t in deploy:
        overrides = next(p["value"] for p in t["params"] if p["name"] == "overrides")
        assert overrides[-2:] == ['decode.containers[name="vllm"].args=--trust-remote-code',
                                  'decode.containers[name="vllm"].args=--enable-prefix-caching']
    pr = b.pipelinerun
    assert pr["metadata"]["name"] == "exp9" and pr["spec"]["pipelineRef"] == {"name": "exp9"}
    assert [w["name"] for w in pr["spec"]["workspaces"]] == ["model-cache", "data", "hf-credentials",
                                                             "target-credentials"]
    assert pr["spec"]["taskRunTemplate"]["serviceAccountName"] == "helm-installer"
    kinds = [(r["kind"], r["metadata"]["name"]) for r in b.resources]
    assert (
        ("StepAction", "helm-upgrade") in kinds and ("Task", "deploy-model") in kinds and ("Task", "upload-s3") in kinds
    )
    assert ("Task", "guidellm-load-generator") not in kinds  # only what the pipeline refers to
    assert set(b.files()) == {"values.yaml", "pipeline.yaml", "pipelinerun.yaml", "resources.yaml", "changes.txt"}


def test_add_vllm_args_creates_overrides_param():
    pipeline = {"spec": {"tasks": [{"name": "d", "taskRef": {"name": "deploy-model"}, "params": []},
                                   {"name": "x", "taskRef": {"name": "other"}}]}}
    assert add_vllm_args(pipeline, ["--a"]) == 1
    assert pipeline["spec"]["tasks"][0]["params"] == [{"name": "overrides",
                                                       "value": ['decode.containers[name="vllm"].args=--a']}]


def test_expected_seconds(profile):
    assert expected_seconds("deploy-model-tp2", profile) == 30 * 60
    assert expected_seconds("finally-delete-model-tp2", profile) == 5 * 60
    p2 = Profile("t", "tekton", {**profile.options, "expected_minutes": {"deploy-model": 3}})
    assert expected_seconds("deploy-model-tp4", p2) == 180


@pytest.fixture
def blis_checkout(tmp_path):
    """A BLIS checkout laid out as inference-sim/tektonc-data-collection is (see tests/fixtures/tekton/README.md).

    The values and pipelinerun are the upstream files; the template is sweepdeck's
    under the upstream name with one description changed (to see it is the one
    read), and tekton/tasks/ holds the checkout's own deploy-model Task.
    """
    from templates.render import template_path

    repo = tmp_path / "tektonc-data-collection"
    sample = repo / "tektoncsample" / "blis"
    sample.mkdir(parents=True)
    (sample / "values.yaml").write_bytes((FIX / "blis-values.yaml").read_bytes())
    (sample / "pipelinerun.yaml").write_bytes((FIX / "blis-pipelinerun.yaml").read_bytes())
    template = template_path("tekton/blis/pipeline.yaml.j2").read_text()
    assert "description: Models, shared by every model server" in template
    (sample / "data_pipeline.yaml.j2").write_text(template.replace("description: Models, shared by every model server",
                                                                   "description: Models (the user's template)"))
    (repo / "tekton" / "tasks").mkdir(parents=True)
    (repo / "tekton" / "steps").mkdir()
    task = yaml.safe_load(template_path("tekton/tasks/deploy-model.yaml").read_text())
    task["metadata"].setdefault("labels", {})["origin"] = "user-checkout"
    (repo / "tekton" / "tasks" / "deploy-model.yaml").write_text(yaml.safe_dump(task))
    config = repo / ".claude" / "config"
    config.mkdir(parents=True)
    cats = blis_catalog_dir()
    for name in ("known-models.yaml", "workload-presets.yaml", "vllm-args.yaml"):
        (config / name).write_bytes((cats / name).read_bytes())
    (repo / "tektoncsample" / "blis-inference-perf").mkdir()
    return repo


def _snapshot(root):
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def test_blis_repo_layout_is_read_and_never_changed(blis_checkout, spec):
    before = _snapshot(blis_checkout)
    opts = validate_profile("tekton", {"backend": "tekton", "namespace": "mert", "blis_repo": str(blis_checkout)},
                            None, "repo")
    profile = Profile("repo", "tekton", opts)
    sources = Sources.from_profile(profile)
    sample = blis_checkout / "tektoncsample" / "blis"
    assert (sources.template, sources.values, sources.pipelinerun) == (
        sample / "data_pipeline.yaml.j2", sample / "values.yaml", sample / "pipelinerun.yaml")
    b = build(spec.set("tp_sweep", (4,)).set("engine.image", "quay.io/x/vllm:2"), profile, sources)
    workspaces = {w["name"]: w.get("description") for w in b.pipeline["spec"]["workspaces"]}
    assert workspaces["model-cache"] == "Models (the user's template)"
    assert b.values["stack"]["treatments"]["tensorParallelism"] == [4]
    by_name = {(r["kind"], r["metadata"]["name"]): r for r in b.resources}
    assert (
        by_name[("Task", "deploy-model")]["metadata"]["labels"]["origin"] == "user-checkout"
    )  # the checkout's Task wins
    assert ("Task", "install-guidellm") in by_name and ("StepAction", "helm-upgrade") in by_name  # sweepdeck's fill in
    b.files()  # everything the run store would get
    assert _snapshot(blis_checkout) == before


def test_blis_repo_sample_choice_and_errors(blis_checkout, tmp_path):
    from config.errors import SweepdeckError

    def sources(**extra):
        opts = validate_profile(
            "tekton", {"backend": "tekton", "namespace": "mert", "blis_repo": str(blis_checkout), **extra}, None, "r"
        )
        return Sources.from_profile(Profile("r", "tekton", opts))

    with pytest.raises(SweepdeckError, match="no tektoncsample/calibration/") as err:
        sources(blis_sample="calibration")
    assert "blis, blis-inference-perf" in err.value.hint
    with pytest.raises(SweepdeckError, match="values.yaml does not exist"):
        sources(blis_sample="blis-inference-perf")
    (blis_checkout / "tektoncsample" / "blis-inference-perf" / "values.yaml").write_text("stack: {}\n")
    s = sources(blis_sample="blis-inference-perf")
    from backends.tekton.build import INFERENCE_PERF_TEMPLATE, PACKAGE_TEMPLATE
    from templates.render import template_path

    assert s.template is None  # no template in that sample: sweepdeck's, for the values' format
    assert s.template_for(s.base_values()) == template_path(PACKAGE_TEMPLATE)
    campaign = {"workload": {"harness": "inference-perf", "profileTemplate": {"load": {}}}}
    assert s.template_for(campaign) == template_path(INFERENCE_PERF_TEMPLATE)
    assert s.pipelinerun is None
    with pytest.raises(SweepdeckError, match="is not a directory"):
        sources(blis_repo=str(tmp_path / "nope"))
