"""The GPU catalog: a GPU name (or alias) → memory as the driver reports it, and friends.

The catalog is ``config/data/gpus.yaml``. Names match case-insensitively and ignore
``_``/space vs ``-``, so the SLURM gres type (``A40`` in ``--gpus A40:1``), the
Kubernetes ``nvidia.com/gpu.product`` label value (``NVIDIA-H100-80GB-HBM3``) and
what people type (``h100``) all find the same entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from config.errors import SweepdeckError

GPUS_FILE = Path(__file__).resolve().parent.parent / "data" / "gpus.yaml"


@dataclass(frozen=True, slots=True)
class Gpu:
    """One GPU model.

    Args:
        name: Catalog name (``H100-80GB``), or ``custom`` for ``--gpu-memory``.
        memory_gib: Total memory as ``torch.cuda.mem_get_info`` reports it.
        compute_capability: ``major.minor``; bfloat16 needs 8.0 or more.
        sms: Streaming multiprocessors (sizes the sampler's Triton buffer).
        large_defaults: vLLM picks its large batch defaults (1024 seqs / 8192 tokens).
    """

    name: str
    memory_gib: float
    compute_capability: str = "8.0"
    sms: int = 132
    large_defaults: bool = False

    @property
    def supports_bf16(self) -> bool:
        major, _, _ = self.compute_capability.partition(".")
        return int(major or 0) >= 8


def _key(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip()).lower()


@lru_cache(maxsize=1)
def _load() -> tuple[dict[str, Gpu], dict[str, str]]:
    from config.catalog import load_yaml

    data = load_yaml(GPUS_FILE) or {}
    gpus: dict[str, Gpu] = {}
    aliases: dict[str, str] = {}
    for name, body in (data.get("gpus") or {}).items():
        gpus[name] = Gpu(
            name=name,
            memory_gib=float(body["memory_gib"]),
            compute_capability=str(body.get("compute_capability", "8.0")),
            sms=int(body.get("sms", 132)),
            large_defaults=bool(body.get("large_defaults", False)),
        )
        aliases[_key(name)] = name
        for alias in body.get("aliases") or ():
            aliases[_key(str(alias))] = name
    return gpus, aliases


def gpu_names() -> list[str]:
    """Catalog names, in file order."""
    return list(_load()[0])


def find_gpu(name: str) -> Gpu | None:
    """The catalog GPU for ``name`` or one of its aliases; None when unknown."""
    gpus, aliases = _load()
    canonical = aliases.get(_key(name))
    return gpus[canonical] if canonical else None


def resolve_gpu(name: str) -> Gpu:
    """Like :func:`find_gpu`, but an unknown name is a :class:`SweepdeckError`.

    Raises:
        SweepdeckError: the name is in no entry; the hint lists the catalog and
            ``--gpu-memory``.
    """
    gpu = find_gpu(name)
    if gpu is None:
        raise SweepdeckError(
            f"Unknown GPU {name!r}.",
            f"Known GPUs: {', '.join(gpu_names())}; or give its memory with --gpu-memory GiB.",
        )
    return gpu


def custom_gpu(memory_gib: float, like: Gpu | None = None) -> Gpu:
    """A GPU given by its memory only (``--gpu-memory``), with ``like``'s other facts."""
    if not memory_gib > 0 or memory_gib > 4096:
        raise SweepdeckError(f"GPU memory must be a positive number of GiB, got {memory_gib!r}.",
                             "Example: --gpu-memory 79.19")
    base = like or Gpu("custom", memory_gib, large_defaults=memory_gib >= 70)
    return Gpu(f"{base.name} ({memory_gib:g} GiB)" if like else f"{memory_gib:g} GiB GPU", memory_gib,
               base.compute_capability, base.sms, base.large_defaults)


def slurm_gres_gpu(gres: str) -> tuple[str | None, int]:
    """``A40:4`` → (``A40``, 4); ``4`` → (None, 4); ``gpu:A100:2`` → (``A100``, 2)."""
    parts = [p for p in str(gres).strip().split(":") if p]
    if parts and parts[0].lower() == "gpu":
        parts = parts[1:]
    count = 1
    if parts and parts[-1].isdigit():
        count = int(parts.pop())
    return (parts[0] if parts else None), count


def profile_gpu(options: dict[str, Any] | None) -> tuple[str | None, str]:
    """The GPU a backend profile names, and the key it came from.

    A ``gpu`` key wins; else a SLURM profile's ``gpus: "A40:1"`` type; else a Tekton
    profile's ``gpu_product`` label value. Names that are not in the catalog are
    returned as they are (the caller reports them).
    """
    options = options or {}
    if options.get("gpu"):
        return str(options["gpu"]), "gpu"
    if options.get("gpus"):
        name, _ = slurm_gres_gpu(str(options["gpus"]))
        if name:
            return name, "gpus"
    if options.get("gpu_product"):
        return str(options["gpu_product"]), "gpu_product"
    return None, ""


def values_gpu(values: dict[str, Any] | None) -> str | None:
    """The first ``acceleratorTypes.labelValues`` entry of a BLIS values.yaml (decode pods)."""
    try:
        decode = values["stack"]["model"]["helmValues"]["decode"]  # type: ignore[index]  # nested YAML of any shape
    except (KeyError, TypeError):
        return None
    accel = decode.get("acceleratorTypes") if isinstance(decode, dict) else None
    labels = accel.get("labelValues") if isinstance(accel, dict) else None
    if isinstance(labels, list) and labels:
        return str(labels[0])
    return None
