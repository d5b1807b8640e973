"""The simulator's HTTP side: a plain ASGI app served by uvicorn, and the startup sequence.

A plain ASGI callable (no framework) keeps per-request overhead low enough to
push thousands of requests per second through it with ``--speed 0``.

Startup follows ``vllm serve`` (v0.11): version and non-default-args lines, one
warning per ignored option, the listening socket bound early (a busy port fails
before the model loads), config resolution (``--fail model-not-found`` /
``trust-remote-code`` die here), model loading (``--startup-delay``), memory
profiling (``--fail oom`` dies here), KV-cache lines, then uvicorn's lines on
stderr. SIGTERM/SIGINT at any point end the process with exit code 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from backends.sim import failures, logs, planned
from backends.sim.engine import TOKEN_TEXTS, Engine, EngineDeadError, GenRequest, count_prompt_tokens
from backends.sim.options import SimOptions, oom_budget_for
from config.errors import SweepdeckError

if TYPE_CHECKING:
    from config.planner import Plan

VLLM_VERSION = "0.11.0"
# Chat requests without max_tokens would, in vLLM, run to the context limit unless the
# model emits EOS; the simulator's "model" says EOS after this many tokens.
CHAT_NATURAL_LENGTH = 256

_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
_TOKEN_JSON = tuple(json.dumps(t) for t in TOKEN_TEXTS)
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
# Scope key of the time (time.monotonic) the HTTP server read the request's first bytes.
RECEIVED = "sweepdeck.received"


def stamping_protocol() -> type:
    """uvicorn's HTTP protocol, stamping each request's scope with the time its bytes were read.

    The ASGI app starts only after uvicorn has parsed the request and a task
    has been scheduled for it; under load that is later than the arrival of
    the bytes. The stamp lets the simulator report a TTFT the way a client
    sees it from the server's side (``sweepdeck_sim:http_time_to_first_token_seconds``).

    Every request read in one pass of the event loop over the ready sockets
    gets the time that pass began: all of their bytes were there by then, and
    parsing the first ones in a burst of hundreds delays the clock reading of
    the last ones by milliseconds.
    """
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    batch: list[float] = []

    def new_pass() -> None:
        batch.clear()

    class StampingProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]  # chosen at import (httptools or h11)
        def data_received(self, data: bytes) -> None:
            if not batch:
                batch.append(time.monotonic())
                # runs after every read callback of this pass: the next pass starts a new batch
                self.loop.call_soon(new_pass)
            received = batch[0]
            before = self.scope
            super().data_received(data)
            scope = self.scope
            if scope is not before and scope is not None:  # this data began a request
                scope[RECEIVED] = received

    return StampingProtocol


class ApiError(Exception):
    """An error answered as vLLM's JSON error body."""

    def __init__(self, status: int, message: str, err_type: str = "BadRequestError"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.err_type = err_type

    def body(self) -> bytes:
        return _dumps(
            {"error": {"message": self.message, "type": self.err_type, "param": None, "code": self.status}}
        ).encode()


def _disconnected(send) -> bool:
    """Whether the client went away (uvicorn's send silently drops data then).

    Reads uvicorn's per-request cycle flag through the bound ``send`` method:
    free, unlike a watcher task per stream. Other servers: never "disconnected".
    """
    cycle = getattr(send, "__self__", None)
    return bool(getattr(cycle, "disconnected", False))


class SimApp:
    """ASGI application: routes, request validation, response shaping."""

    def __init__(self, opts: SimOptions, engine: Engine):
        self.opts = opts
        self.engine = engine
        self.names = set(opts.served_model_names or [opts.model])
        self.created = int(time.time())
        self.stats_task: asyncio.Task | None = None
        self.on_startup: Callable[[], object] | None = None

    # --- ASGI entry ------------------------------------------------------------------
    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.http(scope, receive, send)
        elif kind == "lifespan":
            await self.lifespan(receive, send)

    async def lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.opts.stats_interval > 0:
                    self.stats_task = asyncio.create_task(self.stats_loop())
                await send({"type": "lifespan.startup.complete"})
                if self.on_startup is not None:
                    self.on_startup()
            elif message["type"] == "lifespan.shutdown":
                if self.stats_task is not None:
                    self.stats_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self.stats_task
                if self.opts.shutdown_delay > 0:
                    await asyncio.sleep(self.opts.shutdown_delay)  # a server that takes its time to stop
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def http(self, scope, receive, send) -> None:
        path = scope["path"]
        method = scope["method"]
        try:
            if path == "/v1/completions" or path == "/v1/chat/completions":
                if method != "POST":
                    return await self.send_json(send, 405, {"detail": "Method Not Allowed"})
                body = await self.read_json(receive)
                received = scope.get(RECEIVED)
                if path == "/v1/completions":
                    await self.completions(body, send, received)
                else:
                    await self.chat(body, send, received)
            elif method not in ("GET", "HEAD"):
                if path in ("/v1/models", "/health", "/metrics", "/version"):
                    return await self.send_json(send, 405, {"detail": "Method Not Allowed"})
                await self.send_json(send, 404, {"detail": "Not Found"})
            elif path == "/v1/models":
                await self.send_json(send, 200, self.models())
            elif path == "/health":
                status = 503 if self.engine.dead else 200
                await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0")]})
                await send({"type": "http.response.body", "body": b""})
            elif path == "/metrics":
                text = self.engine.render_metrics().encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")],
                    }
                )
                await send({"type": "http.response.body", "body": text})
            elif path == "/version":
                await self.send_json(send, 200, {"version": VLLM_VERSION})
            else:
                await self.send_json(send, 404, {"detail": "Not Found"})
        except ApiError as exc:
            await self.send_raw(send, exc.status, exc.body())

    # --- helpers ---------------------------------------------------------------------
    @staticmethod
    async def read_json(receive) -> dict:
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ApiError(400, "client disconnected")
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"JSON decode error: {exc}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "Input should be a valid dictionary")
        return body

    @staticmethod
    async def send_raw(send, status: int, body: bytes, headers=_JSON_HEADERS) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def send_json(self, send, status: int, obj) -> None:
        await self.send_raw(send, status, _dumps(obj).encode())

    def models(self) -> dict:
        names = self.opts.served_model_names or [self.opts.model]
        return {
            "object": "list",
            "data": [
                {
                    "id": name,
                    "object": "model",
                    "created": self.created,
                    "owned_by": "vllm",
                    "root": self.opts.model,
                    "parent": None,
                    "max_model_len": self.opts.max_model_len,
                    "permission": [
                        {
                            "id": f"modelperm-{uuid.uuid4().hex}",
                            "object": "model_permission",
                            "created": self.created,
                            "allow_create_engine": False,
                            "allow_sampling": True,
                            "allow_logprobs": True,
                            "allow_search_indices": False,
                            "allow_view": True,
                            "allow_fine_tuning": False,
                            "organization": "*",
                            "group": None,
                            "is_blocking": False,
                        }
                    ],
                }
                for name in names
            ],
        }

    def check_model(self, body: dict) -> str:
        model = body.get("model")
        if model is None:
            return self.opts.served_model_name
        if model not in self.names:
            raise ApiError(404, failures.MODEL_DOES_NOT_EXIST_TEMPLATE.format(model=model), "NotFoundError")
        return model

    def build_request(self, body: dict, prompt_tokens: int, chat: bool) -> tuple[GenRequest, bool, bool]:
        """Validate lengths and flags; return (request, stream, include_usage)."""
        hint = body.get("sim_prompt_tokens")
        if isinstance(hint, int) and not isinstance(hint, bool) and hint >= 0:
            prompt_tokens = hint
        max_len = self.opts.max_model_len
        raw_max = body.get("max_completion_tokens") if chat else None
        if raw_max is None:
            raw_max = body.get("max_tokens")
        natural = 0
        if raw_max is None:
            if chat:
                raw_max = max(max_len - prompt_tokens, 1)
                natural = CHAT_NATURAL_LENGTH
            else:
                raw_max = 16  # the OpenAI / vLLM completions default
        if not isinstance(raw_max, int) or isinstance(raw_max, bool):
            raise ApiError(400, f"max_tokens must be an integer, got {raw_max!r}")
        if raw_max < 1:
            raise ApiError(400, f"max_tokens must be at least 1, got {raw_max}.")
        if prompt_tokens + raw_max > max_len:
            raise ApiError(
                400,
                failures.CONTEXT_TOO_LONG_TEMPLATE.format(
                    max_model_len=max_len, total=prompt_tokens + raw_max, prompt=prompt_tokens, max_tokens=raw_max
                ),
            )
        ignore_eos = bool(body.get("ignore_eos", False))
        req = GenRequest(prompt_tokens=prompt_tokens, max_tokens=raw_max, ignore_eos=ignore_eos)
        if natural and not ignore_eos and not self.opts.eos_after:
            req.stop_after = natural
        stream = bool(body.get("stream", False))
        options = body.get("stream_options") or {}
        include_usage = bool(options.get("include_usage")) if isinstance(options, dict) else False
        return req, stream, include_usage

    # --- endpoints -------------------------------------------------------------------
    async def completions(self, body: dict, send, received: float | None = None) -> None:
        model = self.check_model(body)
        if "prompt" not in body:
            raise ApiError(400, "Either prompt or prompt_embeds must be provided and non-empty.")
        req, stream, include_usage = self.build_request(body, count_prompt_tokens(body["prompt"]), chat=False)
        rid = f"cmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if stream:
            head = (f'data: {{"id":"{rid}","object":"text_completion","created":{created},'
                    f'"model":{json.dumps(model)},"choices":[{{"index":0,"text":')
            await self.stream(send, req, head, include_usage, rid, created, model, "text_completion", chat=False,
                              received=received)
            return
        text, reason, n = await self.collect(req)
        await self.send_json(
            send,
            200,
            {
                "id": rid,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "text": text,
                        "logprobs": None,
                        "finish_reason": reason,
                        "stop_reason": None,
                        "prompt_logprobs": None,
                    }
                ],
                "usage": self.usage(req.prompt_tokens, n),
            },
        )

    async def chat(self, body: dict, send, received: float | None = None) -> None:
        model = self.check_model(body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError(400, "messages: Field required" if messages is None else "messages must be a non-empty list")
        prompt_tokens = 0
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                prompt_tokens += count_prompt_tokens(content)
            elif isinstance(content, list):  # content parts: count the text ones
                for part in content:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        prompt_tokens += count_prompt_tokens(part["text"])
        req, stream, include_usage = self.build_request(body, prompt_tokens, chat=True)
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if stream:
            head = (f'data: {{"id":"{rid}","object":"chat.completion.chunk","created":{created},'
                    f'"model":{json.dumps(model)},"choices":[{{"index":0,"delta":{{')
            await self.stream(send, req, head, include_usage, rid, created, model, "chat.completion.chunk", chat=True,
                              received=received)
            return
        text, reason, n = await self.collect(req)
        reasoning = None
        if self.opts.reasoning_tokens:
            cut = sum(len(TOKEN_TEXTS[i % len(TOKEN_TEXTS)]) for i in range(min(self.opts.reasoning_tokens, n)))
            reasoning, text = text[:cut], text[cut:]
        await self.send_json(
            send,
            200,
            {
                "id": rid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": text,
                            "refusal": None,
                            "annotations": None,
                            "audio": None,
                            "function_call": None,
                            "tool_calls": [],
                            self.opts.reasoning_field: reasoning,
                        },
                        "logprobs": None,
                        "finish_reason": reason,
                        "stop_reason": None,
                    }
                ],
                "usage": self.usage(req.prompt_tokens, n),
                "prompt_logprobs": None,
                "kv_transfer_params": None,
            },
        )

    @staticmethod
    def usage(prompt: int, completion: int) -> dict:
        return {
            "prompt_tokens": prompt,
            "total_tokens": prompt + completion,
            "completion_tokens": completion,
            "prompt_tokens_details": None,
        }

    async def collect(self, req: GenRequest) -> tuple[str, str, int]:
        """Run a request to the end; (text, finish_reason, output tokens)."""
        parts: list[str] = []
        try:
            async with contextlib.aclosing(self.engine.generate(req)) as tokens:
                async for token in tokens:
                    parts.append(token)
        except EngineDeadError:
            raise self.dead_error() from None
        return "".join(parts), self.engine.finish_reason(req), len(parts)

    def dead_error(self) -> ApiError:
        """What a request gets when the engine died (500) or the server is stopping (503)."""
        if self.engine.dead:
            return ApiError(500, failures.ENGINE_DEAD_MESSAGE, "InternalServerError")
        return ApiError(503, "The server is shutting down.", "ServiceUnavailableError")

    async def stream(self, send, req, head, include_usage, rid, created, model, obj, chat: bool,
                     received: float | None = None) -> None:
        """SSE in OpenAI chunk format, one token per chunk, ending with ``data: [DONE]``.

        Chat with ``--reasoning-tokens N``: the first N tokens go in the
        reasoning field of the delta instead of ``content``.
        """
        engine = self.engine
        n_out = req.output_tokens(self.opts.eos_after)
        thinking = self.opts.reasoning_tokens if chat else 0
        think_key = f'"{self.opts.reasoning_field}":'

        reason = engine.finish_reason(req)
        started = False
        count = 0
        try:
            async with contextlib.aclosing(engine.generate(req)) as tokens:
                async for _token in tokens:
                    if not started:
                        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
                        started = True
                        if chat:
                            await send(
                                {
                                    "type": "http.response.body",
                                    "body": (head + '"role":"assistant","content":""},'
                                             '"logprobs":null,"finish_reason":null}]}\n\n').encode(),
                                    "more_body": True,
                                }
                            )
                    text = _TOKEN_JSON[count % len(_TOKEN_JSON)]
                    count += 1
                    last = count == n_out
                    fin = f'"{reason}"' if last else "null"
                    if chat:
                        key = think_key if count <= thinking else '"content":'
                        chunk = (f'{head}{key}{text}}},"logprobs":null,"finish_reason":{fin},'
                                 f'"stop_reason":null}}]}}\n\n')
                    else:
                        chunk = f'{head}{text},"logprobs":null,"finish_reason":{fin},"stop_reason":null}}]}}\n\n'
                    await send({"type": "http.response.body", "body": chunk.encode(), "more_body": True})
                    if count == 1 and received is not None:
                        engine.metrics.http_ttft.observe(time.monotonic() - received)
                    if _disconnected(send):
                        return  # aclosing releases the slot
        except EngineDeadError:
            err = self.dead_error()
            if not started:
                await self.send_raw(send, err.status, err.body())
                return
            if not engine.dead:  # server shutting down: cut the stream, as a real server does
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await send({"type": "http.response.body", "body": b"data: " + err.body() + b"\n\n", "more_body": True})
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
            return
        tail = ""
        if include_usage:
            tail = "data: " + _dumps(
                {"id": rid, "object": obj, "created": created, "model": model, "choices": [],
                 "usage": self.usage(req.prompt_tokens, count)}
            ) + "\n\n"
        if not started:  # zero tokens cannot happen (max_tokens >= 1), but stay valid
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        await send({"type": "http.response.body", "body": (tail + "data: [DONE]\n\n").encode(), "more_body": False})

    # --- periodic stats line -------------------------------------------------------------
    async def stats_loop(self) -> None:
        interval = self.opts.stats_interval
        engine = self.engine
        last = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            prompt, gen = engine.take_window()
            if prompt or gen or engine.running or engine.waiting:
                span = max(now - last, 1e-9)
                logs.info(
                    "loggers.py:127",
                    f"Engine 000: Avg prompt throughput: {prompt / span:.1f} tokens/s, "
                    f"Avg generation throughput: {gen / span:.1f} tokens/s, "
                    f"Running: {engine.running} reqs, Waiting: {len(engine.waiting)} reqs, "
                    f"GPU KV cache usage: {engine.kv_usage * 100:.1f}%, Prefix cache hit rate: 0.0%",
                )
            last = now


