"""Memory planner accuracy against real vLLM v0.19.0 startups, and the llm-d planner's approach in the same run.

    .venv/bin/python tests/benchmarks/bench_planner.py [--llmd-dir DIR]

1. The six reference runs (../shared/reference/vllm-capacity: Llama-3.1-8B-Instruct and
   Qwen2.5-7B-Instruct, TP 1/2/4, H100-80GB, max_model_len 8192, utilization 0.95).
   sweepdeck's planner predicts each model's runs with its measured constants fitted
   on the *other* model's runs only (held out). The llm-d planner's approach is
   re-implemented from its accuracy report (accuracy/accuracy_report.md, "Capacity
   Planner Functions Evaluated"): catalog GPU memory (80 GiB) x utilization, weights =
   checkpoint size / (TP x PP), a per-architecture activation constant counted once per
   replica (Llama 4.8, Qwen2 5.6, dense 5.5, MoE 8.0 GiB), non-torch 0.15 GiB (TP 1) or
   0.60 GiB (TP >= 2) per GPU, KV bytes per token from the model dtype (no
   --kv-cache-dtype, --dtype or runtime --quantization).
2. With --llmd-dir (the llm-d-planner repository's accuracy/results/v0.19.0 at commit
   d3121e0, the study the six runs come from): every run of that study whose model has
   facts in config/data/model-facts.yaml, predicted with the shipped constants (fitted
   on the six; those six are reported separately), plus every failed startup and
   whether the planner predicts it.
3. How long a plan takes (what the review line pays on every edit).

What the figures leave out: one GPU type (H100), one vLLM version (v0.19.0); CUDA-graph
memory and the warm-up headroom are estimates checked against the study's failures only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from config.planner import PlanRequest, find_facts, plan, resolve_gpu  # noqa: E402 - after the sys.path line
from config.planner.evaluate import errors, held_out, mean_abs, request_from  # noqa: E402 - same
from config.planner.facts import DTYPE_BYTES  # noqa: E402 - same
from config.planner.memory import quantization_of  # noqa: E402 - same
from config.planner.vllm_log import StartupRecord, read_startup  # noqa: E402 - same
from config.planner.weights import GIB, Stage, weight_bytes  # noqa: E402 - same

TERMS = ("weights", "kv_cache_memory", "kv_cache_tokens", "max_concurrency")
# Pre-quantized checkpoints of the study → the base model's facts and the checkpoint's scheme.
CHECKPOINTS = {
    "RedHatAI/Llama-3.3-70B-Instruct-fp8-dynamic": ("meta-llama/Llama-3.3-70B-Instruct", "fp8"),
    "redhatai/Llama-3.3-70B-Instruct-quantized.w8a8": ("meta-llama/Llama-3.3-70B-Instruct", "int8"),
    "RedHatAI/Qwen2.5-7B-Instruct-fp8-dynamic": ("Qwen/Qwen2.5-7B-Instruct", "fp8"),
    "RedHatAI/Qwen2.5-7B-Instruct-quantized.w8a8": ("Qwen/Qwen2.5-7B-Instruct", "int8"),
    "RedHatAI/Meta-Llama-3.1-8B-Instruct-quantized.w8a8": ("meta-llama/Llama-3.1-8B-Instruct", "int8"),
    "RedHatAI/Meta-Llama-3.1-8B-Instruct-quantized.w4a16": ("meta-llama/Llama-3.1-8B-Instruct", "gptq"),
    "moonshotai/Kimi-Dev-72B": ("Qwen/Qwen2.5-72B-Instruct", None),  # a Qwen2.5-72B fine-tune
}
LLMD_ACTIVATION = {"LlamaForCausalLM": 4.8, "Qwen2ForCausalLM": 5.6, "Qwen3ForCausalLM": 5.6}


def reference_dir() -> Path:
    for candidate in (os.environ.get("SWEEPDECK_REFERENCE", ""), str(ROOT.parent / "shared" / "reference"),
                      str(ROOT.parent.parent / "shared" / "reference"), "/work/shared/reference"):
        if candidate and (Path(candidate) / "vllm-capacity").is_dir():
            return Path(candidate) / "vllm-capacity"
    raise SystemExit("../shared/reference/vllm-capacity not found (set SWEEPDECK_REFERENCE)")


def request_for(record: StartupRecord) -> PlanRequest | None:
    model, quant = CHECKPOINTS.get(record.model, (record.model, None))
    if record.quantization == "fp8" and record.model not in CHECKPOINTS:
        quant = "fp8"  # runtime --quantization fp8
    facts = find_facts(model)
    if facts is None:
        return None
    return request_from(record, facts, resolve_gpu("H100-80GB"), quant)


def llmd_plan(record: StartupRecord, request: PlanRequest) -> dict[str, float]:
    """The llm-d planner's numbers for one run (its published formula, re-implemented)."""
    f = request.facts
    n = request.tp * request.pp * request.dp
    native = 2 if f.dtype in ("bfloat16", "float16", "float32") else DTYPE_BYTES.get(f.dtype, 2)
    # it reads the checkpoint's safetensors: quantized checkpoints are small, a runtime --quantization is not seen
    runtime = request.quantization is not None and record.model not in CHECKPOINTS
    checkpoint_quant = None if runtime else quantization_of(request)
    total = weight_bytes(f, tp=1, stage=Stage(0, 0, f.layers, True, True), dtype_bytes=native,
                         quant=checkpoint_quant) / GIB  # what its safetensors reading gives
    weights = total / (request.tp * request.pp)
    activation = LLMD_ACTIVATION.get(f.architecture, 8.0 if f.is_moe else (2.5 if f.multimodal else 5.5))
    non_torch = 0.15 if request.tp == 1 else 0.6
    available = 80 * request.gpu_memory_utilization * n - total * request.dp - activation * request.dp - non_torch * n
    kv = max(0.0, available) / n
    if f.is_mla:
        per_token = f.layers * (f.kv_lora_rank + f.qk_rope_dim) * native
    else:
        per_token = f.layers * 2 * f.head_dim * f.kv_heads * native
    per_token_gpu = per_token / (request.tp * request.pp)
    tokens = kv * GIB / per_token_gpu
    max_len = record.max_model_len or f.max_position
    return {"weights": weights, "kv_cache_memory": kv, "kv_cache_tokens": tokens, "max_concurrency": tokens / max_len}


