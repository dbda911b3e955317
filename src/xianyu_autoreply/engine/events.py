"""The engine's event bus: account state changes, messages, replies and orders, to whoever listens.

Every event is a frozen dataclass of the `Event` union; its `kind` (a class variable) is the name the SSE stream
sends (`event: reply.sent`), and `data` its fields in declaration order (the stream's JSON after `kind`,
`account_id` and `at_ms`). Consumers match on the type; publishing is `bus.publish(ReplySent(...))`.

Publishing never blocks the engine: each subscriber has a bounded queue, and a subscriber that falls behind
loses its oldest events (and is told how many) instead of slowing every account down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection, Iterator
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, get_args

from ..protocol import now_ms


@dataclass(frozen=True, slots=True, kw_only=True)
class _Event:
    """What every event carries: the account it concerns (None: engine-wide) and when it happened."""

    kind: ClassVar[str]
    account_id: str | None
    at_ms: int = field(default_factory=now_ms)

    @property
    def data(self) -> dict[str, Any]:
        """The event's own fields, in declaration order (what the SSE stream sends beside kind, account and time)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _COMMON}


_COMMON = frozenset({"account_id", "at_ms"})


# --- accounts ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountAdded(_Event):
    kind: ClassVar[str] = "account.added"


@dataclass(frozen=True, slots=True, kw_only=True)
class CookieUpdated(_Event):
    kind: ClassVar[str] = "account.cookie_updated"


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthExpired(_Event):
    kind: ClassVar[str] = "account.auth_expired"


@dataclass(frozen=True, slots=True, kw_only=True)
class LifecycleChanged(_Event):
    """The account's lifecycle changed (`Lifecycle` value: running, backoff, auth_expired, error, deleted, ...)."""

    kind: ClassVar[str] = "account.state"
    lifecycle: str
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionChanged(_Event):
    """The session's connection state changed (`ConnectionState` value)."""

    kind: ClassVar[str] = "account.connection"
    state: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class VerificationRequired(_Event):
    kind: ClassVar[str] = "account.verification_required"
    url: str | None


# --- messages and replies ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageIn(_Event):
    """A chat message was recorded; `own` when it is the seller's side (an echo, or typed elsewhere)."""

    kind: ClassVar[str] = "message.in"
    chat_id: str
    message_id: str
    sender: str | None
    text: str
    own: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class _Reply(_Event):
    chat_id: str
    text: str
    source: str
    error: str | None
    in_reply_to: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplySent(_Reply):
    kind: ClassVar[str] = "reply.sent"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyFailed(_Reply):
    kind: ClassVar[str] = "reply.failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyInterrupted(_Event):
    """A reply was on the wire when the process died: it may have reached the buyer, so it is not sent again."""

    kind: ClassVar[str] = "reply.interrupted"
    chat_id: str
    message_id: str
    text: str


# --- orders, delivery, stock ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderStatusChanged(_Event):
    kind: ClassVar[str] = "order.status"
    order_id: str
    status: str
    previous: str | None
    item_id: str | None
    chat_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderPaid(_Event):
    kind: ClassVar[str] = "order.paid"
    order_id: str
    item_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderShipped(_Event):
    kind: ClassVar[str] = "order.shipped"
    order_id: str
    source: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ShipmentFailed(_Event):
    kind: ClassVar[str] = "shipment.failed"
    order_id: str
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliverySent(_Event):
    kind: ClassVar[str] = "delivery.sent"
    order_id: str
    unit: int
    rule_id: int
    rule_kind: str
    attempts: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryFailed(_Event):
    kind: ClassVar[str] = "delivery.failed"
    order_id: str
    unit: int = 1
    rule_id: int | None = None
    error: str | None = None
    attempts: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class StockLow(_Event):
    kind: ClassVar[str] = "stock.low"
    rule_id: int
    available: int
    threshold: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class StockReturned(_Event):
    kind: ClassVar[str] = "stock.returned"
    order_id: str
    unit: int
    rule_id: int | None
    state: str


# --- the stream itself ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class EventsDropped(_Event):
    """Told to a slow reader of a stream: it lost `count` events (never published on the bus)."""

    kind: ClassVar[str] = "events.dropped"
    account_id: str | None = None
    count: int


Event = (
    AccountAdded
    | CookieUpdated
    | AuthExpired
    | LifecycleChanged
    | ConnectionChanged
    | VerificationRequired
    | MessageIn
    | ReplySent
    | ReplyFailed
    | ReplyInterrupted
    | OrderStatusChanged
    | OrderPaid
    | OrderShipped
    | ShipmentFailed
    | DeliverySent
    | DeliveryFailed
    | StockLow
    | StockReturned
    | EventsDropped
)


def event_types() -> tuple[type[Event], ...]:
    """Every event type, in the union's order."""
    return get_args(Event)


class Subscription:
    """A subscriber's queue; iterate it to receive events. `dropped` counts what it lost by falling behind."""

    def __init__(self, bus: EventBus, *, types: tuple[type[Event], ...] | None, size: int) -> None:
        self._bus = bus
        self.types = types
        self.queue: asyncio.Queue[Event] = asyncio.Queue(size)
        self.dropped = 0

    def offer(self, event: Event) -> None:
        if self.types is not None and not isinstance(event, self.types):
            return
        while True:
            try:
                self.queue.put_nowait(event)
                return
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueEmpty):
                    self.queue.get_nowait()
                    self.dropped += 1

    async def get(self) -> Event:
        return await self.queue.get()

    def close(self) -> None:
        self._bus._subscribers.discard(self)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            yield await self.queue.get()


class EventBus:
    """Fan-out of engine events to subscribers."""

    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()

    def publish(self, event: Event) -> None:
        """Offer an event to every subscriber."""
        for subscriber in tuple(self._subscribers):
            subscriber.offer(event)

    def subscribe(self, *, types: Collection[type[Event]] | None = None, size: int = 1000) -> Subscription:
        """Receive the events of `types` (None: every event)."""
        subscription = Subscription(self, types=tuple(types) if types else None, size=size)
        self._subscribers.add(subscription)
        return subscription

    @contextlib.contextmanager
    def listening(self, *, types: Collection[type[Event]] | None = None, size: int = 1000) -> Iterator[Subscription]:
        """`with bus.listening() as sub:` subscribes for the block."""
        subscription = self.subscribe(types=types, size=size)
        try:
            yield subscription
        finally:
            subscription.close()
