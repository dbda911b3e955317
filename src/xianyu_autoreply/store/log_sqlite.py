"""The message log's batches on one raw `sqlite3` connection, owned by the log writer's thread.

Measured on this repository's benchmark machine, one claim transaction through SQLAlchemy (pool checkout and
reset, `BEGIN` through the engine's event, execution context, result object) cost ~310 µs of CPU against ~30 µs
for `sqlite3` doing the same INSERT and COMMIT; at one transaction per buyer message under an evenly paced
load that was a fifth of the engine's CPU per reply (docs/performance.md). SQLAlchemy still writes the SQL: each
Core statement is compiled once per set of columns, and each column's bind processor (the SQLite DATETIME text
format) is applied, so rows read back through the ORM are the same as rows written by it.

Only the plain SQLite file case comes here; PostgreSQL, in-memory SQLite and fenced batches (scale-out) go through
the Core path in `writer.py`. Errors are raised as SQLAlchemy's (`DBAPIError.instance`), like the Core path's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, cast

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

_Processor = Callable[[Any], Any] | None


class _Compiled:
    """One statement's SQL with `?` placeholders and how to turn a row dict into its parameters."""

    __slots__ = ("fixed", "names", "processors", "sql")

    def __init__(self, statement: ClauseElement, engine: Engine, keys: Sequence[str]) -> None:
        # A DML statement compiles to an SQLCompiler (positional names, binds); `compile` is typed as any Compiled.
        compiled = cast(SQLCompiler, statement.compile(dialect=engine.dialect, column_keys=list(keys)))
        self.sql = str(compiled)
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ())
        self.fixed = {name: value for name, value in compiled.params.items() if name not in keys}  # literals
        binds = compiled.binds
        self.processors: tuple[_Processor, ...] = tuple(
            binds[name].type.dialect_impl(engine.dialect).bind_processor(engine.dialect) for name in self.names
        )

    def params(self, row: dict[str, Any]) -> tuple[Any, ...]:
        fixed = self.fixed
        return tuple(
            value if (value := row[name] if name in row else fixed[name]) is None or process is None else process(value)
            for name, process in zip(self.names, self.processors, strict=True)
        )


class RawLog:
    """A raw connection checked out of the writer thread's sync engine for the thread's lifetime."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # The pool's `connect` event has already set this project's pragmas and autocommit mode (db.py).
        self._fairy = engine.raw_connection()
        self._conn: sqlite3.Connection = self._fairy.driver_connection  # type: ignore[assignment]  # sqlite3 here
        self._compiled: dict[tuple[int, tuple[str, ...]], _Compiled] = {}

    def close(self) -> None:
        self._fairy.close()

    def write(
        self,
        *,
        insert: ClauseElement,
        claims: Sequence[dict[str, Any]],
        outbound: Sequence[dict[str, Any]],
        transition: ClauseElement,
        transitions: Sequence[dict[str, Any]],
        update: ClauseElement,
        marks: Sequence[dict[str, Any]],
    ) -> tuple[list[bool], list[bool]]:
        """One transaction: claims and transitions (each True when it changed a row), outbound rows, marks.

        Raises SQLAlchemy errors.
        """
        cur = self._conn.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
            try:
                inserted: list[bool] = []
                for row in claims:  # one by one: `rowcount` says whether this row went in (ON CONFLICT DO NOTHING)
                    statement = self._statement(insert, row)
                    cur.execute(statement.sql, statement.params(row))
                    inserted.append(cur.rowcount == 1)
                self._many(cur, insert, outbound)
                moved: list[bool] = []
                for params in transitions:
                    statement = self._statement(transition, params)
                    cur.execute(statement.sql, statement.params(params))
                    moved.append(cur.rowcount == 1)
                self._many(cur, update, marks)
                cur.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    cur.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise DBAPIError.instance(None, None, exc, sqlite3.Error) from exc
        finally:
            cur.close()
        return inserted, moved

    def _many(self, cur: sqlite3.Cursor, statement: ClauseElement, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            compiled = self._statement(statement, rows[0])
            cur.executemany(compiled.sql, [compiled.params(row) for row in rows])

    def _statement(self, statement: ClauseElement, row: dict[str, Any]) -> _Compiled:
        keys = tuple(row)
        compiled = self._compiled.get((id(statement), keys))
        if compiled is None:
            compiled = self._compiled[(id(statement), keys)] = _Compiled(statement, self._engine, keys)
        return compiled
