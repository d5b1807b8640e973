"""The memory plan: vLLM v0.19's startup accounting, term by term, before any GPU is allocated.

How vLLM sizes memory (``vllm/v1/worker/gpu_worker.py`` ``determine_available_memory``
and ``vllm/utils/mem_utils.py`` ``memory_profiling``)::

    requested   = ceil(total_memory x gpu_memory_utilization)    # physical memory, not 80 GiB
    non_kv      = weights + torch peak increase (activation) + non-torch increase
    KV cache    = requested - non_kv                              # "Available KV cache memory"
    CUDA graphs : captured afterwards, outside ``requested`` (v0.19 does not subtract them)

The activation peak is the profile run: a forward pass of ``max_num_batched_tokens``
tokens, then the sampler on ``min(max_num_seqs, max_num_batched_tokens)`` rows of
logits. For most models the sampler is the peak and it does not shrink with TP
(the logits are gathered): model-dtype logits + their float32 copy + softmax
probabilities + the exponential noise (2+4+4+4 bytes per vocabulary entry and row),
plus the Triton top-k/top-p buffer (``min(SMs, rows) x vocab`` float32), plus the
profile run's hidden states. MoE models add the fused-MoE workspaces the runner
keeps (``tokens x top_k x max(intermediate/TP, hidden)`` and
``tokens x top_k x max(2 x intermediate/TP, hidden)``).

Every startup failure vLLM can have for memory or shape reasons is checked and
reported with vLLM's own wording (:class:`Problem`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from config.errors import SweepdeckError
from config.planner import kvcache
from config.planner.calibration import DEFAULT, Calibration
from config.planner.facts import DTYPE_BYTES, ModelFacts, Quantization
from config.planner.gpus import Gpu
from config.planner.weights import GIB, Stage, padded_vocab, pp_stages, weight_bytes

DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
KV_DTYPES = ("auto", "bfloat16", "float16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "fp8_ds_mla")
QUANTIZATIONS = ("fp8", "fbgemm_fp8", "awq", "awq_marlin", "gptq", "gptq_marlin", "compressed-tensors",
                 "bitsandbytes", "mxfp4", "experts_int8", "int8")
CONSERVING = "See https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more details."


@dataclass(frozen=True, slots=True)
class PlanRequest:
    """What to plan: a model, a GPU and vLLM's engine settings (None = vLLM's default)."""

    facts: ModelFacts
    gpu: Gpu
    tp: int = 1
    pp: int = 1
    dp: int = 1
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    dtype: str = "auto"
    kv_cache_dtype: str = "auto"
    quantization: str | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    gpus_available: int | None = None
    enforce_eager: bool = False
    block_size: int | None = None

    @property
    def world(self) -> int:
        return self.tp * self.pp

    def resolved_max_model_len(self) -> int:
        return self.max_model_len or self.facts.max_position

    def batch_defaults(self) -> tuple[int, int]:
        """(max_num_seqs, max_num_batched_tokens) as vLLM's OpenAI server resolves them."""
        seqs, tokens = (1024, 8192) if self.gpu.large_defaults else (256, 2048)
        tokens = self.max_num_batched_tokens or min(tokens, (self.max_num_seqs or seqs) * self.resolved_max_model_len())
        seqs = self.max_num_seqs or min(seqs, tokens)
        return seqs, tokens


@dataclass(frozen=True, slots=True)
class Problem:
    """A reason the configuration cannot start.

    Args:
        code: Stable id (``kv-too-small``, ``weights-oom``, ``tp-heads``...).
        summary: Short reason for a one-line verdict.
        message: What vLLM itself says (its own wording, numbers filled in).
    """

    code: str
    summary: str
    message: str


@dataclass(frozen=True, slots=True)
class Suggestion:
    """A nearby configuration that fits: the settings to change and what it gives."""

    label: str
    changes: dict[str, Any]
    detail: str
    kv_cache_tokens: int = 0
    max_concurrency: float = 0.0


