"""The built-in async load generator (the "workload runner").

Runs a :class:`config.catalog.WorkloadProfile` against any OpenAI-compatible
endpoint with streaming requests and reports live ``Progress``/``Metrics``
events and a results JSON. See :mod:`backends.loadgen.runner` for what is
measured, :mod:`backends.loadgen.schedule` for how requests are shaped and
timed, :mod:`backends.loadgen.stats` for the statistics.

Usage::

    runner = WorkloadRunner("http://127.0.0.1:8000", "facebook/opt-125m", profile,
                            results_path=run_dir / "results" / "workload.json")
    async for event in runner.events():   # Progress, Metrics, Progress, Metrics, ...
        show(event)
    print(runner.summary["ttft_ms"]["p90"], runner.summary["tpot_ms"]["mean"])

Modules: :mod:`~backends.loadgen.runner` (the runner, merging, results file
format), :mod:`~backends.loadgen.worker` (one worker's requests, the worker
process), :mod:`~backends.loadgen.http` (the streaming HTTP client).
"""

from backends.loadgen.runner import APIS, RequestRow, WorkloadRunner, default_workers, run_workload
from backends.loadgen.schedule import THROUGHPUT_DEFAULT_CONCURRENCY, Mode, resolve_mode
from backends.loadgen.stats import describe, percentile

__all__ = [
    "APIS",
    "Mode",
    "RequestRow",
    "THROUGHPUT_DEFAULT_CONCURRENCY",
    "WorkloadRunner",
    "default_workers",
    "describe",
    "percentile",
    "resolve_mode",
    "run_workload",
]
