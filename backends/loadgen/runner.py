"""The workload runner: drives a workload profile against an OpenAI-compatible server.

:class:`httpx.AsyncClient` connection pools (together sized to the concurrency,
at most :data:`SHARD_CONNECTIONS` connections each, see
:meth:`WorkloadRunner._make_shards`) send streaming ``/v1/completions`` (or
``/v1/chat/completions``) requests with ``max_tokens``, ``ignore_eos`` and
``stream_options.include_usage``; the runner measures per request:

* **TTFT** — send to the arrival of the first chunk that carries text;
* **ITL** — mean gap between text chunks: ``(last - first) / (chunks - 1)``,
  for requests with at least two chunks (O(1), no per-token list);
* **latency** — send to the end of the stream;
* **output tokens** — ``usage.completion_tokens`` when the server sends usage,
  else the number of text chunks; **prompt tokens** — usage, else intended.

Requests that fail (HTTP error, connection error, timeout, broken stream, an
error inside the stream) are rows with ``status: "error"`` and the error text;
requests in flight when the run stops early (:meth:`WorkloadRunner.stop` or
``max_seconds``) are rows with ``status: "cancelled"``. None are dropped.

Live :class:`~backends.events.Progress` / :class:`~backends.events.Metrics`
count cancelled requests as failed (they have no field of their own); the
summary keeps them apart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as _dt
import functools
import json
import math
import operator
import os
import re
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from backends.events import Event, Metrics, Progress
from backends.loadgen.schedule import Mode, arrival_offsets, lengths, make_prompt, resolve_mode
from backends.loadgen.stats import LiveStat, describe
from config.errors import SweepdeckError

APIS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}
ERROR_TEXT_MAX = 300
OPEN_LOOP_KEEPALIVE = 256
SHARD_CONNECTIONS = 8
"""Connections per HTTP client; more clients share a larger concurrency (see ``_make_shards``)."""
OPEN_LOOP_SHARDS = 8

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
# A chunk carries a token when its text/content is a non-empty string; chat's role
# chunk, a bare finish chunk (``"text":""``, ``"delta":{}``) and nulls do not.
_HAS_TEXT = re.compile(rb'"(?:text|content|reasoning_content)"\s*:\s*"(?!")')
_perf = time.perf_counter


class _Shard:
    """One HTTP client (connection pool) and how many requests it is carrying."""

    __slots__ = ("client", "busy")

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.busy = 0


def _busy(shard: _Shard) -> int:
    return shard.busy


class _Failed(Exception):
    """A request failed with a message meant for the results (not a bug)."""


@dataclasses.dataclass(slots=True)
class RequestRow:
    """One request's measurements (milliseconds; ``start_s`` after the run's start)."""

    index: int
    prompt_tokens: int
    max_tokens: int
    start_s: float = 0.0
    status: str = "pending"
    output_tokens: int = 0
    chunks: int = 0
    ttft_ms: float | None = None
    itl_ms: float | None = None
    latency_ms: float | None = None
    http_status: int | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(zip(_ROW_FIELDS, _row_values(self)))


_ROW_FIELDS = tuple(f.name for f in dataclasses.fields(RequestRow))
_row_values = operator.attrgetter(*_ROW_FIELDS)


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= ERROR_TEXT_MAX else text[: ERROR_TEXT_MAX - 1] + "…"


def _error_message(raw: bytes) -> str:
    """The message of an OpenAI/vLLM/FastAPI error body, else the body text."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return _short(raw.decode("utf-8", "replace")) or "(empty body)"
    if isinstance(obj, dict):
        err = obj.get("error")
        if isinstance(err, dict) and err.get("message"):
            return _short(err["message"])
        if isinstance(err, str):
            return _short(err)
        for key in ("message", "detail"):
            if obj.get(key):
                return _short(obj[key] if isinstance(obj[key], str) else json.dumps(obj[key]))
    return _short(raw.decode("utf-8", "replace"))


