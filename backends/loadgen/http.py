"""The load generator's HTTP/1.1 streaming client: one asyncio protocol per connection.

Why not httpx or aiohttp: a benchmark client must take each timestamp when the
bytes arrive and do as little as possible per chunk. Here the clock is read in
``data_received`` (the transport's read callback, before anything else runs),
the response is parsed by ``httptools`` (C, llhttp: status line, headers,
chunked transfer coding), and each body piece goes straight to the request's
:class:`StreamSink` — no per-chunk coroutine switch, future or object.

Scope (what a benchmark against an OpenAI-compatible server needs): ``POST``
with a prebuilt body, keep-alive connections that carry one request at a time,
``http`` and ``https`` (certificates checked against the system store or
``SSL_CERT_FILE``), no proxies, no redirects, no compression.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

import httptools

from config.errors import SweepdeckError

ERROR_TEXT_MAX = 300
ERROR_BODY_MAX = 64 * 1024

_perf = time.perf_counter
# A chunk carries a token when its text/content/reasoning is a non-empty string; chat's role
# chunk, a bare finish chunk (``"text":""``, ``"delta":{}``) and nulls do not.
_HAS_TEXT = re.compile(rb'"(?:text|content|reasoning_content|reasoning)"\s*:\s*"(?!")')
_TOKEN_KEYS = ("content", "reasoning_content", "reasoning")


class RequestFailed(Exception):
    """A request failed with a message meant for the results (not a bug)."""


def short(text: str) -> str:
    """One line of at most :data:`ERROR_TEXT_MAX` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= ERROR_TEXT_MAX else text[: ERROR_TEXT_MAX - 1] + "…"


