"""Durations as users write them (SLURM times, Kubernetes/Tekton-style ``1h30m``) and timestamps as APIs send them."""

from __future__ import annotations

import datetime as dt
import re

_SLURM_RE = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d{1,2}))?(?::(\d{1,2}))?$")
_GO_RE = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_slurm_duration(text: str) -> int:
    """Seconds in a SLURM ``--time`` value.

    Accepts ``MM``, ``MM:SS``, ``H:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``.

    Raises:
        ValueError: with a message that shows the accepted forms.
    """
    value = text.strip()
    m = _SLURM_RE.match(value)
    forms = "use H:MM:SS (e.g. 1:00:00) or D-HH:MM:SS (e.g. 1-12:00:00)"
    if not m:
        raise ValueError(f"{text!r} is not a duration; {forms}")
    days, a, b, c = m.groups()
    if days is not None:
        hours, minutes, seconds = int(a), int(b or 0), int(c or 0)
        total = int(days) * 86400 + hours * 3600 + minutes * 60 + seconds
        if hours > 23:
            raise ValueError(f"{text!r}: hours must be below 24 after a day count; {forms}")
    elif c is not None:
        hours, minutes, seconds = int(a), int(b), int(c)
        total = hours * 3600 + minutes * 60 + seconds
    elif b is not None:
        minutes, seconds = int(a), int(b)
        total = minutes * 60 + seconds
    else:
        total = int(a) * 60
    if b is not None and int(b) > 59 or c is not None and int(c) > 59:
        raise ValueError(f"{text!r}: minutes and seconds must be below 60; {forms}")
    if total <= 0:
        raise ValueError(f"{text!r} is zero; {forms}")
    return total


def format_slurm_duration(seconds: int) -> str:
    """``H:MM:SS`` (or ``D-HH:MM:SS`` from a day up)."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{hours}:{minutes:02d}:{secs:02d}"


def parse_go_duration(text: str) -> int:
    """Seconds in ``6h``, ``5h30m``, ``90s`` (Tekton timeouts).

    Raises:
        ValueError: not of that form.
    """
    value = str(text).strip()
    m = _GO_RE.match(value)
    if not value or not m or not any(m.groups()):
        raise ValueError(f"{text!r} is not a duration like 6h, 5h30m or 90s")
    h, mi, s = (int(g or 0) for g in m.groups())
    return h * 3600 + mi * 60 + s


def parse_timestamp(text: object) -> float | None:
    """An RFC 3339 / ISO 8601 timestamp (``2026-01-01T00:00:00Z``; naive means UTC) → epoch seconds.

    Kubernetes and Argo send ``…Z``; the work queue sends naive UTC. None when
    absent or unreadable (a status field not set yet is normal, not an error).
    """
    if not text:
        return None
    try:
        t = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def format_elapsed(seconds: float | None, missing: str = "—") -> str:
    """How long something took or has run: ``42s``, ``3m05s``, ``1h02m``, ``2d03h``.

    Args:
        seconds: The span; None or negative means unknown.
        missing: What to show for an unknown span (``—`` on screen, ``-`` in plain text output).
    """
    if seconds is None or seconds < 0:
        return missing
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"