def _describe_exc(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return _short(f"timeout: {type(exc).__name__}: {text}")
    if isinstance(exc, httpx.ConnectError):
        return _short(f"connection error: {text}")
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
        return _short(f"stream broken: {text}")
    return _short(f"{type(exc).__name__}: {text}")


def _profile_dict(profile) -> dict[str, Any]:
    try:
        return dataclasses.asdict(profile)
    except TypeError:
        return {k: v for k, v in vars(profile).items() if not k.startswith("_")}


class WorkloadRunner:
    """Runs one workload profile against ``base_url`` and reports as it goes.

    Args:
        base_url: Server root, e.g. ``http://127.0.0.1:8000`` (a trailing ``/v1`` is accepted).
        model: Model name sent in each request.
        profile: A :class:`config.catalog.WorkloadProfile`.
        results_path: Where to write the results JSON when the run ends.
        metrics_interval: Seconds between live Progress/Metrics pairs (<= 0: final pair only).
        client: An httpx client to use for every request (the caller sizes and closes
            it); default: clients made here whose pools together hold the concurrency.
        api: ``completions`` or ``chat``.
        max_seconds: Stop after this long (the smaller of this and ``profile.max_seconds``);
            requests still in flight are cancelled.
        timeout: Per-request limit in seconds (whole request, and each read).
        headers: Extra HTTP headers (e.g. ``Authorization`` for a server with an API key).
        prompt_token_hint: Also send ``sim_prompt_tokens`` (the simulator's exact-count
            field); off by default because a real vLLM warns about the unknown field on
            every request, and the prompt text already has the intended length.

    Raises:
        SweepdeckError: unusable base_url, api, rate or concurrency.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        profile,
        *,
        results_path: Path | None = None,
        metrics_interval: float = 0.5,
        client: httpx.AsyncClient | None = None,
        api: str = "completions",
        max_seconds: float | None = None,
        timeout: float = 600.0,
        headers: dict[str, str] | None = None,
        prompt_token_hint: bool = False,
    ) -> None:
        if api not in APIS:
            raise SweepdeckError(f"Unknown API {api!r} for the workload runner.", "Use 'completions' or 'chat'.")
        url = str(base_url or "").strip().rstrip("/")
        if url.endswith("/v1"):
            url = url[:-3]
        if not re.match(r"^https?://[^/\s]+", url):
            raise SweepdeckError(
                f"Endpoint {base_url!r} is not an http(s) URL.", "Give the server root, e.g. http://127.0.0.1:8000."
            )
        if not model:
            raise SweepdeckError("The workload runner needs a model name.", "Pass the served model name.")
        if not timeout or timeout <= 0:
            raise SweepdeckError(f"Request timeout must be positive, got {timeout!r}.")
        self.base_url = url
        self.url = url + APIS[api]
        self.model = model
        self.profile = profile
        self.api = api
        self.mode: Mode = resolve_mode(profile)
        if profile.max_requests is None:
            raise SweepdeckError(f"workload {profile.app}: max_requests is not set.", "Set max_requests, e.g. 100.")
        self.max_requests = int(profile.max_requests)
        if self.max_requests < 1:
            raise SweepdeckError(f"workload {profile.app}: max_requests must be at least 1.")
        limits = [s for s in (max_seconds, getattr(profile, "max_seconds", None)) if s]
        self.max_seconds: float | None = min(limits) if limits else None
        self.results_path = Path(results_path) if results_path else None
        self.metrics_interval = metrics_interval
        self.timeout = float(timeout)
        self.summary: dict[str, Any] | None = None
        self.rows: list[RequestRow] = []
        self._client = client
        self._headers = {"content-type": "application/json", **(headers or {})}
        self._hint = prompt_token_hint
        self._lengths = lengths(profile)
        self._prefix = int(profile.prefix_tokens or 0)
        # live counters (O(1) per request)
        self._issued = 0
        self._in_flight = 0
        self._completed = 0
        self._failed = 0
        self._cancelled = 0
        self._out_tokens = 0
        self._prompt_tokens = 0
        seed = int(profile.random_seed or 0)
        self._ttft = LiveStat(seed=seed + 1)
        self._itl = LiveStat(seed=seed + 2)
        self._lat = LiveStat(seed=seed + 3)
        # run state
        self._t0 = 0.0
        self._t_end: float | None = None
        self._started_wall: float | None = None
        self._started = False
        self._stopping = False
        self._stop_reason = "max_requests"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._producers: list[asyncio.Task] = []
        self._requests: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Ask the run to stop: nothing new is sent, in-flight requests are cancelled.

        Safe to call from any thread, before or during the run, more than once.
        """
        self._request_stop("stopped")

    def _request_stop(self, reason: str) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._stop_reason = reason
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            self._cancel_all()
        else:
            loop.call_soon_threadsafe(self._cancel_all)

    def _cancel_all(self) -> None:
        for task in self._producers:
            task.cancel()
        for task in list(self._requests):
            task.cancel()

    # ------------------------------------------------------------------ events
    async def events(self) -> AsyncIterator[Event]:
        """Run the workload, yielding Progress + Metrics every ``metrics_interval`` and a final pair.

        Closing the generator early (``aclose``) stops the run. :attr:`summary`
        is set (and the results file written) when this returns.
        """
        if self._started:
            raise RuntimeError("a WorkloadRunner runs once; make a new one")
        self._started = True
        main = asyncio.create_task(self._run(), name="loadgen")
        interval = self.metrics_interval if self.metrics_interval and self.metrics_interval > 0 else None
        try:
            while interval is not None:
                done, _ = await asyncio.wait({main}, timeout=interval)
                if done:
                    break
                yield self.progress()
                yield self.metrics()
            await asyncio.wait({main})
            main.result()
            yield self.progress()
            yield self.metrics()
        finally:
            if not main.done():
                self.stop()
                await asyncio.wait({main})

    def progress(self) -> Progress:
        """Counts now (cancelled requests count as failed)."""
        return Progress(
            total=self.max_requests,
            pending=self.max_requests - self._issued,
            running=self._in_flight,
            completed=self._completed,
            failed=self._failed + self._cancelled,
        )

    def metrics(self) -> Metrics:
        """Live figures now (percentiles from a bounded reservoir)."""
        elapsed = self._elapsed()
        return Metrics(
            completed=self._completed,
            failed=self._failed + self._cancelled,
            in_flight=self._in_flight,
            elapsed_s=elapsed,
            ttft_ms_mean=self._ttft.mean,
            ttft_ms_p50=self._ttft.pct(50),
            ttft_ms_p90=self._ttft.pct(90),
            itl_ms_mean=self._itl.mean,
            itl_ms_p90=self._itl.pct(90),
            latency_ms_mean=self._lat.mean,
            latency_ms_p90=self._lat.pct(90),
            requests_per_s=self._completed / elapsed if elapsed > 0 else 0.0,
            output_tokens_per_s=self._out_tokens / elapsed if elapsed > 0 else 0.0,
        )

    def _elapsed(self) -> float:
        if not self._t0:
            return 0.0
        return (self._t_end if self._t_end is not None else _perf()) - self._t0

    # ------------------------------------------------------------------ the run
    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        own_clients = self._client is None
        shards = [_Shard(self._client)] if self._client is not None else self._make_shards()
        self._started_wall = time.time()
        self._t0 = _perf()
        deadline = None
        try:
            if self.max_seconds:
                deadline = self._loop.call_later(self.max_seconds, self._request_stop, "max_seconds")
            if not self._stopping:
                if self.mode.open_loop:
                    self._producers = [asyncio.create_task(self._schedule(shards), name="loadgen-schedule")]
                else:
                    n = max(1, min(self.mode.concurrency or 1, self.max_requests))
                    # Worker i always uses shard i % len(shards): each pool gets exactly its share.
                    self._producers = [
                        asyncio.create_task(self._worker(shards[i % len(shards)].client), name=f"loadgen-worker-{i}")
                        for i in range(n)
                    ]
                await asyncio.wait(self._producers)
                while self._requests:
                    await asyncio.wait(set(self._requests))
        finally:
            if deadline is not None:
                deadline.cancel()
            self._t_end = _perf()
            if own_clients:
                for shard in shards:
                    await shard.client.aclose()
            self.summary = self._summarize()
            if self.results_path is not None:
                self._write_results()
        # A producer that died of a bug (not a cancellation) must not pass silently.
        for task in self._producers:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()

    def _make_shards(self) -> list[_Shard]:
        """The HTTP clients: ``concurrency / SHARD_CONNECTIONS`` pools of at most that many connections.

        httpcore's pool, on every request start and end, scans all of its
        connections (with a socket-readability syscall for each idle one) and all
        queued requests, so one pool of 64 connections costs ~4 ms CPU per
        request here while eight pools of 8 cost ~0.9 ms (see
        tests/benchmarks/bench_loadgen.py). Each pool is sized so that the
        pools together hold exactly the concurrency: no request ever waits for
        a connection, so none of that wait leaks into TTFT.
        """
        n = self.mode.concurrency
        timeout = httpx.Timeout(self.timeout, pool=None)
        # One TLS context for all pools: each client would otherwise load the CA bundle (~30 ms).
        ssl_context = httpx.create_ssl_context()

        def client(limits: httpx.Limits) -> httpx.AsyncClient:
            return httpx.AsyncClient(limits=limits, timeout=timeout, verify=ssl_context)

        if n:
            n = max(1, min(n, self.max_requests))
            k = math.ceil(n / SHARD_CONNECTIONS)
            sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
            return [_Shard(client(httpx.Limits(max_connections=m, max_keepalive_connections=m))) for m in sizes]
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=OPEN_LOOP_KEEPALIVE // OPEN_LOOP_SHARDS)
        return [_Shard(client(limits)) for _ in range(OPEN_LOOP_SHARDS)]

    def _next(self) -> tuple[RequestRow, int] | None:
        """Issue the next request: its row (now counted as running) and prompt length.

        Counting happens here, not when the request's task first runs, so
        pending + running + completed + failed always equals the total.
        """
        if self._stopping or self._issued >= self.max_requests:
            return None
        index = self._issued
        self._issued += 1
        prompt, out = next(self._lengths)
        row = RequestRow(index=index, prompt_tokens=prompt + self._prefix, max_tokens=out)
        row.start_s = _perf() - self._t0
        self.rows.append(row)
        self._in_flight += 1
        return row, prompt

    async def _worker(self, client: httpx.AsyncClient) -> None:
        while (item := self._next()) is not None:
            await self._request(client, *item)

    async def _schedule(self, shards: list[_Shard]) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        sem = asyncio.Semaphore(self.mode.concurrency) if self.mode.concurrency else None
        for offset in arrival_offsets(self.mode, int(self.profile.random_seed or 0)):
            if self._stopping or self._issued >= self.max_requests:
                return
            delay = start + offset - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if sem is not None:
                await sem.acquire()
            item = self._next()
            if item is None:
                if sem is not None:
                    sem.release()
                return
            # The least busy pool: with a cap, it always has a free connection.
            shard = min(shards, key=_busy) if len(shards) > 1 else shards[0]
            shard.busy += 1
            task = asyncio.create_task(self._request(shard.client, *item))
            self._requests.add(task)
            task.add_done_callback(functools.partial(self._request_done, item[0], sem, shard))

    def _request_done(self, row: RequestRow, sem: asyncio.Semaphore | None, shard: _Shard, task: asyncio.Task) -> None:
        self._requests.discard(task)
        shard.busy -= 1
        if sem is not None:
            sem.release()
        if row.status == "pending":
            # Cancelled before its coroutine ever ran: still a cancelled request, not a lost one.
            self._cancel_row(row, row.start_s + self._t0)

    def _cancel_row(self, row: RequestRow, t0: float) -> None:
        row.status = "cancelled"
        row.error = "cancelled: the run stopped"
        row.latency_ms = (_perf() - t0) * 1000.0
        self._cancelled += 1
        self._in_flight -= 1

    def _body(self, index: int, prompt: int, out: int) -> bytes:
        text = make_prompt(index, prompt, self._prefix)
        body: dict[str, Any] = {"model": self.model}
        if self.api == "chat":
            body["messages"] = [{"role": "user", "content": text}]
        else:
            body["prompt"] = text
        body.update(max_tokens=out, stream=True, ignore_eos=True, stream_options={"include_usage": True})
        if self._hint:
            body["sim_prompt_tokens"] = prompt + self._prefix
        return _dumps(body).encode()

    async def _request(self, client: httpx.AsyncClient, row: RequestRow, prompt: int) -> None:
        body = self._body(row.index, prompt, row.max_tokens)
        t0 = _perf()
        row.start_s = t0 - self._t0
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    await self._stream(client, body, row, t0)
            except TimeoutError:
                raise _Failed(f"timeout: no complete answer within {self.timeout:g} s") from None
            except (httpx.HTTPError, OSError, ValueError) as exc:
                raise _Failed(_describe_exc(exc)) from None
        except _Failed as exc:
            row.status = "error"
            row.error = str(exc)
            row.latency_ms = (_perf() - t0) * 1000.0
            self._failed += 1
            self._in_flight -= 1
        except asyncio.CancelledError:
            self._cancel_row(row, t0)
            raise
        else:
            row.status = "ok"
            self._in_flight -= 1
            self._completed += 1
            self._out_tokens += row.output_tokens
            self._prompt_tokens += row.prompt_tokens
            self._ttft.add(row.ttft_ms)
            self._lat.add(row.latency_ms)
            if row.itl_ms is not None:
                self._itl.add(row.itl_ms)

    async def _stream(self, client: httpx.AsyncClient, body: bytes, row: RequestRow, t0: float) -> None:
        """Send one request and read its SSE stream into ``row`` (raises _Failed)."""
        chat = self.api == "chat"
        async with client.stream("POST", self.url, content=body, headers=self._headers) as resp:
            row.http_status = resp.status_code
            if resp.status_code != 200:
                raw = await resp.aread()
                raise _Failed(f"HTTP {resp.status_code}: {_error_message(raw)}")
            first = last = 0.0
            chunks = 0
            usage = None
            done = False
            buf = b""
            async for data in resp.aiter_bytes():
                now = _perf()
                if buf:
                    data = buf + data
                lines = data.split(b"\n")
                buf = lines.pop()
                for line in lines:
                    if not line.startswith(b"data:"):
                        continue  # blank separators, comments, event:/id: fields
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        done = True
                        continue
                    if chunks and b'"usage"' not in payload and b'"error"' not in payload:
                        # Hot path: a token chunk after the first; no JSON parse.
                        if _HAS_TEXT.search(payload) is not None:
                            chunks += 1
                            last = now
                        continue
                    obj = json.loads(payload)
                    if not isinstance(obj, dict):
                        continue
                    if "error" in obj or obj.get("object") == "error":
                        raise _Failed(f"error in stream: {_error_message(payload)}")
                    if obj.get("usage"):
                        usage = obj["usage"]
                    choices = obj.get("choices")
                    if choices:
                        c = choices[0]
                        text = (c.get("delta") or {}).get("content") if chat else c.get("text")
                        if chat and not text:
                            text = (c.get("delta") or {}).get("reasoning_content")
                        if text:
                            if not chunks:
                                first = now
                            chunks += 1
                            last = now
        end = _perf()
        row.chunks = chunks
        if not done:
            raise _Failed("stream broken: the stream ended before 'data: [DONE]'")
        if not chunks:
            raise _Failed("empty stream: no token arrived")
        row.ttft_ms = (first - t0) * 1000.0
        row.latency_ms = (end - t0) * 1000.0
        if chunks > 1:
            row.itl_ms = (last - first) * 1000.0 / (chunks - 1)
        row.output_tokens = chunks
        if isinstance(usage, dict):
            if isinstance(usage.get("completion_tokens"), int):
                row.output_tokens = usage["completion_tokens"]
            if isinstance(usage.get("prompt_tokens"), int):
                row.prompt_tokens = usage["prompt_tokens"]

    # ------------------------------------------------------------------ results
    def _summarize(self) -> dict[str, Any]:
        duration = self._elapsed()
        ok = [r for r in self.rows if r.status == "ok"]
        errors = Counter(r.error for r in self.rows if r.status == "error")
        return {
            "count": len(self.rows),
            "completed": self._completed,
            "failed": self._failed,
            "cancelled": self._cancelled,
            "not_sent": self.max_requests - self._issued,
            "errors": dict(errors.most_common()),
            "ttft_ms": describe(r.ttft_ms for r in ok),
            "itl_ms": describe(r.itl_ms for r in ok if r.itl_ms is not None),
            "latency_ms": describe(r.latency_ms for r in ok),
            "requests_per_s": self._completed / duration if duration > 0 else 0.0,
            "output_tokens_per_s": self._out_tokens / duration if duration > 0 else 0.0,
            "total_output_tokens": self._out_tokens,
            "total_prompt_tokens": self._prompt_tokens,
            "duration_s": duration,
            "stop_reason": self._stop_reason,
            "rate_type": self.mode.rate_type,
            "mode": self.mode.describe(),
            "api": self.api,
        }

    def results(self) -> dict[str, Any]:
        """The whole results document (as written to ``results_path``)."""
        started = self._started_wall
        return {
            "profile": _profile_dict(self.profile),
            "model": self.model,
            "base_url": self.base_url,
            "api": self.api,
            "started": _dt.datetime.fromtimestamp(started, _dt.timezone.utc).isoformat() if started else None,
            "duration_s": self.summary["duration_s"] if self.summary else None,
            "requests": [r.to_dict() for r in self.rows],
            "summary": self.summary,
        }

    def _render_results(self) -> str:
        """The results as JSON text: one request row per line.

        (``json.dumps(indent=...)`` falls back to the pure-Python encoder, ~10x
        slower for 100k rows; rows are encoded compactly by the C encoder.)
        """
        doc = self.results()
        rows = doc.pop("requests")
        parts = ["{\n"]
        for key in ("profile", "model", "base_url", "api", "started", "duration_s"):
            parts.append(f" {json.dumps(key)}: {json.dumps(doc.pop(key), allow_nan=False)},\n")
        summary = json.dumps(doc.pop("summary"), indent=1, allow_nan=False).replace("\n", "\n ")
        enc = json.JSONEncoder(separators=(", ", ": "), allow_nan=False).encode
        parts.append(' "requests": [\n  ' + ",\n  ".join(map(enc, rows)) + ("\n ],\n" if rows else "],\n"))
        parts.append(f' "summary": {summary}')
        for key, value in doc.items():  # anything a subclass adds
            parts.append(f",\n {json.dumps(key)}: {json.dumps(value, allow_nan=False)}")
        parts.append("\n}\n")
        return "".join(parts)

    def _write_results(self) -> None:
        path = self.results_path
        assert path is not None
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(self._render_results())
            os.replace(tmp, path)
        except OSError as exc:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass  # the directory itself is unusable; nothing was written
            raise SweepdeckError(
                f"Could not write the workload results to {path}: {exc.strerror or exc}.",
                "Check that the directory is writable and the disk is not full.",
            ) from None


async def run_workload(base_url: str, model: str, profile, **kw: Any) -> dict[str, Any]:
    """Run a profile to the end (ignoring live events) and return its summary."""
    runner = WorkloadRunner(base_url, model, profile, **kw)
    async for _ in runner.events():
        pass
    assert runner.summary is not None
    return runner.summary
