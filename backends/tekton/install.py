"""Applying Tekton resources (Tasks, StepActions, Pipelines) through the API."""

from __future__ import annotations

from typing import Any

from backends.kube import Kube, KubeError
from config.errors import SweepdeckError

TEKTON_GROUP = "tekton.dev"


async def require_tekton(kube: Kube) -> list[str]:
    """The tekton.dev versions the cluster serves; raises when Tekton is not installed."""
    groups = await kube.api_groups()
    versions = groups.get(TEKTON_GROUP) or []
    if "v1" not in versions:
        raise SweepdeckError(
            f"Tekton Pipelines (tekton.dev/v1) is not installed on {kube.server}.",
            "Install Tekton Pipelines (or OpenShift Pipelines) first.",
        )
    return versions


async def apply_all(kube: Kube, objects: list[dict[str, Any]], namespace: str) -> list[str]:
    """Create or update each object in ``namespace``; returns ``"Task x created"`` lines."""
    lines = []
    for obj in objects:
        obj = dict(obj)
        obj["metadata"] = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "namespace"}
        action, _ = await kube.apply(obj, namespace)
        lines.append(f"{obj['kind']} {obj['metadata']['name']} {action} in {namespace}")
    return lines


async def install_shared(task: dict[str, Any], namespace: str, kubeconfig: str | None = None,
                         context: str | None = None) -> list[str]:
    """Apply the shared guidellm Task into ``namespace`` (created when missing)."""
    kube = Kube.connect(kubeconfig, context)
    try:
        await require_tekton(kube)
        lines = []
        if await kube.get("", "v1", "namespaces", namespace) is None:
            try:
                await kube.create("", "v1", "namespaces",
                                  {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
            except KubeError as exc:
                if exc.status != 409:
                    raise
            lines.append(f"Namespace {namespace} created")
        lines += await apply_all(kube, [task], namespace)
        lines.append(
            "Use it through the cluster resolver: taskRef: {resolver: cluster, params: "
            f"[{{name: kind, value: task}}, {{name: name, value: {task['metadata']['name']}}}, {{name: namespace, "
            f"value: {namespace}}}]}}"
        )
        return lines
    finally:
        kube.close()