@dataclass(frozen=True, slots=True)
class Plan:
    """The predicted startup of one vLLM server (per GPU; the worst pipeline stage)."""

    request: PlanRequest
    physical_gib: float
    requested_gib: float
    weights_gib: float
    activation_gib: float
    non_torch_gib: float
    kv_cache_gib: float
    kv_cache_tokens: int
    kv_cache_blocks: int
    max_concurrency: float
    cuda_graph_gib: float
    context_gib: float
    headroom_gib: float
    block_size: int
    kv_bytes_per_token: float
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    dtype: str
    kv_cache_dtype: str
    problems: tuple[Problem, ...] = ()
    warnings: tuple[str, ...] = ()
    suggestions: tuple[Suggestion, ...] = field(default=())

    @property
    def fits(self) -> bool:
        return not self.problems

    @property
    def non_kv_gib(self) -> float:
        return self.weights_gib + self.activation_gib + self.non_torch_gib

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; the keys ``sweepdeck plan --json`` promises."""
        r = self.request
        return {
            "model": r.facts.model_id,
            "architecture": r.facts.architecture,
            "family": r.facts.family,
            "gpu": r.gpu.name,
            "tp": r.tp, "pp": r.pp, "dp": r.dp,
            "max_model_len": self.max_model_len,
            "gpu_memory_utilization": r.gpu_memory_utilization,
            "dtype": self.dtype,
            "kv_cache_dtype": self.kv_cache_dtype,
            "quantization": r.quantization or (r.facts.quantization.method if r.facts.quantization else None),
            "max_num_seqs": self.max_num_seqs,
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "physical_gib": round(self.physical_gib, 2),
            "requested_gib": round(self.requested_gib, 2),
            "weights_gib": round(self.weights_gib, 2),
            "activation_gib": round(self.activation_gib, 2),
            "non_torch_gib": round(self.non_torch_gib, 2),
            "kv_cache_gib": round(self.kv_cache_gib, 2),
            "kv_cache_tokens": self.kv_cache_tokens,
            "kv_cache_blocks": self.kv_cache_blocks,
            "block_size": self.block_size,
            "kv_bytes_per_token": round(self.kv_bytes_per_token, 1),
            "max_concurrency": round(self.max_concurrency, 2),
            "cuda_graph_gib": round(self.cuda_graph_gib, 2),
            "headroom_gib": round(self.headroom_gib, 2),
            "fits": self.fits,
            "problems": [{"code": p.code, "reason": p.summary, "vllm_message": p.message} for p in self.problems],
            "warnings": list(self.warnings),
            "suggestions": [
                {"label": s.label, "changes": s.changes, "detail": s.detail,
                 "kv_cache_tokens": s.kv_cache_tokens, "max_concurrency": round(s.max_concurrency, 2)}
                for s in self.suggestions
            ],
        }


# ---------------------------------------------------------------- settings → bytes


def resolve_dtype(request: PlanRequest) -> str:
    """vLLM's ``--dtype``: ``auto`` takes the checkpoint's, float32 checkpoints run in bfloat16."""
    dtype = {"half": "float16", "float": "float32"}.get(request.dtype, request.dtype)
    if dtype != "auto":
        return dtype
    native = request.facts.dtype if request.facts.dtype in DTYPE_BYTES else "bfloat16"
    if native == "float32":
        native = "bfloat16"
    if native == "bfloat16" and not request.gpu.supports_bf16:
        return "float16"
    return native


def kv_bytes(request: PlanRequest, dtype: str) -> float:
    kv = request.kv_cache_dtype
    if kv.startswith("fp8"):
        return 1.0
    if kv in ("auto", "") or kv is None:
        return float(DTYPE_BYTES[dtype])
    return float(DTYPE_BYTES.get(kv, DTYPE_BYTES[dtype]))


def quantization_of(request: PlanRequest) -> Quantization | None:
    """The runtime ``--quantization`` (online FP8/INT8 of linear layers) or the checkpoint's own."""
    q = request.quantization
    if q and q.lower() not in ("none", ""):
        q = q.lower()
        if q in ("fp8", "fbgemm_fp8", "experts_int8", "int8"):
            return Quantization(q, 8)
        if q in ("awq", "awq_marlin", "gptq", "gptq_marlin"):
            ckpt = request.facts.quantization
            return ckpt if ckpt and ckpt.bits < 8 else Quantization(q.split("_")[0], 4, 128)
        if q == "mxfp4":
            return Quantization("mxfp4", 4, 32, experts_only=True)
        return request.facts.quantization or Quantization(q, 8)
    return request.facts.quantization


