"""A network partition between the run's supervisor and the cluster, mid-run: the run rides it out.

The whole test cluster — sshd (the login node), slurmctld, slurmd, munged and
so the job and its server — runs in a network namespace of its own, reached
from here only through a veth pair (:class:`~.netns.PartitionedCluster`). The
client and the run's supervisor stay here. Mid-run the link is taken down for
30 s (``ip link set … down``), then brought back. What the cut severs: every
packet between this machine (client, supervisor, tunnel listener) and the
cluster (SSH to the login node, and through it the tunnel and the log tails).
What it leaves alone: the cluster itself — controller, node, job and server
talk over the namespace's own loopback — so the job must survive it.

Expected, and checked: the client shows the broken connection while the link
is down (the tunnel's port closed meanwhile) and the events record the tunnel
``broken`` → ``reconnecting`` → ``up``; the job keeps RUNNING; the same
supervisor reconnects; the tunnel comes back on the same local port (an HTTP
request through it works again); the log resumes with no line lost or
repeated (numbered lines written into the job's vllm.out before, during and
after the cut).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import httpx
import pytest

from backends.events import Phase
from tests.integration.slurm.cluster import SSHD
from tests.integration.slurm.lifecycle import (
    Squeue,
    World,
    append_lines,
    eventually,
    gone,
    listening,
    numbered,
    served_models,
    session_members,
    shown_lines,
)
from tests.integration.slurm.netns import IP, NSENTER, PartitionedCluster
from tests.support.services import require, require_binary

pytestmark = [pytest.mark.services, pytest.mark.slow]

MODEL = "Qwen/Qwen2.5-Math-1.5B"
#: How long the link is down: the scenario itself, longer than SSH keepalive takes to call the connection dead.
CUT_S = 30.0


@pytest.fixture(scope="module")
def partitioned():
    for binary, package in ((SSHD, "openssh-server"), ("slurmctld", "slurmctld"), ("slurmd", "slurmd"),
                            ("sbatch", "slurm-client"), ("/usr/sbin/munged", "munge"), (IP, "iproute2"),
                            (NSENTER, "util-linux")):
        require_binary(binary, package)
    require(os.geteuid() == 0, "a network namespace and a veth pair need root")
    cluster = PartitionedCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
    left = subprocess.run([IP, "netns", "list"], capture_output=True, text=True, timeout=20).stdout
    assert cluster.netns not in left, "the namespace was not removed"


def _tunnel_states(world: World, run_id: str) -> list[str]:
    return [e.state for e in world.events(run_id) if isinstance(e, Phase) and e.kind == "tunnel"]


def test_a_30_s_partition_mid_run_is_ridden_out(partitioned, tmp_path):
    world = World(partitioned, tmp_path / "cut", "cut")
    squeue = Squeue(partitioned, max_age=0.1)
    client = world.sweepdeck("alvis", "connect", "--profile", world.name, "-m", "qwen-1.5b")
    try:
        client.wait_for("✓ Connection successful!", 180)
        run_id = world.run_ids()[0]
        job, sup = str(world.meta(run_id)["job_id"]), world.supervisor_pid(run_id)
        out = world.vllm_out(run_id)
        n = 0

        def write(count: int) -> None:
            nonlocal n
            append_lines(out, [f"seq-{i}" for i in range(n + 1, n + count + 1)])
            n += count

        write(20)
        client.wait_for("[VLLM OUT] seq-20", 30)
        assert served_models(world.port) == [MODEL]

        partitioned.cut()
        cut_at = time.monotonic()
        try:
            while time.monotonic() - cut_at < CUT_S:  # the partition: a line a second into the job's log
                write(1)
                time.sleep(1.0)
                if client.count("[WARN] SSH connection lost"):
                    # the client shows it, and the tunnel's port is closed while there is no connection
                    assert not listening(world.port)
                    assert squeue.state(job) == "RUNNING", "the job must not notice the partition"
            broken_seen = client.count("[WARN] SSH connection lost")
        finally:
            partitioned.restore()
        assert broken_seen, f"the client never showed the broken connection in {CUT_S:g} s:\n{client.text[-2000:]}"
        write(20)  # after the cut
        client.wait_for(f"[INFO] SSH reconnected; tunnel re-opened on 127.0.0.1:{world.port}", 60)
        client.wait_for(f"[VLLM OUT] seq-{n}", 60)

        # the same tunnel port works again, through the same supervisor, to the same job
        assert eventually(lambda: _answers(world.port), 30), "no answer through the tunnel after the cut"
        assert served_models(world.port) == [MODEL]
        assert world.supervisor_pid(run_id) == sup and not gone(sup)
        assert squeue.state(job) == "RUNNING"
        # no line lost or repeated: what the client showed and what the run saved
        assert numbered(shown_lines(client.text), "seq-") == list(range(1, n + 1)), client.text[-3000:]
        assert numbered(world.saved_lines(run_id), "seq-") == list(range(1, n + 1))
        states = _tunnel_states(world, run_id)
        assert states[0] == "up" and states[-1] == "up", states
        assert "broken" in states and "reconnecting" in states
        assert states.index("broken") < states.index("reconnecting"), states

        client.proc.send_signal(signal.SIGINT)
        assert client.finish(60) == 0, client.text[-2000:]
    finally:
        client.kill()
        world.cancel_jobs()
    assert eventually(lambda: squeue.state(job) is None and not listening(world.port) and gone(sup)
                      and not session_members(sup), 10)
    assert world.meta(run_id)["state"] == "cancelled"


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False
