"""`GET /web/events`: the admin's live updates, as server-sent events carrying ready HTML for htmx to swap.

The REST stream (`/api/v1/events`) carries JSON for scripts; a page wants the row or line it shows, rendered by
the same templates as the page itself and escaped the same way. So this stream renders on the server:
- `acct-<key>`: a dashboard row's cells, `state-<key>`: the account page's state box (coalesced: a burst of
  events for one account becomes one render, so a busy account cannot flood the page);
- `chat-<key>`: one new line of a conversation, `chats`: a nudge for the chat list to refresh itself (at most one
  a `CHAT_LIST_INTERVAL`, and never dropped: a burst's last change is always followed by a nudge).
Keys are hashes of the account (and chat) id, so any id is safe in an event name.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from ...engine.events import AccountAdded, Event, LifecycleChanged, MessageIn, ReplyFailed, ReplySent
from ...store import AccountNotFound, User
from ..auth import optional_user
from ..errors import ApiError, not_found
from ..operations import AccountOperations, operations
from ..routes.events import Visibility
from .i18n import translator
from .rendering import WebRoute, fragment, render_template, request_lang, since_text
from .views import account_for, account_rows, dom_key, engine_state, event_line, rule_names, visible_accounts

router = APIRouter(route_class=WebRoute, include_in_schema=False)

COALESCE_SECONDS = 0.3
CHAT_LIST_INTERVAL = 1.0  # the chat list is fetched again at most this often
CHATS_NUDGE = b"event: chats\ndata: changed\n\n"
SNAPSHOT_LIMIT = 200  # accounts re-sent when a dashboard connects; a larger list is current as of its render
_CHAT_EVENTS = (MessageIn, ReplySent, ReplyFailed)
_SSE_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class View:
    """What the page listening shows: the dashboard, one account, its chat list, or one chat."""

    name: str
    account_id: str | None = None
    chat_id: str | None = None

    def wants(self, event: Event) -> bool:
        """Whether an event concerns what this page shows."""
        if self.name == "dashboard":
            return event.account_id is not None
        return event.account_id == self.account_id


def sse_frame(event: str, html: str) -> bytes:
    """One event; every line of the HTML becomes a `data:` line (the client joins them with newlines).

    Lines are split where the event stream splits them (CR, LF, CRLF) and nowhere else: `str.splitlines` would
    also cut at U+2028, U+0085 ... that a buyer may type, and the client would put a newline in their place.
    """
    lines = _SSE_LINE_BREAK.split(html.strip())
    return (f"event: {event}\n" + "".join(f"data: {line}\n" for line in lines) + "\n").encode("utf-8")


async def _render_state(request: Request, ops: AccountOperations, view: View, account_id: str) -> bytes | None:
    try:
        account = await ops.store.get_account(account_id)
    except AccountNotFound:
        return None
    key = dom_key(account_id)
    if view.name == "dashboard":
        (row,) = await account_rows(ops.store, ops.engine, [account])
        return sse_frame(f"acct-{key}", fragment(request, "_account_cells.html", row=row))
    state = engine_state(ops.engine, account_id)
    short, iso = since_text(state.since_ms)
    html = fragment(request, "_account_state.html", state=state, since_text=short, since_iso=iso)
    return sse_frame(f"state-{key}", html)


async def _stream(
    request: Request,
    ops: AccountOperations,
    view: View,
    visibility: Visibility,
    *,
    heartbeat: float,
    snapshot: Sequence[str] = (),
) -> AsyncIterator[bytes]:
    engine = ops.engine
    stopping: asyncio.Event = getattr(request.app.state, "stopping", None) or asyncio.Event()
    subscription = engine.bus.subscribe(size=1000) if engine is not None else None
    t = translator(request_lang(request))
    stop = asyncio.ensure_future(stopping.wait())
    getter: asyncio.Future[Any] | None = None
    # A change between the page's render and this subscription would be lost: the first flush re-sends the
    # current state of what the page shows.
    dirty: set[str] = set(snapshot)
    shown: set[str] = set(snapshot)  # the dashboard's rows, to notice additions and deletions
    flush_at = 0.0
    nudged_at = -CHAT_LIST_INTERVAL  # the chat list's last nudge
    try:
        yield b"retry: 3000\n: connected\n\n"
        while not stopping.is_set():
            if subscription is not None and getter is None:
                getter = asyncio.ensure_future(subscription.get())
            timeout = heartbeat if not dirty else max(0.0, flush_at - time.monotonic())
            waiting = {stop} | ({getter} if getter is not None else set())
            done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if getter is not None and getter in done:
                event: Event = getter.result()
                getter = None
                if view.name == "dashboard" and event.account_id is not None and _changes_the_list(event, shown):
                    # Deleted: no longer visible to the ownership check, but this page shows it.
                    if isinstance(event, AccountAdded) and not await visibility.allows(event):
                        continue
                    shown.symmetric_difference_update({event.account_id or ""})
                    yield b"event: accounts\ndata: changed\n\n"
                    continue
                if view.wants(event) and await visibility.allows(event):
                    for frame in await _immediate(ops, view, event, t):
                        yield frame
                    if view.name in ("dashboard", "account") and event.account_id is not None:
                        if not dirty:
                            flush_at = time.monotonic() + COALESCE_SECONDS
                        dirty.add(event.account_id)
                    elif view.name == "chats" and isinstance(event, _CHAT_EVENTS) and event.account_id is not None:
                        # At once when the list was not nudged lately, else when the interval is over.
                        if not dirty:
                            flush_at = max(time.monotonic(), nudged_at + CHAT_LIST_INTERVAL)
                        dirty.add(event.account_id)
            elif not done and not dirty:
                yield b": ping\n\n"
            if dirty and time.monotonic() >= flush_at:
                if view.name == "chats":
                    yield CHATS_NUDGE
                    nudged_at = time.monotonic()
                    dirty.clear()
                    continue
                for account_id in sorted(dirty):
                    state_frame = await _render_state(request, ops, view, account_id)
                    if state_frame is not None:
                        yield state_frame
                dirty.clear()
    finally:
        for task in (stop, getter):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if subscription is not None:
            subscription.close()


def _changes_the_list(event: Event, shown: set[str]) -> bool:
    """An account appeared, or one the page shows was deleted."""
    if event.account_id is None:
        return False
    if isinstance(event, AccountAdded):
        return event.account_id not in shown
    deleted = isinstance(event, LifecycleChanged) and event.lifecycle == "deleted"
    return deleted and event.account_id in shown


async def _immediate(ops: AccountOperations, view: View, event: Event, t: Any) -> list[bytes]:
    """Frames sent at once: new chat lines (the chat list's nudge is throttled by the stream)."""
    if not isinstance(event, _CHAT_EVENTS) or event.account_id is None:
        return []
    if view.name == "chat" and event.chat_id == view.chat_id:
        source = "" if isinstance(event, MessageIn) else event.source
        rules = await rule_names(ops.store, event.account_id) if source.startswith("rule:") else None
        line = event_line(event, t, rules)
        if line is not None:
            html = render_template("_message.html", m=line, t=t)
            return [sse_frame(f"chat-{dom_key(event.account_id, view.chat_id or '')}", html)]
    return []


@router.get("/web/events")
async def live_events(
    request: Request,
    *,
    user: Annotated[User | None, Depends(optional_user)],
    ops: Annotated[AccountOperations, Depends(operations)],
    view: str = "dashboard",
    account: str | None = None,
    chat: str | None = None,
) -> StreamingResponse:
    """The page's event stream; `view` says what the page shows (and `account`/`chat` which)."""
    if user is None:
        raise ApiError(401, "not_authenticated", "log in first")
    request.state.user = user
    if view not in ("dashboard", "account", "chats", "chat"):
        raise ApiError(422, "invalid_input", "view must be dashboard, account, chats or chat", field="view")
    if view != "dashboard":
        if not account:
            raise ApiError(422, "invalid_input", "account is required for this view", field="account")
        try:
            await account_for(ops.store, user, account)
        except AccountNotFound:
            raise not_found() from None
    if view == "dashboard":
        accounts = await visible_accounts(ops.store, user)
        snapshot = [a.id for a in accounts] if len(accounts) <= SNAPSHOT_LIMIT else []
    else:
        snapshot = [account] if view == "account" and account else []
    settings = request.app.state.settings
    stream = _stream(
        request,
        ops,
        View(view, account, chat),
        Visibility(ops.store, user),
        heartbeat=settings.api.sse_heartbeat,
        snapshot=snapshot,
    )
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