def llmd_errors(record: StartupRecord, request: PlanRequest) -> dict[str, float]:
    pred = llmd_plan(record, request)
    actual = {"weights": record.weights_gib, "kv_cache_memory": record.kv_cache_gib,
              "kv_cache_tokens": record.kv_cache_tokens, "max_concurrency": record.max_concurrency}
    return {k: (pred[k] / actual[k] - 1) * 100 for k in TERMS if actual[k]}


def fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:+.2f}%"


def table(rows: list[tuple[str, dict, dict]]) -> None:
    print("| run | weights | KV GiB | KV tokens | max conc. | llm-d: weights | KV GiB | KV tokens | max conc. |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, ours, theirs in rows:
        print(f"| {name} | " + " | ".join(fmt(ours.get(t)) for t in TERMS) + " | "
              + " | ".join(fmt(theirs.get(t)) for t in TERMS) + " |")
    for label, pick in (("mean abs error", lambda e, t: abs(e[t])),):
        ours = [statistics.mean(pick(r[1], t) for r in rows if t in r[1]) for t in TERMS]
        theirs = [statistics.mean(pick(r[2], t) for r in rows if t in r[2]) for t in TERMS]
        print(f"| **{label}** | " + " | ".join(f"**{v:.2f}%**" for v in ours) + " | "
              + " | ".join(f"{v:.2f}%" for v in theirs) + " |")


def six_runs() -> None:
    ref = reference_dir()
    runs = []
    for path in sorted((ref / "logs").glob("*.log")):
        record = read_startup(path)
        request = request_for(record)
        assert request is not None, record.model
        runs.append((record, request))
    outcomes = held_out(runs)
    print(f"## The six reference runs ({ref}), held out: each model predicted with constants fitted on the other\n")
    table([(Path(o.record.path).stem, o.errors, llmd_errors(o.record, r)) for o, (_, r) in zip(outcomes, runs,
                                                                                               strict=True)])
    print()
    for term in TERMS:
        print(f"sweepdeck {term}: mean abs {mean_abs(outcomes, term):.3f}%")


def study(directory: Path, six: set[str]) -> None:
    logs = sorted((directory / "logs").glob("*.log"))
    rows, failures, skipped, early = [], [], [], 0
    for path in logs:
        record = read_startup(path)
        if not record.model:
            early += 1  # stopped before vLLM printed its engine config (a download or config error)
            continue
        request = request_for(record)
        if request is None:
            skipped.append(record.model)
            continue
        result = plan(request)
        if record.kv_cache_tokens is None or record.failures or "FAILED" in path.name:
            failures.append((path.stem, record, result))
            continue
        if path.name in six:
            continue
        rows.append((path.stem, errors(result, record), llmd_errors(record, request)))
    print(f"\n## The rest of the study ({directory}): {len(rows)} successful runs, shipped constants\n")
    table(rows)
    print(f"\nnot planned: {len(skipped)} logs of models without facts in model-facts.yaml "
          f"({', '.join(sorted(set(skipped)))}); {early} logs that stopped before vLLM's engine config line")
    print("\n## Failed startups of the study\n")
    print("| run | vLLM's error | planner |")
    print("|---|---|---|")
    for name, record, result in failures:
        said = (record.failures or ["(no error line)"])[-1][:110].replace("|", "/")
        verdict = "fits" if result.fits else "does not fit: " + ", ".join(p.code for p in result.problems)
        if result.fits and any("tight" in w for w in result.warnings):
            verdict += f" (warns: {result.headroom_gib:.2f} GiB left after CUDA graphs, start-up tight)"
        print(f"| {name} | {said} | {verdict} |")


def timing() -> None:
    from config.planner import load_facts

    request = PlanRequest(load_facts("meta-llama/Llama-3.3-70B-Instruct"), resolve_gpu("A100-80GB"), tp=2,
                          max_model_len=32768)
    plan(request, advise=False)
    start = time.perf_counter()
    for _ in range(200):
        plan(request, advise=False)
    one = (time.perf_counter() - start) / 200 * 1000
    start = time.perf_counter()
    for _ in range(5):
        advised = plan(request)
    advice = (time.perf_counter() - start) / 5 * 1000
    print(f"\n## Speed\n\nplan (no advice): {one:.2f} ms; plan + nearest fits ({len(advised.suggestions)} found): "
          f"{advice:.1f} ms  (Llama-3.3-70B, A100-80GB, TP 2, 32768 tokens)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llmd-dir", type=Path, help="llm-d-planner accuracy/results/v0.19.0 (commit d3121e0)")
    args = parser.parse_args()
    six_runs()
    if args.llmd_dir:
        six = {p.name for p in (reference_dir() / "logs").glob("*.log")}
        study(args.llmd_dir, six)
    timing()


if __name__ == "__main__":
    main()
