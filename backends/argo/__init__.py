"""The ``argo`` backend: work-queue sweeps run by Argo Workflows (see :mod:`backends.argo.backend`)."""

from backends.argo.backend import ArgoBackend

__all__ = ["ArgoBackend"]
