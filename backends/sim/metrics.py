"""Prometheus text exposition with vLLM's metric names, without prometheus_client.

Names, help texts and histogram buckets follow vLLM V1 (v0.11) so that
dashboards and scrapers written for vLLM work unchanged. Every sample carries
``engine="0"`` and ``model_name="<served model name>"`` labels.

Three ``sweepdeck_sim:`` series are the simulator's own (not vLLM's), for
checking a load generator against the server's view (tests/benchmarks/bench_loadgen.py):

* ``sweepdeck_sim:http_time_to_first_token_seconds`` — from the moment the HTTP
  server read the request's bytes to the moment it wrote the first token's
  chunk. vLLM's TTFT (and ``vllm:time_to_first_token_seconds`` here) starts
  later, when the engine gets the request, so it leaves out the time a request
  waits in a busy HTTP front end; a client cannot see that difference.
* ``sweepdeck_sim:busy_since_timestamp_seconds`` / ``..._idle_since_...`` — epoch
  seconds at which the engine last went from no request to one after a pause of
  at least :data:`backends.sim.engine.BUSY_GAP` (0.1 s), and from one to none: a
  benchmark run between two idle periods is served in exactly that window.
"""

from __future__ import annotations

from bisect import bisect_left

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
               10.0, 20.0, 40.0, 80.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
               120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000)


class Histogram:
    """A cumulative-bucket histogram (counts per bucket, sum, count)."""

    __slots__ = ("buckets", "counts", "sum", "count")

    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # last = +Inf overflow
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (le = less or equal)
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: str) -> list[str]:
        out = []
        cumulative = 0
        for bound, n in zip(self.buckets, self.counts, strict=False):  # counts[-1] is the +Inf bucket, written below
            cumulative += n
            out.append(f'{name}_bucket{{{labels},le="{float(bound)}"}} {float(cumulative)}')
        out.append(f'{name}_bucket{{{labels},le="+Inf"}} {float(self.count)}')
        out.append(f"{name}_count{{{labels}}} {float(self.count)}")
        out.append(f"{name}_sum{{{labels}}} {self.sum}")
        return out


class Metrics:
    """The counters, gauges and histograms the simulated engine updates."""

    def __init__(self, model_name: str, num_gpu_blocks: int = 0):
        self.model_name = model_name
        self.num_gpu_blocks = num_gpu_blocks
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.success: dict[str, int] = {"stop": 0, "length": 0, "abort": 0}
        self.ttft = Histogram(TTFT_BUCKETS)
        self.itl = Histogram(ITL_BUCKETS)
        self.tpot = Histogram(ITL_BUCKETS)
        self.e2e = Histogram(E2E_BUCKETS)
        self.queue = Histogram(E2E_BUCKETS)
        self.prompt_hist = Histogram(TOKEN_BUCKETS)
        self.gen_hist = Histogram(TOKEN_BUCKETS)
        self.http_ttft = Histogram(TTFT_BUCKETS)
        self.busy_since = 0.0
        self.idle_since = 0.0

    def render(self, running: int, waiting: int, kv_usage: float) -> str:
        """The /metrics page (Prometheus text format 0.0.4)."""
        name = self.model_name.replace("\\", "\\\\").replace('"', '\\"')
        labels = f'engine="0",model_name="{name}"'
        out: list[str] = []

        def gauge(metric: str, help_text: str, value: float) -> None:
            out.append(f"# HELP {metric} {help_text}")
            out.append(f"# TYPE {metric} gauge")
            out.append(f"{metric}{{{labels}}} {float(value)}")

        def counter(metric: str, help_text: str, value: float) -> None:
            out.append(f"# HELP {metric} {help_text}")
            out.append(f"# TYPE {metric} counter")
            out.append(f"{metric}{{{labels}}} {float(value)}")

        def histogram(metric: str, help_text: str, hist: Histogram) -> None:
            out.append(f"# HELP {metric} {help_text}")
            out.append(f"# TYPE {metric} histogram")
            out.extend(hist.lines(metric, labels))

        out.append("# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig")
        out.append("# TYPE vllm:cache_config_info gauge")
        out.append(
            f'vllm:cache_config_info{{block_size="16",cache_dtype="auto",enable_prefix_caching="True",'
            f'engine="0",gpu_memory_utilization="0.9",num_gpu_blocks="{self.num_gpu_blocks}"}} 1.0'
        )
        gauge("vllm:num_requests_running", "Number of requests in model execution batches.", running)
        gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", waiting)
        gauge("vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage.", kv_usage)
        gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", kv_usage)
        counter("vllm:num_preemptions_total", "Cumulative number of preemption from the engine.", 0)
        counter("vllm:prompt_tokens_total", "Number of prefill tokens processed.", self.prompt_tokens)
        counter("vllm:generation_tokens_total", "Number of generation tokens processed.", self.generation_tokens)
        out.append("# HELP vllm:request_success_total Count of successfully processed requests.")
        out.append("# TYPE vllm:request_success_total counter")
        for reason, value in self.success.items():
            out.append(f'vllm:request_success_total{{{labels},finished_reason="{reason}"}} {float(value)}')
        histogram("vllm:request_prompt_tokens", "Number of prefill tokens processed.", self.prompt_hist)
        histogram("vllm:request_generation_tokens", "Number of generation tokens processed.", self.gen_hist)
        histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", self.ttft)
        histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", self.itl)
        histogram("vllm:time_per_output_token_seconds", "Histogram of time per output token in seconds.", self.tpot)
        histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", self.e2e)
        histogram("vllm:request_queue_time_seconds",
                  "Histogram of time spent in WAITING phase for request.", self.queue)
        histogram("sweepdeck_sim:http_time_to_first_token_seconds",
                  "Request bytes read by the HTTP server to the first token's chunk written.", self.http_ttft)
        gauge("sweepdeck_sim:busy_since_timestamp_seconds", "When the engine last went from idle to busy.",
              self.busy_since)
        gauge("sweepdeck_sim:idle_since_timestamp_seconds", "When the engine last went from busy to idle.",
              self.idle_since)
        return "\n".join(out) + "\n"
