"""The simulated engine: admission (max_num_seqs), timing model, token stream, metrics.

Timing model (every duration is multiplied by ``SimOptions.time_scale``, which is
``1 / --speed``; ``--speed 0`` makes it 0, i.e. no simulated latency at all):

* **Admission.** At most ``max_num_seqs`` requests run at once. Later requests
  wait in a FIFO queue (they count in ``vllm:num_requests_waiting``) until a
  running request finishes; that wait is part of their TTFT.
* **Time to first token** (after admission)::

      ttft = ttft_ms + prefill_us_per_token * prompt_tokens / 1000      [ms]

  so it grows linearly with the prompt (prefill), on top of any queueing.
* **Inter-token latency**, computed afresh for every token from the batch
  running at that moment::

      itl = itl_ms + itl_ms_per_seq * (running - 1)                    [ms]

  so it grows with the running batch, which ``max_num_seqs`` caps.
* Deadlines are absolute (start + sum of delays), so scheduler jitter does not
  accumulate over a long output.
* **Output length** is ``max_tokens`` (``finish_reason: length``); without
  ``ignore_eos`` and with ``--eos-after N`` the output stops after N tokens
  (``finish_reason: stop``). Completions default to 16 tokens (OpenAI/vLLM);
  chat requests without ``max_tokens`` stop "naturally" after 256 tokens.
* **Prompt length** is estimated as one token per whitespace-separated word
  (see :func:`count_prompt_tokens`; chat: summed over the messages' text, no
  template overhead); a client may pass the exact count as the extra request
  field ``"sim_prompt_tokens": N`` (or send token ids). A request whose
  prompt + max_tokens exceeds ``max_model_len`` gets vLLM's HTTP 400.
* **KV cache usage** is (prompt + generated tokens of running requests) /
  KV-cache capacity (``--kv-cache-tokens``, default 131072 x TP).

Generated text is a fixed word list repeated: one word (with a leading space)
per token, so it costs nothing to produce.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from backends.sim.metrics import Metrics
from backends.sim.options import SimOptions

WORDS = (
    "the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven",
    "wizards", "quietly", "benchmark", "large", "language", "models", "on", "shared", "GPUs",
)
TOKEN_TEXTS = tuple(" " + w for w in WORDS)
BUSY_GAP = 0.1
"""Seconds without a request that end the engine's busy window (shorter pauses, e.g. between
the rounds of a closed-loop benchmark, do not)."""


class EngineDeadError(Exception):
    """The simulated engine has died (``--fail crash-after N``)."""


@dataclass(slots=True)
class GenRequest:
    """What the engine needs to know about one request."""

    prompt_tokens: int
    max_tokens: int
    ignore_eos: bool = False
    # the "model" emits EOS after this many tokens (0 = never); ignored with ignore_eos
    stop_after: int = 0

    def output_tokens(self, eos_after: int) -> int:
        natural = self.stop_after or eos_after
        if natural > 0 and not self.ignore_eos:
            return min(self.max_tokens, natural)
        return self.max_tokens


def count_prompt_tokens(prompt: object) -> int:
    """Estimated token count of a prompt.

    * a string: one token per whitespace-separated word (at least 1 for a
      non-empty string), so a load generator that sends N words gets N tokens;
    * a list of ints: that many token ids (vLLM accepts token-id prompts);
    * a list of strings / of token lists: the first element (batched prompts
      are served as one request by the simulator).
    """
    if isinstance(prompt, str):
        n = len(prompt.split())
        return n if n or not prompt else 1
    if isinstance(prompt, list) and prompt:
        first = prompt[0]
        if isinstance(first, int):
            return len(prompt)
        return count_prompt_tokens(first)
    return 0


def ttft_seconds(opts: SimOptions, prompt_tokens: int) -> float:
    """Time from admission to the first token (no queueing)."""
    ms = opts.ttft_ms + opts.prefill_us_per_token * prompt_tokens / 1000.0
    return ms / 1000.0 * opts.time_scale


def itl_seconds(opts: SimOptions, running: int) -> float:
    """Time between two tokens while ``running`` requests are in the batch."""
    ms = opts.itl_ms + opts.itl_ms_per_seq * max(running - 1, 0)
    return ms / 1000.0 * opts.time_scale


class Engine:
    """Admission control, the per-request token stream and the metrics."""

    def __init__(self, opts: SimOptions, on_dead: Callable[[], None] | None = None):
        self.opts = opts
        self.metrics = Metrics(opts.served_model_name, opts.kv_tokens // 16)
        self.running = 0
        self.waiting: collections.deque[asyncio.Future] = collections.deque()
        self.kv_used = 0
        self.finished = 0
        self.active = 0  # requests inside generate() (waiting or running): the busy window
        self.dead = False
        self.stopping = False  # server shutting down: in-flight requests end early
        self.on_dead = on_dead
        self.scale = opts.time_scale
        # since the last stats line (for the periodic log)
        self.window_prompt = 0
        self.window_gen = 0

    # --- admission ------------------------------------------------------------------
    @property
    def kv_usage(self) -> float:
        return min(self.kv_used / self.opts.kv_tokens, 1.0) if self.opts.kv_tokens else 0.0

    async def _admit(self) -> None:
        if self.dead:
            raise EngineDeadError()
        if self.running < self.opts.max_num_seqs and not self.waiting:
            self.running += 1
            return
        fut = asyncio.get_running_loop().create_future()
        self.waiting.append(fut)
        try:
            await fut  # the finishing request hands its slot over (running unchanged)
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._release()  # we got the slot just as we were cancelled
            else:
                with contextlib.suppress(ValueError):
                    self.waiting.remove(fut)
            raise

    def _release(self) -> None:
        while self.waiting:
            fut = self.waiting.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.running -= 1

    def _entered(self) -> None:
        """A request entered generate(): the start of a busy window when the engine was idle long enough."""
        if not self.active:
            now = time.time()
            if now - self.metrics.idle_since >= BUSY_GAP:  # a pause this short does not end a busy window
                self.metrics.busy_since = now
        self.active += 1

    def _left(self) -> None:
        """A request left generate(): the end of the busy window when it was the last one."""
        self.active -= 1
        if not self.active:
            self.metrics.idle_since = time.time()

    def die(self) -> None:
        """Kill the engine: waiting and running requests fail, new ones are refused."""
        if self.dead:
            return
        self.dead = True
        while self.waiting:
            fut = self.waiting.popleft()
            if not fut.done():
                fut.set_exception(EngineDeadError())
        if self.on_dead is not None:
            self.on_dead()

    # --- generation -------------------------------------------------------------------
    async def generate(self, req: GenRequest) -> AsyncGenerator[str, None]:
        """Yield the text of each output token at its simulated time.

        The caller must close the generator (``aclosing``) if it stops early, so
        the slot and KV-cache share are released.

        Raises:
            EngineDeadError: the engine died before or during the request.
        """
        opts = self.opts
        metrics = self.metrics
        arrival = time.monotonic()
        self._entered()
        try:
            await self._admit()
        except BaseException:
            self._left()
            raise
        loop = asyncio.get_running_loop()
        scale = self.scale
        n_out = req.output_tokens(opts.eos_after)
        kv = req.prompt_tokens
        self.kv_used += kv
        produced = 0
        ok = False
        try:
            admitted = time.monotonic()
            metrics.queue.observe(admitted - arrival)
            if scale:
                deadline = loop.time() + ttft_seconds(opts, req.prompt_tokens)
                await asyncio.sleep(max(deadline - loop.time(), 0))
            if self.dead or self.stopping:
                raise EngineDeadError()
            now = time.monotonic()
            metrics.ttft.observe(now - arrival)
            metrics.prompt_tokens += req.prompt_tokens
            metrics.prompt_hist.observe(req.prompt_tokens)
            self.window_prompt += req.prompt_tokens
            first_at = last = now
            for i in range(n_out):
                if i:
                    if scale:
                        deadline += itl_seconds(opts, self.running)
                        delay = deadline - loop.time()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    if self.dead or self.stopping:
                        raise EngineDeadError()
                    now = time.monotonic()
                    metrics.itl.observe(now - last)
                    last = now
                produced += 1
                self.kv_used += 1
                metrics.generation_tokens += 1
                self.window_gen += 1
                yield TOKEN_TEXTS[i % len(TOKEN_TEXTS)]
            end = time.monotonic()
            metrics.e2e.observe(end - arrival)
            if n_out > 1:
                metrics.tpot.observe((end - first_at) / (n_out - 1))
            metrics.gen_hist.observe(n_out)
            metrics.success["length" if n_out == req.max_tokens else "stop"] += 1
            ok = True
        finally:
            self._left()
            self.kv_used -= kv + produced
            if not self.dead:
                self._release()
            if ok:
                self.finished += 1
                if opts.fail == "crash-after" and self.finished >= opts.crash_after:
                    self.die()
            elif not self.dead:
                metrics.success["abort"] += 1

    def finish_reason(self, req: GenRequest) -> str:
        return "length" if req.output_tokens(self.opts.eos_after) == req.max_tokens else "stop"

    def render_metrics(self) -> str:
        return self.metrics.render(self.running, len(self.waiting), self.kv_usage)

    def take_window(self) -> tuple[int, int]:
        """Prompt and generated tokens since the previous call (for the stats line)."""
        window = (self.window_prompt, self.window_gen)
        self.window_prompt = self.window_gen = 0
        return window
