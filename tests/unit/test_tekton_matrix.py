"""transform-pr on the Tekton PoC's matrix PipelineRuns (unroll, barrier, sliding window)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from backends.tekton.matrix import combinations, count, transform
from config.errors import SweepdeckError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "tekton"


def load(name):
    return yaml.safe_load((FIX / name).read_text())


def tasks(pr):
    return pr["spec"]["pipelineSpec"]["tasks"]


def params(task):
    return {p["name"]: p["value"] for p in task.get("params") or []}


def test_count_matrix_and_include_forms():
    assert count(load("tekton-poc-pipelinerun-matrix.yaml")) == 36
    assert count(load("tekton-poc-pipelinerun-matrix.v0-abc04193.yaml")) == 36
    assert count(load("tekton-poc-pipelinerun-matrix-subset.yaml")) == 2
    combos = combinations(tasks(load("tekton-poc-pipelinerun-matrix.yaml"))[0]["matrix"])
    assert [c["value"] for c in combos[0][1]] == ["inf-sche-none.yaml", "100", "100"]
    assert [c["value"] for c in combos[1][1]] == ["inf-sche-none.yaml", "100", "300"]


def test_unroll_one_parameter_keeps_matrix_over_the_rest_sequentially():
    pr = load("tekton-poc-pipelinerun-matrix.yaml")
    out = transform(pr, unroll=["gaiePluginConfig"])
    ts = tasks(out)
    assert [t["name"] for t in ts] == [
        "run-experiment-inf-sche-none-yaml", "run-experiment-inf-sche-prefix-yaml",
        "run-experiment-inf-sche-kv-yaml", "run-experiment-inf-sche-queue-yaml",
    ]
    for i, t in enumerate(ts):
        assert [p["name"] for p in t["matrix"]["params"]] == ["question_len", "output_len"]
        assert params(t)["gaiePluginConfig"] == pr["spec"]["pipelineSpec"]["tasks"][0]["matrix"]["params"][0]["value"][i]
        assert t.get("runAfter") == ([ts[i - 1]["name"]] if i else None)
    assert tasks(pr)[0]["name"] == "run-experiment"  # input untouched


def test_unroll_two_parameters_with_limit():
    out = transform(load("tekton-poc-pipelinerun-matrix.yaml"), unroll=["gaiePluginConfig", "question_len"], limit=3)
    ts = tasks(out)
    assert len(ts) == 12
    assert all([p["name"] for p in t["matrix"]["params"]] == ["output_len"] for t in ts)
    assert all("runAfter" not in t for t in ts[:3])
    assert ts[3]["runAfter"] == [t["name"] for t in ts[0:3]]  # barrier


def test_full_expansion_barrier_and_sliding_window():
    pr = load("tekton-poc-pipelinerun-matrix.yaml")
    barrier = tasks(transform(pr, limit=4))
    assert len(barrier) == 36 and all("matrix" not in t for t in barrier)
    assert params(barrier[0])["gaiePluginConfig"] == "inf-sche-none.yaml" and params(barrier[0])["output_len"] == "100"
    assert barrier[4]["runAfter"] == [t["name"] for t in barrier[0:4]]
    assert barrier[9]["runAfter"] == [t["name"] for t in barrier[4:8]]
    sliding = tasks(transform(pr, limit=4, sliding_window=True))
    assert "runAfter" not in sliding[3]
    assert sliding[4]["runAfter"] == [sliding[0]["name"]]
    assert sliding[35]["runAfter"] == [sliding[31]["name"]]
    assert len({t["name"] for t in sliding}) == 36


def test_include_subset_expansion():
    out = transform(load("tekton-poc-pipelinerun-matrix-subset.yaml"), limit=1)
    ts = tasks(out)
    assert len(ts) == 2 and ts[1]["runAfter"] == [ts[0]["name"]]
    assert '"question_len": 300' in params(ts[1])["treatment"]


def test_errors():
    pr = load("tekton-poc-pipelinerun-matrix.yaml")
    with pytest.raises(SweepdeckError, match="not a matrix parameter"):
        transform(pr, unroll=["nosuch"])
    with pytest.raises(SweepdeckError, match="at least 1"):
        transform(pr, limit=0)
    with pytest.raises(SweepdeckError, match="Nothing to do"):
        transform(pr)
    with pytest.raises(SweepdeckError, match="pipelineSpec"):
        transform({"spec": {"pipelineRef": {"name": "x"}}}, limit=1)


def test_pipelineref_and_finally_matrix_are_refused_saying_what_works():
    with pytest.raises(SweepdeckError, match="refers to its Pipeline \\(pipelineRef 'x'\\)") as err:
        transform({"spec": {"pipelineRef": {"name": "x"}}}, limit=1)
    assert "spec.pipelineSpec" in err.value.hint
    with pytest.raises(SweepdeckError, match="cluster resolver"):
        transform({"spec": {"pipelineRef": {"resolver": "cluster", "params": []}}}, limit=1)
    assert count({"spec": {"pipelineRef": {"name": "x"}}}) == 0  # run-pr can still launch it
    pr = load("tekton-poc-pipelinerun-matrix.yaml")
    spec = pr["spec"]["pipelineSpec"]
    spec["finally"] = spec.pop("tasks")
    spec["tasks"] = [{"name": "prepare", "taskRef": {"name": "prepare"}}]
    with pytest.raises(SweepdeckError, match="is in finally; transform-pr only limits matrix tasks under pipelineSpec.tasks") as err:
        transform(pr, limit=2)
    assert "cannot have runAfter" in err.value.hint


def test_cli_transform(tmp_path, capsys):
    from tui.cli import main

    out = tmp_path / "pr.yaml"
    assert main(["tekton", "transform-pr", str(FIX / "tekton-poc-pipelinerun-matrix.yaml"), "--unroll", "gaiePluginConfig", "-n", "2", "-o", str(out)]) == 0
    doc = yaml.safe_load(out.read_text())
    assert len(tasks(doc)) == 4 and tasks(doc)[2]["runAfter"] == [tasks(doc)[0]["name"], tasks(doc)[1]["name"]]
    assert "36 combinations" in capsys.readouterr().err
