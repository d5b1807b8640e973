"""``sweepdeck sim serve MODEL --gpu NAME``: startup lines and failures from the memory planner.

With ``--gpu`` the simulator sizes its startup the way vLLM v0.19 would on that GPU
(:mod:`config.planner`): it prints vLLM's own lines with the planned numbers
("Model loading took X GiB memory", "Available KV cache memory", "GPU KV cache size",
"Maximum concurrency for L tokens per request") and its KV capacity follows; a
configuration that cannot start fails the way vLLM fails, in vLLM's words (the
``ValueError`` of a KV cache too small for one request, "No available memory for the
cache blocks", a tensor parallel size that does not divide the heads...), exit 1.

vLLM options the simulator otherwise ignores feed the plan here:
``--gpu-memory-utilization``, ``--dtype``, ``--kv-cache-dtype``, ``--quantization``,
``--pipeline-parallel-size``, ``--enforce-eager``, ``--block-size``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backends.sim import failures, logs
from config.errors import SweepdeckError

if TYPE_CHECKING:
    from backends.sim.options import SimOptions
    from config.planner import Plan

# vLLM flags the plan reads from the simulator's "ignored" list.
PLANNED_FLAGS = (
    "--gpu-memory-utilization", "--dtype", "--kv-cache-dtype", "--quantization", "-q",
    "--pipeline-parallel-size", "-pp", "--enforce-eager", "--block-size",
)
# Problems vLLM reports while it resolves its configuration, before the engine starts.
EARLY = ("tp-heads", "tp-vocab", "pp-layers", "max-model-len", "bf16", "gpus")


def _flags(opts: SimOptions) -> dict[str, str]:
    from backends.planning import engine_flags

    words: list[str] = []
    for item in opts.ignored:
        words.extend(item.split(" ", 1))
    return engine_flags(words)


def uses(item: str) -> bool:
    """Whether an otherwise ignored option (``--dtype bfloat16``) is read by the plan."""
    return item.split(" ", 1)[0].partition("=")[0] in PLANNED_FLAGS


def plan_for_options(opts: SimOptions) -> Plan:
    """The plan for this command line on ``opts.gpu``.

    Raises:
        SweepdeckError: unknown GPU, no facts for the model, a bad flag value.
    """
    from backends.planning import flag_number
    from backends.sim.options import catalog_model_id
    from config.planner import PlanRequest, facts_from_path, find_facts, plan, resolve_gpu

    gpu = resolve_gpu(str(opts.gpu))
    model_id = catalog_model_id(opts.model)
    facts = find_facts(model_id)
    if facts is None:
        from pathlib import Path

        if (Path(opts.model) / "config.json").is_file():
            facts = facts_from_path(opts.model, model_id)
        else:
            raise SweepdeckError(
                f"No architecture facts for {model_id!r}, so --gpu cannot size its memory.",
                "Use a model from config/data/model-facts.yaml, a model directory with config.json, or drop --gpu.",
            )
    flags = _flags(opts)
    request = PlanRequest(
        facts=facts, gpu=gpu, tp=opts.tensor_parallel_size,
        pp=flag_number(flags, ("--pipeline-parallel-size", "-pp"), int, 1),
        max_model_len=opts.max_model_len if opts.max_model_len_given else None,
        gpu_memory_utilization=flag_number(flags, ("--gpu-memory-utilization",), float, 0.9),
        dtype=flags.get("--dtype", "auto"), kv_cache_dtype=flags.get("--kv-cache-dtype", "auto"),
        quantization=flags.get("--quantization") or flags.get("-q"),
        max_num_seqs=opts.max_num_seqs, max_num_batched_tokens=opts.max_num_batched_tokens,
        enforce_eager="--enforce-eager" in flags,
        block_size=flag_number(flags, ("--block-size",), int, None),
    )
    return plan(request, advise=False)


def fails_early(p: Plan) -> bool:
    return any(x.code in EARLY for x in p.problems)


def weights_line(p: Plan, seconds: float) -> tuple[str, str]:
    line = f"Model loading took {p.weights_gib:.2f} GiB memory and {seconds:.6f} seconds"
    return "v1/worker/gpu_model_runner.py:4820", line


def kv_lines(p: Plan) -> list[tuple[str, str]]:
    """vLLM v0.19's INFO lines from profiling to the KV cache, with the planned numbers."""
    from config.planner.memory import capture_sizes

    r = p.request
    lines: list[tuple[str, str]] = []
    if not r.enforce_eager:
        sizes = capture_sizes(r)
        largest = 1024 if r.facts.model_type == "gpt_oss" else min(2 * p.max_num_seqs, 512)
        graphs = f"PIECEWISE={sizes} (largest={largest}), FULL={sizes} (largest={largest})"
        lines.append(("v1/worker/gpu_model_runner.py:5876", f"Profiling CUDA graph memory: {graphs}"))
        lines.append(("v1/worker/gpu_model_runner.py:5955",
                      f"Estimated CUDA graph memory: {p.cuda_graph_gib:.2f} GiB total"))
    lines.append(("v1/worker/gpu_worker.py:436", f"Available KV cache memory: {p.kv_cache_gib:.2f} GiB"))
    if not r.enforce_eager:
        util = r.gpu_memory_utilization
        suggested = min(round(util + p.cuda_graph_gib / p.physical_gib, 4), 1.0)
        lines.append((
            "v1/worker/gpu_worker.py:470",
            "In v0.19, CUDA graph memory profiling will be enabled by default "
            "(VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1), which more accurately accounts for CUDA graph memory "
            "during KV cache allocation. To try it now, set VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1 and increase "
            f"--gpu-memory-utilization from {util:.4f} to {suggested:.4f} "
            "to maintain the same effective KV cache size.",
        ))
    lines.append(("v1/core/kv_cache_utils.py:1319", f"GPU KV cache size: {p.kv_cache_tokens:,} tokens"))
    lines.append(("v1/core/kv_cache_utils.py:1324",
                  f"Maximum concurrency for {p.max_model_len:,} tokens per request: {p.max_concurrency:.2f}x"))
    if not r.enforce_eager:
        lines.append(("v1/worker/gpu_model_runner.py:6046",
                      f"Graph capturing finished in 3 secs, took {p.cuda_graph_gib:.2f} GiB"))
    return lines


