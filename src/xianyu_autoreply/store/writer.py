"""Group commit for the conversation log: one write transaction for every log write queued meanwhile.

Per buyer message the engine writes the log three times (the claim, the decision, the reply). One transaction
each serialised them behind SQLite's single writer and cost ~7 ms of CPU per message in statement building,
`BEGIN IMMEDIATE`/`COMMIT` and driver thread hand-offs (docs/performance.md). The writer instead runs one task
per `Store` that takes everything queued while its previous transaction ran and writes it in ONE transaction
with Core `executemany` statements compiled once:

- claims (`claim_inbound`): a multi-row `INSERT ... ON CONFLICT DO NOTHING RETURNING`; each caller's future is
  resolved only after the COMMIT, so "claimed" still means "durably claimed" before any reply is decided;
- decisions and replies (`mark_inbound`, `record_outbound`): queued without waiting (off the reply path),
  written by the next batch; `flush()` waits for them (the engine's stop, a bucket handover, `Store.close`).

Errors stay per caller: a batch that fails is retried op by op, each in its own transaction, so one bad row
(an account deleted meanwhile) fails only its own caller. Fences are checked once per distinct fence in the
batch's transaction (under the lease row's share lock on PostgreSQL); ops whose fence moved get `FencedOut`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import and_, bindparam, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from .cluster import Fence, FencedOut, check_fence
from .db import Database
from .errors import AccountNotFound
from .models import MessageRow, utcnow

log = structlog.get_logger("xianyu_autoreply.store.writer")

MAX_BATCH = 1000  # ops per transaction: bounds one commit's time (and the update-cookie wait behind it)
# A first op waits this long (0: one loop turn) for company, so a transaction serves a burst, not one message.
COALESCE_S = 0.0
_TABLE = MessageRow.__table__
_KEY = ["account_id", "direction", "message_id"]


@dataclass(slots=True, eq=False)
class _Claim:
    values: dict[str, Any]
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


_Op = _Claim | _Outbound | _Mark | _Barrier


@dataclass(slots=True, eq=False)
class _Outcome:
    """What one batch decided per op: a claim's answer, or the error to hand to its caller."""

    claimed: dict[int, bool] = field(default_factory=dict)
    failed: dict[int, BaseException] = field(default_factory=dict)


