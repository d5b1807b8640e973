"""The ``tekton`` backend: BLIS data collection on Tekton, tektonc rendering, matrix sweeps.

Modules: :mod:`.render` (tektonc-compatible renderer), :mod:`.build` (spec →
values, Pipeline, PipelineRun), :mod:`.backend` (:class:`TektonBackend`),
:mod:`.matrix` (transform-pr), :mod:`.install` (applying Tasks).
"""

from __future__ import annotations


def __getattr__(name: str):
    # Lazy: `sweepdeck tekton render` must not import the kubernetes client.
    if name == "TektonBackend":
        from backends.tekton.backend import TektonBackend

        return TektonBackend
    raise AttributeError(name)


__all__ = ["TektonBackend"]
