"""Harness reports → per-benchmark summary rows, and the headless table that prints them.

The fixtures under tests/fixtures/tekton/reports/ are in the real formats:
guidellm 0.3 (``args.strategy``, ``request_totals`` on the benchmark), guidellm
0.4 (``config.strategy``, ``metrics.request_totals``, ``percentiles.p50``) and
inference-perf lifecycle reports (latencies in seconds).
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

from backends.tekton.reports import guidellm_rows, summarize

REPORTS = Path(__file__).resolve().parents[1] / "fixtures" / "tekton" / "reports"


def _copy(tmp_path: Path, *names: str, under: str = "") -> list[Path]:
    d = tmp_path / under if under else tmp_path
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names:
        shutil.copy(REPORTS / name, d / name)
        out.append(d / name)
    return out


def test_guidellm_03_report(tmp_path):
    files = _copy(tmp_path, "guidellm-0.3-benchmarks.json")
    files[0].rename(tmp_path / "guidellm-results.json")
    s = summarize([tmp_path / "guidellm-results.json", tmp_path / "exp-config.json"])
    assert s["harness"] == "guidellm" and s["report"] == "guidellm-results.json"
    sync, const = s["benchmarks"]
    assert sync["name"] == "synchronous" and sync["rate"] is None
    assert (sync["completed"], sync["failed"]) == (300, 0)
    assert const["name"] == "constant@5/s" and const["rate"] == 5.0
    assert (const["completed"], const["failed"], const["incomplete"]) == (297, 2, 1)
    assert const["requests_per_s"] == pytest.approx(4.93) and const["output_tokens_per_s"] == pytest.approx(612.7)
    assert const["ttft_ms"] == pytest.approx({"mean": 61.5, "median": 58.0, "p99": 142.6})
    assert const["itl_ms"] == pytest.approx({"mean": 15.9, "median": 15.4, "p99": 24.8})
    # guidellm's request_latency is in seconds; the summary is in milliseconds
    assert const["latency_ms"] == pytest.approx({"mean": 2080.0, "median": 2010.0, "p99": 3120.0})


def test_guidellm_04_report_config_strategy_and_metrics_totals():
    import json

    rows = guidellm_rows(json.loads((REPORTS / "guidellm-0.4-benchmarks.json").read_text()))
    assert [r["name"] for r in rows] == ["constant@2/s", "constant@8/s"]
    assert (rows[1]["completed"], rows[1]["failed"], rows[1]["incomplete"]) == (280, 15, 5)
    assert rows[1]["ttft_ms"]["p99"] == pytest.approx(801.5) and rows[1]["itl_ms"]["median"] == pytest.approx(26.0)


def test_guidellm_median_falls_back_to_p50():
    report = {
        "benchmarks": [
            {
                "config": {"strategy": {"type_": "concurrent", "streams": 4}},
                "metrics": {
                    "request_totals": {"successful": 3},
                    "time_to_first_token_ms": {"successful": {"mean": 10.0, "percentiles": {"p50": 9.0, "p99": 20.0}}},
                },
            }
        ]
    }
    (row,) = guidellm_rows(report)
    assert row["name"] == "concurrent x4" and row["ttft_ms"] == {"mean": 10.0, "median": 9.0, "p99": 20.0}
    assert row["itl_ms"] == {"mean": None, "median": None, "p99": None} and row["requests_per_s"] is None


def test_inference_perf_stages_in_order_seconds_to_ms(tmp_path):
    files = _copy(tmp_path, "stage_1_lifecycle_metrics.json", "summary_lifecycle_metrics.json",
                  "stage_0_lifecycle_metrics.json",
                  under="treatment-0")
    s = summarize(files)
    assert s["harness"] == "inference-perf"
    assert [b["name"] for b in s["benchmarks"]] == ["treatment-0/stage 0@4/s", "treatment-0/stage 1@16/s"]
    stage1 = s["benchmarks"][1]
    assert (stage1["completed"], stage1["failed"]) == (1890, 30)
    assert stage1["requests_per_s"] == pytest.approx(15.2) and stage1["output_tokens_per_s"] == pytest.approx(3889.4)
    assert stage1["ttft_ms"] == pytest.approx({"mean": 312.7, "median": 267.5, "p99": 1404.1})
    assert stage1["itl_ms"]["p99"] == pytest.approx(73.3) and stage1["latency_ms"]["median"] == pytest.approx(7210.0)


def test_inference_perf_summary_only_and_nothing(tmp_path):
    (summary,) = _copy(tmp_path, "summary_lifecycle_metrics.json")
    s = summarize([summary])
    assert [b["name"] for b in s["benchmarks"]] == ["summary"] and s["benchmarks"][0]["completed"] == 2370
    junk = tmp_path / "results.json"
    junk.write_text("{not json")
    assert summarize([junk, tmp_path / "vllm.log"]) == {}


def test_headless_summary_prints_every_benchmark_row(tmp_path):
    from backends.session import SessionResult
    from tui.headless import print_summary_table

    files = _copy(tmp_path, "guidellm-0.3-benchmarks.json", under="exp1-2")
    ip = _copy(tmp_path, "stage_0_lifecycle_metrics.json", "stage_1_lifecycle_metrics.json", under="exp1-4")
    results = {"exp1-2": {"files": 1, **summarize(files)}, "exp1-4": {"files": 2, **summarize(ip)},
               "exp1-8": {"error": "no such directory"}}
    out = io.StringIO()
    print_summary_table(out, SessionResult("succeeded", "PipelineRun exp1: Succeeded"),
                        {"reason": "Succeeded", "results": results})
    text = out.getvalue()
    assert "Benchmarks (guidellm, inference-perf)" in text
    row = next(line for line in text.splitlines() if "constant@5/s" in line)
    assert "exp1-2" in row and " 297 " in row and "4.93" in row and "612.7" in row
    assert "61.5 / 58.0 / 142.6" in row and "15.9 / 15.4 / 24.8" in row and "2010.0 / 3120.0" in row
    stage = next(line for line in text.splitlines() if "stage 1@16/s" in line)
    assert "312.7 / 267.5 / 1404.1" in stage and "1890" in stage
    assert any("exp1-8" in line and "not copied: no such directory" in line for line in text.splitlines())


REAL = Path("/work/shared/reference/benchmark-reports")


@pytest.mark.skipif(not REAL.is_dir(), reason=f"the reference reports are not at {REAL}")
def test_real_inference_perf_reports_in_the_campaign_layout_read_like_guidellm_rows(tmp_path):
    """inference-perf 0.7's own output (two constant stages), laid out as the campaign task leaves it:
    <branch>/results/{stage_N,summary}_lifecycle_metrics.json + config.yaml, <branch>/profile.yaml."""
    src = REAL / "inference-perf" / "shared-prefix-constant"
    results = tmp_path / "exp-1" / "results"
    results.mkdir(parents=True)
    for name in ("stage_0_lifecycle_metrics.json", "stage_1_lifecycle_metrics.json", "summary_lifecycle_metrics.json",
                 "config.yaml", "validation.json"):
        shutil.copy(src / name, results / name)
    files = sorted(p for p in (tmp_path / "exp-1").rglob("*") if p.is_file())
    s = summarize(files)
    assert s["harness"] == "inference-perf" and s["report"] == "stage_0_lifecycle_metrics.json"
    first, second = s["benchmarks"]
    assert (first["name"], first["rate"], first["completed"], first["failed"]) == ("constant@4/s (stage 0)", 4.0, 24, 0)
    assert (second["name"], second["completed"]) == ("constant@8/s (stage 1)", 48)
    assert first["requests_per_s"] == pytest.approx(3.7482, abs=1e-4)
    assert first["output_tokens_per_s"] == pytest.approx(119.943, abs=1e-3)
    assert first["ttft_ms"]["mean"] == pytest.approx(38.4295, abs=1e-3)  # seconds in the file
    assert first["latency_ms"]["p99"] == pytest.approx(508.827, abs=1e-3)
    # no config.yaml: the load type comes from the profile the run-workload task wrote
    (results / "config.yaml").unlink()
    (tmp_path / "exp-1" / "profile.yaml").write_text('{"load": {"type": "poisson", "stages": []}}')
    files = sorted(p for p in (tmp_path / "exp-1").rglob("*") if p.is_file())
    assert [b["name"] for b in summarize(files)["benchmarks"]] == ["poisson@4/s (stage 0)", "poisson@8/s (stage 1)"]


@pytest.mark.skipif(not REAL.is_dir(), reason=f"the reference reports are not at {REAL}")
def test_real_guidellm_08_report_rows():
    s = summarize([REAL / "guidellm" / "sweep" / "benchmarks.json"])
    assert s["harness"] == "guidellm"
    assert [b["name"] for b in s["benchmarks"]][:3] == ["synchronous", "throughput", "constant@12.75/s"]
    assert all(b["completed"] > 0 for b in s["benchmarks"])
