"""Harness reports copied from data-pvc → a small per-benchmark summary.

Two harnesses write the BLIS results:

* **guidellm** (``guidellm benchmark --output-path guidellm-results.json``): a
  report ``{"benchmarks": [...]}`` with one entry per strategy/rate. Each entry
  has ``metrics.<name>.successful`` distributions (``mean``, ``median``,
  ``percentiles.p99``...) for ``requests_per_second``,
  ``output_tokens_per_second``, ``time_to_first_token_ms``,
  ``inter_token_latency_ms`` and ``request_latency`` (seconds), and request
  counts in ``request_totals`` (guidellm 0.3: on the benchmark, strategy in
  ``args.strategy``; 0.4+: in ``metrics``, strategy in ``config.strategy``).
* **inference-perf** (``stage_<N>_lifecycle_metrics.json`` per load stage plus
  ``summary_lifecycle_metrics.json``): ``load_summary.requested_rate``,
  ``successes.count``, ``failures.count``, ``successes.throughput`` and
  ``successes.latency.<name>`` distributions in *seconds* (``mean``,
  ``median``, ``p99``). The load type (``constant``, ``poisson``) comes from
  the ``config.yaml`` inference-perf writes next to them (or the run's
  ``profile.yaml``), so a stage row reads like a guidellm one:
  ``constant@4/s (stage 0)``.

:func:`summarize` turns either into ``{"harness", "report", "benchmarks": [row...]}``
where every row has the same keys (milliseconds throughout), so the headless
summary table and the TUI print them alike.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

STAGE_FILE = re.compile(r"stage_(\d+)_lifecycle_metrics\.json$")


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _stats(dist: Any, scale: float = 1.0) -> dict[str, float | None]:
    """``{mean, median, p99}`` of a distribution summary (guidellm or inference-perf), times ``scale``."""
    if not isinstance(dist, dict):
        return {"mean": None, "median": None, "p99": None}
    pct = found if isinstance(found := dist.get("percentiles"), dict) else {}
    raw = {
        "mean": _num(dist.get("mean")),
        "median": _num(dist.get("median")) if _num(dist.get("median")) is not None else _num(pct.get("p50")),
        "p99": _num(dist.get("p99")) if _num(dist.get("p99")) is not None else _num(pct.get("p99")),
    }
    return {k: (v * scale if v is not None else None) for k, v in raw.items()}


def _successful(metrics: dict[str, Any], name: str) -> Any:
    entry = metrics.get(name)
    return entry.get("successful") if isinstance(entry, dict) else None


def _strategy_label(strategy: dict[str, Any]) -> tuple[str, float | None]:
    kind = str(strategy.get("type_") or strategy.get("type") or "benchmark")
    rate = _num(strategy.get("rate"))
    streams = _num(strategy.get("streams"))
    if rate is not None:
        return f"{kind}@{rate:g}/s", rate
    if streams is not None:
        return f"{kind} x{streams:g}", None
    return kind, None


def guidellm_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One summary row per guidellm benchmark (strategy/rate)."""
    rows = []
    for i, bench in enumerate(report.get("benchmarks") or []):
        if not isinstance(bench, dict):
            continue
        metrics = found if isinstance(found := bench.get("metrics"), dict) else {}
        strategy = ((bench.get("config") or {}).get("strategy") or (bench.get("args") or {}).get("strategy") or {})
        name, rate = _strategy_label(strategy if isinstance(strategy, dict) else {})
        totals = metrics.get("request_totals") or bench.get("request_totals") or {}
        rows.append({
            "name": name if name != "benchmark" else f"benchmark {i}",
            "rate": rate,
            "completed": int(totals.get("successful") or 0),
            "failed": int(totals.get("errored") or 0),
            "incomplete": int(totals.get("incomplete") or 0),
            "requests_per_s": _stats(_successful(metrics, "requests_per_second"))["mean"],
            "output_tokens_per_s": _stats(_successful(metrics, "output_tokens_per_second"))["mean"],
            "ttft_ms": _stats(_successful(metrics, "time_to_first_token_ms")),
            "itl_ms": _stats(_successful(metrics, "inter_token_latency_ms")),
            "latency_ms": _stats(_successful(metrics, "request_latency"), 1000.0),  # guidellm: seconds
        })
    return rows


