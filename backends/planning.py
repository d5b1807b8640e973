"""The memory planner where the user decides: pre-flight, the review line, recovery fixes.

* :func:`plan_for` plans an :class:`~config.spec.ExperimentSpec`: the model's facts,
  the spec's GPU (or its profile's), the engine settings and the vLLM flags among
  its extra arguments (``--gpu-memory-utilization``, ``--dtype``, ``--kv-cache-dtype``,
  ``--quantization``, ``--pipeline-parallel-size``, ``--data-parallel-size``,
  ``--enforce-eager``, ``--block-size``);
* :func:`planner_check` is the pre-flight check (fail: cannot start; warn: max
  concurrency at max_model_len below max_num_seqs, or nothing to plan with;
  pass: the one-line summary);
* :func:`planner_fixes` gives the recovery dialog the nearest configurations that
  fit for a CUDA OOM or a KV cache too small, instead of halving blindly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backends.base import Check
from backends.events import Fix
from config.errors import SweepdeckError

if TYPE_CHECKING:
    from config.planner import Plan, PlanRequest
    from config.spec import ExperimentSpec

CHECK_NAME = "Memory plan"
# Diagnoses whose cure is a configuration that fits in memory. The KV-cache-too-small
# rule ids cover the names a dedicated rule may have (issue 15 adds one).
PLANNED_RULES = frozenset({"cuda-oom", "kv-cache-too-small", "kv-cache", "kv-cache-oom", "warmup-oom"})


@dataclass(frozen=True, slots=True)
class Unplanned:
    """Why a spec could not be planned, and what to do about it."""

    reason: str
    fix: str
    short: str = ""  # fits a review line at 80 columns


def engine_flags(extra_args: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``--flag=value`` / ``--flag value`` / ``--flag`` among the extra args, by flag name."""
    out: dict[str, str] = {}
    items = list(extra_args)
    for i, arg in enumerate(items):
        if not arg.startswith("-"):
            continue
        flag, eq, value = arg.partition("=")
        if not eq and i + 1 < len(items) and not items[i + 1].startswith("-"):
            value = items[i + 1]
        out[flag] = value if (eq or value) else "true"
    return out


def flag_number(flags: dict[str, str], names: tuple[str, ...], kind: type, default: Any) -> Any:
    """The first of ``names`` among ``flags`` as ``kind`` (``default`` when none is there)."""
    for name in names:
        if name in flags:
            try:
                return kind(flags[name])
            except ValueError:
                raise SweepdeckError(f"{name} must be a number, got {flags[name]!r}.") from None
    return default


def _settings_gpu(spec: ExperimentSpec, settings: Any) -> tuple[str | None, int | None]:
    """The GPU name and GPU count the spec's profile gives (None when there is no profile)."""
    from config.planner.gpus import profile_gpu, slurm_gres_gpu

    if settings is None:
        return None, None
    try:
        profile = settings.profile(spec.profile, spec.backend)
    except SweepdeckError:
        return None, None
    name, _ = profile_gpu(profile.options)
    count = None
    if spec.backend == "slurm" and profile.get("gpus"):
        count = slurm_gres_gpu(str(profile.get("gpus")))[1]
    return name, count


def request_for(spec: ExperimentSpec, settings: Any = None) -> PlanRequest | Unplanned:
    """The plan request for ``spec``, or why there is none (no facts, no GPU)."""
    from config.planner import PlanRequest, find_facts, find_gpu

    catalog_dir = getattr(settings, "catalog_dir", None)
    facts = find_facts(spec.model, catalog_dir)
    if facts is None:
        return Unplanned(
            f"no architecture facts for {spec.model}",
            f"Add its config.json fields to model-facts.yaml in {'your' if catalog_dir else 'a'} catalog dir, "
            f"or check it by hand: sweepdeck plan {spec.model} --model-config path/to/config.json",
            "no model facts (see sweepdeck plan --model-config)",
        )
    profile_name, profile_count = _settings_gpu(spec, settings)
    gpu_name = spec.engine.gpu or profile_name
    gpu = find_gpu(gpu_name) if gpu_name else None
    if gpu is None:
        what = f"GPU {gpu_name!r} is not in the GPU catalog" if gpu_name else "the GPU is not known"
        return Unplanned(what, "Set `gpu:` in the backend profile (e.g. gpu: H100-80GB) or edit the GPU in the review.",
                         "GPU unknown — edit GPU model, or set gpu: in the profile")
    flags = engine_flags(spec.engine.extra_args)
    tp = spec.engine.tp
    pp = flag_number(flags, ("--pipeline-parallel-size", "-pp"), int, 1)
    dp = flag_number(flags, ("--data-parallel-size", "-dp"), int, 1)
    gpus = profile_count if profile_count else (tp if spec.backend in ("tekton", "argo") else None)
    if spec.backend == "slurm" and gpus is None:
        gpus = tp
    return PlanRequest(
        facts=facts, gpu=gpu, tp=tp, pp=pp, dp=dp,
        max_model_len=spec.engine.max_model_len,
        gpu_memory_utilization=flag_number(flags, ("--gpu-memory-utilization",), float, 0.9),
        dtype=flags.get("--dtype", "auto"),
        kv_cache_dtype=flags.get("--kv-cache-dtype", "auto"),
        quantization=flags.get("--quantization") or flags.get("-q"),
        max_num_seqs=spec.engine.max_num_seqs,
        max_num_batched_tokens=spec.engine.max_num_batched_tokens,
        gpus_available=gpus,
        enforce_eager="--enforce-eager" in flags,
        block_size=flag_number(flags, ("--block-size",), int, None),
    )


