"""The work-queue HTTP API (FastAPI; OpenAPI at ``/docs``), the seed's paths.

All under ``/api/v1/workflow``; every call but ``/health`` and the docs needs a
bearer token (:mod:`backends.queue.auth`). *worker* tokens:

* ``POST configs/get-batch`` {limit 1–500, priority_threshold, model_version_id, worker}
  → configs atomically marked running, each with its ``lease_id`` and ``lease_expires_at``
* ``POST configs/heartbeat`` {leases: [{config_id, lease_id}]} → the renewed leases and the revoked ones
* ``POST configs/{id}/status`` {status, lease_id, error_message, metrics} → 404 unknown id,
  409 with ``reason`` when the lease is not (or no longer) the config's or the transition is impossible
* ``POST configs/{id}/results`` {lease_id, metrics} → one result per attempt (201; an identical retry: 200, same id)

*admin* tokens (admin may do everything a worker may):

* ``POST populate/{model_version_id}?dry_run=`` with an optional matrix body
* ``POST maintenance/reset-stale?timeout_minutes=120&max_retries=3``
* ``GET  progress/{mvid}`` and ``GET rate/{mvid}`` (no token needed with ``public_progress``)
* ``GET  configs/{mvid}?status=&limit=&offset=&error_message=``, ``GET configs/{id}/history``,
  ``GET results/{mvid}``, ``GET failures/{mvid}``, ``GET breakdown/{mvid}?by=``, ``GET stale/{mvid}``

Input is strict: an unknown field or query parameter, a wrong type (``true`` is
not an integer, ``"5"`` is not one in a JSON body) or a number out of range is a
422 naming the field; a body over ``max_body_bytes`` is a 413.
"""

from __future__ import annotations

import math
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from backends.queue.auth import Principal, TokenSet
from backends.queue.models import INT4_MAX
from backends.queue.store import MAX_SIZE, Conflict, Matrix, NotFound, QueueStore, name_problem
from config.errors import SweepdeckError

#: A populate body may not ask for more configs than this in one call (rows are built in memory).
MAX_MATRIX_CONFIGS = 1_000_000
#: Default request body limit (``queue serve --max-body-bytes``).
DEFAULT_MAX_BODY = 1024 * 1024
#: Longest timeout or window in minutes (ten years): beyond it a datetime cannot be computed.
MAX_MINUTES = 10 * 365 * 24 * 60
#: Deepest nesting of a metrics document.
MAX_DEPTH = 32
MVID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
LEASE_PATTERN = r"^[0-9a-f]{32}$"


def _clean(text: str) -> str:
    """Text a database stores as it is: no NUL, no lone surrogate (not Unicode at all)."""
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (a lone surrogate is not)") from None
    return text


