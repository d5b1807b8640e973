"""A backend whose run prints N log lines as fast as it can (for the log-path benchmarks).

It can be rebuilt in a run's supervisor process from its recipe, so the
benchmark measures the path a live run really takes: supervisor → event log →
control socket → the TUI's controller → the log view.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from backends.base import Check, Run
from backends.events import Event, Finished, LogLine

WORDS = ("INFO", "engine", "step", "kv-cache", "usage", "prefill", "decode", "tokens/s", "GPU", "batch", "req", "ms")


def text_of(i: int) -> str:
    """Line ``i``: 80–200 characters, deterministic; every fifth one an ERROR line."""
    length = 80 + (i * 7919) % 121
    head = f"{'ERROR' if i % 5 == 0 else 'INFO'} 11-23 10:{(i // 60) % 60:02d}:{i % 60:02d} [worker.py:{i % 997}] #{i} "
    body = []
    n = len(head)
    k = i
    while n < length:
        word = WORDS[k % len(WORDS)]
        body.append(word)
        n += len(word) + 1
        k = k * 31 + 7
    return (head + " ".join(body))[:length]


def stream_of(i: int) -> str:
    return "err" if i % 3 == 0 else "out"


#: Distinct lines, reused cyclically: making a line must not be what is measured.
POOL_SIZE = 10_007
POOL = [text_of(i) for i in range(POOL_SIZE)]
STREAMS = [stream_of(i) for i in range(POOL_SIZE)]


class FloodBackend:
    """``lines`` log lines, ``chunk`` at a time (a server's pipe read), then success."""

    name = "flood"

    def __init__(self, lines: int, chunk: int = 2000, pace: float = 0.0) -> None:
        self.lines = lines
        self.chunk = chunk
        self.pace = pace  # seconds between chunks: a run that trickles and stays live (0: flood)

    def recipe(self) -> dict[str, Any]:
        return {"factory": "tests.support.flood:FloodBackend.from_recipe", "lines": self.lines, "chunk": self.chunk,
                "pace": self.pace}

    @classmethod
    def from_recipe(cls, recipe: dict[str, Any], registry: Any = None) -> FloodBackend:
        return cls(int(recipe["lines"]), int(recipe["chunk"]), float(recipe.get("pace") or 0.0))

    async def preflight(self, spec: Any) -> list[Check]:
        return []

    async def launch(self, spec: Any, store: Any) -> Run:
        return Run(spec.experiment_id, self.name, spec, store)

    async def events(self, run: Run) -> AsyncIterator[Event]:
        n, chunk = self.lines, self.chunk
        for start in range(0, n, chunk):
            for i in range(start, min(n, start + chunk)):
                j = i % POOL_SIZE
                yield LogLine(POOL[j], STREAMS[j])  # type: ignore[arg-type] # "out" / "err"
            await asyncio.sleep(self.pace)
        yield Finished("succeeded")

    async def cancel(self, run: Run, *, graceful: bool = True) -> None:
        pass

    async def cleanup(self, run: Run) -> None:
        pass

    async def attach(self, saved: Any) -> Run:
        raise NotImplementedError
