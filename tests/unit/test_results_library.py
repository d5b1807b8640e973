"""Failure reasons, the JSON shape, compare, exports, import into the run store, the summary index."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest

from backends.results import ReportError, import_result, load_path, resolve
from backends.results.compare import compare, delta, verdict
from backends.results.export import compare_csv, compare_json, compare_markdown, export, result_csv
from backends.results.failures import Breakdown, reason_of
from backends.results.index import ResultsIndex, stamp, summary_for
from backends.results.library import load_run, slug
from backends.results.model import METRIC_BY_KEY, Dist, LoadPoint, Origin, Result, Setting
from backends.store import RunStore
from config.errors import SweepdeckError
from tests.support.reference import REPORTS

SWEEP = REPORTS / "guidellm" / "sweep" / "benchmarks.json"
CONSTANT = REPORTS / "guidellm" / "constant" / "benchmarks.json"
PERF = REPORTS / "inference-perf" / "shared-prefix-constant"
needs_reference = pytest.mark.skipif(not SWEEP.is_file(), reason=f"reference reports not found at {REPORTS}")


@pytest.mark.parametrize("message,status,reason", [
    ("HTTP 400: This model's maximum context length is 4096 tokens. However, you requested 4213 tokens.", 400,
     "HTTP 400: context length exceeded"),
    ("HTTP 503: Service Unavailable", 503, "HTTP 503: Service Unavailable"),
    ("HTTP 500: worker 17 died at step 3", 500, "HTTP 500: worker N died at step N"),
    ("timeout: no complete answer within 600 s", None, "timeout"),
    ("connection error: [Errno 111] Connection refused", None, "connection error"),
    ("stream broken: the stream ended before 'data: [DONE]'", None, "stream broken"),
    ("CUDA out of memory. Tried to allocate 2.00 GiB", None, "out of memory"),
])
def test_failure_reasons_group_messages_that_differ_only_in_numbers(message, status, reason):
    assert reason_of(message, status) == reason


def test_breakdown_counts_largest_first_with_the_first_message_as_sample():
    b = Breakdown()
    b.add("HTTP 400: maximum context length is 4096 tokens. However, you requested 4100 tokens.")
    b.add("timeout: no complete answer within 60 s")
    b.add("HTTP 400: maximum context length is 4096 tokens. However, you requested 4500 tokens.")
    fs = b.failures()
    assert [(f.reason, f.count) for f in fs] == [("HTTP 400: context length exceeded", 2), ("timeout", 1)]
    assert "4100 tokens" in fs[0].sample and b.total == 3


def _result(name: str, points: list[tuple[str, float, float]], **spec) -> Result:
    """A result with load points (label, output tok/s, TTFT p50)."""
    lps = [LoadPoint(label, rate=float(i + 1), requests_ok=10, output_tok_s=tok, req_s=tok / 100,
                     ttft_ms=Dist(ttft, ttft, ttft * 1.5, ttft * 2), e2e_ms=Dist(ttft * 10, ttft * 10, None, None))
           for i, (label, tok, ttft) in enumerate(points)]
    return Result(name, Origin("guidellm", "0.8.1", [f"/x/{name}.json"]), lps,
                  spec={k.replace("__", "."): Setting(v, "user") for k, v in spec.items()})


def test_to_dict_is_exactly_the_issue_shape():
    r = _result("a", [("constant 1/s", 100.0, 50.0)], engine__tp=1)
    r.load_points.append(LoadPoint("synchronous", concurrency=1))
    d = r.to_dict()
    assert list(d) == ["name", "source", "load_points", "failures", "spec"]
    assert d["source"] == {"harness": "guidellm", "version": "0.8.1", "files": ["/x/a.json"]}
    assert list(d["load_points"][0]) == ["label", "rate", "requests_ok", "requests_failed", "ttft_ms", "itl_ms",
                                         "tpot_ms", "e2e_ms", "output_tok_s", "req_s"]
    assert "concurrency" in d["load_points"][1] and "rate" not in d["load_points"][1]
    assert d["load_points"][0]["ttft_ms"] == {"mean": 50.0, "p50": 50.0, "p90": 75.0, "p99": 100.0}
    assert d["load_points"][0]["itl_ms"] == {"mean": None, "p50": None, "p90": None, "p99": None}
    assert d["spec"] == {"engine.tp": {"value": 1, "source": "user"}}
    r.spec = None
    assert r.to_dict()["spec"] is None


def test_delta_and_verdict_follow_each_metrics_direction():
    ttft, tok = METRIC_BY_KEY["ttft_ms.p50"], METRIC_BY_KEY["output_tok_s"]
    assert delta(100.0, 80.0) == pytest.approx(-20.0)
    assert verdict(ttft, -20.0) == "better" and verdict(tok, -20.0) == "worse"
    assert verdict(ttft, 0.2) == "same" and verdict(tok, None) is None
    assert delta(0.0, 5.0) is None and delta(None, 5.0) is None


def test_compare_three_runs_by_label_with_config_diff():
    a = _result("tp1", [("c 1/s", 100.0, 50.0), ("c 2/s", 200.0, 60.0)], engine__tp=1, model="m",
                engine__max_num_seqs=256)
    b = _result("tp2", [("c 1/s", 110.0, 40.0), ("c 2/s", 150.0, 90.0)], engine__tp=2, model="m",
                engine__max_num_seqs=256)
    c = _result("tp4", [("c 2/s", 300.0, 30.0), ("c 1/s", 100.0, 50.0)], engine__tp=4, model="m",
                engine__max_num_seqs=128, guidellm__target="http://x")  # only this run reports it: nothing to differ
    cmp = compare([a, b, c])
    assert cmp.matched_by == "label" and cmp.points == ["c 1/s", "c 2/s"]
    row = next(r for r in cmp.rows if r.point == "c 2/s" and r.metric.key == "output_tok_s")
    assert row.values == [200.0, 150.0, 300.0]
    assert row.deltas[0] is None and row.deltas[1] == pytest.approx(-25.0) and row.deltas[2] == pytest.approx(50.0)
    assert row.verdicts == [None, "worse", "better"]
    ttft = next(r for r in cmp.rows if r.point == "c 2/s" and r.metric.key == "ttft_ms.p50")
    assert ttft.verdicts == [None, "worse", "better"]  # 90 ms is worse than 60; 30 is better
    same = next(r for r in cmp.rows if r.point == "c 1/s" and r.metric.key == "output_tok_s")
    assert same.verdicts[2] == "same"
    assert cmp.config_diff == [("engine.tp", [1, 2, 4]), ("engine.max_num_seqs", [256, 256, 128])]
    b.spec["workload.rate"] = Setting(2.0, "user")
    c.spec["workload.rate"] = Setting(4.0, "user")
    assert ("workload.rate", [None, 2.0, 4.0]) in compare([a, b, c]).config_diff


def test_compare_by_position_when_labels_differ_and_bounds():
    a = _result("a", [("constant 12.75/s", 700.0, 45.0), ("constant 24.5/s", 1300.0, 46.0)])
    b = _result("b", [("constant 13/s", 720.0, 44.0)])
    cmp = compare([a, b])
    assert cmp.matched_by == "position" and cmp.points == ["#1 constant 12.75/s", "#2 constant 24.5/s"]
    missing = next(r for r in cmp.rows if r.point.startswith("#2") and r.metric.key == "output_tok_s")
    assert missing.values == [1300.0, None] and missing.deltas == [None, None]
    with pytest.raises(SweepdeckError, match="2 to 8"):
        compare([a])
    with pytest.raises(SweepdeckError, match="2 to 8"):
        compare([a] * 9)


def test_compare_exports():
    a = _result("a", [("c 1/s", 100.0, 50.0)], engine__tp=1)
    b = _result("b", [("c 1/s", 120.0, 40.0)], engine__tp=2)
    cmp = compare([a, b])
    data = json.loads(compare_json(cmp))
    row = next(r for r in data["rows"] if r["metric"] == "output_tok_s")
    assert data["baseline"] == "a" and row["values"] == [100.0, 120.0]
    assert row["delta_pct"] == [None, pytest.approx(20.0)]
    assert row["verdict"] == [None, "better"] and data["config_diff"] == {"engine.tp": [1, 2]}
    rows = list(csv.reader(io.StringIO(compare_csv(cmp))))
    assert rows[0] == ["load_point", "metric", "a", "b", "b delta_pct", "b verdict"]
    tok = next(r for r in rows if r[1] == "output_tok_s")
    assert tok[:4] == ["c 1/s", "output_tok_s", "100.0", "120.0"] and tok[5] == "better"
    md = compare_markdown(cmp)
    assert "| c 1/s | output tok/s | 100.0 | 120.0 (+20.0% ▲ better) |" in md
    assert "| engine.tp | 1 | 2 |" in md


@needs_reference
def test_result_exports_real_report():
    r = load_path(SWEEP)
    rows = list(csv.DictReader(io.StringIO(result_csv(r))))
    assert [row["label"] for row in rows] == [p.label for p in r.load_points]
    assert float(rows[2]["rate"]) == 12.75 and rows[0]["concurrency"] == "1" and rows[0]["rate"] == ""
    assert float(rows[0]["ttft_ms_p99"]) == r.load_points[0].ttft_ms.p99
    assert json.loads(export(r, "json")) == json.loads(json.dumps(r.to_dict()))
    md = export(r, "md")
    assert md.startswith("# Results: sweep") and "| constant 48/s | 48 req/s | 329 | 0 |" in md
    assert "## Configuration" in md and "| model | meta-llama/Llama-3.1-8B-Instruct | guidellm report |" in md


# ------------------------------------------------------------------- import


@needs_reference
def test_import_stores_a_run_that_lists_like_any_other(tmp_path):
    store = RunStore(tmp_path / "state")
    run_id, r = import_result(SWEEP, None, store)
    assert run_id == "sweep" and r.name == "sweep"  # benchmarks.json says nothing; its directory does
    record = store.get(run_id)
    assert record.backend == "import" and record.state == "succeeded" and not record.live
    assert record.model == "meta-llama/Llama-3.1-8B-Instruct"
    assert record.meta["imported_from"] == str(SWEEP) and record.meta["harness"] == "guidellm 0.8.1"
    stored = record.path / "results" / "benchmarks.json"
    assert stored.read_bytes() == SWEEP.read_bytes()
    assert r.origin.files == [str(stored)] and len(r.load_points) == 6
    # a second import of the same file gets a free id; a directory keeps its layout
    again, _ = import_result(SWEEP, None, store)
    assert again == "sweep-2"
    perf_id, perf = import_result(PERF, "prefix-run", store)
    assert perf_id == "prefix-run" and [p.label for p in perf.load_points] == ["stage 0 4/s", "stage 1 8/s"]
    assert [r.id for r in store.list()][:1] == ["prefix-run"]
    assert resolve("prefix-run", store).load_points[1].rate == 8.0


@pytest.mark.parametrize("content", [b"", b'{"benchmarks": [', b"not json"])
def test_failed_import_leaves_the_run_store_untouched(tmp_path, content):
    state = tmp_path / "state"
    store = RunStore(state)
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    with pytest.raises(ReportError) as info:
        import_result(bad, None, store)
    assert str(bad) in info.value.message
    assert not state.exists()


@needs_reference
def test_import_name_must_be_free_and_dns_safe(tmp_path):
    store = RunStore(tmp_path / "state")
    import_result(CONSTANT, "c1", store)
    before = sorted(p.name for p in store.root.parent.iterdir())
    with pytest.raises(SweepdeckError, match="already used"):
        import_result(CONSTANT, "c1", store)
    with pytest.raises(SweepdeckError, match="not usable as a run id"):
        import_result(CONSTANT, "My Run!", store)
    assert sorted(p.name for p in store.root.parent.iterdir()) == before
    assert slug("My Run!.json") == "my-run-json"


def test_run_without_results_says_so(tmp_path):
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "meta.json").write_text(json.dumps({"id": "r1", "backend": "local", "state": "failed"}))
    with pytest.raises(SweepdeckError, match="has no results \\(failed\\)"):
        load_run(run)


def test_where_a_runs_results_live_comes_from_its_data(tmp_path):
    """The screens ask results_place (and Origin.live), never a backend's name."""
    from backends.results.library import IN_FILES, IN_QUEUE, has_results, results_place
    from backends.results.model import QUEUE_HARNESS

    def run(name: str, backend: str, files: bool) -> Path:
        path = tmp_path / "runs" / name
        path.mkdir(parents=True)
        (path / "meta.json").write_text(json.dumps({"id": name, "backend": backend, "state": "succeeded"}))
        if files:
            (path / "results").mkdir()
            (path / "results" / "results.json").write_text("{}")
        return path

    queue_sweep, copied, local, empty = (run("q", "argo", False), run("c", "argo", True), run("l", "local", True),
                                         run("e", "local", False))
    assert results_place(queue_sweep) == IN_QUEUE and has_results(queue_sweep)
    assert results_place(copied) == IN_FILES  # its results were copied here: read (and summarised) like any files
    assert results_place(local, {"backend": "local"}) == IN_FILES
    assert results_place(empty) is None and not has_results(empty)
    assert Origin(QUEUE_HARNESS).live and not Origin("guidellm", "0.8.1").live


