"""A throw-away PostgreSQL cluster for tests (initdb + pg_ctl as user postgres).

PostgreSQL refuses to run as root, so the cluster lives in a directory owned by
the ``postgres`` user and is started with ``runuser``. It listens on 127.0.0.1
on a free port and on a private socket directory; ``trust`` auth.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.services import require


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_cluster() -> Iterator[str]:
    """Start a private cluster; yields an asyncpg SQLAlchemy URL to database ``sweep``."""
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    require(bool(initdb and pg_ctl), "PostgreSQL server binaries not found (install Debian package postgresql)")
    as_root = os.geteuid() == 0
    if as_root:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            require(False, "no 'postgres' user (install Debian package postgresql)")
    base = Path(tempfile.mkdtemp(prefix="sweepdeck-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    if as_root:
        os.chown(base, pw.pw_uid, pw.pw_gid)
        os.chown(sock, pw.pw_uid, pw.pw_gid)
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    subprocess.run(prefix + [initdb, "-A", "trust", "-U", "postgres", "-D", str(data), "-E", "UTF8"],
                   check=True, capture_output=True, env=env)
    opts = (f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={sock} -c max_connections=300 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
    subprocess.run(prefix + [pg_ctl, "-D", str(data), "-o", opts, "-l", str(base / "log"), "-w", "start"],
                   check=True, capture_output=True, env=env)
    try:
        deadline = time.monotonic() + 10
        while True:
            r = subprocess.run(prefix + [_bin("psql") or "psql", "-h", str(sock), "-p", str(port), "-U", "postgres",
                                         "-c", "CREATE DATABASE sweep"], capture_output=True, env=env)
            if r.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/sweep"
    finally:
        subprocess.run(prefix + [pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, env=env)
        shutil.rmtree(base, ignore_errors=True)
