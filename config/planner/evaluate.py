"""Planner vs. real vLLM startups: per-run errors, with held-out calibration.

Used by the accuracy tests (the six reference runs) and ``tests/benchmarks/bench_planner.py``.
Held out means: the measured constants (:mod:`config.planner.calibration`) are fitted on
the runs of the *other* models only, then the runs of this model are predicted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from config.planner.calibration import DEFAULT, Calibration, Observation, fit
from config.planner.facts import ModelFacts
from config.planner.gpus import Gpu
from config.planner.memory import Plan, PlanRequest, activation_bytes, plan, resolve_dtype
from config.planner.vllm_log import StartupRecord
from config.planner.weights import GIB, pp_stages


@dataclass(frozen=True, slots=True)
class Outcome:
    """One run: what vLLM reported, what the planner predicted, the relative errors (%)."""

    record: StartupRecord
    plan: Plan
    errors: dict[str, float]


def request_from(record: StartupRecord, facts: ModelFacts, gpu: Gpu, quantization: str | None = None) -> PlanRequest:
    """The plan request that matches a logged startup (its engine settings)."""
    return PlanRequest(
        facts=facts, gpu=gpu, tp=record.tp, pp=record.pp, dp=record.dp,
        max_model_len=record.max_model_len or None,
        gpu_memory_utilization=record.gpu_memory_utilization,
        dtype=record.dtype or "auto", kv_cache_dtype=record.kv_cache_dtype or "auto",
        quantization=quantization, gpus_available=record.tp * record.pp,
    )


def observation(record: StartupRecord, request: PlanRequest, cal: Calibration = DEFAULT) -> Observation | None:
    """What :func:`config.planner.calibration.fit` needs from one logged startup."""
    if record.activation_gib is None or record.non_torch_gib is None or record.pp > 1:
        return None
    last = pp_stages(request.facts.layers, request.pp)[-1]
    counted = activation_bytes(request, last, resolve_dtype(request), cal) / GIB - cal.activation_const
    return Observation(record.tp, record.activation_gib, counted, record.non_torch_gib)


def _pct(predicted: float, actual: float | None) -> float | None:
    if actual is None or actual == 0:
        return None
    return (predicted / actual - 1) * 100


def errors(p: Plan, record: StartupRecord) -> dict[str, float]:
    """Relative errors in % (positive: over-estimate) for the terms the log reports."""
    pairs = {
        "weights": (p.weights_gib, record.weights_gib),
        "kv_cache_memory": (p.kv_cache_gib, record.kv_cache_gib),
        "kv_cache_tokens": (p.kv_cache_tokens, record.kv_cache_tokens),
        "max_concurrency": (p.max_concurrency, record.max_concurrency),
    }
    out = {}
    for name, (pred, actual) in pairs.items():
        value = _pct(pred, actual)
        if value is not None:
            out[name] = value
    return out


def held_out(runs: Iterable[tuple[StartupRecord, PlanRequest]], key: Callable[[StartupRecord], str] = lambda r: r.model,
             base: Calibration = DEFAULT) -> list[Outcome]:
    """Predict each group's runs with constants fitted on the other groups' runs only."""
    items = list(runs)
    outcomes = []
    for record, request in items:
        others = [observation(r, q, base) for r, q in items if key(r) != key(record)]
        cal = fit([o for o in others if o is not None], base)
        p = plan(request, cal, advise=False)
        outcomes.append(Outcome(record, p, errors(p, record)))
    return outcomes


def mean_abs(outcomes: Iterable[Outcome], name: str) -> float:
    values = [abs(o.errors[name]) for o in outcomes if name in o.errors]
    return sum(values) / len(values) if values else float("nan")
