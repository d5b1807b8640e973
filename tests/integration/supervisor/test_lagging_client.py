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
