"""sweepdeck's own load generator: a run's ``results/results.json`` (``workload.json`` on SLURM).

The document (see :mod:`backends.loadgen.runner`) is ``{profile, model,
base_url, api, started, duration_s, requests: [row...], summary}``; one file is
one load point. Distributions are computed from the request rows when they
are there (so p50/p90/p99 and TPOT exist whatever the summary carries);
otherwise the summary's are used. Fields the runner may add later (a
per-row ``tpot_ms``, a client-saturation flag, worker counts) are read when
present and ignored otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backends.loadgen.schedule import THROUGHPUT_DEFAULT_CONCURRENCY
from backends.results.failures import Breakdown
from backends.results.jsonio import ReportError, load_json
from backends.results.model import Dist, LoadPoint, Origin, Result, Setting, num
from backends.results.series import timeline

HARNESS = "sweepdeck-loadgen"
EXPECTED = "a sweepdeck load-generator results.json (an object with 'requests' rows and a 'summary')"
OPEN_LOOP = ("constant", "poisson", "sweep")


def looks_like(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("summary"), dict) and "requests" in doc


def load(path: Path, name: str | None = None) -> Result:
    """Read one results.json.

    Raises:
        ReportError: unreadable, not JSON, or not a load-generator document.
    """
    doc = load_json(path, EXPECTED)
    if not looks_like(doc):
        raise ReportError(path, "is not a load-generator results document", EXPECTED)
    return from_document(doc, str(path), name or path.parent.parent.name or path.stem)


def request_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The request rows: ``requests``, or each worker's ``requests`` when a multi-worker run keeps them apart."""
    rows = doc.get("requests")
    if not rows and isinstance(doc.get("workers"), list):
        rows = [r for w in doc["workers"] if isinstance(w, dict) for r in (w.get("requests") or [])]
    return [r for r in rows or [] if isinstance(r, dict)]


def _load_of(profile: dict[str, Any], summary: dict[str, Any]) -> tuple[float | None, int | None]:
    """(rate, concurrency) the profile asked for, as :func:`backends.loadgen.schedule.resolve_mode` reads it."""
    kind = str(profile.get("rate_type") or summary.get("rate_type") or "")
    cap = profile.get("max_concurrency")
    cap = int(cap) if isinstance(cap, int) and cap > 0 else None
    rate = num(profile.get("rate"))
    if kind in OPEN_LOOP:
        return rate, None
    if kind == "synchronous":
        return None, 1
    if kind == "concurrent":
        return None, cap or (int(rate) if rate else None)
    if kind == "throughput":
        return None, cap or THROUGHPUT_DEFAULT_CONCURRENCY
    return rate, None


def _tpot(row: dict[str, Any]) -> float | None:
    """Time per output token after the first: the row's own ``tpot_ms``, else (E2E − TTFT) / (tokens − 1)."""
    own = num(row.get("tpot_ms"))
    if own is not None:
        return own
    latency, ttft, tokens = num(row.get("latency_ms")), num(row.get("ttft_ms")), row.get("output_tokens")
    if latency is None or ttft is None or not isinstance(tokens, int) or tokens < 2:
        return None
    return (latency - ttft) / (tokens - 1)


def _point_from_rows(point: LoadPoint, rows: list[dict[str, Any]]) -> None:
    ttft: list[float] = []
    itl: list[float] = []
    e2e: list[float] = []
    tpot: list[float] = []
    for r in rows:  # one pass: a run may have 100,000 rows
        if r.get("status") != "ok":
            continue
        for values, value in ((ttft, num(r.get("ttft_ms"))), (itl, num(r.get("itl_ms"))),
                              (e2e, num(r.get("latency_ms"))), (tpot, _tpot(r))):
            if value is not None:
                values.append(value)
    point.ttft_ms, point.itl_ms, point.e2e_ms, point.tpot_ms = Dist.of(ttft), Dist.of(itl), Dist.of(e2e), Dist.of(tpot)


def _point_from_summary(point: LoadPoint, summary: dict[str, Any]) -> None:
    point.ttft_ms = Dist.from_summary(summary.get("ttft_ms"))
    point.itl_ms = Dist.from_summary(summary.get("itl_ms"))
    point.e2e_ms = Dist.from_summary(summary.get("latency_ms") or summary.get("e2e_ms"))
    point.tpot_ms = Dist.from_summary(summary.get("tpot_ms"))


def _count(summary: dict[str, Any], key: str, fallback: int) -> int:
    value = summary.get(key)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else fallback