def _traceback(p: Plan) -> list[str]:
    code = p.problems[0].code
    where = {
        "kv-too-small": ("v1/core/kv_cache_utils.py", 646, "_check_enough_kv_cache_memory"),
        "no-kv-memory": ("v1/core/kv_cache_utils.py", 626, "_check_enough_kv_cache_memory"),
        "free-memory": ("v1/worker/utils.py", 413, "request_memory"),
        "warmup-oom": ("v1/worker/gpu_model_runner.py", 5600, "_dummy_sampler_run"),
        "weights-oom": ("v1/worker/gpu_model_runner.py", 4808, "load_model"),
    }.get(code, ("config/model.py", 1111, "verify_with_parallel_config"))
    return [
        "Traceback (most recent call last):",
        '  File "/usr/local/lib/python3.12/dist-packages/vllm/v1/engine/core.py", line 1110, in run_engine_core',
        "    engine_core = EngineCoreProc(*args, engine_index=dp_rank, **kwargs)",
        f'  File "/usr/local/lib/python3.12/dist-packages/vllm/{where[0]}", line {where[1]}, in {where[2]}',
        "    raise ValueError(" if p.problems[0].message.startswith("ValueError") else "    raise",
    ]


def print_failure(p: Plan) -> int:
    """vLLM's failure for the first problem (ERROR line, traceback on stderr); returns the exit code."""
    problem = p.problems[0]
    core = logs.CORE
    message = problem.message
    if problem.code == "weights-oom":
        logs.error("v1/worker/gpu_model_runner.py:4818", message, core)
        message = failures.OOM_TEMPLATE.format(
            alloc=min(p.weights_gib, 2.0), free=0.42, used=p.physical_gib - 0.42,
            torch_alloc=p.physical_gib - 2.0, reserved=0.58,
        ).replace("79.19", f"{p.physical_gib:.2f}")
    if problem.code in EARLY and problem.code not in ("gpus",):
        logs.stderr_lines(["Traceback (most recent call last):", message])
        return failures.EXIT_STARTUP_FAILURE
    logs.error("v1/engine/core.py:1108", "EngineCore failed to start.", core)
    logs.stderr_lines([f"Process {core}:", *_traceback(p), message])
    logs.stderr_lines(failures.ENGINE_INIT_FAILED_TB)
    return failures.EXIT_STARTUP_FAILURE
