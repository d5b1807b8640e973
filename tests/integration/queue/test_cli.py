"""The `sweepdeck queue` CLI: report (paged), reset-stale, serve as a real process, the worker's --endpoint mode."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys

import httpx
import pytest

from backends.queue.store import QueueStore
from backends.queue.worker import PROMPT_SHARE
from tests.integration.queue.conftest import ADMIN, WORKER, W, auth
from tests.support.processes import UvicornProcess
from tui.cli import main

pytestmark = pytest.mark.services

MATRIX = {
    "hardware": ["H100:1", "A100:1"],
    "frameworks": ["vllm"],
    "batch_sizes": [1, 2],
    "sequence_lengths": [1024],
}  # 20


def _complete_all(url: str, metric=lambda c: float(c["id"])) -> list[dict]:
    with httpx.Client(base_url=url, timeout=10, headers=auth()) as c:
        assert c.post(f"{W}/populate/mv1", json=MATRIX).json()["created"] == 20
        batch = c.post(f"{W}/configs/get-batch", json={"limit": 500}).json()
        for cfg in batch:
            c.post(
                f"{W}/configs/{cfg['id']}/status",
                json={
                    "status": "completed",
                    "lease_id": cfg["lease_id"],
                    "metrics": {"output_tokens_per_s": metric(cfg)},
                },
            ).raise_for_status()
    return batch


def _table(out: str) -> list[list[str]]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("rank"))
    return [line.split() for line in lines[start + 1 :]]


@pytest.mark.parametrize("page_size", [7, 20, 10_000])
def test_report_pages_through_every_config_and_result(api, capsys, page_size):
    batch = _complete_all(api.url)
    assert (
        main(
            [
                "queue",
                "report",
                "--api-url",
                api.url,
                "--token-file",
                str(api.token_file),
                "mv1",
                "--page-size",
                str(page_size),
                "--top",
                "50",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("20 completed, 0 failed of 20 (100.00%)")
    rows = _table(out)
    # every result is ranked: 2 hardware × 5 workloads = 10 groups of 2 configs (the batch sizes)
    assert len(rows) == 10 and sum(int(r[-1]) for r in rows) == 20
    # the best group holds the highest config ids, which only the last page of a small page size has
    best = max(batch, key=lambda c: c["id"])
    mates = [
        c["id"]
        for c in batch
        if (c["hardware_config_id"], c["workload_type"]) == (best["hardware_config_id"], best["workload_type"])
    ]
    assert rows[0][1] == str(best["hardware_config_id"]) and rows[0][3] == best["workload_type"]
    assert float(rows[0][4]) == pytest.approx(sum(mates) / len(mates))


def test_report_bad_page_size_is_one_message(api, capsys):
    assert (
        main(["queue", "report", "--api-url", api.url, "--token-file", str(api.token_file), "mv1", "--page-size", "0"])
        == 2
    )
    err = capsys.readouterr().err
    assert "--page-size must be 1-10000" in err and "Traceback" not in err


def test_report_and_populate_remote_without_an_admin_token_say_which_to_give(api, tmp_path, capsys):
    assert main(["queue", "report", "--api-url", api.url, "mv1"]) == 1
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "Give an admin token of this queue: --token-file FILE" in err
    worker_only = tmp_path / "worker-token"
    worker_only.write_text(WORKER + "\n")  # a Secret's worker-token key mounted as a file
    assert main(["queue", "populate-remote", "--api-url", api.url, "--token-file", str(worker_only), "mv1"]) == 1
    err = capsys.readouterr().err
    assert "HTTP 403" in err and "has the worker role" in err and "Traceback" not in err


def test_results_listing_has_offset(api):
    _complete_all(api.url)
    with api.client("admin") as c:
        whole = [r["id"] for r in c.get(f"{W}/results/mv1", params={"limit": 100}).json()]
        paged = [
            r["id"] for off in (0, 8, 16) for r in c.get(f"{W}/results/mv1", params={"limit": 8, "offset": off}).json()
        ]
        assert len(whole) == 20 and paged == whole
        assert c.get(f"{W}/results/mv1", params={"offset": -1}).status_code == 422


# ----------------------------------------------------------------------------- serve, reset-stale, worker --endpoint


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", "queue", *args], capture_output=True, text=True, timeout=timeout
    )


def test_serve_is_a_real_http_server_over_the_given_database(tmp_path, private_dirs):
    """On loopback with no token given, serve generates the token file (0600), says where, and never logs a token."""
    import os
    import stat

    from backends.queue.auth import default_token_path, read_token_file

    db = f"sqlite:///{tmp_path / 'served.db'}"
    server = UvicornProcess(
        [sys.executable, "-m", "tui.cli", "queue", "serve", "--db", db, "--port", "0"], what="queue serve"
    )
    try:
        url = server.wait_ready()
        path = default_token_path()
        assert str(path).startswith(str(private_dirs))
        assert f"[INFO] queue tokens (admin: admin, worker: worker) in {path} (generated, mode 0600)" in server.lines
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        tokens = {role: token for _name, role, token in read_token_file(path)}
        with httpx.Client(base_url=url, timeout=10) as c:
            assert c.get("/health").json() == {"status": "ok"}
            assert c.get("/docs").status_code == 200
            assert "/api/v1/workflow/progress/{model_version_id}" in c.get("/openapi.json").json()["paths"]
            assert c.post(f"{W}/populate/mv1", json=MATRIX).status_code == 401
            admin = {"Authorization": f"Bearer {tokens['admin']}"}
            assert c.post(f"{W}/populate/mv1", json=MATRIX, headers=admin).json()["created"] == 20
            worker = {"Authorization": f"Bearer {tokens['worker']}"}
            assert len(c.post(f"{W}/configs/get-batch", json={"limit": 5}, headers=worker).json()) == 5
            assert c.post(f"{W}/populate/mv1", json={"batch_sizes": [0]}, headers=admin).status_code == 422
            assert (
                c.post(
                    f"{W}/populate/mv1", json=MATRIX, headers={"Authorization": "Bearer wrong-" + tokens["admin"]}
                ).status_code
                == 401
            )
        # a second start reuses the file (clients keep working)
        assert main(["queue", "tokens"]) == 0
    finally:
        code = server.stop()
    log = "\n".join(server.lines)
    assert tokens["admin"] not in log and tokens["worker"] not in log, "a token reached the server's log"
    assert 'POST /api/v1/workflow/populate/mv1 HTTP/1.1" 401' in log  # the access log is there, without tokens
    # uvicorn shuts down cleanly on SIGTERM, then re-raises the signal (so its exit says why it stopped)
    assert code in (0, -signal.SIGTERM) and "INFO:     Application shutdown complete." in server.lines, server.lines
    # what was served is in the database file: another client reads it directly
    r = _cli("progress", "mv1", "--db", db, "--json")
    assert r.returncode == 0 and '"running": 5' in r.stdout and '"pending": 15' in r.stdout


def test_serve_bad_database_url_is_one_message():
    r = _cli("serve", "--db", "mysql://x/y", "--port", "0", timeout=30)
    assert r.returncode == 2 and "Unsupported database URL 'mysql://x/y'" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "queue.example.org", "10.1.2.3"])
def test_serve_refuses_a_non_loopback_address_without_a_token(host, tmp_path):
    r = _cli("serve", "--db", f"sqlite:///{tmp_path / 'q.db'}", "--host", host, "--port", "0", timeout=30)
    assert r.returncode == 2 and f"Refusing to serve the work queue on {host} without a token" in r.stderr
    assert "--token-file FILE" in r.stderr and "SWEEPDECK_QUEUE_TOKEN" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "q.db").exists()


def test_server_tokens_sources(tmp_path, monkeypatch):
    from backends.queue.auth import TOKEN_ENV, server_tokens, write_token_file
    from config.errors import SweepdeckError

    f = write_token_file(tmp_path / "t", [("ci", "worker", WORKER), ("me", "admin", ADMIN)])
    tokens, where = server_tokens(str(f), "0.0.0.0")
    assert tokens.roles == {"ci": "worker", "me": "admin"} and where == f"tokens from {f}"
    assert tokens.authenticate(WORKER).name == "ci" and tokens.authenticate(ADMIN).is_admin
    assert tokens.authenticate(ADMIN[:-1]) is None and tokens.authenticate("") is None
    monkeypatch.setenv(TOKEN_ENV, ADMIN)
    tokens, where = server_tokens(None, "0.0.0.0")
    assert tokens.roles == {"admin": "admin"} and where == f"one admin token from ${TOKEN_ENV}"
    monkeypatch.setenv(TOKEN_ENV, "short")
    with pytest.raises(SweepdeckError, match="not usable") as bad:
        server_tokens(None, "127.0.0.1")
    assert "short" not in str(bad.value)  # never echoed
    for text, error in (
        ("a b\n", "expected NAME ROLE TOKEN"),
        (f"x boss {ADMIN}\n", "role 'boss'"),
        (f"x admin {ADMIN}\ny worker {ADMIN}\n", "listed twice"),
        (f"x admin {ADMIN}\nx worker {WORKER}\n", "share a name"),
        ("# nothing\n", "holds no token"),
    ):
        (tmp_path / "bad").write_text(text)
        with pytest.raises(SweepdeckError, match=error):
            server_tokens(str(tmp_path / "bad"), "127.0.0.1")


def test_tokens_command_makes_and_shows_the_file_never_the_tokens(tmp_path, capsys):
    path = tmp_path / "toks"
    assert main(["queue", "tokens", "--token-file", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path} (generated now; keep it private, mode 0600)" in out and "admin" in out and "worker" in out
    from backends.queue.auth import read_token_file

    entries = read_token_file(path)
    assert all(token not in out for _n, _r, token in entries)
    assert main(["queue", "tokens", "--token-file", str(path), "--print", "worker"]) == 0
    assert capsys.readouterr().out.strip() == next(t for _n, r, t in entries if r == "worker")


def test_reset_stale_cli_returns_then_fails_stranded_configs(tmp_path):
    db = f"sqlite:///{tmp_path / 'q.db'}"
    assert (
        _cli(
            "populate",
            "mv1",
            "--db",
            db,
            "--hardware",
            "H100:1",
            "--frameworks",
            "vllm",
            "--batch-sizes",
            "1",
            "--sequence-lengths",
            "1024",
        ).returncode
        == 0
    )  # 5 configs

    async def claim(n):
        store = QueueStore(db)
        try:
            return [c["id"] for c in await store.claim(n)]
        finally:
            await store.close()

    first = asyncio.run(claim(3))
    r = _cli("reset-stale", "--db", db, "--timeout-minutes", "60")
    assert r.returncode == 0 and "reset 0 stale configs" in r.stdout  # not stale yet
    r = _cli("reset-stale", "--db", db, "--timeout-minutes", "0", "--max-retries", "1")
    assert r.returncode == 0 and "[INFO] reset 3 stale configs to pending; 0 failed after 1 retries" in r.stdout
    assert "(their leases are revoked)" in r.stdout
    assert sorted(asyncio.run(claim(3))) == sorted(first)  # the same configs come back first (priority order)
    r = _cli("reset-stale", "--db", db, "--timeout-minutes", "0", "--max-retries", "1")
    assert "[INFO] reset 0 stale configs to pending; 3 failed after 1 retries" in r.stdout
    r = _cli("progress", "mv1", "--db", db)
    assert "pending 2 · running 0 · completed 0 · failed 3" in r.stdout
    r = _cli("reset-stale", "--db", db, "--timeout-minutes", "-1")
    assert r.returncode == 2 and "must not be negative" in r.stderr and "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def sim():
    from tests.support.processes import SimProcess

    s = SimProcess("--ttft-ms", "2", "--itl-ms", "1", "--max-num-seqs", "16")
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


def test_worker_endpoint_mode_runs_each_config_against_the_simulator(api, sim):
    from tests.integration.test_loadgen_sim import MODEL

    small = {
        "hardware": ["H100:1"],
        "frameworks": ["vllm"],
        "batch_sizes": [1, 2],
        "sequence_lengths": [64],
    }  # 10 configs
    with api.client("admin") as c:
        assert c.post(f"{W}/populate/mv1", json=small).json()["created"] == 10
    w = subprocess.run(
        [
            sys.executable,
            "-m",
            "tui.cli",
            "queue",
            "worker",
            "--api-url",
            api.url,
            "--token-file",
            str(api.token_file),
            "--batch-size",
            "4",
            "--endpoint",
            sim.url,
            "--model",
            MODEL,
            "--max-requests",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert w.returncode == 0, w.stdout + w.stderr
    assert "[INFO] worker finished: 10 completed, 0 failed, 0 returned to pending" in w.stdout
    with api.client("admin") as c:
        prog = c.get(f"{W}/progress/mv1").json()
        assert (prog["completed"], prog["failed"], prog["pending"], prog["running"]) == (10, 0, 0, 0)
        configs = {cfg["id"]: cfg for cfg in c.get(f"{W}/configs/mv1", params={"limit": 100}).json()}
        results = c.get(f"{W}/results/mv1").json()
    assert sorted(r["config_id"] for r in results) == sorted(configs)  # one result per config
    for r in results:
        m, cfg = r["metrics"], configs[r["config_id"]]
        assert m["completed"] == m["count"] == 3 and m["failed"] == 0
        # the cell's sequence length split into prompt and output tokens, sent to the server for real
        prompt = int(64 * PROMPT_SHARE[cfg["workload_type"]])
        assert (m["total_prompt_tokens"], m["total_output_tokens"]) == (3 * prompt, 3 * (64 - prompt)), (cfg, m)
        assert m["mode"] == f"{cfg['batch_size']} concurrent"  # the batch size is the concurrency
        assert m["output_tokens_per_s"] > 0 and m["ttft_ms"]["max"] > 0


def test_history_shows_who_changed_a_config_and_when(api, tmp_path, capsys):
    """`queue history` through the API (admin token) and straight from the database agree."""
    with api.client("admin") as admin, api.client("worker") as w:
        admin.post(f"{W}/populate/mv1", json=MATRIX).raise_for_status()
        [a] = w.post(f"{W}/configs/get-batch", json={"limit": 1, "worker": "pod-a"}).json()
        admin.post(f"{W}/maintenance/reset-stale", params={"timeout_minutes": 0}).raise_for_status()
        [b] = w.post(f"{W}/configs/get-batch", json={"limit": 1, "worker": "pod-b"}).json()
        w.post(
            f"{W}/configs/{b['id']}/status",
            json={"status": "completed", "lease_id": b["lease_id"], "metrics": {"tps": 4.25}},
        ).raise_for_status()
    assert main(["queue", "history", str(a["id"]), "--api-url", api.url, "--token-file", str(api.token_file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(
        f"config {a['id']} of mv1: chatbot, batch 1, seq 1024, priority 100 — completed, retries 1"
    )
    assert "populated by ops" in lines[1]
    actions = [line.split()[1:4] for line in lines[2:6]]
    assert actions == [
        ["claim", "by", "pods"],
        ["reset", "by", "ops"],
        ["claim", "by", "pods"],
        ["result", "by", "pods"],
    ]
    assert f"lease {a['lease_id'][:8]}…  (pod-a)" in lines[2] and "running → pending" in lines[3]
    assert f"lease {b['lease_id'][:8]}…  (pod-b)" in lines[4]
    assert lines[-1] == f"  result 1 under lease {b['lease_id'][:8]}… by pods: " + '{"tps": 4.25}'
    db = api.store.url.replace("sqlite+aiosqlite://", "sqlite://")
    assert main(["queue", "history", str(a["id"]), "--db", db, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [e["action"] for e in doc["events"]] == ["claim", "reset", "claim", "result", "complete"]
    assert main(["queue", "history", "999999", "--db", db]) == 4
    assert "No config with id 999999" in capsys.readouterr().err
    assert main(["queue", "history", str(a["id"]), "--api-url", api.url]) == 1  # no token
    assert "HTTP 401" in capsys.readouterr().err


def test_reset_stale_through_the_api_is_what_the_spot_handler_runs(api, capsys):
    with api.client("admin") as admin, api.client("worker") as w:
        admin.post(f"{W}/populate/mv1", json=MATRIX).raise_for_status()
        w.post(f"{W}/configs/get-batch", json={"limit": 3}).raise_for_status()
    args = ["queue", "reset-stale", "--api-url", api.url, "--token-file", str(api.token_file), "--timeout-minutes", "0"]
    assert main(args) == 0
    assert "[INFO] reset 3 stale configs to pending; 0 failed after 3 retries" in capsys.readouterr().out
    with api.client("admin") as admin:
        events = admin.get(f"{W}/configs/1/history").json()["events"]
    assert events[-1]["action"] == "reset" and events[-1]["actor"] == "ops"
