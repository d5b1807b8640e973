"""Catalogs: the shipped defaults and the BLIS skill's own files, loaded as they are."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml

from config.catalog import DATA_DIR, FACTS_SOURCE, load_catalogs, make_workload
from config.errors import (
    AmbiguousModel,
    ConfigError,
    SweepdeckError,
    UnknownModel,
    UnknownWorkload,
)
from tests.support.upstream_files import REFERENCE, blis_catalog_dir

REPO = Path(__file__).resolve().parents[2]

# The eight presets with (prompt, output, max_requests, rate) from the BLIS data collector.
PRESETS = {
    "chatsweep": (70, 215, 50, 12),
    "codesweep": (2048, 28, 50, 12),
    "train": (1700, 800, 25, 12),
    "summarization": (4096, 512, 40, 5),
    "prefilldominant": (2048, 32, 40, 5),
    "chatbot": (256, 256, 40, 5),
    "contentgen": (1024, 1024, 40, 5),
    "doc": (9000, 1536, 25, 5),
}
# Prose a file may word its own way; everything else in it is a fact that must match upstream.
PROSE = {"description", "notes", "security_note", "custom_image_notes", "use_case"}


@pytest.fixture(params=["shipped", "real"])
def catalogs(request):
    """The shipped defaults and, separately, the BLIS data collector's own files as a user's catalog_dir."""
    return load_catalogs(None if request.param == "shipped" else blis_catalog_dir())


def test_real_catalog_dir_is_used_not_the_defaults():
    real = blis_catalog_dir()
    cats = load_catalogs(real)
    assert cats.models.path == real / "known-models.yaml"
    assert cats.workloads.path == real / "workload-presets.yaml"
    assert cats.vllm_args.path == real / "vllm-args.yaml"


def _facts(data):
    if isinstance(data, dict):
        return {k: _facts(v) for k, v in data.items() if k not in PROSE}
    if isinstance(data, list):
        return [_facts(v) for v in data]
    return data


@pytest.mark.parametrize("name", ["workload-presets.yaml", "vllm-args.yaml"])
def test_shipped_files_keep_the_upstream_facts_in_their_own_words(name):
    ours = (DATA_DIR / name).read_text()
    theirs = (blis_catalog_dir() / name).read_text()
    # same format and facts: a user's copy of the upstream file is a drop-in replacement
    assert _facts(yaml.safe_load(ours)) == _facts(yaml.safe_load(theirs))
    # ... but not the upstream wording: no description or comment line is theirs
    def prose(text):
        lines = {line.split("#", 1)[1].strip() for line in text.splitlines() if "#" in line
                 and not line.strip().startswith("-")}
        lines |= {line.split(":", 1)[1].strip() for line in text.splitlines()
                  if line.strip().split(":", 1)[0] in PROSE and ":" in line}
        return {p for p in lines if len(p) > 12}
    assert not prose(ours) & prose(theirs)


def test_shipped_values_keep_the_upstream_facts():
    ours = yaml.safe_load((DATA_DIR / "values.yaml").read_text())
    theirs = yaml.safe_load((blis_catalog_dir() / "blis-values.yaml").read_text())
    ours["experiment"].pop("description")
    theirs["experiment"].pop("description")
    assert ours == theirs


def test_no_project_file_is_a_copy_of_an_upstream_file():
    upstream = {}
    for path in REFERENCE.rglob("*"):
        if path.is_file():
            upstream.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), path)
    if not upstream:
        pytest.skip("no reference files on this machine")
    copies = []
    for top in ("config", "templates", "backends", "tui", "scripts"):
        for path in (REPO / top).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                if digest in upstream:
                    copies.append(f"{path.relative_to(REPO)} = {upstream[digest]}")
    assert copies == []


def test_all_catalogs_load(catalogs):
    catalogs.validate()
    assert catalogs.models.default_image == "vllm/vllm-openai:v0.11.0"
    # the shipped catalog adds the BLIS campaign's models to the data collector's ten
    assert len(catalogs.models.models) == (16 if catalogs.models.path.parent == DATA_DIR else 10)
    assert "--enable-prefix-caching" in catalogs.vllm_args.args


def test_eight_presets_with_their_numbers(catalogs):
    presets = catalogs.workloads.presets
    assert list(presets) == list(PRESETS)
    for name, (prompt, output, requests, rate) in PRESETS.items():
        prof = presets[name].profile
        assert prof.app == name
        assert (prof.prompt_tokens, prof.output_tokens, prof.max_requests, prof.rate) == (
            prompt,
            output,
            requests,
            rate,
        )
        assert prof.rate_type == "sweep"
        assert prof.random_seed == 42
    chat = presets["chatsweep"].profile
    assert (chat.prefix_tokens, chat.prompt_tokens_stdev, chat.prompt_tokens_min, chat.prompt_tokens_max) == (
        284,
        35,
        2,
        200,
    )
    assert (chat.output_tokens_stdev, chat.output_tokens_min, chat.output_tokens_max) == (80, 1, 512)
    # codesweep has no prefix_tokens in the file: the default 0, not an error.
    assert presets["codesweep"].profile.prefix_tokens == 0
    assert presets["chatsweep"].use_case  # worded per file


def test_aliases_resolve(catalogs):
    models = catalogs.models
    assert models.resolve("llama2-7b").id == "meta-llama/Llama-2-7b-hf"
    assert models.resolve("LLAMA3-70B").id == "meta-llama/Llama-3.3-70B-Instruct"
    assert models.resolve("meta-llama/llama-2-7b-hf").id == "meta-llama/Llama-2-7b-hf"
    assert models.resolve("Mistral-7B-Instruct-v0.3").id == "mistralai/Mistral-7B-Instruct-v0.3"
    info = models.resolve("llama3-70b")
    assert info.tp == (4, 8)
    assert (info.max_model_len, info.max_num_seqs, info.max_num_batched_tokens) == (8192, 128, 4096)
    assert info.size_gb == 140
    assert info.download_time == "30-60 minutes"
    assert "140 GB" in info.download_warning() and "30-60" in info.download_warning()
    assert models.resolve("llama2-7b").download_warning() == ""


@pytest.mark.parametrize("alias", ["llama-70b", "llama-7b", "llama", "Llama-70B"])
def test_ambiguous_aliases_are_never_guessed(catalogs, alias):
    with pytest.raises(AmbiguousModel) as err:
        catalogs.models.resolve(alias)
    ids = [o["id"] for o in err.value.options]
    assert len(ids) >= 2
    assert all(i in err.value.hint for i in ids)
    assert catalogs.models.is_ambiguous(alias)


def test_ambiguous_alias_with_a_choice(catalogs):
    models = catalogs.models
    assert models.resolve("llama-70b", "meta-llama/Llama-2-70b-hf").id == "meta-llama/Llama-2-70b-hf"
    assert models.resolve("llama-7b", "Llama 3 8B").id == "meta-llama/Meta-Llama-3-8B-Instruct"
    # A choice that is not one of the options still asks.
    with pytest.raises(AmbiguousModel):
        models.resolve("llama-70b", "meta-llama/Llama-2-7b-hf")
    assert [m.id for m in models.options("llama-70b")] == ["meta-llama/Llama-2-70b-hf",
                                                           "meta-llama/Llama-3.3-70B-Instruct"]


def test_unknown_model_suggests_close_names(catalogs):
    with pytest.raises(UnknownModel) as err:
        catalogs.models.resolve("llama2-8b")
    assert "llama2-7b" in err.value.hint
    assert err.value.name == "llama2-8b"


@pytest.mark.parametrize(
    "word, preset",
    [
        ("chatbot", "chatbot"),  # an exact preset name wins over chatsweep's keyword
        ("chatbot-style", "chatbot"),
        ("conversational", "chatsweep"),
        ("chat", "chatsweep"),
        ("coding", "codesweep"),
        ("rag", "prefilldominant"),
        ("long-context", "prefilldominant"),
        ("tldr", "summarization"),
        ("fine-tuning", "train"),
        ("blog", "contentgen"),
        ("documentation", "doc"),
        ("Summarization", "summarization"),
    ],
)
def test_workload_matching(catalogs, word, preset):
    assert catalogs.workloads.match(word).name == preset


@pytest.mark.parametrize(
    "word, suggested",
    [
        ("chatbto", "chatbot"),  # a typo close to a name
        ("chatbt", "chatbot"),
        ("summarise", "summarization"),  # close to a keyword: its preset is suggested
    ],
)
def test_a_misspelt_workload_is_never_taken_but_suggested(catalogs, word, suggested):
    with pytest.raises(UnknownWorkload) as err:
        catalogs.workloads.match(word)
    assert suggested in err.value.suggestions
    assert f"Did you mean: {', '.join(err.value.suggestions)}?" in err.value.hint


def test_unknown_workload_lists_presets(catalogs):
    with pytest.raises(UnknownWorkload) as err:
        catalogs.workloads.match("zzz")
    for name in PRESETS:
        assert name in err.value.hint


def test_custom_workload_template(catalogs):
    prof = catalogs.workloads.custom(prompt_tokens=500, output_tokens=200, max_requests=100)
    assert prof.custom and prof.app == "custom"
    assert (prof.prompt_tokens, prof.output_tokens, prof.max_requests) == (500, 200, 100)
    # The template: max = 2 × mean, min 1, stdev 0, rate 12, seed 42.
    assert (prof.prompt_tokens_max, prof.output_tokens_max) == (1000, 400)
    assert (prof.prompt_tokens_min, prof.prompt_tokens_stdev, prof.rate, prof.random_seed) == (1, 0, 12, 42)
    with pytest.raises(SweepdeckError, match="needs output_tokens"):
        catalogs.workloads.custom(prompt_tokens=500)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"prompt_tokens": -1}, "must not be negative"),
        ({"prompt_tokens": "many"}, "whole number"),
        ({"prompt_tokens": 2.5}, "whole number"),
        # int() takes these, the whole-number check does not.
        ({"prompt_tokens": "1_000"}, "whole number"),
        ({"max_requests": "+5"}, "whole number"),
        ({"max_requests": True}, "whole number"),
        ({"prompt_tokens": 0}, "prompt_tokens must be at least 1"),
        ({"rate": 0}, "positive"),
        ({"rate": "fast"}, "rate must be a number"),
        ({"max_seconds": [1]}, "max_seconds must be a number"),
        ({"rate_type": "bursty"}, "rate_type"),
        ({"prompt_tokens_min": 10, "prompt_tokens_max": 5}, "larger than"),
        ({"max_requests": 0}, "at least 1"),
        ({"prompt": 5}, "unknown workload field"),
    ],
)
def test_make_workload_rejects(values, message):
    with pytest.raises(SweepdeckError, match=message):
        make_workload("x", values)


def test_vllm_arg_reference(catalogs):
    ref = catalogs.vllm_args
    assert ref.check("--enable-prefix-caching") == ""
    assert ref.check("--dtype=bfloat16") == ""
    assert "not in the vLLM argument reference" in ref.check("--my-new-flag")
    assert ref.args["--otlp-traces-endpoint"].auto_configured
    assert ref.args["--journey-tracing-sample-rate"].requires_custom_image
    with pytest.raises(SweepdeckError, match="one of"):
        ref.check("--dtype=bf17")
    with pytest.raises(SweepdeckError, match="whole number"):
        ref.check("--max-num-seqs=lots")
    with pytest.raises(SweepdeckError, match="flag"):
        ref.check("--enforce-eager=yes")
    assert "prefix_caching" in ref.recipes


def test_partial_catalog_dir_falls_back_to_defaults(tmp_path):
    shutil.copy(blis_catalog_dir() / "known-models.yaml", tmp_path / "known-models.yaml")
    cats = load_catalogs(tmp_path)
    assert cats.models.path == tmp_path / "known-models.yaml"
    assert cats.workloads.path == DATA_DIR / "workload-presets.yaml"


def test_missing_catalog_dir(tmp_path):
    with pytest.raises(SweepdeckError, match="does not exist"):
        load_catalogs(tmp_path / "nope")


# ------------------------------------------------------------ bad catalog files


def _bad_dir(tmp_path, name: str, text: str) -> Path:
    (tmp_path / name).write_text(text)
    return tmp_path


def test_malformed_yaml_names_file_and_line(tmp_path):
    text = (blis_catalog_dir() / "known-models.yaml").read_text().splitlines()
    # Break line 10 with an unclosed flow sequence.
    text[9] = '  "llama2-13b": [unclosed'
    path = tmp_path / "known-models.yaml"
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(SweepdeckError) as err:
        _ = load_catalogs(tmp_path).models  # the property loads the file
    msg = err.value.message
    assert str(path) in msg
    assert "line 1" in msg  # the line the parser stopped at (10 or 11)
    assert "malformed YAML" in msg
    assert "known-models.yaml" in err.value.hint


def test_malformed_yaml_line_number_is_right(tmp_path):
    _bad_dir(tmp_path, "workload-presets.yaml", "mappings:\n  chatbot:\n    keywords: [a, b\n")
    with pytest.raises(SweepdeckError, match=r"line 4"):
        _ = load_catalogs(tmp_path).workloads  # the property loads the file


@pytest.mark.parametrize(
    "name, text, key, expected",
    [
        ("known-models.yaml", "recommended_settings:\n  m/x:\n    max_model_len: big\n",
         "recommended_settings.m/x.max_model_len", "a positive integer"),
        ("known-models.yaml", "recommended_settings:\n  m/x:\n    tp: [0]\n", "recommended_settings.m/x.tp",
         "a list of positive integers"),
        ("known-models.yaml", "recommended_settings:\n  m/x:\n    model_size_gb: huge\n", "model_size_gb", "a number"),
        ("known-models.yaml", "aliases: [a, b]\n", "aliases", "a mapping of alias to model id"),
        ("known-models.yaml", "aliases:\n  x: 5\n", "aliases.x", "a model id string"),
        ("known-models.yaml", "ambiguous_aliases:\n  x:\n    options: nope\n", "ambiguous_aliases.x.options",
         "a list of {id"),
        ("known-models.yaml", "default_vllm_image: [1]\n", "default_vllm_image", "an image reference"),
        ("known-models.yaml", "- just\n- a list\n", "", "a mapping"),
        ("workload-presets.yaml", "mappings: []\n", "mappings", "a mapping of preset name"),
        ("workload-presets.yaml", "mappings:\n  x:\n    keywords: chat\n    profile: {}\n", "mappings.x.keywords",
         "a list of words"),
        ("workload-presets.yaml", "mappings:\n  x:\n    keywords: []\n", "mappings.x.profile", "a profile mapping"),
        ("workload-presets.yaml", "mappings: {}\ncustom_workload_template: [1]\n",
         "custom_workload_template", "a mapping"),
        ("vllm-args.yaml", "categories:\n  perf: {name: x}\n", "categories.perf", "a list of arguments"),
        ("vllm-args.yaml", "categories:\n  perf:\n    - type: flag\n", "categories.perf[0].name", "an argument name"),
        ("vllm-args.yaml", "categories: {}\nauto_configured_args: --x\n", "auto_configured_args",
         "a list of argument names"),
    ],
)
def test_wrong_types_name_file_key_expected(tmp_path, name, text, key, expected):
    _bad_dir(tmp_path, name, text)
    with pytest.raises(ConfigError) as err:
        load_catalogs(tmp_path).validate()
    msg = str(err.value)
    assert str(tmp_path / name) in msg
    assert key in msg
    assert expected in msg


def test_bad_preset_numbers_name_file_and_preset(tmp_path):
    _bad_dir(
        tmp_path,
        "workload-presets.yaml",
        "mappings:\n  x:\n    keywords: []\n    profile:\n      app: x\n      data:\n        prompt_tokens: lots\n",
    )
    with pytest.raises(SweepdeckError) as err:
        _ = load_catalogs(tmp_path).workloads  # the property loads the file
    assert str(tmp_path / "workload-presets.yaml") in err.value.message
    assert "mappings.x" in err.value.message and "prompt_tokens" in err.value.message


def test_binary_catalog_file(tmp_path):
    (tmp_path / "vllm-args.yaml").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(SweepdeckError, match="UTF-8"):
        _ = load_catalogs(tmp_path).vllm_args  # the property loads the file


def test_ambiguous_wins_over_a_plain_alias(tmp_path):
    (tmp_path / "known-models.yaml").write_text(
        "aliases:\n  llama-70b: meta-llama/Llama-2-70b-hf\n"
        "ambiguous_aliases:\n  llama-70b:\n    options:\n      - {id: meta-llama/Llama-2-70b-hf, label: L2}\n"
        "      - {id: meta-llama/Llama-3.3-70B-Instruct, label: L3}\n    prompt: Which?\n"
    )
    models = load_catalogs(tmp_path).models
    with pytest.raises(AmbiguousModel, match="Which"):
        models.resolve("llama-70b")
    # Options that have no recommended settings are still models one can choose.
    assert models.resolve("llama-70b", "L3").id == "meta-llama/Llama-3.3-70B-Instruct"


# ------------------------------------------------- context limits (issue 15, item 3)


def test_a_recommendation_is_never_a_limit_with_the_upstream_catalog():
    # The BLIS data collector's file has no max_context; its max_model_len is only where a run starts.
    models = load_catalogs(blis_catalog_dir()).models
    llama33 = models.resolve("llama3-70b")
    assert llama33.max_model_len == 8192 and llama33.context_limit == 131072
    assert llama33.context_source == FACTS_SOURCE
    assert llama33.check_context(32768).status == "pass"
    codellama = models.resolve("codellama-7b")
    assert (codellama.max_model_len, codellama.context_limit) == (4096, 16384)
    assert codellama.check_context(8192).status == "pass"
    # a model's own limit still holds: Llama 2 was trained on 4K positions
    verdict = models.resolve("llama2-7b").check_context(8192)
    assert verdict.status == "fail" and verdict.limit == 4096
    assert (
        "4096" in verdict.detail and FACTS_SOURCE in verdict.detail and verdict.fix == "Use max_model_len=4096 or less."
    )


def test_unknown_limit_above_the_recommendation_is_a_warning(tmp_path):
    (tmp_path / "known-models.yaml").write_text(
        "recommended_settings:\n  myorg/private-13b:\n    tp: [1]\n    max_model_len: 4096\n"
        "  meta-llama/Llama-3.1-8B-Instruct:\n    max_model_len: 2048\n    max_context: 8192\n"
    )
    models = load_catalogs(tmp_path).models
    mine = models.resolve("myorg/private-13b")
    assert mine.context_limit is None
    assert mine.check_context(4096).status == "pass"
    warn = mine.check_context(16384)
    assert warn.status == "warn" and "recommended 4096" in warn.detail and "max_context" in warn.fix
    # a catalog's own max_context wins over sweepdeck's facts (the user knows their setup)
    llama = models.resolve("meta-llama/Llama-3.1-8B-Instruct")
    assert (llama.context_limit, llama.context_source) == (8192, "known-models.yaml")


# The BLIS campaign's models, with facts from each model's config.json and weights.
CAMPAIGN = {
    # id: (alias, context length, size GB, first recommended TP)
    "meta-llama/Llama-3.1-8B-Instruct": ("llama-3.1-8b", 131072, 16, 1),
    "Qwen/Qwen3-14B": ("qwen3-14b", 40960, 30, 1),
    "meta-llama/Llama-4-Scout-17B-16E": ("llama-4-scout", 10485760, 218, 4),
    "deepseek-ai/DeepSeek-V3": ("deepseek-v3", 163840, 688, 8),
    "mistralai/Mixtral-8x7B-v0.1": ("mixtral-8x7b", 32768, 93, 2),
    "codellama/CodeLlama-34b-Instruct-hf": ("codellama-34b", 16384, 68, 2),
    "meta-llama/Llama-2-70b-hf": ("llama2-70b", 4096, 140, 4),
}


@pytest.mark.parametrize("model_id", list(CAMPAIGN))
def test_blis_campaign_models_are_in_the_catalog(model_id):
    alias, context, size, tp = CAMPAIGN[model_id]
    info = load_catalogs().models.resolve(alias)
    assert info.id == model_id
    assert (info.context_limit, info.size_gb, info.tp[0]) == (context, size, tp)
    assert info.max_model_len <= context  # the recommendation fits inside the model's limit
    assert info.notes


def test_campaign_pipelinerun_model_is_known():
    run = blis_catalog_dir() / "blis-campaign-14-qwen3-14b-h100-codegen" / "pipelinerun.yaml"
    params = {p["name"]: p["value"] for p in yaml.safe_load(run.read_text())["spec"]["params"]}
    assert load_catalogs().models.resolve(params["model"]).context_limit == 40960


def test_make_workload_none_means_default_and_preset_shape_is_flattened():
    # A None max gets the template's 2 × mean; the preset's nested ``data`` reads like flat fields.
    prof = make_workload("x", {"rate_type": "constant", "rate": "2.5", "data": {"prompt_tokens": "10",
                                                                                  "prompt_tokens_max": None}})
    assert (prof.rate_type, prof.rate, prof.prompt_tokens, prof.prompt_tokens_min, prof.prompt_tokens_max) == (
        "constant", 2.5, 10, 1, 20)


def test_every_workload_field_has_a_check():
    from config.catalog import _WORKLOAD_FIELD_CHECKS, WorkloadProfile

    assert set(_WORKLOAD_FIELD_CHECKS) == set(WorkloadProfile.__dataclass_fields__) - {"app"}