def test_resolve_unknown_and_bad_queue_address(tmp_path):
    store = RunStore(tmp_path / "state")
    with pytest.raises(SweepdeckError, match="No saved run or file 'nope'"):
        resolve("nope", store)
    with pytest.raises(SweepdeckError, match="not a queue address"):
        resolve("queue:sweep-1", store)


# -------------------------------------------------------------------- index


@needs_reference
def test_index_caches_summaries_until_the_files_change(tmp_path):
    store = RunStore(tmp_path / "state")
    run_id, _ = import_result(CONSTANT, "c1", store)
    run_dir = store.root / run_id
    index = ResultsIndex.open(tmp_path / "state")
    calls = []

    def load(path: Path) -> Result:
        calls.append(path)
        return load_run(path)

    summary = summary_for(index, run_dir, load)
    assert summary["points"] == 1 and summary["ok"] == 90 and summary["harness"] == "guidellm 0.8.1"
    assert summary["best_tok_s"] == pytest.approx(576.0)
    index.save()
    again = ResultsIndex.open(tmp_path / "state")
    assert summary_for(again, run_dir, load) == summary and len(calls) == 1
    stored = run_dir / "results" / "benchmarks.json"
    stored.write_bytes(b"")
    os.utime(stored, ns=(1, 1))
    broken = summary_for(again, run_dir, load)
    assert len(calls) == 2 and "is empty" in broken["error"]
    assert stamp(run_dir)[0][0] == "results/benchmarks.json"


