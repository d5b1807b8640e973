"""Runs outlive their viewer, on SLURM: the supervisor killed, detach and attach, several clients.

* SIGKILL of the run's supervisor: nothing local is left (the tunnel's
  listener dies with it), the job is not touched; ``sweepdeck runs`` shows the
  run ``lost`` with the job as a leftover, ``runs --clean`` cancels it, and
  ``sweepdeck attach`` on such a run follows the job again through a new
  supervisor (same tunnel port, the log resumed where it was), ``--stop`` ends it.
* Detach: the workload goes on through the tunnel with no client attached
  (counted by the run's events *and* by the server); two clients attached at
  once see the same events; a detached run survives its clients leaving.
* A run that is not detached dies with its last client, not before.

Real processes throughout: the clients, the supervisors, sshd, SLURM, the job.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from backends.supervisor.supervisor import LOST_CLIENT_CLEANUP
from tests.integration.slurm.lifecycle import (
    Squeue,
    World,
    append_lines,
    completed_by_server,
    eventually,
    gone,
    last_progress,
    lines_after,
    listening,
    numbered,
    served_models,
    session_members,
    shown_lines,
    supervisor_status,
)

pytestmark = [pytest.mark.services, pytest.mark.slow]

MODEL = "Qwen/Qwen2.5-Math-1.5B"
#: Seconds from the event to "nothing of the run is left".
BOUND = 10.0


@pytest.fixture
def worlds(cluster, tmp_path):
    """Worlds on the session's cluster; their jobs are cancelled whatever the test did."""
    made: list[World] = []

    def make(name: str, **profile) -> World:
        world = World(cluster, tmp_path / name, name, **profile)
        made.append(world)
        return world

    yield make
    for world in made:
        world.cancel_jobs()


def _runs_json(world: World) -> dict[str, dict]:
    listing = world.sweepdeck("runs", "--json")
    assert listing.finish(60) == 0, listing.text
    return {row["id"]: row for row in (json.loads(line) for line in listing.lines if line.startswith("{"))}


def _nothing_local(world: World, sup: int) -> bool:
    return gone(sup) and not session_members(sup) and not listening(world.port)


def _kill_supervisor(world: World, run_id: str) -> int:
    """SIGKILL the run's supervisor; returns its pid once nothing local of it is left."""
    sup = world.supervisor_pid(run_id)
    assert sup and not gone(sup)
    os.kill(sup, signal.SIGKILL)
    assert eventually(lambda: _nothing_local(world, sup), BOUND), (
        f"left after the supervisor's SIGKILL: supervisor {'gone' if gone(sup) else 'alive'}, "
        f"session {session_members(sup)}, tunnel port {'open' if listening(world.port) else 'closed'}")
    return sup


def test_supervisor_sigkill_leaves_a_lost_run_whose_job_runs_clean_cancels(cluster, worlds):
    world = worlds("sup-kill-clean", run_workload=True)
    squeue = Squeue(cluster, max_age=0.1)
    client = world.run("--max-requests", "20000", "--rate", "5")
    try:
        client.wait_for("[INFO] Progress:", 180)
        job = str(world.meta()["job_id"])
        _kill_supervisor(world, world.name)
        rc = client.finish(30)
    finally:
        client.kill()
    # the client said how its run ended, in one line, and exited with an error
    assert rc == 1, client.text[-2000:]
    assert "Traceback" not in client.text
    assert "supervisor ended unexpectedly" in client.text, client.text[-2000:]
    # the job lives elsewhere: a crash of the supervisor does not touch it
    assert squeue.state(job) == "RUNNING"

    rows = _runs_json(world)
    row = rows[world.name]
    assert row["state"] == "lost", row
    assert [(r["kind"], r["id"]) for r in row["leftovers"]] == [("slurm_job", job)], row["leftovers"]
    table = world.sweepdeck("runs")
    assert table.finish(60) == 0
    assert f"[WARN] {world.name} (lost) may have left: SLURM job {job} on {cluster.listen}" in table.text, table.text
    assert f"Remove them with: sweepdeck runs --clean {world.name}" in table.text

    clean = world.sweepdeck("runs", "--clean")
    assert clean.finish(60) == 0, clean.text
    assert f"[INFO] {world.name}: cancelled SLURM job {job} on {cluster.listen}" in clean.text, clean.text
    assert eventually(lambda: squeue.state(job) is None, BOUND), f"job {job} is still {squeue.state(job)}"
    assert world.meta()["leftovers"] == [] and world.meta()["state"] == "lost"
    again = world.sweepdeck("runs", "--clean")
    assert again.finish(60) == 0 and "has nothing left behind" in again.text, again.text


