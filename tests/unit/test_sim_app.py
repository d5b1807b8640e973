"""The simulator's ASGI app in-process: OpenAI request/response shapes and vLLM's errors."""

from __future__ import annotations

import json

import httpx
import pytest

from backends.sim import failures
from backends.sim.engine import Engine
from backends.sim.options import parse_args
from backends.sim.server import SimApp


def make_client(*extra: str) -> tuple[httpx.AsyncClient, Engine]:
    opts = parse_args(["org/model", "--speed", "0", *extra])
    engine = Engine(opts)
    app = SimApp(opts, engine)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim"), engine


def sse_events(text: str) -> list[str]:
    return [block[len("data: "):] for block in text.split("\n\n") if block.startswith("data: ")]


async def test_models_lists_served_names():
    client, _ = make_client("--served-model-name", "a", "b", "--max-model-len", "2048")
    async with client:
        data = (await client.get("/v1/models")).json()
    assert data["object"] == "list"
    assert [m["id"] for m in data["data"]] == ["a", "b"]
    assert data["data"][0]["root"] == "org/model"
    assert data["data"][0]["max_model_len"] == 2048


async def test_completion_non_streaming_with_usage():
    client, _ = make_client()
    async with client:
        resp = await client.post(
            "/v1/completions", json={"model": "org/model", "prompt": "one two three", "max_tokens": 5}
        )
    assert resp.status_code == 200
    body = resp.json()
    assert body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length"
    assert len(choice["text"].split()) == 5
    assert body["usage"] == {
        "prompt_tokens": 3,
        "total_tokens": 8,
        "completion_tokens": 5,
        "prompt_tokens_details": None,
    }


async def test_completion_default_max_tokens_is_16_and_prompt_hint_wins():
    client, _ = make_client()
    async with client:
        body = (await client.post("/v1/completions", json={"prompt": "x", "sim_prompt_tokens": 700})).json()
    assert body["usage"]["completion_tokens"] == 16
    assert body["usage"]["prompt_tokens"] == 700


async def test_completion_streaming_chunks_end_with_done():
    client, engine = make_client()
    async with client:
        resp = await client.post(
            "/v1/completions",
            json={"model": "org/model", "prompt": "a b", "max_tokens": 3, "stream": True,
                  "stream_options": {"include_usage": True}},
        )
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = sse_events(resp.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    tokens = [c for c in chunks if c["choices"]]
    assert len(tokens) == 3
    assert all(c["object"] == "text_completion" for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in tokens] == [None, None, "length"]
    assert chunks[-1]["usage"]["completion_tokens"] == 3 and chunks[-1]["choices"] == []
    assert engine.metrics.generation_tokens == 3


async def test_chat_streaming_role_then_content():
    client, _ = make_client()
    async with client:
        resp = await client.post(
            "/v1/chat/completions",
            json={"model": "org/model", "messages": [{"role": "user", "content": "hi there you"}],
                  "max_tokens": 4, "stream": True, "ignore_eos": True},
        )
    events = sse_events(resp.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    contents = [c["choices"][0]["delta"]["content"] for c in chunks[1:]]
    assert len(contents) == 4 and all(contents)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


async def test_chat_non_streaming_and_content_parts():
    client, _ = make_client()
    async with client:
        body = (
            await client.post(
                "/v1/chat/completions",
                json={"messages": [{"role": "system", "content": "be brief"},
                                   {"role": "user", "content": [{"type": "text", "text": "a b c"}]}],
                      "max_completion_tokens": 2},
            )
        ).json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["usage"]["prompt_tokens"] == 5
    assert body["usage"]["completion_tokens"] == 2


async def test_chat_without_max_tokens_stops_naturally():
    client, _ = make_client()
    async with client:
        body = (await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})).json()
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 256


async def test_eos_after_stops_early_unless_ignore_eos():
    client, _ = make_client("--eos-after", "3")
    async with client:
        early = (await client.post("/v1/completions", json={"prompt": "x", "max_tokens": 10})).json()
        full = (await client.post("/v1/completions", json={"prompt": "x", "max_tokens": 10, "ignore_eos": True})).json()
    assert (early["usage"]["completion_tokens"], early["choices"][0]["finish_reason"]) == (3, "stop")
    assert (full["usage"]["completion_tokens"], full["choices"][0]["finish_reason"]) == (10, "length")


async def test_unknown_model_is_404_like_vllm():
    client, _ = make_client()
    async with client:
        resp = await client.post("/v1/completions", json={"model": "other", "prompt": "x"})
    assert resp.status_code == 404
    assert resp.json() == {
        "error": {
            "message": failures.MODEL_DOES_NOT_EXIST_TEMPLATE.format(model="other"),
            "type": "NotFoundError",
            "param": None,
            "code": 404,
        }
    }


async def test_too_long_request_is_400_with_vllms_message():
    client, _ = make_client("--max-model-len", "100")
    async with client:
        resp = await client.post(
            "/v1/completions", json={"prompt": " ".join(["w"] * 60), "max_tokens": 50}
        )
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["type"] == "BadRequestError" and err["code"] == 400
    assert err["message"] == (
        "This model's maximum context length is 100 tokens. However, you requested 110 tokens "
        "(60 in the messages, 50 in the completion). Please reduce the length of the messages or completion."
    )


@pytest.mark.parametrize(
    ("path", "payload", "status"),
    [
        ("/v1/completions", b"{not json", 400),
        ("/v1/completions", b"[1, 2]", 400),
        ("/v1/completions", b'{"prompt": "x", "max_tokens": 0}', 400),
        ("/v1/completions", b'{"prompt": "x", "max_tokens": "ten"}', 400),
        ("/v1/completions", b'{"max_tokens": 3}', 400),
        ("/v1/chat/completions", b'{"messages": []}', 400),
        ("/v1/nothing", b"{}", 404),
        ("/v1/models", b"{}", 405),
    ],
)
async def test_bad_requests(path, payload, status):
    client, engine = make_client()
    async with client:
        resp = await client.post(path, content=payload, headers={"content-type": "application/json"})
    assert resp.status_code == status
    assert engine.running == 0


async def test_health_and_metrics_page():
    client, engine = make_client()
    async with client:
        assert (await client.get("/health")).status_code == 200
        await client.post("/v1/completions", json={"prompt": "a b c d", "max_tokens": 7})
        resp = await client.get("/metrics")
        assert resp.headers["content-type"].startswith("text/plain")
        text = resp.text
        for name in (
            "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:gpu_cache_usage_perc",
            "vllm:kv_cache_usage_perc", "vllm:time_to_first_token_seconds_bucket",
            "vllm:inter_token_latency_seconds_bucket", "vllm:time_per_output_token_seconds_bucket",
            "vllm:e2e_request_latency_seconds_bucket",
        ):
            assert f"{name}{{" in text, name
        assert 'vllm:prompt_tokens_total{engine="0",model_name="org/model"} 4.0' in text
        assert 'vllm:generation_tokens_total{engine="0",model_name="org/model"} 7.0' in text
        assert 'vllm:request_success_total{engine="0",model_name="org/model",finished_reason="length"} 1.0' in text
        assert "# TYPE vllm:time_to_first_token_seconds histogram" in text
        assert 'num_gpu_blocks="8192"' in text  # 131072 tokens / 16 per block
        engine.die()
        assert (await client.get("/health")).status_code == 503
        dead = await client.post("/v1/completions", json={"prompt": "x"})
        assert dead.status_code == 500
        assert dead.json()["error"]["message"] == failures.ENGINE_DEAD_MESSAGE
