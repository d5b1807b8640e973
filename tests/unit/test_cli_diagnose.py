"""``sweepdeck diagnose``: saved logs in, diagnosis + evidence + fixes out."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.upstream_files import upstream
from tests.unit.test_diagnosis import GRAPH_OOM, REAL_FAILURES
from tui.cli import main

REPO = Path(__file__).resolve().parents[2]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["diagnose", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text + "\n")
    return path


def test_kv_cache_log_gives_diagnosis_evidence_and_fixes(tmp_path, capsys):
    log = write(tmp_path, "vllm.err", REAL_FAILURES["kv-small"][0])
    code, out, err = run(capsys, str(log))
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"{log}: KV cache too small for max_model_len"
    assert "The longest that fits is about 9344 tokens" in lines[1]
    assert lines[2].startswith("  evidence (line 1): (EngineCore_DP0 pid=316) ERROR")
    assert "    1. Use the longest context that fits: max_model_len=40960 -> 9216" in out
    assert "[--max-model-len 9216]" in out
    assert "also in the log: engine-dead" in out


def test_json_has_rule_title_evidence_fixes(tmp_path, capsys):
    names = ("max-len", "tp-heads", "gated-no-token")
    logs = [write(tmp_path, f"{name}.log", REAL_FAILURES[name][0]) for name in names]
    code, out, _ = run(capsys, "--json", *map(str, logs))
    assert code == 0
    results = [json.loads(line) for line in out.splitlines()]
    assert [r["rule"] for r in results] == ["max-model-len-too-long", "tp-not-divisible", "model-gated"]
    for r in results:
        assert {"rule", "title", "evidence", "fixes"} <= set(r) and r["title"] and r["evidence"] and r["fixes"]
    assert results[0]["fixes"][0].endswith("[--max-model-len 32768]")
    assert results[1]["fixes"] == [
        "Use TP=2: TP=3 -> TP=2 (40 attention heads divide by 2) [--tensor-parallel-size 2]",
        "Use TP=4: TP=3 -> TP=4 (40 attention heads divide by 4) [--tensor-parallel-size 4]",
    ]
    assert any("HF_TOKEN" in f for f in results[2]["fixes"])


def test_root_cause_above_is_the_evidence(tmp_path, capsys):
    log = write(tmp_path, "engine.log", "\n".join([
        "(EngineCore_DP0 pid=9) ERROR 11-23 19:44:58 [core.py:708] ValueError: The model type 'gemma2' does not "
        "support float16. Reason: Numerical instability.",
        "(APIServer pid=1) RuntimeError: Engine core initialization failed. See root cause above.",
    ]))
    code, out, _ = run(capsys, "--json", str(log))
    (result,) = [json.loads(line) for line in out.splitlines()]
    assert result["rule"] == "engine-dead" and result["title"] == "vLLM engine failed to start"
    assert result["evidence"].startswith("ValueError: The model type 'gemma2'") and result["line"] == 1


def test_real_log_with_a_graph_capture_oom(tmp_path, capsys):
    real = upstream("vllm-capacity", "logs", "meta-llama-llama-3-1-8b---h100-80gb--tp1pp1dp1--8192.log")
    lines = real.read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if "Capturing CUDA graphs (mixed prefill-decode" in line)
    log = tmp_path / "vllm.log.gz"
    with gzip.open(log, "wt") as fh:
        fh.write("\n".join(lines[: cut + 1] + GRAPH_OOM) + "\n")
    code, out, _ = run(capsys, str(log))
    assert code == 0
    assert out.splitlines()[0] == f"{log}: CUDA out of memory while capturing CUDA graphs"
    assert "1. Run without CUDA graphs: add --enforce-eager" in out
    assert "gpu_memory_utilization=0.95 -> 0.9" in out  # the run's own setting, from vLLM's start-up line


def test_clean_log_says_nothing_found(capsys):
    real = upstream("vllm-capacity", "logs", "qwen-qwen2-5-7b-instruct--h100-80gb--tp2pp1dp1--8192.log")
    code, out, _ = run(capsys, str(real))
    assert code == 0 and out.startswith(f"{real}: no known failure found (")
    code, out, _ = run(capsys, "--json", str(real))
    result = json.loads(out)
    assert result["rule"] is None and result["fixes"] == []


def test_unknown_error_shows_the_last_error_line(tmp_path, capsys):
    log = write(tmp_path, "odd.log", "INFO starting\nKeyError: 'rope_type'\nINFO bye")
    code, out, _ = run(capsys, str(log))
    assert code == 0
    assert "no known failure found (3 lines read)" in out and "last error line (2): KeyError: 'rope_type'" in out


@pytest.mark.parametrize("make, words", [
    (lambda tmp: tmp / "missing.log", "no such file"),
    (lambda tmp: tmp, "is a directory"),
    (lambda tmp: (tmp / "fake.gz").write_bytes(b"not gzip at all") and tmp / "fake.gz", "cannot read it"),
])
def test_unreadable_file_is_one_clear_line(tmp_path, capsys, make, words):
    good = write(tmp_path, "good.log", REAL_FAILURES["tp-heads"][0])
    bad = make(tmp_path)
    code, out, err = run(capsys, str(bad), str(good))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"[ERROR] {bad}: ") and words in err
    assert "Traceback" not in err
    assert f"{good}: TP does not divide the model" in out  # the other files are still read


def test_stdin_and_undecodable_bytes():
    text = REAL_FAILURES["dp-world"][0].encode() + b"\n\xff\xfe garbage \x00\n"
    proc = subprocess.run([sys.executable, "-m", "tui.cli", "diagnose", "--json", "-"], input=text, cwd=REPO,
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["file"] == "-" and result["rule"] == "dp-rank-out-of-range"
    assert result["fixes"]
