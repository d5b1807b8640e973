"""inference-perf lifecycle reports.

``stage_<N>_lifecycle_metrics.json``, ``summary_lifecycle_metrics.json`` and
the per-request rows.

One load point per stage file, in stage order (the summary file only when
there are no stage files). Each report has ``load_summary.requested_rate``,
``successes.count``, ``failures.count``, ``successes.throughput`` and
``successes.latency.<name>`` distributions in **seconds** (``mean``,
``median``, ``p90``, ``p99``). ``per_request_lifecycle_metrics.json`` (a list
of ``{start_time, end_time, request, response, info, error}``) gives the
failure messages and the tok/s-over-time curve; only its small fields are
decoded. ``config.yaml`` (written beside the reports) gives the
configuration and each stage's concurrency for a concurrent load.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec

from backends.results.failures import Breakdown, message_of
from backends.results.jsonio import ReportError, decode, load_json, load_yaml, read_bytes
from backends.results.model import Dist, LoadPoint, Origin, Result, Setting, num
from backends.results.series import timeline

HARNESS = "inference-perf"
STAGE_FILE = re.compile(r"^(?:.*[_-])?stage_(\d+)_lifecycle_metrics\.json$")
SUMMARY_FILE = re.compile(r"^(?:.*[_-])?summary_lifecycle_metrics\.json$")
PER_REQUEST_FILE = re.compile(r"^(?:.*[_-])?per_request_lifecycle_metrics\.json$")
EXPECTED = ("an inference-perf lifecycle report: a JSON object with 'load_summary', 'successes' and 'failures' "
            "(latencies in seconds)")
EXPECTED_ROWS = "inference-perf per-request rows: a JSON list of {start_time, end_time, info, error}"


class _Response(msgspec.Struct):
    output_tokens: Any = None


class _Info(msgspec.Struct):
    response_metrics: _Response | None = None


class _Row(msgspec.Struct):
    start_time: Any = None
    end_time: Any = None
    error: Any = None
    info: _Info | None = None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def looks_like(doc: Any) -> bool:
    return isinstance(doc, dict) and "load_summary" in doc and ("successes" in doc or "failures" in doc)


def is_report_file(path: Path) -> bool:
    return bool(STAGE_FILE.match(path.name) or SUMMARY_FILE.match(path.name))


def stage_files(directory: Path) -> list[tuple[int, Path]]:
    out = []
    for path in directory.iterdir():
        m = STAGE_FILE.match(path.name)
        if m and path.is_file():
            out.append((int(m.group(1)), path))
    return sorted(out)


def _stage_config(config: dict[str, Any], index: int) -> dict[str, Any]:
    stages = _dict(config.get("load")).get("stages")
    if isinstance(stages, list) and 0 <= index < len(stages):
        return _dict(stages[index])
    return {}


def point(report: dict[str, Any], label: str, stage: dict[str, Any] | None = None, load_type: str = "") -> LoadPoint:
    """The load point of one lifecycle report (a stage or the summary)."""
    load = _dict(report.get("load_summary"))
    ok, bad = _dict(report.get("successes")), _dict(report.get("failures"))
    latency, throughput = _dict(ok.get("latency")), _dict(ok.get("throughput"))
    stage = stage or {}
    rate = num(load.get("requested_rate"))
    concurrency = stage.get("concurrency_level")
    if load_type == "concurrent" and isinstance(concurrency, int):
        rate, shown = None, f"{concurrency} in flight"
    else:
        concurrency = None
        shown = f"{rate:g}/s" if rate is not None else ""
    return LoadPoint(
        f"{label} {shown}".strip(), rate=rate, concurrency=concurrency,
        requests_ok=int(ok.get("count") or 0), requests_failed=int(bad.get("count") or 0),
        ttft_ms=Dist.from_summary(latency.get("time_to_first_token"), 1000.0),  # seconds throughout
        itl_ms=Dist.from_summary(latency.get("inter_token_latency"), 1000.0),
        tpot_ms=Dist.from_summary(latency.get("time_per_output_token"), 1000.0),
        e2e_ms=Dist.from_summary(latency.get("request_latency"), 1000.0),
        output_tok_s=num(throughput.get("output_tokens_per_sec")),
        req_s=num(throughput.get("requests_per_sec")),
        duration_s=num(report.get("benchmark_time_seconds")),
    )


def _read_report(path: Path) -> dict[str, Any]:
    doc = load_json(path, EXPECTED)
    if not looks_like(doc):
        raise ReportError(path, "is not an inference-perf lifecycle report (no 'load_summary'/'successes')", EXPECTED)
    return doc


def _rows(path: Path) -> list[_Row]:
    data = read_bytes(path, EXPECTED_ROWS)
    try:
        return msgspec.json.decode(data, type=list[_Row])
    except msgspec.ValidationError:
        doc = decode(path, data, EXPECTED_ROWS)
        raise ReportError(path, f"holds a JSON {type(doc).__name__} whose rows are not request records",
                          EXPECTED_ROWS) from None
    except msgspec.DecodeError:
        decode(path, data, EXPECTED_ROWS)  # raises the readable ReportError
        raise


def _from_rows(rows: list[_Row]) -> tuple[Breakdown, list[tuple[float, float]]]:
    failures = Breakdown()
    ends = []
    for row in rows:
        if row.error:
            failures.add(message_of(row.error))
            continue
        end = num(row.end_time)
        tokens = num(row.info.response_metrics.output_tokens) if row.info and row.info.response_metrics else None
        if end is not None and tokens is not None:
            ends.append((end, tokens))
    return failures, timeline(ends)


def spec_of(config: dict[str, Any], source: str = "config.yaml") -> tuple[dict[str, Setting], str | None]:
    """The configuration inference-perf wrote beside its reports."""
    out: dict[str, Setting] = {}
    server, api = _dict(config.get("server")), _dict(config.get("api"))
    model = server.get("model_name")
    for key, value in (("model", model), ("inference_perf.base_url", server.get("base_url")),
                       ("inference_perf.api", api.get("type")), ("inference_perf.streaming", api.get("streaming"))):
        if value is not None and value != "":
            out[key] = Setting(value, source)
    _spec_load(out, _dict(config.get("load")), source)
    _spec_data(out, _dict(config.get("data")), source)
    return out, model if isinstance(model, str) else None


def _spec_load(out: dict[str, Setting], load: dict[str, Any], source: str) -> None:
    if load.get("type"):
        out["workload.rate_type"] = Setting(load["type"], source)
    stages = [s for s in load.get("stages") or [] if isinstance(s, dict)]
    for key, name in (("workload.rate", "rate"), ("inference_perf.stage_durations_s", "duration"),
                      ("inference_perf.stage_concurrency", "concurrency_level")):
        values = [s.get(name) for s in stages]
        if any(v is not None for v in values):
            out[key] = Setting(values, source)


def _spec_data(out: dict[str, Setting], data: dict[str, Any], source: str) -> None:
    kind = data.get("type")
    if not kind:
        return
    out["inference_perf.data"] = Setting(kind, source)
    for key, value in _dict(data.get(str(kind))).items():
        if isinstance(value, (int, float, str, bool)):
            out[f"inference_perf.{kind}.{key}"] = Setting(value, source)


def _read_config(directory: Path, problems: list[str], files: list[str]) -> dict[str, Any]:
    path = directory / "config.yaml"
    if not path.is_file():
        return {}
    try:
        config = _dict(load_yaml(path, "inference-perf's config.yaml"))
    except ReportError as exc:
        problems.append(exc.message)
        return {}
    files.append(str(path))
    return config


def _points(directory: Path, config: dict[str, Any], prefix: str, problems: list[str],
            files: list[str]) -> list[LoadPoint]:
    """Stage reports in stage order, or the summary report when there are none."""
    load_type = str(_dict(config.get("load")).get("type") or "")
    stages = stage_files(directory)
    if stages:
        wanted: list[tuple[str, Path, dict[str, Any] | None]] = [
            (f"{prefix}stage {i}", path, _stage_config(config, i)) for i, path in stages]
    else:
        summaries = sorted(p for p in directory.iterdir() if SUMMARY_FILE.match(p.name))
        wanted = [(f"{prefix}summary", path, None) for path in summaries[:1]]
    points = []
    for label, path, stage in wanted:
        try:
            points.append(point(_read_report(path), label, stage, load_type))
        except ReportError as exc:
            problems.append(exc.message)
            continue
        files.append(str(path))
    return points


def load_dir(directory: Path, name: str | None = None, label_prefix: str = "") -> Result:
    """Read the lifecycle reports of one inference-perf output directory.

    A stage file that cannot be read is reported in ``problems`` and the other
    stages still show.

    Raises:
        ReportError: no usable lifecycle report at all.
    """
    files: list[str] = []
    problems: list[str] = []
    config = _read_config(directory, problems, files)
    spec, model = spec_of(config) if config else (None, None)
    points = _points(directory, config, label_prefix, problems, files)
    if not points:
        what = ("has no readable lifecycle report (" + problems[-1] + ")" if problems
                else "has no stage_<N>_lifecycle_metrics.json or summary_lifecycle_metrics.json")
        raise ReportError(directory, what, EXPECTED)
    failures = Breakdown()
    series: list[tuple[float, float]] = []
    for path in sorted(p for p in directory.iterdir() if PER_REQUEST_FILE.match(p.name))[:1]:
        try:
            failures, series = _from_rows(_rows(path))
            files.append(str(path))
        except ReportError as exc:
            problems.append(exc.message)
    if failures.total == 0:
        for p in points:
            failures.add("(the per-request file, which holds the messages, is missing)", p.requests_failed,
                         reason="failed (no message)")
    return Result(
        name=name or directory.name, origin=Origin(HARNESS, None, files), load_points=points,
        failures=failures.failures(), spec=spec, timeline=series, notes=_validation_notes(directory),
        problems=problems, model=model, path=str(directory),
    )


def _validation_notes(directory: Path) -> list[str]:
    path = directory / "validation.json"
    if not path.is_file():
        return []
    try:
        doc = load_json(path, "inference-perf's validation.json")
    except ReportError:
        return []
    errors = [e for e in _dict(doc.get("global")).get("errors") or []]
    for report in _dict(doc.get("reports")).values():
        errors += _dict(report).get("errors") or []
    return [f"inference-perf validation error: {message_of(e.get('message') if isinstance(e, dict) else e)}"
            for e in errors[:5]]


def load_file(path: Path, name: str | None = None) -> Result:
    """One lifecycle report on its own (a stage or the summary)."""
    report = _read_report(path)
    m = STAGE_FILE.match(path.name)
    label = f"stage {m.group(1)}" if m else "summary"
    p = point(report, label)
    failures = Breakdown()
    failures.add("(the per-request file, which holds the messages, was not given)", p.requests_failed,
                 reason="failed (no message)")
    return Result(name=name or path.stem, origin=Origin(HARNESS, None, [str(path)]), load_points=[p],
                  failures=failures.failures(), path=str(path))
