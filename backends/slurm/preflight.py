"""Pre-flight checks of a slurm profile that come from its catalog and its settings.

:func:`profile_checks` is what the backend's ``preflight`` adds to its own
checks: a warning when the profile named ``alvis`` would run bare
``vllm serve`` (the original ran vLLM inside an Apptainer image), and the
run's max_model_len against the model's own limit when the hub scan read it.
"""

from __future__ import annotations

from typing import Any

from backends.base import Check
from backends.slurm.catalog import ALVIS_CONTAINER, ClusterCatalog

BARE = ["vllm", "serve"]


def container_check(profile: Any) -> Check | None:
    """A warning for the ``alvis`` profile without a container line (None: nothing to say)."""
    if getattr(profile, "name", "") != "alvis":
        return None
    command = str(profile.get("container") or "vllm serve").split()
    if command != BARE:
        return None
    return Check(
        "Server command",
        "warn",
        "profile alvis has no 'container': the job would run bare `vllm serve`, which needs vLLM installed on the "
        "compute node; the original vllm-connect job script runs it in Alvis' vLLM Apptainer image",
        f"Add to profile alvis in your sweepdeck config: container: {ALVIS_CONTAINER}",
        {"container": ALVIS_CONTAINER},
    )


def context_check(catalog: ClusterCatalog, spec: Any) -> Check | None:
    """The run's max_model_len against the model's max_position_embeddings (None: limit unknown)."""
    model = catalog.find(spec.model)
    if model is None or not model.context_limit:
        return None
    mml = int(spec.engine.max_model_len)
    limit = model.context_limit
    if mml > limit:
        return Check(
            "max_model_len",
            "fail",
            f"{mml} is above {model.name}'s limit of {limit} tokens (max_position_embeddings in its config.json)",
            f"Use max_model_len {limit} or less (in models.json, or -m with a smaller model).",
            {"limit": limit},
        )
    return Check("max_model_len", "pass", f"{mml} (the model accepts up to {limit:,})", data={"limit": limit})


def profile_checks(profile: Any, catalog: ClusterCatalog, spec: Any) -> list[Check]:
    """The checks :func:`container_check` and :func:`context_check` have something to say about."""
    return [c for c in (container_check(profile), context_check(catalog, spec)) if c is not None]
