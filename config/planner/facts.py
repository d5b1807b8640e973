"""Model architecture facts: what vLLM's memory use depends on, from a config.json.

Facts come from, in order: ``--model-config`` (a ``config.json`` file or a model
directory), the catalog ``config/data/model-facts.yaml`` (and a ``model-facts.yaml``
in the user's catalog directory, which wins), or a local Hugging Face cache
(``~/.cache/huggingface/hub/models--ORG--NAME/snapshots/*/config.json``). There is
no network access at run time.

A model directory may also give the exact checkpoint size: ``total_size`` in
``model.safetensors.index.json`` or the headers of its ``*.safetensors`` files
(the planner reports it next to its own count; vLLM's weight memory is the loaded
tensors, which the per-layer count models, quantization included).
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from config.errors import SweepdeckError

FACTS_FILE = Path(__file__).resolve().parent.parent / "data" / "model-facts.yaml"
FACTS_NAME = "model-facts.yaml"

# config.json fields the planner cannot do without.
REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "fp8": 1, "float8": 1}


@dataclass(frozen=True, slots=True)
class Quantization:
    """How the checkpoint's (or ``--quantization``'s) weights are stored.

    Args:
        method: ``fp8``, ``int8``, ``awq``, ``gptq``, ``mxfp4``, ``compressed-tensors``...
        bits: Bits per quantized weight (8, 4).
        group_size: Weights per scale (4-bit methods); 0 = per channel/tensor.
        experts_only: Only MoE expert weights are quantized (MXFP4 in gpt-oss).
    """

    method: str
    bits: int = 8
    group_size: int = 0
    experts_only: bool = False


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """The architecture of one model, as the planner needs it (all counts are totals, not per GPU)."""

    model_id: str
    architecture: str
    model_type: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    intermediate: int
    max_position: int
    dtype: str = "bfloat16"
    tie_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    gated_mlp: bool = True
    # layer kinds: "full", "sliding", "chunked" per layer (MLA models use "mla")
    layer_kinds: tuple[str, ...] = ()
    sliding_window: int | None = None
    chunk_size: int | None = None
    # MoE
    experts: int = 0
    experts_per_token: int = 0
    moe_intermediate: int = 0
    shared_intermediate: int = 0
    moe_layers: tuple[bool, ...] = ()
    dense_intermediate: int = 0  # non-MoE layers of an MoE model
    # MLA
    kv_lora_rank: int = 0
    q_lora_rank: int = 0
    qk_rope_dim: int = 0
    qk_nope_dim: int = 0
    v_head_dim: int = 0
    qk_norm: bool = False
    quantization: Quantization | None = None
    params: int | None = None          # declared total, a consistency check
    checkpoint_bytes: int | None = None  # from a model directory's safetensors
    multimodal: bool = False
    source: str = ""
    notes: tuple[str, ...] = field(default=())

    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def family(self) -> str:
        """dense GQA/MHA/MQA, MoE, MLA or sliding window (for messages and tests)."""
        kinds = []
        if self.is_mla:
            kinds.append("MLA")
        elif self.kv_heads == 1:
            kinds.append("MQA")
        elif self.kv_heads < self.heads:
            kinds.append("GQA")
        else:
            kinds.append("MHA")
        if self.is_moe:
            kinds.append("MoE")
        if "sliding" in self.layer_kinds:
            kinds.append("sliding window")
        if "chunked" in self.layer_kinds:
            kinds.append("chunked attention")
        return " + ".join(kinds)


# ------------------------------------------------------------------ from config.json


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    """Multimodal configs keep the language model under ``text_config``; merge it in."""
    text = config.get("text_config") or config.get("llm_config") or config.get("language_config")
    if isinstance(text, dict):
        merged = {k: v for k, v in config.items() if k not in ("text_config", "vision_config")}
        merged.update(text)
        merged["_multimodal"] = True
        return merged
    return config


def _int(config: dict[str, Any], *names: str, default: int | None = None) -> int | None:
    for name in names:
        value = config.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return int(value)
    return default


def _layer_kinds(cfg: dict[str, Any], layers: int, model_type: str) -> tuple[tuple[str, ...], int | None, int | None]:
    """Per-layer attention kind, the sliding window and the chunk size (vLLM's rules per family)."""
    window = _int(cfg, "sliding_window")
    if cfg.get("use_sliding_window") is False:
        window = None
    types = cfg.get("layer_types")
    if isinstance(types, list) and len(types) == layers:
        kinds = tuple("sliding" if "sliding" in str(t) else "full" for t in types)
        return kinds, window if "sliding" in kinds else None, None
    chunk = _int(cfg, "attention_chunk_size")
    if chunk and model_type.startswith("llama4"):
        interval = _int(cfg, "no_rope_layer_interval", default=4) or 4
        # every `interval`-th layer is a global NoPE layer; the others are chunked
        kinds = tuple("full" if (i + 1) % interval == 0 else "chunked" for i in range(layers))
        return kinds, None, chunk
    if window and model_type == "gemma2":
        return tuple("sliding" if i % 2 == 0 else "full" for i in range(layers)), window, None
    if window and model_type.startswith("gemma3"):
        pattern = _int(cfg, "sliding_window_pattern", default=6) or 6
        return tuple("full" if (i + 1) % pattern == 0 else "sliding" for i in range(layers)), window, None
    if window and window < (_int(cfg, "max_position_embeddings", default=0) or 0):
        return tuple("sliding" for _ in range(layers)), window, None
    return tuple("full" for _ in range(layers)), None, None


def _quantization(cfg: dict[str, Any]) -> Quantization | None:
    q = cfg.get("quantization_config")
    if not isinstance(q, dict):
        return None
    method = str(q.get("quant_method") or q.get("quantization_method") or "").lower()
    if method == "mxfp4":
        return Quantization("mxfp4", 4, 32, experts_only=True)
    if method in ("awq", "gptq", "awq_marlin", "gptq_marlin"):
        return Quantization(method.split("_")[0], int(q.get("bits") or q.get("w_bit") or 4),
                            int(q.get("group_size") or q.get("q_group_size") or 128))
    if method == "compressed-tensors":
        bits, group = 8, 0
        for group_cfg in (q.get("config_groups") or {}).values():
            weights = group_cfg.get("weights") if isinstance(group_cfg, dict) else None
            if isinstance(weights, dict):
                bits = int(weights.get("num_bits") or 8)
                group = int(weights.get("group_size") or 0)
        return Quantization("compressed-tensors", bits, group)
    if method in ("fp8", "fbgemm_fp8", "modelopt"):
        return Quantization("fp8", 8)
    if method in ("bitsandbytes",):
        return Quantization("bitsandbytes", 4 if q.get("load_in_4bit") else 8, 64)
    return Quantization(method or "unknown", int(q.get("bits") or 8), int(q.get("group_size") or 0))


def _moe(cfg: dict[str, Any], layers: int, intermediate: int) -> dict[str, Any]:
    experts = _int(cfg, "num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts", default=0) or 0
    if experts <= 1:
        return {}
    top_k = _int(cfg, "num_experts_per_tok", "experts_per_token", "moe_top_k", default=1) or 1
    moe_inter = _int(cfg, "moe_intermediate_size", default=intermediate) or intermediate
    n_shared = _int(cfg, "n_shared_experts", default=0) or 0
    shared = _int(cfg, "shared_expert_intermediate_size", default=None)
    if shared is None:
        shared = n_shared * moe_inter
    if cfg.get("model_type", "").startswith("llama4"):
        shared = moe_inter  # one shared expert of the routed experts' size
    first_dense = _int(cfg, "first_k_dense_replace", default=0) or 0
    step = _int(cfg, "interleave_moe_layer_step", "decoder_sparse_step", "moe_layer_freq", default=1) or 1
    only_dense = set(cfg.get("mlp_only_layers") or [])
    moe_layers = tuple(
        i >= first_dense and (i + 1) % step == 0 and i not in only_dense for i in range(layers)
    )
    dense = _int(cfg, "intermediate_size_mlp", default=None) or intermediate
    return {
        "experts": experts, "experts_per_token": top_k, "moe_intermediate": moe_inter,
        "shared_intermediate": shared, "moe_layers": moe_layers, "dense_intermediate": dense,
    }


def facts_from_config(config: dict[str, Any], model_id: str = "", source: str = "") -> ModelFacts:
    """:class:`ModelFacts` from the fields of a Hugging Face ``config.json``.

    Raises:
        SweepdeckError: a required field is missing (the message names them).
    """
    if not isinstance(config, dict):
        raise SweepdeckError(f"{source or 'config.json'}: expected a JSON object.", "Give the model's config.json.")
    cfg = _text_config(config)
    missing = [name for name in REQUIRED if _int(cfg, name, "n_embd" if name == "hidden_size" else name) is None]
    if missing:
        raise SweepdeckError(
            f"{source or 'config.json'} lacks the fields the planner needs: {', '.join(missing)}.",
            "Give the model's own config.json (from its Hugging Face repository) with --model-config.",
        )
    hidden = _int(cfg, "hidden_size", "n_embd") or 0
    layers = _int(cfg, "num_hidden_layers") or 0
    heads = _int(cfg, "num_attention_heads") or 0
    kv_heads = _int(cfg, "num_key_value_heads", "num_kv_heads", "multi_query_group_num", default=heads) or heads
    head_dim = _int(cfg, "head_dim", default=None) or hidden // max(heads, 1)
    intermediate = _int(cfg, "intermediate_size", "ffn_hidden_size", "n_inner", default=4 * hidden) or 4 * hidden
    model_type = str(cfg.get("model_type") or "")
    kinds, window, chunk = _layer_kinds(cfg, layers, model_type)
    kv_lora = _int(cfg, "kv_lora_rank", default=0) or 0
    if kv_lora:
        kinds = tuple("mla" for _ in range(layers))
    archs = cfg.get("architectures") or [""]
    arch = str(archs[0]) if isinstance(archs, list) and archs else str(archs)
    return ModelFacts(
        model_id=model_id,
        architecture=arch,
        model_type=model_type,
        hidden=hidden,
        layers=layers,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        vocab=_int(cfg, "vocab_size") or 0,
        intermediate=intermediate,
        max_position=_max_position(cfg),
        dtype=str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16").replace("torch.", ""),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", model_type.startswith("gemma"))),
        qkv_bias=bool(cfg.get("attention_bias") or model_type in ("qwen2", "qwen2_moe")),
        o_bias=bool(cfg.get("attention_bias") and model_type == "gpt_oss"),
        gated_mlp=model_type not in ("phi", "gpt2", "gpt_bigcode", "starcoder2", "falcon", "gpt_neox", "opt"),
        layer_kinds=kinds,
        sliding_window=window,
        chunk_size=chunk,
        kv_lora_rank=kv_lora,
        q_lora_rank=_int(cfg, "q_lora_rank", default=0) or 0,
        qk_rope_dim=_int(cfg, "qk_rope_head_dim", default=0) or 0,
        qk_nope_dim=_int(cfg, "qk_nope_head_dim", default=0) or 0,
        v_head_dim=_int(cfg, "v_head_dim", default=0) or 0,
        qk_norm=model_type in ("qwen3", "qwen3_moe", "gemma3", "gemma3_text", "olmo2"),
        quantization=_quantization(cfg),
        params=_int(config, "params", default=None),
        multimodal=bool(cfg.get("_multimodal")),
        source=source,
        **_moe(cfg, layers, intermediate),
    )


