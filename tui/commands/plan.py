"""``sweepdeck plan``: will vLLM fit on this GPU, and how many requests will it hold?

Plans ``vllm serve MODEL`` with the given flags the way vLLM v0.19 sizes memory
(flags not given take vLLM's own defaults) and prints, per GPU: physical memory,
the requested budget, weights, activation peak, non-torch memory, KV-cache memory,
tokens and blocks, max concurrency at max_model_len, and fits / does not fit with
every problem (in vLLM's words) and the nearest configurations that fit.

Exit codes: 0 fits, 1 does not fit, 2 bad input. Only argparse at import time.
"""

from __future__ import annotations

import argparse

DEFAULT_GPU = "H100-80GB"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "plan",
        help="memory plan: will vLLM fit on a GPU, and how many requests will it hold (--json)",
        description=(
            "Predict vLLM's startup memory for MODEL without a GPU: weights, activation peak, non-torch "
            "memory, KV cache, KV tokens, max concurrency, and whether it fits (with the nearest "
            "configurations that do). Flags mirror `vllm serve`; unset ones take vLLM's defaults. "
            "Example: sweepdeck plan meta-llama/Llama-3.1-8B-Instruct --gpu H100-80GB --max-model-len 8192"
        ),
    )
    p.add_argument("model", metavar="MODEL", help="catalog id or alias, or a Hugging Face id")
    p.add_argument("--gpu", metavar="NAME", help=f"GPU from the catalog (default: the profile's, else {DEFAULT_GPU})")
    p.add_argument("--gpu-memory", metavar="GiB", help="the GPU's memory as the driver reports it (overrides)")
    p.add_argument("--profile", "-p", help="take the GPU from this backend profile")
    p.add_argument("--tp", "--tensor-parallel-size", dest="tp", metavar="N", default="1", help="tensor parallel size")
    p.add_argument("--pp", "--pipeline-parallel-size", dest="pp", metavar="N", default="1", help="pipeline parallel")
    p.add_argument("--dp", "--data-parallel-size", dest="dp", metavar="N", default="1", help="data parallel size")
    p.add_argument("--gpus", metavar="N", help="GPUs in the request (default: TP x PP x DP)")
    p.add_argument("--max-model-len", metavar="L", help="context length (default: the model's maximum, as vLLM)")
    p.add_argument("--gpu-memory-utilization", metavar="U", default="0.9", help="vLLM's budget fraction (default 0.9)")
    p.add_argument("--dtype", default="auto", help="auto, bfloat16, float16, float32")
    p.add_argument("--kv-cache-dtype", default="auto", help="auto, fp8, fp8_e4m3, fp8_e5m2")
    p.add_argument("--quantization", "-q", metavar="Q", help="runtime (fp8...) or the checkpoint's (awq, gptq)")
    p.add_argument("--max-num-seqs", metavar="N", help="default: vLLM's for the GPU (1024 on H100/H200, else 256)")
    p.add_argument("--max-num-batched-tokens", metavar="N", help="default: vLLM's (8192 on H100/H200, else 2048)")
    p.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs")
    p.add_argument("--model-config", metavar="PATH", help="the model's config.json, or its directory (any model)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")


def _int(name: str, value: str | None) -> int | None:
    from config.errors import SweepdeckError

    if value is None:
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if number < 1:
        raise SweepdeckError(f"--{name} must be a positive integer, got {value!r}.", f"Example: --{name} 2")
    return number


def _float(name: str, value: str | None, example: str) -> float | None:
    from config.errors import SweepdeckError

    if value is None:
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        number = float("nan")
    if not number > 0 or number != number:
        raise SweepdeckError(f"--{name} must be a positive number, got {value!r}.", f"Example: --{name} {example}")
    return number


def resolve_model(args: argparse.Namespace, catalogs) -> str:
    """A catalog id for an alias; a Hugging Face id (``org/name``) or a --model-config model as given."""
    from config.errors import AmbiguousModel, SweepdeckError, UnknownModel
    from config.spec import check_safe

    name = check_safe("model", str(args.model).strip())
    try:
        return catalogs.models.resolve(name).id
    except AmbiguousModel as exc:
        raise SweepdeckError(exc.message, exc.hint + " (give the full id)") from None
    except UnknownModel:
        if "/" in name or args.model_config:
            return name
        raise
    except SweepdeckError:
        raise


def choose_gpu(args: argparse.Namespace, settings):
    """--gpu, else the profile's GPU, else the default profile's, else H100-80GB; --gpu-memory overrides the size."""
    from config.planner.gpus import custom_gpu, profile_gpu, resolve_gpu

    name = args.gpu
    if not name:
        try:
            profile = settings.profile(args.profile) if args.profile else (
                settings.profile(settings.default_profile) if settings.default_profile else None)
        except Exception:  # an unusable profile just means "no GPU from a profile"
            if args.profile:
                raise
            profile = None
        name, _ = profile_gpu(profile.options if profile is not None else None)
    memory = _float("gpu-memory", args.gpu_memory, "79.19")
    if memory is not None:
        return custom_gpu(memory, resolve_gpu(name) if name else None)
    return resolve_gpu(name or DEFAULT_GPU)


def build_request(args: argparse.Namespace):
    """Settings, model facts and the :class:`PlanRequest` (raises SweepdeckError on bad input)."""
    from config.errors import SweepdeckError
    from config.planner import PlanRequest, load_facts
    from config.settings import load_settings

    settings = load_settings(args.config, args.catalog_dir)
    model = resolve_model(args, settings.catalogs)
    gpu = choose_gpu(args, settings)
    facts = load_facts(model, model_config=args.model_config, catalog_dir=settings.catalog_dir)
    tp, pp, dp = _int("tp", args.tp), _int("pp", args.pp), _int("dp", args.dp)
    gpus = _int("gpus", args.gpus)
    if gpus is not None and tp * pp * dp > gpus:  # type: ignore[operator]  # validated ints above
        raise SweepdeckError(
            f"TP {tp} x PP {pp} x DP {dp} = {tp * pp * dp} GPUs, but the request has {gpus}.",  # type: ignore[operator]  # validated ints above
            f"Lower --tp/--pp/--dp so their product is at most {gpus}, or ask for more GPUs with --gpus.",
        )
    util = _float("gpu-memory-utilization", args.gpu_memory_utilization, "0.9")
    return PlanRequest(
        facts=facts, gpu=gpu, tp=tp, pp=pp, dp=dp,  # type: ignore[arg-type]  # _int returns int for set values
        max_model_len=_int("max-model-len", args.max_model_len),
        gpu_memory_utilization=util if util is not None else 0.9,
        dtype=args.dtype, kv_cache_dtype=args.kv_cache_dtype, quantization=args.quantization,
        max_num_seqs=_int("max-num-seqs", args.max_num_seqs),
        max_num_batched_tokens=_int("max-num-batched-tokens", args.max_num_batched_tokens),
        gpus_available=gpus, enforce_eager=args.enforce_eager,
    )


def main(args: argparse.Namespace) -> int:
    import json

    from config.planner import plan
    from config.planner.text import report_lines

    result = plan(build_request(args))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print("\n".join(report_lines(result)))
    return 0 if result.fits else 1
