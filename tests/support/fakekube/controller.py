"""The event loop the fake API server's test controllers share (Tekton, Argo).

A controller subscribes to the fake server's object events and runs, on one
background thread, both the reactions to those events (``_on_event``) and the
steps it scheduled for later (``_later``: a TaskRun finishing in 0.2 s, a pod
starting). Errors are collected in ``errors`` rather than raised, so a test
failure can show them.
"""

from __future__ import annotations

import heapq
import itertools
import queue as _queue
import threading
import time
from collections.abc import Callable
from typing import Any

from tests.support.fakekube.server import ApiError, FakeKube


class ControllerLoop:
    """Base of the test controllers: subscription, scheduled steps, the thread.

    Args:
        fake: The fake API server to drive.
        name: The thread's name.
    """

    def __init__(self, fake: FakeKube, name: str) -> None:
        self.fake = fake
        self.errors: list[str] = []
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._stop = threading.Event()
        self._queue = fake.subscribe()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._queue.put(None)
        self._thread.join(5)
        self.fake.unsubscribe(self._queue)

    def _on_event(self, etype: str, obj: dict[str, Any]) -> None:
        """React to one object event of the fake server (``ADDED``, ``MODIFIED``, ``DELETED``)."""
        raise NotImplementedError

    def _match(self, table: dict[str, Any], name: str) -> Any:
        """The entry of ``table`` whose key is ``name`` or its longest prefix (scripted failures by task/node name)."""
        best = max((k for k in table if name == k or name.startswith(k)), key=len, default=None)
        return table[best] if best is not None else None

    def _later(self, delay: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), fn))

    def _call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the controller thread (from another thread)."""
        self._queue.put(("__call__", fn))

    def _loop(self) -> None:
        while not self._stop.is_set():
            timeout = max(0.0, self._heap[0][0] - time.monotonic()) if self._heap else 0.5
            try:
                item = self._queue.get(timeout=timeout)
            except _queue.Empty:
                item = False
            if item is None:
                return
            try:
                if item and item[0] == "__call__":
                    item[1]()
                elif item:
                    self._on_event(*item)
                while self._heap and self._heap[0][0] <= time.monotonic():
                    _, _, fn = heapq.heappop(self._heap)
                    fn()
            except ApiError as exc:  # an object deleted under us: carry on
                self.errors.append(f"{exc.code} {exc.message}")
            except Exception as exc:  # pragma: no cover - shown in test failures
                self.errors.append(repr(exc))
