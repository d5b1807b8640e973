"""`backends.sim.server.serve` in-process: the startup stages a stop signal can end, and a crash at startup.

The process tests (tests/integration/test_sim_process.py) send real signals but cannot choose the stage
a signal lands in; here the stop "arrives" at a chosen point, so every early exit is exercised.
"""

from __future__ import annotations

import asyncio

import pytest

from backends.sim import failures, server
from backends.sim.options import parse_args

FAST = ["org/model-7b", "--host", "127.0.0.1", "--port", "0", "--startup-delay", "0", "--speed", "0"]
STOPPED = "Shutting down FastAPI HTTP server."


def _stop_at(monkeypatch, sleep_call: int | None = None, at_server: bool = False) -> None:
    """Make the stop signal come in during the ``sleep_call``-th startup sleep, or once the server is built."""

    class Stop(server._Stop):
        calls = 0

        def install(self) -> None:  # no real signal handlers in the test process
            Stop.instance = self

        async def sleep(self, seconds: float) -> bool:
            Stop.calls += 1
            if Stop.calls == sleep_call:
                self.event.set()
            return await super().sleep(seconds)

    monkeypatch.setattr(server, "_Stop", Stop)
    if at_server:
        real = server.SimServer

        def built(*args, **kwargs):
            Stop.instance.event.set()
            return real(*args, **kwargs)

        monkeypatch.setattr(server, "SimServer", built)


def _serve(*extra: str) -> int:
    return asyncio.run(asyncio.wait_for(server.serve(parse_args([*FAST, *extra])), 60))


@pytest.mark.parametrize("sleep_call, last_line", [
    (1, "Chunked prefill is enabled"),  # before the engine core starts
    (2, "Starting to load model"),  # while the weights load
    (3, "Loading model weights took"),  # while the KV cache is profiled
])
def test_a_stop_during_a_startup_sleep_exits_0(monkeypatch, capsys, sleep_call, last_line):
    _stop_at(monkeypatch, sleep_call)
    assert _serve() == 0
    lines = capsys.readouterr().out.splitlines()
    assert STOPPED in lines[-1] and last_line in lines[-2]


def test_a_stop_after_the_last_sleep_exits_0_before_routes_are_served(monkeypatch, capsys):
    # The stop lands in the sleep's final instant: the sleep says "go on", the check after the routes list sees it.
    class LateStop(server._Stop):
        def install(self) -> None:
            pass

        async def sleep(self, seconds: float) -> bool:
            stopped = await super().sleep(seconds)
            if "Loading weights took" in capsys.readouterr().out:  # the third sleep
                self.event.set()
            return stopped

    monkeypatch.setattr(server, "_Stop", LateStop)
    assert _serve() == 0
    out = capsys.readouterr().out.splitlines()
    assert "Route: /v1/completions" in out[-2] and STOPPED in out[-1]


def test_a_stop_while_the_server_is_built_exits_0(monkeypatch, capsys):
    _stop_at(monkeypatch, at_server=True)
    assert _serve() == 0
    out = capsys.readouterr().out.splitlines()
    assert "Route: /v1/completions" in out[-2] and STOPPED in out[-1]


def test_crash_after_0_dies_as_soon_as_it_serves(monkeypatch, capsys):
    _stop_at(monkeypatch)
    assert _serve("--fail", "crash-after", "0") == failures.EXIT_ENGINE_DEAD
    captured = capsys.readouterr()
    assert failures.ENGINE_TERMINATING in captured.out
    assert failures.ENGINE_DEAD in captured.out + captured.err
