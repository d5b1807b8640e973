"""``backends.cleanup.install_signal_handlers``: what it installs, restores, and what it never raises."""

from __future__ import annotations

import asyncio
import signal

from backends.cleanup import install_signal_handlers


def test_handlers_are_installed_and_restored():
    async def go():
        loop = asyncio.get_running_loop()
        seen: list = []
        fired = asyncio.Event()

        def on_signal(sig) -> None:
            seen.append(sig)
            fired.set()

        restore = install_signal_handlers(loop, on_signal, (signal.SIGUSR1,))
        signal.raise_signal(signal.SIGUSR1)
        await asyncio.wait_for(fired.wait(), 5)  # the handler runs on a later loop iteration
        restore()
        assert seen == [signal.SIGUSR1]
        assert not loop.remove_signal_handler(signal.SIGUSR1)  # restore() removed it already
        restore()  # twice is harmless

    asyncio.run(go())


class _Loop:
    """A loop that takes the handlers but fails to remove them (closing, or another thread)."""

    def __init__(self) -> None:
        self.added: list = []

    def add_signal_handler(self, sig, callback, *args) -> None:
        if sig == signal.SIGHUP:
            raise NotImplementedError  # a platform without it: skipped, not an error
        self.added.append(sig)

    def remove_signal_handler(self, sig) -> bool:
        raise RuntimeError("loop is closing")


def test_restore_never_raises_and_unsupported_signals_are_skipped():
    loop = _Loop()
    restore = install_signal_handlers(loop, lambda sig: None, (signal.SIGTERM, signal.SIGHUP))
    assert loop.added == [signal.SIGTERM]
    restore()
