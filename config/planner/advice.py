"""The nearest configurations that fit: smallest TP, largest max_model_len, a utilization.

Each suggestion changes as little as possible of the failing configuration and is
planned again in full, so what it promises (tokens, concurrency) is what
:func:`config.planner.memory.plan` predicts for it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from config.planner.weights import padded_vocab

if TYPE_CHECKING:
    from config.planner.calibration import Calibration
    from config.planner.memory import Plan, PlanRequest, Suggestion

MAX_TP = 16
KV_CODES = ("kv-too-small", "no-kv-memory")


def valid_tps(request: PlanRequest, limit: int = MAX_TP) -> list[int]:
    """TP sizes vLLM accepts for this model: they divide the heads and the padded vocabulary."""
    f = request.facts
    return [tp for tp in range(1, limit + 1) if f.heads % tp == 0 and padded_vocab(f.vocab) % tp == 0]


def _fits(request: PlanRequest, cal: Calibration) -> Plan | None:
    from config.planner.memory import plan

    result = plan(request, cal, advise=False)
    return result if result.fits else None


def _suggestion(label: str, changes: dict, detail: str, result: Plan) -> Suggestion:
    from config.planner.memory import Suggestion

    return Suggestion(label, changes, detail, result.kv_cache_tokens, result.max_concurrency)


def smallest_tp(p: Plan, cal: Calibration) -> Suggestion | None:
    r = p.request
    limit = r.gpus_available // (r.pp * r.dp) if r.gpus_available else MAX_TP
    for tp in valid_tps(r, max(limit, 1)):
        if tp == r.tp:
            continue
        found = _fits(replace(r, tp=tp, gpus_available=None if r.gpus_available is None else r.gpus_available), cal)
        if found is not None and (tp > r.tp or p.problems[0].code in ("tp-heads", "tp-vocab", "gpus")):
            return _suggestion(f"TP {tp}", {"tp": tp}, f"TP={r.tp} -> TP={tp} ({tp * r.pp * r.dp} GPUs)", found)
    return None


def largest_max_model_len(p: Plan, cal: Calibration) -> Suggestion | None:
    r = p.request
    if not any(x.code in (*KV_CODES, "max-model-len") for x in p.problems):
        return None
    hi = min(p.max_model_len, r.facts.max_position)
    lo, best = 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        found = _fits(replace(r, max_model_len=mid), cal)
        if found is not None:
            best, lo = (mid, found), mid + 1
        else:
            hi = mid - 1
    if best is None or best[0] == p.max_model_len:
        return None
    length, found = best
    return _suggestion(f"max_model_len {length}", {"max_model_len": length},
                       f"max_model_len={p.max_model_len} -> {length}", found)


def nearest_utilization(p: Plan, cal: Calibration) -> Suggestion | None:
    """The utilization closest to the current one (0.50–0.99, steps of 0.01) that fits."""
    r = p.request
    current = round(r.gpu_memory_utilization, 2)
    steps = sorted((x / 100 for x in range(50, 100)), key=lambda u: (abs(u - current), -u))
    for util in steps:
        if util == current:
            continue
        found = _fits(replace(r, gpu_memory_utilization=util), cal)
        if found is not None:
            return _suggestion(f"utilization {util:.2f}", {"gpu_memory_utilization": util},
                               f"gpu_memory_utilization={current:g} -> {util:.2f}", found)
    return None


def fp8_kv_cache(p: Plan, cal: Calibration) -> Suggestion | None:
    r = p.request
    if r.kv_cache_dtype.startswith("fp8") or not any(x.code == "kv-too-small" for x in p.problems):
        return None
    found = _fits(replace(r, kv_cache_dtype="fp8"), cal)
    if found is None:
        return None
    return _suggestion("fp8 KV cache", {"kv_cache_dtype": "fp8"},
                       "kv_cache_dtype=auto -> fp8 (half the bytes per token)", found)


def fewer_seqs(p: Plan, cal: Calibration) -> Suggestion | None:
    r = p.request
    if not any(x.code in ("warmup-oom", *KV_CODES) for x in p.problems):
        return None
    seqs = p.max_num_seqs
    while seqs > 1:
        seqs //= 2
        found = _fits(replace(r, max_num_seqs=seqs), cal)
        if found is not None:
            return _suggestion(f"max_num_seqs {seqs}", {"max_num_seqs": seqs},
                               f"max_num_seqs={p.max_num_seqs} -> {seqs} (a smaller sampler peak)", found)
    return None


def nearest_fits(p: Plan, cal: Calibration) -> list[Suggestion]:
    """Every kind of fix that works, nearest first; none for a configuration that fits."""
    if p.fits:
        return []
    out = []
    for finder in (smallest_tp, largest_max_model_len, nearest_utilization, fp8_kv_cache, fewer_seqs):
        found = finder(p, cal)
        if found is not None:
            out.append(found)
    return out
