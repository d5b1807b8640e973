"""The work-queue HTTP API (FastAPI; OpenAPI at ``/docs``), the seed's paths.

All under ``/api/v1/workflow``:

* ``POST configs/get-batch`` {limit 1–500, priority_threshold} → configs atomically marked running
* ``POST configs/{id}/status`` {status, error_message} → 404 unknown id, 409 impossible transition
* ``POST configs/{id}/results`` {metrics} → stores a result row
* ``GET  progress/{model_version_id}`` → total, pending, running, completed, failed, progress_pct
* ``POST maintenance/reset-stale?timeout_minutes=120&max_retries=3``
* ``GET  configs/{model_version_id}?status=&limit=&offset=``
* ``GET  results/{model_version_id}?limit=&offset=``, ``GET failures/{mvid}``, ``GET breakdown/{mvid}?by=``, ``GET stale/{mvid}``
* ``POST populate/{model_version_id}?dry_run=`` with an optional matrix body

Bad bodies get FastAPI's 422 with the field and the reason.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, FastAPI, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from backends.queue.store import Conflict, Matrix, NotFound, QueueStore
from config.errors import SweepdeckError


class BatchRequest(BaseModel):
    limit: int = Field(100, ge=1, le=500, description="configs to claim (1-500)")
    priority_threshold: int | None = Field(None, description="claim only configs with priority <= this")
    model_version_id: str | None = Field(None, description="claim only this model version's configs")
    worker: str | None = Field(None, max_length=200, description="worker name, recorded on the configs")


class StatusUpdate(BaseModel):
    status: Literal["pending", "running", "completed", "failed"]
    error_message: str | None = Field(None, max_length=4000)
    metrics: dict[str, Any] | None = Field(None, description="result, stored atomically with a completed/failed status")


class ResultBody(BaseModel):
    metrics: dict[str, Any]


#: A populate body may not ask for more configs than this in one call (rows are built in memory).
MAX_MATRIX_CONFIGS = 1_000_000

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
PositiveInt = Annotated[int, Field(gt=0, le=1_000_000)]


def _unique(values: list[Any] | None) -> list[Any] | None:
    if values is not None:
        dupes = sorted({str(v) for v in values if values.count(v) > 1})
        if dupes:
            raise ValueError(f"duplicate values: {', '.join(dupes)}")
    return values


class MatrixBody(BaseModel):
    """The sweep matrix; a dimension left out takes the default. Each given one is a
    non-empty list of distinct values (strings non-blank, sizes positive integers)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt dimension must not silently use the default

    hardware: list[Name] | None = Field(None, min_length=1, max_length=1000, description="hardware configs, GPU:count")
    frameworks: list[Name] | None = Field(None, min_length=1, max_length=1000)
    workloads: list[Name] | None = Field(None, min_length=1, max_length=1000)
    batch_sizes: list[PositiveInt] | None = Field(None, min_length=1, max_length=1000)
    sequence_lengths: list[PositiveInt] | None = Field(None, min_length=1, max_length=1000)

    _distinct = field_validator("hardware", "frameworks", "workloads", "batch_sizes", "sequence_lengths")(_unique)

    @model_validator(mode="after")
    def _not_too_big(self) -> "MatrixBody":
        n = self.matrix().count
        if n > MAX_MATRIX_CONFIGS:
            raise ValueError(f"the matrix would create {n:,} configs; at most {MAX_MATRIX_CONFIGS:,} per populate call")
        return self

    def matrix(self) -> Matrix:
        m = Matrix()
        for key, value in self.model_dump(exclude_none=True).items():
            setattr(m, key, tuple(value))
        return m


def create_app(store: QueueStore, *, create_tables: bool = True) -> FastAPI:
    """The FastAPI app over ``store`` (tables created at startup)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if create_tables:
            await store.create()
        yield
        await store.close()

    app = FastAPI(title="sweepdeck work queue", version="1", lifespan=lifespan)
    r = APIRouter(prefix="/api/v1/workflow")

    def fail(exc: SweepdeckError) -> HTTPException:
        code = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, Conflict) else 400
        return HTTPException(status_code=code, detail=exc.message)

    @r.post("/configs/get-batch")
    async def get_batch(req: BatchRequest) -> list[dict[str, Any]]:
        return await store.claim(req.limit, req.priority_threshold, model_version_id=req.model_version_id, worker=req.worker)

    @r.post("/configs/{config_id}/status")
    async def set_status(config_id: int, body: StatusUpdate) -> dict[str, Any]:
        try:
            return await store.set_status(config_id, body.status, body.error_message, body.metrics)
        except SweepdeckError as exc:
            raise fail(exc) from None

    @r.post("/configs/{config_id}/results", status_code=201)
    async def add_result(config_id: int, body: ResultBody) -> dict[str, Any]:
        try:
            return {"id": await store.add_result(config_id, body.metrics)}
        except SweepdeckError as exc:
            raise fail(exc) from None

    @r.get("/progress/{model_version_id}")
    async def progress(model_version_id: str) -> dict[str, Any]:
        return await store.progress(model_version_id)

    @r.post("/maintenance/reset-stale")
    async def reset_stale(timeout_minutes: float = Query(120, ge=0), max_retries: int = Query(3, ge=0)) -> dict[str, int]:
        return await store.reset_stale(timeout_minutes, max_retries)

    @r.get("/configs/{model_version_id}")
    async def list_configs(
        model_version_id: str,
        status: Literal["pending", "running", "completed", "failed"] | None = None,
        limit: int = Query(100, ge=1, le=10000),
        offset: int = Query(0, ge=0),
        error_message: str | None = Query(None, description="only configs with exactly this error (a failure group)"),
    ) -> list[dict[str, Any]]:
        return await store.list_configs(model_version_id, status, limit, offset, error_message)

    @r.get("/results/{model_version_id}")
    async def results(model_version_id: str, limit: int = Query(1000, ge=1, le=100000),
                      offset: int = Query(0, ge=0)) -> list[dict[str, Any]]:
        return await store.results(model_version_id, limit, offset)

    @r.get("/failures/{model_version_id}")
    async def failures(model_version_id: str) -> list[dict[str, Any]]:
        return await store.failures(model_version_id)

    @r.get("/breakdown/{model_version_id}")
    async def breakdown(model_version_id: str, by: Literal["workload_type", "priority"] = "workload_type") -> list[dict[str, Any]]:
        return await store.breakdown(model_version_id, by)

    @r.get("/stale/{model_version_id}")
    async def stale(model_version_id: str, older_than_minutes: float = Query(120, ge=0)) -> list[dict[str, Any]]:
        return await store.stale(model_version_id, older_than_minutes)

    @r.get("/rate/{model_version_id}")
    async def rate(model_version_id: str, window_minutes: float = Query(5, gt=0)) -> dict[str, float]:
        return {"configs_per_minute": await store.completion_rate(model_version_id, window_minutes)}

    @r.post("/populate/{model_version_id}")
    async def populate(model_version_id: str, dry_run: bool = False, body: MatrixBody | None = Body(None)) -> dict[str, int]:
        try:
            return await store.populate(model_version_id, body.matrix() if body else None, dry_run=dry_run)
        except SweepdeckError as exc:
            raise fail(exc) from None

    app.include_router(r)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
