"""Every results source read into the one model, against real files.

* guidellm 0.8.1 and inference-perf 0.7.0: the real reports in
  ../shared/reference/benchmark-reports/ (read there, never copied);
* guidellm 0.3 and 0.4: the reports in tests/fixtures/tekton/reports/ (the
  layouts the BLIS results viewer documents; no real 0.3/0.4 file is in the
  reference set);
* sweepdeck's load generator: a results.json written by the real
  WorkloadRunner against the real simulator app (in-process), where one of 40
  prompts is longer than the context (HTTP 400);
* BLIS directories: ``<experiment-id>-<tp>/`` laid out as the Tekton backend
  copies them from data-pvc, holding those real reports.

Hand-made files here are for the error cases only.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from backends.results import (
    ReportError,
    blis,
    guidellm,
    inference_perf,
    load_path,
    loadgen,
)
from backends.results.model import Dist
from tests.support.reference import REPORTS

REF = REPORTS
SWEEP = REF / "guidellm" / "sweep" / "benchmarks.json"
CONSTANT = REF / "guidellm" / "constant" / "benchmarks.json"
PERF = REF / "inference-perf" / "shared-prefix-constant"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tekton" / "reports"

pytestmark = pytest.mark.skipif(not SWEEP.is_file(), reason=f"reference reports not found at {REF}")


def _raw(path: Path) -> dict:
    return json.loads(path.read_text())


# ------------------------------------------------------------------ guidellm


def test_guidellm_08_sweep_every_benchmark_in_order_with_its_strategy():
    r = guidellm.load(SWEEP)
    raw = _raw(SWEEP)
    assert r.origin.harness == "guidellm" and r.origin.version == "0.8.1" and r.origin.files == [str(SWEEP)]
    assert [p.label for p in r.load_points] == [
        "synchronous", "throughput", "constant 12.75/s", "constant 24.5/s", "constant 36.25/s", "constant 48/s"]
    sync, thr, first = r.load_points[0], r.load_points[1], r.load_points[2]
    assert (sync.concurrency, sync.rate) == (1, None)
    assert (thr.concurrency, thr.rate) == (64, None)  # config.strategy.max_concurrency
    assert (first.rate, first.concurrency) == (12.75, None)
    for p, b in zip(r.load_points, raw["benchmarks"], strict=True):
        m = b["metrics"]
        totals = m["request_totals"]
        assert p.requests_ok == totals["successful"] and p.requests_failed == totals["errored"]
        assert p.incomplete == m["request_totals"]["incomplete"]
        ttft = m["time_to_first_token_ms"]["successful"]
        assert p.ttft_ms == Dist(ttft["mean"], ttft["median"], ttft["percentiles"]["p90"], ttft["percentiles"]["p99"])
        assert p.itl_ms.p99 == m["inter_token_latency_ms"]["successful"]["percentiles"]["p99"]
        assert p.tpot_ms.p50 == m["time_per_output_token_ms"]["successful"]["median"]
        # request_latency is in seconds; the model is in ms
        assert p.e2e_ms.p90 == pytest.approx(m["request_latency"]["successful"]["percentiles"]["p90"] * 1000)
        assert p.output_tok_s == m["output_tokens_per_second"]["successful"]["mean"]
        assert p.req_s == m["requests_per_second"]["successful"]["mean"]
    # the simulator's ITL is 15 ms and its TTFT ~46 ms at low load; latency grows with load
    assert 14 < sync.itl_ms.p50 < 16 and 40 < sync.ttft_ms.p50 < 50
    assert r.load_points[-1].e2e_ms.p50 > first.e2e_ms.p50
    assert r.requests_failed == 0 and r.failures == []
    assert r.model == "meta-llama/Llama-3.1-8B-Instruct"


def test_guidellm_08_spec_and_sampled_rows_note():
    r = guidellm.load(SWEEP)
    spec = {k: s.value for k, s in r.spec.items()}
    assert spec["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert spec["workload.rate_type"] == "sweep" and spec["workload.max_concurrency"] == 64
    assert (spec["workload.prompt_tokens"], spec["workload.output_tokens"]) == (256, 64)
    assert {s.source for s in r.spec.values()} == {"guidellm report"}
    # sample_size=20: the timeline is one step per benchmark, and the result says why
    assert "keeps 108 of 1232" in r.timeline_note
    assert r.timeline[0] == (0.0, 64.0) and max(v for _, v in r.timeline) == 3072.0


def test_guidellm_08_constant_rate():
    (p,) = guidellm.load(CONSTANT).load_points
    assert p.label == "constant 10/s" and p.rate == 10.0
    assert p.requests_ok == 90 and p.incomplete == 10 and p.req_s == pytest.approx(9.0)


@pytest.mark.parametrize("name,version,labels,failed", [
    ("guidellm-0.3-benchmarks.json", "0.3", ["synchronous", "constant 5/s"], [0, 2]),
    ("guidellm-0.4-benchmarks.json", "0.4.0", ["constant 2/s", "constant 8/s"], [0, 15]),
])
def test_guidellm_03_and_04_layouts(name, version, labels, failed):
    r = guidellm.load(FIXTURES / name)
    assert r.origin.version == version
    assert [p.label for p in r.load_points] == labels
    assert [p.requests_failed for p in r.load_points] == failed
    # these reports keep no errored rows: the breakdown says the messages are not in the file
    assert [(f.reason, f.count) for f in r.failures] == [("not sampled in the report", sum(failed))]
    assert r.load_points[-1].e2e_ms.mean > 1000  # request_latency seconds → ms


def test_guidellm_tolerates_kubectl_deleted_line(tmp_path):
    copied = tmp_path / "guidellm-results.json"
    copied.write_bytes(CONSTANT.read_bytes() + b'\npod "guidellm-results-copy" deleted\n')
    assert guidellm.load(copied).load_points[0].requests_ok == 90


def test_guidellm_failure_messages_from_errored_rows(tmp_path):
    """0.8 keeps an errored row's message in info.error; 0.3 in the row's own error field."""
    doc = _raw(CONSTANT)
    bench = doc["benchmarks"][0]
    row = bench["requests"]["successful"][0]
    errored = []
    for i in range(3):
        bad = json.loads(json.dumps(row))
        bad["info"]["error"] = ("HTTP 400: This model's maximum context length is 8192 tokens. "
                                f"However, you requested {8200 + i} tokens.")
        errored.append(bad)
    bench["requests"]["errored"] = errored
    bench["metrics"]["request_totals"]["errored"] = 5  # guidellm sampled 3 of 5
    path = tmp_path / "benchmarks.json"
    path.write_text(json.dumps(doc))
    r = guidellm.load(path)
    assert [(f.reason, f.count) for f in r.failures] == [
        ("HTTP 400: context length exceeded", 3), ("not sampled in the report", 2)]
    assert "8200 tokens" in r.failures[0].sample


# ------------------------------------------------------------ inference-perf


def test_inference_perf_stages_in_order_seconds_to_ms():
    r = inference_perf.load_dir(PERF)
    s0, s1 = _raw(PERF / "stage_0_lifecycle_metrics.json"), _raw(PERF / "stage_1_lifecycle_metrics.json")
    assert r.origin.harness == "inference-perf"
    assert [p.label for p in r.load_points] == ["stage 0 4/s", "stage 1 8/s"]
    for p, s in zip(r.load_points, (s0, s1), strict=True):
        lat = s["successes"]["latency"]
        assert p.rate == s["load_summary"]["requested_rate"]
        assert p.requests_ok == s["successes"]["count"] and p.requests_failed == s["failures"]["count"]
        assert p.ttft_ms.p50 == pytest.approx(lat["time_to_first_token"]["median"] * 1000)
        assert p.itl_ms.p99 == pytest.approx(lat["inter_token_latency"]["p99"] * 1000)
        assert p.tpot_ms.mean == pytest.approx(lat["time_per_output_token"]["mean"] * 1000)
        assert p.e2e_ms.p90 == pytest.approx(lat["request_latency"]["p90"] * 1000)
        assert p.output_tok_s == s["successes"]["throughput"]["output_tokens_per_sec"]
        assert p.req_s == s["successes"]["throughput"]["requests_per_sec"]
    assert 30 < r.load_points[0].ttft_ms.p50 < 50 and 14 < r.load_points[0].itl_ms.p50 < 17
    files = [Path(f).name for f in r.origin.files]
    assert files == ["config.yaml", "stage_0_lifecycle_metrics.json", "stage_1_lifecycle_metrics.json",
                     "per_request_lifecycle_metrics.json"]


def test_inference_perf_spec_and_timeline_from_per_request_rows():
    r = inference_perf.load_dir(PERF)
    spec = {k: s.value for k, s in r.spec.items()}
    assert spec["model"] == "meta-llama/Llama-3.1-8B-Instruct" and spec["workload.rate"] == [4.0, 8.0]
    assert spec["inference_perf.shared_prefix.output_len"] == 32
    assert r.spec["model"].source == "config.yaml"
    rows = _raw(PERF / "per_request_lifecycle_metrics.json")
    # every output token of the 72 requests is in the curve, once
    width = r.timeline[1][0] - r.timeline[0][0]
    total = sum(v * width for _, v in r.timeline)
    assert total == pytest.approx(sum(row["info"]["response_metrics"]["output_tokens"] for row in rows))
    assert r.failures == []


def test_inference_perf_summary_file_alone():
    r = load_path(PERF / "summary_lifecycle_metrics.json")
    (p,) = r.load_points
    summary = _raw(PERF / "summary_lifecycle_metrics.json")
    assert p.label == "summary" and p.requests_ok == summary["successes"]["count"] == 72


def test_inference_perf_failures_from_per_request_errors(tmp_path):
    d = tmp_path / "out"
    shutil.copytree(PERF, d)
    rows = _raw(d / "per_request_lifecycle_metrics.json")
    rows[0]["error"] = {"error_type": "ClientResponseError", "error_msg": "400, message='Bad Request'"}
    rows[1]["error"] = {"error_type": "TimeoutError", "error_msg": "request timed out after 30 s"}
    rows[2]["error"] = {"error_type": "TimeoutError", "error_msg": "request timed out after 31 s"}
    (d / "per_request_lifecycle_metrics.json").write_text(json.dumps(rows))
    r = inference_perf.load_dir(d)
    assert [f.count for f in r.failures] == [2, 1]
    assert "timed out" in r.failures[0].sample and r.failures[0].sample.startswith("TimeoutError")


def test_inference_perf_broken_stage_named_rest_shows(tmp_path):
    d = tmp_path / "out"
    shutil.copytree(PERF, d)
    text = (d / "stage_1_lifecycle_metrics.json").read_text()
    (d / "stage_1_lifecycle_metrics.json").write_text(text[: len(text) // 2])
    r = inference_perf.load_dir(d)
    assert [p.label for p in r.load_points] == ["stage 0 4/s"]
    (problem,) = r.problems
    assert "stage_1_lifecycle_metrics.json: is truncated" in problem and "inference-perf lifecycle report" in problem


# ------------------------------------------------------------------ loadgen


@pytest.fixture(scope="module")
def loadgen_run(tmp_path_factory) -> Path:
    """A run directory whose results.json the real load generator wrote against the real simulator app."""
    import asyncio

    from config.catalog import make_workload

    run = tmp_path_factory.mktemp("run") / "nov23-loadgen"
    results = run / "results" / "results.json"
    # 40 requests, prompts ~400 ± 60 tokens + 32 out against max_model_len 512: one does not fit
    profile = make_workload("custom", {"prompt_tokens": 400, "prompt_tokens_stdev": 60, "prompt_tokens_max": 600,
                                       "output_tokens": 32, "max_requests": 40, "rate_type": "concurrent",
                                       "max_concurrency": 4, "random_seed": 7})

    async def go():
        from tests.support.sim_server import run_workload

        await run_workload(profile, results, "--speed", "0", "--max-model-len", "512")

    asyncio.run(go())
    return run


def test_loadgen_results_json_one_point_and_the_context_length_failure(loadgen_run):
    path = loadgen_run / "results" / "results.json"
    doc = _raw(path)
    r = loadgen.load(path)
    assert r.name == "nov23-loadgen" and r.origin.harness == "sweepdeck-loadgen" and r.model == "org/model"
    (p,) = r.load_points
    assert (p.concurrency, p.rate) == (4, None) and p.label == doc["summary"]["mode"]
    assert (p.requests_ok, p.requests_failed) == (39, 1) == (doc["summary"]["completed"], doc["summary"]["failed"])
    (failure,) = r.failures
    assert failure.reason == "HTTP 400: context length exceeded" and failure.count == 1
    assert "maximum context length is 512 tokens" in failure.sample
    ok = sorted(row["ttft_ms"] for row in doc["requests"] if row["status"] == "ok")
    assert p.ttft_ms.mean == pytest.approx(sum(ok) / len(ok))
    assert p.ttft_ms.p50 <= p.ttft_ms.p90 <= p.ttft_ms.p99
    assert p.output_tok_s == doc["summary"]["output_tokens_per_s"] and p.req_s == doc["summary"]["requests_per_s"]


def test_loadgen_tpot_from_rows_when_absent_and_row_field_when_present(loadgen_run, tmp_path):
    doc = _raw(loadgen_run / "results" / "results.json")
    # a format-2 file has each row's own tpot_ms (last token − first token); take it away
    # to read the older form, where TPOT comes from the row's latency and TTFT
    for row in doc["requests"]:
        row.pop("tpot_ms", None)
    ok = [r for r in doc["requests"] if r["status"] == "ok"]
    expected = sorted((r["latency_ms"] - r["ttft_ms"]) / (r["output_tokens"] - 1) for r in ok)
    p = loadgen.from_document(doc, "x", "x").load_points[0]
    assert p.tpot_ms.mean == pytest.approx(sum(expected) / len(expected))
    # rows with their own tpot_ms (and a client-limited verdict): those are used as they are
    for row in doc["requests"]:
        row["tpot_ms"] = 7.0
    doc["summary"]["client_limited"] = True
    doc["summary"]["client"] = {"limited": True, "message": "event-loop lag p99 9.1 ms (limit 5 ms)"}
    doc["workers"] = 4
    r = loadgen.from_document(doc, "x", "x")
    assert r.load_points[0].tpot_ms == Dist(7.0, 7.0, 7.0, 7.0)
    assert any("client-limited: event-loop lag p99 9.1 ms" in n for n in r.notes)
    assert any("4 load-generator workers" in n for n in r.notes)


def test_loadgen_rows_kept_per_worker(loadgen_run):
    doc = _raw(loadgen_run / "results" / "results.json")
    rows = doc.pop("requests")
    doc["workers"] = [{"id": 0, "requests": rows[::2]}, {"id": 1, "requests": rows[1::2]}]
    r = loadgen.from_document(doc, "x", "x")
    assert r.load_points[0].ttft_ms == loadgen.from_document(_raw(loadgen_run / "results" / "results.json"), "x",
                                                               "x").load_points[0].ttft_ms
    assert any("2 load-generator workers" in n for n in r.notes) and r.failures[0].count == 1


def test_loadgen_summary_only(loadgen_run):
    doc = _raw(loadgen_run / "results" / "results.json")
    doc["requests"] = []
    p = loadgen.from_document(doc, "x", "x").load_points[0]
    assert p.ttft_ms.p50 == doc["summary"]["ttft_ms"]["median"] and p.ttft_ms.p99 == doc["summary"]["ttft_ms"]["p99"]
    r = loadgen.from_document(doc, "x", "x")
    assert [(f.reason, f.count) for f in r.failures] == [("HTTP 400: context length exceeded", 1)]


def test_run_directory_uses_the_saved_spec_with_sources(loadgen_run, tmp_path):
    from backends.results import load_run
    from config.catalog import load_catalogs
    from config.spec import Source, build_spec

    run = tmp_path / "runs" / "nov23-loadgen"
    shutil.copytree(loadgen_run, run)
    spec = build_spec(load_catalogs(), "qwen-1.5b", workload="chatbot", experiment_id="nov23-loadgen")
    spec = spec.set("engine.max_num_seqs", 128, Source.USER)
    (run / "spec.json").write_text(json.dumps(spec.to_dict()))
    (run / "meta.json").write_text(json.dumps({"id": "nov23-loadgen", "backend": "local", "state": "succeeded"}))
    r = load_run(run)
    assert r.name == "nov23-loadgen" and r.path == str(run)
    assert (r.spec["engine.max_num_seqs"].value, r.spec["engine.max_num_seqs"].source) == (128, "user")
    assert r.spec["engine.tp"].source in ("catalog", "default")
    assert r.spec["loadgen.base_url"].value.startswith("http://127.0.0.1:")  # what the report adds follows


# --------------------------------------------------------------------- BLIS


def _blis(tmp_path: Path) -> Path:
    """An experiment's branches as copied from data-pvc: TP 1 with guidellm, TP 2 with inference-perf."""
    root = tmp_path / "exp14"
    (root / "exp14-1").mkdir(parents=True)
    shutil.copy(SWEEP, root / "exp14-1" / "guidellm-results.json")
    (root / "exp14-1" / "exp-config.json").write_text('{"tp": 1}')
    shutil.copytree(PERF, root / "exp14-2" / "treatment-0")
    return root


