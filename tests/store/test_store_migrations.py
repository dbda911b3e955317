from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from xianyu_autoreply.store import (
    Database,
    current_revision,
    downgrade_database,
    head_revision,
    is_at_head,
    upgrade_database,
)
from xianyu_autoreply.store.models import Base


async def _diff(url: str) -> list[object]:
    db = Database(url)
    try:
        async with db.engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata
                )
            )
    finally:
        await db.close()


async def _tables(url: str) -> set[str]:
    db = Database(url)
    try:
        async with db.engine.connect() as connection:
            return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))
    finally:
        await db.close()


async def test_migrations_match_models(database_url: str) -> None:
    await upgrade_database(database_url)
    assert await _diff(database_url) == []


async def test_upgrade_is_idempotent_and_reaches_head(database_url: str) -> None:
    db = Database(database_url)
    try:
        await upgrade_database(database_url)
        await upgrade_database(database_url)
        assert await current_revision(db) == head_revision()
        assert await is_at_head(db)
    finally:
        await db.close()


async def test_fresh_database_is_not_at_head(database_url: str) -> None:
    db = Database(database_url)
    try:
        assert await current_revision(db) is None
        assert not await is_at_head(db)
    finally:
        await db.close()


async def test_downgrade_to_base_and_back(database_url: str) -> None:
    await upgrade_database(database_url)
    await downgrade_database(database_url, revision="base")
    assert await _tables(database_url) <= {"alembic_version"}
    await upgrade_database(database_url)
    assert await _tables(database_url) >= set(Base.metadata.tables)
    assert await _diff(database_url) == []


async def test_the_model_check_sees_drift(database_url: str) -> None:
    await upgrade_database(database_url)
    db = Database(database_url)
    try:
        async with db.transaction() as s:
            await s.execute(text("DROP INDEX ix_messages_recorded_at"))
    finally:
        await db.close()
    diff = await _diff(database_url)
    assert [entry[0] for entry in diff] == ["add_index"]  # type: ignore[index]