def inference_perf_row(report: dict[str, Any], name: str, kind: str | None = None) -> dict[str, Any]:
    """The summary row of one inference-perf lifecycle report (a stage or the summary).

    ``kind`` (the load type) names the row as guidellm's are: ``constant@4/s (stage 0)``.
    """
    load = found if isinstance(found := report.get("load_summary"), dict) else {}
    ok = found if isinstance(found := report.get("successes"), dict) else {}
    bad = found if isinstance(found := report.get("failures"), dict) else {}
    latency = found if isinstance(found := ok.get("latency"), dict) else {}
    throughput = found if isinstance(found := ok.get("throughput"), dict) else {}
    rate = _num(load.get("requested_rate"))
    if rate is None:
        label = name
    elif kind:
        head, _, stage = name.rpartition("/")
        label = f"{head + '/' if head else ''}{kind}@{rate:g}/s ({stage})"
    else:
        label = f"{name}@{rate:g}/s"
    return {
        "name": label,
        "rate": rate,
        "completed": int(ok.get("count") or 0),
        "failed": int(bad.get("count") or 0),
        "incomplete": 0,
        "requests_per_s": _num(throughput.get("requests_per_sec")),
        "output_tokens_per_s": _num(throughput.get("output_tokens_per_sec")),
        "ttft_ms": _stats(latency.get("time_to_first_token"), 1000.0),  # inference-perf: seconds
        "itl_ms": _stats(latency.get("inter_token_latency"), 1000.0),
        "latency_ms": _stats(latency.get("request_latency"), 1000.0),
    }


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _load_type(directory: Path, files: list[Path]) -> str | None:
    """``load.type`` of the inference-perf config next to the reports (``config.yaml``) or of the run's profile."""
    import yaml

    names = {p: p for p in files}
    for candidate in (directory / "config.yaml", directory.parent / "profile.yaml", directory / "profile.yaml"):
        if candidate not in names:
            continue
        try:
            config = yaml.safe_load(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError, yaml.YAMLError):
            continue
        load = config.get("load") if isinstance(config, dict) else None
        if isinstance(load, dict) and isinstance(load.get("type"), str):
            return load["type"]
    return None


def summarize(files: list[Path]) -> dict[str, Any]:
    """The harness summary of one branch's copied files (``{}`` when there is no report).

    guidellm wins when both are present; inference-perf stages are listed in
    stage order, the summary file only when there are no stage files.
    """
    jsons = sorted((p for p in files if p.suffix == ".json"), key=lambda p: str(p))
    for path in jsons:
        if "lifecycle_metrics" in path.name:
            continue
        data = _load(path)
        if isinstance(data, dict) and isinstance(data.get("benchmarks"), list):
            rows = guidellm_rows(data)
            if rows:
                return {"harness": "guidellm", "report": path.name, "benchmarks": rows}
    stages = []
    for path in jsons:
        m = STAGE_FILE.search(path.name)
        if m:
            data = _load(path)
            if isinstance(data, dict):
                label = f"stage {m.group(1)}"
                if path.parent.name.startswith("treatment-"):
                    label = f"{path.parent.name}/{label}"
                stages.append(((str(path.parent), int(m.group(1))), label, data, path))
    if stages:
        stages.sort(key=lambda s: s[0])
        return {"harness": "inference-perf", "report": stages[0][3].name,
                "benchmarks": [inference_perf_row(data, label, _load_type(path.parent, files))
                               for _, label, data, path in stages]}
    for path in jsons:
        if path.name.endswith("summary_lifecycle_metrics.json"):
            data = _load(path)
            if isinstance(data, dict):
                return {"harness": "inference-perf", "report": path.name,
                        "benchmarks": [inference_perf_row(data, "summary")]}
    return {}
