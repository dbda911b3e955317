"""The store-backed steps of one account's pipeline, and the resume of what the account left unfinished.

`AccountSteps` is what `AccountPipeline` calls for a real account: `record` (the push's items in one group commit,
fenced), `apply` (order events to the order desk), `claim` and `decided` (the replier's durable compare-and-set
and its decisions for the log) and `log` (each send's outcome). `resume` runs after every connect and hands back,
exactly once, what was recorded and never finished: a kill, a drain cut short, a bucket taken over.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import structlog

from ..platform.errors import NotRecorded
from ..platform.values import SendOutcome, Sent
from ..protocol import BuyerMessage, ChatMessage, OrderEvent, OrderStatus, TextContent, now_ms
from ..replies.admission import Incoming
from ..store import Inbound, Message, Outbound, Store
from ..store.cluster import Fence, FencedOut
from .events import EventBus, MessageIn, ReplyFailed, ReplyInterrupted, ReplySent
from .orders import OrderDesk
from .pipeline import AccountPipeline
from .replier import Decided

log = structlog.get_logger("xianyu_autoreply.engine")

# What a send's outcome makes of the buyer message it answered.
_ANSWERED = {
    SendOutcome.CONFIRMED: "replied",
    SendOutcome.NOT_SENT: "failed",
    SendOutcome.UNCONFIRMED: "unconfirmed",
}


class AccountSteps:
    """One account's steps against the store, the bus and the order desk; see the module docstring."""

    def __init__(
        self,
        account_id: str,
        *,
        store: Store,
        bus: EventBus,
        orders: OrderDesk,
        fence: Callable[[], Fence | None],
        expire_ms: int,
    ) -> None:
        self.account_id = account_id
        self._store = store
        self._bus = bus
        self._orders = orders
        self._fence = fence
        self._expire_ms = expire_ms

    async def record(self, admitted: Sequence[Incoming]) -> list[bool]:
        """Before the push is acknowledged: every item with a key in one group commit (store/writer.py)."""
        fresh = [True] * len(admitted)  # events nobody records (typing, notices) are answered as they come
        where = [(i, item) for i, incoming in enumerate(admitted) if (item := _inbound(incoming)) is not None]
        if where:
            try:
                answers = await self._store.record_inbound(
                    self.account_id, [item for _, item in where], fence=self._fence()
                )
            except FencedOut as exc:
                log.warning("push left to the new owner", account_id=self.account_id, bucket=exc.fence.bucket)
                raise NotRecorded(f"the lease of bucket {exc.fence.bucket} moved on") from exc
            for (i, _), new in zip(where, answers, strict=True):
                fresh[i] = new
        for incoming, new in zip(admitted, fresh, strict=True):
            event = incoming.event
            if new and isinstance(event, ChatMessage):
                self._bus.publish(
                    MessageIn(
                        account_id=self.account_id,
                        chat_id=event.chat_id,
                        message_id=event.message_id,
                        sender=event.sender_nick,
                        text=event.text,
                        own=not isinstance(event, BuyerMessage),
                    )
                )
        return fresh

    async def apply(self, incoming: Incoming) -> None:
        if isinstance(incoming.event, OrderEvent):
            await self._orders.on_event(self.account_id, incoming.event)
            if (key := incoming.key) is not None:
                self._store.log_writer.mark_inbound(self.account_id, key, status="applied")

    async def claim(self, decided: Decided) -> bool:
        """Durable before the send: of a live and a resumed handler one sends, and a crash while sending leaves
        `replying`, which the next resume reports as interrupted rather than answering twice."""
        key = decided.incoming.key
        if key is None:
            return True
        try:
            return await self._store.begin_reply(
                self.account_id,
                key,
                reply_source=decided.decision.source,
                reply_reason=decided.decision.reason.value,
                fence=self._fence(),
            )
        except FencedOut:
            log.warning("reply left to the account's new owner", account_id=self.account_id)
            return False

    async def decided(self, decided: Decided) -> None:
        key = decided.incoming.key
        if isinstance(decided.incoming.event, ChatMessage) and decided.reply is None and key is not None:
            # Queued, not awaited: nothing is sent, so nothing waits for this to be durable.
            self._store.log_writer.mark_inbound(
                self.account_id, key, status="ignored", reply_reason=decided.decision.reason.value
            )

    def log(self, sent: Sent) -> None:
        text = sent.content.text if isinstance(sent.content, TextContent) else sent.content.url
        writer = self._store.log_writer
        # Queued into the log's group commit, not awaited: `claim` already made the reply exactly-once.
        writer.record_outbound(
            self.account_id,
            Outbound(
                sent.uuid,
                chat_id=sent.chat_id,
                text=text,
                created_ms=now_ms(),
                content_type="text" if isinstance(sent.content, TextContent) else "image",
                reply_source=sent.source or None,
                reply_to=sent.in_reply_to,
                status="sent" if sent.ok else "failed",
            ),
        )
        if sent.in_reply_to is not None:
            writer.mark_inbound(self.account_id, sent.in_reply_to, status=_ANSWERED[sent.outcome])
        self._bus.publish(
            (ReplySent if sent.ok else ReplyFailed)(
                account_id=self.account_id,
                chat_id=sent.chat_id,
                text=text,
                source=sent.source,
                error=sent.error,
                in_reply_to=sent.in_reply_to,
            )
        )

    # --- resume ---------------------------------------------------------------------------------------------

    async def resume(self, pipeline: AccountPipeline) -> dict[str, int]:
        """Hand back what the account recorded and never finished, once per row; returns counts by outcome.

        A row recorded before this resume began, not in flight in this pipeline, and still open was left by a
        crash, a drain cut short or another node: `received` is answered now (or logged expired), `replying` may
        have reached the buyer and is reported as interrupted, never sent again.
        """
        started = datetime.now(UTC)  # rows recorded from now on are this session's own
        await pipeline.recorded()  # a push re-sent on connect is recorded by now: new (ours) or seen (resumed)
        busy = pipeline.in_flight()
        await self._store.log_writer.flush()  # the outcomes of what finished here are in the rows we read
        rows = await self._store.list_open_inbound(self.account_id, recorded_before=started)
        now = now_ms()
        counts: dict[str, int] = {}
        for row in rows:
            if row.message_id in busy:
                continue
            outcome = self._resume_row(pipeline, row, now=now)
            counts[outcome] = counts.get(outcome, 0) + 1
        return counts

    def _resume_row(self, pipeline: AccountPipeline, row: Message, *, now: int) -> str:
        writer, account_id = self._store.log_writer, self.account_id
        if row.content_type == "order":
            order = _order_event(row)
            if order is None:
                writer.mark_inbound(account_id, row.message_id, status="ignored", reply_reason="unreadable")
                return "unreadable"
            pipeline.resume(Incoming(order, now, resumed=True))
            return "orders"
        if row.status == "replying":
            reason = "interrupted while sending: it may have reached the buyer, so it is not sent again"
            writer.mark_inbound(account_id, row.message_id, status="interrupted", reply_reason=reason)
            log.warning("reply interrupted by a restart", account_id=account_id, message_id=row.message_id)
            self._bus.publish(
                ReplyInterrupted(account_id=account_id, chat_id=row.chat_id, message_id=row.message_id, text=row.text)
            )
            return "interrupted"
        if row.sender_id == pipeline.session.seller_id:  # our echo or the seller typing elsewhere: nothing to do
            writer.mark_inbound(account_id, row.message_id, status="ignored", reply_reason="resumed_own_message")
            return "own"
        if now - row.created_ms > self._expire_ms:
            writer.mark_inbound(account_id, row.message_id, status="expired", reply_reason="expired_before_resume")
            return "expired"
        event = BuyerMessage(
            row.message_id,
            row.chat_id,
            row.sender_id or "",
            row.sender_nick or "",
            row.item_id,
            row.text,
            _content_type(row.content_type),
            row.created_ms,
        )
        pipeline.resume(Incoming(event, now, resumed=True))
        return "messages"


