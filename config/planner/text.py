"""The planner's words: the one-line verdict and the per-GPU table (CLI, review, pre-flight, sim)."""

from __future__ import annotations

from config.planner.memory import Plan, Suggestion


def tokens_text(tokens: int) -> str:
    """476016 → ``476k``, 1044688 → ``1.04M``, 912 → ``912``."""
    if tokens >= 10_000_000:
        return f"{tokens / 1e6:.1f}M"
    if tokens >= 1_000_000:
        return f"{tokens / 1e6:.2f}M"
    if tokens >= 1000:
        return f"{tokens / 1000:.0f}k"
    return str(tokens)


def times_text(value: float) -> str:
    """58.11 → ``58×``, 2.4 → ``2.4×``."""
    return f"{value:.0f}×" if value >= 10 else f"{value:.1f}×"


def summary_line(p: Plan) -> str:
    """``fits: weights 15.0 GiB · KV 58.1 GiB → 476k tokens → 58× at 8192`` or ``does not fit: …``."""
    if not p.fits:
        return "does not fit: " + "; ".join(x.summary for x in p.problems)
    return (
        f"fits: weights {p.weights_gib:.1f} GiB · KV {p.kv_cache_gib:.1f} GiB → "
        f"{tokens_text(p.kv_cache_tokens)} tokens → {times_text(p.max_concurrency)} at {p.max_model_len}"
    )


def suggestion_text(s: Suggestion, max_model_len: int) -> str:
    at = s.changes.get("max_model_len", max_model_len)
    return f"{s.detail}: {tokens_text(s.kv_cache_tokens)} tokens, {times_text(s.max_concurrency)} at {at}"


def heading(p: Plan) -> str:
    r = p.request
    quant = r.quantization or (r.facts.quantization.method if r.facts.quantization else None)
    parts = [f"{r.facts.model_id or r.facts.architecture} on {r.gpu.name}", f"TP {r.tp}"]
    if r.pp > 1:
        parts.append(f"PP {r.pp}")
    if r.dp > 1:
        parts.append(f"DP {r.dp}")
    parts += [f"max_model_len {p.max_model_len}", f"utilization {r.gpu_memory_utilization:g}", p.dtype]
    if quant:
        parts.append(f"{quant} weights")
    if p.kv_cache_dtype != p.dtype:
        parts.append(f"{p.kv_cache_dtype} KV cache")
    return " · ".join(parts) + f"  ({r.facts.family})"


def table_lines(p: Plan) -> list[str]:
    """The per-GPU breakdown, one term a line."""
    r = p.request
    nt_note = "NCCL / all-reduce buffers with TP > 1" if r.tp > 1 else "CUDA kernels and workspaces (TP 1)"
    stage = " (the limiting pipeline stage)" if r.pp > 1 else ""
    sampler_rows = min(p.max_num_seqs, p.max_num_batched_tokens)
    per_token = p.kv_bytes_per_token / 1024
    rows = [
        ("physical memory", f"{p.physical_gib:8.2f} GiB", "as the driver reports it"),
        ("requested budget", f"{p.requested_gib:8.2f} GiB", f"{r.gpu_memory_utilization:g} × {p.physical_gib:.2f}"),
        ("weights", f"{p.weights_gib:8.2f} GiB", stage.strip(" ()") or ""),
        ("activation peak", f"{p.activation_gib:8.2f} GiB",
         f"profile run: {p.max_num_batched_tokens} tokens, sampler {sampler_rows} rows"),
        ("non-torch", f"{p.non_torch_gib:8.2f} GiB", nt_note),
        ("KV cache", f"{p.kv_cache_gib:8.2f} GiB", f"{per_token:.1f} KiB per token ({p.kv_cache_dtype})"),
        ("KV cache tokens", f"{p.kv_cache_tokens:>12,}", f"{p.kv_cache_blocks:,} blocks of {p.block_size}"),
        ("max concurrency", f"{p.max_concurrency:11.2f}×", f"at {p.max_model_len:,} tokens per request"),
        ("CUDA graphs", f"{p.cuda_graph_gib:8.2f} GiB", f"outside the budget; {p.headroom_gib:.2f} GiB left then"),
    ]
    return [f"  {name:<18}{value:>14}  {note}".rstrip() for name, value, note in rows]


def report_lines(p: Plan) -> list[str]:
    """Heading, per-GPU table, verdict, vLLM's words for each problem, the nearest fits."""
    lines = [heading(p), "per GPU:", *table_lines(p), "", summary_line(p)]
    for problem in p.problems:
        lines.append(f"  vLLM would say: {problem.message}")
    for warning in p.warnings:
        lines.append(f"  note: {warning}")
    if p.problems:
        if p.suggestions:
            lines.append("nearest configurations that fit:")
            for i, s in enumerate(p.suggestions, 1):
                lines.append(f"  {i}. {suggestion_text(s, p.max_model_len)}")
        else:
            lines.append("no nearby configuration fits on this GPU (a larger GPU, or quantized weights).")
    return lines
