"""Local processes and ports: the one place that knows about pids, groups and listeners.

* :func:`alive`, :func:`start_time`, :func:`same_process` tell whether a pid is
  still the process that was recorded (a pid can be reused; its start time,
  in clock ticks since boot, cannot);
* :func:`stop_group` ends a process group: SIGTERM, then SIGKILL after a grace period;
* :func:`guarded` wraps an argv so that the process *and its whole group* die
  with the process that started it (``python -m backends.procs guard -- argv``:
  the guard sets ``PR_SET_PDEATHSIG`` on itself and, when its parent dies or it
  is told to stop, ends its own process group);
* :func:`set_pdeathsig` is the same promise for one process (a ``preexec_fn``);
* :func:`port_free`, :func:`next_free_port`, :func:`free_port`, :func:`port_holder`, :func:`holder_name`
  answer questions about local TCP ports.

Linux only where it matters (``/proc``, ``prctl``); elsewhere the checks fall
back to ``kill(pid, 0)`` and the death signal is simply not set.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
import time

#: Seconds between SIGTERM and SIGKILL of a process group.
STOP_GRACE = 5.0

_PR_SET_PDEATHSIG = 1


# ------------------------------------------------------------------ processes


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (state is [0])."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().decode(errors="replace").rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    """Is ``pid`` a running process (a zombie counts as gone)?"""
    if pid <= 0:
        return False
    fields = _stat_fields(pid)
    if fields is not None:
        return fields[0] not in ("Z", "X")
    if os.path.isdir("/proc"):
        return False
    try:  # no /proc: the best the platform offers
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot ('' when unknown)."""
    fields = _stat_fields(pid)
    return fields[19] if fields is not None and len(fields) > 19 else ""


def same_process(pid: int, started: str | None) -> bool:
    """Is ``pid`` alive *and* the process that had start time ``started``?

    Without a recorded start time only liveness is checked.
    """
    if not alive(pid):
        return False
    return not started or start_time(pid) == str(started)


def group_alive(pgid: int, exclude: int | None = None) -> bool:
    """Is any non-zombie process (other than ``exclude``) left in process group ``pgid``?"""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    if not os.path.isdir("/proc"):
        return True
    try:
        entries = list(os.scandir("/proc"))
    except OSError:
        return True
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) == exclude:
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def killpg(pgid: int, sig: int) -> None:
    """Send ``sig`` to a process group; a group that is gone is not an error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def wait_pid(pid: int, proc: subprocess.Popen | None = None, timeout: float | None = None) -> bool:
    """Wait until ``pid`` exits (event-driven with a pidfd where the kernel has one).

    Returns:
        True if it exited within ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    fd = None
    with contextlib.suppress(OSError, AttributeError):
        fd = os.pidfd_open(pid)
    if fd is not None:
        fut: asyncio.Future = loop.create_future()

        def exited() -> None:
            if not fut.done():
                fut.set_result(True)

        loop.add_reader(fd, exited)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return False
        finally:
            loop.remove_reader(fd)
            os.close(fd)
        if proc is not None:
            proc.poll()
        return True
    deadline = None if timeout is None else loop.time() + timeout
    while True:  # no pidfd: poll, coarsely
        if proc is not None and proc.poll() is not None:
            return True
        if proc is None and not alive(pid):
            return True
        if deadline is not None and loop.time() >= deadline:
            return False
        await asyncio.sleep(0.05)


async def stop_group(pgid: int, proc: subprocess.Popen | None = None, grace: float = STOP_GRACE) -> None:
    """SIGTERM the process group, SIGKILL whatever is left after ``grace`` seconds."""
    killpg(pgid, signal.SIGTERM)
    exited = await wait_pid(pgid, proc, grace)
    if not exited or group_alive(pgid):
        if exited:
            # the leader is gone; give the rest of the group a moment before the hammer
            loop = asyncio.get_running_loop()
            end = loop.time() + min(1.0, grace)
            while group_alive(pgid) and loop.time() < end:
                await asyncio.sleep(0.05)
        if group_alive(pgid):
            killpg(pgid, signal.SIGKILL)
            await wait_pid(pgid, proc, 2.0)
    if proc is not None:
        with contextlib.suppress(Exception):
            proc.wait(timeout=0.5)


def stop_pid_sync(pid: int, started: str | None, *, pgid: int | None = None, grace: float = 3.0) -> bool:
    """Stop a recorded process (and its group) from synchronous code, if it is still that process.

    Returns:
        True if it was running and has been stopped; False if it was already gone.
    """
    if not same_process(pid, started):
        return False
    target = pgid or pid
    killpg(target, signal.SIGTERM) if pgid else _kill(pid, signal.SIGTERM)
    end = time.monotonic() + grace
    while time.monotonic() < end and same_process(pid, started):
        time.sleep(0.05)
    if same_process(pid, started) or (pgid and group_alive(pgid)):
        killpg(target, signal.SIGKILL) if pgid else _kill(pid, signal.SIGKILL)
    return True


def _kill_group_members(pgid: int, sig: int, exclude: int) -> None:
    """Send ``sig`` to every process of group ``pgid`` but ``exclude`` (the caller)."""
    try:
        entries = list(os.scandir("/proc"))
    except OSError:
        return
    for entry in entries:
        if entry.name.isdigit() and int(entry.name) != exclude:
            fields = _stat_fields(int(entry.name))
            if fields is not None and len(fields) > 2 and fields[2] == str(pgid):
                _kill(int(entry.name), sig)


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


