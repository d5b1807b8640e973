"""Weight memory per GPU: vLLM's "Model loading took X GiB memory".

Counted tensor by tensor from the architecture, the way vLLM shards them:

* vocabulary-parallel embedding and LM head (vocabulary padded to a multiple of 64,
  then split over TP); a tied LM head is the embedding;
* column/row-parallel attention and MLP projections split over TP; K/V heads are
  replicated when TP exceeds their number (each GPU keeps at least one);
* MLA's down-projections (``q_a_proj``, ``kv_a_proj_with_mqa``) and MoE routers are
  replicated; experts are split over TP along their intermediate size;
* norms are replicated; pipeline stages hold their own layers (vLLM's
  ``get_pp_indices`` split), the first the embedding, the last the final norm and
  LM head;
* the rotary cos/sin cache (max_position x rotary dim, in the model dtype) is on
  every GPU — 32 MiB for Llama 3.1, 2.5 GiB for Llama 4 Scout's 10M positions.

Quantized linear weights (``--quantization fp8``, FP8/INT8/AWQ/GPTQ/MXFP4
checkpoints) take their stored width plus scales; embeddings, LM head, norms and
routers stay in the model dtype, as vLLM keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from config.planner.facts import ModelFacts, Quantization

GIB = 1 << 30


@dataclass(frozen=True, slots=True)
class Stage:
    """The part of the model one pipeline stage holds."""

    index: int
    first_layer: int
    last_layer: int  # exclusive
    first: bool
    last: bool

    @property
    def layers(self) -> int:
        return self.last_layer - self.first_layer


def pp_stages(layers: int, pp: int) -> list[Stage]:
    """vLLM's ``get_pp_indices``: even split; the remainder goes to the stages before the last."""
    per = layers // pp
    parts = [per] * pp
    for i in range(2, layers % pp + 2):
        parts[-i] += 1
    stages, start = [], 0
    for i, n in enumerate(parts):
        stages.append(Stage(i, start, start + n, i == 0, i == pp - 1))
        start += n
    return stages


def quant_bytes(quant: Quantization | None, dtype_bytes: int) -> float:
    """Bytes per quantized weight, scales included."""
    if quant is None:
        return float(dtype_bytes)
    if quant.method == "mxfp4":
        return 0.5 + 1 / 32  # FP4 values + one E8M0 scale per 32
    if quant.bits >= 16:
        return float(dtype_bytes)
    value = quant.bits / 8
    if quant.group_size:
        value += (2 + quant.bits / 8) / quant.group_size  # fp16 scale (+ packed zero) per group
    return value


@dataclass(frozen=True, slots=True)
class WeightCount:
    """Parameters on one GPU, by how they are stored."""

    plain: float = 0.0      # always in the model dtype (embeddings, norms, routers, biases)
    linear: float = 0.0     # dense projections (quantizable)
    experts: float = 0.0    # MoE experts (quantizable; MXFP4 quantizes only these)

    def __add__(self, other: WeightCount) -> WeightCount:
        return WeightCount(self.plain + other.plain, self.linear + other.linear, self.experts + other.experts)

    @property
    def total(self) -> float:
        return self.plain + self.linear + self.experts


