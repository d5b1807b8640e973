"""What to send and when: token lengths, prompt text, arrival times, load mode.

Everything here is pure and seeded, so the same profile always yields the same
requests at the same offsets (tests use these functions directly; no clock).

Prompt text scheme (aligned with the simulator's estimate in
:func:`backends.sim.engine.count_prompt_tokens`, one token per whitespace
separated word): a prompt of ``N`` tokens is ``N`` words. ``prefix_tokens``
words of shared prefix (``"shared"``) come first; then eight words taken from a
small vocabulary of common single-token English words that spell the request
index in base 64 (so two requests never share more than the intended prefix,
which would let a prefix cache flatter the server); then ``"hello"`` repeated.
With a real tokenizer each of those words is one token too (plus the BOS
token the server adds). The simulator also accepts an exact count
(``sim_prompt_tokens``); :class:`~backends.loadgen.runner.WorkloadRunner` sends
it only when asked (``prompt_token_hint=True``) because a real vLLM logs a
warning for every request carrying an unknown field.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from config.errors import SweepdeckError

THROUGHPUT_DEFAULT_CONCURRENCY = 64
"""In-flight requests of rate type ``throughput`` when the profile sets no max_concurrency."""

PREFIX_WORD = "shared"
FILL_WORD = "hello"
HEAD_WORDS = 8
_WORDS = (
    "time year people way day man thing woman life child world school state family "
    "student group country problem hand part place case week company system program "
    "question work government number night point home water room mother area money "
    "story fact month lot right study book eye job word business issue side kind head "
    "house service friend father power hour game line end member law car city"
)
_VOCAB = _WORDS.split()[:64]
assert len(_VOCAB) == 64 and len(set(_VOCAB)) == 64

# Precomputed fill text: a prompt is built by slicing, not by joining N words.
_FILL_UNIT = FILL_WORD + " "
_fill_cache = _FILL_UNIT * 4096
_prefix_cache = (PREFIX_WORD + " ") * 256


def draw_length(rng: random.Random, mean: int, stdev: int, lo: int, hi: int | None) -> int:
    """One length from N(mean, stdev) rounded and clamped to [lo, hi] (lo at least 1)."""
    value = round(rng.gauss(mean, stdev)) if stdev > 0 else int(mean)
    lo = max(lo, 1)
    if value < lo:
        return lo
    if hi is not None and value > hi:
        return max(hi, lo)
    return value


def lengths(profile) -> Iterator[tuple[int, int]]:
    """Endless ``(prompt_tokens, output_tokens)`` pairs of a profile, seeded by ``random_seed``.

    ``prompt_tokens`` excludes ``prefix_tokens`` (the shared prefix is added on top).
    """
    rng = random.Random(profile.random_seed)
    p = (profile.prompt_tokens, profile.prompt_tokens_stdev or 0, profile.prompt_tokens_min or 1,
         profile.prompt_tokens_max)
    o = (profile.output_tokens, profile.output_tokens_stdev or 0, profile.output_tokens_min or 1,
         profile.output_tokens_max)
    while True:
        yield draw_length(rng, *p), draw_length(rng, *o)


def make_prompt(index: int, tokens: int, prefix_tokens: int = 0) -> str:
    """Prompt text of ``prefix_tokens + tokens`` words (see the module docstring)."""
    global _fill_cache, _prefix_cache
    head_n = min(HEAD_WORDS, tokens)
    head = []
    x = index
    for _ in range(head_n):
        head.append(_VOCAB[x & 63])
        x >>= 6
    fill = tokens - head_n
    if fill * len(_FILL_UNIT) > len(_fill_cache):
        _fill_cache = _FILL_UNIT * (fill * 2)
    if prefix_tokens * (len(PREFIX_WORD) + 1) > len(_prefix_cache):
        _prefix_cache = (PREFIX_WORD + " ") * (prefix_tokens * 2)
    text = _prefix_cache[: prefix_tokens * (len(PREFIX_WORD) + 1)]
    if head:
        text += " ".join(head) + " "
    text += _fill_cache[: fill * len(_FILL_UNIT)]
    return text.rstrip(" ")


@dataclass(frozen=True, slots=True)
class Mode:
    """How requests are issued.

    Args:
        rate_type: The profile's rate type.
        concurrency: Closed loop: that many workers each send one request after
            another. Open loop: cap of in-flight requests (None = no cap).
        rate: Open loop: requests per second (None for closed loop).
        poisson: Open loop: exponential inter-arrival times instead of even spacing.
    """

    rate_type: str
    concurrency: int | None
    rate: float | None = None
    poisson: bool = False

    @property
    def open_loop(self) -> bool:
        return self.rate is not None

    def describe(self) -> str:
        if self.open_loop:
            kind = "poisson" if self.poisson else "constant"
            cap = f", at most {self.concurrency} in flight" if self.concurrency else ""
            return f"{kind} {self.rate:g} req/s{cap}"
        return f"{self.concurrency} concurrent"


def resolve_mode(profile) -> Mode:
    """Map a profile's rate type to a :class:`Mode`.

    * ``synchronous`` — one request at a time.
    * ``concurrent`` — ``max_concurrency`` (or ``int(rate)``) requests in flight.
    * ``constant`` — ``rate`` requests/s, evenly spaced.
    * ``poisson`` — ``rate`` requests/s on average, exponential gaps (seeded).
    * ``sweep`` — the presets' value; a sweep of rates is the orchestrator's job,
      so one run of it is a constant rate of ``rate``.
    * ``throughput`` — as many as possible: ``max_concurrency`` in flight, or
      :data:`THROUGHPUT_DEFAULT_CONCURRENCY` when the profile sets none.

    ``max_concurrency`` also caps the in-flight requests of the open-loop types.

    Raises:
        SweepdeckError: unknown rate type, or a rate/concurrency that is not positive.
    """
    rt = profile.rate_type
    cap = profile.max_concurrency or None
    if rt == "synchronous":
        return Mode(rt, 1)
    if rt == "concurrent":
        n = cap or int(profile.rate or 0)
        if n < 1:
            raise SweepdeckError(
                f"workload {profile.app}: rate type concurrent needs max_concurrency or a rate of at least 1.",
                "Set max_concurrency (requests in flight), e.g. max_concurrency=8.",
            )
        return Mode(rt, n)
    if rt == "throughput":
        return Mode(rt, cap or THROUGHPUT_DEFAULT_CONCURRENCY)
    if rt in ("constant", "poisson", "sweep"):
        rate = float(profile.rate or 0)
        if not rate > 0 or math.isinf(rate):
            raise SweepdeckError(
                f"workload {profile.app}: rate type {rt} needs a positive rate (requests/s), got {profile.rate!r}.",
                "Set rate, e.g. rate=10.",
            )
        return Mode(rt, cap, rate=rate, poisson=rt == "poisson")
    raise SweepdeckError(
        f"workload {profile.app}: unknown rate type {rt!r}.",
        "Use one of synchronous, concurrent, constant, poisson, sweep, throughput.",
    )


def arrival_offsets(mode: Mode, seed: int) -> Iterator[float]:
    """Endless send times (seconds after the start) of an open-loop mode.

    Constant: ``0, 1/rate, 2/rate, ...``. Poisson: cumulative sums of
    exponential gaps with mean ``1/rate`` from ``random.Random(seed)`` (a
    stream separate from the lengths', so lengths do not depend on the rate
    type), the first request at 0.
    """
    rate = mode.rate
    if not mode.open_loop or rate is None:  # open_loop is "rate is not None"; mypy sees the rate
        raise ValueError("closed-loop modes have no arrival schedule")
    if not mode.poisson:
        i = 0
        while True:
            yield i / rate
            i += 1
    rng = random.Random(seed ^ 0x5EED_A77)
    t = 0.0
    while True:
        yield t
        t += rng.expovariate(rate)
