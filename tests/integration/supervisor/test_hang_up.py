"""A client that is going (a signal, a dead terminal) lets go of its runs at once, even with its loop blocked."""

from __future__ import annotations

import asyncio
import threading
import time

from backends.store import RunStore
from backends.supervisor.client import hang_up_all, start_run
from backends.supervisor.launcher import ProcessLauncher
from config.catalog import load_catalogs
from config.spec import build_spec
from tests.integration.supervisor.support import gone, meta
from tests.support.flood import FloodBackend


async def test_hang_up_all_lets_the_supervisor_stop_the_run_while_the_loop_is_blocked():
    spec = build_spec(load_catalogs(), "qwen-1.5b", experiment_id="trickle")
    link = await start_run(FloodBackend(10**9, chunk=1, pace=0.05), spec, store=RunStore(), launcher=ProcessLauncher())
    try:
        await link.follow(snapshot=0)
        deadline = time.monotonic() + 20
        while meta("trickle").get("state") != "running" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert meta("trickle").get("state") == "running"
        supervisor = int(meta("trickle")["supervisor"]["pid"])
        seen: dict[str, object] = {}

        def from_a_signal_handler() -> None:
            # what TerminalGuard does on SIGTERM/SIGHUP, while the loop below cannot run at all
            began = time.monotonic()
            seen["hung_up"] = hang_up_all()
            while time.monotonic() - began < 10 and not gone(supervisor):
                time.sleep(0.05)
            seen["seconds"] = time.monotonic() - began
            seen["state"] = meta("trickle").get("state")

        watcher = threading.Thread(target=from_a_signal_handler)
        watcher.start()
        watcher.join()  # blocks the event loop: the link's reader never runs meanwhile
        assert seen["hung_up"] == 1
        assert seen["state"] == "cancelled" and gone(supervisor), seen
        assert seen["seconds"] < 10
        for _ in range(200):  # the loop runs again: the link notices its end
            if link.closed:
                break
            await asyncio.sleep(0.02)
        assert link.closed and hang_up_all() == 0
    finally:
        link.close()
