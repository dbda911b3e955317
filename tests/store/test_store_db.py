from pathlib import Path

import pytest
from sqlalchemy import text

from xianyu_autoreply.store import Database, DatabaseError, InvalidValue


async def test_sqlite_file_gets_its_directory_and_pragmas(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'new' / 'dir' / 'x.db'}")
    try:
        await db.ping()
        assert (tmp_path / "new" / "dir" / "x.db").exists()
        assert db.url.drivername == "sqlite+aiosqlite"
        async with db.read() as s:
            pragma = {
                name: (await s.execute(text(f"PRAGMA {name}"))).scalar()
                for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
            }
        assert pragma == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 10_000, "synchronous": 1}
    finally:
        await db.close()


async def test_ping_raises_a_database_error_when_unreachable() -> None:
    db = Database("postgresql://nobody@127.0.0.1:1/none")
    try:
        with pytest.raises(DatabaseError):
            await db.ping(timeout=5)
    finally:
        await db.close()


def test_unsupported_database_is_refused() -> None:
    with pytest.raises(InvalidValue, match="unsupported database"):
        Database("mysql://x@localhost/db")


async def test_transaction_commits_or_rolls_back_whole(database_url: str) -> None:
    db = Database(database_url)
    try:
        async with db.transaction() as s:
            await s.execute(text("CREATE TABLE t (x INTEGER)"))
        with pytest.raises(RuntimeError):
            async with db.transaction() as s:
                await s.execute(text("INSERT INTO t VALUES (1)"))
                raise RuntimeError("boom")
        async with db.read() as s:
            assert (await s.execute(text("SELECT count(*) FROM t"))).scalar() == 0
    finally:
        await db.close()


async def test_driver_errors_become_database_errors(database_url: str) -> None:
    db = Database(database_url)
    try:
        with pytest.raises(DatabaseError) as info:
            async with db.read() as s:
                await s.execute(text("SELECT * FROM no_such_table"))
        assert info.value.__cause__ is not None
    finally:
        await db.close()


async def test_open_from_settings_migrates_and_generates_the_key(tmp_path: Path) -> None:
    from xianyu_autoreply.config import load_settings
    from xianyu_autoreply.store import Store, is_at_head

    from .store_samples import COOKIE

    settings = load_settings(data_dir=tmp_path / "data")
    store = await Store.open(settings)
    try:
        assert await is_at_head(store.db)
        assert (tmp_path / "data" / "secret.key").is_file() and (tmp_path / "data" / "xianyu.db").is_file()
        await store.create_account("a", COOKIE)
    finally:
        await store.close()
    reopened = await Store.open(settings)
    try:
        assert await reopened.get_account_cookie("a") == COOKIE
    finally:
        await reopened.close()


async def test_two_processes_worth_of_writers_share_one_sqlite_file(tmp_path: Path) -> None:
    """Separate Database objects (as the CLI beside a server) queue on SQLite's lock instead of failing."""
    import asyncio

    from xianyu_autoreply.store import DeliveryRuleSpec, SecretBox, Store, upgrade_database

    from .store_samples import COOKIE

    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    await upgrade_database(url)
    box = SecretBox([SecretBox.generate_key()])
    first, second = Store(Database(url), box), Store(Database(url), box)
    try:
        await first.create_account("a", COOKIE)
        (rule,) = await first.replace_delivery_rules(
            "a", [DeliveryRuleSpec("batch", lines=[f"L{n}" for n in range(10)])]
        )
        results = await asyncio.gather(
            *((first if n % 2 else second).reserve_line(rule.id, f"o{n}") for n in range(20))
        )
        assert len({line.id for line in results if line is not None}) == 10 and results.count(None) == 10
    finally:
        await first.close()
        await second.close()
