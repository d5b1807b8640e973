"""The headless event printer used by `sweepdeck run` / `attach` (no processes)."""

from __future__ import annotations

import io
import json

import pytest

from backends import diagnosis as dg
from backends.base import Check, Run
from backends.events import Alert, Endpoint, Finished, Fix, LogLine, Metrics, Notice, Phase, Progress
from backends.session import SessionResult
from backends.store import RunStore
from config.catalog import load_catalogs
from config.spec import build_spec
from tui.commands.run import parse_custom
from tui.headless import HeadlessPrinter, fix_flags


class Out(io.StringIO):
    encoding = "utf-8"

    def isatty(self) -> bool:
        return False


@pytest.fixture
def spec():
    return build_spec(load_catalogs(), "llama2-7b", tp=2, experiment_id="exp-h")


def lines(out: Out) -> list[str]:
    return out.getvalue().splitlines()


def test_event_lines(spec):
    out = Out()
    p = HeadlessPrinter(out, Out(), spec=spec)
    p(LogLine("INFO 11-23 loading", "out"))
    p(LogLine("Traceback (most recent call last):", "err"))
    p(Notice("Launched exp-h"))
    p(Notice("disk almost full", "warning"))
    p(Phase("server", "ready", "http://127.0.0.1:8000", kind="server"))
    p(Phase("job 5382685", "PENDING", "Resources", kind="job"))
    p(Phase("deploy-model-tp4", "Running", kind="task"))
    p(Endpoint("http://127.0.0.1:8000", True, "m"))
    p(Endpoint("http://127.0.0.1:8000", False, "m", "stopped"))
    p(Finished("failed", "server exited"))
    assert lines(out) == [
        "[VLLM OUT] INFO 11-23 loading",
        "[VLLM ERR] Traceback (most recent call last):",
        "[INFO] Launched exp-h",
        "[WARN] disk almost full",
        "[INFO] server: ready (http://127.0.0.1:8000)",
        "[INFO] job 5382685: PENDING (Resources)",
        "[INFO] task deploy-model-tp4: Running",
        "[INFO] Endpoint ready: http://127.0.0.1:8000 serving m",
        "[WARN] Endpoint http://127.0.0.1:8000 unreachable: stopped",
        "[ERROR] Failed: server exited",
    ]


def test_diagnosis_with_numbered_fixes(spec):
    out = Out()
    p = HeadlessPrinter(out, Out(), spec=spec)
    p(dg.alert_for(dg.diagnose_line("torch.OutOfMemoryError: CUDA out of memory. " + "x" * 300), spec))
    text = lines(out)
    assert text[0].startswith("[ERROR] Diagnosis: CUDA out of memory: ")
    assert (
        text[1].startswith("        evidence: torch.OutOfMemoryError") and text[1].endswith("…") and len(text[1]) < 200
    )
    assert text[2] == "  Suggested fixes:"
    assert text[3] == "    1. Increase TP: TP=2 -> TP=4 (doubles GPU memory)   [re-run with --tp 4]"
    assert text[6].startswith("    4. Both: reduce context and batch") and text[6].endswith(
        "[re-run with --max-model-len 2048 --max-num-seqs 128]"
    )
    out2 = Out()
    HeadlessPrinter(out2, Out(), spec=spec)(dg.alert_for(dg.diagnose_line("Repository Not Found for url: x"), spec))
    assert lines(out2)[-1] == "  No automatic fix; see the message above."


def test_fix_flags():
    assert fix_flags({"engine.tp": 4}) == "--tp 4"
    assert (
        fix_flags({"engine.extra_args": ("--a", "--trust-remote-code")}, ("--a",)) == "--vllm-arg=--trust-remote-code"
    )
    assert fix_flags({"namespace": "x"}) == ""  # no flag: no command shown


def test_progress_is_throttled_but_final_always_printed():
    out = Out()
    p = HeadlessPrinter(out, Out(), progress_every=60)
    p(Progress(total=10, completed=1))
    p(Progress(total=10, completed=2))  # too soon
    p(Progress(total=10, completed=9, failed=1))  # final
    p(Metrics(completed=10, requests_per_s=4.5, ttft_ms_p50=20.0, itl_ms_mean=10.0))
    assert lines(out) == [
        "[INFO] Progress: 1/10 done (1 ok, 0 failed, 0 running)",
        "[INFO] Progress: 10/10 done (9 ok, 1 failed, 0 running)",
        "[INFO] Metrics: 4.50 req/s, 0 tok/s, TTFT p50 20.0 ms, ITL mean 10.0 ms, in flight 0",
    ]


def test_checks_lines():
    out = Out()
    HeadlessPrinter(out, Out()).checks(
        [Check("Port 8000 free", "fail", "in use by pid 7", "use --port 8001"), Check("Model known", "pass", "m"),
         Check("TP", "warn", "TP=2")]
    )
    assert lines(out) == [
        "[INFO] Pre-flight checks:",
        "  ✗ Port 8000 free — in use by pid 7",
        "      fix: use --port 8001",
        "  ✓ Model known — m",
        "  ! TP — TP=2",
    ]


def test_json_mode_is_one_object_per_line(spec):
    out = Out()
    p = HeadlessPrinter(out, Out(), json_mode=True, spec=spec)
    p.spec_summary(spec)
    p.checks([Check("a", "pass")])
    p(LogLine("hello"))
    p(Alert("x", "y", diagnosis="cuda-oom", fixes=[Fix("Increase TP", {"engine.tp": 4})]))
    objs = [json.loads(line) for line in lines(out)]
    assert [o["type"] for o in objs] == ["Spec", "Check", "LogLine", "Alert"]
    assert objs[0]["experiment_id"] == "exp-h" and objs[3]["fixes"][0]["changes"] == {"engine.tp": 4}


def test_summary_table_plain_without_colour(spec, tmp_path, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    run_dir = RunStore(tmp_path).create(spec)
    run = Run("exp-h", "local", spec, run_dir)
    summary = {
        "completed": 20, "failed": 1, "duration_s": 4.0, "requests_per_s": 5.0, "output_tokens_per_s": 900.0,
        "ttft_ms": {"mean": 21.0, "median": 20.0, "p90": 30.0, "p99": 40.0},
        "itl_ms": {"mean": 10.0, "median": 10.0, "p90": 11.0, "p99": 12.0},
        "latency_ms": {"mean": None},
    }
    result = SessionResult("succeeded", "20 requests", run, Finished("succeeded", "20 requests", "/r.json", summary))
    out, err = Out(), Out()
    HeadlessPrinter(out, err).result(result)
    text = out.getvalue()
    assert "\x1b[" not in text
    assert "20 completed, 1 failed" in text and "5.00 req/s" in text and "/r.json" in text
    assert "TTFT (ms)" in text and "ITL (ms)" in text and "Latency (ms)" not in text
    row = next(line for line in lines(out) if "TTFT" in line)
    assert row.split()[-4:] == ["21.0", "20.0", "30.0", "40.0"]
    assert err.getvalue() == ""
    failed = SessionResult("failed", "CUDA out of memory", run, Finished("failed", "CUDA out of memory"))
    HeadlessPrinter(Out(), err).result(failed)
    assert err.getvalue().startswith("[ERROR] failed: CUDA out of memory")


def test_parse_custom():
    assert parse_custom("prompt=500 output=100, rate=5 prompt-stdev=10") == {
        "prompt_tokens": "500", "output_tokens": "100", "rate": "5", "prompt_tokens_stdev": "10",
    }
    from config.errors import SweepdeckError

    with pytest.raises(SweepdeckError, match="key=value"):
        parse_custom("prompt 500")
