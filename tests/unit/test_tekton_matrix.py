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
    # the upstream script's names: <task>-<i> in value order
    assert [t["name"] for t in ts] == ["run-experiment-0", "run-experiment-1", "run-experiment-2", "run-experiment-3"]
    for i, t in enumerate(ts):
        assert [p["name"] for p in t["matrix"]["params"]] == ["question_len", "output_len"]
        assert (
            params(t)["gaiePluginConfig"] == pr["spec"]["pipelineSpec"]["tasks"][0]["matrix"]["params"][0]["value"][i]
        )
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
    with pytest.raises(SweepdeckError,
                       match="is in finally; transform-pr only limits matrix tasks under pipelineSpec.tasks") as err:
        transform(pr, limit=2)
    assert "cannot have runAfter" in err.value.hint


def test_cli_transform(tmp_path, capsys):
    from tui.cli import main

    out = tmp_path / "pr.yaml"
    assert (
        main(
            [
                "tekton",
                "transform-pr",
                str(FIX / "tekton-poc-pipelinerun-matrix.yaml"),
                "--unroll",
                "gaiePluginConfig",
                "-n",
                "2",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    doc = yaml.safe_load(out.read_text())
    assert len(tasks(doc)) == 4 and tasks(doc)[2]["runAfter"] == [tasks(doc)[0]["name"], tasks(doc)[1]["name"]]
    assert "36 combinations" in capsys.readouterr().err


# ---------------------------------------------------------------- the upstream script's behaviour
# The PoC's transform-pr-parallel.py: tasks <task>-<i> in product order; no options = -n 1 barrier
# (sequential); --max-parallel N; '-' reads stdin / writes stdout. (Its algorithm, spelled out here:
# the script itself is not in the reference set.)


def upstream_combos(pr):
    matrix = tasks(pr)[0]["matrix"]["params"]
    import itertools

    return [list(zip([p["name"] for p in matrix], values, strict=True))
            for values in itertools.product(*[p["value"] for p in matrix])]


def test_no_options_is_upstream_default_sequential_expansion():
    pr = load("tekton-poc-pipelinerun-matrix.yaml")
    ts = tasks(transform(pr))
    assert [t["name"] for t in ts] == [f"run-experiment-{i}" for i in range(36)]
    assert "runAfter" not in ts[0]
    assert all(ts[i]["runAfter"] == [f"run-experiment-{i - 1}"] for i in range(1, 36))
    base = tasks(pr)[0]["params"]
    for t, combo in zip(ts, upstream_combos(pr), strict=True):
        assert t["params"] == base + [{"name": n, "value": v} for n, v in combo]
        assert "matrix" not in t


@pytest.mark.parametrize("n", [1, 3, 4, 36, 50])
def test_barrier_and_sliding_window_match_the_upstream_rule(n):
    pr = load("tekton-poc-pipelinerun-matrix.yaml")
    barrier = tasks(transform(pr, limit=n))
    for i, t in enumerate(barrier):
        batch = i // n
        want = [f"run-experiment-{j}" for j in range((batch - 1) * n, min(batch * n, 36))] if batch else None
        assert t.get("runAfter") == want, (n, i)
    sliding = tasks(transform(pr, limit=n, sliding_window=True))
    for i, t in enumerate(sliding):
        assert t.get("runAfter") == ([f"run-experiment-{i - n}"] if i >= n else None), (n, i)


def test_unroll_names_are_indexes_in_the_files_parameter_order():
    pr = load("tekton-poc-pipelinerun-matrix.yaml")
    # asked in another order: the file's order decides the combinations (as upstream)
    ts = tasks(transform(pr, unroll=["question_len", "gaiePluginConfig"], limit=12))
    assert [t["name"] for t in ts] == [f"run-experiment-{i}" for i in range(12)]
    assert [(params(t)["gaiePluginConfig"], params(t)["question_len"]) for t in ts[:4]] == [
        ("inf-sche-none.yaml", "100"), ("inf-sche-none.yaml", "300"), ("inf-sche-none.yaml", "1000"),
        ("inf-sche-prefix.yaml", "100")]
    assert all("runAfter" not in t for t in ts)  # -n 12: all at once


def test_improvements_kept_matrix_task_not_first_and_include():
    pr = load("tekton-poc-pipelinerun-matrix.yaml")
    spec = pr["spec"]["pipelineSpec"]
    matrix_task = spec["tasks"][0]
    matrix_task["runAfter"] = ["prepare"]
    spec["tasks"] = [{"name": "prepare", "taskRef": {"name": "prepare"}}, matrix_task,
                     {"name": "report", "taskRef": {"name": "report"}, "runAfter": ["run-experiment"]}]
    ts = tasks(transform(pr, limit=2))
    assert ts[0]["name"] == "prepare" and ts[-1]["name"] == "report"
    assert ts[1]["runAfter"] == ["prepare"] and ts[2]["runAfter"] == ["prepare"]  # the first batch keeps its runAfter
    assert ts[-1]["runAfter"] == [f"run-experiment-{i}" for i in range(36)]
    subset = tasks(transform(load("tekton-poc-pipelinerun-matrix-subset.yaml")))
    assert [t["name"] for t in subset] == ["run-experiment-0", "run-experiment-1"]


def test_new_names_must_not_collide():
    pr = load("tekton-poc-pipelinerun-matrix.yaml")
    pr["spec"]["pipelineSpec"]["tasks"].append({"name": "run-experiment-3", "taskRef": {"name": "x"}})
    with pytest.raises(SweepdeckError, match="run-experiment-3 are already used"):
        transform(pr)


def test_cli_stdin_stdout_and_max_parallel(monkeypatch, capsys):
    import io

    from tui.cli import main

    text = (FIX / "tekton-poc-pipelinerun-matrix.yaml").read_text()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    assert main(["tekton", "transform-pr", "-", "--max-parallel", "4", "--sliding-window", "-o", "-"]) == 0
    captured = capsys.readouterr()
    doc = yaml.safe_load(captured.out)
    assert tasks(doc)[4]["runAfter"] == ["run-experiment-0"] and len(tasks(doc)) == 36
    assert "36 combinations; 36 tasks" in captured.err
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"")))
    assert main(["tekton", "transform-pr", "-"]) == 2
    assert "standard input is not a PipelineRun" in capsys.readouterr().err
