"""The workload runner: drives a workload profile against an OpenAI-compatible server.

How it measures
===============
Worker processes (``workers``, default: the CPU count, at most one per
request in flight; one worker runs in the caller's event loop instead) each
send a share of the requests (:mod:`backends.loadgen.worker`) over their own
keep-alive HTTP/1.1 connections (:mod:`backends.loadgen.http`: the clock is
read when bytes arrive, ``httptools`` parses, no per-chunk coroutine). Each
request is a streaming ``/v1/completions`` (or ``/v1/chat/completions``) with
``max_tokens``, ``ignore_eos`` and ``stream_options.include_usage``. All
connections the run starts with are opened before the clock starts. Per
request:

* **TTFT** — request written to the arrival of the first chunk that carries
  output: ``text`` (completions), ``delta.content``, or reasoning
  (``delta.reasoning_content`` / ``delta.reasoning``: reasoning models stream
  their thinking first, and that is when the first token arrives);
* **ITL** — mean gap between chunks that carry output:
  ``(last - first) / (chunks - 1)`` (requests with at least two such chunks);
* **TPOT** — time per output token after the first:
  ``(last - first) / (output_tokens - 1)`` with the server's token count
  (``usage.completion_tokens``); equal to ITL when every chunk holds one
  token, smaller when chunks hold several;
* **latency** — request written to the end of the response;
* **output tokens** — ``usage.completion_tokens``, else the chunks that
  carried output; **prompt tokens** — usage, else intended.

Every finished request is checked (:func:`~backends.loadgen.worker.check_sample`):
timestamps out of order or a usage count below the chunks seen make it
``invalid`` — counted, kept, and left out of every statistic. Requests that
fail (HTTP error, connection error, timeout, broken stream, an error inside the
stream) are rows with ``status: "error"``; requests in flight when the run
stops early (:meth:`WorkloadRunner.stop` or ``max_seconds``) are rows with
``status: "cancelled"``. None are dropped, and none but ``ok`` rows feed the
latency and throughput figures.

The statistics of several workers are merged from their raw samples (live:
every completed request's values reach one reservoir; the summary: every row),
never by averaging percentiles. Each worker also measures its event-loop lag
and CPU time; when the lag p99 exceeds 5 ms or a worker uses more than 80 % of
a core, the client — not the server — limited the measurement, and the
summary, the live :class:`~backends.events.Metrics` (``client_limited``) and a
final :class:`~backends.events.Notice` say so, with the figures.

Live :class:`~backends.events.Progress` / :class:`~backends.events.Metrics`
count cancelled and invalid requests as failed (they have no field of their
own); the summary keeps them apart.

The results file (``results_path``, e.g. ``results.json``)
============================================================
One JSON object, one load point (a rate sweep is run as one runner per rate,
each with its own file). Keys (older files lack the ones marked *new*):

``format`` (*new*, 2)
    Version of this layout. Files without it are version 1 (no TPOT, no client
    check, rows without ``tpot_ms``/``end_s``/``worker``).
``profile``
    The workload profile (prompt/output token means and spreads, rate type,
    rate, max_concurrency, max_requests, seed...).
``model``, ``base_url``, ``api``
    What was asked of which server (``api``: ``completions`` or ``chat``).
``started``, ``duration_s``
    ISO 8601 start (UTC) and the measured duration (first request written to
    the last response ended).
``requests``
    One row per request sent, in no particular order: ``index`` (0-based, the
    same lengths and prompt for the same index in every run of the profile),
    ``prompt_tokens``, ``max_tokens``, ``start_s`` / ``end_s`` (*new*; seconds
    after the start), ``status`` (``ok`` | ``error`` | ``cancelled`` |
    ``invalid``), ``output_tokens``, ``chunks``, ``ttft_ms``, ``itl_ms``,
    ``tpot_ms`` (*new*), ``latency_ms``, ``http_status``, ``error``,
    ``worker`` (*new*). Latency fields are null where not measured.
``summary``
    ``count`` (rows), ``completed``, ``failed``, ``cancelled``, ``invalid``
    (*new*), ``not_sent``, ``errors`` (message → count, failed and invalid
    rows), ``ttft_ms`` / ``itl_ms`` / ``tpot_ms`` (*new*) / ``latency_ms``
    (each ``{mean, median, p90, p99, min, max}`` over ``ok`` rows, null when
    none), ``requests_per_s``, ``output_tokens_per_s``,
    ``total_output_tokens``, ``total_prompt_tokens`` (``ok`` rows),
    ``duration_s``, ``stop_reason`` (``max_requests`` | ``max_seconds`` |
    ``stopped``), ``rate_type``, ``mode`` (text), ``rate`` and
    ``concurrency`` (*new*; the load point: requests/s of an open-loop run,
    requests in flight of a closed-loop run or an open-loop cap, else null),
    ``api``, ``workers`` (*new*), ``client_limited`` (*new*, bool) and
    ``client`` (*new*: ``limited``, ``reasons``, ``message``,
    ``loop_lag_ms`` ``{p50, p99, max}``, ``cpu_pct`` per worker,
    ``cpu_pct_max``, ``lag_limit_ms``, ``cpu_limit_pct``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as _dt
import json
import math
import os
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from backends.events import Event, Metrics, Notice, Progress
from backends.loadgen.schedule import Mode, resolve_mode
from backends.loadgen.stats import CPU_MIN_WALL_S, LagHistogram, LiveStat, client_verdict, describe
from backends.loadgen.worker import (
    APIS,
    ROW_FIELDS,
    LoadWorker,
    Plan,
    RequestRow,
    encode_frame,
    raise_fd_limit,
    read_frame,
)
from config.errors import SweepdeckError

FORMAT = 2
START_MARGIN = 0.05
"""Seconds between the last worker's "ready" and the common start (time for the "go" frames to arrive)."""
STDERR_TAIL = 20

