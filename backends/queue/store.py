"""The work-queue store: populate, claim, report, progress, stale reset.

One class over SQLAlchemy's async engine serves SQLite (the embedded default,
a file in the XDG data dir) and PostgreSQL (``postgresql+asyncpg://``). The
claim is the heart of it: a batch of pending configs is marked running in one
statement, so no config is ever handed to two workers —
``FOR UPDATE SKIP LOCKED`` on PostgreSQL (concurrent claimers skip each
other's rows instead of waiting), one short write statement on SQLite
(SQLite serialises writers).

Each claimed config gets a lease (:mod:`backends.queue.models`). A report —
status or result — is one conditional write that checks the lease and changes
the row together (``UPDATE … WHERE status = 'running' AND lease_id = :lease AND
lease_expires_at > now``), so a worker whose lease was revoked can never
overwrite the work of the worker the config went to next. Every write
transaction starts with its write: SQLite then takes its write lock first
instead of failing to upgrade a read snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import itertools
import json
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import and_, event, func, insert, inspect, literal, or_, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker, create_async_engine

from backends.queue.models import (
    COUNT_SHARDS,
    STATUSES,
    WORKLOADS,
    Base,
    BenchmarkConfig,
    BenchmarkResult,
    ConfigEvent,
    Framework,
    HardwareConfig,
    ModelVersion,
    StatusCount,
)
from config.errors import SweepdeckError

C = BenchmarkConfig
R = BenchmarkResult
E = ConfigEvent
#: Columns of a config as the API returns it.
CONFIG_FIELDS = (
    "id",
    "model_version_id",
    "hardware_config_id",
    "framework_id",
    "workload_type",
    "batch_size",
    "sequence_length",
    "status",
    "priority",
    "created_at",
    "started_at",
    "completed_at",
    "error_message",
    "retry_count",
    "worker",
    "lease_id",
    "lease_expires_at",
    "renewed_at",
    "created_by",
)
#: What a claim reads back from the rows it claimed; with what it set itself (status, started_at, completed_at,
#: worker, lease_expires_at) that is what it returns: a config as before leases, plus its lease. Kept this
#: lean on purpose, every claimed config crosses the wire to a worker (see ``QueueStore.claim``).
CLAIM_FIELDS = (
    "id",
    "model_version_id",
    "hardware_config_id",
    "framework_id",
    "workload_type",
    "batch_size",
    "sequence_length",
    "priority",
    "created_at",
    "error_message",
    "retry_count",
    "lease_id",
)
#: The fields of a claimed config (what a worker's --command template may use).
CLAIMED_FIELDS = (*CLAIM_FIELDS, "status", "started_at", "completed_at", "lease_expires_at", "worker")
#: Who a change made outside the HTTP API (the CLI on the database) is recorded as.
LOCAL_ACTOR = "local"
#: Default lease: a worker that has not heartbeated for this long has lost its configs.
DEFAULT_LEASE_SECONDS = 600.0

# Lower number = claimed first (the seed's weights).
WORKLOAD_PRIORITY = {
    "chatbot": 100,
    "qa": 200,
    "code-generation": 300,
    "creative-writing": 400,
    "summarization": 500,
}
DEFAULT_HARDWARE = (
    "H100-80GB:1",
    "H100-80GB:2",
    "H100-80GB:4",
    "H100-80GB:8",
    "A100-80GB:1",
    "A100-80GB:2",
    "A100-80GB:4",
    "A100-80GB:8",
    "L40S:1",
    "L40S:2",
)
DEFAULT_FRAMEWORKS = ("vllm", "tgi", "sglang")
DEFAULT_BATCH_SIZES = (1, 2, 4, 8)
DEFAULT_SEQUENCE_LENGTHS = (1024, 2048, 4096)


class NotFound(SweepdeckError):
    exit_code = 4


class Conflict(SweepdeckError):
    """A request the config's state does not allow (HTTP 409).

    Args:
        reason: Machine-readable cause: ``wrong_state``, ``lease_required``,
            ``lease_expired``, ``lease_revoked``, ``lease_unknown``, ``result_differs``.
        config_id / status: The config and the status it has now.
    """

    exit_code = 5

    def __init__(
        self,
        message: str,
        hint: str = "",
        *,
        reason: str = "wrong_state",
        config_id: int | None = None,
        status: str | None = None,
    ) -> None:
        super().__init__(message, hint)
        self.reason = reason
        self.config_id = config_id
        self.status = status

    def body(self) -> dict[str, Any]:
        """The JSON body of the 409 (``detail`` is the sentence a person reads)."""
        out: dict[str, Any] = {"detail": self.message, "reason": self.reason}
        if self.hint:
            out["hint"] = self.hint
        if self.config_id is not None:
            out["config_id"] = self.config_id
        if self.status is not None:
            out["status"] = self.status
        return out


def priority(workload: str, batch_size: int, sequence_length: int) -> int:
    """Base per workload plus penalties for larger batches and longer sequences.

    A batch doubling adds 10, a sequence doubling above 1024 adds 5, so the
    cheapest cells of the most interactive workload run first.
    """
    base = WORKLOAD_PRIORITY.get(workload, 600)
    batch_pen = 10 * max(0, batch_size.bit_length() - 1)
    seq_pen = 5 * max(0, (max(sequence_length, 1024) // 1024).bit_length() - 1)
    return base + batch_pen + seq_pen


@dataclass(slots=True)
class Matrix:
    """The sweep's dimensions (every combination becomes one config)."""

    hardware: tuple[str, ...] = DEFAULT_HARDWARE
    frameworks: tuple[str, ...] = DEFAULT_FRAMEWORKS
    workloads: tuple[str, ...] = WORKLOADS
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    sequence_lengths: tuple[int, ...] = DEFAULT_SEQUENCE_LENGTHS

    @property
    def count(self) -> int:
        return (
            len(self.hardware)
            * len(self.frameworks)
            * len(self.workloads)
            * len(self.batch_sizes)
            * len(self.sequence_lengths)
        )

    def breakdown(self) -> dict[str, int]:
        return {
            "hardware_configs": len(self.hardware),
            "frameworks": len(self.frameworks),
            "workloads": len(self.workloads),
            "batch_sizes": len(self.batch_sizes),
            "sequence_lengths": len(self.sequence_lengths),
            "total": self.count,
        }

    def validate(self) -> None:
        for name in ("hardware", "frameworks", "workloads", "batch_sizes", "sequence_lengths"):
            values = getattr(self, name)
            if not values:
                raise SweepdeckError(f"Matrix dimension {name!r} is empty.", "Give at least one value.")
            if len(set(values)) != len(values):
                raise SweepdeckError(f"Matrix dimension {name!r} has duplicate values: {list(values)}.")
        for name in ("hardware", "frameworks", "workloads"):
            for value in getattr(self, name):
                problem = name_problem(name, value)
                if problem:
                    raise SweepdeckError(f"Matrix dimension {name!r}: {value!r} {problem}.")
        for n in self.batch_sizes + self.sequence_lengths:
            if isinstance(n, bool) or not isinstance(n, int) or not 0 < n <= MAX_SIZE:
                raise SweepdeckError(
                    f"Batch sizes and sequence lengths must be integers from 1 to {MAX_SIZE:,}, got {n!r}."
                )


