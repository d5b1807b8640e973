"""SLURM commands over SSH (always quoted argv) and one shared squeue poller per profile.

:class:`JobPoller` runs ``squeue`` once per poll interval for *all* the jobs
watched on a profile, however many runs, panes or watchers subscribe; each
watcher gets the state of its own job. A job that leaves ``squeue`` has ended:
its final state comes from ``scontrol show job`` (kept for MinJobAge) or
``sacct`` when accounting is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass, field

from config.errors import SweepdeckError

log = logging.getLogger(__name__)

ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING",
                 "SIGNALING", "STAGE_OUT"}
SQUEUE_FORMAT = "%i|%T|%N|%r"


@dataclass(slots=True)
class JobState:
    """What squeue/scontrol says about one job."""

    job_id: str
    state: str
    node: str = ""
    reason: str = ""
    exit_code: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def running(self) -> bool:
        return self.state == "RUNNING"


def sbatch_argv(script: str, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    return ["sbatch", "--parsable", *extra, script]


def parse_job_id(stdout: str) -> str:
    """``5382685`` or ``5382685;cluster`` → ``5382685``."""
    text = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    job_id = text.split(";", 1)[0].strip()
    if not job_id.isdigit():
        raise SweepdeckError(f"sbatch did not print a job id (got {stdout.strip()!r}).")
    return job_id


def parse_squeue(stdout: str) -> dict[str, JobState]:
    out: dict[str, JobState] = {}
    for line in stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 2 or not parts[0]:
            continue
        job_id, state = parts[0].strip(), parts[1].strip()
        node = parts[2].strip() if len(parts) > 2 else ""
        reason = parts[3].strip() if len(parts) > 3 else ""
        if node in ("(null)", "n/a"):
            node = ""
        if reason in ("None", "(null)"):
            reason = ""
        out[job_id] = JobState(job_id, state, node, reason)
    return out


def parse_scontrol(job_id: str, stdout: str) -> JobState | None:
    """Final state from ``scontrol show job -o ID``."""
    fields = dict(re.findall(r"(\w+)=(\S*)", stdout))
    state = fields.get("JobState")
    if not state:
        return None
    node = fields.get("NodeList", "")
    return JobState(job_id, state, "" if node == "(null)" else node, fields.get("Reason", "").replace("None", ""),
                    fields.get("ExitCode", ""))


async def submit(remote, run_dir: str, script: str, extra: list[str] | tuple[str, ...] = ()) -> str:
    """``sbatch --parsable`` from ``run_dir``; returns the job id.

    Raises:
        SweepdeckError: sbatch failed; the message carries sbatch's own error.
    """
    # No automatic retry: a submission cut off by a dropped connection may have
    # gone through, and a second sbatch would start a second job.
    res = await remote.run(sbatch_argv(script, extra), cwd=run_dir, timeout=60, retry=False)
    if not res.ok:
        err = res.stderr.strip() or res.stdout.strip() or f"exit code {res.returncode}"
        raise SweepdeckError(
            f"Job submission failed: {err}",
            "Check the profile's account/partition/gpus and sbatch_args (sbatch's message above says which).",
        )
    return parse_job_id(res.stdout)


async def cancel(remote, job_id: str) -> bool:
    res = await remote.run(["scancel", job_id], timeout=30)
    return res.ok


async def final_state(remote, job_id: str) -> JobState:
    """The state of a job no longer in squeue (``COMPLETED``, ``FAILED``, ``TIMEOUT``...)."""
    res = await remote.run(["scontrol", "show", "job", "-o", job_id], timeout=30)
    if res.ok:
        found = parse_scontrol(job_id, res.stdout)
        if found:
            return found
    res = await remote.run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,ExitCode,NodeList"], timeout=30)
    if res.ok and res.stdout.strip():
        state, _, rest = res.stdout.strip().splitlines()[0].partition("|")
        code, _, node = rest.partition("|")
        return JobState(job_id, state.split()[0], node, "", code)
    return JobState(job_id, "ENDED")


async def our_jobs(remote, job_name: str) -> list[JobState]:
    """Our active jobs of this profile (named ``job_name``)."""
    res = await remote.run(["squeue", "--me", "-h", "-n", job_name, "-o", SQUEUE_FORMAT], timeout=30)
    if not res.ok:
        return []
    return list(parse_squeue(res.stdout).values())


# ------------------------------------------------------------------- the poller


@dataclass
class _Watch:
    job_id: str
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    last: JobState | None = None


class JobPoller:
    """One ``squeue`` call per interval for every job watched on a profile.

    Args:
        remote: The profile's :class:`~backends.slurm.ssh.Remote`.
        interval: Seconds between polls.
    """

    def __init__(self, remote, interval: float) -> None:
        self.remote = remote
        self.interval = interval
        self.calls = 0
        self._watches: dict[int, _Watch] = {}
        self._ids = 0
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()

    def watch(self, job_id: str) -> Subscription:
        self._ids += 1
        w = _Watch(str(job_id))
        self._watches[self._ids] = w
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="squeue-poller")
        else:
            self._wake.set()  # a new job: poll now rather than at the next tick
        return Subscription(self, self._ids, w)

    def _unwatch(self, token: int) -> None:
        self._watches.pop(token, None)

    async def close(self) -> None:
        self._watches.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._watches:
            # Fixed rate: one call per interval, however long the call itself takes.
            next_tick = loop.time() + self.interval
            ids = sorted({w.job_id for w in self._watches.values()}, key=int)
            try:
                states = await self.poll(ids)
            except SweepdeckError as exc:
                log.info("squeue failed: %s", exc.message)
                states = None
            if states is not None:
                ended = [i for i in ids if i not in states]
                for job_id in ended:
                    try:
                        states[job_id] = await final_state(self.remote, job_id)
                    except SweepdeckError:
                        states[job_id] = JobState(job_id, "ENDED")
                for w in list(self._watches.values()):
                    st = states.get(w.job_id)
                    if st is not None and (
                        w.last is None or (st.state, st.node, st.reason) != (w.last.state, w.last.node, w.last.reason)
                    ):
                        w.last = st
                        w.queue.put_nowait(st)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_tick - loop.time()))

    async def poll(self, ids: list[str]) -> dict[str, JobState] | None:
        """One squeue call for ``ids``; None when squeue itself failed."""
        self.calls += 1
        res = await self.remote.run(["squeue", "-h", "-j", ",".join(ids), "-o", SQUEUE_FORMAT],
                                    timeout=max(30.0, self.interval))
        if res.ok:
            return parse_squeue(res.stdout)
        if "Invalid job id" in res.stderr:
            # squeue refuses the whole list when one id is purged: every id not
            # listed has ended.
            if len(ids) == 1:
                return {}
            res = await self.remote.run(["squeue", "--me", "-h", "-o", SQUEUE_FORMAT], timeout=30)
            if res.ok:
                return {k: v for k, v in parse_squeue(res.stdout).items() if k in ids}
        log.info("squeue: %s", res.stderr.strip())
        return None


class Subscription:
    """One watcher's view of its job: ``await next()`` yields each state change."""

    def __init__(self, poller: JobPoller, token: int, watch: _Watch) -> None:
        self.poller = poller
        self.token = token
        self._watch = watch

    @property
    def last(self) -> JobState | None:
        return self._watch.last

    async def next(self, timeout: float | None = None) -> JobState:
        return await asyncio.wait_for(self._watch.queue.get(), timeout)

    def close(self) -> None:
        self.poller._unwatch(self.token)