def block_size_of(request: PlanRequest) -> int:
    """vLLM's default block size: 16; MLA on Hopper uses FlashMLA's 64."""
    if request.block_size:
        return request.block_size
    if request.facts.is_mla and request.gpu.compute_capability.startswith("9.0"):
        return 64
    return 16


def activation_bytes(request: PlanRequest, stage: Stage, dtype: str, cal: Calibration) -> float:
    """The profile run's torch peak increase on one GPU of ``stage``."""
    f = request.facts
    b = DTYPE_BYTES[dtype]
    seqs, tokens = request.batch_defaults()
    rows = min(seqs, tokens)
    hidden_states = tokens * f.hidden * b + 2 * rows * f.hidden * b
    inter = (f.dense_intermediate if f.is_moe else f.intermediate) / request.tp
    forward = tokens * inter * (3 if f.gated_mlp else 2) * b + 3 * tokens * f.hidden * b
    peak = forward
    if stage.last:
        logits = rows * f.vocab * (b + (4 if b != 4 else 0) + 4 + 4)
        triton = min(request.gpu.sms, rows) * f.vocab * 4 if rows >= 8 else 0
        peak = max(forward, hidden_states + logits + triton)
    return peak + moe_workspace_bytes(request, dtype) + cal.activation_const * GIB


def moe_workspace_bytes(request: PlanRequest, dtype: str) -> float:
    """The fused-MoE workspaces the model runner keeps after the profile run (Triton experts path)."""
    f = request.facts
    quant = quantization_of(request)
    if not f.is_moe or (quant is not None and quant.method == "mxfp4"):
        return 0.0
    _, tokens = request.batch_defaults()
    inter = f.moe_intermediate / request.tp
    k = f.experts_per_token
    act_width = 2 if quant is not None and quant.bits == 8 else DTYPE_BYTES[dtype]
    return tokens * k * (max(inter, f.hidden) + max(2 * inter, f.hidden)) * act_width


def layer_specs(request: PlanRequest, dtype: str, block: int) -> list[kvcache.LayerSpec]:
    f = request.facts
    bytes_ = kv_bytes(request, dtype)
    if f.is_mla:
        page = kvcache.page_bytes("mla", block=block, kv_heads=1, head_dim=0, kv_bytes=bytes_,
                                  latent_dim=f.kv_lora_rank + f.qk_rope_dim)
        if request.kv_cache_dtype == "fp8_ds_mla":
            page = block * 656
        return [kvcache.LayerSpec("mla", page) for _ in range(f.layers)]
    heads = max(1, f.kv_heads // request.tp)
    page = kvcache.page_bytes("full", block=block, kv_heads=heads, head_dim=f.head_dim, kv_bytes=bytes_)
    window = {"sliding": f.sliding_window or 0, "chunked": f.chunk_size or 0}
    return [kvcache.LayerSpec(kind, page, window.get(kind, 0)) for kind in f.layer_kinds or ("full",) * f.layers]


def capture_sizes(request: PlanRequest) -> int:
    """How many batch sizes vLLM captures CUDA graphs for (PIECEWISE=N in its log).

    Sizes 1, 2, 4, then every 8 up to 256, then every 16 up to
    ``max_cudagraph_capture_size`` = min(2 x max_num_seqs, 512); gpt-oss raises it to 1024.
    """
    seqs, _ = request.batch_defaults()
    largest = 1024 if request.facts.model_type == "gpt_oss" else min(2 * seqs, 512)
    sizes = [s for s in (1, 2, 4) if s <= largest]
    sizes += list(range(8, min(largest, 256) + 1, 8))
    sizes += list(range(272, largest + 1, 16))
    return len(sizes)


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True, slots=True)
class _StagePlan:
    stage: Stage
    weights: float
    activation: float
    non_torch: float
    kv: float