#: Largest batch size / sequence length (and GPU count in a hardware name: 1-1024).
MAX_SIZE = 1_000_000
MAX_GPUS = 1024
#: Column widths of the names (``workload_type`` is String(50), hardware/framework names String(100)).
NAME_LIMITS = {"hardware": 100, "frameworks": 100, "workloads": 50}


def name_problem(dimension: str, value: Any) -> str | None:
    """Why ``value`` cannot be a name in matrix ``dimension``, or None.

    Names are stored in sized columns and end up in a worker's argv (``{workload_type}``),
    so they are bounded, printable, and never begin with ``-`` (an option to the benchmark).
    """
    if not isinstance(value, str) or not value.strip():
        return "must be non-blank text"
    if len(value) > NAME_LIMITS[dimension]:
        return f"is longer than {NAME_LIMITS[dimension]} characters"
    if value.startswith("-"):
        return "begins with '-' (a command would read it as an option)"
    if not value.isprintable():
        return "has control characters"
    if dimension == "hardware":
        _gpu, sep, count = value.partition(":")
        if sep and count.isdigit() and not 1 <= int(count) <= MAX_GPUS:
            return f"has a GPU count outside 1-{MAX_GPUS}"
    return None


def default_db_url() -> str:
    env = os.environ.get("SWEEPDECK_QUEUE_DB")
    if env:
        return env
    from platformdirs import user_data_path

    path = user_data_path("sweepdeck") / "queue.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite+aiosqlite:///{path}"


