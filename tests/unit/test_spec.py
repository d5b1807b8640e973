"""ExperimentSpec: layering, provenance, changes, MATCH/SUBSET/OVERRIDE, persistence."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re

import pytest
import yaml

from config.catalog import load_catalogs
from config.errors import AmbiguousModel, SweepdeckError
from config.spec import (
    Change,
    ExperimentSpec,
    Source,
    build_spec,
    check_safe,
    custom_workload,
    default_experiment_id,
    split_engine_args,
)
from tests.support.upstream_files import blis_catalog_dir

TODAY = dt.date(2026, 11, 23)


@pytest.fixture(scope="module")
def cats():
    return load_catalogs()


@pytest.fixture(scope="module")
def values():
    return yaml.safe_load((blis_catalog_dir() / "blis-values.yaml").read_text())


def test_catalog_values_and_their_sources(cats):
    spec = build_spec(cats, "llama3-70b", workload="chatbot", today=TODAY)
    assert spec.model == "meta-llama/Llama-3.3-70B-Instruct"
    e = spec.engine
    assert (e.tp, e.max_model_len, e.max_num_seqs, e.max_num_batched_tokens) == (4, 8192, 128, 4096)
    assert e.image == "vllm/vllm-openai:v0.11.0"
    for path in ("engine.tp", "engine.max_model_len", "engine.max_num_seqs", "engine.max_num_batched_tokens",
                 "engine.image"):
        assert spec.source(path) == Source.CATALOG, path
    assert spec.source("experiment_id") == Source.AUTO
    assert spec.source("engine.extra_args") == Source.DEFAULT
    assert spec.workload.app == "chatbot"
    assert spec.changes() == []


def test_values_file_layers_over_catalog(cats, values):
    spec = build_spec(cats, "llama3-8b", backend="tekton", base_values=values, today=TODAY)
    e = spec.engine
    # values.yaml: TP [2, 4], MAX_MODEL_LEN 4096 (catalog says 8192), 2048, 256, chatsweep.
    assert spec.tp_sweep == (2, 4) and e.tp == 2
    assert (e.max_model_len, e.max_num_batched_tokens, e.max_num_seqs) == (4096, 2048, 256)
    assert e.image == "vllm/vllm-openai:v0.11.0"
    assert spec.workload.app == "chatsweep" and spec.workload.prefix_tokens == 284
    for path in ("engine.tp", "tp_sweep", "engine.max_model_len", "engine.image", "workload"):
        assert spec.source(path) == Source.VALUES, path
    assert spec.changes() == []


def test_changes_list_exactly_the_user_changes(cats, values):
    spec = build_spec(
        cats, "llama3-8b", backend="tekton", base_values=values, workload="chatbot",
        max_model_len=2048, max_num_seqs=256, image="ghcr.io/myorg/vllm:v1",
        extra_args=["--enable-prefix-caching"], namespace="mert", today=TODAY,
    )
    changes = {c.field: c for c in spec.changes()}
    assert set(changes) == {"workload", "engine.max_model_len", "engine.image", "engine.extra_args"}
    assert (changes["workload"].base, changes["workload"].value) == ("chatsweep", "chatbot")
    assert (changes["engine.max_model_len"].base, changes["engine.max_model_len"].value) == (4096, 2048)
    assert changes["engine.image"].source == Source.USER
    assert changes["engine.extra_args"].value == ("--enable-prefix-caching",)
    # max_num_seqs=256 equals values.yaml: a MATCH, reported by user_fields only.
    matches = [c for c in spec.user_fields() if c.kind == "MATCH"]
    assert [c.field for c in matches] == ["engine.max_num_seqs"]
    # The namespace is a first choice, not a change from values.yaml.
    assert spec.namespace == "mert" and spec.source("namespace") == Source.USER


@pytest.mark.parametrize(
    "tp, sweep, kind",
    [(4, (4,), "SUBSET"), (2, (2,), "SUBSET"), (8, (8,), "OVERRIDE"), ("4", (4,), "SUBSET")],
)
def test_tp_against_values_sweep(cats, values, tp, sweep, kind):
    spec = build_spec(cats, "llama3-8b", base_values=values, tp=tp, today=TODAY)
    assert spec.tp_sweep == sweep and spec.engine.tp == sweep[0]
    changes = spec.changes()
    # TP is reported once, as the sweep it narrows or replaces.
    assert [c.field for c in changes] == ["tp_sweep"]
    assert changes[0].base == (2, 4) and changes[0].kind == kind
    assert kind in changes[0].describe()


def test_tp_sweep_match_and_set(cats, values):
    spec = build_spec(cats, "llama3-8b", base_values=values, today=TODAY)
    same = spec.set("tp_sweep", [2, 4])
    assert same.changes() == []
    assert [c.kind for c in same.user_fields()] == ["MATCH"]
    wider = spec.set("tp_sweep", [1, 2, 4])
    assert wider.engine.tp == 1 and wider.changes()[0].kind == "OVERRIDE"


def test_change_kinds():
    assert Change("x", (2, 4), (4,), Source.USER).kind == "SUBSET"
    assert Change("x", (2, 4), 4, Source.USER).kind == "SUBSET"
    assert Change("x", (2, 4), (2, 4), Source.USER).kind == "MATCH"
    assert Change("x", (2, 4), (4, 8), Source.USER).kind == "OVERRIDE"
    assert Change("x", 4096, 2048, Source.USER).kind == "OVERRIDE"
    assert Change("x", 4096, 4096, Source.USER).kind == "MATCH"


def test_set_keeps_the_first_base_and_records_source(cats):
    spec = build_spec(cats, "llama2-7b", today=TODAY)
    once = spec.set("engine.max_model_len", 2048)
    twice = once.set("engine.max_model_len", 1024, Source.FIX)
    [change] = twice.changes()
    assert (change.base, change.value, change.source) == (4096, 1024, Source.FIX)
    back = twice.set("engine.max_model_len", 4096)
    assert back.changes() == []  # back to the catalog value: nothing changed
    assert spec.engine.max_model_len == 4096  # frozen: the original is untouched


def test_fix_of_a_first_choice_is_a_change(cats):
    spec = build_spec(cats, "llama2-7b", today=TODAY)
    fixed = spec.set("model", "meta-llama/Meta-Llama-3-8B-Instruct", Source.FIX)
    [change] = fixed.changes()
    assert change.base == "meta-llama/Llama-2-7b-hf"


def test_workload_fields_are_changes_of_their_own(cats):
    spec = build_spec(cats, "llama2-7b", workload="chatbot", today=TODAY)
    tuned = spec.set("workload.rate", 2).set("workload.rate_type", "poisson")
    assert tuned.workload.app == "chatbot" and tuned.workload.rate == 2.0
    assert {c.field for c in tuned.changes()} == {"workload.rate", "workload.rate_type"}
    assert "5 -> 2" in next(c for c in tuned.changes() if c.field == "workload.rate").describe()
    # A new preset forgets tweaks that belonged to the old one.
    swapped = tuned.set("workload", cats.workloads.presets["doc"].profile)
    assert swapped.changes() == []  # a new first choice (no base values), tweaks gone
    assert not any(k.startswith("workload.") for k in swapped.origins)
    fixed = tuned.set("workload", cats.workloads.presets["doc"].profile, Source.FIX)
    assert [(c.field, c.base, c.value) for c in fixed.changes()] == [("workload", "chatbot", "doc")]
    # A new mean outside the preset's range widens it.
    longer = spec.set("workload.prompt_tokens", 5000)
    assert longer.workload.prompt_tokens_max == 10000
    with pytest.raises(SweepdeckError, match="rate_type"):
        spec.set("workload.rate_type", "bursty")


def test_same_workload_name_other_numbers(cats):
    first = custom_workload(cats, prompt=500, output=100)
    spec = build_spec(cats, "llama2-7b", workload=first, today=TODAY)
    again = spec.set("workload", custom_workload(cats, prompt=200, output=100), Source.FIX)
    assert again.workload.prompt_tokens == 200
    fields = {c.field: (c.base, c.value) for c in again.changes()}
    assert fields == {"workload.prompt_tokens": (500, 200), "workload.prompt_tokens_max": (1000, 400)}


def test_default_experiment_id(cats):
    spec = build_spec(cats, "llama2-7b", workload="chatbot", today=TODAY)
    assert spec.experiment_id == "nov23-llama-2-7b-hf-chatbot"
    info = cats.models.resolve("llama3-70b")
    eid = default_experiment_id(info, "summarization", dt.date(2026, 1, 5))
    assert eid == "jan05-llama-3-3-70b-instruct-summarization"
    assert re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", eid)
    # Long names are cut to a DNS label.
    long = default_experiment_id(info, "x" * 100, TODAY)
    assert len(long) <= 63 and not long.endswith("-")


def test_experiment_id_is_not_locale_dependent(cats, monkeypatch):
    import locale

    with contextlib.suppress(locale.Error):  # not installed: the fixed month table is still what is checked
        locale.setlocale(locale.LC_TIME, "de_DE.UTF-8")
    try:
        spec = build_spec(cats, "llama2-7b", workload="chatbot", today=dt.date(2026, 3, 1))
    finally:
        locale.setlocale(locale.LC_TIME, "C")
    assert spec.experiment_id.startswith("mar01-")


@pytest.mark.parametrize("bad", ["Foo_1", "-x", "x" * 64, "a b", "a;b", ""])
def test_experiment_id_must_be_dns_safe(cats, bad):
    with pytest.raises(SweepdeckError, match="not DNS-safe"):
        build_spec(cats, "llama2-7b", experiment_id=bad)


def test_memory_and_cpu_defaults_values_and_user(cats, values):
    spec = build_spec(cats, "llama3-8b", today=TODAY)
    assert (spec.engine.memory, spec.engine.cpu) == ("128Gi", "32")
    assert spec.source("engine.memory") == spec.source("engine.cpu") == Source.DEFAULT
    custom = yaml.safe_load(yaml.safe_dump(values))
    vllm = next(c for c in custom["stack"]["model"]["helmValues"]["decode"]["containers"] if c["name"] == "vllm")
    vllm["resources"] = {"limits": {"memory": "64Gi", "cpu": 16}, "requests": {"memory": "32Gi", "cpu": "8"}}
    spec = build_spec(cats, "llama3-8b", backend="tekton", base_values=custom, today=TODAY)
    assert (spec.engine.memory, spec.engine.cpu) == ("64Gi", "16")  # the limits win
    assert spec.source("engine.memory") == spec.source("engine.cpu") == Source.VALUES
    assert spec.changes() == []
    spec = spec.set("engine.memory", "512Mi").set("engine.cpu", 0.5)
    changes = {c.field: c for c in spec.changes()}
    assert (changes["engine.memory"].base, changes["engine.memory"].value) == ("64Gi", "512Mi")
    assert changes["engine.cpu"].value == "0.5" and changes["engine.cpu"].source == Source.USER
    assert build_spec(cats, "llama3-8b", memory="128G", cpu="500m", today=TODAY).engine.cpu == "500m"
    old = spec.to_dict()
    del old["engine"]["memory"], old["engine"]["cpu"]  # a spec saved before these fields
    assert ExperimentSpec.from_dict(old).engine.memory == "128Gi"


@pytest.mark.parametrize("memory", ["64gb", "0Gi", "lots", "-1Gi", "", True])
def test_memory_must_be_a_quantity(cats, memory):
    with pytest.raises(SweepdeckError, match="memory must be a positive Kubernetes memory quantity") as err:
        build_spec(cats, "llama2-7b", memory=memory)
    assert "64Gi" in err.value.hint


@pytest.mark.parametrize("cpu", ["0", "-2", "two", "500Mi", "2 cores", 0])
def test_cpu_must_be_cores_or_millicores(cats, cpu):
    with pytest.raises(SweepdeckError, match="cpu must be a positive number of cores or millicores") as err:
        build_spec(cats, "llama2-7b").set("engine.cpu", cpu)
    assert "500m" in err.value.hint


def test_bad_resources_in_the_values_file_name_the_place(cats, values):
    custom = yaml.safe_load(yaml.safe_dump(values))
    vllm = next(c for c in custom["stack"]["model"]["helmValues"]["decode"]["containers"] if c["name"] == "vllm")
    vllm["resources"] = {"limits": {"memory": "a lot"}}
    with pytest.raises(SweepdeckError, match=r"values file: decode.containers\[name=vllm\].resources memory"):
        build_spec(cats, "llama3-8b", backend="tekton", base_values=custom, today=TODAY)


def test_round_trip(cats, values):
    spec = build_spec(
        cats, "llama3-8b", backend="tekton", base_values=values, workload="chatbot", tp=4,
        extra_args="--enable-prefix-caching --dtype=bfloat16", namespace="mert", profile="lab", today=TODAY,
    )
    spec = spec.set("workload.rate", 3).set("engine.max_num_seqs", 64, Source.FIX)
    data = json.loads(json.dumps(spec.to_dict()))
    again = ExperimentSpec.from_dict(data)
    assert again == spec
    assert again.changes() == spec.changes()
    custom = build_spec(cats, "llama2-7b", workload=custom_workload(cats, prompt=500, output=100), today=TODAY)
    custom = custom.set("workload", cats.workloads.presets["doc"].profile, Source.FIX)
    assert ExperimentSpec.from_dict(json.loads(json.dumps(custom.to_dict()))) == custom


def test_from_dict_rejects_garbage():
    with pytest.raises(SweepdeckError, match="malformed"):
        ExperimentSpec.from_dict({"model": "x"})
    with pytest.raises(SweepdeckError, match="malformed"):
        ExperimentSpec.from_dict({"model": "x", "backend": "local", "workload": {"app": "x", "nope": 1},
                                  "engine": {"image": "i"}, "experiment_id": "x"})


def test_max_model_len_above_the_model_limit(cats):
    with pytest.raises(SweepdeckError) as err:
        build_spec(cats, "llama2-7b", max_model_len=8192)
    assert "4096" in err.value.message and "meta-llama/Llama-2-7b-hf" in err.value.message
    assert "max_model_len=4096" in err.value.hint
    # Llama 3.3 70B's own limit is 128K, above its recommended 8192.
    assert build_spec(cats, "llama3-70b", max_model_len=32768).engine.max_model_len == 32768


def test_upstream_catalog_recommendation_is_not_a_limit():
    # The BLIS data collector's file has no max_context: its max_model_len is a recommendation only.
    real = load_catalogs(blis_catalog_dir())
    assert build_spec(real, "llama3-70b", max_model_len=16384).engine.max_model_len == 16384
    assert build_spec(real, "codellama-7b", max_model_len=8192).engine.max_model_len == 8192
    # the model's own limit (sweepdeck's facts) still stops a length vLLM would refuse
    with pytest.raises(SweepdeckError, match="limit of 131072"):
        build_spec(real, "llama3-70b", max_model_len=200000)


def test_unknown_limit_is_not_an_error(tmp_path):
    (tmp_path / "known-models.yaml").write_text("recommended_settings:\n  myorg/m:\n    max_model_len: 2048\n")
    spec = build_spec(load_catalogs(tmp_path), "myorg/m", max_model_len=65536)
    assert spec.engine.max_model_len == 65536


@pytest.mark.parametrize("tp", [0, -2, "two", 1.5, True, "4.0", ""])
def test_tp_must_be_a_positive_integer(cats, tp):
    with pytest.raises(SweepdeckError, match="tp must be a positive integer"):
        build_spec(cats, "llama2-7b", tp=tp)


@pytest.mark.parametrize("field", ["max_model_len", "max_num_seqs", "max_num_batched_tokens"])
def test_engine_numbers_must_be_positive(cats, field):
    with pytest.raises(SweepdeckError, match=f"{field} must be a positive integer"):
        build_spec(cats, "llama2-7b", **{field: 0})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"extra_args": ["--served-model-name=x;rm -rf /"]},
        {"extra_args": ["--api-key=$(cat ~/.ssh/id_rsa)"]},
        {"extra_args": "--tokenizer='a b'"},
        {"extra_args": ["--x=`id`"]},
        {"image": "vllm/vllm-openai:latest;reboot"},
        {"image": "img|sh"},
        {"namespace": "mert;ls"},
        {"experiment_id": "x$(id)"},
        {"model": "llama2-7b && rm -rf ~"},
    ],
)
def test_shell_metacharacters_are_refused(cats, kwargs):
    kw = {"model": "llama2-7b", **kwargs}
    with pytest.raises(SweepdeckError):
        build_spec(cats, **kw)


def test_check_safe():
    assert check_safe("model", "meta-llama/Llama-2-7b-hf") == "meta-llama/Llama-2-7b-hf"
    assert check_safe("image", "ghcr.io/org/vllm:v1@sha256:abc") == "ghcr.io/org/vllm:v1@sha256:abc"
    for bad in ("a;b", "a b", "$HOME", "a\nb", "a`b`", "a|b", "a>b", "a&b", "a'b"):
        with pytest.raises(SweepdeckError, match="not allowed"):
            check_safe("value", bad)


def test_extra_args_must_be_flags(cats):
    with pytest.raises(SweepdeckError, match="must start with --"):
        build_spec(cats, "llama2-7b", extra_args=["enforce-eager"])
    with pytest.raises(SweepdeckError, match="set by the backend"):
        build_spec(cats, "llama2-7b", extra_args=["--port=9000"])
    with pytest.raises(SweepdeckError, match="one of"):
        build_spec(cats, "llama2-7b", extra_args=["--dtype=bf17"])


def test_engine_flags_in_extra_args_become_settings(cats):
    spec = build_spec(cats, "llama2-7b",
                      extra_args=["--max-model-len=2048", "--enforce-eager", "--tensor-parallel-size", "2"])
    assert spec.engine.max_model_len == 2048 and spec.engine.tp == 2
    assert spec.engine.extra_args == ("--enforce-eager",)
    assert split_engine_args(["--max-num-seqs=64", "--x"]) == ({"max_num_seqs": "64"}, ["--x"])
    with pytest.raises(SweepdeckError, match="engine setting"):
        build_spec(cats, "llama2-7b").set("engine.extra_args", ["--max-model-len=1"])


def test_trust_remote_code_from_catalog(tmp_path):
    (tmp_path / "known-models.yaml").write_text(
        "aliases: {falcon: tiiuae/falcon-7b}\nrecommended_settings:\n"
        "  tiiuae/falcon-7b: {tp: [1], max_model_len: 2048, requires_trust_remote_code: true}\n"
    )
    spec = build_spec(load_catalogs(tmp_path), "falcon", extra_args=["--trust-remote-code", "--enforce-eager"])
    assert spec.engine.extra_args == ("--trust-remote-code", "--enforce-eager")


def test_ambiguous_model_needs_a_choice(cats):
    with pytest.raises(AmbiguousModel):
        build_spec(cats, "llama-70b")
    assert build_spec(cats, "llama-70b", model_choice="meta-llama/Llama-2-70b-hf").model == "meta-llama/Llama-2-70b-hf"


def test_serve_command_and_summary(cats):
    spec = build_spec(cats, "llama2-7b", workload="chatbot", extra_args=["--enforce-eager"], today=TODAY)
    argv = spec.serve_command(["sweepdeck", "sim"], port=8123, host="127.0.0.1")
    assert argv[:3] == ["sweepdeck", "sim", "meta-llama/Llama-2-7b-hf"]
    assert argv[argv.index("--port"):argv.index("--port") + 2] == ["--port", "8123"]
    assert "--max-model-len=4096" in argv and argv[-1] == "--enforce-eager"
    rows = dict(spec.summary_lines())
    assert rows["Experiment ID"] == "nov23-llama-2-7b-hf-chatbot"
    assert rows["Prompt Tokens"].startswith("256 (stdev 100, 2-800)")
    assert rows["Additional Args"] == "--enforce-eager"


def test_unknown_field_and_bad_backend(cats):
    spec = build_spec(cats, "llama2-7b")
    with pytest.raises(SweepdeckError, match="Unknown setting"):
        spec.set("engine.gpus", 1)  # engine.gpu is a field (the GPU model)
    with pytest.raises(SweepdeckError, match="Unknown backend"):
        spec.set("backend", "k8s")
    with pytest.raises(SweepdeckError, match="not a valid Kubernetes namespace"):
        spec.set("namespace", "Mert")