def _max_position(cfg: dict[str, Any]) -> int:
    """vLLM's derived maximum model length (the largest of the usual keys)."""
    value = _int(cfg, "max_position_embeddings", "n_positions", "max_seq_len", "seq_length",
                 "max_sequence_length", "max_seq_length", "seq_len", default=None)
    if value is None:
        value = _int(cfg, "model_max_length", default=2048) or 2048
    scaling = cfg.get("rope_scaling") or {}
    rope_type = str(scaling.get("rope_type") or scaling.get("type") or "") if isinstance(scaling, dict) else ""
    if rope_type in ("linear", "dynamic") and isinstance(scaling, dict) and scaling.get("factor"):
        value = int(value * float(scaling["factor"]))
    return value


# ------------------------------------------------------------------ the catalog


@lru_cache(maxsize=8)
def _catalog(path: str, mtime: float) -> dict[str, Any]:
    from config.catalog import load_yaml

    data = load_yaml(Path(path)) or {}
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise SweepdeckError(f"{path}: expected a 'models' mapping.", f"Fix {path} and try again.")
    return models


def _catalog_files(catalog_dir: str | Path | None) -> list[Path]:
    files = [FACTS_FILE]
    if catalog_dir:
        user = Path(catalog_dir).expanduser() / FACTS_NAME
        if user.is_file():
            files.insert(0, user)
    return files