def test_blis_branches_grouped_by_tp(tmp_path):
    root = _blis(tmp_path)
    assert blis.is_blis_dir(root)
    r = load_path(root)
    assert r.name == "exp14" and r.origin.harness == "blis/guidellm" and r.origin.version == "0.8.1"
    groups = [p.group for p in r.load_points]
    assert groups == ["TP 1"] * 6 + ["TP 2"] * 2
    assert r.load_points[0].label == "TP1 synchronous"
    assert r.load_points[6].label == "TP2 treatment-0/stage 0 4/s" and r.load_points[6].rate == 4.0
    assert r.spec["tp_sweep"].value == [1, 2] and r.spec["experiment_id"].value == "exp14"
    assert str(root / "exp14-1" / "exp-config.json") in r.origin.files


def test_blis_broken_branch_named_rest_shows(tmp_path):
    root = _blis(tmp_path)
    (root / "exp14-4").mkdir()
    (root / "exp14-4" / "guidellm-results.json").write_text("")
    r = load_path(root)
    assert {p.group for p in r.load_points} == {"TP 1", "TP 2"}
    (problem,) = r.problems
    assert "exp14-4/guidellm-results.json: is empty" in problem


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("content,problem", [
    (b"", "is empty"),
    (b"  \n\t\n", "is empty"),
    (None, "is truncated"),
    (b"<html>503 Service Unavailable</html>", "is not valid JSON"),
    (b'{"metadata": {"version": 7, "guidellm_version": "1.4.0"}, "benchmarks": []}', "schema version 7"),
    (b'{"benchmarks": [{"metrics": {}}]}', "without a strategy"),
    (b'{"hello": "world"}', "not a report sweepdeck knows"),
    (b"[1, 2, 3]", "not a report sweepdeck knows"),
])
def test_bad_reports_are_one_line_naming_the_file_and_what_was_expected(tmp_path, content, problem):
    path = tmp_path / "report.json"
    path.write_bytes(SWEEP.read_bytes()[:4000] if content is None else content)
    with pytest.raises(ReportError) as info:
        load_path(path)
    message = info.value.message
    assert "\n" not in message and message.startswith(f"{path}: ") and problem in message
    assert "expected" in message


def test_tekton_run_directory_reads_its_copied_blis_branches(tmp_path):
    """A Tekton run copies each TP branch from data-pvc into results/<run-id>-<tp>/ (see TektonBackend.copy_results)."""
    from backends.results import load_run

    run = tmp_path / "runs" / "exp14"
    branches = _blis(tmp_path)
    shutil.copytree(branches, run / "results")
    (run / "meta.json").write_text(json.dumps({"id": "exp14", "backend": "tekton", "state": "succeeded",
                                               "model": "Qwen/Qwen3-14B"}))
    r = load_run(run)
    assert r.name == "exp14" and r.origin.harness == "blis/guidellm"
    assert [p.group for p in r.load_points] == ["TP 1"] * 6 + ["TP 2"] * 2
    assert r.spec["tp_sweep"].value == [1, 2]