def plan_for(spec: ExperimentSpec, settings: Any = None) -> Plan | Unplanned:
    """The memory plan of ``spec`` (with the nearest fits when it does not fit), or why there is none."""
    from config.planner import plan

    request = request_for(spec, settings)
    if isinstance(request, Unplanned):
        return request
    try:
        return plan(request)
    except SweepdeckError as exc:  # an extra argument vLLM would refuse too (--dtype=foo)
        return Unplanned(exc.message, exc.hint or "Fix the vLLM argument in the review.")


def planner_check(spec: ExperimentSpec, settings: Any = None) -> Check | None:
    """The pre-flight check: fail when vLLM cannot start, warn when long requests will queue.

    None when there is nothing to plan with (no facts for the model, no GPU known): a
    warning there would make every such launch ask for a confirmation; the review
    line says what is missing and how to give it instead.
    """
    from config.planner.text import suggestion_text, summary_line

    result = plan_for(spec, settings)
    if isinstance(result, Unplanned):
        return None
    data = result.to_dict()
    if not result.fits:
        fixes = "; ".join(suggestion_text(s, result.max_model_len) for s in result.suggestions)
        nothing = "Nothing nearby fits this GPU: a larger GPU or quantized weights."
        hint = f"Nearest that fit: {fixes}." if fixes else nothing
        return Check(CHECK_NAME, "fail", summary_line(result), hint, data=data)
    tight = [w for w in result.warnings if "start-up is tight" in w]
    if tight:
        return Check(
            CHECK_NAME, "warn", f"{summary_line(result)}; {tight[0]}",
            "vLLM may run out of memory capturing CUDA graphs or warming up the sampler: lower "
            "--gpu-memory-utilization a little, or max_num_seqs.",
            data=data,
        )
    if result.max_concurrency < result.max_num_seqs:
        return Check(
            CHECK_NAME, "warn",
            f"{summary_line(result)}; fewer than max_num_seqs={result.max_num_seqs} requests of "
            f"{result.max_model_len} tokens fit at once",
            f"Requests that long will queue; lower max_num_seqs to {max(1, int(result.max_concurrency))} "
            "or max_model_len, or add GPUs.",
            data=data,
        )
    return Check(CHECK_NAME, "pass", summary_line(result), data=data)


def _fix_changes(spec: ExperimentSpec, changes: dict[str, Any]) -> dict[str, Any]:
    """Planner changes as spec field changes (flags that are extra args replace their old value)."""
    out: dict[str, Any] = {}
    args = list(spec.engine.extra_args)
    for name, value in changes.items():
        if name in ("tp", "max_model_len", "max_num_seqs"):
            out[f"engine.{name}"] = value
            continue
        flag = "--" + name.replace("_", "-")
        args = [a for a in args if a.partition("=")[0] != flag]
        args.append(f"{flag}={value:g}" if isinstance(value, float) else f"{flag}={value}")
    if args != list(spec.engine.extra_args):
        out["engine.extra_args"] = tuple(args)
    return out


def planner_fixes(rule_id: str, spec: ExperimentSpec, settings: Any = None) -> list[Fix] | None:
    """The nearest fitting configurations for a memory failure; None when the planner cannot help.

    None (the caller keeps its own fixes) when the rule is not a memory failure,
    there is nothing to plan with, or the planner thinks the configuration fits.
    """
    from config.planner.text import suggestion_text

    if rule_id not in PLANNED_RULES:
        return None
    result = plan_for(spec, settings)
    if isinstance(result, Unplanned) or result.fits or not result.suggestions:
        return None
    return [
        Fix(f"Planner: {s.label}", _fix_changes(spec, s.changes), suggestion_text(s, result.max_model_len))
        for s in result.suggestions
    ]


__all__ = ["CHECK_NAME", "PLANNED_RULES", "Unplanned", "engine_flags", "flag_number", "plan_for", "planner_check",
           "planner_fixes",
           "request_for"]
