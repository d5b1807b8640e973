"""WorkloadRunner against a tiny in-test OpenAI-style SSE server (aiohttp, 127.0.0.1, port 0)."""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import time
from collections.abc import Callable

import pytest
from aiohttp import web

from backends.events import Metrics, Notice, Progress
from backends.loadgen import WorkloadRunner, run_workload
from backends.loadgen.schedule import arrival_offsets, resolve_mode
from backends.loadgen.stats import describe, percentile
from config.catalog import make_workload
from config.errors import SweepdeckError

MODEL = "test-model"


def index_of(prompt: str) -> int:
    """The request index a prompt spells (schedule.make_prompt: base-64 digits after the shared prefix)."""
    from backends.loadgen.schedule import _VOCAB, PREFIX_WORD

    words = [w for w in prompt.split() if w != PREFIX_WORD][:8]
    return sum(_VOCAB.index(w) << (6 * i) for i, w in enumerate(words) if w in _VOCAB)


def profile(**kw):
    values = {"prompt_tokens": 20, "output_tokens": 4, "max_requests": 8, "rate_type": "concurrent",
              "max_concurrency": 4}
    values.update(kw)
    return make_workload("custom", values)


class FakeServer:
    """Streams ``max_tokens`` one-token chunks; ``behaviour(n, body)`` picks a failure per request.

    Behaviours: ``ok``, ``500``, ``404`` (vLLM's model-not-found body), ``break``
    (drops the connection mid-stream), ``stream-error`` (an error event inside the
    stream), ``hang`` (never answers), ``no-done`` (ends cleanly without [DONE]),
    ``slow-500`` (HTTP 500 after 0.3 s).

    ``ttft_by_index(i)`` adds to the TTFT of request index ``i``; ``tokens_per_chunk``
    puts several tokens in one chunk; chat's first ``reasoning`` chunks carry
    ``delta[reasoning_key]`` and are followed by a pause of ``reasoning_gap`` seconds;
    ``usage_tokens(max_tokens)`` overrides the usage count.
    """

    def __init__(self, behaviour: Callable[[int, dict], str] | None = None, ttft: float = 0.0,
                 ttft_per_word: float = 0.0, itl: float = 0.0, usage: bool = True,
                 ttft_by_index: Callable[[int], float] | None = None, tokens_per_chunk: int = 1,
                 reasoning: int = 0, reasoning_key: str = "reasoning_content", reasoning_gap: float = 0.0,
                 usage_tokens: Callable[[int], int] | None = None) -> None:
        self.behaviour = behaviour or (lambda n, body: "ok")
        self.ttft, self.ttft_per_word, self.itl, self.usage = ttft, ttft_per_word, itl, usage
        self.ttft_by_index, self.tokens_per_chunk = ttft_by_index, tokens_per_chunk
        self.reasoning, self.reasoning_key, self.reasoning_gap = reasoning, reasoning_key, reasoning_gap
        self.usage_tokens = usage_tokens
        self.arrivals: list[float] = []
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.arrivals.append(time.perf_counter())
        n = len(self.bodies)
        body = await request.json()
        self.bodies.append(body)
        self.paths.append(request.path)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request, n, body)
        finally:
            self.in_flight -= 1

    async def _answer(self, request, n, body):
        action = self.behaviour(n, body)
        early = await self._early(action, body)
        if early is not None:
            return early
        chat = request.path.endswith("/chat/completions")
        prompt = body["messages"][0]["content"] if chat else body["prompt"]
        words = len(prompt.split())
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        extra = self.ttft_by_index(index_of(prompt)) if self.ttft_by_index else 0.0
        await asyncio.sleep(self.ttft + self.ttft_per_word * words + extra)
        if chat:
            await resp.write(b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
                             b'"finish_reason":null}]}\n\n')
        if not await self._tokens(request, resp, body["max_tokens"], chat, action):
            return resp
        # a bare finish chunk (no text), as vLLM sends in some versions: not a token
        if chat:
            await resp.write(b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}\n\n')
        else:
            await resp.write(b'data: {"choices": [{"index": 0, "text": "", "finish_reason": "length"}]}\n\n')
        if action == "stream-error":
            await resp.write(b'data: {"error": {"message": "engine dead", "code": 500}}\n\n')
        if self.usage and body.get("stream_options", {}).get("include_usage"):
            out = self.usage_tokens(body["max_tokens"]) if self.usage_tokens else body["max_tokens"]
            usage = {"prompt_tokens": words, "completion_tokens": out, "total_tokens": words + out}
            await resp.write(b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\n")
        if action != "no-done":
            await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    @staticmethod
    async def _early(action: str, body: dict) -> web.Response | None:
        """The answer of a request that fails before streaming (None: it streams)."""
        if action == "500":
            return web.json_response({"error": {"message": "boom", "type": "InternalServerError", "code": 500}},
                                     status=500)
        if action == "404":
            message = f"The model `{body['model']}` does not exist."
            return web.json_response({"object": "error", "message": message, "type": "NotFoundError", "code": 404},
                                     status=404)
        if action == "hang":
            await asyncio.sleep(60)
        if action == "slow-500":
            await asyncio.sleep(0.3)
            return web.json_response({"error": {"message": "slow boom", "code": 500}}, status=500)
        return None

    async def _tokens(self, request, resp, max_tokens: int, chat: bool, action: str) -> bool:
        """Stream the token chunks; False when the connection was dropped on purpose."""
        per = self.tokens_per_chunk
        for i in range(-(-max_tokens // per)):
            if i and self.itl:
                await asyncio.sleep(self.itl)
            text = "".join(f" w{i * per + k}" for k in range(min(per, max_tokens - i * per)))
            if chat and i < self.reasoning:
                delta = {self.reasoning_key: text, "content": None}
            elif chat:
                if i and i == self.reasoning:
                    await asyncio.sleep(self.reasoning_gap)
                delta = {"content": text}
            choice = {"index": 0, "delta": delta} if chat else {"index": 0, "text": text}
            chunk = {"choices": [{**choice, "finish_reason": None}]}
            # Python's default separators (with spaces), unlike the simulator's compact JSON.
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            if action == "break" and i == 1:
                request.transport.close()
                return False
        return True


@pytest.fixture
async def serve():
    runners = []

    async def start(server: FakeServer) -> FakeServer:
        app = web.Application()
        app.router.add_post("/v1/completions", server.handle)
        app.router.add_post("/v1/chat/completions", server.handle)
        # handler_cancellation: a "hang" handler ends when the client gives up, so cleanup is quick
        runner = web.AppRunner(app, access_log=None, handle_signals=False, handler_cancellation=True,
                               shutdown_timeout=1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        server.url = f"http://127.0.0.1:{port}"
        return server

    yield start
    for r in runners:
        await r.cleanup()


async def test_measures_and_writes_complete_results(serve, tmp_path):
    srv = await serve(FakeServer(ttft=0.03, itl=0.01))
    p = profile(prompt_tokens=30, prompt_tokens_stdev=10, output_tokens=5, output_tokens_stdev=2,
                output_tokens_max=8, prefix_tokens=4, max_requests=10)
    out = tmp_path / "res" / "workload.json"
    summary = await run_workload(srv.url + "/", MODEL, p, results_path=out, metrics_interval=0.05)
    data = json.loads(out.read_text())
    assert data["summary"] == summary
    assert data["model"] == MODEL and data["base_url"] == srv.url and data["profile"]["prompt_tokens"] == 30
    assert data["started"] and data["duration_s"] > 0
    assert summary["count"] == summary["completed"] == 10 and summary["failed"] == 0 and summary["errors"] == {}
    rows = data["requests"]
    assert [r["index"] for r in rows] == list(range(10)) and data["format"] == 2
    by_index = {r["index"]: r for r in rows}
    for body in srv.bodies:
        assert body["stream"] is True and body["ignore_eos"] is True
        assert body["stream_options"] == {"include_usage": True} and body["model"] == MODEL
        assert "sim_prompt_tokens" not in body
    # lengths and prompt text agree with the rows (two workers: the server sees them in any order)
    assert summary["workers"] == 2 and {r["worker"] for r in rows} == {0, 1}
    assert sorted(index_of(b["prompt"]) for b in srv.bodies) == list(range(10))
    for body in srv.bodies:
        row = by_index[index_of(body["prompt"])]
        assert len(body["prompt"].split()) == row["prompt_tokens"]
        assert body["max_tokens"] == row["max_tokens"] == row["output_tokens"] == row["chunks"]
        assert body["prompt"].startswith("shared shared shared shared ")
        assert row["status"] == "ok" and row["error"] is None and row["http_status"] == 200
        assert row["ttft_ms"] >= 30 and row["latency_ms"] >= row["ttft_ms"]
        assert 0 <= row["start_s"] < row["end_s"] <= data["duration_s"]
        if row["output_tokens"] > 1:
            assert 8 <= row["itl_ms"] <= 60 and row["tpot_ms"] == pytest.approx(row["itl_ms"])
    assert len({r["max_tokens"] for r in rows}) > 1  # stdev really applied
    assert summary["total_output_tokens"] == sum(r["output_tokens"] for r in rows)
    assert summary["total_prompt_tokens"] == sum(r["prompt_tokens"] for r in rows)
    for key in ("ttft_ms", "itl_ms", "tpot_ms", "latency_ms"):
        assert set(summary[key]) == {"mean", "median", "p90", "p99", "min", "max"}
        assert summary[key]["min"] <= summary[key]["median"] <= summary[key]["p90"] <= summary[key]["max"]
    assert summary["requests_per_s"] > 0 and summary["output_tokens_per_s"] > summary["requests_per_s"]
    assert srv.max_in_flight <= 4


async def test_failures_are_counted_grouped_and_never_dropped(serve, tmp_path):
    kinds = ["ok", "500", "break", "stream-error", "no-done", "404"]
    srv = await serve(FakeServer(behaviour=lambda n, body: kinds[n % len(kinds)]))
    out = tmp_path / "r.json"
    runner = WorkloadRunner(srv.url, MODEL, profile(max_requests=18, rate_type="synchronous"), results_path=out)
    events = [e async for e in runner.events() if not isinstance(e, Notice)]  # a busy machine may add one
    s = runner.summary
    assert s["count"] == 18 and s["completed"] == 3 and s["failed"] == 15 and s["cancelled"] == 0
    errors = s["errors"]
    assert sum(errors.values()) == 15 and len(errors) == 5, errors
    assert errors["HTTP 500: boom"] == 3
    assert errors[f"HTTP 404: The model `{MODEL}` does not exist."] == 3
    assert errors["error in stream: engine dead"] == 3
    assert errors["stream broken: the stream ended before 'data: [DONE]'"] == 3
    broken = [k for k in errors if k.startswith("stream broken:") and "[DONE]" not in k]
    assert len(broken) == 1 and errors[broken[0]] == 3
    rows = json.loads(out.read_text())["requests"]
    assert len(rows) == 18 and sum(r["status"] == "error" for r in rows) == 15
    assert all(r["error"] for r in rows if r["status"] == "error")
    assert [r["http_status"] for r in rows if r["index"] % 6 == 1] == [500] * 3
    final_progress, final_metrics = events[-2], events[-1]
    assert isinstance(final_progress, Progress) and isinstance(final_metrics, Metrics)
    counts = (final_progress.total, final_progress.completed, final_progress.failed, final_progress.pending)
    assert counts == (18, 3, 15, 0)
    assert (final_metrics.completed, final_metrics.failed, final_metrics.in_flight) == (3, 15, 0)
    # only the successful requests feed the distributions
    assert s["ttft_ms"]["max"] is not None and s["total_output_tokens"] == 3 * 4


async def test_timeout_and_connection_errors(serve):
    srv = await serve(FakeServer(behaviour=lambda n, body: "hang"))
    t = time.perf_counter()
    s = await run_workload(srv.url, MODEL, profile(max_requests=2, max_concurrency=2), timeout=0.3)
    assert time.perf_counter() - t < 3
    assert s["failed"] == 2 and s["errors"] == {"timeout: no complete answer within 0.3 s": 2}

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = await run_workload(f"http://127.0.0.1:{port}", MODEL, profile(max_requests=3))
    assert s["failed"] == 3 and s["completed"] == 0
    ((msg, count),) = s["errors"].items()
    assert msg.startswith("connection error:") and count == 3
    assert s["ttft_ms"]["mean"] is None and s["requests_per_s"] == 0


async def test_synchronous_and_concurrent_limits(serve):
    srv = await serve(FakeServer(ttft=0.02))
    await run_workload(srv.url, MODEL, profile(rate_type="synchronous", max_requests=5))
    assert srv.max_in_flight == 1 and len(srv.bodies) == 5
    srv2 = await serve(FakeServer(ttft=0.05))
    s = await run_workload(srv2.url, MODEL,
                           profile(rate_type="concurrent", max_concurrency=None, rate=3, max_requests=9))
    assert srv2.max_in_flight == 3 and s["completed"] == 9 and s["mode"] == "3 concurrent"
    srv3 = await serve(FakeServer(ttft=0.05))
    await run_workload(srv3.url, MODEL, profile(rate_type="throughput", max_concurrency=6, max_requests=12))
    assert srv3.max_in_flight == 6


async def test_constant_rate_spacing(serve):
    srv = await serve(FakeServer())
    await run_workload(srv.url, MODEL, profile(rate_type="constant", rate=40, max_concurrency=None, max_requests=16))
    gaps = [b - a for a, b in zip(srv.arrivals, srv.arrivals[1:], strict=False)]
    assert len(gaps) == 15
    assert statistics.fmean(gaps) == pytest.approx(0.025, abs=0.004)
    assert srv.arrivals[-1] - srv.arrivals[0] == pytest.approx(15 * 0.025, abs=0.06)


async def test_poisson_follows_its_seeded_schedule(serve):
    srv = await serve(FakeServer())
    p = profile(rate_type="poisson", rate=25, max_concurrency=None, max_requests=15, random_seed=9)
    await run_workload(srv.url, MODEL, p)
    expected = [o for _, o in zip(range(15), arrival_offsets(resolve_mode(p), 9), strict=False)]
    actual = [t - srv.arrivals[0] for t in srv.arrivals]
    assert max(abs(a - e) for a, e in zip(actual, expected, strict=False)) < 0.08
    gaps = [b - a for a, b in zip(expected, expected[1:], strict=False)]
    assert max(gaps) > 2 * min(gaps)  # really uneven, unlike constant


async def test_stop_cancels_in_flight_and_counts_them(serve, tmp_path):
    srv = await serve(FakeServer(behaviour=lambda n, body: "ok" if n < 2 else "hang"))
    out = tmp_path / "r.json"
    runner = WorkloadRunner(srv.url, MODEL, profile(max_requests=10, max_concurrency=3), results_path=out,
                            metrics_interval=0.02)
    t = time.perf_counter()
    seen = []
    async for ev in runner.events():
        seen.append(ev)
        if isinstance(ev, Progress) and ev.completed == 2 and ev.running == 3:
            runner.stop()
    assert time.perf_counter() - t < 5
    s = runner.summary
    assert (s["completed"], s["cancelled"], s["failed"], s["count"], s["not_sent"]) == (2, 3, 0, 5, 5)
    assert s["stop_reason"] == "stopped"
    rows = json.loads(out.read_text())["requests"]
    assert sorted(r["status"] for r in rows) == ["cancelled"] * 3 + ["ok", "ok"]
    cancelled = [r for r in rows if r["status"] == "cancelled"]
    assert all(r["error"] == "cancelled: the run stopped" and r["ttft_ms"] is None for r in cancelled)
    assert seen[-2].failed == 3 and seen[-2].pending == 5 and seen[-1].in_flight == 0
    runner.stop()  # idempotent


async def test_max_seconds_stops_an_open_loop_run(serve):
    srv = await serve(FakeServer(ttft=0.01))
    s = await run_workload(srv.url, MODEL, profile(rate_type="constant", rate=50, max_requests=10_000,
                                                   max_concurrency=None), max_seconds=0.4)
    assert s["stop_reason"] == "max_seconds"
    assert 12 <= s["count"] <= 28
    assert s["completed"] + s["failed"] + s["cancelled"] == s["count"]
    assert s["not_sent"] == 10_000 - s["count"] and s["duration_s"] < 1.5
    # the profile's own max_seconds counts too (the smaller limit wins)
    p = make_workload("custom", {"prompt_tokens": 5, "output_tokens": 2, "rate_type": "constant", "rate": 50,
                                 "max_requests": 10_000, "max_seconds": 0.2})
    assert WorkloadRunner(srv.url, MODEL, p, max_seconds=5).max_seconds == 0.2


async def test_live_events_come_in_pairs_and_track_progress(serve):
    srv = await serve(FakeServer(ttft=0.02, itl=0.005))
    runner = WorkloadRunner(srv.url, MODEL, profile(rate_type="constant", rate=50, max_requests=20,
                                                    max_concurrency=None), metrics_interval=0.05)
    events = [e async for e in runner.events() if not isinstance(e, Notice)]  # a busy machine may add one
    assert len(events) >= 8 and len(events) % 2 == 0
    for prog, met in zip(events[::2], events[1::2], strict=False):
        assert isinstance(prog, Progress) and isinstance(met, Metrics)
        assert prog.total == 20 and prog.completed == met.completed and prog.running == met.in_flight
        assert prog.pending + prog.running + prog.completed + prog.failed == 20
    done = [p.completed for p in events[::2]]
    assert done == sorted(done) and done[-1] == 20 and done[0] < 20
    last = events[-1]
    assert last.ttft_ms_mean >= 20 and last.ttft_ms_p50 <= last.ttft_ms_p90
    assert last.itl_ms_mean >= 4 and last.latency_ms_p90 >= last.ttft_ms_p90
    assert last.requests_per_s > 0 and last.output_tokens_per_s == pytest.approx(4 * last.requests_per_s)
    # without an interval: only the final pair
    runner2 = WorkloadRunner(srv.url, MODEL, profile(max_requests=3), metrics_interval=0)
    assert [type(e) for e in [e async for e in runner2.events()] if type(e) is not Notice] == [Progress, Metrics]


async def test_chat_api_and_output_tokens_without_usage(serve):
    srv = await serve(FakeServer(usage=False, itl=0.002))
    s = await run_workload(srv.url + "/v1", MODEL, profile(max_requests=4, output_tokens=6), api="chat")
    assert srv.paths == ["/v1/chat/completions"] * 4
    assert srv.bodies[0]["messages"][0]["role"] == "user"
    assert len(srv.bodies[0]["messages"][0]["content"].split()) == 20
    # the empty role chunk is not a token: 6 text chunks each
    assert s["completed"] == 4 and s["total_output_tokens"] == 24 and s["itl_ms"]["min"] > 0


async def test_prompt_token_hint_is_opt_in(serve):
    srv = await serve(FakeServer())
    await run_workload(srv.url, MODEL, profile(max_requests=1, prefix_tokens=3), prompt_token_hint=True)
    assert srv.bodies[0]["sim_prompt_tokens"] == 23


async def test_closing_events_early_stops_the_run(serve):
    srv = await serve(FakeServer(behaviour=lambda n, body: "hang"))
    runner = WorkloadRunner(srv.url, MODEL, profile(max_requests=50), metrics_interval=0.02)
    gen = runner.events()
    while not (isinstance(ev := await gen.__anext__(), Progress) and ev.running == 4):
        pass
    await gen.aclose()
    assert runner.summary["cancelled"] == 4 and runner.summary["completed"] == 0
    with pytest.raises(RuntimeError):
        await runner.events().__anext__()


async def test_bad_arguments_are_clear_errors(serve, tmp_path):
    with pytest.raises(SweepdeckError, match="not an http"):
        WorkloadRunner("127.0.0.1:8000", MODEL, profile())
    with pytest.raises(SweepdeckError, match="Unknown API"):
        WorkloadRunner("http://127.0.0.1:8000", MODEL, profile(), api="embeddings")
    with pytest.raises(SweepdeckError, match="positive rate"):
        WorkloadRunner("http://127.0.0.1:8000", MODEL, profile(rate_type="constant", rate=None))
    srv = await serve(FakeServer())
    blocker = tmp_path / "file"
    blocker.write_text("x")
    runner = WorkloadRunner(srv.url, MODEL, profile(max_requests=2), results_path=blocker / "r.json")
    with pytest.raises(SweepdeckError, match="Could not write the workload results"):
        async for _ in runner.events():
            pass
    assert runner.summary["completed"] == 2  # measured even though the file could not be written


async def test_every_request_in_flight_reaches_the_server_at_once(serve):
    # one connection per request in flight, opened before the clock starts: none waits for a connection
    srv = await serve(FakeServer(ttft=0.15))
    s = await run_workload(srv.url, MODEL, profile(max_concurrency=20, max_requests=40))
    assert srv.max_in_flight == 20 and s["completed"] == 40 and s["workers"] == 2
    assert s["ttft_ms"]["max"] < 280  # a request queued behind a busy connection would wait >= 150 ms more


async def test_one_worker_runs_in_the_callers_loop_and_workers_are_checked(serve):
    srv = await serve(FakeServer())
    runner = WorkloadRunner(srv.url, MODEL, profile(max_requests=6), workers=1)
    async for _ in runner.events():
        pass
    assert runner.summary["completed"] == 6 and runner.summary["workers"] == 1
    assert {r.worker for r in runner.rows} == {0}
    # never more workers than requests in flight (closed loop) or requests (open loop)
    assert WorkloadRunner(srv.url, MODEL, profile(max_concurrency=3), workers=8).workers == 3
    assert WorkloadRunner(srv.url, MODEL, profile(rate_type="synchronous")).workers == 1
    assert WorkloadRunner(srv.url, MODEL, profile(rate_type="constant", rate=5, max_requests=2), workers=8).workers == 2
    for bad in (0, -1, 1.5):
        with pytest.raises(SweepdeckError, match="workers must be"):
            WorkloadRunner(srv.url, MODEL, profile(), workers=bad)


async def test_stop_from_another_thread(serve):
    import threading

    srv = await serve(FakeServer(behaviour=lambda n, body: "hang"))
    runner = WorkloadRunner(srv.url, MODEL, profile(max_requests=20, max_concurrency=2), metrics_interval=0.05)
    both_running = threading.Event()

    def stopper() -> None:
        both_running.wait(30)
        runner.stop()

    timer = threading.Thread(target=stopper)
    timer.start()
    stopped_at = None
    async for ev in runner.events():
        if isinstance(ev, Progress) and ev.running == 2 and not both_running.is_set():
            both_running.set()
            stopped_at = time.perf_counter()
    timer.join()
    assert stopped_at is not None and time.perf_counter() - stopped_at < 3
    assert runner.summary["cancelled"] == 2 and runner.summary["stop_reason"] == "stopped"


def test_every_catalog_preset_is_runnable():
    from backends.loadgen import resolve_mode
    from config.catalog import load_catalogs

    presets = load_catalogs().workloads.presets
    assert len(presets) >= 8
    for name, preset in presets.items():
        runner = WorkloadRunner("http://127.0.0.1:8000", MODEL, preset.profile)
        mode = resolve_mode(preset.profile)
        assert runner.mode == mode and runner.max_requests == preset.profile.max_requests
        if preset.profile.rate_type == "sweep":  # documented: one run of a sweep is a constant rate
            assert mode.open_loop and not mode.poisson and mode.rate == preset.profile.rate, name


async def test_merged_statistics_are_those_of_all_samples_not_an_average_of_workers(serve):
    # 3 slots on 2 workers: worker 0 sends requests 0-19 (2 slots), worker 1 sends 20-29 (1 slot).
    # Requests 0-19 take 20 ms to the first token, 20-29 take 200 ms: the merged median is ~20 ms,
    # an average of the workers' medians would be ~110 ms.
    srv = await serve(FakeServer(ttft=0.02, ttft_by_index=lambda i: 0.18 if i >= 20 else 0.0))
    runner = WorkloadRunner(srv.url, MODEL, profile(max_concurrency=3, max_requests=30), workers=2,
                            metrics_interval=0.05)
    events = [e async for e in runner.events() if not isinstance(e, Notice)]
    s = runner.summary
    fast = [r.ttft_ms for r in runner.rows if r.index < 20]
    slow = [r.ttft_ms for r in runner.rows if r.index >= 20]
    assert {r.worker for r in runner.rows if r.index < 20} == {0}
    assert {r.worker for r in runner.rows if r.index >= 20} == {1}
    assert len(fast) == 20 and len(slow) == 10 and max(fast) < 150 <= min(slow)
    exact = describe(fast + slow)
    for key in ("mean", "median", "p90", "p99", "min", "max"):
        assert s["ttft_ms"][key] == pytest.approx(exact[key])
    assert s["ttft_ms"]["median"] < 150 and s["ttft_ms"]["p90"] > 150
    # live: one reservoir fed by both workers' raw samples (below its size: exact too)
    final = events[-1]
    assert isinstance(final, Metrics) and final.completed == 30
    assert final.ttft_ms_mean == pytest.approx(exact["mean"]) and final.ttft_ms_p50 == pytest.approx(exact["median"])
    assert final.ttft_ms_p90 == pytest.approx(percentile(sorted(fast + slow), 90))


async def test_a_lagging_event_loop_is_reported_as_client_limited(serve, tmp_path):
    srv = await serve(FakeServer(ttft=0.01, itl=0.01))
    stop = asyncio.Event()

    async def hog() -> None:  # blocks the loop the (single, in-process) worker shares: 15 ms of every 20
        while not stop.is_set():
            time.sleep(0.015)
            await asyncio.sleep(0.005)

    out = tmp_path / "r.json"
    p = profile(rate_type="constant", rate=20, max_requests=30, max_concurrency=None, output_tokens=5)
    runner = WorkloadRunner(srv.url, MODEL, p, workers=1, metrics_interval=0.3, results_path=out)
    task = asyncio.create_task(hog())
    try:
        events = [e async for e in runner.events()]
    finally:
        stop.set()
        await task
    s = runner.summary
    assert s["client_limited"] is True and s["client"]["limited"] is True
    assert s["client"]["loop_lag_ms"]["p99"] > 5
    assert any("event-loop lag p99" in r for r in s["client"]["reasons"])
    notice = events[-1]
    assert isinstance(notice, Notice) and notice.level == "warning"
    assert notice.message.startswith("The load generator limited this measurement")
    assert "ms (limit 5 ms)" in notice.message
    metrics = [e for e in events if isinstance(e, Metrics)]
    assert metrics[-1].client_limited and metrics[-1].client_loop_lag_ms_p99 > 5
    assert json.loads(out.read_text())["summary"]["client"]["limited"] is True


async def test_tpot_uses_the_servers_token_count_when_chunks_hold_several_tokens(serve):
    srv = await serve(FakeServer(ttft=0.01, itl=0.02, tokens_per_chunk=2))
    runner = WorkloadRunner(srv.url, MODEL, profile(max_requests=4, output_tokens=9), workers=1)
    async for _ in runner.events():
        pass
    for row in runner.rows:
        assert row.chunks == 5 and row.output_tokens == 9
        # ITL: per chunk (4 gaps of ~20 ms); TPOT: per token after the first (same span over 8 tokens)
        assert row.itl_ms >= 19 and row.tpot_ms == pytest.approx(row.itl_ms * 4 / 8)
    s = runner.summary
    assert s["tpot_ms"]["mean"] == pytest.approx(statistics.fmean(r.tpot_ms for r in runner.rows))
    assert s["tpot_ms"]["mean"] < s["itl_ms"]["mean"] * 0.6


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
async def test_first_token_is_the_first_reasoning_chunk(serve, key):
    # reasoning streams first, then a long pause, then content: TTFT is when the reasoning began
    srv = await serve(FakeServer(ttft=0.02, reasoning=3, reasoning_key=key, reasoning_gap=0.3))
    s = await run_workload(srv.url, MODEL, profile(max_requests=2, output_tokens=6, max_concurrency=1), api="chat")
    assert s["completed"] == 2 and s["total_output_tokens"] == 12
    assert s["ttft_ms"]["max"] < 200  # the content came >= 320 ms after the request
    assert s["latency_ms"]["min"] > 300
    assert s["itl_ms"]["min"] > 300 / 5  # six chunks carried tokens, reasoning included


async def test_failed_requests_never_enter_latency_or_throughput(serve):
    kinds = ["ok", "slow-500"]
    srv = await serve(FakeServer(ttft=0.01, behaviour=lambda n, body: kinds[index_of(body["prompt"]) % 2]))
    s = await run_workload(srv.url, MODEL, profile(max_requests=10, max_concurrency=2, output_tokens=3), workers=1)
    assert s["completed"] == 5 and s["failed"] == 5 and s["errors"] == {"HTTP 500: slow boom": 5}
    for key in ("ttft_ms", "latency_ms"):
        assert s[key]["max"] < 250, key  # failures took >= 300 ms
    assert s["total_output_tokens"] == 15 and s["total_prompt_tokens"] == 5 * 20
    assert s["requests_per_s"] == pytest.approx(5 / s["duration_s"])
    assert s["output_tokens_per_s"] == pytest.approx(15 / s["duration_s"])


async def test_impossible_samples_are_invalid_counted_and_left_out(serve, tmp_path):
    # usage claims fewer tokens than the chunks that carried them: not a trustworthy sample
    srv = await serve(FakeServer(usage_tokens=lambda n: 1))
    out = tmp_path / "r.json"
    runner = WorkloadRunner(srv.url, MODEL, profile(max_requests=3, output_tokens=4), results_path=out,
                            metrics_interval=0)
    events = [e async for e in runner.events()]
    s = runner.summary
    assert (s["count"], s["completed"], s["invalid"], s["failed"]) == (3, 0, 3, 0)
    assert s["errors"] == {"usage says 1 output tokens but 4 chunks carried tokens": 3}
    assert s["ttft_ms"]["mean"] is None and s["requests_per_s"] == 0 and s["total_output_tokens"] == 0
    assert events[0].failed == 3 and events[0].completed == 0
    rows = json.loads(out.read_text())["requests"]
    assert {r["status"] for r in rows} == {"invalid"} and all(r["ttft_ms"] is None for r in rows)
