"""Owner notifications: engine events the seller must know about, sent through apprise to the owner's own URLs.

The notifier listens on the engine's event bus (so neither the scheduler nor the order desk knows it exists) and
turns a few kinds into messages: an account that needs a new cookie or a verification, an account parked in
`error`, an order paid, a delivery sent or given up, a batch rule running low. Recipients are the account's
owner, or every admin for an account without one; each user's URLs and event filter come from the store (an
empty filter means every event). Repeats of one (user, event, account) inside `fold_seconds` are folded into
the next message that goes out ("+N more"), so a flapping account does not flood a chat group.
apprise is synchronous: it runs in a worker thread under a timeout, never on the event loop. A message carries
ids, states and reasons only; `redact` masks anything shaped like `name=value` so a cookie never leaks into one.
Before each send every URL passes the outbound policy (outbound.py: an allowlist of apprise services, and the
addresses of the hosts apprise would connect to); a refused one is left out and logged with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from ..outbound import OutboundGuard, OutboundRefused, Purpose
from ..store import NotFound, Role, Store
from .events import (
    DeliveryFailed,
    DeliverySent,
    Event,
    EventBus,
    LifecycleChanged,
    OrderPaid,
    StockLow,
    Subscription,
    VerificationRequired,
)

__all__ = [
    "NOTIFY_EVENTS",
    "Notice",
    "Notifier",
    "NotifyEvent",
    "NotifyOptions",
    "apprise_send",
    "describe_events",
    "notice_for",
    "redact",
]

log = structlog.get_logger("xianyu_autoreply.notify")


class NotifyEvent(enum.StrEnum):
    """What a user can ask to be told about (the `events` of their notification settings)."""

    AUTH_EXPIRED = "auth_expired"
    VERIFICATION_REQUIRED = "verification_required"
    ACCOUNT_ERROR = "account_error"
    ORDER_PAID = "order_paid"
    DELIVERY_SENT = "delivery_sent"
    DELIVERY_FAILED = "delivery_failed"
    LOW_STOCK = "low_stock"


NOTIFY_EVENTS: tuple[str, ...] = tuple(event.value for event in NotifyEvent)

# The bus events the notifier listens to (published by the scheduler and the order desk).
WATCHED_TYPES: tuple[type[Event], ...] = (
    LifecycleChanged,
    VerificationRequired,
    OrderPaid,
    DeliverySent,
    DeliveryFailed,
    StockLow,
)

_ASSIGNMENT = re.compile(r"([A-Za-z0-9_\-]+)=([^;&\s,]+)")


def redact(text: str) -> str:
    """Mask every `name=value` (cookie pairs, query tokens): a notification never carries a secret."""
    return _ASSIGNMENT.sub(r"\1=***", text)


@dataclass(frozen=True, slots=True)
class Notice:
    """One message to send: which event it is, for which account, and its text."""

    event: NotifyEvent
    account_id: str | None
    title: str
    body: str


def notice_for(event: Event) -> Notice | None:
    """The notification an engine event deserves, or None (pure: the bus event in, the text out)."""
    account = event.account_id or "?"
    match event:
        case LifecycleChanged(lifecycle="auth_expired"):
            kind = NotifyEvent.AUTH_EXPIRED
            title, body = f"{account}: login expired", f"Account {account} needs a new cookie. {redact(event.reason)}"
        case LifecycleChanged(lifecycle="error"):
            kind = NotifyEvent.ACCOUNT_ERROR
            title = f"{account}: stopped after repeated crashes"
            body = f"Account {account} is parked in error and needs an operator: {redact(event.reason)}"
        case VerificationRequired():
            kind = NotifyEvent.VERIFICATION_REQUIRED
            title = f"{account}: verification required"
            body = (
                f"The platform asks account {account} for a verification (captcha); replies may stop until it is done."
            )
        case OrderPaid():
            kind = NotifyEvent.ORDER_PAID
            title = f"{account}: order {event.order_id} paid"
            body = f"Order {event.order_id} (item {event.item_id or '?'}) was paid."
        case DeliverySent():
            kind = NotifyEvent.DELIVERY_SENT
            title = f"{account}: order {event.order_id} delivered"
            body = f"Unit {event.unit} of order {event.order_id} was delivered (rule {event.rule_id})."
        case DeliveryFailed():
            kind = NotifyEvent.DELIVERY_FAILED
            title = f"{account}: delivery of order {event.order_id} failed"
            body = f"Unit {event.unit} of order {event.order_id} was not delivered: {redact(str(event.error))}"
        case StockLow():
            kind = NotifyEvent.LOW_STOCK
            title = f"{account}: stock running low"
            body = f"Delivery rule {event.rule_id} has {event.available} line(s) left."
        case _:
            return None
    return Notice(kind, event.account_id, "[xianyu] " + title, body.strip())


Sender = Callable[[Sequence[str], str, str], Awaitable[bool]]


async def apprise_send(urls: Sequence[str], title: str, body: str, *, timeout: float = 15.0) -> bool:
    """Send through apprise in a worker thread (apprise blocks); False when no URL accepted it or on timeout."""
    import apprise

    def run() -> bool:
        target = apprise.Apprise()
        for url in urls:
            target.add(url)
        return bool(target.notify(body=body, title=title))

    try:
        return await asyncio.wait_for(asyncio.to_thread(run), timeout)
    except TimeoutError:
        log.warning("notification timed out", urls=len(urls), timeout=timeout)
        return False


@dataclass(frozen=True, slots=True)
class NotifyOptions:
    """Notification tuning; tests shorten the fold window."""

    timeout: float = 15.0  # one send through apprise, all of the user's URLs together
    fold_seconds: float = 300.0  # repeats of one (user, event, account) inside this window wait for the next
    concurrency: int = 8  # sends in flight at once


@dataclass(frozen=True, slots=True)
class _Target:
    username: str
    urls: tuple[str, ...]
    events: frozenset[str]


class Notifier:
    """Turns bus events into owner notifications; `watch(bus)` starts it, `aclose()` stops it."""

    def __init__(
        self,
        *,
        store: Store,
        options: NotifyOptions | None = None,
        sender: Sender | None = None,
        outbound: OutboundGuard | None = None,
    ) -> None:
        """`outbound`: the policy every URL passes before each send (public addresses only when not given)."""
        self.store = store
        self.options = options or NotifyOptions()
        self._sender = sender
        self._outbound = outbound or OutboundGuard()
        self._subscription: Subscription | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[int]] = set()
        self._slots = asyncio.Semaphore(self.options.concurrency)
        self._last_sent: dict[tuple[str, str, str | None], float] = {}
        self._folded: dict[tuple[str, str, str | None], int] = {}
        self.sent = 0  # messages handed to apprise and accepted (for health and tests)
        self.failed = 0

    def watch(self, bus: EventBus) -> None:
        """Listen to the bus in a background task until `aclose()`."""
        if self._watcher is not None:
            return
        self._subscription = bus.subscribe(types=WATCHED_TYPES, size=1000)
        self._watcher = asyncio.get_running_loop().create_task(self._watch(self._subscription), name="notifier")

    async def aclose(self) -> None:
        """Stop listening and cancel sends still in flight."""
        if self._subscription is not None:
            self._subscription.close()
        tasks = [t for t in (self._watcher, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._watcher = None

    async def _watch(self, subscription: Subscription) -> None:
        async for event in subscription:
            notice = notice_for(event)
            if notice is not None:
                task = asyncio.get_running_loop().create_task(self.notify(notice))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def notify(self, notice: Notice) -> int:
        """Send one notice to every user who wants it; returns how many users were reached. Never raises."""
        try:
            targets = await self._targets(notice.account_id)
        except Exception as exc:
            log.warning("notification targets unavailable", account_id=notice.account_id, error=type(exc).__name__)
            return 0
        reached = 0
        for target in targets:
            if not target.urls or (target.events and notice.event.value not in target.events):
                continue
            body = self._fold(target.username, notice)
            if body is None:
                continue
            if await self._send(target, notice.title, body):
                reached += 1
        return reached

    def _fold(self, username: str, notice: Notice) -> str | None:
        """The body to send now, or None when this repeat waits inside the fold window."""
        key = (username, notice.event.value, notice.account_id)
        now = time.monotonic()
        last = self._last_sent.get(key)
        if last is not None and now - last < self.options.fold_seconds:
            self._folded[key] = self._folded.get(key, 0) + 1
            return None
        self._last_sent[key] = now
        folded = self._folded.pop(key, 0)
        return notice.body + (f"\n(+{folded} more like this since the last message)" if folded else "")

    async def _send(self, target: _Target, title: str, body: str) -> bool:
        async with self._slots:
            try:
                urls = await self._allowed(target)
                if not urls:
                    ok = False
                elif self._sender is not None:
                    ok = await asyncio.wait_for(self._sender(urls, title, body), self.options.timeout)
                else:
                    ok = await apprise_send(urls, title, body, timeout=self.options.timeout)
            except Exception as exc:
                ok = False
                log.warning("notification failed", user=target.username, error=type(exc).__name__)
        if ok:
            self.sent += 1
        else:
            self.failed += 1
            log.warning("notification not accepted", user=target.username, urls=len(target.urls))
        return ok

    async def _allowed(self, target: _Target) -> list[str]:
        """The user's URLs the outbound policy lets through now; each refusal is logged with its reason."""
        allowed = []
        for position, url in enumerate(target.urls):
            try:
                await self._outbound.check(url, purpose=Purpose.NOTIFICATION)
            except OutboundRefused as exc:
                log.warning("notification URL refused", user=target.username, url=position, reason=exc.reason)
                continue
            except OSError as exc:  # apprise could not reach it either
                log.warning("notification URL unresolvable", user=target.username, url=position, error=str(exc))
                continue
            allowed.append(url)
        return allowed

    async def _targets(self, account_id: str | None) -> list[_Target]:
        owner: str | None = None
        if account_id is not None:
            with contextlib.suppress(NotFound):
                owner = (await self.store.get_account(account_id)).owner
        if owner is not None:
            names = [owner]
        else:
            names = [u.username for u in await self.store.list_users() if u.role is Role.ADMIN and not u.disabled]
        targets = []
        for name in names:
            settings = await self.store.get_notification_settings(name)
            if not settings.urls_masked:
                continue
            urls = tuple(await self.store.get_notification_urls(name))
            targets.append(_Target(name, urls, frozenset(settings.events)))
        return targets


def describe_events() -> Mapping[str, str]:
    """Each notification event with a one-line description (for the API's and the admin's pickers)."""
    return {
        NotifyEvent.AUTH_EXPIRED: "an account's login expired: it needs a new cookie",
        NotifyEvent.VERIFICATION_REQUIRED: "the platform asks an account for a verification (captcha)",
        NotifyEvent.ACCOUNT_ERROR: "an account crashed repeatedly and was stopped",
        NotifyEvent.ORDER_PAID: "an order was paid",
        NotifyEvent.DELIVERY_SENT: "an order's goods were delivered",
        NotifyEvent.DELIVERY_FAILED: "a delivery gave up (with the reason)",
        NotifyEvent.LOW_STOCK: "a batch delivery rule is running out of lines",
    }
