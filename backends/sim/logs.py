"""vLLM-style log lines.

vLLM (v0.11) logs to STDOUT as ``(APIServer pid=N) INFO 11-23 19:44:43 [file.py:123] message``
(engine-core lines say ``(EngineCore_DP0 pid=N)``); multi-line messages repeat
the prefix on every line. Uncaught tracebacks go to STDERR, unprefixed. Every
line is flushed at once because a parent reads them through a pipe or a file.
"""

from __future__ import annotations

import os
import sys
import time

API = "APIServer"
CORE = "EngineCore_DP0"


def _stamp() -> str:
    return time.strftime("%m-%d %H:%M:%S")


def vlog(level: str, where: str, message: str, proc: str = API) -> None:
    """One vLLM logger record (possibly multi-line) on stdout."""
    prefix = f"({proc} pid={os.getpid()}) {level} {_stamp()} [{where}] "
    text = "\n".join(prefix + line for line in message.split("\n"))
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):  # reader went away: nothing to tell anyone
        pass


def info(where: str, message: str, proc: str = API) -> None:
    vlog("INFO", where, message, proc)


def warning(where: str, message: str, proc: str = API) -> None:
    vlog("WARNING", where, message, proc)


def error(where: str, message: str, proc: str = API) -> None:
    vlog("ERROR", where, message, proc)


def stderr_lines(lines: list[str]) -> None:
    """Raw lines on stderr (tracebacks), flushed."""
    try:
        sys.stderr.write("\n".join(lines) + "\n")
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass
