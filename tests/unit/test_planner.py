"""The memory planner, term by term and family by family, with numbers worked out by hand.

Hand checks follow vLLM v0.19's own formulas (gpu_worker.determine_available_memory,
kv_cache_interface page sizes, kv_cache_utils grouping) and the models' config.json
values in config/data/model-facts.yaml.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import replace

import pytest

from config.errors import SweepdeckError
from config.planner import PlanRequest, facts_from_config, facts_from_path, load_facts, plan, resolve_gpu
from config.planner import gpus as gpu_catalog
from config.planner.calibration import DEFAULT, Observation, fit
from config.planner.facts import catalog_model_ids, hf_cache_dirs
from config.planner.kvcache import LayerSpec, group_layers
from config.planner.memory import activation_bytes, capture_sizes, moe_workspace_bytes
from config.planner.text import summary_line, tokens_text
from config.planner.weights import GIB, Stage, pp_stages, quant_bytes, text_params, weight_bytes

H100 = resolve_gpu("H100-80GB")
LLAMA = "meta-llama/Llama-3.1-8B-Instruct"


def req(model: str = LLAMA, **kw) -> PlanRequest:
    return PlanRequest(load_facts(model), kw.pop("gpu", H100), **kw)


# ------------------------------------------------------------------ GPUs


def test_gpu_catalog_names_aliases_and_physical_memory():
    assert H100.memory_gib == 79.19  # what the driver reports, not 80
    for alias in ("NVIDIA-H100-80GB-HBM3", "h100", "H100 80GB HBM3"):
        assert resolve_gpu(alias).name == "H100-80GB"
    assert resolve_gpu("A40").memory_gib == 44.34  # the SLURM gres type on Alvis
    assert resolve_gpu("NVIDIA-A100-SXM4-80GB").name == "A100-80GB"
    for name in ("A40", "A100-40GB", "A100-80GB", "H100-80GB", "H200", "L40S", "MI300X"):
        assert gpu_catalog.find_gpu(name) is not None
    assert resolve_gpu("H200").large_defaults and not resolve_gpu("A100-80GB").large_defaults


def test_unknown_gpu_lists_the_catalog_and_gpu_memory():
    with pytest.raises(SweepdeckError) as err:
        resolve_gpu("Z80")
    assert "Unknown GPU 'Z80'" in err.value.message
    assert "H100-80GB" in err.value.hint and "--gpu-memory" in err.value.hint


def test_gpu_from_profiles_and_values():
    assert gpu_catalog.slurm_gres_gpu("A40:4") == ("A40", 4)
    assert gpu_catalog.slurm_gres_gpu("gpu:A100:2") == ("A100", 2)
    assert gpu_catalog.slurm_gres_gpu("2") == (None, 2)
    assert gpu_catalog.profile_gpu({"gpus": "A40:1"}) == ("A40", "gpus")
    assert gpu_catalog.profile_gpu({"gpu_product": "NVIDIA-H100-80GB-HBM3"}) == ("NVIDIA-H100-80GB-HBM3", "gpu_product")
    assert gpu_catalog.profile_gpu({"gpu": "H200", "gpus": "A40:1"}) == ("H200", "gpu")
    decode = {"acceleratorTypes": {"labelValues": ["NVIDIA-H100-80GB-HBM3"]}}
    values = {"stack": {"model": {"helmValues": {"decode": decode}}}}
    assert gpu_catalog.values_gpu(values) == "NVIDIA-H100-80GB-HBM3"
    assert gpu_catalog.values_gpu({"stack": {}}) is None


# ------------------------------------------------------------------ facts


def test_catalog_covers_known_models_fixtures_and_blis_campaign():
    from config.catalog import load_catalogs

    ids = set(catalog_model_ids())
    assert set(load_catalogs().models.models) <= ids
    for model in (LLAMA, "Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen3-14B", "meta-llama/Llama-4-Scout-17B-16E",
                  "deepseek-ai/DeepSeek-V3", "mistralai/Mixtral-8x7B-v0.1", "codellama/CodeLlama-34b-hf"):
        assert model in ids, model


@pytest.mark.parametrize("model", [m for m in catalog_model_ids()])
def test_counted_parameters_match_the_checkpoints(model):
    facts = load_facts(model)
    if facts.params is None:
        pytest.skip("no declared total")
    counted = text_params(facts)
    # Llama 4 Scout's declared total includes its vision tower, which the layer count does not cover
    assert counted == pytest.approx(facts.params, rel=0.01 if facts.multimodal else 1e-4)


def test_facts_from_config_json_and_missing_fields(tmp_path):
    cfg = {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 4096,
           "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
           "vocab_size": 32000, "max_position_embeddings": 32768, "sliding_window": 4096, "torch_dtype": "bfloat16"}
    facts = facts_from_config(cfg, "mistralai/Mistral-7B-v0.1")
    assert facts.family == "GQA + sliding window" and facts.layer_kinds == ("sliding",) * 32
    assert facts.head_dim == 128 and facts.kv_heads == 8
    bad = dict(cfg)
    del bad["num_hidden_layers"], bad["vocab_size"]
    with pytest.raises(SweepdeckError, match="lacks the fields the planner needs: num_hidden_layers, vocab_size"):
        facts_from_config(bad)


def test_model_directory_gives_checkpoint_bytes_from_index_or_headers(tmp_path):
    cfg = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    header = json.dumps({"a": {"dtype": "BF16", "shape": [10, 10], "data_offsets": [0, 200]},
                         "b": {"dtype": "BF16", "shape": [5], "data_offsets": [200, 210]}}).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 210)
    assert facts_from_path(tmp_path).checkpoint_bytes == 210
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 16060522496}}))
    assert facts_from_path(tmp_path).checkpoint_bytes == 16060522496
    with pytest.raises(SweepdeckError, match="not valid JSON"):
        (tmp_path / "broken.json").write_text("{nope")
        facts_from_path(tmp_path / "broken.json")


def test_unknown_model_says_how_to_give_facts(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(SweepdeckError) as err:
        load_facts("org/unknown-model")
    assert "No architecture facts for 'org/unknown-model'" in err.value.message
    assert "--model-config" in err.value.hint


def test_local_hugging_face_cache_is_read(tmp_path, monkeypatch):
    snap = tmp_path / "hub" / "models--org--tiny" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps({"hidden_size": 256, "num_hidden_layers": 4,
                                                  "num_attention_heads": 4, "vocab_size": 1000}))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert hf_cache_dirs("org/tiny") == [snap]
    assert load_facts("org/tiny").layers == 4


# ------------------------------------------------------------------ weights


def _llama_tp2_params() -> float:
    h, inter, kv_rank, layers = 4096, 14336, 4, 32
    per_layer = (h * 4096 / 2) + 2 * h * 128 * kv_rank + (4096 * h / 2) + 3 * h * inter / 2 + 2 * h
    return layers * per_layer + 2 * 128256 * h / 2 + h


def test_weights_dense_gqa_by_hand():
    facts = load_facts(LLAMA)
    rope = 131072 * 128 * 2  # the cos/sin cache of 131072 positions, bf16
    one = weight_bytes(facts, tp=1, stage=Stage(0, 0, 32, True, True), dtype_bytes=2, quant=None)
    assert one == 8_030_261_248 * 2 + rope
    assert one / GIB == pytest.approx(14.99, abs=0.005)  # vLLM: "Model loading took 14.99 GiB memory"
    two = weight_bytes(facts, tp=2, stage=Stage(0, 0, 32, True, True), dtype_bytes=2, quant=None)
    assert two == pytest.approx(_llama_tp2_params() * 2 + rope)
    assert two / GIB == pytest.approx(7.51, abs=0.005)


def test_weights_dtype_and_quantization():
    f32 = plan(req(max_model_len=8192, dtype="float32"))
    assert f32.weights_gib == pytest.approx(29.98, abs=0.01)  # vLLM's --dtype float32 run: 29.98
    fp8 = plan(req(max_model_len=8192, quantization="fp8"))
    # linear layers at 1 byte, embedding + LM head (2 x 128256 x 4096) stay bf16
    linear = 8_030_261_248 - 2 * 128256 * 4096 - 65 * 4096
    assert fp8.weights_gib * GIB == pytest.approx(linear + (2 * 128256 * 4096 + 65 * 4096) * 2 + 131072 * 128 * 2)
    assert fp8.weights_gib == pytest.approx(8.49, abs=0.01)  # vLLM's --quantization fp8 run: 8.49
    assert quant_bytes(facts_from_config({"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1,
                                          "vocab_size": 8, "quantization_config": {"quant_method": "awq", "bits": 4,
                                                                                   "group_size": 128}}).quantization,
                       2) == pytest.approx(0.5 + 2.5 / 128)
    gptq = plan(req(max_model_len=8192, quantization="gptq", dtype="float16"))
    assert gptq.weights_gib == pytest.approx(5.38, rel=0.01)  # RedHatAI w4a16 (GPTQ) of the same model: 5.38


def test_pipeline_stages_follow_vllm():
    assert [s.layers for s in pp_stages(32, 2)] == [16, 16]
    assert [s.layers for s in pp_stages(61, 4)] == [15, 15, 16, 15]  # remainder before the last stage
    stages = pp_stages(32, 4)
    assert stages[0].first and stages[-1].last and not stages[1].first


# ------------------------------------------------------------------ activation and non-torch


def test_activation_is_the_sampler_peak_and_tp_independent():
    r = req(max_model_len=8192)
    b = 2
    rows, tokens, vocab, hidden = 1024, 8192, 128256, 4096
    by_hand = (rows * vocab * (b + 4 + 4 + 4) + 132 * vocab * 4 + tokens * hidden * b + 2 * rows * hidden * b
               + DEFAULT.activation_const * GIB)
    last = Stage(0, 0, 32, True, True)
    assert activation_bytes(r, last, "bfloat16", DEFAULT) == pytest.approx(by_hand)
    assert by_hand / GIB == pytest.approx(1.89, abs=0.01)  # vLLM: "torch peak memory increase: 1.89GiB"
    assert activation_bytes(replace(r, tp=4), last, "bfloat16", DEFAULT) == pytest.approx(by_hand)
    fewer = activation_bytes(replace(r, max_num_seqs=256), last, "bfloat16", DEFAULT)
    assert fewer < by_hand / 2  # the sampler scales with max_num_seqs


def test_moe_workspace_by_hand():
    r = req("mistralai/Mixtral-8x7B-Instruct-v0.1", tp=2, max_model_len=8192)
    # 8192 tokens x top-2 x (max(14336/2, 4096) + max(2 x 14336/2, 4096)) x bf16
    assert moe_workspace_bytes(r, "bfloat16") == 8192 * 2 * (7168 + 14336) * 2
    p = plan(r)
    assert p.activation_gib == pytest.approx(1.21, abs=0.02)  # vLLM's Mixtral TP 2 run: 1.21 GiB


def test_non_torch_grows_with_tp():
    assert plan(req(max_model_len=8192)).non_torch_gib == pytest.approx(0.245)
    assert plan(req(max_model_len=8192, tp=2)).non_torch_gib == pytest.approx(2.065)
    assert plan(req(max_model_len=8192, tp=4)).non_torch_gib == pytest.approx(2.065 + 2 * 0.033)


def test_requested_budget_is_physical_times_utilization():
    p = plan(req(max_model_len=8192, gpu_memory_utilization=0.95))
    assert p.requested_gib * GIB == math.ceil(79.19 * GIB * 0.95)
    assert p.kv_cache_gib == pytest.approx(p.requested_gib - p.weights_gib - p.activation_gib - p.non_torch_gib)


def test_cuda_graph_capture_sizes():
    assert capture_sizes(req(max_model_len=8192)) == 51  # PIECEWISE=51 (largest=512) in the reference logs
    assert capture_sizes(req("openai/gpt-oss-20b", max_model_len=8192)) == 83  # gpt-oss captures up to 1024
    assert plan(req(max_model_len=8192, enforce_eager=True)).cuda_graph_gib == 0


# ------------------------------------------------------------------ KV cache by family


def test_kv_dense_gqa_blocks_tokens_concurrency():
    p = plan(req(max_model_len=8192, gpu_memory_utilization=0.95))
    page = 2 * 16 * 8 * 128 * 2  # one block, one layer: K and V, 8 KV heads, bf16
    assert p.kv_bytes_per_token == 32 * page / 16 == 128 * 1024
    assert p.kv_cache_blocks == int(p.kv_cache_gib * GIB // page // 32)
    assert p.kv_cache_tokens == p.kv_cache_blocks * 16
    assert p.max_concurrency == pytest.approx(p.kv_cache_blocks / (8192 / 16))
    tp2 = plan(req(max_model_len=8192, tp=2))
    assert tp2.kv_bytes_per_token == 64 * 1024  # 4 KV heads per GPU


def test_kv_fp8_halves_bytes_per_token():
    auto = plan(req(max_model_len=8192, gpu_memory_utilization=0.95))
    fp8 = plan(req(max_model_len=8192, gpu_memory_utilization=0.95, kv_cache_dtype="fp8"))
    assert fp8.kv_bytes_per_token == auto.kv_bytes_per_token / 2
    assert fp8.kv_cache_gib == auto.kv_cache_gib  # the pool is the same size
    # vLLM v0.19 with --kv-cache-dtype fp8 on this model and GPU: "GPU KV cache size: 952,032 tokens"
    assert fp8.kv_cache_tokens == pytest.approx(952_032, rel=0.05)
    assert fp8.kv_cache_tokens == pytest.approx(952_032, abs=64)


def test_kv_mla_is_one_latent_not_split_by_tp():
    f = load_facts("deepseek-ai/DeepSeek-V2-Lite-Chat")
    assert f.family == "MLA + MoE"
    one = plan(req("deepseek-ai/DeepSeek-V2-Lite-Chat", max_model_len=8192, gpu_memory_utilization=0.95))
    assert one.block_size == 64  # FlashMLA on Hopper
    assert one.kv_bytes_per_token == 27 * (512 + 64) * 2  # 27 layers x (kv_lora_rank + rope dim) x bf16
    two = plan(req("deepseek-ai/DeepSeek-V2-Lite-Chat", max_model_len=8192, tp=2))
    assert two.kv_bytes_per_token == one.kv_bytes_per_token
    # vLLM's run (TP 1, 0.95): 43.61 GiB, 1,505,552 tokens
    assert one.kv_cache_tokens == pytest.approx(1_505_552, rel=0.01)


def test_kv_sliding_window_hybrid_groups():
    facts = load_facts("openai/gpt-oss-20b")
    assert facts.layer_kinds[:4] == ("sliding", "full", "sliding", "full") and facts.sliding_window == 128
    p = plan(req("openai/gpt-oss-20b", tp=2, max_model_len=8192, gpu_memory_utilization=0.9))
    # 12 sliding + 12 full layers: 2 groups of 12. A request of 8192 tokens needs 512 full blocks and
    # cdiv(min(128 - 1 + 8192, 8192), 16) + 1 = 513 sliding blocks.
    assert p.max_concurrency == pytest.approx(p.kv_cache_blocks / (512 + 513))
    assert p.kv_cache_tokens == p.kv_cache_blocks // 2 * 16
    # vLLM's run (TP 2, 0.9): 2,591,776 tokens, 316.07x
    assert p.kv_cache_tokens == pytest.approx(2_591_776, rel=0.02)
    assert p.max_concurrency == pytest.approx(316.07, rel=0.02)


def test_kv_gemma2_alternating_and_llama4_chunked_groups():
    gemma = load_facts("google/gemma-2-9b-it")
    assert gemma.layer_kinds[:3] == ("sliding", "full", "sliding")
    scout = load_facts("meta-llama/Llama-4-Scout-17B-16E-Instruct")
    assert scout.layer_kinds.count("chunked") == 36 and scout.layer_kinds.count("full") == 12
    groups = group_layers([LayerSpec(k, 4096, 8192 if k == "chunked" else 0) for k in scout.layer_kinds])
    assert len(groups.groups) == 4 and all(len(idx) == 12 for _, idx in groups.groups)
    assert groups.blocks_per_request(8192, 8192, 16) == 4 * 512
    p = plan(req("meta-llama/Llama-4-Scout-17B-16E-Instruct", tp=4, max_model_len=8192, gpu_memory_utilization=0.95))
    assert p.kv_cache_tokens == p.kv_cache_blocks // 4 * 16


def test_grouping_uses_the_larger_count_when_types_are_close():
    specs = [LayerSpec("sliding", 10, 128)] * 12 + [LayerSpec("full", 10)] * 13
    groups = group_layers(specs)
    assert [len(idx) for _, idx in groups.groups] == [12, 13]  # gpt-oss + eagle: 13 per group, not 12


# ------------------------------------------------------------------ problems, in vLLM's words


def test_kv_too_small_for_one_request_with_vllm_estimate():
    p = plan(req(gpu=resolve_gpu("A40"), max_model_len=131072, gpu_memory_utilization=0.5))
    assert not p.fits and p.problems[0].code == "kv-too-small"
    message = p.problems[0].message
    assert "with the models's max seq len (131072), (16.00 GiB KV cache is needed" in message
    assert "which is larger than the available KV cache memory" in message
    estimate = int(message.split("estimated maximum model length is ")[1].split(".")[0])
    assert estimate == p.kv_cache_blocks * 16  # one request may use every block
    fixed = [s for s in p.suggestions if "max_model_len" in s.changes][0]
    assert fixed.changes["max_model_len"] == estimate
    assert plan(req(gpu=resolve_gpu("A40"), max_model_len=estimate, gpu_memory_utilization=0.5)).fits
    assert summary_line(p).startswith("does not fit: one request of 131072 tokens needs 16.00 GiB")


def test_shape_problems_use_vllm_wording():
    heads = plan(req("Qwen/Qwen3-14B", tp=3, max_model_len=8192))
    assert heads.problems[0].message == (
        "ValueError: Total number of attention heads (40) must be divisible by tensor parallel size (3).")
    vocab = plan(req("Qwen/Qwen3-14B", tp=5, max_model_len=8192))
    assert vocab.problems[0].message == "AssertionError: 151936 is not divisible by 5"  # the real failed run
    assert vocab.suggestions[0].changes == {"tp": 1}  # the smallest TP that fits (and divides 40 and 151936)
    long = plan(req("meta-llama/Llama-2-7b-hf", max_model_len=8192))
    assert "User-specified max_model_len (8192) is greater than the derived max_model_len" in long.problems[0].message
    gpus = plan(req(max_model_len=8192, dp=2, gpus_available=1))
    assert gpus.problems[0].code == "gpus" and "DP adjusted local rank 1 is out of bounds" in gpus.problems[0].message


def test_memory_problems():
    a40 = resolve_gpu("A40")
    weights = plan(req("meta-llama/Llama-3.3-70B-Instruct", gpu=a40, max_model_len=8192))
    assert weights.problems[0].code == "weights-oom"
    assert "Failed to load model - not enough GPU memory" in weights.problems[0].message
    assert weights.suggestions and weights.suggestions[0].changes == {"tp": 4}
    none = plan(req("meta-llama/Llama-3.3-70B-Instruct", gpu=resolve_gpu("H100"), tp=2, max_model_len=8192,
                    gpu_memory_utilization=0.85))
    assert none.problems[0].code == "no-kv-memory"
    assert none.problems[0].message.startswith("ValueError: No available memory for the cache blocks.")
    free = plan(req(max_model_len=8192, gpu_memory_utilization=0.999))
    assert free.problems[0].code == "free-memory"
    assert "is less than desired GPU memory utilization" in free.problems[0].message
    tight = plan(req(max_model_len=8192, gpu_memory_utilization=0.985))
    assert tight.problems[0].code == "warmup-oom"
    assert "CUDA out of memory occurred when warming up sampler with 1024 dummy requests" in tight.problems[0].message
    lower = [s for s in tight.suggestions if "gpu_memory_utilization" in s.changes][0]
    assert lower.changes["gpu_memory_utilization"] < 0.985


def test_suggestions_all_fit_and_a_fitting_plan_has_none():
    bad = plan(req("meta-llama/Llama-3.3-70B-Instruct", gpu=resolve_gpu("A100-80GB"), tp=2, max_model_len=131072))
    assert bad.suggestions
    for s in bad.suggestions:
        fixed = replace(bad.request, **s.changes)
        assert plan(fixed, advise=False).fits, s
    assert plan(req(max_model_len=8192)).suggestions == ()


def test_concurrency_warning_and_json_keys():
    p = plan(req(max_model_len=8192, gpu_memory_utilization=0.95))
    assert p.fits and any("below max_num_seqs 1024" in w for w in p.warnings)
    data = p.to_dict()
    for key in ("weights_gib", "activation_gib", "non_torch_gib", "kv_cache_gib", "kv_cache_tokens",
                "max_concurrency", "fits", "problems"):
        assert key in data
    assert json.loads(json.dumps(data))["kv_cache_tokens"] == p.kv_cache_tokens
    assert summary_line(p) == "fits: weights 15.0 GiB · KV 58.1 GiB → 476k tokens → 58× at 8192"


def test_tokens_text():
    assert [tokens_text(n) for n in (912, 476016, 1044688, 12_500_000)] == ["912", "476k", "1.04M", "12.5M"]


def test_bad_settings_are_one_line_errors():
    for kw, text in (({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization must be in (0, 1]"),
                     ({"dtype": "int3"}, "Unknown dtype 'int3'"),
                     ({"kv_cache_dtype": "fp4"}, "Unknown kv-cache-dtype 'fp4'"),
                     ({"quantization": "magic"}, "Unknown quantization 'magic'"),
                     ({"tp": 0}, "tp must be a positive integer")):
        with pytest.raises(SweepdeckError, match=text.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            plan(req(max_model_len=8192, **kw))


def test_calibration_fit_recovers_constants():
    obs = [Observation(1, 1.9, 1.86, 0.25), Observation(2, 1.9, 1.86, 2.07), Observation(4, 1.9, 1.86, 2.13)]
    cal = fit(obs)
    assert cal.activation_const == pytest.approx(0.04)
    assert cal.non_torch_single == 0.25 and cal.non_torch_multi == 2.07
    assert cal.non_torch_per_rank == pytest.approx(0.03)