def catalog_entry(model_id: str, catalog_dir: str | Path | None = None) -> tuple[dict[str, Any], str] | None:
    """The raw facts entry for ``model_id`` (case-insensitive), following ``same_as``."""
    for path in _catalog_files(catalog_dir):
        models = _catalog(str(path), path.stat().st_mtime)
        lower = {k.lower(): k for k in models}
        key = lower.get(model_id.lower())
        seen: set[str] = set()
        while key is not None and isinstance(models.get(key), dict) and "same_as" in models[key] and key not in seen:
            seen.add(key)
            key = lower.get(str(models[key]["same_as"]).lower())
        if key is not None and isinstance(models.get(key), dict):
            return dict(models[key]), f"{path.name} ({key})"
    return None


def catalog_model_ids(catalog_dir: str | Path | None = None) -> list[str]:
    ids: list[str] = []
    for path in _catalog_files(catalog_dir):
        ids += [k for k in _catalog(str(path), path.stat().st_mtime) if k not in ids]
    return ids


# ------------------------------------------------------------------ files and caches


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SweepdeckError(f"Cannot read {path}: {exc.strerror or exc}.", "Check the --model-config path.") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise SweepdeckError(f"{path} is not valid JSON ({exc}).", "Give the model's config.json.") from None


def safetensors_bytes(directory: Path) -> int | None:
    """Checkpoint bytes: the index's ``metadata.total_size``, else the sum of tensor sizes in the headers."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        data = _read_json(index)
        total = (data.get("metadata") or {}).get("total_size") if isinstance(data, dict) else None
        if isinstance(total, (int, float)) and total > 0:
            return int(total)
    total = 0
    for path in sorted(directory.glob("*.safetensors")):
        total += _header_bytes(path)
    return total or None


def _header_bytes(path: Path) -> int:
    """Sum of tensor byte ranges in one safetensors file's JSON header (the tensors are not read)."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                return 0
            (length,) = struct.unpack("<Q", raw)
            if length > 100 * 1024 * 1024:
                return 0
            header = json.loads(fh.read(length))
    except (OSError, ValueError):
        return 0
    total = 0
    for name, entry in header.items():
        if name != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry:
            start, end = entry["data_offsets"]
            total += int(end) - int(start)
    return total