def error_message(raw: bytes) -> str:
    """The message of an OpenAI/vLLM/FastAPI error body, else the body text."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return short(raw.decode("utf-8", "replace")) or "(empty body)"
    if isinstance(obj, dict):
        err = obj.get("error")
        if isinstance(err, dict) and err.get("message"):
            return short(err["message"])
        if isinstance(err, str):
            return short(err)
        for key in ("message", "detail"):
            if obj.get(key):
                return short(obj[key] if isinstance(obj[key], str) else json.dumps(obj[key]))
    return short(raw.decode("utf-8", "replace"))


def carries_token(obj: Any, chat: bool) -> bool:
    """Whether a parsed stream chunk carries output: text, content or reasoning (non-empty)."""
    choices = obj.get("choices")
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        return False
    choice = choices[0]
    if not chat:
        text = choice.get("text")
        if isinstance(text, str) and text:
            return True
    delta = choice.get("delta")
    if isinstance(delta, dict):
        for key in _TOKEN_KEYS:
            value = delta.get(key)
            if isinstance(value, str) and value:
                return True
    return False


class Target:
    """Where requests go: parsed once from the base URL.

    Raises:
        SweepdeckError: not an http(s) URL, or a header that would break the request.
    """

    def __init__(self, url: str, path: str, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SweepdeckError(f"Endpoint {url!r} is not an http(s) URL.", "Give the server root, e.g. http://127.0.0.1:8000.")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        try:
            self.port = parts.port or (443 if self.tls else 80)
        except ValueError:
            raise SweepdeckError(f"Endpoint {url!r} has a bad port.",
                                 "Give the server root, e.g. http://127.0.0.1:8000.") from None
        self.path = (parts.path.rstrip("/") + path) or "/"
        host_header = parts.netloc.rpartition("@")[2]
        lines = [f"POST {self.path} HTTP/1.1", f"Host: {host_header}", "Content-Type: application/json",
                 "Accept: text/event-stream", "User-Agent: sweepdeck-loadgen"]
        for name, value in (headers or {}).items():
            if name.lower() in ("host", "content-length", "content-type", "transfer-encoding"):
                continue
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name) or re.search(r"[\r\n\0]", str(value)):
                raise SweepdeckError(f"HTTP header {name!r} is not valid.",
                                     "Header names are tokens; values have no line breaks.")
            lines.append(f"{name}: {value}")
        self._head = "\r\n".join(lines).encode("latin-1") + b"\r\nContent-Length: "
        self._ssl: ssl.SSLContext | None = ssl.create_default_context() if self.tls else None

    def request(self, body: bytes) -> bytes:
        """The whole request (head and body) as one write."""
        return self._head + str(len(body)).encode() + b"\r\n\r\n" + body

    async def connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            Connection, self.host, self.port, ssl=self._ssl, server_hostname=self.host if self.tls else None
        )
        return conn


class StreamSink:
    """One request's measurement, fed by its connection as bytes arrive.

    Attributes:
        t_send: perf_counter when the request was written.
        first/last: arrival of the first / last chunk that carried a token.
        chunks: chunks that carried a token (text, content or reasoning).
        usage: the ``usage`` object of the stream, if the server sent one.
        status: HTTP status.
        done: ``data: [DONE]`` arrived.
        t_end: the response ended (perf_counter).
        error: why the request failed, if it did.
    """

    __slots__ = ("chat", "t_send", "first", "last", "chunks", "usage", "status", "done", "t_end", "error",
                 "_buf", "_err_body", "waiter", "got_bytes")

    def __init__(self, chat: bool, waiter: asyncio.Future) -> None:
        self.chat = chat
        self.t_send = 0.0
        self.first = 0.0
        self.last = 0.0
        self.chunks = 0
        self.usage: dict | None = None
        self.status = 0
        self.done = False
        self.t_end = 0.0
        self.error: str | None = None
        self.got_bytes = False
        self._buf = b""
        self._err_body = b""
        self.waiter = waiter

    # --- fed by the connection --------------------------------------------------
    def body(self, data: bytes, now: float) -> None:
        if self.error is not None:
            return
        if self.status != 200:
            if len(self._err_body) < ERROR_BODY_MAX:
                self._err_body += data
            return
        if self._buf:
            data = self._buf + data
            self._buf = b""
        if data[-1:] != b"\n":
            cut = data.rfind(b"\n") + 1
            self._buf = data[cut:]
            data = data[:cut]
        for line in data.split(b"\n"):
            if line[:5] == b"data:":  # else: blank separators, comments, event:/id: fields
                self._line(line[5:].strip(), now)

    def _line(self, payload: bytes, now: float) -> None:
        if self.chunks and b'"usage"' not in payload and b'"error"' not in payload:
            # hot path: a chunk after the first token, no JSON parse
            if _HAS_TEXT.search(payload) is not None:
                self.chunks += 1
                self.last = now
            elif payload == b"[DONE]":
                self.done = True
            return
        self._parse(payload, now)

    def _parse(self, payload: bytes, now: float) -> None:
        if payload == b"[DONE]":
            self.done = True
            return
        try:
            obj = json.loads(payload)
        except ValueError:
            self.fail(f"bad stream chunk: {short(payload.decode('utf-8', 'replace'))}")
            return
        if not isinstance(obj, dict):
            return
        if "error" in obj or obj.get("object") == "error":
            self.fail(f"error in stream: {error_message(payload)}")
            return
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        if carries_token(obj, self.chat):
            if not self.chunks:
                self.first = now
            self.chunks += 1
            self.last = now

    def complete(self, now: float) -> None:
        """The response ended (the whole HTTP message arrived)."""
        if self.waiter.done():
            return
        self.t_end = now
        if self.error is None and self.status != 200:
            self.error = f"HTTP {self.status}: {error_message(self._err_body)}"
        self.waiter.set_result(None)

    def fail(self, message: str) -> None:
        if self.error is None:
            self.error = message
        if not self.waiter.done():
            self.t_end = _perf()
            self.waiter.set_result(None)


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; the clock is read the moment bytes arrive."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.sink: StreamSink | None = None
        self.closed = False
        self.keep_alive = True
        self.used = False
        self._parser = httptools.HttpResponseParser(self)
        self._now = 0.0
        self._pieces: list[bytes] = []

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport: create_connection

    def data_received(self, data: bytes) -> None:
        self._now = _perf()
        sink = self.sink
        if sink is not None:
            sink.got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._broken(f"bad HTTP response: {exc}")
            return
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.sink is not None:
            why = f": {exc}" if exc else ""
            self._broken(f"stream broken: the server closed the connection{why}")

    # httptools callbacks
    def on_headers_complete(self) -> None:
        if self.sink is not None:
            self.sink.status = self._parser.get_status_code()
        self.keep_alive = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        # one read can hold many chunks of the chunked coding: they share its timestamp,
        # so they go to the sink together (after the read, or when the response ends)
        self._pieces.append(body)

    def _flush(self) -> None:
        pieces = self._pieces
        if pieces:
            data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            pieces.clear()
            if self.sink is not None:
                self.sink.body(data, self._now)

    def on_message_complete(self) -> None:
        self._flush()
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.complete(self._now)
        if not self.keep_alive:
            self.close()

    # use
    @property
    def usable(self) -> bool:
        return not self.closed and self.keep_alive and self.transport is not None and not self.transport.is_closing()

    def send(self, sink: StreamSink, request: bytes) -> None:
        """Start a request: the sink is fed until its response ends."""
        self.sink = sink
        self.used = True
        sink.t_send = _perf()
        self.transport.write(request)  # type: ignore[union-attr]  # set in connection_made

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection now (a timed-out or cancelled request must not reuse it)."""
        self.closed = True
        self.sink = None
        if self.transport is not None:
            self.transport.abort()

    def _broken(self, message: str) -> None:
        sink, self.sink = self.sink, None
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()
        if sink is not None:
            sink.fail(message)


def describe_exc(exc: BaseException) -> str:
    """A failed connect or write, as a results line."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ssl.SSLError):
        return short(f"TLS error: {text}")
    if isinstance(exc, (ConnectionError, OSError)):
        return short(f"connection error: {text}")
    return short(f"{type(exc).__name__}: {text}")
