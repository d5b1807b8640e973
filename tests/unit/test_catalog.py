"""Catalogs: the shipped defaults and the BLIS skill's own files, loaded as they are."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from config.catalog import DATA_DIR, load_catalogs, make_workload
from config.errors import AmbiguousModel, ConfigError, SweepdeckError, UnknownModel, UnknownWorkload

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
REAL = FIXTURES / "catalogs"

# The eight presets with (prompt, output, max_requests, rate) from the skill.
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


@pytest.fixture(params=["shipped", "real"])
def catalogs(request):
    """The shipped defaults and, separately, the skill's files copied verbatim."""
    return load_catalogs(None if request.param == "shipped" else REAL)


def test_real_files_are_the_skill_files_unchanged():
    # The fixture must stay a verbatim copy: "no conversion" is the point.
    ref = Path("/work/shared/reference/tektonc-data-collection")
    if not ref.is_dir():
        pytest.skip("reference checkout not on this machine")
    for name in ("known-models.yaml", "workload-presets.yaml", "vllm-args.yaml"):
        assert (REAL / name).read_bytes() == (ref / name).read_bytes()


def test_real_catalog_dir_is_used_not_the_defaults():
    cats = load_catalogs(REAL)
    assert cats.models.path == REAL / "known-models.yaml"
    assert cats.workloads.path == REAL / "workload-presets.yaml"
    assert cats.vllm_args.path == REAL / "vllm-args.yaml"


def test_all_catalogs_load(catalogs):
    catalogs.validate()
    assert catalogs.models.default_image == "vllm/vllm-openai:v0.11.0"
    assert len(catalogs.models.models) == 10
    assert "--enable-prefix-caching" in catalogs.vllm_args.args


def test_eight_presets_with_their_numbers(catalogs):
    presets = catalogs.workloads.presets
    assert list(presets) == list(PRESETS)
    for name, (prompt, output, requests, rate) in PRESETS.items():
        prof = presets[name].profile
        assert prof.app == name
        assert (prof.prompt_tokens, prof.output_tokens, prof.max_requests, prof.rate) == (prompt, output, requests, rate)
        assert prof.rate_type == "sweep"
        assert prof.random_seed == 42
    chat = presets["chatsweep"].profile
    assert (chat.prefix_tokens, chat.prompt_tokens_stdev, chat.prompt_tokens_min, chat.prompt_tokens_max) == (284, 35, 2, 200)
    assert (chat.output_tokens_stdev, chat.output_tokens_min, chat.output_tokens_max) == (80, 1, 512)
    # codesweep has no prefix_tokens in the file: the default 0, not an error.
    assert presets["codesweep"].profile.prefix_tokens == 0
    assert presets["chatsweep"].use_case == "Chatbot, conversational AI"


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
    assert [m.id for m in models.options("llama-70b")] == ["meta-llama/Llama-2-70b-hf", "meta-llama/Llama-3.3-70B-Instruct"]


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
        ("chatbto", "chatbot"),  # a typo close to a name
        ("summarise", "summarization"),  # close to a keyword
    ],
)
def test_workload_matching(catalogs, word, preset):
    assert catalogs.workloads.match(word).name == preset


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
        ({"rate": 0}, "positive"),
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
    shutil.copy(REAL / "known-models.yaml", tmp_path / "known-models.yaml")
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
    text = (REAL / "known-models.yaml").read_text().splitlines()
    # Break line 10 with an unclosed flow sequence.
    text[9] = '  "llama2-13b": [unclosed'
    path = tmp_path / "known-models.yaml"
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(SweepdeckError) as err:
        load_catalogs(tmp_path).models
    msg = err.value.message
    assert str(path) in msg
    assert "line 1" in msg  # the line the parser stopped at (10 or 11)
    assert "malformed YAML" in msg
    assert "known-models.yaml" in err.value.hint


def test_malformed_yaml_line_number_is_right(tmp_path):
    _bad_dir(tmp_path, "workload-presets.yaml", "mappings:\n  chatbot:\n    keywords: [a, b\n")
    with pytest.raises(SweepdeckError, match=r"line 4"):
        load_catalogs(tmp_path).workloads


@pytest.mark.parametrize(
    "name, text, key, expected",
    [
        ("known-models.yaml", "recommended_settings:\n  m/x:\n    max_model_len: big\n", "recommended_settings.m/x.max_model_len", "a positive integer"),
        ("known-models.yaml", "recommended_settings:\n  m/x:\n    tp: [0]\n", "recommended_settings.m/x.tp", "a list of positive integers"),
        ("known-models.yaml", "recommended_settings:\n  m/x:\n    model_size_gb: huge\n", "model_size_gb", "a number"),
        ("known-models.yaml", "aliases: [a, b]\n", "aliases", "a mapping of alias to model id"),
        ("known-models.yaml", "aliases:\n  x: 5\n", "aliases.x", "a model id string"),
        ("known-models.yaml", "ambiguous_aliases:\n  x:\n    options: nope\n", "ambiguous_aliases.x.options", "a list of {id"),
        ("known-models.yaml", "default_vllm_image: [1]\n", "default_vllm_image", "an image reference"),
        ("known-models.yaml", "- just\n- a list\n", "", "a mapping"),
        ("workload-presets.yaml", "mappings: []\n", "mappings", "a mapping of preset name"),
        ("workload-presets.yaml", "mappings:\n  x:\n    keywords: chat\n    profile: {}\n", "mappings.x.keywords", "a list of words"),
        ("workload-presets.yaml", "mappings:\n  x:\n    keywords: []\n", "mappings.x.profile", "a profile mapping"),
        ("workload-presets.yaml", "mappings: {}\ncustom_workload_template: [1]\n", "custom_workload_template", "a mapping"),
        ("vllm-args.yaml", "categories:\n  perf: {name: x}\n", "categories.perf", "a list of arguments"),
        ("vllm-args.yaml", "categories:\n  perf:\n    - type: flag\n", "categories.perf[0].name", "an argument name"),
        ("vllm-args.yaml", "categories: {}\nauto_configured_args: --x\n", "auto_configured_args", "a list of argument names"),
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
        load_catalogs(tmp_path).workloads
    assert str(tmp_path / "workload-presets.yaml") in err.value.message
    assert "mappings.x" in err.value.message and "prompt_tokens" in err.value.message


def test_binary_catalog_file(tmp_path):
    (tmp_path / "vllm-args.yaml").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(SweepdeckError, match="UTF-8"):
        load_catalogs(tmp_path).vllm_args


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
