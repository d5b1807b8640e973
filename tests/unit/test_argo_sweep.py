"""The sweep text helpers (backends/argo/sweep.py) and the Workflow manifest (backends/argo/workflow.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from backends.argo.sweep import bar, detail_lines, progress_line
from backends.argo.workflow import build_workflow, check_model_version_id, label_value, parameters
from backends.events import Sweep
from config.durations import format_elapsed as fmt_duration
from config.errors import SweepdeckError


@pytest.mark.parametrize("seconds,text", [
    (None, "—"), (0, "0s"), (12.4, "12s"), (59.6, "1m00s"), (250, "4m10s"), (3600, "1h00m"), (3720, "1h02m"),
    (90061, "1d01h"),
])
def test_fmt_duration(seconds, text):
    assert fmt_duration(seconds) == text


def test_bar_is_clamped_and_proportional():
    assert bar(0, 10) == "[..........]"
    assert bar(50, 10) == "[#####.....]"
    assert bar(100, 10) == "[##########]"
    assert bar(250, 4) == "[####]" and bar(-5, 4) == "[....]"
    assert len(bar(33.3)) == 32


def test_progress_line_counts_rate_and_eta():
    s = Sweep("mv1", total=9000, pending=6000, running=100, completed=2800, failed=100,
              configs_per_min=120.0, eta_s=3050)
    line = progress_line(s)
    assert line.startswith("[##########....................]  32.2%  2900/9000  ")
    assert "pending 6000  running 100  completed 2800  failed 100  120.0 configs/min  ETA 50m50s" in line
    assert progress_line(Sweep("mv1")).endswith("0.0 configs/min  ETA —") and " 0.0%  0/0" in progress_line(
        Sweep("mv1")
    )


def test_detail_lines_groups_stale_and_breakdown():
    started = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=130)).isoformat()
    s = Sweep(
        "mv1", total=10, failures=[{"error_message": f"err {i}", "count": 10 - i} for i in range(7)],
        stale=[{"id": 7, "workload_type": "qa", "started_at": started, "retry_count": 1}],
        by_workload=[{"workload_type": "qa", "pending": 1, "running": 1, "completed": 2, "failed": 1}],
        stale_after_min=120,
    )
    lines = detail_lines(s, limit=5)
    assert lines[0] == "Failures by error:" and lines[1] == "      10  err 0" and "  … 2 more groups" in lines
    stale = lines.index("Stale (running > 120 min): 1 — reset with `sweepdeck queue reset-stale`")
    assert lines[stale + 1].startswith("  #7 qa started 2h1") and lines[stale + 1].endswith("ago, retries 1")
    assert lines[-2] == "By workload:" and lines[-1] == "  qa                      3/5       60.0%  failed 1"
    assert detail_lines(Sweep("mv1")) == []


@pytest.mark.parametrize("good", ["llama3-70b-v2", "123e4567-e89b-12d3-a456-426614174000", "3", "mv_1.2:x"])
def test_model_version_ids_accepted(good):
    assert check_model_version_id(good) == good


@pytest.mark.parametrize("bad,hint",
                         [(None, "--model-version-id"), ("", "--model-version-id"), ("a/b", "letters"),
                          ("x y", "letters"), ("-x", "letters")])
def test_model_version_ids_refused(bad, hint):
    with pytest.raises(SweepdeckError) as exc:
        check_model_version_id(bad)
    assert hint in exc.value.hint


def test_manifest_keeps_generate_name_and_sets_parameters():
    wf = build_workflow(model_version_id="llama3-70b-v2", experiment_id="exp1", api_base_url="http://queue:8080/",
                        batch_size=25, max_parallel_pods=8, namespace="argo", image="ghcr.io/me/sweepdeck:1",
                        model="meta-llama/x")
    meta = wf["metadata"]
    assert "name" not in meta and meta["generateName"] == "model-benchmark-pipeline-v2-" and meta["namespace"] == "argo"
    assert (
        meta["labels"]["sweepdeck.io/experiment"] == "exp1"
        and meta["labels"]["sweepdeck.io/model-version"] == "llama3-70b-v2"
    )
    assert meta["annotations"]["sweepdeck.io/model-version-id"] == "llama3-70b-v2"
    p = parameters(wf)
    assert p["model-version-id"] == "llama3-70b-v2" and p["batch-size"] == "25" and p["max-parallel-pods"] == "8"
    assert (
        p["api-base-url"] == "http://queue:8080"
        and p["image"] == "ghcr.io/me/sweepdeck:1"
        and p["model"] == "meta-llama/x"
    )
    assert p["endpoint"] == "http://vllm:8000"  # not given: the template's default stays
    assert all(isinstance(v, str) for v in p.values()), "Argo parameters are strings"
    again = build_workflow(model_version_id="mv2", experiment_id="exp2", api_base_url="http://q:1")
    assert parameters(again)["model-version-id"] == "mv2" and p["model-version-id"] == "llama3-70b-v2", (
        "each build is a fresh copy"
    )


def test_manifest_label_skipped_for_ids_that_are_not_label_values():
    odd_id = "llama3:70b-v2"  # a usable model version id, but ':' is not allowed in a label value
    wf = build_workflow(model_version_id=odd_id, experiment_id="e", api_base_url="http://q:1")
    assert "sweepdeck.io/model-version" not in wf["metadata"]["labels"]
    assert wf["metadata"]["annotations"]["sweepdeck.io/model-version-id"] == odd_id
    assert label_value("ok-1.2") == "ok-1.2" and label_value("a:b") is None


@pytest.mark.parametrize("kwargs,message", [
    ({"batch_size": 0}, "batch_size"), ({"batch_size": 501}, "batch_size"),
    ({"max_parallel_pods": 0}, "max_parallel_pods"),
    ({"api_base_url": "queue:8080"}, "not an http(s) URL"),
    ({"api_base_url": "http://q:1; rm -rf /"}, "not an http(s) URL"),
])
def test_manifest_refuses_values_argo_or_the_queue_would_reject(kwargs, message):
    args = {"model_version_id": "mv1", "experiment_id": "e", "api_base_url": "http://q:1", **kwargs}
    with pytest.raises(SweepdeckError) as exc:
        build_workflow(**args)
    assert message in exc.value.message


def test_detail_lines_break_down_by_priority_in_priority_order():
    rows = [{"priority": p, "pending": 2, "running": 0, "completed": 1, "failed": 1} for p in (210, 100, 105)]
    lines = detail_lines(Sweep("mv1", total=12, by_priority=rows), limit=5)
    start = lines.index("By priority:")
    assert [line.split()[0] for line in lines[start + 1:]] == ["100", "105", "210"]
    assert lines[start + 1] == "  100                     2/4       50.0%  failed 1"
    many = [{"priority": p, "pending": 1} for p in range(30)]
    lines = detail_lines(Sweep("mv1", total=30, by_priority=many), limit=5)
    assert len(lines) == 1 + 20 + 1 and lines[-1] == "  … 10 more priorities"


def test_node_lines_show_phase_duration_retries_and_message():
    from backends.argo.sweep import node_lines
    from backends.events import Phase

    wf = Phase("model-benchmark-pipeline-v2-abcde", "Running", "", kind="workflow", started=1000.0)
    nodes = [
        Phase("populate", "Succeeded", "", kind="node", started=1000.0, finished=1004.0),
        Phase("worker(0:0)", "Running", "", kind="node", started=1005.0, retries=1),
        Phase("worker(0:0)(0)", "Failed", "OOMKilled\n(exit code 137)", kind="node", started=1005.0, finished=1010.0),
        Phase("finalize", "Pending", "", kind="node"),
    ]
    lines = node_lines(wf, nodes, now=1100.0)
    assert lines[0] == "Workflow model-benchmark-pipeline-v2-abcde: Running (1m40s)"
    assert lines[1] == "Nodes:"
    assert lines[2] == "  populate        Succeeded       4s"
    assert lines[3] == "  worker(0:0)     Running      1m35s  retries 1"
    assert lines[4] == "  worker(0:0)(0)  Failed          5s  OOMKilled (exit code 137)"
    assert lines[5] == "  finalize        Pending          —"
    done = Phase("wf", "Failed", "child 'x' failed", kind="workflow", started=0.0, finished=62.0)
    assert node_lines(done, []) == ["Workflow wf: Failed (1m02s) — child 'x' failed"]