def _stage_plans(request: PlanRequest, dtype: str, requested: float, cal: Calibration) -> list[_StagePlan]:
    quant = quantization_of(request)
    out = []
    for stage in pp_stages(request.facts.layers, request.pp):
        weights = weight_bytes(request.facts, tp=request.tp, stage=stage, dtype_bytes=DTYPE_BYTES[dtype], quant=quant)
        act = activation_bytes(request, stage, dtype, cal)
        nt = cal.non_torch(request.tp, request.pp, stage.last) * GIB
        out.append(_StagePlan(stage, weights, act, nt, requested - weights - act - nt))
    return out


def plan(request: PlanRequest, cal: Calibration = DEFAULT, *, advise: bool = True) -> Plan:
    """Predict vLLM's startup for ``request``; with ``advise``, add the nearest fitting configurations.

    Raises:
        SweepdeckError: a setting is out of range (utilization, dtype...).
    """
    _validate(request)
    f = request.facts
    dtype = resolve_dtype(request)
    block = block_size_of(request)
    physical = request.gpu.memory_gib * GIB
    requested = math.ceil(physical * request.gpu_memory_utilization)
    stages = _stage_plans(request, dtype, requested, cal)
    groups = kvcache.group_layers(layer_specs(request, dtype, block))
    max_len = request.resolved_max_model_len()
    seqs, tokens = request.batch_defaults()
    layouts = [kvcache.layout(groups, range(s.stage.first_layer, s.stage.last_layer), s.kv, block=block,
                              max_model_len=max_len, batched_tokens=tokens) for s in stages]
    worst = min(range(len(stages)), key=lambda i: layouts[i].num_blocks)
    s, lay = stages[worst], layouts[worst]
    blocks = min(x.num_blocks for x in layouts)
    per_request = groups.blocks_per_request(max_len, tokens, block)
    context = cal.context(request.world, f.is_moe)
    graphs = cal.cudagraph(s.stage.layers, f.hidden, request.tp, f.is_moe, request.enforce_eager,
                           capture_sizes(request))
    headroom = physical / GIB - context - requested / GIB - graphs
    result = Plan(
        request=request, physical_gib=physical / GIB, requested_gib=requested / GIB,
        weights_gib=s.weights / GIB, activation_gib=s.activation / GIB, non_torch_gib=s.non_torch / GIB,
        kv_cache_gib=s.kv / GIB, kv_cache_tokens=blocks // len(groups.groups) * block, kv_cache_blocks=blocks,
        max_concurrency=blocks / per_request if per_request else 0.0, cuda_graph_gib=graphs, context_gib=context,
        headroom_gib=headroom, block_size=block, kv_bytes_per_token=lay.per_token_bytes, max_model_len=max_len,
        max_num_seqs=seqs, max_num_batched_tokens=tokens, dtype=dtype,
        kv_cache_dtype=dtype if request.kv_cache_dtype == "auto" else request.kv_cache_dtype,
    )
    problems = _problems(result, stages, layouts, groups, cal)
    result = replace(result, problems=tuple(problems))
    result = replace(result, warnings=tuple(_warnings(result)))
    if advise and problems:
        from config.planner.advice import nearest_fits

        result = replace(result, suggestions=tuple(nearest_fits(result, cal)))
    return result


