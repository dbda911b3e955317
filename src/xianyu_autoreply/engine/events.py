"""The engine's event bus: account state changes, messages, replies and orders, to whoever listens.

Publishing never blocks the engine: each subscriber has a bounded queue, and a subscriber that falls behind
loses its oldest events (and is told how many) instead of slowing every account down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ..protocol import now_ms


@dataclass(frozen=True, slots=True)
class EngineEvent:
    """One thing that happened: `kind` (e.g. `account.state`, `message.in`, `reply.sent`) and its data."""

    kind: str
    account_id: str | None
    data: dict[str, Any] = field(default_factory=dict)
    at_ms: int = field(default_factory=now_ms)


class Subscription:
    """A subscriber's queue; iterate it to receive events. `dropped` counts what it lost by falling behind."""

    def __init__(self, bus: EventBus, *, kinds: frozenset[str] | None, size: int) -> None:
        self._bus = bus
        self.kinds = kinds
        self.queue: asyncio.Queue[EngineEvent] = asyncio.Queue(size)
        self.dropped = 0

    def offer(self, event: EngineEvent) -> None:
        if self.kinds is not None and event.kind not in self.kinds:
            return
        while True:
            try:
                self.queue.put_nowait(event)
                return
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueEmpty):
                    self.queue.get_nowait()
                    self.dropped += 1

    async def get(self) -> EngineEvent:
        return await self.queue.get()

    def close(self) -> None:
        self._bus._subscribers.discard(self)

    def __aiter__(self) -> AsyncIterator[EngineEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[EngineEvent]:
        while True:
            yield await self.queue.get()


class EventBus:
    """Fan-out of engine events to subscribers."""

    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()

    def publish(self, kind: str, account_id: str | None = None, **data: Any) -> None:
        """Offer an event to every subscriber (nothing is built when nobody listens)."""
        if not self._subscribers:
            return
        event = EngineEvent(kind, account_id, data)
        for subscriber in tuple(self._subscribers):
            subscriber.offer(event)

    def subscribe(self, *, kinds: set[str] | None = None, size: int = 1000) -> Subscription:
        subscription = Subscription(self, kinds=frozenset(kinds) if kinds else None, size=size)
        self._subscribers.add(subscription)
        return subscription

    @contextlib.contextmanager
    def listening(self, *, kinds: set[str] | None = None, size: int = 1000) -> Any:
        """`with bus.listening() as sub:` subscribes for the block."""
        subscription = self.subscribe(kinds=kinds, size=size)
        try:
            yield subscription
        finally:
            subscription.close()