def test_attach_adopts_a_lost_run_whose_job_runs_then_stop_ends_it(cluster, worlds):
    world = worlds("sup-kill-adopt")
    squeue = Squeue(cluster, max_age=0.1)
    client = world.run()
    try:
        client.wait_for("[INFO] Endpoint ready", 180)
        job = str(world.meta()["job_id"])
        out = world.vllm_out()
        append_lines(out, [f"adopt-{i}" for i in range(1, 11)])
        client.wait_for("[VLLM OUT] adopt-10", 30)
        old = _kill_supervisor(world, world.name)
        client.finish(30)
    finally:
        client.kill()
    append_lines(out, [f"adopt-{i}" for i in range(11, 21)])  # while nothing follows the job
    assert squeue.state(job) == "RUNNING"

    follower = world.sweepdeck("attach", world.name)
    try:
        follower.wait_for(f"{world.name} lost its supervisor but SLURM job {job} on {cluster.listen} is still there",
                          60)
        follower.wait_for("[INFO] Endpoint ready", 120)
        follower.wait_for("[VLLM OUT] adopt-20", 60)
        new = world.supervisor_pid()
        assert new and new != old and not gone(new), "a new supervisor follows the job"
        assert world.meta()["state"] == "running"
        # the same local port again, through the new supervisor's tunnel
        assert served_models(world.port) == [MODEL]
        append_lines(out, [f"adopt-{i}" for i in range(21, 31)])
        follower.wait_for("[VLLM OUT] adopt-30", 30)
        # the saved lines first (1-10), then the log from where the dead supervisor's client had it shown
        assert numbered(shown_lines(follower.text), "adopt-") == list(range(1, 31)), follower.text[-3000:]

        stop = world.sweepdeck("attach", world.name, "--stop")
        assert stop.finish(60) == 0, stop.text
        began = time.monotonic()
        assert eventually(lambda: squeue.state(job) is None and _nothing_local(world, new), BOUND), \
            f"job {squeue.state(job)}, supervisor {'gone' if gone(new) else 'alive'}, port {listening(world.port)}"
        assert f"[INFO] Stopped {world.name}: job {job} cancelled; its cleanup is done." in stop.text, stop.text
        follower.finish(30)
    finally:
        follower.kill()
    assert time.monotonic() - began < BOUND
    assert world.meta()["state"] == "cancelled", world.meta()
    assert "Traceback" not in follower.text


