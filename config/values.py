"""A BLIS values.yaml (``stack.*``) as the spec reads it: engine settings, TP sweep, image, resources, workload.

:func:`build_spec <config.spec.build_spec>` layers a values file (a Tekton or
Argo profile's, or sweepdeck's own ``config/data/values.yaml``) over the
catalog's recommendations with :func:`apply_values` and
:func:`apply_inference_perf`; every value taken gets :attr:`Source.VALUES` as
its origin, so the review can say where it came from.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from config import inference_perf
from config.catalog import WorkloadProfile, make_workload
from config.errors import SweepdeckError
from config.spec import (
    EngineSettings,
    Origin,
    Source,
    _positive_int,
    _validate_field,
    acceptable_extra_arg,
)


def apply_values(
    values: dict[str, Any],
    engine: EngineSettings,
    prof: WorkloadProfile,
    origins: dict[str, Origin],
    take_workload: bool,
) -> tuple[EngineSettings, tuple[int, ...], WorkloadProfile]:
    """Layer a BLIS-format values.yaml (``stack.*``) over the catalog settings."""
    stack = values.get("stack") or {}
    if not isinstance(stack, dict):
        raise SweepdeckError("values file: 'stack' must be a mapping.")
    updates: dict[str, Any] = {}
    for key, name in (
        ("MAX_MODEL_LEN", "max_model_len"),
        ("MAX_NUM_BATCHED_TOKENS", "max_num_batched_tokens"),
        ("MAX_NUM_SEQS", "max_num_seqs"),
    ):
        if key in stack:
            updates[name] = _positive_int(f"stack.{key}", stack[key])
            origins[f"engine.{name}"] = Origin(Source.VALUES)
    tps = ((stack.get("treatments") or {}).get("tensorParallelism")) or []
    sweep: tuple[int, ...] = ()
    if tps:
        sweep = tuple(_positive_int("stack.treatments.tensorParallelism", t) for t in tps)
        updates["tp"] = sweep[0]
        origins["engine.tp"] = Origin(Source.VALUES)
        origins["tp_sweep"] = Origin(Source.VALUES)
    from config.planner.gpus import find_gpu, values_gpu

    accelerator = find_gpu(values_gpu(values) or "")
    if accelerator is not None:  # decode.acceleratorTypes.labelValues: the GPU the pods are scheduled on
        updates["gpu"] = accelerator.name
        origins["engine.gpu"] = Origin(Source.VALUES)
    image = values_image(values)
    if image:
        updates["image"] = image
        origins["engine.image"] = Origin(Source.VALUES)
    for name, value in values_resources(values).items():
        updates[name] = _validate_field(f"engine.{name}", value,
                                        where=f"values file: decode.containers[name=vllm].resources {name}")
        origins[f"engine.{name}"] = Origin(Source.VALUES)
    wl = stack.get("workload")
    if take_workload and isinstance(wl, dict) and isinstance(wl.get("profile"), dict):
        prof = make_workload(str(wl.get("app", "values")), wl["profile"], source="values file: stack.workload")
        origins["workload"] = Origin(Source.VALUES)
    return replace(engine, **updates), sweep, prof


def apply_inference_perf(
    values: dict[str, Any],
    prof: WorkloadProfile,
    engine: EngineSettings,
    origins: dict[str, Origin],
    chosen: bool,
) -> tuple[dict[str, Any] | None, WorkloadProfile, EngineSettings]:
    """Values with ``workload.harness: inference-perf`` and a ``profileTemplate``: the spec's template.

    The values' template stands unless a workload was chosen (a preset becomes
    a random-data, one-stage template); ``stack.extra_overrides`` that are vLLM
    arguments join the extra arguments (source: values.yaml).
    """
    base = inference_perf.template_of(values)
    if base is None:
        return None, prof, engine
    inference_perf.check_template(base)
    if chosen:
        template = inference_perf.from_preset(prof, base)
        # a change from the values' workload (the review and summary show it as OVERRIDE)
        origins["workload"] = Origin(origins["workload"].source, origins["workload"].base or inference_perf.HARNESS)
    else:
        template = base
        prof = WorkloadProfile(app=inference_perf.HARNESS)
        origins["workload"] = Origin(Source.VALUES)
    overrides = (values.get("stack") or {}).get("extra_overrides")
    args, _others = inference_perf.split_overrides(overrides, acceptable_extra_arg)
    if args:
        engine = replace(engine, extra_args=tuple(dict.fromkeys(engine.extra_args + tuple(args))))
        origins["engine.extra_args"] = Origin(Source.VALUES)
    return template, prof, engine


def values_workload_app(values: dict[str, Any] | None) -> str | None:
    try:
        return str(values["stack"]["workload"]["app"])  # type: ignore[index]  # any YAML shape: KeyError/TypeError handled below
    except (KeyError, TypeError):
        return None


def values_image(values: dict[str, Any]) -> str | None:
    """The vLLM image where BLIS values keep it: decode.containers[name=vllm].image."""
    try:
        containers = values["stack"]["model"]["helmValues"]["decode"]["containers"]
    except (KeyError, TypeError):
        return None
    for container in containers or []:
        if isinstance(container, dict) and container.get("name") == "vllm" and container.get("image"):
            return str(container["image"])
    return None


def _vllm_container(values: dict[str, Any]) -> dict[str, Any] | None:
    try:
        containers = values["stack"]["model"]["helmValues"]["decode"]["containers"]
    except (KeyError, TypeError):
        return None
    for container in containers or []:
        if isinstance(container, dict) and container.get("name") == "vllm":
            return container
    return None


def values_resources(values: dict[str, Any]) -> dict[str, str]:
    """``memory``/``cpu`` of decode.containers[name=vllm].resources (limits, else requests).

    Only the keys the values file sets are returned (none: the defaults stand).
    """
    container = _vllm_container(values) or {}
    resources = found if isinstance(found := container.get("resources"), dict) else {}
    out: dict[str, str] = {}
    for part in ("requests", "limits"):  # limits last: they win
        section = resources.get(part)
        if isinstance(section, dict):
            out.update({k: str(section[k]) for k in ("memory", "cpu") if section.get(k) is not None})
    return out


__all__ = ["apply_inference_perf", "apply_values", "values_image", "values_resources", "values_workload_app"]
