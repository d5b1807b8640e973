"""Command line of the simulator: vLLM's ``serve`` arguments plus simulator knobs.

The simulator must accept any command line that ``vllm serve`` accepts, so a job
script can replace ``vllm`` by ``sweepdeck sim`` and nothing else. It therefore:

* accepts an optional leading ``serve`` word;
* understands the vLLM options it simulates (model, host, port, served model
  name, max_model_len, max_num_seqs, max_num_batched_tokens,
  tensor_parallel_size, trust_remote_code);
* accepts every other option in either ``--flag=value`` or ``--flag value`` form
  and ignores it, logging one ``WARNING ... ignoring unsupported argument`` line
  per option. ``--flag`` followed by a word that does not start with ``-`` is
  read as ``--flag value`` unless the flag is a known vLLM boolean (or starts
  with ``--no-``/``--enable-``/``--disable-``), so ``--dtype bfloat16`` and
  ``--enable-prefix-caching`` are both ignored as wholes.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass, field
from typing import NoReturn

from backends.sim.failures import FAIL_MODES

DEFAULT_OOM_BUDGET = 524_288
DEFAULT_MAX_MODEL_LEN = 4096
DEFAULT_MAX_NUM_SEQS = 256
DEFAULT_MAX_NUM_BATCHED_TOKENS = 2048

# vLLM options that take no value (so the next word is the model, not their value).
VLLM_BOOLEAN_FLAGS = frozenset(
    {
        "--trust-remote-code",
        "--enforce-eager",
        "--enable-prefix-caching",
        "--enable-chunked-prefill",
        "--disable-log-stats",
        "--disable-log-requests",
        "--enable-log-requests",
        "--disable-uvicorn-access-log",
        "--disable-frontend-multiprocessing",
        "--disable-custom-all-reduce",
        "--disable-sliding-window",
        "--skip-tokenizer-init",
        "--enable-auto-tool-choice",
        "--enable-lora",
        "--enable-expert-parallel",
        "--enable-sleep-mode",
        "--enable-server-load-tracking",
        "--enable-prompt-tokens-details",
        "--enable-force-include-usage",
        "--enable-request-id-headers",
        "--enable-reasoning",
        "--return-tokens-as-token-ids",
        "--allow-credentials",
        "--headless",
        "--async-scheduling",
        "--use-v2-block-manager",
        "--ray-workers-use-nsight",
        "--worker-use-ray",
        "--disable-async-output-proc",
        "--fully-sharded-loras",
        "--multi-step-stream-outputs",
        "--no-enable-prefix-caching",
        "--no-enable-chunked-prefill",
    }
)

DESCRIPTION = """\
Simulated vLLM OpenAI-compatible server (stands in for `vllm serve`).

Serves /v1/models, /v1/completions, /v1/chat/completions (with SSE streaming),
/health and /metrics (Prometheus text, vLLM metric names). Prints vLLM's startup
lines; any other vLLM option is accepted and ignored with a warning.

Timing model (all durations divided by --speed; --speed 0 = no simulated latency):
  TTFT = queueing (while max-num-seqs requests are running)
         + ttft-ms + prefill-us-per-token * prompt_tokens / 1000
  ITL  = itl-ms + itl-ms-per-seq * (running requests - 1)
Prompt length: the "sim_prompt_tokens" request field if given, the length of a
token-id list, else one token per whitespace-separated word of the text.

Reasoning (--reasoning-tokens N): chat streams the first N output tokens as
delta.reasoning_content (or delta.reasoning), then content, as vLLM does with
a reasoning parser; completions stream all tokens as text.

Failures (--fail):
  oom               CUDA out of memory at startup, exit 1, but only while
                    max_model_len * max_num_seqs / tensor_parallel_size
                    exceeds --oom-budget. Default budget: 3/4 of that product
                    at the model's catalog recommendation (so the catalog
                    settings fail, and halving max_model_len or max_num_seqs,
                    or doubling TP, succeeds); 524288 for other models.
  model-not-found   Hugging Face "not a valid model identifier", exit 1
  trust-remote-code transformers' trust_remote_code error, exit 1 -- does not
                    happen when --trust-remote-code is given (that is the fix)
  crash-after N     serve N requests, then the engine dies
                    (EngineDeadError), exit 1