# ------------------------------------------------------------ dying together


def set_pdeathsig(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux; no-op elsewhere).

    Meant as a ``preexec_fn`` (or the first thing a child does). If the parent
    is already gone when this runs, the process exits at once.
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl: the signal would never come
        os._exit(1)


def guarded(argv: list[str]) -> list[str]:
    """``argv`` run under the guard: it and its whole process group die with the caller.

    Start it with ``start_new_session=True`` and ``SWEEPDECK_GUARD_PARENT`` set
    to the caller's pid in its environment (closes the window between fork and
    the guard's ``prctl``).
    """
    return [sys.executable, "-m", "backends.procs", "guard", "--", *argv]


class _Stop(Exception):
    """The guard was told to stop (or its parent died)."""


def _stop_group_of(child: subprocess.Popen) -> int:
    """SIGTERM the guard's group, wait up to the grace period, SIGKILL what is left; the child's code."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # the group signal reaches the guard too
    group = os.getpgrp()
    killpg(group, signal.SIGTERM)
    end = time.monotonic() + STOP_GRACE
    code = None
    while time.monotonic() < end:
        if code is None:
            try:
                code = child.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                continue
        if not group_alive(group, exclude=os.getpid()):
            break
        time.sleep(0.05)
    _kill_group_members(group, signal.SIGKILL, exclude=os.getpid())
    if code is None:
        code = child.wait()
    return code


def _guard_main(argv: list[str]) -> int:
    """Run ``argv`` as a child in this process group; end the group when the parent dies.

    The guard is the group's leader (the caller starts it with
    ``start_new_session=True``). SIGTERM/SIGINT/SIGHUP to the guard — which
    ``PR_SET_PDEATHSIG`` sends when the parent dies — are passed on to the
    whole group, then SIGKILL follows after the grace period.
    """
    if not argv:
        print("guard: nothing to run", file=sys.stderr)
        return 2
    if os.getpgrp() != os.getpid():
        # the group the guard ends must be its own, whoever started it
        os.setpgid(0, 0)
    set_pdeathsig(signal.SIGTERM)
    expected = os.environ.pop("SWEEPDECK_GUARD_PARENT", "")
    if expected.isdigit() and os.getppid() != int(expected):
        return 1  # the parent died between fork and prctl: the death signal would never come
    armed = pending = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal pending
        pending = True
        if armed:
            raise _Stop  # out of the blocking wait below; the stop is done there, not in the handler

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        # the guard is single-threaded, so a preexec_fn is safe: if the guard is killed, its child hears of it
        child = subprocess.Popen(argv, preexec_fn=lambda: set_pdeathsig(signal.SIGTERM))
    except OSError as exc:
        print(f"guard: cannot start {argv[0]!r}: {exc.strerror or exc}", file=sys.stderr)
        return 127
    try:
        armed = True
        if pending:  # told to stop while the child was being started
            raise _Stop
        code = child.wait()
    except _Stop:
        code = _stop_group_of(child)
    else:
        if group_alive(os.getpgrp(), exclude=os.getpid()):
            # the server is gone but something it started is not: nothing may outlive the run
            _stop_group_of(child)
    return code if code >= 0 else 128 - code


# ---------------------------------------------------------------------- ports


def port_free(host: str, port: int) -> bool:
    """Can a listener bind ``host:port`` now?"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def next_free_port(host: str, port: int, tries: int = 200) -> int | None:
    """The first free port after ``port`` (None when ``tries`` ports are taken)."""
    for candidate in range(port + 1, min(port + 1 + tries, 65536)):
        if port_free(host, candidate):
            return candidate
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel says is free right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def holder_name(port: int) -> str:
    """``name (pid N)`` of the process listening on ``port`` (its ``comm``), or "" when /proc does not tell."""
    found = port_holder(port)
    if found is None:
        return ""
    pid, command = found
    name = os.path.basename(command.split(" ", 1)[0]) if command else ""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/comm") as fh:  # it may have exited since
        name = fh.read().strip() or name
    return f"{name} (pid {pid})"


def port_holder(port: int) -> tuple[int, str] | None:
    """(pid, command line) of the process listening on TCP ``port``, when /proc tells."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                next(fh, None)
                for line in fh:
                    parts = line.split()
                    if len(parts) >= 10 and parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(parts[9])  # 0A = LISTEN
        except OSError:
            continue
    if not inodes:
        return None
    wanted = {f"socket:[{i}]" for i in inodes}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fds = list(os.scandir(f"/proc/{entry.name}/fd"))
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd.path) in wanted:
                    with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                        cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
                    return int(entry.name), cmd
            except OSError:
                continue
    return None


def main(argv: list[str] | None = None) -> int:
    """``python -m backends.procs guard -- ARGV...``"""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] != ["guard"]:
        print("usage: python -m backends.procs guard -- ARGV...", file=sys.stderr)
        return 2
    args = args[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    return _guard_main(args)


if __name__ == "__main__":  # pragma: no cover - the guard process
    sys.exit(main())
