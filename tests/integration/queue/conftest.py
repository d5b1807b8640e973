"""Fixtures: the queue store on SQLite and on a real PostgreSQL, and the API over real HTTP."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from backends.queue.store import QueueStore
from tests.support.postgres import postgres_cluster


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
    """The FastAPI app served by uvicorn in a thread on a free port."""

    def __init__(self, db_url: str) -> None:
        import uvicorn

        from backends.queue.api import create_app

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(QueueStore(db_url)), log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])), daemon=True)

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


@pytest.fixture
def api(tmp_path):
    with ApiServer(f"sqlite:///{tmp_path / 'api.db'}") as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def api_db(request, tmp_path):
    """The API over real HTTP on each database (PostgreSQL: a new database per test)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'api.db'}"
    else:
        url = asyncio.run(_new_pg_database(request.getfixturevalue("pg_url")))
    with ApiServer(url) as server:
        server.db = request.param
        yield server