def facts_from_path(path: str | Path, model_id: str = "") -> ModelFacts:
    """Facts from ``--model-config``: a ``config.json`` file or a model directory.

    Raises:
        SweepdeckError: missing file, bad JSON or missing fields.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        config_file = p / "config.json"
        if not config_file.is_file():
            raise SweepdeckError(f"{p} has no config.json.",
                                 "Give the model directory (with config.json) or the file itself.")
        facts = facts_from_config(_read_json(config_file), model_id, str(config_file))
        size = safetensors_bytes(p)
        return _with(facts, checkpoint_bytes=size) if size else facts
    if not p.is_file():
        raise SweepdeckError(f"Model config {p} does not exist.", "Give a config.json file or a model directory.")
    return facts_from_config(_read_json(p), model_id, str(p))


def hf_cache_dirs(model_id: str) -> list[Path]:
    """Snapshot directories of ``model_id`` in the local Hugging Face cache (newest first)."""
    if "/" not in model_id:
        return []
    home = Path(os.environ.get("HF_HOME") or "~/.cache/huggingface").expanduser()
    hub = Path(os.environ.get("HF_HUB_CACHE") or home / "hub")
    root = hub.expanduser() / ("models--" + model_id.replace("/", "--"))
    snaps = [d for d in (root / "snapshots").glob("*") if (d / "config.json").is_file()] if root.is_dir() else []
    return sorted(snaps, key=lambda d: d.stat().st_mtime, reverse=True)


def _with(facts: ModelFacts, **changes: Any) -> ModelFacts:
    from dataclasses import replace

    return replace(facts, **changes)


def load_facts(model_id: str, *, model_config: str | Path | None = None,
               catalog_dir: str | Path | None = None) -> ModelFacts:
    """The facts for ``model_id``: ``model_config`` > catalog > local HF cache.

    Raises:
        SweepdeckError: no facts anywhere (the message says how to give them),
            or the given config is unusable.
    """
    if model_config:
        return facts_from_path(model_config, model_id)
    entry = catalog_entry(model_id, catalog_dir)
    if entry is not None:
        config, where = entry
        return facts_from_config(config, model_id, where)
    for snapshot in hf_cache_dirs(model_id):
        return facts_from_path(snapshot, model_id)
    raise SweepdeckError(
        f"No architecture facts for {model_id!r}: the planner needs its layers, hidden size, "
        "attention and KV heads, head dim, vocabulary and dtype.",
        "Give its config.json (or the model directory) with --model-config PATH.",
    )


def find_facts(model_id: str, catalog_dir: str | Path | None = None) -> ModelFacts | None:
    """Facts from the catalog or the local HF cache, or None (no error)."""
    try:
        return load_facts(model_id, catalog_dir=catalog_dir)
    except SweepdeckError:
        return None