def _validate(request: PlanRequest) -> None:
    for name in ("tp", "pp", "dp"):
        value = getattr(request, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SweepdeckError(f"{name} must be a positive integer, got {value!r}.", f"Example: --{name} 2")
    if not 0 < request.gpu_memory_utilization <= 1:
        raise SweepdeckError(
            f"gpu_memory_utilization must be in (0, 1], got {request.gpu_memory_utilization!r}.",
            "Example: --gpu-memory-utilization 0.9",
        )
    if request.max_model_len is not None and request.max_model_len < 1:
        raise SweepdeckError(f"max_model_len must be a positive integer, got {request.max_model_len!r}.")
    dtype = {"half": "float16", "float": "float32"}.get(request.dtype, request.dtype)
    if dtype != "auto" and dtype not in DTYPE_BYTES:
        raise SweepdeckError(f"Unknown dtype {request.dtype!r}.", "Choose one of: " + ", ".join(DTYPES))
    if request.kv_cache_dtype not in KV_DTYPES:
        raise SweepdeckError(f"Unknown kv-cache-dtype {request.kv_cache_dtype!r}.",
                             "Choose one of: " + ", ".join(KV_DTYPES))
    if request.quantization and request.quantization.lower() not in (*QUANTIZATIONS, "none"):
        raise SweepdeckError(f"Unknown quantization {request.quantization!r}.",
                             "Choose one of: " + ", ".join(QUANTIZATIONS))


# ---------------------------------------------------------------- problems


def _gib(value: float) -> str:
    return f"{value / GIB:.2f}"


def _shape_problems(p: Plan) -> list[Problem]:
    r, f = p.request, p.request.facts
    out = []
    gpus = r.gpus_available if r.gpus_available is not None else r.tp * r.pp * r.dp
    if r.tp * r.pp * r.dp > gpus:
        out.append(Problem(
            "gpus", f"TP {r.tp} x PP {r.pp} x DP {r.dp} = {r.tp * r.pp * r.dp} GPUs, but the request has {gpus}",
            f"AssertionError: DP adjusted local rank {gpus} is out of bounds. ",
        ))
    if f.heads % r.tp:
        out.append(Problem(
            "tp-heads", f"TP {r.tp} does not divide the {f.heads} attention heads",
            f"ValueError: Total number of attention heads ({f.heads}) must be divisible by tensor parallel "
            f"size ({r.tp}).",
        ))
    elif padded_vocab(f.vocab) % r.tp:
        out.append(Problem(
            "tp-vocab", f"TP {r.tp} does not divide the vocabulary ({padded_vocab(f.vocab)} padded)",
            f"AssertionError: {padded_vocab(f.vocab)} is not divisible by {r.tp}",
        ))
    if f.layers < r.pp:
        out.append(Problem("pp-layers", f"PP {r.pp} is more than the {f.layers} layers",
                           f"ValueError: pipeline_parallel_size ({r.pp}) > num_hidden_layers ({f.layers})"))
    if r.max_model_len and r.max_model_len > f.max_position:
        out.append(Problem(
            "max-model-len", f"max_model_len {r.max_model_len} is above the model's {f.max_position}",
            f"Value error, User-specified max_model_len ({r.max_model_len}) is greater than the derived max_model_len "
            f"(max_position_embeddings={float(f.max_position)} or model_max_length=None in model's config.json). "
            "To allow overriding this maximum, set the env var VLLM_ALLOW_LONG_MAX_MODEL_LEN=1.",
        ))
    if p.dtype == "bfloat16" and not r.gpu.supports_bf16:
        out.append(Problem(
            "bf16", f"{r.gpu.name} (compute capability {r.gpu.compute_capability}) has no bfloat16",
            "ValueError: Bfloat16 is only supported on GPUs with compute capability of at least 8.0. "
            "You can use float16 instead by explicitly setting the `dtype` flag in CLI, for example: --dtype=half.",
        ))
    return out


def _problems(p: Plan, stages: list[_StagePlan], layouts: list[kvcache.KvLayout], groups: kvcache.Groups,
              cal: Calibration) -> list[Problem]:
    out = _shape_problems(p)
    if any(x.code in ("tp-heads", "tp-vocab", "pp-layers", "gpus") for x in out):
        return out  # vLLM stops before it allocates anything
    r = p.request
    free = p.physical_gib - p.context_gib
    if free < p.requested_gib:
        out.append(Problem(
            "free-memory", f"only {free:.2f} GiB free after the CUDA context, {p.requested_gib:.2f} GiB requested",
            f"ValueError: Free memory on device cuda:0 ({free:.2f}/{p.physical_gib:.2f} GiB) on startup is less than "
            f"desired GPU memory utilization ({r.gpu_memory_utilization}, {p.requested_gib:.2f} GiB). "
            "Decrease GPU memory utilization or reduce GPU memory used by other processes.",
        ))
        return out
    worst = max(stages, key=lambda s: s.weights)
    if worst.weights / GIB > free:
        out.append(Problem(
            "weights-oom", f"weights {worst.weights / GIB:.1f} GiB per GPU do not fit in {free:.1f} GiB",
            "Failed to load model - not enough GPU memory. Try lowering --gpu-memory-utilization to free memory for "
            "weights, increasing --tensor-parallel-size, or using --quantization. " + CONSERVING,
        ))
        return out
    out += _kv_problems(p, stages, layouts, groups)
    if not out and p.headroom_gib < cal.warmup_headroom:
        seqs = p.max_num_seqs
        out.append(Problem(
            "warmup-oom",
            f"only {p.headroom_gib:.2f} GiB left after the budget and CUDA graphs ({p.cuda_graph_gib:.2f} GiB)",
            f"RuntimeError: CUDA out of memory occurred when warming up sampler with {seqs} dummy requests. "
            "Please try lowering `max_num_seqs` or `gpu_memory_utilization` when initializing the engine.",
        ))
    return out


def _kv_problems(p: Plan, stages: list[_StagePlan], layouts: list[kvcache.KvLayout],
                 groups: kvcache.Groups) -> list[Problem]:
    r = p.request
    for s, lay in zip(stages, layouts, strict=True):
        if s.kv <= 0:
            return [Problem(
                "no-kv-memory",
                f"nothing left for the KV cache: weights {s.weights / GIB:.1f} + activation {s.activation / GIB:.1f} + "
                f"non-torch {s.non_torch / GIB:.1f} GiB exceed the {p.requested_gib:.1f} GiB budget",
                "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` "
                "when initializing the engine. " + CONSERVING,
            )]
        if lay.needed_bytes > s.kv:
            layers = range(s.stage.first_layer, s.stage.last_layer)
            _, tokens = r.batch_defaults()
            estimate = kvcache.estimate_max_len(groups, layers, s.kv, block=p.block_size,
                                                limit=p.max_model_len, batched_tokens=tokens)
            hint = (f"Based on the available memory, the estimated maximum model length is {estimate}. "
                    if estimate > 0 else "")
            return [Problem(
                "kv-too-small",
                f"one request of {p.max_model_len} tokens needs {_gib(lay.needed_bytes)} GiB of KV cache, "
                f"{_gib(s.kv)} GiB is left",
                f"ValueError: To serve at least one request with the models's max seq len ({p.max_model_len}), "
                f"({_gib(lay.needed_bytes)} GiB KV cache is needed, which is larger than the available KV cache "
                f"memory ({_gib(s.kv)} GiB). {hint}Try increasing `gpu_memory_utilization` or decreasing "
                f"`max_model_len` when initializing the engine. " + CONSERVING,
            )]
    return []


def _warnings(p: Plan) -> list[str]:
    out = []
    if p.fits and p.max_concurrency < p.max_num_seqs:
        out.append(
            f"max concurrency at {p.max_model_len} tokens is {p.max_concurrency:.1f}x, below max_num_seqs "
            f"{p.max_num_seqs}: requests that long will queue"
        )
    if p.fits and p.headroom_gib < 1.0:
        out.append(f"only {p.headroom_gib:.2f} GiB left outside vLLM's budget after CUDA graphs: start-up is tight")
    return out