_perf = time.perf_counter


def default_workers(mode: Mode, max_requests: int) -> int:
    """The CPU count, but no more workers than requests in flight (closed loop) or requests."""
    n = os.cpu_count() or 1
    if not mode.open_loop:
        n = min(n, mode.concurrency or 1)
    return max(1, min(n, max_requests))


def split(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` near-equal whole shares, larger ones first."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _profile_dict(profile) -> dict[str, Any]:
    try:
        return dataclasses.asdict(profile)
    except TypeError:
        return {k: v for k, v in vars(profile).items() if not k.startswith("_")}


class _LocalWorker:
    """A worker in the caller's event loop."""

    def __init__(self, plan: Plan) -> None:
        self.worker = LoadWorker(plan, cpu_clock=time.thread_time)
        self.task: asyncio.Task | None = None
        self.done: dict[str, Any] | None = None
        self.error: str | None = None

    async def prepare(self) -> None:
        await self.worker.prepare()

    def go(self, t0: float) -> None:
        self.task = asyncio.create_task(self.worker.run(t0), name="loadgen-worker-0")

    def stop(self) -> None:
        self.worker.stop()

    def counters(self) -> dict[str, Any]:
        return self.worker.counters()

    def take_samples(self) -> list:
        return self.worker.take_samples()

    async def wait(self) -> None:
        if self.task is not None:
            await self.task
        w = self.worker
        self.done = {**w.counters(), "stop_reason": w.stop_reason, "rows": w.rows}

    async def kill(self) -> None:
        self.worker.stop()
        if self.task is not None:
            with contextlib.suppress(BaseException):
                await self.task


class _ProcessWorker:
    """A worker in a process of its own (``python -m backends.loadgen.workerproc``)."""

    def __init__(self, plan: Plan, on_samples: Callable[[list], None]) -> None:
        self.plan = plan
        self.on_samples = on_samples
        self.proc: asyncio.subprocess.Process | None = None
        self.last: dict[str, Any] = {"issued": 0, "in_flight": 0, "completed": 0, "failed": 0, "cancelled": 0,
                                     "invalid": 0, "out_tokens": 0, "prompt_tokens": 0, "cpu_s": 0.0, "wall_s": 0.0,
                                     "lag": {"buckets": {}, "max_ms": 0.0}}
        self.done: dict[str, Any] | None = None
        self.error: str | None = None
        self.stderr: list[str] = []
        self._reader: asyncio.Task | None = None
        self._drain: asyncio.Task | None = None

    async def start(self) -> None:
        import backends

        root = str(Path(backends.__file__).resolve().parents[1])
        env = dict(os.environ)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "backends.loadgen.workerproc", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )
        self._drain = asyncio.create_task(self._drain_stderr())
        self._send(("plan", self.plan))

    async def prepare(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        frame = await read_frame(self.proc.stdout)
        if not frame or frame[0] != "ready":
            await self._died(frame)
        self._reader = asyncio.create_task(self._read())

    def go(self, t0: float) -> None:
        self._send(("go", t0))

    def stop(self) -> None:
        self._send(("stop",))

    def counters(self) -> dict[str, Any]:
        return self.last

    def take_samples(self) -> list:
        return []  # delivered as they arrive (on_samples)

    async def wait(self) -> None:
        assert self.proc is not None
        if self._reader is not None:
            await self._reader
        await self.proc.wait()
        if self._drain is not None:
            await self._drain
        if self.done is None:
            await self._died(None)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        for task in (self._reader, self._drain):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    def _send(self, message: Any) -> None:
        stdin = self.proc.stdin if self.proc is not None else None
        if stdin is None or stdin.is_closing():
            return
        with contextlib.suppress(OSError, RuntimeError):
            stdin.write(encode_frame(message))

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while (frame := await read_frame(self.proc.stdout)) is not None:
            kind = frame[0]
            if kind in ("tick", "done"):
                data = frame[1]
                self.on_samples(data.pop("samples"))
                if kind == "done":
                    data["rows"] = [RequestRow(*t) for t in data["rows"]]
                    self.done = data
                self.last = data
            elif kind == "error":
                self.error = frame[1]

    async def _drain_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.stderr.append(line.decode("utf-8", "replace").rstrip())
            del self.stderr[:-STDERR_TAIL]

    async def _died(self, frame: Any) -> None:
        assert self.proc is not None
        code = await self.proc.wait()
        if self._drain is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._drain, 5)
        why = self.error or (frame[1] if frame and frame[0] == "error" else f"exit code {code}")
        tail = "\n".join(self.stderr[-5:])
        raise RuntimeError(f"load generator worker {self.plan.worker} failed: {why}" + (f"\n{tail}" if tail else ""))


class WorkloadRunner:
    """Runs one workload profile against ``base_url`` and reports as it goes.

    Args:
        base_url: Server root, e.g. ``http://127.0.0.1:8000`` (a trailing ``/v1`` is accepted).
        model: Model name sent in each request.
        profile: A :class:`config.catalog.WorkloadProfile`.
        results_path: Where to write the results JSON when the run ends.
        metrics_interval: Seconds between live Progress/Metrics pairs (<= 0: final pair only).
        api: ``completions`` or ``chat``.
        max_seconds: Stop after this long (the smaller of this and ``profile.max_seconds``);
            requests still in flight are cancelled.
        timeout: Per-request limit in seconds (connect to the end of the response).
        headers: Extra HTTP headers (e.g. ``Authorization`` for a server with an API key).
        prompt_token_hint: Also send ``sim_prompt_tokens`` (the simulator's exact-count
            field); off by default because a real vLLM warns about the unknown field on
            every request, and the prompt text already has the intended length.
        workers: Worker processes (default :func:`default_workers`: the CPU count, at
            most the requests in flight); 1 runs in the caller's event loop.

    Raises:
        SweepdeckError: unusable base_url, api, rate, concurrency or workers.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        profile,
        *,
        results_path: Path | None = None,
        metrics_interval: float = 0.5,
        api: str = "completions",
        max_seconds: float | None = None,
        timeout: float = 600.0,
        headers: dict[str, str] | None = None,
        prompt_token_hint: bool = False,
        workers: int | None = None,
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
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise SweepdeckError(f"workers must be a whole number of at least 1, got {workers!r}.",
                                 "Example: --workers 2")
        limits = [s for s in (max_seconds, getattr(profile, "max_seconds", None)) if s]
        self.max_seconds: float | None = min(limits) if limits else None
        self.results_path = Path(results_path) if results_path else None
        self.metrics_interval = metrics_interval
        self.timeout = float(timeout)
        self.headers = dict(headers or {})
        self.prompt_token_hint = prompt_token_hint
        self.workers = self._worker_count(workers)
        self.summary: dict[str, Any] | None = None
        self.rows: list[RequestRow] = []
        seed = int(profile.random_seed or 0)
        self._ttft = LiveStat(seed=seed + 1)
        self._itl = LiveStat(seed=seed + 2)
        self._lat = LiveStat(seed=seed + 3)
        self._tpot = LiveStat(seed=seed + 4)
        self._handles: list[_LocalWorker | _ProcessWorker] = []
        self._t0 = 0.0
        self._t_end: float | None = None
        self._started_wall: float | None = None
        self._started = False
        self._stopping = False
        self._stop_reason = "max_requests"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    def _worker_count(self, asked: int | None) -> int:
        cap = self.max_requests if self.mode.open_loop else min(self.mode.concurrency or 1, self.max_requests)
        return max(1, min(asked, cap)) if asked else default_workers(self.mode, self.max_requests)

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Ask the run to stop: nothing new is sent, in-flight requests are cancelled.

        Safe to call from any thread, before or during the run, more than once.
        """
        if self._stopping:
            return
        self._stopping = True
        self._stop_reason = "stopped"
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            self._stop_workers()
        else:
            loop.call_soon_threadsafe(self._stop_workers)

    def _stop_workers(self) -> None:
        for handle in self._handles:
            handle.stop()

    # ------------------------------------------------------------------ events
    async def events(self) -> AsyncIterator[Event]:
        """Run the workload, yielding Progress + Metrics every ``metrics_interval`` and a final pair.

        A final :class:`Notice` (level ``warning``) follows when the client limited
        the measurement. Closing the generator early (``aclose``) stops the run.
        :attr:`summary` is set (and the results file written) when this returns.
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
            client = (self.summary or {}).get("client") or {}
            if client.get("limited"):
                yield Notice(client["message"], level="warning")
        finally:
            if not main.done():
                self.stop()
                await asyncio.wait({main})

    def _totals(self) -> dict[str, int]:
        keys = ("issued", "in_flight", "completed", "failed", "cancelled", "invalid", "out_tokens")
        totals = dict.fromkeys(keys, 0)
        for handle in self._handles:
            c = handle.counters()
            for key in keys:
                totals[key] += c[key]
        return totals

    def progress(self) -> Progress:
        """Counts now (cancelled and invalid requests count as failed)."""
        t = self._totals()
        return Progress(
            total=self.max_requests,
            pending=self.max_requests - t["issued"],
            running=t["in_flight"],
            completed=t["completed"],
            failed=t["failed"] + t["cancelled"] + t["invalid"],
        )

    def metrics(self) -> Metrics:
        """Live figures now (percentiles from one bounded reservoir fed by every worker's samples)."""
        for handle in self._handles:
            self._add_samples(handle.take_samples())
        t = self._totals()
        elapsed = self._elapsed()
        verdict = self._verdict([h.counters() for h in self._handles])
        return Metrics(
            completed=t["completed"],
            failed=t["failed"] + t["cancelled"] + t["invalid"],
            in_flight=t["in_flight"],
            elapsed_s=elapsed,
            ttft_ms_mean=self._ttft.mean,
            ttft_ms_p50=self._ttft.pct(50),
            ttft_ms_p90=self._ttft.pct(90),
            itl_ms_mean=self._itl.mean,
            itl_ms_p90=self._itl.pct(90),
            latency_ms_mean=self._lat.mean,
            latency_ms_p90=self._lat.pct(90),
            requests_per_s=t["completed"] / elapsed if elapsed > 0 else 0.0,
            output_tokens_per_s=t["out_tokens"] / elapsed if elapsed > 0 else 0.0,
            tpot_ms_mean=self._tpot.mean,
            tpot_ms_p90=self._tpot.pct(90),
            client_limited=verdict["message"],
            client_loop_lag_ms_p99=verdict["loop_lag_ms"]["p99"],
            client_cpu_pct_max=verdict["cpu_pct_max"],
        )

    def _add_samples(self, samples: list) -> None:
        ttft, itl, tpot, lat = self._ttft.add, self._itl.add, self._tpot.add, self._lat.add
        for s_ttft, s_itl, s_tpot, s_lat, _ in samples:
            ttft(s_ttft)
            lat(s_lat)
            if s_itl is not None:
                itl(s_itl)
            if s_tpot is not None:
                tpot(s_tpot)

    @staticmethod
    def _verdict(counters: list[dict[str, Any]]) -> dict[str, Any]:
        lag = LagHistogram()
        cpu: list[float | None] = []
        for c in counters:
            lag.merge(LagHistogram.from_sparse(c["lag"]))
            cpu.append(100.0 * c["cpu_s"] / c["wall_s"] if c["wall_s"] >= CPU_MIN_WALL_S else None)
        return client_verdict(lag, cpu)

    def _elapsed(self) -> float:
        if not self._t0:
            return 0.0
        return max((self._t_end if self._t_end is not None else _perf()) - self._t0, 0.0)

    # ------------------------------------------------------------------ the run
    def _plans(self) -> list[Plan]:
        n = self.workers
        mode = self.mode
        common = dict(workers=n, base_url=self.base_url, api=self.api, model=self.model, profile=self.profile,
                      mode=mode, max_requests=self.max_requests, headers=self.headers, timeout=self.timeout,
                      max_seconds=self.max_seconds, prompt_token_hint=self.prompt_token_hint,
                      tick=self.metrics_interval if self.metrics_interval and self.metrics_interval > 0 else 1.0)
        caps = split(mode.concurrency, n) if mode.concurrency else [None] * n
        if mode.open_loop:
            counts = [len(range(k, self.max_requests, n)) for k in range(n)]
            return [Plan(worker=k, concurrency=caps[k], first_index=k, count=counts[k], **common) for k in range(n)]
        concurrency = min(mode.concurrency or 1, self.max_requests)
        caps = split(concurrency, n)
        # each worker's block of requests in proportion to its slots, so they finish together
        counts = [math.floor(self.max_requests * c / concurrency) for c in caps]
        for i in range(self.max_requests - sum(counts)):
            counts[i % n] += 1
        firsts = [sum(counts[:k]) for k in range(n)]
        return [Plan(worker=k, concurrency=caps[k], first_index=firsts[k], count=counts[k], **common) for k in range(n)]

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        plans = self._plans()
        if len(plans) == 1:
            self._handles = [_LocalWorker(plans[0])]
        else:
            raise_fd_limit()
            self._handles = [_ProcessWorker(p, self._add_samples) for p in plans]
        failed = True
        try:
            await self._start()
            await asyncio.gather(*(h.wait() for h in self._handles))
            failed = False
        finally:
            self._t_end = _perf()
            if failed:
                for handle in self._handles:
                    await handle.kill()
            self._collect()
            self.summary = self._summarize()
            if self.results_path is not None:
                self._write_results()

    async def _start(self) -> None:
        local = isinstance(self._handles[0], _LocalWorker)
        if not local:
            await asyncio.gather(*(h.start() for h in self._handles))  # type: ignore[union-attr]  # process workers
        await asyncio.gather(*(h.prepare() for h in self._handles))
        self._started_wall = time.time()
        self._t0 = _perf() + (0.0 if local else START_MARGIN)
        for handle in self._handles:
            handle.go(self._t0)
        if self._stopping:  # stop() came while the workers were starting
            self._stop_workers()

    def _collect(self) -> None:
        rows: list[RequestRow] = []
        reasons = []
        for handle in self._handles:
            done = handle.done
            if done is None:
                continue
            rows.extend(done["rows"])
            reasons.append(done["stop_reason"])
        self.rows = sorted(rows, key=lambda r: r.index)
        if not self._stopping and "max_seconds" in reasons:
            self._stop_reason = "max_seconds"

    # ------------------------------------------------------------------ results
    def _summarize(self) -> dict[str, Any]:
        rows = self.rows
        ok = [r for r in rows if r.status == "ok"]
        ends = [r.end_s for r in rows if r.end_s is not None]
        duration = max(ends) if ends else 0.0
        status = Counter(r.status for r in rows)
        out_tokens = sum(r.output_tokens for r in ok)
        errors = Counter(r.error for r in rows if r.status in ("error", "invalid"))
        mode = self.mode
        counters = [h.done or h.counters() for h in self._handles]
        verdict = self._verdict(counters)
        return {
            "count": len(rows),
            "completed": status["ok"],
            "failed": status["error"],
            "cancelled": status["cancelled"],
            "invalid": status["invalid"],
            "not_sent": self.max_requests - len(rows),
            "errors": dict(errors.most_common()),
            "ttft_ms": describe(r.ttft_ms for r in ok),  # type: ignore[misc]  # an ok row has its timings
            "itl_ms": describe(r.itl_ms for r in ok if r.itl_ms is not None),
            "tpot_ms": describe(r.tpot_ms for r in ok if r.tpot_ms is not None),
            "latency_ms": describe(r.latency_ms for r in ok),  # type: ignore[misc]  # an ok row has its timings
            "requests_per_s": len(ok) / duration if duration > 0 else 0.0,
            "output_tokens_per_s": out_tokens / duration if duration > 0 else 0.0,
            "total_output_tokens": out_tokens,
            "total_prompt_tokens": sum(r.prompt_tokens for r in ok),
            "duration_s": duration,
            "stop_reason": self._stop_reason,
            "rate_type": mode.rate_type,
            "mode": mode.describe(),
            "rate": mode.rate,
            "concurrency": mode.concurrency,
            "api": self.api,
            "workers": self.workers,
            "client_limited": verdict["limited"],
            "client": verdict,
        }

    def results(self) -> dict[str, Any]:
        """The whole results document (as written to ``results_path``; see the module docstring)."""
        started = self._started_wall
        return {
            "format": FORMAT,
            "profile": _profile_dict(self.profile),
            "model": self.model,
            "base_url": self.base_url,
            "api": self.api,
            "started": _dt.datetime.fromtimestamp(started, _dt.UTC).isoformat() if started else None,
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
        for key in ("format", "profile", "model", "base_url", "api", "started", "duration_s"):
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
            with contextlib.suppress(OSError):  # the directory itself is unusable; nothing was written
                tmp.unlink(missing_ok=True)
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


__all__ = ["APIS", "ROW_FIELDS", "RequestRow", "WorkloadRunner", "default_workers", "run_workload", "split"]
