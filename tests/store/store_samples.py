"""Samples and helpers shared by the store tests: cookies, fault injection, whole-database snapshots."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

from xianyu_autoreply.store import Database
from xianyu_autoreply.store.models import Base

COOKIE = (
    "cna=abcdEFGH1234; unb=2200123456789; cookie2=1f2e3d4c5b6a79881f2e3d4c5b6a7988; "
    "_m_h5_tk=0123456789abcdef0123456789abcdef_1700000000000"
)
COOKIE_SECRET_PART = "1f2e3d4c5b6a79881f2e3d4c5b6a7988"
OTHER_COOKIE = "unb=2200123456789; cookie2=99999999999999999999999999999999"


@contextlib.contextmanager
def failing_statement(db: Database, fragment: str) -> Iterator[list[str]]:
    """Make the database fail the first statement containing `fragment` (as a lost connection would)."""
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if fragment in statement and not seen:
            seen.append(statement)
            raise OperationalError(statement, parameters, Exception("injected failure"))

    event.listen(db.engine.sync_engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", before)


async def snapshot(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, to compare a database before and after a failed write."""
    tables: dict[str, list[tuple[Any, ...]]] = {}
    async with db.read() as s:
        for table in Base.metadata.sorted_tables:
            rows = (await s.execute(select(table).order_by(*table.primary_key.columns))).all()
            tables[table.name] = [tuple(row) for row in rows]
    return tables


def read_files(directory: Path, pattern: str) -> bytes:
    """The raw bytes of every file matching `pattern` (a SQLite file and its WAL), to look for plaintext."""
    return b"".join(path.read_bytes() for path in sorted(directory.glob(pattern)))
