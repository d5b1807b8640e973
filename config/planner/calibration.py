"""The few memory terms the planner cannot derive from the model and settings alone.

Everything else (weights, sampler and MoE buffers, KV pages) is counted from the
architecture. What is left is measured once on real startups and kept here:

* ``activation_const``: what the profile run's torch peak holds besides the terms
  counted in :func:`config.planner.memory.activation_bytes` (small persistent
  buffers of the model runner);
* ``non_torch_*``: memory outside PyTorch that the profile run adds — cuBLAS/kernel
  workspaces with one GPU, plus NCCL / custom all-reduce buffers once GPUs talk
  (vLLM's "non-torch forward increase memory": 0.24–0.25 GiB at TP 1,
  2.06–2.07 at TP 2, 2.13 at TP 4 in the reference runs);
* ``context_*``: the CUDA context (and NCCL communicators) that exist before vLLM's
  first memory snapshot; vLLM does not count them in its budget, but they decide
  whether "free memory on device" covers the requested budget and how much is left
  for CUDA graphs after it;
* ``cudagraph_*``: the memory CUDA graph capture takes after the KV cache is
  allocated (vLLM v0.19 estimates it but does not subtract it:
  ``VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS`` defaults to 0).

:func:`fit` recomputes the measured constants from startup records, so the
benchmark can calibrate on some runs and report the error on the others.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from statistics import mean


@dataclass(frozen=True, slots=True)
class Calibration:
    """Measured constants, in GiB (defaults: fitted on the six vLLM v0.19.0 H100 reference runs)."""

    activation_const: float = 0.035
    non_torch_single: float = 0.245
    non_torch_multi: float = 2.065
    non_torch_per_rank: float = 0.033
    non_torch_pp: float = 0.07
    context_single: float = 0.51
    context_multi: float = 1.52
    context_moe_multi: float = 0.48
    # least squares over 42 startups of the vLLM accuracy study (v0.19.0, H100; mean abs
    # error 0.09 GiB, worst 0.39 GiB for MoE models): base + per_layer x layers x sizes/51 / sqrt(TP)
    # + per_layer_hidden x layers x hidden/4096 x sizes/51 / sqrt(TP) + moe
    cudagraph_base: float = 0.38
    cudagraph_per_layer: float = 0.0101
    cudagraph_per_layer_hidden: float = 0.0072
    cudagraph_moe: float = 0.55
    # below this much room after the budget and CUDA graphs, vLLM's sampler warm-up ran out of
    # memory (gpt-oss-20b TP 2 at 0.95: 0.42 GiB measured, failed; startups with 0.60 GiB and more ran)
    warmup_headroom: float = 0.5
    source: str = "6 vLLM v0.19.0 runs, H100-80GB (Llama-3.1-8B-Instruct, Qwen2.5-7B-Instruct, TP 1/2/4)"

    def non_torch(self, tp: int, pp: int, last_stage: bool) -> float:
        """Non-torch memory the profile run adds on one GPU."""
        if tp > 1:
            return self.non_torch_multi + self.non_torch_per_rank * (tp - 2)
        if pp > 1 and not last_stage:
            return self.non_torch_pp
        return self.non_torch_single

    def context(self, world: int, moe: bool) -> float:
        """Memory in use before vLLM's first snapshot (CUDA context, NCCL communicators)."""
        if world <= 1:
            return self.context_single
        return self.context_multi + (self.context_moe_multi if moe else 0.0)

    def cudagraph(self, layers: int, hidden: int, tp: int, moe: bool, enforce_eager: bool,
                  capture_sizes: int = 51) -> float:
        """Memory CUDA graph capture takes (estimate; 0 with --enforce-eager).

        Fitted with 51 capture sizes (up to 512 tokens, vLLM's default); more sizes
        (gpt-oss captures up to 1024: 83 sizes) scale the per-layer part.
        """
        if enforce_eager:
            return 0.0
        scale = layers * capture_sizes / 51 / tp**0.5
        per_layer = scale * (self.cudagraph_per_layer + self.cudagraph_per_layer_hidden * hidden / 4096)
        return self.cudagraph_base + per_layer + (self.cudagraph_moe if moe else 0.0)


DEFAULT = Calibration()


@dataclass(frozen=True, slots=True)
class Observation:
    """One measured startup, reduced to what :func:`fit` needs (GiB)."""

    tp: int
    activation_measured: float
    activation_counted: float  # the planner's activation without activation_const
    non_torch: float


def fit(observations: Iterable[Observation], base: Calibration = DEFAULT) -> Calibration:
    """Calibration fitted on ``observations`` (constants with no data keep ``base``'s value)."""
    obs = list(observations)
    changes: dict[str, float] = {}
    if obs:
        changes["activation_const"] = mean(o.activation_measured - o.activation_counted for o in obs)
    single = [o.non_torch for o in obs if o.tp == 1]
    if single:
        changes["non_torch_single"] = mean(single)
    multi = [o for o in obs if o.tp >= 2]
    two = [o.non_torch for o in multi if o.tp == 2]
    if two:
        changes["non_torch_multi"] = mean(two)
    at_two = changes.get("non_torch_multi", base.non_torch_multi)
    wider = [(o.non_torch - at_two) / (o.tp - 2) for o in multi if o.tp > 2]
    if wider:
        changes["non_torch_per_rank"] = mean(wider)
    return replace(base, **changes, source=f"fitted on {len(obs)} run(s)")
