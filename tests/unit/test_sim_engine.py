"""The simulator's timing model, admission control, token stream and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from backends.sim.engine import (
    TOKEN_TEXTS,
    Engine,
    EngineDeadError,
    GenRequest,
    count_prompt_tokens,
    itl_seconds,
    ttft_seconds,
)
from backends.sim.metrics import Histogram
from backends.sim.options import parse_args


def opts(*extra: str):
    return parse_args(["m", *extra])


# --- pure timing model ------------------------------------------------------------------
def test_ttft_grows_linearly_with_the_prompt():
    o = opts("--ttft-ms", "20", "--prefill-us-per-token", "50")
    assert ttft_seconds(o, 0) == pytest.approx(0.020)
    assert ttft_seconds(o, 1000) == pytest.approx(0.070)
    assert ttft_seconds(o, 2000) - ttft_seconds(o, 1000) == pytest.approx(0.050)


def test_itl_grows_with_the_running_batch():
    o = opts("--itl-ms", "10", "--itl-ms-per-seq", "0.5")
    assert itl_seconds(o, 1) == pytest.approx(0.010)
    assert itl_seconds(o, 11) == pytest.approx(0.015)
    assert itl_seconds(o, 0) == pytest.approx(0.010)  # never below the base


def test_speed_scales_everything_and_zero_removes_latency():
    fast = opts("--speed", "10")
    assert ttft_seconds(fast, 1000) == pytest.approx(0.007)
    assert itl_seconds(fast, 1) == pytest.approx(0.001)
    zero = opts("--speed", "0")
    assert ttft_seconds(zero, 10_000) == 0.0
    assert itl_seconds(zero, 500) == 0.0


@pytest.mark.parametrize(
    ("prompt", "tokens"),
    [
        ("hello world", 2),
        ("one  two\tthree\nfour", 4),
        ("", 0),
        ("   ", 1),
        ([1, 2, 3, 4, 5], 5),
        (["a b c", "d"], 3),
        ([[7, 8], [9]], 2),
        (None, 0),
    ],
)
def test_prompt_token_estimate(prompt, tokens):
    assert count_prompt_tokens(prompt) == tokens


def test_output_length_honours_max_tokens_and_ignore_eos():
    assert GenRequest(10, 100).output_tokens(0) == 100
    assert GenRequest(10, 100).output_tokens(30) == 30  # EOS after 30 tokens
    assert GenRequest(10, 100, ignore_eos=True).output_tokens(30) == 100
    assert GenRequest(10, 20).output_tokens(30) == 20
    assert GenRequest(10, 500, stop_after=256).output_tokens(0) == 256


def test_histogram_buckets_are_cumulative_with_le_bounds():
    h = Histogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 5.0):
        h.observe(v)
    lines = h.lines("x", 'a="b"')
    assert 'x_bucket{a="b",le="0.1"} 2.0' in lines
    assert 'x_bucket{a="b",le="1.0"} 3.0' in lines
    assert 'x_bucket{a="b",le="+Inf"} 4.0' in lines
    assert 'x_count{a="b"} 4.0' in lines


# --- the engine, in real (scaled) time --------------------------------------------------
async def run(engine: Engine, req: GenRequest, t0: float | None = None) -> tuple[list[str], list[float]]:
    """Tokens and their arrival times, relative to ``t0`` (default: the call)."""
    t0 = time.monotonic() if t0 is None else t0
    tokens, times = [], []
    async with contextlib.aclosing(engine.generate(req)) as gen:
        async for token in gen:
            tokens.append(token)
            times.append(time.monotonic() - t0)
    return tokens, times


async def test_stream_timing_follows_the_model():
    engine = Engine(opts("--ttft-ms", "40", "--prefill-us-per-token", "0", "--itl-ms", "20", "--itl-ms-per-seq", "0"))
    tokens, times = await run(engine, GenRequest(prompt_tokens=10, max_tokens=4))
    assert tokens == list(TOKEN_TEXTS[:4])
    # lower bounds are exact (sleeps never end early); upper bounds allow a busy machine
    assert 0.039 <= times[0] < 0.2
    # absolute deadlines: the 4th token is at ttft + 3 * itl, no drift
    assert 0.099 <= times[3] < 0.3
    m = engine.metrics
    assert (m.prompt_tokens, m.generation_tokens, m.success["length"]) == (10, 4, 1)
    assert m.ttft.count == 1 and m.itl.count == 3 and m.e2e.count == 1 and m.tpot.count == 1
    assert engine.running == 0 and engine.kv_used == 0


async def test_max_num_seqs_queues_requests_and_queueing_adds_to_ttft():
    engine = Engine(opts("--max-num-seqs", "2", "--ttft-ms", "30", "--prefill-us-per-token", "0", "--itl-ms", "10"))
    seen: dict[str, int] = {}

    async def probe():
        await asyncio.sleep(0.01)
        seen["running"], seen["waiting"] = engine.running, len(engine.waiting)
        seen["page"] = "vllm:num_requests_waiting" in engine.render_metrics()

    # one reference for all four: a request's own task may start late on a busy machine,
    # and its times would then be counted from later than the others'
    t0 = time.monotonic()
    results, _ = await asyncio.gather(
        asyncio.gather(*(run(engine, GenRequest(1, 3), t0) for _ in range(4))), probe()
    )
    assert seen["running"] == 2 and seen["waiting"] == 2
    first = sorted(times[0] for _, times in results)
    # two requests start at once; the other two wait for a slot (ttft + 2 itl = 50 ms)
    # and then need their own ttft (30 ms): their first token comes at >= 80 ms
    assert 0.029 <= first[0] <= first[1] < first[2]
    assert first[2] >= 0.079
    assert engine.running == 0 and not engine.waiting
    assert engine.metrics.success["length"] == 4


async def test_kv_usage_counts_running_tokens():
    engine = Engine(opts("--kv-cache-tokens", "1000", "--ttft-ms", "50"))
    task = asyncio.create_task(run(engine, GenRequest(prompt_tokens=250, max_tokens=2)))
    await asyncio.sleep(0.01)
    assert engine.kv_usage == pytest.approx(0.25)
    assert 'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25' in engine.render_metrics()
    await task
    assert engine.kv_usage == 0


async def test_zero_latency_mode_never_sleeps():
    engine = Engine(opts("--speed", "0"))
    t0 = time.monotonic()
    for _ in range(200):
        tokens, _ = await run(engine, GenRequest(100, 50))
        assert len(tokens) == 50
    assert time.monotonic() - t0 < 2.0
    assert engine.metrics.generation_tokens == 200 * 50


async def test_closing_a_stream_early_frees_the_slot_and_counts_an_abort():
    engine = Engine(opts("--speed", "0", "--max-num-seqs", "1"))
    gen = engine.generate(GenRequest(5, 100))
    assert await gen.__anext__() == TOKEN_TEXTS[0]
    assert engine.running == 1
    await gen.aclose()
    assert engine.running == 0 and engine.kv_used == 0
    assert engine.metrics.success["abort"] == 1


async def test_cancelled_waiter_leaves_the_queue():
    engine = Engine(opts("--max-num-seqs", "1", "--ttft-ms", "100"))
    first = asyncio.create_task(run(engine, GenRequest(1, 1)))
    second = asyncio.create_task(run(engine, GenRequest(1, 1)))
    await asyncio.sleep(0.01)
    assert len(engine.waiting) == 1
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    assert not engine.waiting
    await first
    assert engine.running == 0


async def test_crash_after_n_kills_the_engine():
    dead = []
    engine = Engine(opts("--speed", "0", "--fail", "crash-after", "2"), on_dead=lambda: dead.append(True))
    await run(engine, GenRequest(1, 2))
    assert not dead
    await run(engine, GenRequest(1, 2))
    assert dead == [True] and engine.dead
    with pytest.raises(EngineDeadError):
        await run(engine, GenRequest(1, 2))


async def test_a_death_mid_stream_fails_running_and_waiting_requests():
    engine = Engine(opts("--max-num-seqs", "1", "--ttft-ms", "1", "--itl-ms", "20"))
    running = asyncio.create_task(run(engine, GenRequest(1, 50)))
    waiting = asyncio.create_task(run(engine, GenRequest(1, 5)))
    await asyncio.sleep(0.03)
    engine.die()
    for task in (running, waiting):
        with pytest.raises(EngineDeadError):
            await task