def test_a_detached_workload_goes_on_and_two_clients_see_the_same_events(cluster, worlds):
    world = worlds("detach-two", run_workload=True)
    squeue = Squeue(cluster, max_age=0.1)
    client = world.run("--max-requests", "20000", "--rate", "5", "--detach-on-exit")
    try:
        client.wait_for("[INFO] Progress:", 180)
        assert eventually(lambda: last_progress(world) >= 3, 60), "the workload does not progress"
        job, sup = str(world.meta()["job_id"]), world.supervisor_pid()
        client.proc.send_signal(signal.SIGINT)  # with --detach-on-exit: detach, the run goes on
        assert client.finish(30) == 0, client.text[-2000:]
    finally:
        client.kill()
    assert f"Reattach with: sweepdeck attach {world.name}" in client.text
    assert world.meta()["state"] == "detached"

    # no client now: the supervisor keeps the workload going through the tunnel
    by_events, by_server = last_progress(world), completed_by_server(world.port)
    assert eventually(lambda: last_progress(world) >= by_events + 10, 60), \
        f"no progress while detached: {by_events} → {last_progress(world)}"
    assert eventually(lambda: completed_by_server(world.port) >= by_server + 10, 60), \
        "the server saw no new requests while detached"
    assert squeue.state(job) == "RUNNING" and not gone(sup)
    detached_done = last_progress(world)

    following = f"[INFO] Following {world.name} (detached)"
    first = world.sweepdeck("attach", world.name)
    second = None
    try:
        first.wait_for(following, 60)
        # what the first client shows live is where the run really is: past what it did with no client
        assert eventually(lambda: lines_after(first, following, "[INFO] Progress: "), 60), first.text[-2000:]
        live = lines_after(first, following, "[INFO] Progress: ")[0]
        assert int(live.split("Progress: ", 1)[1].split("/", 1)[0]) >= detached_done, (live, detached_done)
        second = world.sweepdeck("attach", world.name)
        second.wait_for(following, 60)
        assert eventually(lambda: supervisor_status(world.run_dir())["clients"] == 2, 30), \
            "the supervisor does not count both clients"
        out = world.vllm_out()
        append_lines(out, [f"both-{i}" for i in range(1, 21)])
        first.wait_for("[VLLM OUT] both-20", 30)
        second.wait_for("[VLLM OUT] both-20", 30)
        # the same log, line for line, in both terminals (its saved part and the live one)
        assert shown_lines(first.text) == shown_lines(second.text)
        assert numbered(shown_lines(first.text), "both-") == list(range(1, 21))
        for follower in (first, second):  # Ctrl+C on attach only leaves
            follower.proc.send_signal(signal.SIGINT)
            assert follower.finish(30) == 0, follower.text[-2000:]
    finally:
        first.kill()
        if second is not None:
            second.kill()
    # both clients are gone; the run was detached: it goes on
    after = last_progress(world)
    assert eventually(lambda: last_progress(world) >= after + 5, 60)
    assert squeue.state(job) == "RUNNING" and not gone(sup) and world.meta()["state"] == "detached"
    stop = world.sweepdeck("attach", world.name, "--stop")
    assert stop.finish(60) == 0, stop.text
    assert eventually(lambda: squeue.state(job) is None and _nothing_local(world, sup), BOUND)
    assert world.meta()["state"] == "cancelled"


def test_a_run_that_is_not_detached_dies_with_its_last_client(cluster, worlds):
    world = worlds("last-client", run_workload=True)
    squeue = Squeue(cluster, max_age=0.1)
    starter = world.run("--max-requests", "20000", "--rate", "5")
    follower = None
    try:
        starter.wait_for("[INFO] Progress:", 180)
        job, sup = str(world.meta()["job_id"]), world.supervisor_pid()
        follower = world.sweepdeck("attach", world.name)
        follower.wait_for(f"[INFO] Following {world.name} (running)", 60)
        # the follower holds the run once the supervisor counts it (it does by the time the line above is printed)
        assert eventually(lambda: supervisor_status(world.run_dir())["clients"] == 2, 30), \
            "the supervisor does not count the second client"
        starter.kill()  # SIGKILL: the client that started the run is gone, another still holds it
        before = last_progress(world)
        # longer than the supervisor's lost-client cleanup bound, counted in requests served meanwhile
        enough = before + int(5 * (LOST_CLIENT_CLEANUP + 2))
        assert eventually(lambda: last_progress(world) >= enough, 60), \
            f"the run did not go on with one client left: {before} → {last_progress(world)}"
        assert squeue.state(job) == "RUNNING" and not gone(sup) and listening(world.port)
        assert world.meta()["state"] == "running"
        following = f"[INFO] Following {world.name} (running)"
        assert eventually(lambda: lines_after(follower, following, "[INFO] Progress: "), 30), \
            "the remaining client does not follow the run live"
        assert supervisor_status(world.run_dir())["clients"] == 1
        follower.proc.send_signal(signal.SIGINT)  # it leaves too: it was the last one
        began = time.monotonic()
        assert eventually(lambda: squeue.state(job) is None and _nothing_local(world, sup), BOUND), \
            f"job {squeue.state(job)}, supervisor {'gone' if gone(sup) else 'alive'}, port {listening(world.port)}"
        took = time.monotonic() - began
        assert follower.finish(30) == 0
    finally:
        starter.kill()
        if follower is not None:
            follower.kill()
    assert took < BOUND
    final = world.meta()
    assert final["state"] == "cancelled" and "last client is gone" in final["message"].lower(), final
