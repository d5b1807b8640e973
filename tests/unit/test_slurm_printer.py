"""`sweepdeck alvis connect` prints the original script's lines for the backend's events."""

from __future__ import annotations

from backends.events import Alert, Endpoint, Finished, Fix, LogLine, Notice, Phase
from tui.commands.alvis import Printer


def test_original_messages(capsys):
    p = Printer()
    for ev in [
        Notice("Launched x on slurm; run directory /tmp/x"),
        Phase("job 5382685", "SUBMITTED", kind="job"),
        Notice("Waiting for job to start..."),
        Phase("job 5382685", "PENDING", "", kind="job"),
        Phase("job 5382685", "PENDING", "Resources", kind="job"),
        Phase("job 5382685", "RUNNING", "alvis7-07", kind="job"),
        Notice("Server address: alvis7-07:41084"),
        Phase("server alvis7-07:41084", "STARTING", kind="server"),
        Phase("tunnel 127.0.0.1:58000", "up", "alvis7-07:41084", kind="tunnel"),
        Endpoint("http://localhost:58000", True, "openai/gpt-oss-20b"),
        LogLine("INFO: Started server process [12345]", "out"),
        LogLine("INFO:     Uvicorn running on http://0.0.0.0:41084", "err"),
        Phase("tunnel 127.0.0.1:58000", "broken", "SSH connection to alvis2 lost", kind="tunnel"),
        Phase("tunnel 127.0.0.1:58000", "reconnecting", "attempt 1", kind="tunnel"),
        Phase("tunnel 127.0.0.1:58000", "up", "reconnected to alvis2", kind="tunnel"),
        Alert("cuda-oom", "CUDA out of memory: ...", "error", "cuda-oom",
              [Fix("Increase TP", {"engine.tp": 2}, "TP=1 -> TP=2")]),
        Notice("cleanup scancel 5: timed out", "warning"),
        Finished("failed", "Job 5382685 ended while serving: FAILED"),
    ]:
        p(ev)
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "Job submitted: 5382685",
        "[INFO] Waiting for job to start...",
        "[INFO] Job 5382685 is pending (Resources)",
        "[INFO] Job is running on node: alvis7-07",
        "[INFO] Server address: alvis7-07:41084",
        "✓ Connection successful! Server available at http://localhost:58000",
        "",
        "[VLLM OUT] INFO: Started server process [12345]",
        "[VLLM ERR] INFO:     Uvicorn running on http://0.0.0.0:41084",
        "[WARN] SSH connection lost (SSH connection to alvis2 lost); reconnecting...",
        "[INFO] SSH reconnected; tunnel re-opened on 127.0.0.1:58000",
        "[ERROR] CUDA out of memory: ...",
        "  fix 1: Increase TP — TP=1 -> TP=2",
        "[WARN] cleanup scancel 5: timed out",
        "[ERROR] Job 5382685 ended while serving: FAILED",
    ]
    assert p.cleanup_problems == ["scancel 5: timed out"]


def test_json_mode(capsys):
    import json

    p = Printer(as_json=True)
    p(LogLine("hello", "out"))
    p(Endpoint("http://localhost:58000"))
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [d["type"] for d in lines] == ["LogLine", "Endpoint"] and p.endpoint.url == "http://localhost:58000"


def test_the_other_events(capsys):
    from backends.events import Metrics, Progress, Sweep

    p = Printer()
    for ev in [
        Notice("Job cancelled by the user", "error"),
        Phase("job 5382685", "COMPLETING", kind="job"),
        Phase("job 5382685", "TIMEOUT", "DueToTime", kind="job"),
        Phase("ssh alvis2", "broken", "timed out", kind="ssh"),
        Phase("ssh alvis2", "up", kind="ssh"),
        Phase("ssh alvis2", "up", kind="ssh"),  # already up: nothing to say
        Phase("server alvis7-07:41084", "STARTING", kind="server"),  # said by the Notice before it
        Alert("hint", "Try a smaller model", "info", fixes=[Fix("Smaller model")]),
        Alert("tunnel", "The tunnel is slow", "warning"),
        Progress(10, completed=7, failed=1),
        Metrics(completed=3),  # the live figures are the TUI's: nothing here
        Sweep("mv1", total=3),  # an Argo sweep's counts: never from slurm, and nothing here
        Finished("failed", "The tunnel is slow"),  # the alert just said it
        Finished("succeeded", ""),
        Finished("detached", "Left running: reattach with --attach"),
        Finished("succeeded", "Cleaned up successfully"),
        Finished("cancelled", "Cancelled"),
    ]:
        p(ev)
    assert capsys.readouterr().out.splitlines() == [
        "[ERROR] Job cancelled by the user",
        "[INFO] Job 5382685: COMPLETING",
        "[INFO] Job 5382685: TIMEOUT (DueToTime)",
        "[WARN] SSH connection lost (timed out); reconnecting...",
        "[INFO] SSH reconnected; connection restored",
        "[INFO] Try a smaller model",
        "  fix 1: Smaller model",
        "[WARN] The tunnel is slow",
        "[INFO] Workload: 8/10 requests (1 failed)",
        "[INFO] Left running: reattach with --attach",
        "[INFO] Cleaned up successfully",
    ]
    assert p.cleanup_problems == [] and p.last_alert == "The tunnel is slow"


def test_json_mode_still_collects_cleanup_problems(capsys):
    p = Printer(as_json=True)
    p(Notice("cleanup scancel 5: timed out", "warning"))
    p(Notice("cleanup done", "info"))  # info-level cleanup notices are no problem
    assert p.cleanup_problems == ["scancel 5: timed out"]
    assert len(capsys.readouterr().out.splitlines()) == 2
