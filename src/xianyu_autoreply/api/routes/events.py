"""`GET /api/v1/events`: the engine's events as server-sent events, only for the accounts the caller may see.

Each event is `event: <kind>` (`account.state`, `account.connection`, `message.in`, `reply.sent`, `order...`) with
JSON `data` (`kind`, `account_id`, `at_ms` and the event's fields). An idle stream gets a comment line every
`XAR_API__SSE_HEARTBEAT` seconds so proxies keep it open. A slow reader loses its oldest events (the bus never
waits for it) and is told with an `events.dropped` event. The stream ends when the server shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from ...engine.events import AccountAdded, Event, EventBus, EventsDropped, LifecycleChanged
from ...store import AccountNotFound, Role, Store, User
from ..auth import current_user

router = APIRouter(tags=["events"])


class Visibility:
    """Which accounts' events a user may receive; ownership looked up once per account and remembered."""

    def __init__(self, store: Store, user: User) -> None:
        self.store = store
        self.user = user
        self._known: dict[str, bool] = {}

    async def allows(self, event: Event) -> bool:
        if self.user.role is Role.ADMIN:
            return True
        account_id = event.account_id
        if account_id is None:
            return False  # engine-wide events are for admins
        if isinstance(event, AccountAdded) or (isinstance(event, LifecycleChanged) and event.lifecycle == "deleted"):
            self._known.pop(account_id, None)
        seen = self._known.get(account_id)
        if seen is None:
            try:
                owner = (await self.store.get_account(account_id)).owner
            except AccountNotFound:
                return False  # deleted already; not remembered, the id may come back for someone else
            seen = self._known[account_id] = owner == self.user.username
        return seen


def _frame(event: Event) -> bytes:
    data = {"kind": event.kind, "account_id": event.account_id, "at_ms": event.at_ms, **event.data}
    payload = orjson.dumps(data, default=str).decode("utf-8")
    return f"event: {event.kind}\ndata: {payload}\n\n".encode()


async def _stream(
    bus: EventBus | None, visibility: Visibility, *, heartbeat: float, stopping: asyncio.Event
) -> AsyncIterator[bytes]:
    # Subscribed before the first byte goes out: whatever happens after the client saw `connected` reaches it.
    subscription = bus.subscribe(size=1000) if bus is not None else None
    stop = asyncio.ensure_future(stopping.wait())
    getter: asyncio.Future[Any] | None = None
    dropped = 0
    try:
        yield b"retry: 3000\n: connected\n\n"
        while not stopping.is_set():
            if subscription is not None and getter is None:
                getter = asyncio.ensure_future(subscription.get())
            waiting = {stop} | ({getter} if getter is not None else set())
            done, _ = await asyncio.wait(waiting, timeout=heartbeat, return_when=asyncio.FIRST_COMPLETED)
            if getter is None or getter not in done:
                if not done:
                    yield b": ping\n\n"
                continue
            event: Event = getter.result()
            getter = None
            if subscription is not None and subscription.dropped != dropped:
                lost, dropped = subscription.dropped - dropped, subscription.dropped
                yield _frame(EventsDropped(count=lost))
            if await visibility.allows(event):
                yield _frame(event)
    finally:
        for task in (stop, getter):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if subscription is not None:
            subscription.close()


@router.get(
    "/events",
    summary="Server-sent events: account state, messages, replies, orders (the caller's accounts only)",
    response_class=StreamingResponse,
)
async def events(request: Request, user: Annotated[User, Depends(current_user)]) -> StreamingResponse:
    app = request.app
    engine = app.state.engine
    stream = _stream(
        engine.bus if engine is not None else None,
        Visibility(app.state.store, user),
        heartbeat=app.state.settings.api.sse_heartbeat,
        stopping=app.state.stopping,
    )
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
