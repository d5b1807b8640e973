"""The BLIS campaign's inference-perf values: the spec's profile template, its settings, and the build.

Reads the campaign's own values.yaml / pipelinerun.yaml where the reference set keeps them.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from config import inference_perf as ip
from config.errors import SweepdeckError

CAMPAIGN = Path("/work/shared/reference/tektonc-data-collection/blis-campaign-14-qwen3-14b-h100-codegen")
needs_campaign = pytest.mark.skipif(not CAMPAIGN.is_dir(), reason=f"the upstream campaign files are not at {CAMPAIGN}")
ARG = 'decode.containers[name="vllm"].args='


@pytest.fixture
def values():
    if not CAMPAIGN.is_dir():
        pytest.skip(f"the upstream campaign files are not at {CAMPAIGN}")
    return yaml.safe_load((CAMPAIGN / "values.yaml").read_text())


@pytest.fixture
def catalogs():
    from config.settings import load_settings

    return load_settings().catalogs


def spec_for(catalogs, values, **kw):
    from config.spec import build_spec

    return build_spec(catalogs, "llama2-7b", backend="tekton", namespace="diya", experiment_id="exp14",
                      base_values=values, **kw)


# ------------------------------------------------------------------ config/inference_perf.py


@pytest.mark.parametrize(("text", "want"), [
    ("5x600, 10x600", [(5.0, 600), (10.0, 600)]),
    ("5/s x 600s; 10/s x 600s", [(5.0, 600), (10.0, 600)]),
    ("2.5:60 → 4@30", [(2.5, 60), (4.0, 30)]),
    ("8 rps × 300 s", [(8.0, 300)]),
])
def test_stages_from_text(text, want):
    assert [(s["rate"], s["duration"]) for s in ip.parse_stages(text)] == want


@pytest.mark.parametrize(("value", "message"), [
    ("", "needs at least one stage"),
    ([], "needs at least one stage"),
    ("fast", "cannot read the stage 'fast'"),
    ("0x600", "rate must be positive"),
    ([{"rate": 5, "duration": 1.5}], "duration must be a positive whole number"),
    ([{"rate": "lots", "duration": 60}], "rate must be a positive number"),
    ([{"rate": True, "duration": 60}], "rate must be a positive number"),
    (["5x600"], "must be a mapping with rate and duration"),
])
def test_stage_errors_are_one_line(value, message):
    with pytest.raises(SweepdeckError, match=message.replace("(", r"\(")):
        ip.parse_stages(value)


def test_stage_mappings_keep_their_other_keys_and_print_back():
    stages = ip.parse_stages(({"rate": 5, "duration": 600, "num_requests": None},))
    assert stages == [{"rate": 5.0, "duration": 600, "num_requests": None}]
    assert ip.stages_text(stages) == "5x600" and ip.describe_stages(stages) == "5/s for 600 s"
    assert ip.describe_stages(stages, compact=True) == "5/s×600s"


def test_settings_keep_their_types(values):
    template = values["workload"]["profileTemplate"]
    paths = [p for p, _ in ip.leaves(template)]
    assert paths[:4] == ["load.type", "load.stages", "api.type", "api.streaming"]
    assert "data.shared_prefix.question_len" in paths
    assert not any(p.startswith(("server", "tokenizer", "storage")) for p in paths)
    out = ip.set_path(template, "data.shared_prefix.question_len", "500")
    assert out["data"]["shared_prefix"]["question_len"] == 500
    assert template["data"]["shared_prefix"]["question_len"] == 466  # a copy: the template is not changed
    assert ip.set_path(template, "api.streaming", "no")["api"]["streaming"] is False
    assert ip.set_path(template, "data.type", " random ")["data"]["type"] == "random"
    for path, value, message in (
        ("data.shared_prefix.question_len", "abc", "must be a number"),
        ("data.shared_prefix.question_len", "-3", "must not be negative"),
        ("data.shared_prefix.question_len", "1.5", "must be a whole number"),
        ("api.streaming", "perhaps", "must be true or false"),
        ("data.type", "", "must not be empty"),
        ("data.shared_prefix", "x", "is a section"),
        ("data.nope", "1", "Unknown setting 'profile_template.data.nope'"),
    ):
        with pytest.raises(SweepdeckError, match=message):
            ip.set_path(template, path, value)


def test_check_template_names_what_is_missing():
    with pytest.raises(SweepdeckError, match="workload.profileTemplate.load is missing"):
        ip.check_template({"data": {"type": "random"}})
    with pytest.raises(SweepdeckError, match="load.stages needs at least one stage"):
        ip.check_template({"load": {"type": "constant"}, "data": {"type": "random"}})
    with pytest.raises(SweepdeckError, match="data.type is missing"):
        ip.check_template({"load": {"stages": [{"rate": 1, "duration": 1}]}})


def test_overrides_split_into_arguments_and_the_rest():
    args, others = ip.split_overrides([ARG + "--quantization=fp8", "decode.replicas=2", ARG + "--bad arg"],
                                      lambda a: " " not in a)
    assert args == ["--quantization=fp8"] and others == ["decode.replicas=2", ARG + "--bad arg"]
    assert ip.overrides_for(("--x",), others) == ["decode.replicas=2", ARG + "--bad arg", ARG + "--x"]


# ------------------------------------------------------------------ the spec


def test_spec_takes_the_values_template_engine_settings_and_extra_overrides(values, catalogs):
    values["stack"]["extra_overrides"] = [ARG + "--quantization=fp8", ARG + '--override-generation-config={"a": true}']
    spec = spec_for(catalogs, values)
    assert spec.profile_template == values["workload"]["profileTemplate"] and spec.workload.app == "inference-perf"
    assert spec.source("workload") == "values.yaml"
    assert (spec.engine.max_model_len, spec.engine.max_num_seqs, spec.tp_sweep) == (4096, 128, (1,))
    # an argument a user could type becomes an extra argument; one with shell characters stays an override
    assert spec.engine.extra_args == ("--quantization=fp8",) and spec.source("engine.extra_args") == "values.yaml"
    assert spec.changes() == [c for c in spec.changes() if c.field == "experiment_id"]
    rows = dict(spec.summary_lines())
    assert rows["Workload"] == "inference-perf profile template"
    assert rows["Load"] == "constant: 5/s for 600 s → 10/s for 600 s (1200 s)"
    assert rows["API"] == "completion, streaming"
    assert "Max Requests" not in rows


def test_spec_settings_round_trip_and_revert(values, catalogs):
    from config.spec import ExperimentSpec

    spec = spec_for(catalogs, values).set("profile_template.load.stages", "8x300").set(
        "profile_template.data.shared_prefix.output_len", 100)
    changes = {c.field: c.describe() for c in spec.changes()}
    assert changes["profile_template.load.stages"] == (
        "profile_template.load.stages: [{rate: 5, duration: 600}, {rate: 10, duration: 600}] -> "
        "[{rate: 8, duration: 300}] (OVERRIDE, user)")
    again = ExperimentSpec.from_dict(json.loads(json.dumps(spec.to_dict())))  # as the run store keeps it
    assert again.profile_template == spec.profile_template
    assert [c.describe() for c in again.changes()] == [c.describe() for c in spec.changes()]
    # the saved base (a tuple once loaded) still reverts the stages
    back = again.set("profile_template.load.stages", again.origins["profile_template.load.stages"].base)
    assert back.get("profile_template.load.stages") == values["workload"]["profileTemplate"]["load"]["stages"]


def test_a_chosen_preset_becomes_a_random_data_template(values, catalogs):
    spec = spec_for(catalogs, values, workload="chatbot")
    preset = catalogs.workloads.match("chatbot").profile
    template = spec.profile_template
    assert template["data"]["type"] == "random"
    assert template["data"]["input_distribution"]["mean"] == preset.prompt_tokens
    assert template["data"]["output_distribution"]["max"] == preset.output_tokens_max
    seconds = -(-preset.max_requests // int(preset.rate))  # rounded up
    assert template["load"]["stages"] == [{"rate": float(preset.rate), "duration": seconds}]
    assert template["server"] == values["workload"]["profileTemplate"]["server"]  # placeholders kept
    changed = [c.describe() for c in spec.changes() if c.field == "workload"]
    assert changed == ["workload: inference-perf -> chatbot (OVERRIDE, user)"]


def test_guidellm_values_have_no_profile_template(catalogs):
    from config.catalog import DATA_DIR

    spec = spec_for(catalogs, yaml.safe_load((DATA_DIR / "values.yaml").read_text()))
    assert spec.profile_template is None
    with pytest.raises(SweepdeckError, match="has no inference-perf profile template"):
        spec.set("profile_template.load.stages", "1x1")


def test_bad_values_template_is_one_clear_error(values, catalogs):
    del values["workload"]["profileTemplate"]["load"]["stages"]
    with pytest.raises(SweepdeckError, match="workload.profileTemplate.load.stages needs at least one stage"):
        spec_for(catalogs, values)


# ------------------------------------------------------------------ the build


@pytest.fixture
def profile(tmp_path):
    from config.settings import Profile, validate_profile

    if not CAMPAIGN.is_dir():
        pytest.skip(f"the upstream campaign files are not at {CAMPAIGN}")
    return Profile("camp", "tekton", validate_profile("tekton", {
        "backend": "tekton", "namespace": "diya", "values": str(CAMPAIGN / "values.yaml"),
        "pipelinerun": str(CAMPAIGN / "pipelinerun.yaml")}, None, "camp"))


def test_build_writes_the_spec_into_the_campaign_values(values, catalogs, profile):
    from backends.tekton.build import Sources, build, effective_values

    base = copy.deepcopy(values)
    base["stack"]["extra_overrides"] = ["decode.replicas=2", ARG + "--quantization=fp8"]
    spec = spec_for(catalogs, base).set("profile_template.load.stages", "8x300")
    spec = spec.set("engine.extra_args", ("--enable-prefix-caching",))  # the user removed fp8, added this
    out = effective_values(base, spec)
    assert out["workload"]["profileTemplate"]["load"]["stages"] == [{"rate": 8.0, "duration": 300}]
    assert out["stack"]["extra_overrides"] == ["decode.replicas=2", ARG + "--enable-prefix-caching"]
    assert "workload" not in out["stack"]  # no guidellm stack.workload is made up
    assert base["stack"]["extra_overrides"][1] == ARG + "--quantization=fp8"  # the base is not changed
    spec = spec_for(catalogs, values).set("engine.extra_args", ("--enable-prefix-caching",))
    b = build(spec, profile, Sources.from_profile(profile))
    deploy = next(t for t in b.pipeline["spec"]["tasks"] if t["name"] == "deploy-model-1")
    overrides = next(p["value"] for p in deploy["params"] if p["name"] == "overrides")
    assert overrides.count(ARG + "--enable-prefix-caching") == 1  # from extra_overrides, not appended again
    assert b.workload_seconds == 1200.0 and b.task_names[-1] == "finally-delete-model-1"
    kinds = {(r["kind"], r["metadata"]["name"]) for r in b.resources}
    assert {("Task", "install-inference-perf-blis"), ("Task", "run-workload-inference-perf-blis")} <= kinds


def test_a_guidellm_template_with_campaign_values_says_so(values, catalogs, profile):
    from backends.tekton.build import Sources, build
    from config.settings import Profile
    from templates.render import template_path

    opts = {**profile.options, "template": str(template_path("tekton/blis/pipeline.yaml.j2"))}
    guidellm = Profile("camp", "tekton", opts)
    with pytest.raises(SweepdeckError, match="is for guidellm values") as err:
        build(spec_for(catalogs, values), guidellm, Sources.from_profile(guidellm))
    assert "Remove 'template' from the tekton profile" in err.value.hint


def test_expected_run_workload_time_follows_the_stages(profile):
    from backends.tekton.build import WORKLOAD_MARGIN_S, expected_seconds
    from config.settings import Profile

    assert expected_seconds("run-workload-1", profile, 1200.0) == 1200.0 + WORKLOAD_MARGIN_S
    assert expected_seconds("run-workload-1", profile) == 120 * 60
    assert expected_seconds("raw-upload-1", profile, 1200.0) == 15 * 60
    mine = Profile("camp", "tekton", {**profile.options, "expected_minutes": {"run-workload": 45}})
    assert expected_seconds("run-workload-1", mine, 1200.0) == 45 * 60  # the profile's own figure wins


@pytest.mark.parametrize(("content", "message"), [
    (b"", "is empty"),
    (b"stack:\n  x: \xff\n", "is not UTF-8 text (byte 0xff on line 2)"),
    (b"[1, 2]\n", "must be a YAML mapping"),
])
def test_profile_values_files_that_cannot_work_say_so_in_one_line(tmp_path, content, message):
    from backends.tekton.build import Sources
    from config.settings import Profile, validate_profile

    values = tmp_path / "values.yaml"
    values.write_bytes(content)
    options = validate_profile("tekton", {"backend": "tekton", "values": str(values)}, None, "p")
    profile = Profile("p", "tekton", options)
    with pytest.raises(SweepdeckError, match=re.escape(message)):
        Sources.from_profile(profile).base_values()


def test_a_spec_made_without_the_values_keeps_their_workload_and_overrides(values, catalogs):
    """``sweepdeck run --backend tekton`` builds the spec from the catalog alone: the values' own stand."""
    from backends.tekton.build import effective_values
    from config.spec import build_spec

    values["stack"]["extra_overrides"] = [ARG + "--quantization=fp8"]
    spec = build_spec(catalogs, "llama2-7b", backend="tekton", experiment_id="e", extra_args="--enable-prefix-caching")
    out = effective_values(values, spec)
    assert out["workload"]["profileTemplate"] == values["workload"]["profileTemplate"]
    assert out["stack"]["extra_overrides"] == [ARG + "--quantization=fp8", ARG + "--enable-prefix-caching"]
