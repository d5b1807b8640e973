"""squeue/sbatch/scontrol parsing and the shared squeue poller (fake remote, no SSH)."""

from __future__ import annotations

import asyncio

import pytest

from backends.slurm import jobs
from backends.slurm.ssh import Result
from config.errors import SweepdeckError


def test_parse_job_id():
    assert jobs.parse_job_id("5382685\n") == "5382685"
    assert jobs.parse_job_id("5382685;alvis\n") == "5382685"
    with pytest.raises(SweepdeckError, match="did not print a job id"):
        jobs.parse_job_id("sbatch: error: whatever")


def test_parse_squeue_states_nodes_reasons():
    out = "12|PENDING||Resources\n13|RUNNING|alvis7-07|None\n14|PENDING|(null)|JobHeldUser\n\n"
    st = jobs.parse_squeue(out)
    assert st["12"].state == "PENDING" and st["12"].reason == "Resources" and st["12"].active
    assert st["13"].running and st["13"].node == "alvis7-07" and st["13"].reason == ""
    assert st["14"].node == "" and st["14"].reason == "JobHeldUser"


def test_parse_scontrol_final_state():
    text = ("JobId=7 JobName=sweepdeck-alvis UserId=root(0) JobState=TIMEOUT Reason=TimeLimit Dependency=(null) "
            "ExitCode=0:15 NodeList=vm")
    st = jobs.parse_scontrol("7", text)
    assert (st.state, st.node, st.exit_code, st.active) == ("TIMEOUT", "vm", "0:15", False)
    assert jobs.parse_scontrol("7", "garbage") is None


def test_sbatch_argv_is_a_list():
    assert jobs.sbatch_argv("jobscript.sh", ["--hold"]) == ["sbatch", "--parsable", "--hold", "jobscript.sh"]


class FakeRemote:
    """Answers squeue/scontrol from a dict; counts calls."""

    connected = True

    def __init__(self) -> None:
        self.states = {"1": "1|PENDING||Priority", "2": "2|RUNNING|n1|None"}
        self.calls: list[list[str]] = []

    async def run(self, argv, **kw):
        self.calls.append(list(argv))
        if argv[0] == "squeue":
            ids = argv[argv.index("-j") + 1].split(",") if "-j" in argv else list(self.states)
            if "-j" in argv and any(i not in self.states for i in ids) and len(ids) == 1:
                return Result(1, "", "slurm_load_jobs error: Invalid job id specified")
            return Result(0, "\n".join(self.states[i] for i in ids if i in self.states), "")
        if argv[0] == "scontrol":
            return Result(0, f"JobId={argv[-1]} JobState=COMPLETED Reason=None ExitCode=0:0 NodeList=n1", "")
        return Result(1, "", "unknown")


async def test_one_squeue_per_interval_whatever_the_number_of_watchers():
    remote = FakeRemote()
    poller = jobs.JobPoller(remote, interval=0.05)
    subs = [poller.watch("1") for _ in range(10)] + [poller.watch("2") for _ in range(10)]
    first = await asyncio.gather(*(s.next(2) for s in subs))
    assert {s.state for s in first[:10]} == {"PENDING"} and {s.state for s in first[10:]} == {"RUNNING"}
    await asyncio.sleep(0.5)
    squeues = [c for c in remote.calls if c[0] == "squeue"]
    assert 5 <= len(squeues) <= 13  # ~0.55 s / 0.05 s, one call for all 20 watchers
    assert all(c[c.index("-j") + 1] == "1,2" for c in squeues)
    # job 1 starts, then leaves the queue: every watcher of it sees both, once
    remote.states["1"] = "1|RUNNING|n2|None"
    started = await asyncio.gather(*(s.next(2) for s in subs[:10]))
    assert all(st.state == "RUNNING" and st.node == "n2" for st in started)
    del remote.states["1"]
    ends = await asyncio.gather(*(s.next(2) for s in subs[:10]))
    assert all(e.state == "COMPLETED" and not e.active for e in ends)
    assert all(s._watch.queue.empty() for s in subs[10:])  # job 2 unchanged: no repeats
    for s in subs:
        s.close()
    await poller.close()


async def test_poller_survives_a_failing_squeue():
    remote = FakeRemote()

    async def broken(argv, **kw):
        remote.calls.append(list(argv))
        raise SweepdeckError("Remote command failed: SSH connection lost.")

    remote.run = broken
    poller = jobs.JobPoller(remote, interval=0.02)
    sub = poller.watch("1")
    await asyncio.sleep(0.1)
    assert len(remote.calls) >= 2 and sub.last is None  # kept polling, reported nothing false
    await poller.close()
