"""``sweepdeck results import|show|compare|plot|export`` as a user runs them (real processes, real reports)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.support.processes import ROOT
from tests.support.reference import REPORTS

SWEEP = REPORTS / "guidellm" / "sweep" / "benchmarks.json"
CONSTANT = REPORTS / "guidellm" / "constant" / "benchmarks.json"
PERF = REPORTS / "inference-perf" / "shared-prefix-constant"

pytestmark = pytest.mark.skipif(not SWEEP.is_file(), reason=f"reference reports not found at {REPORTS}")


def sd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "tui.cli", "results", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd or ROOT, timeout=180)


@pytest.fixture
def imported(tmp_path):
    """Three imported results: the guidellm sweep, the constant run, the inference-perf run."""
    for path, name in ((SWEEP, "sweep-a"), (CONSTANT, "const-b"), (PERF, "perf-c")):
        out = sd("import", path, "--name", name)
        assert out.returncode == 0, out.stderr
    return Path(os.environ["SWEEPDECK_STATE_DIR"]) / "runs"


def test_import_then_listed_with_the_runs(tmp_path):
    out = sd("import", SWEEP)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"Imported {SWEEP} as sweep: guidellm 0.8.1, 6 load point(s), 1,232 ok / 0 failed.")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = subprocess.run([sys.executable, "-m", "tui.cli", "runs", "--json"], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=60)
    (row,) = [json.loads(line) for line in runs.stdout.splitlines()]
    assert (row["id"], row["backend"], row["state"]) == ("sweep", "import", "succeeded")
    assert row["model"] == "meta-llama/Llama-3.1-8B-Instruct"


def test_import_of_a_bad_file_is_one_line_and_changes_nothing(tmp_path):
    bad = tmp_path / "guidellm-results.json"
    bad.write_bytes(SWEEP.read_bytes()[:10000])
    out = sd("import", bad)
    assert out.returncode == 2 and out.stdout == ""
    first, *rest = out.stderr.splitlines()
    assert first == (f"[ERROR] {bad}: is truncated (the JSON ends in the middle); expected a guidellm report "
                     "(0.3, 0.4+ or 0.8): a JSON object with a 'benchmarks' list.")
    assert len(rest) == 1 and "Traceback" not in out.stderr
    assert not Path(os.environ["SWEEPDECK_STATE_DIR"]).exists()


def test_show_text_json_csv(imported):
    text = sd("show", "sweep-a")
    assert text.returncode == 0, text.stderr
    assert "sweep-a · guidellm 0.8.1 · meta-llama/Llama-3.1-8B-Instruct" in text.stdout
    assert "constant 48/s" in text.stdout and "Failures: none." in text.stdout
    assert str(imported / "sweep-a" / "results" / "benchmarks.json") in text.stdout
    data = json.loads(sd("show", "perf-c", "--json").stdout)
    assert list(data) == ["name", "source", "load_points", "failures", "spec"]
    assert data["name"] == "perf-c" and data["source"]["harness"] == "inference-perf"
    assert [p["rate"] for p in data["load_points"]] == [4.0, 8.0]
    assert data["load_points"][0]["ttft_ms"]["p50"] == pytest.approx(38.2527, rel=1e-4)
    assert data["spec"]["model"] == {"value": "meta-llama/Llama-3.1-8B-Instruct", "source": "config.yaml"}
    rows = list(csv.DictReader(io.StringIO(sd("show", "const-b", "--csv").stdout)))
    assert len(rows) == 1 and rows[0]["label"] == "constant 10/s" and rows[0]["requests_ok"] == "90"


def test_show_a_path_directly_and_bad_input(tmp_path):
    out = sd("show", PERF, "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["name"] == "shared-prefix-constant"
    empty = tmp_path / "empty.json"
    empty.write_text("")
    out = sd("show", empty)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines()[0].startswith(f"[ERROR] {empty}: is empty; expected")
    out = sd("show", "no-such-run")
    assert out.returncode == 2 and "No saved run or file 'no-such-run'" in out.stderr


def test_compare_formats_and_a_bad_one_among_them(imported, tmp_path):
    out = sd("compare", "sweep-a", "const-b", "perf-c")
    assert out.returncode == 0, out.stderr
    assert "Baseline: sweep-a · load points matched by position" in out.stdout
    assert "▲" in out.stdout and "▼" in out.stdout and "Settings that differ" in out.stdout
    data = json.loads(sd("compare", "sweep-a", "const-b", "--json").stdout)
    assert data["runs"] == ["sweep-a", "const-b"] and data["baseline"] == "sweep-a"
    row = next(r for r in data["rows"] if r["metric"] == "output_tok_s")
    assert row["values"] == [64.0, 576.0] and row["verdict"] == [None, "better"]
    assert data["config_diff"]["workload.rate_type"] == ["sweep", "constant"]
    table = list(csv.reader(io.StringIO(sd("compare", "sweep-a", "const-b", "--csv").stdout)))
    assert table[0] == ["load_point", "metric", "sweep-a", "const-b", "const-b delta_pct", "const-b verdict"]
    md = sd("compare", "sweep-a", "perf-c", "--markdown").stdout
    assert md.startswith("# Compare: sweep-a, perf-c") and "## Settings that differ" in md
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    out = sd("compare", "sweep-a", bad, "perf-c", "--json")
    assert out.returncode == 2
    assert json.loads(out.stdout)["runs"] == ["sweep-a", "perf-c"]  # the rest still shows
    assert out.stderr.splitlines()[0].startswith(f"[ERROR] {bad}: is truncated")
    out = sd("compare", "sweep-a")
    assert out.returncode == 2 and "Compare takes 2 to 8 runs, got 1." in out.stderr


def test_plot_svg_and_png(imported, tmp_path):
    svg = tmp_path / "chart.svg"
    out = sd("plot", "sweep-a", "perf-c", "-o", svg)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"Wrote {svg} (sweep-a, perf-c)."
    root = ET.parse(svg).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    texts = {"".join(t.itertext()).strip() for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert {"Throughput vs latency", "TTFT and ITL percentiles vs load", "Output tok/s over time"} <= texts
    assert {"sweep-a", "perf-c", "sweep-a TTFT p50", "perf-c ITL p99"} <= texts  # the runs overlaid, in the legends
    png = tmp_path / "chart.png"
    assert sd("plot", "const-b", "-o", png).returncode == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    out = sd("plot", "const-b", "-o", tmp_path / "chart.gif")
    assert out.returncode == 2 and "FILE.svg or FILE.png" in out.stderr and not (tmp_path / "chart.gif").exists()


def test_export_formats(imported, tmp_path):
    md = tmp_path / "report.md"
    out = sd("export", "perf-c", "--format", "md", "-o", md)
    assert out.returncode == 0 and out.stdout.startswith(f"Wrote {md} (md, 2 load point(s))")
    assert md.read_text().startswith("# Results: perf-c") and "| stage 1 8/s | 8 req/s | 48 | 0 |" in md.read_text()
    assert json.loads(sd("export", "perf-c", "--format", "json").stdout) == \
        json.loads(sd("show", "perf-c", "--json").stdout)
    rows = list(csv.DictReader(io.StringIO(sd("export", "sweep-a", "--format", "csv").stdout)))
    assert [r["label"] for r in rows][:2] == ["synchronous", "throughput"]
    out = sd("export", "sweep-a", "--format", "xml")
    assert out.returncode == 2 and "invalid choice: 'xml'" in out.stderr
