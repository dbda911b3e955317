"""Shared fixtures: every database-backed test runs on a real SQLite file and, when the server binaries are
installed, on a real PostgreSQL.

PostgreSQL comes from the distribution (`apt-get install postgresql` puts `pg_ctl` in
/usr/lib/postgresql/<version>/bin/) and is started once per session by pytest-postgresql's process executor in a
private directory; each test gets a fresh database. PostgreSQL refuses to run as root, so under root (CI) the
executor calls `pg_ctl` through `runuser -u postgres`. Without the binaries the PostgreSQL half skips, saying why.
`XAR_TEST_PG_CTL=/path/to/pg_ctl` picks another server; `XAR_TEST_PG_CTL=` (empty) leaves PostgreSQL out.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import stat
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from xianyu_autoreply import outbound

# What the tests' outbound policy opens: the loopback address every simulator and test server listens on (never
# `allow_private`: the tests run under the same policy class as production, with one explicit hole).
LOOPBACK_ONLY = {"allow": ["127.0.0.1/32"]}


async def _no_dns(host: str, port: int) -> list[str]:
    import socket

    raise socket.gaierror(socket.EAI_NONAME, f"no DNS lookups in tests ({host}); pass OutboundGuard(resolver=...)")


@pytest.fixture(scope="session", autouse=True)
def _outbound_never_resolves_names() -> Iterator[None]:
    """The outbound policy's lookups never leave the machine: a test that needs a name resolved stubs it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(outbound, "system_resolver", _no_dns)
        yield


def _find_pg_ctl() -> str | None:
    chosen = os.environ.get("XAR_TEST_PG_CTL")  # a path to another pg_ctl, or "" to leave PostgreSQL out
    if chosen is not None:
        return chosen or None
    found = glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")
    found.sort(key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0)
    return found[-1] if found else shutil.which("pg_ctl")


PG_CTL = _find_pg_ctl()
NO_PG_REASON = "no PostgreSQL server: /usr/lib/postgresql/*/bin/pg_ctl not found (apt-get install postgresql)"

BACKENDS = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.skipif(PG_CTL is None, reason=NO_PG_REASON)),
]


@dataclass(frozen=True)
class PgServer:
    host: str
    port: int
    user: str

    def url(self, dbname: str) -> str:
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{dbname}"


def _pg_ctl_for_this_user(base: Path) -> str:
    """`pg_ctl` itself, or under root a wrapper that runs it as `postgres` in a directory that user owns."""
    assert PG_CTL is not None
    if os.geteuid() != 0:
        return PG_CTL
    postgres = pwd.getpwnam("postgres")
    wrapper = base / "pg_ctl"
    wrapper.write_text(f'#!/bin/sh\nexec runuser -u postgres -- "{PG_CTL}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    os.chown(base, postgres.pw_uid, postgres.pw_gid)
    return str(wrapper)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL server for the whole session (pytest-postgresql's executor around the distro's pg_ctl)."""
    if PG_CTL is None:
        pytest.skip(NO_PG_REASON)
    from port_for import get_port
    from pytest_postgresql.executors import PostgreSQLExecutor

    base = Path(tempfile.mkdtemp(prefix="xar-pg-"))
    port = get_port(None)
    assert port is not None
    executor = PostgreSQLExecutor(
        executable=_pg_ctl_for_this_user(base),
        host="127.0.0.1",
        port=port,
        datadir=str(base / "data"),
        unixsocketdir=str(base),
        logfile=str(base / "postgresql.log"),
        startparams="-w",
        dbname="postgres",
        user="postgres",
        postgres_options="-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
    )
    executor.start()
    try:
        yield PgServer(host="127.0.0.1", port=port, user="postgres")
    finally:
        executor.stop()
        shutil.rmtree(base, ignore_errors=True)


async def _pg_admin(server: PgServer, sql: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(host=server.host, port=server.port, user=server.user, database="postgres")
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture(params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database: a SQLite file in tmp_path, or a fresh database on the session's PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'data' / 'xianyu.db'}"
        return
    server: PgServer = request.getfixturevalue("pg_server")
    name = f"xar_{uuid.uuid4().hex[:16]}"
    await _pg_admin(server, f'CREATE DATABASE "{name}"')
    try:
        yield server.url(name)
    finally:
        await _pg_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
