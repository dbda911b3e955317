"""Admission: the first look at every inbound event, before anything is recorded or decided. Pure, no I/O.

One function of an event and the account's memory answers three questions, once, for the whole pipeline:
- the dedup key (`event_key`): the platform message id, or the order and its status for an order card;
- expired: older than the expiry window when it arrived (recorded, never answered late);
- own echo: a seller message that is the platform's echo of what we sent (PROTOCOL §13.1), which must not pause
  the chat as a manual takeover would.
Duplicates are dropped here only for owners without a durable record (`remember_ids`): with the store's unique key
as the one guard, a second in-memory copy would cost memory for nothing (docs/performance.md, round four).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..protocol.events import ChatMessage, Event, OrderEvent, SellerMessage
from .memory import SeenMessages, SentTexts

# What the platform shows for an image we sent; an image echo is recognised by it or by the message id (inferred).
IMAGE_ECHO_TEXT = "[图片]"


def message_key(message: ChatMessage) -> str:
    """The de-duplication key of a chat message: the platform message id, else chat id + create time + text."""
    return message.message_id or f"{message.chat_id}:{message.created_ms}:{message.text}"


def event_key(event: Event) -> str | None:
    """The durable dedup key of an event; an order card without a message id is keyed by order and status, and
    events nobody records (typing, notices) have none."""
    if isinstance(event, ChatMessage):
        return message_key(event)
    message_id = getattr(event, "message_id", None)
    if message_id:
        return str(message_id)
    if isinstance(event, OrderEvent) and event.order_id:
        return f"order:{event.order_id}:{event.status.value}"
    return None


@dataclass(frozen=True, slots=True)
class Incoming:
    """An event as it was admitted: when it arrived and what admission found out about it.

    `resumed`: recorded earlier (before a crash, a reconnect or a handover) and handed back by the owner.
    """

    event: Event
    received_ms: int
    expired: bool = False
    own_echo: bool = False
    resumed: bool = False

    @property
    def key(self) -> str | None:
        return event_key(self.event)


class Admission:
    """One account's admission memory: what we sent recently (echoes) and, optionally, the ids already seen."""

    __slots__ = ("expire_ms", "seen", "sent")

    def __init__(self, *, expire_ms: int, remember_ids: bool = False) -> None:
        self.expire_ms = expire_ms
        # Ids are kept twice the expiry window: a re-delivery after that is expired anyway (memory.py).
        self.seen = SeenMessages(capacity=20_000 if remember_ids else 0, ttl_ms=max(60_000, 2 * expire_ms))
        self.sent = SentTexts(per_chat=32, max_chats=2_000, ttl_ms=120_000)

    def admit(self, event: Event, *, now_ms: int) -> Incoming | None:
        """The event as admitted, or None when it is a duplicate this memory remembers."""
        key = event_key(event)
        if key is not None and self.seen.capacity:
            if self.seen.contains(key, now_ms=now_ms):
                return None
            self.seen.remember(key, now_ms=now_ms)
        created: int | None = getattr(event, "created_ms", None)
        expired = created is not None and created > 0 and now_ms - created > self.expire_ms
        echo = False
        if isinstance(event, SellerMessage):
            sent = self.sent.find_echo(event.chat_id, text=event.text, message_id=event.message_id, now_ms=now_ms)
            if sent is not None:
                self.sent.consume(event.chat_id, sent, now_ms=now_ms)
                echo = True
        return Incoming(event, now_ms, expired=expired, own_echo=echo)

    def sending(self, chat_id: str, *, text: str | None, uuid: str, now_ms: int) -> None:
        """We are about to send into `chat_id` (before the send: the echo may come back before its answer)."""
        self.sent.record(chat_id, text=IMAGE_ECHO_TEXT if text is None else text, uuid=uuid, now_ms=now_ms)
