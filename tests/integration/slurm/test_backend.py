"""The slurm backend in-process against real sshd + SLURM: resilience, attach, host keys, quoting."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import httpx
import pytest

from backends.events import Endpoint, Finished, LogLine, Notice, Phase
from backends.procs import port_free
from backends.slurm import SlurmBackend
from backends.slurm.ssh import LOOPBACK
from backends.store import RunStore
from config.errors import SweepdeckError

pytestmark = pytest.mark.services


class Follower:
    """Consumes a run's events in a task; lets the test wait for conditions."""

    def __init__(self, agen) -> None:
        self.agen = agen
        self.events: list = []
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        async for ev in self.agen:
            self.events.append(ev)
            self._changed.set()

    async def until(self, cond, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events:
                if cond(ev):
                    return ev
            if self.task.done():
                raise AssertionError(f"events ended first: {self.events[-5:]}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"condition not met in {timeout}s; last events: {self.events[-8:]}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    def seq(self, marker: str) -> list[int]:
        return [int(ev.text.split(marker, 1)[1]) for ev in self.events if isinstance(ev, LogLine) and marker in ev.text]

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task
        await self.agen.aclose()


async def _serving(backend: SlurmBackend, model: str = "gpt-oss-20b"):
    spec = backend.make_spec(model)
    run = await backend.launch(spec, RunStore().create(spec))
    follower = Follower(backend.events(run))
    await follower.until(lambda e: isinstance(e, Notice) and e.message.startswith("Streaming logs"), 40)
    return run, follower


def _append(path: Path, lines: list[str]) -> None:
    with open(path, "a") as fh:  # O_APPEND: whole lines even with the server writing too
        for line in lines:
            fh.write(line + "\n")
            fh.flush()


async def _models(port: int) -> list[str]:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        r = await client.get(f"http://127.0.0.1:{port}/v1/models")
        return [m["id"] for m in r.json()["data"]]


async def test_ssh_drop_mid_run_keeps_tunnel_port_and_log_continuity(slurm_profile, fresh_registry):
    settings, profile = slurm_profile.profile()
    backend = SlurmBackend(settings, profile)
    run, f = await _serving(backend)
    try:
        out = Path(run.handle["run_dir"]) / "vllm.out"
        _append(out, [f"seq-{i}" for i in range(1, 51)])
        await f.until(lambda e: isinstance(e, LogLine) and e.text == "seq-50")
        # a network hiccup: every SSH connection of this server dies
        assert slurm_profile.cluster.kill_ssh_sessions() >= 1
        await f.until(lambda e: isinstance(e, Phase) and e.kind == "tunnel" and e.state == "broken", 10)
        _append(out, [f"seq-{i}" for i in range(51, 101)])  # written while we are disconnected
        await f.until(lambda e: isinstance(e, Phase) and e.kind == "tunnel" and e.state == "up"
                      and "reconnected" in e.detail, 20)
        _append(out, [f"seq-{i}" for i in range(101, 151)])
        await f.until(lambda e: isinstance(e, LogLine) and e.text == "seq-150", 20)
        assert f.seq("seq-") == list(range(1, 151)), "a line was lost or repeated across the reconnect"
        # the tunnel is back on the same local port
        assert await _models(int(run.handle["local_port"])) == ["openai/gpt-oss-20b"]
        states = [e.state for e in f.events if isinstance(e, Phase) and e.kind == "tunnel"]
        assert states[0] == "up" and "broken" in states and "reconnecting" in states and states[-1] == "up"
        # a restarted sshd (not just dropped sessions) is survived too
        slurm_profile.cluster.stop_sshd()
        _append(out, [f"seq-{i}" for i in range(151, 161)])
        slurm_profile.cluster.start_sshd()
        await f.until(lambda e: isinstance(e, LogLine) and e.text == "seq-160", 30)
        assert f.seq("seq-") == list(range(1, 161))
    finally:
        await f.close()
        await backend.cleanup(run)
        await backend.close()
    assert slurm_profile.jobs_left() == []


async def test_attach_after_the_supervisor_died_resumes_logs_without_repeats(slurm_profile, fresh_registry):
    """The supervisor dies (its registry never runs): a new backend re-opens the job from the saved session."""
    from backends.cleanup import CleanupRegistry

    settings, profile = slurm_profile.profile()
    backend = SlurmBackend(settings, profile, registry=CleanupRegistry())  # dropped unrun below, as in a crash
    run, f = await _serving(backend)
    out = Path(run.handle["run_dir"]) / "vllm.out"
    _append(out, [f"part-{i}" for i in range(1, 21)])
    await f.until(lambda e: isinstance(e, LogLine) and e.text == "part-20")
    first = f.seq("part-")
    startup_lines = sum(1 for e in f.events if isinstance(e, LogLine) and "Application startup complete" in e.text)
    await f.close()  # the event stream saves the byte offsets shown so far
    await backend.close()  # the SSH connection (and the tunnel through it) die with the supervisor
    local_port = int(run.handle["local_port"])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not port_free(LOOPBACK, local_port) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    assert port_free(LOOPBACK, local_port), "the tunnel died with its connection"
    job_id = run.handle["job_id"]
    assert slurm_profile.jobs() == [f"{job_id} RUNNING"], "the job is not touched"
    _append(out, [f"part-{i}" for i in range(21, 41)])  # while nobody watches

    # a new process: a new backend from the saved session
    backend2 = SlurmBackend(settings, profile)
    record = RunStore().get(run.id)
    assert record.handle_values()["JOB_ID"] == job_id and int(record.handle_values()["OUT_OFFSET"]) > 0
    run2 = await backend2.attach(record)
    f2 = Follower(backend2.events(run2))
    try:
        await f2.until(lambda e: isinstance(e, Endpoint), 30)
        await f2.until(lambda e: isinstance(e, LogLine) and e.text == "part-40", 20)
        assert first == list(range(1, 21))
        assert f2.seq("part-") == list(range(21, 41)), "attach must resume exactly after the last line shown"
        assert not any(isinstance(e, LogLine) and "Application startup complete" in e.text for e in f2.events)
        assert startup_lines == 1
        assert await _models(local_port) == ["openai/gpt-oss-20b"]
        assert not any(isinstance(e, Phase) and e.state == "SUBMITTED" for e in f2.events)
    finally:
        await f2.close()
        await backend2.cleanup(run2)
        await backend2.close()
    assert slurm_profile.jobs_left() == []


async def test_host_key_accept_new_then_refuse_changed(slurm_profile, fresh_registry):
    settings, profile = slurm_profile.profile()
    kh = slurm_profile.known_hosts
    assert not kh.exists()
    backend = SlurmBackend(settings, profile)
    check = await backend.check_ssh()
    assert check.status == "pass", check
    await backend.close()
    # first use of a new host: its key is appended (accept-new), file private
    text = kh.read_text()
    port = slurm_profile.cluster.ssh_port
    assert text.startswith(f"[127.0.0.1]:{port} ssh-ed25519 ")
    assert oct(kh.stat().st_mode & 0o777) == "0o600"
    host_pub = Path(f"{slurm_profile.cluster.host_key}.pub").read_text().split()[1]
    assert host_pub in text
    # second use: validated against the stored key, nothing appended
    backend = SlurmBackend(settings, profile)
    assert (await backend.check_ssh()).status == "pass"
    await backend.close()
    assert kh.read_text() == text
    # a changed key for a known host: refused with a clear message
    import subprocess

    other = slurm_profile.tmp / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kh.write_text(f"[127.0.0.1]:{port} " + " ".join(Path(f"{other}.pub").read_text().split()[:2]) + "\n")
    backend = SlurmBackend(settings, profile)
    check = await backend.check_ssh()
    await backend.close()
    assert check.status == "fail"
    assert "host key of [127.0.0.1]:" in check.detail and "has changed" in check.detail
    assert "ssh-keygen -R" in check.fix
    assert host_pub not in kh.read_text(), "a changed key must never be accepted"


async def test_model_names_and_paths_with_metacharacters_are_passed_safely(slurm_profile, fresh_registry, tmp_path):
    marker_dir = tmp_path / "pwned"
    marker_dir.mkdir()
    evil_name = f"evil; touch {marker_dir}/n1 $(touch {marker_dir}/n2) `touch {marker_dir}/n3` 'q' \"d\" &&x|y"
    evil_path = f"/models/it's a dir; touch {marker_dir}/p1 $(touch {marker_dir}/p2)/`touch {marker_dir}/p3`/"
    models = {evil_name: {"path": evil_path, "max_model_len": 2048, "description": "metacharacters"}}
    settings, profile = slurm_profile.profile(models, default_model=evil_name)
    backend = SlurmBackend(settings, profile)
    run, f = await _serving(backend, evil_name)
    try:
        # the server got the exact name and path as single arguments
        assert await _models(int(run.handle["local_port"])) == [evil_name]
        async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
            listed = (await client.get(f"http://127.0.0.1:{run.handle['local_port']}/v1/models")).json()["data"][0]
        assert listed["root"] == evil_path
        assert list(marker_dir.iterdir()) == [], "a metacharacter was executed"
        assert RunStore().get(run.id).handle_values()["MODEL"] == evil_name
    finally:
        await f.close()
        await backend.cleanup(run)
        await backend.close()
    # newlines are refused before anything is created
    bad = {"two\nlines": {"path": "/models/x", "max_model_len": 10}}
    settings, profile = slurm_profile.profile(bad)
    backend = SlurmBackend(settings, profile)
    with pytest.raises(SweepdeckError, match="control characters"):
        backend.make_spec("two\nlines")
    bad_path = {"ok": {"path": "/models/x\ntouch /tmp/y", "max_model_len": 10}}
    settings, profile = slurm_profile.profile(bad_path)
    with pytest.raises(SweepdeckError, match="control characters"):
        SlurmBackend(settings, profile).resolve_model("ok")
    assert slurm_profile.jobs_left() == []


async def test_job_tmpdir_is_node_local_and_never_read(slurm_profile, fresh_registry):
    """The job's $TMPDIR is a private node-local dir; the address comes from the run dir."""
    settings, profile = slurm_profile.profile(modules=['echo "JOB_TMPDIR=$TMPDIR"'])
    backend = SlurmBackend(settings, profile)
    run, f = await _serving(backend)
    try:
        run_dir = Path(run.handle["run_dir"])
        slurm_out = next(run_dir.glob("slurm-*.out")).read_text()
        job_tmp = slurm_out.split("JOB_TMPDIR=", 1)[1].split()[0]
        assert job_tmp.startswith(str(slurm_profile.cluster.base / "nodelocal"))
        assert (run_dir / "server_address.txt").exists()
        assert not (Path(job_tmp) / "server_address.txt").exists()
        assert RunStore().get(run.id).handle_values()["TMPDIR"] == str(run_dir)
    finally:
        await f.close()
        await backend.cleanup(run)
        await backend.close()


async def test_profile_without_gpu_lines_and_job_end_is_reported(slurm_profile, fresh_registry):
    settings, profile = slurm_profile.profile(gpus=None, time="0:00:20")
    backend = SlurmBackend(settings, profile)
    spec = backend.make_spec("gpt-oss-20b")
    run = await backend.launch(spec, RunStore().create(spec))
    script = (run.store.path / "rendered" / "jobscript.sh").read_text()
    assert "--gpus-per-node" not in script
    f = Follower(backend.events(run))
    try:
        await f.until(lambda e: isinstance(e, Endpoint), 30)
        # the server dies: the job ends and the run finishes with the reason
        pid = int((Path(run.handle["run_dir"]) / "server.pid").read_text())
        os.kill(pid, 9)
        fin = await f.until(lambda e: isinstance(e, Finished), 30)
        assert fin.outcome == "failed" and "ended while serving" in fin.message
    finally:
        await f.close()
        await backend.cleanup(run)
        await backend.close()
    assert slurm_profile.jobs_left() == []


async def test_one_squeue_call_per_interval_for_many_watchers(slurm_profile, fresh_registry):
    settings, profile = slurm_profile.profile(poll_interval=0.5, sbatch_args=["--hold"])
    backend = SlurmBackend(settings, profile)
    runs = []
    for _ in range(2):  # each with an id of its own
        spec = backend.make_spec("gpt-oss-20b")
        runs.append(await backend.launch(spec, RunStore().create(spec)))
    poller = await backend.poller()
    subs = [poller.watch(r.handle["job_id"]) for r in runs for _ in range(5)]  # ten watchers
    try:
        states = await asyncio.gather(*(s.next(10) for s in subs))
        assert all(st.state == "PENDING" and st.reason == "JobHeldUser" for st in states)
        before = poller.calls
        await asyncio.sleep(2.6)
        calls = poller.calls - before
        assert 3 <= calls <= 7, calls  # ~one per 0.5 s interval (5), not one per watcher (50)
    finally:
        for s in subs:
            s.close()
        for r in runs:
            await backend.cancel(r)
        await backend.close()
    assert slurm_profile.jobs_left() == []


async def test_first_connection_to_a_new_compute_node_accepts_its_key(slurm_profile, fresh_registry):
    """node_ssh: the tunnel hops to the node (ssh -J login NODE).

    A new node's key is accepted, a changed one refused.
    """
    port = slurm_profile.cluster.ssh_port
    node = slurm_profile.cluster.node
    settings, profile = slurm_profile.profile(node_ssh=True, node_ssh_port=port)
    backend = SlurmBackend(settings, profile)
    run, f = await _serving(backend)
    try:
        names = [ln.split()[0] for ln in slurm_profile.known_hosts.read_text().splitlines()]
        assert names == [f"[127.0.0.1]:{port}", f"[{node}]:{port}"], names
        assert await _models(int(run.handle["local_port"])) == ["openai/gpt-oss-20b"]
    finally:
        await f.close()
        await backend.cleanup(run)
        await backend.close()
    assert slurm_profile.jobs_left() == []
    # the node's key changes: the tunnel is refused, the job cancelled, the message says why
    import subprocess

    other = slurm_profile.tmp / "node_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    lines = slurm_profile.known_hosts.read_text().splitlines()
    lines[1] = f"[{node}]:{port} " + " ".join(Path(f"{other}.pub").read_text().split()[:2])
    slurm_profile.known_hosts.write_text("\n".join(lines) + "\n")
    backend = SlurmBackend(settings, profile)
    run = await backend.launch(backend.make_spec("gpt-oss-20b"), RunStore().create(backend.make_spec("gpt-oss-20b")))
    f = Follower(backend.events(run))
    try:
        fin = await f.until(lambda e: isinstance(e, Finished), 40)
        assert fin.outcome == "failed"
        assert f"host key of [{node}]:{port} has changed" in fin.message
    finally:
        await f.close()
        await backend.cleanup(run)
        await backend.close()
    assert slurm_profile.jobs_left() == []


async def test_optional_workload_runs_through_the_tunnel(slurm_profile, fresh_registry):
    import sys

    from backends.events import Metrics, Progress

    settings, profile = slurm_profile.profile(
        run_workload=True,
        container=f"{sys.executable} -m backends.sim serve --startup-delay 0.1 --speed 0 --stats-interval 0")
    backend = SlurmBackend(settings, profile)
    spec = backend.make_spec("gpt-oss-20b").set("workload.max_requests", 6).set("workload.rate_type", "synchronous")
    run = await backend.launch(spec, RunStore().create(spec))
    f = Follower(backend.events(run))
    try:
        fin = await f.until(lambda e: isinstance(e, Finished), 60)
        assert fin.outcome == "succeeded", f.events[-5:]
        progress = [e for e in f.events if isinstance(e, Progress)]
        assert progress and progress[-1].completed == 6 and progress[-1].failed == 0
        assert any(isinstance(e, Metrics) for e in f.events)
        assert Path(fin.results).exists()
    finally:
        await f.close()
        await backend.cleanup(run)
        await backend.close()
    assert slurm_profile.jobs_left() == []


async def test_reconnect_refuses_a_changed_host_key(slurm_profile, fresh_registry):
    settings, profile = slurm_profile.profile()
    backend = SlurmBackend(settings, profile)
    run, f = await _serving(backend)
    cluster = slurm_profile.cluster
    try:
        cluster.restart_sshd_with_new_host_key()
        fin = await f.until(lambda e: isinstance(e, Finished), 20)
        assert fin.outcome == "failed" and "has changed" in fin.message
        phases = [e.state for e in f.events if isinstance(e, Phase) and e.kind == "tunnel"]
        assert phases[-1] == "failed" and "reconnecting" in phases
        assert len(slurm_profile.known_hosts.read_text().splitlines()) == 1  # the new key was not added
    finally:
        await f.close()
        cluster.stop_sshd()
        cluster.start_sshd()
        await backend.close()
    # with the real key back, the job can still be cleaned up
    backend = SlurmBackend(settings, profile)
    await backend.cancel(run)
    await backend.close()
    assert slurm_profile.jobs_left() == []


async def test_each_launch_gets_a_fresh_remote_run_directory(slurm_profile, fresh_registry):
    """The same experiment id launched twice (another state dir, a deleted record) must not share the
    remote directory: the second job would find the first's server_address.txt and tunnel to it."""
    settings, profile = slurm_profile.profile()
    backend = SlurmBackend(settings, profile)
    try:
        remote = await backend.remote()
        workdir = str(slurm_profile.cluster.base / "home" / "runs")
        stale = Path(workdir) / "same-id"
        stale.mkdir(parents=True, exist_ok=True)
        (stale / "server_address.txt").write_text("node1:1\n")  # what an old layout would have reused
        first = await backend._fresh_run_dir(remote, workdir, "same-id")
        second = await backend._fresh_run_dir(remote, workdir, "same-id")
        assert first != second and Path(first).is_dir() and Path(second).is_dir()
        assert Path(first).parent == Path(workdir) and Path(first).name.startswith("same-id.")
        assert not (Path(first) / "server_address.txt").exists()
        with pytest.raises(SweepdeckError, match="Could not create a run directory"):
            await backend._fresh_run_dir(remote, "/proc/no-such-place", "same-id")
    finally:
        await backend.close()
