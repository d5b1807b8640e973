"""The work-queue store: populate, claim, report, progress, stale reset.

One class over SQLAlchemy's async engine serves SQLite (the embedded default,
a file in the XDG data dir) and PostgreSQL (``postgresql+asyncpg://``). The
claim is the heart of it: a batch of pending configs is marked running in one
statement, so no config is ever handed to two workers —
``FOR UPDATE SKIP LOCKED`` on PostgreSQL (concurrent claimers skip each
other's rows instead of waiting), one short write statement on SQLite
(SQLite serialises writers).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from sqlalchemy import and_, event, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from backends.queue.models import (
    STATUSES,
    WORKLOADS,
    Base,
    BenchmarkConfig,
    BenchmarkResult,
    Framework,
    HardwareConfig,
    ModelVersion,
    COUNT_SHARDS,
    StatusCount,
)
from config.errors import SweepdeckError

C = BenchmarkConfig

# Lower number = claimed first (the seed's weights).
WORKLOAD_PRIORITY = {
    "chatbot": 100,
    "qa": 200,
    "code-generation": 300,
    "creative-writing": 400,
    "summarization": 500,
}
DEFAULT_HARDWARE = (
    "H100-80GB:1", "H100-80GB:2", "H100-80GB:4", "H100-80GB:8",
    "A100-80GB:1", "A100-80GB:2", "A100-80GB:4", "A100-80GB:8",
    "L40S:1", "L40S:2",
)
DEFAULT_FRAMEWORKS = ("vllm", "tgi", "sglang")
DEFAULT_BATCH_SIZES = (1, 2, 4, 8)
DEFAULT_SEQUENCE_LENGTHS = (1024, 2048, 4096)

# Transitions a worker may report. running -> pending is a worker giving a
# config back (SIGTERM); failed -> pending is a manual retry.
ALLOWED = {
    ("running", "completed"),
    ("running", "failed"),
    ("running", "pending"),
    ("failed", "pending"),
}


class NotFound(SweepdeckError):
    exit_code = 4


class Conflict(SweepdeckError):
    exit_code = 5


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
            len(self.hardware) * len(self.frameworks) * len(self.workloads)
            * len(self.batch_sizes) * len(self.sequence_lengths)
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
        for n in self.batch_sizes + self.sequence_lengths:
            if not isinstance(n, int) or n <= 0:
                raise SweepdeckError(f"Batch sizes and sequence lengths must be positive integers, got {n!r}.")


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
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _row(cfg: Any) -> dict[str, Any]:
    m = cfg._mapping if hasattr(cfg, "_mapping") else None
    get = (lambda k: m[k]) if m is not None else (lambda k: getattr(cfg, k))
    out = {}
    for key in (
        "id", "model_version_id", "hardware_config_id", "framework_id", "workload_type", "batch_size",
        "sequence_length", "status", "priority", "created_at", "started_at", "completed_at",
        "error_message", "retry_count", "worker",
    ):
        value = get(key)
        out[key] = value.isoformat() if isinstance(value, dt.datetime) else value
    return out


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
    """

    url: str = field(default_factory=default_db_url)
    pool_size: int = 20
    claim_concurrency: int | None = 4
    engine: AsyncEngine = field(init=False)

    def __post_init__(self) -> None:
        self.url = normalise_url(self.url)
        self.is_pg = self.url.startswith("postgresql")
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
        self._claim_gate = (asyncio.Semaphore(self.claim_concurrency)
                            if self.is_pg and self.claim_concurrency else None)

    async def create(self) -> None:
        """Create the tables and indexes if missing."""
        try:
            async with self.engine.begin() as conn:
                await conn.run_sync(Base.metadata.create_all)
                # create_all skips tables that exist: add indexes a newer release defines to an older database
                for table in Base.metadata.sorted_tables:
                    for index in table.indexes:
                        await conn.run_sync(lambda sync, ix=index: ix.create(sync, checkfirst=True))
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

    # ----------------------------------------------------------- population

    async def populate(self, model_version_id: str, matrix: Matrix | None = None, *, dry_run: bool = False) -> dict[str, int]:
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
        async with self.sessions() as s, s.begin():
            if await s.get(ModelVersion, model_version_id) is None:
                s.add(ModelVersion(id=model_version_id, name=model_version_id))
            hw_ids = await self._ensure(s, HardwareConfig, matrix.hardware)
            fw_ids = await self._ensure(s, Framework, matrix.frameworks)
            before = await s.scalar(select(func.count()).select_from(C).where(C.model_version_id == model_version_id))
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
                }
                for h, f, w, b, n in itertools.product(
                    matrix.hardware, matrix.frameworks, matrix.workloads, matrix.batch_sizes, matrix.sequence_lengths
                )
            ]
            if self.is_pg:
                from sqlalchemy.dialects.postgresql import insert
            else:
                from sqlalchemy.dialects.sqlite import insert
            stmt = insert(C).on_conflict_do_nothing(index_elements=[
                "model_version_id", "hardware_config_id", "framework_id", "workload_type", "batch_size", "sequence_length",
            ])
            for chunk in _chunks(rows, 5000):
                await s.execute(stmt, chunk)
            after = await s.scalar(select(func.count()).select_from(C).where(C.model_version_id == model_version_id))
            have = set((await s.scalars(
                select(StatusCount.shard).where(StatusCount.model_version_id == model_version_id))).all())
            s.add_all(StatusCount(model_version_id=model_version_id, shard=k, pending=0, running=0, completed=0, failed=0)
                      for k in range(COUNT_SHARDS) if k not in have)
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

    async def claim(self, limit: int = 100, priority_threshold: int | None = None, *, model_version_id: str | None = None, worker: str | None = None) -> list[dict[str, Any]]:
        """Atomically mark up to ``limit`` pending configs running and return them.

        Configs are taken in priority order (lowest number first), only those
        with ``priority <= priority_threshold`` when given.
        """
        if not 1 <= limit <= 500:
            raise SweepdeckError(f"limit must be between 1 and 500, got {limit}.")
        conds = [C.status == "pending"]
        if priority_threshold is not None:
            conds.append(C.priority <= priority_threshold)
        if model_version_id is not None:
            conds.append(C.model_version_id == model_version_id)
        pick = select(C.id).where(and_(*conds)).order_by(C.priority, C.id).limit(limit)
        values = {"status": "running", "started_at": _now(), "worker": worker}
        cols = [getattr(C, k) for k in (
            "id", "model_version_id", "hardware_config_id", "framework_id", "workload_type", "batch_size",
            "sequence_length", "status", "priority", "created_at", "started_at", "completed_at",
            "error_message", "retry_count", "worker")]
        if self.is_pg:
            # One statement, one round trip: pick (skipping rows other claimers
            # hold), mark running, and move the kept counts.
            mv_cond = "AND model_version_id = :mv" if model_version_id is not None else ""
            thr_cond = "AND priority <= :thr" if priority_threshold is not None else ""
            sql = text(f"""
                WITH picked AS (
                    SELECT id FROM benchmark_configs
                    WHERE status = 'pending' {mv_cond} {thr_cond}
                    ORDER BY priority, id LIMIT :lim
                    FOR UPDATE SKIP LOCKED),
                claimed AS (
                    UPDATE benchmark_configs c SET status = 'running', started_at = :now, worker = :worker
                    FROM picked WHERE c.id = picked.id
                    RETURNING c.*),
                moved AS (
                    SELECT model_version_id, count(*) AS k FROM claimed GROUP BY model_version_id),
                counted AS (
                    UPDATE status_counts s
                    SET pending = s.pending - moved.k, running = s.running + moved.k
                    FROM moved WHERE s.model_version_id = moved.model_version_id AND s.shard = :shard)
                SELECT * FROM claimed""")
            params = {"lim": limit, "now": values["started_at"], "worker": worker, "shard": random.randrange(COUNT_SHARDS)}
            if model_version_id is not None:
                params["mv"] = model_version_id
            if priority_threshold is not None:
                params["thr"] = priority_threshold
            async with self._claim_gate or contextlib.nullcontext(), self.engine.begin() as conn:
                rows = (await conn.execute(sql, params)).all()
        else:
            stmt = (
                update(C)
                .where(C.id.in_(pick.scalar_subquery()), C.status == "pending")
                .values(**values)
                .returning(*cols)
            )
            async with self.engine.begin() as conn:
                rows = (await conn.execute(stmt)).all()
                if rows:
                    await _bump(conn, _moves([(r.model_version_id,) for r in rows], "pending", "running"))
        out = [_row(r) for r in rows]
        out.sort(key=lambda r: (r["priority"], r["id"]))
        return out

    # ----------------------------------------------------------------- status

    async def set_status(self, config_id: int, status: str, error_message: str | None = None, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        """Record a worker's report (and its result, in the same transaction).

        Storing the result with the status change means a worker killed
        between the two can never leave a result for a config that is then
        run again: each completed config has exactly one result row.

        Raises:
            NotFound: no such config.
            Conflict: the transition is impossible (e.g. completed → running).
        """
        if status not in STATUSES:
            raise SweepdeckError(f"status must be one of {', '.join(STATUSES)}, got {status!r}.")
        async with self.sessions() as s, s.begin():
            cfg = await s.get(C, config_id, with_for_update=self.is_pg)
            if cfg is None:
                raise NotFound(f"No config with id {config_id}.")
            if (cfg.status, status) not in ALLOWED:
                raise Conflict(f"Config {config_id} is {cfg.status}; it cannot become {status}.")
            await _bump(s, {(cfg.model_version_id, cfg.status): -1, (cfg.model_version_id, status): 1})
            cfg.status = status
            if metrics is not None and status in ("completed", "failed"):
                s.add(BenchmarkResult(config_id=config_id, model_version_id=cfg.model_version_id, metrics=metrics))
            if status == "completed":
                cfg.completed_at, cfg.error_message = _now(), None
            elif status == "failed":
                cfg.completed_at, cfg.error_message = _now(), error_message or "failed (no message)"
            else:  # back to pending
                cfg.started_at, cfg.worker = None, None
                if error_message:
                    cfg.error_message = error_message
            return _row(cfg)

    async def release(self, config_ids: list[int]) -> int:
        """Return running configs to pending (a worker stopping early)."""
        if not config_ids:
            return 0
        async with self.engine.begin() as conn:
            rows = (await conn.execute(
                update(C).where(C.id.in_(config_ids), C.status == "running")
                .values(status="pending", started_at=None, worker=None).returning(C.model_version_id)
            )).all()
            await _bump(conn, _moves(rows, "running", "pending"))
        return len(rows)

    async def reset_stale(self, timeout_minutes: float = 120, max_retries: int = 3) -> dict[str, int]:
        """Running configs older than the timeout go back to pending (retry + 1),
        or to failed once they have used up ``max_retries``."""
        if timeout_minutes < 0:
            raise SweepdeckError("timeout_minutes must not be negative.")
        cutoff = _now() - dt.timedelta(minutes=timeout_minutes)
        stale = and_(C.status == "running", C.started_at <= cutoff)
        async with self.engine.begin() as conn:
            failed = (await conn.execute(
                update(C).where(stale, C.retry_count >= max_retries).values(
                    status="failed", completed_at=_now(), retry_count=C.retry_count + 1,
                    error_message=f"stale: still running after {timeout_minutes:g} min, {max_retries} retries used",
                ).returning(C.model_version_id)
            )).all()
            reset = (await conn.execute(
                update(C).where(stale).values(status="pending", started_at=None, worker=None, retry_count=C.retry_count + 1)
                .returning(C.model_version_id)
            )).all()
            delta = _moves(failed, "running", "failed")
            for key, n in _moves(reset, "running", "pending").items():
                delta[key] = delta.get(key, 0) + n
            await _bump(conn, delta)
        return {"reset": len(reset), "failed": len(failed)}

    # ------------------------------------------------------------------ reads

    async def progress(self, model_version_id: str) -> dict[str, Any]:
        """total, pending, running, completed, failed, progress_pct."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                select(func.sum(StatusCount.pending), func.sum(StatusCount.running),
                       func.sum(StatusCount.completed), func.sum(StatusCount.failed))
                .where(StatusCount.model_version_id == model_version_id)
            )).first()
        counts = dict(zip(STATUSES, (int(v or 0) for v in row))) if row else {s: 0 for s in STATUSES}
        total = sum(counts.values())
        done = counts["completed"] + counts["failed"]
        return {"model_version_id": model_version_id, "total": total, **counts,
                "progress_pct": round(100.0 * done / total, 2) if total else 0.0}

    async def recount(self, model_version_id: str) -> dict[str, int]:
        """Status counts by scanning the configs (slow; checks the kept counts)."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                select(C.status, func.count()).where(C.model_version_id == model_version_id).group_by(C.status)
            )).all()
        counts = {s: 0 for s in STATUSES}
        counts.update({s: int(n) for s, n in rows})
        return counts

    async def list_configs(self, model_version_id: str, status: str | None = None, limit: int = 100, offset: int = 0,
                           error_message: str | None = None) -> list[dict[str, Any]]:
        """Configs of a model version, optionally by status and exact error message (a failure group)."""
        if status is not None and status not in STATUSES:
            raise SweepdeckError(f"status must be one of {', '.join(STATUSES)}, got {status!r}.")
        q = select(C).where(C.model_version_id == model_version_id)
        if status:
            q = q.where(C.status == status)
        if error_message is not None:
            # failures() reports a NULL message as "(no message)"; map it back
            q = q.where(C.error_message.is_(None) if error_message == "(no message)" else C.error_message == error_message)
        q = q.order_by(C.priority, C.id).limit(limit).offset(offset)
        async with self.sessions() as s:
            return [_row(c) for c in (await s.scalars(q)).all()]

    async def stale(self, model_version_id: str, older_than_minutes: float) -> list[dict[str, Any]]:
        cutoff = _now() - dt.timedelta(minutes=older_than_minutes)
        q = select(C).where(C.model_version_id == model_version_id, C.status == "running", C.started_at <= cutoff).order_by(C.started_at).limit(500)
        async with self.sessions() as s:
            return [_row(c) for c in (await s.scalars(q)).all()]

    async def failures(self, model_version_id: str) -> list[dict[str, Any]]:
        """Failed configs grouped by error message, largest group first."""
        q = (select(C.error_message, func.count()).where(C.model_version_id == model_version_id, C.status == "failed")
             .group_by(C.error_message).order_by(func.count().desc()))
        async with self.engine.connect() as conn:
            return [{"error_message": m or "(no message)", "count": int(n)} for m, n in (await conn.execute(q)).all()]

    async def breakdown(self, model_version_id: str, by: str = "workload_type") -> list[dict[str, Any]]:
        """Status counts grouped by ``workload_type`` or ``priority``."""
        if by not in ("workload_type", "priority"):
            raise SweepdeckError("breakdown is by workload_type or priority.")
        col = getattr(C, by)
        q = select(col, C.status, func.count()).where(C.model_version_id == model_version_id).group_by(col, C.status).order_by(col)
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
        return select(func.count()).select_from(C).where(
            C.model_version_id == model_version_id, C.status.in_(("completed", "failed")), C.completed_at >= since)

    async def completion_rate(self, model_version_id: str, window_minutes: float = 5) -> float:
        """Configs finished per minute over the last window."""
        q = self.rate_query(model_version_id, _now() - dt.timedelta(minutes=window_minutes))
        async with self.engine.connect() as conn:
            n = await conn.scalar(q)
        return float(n or 0) / window_minutes

    # ---------------------------------------------------------------- results

    async def add_result(self, config_id: int, metrics: dict[str, Any]) -> int:
        async with self.sessions() as s, s.begin():
            cfg = await s.get(C, config_id)
            if cfg is None:
                raise NotFound(f"No config with id {config_id}.")
            res = BenchmarkResult(config_id=config_id, model_version_id=cfg.model_version_id, metrics=metrics)
            s.add(res)
            await s.flush()
            return res.id

    async def results(self, model_version_id: str, limit: int = 1000, offset: int = 0) -> list[dict[str, Any]]:
        q = (select(BenchmarkResult).where(BenchmarkResult.model_version_id == model_version_id)
             .order_by(BenchmarkResult.id).limit(limit).offset(offset))
        async with self.sessions() as s:
            return [
                {"id": r.id, "config_id": r.config_id, "metrics": r.metrics,
                 "created_at": r.created_at.isoformat() if r.created_at else None}
                for r in (await s.scalars(q)).all()
            ]


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
        await conn.execute(update(StatusCount).where(
            StatusCount.model_version_id == mv, StatusCount.shard == random.randrange(COUNT_SHARDS)).values(**values))


def _chunks(rows: list, size: int):
    for i in range(0, len(rows), size):
        yield rows[i : i + size]
