"""``sweepdeck runs``: the table, --limit, --state, --json — and the same with 10,000 runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tui.cli import main

NOW = 1_795_423_200.0


def write_run(run_id: str, *, state: str, started: float, finished: float | None = None, **extra) -> Path:
    path = Path(os.environ["SWEEPDECK_STATE_DIR"]) / "runs" / run_id
    path.mkdir(parents=True)
    meta = {"id": run_id, "backend": "local", "model": "Qwen/Qwen2.5-Math-1.5B", "workload": "chatbot",
            "state": state, "started": started, **extra}
    if finished is not None:
        meta["finished"] = finished
    (path / "meta.json").write_text(json.dumps(meta))
    return path


def run(capsys, *args: str) -> tuple[int, list[str]]:
    code = main(["runs", *args])
    return code, capsys.readouterr().out.splitlines()


def test_the_table_lists_runs_newest_first_in_aligned_columns(capsys):
    write_run("old-run", state="failed", started=NOW - 7200, finished=NOW - 7000)
    write_run("new-run", state="succeeded", started=NOW - 60, finished=NOW - 30, model="")
    write_run("mid-run", state="cancelled", started=NOW - 3600, finished=NOW - 3505, parent="old-run")
    code, lines = run(capsys)
    assert code == 0
    assert lines[0].split() == ["ID", "BACKEND", "MODEL", "WORKLOAD", "STATE", "STARTED", "DURATION"]
    assert set(lines[1]) <= {"─", " "}
    assert [line.split()[0] for line in lines[2:]] == ["new-run", "mid-run", "old-run"]
    assert lines[2].split()[2] == "-" and lines[2].endswith("30s") and lines[3].endswith("1m35s")
    state_col = lines[0].index("STATE")  # every row's state starts under its header
    assert [line[state_col:].split()[0] for line in lines[2:]] == ["succeeded", "cancelled", "failed"]


def test_limit_state_and_json(capsys):
    for i in range(6):
        write_run(f"run-{i}", state=("succeeded", "failed")[i % 2], started=NOW - i * 60, finished=NOW - i * 60 + 5)
    assert [line.split()[0] for line in run(capsys, "--limit", "2")[1][2:]] == ["run-0", "run-1"]
    assert [line.split()[0] for line in run(capsys, "--state", "failed")[1][2:]] == ["run-1", "run-3", "run-5"]
    code, lines = run(capsys, "--json", "--state", "succeeded", "--limit", "2")
    rows = [json.loads(line) for line in lines]
    assert code == 0 and [r["id"] for r in rows] == ["run-0", "run-2"]
    assert rows[0]["duration_s"] == 5 and rows[0]["path"].endswith("/runs/run-0") and rows[0]["leftovers"] == []


def test_a_lost_run_says_what_it_may_have_left(capsys):
    write_run("lost-run", state="lost", started=NOW - 60, finished=NOW,
              leftovers=[{"kind": "slurm_job", "id": "5382685", "host": "alvis2"}])
    _, lines = run(capsys)
    assert any(line.startswith("[WARN] lost-run (lost) may have left:") and "5382685" in line for line in lines)
    assert lines[-1] == "  Remove them with: sweepdeck runs --clean lost-run"


def test_no_runs_says_how_to_start_one(capsys):
    code, lines = run(capsys)
    assert code == 0
    assert lines == ["No saved runs. Start one with: sweepdeck run --model qwen-1.5b --workload chatbot --yes"]


def test_ten_thousand_runs_are_all_listed_newest_first(capsys):
    root = Path(os.environ["SWEEPDECK_STATE_DIR"]) / "runs"
    root.mkdir(parents=True)
    for i in range(10_000):
        (root / f"run-{i:05d}").mkdir()
        (root / f"run-{i:05d}" / "meta.json").write_text(json.dumps(
            {"id": f"run-{i:05d}", "backend": "local", "state": "succeeded", "started": NOW - i, "finished": NOW}))
    code, lines = run(capsys)
    assert code == 0 and len(lines) == 10_002
    assert lines[2].split()[0] == "run-00000" and lines[-1].split()[0] == "run-09999"
    _, limited = run(capsys, "--limit", "20")
    assert len(limited) == 22 and limited[-1].split()[0] == "run-00019"
    _, as_json = run(capsys, "--json")
    assert len(as_json) == 10_000 and json.loads(as_json[-1])["id"] == "run-09999"
