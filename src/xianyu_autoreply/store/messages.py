"""The conversation log and per-chat state.

`record_inbound` is the durable half of "exactly one reply per buyer message": the first record of a platform
message id inserts the row and wins; any later one (a re-sent push, a reconnect, a restart, another worker)
hits UNIQUE(account, direction, message id) and loses without writing. The inbound rows are also the engine's
durable inbox: `received` until decided, `replying` while a reply may be on the wire (`begin_reply`, a
compare-and-set), then `replied`, `ignored`, `expired`, `failed`, `interrupted`; an order card `received` until
the order desk `applied` it. `list_open_inbound` finds what a crash left open. Chat-state counters are single
statements (upserts), so two tasks of one chat never lose an update.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from .base import StoreBase, check_limit
from .cluster import Fence, check_fence
from .crypto import SecretBox
from .db import Database
from .errors import AccountNotFound, InvalidValue
from .models import OPEN_INBOUND, ChatStateRow, MessageRow, table_of, utcnow
from .records import ChatState, ChatSummary, Direction, Inbound, Message, Outbound
from .writer import MessageWriter, outbound_row

_MESSAGE_KEY = ["account_id", "direction", "message_id"]
_CHAT_KEY = ["account_id", "chat_id"]


class MessageStore(StoreBase):
    """Conversation log and chat state."""

    def __init__(self, db: Database, box: SecretBox) -> None:
        """`log_writer` batches the engine's log writes (claims awaited, decisions and replies queued)."""
        super().__init__(db, box)
        self.log_writer = MessageWriter(db)

    async def claim_inbound(
        self,
        account_id: str,
        message_id: str,
        *,
        chat_id: str,
        created_ms: int,
        text: str = "",
        content_type: str = "text",
        sender_id: str | None = None,
        sender_nick: str | None = None,
        item_id: str | None = None,
        status: str = "received",
        fence: Fence | None = None,
    ) -> bool:
        """Record one inbound message; True for the first record of this message id, False for any repeat."""
        item = Inbound(message_id, chat_id, created_ms, text, content_type, sender_id, sender_nick, item_id, status)
        return (await self.record_inbound(account_id, [item], fence=fence))[0]

    async def record_inbound(
        self, account_id: str, items: Sequence[Inbound], *, fence: Fence | None = None
    ) -> list[bool]:
        """Record the items of one push in one transaction; per item True when new, False for a repeat.

        Answers after the COMMIT (group commit, store/writer.py), so a True is durable: the session acknowledges
        the push only then. With a `fence` (scale-out) the whole push is refused with `FencedOut` once the
        bucket's lease moved on, so a paused or partitioned old owner neither answers nor acknowledges it.
        """
        for item in items:
            if not item.message_id:
                raise InvalidValue("an inbound message needs its platform message id (or the fallback key)")
        now = utcnow()
        rows = [
            {
                "account_id": account_id,
                "chat_id": item.chat_id,
                "message_id": item.message_id,
                "direction": Direction.IN.value,
                "sender_id": item.sender_id,
                "sender_nick": item.sender_nick,
                "item_id": item.item_id,
                "text": item.text,
                "content_type": item.content_type,
                "created_ms": item.created_ms,
                "recorded_at": now,
                "status": item.status,
                "event": item.event,
            }
            for item in items
        ]
        return await self.log_writer.claim_many(rows, fence)

    async def begin_reply(
        self,
        account_id: str,
        message_id: str,
        *,
        reply_source: str | None = None,
        reply_reason: str | None = None,
        fence: Fence | None = None,
    ) -> bool:
        """Claim the right to answer a recorded message (`received` -> `replying`); True for the one winner.

        Committed before the reply is sent: of a live handler and a resumed one only one sends, and a crash while
        sending leaves `replying` behind, which a later resume reports as interrupted instead of answering twice.
        """
        return await self.log_writer.transition(
            account_id,
            message_id,
            from_status="received",
            to_status="replying",
            reply_source=reply_source,
            reply_reason=reply_reason,
            fence=fence,
        )

    async def list_open_inbound(
        self, account_id: str, *, recorded_before: datetime | None = None, limit: int = 1000
    ) -> list[Message]:
        """Inbound rows still `received` or `replying` (what a crash, a kill or a handover left open), oldest first."""
        statement = (
            select(MessageRow)
            .where(MessageRow.account_id == account_id, text(OPEN_INBOUND))
            .order_by(MessageRow.id)
            .limit(check_limit(limit))
        )
        if recorded_before is not None:
            statement = statement.where(MessageRow.recorded_at < recorded_before)
        async with self.db.read() as s:
            rows = (await s.scalars(statement)).all()
        return [_message(row) for row in rows]

    async def mark_inbound(
        self,
        account_id: str,
        message_id: str,
        *,
        status: str,
        reply_source: str | None = None,
        reply_reason: str | None = None,
    ) -> bool:
        """Record what became of a claimed buyer message (replied, ignored, expired, ...); False if unknown."""
        async with self.db.transaction() as s:
            result = await s.execute(
                update(MessageRow)
                .where(
                    MessageRow.account_id == account_id,
                    MessageRow.direction == Direction.IN.value,
                    MessageRow.message_id == message_id,
                )
                .values(status=status, reply_source=reply_source, reply_reason=reply_reason)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]  # DML gives a CursorResult

    async def record_outbound(self, account_id: str, out: Outbound, *, fence: Fence | None = None) -> Message:
        """Log a message the seller's side sent (a reply or a manual message); idempotent per message id.

        With a `fence` the entry is refused (`FencedOut`) once the bucket's lease moved on.
        """
        statement = (
            self._insert(table_of(MessageRow))
            .values(outbound_row(account_id, out))
            .on_conflict_do_nothing(index_elements=_MESSAGE_KEY)
        )
        async with self.db.transaction() as s:
            await check_fence(s, fence)
            try:
                await s.execute(statement)
            except IntegrityError as exc:
                raise AccountNotFound(account_id) from exc
            row = (
                await s.scalars(
                    select(MessageRow).where(
                        MessageRow.account_id == account_id,
                        MessageRow.direction == Direction.OUT.value,
                        MessageRow.message_id == out.message_id,
                    )
                )
            ).one()
            return _message(row)

    async def list_messages(
        self, account_id: str, *, chat_id: str | None = None, limit: int = 100, before_id: int | None = None
    ) -> list[Message]:
        """The latest `limit` messages (of one chat, or all), oldest first; `before_id` pages further back."""
        statement = select(MessageRow).where(MessageRow.account_id == account_id)
        if chat_id is not None:
            statement = statement.where(MessageRow.chat_id == chat_id)
        if before_id is not None:
            statement = statement.where(MessageRow.id < before_id)
        statement = statement.order_by(MessageRow.id.desc()).limit(check_limit(limit))
        async with self.db.read() as s:
            rows = (await s.scalars(statement)).all()
        return [_message(row) for row in reversed(rows)]

    async def list_chats(self, account_id: str, *, limit: int = 50) -> list[ChatSummary]:
        """The account's conversations, most recently active first, each with its last message."""
        latest = (
            select(
                MessageRow.chat_id,
                func.max(MessageRow.id).label("last_id"),
                func.count().label("message_count"),
            )
            .where(MessageRow.account_id == account_id)
            .group_by(MessageRow.chat_id)
            .order_by(func.max(MessageRow.id).desc())
            .limit(check_limit(limit))
            .subquery()
        )
        statement = (
            select(MessageRow, latest.c.message_count)
            .join(latest, MessageRow.id == latest.c.last_id)
            .order_by(MessageRow.id.desc())
        )
        async with self.db.read() as s:
            rows = (await s.execute(statement)).all()
        return [ChatSummary(chat_id=row.chat_id, last_message=_message(row), message_count=n) for row, n in rows]

    async def prune_messages(self, *, older_than: datetime) -> int:
        """Delete log entries recorded before `older_than`; returns how many went (retention)."""
        async with self.db.transaction() as s:
            result = await s.execute(delete(MessageRow).where(MessageRow.recorded_at < older_than))
            return int(result.rowcount)  # type: ignore[attr-defined]  # DML gives a CursorResult

    # -- chat state ---------------------------------------------------------------------------------------------

    async def get_chat_state(self, account_id: str, chat_id: str) -> ChatState:
        """The chat's state; a chat never seen has the default state."""
        async with self.db.read() as s:
            row = await s.get(ChatStateRow, (account_id, chat_id))
            return _chat_state(row) if row else ChatState(account_id=account_id, chat_id=chat_id)

    async def put_chat_state(self, state: ChatState) -> ChatState:
        """Save the whole state of one chat."""
        values = {
            "paused_until": state.paused_until,
            "default_reply_sent": state.default_reply_sent,
            "bargain_rounds": state.bargain_rounds,
            "updated_at": utcnow(),
        }
        return await self._upsert_chat(state.account_id, state.chat_id, values, values)

    async def pause_chat(self, account_id: str, chat_id: str, *, until: datetime | None) -> ChatState:
        """Pause auto-reply in one chat until `until` (manual takeover); None resumes it."""
        values = {"paused_until": until, "updated_at": utcnow()}
        return await self._upsert_chat(account_id, chat_id, values, values)

    async def mark_default_reply_sent(self, account_id: str, chat_id: str) -> bool:
        """Set the chat's once-only default-reply flag; True only for the call that set it."""
        table = table_of(ChatStateRow)
        statement = (
            self._insert(table)
            .values(
                account_id=account_id, chat_id=chat_id, default_reply_sent=True, bargain_rounds=0, updated_at=utcnow()
            )
            .on_conflict_do_update(
                index_elements=_CHAT_KEY,
                set_={"default_reply_sent": True, "updated_at": utcnow()},
                where=table.c.default_reply_sent.is_(False),
            )
            .returning(table.c.chat_id)
        )
        async with self.db.transaction() as s:
            try:
                return (await s.execute(statement)).scalar() is not None
            except IntegrityError as exc:
                raise AccountNotFound(account_id) from exc

    async def count_bargain_round(self, account_id: str, chat_id: str) -> int:
        """Add one bargaining round to the chat and return the new count."""
        table = table_of(ChatStateRow)
        statement = (
            self._insert(table)
            .values(
                account_id=account_id, chat_id=chat_id, default_reply_sent=False, bargain_rounds=1, updated_at=utcnow()
            )
            .on_conflict_do_update(
                index_elements=_CHAT_KEY,
                set_={"bargain_rounds": table.c.bargain_rounds + 1, "updated_at": utcnow()},
            )
            .returning(table.c.bargain_rounds)
        )
        async with self.db.transaction() as s:
            try:
                return int((await s.execute(statement)).scalar_one())
            except IntegrityError as exc:
                raise AccountNotFound(account_id) from exc

    async def _upsert_chat(
        self, account_id: str, chat_id: str, insert_values: dict[str, Any], update_values: dict[str, Any]
    ) -> ChatState:
        table = table_of(ChatStateRow)
        defaults = {"default_reply_sent": False, "bargain_rounds": 0, "paused_until": None}
        statement = (
            self._insert(table)
            .values(account_id=account_id, chat_id=chat_id, **{**defaults, **insert_values})
            .on_conflict_do_update(index_elements=_CHAT_KEY, set_=update_values)
        )
        async with self.db.transaction() as s:
            try:
                await s.execute(statement)
            except IntegrityError as exc:
                raise AccountNotFound(account_id) from exc
            return await _load_chat(s, account_id, chat_id)


async def _load_chat(s: AsyncSession, account_id: str, chat_id: str) -> ChatState:
    row = await s.get(ChatStateRow, (account_id, chat_id), populate_existing=True)
    assert row is not None  # just upserted in this transaction
    return _chat_state(row)


def _chat_state(row: ChatStateRow) -> ChatState:
    return ChatState(
        account_id=row.account_id,
        chat_id=row.chat_id,
        paused_until=row.paused_until,
        default_reply_sent=row.default_reply_sent,
        bargain_rounds=row.bargain_rounds,
    )


def _message(row: MessageRow) -> Message:
    return Message(
        id=row.id,
        account_id=row.account_id,
        chat_id=row.chat_id,
        message_id=row.message_id,
        direction=Direction(row.direction),
        sender_id=row.sender_id,
        sender_nick=row.sender_nick,
        item_id=row.item_id,
        text=row.text,
        content_type=row.content_type,
        created_ms=row.created_ms,
        recorded_at=row.recorded_at,
        status=row.status,
        reply_source=row.reply_source,
        reply_reason=row.reply_reason,
        reply_to=row.reply_to,
        event=row.event,
    )
