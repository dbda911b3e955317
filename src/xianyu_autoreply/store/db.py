"""The database connection: an async engine and its sessions for SQLite (aiosqlite) or PostgreSQL (asyncpg).

Write transactions on SQLite start with `BEGIN IMMEDIATE` and queue on an in-process lock: SQLite has one writer,
and a deferred transaction that reads and then writes fails with "database is locked" when another writer
committed in between, which `busy_timeout` cannot cure. Queuing in the process is fair and never sleeps in
SQLite's busy handler; `busy_timeout` still covers another process (the CLI beside a running server).
On PostgreSQL transactions run at READ COMMITTED; the queries take the row locks they need
(`FOR UPDATE`, `SKIP LOCKED`) themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, Engine, create_engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import StaticPool

from .errors import DatabaseError, InvalidValue, StoreError

SQLITE_BUSY_TIMEOUT_MS = 10_000
PG_CONNECT_TIMEOUT = 10.0
PG_COMMAND_TIMEOUT = 30.0
WRITE_OPTION = "xar_write"  # execution option: this connection writes (SQLite: BEGIN IMMEDIATE)
_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def normalize_url(url: str | URL) -> URL:
    """The URL with the async driver this project uses (`sqlite://` -> `sqlite+aiosqlite://`, ...)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise InvalidValue(f"XAR_DATABASE_URL is not a database URL: {exc}") from None
    backend = parsed.get_backend_name()
    if backend not in _ASYNC_DRIVERS:
        raise InvalidValue(f"unsupported database {backend!r}: use sqlite+aiosqlite:// or postgresql+asyncpg://")
    return parsed.set(drivername=_ASYNC_DRIVERS[backend])


def _is_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or "mode=memory" in str(url.query)


def make_engine(
    url: str | URL, *, foreign_keys: bool = True, echo: bool = False, pool_size: int = 5, max_overflow: int = 10
) -> AsyncEngine:
    """An async engine with the pragmas and timeouts of this project (foreign keys off only for migrations)."""
    parsed = normalize_url(url)
    options: dict[str, Any] = {"echo": echo}
    if parsed.get_backend_name() == "sqlite":
        if _is_memory(parsed):
            options["poolclass"] = StaticPool  # one connection, or every connection sees its own empty database
        else:
            Path(parsed.database or "").expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(parsed, **options)
        install_sqlite_listeners(engine.sync_engine, foreign_keys=foreign_keys)
        return engine
    options.update(
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,  # a failed-over or restarted server leaves dead connections in the pool
        connect_args={"timeout": PG_CONNECT_TIMEOUT, "command_timeout": PG_COMMAND_TIMEOUT},
    )
    return create_async_engine(parsed, **options)


def install_sqlite_listeners(engine: Engine, *, foreign_keys: bool) -> None:
    """This project's pragmas on every new connection, and `BEGIN IMMEDIATE` for connections that write."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own implicit BEGIN is turned off so that `_on_begin` decides how transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in (
                "PRAGMA journal_mode=WAL",
                f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}",
                f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
                "PRAGMA synchronous=NORMAL",
            ):
                cursor.execute(pragma)
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def database_error(exc: BaseException) -> DatabaseError:
    """A `DatabaseError` naming the driver's error class and message, never the statement's parameters."""
    orig = getattr(exc, "orig", None) or exc
    message = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return DatabaseError(f"database error ({type(orig).__name__}): {message[:300]}")


class Database:
    """An async engine plus sessions for one database URL; `transaction()` for writes, `read()` for reads."""

    def __init__(self, url: str | URL, *, echo: bool = False, pool_size: int = 5, max_overflow: int = 10) -> None:
        """`pool_size`/`max_overflow` bound PostgreSQL connections per process (SQLite: one writer anyway)."""
        self.url = normalize_url(url)
        self.engine = make_engine(self.url, echo=echo, pool_size=pool_size, max_overflow=max_overflow)
        self.dialect = self.engine.dialect.name
        self._writes = async_sessionmaker(
            self.engine.execution_options(**{WRITE_OPTION: True}), expire_on_commit=False, autoflush=False
        )
        self._reads = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=False)
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One write transaction: committed when the block ends, rolled back whole when it raises."""
        async with (
            self._write_lock or contextlib.nullcontext(),
            self._guard(),
            self._writes() as session,
            session.begin(),
        ):
            yield session

    def write_lock(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """The in-process queue of SQLite's single writer (a no-op on PostgreSQL)."""
        return self._write_lock or contextlib.nullcontext()

    def sync_sqlite_engine(self) -> Engine | None:
        """A sync engine on the same SQLite file whose connections write (None: PostgreSQL or in-memory).

        For a caller that runs a whole write transaction in one worker thread (store/writer.py): one thread
        hand-off per transaction instead of one per driver call. Its writes must hold `write_lock()`.
        """
        if self.dialect != "sqlite" or _is_memory(self.url):
            return None
        engine = create_engine(
            # Two: the log writer keeps one raw connection for its unfenced batches (log_sqlite.py).
            self.url.set(drivername="sqlite"),
            pool_size=2,
            max_overflow=0,
            connect_args={"check_same_thread": False},
        )
        install_sqlite_listeners(engine, foreign_keys=True)
        return engine.execution_options(**{WRITE_OPTION: True})

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """One read-only transaction: a consistent snapshot, never blocking writers."""
        async with self._guard(), self._reads() as session, session.begin():
            yield session

    @contextlib.asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        try:
            yield
        except StoreError:
            raise
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            raise database_error(exc) from exc

    async def ping(self, *, timeout: float = 5.0) -> None:
        """Raise `DatabaseError` unless the database answers a trivial query within `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout), self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            raise database_error(exc) from exc

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
