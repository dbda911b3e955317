"""Schema migrations, run programmatically (no alembic.ini): on start and by `xianyu-autoreply db upgrade`.

The whole upgrade is one transaction (both databases have transactional DDL), so a failed revision leaves the
schema as it was. On PostgreSQL an advisory lock makes nodes that start together run it one after the other; on
SQLite the write lock does. Foreign keys are off on SQLite while migrating: batch mode rebuilds a table by copying
and dropping it, and a DROP with foreign keys on would cascade into the child tables.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import SQLAlchemyError

from .db import WRITE_OPTION, Database, database_error, make_engine, normalize_url
from .errors import DatabaseError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# pg_advisory_xact_lock key: "xar-migr" as a 64-bit integer, so that two starting nodes never migrate at once.
_PG_MIGRATION_LOCK = int.from_bytes(b"xar-migr", "big") & 0x7FFF_FFFF_FFFF_FFFF


def alembic_config(url: str | URL | None = None) -> Config:
    """Alembic's configuration for the packaged revisions; with `url`, Alembic commands can run on their own."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.attributes["url"] = normalize_url(url)
    return config


def head_revision() -> str:
    """The newest revision shipped with this version."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("no migration revisions are packaged")
    return head


async def upgrade_database(url: str | URL, *, revision: str = "head") -> None:
    """Bring the database at `url` to `revision` (the newest by default); creates the SQLite file if needed."""
    await _run_alembic(url, lambda config: command.upgrade(config, revision))


async def downgrade_database(url: str | URL, *, revision: str) -> None:
    """Take the database back to `revision` ("base" drops every table): for tests and emergencies."""
    await _run_alembic(url, lambda config: command.downgrade(config, revision))


async def current_revision(db: Database) -> str | None:
    """The revision the database is at (None: never migrated)."""
    try:
        async with db.engine.connect() as connection:
            return await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        raise database_error(exc) from exc


async def is_at_head(db: Database) -> bool:
    """Whether the database runs the schema of this version (for `/readyz`)."""
    return await current_revision(db) == head_revision()


async def _run_alembic(url: str | URL, action: Callable[[Config], object]) -> None:
    engine = make_engine(url, foreign_keys=False)
    try:
        async with engine.execution_options(**{WRITE_OPTION: True}).begin() as connection:
            if connection.dialect.name == "postgresql":
                await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            await connection.run_sync(_with_connection, action)
            if connection.dialect.name == "sqlite":
                broken = (await connection.execute(text("PRAGMA foreign_key_check"))).all()
                if broken:
                    raise DatabaseError(f"migration left {len(broken)} rows with dangling foreign keys; rolled back")
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        raise database_error(exc) from exc
    finally:
        await engine.dispose()


def _with_connection(connection: Connection, action: Callable[[Config], object]) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    action(config)
