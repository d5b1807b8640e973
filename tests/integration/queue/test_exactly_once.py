"""100 claimers, 20 of them killed mid-config: every config is completed exactly once, with one result row.

Real HTTP (``sweepdeck queue serve`` as a process), real PostgreSQL and SQLite. 20
reference workers run as processes and are SIGKILLed while running a config (a spot
node going away: no goodbye, no give-back); 80 more run in this process. Leases last
6 s and the live workers heartbeat every 2 s, so the spot handler's reset-stale (run
every half second with the usual 120-minute timeout) takes back the configs whose
holder died — and, on a machine so busy that a heartbeat comes late, a live worker's
too: that worker's report is then refused (409) and the config runs again elsewhere,
which is exactly what must not produce a second result.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from backends.queue.auth import write_token_file
from backends.queue.worker import QueueWorker
from tests.integration.queue.conftest import TOKEN_ENTRIES, WORKER, W, auth, db_url
from tests.support.processes import UvicornProcess

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(900)]

CLAIMERS, VICTIMS, BATCH = 100, 20, 3
#: 30 hardware × 5 workloads × 2 batch sizes × 2 sequence lengths
MATRIX = {
    "hardware": [f"hw{i}:1" for i in range(30)],
    "frameworks": ["vllm"],
    "batch_sizes": [1, 2],
    "sequence_lengths": [1024, 2048],
}
TOTAL = 600


def _wait(predicate, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL a worker and the command it runs, as a node that disappears."""
    try:
        children = [int(c) for c in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    except OSError:
        children = []
    proc.kill()
    proc.wait()
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class Server:
    """``sweepdeck queue serve`` on a free port, with the tests' tokens and 6-second leases."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        self.token_file = write_token_file(tmp_path / "tokens", TOKEN_ENTRIES)
        self.proc = UvicornProcess(
            [
                sys.executable,
                "-m",
                "tui.cli",
                "queue",
                "serve",
                "--db",
                url,
                "--port",
                "0",
                "--token-file",
                str(self.token_file),
                "--lease-minutes",
                "0.1",
            ],
            what="queue serve",
        )

    def __enter__(self) -> Server:
        self.url = self.proc.wait_ready(60)
        return self

    def __exit__(self, *exc) -> None:
        self.proc.stop()

    def client(self, role: str = "admin") -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, headers=auth(role))


class SpotHandler:
    """reset-stale every half second with the default timeout: only expired leases are taken back."""

    def __init__(self, api: Server) -> None:
        self.api = api
        self.reset = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.api.client("admin") as c:
            while not self._stop.wait(0.5):
                r = c.post(f"{W}/maintenance/reset-stale", params={"timeout_minutes": 120, "max_retries": 10})
                r.raise_for_status()
                self.reset += r.json()["reset"]

    def __enter__(self) -> SpotHandler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_100_claimers_20_killed_every_config_completed_exactly_once(request, tmp_path, kind):
    with Server(db_url(kind, request, tmp_path), tmp_path) as api, api.client("admin") as admin:
        assert admin.post(f"{W}/populate/mv1", json=MATRIX).json()["created"] == TOTAL

        # the victims claim first and hang in their first config
        victims = [
            subprocess.Popen(
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
                    str(BATCH),
                    "--command",
                    "sleep 600",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(VICTIMS)
        ]
        names = {f"{socket.gethostname()}-{v.pid}" for v in victims}

        def held() -> dict[int, dict]:
            rows = admin.get(f"{W}/configs/mv1", params={"status": "running", "limit": 10000}).json()
            return {c["id"]: c for c in rows if c["worker"] in names}

        _wait(lambda: len(held()) == VICTIMS * BATCH, "every victim holds its batch")
        stranded = held()

        counts: list[dict] = []
        first_done = threading.Event()

        async def live() -> None:
            async def one(n: int) -> None:
                worker = QueueWorker(
                    api_url=api.url,
                    batch_size=BATCH,
                    command="sleep 0.02",
                    name=f"live-{n}",
                    token=WORKER,
                    on_log=lambda line: first_done.set() if "claimed" in line else None,
                )
                counts.append(await worker.run())

            await asyncio.gather(*(one(n) for n in range(CLAIMERS - VICTIMS)))

        with SpotHandler(api) as spot:
            runner = threading.Thread(target=lambda: asyncio.run(live()), daemon=True)
            runner.start()
            first_done.wait(60)
            for v in victims:  # mid-config: each is in its 600 s first config
                _kill(v)
            runner.join(600)
            assert not runner.is_alive(), "the live workers did not finish"
            # the victims' configs come back once their leases expire; whatever is left, a rescue worker runs
            _wait(lambda: admin.get(f"{W}/progress/mv1").json()["running"] == 0, "the stranded configs were reset")
            rescue = QueueWorker(
                api_url=api.url, batch_size=50, command="true", name="rescue", token=WORKER, on_log=lambda _line: None
            )
            counts.append(asyncio.run(rescue.run()))

        prog = admin.get(f"{W}/progress/mv1").json()
        assert (prog["total"], prog["completed"], prog["failed"], prog["pending"], prog["running"]) == (
            TOTAL,
            TOTAL,
            0,
            0,
            0,
        )
        results = admin.get(f"{W}/results/mv1", params={"limit": 10000}).json()
        ids = [r["config_id"] for r in results]
        assert len(ids) == TOTAL and len(set(ids)) == TOTAL, "exactly one result row per config"
        assert sum(c["completed"] for c in counts) == TOTAL  # each completion the workers counted is one config
        assert spot.reset >= len(stranded)

        configs = {c["id"]: c for c in admin.get(f"{W}/configs/mv1", params={"limit": 10000}).json()}
        by_result = {r["config_id"]: r for r in results}
        for cid, before in stranded.items():
            after = configs[cid]
            assert after["status"] == "completed" and after["worker"] not in names and after["retry_count"] >= 1
            assert after["lease_id"] != before["lease_id"] and by_result[cid]["lease_id"] == after["lease_id"]
            events = admin.get(f"{W}/configs/{cid}/history").json()["events"]
            reset = [e for e in events if e["action"] == "reset" and e["lease_id"] == before["lease_id"]]
            assert reset and reset[0]["actor"] == "ops", events
            assert [e["action"] for e in events].count("complete") == 1
        # a config's result carries the lease of its one completed attempt: reports under other leases never landed
        assert all(by_result[cid]["lease_id"] == c["lease_id"] for cid, c in configs.items())
        assert admin.get(f"{W}/failures/mv1").json() == []
    log = "\n".join(api.proc.lines)
    assert WORKER not in log and "Traceback" not in log