"""


@dataclass
class SimOptions:
    """Everything the simulator was asked to do."""

    model: str = "facebook/opt-125m"
    host: str | None = None
    port: int = 8000
    served_model_names: list[str] = field(default_factory=list)
    max_model_len: int = DEFAULT_MAX_MODEL_LEN
    max_model_len_given: bool = False
    max_num_seqs: int = DEFAULT_MAX_NUM_SEQS
    max_num_batched_tokens: int = DEFAULT_MAX_NUM_BATCHED_TOKENS
    tensor_parallel_size: int = 1
    trust_remote_code: bool = False
    fail: str | None = None
    crash_after: int = 0
    oom_budget: int | None = None  # None: derived from the catalog (see oom_budget_for)
    startup_delay: float = 0.3
    shutdown_delay: float = 0.0
    speed: float = 1.0
    ttft_ms: float = 20.0
    prefill_us_per_token: float = 50.0
    itl_ms: float = 10.0
    itl_ms_per_seq: float = 0.05
    kv_cache_tokens: int = 0
    gpu: str | None = None  # --gpu: startup memory planned like vLLM v0.19 on this GPU (backends/sim/planned.py)
    eos_after: int = 0
    stats_interval: float = 10.0
    access_log: bool = False
    reasoning_tokens: int = 0
    reasoning_field: str = "reasoning_content"
    ignored: list[str] = field(default_factory=list)
    non_default: dict = field(default_factory=dict)

    @property
    def served_model_name(self) -> str:
        """The name clients must use (vLLM: first --served-model-name, else the model)."""
        return self.served_model_names[0] if self.served_model_names else self.model

    @property
    def time_scale(self) -> float:
        """Factor applied to every simulated duration (0 = none)."""
        if self.speed <= 0 or math.isinf(self.speed):
            return 0.0
        return 1.0 / self.speed

    @property
    def kv_tokens(self) -> int:
        """KV-cache capacity in tokens (for the usage gauge and startup lines)."""
        if self.kv_cache_tokens > 0:
            return self.kv_cache_tokens
        return max(self.max_model_len, 131_072 * self.tensor_parallel_size)

    @property
    def oom_load(self) -> float:
        """The number the OOM rule compares with --oom-budget."""
        return self.max_model_len * self.max_num_seqs / self.tensor_parallel_size

    def oom_fails(self) -> bool:
        """Whether ``--fail oom`` fails with these settings (the documented rule)."""
        return self.fail == "oom" and self.oom_load > oom_budget_for(self.model, self.oom_budget)


def catalog_model_id(model: str) -> str:
    """The model id in a Hugging Face cache path (``.../models--org--name/snapshots/...``)."""
    match = re.search(r"models--([^/]+?)--([^/]+)", model)
    return f"{match.group(1)}/{match.group(2)}" if match else model


def oom_budget_for(model: str, explicit: int | None) -> int:
    """The budget of the ``--fail oom`` rule.

    ``explicit`` (``--oom-budget``) wins. Otherwise 3/4 of
    ``max_model_len * max_num_seqs / tp`` at the model's catalog recommendation
    (first recommended TP), so the recommended settings fail and halving
    max_model_len or max_num_seqs, or doubling TP, passes. A model the catalog
    does not know (or does not give settings for) gets DEFAULT_OOM_BUDGET.
    """
    if explicit:
        return explicit
    try:
        from config.catalog import DATA_DIR, MODELS_FILE, ModelCatalog

        info = ModelCatalog.load(DATA_DIR / MODELS_FILE).resolve(catalog_model_id(model))
    except Exception:  # unknown/ambiguous model or unreadable catalog: use the default
        return DEFAULT_OOM_BUDGET
    if not info.max_model_len or not info.max_num_seqs:
        return DEFAULT_OOM_BUDGET
    return int(0.75 * info.max_model_len * info.max_num_seqs / info.tp[0])


class SimUsageError(Exception):
    """Bad simulator command line (exit 2, like argparse)."""


def _int_with_suffix(text: str) -> int:
    """vLLM accepts ``4096``, ``4k``, ``1K`` (1024), ``1m`` etc. for lengths."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgG]?)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"invalid integer value: {text!r}")
    number, suffix = match.groups()
    scale = {"": 1, "k": 1000, "K": 1024, "m": 10**6, "M": 1024**2, "g": 10**9, "G": 1024**3}[suffix]
    value = float(number) * scale
    if value != int(value):
        raise argparse.ArgumentTypeError(f"invalid integer value: {text!r}")
    return int(value)


