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
import shlex
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from backends.base import BackendBase, Check, Run
from backends.cleanup import CleanupRegistry
from backends.events import Event
from backends.procs import holder_name, next_free_port, port_free
from backends.slurm import jobs
from backends.slurm.catalog import ClusterCatalog, ClusterModel, ModelNotInCatalog, load_profile_catalog
from backends.slurm.preflight import profile_checks
from backends.slurm.ssh import LOOPBACK, Remote, SshTarget
from backends.slurm.watch import RunWatch
from backends.store import RunDir, RunRecord, RunStore
from config.durations import format_slurm_duration, parse_slurm_duration
from config.errors import SweepdeckError

if TYPE_CHECKING:
    from config.settings import Profile, Settings
    from config.spec import ExperimentSpec

log = logging.getLogger(__name__)

SESSION_KEYS = ("JOB_ID", "NODE", "PORT", "LOCAL_PORT", "TMPDIR", "MODEL", "STARTED")


# ----------------------------------------------------------------- shared state

#: One Remote + one squeue poller per (profile, event loop): every run and every
#: watcher of a profile shares them.
_SHARED: dict[tuple[str, int], tuple[Remote, jobs.JobPoller]] = {}


def _loop_key(profile_name: str) -> tuple[str, int]:
    return profile_name, id(asyncio.get_running_loop())


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
        self.sessions: dict[str, RunWatch] = {}
        #: Cleanup-registry tokens of each run's job and tunnel (kept off Run.handle, which is saved).
        self._tokens: dict[tuple[str, str], int] = {}

    @classmethod
    def auto_args(cls, spec: ExperimentSpec, settings: Settings | None) -> list[tuple[str, str]]:
        """``--port``: the job picks a free port on its node."""
        return [("--port", "free port on the node")]

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
                "Use a model name from models.json; names are passed to the cluster quoted, "
                "but never with line breaks.",
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
        engine = EngineSettings(
            image=self.profile.get("container", "vllm serve"), max_model_len=entry.max_model_len or 4096
        )
        return ExperimentSpec(
            model=entry.name,
            backend="slurm",
            workload=workload,
            engine=engine,
            experiment_id=run_id,
            profile=self.profile.name,
            origins={
                "model": Origin(Source.USER),
                "engine.max_model_len": Origin(Source.CATALOG if entry.max_model_len else Source.DEFAULT),
            },
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
            return Check(
                f"Model {model}",
                "fail",
                exc.message,
                "Available models: " + ", ".join(m.split(":")[0] for m in exc.available),
                data={"available": exc.available},
            )
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
        if port_free(LOOPBACK, port):
            return Check(name, "pass")
        holder = holder_name(port)
        nxt = next_free_port(LOOPBACK, port)
        detail = f"port {port} is in use" + (f" by {holder}" if holder else "")
        if flag:
            way = f"the next free port: {flag} {nxt}" if nxt else f"another port with {flag}"
        else:
            way = (
                f"the next free port: set local_port: {nxt}" if nxt else "another port: set local_port"
            ) + f" in profile {self.profile.name} of your sweepdeck config"
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
        fix = (
            "Attach to it: sweepdeck alvis connect --attach"
            + (f" (run {record.id})" if record else "")
            + f", or cancel it: scancel {job.job_id}"
        )
        return Check(
            name,
            "fail",
            f"job {job.job_id} of this profile is already {where}",
            fix,
            data={"job_id": job.job_id, "run_id": record.id if record else None},
        )

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
            if (
                record.backend == "slurm"
                and record.meta.get("profile") == self.profile.name
                and record.handle_values().get("JOB_ID") == str(job_id)
            ):
                return record
        return None

    def live_runs(self) -> list[RunRecord]:
        """Saved runs of this profile that may still have a job (newest first): going, or lost with its job left."""
        from backends.supervisor.reconcile import reconcile_records

        mine = [r for r in RunStore().list() if r.backend == "slurm" and r.meta.get("profile") == self.profile.name]
        return [
            r
            for r in reconcile_records(mine)
            if r.handle_values().get("JOB_ID")
            and (r.live or any(x.get("kind") == "slurm_job" for x in r.meta.get("leftovers") or []))
        ]

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
            "job_id": job_id,
            "run_dir": run_dir,
            "local_port": self.local_port(),
            "model": entry.name,
            "served_name": entry.served_name,
            "model_path": entry.path,
            "node": "",
            "port": "",
            "started": started,
            "offsets": {"out": 0, "err": 0},
        }
        run = Run(spec.experiment_id, "slurm", spec, run_store, handle)
        self._register_job(run)
        self._write_handle(run)
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
            raise SweepdeckError(
                f"Could not create a run directory in {workdir} on {self.target.host}: "
                f"{made.stderr.strip() or 'mktemp printed nothing'}",
                "Check the profile's workdir (it must be on the shared filesystem and writable).",
            )
        return run_dir

    def _register_job(self, run: Run) -> None:
        job_id = run.handle["job_id"]

        async def undo() -> None:
            await self.cancel(run)

        self._tokens[(run.id, "job")] = self.registry.register(
            f"scancel {job_id}",
            undo,
            resource={"kind": "slurm_job", "id": str(job_id), "host": self.target.host, "profile": self.profile.name},
        )

    def _write_handle(self, run: Run) -> None:
        h = run.handle
        values = {k: v for k, v in run.store.read_handle().items() if k not in ("OFFSETS",)}
        values.update(
            {
                "JOB_ID": h["job_id"],
                "NODE": h.get("node", ""),
                "PORT": h.get("port", ""),
                "LOCAL_PORT": h.get("local_port", ""),
                "TMPDIR": h["run_dir"],
                "MODEL": h["model"],
                "STARTED": h.get("started", ""),
                "SERVED_MODEL": h.get("served_name", ""),
                "HOST": self.target.host,
                "PROFILE": self.profile.name,
                "OUT_OFFSET": h.get("offsets", {}).get("out", 0),
                "ERR_OFFSET": h.get("offsets", {}).get("err", 0),
            }
        )
        run.store.write_handle(values)

    # ------------------------------------------------------------ events
    def events(self, run: Run) -> AsyncIterator[Event]:
        session = RunWatch(self, run)
        self.sessions[run.id] = session
        return session.events()

    async def cancel(self, run: Run, *, graceful: bool = True) -> None:
        """scancel the job (graceful or not: SLURM signals and ends it the same way); its events then end
        with a ``cancelled`` Finished."""
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
        """Re-open a run from its handle file (its supervisor is gone; the job must still be live)."""
        sess = saved.handle_values()
        if not sess.get("JOB_ID"):
            raise SweepdeckError(f"Run {saved.id} has no SLURM job to attach to.")
        spec = saved.spec()
        handle = {
            "job_id": sess["JOB_ID"],
            "run_dir": sess.get("TMPDIR", ""),
            "local_port": int(sess.get("LOCAL_PORT") or self.local_port()),
            "model": sess.get("MODEL", spec.model),
            "served_name": sess.get("SERVED_MODEL", spec.model),
            "node": sess.get("NODE", ""),
            "port": sess.get("PORT", ""),
            "started": sess.get("STARTED", ""),
            "offsets": {"out": int(sess.get("OUT_OFFSET") or 0), "err": int(sess.get("ERR_OFFSET") or 0)},
            "attached": True,
        }
        remote = await self.remote()
        poller = await self.poller()
        states = await poller.poll([handle["job_id"]])
        if states is not None and handle["job_id"] not in states:
            final = await jobs.final_state(remote, handle["job_id"])
            raise SweepdeckError(
                f"Job {handle['job_id']} of run {saved.id} is no longer running ({final.state}).",
                "Start a new one with: sweepdeck alvis connect",
            )
        run_dir = RunDir(saved.path)
        if handle["run_dir"]:
            handle["offsets"] = await self._resume_offsets(remote, handle["run_dir"], run_dir, handle["offsets"])
        run = Run(saved.id, "slurm", spec, run_dir, handle)
        self._register_job(run)
        return run

    async def _resume_offsets(
        self, remote: Remote, remote_dir: str, run_dir: RunDir, saved: dict[str, int]
    ) -> dict[str, int]:
        """Where the log tails of a re-opened run resume: right after the last line its event log holds.

        The handle file has the byte offsets only from a supervisor that ended
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
                res = await remote.run(
                    ["sh", "-c", script, "sh", str(counts[stream]), f"{remote_dir}/{name}"], timeout=30
                )
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