class _BatchFailed(Exception):
    """A batch of several ops hit an error that belongs to one of them: retry them one by one."""


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
        self._mark_sql = (
            update(_TABLE)
            .where(
                and_(
                    _TABLE.c.account_id == bindparam("m_account"),
                    _TABLE.c.direction == "in",
                    _TABLE.c.message_id == bindparam("m_message"),
                )
            )
            .values(
                status=bindparam("m_status"),
                reply_source=bindparam("m_source"),
                reply_reason=bindparam("m_reason"),
            )
        )
        self._queue: list[_Op] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._busy = False

    # --- submitting -------------------------------------------------------------------------------------------

    async def claim(self, values: dict[str, Any], fence: Fence | None = None) -> bool:
        """Insert an inbound row unless its key exists; True for the first claim, after the commit."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._submit(_Claim(values, fence, future))
        return await future

    def record_outbound(
        self,
        account_id: str,
        message_id: str,
        *,
        chat_id: str,
        text: str,
        created_ms: int,
        content_type: str = "text",
        reply_source: str | None = None,
        reply_reason: str | None = None,
        reply_to: str | None = None,
        status: str = "sent",
        sender_id: str | None = None,
        item_id: str | None = None,
        fence: Fence | None = None,
    ) -> None:
        """`Store.record_outbound` queued: written by the next batch, not awaited (idempotent per message id)."""
        values = {
            "account_id": account_id,
            "chat_id": chat_id,
            "message_id": message_id,
            "direction": "out",
            "sender_id": sender_id,
            "sender_nick": None,
            "item_id": item_id,
            "text": text,
            "content_type": content_type,
            "created_ms": created_ms,
            "recorded_at": utcnow(),
            "status": status,
            "reply_source": reply_source,
            "reply_reason": reply_reason,
            "reply_to": reply_to,
        }
        self._submit(_Outbound(values, fence))

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
            )
        )

    async def flush(self) -> None:
        """Wait until everything queued before this call is committed (or was refused and logged)."""
        if not self._queue and (self._task is None or self._task.done() or self._idle()):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._submit(_Barrier(future))
        await future

    async def aclose(self) -> None:
        """Flush, then end the writer task (a later op starts a new one)."""
        task = self._task
        if task is None or task.done():
            return
        if self._loop is asyncio.get_running_loop():
            await self.flush()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, RuntimeError):
            await task
        self._task = None

    def _submit(self, op: _Op) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop, self._wake, self._queue = loop, asyncio.Event(), []
            self._busy = False
            self._task = loop.create_task(self._run(), name="store:message-writer")
        self._queue.append(op)
        assert self._wake is not None
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
                self._busy = True
                try:
                    await self._commit(batch)
                finally:
                    self._busy = False

    async def _commit(self, batch: Sequence[_Op]) -> None:
        """Write a batch in one transaction; on an error, each op alone so the error reaches only its owner."""
        writes = [op for op in batch if not isinstance(op, _Barrier)]
        outcome = _Outcome()
        if writes:
            try:
                async with self.db.transaction() as s:
                    await self._apply(s, writes, outcome)
            except asyncio.CancelledError:
                for op in writes:
                    if isinstance(op, _Claim) and not op.future.done():
                        op.future.cancel()
                raise
            except Exception as exc:
                if len(writes) > 1:
                    for op in writes:
                        await self._commit([op])
                    writes, outcome = [], _Outcome()
                else:
                    error = exc.__cause__ if isinstance(exc, _BatchFailed) and exc.__cause__ else exc
                    outcome = _Outcome(failed={id(writes[0]): error})
        for op in writes:
            error = outcome.failed.get(id(op))
            if isinstance(op, _Claim):
                if op.future.done():
                    continue
                if error is not None:
                    op.future.set_exception(error)
                else:
                    op.future.set_result(outcome.claimed.get(id(op), False))
            elif error is not None:
                log.warning("a conversation-log write was refused", error=f"{type(error).__name__}: {error}")
        for op in batch:
            if isinstance(op, _Barrier) and not op.future.done():
                op.future.set_result(None)

    async def _apply(self, s: AsyncSession, ops: Sequence[_Op], outcome: _Outcome) -> None:
        conn = await s.connection()
        fenced: dict[Fence, FencedOut | None] = {}
        for op in ops:
            if isinstance(op, _Claim | _Outbound) and op.fence is not None and op.fence not in fenced:
                try:
                    await check_fence(s, op.fence)
                    fenced[op.fence] = None
                except FencedOut as exc:
                    fenced[op.fence] = exc
        live: list[_Op] = []
        for op in ops:
            refused = fenced.get(op.fence) if isinstance(op, _Claim | _Outbound) and op.fence is not None else None
            if refused is not None:
                outcome.failed[id(op)] = FencedOut(refused.fence)
            else:
                live.append(op)
        claims = [op for op in live if isinstance(op, _Claim)]
        outbound = [op.values for op in live if isinstance(op, _Outbound)]
        marks = [op.params for op in live if isinstance(op, _Mark)]
        try:
            if claims:
                rows = await conn.execute(self._claim_sql, [op.values for op in claims])
                inserted = {(r[0], r[1]) for r in rows}
                for op in claims:  # the same id twice in one batch: only the first caller wins
                    key = (op.values["account_id"], op.values["message_id"])
                    outcome.claimed[id(op)] = key in inserted
                    inserted.discard(key)
            if outbound:
                await conn.execute(self._outbound_sql, outbound)
        except IntegrityError as exc:  # the only other constraint: the account's foreign key
            if len(ops) > 1:
                raise _BatchFailed() from exc
            op = ops[0]
            values = op.values if isinstance(op, _Claim | _Outbound) else {}
            raise AccountNotFound(values.get("account_id", "")) from exc
        if marks:
            await conn.execute(self._mark_sql, marks)