def _kv_heads_per_rank(f: ModelFacts, tp: int) -> int:
    return max(1, f.kv_heads // tp)


def attention_params(f: ModelFacts, tp: int) -> WeightCount:
    """One attention block on one GPU."""
    h = f.hidden
    if f.is_mla:
        qk = f.qk_nope_dim + f.qk_rope_dim
        if f.q_lora_rank:
            replicated = h * f.q_lora_rank + f.q_lora_rank
            split = f.q_lora_rank * f.heads * qk
        else:
            replicated, split = 0, h * f.heads * qk
        replicated += h * (f.kv_lora_rank + f.qk_rope_dim) + f.kv_lora_rank
        split += f.kv_lora_rank * f.heads * (f.qk_nope_dim + f.v_head_dim) + f.heads * f.v_head_dim * h
        return WeightCount(plain=0.0, linear=replicated + split / tp)
    q = h * f.heads * f.head_dim
    kv = 2 * h * f.head_dim * _kv_heads_per_rank(f, tp)
    o = f.heads * f.head_dim * h
    bias = 0.0
    if f.qkv_bias:
        bias += f.heads * f.head_dim / tp + 2 * f.head_dim * _kv_heads_per_rank(f, tp)
    if f.o_bias:
        bias += h
    if f.model_type == "gpt_oss":
        bias += f.heads / tp  # attention sinks
    if f.qk_norm:
        bias += 2 * f.head_dim
    return WeightCount(plain=bias, linear=(q + o) / tp + kv)


def mlp_params(f: ModelFacts, tp: int, layer: int) -> WeightCount:
    """One MLP or MoE block on one GPU."""
    h = f.hidden
    if f.is_moe and f.moe_layers and f.moe_layers[layer]:
        width = 3 if f.gated_mlp else 2
        experts = f.experts * width * h * f.moe_intermediate / tp
        router = h * f.experts
        extra = 0.0
        if f.model_type == "gpt_oss":
            extra = f.experts * (2 * f.moe_intermediate / tp + h) + f.experts  # expert and router biases
        shared = 3 * h * f.shared_intermediate / tp if f.shared_intermediate else 0.0
        if f.model_type == "qwen2_moe" and f.shared_intermediate:
            router += h  # shared_expert_gate
        return WeightCount(plain=router + extra, linear=shared, experts=experts)
    inter = f.dense_intermediate if f.is_moe and f.dense_intermediate else f.intermediate
    width = 3 if f.gated_mlp else 2
    bias = (inter / tp + h) if not f.gated_mlp else 0.0
    return WeightCount(plain=bias, linear=width * h * inter / tp)


def _scaled(count: WeightCount, n: int) -> WeightCount:
    return WeightCount(count.plain * n, count.linear * n, count.experts * n)


def padded_vocab(vocab: int) -> int:
    """vLLM pads the vocabulary to a multiple of 64 before splitting it."""
    return -(-vocab // 64) * 64


def stage_params(f: ModelFacts, tp: int, stage: Stage) -> WeightCount:
    """All parameters one GPU of ``stage`` holds."""
    return _stage_params(f, tp, stage)


@lru_cache(maxsize=256)
def _stage_params(f: ModelFacts, tp: int, stage: Stage) -> WeightCount:
    layer_kinds = [bool(f.moe_layers and f.moe_layers[i]) for i in range(stage.first_layer, stage.last_layer)]
    moe, dense = sum(layer_kinds), len(layer_kinds) - sum(layer_kinds)
    total = _scaled(attention_params(f, tp) + WeightCount(plain=2 * f.hidden), len(layer_kinds))
    if moe:
        total = total + _scaled(mlp_params(f, tp, layer_kinds.index(True) + stage.first_layer), moe)
    if dense:
        total = total + _scaled(mlp_params(f, tp, layer_kinds.index(False) + stage.first_layer), dense)
    embed = padded_vocab(f.vocab) * f.hidden / tp
    if stage.first:
        total = total + WeightCount(plain=embed)
    if stage.last:
        lm_head = 0.0 if (f.tie_embeddings and stage.first) else embed
        total = total + WeightCount(plain=lm_head + f.hidden)
    return total


def text_params(f: ModelFacts) -> float:
    """The language model's parameter count (TP 1, one stage), unpadded vocabulary."""
    count = stage_params(f, 1, Stage(0, 0, f.layers, True, True)).total
    return count - (padded_vocab(f.vocab) - f.vocab) * f.hidden * (1 if f.tie_embeddings else 2)


def other_params(f: ModelFacts) -> float:
    """Parameters the layer count does not cover (a vision tower), from the declared total."""
    if not f.params:
        return 0.0
    rest = f.params - text_params(f)
    return rest if rest > 0.01 * f.params else 0.0


def rope_cache_bytes(f: ModelFacts, dtype_bytes: int) -> float:
    """The rotary embedding's cos/sin cache: max_position x rotary dim, in the model dtype."""
    rotary = f.qk_rope_dim if f.is_mla else f.head_dim
    return float(f.max_position * rotary * dtype_bytes)


def mxfp4_padding(f: ModelFacts, tp: int) -> float:
    """How much vLLM's MXFP4 MoE kernels pad the expert weights.

    ``mxfp4_round_up_hidden_size_and_intermediate_size`` rounds the per-GPU
    intermediate size up to 64 (Triton kernels) and the hidden size to 256 (the
    Marlin/TRT-LLM/ROCm layouts; the Hopper swizzled layout measures alike).
    """
    inter = f.moe_intermediate / tp
    return (-(-inter // 64) * 64 / inter) * (-(-f.hidden // 256) * 256 / f.hidden)


def weight_bytes(f: ModelFacts, *, tp: int, stage: Stage, dtype_bytes: int, quant: Quantization | None) -> float:
    """Bytes of weights on one GPU of ``stage`` (what "Model loading took" reports)."""
    count = stage_params(f, tp, stage)
    if quant is not None and quant.method == "mxfp4" and f.is_moe:
        count = WeightCount(count.plain, count.linear, count.experts * mxfp4_padding(f, tp))
    width = quant_bytes(quant, dtype_bytes)
    linear_width = float(dtype_bytes) if quant is not None and quant.experts_only else width
    total = count.plain * dtype_bytes + count.linear * linear_width + count.experts * width
    if stage.first:
        total += other_params(f) / tp * dtype_bytes
    return total + rope_cache_bytes(f, dtype_bytes)
