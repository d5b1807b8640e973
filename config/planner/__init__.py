"""The memory planner: will vLLM fit, and how many requests will it hold? (issue 16).

``plan(PlanRequest(facts, gpu, tp=..., ...))`` predicts vLLM v0.19's startup from
model facts (:mod:`config.planner.facts`), a GPU (:mod:`config.planner.gpus`) and
the engine settings: weights, activation peak, non-torch memory, KV-cache memory,
KV tokens and blocks, max concurrency at max_model_len, and whether it fits, with
every problem (in vLLM's own words) and the nearest configurations that fit.
No Textual, no network.
"""

from config.planner.calibration import DEFAULT, Calibration
from config.planner.facts import ModelFacts, facts_from_config, facts_from_path, find_facts, load_facts
from config.planner.gpus import Gpu, custom_gpu, find_gpu, gpu_names, profile_gpu, resolve_gpu
from config.planner.memory import Plan, PlanRequest, Problem, Suggestion, plan

__all__ = [
    "DEFAULT", "Calibration", "Gpu", "ModelFacts", "Plan", "PlanRequest", "Problem", "Suggestion",
    "custom_gpu", "facts_from_config", "facts_from_path", "find_facts", "find_gpu", "gpu_names",
    "load_facts", "plan", "profile_gpu", "resolve_gpu",
]
