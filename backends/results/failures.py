"""Failed requests → a breakdown by reason, each with one full message.

Messages of one cause differ in their numbers (``maximum context length is
4096 tokens. However, you requested 4213 tokens``); the reason is the message
with the specifics taken out, so such failures group together, while the
sample keeps one whole message to read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from backends.results.model import Failure

REASON_MAX = 80

_HTTP = re.compile(r"^\s*HTTP\s*(\d{3})\b\s*:?\s*(.*)$", re.S | re.I)
_CAUSES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"context length|maximum context|too many tokens|prompt is too long|max_model_len", re.I),
     "context length exceeded"),
    (re.compile(r"out of memory|\bOOM\b", re.I), "out of memory"),
    (re.compile(r"rate limit|too many requests", re.I), "rate limited"),
    (re.compile(r"model .*(does not exist|not found)|no such model", re.I), "model not found"),
)
_PREFIXES = ("timeout", "connection error", "stream broken", "empty stream", "error in stream", "cancelled")
_NUMBERS = re.compile(r"\b\d+(?:\.\d+)?\b")
_IDS = re.compile(r"\b(?:[0-9a-f]{8,}|[0-9a-f]{8}-[0-9a-f-]{27,})\b", re.I)


def message_of(error: Any) -> str:
    """A readable message from an error field: a string, or an object with message/error_msg/detail."""
    if error is None:
        return ""
    if isinstance(error, str):
        return " ".join(error.split())
    if isinstance(error, dict):
        for key in ("error_msg", "message", "msg", "detail", "error"):
            if error.get(key):
                inner = message_of(error[key])
                kind = error.get("error_type") or error.get("type")
                return f"{kind}: {inner}" if kind and isinstance(kind, str) and kind not in inner else inner
        return " ".join(str(error).split())
    return " ".join(str(error).split())


def reason_of(message: str, http_status: int | None = None) -> str:
    """The failure's reason: ``HTTP 400: context length exceeded``, ``timeout``, ``connection error``..."""
    text = message.strip()
    m = _HTTP.match(text)
    if m:
        code, rest = m.group(1), m.group(2)
        return f"HTTP {code}: {_cause(rest)}" if rest.strip() else f"HTTP {code}"
    lowered = text.lower()
    for prefix in _PREFIXES:
        if lowered.startswith(prefix):
            return prefix
    for pattern, cause in _CAUSES:
        if pattern.search(text):
            return f"HTTP {http_status}: {cause}" if http_status else cause
    if http_status and http_status != 200:
        return f"HTTP {http_status}: {_cause(text)}"
    return _cause(text) or "unknown error"


def _cause(text: str) -> str:
    for pattern, cause in _CAUSES:
        if pattern.search(text):
            return cause
    general = _NUMBERS.sub("N", _IDS.sub("…", text.strip()))
    return general if len(general) <= REASON_MAX else general[: REASON_MAX - 1] + "…"


class Breakdown:
    """Counts failures by reason, keeping the first message of each as its sample."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._samples: dict[str, str] = {}

    def add(self, message: str, count: int = 1, http_status: int | None = None, reason: str | None = None) -> None:
        if count <= 0:
            return
        message = message or "(no message)"
        key = reason or reason_of(message, http_status)
        self._counts[key] = self._counts.get(key, 0) + count
        self._samples.setdefault(key, message)

    def extend(self, messages: Iterable[str]) -> None:
        for message in messages:
            self.add(message)

    @property
    def total(self) -> int:
        return sum(self._counts.values())

    def failures(self) -> list[Failure]:
        """Largest first; ties by reason."""
        order = sorted(self._counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return [Failure(reason, n, self._samples[reason]) for reason, n in order]
