"""Read what a vLLM (v0.19) startup log says about memory.

The same lines the simulator prints (:mod:`backends.sim`) and the planner predicts:
``Model loading took X GiB memory``, ``Memory profiling takes ... Total non KV cache
memory ...; torch peak memory increase ...; non-torch forward increase memory ...``,
``Available KV cache memory: X GiB``, ``GPU KV cache size: N tokens``,
``Maximum concurrency for L tokens per request: Cx`` and the engine config line.
Used by the accuracy tests and the benchmark on real logs, and by the simulator's tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_CONFIG = re.compile(
    r"Initializing a V1 LLM engine \(v(?P<version>[^)]+)\) with config: model='(?P<model>[^']+)'.*?"
    r"dtype=torch\.(?P<dtype>\w+), max_seq_len=(?P<max_len>\d+).*?tensor_parallel_size=(?P<tp>\d+), "
    r"pipeline_parallel_size=(?P<pp>\d+), data_parallel_size=(?P<dp>\d+).*?quantization=(?P<quant>[\w-]+).*?"
    r"kv_cache_dtype=(?P<kv>\w+)"
)
_PATTERNS = {
    "weights_gib": re.compile(r"Model loading took ([\d.]+) GiB memory"),
    "kv_cache_gib": re.compile(r"Available KV cache memory: (-?[\d.]+) GiB"),
    "kv_cache_tokens": re.compile(r"GPU KV cache size: ([\d,]+) tokens"),
    "cuda_graph_gib": re.compile(r"Graph capturing finished in [\d.]+ secs?, took ([\d.]+) GiB"),
    "requested_gib": re.compile(r"worker requested memory: ([\d.]+)GiB"),
}
_PROFILE = re.compile(
    r"Total non KV cache memory: ([\d.]+)GiB; torch peak memory increase: ([\d.]+)GiB; "
    r"non-torch forward increase memory: ([\d.]+)GiB; weights memory: ([\d.]+)GiB"
)
_SNAPSHOT = re.compile(r"worker init memory snapshot: .*?free_memory=([\d.]+)GiB, total_memory=([\d.]+)GiB")
_CONCURRENCY = re.compile(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x")
_UTIL = re.compile(r"'gpu_memory_utilization': ([\d.]+)")
# vLLM's "non-default args" line names the whole request (the engine config line shows one DP rank)
_ARGS = re.compile(r"non-default args: \{(.*)\}")
_PARALLEL = re.compile(r"'(?P<name>data|tensor|pipeline)_parallel_size': (?P<value>\d+)")
_FAILURE = re.compile(
    r"(ValueError: .*|AssertionError: .*|RuntimeError: CUDA out of memory occurred.*|torch\.OutOfMemoryError: .*"
    r"|Value error, .*)"
)


@dataclass(slots=True)
class StartupRecord:
    """What one startup log reports (None where the log does not say)."""

    path: str = ""
    model: str = ""
    version: str = ""
    tp: int = 1
    pp: int = 1
    dp: int = 1
    max_model_len: int = 0
    dtype: str = ""
    quantization: str | None = None
    kv_cache_dtype: str = "auto"
    gpu_memory_utilization: float = 0.9
    total_gib: float | None = None
    free_gib: float | None = None
    requested_gib: float | None = None
    weights_gib: float | None = None
    activation_gib: float | None = None
    non_torch_gib: float | None = None
    non_kv_gib: float | None = None
    kv_cache_gib: float | None = None
    kv_cache_tokens: int | None = None
    max_concurrency: float | None = None
    cuda_graph_gib: float | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def started(self) -> bool:
        return self.kv_cache_tokens is not None and not self.failures


def parse_startup(text: str, path: str = "") -> StartupRecord:
    """The first value of each line (rank 0's), and every distinct failure line."""
    rec = StartupRecord(path=path)
    _engine_config(rec, text)
    for name, pattern in _PATTERNS.items():
        found = pattern.search(text)
        if found:
            value = found.group(1).replace(",", "")
            setattr(rec, name, int(value) if name == "kv_cache_tokens" else float(value))
    prof = _PROFILE.search(text)
    if prof:
        rec.non_kv_gib, rec.activation_gib, rec.non_torch_gib = (float(prof.group(i)) for i in (1, 2, 3))
    snap = _SNAPSHOT.search(text)
    if snap:
        rec.free_gib, rec.total_gib = float(snap.group(1)), float(snap.group(2))
    conc = _CONCURRENCY.search(text)
    if conc:
        rec.max_concurrency = float(conc.group(2))
    seen: list[str] = []
    for line in text.splitlines():
        found = _FAILURE.search(line)
        if found and found.group(1) not in seen:
            seen.append(found.group(1))
    rec.failures = seen
    return rec


def _engine_config(rec: StartupRecord, text: str) -> None:
    """Model and engine settings from the config line and the non-default args."""
    match = _CONFIG.search(text)
    if match:
        rec.model, rec.version = match["model"], match["version"]
        rec.tp, rec.pp, rec.dp = int(match["tp"]), int(match["pp"]), int(match["dp"])
        rec.max_model_len, rec.dtype = int(match["max_len"]), match["dtype"]
        rec.quantization = None if match["quant"] == "None" else match["quant"]
        rec.kv_cache_dtype = match["kv"]
    args = _ARGS.search(text)
    for found in _PARALLEL.finditer(args.group(1) if args else ""):
        setattr(rec, {"data": "dp", "tensor": "tp", "pipeline": "pp"}[found["name"]], int(found["value"]))
    util = _UTIL.search(text)
    if util:
        rec.gpu_memory_utilization = float(util.group(1))


def read_startup(path: str | Path) -> StartupRecord:
    p = Path(path)
    return parse_startup(p.read_text(encoding="utf-8", errors="replace"), str(p))
