"""guidellm reports, 0.3 to 0.8.

``guidellm benchmark --output-path …json`` (0.3, 0.4+) and
``guidellm run … --output kind=json`` (0.8).

One load point per entry of ``benchmarks`` (one strategy: synchronous,
throughput, a constant or poisson rate, a concurrency). Aggregates come from
``metrics.<name>.successful`` distributions (``mean``, ``median``,
``percentiles.p50/p90/p99``); ``_ms`` fields are milliseconds and
``request_latency`` is seconds. The strategy is in ``args.strategy`` (0.3) or
``config.strategy`` (0.4+); the request counts in ``request_totals`` on the
benchmark (0.3) or in ``metrics`` (0.4+). Per-request rows
(``requests.successful`` / ``errored`` / ``incomplete``) give the failure
messages and the tok/s-over-time curve; guidellm keeps only a sample of them
(``sample_size``), which the result says when it matters.

Only the small fields of each row are decoded (see :mod:`backends.results.jsonio`):
prompts, outputs and request bodies are skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from backends.results.failures import Breakdown, message_of
from backends.results.jsonio import ReportError, decode, read_bytes
from backends.results.model import Dist, LoadPoint, Origin, Result, Setting, num
from backends.results.series import step_timeline, timeline

HARNESS = "guidellm"
EXPECTED = "a guidellm report (0.3, 0.4+ or 0.8): a JSON object with a 'benchmarks' list"
#: ``metadata.version`` (the report schema) of the releases read here: 1 = 0.4–0.7, 2 = 0.8.
KNOWN_SCHEMAS = (1, 2)


class _Row(msgspec.Struct):
    request_start_time: Any = None
    request_end_time: Any = None
    start_time: Any = None
    end_time: Any = None
    output_tokens: Any = None
    error: Any = None
    info: msgspec.Raw = msgspec.Raw(b"null")


class _Requests(msgspec.Struct):
    successful: list[_Row] | None = None
    errored: list[_Row] | None = None
    incomplete: list[_Row] | None = None


class _Bench(msgspec.Struct):
    type_: Any = None
    args: Any = None
    config: Any = None
    metrics: Any = None
    request_totals: Any = None
    run_stats: Any = None
    scheduler_state: Any = None
    worker: Any = None
    request_loader: Any = None
    start_time: Any = None
    end_time: Any = None
    duration: Any = None
    requests: _Requests | None = None


class _Report(msgspec.Struct):
    benchmarks: list[_Bench] | None = None
    metadata: Any = None
    args: Any = None
    config: Any = None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def looks_like(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("benchmarks"), list)


def _decode(path: Path) -> _Report:
    """The report with only the fields read here (a report whose rows are odd: without rows)."""
    data = read_bytes(path, EXPECTED)
    try:
        return msgspec.json.decode(data, type=_Report)
    except (msgspec.ValidationError, msgspec.DecodeError):
        pass  # read again as plain JSON: a readable ReportError for a bad file, or the report without its rows
    doc = decode(path, data, EXPECTED)
    if not isinstance(doc, dict):
        raise ReportError(path, f"holds a JSON {type(doc).__name__}, not an object", EXPECTED)
    benches = doc.get("benchmarks")
    if not isinstance(benches, list):
        raise ReportError(path, "has no 'benchmarks' list", EXPECTED)
    report = _Report(metadata=doc.get("metadata"), args=doc.get("args"), config=doc.get("config"), benchmarks=[])
    for b in benches:
        if isinstance(b, dict):
            fields = {k: v for k, v in b.items() if k in _Bench.__struct_fields__ and k != "requests"}
            report.benchmarks.append(_Bench(**fields))  # type: ignore[union-attr]  # set just above
    return report


def version_of(report: _Report, path: Path) -> str:
    """``0.8.1`` (from metadata), ``0.3`` (``args.strategy``) or ``0.4+`` (``config.strategy``).

    Raises:
        ReportError: a report schema this reader does not know, or no strategy anywhere.
    """
    meta = _dict(report.metadata)
    schema = meta.get("version")
    if meta.get("guidellm_version") or schema is not None:
        if schema is not None and schema not in KNOWN_SCHEMAS:
            raise ReportError(
                path, f"is a guidellm report of schema version {schema!r} "
                f"(guidellm {meta.get('guidellm_version', '?')}), which sweepdeck does not read",
                "guidellm 0.3, 0.4+ (schema 1) or 0.8 (schema 2)",
                hint="A newer sweepdeck may read it; meanwhile use the report's CSV export or an older guidellm.")
        return str(meta.get("guidellm_version") or f"schema {schema}")
    benches = report.benchmarks or []
    if any(isinstance(_dict(b.args).get("strategy"), dict) for b in benches):
        return "0.3"
    if any(isinstance(_dict(b.config).get("strategy"), dict) for b in benches):
        return "0.4+"
    raise ReportError(path, "has benchmarks without a strategy (args.strategy or config.strategy)",
                      "guidellm 0.3 (args.strategy) or 0.4+ (config.strategy)")


def _strategy(bench: _Bench) -> dict[str, Any]:
    return _dict(_dict(bench.config).get("strategy")) or _dict(_dict(bench.args).get("strategy"))


def _label(strategy: dict[str, Any], index: int) -> tuple[str, float | None, int | None]:
    """(label, rate, concurrency) of a strategy."""
    kind = str(strategy.get("type_") or strategy.get("type") or f"benchmark {index}")
    rate = num(strategy.get("rate"))
    streams = strategy.get("streams")
    cap = strategy.get("max_concurrency")
    if kind == "synchronous":
        return kind, None, 1
    if isinstance(streams, int) and streams > 0:
        return f"{kind} {streams}", None, streams
    if rate is not None:
        return f"{kind} {rate:g}/s", rate, None
    if kind == "throughput":
        return kind, None, cap if isinstance(cap, int) and cap > 0 else None
    return kind, None, None


def _successful(metrics: dict[str, Any], name: str) -> Any:
    return _dict(metrics.get(name)).get("successful")


def _totals(bench: _Bench, metrics: dict[str, Any]) -> dict[str, int]:
    raw = _dict(metrics.get("request_totals")) or _dict(bench.request_totals) or \
        _dict(_dict(bench.run_stats).get("requests_made"))
    if not raw:
        state = _dict(bench.scheduler_state)
        raw = {"successful": state.get("successful_requests"), "errored": state.get("errored_requests"),
               "incomplete": state.get("cancelled_requests")}
    return {k: int(v) if isinstance(v, int) and not isinstance(v, bool) else 0 for k, v in raw.items()}


def _point(bench: _Bench, index: int) -> LoadPoint:
    metrics = _dict(bench.metrics)
    label, rate, concurrency = _label(_strategy(bench), index)
    totals = _totals(bench, metrics)
    start, end = num(bench.start_time), num(bench.end_time)
    duration = num(bench.duration) or (end - start if start is not None and end is not None else None)
    rows = bench.requests.successful if bench.requests else None
    return LoadPoint(
        label, rate=rate, concurrency=concurrency,
        requests_ok=totals.get("successful", len(rows or [])),
        requests_failed=totals.get("errored", 0),
        incomplete=totals.get("incomplete", 0),
        ttft_ms=Dist.from_summary(_successful(metrics, "time_to_first_token_ms")),
        itl_ms=Dist.from_summary(_successful(metrics, "inter_token_latency_ms")),
        tpot_ms=Dist.from_summary(_successful(metrics, "time_per_output_token_ms")),
        e2e_ms=Dist.from_summary(_successful(metrics, "request_latency"), 1000.0),  # seconds
        output_tok_s=Dist.from_summary(_successful(metrics, "output_tokens_per_second")).mean,
        req_s=Dist.from_summary(_successful(metrics, "requests_per_second")).mean,
        duration_s=duration,
    )


def _error_message(row: _Row) -> str:
    if row.error:
        return message_of(row.error)  # 0.3: the error row's own field
    try:
        info = msgspec.json.decode(row.info)
    except msgspec.DecodeError:
        return ""
    return message_of(_dict(info).get("error"))


def _breakdown(report: _Report, points: list[LoadPoint]) -> tuple[Breakdown, int]:
    out = Breakdown()
    kept = 0
    for bench in report.benchmarks or []:
        for row in (bench.requests.errored if bench.requests else None) or []:
            out.add(_error_message(row))
            kept += 1
    total = sum(p.requests_failed for p in points)
    if total > kept:
        out.add(f"guidellm kept {kept} of the {total} failed requests in the report (sample_size); "
                "their messages are not in the file", total - kept, reason="not sampled in the report")
    return out, kept


def _timeline(report: _Report, points: list[LoadPoint]) -> tuple[list[tuple[float, float]], str]:
    """Rows bucketed when the report kept every successful request, else one step per benchmark."""
    benches = report.benchmarks or []
    rows = [r for b in benches for r in ((b.requests.successful if b.requests else None) or [])]
    if rows and len(rows) >= sum(p.requests_ok for p in points):
        ends = [(num(r.request_end_time) or num(r.end_time), num(r.output_tokens)) for r in rows]
        return timeline((t, n) for t, n in ends if t is not None and n is not None), ""
    spans = [(num(b.start_time), num(b.end_time), p.output_tok_s) for b, p in zip(benches, points, strict=True)]
    note = (f"tok/s over time is per benchmark: the report keeps {len(rows)} of "
            f"{sum(p.requests_ok for p in points)} successful requests") if rows else ""
    return step_timeline((a, b, v) for a, b, v in spans if a is not None and b is not None and v is not None), note


def _spec(report: _Report, source: str) -> tuple[dict[str, Setting], str | None]:
    """What the report says was run: model, target, profile, rates, data."""
    out: dict[str, Setting] = {}
    spec = _dict(_dict(report.config).get("spec"))
    args = _dict(report.args)
    first = (report.benchmarks or [_Bench()])[0]
    backend = _dict(spec.get("backend")) or _dict(_dict(first.config).get("backend"))
    worker = _dict(first.worker)
    model = backend.get("model") or args.get("model") or worker.get("backend_model")
    target = backend.get("target") or args.get("target") or worker.get("backend_target")
    if model:
        out["model"] = Setting(model, source)
    if target:
        out["guidellm.target"] = Setting(target, source)
    profile = _dict(spec.get("profile")) or _dict(args.get("profile")) or _dict(_dict(first.args).get("profile"))
    _spec_profile(out, profile, args, source)
    _spec_data(out, spec.get("data") or args.get("data") or _dict(first.request_loader).get("data"), source)
    return out, model if isinstance(model, str) else None


def _spec_profile(out: dict[str, Setting], profile: dict[str, Any], args: dict[str, Any], source: str) -> None:
    kind = profile.get("kind") or profile.get("type_") or args.get("rate_type")
    if kind:
        out["workload.rate_type"] = Setting(kind, source)
    rate = profile.get("rate") if profile.get("rate") is not None else args.get("rate")
    if rate is not None:
        out["workload.rate"] = Setting(rate, source)
    if profile.get("max_concurrency") is not None:
        out["workload.max_concurrency"] = Setting(profile["max_concurrency"], source)


def _spec_data(out: dict[str, Setting], data: Any, source: str) -> None:
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if isinstance(data, dict):
        for key in ("prompt_tokens", "output_tokens"):
            if data.get(key) is not None:
                out[f"workload.{key}"] = Setting(data[key], source)
    elif data:
        out["guidellm.data"] = Setting(str(data), source)


def load(path: Path, name: str | None = None) -> Result:
    """Read a guidellm JSON report.

    Raises:
        ReportError: empty, truncated, not JSON, not a guidellm report, unknown schema version, no benchmarks.
    """
    report = _decode(path)
    if report.benchmarks is None:
        raise ReportError(path, "has no 'benchmarks' list", EXPECTED)
    version = version_of(report, path)
    if not report.benchmarks:
        raise ReportError(path, "has an empty 'benchmarks' list (the run measured nothing)", EXPECTED)
    points = [_point(b, i) for i, b in enumerate(report.benchmarks)]
    failures, _ = _breakdown(report, points)
    series, note = _timeline(report, points)
    spec, model = _spec(report, "guidellm report")
    notes = [note] if note else []
    incomplete = sum(p.incomplete for p in points)
    if incomplete:
        notes.append(f"{incomplete} request(s) were still running when their benchmark ended (incomplete, not failed)")
    return Result(
        name=name or path.stem, origin=Origin(HARNESS, version, [str(path)]), load_points=points,
        failures=failures.failures(), spec=spec, timeline=series, timeline_note=note, notes=notes,
        model=model, path=str(path),
    )
