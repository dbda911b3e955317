"""Alembic environment: runs revisions on a connection handed over by `upgrade_database`, or on its own engine.

`upgrade_database` passes its connection in `config.attributes["connection"]` (inside its transaction and lock);
`alembic_config(url)` used with Alembic's `command` functions (e.g. autogenerate) passes `attributes["url"]`.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from xianyu_autoreply.store.db import make_engine
from xianyu_autoreply.store.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite needs batch mode to alter tables; PostgreSQL runs the same ops directly
        compare_type=True,
        transactional_ddl=True,  # SQLite has transactional DDL too: a failed revision leaves nothing behind
    )


def _run(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_on_own_engine() -> None:
    url = config.attributes.get("url")
    if url is None:
        raise RuntimeError("alembic_config(url) or a connection is needed to run the migrations")
    engine = make_engine(url, foreign_keys=False)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=str(config.attributes["url"]), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif (handed_over := config.attributes.get("connection")) is not None:
    _run(handed_over)
else:
    asyncio.run(_run_on_own_engine())
