"""Runs outlive their viewer: the run supervisor and its clients.

A run is owned by a process of its own — its supervisor — not by the screen
or command that shows it. The TUI and the headless commands are clients:
they start the supervisor (:func:`start_run`), follow its events, ask it to
cancel or detach, and may die at any moment (:mod:`.supervisor` states the
policy). :mod:`.reconcile` settles runs whose supervisor is gone.
"""

from backends.supervisor.client import RunInfo, RunLink, SupervisorGone, connect, start_run

__all__ = ["RunInfo", "RunLink", "SupervisorGone", "connect", "start_run"]