def _inbound(incoming: Incoming) -> Inbound | None:
    """The log row of an admitted event, or None for events that are not recorded (typing, notices)."""
    event, key = incoming.event, incoming.key
    if key is None:
        return None
    if isinstance(event, ChatMessage):
        return Inbound(
            key,
            event.chat_id,
            event.created_ms,
            event.text,
            str(event.content_type),
            event.sender_id,
            event.sender_nick,
            event.item_id,
            status="expired" if incoming.expired else "received",
        )
    if isinstance(event, OrderEvent):
        return Inbound(
            key,
            event.chat_id or "",
            event.created_ms or now_ms(),
            event.text,
            "order",
            event.buyer_id,
            None,
            event.item_id,
            event={"order_id": event.order_id, "status": event.status.value},
        )
    return None


def _order_event(row: Message) -> OrderEvent | None:
    """The order event a recorded order row stands for (to replay it), None if the row cannot say."""
    detail = row.event or {}
    try:
        status = OrderStatus(str(detail.get("status")))
    except ValueError:
        return None
    order_id = detail.get("order_id")
    if not isinstance(order_id, str) or not order_id:
        return None
    return OrderEvent(
        order_id, status, row.chat_id or None, row.sender_id, row.item_id, row.text, row.message_id, row.created_ms
    )


def _content_type(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 1