# -------------------------------------------------------------------- queue


def test_queue_client_sends_the_bearer_token_and_pages():
    import httpx

    from backends.results import queue as q

    seen = []
    configs = [{"id": i, "workload_type": "qa", "sequence_length": 64, "batch_size": 1 + i % 2, "hardware_config_id": 1,
                "framework_id": 1 + i // 2, "status": "completed"} for i in range(4)]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, request.url.params.get("offset"), request.headers.get("authorization")))
        if request.url.path.endswith("/configs/mv1"):
            offset = int(request.url.params["offset"])
            return httpx.Response(200, json=configs[offset:offset + q.PAGE])
        metrics = {"completed": 2, "failed": 0, "ttft_ms": {"mean": 5.0, "median": 4.0, "p90": 6.0, "p99": 9.0},
                   "requests_per_s": 3.0, "output_tokens_per_s": 90.0}
        rows = [{"id": i, "config_id": i, "metrics": metrics} for i in range(4)]
        offset = int(request.url.params["offset"])
        return httpx.Response(200, json=rows[offset:offset + q.PAGE])

    old = q.PAGE
    q.PAGE = 3  # two pages of configs
    try:
        with q.QueueClient("http://queue:8080", token="s3cret", transport=httpx.MockTransport(handler)) as client:
            result = client.result("mv1")
    finally:
        q.PAGE = old
    assert {auth for _, _, auth in seen} == {"Bearer s3cret"}
    assert [(path, off) for path, off, _ in seen][:2] == [("/api/v1/workflow/configs/mv1", "0"),
                                                         ("/api/v1/workflow/configs/mv1", "3")]
    # two configs share each (workload, seq, batch) cell: hardware/framework tell them apart
    assert [p.label for p in result.load_points] == ["qa seq 64 batch 1 hw1 fw1", "qa seq 64 batch 1 hw1 fw2",
                                                     "qa seq 64 batch 2 hw1 fw1", "qa seq 64 batch 2 hw1 fw2"]
    assert result.load_points[0].ttft_ms == Dist(5.0, 4.0, 6.0, 9.0) and result.load_points[0].output_tok_s == 90.0


def test_queue_client_refused_asks_for_a_token():
    import httpx

    from backends.results.queue import QueueClient

    transport = httpx.MockTransport(lambda request: httpx.Response(401, json={"detail": "Not authenticated"}))
    with QueueClient("http://queue:8080", transport=transport) as client, \
            pytest.raises(SweepdeckError, match="refused the request \\(HTTP 401\\)") as info:
        client.result("mv1")
    assert "--queue-token" in info.value.hint