def load_point(doc: dict[str, Any], label: str | None = None) -> LoadPoint:
    """The one load point of a results document (or of a queue result's summary: ``doc = {"summary": …}``)."""
    summary = found if isinstance(found := doc.get("summary"), dict) else {}
    profile = found if isinstance(found := doc.get("profile"), dict) else {}
    rows = request_rows(doc)
    rate, concurrency = _load_of(profile, summary)
    point = LoadPoint(label or str(summary.get("mode") or profile.get("rate_type") or "workload"),
                      rate=rate, concurrency=concurrency)
    if rows:
        _point_from_rows(point, rows)
    else:
        _point_from_summary(point, summary)
    point.requests_ok = _count(summary, "completed", sum(1 for r in rows if r.get("status") == "ok"))
    point.requests_failed = _count(summary, "failed", sum(1 for r in rows if r.get("status") == "error"))
    point.incomplete = _count(summary, "cancelled", sum(1 for r in rows if r.get("status") == "cancelled"))
    point.duration_s = num(summary.get("duration_s")) or num(doc.get("duration_s"))
    point.req_s = num(summary.get("requests_per_s"))
    point.output_tok_s = num(summary.get("output_tokens_per_s"))
    if point.output_tok_s is None and point.duration_s:
        tokens = sum(r.get("output_tokens") or 0 for r in rows if r.get("status") == "ok")
        point.output_tok_s = tokens / point.duration_s if rows else None
    return point


def breakdown(doc: dict[str, Any]) -> Breakdown:
    """Failed requests by reason: from the error rows, else from the summary's ``errors`` counts."""
    out = Breakdown()
    rows = request_rows(doc)
    if rows:
        for r in rows:
            if r.get("status") == "error":
                status = r.get("http_status") if isinstance(r.get("http_status"), int) else None
                out.add(str(r.get("error") or ""), http_status=status)
        return out
    summary = found if isinstance(found := doc.get("summary"), dict) else {}
    errors = summary.get("errors")
    if isinstance(errors, dict):
        for message, n in errors.items():
            if isinstance(n, int):
                out.add(str(message), n)
    return out


def notes(doc: dict[str, Any]) -> list[str]:
    """What to know when reading these figures (a saturated client, a run stopped early...)."""
    summary = found if isinstance(found := doc.get("summary"), dict) else {}
    out = []
    if summary.get("client_limited"):
        # the runner's own check (loop lag, worker CPU): its sentence says by how much
        client = found if isinstance(found := summary.get("client"), dict) else {}
        out.append(f"client-limited: {client.get('message') or 'the load generator limited the measurement'}"
                   " — the client, not the server, may have set these numbers")
    workers = doc.get("workers", summary.get("workers"))
    if isinstance(workers, int) and workers > 1:
        out.append(f"{workers} load-generator workers")
    elif isinstance(workers, list) and len(workers) > 1:
        out.append(f"{len(workers)} load-generator workers")
    stop = summary.get("stop_reason")
    if stop and stop not in ("done", "completed", "max_requests", None):
        out.append(f"the workload stopped early ({stop})")
    if summary.get("cancelled"):
        out.append(f"{summary['cancelled']} request(s) were cut off when the run stopped (not counted as failed)")
    return out


def spec_of(doc: dict[str, Any], source: str = "results.json") -> dict[str, Setting]:
    """The workload the document says it ran (when there is no saved spec)."""
    out: dict[str, Setting] = {}
    if doc.get("model"):
        out["model"] = Setting(doc["model"], source)
    profile = found if isinstance(found := doc.get("profile"), dict) else {}
    if profile.get("app"):
        out["workload"] = Setting(profile["app"], source)
    for key, value in profile.items():
        if key != "app" and (value is None or isinstance(value, (int, float, str, bool))):
            out[f"workload.{key}"] = Setting(value, source)
    if doc.get("api"):
        out["loadgen.api"] = Setting(doc["api"], source)
    if doc.get("base_url"):
        out["loadgen.base_url"] = Setting(doc["base_url"], source)
    return out


def from_document(doc: dict[str, Any], path: str, name: str) -> Result:
    rows = request_rows(doc)
    point = load_point(doc)
    ends = []
    for r in rows:
        start, latency = num(r.get("start_s")), num(r.get("latency_ms"))
        if r.get("status") == "ok" and start is not None and latency is not None:
            ends.append((start + latency / 1000.0, float(r.get("output_tokens") or 0)))
    return Result(
        name=name,
        origin=Origin(HARNESS, None, [path]),
        load_points=[point],
        failures=breakdown(doc).failures(),
        spec=spec_of(doc),
        timeline=timeline(ends),
        notes=notes(doc),
        model=doc.get("model") if isinstance(doc.get("model"), str) else None,
        path=path,
    )
