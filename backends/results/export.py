"""Results and comparisons as CSV, JSON and Markdown (for a report or a PR)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from backends.results.compare import Comparison
from backends.results.model import DIST_KEYS, LATENCIES, Result, fmt

CSV_COLUMNS = (
    ["label", "group", "rate", "concurrency", "requests_ok", "requests_failed"]
    + [f"{lat}_{k}" for lat in LATENCIES for k in DIST_KEYS]
    + ["output_tok_s", "req_s"]
)
FORMATS = ("csv", "json", "md")


def _cell(value: Any) -> Any:
    return "" if value is None else value


def result_rows(result: Result) -> list[dict[str, Any]]:
    """One flat row per load point (the CSV columns)."""
    rows = []
    for p in result.load_points:
        row: dict[str, Any] = {"label": p.label, "group": p.group, "rate": p.rate, "concurrency": p.concurrency,
                               "requests_ok": p.requests_ok, "requests_failed": p.requests_failed}
        for lat in LATENCIES:
            dist = getattr(p, lat)
            for k in DIST_KEYS:
                row[f"{lat}_{k}"] = dist.get(k)
        row["output_tok_s"] = p.output_tok_s
        row["req_s"] = p.req_s
        rows.append(row)
    return rows


def result_csv(result: Result) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in result_rows(result):
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return out.getvalue()


def result_json(result: Result) -> str:
    return json.dumps(result.to_dict(), indent=2, default=str) + "\n"


def _md_escape(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[Any]], right: set[int] | None = None) -> list[str]:
    right = right or set()
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return lines


def result_markdown(result: Result) -> str:
    """A Markdown report: source, load points, failures, configuration, files."""
    lines = [f"# Results: {result.name}", ""]
    lines.append(f"Source: **{result.origin.describe()}**" + (f" · model `{result.model}`" if result.model else ""))
    lines.append("")
    header = ["load point", "load", "ok", "failed", "TTFT p50 ms", "TTFT p99 ms", "ITL p50 ms", "TPOT p50 ms",
              "E2E p50 ms", "E2E p99 ms", "output tok/s", "req/s"]
    rows = [[p.label, p.load, p.requests_ok, p.requests_failed, fmt(p.ttft_ms.p50, "ms"), fmt(p.ttft_ms.p99, "ms"),
             fmt(p.itl_ms.p50, "ms"), fmt(p.tpot_ms.p50, "ms"), fmt(p.e2e_ms.p50, "ms"), fmt(p.e2e_ms.p99, "ms"),
             fmt(p.output_tok_s, "tok/s"), fmt(p.req_s, "req/s")] for p in result.load_points]
    lines += ["## Load points", ""] + _md_table(header, rows, set(range(2, len(header)))) + [""]
    lines += ["## Failures", ""]
    if result.failures:
        lines += _md_table(["reason", "count", "sample"], [[f.reason, f.count, f.sample] for f in result.failures], {1})
    else:
        lines.append("No request failed.")
    lines.append("")
    if result.spec:
        lines += ["## Configuration", ""]
        lines += _md_table(["setting", "value", "source"],
                           [[k, _value(s.value), s.source or ""] for k, s in result.spec.items()])
        lines.append("")
    lines += ["## Files", ""] + [f"- `{f}`" for f in result.origin.files] + [""]
    if result.notes or result.problems:
        lines += ["## Notes", ""] + [f"- {n}" for n in result.notes + result.problems] + [""]
    return "\n".join(lines)


def _value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or "(none)"
    return "—" if value is None else str(value)


def export(result: Result, fmt_name: str) -> str:
    """``csv``, ``json`` or ``md``."""
    if fmt_name == "csv":
        return result_csv(result)
    if fmt_name == "json":
        return result_json(result)
    if fmt_name == "md":
        return result_markdown(result)
    raise ValueError(f"unknown format {fmt_name!r}")


# --------------------------------------------------------------- comparisons


def pct(value: float | None) -> str:
    return "" if value is None else f"{value:+.1f}%"


def compare_json(cmp: Comparison) -> str:
    return json.dumps(cmp.to_dict(), indent=2, default=str) + "\n"


def compare_csv(cmp: Comparison) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["load_point", "metric"]
    for i, name in enumerate(cmp.names):
        header += [name] if i == 0 else [name, f"{name} delta_pct", f"{name} verdict"]
    writer.writerow(header)
    for r in cmp.rows:
        row: list[Any] = [r.point, r.metric.key]
        for i, value in enumerate(r.values):
            row += [_cell(value)] if i == 0 else [_cell(value), _cell(r.deltas[i]), _cell(r.verdicts[i])]
        writer.writerow(row)
    return out.getvalue()


_MARK = {"better": "▲ better", "worse": "▼ worse", "same": "= same"}


def compare_markdown(cmp: Comparison) -> str:
    lines = [f"# Compare: {', '.join(cmp.names)}", "",
             f"Baseline: **{cmp.names[0]}** · load points matched by {cmp.matched_by}", ""]
    header = ["load point", "metric"] + [cmp.names[0]] + [f"{n} (Δ)" for n in cmp.names[1:]]
    rows = []
    for r in cmp.rows:
        cells = [r.point, r.metric.label, fmt(r.values[0], r.metric.unit)]
        for i in range(1, len(r.values)):
            mark = _MARK.get(r.verdicts[i] or "", "")
            cells.append(f"{fmt(r.values[i], r.metric.unit)} ({pct(r.deltas[i])} {mark})".replace(" ()", "")
                         if r.deltas[i] is not None else fmt(r.values[i], r.metric.unit))
        rows.append(cells)
    lines += _md_table(header, rows, set(range(2, len(header)))) + [""]
    lines += ["## Settings that differ", ""]
    if cmp.config_diff:
        lines += _md_table(["setting"] + cmp.names, [[k] + [_value(v) for v in vals] for k, vals in cmp.config_diff])
    else:
        lines.append("None: every run ran with the same settings (as far as their sources say).")
    lines.append("")
    return "\n".join(lines)