def normalise_url(url: str) -> str:
    """Accept plain ``sqlite:///x.db`` / ``postgresql://`` and pick the async drivers."""
    if url.startswith("sqlite:///") or url.startswith("sqlite://"):
        return url.replace("sqlite://", "sqlite+aiosqlite://", 1)
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        return url
    raise SweepdeckError(
        f"Unsupported database URL {url!r}.",
        "Use sqlite:///PATH or postgresql+asyncpg://USER@HOST:PORT/DB.",
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _naive(value: dt.datetime | None) -> dt.datetime | None:
    """UTC without tzinfo (PostgreSQL returns aware times, SQLite naive ones)."""
    if value is not None and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value


def _row(cfg: Any) -> dict[str, Any]:
    m = cfg._mapping if hasattr(cfg, "_mapping") else None
    get = (lambda k: m[k]) if m is not None else (lambda k: getattr(cfg, k))
    return {key: _iso(get(key)) for key in CONFIG_FIELDS}


def _canonical(metrics: Any) -> str:
    return json.dumps(metrics, sort_keys=True, separators=(",", ":"))


def _minus_minutes(now: dt.datetime, minutes: float) -> dt.datetime:
    """``now - minutes`` (any non-negative float; a timeout longer than the calendar means "never")."""
    try:
        return now - dt.timedelta(minutes=minutes)
    except OverflowError:
        return dt.datetime(1970, 1, 1)


def _stale(now: dt.datetime, cutoff: dt.datetime):
    """Running, and its lease expired or not renewed (claim or heartbeat) since ``cutoff``."""
    return and_(
        C.status == "running", or_(C.lease_expires_at <= now, func.coalesce(C.renewed_at, C.started_at) <= cutoff)
    )


@dataclass
class QueueStore:
    """Async access to the queue database.

    Args:
        url: SQLAlchemy URL (``sqlite:///...`` or ``postgresql+asyncpg://...``).
        pool_size: Connections kept (PostgreSQL); claimers beyond it wait.
        claim_concurrency: At most this many claim transactions of this
            process run in the database at once (PostgreSQL; None: no limit).
            Every claimer's ``SKIP LOCKED`` scan steps over the rows the
            others hold, so past a few in flight each claim costs more and
            the total drops: on 2 database cores 100 claimers at once claim
            ~8,000 configs/s, the same 100 through a gate of 4 ~55,000/s
            (``tests/benchmarks/bench_queue.py``). Claimers beyond the gate
            wait in this process, holding no connection or lock.
        lease_seconds: How long a claim (or a heartbeat) keeps a config the
            claimer's; reports after that get 409.
    """

    url: str = field(default_factory=default_db_url)
    pool_size: int = 20
    claim_concurrency: int | None = 4
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    engine: AsyncEngine = field(init=False)

    def __post_init__(self) -> None:
        self.url = normalise_url(self.url)
        self.is_pg = self.url.startswith("postgresql")
        if not 1 <= self.lease_seconds <= 7 * 24 * 3600:
            raise SweepdeckError(f"The lease must last from 1 s to 7 days, got {self.lease_seconds:g} s.")
        if self.is_pg:
            self.engine = create_async_engine(self.url, pool_size=self.pool_size, max_overflow=self.pool_size)
        else:
            db_path = self.url.split("///", 1)[1] if "///" in self.url else ""
            if db_path and db_path != ":memory:":
                Path(db_path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_async_engine(self.url, connect_args={"timeout": 30})

            @event.listens_for(self.engine.sync_engine, "connect")
            def _sqlite_pragmas(dbapi_conn, _record):  # WAL lets readers run beside the writer
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()

        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # SQLite serialises writers itself; the gate is for PostgreSQL's SKIP LOCKED claims
        self._claim_gate = asyncio.Semaphore(self.claim_concurrency) if self.is_pg and self.claim_concurrency else None

    def _expiry(self, now: dt.datetime) -> dt.datetime:
        return now + dt.timedelta(seconds=self.lease_seconds)

    async def create(self) -> None:
        """Create the tables, columns and indexes a newer release defines, if missing."""
        try:
            async with self.engine.begin() as conn:
                await conn.run_sync(Base.metadata.create_all)
                # create_all skips tables that exist: add what a newer release defines to an older database
                await conn.run_sync(_add_missing_columns)
                for table in Base.metadata.sorted_tables:
                    for index in table.indexes:
                        await conn.run_sync(functools.partial(index.create, checkfirst=True))
        except OSError as exc:
            raise SweepdeckError(f"Cannot reach the queue database: {exc}.", "Check --db / the server.") from None

    async def close(self) -> None:
        await self.engine.dispose()

    async def warm(self, n: int) -> None:
        """Open ``n`` pooled connections now (a server does this once; benchmarks too)."""
        n = min(n, self.pool_size * 2) if self.is_pg else 1
        conns = [await self.engine.connect() for _ in range(n)]
        for conn in conns:
            await conn.exec_driver_sql("SELECT 1")
        for conn in conns:
            await conn.close()

    def _insert(self):
        if self.is_pg:
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]  # same call
        return dialect_insert

    # ----------------------------------------------------------- population

    async def populate(
        self, model_version_id: str, matrix: Matrix | None = None, *, dry_run: bool = False, actor: str = LOCAL_ACTOR
    ) -> dict[str, int]:
        """Create the matrix's configs for a model version (idempotent).

        Returns:
            ``breakdown`` of the matrix plus ``created`` (new rows) and
            ``existing`` (rows that were already there).
        """
        matrix = matrix or Matrix()
        matrix.validate()
        info = matrix.breakdown()
        if dry_run:
            return {**info, "created": 0, "existing": 0}
        ins = self._insert()
        async with self.sessions() as s, s.begin():
            # a write first (see module docs)
            await s.execute(
                ins(ModelVersion)
                .values(id=model_version_id, name=model_version_id)
                .on_conflict_do_nothing(index_elements=["id"])
            )
            hw_ids = await self._ensure(s, HardwareConfig, matrix.hardware)
            fw_ids = await self._ensure(s, Framework, matrix.frameworks)
            count = select(func.count()).select_from(C).where(C.model_version_id == model_version_id)
            before = await s.scalar(count) or 0
            rows = [
                {
                    "model_version_id": model_version_id,
                    "hardware_config_id": hw_ids[h],
                    "framework_id": fw_ids[f],
                    "workload_type": w,
                    "batch_size": b,
                    "sequence_length": n,
                    "status": "pending",
                    "priority": priority(w, b, n),
                    "retry_count": 0,
                    "created_by": actor,
                }
                for h, f, w, b, n in itertools.product(
                    matrix.hardware, matrix.frameworks, matrix.workloads, matrix.batch_sizes, matrix.sequence_lengths
                )
            ]
            stmt = ins(C).on_conflict_do_nothing(
                index_elements=[
                    "model_version_id",
                    "hardware_config_id",
                    "framework_id",
                    "workload_type",
                    "batch_size",
                    "sequence_length",
                ]
            )
            for chunk in _chunks(rows, 5000):
                await s.execute(stmt, chunk)
            after = await s.scalar(count) or 0
            have = set(
                (
                    await s.scalars(select(StatusCount.shard).where(StatusCount.model_version_id == model_version_id))
                ).all()
            )
            s.add_all(
                StatusCount(model_version_id=model_version_id, shard=k, pending=0, running=0, completed=0, failed=0)
                for k in range(COUNT_SHARDS)
                if k not in have
            )
            await s.flush()
            await _bump(s, {(model_version_id, "pending"): int(after - before)})
        return {**info, "created": int(after - before), "existing": int(before)}

    async def _ensure(self, s, model, names: Iterable[str]) -> dict[str, int]:
        have = {r.name: r.id for r in (await s.execute(select(model.id, model.name))).all()}
        for name in names:
            if name not in have:
                obj = model(name=name)
                if model is HardwareConfig:
                    gpu, _, count = name.partition(":")
                    obj.gpu_type, obj.gpu_count = gpu, int(count) if count.isdigit() else 1
                s.add(obj)
                await s.flush()
                have[name] = obj.id
        return have

    # ------------------------------------------------------------------ claim

    async def claim(
        self,
        limit: int = 100,
        priority_threshold: int | None = None,
        *,
        model_version_id: str | None = None,
        worker: str | None = None,
        actor: str = LOCAL_ACTOR,
    ) -> list[dict[str, Any]]:
        """Atomically mark up to ``limit`` pending configs running, each under a new lease, and return them.

        Configs are taken in priority order (lowest number first), only those
        with ``priority <= priority_threshold`` when given. Each returned config
        carries its ``lease_id`` and ``lease_expires_at``; the claim is recorded
        in the audit under ``actor``.
        """
        if not 1 <= limit <= 500:
            raise SweepdeckError(f"limit must be between 1 and 500, got {limit}.")
        now = _now()
        if self.is_pg:
            rows = await self._claim_pg(limit, priority_threshold, model_version_id, worker, actor, now)
        else:
            rows = await self._claim_sqlite(limit, priority_threshold, model_version_id, worker, actor, now)
        # What the claim itself set is the same for every row: formatted once here, not read back per row
        # (a claim of 100 configs would otherwise parse and format 400 more timestamps).
        claimed, expires = self._stamp(now), self._stamp(self._expiry(now))
        fixed = {
            "status": "running",
            "started_at": claimed,
            "completed_at": None,
            "lease_expires_at": expires,
            "worker": worker,
        }
        out = []
        for r in rows:
            row = dict(zip(CLAIM_FIELDS, r, strict=True))
            row["created_at"] = _iso(row["created_at"])
            row.update(fixed)
            out.append(row)
        out.sort(key=lambda r: (r["priority"], r["id"]))
        return out

    def _stamp(self, moment: dt.datetime) -> str:
        """A time the store set, written as the database gives it back (PostgreSQL's carry their UTC offset)."""
        return (moment.replace(tzinfo=dt.UTC) if self.is_pg else moment).isoformat()

    async def _claim_pg(self, limit, threshold, mvid, worker, actor, now) -> list[Any]:
        # One statement, one round trip: pick (skipping rows other claimers hold), mark
        # running under a fresh lease each, move the kept counts, and write the audit rows.
        mv_cond = "AND model_version_id = :mv" if mvid is not None else ""
        thr_cond = "AND priority <= :thr" if threshold is not None else ""
        sql = text(f"""
            WITH picked AS (
                SELECT id FROM benchmark_configs
                WHERE status = 'pending' {mv_cond} {thr_cond}
                ORDER BY priority, id LIMIT :lim
                FOR UPDATE SKIP LOCKED),
            claimed AS (
                UPDATE benchmark_configs c
                SET status = 'running', started_at = :now, renewed_at = :now, worker = :worker,
                    lease_id = replace(gen_random_uuid()::text, '-', ''), lease_expires_at = :exp
                FROM picked WHERE c.id = picked.id
                RETURNING {", ".join("c." + k for k in CLAIM_FIELDS)}),
            moved AS (
                SELECT model_version_id, count(*) AS k FROM claimed GROUP BY model_version_id),
            counted AS (
                UPDATE status_counts s
                SET pending = s.pending - moved.k, running = s.running + moved.k
                FROM moved WHERE s.model_version_id = moved.model_version_id AND s.shard = :shard),
            logged AS (
                INSERT INTO config_events (config_id, model_version_id, at, actor, action, from_status, to_status,
                                           lease_id, detail)
                SELECT id, model_version_id, :now, :actor, 'claim', 'pending', 'running', lease_id, :worker
                FROM claimed)
            SELECT * FROM claimed""")
        params: dict[str, Any] = {
            "lim": limit,
            "now": now,
            "exp": self._expiry(now),
            "worker": worker,
            "actor": actor,
            "shard": random.randrange(COUNT_SHARDS),
        }
        if mvid is not None:
            params["mv"] = mvid
        if threshold is not None:
            params["thr"] = threshold
        async with self._claim_gate or contextlib.nullcontext(), self.engine.begin() as conn:
            return list((await conn.execute(sql, params)).all())

    async def _claim_sqlite(self, limit, threshold, mvid, worker, actor, now) -> list[Any]:
        conds = [C.status == "pending"]
        if threshold is not None:
            conds.append(C.priority <= threshold)
        if mvid is not None:
            conds.append(C.model_version_id == mvid)
        pick = select(C.id).where(and_(*conds)).order_by(C.priority, C.id).limit(limit)
        stmt = (
            update(C)
            .where(C.id.in_(pick.scalar_subquery()), C.status == "pending")
            .values(
                status="running",
                started_at=now,
                renewed_at=now,
                worker=worker,
                lease_id=func.lower(func.hex(func.randomblob(16))),
                lease_expires_at=self._expiry(now),
            )
            .returning(*[getattr(C, k) for k in CLAIM_FIELDS])
        )
        async with self.engine.begin() as conn:
            rows = list((await conn.execute(stmt)).all())
            if rows:
                # the audit rows from the claimed rows themselves, in the database: one statement
                audit = select(
                    C.id,
                    C.model_version_id,
                    literal(now, E.at.type),
                    literal(actor, E.actor.type),
                    literal("claim"),
                    literal("pending"),
                    literal("running"),
                    C.lease_id,
                    literal(worker, E.detail.type),
                ).where(C.id.in_([r.id for r in rows]))
                await conn.execute(
                    insert(E).from_select(
                        [
                            "config_id",
                            "model_version_id",
                            "at",
                            "actor",
                            "action",
                            "from_status",
                            "to_status",
                            "lease_id",
                            "detail",
                        ],
                        audit,
                    )
                )
                await _bump(conn, _moves([(r.model_version_id,) for r in rows], "pending", "running"))
        return rows

    async def heartbeat(self, leases: list[tuple[int, str]]) -> dict[str, Any]:
        """Extend the leases that are still current; say which are not.

        Returns:
            ``{"renewed": [{"config_id", "lease_expires_at"}], "revoked": [config ids]}`` — a revoked
            config was reset, expired or finished: its holder should drop it.
        """
        if not leases:
            return {"renewed": [], "revoked": []}
        now = _now()
        stmt = (
            update(C)
            .where(C.status == "running", C.lease_expires_at > now, tuple_(C.id, C.lease_id).in_(leases))
            .values(lease_expires_at=self._expiry(now), renewed_at=now)
            .returning(C.id, C.lease_expires_at)
        )
        async with self.engine.begin() as conn:
            rows = (await conn.execute(stmt)).all()
        renewed = {r.id: _iso(r.lease_expires_at) for r in rows}
        return {
            "renewed": [{"config_id": i, "lease_expires_at": e} for i, e in sorted(renewed.items())],
            "revoked": sorted({i for i, _ in leases} - set(renewed)),
        }

    # ----------------------------------------------------------------- status

    async def set_status(
        self,
        config_id: int,
        status: str,
        error_message: str | None = None,
        metrics: dict[str, Any] | None = None,
        *,
        lease_id: str | None = None,
        actor: str = LOCAL_ACTOR,
    ) -> dict[str, Any]:
        """Record a worker's report on a config it holds (and its result, in the same transaction).

        With ``lease_id``: a running config under that (unexpired) lease becomes
        ``completed``, ``failed`` or ``pending`` (given back; the lease ends). The
        lease check and the change are one conditional UPDATE. An identical retry
        of a report that was already recorded gets the same answer. Without a
        lease only a failed config can go back to pending (a retry).

        Storing the result with the status change means a worker killed between
        the two can never leave a result for a config that is then run again.

        Raises:
            NotFound: no such config.
            Conflict: the transition is impossible or the lease is not (or no longer) the config's.
        """
        if status not in STATUSES or status == "running":
            raise SweepdeckError(f"status must be one of completed, failed, pending, got {status!r}.")
        if lease_id is None:
            return await self._retry_failed(config_id, status, error_message, actor)
        now = _now()
        values: dict[str, Any] = {"status": status}
        if status == "completed":
            values.update(completed_at=now, error_message=None)
        elif status == "failed":
            values.update(completed_at=now, error_message=error_message or "failed (no message)")
        else:  # given back: the lease ends here
            values.update(started_at=None, worker=None, lease_id=None, lease_expires_at=None, renewed_at=None)
            if error_message:
                values["error_message"] = error_message
        stmt = (
            update(C)
            .where(C.id == config_id, C.status == "running", C.lease_id == lease_id, C.lease_expires_at > now)
            .values(**values)
            .returning(*[getattr(C, k) for k in CONFIG_FIELDS])
        )
        async with self.engine.begin() as conn:
            row = (await conn.execute(stmt)).first()
            if row is None:
                return await self._explain(conn, config_id, lease_id, status, metrics, now)
            if metrics is not None and status in ("completed", "failed"):
                await self._store_result(conn, row, lease_id, metrics, actor, now)
            action = {"completed": "complete", "failed": "fail", "pending": "release"}[status]
            await _log(
                conn,
                [(config_id, row.model_version_id)],
                now,
                actor,
                action,
                "running",
                status,
                lease_id,
                error_message if status != "completed" else None,
            )
            await _bump(conn, {(row.model_version_id, "running"): -1, (row.model_version_id, status): 1})
        return _row(row)

    async def _retry_failed(self, config_id: int, status: str, error_message: str | None, actor: str) -> dict[str, Any]:
        if status != "pending":
            raise Conflict(
                f"Reporting {status} on config {config_id} needs the lease its claim returned (lease_id).",
                reason="lease_required",
                config_id=config_id,
            )
        now = _now()
        values: dict[str, Any] = {
            "status": "pending",
            "started_at": None,
            "worker": None,
            "lease_id": None,
            "lease_expires_at": None,
            "renewed_at": None,
        }
        if error_message:
            values["error_message"] = error_message
        stmt = (
            update(C)
            .where(C.id == config_id, C.status == "failed")
            .values(**values)
            .returning(*[getattr(C, k) for k in CONFIG_FIELDS])
        )
        async with self.engine.begin() as conn:
            row = (await conn.execute(stmt)).first()
            if row is None:
                cur = (await conn.execute(select(C.status).where(C.id == config_id))).first()
                if cur is None:
                    raise NotFound(f"No config with id {config_id}.")
                hint = (
                    "Give the lease_id of its claim to hand it back, or reset it with reset-stale."
                    if cur.status == "running"
                    else ""
                )
                raise Conflict(
                    f"Config {config_id} is {cur.status}; only a failed config can be retried without a lease.",
                    hint,
                    reason="lease_required" if cur.status == "running" else "wrong_state",
                    config_id=config_id,
                    status=cur.status,
                )
            await _log(
                conn, [(config_id, row.model_version_id)], now, actor, "retry", "failed", "pending", None, error_message
            )
            await _bump(conn, {(row.model_version_id, "failed"): -1, (row.model_version_id, "pending"): 1})
        return _row(row)

    async def _store_result(
        self, conn: AsyncConnection, cfg: Any, lease_id: str, metrics: dict[str, Any], actor: str, now: dt.datetime
    ) -> int:
        """The attempt's result row: inserted once; an identical one again is the same row, a different one 409."""
        ins = self._insert()
        stmt = (
            ins(R)
            .values(
                config_id=cfg.id,
                model_version_id=cfg.model_version_id,
                metrics=metrics,
                created_at=now,
                lease_id=lease_id,
                created_by=actor,
            )
            .on_conflict_do_nothing(index_elements=["config_id", "lease_id"])
            .returning(R.id)
        )
        new_id = (await conn.execute(stmt)).scalar()
        if new_id is not None:
            await _log(conn, [(cfg.id, cfg.model_version_id)], now, actor, "result", None, None, lease_id, None)
            return int(new_id)
        return await self._same_result(conn, cfg.id, lease_id, metrics)

    async def _same_result(self, conn: AsyncConnection, config_id: int, lease_id: str, metrics: dict[str, Any]) -> int:
        found = (
            await conn.execute(select(R.id, R.metrics).where(R.config_id == config_id, R.lease_id == lease_id))
        ).first()
        if found is None:
            raise Conflict(
                f"Config {config_id} has no result under this lease.", reason="wrong_state", config_id=config_id
            )
        if _canonical(found.metrics) != _canonical(metrics):
            raise Conflict(
                f"A different result was already recorded for this attempt on config {config_id} "
                f"(result {found.id}); one result per attempt.",
                reason="result_differs",
                config_id=config_id,
            )
        return int(found.id)

    async def _explain(
        self,
        conn: AsyncConnection,
        config_id: int,
        lease_id: str,
        status: str,
        metrics: dict[str, Any] | None,
        now: dt.datetime,
    ) -> dict[str, Any]:
        """Why a lease-checked report changed nothing: an identical retry (its answer), else 404/409."""
        cur = (await conn.execute(select(*[getattr(C, k) for k in CONFIG_FIELDS]).where(C.id == config_id))).first()
        if cur is None:
            raise NotFound(f"No config with id {config_id}.")
        if cur.lease_id == lease_id and cur.status == status and status in ("completed", "failed"):
            if metrics is not None:
                await self._same_result(conn, config_id, lease_id, metrics)
            return _row(cur)  # the first report went through: this is its retry
        return await self._refuse(conn, cur, lease_id, status)

    async def _refuse(self, conn: AsyncConnection, cur: Any, lease_id: str, status: str) -> dict[str, Any]:
        """Raise the 409 saying why ``lease_id`` cannot report ``status`` on ``cur`` (or answer a retried give-back)."""
        if cur.lease_id == lease_id and cur.status == "running":
            raise Conflict(
                f"Your lease on config {cur.id} expired at {_iso(_naive(cur.lease_expires_at))} UTC (no heartbeat in "
                f"{self.lease_seconds:g} s); your report was not recorded.",
                "The config will be given back to the queue by reset-stale; drop it and claim new work.",
                reason="lease_expired",
                config_id=cur.id,
                status=cur.status,
            )
        if cur.lease_id == lease_id:
            raise Conflict(
                f"Config {cur.id} is already {cur.status} under this lease; it cannot become {status}.",
                reason="wrong_state",
                config_id=cur.id,
                status=cur.status,
            )
        return await self._revoked(conn, cur, lease_id, status)

    async def _revoked(self, conn: AsyncConnection, cur: Any, lease_id: str, status: str) -> dict[str, Any]:
        events = (
            await conn.execute(select(E.action, E.lease_id, E.actor, E.at).where(E.config_id == cur.id).order_by(E.id))
        ).all()
        claimed = next((i for i, e in enumerate(events) if e.action == "claim" and e.lease_id == lease_id), None)
        if claimed is None:
            raise Conflict(
                f"The lease you sent is not a lease of config {cur.id}; your report was not recorded.",
                "Report with the lease_id the claim returned for this config.",
                reason="lease_unknown",
                config_id=cur.id,
                status=cur.status,
            )
        after = events[claimed + 1 :]
        if status == "pending" and after and after[0].action == "release" and after[0].lease_id == lease_id:
            return _row(cur)  # a retried give-back
        ended = next((e for e in after if e.action in ("reset", "expire-fail", "complete", "fail", "release")), None)
        how = (
            (
                f"revoked by {'reset-stale' if ended.action in ('reset', 'expire-fail') else ended.action} "
                f"({ended.actor}, {_iso(_naive(ended.at))} UTC)"
            )
            if ended
            else "revoked"
        )
        since = {
            "running": "the config now runs under another worker's lease",
            "pending": "the config is waiting in the queue again",
        }.get(cur.status, f"the config has since been {cur.status}")
        raise Conflict(
            f"Config {cur.id} was reassigned: your lease was {how} and {since}. Your report was not recorded.",
            "Drop this config and claim new work.",
            reason="lease_revoked",
            config_id=cur.id,
            status=cur.status,
        )

    async def add_result(
        self, config_id: int, metrics: dict[str, Any], *, lease_id: str, actor: str = LOCAL_ACTOR
    ) -> tuple[int, bool]:
        """Store the result of the attempt ``lease_id`` on a running config.

        The lease check and the insert are one statement (``INSERT … SELECT`` from the
        config row if it runs under that lease; on PostgreSQL the row is locked, so a
        concurrent reset cannot slip in between).

        Returns:
            ``(result id, created)``: an identical retry returns the first id with ``created`` False.

        Raises:
            NotFound: no such config.
            Conflict: the config is not running under that lease, or a different result was already stored.
        """
        now = _now()
        current = and_(C.id == config_id, C.status == "running", C.lease_id == lease_id, C.lease_expires_at > now)
        source = select(
            C.id,
            C.model_version_id,
            literal(metrics, R.metrics.type),
            literal(now, R.created_at.type),
            C.lease_id,
            literal(actor, R.created_by.type),
        ).where(current)
        if self.is_pg:
            source = source.with_for_update()
        stmt = (
            self._insert()(R)
            .from_select(["config_id", "model_version_id", "metrics", "created_at", "lease_id", "created_by"], source)
            .on_conflict_do_nothing(index_elements=["config_id", "lease_id"])
            .returning(R.id, R.model_version_id)
        )
        async with self.engine.begin() as conn:
            row = (await conn.execute(stmt)).first()
            if row is not None:
                await _log(conn, [(config_id, row.model_version_id)], now, actor, "result", None, None, lease_id, None)
                return int(row.id), True
            cur = (await conn.execute(select(*[getattr(C, k) for k in CONFIG_FIELDS]).where(C.id == config_id))).first()
            if cur is None:
                raise NotFound(f"No config with id {config_id}.")
            existing = (
                await conn.execute(select(R.id).where(R.config_id == config_id, R.lease_id == lease_id))
            ).first()
            if existing is not None:
                return await self._same_result(conn, config_id, lease_id, metrics), False
            if cur.lease_id == lease_id and cur.status != "running":
                raise Conflict(
                    f"Config {config_id} is {cur.status}; a result is only taken while it runs under your lease.",
                    reason="wrong_state",
                    config_id=config_id,
                    status=cur.status,
                )
            await self._refuse(conn, cur, lease_id, "completed")
            raise Conflict(
                f"Config {config_id} is not running under your lease.", reason="lease_unknown", config_id=config_id
            )

    async def release(self, config_ids: list[int], *, actor: str = LOCAL_ACTOR) -> int:
        """Return running configs to pending (an operator stopping a worker); their leases end."""
        if not config_ids:
            return 0
        now = _now()
        async with self.engine.begin() as conn:
            rows = (
                await conn.execute(
                    update(C)
                    .where(C.id.in_(config_ids), C.status == "running")
                    .values(
                        status="pending",
                        started_at=None,
                        worker=None,
                        lease_id=None,
                        lease_expires_at=None,
                        renewed_at=None,
                    )
                    .returning(C.id, C.model_version_id)
                )
            ).all()
            await _log(
                conn,
                [(r.id, r.model_version_id) for r in rows],
                now,
                actor,
                "reset",
                "running",
                "pending",
                None,
                "released by an operator",
            )
            await _bump(conn, _moves([(r.model_version_id,) for r in rows], "running", "pending"))
        return len(rows)

    async def reset_stale(
        self, timeout_minutes: float = 120, max_retries: int = 3, *, actor: str = LOCAL_ACTOR
    ) -> dict[str, int]:
        """Running configs whose lease expired or that were not renewed for ``timeout_minutes``
        go back to pending (retry + 1), or to failed once they have used up ``max_retries``.
        Either way their lease is revoked: a late report from the old holder gets 409."""
        if timeout_minutes < 0:
            raise SweepdeckError("timeout_minutes must not be negative.")
        now = _now()
        cutoff = _minus_minutes(now, timeout_minutes)
        message = f"stale: still running after {timeout_minutes:g} min, {max_retries} retries used"
        pick = select(C.id, C.model_version_id, C.lease_id, C.retry_count).where(_stale(now, cutoff))
        async with self.engine.begin() as conn:
            if self.is_pg:
                pick = pick.with_for_update()  # a concurrent report waits, then finds its lease gone
            else:
                await conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock before the read (see module docs)
            rows = (await conn.execute(pick)).all()
            failed = [r for r in rows if r.retry_count >= max_retries]
            reset = [r for r in rows if r.retry_count < max_retries]
            gone = {"lease_id": None, "lease_expires_at": None, "retry_count": C.retry_count + 1}
            for chunk in _chunks([r.id for r in failed], 5000):
                await conn.execute(
                    update(C)
                    .where(C.id.in_(chunk))
                    .values(status="failed", completed_at=now, error_message=message, **gone)
                )
            for chunk in _chunks([r.id for r in reset], 5000):
                await conn.execute(
                    update(C)
                    .where(C.id.in_(chunk))
                    .values(status="pending", started_at=None, worker=None, renewed_at=None, **gone)
                )
            await _log(
                conn,
                [(r.id, r.model_version_id) for r in failed],
                now,
                actor,
                "expire-fail",
                "running",
                "failed",
                None,
                message,
                leases=[r.lease_id for r in failed],
            )
            await _log(
                conn,
                [(r.id, r.model_version_id) for r in reset],
                now,
                actor,
                "reset",
                "running",
                "pending",
                None,
                f"stale (lease expired or not renewed for {timeout_minutes:g} min)",
                leases=[r.lease_id for r in reset],
            )
            delta = _moves([(r.model_version_id,) for r in failed], "running", "failed")
            for key, n in _moves([(r.model_version_id,) for r in reset], "running", "pending").items():
                delta[key] = delta.get(key, 0) + n
            await _bump(conn, delta)
        return {"reset": len(reset), "failed": len(failed)}

    # ------------------------------------------------------------------ reads

    async def progress(self, model_version_id: str) -> dict[str, Any]:
        """total, pending, running, completed, failed, progress_pct."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(
                        func.sum(StatusCount.pending),
                        func.sum(StatusCount.running),
                        func.sum(StatusCount.completed),
                        func.sum(StatusCount.failed),
                    ).where(StatusCount.model_version_id == model_version_id)
                )
            ).first()
        counts = dict(zip(STATUSES, (int(v or 0) for v in row), strict=True)) if row else {s: 0 for s in STATUSES}
        total = sum(counts.values())
        done = counts["completed"] + counts["failed"]
        return {
            "model_version_id": model_version_id,
            "total": total,
            **counts,
            "progress_pct": round(100.0 * done / total, 2) if total else 0.0,
        }

    async def recount(self, model_version_id: str) -> dict[str, int]:
        """Status counts by scanning the configs (slow; checks the kept counts)."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(C.status, func.count()).where(C.model_version_id == model_version_id).group_by(C.status)
                )
            ).all()
        counts = {s: 0 for s in STATUSES}
        counts.update({s: int(n) for s, n in rows})
        return counts

    async def list_configs(
        self,
        model_version_id: str,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
        error_message: str | None = None,
    ) -> list[dict[str, Any]]:
        """Configs of a model version, optionally by status and exact error message (a failure group)."""
        if status is not None and status not in STATUSES:
            raise SweepdeckError(f"status must be one of {', '.join(STATUSES)}, got {status!r}.")
        q = select(C).where(C.model_version_id == model_version_id)
        if status:
            q = q.where(C.status == status)
        if error_message is not None:
            # failures() reports a NULL message as "(no message)"; map it back
            q = q.where(
                C.error_message.is_(None) if error_message == "(no message)" else C.error_message == error_message
            )
        q = q.order_by(C.priority, C.id).limit(limit).offset(offset)
        async with self.sessions() as s:
            return [_row(c) for c in (await s.scalars(q)).all()]

    async def stale(self, model_version_id: str, older_than_minutes: float) -> list[dict[str, Any]]:
        """Running configs reset-stale would take with this timeout (lease expired or not renewed since)."""
        now = _now()
        cutoff = _minus_minutes(now, older_than_minutes)
        q = (
            select(C)
            .where(C.model_version_id == model_version_id, _stale(now, cutoff))
            .order_by(C.started_at)
            .limit(500)
        )
        async with self.sessions() as s:
            return [_row(c) for c in (await s.scalars(q)).all()]

    async def failures(self, model_version_id: str) -> list[dict[str, Any]]:
        """Failed configs grouped by error message, largest group first."""
        q = (
            select(C.error_message, func.count())
            .where(C.model_version_id == model_version_id, C.status == "failed")
            .group_by(C.error_message)
            .order_by(func.count().desc())
        )
        async with self.engine.connect() as conn:
            return [{"error_message": m or "(no message)", "count": int(n)} for m, n in (await conn.execute(q)).all()]

    async def breakdown(self, model_version_id: str, by: str = "workload_type") -> list[dict[str, Any]]:
        """Status counts grouped by ``workload_type`` or ``priority``."""
        if by not in ("workload_type", "priority"):
            raise SweepdeckError("breakdown is by workload_type or priority.")
        col = getattr(C, by)
        q = (
            select(col, C.status, func.count())
            .where(C.model_version_id == model_version_id)
            .group_by(col, C.status)
            .order_by(col)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        out: dict[Any, dict[str, Any]] = {}
        for key, status, n in rows:
            entry = out.setdefault(key, {by: key, **{s: 0 for s in STATUSES}})
            entry[status] = int(n)
        return list(out.values())

    @staticmethod
    def rate_query(model_version_id: str, since: dt.datetime):
        """The count behind :meth:`completion_rate` (a range scan of ``ix_configs_mv_status_completed``)."""
        return (
            select(func.count())
            .select_from(C)
            .where(
                C.model_version_id == model_version_id, C.status.in_(("completed", "failed")), C.completed_at >= since
            )
        )

    async def completion_rate(self, model_version_id: str, window_minutes: float = 5) -> float:
        """Configs finished per minute over the last window."""
        q = self.rate_query(model_version_id, _minus_minutes(_now(), window_minutes))
        async with self.engine.connect() as conn:
            n = await conn.scalar(q)
        return float(n or 0) / window_minutes

    async def results(self, model_version_id: str, limit: int = 1000, offset: int = 0) -> list[dict[str, Any]]:
        q = select(R).where(R.model_version_id == model_version_id).order_by(R.id).limit(limit).offset(offset)
        async with self.sessions() as s:
            return [
                {
                    "id": r.id,
                    "config_id": r.config_id,
                    "metrics": r.metrics,
                    "lease_id": r.lease_id,
                    "created_by": r.created_by,
                    "created_at": _iso(r.created_at),
                }
                for r in (await s.scalars(q)).all()
            ]

    async def history(self, config_id: int) -> dict[str, Any]:
        """A config, every state change it went through (who, when, which lease) and its results.

        Raises:
            NotFound: no such config.
        """
        async with self.sessions() as s:
            cfg = await s.get(C, config_id)
            if cfg is None:
                raise NotFound(f"No config with id {config_id}.")
            events = (await s.scalars(select(E).where(E.config_id == config_id).order_by(E.id))).all()
            results = (await s.scalars(select(R).where(R.config_id == config_id).order_by(R.id))).all()
        return {
            "config": _row(cfg),
            "events": [
                {
                    "at": _iso(e.at),
                    "actor": e.actor,
                    "action": e.action,
                    "from_status": e.from_status,
                    "to_status": e.to_status,
                    "lease_id": e.lease_id,
                    "detail": e.detail,
                }
                for e in events
            ],
            "results": [
                {
                    "id": r.id,
                    "lease_id": r.lease_id,
                    "created_by": r.created_by,
                    "created_at": _iso(r.created_at),
                    "metrics": r.metrics,
                }
                for r in results
            ],
        }


async def _log(
    conn,
    configs: list[tuple[int, str]],
    at: dt.datetime,
    actor: str,
    action: str,
    from_status: str | None,
    to_status: str | None,
    lease_id: str | None,
    detail: str | None,
    *,
    leases: list[str | None] | None = None,
) -> None:
    """Audit rows: one per config, in the caller's transaction."""
    if not configs:
        return
    await conn.execute(
        insert(E),
        [
            {
                "config_id": cid,
                "model_version_id": mv,
                "at": at,
                "actor": actor,
                "action": action,
                "from_status": from_status,
                "to_status": to_status,
                "lease_id": leases[i] if leases is not None else lease_id,
                "detail": detail,
            }
            for i, (cid, mv) in enumerate(configs)
        ],
    )


def _add_missing_columns(sync_conn) -> None:
    """ALTER TABLE … ADD COLUMN for columns a newer release defines (all new ones are nullable)."""
    insp = inspect(sync_conn)
    for table in Base.metadata.sorted_tables:
        have = {c["name"] for c in insp.get_columns(table.name)}
        for col in table.columns:
            if col.name not in have:
                ddl = col.type.compile(dialect=sync_conn.dialect)
                sync_conn.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{col.name}" {ddl}')


def _moves(rows, old: str, new: str) -> dict[tuple[str, str], int]:
    delta: dict[tuple[str, str], int] = {}
    for (mv,) in rows:
        delta[(mv, old)] = delta.get((mv, old), 0) - 1
        delta[(mv, new)] = delta.get((mv, new), 0) + 1
    return delta


async def _bump(conn, delta: dict[tuple[str, str], int]) -> None:
    """Apply count changes: one UPDATE of one random shard row per model version, in a fixed order."""
    per_mv: dict[str, dict[str, int]] = {}
    for (mv, status), n in delta.items():
        if n:
            per_mv.setdefault(mv, {})[status] = per_mv.get(mv, {}).get(status, 0) + n
    for mv in sorted(per_mv):
        values = {status: getattr(StatusCount, status) + n for status, n in per_mv[mv].items()}
        await conn.execute(
            update(StatusCount)
            .where(StatusCount.model_version_id == mv, StatusCount.shard == random.randrange(COUNT_SHARDS))
            .values(**values)
        )


def _chunks(rows: list, size: int):
    for i in range(0, len(rows), size):
        yield rows[i : i + size]
