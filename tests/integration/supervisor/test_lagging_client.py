"""A client too slow for the run's log still ends with the run's last lines and its result."""

from __future__ import annotations

import asyncio
import time

from backends.events import LogLine
from backends.store import RunStore
from backends.supervisor.client import start_run
from backends.supervisor.launcher import ProcessLauncher
from backends.supervisor.supervisor import LAG_HIGH
from config.catalog import load_catalogs
from config.spec import build_spec
from tests.integration.supervisor.support import meta
from tests.support.flood import POOL, POOL_SIZE, FloodBackend

LINES = 400_000  # ~60 MB of records: more than the supervisor buffers for one client (LAG_HIGH)


async def test_a_client_that_fell_behind_gets_the_end_of_the_log_before_the_result():
    assert LINES * 120 > LAG_HIGH
    spec = build_spec(load_catalogs(), "qwen-1.5b", experiment_id="flood-lag")
    got: list[LogLine] = []
    resets = []
    link = await start_run(FloodBackend(LINES, chunk=5000), spec, store=RunStore(), launcher=ProcessLauncher(),
                           on_events=got.extend, on_event=got.append)
    link.on_reset = lambda: resets.append(len(got))
    try:
        # this client reads nothing until the run is over: its socket and the supervisor's buffer fill up
        deadline = time.monotonic() + 120
        while meta("flood-lag").get("state") not in ("succeeded", "failed") and time.monotonic() < deadline:
            time.sleep(0.05)  # blocks the loop on purpose
        assert meta("flood-lag").get("state") == "succeeded"
        result = await asyncio.wait_for(link.result(), 60)
    finally:
        link.close()
    assert result["outcome"] == "succeeded"
    assert resets, "the client was never behind: the test did not test anything"
    lines = [e for e in got if isinstance(e, LogLine)]
    assert lines[-1].text == POOL[(LINES - 1) % POOL_SIZE]  # the last line of the run reached it
    tail = [e.text for e in got[resets[-1]:] if isinstance(e, LogLine)]
    assert tail == [POOL[i % POOL_SIZE] for i in range(LINES - len(tail), LINES)]  # the snapshot is the log's end


async def test_a_slow_client_that_keeps_reading_gets_every_line():
    """A client slower than the run's log, reading a little every turn of its loop, is never caught up
    with a snapshot: it gets every line in order (the bounded back-pressure itself: tests/unit/test_pace.py;
    a client that does not read at all: the test above)."""
    spec = build_spec(load_catalogs(), "qwen-1.5b", experiment_id="flood-slow")
    texts: list[str] = []
    resets = []
    batches = 0

    def slow(lines: list[LogLine]) -> None:
        nonlocal batches
        batches += 1
        texts.extend(line.text for line in lines)
        time.sleep(0.01)  # a busy client: slower than the supervisor writes (it blocks its loop)

    link = await start_run(FloodBackend(LINES, chunk=5000), spec, store=RunStore(), launcher=ProcessLauncher(),
                           on_events=slow, on_event=lambda event: None)
    link.on_reset = lambda: resets.append(len(texts))
    link.writer.transport.max_size = 256 * 1024  # asyncio's default read: it does not swallow the backlog at once
    try:
        result = await asyncio.wait_for(link.result(), 300)
    finally:
        link.close()
    assert result["outcome"] == "succeeded"
    assert not resets, "the client was caught up with a snapshot instead of getting every line"
    assert len(texts) == LINES
    assert texts == [POOL[i % POOL_SIZE] for i in range(LINES)]
    assert batches > 100  # it read batch by batch, slowly: a single late read would not have tested the pacing
