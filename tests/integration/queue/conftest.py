"""Fixtures: the queue store on SQLite and on a real PostgreSQL, and the API over real HTTP.

The API always wants a bearer token: :data:`ADMIN` and :data:`WORKER` are the
tests' tokens (:func:`auth` gives the header), and every :class:`ApiServer`
writes them to a token file (``server.token_file``) for processes it starts.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from backends.queue.auth import TokenSet, write_token_file
from backends.queue.store import QueueStore
from tests.support.postgres import postgres_cluster

ADMIN = "tests-admin-token-0123456789abcdef"
WORKER = "tests-worker-token-0123456789abcdef"
TOKEN_ENTRIES = [("ops", "admin", ADMIN), ("pods", "worker", WORKER)]
W = "/api/v1/workflow"


def auth(role: str = "admin") -> dict[str, str]:
    """The Authorization header of the tests' ``admin`` or ``worker`` token."""
    return {"Authorization": f"Bearer {ADMIN if role == 'admin' else WORKER}"}


@pytest.fixture(scope="session")
def pg_url():
    with postgres_cluster() as url:
        yield url


_PG_DB_COUNTER = iter(range(1, 10_000))
PG_POOL = 100


async def _new_pg_database(base: str) -> str:
    import asyncpg

    name = f"t{next(_PG_DB_COUNTER)}"
    conn = await asyncpg.connect(base.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return base.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request, tmp_path):
    """A fresh, empty store on each database (PostgreSQL: a new database per test)."""
    if request.param == "sqlite":
        st = QueueStore(f"sqlite:///{tmp_path / 'queue.db'}")
    else:
        url = await _new_pg_database(request.getfixturevalue("pg_url"))
        # 100 pooled connections (the pool opens them lazily): the concurrency test's 100
        # claimers each hold their own, as 100 worker pods would (max_connections is 300),
        # and no claim gate: the race tests put every claim in the database at once.
        st = QueueStore(url, pool_size=PG_POOL, claim_concurrency=None)
    await st.create()
    yield st
    await st.close()


class ApiServer:
    """The FastAPI app served by uvicorn in a thread on a free port, accepting the tests' tokens.

    Args:
        db_url: The queue database.
        store_options: Passed to :class:`QueueStore` (``lease_seconds``, ``pool_size``…).
        app_options: Passed to ``create_app`` (``public_progress``, ``max_body_bytes``).
    """

    def __init__(self, db_url: str, *, store_options: dict | None = None, app_options: dict | None = None) -> None:
        import uvicorn

        from backends.queue.api import create_app

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir = Path(tempfile.mkdtemp(prefix="sweepdeck-tokens-"))
        self.token_file = write_token_file(self._dir / "tokens", TOKEN_ENTRIES)
        self.store = QueueStore(db_url, **(store_options or {}))
        app = create_app(self.store, TokenSet(TOKEN_ENTRIES), **(app_options or {}))
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])), daemon=True)

    def client(self, role: str | None = "admin", **kw) -> httpx.Client:
        """An HTTP client on the server sending the ``admin`` or ``worker`` token (None: no token)."""
        return httpx.Client(base_url=self.url, timeout=kw.pop("timeout", 30), headers=auth(role) if role else {}, **kw)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("queue API did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture
def api(tmp_path):
    with ApiServer(f"sqlite:///{tmp_path / 'api.db'}") as server:
        yield server


def db_url(kind: str, request, tmp_path, name: str = "api.db") -> str:
    """A fresh database: ``kind`` sqlite (a file in ``tmp_path``) or postgresql (a new database on the test cluster)."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / name}"
    return asyncio.run(_new_pg_database(request.getfixturevalue("pg_url")))


@pytest.fixture(params=["sqlite", "postgresql"])
def api_db(request, tmp_path):
    """The API over real HTTP on each database (PostgreSQL: a new database per test)."""
    with ApiServer(db_url(request.param, request, tmp_path)) as server:
        server.db = request.param
        yield server
