"""Tables of the work queue (SQLAlchemy 2 declarative).

``benchmark_configs`` is the queue: one row per configuration of the sweep
matrix with its status (pending → running → completed | failed). The indexes
are chosen for the two hot queries: the claim (pending, by priority, per
model version) and the progress count (per model version and status).

A claim gives each config a *lease* (``lease_id``, ``lease_expires_at``):
every later report on it must carry that lease, heartbeats extend it, and
``reset-stale`` or its expiry revoke it. ``benchmark_results`` holds at most
one result per attempt (config + lease), and ``config_events`` records every
state change with the name of the token that made it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

STATUSES = ("pending", "running", "completed", "failed")
#: Largest value of an ``Integer`` column on PostgreSQL (int4): ids, sizes and priorities stay below it.
INT4_MAX = 2**31 - 1
#: Length of a lease id (hex of 128 random bits).
LEASE_LEN = 32
WORKLOADS = ("chatbot", "qa", "summarization", "code-generation", "creative-writing")


class Base(DeclarativeBase):
    pass


class ModelVersion(Base):
    __tablename__ = "model_versions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class HardwareConfig(Base):
    __tablename__ = "hardware_configs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    gpu_type: Mapped[str] = mapped_column(String(100), default="")
    gpu_count: Mapped[int] = mapped_column(Integer, default=1)


class Framework(Base):
    __tablename__ = "frameworks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    version: Mapped[str] = mapped_column(String(50), default="")


class BenchmarkConfig(Base):
    __tablename__ = "benchmark_configs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"))
    hardware_config_id: Mapped[int] = mapped_column(ForeignKey("hardware_configs.id"))
    framework_id: Mapped[int] = mapped_column(ForeignKey("frameworks.id"))
    workload_type: Mapped[str] = mapped_column(String(50))
    batch_size: Mapped[int] = mapped_column(Integer)
    sequence_length: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    completed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    retry_count: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # The current claim's lease (kept after completed/failed: an identical retry of the
    # final report is answered as the first was); cleared when the config is given back.
    lease_id: Mapped[str | None] = mapped_column(String(LEASE_LEN), nullable=True)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: The claim or the last heartbeat: stale detection counts from here.
    renewed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: Name of the token that populated the config.
    created_by: Mapped[str | None] = mapped_column(String(100), nullable=True)

    __table_args__ = (
        # Re-running populate must not duplicate the matrix.
        UniqueConstraint(
            "model_version_id",
            "hardware_config_id",
            "framework_id",
            "workload_type",
            "batch_size",
            "sequence_length",
            name="uq_config_cell",
        ),
        # The claim: pending rows of any model version in priority order.
        Index("ix_configs_claim", "status", "priority", "id"),
        # Claims and per-status listings of one model version.
        Index("ix_configs_mv_status", "model_version_id", "status", "priority", "id"),
        # Stale detection.
        Index("ix_configs_running_started", "status", "started_at"),
        # The completion rate (finished in the last window, per model version): a range
        # scan over the window instead of a walk over every finished row.
        Index("ix_configs_mv_status_completed", "model_version_id", "status", "completed_at"),
    )


#: Counter rows per model version. Every status change adjusts one of them, chosen
#: at random, so 100 concurrent claimers do not all queue on a single hot row.
COUNT_SHARDS = 16


class StatusCount(Base):
    """Configs per status of one model version, kept in step with every transition.

    Progress is read from here in O(1) (a sum over :data:`COUNT_SHARDS` rows):
    counting a million rows per poll would not keep a live sweep view fast. Every
    write that changes a config's status adjusts one shard row per model version in
    the same transaction, as its last step — one counter row per transaction, so
    concurrent writers can never deadlock on them. A shard's own numbers may go
    negative; only the sum over the shards means anything.
    """

    __tablename__ = "status_counts"

    model_version_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True, default=0)
    pending: Mapped[int] = mapped_column(Integer, default=0)
    running: Mapped[int] = mapped_column(Integer, default=0)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)


class BenchmarkResult(Base):
    __tablename__ = "benchmark_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Nullable like the seed's migration: results predating the queue have no config.
    config_id: Mapped[int | None] = mapped_column(ForeignKey("benchmark_configs.id"), nullable=True, index=True)
    model_version_id: Mapped[str] = mapped_column(String(64), index=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    #: The attempt (the claim's lease) this result belongs to; NULL for results from before leases.
    lease_id: Mapped[str | None] = mapped_column(String(LEASE_LEN), nullable=True)
    #: Name of the token that posted it.
    created_by: Mapped[str | None] = mapped_column(String(100), nullable=True)

    __table_args__ = (
        # Exactly one result per attempt: a retried POST finds the first instead of adding a row
        # (NULL lease ids — old rows — never collide).
        Index("uq_results_attempt", "config_id", "lease_id", unique=True),
    )


class ConfigEvent(Base):
    """One state change of a config: what, when, under which lease, and who (the token's name)."""

    __tablename__ = "config_events"

    # BIGINT on PostgreSQL (one row per claimed config adds up); SQLite's rowid is 64-bit already
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    config_id: Mapped[int] = mapped_column(Integer)
    model_version_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(100))
    #: claim, complete, fail, release, result, reset, expire-fail, retry
    action: Mapped[str] = mapped_column(String(16))
    from_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    lease_id: Mapped[str | None] = mapped_column(String(LEASE_LEN), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)

    # history, and "why was this lease revoked?" (the 409 a late report gets)
    __table_args__ = (Index("ix_events_config", "config_id", "id"),)