def _json_value(value: Any, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite (no NaN or Infinity)")
    if isinstance(value, str):
        _clean(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            _clean(k)
            _json_value(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _json_value(v, depth + 1)


def _metrics(value: dict[str, Any]) -> dict[str, Any]:
    _json_value(value)
    return value


Text = Annotated[str, AfterValidator(_clean)]
Metrics = Annotated[dict[str, Any], AfterValidator(_metrics)]
ModelVersionId = Annotated[str, StringConstraints(pattern=MVID_PATTERN)]
LeaseId = Annotated[str, StringConstraints(pattern=LEASE_PATTERN)]
ConfigId = Annotated[int, Field(ge=1, le=INT4_MAX)]
Minutes = Annotated[float, Field(ge=0, le=MAX_MINUTES, allow_inf_nan=False)]


class Strict(BaseModel):
    """Bodies: unknown fields are refused, and JSON types are taken as they are (``true`` is no integer)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Params(BaseModel):
    """Query parameters: unknown ones are refused (a misspelt filter must not be dropped silently)."""

    model_config = ConfigDict(extra="forbid")


class BatchRequest(Strict):
    limit: int = Field(100, ge=1, le=500, description="configs to claim (1-500)")
    priority_threshold: int | None = Field(
        None, ge=0, le=INT4_MAX, description="claim only configs with priority <= this"
    )
    model_version_id: ModelVersionId | None = Field(None, description="claim only this model version's configs")
    worker: Text | None = Field(None, min_length=1, max_length=200, description="worker name, recorded on the configs")


class Lease(Strict):
    config_id: ConfigId
    lease_id: LeaseId


class HeartbeatRequest(Strict):
    leases: list[Lease] = Field(..., min_length=1, max_length=500, description="the leases to extend")


class StatusUpdate(Strict):
    status: Literal["pending", "completed", "failed"] = Field(
        ...,
        description="completed/failed: the config's end; pending: give it back (with its lease) or retry a failed one",
    )
    lease_id: LeaseId | None = Field(
        None, description="the lease its claim returned (required unless retrying a failed config)"
    )
    error_message: Text | None = Field(None, max_length=4000)
    metrics: Metrics | None = Field(None, description="result, stored atomically with a completed/failed status")

    @model_validator(mode="after")
    def _lease_for_an_end(self) -> StatusUpdate:
        if self.status in ("completed", "failed") and self.lease_id is None:
            raise ValueError(f"lease_id is required to report {self.status} (the lease the claim returned)")
        return self


class ResultBody(Strict):
    lease_id: LeaseId = Field(..., description="the lease of the attempt the result belongs to")
    metrics: Metrics


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), AfterValidator(_clean)]
WorkloadName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50), AfterValidator(_clean)
]
PositiveInt = Annotated[int, Field(gt=0, le=MAX_SIZE)]


def _unique(values: list[Any] | None) -> list[Any] | None:
    if values is not None:
        dupes = sorted({str(v) for v in values if values.count(v) > 1})
        if dupes:
            raise ValueError(f"duplicate values: {', '.join(dupes)}")
    return values


def _names(dimension: str):
    def check(values: list[str] | None) -> list[str] | None:
        for value in values or []:
            problem = name_problem(dimension, value)
            if problem:
                raise ValueError(f"{value!r} {problem}")
        return values

    return check


class MatrixBody(Strict):
    """The sweep matrix; a dimension left out takes the default. Each given one is a
    non-empty list of distinct values (strings non-blank, sizes positive integers)."""

    hardware: list[Name] | None = Field(None, min_length=1, max_length=1000, description="hardware configs, GPU:count")
    frameworks: list[Name] | None = Field(None, min_length=1, max_length=1000)
    workloads: list[WorkloadName] | None = Field(None, min_length=1, max_length=1000)
    batch_sizes: list[PositiveInt] | None = Field(None, min_length=1, max_length=1000)
    sequence_lengths: list[PositiveInt] | None = Field(None, min_length=1, max_length=1000)

    _distinct = field_validator("hardware", "frameworks", "workloads", "batch_sizes", "sequence_lengths")(_unique)
    _hardware = field_validator("hardware")(_names("hardware"))
    _frameworks = field_validator("frameworks")(_names("frameworks"))
    _workloads = field_validator("workloads")(_names("workloads"))

    @model_validator(mode="after")
    def _not_too_big(self) -> MatrixBody:
        n = self.matrix().count
        if n > MAX_MATRIX_CONFIGS:
            raise ValueError(f"the matrix would create {n:,} configs; at most {MAX_MATRIX_CONFIGS:,} per populate call")
        return self

    def matrix(self) -> Matrix:
        m = Matrix()
        for key, value in self.model_dump(exclude_none=True).items():
            setattr(m, key, tuple(value))
        return m


class PopulateParams(Params):
    dry_run: bool = False


class ResetParams(Params):
    timeout_minutes: Minutes = Field(120, description="running configs not renewed for this long are stale")
    max_retries: int = Field(3, ge=0, le=1000, description="past this many retries a stale config fails")


class ListParams(Params):
    status: Literal["pending", "running", "completed", "failed"] | None = None
    limit: int = Field(100, ge=1, le=10000)
    offset: int = Field(0, ge=0, le=INT4_MAX)
    error_message: Text | None = Field(
        None, max_length=4000, description="only configs with exactly this error (a failure group)"
    )


class ResultsParams(Params):
    limit: int = Field(1000, ge=1, le=100000)
    offset: int = Field(0, ge=0, le=INT4_MAX)


class BreakdownParams(Params):
    by: Literal["workload_type", "priority"] = "workload_type"


class StaleParams(Params):
    older_than_minutes: Minutes = 120


class RateParams(Params):
    window_minutes: Annotated[float, Field(gt=0, le=MAX_MINUTES, allow_inf_nan=False)] = 5


class NoParams(Params):
    pass


MvPath = Annotated[str, Path(pattern=MVID_PATTERN, description="model version id")]
IdPath = Annotated[int, Path(ge=1, le=INT4_MAX, description="config id")]
NoQuery = Annotated[NoParams, Query()]

# ----------------------------------------------------------------------------- who is calling

bearer = HTTPBearer(auto_error=False, description="a queue token: worker (claim, heartbeat, report) or admin (all)")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]


def _caller(request: Request, cred: HTTPAuthorizationCredentials | None, role: str) -> Principal:
    """The authenticated caller with at least ``role``; 401 without a known token, 403 with too small a role."""
    if cred is None:
        raise HTTPException(
            401,
            "Authentication required: send `Authorization: Bearer TOKEN` with a worker or "
            "admin token of this queue (see `sweepdeck queue tokens`).",
            headers={"WWW-Authenticate": "Bearer"},
        )
    who = request.app.state.tokens.authenticate(cred.credentials)
    if who is None:
        raise HTTPException(
            401,
            "The bearer token is not one of this queue's tokens.",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    if role == "admin" and not who.is_admin:
        raise HTTPException(403, f"Token {who.name!r} has the worker role; this needs an admin token.")
    return who


async def _worker(request: Request, cred: Credentials) -> Principal:
    return _caller(request, cred, "worker")


async def _admin(request: Request, cred: Credentials) -> Principal:
    return _caller(request, cred, "admin")


async def _reader(request: Request, cred: Credentials) -> Principal:
    """Progress counts: admin, or anyone when the server opened them (``public_progress``)."""
    if request.app.state.public_progress:
        return Principal("anonymous", "reader")
    return _caller(request, cred, "admin")


def _store(request: Request) -> QueueStore:
    return request.app.state.store


Worker = Annotated[Principal, Depends(_worker)]
Admin = Annotated[Principal, Depends(_admin)]
Reader = Annotated[Principal, Depends(_reader)]
Store = Annotated[QueueStore, Depends(_store)]

# ----------------------------------------------------------------------------- the endpoints

router = APIRouter(prefix="/api/v1/workflow")


@router.post("/configs/get-batch")
async def get_batch(req: BatchRequest, who: Worker, store: Store, _q: NoQuery) -> list[dict[str, Any]]:
    return await store.claim(
        req.limit, req.priority_threshold, model_version_id=req.model_version_id, worker=req.worker, actor=who.name
    )


@router.post("/configs/heartbeat")
async def heartbeat(req: HeartbeatRequest, _who: Worker, store: Store, _q: NoQuery) -> dict[str, Any]:
    return await store.heartbeat([(lease.config_id, lease.lease_id) for lease in req.leases])


@router.post("/configs/{config_id}/status")
async def set_status(config_id: IdPath, body: StatusUpdate, who: Worker, store: Store, _q: NoQuery) -> dict[str, Any]:
    if body.lease_id is None and not who.is_admin:
        raise HTTPException(
            403,
            f"Token {who.name!r} has the worker role: retrying a failed config "
            "(pending without a lease) needs an admin token.",
        )
    return await store.set_status(
        config_id, body.status, body.error_message, body.metrics, lease_id=body.lease_id, actor=who.name
    )


@router.post("/configs/{config_id}/results", status_code=201)
async def add_result(config_id: IdPath, body: ResultBody, who: Worker, store: Store, _q: NoQuery) -> dict[str, int]:
    # an identical retry gets the same answer (201, the same id): the worker cannot tell, and need not
    rid, _created = await store.add_result(config_id, body.metrics, lease_id=body.lease_id, actor=who.name)
    return {"id": rid}


@router.get("/progress/{model_version_id}")
async def progress(model_version_id: MvPath, _who: Reader, store: Store, _q: NoQuery) -> dict[str, Any]:
    return await store.progress(model_version_id)


@router.get("/rate/{model_version_id}")
async def rate(
    model_version_id: MvPath, _who: Reader, store: Store, q: Annotated[RateParams, Query()]
) -> dict[str, float]:
    return {"configs_per_minute": await store.completion_rate(model_version_id, q.window_minutes)}


@router.post("/maintenance/reset-stale")
async def reset_stale(who: Admin, store: Store, q: Annotated[ResetParams, Query()]) -> dict[str, int]:
    return await store.reset_stale(q.timeout_minutes, q.max_retries, actor=who.name)


@router.get("/configs/{model_version_id}")
async def list_configs(
    model_version_id: MvPath, _who: Admin, store: Store, q: Annotated[ListParams, Query()]
) -> list[dict[str, Any]]:
    return await store.list_configs(model_version_id, q.status, q.limit, q.offset, q.error_message)


@router.get("/configs/{config_id}/history")
async def history(config_id: IdPath, _who: Admin, store: Store, _q: NoQuery) -> dict[str, Any]:
    return await store.history(config_id)


@router.get("/results/{model_version_id}")
async def results(
    model_version_id: MvPath, _who: Admin, store: Store, q: Annotated[ResultsParams, Query()]
) -> list[dict[str, Any]]:
    return await store.results(model_version_id, q.limit, q.offset)


@router.get("/failures/{model_version_id}")
async def failures(model_version_id: MvPath, _who: Admin, store: Store, _q: NoQuery) -> list[dict[str, Any]]:
    return await store.failures(model_version_id)


@router.get("/breakdown/{model_version_id}")
async def breakdown(
    model_version_id: MvPath, _who: Admin, store: Store, q: Annotated[BreakdownParams, Query()]
) -> list[dict[str, Any]]:
    return await store.breakdown(model_version_id, q.by)


@router.get("/stale/{model_version_id}")
async def stale(
    model_version_id: MvPath, _who: Admin, store: Store, q: Annotated[StaleParams, Query()]
) -> list[dict[str, Any]]:
    return await store.stale(model_version_id, q.older_than_minutes)


@router.post("/populate/{model_version_id}")
async def populate(
    model_version_id: MvPath,
    who: Admin,
    store: Store,
    q: Annotated[PopulateParams, Query()],
    body: Annotated[MatrixBody | None, Body()] = None,
) -> dict[str, int]:
    return await store.populate(model_version_id, body.matrix() if body else None, dry_run=q.dry_run, actor=who.name)


async def health() -> dict[str, str]:
    return {"status": "ok"}


async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": _validation_errors(exc)}, status_code=422)


async def _refused(_request: Request, exc: SweepdeckError) -> JSONResponse:
    if isinstance(exc, Conflict):
        return JSONResponse(exc.body(), status_code=409)
    return JSONResponse({"detail": exc.message}, status_code=404 if isinstance(exc, NotFound) else 400)


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413 before the app sees it."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await self._refuse(send)
                return
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any) -> None:
        await JSONResponse(
            {"detail": f"The request body is larger than {self.limit:,} bytes (the server's limit)."}, status_code=413
        )({"type": "http"}, None, send)  # type: ignore[arg-type]  # a response never receives


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors without the offending input (it may be huge, or NaN, which JSON cannot carry)."""
    out = []
    for err in exc.errors():
        loc = [str(x) if not isinstance(x, int) else x for x in err.get("loc", ())]
        msg = str(err.get("msg", "invalid"))
        if err.get("type") == "extra_forbidden" and loc:
            msg = f"Extra inputs are not permitted: unknown field {loc[-1]!r}"
        out.append({"type": err.get("type"), "loc": loc, "msg": msg})
    return out


def create_app(
    store: QueueStore,
    tokens: TokenSet,
    *,
    public_progress: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    create_tables: bool = True,
) -> FastAPI:
    """The FastAPI app over ``store``, accepting ``tokens`` (tables created at startup).

    Args:
        public_progress: ``GET progress`` and ``GET rate`` answer without a token (counts only).
        max_body_bytes: Larger request bodies get 413.
    """

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if create_tables:
            await store.create()
        yield
        await store.close()

    app = FastAPI(title="sweepdeck work queue", version="2", lifespan=lifespan)
    app.state.store, app.state.tokens, app.state.public_progress = store, tokens, public_progress
    app.include_router(router)
    app.add_api_route("/health", health, methods=["GET"])
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]  # a handler takes the exception it is registered for
    app.add_exception_handler(SweepdeckError, _refused)  # type: ignore[arg-type]  # a handler takes the exception it is registered for
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    return app
