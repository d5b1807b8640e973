"""The ``slurm`` backend: a vLLM server as a SLURM job, reached over SSH.

Lifecycle (the Alvis ``vllm-connect.sh`` workflow):

1. pre-flight: SSH reachable, model in ``models.json``, duration valid, local
   port free, no job of ours already running on this profile;
2. render ``templates/slurm/jobscript.sh.j2`` into the run store, upload it to
   ``<workdir>/<run id>/`` on the cluster's shared filesystem and submit it
   there with ``sbatch --parsable``;
3. watch the job through the profile's shared squeue poller (PENDING with its
   reason, RUNNING on a node; start timeout → scancel);
4. read ``server_address.txt`` that the job writes into the run directory
   (never ``$TMPDIR``, which is node-local) and wait for the server's startup
   line in ``vllm.err``/``vllm.out`` (ready timeout → scancel + tail of vllm.err);
5. forward ``127.0.0.1:<local port>`` to ``node:port`` through the SSH
   connection, check ``GET /v1/models`` within ``connect_timeout``, emit
   ``Endpoint``;
6. stream both logs (buffered until the tunnel works, then live) and report
   the job's or the server's end with a diagnosis.

SSH drops are survived: the connection is re-opened with backoff, the tunnel
comes back on the same local port and the tails resume at their byte offsets.
Everything created registers its undo in the backend's cleanup registry (the
run's own, in its supervisor); the job is recorded as a resource, so a run whose
supervisor died can be reconciled and its job cancelled (``sweepdeck runs --clean``).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import os
import shlex
import socket
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backends.base import BackendBase, Check, Run
from backends.cleanup import CleanupRegistry
from backends.events import Alert, Endpoint, Event, Finished, LogLine, Notice, Phase
from backends.slurm import jobs
from backends.slurm.catalog import ClusterCatalog, ClusterModel, ModelNotInCatalog, load_profile_catalog
from backends.slurm.logs import RemoteTail
from backends.slurm.preflight import profile_checks
from backends.slurm.ssh import Remote, SshTarget
from backends.store import RunDir, RunRecord, RunStore
from config.durations import format_slurm_duration, parse_slurm_duration
from config.errors import SweepdeckError

if TYPE_CHECKING:
    from config.settings import Profile, Settings
    from config.spec import ExperimentSpec

log = logging.getLogger(__name__)

READY_MARKERS = ("Application startup complete",)
SESSION_KEYS = ("JOB_ID", "NODE", "PORT", "LOCAL_PORT", "TMPDIR", "MODEL", "STARTED")


# ----------------------------------------------------------------- shared state

#: One Remote + one squeue poller per (profile, event loop): every run and every
#: watcher of a profile shares them.
_SHARED: dict[tuple[str, int], tuple[Remote, jobs.JobPoller]] = {}


def _loop_key(profile_name: str) -> tuple[str, int]:
    return profile_name, id(asyncio.get_running_loop())


# ------------------------------------------------------------------ local ports


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def next_free_port(port: int, tries: int = 200) -> int | None:
    for candidate in range(port + 1, min(port + 1 + tries, 65536)):
        if port_free(candidate):
            return candidate
    return None


def port_holder(port: int) -> str:
    """``name (pid N)`` of the process listening on ``port``, if it can be found."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 9 and parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(parts[9])
    if not inodes:
        return ""
    wanted = {f"socket:[{i}]" for i in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    name = (proc / "comm").read_text().strip()
                    return f"{name} (pid {proc.name})"
        except OSError:
            continue
    return ""


# --------------------------------------------------------------------- backend


class SlurmBackend(BackendBase):
    """``slurm`` backend for one profile (e.g. ``alvis``).

    Args:
        settings: The user settings.
        profile: A validated slurm profile.
        registry: Cleanup registry (the process-wide one by default).
    """

    name = "slurm"

    def __init__(self, settings: Settings, profile: Profile, *, registry: CleanupRegistry | None = None) -> None:
        super().__init__(settings, profile, registry=registry)
        self.target = SshTarget.from_profile(profile)
        self._catalog: ClusterCatalog | None = None
        self.sessions: dict[str, _RunSession] = {}
        #: Cleanup-registry tokens of each run's job and tunnel (kept off Run.handle, which is saved).
        self._tokens: dict[tuple[str, str], int] = {}

    # ------------------------------------------------------------ helpers
    @property
    def job_name(self) -> str:
        return f"sweepdeck-{self.profile.name}"

    @property
    def poll_interval(self) -> float:
        return float(self.profile.get("poll_interval", 5.0))

    def catalog(self) -> ClusterCatalog:
        if self._catalog is None:
            self._catalog = load_profile_catalog(self.profile)
        return self._catalog

    def resolve_model(self, name: str) -> ClusterModel:
        """The catalog entry for ``name`` (with no catalog, the name is the model path).

        Raises:
            ModelNotInCatalog: not in models.json (``.available`` lists what is).
            SweepdeckError: the name holds control characters (newlines...).
        """
        if not name or not name.isprintable():
            raise SweepdeckError(
                f"The model name {name!r} contains control characters (such as a newline).",
                "Use a model name from models.json; names are passed to the cluster quoted, but never with line breaks.",
            )
        catalog = self.catalog()
        if catalog.path is None:
            return ClusterModel(name, name, None, "")
        if name not in catalog:
            # ``sweepdeck run`` names models by their Hugging Face id: match the served name.
            by_served = [m for m in catalog.models.values() if m.served_name == name]
            if len(by_served) == 1:
                name = by_served[0].name
        model = catalog.get(name)
        if not model.path.isprintable() or not model.served_name.isprintable():
            raise SweepdeckError(
                f"The path of model {name!r} in {catalog.path} contains control characters.",
                f"Fix the entry in {catalog.path}.",
            )
        return model

    def duration(self) -> str:
        text = str(self.profile.get("time", "1:00:00"))
        try:
            return format_slurm_duration(parse_slurm_duration(text))
        except ValueError as exc:
            raise SweepdeckError(f"Invalid job duration: {exc}.", "Example: -t 2:00:00 or -t 1-12:00:00") from None

    def local_port(self) -> int:
        return int(self.profile.get("local_port", 58000))

    def make_spec(self, model: str, *, experiment_id: str | None = None):
        """An ExperimentSpec for ``model`` from this profile's models.json."""
        from config.catalog import dns_label
        from config.spec import EngineSettings, ExperimentSpec, Origin, Source

        entry = self.resolve_model(model)
        workload = self.settings.catalogs.workloads.match("chatbot").profile
        now = _dt.datetime.now()
        run_id = experiment_id or dns_label(f"{self.profile.name}-{now:%m%d-%H%M%S}-{entry.name}", 56)
        run_id = RunStore().free_id(run_id)
        engine = EngineSettings(image=self.profile.get("container", "vllm serve"),
                                max_model_len=entry.max_model_len or 4096)
        return ExperimentSpec(
            model=entry.name, backend="slurm", workload=workload, engine=engine,
            experiment_id=run_id, profile=self.profile.name,
            origins={"model": Origin(Source.USER), "engine.max_model_len": Origin(Source.CATALOG if entry.max_model_len else Source.DEFAULT)},
        )

    # ------------------------------------------------------------ connection
    async def remote(self) -> Remote:
        """The profile's shared, reconnecting SSH connection (opened on first use)."""
        key = _loop_key(self.profile.name)
        shared = _SHARED.get(key)
        if shared is not None and (shared[0].connected or shared[0]._watch is not None and not shared[0]._closing):
            return shared[0]
        remote = Remote(self.target, backoff=self.profile.get("reconnect_backoff") or (0.2, 0.5, 1.0, 2.0, 5.0, 10.0))
        await remote.connect()
        poller = jobs.JobPoller(remote, self.poll_interval)
        _SHARED[key] = (remote, poller)

        async def close() -> None:
            _SHARED.pop(key, None)
            await poller.close()
            await remote.close()

        self.registry.register(f"close SSH connection to {self.target.host}", close, resource={"kind": "connection"})
        return remote

    async def poller(self) -> jobs.JobPoller:
        await self.remote()
        return _SHARED[_loop_key(self.profile.name)][1]

    async def close(self) -> None:
        """Close the shared connection of this profile (if this loop opened one)."""
        shared = _SHARED.pop(_loop_key(self.profile.name), None)
        if shared:
            await shared[1].close()
            await shared[0].close()

    # ------------------------------------------------------------ pre-flight
    async def check_ssh(self) -> Check:
        name = f"SSH connection to {self.target.host}"
        try:
            remote = await self.remote()
            res = await remote.run(["true"], timeout=self.target.connect_timeout)
        except SweepdeckError as exc:
            return Check(name, "fail", exc.message, exc.hint)
        if not res.ok:
            return Check(name, "fail", f"a test command failed (exit {res.returncode}): {res.stderr.strip()}")
        return Check(name, "pass", "SSH connection successful")

    def check_model(self, model: str) -> Check:
        try:
            entry = self.resolve_model(model)
        except ModelNotInCatalog as exc:
            return Check(f"Model {model}", "fail", exc.message, "Available models: " + ", ".join(m.split(":")[0] for m in exc.available),
                         data={"available": exc.available})
        except SweepdeckError as exc:
            return Check(f"Model {model}", "fail", exc.message, exc.hint)
        return Check(f"Model {model}", "pass", f"path {entry.path}", data={"path": entry.path})

    def check_duration(self) -> Check:
        try:
            value = self.duration()
        except SweepdeckError as exc:
            return Check("Job duration", "fail", exc.message, exc.hint)
        return Check("Job duration", "pass", value)

    def check_port(self, port: int | None = None, *, flag: str | None = None) -> Check:
        """Is the tunnel's local port free?

        Args:
            port: The port (default: the profile's ``local_port``).
            flag: The command-line option that sets the port where the check
                is shown (``--port`` on ``alvis connect``); without one the fix
                names the profile's ``local_port`` setting (``sweepdeck run``, the TUI).
        """
        port = port or self.local_port()
        name = f"Local port {port} free"
        if port_free(port):
            return Check(name, "pass")
        holder = port_holder(port)
        nxt = next_free_port(port)
        detail = f"port {port} is in use" + (f" by {holder}" if holder else "")
        if flag:
            way = f"the next free port: {flag} {nxt}" if nxt else f"another port with {flag}"
        else:
            way = (f"the next free port: set local_port: {nxt}" if nxt else "another port: set local_port") \
                + f" in profile {self.profile.name} of your sweepdeck config"
        fix = (f"Stop {holder}, or use " if holder else "Free it, or use ") + way
        return Check(name, "fail", detail, fix, data={"holder": holder, "next_free_port": nxt})

    async def check_existing(self) -> Check:
        name = f"No job of profile {self.profile.name} running"
        try:
            remote = await self.remote()
            found = [j for j in await jobs.our_jobs(remote, self.job_name) if j.active]
        except SweepdeckError as exc:
            return Check(name, "warn", f"could not list jobs: {exc.message}")
        if not found:
            return Check(name, "pass")
        job = found[0]
        record = self.find_run(job.job_id)
        where = f"{job.state} on {job.node}" if job.node else job.state
        fix = "Attach to it: sweepdeck alvis connect --attach" + (f" (run {record.id})" if record else "") + f", or cancel it: scancel {job.job_id}"
        return Check(name, "fail", f"job {job.job_id} of this profile is already {where}", fix,
                     data={"job_id": job.job_id, "run_id": record.id if record else None})

    async def preflight(self, spec) -> list[Check]:
        checks = [await self.check_ssh()]
        checks.append(self.check_model(spec.model))
        checks.append(self.check_duration())
        if checks[0].ok:
            checks.append(await self.check_existing())
        checks += profile_checks(self.profile, self.catalog(), spec)
        checks.append(self.check_port())
        return checks

    def find_run(self, job_id: str) -> RunRecord | None:
        for record in RunStore().list():
            if record.backend == "slurm" and record.meta.get("profile") == self.profile.name and record.session().get("JOB_ID") == str(job_id):
                return record
        return None

    def live_runs(self) -> list[RunRecord]:
        """Saved runs of this profile that may still have a job (newest first): going, or lost with its job left."""
        from backends.supervisor.reconcile import reconcile_records

        mine = [r for r in RunStore().list() if r.backend == "slurm" and r.meta.get("profile") == self.profile.name]
        return [r for r in reconcile_records(mine) if r.session().get("JOB_ID") and (
            r.live or any(x.get("kind") == "slurm_job" for x in r.meta.get("leftovers") or []))]

    # ------------------------------------------------------------ launch
    def render_jobscript(self, spec, entry: ClusterModel, run_dir: str) -> str:
        from templates.render import render

        container = shlex.split(str(self.profile.get("container", "vllm serve")))
        extra = [shlex.quote(a) for a in spec.engine.extra_args]
        return render(
            "slurm/jobscript.sh.j2",
            run_id=spec.experiment_id,
            profile=self.profile.name,
            job_name=self.job_name,
            account=self.profile.get("account"),
            partition=self.profile.get("partition"),
            gpus=self.profile.get("gpus"),
            time=self.duration(),
            run_dir_q=shlex.quote(run_dir),
            modules=list(self.profile.get("modules", []) or []),
            model_path_q=shlex.quote(entry.path),
            served_name_q=shlex.quote(entry.served_name),
            server_command=shlex.join(container),
            server_host=shlex.quote(self.profile["server_host"]) if self.profile.get("server_host") else "",
            max_model_len=int(spec.engine.max_model_len),
            extra_args=extra,
        )

    async def launch(self, spec: ExperimentSpec, store: RunDir) -> Run:
        entry = self.resolve_model(spec.model)
        run_store = store
        remote = await self.remote()
        workdir = (await remote.expand(str(self.profile.get("workdir", "~/.sweepdeck/runs")))).rstrip("/")
        run_dir = await self._fresh_run_dir(remote, workdir, spec.experiment_id)
        script = self.render_jobscript(spec, entry, run_dir)
        run_store.write_rendered("jobscript.sh", script)
        await remote.write_file(f"{run_dir}/jobscript.sh", script, mode="755")
        job_id = await jobs.submit(remote, run_dir, "jobscript.sh", list(self.profile.get("sbatch_args", []) or []))
        started = _dt.datetime.now().isoformat(timespec="seconds")
        handle = {
            "job_id": job_id, "run_dir": run_dir, "local_port": self.local_port(), "model": entry.name,
            "served_name": entry.served_name, "model_path": entry.path, "node": "", "port": "", "started": started,
            "offsets": {"out": 0, "err": 0},
        }
        run = Run(spec.experiment_id, "slurm", spec, run_store, handle)
        self._register_job(run)
        self._write_session(run)
        run_store.update_meta(job_id=job_id, run_dir=run_dir, host=self.target.host)
        return run

    async def _fresh_run_dir(self, remote: Remote, workdir: str, run_id: str) -> str:
        """A new directory per launch: the same id launched again (another state dir, another machine, a deleted
        record) must not find the previous job's ``server_address.txt`` and logs and tunnel to that server."""
        made = await remote.run(["mkdir", "-p", "--", workdir])
        if made.ok:
            made = await remote.run(["mktemp", "-d", "--", f"{workdir}/{run_id}.XXXXXX"])
        run_dir = made.stdout.strip() if made.ok else ""
        if not run_dir:
            raise SweepdeckError(f"Could not create a run directory in {workdir} on {self.target.host}: "
                                 f"{made.stderr.strip() or 'mktemp printed nothing'}",
                                 "Check the profile's workdir (it must be on the shared filesystem and writable).")
        return run_dir

    def _register_job(self, run: Run) -> None:
        job_id = run.handle["job_id"]

        async def undo() -> None:
            await self.cancel(run)

        self._tokens[(run.id, "job")] = self.registry.register(
            f"scancel {job_id}", undo,
            resource={"kind": "slurm_job", "id": str(job_id), "host": self.target.host, "profile": self.profile.name})

    def _write_session(self, run: Run) -> None:
        h = run.handle
        values = {k: v for k, v in run.store.read_session().items() if k not in ("OFFSETS",)}
        values.update({
            "JOB_ID": h["job_id"], "NODE": h.get("node", ""), "PORT": h.get("port", ""),
            "LOCAL_PORT": h.get("local_port", ""), "TMPDIR": h["run_dir"], "MODEL": h["model"],
            "STARTED": h.get("started", ""),
            "SERVED_MODEL": h.get("served_name", ""), "HOST": self.target.host, "PROFILE": self.profile.name,
            "OUT_OFFSET": h.get("offsets", {}).get("out", 0), "ERR_OFFSET": h.get("offsets", {}).get("err", 0),
        })
        run.store.write_session(values)

    # ------------------------------------------------------------ events
    def events(self, run: Run) -> AsyncIterator[Event]:
        session = _RunSession(self, run)
        self.sessions[run.id] = session
        return session.events()

    async def cancel(self, run: Run, *, graceful: bool = True) -> None:
        """scancel the job (graceful or not: SLURM signals and ends it the same way) (its events then end with a ``cancelled`` Finished)."""
        job_id = run.handle.get("job_id")
        if not job_id or run.handle.get("cancelled"):
            return
        remote = await self.remote()
        ok = await jobs.cancel(remote, job_id)
        if not ok:
            raise SweepdeckError(f"scancel {job_id} failed.")
        run.handle["cancelled"] = True
        token = self._tokens.pop((run.id, "job"), None)
        if token is not None:
            self.registry.unregister(token)

    async def cleanup(self, run: Run) -> None:
        """Cancel the job, close the tunnel; idempotent."""
        session = self.sessions.pop(run.id, None)
        if session is not None:
            await session.stop()
        try:
            await self.cancel(run)
        except SweepdeckError as exc:
            log.warning("cleanup of %s: %s", run.id, exc.message)

    async def leftover_alive(self, resource: dict[str, Any]) -> bool | None:
        """Is a crashed run's job still in squeue?"""
        if resource.get("kind") != "slurm_job":
            return None
        poller = await self.poller()
        states = await poller.poll([str(resource.get("id"))])
        if states is None:
            return None
        st = states.get(str(resource.get("id")))
        return st is not None and st.active

    async def clean_leftover(self, resource: dict[str, Any]) -> str | None:
        """scancel a crashed run's job."""
        if resource.get("kind") != "slurm_job":
            return None
        job_id = str(resource.get("id"))
        if not await jobs.cancel(await self.remote(), job_id):
            raise SweepdeckError(f"scancel {job_id} failed.")
        return f"cancelled SLURM job {job_id} on {self.target.host}"

    async def attach(self, saved: RunRecord) -> Run:
        """Re-open a run from its session file (its supervisor is gone; the job must still be live)."""
        sess = saved.session()
        if not sess.get("JOB_ID"):
            raise SweepdeckError(f"Run {saved.id} has no SLURM job to attach to.")
        spec = saved.spec()
        handle = {
            "job_id": sess["JOB_ID"], "run_dir": sess.get("TMPDIR", ""), "local_port": int(sess.get("LOCAL_PORT") or self.local_port()),
            "model": sess.get("MODEL", spec.model), "served_name": sess.get("SERVED_MODEL", spec.model),
            "node": sess.get("NODE", ""), "port": sess.get("PORT", ""), "started": sess.get("STARTED", ""),
            "offsets": {"out": int(sess.get("OUT_OFFSET") or 0), "err": int(sess.get("ERR_OFFSET") or 0)},
            "attached": True,
        }
        remote = await self.remote()
        poller = await self.poller()
        states = await poller.poll([handle["job_id"]])
        if states is not None and handle["job_id"] not in states:
            final = await jobs.final_state(remote, handle["job_id"])
            raise SweepdeckError(f"Job {handle['job_id']} of run {saved.id} is no longer running ({final.state}).",
                                 "Start a new one with: sweepdeck alvis connect")
        run_dir = RunDir(saved.path)
        if handle["run_dir"]:
            handle["offsets"] = await self._resume_offsets(remote, handle["run_dir"], run_dir, handle["offsets"])
        run = Run(saved.id, "slurm", spec, run_dir, handle)
        self._register_job(run)
        return run

    async def _resume_offsets(self, remote: Remote, remote_dir: str, run_dir: RunDir,
                              saved: dict[str, int]) -> dict[str, int]:
        """Where the log tails of a re-opened run resume: right after the last line its event log holds.

        The session file has the byte offsets only from a supervisor that ended
        normally; one that was killed never wrote them. The lines its clients
        were shown are in ``events.jsonl`` though, so count those and ask the
        login node how many bytes that many lines of each log take. The larger
        of that and the saved offset wins (a run followed without a run store
        has only the saved offset).
        """
        counts = _saved_line_counts(run_dir)
        offsets = dict(saved)
        for stream, name in (("out", "vllm.out"), ("err", "vllm.err")):
            if not counts[stream]:
                continue
            script = 'head -n "$1" -- "$2" | wc -c'
            try:
                res = await remote.run(["sh", "-c", script, "sh", str(counts[stream]), f"{remote_dir}/{name}"],
                                       timeout=30)
            except SweepdeckError as exc:
                log.warning("cannot measure %s of %s: %s", name, run_dir.id, exc.message)
                continue
            text = res.stdout.strip()
            if res.ok and text.isdigit():
                offsets[stream] = max(int(offsets.get(stream, 0)), int(text))
        return offsets


def _saved_line_counts(run_dir: RunDir) -> dict[str, int]:
    """Server log lines (``vllm`` source) per stream in a run's event log."""
    counts = {"out": 0, "err": 0}
    for _end, record in run_dir.records():
        if record.get("source", "vllm") != "vllm" or record.get("stream") not in counts:
            continue
        if record.get("type") == "LogBatch":
            lines = record.get("lines") or []
            streams = record.get("streams")
            if isinstance(streams, str) and len(streams) == len(lines):
                # a batch that mixes stdout and stderr spells each line's stream
                counts["err"] += streams.count("e")
                counts["out"] += len(lines) - streams.count("e")
            else:
                counts[record["stream"]] += len(lines)
        elif record.get("type") == "LogLine":
            counts[record["stream"]] += 1
    return counts


# ---------------------------------------------------------------- run session


class _RunSession:
    """Drives one run's events (fresh launch or attach)."""

    def __init__(self, backend: SlurmBackend, run: Run) -> None:
        self.backend = backend
        self.run = run
        self.profile = backend.profile
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.buffer: list[tuple[LogLine, int]] | None = []  # lines held back until the tunnel works
        self.err_tail: deque[str] = deque(maxlen=30)
        self.out_tail: deque[str] = deque(maxlen=30)
        self.diagnoses: list[Any] = []
        from backends.diagnosis import LogDiagnoser

        self.reader = LogDiagnoser()
        self.ready = asyncio.Event()
        self.job_ended = asyncio.Event()
        self.job_state: jobs.JobState | None = None
        self.tails: dict[str, RemoteTail] = {}
        self.tunnel_open = False
        self.remote: Remote | None = None
        self.sub: jobs.Subscription | None = None
        self._tasks: list[asyncio.Task] = []
        self._finished = False
        self._state_listener = None
        self._changed = asyncio.Event()  # set by the job watcher on each state change

    # emit -----------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        if self._finished:
            return
        if isinstance(event, Finished):
            self._finished = True
        # The driver (backends.session) saves every event in the run store.
        self.queue.put_nowait(event)

    def info(self, message: str) -> None:
        self.emit(Notice(message))

    def _on_line(self, stream: str, text: str) -> None:
        line = LogLine(text, stream, "vllm")
        (self.err_tail if stream == "err" else self.out_tail).append(text)
        if any(m in text for m in READY_MARKERS):
            self.ready.set()
        self._diagnose(text)
        # The tail has counted this line's bytes already: ``after`` is where the
        # next line starts. Offsets saved for attach only cover lines shown.
        after = self.tails[stream].offset if stream in self.tails else 0
        if self.buffer is not None:
            self.buffer.append((line, after))
            if len(self.buffer) > 20000:
                del self.buffer[:5000]
        else:
            self.emit(line)
            self.run.handle.setdefault("offsets", {})[stream] = after

    def _diagnose(self, text: str) -> None:
        # read with context (vLLM's settings, the start-up phase, the exception a "see root cause above" means)
        found = self.reader.feed(text)
        if found and all(d.rule_id != found.rule_id for d in self.diagnoses):
            self.diagnoses.append(found)

    def _flush_buffer(self) -> None:
        buf, self.buffer = self.buffer, None
        offsets = self.run.handle.setdefault("offsets", {})
        for line, after in buf or []:
            self.emit(line)
            offsets[line.stream] = after

    # driver -----------------------------------------------------------------
    async def events(self) -> AsyncIterator[Event]:
        main = asyncio.create_task(self._main(), name=f"slurm-run-{self.run.id}")
        self._tasks.append(main)
        try:
            while True:
                event = await self.queue.get()
                yield event
                if isinstance(event, Finished):
                    break
        finally:
            if not main.done():
                main.cancel()
                try:
                    await main
                except (asyncio.CancelledError, Exception):
                    pass
            await self._stop_tails()
            # Save the byte offsets shown so far: attach resumes exactly there.
            self.backend._write_session(self.run)
            self.run.store.flush()

    async def _main(self) -> None:
        try:
            await self._lifecycle()
        except asyncio.CancelledError:
            raise
        except SweepdeckError as exc:
            self.emit(Alert("slurm", exc.message + (f" ({exc.hint})" if exc.hint else ""), "error"))
            self.emit(Finished("failed", exc.message))
        except Exception as exc:  # never let a bug hang the event stream
            log.exception("slurm run %s failed", self.run.id)
            self.emit(Finished("failed", f"internal error: {exc}"))
        finally:
            await self._stop_tails()

    async def stop(self) -> None:
        """Stop watching (tunnel and tails closed; the job is not touched)."""
        await self._stop_tails()
        self._close_tunnel()
        if self.sub is not None:
            self.sub.close()
        if self.remote is not None:
            self.remote.forget(self._state_listener, self._resume_tails)
        for task in self._tasks:
            if not task.done() and task is not asyncio.current_task():
                task.cancel()

    async def _stop_tails(self) -> None:
        for tail in self.tails.values():
            await tail.stop()

    def _close_tunnel(self) -> None:
        if self.tunnel_open and self.remote is not None:
            self.remote.close_forward(int(self.run.handle["local_port"]))
            self.tunnel_open = False
        token = self.backend._tokens.pop((self.run.id, "tunnel"), None)
        if token is not None:
            self.backend.registry.unregister(token)

    def _on_ssh_state(self, state: str, detail: str) -> None:
        unit = f"tunnel 127.0.0.1:{self.run.handle['local_port']}" if self.tunnel_open else f"ssh {self.backend.target.host}"
        self.emit(Phase(unit, state, detail, kind="tunnel" if self.tunnel_open else "ssh"))
        if state == "failed":
            self.emit(Alert("ssh", f"{detail} The job was left as it is (scancel it by hand if needed).", "error"))
            self.emit(Finished("failed", detail))

    async def _lifecycle(self) -> None:
        h = self.run.handle
        job_id = h["job_id"]
        self.remote = await self.backend.remote()
        self._state_listener = self._on_ssh_state
        self.remote.on_state(self._state_listener)
        self.remote.on_reconnect(self._resume_tails)
        poller = await self.backend.poller()
        self.sub = poller.watch(job_id)
        self._tasks.append(asyncio.create_task(self._watch_job(), name=f"watch-{job_id}"))
        started = time.monotonic()
        attached = bool(h.get("attached"))
        if not attached:
            self.emit(Phase(f"job {job_id}", "SUBMITTED", kind="job"))

        # 1. wait for RUNNING -------------------------------------------------
        if not attached or not h.get("node"):
            self.info("Waiting for job to start...")
            start_timeout = float(self.profile.get("start_timeout", 600.0))
            last_reason = None
            while True:
                st = self.job_state
                if st is not None and st.running:
                    break
                if self.job_ended.is_set():
                    return await self._job_over("before it started")
                if st is not None and st.state == "PENDING" and st.reason != last_reason:
                    last_reason = st.reason
                    self.emit(Phase(f"job {job_id}", "PENDING", st.reason, kind="job"))
                left = start_timeout - (time.monotonic() - started)
                if left <= 0:
                    return await self._fail_and_cancel(
                        "job-start-timeout",
                        f"Job {job_id} did not start within {format_slurm_duration(int(start_timeout))}"
                        + (f" (still PENDING: {last_reason})" if last_reason else "") + "; it was cancelled.",
                        "The cluster is busy: try a shorter duration (-t), another partition, or raise start_timeout.",
                    )
                await self._wait_change(left)
            h["node"] = self.job_state.node
            self.backend._write_session(self.run)
            self.run.store.update_meta(node=h["node"])
        self.emit(Phase(f"job {job_id}", "RUNNING", h["node"], kind="job", started=time.time()))

        # 2. tails + server address -------------------------------------------
        self._start_tails()
        ready_timeout = float(self.profile.get("ready_timeout", 600.0))
        ready_started = time.monotonic()
        # An attached run whose server had already published its address was
        # ready before (its startup line is behind the saved offset).
        need_ready = not attached or not h.get("port")
        if not h.get("port"):
            self.info("Waiting for server address...")
            address = await self._wait_address(ready_started, ready_timeout)
            if address is None:
                return
            node, _, port = address.rpartition(":")
            h["node_addr"], h["port"] = node, port
            self.backend._write_session(self.run)
        server_unit = f"server {h.get('node_addr') or h['node']}:{h['port']}"
        self.info(f"Server address: {h.get('node_addr') or h['node']}:{h['port']}")
        self.emit(Phase(server_unit, "STARTING", f"job {job_id}", kind="server"))

        # 3. server ready ------------------------------------------------------
        if need_ready:
            ok = await self._wait_ready(ready_started, ready_timeout)
            if not ok:
                return

        # 4. tunnel -------------------------------------------------------------
        local_port = int(h["local_port"])
        self.info(f"Establishing SSH tunnel (local port {local_port})...")
        target_host = self.profile.get("server_host") or h.get("node_addr") or h["node"]
        try:
            if self.profile.get("node_ssh"):
                await self.remote.forward(local_port, target_host, int(h["port"]), via=h["node"], via_port=self.profile.get("node_ssh_port"))
            else:
                await self.remote.forward(local_port, target_host, int(h["port"]))
        except SweepdeckError as exc:
            return await self._fail_and_cancel("tunnel", f"Could not open the tunnel through {h['node']}: {exc.message}", exc.hint,
                                               cancel=not attached)
        except OSError as exc:
            holder = port_holder(local_port)
            return await self._fail_and_cancel(
                "tunnel", f"Could not open the tunnel on local port {local_port}: {exc.strerror or exc}"
                + (f" (held by {holder})" if holder else "") + ".",
                "Free the port or choose another local_port.", cancel=not attached)
        self.tunnel_open = True
        remote = self.remote

        def close_tunnel() -> None:
            remote.close_forward(local_port)

        self.backend._tokens[(self.run.id, "tunnel")] = self.backend.registry.register(
            f"close tunnel 127.0.0.1:{local_port}", close_tunnel, resource={"kind": "listener", "port": local_port})
        self.emit(Phase(f"tunnel 127.0.0.1:{local_port}", "up", f"{target_host}:{h['port']}", kind="tunnel"))
        self.info("Testing connection...")
        url = f"http://localhost:{local_port}"
        # An attached server may still be loading: give it the ready timeout.
        probe_timeout = self.backend.target.connect_timeout if need_ready else max(ready_timeout, self.backend.target.connect_timeout)
        ok, detail = await self._test_connection(local_port, probe_timeout)
        if not ok:
            return await self._fail_and_cancel(
                "tunnel", f"The server did not answer through the tunnel within {probe_timeout:g} s ({detail}).",
                "Check that the compute node is reachable from the login node.", cancel=not attached)
        self.emit(Phase(server_unit, "READY", url, kind="server"))
        self.emit(Endpoint(url, True, h.get("served_name", ""), f"job {job_id} on {h['node']}"))
        self.run.store.update_meta(endpoint=url)

        # 5. stream -------------------------------------------------------------
        self.info("Streaming logs (Ctrl+C to stop and cleanup)...")
        self._flush_buffer()
        if self.profile.get("run_workload"):
            await self._run_workload(url)
            return
        await self.job_ended.wait()
        await self._job_over("while serving")

    # pieces -------------------------------------------------------------------
    async def _watch_job(self) -> None:
        assert self.sub is not None
        while True:
            st = await self.sub.next()
            self.job_state = st
            self._changed.set()
            if not st.active:
                self.job_ended.set()
                return

    async def _wait_change(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass
        self._changed.clear()

    def _start_tails(self) -> None:
        assert self.remote is not None
        offsets = self.run.handle.setdefault("offsets", {"out": 0, "err": 0})
        for stream, name in (("out", "vllm.out"), ("err", "vllm.err")):
            if stream not in self.tails:
                tail = RemoteTail(self.remote, f"{self.run.handle['run_dir']}/{name}", stream, self._on_line, int(offsets.get(stream, 0)))
                self.tails[stream] = tail
                tail.start()

    async def _resume_tails(self) -> None:
        for tail in self.tails.values():
            await tail.restart()

    async def _wait_address(self, started: float, timeout: float) -> str | None:
        assert self.remote is not None
        path = f"{self.run.handle['run_dir']}/server_address.txt"
        interval = self.backend.poll_interval
        while True:
            try:
                res = await self.remote.run(["cat", path], timeout=30)
            except SweepdeckError as exc:  # a hiccup: the connection comes back, keep waiting
                log.info("reading %s: %s", path, exc.message)
                res = None
            text = res.stdout.strip().splitlines()[0].strip() if res is not None and res.ok and res.stdout.strip() else ""
            if text and ":" in text and text.rpartition(":")[2].isdigit():
                return text
            if self.job_ended.is_set():
                await self._job_over("before publishing the server address")
                return None
            left = timeout - (time.monotonic() - started)
            if left <= 0:
                await self._server_not_ready(timeout, "no server address was published")
                return None
            try:
                await asyncio.wait_for(self.job_ended.wait(), min(interval, left))
            except TimeoutError:
                pass

    async def _wait_ready(self, started: float, timeout: float) -> bool:
        left = timeout - (time.monotonic() - started)
        ready = asyncio.create_task(self.ready.wait())
        ended = asyncio.create_task(self.job_ended.wait())
        try:
            await asyncio.wait({ready, ended}, timeout=max(left, 0), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (ready, ended):
                t.cancel()
        if self.ready.is_set():
            return True
        if self.job_ended.is_set():
            await asyncio.sleep(0.3)  # let the tails deliver the server's last lines
            await self._job_over("during server startup")
            return False
        await self._server_not_ready(timeout, "no 'Application startup complete' line")
        return False

    async def _test_connection(self, local_port: int, timeout: float) -> tuple[bool, str]:
        import httpx

        deadline = time.monotonic() + timeout
        detail = "no answer"
        async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                try:
                    r = await client.get(f"http://127.0.0.1:{local_port}/v1/models")
                    if r.status_code == 200:
                        return True, ""
                    detail = f"HTTP {r.status_code}"
                except httpx.HTTPError as exc:
                    detail = type(exc).__name__
                if self.job_ended.is_set():
                    return False, "the job ended"
                await asyncio.sleep(0.2)
        return False, detail

    async def _run_workload(self, url: str) -> None:
        from backends.loadgen import WorkloadRunner

        spec = self.run.spec
        runner = WorkloadRunner(url, self.run.handle.get("served_name") or spec.model, spec.workload,
                                results_path=self.run.store.results_dir / "workload.json")
        async for event in runner.events():
            self.emit(event)
        self.emit(Finished("succeeded", "workload finished", str(self.run.store.results_dir / "workload.json"),
                           summary=getattr(runner, "summary", {}) or {}))

    async def _server_not_ready(self, timeout: float, detail: str) -> None:
        from backends.diagnosis import alert_for, server_not_ready

        self._flush_buffer()
        self.emit(alert_for(server_not_ready(timeout, detail), self.run.spec))
        await self._fail_and_cancel(
            "server-not-ready",
            f"The server did not become ready within {format_slurm_duration(int(timeout))} ({detail}); job {self.run.handle['job_id']} was cancelled."
            + self._log_tail(),
            "Check the server's log above; raise ready_timeout for big models.",
        )

    def _log_tail(self, n: int = 20) -> str:
        """The last lines of vllm.err (or of vllm.out when the server wrote no stderr)."""
        for name, tail in (("vllm.err", self.err_tail), ("vllm.out", self.out_tail)):
            if tail:
                return f"\nLast lines of {name}:\n" + "\n".join(list(tail)[-n:])
        return ""

    async def _fail_and_cancel(self, kind: str, message: str, hint: str = "", cancel: bool = True) -> None:
        self._flush_buffer()
        if cancel:
            try:
                await self.backend.cancel(self.run)
            except SweepdeckError as exc:
                message += f" (scancel failed: {exc.message})"
        self.emit(Alert(kind, message + (f"\n{hint}" if hint else ""), "error"))
        self.emit(Finished("failed", message))

    async def _job_over(self, when: str) -> None:
        """The job left squeue: report how it ended and why."""
        from backends.diagnosis import alert_for, diagnose_state, primary

        # the job is over, so its logs are complete: read what the followers have not delivered yet
        # (the error that explains the end is often the last thing written)
        await asyncio.gather(*(tail.finish() for tail in self.tails.values()))
        self._flush_buffer()
        st = self.job_state or jobs.JobState(self.run.handle["job_id"], "ENDED")
        job_id = self.run.handle["job_id"]
        if self.run.handle.get("cancelled") or st.state == "CANCELLED" and self.run.handle.get("cancelled"):
            self.emit(Finished("cancelled", f"Job {job_id} cancelled"))
            return
        found = primary(self.diagnoses)
        state_diag = diagnose_state("job", st.state, st.reason)
        diag = found or state_diag
        exit_code = st.exit_code
        message = f"Job {job_id} ended {when}: {st.state}" + (f" (exit code {exit_code})" if exit_code and exit_code != "0:0" else "")
        if found is None and state_diag is not None:
            # Log-line diagnoses are raised by the driver as the lines pass;
            # a state (TIMEOUT, OUT_OF_MEMORY...) is only known here.
            self.emit(alert_for(state_diag, self.run.spec))
        if st.state == "COMPLETED" and not found:
            self.emit(Finished("succeeded", message))
            return
        if st.state == "TIMEOUT" and not found:
            self.emit(Alert("job-time-limit", f"Job {job_id} reached its time limit.", "warning"))
            self.emit(Finished("succeeded", message))
            return
        if st.state == "CANCELLED":
            message = f"Job {job_id} was cancelled outside sweepdeck ({when})."
        if not diag:
            self.emit(Alert("job-ended", message + self._log_tail(10), "error"))
        self.emit(Finished("failed", message + (f" — {diag.title}" if diag else "")))
