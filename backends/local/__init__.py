"""The ``local`` backend: a vLLM server (or the built-in simulator) on this machine.

* :mod:`.backend` — :class:`LocalBackend`: configuration, pre-flight, launch, stop;
* :mod:`.run` — :class:`ServerRun`: one run's life as a small state machine;
* :mod:`.server` — the server process and the producers that report on it.
"""

from backends.local.backend import LocalBackend
from backends.procs import free_port, next_free_port, port_free, port_holder, stop_group

__all__ = ["LocalBackend", "free_port", "next_free_port", "port_free", "port_holder", "stop_group"]
