"""Typed events decoded from pushes (PROTOCOL.md §11-§12).

A push's `data[]` item becomes exactly one of these. They are frozen so that the reply policy, the engine and the
simulator can pass them around and compare them without copies.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ContentType(enum.IntEnum):
    """`contentType` of a message's content (`1.6.3.4`)."""

    TEXT = 1
    IMAGE = 2
    CARD = 26


class OrderStatus(enum.StrEnum):
    """Order status as the seller sees it (PROTOCOL §12.4, with refunds split out)."""

    CREATED = "created"
    PAID = "paid"
    SHIPPED = "shipped"
    COMPLETED = "completed"
    CLOSED = "closed"
    REFUNDING = "refunding"
    REFUNDED = "refunded"
    REFUND_CANCELLED = "refund_cancelled"


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """A message in a one-to-one conversation (`1.10.reminderContent` present)."""

    message_id: str
    chat_id: str
    sender_id: str
    sender_nick: str
    item_id: str | None
    text: str
    content_type: int
    created_ms: int


@dataclass(frozen=True, slots=True)
class BuyerMessage(ChatMessage):
    """A message the buyer typed: the only event that may get a chat reply."""


@dataclass(frozen=True, slots=True)
class SellerMessage(ChatMessage):
    """A message sent from the seller's own id: our echo, or the seller typing elsewhere (manual takeover)."""


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """An order card or order status notice (PROTOCOL §12), mapped to an `OrderStatus`."""

    order_id: str | None
    status: OrderStatus
    chat_id: str | None
    buyer_id: str | None
    item_id: str | None
    text: str
    message_id: str | None
    created_ms: int | None


@dataclass(frozen=True, slots=True)
class SystemNotice:
    """A platform notice that is not a conversation message and not an order change (no reply)."""

    text: str
    chat_id: str | None
    message_id: str | None
    created_ms: int | None


@dataclass(frozen=True, slots=True)
class Typing:
    """The peer is typing (list-shaped `1`, PROTOCOL §11.3)."""

    user_id: str
    chat_id: str | None


@dataclass(frozen=True, slots=True)
class UnknownPayload:
    """A decodable payload of a shape we do not know: kept for the log, never answered."""

    summary: str


Event = BuyerMessage | SellerMessage | OrderEvent | SystemNotice | Typing | UnknownPayload
