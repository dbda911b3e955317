"""Group commit for the conversation log: one write transaction for every log write queued meanwhile.

Per buyer message the engine writes the log three times (the claim, the decision, the reply). One transaction
each serialised them behind SQLite's single writer and cost ~7 ms of CPU per message in statement building,
`BEGIN IMMEDIATE`/`COMMIT` and driver thread hand-offs (docs/performance.md). The writer instead runs one task
per `Store` that takes everything queued while its previous transaction ran and writes it in ONE transaction
with Core `executemany` statements compiled once:

- claims (`claim_inbound`, `claim_many`: every item of one push in one op): a multi-row `INSERT ... ON CONFLICT DO
  NOTHING RETURNING`; each caller's future is resolved only after the COMMIT, so "claimed" means "durably
  recorded": the session acknowledges a push only then;
- transitions (`transition`): a compare-and-set of an inbound row's status (`received` -> `replying` before a
  reply is sent), awaited like a claim, so of two handlers of one message (a live one, a resumed one) one sends;
- decisions and replies (`mark_inbound`, `record_outbound`): queued without waiting (off the reply path),
  written by the next batch; `flush()` waits for them (the engine's stop, a bucket handover, `Store.close`).

Errors stay per caller: a batch that fails is retried op by op, each in its own transaction, so one bad row
(an account deleted meanwhile) fails only its own caller. Fences are checked once per distinct fence in the
batch's transaction (under the lease row's share lock on PostgreSQL); ops whose fence moved get `FencedOut`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import and_, bindparam, func, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from .cluster import Fence, FencedOut, check_fence_sync
from .db import WRITE_OPTION, Database, database_error
from .errors import AccountNotFound, StoreError
from .log_sqlite import RawLog
from .models import MessageRow, table_of, utcnow
from .records import Outbound

log = structlog.get_logger("xianyu_autoreply.store.writer")

MAX_BATCH = 1000  # ops per transaction: bounds one commit's time (and the update-cookie wait behind it)
# A first op waits this long (0: one loop turn) for company, so a transaction serves a burst, not one message.
COALESCE_S = 0.0
# Decisions and replies alone (no claim waiting) are written at most this late: they ride along with the next
# claim's transaction instead of paying one of their own (~2.5 transactions per message -> ~1 under load).
LAZY_S = 0.05
_TABLE = table_of(MessageRow)
_KEY = ["account_id", "direction", "message_id"]


@dataclass(slots=True, eq=False)
class _Claim:
    rows: list[dict[str, Any]]
    fence: Fence | None
    future: asyncio.Future[list[bool]]


@dataclass(slots=True, eq=False)
class _Transition:
    params: dict[str, Any]
    fence: Fence | None
    future: asyncio.Future[bool]


@dataclass(slots=True, eq=False)
class _Outbound:
    values: dict[str, Any]
    fence: Fence | None


@dataclass(slots=True, eq=False)
class _Mark:
    params: dict[str, Any]


@dataclass(slots=True, eq=False)
class _Barrier:
    future: asyncio.Future[None]


_Op = _Claim | _Transition | _Outbound | _Mark | _Barrier
_Fenced = _Claim | _Transition | _Outbound


@dataclass(slots=True, eq=False)
class _Outcome:
    """What one batch decided per op: a claim's or a transition's answer, or the error to hand to its caller."""

    claimed: dict[int, list[bool]] = field(default_factory=dict)
    moved: dict[int, bool] = field(default_factory=dict)
    failed: dict[int, BaseException] = field(default_factory=dict)


class _BatchFailed(Exception):
    """A batch of several ops hit an error that belongs to one of them: retry them one by one."""


def outbound_row(account_id: str, out: Outbound) -> dict[str, Any]:
    """The log row of a message our side sent: one definition for the awaited and the queued write."""
    return {
        "account_id": account_id,
        "chat_id": out.chat_id,
        "message_id": out.message_id,
        "direction": "out",
        "sender_id": out.sender_id,
        "sender_nick": None,
        "item_id": out.item_id,
        "text": out.text,
        "content_type": out.content_type,
        "created_ms": out.created_ms,
        "recorded_at": utcnow(),
        "status": out.status,
        "reply_source": out.reply_source,
        "reply_reason": out.reply_reason,
        "reply_to": out.reply_to,
    }


class MessageWriter:
    """The conversation log's group-commit writer (one per `Store`, one task per event loop)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        insert = postgresql.insert if db.dialect == "postgresql" else sqlite.insert
        # Compiled once per dialect and reused from SQLAlchemy's statement cache by every batch.
        self._claim_sql = (
            insert(_TABLE)
            .on_conflict_do_nothing(index_elements=_KEY)
            .returning(_TABLE.c.account_id, _TABLE.c.message_id)
        )
        self._outbound_sql = insert(_TABLE).on_conflict_do_nothing(index_elements=_KEY)
        self._transition_sql = (
            update(_TABLE)
            .where(
                and_(
                    _TABLE.c.account_id == bindparam("t_account"),
                    _TABLE.c.direction == "in",
                    _TABLE.c.message_id == bindparam("t_message"),
                    _TABLE.c.status == bindparam("t_from"),
                )
            )
            .values(status=bindparam("t_to"), reply_source=bindparam("t_source"), reply_reason=bindparam("t_reason"))
        )
        self._mark_sql = (
            update(_TABLE)
            .where(
                and_(
                    _TABLE.c.account_id == bindparam("m_account"),
                    _TABLE.c.direction == "in",
                    _TABLE.c.message_id == bindparam("m_message"),
                )
            )
            .values(  # a mark without source/reason (the outcome of a send) keeps the decision's
                status=bindparam("m_status"),
                reply_source=func.coalesce(bindparam("m_source"), _TABLE.c.reply_source),
                reply_reason=func.coalesce(bindparam("m_reason"), _TABLE.c.reply_reason),
            )
        )
        self._queue: list[_Op] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._busy = False
        self._lazy: asyncio.TimerHandle | None = None
        # SQLite file: each batch is one call into a worker thread owning a sync connection (one hand-off per
        # transaction; through aiosqlite every driver call is a thread hand-off, ~15 per batch).
        self._sqlite: Engine | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._raw: RawLog | None = None  # made and used in the thread only

    # --- submitting -------------------------------------------------------------------------------------------

    async def claim(self, values: dict[str, Any], fence: Fence | None = None) -> bool:
        """Insert an inbound row unless its key exists; True for the first claim, after the commit."""
        return (await self.claim_many([values], fence))[0]

    async def claim_many(self, rows: Sequence[dict[str, Any]], fence: Fence | None = None) -> list[bool]:
        """`claim` for several rows in one transaction (the items of one push): all are recorded, or none."""
        if not rows:
            return []
        future: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._submit(_Claim(list(rows), fence, future))
        return await future

    async def transition(
        self,
        account_id: str,
        message_id: str,
        *,
        from_status: str,
        to_status: str,
        reply_source: str | None = None,
        reply_reason: str | None = None,
        fence: Fence | None = None,
    ) -> bool:
        """Move an inbound row from `from_status` to `to_status`; True when this call moved it, after the commit."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        params = {
            "t_account": account_id,
            "t_message": message_id,
            "t_from": from_status,
            "t_to": to_status,
            "t_source": reply_source,
            "t_reason": reply_reason,
        }
        self._submit(_Transition(params, fence, future))
        return await future

    def record_outbound(self, account_id: str, out: Outbound, *, fence: Fence | None = None) -> None:
        """`Store.record_outbound` queued: written by the next batch, not awaited (idempotent per message id)."""
        self._submit(_Outbound(outbound_row(account_id, out), fence), urgent=False)

    def mark_inbound(
        self,
        account_id: str,
        message_id: str,
        *,
        status: str,
        reply_source: str | None = None,
        reply_reason: str | None = None,
    ) -> None:
        """Queue the outcome of a claimed buyer message; written by the next batch, not awaited."""
        self._submit(
            _Mark(
                {
                    "m_account": account_id,
                    "m_message": message_id,
                    "m_status": status,
                    "m_source": reply_source,
                    "m_reason": reply_reason,
                }
            ),
            urgent=False,
        )

    async def flush(self) -> None:
        """Wait until everything queued before this call is committed (or was refused and logged)."""
        if not self._queue and (self._task is None or self._task.done() or self._idle()):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._submit(_Barrier(future))
        await future

    async def aclose(self) -> None:
        """Flush, then end the writer task and its thread (a later op starts new ones)."""
        task = self._task
        if self._lazy is not None:
            self._lazy.cancel()
            self._lazy = None
        try:
            if task is None or task.done():
                return
            if self._loop is asyncio.get_running_loop():
                await self.flush()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await task
            self._task = None
        finally:
            engine, thread, self._sqlite, self._thread = self._sqlite, self._thread, None, None
            if thread is not None:
                if engine is not None:  # after any batch still running in the thread (one worker: FIFO)
                    await asyncio.get_running_loop().run_in_executor(thread, self._close_in_thread, engine)
                thread.shutdown(wait=False)

    def _submit(self, op: _Op, *, urgent: bool = True) -> None:
        """Queue `op`; wake the writer now if someone waits for it (`urgent`), else within `LAZY_S`."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop, self._wake, self._queue = loop, asyncio.Event(), []
            self._busy, self._lazy = False, None
            self._task = loop.create_task(self._run(), name="store:message-writer")
        self._queue.append(op)
        assert self._wake is not None
        if urgent or len(self._queue) >= MAX_BATCH:
            self._wake.set()
        elif self._lazy is None:
            self._lazy = loop.call_later(LAZY_S, self._lazy_wake)

    def _lazy_wake(self) -> None:
        self._lazy = None
        if self._wake is not None:
            self._wake.set()

    def _idle(self) -> bool:
        return not self._queue and not self._busy

    # --- writing ----------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(COALESCE_S)  # one loop turn: the rest of this burst of frames queues up behind it
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                # Go on after this batch if ops are left over, or if an urgent op (or the lazy timer) comes meanwhile.
                if self._queue:
                    self._wake.set()
                else:
                    self._wake.clear()
                self._busy = True
                try:
                    await self._commit(batch)
                finally:
                    self._busy = False
                if not self._wake.is_set():
                    break  # only lazy ops left: they wait for the next claim or their timer

    async def _commit(self, batch: Sequence[_Op]) -> None:
        """Write a batch in one transaction; on an error, each op alone so the error reaches only its owner."""
        writes = [op for op in batch if not isinstance(op, _Barrier)]
        outcome = _Outcome()
        if writes:
            try:
                await self._transact(writes, outcome)
            except asyncio.CancelledError:
                for op in writes:
                    if isinstance(op, _Claim | _Transition) and not op.future.done():
                        op.future.cancel()
                raise
            except Exception as exc:
                if len(writes) > 1:
                    for op in writes:
                        await self._commit([op])
                    writes, outcome = [], _Outcome()
                else:
                    failure = exc.__cause__ if isinstance(exc, _BatchFailed) and exc.__cause__ else exc
                    outcome = _Outcome(failed={id(writes[0]): failure})
        for op in writes:
            error = outcome.failed.get(id(op))
            if isinstance(op, _Claim | _Transition):
                if op.future.done():
                    continue
                if error is not None:
                    op.future.set_exception(error)
                elif isinstance(op, _Claim):
                    op.future.set_result(outcome.claimed.get(id(op), [False] * len(op.rows)))
                else:
                    op.future.set_result(outcome.moved.get(id(op), False))
            elif error is not None:
                log.warning("a conversation-log write was refused", error=f"{type(error).__name__}: {error}")
        for queued in batch:
            if isinstance(queued, _Barrier) and not queued.future.done():
                queued.future.set_result(None)

    async def _transact(self, ops: Sequence[_Op], outcome: _Outcome) -> None:
        """Run `_apply` in one write transaction: in the SQLite worker thread, or through the async engine."""
        try:
            async with self.db.write_lock():
                if self._thread is None and (engine := self.db.sync_sqlite_engine()) is not None:
                    self._sqlite, self._thread = engine, ThreadPoolExecutor(1, thread_name_prefix="xar-log-writer")
                if self._sqlite is not None and self._thread is not None:
                    loop = asyncio.get_running_loop()
                    await loop.run_in_executor(self._thread, self._apply_in_thread, self._sqlite, ops, outcome)
                else:
                    async with self.db.engine.execution_options(**{WRITE_OPTION: True}).begin() as conn:
                        await conn.run_sync(self._apply, ops, outcome)
        except (StoreError, _BatchFailed):
            raise
        except (SQLAlchemyError, sqlite3.Error, OSError, TimeoutError) as exc:
            raise database_error(exc) from exc

    def _apply_in_thread(self, engine: Engine, ops: Sequence[_Op], outcome: _Outcome) -> None:
        if not any(isinstance(op, _Fenced) and op.fence is not None for op in ops):
            if self._raw is None:
                self._raw = RawLog(engine)
            self._apply_raw(self._raw, ops, outcome)
            return
        with engine.begin() as conn:  # BEGIN IMMEDIATE (the engine's write option) ... COMMIT
            self._apply(conn, ops, outcome)

    def _close_in_thread(self, engine: Engine) -> None:
        raw, self._raw = self._raw, None
        if raw is not None:
            raw.close()
        engine.dispose()

    def _apply_raw(self, raw: RawLog, ops: Sequence[_Op], outcome: _Outcome) -> None:
        """`_apply` for an unfenced batch on the raw SQLite connection (log_sqlite.py: ~10x less CPU)."""
        claims = [op for op in ops if isinstance(op, _Claim)]
        transitions = [op for op in ops if isinstance(op, _Transition)]
        try:
            inserted, moved = raw.write(
                insert=self._outbound_sql,  # the claim's INSERT without RETURNING: `rowcount` answers instead
                claims=[row for op in claims for row in op.rows],
                outbound=[op.values for op in ops if isinstance(op, _Outbound)],
                transition=self._transition_sql,
                transitions=[op.params for op in transitions],
                update=self._mark_sql,
                marks=[op.params for op in ops if isinstance(op, _Mark)],
            )
        except IntegrityError as exc:
            self._refused(ops, exc)
        answers = iter(inserted)
        for op in claims:
            outcome.claimed[id(op)] = [next(answers) for _ in op.rows]
        for transition, went in zip(transitions, moved, strict=True):
            outcome.moved[id(transition)] = went

    @staticmethod
    def _refused(ops: Sequence[_Op], exc: IntegrityError) -> None:
        # The only constraint besides the key: the account's foreign key. Several ops: find the owner one by one.
        if len(ops) > 1:
            raise _BatchFailed() from exc
        op = ops[0]
        values = op.values if isinstance(op, _Outbound) else op.rows[0] if isinstance(op, _Claim) else {}
        raise AccountNotFound(values.get("account_id", "")) from exc

    def _apply(self, conn: Connection, ops: Sequence[_Op], outcome: _Outcome) -> None:
        """The batch's statements on a sync Core connection, inside its transaction (no ORM session)."""
        fenced: dict[Fence, FencedOut | None] = {}
        for op in ops:
            if isinstance(op, _Fenced) and op.fence is not None and op.fence not in fenced:
                try:
                    check_fence_sync(conn, op.fence)
                    fenced[op.fence] = None
                except FencedOut as exc:
                    fenced[op.fence] = exc
        claims: list[_Claim] = []
        transitions: list[_Transition] = []
        outbound: list[dict[str, Any]] = []
        marks: list[dict[str, Any]] = []
        for op in ops:
            if isinstance(op, _Mark):
                marks.append(op.params)
                continue
            if isinstance(op, _Barrier):
                continue
            refused = fenced.get(op.fence) if op.fence is not None else None
            if refused is not None:
                outcome.failed[id(op)] = FencedOut(refused.fence)
            elif isinstance(op, _Claim):
                claims.append(op)
            elif isinstance(op, _Transition):
                transitions.append(op)
            else:
                outbound.append(op.values)
        try:
            if claims:
                rows = conn.execute(self._claim_sql, [row for op in claims for row in op.rows])
                inserted = {(r[0], r[1]) for r in rows}
                for op in claims:  # the same id twice in one batch: only the first caller wins
                    answers = []
                    for row in op.rows:
                        key = (row["account_id"], row["message_id"])
                        answers.append(key in inserted)
                        inserted.discard(key)
                    outcome.claimed[id(op)] = answers
            if outbound:
                conn.execute(self._outbound_sql, outbound)
        except IntegrityError as exc:
            self._refused(ops, exc)
        for op in transitions:
            outcome.moved[id(op)] = bool(conn.execute(self._transition_sql, op.params).rowcount)
        if marks:
            conn.execute(self._mark_sql, marks)
