"""The supervisor's back-pressure: it holds the backend for a client whose socket is full, but not for long."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

from backends.supervisor import supervisor as sv


async def _client(monkeypatch) -> tuple[sv._Client, socket.socket]:
    monkeypatch.setattr(sv, "PACE_HIGH", 256 * 1024)
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    client = sv._Client(reader, writer, "test")
    client.follows = True
    writer.transport.set_write_buffer_limits(high=sv.PACE_HIGH, low=sv.PACE_HIGH // 4)
    chunk = b"x" * 65536 + b"\n"
    while client.backlog() <= 2 * sv.PACE_HIGH:  # past what the kernel takes, then past PACE_HIGH
        assert client.send(chunk)
        await asyncio.sleep(0)
    return client, theirs


@contextlib.contextmanager
def _reading(sock: socket.socket, size: int, *, every: float) -> Iterator[None]:
    """A thread that reads up to ``size`` bytes from ``sock`` every ``every`` seconds while the block runs."""
    stop = threading.Event()

    def read() -> None:
        sock.settimeout(0.2)
        while not stop.wait(every):
            try:
                if not sock.recv(size):
                    return
            except TimeoutError:
                continue
            except OSError:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield
    finally:
        stop.set()
        reader.join(5)


async def test_a_client_that_does_not_read_holds_the_backend_once_and_for_at_most_pace_wait(monkeypatch):
    # a wait far longer than a busy machine's stall, so "not waited for" cannot be mistaken
    monkeypatch.setattr(sv, "PACE_WAIT", 1.0)
    client, theirs = await _client(monkeypatch)
    owner = SimpleNamespace(clients={client})
    began = time.monotonic()
    await sv.Supervisor._pace(owner)
    first = time.monotonic() - began
    assert 0.95 <= first < 10.0 and client.unpaced and not client.closed
    began = time.monotonic()
    await sv.Supervisor._pace(owner)  # not waited for again while it has not caught up
    assert time.monotonic() - began < 0.5
    client.writer.close()
    theirs.close()


async def test_a_client_that_reads_is_waited_for_until_it_has_caught_up(monkeypatch):
    monkeypatch.setattr(sv, "PACE_WAIT", 30.0)  # generous: it only has to read, however busy the machine
    client, theirs = await _client(monkeypatch)
    owner = SimpleNamespace(clients={client})
    try:
        with _reading(theirs, 65536, every=0.0):
            await sv.Supervisor._pace(owner)
            assert client.backlog() <= sv.PACE_HIGH and not client.unpaced  # it waited for the drain
    finally:
        client.writer.close()
        theirs.close()


async def test_a_client_behind_a_snapshot_or_not_following_is_not_waited_for(monkeypatch):
    monkeypatch.setattr(sv, "PACE_WAIT", 30.0)
    client, theirs = await _client(monkeypatch)
    owner = SimpleNamespace(clients={client})
    for follows, lagging in ((False, False), (True, True)):
        client.follows, client.lagging = follows, lagging
        began = time.monotonic()
        await sv.Supervisor._pace(owner)
        assert time.monotonic() - began < 5.0
    client.writer.close()
    theirs.close()


async def test_a_client_that_reads_slowly_is_still_waited_for(monkeypatch):
    monkeypatch.setattr(sv, "PACE_WAIT", 1.0)  # the reader thread gets several turns even on a busy machine
    client, theirs = await _client(monkeypatch)
    owner = SimpleNamespace(clients={client})
    try:
        with _reading(theirs, 16384, every=0.2):  # far too slow to drain it within PACE_WAIT
            before = client.unread()
            await sv.Supervisor._pace(owner)
            assert client.backlog() > sv.PACE_HIGH // 4  # it timed out before the drain…
            assert client.unread() < before and not client.unpaced  # …but the client read: it is waited for again
    finally:
        client.writer.close()
        theirs.close()


async def test_a_client_that_paused_is_waited_for_again_once_it_reads_again(monkeypatch):
    """A client starved of CPU for a moment (a busy machine) is not given up on for good."""
    monkeypatch.setattr(sv, "PACE_WAIT", 1.0)  # far longer than a busy machine's stall
    client, theirs = await _client(monkeypatch)
    owner = SimpleNamespace(clients={client})
    await sv.Supervisor._pace(owner)  # it reads nothing: given up on, for now
    assert client.unpaced
    began = time.monotonic()
    await sv.Supervisor._pace(owner)
    assert time.monotonic() - began < 0.5 and client.unpaced  # not waited for while it still reads nothing
    theirs.settimeout(5)
    assert theirs.recv(65536)  # it reads again (a little)
    await asyncio.sleep(0)
    before = client.consumed()
    assert before > client.read_mark
    began = time.monotonic()
    await sv.Supervisor._pace(owner)  # waited for again (it reads nothing more: for PACE_WAIT, then given up on)
    assert time.monotonic() - began >= 0.95 and client.unpaced and client.read_mark == before
    client.writer.close()
    theirs.close()