def _positive(text: str) -> int:
    value = _int_with_suffix(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {value}")
    return value


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if value < 0 or math.isnan(value):
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The parser for the options the simulator understands."""
    p = argparse.ArgumentParser(
        prog="sweepdeck sim",
        usage="sweepdeck sim [serve] MODEL [options] [any other vllm serve option]",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model_tag", nargs="?", metavar="MODEL", help="model name or path (as for `vllm serve`)")
    v = p.add_argument_group("vLLM options that are simulated")
    v.add_argument("--model", dest="model_flag", metavar="MODEL", help="same as the positional MODEL")
    v.add_argument("--host", default=None,
                   help="address to bind (default 127.0.0.1, this machine only; "
                        "vLLM's own default is all interfaces: 0.0.0.0)")
    v.add_argument("--port", type=_port, default=8000, help="port (default 8000; 0 = pick a free one)")
    v.add_argument("--served-model-name", nargs="+", default=[], metavar="NAME", help="name(s) clients use")
    v.add_argument("--max-model-len", type=_positive, default=None, metavar="N",
                   help=f"context length (default {DEFAULT_MAX_MODEL_LEN})")
    v.add_argument("--max-num-seqs", type=_positive, default=DEFAULT_MAX_NUM_SEQS, metavar="N",
                   help="max running requests; more wait")
    v.add_argument("--max-num-batched-tokens", type=_positive, default=DEFAULT_MAX_NUM_BATCHED_TOKENS, metavar="N")
    v.add_argument("--tensor-parallel-size", "-tp", type=_positive, default=1, metavar="N")
    v.add_argument("--trust-remote-code", action="store_true",
                   help="allow custom model code (fixes --fail trust-remote-code)")
    v.add_argument("--disable-log-stats", action="store_true", help="no periodic throughput lines")
    v.add_argument("--disable-uvicorn-access-log", action="store_true", help="(default in the simulator)")
    s = p.add_argument_group("simulator options")
    s.add_argument("--fail", metavar="MODE",
                   help="oom | model-not-found | trust-remote-code | crash-after N (see above)")
    s.add_argument("--oom-budget", type=_positive, default=None, metavar="TOKENS",
                   help="budget of the oom rule (default: see above)")
    s.add_argument("--startup-delay", type=_nonneg_float, default=0.3, metavar="SECONDS",
                   help="simulated model load time (default 0.3)")
    s.add_argument("--shutdown-delay", type=_nonneg_float, default=0.0, metavar="SECONDS",
                   help="time a graceful shutdown takes (default 0; for tests of a run that is finishing)")
    s.add_argument("--speed", type=_nonneg_float, default=1.0, metavar="FACTOR",
                   help="divide every simulated duration by FACTOR (default 1; 0 = no latency at all)")
    s.add_argument("--ttft-ms", type=_nonneg_float, default=20.0, metavar="MS",
                   help="base time to first token (default 20)")
    s.add_argument("--prefill-us-per-token", type=_nonneg_float, default=50.0, metavar="US",
                   help="prefill cost per prompt token in microseconds (default 50)")
    s.add_argument("--itl-ms", type=_nonneg_float, default=10.0, metavar="MS",
                   help="inter-token latency with one running request (default 10)")
    s.add_argument("--itl-ms-per-seq", type=_nonneg_float, default=0.05, metavar="MS",
                   help="extra ITL per other running request (default 0.05)")
    s.add_argument("--kv-cache-tokens", type=_positive, default=0, metavar="N",
                   help="KV-cache capacity in tokens (default 131072 x TP)")
    s.add_argument("--gpu", metavar="NAME", help="size memory like vLLM v0.19 on this GPU (H100-80GB, A40...): "
                   "its startup lines, KV capacity and failures come from the memory planner")
    s.add_argument("--eos-after", type=int, default=0, metavar="N",
                   help="without ignore_eos, stop after N tokens (default 0 = always generate max_tokens)")
    s.add_argument("--stats-interval", type=_nonneg_float, default=10.0, metavar="SECONDS",
                   help="period of the throughput log line (default 10; 0 = off)")
    s.add_argument("--access-log", action="store_true", help="print uvicorn's access log lines")
    s.add_argument("--reasoning-tokens", type=int, default=0, metavar="N",
                   help="chat: stream the first N output tokens as reasoning (delta.reasoning_content), as vLLM "
                        "does with a reasoning parser (default 0)")
    s.add_argument("--reasoning-field", choices=("reasoning_content", "reasoning"), default="reasoning_content",
                   help="the delta field reasoning goes in: reasoning_content (vLLM <= 0.11) or reasoning (later)")
    return p


def _takes_value(parser: argparse.ArgumentParser) -> dict[str, bool]:
    """Option string -> whether it consumes a value, for every known option."""
    table: dict[str, bool] = {}
    for action in parser._actions:  # argparse has no public accessor
        for opt in action.option_strings:
            table[opt] = action.nargs != 0
    return table


def _is_boolean_vllm_flag(flag: str) -> bool:
    return flag in VLLM_BOOLEAN_FLAGS or flag.startswith(("--no-", "--enable-", "--disable-"))


def split_argv(argv: list[str], known: dict[str, bool]) -> tuple[list[str], list[str]]:
    """Separate known tokens from ignored vLLM options.

    Returns:
        (tokens for the parser, ignored option texts such as ``--dtype bfloat16``).
    """
    kept: list[str] = []
    ignored: list[str] = []
    i = 0
    if argv and argv[0] == "serve":
        i = 1
    while i < len(argv):
        tok = argv[i]
        if tok == "--":
            kept.extend(argv[i:])
            break
        if not tok.startswith("-") or tok == "-" or re.fullmatch(r"-\d+(\.\d+)?", tok):
            kept.append(tok)
            i += 1
            continue
        name = tok.split("=", 1)[0]
        if name in known or tok in ("-h", "--help"):
            kept.append(tok)
            i += 1
            if name == "--fail" and "=" not in tok and i < len(argv):
                kept.append(argv[i])  # the mode, even if odd
                i += 1
                if kept[-1] == "crash-after" and i < len(argv) and argv[i].isdigit():
                    kept[-1] = f"crash-after={argv[i]}"
                    i += 1
            elif name == "--served-model-name":
                while i < len(argv) and not argv[i].startswith("-"):
                    kept.append(argv[i])
                    i += 1
            elif known.get(name) and "=" not in tok and i < len(argv):
                kept.append(argv[i])
                i += 1
            continue
        # Unknown vLLM option: ignore it and its value, if it has one.
        if "=" in tok or _is_boolean_vllm_flag(name):
            ignored.append(tok)
            i += 1
        elif i + 1 < len(argv) and not argv[i + 1].startswith("-") or (
            i + 1 < len(argv) and re.fullmatch(r"-\d+(\.\d+)?", argv[i + 1])
        ):
            ignored.append(f"{tok} {argv[i + 1]}")
            i += 2
        else:
            ignored.append(tok)
            i += 1
    return kept, ignored


def parse_fail(text: str | None) -> tuple[str | None, int]:
    """``oom`` / ``crash-after=3`` / ``crash-after:3`` -> (mode, N)."""
    if text is None or text in ("", "none"):
        return None, 0
    match = re.fullmatch(r"crash-after[=:](\d+)", text)
    if match:
        return "crash-after", int(match.group(1))
    if text == "crash-after":
        raise SimUsageError("--fail crash-after needs a request count, e.g. --fail crash-after 5")
    if text not in FAIL_MODES:
        raise SimUsageError(f"--fail: unknown mode {text!r} (choose from {', '.join(FAIL_MODES)})")
    return text, 0


def parse_args(argv: list[str]) -> SimOptions:
    """Parse a ``vllm serve``-style command line.

    Raises:
        SimUsageError: for a bad value or a missing model (message ready to print).
        SystemExit: for ``--help`` (argparse prints it).
    """
    parser = build_parser()
    kept, ignored = split_argv(list(argv), _takes_value(parser))

    def fail(message: str) -> NoReturn:  # instead of argparse's print-usage-and-sys.exit(2)
        raise SimUsageError(message)

    parser.error = fail  # type: ignore[method-assign]  # argparse has no hook for its errors
    ns = parser.parse_args(kept)
    model = ns.model_flag or ns.model_tag
    if not model:
        raise SimUsageError("the following arguments are required: MODEL")
    mode, count = parse_fail(ns.fail)
    opts = SimOptions(
        model=model,
        host=ns.host or "127.0.0.1",  # loopback unless asked: every server sweepdeck starts does so
        port=ns.port,
        served_model_names=list(ns.served_model_name),
        max_model_len=ns.max_model_len or DEFAULT_MAX_MODEL_LEN,
        max_model_len_given=ns.max_model_len is not None,
        max_num_seqs=ns.max_num_seqs,
        max_num_batched_tokens=ns.max_num_batched_tokens,
        tensor_parallel_size=ns.tensor_parallel_size,
        trust_remote_code=ns.trust_remote_code,
        fail=mode,
        crash_after=count,
        oom_budget=ns.oom_budget,
        startup_delay=ns.startup_delay,
        shutdown_delay=ns.shutdown_delay,
        speed=ns.speed,
        ttft_ms=ns.ttft_ms,
        prefill_us_per_token=ns.prefill_us_per_token,
        itl_ms=ns.itl_ms,
        itl_ms_per_seq=ns.itl_ms_per_seq,
        kv_cache_tokens=ns.kv_cache_tokens,
        gpu=ns.gpu,
        eos_after=max(0, ns.eos_after),
        stats_interval=0.0 if ns.disable_log_stats else ns.stats_interval,
        access_log=ns.access_log and not ns.disable_uvicorn_access_log,
        reasoning_tokens=max(0, ns.reasoning_tokens),
        reasoning_field=ns.reasoning_field,
        ignored=ignored,
    )
    # vLLM logs the arguments that differ from its defaults.
    nd: dict = {"model_tag": model}
    if ns.host is not None:
        nd["host"] = ns.host
    if ns.port != 8000:
        nd["port"] = ns.port
    if opts.served_model_names:
        nd["served_model_name"] = opts.served_model_names
    if ns.trust_remote_code:
        nd["trust_remote_code"] = True
    nd["model"] = model
    if opts.max_model_len_given:
        nd["max_model_len"] = opts.max_model_len
    if ns.tensor_parallel_size != 1:
        nd["tensor_parallel_size"] = ns.tensor_parallel_size
    if ns.max_num_batched_tokens != DEFAULT_MAX_NUM_BATCHED_TOKENS:
        nd["max_num_batched_tokens"] = ns.max_num_batched_tokens
    if ns.max_num_seqs != DEFAULT_MAX_NUM_SEQS:
        nd["max_num_seqs"] = ns.max_num_seqs
    opts.non_default = nd
    return opts
