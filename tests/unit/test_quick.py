"""Quick commands: the BLIS skill's one-liners and recovery fixes."""

from __future__ import annotations

import datetime as dt

import pytest
import yaml

from config.catalog import load_catalogs
from config.errors import AmbiguousModel, SweepdeckError, UnknownModel
from config.quick import apply_quick, build_quick, parse_quick
from config.settings import load_settings
from config.spec import Source, build_spec
from tests.support.upstream_files import blis_catalog_dir

TODAY = dt.date(2026, 11, 23)


@pytest.fixture(scope="module")
def cats():
    return load_catalogs()


@pytest.fixture(scope="module")
def values():
    return yaml.safe_load((blis_catalog_dir() / "blis-values.yaml").read_text())


def q(text, cats, **kw):
    return parse_quick(text, cats, today=TODAY, **kw)


# ----------------------------------------------------------- the seed examples


@pytest.mark.parametrize(
    "text",
    [
        "llama3-70b chatbot workload with TP=4 in namespace mert",
        "run llama3-70b chatbot TP=4 in namespace mert",
        "/blis-data-collector run llama3-70b chatbot workload with TP=4 in namespace mert",
        "llama3-70b chatbot tp 4 namespace mert",
        "namespace=mert --tp=4 chatbot llama3-70b",
    ],
)
def test_full_specification(cats, text):
    spec = q(text, cats).spec
    assert spec.model == "meta-llama/Llama-3.3-70B-Instruct"
    assert spec.workload.app == "chatbot"
    assert spec.engine.tp == 4
    assert spec.namespace == "mert"
    assert spec.backend == "local"
    assert spec.experiment_id == "nov23-llama-3-3-70b-instruct-chatbot"


def test_full_specification_against_values(cats, values):
    cmd = q("llama3-70b chatbot workload with TP=4 in namespace mert", cats, backend="tekton", base=values)
    spec = cmd.spec
    assert spec.backend == "tekton"
    kinds = {c.field: c.kind for c in spec.changes()}
    assert kinds == {"workload": "OVERRIDE", "tp_sweep": "SUBSET"}
    assert spec.tp_sweep == (4,)


def test_minimal(cats):
    cmd = q("llama2-7b chatbot", cats)
    assert cmd.model == "llama2-7b" and cmd.model_id == "meta-llama/Llama-2-7b-hf"
    assert cmd.workload == "chatbot"
    assert cmd.spec.engine.tp == 1 and cmd.spec.changes() == []


def test_vllm_flags(cats):
    spec = q("llama2-7b --trust-remote-code --enable-prefix-caching", cats).spec
    assert spec.engine.extra_args == ("--trust-remote-code", "--enable-prefix-caching")
    assert [c.field for c in spec.changes()] == ["engine.extra_args"]
    assert spec.source("engine.extra_args") == Source.USER


def test_custom_image(cats):
    spec = q("llama2-7b with custom image ghcr.io/myorg/vllm:v1", cats).spec
    assert spec.engine.image == "ghcr.io/myorg/vllm:v1"
    assert spec.workload.app == "chatbot"  # nothing else changed
    [change] = spec.changes()
    assert (change.field, change.base) == ("engine.image", "vllm/vllm-openai:v0.11.0")


def test_custom_workload_short_names(cats):
    spec = q("llama2-7b with custom workload prompt=500 output=100", cats).spec
    w = spec.workload
    assert w.app == "custom"
    assert (w.prompt_tokens, w.output_tokens, w.prompt_tokens_max, w.output_tokens_max) == (500, 100, 1000, 200)
    assert spec.experiment_id.endswith("-custom")


def test_custom_workload_without_model(cats):
    cmd = q("custom workload: prompt_tokens=500, output_tokens=200, max_requests=100", cats)
    assert cmd.spec is None and cmd.model is None
    assert cmd.custom_workload
    prof = cmd.custom_profile(cats)
    assert (prof.prompt_tokens, prof.output_tokens, prof.max_requests) == (500, 200, 100)
    with pytest.raises(SweepdeckError, match="No model"):
        build_quick("custom workload: prompt_tokens=500, output_tokens=200", cats)