class SimServer(uvicorn.Server):
    """uvicorn's server with the "Uvicorn running on" line for a pre-bound socket and
    signal handling that ends in exit code 0 (uvicorn re-raises the signal after a
    graceful shutdown, which would kill the process with -15)."""

    def __init__(self, config: uvicorn.Config, engine: Engine):
        super().__init__(config)
        self.engine = engine
        self.exit_code = 0

    @contextlib.contextmanager
    def capture_signals(self):
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        self.engine.stopping = True

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=sockets)
        if self.started and sockets:
            self._log_started_message(sockets)


def _bind(host: str | None, port: int) -> socket.socket:
    """Bind the listening socket early, as vLLM does (a busy port fails before loading)."""
    bind_host = host if host else "0.0.0.0"
    infos = socket.getaddrinfo(bind_host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, socktype, proto, _, addr = infos[0]
    sock = socket.socket(family, socktype, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _engine_config_line(opts: SimOptions) -> str:
    m = opts.model
    return (
        f"Initializing a V1 LLM engine (v{VLLM_VERSION}) with config: model={m!r}, speculative_config=None, "
        f"tokenizer={m!r}, skip_tokenizer_init=False, tokenizer_mode=auto, revision=None, "
        f"tokenizer_revision=None, trust_remote_code={opts.trust_remote_code}, dtype=torch.bfloat16, "
        f"max_seq_len={opts.max_model_len}, download_dir=None, load_format=auto, "
        f"tensor_parallel_size={opts.tensor_parallel_size}, pipeline_parallel_size=1, data_parallel_size=1, "
        f"disable_custom_all_reduce=False, quantization=None, enforce_eager=False, kv_cache_dtype=auto, "
        f"device_config=cuda, seed=0, served_model_name={opts.served_model_name}, "
        f"enable_prefix_caching=True, chunked_prefill_enabled=True, pooler_config=None"
    )


def _weights_gib(model: str) -> float:
    """bf16 weight size guessed from the model name ("...-7b-..." -> 7e9 params x 2 bytes)."""
    import re

    match = re.search(r"(\d+(?:\.\d+)?)[bB](?![a-zA-Z])", model.rsplit("/", 1)[-1])
    params = float(match.group(1)) if match else 0.125
    return params * 2e9 / 2**30


class _Stop:
    """Signal handling before uvicorn takes over: SIGTERM/SIGINT end startup, exit 0."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.event = asyncio.Event()
        self.previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, sig, frame) -> None:
        self.loop.call_soon_threadsafe(self.event.set)

    async def sleep(self, seconds: float) -> bool:
        """Sleep; True if a stop signal came first."""
        if self.event.is_set():
            return True
        if seconds <= 0:
            return False
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.event.wait(), seconds)
        return self.event.is_set()


def _stopped_during_startup() -> int:
    logs.info("launcher.py:101", "Shutting down FastAPI HTTP server.")
    return 0


async def serve(opts: SimOptions) -> int:
    """Run the simulator until a signal (0), a startup failure (1) or an engine crash (1)."""
    loop = asyncio.get_running_loop()
    stop = _Stop(loop)
    stop.install()

    logs.info("api_server.py:1839", f"vLLM API server version {VLLM_VERSION}")
    logs.info("utils.py:233", f"non-default args: {opts.non_default!r}")
    for item in opts.ignored:
        if opts.gpu and planned.uses(item):
            continue  # read by the memory plan (--gpu)
        logs.warning("sim.py:1", f"ignoring unsupported argument: {item} (sweepdeck sim)")

    config = _uvicorn_config(opts)
    try:
        sock = _bind(opts.host, opts.port)
    except OSError as exc:
        _report_bind_error(opts, exc)
        return failures.EXIT_STARTUP_FAILURE

    try:
        # Each stage returns an exit code when startup ends there (a failure, or a stop signal).
        plan, code = _resolve_config(opts)
        if code is not None:
            return code
        if await stop.sleep(0):
            return _stopped_during_startup()
        code = await _start_engine_core(opts, plan, stop)
        if code is not None:
            return code
        _log_api_server(opts, sock.getsockname()[1])
        if stop.event.is_set():
            return _stopped_during_startup()
        return await _run_server(opts, config, sock, stop, loop)
    finally:
        with contextlib.suppress(OSError):
            sock.close()
        sys.stdout.flush()


def _uvicorn_config(opts: SimOptions) -> uvicorn.Config:
    log_config = copy.deepcopy(LOGGING_CONFIG)
    return uvicorn.Config(
        app=None,  # type: ignore[arg-type]  # set in _run_server, once the engine exists
        host=opts.host or "0.0.0.0",
        port=opts.port,
        log_config=log_config,
        access_log=opts.access_log,
        lifespan="on",
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=1,
        timeout_keep_alive=5,
        loop="none",
        http=stamping_protocol(),
    )


def _report_bind_error(opts: SimOptions, exc: OSError) -> None:
    """The line uvicorn prints when it cannot bind (vLLM's own text for a port in use)."""
    import logging

    logging.getLogger("uvicorn.error").error(
        failures.PORT_IN_USE_TEMPLATE.format(host=opts.host or "0.0.0.0", port=opts.port)
        if exc.errno == 98
        else f"[Errno {exc.errno}] error while attempting to bind on address "
        f"({(opts.host or '0.0.0.0')!r}, {opts.port}): {(exc.strerror or str(exc)).lower()}"
    )


def _resolve_config(opts: SimOptions) -> tuple[Plan | None, int | None]:
    """vLLM's config resolution: the memory plan (with --gpu), or the exit code of a failure found here."""
    if opts.fail == "model-not-found":
        logs.stderr_lines(failures.model_not_found_lines(opts.model))
        return None, failures.EXIT_STARTUP_FAILURE
    if opts.fail == "trust-remote-code" and not opts.trust_remote_code:
        logs.stderr_lines(failures.trust_remote_code_lines(opts.model))
        return None, failures.EXIT_STARTUP_FAILURE
    plan = None
    if opts.gpu:  # startup sized like vLLM v0.19 on this GPU (backends/sim/planned.py)
        try:
            plan = planned.plan_for_options(opts)
        except SweepdeckError as exc:
            logs.stderr_lines([f"sweepdeck sim: {exc.message}", f"  {exc.hint}"])
            return None, failures.EXIT_STARTUP_FAILURE
        if planned.fails_early(plan):
            return None, planned.print_failure(plan)
        opts.kv_cache_tokens = plan.kv_cache_tokens or 1
    logs.info("model.py:547", "Resolved architecture: LlamaForCausalLM")
    logs.info("model.py:1510", f"Using max model len {opts.max_model_len}")
    logs.info("scheduler.py:205",
              f"Chunked prefill is enabled with max_num_batched_tokens={opts.max_num_batched_tokens}.")
    return plan, None


async def _start_engine_core(opts: SimOptions, plan: Plan | None, stop: _Stop) -> int | None:
    """Engine core: load, profile, KV cache. None when it started, else the exit code."""
    core = logs.CORE
    logs.info("core.py:644", "Waiting for init message from front-end.", core)
    logs.info("core.py:77", _engine_config_line(opts), core)
    for rank in range(opts.tensor_parallel_size):
        logs.info(
            "parallel_state.py:1208",
            f"rank {rank} in world size {opts.tensor_parallel_size} is assigned as DP rank 0, PP rank 0, "
            f"TP rank {rank}, EP rank {rank}",
            core,
        )
    logs.info("gpu_model_runner.py:2602", f"Starting to load model {opts.model}...", core)
    t0 = time.monotonic()
    if await stop.sleep(opts.startup_delay * 0.7):
        return _stopped_during_startup()
    loaded = time.monotonic() - t0
    weights = _weights_gib(opts.model) / opts.tensor_parallel_size
    logs.info("default_loader.py:267", f"Loading weights took {loaded:.2f} seconds", core)
    if plan is None:
        logs.info("gpu_model_runner.py:2653",
                  f"Loading model weights took {weights:.4f} GiB and {loaded + 0.01:.6f} seconds", core)
    else:
        logs.info(*planned.weights_line(plan, loaded + 0.01), core)
    if await stop.sleep(opts.startup_delay * 0.3):
        return _stopped_during_startup()
    if opts.oom_fails():
        logs.error("core.py:708", "EngineCore failed to start.", core)
        lines = failures.oom_lines(opts.oom_load / oom_budget_for(opts.model, opts.oom_budget))
        logs.stderr_lines(["Process EngineCore_DP0:", *lines])
        logs.stderr_lines(failures.ENGINE_INIT_FAILED_TB)
        return failures.EXIT_STARTUP_FAILURE
    if plan is not None and not plan.fits:
        return planned.print_failure(plan)
    _log_kv_cache(opts, plan)
    logs.info("core.py:210", "init engine (profile, create kv cache, warmup model) took "
                             f"{time.monotonic() - t0:.2f} seconds", core)
    return None


def _log_kv_cache(opts: SimOptions, plan: Plan | None) -> None:
    core = logs.CORE
    if plan is not None:
        for where, line in planned.kv_lines(plan):
            logs.info(where, line, core)
        return
    kv = opts.kv_tokens
    logs.info("gpu_worker.py:298",
              f"Available KV cache memory: {kv * 0.000125 / opts.tensor_parallel_size:.2f} GiB", core)
    logs.info("kv_cache_utils.py:1087", f"GPU KV cache size: {kv:,} tokens", core)
    logs.info("executor_base.py:112",
              f"# GPU blocks: {kv // 16}, # CPU blocks: {2048 * opts.tensor_parallel_size}", core)
    logs.info(
        "kv_cache_utils.py:1091",
        f"Maximum concurrency for {opts.max_model_len:,} tokens per request: {kv / opts.max_model_len:.2f}x",
        core,
    )


def _log_api_server(opts: SimOptions, port: int) -> None:
    logs.info("loggers.py:147",
              f"Engine 000: vllm cache_config_info with initialization after num_gpu_blocks is: {opts.kv_tokens // 16}")
    logs.info("api_server.py:1634", "Supported_tasks: ['generate']")
    shown = opts.host or "0.0.0.0"
    logs.info("api_server.py:1912", f"Starting vLLM API server on http://{shown}:{port}")
    logs.info("launcher.py:34", "Available routes are:")
    for route, methods in (
        ("/health", "GET"),
        ("/metrics", "GET"),
        ("/version", "GET"),
        ("/v1/models", "GET"),
        ("/v1/chat/completions", "POST"),
        ("/v1/completions", "POST"),
    ):
        logs.info("launcher.py:42", f"Route: {route}, Methods: {methods}")


async def _run_server(opts: SimOptions, config: uvicorn.Config, sock: socket.socket, stop: _Stop,
                      loop: asyncio.AbstractEventLoop) -> int:
    """Build the engine and the app, then serve until a signal or an engine crash; the exit code."""
    server: SimServer | None = None

    def on_dead() -> None:
        logs.error("core.py:710", "\n".join(failures.engine_crash_lines()), logs.CORE)
        logs.error("async_llm.py:480", "AsyncLLM output_handler failed.")
        logs.stderr_lines(failures.ENGINE_DEAD_TB)
        logs.vlog("CRITICAL", "launcher.py:116", failures.ENGINE_TERMINATING)
        if server is not None:
            server.exit_code = failures.EXIT_ENGINE_DEAD
            server.should_exit = True

    engine = Engine(opts, on_dead=on_dead)
    app = SimApp(opts, engine)
    if opts.fail == "crash-after" and opts.crash_after == 0:
        app.on_startup = lambda: loop.call_soon(engine.die)
    config.app = app
    server = SimServer(config, engine)
    # a stop signal that came in during startup still counts
    if stop.event.is_set():
        return _stopped_during_startup()
    await server.serve(sockets=[sock])
    return server.exit_code