def test_custom_workload_needs_both_numbers(cats):
    with pytest.raises(SweepdeckError, match="needs output_tokens"):
        q("llama2-7b custom workload prompt=500", cats)


def test_settings_words(cats):
    cmd = q(
        "llama2-7b max_model_len=2048 max-num-seqs 128 tp 2 on slurm experiment id foo-1 rate=5 poisson "
        "max_num_batched_tokens 1024",
        cats,
    )
    spec = cmd.spec
    e = spec.engine
    assert (e.max_model_len, e.max_num_seqs, e.tp, e.max_num_batched_tokens) == (2048, 128, 2, 1024)
    assert spec.backend == "slurm"
    assert spec.experiment_id == "foo-1"
    assert (spec.workload.rate, spec.workload.rate_type) == (5, "poisson")


@pytest.mark.parametrize(
    "text, backend, profile",
    [
        ("llama2-7b on slurm", "slurm", None),
        ("llama2-7b backend tekton", "tekton", None),
        ("llama2-7b backend=argo", "argo", None),
        ("llama2-7b profile alvis", "local", "alvis"),
    ],
)
def test_backend_and_profile_words(cats, text, backend, profile):
    spec = q(text, cats).spec
    assert (spec.backend, spec.profile) == (backend, profile)


def test_profile_names_from_settings(cats, tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("profiles:\n  alvis:\n    backend: slurm\n    ssh_host: alvis2\n")
    settings = load_settings(cfg)
    for text in ("llama2-7b on alvis", "llama2-7b profile alvis", "llama2-7b using alvis"):
        spec = q(text, cats, settings=settings).spec
        assert (spec.backend, spec.profile) == ("slurm", "alvis"), text
    with pytest.raises(SweepdeckError, match="No profile named 'alvs'"):
        q("llama2-7b profile alvs", cats, settings=settings)
    with pytest.raises(SweepdeckError, match="for the slurm backend"):
        q("llama2-7b profile alvis on tekton", cats, settings=settings)


@pytest.mark.parametrize(
    "word, preset",
    [
        ("chatbot-style", "chatbot"),
        ("conversational", "chatsweep"),
        ("coding", "codesweep"),
        ("long context", "prefilldominant"),
        ("basic chat", "chatbot"),
        ("summarization-like", "summarization"),
        ("workload=doc", "doc"),
        ("preset rag", "prefilldominant"),
    ],
)
def test_fuzzy_workloads(cats, word, preset):
    assert q(f"qwen-7b {word}", cats).spec.workload.app == preset


def test_filler_words_are_ignored(cats):
    spec = q("please run the llama2-7b model with a chatbot workload using tp 2 on the local backend", cats).spec
    assert (spec.model, spec.workload.app, spec.engine.tp, spec.backend) == (
        "meta-llama/Llama-2-7b-hf",
        "chatbot",
        2,
        "local",
    )


def test_more_forms(cats):
    spec = q(
        "mistral-7b --dtype bfloat16 gpu_memory_utilization=0.8 -tp 2 context 8k concurrency=8 requests 20", cats
    ).spec
    assert spec.engine.extra_args == ("--dtype=bfloat16", "--gpu-memory-utilization=0.8")
    assert spec.engine.tp == 2 and spec.engine.max_model_len == 8192
    w = spec.workload
    assert (w.max_concurrency, w.rate_type, w.max_requests) == (8, "concurrent", 20)
    sweep = q("llama2-7b tp=[1,2] code", cats).spec
    assert sweep.tp_sweep == (1, 2) and sweep.engine.tp == 1 and sweep.workload.app == "codesweep"
    assert q("llama2-7b 2 gpus", cats).spec.engine.tp == 2
    sized = q("llama2-7b batch size 64 context length 2048 name=run-7", cats).spec
    assert (sized.engine.max_num_seqs, sized.engine.max_model_len, sized.experiment_id) == (64, 2048, "run-7")
    assert q("llama2-7b model=llama2-7b 'chatbot'", cats).spec.workload.app == "chatbot"


def test_warnings_for_unknown_vllm_args(cats):
    cmd = q("llama2-7b --my-new-flag --otlp-traces-endpoint=http://x:4318", cats)
    assert any("--my-new-flag" in w for w in cmd.warnings)
    assert any("set automatically" in w for w in cmd.warnings)
    assert cmd.spec.engine.extra_args == ("--my-new-flag", "--otlp-traces-endpoint=http://x:4318")


# ------------------------------------------------------------------ bad input


def test_ambiguous_model(cats):
    with pytest.raises(AmbiguousModel) as err:
        q("llama-70b chatbot tp=4", cats)
    assert {o["id"] for o in err.value.options} == {"meta-llama/Llama-2-70b-hf", "meta-llama/Llama-3.3-70B-Instruct"}
    # After the dialog the caller parses again with the choice.
    spec = q("llama-70b chatbot tp=4", cats, model_choice="meta-llama/Llama-2-70b-hf").spec
    assert spec.model == "meta-llama/Llama-2-70b-hf" and spec.engine.tp == 4


def test_unknown_word_names_word_and_alternatives(cats):
    with pytest.raises(SweepdeckError) as err:
        q("llama2-7b chatbot tekon", cats)
    assert "'tekton'" not in err.value.message and "tekon" in err.value.message
    assert "tekton" in err.value.hint
    with pytest.raises(SweepdeckError) as err:
        q("llama2-7b frobnicate", cats)
    assert "frobnicate" in err.value.message
    assert "chatbot" in err.value.hint and "tp=4" in err.value.hint


def test_unknown_model_suggests(cats):
    with pytest.raises(UnknownModel) as err:
        q("llama4-7b chatbot", cats)
    assert "llama2-7b" in err.value.hint


def test_model_and_workload_as_settings(cats):
    cmd = q("model=llama2-7b workload=custom prompt=500 output=100 rate_type=SYNC", cats)
    assert cmd.custom_workload and cmd.workload is None
    assert cmd.spec.model == q("llama2-7b chatbot", cats).spec.model
    # "sync" is the rate-type word for synchronous, in any case.
    assert cmd.value("workload.rate_type") == "synchronous"
    assert q("llama2-7b workload=chat", cats).workload == "chatsweep"


def test_unknown_model_as_a_setting_is_reported(cats):
    with pytest.raises(SweepdeckError) as err:
        q("model=nosuchmodel chatbot", cats)
    assert "'nosuchmodel'" in err.value.message


def test_unknown_setting_suggests(cats):
    with pytest.raises(SweepdeckError) as err:
        q("llama2-7b max_model_lenght=2048", cats)
    assert "max_model_lenght" in err.value.message and "max_model_len" in err.value.hint


@pytest.mark.parametrize(
    "text, message",
    [
        ("llama2-7b tp=0", "tp must be a positive integer"),
        ("llama2-7b tp=two", "tp must be a positive integer"),
        ("llama2-7b tp", "tp needs a value"),
        ("llama2-7b tp two", "needs a value"),
        ("llama2-7b max_model_len=8192", "limit of 4096"),
        ("llama2-7b llama3-8b", "Two models"),
        ("llama2-7b chatbot code", "Two workloads"),
        ("llama2-7b rate=fast", "rate must be a number"),
        ("llama2-7b requests=1.5", "whole number"),
        ("llama2-7b --dtype=bf17", "one of"),
        ("llama2-7b --dtype", "needs a value"),
        ("llama2-7b --port=9000", "set by the backend"),
        ("llama2-7b image Bad", "not a valid image"),
        ("llama2-7b image ghcr.io/x:v1 image", "image needs a value"),
        ("llama2-7b namespace Mert", "namespace"),
        ("llama2-7b experiment id Foo_1", "DNS-safe"),
        ("llama2-7b 'unclosed", "quote"),
        ("llama2-7b -x", "not an option"),
        ("llama2-7b reduce", "Reduce what"),
        ("llama2-7b add chatbot", "add what"),
    ],
)
def test_bad_input(cats, text, message):
    with pytest.raises(SweepdeckError, match=message):
        q(text, cats)


@pytest.mark.parametrize(
    "text",
    [
        "llama2-7b image ghcr.io/x;rm",
        "llama2-7b namespace $(whoami)",
        "llama2-7b `id`",
        "llama2-7b --served-model-name=a|b",
        "llama2-7b experiment id a&&b",
        "llama2-7b image 'a b'",
        "llama2-7b --tokenizer=~/tok",
        "llama2-7b image x>y",
        "llama2-7b\nchatbot",
    ],
)
def test_shell_metacharacters(cats, text):
    with pytest.raises(SweepdeckError, match="not allowed|control characters"):
        q(text, cats)


# ------------------------------------------------------------------- fixes


@pytest.fixture(scope="module")
def failed(cats, values):
    """A spec as the recovery dialog would get it (Tekton, BLIS values base)."""
    return build_spec(cats, "llama3-8b", backend="tekton", base_values=values, namespace="mert", today=TODAY)


@pytest.mark.parametrize(
    "text, path, value",
    [
        ("reduce max_model_len to 2048", "engine.max_model_len", 2048),
        ("max_model_len=2048", "engine.max_model_len", 2048),
        ("reduce context", "engine.max_model_len", 2048),
        ("max_num_seqs 64", "engine.max_num_seqs", 64),
        ("halve max_num_seqs", "engine.max_num_seqs", 128),
        ("lower batch to 128", "engine.max_num_seqs", 128),
        ("tp=4", "engine.tp", 4),
        ("increase tp", "engine.tp", 4),
        ("double tp", "engine.tp", 4),
        ("add --enforce-eager", "engine.extra_args", ("--enforce-eager",)),
        ("--gpu-memory-utilization=0.8", "engine.extra_args", ("--gpu-memory-utilization=0.8",)),
        ("image ghcr.io/myorg/vllm:v2", "engine.image", "ghcr.io/myorg/vllm:v2"),
        ("rate=2", "workload.rate", 2),
    ],
)
def test_fixes(cats, failed, text, path, value):
    fixed = apply_quick(failed, text, cats)
    assert fixed.get(path) == value
    changed = {c.field: c for c in fixed.changes()}
    field = "tp_sweep" if path == "engine.tp" else path
    assert changed[field].source == Source.FIX
    assert len(changed) == 1
    assert failed.engine.max_model_len == 4096 and failed.engine.extra_args == ()  # untouched


def test_fix_tp_narrows_the_sweep(cats, failed):
    fixed = apply_quick(failed, "tp=4", cats)
    assert fixed.tp_sweep == (4,)
    [change] = fixed.changes()
    assert (change.field, change.base, change.value, change.kind) == ("tp_sweep", (2, 4), (4,), "SUBSET")


def test_fix_several_at_once_and_remove(cats, failed):
    fixed = apply_quick(failed, "reduce max_model_len to 2048 and max_num_seqs=128, add --enforce-eager", cats)
    assert (fixed.engine.max_model_len, fixed.engine.max_num_seqs) == (2048, 128)
    assert fixed.engine.extra_args == ("--enforce-eager",)
    back = apply_quick(fixed, "remove --enforce-eager", cats)
    assert back.engine.extra_args == ()
    replaced = apply_quick(apply_quick(failed, "--dtype=half", cats), "--dtype=bfloat16", cats)
    assert replaced.engine.extra_args == ("--dtype=bfloat16",)


def test_fix_prompt_beyond_the_preset_range(cats, failed):
    fixed = apply_quick(failed, "prompt=5000", cats)
    w = fixed.workload
    assert (w.prompt_tokens, w.prompt_tokens_max) == (5000, 10000)


def test_fix_source_can_be_user(cats, failed):
    fixed = apply_quick(failed, "tp=4", cats, source=Source.USER)
    assert fixed.changes()[0].source == Source.USER


def test_fix_workload_changes_refresh_auto_id(cats, failed):
    fixed = apply_quick(failed, "chatbot rate=2 poisson", cats)
    assert fixed.workload.app == "chatbot" and fixed.workload.rate == 2 and fixed.workload.rate_type == "poisson"
    assert fixed.experiment_id == "nov23-meta-llama-3-8b-instruct-chatbot".replace("nov23", fixed.experiment_id[:5])
    assert fixed.source("experiment_id") == Source.AUTO
    custom = apply_quick(failed, "custom workload prompt=500 output=100", cats)
    assert custom.workload.app == "custom"
    assert [c.field for c in custom.changes()] == ["workload"]
    named = failed.set("experiment_id", "mine")
    assert apply_quick(named, "chatbot", cats).experiment_id == "mine"  # a user's id is kept


@pytest.mark.parametrize(
    "text, message",
    [
        ("reduce max_model_len to 8192", "would not lower it"),
        ("increase max_num_seqs to 64", "would not raise it"),
        ("remove --enforce-eager", "not among the vLLM arguments"),
        ("", "Nothing to change"),
        ("max_model_len=100000", "limit"),
        ("tp=0", "positive integer"),
        ("halve", "halve what"),
        ("max_model_len=2048; rm -rf /", "not allowed"),
    ],
)
def test_bad_fixes(cats, failed, text, message):
    with pytest.raises(SweepdeckError, match=message):
        apply_quick(failed, text, cats)


def test_real_catalogs_work_too():
    real = load_catalogs(blis_catalog_dir())
    spec = parse_quick("llama3-70b chatbot workload with TP=4 in namespace mert", real).spec
    assert spec.model == "meta-llama/Llama-3.3-70B-Instruct" and spec.engine.tp == 4


def test_flags_in_plain_words(cats, failed):
    spec = q("llama2-7b chatbot with prefix caching and trust remote code in namespace mert.", cats).spec
    assert spec.engine.extra_args == ("--enable-prefix-caching", "--trust-remote-code")
    assert spec.namespace == "mert"  # the full stop is not part of the name
    with_eager = apply_quick(failed, "enforce eager", cats)
    assert with_eager.engine.extra_args == ("--enforce-eager",)
    assert apply_quick(with_eager, "without eager mode", cats).engine.extra_args == ()


@pytest.mark.parametrize("text", [
    "llama2-7b chatbot memory=64Gi cpu=16",
    "llama2-7b chatbot --memory 64Gi --cpu 16",
    "llama2-7b chatbot mem 64Gi cpus 16",
])
def test_memory_and_cpu(cats, text):
    spec = q(text, cats).spec
    assert (spec.engine.memory, str(spec.engine.cpu)) == ("64Gi", "16")
    assert spec.source("engine.memory") == Source.USER
    assert spec.engine.extra_args == ()  # sweepdeck settings, not vLLM arguments


def test_bad_memory_names_the_setting_and_an_example(cats):
    with pytest.raises(SweepdeckError) as err:
        q("llama2-7b memory=lots", cats)
    assert "memory" in err.value.message and "64Gi" in (err.value.message + (err.value.hint or ""))


# ------------------------------------------------------- nothing guessed (issue 18)


@pytest.fixture
def mert_settings(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("profiles:\n  mert:\n    backend: tekton\n    namespace: mert\n"
                   "  alvis:\n    backend: slurm\n    ssh_host: alvis2\n")
    return load_settings(cfg)


def test_a_misspelt_workload_is_never_taken_for_the_preset(cats):
    from config.quick import UnknownWords

    with pytest.raises(UnknownWords) as err:
        q("qwen-1.5b chatbt", cats)
    assert [u.word for u in err.value.unknown] == ["chatbt"]
    assert ("chatbot", "workload preset") in err.value.unknown[0].suggestions
    assert err.value.askable  # the app asks which word was meant
    with pytest.raises(UnknownWords):
        q("qwen-1.5b workload=chatbt", cats)  # as a value too


def test_every_unknown_word_of_the_line_is_reported_at_once(cats, mert_settings):
    from config.quick import UnknownWords

    with pytest.raises(UnknownWords) as err:
        q("qwen-1.5b chatbt tpp=2 on mertt", cats, settings=mert_settings)
    assert [u.word for u in err.value.unknown] == ["chatbt", "tpp", "mertt"]
    for word in ("'chatbt'", "'tpp'", "'mertt'"):
        assert word in err.value.message
    by_word = {u.word: dict(u.suggestions) for u in err.value.unknown}
    assert "chatbot" in by_word["chatbt"]
    assert by_word["tpp"].get("tp") == "setting"  # keys are suggested
    assert by_word["mertt"].get("mert") == "profile, tekton"  # configured profiles are suggested


def test_an_unconfigured_profile_names_the_configured_ones_not_a_workload_keyword(cats, mert_settings):
    from config.quick import UnknownWords

    profiles_without_alvis = {k: v for k, v in mert_settings.profiles.items() if k != "alvis"}
    mert_settings.profiles = profiles_without_alvis
    with pytest.raises(UnknownWords) as err:
        q("qwen-1.5b chatbot on alvis", cats, settings=mert_settings)
    (entry,) = err.value.unknown
    assert entry.word == "alvis" and "no profile named 'alvis' is configured" in entry.note
    assert "mert" in entry.note
    assert all(word != "analysis" for word, _ in entry.suggestions)
    assert "profiles (mert (tekton))" in err.value.hint


def test_suggestions_come_from_models_presets_profiles_and_settings(cats, mert_settings):
    from config.quick import UnknownWords

    cases = {"qwen-1.5b chatbot on mrt": ("mert", "profile, tekton"),
             "qwen-1.5b codesweap": ("codesweep", "workload preset"),
             "qwen-1.5b chatbot max_model_lenn=2048": ("max_model_len", "setting"),
             "llama2-7b chatbot on tekon": ("tekton", "backend")}
    for text, (word, what) in cases.items():
        with pytest.raises(UnknownWords) as err:
            q(text, cats, settings=mert_settings)
        assert (word, what) in err.value.unknown[0].suggestions, (text, err.value.unknown)
    with pytest.raises(UnknownModel) as err:  # close to a model and no model named: a model suggestion
        q("qwen-1.5c chatbot", cats)
    assert ("qwen-1.5b", "model") in err.value.unknown[0].suggestions


def test_unknown_words_and_bad_values_are_reported_together(cats):
    from config.quick import UnknownWords

    with pytest.raises(UnknownWords) as err:
        q("llama2-7b chatbt tp two frobnicate", cats)
    assert [u.word for u in err.value.unknown] == ["chatbt", "frobnicate"]
    assert [p.message for p in err.value.problems] == ["tp needs a value, got 'two'."]
    assert not err.value.askable  # a bad value cannot be answered by choosing a word
    assert "'two'" not in [u.word for u in err.value.unknown]  # the value is not read again as a word


def test_replace_word_changes_one_whole_word():
    from config.quick import replace_word

    assert replace_word("qwen-1.5b chatbt tp=2", "chatbt", "chatbot") == "qwen-1.5b chatbot tp=2"
    assert replace_word("qwen chatbt tpp=2", "tpp", "tp") == "qwen chatbt tp=2"
    assert replace_word("a-chatbt chatbt", "chatbt", "chatbot") == "a-chatbt chatbot"
